//! The fake Slack's Web API methods beyond OAuth, for the egress tests: each as Slack
//! documents it, answering only a token the fake issued or registered.
//!
//! - `conversations.list`: two channels, paginated by `limit`/`cursor`;
//! - `files.getUploadURLExternal` (`filename`, `length`) → an `upload_url` on the fake and a
//!   `file_id`; `POST` of the bytes to that URL; `files.completeUploadExternal` (`files` as a
//!   JSON list of `{id, title}`) → the files, refused for an id never uploaded;
//! - `chat.postMessage` (form or JSON body, as `slack_sdk` sends it): accepted with a
//!   channel and a text (or blocks), every attempt recorded;
//! - a rate-limit knob: the next N calls of a method answer 429 with `Retry-After`.

use std::collections::HashMap;

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{json, Value};

/// A `chat.postMessage` call: the token it came with, where and what, and whether the fake
/// accepted it.
#[derive(Clone, Debug)]
pub struct PostedMessage {
    pub token: Option<String>,
    pub channel: String,
    pub text: String,
    pub ok: bool,
}

/// Who calls: the token sent, the team it was issued for (or Slack's error for it), and the
/// fake's clock.
pub struct Caller {
    pub token: Option<String>,
    pub team: Result<String, &'static str>,
    pub now: i64,
}

/// What the Web API part of the fake keeps.
#[derive(Default)]
pub struct WebState {
    /// Every `chat.postMessage` attempt.
    pub posted: Vec<PostedMessage>,
    counter: u64,
    /// Files announced by getUploadURLExternal: id → (name, announced length, bytes uploaded).
    files: HashMap<String, (String, usize, Option<Bytes>)>,
    next_file: u64,
    /// Method → (calls still to answer 429, Retry-After seconds).
    limited: HashMap<String, (usize, u64)>,
    /// How many calls answered 429, by method.
    pub ratelimited: HashMap<String, usize>,
}

impl WebState {
    /// The next `calls` calls of `method` answer 429 with `Retry-After: {secs}`.
    pub fn ratelimit(&mut self, method: &str, calls: usize, secs: u64) {
        self.limited.insert(method.to_owned(), (calls, secs));
    }

    /// The bytes uploaded for `file_id`.
    pub fn uploaded(&self, file_id: &str) -> Option<Bytes> {
        self.files.get(file_id).and_then(|f| f.2.clone())
    }
}

fn json_response(status: StatusCode, v: Value) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json; charset=utf-8")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap()
}

fn error(code: &str) -> Response<Full<Bytes>> {
    json_response(StatusCode::OK, json!({"ok": false, "error": code}))
}

/// A 429 for `method` when the knob says so.
pub fn rate_limited(web: &mut WebState, method: &str) -> Option<Response<Full<Bytes>>> {
    let (left, secs) = web.limited.get_mut(method)?;
    if *left == 0 {
        return None;
    }
    *left -= 1;
    let secs = *secs;
    *web.ratelimited.entry(method.to_owned()).or_default() += 1;
    Some(
        Response::builder()
            .status(StatusCode::TOO_MANY_REQUESTS)
            .header("retry-after", secs.to_string())
            .header("content-type", "application/json; charset=utf-8")
            .body(Full::new(Bytes::from_static(
                br#"{"ok":false,"error":"ratelimited"}"#,
            )))
            .unwrap(),
    )
}

