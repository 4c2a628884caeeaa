//! How the gateway talks to the upstream app: each client connection gets its own keep-alive
//! connection upstream, an upstream that closes connections (politely or not) never costs a
//! request or sends one twice, and `upstream.url`'s path and host are honoured, also after a
//! reload.

mod support;

use std::net::SocketAddr;
use std::time::Duration;

use slack_gateway::reload::{reload_if_changed, Outcome};
use slack_gateway::store::contract::workspace_install;
use support::{
    event, gateway_for, raw_upstream_answering, sign_now, FakeUpstream, Reply, Seen, TestGateway,
    EVENTS_PATH, SIGNING_SECRET,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One keep-alive client: every request it sends goes over the same connection.
fn keep_alive_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .http1_only()
        .build()
        .unwrap()
}

/// A signed event for `team` over `client`; returns the response.
async fn post(client: &reqwest::Client, gw: &TestGateway, team: &str) -> reqwest::Response {
    let body = event(team);
    let (ts, sig) = sign_now(SIGNING_SECRET, body.as_bytes());
    client
        .post(gw.url(EVENTS_PATH))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts)
        .header("x-slack-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap()
}

/// [`post`], returning the status.
async fn send(client: &reqwest::Client, gw: &TestGateway, team: &str) -> u16 {
    post(client, gw, team).await.status().as_u16()
}

#[tokio::test]
async fn a_client_connection_reuses_one_upstream_connection_and_clients_do_not_share() {
    let upstream = FakeUpstream::start().await;
    let gw = gateway_for(upstream.url(), "T0CONN1").await;
    let first = keep_alive_client();
    for _ in 0..5 {
        assert_eq!(send(&first, &gw, "T0CONN1").await, 200);
    }
    let peers: Vec<SocketAddr> = upstream.requests().iter().map(|r| r.peer).collect();
    assert_eq!(peers.len(), 5);
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one client connection, one upstream connection: {peers:?}"
    );

    let second = keep_alive_client();
    assert_eq!(send(&second, &gw, "T0CONN1").await, 200);
    assert_ne!(
        upstream.last().peer,
        peers[0],
        "another client connection gets its own upstream connection"
    );
    // The first client's connection is still there and still works.
    assert_eq!(send(&first, &gw, "T0CONN1").await, 200);
    assert_eq!(upstream.last().peer, peers[0]);
    assert!(upstream
        .requests()
        .iter()
        .all(|r| r.header("x-slack-bot-token") == Some("xoxb-conn-token")));
}

#[tokio::test]
async fn an_upstream_answering_connection_close_costs_no_request() {
    let mut reply = Reply::default();
    reply.headers.push(("connection".into(), "close".into()));
    let upstream = FakeUpstream::start_with(reply).await;
    let gw = gateway_for(upstream.url(), "T0CONN2").await;
    let client = keep_alive_client();
    for i in 1..=5 {
        assert_eq!(send(&client, &gw, "T0CONN2").await, 200, "request {i}");
        assert_eq!(
            upstream.count(),
            i,
            "each request reaches the upstream once"
        );
    }
    let peers: Vec<SocketAddr> = upstream.requests().iter().map(|r| r.peer).collect();
    let mut distinct = peers.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        5,
        "a new upstream connection each time: {peers:?}"
    );
}

/// A bare-TCP upstream answering `200 ok` with `Content-Length`. With `drop_after_each`, it
/// closes each connection after one answer without saying so, as an app server whose
/// keep-alive timeout is shorter than the gateway's does; otherwise it keeps connections open
/// and reports when the gateway closes one.
async fn raw_upstream(
    drop_after_each: bool,
) -> (String, tokio::sync::mpsc::UnboundedReceiver<Seen>) {
    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec();
    raw_upstream_answering(vec![ok], drop_after_each).await
}

