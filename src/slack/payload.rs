//! Reading a verified Slack request body: what kind it is and whose installation it needs.
//!
//! Slack sends three body shapes to the same app:
//! - JSON (`application/json`): the Events API (`event_callback`, `url_verification`,
//!   `app_rate_limited`);
//! - a form (`application/x-www-form-urlencoded`): slash commands and `ssl_check`;
//! - a form whose `payload` field is JSON: interactivity (block_actions, view_submission,
//!   shortcuts, block_suggestion options, legacy interactive messages and dialogs).
//!
//! Forms are parsed by key, never by searching the text, so a slash command whose text is
//! "payload" stays a slash command. JSON is read into borrowed structs that name only the fields
//! the gateway needs; fields whose type varies between payloads (`team`, `user`, `enterprise`
//! are strings in some and objects or null in others) are kept raw and read by shape.
//!
//! Identity follows Slack's documentation and what Bolt does, with one stricter rule:
//! `authorizations[0]` wins where present, including a `null` enterprise there (Slack Connect
//! events name the other org at the top level). Otherwise `view.app_installed_team_id` comes
//! before `team`, `user.team_id` is used when `team` is null (org-wide installs), and
//! `is_enterprise_install` is accepted as a bool or the string `"true"`.

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

/// Whose installation a request needs, as the payload says.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    pub enterprise_id: Option<String>,
    pub team_id: Option<String>,
    /// The acting user (for `inject_user_token`), when the payload names one.
    pub user_id: Option<String>,
    pub is_enterprise_install: bool,
}

/// What a request asks of the gateway beyond forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Forward to the upstream.
    Forward,
    /// `url_verification`: answer `{"challenge": ...}` ourselves.
    UrlVerification { challenge: String },
    /// Slack's `ssl_check`: answer 200 with an empty body, never forward.
    SslCheck,
    /// `app_uninstalled`: delete the workspace's (or org's) installations, then forward.
    Uninstalled,
    /// `tokens_revoked`: delete the named tokens, then forward.
    TokensRevoked {
        user_ids: Vec<String>,
        bot_user_ids: Vec<String>,
    },
}

/// A parsed request: its kind (for logs and metrics), what to do, and whose it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub kind: Cow<'static, str>,
    pub action: Action,
    pub identity: Identity,
}

/// Why a body could not be read. Each maps to a client status in [`crate::proxy`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("unsupported content type: Slack sends application/json or application/x-www-form-urlencoded")]
    UnsupportedContentType,
    #[error("malformed JSON body: {0}")]
    MalformedJson(String),
    #[error("malformed form body")]
    MalformedForm,
    #[error("malformed payload field: {0}")]
    MalformedPayload(String),
}

/// The body types Slack uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContentKind {
    Json,
    Form,
}

/// Classifies a body by its `Content-Type` media type (parameters ignored). Without a
/// `Content-Type` the body decides, as Slack's SDKs read it: JSON when it starts with `{`,
/// else a form. A type Slack does not send is `None` (refused).
pub fn content_kind(content_type: Option<&[u8]>, body: &[u8]) -> Option<ContentKind> {
    let Some(content_type) = content_type else {
        return Some(if body.first() == Some(&b'{') {
            ContentKind::Json
        } else {
            ContentKind::Form
        });
    };
    let ct = std::str::from_utf8(content_type).ok()?;
    let media = ct.split(';').next().unwrap_or("").trim();
    if media.eq_ignore_ascii_case("application/json") {
        Some(ContentKind::Json)
    } else if media.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
        Some(ContentKind::Form)
    } else {
        None
    }
}

/// True when `body` is a form whose `ssl_check` field is exactly `1`: Slack's one unsigned
/// request. Anything else that is unsigned is refused.
pub fn is_ssl_check(kind: Option<ContentKind>, body: &[u8]) -> bool {
    kind == Some(ContentKind::Form)
        && form_urlencoded::parse(body).any(|(k, v)| k == "ssl_check" && v == "1")
}

