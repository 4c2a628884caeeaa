//! # slack-gateway
//!
//! A reverse proxy that owns the Slack-specific half of a Slack app.
//!
//! ## The floors
//!
//! The crate reads as floors, each importing only from the floors below it (and its own,
//! without circles; `shared/tools/house-check src` checks):
//!
//! 1. **Vocabulary**, no crate imports: [`http`] (the response body type and the gateway's own
//!    answers; [`http::headers`], header hygiene as data; [`http::path`], the forms in which
//!    paths are matched), [`secret`] (unprintable secrets), [`seal`] (AEAD sealing).
//! 2. **Config** ([`config`]): `gateway.toml` parsed into a raw mirror, then validated into a
//!    [`config::Config`]; secrets, `${VAR}` expansion, per-section rules.
//! 3. **Protocol and storage**: [`slack`] (signatures, payload identity, the Web API client,
//!    id_token verification, Socket Mode's frames), [`store`] (the storage trait, its contract, the sled, PostgreSQL and
//!    memory backends, token sealing, the replay guard and refresh locks; PostgreSQL lets
//!    several gateways share installations, states, replay checks and refresh leases), [`upstream`] (the target,
//!    the per-connection hyper client, the response framing rules both transports share),
//!    [`tls`] (the certificate the public listener presents, hot-swapped), [`pages`] (the
//!    gateway's own HTML pages and the install link, built once per config). The OAuth
//!    `state`s are [`store::states`]: self-verifying, only their used-markers are stored.
//! 4. **Shared state**: [`gateway`] (the live config behind an `ArcSwap`, the store, the
//!    replay guard, the body budget) and [`metrics`]. Data only: the flows act on it.
//! 5. **Flows**, which never know which listener called them: [`proxy`] (the pipeline:
//!    verify → parse → resolve → inject → forward, one for every ingress), [`oauth`] (install
//!    flow, states, token rotation), [`signin`] (Sign in with Slack: it decides, the caller
//!    forwards), [`reload`], [`admin`], [`transfer`] (export/import, the SDKs' file stores),
//!    [`manifest`], [`egress`] (the Web API egress: Slack calls with the installation's token),
//!    [`delivery`] (queued delivery's worker: accepted events to the upstream, retried, dead
//!    letters; the pipeline stores them in `proxy::queued`).
//! 6. **Ingress**: [`server`] (the public, admin and egress listeners, routing, limits,
//!    graceful shutdown), [`lane`] (the fast lane: Slack's plain requests straight off the
//!    socket, through the same pipeline), [`socket_mode`] (Slack's Socket Mode WebSockets held
//!    by the gateway, each envelope through the same pipeline as HTTP),
//!    [`write_timeout`] (a client that takes no byte of its answers is cut off),
//!    [`open_files`] (the descriptor limit at start).
//! 7. [`run`] here, and `main.rs` (CLI, tracing, signals).
//!
//! ## The flows
//!
//! - **Request**: Slack POSTs to one of `upstream.slack_paths`. What the head alone can tell
//!   is judged first (signature headers, the body budget), then the body is read (bounded),
//!   its signature checked ([`slack::signature`]), the payload parsed and its workspace
//!   identified ([`slack::payload`]), the installation looked up ([`store`]), the headers
//!   cleaned and the bot token injected ([`http::headers`]), and the request forwarded byte for
//!   byte to the upstream, whose answer goes back to Slack as it is. Plain requests take the
//!   fast lane ([`lane`]); hyper serves everything else.
//! - **Install** ([`oauth`]): "Add to Slack" issues a self-verifying state bound to the
//!   browser, Slack calls back, `oauth.v2.access` and `auth.test` are called ([`slack::api`])
//!   and the installation is saved durably before the success page. Rotating tokens are
//!   refreshed before use, one refresh per installation at a time ([`oauth::rotation`]).
//! - **Sign in** ([`signin`]): Sign in with Slack (OIDC) in front of the upstream's pages; the
//!   id_token is verified against Slack's keys ([`slack::oidc`]) and a sealed session cookie
//!   is set.
//! - **Socket Mode** ([`socket_mode`]): the gateway opens the app's WebSockets; each envelope
//!   is rendered as HTTP mode's request, signed, sent through the pipeline after its signature
//!   stage ([`proxy::handle_authenticated`]) and acked when the upstream answers 2xx.
//! - **Reload** ([`reload`]): the config and every file it names are watched; a new config is
//!   validated whole, then swapped in, never half.
//!
//! [`run`] takes listeners that are already bound and a shutdown future, so tests bind port 0
//! and stop the gateway when they are done.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod delivery;
pub mod egress;
pub mod gateway;
pub mod http;
pub mod lane;
pub mod manifest;
pub mod metrics;
pub mod oauth;
pub mod open_files;
pub mod pages;
pub mod proxy;
pub mod reload;
pub mod seal;
pub mod secret;
pub mod server;
pub mod signin;
pub mod slack;
pub mod socket_mode;
pub mod store;
pub mod tls;
pub mod transfer;
pub mod upstream;
pub mod write_timeout;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Backend, Config};
use crate::gateway::Gateway;
use crate::store::{postgres::PgStore, sled::SledStore, InstallationStore, StoreError};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("server.tls: {0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr} (egress.listen): {source}")]
    EgressListen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
}

