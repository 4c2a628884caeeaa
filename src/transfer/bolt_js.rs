//! Reading the folders that `@slack/oauth`'s `FileInstallationStore` (Bolt for JavaScript)
//! writes: its camelCase `Installation` objects (the `BoltJs*` structs), where its team folders
//! land for a client id, and the merge into one installation per installing user.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::error::ImportError;
use super::file_store::{
    drop_user_token, file_names, per_user_latest, read_json, take_bot, team_dirs,
};
use super::jsonl::check_complete;
use crate::store::Installation;

/// One installation as `@slack/oauth` (Bolt for JavaScript) stores it.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BoltJsInstallation {
    team: Option<IdName>,
    enterprise: Option<IdName>,
    user: Option<BoltJsToken>,
    bot: Option<BoltJsToken>,
    incoming_webhook: Option<BoltJsWebhook>,
    app_id: Option<String>,
    token_type: Option<String>,
    enterprise_url: Option<String>,
    is_enterprise_install: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
struct IdName {
    id: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BoltJsToken {
    token: Option<String>,
    refresh_token: Option<String>,
    expires_at: Option<f64>,
    scopes: Option<Vec<String>>,
    id: Option<String>,
    user_id: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase")]
struct BoltJsWebhook {
    url: Option<String>,
    channel: Option<String>,
    channel_id: Option<String>,
    configuration_url: Option<String>,
}

impl BoltJsInstallation {
    fn into_installation(self, installed_at: f64) -> Installation {
        use crate::store::Token;
        let bot = self.bot.unwrap_or_default();
        let user = self.user.unwrap_or_default();
        let hook = self.incoming_webhook.unwrap_or_default();
        let team = self.team.unwrap_or_default();
        let enterprise = self.enterprise.unwrap_or_default();
        let joined = |s: Option<Vec<String>>| s.filter(|s| !s.is_empty()).map(|s| s.join(","));
        Installation {
            app_id: self.app_id,
            enterprise_id: enterprise.id,
            enterprise_name: enterprise.name,
            enterprise_url: self.enterprise_url,
            team_id: team.id,
            team_name: team.name,
            bot_token: bot.token.map(Token::new),
            bot_id: bot.id,
            bot_user_id: bot.user_id,
            bot_scopes: joined(bot.scopes),
            bot_refresh_token: bot.refresh_token.map(Token::new),
            bot_token_expires_at: bot.expires_at.map(|t| t as i64),
            user_id: user.id.unwrap_or_default(),
            user_token: user.token.map(Token::new),
            user_scopes: joined(user.scopes),
            user_refresh_token: user.refresh_token.map(Token::new),
            user_token_expires_at: user.expires_at.map(|t| t as i64),
            incoming_webhook_url: hook.url,
            incoming_webhook_channel: hook.channel,
            incoming_webhook_channel_id: hook.channel_id,
            incoming_webhook_configuration_url: hook.configuration_url,
            is_enterprise_install: self.is_enterprise_install.unwrap_or(false),
            token_type: self.token_type,
            installed_at,
        }
    }
}

/// Whether `name` is `prefix` followed by a Slack team id (`T…`).
fn is_prefixed_team(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix).is_some_and(|id| {
        id.len() > 1
            && id.starts_with('T')
            && id
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
    })
}

/// The folders of `dir` whose names are `prefix` followed by a team id.
fn prefixed_team_dirs(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|e| is_prefixed_team(&e.file_name().to_string_lossy(), prefix))
        .map(|e| e.path())
        .collect();
    out.sort();
    out
}

/// The team folders of a Bolt for JavaScript file store for `client_id`, given its base
/// folder or its client-id folder. `@slack/oauth` 4 joins an empty enterprise id with
/// `path.join`, so a workspace outside an enterprise lands beside the app folder rather than in
/// it (`{base}/{client_id}T123`, or `{base}T123` without a client id); both are found.
fn bolt_js_team_dirs(dir: &Path, client_id: &str) -> Result<Vec<PathBuf>, ImportError> {
    let nested = dir.join(client_id);
    let beside_nested = if client_id.is_empty() {
        Vec::new()
    } else {
        prefixed_team_dirs(dir, client_id)
    };
    let mut out = Vec::new();
    if !client_id.is_empty() && (nested.is_dir() || !beside_nested.is_empty()) {
        if nested.is_dir() {
            out.extend(team_dirs(&nested)?);
        }
        out.extend(beside_nested);
    } else {
        out.extend(team_dirs(dir)?);
        if let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) {
            out.extend(prefixed_team_dirs(parent, &name.to_string_lossy()));
        }
    }
    Ok(out)
}

