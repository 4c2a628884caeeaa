//! The SQL of the postgres backend: its migrations and its statements, written once per
//! schema at open (the schema name is validated as a plain identifier, so it is spliced in
//! unquoted).
//!
//! Migrations are numbered and never edited once released: a new one is appended. Each must
//! stay backward compatible (add tables, columns with defaults, indexes; never drop or rename
//! what a running older gateway uses), so old and new replicas can share the database during
//! a rolling deploy.

/// `(version, name, sql)`; `{s}` stands for the schema.
pub(super) const MIGRATIONS: &[(i32, &str, &str)] = &[
    (
        1,
        "installations, state markers, replay signatures, change log, refresh leases",
        r#"
CREATE TABLE {s}.installations (
    -- inst/{app}/{enterprise|-}/{team|-}/{bot|latest|user/{id}}: sled's key layout. Compared
    -- byte for byte so a team's or an app's records are one key range.
    key        text COLLATE "C" PRIMARY KEY,
    app        text NOT NULL,
    kind       text NOT NULL,
    -- The versioned JSON envelope; tokens sealed when storage.encryption_key is set.
    body       text NOT NULL,
    version    bigint NOT NULL DEFAULT 1,
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX installations_bots ON {s}.installations (key) WHERE kind = 'bot';

CREATE TABLE {s}.used_states (
    id         text COLLATE "C" PRIMARY KEY,
    keep_until bigint NOT NULL
);
CREATE INDEX used_states_keep_until ON {s}.used_states (keep_until);

-- Replay protection across replicas. UNLOGGED: a check on the request path must not wait
-- on the WAL; PostgreSQL empties it after its own crash, which forgets at most 5 minutes of
-- signatures.
CREATE UNLOGGED TABLE {s}.replay_signatures (
    mac       bytea PRIMARY KEY,
    forget_at bigint NOT NULL
);
CREATE INDEX replay_signatures_forget_at ON {s}.replay_signatures (forget_at);

-- Every write to installations, for replicas whose LISTEN connection missed the NOTIFY.
CREATE TABLE {s}.changes (
    id  bigserial PRIMARY KEY,
    key text NOT NULL,
    at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX changes_at ON {s}.changes (at);

-- One token refresh at a time across replicas (see oauth::rotation).
CREATE TABLE {s}.refresh_leases (
    key    text COLLATE "C" PRIMARY KEY,
    holder text NOT NULL,
    until  timestamptz NOT NULL
);
"#,
    ),
    (
        2,
        "queued delivery: deliveries and their dedupe keys",
        r#"
-- Events accepted from Slack, waiting for the upstream (see store::queue). Times are Unix
-- milliseconds; next_attempt_at is also the lease of a claimed delivery.
CREATE TABLE {s}.deliveries (
    id              text COLLATE "C" PRIMARY KEY,
    event_id        text NOT NULL,
    api_app_id      text NOT NULL,
    team_id         text,
    state           text NOT NULL,
    attempts        integer NOT NULL DEFAULT 0,
    last_error      text,
    received_at     bigint NOT NULL,
    next_attempt_at bigint NOT NULL,
    path            text NOT NULL,
    content_type    text NOT NULL,
    -- store::queue::Sender as JSON: the peer, its scheme, the request's headers.
    sender          text NOT NULL DEFAULT '{}',
    body            bytea NOT NULL
);
CREATE INDEX deliveries_due ON {s}.deliveries (next_attempt_at) WHERE state = 'pending';

CREATE TABLE {s}.delivery_dedupe (
    key   text COLLATE "C" PRIMARY KEY,
    until bigint NOT NULL
);
CREATE INDEX delivery_dedupe_until ON {s}.delivery_dedupe (until);
"#,
    ),
];

/// The bookkeeping table of applied migrations.
pub(super) const MIGRATIONS_TABLE: &str = "CREATE SCHEMA IF NOT EXISTS {s};
CREATE TABLE IF NOT EXISTS {s}.schema_migrations (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now(),
    applied_by text NOT NULL
);";

/// Every statement, with the schema spliced in.
pub(super) struct Sql {
    pub get: String,
    pub upsert: String,
    pub log_changes: String,
    pub notify: String,
    pub delete_keys: String,
    pub delete_range: String,
    pub list: String,
    pub reseal: String,
    pub count_bots: String,
    pub mark_state: String,
    pub sweep_states: String,
    pub count_states: String,
    pub remember_signatures: String,
    pub forget_signatures: String,
    pub recent_signatures: String,
    pub claim_signatures: String,
    pub claim_lease: String,
    pub release_lease: String,
    pub poll_changes: String,
    pub prune_changes: String,
    /// The NOTIFY channel of this schema.
    pub channel: String,
}

impl Sql {
    pub fn new(schema: &str) -> Self {
        let s = |q: &str| q.replace("{s}", schema);
        // Channel names are identifiers: at most 63 bytes.
        let mut channel = format!("slack_gateway_{schema}");
        channel.truncate(63);
        Sql {
            get: s("SELECT body FROM {s}.installations WHERE key = $1"),
            // True when the row is new (xmax = 0: inserted, not updated), for the bot count.
            upsert: s("INSERT INTO {s}.installations (key, app, kind, body) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (key) DO UPDATE SET body = excluded.body,
                   version = {s}.installations.version + 1, updated_at = now()
                 RETURNING (xmax = 0)"),
            log_changes: s("INSERT INTO {s}.changes (key) SELECT unnest($1::text[])"),
            notify: "SELECT pg_notify($1, $2)".to_owned(),
            delete_keys: s("DELETE FROM {s}.installations WHERE key = ANY($1) RETURNING key"),
            delete_range: s(
                "DELETE FROM {s}.installations WHERE key >= $1 AND key < $2 RETURNING key",
            ),
            list: s("SELECT key, body FROM {s}.installations WHERE key >= $1 AND key < $2 ORDER BY key"),
            reseal: s("UPDATE {s}.installations SET body = $3, version = version + 1, updated_at = now()
                 WHERE key = $1 AND body = $2"),
            count_bots: s("SELECT count(*) FROM {s}.installations WHERE kind = 'bot'"),
            mark_state: s("INSERT INTO {s}.used_states (id, keep_until) VALUES ($1, $2) ON CONFLICT (id) DO NOTHING"),
            sweep_states: s("DELETE FROM {s}.used_states WHERE id IN
                 (SELECT id FROM {s}.used_states WHERE keep_until < $1 ORDER BY keep_until LIMIT $2)"),
            count_states: s("SELECT count(*) FROM {s}.used_states"),
            remember_signatures: s("INSERT INTO {s}.replay_signatures (mac, forget_at)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[])
                 ON CONFLICT (mac) DO UPDATE SET forget_at = GREATEST({s}.replay_signatures.forget_at, excluded.forget_at)"),
            forget_signatures: s("DELETE FROM {s}.replay_signatures WHERE forget_at <= $1"),
            recent_signatures: s("SELECT mac, forget_at FROM {s}.replay_signatures WHERE forget_at > $1"),
            // A row inserted, or an old one past its window taken over: a first sighting,
            // returned. The MACs of one call are distinct.
            claim_signatures: s("INSERT INTO {s}.replay_signatures (mac, forget_at)
                 SELECT * FROM unnest($1::bytea[], $2::bigint[])
                 ON CONFLICT (mac) DO UPDATE SET forget_at = excluded.forget_at
                 WHERE {s}.replay_signatures.forget_at <= $3
                 RETURNING mac"),
            // Claimed when free, lapsed, or already ours.
            claim_lease: s("INSERT INTO {s}.refresh_leases (key, holder, until)
                 VALUES ($1, $2, clock_timestamp() + $3::bigint * interval '1 millisecond')
                 ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, until = excluded.until
                 WHERE {s}.refresh_leases.until < clock_timestamp() OR {s}.refresh_leases.holder = excluded.holder"),
            release_lease: s("DELETE FROM {s}.refresh_leases WHERE key = $1 AND holder = $2"),
            poll_changes: s("SELECT id, key FROM {s}.changes WHERE at > clock_timestamp() - $1::bigint * interval '1 millisecond'"),
            prune_changes: s("DELETE FROM {s}.changes WHERE at < clock_timestamp() - interval '10 minutes'"),
            channel,
        }
    }
}
