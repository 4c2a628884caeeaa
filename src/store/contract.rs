//! The contract every [`InstallationStore`] backend must pass.
//!
//! Call [`run_all`] from a test with a factory that returns a fresh, empty store. Each check
//! panics with a message naming the rule it broke. `tests/store_contract.rs` runs it for every
//! backend in this crate; a new backend adds one line there.

use super::{find_bot_for, Installation, InstallationStore, RecordKind, Signature, TeamRef, Token};

const APP: &str = "111.222";

/// A workspace installation with a bot, made by `user`.
pub fn workspace_install(team: &str, user: &str, bot_token: &str) -> Installation {
    Installation {
        app_id: Some("A111".into()),
        team_id: Some(team.into()),
        team_name: Some(format!("Team {team}")),
        bot_token: Some(Token::new(bot_token)),
        bot_id: Some(format!("B{team}")),
        bot_user_id: Some(format!("U{team}BOT")),
        bot_scopes: Some("chat:write,commands".into()),
        user_id: user.into(),
        is_enterprise_install: false,
        token_type: Some("bot".into()),
        installed_at: 1_700_000_000.5,
        ..Default::default()
    }
}

/// An org-wide installation of enterprise `ent`.
pub fn org_install(ent: &str, user: &str, bot_token: &str) -> Installation {
    Installation {
        enterprise_id: Some(ent.into()),
        enterprise_name: Some("Org".into()),
        enterprise_url: Some("https://org.enterprise.slack.com/".into()),
        team_id: None,
        is_enterprise_install: true,
        ..workspace_install("unused", user, bot_token)
    }
}

fn team(t: &str) -> TeamRef {
    TeamRef::new(None, Some(t), false)
}

/// Runs every contract check, each on a fresh store from `make`.
pub async fn run_all<S, F>(make: F)
where
    S: InstallationStore,
    F: Fn() -> S,
{
    save_then_find_returns_every_field(&make()).await;
    latest_bot_wins(&make()).await;
    user_tokens_are_per_user(&make()).await;
    user_only_install_keeps_the_bot(&make()).await;
    org_wide_install_is_found_by_enterprise_alone(&make()).await;
    enterprise_workspace_is_not_confused_with_plain_workspace(&make()).await;
    apps_are_isolated(&make()).await;
    delete_team_removes_everything_of_that_team_only(&make()).await;
    delete_bot_and_user(&make()).await;
    list_names_every_record(&make()).await;
    bot_count_follows_saves_and_deletes(&make()).await;
    invalid_ids_are_refused(&make()).await;
    update_record_touches_one_record(&make()).await;
    state_is_consumed_exactly_once(&make()).await;
    used_states_are_swept_after_keep_until(&make()).await;
    reads_see_every_write(&make()).await;
    signatures_are_remembered_until_forgotten(&make()).await;
}

/// The team's bot token as `find_bot` reads it, after checking that the shared lookup of the
/// request path reads the same record.
async fn bot_token_of(s: &dyn InstallationStore, t: &str) -> Option<String> {
    let owned = s.find_bot(APP, &team(t)).await.unwrap();
    let shared = s.find_bot_shared(APP, &team(t)).await.unwrap();
    assert_eq!(owned.as_ref(), shared.as_deref(), "find_bot_shared agrees");
    owned
        .and_then(|i| i.bot_token)
        .map(|t| t.expose().to_owned())
}

