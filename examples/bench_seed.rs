//! Seeds a gateway store for the benchmarks (see `bench/README.md`).
//!
//! Opens the gateway's store, either the sled folder at `--store` or a PostgreSQL schema
//! (`--postgres URL --schema NAME`, created and migrated as the gateway does at start, through
//! `PgStore::open`), and saves installations into it through the same
//! `InstallationStore::save` the OAuth callback uses, either
//! - from the benchmark harness's installations file (`--installations FILE`: a JSON list of
//!   `{team_id, team_name, enterprise_id, app_id, bot_token, bot_id, bot_user_id, bot_scopes,
//!   installed_at}` as `gen/gen_signed.py installations` writes it), or
//! - `--synthetic N` generated ones (deterministic: team `T0` + 9 base-36 digits of the index),
//!   optionally also written in the harness's format with `--export-json FILE` so signed
//!   requests can be generated for them.
//!
//! ```text
//! cargo run --release --example bench_seed -- --store /tmp/gw/store --client-id bench-client \
//!     --installations data/installations.json
//! cargo run --release --example bench_seed -- --store /tmp/gw/store --client-id bench-client \
//!     --synthetic 100000 --export-json /tmp/gw/installations.json
//! cargo run --release --example bench_seed -- --client-id bench-client \
//!     --postgres 'postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable' \
//!     --schema gw_bench --installations data/installations.json
//! ```
//!
//! Every `save` is durable when it returns (sled: one flush each; PostgreSQL: one committed
//! transaction each), so 100,000 installations take a while; `--concurrency` keeps several
//! saves in flight to overlap the encoding with the flush (with PostgreSQL at most
//! `--pool-size`, the connections there are to run them on).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::Parser;
use serde::{Deserialize, Serialize};
use slack_gateway::config::{DatabaseUrl, PostgresConfig};
use slack_gateway::store::postgres::{PgStore, Timeouts};
use slack_gateway::store::{sled::SledStore, Installation, InstallationStore, Token};

/// The gateway's default `storage.schema`.
const DEFAULT_SCHEMA: &str = "slack_gateway";

#[derive(Parser)]
#[command(
    about = "Seed a slack-gateway store (sled or PostgreSQL) with installations for benchmarks"
)]
struct Args {
    /// The sled store folder (the gateway's `storage.path`); created if missing
    #[arg(
        long,
        conflicts_with = "postgres",
        required_unless_present = "postgres"
    )]
    store: Option<PathBuf>,
    /// Seed a PostgreSQL database instead (the gateway's `storage.url`), e.g.
    /// `postgres://postgres@127.0.0.1:5432/postgres?sslmode=disable`
    #[arg(long, value_name = "URL")]
    postgres: Option<String>,
    /// With --postgres: the schema (the gateway's `storage.schema`); created and migrated if
    /// missing [default: slack_gateway]
    #[arg(long, value_name = "NAME", conflicts_with = "store")]
    schema: Option<String>,
    /// With --postgres: connections in the pool (the gateway's `storage.pool_size`)
    #[arg(long, value_name = "N", default_value_t = 16, conflicts_with = "store")]
    pool_size: usize,
    /// The Slack app's client id the records are scoped by (the gateway's `slack.client_id`)
    #[arg(long)]
    client_id: String,
    /// Installations to save: the harness's JSON list (`INSTALLATIONS`)
    #[arg(
        long,
        conflicts_with = "synthetic",
        required_unless_present = "synthetic"
    )]
    installations: Option<PathBuf>,
    /// Generate and save N synthetic installations instead
    #[arg(long, value_name = "N")]
    synthetic: Option<usize>,
    /// With --synthetic: also write them as a harness-format JSON list (for gen_signed.py)
    #[arg(long, value_name = "FILE", requires = "synthetic")]
    export_json: Option<PathBuf>,
    /// The installing user recorded with each installation (slack_sdk always has one)
    #[arg(long, default_value = "U0INSTALLER")]
    installer: String,
    /// Saves kept in flight at once
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// One entry of the harness's installations file (`gen_signed.py installations`).
#[derive(Debug, Serialize, Deserialize)]
struct HarnessInstallation {
    team_id: String,
    #[serde(default)]
    team_name: Option<String>,
    #[serde(default)]
    enterprise_id: Option<String>,
    #[serde(default)]
    app_id: Option<String>,
    bot_token: String,
    #[serde(default)]
    bot_id: Option<String>,
    #[serde(default)]
    bot_user_id: Option<String>,
    #[serde(default)]
    bot_scopes: Option<String>,
    #[serde(default)]
    installed_at: Option<f64>,
    /// Not written by the generator; the installer id (`--installer`) is used when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    user_id: Option<String>,
}

impl HarnessInstallation {
    fn into_installation(self, installer: &str) -> Installation {
        Installation {
            app_id: self.app_id,
            enterprise_id: self.enterprise_id.filter(|e| !e.is_empty()),
            team_id: Some(self.team_id),
            team_name: self.team_name,
            bot_token: Some(Token::new(self.bot_token)),
            bot_id: self.bot_id,
            bot_user_id: self.bot_user_id,
            bot_scopes: self.bot_scopes,
            user_id: self.user_id.unwrap_or_else(|| installer.to_owned()),
            token_type: Some("bot".to_owned()),
            installed_at: self.installed_at.unwrap_or(1_700_000_000.0),
            ..Installation::default()
        }
    }
}

