//! The admin listener over loopback: health, readiness, metrics and the installations API,
//! which never shows a token, and which needs the bearer token once `admin.token` is set.

mod support;

use slack_gateway::store::contract::{org_install, workspace_install};
use slack_gateway::store::{Installation, InstallationStore, TeamRef, Token};
use support::{admin_delete, admin_get, get, metric, unique_id, FakeUpstream, TestGateway};

const ADMIN_TOKEN: &str = "admin-bearer-token-for-tests";

/// Every token the seeded installations hold: none may appear in an admin answer.
const TOKENS: [&str; 6] = [
    "xoxb-t1-secret-bot",
    "xoxp-u1-secret-user",
    "xoxe-1-secret-refresh",
    "xoxb-t3-secret-bot",
    "xoxb-e1-secret-org",
    "xoxp-u9-secret-user",
];

fn seeds() -> Vec<Installation> {
    let mut t1 = workspace_install("T1", "U1", TOKENS[0]);
    t1.user_token = Some(Token::new(TOKENS[1]));
    t1.user_scopes = Some("search:read".into());
    t1.bot_refresh_token = Some(Token::new(TOKENS[2]));
    t1.bot_token_expires_at = Some(4_000_000_000);
    t1.incoming_webhook_url = Some("https://hooks.slack.com/services/T1/B1/x".into());
    let t3 = workspace_install("T3", "U3", TOKENS[3]);
    let mut e1 = org_install("E1", "U9", TOKENS[4]);
    e1.user_token = Some(Token::new(TOKENS[5]));
    vec![t1, t3, e1]
}

async fn start(admin_toml: &str) -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let mut b = TestGateway::builder(up.url()).toml(admin_toml);
    for s in seeds() {
        b = b.seed(s);
    }
    (up, b.start().await)
}

