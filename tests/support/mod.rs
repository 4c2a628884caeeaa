//! Test support shared by the integration tests: fakes and harnesses.
//! Other support modules are declared here.
//!
//! The generic helpers live in this file:
//! - [`TestGateway`]: the real gateway on two port-0 loopback listeners, configured from a base
//!   `gateway.toml` merged with a test's snippet, over a fresh sled folder that the test may
//!   seed and inspect; stopped by [`TestGateway::shutdown`] (or when dropped);
//! - [`FakeUpstream`]: a hyper server that records every request it receives (method, path and
//!   query, headers, raw body) and answers with a configurable status, headers, body and delay;
//! - [`SlackPost`]: a request as Slack would send it, signed by default, with every part of
//!   the signature open to tampering; [`raw_http`] for what `reqwest` will not send;
//! - [`admin_get`] and friends: a tiny client for the admin listener;
//! - [`raw_upstream_answering`]: a bare-TCP upstream answering scripted bytes, for response
//!   shapes a well-behaved server never sends; [`closed_within`] for raw client sockets.

#![allow(dead_code)]

pub mod binary;
pub mod browser;
pub mod delivery;
pub mod fake_oidc;
pub mod fake_slack;
pub mod fake_socket;
pub mod fake_web_api;
pub mod forwarding;
pub mod oauth_harness;
pub mod pg_binary;
pub mod postgres;
pub mod python;
pub mod replicas;
pub mod tcp_relay;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use slack_gateway::config::Config;
use slack_gateway::gateway::Gateway;
use slack_gateway::store::contract::workspace_install;
use slack_gateway::store::sled::SledStore;
use slack_gateway::store::{Installation, InstallationStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The Slack app's client id in every test config (the store is keyed by it).
pub const CLIENT_ID: &str = "111.222";
/// The signing secret of every test config.
pub const SIGNING_SECRET: &str = "forwarding-test-signing-secret";
/// The path Slack posts to in the test configs (the default `upstream.slack_paths`).
pub const EVENTS_PATH: &str = "/slack/events";
/// How long a test waits for a listener to answer before giving up.
const READY_LIMIT: Duration = Duration::from_secs(10);
/// Pause between readiness polls.
const READY_POLL: Duration = Duration::from_millis(10);

/// A fresh id for this process: makes every signed body unique, so replay protection never
/// mistakes two test requests for one.
pub fn unique_id() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    format!("{:08}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// A minimal Events API `event_callback` for `team`, unique per call.
pub fn event(team: &str) -> String {
    format!(
        r#"{{"team_id":"{team}","api_app_id":"A111","type":"event_callback","event_id":"Ev{id}","event":{{"type":"app_mention"}}}}"#,
        id = unique_id()
    )
}

/// Seconds since the Unix epoch.
pub fn now() -> u64 {
    slack_gateway::http::unix_now()
}

// ---------------------------------------------------------------------------------------
// Gateway
// ---------------------------------------------------------------------------------------

/// How to start a [`TestGateway`].
pub struct GatewayBuilder {
    upstream_url: String,
    toml: Vec<String>,
    seed: Vec<Installation>,
}

impl GatewayBuilder {
    /// Merges a TOML snippet over the base config: tables merge key by key, any other value
    /// replaces the base one. May be called several times.
    pub fn toml(mut self, snippet: &str) -> Self {
        self.toml.push(snippet.to_owned());
        self
    }

    /// Saves `inst` for [`CLIENT_ID`] before the gateway starts.
    pub fn seed(mut self, inst: Installation) -> Self {
        self.seed.push(inst);
        self
    }

    pub async fn start(self) -> TestGateway {
        let dir = tempfile::tempdir().unwrap();
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let data = dir.path().join("data");
        // Slack's API is pointed at a closed loopback port: forwarding never needs it, and a
        // test must never reach anything but 127.0.0.1.
        let base = format!(
            r#"
[server]
listen = "{public_addr}"
admin_listen = "{admin_addr}"
public_url = "http://{public_addr}"

[slack]
client_id = "{CLIENT_ID}"
client_secret = "test-client-secret"
signing_secret = "{SIGNING_SECRET}"
api_url = "http://127.0.0.1:9/api"
authorize_url = "http://127.0.0.1:9/oauth/v2/authorize"

[oauth]
scopes = ["chat:write", "commands"]

[upstream]
url = "{}"

[storage]
path = "{}"
"#,
            self.upstream_url,
            data.display()
        );
        let mut table: toml::Table = base.parse().unwrap();
        for snippet in &self.toml {
            let extra: toml::Table = snippet
                .parse()
                .unwrap_or_else(|e| panic!("test TOML snippet: {e}\n{snippet}"));
            merge(&mut table, extra);
        }
        let text = toml::to_string(&table).unwrap();
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &text).unwrap();
        let config =
            Config::from_toml(&text, &path, &|_| None).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let store = Arc::new(SledStore::open(&config.storage.path).unwrap());
        for inst in &self.seed {
            store.save(CLIENT_ID, inst).await.unwrap();
        }
        let gw = Gateway::new(config, path.clone(), store.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(slack_gateway::run(gw.clone(), public, admin, async move {
            let _ = stopped.await;
        }));
        let gateway = TestGateway {
            public: public_addr,
            admin: admin_addr,
            gw,
            store,
            config_path: path,
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        };
        wait_until_answers(&gateway.admin_url("/readyz")).await;
        gateway
    }
}

/// Deep-merges `extra` into `base`.
fn merge(base: &mut toml::Table, extra: toml::Table) {
    for (k, v) in extra {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(e)) => merge(b, e),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// Polls `url` until it answers 200 (the listener's socket is up and served).
async fn wait_until_answers(url: &str) {
    let deadline = Instant::now() + READY_LIMIT;
    loop {
        if let Ok(r) = client().get(url).send().await {
            if r.status() == reqwest::StatusCode::OK {
                return;
            }
        }
        assert!(Instant::now() < deadline, "{url} did not answer in time");
        tokio::time::sleep(READY_POLL).await;
    }
}

/// The real gateway on loopback, over its own temporary sled folder.
pub struct TestGateway {
    pub public: SocketAddr,
    pub admin: SocketAddr,
    pub gw: Arc<Gateway>,
    /// The store the gateway uses: seed it, or check what a request changed.
    pub store: Arc<SledStore>,
    pub config_path: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<Result<(), slack_gateway::RunError>>>,
    _dir: tempfile::TempDir,
}

impl TestGateway {
    /// A gateway forwarding to `upstream_url` (e.g. [`FakeUpstream::url`]).
    pub fn builder(upstream_url: impl Into<String>) -> GatewayBuilder {
        GatewayBuilder {
            upstream_url: upstream_url.into(),
            toml: Vec::new(),
            seed: Vec::new(),
        }
    }

    /// `http://{public}{path}`.
    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.public)
    }

    /// `http://{admin}{path}`.
    pub fn admin_url(&self, path_and_query: &str) -> String {
        format!("http://{}{path_and_query}", self.admin)
    }

    /// A signed POST of `body` to the events path.
    pub fn post(&self, body: impl Into<Vec<u8>>) -> SlackPost {
        SlackPost::new(self.url(EVENTS_PATH), body.into())
    }

    /// Stops the gateway and waits for it: drained and store flushed.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("gateway task panicked")
                .expect("gateway stopped with an error");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        // Dropping the sender resolves the shutdown future; the task drains on its own.
        self.stop.take();
    }
}

