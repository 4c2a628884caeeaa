//! Queued delivery's tests (`tests/delivery*.rs`): [`QueueUpstream`], a recording upstream app
//! whose answers a test scripts (status, delay, down and up again on the same port) and that
//! keeps each request's arrival time and the most requests it held at once; events with
//! chosen ids; the `/admin/deliveries` client; polling with deadlines; and the real binary in
//! queued mode, on sled or on a PostgreSQL schema shared by replicas.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::TcpListener;

use super::binary::{write_config_sections, Running, Sections};
use super::postgres::Schema;
use super::{client, Answer};

/// The header a queued delivery carries its attempt number in.
pub const ATTEMPT: &str = "x-gateway-delivery-attempt";

/// `[delivery]` in queued mode with fast retries; `more` (whole `key = value` lines) is added
/// inside the section, replacing the defaults it names.
pub fn queued(more: &str) -> String {
    let defaults = [
        "retry_backoff = \"100ms\"",
        "retry_backoff_max = \"400ms\"",
        "max_attempts = 20",
    ];
    let named = |line: &str| line.split('=').next().unwrap_or_default().trim().to_owned();
    let given: Vec<String> = more.lines().map(named).collect();
    let mut out = String::from("[delivery]\nmode = \"queued\"\n");
    for d in defaults {
        if !given.contains(&named(d)) {
            out.push_str(d);
            out.push('\n');
        }
    }
    out.push_str(more);
    out
}

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// A fresh event id, unique across processes and runs.
pub fn fresh_event_id() -> String {
    format!(
        "Ev{}{}",
        super::unique_id(),
        super::fake_slack::rand_suffix()
    )
}

/// An Events API callback of app `app` from workspace `team` with `event_id`, carrying
/// `event` (a JSON object).
pub fn callback(team: &str, app: &str, event_id: &str, event: &str) -> String {
    format!(
        r#"{{"token":"legacy-verification-token","team_id":"{team}","api_app_id":"{app}","type":"event_callback","event_id":"{event_id}","event_time":1700000000,"event":{event},"authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"U{team}BOT","is_bot":true,"is_enterprise_install":false}}]}}"#
    )
}

/// An `app_mention` from `team` (app `A111`) with a fresh event id: `(event_id, body)`.
pub fn mention(team: &str) -> (String, String) {
    let id = fresh_event_id();
    let body = callback(
        team,
        "A111",
        &id,
        r#"{"type":"app_mention","user":"U1","text":"hi","ts":"1.2","channel":"C1"}"#,
    );
    (id, body)
}

/// The `event_id` of a JSON body, if it has one.
pub fn event_id_of(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<Value>(body)
        .ok()?
        .get("event_id")?
        .as_str()
        .map(str::to_owned)
}

// ---------------------------------------------------------------------------------------
// The upstream
// ---------------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub at: Instant,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Delivered {
    /// The first value of `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every value of every header whose name folds (lowercase, `_` as `-`) to `folded`.
    pub fn folding_to(&self, folded: &str) -> Vec<String> {
        self.headers
            .iter()
            .filter(|(k, _)| k.as_str().replace('_', "-") == folded)
            .map(|(_, v)| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect()
    }

    /// `X-Gateway-Delivery-Attempt`, which must come once at most, under any spelling.
    pub fn attempt(&self) -> Option<u32> {
        let all = self.folding_to(ATTEMPT);
        assert!(
            all.len() <= 1,
            "{ATTEMPT} arrived {} times: {all:?}",
            all.len()
        );
        all.first()
            .map(|v| v.parse().unwrap_or_else(|_| panic!("{ATTEMPT}: {v:?}")))
    }

    pub fn event_id(&self) -> Option<String> {
        event_id_of(&self.body)
    }

    /// The bot token injected (`None`: none).
    pub fn token(&self) -> Option<&str> {
        self.header("x-slack-bot-token")
    }

    /// Signed as Slack signs, with `secret`, at a timestamp within a minute of now.
    pub fn assert_signed_now(&self, secret: &str) {
        let ts: u64 = self
            .header("x-slack-request-timestamp")
            .expect("X-Slack-Request-Timestamp")
            .parse()
            .expect("a Unix timestamp");
        let now = super::now();
        assert!(
            now.abs_diff(ts) <= 60,
            "X-Slack-Request-Timestamp {ts} is not fresh (now {now})"
        );
        assert_eq!(
            self.header("x-slack-signature"),
            Some(slack_gateway::slack::signature::sign(secret, ts, &self.body).as_str()),
            "X-Slack-Signature verifies with the signing secret over the exact body"
        );
    }
}

/// What one request gets.
#[derive(Debug, Clone, Copy)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
        }
    }
}

struct UpState {
    requests: Vec<Delivered>,
    default: Reply,
    /// Replies for the next requests, in order, before `default` again.
    script: VecDeque<Reply>,
    in_flight: usize,
    max_in_flight: usize,
}

