//! A fake Slack Socket Mode server on one loopback port: `POST /api/apps.connections.open`
//! hands out `ws://127.0.0.1:PORT/link/?ticket=N` URLs, and the WebSocket endpoint behind
//! them behaves as Slack's does: `hello` on open, pongs to pings, envelopes and `disconnect`
//! messages when a test says so.
//!
//! Everything is recorded with the time it happened: every `apps.connections.open` call (its
//! `Authorization`), every connection (opened, hello sent, closed and by whom), every text
//! frame the gateway sent (acks) with the connection it came on, and the number of serving
//! connections after every change, so a test can tell whether that number ever dipped.
//!
//! Knobs: what `apps.connections.open` answers (`ok:false` with an error, a 429 with
//! `Retry-After`, any status, a hang-up, a URL of the test's choosing), as a default and as a
//! script of one-shot answers; refusing the next WebSocket handshakes; withholding `hello`;
//! making a connection silent (no pong and no frame any more); dropping a connection (TCP
//! closed, no close frame). Tickets are single-use: a reused URL is refused and counted.
//!
//! The HTTP side is served by hyper; each WebSocket runs on a thread of its own with the
//! blocking `tungstenite` API, so the fake needs no `Stream`/`Sink` traits.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite;
use tungstenite::handshake::server::{ErrorResponse, Request as WsRequest, Response as WsResponse};
use tungstenite::Message;

/// The app id in `hello` and in the URLs handed out (the seeded installations' app).
pub const APP_ID: &str = "A111";
/// How often a connection thread looks at its commands when nothing arrives.
const TICK: Duration = Duration::from_millis(5);
/// Default bound of the `wait_*` helpers.
pub const WAIT: Duration = Duration::from_secs(5);

/// What `apps.connections.open` answers.
#[derive(Debug, Clone, PartialEq)]
pub enum OpenReply {
    /// `{"ok":true,"url":"ws://…/link/?ticket=N"}` with a fresh ticket.
    Ok,
    /// 200 `{"ok":false,"error":…}`.
    Error(String),
    /// 429 with `Retry-After: secs` and `{"ok":false,"error":"ratelimited"}`.
    RateLimited(u64),
    /// This status with `{"ok":false,"error":"fake_status"}`.
    Status(u16),
    /// The connection is closed without an answer.
    HangUp,
    /// `{"ok":true,"url":…}` with this URL (e.g. where nothing listens).
    Url(String),
}

impl OpenReply {
    pub fn error(e: &str) -> Self {
        OpenReply::Error(e.to_owned())
    }
}

/// One `apps.connections.open` call.
#[derive(Debug, Clone)]
pub struct OpenCall {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
    pub content_type: Option<String>,
    pub body: Bytes,
    /// What it was answered.
    pub reply: OpenReply,
}

/// Who ended a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClosedBy {
    /// The gateway sent a close frame.
    GatewayClose,
    /// The gateway closed the TCP connection without a close frame (or it failed).
    GatewayTcp,
    /// The fake dropped it ([`FakeSocketSlack::drop_conn`]).
    Fake,
}

/// One WebSocket connection (after a successful handshake). Ids start at 1, in the order the
/// handshakes completed.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub id: usize,
    pub ticket: u64,
    pub opened_at: Instant,
    pub hello_at: Option<Instant>,
    pub closed_at: Option<Instant>,
    pub closed_by: Option<ClosedBy>,
    /// Pings received from the gateway.
    pub pings: usize,
    pub last_ping_at: Option<Instant>,
    pub silent_since: Option<Instant>,
}

impl ConnInfo {
    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }

    pub fn is_serving(&self) -> bool {
        self.hello_at.is_some() && self.closed_at.is_none()
    }
}

/// A text frame the gateway sent.
#[derive(Debug, Clone)]
pub struct Frame {
    pub conn: usize,
    pub at: Instant,
    pub text: String,
}

/// A frame that parsed as JSON with an `envelope_id`: an ack.
#[derive(Debug, Clone)]
pub struct Ack {
    pub conn: usize,
    pub at: Instant,
    pub value: Value,
}

impl Ack {
    pub fn envelope_id(&self) -> &str {
        self.value["envelope_id"].as_str().unwrap_or_default()
    }
}

