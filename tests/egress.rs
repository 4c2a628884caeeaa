//! The Web API egress (SPEC "Web API egress"): the upstream calls Slack through the gateway
//! with the identity headers it received, and the gateway adds the installation's token.
//! "Slack" here is a recording server, so what reaches it can be checked byte for byte.

mod support;

use std::time::Duration;

use bytes::Bytes;
use slack_gateway::store::contract::workspace_install;
use slack_gateway::store::Token;
use support::{FakeUpstream, Reply, TestGateway};

/// A gateway with the egress on a port of its own, Slack's API at `slack`, and `extra` TOML.
async fn gateway(slack: &FakeUpstream, extra: &str) -> TestGateway {
    let upstream = FakeUpstream::start().await;
    let mut user = workspace_install("T1", "U1", "xoxb-t1-bot");
    user.user_token = Some(Token::new("xoxp-t1-u1"));
    TestGateway::builder(upstream.url())
        .toml(&format!(
            "[slack]\napi_url = \"{}/api\"\n[egress]\nenabled = true\nlisten = \"127.0.0.1:0\"\n{extra}",
            slack.url()
        ))
        .seed(user)
        .seed(workspace_install("T2", "U2", "xoxb-t2-bot"))
        .start()
        .await
}

fn egress_url(gw: &TestGateway, path: &str) -> String {
    format!(
        "http://{}{path}",
        gw.gw.egress_addr.get().expect("egress bound")
    )
}

fn slack_reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply {
        status,
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: Bytes::from(body.to_owned()),
        delay: Duration::ZERO,
    }
}

