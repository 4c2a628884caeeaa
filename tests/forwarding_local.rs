//! Verified forwarding, what the gateway does itself (challenge, ssl_check, uninstall,
//! revocation) and how upstream faults are reported. See `forwarding.rs`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use slack_gateway::store::contract::{org_install, workspace_install};
use slack_gateway::store::InstallationStore;
use slack_gateway::store::{TeamRef, Token};
use support::forwarding::*;
use support::{
    chunked_signed_request, closed_port_url, raw_http, unique_id, FakeUpstream, Reply, TestGateway,
    CLIENT_ID, EVENTS_PATH,
};

// ---------------------------------------------------------------------------------------
// Answered by the gateway itself
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn unsigned_ssl_check_form_is_answered_empty_and_not_forwarded() {
    let (up, gw) = seeded().await;
    let a = gw
        .post("ssl_check=1&token=legacy-verification-token")
        .form()
        .unsigned()
        .send()
        .await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty(), "empty body: {}", a.text());
    assert_eq!(up.count(), 0, "ssl_check is never forwarded");
    // Signed, it is answered the same way and not forwarded either.
    let a = gw
        .post(format!("ssl_check=1&token=x&n={}", unique_id()))
        .form()
        .send()
        .await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty());
    assert_eq!(up.count(), 0, "ssl_check is never forwarded");
    assert_still_works(&gw, &up).await;
}

#[tokio::test]
async fn unsigned_ssl_check_other_than_form_one_is_refused_401() {
    let (up, gw) = seeded().await;
    for (body, form_body) in [
        ("ssl_check=0&token=x", true),
        ("ssl_check=true", true),
        ("ssl_check=&token=x", true),
        ("{\"ssl_check\":\"1\"}", false),
        ("{\"ssl_check\":1}", false),
    ] {
        let mut post = gw.post(body).unsigned();
        if form_body {
            post = post.form();
        }
        let a = post.send().await;
        assert_eq!(a.status, 401, "{body}");
        assert!(a.body.len() > 1, "a short reason is given");
    }
    assert_eq!(up.count(), 0);
    // `ssl_check=1` in a body that is not a form is not Slack's ssl_check.
    let a = gw
        .post("ssl_check=1")
        .content_type("text/plain")
        .unsigned()
        .send()
        .await;
    assert_eq!(a.status, 401);
    // Nor in one that does not say it is a form (signed, such a body is read as one).
    let a = gw
        .post("ssl_check=1")
        .no_content_type()
        .unsigned()
        .send()
        .await;
    assert_eq!(a.status, 401);
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn url_verification_is_answered_with_the_challenge_and_not_forwarded() {
    let (up, gw) = seeded().await;
    let challenge = format!(
        "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P{}",
        unique_id()
    );
    let body =
        format!(r#"{{"token":"legacy","challenge":"{challenge}","type":"url_verification"}}"#);
    let a = gw.post(body.clone()).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.header("content-type"), Some("application/json"));
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v, serde_json::json!({ "challenge": challenge }));
    assert_eq!(up.count(), 0, "url_verification is not forwarded");
    // Unsigned, it is refused like anything else.
    let a = gw.post(body).unsigned().send().await;
    assert_refused_then_ok(&gw, &up, a, 401).await;
}

#[tokio::test]
async fn app_uninstalled_deletes_the_installation_and_is_still_forwarded() {
    let (up, gw) = seeded().await;
    let a = gw.post(event_of_type("T1", "app_uninstalled")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert!(
        String::from_utf8_lossy(&r.body).contains("app_uninstalled"),
        "the app sees the uninstall"
    );
    let store = &gw.store;
    assert_eq!(store.find_bot(CLIENT_ID, &team("T1")).await.unwrap(), None);
    assert_eq!(
        store.find_latest(CLIENT_ID, &team("T1")).await.unwrap(),
        None
    );
    assert_eq!(
        store.find_user(CLIENT_ID, &team("T1"), "U1").await.unwrap(),
        None
    );
    assert!(
        store
            .find_bot(CLIENT_ID, &team("T3"))
            .await
            .unwrap()
            .is_some(),
        "other workspaces are untouched"
    );
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200);
    assert_no_token(&up.last());
    let a = gw.post(event_for("T3")).send().await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().header("x-slack-bot-token"), Some("xoxb-t3-token"));
}

