//! Running the real binary: configs on free ports, start, signals, logs, and a slow upstream.

#![allow(dead_code)]

use std::convert::Infallible;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

pub const BIN: &str = env!("CARGO_BIN_EXE_slack-gateway");
pub const SIGNING_SECRET: &str = "cli-test-signing-secret";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A config for the binary on free ports, forwarding to `upstream`.
pub fn write_config(dir: &Path, upstream: SocketAddr, scopes: &str) -> (PathBuf, u16, u16) {
    write_config_with(
        dir,
        upstream,
        scopes,
        "client_id = \"111.222\"\nclient_secret = \"cli-client-secret\"\n",
        "",
    )
}

/// Like [`write_config`] with the `[slack]` client lines given (e.g. a fake Slack's) and
/// extra sections appended.
pub fn write_config_with(
    dir: &Path,
    upstream: SocketAddr,
    scopes: &str,
    slack_lines: &str,
    extra: &str,
) -> (PathBuf, u16, u16) {
    let storage = format!("[storage]\npath = \"{}\"\n", dir.join("data").display());
    write_config_sections(
        dir,
        upstream,
        &Sections {
            scopes,
            slack_lines,
            oauth_lines: "",
            upstream_timeout: "5s",
            storage: &storage,
            extra,
        },
    )
}

/// Like [`write_config_with`] on PostgreSQL: `storage` is a whole `[storage]` section (e.g.
/// [`super::postgres::Schema::toml`]); `extra` is appended after it.
pub fn write_config_pg(
    dir: &Path,
    upstream: SocketAddr,
    scopes: &str,
    slack_lines: &str,
    storage: &str,
    extra: &str,
) -> (PathBuf, u16, u16) {
    write_config_sections(
        dir,
        upstream,
        &Sections {
            scopes,
            slack_lines,
            oauth_lines: "",
            upstream_timeout: "5s",
            storage,
            extra,
        },
    )
}

/// The parts of a config a test chooses; the rest (ports, signing secret, upstream) is fixed.
pub struct Sections<'a> {
    /// The `oauth.scopes` list's inside, e.g. `"\"chat:write\""`.
    pub scopes: &'a str,
    /// `[slack]` lines before `signing_secret` (the client, or a fake Slack's).
    pub slack_lines: &'a str,
    /// More `[oauth]` lines.
    pub oauth_lines: &'a str,
    /// `upstream.timeout`, e.g. `"5s"`.
    pub upstream_timeout: &'a str,
    /// The whole `[storage]` section, header included.
    pub storage: &'a str,
    /// Appended after `storage` (more `[storage]` keys, or further sections).
    pub extra: &'a str,
}

/// A config for the binary on free ports in `dir/gateway.toml`: its path and the public and
/// admin ports.
pub fn write_config_sections(
    dir: &Path,
    upstream: SocketAddr,
    s: &Sections<'_>,
) -> (PathBuf, u16, u16) {
    let (public, admin) = (free_port(), free_port());
    let text = format!(
        "[server]\nlisten = \"127.0.0.1:{public}\"\nadmin_listen = \"127.0.0.1:{admin}\"\nshutdown_grace = \"10s\"\n\
         public_url = \"http://127.0.0.1:{public}\"\n\
         [slack]\n{}signing_secret = \"{SIGNING_SECRET}\"\n\
         [oauth]\nscopes = [{}]\n{}[upstream]\nurl = \"http://{upstream}\"\ntimeout = \"{}\"\n\
         {}\n{}\n",
        s.slack_lines, s.scopes, s.oauth_lines, s.upstream_timeout, s.storage, s.extra
    );
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    (path, public, admin)
}

pub struct Running {
    pub child: Child,
    pub stderr_path: PathBuf,
}

impl Running {
    pub fn start(config: &Path, dir: &Path) -> Running {
        let mut command = Command::new(BIN);
        command.arg("--config").arg(config);
        Running::spawn(command, dir)
    }

    /// Runs `command` (the binary, or a shell that execs it) with info logs, its stderr in
    /// `dir/stderr.log`.
    pub fn spawn(mut command: Command, dir: &Path) -> Running {
        let stderr_path = dir.join("stderr.log");
        let child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr_path).unwrap())
            .spawn()
            .unwrap();
        Running { child, stderr_path }
    }

    pub fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(ok.success());
    }

    pub fn stderr(&self) -> String {
        let mut s = String::new();
        std::fs::File::open(&self.stderr_path)
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        s
    }

    pub async fn wait_ready(&self, admin: u16) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(r) = reqwest::get(format!("http://127.0.0.1:{admin}/readyz")).await {
                if r.status() == 200 {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "gateway not ready; stderr:\n{}",
                self.stderr()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An upstream that answers after `delay`, telling `arrived` when a request comes in.
pub async fn slow_upstream(
    delay: Duration,
) -> (SocketAddr, tokio::sync::mpsc::UnboundedReceiver<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |_req| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(());
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                            b"done",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (addr, rx)
}

pub fn signed_event(public: u16) -> reqwest::RequestBuilder {
    let body =
        r#"{"type":"event_callback","team_id":"T1","event":{"type":"app_mention","user":"U1"}}"#;
    signed_post(
        &reqwest::Client::new(),
        public,
        slack_gateway::http::unix_now(),
        body,
    )
}

/// A client for the binary's listeners: follows no redirect, gives up after 20 s.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `body` as Slack signs it with timestamp `ts`, posted to the events path on `public`.
pub fn signed_post(
    client: &reqwest::Client,
    public: u16,
    ts: u64,
    body: &str,
) -> reqwest::RequestBuilder {
    client
        .post(format!("http://127.0.0.1:{public}/slack/events"))
        .header("content-type", "application/json")
        .header("x-slack-request-timestamp", ts.to_string())
        .header(
            "x-slack-signature",
            slack_gateway::slack::signature::sign(SIGNING_SECRET, ts, body.as_bytes()),
        )
        .body(body.to_owned())
}

/// Sends one exact signed request (`ts` and `body` as given): the status and body of the
/// answer, or why it could not be sent.
pub async fn send_exact(public: u16, ts: u64, body: &str) -> Result<(u16, String), String> {
    let r = signed_post(&client(), public, ts, body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    Ok((status, r.text().await.map_err(|e| e.to_string())?))
}
