//! The Bolt for Python example (`examples/python`) behind the real gateway binary.
//!
//! A fake Slack knows one bot token; an installation with that token is imported into the
//! gateway's store with `slack-gateway installations import`; the gateway runs on the
//! example's own `gateway.toml` (with test ports, the fake Slack's URLs and a temporary store
//! put in; the example turns the Web API egress on and `upstream.inject_tokens` off); the
//! example app runs from the venv that `scripts/setup-test-deps.sh` creates, pointed at the
//! egress with `SLACK_EGRESS_URL` and verifying signatures itself (`SLACK_SIGNING_SECRET`).
//! A signed `app_mention` and a signed `/echo` command sent to the gateway must each make the
//! app call `chat.postMessage` through the egress, reaching the fake Slack with exactly the
//! seeded bot token, while no byte the gateway sent the app holds a token (a recording relay
//! sits between them). A request with a bad signature sent straight to the app is refused by
//! Bolt; without `SLACK_SIGNING_SECRET` the app's verification is off.
//!
//! Python and the venv are required: without them this test fails, saying how to make them.

mod support;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

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

/// The ports of one gateway.
struct Ports {
    public: u16,
    admin: u16,
    egress: u16,
}

/// `examples/python/gateway.toml` with this test's ports, fake Slack, upstream and store;
/// returns the written config's path and the gateway's ports. The example's own choices are
/// checked as shipped: the egress on, and no token forwarded to the app.
fn write_config(dir: &Path, slack: &FakeSlack, upstream: SocketAddr) -> (PathBuf, Ports) {
    let text = std::fs::read_to_string(repo().join("examples/python/gateway.toml")).unwrap();
    let mut table: toml::Table = text.parse().expect("examples/python/gateway.toml is TOML");
    assert_eq!(
        table["upstream"].get("inject_tokens"),
        Some(&toml::Value::Boolean(false)),
        "the example forwards no token"
    );
    assert_eq!(
        table["egress"].get("enabled"),
        Some(&toml::Value::Boolean(true)),
        "the example turns the egress on"
    );
    let (public, admin, egress) = (free_port(), free_port(), free_port());
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
    set("upstream", "url", format!("http://{upstream}"));
    set("egress", "listen", format!("127.0.0.1:{egress}"));
    set("storage", "path", dir.join("data").display().to_string());
    let path = dir.join("gateway.toml");
    std::fs::write(&path, toml::to_string(&table).unwrap()).unwrap();
    (
        path,
        Ports {
            public,
            admin,
            egress,
        },
    )
}

/// A TCP relay from a loopback port to `target` that keeps every byte sent towards the target:
/// what the gateway sent the app, exactly as it went on the wire.
struct Recorder {
    addr: SocketAddr,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    async fn start(target: SocketAddr) -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = Arc::new(Mutex::new(Vec::new()));
        let record = sent.clone();
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                let record = record.clone();
                tokio::spawn(async move {
                    let Ok(outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    let (mut in_read, mut in_write) = inbound.into_split();
                    let (mut out_read, mut out_write) = outbound.into_split();
                    let answers = tokio::spawn(async move {
                        let _ = tokio::io::copy(&mut out_read, &mut in_write).await;
                        let _ = in_write.shutdown().await;
                    });
                    let mut buf = vec![0u8; 16 * 1024];
                    loop {
                        match in_read.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                record.lock().unwrap().extend_from_slice(&buf[..n]);
                                if out_write.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    let _ = out_write.shutdown().await;
                    let _ = answers.await;
                });
            }
        });
        Recorder { addr, sent }
    }

    /// Everything sent so far, lowercased (header names are case-insensitive).
    fn sent_lowercase(&self) -> String {
        String::from_utf8_lossy(&self.sent.lock().unwrap()).to_ascii_lowercase()
    }
}

