//! The Slack app manifest that matches a `gateway.toml` (`slack-gateway manifest`).
//!
//! Creating a Slack app by hand means copying the same URLs and scopes into five pages of
//! app settings. The gateway already knows them: redirect URLs, request URLs, scopes. So
//! [`manifest`] derives the manifest from the validated [`Config`] (plus the `[app]` table for
//! what only the manifest needs: name, description, slash commands, extra events), and the
//! result is pasted into "Create New App → From a manifest" or sent to `apps.manifest.create`.
//!
//! The shape follows Slack's manifest reference (schema major version 1):
//! - `display_information.name` (required, at most 35 characters) and `description`;
//! - `features.bot_user` when there are bot scopes, `features.slash_commands` from
//!   `[[app.commands]]`, each pointing at the gateway's first Slack path;
//! - `oauth_config.redirect_urls` (the OAuth callback, and the Sign in with Slack callback when
//!   sign-in is on) and `oauth_config.scopes.bot` / `.user` (sign-in's OpenID scopes are user
//!   scopes, so they are added there);
//! - `settings.event_subscriptions` (the first Slack path, and the bot events: `[app]
//!   bot_events`, else `app_mention` when `app_mentions:read` is a scope, always with
//!   `app_uninstalled` and `tokens_revoked`, which the gateway acts on to keep its store clean),
//!   `settings.interactivity` (the same URL, options included), `org_deploy_enabled`,
//!   `token_rotation_enabled`, and `socket_mode_enabled` (true with `[socket_mode] enabled`;
//!   the request URLs stay, so that turning it off again needs no new manifest).
//!
//! [`to_yaml`] writes the same value as YAML with a small emitter of its own: the manifest
//! is only maps, lists, strings and booleans, and the emitter quotes every string that a YAML
//! parser could read as anything but that string.

use serde_json::{json, Map, Value};

use crate::config::{join_url, Config, LIFECYCLE_EVENTS};

/// Bot events implied by a scope that exists only to receive them.
const SCOPE_EVENTS: &[(&str, &str)] = &[("app_mentions:read", "app_mention")];

/// The bot events of the manifest: `[app] bot_events` if set, else derived from the scopes,
/// then the [`LIFECYCLE_EVENTS`]. Empty without bot scopes (no bot user, no bot events).
pub fn bot_events(config: &Config) -> Vec<String> {
    if config.oauth.scopes.is_empty() {
        return Vec::new();
    }
    let mut events: Vec<String> = match &config.app.bot_events {
        Some(list) => list.clone(),
        None => SCOPE_EVENTS
            .iter()
            .filter(|(scope, _)| config.oauth.scopes.iter().any(|s| s == scope))
            .map(|(_, event)| (*event).to_owned())
            .collect(),
    };
    for e in LIFECYCLE_EVENTS {
        if !events.iter().any(|x| x == e) {
            events.push(e.to_owned());
        }
    }
    events
}

/// The user scopes of the manifest: `oauth.user_scopes`, plus sign-in's when it is enabled.
pub fn user_scopes(config: &Config) -> Vec<String> {
    let mut scopes = config.oauth.user_scopes.clone();
    if config.signin.enabled {
        for s in &config.signin.scopes {
            if !scopes.contains(s) {
                scopes.push(s.clone());
            }
        }
    }
    scopes
}

/// The request URL Slack posts events, commands and interactions to: the public URL with
/// the first of `upstream.slack_paths`.
pub fn request_url(config: &Config) -> Option<String> {
    config
        .upstream
        .slack_paths
        .first()
        .map(|p| join_url(&config.server.public_url, p).to_string())
}

