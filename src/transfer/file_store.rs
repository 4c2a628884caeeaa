//! What the readers of both SDKs' `FileInstallationStore` folders share: where an app's folder
//! is, listing team folders and their files, reading a JSON file with its modification time,
//! picking each user's latest file, and moving bot and user tokens between installations.

use std::path::{Path, PathBuf};

use serde_json::Value;

use super::error::ImportError;
use crate::store::Installation;

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
pub(super) fn take_bot(to: &mut Installation, from: &Installation) {
    to.bot_token = from.bot_token.clone();
    to.bot_id = from.bot_id.clone();
    to.bot_user_id = from.bot_user_id.clone();
    to.bot_scopes = from.bot_scopes.clone();
    to.bot_refresh_token = from.bot_refresh_token.clone();
    to.bot_token_expires_at = from.bot_token_expires_at;
}

pub(super) fn drop_user_token(inst: &mut Installation) {
    inst.user_token = None;
    inst.user_refresh_token = None;
    inst.user_token_expires_at = None;
    inst.user_scopes = None;
}

/// The team folders under `dir` (sorted, for a stable order).
pub(super) fn team_dirs(dir: &Path) -> Result<Vec<PathBuf>, ImportError> {
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
pub(super) fn file_names(dir: &Path) -> Result<Vec<String>, ImportError> {
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
pub(super) fn read_json(path: &Path) -> Result<(Value, f64), ImportError> {
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
pub(super) fn per_user_latest<'a>(
    names: &'a [String],
    prefix: &'a str,
) -> impl Iterator<Item = &'a String> {
    names.iter().filter(move |name| {
        name.strip_prefix(prefix)
            .and_then(|r| r.strip_suffix("-latest"))
            .is_some_and(|u| !u.is_empty())
    })
}

/// Fixtures for the folder readers' tests: writing a file store, and summing up what was read.
#[cfg(test)]
pub(super) mod test_support {
    use serde_json::Value;

    use crate::store::Token;

    /// enterprise, team, user, bot token, user token
    pub(in crate::transfer) type Row<'a> = (
        Option<&'a str>,
        Option<&'a str>,
        &'a str,
        Option<&'a str>,
        Option<&'a str>,
    );

    pub(in crate::transfer) fn write(dir: &std::path::Path, rel: &str, v: &Value) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, serde_json::to_string(v).unwrap()).unwrap();
    }

    pub(in crate::transfer) fn token(t: &Option<Token>) -> Option<&str> {
        t.as_ref().map(Token::expose)
    }
}
