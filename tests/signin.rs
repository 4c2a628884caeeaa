//! Sign in with Slack in front of the upstream's pages, against a fake OpenID provider whose
//! RSA keys are generated at test time.

mod support;

use std::collections::HashMap;

use support::fake_oidc::{OidcUser, Tamper};
use support::fake_slack::FakeSlack;
use support::oauth_harness::{Harness, CLIENT_ID, CLIENT_SECRET};

const COOKIE_SECRET: &str = "an-unguessable-cookie-secret-of-32-bytes+";

async fn start(extra: &str) -> Harness {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    Harness::start_full(
        slack,
        "",
        "",
        &format!("\n[signin]\nenabled = true\ncookie_secret = \"{COOKIE_SECRET}\"\nprotect = [\"/app\"]\n{extra}\n"),
    )
    .await
}

fn set_cookie(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .map(str::to_owned)
}

fn cookie_pair(set_cookie: &str) -> String {
    set_cookie.split(';').next().unwrap().to_owned()
}

fn location(r: &reqwest::Response) -> String {
    r.headers()["location"].to_str().unwrap().to_owned()
}

/// A login started at `login_path_and_query`: the callback URL Slack would send the browser to,
/// and the login cookie.
async fn begin(h: &Harness, login: &str) -> (String, String, HashMap<String, String>) {
    let r = h.get(login, None).await;
    assert_eq!(r.status(), 302, "login redirects to Slack");
    let cookie = cookie_pair(&set_cookie(&r, "slack-gateway-signin").expect("login cookie"));
    let to = url::Url::parse(&location(&r)).unwrap();
    let q: HashMap<String, String> = to.query_pairs().into_owned().collect();
    let code = h.slack.issue_oidc_code(&q["redirect_uri"], &q["nonce"]);
    let callback = format!("/slack/login/callback?code={code}&state={}", q["state"]);
    (callback, cookie, q)
}

/// A full sign-in: the session cookie and where the callback sent the browser.
async fn sign_in(h: &Harness, login: &str) -> (u16, Option<String>, String) {
    let (callback, cookie, _) = begin(h, login).await;
    let r = h.get(&callback, Some(&cookie)).await;
    let status = r.status().as_u16();
    let session = set_cookie(&r, "slack-gateway-session").map(|c| cookie_pair(&c));
    let loc = if status == 302 {
        location(&r)
    } else {
        r.text().await.unwrap()
    };
    (status, session, loc)
}

async fn seen_by_upstream(
    h: &Harness,
    path: &str,
    cookie: &str,
    extra: &[(&str, &str)],
) -> (u16, serde_json::Value) {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let mut req = client
        .get(format!("{}{path}", h.public_url()))
        .header("cookie", cookie);
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)),
    )
}

