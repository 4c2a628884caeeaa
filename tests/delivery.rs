//! Queued delivery (SPEC "Queued delivery"), in process over real sockets: what Slack is
//! answered, what is queued and what stays direct, what the upstream receives and when
//! (re-signed, with `X-Gateway-Delivery-Attempt`, retried with doubling, jittered, capped
//! backoff, then a dead letter), `concurrency`, and bad signatures. Dedupe, tokens and
//! lifecycle events: tests/delivery_dedupe.rs; the admin API, metrics, reloads and Socket
//! Mode: tests/delivery_admin.rs; the binary: tests/delivery_binary.rs and (PostgreSQL
//! replicas) tests/delivery_replicas.rs.
//!
//! The upstream is [`QueueUpstream`]: it records each request with its arrival time, answers
//! as scripted, and can go down (connections refused) and come up again on its port. Every
//! wait is a poll with a deadline; the worker looks at the queue every 200 ms, so timing
//! bounds allow for that.

mod support;

use std::time::{Duration, Instant};

use support::delivery::*;
use support::forwarding::{assert_injected, interactive, slash_command, t1, Injected};
use support::{TestGateway, SIGNING_SECRET};

const WAIT: Duration = Duration::from_secs(5);

/// A gateway in front of `up` with T1 installed and `toml` merged over the base config.
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

