//! Verified forwarding over real loopback sockets: the gateway, a recording fake upstream and
//! requests signed as Slack signs them.
//!
//! Grouped as the request path is: what passes through unchanged, whose token is injected for
//! each payload shape, what a client can never smuggle in, what is refused (each refusal ends
//! with a legitimate request that still works), what the gateway does itself (challenge,
//! ssl_check, uninstall, revocation) and how upstream faults are reported.

mod support;

use std::time::Duration;

use bytes::Bytes;
use slack_gateway::store::contract::{org_install, workspace_install};
use slack_gateway::store::{Installation, InstallationStore, TeamRef, Token};
use support::{
    chunked_signed_request, closed_port_url, now, raw_http, unique_id, Answer, FakeUpstream,
    Recorded, Reply, TestGateway, CLIENT_ID, EVENTS_PATH,
};

// ---------------------------------------------------------------------------------------
// Payloads and expectations
// ---------------------------------------------------------------------------------------

/// An Events API `event_callback` from a plain workspace `team`, unique per call.
fn event_for(team: &str) -> String {
    event_of_type(team, "app_mention")
}

fn event_of_type(team: &str, kind: &str) -> String {
    format!(
        r#"{{"token":"legacy-verification-token","team_id":"{team}","api_app_id":"A111","type":"event_callback","event_id":"Ev{id}","event_time":1700000000,"event":{{"type":"{kind}","user":"U1","text":"hi","ts":"1.2","channel":"C1"}},"authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"U{team}BOT","is_bot":true,"is_enterprise_install":false}}]}}"#,
        id = unique_id()
    )
}

/// A slash command form from `user` in `team`.
fn slash_command(team: &str, user: &str) -> String {
    form(&[
        ("token", "legacy-verification-token"),
        ("team_id", team),
        ("team_domain", "example"),
        ("channel_id", "C1"),
        ("user_id", user),
        ("user_name", "someone"),
        ("command", "/gw"),
        ("text", "hello"),
        ("api_app_id", "A111"),
        ("response_url", "https://hooks.slack.com/commands/T/1/x"),
        ("trigger_id", &unique_id()),
    ])
}

/// An interactivity body: `payload=` + the JSON.
fn interactive(payload: &serde_json::Value) -> String {
    form(&[("payload", &payload.to_string())])
}

fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The injected names, for "nothing of these" checks (folded: `_` and `-` alike).
const TOKEN_HEADERS: [&str; 4] = [
    "x-slack-bot-token",
    "x-slack-bot-id",
    "x-slack-bot-user-id",
    "x-slack-user-token",
];
const IDENTITY_HEADERS: [&str; 3] = [
    "x-slack-team-id",
    "x-slack-enterprise-id",
    "x-slack-enterprise-install",
];

/// What the upstream should see injected.
struct Injected<'a> {
    token: &'a str,
    bot_id: &'a str,
    bot_user_id: &'a str,
    team: Option<&'a str>,
    enterprise: Option<&'a str>,
    enterprise_install: bool,
}

/// The header under every spelling that folds to `name`, exactly once, or absent.
fn only(r: &Recorded, name: &str) -> Option<String> {
    let found = r.headers_folding_to(name);
    assert!(
        found.len() <= 1,
        "{name} arrived {} times: {:?}",
        found.len(),
        found.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    found.into_iter().next().map(|(_, v)| v)
}

fn assert_injected(r: &Recorded, want: Injected<'_>) {
    assert_eq!(
        only(r, "x-slack-bot-token").as_deref(),
        Some(want.token),
        "bot token"
    );
    assert_eq!(
        only(r, "x-slack-bot-id").as_deref(),
        Some(want.bot_id),
        "bot id"
    );
    assert_eq!(
        only(r, "x-slack-bot-user-id").as_deref(),
        Some(want.bot_user_id),
        "bot user id"
    );
    assert_eq!(only(r, "x-slack-team-id").as_deref(), want.team, "team id");
    assert_eq!(
        only(r, "x-slack-enterprise-id").as_deref(),
        want.enterprise,
        "enterprise id"
    );
    assert_eq!(
        only(r, "x-slack-enterprise-install").as_deref(),
        Some(if want.enterprise_install {
            "true"
        } else {
            "false"
        }),
        "enterprise install"
    );
}

fn assert_no_token(r: &Recorded) {
    for name in TOKEN_HEADERS {
        assert_eq!(only(r, name), None, "{name} must not be forwarded");
    }
}

fn t1() -> Installation {
    workspace_install("T1", "U1", "xoxb-t1-token")
}

/// `inst` as an install with user scopes only: a user token and no bot.
fn user_only(mut inst: Installation, user_token: &str) -> Installation {
    inst.bot_token = None;
    inst.bot_id = None;
    inst.bot_user_id = None;
    inst.bot_scopes = None;
    inst.user_token = Some(Token::new(user_token));
    inst.user_scopes = Some("search:read".into());
    inst
}

fn t3() -> Installation {
    workspace_install("T3", "U3", "xoxb-t3-token")
}

fn e1_org() -> Installation {
    org_install("E1", "U9", "xoxb-e1-org-token")
}

fn team(t: &str) -> TeamRef {
    TeamRef::new(None, Some(t), false)
}

/// A gateway with T1, T3 and the org-wide E1 installed, in front of a fresh upstream.
async fn seeded() -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .seed(t1())
        .seed(t3())
        .seed(e1_org())
        .start()
        .await;
    (up, gw)
}

/// The request was refused with `status`, nothing reached the upstream, and a legitimate
/// request right after still goes through.
async fn assert_refused_then_ok(gw: &TestGateway, up: &FakeUpstream, refused: Answer, status: u16) {
    assert_eq!(refused.status, status, "refusal: {}", refused.text());
    assert_eq!(up.count(), 0, "a refused request reached the upstream");
    let ok = gw.post(event_for("T1")).send().await;
    assert_eq!(
        ok.status,
        200,
        "legitimate request after a refusal: {}",
        ok.text()
    );
    assert_eq!(up.count(), 1, "the legitimate request was forwarded");
    assert_eq!(
        up.single().header("x-slack-bot-token"),
        Some("xoxb-t1-token")
    );
}

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

/// A legitimate request after earlier ones: still forwarded.
async fn assert_still_works(gw: &TestGateway, up: &FakeUpstream) {
    let before = up.count();
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), before + 1);
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
