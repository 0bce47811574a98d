//! The embedded [`TierStore`]: one SQLite file per tier (`<dir>/<tier>.sqlite3`), the
//! default that needs no setup.
//!
//! Owns the schema and its migrations. All SQLite calls run on tokio's blocking pool, never
//! on the async threads: one writer connection (every write is a `BEGIN IMMEDIATE`
//! transaction, which is what makes `hit`, revocation and code consumption atomic) and a
//! few reader connections, which WAL mode lets read while the writer writes. Must not read
//! the clock or know about any other tier's file.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, Row, Transaction, TransactionBehavior, params};

use super::{
    AccountStore, AuditLog, ChangeStore, KeyStore, LOGIN_HISTORY_CAP, PURGE_GRACE_SECS, PublishedKey, SessionStore,
    SsoActivation, SsoRollback, SsoStore, StoreError, SwitchStore, TENANT_LOGIN_HISTORY_CAP, ThrottleStore, TierStore,
    as_stored_draft, check_change, check_published_key, check_session_tier, check_sso_tenant, check_switch_tier,
    check_tier, check_window, decode_json, encode_json,
};
use crate::audit::{AuditEntry, AuditRecord};
use crate::records::user::{USER_AGENT_MAX_CHARS, truncate_chars};
use crate::records::{
    ChangeRequest, KillSwitch, LoginEvent, Revocation, SessionRecord, SsoState, SsoTest, SsoVersion, UserRecord,
};

/// Schema version this binary writes; older files are migrated on open, newer ones refused.
const SCHEMA_VERSION: i64 = 7;

/// Reader connections per tier; reads are short, so a few are plenty.
const READERS: usize = 4;

/// How long a statement waits for another process's write lock (e.g. the CLI) before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

const SCHEMA_V1: &str = "
CREATE TABLE sessions (
    id_hash BLOB PRIMARY KEY NOT NULL,
    tenant TEXT NOT NULL,
    tier TEXT NOT NULL,
    subject TEXT NOT NULL,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    auth_method TEXT NOT NULL,
    amr TEXT NOT NULL,
    mfa_at INTEGER,
    created_at INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    idle_expires_at INTEGER NOT NULL,
    absolute_expires_at INTEGER NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    csrf_token TEXT NOT NULL,
    sso_sid TEXT,
    revoked_at INTEGER,
    revoked_by TEXT,
    revoked_reason TEXT
);
CREATE INDEX sessions_by_user ON sessions (tenant, subject, created_at);
CREATE INDEX sessions_by_tenant ON sessions (tenant, created_at);
CREATE INDEX sessions_by_expiry ON sessions (absolute_expires_at);
CREATE INDEX sessions_by_sso_sid ON sessions (tenant, sso_sid) WHERE sso_sid IS NOT NULL;
CREATE TABLE users (
    tenant TEXT NOT NULL,
    username TEXT NOT NULL,
    display_name TEXT NOT NULL,
    roles TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    totp_secret TEXT,
    totp_enrolled_at INTEGER,
    recovery_codes BLOB NOT NULL,
    disabled INTEGER NOT NULL,
    created_at INTEGER NOT NULL,
    password_changed_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, username)
);
CREATE TABLE login_events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant TEXT NOT NULL,
    subject TEXT NOT NULL,
    time INTEGER NOT NULL,
    ip TEXT NOT NULL,
    user_agent TEXT NOT NULL,
    method TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT
);
CREATE INDEX login_events_by_user ON login_events (tenant, subject, seq);
CREATE TABLE totp_steps (
    tenant TEXT NOT NULL,
    subject TEXT NOT NULL,
    step INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, subject, step)
);
CREATE TABLE throttle (
    key TEXT PRIMARY KEY NOT NULL,
    count INTEGER NOT NULL,
    reset_at INTEGER NOT NULL
);
";

/// Version 2: kill switches and the audit log (whole records as JSON; the audit chain's
/// hashes cover the JSON's content, so the columns are not queried).
const SCHEMA_V2: &str = "
CREATE TABLE kill_switches (
    scope_key TEXT PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);
CREATE TABLE audit_log (
    seq INTEGER PRIMARY KEY NOT NULL,
    data TEXT NOT NULL
);
";

/// Version 3: four-eyes change requests (whole records as JSON; `version` is the
/// compare-and-swap column of `replace_change_if`, `created_at` the list order).
const SCHEMA_V3: &str = "
CREATE TABLE changes (
    id TEXT PRIMARY KEY NOT NULL,
    created_at INTEGER NOT NULL,
    version INTEGER NOT NULL,
    data TEXT NOT NULL
);
CREATE INDEX changes_by_time ON changes (created_at);
";

/// Version 4: the identity provider of a session (`local` or the IdP's issuer), so local
/// and SSO accounts of one `sub` stay two users. Sessions written before it were local or
/// keyed by the bare `sub`; they keep `local` and expire within the absolute timeout.
const SCHEMA_V4: &str = "
ALTER TABLE sessions ADD COLUMN idp TEXT NOT NULL DEFAULT 'local';
";

/// Version 5: tenants' self-service SSO versions (whole records as JSON; `state` mirrors
/// the record's so the draft and the active version are found by index).
const SCHEMA_V5: &str = "
CREATE TABLE sso_versions (
    tenant TEXT NOT NULL,
    version INTEGER NOT NULL,
    state TEXT NOT NULL,
    data TEXT NOT NULL,
    PRIMARY KEY (tenant, version)
);
CREATE INDEX sso_versions_by_state ON sso_versions (tenant, state);
";

/// Version 6: the tenant's sign-in history across its subjects (the tenant admin's
/// history page, and the per-tenant cap).
const SCHEMA_V6: &str = "
CREATE INDEX login_events_by_tenant ON login_events (tenant, seq);
";

