//! The state every request sees: the live config (swapped whole on reload), the store and the
//! metrics.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use arc_swap::{ArcSwap, ArcSwapOption};
use rustls::sign::CertifiedKey;

use crate::config::Config;
use crate::http::headers::StripSet;
use crate::metrics::Metrics;
use crate::pages::install_link::InstallLink;
use crate::seal::Sealer;
use crate::slack::api::SlackApi;
use crate::slack::oidc::JwksCache;
use crate::slack::ratelimit::Holds;
use crate::slack::signature::SigningKeys;
use crate::store::refresh_locks::RefreshLocks;
use crate::store::replay::ReplayGuard;
use crate::store::states::StateKeys;
use crate::store::InstallationStore;
use crate::tls::Tls;
use crate::upstream::UpstreamTarget;

/// One validated config and what is derived from it once, not per request.
pub struct Live {
    pub config: Config,
    /// Folded names of every injected header, stripped from inbound requests.
    pub strip: StripSet,
    /// Where `upstream.url` points: address, `Host` header and path prefix.
    pub upstream: UpstreamTarget,
    /// The signing secrets, keyed once.
    pub signing_keys: SigningKeys,
    /// Seals the sign-in cookies, when `signin.cookie_secret` is set.
    pub signin_sealer: Option<Sealer>,
    /// Issues and checks OAuth states (keyed by the app's client secret).
    pub states: StateKeys,
    /// The authorize URL and install page around a state, encoded once.
    pub install_link: InstallLink,
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
            // Queued delivery's own (see proxy::queued): never from a client.
            "x-gateway-delivery-attempt",
        ]
        .into_iter()
        .map(http::HeaderName::from_static)
        .collect();
        names.extend(defaults.iter());
        let strip = StripSet::new(names);
        // Validation only lets http:// URLs with a host through.
        let upstream =
            UpstreamTarget::new(&config.upstream.url).expect("validated upstream.url has a host");
        let signin_sealer = config
            .signin
            .cookie_secret
            .as_ref()
            .map(|s| Sealer::new(s.expose().as_bytes()));
        let signing_keys = SigningKeys::new(config.signing_secrets());
        let states = StateKeys::new(&config.slack.client_id, config.slack.client_secret.expose());
        let install_link = InstallLink::new(&config);
        Live {
            states,
            install_link,
            signing_keys,
            config,
            strip,
            upstream,
            signin_sealer,
        }
    }
}

/// Shared state of a running gateway.
pub struct Gateway {
    live: ArcSwap<Live>,
    pub store: Arc<dyn InstallationStore>,
    pub metrics: Metrics,
    /// Slack's Web API (install, refresh, OIDC).
    pub api: SlackApi,
    /// One token refresh per installation at a time.
    pub rotator: RefreshLocks,
    /// Methods the Web API egress holds back per workspace after Slack's 429s.
    pub egress_holds: Holds,
    /// Where the egress listener was bound, once it is (`egress.listen` may name port 0).
    pub egress_addr: std::sync::OnceLock<std::net::SocketAddr>,
    /// Signatures seen in the last five minutes (replay protection).
    pub replay: ReplayGuard,
    /// Request body bytes held in memory by every request together.
    pub bodies: BodyBudget,
    /// Slack's OpenID signing keys.
    pub jwks: JwksCache,
    /// Woken when an event is queued, so that it is delivered at once ([`crate::delivery`]).
    pub deliveries_due: tokio::sync::Notify,
    /// Bumped on every config swap: what runs beside the requests (Socket Mode) watches it.
    pub reloads: tokio::sync::watch::Sender<u64>,
    /// Set on SIGTERM: `/readyz` answers 503 so load balancers stop sending traffic.
    draining: AtomicBool,
    /// Where the config was read from (for reload).
    pub config_path: PathBuf,
    /// TLS of the public listener, when `server.tls` is set.
    tls: ArcSwapOption<Tls>,
    /// Fingerprint of the config and its files at the last load (see [`crate::reload`]).
    fingerprint: Mutex<Option<u64>>,
    /// The watcher's last failed reload (the files' fingerprint and the error), so that the
    /// same failure is not counted and logged again on every file event.
    last_failure: Mutex<Option<(Option<u64>, String)>>,
}

