//! TLS on the public listener: certificates generated at test time, swapped live.

mod support;

use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::{CertificateDer, ServerName};
use support::fake_slack::FakeSlack;
use support::oauth_harness::{Harness, CLIENT_ID, CLIENT_SECRET};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Pair {
    cert_pem: String,
    key_pem: String,
    der: CertificateDer<'static>,
}

fn pair() -> Pair {
    let ck =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    Pair {
        cert_pem: ck.cert.pem(),
        key_pem: ck.signing_key.serialize_pem(),
        der: ck.cert.der().clone(),
    }
}

/// A TLS client that trusts `roots` and reports the certificate the server presented.
fn connector(roots: &[&Pair]) -> tokio_rustls::TlsConnector {
    let mut store = rustls::RootCertStore::empty();
    for p in roots {
        store.add(p.der.clone()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(store)
        .with_no_client_auth();
    tokio_rustls::TlsConnector::from(Arc::new(config))
}

type Conn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn connect(h: &Harness, roots: &[&Pair]) -> Conn {
    let tcp = tokio::net::TcpStream::connect(h.public).await.unwrap();
    connector(roots)
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .unwrap()
}

fn presented(c: &Conn) -> CertificateDer<'static> {
    c.get_ref().1.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}

/// One keep-alive GET on an open connection; returns the status line and headers.
async fn get(c: &mut Conn, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n");
    exchange(c, request.as_bytes()).await.0
}

/// Writes `request` on an open connection and reads one response (Content-Length framed):
/// its status line and headers, and its body.
async fn exchange(c: &mut Conn, request: &[u8]) -> (String, Vec<u8>) {
    c.write_all(request).await.unwrap();
    let mut buf = vec![0u8; 16384];
    let mut got = Vec::new();
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
            .await
            .expect("no answer within 10 s")
            .unwrap();
        assert!(n > 0, "connection closed");
        got.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&got);
        if let Some(head_end) = text.find("\r\n\r\n") {
            let head = &text[..head_end];
            let len: usize = head
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if got.len() >= head_end + 4 + len {
                return (
                    head.to_owned(),
                    got[head_end + 4..head_end + 4 + len].to_vec(),
                );
            }
        }
    }
}

async fn start(dir: &std::path::Path, p: &Pair) -> Harness {
    std::fs::write(dir.join("cert.pem"), &p.cert_pem).unwrap();
    std::fs::write(dir.join("key.pem"), &p.key_pem).unwrap();
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    Harness::start_full(
        slack,
        &format!(
            "tls = {{ cert = \"{}\", key = \"{}\" }}",
            dir.join("cert.pem").display(),
            dir.join("key.pem").display()
        ),
        "",
        "",
    )
    .await
}

async fn wait_for_cert(h: &Harness, roots: &[&Pair], want: &CertificateDer<'static>) -> bool {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while std::time::Instant::now() < deadline {
        if &presented(&connect(h, roots).await) == want {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test]
async fn https_serves_with_secure_cookies() {
    let dir = tempfile::tempdir().unwrap();
    let a = pair();
    let h = start(dir.path(), &a).await;
    let mut c = connect(&h, &[&a]).await;
    assert_eq!(presented(&c), a.der);
    let head = get(&mut c, "/slack/install").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(
        head.to_ascii_lowercase().contains("; secure"),
        "https public_url sets Secure: {head}"
    );
}

#[tokio::test]
async fn a_new_certificate_reaches_new_connections_and_old_ones_keep_working() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(), pair());
    let h = start(dir.path(), &a).await;
    let mut old = connect(&h, &[&a, &b]).await;
    assert_eq!(presented(&old), a.der);
    assert!(get(&mut old, "/slack/install")
        .await
        .starts_with("HTTP/1.1 200"));

    // Renewal: key first, then certificate (in between the pair does not match).
    std::fs::write(dir.path().join("key.pem"), &b.key_pem).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &b.cert_pem).unwrap();
    assert!(
        wait_for_cert(&h, &[&a, &b], &b.der).await,
        "new connections get the new certificate"
    );
    assert!(
        get(&mut old, "/slack/install")
            .await
            .starts_with("HTTP/1.1 200"),
        "the connection opened before the swap still works"
    );
}