/// A gateway in front of `upstream_url` with `team` installed (bot token `xoxb-conn-token`)
/// that keeps idle upstream connections for 30 s, so reuse does not depend on how fast a
/// loaded test machine sends the next request.
pub async fn gateway_for(upstream_url: String, team: &str) -> TestGateway {
    TestGateway::builder(upstream_url)
        .seed(workspace_install(team, "U0INSTALLER", "xoxb-conn-token"))
        .toml("[upstream]\nkeepalive_timeout = \"30s\"\n")
        .start()
        .await
}

// ---------------------------------------------------------------------------------------
// Fake upstream
// ---------------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// The gateway's end of the connection the request came on.
    pub peer: SocketAddr,
    pub method: String,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    /// The value of `name` (as text), when present exactly once or first.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    /// Every `(name, value)` whose name folds (lowercase, `_` as `-`) to `folded`.
    pub fn headers_folding_to(&self, folded: &str) -> Vec<(String, String)> {
        self.headers
            .iter()
            .filter(|(k, _)| k.as_str().replace('_', "-") == folded)
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect()
    }
}

/// What the fake upstream answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
    /// Waited before answering (after the request was recorded).
    pub delay: Duration,
}

impl Default for Reply {
    fn default() -> Self {
        Reply {
            status: 200,
            headers: vec![("content-type".into(), "text/plain".into())],
            body: Bytes::from_static(b"upstream ok"),
            delay: Duration::ZERO,
        }
    }
}

