//! Verified forwarding over real loopback sockets: the gateway, a recording fake upstream and
//! requests signed as Slack signs them. This file: what passes through unchanged, and whose
//! token is injected for each payload shape. `forwarding_refusals.rs`: what a client can
//! never smuggle in and what is refused; `forwarding_local.rs`: what the gateway answers
//! itself and how upstream faults are reported. Shared payloads and assertions are in
//! `support/forwarding.rs`.

mod support;

use std::time::Duration;

use bytes::Bytes;
use slack_gateway::store::Token;
use support::forwarding::*;
use support::{unique_id, FakeUpstream, Reply, TestGateway};

// ---------------------------------------------------------------------------------------
// What passes through unchanged
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn json_body_path_query_and_slack_headers_reach_the_upstream_unchanged() {
    let (up, gw) = seeded().await;
    // Unusual whitespace, escapes, raw and escaped unicode, key order Slack would never use:
    // a re-serializing proxy would change every one of these bytes.
    let body = format!(
        "  {{\n\t\"event\" :{{ \"type\":\"message\",\"text\":\"h\u{e9}llo \u{1f30d} \\u00e9 \\\"q\\\" \\n\",\"user\":\"U1\" }} ,\r\n\
         \"type\"  :  \"event_callback\", \"team_id\":\"T1\",\"event_id\":\"Ev{}\",\n\
         \"authorizations\":[ {{\"enterprise_id\":null,\"team_id\":\"T1\",\"is_enterprise_install\":false}} ] }}\n\n",
        unique_id()
    );
    let path = "/slack/events?foo=bar&x=%20y&empty=&repeat=1&repeat=2";
    let (ts, sig) = support::sign_now(support::SIGNING_SECRET, body.as_bytes());
    let a = support::SlackPost::new(gw.url(path), body.clone().into_bytes())
        .timestamp(ts.parse().unwrap())
        .header("X-Slack-Retry-Num", "2")
        .header("X-Slack-Retry-Reason", "http_timeout")
        .header("X-App-Trace", "kept-as-is")
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_eq!(r.method, "POST");
    assert_eq!(r.path_and_query, path, "path and query preserved");
    assert_eq!(r.body, Bytes::from(body), "body byte for byte");
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert_eq!(r.header("x-slack-request-timestamp"), Some(ts.as_str()));
    assert_eq!(r.header("x-slack-signature"), Some(sig.as_str()));
    assert_eq!(r.header("x-slack-retry-num"), Some("2"));
    assert_eq!(r.header("x-slack-retry-reason"), Some("http_timeout"));
    assert_eq!(r.header("x-app-trace"), Some("kept-as-is"));
    assert_eq!(
        r.header("content-length"),
        Some(r.body.len().to_string().as_str())
    );
    // The upstream can re-verify the request itself.
    assert_eq!(
        slack_gateway::slack::signature::sign(
            support::SIGNING_SECRET,
            ts.parse().unwrap(),
            &r.body
        ),
        sig
    );
}

#[tokio::test]
async fn form_body_reaches_the_upstream_unchanged() {
    let (up, gw) = seeded().await;
    // `+` for spaces, lower- and upper-case escapes, an emoji, a key without a value.
    let body = format!(
        "token=x&team_id=T1&user_id=U1&command=%2fgw&text=hello+world%21+%F0%9F%8C%8D+a%2Bb&flag&trigger_id={}",
        unique_id()
    );
    let a = gw.post(body.clone()).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_eq!(r.body, Bytes::from(body));
    assert_eq!(
        r.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert_eq!(r.header("x-slack-bot-token"), Some("xoxb-t1-token"));
}

#[tokio::test]
async fn upstream_status_headers_and_body_are_relayed_as_is() {
    let (up, gw) = seeded().await;
    let body =
        Bytes::from("{\"response_type\":\"ephemeral\",\"text\":\"d\u{e9}j\u{e0} vu \u{1f501}\"}  ");
    up.set_reply(Reply {
        status: 500,
        headers: vec![
            (
                "content-type".into(),
                "application/json; charset=utf-8".into(),
            ),
            ("x-slack-no-retry".into(), "1".into()),
            ("x-app-custom".into(), "custom value".into()),
            ("x-app-multi".into(), "one".into()),
            ("x-app-multi".into(), "two".into()),
        ],
        body: body.clone(),
        delay: Duration::ZERO,
    });
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 500, "the upstream's status, not the gateway's");
    assert_eq!(a.header("x-slack-no-retry"), Some("1"));
    assert_eq!(a.header("x-app-custom"), Some("custom value"));
    assert_eq!(
        a.headers
            .get_all("x-app-multi")
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect::<Vec<_>>(),
        ["one", "two"]
    );
    assert_eq!(
        a.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    assert_eq!(a.body, body);

    up.set_reply(Reply {
        status: 200,
        headers: vec![],
        body: Bytes::new(),
        delay: Duration::ZERO,
    });
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200);
    assert!(a.body.is_empty(), "an empty 200 stays empty");
}