/// An envelope as Slack sends it over Socket Mode.
#[derive(Debug, Clone)]
pub struct Envelope {
    pub id: String,
    pub kind: String,
    pub payload: Value,
    pub accepts_response_payload: bool,
    pub retry_attempt: u32,
    pub retry_reason: String,
}

impl Envelope {
    /// A fresh envelope id each time.
    pub fn new(kind: &str, payload: Value) -> Self {
        Envelope {
            id: format!("env-{}-{}", super::unique_id(), kind),
            kind: kind.to_owned(),
            payload,
            accepts_response_payload: false,
            retry_attempt: 0,
            retry_reason: String::new(),
        }
    }

    pub fn events_api(payload: Value) -> Self {
        Self::new("events_api", payload)
    }

    pub fn slash_commands(payload: Value) -> Self {
        Envelope {
            accepts_response_payload: true,
            ..Self::new("slash_commands", payload)
        }
    }

    pub fn interactive(payload: Value) -> Self {
        Envelope {
            accepts_response_payload: true,
            ..Self::new("interactive", payload)
        }
    }

    pub fn accepts_response_payload(mut self, yes: bool) -> Self {
        self.accepts_response_payload = yes;
        self
    }

    /// Slack's redelivery: `retry_attempt` and `retry_reason`.
    pub fn retry(mut self, attempt: u32, reason: &str) -> Self {
        self.retry_attempt = attempt;
        self.retry_reason = reason.to_owned();
        self
    }

    /// The same envelope id, another id's content otherwise unchanged.
    pub fn with_id(mut self, id: &str) -> Self {
        self.id = id.to_owned();
        self
    }

    pub fn to_json(&self) -> String {
        json!({
            "envelope_id": self.id,
            "type": self.kind,
            "payload": self.payload,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
        })
        .to_string()
    }
}

/// Slack's `hello`.
pub fn hello_message(num_connections: usize) -> String {
    json!({
        "type": "hello",
        "num_connections": num_connections,
        "debug_info": {
            "host": "applink-fake",
            "build_number": 1,
            "approximate_connection_time": 18060
        },
        "connection_info": { "app_id": APP_ID }
    })
    .to_string()
}

/// Slack's `disconnect` with `reason`.
pub fn disconnect_message(reason: &str) -> String {
    json!({
        "type": "disconnect",
        "reason": reason,
        "debug_info": { "host": "applink-fake" }
    })
    .to_string()
}

enum Cmd {
    Send(String),
    Hello,
    Silent,
    Drop,
}

struct State {
    open_script: VecDeque<OpenReply>,
    open_default: OpenReply,
    open_calls: Vec<OpenCall>,
    next_ticket: u64,
    /// Ticket → used.
    tickets: HashMap<u64, bool>,
    refuse_sockets: usize,
    refused_sockets: usize,
    ticket_reuses: usize,
    send_hello: bool,
    conns: Vec<ConnInfo>,
    senders: HashMap<usize, mpsc::Sender<Cmd>>,
    frames: Vec<Frame>,
    /// The number of serving connections after each change.
    history: Vec<(Instant, usize)>,
    /// Where other Web API methods go (`set_fallback`); 404 without.
    fallback: Option<String>,
}

impl State {
    fn serving(&self) -> usize {
        self.conns.iter().filter(|c| c.is_serving()).count()
    }

    fn note(&mut self, at: Instant) {
        let n = self.serving();
        if self.history.last().map(|(_, m)| *m) != Some(n) {
            self.history.push((at, n));
        }
    }

    fn closed(&mut self, id: usize, by: ClosedBy) {
        let at = Instant::now();
        let c = &mut self.conns[id - 1];
        if c.closed_at.is_none() {
            c.closed_at = Some(at);
            c.closed_by = Some(by);
        }
        self.senders.remove(&id);
        self.note(at);
    }
}

struct Shared {
    state: Mutex<State>,
    stop: AtomicBool,
    addr: SocketAddr,
}

/// The fake. Dropping it stops the listener and every connection.
pub struct FakeSocketSlack {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: tokio::task::JoinHandle<()>,
}

