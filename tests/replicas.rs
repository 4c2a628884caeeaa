//! Several gateways, one PostgreSQL (SPEC "Several gateways, one PostgreSQL"; issue 18): each
//! test runs two or three real gateway processes on one schema, behind no load balancer (the
//! test picks the replica), and shows what must hold across them: installs, reinstalls,
//! rotations, uninstalls and revocations seen everywhere (within 1 second where the SPEC
//! allows a delay), an OAuth state consumed once, a replay refused by the others, one token
//! refresh for all, no acknowledged install lost to a SIGKILL, migrations applied once, and
//! the move from sled by export and import.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::binary::{write_config_pg, write_config_with, Running, BIN};
use support::fake_slack::{FakeSlack, Fault, Grant};
use support::oauth_harness::{echo_upstream, CLIENT_ID, CLIENT_SECRET};
use support::postgres::Schema;
use support::replicas::*;

/// The SPEC's bound for a change made through one gateway to be in force on the others.
const IN_FORCE: Duration = Duration::from_secs(1);

async fn fake_slack() -> Arc<FakeSlack> {
    Arc::new(FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await)
}

/// The one bot token the fake Slack has issued for `team`.
fn only_bot_token(slack: &FakeSlack, team: &str) -> String {
    let tokens = bot_tokens_of(slack, team);
    assert_eq!(tokens.len(), 1, "bot tokens of {team}: {tokens:?}");
    tokens.into_iter().next().unwrap()
}

// --- 1. An install through A is injected by B ------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_install_through_one_gateway_is_injected_by_another_on_its_next_event() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_install");
    let upstream = echo_upstream().await;
    let gws = cluster(2, &slack, &schema, upstream).await;
    let (a, b) = (&gws[0], &gws[1]);

    // B looks the team up before it is installed: forwarded without a token.
    assert_eq!(token_for(b.public, "T0REPA").await, "-");
    install(&slack, a.public, Grant::workspace("T0REPA", "U1"))
        .await
        .unwrap();
    let token = only_bot_token(&slack, "T0REPA");
    // Its very next event: no delay is allowed for a new installation.
    assert_eq!(
        token_for(b.public, "T0REPA").await,
        token,
        "B injects A's install"
    );
    assert_eq!(token_for(a.public, "T0REPA").await, token);

    // And the other way round.
    assert_eq!(token_for(a.public, "T0REPB").await, "-");
    install(&slack, b.public, Grant::workspace("T0REPB", "U1"))
        .await
        .unwrap();
    let token_b = only_bot_token(&slack, "T0REPB");
    assert_eq!(
        token_for(a.public, "T0REPB").await,
        token_b,
        "A injects B's install"
    );
    assert!(slack.token_is_valid(&token) && slack.token_is_valid(&token_b));
}

// --- 2. Changes through A are in force on B within 1 second ----------------------------------

/// Two replicas with T0CHANGE installed through A, and B's cache warm with its token.
async fn warm_pair(
    slack: &FakeSlack,
    schema: &Schema,
    b_oauth_lines: &str,
) -> (Replica, Replica, String) {
    let upstream = echo_upstream().await;
    let a = Replica::start(slack, schema, upstream, "").await;
    let b = Replica::start(slack, schema, upstream, b_oauth_lines).await;
    install(slack, a.public, Grant::workspace("T0CHANGE", "U1"))
        .await
        .unwrap();
    let token = only_bot_token(slack, "T0CHANGE");
    for _ in 0..3 {
        assert_eq!(token_for(b.public, "T0CHANGE").await, token, "B is warm");
    }
    (a, b, token)
}

