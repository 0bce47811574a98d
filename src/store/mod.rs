//! The gateway's state store: everything a tier keeps between requests and across
//! restarts, behind narrow traits by role, with two backends.
//!
//! # Layout
//! - this file: [`StoreError`]; one trait per role: [`SessionStore`] (sessions),
//!   [`AccountStore`] (local users, sign-in history, the TOTP replay guard),
//!   [`ThrottleStore`] (throttling counters), [`SwitchStore`] (kill switches),
//!   [`AuditLog`] (the hash-chained audit log), [`ChangeStore`] (four-eyes change
//!   requests), [`SsoStore`] (tenants' self-service SSO versions) and [`KeyStore`] (the
//!   tier's published public assertion keys); [`TierStore`], all of them together for one tier; and [`Stores`], which
//!   opens one [`TierStore`] per tier from the configured URL.
//! - [`sqlite`]: the embedded default, one SQLite file per tier.
//! - [`redis`]: the shared backend for replicas, one key prefix per tier.
//! - [`redis_connection`]: how that backend reaches Redis (one node, Sentinel, Cluster, TLS).
//! - [`events`]: change events between replicas on Redis pub/sub (none with SQLite).
//! - `conformance.rs` (tests only): one suite that every backend must pass.
//! - `hooked.rs` (tests only): a store that forwards to a real one and lets a test act
//!   after each call.
//!
//! Callers take only the trait of the role they use (`&dyn AuditLog`, ...); the backends
//! and the conformance suite implement and test them all as [`TierStore`].
//!
//! Rules every backend keeps: time is always an argument (`now`, unix seconds), never read
//! here; a store serves exactly one tier and never sees another tier's data; session
//! tokens never reach the store (only their SHA-256); errors never carry stored values.
//! The records are [`crate::records`] and [`crate::audit`]; this module knows nothing of
//! HTTP, cookies, caches or the rules of the services above it.

pub mod events;
pub mod redis;
pub mod redis_connection;
pub mod sqlite;

#[cfg(test)]
mod conformance;
#[cfg(test)]
pub(crate) mod hooked;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;
use crate::audit::{AuditEntry, AuditRecord};
use crate::records::session::is_public_id;
use crate::records::{
    ChangeRequest, KillSwitch, LoginEvent, Revocation, SessionRecord, SsoTest, SsoVersion, UserRecord,
};

/// How long an expired session stays readable before [`TierStore::purge_expired`] may
/// delete it: long enough to tell "expired" or "revoked (by whom, why)" from "unknown" when
/// an old cookie comes back, short enough that the table does not grow without bound.
pub const PURGE_GRACE_SECS: i64 = 24 * 3600;

/// Login events kept per (tenant, subject); older ones are dropped so a password-spraying
/// attacker cannot grow one user's history without bound.
pub const LOGIN_HISTORY_CAP: usize = 1000;

/// Login events kept per tenant, across its subjects: attempts at made-up user names
/// (each its own subject) cannot grow the store without bound either.
pub const TENANT_LOGIN_HISTORY_CAP: usize = 10_000;

