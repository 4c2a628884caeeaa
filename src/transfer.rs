//! Export and import of installations as JSON lines with `slack_sdk`'s field names.
//!
//! Each line loads in Python as `slack_sdk.oauth.installation_store.Installation(**line)`.
//! Export writes one line per installing user of each team (with that user's token and the
//! team's current bot), or the team's latest installation when no user record exists. Import
//! saves lines oldest first, so the latest bot of each team ends up the current one; it
//! accepts what `slack_sdk` writes (`bot_scopes` as a list or a comma-joined string, expiry as
//! a number or a date string) and ignores fields it does not know (`custom_values`, ...).

use serde::Deserialize;
use serde_json::Value;

use crate::store::{group_by_team, Installation, InstallationStore, StoreError, TeamRecords};

/// Why an import stopped. Nothing after the failing line is imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    Store(#[from] StoreError),
}

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

/// One line of an export, as `serde_json` writes it.
pub fn to_line(inst: &Installation) -> String {
    serde_json::to_string(inst).expect("an installation always serializes")
}

/// Parses one line as `slack_sdk` (or this gateway) writes it.
pub fn parse_line(line: &str) -> Result<Installation, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(mut map) = v else {
        return Err("not a JSON object".into());
    };
    for key in ["bot_scopes", "user_scopes"] {
        if let Some(Value::Array(items)) = map.get(key) {
            let joined: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().map(str::to_owned))
                .collect();
            map.insert(key.into(), Value::String(joined.join(",")));
        }
    }
    for key in ["bot_token_expires_at", "user_token_expires_at"] {
        if let Some(v) = map.get(key).cloned() {
            map.insert(key.into(), normalize_time(key, v)?);
        }
    }
    if let Some(v) = map.get("installed_at").cloned() {
        let secs = match v {
            Value::Number(n) => n.as_f64().unwrap_or(0.0),
            Value::String(s) => parse_time(&s)
                .ok_or_else(|| format!("installed_at: cannot read {s:?} as a time"))?
                as f64,
            Value::Null => 0.0,
            _ => return Err("installed_at: expected a number".into()),
        };
        map.insert("installed_at".into(), serde_json::json!(secs));
    }
    if map.get("user_id").is_none_or(Value::is_null) {
        map.insert("user_id".into(), Value::String(String::new()));
    }
    let known = Known::deserialize(Value::Object(map)).map_err(|e| e.to_string())?;
    let mut inst = known.0;
    if inst.installed_at == 0.0 {
        inst.installed_at = crate::http::unix_now() as f64;
    }
    if inst.team_id.is_none() && inst.enterprise_id.is_none() {
        return Err("neither team_id nor enterprise_id is set".into());
    }
    if inst.bot_token.is_none() && inst.user_token.is_none() {
        return Err("neither bot_token nor user_token is set".into());
    }
    Ok(inst)
}

/// `Installation` tolerant of unknown fields (serde ignores them by default).
#[derive(Deserialize)]
#[serde(transparent)]
struct Known(Installation);

fn normalize_time(key: &str, v: Value) -> Result<Value, String> {
    match v {
        Value::Null => Ok(Value::Null),
        Value::Number(n) => Ok(serde_json::json!(n.as_f64().unwrap_or(0.0) as i64)),
        Value::String(s) => parse_time(&s)
            .map(|t| serde_json::json!(t))
            .ok_or_else(|| format!("{key}: cannot read {s:?} as a time")),
        _ => Err(format!("{key}: expected a number")),
    }
}

/// Unix seconds from a number in a string or a date-time (`2026-01-02 03:04:05`, RFC 3339).
fn parse_time(s: &str) -> Option<i64> {
    if let Ok(n) = s.trim().parse::<f64>() {
        return Some(n as i64);
    }
    let t = humantime::parse_rfc3339_weak(s.trim()).ok()?;
    t.duration_since(std::time::UNIX_EPOCH)
        .ok()
        .map(|d| d.as_secs() as i64)
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
    parsed.sort_by(|a, b| a.1.installed_at.total_cmp(&b.1.installed_at));
    for (line, inst) in &parsed {
        store.save(app, inst).await.map_err(|e| match e {
            StoreError::InvalidId(id) => ImportError::Line {
                line: *line,
                message: format!("invalid id {id:?}"),
            },
            e => ImportError::Store(e),
        })?;
    }
    store.flush().await?;
    Ok(parsed.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;
    use crate::store::{TeamRef, Token};

    #[test]
    fn slack_sdk_shapes_are_read() {
        let line = r#"{"app_id":"A1","team_id":"T1","bot_token":"xoxb-1","bot_scopes":["chat:write","commands"],
            "user_id":"U1","bot_token_expires_at":"2030-01-01 00:00:00","installed_at":1700000000.25,
            "custom_values":{"x":1},"is_enterprise_install":false}"#
            .replace('\n', "");
        let inst = parse_line(&line).unwrap();
        assert_eq!(inst.bot_scopes.as_deref(), Some("chat:write,commands"));
        assert_eq!(inst.bot_token_expires_at, Some(1_893_456_000));
        assert_eq!(inst.installed_at, 1_700_000_000.25);
    }

    #[test]
    fn bad_lines_are_refused_with_a_reason() {
        for (line, want) in [
            ("nope", "not JSON"),
            ("[1]", "not a JSON object"),
            (r#"{"bot_token":"xoxb-1","user_id":"U"}"#, "neither team_id"),
            (r#"{"team_id":"T1","user_id":"U"}"#, "neither bot_token"),
            (
                r#"{"team_id":"T1","bot_token":"x","bot_token_expires_at":"soon"}"#,
                "bot_token_expires_at",
            ),
            (r#"{"team_id":5,"bot_token":"x"}"#, "invalid type"),
        ] {
            let e = parse_line(line).unwrap_err();
            assert!(e.contains(want), "{line}: {e}");
        }
    }

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
