//! `slack-gateway manifest`: the real binary prints a manifest in both formats that parse to
//! the same value, carry every configured value, and have the shape Slack's manifest
//! reference documents.

use std::path::Path;
use std::process::Command;

use serde_json::{json, Map, Value};

const BIN: &str = env!("CARGO_BIN_EXE_slack-gateway");

const CONFIG: &str = r#"
[server]
listen = "127.0.0.1:3999"
public_url = "https://gw.example.com/base"

[slack]
client_id = "111.222"
client_secret = "s3cret-client"
signing_secret = "s3cret-signing"

[oauth]
scopes = ["app_mentions:read", "chat:write", "commands"]
user_scopes = ["search:read"]
redirect_path = "/slack/oauth_redirect"

[signin]
enabled = true
cookie_secret = "0123456789abcdef0123456789abcdef-cookie"

[upstream]
slack_paths = ["/slack/events", "/slack/commands"]

[app]
name = "Deploy Bot"
description = "Ships things: safely, with \"quotes\" and # hashes."
bot_events = ["app_mention", "message.im"]
token_rotation = true
org_deploy = true

[[app.commands]]
command = "/deploy"
description = "Deploy a service"
usage_hint = "[service] [env: staging|prod]"

[[app.commands]]
command = "/rollback"
description = "Roll back the last deploy"
"#;

fn run(dir: &Path, text: &str, args: &[&str]) -> std::process::Output {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    Command::new(BIN)
        .arg("manifest")
        .args(args)
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap()
}

fn parse_yaml(text: &str) -> Value {
    use yaml_rust2::{Yaml, YamlLoader};
    fn conv(y: &Yaml) -> Value {
        match y {
            Yaml::String(s) => json!(s),
            Yaml::Boolean(b) => json!(b),
            Yaml::Integer(i) => json!(i),
            Yaml::Real(r) => json!(r.parse::<f64>().unwrap()),
            Yaml::Null => Value::Null,
            Yaml::Array(a) => Value::Array(a.iter().map(conv).collect()),
            Yaml::Hash(h) => Value::Object(
                h.iter()
                    .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), conv(v)))
                    .collect(),
            ),
            other => panic!("unexpected YAML node {other:?}"),
        }
    }
    let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    assert_eq!(docs.len(), 1, "{text}");
    conv(&docs[0])
}

