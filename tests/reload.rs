//! Live configuration: edits to gateway.toml reach the next request; bad edits never do.

mod support;

use std::time::Duration;

use slack_gateway::reload::{reload_if_changed, Outcome};
use support::oauth_harness::{Harness, SIGNING_SECRET};

/// Generous bound for a change to be seen (the contract says "within a second or two").
const SEEN_WITHIN: Duration = Duration::from_secs(5);

fn with_scopes(text: &str, scopes: &str) -> String {
    text.replace(
        "scopes = [\"chat:write\", \"commands\"]",
        &format!("scopes = [{scopes}]"),
    )
}

/// `text` with a misspelt key: a config that does not load.
fn with_a_typo(text: &str) -> String {
    text.replace("[oauth]", "[oauth]\nscopez = [\"typo\"]")
}

#[tokio::test]
async fn a_scope_added_in_place_appears_in_the_next_authorize_url() {
    let h = Harness::start("").await;
    assert_eq!(h.authorize_query().await["scope"], "chat:write,commands");
    let text = with_scopes(
        &h.config_text(),
        "\"chat:write\", \"commands\", \"users:read\"",
    );
    std::fs::write(&h.config_path, text).unwrap();
    assert!(
        h.wait_for_scope("chat:write,commands,users:read", SEEN_WITHIN)
            .await
    );
    assert_eq!(
        h.metric("slack_gateway_config_reloads_total{result=\"success\"}")
            .await,
        1.0,
        "one reload (the config the gateway started with is not one)"
    );
}

#[tokio::test]
async fn a_scope_added_by_rename_replace_is_seen() {
    let h = Harness::start("").await;
    let text = with_scopes(&h.config_text(), "\"chat:write\", \"reactions:write\"");
    let tmp = h.config_path.with_extension("toml.swp");
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &h.config_path).unwrap();
    assert!(
        h.wait_for_scope("chat:write,reactions:write", SEEN_WITHIN)
            .await
    );
}

#[tokio::test]
async fn a_kubernetes_style_symlink_swap_is_seen() {
    let h = Harness::start("").await;
    let dir = h.config_path.parent().unwrap().to_path_buf();
    // Turn gateway.toml into gateway.toml -> ..data/gateway.toml, ..data -> v1.
    let v1 = dir.join("v1");
    let v2 = dir.join("v2");
    std::fs::create_dir(&v1).unwrap();
    std::fs::create_dir(&v2).unwrap();
    let text = h.config_text();
    std::fs::write(v1.join("gateway.toml"), &text).unwrap();
    std::fs::write(
        v2.join("gateway.toml"),
        with_scopes(&text, "\"chat:write\", \"pins:write\""),
    )
    .unwrap();
    std::os::unix::fs::symlink("v1", dir.join("..data")).unwrap();
    std::fs::remove_file(&h.config_path).unwrap();
    std::os::unix::fs::symlink("..data/gateway.toml", &h.config_path).unwrap();
    // The swap: a new ..data link renamed over the old one, as the kubelet does.
    std::os::unix::fs::symlink("v2", dir.join("..data_tmp")).unwrap();
    std::fs::rename(dir.join("..data_tmp"), dir.join("..data")).unwrap();
    assert!(h.wait_for_scope("chat:write,pins:write", SEEN_WITHIN).await);
}

#[tokio::test]
async fn an_invalid_edit_keeps_the_old_config_and_a_later_fix_is_picked_up() {
    let h = Harness::start("").await;
    let good = h.config_text();
    std::fs::write(&h.config_path, with_a_typo(&good)).unwrap();
    h.wait_for_metric(
        "slack_gateway_config_reloads_total{result=\"failure\"}",
        1.0,
        "the failed reload was not counted",
    )
    .await;
    assert_eq!(
        h.authorize_query().await["scope"],
        "chat:write,commands",
        "old config still serves"
    );
    // The signed-request path still works on the old config too.
    assert_eq!(h.signed_event_status("T0NONE").await, (200, true));
    std::fs::write(&h.config_path, with_scopes(&good, "\"commands\"")).unwrap();
    assert!(
        h.wait_for_scope("commands", SEEN_WITHIN).await,
        "fixing the file reloads it"
    );
}

#[tokio::test]
async fn the_same_failure_is_counted_once() {
    let h = Harness::start("").await;
    std::fs::write(&h.config_path, with_a_typo(&h.config_text())).unwrap();
    // Read again on every event (and here), but counted and logged once.
    assert!(reload_if_changed(&h.gw).is_err());
    assert!(reload_if_changed(&h.gw).is_err());
    tokio::time::sleep(slack_gateway::reload::WATCH_DEBOUNCE * 4).await;
    assert_eq!(
        h.metric("slack_gateway_config_reloads_total{result=\"failure\"}")
            .await,
        1.0
    );
    assert_eq!(
        h.metric("slack_gateway_config_reloads_total{result=\"success\"}")
            .await,
        0.0
    );
}

#[tokio::test]
async fn a_file_the_new_config_names_is_picked_up_when_it_appears() {
    let h = Harness::start("").await;
    let text = h.config_text();
    let inline = text
        .lines()
        .find(|l| l.starts_with("signing_secret = "))
        .unwrap()
        .to_owned();
    let edited = with_scopes(
        &text.replace(&inline, "signing_secret_file = \"signing.txt\""),
        "\"commands\"",
    );
    std::fs::write(&h.config_path, edited).unwrap();
    h.wait_for_metric(
        "slack_gateway_config_reloads_total{result=\"failure\"}",
        1.0,
        "the missing file was not refused",
    )
    .await;
    let secret = h.config_path.parent().unwrap().join("signing.txt");
    std::fs::write(&secret, SIGNING_SECRET).unwrap();
    assert!(
        h.wait_for_scope("commands", SEEN_WITHIN).await,
        "the file's arrival did not reload the config"
    );
}