#[derive(Default)]
struct UpstreamState {
    requests: Vec<Recorded>,
    reply: Reply,
}

/// A recording upstream app on loopback.
pub struct FakeUpstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<UpstreamState>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts one answering [`Reply::default`].
    pub async fn start() -> FakeUpstream {
        Self::start_with(Reply::default()).await
    }

    pub async fn start_with(reply: Reply) -> FakeUpstream {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(UpstreamState {
            requests: Vec::new(),
            reply,
        }));
        let shared = state.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, peer)) = listener.accept().await else {
                    continue;
                };
                let state = shared.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req: Request<Incoming>| {
                        let state = state.clone();
                        async move { Ok::<_, Infallible>(answer(&state, req, peer).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeUpstream {
            addr,
            state,
            accept,
        }
    }

    /// `http://{addr}`: the value of `upstream.url`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the next requests get.
    pub fn set_reply(&self, reply: Reply) {
        self.state.lock().unwrap().reply = reply;
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().requests.len()
    }

    /// The only request received; fails when there were none or several.
    pub fn single(&self) -> Recorded {
        let r = self.requests();
        assert_eq!(r.len(), 1, "expected exactly one forwarded request");
        r.into_iter().next().unwrap()
    }

    /// The latest request received.
    pub fn last(&self) -> Recorded {
        self.requests()
            .pop()
            .expect("no request reached the upstream")
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn answer(
    state: &Mutex<UpstreamState>,
    req: Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let reply = {
        let mut s = state.lock().unwrap();
        s.requests.push(Recorded {
            peer,
            method: parts.method.to_string(),
            path_and_query: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_owned())
                .unwrap_or_default(),
            headers: parts.headers,
            body,
        });
        s.reply.clone()
    };
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut r = Response::new(Full::new(reply.body));
    *r.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in &reply.headers {
        r.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(v).unwrap(),
        );
    }
    r
}

/// What a [`raw_upstream_answering`] upstream saw.
#[derive(Debug)]
pub enum Seen {
    /// One whole request (head and body), as text.
    Request(String),
    /// The gateway closed the connection.
    Closed,
}

/// A bare-TCP upstream answering the n-th request on each connection with
/// `answers[n % len]`, written in pieces of at most 1000 bytes. With `drop_after_each`, it
/// closes each connection after one answer without saying so, as an app server whose
/// keep-alive timeout is shorter than the gateway's does; otherwise it keeps connections open
/// and reports when the gateway closes one.
pub async fn raw_upstream_answering(
    answers: Vec<Vec<u8>>,
    drop_after_each: bool,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    raw_upstream_scripted(answers, drop_after_each, None).await
}

/// [`raw_upstream_answering`], but the n-th request it receives, on whichever connection,
/// gets `answers[n % len]`: for a script that goes on across the gateway's reconnections.
pub async fn raw_upstream_answering_in_turn(
    answers: Vec<Vec<u8>>,
    drop_after_each: bool,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    raw_upstream_scripted(
        answers,
        drop_after_each,
        Some(Arc::new(AtomicUsize::new(0))),
    )
    .await
}

/// Counts answers per connection, or over all connections with `overall`.
async fn raw_upstream_scripted(
    answers: Vec<Vec<u8>>,
    drop_after_each: bool,
    overall: Option<Arc<AtomicUsize>>,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let answers = Arc::new(answers);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (seen, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                continue;
            };
            let seen = seen.clone();
            let answers = answers.clone();
            let overall = overall.clone();
            tokio::spawn(async move {
                let mut answered = 0usize;
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // One request: the head, then Content-Length bytes of body.
                    let whole = loop {
                        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                            let len: usize = head
                                .lines()
                                .find_map(|l| l.strip_prefix("content-length:"))
                                .map(|v| v.trim().parse().unwrap())
                                .unwrap_or(0);
                            if buf.len() >= end + 4 + len {
                                break end + 4 + len;
                            }
                        }
                        let n = stream.read(&mut chunk).await.unwrap_or(0);
                        if n == 0 {
                            let _ = seen.send(Seen::Closed);
                            return;
                        }
                        buf.extend_from_slice(&chunk[..n]);
                    };
                    let request: Vec<u8> = buf.drain(..whole).collect();
                    let _ = seen.send(Seen::Request(
                        String::from_utf8_lossy(&request).into_owned(),
                    ));
                    let turn = match &overall {
                        Some(count) => count.fetch_add(1, Ordering::SeqCst),
                        None => answered,
                    };
                    let answer = &answers[turn % answers.len()];
                    answered += 1;
                    for piece in answer.chunks(1000) {
                        if stream.write_all(piece).await.is_err() {
                            return;
                        }
                    }
                    if drop_after_each {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        // Dropped: closed with no `Connection: close` ever sent.
                        return;
                    }
                }
            });
        }
    });
    (url, rx)
}

