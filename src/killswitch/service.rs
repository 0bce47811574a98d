//! Tripping and resetting kill switches, for every interface alike (admin API, CLI, tenant
//! admin pages, automation tokens, auto-trip rules): one validation, one order of steps,
//! one audit trail.
//!
//! A trip is in force on this node when [`KillSwitches::trip`] returns: the switch is
//! stored, put on the [`Board`] the request path reads, every live session in scope is
//! revoked in the store and evicted from this node's cache, and open streams of those
//! sessions are told to close. Then the change is published on the store's event bus, and
//! replicas refresh their board and evict the scope's sessions at once (see
//! `crate::replicas`) before the publisher returns. [`KillSwitches::refresh`] still runs
//! every second as a backstop for an event that was lost; cached sessions expire within
//! the cache's staleness bound. Authorisation (who may trip what)
//! is the caller's job; this module trusts the actor it is given.

use std::collections::BTreeSet;
use std::sync::Arc;

use serde::Serialize;

use super::{Board, KillSwitch, Scope};
pub use crate::audit::Actor;
use crate::audit::AuditEntry;
use crate::config::{AutoTripRule, Config};
use crate::records::Revocation;
use crate::session::Sessions;
use crate::store::StoreError;
use crate::telemetry::{EventOutcome, SecurityEvent};

/// Message users see when the tripper gave none.
pub const DEFAULT_MESSAGE: &str = "Access to this service is suspended. Contact your administrator.";

/// Longest `Idempotency-Key` accepted.
const IDEMPOTENCY_KEY_MAX: usize = 200;

/// Why a trip, reset or drill was refused. Messages are safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum KillSwitchError {
    /// The tier is not in the policy.
    #[error("unknown tier")]
    UnknownTier,
    /// The tenant is not in the policy, or not in the given tier.
    #[error("unknown tenant")]
    UnknownTenant,
    /// A field is missing or malformed; the text says which.
    #[error("{0}")]
    Invalid(String),
    /// The expiry of a trip is malformed or not in the future.
    #[error("{0}")]
    Expiry(#[from] ExpiryError),
    /// The same `Idempotency-Key` was used for a different trip.
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyConflict,
    /// The store failed. For a trip, the switch may already be in force on this node.
    #[error("{0}")]
    Store(#[from] StoreError),
}

/// A request to trip a switch.
#[derive(Debug, Clone)]
pub struct TripRequest {
    /// What to cut off.
    pub scope: Scope,
    /// Why (audit log); required.
    pub reason: String,
    /// What users are told; [`DEFAULT_MESSAGE`] when absent.
    pub message: Option<String>,
    /// When the switch resets by itself, as the caller gave it; checked by the service.
    pub expiry: Expiry,
    /// The caller's `Idempotency-Key`, if any.
    pub idempotency_key: Option<String>,
    /// The incident the trip belongs to (`INC-42`), checked by [`crate::incident::check_id`].
    pub incident: Option<String>,
}

/// When a trip resets by itself, as an interface received it. Each interface passes
/// only the spellings its transport accepts (admin API `expires_in` or `expires_at`, CLI
/// `--expires`, the tenant admin page and API `expires_in`); [`Expiry::resolve`] is the
/// one rule for all of them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Expiry {
    /// No automatic reset.
    #[default]
    Never,
    /// A duration from now, as typed: `90s`, `30m`, `2h`, `1d`; blank means no expiry.
    After(String),
    /// An absolute time (unix seconds).
    At(i64),
}

/// Why an expiry was refused; the text is safe to show the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    /// [`Expiry::After`] is not a duration of at least one second.
    #[error("expiry must be a duration such as 90s, 2h or 1d, at least 1s")]
    NotADuration,
    /// The reset time is not after now.
    #[error("expiry must be in the future")]
    NotInFuture,
}