#[tokio::test]
async fn every_configured_slack_path_is_forwarded_and_others_are_not() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml("[upstream]\nslack_paths = [\"/slack/events\", \"/slack/commands\"]")
        .seed(t1())
        .start()
        .await;
    let a = support::SlackPost::new(gw.url("/slack/commands"), slash_command("T1", "U1").into())
        .form()
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.single().path_and_query, "/slack/commands");
    assert_eq!(
        up.single().header("x-slack-bot-token"),
        Some("xoxb-t1-token")
    );

    let a = support::SlackPost::new(gw.url("/slack/other"), event_for("T1").into())
        .send()
        .await;
    assert_eq!(a.status, 404);
    assert_eq!(up.count(), 1, "a path outside slack_paths is not forwarded");
}

// ---------------------------------------------------------------------------------------
// Whose token: one test per payload shape
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn event_callback_gets_the_token_of_the_workspace_in_authorizations() {
    let (up, gw) = seeded().await;
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-t1-token",
            bot_id: "BT1",
            bot_user_id: "UT1BOT",
            team: Some("T1"),
            enterprise: None,
            enterprise_install: false,
        },
    );
}

#[tokio::test]
async fn slack_connect_event_uses_authorizations_null_enterprise_over_top_level_enterprise() {
    let (up, gw) = seeded().await;
    // The event happened in E1's workspace T7 (shared channel); the app is installed in T1,
    // outside any enterprise. Top-level ids would wrongly pick E1's org-wide install.
    let body = format!(
        r#"{{"type":"event_callback","team_id":"T7","enterprise_id":"E1","api_app_id":"A111","event_id":"Ev{}","event":{{"type":"message","user":"U7","text":"from the other org"}},"authorizations":[{{"enterprise_id":null,"team_id":"T1","user_id":"UT1BOT","is_bot":true,"is_enterprise_install":false}}],"is_ext_shared_channel":true}}"#,
        unique_id()
    );
    let a = gw.post(body).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-t1-token",
            bot_id: "BT1",
            bot_user_id: "UT1BOT",
            team: Some("T1"),
            enterprise: None,
            enterprise_install: false,
        },
    );
}

#[tokio::test]
async fn event_callback_to_an_org_wide_install_gets_the_org_token() {
    let (up, gw) = seeded().await;
    let body = format!(
        r#"{{"type":"event_callback","team_id":"T5","enterprise_id":"E1","event_id":"Ev{}","event":{{"type":"app_mention","user":"U5"}},"authorizations":[{{"enterprise_id":"E1","team_id":null,"user_id":"UunusedBOT","is_bot":true,"is_enterprise_install":true}}]}}"#,
        unique_id()
    );
    let a = gw.post(body).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-e1-org-token",
            bot_id: "Bunused",
            bot_user_id: "UunusedBOT",
            team: None,
            enterprise: Some("E1"),
            enterprise_install: true,
        },
    );
}

