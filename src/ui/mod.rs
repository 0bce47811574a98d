//! The gateway's own pages and JSON APIs under `/.portcullis/` on tenant hosts:
//! sign-in (password, second factor, first-login enrolment), sign-out, and the user's
//! session center (sessions, history, password change). Pages and their JSON twins call
//! the same flow in `auth::login`; this module only speaks HTTP.

mod admin;
mod pages;
mod sso;
pub mod web;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::auth::accounts::{AccountError, Accounts};
use crate::auth::login::{LocalLogin, LoginContext, LoginError, NewSession};
use crate::auth::preauth::{self, PREAUTH_TTL_SECS, PreAuth};
use crate::config::TenantEntry;
use crate::killswitch::{KillSwitch, KillSwitches};
use crate::records::{Revocation, SessionRecord};
use crate::session::Sessions;
use crate::telemetry::{EventOutcome, SecurityEvent};
use web::{BodyError, json_error};

/// Everything the reserved endpoints need.
#[derive(Clone)]
pub struct Portal {
    /// Local sign-in flow.
    pub login: LocalLogin,
    /// Local accounts: password change (and, for the CLI and the demo, creation and MFA
    /// resets).
    pub accounts: Accounts,
    /// Sessions of every tier.
    pub sessions: Arc<Sessions>,
    /// Kill switches: the request path's board and the tenant admin's account switches.
    pub switches: Arc<KillSwitches>,
    /// Tenants' identity providers (discovery, keys, code exchange).
    pub oidc: Arc<crate::auth::oidc_client::OidcClient>,
}

/// The request's context as the proxy resolved it.
pub struct Ctx<'a> {
    /// The policy set serving this request.
    pub config: &'a crate::config::Config,
    /// Tenant and tier of the host.
    pub entry: &'a TenantEntry,
    /// Normalised host (no port).
    pub host: &'a str,
    /// The tenant's canonical `scheme://host[:port]` (see
    /// [`TenantEntry::public_origin`]) for absolute URLs such as redirect URIs; never
    /// the request's `Host`, which the client chooses.
    pub origin: String,
    /// Path below `/.portcullis/`.
    pub rest: &'a str,
    /// Client IP.
    pub ip: String,
    /// The valid session of this tenant, if any.
    pub session: Option<Arc<SessionRecord>>,
    /// The kill switch covering the tenant, if one is on (only the login page is served).
    pub suspended: Option<Arc<KillSwitch>>,
    /// Now (unix seconds).
    pub now: i64,
}

impl Ctx<'_> {
    fn tier(&self) -> &str {
        &self.entry.tier.name
    }

    fn session_cookie(&self) -> String {
        self.entry.tier.session_cookie.clone()
    }

    fn pre_cookie(&self) -> String {
        format!("{}-pre", self.entry.tier.session_cookie)
    }

    fn csrf_cookie(&self) -> String {
        format!("{}-csrf", self.entry.tier.session_cookie)
    }

    fn key(&self) -> &[u8] {
        self.entry.tier.keys.cookie.expose_secret()
    }

    fn login_ctx<'b>(&'b self, user_agent: &'b str) -> LoginContext<'b> {
        let p = &self.entry.tenant.session;
        LoginContext {
            tenant: &self.entry.tenant.id,
            tier: &self.entry.tier.name,
            idle_timeout: p.idle_secs(),
            absolute_timeout: p.absolute_secs(),
            ip: &self.ip,
            user_agent,
            now: self.now,
            auto_trip: &self.entry.tenant.auto_trip,
            sso: self.entry.tenant.sso.as_ref(),
        }
    }
}

/// JSON bodies of the API (unknown fields and duplicate keys are errors).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
    code: String,
}

