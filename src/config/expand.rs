//! `${VAR}` / `${VAR:-default}` expansion and `*_file` secret reading: text in, text out.
//!
//! A leaf with no config types: [`super::cx`] calls these for every value it reads and turns
//! their errors into [`super::ConfigError`]s naming the key and the line.

use std::path::Path;

/// Expands `${VAR}` and `${VAR:-default}` in `input`, looking variables up with `env`: the
/// expanded text and whether a default was used, or what is wrong with a reference (the
/// caller adds the key and line).
pub(super) fn vars(
    input: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(input.len());
    let mut used_default = false;
    let mut rest = input;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let after = &rest[i + 2..];
        let Some(end) = after.find('}') else {
            return Err("unterminated `${` (write `${NAME}`)".to_owned());
        };
        let expr = &after[..end];
        let (name, default) = match expr.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (expr, None),
        };
        let valid_name = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!(
                "`${{{expr}}}` is not a valid environment variable reference"
            ));
        }
        match (env(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => {
                used_default = true;
                out.push_str(d)
            }
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (write `${{{name}:-default}}` for a default)"
                ))
            }
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok((out, used_default))
}

/// The secret in the file at `p`: its text without the trailing line break.
pub(super) fn secret_file(p: &Path) -> std::io::Result<String> {
    let text = std::fs::read_to_string(p)?;
    warn_loose_permissions(p);
    Ok(text.trim_end_matches(['\n', '\r']).to_owned())
}

/// A secret file that others can read is worth a warning (not an error: some platforms mount
/// them 0644 inside a private volume).
fn warn_loose_permissions(p: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(p) {
            if m.permissions().mode() & 0o077 != 0 {
                tracing::warn!(file = %p.display(), "secret file is readable by group or others; chmod 600 it");
            }
        }
    }
}
