//! The Bolt for Python example (`examples/python`) behind the real gateway binary.
//!
//! A fake Slack knows one bot token; an installation with that token is imported into the
//! gateway's store with `slack-gateway installations import`; the gateway runs on the
//! example's own `gateway.toml` (with test ports, the fake Slack's URLs and a temporary store
//! put in); the example app runs from the venv that `scripts/setup-test-deps.sh` creates.
//! A signed `app_mention` and a signed `/echo` command sent to the gateway must each make the
//! app call `chat.postMessage` on the fake Slack with exactly the seeded bot token.
//!
//! Python and the venv are required: without them this test fails, saying how to make them.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use support::binary::{free_port, Running, BIN};
use support::fake_slack::{rand_suffix, FakeSlack, PostedMessage};
use support::oauth_harness::{CLIENT_ID, CLIENT_SECRET};
use support::python::venv_python;

const SIGNING_SECRET: &str = "example-python-signing-secret";
const TEAM: &str = "T0EXAMPLE";
const BOT_ID: &str = "BT0EXAMPLE";
const BOT_USER_ID: &str = "UT0EXAMPLEBOT";
/// How long the app may take to start, and a posted message to arrive.
const LIMIT: Duration = Duration::from_secs(30);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Environment of the child processes: the example's secrets, and never a proxy (everything
/// here is on 127.0.0.1).
fn child_env(cmd: &mut Command) -> &mut Command {
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env("SLACK_CLIENT_ID", CLIENT_ID)
        .env("SLACK_CLIENT_SECRET", CLIENT_SECRET)
        .env("SLACK_SIGNING_SECRET", SIGNING_SECRET)
}

/// `examples/python/gateway.toml` with this test's ports, fake Slack and store; returns the
/// written config's path and the public and admin ports.
fn write_config(dir: &Path, slack: &FakeSlack, app_port: u16) -> (PathBuf, u16, u16) {
    let text = std::fs::read_to_string(repo().join("examples/python/gateway.toml")).unwrap();
    let mut table: toml::Table = text.parse().expect("examples/python/gateway.toml is TOML");
    let (public, admin) = (free_port(), free_port());
    let mut set = |section: &str, key: &str, value: String| {
        table
            .get_mut(section)
            .and_then(toml::Value::as_table_mut)
            .unwrap_or_else(|| panic!("the example config has no [{section}]"))
            .insert(key.into(), toml::Value::String(value));
    };
    set("server", "listen", format!("127.0.0.1:{public}"));
    set("server", "admin_listen", format!("127.0.0.1:{admin}"));
    set("server", "public_url", format!("http://127.0.0.1:{public}"));
    set("slack", "api_url", slack.api_url());
    set("slack", "authorize_url", slack.authorize_url());
    set("upstream", "url", format!("http://127.0.0.1:{app_port}"));
    set("storage", "path", dir.join("data").display().to_string());
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    (path, public, admin)
}

