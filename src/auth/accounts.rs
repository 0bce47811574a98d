//! Local accounts of a tenant: creating one, changing its password, resetting its second
//! factor. One service for every interface (the CLI, the tenant pages and their JSON
//! twins, the demo): interfaces parse their input and render the answer, this module
//! checks the rules, hashes, writes the store, audits and ends sessions.
//!
//! Knows nothing of HTTP or the command line; the clock is passed in. It never sees a
//! cookie and never logs a password, a hash or a TOTP secret.

use crate::account::{self, LocalNameError};
use crate::audit::{Actor, AuditEntry};
use crate::auth::login::{LocalLogin, LoginContext, LoginError};
use crate::auth::password::{self, PasswordError, PasswordPolicyError};
use crate::records::{Revocation, SessionRecord, UserRecord};
use crate::store::{AuditLog, StoreError};
use crate::telemetry::{EventOutcome, SecurityEvent};

/// Why an account change was refused. The text is safe to show the caller (it never
/// carries a password or stored value); interfaces choose the status.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// The user name breaks the rule for local names.
    #[error(transparent)]
    Name(#[from] LocalNameError),
    /// The new password breaks the password policy.
    #[error(transparent)]
    Policy(#[from] PasswordPolicyError),
    /// The account signs in through single sign-on: it has no local password.
    #[error("this account signs in through single sign-on")]
    SsoAccount,
    /// The current password or the code is wrong (never says which).
    #[error("the current password or the code is wrong")]
    WrongFactors,
    /// Too many attempts; try again after this many seconds.
    #[error("too many attempts; try again in {0} s")]
    Throttled(i64),
    /// No local account of that name in the tenant.
    #[error("no such user")]
    NotFound,
    /// Password hashing failed or is saturated.
    #[error(transparent)]
    Hash(#[from] PasswordError),
    /// The store failed; see each operation for what may already be done.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A local account to create.
#[derive(Debug, Clone)]
pub struct NewAccount<'a> {
    /// Tenant of the account.
    pub tenant: &'a str,
    /// Login name and session subject.
    pub username: &'a str,
    /// Name shown on pages; the user name when absent.
    pub display_name: Option<&'a str>,
    /// Roles its sessions get.
    pub roles: Vec<String>,
}

/// Local accounts of every tier, over the sign-in flow (which re-checks the factors of a
/// password change with the same throttling as a sign-in).
#[derive(Clone)]
pub struct Accounts {
    login: LocalLogin,
}

impl Accounts {
    /// The service over the sign-in flow's stores and password hasher.
    pub fn new(login: LocalLogin) -> Self {
        Accounts { login }
    }

    /// Creates a local account of `tier` without a second factor (it is enrolled at the
    /// first sign-in), audited as `user.create`. The name and the password must pass
    /// their rules; a taken name is the store's `Conflict`.
    pub async fn create(
        &self,
        tier: &str,
        new: NewAccount<'_>,
        password: &str,
        actor: &Actor,
        now: i64,
    ) -> Result<UserRecord, AccountError> {
        account::check_local_name(new.username)?;
        password::check_new_password(password, new.username)?;
        let store = self.login.sessions.store(tier)?;
        let user = self.record(new, password, now).await?;
        store.create_user(&user).await?;
        audit(
            &*store,
            tier,
            actor,
            &user,
            "user.create",
            serde_json::json!({ "username": user.username, "roles": user.roles }),
            now,
        )
        .await?;
        Ok(user)
    }

    /// Creates an account with its TOTP already enrolled, unless the name is taken; for
    /// seeding a fresh store with fixed accounts (the demo), so neither rules nor audit
    /// apply. Returns whether it was created.
    pub async fn seed(
        &self,
        tier: &str,
        new: NewAccount<'_>,
        password: &str,
        totp_secret: &str,
        now: i64,
    ) -> Result<bool, AccountError> {
        let store = self.login.sessions.store(tier)?;
        if store.get_user(new.tenant, new.username).await?.is_some() {
            return Ok(false);
        }
        let mut user = self.record(new, password, now).await?;
        user.totp_secret = Some(totp_secret.to_string());
        user.totp_enrolled_at = Some(now);
        match store.create_user(&user).await {
            Ok(()) => Ok(true),
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Changes the password of the signed-in local account of `session`: the current
    /// password and a fresh TOTP code are checked like a sign-in (throttled, recorded),
    /// then every session of the account ends, this one too, so the next sign-in goes
    /// through MFA again. Audited as `user.password_change` by the user, through the
    /// tenant console (pages and their JSON API), the only place to change one's own.
    pub async fn change_password(
        &self,
        ctx: &LoginContext<'_>,
        session: &SessionRecord,
        current: &str,
        new: &str,
        code: &str,
    ) -> Result<(), AccountError> {
        if session.auth_method != "password" {
            return Err(AccountError::SsoAccount);
        }
        password::check_new_password(new, &session.subject)?;
        match self.login.verify_factors(ctx, &session.subject, current, code).await {
            Ok(()) => {}
            Err(LoginError::Throttled(secs)) => return Err(AccountError::Throttled(secs)),
            Err(LoginError::Busy) => return Err(PasswordError::Busy.into()),
            Err(LoginError::Store(e)) => return Err(e.into()),
            Err(_) => return Err(AccountError::WrongFactors),
        }
        let store = self.login.sessions.store(ctx.tier)?;
        let mut user = store
            .get_user(&session.tenant, &session.subject)
            .await?
            .ok_or(AccountError::NotFound)?;
        user.password_hash = self.login.hasher.hash(new).await?;
        user.password_changed_at = ctx.now;
        store.update_user(&user).await?;
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: "password_changed".into(),
        };
        let ended = self
            .login
            .sessions
            .revoke_user(ctx.tier, &session.tenant, &session.subject, None, &rev)
            .await?;
        let actor = Actor {
            name: format!("user:{}", session.subject),
            source_ip: ctx.ip.to_string(),
            system: "console".into(),
        };
        audit(
            &*store,
            ctx.tier,
            &actor,
            &user,
            "user.password_change",
            serde_json::json!({ "password_changed_at": ctx.now, "sessions_ended": ended.len() }),
            ctx.now,
        )
        .await?;
        SecurityEvent {
            source_ip: Some(ctx.ip),
            user: Some(&session.subject),
            tenant: Some(&session.tenant),
            tier: Some(&session.tier),
            request_id: ctx.request_id,
            ..SecurityEvent::new("password_change", EventOutcome::Success)
        }
        .info("password changed; every session ended");
        Ok(())
    }

    /// Removes a local account's TOTP secret and recovery codes and lifts its
    /// second-factor lock, audited as `user.mfa_reset`; then ends every session of the
    /// account. The user enrols again at the next sign-in. Returns the sessions ended.
    pub async fn reset_mfa(
        &self,
        tier: &str,
        tenant: &str,
        username: &str,
        actor: &Actor,
        now: i64,
    ) -> Result<usize, AccountError> {
        let store = self.login.sessions.store(tier)?;
        let mut user = store.get_user(tenant, username).await?.ok_or(AccountError::NotFound)?;
        user.totp_secret = None;
        user.totp_enrolled_at = None;
        user.recovery_code_hashes.clear();
        store.update_user(&user).await?;
        crate::auth::login::clear_second_factor_lock(&*store, tenant, username).await?;
        audit(
            &*store,
            tier,
            actor,
            &user,
            "user.mfa_reset",
            serde_json::json!({ "totp": "removed", "recovery_codes": "removed" }),
            now,
        )
        .await?;
        let rev = Revocation {
            at: now,
            by: actor.name.clone(),
            reason: "mfa_reset".into(),
        };
        let ended = self
            .login
            .sessions
            .revoke_user(tier, tenant, username, None, &rev)
            .await?;
        Ok(ended.len())
    }

    /// The record of a new account without a second factor.
    async fn record(&self, new: NewAccount<'_>, password: &str, now: i64) -> Result<UserRecord, AccountError> {
        Ok(UserRecord {
            tenant: new.tenant.to_string(),
            username: new.username.to_string(),
            display_name: new.display_name.unwrap_or(new.username).to_string(),
            roles: new.roles,
            password_hash: self.login.hasher.hash(password).await?,
            totp_secret: None,
            totp_enrolled_at: None,
            recovery_code_hashes: Vec::new(),
            disabled: false,
            created_at: now,
            password_changed_at: now,
        })
    }
}

/// The audit record of a change to `user`: nothing before, `after` redacted.
async fn audit(
    log: &dyn AuditLog,
    tier: &str,
    actor: &Actor,
    user: &UserRecord,
    action: &str,
    after: serde_json::Value,
    now: i64,
) -> Result<(), StoreError> {
    let entry = AuditEntry {
        target: format!("account:{}:{}", user.tenant, user.username),
        tenant: Some(user.tenant.clone()),
        tier: tier.to_string(),
        after: crate::audit::redact(&after),
        ..AuditEntry::by(actor, action, now)
    };
    log.append_audit(&entry).await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::auth::mfa;
    use crate::auth::password::{PasswordHasher, PasswordHasherConfig};
    use crate::killswitch::KillSwitches;
    use crate::records::session_id_hash;
    use crate::session::Sessions;
    use crate::store::Stores;

    const NOW: i64 = 1_700_000_000;

    /// The service over a real SQLite store of tier `prod` in a fresh directory.
    async fn accounts() -> (tempfile::TempDir, Accounts, Arc<Sessions>) {
        let dir = tempfile::tempdir().unwrap();
        let stores = Stores::open(&format!("sqlite:{}", dir.path().display()), ["prod"])
            .await
            .unwrap();
        let sessions = Sessions::new(stores);
        let login = LocalLogin {
            sessions: sessions.clone(),
            hasher: PasswordHasher::new(PasswordHasherConfig::default()).unwrap(),
            switches: KillSwitches::new(sessions.clone()),
            logins: Default::default(),
        };
        (dir, Accounts::new(login), sessions)
    }

    fn cli() -> Actor {
        Actor {
            name: "cli:olivia".into(),
            source_ip: "-".into(),
            system: "cli".into(),
        }
    }

    fn new_account(username: &str) -> NewAccount<'_> {
        NewAccount {
            tenant: "acme",
            username,
            display_name: None,
            roles: vec!["tenant-admin".into()],
        }
    }

    fn login_ctx(now: i64) -> LoginContext<'static> {
        LoginContext {
            tenant: "acme",
            tier: "prod",
            idle_timeout: 1800,
            absolute_timeout: 3600,
            ip: "192.0.2.1",
            user_agent: "test",
            request_id: None,
            now,
            auto_trip: &[],
            sso: None,
        }
    }

    /// A live session of `subject`, signed in with `method`.
    async fn session(sessions: &Sessions, subject: &str, method: &str, seed: u8) -> SessionRecord {
        let record = SessionRecord {
            id_hash: session_id_hash(&[seed; 32]),
            tenant: "acme".into(),
            tier: "prod".into(),
            subject: subject.into(),
            idp: crate::account::LOCAL_IDP.to_string(),
            display_name: subject.into(),
            roles: vec![],
            auth_method: method.into(),
            amr: vec!["pwd".into(), "otp".into()],
            mfa_at: Some(NOW),
            created_at: NOW,
            last_seen: NOW,
            idle_expires_at: NOW + 1800,
            absolute_expires_at: NOW + 3600,
            ip: "192.0.2.1".into(),
            user_agent: "test".into(),
            csrf_token: "c".into(),
            sso_sid: None,
            revoked: None,
        };
        sessions.create(record.clone()).await.unwrap();
        record
    }

    async fn audit_actions(sessions: &Sessions) -> Vec<AuditEntry> {
        let store = sessions.store("prod").unwrap();
        let records = store.audit_records(0, 100).await.unwrap();
        records.into_iter().map(|r| r.entry).collect()
    }

    /// If this broke, an operator's `user add` would store a bad name or a weak password,
    /// or leave no audit record of who created the account.
    #[tokio::test]
    async fn a_created_account_is_checked_hashed_and_audited() {
        let (_dir, accounts, sessions) = accounts().await;
        for (name, password) in [("a|b", "long enough password"), ("bob", "bob"), ("bob", "password")] {
            assert!(
                accounts
                    .create("prod", new_account(name), password, &cli(), NOW)
                    .await
                    .is_err(),
                "{name}"
            );
        }
        let user = accounts
            .create("prod", new_account("bob"), "correct horse battery", &cli(), NOW)
            .await
            .unwrap();
        assert_eq!(user.display_name, "bob");
        assert!(user.totp_secret.is_none() && user.totp_enrolled_at.is_none());
        assert!(!user.password_hash.contains("correct horse"));
        let again = accounts
            .create("prod", new_account("bob"), "correct horse battery", &cli(), NOW)
            .await;
        assert!(matches!(again, Err(AccountError::Store(StoreError::Conflict(_)))));

        let audit = audit_actions(&sessions).await;
        assert_eq!(audit.len(), 1, "only the account created is audited: {audit:?}");
        let entry = &audit[0];
        assert_eq!(
            (entry.action.as_str(), entry.target.as_str(), entry.actor.as_str()),
            ("user.create", "account:acme:bob", "cli:olivia")
        );
        assert_eq!((entry.system.as_str(), entry.source_ip.as_str()), ("cli", "-"));
        assert_eq!(
            entry.after,
            serde_json::json!({"username": "bob", "roles": ["tenant-admin"]})
        );
        assert_eq!(entry.before, serde_json::Value::Null);
    }

    /// If this broke, an MFA reset would leave the old authenticator working, keep the
    /// attacker's sessions alive, or go unaudited.
    #[tokio::test]
    async fn an_mfa_reset_removes_the_factor_ends_sessions_and_is_audited() {
        let (_dir, accounts, sessions) = accounts().await;
        assert!(
            accounts
                .seed(
                    "prod",
                    new_account("bob"),
                    "correct horse battery",
                    "JBSWY3DPEHPK3PXP",
                    NOW
                )
                .await
                .unwrap()
        );
        let live = session(&sessions, "bob", "password", 1).await;
        let other = session(&sessions, "carol", "password", 2).await;

        assert_eq!(accounts.reset_mfa("prod", "acme", "bob", &cli(), NOW).await.unwrap(), 1);
        let store = sessions.store("prod").unwrap();
        let user = store.get_user("acme", "bob").await.unwrap().unwrap();
        assert!(user.totp_secret.is_none() && user.totp_enrolled_at.is_none());
        let ended = store.get_session(&live.id_hash).await.unwrap().unwrap();
        let rev = ended.revoked.unwrap();
        assert_eq!((rev.reason.as_str(), rev.by.as_str()), ("mfa_reset", "cli:olivia"));
        assert!(
            store
                .get_session(&other.id_hash)
                .await
                .unwrap()
                .unwrap()
                .revoked
                .is_none()
        );

        let audit = audit_actions(&sessions).await;
        assert_eq!(audit.len(), 1, "{audit:?}");
        assert_eq!(audit[0].action, "user.mfa_reset");
        assert_eq!(audit[0].target, "account:acme:bob");
        assert_eq!(
            audit[0].after,
            serde_json::json!({"totp": "removed", "recovery_codes": "removed"})
        );
        assert!(matches!(
            accounts.reset_mfa("prod", "acme", "nobody", &cli(), NOW).await,
            Err(AccountError::NotFound)
        ));
    }

    /// If this broke, a password could be changed without both factors, the old
    /// password (or a stolen session) would keep working after the change, or the change
    /// would leave no audit record of who made it and from where.
    #[tokio::test]
    async fn a_password_change_needs_both_factors_ends_every_session_and_is_audited() {
        let (_dir, accounts, sessions) = accounts().await;
        let totp = mfa::new_secret();
        accounts
            .seed(
                "prod",
                new_account("bob"),
                "correct horse battery",
                &totp.expose_base32(),
                NOW,
            )
            .await
            .unwrap();
        let current = session(&sessions, "bob", "password", 1).await;
        let second = session(&sessions, "bob", "password", 2).await;
        let code = |now: i64| format!("{:06}", mfa::code_at(&totp, now.unsigned_abs() / 30));

        let ctx = login_ctx(NOW);
        let wrong = accounts
            .change_password(&ctx, &current, "wrong password!", "new long password", &code(NOW))
            .await;
        assert!(matches!(wrong, Err(AccountError::WrongFactors)), "{wrong:?}");
        let weak = accounts
            .change_password(&ctx, &current, "correct horse battery", "bob", &code(NOW))
            .await;
        assert!(matches!(weak, Err(AccountError::Policy(_))), "{weak:?}");
        let sso = SessionRecord {
            auth_method: "oidc".into(),
            ..current.clone()
        };
        let refused = accounts
            .change_password(&ctx, &sso, "correct horse battery", "new long password", &code(NOW))
            .await;
        assert!(matches!(refused, Err(AccountError::SsoAccount)), "{refused:?}");

        let later = NOW + 60;
        accounts
            .change_password(
                &login_ctx(later),
                &current,
                "correct horse battery",
                "new long password",
                &code(later),
            )
            .await
            .unwrap();
        let store = sessions.store("prod").unwrap();
        let user = store.get_user("acme", "bob").await.unwrap().unwrap();
        assert_eq!(user.password_changed_at, later);
        let hasher = PasswordHasher::new(PasswordHasherConfig::default()).unwrap();
        assert!(
            hasher
                .verify("new long password", Some(&user.password_hash))
                .await
                .unwrap()
        );
        for s in [&current, &second] {
            let rev = store.get_session(&s.id_hash).await.unwrap().unwrap().revoked.unwrap();
            assert_eq!(rev.reason, "password_changed");
        }
        let audit = audit_actions(&sessions).await;
        assert_eq!(audit.len(), 1, "only the change that succeeded is audited: {audit:?}");
        let entry = &audit[0];
        assert_eq!(
            (entry.action.as_str(), entry.target.as_str(), entry.actor.as_str()),
            ("user.password_change", "account:acme:bob", "user:bob")
        );
        assert_eq!(
            (entry.system.as_str(), entry.source_ip.as_str(), entry.tier.as_str()),
            ("console", "192.0.2.1", "prod")
        );
        assert_eq!(
            entry.after,
            serde_json::json!({"password_changed_at": later, "sessions_ended": 2})
        );
        assert!(!serde_json::to_string(entry).unwrap().contains("new long password"));
    }

    /// If this broke, restarting the demo would fail on its own accounts or replace them.
    #[tokio::test]
    async fn seeding_keeps_an_existing_account() {
        let (_dir, accounts, sessions) = accounts().await;
        let seed = |password: &'static str| {
            let accounts = accounts.clone();
            async move {
                accounts
                    .seed("prod", new_account("bob"), password, "JBSWY3DPEHPK3PXP", NOW)
                    .await
                    .unwrap()
            }
        };
        assert!(seed("first password here").await);
        assert!(!seed("second password here").await);
        let user = sessions
            .store("prod")
            .unwrap()
            .get_user("acme", "bob")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(user.totp_enrolled_at, Some(NOW));
        let hasher = PasswordHasher::new(PasswordHasherConfig::default()).unwrap();
        assert!(
            hasher
                .verify("first password here", Some(&user.password_hash))
                .await
                .unwrap()
        );
        assert!(audit_actions(&sessions).await.is_empty());
    }
}
