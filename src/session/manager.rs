//! Session lifecycle on top of the per-tier stores: minting tokens (256 random bits,
//! base64url in the cookie, only SHA-256 stored), looking sessions up through an
//! in-process cache, recording activity, and revoking.
//!
//! The cache never serves a session revoked on this node: every revocation goes through
//! [`Sessions`], which evicts the entry before it returns and tells open connections of
//! that session (WebSocket tunnels) to close. Entries live at most `max_staleness` (1 s),
//! which bounds how long a revocation made by another process (CLI, another replica)
//! can go unseen.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::broadcast;

use super::{Revocation, SessionRecord, SessionStore, StoreError, Stores, session_id_hash};
use crate::killswitch::Scope;

/// Longest time a cached session is trusted without reading the store again.
pub const MAX_STALENESS: Duration = Duration::from_secs(1);

/// A fresh session token: the cookie value (shown once, never stored) and its store key.
pub struct MintedToken {
    /// base64url of 32 random bytes; goes into the cookie only.
    pub cookie_value: String,
    /// SHA-256 of the token bytes; the store key.
    pub id_hash: [u8; 32],
}

impl std::fmt::Debug for MintedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MintedToken([redacted])")
    }
}

/// Creates a new random token.
pub fn mint_token() -> MintedToken {
    let bytes: [u8; 32] = rand::random();
    MintedToken {
        cookie_value: URL_SAFE_NO_PAD.encode(bytes),
        id_hash: session_id_hash(&bytes),
    }
}