/// The accept loop and every connection it serves, so that going down refuses and drops all.
struct Server {
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Server {
    fn stop(self) {
        self.accept.abort();
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }
}

/// A recording upstream app on loopback (see the module doc). Answers 200 `ok` by default.
pub struct QueueUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<UpState>>,
    server: Mutex<Option<Server>>,
}

/// Counts a request in flight until dropped (answered, or abandoned by the gateway).
struct InFlight(Arc<Mutex<UpState>>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.lock().unwrap().in_flight -= 1;
    }
}

impl QueueUpstream {
    pub async fn start() -> QueueUpstream {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    /// Listens on `addr` (a port of a former listener may take a moment to be free).
    pub async fn start_on(addr: SocketAddr) -> QueueUpstream {
        let listener = bind(addr).await;
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(UpState {
            requests: Vec::new(),
            default: Reply::status(200),
            script: VecDeque::new(),
            in_flight: 0,
            max_in_flight: 0,
        }));
        let up = QueueUpstream {
            addr,
            state,
            server: Mutex::new(None),
        };
        up.serve(listener);
        up
    }

    fn serve(&self, listener: TcpListener) {
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (state, tracked) = (self.state.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let state = state.clone();
                let task = tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(state, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
                tracked.lock().unwrap().push(task.abort_handle());
            }
        });
        *self.server.lock().unwrap() = Some(Server { accept, conns });
    }

    /// `http://{addr}`: the value of `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What every request gets from now on (after any script).
    pub fn set_status(&self, status: u16) {
        self.state.lock().unwrap().default = Reply::status(status);
    }

    pub fn set_default(&self, reply: Reply) {
        self.state.lock().unwrap().default = reply;
    }

    /// The next requests get `replies`, one each, in order.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        self.state.lock().unwrap().script.extend(replies);
    }

    /// Down: the port refuses connections, and open ones are dropped.
    pub fn down(&self) {
        if let Some(s) = self.server.lock().unwrap().take() {
            s.stop();
        }
    }

    /// Up again on the same port.
    pub async fn up(&self) {
        let listener = bind(self.addr).await;
        self.serve(listener);
    }

    pub fn requests(&self) -> Vec<Delivered> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// The requests carrying `event_id`, in order.
    pub fn of_event(&self, event_id: &str) -> Vec<Delivered> {
        self.requests()
            .into_iter()
            .filter(|r| r.event_id().as_deref() == Some(event_id))
            .collect()
    }

    /// The most requests held at once since the start (or the last reset).
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    pub fn reset_max_in_flight(&self) {
        let mut s = self.state.lock().unwrap();
        s.max_in_flight = s.in_flight;
    }

    /// Polls until `event_id` got a 2xx-worthy attempt, i.e. `n` requests carry it.
    pub async fn wait_event(&self, event_id: &str, n: usize, limit: Duration) -> Vec<Delivered> {
        eventually(&format!("{n} request(s) of {event_id}"), limit, || async {
            self.of_event(event_id).len() >= n
        })
        .await;
        self.of_event(event_id)
    }

    /// Polls until `n` requests arrived.
    pub async fn wait_count(&self, n: usize, limit: Duration) -> Vec<Delivered> {
        eventually(&format!("{n} request(s) upstream"), limit, || async {
            self.count() >= n
        })
        .await;
        self.requests()
    }
}

impl Drop for QueueUpstream {
    fn drop(&mut self) {
        self.down();
    }
}

