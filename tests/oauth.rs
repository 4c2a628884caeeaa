//! The OAuth v2 install flow and token rotation, end to end over loopback: the real gateway,
//! a fake Slack that behaves as Slack documents, and a recording upstream.

mod support;

use std::sync::Arc;
use std::time::Duration;

use slack_gateway::store::states::{Flow as StateFlow, StateKey};
use slack_gateway::store::{InstallationStore, TeamRef};
use support::fake_slack::{FakeSlack, Fault, Grant};
use support::oauth_harness::{Flow, Harness, CLIENT_ID, CLIENT_SECRET};

#[tokio::test]
async fn install_page_binds_a_fresh_state_to_the_browser() {
    let h = Harness::start("").await;
    let r = h.get("/slack/install", None).await;
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_owned();
    for attr in [
        "slack-gateway-oauth-state=",
        "HttpOnly",
        "SameSite=Lax",
        "Path=/",
        "Max-Age=600",
    ] {
        assert!(cookie.contains(attr), "{attr} missing in {cookie}");
    }
    assert!(
        !cookie.contains("Secure"),
        "plain http public_url: no Secure flag"
    );
    let state = Harness::cookie_state(&cookie);
    assert!(state.len() >= 22, "at least 128 bits of state");
    let page = r.text().await.unwrap();
    let url = Harness::authorize_url_in(&page);
    let q: std::collections::HashMap<String, String> = url.query_pairs().into_owned().collect();
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(q["scope"], "chat:write,commands");
    assert_eq!(q["user_scope"], "search:read");
    assert_eq!(
        q["state"], state,
        "the state in the URL is the one in the cookie"
    );
    assert_eq!(
        q["redirect_uri"],
        format!("{}/slack/oauth_redirect", h.public_url())
    );
    assert!(!q.contains_key("team"), "empty parameters are left out");
    // Every visit gets its own state.
    let again = h.get("/slack/install", None).await;
    assert_ne!(
        Harness::cookie_state(again.headers()["set-cookie"].to_str().unwrap()),
        state
    );
}

#[tokio::test]
async fn direct_install_redirects_with_the_team_hint_and_query_override() {
    let h = Harness::start("direct_install = true\nteam = \"T0HINT\"").await;
    let r = h.get("/slack/install", None).await;
    assert_eq!(r.status(), 302);
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(loc.as_str().starts_with(&h.slack.authorize_url()));
    assert!(loc.query_pairs().any(|(k, v)| k == "team" && v == "T0HINT"));
    let r = h.get("/slack/install?team=T0OTHER", None).await;
    let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
    assert!(loc
        .query_pairs()
        .any(|(k, v)| k == "team" && v == "T0OTHER"));
    let r = h.get("/slack/install?team=T1%26scope%3Dadmin", None).await;
    assert_eq!(
        r.status(),
        400,
        "a team hint that is not a Slack id is refused"
    );
}

#[tokio::test]
async fn govslack_domain_derives_the_authorize_url() {
    let h = Harness::start_raw(
        "[slack]\ndomain = \"slack-gov.com\"",
        "direct_install = true",
    )
    .await;
    let r = h.get("/slack/install", None).await;
    let loc = r.headers()["location"].to_str().unwrap();
    assert!(
        loc.starts_with("https://slack-gov.com/oauth/v2/authorize?"),
        "{loc}"
    );
}