impl FakeSocketSlack {
    pub async fn start() -> FakeSocketSlack {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                open_script: VecDeque::new(),
                open_default: OpenReply::Ok,
                fallback: None,
                open_calls: Vec::new(),
                next_ticket: 1,
                tickets: HashMap::new(),
                refuse_sockets: 0,
                refused_sockets: 0,
                ticket_reuses: 0,
                send_hello: true,
                conns: Vec::new(),
                senders: HashMap::new(),
                frames: Vec::new(),
                history: vec![(Instant::now(), 0)],
            }),
            stop: AtomicBool::new(false),
            addr,
        });
        let s = shared.clone();
        let accept = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let s = s.clone();
                tokio::spawn(async move { dispatch(s, stream).await });
            }
        });
        FakeSocketSlack {
            addr,
            shared,
            accept,
        }
    }

    /// `http://127.0.0.1:PORT/api`: the value of `slack.api_url`.
    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.shared.state.lock().unwrap()
    }

    // --- apps.connections.open ---------------------------------------------------------

    /// What every call answers once the script is used up (initially [`OpenReply::Ok`]).
    pub fn set_open_reply(&self, reply: OpenReply) {
        self.state().open_default = reply;
    }

    /// One-shot answers for the next calls, in order, before the default applies again.
    pub fn script_open_replies(&self, replies: impl IntoIterator<Item = OpenReply>) {
        self.state().open_script.extend(replies);
    }

    pub fn open_calls(&self) -> Vec<OpenCall> {
        self.state().open_calls.clone()
    }

    pub fn open_call_count(&self) -> usize {
        self.state().open_calls.len()
    }

    /// Passes every other `/api/{method}` call to `api_url` (another fake Slack's), so one
    /// `slack.api_url` serves Socket Mode and the Web API.
    pub fn set_fallback(&self, api_url: &str) {
        self.shared.state.lock().unwrap().fallback = Some(api_url.trim_end_matches('/').to_owned());
    }

    /// The distinct bearer tokens `apps.connections.open` was called with.
    pub fn app_tokens_seen(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for c in self.state().open_calls.iter() {
            let t = c
                .authorization
                .as_deref()
                .and_then(|a| a.strip_prefix("Bearer "))
                .unwrap_or("")
                .to_owned();
            if !out.contains(&t) {
                out.push(t);
            }
        }
        out
    }

    // --- WebSocket handshakes -----------------------------------------------------------

    /// The next `n` WebSocket handshakes are refused with a 500.
    pub fn refuse_next_sockets(&self, n: usize) {
        self.state().refuse_sockets = n;
    }

    /// Handshakes refused by [`Self::refuse_next_sockets`].
    pub fn refused_sockets(&self) -> usize {
        self.state().refused_sockets
    }

    /// Handshakes refused because their ticket was already used or never handed out.
    pub fn ticket_reuses(&self) -> usize {
        self.state().ticket_reuses
    }

    /// Whether new connections get `hello` at once (default true).
    pub fn set_send_hello(&self, yes: bool) {
        self.state().send_hello = yes;
    }

    // --- Connections -----------------------------------------------------------------------

    pub fn conns(&self) -> Vec<ConnInfo> {
        self.state().conns.clone()
    }

    pub fn conn(&self, id: usize) -> ConnInfo {
        self.state().conns[id - 1].clone()
    }

    /// Ids of the connections not closed yet.
    pub fn open_conns(&self) -> Vec<usize> {
        self.state()
            .conns
            .iter()
            .filter(|c| c.is_open())
            .map(|c| c.id)
            .collect()
    }

    /// Ids of the open connections that got `hello`.
    pub fn serving_conns(&self) -> Vec<usize> {
        self.state()
            .conns
            .iter()
            .filter(|c| c.is_serving())
            .map(|c| c.id)
            .collect()
    }

    pub fn open_count(&self) -> usize {
        self.open_conns().len()
    }

    pub fn serving_count(&self) -> usize {
        self.state().serving()
    }

    /// Connections ever opened (handshake completed).
    pub fn opened_total(&self) -> usize {
        self.state().conns.len()
    }

    /// The number of serving connections after each change, from the start.
    pub fn serving_history(&self) -> Vec<(Instant, usize)> {
        self.state().history.clone()
    }

    /// The lowest number of serving connections at any moment from `from` until now.
    pub fn min_serving_since(&self, from: Instant) -> usize {
        let h = self.serving_history();
        let at_start = h
            .iter()
            .rev()
            .find(|(t, _)| *t <= from)
            .map(|(_, n)| *n)
            .unwrap_or(0);
        h.iter()
            .filter(|(t, _)| *t > from)
            .map(|(_, n)| *n)
            .fold(at_start, usize::min)
    }

    fn command(&self, conn: usize, cmd: Cmd) -> bool {
        let tx = self.state().senders.get(&conn).cloned();
        tx.is_some_and(|tx| tx.send(cmd).is_ok())
    }

    /// Sends `text` on `conn`; false when it is closed.
    pub fn send(&self, conn: usize, text: &str) -> bool {
        self.command(conn, Cmd::Send(text.to_owned()))
    }

    /// Sends `env` on `conn`; panics when it is closed.
    pub fn send_envelope(&self, conn: usize, env: &Envelope) {
        assert!(
            self.send(conn, &env.to_json()),
            "connection {conn} is closed"
        );
    }

    /// Sends `text` on the serving connection with the lowest id: which one.
    pub fn send_any(&self, text: &str) -> usize {
        let conn = *self.serving_conns().first().expect("no serving connection");
        assert!(self.send(conn, text));
        conn
    }

    /// Sends `hello` now (for a connection opened while hello was withheld).
    pub fn send_hello(&self, conn: usize) -> bool {
        self.command(conn, Cmd::Hello)
    }

    /// Sends `{"type":"disconnect","reason":…}` on `conn` (and keeps it open).
    pub fn disconnect(&self, conn: usize, reason: &str) -> bool {
        self.send(conn, &disconnect_message(reason))
    }

    /// Closes `conn`'s TCP connection without a close frame.
    pub fn drop_conn(&self, conn: usize) -> bool {
        self.command(conn, Cmd::Drop)
    }

    /// From now on `conn` answers no ping and sends nothing (it still notices being closed).
    pub fn go_silent(&self, conn: usize) -> bool {
        self.command(conn, Cmd::Silent)
    }

    // --- What the gateway sent -----------------------------------------------------------

    pub fn frames(&self) -> Vec<Frame> {
        self.state().frames.clone()
    }

    /// Every frame that is a JSON object with an `envelope_id`.
    pub fn acks(&self) -> Vec<Ack> {
        self.state()
            .frames
            .iter()
            .filter_map(|f| {
                let value: Value = serde_json::from_str(&f.text).ok()?;
                value.get("envelope_id")?;
                Some(Ack {
                    conn: f.conn,
                    at: f.at,
                    value,
                })
            })
            .collect()
    }

    pub fn acks_for(&self, envelope_id: &str) -> Vec<Ack> {
        self.acks()
            .into_iter()
            .filter(|a| a.envelope_id() == envelope_id)
            .collect()
    }

    // --- Waiting ---------------------------------------------------------------------------

    /// Polls `cond` until it holds, for at most `limit`; false if it never did.
    pub async fn wait_for(&self, limit: Duration, mut cond: impl FnMut(&Self) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until exactly `n` connections are serving.
    pub async fn wait_serving(&self, n: usize, what: &str) {
        let ok = self.wait_for(WAIT, |f| f.serving_count() == n).await;
        assert!(
            ok,
            "{what}: {n} serving connections wanted; {}",
            self.report()
        );
    }

    /// Waits until `apps.connections.open` was called at least `n` times.
    pub async fn wait_open_calls(&self, n: usize, what: &str) {
        let ok = self.wait_for(WAIT, |f| f.open_call_count() >= n).await;
        assert!(
            ok,
            "{what}: {n} apps.connections.open calls wanted; {}",
            self.report()
        );
    }

    /// Waits for the first ack of `envelope_id`.
    pub async fn wait_ack(&self, envelope_id: &str, what: &str) -> Ack {
        let ok = self
            .wait_for(WAIT, |f| !f.acks_for(envelope_id).is_empty())
            .await;
        assert!(ok, "{what}: no ack for {envelope_id}; {}", self.report());
        self.acks_for(envelope_id).remove(0)
    }

    /// Waits until `conn` is closed, by whomever.
    pub async fn wait_closed(&self, conn: usize, limit: Duration, what: &str) {
        let ok = self.wait_for(limit, |f| !f.conn(conn).is_open()).await;
        assert!(
            ok,
            "{what}: connection {conn} still open; {}",
            self.report()
        );
    }

    /// A one-paragraph account of the fake's state, for assertion messages.
    pub fn report(&self) -> String {
        let s = self.state();
        let t0 = s.history[0].0;
        let ms = |t: Instant| t.duration_since(t0).as_millis();
        let calls: Vec<String> = s
            .open_calls
            .iter()
            .map(|c| format!("{}ms:{:?}", ms(c.at), c.reply))
            .collect();
        let conns: Vec<String> = s
            .conns
            .iter()
            .map(|c| {
                format!(
                    "#{} opened {}ms hello {:?} closed {:?} by {:?}, {} pings",
                    c.id,
                    ms(c.opened_at),
                    c.hello_at.map(ms),
                    c.closed_at.map(ms),
                    c.closed_by,
                    c.pings
                )
            })
            .collect();
        let frames: Vec<String> = s
            .frames
            .iter()
            .map(|f| format!("#{} {}ms {}", f.conn, ms(f.at), f.text))
            .collect();
        format!(
            "open calls [{}]; connections [{}]; frames [{}]; refused {} reused tickets {}",
            calls.join(", "),
            conns.join("; "),
            frames.join("; "),
            s.refused_sockets,
            s.ticket_reuses
        )
    }
}

