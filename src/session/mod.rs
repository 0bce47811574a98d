//! The gateway's state store: sessions, local users, login history, the TOTP replay guard
//! and throttling counters, behind one [`SessionStore`] trait with two backends.
//!
//! # Layout
//! - this file: the records, [`StoreError`], the [`SessionStore`] trait and [`Stores`],
//!   which opens one store per tier from the configured URL.
//! - [`sqlite`]: the embedded default, one SQLite file per tier.
//! - [`redis`]: the shared backend for replicas, one key prefix per tier.
//! - [`manager`]: tokens, the in-process cache and revocation on top of the stores.
//! - `conformance.rs` (tests only): one suite that every backend must pass.
//!
//! Rules every backend keeps: time is always an argument (`now`, unix seconds), never read
//! here; a store serves exactly one tier and never sees another tier's data; session
//! tokens never reach the store (only their SHA-256); errors never carry stored values.
//! This module knows nothing of HTTP, cookies or caches.

pub mod manager;
pub mod redis;
pub mod sqlite;

#[cfg(test)]
mod conformance;

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use sha2::{Digest, Sha256};

pub use self::redis::RedisStore;
pub use self::sqlite::SqliteStore;
pub use crate::audit::{AuditEntry, AuditRecord};
pub use crate::changes::ChangeRequest;
pub use crate::killswitch::KillSwitch;

/// How long an expired session stays readable before [`SessionStore::purge_expired`] may
/// delete it: long enough to tell "expired" or "revoked (by whom, why)" from "unknown" when
/// an old cookie comes back, short enough that the table does not grow without bound.
pub const PURGE_GRACE_SECS: i64 = 24 * 3600;

/// Login events kept per (tenant, subject); older ones are dropped so a password-spraying
/// attacker cannot grow the store without bound.
pub const LOGIN_HISTORY_CAP: usize = 1000;

/// Longest user agent kept in login history; clients choose this header freely.
pub const USER_AGENT_MAX_CHARS: usize = 256;

/// Longest subject kept in login history; attackers choose attempted names freely. Long
/// enough for every account key, so the history of a real account is never cut off from it.
pub const HISTORY_SUBJECT_MAX_CHARS: usize = crate::account::KEY_MAX_CHARS;

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

/// Why and by whom a session was ended; shown to the user and kept for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When it was revoked (unix seconds).
    pub at: i64,
    /// Who revoked it: a subject, `operator:<name>`, `breaker`, `idp` (back-channel logout), ...
    pub by: String,
    /// Why, in a few words (`logout`, `password_changed`, `kill_switch`, ...).
    pub reason: String,
}

/// One signed-in session. The token itself is never stored: only `id_hash = SHA-256(token)`,
/// so a stolen store or backup cannot be replayed as cookies.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session token; the store's key.
    pub id_hash: [u8; 32],
    /// Tenant the session belongs to; a session is only valid on its tenant's hosts.
    pub tenant: String,
    /// Tier of the tenant; a session is never accepted in another tier.
    pub tier: String,
    /// The account key (see [`crate::account`]): the local user name, or
    /// `sso|<issuer id>|<sub>` for an SSO account, so that a local account and an SSO
    /// account with the same `sub` never share sessions, history or kill switches.
    pub subject: String,
    /// Who vouched for the user: [`crate::account::LOCAL_IDP`] or the IdP's issuer URL;
    /// asserted to the upstream as `idp`, so (`idp`, `sub`) names the user there too.
    pub idp: String,
    /// Name shown on pages and in the session list.
    pub display_name: String,
    /// Roles asserted to the upstream and used by policy (`tenant-admin`, ...).
    pub roles: Vec<String>,
    /// How the user signed in: `password` or `oidc`.
    pub auth_method: String,
    /// Authentication methods references (`pwd`, `otp`, ...), asserted to the upstream.
    pub amr: Vec<String>,
    /// When MFA last succeeded; step-up and password change ask for a fresh one.
    pub mfa_at: Option<i64>,
    /// When the session was created (sorting, display).
    pub created_at: i64,
    /// Last request seen (display, idle timeout).
    pub last_seen: i64,
    /// The session ends at this time unless it is used again.
    pub idle_expires_at: i64,
    /// The session ends at this time whatever happens.
    pub absolute_expires_at: i64,
    /// Client IP at sign-in, shown in the session list.
    pub ip: String,
    /// Client user agent at sign-in, shown in the session list.
    pub user_agent: String,
    /// Per-session random CSRF secret; forms must echo a value derived from it.
    pub csrf_token: String,
    /// The IdP's session id (`sid`), so back-channel logout can find the session.
    pub sso_sid: Option<String>,
    /// Set once the session was ended; a revoked session is never served again.
    pub revoked: Option<Revocation>,
}

