//! Queued delivery, in process over real sockets: the admin API (`/admin/deliveries`: list,
//! retry one, retry every dead letter, drop; 404 for unknown ids; the admin token), the
//! `slack_gateway_delivery_*` metrics, `[delivery]` validated and reloaded live, and Socket
//! Mode's events acked once stored. The upstream is [`QueueUpstream`] (see tests/delivery.rs).

mod support;

use std::time::Duration;

use serde_json::{json, Value};
use support::delivery::*;
use support::fake_socket::{Envelope, FakeSocketSlack};
use support::forwarding::t1;
use support::{TestGateway, SIGNING_SECRET};

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

fn base(gw: &TestGateway) -> String {
    format!("http://{}", gw.admin)
}

async fn accept(gw: &TestGateway) -> String {
    let (id, body) = mention("T1");
    let a = gw.post(body).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.body.is_empty(), "queued: {}", a.text());
    id
}

/// Sets `[delivery]` keys (values as TOML, e.g. `"\"30s\""`) in the gateway's config file and
/// reloads: the reload's answer.
async fn set_delivery(gw: &TestGateway, keys: &[(&str, &str)]) -> support::Answer {
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    let mut table: toml::Table = text.parse().unwrap();
    let delivery = table
        .entry("delivery")
        .or_insert_with(|| toml::Value::Table(toml::Table::new()))
        .as_table_mut()
        .unwrap();
    for (k, v) in keys {
        let parsed: toml::Table = format!("v = {v}").parse().unwrap();
        delivery.insert((*k).to_owned(), parsed["v"].clone());
    }
    std::fs::write(&gw.config_path, toml::to_string(&table).unwrap()).unwrap();
    admin("POST", &base(gw), "/-/reload", None).await
}

/// The id of `event_id`'s delivery, once it is in `state`.
async fn wait_state(gw: &TestGateway, event_id: &str, state: &str) -> Value {
    let b = base(gw);
    eventually(&format!("{event_id} is {state}"), WAIT, || async {
        listed(&b, event_id)
            .await
            .is_some_and(|d| d["state"] == state)
    })
    .await;
    listed(&b, event_id).await.unwrap()
}

fn delivery_id(d: &Value) -> String {
    d["id"].as_str().unwrap().to_owned()
}

