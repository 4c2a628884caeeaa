use std::time::Duration;

use super::*;

const MINIMAL: &str = r#"
[slack]
client_id = "123.456"
client_secret = "cs"
signing_secret = "ss"
[oauth]
scopes = ["commands"]
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    load_env(text, &[])
}

fn load_env(text: &str, vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let vars: Vec<(String, String)> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_toml(text, Path::new("/etc/gw/gateway.toml"), &move |name| {
        vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone())
    })
}

fn invalid_key(text: &str) -> String {
    match load(text) {
        Err(ConfigError::Invalid { key, .. }) => key,
        other => panic!("expected an invalid key, got {other:?}"),
    }
}

#[test]
fn minimal_config_gets_sane_defaults() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:3000");
    assert_eq!(c.server.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    assert_eq!(
        c.server.max_body_bytes_in_flight,
        DEFAULT_MAX_BODY_BYTES_IN_FLIGHT
    );
    assert!(c.server.replay_protection);
    assert_eq!(c.upstream.slack_paths, vec!["/slack/events"]);
    assert_eq!(c.upstream.timeout, Duration::from_millis(2500));
    assert_eq!(c.upstream.keepalive_timeout, Duration::from_secs(1));
    assert_eq!(c.server.body_read_timeout, Duration::from_secs(10));
    assert_eq!(c.server.write_timeout, Duration::from_secs(10));
    assert_eq!(
        c.oauth.redirect_uri.as_str(),
        "http://127.0.0.1:3000/slack/oauth_redirect"
    );
    assert_eq!(c.slack.api_url.as_str(), "https://slack.com/api");
    assert_eq!(c.storage.path, PathBuf::from("/etc/gw/data"));
    assert_eq!(c.upstream.headers.bot_token.as_str(), "x-slack-bot-token");
}

#[test]
fn unknown_key_is_an_error_naming_key_and_line() {
    let text = "[server]\nlisten = \"127.0.0.1:1\"\nlisen = \"x\"\n";
    let e = load(&format!("{MINIMAL}{text}")).unwrap_err().to_string();
    assert!(e.contains("lisen"), "{e}");
    assert!(e.contains("line"), "{e}");
}

#[test]
fn env_vars_expand_and_unset_ones_are_named() {
    let text = MINIMAL.replace("\"ss\"", "\"${SIGN}\"");
    let c = load_env(&text, &[("SIGN", "from-env")]).unwrap();
    assert_eq!(c.slack.signing_secret.expose(), "from-env");
    let e = load(&text).unwrap_err();
    assert_eq!(e.key(), Some("slack.signing_secret"));
    assert!(e.to_string().contains("SIGN"), "{e}");
    assert!(e.to_string().contains(":5:"), "line number expected: {e}");
}

#[test]
fn env_default_is_used_and_flagged_as_placeholder() {
    let text = MINIMAL.replace("\"ss\"", "\"${SIGN:-dev-placeholder}\"");
    let c = load(&text).unwrap();
    assert_eq!(c.slack.signing_secret.expose(), "dev-placeholder");
    assert_eq!(c.placeholder_secrets, vec!["slack.signing_secret"]);
    let c = load_env(&text, &[("SIGN", "real")]).unwrap();
    assert!(c.placeholder_secrets.is_empty());
}

#[test]
fn secret_file_is_read_and_trimmed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("sign"), "file-secret\n").unwrap();
    let text = MINIMAL.replace("signing_secret = \"ss\"", "signing_secret_file = \"sign\"");
    let c = Config::from_toml(&text, &dir.path().join("gateway.toml"), &|_| None).unwrap();
    assert_eq!(c.slack.signing_secret.expose(), "file-secret");
    let both = MINIMAL.replace(
        "signing_secret = \"ss\"",
        "signing_secret = \"a\"\nsigning_secret_file = \"sign\"",
    );
    assert_eq!(invalid_key(&both), "slack.signing_secret");
}

