//! Kill switch endpoints of the admin API: `PUT|DELETE /v1/tiers/{tier}/breaker`,
//! `/v1/tenants/{t}/breaker`, `/v1/tenants/{t}/accounts/{subject}/breaker`, and
//! `GET /v1/breakers`.
//!
//! Owns who may do what: an operator acts on their own tier only; an automation token
//! may trip (never reset, never list) on the tenants it names. Everything else
//! (validation, order of steps, audit) is `killswitch::service`, shared with the CLI.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::AdminError;
use super::{AdminState, Caller, authenticate_caller, parse_body, parse_optional_body};
use crate::config::Config;
use crate::killswitch::service::Actor;
use crate::killswitch::{Expiry, KillSwitches, Scope, TripRequest};

/// `PUT` body.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TripBody {
    reason: String,
    #[serde(default)]
    message: Option<String>,
    /// Relative expiry (`90s`, `2h`, `1d`).
    #[serde(default)]
    expires_in: Option<String>,
    /// Absolute expiry (unix seconds).
    #[serde(default)]
    expires_at: Option<i64>,
}

/// `DELETE` body (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    #[serde(default)]
    reason: String,
}

/// `?dry_run=true`, and `?idp=` for account switches.
#[derive(Debug, Default, Deserialize)]
pub(super) struct DryRunQuery {
    #[serde(default)]
    dry_run: Option<String>,
    #[serde(default)]
    idp: Option<String>,
}

/// `?idp=` of an account switch reset.
#[derive(Debug, Default, Deserialize)]
pub(super) struct AccountQuery {
    #[serde(default)]
    idp: Option<String>,
}

/// Which switch a path names.
pub(super) enum Target {
    Tier(String),
    Tenant(String),
    /// Tenant, subject and `?idp=` (`local` when absent, `sso`, or an issuer URL): a local
    /// account and an SSO account of one subject are two accounts (see `crate::account`).
    Account(String, String, Option<String>),
}

/// `PUT /v1/tiers/{tier}/breaker`.
pub(super) async fn put_tier(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path(tier): Path<String>,
    query: Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    trip(state, peer, Target::Tier(tier), query, headers, body).await
}

/// `PUT /v1/tenants/{t}/breaker`.
pub(super) async fn put_tenant(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    query: Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    trip(state, peer, Target::Tenant(tenant), query, headers, body).await
}

/// `PUT /v1/tenants/{t}/accounts/{subject}/breaker`.
pub(super) async fn put_account(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path((tenant, subject)): Path<(String, String)>,
    query: Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let idp = query.idp.clone();
    trip(state, peer, Target::Account(tenant, subject, idp), query, headers, body).await
}

/// `DELETE /v1/tiers/{tier}/breaker`: a tier reset is an isolation change, so it becomes
/// a pending `tier.breaker_reset` change request that a second operator approves
/// (`202 {"id","status":"pending","digest"}`).
pub(super) async fn delete_tier(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path(tier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    super::changes::request_tier_breaker_reset(state, peer, tier, headers, body).await
}

/// `DELETE /v1/tenants/{t}/breaker`.
pub(super) async fn delete_tenant(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    reset(state, peer, Target::Tenant(tenant), headers, body).await
}

/// `DELETE /v1/tenants/{t}/accounts/{subject}/breaker`.
pub(super) async fn delete_account(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path((tenant, subject)): Path<(String, String)>,
    Query(query): Query<AccountQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    reset(state, peer, Target::Account(tenant, subject, query.idp), headers, body).await
}

/// `GET /v1/breakers`: the switches of the operator's tier.
pub(super) async fn list(State(state): State<AdminState>, headers: HeaderMap) -> Result<Response, AdminError> {
    let config = state.live.snapshot().config.clone();
    let tier = match authenticate_caller(&state.live, &headers) {
        Some(Caller::Operator { tier, .. }) => tier,
        Some(Caller::Automation { .. }) => {
            return Err(AdminError::Forbidden("Automation tokens may only trip breakers."));
        }
        None => return Err(AdminError::NoToken),
    };
    let now = crate::unix_now();
    let mine: Vec<_> = state
        .switches
        .list(&config)
        .await?
        .into_iter()
        .filter(|k| k.scope.tier() == tier && k.in_force(now))
        .collect();
    Ok((StatusCode::OK, axum::Json(json!({ "breakers": mine }))).into_response())
}

async fn trip(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    target: Target,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let (config, caller, scope) = checked_call(&state, &peer, target, &headers, Action::Trip)?;
    let body: TripBody = parse_body(&headers, &body)?;
    let actor = actor_of(&caller, &peer);
    let now = crate::unix_now();
    if query.dry_run.as_deref() == Some("true") {
        let report = state
            .switches
            .dry_run(&config, &scope, &body.reason, &actor, now)
            .await?;
        return Ok((StatusCode::OK, axum::Json(report)).into_response());
    }
    let expiry = expiry(&body)?;
    let idempotency_key = match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => None,
        Some(Ok(k)) => Some(k.to_string()),
        Some(Err(_)) => {
            return Err(AdminError::BadRequest("Idempotency-Key must be visible ASCII.".into()));
        }
    };
    let req = TripRequest {
        scope,
        reason: body.reason,
        message: body.message,
        expiry,
        idempotency_key,
    };
    let result = state.switches.trip(&config, req, &actor, now).await?;
    Ok((StatusCode::OK, axum::Json(result)).into_response())
}