/// An `upstream.url` where nothing listens (a port bound, then released).
pub async fn closed_port_url() -> String {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------
// Signing and the Slack-side client
// ---------------------------------------------------------------------------------------

/// `(X-Slack-Request-Timestamp, X-Slack-Signature)` for `body` signed now with `secret`.
pub fn sign_now(secret: &str, body: &[u8]) -> (String, String) {
    let ts = now();
    (
        ts.to_string(),
        slack_gateway::slack::signature::sign(secret, ts, body),
    )
}

/// A POST as Slack sends it: signed with [`SIGNING_SECRET`] at the current time unless told
/// otherwise.
pub struct SlackPost {
    url: String,
    body: Vec<u8>,
    content_type: Option<String>,
    secret: String,
    timestamp: Option<u64>,
    send_timestamp: bool,
    send_signature: bool,
    signature: Option<String>,
    headers: Vec<(String, String)>,
}

impl SlackPost {
    pub fn new(url: String, body: Vec<u8>) -> Self {
        SlackPost {
            url,
            body,
            content_type: Some("application/json".into()),
            secret: SIGNING_SECRET.into(),
            timestamp: None,
            send_timestamp: true,
            send_signature: true,
            signature: None,
            headers: Vec::new(),
        }
    }

    /// `Content-Type: application/x-www-form-urlencoded`.
    pub fn form(self) -> Self {
        self.content_type("application/x-www-form-urlencoded")
    }

    pub fn content_type(mut self, ct: &str) -> Self {
        self.content_type = Some(ct.into());
        self
    }

    pub fn no_content_type(mut self) -> Self {
        self.content_type = None;
        self
    }

    /// Signs with another secret.
    pub fn secret(mut self, secret: &str) -> Self {
        self.secret = secret.into();
        self
    }

    /// Signs (and sends) this timestamp instead of now.
    pub fn timestamp(mut self, ts: u64) -> Self {
        self.timestamp = Some(ts);
        self
    }

    /// Sends this `X-Slack-Signature` instead of the right one.
    pub fn signature(mut self, sig: &str) -> Self {
        self.signature = Some(sig.into());
        self
    }

    pub fn without_timestamp(mut self) -> Self {
        self.send_timestamp = false;
        self
    }

    pub fn without_signature(mut self) -> Self {
        self.send_signature = false;
        self
    }

    /// Neither header: an unsigned request.
    pub fn unsigned(self) -> Self {
        self.without_signature().without_timestamp()
    }

    /// An extra header (sent as given; names may contain `_`).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    pub async fn send(self) -> Answer {
        let ts = self.timestamp.unwrap_or_else(now);
        let sig = self
            .signature
            .clone()
            .unwrap_or_else(|| slack_gateway::slack::signature::sign(&self.secret, ts, &self.body));
        let mut req = client().post(&self.url);
        if let Some(ct) = &self.content_type {
            req = req.header("content-type", ct);
        }
        if self.send_timestamp {
            req = req.header("x-slack-request-timestamp", ts.to_string());
        }
        if self.send_signature {
            req = req.header("x-slack-signature", sig);
        }
        for (k, v) in &self.headers {
            req = req.header(k.as_str(), v.as_str());
        }
        Answer::from(req.body(self.body).send().await.unwrap()).await
    }
}