#[tokio::test]
async fn an_idle_connection_the_upstream_dropped_is_replaced_not_failed() {
    let (url, mut seen) = raw_upstream(true).await;
    let gw = gateway_for(url, "T0CONN3").await;
    let client = keep_alive_client();
    for i in 0..4 {
        assert_eq!(send(&client, &gw, "T0CONN3").await, 200, "request {i}");
        // Give the upstream time to close the connection the gateway keeps.
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    let mut received = Vec::new();
    while let Ok(r) = seen.try_recv() {
        if let Seen::Request(r) = r {
            received.push(r);
        }
    }
    assert_eq!(received.len(), 4, "every request arrived exactly once");
    assert!(received
        .iter()
        .all(|r| r.contains("x-slack-bot-token: xoxb-conn-token")));
}

#[tokio::test]
async fn upstream_url_path_and_host_are_used() {
    let upstream = FakeUpstream::start().await;
    let gw = gateway_for(format!("{}/app/", upstream.url()), "T0CONN4").await;
    let client = keep_alive_client();
    assert_eq!(send(&client, &gw, "T0CONN4").await, 200);
    let r = upstream.single();
    assert_eq!(r.path_and_query, "/app/slack/events");
    assert_eq!(
        r.header("host"),
        Some(upstream.addr.to_string().as_str()),
        "Host names the upstream"
    );
    assert_eq!(
        r.header("x-forwarded-host"),
        Some(gw.public.to_string().as_str()),
        "the client's Host travels as X-Forwarded-Host"
    );
}

#[tokio::test]
async fn a_reloaded_upstream_url_applies_to_open_client_connections() {
    let old = FakeUpstream::start().await;
    let new = FakeUpstream::start().await;
    let gw = gateway_for(old.url(), "T0CONN5").await;
    let client = keep_alive_client();
    assert_eq!(send(&client, &gw, "T0CONN5").await, 200);
    assert_eq!(old.count(), 1);

    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let changed = text.replace(&old.url(), &new.url());
    assert_ne!(text, changed, "the config names the old upstream");
    std::fs::write(&gw.config_path, changed).unwrap();
    // Either the watcher or this call applies it.
    let _ = reload_if_changed(&gw.gw).unwrap();
    assert_eq!(reload_if_changed(&gw.gw).unwrap(), Outcome::Unchanged);

    assert_eq!(send(&client, &gw, "T0CONN5").await, 200);
    assert_eq!(
        new.count(),
        1,
        "the same client connection now reaches the new upstream"
    );
    assert_eq!(old.count(), 1, "and nothing more reaches the old one");
}

#[tokio::test]
async fn an_idle_client_connection_is_closed_and_takes_its_upstream_connection_with_it() {
    let (url, mut seen) = raw_upstream(false).await;
    let gw = TestGateway::builder(url)
        .seed(workspace_install(
            "T0CONN6",
            "U0INSTALLER",
            "xoxb-conn-token",
        ))
        .toml("[server]\nheader_read_timeout = \"300ms\"\n")
        .start()
        .await;
    let body = event("T0CONN6");
    let (ts, sig) = sign_now(SIGNING_SECRET, body.as_bytes());
    let mut client = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let request = format!(
        "POST {EVENTS_PATH} HTTP/1.1\r\nhost: {}\r\ncontent-type: application/json\r\nx-slack-request-timestamp: {ts}\r\nx-slack-signature: {sig}\r\ncontent-length: {}\r\n\r\n{body}",
        gw.public,
        body.len()
    );
    client.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 4096];
    while !answer.ends_with(b"ok") {
        let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
            .await
            .expect("an answer")
            .unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&chunk[..n]);
    }
    assert!(answer.starts_with(b"HTTP/1.1 200"));
    assert!(matches!(seen.recv().await, Some(Seen::Request(_))));

    // Now idle: past server.header_read_timeout the gateway closes the client connection...
    let n = tokio::time::timeout(Duration::from_secs(5), client.read(&mut chunk))
        .await
        .expect("the idle client connection was not closed")
        .unwrap_or(0);
    assert_eq!(n, 0, "nothing more is sent on an idle connection");
    // ...and the upstream connection it held goes with it.
    let closed = tokio::time::timeout(Duration::from_secs(5), seen.recv())
        .await
        .expect("the upstream connection stayed open");
    assert!(matches!(closed, Some(Seen::Closed)), "{closed:?}");
}

