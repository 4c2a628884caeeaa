//! The installation store: what `oauth.v2.access` returned for each workspace, org and user.
//!
//! [`InstallationStore`] is the one interface the rest of the gateway uses; [`sled::SledStore`]
//! is the embedded default and [`memory::MemoryStore`] a process-local one for tests and tools.
//! Every backend must pass [`contract::run_all`], the shared contract suite.
//!
//! Layout (every backend keeps the same logical records):
//! - records are scoped by the Slack app's `client_id`, so one store can serve several apps;
//! - a team is `(enterprise_id, team_id)`; an org-wide install is `(enterprise_id, none)` and is
//!   found by its enterprise alone;
//! - per team: the latest bot (`bot`), the latest installation whoever made it (`latest`), and
//!   one record per installing user (`user/{user_id}`) holding that user's token;
//! - records are versioned ([`RECORD_VERSION`]) so the format can change without a migration
//!   step that could lose data.
//!
//! `save` returns only once the write is durable: the OAuth callback acknowledges an install
//! after `save`, so a crash after the success page never loses it.

pub mod contract;
pub mod memory;
pub mod memory_queue;
pub mod postgres;
pub mod queue;
pub mod queue_contract;
mod read_cache;
mod record;
pub mod refresh_locks;
pub mod replay;
pub mod sealing;
pub mod sled;
mod sled_flush;
mod sled_queue;
pub mod states;

use std::fmt;
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use http::HeaderValue;
use serde::{Deserialize, Serialize};

/// Version written into every stored record.
pub const RECORD_VERSION: u32 = 1;

/// A Slack token. Serializes as itself (the store and export need it) but never `Debug`s.
#[derive(Clone, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub struct Token {
    value: String,
    /// The value as a (sensitive) header, built on first use: installations are shared from
    /// the store's read cache, so a token is checked and copied once, not once per request.
    header: OnceLock<Option<HeaderValue>>,
}

impl Token {
    pub fn new(s: impl Into<String>) -> Self {
        Token {
            value: s.into(),
            header: OnceLock::new(),
        }
    }
    /// The token itself, for the one header or API call that needs it.
    pub fn expose(&self) -> &str {
        &self.value
    }
    /// The token as a sensitive header value; `None` when it cannot be one (never the case
    /// for Slack's tokens).
    pub fn header_value(&self) -> Option<&HeaderValue> {
        self.header
            .get_or_init(|| {
                let mut v = HeaderValue::from_str(&self.value).ok()?;
                v.set_sensitive(true);
                Some(v)
            })
            .as_ref()
    }
}

impl PartialEq for Token {
    fn eq(&self, other: &Self) -> bool {
        self.value == other.value
    }
}

impl Eq for Token {}

impl From<String> for Token {
    fn from(value: String) -> Self {
        Token::new(value)
    }
}

impl From<Token> for String {
    fn from(t: Token) -> Self {
        t.value
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Show the token type prefix only (xoxb/xoxp/xoxe), which is not secret.
        let kind = self
            .value
            .split('-')
            .next()
            .filter(|p| p.starts_with("xox"))
            .unwrap_or("token");
        write!(f, "{kind}-<redacted>")
    }
}

/// One installation, with the field names of `slack_sdk`'s `Installation` so exports load in
/// Python as `Installation(**line)`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Installation {
    pub app_id: Option<String>,
    pub enterprise_id: Option<String>,
    pub enterprise_name: Option<String>,
    pub enterprise_url: Option<String>,
    pub team_id: Option<String>,
    pub team_name: Option<String>,
    pub bot_token: Option<Token>,
    pub bot_id: Option<String>,
    pub bot_user_id: Option<String>,
    /// Comma-joined, as `slack_sdk` writes it.
    pub bot_scopes: Option<String>,
    pub bot_refresh_token: Option<Token>,
    /// Unix seconds.
    pub bot_token_expires_at: Option<i64>,
    pub user_id: String,
    pub user_token: Option<Token>,
    pub user_scopes: Option<String>,
    pub user_refresh_token: Option<Token>,
    pub user_token_expires_at: Option<i64>,
    pub incoming_webhook_url: Option<String>,
    pub incoming_webhook_channel: Option<String>,
    pub incoming_webhook_channel_id: Option<String>,
    pub incoming_webhook_configuration_url: Option<String>,
    pub is_enterprise_install: bool,
    pub token_type: Option<String>,
    /// Unix seconds, fractional.
    pub installed_at: f64,
}

