//! Reading the folders that `slack_sdk`'s `FileInstallationStore` (Bolt for Python) writes:
//! one folder per team with the team's current bot and each installer's latest installation,
//! merged into one installation per installing user.

use std::path::{Path, PathBuf};

use super::error::ImportError;
use super::file_store::{
    drop_user_token, file_names, per_user_latest, read_json, take_bot, team_dirs,
};
use super::jsonl::{check_complete, parse_value};
use crate::store::Installation;

/// Clears the bot fields: the bot was revoked, so `slack_sdk` deleted its `bot-*` files.
fn drop_bot(inst: &mut Installation) {
    take_bot(inst, &Installation::default());
}

/// Reads the folder that `slack_sdk`'s `FileInstallationStore` (Bolt for Python) writes.
///
/// Layout: one folder per team, `{enterprise_id or none}-{team_id or none}` (an org-wide
/// install is `E…-none`), holding JSON files: `bot-latest` (the team's current bot, written
/// again when its token rotates; absent for user-token-only installs and once the bot was
/// revoked), `installer-{user_id}-latest` (each installing user's latest installation;
/// `installer-none-latest` when there was no user), `installer-latest` (the team's latest,
/// a copy of one of those), and `*-{installed_at}` history files, which are skipped.
///
/// Each user's installation is imported with the team's `bot-latest` merged in, so the
/// current bot token wins over the one the user's file kept. Without `bot-latest` the bot
/// fields are dropped: the bot was revoked (`slack_sdk` deletes only the `bot-*` files
/// then). A team with no user file is imported from `installer-latest` (without its user
/// token, which was revoked with its file) or from `bot-latest` alone.
pub fn read_slack_sdk_dir(dir: &Path) -> Result<Vec<(PathBuf, Installation)>, ImportError> {
    let mut out = Vec::new();
    for team in team_dirs(dir)? {
        let names = file_names(&team)?;
        let parse = |name: &str| -> Result<Installation, ImportError> {
            let path = team.join(name);
            let (v, _) = read_json(&path)?;
            parse_value(v).map_err(|message| ImportError::Folder { path, message })
        };
        let bot = match names.iter().any(|n| n == "bot-latest") {
            true => Some(parse("bot-latest")?),
            false => None,
        };
        let mut found = per_user_latest(&names, "installer-")
            .map(|name| parse(name))
            .collect::<Result<Vec<_>, _>>()?;
        if found.is_empty() {
            if names.iter().any(|n| n == "installer-latest") {
                let mut inst = parse("installer-latest")?;
                drop_user_token(&mut inst);
                found.push(inst);
            } else if let Some(b) = &bot {
                found.push(b.clone());
            }
        }
        for mut inst in found {
            match &bot {
                Some(b) => take_bot(&mut inst, b),
                None => drop_bot(&mut inst),
            }
            if check_complete(&inst).is_ok() {
                out.push((team.clone(), inst));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{InstallationStore, TeamRef};
    use crate::transfer::app_dir;
    use crate::transfer::file_store::test_support::{token, write, Row};
    use crate::transfer::import_installations;
    use serde_json::Value;

    /// `installation.__dict__` as `slack_sdk`'s `FileInstallationStore` dumps it.
    fn sdk_installation(
        enterprise: Option<&str>,
        team: Option<&str>,
        user: Option<&str>,
        bot_token: Option<&str>,
        user_token: Option<&str>,
        installed_at: f64,
    ) -> Value {
        serde_json::json!({
            "app_id": "A111", "enterprise_id": enterprise, "enterprise_name": enterprise.map(|_| "Org"),
            "enterprise_url": enterprise.map(|_| "https://org.enterprise.slack.com/"),
            "team_id": team, "team_name": team.map(|t| format!("Team {t}")),
            "bot_token": bot_token, "bot_id": bot_token.map(|_| "B1"), "bot_user_id": bot_token.map(|_| "UBOT"),
            "bot_scopes": if bot_token.is_some() { serde_json::json!(["chat:write", "commands"]) } else { serde_json::json!([]) },
            "bot_refresh_token": null, "bot_token_expires_at": null,
            "user_id": user, "user_token": user_token,
            "user_scopes": if user_token.is_some() { serde_json::json!(["search:read"]) } else { serde_json::json!([]) },
            "user_refresh_token": null, "user_token_expires_at": null,
            "incoming_webhook_url": null, "incoming_webhook_channel": null,
            "incoming_webhook_channel_id": null, "incoming_webhook_configuration_url": null,
            "is_enterprise_install": enterprise.is_some() && team.is_none(),
            "token_type": bot_token.map(|_| "bot"), "installed_at": installed_at, "custom_values": {},
        })
    }

    /// `installation.to_bot().__dict__`, with a rotated token.
    fn sdk_bot(
        enterprise: Option<&str>,
        team: Option<&str>,
        token: &str,
        installed_at: f64,
    ) -> Value {
        serde_json::json!({
            "app_id": "A111", "enterprise_id": enterprise, "enterprise_name": enterprise.map(|_| "Org"),
            "team_id": team, "team_name": team.map(|t| format!("Team {t}")),
            "bot_token": token, "bot_id": "B1", "bot_user_id": "UBOT", "bot_scopes": ["chat:write", "commands"],
            "bot_refresh_token": "xoxe-1-refresh", "bot_token_expires_at": 1_900_000_000,
            "is_enterprise_install": enterprise.is_some() && team.is_none(),
            "installed_at": installed_at, "custom_values": {},
        })
    }

    #[tokio::test]
    async fn slack_sdk_file_store_is_read_as_slack_sdk_left_it() {
        let tmp = tempfile::tempdir().unwrap();
        // FileInstallationStore(base_dir=tmp, client_id="111.222")
        let base = tmp.path().join("111.222");
        // A workspace: two installers, a rotated bot, history files that must be skipped.
        let u1 = sdk_installation(
            None,
            Some("T1"),
            Some("U1"),
            Some("xoxb-old"),
            Some("xoxp-u1"),
            1.0,
        );
        let u2 = sdk_installation(None, Some("T1"), Some("U2"), Some("xoxb-old2"), None, 2.0);
        write(&base, "none-T1/installer-U1-latest", &u1);
        write(&base, "none-T1/installer-U1-1.0", &u1);
        write(&base, "none-T1/installer-U2-latest", &u2);
        write(&base, "none-T1/installer-latest", &u2);
        write(
            &base,
            "none-T1/bot-latest",
            &sdk_bot(None, Some("T1"), "xoxe.xoxb-rotated", 2.0),
        );
        std::fs::write(base.join("none-T1/bot-2.0"), "history files are not read").unwrap();
        std::fs::write(base.join("none-T1/installer-2.0"), "nor this").unwrap();
        // An org-wide install: `{enterprise}-none`.
        write(
            &base,
            "E1-none/installer-U3-latest",
            &sdk_installation(Some("E1"), None, Some("U3"), Some("xoxb-org"), None, 3.0),
        );
        write(
            &base,
            "E1-none/bot-latest",
            &sdk_bot(Some("E1"), None, "xoxb-org", 3.0),
        );
        // A user-only install (user scopes only): no bot-latest at all.
        write(
            &base,
            "E2-T2/installer-U4-latest",
            &sdk_installation(
                Some("E2"),
                Some("T2"),
                Some("U4"),
                None,
                Some("xoxp-u4"),
                4.0,
            ),
        );
        // A revoked bot: slack_sdk deleted bot-*, the installer file still holds the token.
        write(
            &base,
            "none-T3/installer-U5-latest",
            &sdk_installation(
                None,
                Some("T3"),
                Some("U5"),
                Some("xoxb-revoked"),
                None,
                5.0,
            ),
        );
        // A revoked user whose installation was the team's latest: only installer-latest keeps it.
        write(
            &base,
            "none-T4/installer-latest",
            &sdk_installation(
                None,
                Some("T4"),
                Some("U6"),
                Some("xoxb-t4"),
                Some("xoxp-revoked"),
                6.0,
            ),
        );
        write(
            &base,
            "none-T4/bot-latest",
            &sdk_bot(None, Some("T4"), "xoxb-t4", 6.0),
        );

        assert_eq!(app_dir(tmp.path(), "111.222"), base);
        assert_eq!(app_dir(&base, "111.222"), base);
        let found = read_slack_sdk_dir(&base).unwrap();
        let summary: Vec<Row> = found
            .iter()
            .map(|(_, i)| {
                (
                    i.enterprise_id.as_deref(),
                    i.team_id.as_deref(),
                    i.user_id.as_str(),
                    token(&i.bot_token),
                    token(&i.user_token),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (Some("E1"), None, "U3", Some("xoxb-org"), None),
                (Some("E2"), Some("T2"), "U4", None, Some("xoxp-u4")),
                (
                    None,
                    Some("T1"),
                    "U1",
                    Some("xoxe.xoxb-rotated"),
                    Some("xoxp-u1")
                ),
                (None, Some("T1"), "U2", Some("xoxe.xoxb-rotated"), None),
                (None, Some("T4"), "U6", Some("xoxb-t4"), None),
            ]
        );
        let (_, t1) = &found[2];
        assert_eq!(t1.bot_scopes.as_deref(), Some("chat:write,commands"));
        assert_eq!(token(&t1.bot_refresh_token), Some("xoxe-1-refresh"));
        assert_eq!(t1.bot_token_expires_at, Some(1_900_000_000));
        assert_eq!(t1.user_scopes.as_deref(), Some("search:read"));
        assert_eq!(t1.installed_at, 1.0);
        assert!(found[0].1.is_enterprise_install);

        let store = MemoryStore::new();
        assert_eq!(import_installations(&store, "app", found).await.unwrap(), 5);
        let t1 = TeamRef::new(None, Some("T1"), false);
        let bot = store.find_bot("app", &t1).await.unwrap().unwrap();
        assert_eq!(token(&bot.bot_token), Some("xoxe.xoxb-rotated"));
        let u1 = store.find_user("app", &t1, "U1").await.unwrap().unwrap();
        assert_eq!(token(&u1.user_token), Some("xoxp-u1"));
        let org = TeamRef::new(Some("E1"), Some("T9"), true);
        assert!(store.find_bot("app", &org).await.unwrap().is_some());
        let t2 = TeamRef::new(Some("E2"), Some("T2"), false);
        assert!(store.find_bot("app", &t2).await.unwrap().is_none());
        let u4 = store.find_user("app", &t2, "U4").await.unwrap().unwrap();
        assert_eq!(token(&u4.user_token), Some("xoxp-u4"));
        let t3 = TeamRef::new(None, Some("T3"), false);
        assert!(store.find_latest("app", &t3).await.unwrap().is_none());

        // A broken file stops the import, naming the file.
        std::fs::write(base.join("none-T1/installer-U2-latest"), "{").unwrap();
        let err = read_slack_sdk_dir(&base).unwrap_err().to_string();
        assert!(
            err.contains("installer-U2-latest") && err.contains("not JSON"),
            "{err}"
        );
    }
}
