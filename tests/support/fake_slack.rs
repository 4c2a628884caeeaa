//! A fake Slack that behaves as Slack documents the parts the gateway uses:
//!
//! - `GET /oauth/v2/authorize`: a page whose "Allow" link sends the browser back to
//!   `redirect_uri` with a fresh code and the state it was given;
//! - `POST /api/oauth.v2.access`: client credentials checked (Basic or form); codes are
//!   single-use and expire after 10 minutes; `redirect_uri` must match the one the code was
//!   issued for; with rotation on, tokens expire and refresh tokens are single-use;
//! - `POST /api/auth.test`: answers for tokens it issued, `invalid_auth` / `token_expired`
//!   otherwise;
//! - `POST /api/chat.postMessage` (form or JSON body, as `slack_sdk` sends it): accepted for a
//!   bearer token it issued or one a test registered ([`FakeSlack::register_token`]); every
//!   attempt is recorded ([`FakeSlack::posted_messages`]).
//!
//! Every answer is HTTP 200 with `{"ok": false, "error": ...}` on failure, as Slack does.
//! Time is the fake's own: [`FakeSlack::advance`] moves it forward without sleeping. Faults
//! (5xx, slow answers) are switched on with [`FakeSlack::set_fault`].

#![allow(dead_code)]

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};

use super::fake_oidc::{OidcState, OidcUser, Tamper};
pub use super::fake_web_api::PostedMessage;
use super::fake_web_api::{call as web_call, rate_limited, upload, Caller, WebState};

/// Codes expire after this long (Slack: 10 minutes).
pub const CODE_TTL_SECS: i64 = 600;

/// What an install grants: the workspace or org, the installer and the scopes.
#[derive(Clone, Debug)]
pub struct Grant {
    pub team_id: Option<String>,
    pub team_name: String,
    pub enterprise_id: Option<String>,
    pub enterprise_name: String,
    pub is_enterprise_install: bool,
    pub user_id: String,
    pub scopes: Vec<String>,
    pub user_scopes: Vec<String>,
    pub app_id: String,
    pub incoming_webhook: bool,
}

impl Grant {
    pub fn workspace(team: &str, user: &str) -> Self {
        Grant {
            team_id: Some(team.into()),
            team_name: format!("Team {team}"),
            enterprise_id: None,
            enterprise_name: String::new(),
            is_enterprise_install: false,
            user_id: user.into(),
            scopes: vec!["chat:write".into(), "commands".into()],
            user_scopes: vec![],
            app_id: "A0GATEWAY".into(),
            incoming_webhook: false,
        }
    }

    pub fn org(enterprise: &str, user: &str) -> Self {
        Grant {
            team_id: None,
            team_name: String::new(),
            enterprise_id: Some(enterprise.into()),
            enterprise_name: format!("Org {enterprise}"),
            is_enterprise_install: true,
            ..Grant::workspace("unused", user)
        }
    }
}

/// A fault the fake can be told to have.
#[derive(Clone, Debug)]
pub enum Fault {
    /// Answer every API call with this HTTP status and an HTML body.
    Status(u16),
    /// Wait this long before answering.
    Delay(Duration),
}

#[derive(Clone, Debug)]
struct CodeEntry {
    grant: Grant,
    redirect_uri: Option<String>,
    issued_at: i64,
    used: bool,
}

#[derive(Clone, Debug)]
struct TokenEntry {
    grant: Grant,
    is_bot: bool,
    expires_at: Option<i64>,
}

#[derive(Clone, Debug)]
struct RefreshEntry {
    grant: Grant,
    is_bot: bool,
    used: bool,
}

/// A recorded API call (form fields and whether Basic auth was used).
#[derive(Clone, Debug)]
pub struct Call {
    pub method: String,
    pub form: HashMap<String, String>,
    pub basic_auth: Option<(String, String)>,
}