/// The app manifest for `config`, as JSON.
pub fn manifest(config: &Config) -> Value {
    let app = &config.app;
    let request_url = request_url(config);
    let bot_scopes = &config.oauth.scopes;
    let user_scopes = user_scopes(config);

    let mut display = Map::new();
    display.insert("name".into(), json!(app.name));
    if let Some(d) = &app.description {
        display.insert("description".into(), json!(d));
    }

    let mut features = Map::new();
    if !bot_scopes.is_empty() {
        features.insert(
            "bot_user".into(),
            json!({ "display_name": app.name, "always_online": false }),
        );
    }
    if let (false, Some(url)) = (app.commands.is_empty(), &request_url) {
        let commands: Vec<Value> = app
            .commands
            .iter()
            .map(|c| {
                let mut m = Map::new();
                m.insert("command".into(), json!(c.command));
                m.insert("description".into(), json!(c.description));
                if let Some(h) = &c.usage_hint {
                    m.insert("usage_hint".into(), json!(h));
                }
                m.insert("url".into(), json!(url));
                m.insert("should_escape".into(), json!(false));
                Value::Object(m)
            })
            .collect();
        features.insert("slash_commands".into(), Value::Array(commands));
    }

    let mut redirect_urls: Vec<String> = Vec::new();
    if !bot_scopes.is_empty() || !config.oauth.user_scopes.is_empty() {
        redirect_urls.push(config.oauth.redirect_uri.to_string());
    }
    if config.signin.enabled {
        let u = config.signin.redirect_uri.to_string();
        if !redirect_urls.contains(&u) {
            redirect_urls.push(u);
        }
    }
    let mut scopes = Map::new();
    if !bot_scopes.is_empty() {
        scopes.insert("bot".into(), json!(bot_scopes));
    }
    if !user_scopes.is_empty() {
        scopes.insert("user".into(), json!(user_scopes));
    }
    let mut oauth = Map::new();
    if !redirect_urls.is_empty() {
        oauth.insert("redirect_urls".into(), json!(redirect_urls));
    }
    oauth.insert("scopes".into(), Value::Object(scopes));

    let mut settings = Map::new();
    if let Some(url) = &request_url {
        let events = bot_events(config);
        if !events.is_empty() {
            settings.insert(
                "event_subscriptions".into(),
                json!({ "request_url": url, "bot_events": events }),
            );
        }
        settings.insert(
            "interactivity".into(),
            json!({ "is_enabled": true, "request_url": url, "message_menu_options_url": url }),
        );
    }
    settings.insert("org_deploy_enabled".into(), json!(app.org_deploy));
    settings.insert(
        "socket_mode_enabled".into(),
        json!(config.socket_mode.enabled),
    );
    settings.insert("token_rotation_enabled".into(), json!(app.token_rotation));

    let mut m = Map::new();
    m.insert(
        "_metadata".into(),
        json!({ "major_version": 1, "minor_version": 1 }),
    );
    m.insert("display_information".into(), Value::Object(display));
    if !features.is_empty() {
        m.insert("features".into(), Value::Object(features));
    }
    m.insert("oauth_config".into(), Value::Object(oauth));
    m.insert("settings".into(), Value::Object(settings));
    Value::Object(m)
}

/// What Slack will refuse or what will not work with this manifest, for the CLI to print on
/// stderr (the manifest is still printed: it is a useful template).
pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let public = &config.server.public_url;
    if public.scheme() != "https" {
        out.push(format!(
            "server.public_url is {public}: Slack sends events, commands and interactions only to https:// URLs; set it to the https URL Slack reaches (a tunnel or your load balancer) before creating the app"
        ));
    }
    if config.upstream.slack_paths.is_empty() {
        out.push(
            "upstream.slack_paths is empty: the manifest has no request URL, so no events, commands or interactions".into(),
        );
    }
    if config.oauth.scopes.is_empty() {
        out.push(
            "oauth.scopes is empty: no bot user, so no app_uninstalled / tokens_revoked events reach the gateway".into(),
        );
    }
    out
}

/// `value` as a YAML document (block style; strings quoted whenever a plain scalar could be
/// read as something else).
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(m) if !m.is_empty() => write_map(m, 0, false, &mut out),
        Value::Array(a) if !a.is_empty() => write_seq(a, 0, &mut out),
        v => {
            out.push_str(&scalar(v));
            out.push('\n');
        }
    }
    out
}

