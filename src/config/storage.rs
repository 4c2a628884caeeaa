//! `[storage]`: which backend keeps the installations (sled, embedded; or PostgreSQL, shared
//! by several gateways), where, and the keys that seal tokens at rest (each 32 bytes,
//! base64-encoded).

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use serde::Serialize;

use super::cx::{Cx, R};
use super::raw;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize)]
pub struct StorageConfig {
    pub backend: Backend,
    /// sled's folder (ignored by the postgres backend).
    pub path: PathBuf,
    /// Set when `backend = "postgres"`; shown (by `check`) as the keys the file sets.
    #[serde(flatten)]
    pub postgres: Option<PostgresConfig>,
    pub encryption_key: Option<Secret>,
    pub previous_encryption_keys: Vec<Secret>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    Sled,
    Postgres,
}

/// Default `storage.pool_size`.
pub const DEFAULT_POOL_SIZE: usize = 16;
/// Default `storage.schema`.
pub const DEFAULT_SCHEMA: &str = "slack_gateway";

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PostgresConfig {
    pub url: DatabaseUrl,
    pub pool_size: usize,
    pub schema: String,
}

/// `storage.url`: a PostgreSQL connection string (URL or `key=value` form), parsed. It may
/// hold a password, so it shows (in `Debug`, `Display`, `check` and logs) as
/// `postgres://user@host:port/db`, never with the password.
#[derive(Clone, PartialEq)]
pub struct DatabaseUrl {
    secret: Secret,
    shown: String,
    hosts: String,
}

impl DatabaseUrl {
    /// Parses a connection string as tokio-postgres does.
    pub fn parse(s: &str) -> Result<Self, String> {
        let c = tokio_postgres::Config::from_str(s).map_err(|e| e.to_string())?;
        if c.get_hosts().is_empty() {
            return Err("names no host".to_owned());
        }
        if c.get_user().is_none() {
            return Err("names no user (postgres://USER@host/db)".to_owned());
        }
        let ports = c.get_ports();
        let hosts: Vec<String> = c
            .get_hosts()
            .iter()
            .enumerate()
            .map(|(i, h)| {
                let port = ports.get(i).or(ports.first()).copied().unwrap_or(5432);
                match h {
                    tokio_postgres::config::Host::Tcp(h) if h.contains(':') => {
                        format!("[{h}]:{port}")
                    }
                    tokio_postgres::config::Host::Tcp(h) => format!("{h}:{port}"),
                    tokio_postgres::config::Host::Unix(p) => format!("{}", p.display()),
                }
            })
            .collect();
        let hosts = hosts.join(",");
        let user = c.get_user().unwrap_or_default();
        let db = c.get_dbname().unwrap_or(user);
        Ok(DatabaseUrl {
            secret: Secret::new(s),
            shown: format!("postgres://{user}@{hosts}/{db}"),
            hosts,
        })
    }

    /// The connection string itself, password included: only for connecting.
    pub fn expose(&self) -> &str {
        self.secret.expose()
    }

    /// `host:port` of every host it names, for error lines.
    pub fn hosts(&self) -> &str {
        &self.hosts
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.shown)
    }
}

impl Serialize for DatabaseUrl {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.shown)
    }
}

/// A schema name the gateway can use unquoted: lowercase letters, digits and `_`, not
/// starting with a digit, at most 63 bytes (PostgreSQL's identifier limit).
pub fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        && !s.starts_with("pg_")
}

