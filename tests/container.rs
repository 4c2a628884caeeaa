//! The container setup, short of building the image (there is no Docker engine here; CI lints
//! the Dockerfiles with hadolint): `slack-gateway healthcheck`, the image's built-in config on
//! its own, the config docker-compose.yml mounts under the environment it gives it (the Python
//! example app holds no token and calls Slack through the gateway's egress, on the compose
//! network with a token), the example app's egress client against that config, and the files
//! agreeing with each other.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use support::binary::*;
use yaml_rust2::{Yaml, YamlLoader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

fn read(rel: &str) -> String {
    std::fs::read_to_string(Path::new(ROOT).join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn compose() -> Yaml {
    compose_at("docker-compose.yml")
}

fn compose_at(rel: &str) -> Yaml {
    let docs =
        YamlLoader::load_from_str(&read(rel)).unwrap_or_else(|e| panic!("{rel} is not YAML: {e}"));
    assert_eq!(docs.len(), 1);
    docs.into_iter().next().unwrap()
}

fn strings(y: &Yaml) -> Vec<String> {
    y.as_vec()
        .map(|v| {
            v.iter()
                .map(|i| i.as_str().expect("a string").to_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// A service's `environment` map, with compose's `${NAME:?message}`, `${NAME:-default}` and
/// `${NAME}` resolved from `given`. Returns the names compose would refuse to start without.
fn environment(
    service: &Yaml,
    given: &BTreeMap<&str, &str>,
) -> (BTreeMap<String, String>, Vec<String>) {
    let mut out = BTreeMap::new();
    let mut missing = Vec::new();
    let env = service["environment"]
        .as_hash()
        .expect("environment is a map");
    for (k, v) in env {
        let key = k.as_str().unwrap().to_owned();
        let raw = match v {
            Yaml::String(s) => s.clone(),
            Yaml::Integer(i) => i.to_string(),
            other => panic!("{key}: {other:?}"),
        };
        let mut value = String::new();
        let mut rest = raw.as_str();
        while let Some(i) = rest.find("${") {
            value.push_str(&rest[..i]);
            let end = rest[i..].find('}').expect("closed ${") + i;
            let expr = &rest[i + 2..end];
            let (name, op) = match expr.find([':', '?', '-']) {
                Some(j) => (&expr[..j], &expr[j..]),
                None => (expr, ""),
            };
            match (given.get(name), op) {
                (Some(v), _) => value.push_str(v),
                (None, op) if op.starts_with(":-") => value.push_str(&op[2..]),
                (None, op) if op.starts_with(":?") => missing.push(name.to_owned()),
                (None, _) => panic!("{key}: ${{{name}}} has no default and no error message"),
            }
            rest = &rest[end + 1..];
        }
        value.push_str(rest);
        out.insert(key, value);
    }
    (out, missing)
}

fn check_config_with_env(rel: &str, env: &BTreeMap<String, String>) -> std::process::Output {
    Command::new(BIN)
        .arg("check")
        .env_clear()
        .envs(env)
        .env("SLACK_GATEWAY_CONFIG", Path::new(ROOT).join(rel))
        .output()
        .unwrap()
}

/// The replicas example (README, "Running several replicas"): both gateways get what their
/// config needs from compose, mount the config compose names, and `check` shows the
/// database without its password.
#[test]
fn the_replicas_example_config_loads_with_what_its_compose_provides() {
    let c = compose_at("examples/replicas/docker-compose.yml");
    let secrets = BTreeMap::from([
        ("SLACK_CLIENT_ID", "111.222"),
        ("SLACK_CLIENT_SECRET", "compose-client-secret"),
        ("SLACK_SIGNING_SECRET", "compose-signing-secret"),
        ("GATEWAY_ADMIN_TOKEN", "compose-admin-token"),
        (
            "GATEWAY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("POSTGRES_PASSWORD", "compose-db-password-3f9a"),
    ]);
    for name in ["gateway-a", "gateway-b"] {
        let gateway = &c["services"][name];
        let (mut env, missing) = environment(gateway, &secrets);
        assert!(missing.is_empty(), "{name}: {missing:?}");
        let config = env
            .remove("SLACK_GATEWAY_CONFIG")
            .expect("names its config");
        assert!(
            strings(&gateway["volumes"])
                .iter()
                .any(|v| v == &format!("./gateway.toml:{config}:ro")),
            "{name} mounts the config it names"
        );
        let out = check_config_with_env("examples/replicas/gateway.toml", &env);
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert_eq!(out.status.code(), Some(0), "{stderr}");
        assert!(stdout.contains("backend = \"postgres\""), "{stdout}");
        assert!(
            stdout.contains("postgres://gateway@postgres:5432/gateway"),
            "{stdout}"
        );
        for (key, secret) in &secrets {
            if *key != "SLACK_CLIENT_ID" {
                assert!(
                    !stdout.contains(secret) && !stderr.contains(secret),
                    "{key} shown"
                );
            }
        }
    }
    // The database the gateways reach is the one compose runs, with the same password.
    let pg = environment(&c["services"]["postgres"], &secrets).0;
    assert_eq!(pg["POSTGRES_PASSWORD"], "compose-db-password-3f9a");
    assert_eq!(pg["POSTGRES_USER"], "gateway");
}

/// What a user exports before `docker compose up` (docker-compose.yml's header), as this
/// file's tests give it.
fn compose_secrets() -> BTreeMap<&'static str, &'static str> {
    BTreeMap::from([
        ("SLACK_CLIENT_ID", "111.222"),
        ("SLACK_CLIENT_SECRET", "compose-client-secret"),
        ("SLACK_SIGNING_SECRET", "compose-signing-secret"),
        ("GATEWAY_ADMIN_TOKEN", "compose-admin-token"),
        (
            "GATEWAY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
        ("GATEWAY_EGRESS_TOKEN", "compose-egress-token-7c1e"),
    ])
}

/// The compose gateway's environment (from [`compose_secrets`]) without
/// `SLACK_GATEWAY_CONFIG`, and the file in this repository that compose mounts where that
/// variable points.
fn compose_gateway() -> (BTreeMap<String, String>, String) {
    let c = compose();
    let gateway = &c["services"]["gateway"];
    let (mut env, missing) = environment(gateway, &compose_secrets());
    assert!(missing.is_empty(), "{missing:?}");
    let config = env
        .remove("SLACK_GATEWAY_CONFIG")
        .expect("the compose gateway names its config with SLACK_GATEWAY_CONFIG");
    let host = strings(&gateway["volumes"])
        .iter()
        .find_map(|v| {
            let mut parts = v.split(':');
            let (host, target) = (parts.next()?, parts.next()?);
            (target == config && parts.all(|o| o == "ro")).then(|| host.to_owned())
        })
        .unwrap_or_else(|| panic!("the gateway mounts {config}, read-only, from this repository"));
    let rel = host
        .strip_prefix("./")
        .unwrap_or_else(|| panic!("{host} is relative to docker-compose.yml"));
    assert!(Path::new(ROOT).join(rel).is_file(), "{rel}");
    (env, rel.to_owned())
}

/// `slack-gateway check` on `rel` under `env`: the effective config, parsed.
fn effective(rel: &str, env: &BTreeMap<String, String>) -> (String, toml::Table) {
    let out = check_config_with_env(rel, env);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{rel}: {stderr}");
    assert!(!stderr.contains("placeholder"), "{rel}: {stderr}");
    let text = String::from_utf8(out.stdout).unwrap();
    let table = text
        .parse()
        .unwrap_or_else(|e| panic!("check printed no TOML: {e}\n{text}"));
    (text, table)
}

fn get<'a>(t: &'a toml::Table, section: &str, key: &str) -> &'a toml::Value {
    t.get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("{section}.{key} in the effective config"))
}

/// The gateway compose runs: its config, as mounted, loads with what compose gives it, forwards
/// no token to the app, and serves the Web API egress on the compose network behind a token
/// from the environment. Compose and the gateway both refuse to start without a secret.
#[test]
fn the_compose_gateway_config_loads_with_what_compose_provides() {
    let (env, rel) = compose_gateway();
    assert_ne!(
        rel, "docker/gateway.toml",
        "the image's own config forwards tokens and has no egress: the app needs both changed"
    );
    let (text, t) = effective(&rel, &env);
    for want in [
        "listen = \"0.0.0.0:3000\"",
        "admin_listen = \"0.0.0.0:9090\"",
        "public_url = \"http://localhost:3000/\"",
        "url = \"http://app:8080/\"",
        "path = \"/data\"",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    // The app holds no token: none is forwarded, and it calls Slack through the egress.
    assert_eq!(get(&t, "upstream", "inject_tokens").as_bool(), Some(false));
    assert_eq!(
        get(&t, "upstream", "inject_user_token").as_bool(),
        Some(false)
    );
    assert_eq!(get(&t, "egress", "enabled").as_bool(), Some(true));
    // Reachable from the app's container, so not loopback, and so behind egress.token,
    // which comes from the environment.
    assert_eq!(get(&t, "egress", "listen").as_str(), Some("0.0.0.0:3001"));
    assert_eq!(get(&t, "egress", "token").as_str(), Some("<redacted>"));
    let raw: toml::Table = read(&rel).parse().unwrap();
    assert_eq!(
        raw["egress"]["token"].as_str(),
        Some("${GATEWAY_EGRESS_TOKEN}"),
        "egress.token comes from the environment"
    );
    for (name, secret) in &compose_secrets() {
        if *name != "SLACK_CLIENT_ID" {
            assert!(!text.contains(secret), "{name} is redacted");
        }
    }

    // Compose refuses to start without the secrets, naming each; so does the gateway.
    let c = compose();
    let (_, mut missing) = environment(&c["services"]["gateway"], &BTreeMap::new());
    missing.sort();
    assert_eq!(
        missing,
        [
            "GATEWAY_ADMIN_TOKEN",
            "GATEWAY_EGRESS_TOKEN",
            "GATEWAY_ENCRYPTION_KEY",
            "SLACK_CLIENT_ID",
            "SLACK_CLIENT_SECRET",
            "SLACK_SIGNING_SECRET"
        ]
    );
    for name in missing {
        let mut partial = env.clone();
        partial.remove(&name);
        let out = check_config_with_env(&rel, &partial);
        assert_eq!(out.status.code(), Some(1), "without {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("environment variable {name} is not set")),
            "{stderr}"
        );
    }
}

/// The image's built-in config, for those who run the image alone (the Dockerfile's `docker
/// run` line): no development placeholders, tokens forwarded as usual, no egress.
#[test]
fn the_image_config_loads_on_its_own() {
    let secrets = compose_secrets();
    let mut env: BTreeMap<String, String> = secrets
        .iter()
        .filter(|(k, _)| **k != "GATEWAY_EGRESS_TOKEN")
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    env.insert("GATEWAY_PUBLIC_URL".into(), "https://gw.example.com".into());
    let (text, t) = effective("docker/gateway.toml", &env);
    for want in [
        "listen = \"0.0.0.0:3000\"",
        "admin_listen = \"0.0.0.0:9090\"",
        "public_url = \"https://gw.example.com/\"",
        "url = \"http://app:8080/\"",
        "path = \"/data\"",
    ] {
        assert!(text.contains(want), "{want} in\n{text}");
    }
    assert_eq!(get(&t, "upstream", "inject_tokens").as_bool(), Some(true));
    assert_eq!(get(&t, "egress", "enabled").as_bool(), Some(false));
    for (name, secret) in &secrets {
        if *name != "SLACK_CLIENT_ID" {
            assert!(!text.contains(secret), "{name} is redacted");
        }
    }
    for name in [
        "GATEWAY_ADMIN_TOKEN",
        "GATEWAY_ENCRYPTION_KEY",
        "GATEWAY_PUBLIC_URL",
        "SLACK_CLIENT_ID",
        "SLACK_CLIENT_SECRET",
        "SLACK_SIGNING_SECRET",
    ] {
        let mut partial = env.clone();
        partial.remove(name);
        let out = check_config_with_env("docker/gateway.toml", &partial);
        assert_eq!(out.status.code(), Some(1), "without {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("environment variable {name} is not set")),
            "{stderr}"
        );
    }
}

/// The app compose runs calls Slack at the egress the compose gateway serves, by the
/// gateway's service name, with the same token; the egress port is on the compose network
/// only, never published on the host.
#[test]
fn the_compose_app_is_pointed_at_the_gateways_egress() {
    let c = compose();
    let (gateway_env, rel) = compose_gateway();
    let (_, t) = effective(&rel, &gateway_env);
    let listen: std::net::SocketAddr = get(&t, "egress", "listen")
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let port = listen.port();

    let secrets = compose_secrets();
    let (app_env, missing) = environment(&c["services"]["app"], &secrets);
    assert!(missing.is_empty(), "{missing:?}");
    assert!(
        c["services"]["gateway"].as_hash().is_some(),
        "the egress URL names the gateway service"
    );
    assert_eq!(
        app_env.get("SLACK_EGRESS_URL").map(String::as_str),
        Some(format!("http://gateway:{port}/api/").as_str()),
        "the app's default, 127.0.0.1:3001, is its own container"
    );
    assert_eq!(
        app_env.get("GATEWAY_EGRESS_TOKEN").map(String::as_str),
        Some(secrets["GATEWAY_EGRESS_TOKEN"]),
        "the app sends the token the gateway requires"
    );
    assert_eq!(
        gateway_env["GATEWAY_EGRESS_TOKEN"],
        secrets["GATEWAY_EGRESS_TOKEN"]
    );
    let (_, app_missing) = environment(&c["services"]["app"], &BTreeMap::new());
    assert_eq!(app_missing, ["GATEWAY_EGRESS_TOKEN"], "required by compose");
    // No token for Slack in the app's environment: the gateway holds them all.
    assert!(
        !app_env.keys().any(|k| k.contains("SLACK_BOT_TOKEN")
            || k == "SLACK_CLIENT_SECRET"
            || k == "GATEWAY_ENCRYPTION_KEY"),
        "{app_env:?}"
    );

    // Never published: anyone who reaches the egress can call Slack as any workspace (with
    // the token), so only the compose network reaches it.
    let published = strings(&c["services"]["gateway"]["ports"]);
    for p in &published {
        let container = p.rsplit(':').next().unwrap();
        assert_ne!(container, port.to_string(), "{p} publishes the egress");
    }
    let exposed = strings(&c["services"]["gateway"]["expose"]);
    assert!(exposed.contains(&port.to_string()), "{exposed:?}");

    // The app reads those variables and sends the token as the egress expects it.
    let app_py = read("examples/python/app.py");
    for want in [
        "os.environ.get(\"SLACK_EGRESS_URL\"",
        "os.environ.get(\"GATEWAY_EGRESS_TOKEN\")",
        "\"Proxy-Authorization\": f\"Bearer {token}\"",
    ] {
        assert!(app_py.contains(want), "app.py: {want}");
    }
}

/// The compose config run for real (its ports and store moved for the test, the rest as
/// shipped) with compose's environment, and the example app's own egress client, with the
/// app's compose environment, calling it: the egress answers the app with a Slack-shaped
/// refusal (nothing is installed), and refuses a caller without the token.
#[tokio::test]
async fn the_compose_app_reaches_the_compose_egress() {
    let (env, rel) = compose_gateway();
    let dir = tempfile::tempdir().unwrap();
    let mut table: toml::Table = read(&rel).parse().unwrap();
    let shipped: std::net::SocketAddr =
        table["egress"]["listen"].as_str().unwrap().parse().unwrap();
    let (public, admin, egress) = (free_port(), free_port(), free_port());
    let mut set = |section: &str, key: &str, value: String| {
        table[section]
            .as_table_mut()
            .unwrap()
            .insert(key.into(), toml::Value::String(value));
    };
    set("server", "listen", format!("127.0.0.1:{public}"));
    set("server", "admin_listen", format!("127.0.0.1:{admin}"));
    // Still off loopback, as in the container, so the token is required.
    set("egress", "listen", format!("0.0.0.0:{egress}"));
    set(
        "storage",
        "path",
        dir.path().join("data").display().to_string(),
    );
    let config = dir.path().join("compose.toml");
    std::fs::write(&config, toml::to_string(&table).unwrap()).unwrap();
    let mut command = Command::new(BIN);
    command
        .arg("--config")
        .arg(&config)
        .env_clear()
        .envs(&env)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    let gw = Running::spawn(command, dir.path());
    gw.wait_ready(admin).await;

    let c = compose();
    let (mut app_env, _) = environment(&c["services"]["app"], &compose_secrets());
    let url = app_env["SLACK_EGRESS_URL"].replace(
        &format!("//gateway:{}/", shipped.port()),
        &format!("//127.0.0.1:{egress}/"),
    );
    assert_ne!(url, app_env["SLACK_EGRESS_URL"], "rewritten for the test");
    app_env.insert("SLACK_EGRESS_URL".into(), url);
    let script = r#"
import json, os
import app
from slack_sdk.errors import SlackApiError

def call():
    try:
        app.egress_client({"team_id": "T0COMPOSE"}).auth_test()
        return {"ok": True}
    except SlackApiError as e:
        return {"status": e.response.status_code, "error": e.response["error"]}

with_token = call()
os.environ.pop("GATEWAY_EGRESS_TOKEN")
print(json.dumps({"with_token": with_token, "without": call()}))
"#;
    let out = Command::new(support::python::venv_python())
        .args(["-c", script])
        .current_dir(Path::new(ROOT).join("examples/python"))
        .env_clear()
        .envs(&app_env)
        .env("NO_PROXY", "*")
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}\ngateway:\n{}",
        String::from_utf8_lossy(&out.stderr),
        gw.stderr()
    );
    let got: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)));
    assert_eq!(
        got["with_token"],
        serde_json::json!({"status": 404, "error": "not_installed"}),
        "reached the egress with the token; T0COMPOSE is not installed"
    );
    assert_eq!(
        got["without"],
        serde_json::json!({"status": 401, "error": "proxy_auth_required"})
    );
}

#[test]
fn compose_dockerfiles_and_config_agree() {
    let c = compose();
    let gateway = &c["services"]["gateway"];
    let app = &c["services"]["app"];
    assert_eq!(gateway["build"].as_str(), Some("."));
    assert_eq!(app["build"].as_str(), Some("examples/python"));
    assert!(
        Path::new(ROOT).join("examples/python/Dockerfile").is_file()
            && Path::new(ROOT)
                .join("examples/python/requirements.txt")
                .is_file()
            && Path::new(ROOT).join("examples/python/app.py").is_file()
    );
    // The gateway's ports are published (to loopback); the app's never are: it trusts the
    // gateway's headers, so only the gateway may reach it.
    let ports = strings(&gateway["ports"]);
    assert!(ports.iter().any(|p| p.ends_with(":3000:3000")), "{ports:?}");
    assert!(ports.iter().any(|p| p.ends_with(":9090:9090")), "{ports:?}");
    assert!(
        app["ports"].is_badvalue(),
        "the app must not publish a port"
    );
    assert!(strings(&gateway["volumes"]).contains(&"gateway-data:/data".to_owned()));
    assert!(
        c["volumes"]["gateway-data"].as_hash().is_some() || c["volumes"]["gateway-data"].is_null()
    );
    // The gateway forwards to the app's address on the compose network.
    let (env, _) = environment(gateway, &BTreeMap::new());
    let (app_env, _) = environment(app, &BTreeMap::new());
    assert_eq!(app_env["HOST"], "0.0.0.0");
    assert_eq!(
        env["GATEWAY_UPSTREAM_URL"],
        format!("http://app:{}", app_env["PORT"])
    );

    let dockerfile = read("Dockerfile");
    for want in [
        "FROM rust:1-bookworm AS build",
        "FROM debian:bookworm-slim",
        "ca-certificates",
        "COPY docker/gateway.toml /etc/slack-gateway/gateway.toml",
        "ENV SLACK_GATEWAY_CONFIG=/etc/slack-gateway/gateway.toml",
        "VOLUME [\"/data\"]",
        "EXPOSE 3000 9090",
        "USER 10001:10001",
        "CMD [\"slack-gateway\", \"healthcheck\"",
        "ENTRYPOINT [\"slack-gateway\"]",
    ] {
        assert!(dockerfile.contains(want), "Dockerfile: {want}");
    }
    // What the Dockerfile copies is in the build context.
    let ignore = read(".dockerignore");
    for kept in ["!Cargo.toml", "!Cargo.lock", "!src/", "!docker/"] {
        assert!(ignore.lines().any(|l| l == kept), ".dockerignore: {kept}");
    }
    let config = read("docker/gateway.toml");
    assert!(config.contains("listen = \"0.0.0.0:3000\""));
    assert!(config.contains("admin_listen = \"0.0.0.0:9090\""));
    assert!(config.contains("path = \"/data\""));
}

#[tokio::test]
async fn healthcheck_exits_zero_on_a_live_gateway_and_one_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, admin) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    let healthcheck = |extra: &[&str]| {
        Command::new(BIN)
            .arg("healthcheck")
            .arg("--config")
            .arg(&path)
            .args(extra)
            .output()
            .unwrap()
    };
    let down = healthcheck(&[]);
    assert_eq!(down.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&down.stderr);
    assert!(
        stderr.contains(&format!("http://127.0.0.1:{admin}/healthz")),
        "{stderr}"
    );

    let gw = Running::start(&path, dir.path());
    gw.wait_ready(admin).await;
    let up = healthcheck(&[]);
    assert_eq!(
        up.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&up.stderr)
    );
    assert!(up.stdout.is_empty() && up.stderr.is_empty());
    let not_found = healthcheck(&["--url", &format!("http://127.0.0.1:{admin}/nope")]);
    assert_eq!(not_found.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&not_found.stderr).contains("404"));
    let ready = healthcheck(&["--url", &format!("http://127.0.0.1:{admin}/readyz")]);
    assert_eq!(ready.status.code(), Some(0));
    drop(gw);
    assert_eq!(healthcheck(&[]).status.code(), Some(1));
}
