//! Threats to the request path, grouped by threat; each group ends with a legitimate request
//! that must still work.

mod support;

use std::time::Duration;

use slack_gateway::slack::signature::sign;
use support::fake_slack::FakeSlack;
use support::oauth_harness::{Harness, CLIENT_ID, CLIENT_SECRET, SIGNING_SECRET};
use support::{closed_within, read_answer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn start(server_extra: &str) -> Harness {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    Harness::start_full(slack, server_extra, "", "").await
}

fn signed(h: &Harness, body: &str, ts: u64) -> reqwest::RequestBuilder {
    reqwest::Client::new()
        .post(format!("{}/slack/events", h.public_url()))
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            sign(SIGNING_SECRET, ts, body.as_bytes()),
        )
        .body(body.to_owned())
}

// --- Replayed requests -------------------------------------------------------------------

#[tokio::test]
async fn an_exact_replay_of_a_slash_command_is_refused() {
    let h = start("").await;
    let body = "team_id=T1&user_id=U1&command=%2Fdeploy&text=prod";
    let ts = slack_gateway::http::unix_now();
    assert_eq!(signed(&h, body, ts).send().await.unwrap().status(), 200);
    let r = signed(&h, body, ts).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.text().await.unwrap().contains("replayed_request"));
    assert!(
        h.metric("slack_gateway_signature_failures_total{reason=\"replayed_request\"}")
            .await
            >= 1.0
    );
    // The same command sent again by Slack (new timestamp, new signature) is a new request.
    assert_eq!(signed(&h, body, ts + 1).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn events_api_retries_pass_with_their_retry_headers() {
    let h = start("").await;
    let body = r#"{"type":"event_callback","team_id":"T1","event_id":"Ev1","event":{"type":"app_mention","user":"U1"}}"#;
    let ts = slack_gateway::http::unix_now();
    let first = signed(&h, body, ts)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let retry = signed(&h, body, ts + 2)
        .header("content-type", "application/json")
        .header("x-slack-retry-num", "1")
        .header("x-slack-retry-reason", "http_timeout")
        .send()
        .await
        .unwrap();
    assert_eq!(
        retry.status(),
        200,
        "same event_id, new signature: a retry, not a replay"
    );
}

#[tokio::test]
async fn replay_protection_can_be_switched_off_for_load_tests() {
    let h = start("replay_protection = false").await;
    let body = "team_id=T1&user_id=U1&command=%2Fx";
    let ts = slack_gateway::http::unix_now();
    for _ in 0..3 {
        assert_eq!(signed(&h, body, ts).send().await.unwrap().status(), 200);
    }
}

// --- Slowloris and oversized heads ----------------------------------------------------------

#[tokio::test]
async fn a_client_that_never_finishes_its_headers_is_cut_off() {
    let h = start("header_read_timeout = \"300ms\"").await;
    let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
    s.write_all(b"POST /slack/events HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(
        closed,
        "connection still open after the header read timeout"
    );
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 408"),
        "{answer}"
    );
    assert_eq!(h.signed_event_status("T1").await, (200, true));
}

/// A signed event's head and body, the body split where the test pauses.
/// Each call signs a new body, so none is taken for a replay of another.
fn event_parts(chunked: bool) -> (String, String, String) {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let body = format!(
        r#"{{"type":"event_callback","team_id":"T1","event_id":"EvSlow{n}","event":{{"type":"app_mention"}}}}"#
    );
    let body = body.as_str();
    let ts = slack_gateway::http::unix_now();
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", body.len())
    };
    let head = format!(
        "POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         X-Slack-Request-Timestamp: {ts}\r\nX-Slack-Signature: {}\r\n{framing}\r\n\r\n",
        sign(SIGNING_SECRET, ts, body.as_bytes())
    );
    let (first, rest) = body.split_at(20);
    if chunked {
        (
            head,
            format!("{:x}\r\n{first}\r\n", first.len()),
            format!("{:x}\r\n{rest}\r\n0\r\n\r\n", rest.len()),
        )
    } else {
        (head, first.to_owned(), rest.to_owned())
    }
}