/// Version 7: the tier's published public assertion keys, one row per `kid`, so a
/// restarted gateway (or another process on this file) still serves a key whose
/// assertions have not expired.
const SCHEMA_V7: &str = "
CREATE TABLE assertion_keys (
    kid TEXT PRIMARY KEY NOT NULL,
    jwk TEXT NOT NULL,
    published_until INTEGER NOT NULL
);
";

const SESSION_COLUMNS: &str = "id_hash, tenant, tier, subject, display_name, roles, auth_method, amr, mfa_at, \
     created_at, last_seen, idle_expires_at, absolute_expires_at, ip, user_agent, csrf_token, sso_sid, \
     revoked_at, revoked_by, revoked_reason, idp";

/// Live at `:now`: the SQL twin of [`SessionRecord::is_live`].
const LIVE: &str = "revoked_at IS NULL AND idle_expires_at > :now AND absolute_expires_at > :now";

const USER_COLUMNS: &str = "tenant, username, display_name, roles, password_hash, totp_secret, totp_enrolled_at, \
     recovery_codes, disabled, created_at, password_changed_at";

/// SQLite backend for one tier.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The only connection that writes; held only inside blocking tasks.
    writer: Mutex<Connection>,
    /// Connections for reads, picked round-robin.
    readers: Vec<Mutex<Connection>>,
    /// Round-robin position for when every reader is busy.
    next_reader: AtomicUsize,
    /// The tier this file belongs to; sessions of other tiers are refused.
    tier: String,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("tier", &self.inner.tier).finish()
    }
}

impl SqliteStore {
    /// Opens (creating the directory, file and schema if needed) the store of `tier` in `dir`.
    pub async fn open(dir: &Path, tier: &str) -> Result<Self, StoreError> {
        check_tier(tier)?;
        let dir = dir.to_path_buf();
        let tier = tier.to_string();
        tokio::task::spawn_blocking(move || open_blocking(dir, tier))
            .await
            .map_err(|_| StoreError::Unavailable("sqlite open task failed".into()))?
    }

    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let conn = inner.reader();
            f(&conn)
        })
        .await
        .map_err(|_| StoreError::Unavailable("sqlite task failed".into()))?
    }

    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Transaction<'_>) -> Result<T, StoreError> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = lock(&inner.writer);
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
        .await
        .map_err(|_| StoreError::Unavailable("sqlite task failed".into()))?
    }
}

impl Inner {
    fn reader(&self) -> MutexGuard<'_, Connection> {
        for r in &self.readers {
            if let Ok(guard) = r.try_lock() {
                return guard;
            }
        }
        let i = self.next_reader.fetch_add(1, Ordering::Relaxed) % self.readers.len().max(1);
        match self.readers.get(i) {
            Some(r) => lock(r),
            None => lock(&self.writer),
        }
    }
}

/// A poisoned lock only means a closure panicked; the transaction it held was rolled back on
/// unwind, so the connection is still usable.
fn lock(m: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_blocking(dir: PathBuf, tier: String) -> Result<SqliteStore, StoreError> {
    if !dir.exists() {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder
            .create(&dir)
            .map_err(|e| StoreError::Unavailable(format!("cannot create data directory: {}", e.kind())))?;
    }
    let path = dir.join(format!("{tier}.sqlite3"));
    let mut writer = connect(&path)?;
    // The file holds password hashes and TOTP secrets; SQLite gives -wal/-shm the same mode.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| StoreError::Unavailable(format!("cannot restrict store file permissions: {}", e.kind())))?;
    }
    writer.pragma_update(None, "journal_mode", "WAL")?;
    migrate(&mut writer)?;
    let mut readers = Vec::with_capacity(READERS);
    for _ in 0..READERS {
        readers.push(Mutex::new(connect(&path)?));
    }
    Ok(SqliteStore {
        inner: Arc::new(Inner {
            writer: Mutex::new(writer),
            readers,
            next_reader: AtomicUsize::new(0),
            tier,
        }),
    })
}

fn connect(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // FULL: a revocation must survive a power cut, or a revoked session could come back.
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    tx.execute_batch("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")?;
    let version: i64 = tx.query_row("SELECT COALESCE(MAX(version), 0) FROM schema_version", [], |r| r.get(0))?;
    if version > SCHEMA_VERSION {
        return Err(StoreError::Invalid(format!(
            "store schema version {version} (this binary knows up to {SCHEMA_VERSION}; upgrade it)"
        )));
    }
    if version < 1 {
        tx.execute_batch(SCHEMA_V1)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (1)", [])?;
    }
    if version < 2 {
        tx.execute_batch(SCHEMA_V2)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (2)", [])?;
    }
    if version < 3 {
        tx.execute_batch(SCHEMA_V3)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (3)", [])?;
    }
    if version < 4 {
        tx.execute_batch(SCHEMA_V4)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (4)", [])?;
    }
    if version < 5 {
        tx.execute_batch(SCHEMA_V5)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (5)", [])?;
    }
    if version < 6 {
        tx.execute_batch(SCHEMA_V6)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (6)", [])?;
    }
    if version < 7 {
        tx.execute_batch(SCHEMA_V7)?;
        tx.execute("INSERT INTO schema_version (version) VALUES (7)", [])?;
    }
    tx.commit()?;
    Ok(())
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        use rusqlite::Error as E;
        match e {
            E::SqliteFailure(err, _) => StoreError::Unavailable(format!("sqlite: {:?}", err.code)),
            E::FromSqlConversionFailure(..) | E::InvalidColumnType(..) | E::IntegralValueOutOfRange(..) => {
                StoreError::Corrupt("sqlite column")
            }
            _ => StoreError::Unavailable("sqlite call failed".into()),
        }
    }
}