#[tokio::test]
async fn app_uninstalled_from_an_org_wide_install_deletes_the_org_installation() {
    let (up, gw) = seeded().await;
    let body = format!(
        r#"{{"type":"event_callback","team_id":"T5","enterprise_id":"E1","event_id":"Ev{}","event":{{"type":"app_uninstalled"}},"authorizations":[{{"enterprise_id":"E1","team_id":null,"user_id":"UunusedBOT","is_bot":true,"is_enterprise_install":true}}]}}"#,
        unique_id()
    );
    let a = gw.post(body).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 1);
    let org = TeamRef::new(Some("E1"), None, true);
    assert_eq!(gw.store.find_bot(CLIENT_ID, &org).await.unwrap(), None);
    assert!(gw
        .store
        .find_bot(CLIENT_ID, &team("T1"))
        .await
        .unwrap()
        .is_some());
    let body = form(&[
        ("team_id", "T5"),
        ("enterprise_id", "E1"),
        ("is_enterprise_install", "true"),
        ("user_id", "U5"),
        ("command", "/gw"),
        ("trigger_id", &unique_id()),
    ]);
    let a = gw.post(body).form().send().await;
    assert_eq!(a.status, 200);
    assert_no_token(&up.last());
}

fn tokens_revoked(team: &str, oauth: &[&str], bot: &[&str]) -> String {
    format!(
        r#"{{"type":"event_callback","team_id":"{team}","api_app_id":"A111","event_id":"Ev{}","event":{{"type":"tokens_revoked","tokens":{{"oauth":{},"bot":{}}}}},"authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"U{team}BOT","is_bot":true,"is_enterprise_install":false}}]}}"#,
        unique_id(),
        serde_json::json!(oauth),
        serde_json::json!(bot)
    )
}

/// T1 installed by U1 and then by U2, both with user tokens; user tokens injected.
async fn two_users() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let mut by_u1 = t1();
    by_u1.user_token = Some(Token::new("xoxp-u1-user-token"));
    by_u1.user_scopes = Some("search:read".into());
    let mut by_u2 = workspace_install("T1", "U2", "xoxb-t1-token");
    by_u2.user_token = Some(Token::new("xoxp-u2-user-token"));
    by_u2.user_scopes = Some("search:read".into());
    let gw = TestGateway::builder(up.url())
        .toml("[upstream]\ninject_user_token = true")
        .seed(by_u1)
        .seed(by_u2)
        .start()
        .await;
    (up, gw)
}

#[tokio::test]
async fn tokens_revoked_deletes_the_listed_user_token_and_keeps_the_bot() {
    let (up, gw) = two_users().await;
    let a = gw.post(tokens_revoked("T1", &["U1"], &[])).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 1, "tokens_revoked is forwarded");
    let store = &gw.store;
    assert_eq!(
        store.find_user(CLIENT_ID, &team("T1"), "U1").await.unwrap(),
        None
    );
    assert!(store
        .find_user(CLIENT_ID, &team("T1"), "U2")
        .await
        .unwrap()
        .is_some());
    assert!(store
        .find_bot(CLIENT_ID, &team("T1"))
        .await
        .unwrap()
        .is_some());

    let a = gw.post(slash_command("T1", "U1")).form().send().await;
    assert_eq!(a.status, 200);
    let r = up.last();
    assert_eq!(only(&r, "x-slack-user-token"), None, "U1's token is gone");
    assert_eq!(r.header("x-slack-bot-token"), Some("xoxb-t1-token"));
    let a = gw.post(slash_command("T1", "U2")).form().send().await;
    assert_eq!(a.status, 200);
    assert_eq!(
        up.last().header("x-slack-user-token"),
        Some("xoxp-u2-user-token")
    );
}

#[tokio::test]
async fn tokens_revoked_for_the_bot_deletes_the_bot() {
    let (up, gw) = two_users().await;
    let a = gw.post(tokens_revoked("T1", &[], &["UT1BOT"])).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 1, "tokens_revoked is forwarded");
    assert_eq!(
        gw.store.find_bot(CLIENT_ID, &team("T1")).await.unwrap(),
        None
    );
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200);
    let r = up.last();
    assert_eq!(only(&r, "x-slack-bot-token"), None);
    // Only the bot was revoked: the acting user's own token still stands.
    assert_eq!(
        only(&r, "x-slack-user-token").as_deref(),
        Some("xoxp-u1-user-token")
    );
}

