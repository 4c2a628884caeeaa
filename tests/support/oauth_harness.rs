//! A gateway wired to a [`FakeSlack`] and an echoing upstream, for install-flow tests.
//!
//! The upstream answers every request with the `X-Slack-Bot-Token` it received as its body
//! (`-` when none) and an `x-upstream: 1` header, so a test can tell what was forwarded and
//! with which token without sharing state with the server.

#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use slack_gateway::config::Config;
use slack_gateway::gateway::Gateway;
use slack_gateway::store::sled::SledStore;

use super::fake_slack::FakeSlack;

pub const CLIENT_ID: &str = "111.222";
pub const CLIENT_SECRET: &str = "fake-client-secret";
pub const SIGNING_SECRET: &str = "test-signing-secret";

/// One browser's install in progress: its state and the cookie that binds it.
pub struct Flow {
    pub state: String,
    pub cookie: String,
}

pub struct Harness {
    pub slack: FakeSlack,
    pub gw: Arc<Gateway>,
    pub config_path: std::path::PathBuf,
    pub store: Arc<SledStore>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    client: reqwest::Client,
    _dir: tempfile::TempDir,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// An upstream that echoes what it received (see the module doc).
pub async fn echo_upstream() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            tokio::spawn(async move {
                let svc = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    // Slack paths: the token. Anything else: every header, as JSON.
                    let body = if req.uri().path().starts_with("/slack/") {
                        req.headers()
                            .get("x-slack-bot-token")
                            .and_then(|v| v.to_str().ok())
                            .unwrap_or("-")
                            .to_owned()
                    } else {
                        let mut seen = serde_json::Map::new();
                        for (k, v) in req.headers() {
                            let prev = seen
                                .get(k.as_str())
                                .and_then(|p| p.as_str())
                                .map(|p| format!("{p}, "));
                            let value = format!(
                                "{}{}",
                                prev.unwrap_or_default(),
                                v.to_str().unwrap_or("?")
                            );
                            seen.insert(k.as_str().to_owned(), serde_json::Value::String(value));
                        }
                        seen.insert("path".into(), req.uri().to_string().into());
                        serde_json::Value::Object(seen).to_string()
                    };
                    Ok::<_, Infallible>(
                        http::Response::builder()
                            .header("x-upstream", "1")
                            .body(Full::new(Bytes::from(body)))
                            .unwrap(),
                    )
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

impl Harness {
    /// A gateway with scopes `chat:write,commands`, user scope `search:read`, and the given
    /// extra `[oauth]` lines.
    pub async fn start(oauth_extra: &str) -> Harness {
        Self::start_raw("", oauth_extra).await
    }

    /// Like [`Harness::start`], with extra `[slack]` lines (written after a `[slack]` header).
    pub async fn start_raw(slack_extra: &str, oauth_extra: &str) -> Harness {
        let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
        Self::start_with(slack, slack_extra, oauth_extra).await
    }

    pub async fn start_with(slack: FakeSlack, slack_extra: &str, oauth_extra: &str) -> Harness {
        Self::start_full(slack, "", slack_extra, oauth_extra).await
    }

    /// The most general form: extra `[server]`, `[slack]` and `[oauth]` lines. With
    /// `tls = ...` in `server_extra` the public URL is https.
    pub async fn start_full(
        slack: FakeSlack,
        server_extra: &str,
        slack_extra: &str,
        oauth_extra: &str,
    ) -> Harness {
        Self::start_on(slack, server_extra, slack_extra, oauth_extra, None).await
    }

    /// A second gateway with this one's `[oauth]` defaults and app credentials, its own fake
    /// Slack and listeners, and this one's store: two replicas sharing one database.
    pub async fn start_sharing_store(&self) -> Harness {
        let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
        Self::start_on(slack, "", "", "", Some(self.store.clone())).await
    }

    async fn start_on(
        slack: FakeSlack,
        server_extra: &str,
        slack_extra: &str,
        oauth_extra: &str,
        store: Option<Arc<SledStore>>,
    ) -> Harness {
        let dir = tempfile::tempdir().unwrap();
        let public = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (public_addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        let upstream = echo_upstream().await;
        let slack_extra = slack_extra.trim_start_matches("[slack]");
        // Keys given in slack_extra override the fake's defaults.
        let mut slack_lines = String::new();
        for line in slack.toml().lines() {
            let key = line.split('=').next().unwrap().trim();
            let overridden = slack_extra
                .lines()
                .any(|l| l.split('=').next().unwrap().trim() == key);
            // A domain derives the URLs: the fake's must not override it.
            let derived = slack_extra.contains("domain") && key.ends_with("_url");
            if !overridden && !derived {
                slack_lines.push_str(line);
                slack_lines.push('\n');
            }
        }
        let scheme = if server_extra.contains("tls") {
            "https"
        } else {
            "http"
        };
        let toml = format!(
            "[server]\nlisten = \"{public_addr}\"\nadmin_listen = \"{admin_addr}\"\npublic_url = \"{scheme}://{public_addr}\"\n{server_extra}\n\
             [slack]\n{slack_lines}signing_secret = \"{SIGNING_SECRET}\"\n{slack_extra}\n\
             [oauth]\nscopes = [\"chat:write\", \"commands\"]\nuser_scopes = [\"search:read\"]\n{oauth_extra}\n\
             [upstream]\nurl = \"http://{upstream}\"\n\
             [storage]\npath = \"{}\"\n",
            dir.path().join("data").display()
        );
        let path = dir.path().join("gateway.toml");
        std::fs::write(&path, &toml).unwrap();
        let config =
            Config::from_toml(&toml, &path, &|_| None).unwrap_or_else(|e| panic!("{e}\n{toml}"));
        let store =
            store.unwrap_or_else(|| Arc::new(SledStore::open(&config.storage.path).unwrap()));
        let gw = Gateway::new(config, path.clone(), store.clone());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = gw.clone();
        tokio::spawn(async move {
            let result = slack_gateway::run(running, public, admin, async move {
                let _ = stopped.await;
            })
            .await;
            if let Err(e) = result {
                panic!("gateway stopped: {e}");
            }
        });
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // Ready once the admin listener answers (listeners and watcher are up by then).
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !reqwest::get(format!("http://{admin_addr}/readyz"))
            .await
            .is_ok_and(|r| r.status() == reqwest::StatusCode::OK)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "gateway did not become ready"
            );
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        Harness {
            slack,
            gw,
            config_path: path,
            store,
            public: public_addr,
            admin: admin_addr,
            client,
            _dir: dir,
            _stop: stop,
        }
    }

    pub fn public_url(&self) -> String {
        format!("http://{}", self.public)
    }

    /// The current text of the gateway's config file.
    pub fn config_text(&self) -> String {
        std::fs::read_to_string(&self.config_path).unwrap()
    }

    /// The authorize URL's query of a fresh install, as a map.
    pub async fn authorize_query(&self) -> std::collections::HashMap<String, String> {
        let page = self.get("/slack/install", None).await.text().await.unwrap();
        Self::authorize_url_in(&page)
            .query_pairs()
            .into_owned()
            .collect()
    }

    /// Polls until the next authorize URL's `scope` is `want`, for at most `limit`.
    pub async fn wait_for_scope(&self, want: &str, limit: std::time::Duration) -> bool {
        let deadline = std::time::Instant::now() + limit;
        loop {
            if self
                .authorize_query()
                .await
                .get("scope")
                .map(String::as_str)
                == Some(want)
            {
                return true;
            }
            if std::time::Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// Polls /metrics until `series` reaches `at_least` (at most five seconds).
    pub async fn wait_for_metric(&self, series: &str, at_least: f64, what: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.metric(series).await < at_least {
            assert!(std::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A counter from the admin listener's /metrics (0 when absent).
    pub async fn metric(&self, series: &str) -> f64 {
        let text = reqwest::get(format!("http://{}/metrics", self.admin))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or(0.0)
    }

    pub fn redirect_uri(&self) -> String {
        format!("{}/slack/oauth_redirect", self.public_url())
    }

    pub fn data_dir(&self) -> &Path {
        self._dir.path()
    }

    /// GET on the public listener with an optional `Cookie` header.
    pub async fn get(&self, path_and_query: &str, cookie: Option<&str>) -> reqwest::Response {
        let mut req = self
            .client
            .get(format!("{}{path_and_query}", self.public_url()));
        if let Some(c) = cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    /// Starts an install as a browser would: the state and the cookie that binds it.
    pub async fn begin(&self) -> Flow {
        let r = self.get("/slack/install", None).await;
        assert_eq!(r.status(), 200);
        let set = r.headers()["set-cookie"].to_str().unwrap().to_owned();
        let state = Self::cookie_state(&set);
        Flow {
            cookie: format!("slack-gateway-oauth-state={state}"),
            state,
        }
    }

    /// Slack's redirect back to the gateway with `code` for `flow`.
    pub async fn callback(&self, flow: &Flow, code: &str) -> reqwest::Response {
        self.get(
            &format!("/slack/oauth_redirect?code={code}&state={}", flow.state),
            Some(&flow.cookie),
        )
        .await
    }

    /// The state value of a `Set-Cookie` header.
    pub fn cookie_state(set_cookie: &str) -> String {
        set_cookie
            .split(';')
            .next()
            .unwrap()
            .strip_prefix("slack-gateway-oauth-state=")
            .expect("the state cookie")
            .to_owned()
    }

    /// The authorize URL behind the install page's link.
    pub fn authorize_url_in(page: &str) -> url::Url {
        let href = page
            .split("href=\"")
            .skip(1)
            .map(|s| s.split('"').next().unwrap())
            .find(|h| h.contains("client_id="))
            .expect("a link to Slack's authorize page");
        url::Url::parse(&href.replace("&amp;", "&")).unwrap()
    }

    /// Status and reason of a failed callback (built-in page or failure_url redirect).
    pub async fn failure_reason(&self, r: reqwest::Response) -> (u16, String) {
        let status = r.status().as_u16();
        if status == 302 {
            let loc = url::Url::parse(r.headers()["location"].to_str().unwrap()).unwrap();
            let reason = loc
                .query_pairs()
                .find(|(k, _)| k == "reason")
                .map(|(_, v)| v.into_owned());
            return (status, reason.unwrap_or_default());
        }
        let page = r.text().await.unwrap();
        let reason = page
            .split("<code id=\"reason\">")
            .nth(1)
            .and_then(|s| s.split("</code>").next())
            .unwrap_or_else(|| panic!("no reason in {page}"))
            .to_owned();
        (status, reason)
    }

    /// Sends a signed event from `team`; the status and whether the upstream answered.
    pub async fn signed_event_raw(&self, team: &str) -> (u16, Option<String>) {
        let body = format!(
            r#"{{"type":"event_callback","team_id":"{team}","api_app_id":"A0GATEWAY","event":{{"type":"app_mention","user":"U1","text":"hi"}},"event_id":"Ev{}","authorizations":[{{"enterprise_id":null,"team_id":"{team}","user_id":"UB","is_bot":true,"is_enterprise_install":false}}]}}"#,
            rand_id()
        );
        let ts = slack_gateway::http::unix_now();
        let sig = slack_gateway::slack::signature::sign(SIGNING_SECRET, ts, body.as_bytes());
        let r = self
            .client
            .post(format!("{}/slack/events", self.public_url()))
            .header("content-type", "application/json")
            .header("x-slack-request-timestamp", ts.to_string())
            .header("x-slack-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let forwarded = r.headers().contains_key("x-upstream");
        let text = r.text().await.unwrap();
        (status, forwarded.then_some(text))
    }

    /// The bot token the upstream received for a signed event from `team` (None: none).
    pub async fn signed_event(&self, team: &str) -> Option<String> {
        let (status, body) = self.signed_event_raw(team).await;
        assert_eq!(status, 200, "event refused: {body:?}");
        body.filter(|b| b != "-")
    }

    /// Status of a signed event and whether it reached the upstream.
    pub async fn signed_event_status(&self, team: &str) -> (u16, bool) {
        let (status, body) = self.signed_event_raw(team).await;
        (status, body.is_some())
    }

    /// Uses up a refresh token at Slack, as another replica would.
    pub async fn spend_refresh_token(&self, refresh_token: &str) {
        let r = self
            .client
            .post(format!("{}/oauth.v2.access", self.slack.api_url()))
            .basic_auth(CLIENT_ID, Some(CLIENT_SECRET))
            .form(&[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ])
            .send()
            .await
            .unwrap();
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["ok"], true, "{v}");
    }
}

fn rand_id() -> String {
    use rand::RngCore;
    let mut b = [0u8; 6];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}
