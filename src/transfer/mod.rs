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

use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde_json::Value;

use crate::store::{group_by_team, Installation, InstallationStore, StoreError, TeamRecords};

/// Why an import stopped. Nothing after the failing line is imported.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{}: {message}", path.display())]
    Folder { path: PathBuf, message: String },
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
    let inst = parse_value(v)?;
    check_complete(&inst)?;
    Ok(inst)
}

/// A team and at least one token: what every imported installation needs.
fn check_complete(inst: &Installation) -> Result<(), String> {
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
fn parse_value(v: Value) -> Result<Installation, String> {
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

/// The folder an SDK file store keeps `app`'s installations in: both SDKs write under
/// `{base_dir}/{client_id}` when they were given a client id, and straight under `base_dir`
/// otherwise, so `dir` may name either.
pub fn app_dir(dir: &Path, client_id: &str) -> PathBuf {
    let nested = dir.join(client_id);
    if !client_id.is_empty() && nested.is_dir() {
        nested
    } else {
        dir.to_path_buf()
    }
}

/// The bot fields of an installation, as `slack_sdk`'s `Bot` has them.
fn take_bot(to: &mut Installation, from: &Installation) {
    to.bot_token = from.bot_token.clone();
    to.bot_id = from.bot_id.clone();
    to.bot_user_id = from.bot_user_id.clone();
    to.bot_scopes = from.bot_scopes.clone();
    to.bot_refresh_token = from.bot_refresh_token.clone();
    to.bot_token_expires_at = from.bot_token_expires_at;
}

fn drop_bot(inst: &mut Installation) {
    take_bot(inst, &Installation::default());
}

fn drop_user_token(inst: &mut Installation) {
    inst.user_token = None;
    inst.user_refresh_token = None;
    inst.user_token_expires_at = None;
    inst.user_scopes = None;
}

/// The team folders under `dir` (sorted, for a stable order).
fn team_dirs(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
    let io = |e: std::io::Error| ImportError::Folder {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_dir() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The names of the files in a team folder.
fn file_names(dir: &Path) -> Result<Vec<String>, ImportError> {
    let io = |e: std::io::Error| ImportError::Folder {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        if entry.file_type().map_err(io)?.is_file() {
            out.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out.sort();
    Ok(out)
}

/// Reads a JSON file of a file store, with its modification time (Unix seconds).
fn read_json(path: &Path) -> Result<(Value, f64), ImportError> {
    let err = |message: String| ImportError::Folder {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let v = serde_json::from_str(&text).map_err(|e| err(format!("not JSON: {e}")))?;
    let mtime = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0.0, |d| d.as_secs_f64());
    Ok((v, mtime))
}

/// The `{prefix}{user_id}-latest` files among `names`: each installing user's latest
/// installation, in the layouts of both SDKs' file stores.
fn per_user_latest<'a>(names: &'a [String], prefix: &'a str) -> impl Iterator<Item = &'a String> {
    names.iter().filter(move |name| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("-latest"))
            .is_some_and(|u| !u.is_empty())
    })
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

    /// enterprise, team, user, bot token, user token
    type Row<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );

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

    fn write(dir: &std::path::Path, rel: &str, v: &Value) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_string(v).unwrap()).unwrap();
    }

    fn token(t: &Option<Token>) -> Option<&str> {
        t.as_ref().map(Token::expose)
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