/// Parses a verified body.
pub fn parse(kind: Option<ContentKind>, body: &[u8]) -> Result<Parsed, PayloadError> {
    match kind {
        Some(ContentKind::Json) => parse_json_event(body),
        Some(ContentKind::Form) => parse_form(body),
        None => Err(PayloadError::UnsupportedContentType),
    }
}

fn parse_form(body: &[u8]) -> Result<Parsed, PayloadError> {
    if std::str::from_utf8(body).is_err() {
        return Err(PayloadError::MalformedForm);
    }
    let mut f = FormFields::default();
    // Pairs are split as `form_urlencoded::parse` splits them, but only the pairs whose key
    // the gateway reads are decoded: a slash command has ~15 fields and needs 4.
    for pair in body.split(|b| *b == b'&').filter(|p| !p.is_empty()) {
        let raw_key = pair.split(|b| *b == b'=').next().unwrap_or_default();
        let key = if raw_key.iter().any(|b| matches!(b, b'%' | b'+')) {
            match form_urlencoded::parse(raw_key).next() {
                Some((k, _)) => k,
                None => continue,
            }
        } else {
            // UTF-8 was checked above, and a key split at ASCII bytes stays UTF-8.
            Cow::Borrowed(std::str::from_utf8(raw_key).map_err(|_| PayloadError::MalformedForm)?)
        };
        let slot = match key.as_ref() {
            "payload" => &mut f.payload,
            "ssl_check" => &mut f.ssl_check,
            "command" => &mut f.command,
            "team_id" => &mut f.team_id,
            "enterprise_id" => &mut f.enterprise_id,
            "user_id" => &mut f.user_id,
            "is_enterprise_install" => &mut f.is_enterprise_install,
            _ => continue,
        };
        if slot.is_some() {
            // A repeated key makes the request ambiguous: which one did Slack mean?
            return Err(PayloadError::MalformedForm);
        }
        let value = form_urlencoded::parse(pair).next().map(|(_, v)| v);
        *slot = Some(value.unwrap_or_default().into_owned());
    }
    if f.ssl_check.as_deref() == Some("1") {
        return Ok(Parsed {
            kind: "ssl_check".into(),
            action: Action::SslCheck,
            identity: Identity::default(),
        });
    }
    if let Some(payload) = f.payload {
        return parse_interactive(&payload);
    }
    let identity = Identity {
        enterprise_id: non_empty(f.enterprise_id),
        team_id: non_empty(f.team_id),
        user_id: non_empty(f.user_id),
        is_enterprise_install: f.is_enterprise_install.as_deref() == Some("true"),
    };
    let kind = if f.command.is_some() {
        "slash_command"
    } else {
        "form"
    };
    Ok(Parsed {
        kind: kind.into(),
        action: Action::Forward,
        identity,
    })
}

#[derive(Default)]
struct FormFields {
    payload: Option<String>,
    ssl_check: Option<String>,
    command: Option<String>,
    team_id: Option<String>,
    enterprise_id: Option<String>,
    user_id: Option<String>,
    is_enterprise_install: Option<String>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.filter(|s| !s.is_empty())
}

/// A JSON string, borrowed from the body unless it has escapes. (serde borrows a `Cow` only
/// when it is a field's whole type: an `Option<Cow<str>>` would always be copied.)
#[derive(Deserialize)]
#[serde(transparent)]
struct Str<'a>(#[serde(borrow)] Cow<'a, str>);

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// The first element of a JSON array; the others are skipped, not collected.
struct First<T>(Option<T>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for First<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Visit<T>(std::marker::PhantomData<T>);
        impl<'de, T: Deserialize<'de>> serde::de::Visitor<'de> for Visit<T> {
            type Value = First<T>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("an array")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<First<T>, A::Error> {
                let first = seq.next_element()?;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
                Ok(First(first))
            }
        }
        d.deserialize_seq(Visit(std::marker::PhantomData))
    }
}