#[tokio::test]
async fn a_completed_install_is_saved_and_its_token_forwarded() {
    let h = Harness::start("").await;
    let flow = h.begin().await;
    let mut grant = Grant::workspace("T0NEW", "U0ME");
    grant.user_scopes = vec!["search:read".into()];
    let code = h.slack.issue_code(grant, Some(&h.redirect_uri()));
    let r = h.callback(&flow, &code).await;
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["set-cookie"]
            .to_str()
            .unwrap()
            .contains("Max-Age=0"),
        "state cookie cleared"
    );
    let page = r.text().await.unwrap();
    assert!(
        page.contains("slack://app?team=T0NEW&amp;id=A0GATEWAY"),
        "{page}"
    );

    // oauth.v2.access got Basic client credentials and the redirect_uri.
    let calls = h.slack.calls("oauth.v2.access");
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0].basic_auth,
        Some((CLIENT_ID.into(), CLIENT_SECRET.into()))
    );
    assert_eq!(calls[0].form["redirect_uri"], h.redirect_uri());
    assert_eq!(h.slack.calls("auth.test").len(), 1);

    let team = TeamRef::new(None, Some("T0NEW"), false);
    let inst = h
        .store
        .find_bot(CLIENT_ID, &team)
        .await
        .unwrap()
        .expect("saved before the answer");
    assert_eq!(
        inst.bot_id.as_deref(),
        Some("BT0NEW"),
        "bot_id from auth.test"
    );
    assert_eq!(inst.bot_user_id.as_deref(), Some("UT0NEWBOT"));
    assert_eq!(inst.bot_scopes.as_deref(), Some("chat:write,commands"));
    assert_eq!(inst.team_name.as_deref(), Some("Team T0NEW"));
    assert_eq!(inst.user_id, "U0ME");
    assert!(inst.user_token.is_some(), "user scopes were granted");
    assert_eq!(inst.app_id.as_deref(), Some("A0GATEWAY"));
    assert!(h
        .slack
        .token_is_valid(inst.bot_token.as_ref().unwrap().expose()));

    // The next signed event from that workspace carries the new token.
    let got = h.signed_event("T0NEW").await;
    assert_eq!(got.as_deref(), inst.bot_token.as_ref().map(|t| t.expose()));
}

#[tokio::test]
async fn org_wide_install_opens_the_org_app_page() {
    let h = Harness::start("").await;
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::org("E0ORG", "U0ADMIN"), Some(&h.redirect_uri()));
    let r = h.callback(&flow, &code).await;
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains("https://e0org.enterprise.slack.com/manage/organization/apps/profile/A0GATEWAY/workspaces/add"),
        "{page}"
    );
    let org = TeamRef::new(Some("E0ORG"), None, true);
    let inst = h
        .store
        .find_bot(CLIENT_ID, &org)
        .await
        .unwrap()
        .expect("org install saved");
    assert!(inst.is_enterprise_install);
    assert_eq!(
        inst.enterprise_url.as_deref(),
        Some("https://e0org.enterprise.slack.com/")
    );
}

#[tokio::test]
async fn slack_error_param_fails_and_still_consumes_the_state() {
    let h = Harness::start("").await;
    let flow = h.begin().await;
    let r = h
        .get(
            &format!(
                "/slack/oauth_redirect?error=access_denied&state={}",
                flow.state
            ),
            Some(&flow.cookie),
        )
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert!(r.text().await.unwrap().contains("access_denied"));
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "invalid_state".into())
    );
}

#[tokio::test]
async fn error_param_is_html_escaped() {
    let h = Harness::start("").await;
    let r = h
        .get(
            "/slack/oauth_redirect?error=%3Cscript%3Ealert(1)%3C%2Fscript%3E",
            None,
        )
        .await;
    assert_eq!(r.status(), 400);
    let page = r.text().await.unwrap();
    assert!(!page.contains("<script>"), "{page}");
    assert!(page.contains("&lt;script&gt;"));
}

/// A page's values go in once: a value that looks like a placeholder is shown as it is, never
/// filled in itself (the failure page's reason came before `{{install_path}}` and took its
/// value).
#[tokio::test]
async fn page_values_that_look_like_placeholders_are_shown_as_they_are() {
    let h = Harness::start("").await;
    let r = h
        .get(
            "/slack/oauth_redirect?error=%7B%7Binstall_path%7D%7D%20%7B%7Breason%7D%7D",
            None,
        )
        .await;
    assert_eq!(
        h.failure_reason(r).await,
        (400, "{{install_path}} {{reason}}".into())
    );
}

