//! Reaching PostgreSQL: TLS, the first connection (retried while the database is not up yet),
//! the migrations under a database lock, and the pool.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio_postgres::config::SslMode;
use tokio_postgres::error::SqlState;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::sql::{MIGRATIONS, MIGRATIONS_TABLE};
use crate::config::{DatabaseUrl, PostgresConfig};
use crate::store::StoreError;

/// How long one connection attempt may take.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The connection settings, with what the gateway adds: its name in `pg_stat_activity`, a
/// connect timeout, and TCP keepalives so a connection to a vanished server is noticed.
pub(super) fn pg_config(url: &DatabaseUrl) -> Result<tokio_postgres::Config, StoreError> {
    let mut c = tokio_postgres::Config::from_str(url.expose()).map_err(|e| open_err(url, e))?;
    if c.get_application_name().is_none() {
        c.application_name("slack-gateway");
    }
    c.connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(15))
        .keepalives_interval(Duration::from_secs(5))
        .keepalives_retries(3);
    Ok(c)
}

/// TLS as libpq does it for `sslmode=prefer` (the default): encrypted when the server offers
/// it, its certificate not checked (a passive listener learns nothing, as with libpq). With
/// `sslmode=require` TLS is required and the certificate is verified against the system's
/// roots and the host name (libpq's `verify-full`).
pub(super) fn tls(c: &tokio_postgres::Config) -> MakeRustlsConnect {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default protocol versions");
    let config = match c.get_ssl_mode() {
        SslMode::Require => {
            use rustls_platform_verifier::BuilderVerifierExt;
            builder
                .with_platform_verifier()
                .expect("the platform verifier loads")
                .with_no_client_auth()
        }
        _ => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(Unverified(provider)))
            .with_no_client_auth(),
    };
    MakeRustlsConnect::new(config)
}

/// Accepts any certificate, checking only that the handshake is signed by it.
#[derive(Debug)]
struct Unverified(Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for Unverified {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &rustls::pki_types::CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

pub(super) fn open_err(
    url: &DatabaseUrl,
    e: impl std::error::Error + Send + Sync + 'static,
) -> StoreError {
    StoreError::Open {
        path: format!("PostgreSQL {url}"),
        reason: crate::store::error_chain(&e),
    }
}

/// True for errors that waiting cannot cure: a refused login, a database that does not exist,
/// a server certificate that does not verify (`sslmode=require`).
fn is_final(e: &tokio_postgres::Error) -> bool {
    // rustls' reason reaches us as text inside an io::Error.
    crate::store::error_chain(e).contains("invalid peer certificate")
        || matches!(
            e.code(),
            Some(c) if *c == SqlState::INVALID_PASSWORD
                || *c == SqlState::INVALID_AUTHORIZATION_SPECIFICATION
                || *c == SqlState::INVALID_CATALOG_NAME
                || *c == SqlState::INSUFFICIENT_PRIVILEGE
        )
}

/// Connects once and applies the migrations, retrying for up to `wait` while the database
/// cannot be reached (it may be starting alongside the gateway). A refused login fails at once.
pub(super) async fn migrate_with_retry(
    pg: &tokio_postgres::Config,
    cfg: &PostgresConfig,
    holder: &str,
    wait: Duration,
) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + wait;
    let mut logged = None::<tokio::time::Instant>;
    loop {
        let attempt = async {
            let (mut client, conn) = pg.connect(tls(pg)).await?;
            let task = tokio::spawn(async move {
                let _ = conn.await;
            });
            let r = migrate(&mut client, &cfg.schema, holder).await;
            drop(client);
            let _ = task.await;
            r
        };
        match tokio::time::timeout(CONNECT_TIMEOUT * 2, attempt).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) if is_final(&e) => return Err(open_err(&cfg.url, e)),
            failed => {
                let reason = match failed {
                    Ok(Err(e)) => crate::store::error_chain(&e),
                    _ => "timed out".to_owned(),
                };
                let now = tokio::time::Instant::now();
                if now >= deadline {
                    return Err(StoreError::Open {
                        path: format!("PostgreSQL {}", cfg.url),
                        reason: format!(
                            "cannot reach {} after {}s: {reason}",
                            cfg.url.hosts(),
                            wait.as_secs()
                        ),
                    });
                }
                if logged.is_none_or(|at| now.duration_since(at) >= Duration::from_secs(5)) {
                    tracing::warn!(host = cfg.url.hosts(), error = %reason, "cannot open the PostgreSQL store yet; retrying");
                    logged = Some(now);
                }
                tokio::time::sleep(Duration::from_millis(500).min(deadline - now)).await;
            }
        }
    }
}

/// Applies the missing migrations in one transaction that first takes a transaction-scoped
/// advisory lock: replicas starting together queue on it, and each migration is applied once.
async fn migrate(
    client: &mut tokio_postgres::Client,
    schema: &str,
    holder: &str,
) -> Result<(), tokio_postgres::Error> {
    let s = |q: &str| q.replace("{s}", schema);
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&lock_id(schema)])
        .await?;
    tx.batch_execute(&s(MIGRATIONS_TABLE)).await?;
    let applied: Vec<i32> = tx
        .query(&s("SELECT version FROM {s}.schema_migrations"), &[])
        .await?
        .iter()
        .map(|r| r.get(0))
        .collect();
    for (version, name, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tx.batch_execute(&s(sql)).await?;
        tx.execute(
            &s("INSERT INTO {s}.schema_migrations (version, name, applied_by) VALUES ($1, $2, $3)"),
            &[version, name, &holder],
        )
        .await?;
        tracing::info!(version, name, schema, "applied a database migration");
    }
    let known = MIGRATIONS.last().map_or(0, |m| m.0);
    if let Some(newer) = applied.iter().filter(|v| **v > known).max() {
        // Migrations are backward compatible: an older replica keeps working beside a newer.
        tracing::warn!(
            schema,
            database = newer,
            gateway = known,
            "the database has migrations newer than this gateway; running as they are backward compatible"
        );
    }
    tx.commit().await
}

/// The advisory lock of a schema's migrations: a stable 64-bit hash of its name (FNV-1a).
fn lock_id(schema: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in "slack-gateway migrations ".bytes().chain(schema.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

/// The pool of the request path: `pool_size` connections at most; a checkout waits at most
/// `wait` (then the store is unavailable), and a dead connection is replaced on checkout.
pub(super) fn pool(
    pg: tokio_postgres::Config,
    size: usize,
    wait: Duration,
) -> Result<Pool, String> {
    let tls = tls(&pg);
    let manager = Manager::from_config(
        pg,
        tls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .wait_timeout(Some(wait))
        .create_timeout(Some(CONNECT_TIMEOUT.min(wait)))
        .recycle_timeout(Some(wait))
        .build()
        .map_err(|e| e.to_string())
}
