//! The storage contract, run against every backend in the crate, and what only a durable
//! backend can promise: an installation survives the store being closed and reopened.

use std::sync::atomic::{AtomicUsize, Ordering};

mod support;

use slack_gateway::secret::Secret;
use slack_gateway::store::contract::{self, org_install, workspace_install};
use slack_gateway::store::memory::MemoryStore;
use slack_gateway::store::postgres::{PgStore, Timeouts};
use slack_gateway::store::sealing::KeyRing;
use slack_gateway::store::sled::SledStore;
use slack_gateway::store::{InstallationStore, RecordKind, TeamRef, Token};

const APP: &str = "111.222";

#[tokio::test]
async fn sled_store_passes_the_contract() {
    // One parent folder, a fresh sled folder inside it for every check.
    let parent = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    contract::run_all(|| {
        let dir = parent
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        SledStore::open(&dir).unwrap()
    })
    .await;
}

#[tokio::test]
async fn sled_store_with_sealed_tokens_passes_the_contract() {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let parent = tempfile::tempdir().unwrap();
    let next = AtomicUsize::new(0);
    contract::run_all(|| {
        let dir = parent
            .path()
            .join(next.fetch_add(1, Ordering::Relaxed).to_string());
        let ring = KeyRing::new(&Secret::from(key.as_str()), &[]).unwrap();
        SledStore::open_sealed(&dir, Some(ring)).unwrap()
    })
    .await;
}

#[tokio::test]
async fn memory_store_passes_the_contract() {
    contract::run_all(MemoryStore::new).await;
}

#[tokio::test]
async fn sled_installations_survive_close_and_reopen_with_the_bot_count() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    let ws = {
        let mut i = workspace_install("T1", "U1", "xoxb-t1");
        i.user_token = Some(Token::new("xoxp-u1"));
        i.user_scopes = Some("search:read".into());
        i.bot_refresh_token = Some(Token::new("xoxe-1-refresh"));
        i.bot_token_expires_at = Some(1_900_000_000);
        i
    };
    let org = org_install("E1", "U9", "xoxb-e1");
    let doomed = workspace_install("T2", "U2", "xoxb-t2");
    {
        let store = SledStore::open(&path).unwrap();
        store.save(APP, &ws).await.unwrap();
        store.save(APP, &org).await.unwrap();
        store.save(APP, &doomed).await.unwrap();
        store
            .delete_team(APP, &TeamRef::new(None, Some("T2"), false))
            .await
            .unwrap();
        assert_eq!(store.bot_count(), 2);
        // Dropped without an explicit `flush`: `save` and `delete_team` flush themselves.
    }
    let store = SledStore::open(&path).unwrap();
    let t1 = TeamRef::new(None, Some("T1"), false);
    assert_eq!(store.find_bot(APP, &t1).await.unwrap(), Some(ws.clone()));
    assert_eq!(
        store.find_user(APP, &t1, "U1").await.unwrap(),
        Some(ws.clone())
    );
    assert_eq!(
        store
            .find_bot(APP, &TeamRef::new(Some("E1"), None, true))
            .await
            .unwrap(),
        Some(org)
    );
    assert_eq!(
        store
            .find_bot(APP, &TeamRef::new(None, Some("T2"), false))
            .await
            .unwrap(),
        None,
        "a deletion is durable too"
    );
    assert_eq!(store.bot_count(), 2, "bot count restored from disk");

    // A rotated token written with update_record survives a reopen as well.
    let mut rotated = ws.clone();
    rotated.bot_token = Some(Token::new("xoxb-t1-rotated"));
    store
        .update_record(APP, &t1, &RecordKind::Bot, &rotated)
        .await
        .unwrap();
    drop(store);
    let store = SledStore::open(&path).unwrap();
    assert_eq!(
        store
            .find_bot(APP, &t1)
            .await
            .unwrap()
            .and_then(|b| b.bot_token)
            .map(|t| t.expose().to_owned())
            .as_deref(),
        Some("xoxb-t1-rotated")
    );
    assert_eq!(store.bot_count(), 2);
}

