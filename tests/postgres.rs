//! The real binary on PostgreSQL (SPEC "Several gateways, one PostgreSQL"): the database going
//! away and coming back (a TCP relay in front of it, cut or stalled), starting without it, a
//! refused login, the password kept out of every output, tokens sealed in every table, and
//! the `[storage]` keys `check` refuses.

mod support;

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use support::binary::{free_port, Running};
use support::fake_slack::{FakeSlack, Grant};
use support::oauth_harness::{echo_upstream, CLIENT_ID, CLIENT_SECRET};
use support::pg_binary::{
    begin_install, event, event_body, finish_install, install, install_grant, pg_storage,
    run_binary, send_signed, wait_readyz, write_config_timed, DbUrl, Exit,
};
use support::postgres::Schema;
use support::tcp_relay::TcpRelay;

/// A password no output may show. With the test database's trust auth any password logs in;
/// a database that does check passwords keeps its own (see [`with_some_password`]).
const PASSWORD: &str = "hunter2secret";

/// The test database's URL parts, with a password for the tests to look for in outputs: its
/// own when it has one, else [`PASSWORD`].
fn with_some_password() -> (DbUrl, String) {
    let db = DbUrl::test_database();
    let pw = db.password.clone().unwrap_or_else(|| PASSWORD.to_owned());
    (db.with_password(&pw), pw)
}

fn assert_hidden(what: &str, text: &str, password: &str) {
    assert!(
        !text.contains(password),
        "{what} shows the password:\n{text}"
    );
}

/// The one line the binary prints when it gives up: the last line of stderr, starting
/// `slack-gateway:`; panics unless there is exactly one such line.
fn final_line(exit: &Exit) -> &str {
    let finals: Vec<&str> = exit
        .stderr
        .lines()
        .filter(|l| l.starts_with("slack-gateway:"))
        .collect();
    assert_eq!(finals.len(), 1, "one final error line:\n{}", exit.stderr);
    assert_eq!(
        exit.stderr.lines().rev().find(|l| !l.trim().is_empty()),
        Some(finals[0]),
        "the error line is the last one:\n{}",
        exit.stderr
    );
    finals[0]
}

/// The database through a relay, a gateway on it, two installations: one cached, one not.
struct Outage {
    // Dropped in this order: the gateway first, the schema and folder last.
    gw: Running,
    relay: TcpRelay,
    slack: FakeSlack,
    schema: Schema,
    _dir: tempfile::TempDir,
    public: u16,
    admin: u16,
    password: String,
    /// The cached installation's token, forwarded before the outage.
    cached_token: String,
    /// The request (timestamp, body) that forwarded it.
    seen: (u64, String),
}

const CACHED: &str = "T0CACHED";
const COLD: &str = "T0COLD";

impl Outage {
    async fn start(tag: &str, upstream_timeout: &str) -> Outage {
        let schema = Schema::new(tag);
        let (db, password) = with_some_password();
        let relay = TcpRelay::start(db.addr()).await;
        let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
        let upstream = echo_upstream().await;
        let dir = tempfile::tempdir().unwrap();
        let storage = pg_storage(&db.via(relay.port).url(), &schema.name, "");
        let (path, public, admin) = write_config_timed(
            dir.path(),
            upstream,
            &slack.toml(),
            upstream_timeout,
            &storage,
            "",
        );
        let gw = Running::start(&path, dir.path());
        gw.wait_ready(admin).await;
        install(&slack, public, CACHED).await;
        install(&slack, public, COLD).await;
        // Saving forgets a record locally; this event reads it back and caches it.
        let seen = (slack_gateway::http::unix_now(), event_body(CACHED));
        let (status, cached_token) = send_signed(public, seen.0, &seen.1).await;
        assert_eq!(status, 200, "{cached_token}");
        assert!(
            cached_token.starts_with(&format!("xoxb-{CACHED}-"))
                && slack.token_is_valid(&cached_token),
            "forwarded with the installation's token: {cached_token}"
        );
        Outage {
            gw,
            relay,
            slack,
            schema,
            _dir: dir,
            public,
            admin,
            password,
            cached_token,
            seen,
        }
    }

    /// The cached installation is forwarded with its token, a fresh request every time.
    async fn cached_is_forwarded(&self, what: &str) {
        let (status, token) = event(self.public, CACHED).await;
        assert_eq!(
            (status, token.as_str()),
            (200, self.cached_token.as_str()),
            "{what}"
        );
    }