#[tokio::test]
async fn callback_refusals_name_their_reason() {
    let h = Harness::start("").await;
    // No code.
    let flow = h.begin().await;
    let r = h
        .get(
            &format!("/slack/oauth_redirect?state={}", flow.state),
            Some(&flow.cookie),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "missing_code".into()));
    // Unknown state, and no state at all.
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    let r = h
        .get(
            &format!("/slack/oauth_redirect?code={code}&state=forged"),
            Some("slack-gateway-oauth-state=forged"),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "invalid_state".into()));
    let r = h
        .get(&format!("/slack/oauth_redirect?code={code}"), None)
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "invalid_state".into()));
    // Cookie from another browser, or none.
    let flow = h.begin().await;
    let other = h.begin().await;
    let r = h
        .get(
            &format!("/slack/oauth_redirect?code={code}&state={}", flow.state),
            Some(&other.cookie),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "invalid_browser".into()));
    let flow = h.begin().await;
    let r = h
        .get(
            &format!("/slack/oauth_redirect?code={code}&state={}", flow.state),
            None,
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "invalid_browser".into()));
    // Expired state.
    let now = slack_gateway::http::unix_now();
    let old = StateKey::new(CLIENT_ID, CLIENT_SECRET, StateFlow::Install).issue(now - 1);
    let r = h
        .get(
            &format!("/slack/oauth_redirect?code={code}&state={old}"),
            Some(&format!("slack-gateway-oauth-state={old}")),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "expired_state".into()));
    assert!(
        h.slack.calls("oauth.v2.access").is_empty(),
        "no refused callback reached Slack"
    );
    // After all that, a proper install still works.
    let flow = h.begin().await;
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
}

#[tokio::test]
async fn a_replayed_callback_is_refused() {
    let h = Harness::start("").await;
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "invalid_state".into())
    );
}

#[tokio::test]
async fn slack_ok_false_errors_are_shown() {
    let h = Harness::start("").await;
    let redirect = h.redirect_uri();
    // A code Slack never issued.
    let flow = h.begin().await;
    assert_eq!(
        h.failure_reason(h.callback(&flow, "made-up").await).await,
        (400, "invalid_code".into())
    );
    // A code used twice (second browser flow, same code).
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&redirect));
    let flow = h.begin().await;
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    let flow = h.begin().await;
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "invalid_code".into())
    );
    // A code older than 10 minutes.
    let code = h
        .slack
        .issue_code(Grant::workspace("T2", "U1"), Some(&redirect));
    h.slack.advance(601);
    let flow = h.begin().await;
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "invalid_code".into())
    );
    // A code issued for another redirect_uri.
    let code = h.slack.issue_code(
        Grant::workspace("T3", "U1"),
        Some("https://elsewhere.example.com/cb"),
    );
    let flow = h.begin().await;
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "bad_redirect_uri".into())
    );
    assert!(h
        .store
        .find_bot(CLIENT_ID, &TeamRef::new(None, Some("T3"), false))
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_wrong_client_secret_is_refused_by_slack() {
    let slack = FakeSlack::start(CLIENT_ID, "the-real-secret").await;
    let h = Harness::start_with(slack, "client_secret = \"not-the-secret\"", "").await;
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "bad_client_secret".into())
    );
}

#[tokio::test]
async fn slack_unreachable_erroring_or_slow_is_a_502() {
    let h = Harness::start_raw("[slack]\napi_timeout = \"300ms\"", "").await;
    for fault in [
        Fault::Status(500),
        Fault::Status(503),
        Fault::Delay(Duration::from_millis(800)),
    ] {
        h.slack.set_fault(Some(fault.clone()));
        let flow = h.begin().await;
        let code = h
            .slack
            .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
        assert_eq!(
            h.failure_reason(h.callback(&flow, &code).await).await,
            (502, "slack_unreachable".into()),
            "{fault:?}"
        );
    }
    h.slack.set_fault(None);
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    assert_eq!(
        h.callback(&flow, &code).await.status(),
        200,
        "works again once Slack is back"
    );

    // Nothing listening at all.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let h = Harness::start_raw(
        &format!("[slack]\napi_url = \"http://127.0.0.1:{port}/api\""),
        "",
    )
    .await;
    let flow = h.begin().await;
    let r = h
        .get(
            &format!("/slack/oauth_redirect?code=c&state={}", flow.state),
            Some(&flow.cookie),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (502, "slack_unreachable".into()));
}