#[tokio::test]
async fn sled_keeps_the_bot_count_on_disk_and_counts_an_older_store_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    {
        let store = SledStore::open(&path).unwrap();
        for t in ["T1", "T2", "T3"] {
            store
                .save(APP, &workspace_install(t, "U1", "xoxb-x"))
                .await
                .unwrap();
        }
        store
            .delete_bot(APP, &TeamRef::new(None, Some("T3"), false))
            .await
            .unwrap();
        // A rotated bot written through update_record for a team with no bot yet counts too.
        store
            .update_record(
                APP,
                &TeamRef::new(None, Some("T4"), false),
                &RecordKind::Bot,
                &workspace_install("T4", "U1", "xoxb-4"),
            )
            .await
            .unwrap();
        assert_eq!(store.bot_count(), 3);
        // The count is not an installation record.
        assert!(store
            .list(APP)
            .await
            .unwrap()
            .iter()
            .all(|r| r.installation.team_id.is_some()));
        // T1, T2: bot, latest, user; T3: latest, user; T4: bot.
        assert_eq!(store.list(APP).await.unwrap().len(), 2 * 3 + 2 + 1);
    }
    assert_eq!(SledStore::open(&path).unwrap().bot_count(), 3, "read back");

    // A store from before the count was kept: the key is absent, so open counts once.
    {
        let db = slack_gateway::store::sled::open_db(&path).unwrap();
        let tree = db.open_tree("installations").unwrap();
        assert!(tree.remove(b"meta/bot_count").unwrap().is_some());
        db.flush().unwrap();
    }
    assert_eq!(SledStore::open(&path).unwrap().bot_count(), 3, "recounted");
    let db = slack_gateway::store::sled::open_db(&path).unwrap();
    let kept = db
        .open_tree("installations")
        .unwrap()
        .get(b"meta/bot_count")
        .unwrap()
        .expect("written back at open");
    assert_eq!(kept.as_ref(), &3u64.to_be_bytes());
}

#[tokio::test]
async fn a_store_closed_and_opened_again_at_once_opens_and_a_held_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    // sled lets go of its file lock a moment after the last handle is dropped.
    for i in 0..30 {
        let store = SledStore::open(&path).unwrap_or_else(|e| panic!("open {i}: {e}"));
        store
            .save(APP, &workspace_install(&format!("T{i}"), "U1", "xoxb-t"))
            .await
            .unwrap();
        drop(store);
    }
    let held = SledStore::open(&path).unwrap();
    assert_eq!(held.bot_count(), 30);
    let e = SledStore::open(&path)
        .err()
        .expect("a held store is refused");
    assert!(e.to_string().contains("could not acquire lock"), "{e}");
}

/// Defect 4 of issue 16 (the OAuth-state flood): used-state markers and their expiry index are
/// durable, and the tree where older versions kept every issued state is dropped at open.
#[tokio::test]
async fn state_flood_sled_markers_survive_reopen_and_the_old_state_tree_goes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("data");
    // A store written by a version that kept every issued state.
    {
        let db = slack_gateway::store::sled::open_db(&path).unwrap();
        let old = db.open_tree("oauth_states").unwrap();
        for i in 0..1000u32 {
            old.insert(format!("state-{i}"), &2_000_000_000u64.to_be_bytes())
                .unwrap();
        }
        db.flush().unwrap();
    }
    {
        let store = SledStore::open(&path).unwrap();
        assert_eq!(store.used_state_count().await.unwrap(), 0);
        assert!(store.mark_state_used("install:x", 500).await.unwrap());
        assert!(store
            .mark_state_used("install:y", 2_000_000_000)
            .await
            .unwrap());
        store.flush().await.unwrap();
    }
    let store = SledStore::open(&path).unwrap();
    assert!(
        !store.mark_state_used("install:x", 500).await.unwrap(),
        "still used after a reopen"
    );
    assert_eq!(
        store.sweep_used_states(1_000, 100).await.unwrap(),
        1,
        "the expiry index came back too"
    );
    assert_eq!(store.used_state_count().await.unwrap(), 1);
    drop(store);
    let db = slack_gateway::store::sled::open_db(&path).expect("sled lets go of its lock");
    assert!(
        !db.tree_names()
            .iter()
            .any(|n| n.as_ref() == b"oauth_states"),
        "the old state tree is dropped"
    );
}