fn t1_injected() -> Injected<'static> {
    Injected {
        token: "xoxb-t1-token",
        bot_id: "BT1",
        bot_user_id: "UT1BOT",
        team: Some("T1"),
        enterprise: None,
        enterprise_install: false,
    }
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
// Slack's answer
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_is_answered_200_empty_at_once_while_the_upstream_is_down_or_slow() {
    let up = QueueUpstream::start().await;
    let gw = gateway(
        &up,
        &format!("[upstream]\ntimeout = \"4s\"\n{}", queued("")),
    )
    .await;
    let base = admin_base(&gw);

    // Down: connections refused.
    up.down();
    let (down_id, body) = mention("T1");
    let started = Instant::now();
    let a = gw.post(body).send().await;
    let took = started.elapsed();
    assert_acked(&a, "upstream down");
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    let d = listed(&base, &down_id)
        .await
        .expect("the event is in the queue once Slack has its 200");
    assert_eq!(d["state"], "pending", "{d}");
    up.up().await;
    let got = up.wait_event(&down_id, 1, WAIT).await;
    assert!(
        got[0].attempt().unwrap() >= 2,
        "the refused attempt counted"
    );

    // Slow: the upstream holds each request for 3 s (upstream.timeout is 4 s).
    up.set_default(Reply {
        status: 200,
        delay: Duration::from_secs(3),
    });
    let (slow_id, body) = mention("T1");
    let started = Instant::now();
    let a = gw.post(body).send().await;
    let took = started.elapsed();
    assert_acked(&a, "upstream slow");
    assert!(
        took < Duration::from_millis(1000),
        "answered after {took:?}"
    );
    up.wait_event(&slow_id, 1, WAIT).await;
    assert!(
        listed(&base, &slow_id).await.is_some(),
        "still queued while the upstream holds it"
    );
    // Delivered once the upstream answers: no longer listed.
    eventually("the slow delivery ends", WAIT, || async {
        listed(&base, &slow_id).await.is_none()
    })
    .await;
    assert_eq!(up.of_event(&slow_id).len(), 1, "a 2xx ends it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hyper_path_queues_too() {
    // A chunked body is served by hyper rather than the fast lane: the same answer.
    let up = QueueUpstream::start().await;
    up.down();
    let gw = gateway(&up, &queued("")).await;
    let (id, body) = mention("T1");
    let req = support::chunked_signed_request(
        gw.public,
        "/slack/events",
        "application/json",
        &[&body.as_bytes()[..10], &body.as_bytes()[10..]],
    );
    let (status, text) = support::raw_http(gw.public, &req).await;
    assert_eq!(status, 200, "{text}");
    let (_, answer_body) = text.split_once("\r\n\r\n").unwrap();
    assert_eq!(answer_body, "", "empty body: {text}");
    assert!(listed(&admin_base(&gw), &id).await.is_some(), "queued");
    up.up().await;
    let got = up.wait_event(&id, 1, WAIT).await;
    assert_eq!(got[0].body, body.as_bytes(), "the body as Slack sent it");
}

// ---------------------------------------------------------------------------------------
// What is queued
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_event_callbacks_are_queued_everything_else_stays_direct() {
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = gateway(&up, &queued("")).await;
    let base = admin_base(&gw);

    // url_verification: answered by the gateway, as always.
    let a = gw
        .post(r#"{"type":"url_verification","token":"x","challenge":"ch4ll3nge"}"#)
        .send()
        .await;
    assert_eq!(a.status, 200, "{}", a.text());
    assert!(a.text().contains("ch4ll3nge"), "{}", a.text());

    // The rest: the upstream's answer (here 503) is Slack's answer.
    let direct = [
        ("slash command", slash_command("T1", "U1"), true),
        (
            "block_actions",
            interactive(&serde_json::json!({
                "type": "block_actions", "team": {"id": "T1"}, "user": {"id": "U1", "team_id": "T1"},
                "api_app_id": "A111", "trigger_id": support::unique_id(), "actions": []
            })),
            true,
        ),
        (
            "options (block_suggestion)",
            interactive(&serde_json::json!({
                "type": "block_suggestion", "team": {"id": "T1"}, "user": {"id": "U1", "team_id": "T1"},
                "api_app_id": "A111", "action_id": "a", "block_id": "b", "value": support::unique_id()
            })),
            true,
        ),
        (
            "app_rate_limited",
            format!(
                r#"{{"token":"x","type":"app_rate_limited","team_id":"T1","minute_rate_limited":{},"api_app_id":"A111"}}"#,
                support::now()
            ),
            false,
        ),
    ];
    for (what, body, is_form) in direct {
        let before = up.count();
        // A client copy of the attempt header is stripped here too.
        let post = gw
            .post(body.clone())
            .header("X-Gateway-Delivery-Attempt", "2");
        let post = if is_form { post.form() } else { post };
        let a = post.send().await;
        assert_eq!(a.status, 503, "{what}: the upstream's answer: {}", a.text());
        assert_eq!(a.text(), "upstream says ok", "{what}: the upstream's body");
        let got = up.requests();
        assert_eq!(got.len(), before + 1, "{what}: forwarded once, at once");
        assert_eq!(got[before].body, body.as_bytes(), "{what}");
        assert_eq!(got[before].attempt(), None, "{what}: no attempt header");
    }
    quiet(Duration::from_millis(400)).await;
    assert_eq!(up.count(), 4, "nothing retried");
    assert!(
        deliveries(&base, "").await.is_empty(),
        "nothing but event callbacks is queued"
    );

    // An event callback, even an app_mention answered 503: queued.
    let (id, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "event_callback");
    assert!(listed(&base, &id).await.is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_signatures_are_never_queued() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, &queued("")).await;
    let base = admin_base(&gw);
    let (_, body) = mention("T1");
    let refused = [
        (
            "wrong secret",
            gw.post(body.clone()).secret("not-the-secret"),
        ),
        (
            "stale",
            gw.post(body.clone()).timestamp(support::now() - 301),
        ),
        ("unsigned", gw.post(body.clone()).unsigned()),
        ("no signature", gw.post(body.clone()).without_signature()),
        (
            "garbage signature",
            gw.post(body.clone()).signature("v0=00ff"),
        ),
    ];
    for (what, post) in refused {
        let a = post.send().await;
        assert_eq!(a.status, 401, "{what}: {}", a.text());
    }
    // A body changed after signing.
    let (ts, sig) = support::sign_now(SIGNING_SECRET, body.as_bytes());
    let tampered = body.replace("app_mention", "app_mentiom");
    let a = gw
        .post(tampered)
        .timestamp(ts.parse().unwrap())
        .signature(&sig)
        .send()
        .await;
    assert_eq!(a.status, 401, "tampered: {}", a.text());

    quiet(Duration::from_millis(500)).await;
    assert!(deliveries(&base, "").await.is_empty(), "nothing queued");
    assert_eq!(up.count(), 0, "nothing delivered");
    assert_eq!(
        metric(
            &base,
            "slack_gateway_delivery_accepted_total{result=\"queued\"}"
        )
        .await,
        0.0
    );
    // The same event, signed: queued and delivered.
    assert_acked(&gw.post(body).send().await, "signed");
    up.wait_count(1, WAIT).await;
}

// ---------------------------------------------------------------------------------------
// What the upstream receives
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_is_the_direct_request_re_signed_with_the_attempt_number() {
    let paths = "[upstream]\nslack_paths = [\"/slack/events\", \"/slack/other\"]\n";
    let up = QueueUpstream::start().await;
    let direct = gateway(&up, paths).await;
    let queued_gw = gateway(&up, &format!("{paths}{}", queued(""))).await;

    // Signed 200 s ago (Slack's own timestamp is old by the time of delivery), sent to the
    // second Slack path with a query, with client copies of the attempt header.
    let ts = support::now() - 200;
    let send = |gw: &TestGateway, body: &str| {
        support::SlackPost::new(gw.url("/slack/other?source=test&x=1"), body.into())
            .timestamp(ts)
            .header("X-Gateway-Delivery-Attempt", "7")
            .header("x_gateway_delivery_attempt", "9")
            .header("x-slack-retry-num", "1")
            .header("x-slack-retry-reason", "http_timeout")
            .send()
    };
    let (direct_id, body) = mention("T1");
    let a = send(&direct, &body).await;
    assert_eq!(
        a.text(),
        "upstream says ok",
        "direct: the upstream's answer"
    );
    let d = up.of_event(&direct_id).pop().unwrap();
    assert_eq!(
        d.attempt(),
        None,
        "direct forwarding never sends the attempt header"
    );

    let (id, body) = mention("T1");
    assert_acked(&send(&queued_gw, &body).await, "queued");
    let q = up.wait_event(&id, 1, WAIT).await.pop().unwrap();
    assert_eq!(
        q.attempt(),
        Some(1),
        "the first attempt is 1; no client copy"
    );
    assert_eq!(
        q.path_and_query, "/slack/other?source=test&x=1",
        "the path it came to"
    );
    assert_eq!(q.body, body.as_bytes(), "the body byte for byte");
    assert_eq!(q.header("content-type"), Some("application/json"));
    assert_injected(
        &support::Recorded {
            peer: "127.0.0.1:1".parse().unwrap(),
            method: "POST".into(),
            path_and_query: q.path_and_query.clone(),
            headers: q.headers.clone(),
            body: q.body.clone(),
        },
        t1_injected(),
    );
    q.assert_signed_now(SIGNING_SECRET);
    assert_ne!(
        q.header("x-slack-request-timestamp"),
        Some(ts.to_string().as_str()),
        "signed afresh at delivery"
    );
}

/// SPEC: "POSTed to the upstream exactly as direct forwarding would", and direct forwarding
/// sets `X-Forwarded-For/Proto/Host` from the real peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_carries_the_forwarding_headers_direct_forwarding_sets() {
    let up = QueueUpstream::start().await;
    let direct = gateway(&up, "").await;
    let queued_gw = gateway(&up, &queued("")).await;
    let (direct_id, body) = mention("T1");
    direct.post(body).send().await;
    let d = up.of_event(&direct_id).pop().unwrap();
    let (id, body) = mention("T1");
    assert_acked(&queued_gw.post(body).send().await, "queued");
    let q = up.wait_event(&id, 1, WAIT).await.pop().unwrap();
    for name in ["x-forwarded-for", "x-forwarded-proto"] {
        assert_eq!(q.header(name), d.header(name), "{name}");
    }
    let host = |r: &Delivered| r.header("x-forwarded-host").map(str::to_owned);
    assert_eq!(
        host(&q).map(|h| h.replace(&queued_gw.public.to_string(), "GW")),
        host(&d).map(|h| h.replace(&direct.public.to_string(), "GW")),
        "X-Forwarded-Host: the Host Slack sent"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_forwarding_strips_a_client_sent_attempt_header() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, "").await;
    for spelling in [
        "X-Gateway-Delivery-Attempt",
        "x_gateway_delivery_attempt",
        "X-GATEWAY-DELIVERY_ATTEMPT",
    ] {
        let (id, body) = mention("T1");
        let a = gw.post(body).header(spelling, "3").send().await;
        assert_eq!(a.text(), "upstream says ok", "direct");
        let got = up.of_event(&id);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].attempt(), None, "{spelling} reached the upstream");
    }
    // hyper's path (a chunked body) strips it too.
    let (id, body) = mention("T1");
    let mut req = support::chunked_signed_request(
        gw.public,
        "/slack/events",
        "application/json",
        &[body.as_bytes()],
    );
    let at = req.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    req.splice(at..at, b"\r\nX-Gateway-Delivery-Attempt: 5".iter().copied());
    let (status, text) = support::raw_http(gw.public, &req).await;
    assert_eq!(status, 200, "{text}");
    let got = up.of_event(&id);
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].attempt(),
        None,
        "hyper: the client copy reached the upstream"
    );
    assert!(deliveries(&admin_base(&gw), "").await.is_empty());
}

