//! Header hygiene as data: what is removed from a forwarded request, what is added.
//!
//! - Hop-by-hop headers ([`HOP_BY_HOP`], plus any named in `Connection`) belong to one
//!   connection and never cross the proxy, in either direction.
//! - Every inbound header that matches an injected name, compared case-insensitively with `_`
//!   and `-` treated alike, is removed before anything is injected: many upstream stacks
//!   (CGI, WSGI, Rack, PHP) fold `X_Slack_Bot_Token` and `X-Slack-Bot-Token` into one variable,
//!   so removing only the exact name would let a client smuggle a token in.
//! - `X-Forwarded-For/Proto/Host` come from the real peer unless the peer is a trusted proxy;
//!   every other `X-Forwarded-*` (and `Forwarded`), in any spelling, is dropped unless the peer
//!   is a trusted proxy.

use std::net::{IpAddr, SocketAddr};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that describe one hop (RFC 9110 §7.6.1), never forwarded. Names, not strings:
/// removing by a string would parse it for every request.
pub const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Whether the gateway sets or removes `name` itself, in any spelling an upstream would fold
/// into it (`Host`, `Content-Length`, `Expect`, the forwarding headers, hop-by-hop headers):
/// no name for an injected header.
pub fn set_by_gateway(name: &HeaderName) -> bool {
    let name = name.as_str().as_bytes();
    [header::HOST, header::CONTENT_LENGTH, header::EXPECT]
        .iter()
        .chain(&HOP_BY_HOP)
        .chain(&FORWARDED)
        .any(|h| folds_to(name, h.as_str()))
}

/// The framing headers an upstream that folds `_` into `-` could mistake a look-alike for.
const FRAMING: [HeaderName; 2] = [header::CONTENT_LENGTH, header::TRANSFER_ENCODING];

/// Forwarding headers the gateway sets itself.
pub const FORWARDED: [HeaderName; 4] = [
    X_FORWARDED_FOR,
    X_FORWARDED_PROTO,
    X_FORWARDED_HOST,
    header::FORWARDED,
];

/// A header name folded for comparison: lowercase, `_` as `-`.
pub fn fold(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b == b'_' {
                '-'
            } else {
                b.to_ascii_lowercase() as char
            }
        })
        .collect()
}

/// True when `name` folds to `folded` (which is already lowercase with `-`), without
/// allocating: this runs for every header of every request.
pub fn folds_to(name: &[u8], folded: &str) -> bool {
    name.len() == folded.len()
        && name.iter().zip(folded.bytes()).all(|(&b, f)| {
            f == if b == b'_' {
                b'-'
            } else {
                b.to_ascii_lowercase()
            }
        })
}

/// The folded names that must never arrive from outside.
#[derive(Debug, Clone)]
pub struct StripSet {
    folded: Vec<String>,
}

impl StripSet {
    pub fn new<'a>(names: impl IntoIterator<Item = &'a HeaderName>) -> Self {
        let mut folded: Vec<String> = names.into_iter().map(|n| fold(n.as_str())).collect();
        folded.sort();
        folded.dedup();
        StripSet { folded }
    }

    /// True when `name` (any case) folds to one of the injected names.
    pub fn matches(&self, name: &[u8]) -> bool {
        self.folded.iter().any(|f| folds_to(name, f))
    }
}

/// What header hygiene does with an inbound request header, judged by its name (any case).
/// One judgement for both ways a request head is kept: a map ([`rewrite_request`]) and the
/// lane's raw header lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// Forwarded as it is.
    Keep,
    /// Removed: hop-by-hop, `Expect`, a smuggled injected name, a folded spelling of a
    /// forwarding header.
    Drop,
    /// `Connection`: removed, and so is every header it names.
    Connection,
    /// A forwarding header: one the gateway sets ([`FORWARDED`]) or any other
    /// `X-Forwarded-*`. Removed when the peer is not a trusted proxy; from a trusted proxy the
    /// gateway's own are extended and the others kept.
    Forwarded,
    /// `Host`: reported as `X-Forwarded-Host`; the upstream gets its own.
    Host,
}