/// The contract on PostgreSQL: each check on a fresh schema, with the store's own pool,
/// migrations and watcher.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_passes_the_contract() {
    let schemas = std::sync::Mutex::new(Vec::new());
    contract::run_all(|| {
        let schema = support::postgres::Schema::new("contract");
        let store = open_pg(&schema, None);
        schemas.lock().unwrap().push(schema);
        store
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_store_with_sealed_tokens_passes_the_contract() {
    use base64::Engine;
    let key = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let schemas = std::sync::Mutex::new(Vec::new());
    contract::run_all(|| {
        let schema = support::postgres::Schema::new("contract_sealed");
        let ring = KeyRing::new(&Secret::from(key.as_str()), &[]).unwrap();
        let store = open_pg(&schema, Some(ring));
        schemas.lock().unwrap().push(schema);
        store
    })
    .await;
}

/// The delivery queue's contract on sled, and on PostgreSQL (concurrent claims through two
/// stores on one schema, as two replicas).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_delivery_queue_passes_its_contract_on_sled_and_postgres() {
    let dir = tempfile::tempdir().unwrap();
    slack_gateway::store::queue_contract::run_all(std::sync::Arc::new(
        SledStore::open(dir.path()).unwrap(),
    ))
    .await;
    let schema = support::postgres::Schema::new("queue_contract");
    let store = open_pg(&schema, None);
    slack_gateway::store::queue_contract::run_all(std::sync::Arc::new(store)).await;
}

/// Opens a store on `schema` from the contract's synchronous factory.
fn open_pg(schema: &support::postgres::Schema, ring: Option<KeyRing>) -> PgStore {
    let cfg = schema.config();
    tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(PgStore::open(
            &cfg,
            ring,
            Timeouts {
                start: std::time::Duration::from_secs(5),
                ..Timeouts::default()
            },
        ))
    })
    .expect("the test database answers (see tests/support/postgres.rs)")
}

/// Replay claims on a shared store: of many concurrent claims of one signature, through two
/// stores on one schema (two gateways), exactly one wins, however they are batched; distinct
/// signatures are each claimed; a signature past its window can be claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_replay_claims_are_won_once_across_stores() {
    use slack_gateway::store::Signature;
    let schema = support::postgres::Schema::new("claims");
    let open = || async {
        std::sync::Arc::new(
            PgStore::open(&schema.config(), None, Timeouts::default())
                .await
                .unwrap(),
        )
    };
    let (a, b) = (open().await, open().await);
    assert!(a.is_shared() && b.is_shared());
    let now = 1_800_000_000u64;
    for round in 0u8..5 {
        let sig = Signature {
            mac: [round; 32],
            forget_at: now + 300,
        };
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..40 {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            tasks.spawn(async move { store.claim_signature(&sig, now).await.unwrap() });
        }
        let wins = tasks
            .join_all()
            .await
            .into_iter()
            .filter(|won| *won)
            .count();
        assert_eq!(wins, 1, "round {round}: one claim wins");
    }
    // Many distinct signatures at once: each is claimed (batched, none lost).
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..300u32 {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let mut mac = [0xAB; 32];
        mac[..4].copy_from_slice(&i.to_be_bytes());
        let sig = Signature {
            mac,
            forget_at: now + 300,
        };
        tasks.spawn(async move { store.claim_signature(&sig, now).await.unwrap() });
    }
    assert!(tasks.join_all().await.into_iter().all(|won| won));
    // Past its window, a signature is a first sighting again.
    let old = Signature {
        mac: [0; 32],
        forget_at: now + 300,
    };
    assert!(!a.claim_signature(&old, now + 10).await.unwrap());
    assert!(b.claim_signature(&old, now + 301).await.unwrap());
}