// ---------------------------------------------------------------------------------------
// Retries
// ---------------------------------------------------------------------------------------

/// The time between consecutive attempts.
fn gaps(attempts: &[Delivered]) -> Vec<Duration> {
    attempts.windows(2).map(|w| w[1].at - w[0].at).collect()
}

/// What the worker's 200 ms look at the queue, and a busy machine, may add to a wait.
const LATE: Duration = Duration::from_millis(350);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_retried_with_doubling_backoff_then_kept_as_a_dead_letter() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = gateway(
        &up,
        "[delivery]\nmode = \"queued\"\nretry_backoff = \"400ms\"\nretry_backoff_max = \"10s\"\nmax_attempts = 3\n",
    )
    .await;
    let base = admin_base(&gw);
    let (id, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "accepted");
    let got = up.wait_event(&id, 3, WAIT).await;
    let numbers: Vec<_> = got.iter().map(|r| r.attempt().unwrap()).collect();
    assert_eq!(numbers, [1, 2, 3], "attempts numbered from 1");
    let g = gaps(&got);
    let ms = Duration::from_millis;
    assert!(
        g[0] >= ms(400) && g[0] <= ms(500) + LATE,
        "first wait: retry_backoff plus up to 25%: {g:?}"
    );
    assert!(
        g[1] >= ms(800) && g[1] <= ms(1000) + LATE,
        "second wait: doubled: {g:?}"
    );
    for r in &got {
        r.assert_signed_now(SIGNING_SECRET);
        assert_eq!(r.token(), Some("xoxb-t1-token"));
    }

    // max_attempts reached: a dead letter, attempted no more.
    eventually("a dead letter", WAIT, || async {
        listed(&base, &id)
            .await
            .is_some_and(|d| d["state"] == "dead")
    })
    .await;
    let d = listed(&base, &id).await.unwrap();
    assert_eq!(d["attempts"], 3, "{d}");
    assert!(
        d["last_error"].as_str().is_some_and(|e| e.contains("500")),
        "last_error names the upstream's status: {d}"
    );
    quiet(Duration::from_millis(1800)).await;
    assert_eq!(up.of_event(&id).len(), 3, "no attempt after the last");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_2xx_ends_it_and_any_other_status_is_retried() {
    let up = QueueUpstream::start().await;
    let gw = gateway(&up, &queued("")).await;
    let base = admin_base(&gw);
    for status in [200, 201, 202, 204] {
        up.script([Reply::status(status)]);
        let (id, body) = mention("T1");
        assert_acked(&gw.post(body).send().await, "accepted");
        up.wait_event(&id, 1, WAIT).await;
        eventually("the delivery is removed", WAIT, || async {
            listed(&base, &id).await.is_none()
        })
        .await;
        quiet(Duration::from_millis(300)).await;
        assert_eq!(up.of_event(&id).len(), 1, "{status} ends it");
    }
    let statuses = [101, 301, 304, 400, 404, 409, 429, 500, 502, 504];
    up.script(statuses.iter().map(|s| Reply::status(*s)));
    let (id, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "accepted");
    let got = up
        .wait_event(&id, statuses.len() + 1, Duration::from_secs(15))
        .await;
    let numbers: Vec<u32> = got.iter().map(|r| r.attempt().unwrap()).collect();
    let want: Vec<u32> = (1..=statuses.len() as u32 + 1).collect();
    assert_eq!(numbers, want, "each non-2xx answer was retried");
    eventually("the delivery is removed", WAIT, || async {
        listed(&base, &id).await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_and_timed_out_attempts_are_retried() {
    let up = QueueUpstream::start().await;
    let gw = gateway(
        &up,
        &format!("[upstream]\ntimeout = \"300ms\"\n{}", queued("")),
    )
    .await;
    let base = admin_base(&gw);

    // Refused: the queue counts the attempts; the first that connects carries their number.
    up.down();
    let (id, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "accepted");
    eventually("two refused attempts", WAIT, || async {
        listed(&base, &id)
            .await
            .is_some_and(|d| d["attempts"].as_u64() >= Some(2))
    })
    .await;
    let d = listed(&base, &id).await.unwrap();
    assert!(d["last_error"].is_string(), "{d}");
    up.up().await;
    let got = up.wait_event(&id, 1, WAIT).await;
    assert!(got[0].attempt().unwrap() >= 3, "{:?}", got[0].attempt());

    // Timed out: held past upstream.timeout, then tried again.
    up.script([Reply {
        status: 200,
        delay: Duration::from_secs(2),
    }]);
    let (id, body) = mention("T1");
    let started = Instant::now();
    assert_acked(&gw.post(body).send().await, "accepted");
    assert!(started.elapsed() < Duration::from_millis(300));
    let got = up.wait_event(&id, 2, WAIT).await;
    assert_eq!(got[0].attempt(), Some(1));
    assert_eq!(got[1].attempt(), Some(2), "retried after the timeout");
    eventually("delivered", WAIT, || async {
        listed(&base, &id).await.is_none()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backoff_stops_doubling_at_retry_backoff_max() {
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = gateway(
        &up,
        "[delivery]\nmode = \"queued\"\nretry_backoff = \"400ms\"\nretry_backoff_max = \"500ms\"\nmax_attempts = 4\n",
    )
    .await;
    let (id, body) = mention("T1");
    assert_acked(&gw.post(body).send().await, "accepted");
    let got = up.wait_event(&id, 4, WAIT).await;
    let g = gaps(&got);
    let ms = Duration::from_millis;
    assert!(g[0] >= ms(400) && g[0] <= ms(500) + LATE, "{g:?}");
    for wait in &g[1..] {
        assert!(
            *wait >= ms(500) && *wait <= ms(500) + LATE,
            "capped at retry_backoff_max, jitter included: {g:?}"
        );
    }
    eventually("a dead letter after 4", WAIT, || async {
        listed(&admin_base(&gw), &id)
            .await
            .is_some_and(|d| d["state"] == "dead" && d["attempts"] == 4)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_are_jittered_by_up_to_a_quarter() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = gateway(
        &up,
        "[delivery]\nmode = \"queued\"\nretry_backoff = \"2s\"\nretry_backoff_max = \"1m\"\nmax_attempts = 2\n",
    )
    .await;
    let mut ids = Vec::new();
    for _ in 0..16 {
        let (id, body) = mention("T1");
        assert_acked(&gw.post(body).send().await, "accepted");
        ids.push(id);
    }
    let mut waits = Vec::new();
    for id in &ids {
        let got = up.wait_event(id, 2, Duration::from_secs(8)).await;
        waits.push(got[1].at - got[0].at);
    }
    waits.sort();
    let (min, max) = (waits[0], waits[waits.len() - 1]);
    let ms = Duration::from_millis;
    assert!(min >= ms(2000), "never before retry_backoff: {waits:?}");
    assert!(max <= ms(2500) + LATE, "at most 25% of jitter: {waits:?}");
    // Without jitter every wait would be 2 s plus at most one 200 ms look at the queue.
    assert!(
        max >= ms(2350),
        "16 retries of 2 s, none more than 350 ms late: no jitter? {waits:?}"
    );
}

// ---------------------------------------------------------------------------------------
// Concurrency
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_concurrency_deliveries_are_in_flight_and_a_reload_changes_it() {
    let up = QueueUpstream::start().await;
    up.set_default(Reply {
        status: 200,
        delay: Duration::from_millis(400),
    });
    let gw = gateway(&up, &queued("concurrency = 2\n")).await;
    for _ in 0..8 {
        let (_, body) = mention("T1");
        assert_acked(&gw.post(body).send().await, "accepted");
    }
    up.wait_count(8, WAIT).await;
    assert_eq!(up.max_in_flight(), 2, "concurrency = 2");

    // Reloaded to 5.
    let text = std::fs::read_to_string(&gw.config_path).unwrap();
    std::fs::write(
        &gw.config_path,
        text.replace("concurrency = 2", "concurrency = 5"),
    )
    .unwrap();
    let r = admin("POST", &admin_base(&gw), "/-/reload", None).await;
    assert_eq!(r.status, 200, "{}", r.text());
    eventually("the first 8 are done", WAIT, || async {
        deliveries(&admin_base(&gw), "").await.is_empty()
    })
    .await;
    up.reset_max_in_flight();
    for _ in 0..15 {
        let (_, body) = mention("T1");
        assert_acked(&gw.post(body).send().await, "accepted");
    }
    up.wait_count(23, WAIT).await;
    assert_eq!(up.max_in_flight(), 5, "concurrency = 5 after the reload");
}