/// What can go wrong in a store. Messages name the operation and a category, never a
/// stored value, so they are safe in logs and never leak hashes, secrets or tokens.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend could not be reached or failed the call; callers fail closed (503).
    #[error("session store unavailable ({0})")]
    Unavailable(String),
    /// The record already exists (e.g. a user name taken in the tenant).
    #[error("session store conflict: {0} already exists")]
    Conflict(&'static str),
    /// The record to change does not exist.
    #[error("session store: {0} not found")]
    NotFound(&'static str),
    /// Stored data could not be decoded; the value itself is not repeated here.
    #[error("session store data is corrupt ({0})")]
    Corrupt(&'static str),
    /// The caller passed something the store refuses (bad tier name, bad URL, ...).
    #[error("session store: invalid {0}")]
    Invalid(String),
}

/// Sessions of one tier: create, read, touch, revoke and list them.
#[async_trait::async_trait]
pub trait SessionStore: Send + Sync + 'static {
    /// Stores a new session (the id hash is fresh randomness, so it never collides).
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError>;
    /// The session with this id hash, live or not (callers check [`SessionRecord::is_live`]);
    /// `None` once purged or never created.
    async fn get_session(&self, id_hash: &[u8; 32]) -> Result<Option<SessionRecord>, StoreError>;
    /// Records activity: sets last_seen and idle_expires_at (never beyond absolute_expires_at).
    /// No-op on revoked sessions and on sessions no longer live at `now`: an expired session
    /// is never revived.
    async fn touch_session(&self, id_hash: &[u8; 32], now: i64, idle_expires_at: i64) -> Result<(), StoreError>;
    /// Marks one session revoked; returns false when it did not exist or was already revoked,
    /// so concurrent revocations report the session once.
    async fn revoke_session(&self, id_hash: &[u8; 32], rev: &Revocation) -> Result<bool, StoreError>;
    /// Revokes every not yet revoked session of (tenant, subject) except `keep`; returns the
    /// revoked id hashes (callers evict caches with them).
    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        subject: &str,
        keep: Option<&[u8; 32]>,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Revokes every not yet revoked session of a tenant (kill switch); returns revoked id hashes.
    async fn revoke_tenant_sessions(&self, tenant: &str, rev: &Revocation) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Revokes the not yet revoked sessions a tenant's IdP names by `sid` (back-channel
    /// logout); returns revoked id hashes.
    async fn revoke_sso_sessions(
        &self,
        tenant: &str,
        sso_sid: &str,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError>;
    /// Live sessions (not revoked, not expired at `now`) of a user, newest first.
    async fn list_user_sessions(&self, tenant: &str, subject: &str, now: i64)
    -> Result<Vec<SessionRecord>, StoreError>;
    /// Live sessions of a tenant (for tenant admins / operators), newest first, at most `limit`.
    async fn list_tenant_sessions(
        &self,
        tenant: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError>;
    /// The live session of this user whose [`SessionRecord::public_id`] is `public_id`;
    /// `None` for anyone else's session, so a URL id can never reach another user's session.
    async fn find_user_session_by_public_id(
        &self,
        tenant: &str,
        subject: &str,
        public_id: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        if !is_public_id(public_id) {
            return Ok(None);
        }
        let sessions = self.list_user_sessions(tenant, subject, now).await?;
        Ok(sessions.into_iter().find(|s| s.public_id() == public_id))
    }
}

/// Local accounts of one tier, their sign-in history and the TOTP replay guard.
#[async_trait::async_trait]
pub trait AccountStore: Send + Sync + 'static {
    /// Adds a local user; `Conflict` if (tenant, username) exists.
    async fn create_user(&self, u: &UserRecord) -> Result<(), StoreError>;
    /// The local user, if any.
    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRecord>, StoreError>;
    /// Replaces the whole record of an existing user; `NotFound` if it does not exist.
    async fn update_user(&self, u: &UserRecord) -> Result<(), StoreError>;
    /// Every local user of a tenant, sorted by user name.
    async fn list_users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError>;
    /// Atomically removes one recovery code hash from the user's list; true only for the one
    /// caller that removed it (concurrent use of the same code: exactly one true).
    async fn consume_recovery_code(
        &self,
        tenant: &str,
        username: &str,
        code_hash: &[u8; 32],
    ) -> Result<bool, StoreError>;

    /// Appends a login attempt (its `seq` is assigned here); keeps the newest
    /// [`LOGIN_HISTORY_CAP`] per (tenant, subject) and [`TENANT_LOGIN_HISTORY_CAP`] per
    /// tenant.
    async fn record_login(&self, e: &LoginEvent) -> Result<(), StoreError>;
    /// Newest first; `before_seq` pages backwards (None = from newest).
    async fn login_history(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError>;
    /// The tenant's attempts of every subject (local, SSO, and names no account has),
    /// newest first; `before_seq` pages backwards (None = from newest).
    async fn tenant_login_history(
        &self,
        tenant: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError>;

    /// Atomically accepts TOTP time-step `step` of (tenant, subject) only if it is later than
    /// the last step accepted for them, and then remembers it as the last (RFC 6238 §5.2):
    /// true for the one caller that advanced it, false for the same or an earlier step, so
    /// neither an observed code nor an unused older one (still within ±1 step) works after a
    /// later code did. The record may be forgotten after `expires_at`: pass a time after which
    /// `step` and every earlier step are no longer accepted by the clock check.
    async fn accept_totp_step(
        &self,
        tenant: &str,
        subject: &str,
        step: u64,
        expires_at: i64,
    ) -> Result<bool, StoreError>;
}

/// Throttling counters of one tier: fixed windows, atomic across every node sharing it.
#[async_trait::async_trait]
pub trait ThrottleStore: Send + Sync + 'static {
    /// Increments the counter `key` in the fixed window starting at the first hit and lasting
    /// `window_secs`; returns (count after increment, seconds until the window resets).
    /// Atomic: N concurrent hits see the counts 1..=N once each, so guesses get no extra tries.
    async fn hit(&self, key: &str, now: i64, window_secs: i64) -> Result<(u32, i64), StoreError>;
    /// Undoes one hit of `key` in the window ending at `window_end` (the `now` of the hit plus
    /// the seconds it returned), never below zero, and does nothing once that window is gone:
    /// a slot reserved before a check that turned out not to count (e.g. a success) goes back
    /// to the budget without ever touching a later window. Atomic, like `hit`.
    async fn give_back(&self, key: &str, window_end: i64) -> Result<(), StoreError>;
    /// Current count and seconds until reset without incrementing ((0, 0) when none/expired).
    async fn peek(&self, key: &str, now: i64) -> Result<(u32, i64), StoreError>;
    /// Forgets the counter (e.g. after a successful login).
    async fn clear(&self, key: &str) -> Result<(), StoreError>;
}

/// The tripped kill switches of one tier; they survive restarts.
#[async_trait::async_trait]
pub trait SwitchStore: Send + Sync + 'static {
    /// Stores a tripped kill switch of this tier, replacing one of the same scope.
    async fn put_kill_switch(&self, ks: &KillSwitch) -> Result<(), StoreError>;
    /// Removes the switch with this scope key, returning it if it was there.
    async fn delete_kill_switch(&self, scope_key: &str) -> Result<Option<KillSwitch>, StoreError>;
    /// Every stored switch of this tier (expired ones too, until they are deleted).
    async fn list_kill_switches(&self) -> Result<Vec<KillSwitch>, StoreError>;
}

/// The audit log of one tier, hash-chained.
#[async_trait::async_trait]
pub trait AuditLog: Send + Sync + 'static {
    /// Appends to this tier's audit log: the store numbers the record and chains its hash
    /// to the last one atomically, so concurrent writers never fork the chain.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;
    /// Audit records with `seq > after_seq`, oldest first, at most `limit`.
    async fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
}

/// The four-eyes change requests of one tier.
#[async_trait::async_trait]
pub trait ChangeStore: Send + Sync + 'static {
    /// Stores a new change request of this tier; `Conflict` if its id exists.
    async fn put_change(&self, c: &ChangeRequest) -> Result<(), StoreError>;
    /// The change request with this id, if this tier has it.
    async fn get_change(&self, id: &str) -> Result<Option<ChangeRequest>, StoreError>;
    /// Every change request of this tier, newest first (by `created_at`, then id).
    async fn list_changes(&self) -> Result<Vec<ChangeRequest>, StoreError>;
    /// Replaces the stored change request `c.id` with `c` only if the stored one's version
    /// is still `expected_version` (and `c.version` is greater); true for the one caller that
    /// won, so two concurrent approvals can never both apply. False when it does not exist.
    async fn replace_change_if(&self, c: &ChangeRequest, expected_version: u64) -> Result<bool, StoreError>;
}