#[tokio::test]
async fn a_call_goes_to_slack_with_the_installations_token_and_comes_back_as_is() {
    let slack = FakeUpstream::start_with(slack_reply(
        200,
        &[
            ("content-type", "application/json; charset=utf-8"),
            ("x-slack-req-id", "r1"),
        ],
        r#"{"ok":true,"channel":"C1","ts":"1.2"}"#,
    ))
    .await;
    let gw = gateway(&slack, "").await;
    let body = "channel=C1&text=hello%20%E2%9C%93&blocks=%5B%5D";
    let r = reqwest::Client::new()
        .post(egress_url(&gw, "/api/chat.postMessage?pretty=1"))
        .header("x-slack-team-id", "T1")
        .header("authorization", "Bearer xoxb-the-callers-own")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-slack-req-id"], "r1");
    assert_eq!(
        r.text().await.unwrap(),
        r#"{"ok":true,"channel":"C1","ts":"1.2"}"#
    );
    let seen = slack.requests();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.path_and_query, "/api/chat.postMessage?pretty=1");
    assert_eq!(s.body, body.as_bytes(), "the body byte for byte");
    assert_eq!(
        s.headers["content-type"],
        "application/x-www-form-urlencoded"
    );
    let auth: Vec<_> = s.headers.get_all("authorization").iter().collect();
    assert_eq!(
        auth,
        ["Bearer xoxb-t1-bot"],
        "the caller's Authorization is replaced"
    );
    assert!(
        s.headers.get("x-slack-team-id").is_none(),
        "identity stays here"
    );

    // JSON bodies and GET with a query go the same way; the user's token on request.
    let r = reqwest::Client::new()
        .post(egress_url(&gw, "/api/search.messages"))
        .header("x-slack-team-id", "T1")
        .header("x-slack-user-id", "U1")
        .header("x-slack-token-type", "user")
        .header("content-type", "application/json; charset=utf-8")
        .body(r#"{"query":"x"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::Client::new()
        .get(egress_url(
            &gw,
            "/api/conversations.list?limit=2&cursor=abc",
        ))
        .header("x-slack-team-id", "T2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = slack.requests();
    assert_eq!(seen[1].headers["authorization"], "Bearer xoxp-t1-u1");
    assert_eq!(seen[1].body, r#"{"query":"x"}"#.as_bytes());
    assert_eq!(
        seen[1].headers["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(seen[2].method, "GET");
    assert_eq!(
        seen[2].path_and_query,
        "/api/conversations.list?limit=2&cursor=abc"
    );
    assert_eq!(seen[2].headers["authorization"], "Bearer xoxb-t2-bot");
    gw.shutdown().await;
}

/// Slack's own errors, 5xx included, come back as they are and are not retried.
#[tokio::test]
async fn slacks_errors_come_back_as_they_are() {
    let slack =
        FakeUpstream::start_with(slack_reply(503, &[("content-type", "text/plain")], "down")).await;
    let gw = gateway(&slack, "").await;
    let r = reqwest::Client::new()
        .post(egress_url(&gw, "/api/chat.postMessage"))
        .header("x-slack-team-id", "T1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.text().await.unwrap(), "down");
    assert_eq!(slack.count(), 1, "not retried");
    gw.shutdown().await;
}

async fn refusal(r: reqwest::Response) -> (u16, String) {
    let status = r.status().as_u16();
    let v: serde_json::Value = r.json().await.expect("Slack-shaped JSON");
    assert_eq!(v["ok"], false);
    (status, v["error"].as_str().unwrap().to_owned())
}

#[tokio::test]
async fn refusals_are_slack_shaped_and_nothing_reaches_slack() {
    let slack = FakeUpstream::start().await;
    let gw = gateway(&slack, "").await;
    let c = reqwest::Client::new();
    let post = |path: &str| c.post(egress_url(&gw, path));
    let cases = [
        (post("/api/chat.postMessage"), 400, "missing_identity"),
        (
            post("/api/chat.postMessage").header("x-slack-team-id", "T404"),
            404,
            "not_installed",
        ),
        (
            post("/api/chat.postMessage")
                .header("x-slack-team-id", "T2")
                .header("x-slack-user-id", "U2")
                .header("x-slack-token-type", "user"),
            403,
            "no_user_token",
        ),
        (
            post("/api/chat.postMessage")
                .header("x-slack-team-id", "T1")
                .header("x-slack-token-type", "user"),
            400,
            "missing_identity",
        ),
    ];
    for (req, status, error) in cases {
        assert_eq!(
            refusal(req.send().await.unwrap()).await,
            (status, error.to_owned())
        );
    }
    for bad in [
        "/api/..",
        "/api/chat..postMessage",
        "/api/%2e%2e",
        "/api/chat%2EpostMessage",
        "/api/a/b",
        "/api/",
        "/slack/events",
        "/",
    ] {
        let r = post(bad)
            .header("x-slack-team-id", "T1")
            .send()
            .await
            .unwrap();
        assert_eq!(
            refusal(r).await,
            (400, "invalid_method".to_owned()),
            "{bad}"
        );
    }
    assert_eq!(slack.count(), 0, "no refusal reached Slack");
    gw.shutdown().await;
}

#[tokio::test]
async fn with_a_token_every_call_must_bring_it() {
    let slack = FakeUpstream::start_with(slack_reply(200, &[], r#"{"ok":true}"#)).await;
    let gw = gateway(&slack, "token = \"egress-secret-123\"\n").await;
    let c = reqwest::Client::new();
    for auth in [None, Some("Bearer wrong"), Some("egress-secret-123")] {
        let mut req = c
            .post(egress_url(&gw, "/api/auth.test"))
            .header("x-slack-team-id", "T1");
        if let Some(a) = auth {
            req = req.header("proxy-authorization", a);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.headers()["proxy-authenticate"], "Bearer");
        assert_eq!(
            refusal(r).await,
            (401, "proxy_auth_required".to_owned()),
            "{auth:?}"
        );
    }
    let r = c
        .post(egress_url(&gw, "/api/auth.test"))
        .header("x-slack-team-id", "T1")
        .header("proxy-authorization", "Bearer egress-secret-123")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(slack.count(), 1);
    assert!(
        slack.requests()[0]
            .headers
            .get("proxy-authorization")
            .is_none(),
        "the egress token is not passed on"
    );
    gw.shutdown().await;
}

/// A 429 holds that method for that workspace until Retry-After: the held calls are not sent
/// meanwhile, then go out; other workspaces are not held. The 429'd call is retried.
#[tokio::test]
async fn a_rate_limited_method_is_held_for_its_workspace_only() {
    let slack = FakeUpstream::start_with(slack_reply(
        429,
        &[("retry-after", "3"), ("content-type", "application/json")],
        r#"{"ok":false,"error":"ratelimited"}"#,
    ))
    .await;
    let gw = gateway(&slack, "").await;
    let url = egress_url(&gw, "/api/chat.postMessage");
    let call = |team: &'static str| {
        let url = url.clone();
        async move {
            reqwest::Client::new()
                .post(url)
                .header("x-slack-team-id", team)
                .body("channel=C1&text=x")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    let first = tokio::spawn(call("T1"));
    while slack.count() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slack.set_reply(slack_reply(200, &[], r#"{"ok":true}"#));
    let held = tokio::spawn(call("T1"));
    // Another workspace goes through at once, while T1's calls wait.
    assert_eq!(call("T2").await, 200);
    let seen = slack.requests();
    assert_eq!(
        seen.len(),
        2,
        "T1's held call and its retry were not sent yet"
    );
    assert_eq!(seen[1].headers["authorization"], "Bearer xoxb-t2-bot");
    assert_eq!(
        first.await.unwrap(),
        200,
        "the 429'd call is retried after Retry-After"
    );
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(slack.count(), 4);
    gw.shutdown().await;
}

/// A hold longer than egress.max_wait answers 429 `ratelimited` at once, with the rest of the
/// wait in Retry-After, and sends nothing.
#[tokio::test]
async fn a_hold_past_max_wait_is_answered_at_once() {
    let slack = FakeUpstream::start_with(slack_reply(
        429,
        &[("retry-after", "30"), ("content-type", "application/json")],
        r#"{"ok":false,"error":"ratelimited"}"#,
    ))
    .await;
    let gw = gateway(&slack, "max_wait = \"2s\"\n").await;
    let c = reqwest::Client::new();
    let send = || {
        c.post(egress_url(&gw, "/api/chat.postMessage"))
            .header("x-slack-team-id", "T1")
            .send()
    };
    let r = send().await.unwrap();
    assert_eq!(r.status(), 429, "Slack's own 429, as it came");
    assert_eq!(r.headers()["retry-after"], "30");
    let r = send().await.unwrap();
    assert_eq!(r.status(), 429);
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((28..=30).contains(&wait), "{wait}");
    assert_eq!(refusal(r).await.1, "ratelimited");
    assert_eq!(slack.count(), 1, "the held call was not sent");
    gw.shutdown().await;
}

/// `upstream.inject_tokens = false`: forwarded Slack requests carry the identity headers and
/// no token, in any header.
#[tokio::test]
async fn without_token_injection_no_token_reaches_the_upstream() {
    let upstream = FakeUpstream::start().await;
    let mut inst = workspace_install("T1", "U1", "xoxb-t1-bot");
    inst.user_token = Some(Token::new("xoxp-t1-u1"));
    let gw = TestGateway::builder(upstream.url())
        .toml("[upstream]\ninject_tokens = false\ninject_user_token = true\n")
        .seed(inst)
        .start()
        .await;
    let body = format!(
        r#"{{"team_id":"T1","api_app_id":"A111","type":"event_callback","event_id":"Ev{}","event":{{"type":"app_mention","user":"U1"}}}}"#,
        support::unique_id()
    );
    assert_eq!(gw.post(body).send().await.status, 200);
    let seen = upstream.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].headers["x-slack-team-id"], "T1");
    assert_eq!(seen[0].headers["x-slack-bot-user-id"], "UT1BOT");
    for (name, value) in &seen[0].headers {
        assert!(
            !value.to_str().unwrap_or("").contains("xox"),
            "{name} carries a token"
        );
    }
    gw.shutdown().await;
}

/// Metrics: calls by method and status, holds and time held.
#[tokio::test]
async fn calls_and_holds_are_counted() {
    let slack = FakeUpstream::start_with(slack_reply(429, &[("retry-after", "1")], "{}")).await;
    let gw = gateway(&slack, "").await;
    let c = reqwest::Client::new();
    let call = c
        .post(egress_url(&gw, "/api/chat.postMessage"))
        .header("x-slack-team-id", "T1")
        .send();
    let call = tokio::spawn(call);
    while slack.count() < 1 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    slack.set_reply(slack_reply(200, &[], r#"{"ok":true}"#));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    let r = c
        .post(egress_url(&gw, "/api/chat.postMessage"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let metrics = reqwest::get(gw.admin_url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for want in [
        r#"slack_gateway_egress_calls_total{method="chat.postMessage",status="200"} 1"#,
        r#"slack_gateway_egress_calls_total{method="-",status="400"} 1"#,
        r#"slack_gateway_egress_holds_total{method="chat.postMessage"} 1"#,
    ] {
        assert!(metrics.contains(want), "{want} in\n{metrics}");
    }
    let held: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("slack_gateway_egress_held_seconds_total "))
        .expect("time held")
        .parse()
        .unwrap();
    assert!(held >= 0.9, "{held}");
    gw.shutdown().await;
}

/// A rotating token is refreshed before the call, once for many concurrent calls, by the
/// same rule as forwarding; Slack sees the new token.
#[tokio::test]
async fn a_rotating_token_is_refreshed_once_before_the_calls() {
    use slack_gateway::store::{InstallationStore, TeamRef};
    use support::fake_slack::Grant;
    use support::oauth_harness::Harness;
    let h = Harness::start("\n[egress]\nenabled = true\nlisten = \"127.0.0.1:0\"\n").await;
    // Tokens live one hour; the gateway refreshes those expiring within two.
    h.slack.enable_rotation(3600);
    h.slack
        .set_refresh_delay(std::time::Duration::from_millis(200));
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T0ROT", "U1"), Some(&h.redirect_uri()));
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    let team = TeamRef::new(None, Some("T0ROT"), false);
    let old = h
        .store
        .find_bot(support::CLIENT_ID, &team)
        .await
        .unwrap()
        .unwrap();
    let old = old.bot_token.unwrap().expose().to_owned();
    let url = format!(
        "http://{}/api/chat.postMessage",
        h.gw.egress_addr.get().unwrap()
    );
    let mut calls = Vec::new();
    for i in 0..6 {
        let url = url.clone();
        calls.push(tokio::spawn(async move {
            reqwest::Client::new()
                .post(url)
                .header("x-slack-team-id", "T0ROT")
                .form(&[("channel", "C1"), ("text", &format!("call {i}"))])
                .send()
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }));
    }
    for c in calls {
        assert_eq!(c.await.unwrap()["ok"], true);
    }
    assert_eq!(h.slack.refresh_calls(), 1, "one refresh for all the calls");
    let posted = h.slack.posted_messages();
    assert_eq!(posted.len(), 6);
    for p in &posted {
        let token = p.token.as_deref().unwrap();
        assert_ne!(token, old, "sent with the refreshed token");
        assert!(h.slack.token_is_valid(token));
    }
}

/// Org-wide installs are found as forwarding finds them: by enterprise alone, with
/// `X-Slack-Enterprise-Install: true`, or as the fallback of a workspace of that org.
#[tokio::test]
async fn org_wide_installs_are_found_as_for_forwarding() {
    use slack_gateway::store::contract::org_install;
    let slack = FakeUpstream::start_with(slack_reply(200, &[], r#"{"ok":true}"#)).await;
    let upstream = FakeUpstream::start().await;
    let gw = TestGateway::builder(upstream.url())
        .toml(&format!(
            "[slack]\napi_url = \"{}/api\"\n[egress]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            slack.url()
        ))
        .seed(org_install("E1", "U9", "xoxb-e1-org"))
        .seed(workspace_install("T1", "U1", "xoxb-t1-bot"))
        .start()
        .await;
    let c = reqwest::Client::new();
    let cases: [&[(&str, &str)]; 4] = [
        &[("x-slack-enterprise-id", "E1")],
        &[
            ("x-slack-enterprise-id", "E1"),
            ("x-slack-team-id", "T7"),
            ("x-slack-enterprise-install", "true"),
        ],
        // A workspace of the org without its own install falls back to the org's.
        &[("x-slack-enterprise-id", "E1"), ("x-slack-team-id", "T7")],
        // A workspace with its own install uses it.
        &[("x-slack-team-id", "T1")],
    ];
    for headers in cases {
        let mut req = c.post(egress_url(&gw, "/api/auth.test"));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        assert_eq!(req.send().await.unwrap().status(), 200, "{headers:?}");
    }
    let tokens: Vec<String> = slack
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        tokens,
        [
            "Bearer xoxb-e1-org",
            "Bearer xoxb-e1-org",
            "Bearer xoxb-e1-org",
            "Bearer xoxb-t1-bot"
        ]
    );
    gw.shutdown().await;
}

/// The other bad inputs: a method other than GET or POST, a body over the egress's limit,
/// and a Slack that cannot be reached. Each a Slack-shaped refusal; nothing is sent.
#[tokio::test]
async fn other_bad_calls_are_refused_slack_shaped() {
    let slack = FakeUpstream::start().await;
    let gw = gateway(&slack, "").await;
    let c = reqwest::Client::new();
    let r = c
        .put(egress_url(&gw, "/api/chat.postMessage"))
        .header("x-slack-team-id", "T1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["allow"], "GET, POST");
    assert_eq!(refusal(r).await, (405, "method_not_allowed".to_owned()));
    let big = vec![b'a'; slack_gateway::egress::MAX_BODY_BYTES + 1];
    let r = c
        .post(egress_url(&gw, "/api/chat.postMessage"))
        .header("x-slack-team-id", "T1")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(r).await, (413, "request_too_large".to_owned()));
    assert_eq!(slack.count(), 0);
    gw.shutdown().await;

    // Slack's API on a port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let upstream = FakeUpstream::start().await;
    let gw = TestGateway::builder(upstream.url())
        .toml(&format!(
            "[slack]\napi_url = \"http://127.0.0.1:{port}/api\"\n[egress]\nenabled = true\nlisten = \"127.0.0.1:0\"\n"
        ))
        .seed(workspace_install("T1", "U1", "xoxb-t1-bot"))
        .start()
        .await;
    let r = c
        .post(egress_url(&gw, "/api/chat.postMessage"))
        .header("x-slack-team-id", "T1")
        .send()
        .await
        .unwrap();
    assert_eq!(refusal(r).await, (502, "slack_unreachable".to_owned()));
    gw.shutdown().await;
}

/// A body over `KEEP_BYTES` streams to Slack as it arrives, byte for byte, and a large answer
/// streams back the same way. Such a body is not kept, so a 429 on it comes back as Slack sent
/// it (at once, sent once), while the hold it set still holds the next call.
#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let answer: String = (0..3 * 1024 * 1024 / 16)
        .map(|i| format!("{i:015x},"))
        .collect();
    let answer = format!(r#"{{"ok":true,"blob":"{answer}"}}"#);
    let slack = FakeUpstream::start_with(slack_reply(
        200,
        &[("content-type", "application/json")],
        &answer,
    ))
    .await;
    let gw = gateway(&slack, "").await;
    let upload: Vec<u8> = (0..slack_gateway::egress::KEEP_BYTES * 3)
        .map(|i| (i * 7 % 251) as u8)
        .collect();
    let c = reqwest::Client::new();
    let send = |body: Vec<u8>| {
        c.post(egress_url(&gw, "/api/files.upload"))
            .header("x-slack-team-id", "T1")
            .header("content-type", "multipart/form-data; boundary=xyz")
            .body(body)
            .send()
    };
    let r = send(upload.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), answer, "the answer byte for byte");
    let seen = slack.single();
    assert_eq!(seen.body.len(), upload.len());
    assert!(seen.body == upload, "the upload byte for byte");
    assert_eq!(seen.headers["authorization"], "Bearer xoxb-t1-bot");
    assert_eq!(
        seen.headers["content-type"],
        "multipart/form-data; boundary=xyz"
    );

    slack.set_reply(slack_reply(
        429,
        &[("retry-after", "2"), ("content-type", "application/json")],
        r#"{"ok":false,"error":"ratelimited"}"#,
    ));
    let r = send(upload.clone()).await.unwrap();
    assert_eq!(r.status(), 429, "a streamed call's 429 comes back as is");
    assert_eq!(r.headers()["retry-after"], "2");
    assert_eq!(slack.count(), 2, "sent once, not again");
    slack.set_reply(slack_reply(200, &[], r#"{"ok":true}"#));
    let started = std::time::Instant::now();
    let r = send(b"channel=C1".to_vec()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "the next call of the method waited out the hold"
    );
    assert_eq!(slack.count(), 3);
    gw.shutdown().await;
}
