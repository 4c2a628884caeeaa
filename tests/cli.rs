//! The real binary: `check`, exit codes, the shipped config, signals and draining.

mod support;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::binary::*;

/// `slack-gateway check --config path`.
fn check(path: &std::path::Path) -> std::process::Output {
    Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(path)
        .output()
        .unwrap()
}

#[test]
fn check_prints_the_config_redacted_and_exits_zero() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let out = check(&path);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(stdout.contains("client_id = \"111.222\""), "{stdout}");
    assert!(
        !stdout.contains(SIGNING_SECRET) && !stdout.contains("cli-client-secret"),
        "{stdout}"
    );
    // The config is also found through SLACK_GATEWAY_CONFIG.
    let out = Command::new(BIN)
        .arg("check")
        .env("SLACK_GATEWAY_CONFIG", &path)
        .current_dir(dir.path().parent().unwrap())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn what_check_prints_is_a_config_check_accepts_again() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("timeout = \"5s\"", "timeout = \"2500ms\""),
    )
    .unwrap();
    let printed_by_check = |path: &std::path::Path| {
        let out = check(path);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        String::from_utf8(out.stdout).unwrap()
    };
    let printed = printed_by_check(&path);
    // Durations in the units a config file uses.
    for line in [
        "timeout = \"2500ms\"",
        "state_ttl = \"10m\"",
        "header_read_timeout = \"10s\"",
    ] {
        assert!(printed.contains(line), "{line} not in {printed}");
    }
    let again = dir.path().join("printed.toml");
    std::fs::write(&again, &printed).unwrap();
    assert_eq!(printed_by_check(&again), printed);
}

#[test]
fn check_loads_the_tls_pair_as_the_gateway_would() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_config_with(
        dir.path(),
        "127.0.0.1:9".parse().unwrap(),
        "\"commands\"",
        "client_id = \"111.222\"\nclient_secret = \"cli-client-secret\"\n",
        "",
    );
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "[slack]",
        "tls = { cert = \"nope-cert.pem\", key = \"nope-key.pem\" }\n[slack]",
    );
    std::fs::write(&path, text).unwrap();
    let out = check(&path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("server.tls") && stderr.contains("nope-cert.pem"),
        "{stderr}"
    );
}

#[test]
fn a_bad_config_is_one_clear_line_and_exit_one() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("timeout = \"5s\"", "timeout = \"soon\"");
    std::fs::write(&path, text).unwrap();
    for args in [vec!["check"], vec![]] {
        let out = Command::new(BIN)
            .args(&args)
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let last = stderr.lines().last().unwrap();
        assert!(
            last.contains("upstream.timeout") && last.contains(":14:"),
            "{stderr}"
        );
    }
    let out = check(&dir.path().join("missing.toml"));
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn usage_errors_exit_two() {
    let out = Command::new(BIN).arg("--no-such-flag").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(BIN)
        .args(["installations", "frobnicate"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn a_store_that_cannot_be_opened_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    std::fs::write(
        dir.path().join("data"),
        "a file where the store folder should be",
    )
    .unwrap();
    let out = Command::new(BIN)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("cannot open the installation store"),
        "{stderr}"
    );
}

#[tokio::test]
async fn the_shipped_config_starts_on_placeholders_and_warns() {
    let dir = tempfile::tempdir().unwrap();
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let (public, admin) = (free_port(), free_port());
    let text = shipped
        .replace("127.0.0.1:3000", &format!("127.0.0.1:{public}"))
        .replace("localhost:3000", &format!("localhost:{public}"))
        .replace("127.0.0.1:9090", &format!("127.0.0.1:{admin}"));
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(BIN);
    cmd.arg("--config").arg(&path);
    for var in [
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
        "SLACK_SIGNING_SECRET",
    ] {
        cmd.env_remove(var);
    }
    let stderr_path = dir.path().join("stderr.log");
    let child = cmd
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();
    let running = Running { child, stderr_path };
    running.wait_ready(admin).await;
    let stderr = running.stderr();
    assert!(
        stderr.contains("PLACEHOLDER") && stderr.contains("slack.signing_secret"),
        "{stderr}"
    );
    assert!(
        dir.path().join("data").is_dir(),
        "the store is created beside the config"
    );
    let r = reqwest::get(format!("http://127.0.0.1:{public}/slack/install"))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sigterm_drains_a_slow_request_then_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, mut arrived) = slow_upstream(Duration::from_millis(1500)).await;
    let (path, public, admin) = write_config(dir.path(), upstream, "\"commands\"");
    let mut running = Running::start(&path, dir.path());
    running.wait_ready(admin).await;

    let slow = tokio::spawn(signed_event(public).send());
    arrived
        .recv()
        .await
        .expect("the request reached the upstream");
    running.signal("TERM");
    // While draining: not ready, and no new connections on the public listener.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await {
            Ok(r) if r.status() == 503 => break,
            _ => {}
        }
        assert!(Instant::now() < deadline, "readyz never said 503");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", public))
            .await
            .is_err(),
        "the public listener stopped accepting"
    );
    let r = slow
        .await
        .unwrap()
        .expect("the in-flight request was answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "done");
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = running.child.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "did not exit after draining");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(status.success(), "exit status {status}");
    assert!(running.stderr().contains("stopped"));
}

#[tokio::test]
async fn sighup_reloads_and_a_restart_only_change_warns() {
    let dir = tempfile::tempdir().unwrap();
    let (upstream, _arrived) = slow_upstream(Duration::ZERO).await;
    let (path, public, admin) = write_config(dir.path(), upstream, "\"commands\"");
    let running = Running::start(&path, dir.path());
    running.wait_ready(admin).await;
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(
            "scopes = [\"commands\"]",
            "scopes = [\"commands\", \"chat:write\"]",
        )
        .replace(
            &format!("listen = \"127.0.0.1:{public}\""),
            "listen = \"127.0.0.1:1\"",
        );
    std::fs::write(&path, text).unwrap();
    running.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let r = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap()
            .get(format!("http://127.0.0.1:{public}/slack/install"))
            .send()
            .await
            .unwrap();
        let page = r.text().await.unwrap();
        if page.contains("scope=commands%2Cchat%3Awrite") {
            break;
        }
        assert!(Instant::now() < deadline, "new scope never appeared");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let stderr = running.stderr();
    assert!(
        stderr.contains("server.listen") && stderr.contains("takes effect on restart"),
        "{stderr}"
    );
    // Still serving on the old port: the listen change was not half-applied.
    assert_eq!(signed_event(public).send().await.unwrap().status(), 200);
    assert!(!stderr.contains(SIGNING_SECRET) && !stderr.contains("cli-client-secret"));
}

#[test]
fn a_secret_file_others_can_read_is_warned_about() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (path, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let secret = dir.path().join("signing");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let text = std::fs::read_to_string(&path).unwrap().replace(
        &format!("signing_secret = \"{SIGNING_SECRET}\""),
        &format!("signing_secret_file = \"{}\"", secret.display()),
    );
    std::fs::write(&path, text).unwrap();
    let warned = |mode: u32| {
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
        let out = check(&path);
        assert_eq!(out.status.code(), Some(0));
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            !stderr.contains("from-a-file"),
            "the secret itself is never printed"
        );
        stderr.contains("readable by group or others")
    };
    assert!(warned(0o644), "a 0644 secret file is warned about");
    assert!(!warned(0o600), "a 0600 secret file is not");
}