/// What [`SsoStore::activate_sso`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SsoActivation {
    /// The draft is now the active version (returned as stored).
    Activated(Box<SsoVersion>),
    /// The tenant has no draft.
    NoDraft,
    /// The draft has no passing test of its current content; nothing changed.
    NotTested,
}

/// What [`SsoStore::rollback_sso`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum SsoRollback {
    /// This version, active before the current one, is active again.
    RolledBack(Box<SsoVersion>),
    /// No active version, or the active one replaced none; nothing changed.
    NothingToRestore,
}

/// The self-service SSO versions of the tenants of one tier. At most one draft and one
/// active version per tenant; every transition is atomic, so two admins (or a test
/// sign-in finishing while the draft is edited) can never activate untested content.
#[async_trait::async_trait]
pub trait SsoStore: Send + Sync + 'static {
    /// Saves `draft` as its tenant's draft: it replaces the current draft (keeping its
    /// number) or becomes a new version numbered after the newest. Whatever `draft` says,
    /// it is stored as a draft without a test or `replaced`; returns it as stored.
    async fn put_sso_draft(&self, draft: &SsoVersion) -> Result<SsoVersion, StoreError>;
    /// The tenant's current draft, if any.
    async fn get_sso_draft(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError>;
    /// The tenant's active version, if any.
    async fn get_sso_active(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError>;
    /// Every version of the tenant, newest (highest number) first.
    async fn list_sso_versions(&self, tenant: &str) -> Result<Vec<SsoVersion>, StoreError>;
    /// Records `test` as the result of the tenant's draft, only if the draft's digest is
    /// still `test.draft_digest()` (compare-and-set): false when there is no draft or it
    /// changed since the test began, and then nothing is stored.
    async fn record_sso_test(&self, tenant: &str, test: &SsoTest) -> Result<bool, StoreError>;
    /// Makes the draft active, only if its test passed against its current content; the
    /// version active until then becomes superseded and is remembered as `replaced`.
    async fn activate_sso(&self, tenant: &str) -> Result<SsoActivation, StoreError>;
    /// Makes the version the active one replaced active again, and the active one
    /// superseded; repeated roll-backs walk back through the activations.
    async fn rollback_sso(&self, tenant: &str) -> Result<SsoRollback, StoreError>;
}

/// A public assertion key a tier publishes, as its store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublishedKey {
    /// The key's `kid`: one entry per key, however many replicas publish it.
    pub kid: String,
    /// The public key as JWK JSON text, kept as given (the assertion module checks it when
    /// it reads it back, so a damaged entry never reaches a JWKS).
    pub jwk: String,
    /// Unix seconds until which the key stays published: after it, no assertion the key
    /// signed can still be valid.
    pub until: i64,
}