/// Polls B (a loop, up to the SPEC's bound after `since`) until it forwards `want`.
async fn in_force_on(b: &Replica, want: &str, since: Instant, what: &str) {
    match forwards_within(b.public, "T0CHANGE", want, since, IN_FORCE).await {
        Ok(after) => eprintln!("{what}: in force on B after {after:?}"),
        Err(seen) => panic!(
            "{what} through A not in force on B within {IN_FORCE:?}: B still forwards {seen:?}, \
             expected {want:?}"
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reinstall_through_one_gateway_is_in_force_on_another_within_a_second() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_reinstall");
    let (a, b, old) = warm_pair(&slack, &schema, "").await;
    install(&slack, a.public, Grant::workspace("T0CHANGE", "U1"))
        .await
        .unwrap();
    let since = Instant::now();
    let new: Vec<String> = bot_tokens_of(&slack, "T0CHANGE")
        .into_iter()
        .filter(|t| *t != old)
        .collect();
    assert_eq!(new.len(), 1, "the reinstall issued one new bot token");
    in_force_on(&b, &new[0], since, "a reinstall").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotation_by_one_gateway_is_in_force_on_another_within_a_second() {
    let slack = fake_slack().await;
    // Tokens live an hour: inside A's refresh window (the default, two hours), so A refreshes
    // on every event; outside B's (one minute), so B never refreshes and can only learn the
    // new token from A's write.
    slack.enable_rotation(3600);
    let schema = Schema::new("replicas_rotation");
    let (a, b, old) = warm_pair(&slack, &schema, "token_rotation_refresh_before = \"60s\"\n").await;
    assert_eq!(slack.refresh_calls(), 0, "B did not refresh");
    let new = token_for(a.public, "T0CHANGE").await;
    let since = Instant::now();
    assert_eq!(slack.refresh_calls(), 1, "A refreshed");
    assert_ne!(new, old, "A forwarded the refreshed token");
    assert!(slack.token_is_valid(&new));
    in_force_on(&b, &new, since, "a rotation").await;
    assert_eq!(slack.refresh_calls(), 1, "B used A's refresh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn app_uninstalled_through_one_gateway_is_in_force_on_another_within_a_second() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_uninstall");
    let (a, b, _) = warm_pair(&slack, &schema, "").await;
    let body = event_body("T0CHANGE", r#"{"type":"app_uninstalled"}"#);
    forwarded_token(a.public, &body).await;
    let since = Instant::now();
    in_force_on(&b, "-", since, "app_uninstalled").await;
    assert_eq!(token_for(a.public, "T0CHANGE").await, "-");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tokens_revoked_through_one_gateway_is_in_force_on_another_within_a_second() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_revoked");
    let (a, b, _) = warm_pair(&slack, &schema, "").await;
    // The fake's bot user of T0CHANGE is UT0CHANGEBOT.
    let body = event_body(
        "T0CHANGE",
        r#"{"type":"tokens_revoked","tokens":{"oauth":[],"bot":["UT0CHANGEBOT"]}}"#,
    );
    forwarded_token(a.public, &body).await;
    let since = Instant::now();
    in_force_on(&b, "-", since, "tokens_revoked").await;
    assert_eq!(token_for(a.public, "T0CHANGE").await, "-");
}

// --- 3. A state issued by A is consumed once, by B -------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_state_issued_by_one_gateway_is_consumed_once_by_another() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_state");
    let upstream = echo_upstream().await;
    let gws = cluster(2, &slack, &schema, upstream).await;
    let (a, b) = (&gws[0], &gws[1]);

    let flow = begin(a.public).await.unwrap();
    let code = slack.issue_code(
        Grant::workspace("T0STATE", "U1"),
        Some(&redirect_uri(b.public)),
    );
    let (status, page) = callback(b.public, &flow, &code).await.unwrap();
    assert_eq!(
        status,
        200,
        "B completes A's install: {:?}",
        failure_reason(&page)
    );
    assert_eq!(
        token_for(a.public, "T0STATE").await,
        only_bot_token(&slack, "T0STATE")
    );
    // The same callback again, through either: the state is spent everywhere.
    for (who, public) in [("A", a.public), ("B", b.public)] {
        let (status, page) = callback(public, &flow, &code).await.unwrap();
        assert_eq!(
            (status, failure_reason(&page).as_deref()),
            (400, Some("invalid_state")),
            "the replay through {who}"
        );
    }
    assert_eq!(
        slack.calls("oauth.v2.access").len(),
        1,
        "no replayed callback reached Slack"
    );

    // Raced: one state's callback sent to both at once (with a fresh code each, so only the
    // state can tell them apart) completes once.
    for round in 0..5 {
        let team = format!("T0RACE{round}");
        let flow = begin(a.public).await.unwrap();
        let codes: Vec<String> = [a.public, b.public]
            .iter()
            .map(|p| slack.issue_code(Grant::workspace(&team, "U1"), Some(&redirect_uri(*p))))
            .collect();
        let (ra, rb) = tokio::join!(
            callback(a.public, &flow, &codes[0]),
            callback(b.public, &flow, &codes[1])
        );
        let mut statuses = [ra.unwrap(), rb.unwrap()]
            .map(|(s, page)| (s, failure_reason(&page).unwrap_or_default()));
        statuses.sort();
        assert_eq!(
            statuses,
            [(200, String::new()), (400, "invalid_state".to_owned())],
            "round {round}"
        );
    }
}

// --- 4. A request accepted by A is a replay on B ---------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_request_accepted_by_one_gateway_is_refused_by_the_others_as_replayed() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_replay");
    let upstream = echo_upstream().await;
    let gws = cluster(3, &slack, &schema, upstream).await;
    let publics: Vec<u16> = gws.iter().map(|g| g.public).collect();

    for first in 0..publics.len() {
        let ts = slack_gateway::http::unix_now();
        let body = mention("T0REPLAY");
        let (status, text) = send_signed(publics[first], ts, &body).await.unwrap();
        assert_eq!(status, 200, "first sighting on replica {first}: {text}");
        for (i, public) in publics.iter().enumerate() {
            let (status, reason) = send_signed(*public, ts, &body).await.unwrap();
            assert_eq!(status, 401, "the replay on replica {i}: {reason}");
            assert!(reason.contains("replayed_request"), "replica {i}: {reason}");
        }
        // A new request (Slack's retry: a new timestamp, a new signature) still passes.
        let (status, _) = send_signed(publics[(first + 1) % 3], ts + 1, &body)
            .await
            .unwrap();
        assert_eq!(status, 200, "a retry is a new request");
    }

    // Raced: the same request to all three at once is forwarded once.
    for round in 0..5 {
        let ts = slack_gateway::http::unix_now();
        let body = mention("T0REPLAY");
        let tasks: Vec<_> = publics
            .iter()
            .map(|p| {
                let (p, body) = (*p, body.clone());
                tokio::spawn(async move { send_signed(p, ts, &body).await })
            })
            .collect();
        let mut answers = Vec::new();
        for t in tasks {
            answers.push(t.await.unwrap().unwrap());
        }
        let mut statuses: Vec<u16> = answers.iter().map(|r| r.0).collect();
        statuses.sort();
        assert_eq!(statuses, [200, 401, 401], "round {round}: {answers:?}");
    }
}

// --- 5. One expiring token, three replicas, one refresh --------------------------------------

/// Three replicas and T0EXPIRE installed with a token that lives `lifetime` seconds; tokens
/// issued after that live a day, so one refresh makes the token fresh for everyone.
async fn expiring_install(
    slack: &FakeSlack,
    schema: &Schema,
    lifetime: i64,
) -> (Vec<Replica>, String) {
    slack.enable_rotation(lifetime);
    let upstream = echo_upstream().await;
    let gws = cluster(3, slack, schema, upstream).await;
    install(slack, gws[0].public, Grant::workspace("T0EXPIRE", "U1"))
        .await
        .unwrap();
    let old = only_bot_token(slack, "T0EXPIRE");
    slack.enable_rotation(86_400);
    // The refresh takes a while: every replica sees the token expiring meanwhile.
    slack.set_refresh_delay(Duration::from_millis(400));
    (gws, old)
}

/// Sends `per_replica` events to each replica at once; every token forwarded.
async fn burst(gws: &[Replica], per_replica: usize) -> Vec<String> {
    let mut tasks = Vec::new();
    for g in gws {
        for _ in 0..per_replica {
            let public = g.public;
            tasks.push(tokio::spawn(
                async move { token_for(public, "T0EXPIRE").await },
            ));
        }
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.expect("every request is forwarded"));
    }
    tokens
}

/// After the burst: exactly one refresh, every forwarded token valid, and every replica on the
/// new token within a second.
async fn one_refresh_for_all(slack: &FakeSlack, gws: &[Replica], old: &str, tokens: &[String]) {
    assert_eq!(
        slack.refresh_calls(),
        1,
        "Slack received exactly one refresh"
    );
    for t in tokens {
        assert!(slack.token_is_valid(t), "forwarded an invalid token {t:?}");
    }
    let new: Vec<String> = bot_tokens_of(slack, "T0EXPIRE")
        .into_iter()
        .filter(|t| t != old)
        .collect();
    assert_eq!(new.len(), 1, "one new token");
    let since = Instant::now();
    for (i, g) in gws.iter().enumerate() {
        if let Err(seen) = forwards_within(g.public, "T0EXPIRE", &new[0], since, IN_FORCE).await {
            panic!("replica {i} still forwards {seen:?} a second after the refresh");
        }
    }
    assert_eq!(slack.refresh_calls(), 1, "and no refresh after it");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_seeing_an_expiring_token_make_one_refresh() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_expiring");
    // An hour left: inside the two-hour refresh window, still valid.
    let (gws, old) = expiring_install(&slack, &schema, 3600).await;
    let tokens = burst(&gws, 8).await;
    one_refresh_for_all(&slack, &gws, &old, &tokens).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_seeing_an_expired_token_make_one_refresh_and_wait_for_it() {
    let slack = fake_slack().await;
    let schema = Schema::new("replicas_expired");
    let (gws, old) = expiring_install(&slack, &schema, 1).await;
    // Setup, not an assertion: let the one-second token expire.
    while slack.token_is_valid(&old) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = burst(&gws, 8).await;
    assert!(
        tokens.iter().all(|t| *t != old),
        "the expired token was forwarded"
    );
    one_refresh_for_all(&slack, &gws, &old, &tokens).await;
}

// --- 6. A SIGKILL during installs loses none that were acknowledged --------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_sigkill_of_one_replica_during_installs_loses_no_acknowledged_install() {
    let slack = fake_slack().await;
    // Slow Slack answers keep installs in flight when the kill comes.
    slack.set_fault(Some(Fault::Delay(Duration::from_millis(40))));
    let schema = Schema::new("replicas_sigkill");
    let upstream = echo_upstream().await;
    let mut gws = cluster(3, &slack, &schema, upstream).await;
    let publics: Vec<u16> = gws.iter().map(|g| g.public).collect();
    // (team, replica) of every install that got a success page.
    let acked = Arc::new(Mutex::new(Vec::<(String, usize)>::new()));
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let (slack, acked) = (slack.clone(), acked.clone());
        let on = i as usize % 3;
        let public = publics[on];
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(i * 15)).await;
            let team = format!("T0KILL{i}");
            if install(&slack, public, Grant::workspace(&team, "U1"))
                .await
                .is_ok()
            {
                acked.lock().unwrap().push((team, on));
            }
        }));
    }
    // Kill replica 0 once it has acknowledged two of its seven installs.
    let deadline = Instant::now() + Duration::from_secs(20);
    while acked
        .lock()
        .unwrap()
        .iter()
        .filter(|(_, on)| *on == 0)
        .count()
        < 2
    {
        assert!(
            Instant::now() < deadline,
            "replica 0 acknowledged no installs"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    gws[0].kill();
    for t in tasks {
        t.await.unwrap();
    }
    slack.set_fault(None);
    let acked = acked.lock().unwrap().clone();
    let by_killed = acked.iter().filter(|(_, on)| *on == 0).count();
    eprintln!(
        "{} installs acknowledged, {by_killed} by the killed replica",
        acked.len()
    );
    assert!(by_killed >= 2);
    assert!(acked.len() < 20, "the kill cut some installs short");

    // Every acknowledged team, in the admin API of a survivor (through the CLI)...
    let out = gws[1].cli(&["installations", "list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Value = serde_json::from_slice(&out.stdout).unwrap();
    let ids: BTreeSet<&str> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    for (team, on) in &acked {
        assert!(
            ids.contains(team.as_str()),
            "{team} (acknowledged by replica {on}) is lost"
        );
    }
    // ...and injected by the other survivor with a working token.
    for (team, on) in &acked {
        let token = token_for(gws[2].public, team).await;
        assert_ne!(
            token, "-",
            "{team} (acknowledged by replica {on}) is not injected"
        );
        assert!(
            slack.token_is_valid(&token),
            "{team}: the token does not work"
        );
    }
}

// --- 7. Three replicas starting at once migrate once -----------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_starting_at_once_apply_each_migration_once() {
    let slack = fake_slack().await;
    let upstream = echo_upstream().await;
    for round in 0..3 {
        let schema = Schema::new("replicas_migrate");
        // Spawned together, then waited for together.
        let gws: Vec<Replica> = (0..3)
            .map(|_| Replica::spawn(&slack, &schema, upstream, ""))
            .collect();
        for g in &gws {
            g.running.wait_ready(g.admin).await;
        }
        let rows = schema
            .rows_as_text(&format!(
                "SELECT version, count(*) FROM {}.schema_migrations GROUP BY version ORDER BY version",
                schema.name
            ))
            .await;
        assert!(!rows.is_empty(), "round {round}: no migration recorded");
        for (i, row) in rows.iter().enumerate() {
            assert_eq!(
                row[0],
                (i + 1).to_string(),
                "round {round}: versions 1..n: {rows:?}"
            );
            assert_eq!(
                row[1], "1",
                "round {round}: one row per migration: {rows:?}"
            );
        }
        // Each migration was applied by one replica: as many "applied" lines in all three logs
        // together as there are migrations.
        let applied: usize = gws
            .iter()
            .map(|g| {
                g.running
                    .stderr()
                    .matches("applied a database migration")
                    .count()
            })
            .sum();
        assert_eq!(
            applied,
            rows.len(),
            "round {round}: migrations applied in all"
        );
        // None collided with another and had to start over: they queued on the lock.
        for (i, g) in gws.iter().enumerate() {
            let log = g.running.stderr();
            assert!(
                !log.contains("cannot open the PostgreSQL store yet"),
                "round {round}: replica {i} failed a first attempt:\n{log}"
            );
        }
        // And the three work on the one schema.
        install(
            &slack,
            gws[round].public,
            Grant::workspace("T0MIGRATE", "U1"),
        )
        .await
        .unwrap();
        for g in &gws {
            assert_ne!(token_for(g.public, "T0MIGRATE").await, "-");
        }
    }
}

// --- 8. From sled to PostgreSQL: export piped into import ------------------------------------

/// `installations export -` of `config`, as JSON lines.
fn exported(config: &std::path::Path) -> Vec<Value> {
    let out = cli(config, &["installations", "export", "-"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn export_from_sled_piped_into_import_on_postgres_copies_every_installation() {
    let slack = fake_slack().await;
    let upstream = echo_upstream().await;
    let sled_dir = tempfile::tempdir().unwrap();
    let (sled_config, public, admin) = write_config_with(
        sled_dir.path(),
        upstream,
        "\"chat:write\"",
        &slack.toml(),
        "",
    );
    let mut gw = Running::start(&sled_config, sled_dir.path());
    gw.wait_ready(admin).await;
    // Plain bot tokens, a team installed twice by two users (one with a user token), and
    // rotating tokens with their refresh tokens and expiry.
    let mut teams = Vec::new();
    for i in 0..3 {
        teams.push(format!("T0SLED{i}"));
        install(&slack, public, Grant::workspace(&teams[i], "U1"))
            .await
            .unwrap();
    }
    let mut with_user = Grant::workspace("T0SLED0", "U2");
    with_user.user_scopes = vec!["search:read".into()];
    install(&slack, public, with_user).await.unwrap();
    slack.enable_rotation(86_400);
    for i in 3..5 {
        teams.push(format!("T0SLED{i}"));
        install(&slack, public, Grant::workspace(&teams[i], "U1"))
            .await
            .unwrap();
    }
    let mut tokens = HashMap::new();
    for t in &teams {
        tokens.insert(t.clone(), token_for(public, t).await);
    }
    gw.signal("TERM");
    gw.child.wait().unwrap();

    let schema = Schema::new("replicas_from_sled");
    let pg_dir = tempfile::tempdir().unwrap();
    let (pg_config, pg_public, pg_admin) = write_config_pg(
        pg_dir.path(),
        upstream,
        "\"chat:write\"",
        &slack.toml(),
        &schema.toml(),
        "",
    );
    // export - | import -
    let mut export = Command::new(BIN)
        .args(["installations", "export", "-", "--config"])
        .arg(&sled_config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let import = Command::new(BIN)
        .args(["installations", "import", "-", "--config"])
        .arg(&pg_config)
        .stdin(Stdio::from(export.stdout.take().unwrap()))
        .output()
        .unwrap();
    let export = export.wait_with_output().unwrap();
    assert!(
        export.status.success(),
        "{}",
        String::from_utf8_lossy(&export.stderr)
    );
    assert!(
        import.status.success(),
        "{}",
        String::from_utf8_lossy(&import.stderr)
    );

    let from = exported(&sled_config);
    let to = exported(&pg_config);
    assert_eq!(
        from.len(),
        6,
        "five teams, one installed by two users: {from:#?}"
    );
    assert_eq!(to, from, "PostgreSQL holds what sled held");
    let rotating = from
        .iter()
        .filter(|l| l["bot_refresh_token"].is_string())
        .count();
    assert_eq!(
        rotating, 2,
        "the rotating installs carry their refresh tokens"
    );
    assert!(
        from.iter().any(|l| l["user_token"].is_string()),
        "and the user token"
    );

    // A gateway on PostgreSQL now serves them with the same tokens.
    let pg = Running::start(&pg_config, pg_dir.path());
    pg.wait_ready(pg_admin).await;
    for (team, token) in &tokens {
        assert!(token.starts_with("xox"), "{team}: {token}");
        assert_eq!(&token_for(pg_public, team).await, token, "{team}");
    }
}
