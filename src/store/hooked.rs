//! Tests only: [`Hooked`], a [`TierStore`] that answers every call from a real store and
//! lets a test act after each call, before the answer goes back (hold it back to make a
//! race deterministic, count calls). A test double writes out only what it does, not
//! every method of every role; this file owns the forwarding and nothing else.

use std::sync::Arc;

use super::{
    AccountStore, AuditLog, ChangeStore, KeyStore, PublishedKey, SessionStore, SsoActivation, SsoRollback, SsoStore,
    StoreError, SwitchStore, ThrottleStore, TierStore,
};
use crate::audit::{AuditEntry, AuditRecord};
use crate::records::{
    ChangeRequest, KillSwitch, LoginEvent, Revocation, SessionRecord, SsoTest, SsoVersion, UserRecord,
};

/// What a test does once a call has reached the real store.
#[async_trait::async_trait]
pub(crate) trait AfterCall: Send + Sync + 'static {
    /// Runs after the real store answered `call` (the method's name, e.g.
    /// `"get_session"`) and before that answer is returned.
    async fn after(&self, call: &'static str);
}

/// A store of one tier whose calls a test can see and hold back.
pub(crate) struct Hooked<H> {
    /// The real store: every answer is its answer.
    pub inner: Arc<dyn TierStore>,
    /// The test's part, run after each call.
    pub hook: H,
}

/// Implements each role for [`Hooked`]: the call goes to `inner`, then to the hook.
macro_rules! forward {
    ($($role:ident { $(fn $name:ident(&self $(, $arg:ident: $ty:ty)*) -> $ret:ty;)* })*) => {$(
        #[async_trait::async_trait]
        impl<H: AfterCall> $role for Hooked<H> {
            $(async fn $name(&self $(, $arg: $ty)*) -> $ret {
                let answer = self.inner.$name($($arg),*).await;
                self.hook.after(stringify!($name)).await;
                answer
            })*
        }
    )*};
}

forward! {
    SessionStore {
        fn create_session(&self, s: &SessionRecord) -> Result<(), StoreError>;
        fn get_session(&self, id_hash: &[u8; 32]) -> Result<Option<SessionRecord>, StoreError>;
        fn touch_session(&self, id_hash: &[u8; 32], now: i64, idle: i64) -> Result<(), StoreError>;
        fn revoke_session(&self, id_hash: &[u8; 32], rev: &Revocation) -> Result<bool, StoreError>;
        fn revoke_user_sessions(&self, tenant: &str, subject: &str, keep: Option<&[u8; 32]>, rev: &Revocation)
            -> Result<Vec<[u8; 32]>, StoreError>;
        fn revoke_tenant_sessions(&self, tenant: &str, rev: &Revocation) -> Result<Vec<[u8; 32]>, StoreError>;
        fn revoke_sso_sessions(&self, tenant: &str, sso_sid: &str, rev: &Revocation)
            -> Result<Vec<[u8; 32]>, StoreError>;
        fn list_user_sessions(&self, tenant: &str, subject: &str, now: i64) -> Result<Vec<SessionRecord>, StoreError>;
        fn list_tenant_sessions(&self, tenant: &str, now: i64, limit: usize) -> Result<Vec<SessionRecord>, StoreError>;
    }
    AccountStore {
        fn create_user(&self, u: &UserRecord) -> Result<(), StoreError>;
        fn get_user(&self, tenant: &str, username: &str) -> Result<Option<UserRecord>, StoreError>;
        fn update_user(&self, u: &UserRecord) -> Result<(), StoreError>;
        fn list_users(&self, tenant: &str) -> Result<Vec<UserRecord>, StoreError>;
        fn consume_recovery_code(&self, tenant: &str, username: &str, code_hash: &[u8; 32])
            -> Result<bool, StoreError>;
        fn record_login(&self, e: &LoginEvent) -> Result<(), StoreError>;
        fn login_history(&self, tenant: &str, subject: &str, limit: usize, before_seq: Option<i64>)
            -> Result<Vec<LoginEvent>, StoreError>;
        fn tenant_login_history(&self, tenant: &str, limit: usize, before_seq: Option<i64>)
            -> Result<Vec<LoginEvent>, StoreError>;
        fn accept_totp_step(&self, tenant: &str, subject: &str, step: u64, expires_at: i64)
            -> Result<bool, StoreError>;
    }
    ThrottleStore {
        fn hit(&self, key: &str, now: i64, window_secs: i64) -> Result<(u32, i64), StoreError>;
        fn give_back(&self, key: &str, window_end: i64) -> Result<(), StoreError>;
        fn peek(&self, key: &str, now: i64) -> Result<(u32, i64), StoreError>;
        fn clear(&self, key: &str) -> Result<(), StoreError>;
    }
    SwitchStore {
        fn put_kill_switch(&self, ks: &KillSwitch) -> Result<(), StoreError>;
        fn delete_kill_switch(&self, scope_key: &str) -> Result<Option<KillSwitch>, StoreError>;
        fn list_kill_switches(&self) -> Result<Vec<KillSwitch>, StoreError>;
    }
    AuditLog {
        fn append_audit(&self, entry: &AuditEntry) -> Result<AuditRecord, StoreError>;
        fn audit_records(&self, after_seq: u64, limit: usize) -> Result<Vec<AuditRecord>, StoreError>;
    }
    ChangeStore {
        fn put_change(&self, c: &ChangeRequest) -> Result<(), StoreError>;
        fn get_change(&self, id: &str) -> Result<Option<ChangeRequest>, StoreError>;
        fn list_changes(&self) -> Result<Vec<ChangeRequest>, StoreError>;
        fn replace_change_if(&self, c: &ChangeRequest, expected_version: u64) -> Result<bool, StoreError>;
    }
    SsoStore {
        fn put_sso_draft(&self, draft: &SsoVersion) -> Result<SsoVersion, StoreError>;
        fn get_sso_draft(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError>;
        fn get_sso_active(&self, tenant: &str) -> Result<Option<SsoVersion>, StoreError>;
        fn list_sso_versions(&self, tenant: &str) -> Result<Vec<SsoVersion>, StoreError>;
        fn record_sso_test(&self, tenant: &str, test: &SsoTest) -> Result<bool, StoreError>;
        fn activate_sso(&self, tenant: &str) -> Result<SsoActivation, StoreError>;
        fn rollback_sso(&self, tenant: &str) -> Result<SsoRollback, StoreError>;
    }
    KeyStore {
        fn publish_assertion_key(&self, key: &PublishedKey) -> Result<(), StoreError>;
        fn published_assertion_keys(&self, now: i64) -> Result<Vec<PublishedKey>, StoreError>;
    }
    TierStore {
        fn purge_expired(&self, now: i64) -> Result<u64, StoreError>;
    }
}
