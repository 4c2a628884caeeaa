//! # slack-gateway
//!
//! A reverse proxy that owns the Slack-specific half of a Slack app. A tour of the flows:
//!
//! - **Request** ([`proxy`]): Slack POSTs to one of `upstream.slack_paths`. The body is read
//!   (bounded), its signature checked ([`slack::signature`]), the payload parsed and its
//!   workspace identified ([`slack::payload`]), the installation looked up ([`store`]), the
//!   headers cleaned and the bot token injected ([`proxy::headers`]), and the request forwarded
//!   byte for byte to the upstream, whose answer goes back to Slack as it is. Plain requests
//!   take the fast lane ([`proxy::lane`]); hyper serves everything else.
//! - **Install** ([`oauth`]): "Add to Slack" issues a cookie-bound state, Slack calls back,
//!   `oauth.v2.access` and `auth.test` are called ([`slack::api`]) and the installation is
//!   saved durably before the success page. Rotating tokens are refreshed before use, one
//!   refresh per installation at a time ([`oauth::rotation`]).
//! - **Sign in** ([`signin`]): Sign in with Slack (OIDC) in front of the upstream's pages; the
//!   id_token is verified against Slack's keys and a sealed session cookie is set.
//! - **Config** ([`config`]): `gateway.toml` is parsed into a raw mirror, then validated into a
//!   [`config::Config`]; [`reload`] swaps a new one in whole, never half.
//! - **State** ([`gateway`]): the live config behind an `ArcSwap`, the store, the metrics and
//!   the upstream client, shared by every connection.
//! - **Listeners** ([`server`], [`admin`]): the public listener routes Slack and browser
//!   requests; the admin listener serves health, readiness, metrics and the admin API.
//!
//! [`run`] takes listeners that are already bound and a shutdown future, so tests bind port 0
//! and stop the gateway when they are done.

#![forbid(unsafe_code)]

pub mod admin;
pub mod config;
pub mod gateway;
pub mod http;
pub mod manifest;
pub mod metrics;
pub mod oauth;
pub mod proxy;
pub mod reload;
pub mod seal;
pub mod secret;
pub mod server;
pub mod signin;
pub mod slack;
pub mod store;
pub mod tls;
pub mod transfer;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::Config;
use crate::gateway::Gateway;
use crate::store::{sled::SledStore, InstallationStore, StoreError};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("{0}")]
    Store(#[from] StoreError),
    #[error("server.tls: {0}")]
    Tls(#[from] tls::TlsError),
}

/// Opens the configured store and builds the gateway's shared state.
pub fn open(config: Config, config_path: &Path) -> Result<Arc<Gateway>, StoreError> {
    let store: Arc<dyn InstallationStore> = Arc::new(open_store(&config)?);
    Ok(Gateway::new(config, config_path.to_path_buf(), store))
}

/// Opens the configured sled store, sealing tokens when `storage.encryption_key` is set.
pub fn open_store(config: &Config) -> Result<SledStore, StoreError> {
    let ring = match &config.storage.encryption_key {
        Some(k) => Some(
            store::sealing::KeyRing::new(k, &config.storage.previous_encryption_keys).map_err(
                |e| StoreError::Open {
                    path: config.storage.path.display().to_string(),
                    source: format!("storage.encryption_key: {e}").into(),
                },
            )?,
        ),
        None => None,
    };
    SledStore::open_sealed(&config.storage.path, ring)
}

/// Serves the public and admin listeners until `shutdown` resolves, then drains: `/readyz`
/// turns 503, no new connections are accepted, in-flight requests get
/// `server.shutdown_grace` to finish, and the store is flushed.
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
    drop(live);
    let watcher = reload::spawn_watcher(&gw);
    let sweeper = tokio::spawn(oauth::state::sweep_loop(gw.clone()));
    let (stop_public, public_rx) = tokio::sync::watch::channel(false);
    let (stop_admin, admin_rx) = tokio::sync::watch::channel(false);
    let public_task = tokio::spawn(server::serve(
        gw.clone(),
        public,
        server::Listener::Public,
        public_rx,
        grace,
    ));
    let admin_task = tokio::spawn(server::serve(
        gw.clone(),
        admin,
        server::Listener::Admin,
        admin_rx,
        grace,
    ));
    shutdown.await;
    tracing::info!("shutting down: draining in-flight requests");
    gw.start_draining();
    let _ = stop_public.send(true);
    let _ = public_task.await;
    let _ = stop_admin.send(true);
    let _ = admin_task.await;
    if let Some(w) = watcher {
        w.abort();
    }
    sweeper.abort();
    gw.store.flush().await?;
    tracing::info!("stopped");
    Ok(())
}
