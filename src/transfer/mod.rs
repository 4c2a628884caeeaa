//! Export and import of installations as JSON lines with `slack_sdk`'s field names.
//!
//! Each line loads in Python as `slack_sdk.oauth.installation_store.Installation(**line)`.
//! Export writes one line per installing user of each team (with that user's token and the
//! team's current bot), or the team's latest installation when no user record exists. Import
//! saves lines oldest first, so the latest bot of each team ends up the current one; it
//! accepts what `slack_sdk` writes (`bot_scopes` as a list or a comma-joined string, expiry as
//! a number or a date string) and ignores fields it does not know (`custom_values`, ...).
//!
//! Migration from the SDKs' file stores reads their folders as they left them:
//! [`read_slack_sdk_dir`] for `slack_sdk`'s `FileInstallationStore` (Bolt for Python) and
//! [`read_bolt_js_dir`] for `@slack/oauth`'s `FileInstallationStore` (Bolt for JavaScript).
//!
//! One file per format: `jsonl` writes and reads the lines, `slack_sdk` and `bolt_js` read the
//! two SDKs' folders, and `file_store` holds what both folder readers share. This file holds
//! export, import, and the saving that both kinds of import end in.

mod bolt_js;
mod error;
mod file_store;
mod jsonl;
mod slack_sdk;

use std::path::PathBuf;

use crate::store::{group_by_team, Installation, InstallationStore, StoreError, TeamRecords};

pub use self::bolt_js::read_bolt_js_dir;
pub use self::error::ImportError;
pub use self::file_store::app_dir;
pub use self::jsonl::{parse_line, to_line};
pub use self::slack_sdk::read_slack_sdk_dir;

/// The installations to export for `app`, one per installing user of each team.
pub async fn export(
    store: &dyn InstallationStore,
    app: &str,
) -> Result<Vec<Installation>, StoreError> {
    let mut out = Vec::new();
    for (_, TeamRecords { bot, latest, users }) in group_by_team(store.list(app).await?) {
        let mut lines: Vec<Installation> = if users.is_empty() {
            latest.clone().or(bot.clone()).into_iter().collect()
        } else {
            users.into_iter().map(|(_, i)| i).collect()
        };
        for line in &mut lines {
            if let Some(b) = &bot {
                // The bot as it is now (rotation updates only the bot record).
                line.bot_token = b.bot_token.clone();
                line.bot_id = b.bot_id.clone();
                line.bot_user_id = b.bot_user_id.clone();
                line.bot_scopes = b.bot_scopes.clone();
                line.bot_refresh_token = b.bot_refresh_token.clone();
                line.bot_token_expires_at = b.bot_token_expires_at;
            }
        }
        lines.sort_by(|a, b| a.installed_at.total_cmp(&b.installed_at));
        out.extend(lines);
    }
    Ok(out)
}

/// Imports JSON lines into the store; returns how many installations were saved.
pub async fn import(
    store: &dyn InstallationStore,
    app: &str,
    text: &str,
) -> Result<usize, ImportError> {
    let mut parsed = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let inst = parse_line(line).map_err(|message| ImportError::Line {
            line: i + 1,
            message,
        })?;
        parsed.push((i + 1, inst));
    }
    save_oldest_first(store, app, parsed).await
}

/// Saves installations oldest first (so each team's latest ends up its current one), then
/// flushes. `T` says where each came from, for errors.
async fn save_oldest_first<T: Into<Origin>>(
    store: &dyn InstallationStore,
    app: &str,
    mut items: Vec<(T, Installation)>,
) -> Result<usize, ImportError> {
    items.sort_by(|a, b| a.1.installed_at.total_cmp(&b.1.installed_at));
    let n = items.len();
    for (origin, inst) in items {
        store
            .save(app, &inst)
            .await
            .map_err(|e| match (e, origin.into()) {
                (StoreError::InvalidId(id), Origin::Line(line)) => ImportError::Line {
                    line,
                    message: format!("invalid id {id:?}"),
                },
                (StoreError::InvalidId(id), Origin::Team(team)) => ImportError::Folder {
                    path: team,
                    message: format!("invalid id {id:?}"),
                },
                (e, _) => ImportError::Store(e),
            })?;
    }
    store.flush().await?;
    Ok(n)
}

/// Where an imported installation came from.
enum Origin {
    Line(usize),
    Team(PathBuf),
}

impl From<usize> for Origin {
    fn from(line: usize) -> Self {
        Origin::Line(line)
    }
}

impl From<PathBuf> for Origin {
    fn from(p: PathBuf) -> Self {
        Origin::Team(p)
    }
}

/// Saves installations read from an SDK's file store ([`read_slack_sdk_dir`],
/// [`read_bolt_js_dir`]); returns how many were saved.
pub async fn import_installations(
    store: &dyn InstallationStore,
    app: &str,
    installations: Vec<(PathBuf, Installation)>,
) -> Result<usize, ImportError> {
    save_oldest_first(store, app, installations).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{TeamRef, Token};

    #[tokio::test]
    async fn export_then_import_round_trips() {
        use crate::store::contract::{org_install, workspace_install};
        let a = MemoryStore::new();
        let mut u1 = workspace_install("T1", "U1", "xoxb-old");
        u1.user_token = Some(Token::new("xoxp-1"));
        u1.installed_at = 1.0;
        let mut u2 = workspace_install("T1", "U2", "xoxb-new");
        u2.installed_at = 2.0;
        a.save("app", &u1).await.unwrap();
        a.save("app", &u2).await.unwrap();
        a.save("app", &org_install("E1", "U3", "xoxb-org"))
            .await
            .unwrap();
        let lines: Vec<String> = export(&a, "app")
            .await
            .unwrap()
            .iter()
            .map(to_line)
            .collect();
        assert_eq!(lines.len(), 3);
        let b = MemoryStore::new();
        assert_eq!(import(&b, "app", &lines.join("\n")).await.unwrap(), 3);
        assert_eq!(
            a.list("app").await.unwrap().len(),
            b.list("app").await.unwrap().len()
        );
        let t1 = TeamRef::new(None, Some("T1"), false);
        assert_eq!(
            b.find_bot("app", &t1)
                .await
                .unwrap()
                .unwrap()
                .bot_token
                .unwrap()
                .expose(),
            "xoxb-new"
        );
        assert_eq!(
            b.find_user("app", &t1, "U1")
                .await
                .unwrap()
                .unwrap()
                .user_token
                .unwrap()
                .expose(),
            "xoxp-1"
        );
        let err = import(
            &b,
            "app",
            "{\"team_id\":\"T9\",\"bot_token\":\"x\"}\n\nnot json",
        )
        .await
        .unwrap_err();
        assert!(err.to_string().starts_with("line 3:"), "{err}");
    }
}