#[tokio::test]
async fn success_and_failure_urls_get_redirects() {
    let h = Harness::start(
        "success_url = \"https://example.com/installed\"\nfailure_url = \"https://example.com/failed?x=1\"",
    )
    .await;
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T0OK", "U1"), Some(&h.redirect_uri()));
    let r = h.callback(&flow, &code).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://example.com/installed?team=T0OK&enterprise=&app=A0GATEWAY"
    );
    let r = h.callback(&flow, &code).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        r.headers()["location"],
        "https://example.com/failed?x=1&reason=invalid_state"
    );
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
}

#[tokio::test]
async fn custom_templates_are_used_and_escaped() {
    let dir = tempfile::tempdir().unwrap();
    let t = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.display().to_string()
    };
    let install = t(
        "install.html",
        "<a id=go href=\"{{authorize_url}}\">Install ours</a>",
    );
    let success = t(
        "success.html",
        "<p>Welcome {{team_name}} ({{team_id}}) {{slack_url}}</p>",
    );
    let failure = t("failure.html", "<p class=oops>{{reason}}</p>");
    let h = Harness::start(&format!(
        "install_page_template = \"{install}\"\nsuccess_page_template = \"{success}\"\nfailure_page_template = \"{failure}\""
    ))
    .await;
    let r = h.get("/slack/install", None).await;
    let page = r.text().await.unwrap();
    assert!(page.starts_with("<a id=go href=\"http://"), "{page}");
    assert!(
        page.contains("&amp;state="),
        "URL attribute escaped: {page}"
    );
    let flow = h.begin().await;
    let mut grant = Grant::workspace("T0TPL", "U1");
    grant.team_name = "<b>Acme</b>".into();
    let code = h.slack.issue_code(grant, Some(&h.redirect_uri()));
    let page = h.callback(&flow, &code).await.text().await.unwrap();
    assert_eq!(
        page,
        "<p>Welcome &lt;b&gt;Acme&lt;/b&gt; (T0TPL) slack://app?team=T0TPL&amp;id=A0GATEWAY</p>"
    );
    let r = h
        .get("/slack/oauth_redirect?error=%22%3E%3Cimg", None)
        .await;
    assert_eq!(
        r.text().await.unwrap(),
        "<p class=oops>&quot;&gt;&lt;img</p>"
    );
}

#[tokio::test]
async fn stateless_org_installs_only_when_enabled_and_org_wide() {
    let h = Harness::start("accept_stateless_org_installs = true").await;
    let code = h
        .slack
        .issue_code(Grant::org("E0ADMIN", "U1"), Some(&h.redirect_uri()));
    let r = h
        .get(&format!("/slack/oauth_redirect?code={code}"), None)
        .await;
    assert_eq!(
        r.status(),
        200,
        "org-wide install from the admin pages, no state"
    );
    let code = h
        .slack
        .issue_code(Grant::workspace("T0WS", "U1"), Some(&h.redirect_uri()));
    let r = h
        .get(&format!("/slack/oauth_redirect?code={code}"), None)
        .await;
    assert_eq!(
        h.failure_reason(r).await,
        (400, "invalid_state".into()),
        "a workspace install needs a state"
    );
    assert!(h
        .store
        .find_bot(CLIENT_ID, &TeamRef::new(None, Some("T0WS"), false))
        .await
        .unwrap()
        .is_none());

    let h = Harness::start("").await;
    let code = h
        .slack
        .issue_code(Grant::org("E0ADMIN", "U1"), Some(&h.redirect_uri()));
    let r = h
        .get(&format!("/slack/oauth_redirect?code={code}"), None)
        .await;
    assert_eq!(
        h.failure_reason(r).await,
        (400, "invalid_state".into()),
        "off by default"
    );
}