/// Opens the configured store and builds the gateway's shared state.
pub async fn open(config: Config, config_path: &Path) -> Result<Arc<Gateway>, StoreError> {
    let store = open_store(&config).await?;
    Ok(Gateway::new(config, config_path.to_path_buf(), store))
}

/// Opens the configured store (sled, or PostgreSQL: connected, its migrations applied),
/// sealing tokens when `storage.encryption_key` is set.
pub async fn open_store(config: &Config) -> Result<Arc<dyn InstallationStore>, StoreError> {
    let ring = key_ring(config)?;
    match (&config.storage.backend, &config.storage.postgres) {
        (Backend::Postgres, Some(pg)) => Ok(Arc::new(
            PgStore::open(pg, ring, store::postgres::Timeouts::default()).await?,
        )),
        _ => Ok(Arc::new(SledStore::open_sealed(
            &config.storage.path,
            ring,
        )?)),
    }
}

/// The keys that seal tokens at rest, when `storage.encryption_key` is set.
fn key_ring(config: &Config) -> Result<Option<store::sealing::KeyRing>, StoreError> {
    let ring = match &config.storage.encryption_key {
        Some(k) => Some(
            store::sealing::KeyRing::new(k, &config.storage.previous_encryption_keys).map_err(
                |e| StoreError::Open {
                    path: match &config.storage.postgres {
                        Some(pg) => format!("PostgreSQL {}", pg.url),
                        None => config.storage.path.display().to_string(),
                    },
                    reason: format!("storage.encryption_key: {e}"),
                },
            )?,
        ),
        None => None,
    };
    Ok(ring)
}

/// Serves the public and admin listeners until `shutdown` resolves, then drains: `/readyz`
/// turns 503, no new connections are accepted, in-flight requests get
/// `server.shutdown_grace` to finish, and the store is flushed. First raises the process's
/// soft open-files limit to its hard limit, and serves at most as many connections per
/// listener as fit in it ([`open_files`]).
pub async fn run(
    gw: Arc<Gateway>,
    public: TcpListener,
    admin: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), RunError> {
    let live = gw.live();
    if let Some(t) = &live.config.server.tls {
        if gw.tls().is_none() {
            gw.set_tls(Some(tls::load_certified_key(t)?));
        }
    }
    let grace = live.config.server.shutdown_grace;
    let egress = match &live.config.egress {
        e if e.enabled => {
            let listener =
                TcpListener::bind(e.listen)
                    .await
                    .map_err(|source| RunError::EgressListen {
                        addr: e.listen,
                        source,
                    })?;
            if let Ok(addr) = listener.local_addr() {
                let _ = gw.egress_addr.set(addr);
                tracing::info!(egress = %addr, "Web API egress listening");
            }
            Some(listener)
        }
        _ => None,
    };
    let max_connections = open_files::fit_connections(live.config.server.max_connections);
    drop(live);
    // Replay protection covers its window across restarts: read back what was seen.
    let journal = gw.replay.start(gw.store.clone()).await?;
    let watcher = reload::spawn_watcher(&gw);
    let sweeper = tokio::spawn(store::states::sweep_loop(gw.store.clone()));
    let (stop_public, public_rx) = tokio::sync::watch::channel(false);
    let (stop_admin, admin_rx) = tokio::sync::watch::channel(false);
    let public_task = tokio::spawn(server::serve(
        gw.clone(),
        public,
        server::Listener::Public,
        public_rx,
        grace,
        max_connections,
    ));
    let admin_task = tokio::spawn(server::serve(
        gw.clone(),
        admin,
        server::Listener::Admin,
        admin_rx,
        grace,
        max_connections,
    ));
    // Socket Mode runs beside the listeners, idle while it is off, following reloads.
    let (stop_socket_mode, socket_mode_rx) = tokio::sync::watch::channel(false);
    let socket_mode_task = socket_mode::spawn(gw.clone(), socket_mode_rx);
    // Queued delivery's worker: idle unless events are queued.
    let (stop_delivery, delivery_rx) = tokio::sync::watch::channel(false);
    let delivery_task = delivery::spawn(gw.clone(), delivery_rx);
    let (stop_egress, egress_rx) = tokio::sync::watch::channel(false);
    let egress_task = egress.map(|listener| {
        tokio::spawn(server::serve(
            gw.clone(),
            listener,
            server::Listener::Egress,
            egress_rx,
            grace,
            max_connections,
        ))
    });
    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    gw.start_draining();
    // Socket Mode's connections close with the public listener (envelopes in flight
    // answered first), so that Slack sends new envelopes to another replica meanwhile.
    let _ = stop_socket_mode.send(true);
    let _ = stop_public.send(true);
    let _ = tokio::time::timeout(grace, socket_mode_task).await;
    let _ = public_task.await;
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    let _ = stop_egress.send(true);
    if let Some(t) = egress_task {
        let _ = t.await;
    }
    // Attempts in flight end (or their leases hand them to the next start).
    let _ = stop_delivery.send(true);
    let _ = delivery_task.await;
    if let Some(w) = watcher {
        w.abort();
    }
    gw.replay.flush().await;
    journal.abort();
    sweeper.abort();
    gw.store.flush().await?;
    tracing::info!("stopped");
    Ok(())
}
