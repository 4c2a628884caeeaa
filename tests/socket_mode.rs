//! Socket Mode ingress (SPEC "Socket Mode"): the gateway opens Slack's WebSockets itself and
//! feeds the upstream exactly what HTTP mode would. "Slack" is [`FakeSocketSlack`], which
//! records every `apps.connections.open` call, every connection (opened, hello, closed, by
//! whom) and every frame the gateway sends, with times; the upstream is a recording
//! [`FakeUpstream`].
//!
//! Ping timing is shortened (`ping_interval` 200 ms, `ping_timeout` 600 ms) so a silent
//! socket is noticed within a second; every wait is a poll with a deadline.

mod support;

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::{json, Value};
use slack_gateway::store::contract::workspace_install;
use slack_gateway::store::{InstallationStore, TeamRef};
use support::fake_socket::{ClosedBy, Envelope, FakeSocketSlack, OpenReply};
use support::forwarding::{assert_injected, event_for, event_of_type, Injected};
use support::{FakeUpstream, Recorded, Reply, TestGateway, CLIENT_ID, EVENTS_PATH, SIGNING_SECRET};

/// The app-level token of every test config.
const APP_TOKEN: &str = "xapp-1-A111-4242-socketmodetestsecretvalue";
/// A part of it that must never be printed either.
const TOKEN_SECRET_PART: &str = "socketmodetestsecretvalue";
const FAST_PINGS: &str = "ping_interval = \"200ms\"\nping_timeout = \"600ms\"\n";

// ---------------------------------------------------------------------------------------
// Harness
// ---------------------------------------------------------------------------------------

struct Rig {
    fake: FakeSocketSlack,
    up: FakeUpstream,
    gw: TestGateway,
}

/// `[socket_mode]` on with `connections` sockets and fast pings, `slack.api_url` at `fake`.
fn socket_toml(fake: &FakeSocketSlack, connections: usize) -> String {
    format!(
        "[slack]\napi_url = \"{}\"\n[socket_mode]\nenabled = true\napp_token = \"{APP_TOKEN}\"\n\
         connections = {connections}\n{FAST_PINGS}",
        fake.api_url()
    )
}

/// A gateway with socket mode on, `T1` installed (bot token `xoxb-t1-token`), and `extra`
/// TOML merged last. `fake` is configured by the caller before the gateway starts.
async fn start(fake: FakeSocketSlack, connections: usize, extra: &str) -> Rig {
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml(&socket_toml(&fake, connections))
        .toml(extra)
        .seed(workspace_install("T1", "U1", "xoxb-t1-token"))
        .seed(workspace_install("T3", "U3", "xoxb-t3-token"))
        .start()
        .await;
    Rig { fake, up, gw }
}

/// A rig whose `connections` sockets are all serving.
async fn serving(connections: usize, extra: &str) -> Rig {
    let r = start(FakeSocketSlack::start().await, connections, extra).await;
    r.fake
        .wait_serving(connections, "the gateway opens its sockets")
        .await;
    r
}

impl Rig {
    async fn metrics(&self) -> String {
        support::get(&self.gw.admin_url("/metrics")).await.text()
    }

    /// One series' value (0 when absent).
    async fn metric(&self, series: &str) -> f64 {
        support::metric(&self.metrics().await, series).unwrap_or(0.0)
    }

