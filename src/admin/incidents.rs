//! `GET /v1/incidents/{id}`: the timeline of an incident in the caller's tier (see
//! `crate::incident` for what it holds and in what order). Operators only; an operator
//! sees the records of its own tier, so another tier's incident answers `404` like one
//! that never happened. Rendering is `crate::incident`'s, shared with the CLI.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use super::error::{AdminError, Cause};
use super::{AdminState, operator_only};
use crate::incident::IncidentError;

/// `GET /v1/incidents/{id}` → `{"incident","events":[...]}`.
#[utoipa::path(get, path = "/v1/incidents/{id}", operation_id = "show_incident", tag = "incidents",
    params(("id" = String, Path, pattern = r"^[A-Za-z0-9._:-]{1,64}$",
        description = "The incident reference a trip named (`INC-42`): 1 to 64 of `A-Z a-z 0-9 . _ : -`.")),
    responses((status = 200, description = "`{\"incident\",\"events\":[{\"time\",\"kind\",\"actor\",\"system\",\"reason\",\"tenant\",\"tier\",\"detail\"}]}`, oldest first; `kind` is `trip`, `reset`, `revocation`, `auto_trip`, `config_change` or `approval`.",
        body = serde_json::Value)))]
pub(super) async fn show(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let (_, tier) = operator_only(
        &state,
        &headers,
        &peer,
        "GET /v1/incidents/{id}",
        "Automation tokens cannot read incidents.",
    )
    .await?;
    let store = state.tier_store(&tier)?;
    let log: &dyn crate::store::AuditLog = &*store;
    match crate::incident::timeline(&id, &[log]).await {
        Ok(timeline) => Ok((StatusCode::OK, axum::Json(timeline)).into_response()),
        Err(e @ IncidentError::InvalidId) => Err(AdminError::BadRequest(format!("{e}."))),
        Err(IncidentError::NotFound) => Err(AdminError::NotFound("No record names this incident.".into())),
        Err(IncidentError::Store(e)) => Err(AdminError::Unavailable {
            message: "The store is unavailable.",
            cause: Some(Cause::new("audit log read failed", e)),
        }),
    }
}