#[tokio::test]
async fn concurrent_callbacks_with_one_state_make_exactly_one_install() {
    let h = Arc::new(Harness::start("").await);
    let flow = Arc::new(h.begin().await);
    let mut tasks = Vec::new();
    for i in 0..12 {
        let h = h.clone();
        let flow = flow.clone();
        tasks.push(tokio::spawn(async move {
            let code = h.slack.issue_code(
                Grant::workspace(&format!("T0RACE{i}"), "U1"),
                Some(&h.redirect_uri()),
            );
            h.callback(&flow, &code).await.status().as_u16()
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 400).count(),
        11,
        "{statuses:?}"
    );
    assert_eq!(
        h.slack.calls("oauth.v2.access").len(),
        1,
        "only the winner reached Slack"
    );
    assert_eq!(
        h.store
            .list(CLIENT_ID)
            .await
            .unwrap()
            .iter()
            .filter(|r| r.kind == slack_gateway::store::RecordKind::Bot)
            .count(),
        1
    );
}

#[tokio::test]
async fn rotation_refreshes_once_for_many_waiting_requests() {
    let h = Arc::new(Harness::start("").await);
    // Tokens live one hour; the gateway refreshes those expiring within two.
    h.slack.enable_rotation(3600);
    h.slack.set_refresh_delay(Duration::from_millis(200));
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T0ROT", "U1"), Some(&h.redirect_uri()));
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    let team = TeamRef::new(None, Some("T0ROT"), false);
    let first = h.store.find_bot(CLIENT_ID, &team).await.unwrap().unwrap();
    let old_token = first.bot_token.clone().unwrap();
    assert!(first.bot_refresh_token.is_some() && first.bot_token_expires_at.is_some());

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move { h.signed_event("T0ROT").await }));
    }
    let mut seen = Vec::new();
    for t in tasks {
        seen.push(t.await.unwrap().expect("forwarded with a token"));
    }
    assert_eq!(
        h.slack.refresh_calls(),
        1,
        "one refresh however many requests wait"
    );
    let stored = h.store.find_bot(CLIENT_ID, &team).await.unwrap().unwrap();
    let new_token = stored.bot_token.clone().unwrap();
    assert_ne!(
        new_token.expose(),
        old_token.expose(),
        "persisted before use"
    );
    assert!(
        seen.iter().all(|t| t == new_token.expose()),
        "every request used the new token"
    );
    assert!(h.slack.token_is_valid(new_token.expose()));
    assert!(stored.bot_token_expires_at.unwrap() > first.bot_token_expires_at.unwrap() - 5);
}

#[tokio::test]
async fn a_refused_refresh_of_an_expired_token_is_a_503_not_a_stale_token() {
    let h = Harness::start("").await;
    h.slack.enable_rotation(0); // tokens expire at once
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T0EXP", "U1"), Some(&h.redirect_uri()));
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "token_expired".into()),
        "auth.test refuses an already expired token: Slack said no, so 400 with Slack's reason"
    );
    // Install again with long-lived tokens, then spend the refresh token behind the gateway's back.
    h.slack.enable_rotation(3600);
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T0EXP", "U1"), Some(&h.redirect_uri()));
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    let team = TeamRef::new(None, Some("T0EXP"), false);
    let mut inst = h.store.find_bot(CLIENT_ID, &team).await.unwrap().unwrap();
    h.spend_refresh_token(inst.bot_refresh_token.as_ref().unwrap().expose())
        .await;
    // Still valid for an hour: the gateway keeps using it after Slack refuses the refresh.
    let token = h.signed_event("T0EXP").await;
    assert_eq!(
        token.as_deref(),
        inst.bot_token.as_ref().map(|t| t.expose())
    );
    // Expired: the request is refused (503) rather than sent with a dead token.
    inst.bot_token_expires_at = Some(slack_gateway::http::unix_now() as i64 - 10);
    h.store
        .update_record(
            CLIENT_ID,
            &team,
            &slack_gateway::store::RecordKind::Bot,
            &inst,
        )
        .await
        .unwrap();
    let (status, forwarded) = h.signed_event_status("T0EXP").await;
    assert_eq!(status, 503);
    assert!(!forwarded, "nothing forwarded");
}

