//! The few Slack Web API methods the gateway calls: `oauth.v2.access` (install and token
//! refresh), `auth.test`, and `openid.connect.token`.
//!
//! Client credentials go as HTTP Basic auth (Slack's preferred form) and in the form body (for
//! clients that read them there). Every call has the `slack.api_timeout`. Errors say whose
//! fault they are: Slack said `ok:false` ([`ApiError::Slack`], with Slack's error code), or
//! Slack could not be reached / answered 5xx / garbage ([`ApiError::Unreachable`]).

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Deserialize;
use url::Url;

use crate::secret::Secret;

/// A Slack Web API failure.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Slack answered `ok: false` with this error code (`invalid_code`, `bad_redirect_uri`,
    /// `invalid_refresh_token`, ...).
    #[error("slack error: {0}")]
    Slack(String),
    /// Slack could not be reached, timed out, answered 5xx or something that is not JSON.
    #[error("slack unreachable: {0}")]
    Unreachable(String),
}

impl ApiError {
    /// The short code shown to users and used as the failure reason.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Slack(code) => code,
            ApiError::Unreachable(_) => "slack_unreachable",
        }
    }
}

/// Why `apps.connections.open` gave no URL.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("rate limited: retry after {0:?}")]
    RateLimited(Duration),
}

#[derive(Deserialize)]
struct ConnectionsOpen {
    url: String,
}

/// `oauth.v2.access`'s answer (install or refresh), with the fields the gateway keeps.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OAuthAccess {
    pub app_id: Option<String>,
    pub authed_user: Option<AuthedUser>,
    pub scope: Option<String>,
    pub token_type: Option<String>,
    pub access_token: Option<SecretString>,
    pub bot_user_id: Option<String>,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<i64>,
    pub team: Option<IdName>,
    pub enterprise: Option<IdName>,
    pub is_enterprise_install: bool,
    pub incoming_webhook: Option<IncomingWebhook>,
    /// Present on refresh answers.
    pub team_id: Option<String>,
    pub enterprise_id: Option<String>,
}

/// The installing user's part of `oauth.v2.access`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthedUser {
    pub id: Option<String>,
    pub scope: Option<String>,
    pub access_token: Option<SecretString>,
    pub token_type: Option<String>,
    pub refresh_token: Option<SecretString>,
    pub expires_in: Option<i64>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IdName {
    pub id: Option<String>,
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct IncomingWebhook {
    pub channel: Option<String>,
    pub channel_id: Option<String>,
    pub configuration_url: Option<String>,
    pub url: Option<String>,
}

/// `auth.test`'s answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct AuthTest {
    pub url: Option<String>,
    pub team: Option<String>,
    pub team_id: Option<String>,
    pub user_id: Option<String>,
    pub bot_id: Option<String>,
    pub enterprise_id: Option<String>,
    pub is_enterprise_install: bool,
}

/// `openid.connect.token`'s answer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct OpenIdToken {
    pub access_token: Option<SecretString>,
    pub id_token: Option<SecretString>,
    pub token_type: Option<String>,
}

/// A string from Slack that is a credential: deserialized, never `Debug`ged.
#[derive(Clone, Deserialize)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    pub fn expose(&self) -> &str {
        &self.0
    }
    pub fn into_inner(self) -> String {
        self.0
    }
}

impl std::fmt::Debug for SecretString {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(crate::secret::REDACTED)
    }
}

/// A client for Slack's Web API at `slack.api_url`.
#[derive(Clone)]
pub struct SlackApi {
    http: reqwest::Client,
}

impl Default for SlackApi {
    fn default() -> Self {
        Self::new()
    }
}

