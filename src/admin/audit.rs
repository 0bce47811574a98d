//! `GET /v1/audit?tenant=&action=&since=&after=&limit=`: the audit log of the caller's
//! tier, oldest first, as a JSON array (a full page carries `X-Next-After` to continue). An operator token sees its own tier only; automation tokens see
//! nothing.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::error::{AdminError, Cause};
use super::{AdminState, operator_only};

/// Records returned per call at most.
const PAGE_MAX: usize = 1000;

/// Filters; all optional.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditQuery {
    /// Records of this tenant only.
    tenant: Option<String>,
    /// Records of this action only (`breaker.trip`, `session.revoke`, ...).
    action: Option<String>,
    /// Unix seconds: records at or after this time.
    since: Option<i64>,
    /// Sequence number to continue after (paging).
    #[param(minimum = 0)]
    after: Option<i64>,
    /// Records per page (1 to 1000, default 100).
    #[param(minimum = 1, maximum = 1000)]
    limit: Option<i64>,
}

/// Lists audit records matching the filters, scanning forward from `after`.
#[utoipa::path(get, path = "/v1/audit", operation_id = "list_audit", tag = "audit",
    params(AuditQuery),
    responses((status = 200, description = "Matching records of the operator's tier, oldest first; a full page carries `X-Next-After`.",
        body = Vec<crate::audit::AuditRecord>,
        headers(("X-Next-After" = u64, description = "Pass as `after` for the next page.")))))]
pub(super) async fn list(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    query: Result<Query<AuditQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, AdminError> {
    let (_, tier) = operator_only(
        &state,
        &headers,
        &peer,
        "GET /v1/audit",
        "Automation tokens cannot read the audit log.",
    )
    .await?;
    let Ok(Query(q)) = query else {
        return Err(AdminError::BadRequest(
            "Unknown or malformed query parameter (tenant, action, since, after, limit).".into(),
        ));
    };
    // Out of range is refused, not clamped: the caller would otherwise page wrongly.
    let limit = match q.limit {
        None => 100,
        Some(n) => usize::try_from(n)
            .ok()
            .filter(|n| (1..=PAGE_MAX).contains(n))
            .ok_or_else(|| AdminError::BadRequest(format!("`limit` must be 1 to {PAGE_MAX}.")))?,
    };
    let after = u64::try_from(q.after.unwrap_or(0))
        .map_err(|_| AdminError::BadRequest("`after` must not be negative.".into()))?;
    let store = state.tier_store(&tier)?;
    let mut out = Vec::new();
    let mut after = after;
    while out.len() < limit {
        let page = store
            .audit_records(after, PAGE_MAX)
            .await
            .map_err(|e| AdminError::Unavailable {
                message: "The store is unavailable.",
                cause: Some(Cause::new("audit log read failed", e)),
            })?;
        let Some(last) = page.last().map(|r| r.seq).filter(|s| *s > after) else {
            break;
        };
        after = last;
        out.extend(page.into_iter().filter(|r| {
            q.tenant.as_ref().is_none_or(|t| r.entry.tenant.as_ref() == Some(t))
                && q.action.as_ref().is_none_or(|a| &r.entry.action == a)
                && q.since.is_none_or(|s| r.entry.time >= s)
        }));
    }
    out.truncate(limit);
    // A full page may have more after it: say where to continue (`?after=`).
    let next = (out.len() == limit).then(|| out.last().map(|r| r.seq)).flatten();
    let mut resp = (StatusCode::OK, axum::Json(out)).into_response();
    if let Some(v) = next.and_then(|n| axum::http::HeaderValue::from_str(&n.to_string()).ok()) {
        resp.headers_mut().insert("x-next-after", v);
    }
    Ok(resp)
}
