//! Sign in with Slack (OpenID Connect) in front of the upstream's web pages.
//!
//! ```text
//! GET protect/…  (no session) ─► 302 login_path?return_to=/protect/…
//! GET login_path ─► state (self-verifying, nothing stored; see crate::store::states) + nonce,
//!                   sealed into the slack-gateway-signin cookie with the return path ─► 302 Slack
//! GET callback_path ─► state checked and consumed (single-use) ─► cookie opens and names it
//!                   ─► openid.connect.token
//!                   ─► id_token verified (oidc) ─► allowed_teams ─► session cookie ─► 302 back
//! GET protect/…  (session) ─► forwarded with X-Slack-User-Id/-Team-Id/-User-Email/-User-Name
//! ```
//!
//! The session cookie `slack-gateway-session` is sealed ([`crate::seal`]), HttpOnly, SameSite=Lax and
//! Secure on https. The gateway's own cookies never reach the upstream. Return paths must be
//! local (`/…`, never `//host`, `/\host` or anything a browser would read as another origin).

use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use crate::gateway::{Gateway, Live};
use crate::http::{
    clear_cookie, cookie_value, escape_html, html, query_param, random_token, redirect, set_cookie,
    unix_now, Body,
};
use crate::oauth::{read_callback, Arrival};
use crate::slack::api::ApiError;
use crate::slack::oidc::{self, OidcError};

/// The signed-in session.
pub const SESSION_COOKIE: &str = "slack-gateway-session";
/// A login in progress: state, nonce and where to go back, sealed.
pub const LOGIN_COOKIE: &str = "slack-gateway-signin";
/// Prefix of sign-in states' used-markers in the store (kept apart from install states').
const STATE_PREFIX: &str = "signin:";

/// Why a sign-in failed.
#[derive(Debug, thiserror::Error)]
pub enum SigninError {
    #[error("Slack reported an error: {0}")]
    SlackDenied(String),
    #[error("the callback has no code")]
    MissingCode,
    #[error("unknown or already used state")]
    InvalidState,
    #[error("the login has expired")]
    ExpiredState,
    #[error("the login was started in another browser")]
    InvalidBrowser,
    #[error("openid.connect.token failed: {0}")]
    Token(ApiError),
    #[error("{0}")]
    IdToken(OidcError),
    #[error("this workspace is not allowed")]
    TeamNotAllowed,
    #[error("state store failed: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl SigninError {
    pub fn reason(&self) -> String {
        match self {
            SigninError::SlackDenied(e) => e.clone(),
            SigninError::MissingCode => "missing_code".into(),
            SigninError::InvalidState => "invalid_state".into(),
            SigninError::ExpiredState => "expired_state".into(),
            SigninError::InvalidBrowser => "invalid_browser".into(),
            SigninError::Token(e) => e.code().to_owned(),
            SigninError::IdToken(e) => e.reason().to_owned(),
            SigninError::TeamNotAllowed => "team_not_allowed".into(),
            SigninError::Store(_) => "storage_error".into(),
        }
    }