impl Expiry {
    /// The reset time (unix seconds), `None` for no expiry: a duration of at least one
    /// second after `now`, or an absolute time after `now`.
    pub fn resolve(&self, now: i64) -> Result<Option<i64>, ExpiryError> {
        let at = match self {
            Expiry::Never => return Ok(None),
            Expiry::After(text) => {
                let text = text.trim();
                if text.is_empty() {
                    return Ok(None);
                }
                let d = humantime::parse_duration(text).map_err(|_| ExpiryError::NotADuration)?;
                let secs = i64::try_from(d.as_secs()).map_err(|_| ExpiryError::NotADuration)?;
                if secs == 0 {
                    return Err(ExpiryError::NotADuration);
                }
                now.saturating_add(secs)
            }
            Expiry::At(at) => *at,
        };
        if at <= now {
            return Err(ExpiryError::NotInFuture);
        }
        Ok(Some(at))
    }
}

/// The answer to a trip.
#[derive(Debug, Clone, Serialize)]
pub struct TripResult {
    /// The switch in force.
    #[serde(flatten)]
    pub switch: KillSwitch,
    /// True when this was a repeat of an earlier call with the same `Idempotency-Key`.
    pub repeated: bool,
}

/// What a trip would do, for drills.
#[derive(Debug, Clone, Serialize)]
pub struct DryRun {
    /// The scope examined.
    #[serde(flatten)]
    pub scope: Scope,
    /// Always true: nothing was changed.
    pub dry_run: bool,
    /// Live sessions that would end.
    pub sessions: usize,
    /// Distinct accounts with a live session.
    pub signed_in_users: usize,
    /// Local accounts whose logins would be refused (SSO accounts are refused too).
    pub local_accounts: usize,
    /// Open streams and WebSockets on this node that would close.
    pub open_connections: usize,
    /// Tenants whose logins would be refused.
    pub tenants: Vec<String>,
}

/// Kill switches of every tier: this node's list, the board, and the stores.
pub struct KillSwitches {
    sessions: Arc<Sessions>,
    board: Board,
    /// Serialises changes on this node.
    state: tokio::sync::Mutex<State>,
}

/// The switches this node knows, and a change counter that tells `refresh` that the list
/// it read from the stores may be older than a change made meanwhile.
#[derive(Default)]
struct State {
    generation: u64,
    switches: Vec<KillSwitch>,
}

impl State {
    /// Replaces the switch of `ks.scope` (or removes it) and publishes the list.
    fn set(&mut self, board: &Board, scope: &Scope, ks: Option<KillSwitch>) {
        self.generation += 1;
        self.switches.retain(|k| &k.scope != scope);
        self.switches.extend(ks);
        board.replace(&self.switches);
    }
}

impl KillSwitches {
    /// An empty set over the stores; call [`KillSwitches::refresh`] to load stored switches.
    pub fn new(sessions: Arc<Sessions>) -> Arc<Self> {
        Arc::new(KillSwitches {
            sessions,
            board: Board::default(),
            state: tokio::sync::Mutex::new(State::default()),
        })
    }

    /// Sessions and stores of every tier.
    pub fn sessions(&self) -> &Arc<Sessions> {
        &self.sessions
    }

    /// The table the request path reads.
    pub fn board(&self) -> &Board {
        &self.board
    }

    /// Checks that the scope names a tier and tenant of the policy.
    pub fn check_scope(config: &Config, scope: &Scope) -> Result<(), KillSwitchError> {
        if !config.tiers.contains_key(scope.tier()) {
            return Err(KillSwitchError::UnknownTier);
        }
        if let Some(tenant) = scope.tenant()
            && !config.tenants.iter().any(|t| t.id == tenant && t.tier == scope.tier())
        {
            return Err(KillSwitchError::UnknownTenant);
        }
        if let Scope::Account { subject, .. } = scope
            && crate::account::check_subject(crate::account::sub_of(subject)).is_err()
        {
            return Err(KillSwitchError::Invalid(format!(
                "account subject must be 1 to {} printable characters",
                crate::account::SUBJECT_MAX_CHARS
            )));
        }
        Ok(())
    }