impl Portal {
    /// Serves one reserved request. Returns None for paths it does not own (404).
    pub async fn handle(&self, req: Request<Incoming>, ctx: Ctx<'_>) -> Option<Response<Bytes>> {
        let method = req.method().clone();
        let rest = ctx.rest.to_string();
        let resp = match (method, rest.as_str()) {
            (Method::GET, "style.css") => web::respond(StatusCode::OK, "text/css; charset=utf-8", pages::STYLE),
            (Method::GET | Method::HEAD, "login") => self.login_page(&req, &ctx),
            (Method::GET, "login/sso") => self.sso_start(&req, &ctx).await,
            (Method::GET, "callback") => self.sso_callback(&req, &ctx).await,
            (Method::POST, "backchannel-logout") => self.backchannel_logout(req, &ctx).await,
            (Method::POST, "login") => self.login_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "mfa") => self.mfa_page(&req, &ctx, None),
            (Method::POST, "mfa") => self.mfa_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "enrol") => self.enrol_page(&req, &ctx, None).await,
            (Method::POST, "enrol") => self.enrol_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "logout") => self.logout_page(&ctx),
            (Method::POST, "logout") => self.logout_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "account") => self.account_page(&req, &ctx, None).await,
            (Method::GET | Method::HEAD, "admin") => self.admin_page(&ctx, None).await,
            (Method::POST, "admin/breaker") => self.admin_form(req, &ctx).await,
            (Method::POST, p) if p.starts_with("account/") => {
                self.account_form(req, &ctx, &p["account/".len()..]).await
            }
            (m, p) if p.starts_with("api/") => self.api(req, &ctx, m, &p["api/".len()..]).await,
            _ => return None,
        };
        Some(resp)
    }

    // ---- pages -------------------------------------------------------------------

    fn login_page(&self, req: &Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let rd = web::safe_redirect(web::query_param(req.uri().query(), "rd").as_deref());
        if let Some(ks) = &ctx.suspended {
            return pages::message(ctx.entry, StatusCode::OK, "Access suspended", &ks.message, None);
        }
        if ctx.session.is_some() {
            return web::see_other(&rd);
        }
        // SSO enforced: straight to the IdP, unless a break-glass admin asks for the form.
        if ctx.entry.tenant.sso.as_ref().is_some_and(|s| s.enforce)
            && web::query_param(req.uri().query(), "local").as_deref() != Some("1")
        {
            return web::see_other(&format!(
                "/.portcullis/login/sso?rd={}",
                percent_encoding::utf8_percent_encode(&rd, percent_encoding::NON_ALPHANUMERIC)
            ));
        }
        let (csrf, set) = self.csrf_for(req, ctx);
        let mut resp = pages::login(ctx.entry, &csrf, &rd, None, StatusCode::OK);
        if let Some(c) = set {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
        resp
    }

    async fn login_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Ok((ua, body, csrf)) = self.form(req, ctx).await else {
            return pages::bad_form(ctx.entry);
        };
        let rd = web::safe_redirect(web::form_field(&body, "rd").as_deref());
        let username = web::form_field(&body, "username").unwrap_or_default();
        let password = web::form_field(&body, "password").unwrap_or_default();
        match self
            .login
            .password(&ctx.login_ctx(&ua), &username, &password, &rd)
            .await
        {
            Ok(pre) => self.to_second_factor(ctx, &pre),
            Err(e) => {
                let (status, message) = login_error_status(&e);
                let mut resp = pages::login(ctx.entry, &csrf, &rd, Some(&message), status);
                retry_after(&mut resp, &e);
                resp
            }
        }
    }

    fn mfa_page(&self, req: &Request<Incoming>, ctx: &Ctx<'_>, error: Option<&str>) -> Response<Bytes> {
        if self.pending(req.headers(), ctx, "mfa").is_none() {
            return web::see_other("/.portcullis/login");
        }
        let (csrf, set) = self.csrf_for(req, ctx);
        let mut resp = pages::mfa(ctx.entry, &csrf, error, StatusCode::OK);
        if let Some(c) = set {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
        resp
    }

    async fn mfa_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(pre) = self.pending(req.headers(), ctx, "mfa") else {
            return web::see_other("/.portcullis/login");
        };
        let Ok((ua, body, csrf)) = self.form(req, ctx).await else {
            return pages::bad_form(ctx.entry);
        };
        let code = web::form_field(&body, "code").unwrap_or_default();
        match self.login.second_factor(&ctx.login_ctx(&ua), &pre, &code).await {
            Ok(session) => self.signed_in(ctx, web::see_other(&pre.rd), &session),
            Err(e) => {
                let (status, message) = login_error_status(&e);
                let mut resp = pages::mfa(ctx.entry, &csrf, Some(&message), status);
                retry_after(&mut resp, &e);
                resp
            }
        }
    }

    async fn enrol_page(&self, req: &Request<Incoming>, ctx: &Ctx<'_>, error: Option<&str>) -> Response<Bytes> {
        let Some(pre) = self.pending(req.headers(), ctx, "enrol") else {
            return web::see_other("/.portcullis/login");
        };
        match self
            .login
            .enrol_start(&ctx.login_ctx(""), &pre, &ctx.entry.tenant.name)
            .await
        {
            Ok(enrolment) => {
                let (csrf, set) = self.csrf_for(req, ctx);
                let mut resp = pages::enrol(ctx.entry, &csrf, &enrolment, error);
                if let Some(c) = set {
                    resp.headers_mut().append(http::header::SET_COOKIE, c);
                }
                resp
            }
            Err(e) => {
                let (status, message) = login_error_status(&e);
                pages::message(
                    ctx.entry,
                    status,
                    "Sign-in",
                    &message,
                    Some(("/.portcullis/login", "Start again")),
                )
            }
        }
    }

    async fn enrol_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(pre) = self.pending(req.headers(), ctx, "enrol") else {
            return web::see_other("/.portcullis/login");
        };
        let Ok((ua, body, csrf)) = self.form(req, ctx).await else {
            return pages::bad_form(ctx.entry);
        };
        let code = web::form_field(&body, "code").unwrap_or_default();
        match self.login.enrol_confirm(&ctx.login_ctx(&ua), &pre, &code).await {
            Ok((session, codes)) => self.signed_in(ctx, pages::codes(ctx.entry, &codes, &pre.rd), &session),
            Err(e) => {
                let (status, message) = login_error_status(&e);
                match self
                    .login
                    .enrol_start(&ctx.login_ctx(""), &pre, &ctx.entry.tenant.name)
                    .await
                {
                    Ok(enrolment) => {
                        let mut resp = pages::enrol(ctx.entry, &csrf, &enrolment, Some(&message));
                        *resp.status_mut() = status;
                        retry_after(&mut resp, &e);
                        resp
                    }
                    Err(_) => web::see_other("/.portcullis/login"),
                }
            }
        }
    }

    fn logout_page(&self, ctx: &Ctx<'_>) -> Response<Bytes> {
        match &ctx.session {
            Some(s) => pages::logout(ctx.entry, &s.csrf_token),
            None => web::see_other("/.portcullis/login"),
        }
    }

    async fn logout_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return web::see_other("/.portcullis/login");
        };
        let Ok((_, body, _)) = self.session_form(req, ctx, &session).await else {
            return pages::bad_form(ctx.entry);
        };
        let _ = body;
        // RP-initiated logout: an SSO user is signed out at the IdP too, when it can.
        let target = match session.auth_method.as_str() {
            "oidc" => self.sso_logout_target(ctx).await,
            _ => None,
        };
        let next = target.unwrap_or_else(|| "/.portcullis/login".to_string());
        self.end_current(ctx, &session, "logout", web::see_other(&next)).await
    }

    async fn account_page(&self, req: &Request<Incoming>, ctx: &Ctx<'_>, notice: Option<&str>) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return web::see_other("/.portcullis/login?rd=%2F.portcullis%2Faccount");
        };
        let before = web::query_param(req.uri().query(), "before").and_then(|b| b.parse::<i64>().ok());
        let Ok(store) = self.sessions.store(ctx.tier()) else {
            return pages::unavailable(ctx.entry);
        };
        let sessions = store
            .list_user_sessions(&session.tenant, &session.subject, ctx.now)
            .await;
        let history = store.login_history(&session.tenant, &session.subject, 20, before).await;
        match (sessions, history) {
            (Ok(sessions), Ok(history)) => pages::account(ctx.entry, &session, &sessions, &history, notice),
            _ => pages::unavailable(ctx.entry),
        }
    }

    async fn account_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>, action: &str) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return web::see_other("/.portcullis/login");
        };
        let Ok((ua, body, _)) = self.session_form(req, ctx, &session).await else {
            return pages::bad_form(ctx.entry);
        };
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: "ended_by_user".into(),
        };
        if action == "sessions/end-others" {
            return match self
                .sessions
                .revoke_user(
                    ctx.tier(),
                    &session.tenant,
                    &session.subject,
                    Some(&session.id_hash),
                    &rev,
                )
                .await
            {
                Ok(_) => web::see_other("/.portcullis/account"),
                Err(_) => pages::unavailable(ctx.entry),
            };
        }
        if let Some(id) = action.strip_prefix("sessions/").and_then(|p| p.strip_suffix("/end")) {
            return match self.end_session_by_id(ctx, &session, id, &rev).await {
                Ok(true) => web::see_other("/.portcullis/account"),
                Ok(false) => pages::message(
                    ctx.entry,
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "No such session.",
                    Some(("/.portcullis/account", "Back")),
                ),
                Err(_) => pages::unavailable(ctx.entry),
            };
        }
        if action == "password" {
            let current = web::form_field(&body, "current_password").unwrap_or_default();
            let new = web::form_field(&body, "new_password").unwrap_or_default();
            let code = web::form_field(&body, "code").unwrap_or_default();
            return match self
                .accounts
                .change_password(&ctx.login_ctx(&ua), &session, &current, &new, &code)
                .await
            {
                Ok(()) => {
                    let mut resp = pages::message(
                        ctx.entry,
                        StatusCode::OK,
                        "Password changed",
                        "Your password was changed and every session ended. Sign in again.",
                        Some(("/.portcullis/login", "Sign in")),
                    );
                    resp.headers_mut().append(
                        http::header::SET_COOKIE,
                        web::set_cookie(&ctx.session_cookie(), "", None),
                    );
                    resp
                }
                Err(e) => {
                    let (status, message) = password_refusal(&e);
                    pages::message(
                        ctx.entry,
                        status,
                        "Password not changed",
                        &message,
                        Some(("/.portcullis/account", "Back")),
                    )
                }
            };
        }
        pages::message(ctx.entry, StatusCode::NOT_FOUND, "Not found", "Nothing here.", None)
    }

    // ---- JSON API ----------------------------------------------------------------

    async fn api(&self, req: Request<Incoming>, ctx: &Ctx<'_>, method: Method, path: &str) -> Response<Bytes> {
        let state_changing = !matches!(method, Method::GET | Method::HEAD);
        if state_changing && !web::origin_allowed(req.headers(), ctx.host) {
            return json_error(
                StatusCode::FORBIDDEN,
                "cross_origin",
                "Cross-origin requests are not allowed.",
            );
        }
        match (method, path) {
            (Method::POST, "login") => self.api_login(req, ctx).await,
            (Method::POST, "mfa") => self.api_mfa(req, ctx).await,
            (Method::GET, "enrol") => self.api_enrol_start(req, ctx).await,
            (Method::POST, "enrol") => self.api_enrol(req, ctx).await,
            (Method::POST, "logout") => match ctx.session.clone() {
                Some(s) => {
                    self.end_current(
                        ctx,
                        &s,
                        "logout",
                        web::json(StatusCode::OK, &json!({"status": "signed_out"})),
                    )
                    .await
                }
                None => unauthenticated(),
            },
            (Method::GET, "whoami") => match &ctx.session {
                Some(s) => web::json(
                    StatusCode::OK,
                    &json!({
                        "subject": s.sub(), "idp": s.idp, "tenant": s.tenant, "tier": s.tier, "roles": s.roles,
                        "amr": s.amr, "expires": web::time(s.idle_expires_at.min(s.absolute_expires_at)),
                        "display_name": s.display_name,
                    }),
                ),
                None => unauthenticated(),
            },
            (Method::GET, "sessions") => self.api_sessions(ctx).await,
            (Method::DELETE, "sessions") => self.api_end_others(req, ctx).await,
            (Method::DELETE, p) if p.starts_with("sessions/") => self.api_end_one(ctx, &p["sessions/".len()..]).await,
            (Method::GET, "history") => self.api_history(req, ctx).await,
            (Method::POST, "password") => self.api_password(req, ctx).await,
            (m, p) if p.starts_with("admin/") => self.api_admin(req, ctx, m, &p["admin/".len()..]).await,
            _ => json_error(StatusCode::NOT_FOUND, "not_found", "No such API."),
        }
    }

    async fn api_login(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let rd = web::safe_redirect(web::query_param(req.uri().query(), "rd").as_deref());
        let ua = user_agent(req.headers());
        let body: LoginBody = match json_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        match self
            .login
            .password(&ctx.login_ctx(&ua), &body.username, &body.password, &rd)
            .await
        {
            Ok(pre) => {
                let mut resp = web::json(StatusCode::OK, &json!({ "next": pre.stage }));
                resp.headers_mut()
                    .append(http::header::SET_COOKIE, self.pre_cookie(ctx, &pre));
                resp
            }
            Err(e) => api_login_error(&e),
        }
    }

    async fn api_mfa(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let pre = match self.pending_api(req.headers(), ctx, "mfa") {
            Ok(pre) => pre,
            Err(resp) => return resp,
        };
        let ua = user_agent(req.headers());
        let body: CodeBody = match json_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        match self.login.second_factor(&ctx.login_ctx(&ua), &pre, &body.code).await {
            Ok(session) => {
                let resp = web::json(StatusCode::OK, &json!({ "status": "signed_in", "redirect": pre.rd }));
                self.signed_in(ctx, resp, &session)
            }
            Err(e) => api_login_error(&e),
        }
    }

    async fn api_enrol_start(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let pre = match self.pending_api(req.headers(), ctx, "enrol") {
            Ok(pre) => pre,
            Err(resp) => return resp,
        };
        match self
            .login
            .enrol_start(&ctx.login_ctx(""), &pre, &ctx.entry.tenant.name)
            .await
        {
            Ok(e) => web::json(StatusCode::OK, &json!({ "secret": e.secret, "otpauth_uri": e.uri })),
            Err(e) => api_login_error(&e),
        }
    }

    async fn api_enrol(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let pre = match self.pending_api(req.headers(), ctx, "enrol") {
            Ok(pre) => pre,
            Err(resp) => return resp,
        };
        let ua = user_agent(req.headers());
        let body: CodeBody = match json_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        match self.login.enrol_confirm(&ctx.login_ctx(&ua), &pre, &body.code).await {
            Ok((session, codes)) => {
                let resp = web::json(
                    StatusCode::OK,
                    &json!({ "status": "signed_in", "redirect": pre.rd, "recovery_codes": codes }),
                );
                self.signed_in(ctx, resp, &session)
            }
            Err(e) => api_login_error(&e),
        }
    }

    async fn api_sessions(&self, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(session) = &ctx.session else {
            return unauthenticated();
        };
        let Ok(store) = self.sessions.store(ctx.tier()) else {
            return api_unavailable();
        };
        match store
            .list_user_sessions(&session.tenant, &session.subject, ctx.now)
            .await
        {
            Ok(list) => {
                let items: Vec<_> = list
                    .iter()
                    .map(|s| {
                        json!({
                            "id": s.public_id(), "current": s.id_hash == session.id_hash,
                            "created": web::time(s.created_at), "last_seen": web::time(s.last_seen),
                            "ip": s.ip, "user_agent": s.user_agent, "device": web::device(&s.user_agent),
                            "method": s.auth_method, "expires": web::time(s.idle_expires_at.min(s.absolute_expires_at)),
                        })
                    })
                    .collect();
                web::json(StatusCode::OK, &serde_json::Value::Array(items))
            }
            Err(_) => api_unavailable(),
        }
    }

    async fn api_end_others(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return unauthenticated();
        };
        if web::query_param(req.uri().query(), "others").as_deref() != Some("true") {
            return json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Use ?others=true to end every other session.",
            );
        }
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: "ended_by_user".into(),
        };
        match self
            .sessions
            .revoke_user(
                ctx.tier(),
                &session.tenant,
                &session.subject,
                Some(&session.id_hash),
                &rev,
            )
            .await
        {
            Ok(ids) => web::json(StatusCode::OK, &json!({ "ended": ids.len() })),
            Err(_) => api_unavailable(),
        }
    }

    async fn api_end_one(&self, ctx: &Ctx<'_>, id: &str) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return unauthenticated();
        };
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: "ended_by_user".into(),
        };
        let current = id == session.public_id();
        match self.end_session_by_id(ctx, &session, id, &rev).await {
            Ok(true) => {
                let mut resp = web::json(StatusCode::OK, &json!({ "ended": 1 }));
                if current {
                    resp.headers_mut().append(
                        http::header::SET_COOKIE,
                        web::set_cookie(&ctx.session_cookie(), "", None),
                    );
                }
                resp
            }
            Ok(false) => json_error(StatusCode::NOT_FOUND, "not_found", "No such session."),
            Err(_) => api_unavailable(),
        }
    }

    async fn api_history(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(session) = &ctx.session else {
            return unauthenticated();
        };
        let before = web::query_param(req.uri().query(), "before").and_then(|b| b.parse::<i64>().ok());
        let limit = web::query_param(req.uri().query(), "limit")
            .and_then(|b| b.parse::<usize>().ok())
            .unwrap_or(50)
            .clamp(1, 200);
        let Ok(store) = self.sessions.store(ctx.tier()) else {
            return api_unavailable();
        };
        match store
            .login_history(&session.tenant, &session.subject, limit, before)
            .await
        {
            Ok(events) => {
                let items: Vec<_> = events
                    .iter()
                    .map(|e| {
                        json!({
                            "seq": e.seq, "time": web::time(e.time), "ip": e.ip, "user_agent": e.user_agent,
                            "method": e.method, "outcome": e.outcome, "reason": e.reason,
                        })
                    })
                    .collect();
                web::json(StatusCode::OK, &serde_json::Value::Array(items))
            }
            Err(_) => api_unavailable(),
        }
    }

    async fn api_password(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return unauthenticated();
        };
        let ua = user_agent(req.headers());
        let body: PasswordBody = match json_body(req).await {
            Ok(b) => b,
            Err(resp) => return resp,
        };
        match self
            .accounts
            .change_password(
                &ctx.login_ctx(&ua),
                &session,
                &body.current_password,
                &body.new_password,
                &body.code,
            )
            .await
        {
            Ok(()) => {
                let mut resp = web::json(
                    StatusCode::OK,
                    &json!({ "status": "password_changed", "next": "login" }),
                );
                resp.headers_mut().append(
                    http::header::SET_COOKIE,
                    web::set_cookie(&ctx.session_cookie(), "", None),
                );
                resp
            }
            Err(e) => {
                let (status, message) = password_refusal(&e);
                json_error(status, "password_not_changed", &message)
            }
        }
    }

    // ---- shared steps --------------------------------------------------------------

    async fn end_session_by_id(
        &self,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
        id: &str,
        rev: &Revocation,
    ) -> Result<bool, ()> {
        let store = self.sessions.store(ctx.tier()).map_err(|_| ())?;
        let Some(target) = store
            .find_user_session_by_public_id(&session.tenant, &session.subject, id, ctx.now)
            .await
            .map_err(|_| ())?
        else {
            return Ok(false);
        };
        self.sessions
            .revoke(ctx.tier(), &target.id_hash, rev)
            .await
            .map_err(|_| ())
    }

    async fn end_current(
        &self,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
        reason: &str,
        mut resp: Response<Bytes>,
    ) -> Response<Bytes> {
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: reason.into(),
        };
        if self.sessions.revoke(ctx.tier(), &session.id_hash, &rev).await.is_err() {
            return pages::unavailable(ctx.entry);
        }
        SecurityEvent {
            user: Some(&session.subject),
            tenant: Some(&session.tenant),
            tier: Some(&session.tier),
            ..SecurityEvent::new("logout", EventOutcome::Success)
        }
        .info("signed out");
        resp.headers_mut().append(
            http::header::SET_COOKIE,
            web::set_cookie(&ctx.session_cookie(), "", None),
        );
        resp
    }

    /// Sets the new session cookie and clears the pre-MFA cookie (new token at login: no fixation).
    fn signed_in(&self, ctx: &Ctx<'_>, mut resp: Response<Bytes>, session: &NewSession) -> Response<Bytes> {
        let max_age = session.record.absolute_expires_at - ctx.now;
        let h = resp.headers_mut();
        h.append(
            http::header::SET_COOKIE,
            web::set_cookie(&ctx.session_cookie(), &session.token.cookie_value, Some(max_age)),
        );
        h.append(http::header::SET_COOKIE, web::set_cookie(&ctx.pre_cookie(), "", None));
        resp
    }

    /// The redirect of a first factor passed to the page of the second (the code, or
    /// enrolment when the account has none yet), carrying the pending login.
    fn to_second_factor(&self, ctx: &Ctx<'_>, pre: &PreAuth) -> Response<Bytes> {
        let next = if pre.stage == "mfa" {
            "/.portcullis/mfa"
        } else {
            "/.portcullis/enrol"
        };
        let mut resp = web::see_other(next);
        resp.headers_mut()
            .append(http::header::SET_COOKIE, self.pre_cookie(ctx, pre));
        resp
    }

    fn pre_cookie(&self, ctx: &Ctx<'_>, pre: &PreAuth) -> http::HeaderValue {
        web::set_cookie(
            &ctx.pre_cookie(),
            &preauth::seal(pre, ctx.key()),
            Some(PREAUTH_TTL_SECS),
        )
    }

    /// The pending login of an API call at `stage`, or the 401 that says to start over.
    #[allow(clippy::result_large_err)] // the error is the final response, built once on a cold path
    fn pending_api(&self, headers: &http::HeaderMap, ctx: &Ctx<'_>, stage: &str) -> Result<PreAuth, Response<Bytes>> {
        self.pending(headers, ctx, stage).ok_or_else(|| {
            json_error(
                StatusCode::UNAUTHORIZED,
                "no_pending_login",
                "Sign in with your password first.",
            )
        })
    }

    fn pending(&self, headers: &http::HeaderMap, ctx: &Ctx<'_>, stage: &str) -> Option<PreAuth> {
        let value = web::single_cookie(headers, &ctx.pre_cookie())?;
        preauth::open(value, ctx.key(), &ctx.entry.tenant.id, ctx.tier(), ctx.now).filter(|p| p.stage == stage)
    }

    /// The CSRF token of anonymous forms (double-submit cookie), and the Set-Cookie when new.
    fn csrf_for(&self, req: &Request<Incoming>, ctx: &Ctx<'_>) -> (String, Option<http::HeaderValue>) {
        match web::single_cookie(req.headers(), &ctx.csrf_cookie()) {
            Some(v) if v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()) => (v.to_string(), None),
            _ => {
                let token = hex::encode(rand::random::<[u8; 16]>());
                let set = web::set_cookie(&ctx.csrf_cookie(), &token, Some(3600));
                (token, Some(set))
            }
        }
    }

    /// Reads an anonymous form: urlencoded, same origin, CSRF field equal to the cookie.
    async fn form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<(String, Bytes, String), ()> {
        let (parts, body) = req.into_parts();
        if !web::origin_allowed(&parts.headers, ctx.host)
            || !web::content_type_is(&parts.headers, "application/x-www-form-urlencoded")
        {
            return Err(());
        }
        let body = web::read_body(&parts.headers, body).await.map_err(|_| ())?;
        let cookie = web::single_cookie(&parts.headers, &ctx.csrf_cookie()).unwrap_or_default();
        let field = web::form_field(&body, "csrf").unwrap_or_default();
        if !web::tokens_match(cookie, &field) {
            return Err(());
        }
        Ok((user_agent(&parts.headers), body, cookie.to_string()))
    }

    /// Reads a form of a signed-in user: urlencoded, same origin, CSRF field equal to the session's token.
    async fn session_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
    ) -> Result<(String, Bytes, String), ()> {
        let (parts, body) = req.into_parts();
        if !web::origin_allowed(&parts.headers, ctx.host)
            || !web::content_type_is(&parts.headers, "application/x-www-form-urlencoded")
        {
            return Err(());
        }
        let body = web::read_body(&parts.headers, body).await.map_err(|_| ())?;
        let field = web::form_field(&body, "csrf").unwrap_or_default();
        if !web::tokens_match(&session.csrf_token, &field) {
            return Err(());
        }
        Ok((user_agent(&parts.headers), body, field))
    }
}

