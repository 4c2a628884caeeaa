//! Defect 3 of issue 16: connections that never read their answers were held forever.
//!
//! A client with a small receive window pipelines requests and never reads. Once the answers
//! fill its window and the gateway's send buffer, every write to it waits; without a write
//! timeout the connection, and its `server.max_connections` slot, was held for as long as the
//! client liked, so a few such clients left Slack's next request unanswered. Each test here
//! fills every slot with such clients and checks that the gateway closes them (the clients'
//! writes fail once it has), on the fast lane, on hyper's path and under TLS, and that a
//! legitimate signed request sent while they held the slots is answered once they are gone.
//!
//! The same defect's other half: with a low open-files limit the cap let in more connections
//! than there were descriptors for, and accepts failed. The binary raises its soft limit to
//! the hard one and lowers the cap to what fits.

mod support;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use slack_gateway::store::contract::workspace_install;
use support::binary::{write_config, Running, BIN};
use support::{FakeUpstream, Reply, TestGateway, SIGNING_SECRET};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;

/// Connections each listener serves at once in these tests: all taken by stalled clients.
const SLOTS: usize = 2;
/// Generous: the gateway lets a stalled client go after `server.write_timeout` (1 s here),
/// once its buffers are full; a loaded machine may take a while to fill them.
const LET_GO_WITHIN: Duration = Duration::from_secs(20);
/// Each answer is this large, so that a few dozen fill the socket buffers (the gateway's send
/// buffer grows to a few MB on loopback).
const ANSWER_BYTES: usize = 64 * 1024;
/// Requests written per batch; a stalled client writes batches until its writes fail.
const BATCH: usize = 32;

struct Setup {
    upstream: FakeUpstream,
    gw: TestGateway,
}

/// A gateway with `SLOTS` connections per listener and a 1 s write timeout, in front of an
/// upstream giving large answers; `server_extra` is added to `[server]`.
async fn start(server_extra: &str) -> Setup {
    let upstream = FakeUpstream::start_with(Reply {
        body: Bytes::from(vec![b'x'; ANSWER_BYTES]),
        ..Reply::default()
    })
    .await;
    // Replay protection off: a stalled client sends the same signed request over and over
    // (each would otherwise be refused with a short 401 after the first).
    let gw = TestGateway::builder(upstream.url())
        .seed(workspace_install("T1", "U0INSTALLER", "xoxb-stall-token"))
        .toml(&format!(
            "[server]\nwrite_timeout = \"1s\"\nmax_connections = {SLOTS}\n\
             replay_protection = false\n{server_extra}\n"
        ))
        .start()
        .await;
    Setup { upstream, gw }
}

/// A signed event's body.
fn event() -> String {
    r#"{"type":"event_callback","team_id":"T1","event":{"type":"app_mention","user":"U1"}}"#
        .to_owned()
}

/// `BATCH` signed POSTs with a `Content-Length` body: the fast lane's requests.
fn lane_batch() -> Vec<u8> {
    let body = event();
    let (ts, sig) = support::sign_now(SIGNING_SECRET, body.as_bytes());
    let one = format!(
        "POST /slack/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\n\
         Content-Length: {}\r\n\r\n{body}",
        body.len()
    );
    one.repeat(BATCH).into_bytes()
}

/// `BATCH` signed POSTs with a chunked body: hyper serves them.
fn hyper_batch() -> Vec<u8> {
    let body = event();
    let (ts, sig) = support::sign_now(SIGNING_SECRET, body.as_bytes());
    let one = format!(
        "POST /slack/events HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\n\
         Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{body}\r\n0\r\n\r\n",
        body.len()
    );
    one.repeat(BATCH).into_bytes()
}

/// A connection to `addr` with a 4 KiB receive buffer, set before connecting so the window
/// it offers is small from the start.
async fn small_window(addr: SocketAddr) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Writes `batch` on `s` over and over and never reads, until the gateway closes the
/// connection: the write error, and when it came.
fn stall<S>(mut s: S, batch: Vec<u8>) -> JoinHandle<(io::Error, Instant)>
where
    S: AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        loop {
            if let Err(e) = s.write_all(&batch).await {
                return (e, Instant::now());
            }
        }
    })
}

