//! Socket Mode's protocol: the frames Slack sends on a Socket Mode WebSocket ([`Message`]),
//! each envelope as the request Slack would have sent in HTTP mode ([`Envelope::http_body`]),
//! and the acknowledgement ([`ack`]). Pure functions over bytes; the sockets are the
//! ingress's (`crate::socket_mode`).

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;

/// The content type of a body HTTP mode sends as JSON (Events API).
pub const JSON: &str = "application/json";
/// The content type of a body HTTP mode sends as a form (slash commands, interactivity).
pub const FORM: &str = "application/x-www-form-urlencoded";

/// One text frame from Slack.
#[derive(Debug)]
pub enum Message {
    /// The connection is ready to serve envelopes.
    Hello,
    /// Slack will close this connection (`warning`, `refresh_requested`, `link_disabled`).
    Disconnect(String),
    /// A request to forward and acknowledge.
    Envelope(Envelope),
    /// Anything else: its `type` (ignored, logged).
    Other(String),
}

/// What Slack asks the app to handle.
#[derive(Debug)]
pub struct Envelope {
    pub id: String,
    pub kind: EnvelopeKind,
    pub payload: Box<RawValue>,
    pub accepts_response_payload: bool,
    /// 0 for a first delivery.
    pub retry_attempt: u64,
    pub retry_reason: Option<String>,
}

/// The envelope types the gateway forwards, and the rest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeKind {
    EventsApi,
    SlashCommands,
    Interactive,
    Other(String),
}

impl EnvelopeKind {
    fn of(t: &str) -> Self {
        match t {
            "events_api" => EnvelopeKind::EventsApi,
            "slash_commands" => EnvelopeKind::SlashCommands,
            "interactive" => EnvelopeKind::Interactive,
            other => EnvelopeKind::Other(other.to_owned()),
        }
    }

    /// The envelope type as Slack names it (a metric label: the three forwarded types, or
    /// `other`).
    pub fn label(&self) -> &'static str {
        match self {
            EnvelopeKind::EventsApi => "events_api",
            EnvelopeKind::SlashCommands => "slash_commands",
            EnvelopeKind::Interactive => "interactive",
            EnvelopeKind::Other(_) => "other",
        }
    }
}

#[derive(Deserialize)]
struct Frame<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<std::borrow::Cow<'a, str>>,
    envelope_id: Option<String>,
    payload: Option<Box<RawValue>>,
    #[serde(default)]
    accepts_response_payload: bool,
    #[serde(default)]
    retry_attempt: u64,
    retry_reason: Option<String>,
    reason: Option<String>,
}

/// Why a frame is not one the gateway can read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("not a JSON object with a type: {0}")]
    Json(String),
    #[error("a {0} envelope without an envelope_id or payload")]
    Incomplete(&'static str),
}

/// Reads one text frame.
pub fn parse(text: &str) -> Result<Message, FrameError> {
    let f: Frame = serde_json::from_str(text).map_err(|e| FrameError::Json(e.to_string()))?;
    let kind = f.kind.ok_or_else(|| FrameError::Json("no type".into()))?;
    Ok(match kind.as_ref() {
        "hello" => Message::Hello,
        "disconnect" => Message::Disconnect(f.reason.unwrap_or_else(|| "unknown".into())),
        t => match f.envelope_id {
            Some(id) => {
                let kind = EnvelopeKind::of(t);
                let payload = match (f.payload, &kind) {
                    (Some(p), _) => p,
                    // Other types are acked, not forwarded: their payload is not needed.
                    (None, EnvelopeKind::Other(_)) => {
                        RawValue::from_string("null".into()).expect("null is JSON")
                    }
                    (None, k) => return Err(FrameError::Incomplete(k.label())),
                };
                Message::Envelope(Envelope {
                    id,
                    kind,
                    payload,
                    accepts_response_payload: f.accepts_response_payload,
                    retry_attempt: f.retry_attempt,
                    retry_reason: f.retry_reason.filter(|r| !r.is_empty()),
                })
            }
            None => Message::Other(t.to_owned()),
        },
    })
}