#[tokio::test]
async fn a_client_that_never_finishes_its_body_gets_408_and_is_cut_off() {
    let h = start("body_read_timeout = \"400ms\"").await;
    // A plain Content-Length body (the fast lane's) and a chunked one (hyper's).
    for chunked in [false, true] {
        let (head, first, _) = event_parts(chunked);
        let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
        s.write_all(format!("{head}{first}").as_bytes())
            .await
            .unwrap();
        let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
        assert!(
            closed,
            "chunked={chunked}: still open after the body read timeout"
        );
        assert!(
            answer.starts_with("HTTP/1.1 408"),
            "chunked={chunked}: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "chunked={chunked}: {answer}"
        );
        assert!(
            answer.contains("request body not received within 400ms"),
            "{answer}"
        );
        assert!(!answer.contains("x-upstream"), "forwarded: {answer}");
    }
    assert!(
        h.metric("slack_gateway_requests_total{route=\"slack\",status=\"408\"}")
            .await
            >= 2.0
    );
    assert_eq!(h.signed_event_status("T1").await, (200, true));
}

#[tokio::test]
async fn a_body_that_arrives_in_pieces_within_the_timeout_is_forwarded() {
    let h = start("body_read_timeout = \"2s\"").await;
    for chunked in [false, true] {
        let (head, first, rest) = event_parts(chunked);
        let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
        s.write_all(format!("{head}{first}").as_bytes())
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(150)).await;
        s.write_all(rest.as_bytes()).await.unwrap();
        let answer = read_answer(&mut s).await.expect("no answer");
        assert!(
            answer.starts_with("HTTP/1.1 200"),
            "chunked={chunked}: {answer}"
        );
        assert!(answer.contains("x-upstream"), "not forwarded: {answer}");
    }
}

