//! A fake Slack Socket Mode server that loads the gateway with envelopes and times their acks,
//! for `bench/socket_mode.sh` (see `bench/README.md`).
//!
//! - `POST /api/apps.connections.open` (with `Authorization: Bearer xapp-…`; anything else is
//!   `invalid_auth`) answers `{"ok":true,"url":"ws://ADDR/link/?ticket=N"}`;
//! - the WebSocket behind that URL says `hello` at once, then carries the envelopes of the
//!   runs below and reads the gateway's acks (`{"envelope_id":…}`); pings are answered;
//! - `GET /bench/status` answers `{"serving":N,"opened":N,"open_calls":N,"acks":N}` (sockets
//!   that got `hello` and are still open, ...);
//! - `POST /bench/run?mode=closed&n=64&warmup=2&secs=10&label=x` or
//!   `POST /bench/run?mode=rate&rate=1000&warmup=2&secs=10&label=x` runs one load and answers
//!   its `RESULT` line (one run at a time):
//!   - `closed`: `n` envelopes outstanding: each ack sends the next one, on the next open
//!     socket in turn (throughput);
//!   - `rate`: `rate` envelopes a second in all, round robin over the open sockets, whatever
//!     the acks do (latency far below saturation).
//!
//!   Every envelope is an `events_api` one, `accepts_response_payload: false`, with a unique
//!   `envelope_id` and a realistic ~1.5 KB `event_callback` payload (the harness's event shape,
//!   a team of `--installations` in turn, a unique `event_id`). An envelope's latency runs from
//!   just before its frame is written to the socket to the moment its ack has been read.
//!   Envelopes sent during the first `warmup` s are not measured; the window then lasts `secs`
//!   s, after which the run waits up to 5 s for the acks still due. The line:
//!   `RESULT label=… mode=… n=… rate=… secs=… sent=… acked=… unacked=… env_rate=… latencies=…
//!   p50_us=… p90_us=… p99_us=… p999_us=… max_us=… duplicates=…`, where `env_rate` counts the
//!   acks read within the window and `unacked` the envelopes of the run never acked.
//!
//! One thread (pin it to a core of its own); a closed loop's next envelope is built as the ack
//! that frees its slot is read.
//!
//! ```text
//! cargo run --release --example socket_bench -- --addr 127.0.0.1:9072 \
//!     --installations /tmp/gw/installations.json
//! curl -s -X POST 'http://127.0.0.1:9072/bench/run?mode=rate&rate=1000&warmup=2&secs=10'
//! ```

use std::cell::RefCell;
use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;

#[path = "bench_support/event.rs"]
mod event;

#[derive(Parser)]
#[command(about = "A fake Socket Mode server that loads the gateway and times its acks")]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9072")]
    addr: SocketAddr,
    /// The installations (the harness's JSON format; `bench_seed --export-json`)
    #[arg(long)]
    installations: PathBuf,
}

/// An open socket: where its envelopes go (number, frame).
struct Sock {
    tx: mpsc::UnboundedSender<(u64, String)>,
    open: bool,
}

struct Run {
    closed: bool,
    outstanding: usize,
    rate: f64,
    from: Instant,
    until: Instant,
    /// Past `until`: a closed loop sends no more.
    over: bool,
    sent: u64,
    acked: u64,
    acked_in_window: u64,
    latencies: Vec<u64>,
    /// Envelope numbers of this run start here.
    first: u64,
}

struct State {
    addr: SocketAddr,
    events: event::Events,
    socks: Vec<Sock>,
    rr: usize,
    next: u64,
    tag: String,
    /// Envelope number → when its frame was written.
    pending: HashMap<u64, Instant>,
    run: Option<Run>,
    opened: u64,
    open_calls: u64,
    next_ticket: u64,
    acks: u64,
    /// Acks of unknown or already acked envelopes.
    duplicates: u64,
    busy: bool,
}

type Shared = Rc<RefCell<State>>;

fn main() -> Result<(), String> {
    let args = Args::parse();
    let teams = event::load_teams(&args.installations)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(args.addr, teams))
}

async fn serve(addr: SocketAddr, teams: Vec<String>) -> Result<(), String> {
    let listener = TcpListener::bind(addr).await.map_err(|e| e.to_string())?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    let events = event::Events::new(teams);
    let tag = events.event_id(0)[2..10].to_owned();
    let state: Shared = Rc::new(RefCell::new(State {
        addr,
        events,
        socks: Vec::new(),
        rr: 0,
        next: 0,
        tag,
        pending: HashMap::new(),
        run: None,
        opened: 0,
        open_calls: 0,
        next_ticket: 1,
        acks: 0,
        duplicates: 0,
        busy: false,
    }));
    eprintln!("fake Socket Mode server listening on {addr}");
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::task::spawn_local(dispatch(state.clone(), stream));
    }
}