struct State {
    client_id: String,
    client_secret: String,
    now_offset: i64,
    codes: HashMap<String, CodeEntry>,
    tokens: HashMap<String, TokenEntry>,
    refresh: HashMap<String, RefreshEntry>,
    /// Some(lifetime): tokens rotate and expire after `lifetime` seconds.
    rotation: Option<i64>,
    fault: Option<Fault>,
    /// Extra delay on refreshes only (widens race windows in tests).
    refresh_delay: Duration,
    calls: Vec<Call>,
    counter: u64,
    /// The grant the authorize page hands out.
    next_grant: Grant,
    /// Sign in with Slack.
    oidc: OidcState,
    /// The Web API methods of `fake_web_api`.
    web: WebState,
    /// `http://{addr}`.
    base: String,
}

/// A running fake Slack on 127.0.0.1.
pub struct FakeSlack {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    _server: tokio::task::JoinHandle<()>,
}

fn real_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

impl FakeSlack {
    pub async fn start(client_id: &str, client_secret: &str) -> FakeSlack {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(State {
            client_id: client_id.into(),
            client_secret: client_secret.into(),
            now_offset: 0,
            codes: HashMap::new(),
            tokens: HashMap::new(),
            refresh: HashMap::new(),
            rotation: None,
            fault: None,
            refresh_delay: Duration::ZERO,
            calls: Vec::new(),
            counter: 0,
            next_grant: Grant::workspace("T0FAKE1", "U0INSTALLER"),
            oidc: OidcState::new(format!("http://{addr}")),
            web: WebState::default(),
            base: format!("http://{addr}"),
        }));
        let st = state.clone();
        let server = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, Infallible>(handle(st, req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        FakeSlack {
            addr,
            state,
            _server: server,
        }
    }

    pub fn api_url(&self) -> String {
        format!("http://{}/api", self.addr)
    }

    pub fn authorize_url(&self) -> String {
        format!("http://{}/oauth/v2/authorize", self.addr)
    }

    /// The `[slack]` lines that point a gateway at this fake.
    pub fn toml(&self) -> String {
        let s = self.state.lock().unwrap();
        format!(
            "client_id = \"{}\"\nclient_secret = \"{}\"\napi_url = \"{}\"\nauthorize_url = \"{}\"\n\
             openid_authorize_url = \"http://{addr}/openid/connect/authorize\"\n\
             openid_jwks_url = \"http://{addr}/openid/connect/keys\"\nopenid_issuer = \"http://{addr}\"\n",
            s.client_id,
            s.client_secret,
            self.api_url(),
            self.authorize_url(),
            addr = self.addr,
        )
    }

    /// The user the next Sign in with Slack login is for.
    pub fn set_oidc_user(&self, user: OidcUser) {
        self.state.lock().unwrap().oidc.next_user = user;
    }

    /// Makes the next id_token wrong in one way.
    pub fn tamper_next_id_token(&self, t: Tamper) {
        self.state.lock().unwrap().oidc.tamper = Some(t);
    }

    /// Publishes and signs with a new key; returns its kid.
    pub fn rotate_oidc_key(&self) -> String {
        self.state.lock().unwrap().oidc.rotate_key()
    }

    pub fn jwks_fetches(&self) -> usize {
        self.state.lock().unwrap().oidc.jwks_fetches
    }

    /// Issues a Sign in with Slack code as if the user had approved.
    pub fn issue_oidc_code(&self, redirect_uri: &str, nonce: &str) -> String {
        let now = self.now();
        self.state
            .lock()
            .unwrap()
            .oidc
            .issue_code(redirect_uri, nonce, now)
    }

    /// Slack's clock, in Unix seconds.
    pub fn now(&self) -> i64 {
        real_now() + self.state.lock().unwrap().now_offset
    }

    /// Moves the fake's clock forward.
    pub fn advance(&self, secs: i64) {
        self.state.lock().unwrap().now_offset += secs;
    }

    /// Issues a code as if the user had approved the install on the authorize page.
    pub fn issue_code(&self, grant: Grant, redirect_uri: Option<&str>) -> String {
        FakeSlackRef(self.state.clone()).issue_code(grant, redirect_uri)
    }

    /// The grant the authorize page gives the next browser.
    pub fn set_next_grant(&self, grant: Grant) {
        self.state.lock().unwrap().next_grant = grant;
    }

    /// Turns token rotation on: tokens expire after `lifetime_secs`.
    pub fn enable_rotation(&self, lifetime_secs: i64) {
        self.state.lock().unwrap().rotation = Some(lifetime_secs);
    }

    pub fn set_refresh_delay(&self, d: Duration) {
        self.state.lock().unwrap().refresh_delay = d;
    }

    pub fn set_fault(&self, fault: Option<Fault>) {
        self.state.lock().unwrap().fault = fault;
    }

    /// Calls received for `method` (e.g. "oauth.v2.access").
    pub fn calls(&self, method: &str) -> Vec<Call> {
        self.state
            .lock()
            .unwrap()
            .calls
            .iter()
            .filter(|c| c.method == method)
            .cloned()
            .collect()
    }

    /// Refreshes (grant_type=refresh_token) received.
    pub fn refresh_calls(&self) -> usize {
        self.calls("oauth.v2.access")
            .iter()
            .filter(|c| c.form.get("grant_type").map(String::as_str) == Some("refresh_token"))
            .count()
    }

    /// Every access and refresh token this fake has issued.
    pub fn issued_tokens(&self) -> Vec<String> {
        let s = self.state.lock().unwrap();
        s.tokens.keys().chain(s.refresh.keys()).cloned().collect()
    }

    /// True when `token` is one this fake issued and it is still valid.
    pub fn token_is_valid(&self, token: &str) -> bool {
        let s = self.state.lock().unwrap();
        let now = real_now() + s.now_offset;
        s.tokens
            .get(token)
            .is_some_and(|t| t.expires_at.is_none_or(|e| e > now))
    }
}

impl FakeSlack {
    /// Makes `token` a valid bot token of workspace `team`, as if this fake had issued it (for
    /// installations a test seeds into the store directly). Its bot user is `U{team}BOT`.
    pub fn register_token(&self, token: &str, team: &str) {
        self.state.lock().unwrap().tokens.insert(
            token.into(),
            TokenEntry {
                grant: Grant::workspace(team, "U0INSTALLER"),
                is_bot: true,
                expires_at: None,
            },
        );
    }

