//! Crash safety with the real binary: SIGKILL in the middle of installs and token rotation
//! loses nothing that was acknowledged. And a full run logs no secret.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use support::binary::{client, send_exact, write_config_with, Running, SIGNING_SECRET};
use support::fake_slack::{FakeSlack, Fault, Grant};
use support::oauth_harness::{echo_upstream, CLIENT_ID, CLIENT_SECRET};

/// One install through the gateway on `public`; Ok(()) once the success page was received.
async fn install(slack: &FakeSlack, public: u16, team: &str) -> Result<(), String> {
    let c = client();
    let r = c
        .get(format!("http://127.0.0.1:{public}/slack/install"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let set = r
        .headers()
        .get("set-cookie")
        .ok_or("no cookie")?
        .to_str()
        .unwrap()
        .to_owned();
    let pair = set.split(';').next().unwrap().to_owned();
    let state = pair.split_once('=').unwrap().1.to_owned();
    let redirect = format!("http://127.0.0.1:{public}/slack/oauth_redirect");
    let code = slack.issue_code(Grant::workspace(team, "U1"), Some(&redirect));
    let r = c
        .get(format!("{redirect}?code={code}&state={state}"))
        .header("cookie", pair)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() == 200 {
        Ok(())
    } else {
        Err(format!("status {}", r.status()))
    }
}

/// A signed event from `team`; the token the upstream got.
async fn event(public: u16, team: &str) -> Result<String, String> {
    let body = format!(
        r#"{{"type":"event_callback","team_id":"{team}","event_id":"Ev{}","event":{{"type":"app_mention","user":"U1"}}}}"#,
        support::fake_slack::rand_suffix()
    );
    let (status, text) = send_exact(public, slack_gateway::http::unix_now(), &body).await?;
    if status != 200 {
        return Err(format!("status {status}"));
    }
    Ok(text)
}

async fn start(
    slack: &FakeSlack,
    dir: &std::path::Path,
) -> (Running, u16, u16, std::path::PathBuf) {
    let upstream = echo_upstream().await;
    let (path, public, admin) =
        write_config_with(dir, upstream, "\"chat:write\"", &slack.toml(), "");
    let running = Running::start(&path, dir);
    running.wait_ready(admin).await;
    (running, public, admin, path)
}

async fn wait_until(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn installs_acknowledged_before_a_sigkill_survive_it() {
    let slack = Arc::new(FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await);
    slack.set_fault(Some(Fault::Delay(Duration::from_millis(40))));
    let dir = tempfile::tempdir().unwrap();
    let (mut running, public, _, path) = start(&slack, dir.path()).await;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (slack, acked) = (slack.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 8)).await;
            let team = format!("T0CRASH{i}");
            if install(&slack, public, &team).await.is_ok() {
                acked.lock().unwrap().push(team);
            }
        }));
    }
    wait_until(
        "installs did not start succeeding",
        Duration::from_secs(20),
        || acked.lock().unwrap().len() >= 15,
    )
    .await;
    running.child.kill().unwrap(); // SIGKILL
    running.child.wait().unwrap();
    for t in tasks {
        let _ = t.await;
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 15, "{}", acked.len());

    slack.set_fault(None);
    let running = Running::start(&path, dir.path());
    let admin = path_admin(&path);
    running.wait_ready(admin).await;
    for team in &acked {
        let token = event(public, team).await.unwrap();
        assert_ne!(token, "-", "{team}: acknowledged install lost");
        assert!(slack.token_is_valid(&token), "{team}: token does not work");
    }
}