/// Whatever a backend caches, a read after a write sees the write, by every lookup.
async fn reads_see_every_write(s: &dyn InstallationStore) {
    s.save(APP, &workspace_install("T1", "U1", "xoxb-a"))
        .await
        .unwrap();
    assert_eq!(bot_token_of(s, "T1").await.as_deref(), Some("xoxb-a"));
    let mut b = workspace_install("T1", "U1", "xoxb-b");
    s.update_record(APP, &team("T1"), &RecordKind::Bot, &b)
        .await
        .unwrap();
    assert_eq!(
        bot_token_of(s, "T1").await.as_deref(),
        Some("xoxb-b"),
        "after update_record"
    );
    b.bot_token = Some(Token::new("xoxb-c"));
    s.save(APP, &b).await.unwrap();
    assert_eq!(
        bot_token_of(s, "T1").await.as_deref(),
        Some("xoxb-c"),
        "after save"
    );
    s.delete_bot(APP, &team("T1")).await.unwrap();
    assert_eq!(bot_token_of(s, "T1").await, None, "after delete_bot");
    s.save(APP, &workspace_install("T1", "U1", "xoxb-d"))
        .await
        .unwrap();
    let user = s.find_user(APP, &team("T1"), "U1").await.unwrap();
    assert!(user.is_some());
    assert_eq!(
        s.find_user_shared(APP, &team("T1"), "U1")
            .await
            .unwrap()
            .as_deref(),
        user.as_ref(),
        "find_user_shared agrees"
    );
    s.delete_team(APP, &team("T1")).await.unwrap();
    assert_eq!(
        s.find_user(APP, &team("T1"), "U1").await.unwrap(),
        None,
        "after delete_team"
    );
    assert_eq!(
        s.find_user_shared(APP, &team("T1"), "U1").await.unwrap(),
        None,
        "shared, after delete_team"
    );
    assert_eq!(bot_token_of(s, "T1").await, None);
}

async fn save_then_find_returns_every_field(s: &dyn InstallationStore) {
    let mut inst = workspace_install("T1", "U1", "xoxb-1");
    inst.user_token = Some(Token::new("xoxp-1"));
    inst.user_scopes = Some("search:read".into());
    inst.bot_refresh_token = Some(Token::new("xoxe-1-r"));
    inst.bot_token_expires_at = Some(1_800_000_000);
    inst.incoming_webhook_url = Some("https://hooks.slack.com/x".into());
    inst.enterprise_url = None;
    s.save(APP, &inst).await.unwrap();
    assert_eq!(
        s.find_bot(APP, &team("T1")).await.unwrap(),
        Some(inst.clone()),
        "bot record keeps every field"
    );
    assert_eq!(
        s.find_latest(APP, &team("T1")).await.unwrap(),
        Some(inst.clone()),
        "latest record"
    );
    assert_eq!(
        s.find_user(APP, &team("T1"), "U1").await.unwrap(),
        Some(inst),
        "user record"
    );
    assert_eq!(
        s.find_bot(APP, &team("T2")).await.unwrap(),
        None,
        "unknown team finds nothing"
    );
}

async fn latest_bot_wins(s: &dyn InstallationStore) {
    s.save(APP, &workspace_install("T1", "U1", "xoxb-old"))
        .await
        .unwrap();
    s.save(APP, &workspace_install("T1", "U2", "xoxb-new"))
        .await
        .unwrap();
    let bot = s.find_bot(APP, &team("T1")).await.unwrap().expect("bot");
    assert_eq!(
        bot.bot_token.unwrap().expose(),
        "xoxb-new",
        "the latest bot wins"
    );
    assert_eq!(
        s.find_latest(APP, &team("T1"))
            .await
            .unwrap()
            .unwrap()
            .user_id,
        "U2"
    );
}

async fn user_tokens_are_per_user(s: &dyn InstallationStore) {
    let mut a = workspace_install("T1", "U1", "xoxb-1");
    a.user_token = Some(Token::new("xoxp-u1"));
    let mut b = workspace_install("T1", "U2", "xoxb-2");
    b.user_token = Some(Token::new("xoxp-u2"));
    s.save(APP, &a).await.unwrap();
    s.save(APP, &b).await.unwrap();
    let u1 = s
        .find_user(APP, &team("T1"), "U1")
        .await
        .unwrap()
        .expect("U1");
    let u2 = s
        .find_user(APP, &team("T1"), "U2")
        .await
        .unwrap()
        .expect("U2");
    assert_eq!(u1.user_token.unwrap().expose(), "xoxp-u1");
    assert_eq!(u2.user_token.unwrap().expose(), "xoxp-u2");
    assert_eq!(s.find_user(APP, &team("T1"), "U3").await.unwrap(), None);
}