fn user_agent(headers: &http::HeaderMap) -> String {
    headers
        .get(http::header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .chars()
        .take(256)
        .collect()
}

/// Reads a JSON API body: `application/json`, at most 64 KiB, known fields only.
async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, Response<Bytes>> {
    let (parts, body) = req.into_parts();
    if !web::content_type_is(&parts.headers, "application/json") {
        return Err(json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "Send Content-Type: application/json.",
        ));
    }
    let bytes = match web::read_body(&parts.headers, body).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return Err(json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "Request body too large.",
            ));
        }
        Err(BodyError::Invalid) => {
            return Err(json_error(
                StatusCode::BAD_REQUEST,
                "bad_request",
                "Unreadable request body.",
            ));
        }
    };
    serde_json::from_slice(&bytes).map_err(|_| {
        json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "The JSON body is malformed or has unexpected fields.",
        )
    })
}

fn login_error_status(e: &LoginError) -> (StatusCode, String) {
    match e {
        LoginError::BadCredentials => (StatusCode::UNAUTHORIZED, "Wrong user name or password.".into()),
        LoginError::BadCode => (
            StatusCode::UNAUTHORIZED,
            "That code is not valid. Codes work once; wait for the next one.".into(),
        ),
        LoginError::Throttled(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Try again in {secs} s."),
        ),
        LoginError::NoPendingLogin => (StatusCode::UNAUTHORIZED, "Your sign-in expired. Start again.".into()),
        LoginError::Busy => (
            StatusCode::SERVICE_UNAVAILABLE,
            "The service is busy. Try again in a moment.".into(),
        ),
        LoginError::Store(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Sign-in is unavailable right now. Try again shortly.".into(),
        ),
        LoginError::Suspended(message) => (StatusCode::LOCKED, message.clone()),
        LoginError::SsoRequired => (
            StatusCode::FORBIDDEN,
            "This organisation signs in through its identity provider. Use \"Sign in with SSO\".".into(),
        ),
        LoginError::IdpMfaRequired => (
            StatusCode::FORBIDDEN,
            "Your identity provider did not confirm a second factor, which this organisation requires. Sign in again with multi-factor authentication at your identity provider.".into(),
        ),
    }
}

