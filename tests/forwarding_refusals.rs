//! Verified forwarding, refusals: what a client can never smuggle in, and what is refused
//! (each refusal ends with a legitimate request that still works). See `forwarding.rs`.

mod support;

use bytes::Bytes;
use support::forwarding::*;
use support::{
    chunked_signed_request, now, raw_http, unique_id, FakeUpstream, Recorded, TestGateway,
    EVENTS_PATH,
};

// ---------------------------------------------------------------------------------------
// What a client can never smuggle in
// ---------------------------------------------------------------------------------------

/// Every spelling an upstream stack might fold into an injected or forwarding header.
const SPOOFED: [(&str, &str); 16] = [
    ("X-Slack-Bot-Token", "xoxb-spoofed-dash"),
    ("X_Slack_Bot_Token", "xoxb-spoofed-underscore"),
    ("x-slack_bot-token", "xoxb-spoofed-mixed"),
    ("X-Slack-Bot-Id", "BSPOOFED"),
    ("x_slack_bot_user_id", "USPOOFED"),
    ("x-slack-team-id", "TSPOOFED"),
    ("X_SLACK_TEAM_ID", "TSPOOFED2"),
    ("X-Slack-Enterprise-Id", "ESPOOFED"),
    ("x-slack-enterprise-install", "spoofed-true"),
    ("X-Slack-User-Token", "xoxp-spoofed"),
    ("X_Slack_User_Token", "xoxp-spoofed-underscore"),
    ("X-Forwarded-For", "203.0.113.66"),
    ("X_Forwarded_For", "203.0.113.67"),
    ("X-Forwarded-Host", "spoofed.example"),
    ("X-Forwarded-Proto", "spoofed"),
    ("Forwarded", "for=203.0.113.68;proto=spoofed"),
];

fn assert_nothing_spoofed_arrived(r: &Recorded) {
    for (k, v) in r.headers.iter() {
        let v = String::from_utf8_lossy(v.as_bytes());
        assert!(
            !v.contains("spoofed") && !v.contains("SPOOFED") && !v.contains("203.0.113"),
            "a spoofed value arrived in {k}"
        );
    }
    assert_eq!(
        only(r, "x-forwarded-for").as_deref(),
        Some("127.0.0.1"),
        "the real peer"
    );
    assert_eq!(only(r, "x-forwarded-proto").as_deref(), Some("http"));
    assert_eq!(only(r, "forwarded"), None);
}

#[tokio::test]
async fn spoofed_token_and_forwarding_headers_never_reach_the_upstream_with_an_installation() {
    let (up, gw) = seeded().await;
    let mut post = gw.post(event_for("T1"));
    for (k, v) in SPOOFED {
        post = post.header(k, v);
    }
    let a = post.send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_nothing_spoofed_arrived(&r);
    assert_injected(
        &r,
        Injected {
            token: "xoxb-t1-token",
            bot_id: "BT1",
            bot_user_id: "UT1BOT",
            team: Some("T1"),
            enterprise: None,
            enterprise_install: false,
        },
    );
    assert_eq!(
        only(&r, "x-forwarded-host"),
        Some(gw.public.to_string()),
        "from the request's Host"
    );
}

#[tokio::test]
async fn spoofed_token_and_forwarding_headers_never_reach_the_upstream_without_an_installation() {
    let (up, gw) = seeded().await;
    let mut post = gw.post(event_for("T404"));
    for (k, v) in SPOOFED {
        post = post.header(k, v);
    }
    let a = post.send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_nothing_spoofed_arrived(&r);
    assert_no_token(&r);
    for name in IDENTITY_HEADERS {
        if let Some(v) = only(&r, name) {
            assert!(
                ["T404", "false"].contains(&v.as_str()),
                "{name} is the payload's, not the client's"
            );
        }
    }
}