    /// The next `calls` calls of `method` answer 429 with `Retry-After: {secs}`.
    pub fn ratelimit(&self, method: &str, calls: usize, secs: u64) {
        self.state
            .lock()
            .unwrap()
            .web
            .ratelimit(method, calls, secs);
    }

    /// How many calls of `method` answered 429.
    pub fn ratelimited(&self, method: &str) -> usize {
        let s = self.state.lock().unwrap();
        s.web.ratelimited.get(method).copied().unwrap_or(0)
    }

    /// The bytes uploaded for `file_id`.
    pub fn uploaded(&self, file_id: &str) -> Option<Bytes> {
        self.state.lock().unwrap().web.uploaded(file_id)
    }

    /// Every `chat.postMessage` received, in order, accepted or not.
    pub fn posted_messages(&self) -> Vec<PostedMessage> {
        self.state.lock().unwrap().web.posted.clone()
    }
}

pub fn rand_suffix() -> String {
    use rand::RngCore;
    let mut b = [0u8; 8];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// The team a token was issued for, or the error Slack gives for it.
fn token_team(s: &State, token: Option<&str>) -> Result<String, &'static str> {
    let now = real_now() + s.now_offset;
    match token.map(|t| s.tokens.get(t)) {
        None => Err("not_authed"),
        Some(None) => Err("invalid_auth"),
        Some(Some(e)) if e.expires_at.is_some_and(|x| x <= now) => Err("token_expired"),
        Some(Some(e)) => Ok(e
            .grant
            .team_id
            .clone()
            .or(e.grant.enterprise_id.clone())
            .unwrap_or_default()),
    }
}

fn respond_json(v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn slack_error(code: &str) -> Response<Full<Bytes>> {
    respond_json(json!({"ok": false, "error": code}))
}

async fn handle(st: Arc<Mutex<State>>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let fault = st.lock().unwrap().fault.clone();
    match fault {
        Some(Fault::Status(code)) => {
            return Response::builder()
                .status(code)
                .header("content-type", "text/html")
                .body(Full::new(Bytes::from_static(
                    b"<html>upstream connect error</html>",
                )))
                .unwrap()
        }
        Some(Fault::Delay(d)) => tokio::time::sleep(d).await,
        None => {}
    }
    let path = req.uri().path().to_owned();
    if req.method() == http::Method::GET && path == "/oauth/v2/authorize" {
        return authorize_page(&st, req.uri());
    }
    if req.method() == http::Method::GET && path == "/openid/connect/authorize" {
        return oidc_authorize_page(&st, req.uri());
    }
    if req.method() == http::Method::GET && path == "/openid/connect/keys" {
        return respond_json(st.lock().unwrap().oidc.jwks());
    }
    if let Some(file_id) = path.strip_prefix("/upload/").map(str::to_owned) {
        let body = req.into_body().collect().await.map(|b| b.to_bytes());
        return upload(
            &mut st.lock().unwrap().web,
            &file_id,
            body.unwrap_or_default(),
        );
    }
    let Some(method) = path.strip_prefix("/api/").map(str::to_owned) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap();
    };
    let basic = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Basic "))
        .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.split_once(':').map(|(a, b)| (a.to_owned(), b.to_owned())));
    let bearer = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::to_owned);
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let mut form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    // slack_sdk sends some methods (chat.postMessage among them) as a JSON object.
    if let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&body) {
        form = map
            .into_iter()
            .map(|(k, v)| match v {
                Value::String(s) => (k, s),
                other => (k, other.to_string()),
            })
            .collect();
    }
    st.lock().unwrap().calls.push(Call {
        method: method.clone(),
        form: form.clone(),
        basic_auth: basic.clone(),
    });
    if let Some(limited) = rate_limited(&mut st.lock().unwrap().web, &method) {
        return limited;
    }
    {
        let mut s = st.lock().unwrap();
        let token = bearer.clone().or_else(|| form.get("token").cloned());
        let team = token_team(&s, token.as_deref());
        let (base, now) = (s.base.clone(), real_now() + s.now_offset);
        let caller = Caller { token, team, now };
        if let Some(r) = web_call(&mut s.web, &base, &method, caller, &form) {
            return r;
        }
    }
    match method.as_str() {
        "oauth.v2.access" => {
            let refresh_delay = st.lock().unwrap().refresh_delay;
            if form.get("grant_type").map(String::as_str) == Some("refresh_token")
                && !refresh_delay.is_zero()
            {
                tokio::time::sleep(refresh_delay).await;
            }
            oauth_v2_access(&st, &form, basic)
        }
        "openid.connect.token" => {
            let mut s = st.lock().unwrap();
            if let Err(e) = check_client(&s, &form, basic) {
                return slack_error(e);
            }
            let now = real_now() + s.now_offset;
            let client_id = s.client_id.clone();
            let code = form.get("code").cloned().unwrap_or_default();
            match s.oidc.token(
                &code,
                form.get("redirect_uri").map(String::as_str),
                &client_id,
                now,
            ) {
                Ok(v) => respond_json(v),
                Err(e) => slack_error(e),
            }
        }
        "auth.test" => {
            let token = bearer.or_else(|| form.get("token").cloned());
            auth_test(&st, token)
        }
        _ => slack_error("unknown_method"),
    }
}