fn json_list(v: &[String]) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|_| StoreError::Corrupt("list encoding"))
}

fn parse_list(s: &str) -> Result<Vec<String>, StoreError> {
    serde_json::from_str(s).map_err(|_| StoreError::Corrupt("stored list"))
}

fn hash32(v: Vec<u8>) -> Result<[u8; 32], StoreError> {
    <[u8; 32]>::try_from(v).map_err(|_| StoreError::Corrupt("stored hash length"))
}

fn session_from_row(row: &Row<'_>) -> Result<SessionRecord, StoreError> {
    let revoked_at: Option<i64> = row.get(17)?;
    let revoked = match revoked_at {
        Some(at) => Some(Revocation {
            at,
            by: row.get::<_, Option<String>>(18)?.unwrap_or_default(),
            reason: row.get::<_, Option<String>>(19)?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(SessionRecord {
        id_hash: hash32(row.get(0)?)?,
        tenant: row.get(1)?,
        tier: row.get(2)?,
        subject: row.get(3)?,
        display_name: row.get(4)?,
        roles: parse_list(&row.get::<_, String>(5)?)?,
        auth_method: row.get(6)?,
        amr: parse_list(&row.get::<_, String>(7)?)?,
        mfa_at: row.get(8)?,
        created_at: row.get(9)?,
        last_seen: row.get(10)?,
        idle_expires_at: row.get(11)?,
        absolute_expires_at: row.get(12)?,
        ip: row.get(13)?,
        user_agent: row.get(14)?,
        csrf_token: row.get(15)?,
        sso_sid: row.get(16)?,
        revoked,
        idp: row.get(20)?,
    })
}

fn user_from_row(row: &Row<'_>) -> Result<UserRecord, StoreError> {
    let codes: Vec<u8> = row.get(7)?;
    if !codes.chunks_exact(32).remainder().is_empty() {
        return Err(StoreError::Corrupt("stored recovery codes"));
    }
    let recovery_code_hashes = codes
        .chunks_exact(32)
        .map(|c| hash32(c.to_vec()))
        .collect::<Result<_, _>>()?;
    Ok(UserRecord {
        tenant: row.get(0)?,
        username: row.get(1)?,
        display_name: row.get(2)?,
        roles: parse_list(&row.get::<_, String>(3)?)?,
        password_hash: row.get(4)?,
        totp_secret: row.get(5)?,
        totp_enrolled_at: row.get(6)?,
        recovery_code_hashes,
        disabled: row.get(8)?,
        created_at: row.get(9)?,
        password_changed_at: row.get(10)?,
    })
}

fn event_from_row(row: &Row<'_>) -> Result<LoginEvent, StoreError> {
    Ok(LoginEvent {
        seq: row.get(0)?,
        tenant: row.get(1)?,
        subject: row.get(2)?,
        time: row.get(3)?,
        ip: row.get(4)?,
        user_agent: row.get(5)?,
        method: row.get(6)?,
        outcome: row.get(7)?,
        reason: row.get(8)?,
    })
}

fn sessions_where(
    conn: &Connection,
    filter: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<Vec<SessionRecord>, StoreError> {
    let sql = format!(
        "SELECT {SESSION_COLUMNS} FROM sessions WHERE {filter} ORDER BY created_at DESC, id_hash DESC LIMIT :limit"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(session_from_row(row)?);
    }
    Ok(out)
}

/// Revokes the not yet revoked sessions matching `filter`, returning their id hashes sorted.
fn revoke_where(
    tx: &Transaction<'_>,
    filter: &str,
    params: &[(&str, &dyn rusqlite::ToSql)],
) -> Result<Vec<[u8; 32]>, StoreError> {
    let sql = format!(
        "UPDATE sessions SET revoked_at = :at, revoked_by = :by, revoked_reason = :reason \
         WHERE revoked_at IS NULL AND {filter} RETURNING id_hash"
    );
    let mut stmt = tx.prepare_cached(&sql)?;
    let mut rows = stmt.query(params)?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(hash32(row.get(0)?)?);
    }
    out.sort_unstable();
    Ok(out)
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

fn recovery_blob(codes: &[[u8; 32]]) -> Vec<u8> {
    codes.concat()
}

/// SQL: the row's `step` is at or after `?3`, both written by [`step_param`], in the order
/// of the original `u64`s (the bit cast puts steps of 2^63 and more below zero).
const STEP_AT_OR_AFTER: &str = "((step < 0) > (?3 < 0) OR ((step < 0) = (?3 < 0) AND step >= ?3))";

fn step_param(step: u64) -> i64 {
    // A bijection u64 → i64, so every step keeps its own row.
    i64::from_ne_bytes(step.to_ne_bytes())
}

#[async_trait::async_trait]
impl SessionStore for SqliteStore {
    async fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError> {
        check_session_tier(s, &self.inner.tier)?;
        let s = s.clone();
        let roles = json_list(&s.roles)?;
        let amr = json_list(&s.amr)?;
        self.write(move |tx| {
            let (rev_at, rev_by, rev_reason) = match &s.revoked {
                Some(r) => (Some(r.at), Some(r.by.clone()), Some(r.reason.clone())),
                None => (None, None, None),
            };
            let n = tx.execute(
                &format!(
                    "INSERT INTO sessions ({SESSION_COLUMNS}) VALUES \
                     (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21) \
                     ON CONFLICT (id_hash) DO NOTHING"
                ),
                params![
                    &s.id_hash[..],
                    s.tenant,
                    s.tier,
                    s.subject,
                    s.display_name,
                    roles,
                    s.auth_method,
                    amr,
                    s.mfa_at,
                    s.created_at,
                    s.last_seen,
                    s.idle_expires_at,
                    s.absolute_expires_at,
                    s.ip,
                    s.user_agent,
                    s.csrf_token,
                    s.sso_sid,
                    rev_at,
                    rev_by,
                    rev_reason,
                    s.idp
                ],
            )?;
            if n == 0 {
                Err(StoreError::Conflict("session"))
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn get_session(&self, id_hash: &[u8; 32]) -> Result<Option<SessionRecord>, StoreError> {
        let id = *id_hash;
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {SESSION_COLUMNS} FROM sessions WHERE id_hash = ?1"))?;
            let mut rows = stmt.query([&id[..]])?;
            match rows.next()? {
                Some(row) => Ok(Some(session_from_row(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn touch_session(&self, id_hash: &[u8; 32], now: i64, idle_expires_at: i64) -> Result<(), StoreError> {
        let id = *id_hash;
        self.write(move |tx| {
            tx.execute(
                "UPDATE sessions SET last_seen = ?2, idle_expires_at = MIN(?3, absolute_expires_at) \
                 WHERE id_hash = ?1 AND revoked_at IS NULL AND idle_expires_at > ?2 AND absolute_expires_at > ?2",
                params![&id[..], now, idle_expires_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn revoke_session(&self, id_hash: &[u8; 32], rev: &Revocation) -> Result<bool, StoreError> {
        let id = *id_hash;
        let rev = rev.clone();
        self.write(move |tx| {
            let ids = revoke_where(
                tx,
                "id_hash = :id",
                &[
                    (":id", &&id[..]),
                    (":at", &rev.at),
                    (":by", &rev.by),
                    (":reason", &rev.reason),
                ],
            )?;
            Ok(!ids.is_empty())
        })
        .await
    }

    async fn revoke_user_sessions(
        &self,
        tenant: &str,
        subject: &str,
        keep: Option<&[u8; 32]>,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let (tenant, subject, rev) = (tenant.to_string(), subject.to_string(), rev.clone());
        let keep: Vec<u8> = keep.map(|k| k.to_vec()).unwrap_or_default();
        self.write(move |tx| {
            revoke_where(
                tx,
                "tenant = :tenant AND subject = :subject AND id_hash != :keep",
                &[
                    (":tenant", &tenant),
                    (":subject", &subject),
                    (":keep", &keep),
                    (":at", &rev.at),
                    (":by", &rev.by),
                    (":reason", &rev.reason),
                ],
            )
        })
        .await
    }

    async fn revoke_tenant_sessions(&self, tenant: &str, rev: &Revocation) -> Result<Vec<[u8; 32]>, StoreError> {
        let (tenant, rev) = (tenant.to_string(), rev.clone());
        self.write(move |tx| {
            revoke_where(
                tx,
                "tenant = :tenant",
                &[
                    (":tenant", &tenant),
                    (":at", &rev.at),
                    (":by", &rev.by),
                    (":reason", &rev.reason),
                ],
            )
        })
        .await
    }

    async fn revoke_sso_sessions(
        &self,
        tenant: &str,
        sso_sid: &str,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let (tenant, sid, rev) = (tenant.to_string(), sso_sid.to_string(), rev.clone());
        self.write(move |tx| {
            revoke_where(
                tx,
                "tenant = :tenant AND sso_sid = :sid",
                &[
                    (":tenant", &tenant),
                    (":sid", &sid),
                    (":at", &rev.at),
                    (":by", &rev.by),
                    (":reason", &rev.reason),
                ],
            )
        })
        .await
    }

    async fn list_user_sessions(
        &self,
        tenant: &str,
        subject: &str,
        now: i64,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let (tenant, subject) = (tenant.to_string(), subject.to_string());
        self.read(move |conn| {
            sessions_where(
                conn,
                &format!("tenant = :tenant AND subject = :subject AND {}", LIVE),
                &[
                    (":tenant", &tenant),
                    (":subject", &subject),
                    (":now", &now),
                    (":limit", &-1i64),
                ],
            )
        })
        .await
    }

    async fn list_tenant_sessions(
        &self,
        tenant: &str,
        now: i64,
        limit: usize,
    ) -> Result<Vec<SessionRecord>, StoreError> {
        let tenant = tenant.to_string();
        let limit = limit_param(limit);
        self.read(move |conn| {
            sessions_where(
                conn,
                &format!("tenant = :tenant AND {}", LIVE),
                &[(":tenant", &tenant), (":now", &now), (":limit", &limit)],
            )
        })
        .await
    }
}

#[async_trait::async_trait]
impl AccountStore for SqliteStore {
    async fn create_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let u = u.clone();
        let roles = json_list(&u.roles)?;
        self.write(move |tx| {
            let n = tx.execute(
                &format!(
                    "INSERT INTO users ({USER_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11) \
                     ON CONFLICT (tenant, username) DO NOTHING"
                ),
                params![
                    u.tenant,
                    u.username,
                    u.display_name,
                    roles,
                    u.password_hash,
                    u.totp_secret,
                    u.totp_enrolled_at,
                    recovery_blob(&u.recovery_code_hashes),
                    u.disabled,
                    u.created_at,
                    u.password_changed_at
                ],
            )?;
            if n == 0 {
                Err(StoreError::Conflict("user"))
            } else {
                Ok(())
            }
        })
        .await
    }

    async fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRecord>, StoreError> {
        let (tenant, username) = (tenant.to_string(), username.to_string());
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 AND username = ?2"
            ))?;
            let mut rows = stmt.query([&tenant, &username])?;
            match rows.next()? {
                Some(row) => Ok(Some(user_from_row(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn update_user(&self, u: &UserRecord) -> Result<(), StoreError> {
        let u = u.clone();
        let roles = json_list(&u.roles)?;
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE users SET display_name = ?3, roles = ?4, password_hash = ?5, totp_secret = ?6, \
                 totp_enrolled_at = ?7, recovery_codes = ?8, disabled = ?9, created_at = ?10, password_changed_at = ?11 \
                 WHERE tenant = ?1 AND username = ?2",
                params![
                    u.tenant,
                    u.username,
                    u.display_name,
                    roles,
                    u.password_hash,
                    u.totp_secret,
                    u.totp_enrolled_at,
                    recovery_blob(&u.recovery_code_hashes),
                    u.disabled,
                    u.created_at,
                    u.password_changed_at
                ],
            )?;
            if n == 0 { Err(StoreError::NotFound("user")) } else { Ok(()) }
        })
        .await
    }

    async fn list_users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError> {
        let tenant = tenant.to_string();
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE tenant = ?1 ORDER BY username"
            ))?;
            let mut rows = stmt.query([&tenant])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(user_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn consume_recovery_code(
        &self,
        tenant: &str,
        username: &str,
        code_hash: &[u8; 32],
    ) -> Result<bool, StoreError> {
        let (tenant, username, code) = (tenant.to_string(), username.to_string(), *code_hash);
        self.write(move |tx| {
            let blob: Option<Vec<u8>> = tx
                .query_row(
                    "SELECT recovery_codes FROM users WHERE tenant = ?1 AND username = ?2",
                    [&tenant, &username],
                    |r| r.get(0),
                )
                .optional()?;
            let Some(blob) = blob else { return Ok(false) };
            if !blob.chunks_exact(32).remainder().is_empty() {
                return Err(StoreError::Corrupt("stored recovery codes"));
            }
            let before = blob.chunks_exact(32).count();
            let kept: Vec<u8> = blob
                .chunks_exact(32)
                .filter(|c| *c != code)
                .flatten()
                .copied()
                .collect();
            if kept.len() / 32 == before {
                return Ok(false);
            }
            tx.execute(
                "UPDATE users SET recovery_codes = ?3 WHERE tenant = ?1 AND username = ?2",
                params![tenant, username, kept],
            )?;
            Ok(true)
        })
        .await
    }

    async fn record_login(&self, e: &LoginEvent) -> Result<(), StoreError> {
        let mut e = e.clone();
        e.user_agent = truncate_chars(&e.user_agent, USER_AGENT_MAX_CHARS);
        let (cap, tenant_cap) = (limit_param(LOGIN_HISTORY_CAP), limit_param(TENANT_LOGIN_HISTORY_CAP));
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO login_events (tenant, subject, time, ip, user_agent, method, outcome, reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    e.tenant,
                    e.subject,
                    e.time,
                    e.ip,
                    e.user_agent,
                    e.method,
                    e.outcome,
                    e.reason
                ],
            )?;
            tx.execute(
                "DELETE FROM login_events WHERE tenant = ?1 AND subject = ?2 AND seq <= \
                 (SELECT seq FROM login_events WHERE tenant = ?1 AND subject = ?2 ORDER BY seq DESC LIMIT 1 OFFSET ?3)",
                params![e.tenant, e.subject, cap],
            )?;
            tx.execute(
                "DELETE FROM login_events WHERE tenant = ?1 AND seq <= \
                 (SELECT seq FROM login_events WHERE tenant = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)",
                params![e.tenant, tenant_cap],
            )?;
            Ok(())
        })
        .await
    }

    async fn login_history(
        &self,
        tenant: &str,
        subject: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError> {
        let (tenant, subject) = (tenant.to_string(), subject.to_string());
        let (limit, before) = (limit_param(limit), before_seq.unwrap_or(i64::MAX));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, tenant, subject, time, ip, user_agent, method, outcome, reason FROM login_events \
                 WHERE tenant = ?1 AND subject = ?2 AND seq < ?3 ORDER BY seq DESC LIMIT ?4",
            )?;
            let mut rows = stmt.query(params![tenant, subject, before, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(event_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn tenant_login_history(
        &self,
        tenant: &str,
        limit: usize,
        before_seq: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError> {
        let tenant = tenant.to_string();
        let (limit, before) = (limit_param(limit), before_seq.unwrap_or(i64::MAX));
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT seq, tenant, subject, time, ip, user_agent, method, outcome, reason FROM login_events \
                 WHERE tenant = ?1 AND seq < ?2 ORDER BY seq DESC LIMIT ?3",
            )?;
            let mut rows = stmt.query(params![tenant, before, limit])?;
            let mut out = Vec::new();
            while let Some(row) = rows.next()? {
                out.push(event_from_row(row)?);
            }
            Ok(out)
        })
        .await
    }

    async fn accept_totp_step(
        &self,
        tenant: &str,
        subject: &str,
        step: u64,
        expires_at: i64,
    ) -> Result<bool, StoreError> {
        let (tenant, subject) = (tenant.to_string(), subject.to_string());
        self.write(move |tx| {
            // One write transaction: no other writer sees the table between the two statements.
            let n = tx.execute(
                &format!(
                    "INSERT INTO totp_steps (tenant, subject, step, expires_at) SELECT ?1, ?2, ?3, ?4 \
                     WHERE NOT EXISTS (SELECT 1 FROM totp_steps WHERE tenant = ?1 AND subject = ?2 AND {STEP_AT_OR_AFTER})"
                ),
                params![tenant, subject, step_param(step), expires_at],
            )?;
            if n == 1 {
                tx.execute(
                    "DELETE FROM totp_steps WHERE tenant = ?1 AND subject = ?2 AND step <> ?3",
                    params![tenant, subject, step_param(step)],
                )?;
            }
            Ok(n == 1)
        })
        .await
    }
}

#[async_trait::async_trait]
impl ThrottleStore for SqliteStore {
    async fn hit(&self, key: &str, now: i64, window_secs: i64) -> Result<(u32, i64), StoreError> {
        check_window(window_secs)?;
        let key = key.to_string();
        self.write(move |tx| {
            let current: Option<(i64, i64)> = tx
                .query_row("SELECT count, reset_at FROM throttle WHERE key = ?1", [&key], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            let (count, reset_at) = match current {
                Some((count, reset_at)) if reset_at > now => {
                    (count.saturating_add(1).min(i64::from(u32::MAX)), reset_at)
                }
                _ => (1, now.saturating_add(window_secs)),
            };
            tx.execute(
                "INSERT INTO throttle (key, count, reset_at) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (key) DO UPDATE SET count = excluded.count, reset_at = excluded.reset_at",
                params![key, count, reset_at],
            )?;
            Ok((u32::try_from(count).unwrap_or(u32::MAX), reset_at - now))
        })
        .await
    }

    async fn give_back(&self, key: &str, window_end: i64) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |tx| {
            tx.execute(
                "UPDATE throttle SET count = count - 1 WHERE key = ?1 AND reset_at = ?2 AND count > 0",
                params![key, window_end],
            )?;
            Ok(())
        })
        .await
    }

    async fn peek(&self, key: &str, now: i64) -> Result<(u32, i64), StoreError> {
        let key = key.to_string();
        self.read(move |conn| {
            let current: Option<(i64, i64)> = conn
                .query_row("SELECT count, reset_at FROM throttle WHERE key = ?1", [&key], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })
                .optional()?;
            Ok(match current {
                Some((count, reset_at)) if reset_at > now => (u32::try_from(count).unwrap_or(u32::MAX), reset_at - now),
                _ => (0, 0),
            })
        })
        .await
    }

    async fn clear(&self, key: &str) -> Result<(), StoreError> {
        let key = key.to_string();
        self.write(move |tx| {
            tx.execute("DELETE FROM throttle WHERE key = ?1", [&key])?;
            Ok(())
        })
        .await
    }
}

#[async_trait::async_trait]
impl SwitchStore for SqliteStore {
    async fn put_kill_switch(&self, ks: &KillSwitch) -> Result<(), StoreError> {
        check_switch_tier(ks, &self.inner.tier)?;
        let (key, data) = (ks.scope.key(), encode_json(ks)?);
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO kill_switches (scope_key, data) VALUES (?1, ?2) \
                 ON CONFLICT (scope_key) DO UPDATE SET data = excluded.data",
                params![key, data],
            )?;
            Ok(())
        })
        .await
    }

    async fn delete_kill_switch(&self, scope_key: &str) -> Result<Option<KillSwitch>, StoreError> {
        let key = scope_key.to_string();
        self.write(move |tx| {
            let data: Option<String> = tx
                .query_row(
                    "DELETE FROM kill_switches WHERE scope_key = ?1 RETURNING data",
                    [&key],
                    |r| r.get(0),
                )
                .optional()?;
            data.map(|d| decode_json(&d, "stored kill switch")).transpose()
        })
        .await
    }

    async fn list_kill_switches(&self) -> Result<Vec<KillSwitch>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT data FROM kill_switches ORDER BY scope_key")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_json(&row?, "stored kill switch")?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait::async_trait]
impl AuditLog for SqliteStore {
    async fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError> {
        let entry = entry.clone();
        self.write(move |tx| {
            let last: Option<String> = tx
                .query_row("SELECT data FROM audit_log ORDER BY seq DESC LIMIT 1", [], |r| r.get(0))
                .optional()?;
            let prev: Option<AuditRecord> = last.map(|d| decode_json(&d, "stored audit record")).transpose()?;
            let record = AuditRecord::chain(prev.as_ref(), entry);
            let seq = i64::try_from(record.seq).map_err(|_| StoreError::Corrupt("audit sequence"))?;
            tx.execute(
                "INSERT INTO audit_log (seq, data) VALUES (?1, ?2)",
                params![seq, encode_json(&record)?],
            )?;
            Ok(record)
        })
        .await
    }

    async fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError> {
        let after = i64::try_from(after_seq).unwrap_or(i64::MAX);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached("SELECT data FROM audit_log WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows = stmt.query_map(params![after, limit_param(limit)], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_json(&row?, "stored audit record")?);
            }
            Ok(out)
        })
        .await
    }
}

#[async_trait::async_trait]
impl ChangeStore for SqliteStore {
    async fn put_change(&self, c: &ChangeRequest) -> Result<(), StoreError> {
        check_change(c, &self.inner.tier)?;
        let (id, created_at, version, data) = (c.id.clone(), c.created_at, version_param(c.version)?, encode_json(c)?);
        self.write(move |tx| {
            let n = tx.execute(
                "INSERT INTO changes (id, created_at, version, data) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (id) DO NOTHING",
                params![id, created_at, version, data],
            )?;
            if n == 1 {
                Ok(())
            } else {
                Err(StoreError::Conflict("change request"))
            }
        })
        .await
    }

    async fn get_change(&self, id: &str) -> Result<Option<ChangeRequest>, StoreError> {
        let id = id.to_string();
        self.read(move |conn| {
            let data: Option<String> = conn
                .query_row("SELECT data FROM changes WHERE id = ?1", [&id], |r| r.get(0))
                .optional()?;
            data.map(|d| decode_json(&d, "stored change request")).transpose()
        })
        .await
    }

    async fn list_changes(&self) -> Result<Vec<ChangeRequest>, StoreError> {
        self.read(|conn| {
            let mut stmt = conn.prepare_cached("SELECT data FROM changes ORDER BY created_at DESC, id DESC")?;
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_json(&row?, "stored change request")?);
            }
            Ok(out)
        })
        .await
    }

    async fn replace_change_if(&self, c: &ChangeRequest, expected_version: u64) -> Result<bool, StoreError> {
        check_change(c, &self.inner.tier)?;
        if c.version <= expected_version {
            return Err(StoreError::Invalid("change request version (must move on)".into()));
        }
        let (id, version, expected, data) = (
            c.id.clone(),
            version_param(c.version)?,
            version_param(expected_version)?,
            encode_json(c)?,
        );
        self.write(move |tx| {
            let n = tx.execute(
                "UPDATE changes SET version = ?1, data = ?2 WHERE id = ?3 AND version = ?4",
                params![version, data, id, expected],
            )?;
            Ok(n == 1)
        })
        .await
    }
}

/// The tenant's version in `state` (draft or active: at most one each), if any.
fn sso_in_state(conn: &Connection, tenant: &str, state: SsoState) -> Result<Option<SsoVersion>, StoreError> {
    let data: Option<String> = conn
        .query_row(
            "SELECT data FROM sso_versions WHERE tenant = ?1 AND state = ?2 ORDER BY version DESC LIMIT 1",
            params![tenant, state.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    data.map(|d| decode_json(&d, "stored sso version")).transpose()
}

/// The tenant's version number `version`, if any.
fn sso_version(conn: &Connection, tenant: &str, version: u64) -> Result<Option<SsoVersion>, StoreError> {
    let data: Option<String> = conn
        .query_row(
            "SELECT data FROM sso_versions WHERE tenant = ?1 AND version = ?2",
            params![tenant, sso_number(version)?],
            |r| r.get(0),
        )
        .optional()?;
    data.map(|d| decode_json(&d, "stored sso version")).transpose()
}

/// Writes `v` over its stored row (state column and record together).
fn sso_rewrite(tx: &Transaction<'_>, v: &SsoVersion) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE sso_versions SET state = ?1, data = ?2 WHERE tenant = ?3 AND version = ?4",
        params![v.state.as_str(), encode_json(v)?, v.tenant, sso_number(v.version)?],
    )?;
    Ok(())
}

fn sso_number(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid("sso version number".into()))
}

#[async_trait::async_trait]
impl SsoStore for SqliteStore {
    async fn put_sso_draft(&self, draft: &SsoVersion) -> Result<SsoVersion, StoreError> {
        let mut stored = as_stored_draft(draft)?;
        self.write(move |tx| {
            let current = sso_in_state(tx, &stored.tenant, SsoState::Draft)?;
            match current {
                Some(old) => {
                    stored.version = old.version;
                    sso_rewrite(tx, &stored)?;
                }
                None => {
                    let newest: i64 = tx.query_row(
                        "SELECT COALESCE(MAX(version), 0) FROM sso_versions WHERE tenant = ?1",
                        [&stored.tenant],
                        |r| r.get(0),
                    )?;
                    stored.version = u64::try_from(newest)
                        .map_err(|_| StoreError::Corrupt("sso version number"))?
                        .saturating_add(1);
                    tx.execute(
                        "INSERT INTO sso_versions (tenant, version, state, data) VALUES (?1, ?2, ?3, ?4)",
                        params![
                            stored.tenant,
                            sso_number(stored.version)?,
                            stored.state.as_str(),
                            encode_json(&stored)?
                        ],
                    )?;
                }
            }
            Ok(stored)
        })
        .await
    }

    async fn get_sso_draft(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError> {
        check_sso_tenant(tenant)?;
        let tenant = tenant.to_string();
        self.read(move |conn| sso_in_state(conn, &tenant, SsoState::Draft))
            .await
    }

    async fn get_sso_active(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError> {
        check_sso_tenant(tenant)?;
        let tenant = tenant.to_string();
        self.read(move |conn| sso_in_state(conn, &tenant, SsoState::Active))
            .await
    }

    async fn list_sso_versions(&self, tenant: &str) -> Result<Vec<SsoVersion>, StoreError> {
        check_sso_tenant(tenant)?;
        let tenant = tenant.to_string();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached("SELECT data FROM sso_versions WHERE tenant = ?1 ORDER BY version DESC")?;
            let rows = stmt.query_map([&tenant], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                out.push(decode_json(&row?, "stored sso version")?);
            }
            Ok(out)
        })
        .await
    }

    async fn record_sso_test(&self, tenant: &str, test: &SsoTest) -> Result<bool, StoreError> {
        check_sso_tenant(tenant)?;
        let (tenant, test) = (tenant.to_string(), test.clone());
        self.write(move |tx| {
            let Some(mut draft) = sso_in_state(tx, &tenant, SsoState::Draft)? else {
                return Ok(false);
            };
            if draft.digest() != test.draft_digest() {
                return Ok(false);
            }
            draft.test = Some(test);
            sso_rewrite(tx, &draft)?;
            Ok(true)
        })
        .await
    }

    async fn activate_sso(&self, tenant: &str) -> Result<SsoActivation, StoreError> {
        check_sso_tenant(tenant)?;
        let tenant = tenant.to_string();
        self.write(move |tx| {
            let Some(mut draft) = sso_in_state(tx, &tenant, SsoState::Draft)? else {
                return Ok(SsoActivation::NoDraft);
            };
            if !draft.has_passing_test() {
                return Ok(SsoActivation::NotTested);
            }
            if let Some(mut old) = sso_in_state(tx, &tenant, SsoState::Active)? {
                old.state = SsoState::Superseded;
                sso_rewrite(tx, &old)?;
                draft.replaced = Some(old.version);
            }
            draft.state = SsoState::Active;
            sso_rewrite(tx, &draft)?;
            Ok(SsoActivation::Activated(Box::new(draft)))
        })
        .await
    }

    async fn rollback_sso(&self, tenant: &str) -> Result<SsoRollback, StoreError> {
        check_sso_tenant(tenant)?;
        let tenant = tenant.to_string();
        self.write(move |tx| {
            let Some(mut active) = sso_in_state(tx, &tenant, SsoState::Active)? else {
                return Ok(SsoRollback::NothingToRestore);
            };
            let Some(previous) = active.replaced else {
                return Ok(SsoRollback::NothingToRestore);
            };
            let Some(mut restored) = sso_version(tx, &tenant, previous)? else {
                return Err(StoreError::Corrupt("stored sso version (replaced version missing)"));
            };
            active.state = SsoState::Superseded;
            sso_rewrite(tx, &active)?;
            restored.state = SsoState::Active;
            sso_rewrite(tx, &restored)?;
            Ok(SsoRollback::RolledBack(Box::new(restored)))
        })
        .await
    }
}

#[async_trait::async_trait]
impl KeyStore for SqliteStore {
    async fn publish_assertion_key(&self, key: &PublishedKey) -> Result<(), StoreError> {
        check_published_key(key)?;
        let key = key.clone();
        self.write(move |tx| {
            tx.execute(
                "INSERT INTO assertion_keys (kid, jwk, published_until) VALUES (?1, ?2, ?3) \
                 ON CONFLICT (kid) DO UPDATE SET jwk = excluded.jwk, published_until = excluded.published_until \
                 WHERE excluded.published_until > assertion_keys.published_until",
                params![key.kid, key.jwk, key.until],
            )?;
            Ok(())
        })
        .await
    }

    async fn published_assertion_keys(&self, now: i64) -> Result<Vec<PublishedKey>, StoreError> {
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(
                "SELECT kid, jwk, published_until FROM assertion_keys WHERE published_until > ?1 ORDER BY kid",
            )?;
            let rows = stmt.query_map([now], |r| {
                Ok(PublishedKey {
                    kid: r.get(0)?,
                    jwk: r.get(1)?,
                    until: r.get(2)?,
                })
            })?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        })
        .await
    }
}

#[async_trait::async_trait]
impl TierStore for SqliteStore {
    async fn purge_expired(&self, now: i64) -> Result<u64, StoreError> {
        self.write(move |tx| {
            let n = tx.execute(
                "DELETE FROM sessions WHERE absolute_expires_at < ?1",
                [now.saturating_sub(PURGE_GRACE_SECS)],
            )?;
            tx.execute("DELETE FROM totp_steps WHERE expires_at < ?1", [now])?;
            tx.execute("DELETE FROM throttle WHERE reset_at <= ?1", [now])?;
            tx.execute("DELETE FROM assertion_keys WHERE published_until <= ?1", [now])?;
            Ok(u64::try_from(n).unwrap_or(u64::MAX))
        })
        .await
    }
}

fn version_param(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Invalid("change request version".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The store file holds password hashes: other local users must not read it.
    #[cfg(unix)]
    #[tokio::test]
    async fn store_files_are_private() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        SqliteStore::open(&dir, "prod").await.unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("prod.sqlite3")), 0o600);
    }

    /// A version 2 file (before change requests, identity providers, SSO versions and
    /// published assertion keys) gains their tables and the `idp` column, and keeps its data: its
    /// sessions read back as local.
    #[tokio::test]
    async fn a_version_2_file_is_migrated() {
        let tmp = tempfile::tempdir().unwrap();
        {
            let conn = Connection::open(tmp.path().join("prod.sqlite3")).unwrap();
            conn.execute_batch("CREATE TABLE schema_version (version INTEGER NOT NULL)")
                .unwrap();
            conn.execute_batch(SCHEMA_V1).unwrap();
            conn.execute_batch(SCHEMA_V2).unwrap();
            conn.execute_batch("INSERT INTO schema_version (version) VALUES (1), (2)")
                .unwrap();
            conn.execute("INSERT INTO kill_switches (scope_key, data) VALUES ('x', '{}')", [])
                .unwrap();
            conn.execute(
                "INSERT INTO sessions (id_hash, tenant, tier, subject, display_name, roles, auth_method, amr, \
                 created_at, last_seen, idle_expires_at, absolute_expires_at, ip, user_agent, csrf_token) \
                 VALUES (?1, 'acme', 'prod', 'alice', 'Alice', '[]', 'password', '[]', 1, 1, 100, 100, '', '', '')",
                [&[7u8; 32][..]],
            )
            .unwrap();
        }
        let store = SqliteStore::open(tmp.path(), "prod").await.unwrap();
        assert!(store.list_changes().await.unwrap().is_empty());
        assert!(store.list_sso_versions("acme").await.unwrap().is_empty());
        assert!(store.published_assertion_keys(0).await.unwrap().is_empty());
        let old = store.get_session(&[7u8; 32]).await.unwrap().unwrap();
        assert_eq!((old.subject.as_str(), old.idp.as_str()), ("alice", "local"));
        let conn = Connection::open(tmp.path().join("prod.sqlite3")).unwrap();
        let version: i64 = conn
            .query_row("SELECT MAX(version) FROM schema_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let kept: i64 = conn
            .query_row("SELECT COUNT(*) FROM kill_switches", [], |r| r.get(0))
            .unwrap();
        assert_eq!(kept, 1);
    }

    /// A file written by a newer binary must not be silently misread.
    #[tokio::test]
    async fn newer_schema_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        SqliteStore::open(tmp.path(), "prod").await.unwrap();
        let conn = Connection::open(tmp.path().join("prod.sqlite3")).unwrap();
        conn.execute("INSERT INTO schema_version (version) VALUES (?1)", [SCHEMA_VERSION + 1])
            .unwrap();
        drop(conn);
        let err = SqliteStore::open(tmp.path(), "prod").await.unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        SqliteStore::open(tmp.path(), "staging").await.unwrap();
    }
}