/// The fields of an Events API envelope or an interactivity payload that identity needs.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    challenge: Option<Str<'a>>,
    #[serde(borrow)]
    team_id: Option<Str<'a>>,
    #[serde(borrow)]
    enterprise_id: Option<Str<'a>>,
    #[serde(borrow)]
    authorizations: Option<First<Authorization<'a>>>,
    #[serde(borrow)]
    is_enterprise_install: Option<&'a RawValue>,
    #[serde(borrow)]
    team: Option<&'a RawValue>,
    #[serde(borrow)]
    enterprise: Option<&'a RawValue>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    user_id: Option<Str<'a>>,
    #[serde(borrow)]
    view: Option<View<'a>>,
    #[serde(borrow)]
    event: Option<Event<'a>>,
}

#[derive(Deserialize)]
struct Authorization<'a> {
    #[serde(borrow)]
    enterprise_id: Option<Str<'a>>,
    #[serde(borrow)]
    team_id: Option<Str<'a>>,
    #[serde(borrow)]
    is_enterprise_install: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct View<'a> {
    #[serde(borrow)]
    app_installed_team_id: Option<Str<'a>>,
}

#[derive(Deserialize)]
struct Event<'a> {
    #[serde(borrow, rename = "type")]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    user: Option<&'a RawValue>,
    #[serde(borrow)]
    tokens: Option<Tokens<'a>>,
}

#[derive(Deserialize)]
struct Tokens<'a> {
    #[serde(borrow, default)]
    oauth: Vec<Str<'a>>,
    #[serde(borrow, default)]
    bot: Vec<Str<'a>>,
}

/// `{"id": "..", "team_id": "..", "enterprise_id": ".."}`: the object form of `team`, `user`
/// and `enterprise`.
#[derive(Deserialize)]
struct IdObject<'a> {
    #[serde(borrow)]
    id: Option<Str<'a>>,
    #[serde(borrow)]
    team_id: Option<Str<'a>>,
    #[serde(borrow)]
    enterprise_id: Option<Str<'a>>,
}

/// Reads a field that is a string in some payloads and an object in others.
enum Shape<'a> {
    Str(Str<'a>),
    Obj(IdObject<'a>),
}

fn shape<'a>(raw: Option<&'a RawValue>) -> Result<Option<Shape<'a>>, String> {
    let Some(raw) = raw else { return Ok(None) };
    match raw.get().as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Str<'a>>(raw.get())
            .map(|s| Some(Shape::Str(s)))
            .map_err(|e| e.to_string()),
        Some(b'{') => serde_json::from_str::<IdObject<'a>>(raw.get())
            .map(|o| Some(Shape::Obj(o)))
            .map_err(|e| e.to_string()),
        // null and other types carry no id
        _ => Ok(None),
    }
}

fn shape_id(s: &Option<Shape<'_>>) -> Option<String> {
    match s {
        Some(Shape::Str(s)) => Some(String::from(&**s)),
        Some(Shape::Obj(o)) => o.id.as_deref().map(String::from),
        None => None,
    }
}

/// `true`, `"true"` → true; anything else false.
fn truthy(raw: Option<&RawValue>) -> bool {
    matches!(raw.map(RawValue::get), Some("true" | "\"true\""))
}

fn owned(s: Option<&Str<'_>>) -> Option<String> {
    s.filter(|s| !s.is_empty()).map(|s| String::from(&**s))
}

fn parse_json_event(body: &[u8]) -> Result<Parsed, PayloadError> {
    // JSON is UTF-8 (RFC 8259). Checking the whole body at once is much faster than
    // serde_json checking each string it reads, and lets it parse from a `&str`.
    let text = std::str::from_utf8(body)
        .map_err(|e| PayloadError::MalformedJson(format!("not UTF-8: {e}")))?;
    let env: Envelope<'_> =
        serde_json::from_str(text).map_err(|e| PayloadError::MalformedJson(e.to_string()))?;
    envelope_to_parsed(env).map_err(PayloadError::MalformedJson)
}

