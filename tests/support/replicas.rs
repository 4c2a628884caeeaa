//! Several real gateways on one PostgreSQL schema (tests/replicas.rs): each [`Replica`] is the
//! binary in a folder of its own (its `gateway.toml` and `stderr.log`), all wired to one
//! [`FakeSlack`] and one echoing upstream ([`super::oauth_harness::echo_upstream`]: a Slack
//! path answers with the `X-Slack-Bot-Token` it received, `-` for none). Plus both sides of
//! the traffic: a browser's install flow and Slack's signed events.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::binary::{write_config_sections, Running, Sections, BIN};
use super::fake_slack::{rand_suffix, FakeSlack, Grant};
use super::postgres::Schema;

/// The name of the cookie that binds an install to its browser.
pub const STATE_COOKIE: &str = "slack-gateway-oauth-state";

/// One gateway process sharing `schema` with the others.
pub struct Replica {
    pub running: Running,
    pub config: PathBuf,
    pub public: u16,
    pub admin: u16,
    dir: tempfile::TempDir,
}

impl Replica {
    /// Writes a config (the fake Slack's client, `schema`'s `[storage]`, `oauth_lines` added to
    /// `[oauth]`) and starts the binary, without waiting for it to be ready.
    pub fn spawn(
        slack: &FakeSlack,
        schema: &Schema,
        upstream: SocketAddr,
        oauth_lines: &str,
    ) -> Replica {
        let dir = tempfile::tempdir().unwrap();
        let (config, public, admin) = write_config_sections(
            dir.path(),
            upstream,
            &Sections {
                scopes: "\"chat:write\"",
                slack_lines: &slack.toml(),
                oauth_lines,
                upstream_timeout: "5s",
                storage: &schema.toml(),
                extra: "",
            },
        );
        let running = Running::start(&config, dir.path());
        Replica {
            running,
            config,
            public,
            admin,
            dir,
        }
    }

    /// [`Self::spawn`], then waits until `/readyz` answers 200.
    pub async fn start(
        slack: &FakeSlack,
        schema: &Schema,
        upstream: SocketAddr,
        oauth_lines: &str,
    ) -> Replica {
        let r = Replica::spawn(slack, schema, upstream, oauth_lines);
        r.running.wait_ready(r.admin).await;
        r
    }

    /// SIGKILL, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.running.child.kill().unwrap();
        self.running.child.wait().unwrap();
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `slack-gateway ARGS --config <this replica's config>`, run to its end.
    pub fn cli(&self, args: &[&str]) -> Output {
        cli(&self.config, args)
    }
}

/// Starts `n` replicas at once on one schema and waits for all of them.
pub async fn cluster(
    n: usize,
    slack: &FakeSlack,
    schema: &Schema,
    upstream: SocketAddr,
) -> Vec<Replica> {
    let replicas: Vec<Replica> = (0..n)
        .map(|_| Replica::spawn(slack, schema, upstream, ""))
        .collect();
    for r in &replicas {
        r.running.wait_ready(r.admin).await;
    }
    replicas
}

/// `slack-gateway ARGS --config CONFIG`, run to its end.
pub fn cli(config: &Path, args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

use super::binary::client;

// --- The browser's side: installs ---------------------------------------------------------

/// An install begun in a browser: the state and the cookie that binds it.
#[derive(Clone, Debug)]
pub struct Flow {
    pub state: String,
    pub cookie: String,
}

/// Where Slack sends the browser back to on the gateway listening on `public`.
pub fn redirect_uri(public: u16) -> String {
    format!("http://127.0.0.1:{public}/slack/oauth_redirect")
}

/// `GET /slack/install` on the gateway on `public`, as a browser: the state it set.
pub async fn begin(public: u16) -> Result<Flow, String> {
    let r = client()
        .get(format!("http://127.0.0.1:{public}/slack/install"))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("install page: status {}", r.status()));
    }
    let set = r
        .headers()
        .get("set-cookie")
        .ok_or("no state cookie")?
        .to_str()
        .map_err(|e| e.to_string())?;
    let pair = set.split(';').next().unwrap_or_default();
    let state = pair
        .strip_prefix(&format!("{STATE_COOKIE}="))
        .ok_or_else(|| format!("not the state cookie: {set}"))?
        .to_owned();
    Ok(Flow {
        cookie: pair.to_owned(),
        state,
    })
}