    /// The uncached installation: 503 `store_unavailable`, within `limit` (upstream.timeout).
    async fn cold_is_refused_within(&self, limit: Duration) {
        let started = Instant::now();
        let (status, body) = event(self.public, COLD).await;
        let took = started.elapsed();
        assert_eq!((status, body.trim()), (503, "store_unavailable"));
        assert!(
            took < limit,
            "503 after {took:?}, past upstream.timeout {limit:?}"
        );
    }

    /// `/readyz` turns 503 and names the store (the relay's address), not the password.
    async fn readyz_names_the_store(&self) {
        let why = wait_readyz(self.admin, 503, Duration::from_secs(15)).await;
        assert!(
            why.starts_with("store unavailable: PostgreSQL")
                && why.contains(&format!("127.0.0.1:{}", self.relay.port)),
            "{why}"
        );
        assert_hidden("/readyz", &why, &self.password);
    }

    /// Replays of a request accepted before the outage and of one accepted during it are
    /// refused: the gateway checks them alone meanwhile.
    async fn replays_are_refused(&self) {
        let (status, reason) = send_signed(self.public, self.seen.0, &self.seen.1).await;
        assert_eq!(
            status, 401,
            "a replay of the request before the outage: {reason}"
        );
        assert!(reason.contains("replayed_request"), "{reason}");
        let during = (slack_gateway::http::unix_now(), event_body(CACHED));
        let (status, token) = send_signed(self.public, during.0, &during.1).await;
        assert_eq!((status, token.as_str()), (200, self.cached_token.as_str()));
        let (status, reason) = send_signed(self.public, during.0, &during.1).await;
        assert_eq!(
            status, 401,
            "a replay of a request during the outage: {reason}"
        );
        assert!(reason.contains("replayed_request"), "{reason}");
    }

    /// An install callback gets a 503 failure page (the install page itself needs no store).
    async fn install_fails_with_503(&self) {
        let started = begin_install(self.public).await;
        let grant = Grant::workspace("T0DURING", "U1");
        let (status, page) = finish_install(&self.slack, self.public, &started, grant).await;
        assert_eq!(status, 503, "{page}");
        assert!(page.contains("store_unavailable"), "{page}");
    }

    /// After the outage, without a restart: ready, the uncached installation forwarded, a new
    /// install working, and the same process all along.
    async fn recovered(&mut self) {
        wait_readyz(self.admin, 200, Duration::from_secs(20)).await;
        let (status, token) = event(self.public, COLD).await;
        assert_eq!(status, 200, "{token}");
        assert!(
            token.starts_with(&format!("xoxb-{COLD}-")) && self.slack.token_is_valid(&token),
            "the uncached installation forwarded with its token: {token}"
        );
        install(&self.slack, self.public, "T0AFTER").await;
        let (status, token) = event(self.public, "T0AFTER").await;
        assert_eq!(status, 200, "{token}");
        assert!(token.starts_with("xoxb-T0AFTER-"), "{token}");
        assert!(
            self.gw.child.try_wait().unwrap().is_none(),
            "recovered without a restart"
        );
        assert_hidden("the gateway's logs", &self.gw.stderr(), &self.password);
    }

    /// Changes the cached installation in the database (as if another replica rotated its
    /// token) without a trace in the change log, so that only dropping the whole cache on
    /// reconnecting can bring it in; the gateway keeps its copy meanwhile. The new token.
    async fn change_cached_behind_its_back(&self) -> String {
        let rotated = format!("xoxb-{CACHED}-changed-during-the-outage");
        let changed = self
            .schema
            .client()
            .await
            .execute(
                &format!(
                    "UPDATE {}.installations SET body = replace(body, $1, $2) WHERE key LIKE $3",
                    self.schema.name
                ),
                &[&self.cached_token, &rotated, &format!("%/{CACHED}/%")],
            )
            .await
            .unwrap();
        assert!(changed >= 2, "the bot and latest records: {changed}");
        self.cached_is_forwarded("cached, still the copy in memory")
            .await;
        rotated
    }

    /// Once the connection is back, the cache was dropped whole: the change made meanwhile is
    /// in force.
    async fn cache_was_dropped(&self, rotated: &str) {
        let (status, token) = event(self.public, CACHED).await;
        assert_eq!(
            (status, token.as_str()),
            (200, rotated),
            "the cache is dropped once the connection is back"
        );
    }
}