fn assert_no_token(what: &str, text: &str) {
    for t in TOKENS {
        assert!(!text.contains(t), "{what} shows a token");
    }
    assert!(!text.contains("xox"), "{what} shows something token-like");
}

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let (_up, gw) = start("").await;
    let h = get(&gw.admin_url("/healthz")).await;
    assert_eq!(h.status, 200);
    let r = get(&gw.admin_url("/readyz")).await;
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(get(&gw.admin_url("/nope")).await.status, 404);
    gw.shutdown().await;
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_status() {
    let (_up, gw) = start("").await;
    let body = format!(
        r#"{{"type":"event_callback","team_id":"T1","event_id":"Ev{}","event":{{"type":"app_mention"}},"authorizations":[{{"enterprise_id":null,"team_id":"T1","is_enterprise_install":false}}]}}"#,
        unique_id()
    );
    for _ in 0..2 {
        let a = gw
            .post(body.replace("\"Ev", &format!("\"Ev{}-", unique_id())))
            .send()
            .await;
        assert_eq!(a.status, 200, "{}", a.text());
    }
    let a = get(&gw.url("/nowhere")).await;
    assert_eq!(a.status, 404);

    let m = get(&gw.admin_url("/metrics")).await;
    assert_eq!(m.status, 200);
    assert!(
        m.header("content-type").unwrap().starts_with("text/plain"),
        "Prometheus text"
    );
    let text = m.text();
    assert_eq!(
        metric(
            &text,
            "slack_gateway_requests_total{route=\"slack\",status=\"200\"}"
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        metric(
            &text,
            "slack_gateway_requests_total{route=\"not_found\",status=\"404\"}"
        ),
        Some(1.0),
        "{text}"
    );
    assert!(
        text.contains("slack_gateway_request_duration_seconds_bucket{"),
        "latency histogram: {text}"
    );
    assert_no_token("/metrics", &text);
}

#[tokio::test]
async fn metrics_count_signature_failures_by_reason() {
    let (up, gw) = start("").await;
    let body = r#"{"type":"event_callback","team_id":"T1"}"#;
    let a = gw.post(body).secret("a-wrong-secret").send().await;
    assert_eq!(a.status, 401);
    let a = gw.post(body).without_signature().send().await;
    assert_eq!(a.status, 401);
    let a = gw.post(body).timestamp(support::now() - 3600).send().await;
    assert_eq!(a.status, 401);
    assert_eq!(up.count(), 0);

    let text = get(&gw.admin_url("/metrics")).await.text();
    for (reason, want) in [
        ("signature_mismatch", 1.0),
        ("missing_signature", 1.0),
        ("stale_timestamp", 1.0),
        ("missing_timestamp", 0.0),
    ] {
        assert_eq!(
            metric(
                &text,
                &format!("slack_gateway_signature_failures_total{{reason=\"{reason}\"}}")
            ),
            Some(want),
            "{reason}: {text}"
        );
    }
    assert_eq!(
        metric(
            &text,
            "slack_gateway_requests_total{route=\"slack\",status=\"401\"}"
        ),
        Some(3.0),
        "{text}"
    );
}

#[tokio::test]
async fn installations_gauge_matches_the_store() {
    let (_up, gw) = start("").await;
    let text = get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(
        metric(&text, "slack_gateway_installations"),
        Some(3.0),
        "T1, T3 and the org E1: {text}"
    );
    gw.store
        .delete_team(support::CLIENT_ID, &TeamRef::new(None, Some("T3"), false))
        .await
        .unwrap();
    let text = get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(metric(&text, "slack_gateway_installations"), Some(2.0));
}

#[tokio::test]
async fn installations_list_shows_every_installation_and_no_token() {
    let (_up, gw) = start("").await;
    let a = admin_get(&gw.admin_url("/admin/installations"), None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token("the list", &a.text());
    let list: Vec<serde_json::Value> = serde_json::from_slice(&a.body).unwrap();
    let mut ids: Vec<&str> = list.iter().map(|i| i["id"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["E1", "T1", "T3"]);
    let t1 = list.iter().find(|i| i["id"] == "T1").unwrap();
    assert_eq!(t1["team_id"], "T1");
    assert_eq!(t1["has_bot_token"], true);
    assert_eq!(t1["bot_id"], "BT1");
    assert_eq!(t1["user_ids_with_tokens"], serde_json::json!(["U1"]));
    let e1 = list.iter().find(|i| i["id"] == "E1").unwrap();
    assert_eq!(e1["is_enterprise_install"], true);
    assert_eq!(e1["enterprise_id"], "E1");
}

#[tokio::test]
async fn installation_get_and_delete_show_no_token() {
    let (_up, gw) = start("").await;
    let a = admin_get(&gw.admin_url("/admin/installations/T1"), None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token("one installation", &a.text());
    let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(v["team_id"], "T1");
    assert_eq!(v["bot_user_id"], "UT1BOT");

    let a = admin_get(&gw.admin_url("/admin/installations/E1"), None).await;
    assert_eq!(a.status, 200);
    assert_no_token("the org installation", &a.text());

    let a = admin_get(&gw.admin_url("/admin/installations/T404"), None).await;
    assert_eq!(a.status, 404);

    let a = admin_delete(&gw.admin_url("/admin/installations/T1"), None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token("the delete answer", &a.text());
    let t1 = TeamRef::new(None, Some("T1"), false);
    assert_eq!(
        gw.store.find_bot(support::CLIENT_ID, &t1).await.unwrap(),
        None
    );
    assert_eq!(
        gw.store
            .find_user(support::CLIENT_ID, &t1, "U1")
            .await
            .unwrap(),
        None,
        "the user's token went with it"
    );
    let a = admin_get(&gw.admin_url("/admin/installations/T1"), None).await;
    assert_eq!(a.status, 404);
    let a = admin_delete(&gw.admin_url("/admin/installations/T1"), None).await;
    assert_eq!(a.status, 404);
    let a = admin_delete(&gw.admin_url("/admin/installations/E1"), None).await;
    assert_eq!(a.status, 200);
    let a = admin_get(&gw.admin_url("/admin/installations"), None).await;
    let list: Vec<serde_json::Value> = serde_json::from_slice(&a.body).unwrap();
    assert_eq!(list.len(), 1, "only T3 is left");
    assert_eq!(list[0]["id"], "T3");
}

#[tokio::test]
async fn admin_token_is_required_for_the_installations_api_when_set() {
    let (_up, gw) = start(&format!("[admin]\ntoken = \"{ADMIN_TOKEN}\"")).await;
    let url = gw.admin_url("/admin/installations");
    let a = admin_get(&url, None).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.header("www-authenticate"), Some("Bearer"));
    assert_no_token("a refusal", &a.text());
    assert!(!a.text().contains(ADMIN_TOKEN));
    let a = admin_get(&url, Some("not-the-admin-token")).await;
    assert_eq!(a.status, 401);
    let a = admin_get(&url, Some(&format!("{ADMIN_TOKEN}x"))).await;
    assert_eq!(a.status, 401, "a longer token is not the token");
    let a = admin_get(&url, Some(&ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1])).await;
    assert_eq!(a.status, 401, "a prefix is not the token");
    let a = admin_delete(&gw.admin_url("/admin/installations/T1"), None).await;
    assert_eq!(a.status, 401);
    assert!(
        gw.store
            .find_bot(support::CLIENT_ID, &TeamRef::new(None, Some("T1"), false))
            .await
            .unwrap()
            .is_some(),
        "an unauthorized delete deleted nothing"
    );

    let a = admin_get(&url, Some(ADMIN_TOKEN)).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_no_token("the list", &a.text());
    let a = admin_delete(&gw.admin_url("/admin/installations/T1"), Some(ADMIN_TOKEN)).await;
    assert_eq!(a.status, 200);

    // Health, readiness and metrics stay open for probes and scrapers.
    assert_eq!(get(&gw.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&gw.admin_url("/readyz")).await.status, 200);
    let m = get(&gw.admin_url("/metrics")).await;
    assert_eq!(m.status, 200);
    assert!(!m.text().contains(ADMIN_TOKEN));
}

#[tokio::test]
async fn admin_token_scheme_is_case_insensitive() {
    // RFC 9110 §11.1: the authentication scheme is case-insensitive.
    let (_up, gw) = start(&format!("[admin]\ntoken = \"{ADMIN_TOKEN}\"")).await;
    let url = gw.admin_url("/admin/installations");
    for scheme in ["Bearer", "bearer", "BEARER"] {
        let r = support::client()
            .get(&url)
            .header("authorization", format!("{scheme} {ADMIN_TOKEN}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "scheme {scheme}");
    }
    for bad in [
        format!("Basic {ADMIN_TOKEN}"),
        format!("Bearer{ADMIN_TOKEN}"),
        ADMIN_TOKEN.to_owned(),
    ] {
        let r = support::client()
            .get(&url)
            .header("authorization", bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
}

#[tokio::test]
async fn installations_gauge_follows_app_uninstalled() {
    let (up, gw) = start("").await;
    let body = format!(
        r#"{{"type":"event_callback","team_id":"T3","event_id":"Ev{}","event":{{"type":"app_uninstalled"}},"authorizations":[{{"enterprise_id":null,"team_id":"T3","is_enterprise_install":false}}]}}"#,
        unique_id()
    );
    let a = gw.post(body).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert_eq!(up.count(), 1);
    let text = get(&gw.admin_url("/metrics")).await.text();
    assert_eq!(metric(&text, "slack_gateway_installations"), Some(2.0));
    let a = admin_get(&gw.admin_url("/admin/installations/T3"), None).await;
    assert_eq!(a.status, 404, "the admin API agrees");
}