pub fn fate(name: &[u8], strip: &StripSet) -> Fate {
    let is = |h: &HeaderName| name.eq_ignore_ascii_case(h.as_str().as_bytes());
    if is(&header::CONNECTION) {
        Fate::Connection
    } else if HOP_BY_HOP.iter().any(is) || is(&header::EXPECT) {
        // `Expect` is the gateway's to meet: it reads the whole body before forwarding
        // (hyper answers `100 Continue` as it starts reading), so the upstream has nothing
        // to wait for.
        Fate::Drop
    } else if FORWARDED.iter().any(is) {
        Fate::Forwarded
    } else if strip.matches(name)
        || FORWARDED.iter().any(|f| folds_to(name, f.as_str()))
        || (name.contains(&b'_') && FRAMING.iter().any(|f| folds_to(name, f.as_str())))
    {
        // Smuggled injected names, and folded spellings of the forwarding and framing headers
        // (X_Forwarded_For, Content_Length): no proxy's doing, trusted or not, and an upstream
        // that folds `_` into `-` would read them as the real thing.
        Fate::Drop
    } else if PATH_OVERRIDES.iter().any(|h| folds_to(name, h)) {
        // A path other than the request's, which some stacks route by (Symfony, Laravel,
        // IIS): the path the gateway matched must be the one the upstream serves.
        Fate::Drop
    } else if folds_to_prefix(name, X_FORWARDED_PREFIX) {
        // Every other X-Forwarded-* (Port, Prefix, Ssl, Scheme, Server, Uri, ...): nobody's but
        // a trusted proxy's to say. The `_` spellings are no proxy's doing, as above.
        if name.contains(&b'_') {
            Fate::Drop
        } else {
            Fate::Forwarded
        }
    } else if is(&header::HOST) {
        Fate::Host
    } else {
        Fate::Keep
    }
}

/// Headers that name another path for the request than its own (folded).
const PATH_OVERRIDES: [&str; 2] = ["x-original-url", "x-rewrite-url"];

/// The folded prefix of every forwarding header a client might claim.
const X_FORWARDED_PREFIX: &str = "x-forwarded-";

/// True when `name` folded starts with `prefix` (lowercase, `-` for `_`).
fn folds_to_prefix(name: &[u8], prefix: &str) -> bool {
    name.len() >= prefix.len() && folds_to(&name[..prefix.len()], prefix)
}

/// Removes hop-by-hop headers, including those the `Connection` header names.
pub fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let doomed = doomed_names(headers, |name| {
        if name == header::CONNECTION {
            Fate::Connection
        } else if HOP_BY_HOP.contains(name) {
            Fate::Drop
        } else {
            Fate::Keep
        }
    });
    for n in doomed {
        headers.remove(n);
    }
}

/// The names to remove: those `fate` drops, and those the `Connection` header lists. One
/// pass comparing names (most requests carry none of them) is cheaper than a hashed removal
/// for every name that might be there.
fn doomed_names(headers: &HeaderMap, fate: impl Fn(&HeaderName) -> Fate) -> Vec<HeaderName> {
    let mut doomed = Vec::new();
    let mut has_connection = false;
    for name in headers.keys() {
        match fate(name) {
            Fate::Keep | Fate::Host => {}
            Fate::Drop | Fate::Forwarded => doomed.push(name.clone()),
            Fate::Connection => {
                has_connection = true;
                doomed.push(name.clone());
            }
        }
    }
    if has_connection {
        let listed = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .filter_map(|n| HeaderName::from_bytes(n.trim_ascii()).ok());
        doomed.extend(listed);
    }
    doomed
}

/// The client end of a connection, as the forwarding headers report it.
#[derive(Debug, Clone)]
pub struct Client {
    /// The peer's address, as the socket reports it.
    pub addr: SocketAddr,
    /// `http` or `https`, as reported to the upstream in `X-Forwarded-Proto`.
    pub scheme: &'static str,
    /// The peer's IP as a header value: built once per connection, not per request.
    ip: HeaderValue,
}

impl Client {
    pub fn new(addr: SocketAddr, scheme: &'static str) -> Self {
        let ip = HeaderValue::try_from(addr.ip().to_string())
            .expect("an IP address is a valid header value");
        Client { addr, scheme, ip }
    }

