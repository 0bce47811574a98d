//! Which kill switch an admin API path names, and whether the caller may act on it: an
//! operator on their own tier only; an automation token may trip (never reset) on the
//! tenants it names, and learns nothing about what lies beyond them. Shared by the kill
//! switch endpoints (`breakers.rs`) and the tier-reset change request (`changes.rs`), so
//! neither needs the other.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::http::HeaderMap;

use super::error::{AdminError, Cause};
use super::{AdminState, Caller, authenticate_caller};
use crate::audit::{Actor, AuditEntry};
use crate::auth::sso_admin::tenant_issuer;
use crate::config::Config;
use crate::killswitch::{KillSwitches, Scope};
use crate::telemetry::{EventOutcome, SecurityEvent};

/// Which switch a path names.
pub(super) enum Target {
    Tier(String),
    Tenant(String),
    /// Tenant, subject and `?idp=` (`local` when absent, `sso`, or an issuer URL): a local
    /// account and an SSO account of one subject are two accounts (see `crate::account`).
    Account(String, String, Option<String>),
}

/// The policy, the authenticated caller and the scope of a trip or reset call, once the
/// caller is allowed to act on it; otherwise the refusal to answer.
///
/// Every refusal is a security event (`breaker_trip` / `breaker_reset`, outcome
/// `failure`). A refusal of a known token is also audited (`breaker.refused`), in the
/// log of the tier the call named when it exists (so that tier's operators see who
/// tried), else the caller's own: tokens are few and named, so this cannot flood the
/// log. Calls without a valid token are only logged: anyone can send those.
pub(super) async fn checked_call(
    state: &AdminState,
    peer: &SocketAddr,
    target: Target,
    headers: &HeaderMap,
    action: Action,
) -> Result<(Arc<Config>, Caller, Scope), AdminError> {
    let config = state.live.snapshot().config.clone();
    let named = target.named();
    let Some(caller) = authenticate_caller(&state.live, headers) else {
        refused_event(action, None, &named, peer, "no valid admin token");
        return Err(AdminError::NoToken);
    };
    match authorised_scope(state, &config, &caller, target, action, peer).await {
        Ok(scope) => Ok((config, caller, scope)),
        Err(refusal) => {
            if refusal.is_the_callers() {
                audit_refusal(state, &config, &caller, peer, action, &named, &refusal).await;
            }
            Err(refusal)
        }
    }
}

async fn authorised_scope(
    state: &AdminState,
    config: &Config,
    caller: &Caller,
    target: Target,
    action: Action,
    peer: &SocketAddr,
) -> Result<Scope, AdminError> {
    let idp = match &target {
        Target::Account(_, _, idp) => idp.clone(),
        Target::Tier(_) | Target::Tenant(_) => None,
    };
    let scope = resolve(config, target)?;
    // Scope first: a token learns nothing (not even "bad subject") about what it may
    // not reach.
    authorise(caller, &scope, action, peer)?;
    let scope = name_account(state, config, scope, idp.as_deref()).await?;
    KillSwitches::check_scope(config, &scope)?;
    Ok(scope)
}

/// What a refused call named, as the audit log names targets, and the tier it named
/// when that tier exists.
struct Named {
    target: String,
    tier: Option<String>,
}

impl Target {
    fn named(&self) -> Named {
        match self {
            Target::Tier(tier) => Named {
                target: format!("tier:{tier}"),
                tier: Some(tier.clone()),
            },
            Target::Tenant(tenant) => Named {
                target: format!("tenant:{tenant}"),
                tier: None,
            },
            Target::Account(tenant, subject, _) => Named {
                target: format!("account:{tenant}:{subject}"),
                tier: None,
            },
        }
    }
}

/// The security event of a refused trip or reset.
fn refused_event(action: Action, actor: Option<&str>, named: &Named, peer: &SocketAddr, why: &str) {
    let ip = peer.ip().to_string();
    SecurityEvent {
        reason: Some(why),
        source_ip: Some(&ip),
        user: actor,
        target: Some(&named.target),
        system: Some("api"),
        ..SecurityEvent::new(action.event(), EventOutcome::Failure)
    }
    .warn("kill switch call refused");
}

/// Logs and audits the refusal of a known token's call. A failing audit write is logged
/// and does not change the answer: the call was refused either way.
async fn audit_refusal(
    state: &AdminState,
    config: &Config,
    caller: &Caller,
    peer: &SocketAddr,
    action: Action,
    named: &Named,
    refusal: &AdminError,
) {
    let actor = caller.actor_name();
    let why = refusal.public_message();
    refused_event(action, Some(&actor), named, peer, &why);
    let tenant_tier = |tenant: &str| config.tenants.iter().find(|t| t.id == tenant).map(|t| t.tier.clone());
    let tenant = named.target.split(':').nth(1).filter(|_| named.tier.is_none());
    let tier = named
        .tier
        .clone()
        .filter(|t| config.tiers.contains_key(t))
        .or_else(|| tenant.and_then(tenant_tier))
        .unwrap_or_else(|| caller.tier().to_string());
    let entry = AuditEntry {
        target: named.target.clone(),
        tenant: tenant.map(str::to_string),
        tier: tier.clone(),
        reason: why.clone(),
        after: serde_json::json!({ "refused": action.name(), "status": refusal.status().as_u16() }),
        ..AuditEntry::by(
            &Actor {
                name: actor,
                source_ip: peer.ip().to_string(),
                system: "api".into(),
            },
            "breaker.refused",
            crate::clock::unix_now(),
        )
    };
    let written = match state.switches.sessions().store(&tier) {
        Ok(store) => store.append_audit(&entry).await,
        Err(e) => Err(e),
    };
    if let Err(e) = written {
        tracing::error!(error = %e, portcullis.tier = %tier, "could not audit a refused kill switch call");
    }
}

