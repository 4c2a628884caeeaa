//! A fake Slack Web API that answers at once, for `bench/egress.sh` (see `bench/README.md`).
//!
//! Every `GET` or `POST /api/{method}` is answered 200 with a small JSON body shaped like
//! `chat.postMessage`'s (339 bytes), once the request body has been read. Like Slack, a
//! call without `Authorization: Bearer xox…` is answered 200 `{"ok":false,"error":"not_authed"}`
//! (so a sanity check can tell that a token was added), and any other path 404. Nothing is
//! parsed beyond that: the point is that the fake costs as little as possible, so that a
//! benchmark measures what sits in front of it.
//!
//! ```text
//! cargo run --release --example fake_slack_api      # listens on 127.0.0.1:9060
//! ```
//!
//! Environment: `FAKE_SLACK_ADDR` [127.0.0.1:9060]; `FAKE_SLACK_THREADS` [1]: 1 runs a
//! current-thread runtime, more a multi-thread one with that many workers.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// A realistic `chat.postMessage` answer (Slack's own is a little larger, with `blocks`).
const POSTED: &str = concat!(
    r#"{"ok":true,"channel":"C123","ts":"1700000000.000100","message":{"user":"U0BENCHBOT","#,
    r#""type":"message","ts":"1700000000.000100","bot_id":"B0BENCHBOT","app_id":"A0GATEWAY01","#,
    r#""text":"hello","team":"T000000001","bot_profile":{"id":"B0BENCHBOT","app_id":"A0GATEWAY01","#,
    r#""name":"bench","deleted":false,"updated":1700000000,"team_id":"T000000001"}}}"#
);
const NOT_AUTHED: &str = r#"{"ok":false,"error":"not_authed"}"#;
const UNKNOWN: &str = r#"{"ok":false,"error":"unknown_method"}"#;

fn main() -> std::io::Result<()> {
    let addr: SocketAddr = std::env::var("FAKE_SLACK_ADDR")
        .unwrap_or_else(|_| "127.0.0.1:9060".to_owned())
        .parse()
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let threads: usize = std::env::var("FAKE_SLACK_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1)
        .max(1);
    let rt = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .enable_io()
            .build()?
    };
    rt.block_on(serve(addr))
}

async fn serve(addr: SocketAddr) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("fake Slack Web API listening on {}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let conn = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(answer));
            let _ = conn.await;
        });
    }
}

async fn answer(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let known = req.uri().path().starts_with("/api/")
        && (req.method() == Method::POST || req.method() == Method::GET);
    let authed = req
        .headers()
        .get(header::AUTHORIZATION)
        .is_some_and(|v| v.as_bytes().starts_with(b"Bearer xox"));
    // Read the body to its end, so the connection can take the next request.
    let _ = req.into_body().collect().await;
    let (status, body) = match (known, authed) {
        (false, _) => (StatusCode::NOT_FOUND, UNKNOWN),
        (true, false) => (StatusCode::OK, NOT_AUTHED),
        (true, true) => (StatusCode::OK, POSTED),
    };
    let mut r = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json; charset=utf-8"),
    );
    Ok(r)
}