#[tokio::test]
async fn the_flow_ends_in_the_upstream_with_the_token_via_the_authorize_page() {
    // The same path a browser takes, by following the links: install page → fake authorize
    // page → its Allow link → callback.
    let h = Harness::start("").await;
    let Flow { cookie, .. } = h.begin().await;
    let _ = cookie;
    let r = h.get("/slack/install", None).await;
    let cookie = r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    let authorize = Harness::authorize_url_in(&r.text().await.unwrap());
    let page = reqwest::get(authorize.as_str())
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let allow = page
        .split("id=\"allow\" href=\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let allow = url::Url::parse(&allow).unwrap();
    let path = format!("{}?{}", allow.path(), allow.query().unwrap());
    let r = h.get(&path, Some(&cookie)).await;
    assert_eq!(r.status(), 200);
    let token = h.signed_event("T0FAKE1").await;
    assert!(token.is_some_and(|t| t.starts_with("xoxb-")));
}

// Defect 4 of issue 16, the OAuth-state flood: every anonymous `GET /slack/install` stored a
// state in sled (kept state_ttl + 1 h) and a periodic full scan of them ran on the async
// runtime. States are now self-verifying; only a callback with a state we issued stores a
// used-marker, swept by expiry off the runtime.

/// The state of `flow` with its `i`-th character changed.
fn tampered(state: &str, i: usize) -> String {
    let mut b = state.as_bytes().to_vec();
    b[i] = if b[i] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}

/// A callback with `state` and the matching cookie.
async fn callback_with(h: &Harness, state: &str, code: &str) -> reqwest::Response {
    h.get(
        &format!("/slack/oauth_redirect?code={code}&state={state}"),
        Some(&format!("slack-gateway-oauth-state={state}")),
    )
    .await
}

#[tokio::test]
async fn state_flood_install_requests_store_nothing() {
    let h = Arc::new(Harness::start("").await);
    assert_eq!(h.store.used_state_count().await.unwrap(), 0);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let r = h.get("/slack/install", None).await;
                assert_eq!(r.status(), 200);
                assert!(r.headers().contains_key("set-cookie"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        h.store.used_state_count().await.unwrap(),
        0,
        "2,000 anonymous install requests stored nothing"
    );
    // A genuine flow still works, and leaves its one marker.
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T0FLOOD", "U1"), Some(&h.redirect_uri()));
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    assert_eq!(h.store.used_state_count().await.unwrap(), 1);
}

#[tokio::test]
async fn state_flood_forged_or_tampered_states_are_invalid_state_and_store_nothing() {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let h = Harness::start("").await;
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    let now = slack_gateway::http::unix_now();
    // The expiry pushed later, with the tag left as it was.
    let mut raw = b64.decode(&flow.state).unwrap();
    raw[32..40].copy_from_slice(&(now + 86_400).to_be_bytes());
    let later = b64.encode(&raw);
    let mut forged = vec![
        tampered(&flow.state, 5),
        tampered(&flow.state, 40),
        tampered(&flow.state, 46),
        tampered(&flow.state, flow.state.len() - 2),
        later,
        flow.state[..flow.state.len() - 1].to_owned(),
        format!("{}A", flow.state),
        // Issued under another client secret, or for sign-in.
        StateKey::new(CLIENT_ID, "another-secret", StateFlow::Install).issue(now + 600),
        StateKey::new(CLIENT_ID, CLIENT_SECRET, StateFlow::Signin).issue(now + 600),
    ];
    // Random states of the right length.
    for _ in 0..100 {
        forged.push(b64.encode(rand::random::<[u8; 56]>()));
    }
    for state in &forged {
        assert_eq!(
            h.failure_reason(callback_with(&h, state, &code).await)
                .await,
            (400, "invalid_state".into()),
            "{state}"
        );
    }
    assert_eq!(
        h.store.used_state_count().await.unwrap(),
        0,
        "no marker for a state we did not issue"
    );
    assert!(h.slack.calls("oauth.v2.access").is_empty());
    // None of that used up the genuine state.
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
}

#[tokio::test]
async fn state_flood_a_state_is_consumed_once_whatever_the_outcome() {
    let h = Harness::start("").await;
    let code = || {
        h.slack
            .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()))
    };
    // Refused for the browser, then brought back by the right one.
    let flow = h.begin().await;
    let other = h.begin().await;
    let r = h
        .get(
            &format!("/slack/oauth_redirect?code={}&state={}", code(), flow.state),
            Some(&other.cookie),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "invalid_browser".into()));
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code()).await).await,
        (400, "invalid_state".into())
    );
    // No code, then a code.
    let flow = h.begin().await;
    let r = h
        .get(
            &format!("/slack/oauth_redirect?state={}", flow.state),
            Some(&flow.cookie),
        )
        .await;
    assert_eq!(h.failure_reason(r).await, (400, "missing_code".into()));
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code()).await).await,
        (400, "invalid_state".into())
    );
    // Slack refused the code, then another code.
    let flow = h.begin().await;
    assert_eq!(
        h.failure_reason(h.callback(&flow, "made-up").await).await,
        (400, "invalid_code".into())
    );
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code()).await).await,
        (400, "invalid_state".into())
    );
    // A success, then the same state again.
    let flow = h.begin().await;
    assert_eq!(h.callback(&flow, &code()).await.status(), 200);
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code()).await).await,
        (400, "invalid_state".into())
    );
    assert_eq!(
        h.store.used_state_count().await.unwrap(),
        4,
        "one marker per state used"
    );
}

