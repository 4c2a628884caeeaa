//! `X-Forwarded-*` from outside: only a trusted proxy may say where a request came from.
//! Every other peer's forwarding headers, in every name and spelling, are dropped on both
//! transports (the fast lane and hyper's path), and the gateway's own are set.

mod support;

use slack_gateway::store::contract::workspace_install;
use support::{
    chunked_signed_request, event, raw_http, FakeUpstream, Recorded, TestGateway, EVENTS_PATH,
};

const TEAM: &str = "T0FWD";

/// Forwarding headers a client might claim, beyond For/Proto/Host, in both spellings.
const CLAIMED: [(&str, &str); 12] = [
    ("X-Forwarded-Port", "443"),
    ("X-Forwarded-Prefix", "/admin"),
    ("X-Forwarded-Ssl", "on"),
    ("X-Forwarded-Scheme", "https"),
    ("X-Forwarded-Server", "evil.example"),
    ("X-Forwarded-Uri", "/admin/secret"),
    ("X_Forwarded_Port", "443"),
    ("X_Forwarded_Prefix", "/admin"),
    ("X_Forwarded_Ssl", "on"),
    ("x_forwarded_scheme", "https"),
    ("X_FORWARDED_SERVER", "evil.example"),
    ("x-forwarded_uri", "/admin/secret"),
];

async fn gateway(trusted: bool) -> (FakeUpstream, TestGateway) {
    let up = FakeUpstream::start().await;
    let mut builder = TestGateway::builder(up.url()).seed(workspace_install(
        TEAM,
        "U0INSTALLER",
        "xoxb-fwd-token",
    ));
    if trusted {
        builder = builder.toml("[server]\ntrusted_proxies = [\"127.0.0.1\"]\n");
    }
    (up, builder.start().await)
}

/// Sends one signed event through the lane (reqwest, Content-Length) and one through hyper
/// (chunked), each with every claimed header; returns what the upstream received.
async fn send_both(gw: &TestGateway, up: &FakeUpstream) -> Vec<Recorded> {
    let mut post = gw.post(event(TEAM));
    for (name, value) in CLAIMED {
        post = post.header(name, value);
    }
    assert_eq!(post.send().await.status, 200);
    let body = event(TEAM);
    let raw = chunked_signed_request(
        gw.public,
        EVENTS_PATH,
        "application/json",
        &[body.as_bytes()],
    );
    let extra: String = CLAIMED
        .iter()
        .map(|(n, v)| format!("{n}: {v}\r\n"))
        .collect();
    let text = String::from_utf8(raw).unwrap();
    let (line, rest) = text.split_once("\r\n").unwrap();
    let (status, _) = raw_http(gw.public, format!("{line}\r\n{extra}{rest}").as_bytes()).await;
    assert_eq!(status, 200);
    let got = up.requests();
    assert_eq!(got.len(), 2);
    got
}

fn folded(name: &str) -> String {
    name.to_ascii_lowercase().replace('_', "-")
}

#[tokio::test]
async fn every_x_forwarded_header_of_an_untrusted_peer_is_dropped() {
    let (up, gw) = gateway(false).await;
    for (via, r) in ["lane", "hyper"].iter().zip(send_both(&gw, &up).await) {
        for (name, _) in CLAIMED {
            assert!(
                r.headers_folding_to(&folded(name)).is_empty(),
                "{via}: {name} reached the upstream: {:?}",
                r.headers
            );
        }
        // The gateway's own still arrive.
        assert_eq!(r.header("x-forwarded-for"), Some("127.0.0.1"), "{via}");
        assert_eq!(r.header("x-forwarded-proto"), Some("http"), "{via}");
        assert_eq!(
            r.header("x-slack-bot-token"),
            Some("xoxb-fwd-token"),
            "{via}"
        );
    }
}

#[tokio::test]
async fn a_trusted_proxys_x_forwarded_headers_are_kept_but_not_folded_spellings() {
    let (up, gw) = gateway(true).await;
    for (via, r) in ["lane", "hyper"].iter().zip(send_both(&gw, &up).await) {
        for (name, value) in CLAIMED {
            let seen = r.headers_folding_to(&folded(name));
            let (folded_spellings, kept): (Vec<_>, Vec<_>) =
                seen.iter().partition(|(k, _)| k.contains('_'));
            assert!(
                folded_spellings.is_empty(),
                "{via}: a `_` spelling is no proxy's doing: {seen:?}"
            );
            if !name.contains('_') {
                assert_eq!(kept.len(), 1, "{via}: {name}: {seen:?}");
                assert_eq!(kept[0].1, value, "{via}: {name}");
            }
        }
    }
}