/// Waits until the upstream has had requests on `n` connections: then the gateway is serving
/// `n` client connections (each has its own upstream connection).
async fn wait_for_served(upstream: &FakeUpstream, n: usize) {
    let deadline = Instant::now() + LET_GO_WITHIN;
    loop {
        let mut peers: Vec<SocketAddr> = upstream.requests().iter().map(|r| r.peer).collect();
        peers.sort();
        peers.dedup();
        if peers.len() >= n {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the stalled clients were not served"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// With every slot held by `stallers`: a legitimate signed request, sent by `legit` (its
/// status and body length) while they hold the slots, is answered once the gateway has let
/// them go, and each of them was let go in time.
async fn stalled_clients_are_let_go<F>(
    s: &Setup,
    stallers: Vec<JoinHandle<(io::Error, Instant)>>,
    legit: F,
) where
    F: std::future::Future<Output = (u16, usize)> + Send + 'static,
{
    wait_for_served(&s.upstream, SLOTS).await;
    let sent = Instant::now();
    let legit = tokio::spawn(legit);
    for staller in stallers {
        let (e, at) = tokio::time::timeout(LET_GO_WITHIN, staller)
            .await
            .expect("a client that never reads still holds its connection")
            .unwrap();
        // Reset (the gateway closed with the client's requests unread) or closed.
        assert!(
            matches!(
                e.kind(),
                io::ErrorKind::ConnectionReset | io::ErrorKind::BrokenPipe
            ),
            "{e}"
        );
        assert!(at.duration_since(sent) < LET_GO_WITHIN);
    }
    let (status, len) = tokio::time::timeout(LET_GO_WITHIN, legit)
        .await
        .expect("Slack's request got no answer")
        .unwrap();
    assert_eq!((status, len), (200, ANSWER_BYTES));
}

/// A signed event sent as Slack sends it, on a connection of its own.
async fn slack_event(gw: &TestGateway) -> impl std::future::Future<Output = (u16, usize)> {
    let post = gw.post(event());
    async move {
        let answer = post.send().await;
        (answer.status, answer.body.len())
    }
}

#[tokio::test]
async fn clients_that_never_read_are_closed_on_the_fast_lane() {
    let s = start("").await;
    let mut stallers = Vec::new();
    for _ in 0..SLOTS {
        stallers.push(stall(small_window(s.gw.public).await, lane_batch()));
    }
    stalled_clients_are_let_go(&s, stallers, slack_event(&s.gw).await).await;
}

#[tokio::test]
async fn clients_that_never_read_are_closed_on_hypers_path() {
    let s = start("").await;
    let mut stallers = Vec::new();
    for _ in 0..SLOTS {
        stallers.push(stall(small_window(s.gw.public).await, hyper_batch()));
    }
    stalled_clients_are_let_go(&s, stallers, slack_event(&s.gw).await).await;
}

/// The write timeout sits under TLS: the TLS layer's writes are bounded too.
#[tokio::test]
async fn clients_that_never_read_are_closed_under_tls() {
    let dir = tempfile::tempdir().unwrap();
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    let s = start(&format!(
        "tls = {{ cert = \"{}\", key = \"{}\" }}",
        cert.display(),
        key.display()
    ))
    .await;
    let connector = tls_connector(ck.cert.der().clone());
    let mut stallers = Vec::new();
    // One on the lane, one on hyper's path.
    for batch in [lane_batch(), hyper_batch()] {
        let tcp = small_window(s.gw.public).await;
        let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.unwrap();
        stallers.push(stall(tls, batch));
    }
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_der(ck.cert.der()).unwrap())
        .no_proxy()
        .build()
        .unwrap();
    let body = event();
    let (ts, sig) = support::sign_now(SIGNING_SECRET, body.as_bytes());
    let legit = client
        .post(format!(
            "https://127.0.0.1:{}/slack/events",
            s.gw.public.port()
        ))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send();
    stalled_clients_are_let_go(&s, stallers, async move {
        let answer = legit.await.unwrap();
        let status = answer.status().as_u16();
        (status, answer.bytes().await.unwrap().len())
    })
    .await;
}

/// A TLS client trusting only `cert`.
fn tls_connector(cert: rustls::pki_types::CertificateDer<'static>) -> tokio_rustls::TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

// --- Open files ---------------------------------------------------------------------------
// The cap on connections is only a defence while every connection it lets in can get a file
// descriptor (and its upstream connection one more): past the open-files limit, accepts fail.

/// The open-files limits `(soft, hard)` in a `/proc/PID/limits` text.
fn open_files_limits(limits: &str) -> (u64, u64) {
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a Max open files line");
    let mut numbers = line
        .split_whitespace()
        .filter_map(|w| w.parse::<u64>().ok());
    (numbers.next().unwrap(), numbers.next().unwrap())
}

/// Starts the real binary on `config` with `ulimit` applied first (`-Sn 256`, say).
fn start_under_ulimit(ulimit: &str, config: &std::path::Path, dir: &std::path::Path) -> Running {
    let mut command = std::process::Command::new("bash");
    command
        .arg("-c")
        .arg(format!("ulimit {ulimit} && exec \"$0\" --config \"$1\""))
        .arg(BIN)
        .arg(config);
    Running::spawn(command, dir)
}

#[tokio::test]
async fn the_soft_open_files_limit_is_raised_to_the_hard_one() {
    let (_, hard) = open_files_limits(&std::fs::read_to_string("/proc/self/limits").unwrap());
    assert!(
        hard > 256,
        "this test needs a hard open-files limit over 256"
    );
    let dir = tempfile::tempdir().unwrap();
    let (config, _, admin) =
        write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let gw = start_under_ulimit("-Sn 256", &config, dir.path());
    gw.wait_ready(admin).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", gw.child.id())).unwrap();
    assert_eq!(open_files_limits(&limits), (hard, hard), "{limits}");
}

#[tokio::test]
async fn max_connections_beyond_the_open_files_limit_is_lowered_with_a_warning() {
    // 140 descriptors: 128 kept for the rest, 3 per connection, so 4 connections per listener
    // (the default server.max_connections is 10000).
    let dir = tempfile::tempdir().unwrap();
    let (config, public, admin) =
        write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let gw = start_under_ulimit("-n 140", &config, dir.path());
    gw.wait_ready(admin).await;
    let log = gw.stderr();
    assert!(
        log.contains("server.max_connections = 10000")
            && log.contains("open-files limit of 140")
            && log.contains("lowered to 4 connections per listener"),
        "{log}"
    );
    // The lower cap is the one applied: four connections, served and kept open, hold every
    // slot, and a fifth waits until one of them closes.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(("127.0.0.1", public)).await.unwrap();
        s.write_all(b"GET /slack/install HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let answer = support::read_answer(&mut s).await.expect("served");
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        held.push(s);
    }
    let install = format!("http://127.0.0.1:{public}/slack/install");
    let fifth = tokio::time::timeout(Duration::from_millis(500), support::get(&install)).await;
    assert!(
        fifth.is_err(),
        "a fifth connection was served beyond the cap"
    );
    held.pop();
    let fifth = tokio::time::timeout(LET_GO_WITHIN, support::get(&install))
        .await
        .expect("served once a slot is free");
    assert_eq!(fifth.status, 200);
}

#[test]
fn check_warns_when_max_connections_does_not_fit_the_open_files_limit() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let check = |ulimit: &str| {
        let out = std::process::Command::new("bash")
            .arg("-c")
            .arg(format!(
                "ulimit {ulimit} && exec \"$0\" check --config \"$1\""
            ))
            .arg(BIN)
            .arg(&config)
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stderr).unwrap()
    };
    let stderr = check("-n 140");
    assert!(
        stderr.contains(
            "warning: server.max_connections = 10000 does not fit in the open-files limit of 140"
        ) && stderr.contains("lowered to 4 connections per listener"),
        "{stderr}"
    );
    // A hard limit with room for the cap: no warning.
    let (_, hard) = open_files_limits(&std::fs::read_to_string("/proc/self/limits").unwrap());
    if hard >= 30_128 {
        assert!(!check("-Sn 256").contains("max_connections"));
    }
}