#[tokio::test]
async fn unchanged_content_does_not_reload() {
    let h = Harness::start("").await;
    assert_eq!(reload_if_changed(&h.gw).unwrap(), Outcome::Unchanged);
    std::fs::write(&h.config_path, h.config_text()).unwrap(); // same bytes, new mtime
    assert_eq!(reload_if_changed(&h.gw).unwrap(), Outcome::Unchanged);
    std::fs::write(
        &h.config_path,
        with_scopes(&h.config_text(), "\"commands\""),
    )
    .unwrap();
    // Either the watcher or this call reloads; afterwards nothing is left to do.
    let _ = reload_if_changed(&h.gw).unwrap();
    assert_eq!(reload_if_changed(&h.gw).unwrap(), Outcome::Unchanged);
    assert_eq!(h.authorize_query().await["scope"], "commands");
}

#[tokio::test]
async fn a_referenced_template_is_watched_too() {
    let dir = tempfile::tempdir().unwrap();
    let tpl = dir.path().join("install.html");
    std::fs::write(&tpl, "<a href=\"{{authorize_url}}\">v1</a>").unwrap();
    let h = Harness::start(&format!("install_page_template = \"{}\"", tpl.display())).await;
    assert!(h
        .get("/slack/install", None)
        .await
        .text()
        .await
        .unwrap()
        .ends_with(">v1</a>"));
    std::fs::write(&tpl, "<a href=\"{{authorize_url}}\">v2</a>").unwrap();
    // Templates are read per page, so the page changes at once; the change also counts as a
    // reload of the config's files.
    assert!(h
        .get("/slack/install", None)
        .await
        .text()
        .await
        .unwrap()
        .ends_with(">v2</a>"));
    h.wait_for_metric(
        "slack_gateway_config_reloads_total{result=\"success\"}",
        1.0,
        "template change not seen by the watcher",
    )
    .await;
}

#[tokio::test]
async fn restart_only_keys_keep_their_running_values() {
    let h = Harness::start("").await;
    let listen = h.gw.live().config.server.listen;
    let text = h.config_text().replace(
        &format!("listen = \"{listen}\""),
        "listen = \"127.0.0.1:1\"",
    );
    let text = with_scopes(&text, "\"im:history\"");
    std::fs::write(&h.config_path, text).unwrap();
    assert!(
        h.wait_for_scope("im:history", SEEN_WITHIN).await,
        "the live keys apply"
    );
    assert_eq!(
        h.gw.live().config.server.listen,
        listen,
        "server.listen is not half-applied"
    );
}

#[tokio::test]
async fn post_reload_answers_with_the_outcome() {
    let h = Harness::start("").await;
    let url = format!("http://{}/-/reload", h.admin);
    let client = reqwest::Client::new();
    let good = h.config_text();
    std::fs::write(&h.config_path, "this is not toml").unwrap();
    let r = client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 422);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["ok"], false);
    assert!(v["error"].as_str().unwrap().contains("gateway.toml"), "{v}");
    std::fs::write(&h.config_path, with_scopes(&good, "\"commands\"")).unwrap();
    let r = client.post(&url).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(h.authorize_query().await["scope"], "commands");
}

/// Appends to a file in `dir` every 20 ms (a log beside gateway.toml, written on every
/// request) until the returned guard is dropped: the folder is never quiet.
fn keep_busy(dir: &std::path::Path) -> tokio::task::JoinHandle<()> {
    let log = dir.join("gateway.log");
    tokio::spawn(async move {
        loop {
            use std::io::Write as _;
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log)
                .unwrap();
            writeln!(f, "refused unsigned or badly signed request").unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
}

#[tokio::test]
async fn config_changes_apply_while_the_folder_is_busy() {
    let h = Harness::start("").await;
    let busy = keep_busy(h.config_path.parent().unwrap());
    let text = with_scopes(&h.config_text(), "\"chat:write\", \"files:read\"");
    std::fs::write(&h.config_path, text).unwrap();
    let seen = h.wait_for_scope("chat:write,files:read", SEEN_WITHIN).await;
    busy.abort();
    assert!(seen, "a busy folder held the change back");
}

#[tokio::test]
async fn a_secret_file_swapped_by_rename_applies_while_the_folder_is_busy() {
    let h = Harness::start("").await;
    let dir = h.config_path.parent().unwrap().to_path_buf();
    let secret = dir.join("signing.txt");
    std::fs::write(&secret, SIGNING_SECRET).unwrap();
    let text = h.config_text();
    let inline = text
        .lines()
        .find(|l| l.starts_with("signing_secret = "))
        .unwrap()
        .to_owned();
    std::fs::write(
        &h.config_path,
        text.replace(&inline, "signing_secret_file = \"signing.txt\""),
    )
    .unwrap();
    h.wait_for_metric(
        "slack_gateway_config_reloads_total{result=\"success\"}",
        1.0,
        "the config naming the secret file was not loaded",
    )
    .await;
    let busy = keep_busy(&dir);
    let tmp = dir.join("signing.txt.new");
    std::fs::write(&tmp, "a-rotated-signing-secret").unwrap();
    std::fs::rename(&tmp, &secret).unwrap();
    let deadline = std::time::Instant::now() + SEEN_WITHIN;
    let mut refused = false;
    while std::time::Instant::now() < deadline {
        // Signed with the old secret: refused once the new one is in force.
        if h.signed_event_status("T0NONE").await.0 == 401 {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    busy.abort();
    assert!(refused, "the swapped secret file was never applied");
}