#[tokio::test]
async fn sign_in_then_the_protected_page_gets_the_users_identity() {
    let h = start("").await;
    // No session: off to login, and back to the original page afterwards.
    let r = h.get("/app/reports?month=11", None).await;
    assert_eq!(r.status(), 302);
    assert_eq!(
        location(&r),
        "/slack/login?return_to=%2Fapp%2Freports%3Fmonth%3D11"
    );

    let (callback, cookie, q) = begin(&h, &location(&r)).await;
    assert_eq!(q["response_type"], "code");
    assert_eq!(q["scope"], "openid email profile");
    assert_eq!(q["client_id"], CLIENT_ID);
    assert_eq!(
        q["redirect_uri"],
        format!("{}/slack/login/callback", h.public_url())
    );
    assert!(q["state"].len() >= 22 && q["nonce"].len() >= 22 && q["state"] != q["nonce"]);
    let r = h.get(&callback, Some(&cookie)).await;
    assert_eq!(r.status(), 302);
    assert_eq!(location(&r), "/app/reports?month=11");
    let session = set_cookie(&r, "slack-gateway-session").expect("session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Max-Age=86400"] {
        assert!(session.contains(attr), "{attr} in {session}");
    }
    assert!(!session.contains("Secure"), "http public_url");
    assert!(
        set_cookie(&r, "slack-gateway-signin")
            .unwrap()
            .contains("Max-Age=0"),
        "login cookie cleared"
    );

    let cookies = format!("{}; app_pref=dark", cookie_pair(&session));
    let spoofed = [
        ("x-slack-user-id", "U0EVIL"),
        ("X_Slack_User_Email", "evil@example.com"),
        ("x-slack-team-id", "T0EVIL"),
    ];
    let (status, seen) = seen_by_upstream(&h, "/app/reports?month=11", &cookies, &spoofed).await;
    assert_eq!(status, 200);
    assert_eq!(seen["x-slack-user-id"], "U0ALICE");
    assert_eq!(seen["x-slack-team-id"], "T0SIGNIN");
    assert_eq!(seen["x-slack-user-email"], "alice@example.com");
    assert_eq!(seen["x-slack-user-name"], "Alice");
    assert!(
        seen.get("x_slack_user_email").is_none(),
        "folded spoof stripped: {seen}"
    );
    assert_eq!(
        seen["cookie"], "app_pref=dark",
        "the gateway's own cookies never reach the upstream"
    );
    assert_eq!(seen["path"], "/app/reports?month=11");
}

#[tokio::test]
async fn every_bad_id_token_is_refused() {
    let h = start("").await;
    for (tamper, reason) in [
        (Tamper::ForgedSignature, "invalid_signature"),
        (Tamper::UnknownKid, "unknown_key"),
        (Tamper::WrongAudience, "invalid_audience"),
        (Tamper::WrongIssuer, "invalid_issuer"),
        (Tamper::Expired, "expired_token"),
        (Tamper::WrongNonce, "invalid_nonce"),
        (Tamper::AlgNone, "malformed_id_token"),
    ] {
        h.slack.tamper_next_id_token(tamper.clone());
        let (status, session, page) = sign_in(&h, "/slack/login").await;
        assert_eq!(status, 401, "{tamper:?}");
        assert!(session.is_none(), "{tamper:?}: no session");
        assert!(
            page.contains(&format!("<code id=\"reason\">{reason}</code>")),
            "{tamper:?}: {page}"
        );
    }
    // A proper token still works afterwards.
    let (status, session, _) = sign_in(&h, "/slack/login").await;
    assert_eq!(status, 302);
    assert!(session.is_some());
}

#[tokio::test]
async fn a_new_signing_key_is_fetched_on_an_unknown_kid() {
    let h = start("").await;
    assert_eq!(sign_in(&h, "/slack/login").await.0, 302);
    let fetches = h.slack.jwks_fetches();
    assert_eq!(sign_in(&h, "/slack/login").await.0, 302);
    assert_eq!(h.slack.jwks_fetches(), fetches, "keys are cached");
    h.slack.rotate_oidc_key();
    assert_eq!(
        sign_in(&h, "/slack/login").await.0,
        302,
        "rotated key accepted"
    );
    assert_eq!(
        h.slack.jwks_fetches(),
        fetches + 1,
        "refetched once for the new kid"
    );
}

#[tokio::test]
async fn replayed_or_foreign_states_are_refused() {
    let h = start("").await;
    let (callback, cookie, _) = begin(&h, "/slack/login").await;
    assert_eq!(h.get(&callback, Some(&cookie)).await.status(), 302);
    let r = h.get(&callback, Some(&cookie)).await;
    assert_eq!(r.status(), 400, "replayed state");
    assert!(r.text().await.unwrap().contains("invalid_state"));

    // The state of one browser's login with another browser's cookie.
    let (callback, _, _) = begin(&h, "/slack/login").await;
    let (_, other_cookie, _) = begin(&h, "/slack/login").await;
    let r = h.get(&callback, Some(&other_cookie)).await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid_browser"));
    // No cookie at all.
    let (callback, _, _) = begin(&h, "/slack/login").await;
    let r = h.get(&callback, None).await;
    assert!(r.text().await.unwrap().contains("invalid_browser"));
    // Slack said no.
    let r = h
        .get("/slack/login/callback?error=access_denied&state=x", None)
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("access_denied"));
}

