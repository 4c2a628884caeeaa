//! Queued delivery, in process over real sockets: dedupe by `(api_app_id, event_id)` within
//! `dedupe_window` (Slack's retries included), the token looked up (and refreshed) at
//! delivery time, and `app_uninstalled` / `tokens_revoked`, which act when accepted and not
//! again at delivery. The upstream is [`QueueUpstream`] (see tests/delivery.rs).

mod support;

use std::time::{Duration, Instant};

use slack_gateway::store::contract::workspace_install;
use slack_gateway::store::InstallationStore;
use support::delivery::*;
use support::forwarding::{t1, team};
use support::{TestGateway, CLIENT_ID};

const WAIT: Duration = Duration::from_secs(5);

async fn gateway(up: &QueueUpstream, toml: &str) -> TestGateway {
    let gw = TestGateway::builder(up.url())
        .seed(t1())
        .toml(toml)
        .start()
        .await;
    keep_store(&gw);
    gw
}

fn admin_base(gw: &TestGateway) -> String {
    format!("http://{}", gw.admin)
}

/// Asserts Slack got queued mode's answer: 200 with an empty body.
fn assert_acked(a: &support::Answer, what: &str) {
    assert_eq!(a.status, 200, "{what}: {}", a.text());
    assert!(
        a.body.is_empty(),
        "{what}: the body must be empty: {:?}",
        a.text()
    );
}

/// Waits `d`: for "nothing more happens" checks only.
async fn quiet(d: Duration) {
    tokio::time::sleep(d).await;
}