/// A schema name the gateway accepts (its config's rule): lowercase letters, digits and `_`,
/// not starting with a digit or `pg_`, at most 63 bytes; it is spliced into SQL unquoted.
fn valid_schema(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && !s.starts_with(|c: char| c.is_ascii_digit())
        && !s.starts_with("pg_")
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// `width` base-36 digits of `n`, upper case, zero-padded (Slack ids are upper-case base 36).
fn base36(mut n: u64, width: usize) -> String {
    const DIGITS: &[u8; 36] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = DIGITS[(n % 36) as usize];
        n /= 36;
    }
    String::from_utf8(out).expect("ascii")
}

/// The `i`-th synthetic installation, shaped like the generator's (same id lengths and token
/// format) so records have realistic sizes.
fn synthetic(i: usize) -> HarnessInstallation {
    let i = i as u64;
    // A cheap mix so tokens look random but stay deterministic.
    let h = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ 0x5DEE_CE66_D1CE_4E5B;
    HarnessInstallation {
        team_id: format!("T0{}", base36(i, 9)),
        team_name: Some(format!("team-{i}")),
        enterprise_id: None,
        app_id: Some("A0GATEWAY01".to_owned()),
        bot_token: format!(
            "xoxb-{}-{}-{}{}",
            100_000_000_000 + i,
            1_000_000_000_000 + (h % 9_000_000_000_000),
            base36(h, 12).to_ascii_lowercase(),
            base36(h.rotate_left(29), 12)
        ),
        bot_id: Some(format!("B0{}", base36(h.rotate_left(7), 9))),
        bot_user_id: Some(format!("U0{}", base36(h.rotate_left(17), 9))),
        bot_scopes: Some("chat:write,commands,channels:history,app_mentions:read".to_owned()),
        installed_at: Some(1_700_000_000.0 + i as f64),
        user_id: None,
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let list: Vec<HarnessInstallation> = match (&args.installations, args.synthetic) {
        (Some(path), _) => {
            let bytes =
                std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            serde_json::from_slice(&bytes)
                .with_context(|| format!("{}: not a JSON list of installations", path.display()))?
        }
        (None, Some(n)) => (0..n).map(synthetic).collect(),
        (None, None) => bail!("give --installations FILE or --synthetic N"),
    };
    if let Some(out) = &args.export_json {
        let json = serde_json::to_vec(&list)?;
        if let Some(dir) = out.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(out, json).with_context(|| format!("writing {}", out.display()))?;
    }
    let count = list.len();
    let installs: Vec<Installation> = list
        .into_iter()
        .map(|h| h.into_installation(&args.installer))
        .collect();

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let started = Instant::now();
        let (store, concurrency): (Arc<dyn InstallationStore>, usize) =
            match (&args.store, &args.postgres) {
                (Some(path), _) => (
                    Arc::new(
                        SledStore::open(path)
                            .with_context(|| format!("opening the store at {}", path.display()))?,
                    ),
                    args.concurrency,
                ),
                (None, Some(url)) => {
                    let schema = args.schema.as_deref().unwrap_or(DEFAULT_SCHEMA);
                    if !valid_schema(schema) {
                        bail!("--schema {schema}: lowercase letters, digits and _ (not starting with a digit or pg_), at most 63");
                    }
                    let cfg = PostgresConfig {
                        url: DatabaseUrl::parse(url)
                            .map_err(|e| anyhow::anyhow!("--postgres: {e}"))?,
                        pool_size: args.pool_size.max(1),
                        schema: schema.to_owned(),
                    };
                    let store = PgStore::open(&cfg, None, Timeouts::default())
                        .await
                        .with_context(|| format!("opening schema {schema} at {}", cfg.url))?;
                    // More saves in flight than connections would only queue for the pool,
                    // inside the store's per-call timeout.
                    (Arc::new(store), args.concurrency.min(cfg.pool_size))
                }
                (None, None) => bail!("give --store DIR or --postgres URL"),
            };
        let client_id: Arc<str> = args.client_id.into();
        let limit = Arc::new(tokio::sync::Semaphore::new(concurrency.max(1)));
        let mut tasks = tokio::task::JoinSet::new();
        for inst in installs {
            let permit = limit.clone().acquire_owned().await?;
            let (store, client_id) = (store.clone(), client_id.clone());
            tasks.spawn(async move {
                let r = store.save(&client_id, &inst).await;
                drop(permit);
                r.with_context(|| format!("saving {}", inst.admin_id()))
            });
            while let Some(done) = tasks.try_join_next() {
                done??;
            }
        }
        while let Some(done) = tasks.join_next().await {
            done??;
        }
        store.flush().await?;
        // PostgreSQL's bot count is the one its last committed save saw (concurrent saves
        // may finish out of order) until the store's housekeeping recounts: not shown.
        let bots = if args.postgres.is_none() {
            format!("; {} bot(s)", store.bot_count())
        } else {
            String::new()
        };
        eprintln!(
            "saved {count} installation(s) for client_id {client_id} in {:.1}s{bots} in {}",
            started.elapsed().as_secs_f64(),
            store.describe()
        );
        Ok(())
    })
}