#[tokio::test]
async fn a_mismatched_or_half_written_pair_keeps_the_old_one_serving() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(), pair());
    let h = start(dir.path(), &a).await;
    // A certificate whose key is not the one in key.pem.
    std::fs::write(dir.path().join("cert.pem"), &b.cert_pem).unwrap();
    h.wait_for_metric(
        "slack_gateway_config_reloads_total{result=\"failure\"}",
        1.0,
        "the refused pair was not counted",
    )
    .await;
    assert_eq!(
        presented(&connect(&h, &[&a, &b]).await),
        a.der,
        "old pair still served"
    );
    // Half a certificate file.
    std::fs::write(
        dir.path().join("cert.pem"),
        &b.cert_pem[..b.cert_pem.len() / 2],
    )
    .unwrap();
    h.wait_for_metric(
        "slack_gateway_config_reloads_total{result=\"failure\"}",
        2.0,
        "the half-written file was not refused",
    )
    .await;
    assert_eq!(presented(&connect(&h, &[&a, &b]).await), a.der);
    // Completing the renewal is picked up.
    std::fs::write(dir.path().join("key.pem"), &b.key_pem).unwrap();
    std::fs::write(dir.path().join("cert.pem"), &b.cert_pem).unwrap();
    assert!(wait_for_cert(&h, &[&a, &b], &b.der).await);
}

#[test]
fn a_bad_pair_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (pair(), pair());
    std::fs::write(dir.path().join("cert.pem"), &a.cert_pem).unwrap();
    std::fs::write(dir.path().join("key.pem"), &b.key_pem).unwrap();
    let tls = slack_gateway::config::TlsConfig {
        cert: dir.path().join("cert.pem"),
        key: dir.path().join("key.pem"),
    };
    let e = slack_gateway::tls::load_certified_key(&tls)
        .unwrap_err()
        .to_string();
    assert!(e.contains("do not belong together"), "{e}");
    let missing = slack_gateway::config::TlsConfig {
        cert: dir.path().join("nope.pem"),
        key: dir.path().join("key.pem"),
    };
    let e = slack_gateway::tls::load_certified_key(&missing)
        .unwrap_err()
        .to_string();
    assert!(e.contains("nope.pem"), "{e}");
}

#[tokio::test]
async fn slack_requests_over_tls_take_the_fast_lane_and_hand_over_to_hyper() {
    let dir = tempfile::tempdir().unwrap();
    let p = pair();
    let h = start(dir.path(), &p).await;
    let mut c = connect(&h, &[&p]).await;
    let post = |body: &str, signature: Option<&str>| {
        let ts = slack_gateway::http::unix_now();
        let sig = signature.map_or_else(
            || {
                slack_gateway::slack::signature::sign(
                    support::oauth_harness::SIGNING_SECRET,
                    ts,
                    body.as_bytes(),
                )
            },
            str::to_owned,
        );
        format!(
            "POST /slack/events HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
             X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {sig}\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    // Distinct bodies: replay protection refuses an exact repeat.
    let event = |n: u32| {
        format!(
            r#"{{"type":"event_callback","team_id":"T0TLS","event_id":"Ev{n}","event":{{"type":"app_mention"}}}}"#
        )
    };
    // Two forwarded requests and a refusal on one TLS connection, served by the lane.
    for n in 0..2 {
        let (head, body) = exchange(&mut c, post(&event(n), None).as_bytes()).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.to_ascii_lowercase().contains("x-upstream:"), "{head}");
        assert_eq!(body, b"-", "no installation: forwarded without a token");
    }
    let bad = format!("v0={}", "0".repeat(64));
    let (head, body) = exchange(&mut c, post(&event(2), Some(&bad)).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    assert!(
        String::from_utf8_lossy(&body).contains("signature"),
        "{head}"
    );
    // Another route on the same connection: hyper takes it over, through TLS, with the bytes
    // the lane had read.
    assert!(get(&mut c, "/healthz").await.starts_with("HTTP/1.1"));
    let head = get(&mut c, "/slack/install").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // And Slack's requests still work there, served by hyper now.
    let (head, _) = exchange(&mut c, post(&event(3), None).as_bytes()).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}