/// Why an envelope's payload cannot be sent as HTTP mode would.
#[derive(Debug, thiserror::Error)]
#[error("{0} payload is not an object")]
pub struct PayloadError(&'static str);

impl Envelope {
    /// The body and content type HTTP mode sends for this envelope: the Events API payload as
    /// JSON, as it came; a slash command's fields form-encoded; interactivity as
    /// `payload=<JSON>`. `None` for types that are not forwarded.
    pub fn http_body(&self) -> Result<Option<(Bytes, &'static str)>, PayloadError> {
        Ok(Some(match self.kind {
            EnvelopeKind::EventsApi => (Bytes::from(self.payload.get().to_owned()), JSON),
            EnvelopeKind::SlashCommands => {
                let fields: serde_json::Map<String, serde_json::Value> =
                    serde_json::from_str(self.payload.get())
                        .map_err(|_| PayloadError("a slash_commands"))?;
                let mut form = form_urlencoded::Serializer::new(String::new());
                for (k, v) in &fields {
                    match v {
                        serde_json::Value::String(s) => form.append_pair(k, s),
                        serde_json::Value::Null => form.append_pair(k, ""),
                        other => form.append_pair(k, &other.to_string()),
                    };
                }
                (Bytes::from(form.finish()), FORM)
            }
            EnvelopeKind::Interactive => {
                if !self.payload.get().trim_start().starts_with('{') {
                    return Err(PayloadError("an interactive"));
                }
                let body = form_urlencoded::Serializer::new(String::new())
                    .append_pair("payload", self.payload.get())
                    .finish();
                (Bytes::from(body), FORM)
            }
            EnvelopeKind::Other(_) => return Ok(None),
        }))
    }

    /// What goes back in the ack's `payload`, from the app's answer: its JSON body when
    /// Slack accepts one; for a slash command, a plain-text answer as `{"text": ...}` (what
    /// HTTP mode shows for it). `None`: a bare ack.
    pub fn response_payload(&self, content_type: Option<&str>, body: &[u8]) -> Option<String> {
        if !self.accepts_response_payload || body.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        if let Ok(json) = serde_json::from_slice::<&RawValue>(body) {
            if json.get().starts_with('{') {
                return Some(json.get().to_owned());
            }
        }
        let text = content_type.is_some_and(|ct| ct.trim_start().starts_with("text/"));
        if self.kind == EnvelopeKind::SlashCommands && text {
            let text = std::str::from_utf8(body).ok()?;
            return Some(serde_json::json!({ "text": text }).to_string());
        }
        None
    }
}

/// The acknowledgement of `envelope_id`, with the app's `payload` (a JSON object) when given.
pub fn ack(envelope_id: &str, payload: Option<&str>) -> String {
    let id = serde_json::to_string(envelope_id).expect("a string serializes");
    match payload {
        Some(p) => format!(r#"{{"envelope_id":{id},"payload":{p}}}"#),
        None => format!(r#"{{"envelope_id":{id}}}"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn envelope(text: &str) -> Envelope {
        match parse(text).unwrap() {
            Message::Envelope(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn frames_are_read() {
        assert!(matches!(
            parse(r#"{"type":"hello","num_connections":1}"#).unwrap(),
            Message::Hello
        ));
        assert!(matches!(
            parse(r#"{"type":"disconnect","reason":"refresh_requested"}"#).unwrap(),
            Message::Disconnect(r) if r == "refresh_requested"
        ));
        let e = envelope(
            r#"{"envelope_id":"e1","type":"events_api","payload":{"type":"event_callback","event_id":"Ev1"},"accepts_response_payload":false,"retry_attempt":2,"retry_reason":"timeout"}"#,
        );
        assert_eq!(e.id, "e1");
        assert_eq!(e.kind, EnvelopeKind::EventsApi);
        assert_eq!(
            (e.retry_attempt, e.retry_reason.as_deref()),
            (2, Some("timeout"))
        );
        let (body, ct) = e.http_body().unwrap().unwrap();
        assert_eq!(&body[..], br#"{"type":"event_callback","event_id":"Ev1"}"#);
        assert_eq!(ct, JSON);
        for bad in [
            "",
            "[]",
            "{}",
            r#"{"type":"events_api","envelope_id":"e"}"#,
            "{\"type\":",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        let other = envelope(r#"{"envelope_id":"e2","type":"future_thing"}"#);
        assert_eq!(other.kind.label(), "other");
        assert!(other.http_body().unwrap().is_none());
    }

    #[test]
    fn commands_and_interactivity_are_forms_as_in_http_mode() {
        let e = envelope(
            r#"{"envelope_id":"e","type":"slash_commands","accepts_response_payload":true,"payload":{"command":"/echo","text":"hi & bye","team_id":"T1","is_enterprise_install":"false"}}"#,
        );
        let (body, ct) = e.http_body().unwrap().unwrap();
        assert_eq!(ct, FORM);
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            "command=%2Fecho&is_enterprise_install=false&team_id=T1&text=hi+%26+bye"
        );
        let e = envelope(
            r#"{"envelope_id":"e","type":"interactive","payload":{"type":"block_actions","team":{"id":"T1"}}}"#,
        );
        let (body, _) = e.http_body().unwrap().unwrap();
        let decoded: Vec<(String, String)> = form_urlencoded::parse(&body).into_owned().collect();
        assert_eq!(
            decoded,
            [(
                "payload".to_owned(),
                r#"{"type":"block_actions","team":{"id":"T1"}}"#.to_owned()
            )]
        );
        let bad = envelope(r#"{"envelope_id":"e","type":"slash_commands","payload":"x"}"#);
        assert!(bad.http_body().is_err());
    }

    #[test]
    fn the_ack_carries_the_apps_answer_when_slack_takes_one() {
        let e = envelope(
            r#"{"envelope_id":"e\"1","type":"slash_commands","accepts_response_payload":true,"payload":{}}"#,
        );
        assert_eq!(ack(&e.id, None), r#"{"envelope_id":"e\"1"}"#);
        let p = e.response_payload(Some(JSON), br#"{"text":"ok"}"#);
        assert_eq!(p.as_deref(), Some(r#"{"text":"ok"}"#));
        assert_eq!(
            ack(&e.id, p.as_deref()),
            r#"{"envelope_id":"e\"1","payload":{"text":"ok"}}"#
        );
        let p = e.response_payload(Some("text/plain; charset=utf-8"), b"Echoing");
        assert_eq!(p.as_deref(), Some(r#"{"text":"Echoing"}"#));
        assert_eq!(e.response_payload(Some(JSON), b""), None);
        assert_eq!(e.response_payload(Some(JSON), b"[1]"), None);
        let no = envelope(
            r#"{"envelope_id":"e","type":"events_api","accepts_response_payload":false,"payload":{}}"#,
        );
        assert_eq!(no.response_payload(Some(JSON), br#"{"a":1}"#), None);
    }
}