/// Longest `kid` a store keeps (ours are 16 hex digits).
const MAX_KID_LEN: usize = 64;

/// Longest JWK text a store keeps (a P-256 public JWK is about 200 bytes).
const MAX_JWK_LEN: usize = 4096;

/// The public assertion keys of one tier that every replica serves in its JWKS: kept in
/// the store, so a restarted replica or another one still publishes a key that signed
/// assertions which have not expired yet.
#[async_trait::async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Publishes `key` until `key.until`. A `kid` already published keeps the later of
    /// the two `until`s (atomically), so a replica republishing an older window never
    /// shortens another's.
    async fn publish_assertion_key(&self, key: &PublishedKey) -> Result<(), StoreError>;
    /// The keys still published at `now` (`until > now`), sorted by `kid`.
    async fn published_assertion_keys(&self, now: i64) -> Result<Vec<PublishedKey>, StoreError>;
}

/// A store keeps only well-formed key ids and JWKs of a sane size.
fn check_published_key(key: &PublishedKey) -> Result<(), StoreError> {
    let kid_ok = !key.kid.is_empty()
        && key.kid.len() <= MAX_KID_LEN
        && key
            .kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !kid_ok {
        return Err(StoreError::Invalid(
            "assertion key id (expected 1 to 64 of a-z, A-Z, 0-9, '-' and '_')".into(),
        ));
    }
    if key.jwk.is_empty() || key.jwk.len() > MAX_JWK_LEN {
        return Err(StoreError::Invalid(
            "assertion key JWK (empty or over 4096 bytes)".into(),
        ));
    }
    Ok(())
}

/// Everything one tier keeps: every role's store, as each backend implements them and
/// the conformance suite tests them. One instance serves one tier; every backend passes
/// `conformance.rs`, so callers never need to know which one they have.
#[async_trait::async_trait]
pub trait TierStore:
    SessionStore + AccountStore + ThrottleStore + SwitchStore + AuditLog + ChangeStore + SsoStore + KeyStore
{
    /// Deletes sessions whose absolute expiry passed before `now - PURGE_GRACE_SECS` and
    /// forgets expired replay-guard and throttle entries and assertion keys no longer
    /// published; returns how many sessions went.
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;
}

/// A tier as the stores connect for it: its name and, when the policy gives it one, its
/// Redis ACL user and password (so one tier's credentials cannot read another's keys).
pub struct TierAccess<'a> {
    /// The tier's name (its key prefix).
    pub name: &'a str,
    /// `(user, password)` of the tier's Redis ACL user.
    pub redis_user: Option<(&'a str, &'a crate::secret::SecretBytes)>,
}

impl TierAccess<'_> {
    /// The ACL user and its password as text, if the tier has one.
    pub(crate) fn redis_auth(&self) -> Result<Option<(&str, &str)>, StoreError> {
        match self.redis_user {
            Some((user, password)) => {
                let password = std::str::from_utf8(password.expose_secret())
                    .map_err(|_| StoreError::Invalid("redis_password (not UTF-8)".into()))?;
                Ok(Some((user, password)))
            }
            None => Ok(None),
        }
    }
}

/// Where the stores live, parsed from the configured URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite:<dir>`: one `<dir>/<tier>.sqlite3` file per tier.
    Sqlite(PathBuf),
    /// `redis://...`, `rediss://...`, `redis+sentinel://...`, `rediss+sentinel://...`,
    /// `redis+cluster://...` or `rediss+cluster://...` (see [`redis_connection`]): one key
    /// prefix per tier.
    Redis(String),
}

