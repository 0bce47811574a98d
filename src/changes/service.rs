//! The change request flow, for the admin API: propose, edit, approve (which applies at
//! once), reject, list. Owns the four-eyes rules and the order of steps; every step is an
//! audit record in the owning tier's log.
//!
//! Rules: only operators act; an operator acts on the changes of their own tier only (the
//! tier that owns the target when proposed); nobody who wrote a change (proposer or
//! editor, by operator name, so two tokens of one person are one person) approves it; an
//! approval names the digest it reviewed; a change is open for its time to live from its
//! creation or last edit; a decision is taken once (a compare-and-swap on the stored
//! version picks one winner among concurrent approvals). Knows no HTTP; the clock is an
//! argument.

use std::sync::Arc;

use serde_json::{Value, json};

use super::{
    ChangeKind, ChangeRequest, ChangeStatus, digest, is_change_id, new_change_id, policy, redacted, validate_change,
    validate_reason, validate_target,
};
use crate::audit::AuditEntry;
use crate::config::Config;
use crate::killswitch::service::Actor;
use crate::killswitch::{KillSwitchError, KillSwitches, Scope};
use crate::live::Live;
use crate::store::{AuditLog, ChangeStore, StoreError, TierStore};

/// Why a change request call was refused. Messages are safe to show the caller.
#[derive(Debug, thiserror::Error)]
pub enum ChangeError {
    /// The request is malformed; the text says what (400).
    #[error("{0}")]
    Invalid(String),
    /// The target or the change request does not exist (404).
    #[error("unknown {0}")]
    NotFound(&'static str),
    /// The caller's tier does not own the change: answered exactly like [`NotFound`]
    /// of `what` (404, so a token never learns what exists in another tier), plus a
    /// `cross_tier` security event.
    ///
    /// [`NotFound`]: ChangeError::NotFound
    #[error("this change belongs to another tier")]
    CrossTier {
        /// Tier that owns the target or change.
        owner: String,
        /// Tenant concerned, if any.
        tenant: Option<String>,
        /// What the caller named, as [`ChangeError::NotFound`] would say it.
        what: &'static str,
    },
    /// The approver wrote the change (403).
    #[error("a change must be approved by a different operator than the one who proposed or edited it")]
    SamePerson,
    /// Expired, already decided, digest differs, or changed meanwhile (409).
    #[error("{0}")]
    Conflict(String),
    /// Applying would leave an invalid policy; nothing changed and the change is `failed` (422).
    #[error("the resulting policy set is invalid; nothing was changed")]
    InvalidPolicy {
        /// The change as stored after the failure.
        change: Box<ChangeRequest>,
        /// `file:line: problem` lines.
        errors: Vec<String>,
    },
    /// Applying failed for another reason (files, kill switch); nothing changed (500).
    #[error("{0}")]
    Apply(String),
    /// The store failed (503).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The operator acting, as the admin API authenticated them.
#[derive(Debug, Clone)]
pub struct Operator {
    /// Operator name from the tier policy; one person, whatever token they use.
    pub name: String,
    /// Tier whose policy lists the token.
    pub tier: String,
    /// Client address, for the audit log.
    pub source_ip: String,
    /// Through what the operator acts (`api`, `console`), for the audit log.
    pub system: &'static str,
}

impl Operator {
    fn actor(&self) -> String {
        format!("operator:{}", self.name)
    }
}

/// What [`Changes::propose`] did.
#[derive(Debug)]
pub enum Proposal {
    /// A new pending change.
    Created(ChangeRequest),
    /// The same change (kind, target and content) was already pending: that one,
    /// unchanged, so a proposal sent twice leaves one change to approve.
    AlreadyPending(ChangeRequest),
}

impl Proposal {
    /// The change the proposal stands for, new or pending before.
    pub fn change(&self) -> &ChangeRequest {
        match self {
            Proposal::Created(cr) | Proposal::AlreadyPending(cr) => cr,
        }
    }
}

/// Change requests of every tier.
pub struct Changes {
    live: Arc<Live>,
    switches: Arc<KillSwitches>,
    /// Time to live of a pending change, from creation or last edit.
    ttl_secs: i64,
    /// One apply at a time on this node, so two changes validated one by one never land
    /// together unvalidated.
    apply_lock: tokio::sync::Mutex<()>,
    /// One proposal at a time on this node, so two identical proposals sent together
    /// (a double click) cannot both find no pending twin.
    propose_lock: tokio::sync::Mutex<()>,
}

impl Changes {
    /// The service over the live policy and the tier stores (through the kill switches,
    /// which also reset tier breakers).
    pub fn new(live: Arc<Live>, switches: Arc<KillSwitches>, ttl_secs: i64) -> Arc<Self> {
        Arc::new(Changes {
            live,
            switches,
            ttl_secs: ttl_secs.max(1),
            apply_lock: tokio::sync::Mutex::new(()),
            propose_lock: tokio::sync::Mutex::new(()),
        })
    }

    /// Time to live of pending changes, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    /// Proposes a change; it waits for a second operator of the owning tier. When the
    /// same change (kind, target and content; the reason aside) is already pending, that
    /// one is the answer and nothing is stored or audited.
    pub async fn propose(
        &self,
        op: &Operator,
        kind: &str,
        target: &str,
        change: &Value,
        reason: &str,
        now: i64,
    ) -> Result<Proposal, ChangeError> {
        let kind = ChangeKind::parse(kind).ok_or_else(|| {
            ChangeError::Invalid(format!(
                "unknown `kind` (expected one of {})",
                ChangeKind::NAMES.join(", ")
            ))
        })?;
        validate_target(target).map_err(ChangeError::Invalid)?;
        let change = validate_change(kind, change).map_err(ChangeError::Invalid)?;
        let reason = validate_reason(reason).map_err(ChangeError::Invalid)?;
        let config = self.live.snapshot().config.clone();
        let (owner, tenant) = owner_of(&config, kind, target)?;
        if owner != op.tier {
            let what = if tenant.is_some() { "tenant" } else { "tier" };
            return Err(ChangeError::CrossTier { owner, tenant, what });
        }
        if let Some(tier) = change.get("tier").and_then(Value::as_str)
            && !config.tiers.contains_key(tier)
        {
            return Err(ChangeError::Invalid("`change.tier` names an unknown tier".into()));
        }
        let store = self.store(&owner)?;
        let _one_at_a_time = self.propose_lock.lock().await;
        let twin = store
            .list_changes()
            .await?
            .into_iter()
            .find(|c| c.is_open(now) && c.kind == kind && c.target == target && c.change == change);
        if let Some(pending) = twin {
            return Ok(Proposal::AlreadyPending(pending));
        }
        let cr = ChangeRequest {
            id: new_change_id(),
            version: 1,
            tier: owner,
            kind,
            target: target.to_string(),
            digest: digest(kind, target, &change, &reason),
            change,
            reason,
            status: ChangeStatus::Pending,
            proposed_by: op.name.clone(),
            edited_by: Vec::new(),
            created_at: now,
            updated_at: now,
            expires_at: now.saturating_add(self.ttl_secs),
            decided_by: None,
            decided_at: None,
            errors: Vec::new(),
        };
        store.put_change(&cr).await?;
        let before = match kind {
            ChangeKind::TierBreakerReset | ChangeKind::TenantBreakerReset => Value::Null,
            _ => current_values(&config, &cr).await,
        };
        self.audit(&*store, &cr, op, "change.propose", before, summary(&cr), now)
            .await?;
        Ok(Proposal::Created(cr))
    }

    /// Replaces the change and/or reason of an open change; it gets a new digest and a new
    /// time to live, and its editor can no longer approve it.
    pub async fn edit(
        &self,
        op: &Operator,
        id: &str,
        change: Option<&Value>,
        reason: Option<&str>,
        now: i64,
    ) -> Result<ChangeRequest, ChangeError> {
        if change.is_none() && reason.is_none() {
            return Err(ChangeError::Invalid("give `change`, `reason` or both".into()));
        }
        let (store, old) = self.find(op, id).await?;
        open(&old, now)?;
        let mut new = old.clone();
        if let Some(change) = change {
            new.change = validate_change(old.kind, change).map_err(ChangeError::Invalid)?;
            if let Some(tier) = new.change.get("tier").and_then(Value::as_str)
                && !self.live.snapshot().config.tiers.contains_key(tier)
            {
                return Err(ChangeError::Invalid("`change.tier` names an unknown tier".into()));
            }
        }
        if let Some(reason) = reason {
            new.reason = validate_reason(reason).map_err(ChangeError::Invalid)?;
        }
        new.digest = digest(new.kind, &new.target, &new.change, &new.reason);
        new.version = old.version + 1;
        new.updated_at = now;
        new.expires_at = now.saturating_add(self.ttl_secs);
        if new.proposed_by != op.name && !new.edited_by.contains(&op.name) {
            new.edited_by.push(op.name.clone());
        }
        if !store.replace_change_if(&new, old.version).await? {
            return Err(ChangeError::Conflict(
                "the change was edited or decided meanwhile; read it again".into(),
            ));
        }
        self.audit(&*store, &new, op, "change.edit", summary(&old), summary(&new), now)
            .await?;
        Ok(new)
    }

    /// Approves an open change whose current digest is `reviewed_digest`, and applies it.
    /// On success the change is `applied`; when applying fails it is `failed` and nothing
    /// changed.
    pub async fn approve(
        &self,
        op: &Operator,
        id: &str,
        reviewed_digest: &str,
        now: i64,
    ) -> Result<ChangeRequest, ChangeError> {
        let (store, cr) = self.find(op, id).await?;
        open(&cr, now)?;
        if cr.authored_by(&op.name) {
            // A refused self-approval is a change attempt too: it goes on the record.
            let attempt = serde_json::json!({ "denied": "self-approval" });
            self.audit(&*store, &cr, op, "change.approve_denied", summary(&cr), attempt, now)
                .await?;
            return Err(ChangeError::SamePerson);
        }
        if reviewed_digest != cr.digest {
            return Err(ChangeError::Conflict(
                "the digest differs from the change's current content; review it again".into(),
            ));
        }
        let config = self.live.snapshot().config.clone();
        match owner_of(&config, cr.kind, &cr.target) {
            Ok((owner, _)) if owner == cr.tier => {}
            Ok(_) => {
                return Err(ChangeError::Conflict(
                    "the target moved to another tier since the change was proposed".into(),
                ));
            }
            Err(_) => {
                return Err(ChangeError::Conflict(
                    "the target no longer exists in the policy".into(),
                ));
            }
        }
        let mut claimed = cr.clone();
        claimed.status = ChangeStatus::Approved;
        claimed.version = cr.version + 1;
        claimed.updated_at = now;
        claimed.decided_by = Some(op.name.clone());
        claimed.decided_at = Some(now);
        if !store.replace_change_if(&claimed, cr.version).await? {
            return Err(ChangeError::Conflict(
                "the change was edited or decided meanwhile; read it again".into(),
            ));
        }
        self.audit(
            &*store,
            &claimed,
            op,
            "change.approve",
            Value::Null,
            json!({"id": claimed.id, "digest": claimed.digest}),
            now,
        )
        .await?;

        let outcome = self.apply(&claimed, op, now).await;
        let mut done = claimed.clone();
        done.version = claimed.version + 1;
        done.updated_at = now;
        match outcome {
            Ok((before, after)) => {
                done.status = ChangeStatus::Applied;
                self.finish(&*store, &done, claimed.version).await;
                self.audit(&*store, &done, op, "change.apply", before, after, now)
                    .await?;
                Ok(done)
            }
            Err(e) => {
                let errors = match &e {
                    ChangeError::InvalidPolicy { errors, .. } => errors.clone(),
                    other => vec![other.to_string()],
                };
                done.status = ChangeStatus::Failed;
                done.errors = errors.clone();
                self.finish(&*store, &done, claimed.version).await;
                self.audit(
                    &*store,
                    &done,
                    op,
                    "change.failed",
                    Value::Null,
                    json!({"id": done.id, "errors": errors}),
                    now,
                )
                .await?;
                Err(match e {
                    ChangeError::InvalidPolicy { errors, .. } => ChangeError::InvalidPolicy {
                        change: Box::new(done),
                        errors,
                    },
                    other => other,
                })
            }
        }
    }

    /// Rejects (or, for its proposer, withdraws) an open change; it never applies.
    pub async fn reject(
        &self,
        op: &Operator,
        id: &str,
        reason: Option<&str>,
        now: i64,
    ) -> Result<ChangeRequest, ChangeError> {
        let note = reason.map(validate_reason).transpose().map_err(ChangeError::Invalid)?;
        let (store, cr) = self.find(op, id).await?;
        open(&cr, now)?;
        let mut new = cr.clone();
        new.status = ChangeStatus::Rejected;
        new.version = cr.version + 1;
        new.updated_at = now;
        new.decided_by = Some(op.name.clone());
        new.decided_at = Some(now);
        if !store.replace_change_if(&new, cr.version).await? {
            return Err(ChangeError::Conflict(
                "the change was edited or decided meanwhile; read it again".into(),
            ));
        }
        let action = if cr.proposed_by == op.name {
            "withdrawn"
        } else {
            "rejected"
        };
        self.audit(
            &*store,
            &new,
            op,
            "change.reject",
            Value::Null,
            json!({"id": new.id, "status": "rejected", "by": action, "note": note}),
            now,
        )
        .await?;
        Ok(new)
    }

    /// The changes of the operator's tier, newest first.
    pub async fn list(&self, op: &Operator) -> Result<Vec<ChangeRequest>, ChangeError> {
        let mut all = self.store(&op.tier)?.list_changes().await?;
        all.sort_by(|a, b| b.created_at.cmp(&a.created_at).then_with(|| b.id.cmp(&a.id)));
        Ok(all)
    }

    /// One change of the operator's tier.
    pub async fn get(&self, op: &Operator, id: &str) -> Result<ChangeRequest, ChangeError> {
        Ok(self.find(op, id).await?.1)
    }

    /// The change `id` and its store. A change of another tier is a cross-tier refusal
    /// (so a misused token shows up as a security event), an unknown one is not found.
    async fn find(&self, op: &Operator, id: &str) -> Result<(Arc<dyn TierStore>, ChangeRequest), ChangeError> {
        if !is_change_id(id) {
            return Err(ChangeError::NotFound("change request"));
        }
        let store = self.store(&op.tier)?;
        if let Some(cr) = store.get_change(id).await? {
            return Ok((store, cr));
        }
        let config = self.live.snapshot().config.clone();
        for tier in config.tiers.keys().filter(|t| **t != op.tier) {
            let Ok(other) = self.store(tier) else {
                continue;
            };
            if let Ok(Some(cr)) = other.get_change(id).await {
                let tenant = cr.kind.names_tenant().then(|| cr.target.clone());
                return Err(ChangeError::CrossTier {
                    owner: cr.tier,
                    tenant,
                    what: "change request",
                });
            }
        }
        Err(ChangeError::NotFound("change request"))
    }

    fn store(&self, tier: &str) -> Result<Arc<dyn TierStore>, ChangeError> {
        Ok(self.switches.sessions().store(tier)?)
    }

    /// Applies a claimed change; returns the before/after values for the audit log.
    async fn apply(&self, cr: &ChangeRequest, op: &Operator, now: i64) -> Result<(Value, Value), ChangeError> {
        let _one_at_a_time = self.apply_lock.lock().await;
        match cr.kind {
            ChangeKind::TierBreakerReset | ChangeKind::TenantBreakerReset => {
                let config = self.live.snapshot().config.clone();
                let actor = Actor {
                    name: op.actor(),
                    source_ip: op.source_ip.clone(),
                    system: op.system.into(),
                };
                let reason = format!("change {}: {}", cr.id, cr.reason);
                let scope = match cr.kind {
                    ChangeKind::TenantBreakerReset => Scope::Tenant {
                        tier: cr.tier.clone(),
                        tenant: cr.target.clone(),
                    },
                    _ => Scope::Tier {
                        tier: cr.target.clone(),
                    },
                };
                let removed = self
                    .switches
                    .reset(&config, &scope, &reason, &actor, now)
                    .await
                    .map_err(|e| match e {
                        KillSwitchError::Store(s) => ChangeError::Store(s),
                        other => ChangeError::Apply(other.to_string()),
                    })?;
                let before = removed.map_or(Value::Null, |k| serde_json::to_value(k).unwrap_or_default());
                Ok((before, json!({"id": cr.id, "breaker": "reset"})))
            }
            ChangeKind::TenantUpdate | ChangeKind::TierCredentials => self.apply_to_policy(cr, op).await,
        }
    }

    /// Plans the file edit, validates the resulting policy on a copy, writes the file and
    /// reloads; puts the old file back if the reload refuses it.
    async fn apply_to_policy(&self, cr: &ChangeRequest, op: &Operator) -> Result<(Value, Value), ChangeError> {
        let dir = self.live.snapshot().config.dir.clone();
        let live = self.live.clone();
        let request = cr.clone();
        let edit = tokio::task::spawn_blocking(move || {
            let edit = policy::plan(&dir, &request)?;
            policy::validate(&live, &dir, &edit).map_err(|errors| ChangeError::InvalidPolicy {
                change: Box::new(request.clone()),
                errors,
            })?;
            policy::write(&dir, &edit.rel_path, &edit.before_text, &edit.after_text)?;
            Ok::<_, ChangeError>((dir, edit))
        })
        .await
        .map_err(|_| ChangeError::Apply("the apply task failed".into()))?;
        let (dir, edit) = edit?;
        let trigger = format!("change:{} approved by {}", cr.id, op.name);
        // The reload reads the whole policy folder, but it may apply only this change:
        // edits on disk to another tier were reviewed by nobody here and must not go live
        // on this approval (an operator of that tier reloads them first).
        let outcome = match self.live.prepare_reload(&trigger).await {
            Ok(prepared) => {
                let ours = tiers_of(cr);
                let others: Vec<String> = prepared
                    .changed_tiers
                    .iter()
                    .filter(|t| !ours.contains(t))
                    .cloned()
                    .collect();
                if others.is_empty() {
                    prepared.apply();
                    Ok(())
                } else {
                    Err(Refused::OtherTiers(others))
                }
            }
            Err(errors) => Err(Refused::Invalid(errors)),
        };
        let Err(refused) = outcome else {
            return Ok((edit.before, edit.after));
        };
        let restore = edit.clone();
        let restored = tokio::task::spawn_blocking(move || {
            policy::write(&dir, &restore.rel_path, &restore.after_text, &restore.before_text)
        })
        .await;
        if !matches!(restored, Ok(Ok(()))) {
            tracing::error!(
                change = %cr.id,
                file = %edit.rel_path.display(),
                "could not put the policy file back after a refused reload"
            );
        }
        // Clear the refused reload from `/readyz` with the folder as it was, unless that
        // would apply someone else's unreviewed edits.
        if matches!(refused, Refused::Invalid(_))
            && let Ok(prepared) = self.live.prepare_reload(&format!("change:{} rolled back", cr.id)).await
            && prepared.changed_tiers.is_empty()
        {
            prepared.apply();
        }
        match refused {
            Refused::Invalid(errors) => Err(ChangeError::InvalidPolicy {
                change: Box::new(cr.clone()),
                errors: errors.iter().map(ToString::to_string).collect(),
            }),
            Refused::OtherTiers(tiers) => Err(ChangeError::Conflict(format!(
                "the policy folder also holds unapplied edits to tier {}; an operator of that tier \
                 reloads them first, then this change can be approved",
                tiers.join(", ")
            ))),
        }
    }

    /// Stores the final state of a decided change. The decision already took effect, so a
    /// store failure here is logged, not reported as the call's failure.
    async fn finish(&self, store: &dyn ChangeStore, done: &ChangeRequest, expected: u64) {
        match store.replace_change_if(done, expected).await {
            Ok(true) => {}
            Ok(false) => tracing::error!(change = %done.id, "change request changed while it was being applied"),
            Err(e) => tracing::error!(change = %done.id, error = %e, "could not store the change request's outcome"),
        }
    }

    #[allow(clippy::too_many_arguments)]
    async fn audit(
        &self,
        store: &dyn AuditLog,
        cr: &ChangeRequest,
        op: &Operator,
        action: &str,
        before: Value,
        after: Value,
        now: i64,
    ) -> Result<(), ChangeError> {
        let (target, tenant) = if cr.kind.names_tenant() {
            (format!("tenant:{}", cr.target), Some(cr.target.clone()))
        } else {
            (format!("tier:{}", cr.target), None)
        };
        let entry = AuditEntry {
            time: now,
            actor: op.actor(),
            source_ip: op.source_ip.clone(),
            system: op.system.into(),
            action: action.into(),
            target,
            tenant,
            tier: cr.tier.clone(),
            reason: cr.reason.clone(),
            before: redacted(&before),
            after: redacted(&after),
            incident: None,
        };
        store.append_audit(&entry).await?;
        tracing::info!(
            event.kind = "event",
            event.action = action,
            event.outcome = "success",
            source.ip = %op.source_ip,
            user.id = %op.actor(),
            portcullis.tier = %cr.tier,
            change.id = %cr.id,
            change.kind = cr.kind.as_str(),
            change.status = ?cr.status,
            "change request step"
        );
        Ok(())
    }
}

/// The tier that owns a target, and the tenant when the target is one.
fn owner_of(config: &Config, kind: ChangeKind, target: &str) -> Result<(String, Option<String>), ChangeError> {
    match kind {
        ChangeKind::TenantUpdate | ChangeKind::TenantBreakerReset => config
            .tenants
            .iter()
            .find(|t| t.id == target)
            .map(|t| (t.tier.clone(), Some(t.id.clone())))
            .ok_or(ChangeError::NotFound("tenant")),
        ChangeKind::TierCredentials | ChangeKind::TierBreakerReset => {
            if config.tiers.contains_key(target) {
                Ok((target.to_string(), None))
            } else {
                Err(ChangeError::NotFound("tier"))
            }
        }
    }
}

/// Refuses a change that is no longer open.
fn open(cr: &ChangeRequest, now: i64) -> Result<(), ChangeError> {
    if cr.is_open(now) {
        Ok(())
    } else {
        Err(ChangeError::Conflict(format!(
            "the change is {}; only a pending change can be edited or decided",
            cr.status_at(now)
        )))
    }
}

/// What an audit record says of a change's content.
fn summary(cr: &ChangeRequest) -> Value {
    json!({
        "id": cr.id,
        "kind": cr.kind.as_str(),
        "change": cr.change,
        "reason": cr.reason,
        "digest": cr.digest,
        "expires_at": cr.expires_at,
    })
}

/// The current policy values of the keys a change touches (blocking file reads).
async fn current_values(config: &Config, cr: &ChangeRequest) -> Value {
    let dir = config.dir.clone();
    let cr = cr.clone();
    tokio::task::spawn_blocking(move || policy::current_values(&dir, &cr))
        .await
        .unwrap_or(Value::Null)
}

/// Why an approved policy edit was not applied.
enum Refused {
    /// The resulting policy set does not validate.
    Invalid(Vec<crate::config::ConfigError>),
    /// The folder would also change these other tiers.
    OtherTiers(Vec<String>),
}

/// The tiers a change request may change: its own, and the tier a tenant moves to.
fn tiers_of(cr: &ChangeRequest) -> Vec<String> {
    let mut tiers = vec![cr.tier.clone()];
    if let Some(to) = cr.change.get("tier").and_then(Value::as_str) {
        tiers.push(to.to_string());
    }
    tiers
}