// ---------------------------------------------------------------------------------------
// Dedupe
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_retries_are_deduped_by_app_and_event_id() {
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = gateway(&up, &queued("")).await;
    let base = admin_base(&gw);
    let id = fresh_event_id();
    let body = callback("T1", "A111", &id, r#"{"type":"app_mention","user":"U1"}"#);
    let now = support::now();
    assert_acked(&gw.post(body.clone()).timestamp(now).send().await, "first");
    // Slack's retries: new timestamp and signature, X-Slack-Retry-Num, the same body.
    for n in 1..=2u64 {
        let a = gw
            .post(body.clone())
            .timestamp(now - n)
            .header("x-slack-retry-num", &n.to_string())
            .header("x-slack-retry-reason", "http_timeout")
            .send()
            .await;
        assert_acked(&a, "a retry");
    }
    let mine: Vec<_> = deliveries(&base, "")
        .await
        .into_iter()
        .filter(|d| d["event_id"] == id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "queued once: {mine:?}");
    // An exact replay is refused by replay protection first.
    let a = gw.post(body.clone()).timestamp(now).send().await;
    assert_eq!(a.status, 401, "{}", a.text());
    assert!(a.text().contains("replayed"), "{}", a.text());

    // Delivered; a later retry is still a duplicate.
    up.set_status(200);
    eventually("delivered", WAIT, || async {
        listed(&base, &id).await.is_none()
    })
    .await;
    let attempts = up.of_event(&id).len();
    let a = gw
        .post(body.clone())
        .timestamp(now - 3)
        .header("x-slack-retry-num", "3")
        .send()
        .await;
    assert_acked(&a, "a retry after delivery");
    quiet(Duration::from_millis(500)).await;
    assert!(listed(&base, &id).await.is_none(), "not queued again");
    assert_eq!(up.of_event(&id).len(), attempts, "not delivered again");
    assert_eq!(
        metric(
            &base,
            "slack_gateway_delivery_accepted_total{result=\"duplicate\"}"
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            &base,
            "slack_gateway_delivery_accepted_total{result=\"queued\"}"
        )
        .await,
        1.0
    );

    // The same event id of another app is another event; so is another id.
    let other_app = callback("T1", "A222", &id, r#"{"type":"app_mention","user":"U1"}"#);
    assert_acked(&gw.post(other_app).send().await, "another app");
    let (other_id, other) = mention("T1");
    assert_acked(&gw.post(other).send().await, "another event");
    up.wait_event(&other_id, 1, WAIT).await;
    eventually("the other app's event delivered", WAIT, || async {
        up.requests().iter().any(|r| {
            r.event_id().as_deref() == Some(id.as_str())
                && String::from_utf8_lossy(&r.body).contains("A222")
        })
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_dedupe_window_the_same_event_id_is_a_new_event() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, &queued("dedupe_window = \"1500ms\"\n")).await;
    let id = fresh_event_id();
    let body = callback("T1", "A111", &id, r#"{"type":"app_mention","user":"U1"}"#);
    let now = support::now();
    let accepted = Instant::now();
    assert_acked(&gw.post(body.clone()).timestamp(now).send().await, "first");
    up.wait_event(&id, 1, WAIT).await;
    assert_acked(
        &gw.post(body.clone()).timestamp(now - 1).send().await,
        "within the window",
    );
    quiet(Duration::from_millis(300)).await;
    assert_eq!(up.of_event(&id).len(), 1, "a duplicate within the window");
    let wait = Duration::from_millis(1700).saturating_sub(accepted.elapsed());
    quiet(wait).await;
    assert_acked(
        &gw.post(body).timestamp(now - 2).send().await,
        "after the window",
    );
    up.wait_event(&id, 2, WAIT).await;
}

// ---------------------------------------------------------------------------------------
// Tokens and lifecycle events
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reinstall_while_an_event_waits_is_delivered_with_the_new_token() {
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = gateway(&up, &queued("")).await;
    let (id, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "accepted");
    let first = up.wait_event(&id, 1, WAIT).await;
    assert_eq!(first[0].token(), Some("xoxb-t1-token"));
    gw.store
        .save(
            CLIENT_ID,
            &workspace_install("T1", "U1", "xoxb-t1-reinstalled"),
        )
        .await
        .unwrap();
    up.set_status(200);
    eventually("delivered", WAIT, || async {
        listed(&admin_base(&gw), &id).await.is_none()
    })
    .await;
    let last = up.of_event(&id).pop().unwrap();
    assert_eq!(
        last.token(),
        Some("xoxb-t1-reinstalled"),
        "the token is looked up at delivery time"
    );
}

/// An `app_uninstalled` or `tokens_revoked` is accepted while the upstream fails; it acts at
/// once; T1 is reinstalled before it is delivered; the reinstall survives its delivery.
async fn lifecycle_event_acts_when_accepted_only(event: &str) {
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = gateway(&up, &queued("")).await;
    let base = admin_base(&gw);
    let id = fresh_event_id();
    assert_acked(
        &gw.post(callback("T1", "A111", &id, event)).send().await,
        "accepted",
    );
    let found = gw.store.find_bot(CLIENT_ID, &team("T1")).await.unwrap();
    assert!(
        found.is_none_or(|i| i.bot_token.is_none()),
        "{event}: in effect when accepted, before any delivery"
    );
    assert!(listed(&base, &id).await.is_some(), "and queued");
    up.wait_event(&id, 1, WAIT).await;

    gw.store
        .save(CLIENT_ID, &workspace_install("T1", "U1", "xoxb-t1-again"))
        .await
        .unwrap();
    up.set_status(200);
    eventually("delivered", WAIT, || async {
        listed(&base, &id).await.is_none()
    })
    .await;
    let delivered = up.of_event(&id).pop().unwrap();
    assert_eq!(
        delivered.token(),
        Some("xoxb-t1-again"),
        "{event}: delivered with the installation as it is at delivery"
    );
    let found = gw.store.find_bot(CLIENT_ID, &team("T1")).await.unwrap();
    assert_eq!(
        found
            .and_then(|i| i.bot_token)
            .map(|t| t.expose().to_owned()),
        Some("xoxb-t1-again".to_owned()),
        "{event}: not applied again at delivery: the reinstall survives"
    );
    let (next, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "next");
    let got = up.wait_event(&next, 1, WAIT).await;
    assert_eq!(got[0].token(), Some("xoxb-t1-again"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_uninstalled_acts_when_accepted_and_not_again_at_delivery() {
    lifecycle_event_acts_when_accepted_only(r#"{"type":"app_uninstalled"}"#).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_revoked_acts_when_accepted_and_not_again_at_delivery() {
    lifecycle_event_acts_when_accepted_only(
        r#"{"type":"tokens_revoked","tokens":{"oauth":[],"bot":["UT1BOT"]}}"#,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_token_is_refreshed_at_delivery_time() {
    use support::fake_slack::{FakeSlack, Grant};
    let slack = FakeSlack::start(CLIENT_ID, "fake-client-secret").await;
    // Tokens live an hour: outside a 10-minute refresh window, inside a 2-hour one.
    slack.enable_rotation(3600);
    let up = QueueUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml(&format!("[slack]\n{}", slack.toml()))
        .toml("[oauth]\ntoken_rotation_refresh_before = \"10m\"\n")
        .toml(&queued(""))
        .start()
        .await;
    keep_store(&gw);
    support::replicas::install(&slack, gw.public.port(), Grant::workspace("T0ROT", "U1"))
        .await
        .unwrap();
    let installed = gw
        .store
        .find_bot(CLIENT_ID, &team("T0ROT"))
        .await
        .unwrap()
        .unwrap()
        .bot_token
        .unwrap()
        .expose()
        .to_owned();
    up.set_status(503);
    let (id, body) = mention("T0ROT");
    assert_acked(&gw.post(body).send().await, "accepted");
    let first = up.wait_event(&id, 1, WAIT).await;
    assert_eq!(first[0].token(), Some(installed.as_str()));
    assert_eq!(slack.refresh_calls(), 0);

    // Now inside the refresh window: the next attempt refreshes first.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(&gw.config_path, text.replace("\"10m\"", "\"2h\"")).unwrap();
    let r = admin("POST", &admin_base(&gw), "/-/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    up.set_status(200);
    eventually("delivered", WAIT, || async {
        listed(&admin_base(&gw), &id).await.is_none()
    })
    .await;
    let last = up.of_event(&id).pop().unwrap();
    let token = last.token().unwrap();
    assert_ne!(token, installed, "refreshed at delivery");
    assert!(slack.token_is_valid(token), "with a token that works");
    assert!(slack.refresh_calls() >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_installation_the_event_is_delivered_without_a_token() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, &queued("")).await;
    let (id, body) = mention("T0NOBODY");
    assert_acked(&gw.post(body).send().await, "accepted");
    let got = up.wait_event(&id, 1, WAIT).await;
    assert_eq!(got[0].token(), None);
    assert_eq!(got[0].attempt(), Some(1));
    assert_eq!(got[0].header("x-slack-team-id"), Some("T0NOBODY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slack_retry_of_app_uninstalled_does_not_undo_a_reinstall() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, &queued("")).await;
    let id = fresh_event_id();
    let body = callback("T1", "A111", &id, r#"{"type":"app_uninstalled"}"#);
    let now = support::now();
    assert_acked(
        &gw.post(body.clone()).timestamp(now).send().await,
        "accepted",
    );
    up.wait_event(&id, 1, WAIT).await;
    gw.store
        .save(CLIENT_ID, &workspace_install("T1", "U1", "xoxb-t1-again"))
        .await
        .unwrap();
    // Slack sends the same event again (its answer was lost): a duplicate.
    let a = gw
        .post(body)
        .timestamp(now - 1)
        .header("x-slack-retry-num", "1")
        .header("x-slack-retry-reason", "http_error")
        .send()
        .await;
    assert_acked(&a, "the retry");
    let found = gw.store.find_bot(CLIENT_ID, &team("T1")).await.unwrap();
    assert_eq!(
        found
            .and_then(|i| i.bot_token)
            .map(|t| t.expose().to_owned()),
        Some("xoxb-t1-again".to_owned()),
        "a duplicate is not accepted again, so it does not act again"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_wide_event_is_delivered_with_the_org_token() {
    let up = QueueUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .seed(support::forwarding::e1_org())
        .toml(&queued(""))
        .start()
        .await;
    keep_store(&gw);
    let id = fresh_event_id();
    let body = format!(
        r#"{{"team_id":"T9","enterprise_id":"E1","api_app_id":"A111","type":"event_callback","event_id":"{id}","is_ext_shared_channel":false,"event":{{"type":"app_mention","user":"U1"}},"authorizations":[{{"enterprise_id":"E1","team_id":null,"user_id":"UE1BOT","is_bot":true,"is_enterprise_install":true}}]}}"#
    );
    assert_acked(&gw.post(body).send().await, "accepted");
    let got = up.wait_event(&id, 1, WAIT).await;
    assert_eq!(got[0].token(), Some("xoxb-e1-org-token"));
    assert_eq!(got[0].header("x-slack-enterprise-id"), Some("E1"));
    assert_eq!(got[0].header("x-slack-enterprise-install"), Some("true"));
}