#[tokio::test]
async fn a_tampered_or_foreign_session_cookie_is_no_session() {
    let h = start("").await;
    let (_, session, _) = sign_in(&h, "/slack/login").await;
    let session = session.unwrap();
    let (name, value) = session.split_once('=').unwrap();
    let mut chars: Vec<char> = value.chars().collect();
    let i = chars.len() / 2;
    chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
    let tampered = format!("{name}={}", chars.into_iter().collect::<String>());
    for cookie in [
        tampered.as_str(),
        "slack-gateway-session=garbage",
        "slack-gateway-session=",
    ] {
        let r = h.get("/app", Some(cookie)).await;
        assert_eq!(r.status(), 302, "{cookie}");
        assert!(location(&r).starts_with("/slack/login"), "{cookie}");
    }
    // A session sealed by this gateway does not open in one with another cookie secret.
    let h2 = {
        let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
        Harness::start_full(
            slack,
            "",
            "",
            "\n[signin]\nenabled = true\ncookie_secret = \"a-different-secret-that-is-32-bytes-long\"\nprotect = [\"/app\"]\n",
        )
        .await
    };
    let r = h2.get("/app", Some(&session)).await;
    assert_eq!(
        r.status(),
        302,
        "a cookie from another secret is no session"
    );
    // And the real one still works.
    assert_eq!(seen_by_upstream(&h, "/app", &session, &[]).await.0, 200);
    // POST without a session: refused, not redirected.
    let r = reqwest::Client::new()
        .post(format!("{}/app/form", h.public_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn return_paths_never_leave_the_site() {
    let h = start("").await;
    for bad in [
        "//evil.com",
        "/\\evil.com",
        "https://evil.com/",
        "/%2F%2Fevil.com",
        "/%5Cevil.com",
        "/%09/evil.com",
        "evil.com",
    ] {
        let login = format!("/slack/login?return_to={}", urlencode(bad));
        let (status, session, loc) = sign_in(&h, &login).await;
        assert_eq!(status, 302, "{bad}");
        assert!(session.is_some());
        assert_eq!(loc, "/", "{bad} must not be followed");
    }
    let (_, _, loc) = sign_in(&h, "/slack/login?return_to=%2Fapp%2Fok%3Fa%3D1").await;
    assert_eq!(loc, "/app/ok?a=1");
    // Logout too.
    let r = h.get("/slack/logout?return_to=%2F%2Fevil.com", None).await;
    assert_eq!(location(&r), "/");
    assert!(set_cookie(&r, "slack-gateway-session")
        .unwrap()
        .contains("Max-Age=0"));
}

fn urlencode(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn allowed_teams_refuse_other_workspaces() {
    let h = start("allowed_teams = [\"T0GOOD\"]").await;
    let (status, session, page) = sign_in(&h, "/slack/login").await; // the fake's user is in T0SIGNIN
    assert_eq!(status, 403);
    assert!(session.is_none());
    assert!(page.contains("team_not_allowed"));
    h.slack.set_oidc_user(OidcUser {
        team_id: "T0GOOD".into(),
        ..OidcUser::default()
    });
    let (status, session, _) = sign_in(&h, "/slack/login").await;
    assert_eq!(status, 302);
    let session = session.unwrap();
    assert_eq!(seen_by_upstream(&h, "/app", &session, &[]).await.0, 200);
    // The allow-list changes live: the existing session is refused from the next request.
    let text = h.config_text().replace(
        "allowed_teams = [\"T0GOOD\"]",
        "allowed_teams = [\"T0OTHER\"]",
    );
    std::fs::write(&h.config_path, text).unwrap();
    slack_gateway::reload::reload(&h.gw).unwrap();
    assert_eq!(seen_by_upstream(&h, "/app", &session, &[]).await.0, 403);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let h = start("").await;
    let (_, session, _) = sign_in(&h, "/slack/login").await;
    let r = h.get("/slack/logout", session.as_deref()).await;
    assert_eq!(r.status(), 302);
    let cleared = set_cookie(&r, "slack-gateway-session").unwrap();
    assert!(cleared.starts_with("slack-gateway-session=;") && cleared.contains("Max-Age=0"));
}

#[tokio::test]
async fn unprotected_paths_are_not_forwarded() {
    let h = start("").await;
    assert_eq!(
        h.get("/apple", None).await.status(),
        404,
        "prefixes match whole segments"
    );
    assert_eq!(h.get("/other", None).await.status(), 404);
}

/// Writes `request` to the public listener as is (reqwest would resolve dot segments itself)
/// and returns the status and the whole answer.
async fn raw(h: &Harness, request: String) -> (u16, String) {
    support::raw_http(h.public, request.as_bytes()).await
}

/// A signed-in user of any workspace must not reach the app's Slack handler with an unsigned
/// request by spelling a Slack path another way under a protected prefix.
#[tokio::test]
async fn unsigned_requests_never_reach_the_slack_handler_through_a_protected_prefix() {
    let h = start("").await;
    let (_, session, _) = sign_in(&h, "/slack/login").await;
    let session = session.expect("signed in");
    let body = r#"{"type":"event_callback","team_id":"T0SIGNIN","event":{"type":"app_mention"}}"#;
    for path in [
        "/app/../slack/events",
        "/app/%2e%2e/slack/events",
        "/app/%2E%2e/SLACK/EVENTS/",
        "/app/..%2fslack/events",
        "/app/..%2Fslack%2Fevents",
        "/app/..;/slack/events",
        "/app/..\\slack/events",
        "/app//..//..//slack//events/.",
        "/app/%252e%252e/slack/events",
    ] {
        let (status, answer) = raw(
            &h,
            format!(
                "POST {path} HTTP/1.1\r\nHost: gw.example\r\nCookie: {session}\r\n\
                 Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            ),
        )
        .await;
        assert!((400..500).contains(&status), "{path}: {answer}");
        assert!(
            !answer.contains("x-upstream"),
            "{path} was forwarded: {answer}"
        );
    }
    // Pages under the protected prefix are still served, with the path as it was matched.
    let (status, answer) = raw(
        &h,
        format!(
            "GET /app//reports/./x/../y?m=1 HTTP/1.1\r\nHost: gw.example\r\nCookie: {session}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert!(
        answer.contains(r#""path":"/app/reports/y?m=1""#),
        "{answer}"
    );
    // Nor by naming a Slack path in a header that some stacks route by.
    let (status, answer) = raw(
        &h,
        format!(
            "GET /app/x HTTP/1.1\r\nHost: gw.example\r\nCookie: {session}\r\n\
             X-Original-URL: /slack/events\r\nX_Rewrite_URL: /slack/events\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let lower = answer.to_ascii_lowercase();
    assert!(
        !lower.contains("original-url") && !lower.contains("rewrite_url"),
        "{answer}"
    );
}

/// A signed-in browser's request to a protected path goes upstream through hyper's client,
/// as a chunked Slack request does, and is held to the same rules: an upstream answering
/// `101 Switching Protocols`, or with a length beside chunked framing, gets the browser the
/// gateway's 502 with nothing of that answer relayed; an `Expect: 100-continue` is met by the
/// gateway (its `100 Continue`) and not forwarded. The session is sealed here with the
/// configured cookie secret, as the callback would seal it.
#[tokio::test]
async fn protected_requests_get_502_for_bad_upstream_answers_and_never_forward_expect() {
    use slack_gateway::signin::{Session, SESSION_COOKIE};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let answers = vec![
        b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: upgrade\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 40\r\ntransfer-encoding: chunked\r\n\r\n\
          5\r\nhello\r\n0\r\n\r\n"
            .to_vec(),
        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
    ];
    let (url, mut seen) = support::raw_upstream_answering_in_turn(answers, false).await;
    let gw = support::TestGateway::builder(url)
        .toml(&format!(
            "[signin]\nenabled = true\ncookie_secret = \"{COOKIE_SECRET}\"\nprotect = [\"/app\"]\n"
        ))
        .start()
        .await;
    let session = Session {
        user_id: "U0ALICE".into(),
        team_id: "T0SIGNIN".into(),
        email: None,
        name: None,
        expires_at: slack_gateway::http::unix_now() + 3600,
    };
    let sealed = slack_gateway::seal::Sealer::new(COOKIE_SECRET.as_bytes())
        .seal(SESSION_COOKIE, &serde_json::to_vec(&session).unwrap());
    let get = format!(
        "GET /app/page HTTP/1.1\r\nHost: gw.example\r\nCookie: {SESSION_COOKIE}={sealed}\r\n\r\n"
    );
    for case in ["101", "a length beside chunked"] {
        let (status, answer) = support::raw_http(gw.public, get.as_bytes()).await;
        assert_eq!(status, 502, "{case}: {answer}");
        let lower = answer.to_ascii_lowercase();
        for relayed in [
            "upgrade",
            "transfer-encoding",
            "content-length: 40",
            "hello",
        ] {
            assert!(!lower.contains(relayed), "{case}: {relayed} in {answer}");
        }
    }

    let body = "note=hello";
    let mut s = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    s.write_all(
        format!(
            "POST /app/notes HTTP/1.1\r\nHost: gw.example\r\nCookie: {SESSION_COOKIE}={sealed}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\
             Expect: 100-continue\r\n\r\n",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(std::time::Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("no 100 Continue")
            .unwrap();
        assert!(n > 0, "closed: {:?}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    assert!(
        got.starts_with(b"HTTP/1.1 100 Continue\r\n\r\n"),
        "{:?}",
        String::from_utf8_lossy(&got)
    );
    s.write_all(body.as_bytes()).await.unwrap();
    let answer = support::read_answer(&mut s).await.expect("no answer");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.ends_with("\r\n\r\nok"), "{answer}");

    let mut requests = Vec::new();
    while let Ok(s) = seen.try_recv() {
        if let support::Seen::Request(r) = s {
            requests.push(r);
        }
    }
    assert_eq!(requests.len(), 3, "{requests:?}");
    let post = requests[2].to_ascii_lowercase();
    assert!(post.starts_with("post /app/notes "), "{post}");
    assert!(post.ends_with(body), "{post}");
    assert!(!post.contains("\r\nexpect:"), "Expect forwarded: {post}");
}

/// Defect 4 of issue 16, the OAuth-state flood, on the login path: starting a sign-in stores
/// nothing (the state is self-verifying); only its callback stores a used-marker.
#[tokio::test]
async fn state_flood_login_requests_store_nothing() {
    use slack_gateway::store::InstallationStore;
    let h = std::sync::Arc::new(start("").await);
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let h = h.clone();
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                assert_eq!(h.get("/slack/login", None).await.status(), 302);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(
        h.store.used_state_count().await.unwrap(),
        0,
        "2,000 anonymous logins stored nothing"
    );
    // An install's state is no sign-in state.
    let install = h.get("/slack/install", None).await;
    let state = support::oauth_harness::Harness::cookie_state(
        install.headers()["set-cookie"].to_str().unwrap(),
    );
    let (callback, cookie, q) = begin(&h, "/slack/login").await;
    let r = h
        .get(&callback.replace(&q["state"], &state), Some(&cookie))
        .await;
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("invalid_state"));
    assert_eq!(h.store.used_state_count().await.unwrap(), 0);
    assert_eq!(sign_in(&h, "/slack/login").await.0, 302);
    assert_eq!(h.store.used_state_count().await.unwrap(), 1);
}
