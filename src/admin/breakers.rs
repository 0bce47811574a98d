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
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::{AdminState, Caller, authenticate_caller, error};
use crate::config::Config;
use crate::killswitch::service::Actor;
use crate::killswitch::{Expiry, ExpiryError, KillSwitchError, KillSwitches, Scope, TripRequest};

/// Largest request body accepted.
const BODY_MAX: usize = 16 * 1024;

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
) -> Result<Response, ApiError> {
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
) -> Result<Response, ApiError> {
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
) -> Result<Response, ApiError> {
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
) -> Result<Response, ApiError> {
    super::changes::request_tier_breaker_reset(state, peer, tier, headers, body).await
}

/// `DELETE /v1/tenants/{t}/breaker`.
pub(super) async fn delete_tenant(
    state: State<AdminState>,
    peer: ConnectInfo<SocketAddr>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
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
) -> Result<Response, ApiError> {
    reset(state, peer, Target::Account(tenant, subject, query.idp), headers, body).await
}

/// `GET /v1/breakers`: the switches of the operator's tier.
pub(super) async fn list(State(state): State<AdminState>, headers: HeaderMap) -> Response {
    let config = state.live.snapshot().config.clone();
    let tier = match authenticate_caller(&state.live, &headers) {
        Some(Caller::Operator { tier, .. }) => tier,
        Some(Caller::Automation { .. }) => {
            return error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Automation tokens may only trip breakers.",
            );
        }
        None => return unauthenticated().into_response(),
    };
    let now = crate::unix_now();
    match state.switches.list(&config).await {
        Ok(all) => {
            let mine: Vec<_> = all
                .into_iter()
                .filter(|k| k.scope.tier() == tier && k.in_force(now))
                .collect();
            (StatusCode::OK, axum::Json(json!({ "breakers": mine }))).into_response()
        }
        Err(e) => ApiError::from(e).into_response(),
    }
}

async fn trip(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    target: Target,
    Query(query): Query<DryRunQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
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
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Idempotency-Key must be visible ASCII.",
            ));
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
) -> Result<Response, ApiError> {
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
pub(super) fn no_breaker_tripped() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "No breaker is tripped there.")
}

/// The policy, the authenticated caller and the scope of a trip or reset call, once the
/// caller is allowed to act on it; otherwise the refusal to answer.
pub(super) fn checked_call(
    state: &AdminState,
    peer: &SocketAddr,
    target: Target,
    headers: &HeaderMap,
    action: Action,
) -> Result<(std::sync::Arc<Config>, Caller, Scope), ApiError> {
    let config = state.live.snapshot().config.clone();
    let caller = authenticate_caller(&state.live, headers).ok_or_else(unauthenticated)?;
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
fn resolve(config: &Config, target: Target) -> Result<Scope, ApiError> {
    let tier_of = |tenant: &str| {
        config
            .tenants
            .iter()
            .find(|t| t.id == tenant)
            .map(|t| t.tier.clone())
            .ok_or_else(|| ApiError::new(StatusCode::NOT_FOUND, "not_found", "Unknown tenant."))
    };
    let scope = match target {
        Target::Tier(tier) => {
            if !config.tiers.contains_key(&tier) {
                return Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", "Unknown tier."));
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
fn name_account(config: &Config, scope: Scope, idp: Option<&str>) -> Result<Scope, ApiError> {
    let Scope::Account { tier, tenant, subject } = scope else {
        return Ok(scope);
    };
    let subject = crate::account::named(idp, &subject, config.sso_issuer(&tenant))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()))?;
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
fn authorise(caller: &Caller, scope: &Scope, action: Action, peer: &SocketAddr) -> Result<(), ApiError> {
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
        Some(_) => ApiError::new(StatusCode::NOT_FOUND, "not_found", "Unknown tenant."),
        None => ApiError::new(StatusCode::NOT_FOUND, "not_found", "Unknown tier."),
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
            None => ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Automation tokens may trip only their named tenants.",
            ),
        });
    }
    if !allowed {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
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

/// An optional JSON body: the type's default when none was sent.
pub(super) fn parse_optional_body<T: Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    parse_body(headers, body)
}

pub(super) fn parse_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, ApiError> {
    if body.len() > BODY_MAX {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            "Request body too large.",
        ));
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send a JSON body with Content-Type: application/json.",
        ));
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            &format!("Invalid JSON body: {}", json_problem(&e)),
        )
    })
}