#[tokio::test]
async fn tokens_revoked_for_another_bot_keeps_this_one() {
    let (up, gw) = two_users().await;
    let a = gw
        .post(tokens_revoked("T1", &[], &["USOMEONEELSE"]))
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(gw
        .store
        .find_bot(CLIENT_ID, &team("T1"))
        .await
        .unwrap()
        .is_some());
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200);
    assert_eq!(up.last().header("x-slack-bot-token"), Some("xoxb-t1-token"));
}

#[tokio::test]
async fn tokens_revoked_from_a_workspace_deletes_an_org_wide_user_only_token() {
    let up = FakeUpstream::start().await;
    let org_user = user_only(org_install("E1", "U9", "unused"), "xoxp-u9-org-user-token");
    let gw = TestGateway::builder(up.url())
        .toml("[upstream]\ninject_user_token = true")
        .seed(org_user)
        .start()
        .await;
    let command = || {
        form(&[
            ("team_id", "T5"),
            ("enterprise_id", "E1"),
            ("user_id", "U9"),
            ("command", "/gw"),
            ("trigger_id", &unique_id()),
        ])
    };
    let a = gw.post(command()).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        only(&up.last(), "x-slack-user-token").as_deref(),
        Some("xoxp-u9-org-user-token"),
        "found at the org from a workspace of it"
    );
    // Slack tells the workspace the user's token was revoked.
    let revoked = format!(
        r#"{{"type":"event_callback","team_id":"T5","enterprise_id":"E1","api_app_id":"A111","event_id":"Ev{}","event":{{"type":"tokens_revoked","tokens":{{"oauth":["U9"],"bot":[]}}}},"authorizations":[{{"enterprise_id":"E1","team_id":"T5","user_id":"U9","is_bot":false,"is_enterprise_install":false}}]}}"#,
        unique_id()
    );
    let a = gw.post(revoked).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(
        tokens_at_rest(&gw).await.is_empty(),
        "{:?}",
        tokens_at_rest(&gw).await
    );
    let a = gw.post(command()).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token(&up.last());
}

/// Every token still held anywhere in the store (any record, any field).
async fn tokens_at_rest(gw: &TestGateway) -> Vec<String> {
    let mut out = Vec::new();
    for r in gw.store.list(CLIENT_ID).await.unwrap() {
        let i = r.installation;
        for t in [
            i.bot_token,
            i.bot_refresh_token,
            i.user_token,
            i.user_refresh_token,
        ]
        .into_iter()
        .flatten()
        {
            out.push(t.expose().to_owned());
        }
    }
    out
}

#[tokio::test]
async fn tokens_revoked_leaves_no_copy_of_a_revoked_user_token_at_rest() {
    let (_up, gw) = two_users().await;
    // U2 installed last: U2's token is in the team's latest record too.
    let a = gw.post(tokens_revoked("T1", &["U2"], &[])).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let left = tokens_at_rest(&gw).await;
    assert!(
        !left.iter().any(|t| t == "xoxp-u2-user-token"),
        "a revoked user token is still stored"
    );
    assert!(left.iter().any(|t| t == "xoxp-u1-user-token"));
    assert!(left.iter().any(|t| t == "xoxb-t1-token"));
    // Nor does an export (which an import would turn back into a live installation).
    let exported = slack_gateway::transfer::export(gw.store.as_ref(), CLIENT_ID)
        .await
        .unwrap();
    assert!(!exported
        .iter()
        .any(|i| i.user_token.as_ref().map(|t| t.expose()) == Some("xoxp-u2-user-token")));
}