fn authorize_page(st: &Arc<Mutex<State>>, uri: &http::Uri) -> Response<Full<Bytes>> {
    let q: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let (client_ok, grant) = {
        let s = st.lock().unwrap();
        (
            q.get("client_id") == Some(&s.client_id),
            s.next_grant.clone(),
        )
    };
    if !client_ok {
        return Response::builder()
            .status(400)
            .header("content-type", "text/html")
            .body(Full::new(Bytes::from_static(
                b"<html><body>Invalid client_id parameter</body></html>",
            )))
            .unwrap();
    }
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let mut grant = grant;
    if let Some(s) = q.get("scope") {
        grant.scopes = s
            .split(',')
            .filter(|s| !s.is_empty())
            .map(Into::into)
            .collect();
    }
    if let Some(s) = q.get("user_scope") {
        grant.user_scopes = s
            .split(',')
            .filter(|s| !s.is_empty())
            .map(Into::into)
            .collect();
    }
    let fake = FakeSlackRef(st.clone());
    let code = fake.issue_code(grant, Some(&redirect_uri));
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
    let deny = {
        let mut d = url::Url::parse(&redirect_uri).unwrap();
        d.query_pairs_mut()
            .append_pair("error", "access_denied")
            .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
        d
    };
    let page = format!(
        "<!doctype html><html><head><title>Fake Slack: authorize</title></head><body>\
         <h1>Install app on your workspace?</h1>\
         <a id=\"allow\" href=\"{}\">Allow</a> <a id=\"deny\" href=\"{}\">Cancel</a></body></html>",
        html_attr(back.as_str()),
        html_attr(deny.as_str())
    );
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page)))
        .unwrap()
}