    /// Polls until `series` equals `want`.
    async fn wait_metric(&self, series: &str, want: f64) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let text = self.metrics().await;
            let got = support::metric(&text, series).unwrap_or(0.0);
            if got == want {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{series} is {got}, want {want}; socket-mode series:\n{}",
                socket_series(&text)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Polls until the upstream received `n` requests.
    async fn wait_upstream(&self, n: usize) -> Vec<Recorded> {
        let ok = self.fake.wait_for(WAIT, |_| self.up.count() >= n).await;
        assert!(
            ok,
            "the upstream got {} requests, want {n}; {}",
            self.up.count(),
            self.fake.report()
        );
        self.up.requests()
    }

    /// Sends `env` on `conn` and returns the one request it caused upstream and its ack.
    async fn forward(&self, conn: usize, env: &Envelope) -> (Recorded, Value) {
        let before = self.up.count();
        self.fake.send_envelope(conn, env);
        let ack = self.fake.wait_ack(&env.id, "a forwarded envelope").await;
        assert_eq!(ack.conn, conn, "acked on the connection it came on");
        let seen = self.up.requests();
        assert_eq!(seen.len(), before + 1, "forwarded exactly once");
        (seen[before].clone(), ack.value)
    }

    /// Replaces `[socket_mode]` keys in the gateway's config file (the watcher reloads it).
    fn edit_socket_mode(&self, edit: impl FnOnce(&mut toml::Table)) {
        let text = std::fs::read_to_string(&self.gw.config_path).unwrap();
        let mut table: toml::Table = text.parse().unwrap();
        edit(table["socket_mode"].as_table_mut().unwrap());
        std::fs::write(&self.gw.config_path, toml::to_string(&table).unwrap()).unwrap();
    }
}

const WAIT: Duration = Duration::from_secs(5);

/// The `slack_gateway_socket_mode_*` lines of a metrics text, for messages.
fn socket_series(text: &str) -> String {
    text.lines()
        .filter(|l| l.starts_with("slack_gateway_socket_mode_"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Sum of every series of `name` whose labels contain `label` (e.g. `result="ignored"`).
fn metric_sum(text: &str, name: &str, label: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) && l.contains(label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn reconnects(reason: &str) -> String {
    format!("slack_gateway_socket_mode_reconnects_total{{reason=\"{reason}\"}}")
}

fn envelopes(kind: &str, result: &str) -> String {
    format!("slack_gateway_socket_mode_envelopes_total{{type=\"{kind}\",result=\"{result}\"}}")
}

const GAUGE: &str = "slack_gateway_socket_mode_connections";

/// Waits `d` (for "nothing more happens" checks).
async fn quiet(d: Duration) {
    tokio::time::sleep(d).await;
}

/// The signature headers are Slack's, made with the signing secret over the exact body, at a
/// current timestamp.
fn assert_signed(r: &Recorded) {
    let ts: u64 = r
        .header("x-slack-request-timestamp")
        .expect("X-Slack-Request-Timestamp")
        .parse()
        .expect("a Unix timestamp");
    assert!(
        support::now().abs_diff(ts) <= 60,
        "timestamp {ts} is not now ({})",
        support::now()
    );
    assert_eq!(
        r.header("x-slack-signature"),
        Some(slack_gateway::slack::signature::sign(SIGNING_SECRET, ts, &r.body).as_str()),
        "the signature verifies with slack.signing_secret"
    );
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

fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

fn json_reply(body: &str) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), "application/json".into())],
        body: Bytes::from(body.to_owned()),
        delay: Duration::ZERO,
    }
}

fn slash_payload() -> Value {
    json!({
        "token": "legacy-verification-token",
        "team_id": "T1",
        "team_domain": "example",
        "channel_id": "C1",
        "channel_name": "general",
        "user_id": "U1",
        "user_name": "someone",
        "command": "/echo",
        "text": "hi & bye = 100% \u{e9}",
        "api_app_id": "A111",
        "is_enterprise_install": "false",
        "response_url": "https://hooks.slack.com/commands/T1/1/x",
        "trigger_id": format!("trig-{}", support::unique_id()),
    })
}

fn interactive_payload() -> Value {
    json!({
        "type": "block_actions",
        "team": {"id": "T1", "domain": "example"},
        "user": {"id": "U1", "username": "someone", "team_id": "T1"},
        "api_app_id": "A111",
        "token": "legacy-verification-token",
        "trigger_id": format!("trig-{}", support::unique_id()),
        "is_enterprise_install": false,
        "enterprise": null,
        "actions": [{"action_id": "a1", "block_id": "b1", "type": "button", "value": "v & =?+"}],
    })
}

fn event_payload(team: &str) -> Value {
    serde_json::from_str(&event_for(team)).unwrap()
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// A config for the real binary with `socket_mode` lines, `slack.api_url` at `api_url`.
fn binary_config(dir: &std::path::Path, api_url: &str, socket_mode: &str) -> std::path::PathBuf {
    let (path, _, _) = support::binary::write_config_with(
        dir,
        "127.0.0.1:9".parse().unwrap(),
        "\"commands\"",
        &format!(
            "client_id = \"111.222\"\nclient_secret = \"cli-client-secret\"\napi_url = \"{api_url}\"\n"
        ),
        &format!("[socket_mode]\n{socket_mode}"),
    );
    path
}

fn check(path: &std::path::Path) -> (Option<i32>, String, String) {
    let out = Command::new(support::binary::BIN)
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn connections_outside_one_to_ten_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for n in ["0", "11", "-1"] {
        let path = binary_config(
            dir.path(),
            "http://127.0.0.1:9/api",
            &format!("enabled = true\napp_token = \"{APP_TOKEN}\"\nconnections = {n}\n"),
        );
        let (code, _, stderr) = check(&path);
        assert_eq!(code, Some(1), "connections = {n}: {stderr}");
        assert!(
            stderr.contains("socket_mode.connections"),
            "connections = {n}: {stderr}"
        );
    }
    for n in ["1", "10"] {
        let path = binary_config(
            dir.path(),
            "http://127.0.0.1:9/api",
            &format!("enabled = true\napp_token = \"{APP_TOKEN}\"\nconnections = {n}\n"),
        );
        let (code, stdout, stderr) = check(&path);
        assert_eq!(code, Some(0), "connections = {n}: {stderr}");
        assert!(stdout.contains(&format!("connections = {n}")), "{stdout}");
    }
}

#[test]
fn enabled_without_an_app_token_is_a_config_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    for lines in ["enabled = true\n", "enabled = true\napp_token = \"\"\n"] {
        let path = binary_config(dir.path(), "http://127.0.0.1:9/api", lines);
        let (code, _, stderr) = check(&path);
        assert_eq!(code, Some(1), "{lines}: {stderr}");
        assert!(
            stderr.contains("socket_mode.app_token"),
            "{lines}: {stderr}"
        );
    }
    // Off, no token is needed.
    let path = binary_config(dir.path(), "http://127.0.0.1:9/api", "enabled = false\n");
    let (code, _, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
}

#[tokio::test]
async fn the_app_token_is_never_printed_by_check_or_in_the_logs() {
    let fake = FakeSocketSlack::start().await;
    // A failed open, a reconnect and an envelope: every path that might log.
    fake.script_open_replies([OpenReply::error("internal_error")]);
    let up = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, admin) = support::binary::write_config_with(
        dir.path(),
        up.addr,
        "\"commands\"",
        &format!(
            "client_id = \"111.222\"\nclient_secret = \"cli-client-secret\"\napi_url = \"{}\"\n",
            fake.api_url()
        ),
        &format!(
            "[socket_mode]\nenabled = true\napp_token = \"{APP_TOKEN}\"\nconnections = 1\n{FAST_PINGS}"
        ),
    );
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("[socket_mode]"), "{stdout}");
    assert!(stdout.contains("app_token"), "the key is shown: {stdout}");
    for out in [&stdout, &stderr] {
        assert!(
            !out.contains(TOKEN_SECRET_PART),
            "check printed the token: {out}"
        );
    }

    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(format!(
        "RUST_LOG=info,slack_gateway=trace exec {} --config {}",
        support::binary::BIN,
        path.display()
    ));
    let running = support::binary::Running::spawn(cmd, dir.path());
    running.wait_ready(admin).await;
    fake.wait_serving(1, "after one failed open").await;
    fake.disconnect(1, "warning");
    fake.wait_closed(1, WAIT, "the warned socket").await;
    fake.wait_serving(1, "the replacement").await;
    let env = Envelope::events_api(event_payload("T1"));
    fake.send_envelope(fake.serving_conns()[0], &env);
    fake.wait_ack(&env.id, "an envelope").await;
    running.signal("TERM");
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut child = running;
    while child.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "the gateway did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        fake.app_tokens_seen(),
        [APP_TOKEN],
        "the token was used as the bearer"
    );
    let logs = child.stderr();
    assert!(!logs.is_empty(), "the gateway logged nothing");
    assert!(
        !logs.contains(TOKEN_SECRET_PART),
        "the app token is in the logs:\n{logs}"
    );
}

