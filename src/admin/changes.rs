//! Four-eyes change request endpoints of the admin API: `POST|GET /v1/changes`,
//! `GET|PATCH /v1/changes/{id}`, `POST /v1/changes/{id}/approve`,
//! `POST /v1/changes/{id}/reject`, and the change request that
//! `DELETE /v1/tiers/{tier}/breaker` opens.
//!
//! Owns authentication (operators only; automation tokens are refused) and body parsing;
//! [`ChangeError`] becomes a response in `error.rs` (with the `cross_tier` security
//! event). The rules and steps are `changes::service`.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::Value;

use super::error::AdminError;
use super::scope::{Action, Target, checked_call};
use super::{AdminState, Caller, operator_only, parse_body, parse_optional_body};
use crate::changes::{ChangeError, ChangeRequest, Operator, Proposal};

/// `POST /v1/changes` body.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ProposeBody {
    /// `tenant.update`, `tier.credentials`, `tier.breaker_reset` or `tenant.breaker_reset`.
    #[schema(pattern = r"^(tenant\.update|tier\.credentials|tier\.breaker_reset|tenant\.breaker_reset)$")]
    kind: String,
    /// The tenant or tier the change is for.
    #[schema(min_length = 1)]
    target: String,
    /// What changes (for `tenant.update`: any of `hosts`, `tier`, `upstream`).
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    change: Value,
    /// Why, for the audit log: not blank, no control characters.
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    reason: String,
}

/// `PATCH /v1/changes/{id}` body: `change`, `reason` or both (the document says so with
/// `minProperties`, set in `openapi.rs`).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct EditBody {
    /// The new content (replaces the old).
    #[serde(default)]
    #[schema(value_type = Object)]
    change: Option<Value>,
    /// Why, for the audit log: not blank, no control characters.
    #[serde(default)]
    #[schema(value_type = String)]
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    reason: Option<String>,
}

/// `POST /v1/changes/{id}/approve` body: the digest the approver reviewed.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ApproveBody {
    digest: String,
}

/// `POST /v1/changes/{id}/reject` and `DELETE /v1/tiers/{tier}/breaker` body (optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct ReasonBody {
    /// Why, for the audit log: not blank, no control characters.
    #[serde(default)]
    #[schema(
        pattern = r"^[^\x00-\x1f\x7f-\x9f]*[^\s\x00-\x1f\x7f-\x9f][^\x00-\x1f\x7f-\x9f]*$",
        max_length = 500
    )]
    reason: Option<String>,
}

fn empty_object() -> Value {
    Value::Object(serde_json::Map::new())
}

/// `GET /v1/changes`: the changes of the caller's tier, newest first.
#[utoipa::path(get, path = "/v1/changes", operation_id = "list_changes", tag = "changes",
    responses((status = 200, description = "The change requests of the operator's tier, newest first.", body = Vec<serde_json::Value>)))]
pub(super) async fn list(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let op = operator(&state, &headers, &peer, "GET /v1/changes").await?;
    let now = crate::clock::unix_now();
    let all = state.changes.list(&op).await.map_err(|e| AdminError::change(e, &op))?;
    let views: Vec<Value> = all.iter().map(|c| c.view(now)).collect();
    Ok((StatusCode::OK, axum::Json(Value::Array(views))).into_response())
}

/// `POST /v1/changes`: proposes a change → `201` pending, with its digest; `200` with
/// the pending change when the same one (kind, target, content) already waits.
#[utoipa::path(post, path = "/v1/changes", operation_id = "propose_change", tag = "changes",
    request_body = ProposeBody,
    responses(
        (status = 201, description = "Pending, with its `id` and `digest`; `Location` names it.", body = serde_json::Value),
        (status = 200, description = "The same change (kind, target and content) was already pending: that one, unchanged (no second one is made); `Location` names it.", body = serde_json::Value),
    ))]
pub(super) async fn create(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let op = operator(&state, &headers, &peer, "POST /v1/changes").await?;
    let body: ProposeBody = parse_body(&headers, &body)?;
    let now = crate::clock::unix_now();
    let result = state
        .changes
        .propose(&op, &body.kind, &body.target, &body.change, &body.reason, now)
        .await;
    created(result, StatusCode::CREATED, StatusCode::OK, &op, now)
}

/// `GET /v1/changes/{id}`.
#[utoipa::path(get, path = "/v1/changes/{id}", operation_id = "show_change", tag = "changes",
    params(("id" = String, Path, description = "Change request id (`chg-...`).")),
    responses((status = 200, description = "The change request.", body = serde_json::Value)))]
pub(super) async fn show(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let op = operator(&state, &headers, &peer, "GET /v1/changes/{id}").await?;
    let now = crate::clock::unix_now();
    answer(state.changes.get(&op, &id).await, &op, now)
}

/// `PATCH /v1/changes/{id}`: edits a pending change → `200` with its new digest.
#[utoipa::path(patch, path = "/v1/changes/{id}", operation_id = "edit_change", tag = "changes",
    params(("id" = String, Path, description = "Change request id (`chg-...`).")),
    request_body = EditBody,
    responses((status = 200, description = "The edited change with its new digest.", body = serde_json::Value)))]
pub(super) async fn edit(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let op = operator(&state, &headers, &peer, "PATCH /v1/changes/{id}").await?;
    let body: EditBody = parse_body(&headers, &body)?;
    let now = crate::clock::unix_now();
    let result = state
        .changes
        .edit(&op, &id, body.change.as_ref(), body.reason.as_deref(), now)
        .await;
    answer(result, &op, now)
}