impl Gateway {
    pub fn new(
        config: Config,
        config_path: PathBuf,
        store: Arc<dyn InstallationStore>,
    ) -> Arc<Self> {
        let fingerprint = crate::config::fingerprint(&config_path, &config.referenced_files);
        let metrics = Metrics::new();
        metrics.config_loaded();
        Arc::new(Gateway {
            live: ArcSwap::from_pointee(Live::new(config)),
            store,
            metrics,
            api: SlackApi::new(),
            rotator: RefreshLocks::default(),
            egress_holds: Holds::default(),
            egress_addr: std::sync::OnceLock::new(),
            replay: ReplayGuard::default(),
            bodies: BodyBudget::default(),
            jwks: JwksCache::default(),
            draining: AtomicBool::new(false),
            reloads: tokio::sync::watch::Sender::new(0),
            deliveries_due: tokio::sync::Notify::new(),
            fingerprint: Mutex::new(fingerprint),
            last_failure: Mutex::new(None),
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
        self.reloads.send_modify(|n| *n += 1);
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

    /// Records a failed reload (the files' fingerprint and the error); false when it is the
    /// same failure as the last one.
    pub fn note_reload_failure(&self, fingerprint: Option<u64>, error: String) -> bool {
        let failure = Some((fingerprint, error));
        let mut last = self.last_failure.lock().expect("reload failure lock");
        let new = *last != failure;
        *last = failure;
        new
    }

    /// A reload succeeded: the next failure is new whatever it is.
    pub fn clear_reload_failure(&self) {
        *self.last_failure.lock().expect("reload failure lock") = None;
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }
}

/// The request body bytes all requests hold in memory together, bounded by
/// `server.max_body_bytes_in_flight`: many slow clients each declaring a large body must not
/// add up to more memory than the gateway has. Two atomic operations per request; the cap
/// is the live config's, so a reload changes it for the next request.
#[derive(Debug, Default)]
pub struct BodyBudget {
    used: AtomicUsize,
}

/// Bytes of the budget one request holds, given back when dropped.
#[derive(Debug)]
pub struct BodyPermit<'a> {
    budget: &'a BodyBudget,
    held: usize,
    cap: usize,
}

impl BodyBudget {
    /// A permit for `bytes` under `cap`; `None` when the bytes in flight would pass it.
    pub fn reserve(&self, bytes: usize, cap: usize) -> Option<BodyPermit<'_>> {
        let mut permit = BodyPermit {
            budget: self,
            held: 0,
            cap,
        };
        permit.grow_to(bytes).then_some(permit)
    }

    /// Bytes held now, by every request together.
    pub fn in_use(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }
}

impl BodyPermit<'_> {
    /// Holds `bytes` in all (a body that keeps arriving); false, holding what it held, when
    /// that would pass the cap.
    pub fn grow_to(&mut self, bytes: usize) -> bool {
        let Some(more) = bytes.checked_sub(self.held).filter(|m| *m > 0) else {
            return true;
        };
        let before = self.budget.used.fetch_add(more, Ordering::Relaxed);
        if before.saturating_add(more) > self.cap {
            self.budget.used.fetch_sub(more, Ordering::Relaxed);
            return false;
        }
        self.held = bytes;
        true
    }
}

impl Drop for BodyPermit<'_> {
    fn drop(&mut self) {
        if self.held > 0 {
            self.budget.used.fetch_sub(self.held, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::BodyBudget;

    #[test]
    fn body_permits_share_one_cap_and_give_it_back() {
        let budget = BodyBudget::default();
        let a = budget.reserve(600, 1000).expect("fits");
        assert!(budget.reserve(500, 1000).is_none(), "would pass the cap");
        let mut b = budget.reserve(300, 1000).expect("fits beside a");
        assert!(!b.grow_to(500), "a growing body is held to the cap");
        assert_eq!(budget.in_use(), 900, "a refused growth holds what it held");
        drop(a);
        assert!(b.grow_to(1000));
        drop(b);
        assert_eq!(budget.in_use(), 0);
        assert!(
            budget.reserve(0, 0).is_some(),
            "an empty body needs nothing"
        );
    }
}