impl SlackApi {
    pub fn new() -> Self {
        let http = reqwest::Client::builder()
            .user_agent(concat!("slack-gateway/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("the HTTP client builds with the default TLS backend");
        SlackApi { http }
    }

    /// The underlying HTTP client (for Slack's JWKS).
    pub fn http(&self) -> &reqwest::Client {
        &self.http
    }

    /// Exchanges an authorization `code` for tokens.
    pub async fn oauth_v2_access(
        &self,
        api_url: &Url,
        timeout: Duration,
        client_id: &str,
        client_secret: &Secret,
        code: &str,
        redirect_uri: Option<&str>,
    ) -> Result<OAuthAccess, ApiError> {
        let mut form = vec![
            ("code", code),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ];
        if let Some(r) = redirect_uri {
            form.push(("redirect_uri", r));
        }
        self.call_with_client(
            api_url,
            "oauth.v2.access",
            timeout,
            client_id,
            client_secret,
            &form,
        )
        .await
    }

    /// Trades a (single-use) refresh token for a new token pair.
    pub async fn refresh(
        &self,
        api_url: &Url,
        timeout: Duration,
        client_id: &str,
        client_secret: &Secret,
        refresh_token: &str,
    ) -> Result<OAuthAccess, ApiError> {
        let form = [
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
        ];
        self.call_with_client(
            api_url,
            "oauth.v2.access",
            timeout,
            client_id,
            client_secret,
            &form,
        )
        .await
    }

    /// Exchanges a Sign in with Slack `code` for an id_token.
    pub async fn openid_connect_token(
        &self,
        api_url: &Url,
        timeout: Duration,
        client_id: &str,
        client_secret: &Secret,
        code: &str,
        redirect_uri: &str,
    ) -> Result<OpenIdToken, ApiError> {
        let form = [
            ("code", code),
            ("client_id", client_id),
            ("client_secret", client_secret.expose()),
            ("redirect_uri", redirect_uri),
        ];
        self.call_with_client(
            api_url,
            "openid.connect.token",
            timeout,
            client_id,
            client_secret,
            &form,
        )
        .await
    }

    /// `auth.test` with `token`.
    pub async fn auth_test(
        &self,
        api_url: &Url,
        timeout: Duration,
        token: &str,
    ) -> Result<AuthTest, ApiError> {
        let req = self
            .http
            .post(method_url(api_url, "auth.test"))
            .bearer_auth(token)
            .timeout(timeout);
        decode(req.send().await).await
    }

    /// `apps.connections.open` with the app-level token: a Socket Mode WebSocket URL. A 429
    /// is [`OpenError::RateLimited`] with Slack's `Retry-After`.
    pub async fn apps_connections_open(
        &self,
        api_url: &Url,
        timeout: Duration,
        app_token: &Secret,
    ) -> Result<String, OpenError> {
        let sent = self
            .http
            .post(method_url(api_url, "apps.connections.open"))
            .bearer_auth(app_token.expose())
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .timeout(timeout)
            .send()
            .await;
        if let Ok(r) = &sent {
            if r.status() == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let wait = crate::slack::ratelimit::retry_after(
                    r.headers().get(reqwest::header::RETRY_AFTER),
                );
                return Err(OpenError::RateLimited(wait));
            }
        }
        let open: ConnectionsOpen = decode(sent).await?;
        Ok(open.url)
    }

    async fn call_with_client<T: DeserializeOwned>(
        &self,
        api_url: &Url,
        method: &str,
        timeout: Duration,
        client_id: &str,
        client_secret: &Secret,
        form: &[(&str, &str)],
    ) -> Result<T, ApiError> {
        let req = self
            .http
            .post(method_url(api_url, method))
            .basic_auth(client_id, Some(client_secret.expose()))
            .form(form)
            .timeout(timeout);
        decode(req.send().await).await
    }
}

fn method_url(api_url: &Url, method: &str) -> String {
    format!("{}/{method}", api_url.as_str().trim_end_matches('/'))
}

#[derive(Deserialize)]
struct Envelope {
    ok: bool,
    error: Option<String>,
}

async fn decode<T: DeserializeOwned>(
    sent: reqwest::Result<reqwest::Response>,
) -> Result<T, ApiError> {
    // reqwest's errors carry the URL, never the form body or headers.
    let resp = sent.map_err(|e| ApiError::Unreachable(describe(&e)))?;
    let status = resp.status();
    if status.is_server_error() {
        return Err(ApiError::Unreachable(format!("HTTP {status}")));
    }
    let body = resp
        .bytes()
        .await
        .map_err(|e| ApiError::Unreachable(describe(&e)))?;
    let env: Envelope = serde_json::from_slice(&body).map_err(|_| {
        ApiError::Unreachable(format!(
            "HTTP {status} with a body that is not Slack's JSON"
        ))
    })?;
    if !env.ok {
        let code = env.error.unwrap_or_else(|| "unknown_error".to_owned());
        // Slack's codes are short identifiers; anything else is not worth echoing.
        let code =
            if code.len() <= 64 && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
                code
            } else {
                "unknown_error".to_owned()
            };
        return Err(ApiError::Slack(code));
    }
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::Unreachable(format!("unexpected answer shape: {e}")))
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        e.to_string()
    }
}