impl StoreLocation {
    /// Parses `sqlite:<dir>` or a Redis URL (checking its form); the error never repeats the
    /// URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(dir) = url.strip_prefix("sqlite:") {
            if dir.is_empty() {
                return Err(StoreError::Invalid("store URL: `sqlite:` needs a directory".into()));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(dir)));
        }
        if url.starts_with("redis://")
            || url.starts_with("rediss://")
            || url.starts_with("redis+")
            || url.starts_with("rediss+")
        {
            self::redis_connection::RedisTarget::parse(url)?;
            return Ok(StoreLocation::Redis(url.to_string()));
        }
        Err(StoreError::Invalid(
            "store URL (expected sqlite:DIR, redis://, rediss://, redis+sentinel:// or redis+cluster://)".into(),
        ))
    }
}

/// One store per tier, opened together at startup from the configured URL.
pub struct Stores {
    by_tier: BTreeMap<String, Arc<dyn TierStore>>,
}

impl Stores {
    /// Stores made elsewhere (tests wrap a real backend to pause or count calls).
    #[cfg(test)]
    pub(crate) fn from_tiers(by_tier: BTreeMap<String, Arc<dyn TierStore>>) -> Self {
        Stores { by_tier }
    }

    /// Opens (and creates if needed) the store of every tier. Redis tiers share one
    /// connection; each still sees only its own key prefix.
    pub async fn open<'a>(url: &str, tiers: impl IntoIterator<Item = &'a str>) -> Result<Self, StoreError> {
        let tiers: Vec<&str> = tiers.into_iter().collect();
        // A bad tier name is refused before any connection: the answer must not depend
        // on whether the store happens to be reachable.
        tiers.iter().try_for_each(|t| check_tier(t))?;
        let mut by_tier: BTreeMap<String, Arc<dyn TierStore>> = BTreeMap::new();
        match StoreLocation::parse(url)? {
            StoreLocation::Sqlite(dir) => {
                for tier in tiers {
                    let store = SqliteStore::open(&dir, tier).await?;
                    by_tier.insert(tier.to_string(), Arc::new(store));
                }
            }
            StoreLocation::Redis(url) => {
                let con = self::redis::connect(&url).await?;
                for tier in tiers {
                    let store = RedisStore::new(con.clone(), tier)?;
                    by_tier.insert(tier.to_string(), Arc::new(store));
                }
            }
        }
        Ok(Stores { by_tier })
    }

    /// Opens the stores of every tier of a policy set: `url` is the store URL (the
    /// policy's, or an override), and a tier with its own Redis ACL user connects as that
    /// user, so one tier's credentials cannot read another tier's keys.
    pub async fn open_for(url: &str, tiers: &[TierAccess<'_>]) -> Result<Self, StoreError> {
        let location = StoreLocation::parse(url)?;
        tiers.iter().try_for_each(|t| check_tier(t.name))?;
        let StoreLocation::Redis(redis_url) = &location else {
            return Stores::open(url, tiers.iter().map(|t| t.name)).await;
        };
        let mut by_tier: BTreeMap<String, Arc<dyn TierStore>> = BTreeMap::new();
        let mut shared = None;
        for tier in tiers {
            let con = match tier.redis_auth()? {
                Some(auth) => self::redis::connect_as(redis_url, Some(auth)).await?,
                None => match &shared {
                    Some(c) => Clone::clone(c),
                    None => {
                        let c = self::redis::connect(redis_url).await?;
                        shared = Some(c.clone());
                        c
                    }
                },
            };
            by_tier.insert(tier.name.to_string(), Arc::new(RedisStore::new(con, tier.name)?));
        }
        Ok(Stores { by_tier })
    }

    /// The store of a tier; `None` for a tier that was not opened.
    pub fn tier(&self, tier: &str) -> Option<Arc<dyn TierStore>> {
        self.by_tier.get(tier).cloned()
    }
}