/// The serde error's category and position, never the offending input.
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => crate::changes::serde_problem(e),
        Category::Syntax | Category::Eof => format!("malformed JSON at line {} column {}", e.line(), e.column()),
        Category::Io => "unreadable body".to_string(),
    }
}

/// The expiry as the body gives it: `expires_in` (a duration) or `expires_at` (unix
/// seconds), at most one; the service checks it.
fn expiry(body: &TripBody) -> Result<Expiry, ApiError> {
    match (&body.expires_in, body.expires_at) {
        (Some(_), Some(_)) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "Give expires_in or expires_at, not both.",
        )),
        (Some(text), None) => Ok(Expiry::After(text.clone())),
        (None, Some(at)) => Ok(Expiry::At(at)),
        (None, None) => Ok(Expiry::Never),
    }
}

/// A refusal, answered as `{"error","message"}`.
pub(super) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: &str) -> Self {
        ApiError {
            status,
            code,
            message: message.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error(self.status, self.code, &self.message)
    }
}

fn unauthenticated() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthenticated",
        "A valid operator or automation bearer token is required.",
    )
}

/// The admin API's one answer to each refusal of the kill switch service.
impl From<KillSwitchError> for ApiError {
    fn from(e: KillSwitchError) -> Self {
        match &e {
            KillSwitchError::UnknownTier | KillSwitchError::UnknownTenant => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", &e.to_string())
            }
            KillSwitchError::Invalid(m) => ApiError::new(StatusCode::BAD_REQUEST, "bad_request", m),
            // Only `expires_in` is a duration here: name the field.
            KillSwitchError::Expiry(ExpiryError::NotADuration) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", &format!("expires_in: {e}."))
            }
            KillSwitchError::Expiry(ExpiryError::NotInFuture) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", &e.to_string())
            }
            KillSwitchError::IdempotencyConflict => {
                ApiError::new(StatusCode::CONFLICT, "idempotency_conflict", &e.to_string())
            }
            KillSwitchError::Store(err) => {
                tracing::error!(error = %err, "kill switch store call failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable",
                    "The store is unavailable; try again.",
                )
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// If this broke, a kill switch refusal would get another status than the API
    /// documents, or an operator would read a store's internal error.
    #[test]
    fn each_kill_switch_refusal_has_its_answer() {
        let cases = [
            (KillSwitchError::UnknownTenant, 404, "not_found", "unknown tenant"),
            (
                KillSwitchError::Invalid("reason is required".into()),
                400,
                "bad_request",
                "reason is required",
            ),
            (
                KillSwitchError::Expiry(ExpiryError::NotADuration),
                400,
                "bad_request",
                "expires_in: expiry must be a duration such as 90s, 2h or 1d, at least 1s.",
            ),
            (
                KillSwitchError::Expiry(ExpiryError::NotInFuture),
                400,
                "bad_request",
                "expiry must be in the future",
            ),
            (
                KillSwitchError::IdempotencyConflict,
                409,
                "idempotency_conflict",
                "Idempotency-Key was already used for a different request",
            ),
            (
                KillSwitchError::Store(StoreError::Unavailable("sqlite: DatabaseBusy".into())),
                503,
                "unavailable",
                "The store is unavailable; try again.",
            ),
        ];
        for (e, status, code, message) in cases {
            let answer = ApiError::from(e);
            assert_eq!(
                (answer.status.as_u16(), answer.code, answer.message.as_str()),
                (status, code, message)
            );
        }
    }

    /// If this broke, a secret pasted into the wrong field of a trip (here `expires_at`)
    /// would come back in the error, and so reach logs and terminals.
    #[test]
    fn a_wrongly_typed_value_is_never_repeated() {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let body = br#"{"reason": "x", "expires_at": "hunter2-secret"}"#;
        let Err(err) = parse_body::<TripBody>(&headers, &Bytes::from_static(body)) else {
            panic!("a string in expires_at was accepted");
        };
        let shown = err.message;
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("expected i64"), "{shown}");
        let body = br#"{"reason": "x", "surprise": 1}"#;
        let Err(err) = parse_body::<TripBody>(&headers, &Bytes::from_static(body)) else {
            panic!("an unknown field was accepted");
        };
        let shown = err.message;
        assert!(shown.contains("unknown field `surprise`"), "{shown}");
    }
}