fn parse_interactive(payload: &str) -> Result<Parsed, PayloadError> {
    let env: Envelope<'_> =
        serde_json::from_str(payload).map_err(|e| PayloadError::MalformedPayload(e.to_string()))?;
    let mut parsed = envelope_to_parsed(env).map_err(PayloadError::MalformedPayload)?;
    if parsed.kind == "unknown" {
        parsed.kind = "interactive".into();
    }
    // Interactivity payloads never ask the gateway to act (no challenge, no uninstall).
    parsed.action = Action::Forward;
    Ok(parsed)
}

/// Payload `type`s seen on nearly every request.
const COMMON_KINDS: [&str; 6] = [
    "event_callback",
    "block_actions",
    "view_submission",
    "shortcut",
    "message_action",
    "block_suggestion",
];

fn envelope_to_parsed(env: Envelope<'_>) -> Result<Parsed, String> {
    let kind: Cow<'static, str> = match env.kind.as_deref() {
        // The common kinds without an allocation.
        Some(k) => match COMMON_KINDS.iter().find(|c| **c == k) {
            Some(c) => Cow::Borrowed(c),
            None => Cow::Owned(k.to_owned()),
        },
        None => "unknown".into(),
    };
    if kind == "url_verification" {
        let challenge = env.challenge.map(|c| c.0.into_owned()).unwrap_or_default();
        return Ok(Parsed {
            kind,
            action: Action::UrlVerification { challenge },
            identity: Identity::default(),
        });
    }

    let team = shape(env.team)?;
    let user = shape(env.user)?;
    let enterprise = shape(env.enterprise)?;
    let event_user = match &env.event {
        Some(e) => shape(e.user)?,
        None => None,
    };

    let mut identity = Identity::default();
    if let Some(auth) = env.authorizations.as_ref().and_then(|a| a.0.as_ref()) {
        // authorizations[0] wins, a null enterprise included.
        identity.enterprise_id = owned(auth.enterprise_id.as_ref());
        identity.team_id = owned(auth.team_id.as_ref());
        identity.is_enterprise_install = truthy(auth.is_enterprise_install);
    } else {
        identity.enterprise_id = shape_id(&enterprise)
            .or_else(|| owned(env.enterprise_id.as_ref()))
            .or_else(|| match &team {
                Some(Shape::Obj(o)) => owned(o.enterprise_id.as_ref()),
                _ => None,
            })
            .filter(|s| !s.is_empty());
        identity.team_id = env
            .view
            .as_ref()
            .and_then(|v| owned(v.app_installed_team_id.as_ref()))
            .or_else(|| shape_id(&team))
            .or_else(|| owned(env.team_id.as_ref()))
            .or_else(|| match &user {
                Some(Shape::Obj(o)) => owned(o.team_id.as_ref()),
                _ => None,
            })
            .filter(|s| !s.is_empty());
        identity.is_enterprise_install = truthy(env.is_enterprise_install);
    }
    identity.user_id = shape_id(&user)
        .or_else(|| owned(env.user_id.as_ref()))
        .or_else(|| shape_id(&event_user))
        .filter(|s| !s.is_empty());

    let action = match env.event.as_ref().and_then(|e| e.kind.as_deref()) {
        Some("app_uninstalled") if kind == "event_callback" => Action::Uninstalled,
        Some("tokens_revoked") if kind == "event_callback" => {
            let tokens = env.event.as_ref().and_then(|e| e.tokens.as_ref());
            Action::TokensRevoked {
                user_ids: tokens
                    .map(|t| t.oauth.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
                bot_user_ids: tokens
                    .map(|t| t.bot.iter().map(|s| s.to_string()).collect())
                    .unwrap_or_default(),
            }
        }
        _ => Action::Forward,
    };
    Ok(Parsed {
        kind,
        action,
        identity,
    })
}

#[cfg(test)]
mod tests;
