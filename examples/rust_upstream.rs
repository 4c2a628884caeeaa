//! A Slack app behind slack-gateway, in Rust with hyper 1 (see `examples/rust/README.md`).
//!
//! The gateway has already verified Slack's signature and looked up the installation; it adds
//! the workspace's bot token and identity as headers (`X-Slack-Bot-Token`, `X-Slack-Bot-Id`,
//! `X-Slack-Bot-User-Id`, `X-Slack-Team-Id`, `X-Slack-Enterprise-Id`,
//! `X-Slack-Enterprise-Install`, and `X-Slack-User-Token` with `upstream.inject_user_token`).
//! So this app has no signing secret, no OAuth flow and no installation store: it answers an
//! `app_mention` and the `/echo` slash command by calling `chat.postMessage` with the token
//! the request came with.
//!
//! ```text
//! cargo run --example rust_upstream          # listens on 127.0.0.1:8080
//! ```
//!
//! Environment: `HOST` [127.0.0.1], `PORT` [8080], `SLACK_API_URL` [https://slack.com/api].
//! Listen only where the gateway alone can reach the app: it trusts these headers, and the
//! gateway is what strips forged copies of them.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{json, Value};
use tokio::net::TcpListener;

/// Slack sends at most a few kilobytes; the gateway already caps bodies too.
const MAX_BODY: usize = 1 << 20;

/// What the gateway injected (its default header names).
#[derive(Debug, Default)]
struct Injected {
    bot_token: Option<String>,
    team_id: Option<String>,
    enterprise_id: Option<String>,
    bot_user_id: Option<String>,
}

impl Injected {
    fn from_headers(h: &HeaderMap) -> Self {
        let get = |name: &str| {
            h.get(name)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned)
        };
        Injected {
            bot_token: get("x-slack-bot-token"),
            team_id: get("x-slack-team-id"),
            enterprise_id: get("x-slack-enterprise-id"),
            bot_user_id: get("x-slack-bot-user-id"),
        }
    }
}

/// Calls Slack's Web API as one workspace's bot.
struct Slack {
    http: reqwest::Client,
    api_url: String,
}

impl Slack {
    /// `chat.postMessage` with `token`; Slack's `error` when it answers `ok: false`.
    async fn post_message(&self, token: &str, message: Value) -> Result<(), String> {
        let answer: Value = self
            .http
            .post(format!("{}/chat.postMessage", self.api_url))
            .bearer_auth(token)
            .json(&message)
            .send()
            .await
            .map_err(|e| e.to_string())?
            .json()
            .await
            .map_err(|e| e.to_string())?;
        if answer["ok"] == Value::Bool(true) {
            Ok(())
        } else {
            Err(answer["error"]
                .as_str()
                .unwrap_or("unknown_error")
                .to_owned())
        }
    }
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .unwrap()
}

/// Runs `call` after the answer has gone back: Slack waits 3 seconds for it.
fn after_ack(
    what: &'static str,
    call: impl std::future::Future<Output = Result<(), String>> + Send + 'static,
) {
    tokio::spawn(async move {
        if let Err(e) = call.await {
            eprintln!("{what}: chat.postMessage failed: {e}");
        }
    });
}

async fn handle(slack: Arc<Slack>, req: Request<Incoming>) -> Response<Full<Bytes>> {
    if req.uri().path() != "/slack/events" {
        return text(StatusCode::NOT_FOUND, "not found");
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "");
    }
    let gateway = Injected::from_headers(req.headers());
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return text(StatusCode::PAYLOAD_TOO_LARGE, "body too large"),
    };
    // No token: the gateway found no installation for this workspace.
    let Some(token) = gateway.bot_token.clone() else {
        eprintln!(
            "no installation for team {:?} (enterprise {:?})",
            gateway.team_id, gateway.enterprise_id
        );
        return text(StatusCode::OK, "");
    };

    if is_json {
        // Events API. The gateway answered url_verification itself.
        let Ok(payload) = serde_json::from_slice::<Value>(&body) else {
            return text(StatusCode::BAD_REQUEST, "malformed JSON");
        };
        let event = &payload["event"];
        // The bot's own messages come back as events too: never answer those.
        let from_self = gateway.bot_user_id.is_some()
            && event["user"].as_str() == gateway.bot_user_id.as_deref();
        if payload["type"] == "event_callback" && event["type"] == "app_mention" && !from_self {
            let ts = event["thread_ts"].as_str().or(event["ts"].as_str());
            let message = json!({
                "channel": event["channel"],
                "thread_ts": ts,
                "text": format!(
                    "Hi <@{}>, you said: {}",
                    event["user"].as_str().unwrap_or(""),
                    event["text"].as_str().unwrap_or("")
                ),
            });
            after_ack("app_mention", async move {
                slack.post_message(&token, message).await
            });
        }
        return text(StatusCode::OK, "");
    }

    // Slash commands and interactivity are forms.
    let form: HashMap<String, String> = form_urlencoded::parse(&body).into_owned().collect();
    if form.get("command").map(String::as_str) == Some("/echo") {
        let channel = form.get("channel_id").cloned().unwrap_or_default();
        let message = json!({
            "channel": channel,
            "text": format!(
                "<@{}> asked me to say: {}",
                form.get("user_id").map(String::as_str).unwrap_or(""),
                form.get("text").map(String::as_str).unwrap_or("")
            ),
        });
        after_ack(
            "/echo",
            async move { slack.post_message(&token, message).await },
        );
        return text(StatusCode::OK, format!("Echoing to <#{channel}>"));
    }
    // Anything else (other commands, a `payload` form from interactivity): acknowledged.
    text(StatusCode::OK, "")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let host = std::env::var("HOST").unwrap_or_else(|_| "127.0.0.1".into());
    let port = std::env::var("PORT").unwrap_or_else(|_| "8080".into());
    let addr: SocketAddr = format!("{host}:{port}").parse()?;
    let api_url = std::env::var("SLACK_API_URL").unwrap_or_else(|_| "https://slack.com/api".into());
    let slack = Arc::new(Slack {
        http: reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(10))
            .build()?,
        api_url: api_url.trim_end_matches('/').to_owned(),
    });
    let listener = TcpListener::bind(addr).await?;
    eprintln!("listening on http://{addr}/slack/events (Slack API: {api_url})");
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                eprintln!("accept: {e}");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let slack = slack.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let slack = slack.clone();
                async move { Ok::<_, Infallible>(handle(slack, req).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                eprintln!("connection: {e}");
            }
        });
    }
}
