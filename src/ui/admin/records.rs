//! The tenant's records, read only: the sign-in history of all its users
//! (`/.portcullis/admin/history`, `GET /.portcullis/api/admin/history`) and the audit
//! records that concern it (`/.portcullis/admin/audit`, `GET /.portcullis/api/admin/audit`),
//! both newest first and paged backwards with `before`.
//!
//! The history is every attempt of the tenant's (local accounts, SSO users, names no
//! account has), as the store keeps it per tenant. The audit log is the tier's: only
//! records whose tenant or target is this tenant are shown.

use std::collections::VecDeque;

use askama::Template;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{page_admin, render};
use crate::audit::AuditRecord;
use crate::records::LoginEvent;
use crate::store::StoreError;
use crate::ui::api::ApiError;
use crate::ui::error::PageError;
use crate::ui::pages::HistoryRow;
use crate::ui::readable::{self, Moment};
use crate::ui::{Ctx, Portal, web};

/// History rows of a page.
const HISTORY_PAGE: usize = 50;
/// Audit records of a page.
const AUDIT_PAGE: usize = 100;
/// Most rows one API call returns.
const API_MAX: usize = 500;
/// Audit records read from the store per call while scanning the tier's log.
const AUDIT_SCAN: usize = 1000;

#[derive(Template)]
#[template(path = "admin_history.html")]
struct HistoryPage<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    history: Vec<HistoryRow>,
    next_page: Option<i64>,
}

struct AuditRow {
    time: Moment,
    actor: String,
    system: String,
    action: String,
    /// The action in words (the code when it has none).
    action_words: String,
    target: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "admin_audit.html")]
struct AuditPage<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    records: Vec<AuditRow>,
    next_page: Option<u64>,
}

/// Whether an audit record concerns `tenant`: its tenant when it names one, else its
/// target.
fn concerns(record: &AuditRecord, tenant: &str) -> bool {
    let e = &record.entry;
    match e.tenant.as_deref() {
        Some(t) => t == tenant,
        None => e.target == format!("tenant:{tenant}") || e.target.starts_with(&format!("account:{tenant}:")),
    }
}

/// `limit` of an API call: 1 to [`API_MAX`], `default` when absent or unreadable.
fn api_limit(query: Option<&str>, default: usize) -> usize {
    web::query_param(query, "limit")
        .and_then(|n| n.parse::<usize>().ok())
        .unwrap_or(default)
        .clamp(1, API_MAX)
}

impl Portal {
    /// The tenant's sign-in attempts before `before` (a `seq`), newest first, at most `limit`.
    async fn tenant_history(
        &self,
        ctx: &Ctx<'_>,
        limit: usize,
        before: Option<i64>,
    ) -> Result<Vec<LoginEvent>, StoreError> {
        self.sessions
            .store(ctx.tier())?
            .tenant_login_history(&ctx.entry.tenant.id, limit, before)
            .await
    }