impl Installation {
    /// The team this installation belongs to.
    pub fn team_ref(&self) -> TeamRef {
        TeamRef::new(
            self.enterprise_id.as_deref(),
            self.team_id.as_deref(),
            self.is_enterprise_install,
        )
    }

    /// The id the admin API and CLI use: the team id, or the enterprise id of an org-wide
    /// install.
    pub fn admin_id(&self) -> String {
        self.team_ref().admin_id()
    }
}

/// Which team's records: `(enterprise, team)`, or `(enterprise, none)` for an org-wide install.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TeamRef {
    pub enterprise_id: Option<String>,
    /// `None` for an org-wide install (found by enterprise alone).
    pub team_id: Option<String>,
}

impl TeamRef {
    /// The record key of a team. An org-wide install ignores the team id.
    pub fn new(
        enterprise_id: Option<&str>,
        team_id: Option<&str>,
        is_enterprise_install: bool,
    ) -> Self {
        let clean = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_owned);
        let enterprise_id = clean(enterprise_id);
        let team_id = if is_enterprise_install && enterprise_id.is_some() {
            None
        } else {
            clean(team_id)
        };
        TeamRef {
            enterprise_id,
            team_id,
        }
    }

    /// The org-wide record of this team's enterprise, if it has one.
    pub fn org(&self) -> Option<TeamRef> {
        self.enterprise_id.as_ref().map(|e| TeamRef {
            enterprise_id: Some(e.clone()),
            team_id: None,
        })
    }

    pub fn admin_id(&self) -> String {
        match (&self.team_id, &self.enterprise_id) {
            (Some(t), _) => t.clone(),
            (None, Some(e)) => e.clone(),
            (None, None) => "-".to_owned(),
        }
    }
}

/// Why the store failed. Details go to logs; clients see a 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// `reason` is the cause with its own causes, on one line: the error is shown whole by
    /// itself, without a chain that would repeat it.
    #[error("cannot open the installation store at {path}: {reason}")]
    Open { path: String, reason: String },
    #[error("installation store I/O failed: {0}")]
    Io(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("stored record {key} is corrupt: {reason}")]
    Corrupt { key: String, reason: String },
    /// The backend cannot be reached now (a database that went away); retried by the caller.
    #[error("installation store unavailable: {0}")]
    Unavailable(String),
    #[error("invalid id {0:?}: ids must be non-empty and contain no '/'")]
    InvalidId(String),
}

/// An error and its sources on one line, for logs.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

