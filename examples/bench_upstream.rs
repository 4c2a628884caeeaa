//! A minimal upstream app for `bench/socket_mode.sh` and `bench/queued.sh` (see
//! `bench/README.md`): HTTP/1.1 keep-alive, reads every request's body, optionally waits, then
//! answers 200 `{"ok":true}` (JSON). Like the harness's upstream, it costs as little as it can,
//! so that a benchmark measures what sits in front of it; unlike it, it can be slow on
//! purpose and counts what it served.
//!
//! ```text
//! cargo run --release --example bench_upstream     # listens on 127.0.0.1:9070
//! ```
//!
//! Environment: `BENCH_UPSTREAM_ADDR` [127.0.0.1:9070]; `BENCH_UPSTREAM_DELAY_MS` [0]: each
//! answer waits this long (a slow app; the waits overlap, as an async app's would);
//! `BENCH_UPSTREAM_THREADS` [1]: 1 runs a current-thread runtime, more a multi-thread one.
//!
//! `GET /__stats` answers `{"requests":N,"deliveries":N,"with_token":N}` (not counted itself):
//! the requests served, those carrying `X-Gateway-Delivery-Attempt` (queued deliveries), and
//! those carrying `X-Slack-Bot-Token` (the gateway injected the installation's token).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

static REQUESTS: AtomicU64 = AtomicU64::new(0);
static DELIVERIES: AtomicU64 = AtomicU64::new(0);
static WITH_TOKEN: AtomicU64 = AtomicU64::new(0);

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::var("BENCH_UPSTREAM_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9070".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let delay = Duration::from_millis(
        std::env::var("BENCH_UPSTREAM_DELAY_MS")
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0),
    );
    let threads: usize = std::env::var("BENCH_UPSTREAM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_all()
            .build()?
    };
    rt.block_on(serve(addr, delay))
}

async fn serve(addr: SocketAddr, delay: Duration) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!(
        "bench upstream listening on {} (delay {delay:?})",
        listener.local_addr()?
    );
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(
                    TokioIo::new(stream),
                    service_fn(move |req| answer(req, delay)),
                );
            let _ = conn.await;
        });
    }
}

fn json(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

async fn answer(
    req: Request<Incoming>,
    delay: Duration,
) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.method() == Method::GET && req.uri().path() == "/__stats" {
        let body = format!(
            r#"{{"requests":{},"deliveries":{},"with_token":{}}}"#,
            REQUESTS.load(Ordering::Relaxed),
            DELIVERIES.load(Ordering::Relaxed),
            WITH_TOKEN.load(Ordering::Relaxed)
        );
        return Ok(json(StatusCode::OK, Bytes::from(body)));
    }
    let delivery = req.headers().contains_key("x-gateway-delivery-attempt");
    let token = req.headers().contains_key("x-slack-bot-token");
    // Read the body to its end, as an app would.
    let _ = req.into_body().collect().await;
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    REQUESTS.fetch_add(1, Ordering::Relaxed);
    if delivery {
        DELIVERIES.fetch_add(1, Ordering::Relaxed);
    }
    if token {
        WITH_TOKEN.fetch_add(1, Ordering::Relaxed);
    }
    Ok(json(StatusCode::OK, Bytes::from_static(b"{\"ok\":true}")))
}