#[test]
fn a_placeholder_app_token_is_warned_about() {
    let dir = tempfile::tempdir().unwrap();
    let path = binary_config(
        dir.path(),
        "http://127.0.0.1:9/api",
        "enabled = true\napp_token = \"${SLACK_GATEWAY_TEST_UNSET_APP_TOKEN:-xapp-dev-placeholder}\"\n",
    );
    let (code, stdout, stderr) = check(&path);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("socket_mode.app_token") && stderr.contains("placeholder"),
        "{stderr}"
    );
    assert!(!stdout.contains("xapp-dev-placeholder"), "{stdout}");
}

#[tokio::test]
async fn app_token_file_is_read_and_used_as_the_bearer() {
    let fake = FakeSocketSlack::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app-token.txt");
    std::fs::write(&file, "xapp-1-A111-from-a-file\n").unwrap();
    let up = FakeUpstream::start().await;
    let gw = TestGateway::builder(up.url())
        .toml(&format!(
            "[slack]\napi_url = \"{}\"\n[socket_mode]\nenabled = true\napp_token_file = \"{}\"\n\
             connections = 1\n{FAST_PINGS}",
            fake.api_url(),
            file.display()
        ))
        .start()
        .await;
    fake.wait_serving(1, "a socket opened with the file's token")
        .await;
    assert_eq!(fake.app_tokens_seen(), ["xapp-1-A111-from-a-file"]);
    gw.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// Opening sockets
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn each_connection_is_opened_with_the_app_token_and_healthy_ones_are_kept() {
    let r = serving(3, "").await;
    r.wait_metric(GAUGE, 3.0).await;
    let calls = r.fake.open_calls();
    assert_eq!(calls.len(), 3, "one apps.connections.open per connection");
    for c in &calls {
        assert_eq!(c.method, "POST");
        assert_eq!(c.path, "/api/apps.connections.open");
        assert_eq!(
            c.authorization.as_deref(),
            Some(format!("Bearer {APP_TOKEN}").as_str())
        );
        if let Some(ct) = &c.content_type {
            assert!(
                c.body.is_empty() || ct.starts_with("application/x-www-form-urlencoded"),
                "a body is a form: {ct}"
            );
        }
    }
    assert_eq!(r.fake.opened_total(), 3);
    assert_eq!(r.fake.ticket_reuses(), 0);
    // Answered pings keep a socket: over three ping timeouts nothing is replaced.
    quiet(Duration::from_millis(1800)).await;
    for c in r.fake.conns() {
        assert!(c.is_open(), "healthy socket #{} was closed", c.id);
        assert!(c.pings >= 2, "socket #{} got {} pings", c.id, c.pings);
    }
    assert_eq!(
        r.fake.open_call_count(),
        3,
        "no reconnect: {}",
        r.fake.report()
    );
    assert_eq!(r.metric(GAUGE).await, 3.0);
}

#[tokio::test]
async fn a_socket_serves_only_after_hello() {
    let fake = FakeSocketSlack::start().await;
    fake.set_send_hello(false);
    let r = start(fake, 1, "").await;
    assert!(
        r.fake.wait_for(WAIT, |f| f.open_count() == 1).await,
        "{}",
        r.fake.report()
    );
    quiet(Duration::from_millis(300)).await;
    assert_eq!(r.metric(GAUGE).await, 0.0, "not serving before hello");
    assert!(r.fake.send_hello(1));
    r.wait_metric(GAUGE, 1.0).await;
    assert_eq!(r.fake.open_call_count(), 1, "{}", r.fake.report());
}

// ---------------------------------------------------------------------------------------
// Replacing sockets
// ---------------------------------------------------------------------------------------

/// `disconnect` with `reason` on socket 1 of 2: a replacement serves before socket 1 closes.
async fn replaced_before_closed(reason: &str) {
    let r = serving(2, "").await;
    let t0 = Instant::now();
    assert!(r.fake.disconnect(1, reason));
    r.fake
        .wait_closed(1, WAIT, "the gateway closes the disconnected socket")
        .await;
    r.fake.wait_serving(2, "back to two").await;
    let old = r.fake.conn(1);
    let new = r.fake.conn(3);
    assert_ne!(old.closed_by, Some(ClosedBy::Fake));
    assert!(
        new.hello_at.unwrap() < old.closed_at.unwrap(),
        "the replacement served before the old socket closed; {}",
        r.fake.report()
    );
    assert!(
        r.fake.min_serving_since(t0) >= 2,
        "serving sockets dipped below 2: {:?}; {}",
        r.fake.serving_history(),
        r.fake.report()
    );
    assert!(r.fake.conn(2).is_open(), "the other socket is untouched");
    assert_eq!(r.fake.opened_total(), 3, "{}", r.fake.report());
    assert_eq!(r.fake.open_call_count(), 3);
    r.wait_metric(&reconnects(reason), 1.0).await;
    r.wait_metric(GAUGE, 2.0).await;
}

#[tokio::test]
async fn disconnect_warning_is_replaced_before_the_old_socket_closes() {
    replaced_before_closed("warning").await;
}

#[tokio::test]
async fn disconnect_refresh_requested_is_replaced_before_the_old_socket_closes() {
    replaced_before_closed("refresh_requested").await;
}

#[tokio::test]
async fn the_old_socket_stays_until_its_replacement_said_hello() {
    let r = serving(1, "").await;
    let t0 = Instant::now();
    r.fake.set_send_hello(false);
    assert!(r.fake.disconnect(1, "refresh_requested"));
    assert!(
        r.fake.wait_for(WAIT, |f| f.opened_total() == 2).await,
        "no replacement opened; {}",
        r.fake.report()
    );
    quiet(Duration::from_millis(500)).await;
    assert!(
        r.fake.conn(1).is_open(),
        "the old socket was closed before the new one said hello; {}",
        r.fake.report()
    );
    assert!(r.fake.send_hello(2));
    r.fake
        .wait_closed(1, WAIT, "closed once the replacement serves")
        .await;
    assert!(r.fake.min_serving_since(t0) >= 1, "{}", r.fake.report());
    assert_eq!(r.fake.serving_conns(), [2]);
}

#[tokio::test]
async fn a_silent_socket_is_replaced_before_it_is_closed() {
    let r = serving(2, "").await;
    assert!(
        r.fake.wait_for(WAIT, |f| f.conn(1).pings >= 1).await,
        "the gateway pings"
    );
    let t0 = Instant::now();
    assert!(r.fake.go_silent(1));
    r.fake
        .wait_closed(1, WAIT, "the silent socket is given up")
        .await;
    r.fake.wait_serving(2, "back to two").await;
    let old = r.fake.conn(1);
    let new = r.fake.conn(3);
    assert!(
        new.opened_at.duration_since(t0) >= Duration::from_millis(500),
        "replaced {:?} after going silent: before ping_timeout (600ms) ran out",
        new.opened_at.duration_since(t0)
    );
    assert!(
        new.hello_at.unwrap() < old.closed_at.unwrap(),
        "the replacement served before the silent socket closed; {}",
        r.fake.report()
    );
    assert!(
        r.fake.min_serving_since(t0) >= 2,
        "serving sockets dipped: {:?}",
        r.fake.serving_history()
    );
    assert!(r.fake.conn(2).is_open(), "{}", r.fake.report());
    assert_eq!(r.fake.open_call_count(), 3, "{}", r.fake.report());
    r.wait_metric(&reconnects("silent"), 1.0).await;
}

#[tokio::test]
async fn a_dropped_socket_is_reconnected_at_once() {
    let r = serving(2, "").await;
    let t0 = Instant::now();
    assert!(r.fake.drop_conn(1));
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.opened_total() == 3 && f.serving_count() == 2)
            .await,
        "{}",
        r.fake.report()
    );
    let took = r.fake.conn(3).opened_at.duration_since(t0);
    assert!(
        took < Duration::from_millis(900),
        "reconnected {took:?} after the drop: not at once"
    );
    assert_eq!(r.fake.open_call_count(), 3, "a fresh apps.connections.open");
    assert_eq!(r.fake.ticket_reuses(), 0, "the dropped URL is not reused");
    assert!(r.fake.conn(2).is_open());
    r.wait_metric(&reconnects("dropped"), 1.0).await;
    r.wait_metric(GAUGE, 2.0).await;
}