/// A response, read whole.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    async fn from(r: reqwest::Response) -> Answer {
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.bytes().await.unwrap();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }
}

/// A client that never goes through a proxy from the environment and follows no redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .unwrap()
}

/// GET with no body.
pub async fn get(url: &str) -> Answer {
    Answer::from(client().get(url).send().await.unwrap()).await
}

/// GET with an optional bearer token.
pub async fn admin_get(url: &str, bearer: Option<&str>) -> Answer {
    let mut req = client().get(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    Answer::from(req.send().await.unwrap()).await
}

/// DELETE with an optional bearer token.
pub async fn admin_delete(url: &str, bearer: Option<&str>) -> Answer {
    let mut req = client().delete(url);
    if let Some(t) = bearer {
        req = req.bearer_auth(t);
    }
    Answer::from(req.send().await.unwrap()).await
}

/// Writes `request` as is to `addr` and reads the answer until the server closes: for what an
/// HTTP client library will not send (chunked bodies of a chosen shape, odd framing). Write
/// errors are ignored: a server may answer and close before reading everything.
/// Returns the status and the raw answer text.
pub async fn raw_http(addr: SocketAddr, request: &[u8]) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let _ = s.write_all(request).await;
    let _ = s.flush().await;
    let text = read_answer(&mut s)
        .await
        .unwrap_or_else(|| panic!("no answer from {addr}"));
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP answer: {text:?}"));
    (status, text)
}

/// Reads one answer from `s`: until a complete response has arrived or the server closes,
/// within [`READY_LIMIT`] (`None`: neither happened in time).
pub async fn read_answer(s: &mut TcpStream) -> Option<String> {
    let mut out = Vec::new();
    let read = tokio::time::timeout(READY_LIMIT, async {
        let mut buf = [0u8; 8192];
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    out.extend_from_slice(&buf[..n]);
                    // One answer is all we want: stop at the end of a complete response.
                    if complete_response(&out) {
                        break;
                    }
                }
            }
        }
    })
    .await;
    read.ok()?;
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Reads until the server closes the connection or `limit` passes: whether it closed, and
/// what was read meanwhile.
pub async fn closed_within(s: &mut TcpStream, limit: Duration) -> (bool, String) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let res = tokio::time::timeout(limit, async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    (res.is_ok(), String::from_utf8_lossy(&got).into_owned())
}

/// True once `buf` holds a whole response with a `Content-Length` body.
fn complete_response(buf: &[u8]) -> bool {
    let text = String::from_utf8_lossy(buf);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        return false;
    };
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .is_some_and(|len| body.len() >= len)
}

/// A signed request with a chunked body, as raw bytes: `chunks` are sent as separate chunks.
pub fn chunked_signed_request(
    host: SocketAddr,
    path: &str,
    content_type: &str,
    chunks: &[&[u8]],
) -> Vec<u8> {
    let body: Vec<u8> = chunks.concat();
    let (ts, sig) = sign_now(SIGNING_SECRET, &body);
    let mut out = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\n\
         Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    )
    .into_bytes();
    for c in chunks {
        out.extend_from_slice(format!("{:x}\r\n", c.len()).as_bytes());
        out.extend_from_slice(c);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"0\r\n\r\n");
    out
}

/// The value of one series in a Prometheus text exposition (`None` when absent).
pub fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(series)?;
        // `series` must be the whole name and label set, not a prefix of a longer one.
        rest.starts_with(' ')
            .then(|| rest.trim().parse().ok())
            .flatten()
    })
}
