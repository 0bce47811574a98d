//! Four-eyes changes in the console: the change requests of the operator's tier, pending
//! first, each with its diff (current value → proposed value, per key) and digest; and
//! approve (of the digest shown, so an edit made meanwhile is refused) or reject. The
//! rules (not your own, digest, expiry, one decision) are `changes::service`'s.

use std::net::SocketAddr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::error::ConsoleError;
use super::tenants::scope_words;
use super::{ConsoleState, PageHeader, change_operator, page_operator, posted, render, see_other};
use crate::changes::{ChangeKind, ChangeRequest};
use crate::ui::readable::Moment;

/// Decided changes shown below the pending ones.
const DECIDED_SHOWN: usize = 20;

/// One line of a change's diff.
struct DiffLine {
    key: String,
    current: String,
    proposed: String,
}

struct ChangeView {
    id: String,
    status: &'static str,
    kind: &'static str,
    target: String,
    reason: String,
    proposed_by: String,
    created: Moment,
    expires: Moment,
    digest: String,
    diff: Vec<DiffLine>,
    /// The viewer wrote it and cannot approve it.
    own: bool,
    decided_by: Option<String>,
}

#[derive(Template)]
#[template(path = "console_changes.html")]
struct ChangesPage<'a> {
    header: PageHeader<'a>,
    notice: Option<&'static str>,
    pending: Vec<ChangeView>,
    decided: Vec<ChangeView>,
}

fn shown(v: &Value) -> String {
    match v {
        Value::Null => "(not set)".into(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// What a change would change, key by key.
async fn diff_of(state: &ConsoleState, cr: &ChangeRequest, now: i64) -> Vec<DiffLine> {
    match cr.kind {
        ChangeKind::TierBreakerReset | ChangeKind::TenantBreakerReset => {
            let scope = match cr.kind {
                ChangeKind::TenantBreakerReset => crate::killswitch::Scope::Tenant {
                    tier: cr.tier.clone(),
                    tenant: cr.target.clone(),
                },
                _ => crate::killswitch::Scope::Tier {
                    tier: cr.target.clone(),
                },
            };
            let config = state.live.snapshot().config.clone();
            let current = state
                .switches
                .list(&config)
                .await
                .ok()
                .and_then(|all| all.into_iter().find(|k| k.scope == scope && k.in_force(now)))
                .map_or_else(
                    || "off".to_string(),
                    |k| {
                        let incident = k.incident.map(|i| format!(" ({i})")).unwrap_or_default();
                        format!("on: {}{incident}", k.reason)
                    },
                );
            vec![DiffLine {
                key: format!("kill switch of {}", scope_words(&scope)),
                current,
                proposed: "off (reset)".into(),
            }]
        }
        ChangeKind::TenantUpdate | ChangeKind::TierCredentials => {
            let dir = state.live.snapshot().config.dir.clone();
            let request = cr.clone();
            let before = tokio::task::spawn_blocking(move || crate::changes::policy::current_values(&dir, &request))
                .await
                .unwrap_or(Value::Null);
            cr.change
                .iter()
                .map(|(key, proposed)| DiffLine {
                    key: key.clone(),
                    current: shown(before.get(key).unwrap_or(&Value::Null)),
                    proposed: shown(proposed),
                })
                .collect()
        }
    }
}

/// `GET /console/changes`.
pub(super) async fn page(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return Ok(to_signin.into_response()),
    };
    let op = &session.operator;
    let now = crate::clock::unix_now();
    let all = state.changes.list(&change_operator(op, &peer)).await?;
    let (mut pending, mut decided) = (Vec::new(), Vec::new());
    for cr in all {
        let open = cr.is_open(now);
        if !open && decided.len() >= DECIDED_SHOWN {
            continue;
        }
        let view = ChangeView {
            id: cr.id.clone(),
            status: cr.status_at(now),
            kind: cr.kind.as_str(),
            target: cr.target.clone(),
            reason: cr.reason.clone(),
            proposed_by: cr.proposed_by.clone(),
            created: Moment::at(cr.created_at, now),
            expires: Moment::at(cr.expires_at, now),
            digest: cr.digest.clone(),
            diff: diff_of(&state, &cr, now).await,
            own: cr.authored_by(&op.name),
            decided_by: cr.decided_by.clone(),
        };
        if open {
            pending.push(view);
        } else {
            decided.push(view);
        }
    }
    let notice = match crate::ui::web::query_param(query.as_deref(), "done").as_deref() {
        Some("proposed") => Some("Reset proposed: a second operator of this tier approves it here."),
        Some("already_pending") => {
            Some("This reset is already waiting for approval (below); no second change was made.")
        }
        Some("approved") => Some("Change approved and applied."),
        Some("rejected") => Some("Change rejected."),
        _ => None,
    };
    Ok(render(&ChangesPage {
        header: PageHeader::signed_in(&session, "changes"),
        notice,
        pending,
        decided,
    }))
}

/// `POST /console/changes/{id}/approve` (fields `digest`: the one shown, `csrf`).
pub(super) async fn approve(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (session, form) = posted(&state, &headers, &body)?;
    let digest = form.required("digest", "The digest you reviewed")?;
    let now = crate::clock::unix_now();
    state
        .changes
        .approve(&change_operator(&session.operator, &peer), &id, digest, now)
        .await?;
    Ok(see_other("/console/changes?done=approved"))
}

/// `POST /console/changes/{id}/reject` (field `reason`?, `csrf`).
pub(super) async fn reject(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (session, form) = posted(&state, &headers, &body)?;
    let now = crate::clock::unix_now();
    state
        .changes
        .reject(&change_operator(&session.operator, &peer), &id, form.get("reason"), now)
        .await?;
    Ok(see_other("/console/changes?done=rejected"))
}
