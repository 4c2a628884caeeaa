//! Prometheus metrics, served as text on the admin listener's `/metrics`.
//!
//! Label values are bounded by construction: routes are a fixed set of names, statuses are
//! numbers, reasons and results are `&'static str`. Nothing user-controlled (paths, team ids)
//! and nothing secret ever becomes a label.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::InstallationStore;

/// Which part of the gateway answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Route {
    Slack,
    Install,
    OAuthRedirect,
    Signin,
    Protected,
    NotFound,
}

impl Route {
    pub fn as_str(self) -> &'static str {
        match self {
            Route::Slack => "slack",
            Route::Install => "install",
            Route::OAuthRedirect => "oauth_redirect",
            Route::Signin => "signin",
            Route::Protected => "protected",
            Route::NotFound => "not_found",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    route: &'static str,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RouteLabel {
    route: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EgressCallLabels {
    method: String,
    status: u16,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct EnvelopeLabels {
    r#type: &'static str,
    result: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct MethodLabel {
    method: String,
}

/// Distinct Web API method names given their own label at most (Slack has about 300);
/// past it, `other`. Callers choose the names, so they are bounded.
const EGRESS_METHODS_MAX: usize = 512;

/// Every metric the gateway keeps.
pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: Family<RouteLabel, Histogram, fn() -> Histogram>,
    signature_failures: Family<ReasonLabel, Counter>,
    installs: Family<ResultLabel, Counter>,
    token_refreshes: Family<ResultLabel, Counter>,
    reloads: Family<ResultLabel, Counter>,
    last_reload_success: Gauge<f64, std::sync::atomic::AtomicU64>,
    upstream_errors: Family<ReasonLabel, Counter>,
    installations: Gauge,
    egress_calls: Family<EgressCallLabels, Counter>,
    egress_holds: Family<MethodLabel, Counter>,
    egress_held: Counter<f64, std::sync::atomic::AtomicU64>,
    egress_methods: std::sync::Mutex<std::collections::HashSet<String>>,
    socket_connections: Gauge,
    socket_envelopes: Family<EnvelopeLabels, Counter>,
    socket_reconnects: Family<ReasonLabel, Counter>,
    delivery_accepted: Family<ResultLabel, Counter>,
    delivery_attempts: Family<ResultLabel, Counter>,
    delivery_depth: Gauge,
    delivery_dead: Gauge,
    delivery_oldest_age: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Handles on the series every forwarded Slack request updates (metrics share their
    /// value with their clones): no label hashing or map lookup on the hot path.
    slack_ok: OnceLock<Counter>,
    slack_latency: OnceLock<Histogram>,
}

fn latency_histogram() -> Histogram {
    // 100 µs … ~3.3 s: the gateway's own overhead at the low end, Slack's 3 s budget at the top.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.0001, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("slack_gateway");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency = Family::<RouteLabel, Histogram, fn() -> Histogram>::new_with_constructor(
            latency_histogram,
        );
        let signature_failures = Family::<ReasonLabel, Counter>::default();
        let installs = Family::<ResultLabel, Counter>::default();
        let token_refreshes = Family::<ResultLabel, Counter>::default();
        let reloads = Family::<ResultLabel, Counter>::default();
        let last_reload_success = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        let upstream_errors = Family::<ReasonLabel, Counter>::default();
        let installations = Gauge::default();
        let egress_calls = Family::<EgressCallLabels, Counter>::default();
        let egress_holds = Family::<MethodLabel, Counter>::default();
        let egress_held = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        let socket_connections = Gauge::default();
        let socket_envelopes = Family::<EnvelopeLabels, Counter>::default();
        let socket_reconnects = Family::<ReasonLabel, Counter>::default();
        let delivery_accepted = Family::<ResultLabel, Counter>::default();
        let delivery_attempts = Family::<ResultLabel, Counter>::default();
        let delivery_depth = Gauge::default();
        let delivery_dead = Gauge::default();
        let delivery_oldest_age = Gauge::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register(
            "delivery_accepted",
            "Event callbacks accepted for queued delivery: queued, or duplicate (not queued again)",
            delivery_accepted.clone(),
        );
        registry.register(
            "delivery_attempts",
            "Queued delivery attempts, by result: delivered, failed (retried later), dead",
            delivery_attempts.clone(),
        );
        registry.register(
            "delivery_queue_depth",
            "Queued events waiting for the upstream (dead letters aside)",
            delivery_depth.clone(),
        );
        registry.register(
            "delivery_dead_letters",
            "Queued events kept after their last failed attempt",
            delivery_dead.clone(),
        );
        registry.register(
            "delivery_oldest_pending_age_seconds",
            "Age of the oldest queued event still waiting",
            delivery_oldest_age.clone(),
        );
        registry.register(
            "socket_mode_connections",
            "Socket Mode WebSockets open and serving (after Slack's hello)",
            socket_connections.clone(),
        );
        registry.register(
            "socket_mode_envelopes",
            "Socket Mode envelopes, by type and result",
            socket_envelopes.clone(),
        );
        registry.register(
            "socket_mode_reconnects",
            "Socket Mode connections opened again or replaced, by reason",
            socket_reconnects.clone(),
        );
        registry.register(
            "egress_calls",
            "Web API calls through the egress, by method and status",
            egress_calls.clone(),
        );
        registry.register(
            "egress_holds",
            "Egress calls held back by a rate limit, by method",
            egress_holds.clone(),
        );
        registry.register(
            "egress_held_seconds",
            "Time egress calls spent held back by rate limits",
            egress_held.clone(),
        );
        registry.register(
            "requests",
            "Requests answered, by route and status",
            requests.clone(),
        );
        registry.register(
            "request_duration_seconds",
            "Time from request to response headers, by route",
            latency.clone(),
        );
        registry.register(
            "signature_failures",
            "Slack requests refused for their signature, by reason",
            signature_failures.clone(),
        );
        registry.register(
            "installs",
            "OAuth install callbacks, by result",
            installs.clone(),
        );
        registry.register(
            "token_refreshes",
            "Token rotation refreshes, by result",
            token_refreshes.clone(),
        );
        registry.register(
            "config_reloads",
            "Configuration reloads, by result",
            reloads.clone(),
        );
        registry.register(
            "config_last_reload_success_timestamp_seconds",
            "Unix time of the last successful config load",
            last_reload_success.clone(),
        );
        registry.register(
            "upstream_errors",
            "Forwarding failures, by reason",
            upstream_errors.clone(),
        );
        registry.register(
            "installations",
            "Workspaces and orgs with a bot installation in the store",
            installations.clone(),
        );
        // Make the usual series visible at zero from the start.
        for reason in crate::slack::signature::SignatureError::ALL {
            let _ = signature_failures.get_or_create(&ReasonLabel {
                reason: reason.as_str(),
            });
        }
        Metrics {
            registry,
            requests,
            latency,
            signature_failures,
            installs,
            token_refreshes,
            reloads,
            last_reload_success,
            upstream_errors,
            installations,
            egress_calls,
            egress_holds,
            egress_held,
            egress_methods: Default::default(),
            socket_connections,
            socket_envelopes,
            socket_reconnects,
            delivery_accepted,
            delivery_attempts,
            delivery_depth,
            delivery_dead,
            delivery_oldest_age,
            slack_ok: OnceLock::new(),
            slack_latency: OnceLock::new(),
        }
    }

    pub fn observe_request(&self, route: Route, status: u16, elapsed: Duration) {
        let label = route.as_str();
        let latency = || self.latency.get_or_create(&RouteLabel { route: label });
        let requests = || {
            self.requests.get_or_create(&RequestLabels {
                route: label,
                status,
            })
        };
        // The Slack route's series through kept handles (a metric shares its value with its
        // clones): no label hashing or map lookup for every forwarded request.
        let seconds = elapsed.as_secs_f64();
        match route {
            Route::Slack => self
                .slack_latency
                .get_or_init(|| latency().clone())
                .observe(seconds),
            _ => latency().observe(seconds),
        }
        match (route, status) {
            (Route::Slack, 200) => self.slack_ok.get_or_init(|| requests().clone()).inc(),
            _ => requests().inc(),
        };
    }

    pub fn signature_failure(&self, reason: &'static str) {
        self.signature_failures
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    pub fn install(&self, result: &'static str) {
        self.installs.get_or_create(&ResultLabel { result }).inc();
    }

    pub fn token_refresh(&self, result: &'static str) {
        self.token_refreshes
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The config the gateway started with: not a reload, but the time its config took
    /// effect; both reload series start at zero.
    pub fn config_loaded(&self) {
        for result in ["success", "failure"] {
            let _ = self.reloads.get_or_create(&ResultLabel { result });
        }
        self.config_took_effect();
    }

    pub fn reload(&self, result: &'static str) {
        self.reloads.get_or_create(&ResultLabel { result }).inc();
        if result == "success" {
            self.config_took_effect();
        }
    }

    fn config_took_effect(&self) {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        self.last_reload_success.set(now.as_secs_f64());
    }

    /// The label of a Web API method name: itself, until too many distinct ones were seen.
    fn method_label(&self, method: &str) -> String {
        let mut seen = self.egress_methods.lock().expect("egress methods");
        if seen.contains(method) {
            return method.to_owned();
        }
        if seen.len() < EGRESS_METHODS_MAX {
            seen.insert(method.to_owned());
            return method.to_owned();
        }
        "other".to_owned()
    }

    /// One egress call answered with `status` (Slack's, or the gateway's own refusal).
    pub fn egress_call(&self, method: &str, status: u16) {
        let method = self.method_label(method);
        self.egress_calls
            .get_or_create(&EgressCallLabels { method, status })
            .inc();
    }

    /// An egress call held back for `held` by a rate limit.
    pub fn egress_hold(&self, method: &str, held: Duration) {
        let method = self.method_label(method);
        self.egress_holds
            .get_or_create(&MethodLabel { method })
            .inc();
        self.egress_held.inc_by(held.as_secs_f64());
    }

    /// A Socket Mode connection started (`1`) or stopped (`-1`) serving.
    pub fn socket_connection(&self, delta: i64) {
        self.socket_connections.inc_by(delta);
    }

    /// One Socket Mode envelope of `kind`, and what became of it.
    pub fn socket_envelope(&self, kind: &'static str, result: &'static str) {
        self.socket_envelopes
            .get_or_create(&EnvelopeLabels {
                r#type: kind,
                result,
            })
            .inc();
    }

    /// A Socket Mode connection opened again or replaced, and why.
    pub fn socket_reconnect(&self, reason: &'static str) {
        self.socket_reconnects
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// An event callback accepted in queued mode: `queued` or `duplicate`.
    pub fn delivery_accepted(&self, result: &'static str) {
        self.delivery_accepted
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// One delivery attempt: `delivered`, `failed` (to be retried) or `dead`.
    pub fn delivery_attempt(&self, result: &'static str) {
        self.delivery_attempts
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// The queue as last counted.
    pub fn delivery_queue(&self, pending: u64, dead: u64, oldest_age: Duration) {
        self.delivery_depth
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
        self.delivery_dead
            .set(i64::try_from(dead).unwrap_or(i64::MAX));
        self.delivery_oldest_age.set(oldest_age.as_secs_f64());
    }

    pub fn upstream_error(&self, reason: &'static str) {
        self.upstream_errors
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The Prometheus text exposition, with gauges read fresh from the store.
    pub fn render(&self, store: &Arc<dyn InstallationStore>) -> String {
        self.installations.set(store.bot_count() as i64);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    #[test]
    fn requests_are_counted_by_route_and_status_through_the_hot_path_too() {
        let m = Metrics::new();
        let ms = Duration::from_millis(1);
        m.observe_request(Route::Slack, 200, ms);
        m.observe_request(Route::Slack, 200, ms);
        m.observe_request(Route::Slack, 401, ms);
        m.observe_request(Route::Install, 200, ms);
        let store: Arc<dyn InstallationStore> = Arc::new(MemoryStore::new());
        let text = m.render(&store);
        for line in [
            r#"slack_gateway_requests_total{route="slack",status="200"} 2"#,
            r#"slack_gateway_requests_total{route="slack",status="401"} 1"#,
            r#"slack_gateway_requests_total{route="install",status="200"} 1"#,
            r#"slack_gateway_request_duration_seconds_count{route="slack"} 3"#,
            r#"slack_gateway_request_duration_seconds_count{route="install"} 1"#,
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "{line} missing from\n{text}"
            );
        }
    }
}