async fn user_only_install_keeps_the_bot(s: &dyn InstallationStore) {
    s.save(APP, &workspace_install("T1", "U1", "xoxb-1"))
        .await
        .unwrap();
    let mut user_only = workspace_install("T1", "U2", "unused");
    user_only.bot_token = None;
    user_only.user_token = Some(Token::new("xoxp-2"));
    s.save(APP, &user_only).await.unwrap();
    let bot = s
        .find_bot(APP, &team("T1"))
        .await
        .unwrap()
        .expect("bot survives a user-only install");
    assert_eq!(bot.bot_token.unwrap().expose(), "xoxb-1");
}

async fn org_wide_install_is_found_by_enterprise_alone(s: &dyn InstallationStore) {
    s.save(APP, &org_install("E1", "U1", "xoxb-org"))
        .await
        .unwrap();
    let by_org = TeamRef::new(Some("E1"), Some("T-any"), true);
    assert_eq!(by_org.team_id, None, "org-wide lookups ignore the team");
    let found = s
        .find_bot(APP, &by_org)
        .await
        .unwrap()
        .expect("org install");
    assert_eq!(found.bot_token.unwrap().expose(), "xoxb-org");
    // A workspace of the org that has no install of its own falls back to the org's.
    let ws = TeamRef::new(Some("E1"), Some("T9"), false);
    assert_eq!(
        s.find_bot(APP, &ws).await.unwrap(),
        None,
        "no workspace record"
    );
    let via = find_bot_for(s, APP, &ws)
        .await
        .unwrap()
        .expect("falls back to the org");
    assert_eq!(via.enterprise_id.as_deref(), Some("E1"));
}

async fn enterprise_workspace_is_not_confused_with_plain_workspace(s: &dyn InstallationStore) {
    let mut grid = workspace_install("T1", "U1", "xoxb-grid");
    grid.enterprise_id = Some("E1".into());
    s.save(APP, &grid).await.unwrap();
    assert!(s
        .find_bot(APP, &TeamRef::new(Some("E1"), Some("T1"), false))
        .await
        .unwrap()
        .is_some());
    assert!(
        s.find_bot(APP, &team("T1")).await.unwrap().is_none(),
        "(none, T1) is another key"
    );
    assert!(
        s.find_bot(APP, &TeamRef::new(Some("E1"), None, true))
            .await
            .unwrap()
            .is_none(),
        "not an org install"
    );
}

async fn apps_are_isolated(s: &dyn InstallationStore) {
    s.save(APP, &workspace_install("T1", "U1", "xoxb-app1"))
        .await
        .unwrap();
    assert_eq!(
        s.find_bot("999.888", &team("T1")).await.unwrap(),
        None,
        "another client_id sees nothing"
    );
    assert!(s.list("999.888").await.unwrap().is_empty());
}

async fn delete_team_removes_everything_of_that_team_only(s: &dyn InstallationStore) {
    let mut a = workspace_install("T1", "U1", "xoxb-1");
    a.user_token = Some(Token::new("xoxp-1"));
    s.save(APP, &a).await.unwrap();
    s.save(APP, &workspace_install("T10", "U1", "xoxb-10"))
        .await
        .unwrap();
    let removed = s.delete_team(APP, &team("T1")).await.unwrap();
    assert_eq!(removed, 3, "bot, latest and user records");
    assert_eq!(s.find_bot(APP, &team("T1")).await.unwrap(), None);
    assert_eq!(s.find_user(APP, &team("T1"), "U1").await.unwrap(), None);
    assert!(
        s.find_bot(APP, &team("T10")).await.unwrap().is_some(),
        "T10 shares a prefix with T1 but stays"
    );
    assert_eq!(
        s.delete_team(APP, &team("T1")).await.unwrap(),
        0,
        "deleting twice is harmless"
    );
}