fn write_map(map: &Map<String, Value>, indent: usize, mut first_inline: bool, out: &mut String) {
    for (k, v) in map {
        if !first_inline {
            out.push_str(&" ".repeat(indent));
        }
        first_inline = false;
        out.push_str(&key(k));
        out.push(':');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push('\n');
                write_map(m, indent + 2, false, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_seq(a, indent + 2, out);
            }
            v => {
                out.push(' ');
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

fn write_seq(items: &[Value], indent: usize, out: &mut String) {
    for v in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match v {
            Value::Object(m) if !m.is_empty() => {
                out.push(' ');
                write_map(m, indent + 2, true, out);
            }
            Value::Array(a) if !a.is_empty() => {
                out.push('\n');
                write_seq(a, indent + 2, out);
            }
            v => {
                out.push(' ');
                out.push_str(&scalar(v));
                out.push('\n');
            }
        }
    }
}

fn key(k: &str) -> String {
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if plain && !reserved(k) {
        k.to_owned()
    } else {
        quote(k)
    }
}

fn scalar(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) if plain_ok(s) => s.clone(),
        Value::String(s) => quote(s),
        Value::Array(_) => "[]".into(),
        Value::Object(_) => "{}".into(),
    }
}

/// Words YAML 1.1 or 1.2 parsers read as booleans or null.
fn reserved(s: &str) -> bool {
    matches!(
        s.to_ascii_lowercase().as_str(),
        "true" | "false" | "yes" | "no" | "on" | "off" | "y" | "n" | "null" | "~"
    )
}

/// A string that every YAML parser reads back as itself when written plain: it starts with
/// a letter, `/` or `_` (so no number, date, indicator or special float), holds only letters,
/// digits, spaces and `_./:-`, has no `: ` and does not end in `:` or a space, and is not a
/// boolean or null word.
fn plain_ok(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '/' || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, ' ' | '_' | '.' | '/' | ':' | '-'))
        && !s.contains(": ")
        && !s.ends_with([':', ' '])
        && !reserved(s)
}