/// One Web API call; `None` for a method this module does not serve.
pub fn call(
    web: &mut WebState,
    base: &str,
    method: &str,
    caller: Caller,
    form: &HashMap<String, String>,
) -> Option<Response<Full<Bytes>>> {
    let known = matches!(
        method,
        "chat.postMessage"
            | "conversations.list"
            | "files.getUploadURLExternal"
            | "files.completeUploadExternal"
    );
    if !known {
        return None;
    }
    if method == "chat.postMessage" {
        return Some(chat_post_message(web, caller, form));
    }
    let team = match caller.team {
        Ok(t) => t,
        Err(e) => return Some(error(e)),
    };
    Some(match method {
        "conversations.list" => {
            let all = [("C1", "general"), ("C2", "random")];
            let limit: usize = form
                .get("limit")
                .and_then(|l| l.parse().ok())
                .unwrap_or(100);
            let from: usize = form.get("cursor").and_then(|c| c.parse().ok()).unwrap_or(0);
            let page: Vec<Value> = all
                .iter()
                .skip(from)
                .take(limit.max(1))
                .map(|(id, name)| json!({"id": id, "name": name, "context_team_id": team}))
                .collect();
            let next = from + page.len();
            let cursor = if next < all.len() {
                next.to_string()
            } else {
                String::new()
            };
            json_response(
                StatusCode::OK,
                json!({"ok": true, "channels": page, "response_metadata": {"next_cursor": cursor}}),
            )
        }
        "files.getUploadURLExternal" => {
            let (Some(name), Some(length)) = (
                form.get("filename"),
                form.get("length").and_then(|l| l.parse::<usize>().ok()),
            ) else {
                return Some(error("invalid_arguments"));
            };
            web.next_file += 1;
            let id = format!("F{:08}", web.next_file);
            web.files.insert(id.clone(), (name.clone(), length, None));
            json_response(
                StatusCode::OK,
                json!({"ok": true, "upload_url": format!("{base}/upload/{id}"), "file_id": id}),
            )
        }
        _ => {
            let files: Vec<Value> = form
                .get("files")
                .and_then(|f| serde_json::from_str(f).ok())
                .unwrap_or_default();
            let mut out = Vec::new();
            for f in files {
                let id = f["id"].as_str().unwrap_or("");
                match web.files.get(id) {
                    Some((name, length, Some(bytes))) if bytes.len() == *length => {
                        out.push(json!({
                            "id": id,
                            "name": name,
                            "title": f["title"].as_str().unwrap_or(name),
                            "size": bytes.len(),
                        }))
                    }
                    _ => return Some(error("file_not_found")),
                }
            }
            json_response(StatusCode::OK, json!({"ok": true, "files": out}))
        }
    })
}

fn chat_post_message(
    web: &mut WebState,
    caller: Caller,
    form: &HashMap<String, String>,
) -> Response<Full<Bytes>> {
    let channel = form.get("channel").cloned().unwrap_or_default();
    let text = form.get("text").cloned().unwrap_or_default();
    let result = match caller.team {
        Err(e) => Err(e),
        Ok(_) if channel.is_empty() => Err("channel_not_found"),
        Ok(_) if text.is_empty() && !form.contains_key("blocks") => Err("no_text"),
        Ok(team) => Ok(team),
    };
    web.posted.push(PostedMessage {
        token: caller.token,
        channel: channel.clone(),
        text: text.clone(),
        ok: result.is_ok(),
    });
    match result {
        Ok(team) => {
            web.counter += 1;
            let ts = format!("{}.{:06}", caller.now, web.counter);
            json_response(
                StatusCode::OK,
                json!({
                    "ok": true,
                    "channel": channel,
                    "ts": ts,
                    "message": {
                        "type": "message",
                        "text": text,
                        "user": format!("U{team}BOT"),
                        "bot_id": format!("B{team}"),
                        "ts": ts,
                    },
                }),
            )
        }
        Err(e) => error(e),
    }
}

/// `POST /upload/{file_id}`: the bytes of an announced file (Slack accepts the raw body or a
/// multipart form with one file).
pub fn upload(web: &mut WebState, file_id: &str, body: Bytes) -> Response<Full<Bytes>> {
    let Some(entry) = web.files.get_mut(file_id) else {
        return Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::new()))
            .unwrap();
    };
    let bytes = multipart_file(&body).unwrap_or(body);
    let len = bytes.len();
    entry.2 = Some(bytes);
    Response::builder()
        .status(StatusCode::OK)
        .body(Full::new(Bytes::from(format!("OK - {len}"))))
        .unwrap()
}

/// The first part's content of a multipart body, if it is one.
fn multipart_file(body: &Bytes) -> Option<Bytes> {
    let text = body.as_ref();
    if !text.starts_with(b"--") {
        return None;
    }
    let boundary_end = text.windows(2).position(|w| w == b"\r\n")?;
    let boundary = &text[..boundary_end];
    let head_end = text.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let rest = &text[head_end..];
    let mut closing = b"\r\n".to_vec();
    closing.extend_from_slice(boundary);
    let end = rest
        .windows(closing.len())
        .position(|w| w == closing.as_slice())?;
    Some(Bytes::copy_from_slice(&rest[..end]))
}
