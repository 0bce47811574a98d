//! The tenant admin's view of the tenant's live sessions (`/.portcullis/admin/sessions`,
//! `GET /.portcullis/api/admin/sessions`) and ending one (form
//! `POST /.portcullis/admin/sessions/end`, `DELETE /.portcullis/api/admin/sessions/{id}`).
//! Ending goes through `session::Sessions`, so caches and open connections are told at
//! once; each end is audited as `session.revoke`, like the CLI's.

use askama::Template;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{console_actor, page_admin, render};
use crate::audit::AuditEntry;
use crate::records::session::is_public_id;
use crate::records::{Revocation, SessionRecord};
use crate::store::StoreError;
use crate::ui::api::ApiError;
use crate::ui::error::PageError;
use crate::ui::readable::Moment;
use crate::ui::{Ctx, Portal, web};

/// Sessions shown at most (newest first); the page says when there are more.
const LIST_CAP: usize = 500;

struct SessionRow {
    id: String,
    subject: String,
    display_name: String,
    device: String,
    ip: String,
    created: Moment,
    last_seen: Moment,
    /// The admin's own session (ended from the account page, not here).
    current: bool,
}

#[derive(Template)]
#[template(path = "admin_sessions.html")]
struct SessionsPage<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    notice: Option<&'static str>,
    sessions: Vec<SessionRow>,
    /// Whether more sessions are live than shown.
    capped: bool,
}

impl Portal {
    /// Live sessions of the host's tenant, newest first, at most `limit`.
    async fn tenant_sessions(&self, ctx: &Ctx<'_>, limit: usize) -> Result<Vec<SessionRecord>, StoreError> {
        self.sessions
            .store(ctx.tier())?
            .list_tenant_sessions(&ctx.entry.tenant.id, ctx.now, limit)
            .await
    }

    /// Ends the live session of the host's tenant whose public id is `id` (a session of
    /// another tenant is not found here), audited; false when there is none.
    async fn end_tenant_session(&self, ctx: &Ctx<'_>, admin: &SessionRecord, id: &str) -> Result<bool, StoreError> {
        if !is_public_id(id) {
            return Ok(false);
        }
        let Some(target) = self
            .tenant_sessions(ctx, usize::MAX)
            .await?
            .into_iter()
            .find(|s| s.public_id() == id)
        else {
            return Ok(false);
        };
        let actor = console_actor(ctx, admin);
        let rev = Revocation {
            at: ctx.now,
            by: actor.name.clone(),
            reason: "ended_by_admin".into(),
        };
        if !self.sessions.revoke(ctx.tier(), &target.id_hash, &rev).await? {
            return Ok(false);
        }
        let entry = AuditEntry {
            target: format!("account:{}:{}", target.tenant, target.subject),
            tenant: Some(target.tenant.clone()),
            tier: ctx.tier().to_string(),
            after: json!({ "sessions_ended": 1, "session": target.public_id() }),
            ..AuditEntry::by(&actor, "session.revoke", ctx.now)
        };
        self.sessions.store(ctx.tier())?.append_audit(&entry).await?;
        Ok(true)
    }

    /// `GET /.portcullis/admin/sessions`.
    pub(in crate::ui) async fn admin_sessions_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/sessions") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let mut list = self
            .tenant_sessions(ctx, LIST_CAP + 1)
            .await
            .map_err(|_| PageError::Unavailable)?;
        let capped = list.len() > LIST_CAP;
        list.truncate(LIST_CAP);
        let notice =
            (web::query_param(req.uri().query(), "done").as_deref() == Some("ended")).then_some("Session ended.");
        Ok(render(&SessionsPage {
            tenant_name: &ctx.entry.tenant.name,
            csrf: &session.csrf_token,
            notice,
            sessions: list
                .iter()
                .map(|s| SessionRow {
                    id: s.public_id(),
                    subject: s.sub().to_string(),
                    display_name: s.display_name.clone(),
                    device: web::device(&s.user_agent),
                    ip: s.ip.clone(),
                    created: Moment::at(s.created_at, ctx.now),
                    last_seen: Moment::at(s.last_seen, ctx.now),
                    current: s.id_hash == session.id_hash,
                })
                .collect(),
            capped,
        }))
    }

    /// `POST /.portcullis/admin/sessions/end` (fields `csrf`, `id`): ends it, then back
    /// to the list (303) with a fixed notice.
    pub(in crate::ui) async fn admin_sessions_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/sessions") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let (_, body, _) = self.session_form(req, ctx, &session).await?;
        let id = web::form_field(&body, "id").unwrap_or_default();
        match self.end_tenant_session(ctx, &session, &id).await {
            Ok(true) => Ok(web::see_other("/.portcullis/admin/sessions?done=ended")),
            Ok(false) => Err(PageError::NoSuchSession),
            Err(e) => {
                tracing::error!(request_id = ctx.request_id, error = %e, "tenant admin's session end failed");
                Err(PageError::Unavailable)
            }
        }
    }

    /// `GET /.portcullis/api/admin/sessions`.
    pub(super) async fn api_admin_sessions(
        &self,
        ctx: &Ctx<'_>,
        admin: &SessionRecord,
    ) -> Result<Response<Bytes>, ApiError> {
        let mut list = self
            .tenant_sessions(ctx, LIST_CAP + 1)
            .await
            .map_err(|_| ApiError::Unavailable)?;
        let capped = list.len() > LIST_CAP;
        list.truncate(LIST_CAP);
        let items: Vec<_> = list
            .iter()
            .map(|s| {
                json!({
                    "id": s.public_id(), "subject": s.sub(), "idp": s.idp, "display_name": s.display_name,
                    "current": s.id_hash == admin.id_hash, "method": s.auth_method,
                    "ip": s.ip, "user_agent": s.user_agent, "device": web::device(&s.user_agent),
                    "created": web::time(s.created_at), "last_seen": web::time(s.last_seen),
                    "expires": web::time(s.idle_expires_at.min(s.absolute_expires_at)),
                })
            })
            .collect();
        Ok(web::json(
            StatusCode::OK,
            &json!({ "sessions": items, "capped": capped }),
        ))
    }

    /// `DELETE /.portcullis/api/admin/sessions/{id}`.
    pub(super) async fn api_admin_end_session(
        &self,
        ctx: &Ctx<'_>,
        admin: &SessionRecord,
        id: &str,
    ) -> Result<Response<Bytes>, ApiError> {
        match self.end_tenant_session(ctx, admin, id).await {
            Ok(true) => Ok(web::json(StatusCode::OK, &json!({ "ended": 1 }))),
            Ok(false) => Err(ApiError::NotFound("No such session.")),
            Err(e) => {
                tracing::error!(request_id = ctx.request_id, error = %e, "tenant admin's session end failed");
                Err(ApiError::Unavailable)
            }
        }
    }
}