async fn delete_bot_and_user(s: &dyn InstallationStore) {
    let mut a = workspace_install("T1", "U1", "xoxb-1");
    a.user_token = Some(Token::new("xoxp-1"));
    s.save(APP, &a).await.unwrap();
    assert_eq!(s.delete_user(APP, &team("T1"), "U1").await.unwrap(), 1);
    assert_eq!(s.find_user(APP, &team("T1"), "U1").await.unwrap(), None);
    assert!(
        s.find_bot(APP, &team("T1")).await.unwrap().is_some(),
        "the bot stays"
    );
    assert_eq!(s.delete_bot(APP, &team("T1")).await.unwrap(), 1);
    assert_eq!(s.find_bot(APP, &team("T1")).await.unwrap(), None);
    assert_eq!(s.delete_bot(APP, &team("T1")).await.unwrap(), 0);
}

async fn list_names_every_record(s: &dyn InstallationStore) {
    s.save(APP, &workspace_install("T1", "U1", "xoxb-1"))
        .await
        .unwrap();
    s.save(APP, &org_install("E1", "U2", "xoxb-2"))
        .await
        .unwrap();
    let records = s.list(APP).await.unwrap();
    assert_eq!(
        records.len(),
        6,
        "bot, latest and user for each of two teams"
    );
    assert!(records
        .iter()
        .any(|r| r.kind == RecordKind::Bot && r.team == team("T1")));
    assert!(records
        .iter()
        .any(|r| r.kind == RecordKind::User("U2".into())
            && r.team == TeamRef::new(Some("E1"), None, true)));
}

async fn bot_count_follows_saves_and_deletes(s: &dyn InstallationStore) {
    assert_eq!(s.bot_count(), 0);
    s.save(APP, &workspace_install("T1", "U1", "xoxb-1"))
        .await
        .unwrap();
    s.save(APP, &workspace_install("T1", "U2", "xoxb-2"))
        .await
        .unwrap();
    s.save(APP, &workspace_install("T2", "U1", "xoxb-3"))
        .await
        .unwrap();
    assert_eq!(s.bot_count(), 2, "one bot per team");
    s.delete_team(APP, &team("T1")).await.unwrap();
    assert_eq!(s.bot_count(), 1);
    s.delete_bot(APP, &team("T2")).await.unwrap();
    assert_eq!(s.bot_count(), 0);
}

async fn invalid_ids_are_refused(s: &dyn InstallationStore) {
    for bad in ["", "T1/../T2", "-"] {
        let mut inst = workspace_install("T1", "U1", "xoxb-1");
        inst.team_id = Some(bad.into());
        if bad.is_empty() {
            // An empty team id means "none", which is a valid key for a team-less record.
            continue;
        }
        assert!(
            s.save(APP, &inst).await.is_err(),
            "team id {bad:?} must be refused"
        );
    }
    assert!(
        s.find_user(APP, &team("T1"), "U1/x").await.is_err(),
        "user id with '/' refused"
    );
    assert!(
        s.save("a/b", &workspace_install("T1", "U1", "x"))
            .await
            .is_err(),
        "app id with '/' refused"
    );
}

async fn update_record_touches_one_record(s: &dyn InstallationStore) {
    let mut a = workspace_install("T1", "U1", "xoxb-1");
    a.user_token = Some(Token::new("xoxp-1"));
    s.save(APP, &a).await.unwrap();
    let mut rotated = a.clone();
    rotated.bot_token = Some(Token::new("xoxe.xoxb-2"));
    rotated.user_token = Some(Token::new("xoxe.xoxp-2"));
    s.update_record(APP, &team("T1"), &RecordKind::Bot, &rotated)
        .await
        .unwrap();
    let bot = s.find_bot(APP, &team("T1")).await.unwrap().unwrap();
    assert_eq!(
        bot.bot_token.unwrap().expose(),
        "xoxe.xoxb-2",
        "bot record updated"
    );
    let user = s.find_user(APP, &team("T1"), "U1").await.unwrap().unwrap();
    assert_eq!(
        user.user_token.unwrap().expose(),
        "xoxp-1",
        "user record untouched"
    );
    assert_eq!(
        s.bot_count(),
        1,
        "updating an existing bot does not add one"
    );
}

