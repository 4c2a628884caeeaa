//! Queued delivery with real gateway processes on one PostgreSQL schema: the replicas share
//! the queue (any one delivers any queued event, each once while the upstream succeeds, a
//! Slack retry to another replica is a duplicate), an event is stored before Slack's 200 (a
//! replica killed right after loses none), an event a killed replica was delivering is taken
//! over by another within `upstream.timeout` + 10 s, and the admin API and CLI work on it.
//!
//! Each replica gets an upstream of its own ([`QueueUpstream`]), so a test knows which one
//! delivered what.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use support::binary::SIGNING_SECRET;
use support::delivery::*;
use support::postgres::Schema;

const TIMEOUT: &str = "2s";
/// `upstream.timeout` + 10 s: the SPEC's bound for a takeover.
const TAKEOVER: Duration = Duration::from_secs(12);

async fn accept(gw: &Binary, body: &str) {
    let (status, text) = gw.send(body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "", "queued mode answers with an empty body");
}

/// How many times each event id reached `ups` together.
fn counts(ups: &[&QueueUpstream]) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for up in ups {
        for r in up.requests() {
            *out.entry(r.event_id().unwrap()).or_default() += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replicas_share_the_queue_and_deliver_each_event_once() {
    let schema = Schema::new("delivery_share");
    let (up_a, up_b) = (QueueUpstream::start().await, QueueUpstream::start().await);
    for up in [&up_a, &up_b] {
        up.set_default(Reply {
            status: 200,
            delay: Duration::from_millis(150),
        });
    }
    let extra = queued("concurrency = 2\n");
    let a = Binary::start(Some(&schema), up_a.addr, TIMEOUT, &extra).await;
    let b = Binary::start(Some(&schema), up_b.addr, TIMEOUT, &extra).await;

    // 30 events through A (more than A alone delivers quickly), 10 through B, and Slack's
    // retries of five of A's through B.
    let mut bodies = Vec::new();
    let mut ids = BTreeSet::new();
    for i in 0..40 {
        let (id, body) = mention("T1");
        accept(if i < 30 { &a } else { &b }, &body).await;
        ids.insert(id);
        bodies.push(body);
    }
    for body in &bodies[..5] {
        // Older than any original (sent in the last seconds): never an exact replay.
        let ts = slack_gateway::http::unix_now() - 30;
        let (status, text) = support::binary::send_exact(b.public, ts, body)
            .await
            .unwrap();
        assert_eq!((status, text.as_str()), (200, ""), "a retry through B");
    }

    eventually("every event delivered", Duration::from_secs(20), || async {
        counts(&[&up_a, &up_b]).len() == ids.len()
    })
    .await;
    // Past a lease and more: nothing is delivered twice.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let seen = counts(&[&up_a, &up_b]);
    assert_eq!(seen.keys().cloned().collect::<BTreeSet<_>>(), ids);
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "delivered more than once: {twice:?}");

    let from_a: BTreeSet<String> = bodies[..30]
        .iter()
        .map(|b| event_id_of(b.as_bytes()).unwrap())
        .collect();
    let a_by_b = up_b
        .requests()
        .iter()
        .filter(|r| from_a.contains(&r.event_id().unwrap()))
        .count();
    assert!(
        a_by_b > 0,
        "B delivered none of the events A accepted (A {}, B {})",
        up_a.count(),
        up_b.count()
    );
    for r in up_a.requests().iter().chain(up_b.requests().iter()) {
        assert_eq!(r.attempt(), Some(1));
        r.assert_signed_now(SIGNING_SECRET);
    }
    for gw in [&a, &b] {
        assert!(deliveries(&gw.admin_base(), "").await.is_empty());
        assert_eq!(
            metric(
                &gw.admin_base(),
                "slack_gateway_delivery_accepted_total{result=\"duplicate\"}"
            )
            .await,
            if std::ptr::eq(gw, &b) { 5.0 } else { 0.0 }
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_accepted_by_a_replica_killed_right_after_are_delivered_by_another() {
    let schema = Schema::new("delivery_durable");
    let up_b = QueueUpstream::start().await;
    // A's upstream is down: A cannot deliver anything.
    let down = QueueUpstream::start().await;
    down.down();
    let mut a = Binary::start(Some(&schema), down.addr, TIMEOUT, &queued("")).await;
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let (_, body) = mention("T1");
        accept(&a, &body).await;
        bodies.push(body);
    }
    a.kill();
    let started = Instant::now();
    let b = Binary::start(Some(&schema), up_b.addr, TIMEOUT, &queued("")).await;
    let ids: BTreeSet<String> = bodies
        .iter()
        .map(|b| event_id_of(b.as_bytes()).unwrap())
        .collect();
    eventually(
        "B delivers what A accepted",
        TAKEOVER + Duration::from_millis(500),
        || async { counts(&[&up_b]).len() == ids.len() },
    )
    .await;
    eprintln!("delivered by B {:?} after it started", started.elapsed());

    // Slack's retry of one of them, to B: accepted before (by A), not queued again.
    let ts = slack_gateway::http::unix_now() - 30;
    let (status, _) = support::binary::send_exact(b.public, ts, &bodies[0])
        .await
        .unwrap();
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        counts(&[&up_b]).values().all(|n| *n == 1),
        "{:?}",
        counts(&[&up_b])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_a_killed_replica_was_delivering_is_taken_over_by_another() {
    let schema = Schema::new("delivery_takeover");
    let (up_a, up_b) = (QueueUpstream::start().await, QueueUpstream::start().await);
    // A's upstream holds its first request for good.
    up_a.script([Reply {
        status: 200,
        delay: Duration::from_secs(120),
    }]);
    let mut a = Binary::start(Some(&schema), up_a.addr, TIMEOUT, &queued("")).await;
    let (id, body) = mention("T1");
    accept(&a, &body).await;
    let claimed = up_a.wait_event(&id, 1, Duration::from_secs(5)).await[0].at;
    let b = Binary::start(Some(&schema), up_b.addr, TIMEOUT, &queued("")).await;
    a.kill();
    let killed = Instant::now();
    let got = up_b
        .wait_event(&id, 1, TAKEOVER + Duration::from_millis(500))
        .await;
    let taken = got[0].at;
    eprintln!(
        "taken over {:?} after the kill, {:?} after A's claim",
        taken - killed,
        taken - claimed
    );
    assert!(taken - killed <= TAKEOVER + Duration::from_millis(500));
    // Not while A's attempt could still have succeeded.
    assert!(
        taken - claimed >= Duration::from_secs(2),
        "B took the event {:?} after A claimed it",
        taken - claimed
    );
    got[0].assert_signed_now(SIGNING_SECRET);
    eventually("removed once delivered", Duration::from_secs(5), || async {
        deliveries(&b.admin_base(), "").await.is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(up_b.of_event(&id).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_on_postgres_are_listed_retried_and_dropped_from_any_replica() {
    let schema = Schema::new("delivery_pg_admin");
    let (up_a, up_b) = (QueueUpstream::start().await, QueueUpstream::start().await);
    up_a.set_status(500);
    up_b.set_status(500);
    let extra = queued("max_attempts = 2\n");
    let a = Binary::start(Some(&schema), up_a.addr, TIMEOUT, &extra).await;
    let b = Binary::start(Some(&schema), up_b.addr, TIMEOUT, &extra).await;
    let mut events = Vec::new();
    for _ in 0..3 {
        let (id, body) = mention("T1");
        accept(&a, &body).await;
        events.push(id);
    }
    eventually("three dead letters", Duration::from_secs(10), || async {
        deliveries(&b.admin_base(), "?state=dead").await.len() == 3
    })
    .await;
    let dead = deliveries(&b.admin_base(), "?state=dead").await;
    let id_of = |e: &str| -> String {
        dead.iter()
            .find(|d| d["event_id"] == e)
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    for d in &dead {
        assert_eq!(d["attempts"], 2, "{d}");
        assert_eq!(d["team_id"], "T1");
        assert_eq!(d["api_app_id"], "A111");
    }
    assert!(deliveries(&a.admin_base(), "?state=pending")
        .await
        .is_empty());
    assert_eq!(
        deliveries(&a.admin_base(), "").await.len(),
        3,
        "A lists what B lists"
    );

    up_a.set_status(200);
    up_b.set_status(200);
    // Through the CLI of B: retry one, drop one; then retry the rest through A's API.
    let out = b.cli(&["deliveries", "retry", &id_of(&events[0])]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = b.cli(&["deliveries", "drop", &id_of(&events[1])]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let a_retry = admin(
        "POST",
        &a.admin_base(),
        "/admin/deliveries/retry?state=dead",
        None,
    )
    .await;
    assert_eq!(a_retry.status, 200, "{}", a_retry.text());
    eventually("the queue is empty", Duration::from_secs(10), || async {
        deliveries(&a.admin_base(), "").await.is_empty()
    })
    .await;
    for e in [&events[0], &events[2]] {
        let all: Vec<_> = up_a
            .of_event(e)
            .into_iter()
            .chain(up_b.of_event(e))
            .collect();
        assert_eq!(all.len(), 3, "{e}: two failed attempts, then one delivery");
        assert!(
            all.iter().filter(|r| r.attempt() == Some(1)).count() == 2,
            "{e}: counted from 1 again after the retry"
        );
    }
    let dropped = up_a.of_event(&events[1]).len() + up_b.of_event(&events[1]).len();
    assert_eq!(dropped, 2, "the dropped one was not retried");
    let unknown = format!("/admin/deliveries/{}", id_of(&events[1]));
    assert_eq!(
        admin("DELETE", &a.admin_base(), &unknown, None)
            .await
            .status,
        404
    );
}

/// SPEC: nothing is answered 200 that is not stored. With the database gone (refusing, or
/// hanging), an event gets a 5xx within `upstream.timeout` so that Slack sends it again;
/// what was stored before is delivered once the database is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_database_gone_no_event_is_acknowledged() {
    use support::pg_binary::{pg_storage, DbUrl};
    use support::tcp_relay::TcpRelay;
    let schema = Schema::new("delivery_outage");
    let db = DbUrl::test_database();
    let relay = TcpRelay::start(db.addr()).await;
    let up = QueueUpstream::start().await;
    up.set_status(503);
    let gw = Binary::start_on(
        Some(pg_storage(&db.via(relay.port).url(), &schema.name, "")),
        up.addr,
        TIMEOUT,
        "",
        &queued(""),
    )
    .await;
    // Stored before the outage, not yet delivered.
    let (before, body) = mention("T1");
    accept(&gw, &body).await;
    up.wait_event(&before, 1, Duration::from_secs(5)).await;

    for (what, cut) in [("refused", true), ("hanging", false)] {
        if cut {
            relay.cut().await;
        } else {
            relay.stall();
        }
        let (id, body) = mention("T1");
        let ts = slack_gateway::http::unix_now();
        let started = Instant::now();
        let (status, text) = support::binary::send_exact(gw.public, ts, &body)
            .await
            .unwrap();
        let took = started.elapsed();
        assert!(
            status >= 500,
            "database {what}: answered {status} {text:?}: Slack would not send it again"
        );
        // upstream.timeout, and the replay check's own wait for the database before it
        // (the first request after the outage pays it; direct forwarding too).
        assert!(
            took <= Duration::from_millis(3000),
            "database {what}: answered after {took:?}, past upstream.timeout"
        );
        relay.restore().await;
        // Slack's retry, once the database is back: accepted, and delivered.
        up.set_status(200);
        let deadline = Instant::now() + Duration::from_secs(10);
        for retry in 1.. {
            // Each retry signed at another time: none is an exact replay.
            let (status, text) = support::binary::send_exact(gw.public, ts - retry, &body)
                .await
                .unwrap();
            if status == 200 {
                assert_eq!(text, "");
                break;
            }
            assert!(Instant::now() < deadline, "still {status} {text:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        up.wait_event(&id, 1, Duration::from_secs(5)).await;
        up.set_status(503);
    }
    up.set_status(200);
    let base = gw.admin_base();
    eventually(
        "the event stored before the outage is delivered",
        Duration::from_secs(15),
        || async { listed(&base, &before).await.is_none() },
    )
    .await;
    assert!(up.of_event(&before).len() >= 2, "failed, then delivered");
    assert!(deliveries(&base, "").await.is_empty());
}
