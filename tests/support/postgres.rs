//! A PostgreSQL for tests: `SLACK_GATEWAY_TEST_DATABASE_URL` (scripts/test.sh sets it, starting
//! a throwaway server when none answers), else the development machine's server at
//! 127.0.0.1:5432. Each test works in a schema of its own ([`Schema`]), dropped at the end.

use std::str::FromStr;

use slack_gateway::config::{DatabaseUrl, PostgresConfig};

/// The database the tests use.
pub fn database_url() -> String {
    std::env::var("SLACK_GATEWAY_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable".to_owned())
}

/// A fresh schema name: `t_{tag}_{random}`.
pub fn schema_name(tag: &str) -> String {
    let tag: String = tag
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .take(30)
        .collect();
    format!("t_{tag}_{:08x}", rand::random::<u32>())
}

/// A schema for one test; dropped (with everything in it) when this is dropped.
pub struct Schema {
    pub name: String,
    pub url: String,
}

impl Schema {
    pub fn new(tag: &str) -> Self {
        Schema {
            name: schema_name(tag),
            url: database_url(),
        }
    }

    /// The store config for this schema.
    pub fn config(&self) -> PostgresConfig {
        PostgresConfig {
            url: DatabaseUrl::parse(&self.url).expect("test database URL"),
            pool_size: 4,
            schema: self.name.clone(),
        }
    }

    /// The `[storage]` lines of a gateway.toml using this schema.
    pub fn toml(&self) -> String {
        super::pg_binary::pg_storage(&self.url, &self.name, "")
    }

    /// A plain client on the test database (for inspecting tables).
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, conn) = tokio_postgres::Config::from_str(&self.url)
            .unwrap()
            .connect(tokio_postgres::NoTls)
            .await
            .expect("the test database answers (see tests/support/postgres.rs)");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    /// The rows of `sql`, each column as text (NULL as an empty string).
    pub async fn rows_as_text(&self, sql: &str) -> Vec<Vec<String>> {
        let c = self.client().await;
        c.simple_query(sql)
            .await
            .unwrap()
            .into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => Some(
                    (0..r.len())
                        .map(|i| r.get(i).unwrap_or("").to_owned())
                        .collect(),
                ),
                _ => None,
            })
            .collect()
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Its own thread and runtime: drop may run inside or outside one.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok((c, conn)) = tokio_postgres::Config::from_str(&url)
                    .unwrap()
                    .connect(tokio_postgres::NoTls)
                    .await
                {
                    tokio::spawn(async move {
                        let _ = conn.await;
                    });
                    let _ = c
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        })
        .join();
    }
}
