//! Sessions and the audit log in the console: live sessions of a tenant of the operator's
//! tier, searched by user, each revocable (through `session::Sessions`, so caches and
//! open connections hear of it at once; audited as `session.revoke`); and the tier's
//! audit log, newest first, filtered by tenant, action and time.

use std::net::SocketAddr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::error::ConsoleError;
use super::{ConsoleState, PageHeader, actor, own_tenant, page_operator, posted, render, see_other};
use crate::audit::AuditEntry;
use crate::records::Revocation;
use crate::records::session::is_public_id;
use crate::ui::readable::Moment;
use crate::ui::web::query_param;

/// Sessions listed at most.
const SESSIONS_SHOWN: usize = 500;

/// Audit records shown at most (the newest matching ones).
const AUDIT_SHOWN: usize = 200;

struct SessionRow {
    id: String,
    subject: String,
    display_name: String,
    ip: String,
    device: String,
    created: Moment,
    last_seen: Moment,
}

#[derive(Template)]
#[template(path = "console_sessions.html")]
struct SessionsPage<'a> {
    header: PageHeader<'a>,
    tenants: Vec<String>,
    tenant: &'a str,
    user: &'a str,
    notice: Option<&'static str>,
    /// None until a tenant is chosen.
    sessions: Option<Vec<SessionRow>>,
    capped: bool,
}

/// `GET /console/sessions?tenant=&user=`: live sessions of the tenant, newest first, of
/// users whose account or name contains `user` (any case).
pub(super) async fn sessions(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return Ok(to_signin.into_response()),
    };
    let tier = &session.operator.tier;
    let tenant = query_param(query.as_deref(), "tenant").unwrap_or_default();
    let user = query_param(query.as_deref(), "user").unwrap_or_default();
    let now = crate::clock::unix_now();
    let (mut capped, mut list) = (false, None);
    if !tenant.is_empty() {
        own_tenant(&state, &session.operator, &tenant, &peer)?;
        let store = state
            .switches
            .sessions()
            .store(tier)
            .map_err(|e| ConsoleError::store(&e))?;
        let needle = user.trim().to_lowercase();
        let mut found: Vec<SessionRow> = store
            .list_tenant_sessions(&tenant, now, usize::MAX)
            .await
            .map_err(|e| ConsoleError::store(&e))?
            .into_iter()
            .filter(|s| {
                needle.is_empty()
                    || s.sub().to_lowercase().contains(&needle)
                    || s.display_name.to_lowercase().contains(&needle)
            })
            .map(|s| SessionRow {
                id: s.public_id(),
                subject: s.sub().to_string(),
                display_name: s.display_name.clone(),
                ip: s.ip.clone(),
                device: crate::ui::web::device(&s.user_agent),
                created: Moment::at(s.created_at, now),
                last_seen: Moment::at(s.last_seen, now),
            })
            .collect();
        capped = found.len() > SESSIONS_SHOWN;
        found.truncate(SESSIONS_SHOWN);
        list = Some(found);
    }
    let config = state.live.snapshot().config.clone();
    let notice = (query_param(query.as_deref(), "done").as_deref() == Some("revoked")).then_some("Session ended.");
    Ok(render(&SessionsPage {
        header: PageHeader::signed_in(&session, "sessions"),
        tenants: config
            .tenants
            .iter()
            .filter(|t| &t.tier == tier)
            .map(|t| t.id.clone())
            .collect(),
        tenant: &tenant,
        user: &user,
        notice,
        sessions: list,
        capped,
    }))
}

