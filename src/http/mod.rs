//! Small HTTP vocabulary shared by every listener: the response body type and the helpers
//! that build the gateway's own answers; header hygiene as data ([`headers`]); the forms in
//! which request paths are matched ([`path`]). Nothing here imports from the rest of the
//! crate.

pub mod headers;
pub mod path;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use http_body_util::{Either, Full};
use hyper::body::Incoming;

/// A response body: the gateway's own (`Full`), or one relayed as it streams ([`Relayed`]).
pub type Body = Either<Full<Bytes>, Relayed>;

/// A body relayed as it streams: the upstream's (hyper's), or Slack's through the Web API
/// egress (reqwest's).
pub type Relayed = Either<Incoming, reqwest::Body>;

/// A body the gateway wrote itself.
pub fn full(b: impl Into<Bytes>) -> Body {
    Either::Left(Full::new(b.into()))
}

/// The upstream's body, relayed as it streams.
pub fn relayed(b: Incoming) -> Body {
    Either::Right(Either::Left(b))
}

/// Slack's body (an egress call's answer), relayed as it streams.
pub fn from_slack(b: reqwest::Body) -> Body {
    Either::Right(Either::Right(b))
}

/// A short plain-text answer: `status` and a one-line reason.
pub fn text(status: StatusCode, reason: impl Into<String>) -> Response<Body> {
    let mut body = reason.into();
    body.push('\n');
    let mut r = Response::new(full(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A JSON answer.
pub fn json(status: StatusCode, value: &serde_json::Value) -> Response<Body> {
    let mut r = Response::new(full(
        serde_json::to_vec(value).expect("a Value always serializes"),
    ));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// An HTML page.
pub fn html(status: StatusCode, page: String) -> Response<Body> {
    let mut r = Response::new(full(page));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// An empty answer.
pub fn empty(status: StatusCode) -> Response<Body> {
    let mut r = Response::new(full(Bytes::new()));
    *r.status_mut() = status;
    r
}

/// Escapes text for HTML element content and attribute values.
pub fn escape_html(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + s.len() / 8);
    // Runs between the five characters are copied whole (they are ASCII, so every cut is on
    // a character boundary): an install page escapes a long authorize URL on every request.
    let mut from = 0;
    for (i, b) in s.bytes().enumerate() {
        let entity = match b {
            b'&' => "&amp;",
            b'<' => "&lt;",
            b'>' => "&gt;",
            b'"' => "&quot;",
            b'\'' => "&#x27;",
            _ => continue,
        };
        out.push_str(&s[from..i]);
        out.push_str(entity);
        from = i + 1;
    }
    out.push_str(&s[from..]);
    out
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Milliseconds since the Unix epoch (the delivery queue's clock).
pub fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The value of cookie `name` in the request's `Cookie` headers, if sent exactly once.
pub fn cookie_value(headers: &http::HeaderMap, name: &str) -> Option<String> {
    let mut found = None;
    for v in headers.get_all(header::COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        for pair in v.split(';') {
            let Some((k, val)) = pair.trim().split_once('=') else {
                continue;
            };
            if k == name {
                if found.is_some() {
                    // Two cookies of one name (e.g. a sibling subdomain set one): ambiguous.
                    return None;
                }
                found = Some(val.trim_matches('"').to_owned());
            }
        }
    }
    found
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Lax, Path=/, Secure when `secure`.
pub fn set_cookie(name: &str, value: &str, max_age_secs: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Max-Age={max_age_secs}; Path=/; HttpOnly; SameSite=Lax{secure}"
    ))
    .expect("cookie names and values are header-safe")
}

/// A `Set-Cookie` value that removes the cookie.
pub fn clear_cookie(name: &str, secure: bool) -> HeaderValue {
    set_cookie(name, "", 0, secure)
}

/// A redirect to `location`.
pub fn redirect(location: &str) -> Response<Body> {
    let mut r = empty(StatusCode::FOUND);
    match HeaderValue::from_str(location) {
        Ok(v) => {
            r.headers_mut().insert(header::LOCATION, v);
        }
        Err(_) => *r.status_mut() = StatusCode::INTERNAL_SERVER_ERROR,
    }
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    r
}

/// The decoded query parameter `name`, if present once.
pub fn query_param(uri: &http::Uri, name: &str) -> Option<String> {
    let q = uri.query()?;
    let mut found = None;
    for (k, v) in form_urlencoded::parse(q.as_bytes()) {
        if k == name {
            if found.is_some() {
                return None;
            }
            found = Some(v.into_owned());
        }
    }
    found
}

/// A fresh random token of 256 bits, URL-safe base64 without padding.
pub fn random_token() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_html_covers_the_five() {
        assert_eq!(
            super::escape_html(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#x27;&amp;&#x27;&lt;/a&gt;"
        );
        assert_eq!(super::escape_html(""), "");
        assert_eq!(super::escape_html("plain"), "plain");
        assert_eq!(super::escape_html("é<ü>€&"), "é&lt;ü&gt;€&amp;");
        assert_eq!(
            super::escape_html("https://x/?a=1&b=2"),
            "https://x/?a=1&amp;b=2"
        );
    }
}
