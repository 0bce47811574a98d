//! The local-account sign-in flow, shared by the pages and the JSON API: password step,
//! second factor (TOTP or recovery code), first-login TOTP enrolment, throttling, login
//! history and session creation. Knows nothing of HTTP; the clock is passed in.
//!
//! Throttling reserves each attempt with an atomic hit before checking anything, so
//! concurrent guesses get no extra tries: at most [`ACCOUNT_ATTEMPTS`] password or code
//! attempts per account and [`IP_ATTEMPTS`] failed ones per client IP in [`WINDOW_SECS`],
//! then "try again in N s". The IP slot goes back when the attempt succeeds, so people
//! signing in behind one NAT never use up the budget. The lock is time-boxed by the window,
//! never permanent. Failed second-factor codes also add up over a day: past
//! [`MFA_LOCK_FAILURES`] in [`MFA_LOCK_WINDOW_SECS`] the account's second factor is locked
//! until that window ends or its MFA is reset.

use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

use super::mfa::{self, TotpSecret};
use super::password::{PasswordError, PasswordHasher};
use super::preauth::{PREAUTH_TTL_SECS, PreAuth, SsoIdentity};
use crate::account;
use crate::config::{AutoTripKind, AutoTripRule};
use crate::killswitch::{KillSwitches, Scope};
use crate::records::{LoginEvent, Revocation, SessionRecord, UserRecord};
use crate::session::{MintedToken, Sessions, mint_token};
use crate::store::{AccountStore, StoreError, ThrottleStore, TierStore};
use crate::telemetry::{EventOutcome, LoginCounter, SecurityEvent};

/// Attempts (password or code) per account per window.
pub const ACCOUNT_ATTEMPTS: u32 = 10;
/// Failed attempts per client IP per window (credential stuffing); successes give their
/// reserved slot back.
pub const IP_ATTEMPTS: u32 = 100;
/// Throttling window.
pub const WINDOW_SECS: i64 = 15 * 60;
/// Failed second-factor codes per account in [`MFA_LOCK_WINDOW_SECS`] after which its second
/// factor is locked until that window ends or an operator resets the user's MFA. The
/// 15-minute budget alone allowed 960 guesses a day for ever to someone holding the
/// password; 20 a day (3 valid codes of 10^6 each) stays far below SPEC's "at most 100
/// consecutive failures before lock-out" and leaves the owner room for typos.
pub const MFA_LOCK_FAILURES: u32 = 20;
/// The second-factor lock's fixed window, from the first failed code.
pub const MFA_LOCK_WINDOW_SECS: i64 = 24 * 3600;

/// Why a step failed; each maps to one status and message at the HTTP edge.
#[derive(Debug, thiserror::Error)]
pub enum LoginError {
    /// Wrong user name or password (never says which).
    #[error("invalid user name or password")]
    BadCredentials,
    /// Wrong, reused or malformed code.
    #[error("invalid code")]
    BadCode,
    /// Too many attempts; try again after this many seconds.
    #[error("too many attempts; try again in {0} s")]
    Throttled(i64),
    /// The pre-MFA state is missing, expired or for another step.
    #[error("sign-in expired; start again")]
    NoPendingLogin,
    /// Password hashing is saturated.
    #[error("busy; try again shortly")]
    Busy,
    /// The store failed; nothing was granted.
    #[error("store unavailable")]
    Store(#[from] StoreError),
    /// This tenant signs in through its identity provider only.
    #[error("single sign-on required")]
    SsoRequired,
    /// The IdP did not do multi-factor authentication and the tenant requires it there.
    #[error("multi-factor sign-in at the identity provider required")]
    IdpMfaRequired,
    /// A kill switch covers the tenant or account; the text is the users' message.
    #[error("access suspended")]
    Suspended(String),
}

/// Where a tenant's sign-in happens and with what session settings.
#[derive(Debug, Clone)]
pub struct LoginContext<'a> {
    /// Tenant id.
    pub tenant: &'a str,
    /// Tier name.
    pub tier: &'a str,
    /// Idle timeout of new sessions (seconds).
    pub idle_timeout: i64,
    /// Absolute lifetime of new sessions (seconds).
    pub absolute_timeout: i64,
    /// Client IP (from the socket or a trusted proxy).
    pub ip: &'a str,
    /// Client user agent.
    pub user_agent: &'a str,
    /// The request's id (`http.request.id` of the security events), when there is one.
    pub request_id: Option<&'a str>,
    /// Now (unix seconds).
    pub now: i64,
    /// The tenant's auto-trip rules, fed by failures recorded here.
    pub auto_trip: &'a [AutoTripRule],
    /// The tenant's single sign-on, when it has one (it may refuse local passwords): the
    /// policy files' `[sso]`, else the wizard's active version, read for this sign-in.
    pub sso: Option<&'a crate::config::SsoConfig>,
}

