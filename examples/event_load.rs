//! A load generator of signed Events API callbacks, every one with an `event_id` of its own,
//! for `bench/queued.sh` and `bench/socket_mode.sh` (see `bench/README.md`).
//!
//! Why not `wrk` with a file of pre-signed requests: queued delivery remembers each
//! `(api_app_id, event_id)` for `delivery.dedupe_window` and answers a repeat 200 without
//! storing it, so a file that `wrk` cycles would measure the cheap duplicate path after its
//! first pass; at tens of thousands of events a second a file of distinct ~1.5 KB requests
//! large enough for a run is hundreds of MB. This tool makes each body as it sends it (the
//! harness's event shape, a team of the installations file in turn, a unique event id) and
//! signs it with `slack.signing_secret` (the gateway's own `signature::sign`), a few µs each.
//!
//! Loads (one process, one thread: pin it to its own core):
//! - closed loop (`--rate 0`, the default): `--conns` keep-alive connections, each sending its
//!   next request as soon as the previous one is answered: throughput;
//! - paced (`--rate R`): R requests a second in all, spread over `--conns` connections, each
//!   sent at its scheduled time (on a free connection): far below saturation, the latency of
//!   one request rather than a queue's;
//! - `--count N`: exactly N requests, closed loop, as fast as they go (no warm-up).
//!
//! Requests started during the first `--warmup` seconds are not measured; the run then lasts
//! `--duration` seconds. Printed: a human line and `RESULT label=… requests=N secs=S rate=R
//! latencies=… p50_us=… p90_us=… p99_us=… p999_us=… max_us=… err_status=… err_sock=… late=…`:
//! requests answered 2xx within the window, their rate, and the latency from writing the
//! request to reading the whole answer of those started within it; `late` counts paced
//! requests of the window sent more than 5 ms after their time (every connection was busy,
//! or this process did not run: that wait is not in their latency; tokio's timer alone makes a
//! request up to about 2 ms late).
//!
//! ```text
//! cargo run --release --example event_load -- --url http://127.0.0.1:9101/slack/events \
//!     --installations /tmp/gw/installations.json --secret S --conns 32 --duration 10
//! ```

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::{header, Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

#[path = "bench_support/event.rs"]
mod event;

#[derive(Parser)]
#[command(about = "Signed event_callback load with a unique event_id per request")]
struct Args {
    /// Where to POST, e.g. http://127.0.0.1:9101/slack/events
    #[arg(long)]
    url: String,
    /// The installations (the harness's JSON format; `bench_seed --export-json`)
    #[arg(long)]
    installations: PathBuf,
    /// slack.signing_secret ("" sends no signature headers)
    #[arg(long, default_value = "")]
    secret: String,
    #[arg(long, default_value_t = 32)]
    conns: usize,
    /// Requests a second in all; 0: closed loop
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seconds measured, after the warm-up
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent but not measured
    #[arg(long, default_value_t = 0.0)]
    warmup: f64,
    /// Send exactly this many requests (closed loop) instead of a timed run
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Seconds a request may take before it counts as a socket error
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// A label for the RESULT line
    #[arg(long, default_value = "run")]
    label: String,
}

struct Target {
    host: String,
    port: u16,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, String> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("{url}: only http:// URLs"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h, p.parse().map_err(|_| format!("{url}: bad port"))?),
        None => (authority, 80),
    };
    Ok(Target {
        host: host.to_owned(),
        port,
        path: path.to_owned(),
    })
}

/// What all connections share (one thread: `Rc`, `Cell`).
struct Shared {
    args: Args,
    target: Target,
    events: event::Events,
    next: Cell<u64>,
    start: Instant,
    /// Measuring starts here (after the warm-up) ...
    from: Instant,
    /// ... and ends here: no request is started after it.
    until: Instant,
    ok_in_window: Cell<u64>,
    err_status: Cell<u64>,
    err_sock: Cell<u64>,
    /// Paced requests of the window sent more than 5 ms after their time.
    late: Cell<u64>,
    latencies: RefCell<Vec<u64>>,
    /// With --count: when the last answer came.
    last_answer: Cell<Option<Instant>>,
}

fn main() -> Result<(), String> {
    let args = Args::parse();
    let target = parse_url(&args.url)?;
    let teams = event::load_teams(&args.installations)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, run(args, target, teams))
}

