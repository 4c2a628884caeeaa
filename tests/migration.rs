//! `slack-gateway installations import --from slack-sdk-file|bolt-js-file DIR`: the real
//! binary moves an SDK file store into the gateway's store, and `export` gives it back as
//! `slack_sdk` JSON lines.

mod support;

use std::path::Path;
use std::process::Command;

use serde_json::{json, Value};
use support::binary::*;

fn write(dir: &Path, rel: &str, v: &Value) {
    let p = dir.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, v.to_string()).unwrap();
}

fn gateway(config: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap()
}

fn exported(config: &Path) -> Vec<Value> {
    let out = gateway(config, &["installations", "export", "-"]);
    assert_eq!(out.status.code(), Some(0));
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[test]
fn a_slack_sdk_file_store_is_imported_with_the_current_bot() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    // FileInstallationStore(base_dir=sdk, client_id="111.222"), as slack_sdk writes it.
    let sdk = dir.path().join("sdk");
    let app = sdk.join("111.222");
    let installer = |user: &str, bot: &str, user_token: Value, at: f64| {
        json!({
            "app_id": "A1", "enterprise_id": null, "enterprise_name": null, "enterprise_url": null,
            "team_id": "T1", "team_name": "Team 1", "bot_token": bot, "bot_id": "B1", "bot_user_id": "UB1",
            "bot_scopes": ["chat:write", "commands"], "bot_refresh_token": null, "bot_token_expires_at": null,
            "user_id": user, "user_token": user_token, "user_scopes": ["search:read"],
            "user_refresh_token": null, "user_token_expires_at": null, "incoming_webhook_url": null,
            "incoming_webhook_channel": null, "incoming_webhook_channel_id": null,
            "incoming_webhook_configuration_url": null, "is_enterprise_install": false,
            "token_type": "bot", "installed_at": at, "custom_values": {}
        })
    };
    write(
        &app,
        "none-T1/installer-U1-latest",
        &installer("U1", "xoxb-old", json!("xoxp-u1"), 1.5),
    );
    write(
        &app,
        "none-T1/installer-latest",
        &installer("U1", "xoxb-old", json!("xoxp-u1"), 1.5),
    );
    write(
        &app,
        "none-T1/bot-latest",
        &json!({
            "app_id": "A1", "enterprise_id": null, "enterprise_name": null, "team_id": "T1",
            "team_name": "Team 1", "bot_token": "xoxe.xoxb-rotated", "bot_id": "B1", "bot_user_id": "UB1",
            "bot_scopes": ["chat:write", "commands"], "bot_refresh_token": "xoxe-1-r",
            "bot_token_expires_at": 1900000000, "is_enterprise_install": false, "installed_at": 2.5,
            "custom_values": {}
        }),
    );
    std::fs::write(app.join("none-T1/bot-2.5"), "history: skipped").unwrap();

    // The base folder or the client-id folder: both work.
    for from in [&sdk, &app] {
        std::fs::remove_dir_all(dir.path().join("data")).ok();
        let out = gateway(
            &config,
            &[
                "installations",
                "import",
                "--from",
                "slack-sdk-file",
                from.to_str().unwrap(),
            ],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stderr).contains("imported 1 installation(s)"));
        let lines = exported(&config);
        assert_eq!(lines.len(), 1);
        assert_eq!(lines[0]["bot_token"], "xoxe.xoxb-rotated");
        assert_eq!(lines[0]["bot_refresh_token"], "xoxe-1-r");
        assert_eq!(lines[0]["bot_token_expires_at"], 1900000000);
        assert_eq!(lines[0]["user_token"], "xoxp-u1");
        assert_eq!(lines[0]["installed_at"], 1.5);
    }

    // A folder with nothing of slack_sdk's in it is an error that says what was expected.
    let empty = dir.path().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = gateway(
        &config,
        &[
            "installations",
            "import",
            "--from",
            "slack-sdk-file",
            empty.to_str().unwrap(),
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no installations found"));
}

#[test]
fn a_bolt_js_file_store_is_imported() {
    let dir = tempfile::tempdir().unwrap();
    let (config, _, _) = write_config(dir.path(), "127.0.0.1:9".parse().unwrap(), "\"commands\"");
    // FileInstallationStore({ baseDir: js, clientId: '111.222' }) from @slack/oauth 4: the
    // org-wide install in the app folder, the plain workspace beside it.
    let js = dir.path().join("js");
    write(
        &js,
        "111.222/E1/app-latest",
        &json!({"enterprise": {"id": "E1", "name": "Org"}, "enterpriseUrl": "https://org.enterprise.slack.com/",
                "appId": "A1", "isEnterpriseInstall": true, "authVersion": "v2", "user": {"id": "U3"},
                "bot": {"token": "xoxb-org", "scopes": ["chat:write"], "id": "B2", "userId": "UB2"}, "tokenType": "bot"}),
    );
    let t1 = json!({"team": {"id": "T1", "name": "Team 1"}, "appId": "A1", "tokenType": "bot",
                    "isEnterpriseInstall": false, "authVersion": "v2", "user": {"id": "U1", "token": "xoxp-u1", "scopes": ["search:read"]},
                    "bot": {"token": "xoxb-1", "scopes": ["chat:write"], "id": "B1", "userId": "UB1"}});
    write(&js, "111.222T1/app-latest", &t1);
    write(&js, "111.222T1/user-U1-latest", &t1);
    let out = gateway(
        &config,
        &[
            "installations",
            "import",
            "--from",
            "bolt-js-file",
            js.to_str().unwrap(),
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut lines = exported(&config);
    lines.sort_by_key(|l| l["bot_token"].as_str().unwrap().to_owned());
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["team_id"], "T1");
    assert_eq!(lines[0]["user_token"], "xoxp-u1");
    assert_eq!(lines[0]["bot_scopes"], "chat:write");
    assert_eq!(lines[1]["enterprise_id"], "E1");
    assert_eq!(lines[1]["is_enterprise_install"], true);
}
