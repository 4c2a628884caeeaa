//! The OAuth v2 install flow: "Add to Slack" → Slack's authorize page → the callback →
//! `oauth.v2.access` → `auth.test` → the installation saved.
//!
//! ```text
//! GET install_path ──► state (256 random bits + expiry, MAC'd: nothing stored), cookie bound ──► page / 302
//! GET redirect_path ─► ours? ─► used-marker (once, whatever the outcome) ─► error? ─► expired? cookie?
//!                      ─► oauth.v2.access ─► auth.test ─► save + flush ─► success page / 302
//! ```
//!
//! Every failure is a failure page (or a redirect to `failure_url`) with a status and a short
//! reason: 400 for what the browser or Slack refused, 502 when Slack could not be reached, 503
//! when the store failed. The state cookie is cleared on every callback.

pub mod rotation;

use std::sync::Arc;

use http::{header, Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use subtle::ConstantTimeEq;
use url::Url;

use crate::gateway::{Gateway, Live};
use crate::http::{
    clear_cookie, cookie_value, html, query_param, redirect, set_cookie, text, unix_now, Body,
};
use crate::pages;
use crate::slack::api::{ApiError, AuthTest, OAuthAccess};
use crate::store::states as state;
use crate::store::{Installation, Token};

/// The cookie that binds an install's `state` to the browser that started it.
pub const STATE_COOKIE: &str = "slack-gateway-oauth-state";

/// Why an install callback failed. `reason()` is the short code users and `failure_url` see.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("Slack reported an error: {0}")]
    SlackDenied(String),
    #[error("the callback has no code")]
    MissingCode,
    #[error("unknown or already used state")]
    InvalidState,
    #[error("the state has expired")]
    ExpiredState,
    #[error("the state was issued to another browser")]
    InvalidBrowser,
    #[error("oauth.v2.access failed: {0}")]
    Access(ApiError),
    #[error("auth.test failed: {0}")]
    AuthTest(ApiError),
    #[error("a stateless install must be an org-wide install")]
    StatelessNotEnterprise,
    #[error("the installation could not be saved: {0}")]
    Store(#[from] crate::store::StoreError),
}

impl InstallError {
    pub fn reason(&self) -> String {
        match self {
            InstallError::SlackDenied(e) => e.clone(),
            InstallError::MissingCode => "missing_code".into(),
            InstallError::InvalidState | InstallError::StatelessNotEnterprise => {
                "invalid_state".into()
            }
            InstallError::ExpiredState => "expired_state".into(),
            InstallError::InvalidBrowser => "invalid_browser".into(),
            InstallError::Access(e) | InstallError::AuthTest(e) => e.code().to_owned(),
            InstallError::Store(crate::store::StoreError::Unavailable(_)) => {
                "store_unavailable".into()
            }
            InstallError::Store(_) => "storage_error".into(),
        }
    }

    /// The one mapping from install error to status.
    pub fn status(&self) -> StatusCode {
        match self {
            InstallError::Access(ApiError::Unreachable(_))
            | InstallError::AuthTest(ApiError::Unreachable(_)) => StatusCode::BAD_GATEWAY,
            InstallError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

fn is_secure(live: &Live) -> bool {
    live.config.server.public_url.scheme() == "https"
}

/// `GET install_path`: a fresh state, its cookie, and the "Add to Slack" page or a redirect.
pub async fn install(
    _gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut r = text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
        r.headers_mut()
            .insert(header::ALLOW, http::HeaderValue::from_static("GET"));
        return r;
    }
    let cfg = &live.config;
    let team = match query_param(req.uri(), "team") {
        Some(t) if is_slack_id(&t) => Some(t),
        Some(_) => return text(StatusCode::BAD_REQUEST, "invalid team parameter"),
        None => cfg.oauth.team.clone(),
    };
    let ttl = cfg.oauth.state_ttl.as_secs();
    // Self-verifying: nothing is stored until a callback brings it back.
    let state = live.states.install.issue(unix_now() + ttl);
    // Assembled from pieces encoded once per config (see link.rs): anyone may ask for this page.
    let mut resp = if cfg.oauth.direct_install {
        redirect(&live.install_link.url(&state, team.as_deref()))
    } else if let Some(template) = &cfg.oauth.install_page_template {
        let url = live.install_link.url(&state, team.as_deref());
        let page = pages::page(
            Some(template),
            &pages::install_builtin(),
            &[("authorize_url", &url)],
        )
        .await;
        html(StatusCode::OK, page)
    } else {
        html(
            StatusCode::OK,
            live.install_link.page(&state, team.as_deref()),
        )
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        set_cookie(STATE_COOKIE, &state, ttl, is_secure(live)),
    );
    resp
}

/// Slack ids are short and alphanumeric; anything else in `?team=` is refused.
fn is_slack_id(s: &str) -> bool {
    !s.is_empty() && s.len() <= 32 && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// `{authorize_url}?client_id=..&scope=a,b&user_scope=c&state=..&redirect_uri=..&team=..`,
/// empty parameters left out. The reference for [`crate::pages::install_link::InstallLink`], which the install
/// page uses.
pub fn authorize_url(live: &Live, state: &str, team: Option<&str>) -> Url {
    let cfg = &live.config;
    let mut url = cfg.slack.authorize_url.clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", &cfg.slack.client_id);
        if !cfg.oauth.scopes.is_empty() {
            q.append_pair("scope", &cfg.oauth.scopes.join(","));
        }
        if !cfg.oauth.user_scopes.is_empty() {
            q.append_pair("user_scope", &cfg.oauth.user_scopes.join(","));
        }
        q.append_pair("state", state);
        q.append_pair("redirect_uri", cfg.oauth.redirect_uri.as_str());
        if let Some(t) = team.filter(|t| !t.is_empty()) {
            q.append_pair("team", t);
        }
    }
    url
}

/// `GET redirect_path`: Slack's callback.
pub async fn callback(
    gw: &Arc<Gateway>,
    live: &Arc<Live>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() != Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "use GET");
    }
    let result = complete_install(gw, live, &req).await;
    let mut resp = match result {
        Ok(inst) => {
            gw.metrics.install("success");
            tracing::info!(
                team = ?inst.team_id, enterprise = ?inst.enterprise_id, org_wide = inst.is_enterprise_install,
                "installation saved"
            );
            success(live, &inst).await
        }
        Err(e) => {
            gw.metrics.install(match e {
                InstallError::Access(ApiError::Unreachable(_))
                | InstallError::AuthTest(ApiError::Unreachable(_)) => "slack_unreachable",
                InstallError::Store(_) => "storage_error",
                _ => "refused",
            });
            if e.status().is_server_error() {
                tracing::warn!(error = %e, "install failed");
            } else {
                tracing::info!(error = %e, "install refused");
            }
            failure(live, e.status(), &e.reason()).await
        }
    };
    resp.headers_mut().append(
        header::SET_COOKIE,
        clear_cookie(STATE_COOKIE, is_secure(live)),
    );
    resp
}

async fn complete_install(
    gw: &Gateway,
    live: &Live,
    req: &Request<Incoming>,
) -> Result<Installation, InstallError> {
    let cfg = &live.config;
    let (state, consumed, arrival) =
        read_callback(gw, req.uri(), &live.states.install, INSTALL_MARKER_PREFIX).await?;
    let code = match arrival {
        Arrival::Denied(error) => return Err(InstallError::SlackDenied(error)),
        Arrival::MissingCode => return Err(InstallError::MissingCode),
        Arrival::Code(code) => code,
    };
    let stateless = state.is_none();
    match (&state, consumed) {
        (None, _) if cfg.oauth.accept_stateless_org_installs => {}
        (None, _) | (Some(_), None) => return Err(InstallError::InvalidState),
        (Some(s), Some(expires_at)) => {
            if expires_at < unix_now() {
                return Err(InstallError::ExpiredState);
            }
            let cookie = cookie_value(req.headers(), STATE_COOKIE).unwrap_or_default();
            if !bool::from(cookie.as_bytes().ct_eq(s.as_bytes())) {
                return Err(InstallError::InvalidBrowser);
            }
        }
    }

    let access = gw
        .api
        .oauth_v2_access(
            &cfg.slack.api_url,
            cfg.slack.api_timeout,
            &cfg.slack.client_id,
            &cfg.slack.client_secret,
            &code,
            Some(cfg.oauth.redirect_uri.as_str()),
        )
        .await
        .map_err(InstallError::Access)?;
    if stateless && !access.is_enterprise_install {
        return Err(InstallError::StatelessNotEnterprise);
    }
    let bot_token = access
        .access_token
        .as_ref()
        .filter(|_| access.token_type.as_deref() != Some("user"));
    let auth = match bot_token {
        Some(t) => Some(
            gw.api
                .auth_test(&cfg.slack.api_url, cfg.slack.api_timeout, t.expose())
                .await
                .map_err(InstallError::AuthTest)?,
        ),
        None => None,
    };
    let inst = installation_from(access, auth, unix_now());
    gw.store.save(&cfg.slack.client_id, &inst).await?;
    Ok(inst)
}

/// What Slack's redirect back brought.
pub(crate) enum Arrival {
    /// Slack's `error` parameter (`access_denied`, ...).
    Denied(String),
    MissingCode,
    Code(String),
}

/// The prefix of install states' used-markers in the store.
const INSTALL_MARKER_PREFIX: &str = "install:";

/// Reads a callback (install or sign-in): its `state`, checked against `key` and consumed
/// first, whatever happens next, so it can never be used twice (`marker_prefix` keeps the
/// flows' markers apart); the expiry of a state we issued and had not used (see
/// [`state::consume`]); and the code or Slack's error.
pub(crate) async fn read_callback(
    gw: &Gateway,
    uri: &http::Uri,
    key: &state::StateKey,
    marker_prefix: &str,
) -> Result<(Option<String>, Option<u64>, Arrival), crate::store::StoreError> {
    let state = query_param(uri, "state").filter(|s| !s.is_empty());
    let consumed = match &state {
        Some(s) => state::consume(gw.store.as_ref(), key, marker_prefix, s, unix_now()).await?,
        None => None,
    };
    let arrival = match (
        query_param(uri, "error"),
        query_param(uri, "code").filter(|c| !c.is_empty()),
    ) {
        (Some(error), _) => Arrival::Denied(error),
        (None, None) => Arrival::MissingCode,
        (None, Some(code)) => Arrival::Code(code),
    };
    Ok((state, consumed, arrival))
}

/// The installation record for what Slack returned, every field kept.
pub fn installation_from(access: OAuthAccess, auth: Option<AuthTest>, now: u64) -> Installation {
    let now_i = now as i64;
    let user = access.authed_user.clone().unwrap_or_default();
    let has_bot = access.token_type.as_deref() != Some("user") && access.access_token.is_some();
    let webhook = access.incoming_webhook.clone().unwrap_or_default();
    let enterprise = access.enterprise.clone().unwrap_or_default();
    let team = access.team.clone().unwrap_or_default();
    let tok = |t: Option<crate::slack::api::SecretString>| t.map(|t| Token::new(t.into_inner()));
    Installation {
        app_id: access.app_id.clone(),
        enterprise_id: enterprise.id,
        enterprise_name: enterprise.name,
        enterprise_url: auth
            .as_ref()
            .and_then(|a| a.url.clone())
            .filter(|_| access.is_enterprise_install),
        team_id: team.id,
        team_name: team.name,
        bot_token: if has_bot {
            tok(access.access_token.clone())
        } else {
            None
        },
        bot_id: auth.as_ref().and_then(|a| a.bot_id.clone()),
        bot_user_id: access.bot_user_id.clone(),
        bot_scopes: if has_bot { access.scope.clone() } else { None },
        bot_refresh_token: if has_bot {
            tok(access.refresh_token.clone())
        } else {
            None
        },
        bot_token_expires_at: if has_bot {
            access.expires_in.map(|s| now_i + s)
        } else {
            None
        },
        user_id: user.id.unwrap_or_default(),
        user_token: tok(user.access_token),
        user_scopes: user.scope,
        user_refresh_token: tok(user.refresh_token),
        user_token_expires_at: user.expires_in.map(|s| now_i + s),
        incoming_webhook_url: webhook.url,
        incoming_webhook_channel: webhook.channel,
        incoming_webhook_channel_id: webhook.channel_id,
        incoming_webhook_configuration_url: webhook.configuration_url,
        is_enterprise_install: access.is_enterprise_install,
        token_type: access.token_type.clone(),
        installed_at: now as f64,
    }
}

/// Where the success page sends the user: the app in Slack, or the org's app page.
pub fn slack_url(inst: &Installation) -> String {
    let app = inst.app_id.as_deref().unwrap_or_default();
    match (&inst.enterprise_url, inst.is_enterprise_install) {
        (Some(url), true) => {
            let base = if url.ends_with('/') {
                url.clone()
            } else {
                format!("{url}/")
            };
            format!("{base}manage/organization/apps/profile/{app}/workspaces/add")
        }
        _ => format!(
            "slack://app?team={}&id={app}",
            inst.team_id.as_deref().unwrap_or_default()
        ),
    }
}

async fn success(live: &Live, inst: &Installation) -> Response<Body> {
    let cfg = &live.config;
    if let Some(u) = &cfg.oauth.success_url {
        let mut u = u.clone();
        u.query_pairs_mut()
            .append_pair("team", inst.team_id.as_deref().unwrap_or_default())
            .append_pair(
                "enterprise",
                inst.enterprise_id.as_deref().unwrap_or_default(),
            )
            .append_pair("app", inst.app_id.as_deref().unwrap_or_default());
        return redirect(u.as_str());
    }
    let slack_url = slack_url(inst);
    let page = pages::page(
        cfg.oauth.success_page_template.as_deref(),
        &pages::success_builtin(),
        &[
            ("slack_url", &slack_url),
            ("team_id", inst.team_id.as_deref().unwrap_or_default()),
            (
                "team_name",
                inst.team_name
                    .as_deref()
                    .or(inst.enterprise_name.as_deref())
                    .unwrap_or_default(),
            ),
            (
                "enterprise_id",
                inst.enterprise_id.as_deref().unwrap_or_default(),
            ),
            ("app_id", inst.app_id.as_deref().unwrap_or_default()),
        ],
    )
    .await;
    html(StatusCode::OK, page)
}

async fn failure(live: &Live, status: StatusCode, reason: &str) -> Response<Body> {
    let cfg = &live.config;
    if let Some(u) = &cfg.oauth.failure_url {
        let mut u = u.clone();
        u.query_pairs_mut().append_pair("reason", reason);
        return redirect(u.as_str());
    }
    let page = pages::page(
        cfg.oauth.failure_page_template.as_deref(),
        &pages::failure_builtin(),
        &[
            ("reason", reason),
            ("install_path", &cfg.oauth.install_path),
        ],
    )
    .await;
    html(status, page)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_install_error_has_its_status_and_reason() {
        let cases = [
            (
                InstallError::SlackDenied("access_denied".into()),
                400,
                "access_denied",
            ),
            (InstallError::MissingCode, 400, "missing_code"),
            (InstallError::InvalidState, 400, "invalid_state"),
            (InstallError::ExpiredState, 400, "expired_state"),
            (InstallError::InvalidBrowser, 400, "invalid_browser"),
            (
                InstallError::Access(ApiError::Slack("invalid_code".into())),
                400,
                "invalid_code",
            ),
            (
                InstallError::Access(ApiError::Unreachable("x".into())),
                502,
                "slack_unreachable",
            ),
            (
                InstallError::AuthTest(ApiError::Unreachable("x".into())),
                502,
                "slack_unreachable",
            ),
            (InstallError::StatelessNotEnterprise, 400, "invalid_state"),
        ];
        for (e, status, reason) in cases {
            assert_eq!(e.status().as_u16(), status, "{e:?}");
            assert_eq!(e.reason(), reason);
        }
    }

    #[test]
    fn success_links_open_the_app_or_the_org_page() {
        let mut i = Installation {
            app_id: Some("A1".into()),
            team_id: Some("T1".into()),
            ..Default::default()
        };
        assert_eq!(slack_url(&i), "slack://app?team=T1&id=A1");
        i.is_enterprise_install = true;
        i.enterprise_url = Some("https://acme.enterprise.slack.com/".into());
        assert_eq!(
            slack_url(&i),
            "https://acme.enterprise.slack.com/manage/organization/apps/profile/A1/workspaces/add"
        );
    }

    #[test]
    fn slack_ids_are_checked() {
        assert!(is_slack_id("T0123ABCD"));
        assert!(!is_slack_id("T1&scope=admin"));
        assert!(!is_slack_id(""));
    }
}

#[cfg(test)]
mod install_link_tests {
    use crate::config::Config;
    use crate::gateway::Live;
    use crate::pages::{self, install_link::InstallLink};

    fn live(slack: &str, oauth: &str) -> Live {
        let text = format!(
            "[slack]\nclient_id = \"123.456\"\nclient_secret = \"cs\"\nsigning_secret = \"ss\"\n{slack}\n\
             [oauth]\n{oauth}\n"
        );
        let config =
            Config::from_toml(&text, std::path::Path::new("/etc/gw/gateway.toml"), &|_| {
                None
            })
            .unwrap_or_else(|e| panic!("{e}\n{text}"));
        Live::new(config)
    }

    #[test]
    fn state_flood_the_assembled_link_and_page_equal_the_rendered_ones() {
        let cases = [
            ("", "scopes = [\"commands\", \"chat:write\"]"),
            (
                "",
                "scopes = [\"commands\"]\nuser_scopes = [\"search:read\", \"users:read\"]",
            ),
            ("", "user_scopes = [\"search:read\"]\nteam = \"T0CONF\""),
            (
                "authorize_url = \"https://example.com/auth?x=1&y=a%20b#frag<&>\"",
                "scopes = [\"commands\"]\nredirect_uri = \"https://gw.example.com/cb?a=1&b='x'\"",
            ),
            ("domain = \"slack-gov.com\"", "scopes = [\"a b\", \"c&d\"]"),
        ];
        for (slack, oauth) in cases {
            let live = live(slack, oauth);
            let link = InstallLink::new(&live.config);
            let conf_team = live.config.oauth.team.clone();
            for team in [None, Some(""), Some("T0123"), conf_team.as_deref()] {
                for state in ["AbC-_09", "needs encoding &<>\"' é"] {
                    let want = super::authorize_url(&live, state, team);
                    let got = link.url(state, team);
                    assert_eq!(got, want.as_str(), "{slack} {oauth} {team:?}");
                    assert_eq!(
                        link.page(state, team),
                        pages::render(
                            &pages::install_builtin(),
                            &[("authorize_url", want.as_str())]
                        ),
                        "{slack} {oauth} {team:?}"
                    );
                }
            }
        }
    }
}
