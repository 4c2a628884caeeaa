//! The real binary on PostgreSQL: configs whose `[storage]` section (and upstream timeout) the
//! test writes, URLs to the test database (through a relay, as another role, with a password),
//! and the browser and Slack sides of installs and events against a running process.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use super::binary::{write_config_sections, Sections, BIN};
use super::fake_slack::{rand_suffix, FakeSlack, Grant};
use super::postgres::database_url;

/// The parts of the test database's URL, to build others from.
#[derive(Clone, Debug)]
pub struct DbUrl {
    pub user: String,
    pub password: Option<String>,
    pub host: String,
    pub port: u16,
    pub dbname: String,
    sslmode: &'static str,
}

impl DbUrl {
    /// The test database ([`database_url`]).
    pub fn test_database() -> DbUrl {
        let c = tokio_postgres::Config::from_str(&database_url()).expect("test database URL");
        let host = match c.get_hosts().first() {
            Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
            other => panic!("the test database must be reached over TCP, not {other:?}"),
        };
        let user = c
            .get_user()
            .expect("test database URL names a user")
            .to_owned();
        DbUrl {
            password: c
                .get_password()
                .map(|p| String::from_utf8_lossy(p).into_owned()),
            host,
            port: c.get_ports().first().copied().unwrap_or(5432),
            dbname: c.get_dbname().unwrap_or(&user).to_owned(),
            user,
            sslmode: match c.get_ssl_mode() {
                tokio_postgres::config::SslMode::Disable => "disable",
                tokio_postgres::config::SslMode::Require => "require",
                _ => "prefer",
            },
        }
    }

    /// Where the database listens.
    pub fn addr(&self) -> SocketAddr {
        (self.host.as_str(), self.port)
            .to_socket_addrs()
            .expect("resolve the test database host")
            .next()
            .expect("the test database host has an address")
    }

    /// The same database at another loopback port (a relay in front of it).
    pub fn via(&self, port: u16) -> DbUrl {
        DbUrl {
            host: "127.0.0.1".into(),
            port,
            ..self.clone()
        }
    }

    pub fn with_user(&self, user: &str) -> DbUrl {
        DbUrl {
            user: user.into(),
            ..self.clone()
        }
    }

    pub fn with_password(&self, password: &str) -> DbUrl {
        DbUrl {
            password: Some(password.into()),
            ..self.clone()
        }
    }

    pub fn with_dbname(&self, dbname: &str) -> DbUrl {
        DbUrl {
            dbname: dbname.into(),
            ..self.clone()
        }
    }

    /// `host:port` as the gateway names it in messages.
    pub fn host_port(&self) -> String {
        format!("{}:{}", self.host, self.port)
    }

    pub fn url(&self) -> String {
        let enc = |s: &str| url::form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
        let password = self
            .password
            .as_deref()
            .map(|p| format!(":{}", enc(p)))
            .unwrap_or_default();
        format!(
            "postgres://{}{password}@{}:{}/{}?sslmode={}",
            enc(&self.user),
            self.host,
            self.port,
            enc(&self.dbname),
            self.sslmode
        )
    }
}

/// A `[storage]` section on PostgreSQL: `url`, `schema`, a pool of 4, and `extra` lines.
pub fn pg_storage(url: &str, schema: &str, extra: &str) -> String {
    format!(
        "[storage]\nbackend = \"postgres\"\nurl = \"{url}\"\nschema = \"{schema}\"\npool_size = 4\n{extra}"
    )
}

/// A config for the binary on free ports, forwarding to `upstream` with `upstream_timeout`
/// (e.g. `"2s"`), with the `[slack]` client lines given, the `storage` section as given
/// (its `[storage]` header included) and `extra` sections appended.
pub fn write_config_timed(
    dir: &Path,
    upstream: SocketAddr,
    slack_lines: &str,
    upstream_timeout: &str,
    storage: &str,
    extra: &str,
) -> (PathBuf, u16, u16) {
    write_config_sections(
        dir,
        upstream,
        &Sections {
            scopes: "\"chat:write\"",
            slack_lines,
            oauth_lines: "",
            upstream_timeout,
            storage,
            extra,
        },
    )
}