    /// Trips a switch; returns once it is in force on this node (see the module doc).
    pub async fn trip(
        &self,
        config: &Config,
        req: TripRequest,
        actor: &Actor,
        now: i64,
    ) -> Result<TripResult, KillSwitchError> {
        let expires_at = req.expiry.resolve(now)?;
        Self::check_scope(config, &req.scope)?;
        let tenants = tenants_in(config, &req.scope);
        self.trip_in(&tenants, req, expires_at, actor, now).await
    }

    /// Trips the switch of an auto-trip rule (scope from the live policy, so already
    /// valid), unless one is already in force for the scope.
    pub async fn auto_trip(&self, rule: &AutoTripRule, scope: Scope, now: i64) -> Result<(), KillSwitchError> {
        let covered = match &scope {
            Scope::Account { tier, tenant, subject } => self.board.account_switch(tier, tenant, subject, now),
            other => self
                .board
                .tenant_switch(other.tier(), other.tenant().unwrap_or_default(), now),
        };
        if covered.is_some() {
            return Ok(());
        }
        let incident = open_incident_near(&self.state.lock().await.switches, &scope, now);
        let tenants: Vec<String> = scope.tenant().map(str::to_string).into_iter().collect();
        let req = TripRequest {
            scope,
            reason: format!(
                "auto-trip rule `{}`: {} failures within {} s",
                rule.name,
                rule.threshold,
                rule.window.as_secs()
            ),
            message: None,
            expiry: rule.expires.map_or(Expiry::Never, |d| {
                Expiry::At(now.saturating_add(i64::try_from(d.as_secs()).unwrap_or(i64::MAX)))
            }),
            idempotency_key: None,
            incident,
        };
        let actor = Actor {
            name: format!("rule:{}", rule.name),
            source_ip: "-".into(),
            system: "auto-rule".into(),
        };
        let expires_at = req.expiry.resolve(now)?;
        self.trip_in(&tenants, req, expires_at, &actor, now).await.map(|_| ())
    }

    /// Trips a checked scope whose sessions live in `tenants`, resetting by itself at
    /// `expires_at` (the request's expiry, resolved).
    async fn trip_in(
        &self,
        tenants: &[String],
        req: TripRequest,
        expires_at: Option<i64>,
        actor: &Actor,
        now: i64,
    ) -> Result<TripResult, KillSwitchError> {
        let reason = required_text("reason", &req.reason)?;
        let message = match &req.message {
            Some(m) => required_text("message", m)?,
            None => DEFAULT_MESSAGE.to_string(),
        };
        if let Some(key) = &req.idempotency_key
            && (key.is_empty() || key.len() > IDEMPOTENCY_KEY_MAX || !key.bytes().all(|b| b.is_ascii_graphic()))
        {
            return Err(KillSwitchError::Invalid(format!(
                "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
            )));
        }
        check_incident(req.incident.as_deref())?;
        let store = self.sessions.store(req.scope.tier())?;
        let mut state = self.state.lock().await;
        let before = store
            .list_kill_switches()
            .await?
            .into_iter()
            .find(|k| k.scope == req.scope);
        if let Some(existing) = before.as_ref().filter(|k| k.in_force(now)) {
            // Same key, other content: the caller is confused; say so.
            if req.idempotency_key.is_some()
                && existing.idempotency_key == req.idempotency_key
                && existing.reason != reason
            {
                return Err(KillSwitchError::IdempotencyConflict);
            }
            // Already in force: a repeat (or a concurrent trip) changes nothing and is
            // not audited again. To change the message or expiry, reset and trip again.
            return Ok(TripResult {
                switch: existing.clone(),
                repeated: true,
            });
        }
        let mut switch = KillSwitch {
            scope: req.scope.clone(),
            reason: reason.clone(),
            message,
            tripped_at: now,
            tripped_by: actor.name.clone(),
            system: actor.system.clone(),
            expires_at,
            idempotency_key: req.idempotency_key.clone(),
            sessions_ended: 0,
            incident: req.incident.clone(),
        };
        // Stored first (so a crash cannot forget it), then on the board: from here on no
        // request in scope is served on this node.
        store.put_kill_switch(&switch).await?;
        state.set(&self.board, &switch.scope, Some(switch.clone()));

        let ended = self.end_sessions(tenants, &switch.scope, &actor.name, now).await?;
        switch.sessions_ended = ended as u64;
        store.put_kill_switch(&switch).await?;
        state.set(&self.board, &switch.scope, Some(switch.clone()));
        drop(state);
        self.publish_change(&switch.scope).await;

        let incident = switch.incident.as_deref();
        self.audit(
            &switch.scope,
            actor,
            "breaker.trip",
            &reason,
            before.map(|b| serde_json::to_value(b).unwrap_or_default()),
            Some(serde_json::to_value(&switch).unwrap_or_default()),
            incident,
            now,
        )
        .await?;
        security_event("breaker_trip", &switch.scope, actor, &reason, incident);
        if switch.sessions_ended > 0 {
            let target = switch.scope.target();
            SecurityEvent {
                reason: Some("kill_switch"),
                source_ip: Some(&actor.source_ip),
                user: Some(&actor.name),
                tenant: Some(switch.scope.tenant().unwrap_or("-")),
                tier: Some(switch.scope.tier()),
                target: Some(&target),
                system: Some(&actor.system),
                sessions: Some(switch.sessions_ended),
                incident,
                ..SecurityEvent::new("session_revoked", EventOutcome::Success)
            }
            .info("sessions ended by a kill switch");
        }
        Ok(TripResult {
            switch,
            repeated: false,
        })
    }

