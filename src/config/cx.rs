//! The validation context [`Cx`]: what every section's validation shares.
//!
//! It holds the text (for line numbers), where the file is and what was seen so far
//! (placeholder secrets, referenced files, injected header names), and reads values the same
//! way for every section: strings with `${VAR}` expanded, secrets inline or from `*_file`,
//! durations, counts, URLs, addresses, HTTP paths, templates. Also here: the error
//! constructors, [`join_url`], the redirect URI rule and the serde helpers the section types
//! share. A leaf of the config module: the sections import it, it imports none of them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::HeaderName;
use url::Url;

use super::error::ConfigError;
use super::expand;
use super::raw::Str;
use crate::secret::Secret;

/// The validation context: the text (for line numbers), where the file is, and what was seen.
pub(super) struct Cx<'a> {
    pub(super) text: &'a str,
    pub(super) path: String,
    pub(super) base: PathBuf,
    pub(super) env: &'a dyn Fn(&str) -> Option<String>,
    pub(super) placeholders: Vec<String>,
    pub(super) files: Vec<PathBuf>,
    /// The injected header names so far.
    pub(super) injected: Vec<Injected>,
}

/// An injected header's name as configured.
pub(super) struct Injected {
    pub(super) key: String,
    /// Lowercase, `_` as `-`.
    pub(super) folded: String,
    /// Where the file sets it (`None`: the default name).
    pub(super) line: Option<usize>,
}

pub(super) type R<T> = Result<T, ConfigError>;

impl Cx<'_> {
    pub(super) fn line(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())]
            .bytes()
            .filter(|b| *b == b'\n')
            .count()
            + 1
    }

    pub(super) fn err(
        &self,
        key: &str,
        at: Option<&Str>,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            line: at.map(|s| self.line(s.span().start)),
            message: message.into(),
        }
    }

    pub(super) fn err_at(
        &self,
        key: &str,
        offset: usize,
        message: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.clone(),
            key: key.to_owned(),
            line: Some(self.line(offset)),
            message: message.into(),
        }
    }

    /// Expands `${VAR}` and `${VAR:-default}`; records whether a default was used.
    pub(super) fn expand(&self, key: &str, s: &Str) -> R<(String, bool)> {
        expand::vars(s.get_ref(), self.env).map_err(|message| self.err(key, Some(s), message))
    }

    pub(super) fn string(&mut self, key: &str, s: &Option<Str>) -> R<Option<String>> {
        match s {
            None => Ok(None),
            Some(s) => Ok(Some(self.expand(key, s)?.0)),
        }
    }

    pub(super) fn string_or(&mut self, key: &str, s: &Option<Str>, default: &str) -> R<String> {
        Ok(self.string(key, s)?.unwrap_or_else(|| default.to_owned()))
    }

    pub(super) fn strings(&mut self, key: &str, v: &Option<Vec<Str>>) -> R<Vec<String>> {
        let mut out = Vec::new();
        for s in v.iter().flatten() {
            let value = self.expand(key, s)?.0;
            if value.trim().is_empty() {
                return Err(self.err(key, Some(s), "empty entries are not allowed"));
            }
            out.push(value);
        }
        Ok(out)
    }

    pub(super) fn path(&mut self, key: &str, s: &Option<Str>) -> R<Option<PathBuf>> {
        Ok(self.string(key, s)?.map(|p| self.base.join(p)))
    }

    /// A secret given inline or as `{key}_file`; both at once is an error.
    pub(super) fn secret(
        &mut self,
        key: &str,
        inline: &Option<Str>,
        file: &Option<Str>,
    ) -> R<Option<Secret>> {
        match (inline, file) {
            (Some(s), Some(_)) => Err(self.err(
                key,
                Some(s),
                format!("set either {key} or {key}_file, not both"),
            )),
            (Some(s), None) => {
                let (value, used_default) = self.expand(key, s)?;
                if used_default {
                    self.placeholders.push(key.to_owned());
                }
                Ok(Some(Secret::new(value)))
            }
            (None, Some(f)) => {
                let file_key = format!("{key}_file");
                let rel = self.expand(&file_key, f)?.0;
                let p = self.base.join(rel);
                let text = expand::secret_file(&p).map_err(|e| {
                    self.err(
                        &file_key,
                        Some(f),
                        format!("cannot read {}: {e}", p.display()),
                    )
                })?;
                self.files.push(p);
                Ok(Some(Secret::new(text)))
            }
            (None, None) => Ok(None),
        }
    }

    pub(super) fn duration(
        &mut self,
        key: &str,
        s: &Option<Str>,
        default: Duration,
    ) -> R<Duration> {
        let Some(raw) = s else { return Ok(default) };
        let text = self.expand(key, raw)?.0;
        let d = humantime::parse_duration(text.trim()).map_err(|e| {
            self.err(
                key,
                Some(raw),
                format!("`{text}` is not a duration ({e}); write e.g. \"10m\" or \"2500ms\""),
            )
        })?;
        if d.is_zero() {
            return Err(self.err(key, Some(raw), "must be longer than zero"));
        }
        Ok(d)
    }

    /// A positive whole number up to `max`.
    pub(super) fn count(
        &self,
        key: &str,
        v: &Option<toml::Spanned<i64>>,
        default: usize,
        max: i64,
    ) -> R<usize> {
        match v {
            None => Ok(default),
            Some(n) if (1..=max).contains(n.get_ref()) => Ok(*n.get_ref() as usize),
            Some(n) => {
                Err(self.err_at(key, n.span().start, format!("must be between 1 and {max}")))
            }
        }
    }

    pub(super) fn url(&mut self, key: &str, s: &Option<Str>) -> R<Option<Url>> {
        let Some(raw) = s else { return Ok(None) };
        let text = self.expand(key, raw)?.0;
        let u = Url::parse(&text)
            .map_err(|e| self.err(key, Some(raw), format!("`{text}` is not a URL ({e})")))?;
        if !matches!(u.scheme(), "http" | "https") || u.host_str().is_none() {
            return Err(self.err(
                key,
                Some(raw),
                format!("`{text}` must be an http(s) URL with a host"),
            ));
        }
        Ok(Some(u))
    }

    pub(super) fn socket(&mut self, key: &str, s: &Option<Str>, default: &str) -> R<SocketAddr> {
        let text = self.string_or(key, s, default)?;
        text.parse().map_err(|_| {
            self.err(
                key,
                s.as_ref(),
                format!("`{text}` is not an address like \"127.0.0.1:3000\""),
            )
        })
    }

    pub(super) fn http_path(&mut self, key: &str, s: &Option<Str>, default: &str) -> R<String> {
        let p = self.string_or(key, s, default)?;
        if !p.starts_with('/') || p.starts_with("//") || p.contains(['?', '#', ' ']) {
            return Err(self.err(
                key,
                s.as_ref(),
                format!("`{p}` must be a path starting with `/`"),
            ));
        }
        Ok(p)
    }

    pub(super) fn template(&mut self, key: &str, s: &Option<Str>) -> R<Option<PathBuf>> {
        let Some(p) = self.path(key, s)? else {
            return Ok(None);
        };
        if let Err(e) = std::fs::metadata(&p) {
            return Err(self.err(key, s.as_ref(), format!("cannot read {}: {e}", p.display())));
        }
        self.files.push(p.clone());
        Ok(Some(p))
    }
}