/// Checks a manifest against the structure of Slack's app manifest reference (the fields the
/// gateway writes, with their documented types, required fields and limits; unknown keys are
/// refused as the reference's schema does).
fn check_manifest_shape(m: &Value) {
    fn obj<'a>(
        v: &'a Value,
        at: &str,
        allowed: &[&str],
        required: &[&str],
    ) -> &'a Map<String, Value> {
        let o = v
            .as_object()
            .unwrap_or_else(|| panic!("{at} must be an object: {v}"));
        for k in o.keys() {
            assert!(
                allowed.contains(&k.as_str()),
                "{at}.{k} is not a manifest field"
            );
        }
        for r in required {
            assert!(o.contains_key(*r), "{at}.{r} is required");
        }
        o
    }
    fn string(v: &Value, at: &str, max: usize) -> String {
        let s = v
            .as_str()
            .unwrap_or_else(|| panic!("{at} must be a string: {v}"));
        assert!(
            !s.is_empty() && s.chars().count() <= max,
            "{at}: 1..={max} characters: {s:?}"
        );
        s.to_owned()
    }
    fn boolean(v: &Value, at: &str) {
        assert!(v.is_boolean(), "{at} must be a boolean: {v}");
    }
    fn https(v: &Value, at: &str) {
        let s = string(v, at, 4000);
        assert!(s.starts_with("https://"), "{at} must be an https URL: {s}");
    }
    fn strings(v: &Value, at: &str, max_items: usize) -> Vec<String> {
        let a = v
            .as_array()
            .unwrap_or_else(|| panic!("{at} must be a list: {v}"));
        assert!(a.len() <= max_items, "{at}: at most {max_items} items");
        a.iter()
            .enumerate()
            .map(|(i, s)| string(s, &format!("{at}[{i}]"), 4000))
            .collect()
    }

    let top = obj(
        m,
        "manifest",
        &[
            "_metadata",
            "display_information",
            "features",
            "oauth_config",
            "settings",
        ],
        &["display_information"],
    );
    let meta = obj(
        &top["_metadata"],
        "_metadata",
        &["major_version", "minor_version"],
        &["major_version"],
    );
    assert!(
        matches!(meta["major_version"].as_u64(), Some(1 | 2)),
        "major_version must be 1 or 2"
    );
    assert!(meta["minor_version"].is_u64());
    let display = obj(
        &top["display_information"],
        "display_information",
        &[
            "name",
            "description",
            "long_description",
            "background_color",
        ],
        &["name"],
    );
    string(&display["name"], "display_information.name", 35);
    if let Some(d) = display.get("description") {
        string(d, "display_information.description", 140);
    }
    if let Some(f) = top.get("features") {
        let f = obj(
            f,
            "features",
            &[
                "app_home",
                "bot_user",
                "shortcuts",
                "slash_commands",
                "unfurl_domains",
            ],
            &[],
        );
        if let Some(b) = f.get("bot_user") {
            let b = obj(
                b,
                "features.bot_user",
                &["display_name", "always_online"],
                &["display_name"],
            );
            string(&b["display_name"], "features.bot_user.display_name", 80);
            boolean(&b["always_online"], "features.bot_user.always_online");
        }
        for (i, c) in f
            .get("slash_commands")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .enumerate()
        {
            let at = format!("features.slash_commands[{i}]");
            let c = obj(
                c,
                &at,
                &[
                    "command",
                    "description",
                    "should_escape",
                    "url",
                    "usage_hint",
                ],
                &["command", "description"],
            );
            let command = string(&c["command"], &at, 32);
            assert!(command.starts_with('/'), "{at}.command must start with /");
            string(&c["description"], &at, 2000);
            if let Some(h) = c.get("usage_hint") {
                string(h, &at, 1000);
            }
            https(&c["url"], &format!("{at}.url"));
            boolean(&c["should_escape"], &at);
        }
    }
    let oauth = obj(
        &top["oauth_config"],
        "oauth_config",
        &["redirect_urls", "scopes", "token_management_enabled"],
        &[],
    );
    for (i, u) in strings(&oauth["redirect_urls"], "oauth_config.redirect_urls", 1000)
        .iter()
        .enumerate()
    {
        assert!(
            u.starts_with("https://"),
            "oauth_config.redirect_urls[{i}]: {u}"
        );
    }
    let scopes = obj(
        &oauth["scopes"],
        "oauth_config.scopes",
        &["bot", "user"],
        &[],
    );
    for (k, v) in scopes {
        strings(v, &format!("oauth_config.scopes.{k}"), 255);
    }
    let settings = obj(
        &top["settings"],
        "settings",
        &[
            "allowed_ip_address_ranges",
            "event_subscriptions",
            "interactivity",
            "org_deploy_enabled",
            "socket_mode_enabled",
            "token_rotation_enabled",
        ],
        &[],
    );
    if let Some(e) = settings.get("event_subscriptions") {
        let e = obj(
            e,
            "settings.event_subscriptions",
            &["request_url", "bot_events", "user_events"],
            &[],
        );
        https(
            &e["request_url"],
            "settings.event_subscriptions.request_url",
        );
        strings(
            &e["bot_events"],
            "settings.event_subscriptions.bot_events",
            100,
        );
    }
    if let Some(i) = settings.get("interactivity") {
        let i = obj(
            i,
            "settings.interactivity",
            &["is_enabled", "request_url", "message_menu_options_url"],
            &["is_enabled"],
        );
        boolean(&i["is_enabled"], "settings.interactivity.is_enabled");
        https(&i["request_url"], "settings.interactivity.request_url");
        https(
            &i["message_menu_options_url"],
            "settings.interactivity.message_menu_options_url",
        );
    }
    for k in [
        "org_deploy_enabled",
        "socket_mode_enabled",
        "token_rotation_enabled",
    ] {
        boolean(&settings[k], k);
    }
}

