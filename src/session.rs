//! The session service: the session lifecycle on top of the per-tier stores: minting tokens (256 random bits,
//! base64url in the cookie, only SHA-256 stored), looking sessions up through an
//! in-process cache, recording activity, and revoking.
//!
//! The cache never serves a session revoked on this node: every revocation goes through
//! [`Sessions`], which evicts the entry before it returns and tells open connections of
//! that session (WebSocket tunnels) to close. Evicting alone is not enough, because a
//! store read that began before the revocation can finish after it and put the still-live
//! record back; so every eviction also advances a revocation generation, and a record
//! read from the store (or just created) enters the cache only if the generation is the
//! one seen before the store was asked. Checking and inserting happen under the same lock
//! as advancing and evicting, so no insert can land after an eviction it did not see.
//! Entries live at most `max_staleness` (1 s), which bounds how long a revocation made by
//! another process (CLI, another replica) can go unseen.
//!
//! With a shared store, revocations are also pushed: each one is published on the
//! store's event bus after the store write, and the replicas that receive it evict
//! through the same path ([`Sessions::evict_remote`], [`Sessions::evict_scope`]). Pub/sub
//! cannot replay what a lost subscription missed, so while the events are not followed
//! [`Sessions::stop_serving`] makes every session lookup fail (callers answer `503`),
//! and serving resumes only after the cache was dropped ([`Sessions::drop_cache`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use tokio::sync::broadcast;

use crate::records::{Revocation, Scope, SessionRecord, session_id_hash};
use crate::store::events::{Event, EventBus};
use crate::store::{StoreError, Stores, TierStore};

/// Longest time a cached session is trusted without reading the store again, unless the
/// policy says otherwise (`[store] max_staleness`, the same default).
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
    if value.len() != COOKIE_VALUE_LEN {
        return None;
    }
    let bytes = URL_SAFE_NO_PAD.decode(value).ok()?;
    (bytes.len() == 32).then(|| session_id_hash(&bytes))
}

/// Length of a session cookie value: base64url (no padding) of 32 bytes.
const COOKIE_VALUE_LEN: usize = 43;

/// The store key of the session cookie a connection presented last. Most connections
/// carry one session, so this decodes and hashes its token once per connection instead
/// of on every request. The value is compared in constant time and wiped when it is
/// replaced or the connection ends.
#[derive(Default)]
pub struct CookieMemo(Mutex<Option<MemoEntry>>);

struct MemoEntry {
    cookie_value: zeroize::Zeroizing<[u8; COOKIE_VALUE_LEN]>,
    id_hash: [u8; 32],
}

impl std::fmt::Debug for CookieMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CookieMemo([redacted])")
    }
}

impl CookieMemo {
    /// [`id_hash_of_cookie`], remembered for the last value.
    pub fn id_hash(&self, cookie_value: &str) -> Option<[u8; 32]> {
        use subtle::ConstantTimeEq;
        let value: &[u8; COOKIE_VALUE_LEN] = cookie_value.as_bytes().try_into().ok()?;
        let mut memo = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = memo.as_ref()
            && bool::from(entry.cookie_value[..].ct_eq(&value[..]))
        {
            return Some(entry.id_hash);
        }
        let id_hash = id_hash_of_cookie(cookie_value)?;
        *memo = Some(MemoEntry {
            cookie_value: zeroize::Zeroizing::new(*value),
            id_hash,
        });
        Some(id_hash)
    }
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
    cache: moka::sync::Cache<[u8; 32], Arc<SessionRecord>, foldhash::fast::RandomState>,
    /// Revocation generation: advanced by every eviction, under this lock, together with
    /// the eviction itself. A record read from the store is cached only if the generation
    /// is unchanged since before the read, so a read that raced a revocation cannot
    /// refill the cache with the record the revocation just evicted. One counter for all
    /// sessions: a revocation elsewhere costs a racing read its cache entry (one more
    /// store read later), never correctness.
    generation: Mutex<u64>,
    revoked: broadcast::Sender<Revoked>,
    /// Open streams and WebSockets of sessions, for drills.
    open: Mutex<HashMap<u64, OpenConnection>>,
    next_open: AtomicU64,
    /// Tells other replicas about revocations made here (a no-op with one process).
    events: EventBus,
    /// Whether, and why, sessions cannot be trusted right now (the change events are not
    /// followed); lookups fail closed while it is on.
    halted: Halt,
}