#[tokio::test]
async fn slash_command_from_an_org_wide_install_with_string_true_gets_the_org_token() {
    let (up, gw) = seeded().await;
    // Text "payload" and a `payload`-looking value: still a slash command, parsed by key.
    let body = form(&[
        ("token", "legacy"),
        ("team_id", "T5"),
        ("team_domain", "ws5"),
        ("enterprise_id", "E1"),
        ("enterprise_name", "Org"),
        ("channel_id", "C1"),
        ("user_id", "U5"),
        ("command", "/gw"),
        ("text", "payload"),
        ("api_app_id", "A111"),
        ("is_enterprise_install", "true"),
        ("response_url", "https://hooks.slack.com/commands/T5/1/x"),
        ("trigger_id", &unique_id()),
    ]);
    let a = gw.post(body).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-e1-org-token",
            bot_id: "Bunused",
            bot_user_id: "UunusedBOT",
            team: Some("T5"),
            enterprise: Some("E1"),
            enterprise_install: true,
        },
    );
}

#[tokio::test]
async fn slash_command_from_a_workspace_gets_the_workspace_token() {
    let (up, gw) = seeded().await;
    let a = gw.post(slash_command("T3", "U3")).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-t3-token",
            bot_id: "BT3",
            bot_user_id: "UT3BOT",
            team: Some("T3"),
            enterprise: None,
            enterprise_install: false,
        },
    );
}

#[tokio::test]
async fn block_actions_from_an_org_wide_install_with_null_team_gets_the_org_token() {
    let (up, gw) = seeded().await;
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U5", "username": "u5", "name": "u5", "team_id": "T5"},
        "api_app_id": "A111",
        "token": "legacy",
        "container": {"type": "message", "message_ts": "1.2", "channel_id": "C1"},
        "trigger_id": unique_id(),
        "team": null,
        "enterprise": {"id": "E1", "name": "Org"},
        "is_enterprise_install": true,
        "channel": {"id": "C1", "name": "general"},
        "actions": [{"action_id": "approve", "block_id": "b", "type": "button", "value": "1"}]
    });
    let a = gw.post(interactive(&payload)).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-e1-org-token",
            bot_id: "Bunused",
            bot_user_id: "UunusedBOT",
            team: Some("T5"),
            enterprise: Some("E1"),
            enterprise_install: true,
        },
    );
}

#[tokio::test]
async fn view_submission_uses_app_installed_team_id_before_team() {
    let (up, gw) = seeded().await;
    // Submitted by a user of T3 in a modal the app opened from its T1 installation.
    let payload = serde_json::json!({
        "type": "view_submission",
        "team": {"id": "T3", "domain": "ws3"},
        "user": {"id": "U3", "username": "u3", "team_id": "T3"},
        "api_app_id": "A111",
        "token": "legacy",
        "trigger_id": unique_id(),
        "view": {
            "id": "V1",
            "team_id": "T3",
            "app_installed_team_id": "T1",
            "type": "modal",
            "callback_id": "form",
            "state": {"values": {}}
        },
        "enterprise": null,
        "is_enterprise_install": false
    });
    let a = gw.post(interactive(&payload)).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-t1-token",
            bot_id: "BT1",
            bot_user_id: "UT1BOT",
            team: Some("T1"),
            enterprise: None,
            enterprise_install: false,
        },
    );
}

#[tokio::test]
async fn global_shortcut_gets_the_token_of_its_team() {
    let (up, gw) = seeded().await;
    let payload = serde_json::json!({
        "type": "shortcut",
        "token": "legacy",
        "action_ts": "1700000000.1",
        "team": {"id": "T3", "domain": "ws3"},
        "user": {"id": "U3", "username": "u3", "team_id": "T3"},
        "is_enterprise_install": false,
        "enterprise": null,
        "callback_id": "open_form",
        "trigger_id": unique_id()
    });
    let a = gw.post(interactive(&payload)).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-t3-token",
            bot_id: "BT3",
            bot_user_id: "UT3BOT",
            team: Some("T3"),
            enterprise: None,
            enterprise_install: false,
        },
    );
}