    /// Resets a switch. `Ok(None)` when none was tripped for the scope. The reset
    /// carries the incident the switch was tripped for, if any.
    pub async fn reset(
        &self,
        config: &Config,
        scope: &Scope,
        reason: &str,
        actor: &Actor,
        now: i64,
    ) -> Result<Option<KillSwitch>, KillSwitchError> {
        self.reset_for_incident(config, scope, reason, None, actor, now).await
    }

    /// Resets a switch as part of `incident` (checked like a trip's); without one, the
    /// reset carries the incident the switch was tripped for, if any.
    pub async fn reset_for_incident(
        &self,
        config: &Config,
        scope: &Scope,
        reason: &str,
        incident: Option<&str>,
        actor: &Actor,
        now: i64,
    ) -> Result<Option<KillSwitch>, KillSwitchError> {
        Self::check_scope(config, scope)?;
        check_incident(incident)?;
        let reason = optional_text("reason", reason)?.unwrap_or_else(|| "reset".to_string());
        let store = self.sessions.store(scope.tier())?;
        let mut state = self.state.lock().await;
        let removed = store.delete_kill_switch(&scope.key()).await?;
        state.set(&self.board, scope, None);
        drop(state);
        let Some(removed) = removed else {
            return Ok(None);
        };
        self.publish_change(scope).await;
        let incident = incident.or(removed.incident.as_deref());
        self.audit(
            scope,
            actor,
            "breaker.reset",
            &reason,
            Some(serde_json::to_value(&removed).unwrap_or_default()),
            None,
            incident,
            now,
        )
        .await?;
        security_event("breaker_reset", scope, actor, &reason, incident);
        Ok(Some(removed))
    }

    /// What a trip of `scope` would do, without doing it; recorded as a drill.
    pub async fn dry_run(
        &self,
        config: &Config,
        scope: &Scope,
        reason: &str,
        actor: &Actor,
        now: i64,
    ) -> Result<DryRun, KillSwitchError> {
        Self::check_scope(config, scope)?;
        let store = self.sessions.store(scope.tier())?;
        let tenants = tenants_in(config, scope);
        let (mut sessions, mut users, mut local) = (0, BTreeSet::new(), 0);
        for tenant in &tenants {
            for s in store.list_tenant_sessions(tenant, now, usize::MAX).await? {
                if scope.covers(&s.tier, &s.tenant, &s.subject) {
                    sessions += 1;
                    users.insert((s.tenant.clone(), s.subject.clone()));
                }
            }
            local += match scope {
                Scope::Account { subject, .. } => usize::from(store.get_user(tenant, subject).await?.is_some()),
                _ => store.list_users(tenant).await?.len(),
            };
        }
        let drill = DryRun {
            scope: scope.clone(),
            dry_run: true,
            sessions,
            signed_in_users: users.len(),
            local_accounts: local,
            open_connections: self.sessions.open_connections(scope),
            tenants,
        };
        let reason = if reason.trim().is_empty() { "drill" } else { reason };
        self.audit(
            scope,
            actor,
            "breaker.drill",
            reason,
            None,
            Some(serde_json::to_value(&drill).unwrap_or_default()),
            None,
            now,
        )
        .await?;
        Ok(drill)
    }