impl fmt::Debug for Stores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Stores")
            .field("tiers", &self.by_tier.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Tier names become file names and key prefixes: only the names config allows.
fn check_tier(tier: &str) -> Result<(), StoreError> {
    if crate::tenancy::is_name(tier) {
        Ok(())
    } else {
        Err(StoreError::Invalid("tier name (expected a-z, 0-9 and '-')".into()))
    }
}

/// A store only takes sessions of its own tier, so a bug upstream cannot plant a session
/// of one tier in another tier's namespace.
fn check_session_tier(s: &SessionRecord, tier: &str) -> Result<(), StoreError> {
    if s.tier == tier {
        Ok(())
    } else {
        Err(StoreError::Invalid("session tier (not this store's tier)".into()))
    }
}

fn check_switch_tier(ks: &KillSwitch, tier: &str) -> Result<(), StoreError> {
    if ks.scope.tier() == tier {
        Ok(())
    } else {
        Err(StoreError::Invalid("kill switch tier (not this store's tier)".into()))
    }
}

/// A store only takes change requests of its own tier, with well-formed ids.
fn check_change(c: &ChangeRequest, tier: &str) -> Result<(), StoreError> {
    if c.tier != tier {
        return Err(StoreError::Invalid(
            "change request tier (not this store's tier)".into(),
        ));
    }
    if !crate::records::change::is_change_id(&c.id) {
        return Err(StoreError::Invalid("change request id".into()));
    }
    Ok(())
}

/// Tenant ids become key segments: only the names config allows.
fn check_sso_tenant(tenant: &str) -> Result<(), StoreError> {
    if crate::tenancy::is_name(tenant) {
        Ok(())
    } else {
        Err(StoreError::Invalid("tenant id".into()))
    }
}

/// The record a draft is stored as: a draft, without test or predecessor.
fn as_stored_draft(draft: &SsoVersion) -> Result<SsoVersion, StoreError> {
    check_sso_tenant(&draft.tenant)?;
    Ok(SsoVersion {
        state: crate::records::SsoState::Draft,
        test: None,
        replaced: None,
        ..draft.clone()
    })
}

fn encode_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|_| StoreError::Corrupt("record encoding"))
}

fn decode_json<T: serde::de::DeserializeOwned>(s: &str, what: &'static str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::Corrupt(what))
}

fn check_window(window_secs: i64) -> Result<(), StoreError> {
    if window_secs > 0 {
        Ok(())
    } else {
        Err(StoreError::Invalid("throttle window (must be positive)".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn store_urls_parse_and_errors_do_not_echo_them() {
        assert_eq!(
            StoreLocation::parse("sqlite:data").unwrap(),
            StoreLocation::Sqlite("data".into())
        );
        assert!(matches!(
            StoreLocation::parse("redis://127.0.0.1:6379/0").unwrap(),
            StoreLocation::Redis(_)
        ));
        for url in [
            "rediss://127.0.0.1:6380/?ca=/etc/redis/ca.pem",
            "redis+sentinel://10.0.0.1:26379,10.0.0.2:26379/mymaster",
            "redis+cluster://10.0.0.1:7000,10.0.0.2:7000",
        ] {
            assert!(
                matches!(StoreLocation::parse(url).unwrap(), StoreLocation::Redis(_)),
                "{url}"
            );
        }
        let err = StoreLocation::parse("redis+cluster://gw:hunter2@10.0.0.1:7000/3")
            .unwrap_err()
            .to_string();
        assert!(!err.contains("hunter2"), "{err}");
        let err = StoreLocation::parse("mysql://root:hunter2@db").unwrap_err().to_string();
        assert!(!err.contains("hunter2"), "{err}");
        assert!(StoreLocation::parse("sqlite:").is_err());
    }

    #[test]
    fn tier_names_are_safe_as_file_names_and_key_prefixes() {
        assert!(check_tier("prod").is_ok());
        assert!(check_tier("staging-2").is_ok());
        for bad in ["", "../etc", "a:b", "Prod", "a b", "a/b"] {
            assert!(check_tier(bad).is_err(), "{bad}");
        }
    }

    /// A bad tier name is refused as invalid before any connection is tried, so the
    /// answer does not depend on whether (or how quickly) the store answers.
    #[tokio::test]
    async fn bad_tier_names_are_refused_before_connecting() {
        // Port 1 on loopback: nothing listens there, so a connection attempt would fail
        // as unavailable, not as invalid.
        for url in ["redis://127.0.0.1:1", "redis+cluster://127.0.0.1:1,127.0.0.1:2"] {
            assert!(
                matches!(Stores::open(url, ["../prod"]).await, Err(StoreError::Invalid(_))),
                "{url}"
            );
            let tiers = [TierAccess {
                name: "a:b",
                redis_user: None,
            }];
            assert!(
                matches!(Stores::open_for(url, &tiers).await, Err(StoreError::Invalid(_))),
                "{url}"
            );
        }
    }
}