// ---------------------------------------------------------------------------------------
// The admin API
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_lists_pending_and_dead_deliveries_with_their_fields() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = gateway(&up, &queued("max_attempts = 2\n")).await;
    let b = base(&gw);
    let dead_id = accept(&gw).await;
    let dead = wait_state(&gw, &dead_id, "dead").await;

    // Retries 30 s apart from now on (retry_backoff reloads live): one failed attempt, then
    // a long wait, pending.
    let r = set_delivery(
        &gw,
        &[
            ("retry_backoff", "\"30s\""),
            ("retry_backoff_max", "\"30s\""),
        ],
    )
    .await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pending_id = accept(&gw).await;
    up.wait_event(&pending_id, 1, WAIT).await;
    eventually("the failed attempt is recorded", WAIT, || async {
        listed(&b, &pending_id)
            .await
            .is_some_and(|d| d["attempts"] == 1)
    })
    .await;
    let now = support::now();

    let pending = deliveries(&b, "?state=pending").await;
    assert_eq!(pending.len(), 1, "{pending:?}");
    let p = &pending[0];
    assert!(p["id"].as_str().is_some_and(|s| !s.is_empty()), "{p}");
    assert_eq!(p["event_id"], pending_id.as_str());
    assert_eq!(p["api_app_id"], "A111");
    assert_eq!(p["team_id"], "T1");
    assert_eq!(p["state"], "pending");
    assert_eq!(p["attempts"], 1);
    assert!(
        p["last_error"].as_str().is_some_and(|e| e.contains("500")),
        "{p}"
    );
    let received = p["received_at"].as_u64().expect("Unix seconds, an integer");
    assert!(
        received.abs_diff(now) <= 5,
        "received_at {received}, now {now}"
    );
    let next = p["next_attempt_at"].as_u64().expect("Unix seconds");
    assert!(
        next >= now + 28 && next <= now + 39,
        "next_attempt_at {next}: 30 s (plus jitter) after the failure at about {now}"
    );

    let dead_list = deliveries(&b, "?state=dead").await;
    assert_eq!(dead_list.len(), 1, "{dead_list:?}");
    let d = &dead_list[0];
    assert_eq!(d["id"], dead["id"]);
    assert_eq!(d["event_id"], dead_id.as_str());
    assert_eq!(d["state"], "dead");
    assert_eq!(d["attempts"], 2);
    assert!(d["last_error"].as_str().is_some_and(|e| e.contains("500")));

    let both = deliveries(&b, "").await;
    let mut ids: Vec<&str> = both
        .iter()
        .map(|d| d["event_id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    let mut want = [dead_id.as_str(), pending_id.as_str()];
    want.sort_unstable();
    assert_eq!(ids, want, "no state: both");

    let a = admin("GET", &b, "/admin/deliveries?state=bogus", None).await;
    assert_eq!(a.status, 400, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_are_retried_one_or_all_with_their_attempts_reset() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = gateway(&up, &queued("max_attempts = 2\n")).await;
    let b = base(&gw);
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(accept(&gw).await);
    }
    let mut ids = Vec::new();
    for e in &events {
        ids.push(delivery_id(&wait_state(&gw, e, "dead").await));
    }

    // One, still failing: attempted again from 1, dead again after 2.
    let a = admin(
        "POST",
        &b,
        &format!("/admin/deliveries/{}/retry", ids[0]),
        None,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.text());
    let got = up.wait_event(&events[0], 4, WAIT).await;
    let numbers: Vec<_> = got.iter().map(|r| r.attempt().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 1, 2], "attempts reset by the retry");
    let again = wait_state(&gw, &events[0], "dead").await;
    assert_eq!(again["attempts"], 2);
    assert_eq!(up.of_event(&events[1]).len(), 2, "only the one retried");

    // All of them, now that the upstream works.
    up.set_status(200);
    let a = admin("POST", &b, "/admin/deliveries/retry?state=dead", None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    eventually("the queue is empty", WAIT, || async {
        deliveries(&b, "").await.is_empty()
    })
    .await;
    for e in &events {
        let got = up.of_event(e);
        let last = got.last().unwrap();
        assert_eq!(last.attempt(), Some(1), "{e}: attempts reset");
        last.assert_signed_now(SIGNING_SECRET);
    }
    // Nothing dead: retrying all again is fine and changes nothing.
    let a = admin("POST", &b, "/admin/deliveries/retry?state=dead", None).await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_delivery_is_gone_and_unknown_ids_are_404() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = gateway(&up, &queued("max_attempts = 1\n")).await;
    let b = base(&gw);

    // A dead letter, dropped.
    let dead_event = accept(&gw).await;
    let id = delivery_id(&wait_state(&gw, &dead_event, "dead").await);
    let a = admin("DELETE", &b, &format!("/admin/deliveries/{id}"), None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(listed(&b, &dead_event).await.is_none(), "dropped");
    for (method, path) in [
        ("DELETE", format!("/admin/deliveries/{id}")),
        ("POST", format!("/admin/deliveries/{id}/retry")),
    ] {
        let a = admin(method, &b, &path, None).await;
        assert_eq!(
            a.status,
            404,
            "{method} {path} after the drop: {}",
            a.text()
        );
    }

    // A pending one, dropped before the upstream comes back: never delivered.
    up.down();
    let r = set_delivery(&gw, &[("max_attempts", "50")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let pending_event = accept(&gw).await;
    let id = delivery_id(&listed(&b, &pending_event).await.unwrap());
    let a = admin("DELETE", &b, &format!("/admin/deliveries/{id}"), None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(listed(&b, &pending_event).await.is_none());
    up.set_status(200);
    up.up().await;
    let check = accept(&gw).await;
    up.wait_event(&check, 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        up.of_event(&pending_event).is_empty(),
        "a dropped delivery was delivered"
    );

    // Ids that never were.
    let unknown = format!("d{}", "0".repeat(28));
    for id in [unknown.as_str(), "nope", "d123", "..%2F..%2Fx"] {
        for (method, path) in [
            ("DELETE", format!("/admin/deliveries/{id}")),
            ("POST", format!("/admin/deliveries/{id}/retry")),
        ] {
            let a = admin(method, &b, &path, None).await;
            assert_eq!(a.status, 404, "{method} {path}: {}", a.text());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_token_guards_the_deliveries_api() {
    const TOKEN: &str = "delivery-admin-token-1234567890";
    let up = QueueUpstream::start().await;
    let gw = gateway(
        &up,
        &format!("{}[admin]\ntoken = \"{TOKEN}\"\n", queued("")),
    )
    .await;
    let b = base(&gw);
    let unknown = format!("/admin/deliveries/d{}", "0".repeat(28));
    let calls = [
        ("GET", "/admin/deliveries".to_owned(), 200),
        ("GET", "/admin/deliveries?state=dead".to_owned(), 200),
        ("POST", "/admin/deliveries/retry?state=dead".to_owned(), 200),
        ("POST", format!("{unknown}/retry"), 404),
        ("DELETE", unknown.clone(), 404),
    ];
    for (method, path, with_token) in calls {
        for bearer in [None, Some("wrong-token")] {
            let a = admin(method, &b, &path, bearer).await;
            assert_eq!(
                a.status,
                401,
                "{method} {path} with {bearer:?}: {}",
                a.text()
            );
        }
        let a = admin(method, &b, &path, Some(TOKEN)).await;
        assert_eq!(a.status, with_token, "{method} {path}: {}", a.text());
    }
}

// ---------------------------------------------------------------------------------------
// Metrics
// ---------------------------------------------------------------------------------------

const DEPTH: &str = "slack_gateway_delivery_queue_depth";
const AGE: &str = "slack_gateway_delivery_oldest_pending_age_seconds";
const DEAD: &str = "slack_gateway_delivery_dead_letters";

fn attempts(result: &str) -> String {
    format!("slack_gateway_delivery_attempts_total{{result=\"{result}\"}}")
}

fn accepted(result: &str) -> String {
    format!("slack_gateway_delivery_accepted_total{{result=\"{result}\"}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_depth_age_attempts_and_dead_letters() {
    let up = QueueUpstream::start().await;
    up.down();
    let gw = gateway(&up, &queued("max_attempts = 3\n")).await;
    let b = base(&gw);
    // Gauges are refreshed about every second.
    let gauge_wait = Duration::from_secs(3);
    let first = accept(&gw).await;
    accept(&gw).await;
    assert_eq!(metric(&b, &accepted("queued")).await, 2.0);
    // Refused three times each: 2 failed attempts, then a dead letter.
    wait_metric(&b, &attempts("failed"), 4.0, WAIT).await;
    wait_metric(&b, &attempts("dead"), 2.0, WAIT).await;
    wait_metric(&b, DEAD, 2.0, gauge_wait).await;
    wait_metric(&b, DEPTH, 0.0, gauge_wait).await;
    wait_metric(&b, AGE, 0.0, gauge_wait).await;
    assert_eq!(metric(&b, &attempts("delivered")).await, 0.0);

    // Pending ones: counted, and the oldest one's age grows.
    let r = set_delivery(&gw, &[("max_attempts", "100")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    accept(&gw).await;
    accept(&gw).await;
    accept(&gw).await;
    wait_metric(&b, DEPTH, 3.0, gauge_wait).await;
    eventually(
        "the oldest pending event's age reaches 1.5 s",
        WAIT,
        || async { metric(&b, AGE).await >= 1.5 },
    )
    .await;
    let age = metric(&b, AGE).await;
    assert!(age < 10.0, "age {age}");

    // Delivered, and the dead letters retried and delivered.
    up.up().await;
    let a = admin("POST", &b, "/admin/deliveries/retry?state=dead", None).await;
    assert_eq!(a.status, 200, "{}", a.text());
    up.wait_event(&first, 1, WAIT).await;
    wait_metric(&b, &attempts("delivered"), 5.0, WAIT).await;
    wait_metric(&b, DEPTH, 0.0, gauge_wait).await;
    wait_metric(&b, DEAD, 0.0, gauge_wait).await;
    wait_metric(&b, AGE, 0.0, gauge_wait).await;
    assert_eq!(metric(&b, &accepted("queued")).await, 5.0);
    assert_eq!(metric(&b, &accepted("duplicate")).await, 0.0);
}

// ---------------------------------------------------------------------------------------
// Config: validated, reloaded live
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_delivery_settings_are_refused_on_reload_naming_the_key() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, &queued("")).await;
    let good = std::fs::read_to_string(&gw.config_path).unwrap();
    let section = "[delivery]\n";
    assert!(good.contains(section), "{good}");
    let bad = [
        ("mode = \"later\"\n", "delivery.mode"),
        ("mode = \"\"\n", "delivery.mode"),
        ("max_attempts = 0\n", "delivery.max_attempts"),
        ("concurrency = 0\n", "delivery.concurrency"),
        ("retry_backoff = \"soon\"\n", "delivery.retry_backoff"),
        ("dedupe_window = \"-1s\"\n", "delivery.dedupe_window"),
        ("retries = 3\n", "retries"),
    ];
    for (line, key) in bad {
        // Each bad key replaces its good one (or is added) at the top of [delivery].
        let name = line.split(' ').next().unwrap();
        let kept: String = good
            .lines()
            .filter(|l| !l.starts_with(&format!("{name} =")))
            .map(|l| format!("{l}\n"))
            .collect();
        std::fs::write(
            &gw.config_path,
            kept.replacen(section, &format!("{section}{line}"), 1),
        )
        .unwrap();
        let r = admin("POST", &base(&gw), "/-/reload", None).await;
        assert_eq!(r.status, 422, "{line}: {}", r.text());
        assert!(
            r.text().contains(key),
            "{line}: the error names {key}: {}",
            r.text()
        );
        // The old config stays: still queued.
        accept(&gw).await;
    }
    // retry_backoff_max below retry_backoff.
    std::fs::write(
        &gw.config_path,
        good.replace(
            "retry_backoff_max = \"400ms\"",
            "retry_backoff_max = \"50ms\"",
        ),
    )
    .unwrap();
    let r = admin("POST", &base(&gw), "/-/reload", None).await;
    assert_eq!(r.status, 422, "{}", r.text());
    assert!(
        r.text().contains("delivery.retry_backoff_max"),
        "{}",
        r.text()
    );
    accept(&gw).await;
    std::fs::write(&gw.config_path, &good).unwrap();
    let r = admin("POST", &base(&gw), "/-/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mode_switches_on_reload_and_queued_events_are_still_delivered() {
    let up = QueueUpstream::start().await;
    let gw = gateway(
        &up,
        "[delivery]\nmode = \"direct\"\nretry_backoff = \"100ms\"\n",
    )
    .await;
    let (id, body) = mention("T1");
    let a = gw.post(body).send().await;
    assert_eq!(a.text(), "upstream says ok", "direct");
    assert_eq!(up.of_event(&id)[0].attempt(), None);

    let r = set_delivery(&gw, &[("mode", "\"queued\"")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    up.down();
    let waiting = accept(&gw).await;

    // Back to direct with an event still queued: it is delivered all the same.
    let r = set_delivery(&gw, &[("mode", "\"direct\"")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    up.up().await;
    let got = up.wait_event(&waiting, 1, WAIT).await;
    assert!(got[0].attempt().is_some(), "a queued delivery");
    let (id, body) = mention("T1");
    let a = gw.post(body).send().await;
    assert_eq!(a.text(), "upstream says ok", "direct again");
    assert_eq!(up.of_event(&id)[0].attempt(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_attempts_reloads_live() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = gateway(&up, &queued("")).await;
    let id = accept(&gw).await;
    up.wait_event(&id, 2, WAIT).await;
    let r = set_delivery(&gw, &[("max_attempts", "3")]).await;
    assert_eq!(r.status, 200, "{}", r.text());
    let d = wait_state(&gw, &id, "dead").await;
    let n = d["attempts"].as_u64().unwrap();
    assert!((3..=4).contains(&n), "dead at the new maximum: {d}");
}

// ---------------------------------------------------------------------------------------
// Socket Mode
// ---------------------------------------------------------------------------------------

const APP_TOKEN: &str = "xapp-1-A111-4242-deliverytestsecret";

fn event_payload(event_id: &str) -> Value {
    serde_json::from_str(&callback(
        "T1",
        "A111",
        event_id,
        r#"{"type":"app_mention","user":"U1","text":"hi"}"#,
    ))
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_mode_events_are_acked_once_stored_and_deduped() {
    let fake = FakeSocketSlack::start().await;
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = TestGateway::builder(up.url())
        .seed(t1())
        .toml(&format!(
            "[slack]\napi_url = \"{}\"\n[socket_mode]\nenabled = true\napp_token = \"{APP_TOKEN}\"\n\
             connections = 1\n",
            fake.api_url()
        ))
        .toml(&queued(""))
        .start()
        .await;
    keep_store(&gw);
    let b = base(&gw);
    fake.wait_serving(1, "the socket is up").await;

    let event_id = fresh_event_id();
    let env = Envelope::events_api(event_payload(&event_id)).accepts_response_payload(true);
    fake.send_envelope(1, &env);
    let ack = fake
        .wait_ack(&env.id, "an event, the upstream failing")
        .await;
    assert_eq!(ack.value, json!({"envelope_id": env.id}), "a plain ack");
    let d = listed(&b, &event_id)
        .await
        .expect("stored by the time it was acked");
    assert_eq!(d["state"], "pending");

    // Slack's redelivery under a new envelope id: acked, not queued again.
    let again = Envelope::events_api(event_payload(&event_id)).retry(1, "timeout");
    fake.send_envelope(1, &again);
    fake.wait_ack(&again.id, "the redelivery").await;
    let mine: Vec<_> = deliveries(&b, "")
        .await
        .into_iter()
        .filter(|d| d["event_id"] == event_id.as_str())
        .collect();
    assert_eq!(mine.len(), 1, "{mine:?}");

    // A slash command stays direct: the failing upstream means no ack.
    let before = up.count();
    let cmd = Envelope::slash_commands(json!({
        "team_id": "T1", "user_id": "U1", "command": "/gw", "text": "hi",
        "api_app_id": "A111", "trigger_id": support::unique_id()
    }));
    fake.send_envelope(1, &cmd);
    up.wait_count(before + 1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(fake.acks_for(&cmd.id).is_empty(), "{}", fake.report());

    // The upstream recovers: the event is delivered once, HTTP mode's format, re-signed.
    up.set_status(200);
    eventually("delivered", WAIT, || async {
        listed(&b, &event_id).await.is_none()
    })
    .await;
    let got = up.of_event(&event_id);
    let last = got.last().unwrap();
    assert!(
        got.iter().all(|r| r.attempt().is_some()),
        "all queued attempts"
    );
    assert_eq!(last.path_and_query, "/slack/events");
    assert_eq!(last.header("content-type"), Some("application/json"));
    last.assert_signed_now(SIGNING_SECRET);
    assert_eq!(last.token(), Some("xoxb-t1-token"));
    let body: Value = serde_json::from_slice(&last.body).unwrap();
    assert_eq!(
        body,
        event_payload(&event_id),
        "the payload as HTTP mode sends it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retrying_a_delivery_in_flight_does_not_send_it_twice() {
    let up = QueueUpstream::start().await;
    up.script([Reply {
        status: 200,
        delay: Duration::from_millis(1500),
    }]);
    let gw = gateway(&up, &queued("")).await;
    let b = base(&gw);
    let event = accept(&gw).await;
    up.wait_event(&event, 1, WAIT).await;
    let id = delivery_id(&listed(&b, &event).await.expect("in flight, still listed"));
    let a = admin("POST", &b, &format!("/admin/deliveries/{id}/retry"), None).await;
    assert!(
        a.status == 200 || a.status == 409 || a.status == 404,
        "{}",
        a.text()
    );
    eventually("delivered", WAIT, || async {
        listed(&b, &event).await.is_none()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        up.of_event(&event).len(),
        1,
        "the first attempt succeeded: delivered once, not again because of a retry"
    );
}