/// The scope a path names; 404 when its tier or tenant does not exist.
fn resolve(config: &Config, target: Target) -> Result<Scope, AdminError> {
    let tier_of = |tenant: &str| {
        config
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .map(|t| t.tier.clone())
            .ok_or_else(|| AdminError::NotFound("Unknown tenant.".into()))
    };
    let scope = match target {
        Target::Tier(tier) => {
            if !config.tiers.contains_key(&tier) {
                return Err(AdminError::NotFound("Unknown tier.".into()));
            }
            Scope::Tier { tier }
        }
        Target::Tenant(tenant) => Scope::Tenant {
            tier: tier_of(&tenant)?,
            tenant,
        },
        Target::Account(tenant, subject, _) => Scope::Account {
            tier: tier_of(&tenant)?,
            tenant,
            subject,
        },
    };
    Ok(scope)
}

/// Turns the subject of an account scope into the account key `idp` names; other
/// scopes pass through. `sso` is the tenant's provider as its sign-ins see it: the policy
/// files' or the SSO wizard's active version ([`tenant_issuer`]).
async fn name_account(
    state: &AdminState,
    config: &Config,
    scope: Scope,
    idp: Option<&str>,
) -> Result<Scope, AdminError> {
    let Scope::Account { tier, tenant, subject } = scope else {
        return Ok(scope);
    };
    let issuer = tenant_issuer(config, state.switches.sessions(), &tenant)
        .await
        .map_err(|e| AdminError::Unavailable {
            message: "The tenant's single sign-on settings cannot be read; try again shortly.",
            cause: Some(Cause::new("single sign-on settings", e)),
        })?;
    let subject =
        crate::account::named(idp, &subject, issuer.as_deref()).map_err(|e| AdminError::BadRequest(e.to_string()))?;
    Ok(Scope::Account { tier, tenant, subject })
}

/// What the caller asks to do with the switch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Trip,
    Reset,
}

impl Action {
    /// `trip` or `reset`.
    fn name(self) -> &'static str {
        match self {
            Action::Trip => "trip",
            Action::Reset => "reset",
        }
    }

    /// The security event's `event.action`.
    fn event(self) -> &'static str {
        match self {
            Action::Trip => "breaker_trip",
            Action::Reset => "breaker_reset",
        }
    }
}

/// Operators act on their own tier; automation tokens trip on their own tenants only.
/// A tier or tenant outside the token's reach is answered exactly like one that does not
/// exist (404), so a token never learns what exists beyond it; every such refusal is a
/// security event. An action the token may not take where it does reach is 403.
fn authorise(caller: &Caller, scope: &Scope, action: Action, peer: &SocketAddr) -> Result<(), AdminError> {
    let (tier_ok, tenant_ok, allowed) = match caller {
        Caller::Operator { tier, .. } => (tier == scope.tier(), true, true),
        Caller::Automation {
            tier, tenants, scopes, ..
        } => (
            tier == scope.tier(),
            scope.tenant().is_some_and(|t| tenants.iter().any(|n| n == t)),
            action == Action::Trip && scopes.iter().any(|s| s == "breaker:trip"),
        ),
    };
    let unknown = || match scope.tenant() {
        Some(_) => AdminError::NotFound("Unknown tenant.".into()),
        None => AdminError::NotFound("Unknown tier.".into()),
    };
    if !tier_ok {
        cross_event("cross_tier", caller, scope, peer);
        return Err(unknown());
    }
    // A reset of its own tier is refused below, for what it is: a reset.
    if !tenant_ok && (scope.tenant().is_some() || allowed) {
        cross_event("cross_tenant", caller, scope, peer);
        return Err(match scope.tenant() {
            Some(_) => unknown(),
            // Its own tier, which it knows: the whole tier is simply not its to trip.
            None => AdminError::Forbidden("Automation tokens may trip only their named tenants."),
        });
    }
    if !allowed {
        return Err(AdminError::Forbidden(
            "Automation tokens may trip breakers, never reset them.",
        ));
    }
    Ok(())
}

fn cross_event(action: &str, caller: &Caller, scope: &Scope, peer: &SocketAddr) {
    super::scope_refused_event(
        action,
        &caller.actor_name(),
        caller.tier(),
        scope.tier(),
        scope.tenant(),
        &peer.ip().to_string(),
    );
}