#[tokio::test]
async fn state_flood_an_expired_state_is_expired_state_every_time_and_stores_nothing() {
    let h = Harness::start("").await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    let now = slack_gateway::http::unix_now();
    let old = StateKey::new(CLIENT_ID, CLIENT_SECRET, StateFlow::Install).issue(now - 1);
    for _ in 0..2 {
        assert_eq!(
            h.failure_reason(callback_with(&h, &old, &code).await).await,
            (400, "expired_state".into())
        );
    }
    assert_eq!(h.store.used_state_count().await.unwrap(), 0);
    // One still in its TTL, issued with the gateway's key outside the gateway, works.
    let fresh = StateKey::new(CLIENT_ID, CLIENT_SECRET, StateFlow::Install).issue(now + 60);
    assert_eq!(callback_with(&h, &fresh, &code).await.status(), 200);
}

#[tokio::test]
async fn state_flood_a_state_from_one_gateway_is_consumed_once_by_another_sharing_its_store() {
    let a = Harness::start("").await;
    let b = a.start_sharing_store().await;
    let flow = a.begin().await;
    let code_b = b
        .slack
        .issue_code(Grant::workspace("T0B", "U1"), Some(&b.redirect_uri()));
    assert_eq!(
        b.callback(&flow, &code_b).await.status(),
        200,
        "no per-process key: B accepts A's state"
    );
    let code_a = a
        .slack
        .issue_code(Grant::workspace("T0A", "U1"), Some(&a.redirect_uri()));
    assert_eq!(
        a.failure_reason(a.callback(&flow, &code_a).await).await,
        (400, "invalid_state".into()),
        "used on B, so refused on A"
    );
}

#[tokio::test]
async fn state_flood_markers_are_swept_once_their_state_has_expired() {
    use slack_gateway::store::states::{sweep, MARKER_GRACE_SECS};
    let h = Harness::start("").await;
    let flow = h.begin().await;
    let code = h
        .slack
        .issue_code(Grant::workspace("T1", "U1"), Some(&h.redirect_uri()));
    assert_eq!(h.callback(&flow, &code).await.status(), 200);
    assert_eq!(h.store.used_state_count().await.unwrap(), 1);
    let now = slack_gateway::http::unix_now();
    let expiry = now + 600; // state_ttl = 10m
    assert_eq!(
        sweep(h.store.as_ref(), expiry + MARKER_GRACE_SECS - 5)
            .await
            .unwrap(),
        0,
        "kept while the state could still be taken as fresh"
    );
    assert_eq!(
        h.failure_reason(h.callback(&flow, &code).await).await,
        (400, "invalid_state".into())
    );
    assert_eq!(
        sweep(h.store.as_ref(), expiry + MARKER_GRACE_SECS + 5)
            .await
            .unwrap(),
        1
    );
    assert_eq!(h.store.used_state_count().await.unwrap(), 0);
}