#[tokio::test]
async fn a_client_that_writes_a_whole_oversized_body_before_reading_still_gets_413() {
    let h = start("max_body_bytes = 4096").await;
    let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
    let len = 8 << 20;
    s.write_all(
        format!(
            "POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {len}\r\n\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // Closed under a client still writing, the connection would be reset and the answer
    // lost: the gateway reads the rest first.
    s.write_all(&vec![b'a'; len])
        .await
        .expect("the body is read, not reset");
    let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(closed);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );
    assert_eq!(h.signed_event_status("T1").await, (200, true));
}

/// A chunked body (hyper's path) over `server.max_body_bytes` gets 413 and the connection
/// closes, as the README says (it used to stay open): the client reads the answer, then the
/// end of the stream. A client that writes a whole chunked body of several MB before reading
/// still gets the answer: what it sends is read and dropped first, not reset under it. The
/// same on hyper's path for a declared length (an HTTP/1.0 request), and a client waiting for
/// `100 Continue` gets the 413 instead, without being asked for the body.
#[tokio::test]
async fn an_oversized_chunked_body_gets_413_and_the_connection_closes() {
    let h = start("max_body_bytes = 4096").await;
    // Signature headers that may verify (a request without them is refused from its head).
    let signature = format!(
        "X-Slack-Request-Timestamp: {}\r\nX-Slack-Signature: v0={}\r\n",
        slack_gateway::http::unix_now(),
        "ab".repeat(32)
    );
    let head = |line: &str, framing: &str| {
        format!(
            "POST /slack/events {line}\r\nHost: x\r\nContent-Type: application/json\r\n\
             {signature}{framing}\r\n"
        )
    };
    let chunked = |total: usize| {
        let chunk = format!("{:x}\r\n{}\r\n", 1024, "a".repeat(1024));
        chunk.repeat(total / 1024) + "0\r\n\r\n"
    };
    let big = 8 << 20;
    let chunked_head = head("HTTP/1.1", "Transfer-Encoding: chunked\r\n");
    let cases = [
        (
            "a small chunked body",
            chunked_head.clone(),
            chunked(8 << 10),
        ),
        ("an 8 MB chunked body", chunked_head, chunked(big)),
        (
            "an 8 MB HTTP/1.0 body",
            head("HTTP/1.0", &format!("Content-Length: {big}\r\n")),
            "a".repeat(big),
        ),
        (
            "an 8 MB body after Expect",
            head(
                "HTTP/1.1",
                &format!("Content-Length: {big}\r\nExpect: 100-continue\r\n"),
            ),
            String::new(),
        ),
    ];
    for (case, head, body) in cases {
        let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
        s.write_all(head.as_bytes()).await.unwrap();
        s.write_all(body.as_bytes())
            .await
            .expect("the body is read, not reset");
        let (closed, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
        // An HTTP/1.0 request is answered in HTTP/1.0.
        assert!(
            answer.starts_with("HTTP/1.") && answer[8..].starts_with(" 413 "),
            "{case}: {answer}"
        );
        assert!(
            answer.to_ascii_lowercase().contains("connection: close"),
            "{case}: {answer}"
        );
        assert!(closed, "{case}: the connection stays open after the 413");
    }
    assert_eq!(h.signed_event_status("T1").await, (200, true));
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431() {
    let h = start("max_headers = 20").await;
    let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
    let mut req = String::from("GET /slack/install HTTP/1.1\r\nHost: x\r\n");
    for i in 0..40 {
        req.push_str(&format!("X-Many-{i}: v\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
    let big = "a".repeat(100 * 1024);
    let _ = s
        .write_all(
            format!("GET /slack/install HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(
        answer.starts_with("HTTP/1.1 431"),
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(h.get("/slack/install", None).await.status(), 200);
}

// --- Connection exhaustion ------------------------------------------------------------------

#[tokio::test]
async fn connections_beyond_the_cap_wait_for_a_free_slot() {
    let h = start("max_connections = 2").await;
    let mut a = tokio::net::TcpStream::connect(h.public).await.unwrap();
    let _b = tokio::net::TcpStream::connect(h.public).await.unwrap();
    // Make sure both are being served (the accept loop has taken them).
    a.write_all(b"GET /slack/install HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let n = a.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let third =
        tokio::time::timeout(Duration::from_millis(400), h.get("/slack/install", None)).await;
    assert!(
        third.is_err(),
        "a third connection was served beyond max_connections"
    );
    drop(a);
    let third = tokio::time::timeout(Duration::from_secs(5), h.get("/slack/install", None)).await;
    assert_eq!(third.expect("served once a slot is free").status(), 200);
}

// --- Bodies that can never verify, and the memory of bodies in flight ----------------------

/// A head declaring a 1 MiB body with `headers` (signature headers or none), framed by
/// Content-Length (the lane) or chunked (hyper's path), sent without its body.
fn big_head(headers: &str, chunked: bool) -> String {
    let framing = if chunked {
        "Transfer-Encoding: chunked".to_owned()
    } else {
        format!("Content-Length: {}", 1 << 20)
    };
    format!(
        "POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         {headers}{framing}\r\n\r\n"
    )
}

#[tokio::test]
async fn heads_that_can_never_verify_are_refused_before_their_body() {
    // A body read timeout far beyond the test's wait: only a refusal from the head answers.
    let h = start("body_read_timeout = \"60s\"").await;
    let now = slack_gateway::http::unix_now();
    let fake = format!("v0={}", "ab".repeat(32));
    for (case, headers, reason) in [
        ("no signature headers", String::new(), "missing_timestamp"),
        (
            "stale timestamp",
            format!(
                "X-Slack-Request-Timestamp: {}\r\nX-Slack-Signature: {fake}\r\n",
                now - 3600
            ),
            "stale_timestamp",
        ),
        (
            "malformed timestamp",
            format!("X-Slack-Request-Timestamp: 1e9\r\nX-Slack-Signature: {fake}\r\n"),
            "invalid_timestamp",
        ),
        (
            "malformed signature",
            format!("X-Slack-Request-Timestamp: {now}\r\nX-Slack-Signature: v1=zz\r\n"),
            "malformed_signature",
        ),
    ] {
        for chunked in [false, true] {
            let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
            s.write_all(big_head(&headers, chunked).as_bytes())
                .await
                .unwrap();
            // Answered at once, though no byte of the body was sent.
            let answer = tokio::time::timeout(Duration::from_secs(5), read_answer(&mut s))
                .await
                .ok()
                .flatten()
                .unwrap_or_default();
            assert!(
                answer.starts_with("HTTP/1.1 401"),
                "{case}, chunked={chunked}: {answer}"
            );
            assert!(answer.contains(reason), "{case}: {answer}");
            assert!(
                answer.to_ascii_lowercase().contains("connection: close"),
                "{case}: {answer}"
            );
            // The body is read and dropped, not kept: the connection closes once it ends
            // (or the body read timeout passes).
            if chunked {
                s.write_all(b"0\r\n\r\n").await.unwrap();
            }
            let (closed, _) = closed_within(&mut s, Duration::from_secs(5)).await;
            assert!(
                closed,
                "{case}, chunked={chunked}: the connection stays open"
            );
        }
    }
    // Slack's unsigned ssl_check (a small form) is still answered, on both paths.
    let ssl_check = "ssl_check=1&token=x";
    for framing in [
        format!("Content-Length: {}\r\n\r\n{ssl_check}", ssl_check.len()),
        format!(
            "Transfer-Encoding: chunked\r\n\r\n{:x}\r\n{ssl_check}\r\n0\r\n\r\n",
            ssl_check.len()
        ),
    ] {
        let (status, answer) = support::raw_http(
            h.public,
            format!(
                "POST /slack/events HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\
                 Content-Type: application/x-www-form-urlencoded\r\n{framing}"
            )
            .as_bytes(),
        )
        .await;
        assert_eq!(status, 200, "{answer}");
        assert!(
            !answer.contains("x-upstream"),
            "ssl_check forwarded: {answer}"
        );
    }
    // An unsigned form too large to be an ssl_check is refused from its head as well.
    let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
    s.write_all(
        b"POST /slack/events HTTP/1.1\r\nHost: x\r\n\
          Content-Type: application/x-www-form-urlencoded\r\nContent-Length: 100000\r\n\r\n",
    )
    .await
    .unwrap();
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 401"), "{answer}");
    assert_eq!(h.signed_event_status("T1").await, (200, true));
}

#[tokio::test]
async fn request_bodies_in_flight_are_bounded_together() {
    let h = start(
        "body_read_timeout = \"60s\"\nmax_body_bytes = 40000\nmax_body_bytes_in_flight = 100000",
    )
    .await;
    let now = slack_gateway::http::unix_now();
    let headers = format!(
        "X-Slack-Request-Timestamp: {now}\r\nX-Slack-Signature: v0={}\r\n",
        "cd".repeat(32)
    );
    let head = |len: usize| {
        format!(
            "POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             {headers}Content-Length: {len}\r\n\r\n{{"
        )
    };
    // A head alone holds nothing of the budget, whatever length it declares: heads that
    // declare the whole of it (fake signature headers are free) do not keep a signed request
    // out.
    let mut heads_only = Vec::new();
    for len in [40_000, 40_000, 20_000] {
        let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
        s.write_all(head(len).as_bytes()).await.unwrap();
        heads_only.push(s);
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(h.signed_event_status("T1").await, (200, true));
    // Two slow bodies with 39,000 of their 40,000 bytes sent hold 78,000 of the 100,000.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
        s.write_all(format!("{}{}", head(40_000), "x".repeat(38_999)).as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    // Once both are in, a third body of that size is refused (on the lane; hyper's path
    // below).
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let answer = loop {
        let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
        s.write_all(format!("{}{}", head(40_000), "x".repeat(38_999)).as_bytes())
            .await
            .unwrap();
        let (_, answer) = closed_within(&mut s, Duration::from_millis(500)).await;
        if !answer.is_empty() || std::time::Instant::now() > deadline {
            break answer;
        }
    };
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(
        answer.to_ascii_lowercase().contains("retry-after: 1"),
        "{answer}"
    );
    let chunked = format!(
        "POST /slack/events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         {headers}Transfer-Encoding: chunked\r\n\r\n7530\r\n{}",
        "x".repeat(30_000)
    );
    let mut s = tokio::net::TcpStream::connect(h.public).await.unwrap();
    s.write_all(chunked.as_bytes()).await.unwrap();
    let (_, answer) = closed_within(&mut s, Duration::from_secs(5)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "chunked: {answer}");
    // A small signed request still fits beside them, and the budget comes back once the
    // slow clients are gone.
    assert_eq!(h.signed_event_status("T1").await, (200, true));
    drop(held);
    drop(heads_only);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while h.gw.bodies.in_use() > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "budget not given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