#[tokio::test]
async fn block_suggestion_options_request_gets_the_token_of_its_team() {
    let (up, gw) = seeded().await;
    let payload = serde_json::json!({
        "type": "block_suggestion",
        "user": {"id": "U1", "username": "u1", "team_id": "T1"},
        "container": {"type": "view", "view_id": "V2"},
        "api_app_id": "A111",
        "token": "legacy",
        "action_id": "pick",
        "block_id": "b",
        "value": format!("ab{}", unique_id()),
        "team": {"id": "T1", "domain": "ws1"},
        "enterprise": null,
        "is_enterprise_install": false
    });
    let a = gw.post(interactive(&payload)).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_injected(
        &up.single(),
        Injected {
            token: "xoxb-t1-token",
            bot_id: "BT1",
            bot_user_id: "UT1BOT",
            team: Some("T1"),
            enterprise: None,
            enterprise_install: false,
        },
    );
}

#[tokio::test]
async fn user_token_is_injected_only_for_the_user_who_installed_with_user_scopes() {
    let up = FakeUpstream::start().await;
    let mut by_u1 = t1();
    by_u1.user_token = Some(Token::new("xoxp-u1-user-token"));
    by_u1.user_scopes = Some("search:read".into());
    let gw = TestGateway::builder(up.url())
        .toml("[upstream]\ninject_user_token = true")
        .seed(by_u1)
        .start()
        .await;

    let a = gw.post(slash_command("T1", "U1")).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.last();
    assert_eq!(
        only(&r, "x-slack-user-token").as_deref(),
        Some("xoxp-u1-user-token")
    );
    assert_eq!(r.header("x-slack-bot-token"), Some("xoxb-t1-token"));

    let a = gw.post(slash_command("T1", "U2")).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.last();
    assert_eq!(
        only(&r, "x-slack-user-token"),
        None,
        "another user never gets U1's token"
    );
    assert_eq!(r.header("x-slack-bot-token"), Some("xoxb-t1-token"));

    // Interactivity names the user as an object.
    let payload = serde_json::json!({
        "type": "block_actions",
        "user": {"id": "U1", "team_id": "T1"},
        "team": {"id": "T1"},
        "trigger_id": unique_id(),
        "actions": []
    });
    let a = gw.post(interactive(&payload)).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(
        only(&up.last(), "x-slack-user-token").as_deref(),
        Some("xoxp-u1-user-token")
    );
}

#[tokio::test]
async fn a_user_only_install_gets_its_user_token_injected() {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml("[upstream]\ninject_user_token = true")
        .seed(user_only(t1(), "xoxp-u1-only-user-token"))
        .start()
        .await;
    let a = gw.post(slash_command("T1", "U1")).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.last();
    assert_eq!(
        only(&r, "x-slack-user-token").as_deref(),
        Some("xoxp-u1-only-user-token")
    );
    assert_eq!(r.header("x-slack-bot-token"), None);
    assert_eq!(r.header("x-slack-team-id"), Some("T1"));
    // Another user of the workspace: nothing to inject.
    let a = gw.post(slash_command("T1", "U2")).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token(&up.last());
}

#[tokio::test]
async fn user_token_is_not_injected_unless_configured() {
    let up = FakeUpstream::start().await;
    let mut by_u1 = t1();
    by_u1.user_token = Some(Token::new("xoxp-u1-user-token"));
    by_u1.user_scopes = Some("search:read".into());
    let gw = TestGateway::builder(up.url()).seed(by_u1).start().await;
    let a = gw.post(slash_command("T1", "U1")).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_eq!(only(&r, "x-slack-user-token"), None);
    assert_eq!(r.header("x-slack-bot-token"), Some("xoxb-t1-token"));
}

#[tokio::test]
async fn unknown_team_is_forwarded_without_token_headers() {
    let (up, gw) = seeded().await;
    let a = gw.post(event_for("T404")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let r = up.single();
    assert_no_token(&r);
    // An enterprise workspace whose org has no org-wide install: nothing either.
    let body = form(&[
        ("team_id", "T8"),
        ("enterprise_id", "E404"),
        ("user_id", "U8"),
        ("command", "/gw"),
        ("trigger_id", &unique_id()),
    ]);
    let a = gw.post(body).form().send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token(&up.last());
}