/// What a finished run of the binary left.
pub struct Exit {
    /// The exit code; `None` when killed by a signal, or still running at the limit (killed).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// Whether it was still running at the limit.
    pub timed_out: bool,
}

/// Runs the binary with `args` (e.g. `["--config", path, "check"]`), at most `limit`.
pub fn run_binary(args: &[&std::ffi::OsStr], limit: Duration) -> Exit {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("stdout"), dir.path().join("stderr"));
    let mut child = Command::new(BIN)
        .args(args)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + limit;
    let (code, timed_out) = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break (status.code(), false);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break (None, true);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Exit {
        code,
        stdout: std::fs::read_to_string(&out).unwrap(),
        stderr: std::fs::read_to_string(&err).unwrap(),
        timed_out,
    }
}

pub use super::binary::client;

/// `GET /readyz` on `admin`: its status and body.
pub async fn readyz(admin: u16) -> (u16, String) {
    match client()
        .get(format!("http://127.0.0.1:{admin}/readyz"))
        .send()
        .await
    {
        Ok(r) => (r.status().as_u16(), r.text().await.unwrap_or_default()),
        Err(e) => (0, e.to_string()),
    }
}

/// Polls `/readyz` until it answers `status` (at most `limit`); its body then.
pub async fn wait_readyz(admin: u16, status: u16, limit: Duration) -> String {
    let deadline = Instant::now() + limit;
    loop {
        let (s, body) = readyz(admin).await;
        if s == status {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "/readyz did not turn {status} within {limit:?}; last: {s} {body}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// An install started in a browser: the state and the `name=value` cookie that binds it.
pub struct Started {
    pub state: String,
    pub cookie: String,
}

/// `GET /slack/install` on `public`.
pub async fn begin_install(public: u16) -> Started {
    let r = client()
        .get(format!("http://127.0.0.1:{public}/slack/install"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the install page");
    let set = r
        .headers()
        .get("set-cookie")
        .expect("the state cookie")
        .to_str()
        .unwrap()
        .to_owned();
    let cookie = set.split(';').next().unwrap().to_owned();
    let state = cookie.split_once('=').unwrap().1.to_owned();
    Started { state, cookie }
}

/// Slack's redirect back for `grant`: the callback's status and body.
pub async fn finish_install(
    slack: &FakeSlack,
    public: u16,
    started: &Started,
    grant: Grant,
) -> (u16, String) {
    let redirect = format!("http://127.0.0.1:{public}/slack/oauth_redirect");
    let code = slack.issue_code(grant, Some(&redirect));
    let r = client()
        .get(format!("{redirect}?code={code}&state={}", started.state))
        .header("cookie", &started.cookie)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// A whole install of workspace `team` (installer `U1`); panics unless it succeeds.
pub async fn install(slack: &FakeSlack, public: u16, team: &str) {
    install_grant(slack, public, Grant::workspace(team, "U1")).await;
}

/// A whole install of `grant`; panics unless it succeeds.
pub async fn install_grant(slack: &FakeSlack, public: u16, grant: Grant) {
    let started = begin_install(public).await;
    let (status, page) = finish_install(slack, public, &started, grant).await;
    assert_eq!(status, 200, "install failed: {page}");
}

/// A unique signed-event body from `team`.
pub fn event_body(team: &str) -> String {
    format!(
        r#"{{"type":"event_callback","team_id":"{team}","event_id":"Ev{}","event":{{"type":"app_mention","user":"U1"}}}}"#,
        rand_suffix()
    )
}

/// Sends `body` signed with timestamp `ts` to the events path: the status and body of the
/// answer (with the echo upstream, the bot token forwarded, `-` for none).
pub async fn send_signed(public: u16, ts: u64, body: &str) -> (u16, String) {
    super::binary::send_exact(public, ts, body).await.unwrap()
}

/// A fresh signed event from `team`, sent now.
pub async fn event(public: u16, team: &str) -> (u16, String) {
    send_signed(public, slack_gateway::http::unix_now(), &event_body(team)).await
}