/// A WebSocket handshake for `/link/` is served here; anything else by hyper.
async fn dispatch(state: Shared, stream: TcpStream) {
    let mut buf = [0u8; 16];
    let deadline = Instant::now() + Duration::from_secs(5);
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
        socket(state, stream).await;
        return;
    }
    let svc = service_fn(move |req: Request<Incoming>| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(http_answer(&state, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), svc)
        .await;
}

fn json(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}

async fn http_answer(state: &Shared, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    let _ = body.collect().await;
    let path = parts.uri.path();
    match (&parts.method, path) {
        (&Method::POST, "/api/apps.connections.open") => {
            let authed = parts
                .headers
                .get(header::AUTHORIZATION)
                .is_some_and(|v| v.as_bytes().starts_with(b"Bearer xapp-"));
            let mut s = state.borrow_mut();
            s.open_calls += 1;
            if !authed {
                return json(
                    StatusCode::OK,
                    r#"{"ok":false,"error":"invalid_auth"}"#.into(),
                );
            }
            let ticket = s.next_ticket;
            s.next_ticket += 1;
            json(
                StatusCode::OK,
                format!(
                    r#"{{"ok":true,"url":"ws://{}/link/?ticket={ticket}&app_id={}"}}"#,
                    s.addr,
                    event::APP_ID
                ),
            )
        }
        (&Method::GET, "/bench/status") => {
            let s = state.borrow();
            let serving = s.socks.iter().filter(|k| k.open).count();
            json(
                StatusCode::OK,
                format!(
                    r#"{{"serving":{serving},"opened":{},"open_calls":{},"acks":{}}}"#,
                    s.opened, s.open_calls, s.acks
                ),
            )
        }
        (&Method::POST, "/bench/run") => {
            let q: HashMap<String, String> =
                form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
            match bench_run(state, &q).await {
                Ok(line) => {
                    let mut r = Response::new(Full::new(Bytes::from(line + "\n")));
                    r.headers_mut()
                        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
                    r
                }
                Err(e) => {
                    let mut r = Response::new(Full::new(Bytes::from(e + "\n")));
                    *r.status_mut() = StatusCode::BAD_REQUEST;
                    r
                }
            }
        }
        _ => json(
            StatusCode::NOT_FOUND,
            r#"{"ok":false,"error":"unknown_method"}"#.into(),
        ),
    }
}

/// Slack's `hello`.
fn hello(serving: usize) -> String {
    format!(
        r#"{{"type":"hello","num_connections":{serving},"debug_info":{{"host":"applink-bench","build_number":1,"approximate_connection_time":18060}},"connection_info":{{"app_id":"{}"}}}}"#,
        event::APP_ID
    )
}

/// The n-th envelope.
fn envelope(s: &State, n: u64) -> String {
    format!(
        r#"{{"envelope_id":"bench-{}-{n}","payload":{},"type":"events_api","accepts_response_payload":false,"retry_attempt":0,"retry_reason":""}}"#,
        s.tag,
        s.events.body(n)
    )
}

/// Sends the next envelope on the next open socket; false when none is open.
fn send_next(s: &mut State) -> bool {
    let count = s.socks.len();
    for _ in 0..count {
        let i = s.rr % count;
        s.rr = s.rr.wrapping_add(1);
        if !s.socks[i].open {
            continue;
        }
        let n = s.next;
        s.next += 1;
        let frame = envelope(s, n);
        if s.socks[i].tx.send((n, frame)).is_ok() {
            if let Some(r) = s.run.as_mut() {
                r.sent += 1;
            }
            return true;
        }
        s.socks[i].open = false;
    }
    false
}

/// An ack of envelope `n` was read.
fn acked(state: &Shared, n: u64) {
    let now = Instant::now();
    let mut s = state.borrow_mut();
    s.acks += 1;
    let Some(sent) = s.pending.remove(&n) else {
        s.duplicates += 1;
        return;
    };
    let mut more = false;
    if let Some(r) = s.run.as_mut() {
        if n >= r.first {
            r.acked += 1;
            if now >= r.from && now <= r.until {
                r.acked_in_window += 1;
            }
            if sent >= r.from && sent < r.until {
                r.latencies
                    .push(now.duration_since(sent).as_micros() as u64);
            }
            if r.closed && !r.over && now < r.until {
                more = true;
            }
        }
    }
    if more {
        send_next(&mut s);
    }
}

/// The envelope number in an ack's `envelope_id` (`bench-TAG-N`).
fn ack_number(text: &str) -> Option<u64> {
    #[derive(serde::Deserialize)]
    struct Ack<'a> {
        #[serde(borrow)]
        envelope_id: std::borrow::Cow<'a, str>,
    }
    let ack: Ack = serde_json::from_str(text).ok()?;
    ack.envelope_id.rsplit('-').next()?.parse().ok()
}