/// The fail-closed switch of session lookups: a flag for the request path (one atomic
/// load) and the reason for `/readyz`.
struct Halt {
    /// Lookups fail while set.
    on: std::sync::atomic::AtomicBool,
    /// Why, for `/readyz`; empty while serving.
    reason: Mutex<String>,
}

impl Sessions {
    /// Wraps opened stores, for one process (no other replica to tell).
    pub fn new(stores: Stores) -> Arc<Self> {
        Self::with_events(stores, EventBus::local())
    }

    /// Wraps opened stores and the bus that tells other replicas about revocations. With
    /// a shared bus, lookups fail closed until [`Sessions::resume_serving`]: whoever
    /// follows the events says when they are followed.
    pub fn with_events(stores: Stores, events: EventBus) -> Arc<Self> {
        Self::configured(stores, events, MAX_STALENESS)
    }

    /// [`Sessions::with_events`], trusting a cached session for at most `max_staleness`.
    pub fn configured(stores: Stores, events: EventBus, max_staleness: Duration) -> Arc<Self> {
        let cache = moka::sync::Cache::builder()
            .max_capacity(1_000_000)
            .time_to_live(max_staleness)
            .build_with_hasher(foldhash::fast::RandomState::default());
        let (revoked, _) = broadcast::channel(4096);
        Arc::new(Sessions {
            stores,
            cache,
            generation: Mutex::new(0),
            revoked,
            open: Mutex::new(HashMap::new()),
            next_open: AtomicU64::new(0),
            halted: Halt {
                on: std::sync::atomic::AtomicBool::new(events.is_shared()),
                reason: Mutex::new(if events.is_shared() {
                    "session events: not subscribed yet".to_string()
                } else {
                    String::new()
                }),
            },
            events,
        })
    }

    /// The bus other replicas hear this one on.
    pub fn events(&self) -> &EventBus {
        &self.events
    }

    /// Publishes `event` on `tier`'s channel after a store write. A failure is logged,
    /// not returned: the write stands, and the others see it within the cache's
    /// staleness bound (or fail closed, having lost the same Redis).
    pub async fn publish(&self, tier: &str, event: &Event) {
        if let Err(e) = self.events.publish(tier, event).await {
            tracing::warn!(tier, error = %e, "change event not published; other replicas see it within the staleness bound");
        }
    }

    /// `Err(reason)` while session lookups fail closed, for `/readyz`.
    pub fn serving(&self) -> Result<(), String> {
        if self.halted.on.load(Ordering::Acquire) {
            Err(self
                .halted
                .reason
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone())
        } else {
            Ok(())
        }
    }

    /// Makes every session lookup fail (`503` on authenticated requests) until
    /// [`Sessions::resume_serving`]; `reason` is shown by `/readyz`.
    pub fn stop_serving(&self, reason: &str) {
        let mut held = self.halted.reason.lock().unwrap_or_else(PoisonError::into_inner);
        reason.clone_into(&mut held);
        self.halted.on.store(true, Ordering::Release);
    }

    /// Serves sessions again; call only once the cache was dropped after the events were
    /// followed again.
    pub fn resume_serving(&self) {
        let mut held = self.halted.reason.lock().unwrap_or_else(PoisonError::into_inner);
        held.clear();
        self.halted.on.store(false, Ordering::Release);
    }

    /// The store of a tier.
    pub fn store(&self, tier: &str) -> Result<Arc<dyn TierStore>, StoreError> {
        self.stores.tier(tier).ok_or(StoreError::NotFound("tier store"))
    }