/// `POST /v1/changes/{id}/approve`: approves the reviewed digest and applies at once.
#[utoipa::path(post, path = "/v1/changes/{id}/approve", operation_id = "approve_change", tag = "changes",
    params(("id" = String, Path, description = "Change request id (`chg-...`).")),
    request_body = ApproveBody,
    responses((status = 200, description = "Approved and applied.", body = serde_json::Value)))]
pub(super) async fn approve(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let op = operator(&state, &headers, &peer, "POST /v1/changes/{id}/approve").await?;
    let body: ApproveBody = parse_body(&headers, &body)?;
    let now = crate::clock::unix_now();
    answer(state.changes.approve(&op, &id, &body.digest, now).await, &op, now)
}

/// `POST /v1/changes/{id}/reject`: rejects (or withdraws) a pending change.
#[utoipa::path(post, path = "/v1/changes/{id}/reject", operation_id = "reject_change", tag = "changes",
    params(("id" = String, Path, description = "Change request id (`chg-...`).")),
    request_body(content = Option<ReasonBody>, description = "Optional: why."),
    responses((status = 200, description = "Rejected (or withdrawn by its proposer).", body = serde_json::Value)))]
pub(super) async fn reject(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let op = operator(&state, &headers, &peer, "POST /v1/changes/{id}/reject").await?;
    let body: ReasonBody = parse_optional_body(&headers, &body)?;
    let now = crate::clock::unix_now();
    let result = state.changes.reject(&op, &id, body.reason.as_deref(), now).await;
    answer(result, &op, now)
}

/// `DELETE /v1/tiers/{tier}/breaker`: opens a `tier.breaker_reset` change request for the
/// tripped tier switch → `202` pending; `404` when no tier switch is tripped. Who may ask
/// is decided exactly as for any other reset.
#[utoipa::path(delete, path = "/v1/tiers/{tier}/breaker", operation_id = "request_tier_reset", tag = "breakers",
    params(("tier" = String, Path, description = "Tier name.")),
    request_body(content = Option<ReasonBody>, description = "Optional: the reason for the audit log."),
    responses((status = 202, description = "A `tier.breaker_reset` change request, pending a second operator's approval.", body = serde_json::Value)))]
pub(super) async fn request_tier_breaker_reset(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(tier): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, AdminError> {
    let (config, caller, scope) = checked_call(&state, &peer, Target::Tier(tier), &headers, Action::Reset).await?;
    let Caller::Operator { name, tier } = caller else {
        // checked_call refuses automation tokens a reset; this only keeps the types honest.
        return Err(AdminError::Forbidden("Operators only."));
    };
    let op = Operator {
        name,
        tier,
        source_ip: peer.ip().to_string(),
        system: "api",
    };
    let body: ReasonBody = parse_optional_body(&headers, &body)?;
    // A reason given is held to the document's rules (not blank, no control characters)
    // before anything is looked up; only an absent one takes the default.
    let reason = match body.reason.as_deref() {
        Some(given) => crate::changes::validate_reason(given).map_err(AdminError::BadRequest)?,
        None => "reset of the tier breaker".to_string(),
    };
    let now = crate::clock::unix_now();
    let scope_key = scope.key();
    let tripped = state
        .switches
        .list(&config)
        .await?
        .iter()
        .any(|k| k.scope.tier() == op.tier && k.scope.key() == scope_key && k.in_force(now));
    if !tripped {
        return Err(AdminError::NotTripped);
    }
    let result = state
        .changes
        .propose(&op, "tier.breaker_reset", &op.tier, &empty_object(), &reason, now)
        .await;
    // Pending either way: a reset asked for twice answers the one change that waits.
    created(result, StatusCode::ACCEPTED, StatusCode::ACCEPTED, &op, now)
}

/// The operator behind the bearer token; 401 without one, 403 for automation tokens
/// (see [`operator_only`]).
async fn operator(
    state: &AdminState,
    headers: &HeaderMap,
    peer: &SocketAddr,
    call: &'static str,
) -> Result<Operator, AdminError> {
    let (name, tier) = operator_only(
        state,
        headers,
        peer,
        call,
        "Change requests are proposed and decided by operators, not automation tokens.",
    )
    .await?;
    Ok(Operator {
        name,
        tier,
        source_ip: peer.ip().to_string(),
        system: "api",
    })
}

/// A change request's current state (`200`), or the refusal.
fn answer(result: Result<ChangeRequest, ChangeError>, op: &Operator, now: i64) -> Result<Response, AdminError> {
    let cr = result.map_err(|e| AdminError::change(e, op))?;
    Ok((StatusCode::OK, axum::Json(cr.view(now))).into_response())
}

/// A proposal's answer with its change's `Location`: `new` (201, or 202 for a reset that
/// waits for approval) for a new change, `pending` when the same change already waited;
/// or the refusal.
fn created(
    result: Result<Proposal, ChangeError>,
    new: StatusCode,
    pending: StatusCode,
    op: &Operator,
    now: i64,
) -> Result<Response, AdminError> {
    let (status, cr) = match result.map_err(|e| AdminError::change(e, op))? {
        Proposal::Created(cr) => (new, cr),
        Proposal::AlreadyPending(cr) => (pending, cr),
    };
    Ok((
        status,
        [(header::LOCATION, format!("/v1/changes/{}", cr.id))],
        axum::Json(cr.view(now)),
    )
        .into_response())
}