#[test]
fn json_and_yaml_carry_every_configured_value_in_slacks_shape() {
    let dir = tempfile::tempdir().unwrap();
    let json_out = run(dir.path(), CONFIG, &["--format", "json"]);
    assert_eq!(
        json_out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&json_out.stderr)
    );
    assert!(
        json_out.stderr.is_empty(),
        "no warnings for an https config: {}",
        String::from_utf8_lossy(&json_out.stderr)
    );
    let yaml_out = run(dir.path(), CONFIG, &["--format", "yaml"]);
    assert_eq!(yaml_out.status.code(), Some(0));
    let default_out = run(dir.path(), CONFIG, &[]);
    assert_eq!(default_out.stdout, yaml_out.stdout, "YAML is the default");

    let from_json: Value = serde_json::from_slice(&json_out.stdout).unwrap();
    let yaml = String::from_utf8(yaml_out.stdout).unwrap();
    let from_yaml = parse_yaml(&yaml);
    assert_eq!(
        from_json, from_yaml,
        "both formats are the same manifest:\n{yaml}"
    );
    check_manifest_shape(&from_json);

    let m = &from_json;
    let url = "https://gw.example.com/base/slack/events";
    assert_eq!(m["display_information"]["name"], "Deploy Bot");
    assert_eq!(
        m["display_information"]["description"],
        "Ships things: safely, with \"quotes\" and # hashes."
    );
    assert_eq!(m["features"]["bot_user"]["display_name"], "Deploy Bot");
    assert_eq!(
        m["features"]["slash_commands"],
        json!([
            {"command": "/deploy", "description": "Deploy a service", "usage_hint": "[service] [env: staging|prod]", "url": url, "should_escape": false},
            {"command": "/rollback", "description": "Roll back the last deploy", "url": url, "should_escape": false},
        ])
    );
    assert_eq!(
        m["oauth_config"]["redirect_urls"],
        json!([
            "https://gw.example.com/base/slack/oauth_redirect",
            "https://gw.example.com/base/slack/login/callback",
        ])
    );
    assert_eq!(
        m["oauth_config"]["scopes"]["bot"],
        json!(["app_mentions:read", "chat:write", "commands"])
    );
    assert_eq!(
        m["oauth_config"]["scopes"]["user"],
        json!(["search:read", "openid", "email", "profile"])
    );
    assert_eq!(m["settings"]["event_subscriptions"]["request_url"], url);
    assert_eq!(
        m["settings"]["event_subscriptions"]["bot_events"],
        json!([
            "app_mention",
            "message.im",
            "app_uninstalled",
            "tokens_revoked"
        ])
    );
    assert_eq!(m["settings"]["interactivity"]["is_enabled"], true);
    assert_eq!(m["settings"]["interactivity"]["request_url"], url);
    assert_eq!(m["settings"]["token_rotation_enabled"], true);
    assert_eq!(m["settings"]["org_deploy_enabled"], true);
    assert_eq!(m["settings"]["socket_mode_enabled"], false);

    // Nothing secret is in it.
    for s in ["s3cret", "0123456789abcdef"] {
        assert!(!yaml.contains(s) && !String::from_utf8_lossy(&json_out.stdout).contains(s));
    }
}

#[test]
fn the_shipped_config_gives_a_manifest_with_a_warning_about_http() {
    let shipped =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/gateway.toml")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = run(dir.path(), &shipped, &["--format", "yaml"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = parse_yaml(&String::from_utf8(out.stdout).unwrap());
    assert_eq!(m["display_information"]["name"], "slack-gateway app");
    assert_eq!(
        m["settings"]["event_subscriptions"]["bot_events"],
        json!(["app_mention", "app_uninstalled", "tokens_revoked"])
    );
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("warning: server.public_url") && stderr.contains("https://"),
        "{stderr}"
    );
}

#[test]
fn an_invalid_app_table_is_one_line_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let text = CONFIG.replace("command = \"/rollback\"", "command = \"rollback\"");
    let out = run(dir.path(), &text, &[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("app.commands.command") && stderr.contains(":36:"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());

    let out = run(dir.path(), CONFIG, &["--format", "toml"]);
    assert_eq!(out.status.code(), Some(2), "a bad format is a usage error");
}