/// SPEC: the database down; cached installations keep being forwarded with their token
/// (replays checked locally), others get 503 `store_unavailable` within upstream.timeout, an
/// install callback a 503 failure page, `/readyz` 503 naming the store; all of it recovers
/// without a restart, the cache dropped whole once the connection is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_goes_away_and_comes_back() {
    let mut o = Outage::start("outage_cut", "2s").await;
    o.relay.cut().await;
    // At once, before the gateway may have noticed.
    o.cached_is_forwarded("cached, right after the cut").await;
    o.readyz_names_the_store().await;
    o.cold_is_refused_within(Duration::from_secs(2)).await;
    for i in 0..3 {
        o.cached_is_forwarded(&format!("cached, during the outage ({i})"))
            .await;
    }
    o.replays_are_refused().await;
    o.install_fails_with_503().await;
    o.cold_is_refused_within(Duration::from_secs(2)).await;

    let rotated = o.change_cached_behind_its_back().await;
    o.relay.restore().await;
    o.recovered().await;
    o.cache_was_dropped(&rotated).await;
}

/// The same when the database hangs instead of refusing (packets dropped, a network
/// partition): the uncached installation still gets its 503 within upstream.timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_hangs_and_comes_back() {
    let mut o = Outage::start("outage_stall", "4s").await;
    o.relay.stall();
    o.cached_is_forwarded("cached, right after the stall").await;
    o.cold_is_refused_within(Duration::from_secs(4)).await;
    o.readyz_names_the_store().await;
    o.cached_is_forwarded("cached, during the stall").await;
    o.replays_are_refused().await;
    o.cold_is_refused_within(Duration::from_secs(4)).await;
    o.install_fails_with_503().await;
    let rotated = o.change_cached_behind_its_back().await;
    o.relay.restore().await;
    o.recovered().await;
    o.cache_was_dropped(&rotated).await;
}

/// A config for the binary on the storage section given; its path, public and admin ports.
fn config_with_storage(dir: &std::path::Path, storage: &str) -> (std::path::PathBuf, u16, u16) {
    // Nothing listens upstream: these gateways never get as far as forwarding.
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], free_port()));
    let slack = format!("client_id = \"{CLIENT_ID}\"\nclient_secret = \"{CLIENT_SECRET}\"\n");
    write_config_timed(dir, upstream, &slack, "2s", storage, "")
}

/// SPEC: an unreachable database at start is retried. Here it comes up a moment later (a
/// relay opened on the port the gateway was told), and the gateway starts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_that_comes_up_late_is_waited_for() {
    let schema = Schema::new("late");
    let db = DbUrl::test_database();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let storage = pg_storage(&db.via(port).url(), &schema.name, "");
    let (path, _, admin) = config_with_storage(dir.path(), &storage);
    let mut gw = Running::start(&path, dir.path());
    // It warns that it cannot reach the database, naming it, and keeps running.
    let host = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !gw
        .stderr()
        .lines()
        .any(|l| l.contains("WARN") && l.contains(&host))
    {
        assert!(
            Instant::now() < deadline,
            "no warning naming {host}:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        gw.child.try_wait().unwrap().is_none(),
        "gave up at once:\n{}",
        gw.stderr()
    );
    let _relay = TcpRelay::start_on(port, db.addr()).await;
    gw.wait_ready(admin).await;
}

/// SPEC: a database that never answers is retried for about 30 s, then exit 1 with one line
/// naming the host, never the password. (Takes those 30 s.)
#[test]
fn an_unreachable_database_exits_1_naming_the_host_not_the_password() {
    let port = free_port(); // closed
    let (db, password) = with_some_password();
    let dir = tempfile::tempdir().unwrap();
    let schema = support::postgres::schema_name("unreachable");
    let storage = pg_storage(&db.via(port).url(), &schema, "");
    let (path, _, _) = config_with_storage(dir.path(), &storage);
    let exit = run_binary(
        &[OsStr::new("--config"), path.as_os_str()],
        Duration::from_secs(120),
    );
    assert!(
        !exit.timed_out,
        "still running after 120 s:\n{}",
        exit.stderr
    );
    assert_eq!(exit.code, Some(1), "{}", exit.stderr);
    let line = final_line(&exit);
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    let retries = exit
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains(&format!("127.0.0.1:{port}")))
        .count();
    assert!(retries >= 1, "it warned while retrying:\n{}", exit.stderr);
    assert_hidden("stderr", &exit.stderr, &password);
    assert_hidden("stdout", &exit.stdout, &password);
}