/// The store key for a cookie value, or None when the value is not a well-formed token
/// (anything else is treated as no session without touching the store).
pub fn id_hash_of_cookie(value: &str) -> Option<[u8; 32]> {
    if value.len() != 43 {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    (bytes.len() == 32).then(|| session_id_hash(&bytes))
}

/// A revocation made on this node, as told to open connections.
#[derive(Debug, Clone)]
pub enum Revoked {
    /// One session.
    Session([u8; 32]),
    /// Every session in a kill switch's scope (one event instead of thousands).
    Scope(Arc<Scope>),
}

/// An open long-lived connection (stream, WebSocket) of a session.
#[derive(Debug, Clone)]
pub struct OpenConnection {
    /// Tier of the session.
    pub tier: String,
    /// Tenant of the session.
    pub tenant: String,
    /// Subject of the session.
    pub subject: String,
    /// Store key of the session.
    pub id_hash: [u8; 32],
}

impl OpenConnection {
    /// Whether a revocation event ends this connection.
    pub fn ended_by(&self, event: &Revoked) -> bool {
        match event {
            Revoked::Session(id) => *id == self.id_hash,
            Revoked::Scope(scope) => scope.covers(&self.tier, &self.tenant, &self.subject),
        }
    }
}

/// Keeps an open connection counted until dropped.
pub struct OpenConnectionGuard {
    sessions: Arc<Sessions>,
    key: u64,
}

impl Drop for OpenConnectionGuard {
    fn drop(&mut self) {
        if let Ok(mut open) = self.sessions.open.lock() {
            open.remove(&self.key);
        }
    }
}

/// Sessions of every tier, with the cache in front of them.
pub struct Sessions {
    stores: Stores,
    cache: moka::sync::Cache<[u8; 32], Arc<SessionRecord>>,
    revoked: broadcast::Sender<Revoked>,
    /// Open streams and WebSockets of sessions, for drills.
    open: Mutex<HashMap<u64, OpenConnection>>,
    next_open: AtomicU64,
}

impl Sessions {
    /// Wraps opened stores.
    pub fn new(stores: Stores) -> Arc<Self> {
        let cache = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(MAX_STALENESS)
            .build();
        let (revoked, _) = broadcast::channel(4096);
        Arc::new(Sessions {
            stores,
            cache,
            revoked,
            open: Mutex::new(HashMap::new()),
            next_open: AtomicU64::new(0),
        })
    }

    /// The store of a tier.
    pub fn store(&self, tier: &str) -> Result<Arc<dyn SessionStore>, StoreError> {
        self.stores.tier(tier).ok_or(StoreError::NotFound("tier store"))
    }

    /// Stores a new session.
    pub async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        self.store(&record.tier)?.create_session(&record).await?;
        self.cache.insert(record.id_hash, Arc::new(record));
        Ok(())
    }

    /// The live session for a cookie value in `tier`, recording activity at most once
    /// per `touch_every`. None for malformed, unknown, expired or revoked tokens.
    pub async fn authenticate(
        &self,
        tier: &str,
        cookie_value: &str,
        now: i64,
        idle_timeout: i64,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        let Some(id_hash) = id_hash_of_cookie(cookie_value) else {
            return Ok(None);
        };
        let (record, cached) = match self.cache.get(&id_hash) {
            Some(record) => (record, true),
            None => match self.store(tier)?.get_session(&id_hash).await? {
                Some(record) => (Arc::new(record), false),
                None => return Ok(None),
            },
        };
        if record.tier != tier || !record.is_live(now) {
            self.cache.invalidate(&id_hash);
            return Ok(None);
        }
        let touch_every = (idle_timeout / 10).clamp(1, 60);
        if now - record.last_seen >= touch_every {
            let idle_expires_at = (now + idle_timeout).min(record.absolute_expires_at);
            self.store(tier)?.touch_session(&id_hash, now, idle_expires_at).await?;
            // The next request reads the store again rather than trusting an edited copy.
            self.cache.invalidate(&id_hash);
            let mut touched = (*record).clone();
            touched.last_seen = now;
            touched.idle_expires_at = idle_expires_at;
            return Ok(Some(Arc::new(touched)));
        }
        // Only a store read starts a cache entry's life: hits never extend it, so a
        // revocation made elsewhere is seen within MAX_STALENESS even under steady use.
        if !cached {
            self.cache.insert(id_hash, record.clone());
        }
        Ok(Some(record))
    }

    /// The stored record behind a cookie value, live or not (to tell a session ended by
    /// a kill switch from an unknown one). None for malformed or unknown tokens and when
    /// the store cannot answer.
    pub async fn record_of_cookie(&self, tier: &str, cookie_value: &str) -> Option<SessionRecord> {
        let id_hash = id_hash_of_cookie(cookie_value)?;
        self.store(tier).ok()?.get_session(&id_hash).await.ok()?
    }

    /// Whether a session is still live, read from the store (for long-lived connections
    /// that must notice revocations made by other processes).
    pub async fn still_live(&self, tier: &str, id_hash: &[u8; 32], now: i64) -> bool {
        match self.store(tier) {
            Ok(store) => matches!(store.get_session(id_hash).await, Ok(Some(s)) if s.is_live(now)),
            Err(_) => false,
        }
    }

    /// Ends one session.
    pub async fn revoke(&self, tier: &str, id_hash: &[u8; 32], rev: &Revocation) -> Result<bool, StoreError> {
        let done = self.store(tier)?.revoke_session(id_hash, rev).await?;
        self.evict(id_hash);
        Ok(done)
    }

    /// Ends every session of a user except `keep`.
    pub async fn revoke_user(
        &self,
        tier: &str,
        tenant: &str,
        subject: &str,
        keep: Option<&[u8; 32]>,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let ids = self
            .store(tier)?
            .revoke_user_sessions(tenant, subject, keep, rev)
            .await?;
        for id in &ids {
            self.evict(id);
        }
        Ok(ids)
    }

    /// Ends the sessions of an IdP session (back-channel logout by `sid`).
    pub async fn revoke_sso(
        &self,
        tier: &str,
        tenant: &str,
        sso_sid: &str,
        rev: &Revocation,
    ) -> Result<Vec<[u8; 32]>, StoreError> {
        let ids = self.store(tier)?.revoke_sso_sessions(tenant, sso_sid, rev).await?;
        for id in &ids {
            self.evict(id);
        }
        Ok(ids)
    }

    /// Subscribes to revocations made on this node (open tunnels close on them).
    pub fn revocations(&self) -> broadcast::Receiver<Revoked> {
        self.revoked.subscribe()
    }

    /// Counts an open connection of a session until the guard is dropped.
    pub fn track_open(self: &Arc<Self>, conn: OpenConnection) -> OpenConnectionGuard {
        let key = self.next_open.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut open) = self.open.lock() {
            open.insert(key, conn);
        }
        OpenConnectionGuard {
            sessions: self.clone(),
            key,
        }
    }

    /// Open connections on this node whose session is in `scope`.
    pub fn open_connections(&self, scope: &Scope) -> usize {
        self.open.lock().map_or(0, |open| {
            open.values()
                .filter(|c| scope.covers(&c.tier, &c.tenant, &c.subject))
                .count()
        })
    }

    /// After a kill switch revoked `ids` in the store: drops them from the cache and tells
    /// open connections in `scope` to close.
    pub fn evicted_in_scope(&self, ids: &[[u8; 32]], scope: &Scope) {
        for id in ids {
            self.cache.invalidate(id);
        }
        let _ = self.revoked.send(Revoked::Scope(Arc::new(scope.clone())));
    }

    fn evict(&self, id_hash: &[u8; 32]) {
        self.cache.invalidate(id_hash);
        let _ = self.revoked.send(Revoked::Session(*id_hash));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_256_bits_and_hash_consistently() {
        let t = mint_token();
        assert_eq!(t.cookie_value.len(), 43);
        assert_eq!(id_hash_of_cookie(&t.cookie_value), Some(t.id_hash));
        assert_ne!(mint_token().cookie_value, t.cookie_value);
        assert!(!format!("{t:?}").contains(&t.cookie_value));
    }

    #[test]
    fn malformed_cookie_values_have_no_id() {
        for bad in ["", "x", &"a".repeat(44), &"*".repeat(43), &"a".repeat(65536)] {
            assert_eq!(id_hash_of_cookie(bad), None, "{bad:.10}");
        }
    }

    async fn sessions() -> (tempfile::TempDir, Arc<Sessions>) {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(&format!("sqlite:{}", dir.path().display()), ["prod"])
            .await
            .unwrap();
        (dir, Sessions::new(stores))
    }

    fn record(id_hash: [u8; 32], now: i64) -> SessionRecord {
        SessionRecord {
            id_hash,
            tenant: "acme".into(),
            tier: "prod".into(),
            subject: "alice".into(),
            idp: crate::account::LOCAL_IDP.to_string(),
            display_name: "Alice".into(),
            roles: vec![],
            auth_method: "password".into(),
            amr: vec!["pwd".into(), "otp".into()],
            mfa_at: Some(now),
            created_at: now,
            last_seen: now,
            idle_expires_at: now + 1800,
            absolute_expires_at: now + 3600,
            ip: "127.0.0.1".into(),
            user_agent: "test".into(),
            csrf_token: "c".into(),
            sso_sid: None,
            revoked: None,
        }
    }

    #[tokio::test]
    async fn a_revoked_session_is_never_served_from_the_cache() {
        let (_dir, sessions) = sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        sessions.create(record(token.id_hash, now)).await.unwrap();
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_some()
        );
        let rev = Revocation {
            at: now,
            by: "alice".into(),
            reason: "logout".into(),
        };
        assert!(sessions.revoke("prod", &token.id_hash, &rev).await.unwrap());
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_session_is_only_valid_in_its_tier_and_until_idle_expiry() {
        let (_dir, sessions) = sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        sessions.create(record(token.id_hash, now)).await.unwrap();
        assert!(
            sessions
                .authenticate("staging", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now + 1801, 1800)
                .await
                .unwrap()
                .is_none()
        );
    }

    #[tokio::test]
    async fn revocations_made_elsewhere_are_seen_within_the_staleness_bound() {
        let (_dir, sessions) = sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        sessions.create(record(token.id_hash, now)).await.unwrap();
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_some()
        );
        // Another process revokes directly in the store; this node's cache is not told.
        let rev = Revocation {
            at: now,
            by: "cli".into(),
            reason: "test".into(),
        };
        sessions
            .store("prod")
            .unwrap()
            .revoke_session(&token.id_hash, &rev)
            .await
            .unwrap();
        let deadline = std::time::Instant::now() + MAX_STALENESS + Duration::from_millis(500);
        loop {
            // Steady use must not keep a stale entry alive.
            if sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_none()
            {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "revocation not seen within the staleness bound"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    #[tokio::test]
    async fn activity_extends_idle_but_never_absolute_expiry() {
        let (_dir, sessions) = sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        sessions.create(record(token.id_hash, now)).await.unwrap();
        let s = sessions
            .authenticate("prod", &token.cookie_value, now + 1700, 1800)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(s.idle_expires_at, now + 1700 + 1800);
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now + 3600, 1800)
                .await
                .unwrap()
                .is_none()
        );
    }
}