    /// Whether the peer is one of `server.trusted_proxies`.
    pub fn is_trusted(&self, trusted_proxies: &[IpAddr]) -> bool {
        trusted_proxies.contains(&self.addr.ip())
    }

    /// The forwarding headers for a request that brought none the gateway keeps: the peer,
    /// the scheme and the client's `Host`.
    pub fn forwarding(
        &self,
        host: Option<HeaderValue>,
        mut set: impl FnMut(HeaderName, HeaderValue),
    ) {
        set(X_FORWARDED_FOR, self.ip.clone());
        set(X_FORWARDED_PROTO, HeaderValue::from_static(self.scheme));
        if let Some(h) = host {
            set(X_FORWARDED_HOST, h);
        }
    }
}

/// Prepares inbound headers for forwarding: hop-by-hop headers, `Expect` and smuggled injected
/// names removed, `Host` left to the client (it names the upstream), forwarding headers set
/// from `client`.
/// `Content-Length` is the forwarder's to check against the body it read.
pub fn rewrite_request(
    headers: &mut HeaderMap,
    strip: &StripSet,
    client: &Client,
    trusted_proxies: &[IpAddr],
) {
    let trusted = client.is_trusted(trusted_proxies);
    let doomed = doomed_names(headers, |name| {
        match fate(name.as_str().as_bytes(), strip) {
            // A trusted proxy's forwarding headers are extended below; anyone else's go.
            Fate::Forwarded if trusted => Fate::Keep,
            f => f,
        }
    });
    for n in doomed {
        headers.remove(n);
    }
    let host = headers.remove(header::HOST);
    let scheme = client.scheme;
    if trusted {
        match headers.get(X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
            Some(prev) if !prev.trim().is_empty() => {
                let chain = format!("{prev}, {}", client.addr.ip());
                set(headers, X_FORWARDED_FOR, &chain);
            }
            _ => {
                headers.insert(X_FORWARDED_FOR, client.ip.clone());
            }
        }
        if !headers.contains_key(X_FORWARDED_PROTO) {
            headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(scheme));
        }
        if !headers.contains_key(X_FORWARDED_HOST) {
            if let Some(h) = host {
                headers.insert(X_FORWARDED_HOST, h);
            }
        }
    } else {
        client.forwarding(host, |name, value| {
            headers.insert(name, value);
        });
    }
}

/// Removes the named cookies from every `Cookie` header, keeping the others.
pub fn remove_cookies(headers: &mut HeaderMap, names: &[&str]) {
    let kept: Vec<String> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            let name = pair.split('=').next().unwrap_or("");
            !pair.is_empty() && !names.contains(&name)
        })
        .map(str::to_owned)
        .collect();
    headers.remove(header::COOKIE);
    if !kept.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&kept.join("; ")) {
            headers.insert(header::COOKIE, v);
        }
    }
}