/// The storage interface. Implementations must pass [`contract::run_all`].
#[async_trait]
pub trait InstallationStore: Send + Sync + 'static {
    /// Saves an installation as `slack_sdk` does: the team's latest installation, its latest
    /// bot (when the installation has a bot token) and the installing user's record. Durable
    /// when it returns.
    async fn save(&self, app: &str, inst: &Installation) -> Result<(), StoreError>;

    /// The team's latest bot installation.
    async fn find_bot(&self, app: &str, team: &TeamRef)
        -> Result<Option<Installation>, StoreError>;

    /// The latest installation made by `user_id` in the team (with that user's token).
    async fn find_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Installation>, StoreError>;

    /// [`find_bot`](Self::find_bot) for the request path: the record shared, not copied. A
    /// backend that keeps decoded records in memory returns them without cloning.
    async fn find_bot_shared(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        Ok(self.find_bot(app, team).await?.map(Arc::new))
    }

    /// [`find_user`](Self::find_user), shared like [`find_bot_shared`](Self::find_bot_shared).
    async fn find_user_shared(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<Option<Arc<Installation>>, StoreError> {
        Ok(self.find_user(app, team, user_id).await?.map(Arc::new))
    }

    /// The team's latest installation, whoever made it.
    async fn find_latest(
        &self,
        app: &str,
        team: &TeamRef,
    ) -> Result<Option<Installation>, StoreError>;

    /// Removes the team's bot. Returns how many records went.
    async fn delete_bot(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError>;

    /// Removes one user's installation record in the team.
    async fn delete_user(
        &self,
        app: &str,
        team: &TeamRef,
        user_id: &str,
    ) -> Result<usize, StoreError>;

    /// Removes everything stored for the team.
    async fn delete_team(&self, app: &str, team: &TeamRef) -> Result<usize, StoreError>;

    /// Every record of the app: for each team its bot, its latest installation and each user's.
    /// Used by the admin API and export; not on the request path.
    async fn list(&self, app: &str) -> Result<Vec<StoredRecord>, StoreError>;

    /// Overwrites one record of a team (a rotated token), leaving the others alone. Durable
    /// when it returns.
    async fn update_record(
        &self,
        app: &str,
        team: &TeamRef,
        kind: &RecordKind,
        inst: &Installation,
    ) -> Result<(), StoreError>;

    /// Records that the OAuth state `id` was used, to be remembered until `keep_until` (Unix
    /// seconds): an atomic insert-if-absent. Of any number of callers with the same `id`,
    /// concurrent or not, through this store or any other sharing its backend, exactly one
    /// gets `true`, and every later one `false` until the marker is swept. (PostgreSQL:
    /// `INSERT ... ON CONFLICT DO NOTHING`, `true` when a row was inserted.)
    ///
    /// States are self-verifying ([`crate::store::states`]): issuing one stores nothing, and a
    /// marker is written only for a callback carrying a state the gateway issued.
    async fn mark_state_used(&self, id: &str, keep_until: u64) -> Result<bool, StoreError>;

    /// Forgets at most `limit` markers whose `keep_until` is before `now`, earliest first;
    /// returns how many went. Its work follows what it removes (an index by `keep_until`),
    /// never a scan of every marker, and it does not block the async runtime.
    async fn sweep_used_states(&self, now: u64, limit: usize) -> Result<usize, StoreError>;

    /// How many state markers are stored. May count them one by one: for tests and tools,
    /// not the request path.
    async fn used_state_count(&self) -> Result<u64, StoreError>;

    /// Number of teams and orgs with a bot, across all apps (a metrics gauge).
    fn bot_count(&self) -> u64;

    /// Makes every write so far durable.
    async fn flush(&self) -> Result<(), StoreError>;

    /// Remembers verified request signatures, each until its `forget_at` (Unix seconds), so
    /// that replay protection covers its whole window across a restart. Written behind the
    /// request path, in batches ([`crate::store::Signature`]); may drop entries forgotten
    /// by `now`.
    async fn remember_signatures(&self, seen: &[Signature], now: u64) -> Result<(), StoreError>;

    /// Every remembered signature not yet forgotten at `now`.
    async fn recent_signatures(&self, now: u64) -> Result<Vec<Signature>, StoreError>;

    /// What and where the store is, for logs and `/readyz` (never a password).
    fn describe(&self) -> String;

    /// Why the store cannot serve now, or `None` while it can (`/readyz`). No I/O: a backend
    /// that can go away tracks its health in the background.
    fn unavailable(&self) -> Option<String> {
        None
    }

    /// True when several gateways share this store: a signature must then be claimed in it
    /// ([`claim_signature`](Self::claim_signature)) to be refused as a replay by the others,
    /// and a token refresh claimed ([`claim_refresh`](Self::claim_refresh)) so that one
    /// gateway makes it.
    fn is_shared(&self) -> bool {
        false
    }

    /// A shared store's replay check: records `sig` unless it is already there and not yet
    /// forgotten at `now`; `true` when this call recorded it (a first sighting anywhere).
    /// Atomic across gateways. An unshared store answers `true`: its gateway's own
    /// [`crate::store::replay::ReplayGuard`] decides.
    async fn claim_signature(&self, _sig: &Signature, _now: u64) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Claims the refresh of the record at `key` ([`record_key`]) for `ttl`: `true` when this
    /// gateway may refresh it now, `false` while another gateway holds the claim. Unshared
    /// stores always answer `true` (the process's own lock serializes refreshes).
    async fn claim_refresh(
        &self,
        _key: &str,
        _ttl: std::time::Duration,
    ) -> Result<bool, StoreError> {
        Ok(true)
    }

    /// Gives back a claim made by [`claim_refresh`](Self::claim_refresh).
    async fn release_refresh(&self, _key: &str) -> Result<(), StoreError> {
        Ok(())
    }

    /// Rewrites every record whose tokens are plaintext or sealed with a previous key under
    /// the current key; returns how many were rewritten.
    /// Queued delivery's storage, when the backend has one.
    fn deliveries(&self) -> Option<&dyn queue::DeliveryQueue> {
        None
    }

    async fn reseal(&self) -> Result<usize, StoreError> {
        Ok(0)
    }
}

/// A verified request's signature (its MAC) and when replay protection may forget it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub mac: [u8; 32],
    pub forget_at: u64,
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A MAC is no secret, but a log has no use for it either.
        f.debug_struct("Signature")
            .field("forget_at", &self.forget_at)
            .finish_non_exhaustive()
    }
}

/// A record as listed: which kind it is and the installation it holds.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRecord {
    pub team: TeamRef,
    pub kind: RecordKind,
    pub installation: Installation,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RecordKind {
    Bot,
    Latest,
    User(String),
}