/// A session just created: the cookie value and the record.
#[derive(Debug)]
pub struct NewSession {
    /// Token for the cookie (never stored).
    pub token: MintedToken,
    /// The stored record.
    pub record: SessionRecord,
}

/// Enrolment material shown once on the enrolment step.
pub struct Enrolment {
    /// Base32 secret for manual entry.
    pub secret: String,
    /// otpauth:// URI.
    pub uri: String,
    /// QR code of the URI as inline SVG.
    pub qr_svg: String,
}

/// The sign-in flow over one tier's store.
#[derive(Clone)]
pub struct LocalLogin {
    /// Sessions of every tier.
    pub sessions: Arc<Sessions>,
    /// argon2id pool.
    pub hasher: PasswordHasher,
    /// Kill switches: a covered account or tenant cannot sign in.
    pub switches: Arc<KillSwitches>,
    /// Counts each recorded attempt for `/metrics`.
    pub logins: LoginCounter,
}

impl LocalLogin {
    /// Password step. On success returns the pre-MFA state for the next step.
    pub async fn password(
        &self,
        ctx: &LoginContext<'_>,
        username: &str,
        password: &str,
        rd: &str,
    ) -> Result<PreAuth, LoginError> {
        let store = self.sessions.store(ctx.tier)?;
        if ctx.sso.is_some_and(|s| !s.allows_password(username)) {
            self.record(&*store, ctx, username, "password", Some("sso_required"))
                .await?;
            store.hit(&ip_key(ctx.ip), ctx.now, WINDOW_SECS).await?;
            return Err(LoginError::SsoRequired);
        }
        let ip = self.throttle(&*store, ctx, username, "password").await?;
        // An SSO account's TOTP record is no local account, whatever name is typed.
        let found = if account::check_local_name(username).is_ok() {
            store.get_user(ctx.tenant, username).await?
        } else {
            None
        };
        let known = found.is_some();
        let user = found.filter(|u| !u.disabled);
        let ok = match self
            .hasher
            .verify(password, user.as_ref().map(|u| u.password_hash.as_str()))
            .await
        {
            Ok(ok) => ok,
            Err(PasswordError::Busy) => {
                self.give_back(&*store, &ip).await?;
                return Err(LoginError::Busy);
            }
            Err(_) => false,
        };
        let Some(user) = user.filter(|_| ok) else {
            let reason = if known { "bad_password" } else { "unknown_user" };
            self.record(&*store, ctx, username, "password", Some(reason)).await?;
            return Err(LoginError::BadCredentials);
        };
        // A switch on the account changes nothing the password step says: the right
        // password still leads to the second factor and a wrong one is still refused, so
        // the switch tells a guesser nothing about the password (nor strangers which
        // accounts exist). Its message (`423`) comes once both factors are proven, in
        // `finish`. An account without a second factor yet is refused like a wrong
        // password: enrolling one while suspended would let a thief who has the password
        // keep a way in after the reset.
        if user.totp_enrolled_at.is_none()
            && self
                .switches
                .board()
                .account_switch(ctx.tier, ctx.tenant, &user.username, ctx.now)
                .is_some()
        {
            self.record(&*store, ctx, &user.username, "password", Some("breaker"))
                .await?;
            return Err(LoginError::BadCredentials);
        }
        self.give_back(&*store, &ip).await?;
        let stage = if user.totp_enrolled_at.is_some() {
            "mfa"
        } else {
            "enrol"
        };
        Ok(PreAuth {
            tenant: ctx.tenant.to_string(),
            tier: ctx.tier.to_string(),
            username: user.username,
            stage: stage.to_string(),
            rd: rd.to_string(),
            exp: ctx.now + PREAUTH_TTL_SECS,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            sso: None,
        })
    }