    /// Every stored switch of the policy's tiers (expired ones included until refresh
    /// removes them).
    pub async fn list(&self, config: &Config) -> Result<Vec<KillSwitch>, KillSwitchError> {
        self.current_switches(config).await
    }

    /// Reloads the board from the stores and resets expired switches (audited as
    /// `system: expiry`). A change made on this node while the stores were read wins.
    pub async fn refresh(&self, config: &Config, now: i64) -> Result<(), KillSwitchError> {
        let seen = self.state.lock().await.generation;
        let mut all = self.current_switches(config).await?;
        let expired: Vec<KillSwitch> = all.iter().filter(|k| !k.in_force(now)).cloned().collect();
        all.retain(|k| k.in_force(now));
        let mut state = self.state.lock().await;
        if state.generation == seen {
            state.switches = all;
            self.board.replace(&state.switches);
        }
        drop(state);
        for ks in expired {
            let store = self.sessions.store(ks.scope.tier())?;
            // Only the process whose delete removed it records the reset.
            if store.delete_kill_switch(&ks.scope.key()).await?.is_some() {
                self.publish_change(&ks.scope).await;
                let actor = Actor {
                    name: "expiry".into(),
                    source_ip: "-".into(),
                    system: "expiry".into(),
                };
                self.audit(
                    &ks.scope,
                    &actor,
                    "breaker.reset",
                    "expired",
                    Some(serde_json::to_value(&ks).unwrap_or_default()),
                    None,
                    ks.incident.as_deref(),
                    now,
                )
                .await?;
                security_event("breaker_reset", &ks.scope, &actor, "expired", ks.incident.as_deref());
            }
        }
        Ok(())
    }

    /// Keeps the board in step with the stores until `stop` flips: every second.
    pub async fn keep_fresh(
        self: Arc<Self>,
        live: Arc<crate::live::Live>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {
                    let config = live.snapshot().config.clone();
                    if let Err(e) = self.refresh(&config, crate::clock::unix_now()).await {
                        tracing::warn!(error = %e, "kill switch refresh failed; keeping the last known switches");
                    }
                }
                _ = stop.changed() => return,
            }
        }
    }

    /// Tells other replicas that the switch of `scope` changed in the store.
    async fn publish_change(&self, scope: &Scope) {
        let event = crate::store::events::Event::SwitchChanged { scope: scope.clone() };
        self.sessions.publish(scope.tier(), &event).await;
    }

    async fn current_switches(&self, config: &Config) -> Result<Vec<KillSwitch>, KillSwitchError> {
        let mut all = Vec::new();
        for tier in config.tiers.keys() {
            all.extend(self.sessions.store(tier)?.list_kill_switches().await?);
        }
        Ok(all)
    }

    /// Revokes every live session in scope (store and cache) and closes their streams.
    async fn end_sessions(
        &self,
        tenants: &[String],
        scope: &Scope,
        by: &str,
        now: i64,
    ) -> Result<usize, KillSwitchError> {
        let rev = Revocation {
            at: now,
            by: by.to_string(),
            reason: "kill_switch".into(),
        };
        let store = self.sessions.store(scope.tier())?;
        let mut ended = Vec::new();
        match scope {
            Scope::Account { tenant, subject, .. } => {
                ended.extend(store.revoke_user_sessions(tenant, subject, None, &rev).await?);
            }
            _ => {
                for tenant in tenants {
                    ended.extend(store.revoke_tenant_sessions(tenant, &rev).await?);
                }
            }
        }
        self.sessions.evicted_in_scope(&ended, scope);
        Ok(ended.len())
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        scope: &Scope,
        actor: &Actor,
        action: &str,
        reason: &str,
        before: Option<serde_json::Value>,
        after: Option<serde_json::Value>,
        incident: Option<&str>,
        now: i64,
    ) -> Result<(), KillSwitchError> {
        let entry = AuditEntry {
            target: scope.target(),
            tenant: scope.tenant().map(str::to_string),
            tier: scope.tier().to_string(),
            reason: reason.to_string(),
            before: before.map(|v| crate::audit::redact(&v)).unwrap_or_default(),
            after: after.map(|v| crate::audit::redact(&v)).unwrap_or_default(),
            incident: incident.map(str::to_string),
            ..AuditEntry::by(actor, action, now)
        };
        self.sessions.store(scope.tier())?.append_audit(&entry).await?;
        Ok(())
    }
}