/// A team's records from a listing.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct TeamRecords {
    pub bot: Option<Installation>,
    pub latest: Option<Installation>,
    /// Each installing user's record, by user id.
    pub users: Vec<(String, Installation)>,
}

/// Groups a listing by team (teams in key order).
pub fn group_by_team(
    records: Vec<StoredRecord>,
) -> std::collections::BTreeMap<TeamRef, TeamRecords> {
    let mut teams: std::collections::BTreeMap<TeamRef, TeamRecords> = Default::default();
    for r in records {
        let entry = teams.entry(r.team).or_default();
        match r.kind {
            RecordKind::Bot => entry.bot = Some(r.installation),
            RecordKind::Latest => entry.latest = Some(r.installation),
            RecordKind::User(u) => entry.users.push((u, r.installation)),
        }
    }
    teams
}

/// The bot for a request's identity: the team's own, else its org's org-wide install.
pub async fn find_bot_for(
    store: &dyn InstallationStore,
    app: &str,
    team: &TeamRef,
) -> Result<Option<Arc<Installation>>, StoreError> {
    if let Some(found) = store.find_bot_shared(app, team).await? {
        return Ok(Some(found));
    }
    match team.org() {
        Some(org) if org != *team => store.find_bot_shared(app, &org).await,
        _ => Ok(None),
    }
}

/// The acting user's installation, looked up like [`find_bot_for`].
pub async fn find_user_for(
    store: &dyn InstallationStore,
    app: &str,
    team: &TeamRef,
    user_id: &str,
) -> Result<Option<Arc<Installation>>, StoreError> {
    if let Some(found) = store.find_user_shared(app, team, user_id).await? {
        return Ok(Some(found));
    }
    match team.org() {
        Some(org) if org != *team => store.find_user_shared(app, &org, user_id).await,
        _ => Ok(None),
    }
}

/// `tokens_revoked` for a user: removes the user's record and the copies of the user's token
/// that the team's latest and bot records keep when that user installed last, so no revoked
/// token stays at rest (an export would carry it, and an import bring it back). Returns how
/// many records changed.
pub async fn revoke_user_token(
    store: &dyn InstallationStore,
    app: &str,
    team: &TeamRef,
    user_id: &str,
) -> Result<usize, StoreError> {
    let mut n = store.delete_user(app, team, user_id).await?;
    for kind in [RecordKind::Latest, RecordKind::Bot] {
        let found = match kind {
            RecordKind::Bot => store.find_bot(app, team).await?,
            _ => store.find_latest(app, team).await?,
        };
        let Some(mut inst) = found else { continue };
        if inst.user_id != user_id
            || (inst.user_token.is_none() && inst.user_refresh_token.is_none())
        {
            continue;
        }
        inst.user_token = None;
        inst.user_refresh_token = None;
        inst.user_token_expires_at = None;
        store.update_record(app, team, &kind, &inst).await?;
        n += 1;
    }
    Ok(n)
}

/// `tokens_revoked` for the bot: removes the team's bot record and the copies of the bot token
/// that its latest and per-user records keep (see [`revoke_user_token`] for why). Not on a hot
/// path: revocations are rare, so the team's records are found by listing the app.
pub async fn revoke_bot_token(
    store: &dyn InstallationStore,
    app: &str,
    team: &TeamRef,
) -> Result<usize, StoreError> {
    let mut n = store.delete_bot(app, team).await?;
    for r in store.list(app).await? {
        if r.team != *team || r.kind == RecordKind::Bot {
            continue;
        }
        let mut inst = r.installation;
        if inst.bot_token.is_none() && inst.bot_refresh_token.is_none() {
            continue;
        }
        inst.bot_token = None;
        inst.bot_refresh_token = None;
        inst.bot_token_expires_at = None;
        store.update_record(app, team, &r.kind, &inst).await?;
        n += 1;
    }
    Ok(n)
}

/// Stands for an absent enterprise or team in a key.
const NONE: &str = "-";

/// `inst/{app}/{enterprise|-}/{team|-}/`: the key prefix of a team's records. Backends that
/// keep keys share this layout so the contract suite sees one behaviour.
pub(crate) fn team_prefix(app: &str, team: &TeamRef) -> Result<String, StoreError> {
    fn part(s: &Option<String>) -> Result<&str, StoreError> {
        match s {
            Some(s) if s == NONE => Err(StoreError::InvalidId(s.clone())),
            Some(s) => check_id(s),
            None => Ok(NONE),
        }
    }
    let (app, enterprise, team) = (
        check_id(app)?,
        part(&team.enterprise_id)?,
        part(&team.team_id)?,
    );
    // One allocation, with room for the record kind the caller appends.
    let mut key = String::with_capacity(32 + app.len() + enterprise.len() + team.len());
    for piece in ["inst/", app, "/", enterprise, "/", team, "/"] {
        key.push_str(piece);
    }
    Ok(key)
}