async fn bind(addr: SocketAddr) -> TcpListener {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match TcpListener::bind(addr).await {
            Ok(l) => return l,
            Err(e) => {
                assert!(Instant::now() < deadline, "cannot listen on {addr}: {e}");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

async fn answer(state: Arc<Mutex<UpState>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push(Delivered {
            at,
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts.headers,
            body,
        });
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.script.pop_front().unwrap_or(s.default)
    };
    let _held = InFlight(state);
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut r = Response::new(Full::new(Bytes::from_static(b"upstream says ok")));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    r.headers_mut()
        .insert("content-type", http::HeaderValue::from_static("text/plain"));
    r
}

// ---------------------------------------------------------------------------------------
// Waiting
// ---------------------------------------------------------------------------------------

/// Polls `cond` every 20 ms until it holds; fails naming `what` after `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(Instant::now() < deadline, "not within {limit:?}: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The admin API
// ---------------------------------------------------------------------------------------

/// A request to the admin listener at `base` (`http://host:port`).
pub async fn admin(method: &str, base: &str, path: &str, bearer: Option<&str>) -> Answer {
    let mut req = client().request(method.parse().unwrap(), format!("{base}{path}"));
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    Answer::from(req.send().await.unwrap()).await
}

/// `GET /admin/deliveries{query}` on the admin listener at `base`: the `deliveries` array,
/// each entry checked to have exactly the SPEC's fields.
pub async fn deliveries(base: &str, query: &str) -> Vec<Value> {
    let a = admin("GET", base, &format!("/admin/deliveries{query}"), None).await;
    assert_eq!(a.status, 200, "GET /admin/deliveries{query}: {}", a.text());
    let v: Value =
        serde_json::from_slice(&a.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", a.text()));
    let list = v["deliveries"]
        .as_array()
        .unwrap_or_else(|| panic!("no deliveries array: {v}"))
        .clone();
    for d in &list {
        let mut keys: Vec<&str> = d.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort_unstable();
        assert_eq!(
            keys,
            [
                "api_app_id",
                "attempts",
                "event_id",
                "id",
                "last_error",
                "next_attempt_at",
                "received_at",
                "state",
                "team_id"
            ],
            "the fields of a delivery: {d}"
        );
    }
    list
}

/// The listed delivery of `event_id`, if any.
pub async fn listed(base: &str, event_id: &str) -> Option<Value> {
    deliveries(base, "")
        .await
        .into_iter()
        .find(|d| d["event_id"] == event_id)
}

/// The value of one metric series on the admin listener at `base` (0 when absent).
pub async fn metric(base: &str, series: &str) -> f64 {
    let text = super::get(&format!("{base}/metrics")).await.text();
    super::metric(&text, series).unwrap_or(0.0)
}

/// Polls until `series` on `base` equals `want`.
pub async fn wait_metric(base: &str, series: &str, want: f64, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        let got = metric(base, series).await;
        if got == want {
            return;
        }
        if Instant::now() >= deadline {
            let text = super::get(&format!("{base}/metrics")).await.text();
            let delivery: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with("slack_gateway_delivery"))
                .collect();
            panic!(
                "{series} is {got}, want {want} after {limit:?}; delivery series:\n{}",
                delivery.join("\n")
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The real binary
// ---------------------------------------------------------------------------------------

/// The binary's config lines for the Slack app (no fake Slack needed: events only).
pub const SLACK_LINES: &str = "client_id = \"111.222\"\nclient_secret = \"cli-client-secret\"\n";

/// One gateway process in queued mode, in a folder of its own; restartable on its config.
pub struct Binary {
    pub running: Running,
    pub config: PathBuf,
    pub public: u16,
    pub admin: u16,
    dir: tempfile::TempDir,
}

impl Binary {
    /// Writes a config (`schema`'s storage, else sled in the folder; `upstream.timeout`;
    /// `extra` sections, e.g. [`queued`]) and starts the binary, waiting until it is ready.
    pub async fn start(
        schema: Option<&Schema>,
        upstream: SocketAddr,
        timeout: &str,
        extra: &str,
    ) -> Binary {
        Self::start_on(schema.map(Schema::toml), upstream, timeout, "", extra).await
    }

    /// [`Self::start`] with a whole `[storage]` section (sled in the folder when `None`) and
    /// more `[server]` lines.
    pub async fn start_on(
        storage: Option<String>,
        upstream: SocketAddr,
        timeout: &str,
        server_lines: &str,
        extra: &str,
    ) -> Binary {
        let dir = tempfile::tempdir().unwrap();
        let storage = storage.unwrap_or_else(|| {
            format!(
                "[storage]\npath = \"{}\"\n",
                dir.path().join("data").display()
            )
        });
        let (config, public, admin) = write_config_sections(
            dir.path(),
            upstream,
            &Sections {
                scopes: "\"chat:write\"",
                slack_lines: SLACK_LINES,
                oauth_lines: "",
                upstream_timeout: timeout,
                storage: &storage,
                extra,
            },
        );
        if !server_lines.is_empty() {
            let text = std::fs::read_to_string(&config).unwrap();
            let text = text.replacen("[server]\n", &format!("[server]\n{server_lines}"), 1);
            std::fs::write(&config, text).unwrap();
        }
        let running = Running::start(&config, dir.path());
        running.wait_ready(admin).await;
        Binary {
            running,
            config,
            public,
            admin,
            dir,
        }
    }

    /// `http://127.0.0.1:{admin}`.
    pub fn admin_base(&self) -> String {
        format!("http://127.0.0.1:{}", self.admin)
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.running.child.kill().unwrap();
        self.running.child.wait().unwrap();
    }

    /// Starts the binary again on the same config and folder, and waits until it is ready.
    pub async fn restart(&mut self) {
        self.running = Running::start(&self.config, self.dir.path());
        self.running.wait_ready(self.admin).await;
    }

    /// `slack-gateway ARGS --config <config>`, run to its end.
    pub fn cli(&self, args: &[&str]) -> std::process::Output {
        super::replicas::cli(&self.config, args)
    }

    /// Sends `body`, signed now, to the events path: the status and body of the answer.
    pub async fn send(&self, body: &str) -> (u16, String) {
        super::binary::send_exact(self.public, slack_gateway::http::unix_now(), body)
            .await
            .unwrap()
    }
}

// ---------------------------------------------------------------------------------------
// In process
// ---------------------------------------------------------------------------------------

/// Keeps `gw`'s store alive for the rest of the process. sled 0.34's concurrent
/// `flush_async` calls can deadlock (spacejam/sled#1308); the store's drop flushes too, so
/// when a test fails after that happened, the runtime's teardown (which drops the gateway
/// with the store) would hang instead of reporting the failure. Leaked, it never drops.
pub fn keep_store(gw: &super::TestGateway) {
    std::mem::forget(gw.store.clone());
}