impl Cx<'_> {
    /// `[storage]`.
    pub(super) fn storage(&mut self, st: &raw::RawStorage) -> R<StorageConfig> {
        let storage_path = self
            .path("storage.path", &st.path)?
            .unwrap_or_else(|| self.base.join("data"));
        let backend = match &st.backend {
            None => Backend::Sled,
            Some(b) => match self.expand("storage.backend", b)?.0.as_str() {
                "sled" => Backend::Sled,
                "postgres" => Backend::Postgres,
                other => {
                    return Err(self.err(
                        "storage.backend",
                        Some(b),
                        format!("`{other}` is not a backend: \"sled\" or \"postgres\""),
                    ))
                }
            },
        };
        let postgres = self.postgres(st, backend)?;
        let encryption_key = self.secret(
            "storage.encryption_key",
            &st.encryption_key,
            &st.encryption_key_file,
        )?;
        let mut previous_encryption_keys = Vec::new();
        for p in st.previous_encryption_keys.iter().flatten() {
            previous_encryption_keys.push(Secret::new(
                self.expand("storage.previous_encryption_keys", p)?.0,
            ));
        }
        for (key, k) in encryption_key
            .iter()
            .map(|k| ("storage.encryption_key", k))
            .chain(
                previous_encryption_keys
                    .iter()
                    .map(|k| ("storage.previous_encryption_keys", k)),
            )
        {
            use base64::Engine;
            let ok = base64::engine::general_purpose::STANDARD
                .decode(k.expose().trim())
                .map(|b| b.len() == 32)
                .unwrap_or(false);
            if !ok {
                return Err(self.err(
                    key,
                    st.encryption_key.as_ref(),
                    "must be 32 bytes, base64-encoded (`openssl rand -base64 32`)",
                ));
            }
        }

        Ok(StorageConfig {
            backend,
            path: storage_path,
            postgres,
            encryption_key,
            previous_encryption_keys,
        })
    }

    /// `storage.url`, `pool_size` and `schema`: required with (and only with) the postgres
    /// backend, so a replica never runs on a private sled folder by mistake.
    fn postgres(&mut self, st: &raw::RawStorage, backend: Backend) -> R<Option<PostgresConfig>> {
        let url = self.secret("storage.url", &st.url, &st.url_file)?;
        if backend == Backend::Sled {
            let stray = [
                ("storage.url", st.url.as_ref().or(st.url_file.as_ref())),
                ("storage.schema", st.schema.as_ref()),
            ];
            if let Some((key, at)) = stray.into_iter().find(|(_, v)| v.is_some()) {
                return Err(self.err(
                    key,
                    at,
                    "is for the postgres backend: set storage.backend = \"postgres\" to use it",
                ));
            }
            if let Some(n) = &st.pool_size {
                return Err(self.err_at(
                    "storage.pool_size",
                    n.span().start,
                    "is for the postgres backend: set storage.backend = \"postgres\" to use it",
                ));
            }
            return Ok(None);
        }
        let Some(url) = url else {
            return Err(self.err(
                "storage.url",
                st.backend.as_ref(),
                "is required with storage.backend = \"postgres\" (postgres://user@host:5432/db)",
            ));
        };
        let at = st.url.as_ref().or(st.url_file.as_ref());
        let url = DatabaseUrl::parse(url.expose().trim()).map_err(|e| {
            self.err(
                "storage.url",
                at,
                format!("is not a PostgreSQL connection string: {e}"),
            )
        })?;
        let pool_size = self.count("storage.pool_size", &st.pool_size, DEFAULT_POOL_SIZE, 1000)?;
        let schema = match &st.schema {
            None => DEFAULT_SCHEMA.to_owned(),
            Some(s) => {
                let v = self.expand("storage.schema", s)?.0;
                if !valid_schema(&v) {
                    return Err(self.err(
                        "storage.schema",
                        Some(s),
                        format!("`{v}` must be lowercase letters, digits and _ (not starting with a digit or pg_), at most 63"),
                    ));
                }
                v
            }
        };
        Ok(Some(PostgresConfig {
            url,
            pool_size,
            schema,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_url_never_shows_its_password() {
        let u = DatabaseUrl::parse("postgres://gw:s3cret-pw@db.internal:6432/app?sslmode=require")
            .unwrap();
        for shown in [
            u.to_string(),
            format!("{u:?}"),
            serde_json::to_string(&u).unwrap(),
        ] {
            assert!(!shown.contains("s3cret-pw"), "{shown}");
            assert!(shown.contains("gw@db.internal:6432/app"), "{shown}");
        }
        assert_eq!(u.hosts(), "db.internal:6432");
        let kv = DatabaseUrl::parse("host=10.0.0.1 user=gw password=hunter22 dbname=x").unwrap();
        assert!(!format!("{kv:?}").contains("hunter22"));
        assert_eq!(kv.hosts(), "10.0.0.1:5432");
        assert!(DatabaseUrl::parse("postgres://").is_err());
        assert!(DatabaseUrl::parse("postgres://db/x").is_err(), "no user");
        assert!(DatabaseUrl::parse("mysql://u@h/x").is_err());
    }

    #[test]
    fn schema_names() {
        for ok in ["slack_gateway", "gw2", "_x"] {
            assert!(valid_schema(ok), "{ok}");
        }
        for bad in [
            "",
            "Gw",
            "1gw",
            "a-b",
            "a;drop",
            "pg_catalog",
            &"x".repeat(64),
        ] {
            assert!(!valid_schema(bad), "{bad}");
        }
    }
}