/// Splits a key under `app_prefix` (`inst/{app}/`) into its team and record kind.
pub(crate) fn parse_record_key(
    app_prefix: &str,
    key: &str,
) -> Result<(TeamRef, RecordKind), StoreError> {
    let corrupt = |reason: &str| StoreError::Corrupt {
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let rest = key
        .strip_prefix(app_prefix)
        .ok_or_else(|| corrupt("key outside its app"))?;
    let mut parts = rest.splitn(3, '/');
    let (Some(e), Some(t), Some(kind)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(corrupt("unexpected key layout"));
    };
    let kind = match kind {
        "bot" => RecordKind::Bot,
        "latest" => RecordKind::Latest,
        k => match k.strip_prefix("user/") {
            Some(u) => RecordKind::User(u.to_owned()),
            None => return Err(corrupt("unexpected record kind")),
        },
    };
    let opt = |s: &str| (s != NONE).then(|| s.to_owned());
    Ok((
        TeamRef {
            enterprise_id: opt(e),
            team_id: opt(t),
        },
        kind,
    ))
}

/// The key of one of a team's records: [`team_prefix`] + the record kind. Backends that keep
/// keys build them here, so both lay them out alike.
pub fn record_key(app: &str, team: &TeamRef, kind: &RecordKind) -> Result<String, StoreError> {
    match kind {
        RecordKind::Bot => bot_key(app, team),
        RecordKind::Latest => latest_key(app, team),
        RecordKind::User(u) => user_key(app, team, u),
    }
}

/// The keys a [`InstallationStore::save`] writes, as `slack_sdk` saves: the team's latest
/// installation, its bot when the installation has a bot token, and the installing user's
/// record. Every backend saves through this, so they agree on what a save touches.
pub(crate) fn save_keys(app: &str, inst: &Installation) -> Result<Vec<String>, StoreError> {
    let prefix = team_prefix(app, &inst.team_ref())?;
    let mut keys = vec![format!("{prefix}latest")];
    if inst.bot_token.is_some() {
        keys.push(format!("{prefix}bot"));
    }
    if !inst.user_id.is_empty() {
        keys.push(format!("{prefix}user/{}", check_id(&inst.user_id)?));
    }
    Ok(keys)
}

/// `…/bot`: the team's latest bot.
pub(crate) fn bot_key(app: &str, team: &TeamRef) -> Result<String, StoreError> {
    let mut key = team_prefix(app, team)?;
    key.push_str("bot");
    Ok(key)
}

/// `…/latest`: the team's latest installation.
pub(crate) fn latest_key(app: &str, team: &TeamRef) -> Result<String, StoreError> {
    let mut key = team_prefix(app, team)?;
    key.push_str("latest");
    Ok(key)
}

/// `…/user/{user_id}`: one installing user's record.
pub(crate) fn user_key(app: &str, team: &TeamRef, user_id: &str) -> Result<String, StoreError> {
    let mut key = team_prefix(app, team)?;
    key.push_str("user/");
    key.push_str(check_id(user_id)?);
    Ok(key)
}

/// Checks an id that becomes part of a key.
pub(crate) fn check_id(s: &str) -> Result<&str, StoreError> {
    if s.is_empty() || s.contains(['/', '\0']) {
        Err(StoreError::InvalidId(s.to_owned()))
    } else {
        Ok(s)
    }
}

/// The versioned envelope every record is stored in.
#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub v: u32,
    pub installation: Installation,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_serialize_as_strings_and_cache_a_sensitive_header() {
        let t = Token::new("xoxb-1-abc");
        assert_eq!(serde_json::to_string(&t).unwrap(), "\"xoxb-1-abc\"");
        let back: Token = serde_json::from_str("\"xoxb-1-abc\"").unwrap();
        let v = t.header_value().expect("a header value");
        assert_eq!(v, "xoxb-1-abc");
        assert!(v.is_sensitive());
        // A token whose header was built equals one whose header was not.
        assert_eq!(t, back);
        assert_eq!(t.clone().header_value(), Some(v));
        assert_eq!(format!("{t:?}"), "xoxb-<redacted>");
        assert!(Token::new("bad\nvalue").header_value().is_none());
    }
}