/// Slack's redirect back to the gateway on `public` with `code` for `flow`: the status and the
/// page.
pub async fn callback(public: u16, flow: &Flow, code: &str) -> Result<(u16, String), String> {
    let r = client()
        .get(format!(
            "{}?code={code}&state={}",
            redirect_uri(public),
            flow.state
        ))
        .header("cookie", &flow.cookie)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}

/// The reason a failure page names (`<code id="reason">`).
pub fn failure_reason(page: &str) -> Option<String> {
    page.split("<code id=\"reason\">")
        .nth(1)
        .and_then(|s| s.split("</code>").next())
        .map(str::to_owned)
}

/// A whole install of `grant` through the gateway on `public`: Ok once the browser got the
/// success page (status 200), else why not.
pub async fn install(slack: &FakeSlack, public: u16, grant: Grant) -> Result<(), String> {
    let flow = begin(public).await?;
    let code = slack.issue_code(grant, Some(&redirect_uri(public)));
    match callback(public, &flow, &code).await? {
        (200, _) => Ok(()),
        (status, page) => Err(format!(
            "status {status}, reason {:?}",
            failure_reason(&page)
        )),
    }
}

// --- Slack's side: signed events -----------------------------------------------------------

/// An Events API callback from `team` carrying `event` (a JSON object), with a fresh event id.
pub fn event_body(team: &str, event: &str) -> String {
    format!(
        r#"{{"type":"event_callback","team_id":"{team}","api_app_id":"A0GATEWAY","event_id":"Ev{}","event":{event},"authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"U{team}BOT","is_bot":true,"is_enterprise_install":false}}]}}"#,
        rand_suffix()
    )
}

/// An `app_mention` from `team`.
pub fn mention(team: &str) -> String {
    event_body(team, r#"{"type":"app_mention","user":"U1","text":"hi"}"#)
}

/// Sends `body` signed with timestamp `ts` to the gateway on `public`: the status and the
/// answer's body (for a forwarded request, the bot token the upstream got, `-` for none).
pub use super::binary::send_exact as send_signed;

/// Sends `body` signed now; panics unless it was forwarded (200). The bot token the upstream
/// received, `-` for none.
pub async fn forwarded_token(public: u16, body: &str) -> String {
    let (status, text) = send_signed(public, slack_gateway::http::unix_now(), body)
        .await
        .unwrap();
    assert_eq!(status, 200, "refused by the gateway on {public}: {text}");
    text
}

/// A fresh `app_mention` from `team` to the gateway on `public`: the bot token forwarded.
pub async fn token_for(public: u16, team: &str) -> String {
    forwarded_token(public, &mention(team)).await
}

/// Sends mentions from `team` to the gateway on `public` until the upstream receives `want` as
/// the bot token, for at most `limit` after `since`: how long after `since` it did, or the
/// token last seen when it did not.
pub async fn forwards_within(
    public: u16,
    team: &str,
    want: &str,
    since: Instant,
    limit: Duration,
) -> Result<Duration, String> {
    let deadline = since + limit;
    loop {
        let seen = token_for(public, team).await;
        if seen == want {
            return Ok(since.elapsed());
        }
        if Instant::now() >= deadline {
            return Err(seen);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bot tokens the fake Slack has issued for `team`.
pub fn bot_tokens_of(slack: &FakeSlack, team: &str) -> Vec<String> {
    slack
        .issued_tokens()
        .into_iter()
        .filter(|t| t.contains(&format!("xoxb-{team}-")))
        .collect()
}