/// `POST /console/sessions/revoke` (fields `tenant`, `id`: the session's public id,
/// `csrf`): ends it, audited as `session.revoke` (system `console`).
pub(super) async fn revoke(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (session, form) = posted(&state, &headers, &body)?;
    let op = &session.operator;
    let tenant = form.required("tenant", "Tenant")?;
    own_tenant(&state, op, tenant, &peer)?;
    let id = form.required("id", "Session")?;
    if !is_public_id(id) {
        return Err(ConsoleError::NotFound("session"));
    }
    let now = crate::clock::unix_now();
    let store = state
        .switches
        .sessions()
        .store(&op.tier)
        .map_err(|e| ConsoleError::store(&e))?;
    let target = store
        .list_tenant_sessions(tenant, now, usize::MAX)
        .await
        .map_err(|e| ConsoleError::store(&e))?
        .into_iter()
        .find(|s| s.public_id() == id)
        .ok_or(ConsoleError::NotFound("session"))?;
    let who = actor(op, &peer);
    let rev = Revocation {
        at: now,
        by: who.name.clone(),
        reason: "ended_by_operator".into(),
    };
    let ended = state
        .switches
        .sessions()
        .revoke(&op.tier, &target.id_hash, &rev)
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    if !ended {
        return Err(ConsoleError::NotFound("session"));
    }
    let entry = AuditEntry {
        target: format!("account:{}:{}", target.tenant, target.subject),
        tenant: Some(target.tenant.clone()),
        tier: op.tier.clone(),
        reason: form.get("reason").unwrap_or("ended by an operator").to_string(),
        after: json!({ "sessions_ended": 1, "session": target.public_id() }),
        ..AuditEntry::by(&who, "session.revoke", now)
    };
    store.append_audit(&entry).await.map_err(|e| ConsoleError::store(&e))?;
    let tenant_q: String = form_urlencoded::byte_serialize(tenant.as_bytes()).collect();
    Ok(see_other(&format!("/console/sessions?tenant={tenant_q}&done=revoked")))
}

struct AuditRow {
    seq: u64,
    time: Moment,
    actor: String,
    system: String,
    action: String,
    target: String,
    tenant: String,
    reason: String,
    incident: String,
}

#[derive(Template)]
#[template(path = "console_audit.html")]
struct AuditPage<'a> {
    header: PageHeader<'a>,
    tenant: &'a str,
    action: &'a str,
    since: &'a str,
    records: Vec<AuditRow>,
    capped: bool,
}

/// `since` as unix seconds or an RFC 3339 time (`2026-12-07T03:00:00Z`).
fn parse_since(text: &str) -> Result<i64, ConsoleError> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    humantime::parse_rfc3339_weak(text)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .and_then(|d| i64::try_from(d.as_secs()).ok())
        .ok_or_else(|| {
            ConsoleError::BadRequest("Since must be unix seconds or a time like 2026-12-07T03:00:00Z.".into())
        })
}

/// `GET /console/audit?tenant=&action=&since=`: the newest matching records of the tier.
pub(super) async fn audit(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return Ok(to_signin.into_response()),
    };
    let tier = &session.operator.tier;
    let field = |name: &str| {
        query_param(query.as_deref(), name)
            .map(|v| v.trim().to_string())
            .unwrap_or_default()
    };
    let (tenant, action, since_text) = (field("tenant"), field("action"), field("since"));
    let since = if since_text.is_empty() {
        None
    } else {
        Some(parse_since(&since_text)?)
    };
    let store = state
        .switches
        .sessions()
        .store(tier)
        .map_err(|e| ConsoleError::store(&e))?;
    let log: &dyn crate::store::AuditLog = &*store;
    let all = crate::incident::read_log(log)
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let now = crate::clock::unix_now();
    let mut matching: Vec<AuditRow> = all
        .iter()
        .rev()
        .filter(|r| {
            (tenant.is_empty() || r.entry.tenant.as_deref() == Some(tenant.as_str()))
                && (action.is_empty() || r.entry.action == action)
                && since.is_none_or(|s| r.entry.time >= s)
        })
        .take(AUDIT_SHOWN + 1)
        .map(|r| AuditRow {
            seq: r.seq,
            time: Moment::at(r.entry.time, now),
            actor: r.entry.actor.clone(),
            system: r.entry.system.clone(),
            action: r.entry.action.clone(),
            target: r.entry.target.clone(),
            tenant: r.entry.tenant.clone().unwrap_or_default(),
            reason: r.entry.reason.clone(),
            incident: r.entry.incident.clone().unwrap_or_default(),
        })
        .collect();
    let capped = matching.len() > AUDIT_SHOWN;
    matching.truncate(AUDIT_SHOWN);
    Ok(render(&AuditPage {
        header: PageHeader::signed_in(&session, "audit"),
        tenant: &tenant,
        action: &action,
        since: &since_text,
        records: matching,
        capped,
    }))
}