#[test]
fn bad_values_name_their_key() {
    let cases = [
        ("[upstream]\ntimeout = \"soon\"\n", "upstream.timeout"),
        ("[upstream]\ntimeout = \"0s\"\n", "upstream.timeout"),
        (
            "[upstream]\nkeepalive_timeout = \"a while\"\n",
            "upstream.keepalive_timeout",
        ),
        (
            "[upstream]\nkeepalive_timeout = \"0s\"\n",
            "upstream.keepalive_timeout",
        ),
        ("[upstream]\nurl = \"ftp://x\"\n", "upstream.url"),
        ("[server]\nlisten = \"nowhere\"\n", "server.listen"),
        ("[server]\nmax_body_bytes = 0\n", "server.max_body_bytes"),
        (
            "[server]\nmax_body_bytes = 2048\nmax_body_bytes_in_flight = 1024\n",
            "server.max_body_bytes_in_flight",
        ),
        (
            "[server]\nbody_read_timeout = \"0ms\"\n",
            "server.body_read_timeout",
        ),
        (
            "[server]\nbody_read_timeout = \"slow\"\n",
            "server.body_read_timeout",
        ),
        ("[server]\nwrite_timeout = \"0s\"\n", "server.write_timeout"),
        (
            "[server]\nwrite_timeout = \"never\"\n",
            "server.write_timeout",
        ),
        (
            "[server]\npublic_url = \"http://gw.example.com\"\n",
            "oauth.redirect_uri",
        ),
        (
            "[upstream]\nslack_paths = [\"slack/events\"]\n",
            "upstream.slack_paths",
        ),
        (
            "[upstream]\nslack_paths = [\"/slack/install\"]\n",
            "upstream.slack_paths",
        ),
        (
            "[server]\nadmin_listen = \"0.0.0.0:9090\"\n",
            "server.admin_listen",
        ),
        (
            "[storage]\nencryption_key = \"short\"\n",
            "storage.encryption_key",
        ),
        ("[signin]\nenabled = true\n", "signin.cookie_secret"),
        (
            "[upstream.headers]\nbot_token = \"bad header\"\n",
            "upstream.headers.bot_token",
        ),
        // Names the gateway sets or removes itself, and one name for two injected headers
        // (in any spelling an upstream would fold into the same).
        (
            "[upstream.headers]\nbot_token = \"Host\"\n",
            "upstream.headers.bot_token",
        ),
        (
            "[upstream.headers]\nteam_id = \"content-length\"\n",
            "upstream.headers.team_id",
        ),
        (
            "[upstream.headers]\nbot_id = \"X_Forwarded_For\"\n",
            "upstream.headers.bot_id",
        ),
        (
            "[upstream.headers]\nuser_token = \"transfer-encoding\"\n",
            "upstream.headers.user_token",
        ),
        (
            "[upstream.headers]\nuser_token = \"X_Slack_Bot_Token\"\n",
            "upstream.headers.user_token",
        ),
        // A configured name clashing with a later key's default: the configured key is named.
        (
            "[upstream.headers]\nbot_token = \"X-Slack-User-Token\"\n",
            "upstream.headers.bot_token",
        ),
        (
            "[upstream.headers]\nuser_email = \"X-Slack-User-Id\"\n",
            "upstream.headers.user_email",
        ),
    ];
    for (extra, key) in cases {
        assert_eq!(
            invalid_key(&format!("{MINIMAL}{extra}")),
            key,
            "for {extra}"
        );
    }
}

