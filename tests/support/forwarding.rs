//! Payloads, seeded installations and assertions shared by the forwarding tests
//! (`tests/forwarding*.rs`): what Slack sends, whose token the upstream must get, and the
//! check that a refused request forwarded nothing.

use slack_gateway::store::contract::{org_install, workspace_install};
use slack_gateway::store::{Installation, TeamRef, Token};

use super::{unique_id, Answer, FakeUpstream, Recorded, TestGateway};

// ---------------------------------------------------------------------------------------
// Payloads and expectations
// ---------------------------------------------------------------------------------------

/// An Events API `event_callback` from a plain workspace `team`, unique per call.
pub fn event_for(team: &str) -> String {
    event_of_type(team, "app_mention")
}

pub fn event_of_type(team: &str, kind: &str) -> String {
    format!(
        r#"{{"token":"legacy-verification-token","team_id":"{team}","api_app_id":"A111","type":"event_callback","event_id":"Ev{id}","event_time":1700000000,"event":{{"type":"{kind}","user":"U1","text":"hi","ts":"1.2","channel":"C1"}},"authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"U{team}BOT","is_bot":true,"is_enterprise_install":false}}]}}"#,
        id = unique_id()
    )
}

/// A slash command form from `user` in `team`.
pub fn slash_command(team: &str, user: &str) -> String {
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
pub fn interactive(payload: &serde_json::Value) -> String {
    form(&[("payload", &payload.to_string())])
}

pub fn form(pairs: &[(&str, &str)]) -> String {
    let mut s = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        s.append_pair(k, v);
    }
    s.finish()
}

/// The injected names, for "nothing of these" checks (folded: `_` and `-` alike).
pub const TOKEN_HEADERS: [&str; 4] = [
    "x-slack-bot-token",
    "x-slack-bot-id",
    "x-slack-bot-user-id",
    "x-slack-user-token",
];
pub const IDENTITY_HEADERS: [&str; 3] = [
    "x-slack-team-id",
    "x-slack-enterprise-id",
    "x-slack-enterprise-install",
];

/// What the upstream should see injected.
pub struct Injected<'a> {
    pub token: &'a str,
    pub bot_id: &'a str,
    pub bot_user_id: &'a str,
    pub team: Option<&'a str>,
    pub enterprise: Option<&'a str>,
    pub enterprise_install: bool,
}

/// The header under every spelling that folds to `name`, exactly once, or absent.
pub fn only(r: &Recorded, name: &str) -> Option<String> {
    let found = r.headers_folding_to(name);
    assert!(
        found.len() <= 1,
        "{name} arrived {} times: {:?}",
        found.len(),
        found.iter().map(|(k, _)| k).collect::<Vec<_>>()
    );
    found.into_iter().next().map(|(_, v)| v)
}

pub fn assert_injected(r: &Recorded, want: Injected<'_>) {
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

pub fn assert_no_token(r: &Recorded) {
    for name in TOKEN_HEADERS {
        assert_eq!(only(r, name), None, "{name} must not be forwarded");
    }
}

pub fn t1() -> Installation {
    workspace_install("T1", "U1", "xoxb-t1-token")
}

/// `inst` as an install with user scopes only: a user token and no bot.
pub fn user_only(mut inst: Installation, user_token: &str) -> Installation {
    inst.bot_token = None;
    inst.bot_id = None;
    inst.bot_user_id = None;
    inst.bot_scopes = None;
    inst.user_token = Some(Token::new(user_token));
    inst.user_scopes = Some("search:read".into());
    inst
}

pub fn t3() -> Installation {
    workspace_install("T3", "U3", "xoxb-t3-token")
}

pub fn e1_org() -> Installation {
    org_install("E1", "U9", "xoxb-e1-org-token")
}

pub fn team(t: &str) -> TeamRef {
    TeamRef::new(None, Some(t), false)
}

/// A gateway with T1, T3 and the org-wide E1 installed, in front of a fresh upstream.
pub async fn seeded() -> (FakeUpstream, TestGateway) {
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
pub async fn assert_refused_then_ok(
    gw: &TestGateway,
    up: &FakeUpstream,
    refused: Answer,
    status: u16,
) {
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

/// A legitimate request after earlier ones: still forwarded.
pub async fn assert_still_works(gw: &TestGateway, up: &FakeUpstream) {
    let before = up.count();
    let a = gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), before + 1);
}