#[tokio::test]
async fn renamed_injected_headers_are_used_and_old_and_new_names_are_stripped() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml("[upstream.headers]\nbot_token = \"X-App-Bot-Token\"\nteam_id = \"X-App-Team\"")
        .seed(t1())
        .start()
        .await;
    let a = gw
        .post(event_for("T1"))
        .header("X-App-Bot-Token", "xoxb-spoofed-new-name")
        .header("X_App_Bot_Token", "xoxb-spoofed-new-name-underscore")
        .header("X-Slack-Bot-Token", "xoxb-spoofed-old-name")
        .header("X-Slack-Team-Id", "TSPOOFED")
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_eq!(
        only(&r, "x-app-bot-token").as_deref(),
        Some("xoxb-t1-token")
    );
    assert_eq!(only(&r, "x-app-team").as_deref(), Some("T1"));
    assert_eq!(
        only(&r, "x-slack-bot-token"),
        None,
        "the default name is stripped even when renamed"
    );
    assert_eq!(only(&r, "x-slack-team-id"), None);
    assert_eq!(only(&r, "x-slack-bot-id").as_deref(), Some("BT1"));
}

#[tokio::test]
async fn trusted_proxy_extends_the_forwarded_chain_but_folded_spellings_are_still_removed() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]")
        .seed(t1())
        .start()
        .await;
    let a = gw
        .post(event_for("T1"))
        .header("X-Forwarded-For", "198.51.100.7")
        .header("X-Forwarded-Proto", "https")
        .header("X-Forwarded-Host", "gw.example.com")
        .header("X_Forwarded_For", "203.0.113.66")
        .header("X_Forwarded_Host", "spoofed.example")
        .header("X_Slack_Bot_Token", "xoxb-spoofed")
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_eq!(
        only(&r, "x-forwarded-for").as_deref(),
        Some("198.51.100.7, 127.0.0.1"),
        "the trusted proxy's chain, then the proxy itself"
    );
    assert_eq!(only(&r, "x-forwarded-proto").as_deref(), Some("https"));
    assert_eq!(
        only(&r, "x-forwarded-host").as_deref(),
        Some("gw.example.com")
    );
    assert_eq!(
        only(&r, "x-slack-bot-token").as_deref(),
        Some("xoxb-t1-token")
    );
}

#[tokio::test]
async fn upstream_url_with_a_base_path_is_prefixed() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(format!("{}/app/", up.url()))
        .seed(t1())
        .start()
        .await;
    let a = support::SlackPost::new(gw.url("/slack/events?x=1"), event_for("T1").into())
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.single().path_and_query, "/app/slack/events?x=1");
}

#[tokio::test]
async fn content_type_parameters_and_case_are_accepted() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(event_for("T1"))
        .content_type("Application/JSON; charset=utf-8")
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let a = gw
        .post(slash_command("T1", "U1"))
        .content_type("application/x-www-form-urlencoded; charset=UTF-8")
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 2);
    assert_eq!(
        up.last().header("content-type"),
        Some("application/x-www-form-urlencoded; charset=UTF-8"),
        "the content type is forwarded as sent"
    );
}