#[test]
fn an_injected_name_may_serve_one_header_of_each_route() {
    // bot_user_id goes with Slack's requests, user_id with signed-in browser requests.
    let c = load(&format!(
        "{MINIMAL}[upstream.headers]\nuser_id = \"X-Slack-Bot-User-Id\"\n"
    ))
    .unwrap();
    assert_eq!(c.upstream.headers.user_id, c.upstream.headers.bot_user_id);
    // The refusal names the key and the line that set the name.
    match load(&format!(
        "{MINIMAL}[upstream.headers]\nbot_token = \"x_slack_user_token\"\n"
    )) {
        Err(ConfigError::Invalid {
            key, line, message, ..
        }) => {
            assert_eq!(key, "upstream.headers.bot_token");
            assert!(line.is_some(), "no line");
            assert!(message.contains("upstream.headers.user_token"), "{message}");
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn empty_signing_secret_and_no_scopes_are_refused() {
    assert_eq!(
        invalid_key(&MINIMAL.replace("\"ss\"", "\"\"")),
        "slack.signing_secret"
    );
    assert_eq!(
        invalid_key(&MINIMAL.replace("scopes = [\"commands\"]", "")),
        "oauth.scopes"
    );
}

#[test]
fn https_public_url_derives_redirect_and_domain_derives_urls() {
    let text = format!("{MINIMAL}[server]\npublic_url = \"https://gw.example.com\"\n");
    let c = load(&text.replace("[oauth]", "domain = \"slack-gov.com\"\n[oauth]")).unwrap();
    assert_eq!(
        c.oauth.redirect_uri.as_str(),
        "https://gw.example.com/slack/oauth_redirect"
    );
    assert_eq!(
        c.slack.authorize_url.as_str(),
        "https://slack-gov.com/oauth/v2/authorize"
    );
    assert_eq!(c.slack.api_url.as_str(), "https://slack-gov.com/api");
}

#[test]
fn redacted_output_hides_every_secret() {
    let text = format!("{MINIMAL}[admin]\ntoken = \"admintok\"\n");
    let c = load(&text).unwrap();
    let out = c.to_redacted_toml();
    for secret in ["\"cs\"", "\"ss\"", "admintok"] {
        assert!(!out.contains(secret), "{secret} leaked in {out}");
    }
    assert!(out.contains("<redacted>"));
    assert!(out.contains("client_id = \"123.456\""));
    assert!(!format!("{c:?}").contains("admintok"));
}

#[test]
fn sign_in_takes_the_install_team_hint_unless_it_has_its_own() {
    let signin = "[signin]\nenabled = true\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n";
    let base = MINIMAL.replace("[oauth]\n", "[oauth]\nteam = \"T9\"\n");
    let c = load(&format!("{base}{signin}")).unwrap();
    assert_eq!(c.signin.team.as_deref(), Some("T9"));
    let c = load(&format!("{base}{signin}team = \"T8\"\n")).unwrap();
    assert_eq!(c.signin.team.as_deref(), Some("T8"));
    let c = load(&format!("{base}{signin}team = \"\"\n")).unwrap();
    assert_eq!(c.signin.team, None, "an empty team opts out");
    let c = load(&format!("{MINIMAL}{signin}")).unwrap();
    assert_eq!(c.signin.team, None);
}

#[test]
fn a_protect_prefix_overlapping_a_slack_path_is_refused() {
    let with = |protect: &str| {
        format!(
            "{MINIMAL}[signin]\nenabled = true\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n\
             protect = [{protect}]\n"
        )
    };
    for clash in [
        "\"/\"",
        "\"/slack\"",
        "\"/slack/events\"",
        "\"/Slack/Events/\"",
        "\"/slack//events\"",
        "\"/app\", \"/slack/events/sub\"",
    ] {
        match load(&with(clash)) {
            Err(ConfigError::Invalid {
                key, line, message, ..
            }) => {
                assert_eq!(key, "signin.protect", "{clash}");
                assert!(line.is_some(), "{clash}: no line");
                assert!(message.contains("/slack/events"), "{clash}: {message}");
            }
            other => panic!("{clash}: expected an error, got {other:?}"),
        }
    }
    for fine in ["\"/app\"", "\"/slacker\"", "\"/app\", \"/admin/\""] {
        assert!(load(&with(fine)).is_ok(), "{fine}");
    }
}

#[test]
fn egress_defaults_and_rules() {
    let c = load(MINIMAL).unwrap();
    assert!(!c.egress.enabled);
    assert_eq!(c.egress.listen.to_string(), "127.0.0.1:3001");
    assert_eq!(c.egress.max_wait, Duration::from_secs(30));
    assert!(c.upstream.inject_tokens);
    // Off loopback, only with a token.
    for extra in [
        "[egress]\nenabled = true\nlisten = \"0.0.0.0:3001\"\n",
        "[egress]\nlisten = \"10.0.0.5:3001\"\ntoken = \"\"\n",
    ] {
        assert_eq!(
            invalid_key(&format!("{MINIMAL}{extra}")),
            "egress.listen",
            "{extra}"
        );
    }
    let c = load(&format!(
        "{MINIMAL}[egress]\nenabled = true\nlisten = \"0.0.0.0:3001\"\ntoken = \"t0k\"\nmax_wait = \"5s\"\n"
    ))
    .unwrap();
    assert_eq!(c.egress.token.as_ref().map(|t| t.expose()), Some("t0k"));
    assert_eq!(c.egress.max_wait, Duration::from_secs(5));
    for (extra, key) in [
        ("[egress]\nmax_wait = \"soon\"\n", "egress.max_wait"),
        ("[egress]\nlisten = \"nowhere\"\n", "egress.listen"),
    ] {
        assert_eq!(invalid_key(&format!("{MINIMAL}{extra}")), key, "{extra}");
    }
    let c = load(&format!("{MINIMAL}[upstream]\ninject_tokens = false\n")).unwrap();
    assert!(!c.upstream.inject_tokens);
}

/// SPEC's whole example config loads: `[socket_mode]` and `[delivery]` with their keys are
/// read and checked; turning either on is refused by name until it is implemented.
#[test]
fn socket_mode_and_delivery_sections_load_and_unimplemented_modes_are_refused() {
    let c = load(&format!(
        "{MINIMAL}[socket_mode]\nenabled = true\napp_token = \"xapp-1\"\nping_interval = \"500ms\"\nping_timeout = \"2s\"\n"
    ))
    .unwrap();
    assert!(c.socket_mode.enabled);
    assert_eq!(c.socket_mode.ping_interval, Duration::from_millis(500));
    assert_eq!(c.socket_mode.ping_timeout, Duration::from_secs(2));
    let c = load(&format!(
        "{MINIMAL}[socket_mode]\nenabled = false\nconnections = 3\n\
         [delivery]\nmode = \"direct\"\nmax_attempts = 5\nretry_backoff = \"2s\"\n\
         retry_backoff_max = \"1m\"\nconcurrency = 8\ndedupe_window = \"30m\"\n"
    ))
    .unwrap();
    assert_eq!(c.socket_mode.connections, 3);
    assert_eq!(c.delivery.max_attempts, 5);
    assert_eq!(c.delivery.dedupe_window, Duration::from_secs(1800));
    let c = load(&format!("{MINIMAL}[socket_mode]\n[delivery]\n[egress]\n")).unwrap();
    assert_eq!(c.delivery.mode, DeliveryMode::Direct);
    assert_eq!(c.socket_mode.connections, 2);
    for (extra, key) in [
        ("[socket_mode]\nenabled = true\n", "socket_mode.app_token"),
        (
            "[socket_mode]\nping_interval = \"0s\"\n",
            "socket_mode.ping_interval",
        ),
        (
            "[socket_mode]\nping_interval = \"10s\"\nping_timeout = \"5s\"\n",
            "socket_mode.ping_timeout",
        ),
        (
            "[socket_mode]\nconnections = 0\n",
            "socket_mode.connections",
        ),
        (
            "[socket_mode]\nconnections = 11\n",
            "socket_mode.connections",
        ),
        ("[delivery]\nmode = \"later\"\n", "delivery.mode"),
        ("[delivery]\nmax_attempts = 0\n", "delivery.max_attempts"),
        (
            "[delivery]\nretry_backoff = \"10s\"\nretry_backoff_max = \"1s\"\n",
            "delivery.retry_backoff_max",
        ),
    ] {
        assert_eq!(invalid_key(&format!("{MINIMAL}{extra}")), key, "{extra}");
    }
}

/// The example config of SPEC.md, copied as written, loads with its variables set.
#[test]
fn the_spec_example_config_loads() {
    let text = include_str!("../../tests/fixtures/spec_example.toml");
    let cookie = "c".repeat(40);
    let c = load_env(
        text,
        &[
            ("SLACK_CLIENT_ID", "1.2"),
            ("SLACK_CLIENT_SECRET", "client-secret"),
            ("SLACK_SIGNING_SECRET", "signing-secret"),
            ("GATEWAY_COOKIE_SECRET", &cookie),
        ],
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.egress.enabled && !c.socket_mode.enabled);
    assert_eq!(c.delivery.mode, DeliveryMode::Direct);
}
