//! Kill switch endpoints of the admin API: `PUT /v1/tiers/{tier}/breaker`,
//! `PUT|DELETE /v1/tenants/{t}/breaker`, `PUT|DELETE /v1/tenants/{t}/accounts/{subject}/breaker`,
//! and `GET /v1/breakers`. (`DELETE /v1/tiers/{tier}/breaker` is a change request:
//! `changes.rs`.)
//!
//! Who may act on which switch is `scope.rs`; automation tokens never list. Everything
//! else (validation, order of steps, audit) is `killswitch::service`, shared with the CLI.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::error::AdminError;
use super::scope::{Action, Target, checked_call};
use super::{AdminState, Caller, operator_only, parse_body, parse_optional_body};
use crate::killswitch::service::Actor;
use crate::killswitch::{Expiry, TripRequest};

/// `PUT` body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TripBody {
    /// Why, for the audit log: not blank, no control characters.
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    reason: String,
    /// What users are told (the 423 page, `/.portcullis/status`): not blank, no control
    /// characters. A default message when absent.
    #[serde(default)]
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    message: Option<String>,
    /// Relative expiry (`90s`, `2h`, `1d`).
    #[serde(default)]
    expires_in: Option<String>,
    /// Absolute expiry (unix seconds).
    #[serde(default)]
    expires_at: Option<i64>,
    /// The incident the trip belongs to (`INC-42`).
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    incident: Option<String>,
}

/// `DELETE` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ResetBody {
    /// Why, for the audit log: no control characters; blank or absent for a plain "reset".
    #[serde(default)]
    #[schema(pattern = r"^[^\x00-\x1f\x7f-\x9f]*$", max_length = 500)]
    reason: String,
    /// The incident the reset belongs to; by default the one the switch was tripped for.
    #[serde(default)]
    #[schema(pattern = r"^[A-Za-z0-9._:-]{1,64}$")]
    incident: Option<String>,
}

/// `?dry_run=true`, and `?idp=` for account switches. Anything else is refused (`400`):
/// a mistyped `dry_run` (`?dry_run=yes`, `?dryrun=true`) must not trip for real.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct DryRunQuery {
    #[serde(default)]
    dry_run: Option<bool>,
    #[serde(default)]
    idp: Option<String>,
}

/// `?idp=` of an account switch reset.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AccountQuery {
    #[serde(default)]
    idp: Option<String>,
}

/// `PUT /v1/tiers/{tier}/breaker`.
#[utoipa::path(put, path = "/v1/tiers/{tier}/breaker", operation_id = "trip_tier", tag = "breakers",
    params(
        ("tier" = String, Path, description = "Tier name."),
        ("dry_run" = Option<bool>, Query, description = "Report what a trip would do; change nothing."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key returns the first trip."),
    ),
    request_body = TripBody,
    responses((status = 200, description = "The switch in force (or, with `dry_run`, what a trip would do).", body = serde_json::Value)))]
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
#[utoipa::path(put, path = "/v1/tenants/{tenant}/breaker", operation_id = "trip_tenant", tag = "breakers",
    params(
        ("tenant" = String, Path, description = "Tenant id."),
        ("dry_run" = Option<bool>, Query, description = "Report what a trip would do; change nothing."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key returns the first trip."),
    ),
    request_body = TripBody,
    responses((status = 200, description = "The switch in force (or, with `dry_run`, what a trip would do).", body = serde_json::Value)))]
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
#[utoipa::path(put, path = "/v1/tenants/{tenant}/accounts/{subject}/breaker", operation_id = "trip_account", tag = "breakers",
    params(
        ("tenant" = String, Path, description = "Tenant id."),
        ("subject" = String, Path, description = "The account's subject (username or IdP `sub`)."),
        ("dry_run" = Option<bool>, Query, description = "Report what a trip would do; change nothing."),
        ("idp" = Option<String>, Query, description = "The account's IdP issuer (`local` for a local account)."),
        ("Idempotency-Key" = Option<String>, Header, description = "A repeat with the same key returns the first trip."),
    ),
    request_body = TripBody,
    responses((status = 200, description = "The switch in force (or, with `dry_run`, what a trip would do).", body = serde_json::Value)))]
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

/// `DELETE /v1/tenants/{t}/breaker`.
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/breaker", operation_id = "reset_tenant", tag = "breakers",
    params(
        ("tenant" = String, Path, description = "Tenant id."),),
    request_body(content = Option<ResetBody>, description = "Optional: the reason for the audit log."),
    responses((status = 200, description = "The switch was reset: `{\"status\":\"reset\",\"breaker\"}`.", body = serde_json::Value)))]
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
#[utoipa::path(delete, path = "/v1/tenants/{tenant}/accounts/{subject}/breaker", operation_id = "reset_account", tag = "breakers",
    params(
        ("tenant" = String, Path, description = "Tenant id."),
        ("subject" = String, Path, description = "The account's subject (username or IdP `sub`)."),
        ("idp" = Option<String>, Query, description = "The account's IdP issuer (`local` for a local account)."),),
    request_body(content = Option<ResetBody>, description = "Optional: the reason for the audit log."),
    responses((status = 200, description = "The switch was reset: `{\"status\":\"reset\",\"breaker\"}`.", body = serde_json::Value)))]
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
#[utoipa::path(get, path = "/v1/breakers", operation_id = "list_breakers", tag = "breakers",
    responses((status = 200, description = "`{\"breakers\":[...]}`: the switches in force in the operator's tier.", body = serde_json::Value)))]
pub(super) async fn list(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let config = state.live.snapshot().config.clone();
    let (_, tier) = operator_only(
        &state,
        &headers,
        &peer,
        "GET /v1/breakers",
        "Automation tokens may only trip breakers.",
    )
    .await?;
    let now = crate::clock::unix_now();
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
    let (config, caller, scope) = checked_call(&state, &peer, target, &headers, Action::Trip).await?;
    let body: TripBody = parse_body(&headers, &body)?;
    check_incident(body.incident.as_deref())?;
    let actor = actor_of(&caller, &peer);
    let now = crate::clock::unix_now();
    if query.dry_run == Some(true) {
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
        incident: body.incident,
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
    let (config, caller, scope) = checked_call(&state, &peer, target, &headers, Action::Reset).await?;
    let body: ResetBody = parse_optional_body(&headers, &body)?;
    let actor = actor_of(&caller, &peer);
    let removed = state
        .switches
        .reset_for_incident(
            &config,
            &scope,
            &body.reason,
            body.incident.as_deref(),
            &actor,
            crate::clock::unix_now(),
        )
        .await?
        .ok_or(AdminError::NotTripped)?;
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "status": "reset", "breaker": removed })),
    )
        .into_response())
}

/// A named incident must be a valid reference, even for a dry run.
fn check_incident(incident: Option<&str>) -> Result<(), AdminError> {
    match incident {
        Some(id) => crate::incident::check_id(id).map_err(|e| AdminError::BadRequest(format!("{e}."))),
        None => Ok(()),
    }
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