/// SPEC: a refused login exits 1 at once (well before the 30 s of retries), the same way: a
/// role that does not exist, a database that does not exist.
#[test]
fn a_refused_login_exits_1_at_once() {
    let (db, password) = with_some_password();
    let cases = [
        (db.with_user("no_such_role_sgw"), "no_such_role_sgw"),
        // The test database's own password, if any: refused for the database, not the login.
        (
            DbUrl::test_database().with_dbname("no_such_database_sgw"),
            "no_such_database_sgw",
        ),
    ];
    for (url, named) in cases {
        let dir = tempfile::tempdir().unwrap();
        let schema = support::postgres::schema_name("refused");
        let (path, _, _) = config_with_storage(dir.path(), &pg_storage(&url.url(), &schema, ""));
        let exit = run_binary(
            &[OsStr::new("--config"), path.as_os_str()],
            Duration::from_secs(15),
        );
        assert!(
            !exit.timed_out,
            "{named}: still running after 15 s, retrying a refused login:\n{}",
            exit.stderr
        );
        assert_eq!(exit.code, Some(1), "{}", exit.stderr);
        let line = final_line(&exit);
        assert!(
            line.contains(&db.host_port()) && line.contains(named),
            "{named}: {line}"
        );
        assert_hidden("stderr", &exit.stderr, &password);
        assert_hidden("stdout", &exit.stdout, &password);
    }
}