// ---------------------------------------------------------------------------------------
// Failures to connect
// ---------------------------------------------------------------------------------------

/// `apps.connections.open` answering `error` for good: at most one call per connection in
/// three seconds (a transient failure would have been retried at about 1 s and 3 s).
async fn not_retried_soon(error: &str) {
    let fake = FakeSocketSlack::start().await;
    fake.set_open_reply(OpenReply::error(error));
    let r = start(fake, 2, "").await;
    r.fake.wait_open_calls(1, "the first attempt").await;
    quiet(Duration::from_secs(3)).await;
    let n = r.fake.open_call_count();
    assert!(
        (1..=2).contains(&n),
        "{error} retried: {n} calls; {}",
        r.fake.report()
    );
    assert_eq!(r.fake.opened_total(), 0);
    assert!(r.metric(&reconnects(error)).await >= 1.0, "counted");
    assert_eq!(r.metric(GAUGE).await, 0.0);
    // HTTP ingress is not affected.
    let a = r.gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn link_disabled_from_open_is_not_retried_for_minutes() {
    not_retried_soon("link_disabled").await;
}

#[tokio::test]
async fn invalid_auth_from_open_is_not_retried_for_minutes() {
    not_retried_soon("invalid_auth").await;
}

#[tokio::test]
async fn disconnect_link_disabled_stops_reconnecting() {
    let r = serving(1, "").await;
    assert!(r.fake.disconnect(1, "link_disabled"));
    quiet(Duration::from_secs(3)).await;
    assert_eq!(
        r.fake.open_call_count(),
        1,
        "reconnected after link_disabled; {}",
        r.fake.report()
    );
    r.wait_metric(&reconnects("link_disabled"), 1.0).await;
}

/// Gaps between successive `apps.connections.open` calls, in seconds.
fn gaps(fake: &FakeSocketSlack) -> Vec<f64> {
    fake.open_calls()
        .windows(2)
        .map(|w| w[1].at.duration_since(w[0].at).as_secs_f64())
        .collect()
}

/// Backoff 1 s then 2 s, each within jitter of ±50 %.
fn assert_backoff(fake: &FakeSocketSlack) {
    let g = gaps(fake);
    assert!(g.len() >= 2, "{}", fake.report());
    assert!(
        (0.5..=1.6).contains(&g[0]),
        "first backoff {:.2}s, want about 1s; {}",
        g[0],
        fake.report()
    );
    assert!(
        (1.0..=3.1).contains(&g[1]),
        "second backoff {:.2}s, want about 2s; {}",
        g[1],
        fake.report()
    );
}

#[tokio::test]
async fn a_failed_open_backs_off_one_then_two_seconds() {
    let fake = FakeSocketSlack::start().await;
    fake.script_open_replies([OpenReply::Status(500), OpenReply::error("internal_error")]);
    let r = start(fake, 1, "").await;
    assert!(
        r.fake
            .wait_for(Duration::from_secs(8), |f| f.serving_count() == 1)
            .await,
        "{}",
        r.fake.report()
    );
    assert_eq!(r.fake.open_call_count(), 3);
    assert_backoff(&r.fake);
    assert!(r.metric(&reconnects("error")).await >= 1.0);
    r.wait_metric(GAUGE, 1.0).await;
}

#[tokio::test]
async fn a_hang_up_and_a_refused_connection_back_off_too() {
    let fake = FakeSocketSlack::start().await;
    // Call 1: the HTTP connection is closed unanswered; call 2: ok, but nothing listens at
    // the URL; call 3: ok.
    let closed = support::closed_port_url().await.replace("http://", "ws://");
    fake.script_open_replies([
        OpenReply::HangUp,
        OpenReply::Url(format!("{closed}/link/?ticket=999")),
    ]);
    let r = start(fake, 1, "").await;
    assert!(
        r.fake
            .wait_for(Duration::from_secs(8), |f| f.serving_count() == 1)
            .await,
        "{}",
        r.fake.report()
    );
    assert_eq!(r.fake.open_call_count(), 3, "{}", r.fake.report());
    assert_backoff(&r.fake);
}

#[tokio::test]
async fn a_refused_websocket_handshake_is_retried_after_a_second() {
    let fake = FakeSocketSlack::start().await;
    fake.refuse_next_sockets(1);
    let r = start(fake, 1, "").await;
    assert!(
        r.fake
            .wait_for(Duration::from_secs(5), |f| f.serving_count() == 1)
            .await,
        "{}",
        r.fake.report()
    );
    assert_eq!(r.fake.refused_sockets(), 1);
    let g = gaps(&r.fake);
    assert_eq!(g.len(), 1, "{}", r.fake.report());
    assert!(
        (0.5..=1.6).contains(&g[0]),
        "retried {:.2}s after a refused handshake, want about 1s",
        g[0]
    );
    assert!(r.metric(&reconnects("error")).await >= 1.0);
}

#[tokio::test]
async fn a_429_waits_for_retry_after() {
    let fake = FakeSocketSlack::start().await;
    fake.script_open_replies([OpenReply::RateLimited(2)]);
    let r = start(fake, 1, "").await;
    assert!(
        r.fake
            .wait_for(Duration::from_secs(6), |f| f.serving_count() == 1)
            .await,
        "{}",
        r.fake.report()
    );
    let g = gaps(&r.fake);
    assert_eq!(g.len(), 1, "{}", r.fake.report());
    assert!(
        (1.95..=3.5).contains(&g[0]),
        "retried {:.2}s after a 429 with Retry-After: 2",
        g[0]
    );
    assert!(r.metric(&reconnects("ratelimited")).await >= 1.0);
}

// ---------------------------------------------------------------------------------------
// Envelopes
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn events_api_is_posted_as_its_json_payload_signed_and_acked() {
    let r = serving(2, "").await;
    let payload = event_payload("T1");
    let env = Envelope::events_api(payload.clone());
    let (req, ack) = r.forward(2, &env).await;
    assert_eq!(req.method, "POST");
    assert_eq!(req.path_and_query, EVENTS_PATH);
    assert_eq!(req.header("content-type"), Some("application/json"));
    let body: Value = serde_json::from_slice(&req.body).expect("a JSON body");
    assert_eq!(body, payload, "the body is the envelope's payload");
    assert_signed(&req);
    assert_eq!(req.header("x-slack-retry-num"), None, "a first attempt");
    assert_eq!(req.header("x-slack-retry-reason"), None);
    assert_injected(&req, t1_injected());
    assert_eq!(ack, json!({"envelope_id": env.id}), "just the id");
    r.wait_metric(&envelopes("events_api", "acked"), 1.0).await;
}

#[tokio::test]
async fn slash_commands_are_form_encoded_and_a_text_answer_becomes_the_payload() {
    let r = serving(1, "").await;
    r.up.set_reply(Reply {
        status: 200,
        headers: vec![("content-type".into(), "text/plain; charset=utf-8".into())],
        body: Bytes::from("echo: hi"),
        delay: Duration::ZERO,
    });
    let payload = slash_payload();
    let env = Envelope::slash_commands(payload.clone());
    let (req, ack) = r.forward(1, &env).await;
    assert_eq!(req.path_and_query, EVENTS_PATH);
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let got: BTreeMap<String, String> = form_pairs(&req.body).into_iter().collect();
    let want: BTreeMap<String, String> = payload
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(got, want, "every field, form-encoded");
    assert_eq!(form_pairs(&req.body).len(), want.len(), "no field twice");
    assert_signed(&req);
    assert_injected(&req, t1_injected());
    assert_eq!(
        ack,
        json!({"envelope_id": env.id, "payload": {"text": "echo: hi"}})
    );
    r.wait_metric(&envelopes("slash_commands", "acked"), 1.0)
        .await;
}

#[tokio::test]
async fn a_slash_command_json_answer_is_the_ack_payload() {
    let r = serving(1, "").await;
    let answer = r#"{"response_type":"in_channel","text":"done","blocks":[{"type":"divider"}]}"#;
    r.up.set_reply(json_reply(answer));
    let env = Envelope::slash_commands(slash_payload());
    let (_, ack) = r.forward(1, &env).await;
    assert_eq!(
        ack,
        json!({"envelope_id": env.id, "payload": serde_json::from_str::<Value>(answer).unwrap()})
    );
}

#[tokio::test]
async fn interactive_is_a_payload_form_field_and_its_json_answer_is_acked_back() {
    let r = serving(1, "").await;
    let answer = r#"{"response_action":"errors","errors":{"b1":"no"}}"#;
    r.up.set_reply(json_reply(answer));
    let payload = interactive_payload();
    let env = Envelope::interactive(payload.clone());
    let (req, ack) = r.forward(1, &env).await;
    assert_eq!(req.path_and_query, EVENTS_PATH);
    assert_eq!(
        req.header("content-type"),
        Some("application/x-www-form-urlencoded")
    );
    let pairs = form_pairs(&req.body);
    assert_eq!(pairs.len(), 1, "one field: {pairs:?}");
    assert_eq!(pairs[0].0, "payload");
    let inner: Value = serde_json::from_str(&pairs[0].1).unwrap();
    assert_eq!(inner, payload);
    assert_signed(&req);
    assert_injected(&req, t1_injected());
    assert_eq!(
        ack,
        json!({"envelope_id": env.id, "payload": serde_json::from_str::<Value>(answer).unwrap()})
    );
    r.wait_metric(&envelopes("interactive", "acked"), 1.0).await;
}

#[tokio::test]
async fn without_accepts_response_payload_the_ack_is_the_id_alone() {
    let r = serving(1, "").await;
    r.up.set_reply(json_reply(r#"{"text":"not wanted"}"#));
    let env = Envelope::interactive(interactive_payload()).accepts_response_payload(false);
    let (_, ack) = r.forward(1, &env).await;
    assert_eq!(ack, json!({"envelope_id": env.id}));
    // An events_api envelope that does accept a payload gets the JSON answer back.
    let env = Envelope::events_api(event_payload("T1")).accepts_response_payload(true);
    let (_, ack) = r.forward(1, &env).await;
    assert_eq!(
        ack,
        json!({"envelope_id": env.id, "payload": {"text": "not wanted"}})
    );
}

#[tokio::test]
async fn retry_attempt_and_reason_become_the_retry_headers() {
    let r = serving(1, "").await;
    let env = Envelope::events_api(event_payload("T1")).retry(2, "timeout");
    let (req, ack) = r.forward(1, &env).await;
    assert_eq!(req.header("x-slack-retry-num"), Some("2"));
    assert_eq!(req.header("x-slack-retry-reason"), Some("timeout"));
    assert_signed(&req);
    assert_eq!(ack, json!({"envelope_id": env.id}));
}

#[tokio::test]
async fn app_uninstalled_over_socket_mode_deletes_the_installation() {
    let r = serving(1, "").await;
    let t1 = TeamRef::new(None, Some("T1"), false);
    assert!(r.gw.store.find_bot(CLIENT_ID, &t1).await.unwrap().is_some());
    let payload: Value = serde_json::from_str(&event_of_type("T1", "app_uninstalled")).unwrap();
    let (req, _) = r.forward(1, &Envelope::events_api(payload)).await;
    assert!(String::from_utf8_lossy(&req.body).contains("app_uninstalled"));
    assert_eq!(r.gw.store.find_bot(CLIENT_ID, &t1).await.unwrap(), None);
    assert_eq!(r.gw.store.find_latest(CLIENT_ID, &t1).await.unwrap(), None);
    let t3 = TeamRef::new(None, Some("T3"), false);
    assert!(
        r.gw.store.find_bot(CLIENT_ID, &t3).await.unwrap().is_some(),
        "other workspaces are untouched"
    );
    // The next event from T1 has no token to inject.
    let (req, _) = r
        .forward(1, &Envelope::events_api(event_payload("T1")))
        .await;
    assert_eq!(req.header("x-slack-bot-token"), None);
}

#[tokio::test]
async fn a_failed_upstream_gets_no_ack_and_the_redelivery_is_forwarded() {
    let r = serving(1, "").await;
    r.up.set_reply(Reply {
        status: 500,
        ..Reply::default()
    });
    let env = Envelope::events_api(event_payload("T1"));
    r.fake.send_envelope(1, &env);
    r.wait_upstream(1).await;
    r.wait_metric(&envelopes("events_api", "failed"), 1.0).await;
    quiet(Duration::from_millis(300)).await;
    assert!(
        r.fake.acks_for(&env.id).is_empty(),
        "a 500 was acked: {}",
        r.fake.report()
    );
    // Slack delivers it again; now the upstream succeeds.
    r.up.set_reply(Reply::default());
    let again = env.clone().retry(1, "timeout");
    let (req, ack) = r.forward(1, &again).await;
    assert_eq!(req.header("x-slack-retry-num"), Some("1"));
    assert_eq!(ack, json!({"envelope_id": env.id}));
    assert_eq!(r.up.count(), 2);
}

#[tokio::test]
async fn a_timed_out_upstream_gets_no_ack() {
    let r = serving(1, "[upstream]\ntimeout = \"300ms\"\n").await;
    r.up.set_reply(Reply {
        delay: Duration::from_millis(1500),
        ..Reply::default()
    });
    let env = Envelope::events_api(event_payload("T1"));
    r.fake.send_envelope(1, &env);
    r.wait_upstream(1).await;
    r.wait_metric(&envelopes("events_api", "failed"), 1.0).await;
    // Past the upstream's own late answer too.
    quiet(Duration::from_millis(1500)).await;
    assert!(
        r.fake.acks_for(&env.id).is_empty(),
        "a timed-out envelope was acked: {}",
        r.fake.report()
    );
}

#[tokio::test]
async fn a_duplicate_is_acked_on_its_own_connection_and_not_forwarded_again() {
    let r = serving(2, "").await;
    let env = Envelope::events_api(event_payload("T1"));
    let (_, first) = r.forward(1, &env).await;
    assert_eq!(first, json!({"envelope_id": env.id}));
    // Slack sends the same envelope again, on the other connection.
    r.fake.send_envelope(2, &env.clone().retry(1, "timeout"));
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.acks_for(&env.id).len() == 2)
            .await,
        "the duplicate was not acked: {}",
        r.fake.report()
    );
    let acks = r.fake.acks_for(&env.id);
    assert_eq!(acks[1].conn, 2, "acked on the connection it came on");
    assert_eq!(acks[1].value, json!({"envelope_id": env.id}));
    assert_eq!(r.up.count(), 1, "not forwarded again");
    r.wait_metric(&envelopes("events_api", "duplicate"), 1.0)
        .await;
}

#[tokio::test]
async fn an_envelope_in_flight_is_not_forwarded_twice() {
    let r = serving(2, "").await;
    r.up.set_reply(Reply {
        delay: Duration::from_millis(800),
        ..Reply::default()
    });
    let env = Envelope::events_api(event_payload("T1"));
    r.fake.send_envelope(1, &env);
    r.wait_upstream(1).await;
    r.fake.send_envelope(2, &env.clone().retry(1, "timeout"));
    let ack = r.fake.wait_ack(&env.id, "the first delivery").await;
    assert_eq!(ack.conn, 1);
    quiet(Duration::from_millis(300)).await;
    assert_eq!(
        r.up.count(),
        1,
        "forwarded twice while in flight: {}",
        r.fake.report()
    );
}

#[tokio::test]
async fn other_envelope_types_are_acked_and_not_forwarded() {
    let r = serving(1, "").await;
    let env = Envelope::new("some_future_type", json!({"team_id": "T1"}));
    r.fake.send_envelope(1, &env);
    let ack = r.fake.wait_ack(&env.id, "an unknown type").await;
    assert_eq!(ack.conn, 1);
    assert_eq!(ack.value, json!({"envelope_id": env.id}));
    quiet(Duration::from_millis(200)).await;
    assert_eq!(r.up.count(), 0, "not forwarded");
    let text = r.metrics().await;
    assert_eq!(
        metric_sum(
            &text,
            "slack_gateway_socket_mode_envelopes_total",
            "result=\"ignored\""
        ),
        1.0,
        "{}",
        socket_series(&text)
    );
    // The connection still serves.
    let (req, _) = r
        .forward(1, &Envelope::events_api(event_payload("T1")))
        .await;
    assert_signed(&req);
}

#[tokio::test]
async fn acks_go_back_on_the_connection_each_envelope_came_on() {
    let r = serving(3, "").await;
    let envs: Vec<Envelope> = (0..6)
        .map(|_| Envelope::events_api(event_payload("T1")))
        .collect();
    for (i, env) in envs.iter().enumerate() {
        r.fake.send_envelope(3 - i % 3, env);
    }
    for (i, env) in envs.iter().enumerate() {
        let ack = r.fake.wait_ack(&env.id, "every envelope").await;
        assert_eq!(ack.conn, 3 - i % 3, "envelope {i}");
        assert_eq!(r.fake.acks_for(&env.id).len(), 1, "acked once");
    }
    assert_eq!(r.up.count(), 6);
}

#[tokio::test]
async fn http_ingress_keeps_working_beside_socket_mode() {
    let r = serving(1, "").await;
    let a = r.gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
    let req = r.up.single();
    assert_injected(&req, t1_injected());
    let a = r.gw.post(event_for("T1")).unsigned().send().await;
    assert_eq!(a.status, 401, "HTTP still verifies signatures");
    let (req, _) = r
        .forward(1, &Envelope::events_api(event_payload("T1")))
        .await;
    assert_signed(&req);
    assert_eq!(r.up.count(), 2);
}

// ---------------------------------------------------------------------------------------
// Reload
// ---------------------------------------------------------------------------------------

#[tokio::test]
async fn connections_follow_a_reload_up_and_down() {
    let r = serving(2, "").await;
    r.edit_socket_mode(|s| {
        s.insert("connections".into(), toml::Value::Integer(3));
    });
    r.fake.wait_serving(3, "raised to 3 by a reload").await;
    assert!(
        r.fake.conn(1).is_open() && r.fake.conn(2).is_open(),
        "the existing sockets are kept: {}",
        r.fake.report()
    );
    assert_eq!(r.fake.open_call_count(), 3);
    r.wait_metric(GAUGE, 3.0).await;
    r.edit_socket_mode(|s| {
        s.insert("connections".into(), toml::Value::Integer(1));
    });
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.open_count() == 1 && f.serving_count() == 1)
            .await,
        "lowered to 1 by a reload: {}",
        r.fake.report()
    );
    r.wait_metric(GAUGE, 1.0).await;
    quiet(Duration::from_millis(500)).await;
    assert_eq!(r.fake.open_call_count(), 3, "{}", r.fake.report());
}