/// A state's used-marker is an atomic insert-if-absent: one winner however many try.
async fn state_is_consumed_exactly_once(s: &dyn InstallationStore) {
    assert_eq!(s.used_state_count().await.unwrap(), 0);
    let (r1, r2, r3) = tokio::join!(
        s.mark_state_used("install:a", 2_000_000_000),
        s.mark_state_used("install:a", 2_000_000_000),
        s.mark_state_used("install:a", 2_000_000_000)
    );
    let winners = [r1.unwrap(), r2.unwrap(), r3.unwrap()]
        .iter()
        .filter(|r| **r)
        .count();
    assert_eq!(winners, 1, "one state, one consumer");
    assert!(
        !s.mark_state_used("install:a", 2_000_000_000).await.unwrap(),
        "a used state stays used"
    );
    assert!(
        s.mark_state_used("signin:a", 2_000_000_000).await.unwrap(),
        "ids are compared whole"
    );
    assert_eq!(s.used_state_count().await.unwrap(), 2);
}

/// Markers go once their `keep_until` has passed, not before, earliest first and at most
/// `limit` per call; a swept id can be marked again.
async fn used_states_are_swept_after_keep_until(s: &dyn InstallationStore) {
    for (id, until) in [("c", 300), ("a", 100), ("b", 200), ("d", 2_000_000_000)] {
        assert!(s.mark_state_used(id, until).await.unwrap());
    }
    assert_eq!(
        s.sweep_used_states(100, 10).await.unwrap(),
        0,
        "due after 100, not at"
    );
    assert_eq!(s.sweep_used_states(250, 10).await.unwrap(), 2, "a and b");
    assert_eq!(s.used_state_count().await.unwrap(), 2);
    assert!(
        !s.mark_state_used("c", 300).await.unwrap(),
        "c is kept until 300"
    );
    assert!(
        s.mark_state_used("a", 100).await.unwrap(),
        "a swept marker is gone"
    );
    assert_eq!(
        s.sweep_used_states(1_000, 1).await.unwrap(),
        1,
        "at most limit"
    );
    assert!(
        !s.mark_state_used("c", 300).await.unwrap(),
        "the earliest went first: c is still there"
    );
    assert_eq!(s.sweep_used_states(1_000, 10).await.unwrap(), 1, "then c");
    assert!(s.mark_state_used("c", 300).await.unwrap());
    assert_eq!(s.sweep_used_states(1_000, 10).await.unwrap(), 1);
    assert_eq!(s.used_state_count().await.unwrap(), 1, "d stays");
}

async fn signatures_are_remembered_until_forgotten(s: &dyn InstallationStore) {
    let sig = |b: u8, forget_at: u64| Signature {
        mac: [b; 32],
        forget_at,
    };
    assert!(s.recent_signatures(0).await.unwrap().is_empty());
    s.remember_signatures(&[sig(1, 1_000), sig(2, 1_300)], 900)
        .await
        .unwrap();
    s.remember_signatures(&[sig(3, 1_100)], 950).await.unwrap();
    let mut seen = s.recent_signatures(1_000).await.unwrap();
    seen.sort_by_key(|s| s.mac[0]);
    assert_eq!(
        seen,
        vec![sig(2, 1_300), sig(3, 1_100)],
        "remembered until forget_at, not after"
    );
    // A later write may sweep the forgotten ones; the others stay.
    s.remember_signatures(&[], 1_200).await.unwrap();
    assert_eq!(
        s.recent_signatures(1_200).await.unwrap(),
        vec![sig(2, 1_300)]
    );
    assert!(s.recent_signatures(1_300).await.unwrap().is_empty());
}
