//! The container setup, short of building the image (there is no Docker engine here; CI lints
//! the Dockerfiles with hadolint): `slack-gateway healthcheck`, the image's config under the
//! environment docker-compose.yml gives it, and the files agreeing with each other.

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

fn check_with_env(env: &BTreeMap<String, String>) -> std::process::Output {
    check_config_with_env("docker/gateway.toml", env)
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

#[test]
fn the_image_config_loads_with_what_compose_provides() {
    let c = compose();
    let gateway = &c["services"]["gateway"];
    let secrets = BTreeMap::from([
        ("SLACK_CLIENT_ID", "111.222"),
        ("SLACK_CLIENT_SECRET", "compose-client-secret"),
        ("SLACK_SIGNING_SECRET", "compose-signing-secret"),
        ("GATEWAY_ADMIN_TOKEN", "compose-admin-token"),
        (
            "GATEWAY_ENCRYPTION_KEY",
            "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
        ),
    ]);
    let (env, missing) = environment(gateway, &secrets);
    assert!(missing.is_empty(), "{missing:?}");
    let out = check_with_env(&env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let effective = String::from_utf8(out.stdout).unwrap();
    for want in [
        "listen = \"0.0.0.0:3000\"",
        "admin_listen = \"0.0.0.0:9090\"",
        "public_url = \"http://localhost:3000/\"",
        "url = \"http://app:8080/\"",
        "path = \"/data\"",
    ] {
        assert!(effective.contains(want), "{want} in\n{effective}");
    }
    for (name, secret) in &secrets {
        if *name != "SLACK_CLIENT_ID" {
            assert!(!effective.contains(secret), "{name} is redacted");
        }
    }
    assert!(
        out.stderr.is_empty() || !String::from_utf8_lossy(&out.stderr).contains("placeholder"),
        "no placeholder secrets in the image config"
    );

    // Compose refuses to start without the secrets, naming each; so does the gateway.
    let (_, mut missing) = environment(gateway, &BTreeMap::new());
    missing.sort();
    assert_eq!(
        missing,
        [
            "GATEWAY_ADMIN_TOKEN",
            "GATEWAY_ENCRYPTION_KEY",
            "SLACK_CLIENT_ID",
            "SLACK_CLIENT_SECRET",
            "SLACK_SIGNING_SECRET"
        ]
    );
    for name in missing {
        let mut partial = env.clone();
        partial.remove(&name);
        let out = check_with_env(&partial);
        assert_eq!(out.status.code(), Some(1), "without {name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains(&format!("environment variable {name} is not set")),
            "{stderr}"
        );
    }
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
