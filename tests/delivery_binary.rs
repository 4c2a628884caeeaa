//! Queued delivery with the real binary on sled: events answered 200 survive a SIGKILL and
//! reach the upstream after a restart (at least once, none missing, within 10 s plus
//! `upstream.timeout`), whether they waited for a down upstream or were in flight; the
//! `deliveries` CLI (list, retry one or every dead letter, drop, the admin token); and
//! `check` on `[delivery]`.

mod support;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;
use support::binary::{free_port, SIGNING_SECRET};
use support::delivery::*;

/// Sends a fresh mention to `gw`; panics unless Slack got queued mode's answer.
async fn accept(gw: &Binary) -> String {
    let (id, body) = mention("T1");
    let (status, text) = gw.send(&body).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(text, "", "queued mode answers with an empty body");
    id
}

/// An address where nothing listens yet.
fn unused_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port()))
}

/// Polls until every one of `ids` reached `up` (as often as it may), for at most `limit`
/// after `since`; then checks each arrival is a proper queued delivery.
async fn all_delivered(up: &QueueUpstream, ids: &[String], since: Instant, limit: Duration) {
    let deadline = since + limit;
    loop {
        let seen: BTreeSet<String> = up
            .requests()
            .iter()
            .filter_map(Delivered::event_id)
            .collect();
        let missing: Vec<&String> = ids.iter().filter(|i| !seen.contains(*i)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} events never reached the upstream within {limit:?}: {missing:?}",
            missing.len(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for r in up.requests() {
        assert!(r.attempt().is_some(), "a queued delivery");
        r.assert_signed_now(SIGNING_SECRET);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_acknowledged_before_a_sigkill_reach_the_upstream_after_a_restart() {
    let addr = unused_addr();
    // upstream.timeout 1 s: the SPEC's bound after the restart is 11 s. Without replay
    // protection, whose journal flushes the same sled database, what makes an event
    // durable before its 200 is the queue's own flush.
    let mut gw =
        Binary::start_on(None, addr, "1s", "replay_protection = false\n", &queued("")).await;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(accept(&gw).await);
    }
    gw.kill();
    let up = QueueUpstream::start_on(addr).await;
    let restarted = Instant::now();
    gw.restart().await;
    all_delivered(&up, &ids, restarted, Duration::from_millis(11_500)).await;
    eprintln!(
        "20 events delivered {:?} after the restart ({} requests)",
        restarted.elapsed(),
        up.count()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_in_flight_at_a_sigkill_are_delivered_after_the_restart() {
    let up = QueueUpstream::start().await;
    // Held far longer than upstream.timeout: in flight when the gateway dies.
    up.set_default(Reply {
        status: 200,
        delay: Duration::from_secs(30),
    });
    let mut gw = Binary::start(None, up.addr, "2s", &queued("")).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(accept(&gw).await);
    }
    up.wait_count(5, Duration::from_secs(5)).await;
    gw.kill();
    let held = up.count();
    up.set_default(Reply::status(200));
    let restarted = Instant::now();
    gw.restart().await;
    // 2 s + 10 s.
    let deadline = restarted + Duration::from_millis(12_500);
    loop {
        let again: BTreeSet<String> = up.requests()[held..]
            .iter()
            .filter_map(Delivered::event_id)
            .collect();
        if ids.iter().all(|i| again.contains(i)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered again within 12 s of the restart: {again:?} of {ids:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Slack sends events in bursts: many at once must each be stored (flushed) and answered in
/// time, and the gateway must still stop on SIGTERM afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_burst_of_concurrent_events_is_accepted_delivered_and_the_gateway_still_stops() {
    let up = QueueUpstream::start().await;
    let mut gw = Binary::start(None, up.addr, "2s", &queued("")).await;
    let mut tasks = Vec::new();
    for _ in 0..48 {
        let (id, body) = mention("T1");
        let public = gw.public;
        tasks.push(tokio::spawn(async move {
            let sent = support::binary::send_exact(public, slack_gateway::http::unix_now(), &body);
            let answer = tokio::time::timeout(Duration::from_secs(5), sent).await;
            (id, answer)
        }));
    }
    let mut ids = Vec::new();
    let mut refused = Vec::new();
    for t in tasks {
        let (id, answer) = t.await.unwrap();
        match answer {
            Ok(Ok((200, text))) if text.is_empty() => ids.push(id),
            other => refused.push(format!("{other:?}")),
        }
    }
    assert!(
        refused.is_empty(),
        "{} of 48 concurrent events not acknowledged within 5 s: {:?}",
        refused.len(),
        &refused[..refused.len().min(3)]
    );
    all_delivered(&up, &ids, Instant::now(), Duration::from_secs(10)).await;

    gw.running.signal("TERM");
    let stopping = Instant::now();
    while gw.running.child.try_wait().unwrap().is_none() {
        assert!(
            stopping.elapsed() < Duration::from_secs(12),
            "still running 12 s after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// ---------------------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------------------

const ADMIN_TOKEN: &str = "cli-delivery-admin-token-0123456789";

fn text(out: &std::process::Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `deliveries ARGS`: exit 0 expected; stdout.
fn ok(gw: &Binary, args: &[&str]) -> String {
    let out = gw.cli(args);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
    stdout
}

/// `deliveries list [--state S] --json`: the deliveries.
fn listed_by_cli(gw: &Binary, state: Option<&str>) -> Vec<Value> {
    let mut args = vec!["deliveries", "list", "--json"];
    if let Some(s) = state {
        args.extend(["--state", s]);
    }
    let v: Value = serde_json::from_str(&ok(gw, &args)).unwrap();
    v["deliveries"].as_array().unwrap().clone()
}

fn ids_of(list: &[Value]) -> BTreeSet<String> {
    list.iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_cli_lists_retries_and_drops_deliveries() {
    let up = QueueUpstream::start().await;
    up.set_status(500);
    let gw = Binary::start(
        None,
        up.addr,
        "2s",
        &format!(
            "{}[admin]\ntoken = \"{ADMIN_TOKEN}\"\n",
            queued("max_attempts = 1\n")
        ),
    )
    .await;
    let mut events = Vec::new();
    for _ in 0..3 {
        events.push(accept(&gw).await);
    }
    let base = gw.admin_base();
    eventually("three dead letters", Duration::from_secs(5), || async {
        listed_by_cli(&gw, Some("dead")).len() == 3
    })
    .await;
    let dead = listed_by_cli(&gw, Some("dead"));
    let id_of = |event: &str| {
        dead.iter()
            .find(|d| d["event_id"] == event)
            .map(|d| d["id"].as_str().unwrap().to_owned())
            .unwrap()
    };
    let ids: Vec<String> = events.iter().map(|e| id_of(e)).collect();
    assert!(listed_by_cli(&gw, Some("pending")).is_empty());
    assert_eq!(ids_of(&listed_by_cli(&gw, None)), ids_of(&dead));
    // The table names each one.
    let table = ok(&gw, &["deliveries", "list"]);
    for (id, event) in ids.iter().zip(&events) {
        let line = table
            .lines()
            .find(|l| l.contains(id.as_str()))
            .unwrap_or_else(|| panic!("{id} not listed:\n{table}"));
        assert!(
            line.contains("dead") && line.contains(event.as_str()),
            "{line}"
        );
    }

    // The admin token is the CLI's, from the config; without it the API refuses.
    let a = admin("GET", &base, "/admin/deliveries", None).await;
    assert_eq!(a.status, 401);
    let wrong = gw.dir().join("wrong-token.toml");
    std::fs::write(
        &wrong,
        std::fs::read_to_string(&gw.config)
            .unwrap()
            .replace(ADMIN_TOKEN, "not-the-token"),
    )
    .unwrap();
    let out = support::replicas::cli(&wrong, &["deliveries", "list"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("401"), "{stderr}");

    // Usage errors.
    for args in [
        &["deliveries", "retry"][..],
        &["deliveries", "retry", &ids[0], "--dead"],
        &["deliveries", "list", "--state", "bogus"],
        &["deliveries", "drop"],
    ] {
        let out = gw.cli(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {}", text(&out).1);
    }

    // Retry one, drop one, retry the rest.
    up.set_status(200);
    ok(&gw, &["deliveries", "retry", &ids[0]]);
    let got = up.wait_event(&events[0], 2, Duration::from_secs(5)).await;
    assert_eq!(got[1].attempt(), Some(1), "attempts reset");
    ok(&gw, &["deliveries", "drop", &ids[1]]);
    eventually("one dead letter left", Duration::from_secs(5), || async {
        ids_of(&listed_by_cli(&gw, None)) == BTreeSet::from([ids[2].clone()])
    })
    .await;
    let out = gw.cli(&["deliveries", "retry", "--dead"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains('1'), "says how many: {stderr}");
    up.wait_event(&events[2], 2, Duration::from_secs(5)).await;
    eventually("the queue is empty", Duration::from_secs(5), || async {
        listed_by_cli(&gw, None).is_empty()
    })
    .await;
    assert_eq!(
        up.of_event(&events[1]).len(),
        1,
        "the dropped one was not retried"
    );

    // Unknown ids: exit 1, one line naming the failure.
    let unknown = format!("d{}", "0".repeat(28));
    for args in [
        ["deliveries", "retry", unknown.as_str()],
        ["deliveries", "drop", unknown.as_str()],
        ["deliveries", "drop", ids[1].as_str()],
    ] {
        let out = gw.cli(&args);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("404"), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_says_when_no_gateway_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, admin) = support::binary::write_config_with(
        dir.path(),
        unused_addr(),
        "\"chat:write\"",
        SLACK_LINES,
        &queued(""),
    );
    let out = support::replicas::cli(&config, &["deliveries", "list"]);
    let (_, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(&admin.to_string()), "names where: {stderr}");
}

#[test]
fn check_validates_the_delivery_section() {
    let dir = tempfile::tempdir().unwrap();
    let write = |delivery: &str| {
        support::binary::write_config_with(
            dir.path(),
            unused_addr(),
            "\"chat:write\"",
            SLACK_LINES,
            delivery,
        )
        .0
    };
    let good = write(
        "[delivery]\nmode = \"queued\"\nmax_attempts = 5\nretry_backoff = \"250ms\"\n\
         retry_backoff_max = \"1m\"\nconcurrency = 4\ndedupe_window = \"30m\"\n",
    );
    let out = support::replicas::cli(&good, &["check"]);
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    for line in [
        "mode = \"queued\"",
        "max_attempts = 5",
        "retry_backoff = \"250ms\"",
        "concurrency = 4",
    ] {
        assert!(stdout.contains(line), "{line} not in\n{stdout}");
    }
    for (section, key) in [
        ("[delivery]\nmode = \"eventually\"\n", "delivery.mode"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts"),
        ("[delivery]\nconcurrency = 0\n", "delivery.concurrency"),
        (
            "[delivery]\nretry_backoff = \"10s\"\nretry_backoff_max = \"1s\"\n",
            "delivery.retry_backoff_max",
        ),
        (
            "[delivery]\ndedupe_window = \"an hour\"\n",
            "delivery.dedupe_window",
        ),
        ("[delivery]\nparallelism = 3\n", "parallelism"),
    ] {
        let path = write(section);
        let out = support::replicas::cli(&path, &["check"]);
        let (_, stderr) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{section}: {stderr}");
        assert!(stderr.contains(key), "{section}: names {key}: {stderr}");
    }
}