    /// The one mapping from sign-in error to status.
    pub fn status(&self) -> StatusCode {
        match self {
            SigninError::Token(ApiError::Unreachable(_))
            | SigninError::IdToken(OidcError::Jwks(_)) => StatusCode::BAD_GATEWAY,
            SigninError::IdToken(_) => StatusCode::UNAUTHORIZED,
            SigninError::TeamNotAllowed => StatusCode::FORBIDDEN,
            SigninError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct LoginCookie {
    /// state
    s: String,
    /// nonce
    n: String,
    /// return path
    r: String,
}

/// What the session cookie holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Session {
    #[serde(rename = "u")]
    pub user_id: String,
    #[serde(rename = "t")]
    pub team_id: String,
    #[serde(rename = "e", default)]
    pub email: Option<String>,
    #[serde(rename = "n", default)]
    pub name: Option<String>,
    /// Expiry, Unix seconds.
    #[serde(rename = "x")]
    pub expires_at: u64,
}

/// A return path that stays on this site, or `None`.
///
/// Browsers read `//host` and `/\host` as another origin, strip tabs and newlines before
/// parsing, and some decode `%2F`/`%5C`; every such form is refused.
pub fn safe_return_path(p: &str) -> Option<&str> {
    let decoded: String = form_urlencoded::parse(format!("x={}", p.replace('+', "%2B")).as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    let escapes =
        |s: &str| s.starts_with("//") || s.contains('\\') || s.chars().any(char::is_control);
    let raw_ok = p.starts_with('/') && !p.chars().any(char::is_whitespace) && !escapes(p);
    if p.len() > 2048 || !raw_ok || escapes(&decoded) {
        return None;
    }
    Some(p)
}

fn is_secure(live: &Live) -> bool {
    live.config.server.public_url.scheme() == "https"
}

fn sealer(live: &Live) -> Option<&crate::seal::Sealer> {
    live.signin_sealer.as_ref()
}

/// The session in the request's cookie, if it opens and has not expired.
pub fn session_of(live: &Live, headers: &http::HeaderMap) -> Option<Session> {
    let raw = cookie_value(headers, SESSION_COOKIE)?;
    let plain = sealer(live)?.open(SESSION_COOKIE, &raw)?;
    let s: Session = serde_json::from_slice(&plain).ok()?;
    (s.expires_at > unix_now()).then_some(s)
}

/// True when `path`, normalised ([`crate::http::path::normalize_path`]: dot segments and repeated
/// slashes resolved, as it is forwarded), is under one of the `protect` prefixes (on a segment
/// boundary).
pub fn is_protected(live: &Live, path: &str) -> bool {
    let path = crate::http::path::normalize_path(path);
    live.config.signin.protect.iter().any(|p| {
        let p = p.trim_end_matches('/');
        p.is_empty() || path == p || path.starts_with(&format!("{p}/"))
    })
}

/// `GET login_path`: state + nonce, then off to Slack.
pub async fn login(_gw: &Arc<Gateway>, live: &Arc<Live>, req: Request<Incoming>) -> Response<Body> {
    let cfg = &live.config;
    let Some(sealer) = sealer(live) else {
        return crate::http::text(StatusCode::NOT_FOUND, "not found");
    };
    let return_to = query_param(req.uri(), "return_to")
        .filter(|r| safe_return_path(r).is_some())
        .unwrap_or_else(|| "/".to_owned());
    let ttl = cfg.oauth.state_ttl.as_secs();
    // Self-verifying: nothing is stored until a callback brings it back.
    let state = live.states.signin.issue(unix_now() + ttl);
    let nonce = random_token();
    let cookie = serde_json::to_vec(&LoginCookie {
        s: state.clone(),
        n: nonce.clone(),
        r: return_to,
    })
    .expect("serializable");
    let mut url = cfg.slack.openid_authorize_url.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("response_type", "code");
        q.append_pair("scope", &cfg.signin.scopes.join(" "));
        q.append_pair("client_id", &cfg.slack.client_id);
        q.append_pair("state", &state);
        q.append_pair("nonce", &nonce);
        q.append_pair("redirect_uri", cfg.signin.redirect_uri.as_str());
        if let Some(t) = &cfg.signin.team {
            q.append_pair("team", t);
        }
    }
    let mut r = redirect(url.as_str());
    r.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(
            LOGIN_COOKIE,
            &sealer.seal(LOGIN_COOKIE, &cookie),
            ttl,
            is_secure(live),
        ),
    );
    r
}

/// `GET callback_path`: Slack's answer to a login.
pub async fn callback(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
) -> Response<Body> {
    let secure = is_secure(live);
    let mut resp = match complete_login(gw, live, &req).await {
        Ok((session, return_to)) => {
            tracing::info!(user = %session.user_id, team = %session.team_id, "signed in");
            let sealed = sealer(live).expect("checked in complete_login").seal(
                SESSION_COOKIE,
                &serde_json::to_vec(&session).expect("serializable"),
            );
            let mut r = redirect(&return_to);
            r.headers_mut().append(
                header::SET_COOKIE,
                set_cookie(
                    SESSION_COOKIE,
                    &sealed,
                    live.config.signin.session_ttl.as_secs(),
                    secure,
                ),
            );
            r
        }
        Err(e) => {
            if e.status().is_server_error() {
                tracing::warn!(error = %e, "sign-in failed");
            } else {
                tracing::info!(error = %e, "sign-in refused");
            }
            failure_page(e.status(), &e.reason(), &live.config.signin.login_path)
        }
    };
    resp.headers_mut()
        .append(header::SET_COOKIE, clear_cookie(LOGIN_COOKIE, secure));
    resp
}

fn failure_page(status: StatusCode, reason: &str, login_path: &str) -> Response<Body> {
    html(
        status,
        format!(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Sign-in failed</title></head>\
             <body><h1 id=\"failed\">Sign-in failed</h1><p>Reason: <code id=\"reason\">{}</code></p>\
             <p><a href=\"{}\">Try again</a></p></body></html>",
            escape_html(reason),
            escape_html(login_path)
        ),
    )
}

async fn complete_login(
    gw: &Gateway,
    live: &Live,
    req: &Request<Incoming>,
) -> Result<(Session, String), SigninError> {
    let cfg = &live.config;
    let (state, consumed, arrival) =
        read_callback(gw, req.uri(), &live.states.signin, STATE_PREFIX).await?;
    let code = match arrival {
        Arrival::Denied(error) => return Err(SigninError::SlackDenied(error)),
        Arrival::MissingCode => return Err(SigninError::MissingCode),
        Arrival::Code(code) => code,
    };
    let (Some(state), Some(expires_at)) = (state, consumed) else {
        return Err(SigninError::InvalidState);
    };
    if expires_at < unix_now() {
        return Err(SigninError::ExpiredState);
    }
    let sealer = sealer(live).ok_or(SigninError::InvalidBrowser)?;
    let login: LoginCookie = cookie_value(req.headers(), LOGIN_COOKIE)
        .and_then(|c| sealer.open(LOGIN_COOKIE, &c))
        .and_then(|p| serde_json::from_slice(&p).ok())
        .ok_or(SigninError::InvalidBrowser)?;
    if login.s != state {
        return Err(SigninError::InvalidBrowser);
    }
    let token = gw
        .api
        .openid_connect_token(
            &cfg.slack.api_url,
            cfg.slack.api_timeout,
            &cfg.slack.client_id,
            &cfg.slack.client_secret,
            &code,
            cfg.signin.redirect_uri.as_str(),
        )
        .await
        .map_err(SigninError::Token)?;
    let id_token = token
        .id_token
        .ok_or(SigninError::IdToken(OidcError::Malformed))?;
    let claims = oidc::verify(
        &gw.jwks,
        gw.api.http(),
        id_token.expose(),
        &oidc::Expected {
            issuer: &cfg.slack.openid_issuer,
            client_id: &cfg.slack.client_id,
            nonce: &login.n,
            jwks_url: cfg.slack.openid_jwks_url.as_str(),
            timeout: cfg.slack.api_timeout,
        },
    )
    .await
    .map_err(SigninError::IdToken)?;
    let team_id = claims.team_id.clone().unwrap_or_default();
    if !team_allowed(live, &team_id) {
        return Err(SigninError::TeamNotAllowed);
    }
    let session = Session {
        user_id: claims.user_id.clone().unwrap_or(claims.sub.clone()),
        team_id,
        email: claims.email,
        name: claims.name,
        expires_at: unix_now() + cfg.signin.session_ttl.as_secs(),
    };
    let return_to = safe_return_path(&login.r).unwrap_or("/").to_owned();
    Ok((session, return_to))
}

/// `allowed_teams` empty: any workspace.
fn team_allowed(live: &Live, team_id: &str) -> bool {
    let allowed = &live.config.signin.allowed_teams;
    allowed.is_empty() || allowed.iter().any(|t| t == team_id)
}

/// `logout_path`: the session cookie is cleared, then back to a local page.
pub fn logout(live: &Live, req: &Request<Incoming>) -> Response<Body> {
    let to = query_param(req.uri(), "return_to")
        .filter(|r| safe_return_path(r).is_some())
        .unwrap_or_else(|| "/".to_owned());
    let mut r = redirect(&to);
    r.headers_mut().append(
        header::SET_COOKIE,
        clear_cookie(SESSION_COOKIE, is_secure(live)),
    );
    r
}

/// What a request to a protected prefix may do ([`protected`]).
pub enum Access {
    /// Answered by the gateway: off to login, 401 (not a GET), 403 (another workspace).
    Answer(Response<Body>),
    /// Signed in and allowed: forwarded with `headers` (the user's identity), without the
    /// gateway's own cookies (`drop_cookies`). Forwarding is the caller's.
    Forward {
        headers: Vec<(http::HeaderName, String)>,
        drop_cookies: &'static [&'static str],
    },
}