/// A double-quoted YAML scalar. Every non-printable character is escaped, including the
/// Unicode line separators that YAML 1.1 treats as line breaks.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || matches!(c, '\u{2028}' | '\u{2029}' | '\u{feff}') => {
                out.push_str(&format!("\\u{:04X}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn config(extra: &str) -> Config {
        let text = format!(
            "[server]\npublic_url = \"https://gw.example.com\"\n\
             [slack]\nclient_id = \"1.2\"\nclient_secret = \"s\"\nsigning_secret = \"x\"\n{extra}"
        );
        Config::from_toml(&text, Path::new("/etc/gateway.toml"), &|_| None).unwrap()
    }

    fn config_err(extra: &str) -> String {
        let text = format!(
            "[server]\npublic_url = \"https://gw.example.com\"\n\
             [slack]\nclient_id = \"1.2\"\nclient_secret = \"s\"\nsigning_secret = \"x\"\n{extra}"
        );
        Config::from_toml(&text, Path::new("/etc/gateway.toml"), &|_| None)
            .unwrap_err()
            .to_string()
    }

    /// Parses YAML with an independent parser, into JSON for comparison.
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
                        .map(|(k, v)| (k.as_str().expect("string key").to_owned(), conv(v)))
                        .collect(),
                ),
                other => panic!("unexpected YAML node {other:?}"),
            }
        }
        let docs = YamlLoader::load_from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        assert_eq!(docs.len(), 1);
        conv(&docs[0])
    }

    #[test]
    fn a_full_config_gives_every_section() {
        let c = config(
            "[oauth]\nscopes = [\"app_mentions:read\", \"chat:write\", \"commands\"]\nuser_scopes = [\"search:read\"]\n\
             [signin]\nenabled = true\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n\
             [upstream]\nslack_paths = [\"/slack/events\", \"/slack/other\"]\n\
             [app]\nname = \"Deploy Bot\"\ndescription = \"Ships things.\"\ntoken_rotation = true\norg_deploy = true\n\
             [[app.commands]]\ncommand = \"/deploy\"\ndescription = \"Deploy a service\"\nusage_hint = \"[service] [env]\"\n\
             [[app.commands]]\ncommand = \"/rollback\"\ndescription = \"Roll back\"\n",
        );
        let m = manifest(&c);
        let url = "https://gw.example.com/slack/events";
        assert_eq!(
            m,
            json!({
                "_metadata": {"major_version": 1, "minor_version": 1},
                "display_information": {"name": "Deploy Bot", "description": "Ships things."},
                "features": {
                    "bot_user": {"display_name": "Deploy Bot", "always_online": false},
                    "slash_commands": [
                        {"command": "/deploy", "description": "Deploy a service", "usage_hint": "[service] [env]", "url": url, "should_escape": false},
                        {"command": "/rollback", "description": "Roll back", "url": url, "should_escape": false},
                    ],
                },
                "oauth_config": {
                    "redirect_urls": [
                        "https://gw.example.com/slack/oauth_redirect",
                        "https://gw.example.com/slack/login/callback",
                    ],
                    "scopes": {
                        "bot": ["app_mentions:read", "chat:write", "commands"],
                        "user": ["search:read", "openid", "email", "profile"],
                    },
                },
                "settings": {
                    "event_subscriptions": {
                        "request_url": url,
                        "bot_events": ["app_mention", "app_uninstalled", "tokens_revoked"],
                    },
                    "interactivity": {"is_enabled": true, "request_url": url, "message_menu_options_url": url},
                    "org_deploy_enabled": true,
                    "socket_mode_enabled": false,
                    "token_rotation_enabled": true,
                },
            })
        );
        assert!(warnings(&c).is_empty(), "{:?}", warnings(&c));
        assert_eq!(parse_yaml(&to_yaml(&m)), m);
    }

    #[test]
    fn defaults_and_derived_events() {
        let c = config("[oauth]\nscopes = [\"chat:write\"]\n");
        let m = manifest(&c);
        assert_eq!(
            m["display_information"],
            json!({"name": "slack-gateway app"})
        );
        assert_eq!(
            m["settings"]["event_subscriptions"]["bot_events"],
            json!(["app_uninstalled", "tokens_revoked"])
        );
        assert_eq!(m["settings"]["token_rotation_enabled"], json!(false));
        assert_eq!(m["settings"]["org_deploy_enabled"], json!(false));
        assert!(m["features"].get("slash_commands").is_none());
        assert_eq!(
            m["oauth_config"]["redirect_urls"],
            json!(["https://gw.example.com/slack/oauth_redirect"])
        );
        // Explicit events are kept in order; the lifecycle events are added once.
        let c = config(
            "[oauth]\nscopes = [\"app_mentions:read\"]\n[app]\nbot_events = [\"message.im\", \"tokens_revoked\"]\n",
        );
        assert_eq!(
            bot_events(&c),
            ["message.im", "tokens_revoked", "app_uninstalled"]
        );
    }

    #[test]
    fn user_scopes_only_and_signin_only() {
        let c = config("[oauth]\nuser_scopes = [\"search:read\"]\n");
        let m = manifest(&c);
        assert!(m.get("features").is_none(), "{m}");
        assert!(m["settings"].get("event_subscriptions").is_none());
        assert_eq!(
            m["oauth_config"]["scopes"],
            json!({"user": ["search:read"]})
        );
        assert_eq!(warnings(&c).len(), 1);

        let c = config(
            "[signin]\nenabled = true\ncookie_secret = \"0123456789abcdef0123456789abcdef\"\n",
        );
        let m = manifest(&c);
        assert_eq!(
            m["oauth_config"],
            json!({
                "redirect_urls": ["https://gw.example.com/slack/login/callback"],
                "scopes": {"user": ["openid", "email", "profile"]},
            })
        );
    }

    #[test]
    fn http_public_url_is_warned_about() {
        let text = "[slack]\nsigning_secret = \"x\"\n[oauth]\nscopes = [\"chat:write\"]\n";
        let c = Config::from_toml(text, Path::new("/g.toml"), &|_| None).unwrap();
        let w = warnings(&c);
        assert!(w[0].contains("https://"), "{w:?}");
        assert_eq!(
            manifest(&c)["settings"]["interactivity"]["request_url"],
            json!("http://127.0.0.1:3000/slack/events")
        );
    }

    #[test]
    fn app_keys_are_validated_with_the_key_and_line() {
        let scopes = "[oauth]\nscopes = [\"commands\"]\n";
        for (extra, key, line) in [
            (
                "[app]\nname = \"\"\n".to_string(),
                "app.name",
                Some(10),
            ),
            (
                format!("[app]\nname = \"{}\"\n", "x".repeat(36)),
                "app.name",
                Some(10),
            ),
            (
                format!("[app]\ndescription = \"{}\"\n", "x".repeat(141)),
                "app.description",
                Some(10),
            ),
            (
                "[app]\nbot_events = [\"App Mention\"]\n".to_string(),
                "app.bot_events",
                Some(10),
            ),
            (
                "[[app.commands]]\ncommand = \"deploy\"\ndescription = \"d\"\n".to_string(),
                "app.commands.command",
                Some(10),
            ),
            (
                "[[app.commands]]\ncommand = \"/de ploy\"\ndescription = \"d\"\n".to_string(),
                "app.commands.command",
                Some(10),
            ),
            (
                format!("[[app.commands]]\ncommand = \"/{}\"\ndescription = \"d\"\n", "x".repeat(32)),
                "app.commands.command",
                Some(10),
            ),
            (
                "[[app.commands]]\ndescription = \"d\"\n".to_string(),
                "app.commands.command",
                None,
            ),
            (
                "[[app.commands]]\ncommand = \"/a\"\n".to_string(),
                "app.commands.description",
                None,
            ),
            (
                "[[app.commands]]\ncommand = \"/a\"\ndescription = \"d\"\n[[app.commands]]\ncommand = \"/A\"\ndescription = \"e\"\n".to_string(),
                "app.commands.command",
                Some(13),
            ),
            (
                "[app]\nsurprise = true\n".to_string(),
                "surprise",
                None,
            ),
        ] {
            let e = config_err(&format!("{scopes}{extra}"));
            assert!(e.contains(key), "{extra}: {e}");
            if let Some(line) = line {
                assert!(e.contains(&format!(":{line}:")), "{extra}: {e}");
            }
        }
        // Commands need the `commands` scope and a Slack path.
        let e = config_err(
            "[oauth]\nscopes = [\"chat:write\"]\n[[app.commands]]\ncommand = \"/a\"\ndescription = \"d\"\n",
        );
        assert!(
            e.contains("app.commands") && e.contains("`commands` bot scope"),
            "{e}"
        );
        let e = config_err(
            "[oauth]\nscopes = [\"commands\"]\n[upstream]\nslack_paths = []\n[[app.commands]]\ncommand = \"/a\"\ndescription = \"d\"\n",
        );
        assert!(e.contains("upstream.slack_paths"), "{e}");
        // Bot events need a bot user.
        let e = config_err(
            "[oauth]\nuser_scopes = [\"search:read\"]\n[app]\nbot_events = [\"app_mention\"]\n",
        );
        assert!(
            e.contains("app.bot_events") && e.contains("oauth.scopes"),
            "{e}"
        );
    }

    #[test]
    fn yaml_quotes_what_would_read_back_differently() {
        let tricky = [
            "yes",
            "No",
            "null",
            "~",
            "true",
            "123",
            "1.5",
            "0x1F",
            "2001-12-14",
            "1:20",
            ".inf",
            "- dash",
            "a: b",
            "trailing:",
            "#hash",
            "a #b",
            "'single'",
            "\"double\"",
            "[x]",
            "{x}",
            "*alias",
            "&anchor",
            "!tag",
            "%dir",
            "@at",
            "`tick`",
            "|",
            ">",
            "",
            " lead",
            "trail ",
            "line\nbreak",
            "tab\there",
            "nul\u{0}",
            "nel\u{85}",
            "ls\u{2028}",
            "bom\u{feff}",
            "naïve ünïcode",
            "emoji 🚀",
            "back\\slash",
            "?q",
            ",comma",
            "a,b",
        ];
        let v = json!({
            "strings": tricky.as_slice(),
            "nested": [{"k": "v", "list": ["a", {"deep": true}], "empty": [], "obj": {}}],
            "number": 3,
            "weird key": "x",
            "true": "key that is a boolean word",
        });
        let yaml = to_yaml(&v);
        assert_eq!(parse_yaml(&yaml), v, "{yaml}");
        // Ordinary manifest values stay plain and readable.
        for s in [
            "app_mention",
            "message.im",
            "/deploy",
            "https://gw.example.com/slack/events",
            "Deploy Bot",
            "chat:write",
        ] {
            assert!(plain_ok(s), "{s}");
        }
    }
}