/// Tenants of the policy covered by a scope, in policy order.
fn tenants_in(config: &Config, scope: &Scope) -> Vec<String> {
    config
        .tenants
        .iter()
        .filter(|t| t.tier == scope.tier() && scope.tenant().is_none_or(|n| n == t.id))
        .map(|t| t.id.clone())
        .collect()
}

/// A required free-text field ([`crate::audit::free_text`]), not blank; returned trimmed.
fn required_text(field: &str, value: &str) -> Result<String, KillSwitchError> {
    optional_text(field, value)?.ok_or_else(|| KillSwitchError::Invalid(format!("{field} is required")))
}

/// An optional free-text field ([`crate::audit::free_text`]): `None` when blank.
fn optional_text(field: &str, value: &str) -> Result<Option<String>, KillSwitchError> {
    crate::audit::free_text(field, value).map_err(KillSwitchError::Invalid)
}

/// Checks an incident reference (when one is given) before anything changes.
fn check_incident(incident: Option<&str>) -> Result<(), KillSwitchError> {
    match incident {
        Some(id) => crate::incident::check_id(id).map_err(|e| KillSwitchError::Invalid(e.to_string())),
        None => Ok(()),
    }
}

/// The incident an auto-trip of `scope` belongs to: that of a switch in force for an
/// incident in the same tenant (the most recently tripped), else in the same tier.
///
/// An auto-trip rule cannot know why failures pile up, so "caused by" is decided by
/// place and time: a rule firing while an incident is open on its tenant (e.g. one
/// account cut off for it) or its tier is part of that incident's story, and its trip
/// belongs on the incident's timeline. Switches without an incident are ignored.
fn open_incident_near(switches: &[KillSwitch], scope: &Scope, now: i64) -> Option<String> {
    // Switches in force for an incident in the tier, the most recently tripped first.
    let mut open: Vec<&KillSwitch> = switches
        .iter()
        .filter(|k| k.in_force(now) && k.incident.is_some() && k.scope.tier() == scope.tier())
        .collect();
    open.sort_by_key(|k| std::cmp::Reverse(k.tripped_at));
    let same_tenant = open
        .iter()
        .find(|k| scope.tenant().is_some() && k.scope.tenant() == scope.tenant());
    same_tenant.or(open.first()).and_then(|k| k.incident.clone())
}