#[tokio::test]
async fn disabling_socket_mode_on_reload_closes_every_socket() {
    let r = serving(2, "").await;
    r.edit_socket_mode(|s| {
        s.insert("enabled".into(), toml::Value::Boolean(false));
    });
    assert!(
        r.fake.wait_for(WAIT, |f| f.open_count() == 0).await,
        "sockets still open: {}",
        r.fake.report()
    );
    r.wait_metric(GAUGE, 0.0).await;
    quiet(Duration::from_millis(1200)).await;
    assert_eq!(r.fake.open_call_count(), 2, "{}", r.fake.report());
    // HTTP still serves.
    let a = r.gw.post(event_for("T1")).send().await;
    assert_eq!(a.status, 200, "{}", a.text());
}

#[tokio::test]
async fn a_new_app_token_on_reload_reopens_the_sockets_with_it() {
    let r = serving(2, "").await;
    r.edit_socket_mode(|s| {
        s.insert(
            "app_token".into(),
            toml::Value::String("xapp-1-A111-rotated".into()),
        );
    });
    assert!(
        r.fake
            .wait_for(WAIT, |f| f.open_conns().iter().all(|&c| c > 2)
                && f.serving_count() == 2)
            .await,
        "the old sockets were not replaced: {}",
        r.fake.report()
    );
    assert_eq!(r.fake.app_tokens_seen(), [APP_TOKEN, "xapp-1-A111-rotated"]);
    let calls = r.fake.open_calls();
    assert!(
        calls[2..]
            .iter()
            .all(|c| c.authorization.as_deref() == Some("Bearer xapp-1-A111-rotated")),
        "{}",
        r.fake.report()
    );
    r.wait_metric(GAUGE, 2.0).await;
}