/// The gateway's cookies, never forwarded to the upstream.
const OWN_COOKIES: &[&str] = &[SESSION_COOKIE, LOGIN_COOKIE, crate::oauth::STATE_COOKIE];

/// A request to a protected prefix: to login without a session, 403 for other workspaces,
/// else to be forwarded with the user's identity.
pub fn protected(live: &Live, req: &Request<Incoming>) -> Access {
    let Some(session) = session_of(live, req.headers()) else {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return Access::Answer(crate::http::text(StatusCode::UNAUTHORIZED, "sign in first"));
        }
        let original = req
            .uri()
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/");
        let back = safe_return_path(original).unwrap_or("/");
        let mut url = url::Url::parse("http://x/").expect("static");
        url.set_path(&live.config.signin.login_path);
        url.query_pairs_mut().append_pair("return_to", back);
        let location = format!("{}?{}", url.path(), url.query().unwrap_or(""));
        return Access::Answer(redirect(&location));
    };
    if !team_allowed(live, &session.team_id) {
        return Access::Answer(crate::http::text(
            StatusCode::FORBIDDEN,
            "this workspace is not allowed",
        ));
    }
    let names = &live.config.upstream.headers;
    let mut headers: Vec<(http::HeaderName, String)> = vec![
        (names.user_id.clone(), session.user_id.clone()),
        (names.team_id.clone(), session.team_id.clone()),
    ];
    if let Some(e) = &session.email {
        headers.push((names.user_email.clone(), e.clone()));
    }
    if let Some(n) = &session.name {
        headers.push((names.user_name.clone(), n.clone()));
    }
    Access::Forward {
        headers,
        drop_cookies: OWN_COOKIES,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_return_paths_pass() {
        for ok in ["/", "/app", "/app/x?y=1#z", "/a%20b"] {
            assert_eq!(safe_return_path(ok), Some(ok), "{ok}");
        }
        for bad in [
            "//evil.com",
            "/\\evil.com",
            "\\\\evil.com",
            "https://evil.com",
            "evil.com",
            "/%2F%2Fevil.com",
            "%2F%2Fevil.com",
            "/%5Cevil.com",
            "/\t/evil.com",
            "/\n/evil.com",
            "/%09/evil.com",
            "",
            "javascript:alert(1)",
        ] {
            assert_eq!(safe_return_path(bad), None, "{bad:?}");
        }
    }
}