    /// After a validated single sign-on: a session at once when the tenant's MFA policy
    /// is met by the IdP (`step_up == false`), else the pre-MFA state for the gateway's
    /// own TOTP (enrolment on first use), kept in a TOTP record keyed by issuer and sub.
    pub async fn sso_signed_in(
        &self,
        ctx: &LoginContext<'_>,
        identity: SsoIdentity,
        step_up: bool,
        rd: &str,
    ) -> Result<SsoOutcome, LoginError> {
        let store = self.sessions.store(ctx.tier)?;
        let key = account::key(&identity.issuer, &identity.sub);
        if !step_up {
            let user = sso_user_record(ctx, &key, &identity, None);
            return self
                .finish(&store, ctx, &user, "oidc", identity.amr.clone(), Some(&identity))
                .await
                .map(SsoOutcome::Session);
        }
        let user = match store.get_user(ctx.tenant, &key).await? {
            Some(u) => {
                let mut u = u;
                u.roles = identity.roles.clone();
                u.display_name = identity.name.clone();
                store.update_user(&u).await?;
                u
            }
            None => {
                let u = sso_user_record(ctx, &key, &identity, None);
                match store.create_user(&u).await {
                    Ok(()) | Err(StoreError::Conflict(_)) => u,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if user.disabled {
            return Err(LoginError::BadCredentials);
        }
        self.not_suspended(&store, ctx, &key, "oidc").await?;
        Ok(SsoOutcome::StepUp(PreAuth {
            tenant: ctx.tenant.to_string(),
            tier: ctx.tier.to_string(),
            username: key,
            stage: if user.totp_enrolled_at.is_some() {
                "mfa"
            } else {
                "enrol"
            }
            .to_string(),
            rd: rd.to_string(),
            exp: ctx.now + PREAUTH_TTL_SECS,
            nonce: hex::encode(rand::random::<[u8; 16]>()),
            sso: Some(identity),
        }))
    }

    /// Second step: a TOTP code (once per time step) or a recovery code (once ever).
    pub async fn second_factor(
        &self,
        ctx: &LoginContext<'_>,
        pre: &PreAuth,
        input: &str,
    ) -> Result<NewSession, LoginError> {
        if pre.stage != "mfa" {
            return Err(LoginError::NoPendingLogin);
        }
        let store = self.sessions.store(ctx.tier)?;
        let ip = self.throttle(&*store, ctx, &pre.username, "totp").await?;
        let user = store
            .get_user(ctx.tenant, &pre.username)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(LoginError::NoPendingLogin)?;
        let code_slot = self
            .second_factor_slot(&*store, ctx, &pre.username, pre.history_subject(), &ip)
            .await?;
        let (method, ok) = if mfa::looks_like_recovery_code(input) {
            let hash = mfa::recovery_code_hash(input);
            (
                "recovery",
                store.consume_recovery_code(ctx.tenant, &user.username, &hash).await?,
            )
        } else {
            (
                "totp",
                self.totp_ok(&*store, ctx, &user, user.totp_secret.as_deref(), input)
                    .await?,
            )
        };
        if !ok {
            self.record(&*store, ctx, pre.history_subject(), method, Some("bad_code"))
                .await?;
            return Err(LoginError::BadCode);
        }
        self.claim(&*store, ctx, pre).await?;
        self.give_back(&*store, &ip).await?;
        self.give_back(&*store, &code_slot).await?;
        let amr = vec![
            "pwd".to_string(),
            if method == "recovery" { "rec" } else { "otp" }.to_string(),
        ];
        let amr = match &pre.sso {
            Some(sso) => merged_amr(&sso.amr, &amr[1..]),
            None => amr,
        };
        self.finish(&store, ctx, &user, method, amr, pre.sso.as_ref()).await
    }

    /// Re-checks both factors of a signed-in user (password change): throttled and
    /// recorded like a sign-in, but creates no session.
    pub async fn verify_factors(
        &self,
        ctx: &LoginContext<'_>,
        username: &str,
        password: &str,
        code: &str,
    ) -> Result<(), LoginError> {
        let store = self.sessions.store(ctx.tier)?;
        let ip = self.throttle(&*store, ctx, username, "password").await?;
        let user = store
            .get_user(ctx.tenant, username)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(LoginError::BadCredentials)?;
        let password_ok = match self.hasher.verify(password, Some(&user.password_hash)).await {
            Ok(ok) => ok,
            Err(PasswordError::Busy) => {
                self.give_back(&*store, &ip).await?;
                return Err(LoginError::Busy);
            }
            Err(_) => false,
        };
        if !password_ok {
            self.record(&*store, ctx, username, "password", Some("bad_password"))
                .await?;
            return Err(LoginError::BadCredentials);
        }
        let code_slot = self.second_factor_slot(&*store, ctx, username, username, &ip).await?;
        if !self
            .totp_ok(&*store, ctx, &user, user.totp_secret.as_deref(), code)
            .await?
        {
            self.record(&*store, ctx, username, "totp", Some("bad_code")).await?;
            return Err(LoginError::BadCode);
        }
        self.give_back(&*store, &ip).await?;
        self.give_back(&*store, &code_slot).await?;
        store.clear(&account_key(ctx.tenant, username)).await?;
        Ok(())
    }

    /// Starts (or resumes) TOTP enrolment for a user who has none.
    pub async fn enrol_start(
        &self,
        ctx: &LoginContext<'_>,
        pre: &PreAuth,
        issuer: &str,
    ) -> Result<Enrolment, LoginError> {
        if pre.stage != "enrol" {
            return Err(LoginError::NoPendingLogin);
        }
        let store = self.sessions.store(ctx.tier)?;
        let mut user = store
            .get_user(ctx.tenant, &pre.username)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(LoginError::NoPendingLogin)?;
        if user.totp_enrolled_at.is_some() {
            return Err(LoginError::NoPendingLogin);
        }
        let secret = match user
            .totp_secret
            .as_deref()
            .and_then(|s| TotpSecret::from_base32(s).ok())
        {
            Some(s) => s,
            None => {
                let s = mfa::new_secret();
                user.totp_secret = Some(s.expose_base32().to_string());
                store.update_user(&user).await?;
                s
            }
        };
        let uri = mfa::otpauth_uri(&secret, issuer, &user.username).to_string();
        let qr_svg = mfa::qr_svg(&uri).unwrap_or_default();
        Ok(Enrolment {
            secret: secret.expose_base32().to_string(),
            uri,
            qr_svg,
        })
    }

    /// Confirms enrolment with a first code; returns the session and the recovery codes
    /// (shown once, stored hashed).
    pub async fn enrol_confirm(
        &self,
        ctx: &LoginContext<'_>,
        pre: &PreAuth,
        input: &str,
    ) -> Result<(NewSession, Vec<String>), LoginError> {
        if pre.stage != "enrol" {
            return Err(LoginError::NoPendingLogin);
        }
        let store = self.sessions.store(ctx.tier)?;
        let ip = self.throttle(&*store, ctx, &pre.username, "totp").await?;
        let mut user = store
            .get_user(ctx.tenant, &pre.username)
            .await?
            .filter(|u| !u.disabled)
            .ok_or(LoginError::NoPendingLogin)?;
        if user.totp_enrolled_at.is_some() {
            return Err(LoginError::NoPendingLogin);
        }
        if !self
            .totp_ok(&*store, ctx, &user, user.totp_secret.as_deref(), input)
            .await?
        {
            self.record(&*store, ctx, pre.history_subject(), "totp", Some("bad_code"))
                .await?;
            return Err(LoginError::BadCode);
        }
        self.claim(&*store, ctx, pre).await?;
        self.give_back(&*store, &ip).await?;
        let codes = mfa::new_recovery_codes();
        user.recovery_code_hashes = codes.iter().map(|c| mfa::recovery_code_hash(c)).collect();
        user.totp_enrolled_at = Some(ctx.now);
        store.update_user(&user).await?;
        let session = self
            .finish(
                &store,
                ctx,
                &user,
                "totp",
                match &pre.sso {
                    Some(sso) => merged_amr(&sso.amr, &["otp".to_string()]),
                    None => vec!["pwd".into(), "otp".into()],
                },
                pre.sso.as_ref(),
            )
            .await?;
        Ok((session, codes))
    }

    /// Checks a TOTP code and advances the replay guard to its time step: a code is accepted
    /// only for a step later than the last accepted one (RFC 6238 §5.2), so neither the same
    /// code nor an older, unused one still inside the ±1 step window works again.
    async fn totp_ok(
        &self,
        store: &dyn AccountStore,
        ctx: &LoginContext<'_>,
        user: &UserRecord,
        secret: Option<&str>,
        input: &str,
    ) -> Result<bool, LoginError> {
        let Some(secret) = secret.and_then(|s| TotpSecret::from_base32(s).ok()) else {
            return Ok(false);
        };
        let Ok(code) = mfa::parse_code(input) else {
            return Ok(false);
        };
        let Some(step) = mfa::matching_step(&secret, code, u64::try_from(ctx.now).unwrap_or(0)) else {
            return Ok(false);
        };
        Ok(store
            .accept_totp_step(ctx.tenant, &user.username, step, ctx.now + 180)
            .await?)
    }

    async fn finish(
        &self,
        store: &Arc<dyn TierStore>,
        ctx: &LoginContext<'_>,
        user: &UserRecord,
        method: &str,
        amr: Vec<String>,
        sso: Option<&SsoIdentity>,
    ) -> Result<NewSession, LoginError> {
        // The account key: the local user name, or issuer and `sub` for single sign-on,
        // so a local account and an SSO account of one `sub` never share anything.
        let account = sso.map(|s| account::key(&s.issuer, &s.sub));
        let subject = account.as_deref().unwrap_or(user.username.as_str());
        self.not_suspended(store, ctx, subject, method).await?;
        let token = mint_token();
        let csrf: [u8; 16] = rand::random();
        let record = SessionRecord {
            id_hash: token.id_hash,
            tenant: ctx.tenant.to_string(),
            tier: ctx.tier.to_string(),
            subject: subject.to_string(),
            idp: sso.map_or_else(|| account::LOCAL_IDP.to_string(), |s| s.issuer.clone()),
            display_name: user.display_name.clone(),
            roles: sso.map_or_else(|| user.roles.clone(), |s| s.roles.clone()),
            auth_method: if sso.is_some() { "oidc" } else { "password" }.into(),
            amr,
            mfa_at: Some(ctx.now),
            created_at: ctx.now,
            last_seen: ctx.now,
            idle_expires_at: ctx.now + ctx.idle_timeout.min(ctx.absolute_timeout),
            absolute_expires_at: ctx.now + ctx.absolute_timeout,
            ip: ctx.ip.to_string(),
            user_agent: ctx.user_agent.chars().take(256).collect(),
            csrf_token: hex::encode(csrf),
            sso_sid: sso.and_then(|s| s.sid.clone()),
            revoked: None,
        };
        self.sessions.create(record.clone()).await?;
        // A switch tripped while this session was being created: its revocation may have
        // run before the session existed, so end it here.
        if let Some(ks) = self
            .switches
            .board()
            .account_switch(ctx.tier, ctx.tenant, subject, ctx.now)
        {
            let rev = Revocation {
                at: ctx.now,
                by: ks.tripped_by.clone(),
                reason: "kill_switch".into(),
            };
            self.sessions.revoke(ctx.tier, &record.id_hash, &rev).await?;
            self.record(&**store, ctx, subject, method, Some("breaker")).await?;
            return Err(LoginError::Suspended(ks.message.clone()));
        }
        store.clear(&account_key(ctx.tenant, &user.username)).await?;
        self.record(&**store, ctx, subject, method, None).await?;
        Ok(NewSession { token, record })
    }

    /// Records a failed single sign-on (IdP error, invalid token, MFA policy) in the
    /// login history of `subject` (the IdP's `sub` when known).
    pub async fn record_sso_failure(
        &self,
        ctx: &LoginContext<'_>,
        subject: &str,
        reason: &str,
    ) -> Result<(), LoginError> {
        let store = self.sessions.store(ctx.tier)?;
        self.record(&*store, ctx, subject, "oidc", Some(reason)).await?;
        store.hit(&ip_key(ctx.ip), ctx.now, WINDOW_SECS).await?;
        Ok(())
    }

    /// Refuses (and records, with reason `breaker`) a sign-in a kill switch covers.
    async fn not_suspended(
        &self,
        store: &Arc<dyn TierStore>,
        ctx: &LoginContext<'_>,
        username: &str,
        method: &str,
    ) -> Result<(), LoginError> {
        match self
            .switches
            .board()
            .account_switch(ctx.tier, ctx.tenant, username, ctx.now)
        {
            None => Ok(()),
            Some(ks) => {
                self.record(&**store, ctx, username, method, Some("breaker")).await?;
                Err(LoginError::Suspended(ks.message.clone()))
            }
        }
    }

    /// Marks a pre-MFA state as used; a second use (a captured cookie) is refused.
    async fn claim(&self, store: &dyn ThrottleStore, ctx: &LoginContext<'_>, pre: &PreAuth) -> Result<(), LoginError> {
        let (uses, _) = store
            .hit(&format!("pre:{}", pre.nonce), ctx.now, PREAUTH_TTL_SECS)
            .await?;
        if uses > 1 {
            return Err(LoginError::NoPendingLogin);
        }
        Ok(())
    }

    /// Reserves this attempt before anything is checked, with atomic hits, so concurrent
    /// guesses get no extra tries: on the account's counter (every attempt counts) and on
    /// the client's network counter ([`ip_key`]). The caller gives the IP slot back
    /// ([`LocalLogin::give_back`]) when the attempt succeeds or was never checked, so only
    /// failures use up the IP budget and people signing in successfully behind one NAT
    /// never do; a failure, or a refusal that must look like one, keeps it.
    async fn throttle(
        &self,
        store: &dyn TierStore,
        ctx: &LoginContext<'_>,
        username: &str,
        method: &str,
    ) -> Result<Slot, LoginError> {
        let (count, reset) = store
            .hit(&account_key(ctx.tenant, username), ctx.now, WINDOW_SECS)
            .await?;
        if count > ACCOUNT_ATTEMPTS {
            self.record(store, ctx, username, method, Some("locked")).await?;
            return Err(LoginError::Throttled(reset.max(1)));
        }
        let (slot, ip_count, ip_reset) = Slot::take(store, ip_key(ctx.ip), ctx.now, WINDOW_SECS).await?;
        if ip_count > IP_ATTEMPTS {
            self.give_back(store, &slot).await?;
            self.record(store, ctx, username, method, Some("throttled")).await?;
            return Err(LoginError::Throttled(ip_reset.max(1)));
        }
        Ok(slot)
    }

    /// Reserves a code attempt of `username`'s second factor in its day-long failure budget
    /// (after [`LocalLogin::throttle`] passed), atomically like the other counters: past
    /// [`MFA_LOCK_FAILURES`] in [`MFA_LOCK_WINDOW_SECS`] the second factor is locked (`429`
    /// until the window ends; `portcullis user reset-mfa` lifts it) and the IP slot goes
    /// back, since no code was checked. The caller gives the slot back for a right code, so
    /// only failed codes add up; successes do not clear it, so an attacker's failures are not
    /// forgiven by the owner's next sign-in. Only someone who knows the password reaches
    /// this, so the lock cannot be used by strangers to lock an owner out.
    async fn second_factor_slot(
        &self,
        store: &dyn TierStore,
        ctx: &LoginContext<'_>,
        username: &str,
        history_subject: &str,
        ip: &Slot,
    ) -> Result<Slot, LoginError> {
        let key = second_factor_lock_key(ctx.tenant, username);
        let (slot, count, reset) = Slot::take(store, key, ctx.now, MFA_LOCK_WINDOW_SECS).await?;
        if count > MFA_LOCK_FAILURES {
            self.give_back(store, &slot).await?;
            self.give_back(store, ip).await?;
            self.record(store, ctx, history_subject, "totp", Some("locked")).await?;
            return Err(LoginError::Throttled(reset.max(1)));
        }
        Ok(slot)
    }

    /// Returns a reserved slot: the attempt was not a failure (or was never checked).
    async fn give_back(&self, store: &dyn ThrottleStore, slot: &Slot) -> Result<(), LoginError> {
        Ok(store.give_back(&slot.key, slot.window_end).await?)
    }

    async fn record(
        &self,
        store: &dyn TierStore,
        ctx: &LoginContext<'_>,
        subject: &str,
        method: &str,
        failure: Option<&str>,
    ) -> Result<(), LoginError> {
        let event = LoginEvent {
            seq: 0,
            tenant: ctx.tenant.to_string(),
            subject: LoginEvent::attempted_name(subject),
            time: ctx.now,
            ip: ctx.ip.to_string(),
            user_agent: ctx.user_agent.to_string(),
            method: method.to_string(),
            outcome: if failure.is_some() { "failure" } else { "success" }.to_string(),
            reason: failure.map(str::to_string),
        };
        store.record_login(&event).await?;
        if let Some(reason) = failure {
            self.feed_auto_trip_rules(store, ctx, subject, method, reason).await?;
        }
        // A sign-in the first step completes (a password alone, or a single sign-on,
        // whose second factor the IdP checked) is a `login`; a gateway second factor is
        // an `mfa`.
        let action = if matches!(method, "password" | "oidc") {
            "login"
        } else {
            "mfa"
        };
        let outcome = if failure.is_some() {
            EventOutcome::Failure
        } else {
            EventOutcome::Success
        };
        self.logins.count(ctx.tenant, method, outcome);
        SecurityEvent {
            reason: failure,
            source_ip: Some(ctx.ip),
            user: Some(&event.subject),
            tenant: Some(ctx.tenant),
            tier: Some(ctx.tier),
            request_id: ctx.request_id,
            ..SecurityEvent::new(action, outcome)
        }
        .info("sign-in attempt");
        Ok(())
    }
}

impl LocalLogin {
    /// Counts a failure for every auto-trip rule it matches and trips the rule's switch
    /// once the rule's threshold is reached within its window.
    async fn feed_auto_trip_rules(
        &self,
        store: &dyn TierStore,
        ctx: &LoginContext<'_>,
        subject: &str,
        method: &str,
        reason: &str,
    ) -> Result<(), LoginError> {
        for rule in ctx.auto_trip {
            let (key, scope) = match rule.kind {
                AutoTripKind::AccountMfaFailures if reason == "bad_code" => (
                    format!("auto:{}:{}:{}", rule.name, ctx.tenant, subject.to_lowercase()),
                    Scope::Account {
                        tier: ctx.tier.to_string(),
                        tenant: ctx.tenant.to_string(),
                        subject: subject.to_string(),
                    },
                ),
                AutoTripKind::TenantLoginFailures if matches!(reason, "bad_password" | "unknown_user") => (
                    format!("auto:{}:{}", rule.name, ctx.tenant),
                    Scope::Tenant {
                        tier: ctx.tier.to_string(),
                        tenant: ctx.tenant.to_string(),
                    },
                ),
                _ => continue,
            };
            let window = i64::try_from(rule.window.as_secs()).unwrap_or(i64::MAX).max(1);
            let (count, _) = store.hit(&key, ctx.now, window).await?;
            if count >= rule.threshold {
                SecurityEvent {
                    reason: Some(&rule.name),
                    source_ip: Some(ctx.ip),
                    tenant: Some(ctx.tenant),
                    tier: Some(ctx.tier),
                    user: Some(subject),
                    method: Some(method),
                    request_id: ctx.request_id,
                    ..SecurityEvent::new("auto_trip", EventOutcome::Success)
                }
                .warn("auto-trip rule reached its threshold");
                if let Err(e) = self.switches.auto_trip(rule, scope, ctx.now).await {
                    tracing::error!(error = %e, rule = %rule.name, "auto-trip failed");
                }
            }
        }
        Ok(())
    }
}

/// One attempt's reserved slot in a failure budget (the client network's, or the account's
/// second-factor lock).
struct Slot {
    /// The counter's throttle key.
    key: String,
    /// End of the window the slot was taken in, so giving it back never touches a later one.
    window_end: i64,
}

impl Slot {
    /// Reserves one attempt in the counter `key` (atomically, before anything is checked);
    /// also returns the count after it and the seconds until the window resets.
    async fn take(
        store: &dyn ThrottleStore,
        key: String,
        now: i64,
        window_secs: i64,
    ) -> Result<(Slot, u32, i64), StoreError> {
        let (count, reset) = store.hit(&key, now, window_secs).await?;
        let window_end = now.saturating_add(reset);
        Ok((Slot { key, window_end }, count, reset))
    }
}

/// What a single sign-on leads to.
#[derive(Debug)]
pub enum SsoOutcome {
    /// Signed in.
    Session(NewSession),
    /// The gateway's TOTP is due first (`stage` `mfa` or `enrol`).
    StepUp(PreAuth),
}

/// The TOTP record of an SSO user: no usable password (an empty hash never verifies).
fn sso_user_record(ctx: &LoginContext<'_>, key: &str, identity: &SsoIdentity, secret: Option<String>) -> UserRecord {
    UserRecord {
        tenant: ctx.tenant.to_string(),
        username: key.to_string(),
        display_name: identity.name.clone(),
        roles: identity.roles.clone(),
        password_hash: String::new(),
        totp_secret: secret,
        totp_enrolled_at: None,
        recovery_code_hashes: Vec::new(),
        disabled: false,
        created_at: ctx.now,
        password_changed_at: ctx.now,
    }
}

/// The IdP's methods plus the gateway's, each once.
fn merged_amr(idp: &[String], gateway: &[String]) -> Vec<String> {
    let mut out: Vec<String> = idp.to_vec();
    for m in gateway {
        if !out.contains(m) {
            out.push(m.clone());
        }
    }
    out
}

/// Throttle key of a client's network (failed attempts): an IPv4 address (an IPv4-mapped
/// IPv6 one counts as its IPv4 address), or an IPv6 client's /64, since one subscriber or
/// host usually holds a whole /64 and could otherwise rotate addresses for fresh budgets.
fn ip_key(ip: &str) -> String {
    match ip.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => format!("ip:{v4}"),
        Ok(IpAddr::V6(v6)) => match v6.to_ipv4_mapped() {
            Some(v4) => format!("ip:{v4}"),
            None => {
                let [a, b, c, d, ..] = v6.segments();
                format!("ip:{}/64", Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
            }
        },
        Err(_) => format!("ip:{ip}"),
    }
}

/// Lifts the second-factor lock of a user (after an operator reset the user's MFA).
pub async fn clear_second_factor_lock(
    store: &dyn ThrottleStore,
    tenant: &str,
    username: &str,
) -> Result<(), StoreError> {
    store.clear(&second_factor_lock_key(tenant, username)).await
}

/// Counter key of an account's day-long second-factor failures (case-insensitive, like
/// [`account_key`]).
fn second_factor_lock_key(tenant: &str, username: &str) -> String {
    format!("mfa:{tenant}:{}", username.to_lowercase())
}

/// Throttle key of an account (user names compare case-insensitively here so case
/// variants share one budget).
fn account_key(tenant: &str, username: &str) -> String {
    format!("acct:{tenant}:{}", username.to_lowercase())
}

#[cfg(test)]
mod tests {
    use super::ip_key;

    /// Rotating addresses inside one /64 (or writing an IPv4 client as IPv6) would give
    /// fresh per-IP budgets.
    #[test]
    fn ip_keys_group_ipv6_by_64_and_unmap_ipv4() {
        assert_eq!(ip_key("2001:db8::1"), ip_key("2001:db8::2"));
        assert_eq!(ip_key("2001:db8::1"), ip_key("2001:db8:0:0:ffff:ffff:ffff:ffff"));
        assert_eq!(ip_key("2001:db8::1"), "ip:2001:db8::/64");
        assert_ne!(ip_key("2001:db8::1"), ip_key("2001:db8:0:1::1"));
        assert_eq!(ip_key("::ffff:192.0.2.7"), ip_key("192.0.2.7"));
        assert_eq!(ip_key("192.0.2.7"), "ip:192.0.2.7");
        assert_ne!(ip_key("192.0.2.7"), ip_key("192.0.2.8"));
        assert_ne!(ip_key("::ffff:192.0.2.7"), ip_key("::ffff:192.0.2.8"));
        assert_eq!(ip_key("not an address"), "ip:not an address");
    }
}
