//! Tokens sealed at rest: nothing readable on disk, nothing movable between records, keys
//! that rotate.

use base64::Engine;
use slack_gateway::secret::Secret;
use slack_gateway::store::contract::{self, workspace_install};
use slack_gateway::store::sealing::KeyRing;
use slack_gateway::store::sled::SledStore;
use slack_gateway::store::{InstallationStore, StoreError, TeamRef, Token};

const APP: &str = "111.222";

fn key(b: u8) -> Secret {
    Secret::new(base64::engine::general_purpose::STANDARD.encode([b; 32]))
}

fn ring(current: u8, previous: &[u8]) -> Option<KeyRing> {
    let prev: Vec<Secret> = previous.iter().map(|b| key(*b)).collect();
    Some(KeyRing::new(&key(current), &prev).unwrap())
}

fn team(t: &str) -> TeamRef {
    TeamRef::new(None, Some(t), false)
}

/// Every file under `dir`, as bytes.
fn all_bytes(dir: &std::path::Path) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(all_bytes(&p));
        } else {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test]
async fn a_sealed_store_passes_the_contract() {
    let dirs: std::sync::Mutex<Vec<tempfile::TempDir>> = Default::default();
    contract::run_all(|| {
        let d = tempfile::tempdir().unwrap();
        let s = SledStore::open_sealed(d.path(), ring(1, &[])).unwrap();
        dirs.lock().unwrap().push(d);
        s
    })
    .await;
}

#[tokio::test]
async fn a_copied_data_folder_shows_no_token() {
    let dir = tempfile::tempdir().unwrap();
    let store = SledStore::open_sealed(dir.path(), ring(1, &[])).unwrap();
    for i in 0..20 {
        let mut inst = workspace_install(&format!("T{i}"), "U1", &format!("xoxb-plain-bot-{i}"));
        inst.user_token = Some(Token::new(format!("xoxp-plain-user-{i}")));
        inst.bot_refresh_token = Some(Token::new(format!("xoxe-1-plain-refresh-{i}")));
        store.save(APP, &inst).await.unwrap();
    }
    store.flush().await.unwrap();
    let copy = tempfile::tempdir().unwrap();
    for entry in walk(dir.path()) {
        let rel = entry.strip_prefix(dir.path()).unwrap();
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
    }
    let bytes = all_bytes(copy.path());
    assert!(!bytes.is_empty());
    for needle in ["xoxb-", "xoxp-", "xoxe"] {
        assert!(!contains(&bytes, needle), "{needle} found on disk");
    }
    // The store itself still reads them.
    let bot = store.find_bot(APP, &team("T3")).await.unwrap().unwrap();
    assert_eq!(bot.bot_token.unwrap().expose(), "xoxb-plain-bot-3");

    // Without sealing, the same check would find them: the test can fail.
    let plain_dir = tempfile::tempdir().unwrap();
    let plain = SledStore::open(plain_dir.path()).unwrap();
    plain
        .save(APP, &workspace_install("T1", "U1", "xoxb-visible"))
        .await
        .unwrap();
    plain.flush().await.unwrap();
    assert!(contains(&all_bytes(plain_dir.path()), "xoxb-visible"));
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn a_sealed_token_moved_to_another_team_does_not_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open_sealed(dir.path(), ring(1, &[])).unwrap();
        store
            .save(APP, &workspace_install("T1", "U1", "xoxb-team-one"))
            .await
            .unwrap();
        store
            .save(APP, &workspace_install("T2", "U1", "xoxb-team-two"))
            .await
            .unwrap();
    }
    {
        // An attacker with write access to the folder copies T1's bot record over T2's.
        let db = slack_gateway::store::sled::open_db(dir.path()).unwrap();
        let tree = db.open_tree("installations").unwrap();
        let v = tree.get(format!("inst/{APP}/-/T1/bot")).unwrap().unwrap();
        tree.insert(format!("inst/{APP}/-/T2/bot"), v).unwrap();
        db.flush().unwrap();
    }
    let store = SledStore::open_sealed(dir.path(), ring(1, &[])).unwrap();
    let moved = store.find_bot(APP, &team("T2")).await;
    assert!(
        matches!(moved, Err(StoreError::Corrupt { .. })),
        "{moved:?}"
    );
    assert_eq!(
        store
            .find_bot(APP, &team("T1"))
            .await
            .unwrap()
            .unwrap()
            .bot_token
            .unwrap()
            .expose(),
        "xoxb-team-one"
    );
}

#[tokio::test]
async fn keys_rotate_old_ones_open_and_reseal_moves_everything_to_the_new_key() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open_sealed(dir.path(), ring(1, &[])).unwrap();
        store
            .save(APP, &workspace_install("T1", "U1", "xoxb-one"))
            .await
            .unwrap();
    }
    {
        // New key seals, the old one still opens.
        let store = SledStore::open_sealed(dir.path(), ring(2, &[1])).unwrap();
        assert!(store.find_bot(APP, &team("T1")).await.unwrap().is_some());
        store
            .save(APP, &workspace_install("T2", "U1", "xoxb-two"))
            .await
            .unwrap();
        assert_eq!(
            store.reseal().await.unwrap(),
            3,
            "T1's bot, latest and user records"
        );
        assert_eq!(store.reseal().await.unwrap(), 0, "nothing left to reseal");
    }
    {
        // The old key can go now.
        let store = SledStore::open_sealed(dir.path(), ring(2, &[])).unwrap();
        for t in ["T1", "T2"] {
            assert!(
                store.find_bot(APP, &team(t)).await.unwrap().is_some(),
                "{t}"
            );
        }
    }
    {
        // A wrong key is a clear error, not garbage.
        let store = SledStore::open_sealed(dir.path(), ring(9, &[])).unwrap();
        let e = store
            .find_bot(APP, &team("T1"))
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("not configured"), "{e}");
    }
}

#[tokio::test]
async fn turning_sealing_on_reads_plaintext_and_reseal_seals_it() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SledStore::open(dir.path()).unwrap();
        store
            .save(APP, &workspace_install("T1", "U1", "xoxb-was-plain"))
            .await
            .unwrap();
    }
    let store = SledStore::open_sealed(dir.path(), ring(1, &[])).unwrap();
    assert!(store.find_bot(APP, &team("T1")).await.unwrap().is_some());
    assert_eq!(store.reseal().await.unwrap(), 3);
    drop(store);
    let db = slack_gateway::store::sled::open_db(dir.path()).unwrap();
    let tree = db.open_tree("installations").unwrap();
    for item in tree.iter() {
        let (_, v) = item.unwrap();
        assert!(
            !contains(&v, "xoxb-was-plain"),
            "resealed records hold no plaintext"
        );
    }
}

#[test]
fn the_store_folder_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested").join("data");
    let _store = SledStore::open(&path).unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "store folder mode {mode:o}");
}