impl SessionRecord {
    /// Whether the session may serve a request at `now`: the single place that rule lives.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked.is_none() && now < self.idle_expires_at && now < self.absolute_expires_at
    }

    /// The id shown to users and used in URLs (`DELETE /sessions/{id}`): short enough to
    /// read, and useless as a credential since it is a prefix of a hash of the token.
    pub fn public_id(&self) -> String {
        public_id_of(&self.id_hash)
    }

    /// The user's id at their identity provider: the local user name or the IdP's `sub`
    /// (what the upstream and the user see; [`SessionRecord::subject`] is the store's key).
    pub fn sub(&self) -> &str {
        crate::account::sub_of(&self.subject)
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.public_id())
            .field("tenant", &self.tenant)
            .field("tier", &self.tier)
            .field("subject", &self.subject)
            .field("idp", &self.idp)
            .field("display_name", &self.display_name)
            .field("roles", &self.roles)
            .field("auth_method", &self.auth_method)
            .field("amr", &self.amr)
            .field("mfa_at", &self.mfa_at)
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field("csrf_token", &"[redacted]")
            .field("sso_sid", &self.sso_sid)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// A local account (tenants without SSO, break-glass admins).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Tenant the account belongs to; user names are unique per tenant only.
    pub tenant: String,
    /// Login name and session subject.
    pub username: String,
    /// Name shown on pages.
    pub display_name: String,
    /// Roles given to the user's sessions.
    pub roles: Vec<String>,
    /// argon2id PHC string; secret-derived, never logged.
    pub password_hash: String,
    /// Base32 TOTP secret once enrolled; secret, never logged.
    pub totp_secret: Option<String>,
    /// When TOTP enrolment finished; `None` means the next login must enrol.
    pub totp_enrolled_at: Option<i64>,
    /// SHA-256 of each unused recovery code, in issue order; each works once.
    pub recovery_code_hashes: Vec<[u8; 32]>,
    /// A disabled account cannot sign in (its sessions are revoked separately).
    pub disabled: bool,
    /// When the account was created.
    pub created_at: i64,
    /// When the password last changed (sessions older than this are suspect).
    pub password_changed_at: i64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("tenant", &self.tenant)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("roles", &self.roles)
            .field("password_hash", &"[redacted]")
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| "[redacted]"))
            .field("totp_enrolled_at", &self.totp_enrolled_at)
            .field("recovery_codes_left", &self.recovery_code_hashes.len())
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("password_changed_at", &self.password_changed_at)
            .finish()
    }
}

/// One sign-in attempt, successful or not, shown to the user in their login history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginEvent {
    /// Assigned by the store on [`SessionStore::record_login`] (the value passed in is
    /// ignored); increases with every event of the tier, so it pages history stably.
    pub seq: i64,
    /// Tenant the attempt was made on.
    pub tenant: String,
    /// The account key (see [`crate::account`]); for unknown users the attempted name,
    /// see [`LoginEvent::attempted_name`].
    pub subject: String,
    /// When (unix seconds).
    pub time: i64,
    /// Client IP.
    pub ip: String,
    /// Client user agent, cut to [`USER_AGENT_MAX_CHARS`] by the store.
    pub user_agent: String,
    /// `password`, `totp`, `recovery` or `oidc`.
    pub method: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Why it failed (`bad_password`, `bad_code`, `unknown_user`, `locked`, `throttled`,
    /// `breaker`, `idp_error`, ...); `None` on success.
    pub reason: Option<String>,
}

impl LoginEvent {
    /// The subject to record for a name that matched no user: cut to
    /// [`HISTORY_SUBJECT_MAX_CHARS`] so an attacker cannot store megabytes per attempt.
    pub fn attempted_name(name: &str) -> String {
        truncate_chars(name, HISTORY_SUBJECT_MAX_CHARS)
    }
}