impl Drop for FakeSocketSlack {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.accept.abort();
    }
}

// ---------------------------------------------------------------------------------------
// Serving
// ---------------------------------------------------------------------------------------

/// Routes one TCP connection: a WebSocket handshake for `/link/` goes to a thread of its own,
/// anything else to hyper.
async fn dispatch(shared: Arc<Shared>, stream: TcpStream) {
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + WAIT;
    // Every request line is longer than "GET /link": peek until that much has arrived.
    let is_link = loop {
        match stream.peek(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) if n >= 9 => break buf.starts_with(b"GET /link"),
            Ok(_) => {}
        }
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    };
    if is_link {
        let Ok(std_stream) = stream.into_std() else {
            return;
        };
        std::thread::spawn(move || serve_socket(shared, std_stream));
        return;
    }
    let svc = service_fn(move |req: Request<Incoming>| {
        let shared = shared.clone();
        async move { answer_http(&shared, req).await }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

/// One Web API call passed on to another fake Slack, and its answer.
async fn pass_on(
    base: &str,
    method: &str,
    parts: &http::request::Parts,
    body: Bytes,
) -> Response<Full<Bytes>> {
    let query = parts
        .uri
        .query()
        .map(|q| format!("?{q}"))
        .unwrap_or_default();
    let mut req = reqwest::Client::new()
        .request(parts.method.clone(), format!("{base}/{method}{query}"))
        .body(body);
    for name in ["authorization", "content-type"] {
        if let Some(v) = parts.headers.get(name) {
            req = req.header(name, v.clone());
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status();
            let ct = r.headers().get("content-type").cloned();
            let mut out = Response::new(Full::new(r.bytes().await.unwrap_or_default()));
            *out.status_mut() = status;
            if let Some(ct) = ct {
                out.headers_mut().insert("content-type", ct);
            }
            out
        }
        Err(_) => json_response(502, json!({"ok": false, "error": "fallback_unreachable"})),
    }
}

fn json_response(status: u16, body: Value) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = StatusCode::from_u16(status).unwrap();
    r.headers_mut().insert(
        "content-type",
        http::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

async fn answer_http(
    shared: &Shared,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let path = parts.uri.path().to_owned();
    let fallback = shared.state.lock().unwrap().fallback.clone();
    if let (Some(base), Some(method)) = (fallback, path.strip_prefix("/api/")) {
        if method != "apps.connections.open" {
            return Ok(pass_on(&base, method, &parts, body).await);
        }
    }
    if path != "/api/apps.connections.open" {
        return Ok(json_response(
            404,
            json!({"ok": false, "error": "unknown_method"}),
        ));
    }
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let mut s = shared.state.lock().unwrap();
    let reply = match s.open_script.pop_front() {
        Some(r) => r,
        None => s.open_default.clone(),
    };
    s.open_calls.push(OpenCall {
        at: Instant::now(),
        method: parts.method.to_string(),
        path,
        authorization: header("authorization"),
        content_type: header("content-type"),
        body,
        reply: reply.clone(),
    });
    Ok(match reply {
        OpenReply::Ok => {
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            s.tickets.insert(ticket, false);
            json_response(
                200,
                json!({
                    "ok": true,
                    "url": format!("ws://{}/link/?ticket={ticket}&app_id={APP_ID}", shared.addr)
                }),
            )
        }
        OpenReply::Error(e) => json_response(200, json!({"ok": false, "error": e})),
        OpenReply::RateLimited(secs) => {
            let mut r = json_response(429, json!({"ok": false, "error": "ratelimited"}));
            r.headers_mut()
                .insert("retry-after", http::HeaderValue::from(secs));
            r
        }
        OpenReply::Status(code) => {
            json_response(code, json!({"ok": false, "error": "fake_status"}))
        }
        OpenReply::Url(url) => json_response(200, json!({"ok": true, "url": url})),
        OpenReply::HangUp => {
            return Err(std::io::Error::other("hang up"));
        }
    })
}

fn ticket_of(req: &WsRequest) -> Option<u64> {
    req.uri().query()?.split('&').find_map(|kv| {
        kv.strip_prefix("ticket=")
            .and_then(|t| t.parse::<u64>().ok())
    })
}

fn refusal(status: u16, why: &str) -> ErrorResponse {
    let mut r = ErrorResponse::new(Some(why.to_owned()));
    *r.status_mut() = tungstenite::http::StatusCode::from_u16(status).unwrap();
    r
}

/// One WebSocket connection, on its own thread.
// The handshake callback's error type is tungstenite's (an HTTP response), not ours.
#[allow(clippy::result_large_err)]
fn serve_socket(shared: Arc<Shared>, stream: std::net::TcpStream) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(WAIT));
    let mut ticket = 0u64;
    let accepted = tungstenite::accept_hdr(stream, |req: &WsRequest, resp: WsResponse| {
        let mut s = shared.state.lock().unwrap();
        if s.refuse_sockets > 0 {
            s.refuse_sockets -= 1;
            s.refused_sockets += 1;
            return Err(refusal(500, "refused by the fake"));
        }
        let t = ticket_of(req);
        match t.and_then(|t| s.tickets.get_mut(&t)) {
            Some(used) if !*used => {
                *used = true;
                ticket = t.unwrap();
                Ok(resp)
            }
            _ => {
                s.ticket_reuses += 1;
                Err(refusal(403, "unknown or used ticket"))
            }
        }
    });
    let Ok(mut ws) = accepted else {
        return;
    };
    let _ = ws.get_ref().set_read_timeout(Some(TICK));
    let (tx, rx) = mpsc::channel();
    let (id, hello) = {
        let mut s = shared.state.lock().unwrap();
        let id = s.conns.len() + 1;
        s.conns.push(ConnInfo {
            id,
            ticket,
            opened_at: Instant::now(),
            hello_at: None,
            closed_at: None,
            closed_by: None,
            pings: 0,
            last_ping_at: None,
            silent_since: None,
        });
        s.senders.insert(id, tx);
        (id, s.send_hello)
    };
    if hello {
        let _ = send_hello_on(&shared, &mut ws, id);
    }
    let mut silent = false;
    let mut raw = RawFrames::default();
    loop {
        if shared.stop.load(Ordering::SeqCst) {
            return;
        }
        while let Ok(cmd) = rx.try_recv() {
            match cmd {
                Cmd::Send(text) if !silent => {
                    if ws.send(Message::text(text)).is_err() {
                        shared
                            .state
                            .lock()
                            .unwrap()
                            .closed(id, ClosedBy::GatewayTcp);
                        return;
                    }
                }
                Cmd::Hello if !silent => {
                    let _ = send_hello_on(&shared, &mut ws, id);
                }
                Cmd::Send(_) | Cmd::Hello => {}
                Cmd::Silent => {
                    silent = true;
                    shared.state.lock().unwrap().conns[id - 1].silent_since = Some(Instant::now());
                }
                Cmd::Drop => {
                    shared.state.lock().unwrap().closed(id, ClosedBy::Fake);
                    drop(ws);
                    return;
                }
            }
        }
        if silent {
            // Read raw bytes so that no pong is ever written, and watch for close.
            let mut chunk = [0u8; 4096];
            match ws.get_mut().read(&mut chunk) {
                Ok(0) => {
                    shared
                        .state
                        .lock()
                        .unwrap()
                        .closed(id, ClosedBy::GatewayTcp);
                    return;
                }
                Ok(n) => {
                    if let Some(by) = raw.feed(&chunk[..n], &shared, id) {
                        shared.state.lock().unwrap().closed(id, by);
                        return;
                    }
                }
                Err(e) if timed_out(&e) => {}
                Err(_) => {
                    shared
                        .state
                        .lock()
                        .unwrap()
                        .closed(id, ClosedBy::GatewayTcp);
                    return;
                }
            }
            continue;
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                shared.state.lock().unwrap().frames.push(Frame {
                    conn: id,
                    at: Instant::now(),
                    text: t.as_str().to_owned(),
                });
            }
            Ok(Message::Ping(_)) => {
                let mut s = shared.state.lock().unwrap();
                s.conns[id - 1].pings += 1;
                s.conns[id - 1].last_ping_at = Some(Instant::now());
            }
            Ok(Message::Close(_)) => {
                shared
                    .state
                    .lock()
                    .unwrap()
                    .closed(id, ClosedBy::GatewayClose);
                // Let tungstenite answer the close, then stop.
                let _ = ws.flush();
                return;
            }
            Ok(_) => {}
            Err(tungstenite::Error::Io(e)) if timed_out(&e) => {}
            Err(_) => {
                shared
                    .state
                    .lock()
                    .unwrap()
                    .closed(id, ClosedBy::GatewayTcp);
                return;
            }
        }
    }
}