#[tokio::test]
async fn tokens_revoked_leaves_no_copy_of_a_revoked_bot_token_at_rest() {
    let (_up, gw) = two_users().await;
    let a = gw.post(tokens_revoked("T1", &[], &["UT1BOT"])).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let left = tokens_at_rest(&gw).await;
    assert!(
        !left.iter().any(|t| t == "xoxb-t1-token"),
        "a revoked bot token is still stored"
    );
    assert!(
        left.iter().any(|t| t == "xoxp-u1-user-token"),
        "user tokens are not the bot's"
    );
    let exported = slack_gateway::transfer::export(gw.store.as_ref(), CLIENT_ID)
        .await
        .unwrap();
    assert!(
        exported.iter().all(|i| i.bot_token.is_none()),
        "an export would bring the revoked bot back"
    );
}

#[tokio::test]
async fn malformed_team_id_is_forwarded_without_a_token_not_a_store_error() {
    let (up, gw) = seeded().await;
    // Slack ids never contain '/' or equal '-', but a signed body is still just input: it
    // must not be mistaken for a store outage (503).
    for bad in ["T1/../T3", "-"] {
        let body = format!(
            r#"{{"type":"event_callback","team_id":"{bad}","event_id":"Ev{}","event":{{"type":"app_mention"}}}}"#,
            unique_id()
        );
        let a = gw.post(body).send().await;
        assert_eq!(a.status, 200, "{bad}: {}", a.text());
        assert_no_token(&up.last());
        let body = format!(
            r#"{{"type":"event_callback","team_id":"{bad}","event_id":"Ev{}","event":{{"type":"app_uninstalled"}}}}"#,
            unique_id()
        );
        let a = gw.post(body).send().await;
        assert_eq!(a.status, 200, "{bad} uninstall: {}", a.text());
    }
    assert!(gw
        .store
        .find_bot(CLIENT_ID, &team("T1"))
        .await
        .unwrap()
        .is_some());
    assert!(gw
        .store
        .find_bot(CLIENT_ID, &team("T3"))
        .await
        .unwrap()
        .is_some());
    assert_still_works(&gw, &up).await;
}
// ---------------------------------------------------------------------------------------
// Upstream faults
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn upstream_down_is_502() {
    let gw = TestGateway::builder(closed_port_url().await)
        .seed(t1())
        .start()
        .await;
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert!(!a.text().contains("xoxb"), "no token in the answer");
    gw.shutdown().await;
}

#[tokio::test]
async fn upstream_that_closes_without_answering_is_502() {
    // Accepts, reads the request, and hangs up without a word.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let rude = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            let mut buf = [0u8; 4096];
            let _ = tokio::io::AsyncReadExt::read(&mut s, &mut buf).await;
            drop(s);
        }
    });
    let gw = TestGateway::builder(format!("http://{addr}"))
        .seed(t1())
        .start()
        .await;
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 502, "{}", a.text());
    assert_eq!(a.text().trim(), "upstream unavailable");
    rude.abort();
}

#[tokio::test]
async fn upstream_slower_than_the_timeout_is_504() {
    let up = FakeUpstream::start_with(Reply {
        delay: Duration::from_secs(10),
        ..Reply::default()
    })
    .await;
    let gw = TestGateway::builder(up.url())
        .toml("[upstream]\ntimeout = \"300ms\"")
        .seed(t1())
        .start()
        .await;
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 504, "{}", a.text());
    // Once the upstream is quick again, so is the gateway.
    up.set_reply(Reply::default());
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(a.text(), "upstream ok");
}

#[tokio::test]
async fn a_content_length_beside_chunked_framing_is_not_forwarded() {
    // Chunked framing wins over Content-Length (RFC 9112 §6.3); the stale length must not go
    // upstream with the reassembled body, or the app would read a truncated request.
    let (up, gw) = seeded().await;
    let body = event_for("T1");
    let chunks: Vec<&[u8]> = body.as_bytes().chunks(100).collect();
    let req = chunked_signed_request(gw.public, EVENTS_PATH, "application/json", &chunks);
    let req = String::from_utf8(req).unwrap().replacen(
        "Transfer-Encoding: chunked\r\n",
        "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n",
        1,
    );
    let (status, text) = raw_http(gw.public, req.as_bytes()).await;
    assert_eq!(status, 200, "{text}");
    let r = up.single();
    let lengths: Vec<_> = r.headers.get_all("content-length").iter().collect();
    assert_eq!(lengths, [body.len().to_string().as_str()]);
    assert_eq!(r.body, Bytes::from(body));
}