fn path_admin(path: &std::path::Path) -> u16 {
    let text = std::fs::read_to_string(path).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("admin_listen"))
        .unwrap();
    line.rsplit(':')
        .next()
        .unwrap()
        .trim_end_matches('"')
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_during_token_rotation_loses_no_working_token() {
    let slack = Arc::new(FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await);
    // Tokens live an hour, inside the two-hour refresh window: every request refreshes.
    slack.enable_rotation(3600);
    let dir = tempfile::tempdir().unwrap();
    let (mut running, public, _, path) = start(&slack, dir.path()).await;
    install(&slack, public, "T0ROTATE").await.unwrap();
    slack.set_refresh_delay(Duration::from_millis(15));
    let acked = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (acked, stop) = (acked.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match event(public, "T0ROTATE").await {
                    Ok(token) => acked.lock().unwrap().push(token),
                    Err(_) => break,
                }
            }
        }));
    }
    wait_until("no event was forwarded", Duration::from_secs(20), || {
        acked.lock().unwrap().len() >= 12
    })
    .await;
    running.child.kill().unwrap();
    running.child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    assert!(
        slack.refresh_calls() >= 2,
        "rotation happened before the kill"
    );
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.iter().all(|t| slack.token_is_valid(t)),
        "every acknowledged token works"
    );

    let running = Running::start(&path, dir.path());
    running.wait_ready(path_admin(&path)).await;
    for _ in 0..3 {
        let token = event(public, "T0ROTATE")
            .await
            .expect("events still forwarded after the restart");
        assert!(
            slack.token_is_valid(&token),
            "the token after the restart works"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_run_logs_no_secret_or_token() {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    slack.enable_rotation(3600);
    let dir = tempfile::tempdir().unwrap();
    let upstream = echo_upstream().await;
    let (path, public, admin) =
        write_config_with(dir.path(), upstream, "\"chat:write\"", &slack.toml(), "");
    let mut cmd_running = {
        let stderr_path = dir.path().join("stderr.log");
        let child = std::process::Command::new(support::binary::BIN)
            .arg("--config")
            .arg(&path)
            .env("RUST_LOG", "debug")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        Running { child, stderr_path }
    };
    cmd_running.wait_ready(admin).await;
    install(&slack, public, "T0LOGS").await.unwrap();
    for _ in 0..3 {
        event(public, "T0LOGS").await.unwrap(); // each one refreshes
    }
    // Errors: a bad signature, Slack failing, a refused install.
    let _ = client()
        .post(format!("http://127.0.0.1:{public}/slack/events"))
        .header("x-slack-signature", "v0=00")
        .header("x-slack-request-timestamp", "1")
        .body("{}")
        .send()
        .await;
    slack.set_fault(Some(Fault::Status(500)));
    let _ = install(&slack, public, "T0FAIL").await;
    slack.set_fault(None);
    let _ = reqwest::get(format!("http://127.0.0.1:{admin}/admin/installations")).await;
    cmd_running.signal("TERM");
    let _ = cmd_running.child.wait();
    let logs = cmd_running.stderr();
    assert!(
        logs.contains("installation saved") && logs.contains("token refreshed"),
        "the run did what it should:\n{logs}"
    );
    let mut secrets = slack.issued_tokens();
    assert!(secrets.len() >= 4);
    secrets.extend([CLIENT_SECRET.to_owned(), SIGNING_SECRET.to_owned()]);
    for s in &secrets {
        assert!(
            !logs.contains(s.as_str()),
            "a secret or token is in the logs"
        );
    }
    assert!(
        !logs.contains("xoxb-") && !logs.contains("xoxe."),
        "no token-looking string in the logs"
    );
}

/// Replay protection covers its whole window across a restart, clean (SIGTERM) or not
/// (SIGKILL): a signed request accepted before is refused after.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn replays_after_a_restart_are_refused() {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut running, public, admin, path) = start(&slack, dir.path()).await;
    let ts = slack_gateway::http::unix_now();
    let body = |n: u32| {
        format!(
            r#"{{"type":"event_callback","team_id":"T0REPLAY","event_id":"Ev{n}","event":{{"type":"app_mention"}}}}"#
        )
    };
    assert_eq!(send_exact(public, ts, &body(1)).await.unwrap().0, 200);
    running.signal("TERM");
    running.child.wait().unwrap();

    let mut running = Running::start(&path, dir.path());
    running.wait_ready(admin).await;
    let (status, reason) = send_exact(public, ts, &body(1)).await.unwrap();
    assert_eq!(status, 401, "replayed after a clean restart: {reason}");
    assert!(reason.contains("replayed_request"), "{reason}");
    assert_eq!(send_exact(public, ts, &body(2)).await.unwrap().0, 200);
    // Written within milliseconds of being accepted; a crash a moment later keeps it.
    tokio::time::sleep(Duration::from_millis(500)).await;
    running.child.kill().unwrap(); // SIGKILL
    running.child.wait().unwrap();

    let running = Running::start(&path, dir.path());
    running.wait_ready(admin).await;
    let (status, reason) = send_exact(public, ts, &body(2)).await.unwrap();
    assert_eq!(status, 401, "replayed after a crash: {reason}");
    assert_eq!(
        send_exact(public, ts, &body(3)).await.unwrap().0,
        200,
        "new requests pass"
    );
}