fn oidc_authorize_page(st: &Arc<Mutex<State>>, uri: &http::Uri) -> Response<Full<Bytes>> {
    let q: HashMap<String, String> = form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
        .into_owned()
        .collect();
    let mut s = st.lock().unwrap();
    let ok = q.get("client_id") == Some(&s.client_id)
        && q.get("response_type").map(String::as_str) == Some("code")
        && q.get("scope")
            .is_some_and(|sc| sc.split(' ').any(|x| x == "openid"));
    if !ok {
        return Response::builder()
            .status(400)
            .body(Full::new(Bytes::from_static(
                b"<html><body>invalid request</body></html>",
            )))
            .unwrap();
    }
    let redirect_uri = q.get("redirect_uri").cloned().unwrap_or_default();
    let now = real_now() + s.now_offset;
    let code = s.oidc.issue_code(
        &redirect_uri,
        q.get("nonce").map(String::as_str).unwrap_or(""),
        now,
    );
    let mut back = url::Url::parse(&redirect_uri).unwrap();
    back.query_pairs_mut()
        .append_pair("code", &code)
        .append_pair("state", q.get("state").map(String::as_str).unwrap_or(""));
    let page = format!(
        "<!doctype html><html><head><title>Fake Slack: sign in</title></head><body>\
         <h1>Sign in to the app?</h1><a id=\"allow\" href=\"{}\">Continue</a></body></html>",
        html_attr(back.as_str())
    );
    Response::builder()
        .header("content-type", "text/html; charset=utf-8")
        .body(Full::new(Bytes::from(page)))
        .unwrap()
}

fn html_attr(s: &str) -> String {
    s.replace('&', "&amp;").replace('"', "&quot;")
}

/// The issuing logic, usable from inside the server.
struct FakeSlackRef(Arc<Mutex<State>>);

impl FakeSlackRef {
    fn issue_code(&self, grant: Grant, redirect_uri: Option<&str>) -> String {
        let mut s = self.0.lock().unwrap();
        s.counter += 1;
        let code = format!("code-{}-{}", s.counter, rand_suffix());
        let now = real_now() + s.now_offset;
        s.codes.insert(
            code.clone(),
            CodeEntry {
                grant,
                redirect_uri: redirect_uri.map(Into::into),
                issued_at: now,
                used: false,
            },
        );
        code
    }
}