async fn reset(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    target: Target,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let (config, caller, scope) = checked_call(&state, &peer, target, &headers, Action::Reset)?;
    let body: ResetBody = parse_optional_body(&headers, &body)?;
    let actor = actor_of(&caller, &peer);
    let removed = state
        .switches
        .reset(&config, &scope, &body.reason, &actor, crate::unix_now())
        .await?
        .ok_or_else(no_breaker_tripped)?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "status": "reset", "breaker": removed })),
    )
        .into_response())
}

/// The 404 of a reset where nothing is tripped.
pub(super) fn no_breaker_tripped() -> AdminError {
    AdminError::NotFound("No breaker is tripped there.".into())
}

/// The policy, the authenticated caller and the scope of a trip or reset call, once the
/// caller is allowed to act on it; otherwise the refusal to answer.
pub(super) fn checked_call(
    state: &AdminState,
    peer: &SocketAddr,
    target: Target,
    headers: &HeaderMap,
    action: Action,
) -> Result<(std::sync::Arc<Config>, Caller, Scope), AdminError> {
    let config = state.live.snapshot().config.clone();
    let caller = authenticate_caller(&state.live, headers).ok_or(AdminError::NoToken)?;
    let idp = match &target {
        Target::Account(_, _, idp) => idp.clone(),
        Target::Tier(_) | Target::Tenant(_) => None,
    };
    let scope = resolve(&config, target)?;
    // Scope first: a token learns nothing (not even "bad subject") about what it may
    // not reach.
    authorise(&caller, &scope, action, peer)?;
    let scope = name_account(&config, scope, idp.as_deref())?;
    KillSwitches::check_scope(&config, &scope)?;
    Ok((config, caller, scope))
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
/// scopes pass through.
fn name_account(config: &Config, scope: Scope, idp: Option<&str>) -> Result<Scope, AdminError> {
    let Scope::Account { tier, tenant, subject } = scope else {
        return Ok(scope);
    };
    let subject = crate::account::named(idp, &subject, config.sso_issuer(&tenant))
        .map_err(|e| AdminError::BadRequest(e.to_string()))?;
    Ok(Scope::Account { tier, tenant, subject })
}

#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Action {
    Trip,
    Reset,
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

fn actor_of(caller: &Caller, peer: &SocketAddr) -> Actor {
    Actor {
        name: caller.actor_name(),
        source_ip: peer.ip().to_string(),
        system: "api".into(),
    }
}

/// The expiry as the body gives it: `expires_in` (a duration) or `expires_at` (unix
/// seconds), at most one; the service checks it.
fn expiry(body: &TripBody) -> Result<Expiry, AdminError> {
    match (&body.expires_in, body.expires_at) {
        (Some(_), Some(_)) => Err(AdminError::BadRequest(
            "Give expires_in or expires_at, not both.".into(),
        )),
        (Some(text), None) => Ok(Expiry::After(text.clone())),
        (None, Some(at)) => Ok(Expiry::At(at)),
        (None, None) => Ok(Expiry::Never),
    }
}