/// Imports one installation of [`TEAM`] with `bot_token`, through the CLI.
fn seed(config: &Path, dir: &Path, bot_token: &str) {
    let line = serde_json::json!({
        "app_id": "A0GATEWAY",
        "team_id": TEAM,
        "team_name": "Example",
        "bot_token": bot_token,
        "bot_id": BOT_ID,
        "bot_user_id": BOT_USER_ID,
        "bot_scopes": ["app_mentions:read", "chat:write", "commands"],
        "user_id": "U0INSTALLER",
        "is_enterprise_install": false,
        "token_type": "bot",
        "installed_at": slack_gateway::http::unix_now() as f64,
    });
    let file = dir.join("seed.jsonl");
    std::fs::write(&file, format!("{line}\n")).unwrap();
    let out = child_env(&mut Command::new(BIN))
        .arg("--config")
        .arg(config)
        .args(["installations", "import"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "import failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Starts a process with stdout and stderr going to `log` in `dir`.
fn spawn(cmd: &mut Command, dir: &Path, log: &str) -> Running {
    let stderr_path = dir.join(log);
    let file = std::fs::File::create(&stderr_path).unwrap();
    let child = cmd
        .stdin(Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?}: {e}"));
    Running { child, stderr_path }
}

/// Waits until the app accepts connections; fails with its output if it exits or hangs.
async fn wait_listening(app: &mut Running, port: u16) {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(status) = app.child.try_wait().unwrap() {
            panic!("the example app exited ({status}):\n{}", app.stderr());
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "the example app did not listen on {port}:\n{}",
            app.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// A signed POST to the gateway's events path; the status and body of the answer.
async fn post_signed(public: u16, content_type: &str, body: String) -> (u16, String) {
    let ts = slack_gateway::http::unix_now();
    let r = client()
        .post(format!("http://127.0.0.1:{public}/slack/events"))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            slack_gateway::slack::signature::sign(SIGNING_SECRET, ts, body.as_bytes()),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn mention(team: &str, channel: &str, text: &str) -> String {
    let now = slack_gateway::http::unix_now();
    serde_json::json!({
        "token": "unused-verification-token",
        "team_id": team,
        "api_app_id": "A0GATEWAY",
        "type": "event_callback",
        "event_id": format!("Ev{}", rand_suffix()),
        "event_time": now,
        "event": {
            "type": "app_mention",
            "user": "U0ALICE",
            "text": format!("<@{BOT_USER_ID}> {text}"),
            "ts": format!("{now}.000100"),
            "channel": channel,
            "event_ts": format!("{now}.000100"),
        },
        "authorizations": [{
            "enterprise_id": null,
            "team_id": team,
            "user_id": BOT_USER_ID,
            "is_bot": true,
            "is_enterprise_install": false,
        }],
    })
    .to_string()
}

fn slash_command(slack: &FakeSlack, channel: &str, text: &str) -> String {
    form_urlencoded::Serializer::new(String::new())
        .append_pair("token", "unused-verification-token")
        .append_pair("team_id", TEAM)
        .append_pair("team_domain", "example")
        .append_pair("channel_id", channel)
        .append_pair("channel_name", "general")
        .append_pair("user_id", "U0ALICE")
        .append_pair("user_name", "alice")
        .append_pair("command", "/echo")
        .append_pair("text", text)
        .append_pair("api_app_id", "A0GATEWAY")
        .append_pair(
            "response_url",
            &format!("http://{}/commands/{TEAM}/1/x", slack.addr),
        )
        .append_pair("trigger_id", "1.2.3")
        .finish()
}

/// Waits for a `chat.postMessage` to `channel`.
async fn posted_to(slack: &FakeSlack, channel: &str, logs: impl Fn() -> String) -> PostedMessage {
    let deadline = Instant::now() + LIMIT;
    loop {
        if let Some(m) = slack
            .posted_messages()
            .into_iter()
            .find(|m| m.channel == channel)
        {
            return m;
        }
        assert!(
            Instant::now() < deadline,
            "no chat.postMessage to {channel}; posted: {:?}\n{}",
            slack.posted_messages(),
            logs()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_for_python_answers_an_event_and_a_command_with_the_injected_token() {
    let python = venv_python();
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    let token = format!("xoxb-{TEAM}-{}", rand_suffix());
    slack.register_token(&token, TEAM);

    let dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let (config, public, admin) = write_config(dir.path(), &slack, app_port);
    seed(&config, dir.path(), &token);

    let gateway = spawn(
        child_env(&mut Command::new(BIN))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info"),
        dir.path(),
        "gateway.log",
    );
    let mut app = spawn(
        child_env(&mut Command::new(&python))
            .arg("-u")
            .arg(repo().join("examples/python/app.py"))
            .env("HOST", "127.0.0.1")
            .env("PORT", app_port.to_string())
            // No trailing slash: the app must add the one slack_sdk needs.
            .env("SLACK_API_URL", slack.api_url()),
        dir.path(),
        "app.log",
    );
    gateway.wait_ready(admin).await;
    wait_listening(&mut app, app_port).await;
    let logs = || {
        format!(
            "--- gateway\n{}\n--- app\n{}",
            gateway.stderr(),
            app.stderr()
        )
    };

    // An app_mention: acknowledged, then answered in the channel.
    let (status, _) = post_signed(
        public,
        "application/json",
        mention(TEAM, "C0MENTION", "hello there"),
    )
    .await;
    assert_eq!(status, 200, "{}", logs());
    let m = posted_to(&slack, "C0MENTION", logs).await;
    assert_eq!(m.token.as_deref(), Some(token.as_str()), "{}", logs());
    assert!(m.ok, "{m:?}");
    assert!(m.text.contains("hello there"), "{m:?}");

    // A slash command: the acknowledgement comes back through the gateway, then the post.
    let (status, body) = post_signed(
        public,
        "application/x-www-form-urlencoded",
        slash_command(&slack, "C0COMMAND", "ship it"),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", logs());
    assert!(body.contains("Echoing to <#C0COMMAND>"), "{body}");
    let m = posted_to(&slack, "C0COMMAND", logs).await;
    assert_eq!(m.token.as_deref(), Some(token.as_str()), "{}", logs());
    assert!(m.ok, "{m:?}");
    assert!(m.text.contains("ship it"), "{m:?}");

    // A workspace with no installation: forwarded without a token, so the app's authorize
    // finds none and no listener runs.
    let (status, _) = post_signed(
        public,
        "application/json",
        mention("T0NOTINSTALLED", "C0STRANGER", "anyone?"),
    )
    .await;
    assert_eq!(status, 200, "{}", logs());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let posted = slack.posted_messages();
    assert_eq!(posted.len(), 2, "{posted:?}\n{}", logs());
    assert!(
        posted
            .iter()
            .all(|m| m.ok && m.token.as_deref() == Some(token.as_str())),
        "{posted:?}"
    );
}
