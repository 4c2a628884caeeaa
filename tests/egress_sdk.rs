//! The Web API egress with Slack's own SDK as the client: `slack_sdk`'s `WebClient` (Python),
//! pointed at the egress with `base_url`, an identity header and no token, against the fake
//! Slack. Needs the examples' venv (`scripts/setup-test-deps.sh`).

mod support;

use std::process::Command;

use slack_gateway::store::contract::workspace_install;
use support::fake_slack::FakeSlack;
use support::oauth_harness::{CLIENT_ID, CLIENT_SECRET};
use support::python::venv_python;
use support::{FakeUpstream, TestGateway};

/// Runs `script` with the venv's Python, `EGRESS` set to the egress's `/api/` base URL.
fn run_python(script: &str, egress: &str) -> serde_json::Value {
    let out = Command::new(venv_python())
        .args(["-c", script])
        .env("EGRESS", egress)
        .env("NO_PROXY", "*")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "python failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
    })
}

/// A gateway with the egress on, Slack's API at `slack`, and T1 installed with the token the
/// fake knows; the egress's base URL as the SDK takes it.
async fn gateway(slack: &FakeSlack) -> (TestGateway, String) {
    let upstream = FakeUpstream::start().await;
    let gw = TestGateway::builder(upstream.url())
        .toml(&format!(
            "[slack]\napi_url = \"{}\"\n[egress]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
            slack.api_url()
        ))
        .seed(workspace_install("T1", "U1", "xoxb-t1-sdk"))
        .start()
        .await;
    let egress = format!("http://{}/api/", gw.gw.egress_addr.get().unwrap());
    (gw, egress)
}

const SDK_CALLS: &str = r#"
import json, os
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

base = os.environ["EGRESS"]
client = WebClient(base_url=base, headers={"X-Slack-Team-Id": "T1"})
out = {}
r = client.chat_postMessage(channel="C1", text="hello through the egress")
out["posted"] = [r["ok"], r["channel"]]
r = client.conversations_list(limit=1)
out["page1"] = [c["id"] for c in r["channels"]]
r = client.conversations_list(limit=1, cursor=r["response_metadata"]["next_cursor"])
out["page2"] = [c["id"] for c in r["channels"]]
r = client.files_upload_v2(channel="C1", content="file body \u2713", filename="notes.txt", title="Notes")
out["file"] = [f["id"] for f in r["files"]]
for name, c in [("no_identity", WebClient(base_url=base)),
                ("not_installed", WebClient(base_url=base, headers={"X-Slack-Team-Id": "T404"}))]:
    try:
        c.chat_postMessage(channel="C1", text="x")
        out[name] = "no error"
    except SlackApiError as e:
        out[name] = [e.response.status_code, e.response["error"]]
print(json.dumps(out))
"#;

#[tokio::test]
async fn slack_sdks_web_client_calls_slack_through_the_egress_without_a_token() {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    slack.register_token("xoxb-t1-sdk", "T1");
    let (gw, egress) = gateway(&slack).await;
    let out = tokio::task::spawn_blocking(move || run_python(SDK_CALLS, &egress))
        .await
        .unwrap();
    assert_eq!(out["posted"], serde_json::json!([true, "C1"]));
    assert_eq!(out["page1"], serde_json::json!(["C1"]));
    assert_eq!(out["page2"], serde_json::json!(["C2"]));
    let file = out["file"][0].as_str().expect("one file uploaded");
    assert_eq!(
        slack.uploaded(file).as_deref(),
        Some("file body ✓".as_bytes()),
        "the file's bytes reached Slack's upload URL"
    );
    assert_eq!(
        out["no_identity"],
        serde_json::json!([400, "missing_identity"])
    );
    assert_eq!(
        out["not_installed"],
        serde_json::json!([404, "not_installed"])
    );
    let posted = slack.posted_messages();
    assert_eq!(posted.len(), 1);
    assert_eq!(
        posted[0].token.as_deref(),
        Some("xoxb-t1-sdk"),
        "the gateway's token"
    );
    assert!(posted[0].ok);
    gw.shutdown().await;
}

/// Slack rate-limits chat.postMessage once: the SDK's one call waits out Retry-After in the
/// gateway and succeeds, without the SDK retrying anything itself.
#[tokio::test]
async fn a_rate_limit_is_absorbed_for_the_sdk() {
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    slack.register_token("xoxb-t1-sdk", "T1");
    slack.ratelimit("chat.postMessage", 1, 1);
    let (gw, egress) = gateway(&slack).await;
    let script = r#"
import json, os
from slack_sdk import WebClient
c = WebClient(base_url=os.environ["EGRESS"], headers={"X-Slack-Team-Id": "T1"})
r = c.chat_postMessage(channel="C1", text="after the limit")
print(json.dumps({"ok": r["ok"]}))
"#;
    let out = tokio::task::spawn_blocking(move || run_python(script, &egress))
        .await
        .unwrap();
    assert_eq!(out["ok"], true);
    assert_eq!(
        slack.ratelimited("chat.postMessage"),
        1,
        "Slack said 429 once"
    );
    let posted = slack.posted_messages();
    assert_eq!(posted.len(), 1, "then the retried call went through");
    gw.shutdown().await;
}