#[tokio::test]
async fn an_upstream_connection_idle_past_keepalive_timeout_is_replaced() {
    let upstream = FakeUpstream::start().await;
    let gw = TestGateway::builder(upstream.url())
        .seed(workspace_install(
            "T0CONN7",
            "U0INSTALLER",
            "xoxb-conn-token",
        ))
        .toml("[upstream]\nkeepalive_timeout = \"300ms\"\n")
        .start()
        .await;
    let client = keep_alive_client();
    assert_eq!(send(&client, &gw, "T0CONN7").await, 200);
    // Idle longer than upstream.keepalive_timeout: the app may be closing that connection
    // right now, so the next request goes out on a new one.
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(send(&client, &gw, "T0CONN7").await, 200);
    let all = upstream.requests();
    assert_eq!(all.len(), 2, "each request reached the upstream once");
    assert_ne!(
        all[1].peer, all[0].peer,
        "a fresh upstream connection after idling"
    );
}

#[tokio::test]
async fn response_bodies_of_every_shape_are_relayed_whole_on_one_upstream_connection() {
    let big: Vec<u8> = (0..2 * 1024 * 1024)
        .map(|i| b'a' + (i % 26) as u8)
        .collect();
    let with_length = |status: &str, body: &[u8]| {
        let mut r = format!(
            "HTTP/1.1 {status}\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let answers = vec![
        b"HTTP/1.1 204 No Content\r\n\r\n".to_vec(),
        with_length("200 OK", b""),
        with_length("200 OK", &big),
        b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
            .to_vec(),
        with_length("200 OK", b"ok"),
        with_length("201 Created", &big),
    ];
    let expected: Vec<(u16, &[u8])> = vec![
        (204, b""),
        (200, b""),
        (200, &big),
        (200, b"hello world"),
        (200, b"ok"),
        (201, &big),
    ];
    let (url, mut seen) = raw_upstream_answering(answers, false).await;
    let gw = gateway_for(url, "T0CONN6").await;
    let client = keep_alive_client();
    for (i, (status, body)) in expected.iter().enumerate() {
        let resp = post(&client, &gw, "T0CONN6").await;
        // Answers follow each other on one upstream connection: a new connection would start
        // the upstream's list over and answer 204.
        assert_eq!(resp.status().as_u16(), *status, "response {i}");
        let got = resp.bytes().await.unwrap();
        assert!(
            got == *body,
            "response {i}: {} bytes, not {}",
            got.len(),
            body.len()
        );
    }
    let mut requests = 0;
    while let Ok(s) = seen.try_recv() {
        match s {
            Seen::Request(_) => requests += 1,
            Seen::Closed => panic!("the upstream connection was closed between requests"),
        }
    }
    assert_eq!(requests, expected.len());

    // A client that leaves in the middle of a big response costs nobody anything.
    let event = event("T0CONN6");
    let (ts, sig) = sign_now(SIGNING_SECRET, event.as_bytes());
    let mut raw = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    raw.write_all(
        format!(
            "POST {EVENTS_PATH} HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n\
             x-slack-request-timestamp: {ts}\r\nx-slack-signature: {sig}\r\n\
             content-length: {}\r\n\r\n{event}",
            event.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut some = [0u8; 64];
    let _ = raw.read(&mut some).await.unwrap();
    drop(raw);
    let client = keep_alive_client();
    assert_eq!(send(&client, &gw, "T0CONN6").await, 204);
    assert_eq!(send(&client, &gw, "T0CONN6").await, 200);
}