/// SPEC: `check` validates the URL without printing the password, from `url` or `url_file`.
#[test]
fn check_prints_the_database_url_without_its_password() {
    let (db, password) = with_some_password();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("database-url");
    std::fs::write(&url_file, format!("{}\n", db.url())).unwrap();
    let shown = format!("postgres://{}@{}/{}", db.user, db.host_port(), db.dbname);
    let storages = [
        pg_storage(&db.url(), "checked", ""),
        format!(
            "[storage]\nbackend = \"postgres\"\nurl_file = \"{}\"\nschema = \"checked\"\n",
            url_file.display()
        ),
    ];
    for storage in storages {
        let (path, _, _) = config_with_storage(dir.path(), &storage);
        let exit = run_binary(
            &[
                OsStr::new("--config"),
                path.as_os_str(),
                OsStr::new("check"),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(exit.code, Some(0), "{}", exit.stderr);
        assert!(
            exit.stdout.contains(&shown) && exit.stdout.contains("postgres"),
            "the URL, without its password:\n{}",
            exit.stdout
        );
        assert_hidden("check's output", &exit.stdout, &password);
        assert_hidden("check's stderr", &exit.stderr, &password);
    }
}

/// SPEC: `storage.encryption_key` seals tokens in the database as in sled. An install with a
/// user token and rotating tokens (each event refreshes them), then every table of the
/// schema dumped as text: with the key, no token the fake Slack issued; without it the same
/// dump finds them (so the check can fail).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sealed_tokens_appear_in_no_table() {
    let (dump, tokens, current) = dump_after_install_and_rotation(true).await;
    assert!(
        tokens.len() >= 6,
        "bot, user and refresh tokens: {tokens:?}"
    );
    for t in &tokens {
        assert!(
            !dump.contains(t.as_str()),
            "a token in the database: {t}\n{dump}"
        );
    }
    for prefix in ["xoxb-", "xoxp-", "xoxe.", "xoxe-"] {
        assert!(!dump.contains(prefix), "{prefix} in the database:\n{dump}");
    }
    assert!(
        dump.contains("sealed:v1:"),
        "the tokens are there, sealed:\n{dump}"
    );
    assert!(!current.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn without_a_key_the_same_dump_shows_the_tokens() {
    let (dump, _, current) = dump_after_install_and_rotation(false).await;
    assert!(
        dump.contains(current.as_str()),
        "the bot token forwarded last is in plain text:\n{dump}"
    );
    for prefix in ["xoxe.xoxb-", "xoxe.xoxp-", "xoxe-"] {
        assert!(dump.contains(prefix), "{prefix} in plain text:\n{dump}");
    }
}

/// Installs a workspace with a user token through a gateway on a fresh schema (sealed when
/// `sealed`), sends events that rotate its tokens, stops the gateway and dumps every table.
/// Returns the dump, every token the fake Slack issued, and the bot token forwarded last.
async fn dump_after_install_and_rotation(sealed: bool) -> (String, Vec<String>, String) {
    let schema = Schema::new(if sealed { "sealed" } else { "plain" });
    let slack = FakeSlack::start(CLIENT_ID, CLIENT_SECRET).await;
    slack.enable_rotation(3600); // inside the two-hour refresh window: every event refreshes
    let upstream = echo_upstream().await;
    let dir = tempfile::tempdir().unwrap();
    let key = if sealed {
        // 32 bytes, base64.
        "encryption_key = \"c2xhY2stZ2F0ZXdheS10ZXN0LXNlYWxpbmcta2V5ISE=\"\n"
    } else {
        ""
    };
    let storage = pg_storage(&schema.url, &schema.name, key);
    let (path, public, admin) =
        write_config_timed(dir.path(), upstream, &slack.toml(), "5s", &storage, "");
    let mut gw = Running::start(&path, dir.path());
    gw.wait_ready(admin).await;
    let grant = Grant {
        user_scopes: vec!["search:read".into()],
        ..Grant::workspace("T0SEALED", "U0SEALER")
    };
    install_grant(&slack, public, grant).await;
    let mut current = String::new();
    for _ in 0..2 {
        let (status, token) = event(public, "T0SEALED").await;
        assert_eq!(status, 200, "{token}");
        assert!(slack.token_is_valid(&token), "{token}");
        current = token;
    }
    assert!(slack.refresh_calls() >= 2, "the tokens rotated");
    gw.signal("TERM");
    gw.child.wait().unwrap();

    let tables = schema
        .rows_as_text(&format!(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = '{}' ORDER BY 1",
            schema.name
        ))
        .await;
    let names: Vec<&str> = tables.iter().map(|r| r[0].as_str()).collect();
    assert!(names.contains(&"installations"), "{names:?}");
    let mut dump = String::new();
    for name in &names {
        let rows = schema
            .rows_as_text(&format!("SELECT * FROM {}.{name}", schema.name))
            .await;
        if *name == "installations" {
            assert!(rows.len() >= 3, "bot, latest and user records: {rows:?}");
        }
        dump.push_str(&format!("-- {name}\n"));
        for row in rows {
            dump.push_str(&row.join(" | "));
            dump.push('\n');
        }
    }
    (dump, slack.issued_tokens(), current)
}

/// SPEC: the `[storage]` keys of the postgres backend are checked at load; `check` refuses a
/// bad one with exit 1, naming the key (and never echoing a password).
#[test]
fn check_refuses_bad_storage_settings_naming_the_key() {
    let good = "postgres://gw@127.0.0.1:5432/app";
    let cases = [
        (
            "[storage]\nbackend = \"postgres\"\n".to_owned(),
            "storage.url",
        ),
        (
            format!("[storage]\nbackend = \"sled\"\npath = \"data\"\nurl = \"{good}\"\n"),
            "storage.url",
        ),
        (format!("[storage]\nurl = \"{good}\"\n"), "storage.url"),
        (
            pg_storage(good, "Bad-Schema", "").replace("pool_size = 4\n", ""),
            "storage.schema",
        ),
        (
            pg_storage(good, "x; DROP SCHEMA public", ""),
            "storage.schema",
        ),
        (pg_storage(good, "pg_catalog", ""), "storage.schema"),
        (
            pg_storage(good, "ok", "").replace("pool_size = 4", "pool_size = 0"),
            "storage.pool_size",
        ),
        (
            pg_storage(&format!("mysql://gw:{PASSWORD}@db.internal/app"), "ok", ""),
            "storage.url",
        ),
        (
            pg_storage(&format!("https://gw:{PASSWORD}@db.internal/app"), "ok", ""),
            "storage.url",
        ),
        (
            "[storage]\nbackend = \"mongodb\"\n".to_owned(),
            "storage.backend",
        ),
    ];
    for (storage, key) in cases {
        let dir = tempfile::tempdir().unwrap();
        let (path, _, _) = config_with_storage(dir.path(), &storage);
        let exit = run_binary(
            &[
                OsStr::new("--config"),
                path.as_os_str(),
                OsStr::new("check"),
            ],
            Duration::from_secs(30),
        );
        assert_eq!(exit.code, Some(1), "accepted:\n{storage}\n{}", exit.stdout);
        assert!(
            exit.stderr.contains(key),
            "the error names {key}:\n{storage}\n{}",
            exit.stderr
        );
        assert_hidden("check's stderr", &exit.stderr, PASSWORD);
    }
}
