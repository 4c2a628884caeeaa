//! The state every request sees: the live config (swapped whole on reload), the store, the
//! metrics and the pooled upstream client.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::oauth::rotation::Rotator;
use crate::proxy::headers::StripSet;
use crate::proxy::replay::ReplayGuard;
use crate::seal::Sealer;
use crate::signin::oidc::JwksCache;
use crate::slack::api::SlackApi;
use crate::store::InstallationStore;
use crate::tls::Tls;

/// How long an idle pooled upstream connection is kept.
pub const UPSTREAM_POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle upstream connections kept per host.
pub const UPSTREAM_POOL_MAX_IDLE_PER_HOST: usize = 1024;

/// The pooled HTTP/1 client that talks to the upstream app.
pub type UpstreamClient = Client<HttpConnector, Full<Bytes>>;

/// One validated config and what is derived from it once, not per request.
pub struct Live {
    pub config: Config,
    /// Folded names of every injected header, stripped from inbound requests.
    pub strip: StripSet,
    /// `upstream.url` without a trailing slash; the request path is appended.
    pub upstream_base: String,
    /// Seals the sign-in cookies, when `signin.cookie_secret` is set.
    pub signin_sealer: Option<Sealer>,
}

impl Live {
    pub fn new(config: Config) -> Self {
        let mut names: Vec<&http::HeaderName> = config.upstream.headers.all().to_vec();
        // The default names are always stripped too, so renaming a header never lets a
        // client smuggle the old name to an app that still reads it.
        let defaults: Vec<http::HeaderName> = [
            "x-slack-bot-token",
            "x-slack-bot-id",
            "x-slack-bot-user-id",
            "x-slack-team-id",
            "x-slack-enterprise-id",
            "x-slack-enterprise-install",
            "x-slack-user-token",
            "x-slack-user-id",
            "x-slack-user-email",
            "x-slack-user-name",
        ]
        .into_iter()
        .map(http::HeaderName::from_static)
        .collect();
        names.extend(defaults.iter());
        let strip = StripSet::new(names);
        let upstream_base = config
            .upstream
            .url
            .as_str()
            .trim_end_matches('/')
            .to_owned();
        let signin_sealer = config
            .signin
            .cookie_secret
            .as_ref()
            .map(|s| Sealer::new(s.expose().as_bytes()));
        Live {
            config,
            strip,
            upstream_base,
            signin_sealer,
        }
    }
}

/// Shared state of a running gateway.
pub struct Gateway {
    live: ArcSwap<Live>,
    pub store: Arc<dyn InstallationStore>,
    pub metrics: Metrics,
    pub upstream: UpstreamClient,
    /// Slack's Web API (install, refresh, OIDC).
    pub api: SlackApi,
    /// One token refresh per installation at a time.
    pub rotator: Rotator,
    /// Signatures seen in the last five minutes (replay protection).
    pub replay: ReplayGuard,
    /// Slack's OpenID signing keys.
    pub jwks: JwksCache,
    /// Set on SIGTERM: `/readyz` answers 503 so load balancers stop sending traffic.
    draining: AtomicBool,
    /// Where the config was read from (for reload).
    pub config_path: PathBuf,
    /// TLS of the public listener, when `server.tls` is set.
    tls: ArcSwapOption<Tls>,
    /// Fingerprint of the config and its files at the last load (see [`crate::reload`]).
    fingerprint: Mutex<Option<u64>>,
}

impl Gateway {
    pub fn new(
        config: Config,
        config_path: PathBuf,
        store: Arc<dyn InstallationStore>,
    ) -> Arc<Self> {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(config.upstream.timeout));
        let upstream = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(UPSTREAM_POOL_IDLE_TIMEOUT)
            .pool_max_idle_per_host(UPSTREAM_POOL_MAX_IDLE_PER_HOST)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new())
            .build(connector);
        let fingerprint = crate::reload::fingerprint(&config_path, &config.referenced_files);
        let metrics = Metrics::new();
        metrics.reload("success");
        Arc::new(Gateway {
            live: ArcSwap::from_pointee(Live::new(config)),
            store,
            metrics,
            upstream,
            api: SlackApi::new(),
            rotator: Rotator::default(),
            replay: ReplayGuard::default(),
            jwks: JwksCache::default(),
            draining: AtomicBool::new(false),
            fingerprint: Mutex::new(fingerprint),
            config_path,
            tls: ArcSwapOption::empty(),
        })
    }

    /// The config in force now. Hold the `Arc` for the whole request: a reload mid-request
    /// does not change what this request sees.
    pub fn live(&self) -> Arc<Live> {
        self.live.load_full()
    }

    /// Swaps in a new validated config; requests in flight keep the old one.
    pub fn swap_config(&self, config: Config) {
        self.live.store(Arc::new(Live::new(config)));
    }

    /// The public listener's TLS, if on.
    pub fn tls(&self) -> Option<Arc<Tls>> {
        self.tls.load_full()
    }

    /// Serves `key` on new TLS connections (`None`: plain HTTP).
    pub fn set_tls(&self, key: Option<CertifiedKey>) {
        match (key, self.tls.load_full()) {
            (Some(k), Some(tls)) => tls.swap(k),
            (Some(k), None) => self.tls.store(Some(Arc::new(Tls::new(k)))),
            (None, _) => self.tls.store(None),
        }
    }

    pub fn last_fingerprint(&self) -> Option<u64> {
        *self.fingerprint.lock().expect("fingerprint lock")
    }

    pub fn set_fingerprint(&self, f: Option<u64>) {
        *self.fingerprint.lock().expect("fingerprint lock") = f;
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}