fn check_client(
    s: &State,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<(), &'static str> {
    let (id, secret) = match basic {
        Some((id, secret)) => (id, secret),
        None => (
            form.get("client_id").cloned().unwrap_or_default(),
            form.get("client_secret").cloned().unwrap_or_default(),
        ),
    };
    if id != s.client_id {
        return Err("invalid_client_id");
    }
    if secret != s.client_secret {
        return Err("bad_client_secret");
    }
    Ok(())
}

fn issue_tokens(
    s: &mut State,
    grant: &Grant,
    is_bot: bool,
) -> (String, Option<String>, Option<i64>) {
    s.counter += 1;
    let now = real_now() + s.now_offset;
    let n = s.counter;
    let team = grant
        .team_id
        .clone()
        .or(grant.enterprise_id.clone())
        .unwrap_or_default();
    let kind = if is_bot { "xoxb" } else { "xoxp" };
    match s.rotation {
        Some(lifetime) => {
            let token = format!("xoxe.{kind}-{team}-{n}-{}", rand_suffix());
            let refresh = format!("xoxe-1-{team}-{n}-{}", rand_suffix());
            let expires_at = now + lifetime;
            s.tokens.insert(
                token.clone(),
                TokenEntry {
                    grant: grant.clone(),
                    is_bot,
                    expires_at: Some(expires_at),
                },
            );
            s.refresh.insert(
                refresh.clone(),
                RefreshEntry {
                    grant: grant.clone(),
                    is_bot,
                    used: false,
                },
            );
            (token, Some(refresh), Some(lifetime))
        }
        None => {
            let token = format!("{kind}-{team}-{n}-{}", rand_suffix());
            s.tokens.insert(
                token.clone(),
                TokenEntry {
                    grant: grant.clone(),
                    is_bot,
                    expires_at: None,
                },
            );
            (token, None, None)
        }
    }
}