/// The example app on `port`, from the venv, calling Slack through `egress`; Bolt verifies
/// signatures with `signing_secret`, or not at all without one.
fn start_app(
    python: &Path,
    dir: &Path,
    log: &str,
    port: u16,
    egress: u16,
    signing_secret: Option<&str>,
) -> Running {
    let mut cmd = Command::new(python);
    child_env(&mut cmd)
        .arg("-u")
        .arg(repo().join("examples/python/app.py"))
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        // No trailing slash: the app must add the one slack_sdk needs.
        .env("SLACK_EGRESS_URL", format!("http://127.0.0.1:{egress}/api"))
        .env_remove("GATEWAY_EGRESS_TOKEN")
        .env_remove("SLACK_BOT_TOKEN");
    match signing_secret {
        Some(secret) => cmd.env("SLACK_SIGNING_SECRET", secret),
        None => cmd.env_remove("SLACK_SIGNING_SECRET"),
    };
    spawn(&mut cmd, dir, log)
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

/// A POST to `/slack/events` on `port` (the gateway's, or straight to the app's), signed with
/// `secret`, with `headers` added; the status and body of the answer.
async fn post_events(
    port: u16,
    secret: &str,
    headers: &[(&str, &str)],
    content_type: &str,
    body: String,
) -> (u16, String) {
    let ts = slack_gateway::http::unix_now();
    let mut req = client()
        .post(format!("http://127.0.0.1:{port}/slack/events"))
        .header("content-type", content_type)
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            slack_gateway::slack::signature::sign(secret, ts, body.as_bytes()),
        );
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    let r = req.body(body).send().await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A POST signed as Slack would, to the gateway's events path.
async fn post_signed(public: u16, content_type: &str, body: String) -> (u16, String) {
    post_events(public, SIGNING_SECRET, &[], content_type, body).await
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
async fn bolt_for_python_answers_through_the_egress_and_never_sees_a_token() {
    let python = venv_python();
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    let token = format!("xoxb-{TEAM}-{}", rand_suffix());
    slack.register_token(&token, TEAM);

    let dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let recorder = Recorder::start(SocketAddr::from(([127, 0, 0, 1], app_port))).await;
    let (config, ports) = write_config(dir.path(), &slack, recorder.addr);
    let public = ports.public;
    seed(&config, dir.path(), &token);

    let gateway = spawn(
        child_env(&mut Command::new(BIN))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info"),
        dir.path(),
        "gateway.log",
    );
    // Bolt verifies the signature a second time: the gateway forwards it with the raw body.
    let mut app = start_app(
        &python,
        dir.path(),
        "app.log",
        app_port,
        ports.egress,
        Some(SIGNING_SECRET),
    );
    gateway.wait_ready(ports.admin).await;
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

    // A workspace with no installation: forwarded with its identity and no bot, so the app's
    // authorize finds none and no listener runs.
    let (status, _) = post_signed(
        public,
        "application/json",
        mention("T0NOTINSTALLED", "C0STRANGER", "anyone?"),
    )
    .await;
    assert_eq!(status, 200, "{}", logs());

    // Straight to the app, with the gateway's headers forged: Bolt's own verification refuses
    // a bad signature, so nothing is posted.
    let forged = [
        ("x-slack-team-id", TEAM),
        ("x-slack-bot-id", BOT_ID),
        ("x-slack-bot-user-id", BOT_USER_ID),
        ("x-slack-enterprise-install", "false"),
    ];
    let (status, body) = post_events(
        app_port,
        "not-the-signing-secret",
        &forged,
        "application/json",
        mention(TEAM, "C0FORGED", "let me in"),
    )
    .await;
    assert_eq!(status, 401, "{body}\n{}", logs());
    tokio::time::sleep(Duration::from_millis(300)).await;

    let posted = slack.posted_messages();
    assert_eq!(posted.len(), 2, "{posted:?}\n{}", logs());
    assert!(
        posted
            .iter()
            .all(|m| m.ok && m.token.as_deref() == Some(token.as_str())),
        "{posted:?}"
    );

    // What the gateway sent the app: the identity and Slack's signature, never a token.
    let sent = recorder.sent_lowercase();
    for want in [
        format!("x-slack-team-id: {}", TEAM.to_ascii_lowercase()),
        format!("x-slack-bot-user-id: {}", BOT_USER_ID.to_ascii_lowercase()),
        "x-slack-team-id: t0notinstalled".to_owned(),
        "x-slack-signature: v0=".to_owned(),
    ] {
        assert!(sent.contains(&want), "no {want:?} in:\n{sent}");
    }
    assert_eq!(
        sent.matches("post /slack/events").count(),
        3,
        "three requests forwarded:\n{sent}"
    );
    assert!(!sent.contains("xox"), "a token reached the app:\n{sent}");
    assert!(!sent.contains("x-slack-bot-token"), "{sent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_verifies_signatures_only_with_a_signing_secret() {
    let python = venv_python();
    let dir = tempfile::tempdir().unwrap();
    let (on, off) = (free_port(), free_port());
    let egress = free_port();
    let mut verifying = start_app(
        &python,
        dir.path(),
        "on.log",
        on,
        egress,
        Some(SIGNING_SECRET),
    );
    let mut trusting = start_app(&python, dir.path(), "off.log", off, egress, None);
    wait_listening(&mut verifying, on).await;
    wait_listening(&mut trusting, off).await;

    let challenge = serde_json::json!({
        "token": "unused-verification-token",
        "challenge": "a-challenge",
        "type": "url_verification",
    })
    .to_string();
    // Signed with the wrong secret: refused by the app that verifies, answered by the other.
    let (status, body) = post_events(
        on,
        "not-the-signing-secret",
        &[],
        "application/json",
        challenge.clone(),
    )
    .await;
    assert_eq!(status, 401, "{body}\n{}", verifying.stderr());
    let (status, body) = post_events(
        on,
        SIGNING_SECRET,
        &[],
        "application/json",
        challenge.clone(),
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", verifying.stderr());
    assert!(body.contains("a-challenge"), "{body}");
    let (status, body) = post_events(
        off,
        "not-the-signing-secret",
        &[],
        "application/json",
        challenge,
    )
    .await;
    assert_eq!(status, 200, "{body}\n{}", trusting.stderr());
    assert!(body.contains("a-challenge"), "{body}");
}

/// Issue 20's check: the same unchanged app (HTTP mode, its own signature verification on)
/// behind a gateway that takes Slack's requests over Socket Mode. A `/echo` envelope is
/// forwarded as HTTP mode's form, signed; Bolt's plain-text acknowledgement comes back as the
/// ack's payload, and the post goes out through the egress with the seeded token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bolt_for_python_answers_a_slash_command_that_came_over_socket_mode() {
    use support::fake_socket::{Envelope, FakeSocketSlack};
    let python = venv_python();
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    let token = format!("xoxb-{TEAM}-{}", rand_suffix());
    slack.register_token(&token, TEAM);
    let sockets = FakeSocketSlack::start().await;
    sockets.set_fallback(&slack.api_url());

    let dir = tempfile::tempdir().unwrap();
    let app_port = free_port();
    let (config, ports) = write_config(
        dir.path(),
        &slack,
        SocketAddr::from(([127, 0, 0, 1], app_port)),
    );
    // Slack's API (apps.connections.open, and the egress's calls passed on) is the socket fake.
    let mut table: toml::Table = std::fs::read_to_string(&config).unwrap().parse().unwrap();
    table["slack"]
        .as_table_mut()
        .unwrap()
        .insert("api_url".into(), sockets.api_url().into());
    let mut socket_mode = toml::Table::new();
    socket_mode.insert("enabled".into(), true.into());
    socket_mode.insert("app_token".into(), "xapp-1-A0GATEWAY-example".into());
    socket_mode.insert("connections".into(), 1.into());
    table.insert("socket_mode".into(), socket_mode.into());
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
    seed(&config, dir.path(), &token);

    let gateway = spawn(
        child_env(&mut Command::new(BIN))
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info"),
        dir.path(),
        "gateway.log",
    );
    let mut app = start_app(
        &python,
        dir.path(),
        "app.log",
        app_port,
        ports.egress,
        Some(SIGNING_SECRET),
    );
    gateway.wait_ready(ports.admin).await;
    wait_listening(&mut app, app_port).await;
    let logs = || {
        format!(
            "--- gateway\n{}\n--- app\n{}\n--- sockets\n{}",
            gateway.stderr(),
            app.stderr(),
            sockets.report()
        )
    };
    let deadline = Instant::now() + LIMIT;
    while sockets.serving_conns().is_empty() {
        assert!(Instant::now() < deadline, "no socket served:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let conn = sockets.serving_conns()[0];
    let command: serde_json::Map<String, serde_json::Value> =
        form_urlencoded::parse(slash_command(&slack, "C0SOCKET", "over the socket").as_bytes())
            .map(|(k, v)| (k.into_owned(), serde_json::Value::String(v.into_owned())))
            .collect();
    let envelope =
        Envelope::slash_commands(serde_json::Value::Object(command)).accepts_response_payload(true);
    sockets.send_envelope(conn, &envelope);
    let m = posted_to(&slack, "C0SOCKET", logs).await;
    assert_eq!(m.token.as_deref(), Some(token.as_str()), "{}", logs());
    assert!(m.text.contains("over the socket"), "{m:?}");
    let deadline = Instant::now() + LIMIT;
    let ack = loop {
        if let Some(a) = sockets.acks_for(&envelope.id).into_iter().next() {
            break a;
        }
        assert!(Instant::now() < deadline, "no ack:\n{}", logs());
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert_eq!(ack.conn, conn, "acked on the connection it came on");
    assert_eq!(
        ack.value["payload"]["text"].as_str(),
        Some("Echoing to <#C0SOCKET>"),
        "Bolt's acknowledgement is the ack's payload: {ack:?}\n{}",
        logs()
    );
}