/// One Socket Mode WebSocket: `hello`, then envelopes out and acks in.
async fn socket(state: Shared, stream: TcpStream) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else {
        return;
    };
    let (mut sink, mut frames) = ws.split();
    let (tx, mut rx) = mpsc::unbounded_channel::<(u64, String)>();
    let (idx, greeting) = {
        let mut s = state.borrow_mut();
        s.opened += 1;
        let serving = s.socks.iter().filter(|k| k.open).count() + 1;
        (s.socks.len(), hello(serving))
    };
    if sink.send(Message::text(greeting)).await.is_err() {
        return;
    }
    state.borrow_mut().socks.push(Sock { tx, open: true });
    let writer_state = state.clone();
    let writer = tokio::task::spawn_local(async move {
        while let Some((n, frame)) = rx.recv().await {
            writer_state.borrow_mut().pending.insert(n, Instant::now());
            if sink.send(Message::text(frame)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    while let Some(frame) = frames.next().await {
        match frame {
            Ok(Message::Text(t)) => {
                if let Some(n) = ack_number(t.as_str()) {
                    acked(&state, n);
                }
            }
            Ok(Message::Close(_)) | Err(_) => break,
            Ok(_) => {}
        }
    }
    state.borrow_mut().socks[idx].open = false;
    writer.abort();
}

fn param<T: std::str::FromStr>(q: &HashMap<String, String>, k: &str, d: T) -> Result<T, String> {
    match q.get(k) {
        Some(v) => v.parse().map_err(|_| format!("bad {k}: {v}")),
        None => Ok(d),
    }
}

async fn bench_run(state: &Shared, q: &HashMap<String, String>) -> Result<String, String> {
    let closed = match q.get("mode").map(String::as_str) {
        Some("closed") | None => true,
        Some("rate") => false,
        Some(m) => return Err(format!("mode must be closed or rate, not {m}")),
    };
    let outstanding: usize = param(q, "n", 64)?;
    let rate: f64 = param(q, "rate", 1000.0)?;
    let warmup: f64 = param(q, "warmup", 2.0)?;
    let secs: f64 = param(q, "secs", 10.0)?;
    let label = q.get("label").cloned().unwrap_or_else(|| "run".into());
    let start = Instant::now();
    let from = start + Duration::from_secs_f64(warmup);
    let until = from + Duration::from_secs_f64(secs);
    {
        let mut s = state.borrow_mut();
        if s.busy {
            return Err("a run is going on".into());
        }
        if !s.socks.iter().any(|k| k.open) {
            return Err("no socket is open".into());
        }
        s.busy = true;
        let first = s.next;
        s.run = Some(Run {
            closed,
            outstanding,
            rate,
            from,
            until,
            over: false,
            sent: 0,
            acked: 0,
            acked_in_window: 0,
            latencies: Vec::with_capacity(1 << 20),
            first,
        });
        s.duplicates = 0;
    }
    if closed {
        {
            let mut s = state.borrow_mut();
            for _ in 0..outstanding {
                send_next(&mut s);
            }
        }
        tokio::time::sleep_until(until).await;
    } else {
        let mut tick = tokio::time::interval(Duration::from_millis(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tick.tick().await;
            let now = Instant::now();
            if now >= until {
                break;
            }
            let due = (now.duration_since(start).as_secs_f64() * rate) as u64;
            let mut s = state.borrow_mut();
            while s.run.as_ref().is_some_and(|r| r.sent < due) {
                if !send_next(&mut s) {
                    break;
                }
            }
        }
    }
    if let Some(r) = state.borrow_mut().run.as_mut() {
        r.over = true;
    }
    // The acks still due.
    let drain_until = Instant::now() + Duration::from_secs(5);
    loop {
        let left = {
            let s = state.borrow();
            let r = s.run.as_ref().expect("this run");
            r.sent.saturating_sub(r.acked)
        };
        if left == 0 || Instant::now() >= drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut s = state.borrow_mut();
    let r = s.run.take().expect("this run");
    // What was never acked is forgotten.
    let first = r.first;
    s.pending.retain(|n, _| *n < first);
    s.busy = false;
    let window = r.until.duration_since(r.from).as_secs_f64();
    let env_rate = r.acked_in_window as f64 / window;
    let summary = event::Summary::of(r.latencies);
    Ok(format!(
        "RESULT label={label} mode={} n={} rate={} secs={window:.3} sent={} acked={} unacked={} env_rate={env_rate:.1} {} duplicates={}",
        if r.closed { "closed" } else { "rate" },
        if r.closed { r.outstanding } else { 0 },
        if r.closed { 0.0 } else { r.rate },
        r.sent,
        r.acked,
        r.sent.saturating_sub(r.acked),
        summary.fields(),
        s.duplicates
    ))
}