/// Reads the folders that `@slack/oauth`'s `FileInstallationStore` (Bolt for JavaScript)
/// writes for `client_id`; `dir` is its `baseDir` or the client-id folder in it.
///
/// Layout: one folder per team (`T…`, `E…-T…`, or `E…` for an org-wide install) holding
/// `app-latest` (the team's latest installation, written again on token rotation, so its bot
/// is the current one), `user-{user_id}-latest` (each installing user's latest), and
/// `*-{milliseconds}` history files, which are skipped. The files hold the `Installation`
/// object as JSON (`team`, `enterprise`, `bot`, `user`, `incomingWebhook`, ...); there is no
/// install time in them, so the file's modification time stands in.
///
/// Each user's installation is imported with `app-latest`'s bot merged in. A team with no
/// user file is imported from `app-latest` without its user token (the user's file is what
/// Bolt deletes when that user's tokens go).
pub fn read_bolt_js_dir(
    dir: &Path,
    client_id: &str,
) -> Result<Vec<(PathBuf, Installation)>, ImportError> {
    let mut out = Vec::new();
    for team in bolt_js_team_dirs(dir, client_id)? {
        let names = file_names(&team)?;
        let parse = |name: &str| -> Result<Installation, ImportError> {
            let path = team.join(name);
            let (v, mtime) = read_json(&path)?;
            let b: BoltJsInstallation =
                serde_json::from_value(v).map_err(|e| ImportError::Folder {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
            Ok(b.into_installation(mtime))
        };
        let latest = match names.iter().any(|n| n == "app-latest") {
            true => Some(parse("app-latest")?),
            false => None,
        };
        let mut found = per_user_latest(&names, "user-")
            .map(|name| parse(name))
            .collect::<Result<Vec<_>, _>>()?;
        if found.is_empty() {
            if let Some(l) = &latest {
                let mut inst = l.clone();
                drop_user_token(&mut inst);
                found.push(inst);
            }
        }
        for mut inst in found {
            if let Some(l) = &latest {
                if l.bot_token.is_some() {
                    take_bot(&mut inst, l);
                }
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
    use crate::transfer::file_store::test_support::{token, write, Row};
    use crate::transfer::import_installations;

    #[tokio::test]
    async fn bolt_js_file_store_is_read() {
        let tmp = tempfile::tempdir().unwrap();
        // FileInstallationStore({ baseDir: tmp, clientId: '111.222' })
        let base = &tmp.path().join("111.222");
        let inst = |team: Option<&str>,
                    ent: Option<&str>,
                    user: &str,
                    user_token: Option<&str>,
                    bot: Option<&str>| {
            let mut v = serde_json::json!({
                "user": {"id": user, "token": user_token, "scopes": user_token.map(|_| ["search:read"])},
                "appId": "A111", "isEnterpriseInstall": ent.is_some() && team.is_none(),
                "authVersion": "v2", "tokenType": bot.map(|_| "bot"),
            });
            if let Some(t) = team {
                v["team"] = serde_json::json!({"id": t, "name": format!("Team {t}")});
            }
            if let Some(e) = ent {
                v["enterprise"] = serde_json::json!({"id": e, "name": "Org"});
                v["enterpriseUrl"] = serde_json::json!("https://org.enterprise.slack.com/");
            }
            if let Some(b) = bot {
                v["bot"] = serde_json::json!({"token": b, "scopes": ["chat:write", "commands"], "id": "B1",
                    "userId": "UBOT", "refreshToken": "xoxe-1-r", "expiresAt": 1_900_000_000});
                v["incomingWebhook"] = serde_json::json!({"url": "https://hooks.slack.com/x", "channel": "#general",
                    "channelId": "C1", "configurationUrl": "https://example.slack.com/conf"});
            }
            v
        };
        // @slack/oauth 4 writes a workspace outside an enterprise beside the app folder.
        write(
            tmp.path(),
            "111.222T1/app-latest",
            &inst(
                Some("T1"),
                None,
                "U1",
                Some("xoxp-u1"),
                Some("xoxe.xoxb-rotated"),
            ),
        );
        write(
            tmp.path(),
            "111.222T1/user-U1-latest",
            &inst(
                Some("T1"),
                None,
                "U1",
                Some("xoxp-u1"),
                Some("xoxe.xoxb-rotated"),
            ),
        );
        write(
            tmp.path(),
            "111.222T1/user-U2-latest",
            &inst(Some("T1"), None, "U2", None, Some("xoxb-older")),
        );
        std::fs::write(tmp.path().join("111.222T1/app-1700000000000"), "history").unwrap();
        // Another app's workspace, beside ours: not imported.
        write(
            tmp.path(),
            "999.888T9/app-latest",
            &inst(Some("T9"), None, "U9", None, Some("xoxb-other")),
        );
        write(
            base,
            "E1/app-latest",
            &inst(None, Some("E1"), "U3", None, Some("xoxb-org")),
        );
        write(
            base,
            "E1/user-U3-latest",
            &inst(None, Some("E1"), "U3", None, Some("xoxb-org")),
        );
        // The user's file went with their tokens: app-latest's user token is not imported.
        write(
            base,
            "E2-T2/app-latest",
            &inst(
                Some("T2"),
                Some("E2"),
                "U4",
                Some("xoxp-gone"),
                Some("xoxb-t2"),
            ),
        );

        let found = read_bolt_js_dir(tmp.path(), "111.222").unwrap();
        // The client-id folder itself works too, as does an older @slack/oauth's `{base}/T1`.
        assert_eq!(
            read_bolt_js_dir(base, "111.222").unwrap().len(),
            found.len()
        );
        std::fs::rename(tmp.path().join("111.222T1"), base.join("T1")).unwrap();
        assert_eq!(
            read_bolt_js_dir(tmp.path(), "111.222").unwrap().len(),
            found.len()
        );
        let summary: Vec<(Row, bool)> = found
            .iter()
            .map(|(_, i)| {
                (
                    (
                        i.enterprise_id.as_deref(),
                        i.team_id.as_deref(),
                        i.user_id.as_str(),
                        token(&i.bot_token),
                        token(&i.user_token),
                    ),
                    i.is_enterprise_install,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ((Some("E1"), None, "U3", Some("xoxb-org"), None), true),
                ((Some("E2"), Some("T2"), "U4", Some("xoxb-t2"), None), false),
                (
                    (
                        None,
                        Some("T1"),
                        "U1",
                        Some("xoxe.xoxb-rotated"),
                        Some("xoxp-u1")
                    ),
                    false
                ),
                (
                    (None, Some("T1"), "U2", Some("xoxe.xoxb-rotated"), None),
                    false
                ),
            ]
        );
        let t1 = &found[2].1;
        assert_eq!(t1.bot_scopes.as_deref(), Some("chat:write,commands"));
        assert_eq!(t1.bot_user_id.as_deref(), Some("UBOT"));
        assert_eq!(t1.bot_token_expires_at, Some(1_900_000_000));
        assert_eq!(t1.incoming_webhook_channel_id.as_deref(), Some("C1"));
        assert_eq!(t1.team_name.as_deref(), Some("Team T1"));
        assert!(
            t1.installed_at > 1_600_000_000.0,
            "the file's mtime stands in"
        );
        assert_eq!(
            found[0].1.enterprise_url.as_deref(),
            Some("https://org.enterprise.slack.com/")
        );

        let store = MemoryStore::new();
        assert_eq!(import_installations(&store, "app", found).await.unwrap(), 4);
        let org = TeamRef::new(Some("E1"), None, true);
        assert_eq!(
            token(
                &store
                    .find_bot("app", &org)
                    .await
                    .unwrap()
                    .unwrap()
                    .bot_token
            ),
            Some("xoxb-org")
        );
    }
}