fn set(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strip() -> StripSet {
        StripSet::new(&[
            HeaderName::from_static("x-slack-bot-token"),
            HeaderName::from_static("x-slack-team-id"),
        ])
    }

    fn client() -> Client {
        Client::new("203.0.113.7:5555".parse().unwrap(), "http")
    }

    #[test]
    fn folded_variants_of_injected_names_are_removed() {
        let mut h = HeaderMap::new();
        for name in [
            "X-Slack-Bot-Token",
            "x_slack_bot_token",
            "X_SLACK_BOT-TOKEN",
            "x-slack_team_id",
        ] {
            h.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static("evil"),
            );
        }
        h.insert("x-slack-signature", HeaderValue::from_static("v0=kept"));
        rewrite_request(&mut h, &strip(), &client(), &[]);
        assert!(h.iter().all(|(_, v)| v != "evil"), "{h:?}");
        assert_eq!(h.get("x-slack-signature").unwrap(), "v0=kept");
    }

    #[test]
    fn fates_of_names_in_any_spelling() {
        let strip = strip();
        for (name, want) in [
            ("Content-Type", Fate::Keep),
            ("content-length", Fate::Keep),
            ("Content_Length", Fate::Drop),
            ("TRANSFER_ENCODING", Fate::Drop),
            ("Transfer-Encoding", Fate::Drop),
            ("Expect", Fate::Drop),
            ("CONNECTION", Fate::Connection),
            ("X-Forwarded-For", Fate::Forwarded),
            ("x_forwarded_for", Fate::Drop),
            ("X_SLACK_BOT_TOKEN", Fate::Drop),
            ("HOST", Fate::Host),
            ("X-App", Fate::Keep),
            ("X-Forwarded-Port", Fate::Forwarded),
            ("x-forwarded-prefix", Fate::Forwarded),
            ("X_Forwarded_Ssl", Fate::Drop),
            ("x-forwarded_scheme", Fate::Drop),
            ("X-Forwarded", Fate::Keep),
            ("X-Original-URL", Fate::Drop),
            ("x_rewrite_url", Fate::Drop),
        ] {
            assert_eq!(fate(name.as_bytes(), &strip), want, "{name}");
        }
        for name in [
            "host",
            "content_length",
            "expect",
            "keep_alive",
            "x-forwarded-host",
            "forwarded",
        ] {
            assert!(set_by_gateway(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!set_by_gateway(&HeaderName::from_static(
            "x-forwarded-email"
        )));
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_removed() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret-hop"),
        );
        h.insert("x-secret-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("x-app", HeaderValue::from_static("kept"));
        rewrite_request(&mut h, &strip(), &client(), &[]);
        for gone in ["connection", "x-secret-hop", "transfer-encoding", "upgrade"] {
            assert!(!h.contains_key(gone), "{gone} forwarded");
        }
        assert_eq!(h.get("x-app").unwrap(), "kept");
    }

    #[test]
    fn forwarded_headers_come_from_the_real_peer() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("gw.example.com"));
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.insert("x_forwarded_proto", HeaderValue::from_static("https"));
        rewrite_request(&mut h, &strip(), &client(), &[]);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.7");
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "http");
        assert_eq!(h.get("x-forwarded-host").unwrap(), "gw.example.com");
        assert!(!h.contains_key("x_forwarded_proto"));
        assert!(!h.contains_key("host"));
    }

    #[test]
    fn gateway_cookies_are_removed_and_others_kept() {
        let mut h = HeaderMap::new();
        h.append(
            "cookie",
            HeaderValue::from_static("app=1; slack-gateway-session=secret"),
        );
        h.append(
            "cookie",
            HeaderValue::from_static("slack-gateway-signin=x; theme=dark"),
        );
        remove_cookies(&mut h, &["slack-gateway-session", "slack-gateway-signin"]);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h.get("cookie").unwrap(), "app=1; theme=dark");
        let mut h = HeaderMap::new();
        h.insert(
            "cookie",
            HeaderValue::from_static("slack-gateway-session=secret"),
        );
        remove_cookies(&mut h, &["slack-gateway-session"]);
        assert!(!h.contains_key("cookie"));
    }

    #[test]
    fn trusted_proxy_chain_is_extended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        h.insert("x_forwarded_for", HeaderValue::from_static("10.6.6.6"));
        rewrite_request(&mut h, &strip(), &client(), &[client().addr.ip()]);
        assert_eq!(
            h.get("x-forwarded-for").unwrap(),
            "198.51.100.1, 203.0.113.7"
        );
        assert_eq!(h.get("x-forwarded-proto").unwrap(), "https");
        assert!(
            !h.contains_key("x_forwarded_for"),
            "a folded spelling is nobody's chain"
        );
    }

    #[test]
    fn forwarding_headers_of_untrusted_peers_go_and_hop_by_hop_beats_trust() {
        let mut h = HeaderMap::new();
        h.insert("forwarded", HeaderValue::from_static("for=10.0.0.9"));
        h.insert("x-forwarded-host", HeaderValue::from_static("evil.example"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        rewrite_request(&mut h, &strip(), &client(), &[]);
        assert!(!h.contains_key("forwarded"));
        assert!(
            !h.contains_key("x-forwarded-host"),
            "no Host, no X-Forwarded-Host"
        );
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.7");

        // A header the Connection header lists is hop-by-hop, even from a trusted proxy.
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("X-Forwarded-For"));
        h.insert("x-forwarded-for", HeaderValue::from_static("198.51.100.1"));
        rewrite_request(&mut h, &strip(), &client(), &[client().addr.ip()]);
        assert_eq!(h.get("x-forwarded-for").unwrap(), "203.0.113.7");
    }
}
