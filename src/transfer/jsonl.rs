//! The JSON lines format: one installation per line with `slack_sdk`'s field names. Writes a
//! line, and reads one as `slack_sdk` or this gateway writes it (scopes as a list or a
//! comma-joined string, expiry as a number or a date string, unknown fields ignored). The SDK
//! folder readers parse their files with the same `parse_value` and `check_complete`.

use serde::Deserialize;
use serde_json::Value;

use crate::store::Installation;

/// One line of an export, as `serde_json` writes it.
pub fn to_line(inst: &Installation) -> String {
    serde_json::to_string(inst).expect("an installation always serializes")
}

/// Parses one line as `slack_sdk` (or this gateway) writes it.
pub fn parse_line(line: &str) -> Result<Installation, String> {
    let v: Value = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
    let inst = parse_value(v)?;
    check_complete(&inst)?;
    Ok(inst)
}

/// A team and at least one token: what every imported installation needs.
pub(super) fn check_complete(inst: &Installation) -> Result<(), String> {
    if inst.team_id.is_none() && inst.enterprise_id.is_none() {
        return Err("neither team_id nor enterprise_id is set".into());
    }
    if inst.bot_token.is_none() && inst.user_token.is_none() {
        return Err("neither bot_token nor user_token is set".into());
    }
    Ok(())
}

/// An installation from a JSON object with `slack_sdk`'s field names (an `Installation` or a
/// `Bot`, as `to_dict()`, `__dict__` or this gateway writes them), not yet checked for
/// completeness.
pub(super) fn parse_value(v: Value) -> Result<Installation, String> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