/// Status and message of a refused password change (the page and the API say the same).
fn password_refusal(e: &AccountError) -> (StatusCode, String) {
    match e {
        AccountError::SsoAccount => (
            StatusCode::BAD_REQUEST,
            "This account signs in through single sign-on.".into(),
        ),
        AccountError::Policy(e) => (StatusCode::BAD_REQUEST, e.to_string()),
        AccountError::Throttled(secs) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many attempts. Try again in {secs} s."),
        ),
        AccountError::WrongFactors => (
            StatusCode::FORBIDDEN,
            "The current password or the code is wrong.".to_string(),
        ),
        // The signed-in account vanished, hashing is saturated, or the store failed.
        AccountError::Name(_) | AccountError::NotFound | AccountError::Hash(_) | AccountError::Store(_) => {
            (StatusCode::SERVICE_UNAVAILABLE, "Try again shortly.".to_string())
        }
    }
}

fn retry_after(resp: &mut Response<Bytes>, e: &LoginError) {
    let secs = match e {
        LoginError::Throttled(secs) => *secs,
        LoginError::Busy => 1,
        _ => return,
    };
    if let Ok(v) = http::HeaderValue::from_str(&secs.to_string()) {
        resp.headers_mut().insert(http::header::RETRY_AFTER, v);
    }
}

fn api_login_error(e: &LoginError) -> Response<Bytes> {
    let (status, message) = login_error_status(e);
    let code = match e {
        LoginError::BadCredentials => "invalid_credentials",
        LoginError::BadCode => "invalid_code",
        LoginError::Throttled(_) => "throttled",
        LoginError::NoPendingLogin => "no_pending_login",
        LoginError::Busy | LoginError::Store(_) => "unavailable",
        LoginError::Suspended(_) => "suspended",
        LoginError::SsoRequired => "sso_required",
        LoginError::IdpMfaRequired => "idp_mfa_required",
    };
    let mut resp = json_error(status, code, &message);
    retry_after(&mut resp, e);
    resp
}

fn unauthenticated() -> Response<Bytes> {
    json_error(StatusCode::UNAUTHORIZED, "unauthenticated", "Sign-in required.")
}

fn api_unavailable() -> Response<Bytes> {
    json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Try again shortly.")
}