#[tokio::test]
async fn shutdown_closes_every_socket_with_a_close_frame() {
    let r = serving(2, "").await;
    let Rig { fake, up: _up, gw } = r;
    tokio::time::timeout(Duration::from_secs(10), gw.shutdown())
        .await
        .expect("the gateway stops");
    assert!(
        fake.wait_for(WAIT, |f| f.open_count() == 0).await,
        "{}",
        fake.report()
    );
    for c in fake.conns() {
        assert_eq!(
            c.closed_by,
            Some(ClosedBy::GatewayClose),
            "{}",
            fake.report()
        );
    }
    quiet(Duration::from_millis(300)).await;
    assert_eq!(fake.open_call_count(), 2, "nothing reopened");
}

// ---------------------------------------------------------------------------------------
// Manifest
// ---------------------------------------------------------------------------------------

#[test]
fn the_manifest_says_socket_mode_is_enabled() {
    let dir = tempfile::tempdir().unwrap();
    let manifest = |socket_mode: &str| -> Value {
        let path = binary_config(dir.path(), "http://127.0.0.1:9/api", socket_mode);
        let out = Command::new(support::binary::BIN)
            .args(["manifest", "--format", "json", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8(out.stdout).unwrap();
        assert!(!text.contains(TOKEN_SECRET_PART), "{text}");
        serde_json::from_str(&text).unwrap()
    };
    let on = manifest(&format!("enabled = true\napp_token = \"{APP_TOKEN}\"\n"));
    assert_eq!(on["settings"]["socket_mode_enabled"], true, "{on}");
    let off = manifest("enabled = false\n");
    assert_eq!(off["settings"]["socket_mode_enabled"], false, "{off}");
}