/// The store behind sessions, local users, login history, the TOTP replay guard and
/// throttling. One instance serves one tier. Every backend passes `conformance.rs`, so
/// callers never need to know which one they have.
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
    /// Deletes sessions whose absolute expiry passed before `now - PURGE_GRACE_SECS` and
    /// forgets expired replay-guard and throttle entries; returns how many sessions went.
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;

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
    /// [`LOGIN_HISTORY_CAP`] per (tenant, subject).
    async fn record_login(&self, e: &LoginEvent) -> Result<(), StoreError>;
    /// Newest first; `before_seq` pages backwards (None = from newest).
    async fn login_history(
        &self,
        tenant: &str,
        subject: &str,
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

    /// Stores a tripped kill switch of this tier, replacing one of the same scope.
    async fn put_kill_switch(&self, ks: &KillSwitch) -> Result<(), StoreError>;
    /// Removes the switch with this scope key, returning it if it was there.
    async fn delete_kill_switch(&self, scope_key: &str) -> Result<Option<KillSwitch>, StoreError>;
    /// Every stored switch of this tier (expired ones too, until they are deleted).
    async fn list_kill_switches(&self) -> Result<Vec<KillSwitch>, StoreError>;

    /// Appends to this tier's audit log: the store numbers the record and chains its hash
    /// to the last one atomically, so concurrent writers never fork the chain.
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;
    /// Audit records with `seq > after_seq`, oldest first, at most `limit`.
    async fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;

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

/// Where the stores live, parsed from the configured URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreLocation {
    /// `sqlite:<dir>`: one `<dir>/<tier>.sqlite3` file per tier.
    Sqlite(PathBuf),
    /// `redis://...` or `rediss://...`: one `portcullis:<tier>:` key prefix per tier.
    Redis(String),
}

impl StoreLocation {
    /// Parses `sqlite:<dir>` or `redis://...`; the error never repeats the URL (it may hold a password).
    pub fn parse(url: &str) -> Result<Self, StoreError> {
        if let Some(dir) = url.strip_prefix("sqlite:") {
            if dir.is_empty() {
                return Err(StoreError::Invalid("store URL: `sqlite:` needs a directory".into()));
            }
            return Ok(StoreLocation::Sqlite(PathBuf::from(dir)));
        }
        if url.starts_with("redis://") || url.starts_with("rediss://") {
            return Ok(StoreLocation::Redis(url.to_string()));
        }
        Err(StoreError::Invalid(
            "store URL (expected sqlite:DIR or redis://HOST:PORT)".into(),
        ))
    }
}

/// One store per tier, opened together at startup from the configured URL.
pub struct Stores {
    by_tier: BTreeMap<String, Arc<dyn SessionStore>>,
}