fn oauth_v2_access(
    st: &Arc<Mutex<State>>,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Response<Full<Bytes>> {
    let mut s = st.lock().unwrap();
    if let Err(e) = check_client(&s, form, basic) {
        return slack_error(e);
    }
    let now = real_now() + s.now_offset;
    if form.get("grant_type").map(String::as_str) == Some("refresh_token") {
        let Some(rt) = form.get("refresh_token") else {
            return slack_error("invalid_refresh_token");
        };
        let Some(entry) = s.refresh.get_mut(rt) else {
            return slack_error("invalid_refresh_token");
        };
        if entry.used {
            return slack_error("invalid_refresh_token");
        }
        entry.used = true;
        let (grant, is_bot) = (entry.grant.clone(), entry.is_bot);
        let (token, refresh, expires_in) = issue_tokens(&mut s, &grant, is_bot);
        return respond_json(json!({
            "ok": true,
            "app_id": grant.app_id,
            "scope": if is_bot { grant.scopes.join(",") } else { grant.user_scopes.join(",") },
            "token_type": if is_bot { "bot" } else { "user" },
            "access_token": token,
            "refresh_token": refresh,
            "expires_in": expires_in,
            "bot_user_id": if is_bot { Some(format!("U{}BOT", grant.team_id.clone().unwrap_or_default())) } else { None },
            "team": grant.team_id.as_ref().map(|t| json!({"id": t, "name": grant.team_name})),
            "enterprise": grant.enterprise_id.as_ref().map(|e| json!({"id": e, "name": grant.enterprise_name})),
            "is_enterprise_install": grant.is_enterprise_install,
        }));
    }
    let Some(code) = form.get("code") else {
        return slack_error("invalid_code");
    };
    let Some(entry) = s.codes.get_mut(code) else {
        return slack_error("invalid_code");
    };
    if entry.used || now - entry.issued_at > CODE_TTL_SECS {
        return slack_error("invalid_code");
    }
    if entry.redirect_uri.is_some() && entry.redirect_uri.as_ref() != form.get("redirect_uri") {
        return slack_error("bad_redirect_uri");
    }
    entry.used = true;
    let grant = entry.grant.clone();
    let mut resp = json!({
        "ok": true,
        "app_id": grant.app_id,
        "authed_user": {"id": grant.user_id},
        "team": grant.team_id.as_ref().map(|t| json!({"id": t, "name": grant.team_name})),
        "enterprise": grant.enterprise_id.as_ref().map(|e| json!({"id": e, "name": grant.enterprise_name})),
        "is_enterprise_install": grant.is_enterprise_install,
    });
    if !grant.scopes.is_empty() {
        let (token, refresh, expires_in) = issue_tokens(&mut s, &grant, true);
        resp["scope"] = json!(grant.scopes.join(","));
        resp["token_type"] = json!("bot");
        resp["access_token"] = json!(token);
        resp["bot_user_id"] = json!(format!(
            "U{}BOT",
            grant
                .team_id
                .clone()
                .or(grant.enterprise_id.clone())
                .unwrap_or_default()
        ));
        if let Some(r) = refresh {
            resp["refresh_token"] = json!(r);
            resp["expires_in"] = json!(expires_in);
        }
    }
    if !grant.user_scopes.is_empty() {
        let (token, refresh, expires_in) = issue_tokens(&mut s, &grant, false);
        resp["authed_user"]["scope"] = json!(grant.user_scopes.join(","));
        resp["authed_user"]["access_token"] = json!(token);
        resp["authed_user"]["token_type"] = json!("user");
        if let Some(r) = refresh {
            resp["authed_user"]["refresh_token"] = json!(r);
            resp["authed_user"]["expires_in"] = json!(expires_in);
        }
    }
    if grant.incoming_webhook {
        resp["incoming_webhook"] = json!({
            "channel": "#general", "channel_id": "C0GENERAL",
            "configuration_url": "https://teamname.slack.com/services/B0HOOK",
            "url": "https://hooks.slack.com/services/T0/B0/XXXX"
        });
    }
    respond_json(resp)
}

fn auth_test(st: &Arc<Mutex<State>>, token: Option<String>) -> Response<Full<Bytes>> {
    let s = st.lock().unwrap();
    let now = real_now() + s.now_offset;
    let Some(entry) = token.as_ref().and_then(|t| s.tokens.get(t)) else {
        return slack_error(if token.is_none() {
            "not_authed"
        } else {
            "invalid_auth"
        });
    };
    if entry.expires_at.is_some_and(|e| e <= now) {
        return slack_error("token_expired");
    }
    let g = &entry.grant;
    let url = if g.is_enterprise_install {
        format!(
            "https://{}.enterprise.slack.com/",
            g.enterprise_id.clone().unwrap_or_default().to_lowercase()
        )
    } else {
        format!(
            "https://{}.slack.com/",
            g.team_id.clone().unwrap_or_default().to_lowercase()
        )
    };
    respond_json(json!({
        "ok": true,
        "url": url,
        "team": if g.is_enterprise_install { g.enterprise_name.clone() } else { g.team_name.clone() },
        "user": "bot",
        "team_id": g.team_id.clone().or(g.enterprise_id.clone()),
        "user_id": if entry.is_bot { format!("U{}BOT", g.team_id.clone().or(g.enterprise_id.clone()).unwrap_or_default()) } else { g.user_id.clone() },
        "bot_id": if entry.is_bot { Some(format!("B{}", g.team_id.clone().or(g.enterprise_id.clone()).unwrap_or_default())) } else { None },
        "enterprise_id": g.enterprise_id,
        "is_enterprise_install": g.is_enterprise_install,
    }))
}