    /// Stores a new session.
    pub async fn create(&self, record: SessionRecord) -> Result<(), StoreError> {
        // A revocation of the user (password change, kill switch) can run between the
        // store write and the cache insert; it must win.
        let seen = self.generation();
        self.store(&record.tier)?.create_session(&record).await?;
        self.cache_unless_revoked_since(seen, Arc::new(record));
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
        match id_hash_of_cookie(cookie_value) {
            Some(id_hash) => self.authenticate_key(tier, id_hash, now, idle_timeout).await,
            None => Ok(None),
        }
    }

    /// [`Sessions::authenticate`] for a token's store key (see [`CookieMemo`]).
    pub async fn authenticate_key(
        &self,
        tier: &str,
        id_hash: [u8; 32],
        now: i64,
        idle_timeout: i64,
    ) -> Result<Option<Arc<SessionRecord>>, StoreError> {
        if self.halted.on.load(Ordering::Acquire) {
            return Err(StoreError::Unavailable("session events not followed".into()));
        }
        // `seen` matters only for a record read from the store (read before the read), so
        // a cache hit takes no lock.
        let (record, seen) = match self.cache.get(&id_hash) {
            Some(record) => (record, None),
            None => {
                let seen = self.generation();
                match self.store(tier)?.get_session(&id_hash).await? {
                    Some(record) => (Arc::new(record), Some(seen)),
                    None => return Ok(None),
                }
            }
        };
        if record.tier != tier {
            // Another tier's cookie name carrying this token: no session here, but the
            // entry stays, as it is still right for its own tier (dropping it would let
            // anyone force store reads of someone else's session at will).
            return Ok(None);
        }
        if !record.is_live(now) {
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
        if let Some(seen) = seen {
            self.cache_unless_revoked_since(seen, record.clone());
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
        if done {
            self.publish(tier, &Event::sessions_revoked(std::slice::from_ref(id_hash)))
                .await;
        }
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
        if !ids.is_empty() {
            self.publish(tier, &Event::sessions_revoked(&ids)).await;
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
        if !ids.is_empty() {
            self.publish(tier, &Event::sessions_revoked(&ids)).await;
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
        self.invalidate(ids);
        let _ = self.revoked.send(Revoked::Scope(Arc::new(scope.clone())));
    }

    /// Sessions another replica revoked: evicted as local revocations are, and their open
    /// connections here told to close.
    pub fn evict_remote(&self, ids: &[[u8; 32]]) {
        for id in ids {
            self.evict(id);
        }
    }

    /// A kill switch another replica changed: every cached session in `scope` is evicted
    /// (its store record says whether it was revoked) and open connections in it close.
    pub fn evict_scope(&self, scope: &Scope) {
        let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        for (id, record) in &self.cache {
            if scope.covers(&record.tier, &record.tenant, &record.subject) {
                self.cache.invalidate(&*id);
            }
        }
        drop(generation);
        let _ = self.revoked.send(Revoked::Scope(Arc::new(scope.clone())));
    }

    /// Forgets every cached session (events may have been missed); a store read that
    /// began before cannot refill the cache.
    pub fn drop_cache(&self) {
        let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        self.cache.invalidate_all();
    }

    fn evict(&self, id_hash: &[u8; 32]) {
        self.invalidate(std::slice::from_ref(id_hash));
        let _ = self.revoked.send(Revoked::Session(*id_hash));
    }

    /// The revocation generation, read before a store read whose answer may be cached.
    fn generation(&self) -> u64 {
        // Nothing panics while holding the lock; should it be poisoned, the counter in it
        // is still the right one.
        *self.generation.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Caches `record` only if no eviction happened since the generation `seen` was read.
    fn cache_unless_revoked_since(&self, seen: u64, record: Arc<SessionRecord>) {
        let generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        if *generation == seen {
            self.cache.insert(record.id_hash, record);
        }
    }

    /// Drops revoked sessions from the cache and advances the generation in one step, so
    /// a racing store read either sees the new generation or inserts before the drop.
    fn invalidate(&self, ids: &[[u8; 32]]) {
        let mut generation = self.generation.lock().unwrap_or_else(PoisonError::into_inner);
        *generation = generation.wrapping_add(1);
        for id in ids {
            self.cache.invalidate(id);
        }
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

    #[test]
    fn a_cookie_memo_answers_for_the_value_it_was_given_and_no_other() {
        let (a, b) = (mint_token(), mint_token());
        let memo = CookieMemo::default();
        assert_eq!(memo.id_hash(&a.cookie_value), Some(a.id_hash));
        assert_eq!(memo.id_hash(&a.cookie_value), Some(a.id_hash), "remembered");
        assert_eq!(memo.id_hash(&b.cookie_value), Some(b.id_hash), "another value");
        assert_eq!(memo.id_hash(&a.cookie_value), Some(a.id_hash), "the first again");
        // One changed character is another token (or none), never the remembered one.
        let mut near = a.cookie_value.clone().into_bytes();
        near[42] = if near[42] == b'A' { b'B' } else { b'A' };
        let near = String::from_utf8(near).unwrap();
        assert_eq!(memo.id_hash(&near), id_hash_of_cookie(&near));
        assert_ne!(memo.id_hash(&near), Some(a.id_hash));
        for bad in ["", "x", &"*".repeat(43)] {
            assert_eq!(memo.id_hash(bad), None, "{bad:.10}");
        }
        assert!(!format!("{memo:?}").contains(&a.cookie_value[..8]));
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
    async fn a_shorter_max_staleness_bounds_unpushed_revocations_more_tightly() {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(&format!("sqlite:{}", dir.path().display()), ["prod"])
            .await
            .unwrap();
        let sessions = Sessions::configured(stores, EventBus::local(), Duration::from_millis(50));
        let now = 1_000_000;
        let token = mint_token();
        sessions.create(record(token.id_hash, now)).await.unwrap();
        let rev = Revocation {
            at: now,
            by: "cli".into(),
            reason: "test".into(),
        };
        let store = sessions.store("prod").unwrap();
        assert!(store.revoke_session(&token.id_hash, &rev).await.unwrap());
        // Still cached (nobody evicted it), but only for the configured 50 ms.
        let started = std::time::Instant::now();
        while sessions
            .authenticate("prod", &token.cookie_value, now, 1800)
            .await
            .unwrap()
            .is_some()
        {
            assert!(
                started.elapsed() < Duration::from_millis(400),
                "served past max_staleness"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
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

    /// Once armed, holds the answer of the next session read (or create) until told to go
    /// on: the interleaving "store read starts, a revocation runs, the read returns" made
    /// deterministic.
    #[derive(Default)]
    struct Pause {
        armed: std::sync::atomic::AtomicBool,
        armed_create: std::sync::atomic::AtomicBool,
        reads: AtomicU64,
        read_done: tokio::sync::Notify,
        resume: tokio::sync::Notify,
    }

    impl Pause {
        fn arm(&self) {
            self.armed.store(true, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl AfterCall for Pause {
        async fn after(&self, call: &'static str) {
            let armed = match call {
                "get_session" => {
                    self.reads.fetch_add(1, Ordering::SeqCst);
                    &self.armed
                }
                "create_session" => &self.armed_create,
                _ => return,
            };
            if armed.swap(false, Ordering::SeqCst) {
                self.read_done.notify_one();
                self.resume.notified().await;
            }
        }
    }

    use crate::store::SessionStore;
    use crate::store::hooked::{AfterCall, Hooked};

    /// The real SQLite store of tier prod, paused as the test says.
    type PausingStore = Hooked<Pause>;

    async fn pausing_sessions() -> (tempfile::TempDir, Arc<PausingStore>, Arc<Sessions>) {
        let dir = tempfile::tempdir().unwrap();
        let sqlite = Stores::open(&format!("sqlite:{}", dir.path().display()), ["prod"])
            .await
            .unwrap();
        let store = Arc::new(PausingStore {
            inner: sqlite.tier("prod").unwrap(),
            hook: Pause::default(),
        });
        let by_tier = std::collections::BTreeMap::from([("prod".to_string(), store.clone() as Arc<dyn TierStore>)]);
        (dir, store, Sessions::new(Stores::from_tiers(by_tier)))
    }

    /// Runs `revoke` while a lookup of `token` has read the still-live record from the
    /// store but not yet returned, then asks again: the answer must be "no session".
    async fn revoked_during_a_store_read<F, Fut>(revoke: F)
    where
        F: FnOnce(Arc<Sessions>, [u8; 32]) -> Fut,
        Fut: std::future::Future<Output = ()>,
    {
        let (_dir, store, sessions) = pausing_sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        // Straight into the store: the cache is empty, so the next lookup reads the store.
        store.create_session(&record(token.id_hash, now)).await.unwrap();
        store.hook.arm();
        let lookup = tokio::spawn({
            let sessions = sessions.clone();
            let cookie = token.cookie_value.clone();
            async move { sessions.authenticate("prod", &cookie, now, 1800).await }
        });
        store.hook.read_done.notified().await;
        revoke(sessions.clone(), token.id_hash).await;
        store.hook.resume.notify_one();
        // The lookup began before the revocation, so either answer is fair for it.
        lookup.await.unwrap().unwrap();
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_none(),
            "a session revoked during a store read was served from the cache"
        );
    }

    fn revocation(now: i64) -> Revocation {
        Revocation {
            at: now,
            by: "admin".into(),
            reason: "test".into(),
        }
    }

    #[tokio::test]
    async fn a_read_that_began_before_a_revocation_cannot_refill_the_cache() {
        revoked_during_a_store_read(|sessions, id| async move {
            assert!(sessions.revoke("prod", &id, &revocation(1_000_000)).await.unwrap());
        })
        .await;
    }

    #[tokio::test]
    async fn a_read_that_began_before_a_user_revocation_cannot_refill_the_cache() {
        revoked_during_a_store_read(|sessions, _| async move {
            let ended = sessions
                .revoke_user("prod", "acme", "alice", None, &revocation(1_000_000))
                .await
                .unwrap();
            assert_eq!(ended.len(), 1);
        })
        .await;
    }

    #[tokio::test]
    async fn a_read_that_began_before_a_kill_switch_cannot_refill_the_cache() {
        revoked_during_a_store_read(|sessions, _| async move {
            let ended = sessions
                .store("prod")
                .unwrap()
                .revoke_tenant_sessions("acme", &revocation(1_000_000))
                .await
                .unwrap();
            assert_eq!(ended.len(), 1);
            let scope = Scope::Tenant {
                tier: "prod".into(),
                tenant: "acme".into(),
            };
            sessions.evicted_in_scope(&ended, &scope);
        })
        .await;
    }

    #[tokio::test]
    async fn a_read_that_began_before_another_replicas_revocation_cannot_refill_the_cache() {
        revoked_during_a_store_read(|sessions, id| async move {
            let store = sessions.store("prod").unwrap();
            assert!(store.revoke_session(&id, &revocation(1_000_000)).await.unwrap());
            // The event of the replica that revoked it arrives.
            sessions.evict_remote(&[id]);
        })
        .await;
    }

    #[tokio::test]
    async fn a_read_that_began_before_another_replicas_trip_cannot_refill_the_cache() {
        revoked_during_a_store_read(|sessions, _| async move {
            let store = sessions.store("prod").unwrap();
            let ended = store
                .revoke_tenant_sessions("acme", &revocation(1_000_000))
                .await
                .unwrap();
            assert_eq!(ended.len(), 1);
            sessions.evict_scope(&Scope::Tenant {
                tier: "prod".into(),
                tenant: "acme".into(),
            });
        })
        .await;
    }

    #[tokio::test]
    async fn a_read_that_began_before_the_cache_was_dropped_cannot_refill_it() {
        revoked_during_a_store_read(|sessions, id| async move {
            let store = sessions.store("prod").unwrap();
            assert!(store.revoke_session(&id, &revocation(1_000_000)).await.unwrap());
            // Revoked while the events were not followed: the resubscription drops the cache.
            sessions.drop_cache();
        })
        .await;
    }

    #[tokio::test]
    async fn a_scope_eviction_drops_only_the_sessions_in_scope() {
        let (_dir, store, sessions) = pausing_sessions().await;
        let now = 1_000_000;
        let (alice, bob) = (mint_token(), mint_token());
        sessions.create(record(alice.id_hash, now)).await.unwrap();
        let mut other = record(bob.id_hash, now);
        other.subject = "bob".into();
        sessions.create(other).await.unwrap();
        sessions.evict_scope(&Scope::Account {
            tier: "prod".into(),
            tenant: "acme".into(),
            subject: "alice".into(),
        });
        for token in [&alice, &bob] {
            assert!(
                sessions
                    .authenticate("prod", &token.cookie_value, now, 1800)
                    .await
                    .unwrap()
                    .is_some()
            );
        }
        assert_eq!(
            store.hook.reads.load(Ordering::SeqCst),
            1,
            "only alice's entry was dropped"
        );
    }

    #[tokio::test]
    async fn while_halted_every_lookup_fails_closed_even_from_the_cache() {
        let (_dir, sessions) = sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        sessions.create(record(token.id_hash, now)).await.unwrap();
        assert!(sessions.serving().is_ok());
        sessions.stop_serving("session events: subscription lost (tier prod)");
        assert_eq!(
            sessions.serving(),
            Err("session events: subscription lost (tier prod)".to_string())
        );
        let refused = sessions.authenticate("prod", &token.cookie_value, now, 1800).await;
        assert!(matches!(refused, Err(StoreError::Unavailable(_))), "{refused:?}");
        sessions.resume_serving();
        assert!(sessions.serving().is_ok());
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_some()
        );
    }

    #[tokio::test]
    async fn one_process_is_never_halted_by_the_bus() {
        let (_dir, sessions) = sessions().await;
        assert!(sessions.serving().is_ok(), "one process has nothing to miss");
    }

    #[tokio::test]
    async fn a_session_revoked_while_it_is_created_is_not_cached_live() {
        let (_dir, store, sessions) = pausing_sessions().await;
        let now = 1_000_000;
        let token = mint_token();
        store.hook.armed_create.store(true, Ordering::SeqCst);
        let create = tokio::spawn({
            let sessions = sessions.clone();
            let record = record(token.id_hash, now);
            async move { sessions.create(record).await }
        });
        store.hook.read_done.notified().await;
        // A password change ends every session of the user, the one being created too.
        let ended = sessions
            .revoke_user("prod", "acme", "alice", None, &revocation(now))
            .await
            .unwrap();
        assert_eq!(ended, vec![token.id_hash]);
        store.hook.resume.notify_one();
        create.await.unwrap().unwrap();
        assert!(
            sessions
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_none(),
            "a session revoked while it was created was served from the cache"
        );
    }

    #[tokio::test]
    async fn another_tiers_cookie_name_does_not_empty_the_cache_entry() {
        let (_dir, store, sessions) = pausing_sessions().await;
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
                .authenticate("prod", &token.cookie_value, now, 1800)
                .await
                .unwrap()
                .is_some()
        );
        // Served from the cache: a foreign cookie name cannot force store reads (each one
        // is a window for the race above) of someone else's session.
        assert_eq!(store.hook.reads.load(Ordering::SeqCst), 0);
    }
}