impl Stores {
    /// Opens (and creates if needed) the store of every tier. Redis tiers share one
    /// connection manager; each still sees only its own key prefix.
    pub async fn open<'a>(url: &str, tiers: impl IntoIterator<Item = &'a str>) -> Result<Self, StoreError> {
        let mut by_tier: BTreeMap<String, Arc<dyn SessionStore>> = BTreeMap::new();
        match StoreLocation::parse(url)? {
            StoreLocation::Sqlite(dir) => {
                for tier in tiers {
                    let store = SqliteStore::open(&dir, tier).await?;
                    by_tier.insert(tier.to_string(), Arc::new(store));
                }
            }
            StoreLocation::Redis(url) => {
                let manager = self::redis::connect(&url).await?;
                for tier in tiers {
                    let store = RedisStore::new(manager.clone(), tier)?;
                    by_tier.insert(tier.to_string(), Arc::new(store));
                }
            }
        }
        Ok(Stores { by_tier })
    }

    /// The store of a tier; `None` for a tier that was not opened.
    /// Opens the stores of every tier of a policy set: `url` is the store URL (the
    /// policy's, or an override), and a tier with its own Redis ACL user connects as that
    /// user, so one tier's credentials cannot read another tier's keys.
    pub async fn open_for(url: &str, config: &crate::config::Config) -> Result<Self, StoreError> {
        let location = StoreLocation::parse(url)?;
        let StoreLocation::Redis(redis_url) = &location else {
            return Stores::open(url, config.tiers.keys().map(String::as_str)).await;
        };
        let mut by_tier: BTreeMap<String, Arc<dyn SessionStore>> = BTreeMap::new();
        let mut shared = None;
        for tier in config.tiers.values() {
            let manager = match &tier.redis_auth {
                Some((user, password)) => {
                    let password = std::str::from_utf8(password.expose_secret())
                        .map_err(|_| StoreError::Invalid("redis_password (not UTF-8)".into()))?;
                    self::redis::connect_as(redis_url, Some((user, password))).await?
                }
                None => match &shared {
                    Some(m) => Clone::clone(m),
                    None => {
                        let m = self::redis::connect(redis_url).await?;
                        shared = Some(m.clone());
                        m
                    }
                },
            };
            by_tier.insert(tier.name.clone(), Arc::new(RedisStore::new(manager, &tier.name)?));
        }
        Ok(Stores { by_tier })
    }

    pub fn tier(&self, tier: &str) -> Option<Arc<dyn SessionStore>> {
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

/// The store key of a session token: SHA-256 of the token bytes as sent in the cookie.
pub fn session_id_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn public_id_of(id_hash: &[u8; 32]) -> String {
    let mut id = hex::encode(id_hash);
    id.truncate(16);
    id
}

fn is_public_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `tier` is spelled as a tier name: 1 to 64 of a-z, 0-9 and `-`.
pub(crate) fn is_tier_name(tier: &str) -> bool {
    !tier.is_empty()
        && tier.len() <= 64
        && tier
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Tier names become file names and key prefixes: only the characters config allows.
fn check_tier(tier: &str) -> Result<(), StoreError> {
    if is_tier_name(tier) {
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

/// A store only takes change requests of its own tier, with ids the changes module makes.
fn check_change(c: &ChangeRequest, tier: &str) -> Result<(), StoreError> {
    if c.tier != tier {
        return Err(StoreError::Invalid(
            "change request tier (not this store's tier)".into(),
        ));
    }
    if !crate::changes::is_change_id(&c.id) {
        return Err(StoreError::Invalid("change request id".into()));
    }
    Ok(())
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

fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionRecord {
        SessionRecord {
            id_hash: session_id_hash(b"token"),
            tenant: "acme".into(),
            tier: "prod".into(),
            subject: "alice".into(),
            idp: crate::account::LOCAL_IDP.to_string(),
            display_name: "Alice".into(),
            roles: vec![],
            auth_method: "password".into(),
            amr: vec!["pwd".into(), "otp".into()],
            mfa_at: Some(10),
            created_at: 10,
            last_seen: 10,
            idle_expires_at: 100,
            absolute_expires_at: 200,
            ip: "192.0.2.1".into(),
            user_agent: "ua".into(),
            csrf_token: "csrf-secret-value".into(),
            sso_sid: None,
            revoked: None,
        }
    }

    #[test]
    fn liveness_needs_both_expiries_and_no_revocation() {
        let mut s = session();
        assert!(s.is_live(99));
        assert!(!s.is_live(100), "idle expiry is exclusive");
        s.idle_expires_at = 300;
        assert!(!s.is_live(200), "absolute expiry wins over a later idle expiry");
        s.revoked = Some(Revocation {
            at: 50,
            by: "alice".into(),
            reason: "logout".into(),
        });
        assert!(!s.is_live(60));
    }

    #[test]
    fn public_id_is_a_16_hex_prefix_of_the_hash() {
        let s = session();
        assert_eq!(s.public_id(), hex::encode(s.id_hash)[..16]);
        assert!(is_public_id(&s.public_id()));
        assert!(!is_public_id("ABCDEF0123456789"));
        assert!(!is_public_id("0123"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = format!("{:?}", session());
        assert!(!s.contains("csrf-secret-value"));
        assert!(
            !s.contains(&hex::encode(session().id_hash)),
            "only the public id prefix is printed"
        );
        let u = UserRecord {
            tenant: "acme".into(),
            username: "alice".into(),
            display_name: "Alice".into(),
            roles: vec![],
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
            totp_enrolled_at: Some(1),
            recovery_code_hashes: vec![[0xab; 32]],
            disabled: false,
            created_at: 1,
            password_changed_at: 1,
        };
        let d = format!("{u:?}");
        assert!(
            !d.contains("argon2id") && !d.contains("JBSWY3DPEHPK3PXP") && !d.contains("abab"),
            "{d}"
        );
    }

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

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(
            LoginEvent::attempted_name(&"x".repeat(500)).len(),
            HISTORY_SUBJECT_MAX_CHARS
        );
    }
}