/// One ECS security event per trip or reset.
fn security_event(action: &str, scope: &Scope, actor: &Actor, reason: &str, incident: Option<&str>) {
    let target = scope.target();
    SecurityEvent {
        reason: Some(reason),
        source_ip: Some(&actor.source_ip),
        user: Some(&actor.name),
        tenant: Some(scope.tenant().unwrap_or("-")),
        tier: Some(scope.tier()),
        target: Some(&target),
        system: Some(&actor.system),
        incident,
        ..SecurityEvent::new(action, EventOutcome::Success)
    }
    .warn(if action == "breaker_trip" {
        "kill switch tripped"
    } else {
        "kill switch reset"
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn switch(scope: Scope, tripped_at: i64, incident: Option<&str>, expires_at: Option<i64>) -> KillSwitch {
        KillSwitch {
            scope,
            reason: "r".into(),
            message: "m".into(),
            tripped_at,
            tripped_by: "operator:olivia".into(),
            system: "api".into(),
            expires_at,
            idempotency_key: None,
            sessions_ended: 0,
            incident: incident.map(str::to_string),
        }
    }

    fn account(tier: &str, tenant: &str, subject: &str) -> Scope {
        Scope::Account {
            tier: tier.into(),
            tenant: tenant.into(),
            subject: subject.into(),
        }
    }

    /// If this broke, a tab or line break at either end of a reason or message would be
    /// trimmed away and accepted, against what the admin API's document states.
    #[test]
    fn free_text_is_judged_as_sent_and_kept_trimmed() {
        assert_eq!(required_text("reason", "  stuffing  ").unwrap(), "stuffing");
        for bad in ["stuffing\n", "\tstuffing", "stuffing\u{c}", "a\u{7}b", "", "   "] {
            assert!(required_text("reason", bad).is_err(), "{bad:?}");
        }
        let padded = format!("{} ", "x".repeat(crate::audit::FREE_TEXT_MAX_CHARS));
        assert!(required_text("message", &padded).is_err());
        assert_eq!(optional_text("reason", " ").unwrap(), None);
        assert!(optional_text("reason", "\t").is_err());
    }

    /// If this broke, an auto-trip fired during an incident would be missing from its
    /// timeline, or one in another tier (or after the incident) would be pulled into it.
    #[test]
    fn an_auto_trip_joins_the_open_incident_of_its_tenant_else_its_tier() {
        let now = 1_000;
        let alice = account("prod", "acme", "alice");
        let switches = vec![
            switch(account("prod", "acme", "mallory"), 10, Some("INC-1"), None),
            switch(account("prod", "globex", "gina"), 20, Some("INC-2"), None),
            switch(account("prod", "acme", "eve"), 5, None, None),
            switch(account("staging", "initech", "ivan"), 30, Some("INC-3"), None),
            switch(account("prod", "acme", "old"), 40, Some("INC-OLD"), Some(now)),
        ];
        assert_eq!(open_incident_near(&switches, &alice, now).as_deref(), Some("INC-1"));
        let hooli = Scope::Tenant {
            tier: "prod".into(),
            tenant: "hooli".into(),
        };
        assert_eq!(
            open_incident_near(&switches, &hooli, now).as_deref(),
            Some("INC-2"),
            "same tier, latest"
        );
        let ian = account("staging", "initech", "ian");
        assert_eq!(open_incident_near(&switches, &ian, now).as_deref(), Some("INC-3"));
        let other = account("dev", "x", "y");
        assert_eq!(open_incident_near(&switches, &other, now), None);
        assert_eq!(
            open_incident_near(&switches[2..3], &alice, now),
            None,
            "no incident named"
        );
    }

    /// If this broke, the API, the CLI and the tenant admin page would again read the
    /// same expiry three ways (one took `0s`, one refused it, one overflowed silently).
    #[test]
    fn one_expiry_rule_for_every_interface() {
        let now = 1_000;
        let after = |text: &str| Expiry::After(text.into()).resolve(now);
        assert_eq!(Expiry::Never.resolve(now), Ok(None));
        assert_eq!(after(""), Ok(None));
        assert_eq!(after("  "), Ok(None));
        assert_eq!(after("90s"), Ok(Some(1_090)));
        assert_eq!(after(" 2h "), Ok(Some(8_200)));
        assert_eq!(after("1d"), Ok(Some(87_400)));
        for bad in ["0s", "soon", "-5m", "5", "99999999999999999999d"] {
            assert_eq!(after(bad), Err(ExpiryError::NotADuration), "{bad}");
        }
        assert_eq!(Expiry::At(1_001).resolve(now), Ok(Some(1_001)));
        assert_eq!(Expiry::At(1_000).resolve(now), Err(ExpiryError::NotInFuture));
        assert_eq!(Expiry::At(-5).resolve(now), Err(ExpiryError::NotInFuture));
    }
}