fn timed_out(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Sends hello on `ws` and records it.
fn send_hello_on(
    shared: &Shared,
    ws: &mut tungstenite::WebSocket<std::net::TcpStream>,
    id: usize,
) -> tungstenite::Result<()> {
    // Recorded before it is sent: the gateway may act on the hello (close an old socket,
    // recorded at once) before this thread would get to record it, and the serving history
    // must stay in order.
    let n = {
        let mut s = shared.state.lock().unwrap();
        let n = s.serving() + 1;
        let at = Instant::now();
        if s.conns[id - 1].hello_at.is_none() {
            s.conns[id - 1].hello_at = Some(at);
        }
        s.note(at);
        n
    };
    ws.send(Message::text(hello_message(n)))?;
    Ok(())
}

/// A minimal parser of client frames for a silent connection: records text frames and
/// pings, and reports a close frame.
#[derive(Default)]
struct RawFrames {
    buf: Vec<u8>,
}

impl RawFrames {
    fn feed(&mut self, bytes: &[u8], shared: &Shared, id: usize) -> Option<ClosedBy> {
        self.buf.extend_from_slice(bytes);
        loop {
            let b = &self.buf;
            if b.len() < 2 {
                return None;
            }
            let opcode = b[0] & 0x0f;
            let masked = b[1] & 0x80 != 0;
            let (len, mut at) = match b[1] & 0x7f {
                126 if b.len() >= 4 => (u16::from_be_bytes([b[2], b[3]]) as usize, 4),
                127 if b.len() >= 10 => (
                    u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize,
                    10,
                ),
                126 | 127 => return None,
                n => (n as usize, 2),
            };
            let mask = if masked {
                if b.len() < at + 4 {
                    return None;
                }
                at += 4;
                Some([b[at - 4], b[at - 3], b[at - 2], b[at - 1]])
            } else {
                None
            };
            if b.len() < at + len {
                return None;
            }
            let mut payload = b[at..at + len].to_vec();
            if let Some(m) = mask {
                for (i, byte) in payload.iter_mut().enumerate() {
                    *byte ^= m[i % 4];
                }
            }
            self.buf.drain(..at + len);
            match opcode {
                0x1 => shared.state.lock().unwrap().frames.push(Frame {
                    conn: id,
                    at: Instant::now(),
                    text: String::from_utf8_lossy(&payload).into_owned(),
                }),
                0x8 => return Some(ClosedBy::GatewayClose),
                0x9 => {
                    let mut s = shared.state.lock().unwrap();
                    s.conns[id - 1].pings += 1;
                    s.conns[id - 1].last_ping_at = Some(Instant::now());
                }
                _ => {}
            }
        }
    }
}