#[tokio::test]
async fn expect_100_continue_request_is_forwarded() {
    let (up, gw) = seeded().await;
    let body = padded_event(1500);
    let (ts, sig) = support::sign_now(support::SIGNING_SECRET, body.as_bytes());
    let mut req = format!(
        "POST {EVENTS_PATH} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nX-Slack-Request-Timestamp: {ts}\r\n\
         X-Slack-Signature: {sig}\r\nConnection: close\r\n\r\n",
        gw.public,
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body.as_bytes());
    let (status, text) = raw_http(gw.public, &req).await;
    // Either "100 Continue" then 200, or straight 200: both end in the upstream's answer.
    assert!(status == 100 || status == 200, "unexpected answer: {text}");
    assert!(text.contains("upstream ok"), "{text}");
    assert_eq!(up.single().body, Bytes::from(body));
}
// ---------------------------------------------------------------------------------------
// Refusals: nothing forwarded, and the next legitimate request still works
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_signature_is_refused() {
    let (up, gw) = seeded().await;
    let a = gw.post(event_for("T1")).without_signature().send().await;
    assert!(a.text().contains("missing_signature"), "{}", a.text());
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn missing_timestamp_is_refused() {
    let (up, gw) = seeded().await;
    let a = gw.post(event_for("T1")).without_timestamp().send().await;
    assert!(a.text().contains("missing_timestamp"), "{}", a.text());
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn wrong_signature_is_refused() {
    let (up, gw) = seeded().await;
    let body = event_for("T1");
    let (_, good) = support::sign_now(support::SIGNING_SECRET, body.as_bytes());
    // One hex digit changed.
    let last = good.chars().last().unwrap();
    let flipped = format!(
        "{}{}",
        &good[..good.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let a = gw.post(body).signature(&flipped).send().await;
    assert!(a.text().contains("signature_mismatch"), "{}", a.text());
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn malformed_signature_is_refused() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(event_for("T1"))
        .signature("v0=not-hex")
        .send()
        .await;
    assert_eq!(a.status, 401);
    let a2 = gw.post(event_for("T1")).signature("v1=00").send().await;
    assert_eq!(a2.status, 401);
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn body_tampered_after_signing_is_refused() {
    let (up, gw) = seeded().await;
    let body = event_for("T1");
    let (ts, sig) = support::sign_now(support::SIGNING_SECRET, body.as_bytes());
    let tampered = body.replace("\"T1\"", "\"T3\"");
    let a = gw
        .post(tampered)
        .timestamp(ts.parse().unwrap())
        .signature(&sig)
        .send()
        .await;
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn stale_timestamp_is_refused() {
    let (up, gw) = seeded().await;
    // Signed correctly, but 301 s old: outside Slack's 5-minute window.
    let a = gw.post(event_for("T1")).timestamp(now() - 301).send().await;
    assert!(a.text().contains("stale_timestamp"), "{}", a.text());
    let future = gw.post(event_for("T1")).timestamp(now() + 600).send().await;
    assert_eq!(
        future.status, 401,
        "a timestamp from the future is stale too"
    );
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn non_numeric_timestamp_is_refused() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(event_for("T1"))
        .header("x-slack-request-timestamp", "yesterday")
        .without_timestamp()
        .send()
        .await;
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn signature_made_with_a_wrong_secret_is_refused() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(event_for("T1"))
        .secret("some-other-apps-secret")
        .send()
        .await;
    assert!(a.text().contains("signature_mismatch"), "{}", a.text());
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn previous_signing_secrets_are_still_accepted() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml("[slack]\nprevious_signing_secrets = [\"rotated-out-secret\", \"older-secret\"]")
        .seed(t1())
        .start()
        .await;
    for old in ["rotated-out-secret", "older-secret"] {
        let a = gw.post(event_for("T1")).secret(old).send().await;
        assert_eq!(a.status, 200, "signed with {old}: {}", a.text());
    }
    assert_eq!(up.count(), 2);
    let a = gw
        .post(event_for("T1"))
        .secret("never-configured")
        .send()
        .await;
    assert_eq!(a.status, 401);
    assert_eq!(up.count(), 2, "an unknown secret is still refused");
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "the current secret works");
    assert_eq!(up.count(), 3);
}

#[tokio::test]
async fn exact_replay_of_a_signed_request_is_refused() {
    let (up, gw) = seeded().await;
    let body = event_for("T1");
    let ts = now();
    let first = gw.post(body.clone()).timestamp(ts).send().await;
    assert_eq!(first.status, 200, "{}", first.text());
    let replay = gw.post(body).timestamp(ts).send().await;
    assert_eq!(replay.status, 401);
    assert!(replay.text().contains("replayed"), "{}", replay.text());
    assert_eq!(up.count(), 1, "the replay was not forwarded");
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200);
    assert_eq!(up.count(), 2);
}

/// A gateway with a 2 KiB body limit.
async fn small_limit() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml("[server]\nmax_body_bytes = 2048")
        .seed(t1())
        .start()
        .await;
    (up, gw)
}

/// A signed event of about `len` bytes from T1.
fn padded_event(len: usize) -> String {
    let base = event_for("T1");
    let pad = len.saturating_sub(base.len() + 12);
    base.replacen('{', &format!("{{\"pad\":\"{}\",", "x".repeat(pad)), 1)
}

#[tokio::test]
async fn oversized_body_with_content_length_is_refused_413() {
    let (up, gw) = small_limit().await;
    let body = padded_event(4096);
    assert!(body.len() > 2048);
    let a = gw.post(body).send().await;
    assert_refused_then_ok(&gw, &up, a, 413).await;
    // At the limit exactly is fine.
    let body = padded_event(2048);
    let body = format!("{body}{}", " ".repeat(2048 - body.len()));
    assert_eq!(body.len(), 2048);
    let a = gw.post(body).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn oversized_chunked_body_is_refused_413() {
    let (up, gw) = small_limit().await;
    let body = padded_event(6000);
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(1000).collect();
    let req = chunked_signed_request(gw.public, EVENTS_PATH, "application/json", &chunks);
    let (status, text) = raw_http(gw.public, &req).await;
    assert_eq!(status, 413, "{text}");
    assert_eq!(up.count(), 0);
    // A chunked body within the limit is forwarded, reassembled byte for byte.
    let body = event_for("T1");
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(100).collect();
    let req = chunked_signed_request(gw.public, EVENTS_PATH, "application/json", &chunks);
    let (status, text) = raw_http(gw.public, &req).await;
    assert_eq!(status, 200, "{text}");
    let r = up.single();
    let length = body.len().to_string();
    assert_eq!(r.body, Bytes::from(body));
    assert_eq!(
        r.header("transfer-encoding"),
        None,
        "hop-by-hop framing is not forwarded"
    );
    assert_eq!(
        r.header("content-length"),
        Some(length.as_str()),
        "the reassembled body goes on with its length"
    );
    assert_still_works(&gw, &up).await;
}

#[tokio::test]
async fn malformed_json_is_refused_400() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(format!(
            "{{\"type\":\"event_callback\",\"team_id\":\"T1\",{}",
            unique_id()
        ))
        .send()
        .await;
    assert_refused_then_ok(&gw, &up, a, 400).await;
}

#[tokio::test]
async fn malformed_payload_field_is_refused_400() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(form(&[(
            "payload",
            &format!("{{\"type\":\"block_actions\",{}", unique_id()),
        )]))
        .form()
        .send()
        .await;
    assert!(a.text().contains("payload"), "{}", a.text());
    assert_refused_then_ok(&gw, &up, a, 400).await;
}

#[tokio::test]
async fn unknown_content_type_is_refused_415() {
    let (up, gw) = seeded().await;
    let a = gw
        .post(event_for("T1"))
        .content_type("text/plain")
        .send()
        .await;
    assert_eq!(a.status, 415);
    assert_refused_then_ok(&gw, &up, a, 415).await;
}

#[tokio::test]
async fn without_a_content_type_the_body_decides_as_in_slacks_sdks() {
    let (up, gw) = seeded().await;
    let a = gw.post(event_for("T1")).no_content_type().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.last().header("x-slack-bot-token"), Some("xoxb-t1-token"));
    let a = gw
        .post(slash_command("T1", "U1"))
        .no_content_type()
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.last().header("x-slack-bot-token"), Some("xoxb-t1-token"));
    assert_eq!(up.count(), 2);
}

#[tokio::test]
async fn get_on_a_slack_path_is_refused_405() {
    let (up, gw) = seeded().await;
    let a = support::get(&gw.url(EVENTS_PATH)).await;
    assert_eq!(a.header("allow"), Some("POST"));
    assert_refused_then_ok(&gw, &up, a, 405).await;
}