async fn run(args: Args, target: Target, teams: Vec<String>) -> Result<(), String> {
    let start = Instant::now();
    let (from, until) = if args.count > 0 {
        (start, start + Duration::from_secs(365 * 24 * 3600))
    } else {
        let from = start + Duration::from_secs_f64(args.warmup);
        (from, from + Duration::from_secs_f64(args.duration))
    };
    let conns = args.conns.max(1);
    let shared = Rc::new(Shared {
        events: event::Events::new(teams),
        args,
        target,
        next: Cell::new(0),
        start,
        from,
        until,
        ok_in_window: Cell::new(0),
        err_status: Cell::new(0),
        err_sock: Cell::new(0),
        late: Cell::new(0),
        latencies: RefCell::new(Vec::with_capacity(1 << 20)),
        last_answer: Cell::new(None),
    });
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::task::spawn_local(connection(shared.clone())))
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let s = &shared;
    let (n, secs) = if s.args.count > 0 {
        let end = s.last_answer.get().unwrap_or_else(Instant::now);
        (
            s.ok_in_window.get(),
            end.duration_since(s.start).as_secs_f64(),
        )
    } else {
        (
            s.ok_in_window.get(),
            s.until.duration_since(s.from).as_secs_f64(),
        )
    };
    let summary = event::Summary::of(std::mem::take(&mut *s.latencies.borrow_mut()));
    let rate = n as f64 / secs.max(1e-9);
    eprintln!(
        "{}: {n} answered 2xx in {secs:.2} s = {rate:.0}/s; p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms; {} non-2xx, {} socket errors",
        s.args.label,
        summary.p50 as f64 / 1000.0,
        summary.p99 as f64 / 1000.0,
        summary.max as f64 / 1000.0,
        s.err_status.get(),
        s.err_sock.get()
    );
    println!(
        "RESULT label={} requests={n} secs={secs:.3} rate={rate:.1} {} err_status={} err_sock={} late={}",
        s.args.label,
        summary.fields(),
        s.err_status.get(),
        s.err_sock.get(),
        s.late.get()
    );
    Ok(())
}

/// The next request's number, or None when the run is over; with --rate, waits for its time.
async fn next_request(s: &Shared) -> Option<u64> {
    let i = s.next.get();
    if s.args.count > 0 && i >= s.args.count {
        return None;
    }
    if s.args.rate > 0.0 && s.args.count == 0 {
        let at = s.start + Duration::from_secs_f64(i as f64 / s.args.rate);
        // A request due when the run is over is not sent late.
        if at >= s.until || Instant::now() >= s.until {
            return None;
        }
        s.next.set(i + 1);
        tokio::time::sleep_until(at).await;
        if Instant::now().duration_since(at) > Duration::from_millis(5) && at >= s.from {
            s.late.set(s.late.get() + 1);
        }
    } else {
        if Instant::now() >= s.until {
            return None;
        }
        s.next.set(i + 1);
    }
    Some(i)
}

fn request(s: &Shared, i: u64) -> Request<Full<Bytes>> {
    let body = s.events.body(i);
    let mut b = Request::builder()
        .method(Method::POST)
        .uri(s.target.path.as_str())
        .header(header::HOST, format!("{}:{}", s.target.host, s.target.port))
        .header(header::CONTENT_TYPE, "application/json")
        .header(
            header::USER_AGENT,
            "Slackbot 1.0 (+https://api.slack.com/robots)",
        )
        .header(header::ACCEPT, "*/*")
        .header(header::ACCEPT_ENCODING, "gzip,deflate");
    if !s.args.secret.is_empty() {
        let ts = event::unix_now();
        let sig = slack_gateway::slack::signature::sign(&s.args.secret, ts, body.as_bytes());
        b = b
            .header("x-slack-request-timestamp", ts)
            .header("x-slack-signature", sig);
    }
    b.body(Full::new(Bytes::from(body)))
        .expect("a valid request")
}

/// One keep-alive connection, reconnecting after an error, until the run is over.
async fn connection(s: Rc<Shared>) {
    let timeout = Duration::from_secs_f64(s.args.timeout);
    'connect: loop {
        if Instant::now() >= s.until {
            return;
        }
        let tcp = match TcpStream::connect((s.target.host.as_str(), s.target.port)).await {
            Ok(t) => t,
            Err(_) => {
                s.err_sock.set(s.err_sock.get() + 1);
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let Ok((mut sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await
        else {
            s.err_sock.set(s.err_sock.get() + 1);
            continue;
        };
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        loop {
            // A request that failed on a broken connection is not sent again (its event id
            // may have been accepted); the next one is.
            let Some(i) = next_request(&s).await else {
                return;
            };
            let req = request(&s, i);
            if sender.ready().await.is_err() {
                s.err_sock.set(s.err_sock.get() + 1);
                continue 'connect;
            }
            let sent = Instant::now();
            let answer = tokio::time::timeout(timeout, async {
                let resp = sender.send_request(req).await.map_err(|_| ())?;
                let status = resp.status();
                resp.into_body().collect().await.map_err(|_| ())?;
                Ok::<_, ()>(status)
            })
            .await;
            let done = Instant::now();
            match answer {
                Ok(Ok(status)) if status.is_success() => {
                    if s.args.count > 0 || (done >= s.from && done <= s.until) {
                        s.ok_in_window.set(s.ok_in_window.get() + 1);
                    }
                    if sent >= s.from && sent < s.until {
                        s.latencies
                            .borrow_mut()
                            .push(done.duration_since(sent).as_micros() as u64);
                    }
                    s.last_answer.set(Some(done));
                }
                Ok(Ok(_)) => s.err_status.set(s.err_status.get() + 1),
                _ => {
                    s.err_sock.set(s.err_sock.get() + 1);
                    continue 'connect;
                }
            }
        }
    }
}