    /// The audit records of the tenant before `before` (a `seq`), newest first, at most
    /// `limit`: one pass over the tier's log keeping the newest that match.
    async fn tenant_audit(
        &self,
        ctx: &Ctx<'_>,
        limit: usize,
        before: Option<u64>,
    ) -> Result<Vec<AuditRecord>, StoreError> {
        let store = self.sessions.store(ctx.tier())?;
        let tenant = ctx.entry.tenant.id.as_str();
        let end = before.unwrap_or(u64::MAX);
        let mut kept = VecDeque::with_capacity(limit + 1);
        let mut after = 0;
        'scan: loop {
            let page = store.audit_records(after, AUDIT_SCAN).await?;
            let full = page.len() == AUDIT_SCAN;
            for record in page {
                if record.seq >= end {
                    break 'scan;
                }
                after = record.seq;
                if concerns(&record, tenant) {
                    kept.push_back(record);
                    if kept.len() > limit {
                        kept.pop_front();
                    }
                }
            }
            if !full {
                break;
            }
        }
        Ok(kept.into_iter().rev().collect())
    }

    /// `GET /.portcullis/admin/history[?before=seq]`.
    pub(in crate::ui) async fn admin_history_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/history") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let before = web::query_param(req.uri().query(), "before").and_then(|b| b.parse::<i64>().ok());
        let events = self
            .tenant_history(ctx, HISTORY_PAGE, before)
            .await
            .map_err(|_| PageError::Unavailable)?;
        let next_page = (events.len() == HISTORY_PAGE)
            .then(|| events.last().map(|e| e.seq))
            .flatten();
        Ok(render(&HistoryPage {
            tenant_name: &ctx.entry.tenant.name,
            csrf: &session.csrf_token,
            history: events.iter().map(|e| HistoryRow::of(e, ctx.now)).collect(),
            next_page,
        }))
    }

    /// `GET /.portcullis/admin/audit[?before=seq]`.
    pub(in crate::ui) async fn admin_audit_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/audit") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let before = web::query_param(req.uri().query(), "before").and_then(|b| b.parse::<u64>().ok());
        let records = self
            .tenant_audit(ctx, AUDIT_PAGE, before)
            .await
            .map_err(|_| PageError::Unavailable)?;
        let next_page = (records.len() == AUDIT_PAGE)
            .then(|| records.last().map(|r| r.seq))
            .flatten();
        Ok(render(&AuditPage {
            tenant_name: &ctx.entry.tenant.name,
            csrf: &session.csrf_token,
            records: records
                .into_iter()
                .map(|r| AuditRow {
                    time: Moment::at(r.entry.time, ctx.now),
                    actor: r.entry.actor,
                    system: r.entry.system,
                    action_words: readable::audit_action(&r.entry.action).to_string(),
                    action: r.entry.action,
                    target: r.entry.target,
                    reason: r.entry.reason,
                })
                .collect(),
            next_page,
        }))
    }

    /// `GET /.portcullis/api/admin/history[?before=seq&limit=n]`.
    pub(super) async fn api_admin_history(
        &self,
        ctx: &Ctx<'_>,
        query: Option<&str>,
    ) -> Result<Response<Bytes>, ApiError> {
        let before = web::query_param(query, "before").and_then(|b| b.parse::<i64>().ok());
        let events = self
            .tenant_history(ctx, api_limit(query, HISTORY_PAGE), before)
            .await
            .map_err(|_| ApiError::Unavailable)?;
        let items: Vec<_> = events
            .iter()
            .map(|e| {
                json!({
                    "seq": e.seq, "time": web::time(e.time),
                    "subject": crate::account::sub_of(&e.subject),
                    "idp": if crate::account::is_sso(&e.subject) { "sso" } else { "local" },
                    "ip": e.ip, "user_agent": e.user_agent, "method": e.method,
                    "outcome": e.outcome, "reason": e.reason,
                })
            })
            .collect();
        Ok(web::json(StatusCode::OK, &json!({ "history": items })))
    }

    /// `GET /.portcullis/api/admin/audit[?before=seq&limit=n]`.
    pub(super) async fn api_admin_audit(
        &self,
        ctx: &Ctx<'_>,
        query: Option<&str>,
    ) -> Result<Response<Bytes>, ApiError> {
        let before = web::query_param(query, "before").and_then(|b| b.parse::<u64>().ok());
        let records = self
            .tenant_audit(ctx, api_limit(query, AUDIT_PAGE), before)
            .await
            .map_err(|_| ApiError::Unavailable)?;
        Ok(web::json(StatusCode::OK, &json!({ "records": records })))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::{Actor, AuditEntry};

    fn record(target: &str, tenant: Option<&str>) -> AuditRecord {
        let actor = Actor {
            name: "cli".into(),
            source_ip: "-".into(),
            system: "cli".into(),
        };
        let entry = AuditEntry {
            target: target.into(),
            tenant: tenant.map(str::to_string),
            ..AuditEntry::by(&actor, "breaker.trip", 0)
        };
        AuditRecord::chain(None, entry)
    }

    /// If this broke, a tenant admin would read another tenant's audit records (or miss
    /// their own).
    #[test]
    fn only_the_tenants_records_concern_it() {
        assert!(concerns(&record("account:acme:bob", Some("acme")), "acme"));
        assert!(concerns(&record("tenant:acme", None), "acme"));
        assert!(concerns(&record("account:acme:bob", None), "acme"));
        assert!(!concerns(&record("account:acme2:bob", Some("acme2")), "acme"));
        assert!(!concerns(&record("tenant:acme2", None), "acme"));
        assert!(!concerns(&record("tier:prod", None), "acme"));
        assert!(!concerns(&record("account:globex:acme", Some("globex")), "acme"));
        assert!(!concerns(&record("account:acme:bob", Some("globex")), "acme"));
    }
}