/// `base` with `path` as its path (any path of `base` is replaced by `path` appended to it).
pub(crate) fn join_url(base: &Url, path: &str) -> Url {
    let mut u = base.clone();
    let prefix = base.path().trim_end_matches('/');
    u.set_path(&format!("{prefix}{path}"));
    u.set_query(None);
    u
}

/// Redirect URIs must be https, except plain http on a loopback host (development).
pub(super) fn check_redirect_uri(cx: &Cx<'_>, key: &str, at: Option<&Str>, u: &Url) -> R<()> {
    let loopback = matches!(u.host_str(), Some("localhost" | "127.0.0.1" | "[::1]"));
    if u.scheme() == "https" || (u.scheme() == "http" && loopback) {
        Ok(())
    } else {
        Err(cx.err(
            key,
            at,
            format!(
                "`{u}` must be https:// (plain http is allowed for localhost and 127.0.0.1 only)"
            ),
        ))
    }
}

pub(super) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&duration_text(*d))
}

/// A duration as a config file writes it, in the largest unit that holds it whole ("2500ms",
/// "10s", "10m", "24h"): what `check` prints can be read back.
fn duration_text(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 || d.subsec_nanos() % 1_000_000 != 0 {
        return humantime::format_duration(d).to_string();
    }
    match ms {
        _ if ms % 3_600_000 == 0 => format!("{}h", ms / 3_600_000),
        _ if ms % 60_000 == 0 => format!("{}m", ms / 60_000),
        _ if ms % 1000 == 0 => format!("{}s", ms / 1000),
        _ => format!("{ms}ms"),
    }
}

pub(super) fn ser_header<S: serde::Serializer>(h: &HeaderName, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(h.as_str())
}
