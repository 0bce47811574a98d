//! The gateway's own pages and JSON APIs under `/.portcullis/` on tenant hosts:
//! sign-in (password, second factor, first-login enrolment), sign-out, and the user's
//! session center (sessions, history, password change). Pages and their JSON twins call
//! the same flow in `auth::login`; this module only speaks HTTP.
//!
//! Page handlers answer `Result<_, PageError>` and JSON API handlers `Result<_, ApiError>`;
//! [`Portal::handle`] turns each refusal into its response in one place per edge
//! (`error.rs` for the pages, `api/error.rs` for the JSON API), with the request id.

mod admin;
mod api;
mod error;
mod pages;
mod sso;
pub mod web;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use crate::auth::accounts::Accounts;
use crate::auth::login::{LocalLogin, LoginContext, NewSession};
use crate::auth::preauth::{self, PREAUTH_TTL_SECS, PreAuth};
use crate::config::TenantEntry;
use crate::killswitch::{KillSwitch, KillSwitches};
use crate::records::{Revocation, SessionRecord};
use crate::session::Sessions;
use crate::telemetry::{EventOutcome, SecurityEvent};
use api::ApiError;
use error::PageError;

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
    /// The request's id (as in the access log); every refusal carries it (`x-request-id`).
    pub request_id: &'a str,
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
        let page = match (method, rest.as_str()) {
            (m, p) if p.starts_with("api/") => {
                let answer = self.api(req, &ctx, m, &p["api/".len()..]).await;
                return Some(answer.unwrap_or_else(|e| e.into_response(ctx.request_id)));
            }
            (Method::POST, "backchannel-logout") => {
                let answer = self.backchannel_logout(req, &ctx).await;
                return Some(answer.unwrap_or_else(|e| e.into_response(ctx.request_id)));
            }
            (Method::GET, "style.css") => Ok(web::respond(StatusCode::OK, "text/css; charset=utf-8", pages::STYLE)),
            (Method::GET | Method::HEAD, "login") => Ok(self.login_page(&req, &ctx)),
            (Method::GET, "login/sso") => self.sso_start(&req, &ctx).await,
            (Method::GET, "callback") => self.sso_callback(&req, &ctx).await,
            (Method::POST, "login") => self.login_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "mfa") => Ok(self.mfa_page(&req, &ctx, None)),
            (Method::POST, "mfa") => self.mfa_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "enrol") => self.enrol_page(&req, &ctx, None).await,
            (Method::POST, "enrol") => self.enrol_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "logout") => Ok(self.logout_page(&ctx)),
            (Method::POST, "logout") => self.logout_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "account") => self.account_page(&req, &ctx, None).await,
            (Method::GET | Method::HEAD, "admin") => self.admin_page(&ctx, None).await,
            (Method::POST, "admin/breaker") => self.admin_form(req, &ctx).await,
            (Method::POST, p) if p.starts_with("account/") => {
                self.account_form(req, &ctx, &p["account/".len()..]).await
            }
            _ => return None,
        };
        Some(page.unwrap_or_else(|e| e.into_response(ctx.entry, ctx.request_id)))
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
        let mut resp = pages::login(ctx.entry, &csrf, &rd, None);
        if let Some(c) = set {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
        resp
    }

    async fn login_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let (ua, body, csrf) = self.form(req, ctx).await?;
        let rd = web::safe_redirect(web::form_field(&body, "rd").as_deref());
        let username = web::form_field(&body, "username").unwrap_or_default();
        let password = web::form_field(&body, "password").unwrap_or_default();
        match self
            .login
            .password(&ctx.login_ctx(&ua), &username, &password, &rd)
            .await
        {
            Ok(pre) => Ok(self.to_second_factor(ctx, &pre)),
            Err(e) => {
                let e = PageError::SignIn(e);
                Ok(e.form(pages::login(ctx.entry, &csrf, &rd, Some(&e.message())), ctx.request_id))
            }
        }
    }

    fn mfa_page(&self, req: &Request<Incoming>, ctx: &Ctx<'_>, error: Option<&str>) -> Response<Bytes> {
        if self.pending(req.headers(), ctx, "mfa").is_none() {
            return web::see_other("/.portcullis/login");
        }
        let (csrf, set) = self.csrf_for(req, ctx);
        let mut resp = pages::mfa(ctx.entry, &csrf, error);
        if let Some(c) = set {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
        resp
    }

    async fn mfa_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let Some(pre) = self.pending(req.headers(), ctx, "mfa") else {
            return Ok(web::see_other("/.portcullis/login"));
        };
        let (ua, body, csrf) = self.form(req, ctx).await?;
        let code = web::form_field(&body, "code").unwrap_or_default();
        match self.login.second_factor(&ctx.login_ctx(&ua), &pre, &code).await {
            Ok(session) => Ok(self.signed_in(ctx, web::see_other(&pre.rd), &session)),
            Err(e) => {
                let e = PageError::SignIn(e);
                Ok(e.form(pages::mfa(ctx.entry, &csrf, Some(&e.message())), ctx.request_id))
            }
        }
    }

    async fn enrol_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
        error: Option<&str>,
    ) -> Result<Response<Bytes>, PageError> {
        let Some(pre) = self.pending(req.headers(), ctx, "enrol") else {
            return Ok(web::see_other("/.portcullis/login"));
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
                Ok(resp)
            }
            Err(e) => Err(PageError::SignIn(e)),
        }
    }

    async fn enrol_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let Some(pre) = self.pending(req.headers(), ctx, "enrol") else {
            return Ok(web::see_other("/.portcullis/login"));
        };
        let (ua, body, csrf) = self.form(req, ctx).await?;
        let code = web::form_field(&body, "code").unwrap_or_default();
        match self.login.enrol_confirm(&ctx.login_ctx(&ua), &pre, &code).await {
            Ok((session, codes)) => Ok(self.signed_in(ctx, pages::codes(ctx.entry, &codes, &pre.rd), &session)),
            Err(e) => {
                let e = PageError::SignIn(e);
                match self
                    .login
                    .enrol_start(&ctx.login_ctx(""), &pre, &ctx.entry.tenant.name)
                    .await
                {
                    Ok(enrolment) => Ok(e.form(
                        pages::enrol(ctx.entry, &csrf, &enrolment, Some(&e.message())),
                        ctx.request_id,
                    )),
                    Err(_) => Ok(web::see_other("/.portcullis/login")),
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

    async fn logout_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login"));
        };
        self.session_form(req, ctx, &session).await?;
        // RP-initiated logout: an SSO user is signed out at the IdP too, when it can.
        let target = match session.auth_method.as_str() {
            "oidc" => self.sso_logout_target(ctx).await,
            _ => None,
        };
        let next = target.unwrap_or_else(|| "/.portcullis/login".to_string());
        self.end_current(ctx, &session, "logout", web::see_other(&next))
            .await
            .map_err(|()| PageError::Unavailable)
    }

    async fn account_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
        notice: Option<&str>,
    ) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login?rd=%2F.portcullis%2Faccount"));
        };
        let before = web::query_param(req.uri().query(), "before").and_then(|b| b.parse::<i64>().ok());
        let store = self.sessions.store(ctx.tier()).map_err(|_| PageError::Unavailable)?;
        let sessions = store
            .list_user_sessions(&session.tenant, &session.subject, ctx.now)
            .await;
        let history = store.login_history(&session.tenant, &session.subject, 20, before).await;
        match (sessions, history) {
            (Ok(sessions), Ok(history)) => Ok(pages::account(ctx.entry, &session, &sessions, &history, notice)),
            _ => Err(PageError::Unavailable),
        }
    }

    async fn account_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        action: &str,
    ) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login"));
        };
        let (ua, body, _) = self.session_form(req, ctx, &session).await?;
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: "ended_by_user".into(),
        };
        if action == "sessions/end-others" {
            self.sessions
                .revoke_user(
                    ctx.tier(),
                    &session.tenant,
                    &session.subject,
                    Some(&session.id_hash),
                    &rev,
                )
                .await
                .map_err(|_| PageError::Unavailable)?;
            return Ok(web::see_other("/.portcullis/account"));
        }
        if let Some(id) = action.strip_prefix("sessions/").and_then(|p| p.strip_suffix("/end")) {
            return match self.end_session_by_id(ctx, &session, id, &rev).await {
                Ok(true) => Ok(web::see_other("/.portcullis/account")),
                Ok(false) => Err(PageError::NoSuchSession),
                Err(_) => Err(PageError::Unavailable),
            };
        }
        if action == "password" {
            let current = web::form_field(&body, "current_password").unwrap_or_default();
            let new = web::form_field(&body, "new_password").unwrap_or_default();
            let code = web::form_field(&body, "code").unwrap_or_default();
            self.accounts
                .change_password(&ctx.login_ctx(&ua), &session, &current, &new, &code)
                .await
                .map_err(PageError::Password)?;
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
            return Ok(resp);
        }
        Err(PageError::NotFound)
    }

    // ---- JSON API ----------------------------------------------------------------

    async fn api(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        method: Method,
        path: &str,
    ) -> Result<Response<Bytes>, ApiError> {
        let state_changing = !matches!(method, Method::GET | Method::HEAD);
        if state_changing && !web::origin_allowed(req.headers(), ctx.host) {
            return Err(ApiError::CrossOrigin);
        }
        match (method, path) {
            (Method::POST, "login") => self.api_login(req, ctx).await,
            (Method::POST, "mfa") => self.api_mfa(req, ctx).await,
            (Method::GET, "enrol") => self.api_enrol_start(req, ctx).await,
            (Method::POST, "enrol") => self.api_enrol(req, ctx).await,
            (Method::POST, "logout") => match ctx.session.clone() {
                Some(s) => self
                    .end_current(
                        ctx,
                        &s,
                        "logout",
                        web::json(StatusCode::OK, &json!({"status": "signed_out"})),
                    )
                    .await
                    .map_err(|()| ApiError::Unavailable),
                None => Err(ApiError::Unauthenticated),
            },
            (Method::GET, "whoami") => match &ctx.session {
                Some(s) => Ok(web::json(
                    StatusCode::OK,
                    &json!({
                        "subject": s.sub(), "idp": s.idp, "tenant": s.tenant, "tier": s.tier, "roles": s.roles,
                        "amr": s.amr, "expires": web::time(s.idle_expires_at.min(s.absolute_expires_at)),
                        "display_name": s.display_name,
                    }),
                )),
                None => Err(ApiError::Unauthenticated),
            },
            (Method::GET, "sessions") => self.api_sessions(ctx).await,
            (Method::DELETE, "sessions") => self.api_end_others(req, ctx).await,
            (Method::DELETE, p) if p.starts_with("sessions/") => self.api_end_one(ctx, &p["sessions/".len()..]).await,
            (Method::GET, "history") => self.api_history(req, ctx).await,
            (Method::POST, "password") => self.api_password(req, ctx).await,
            (m, p) if p.starts_with("admin/") => self.api_admin(req, ctx, m, &p["admin/".len()..]).await,
            _ => Err(ApiError::NotFound("No such API.")),
        }
    }

    async fn api_login(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let rd = web::safe_redirect(web::query_param(req.uri().query(), "rd").as_deref());
        let ua = user_agent(req.headers());
        let body: LoginBody = json_body(req).await?;
        let pre = self
            .login
            .password(&ctx.login_ctx(&ua), &body.username, &body.password, &rd)
            .await
            .map_err(ApiError::Login)?;
        let mut resp = web::json(StatusCode::OK, &json!({ "next": pre.stage }));
        resp.headers_mut()
            .append(http::header::SET_COOKIE, self.pre_cookie(ctx, &pre));
        Ok(resp)
    }

    async fn api_mfa(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let pre = self.pending_api(req.headers(), ctx, "mfa")?;
        let ua = user_agent(req.headers());
        let body: CodeBody = json_body(req).await?;
        let session = self
            .login
            .second_factor(&ctx.login_ctx(&ua), &pre, &body.code)
            .await
            .map_err(ApiError::Login)?;
        let resp = web::json(StatusCode::OK, &json!({ "status": "signed_in", "redirect": pre.rd }));
        Ok(self.signed_in(ctx, resp, &session))
    }

    async fn api_enrol_start(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let pre = self.pending_api(req.headers(), ctx, "enrol")?;
        let e = self
            .login
            .enrol_start(&ctx.login_ctx(""), &pre, &ctx.entry.tenant.name)
            .await
            .map_err(ApiError::Login)?;
        Ok(web::json(
            StatusCode::OK,
            &json!({ "secret": e.secret, "otpauth_uri": e.uri }),
        ))
    }

    async fn api_enrol(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let pre = self.pending_api(req.headers(), ctx, "enrol")?;
        let ua = user_agent(req.headers());
        let body: CodeBody = json_body(req).await?;
        let (session, codes) = self
            .login
            .enrol_confirm(&ctx.login_ctx(&ua), &pre, &body.code)
            .await
            .map_err(ApiError::Login)?;
        let resp = web::json(
            StatusCode::OK,
            &json!({ "status": "signed_in", "redirect": pre.rd, "recovery_codes": codes }),
        );
        Ok(self.signed_in(ctx, resp, &session))
    }

    async fn api_sessions(&self, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.as_ref().ok_or(ApiError::Unauthenticated)?;
        let store = self.sessions.store(ctx.tier()).map_err(|_| ApiError::Unavailable)?;
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
                Ok(web::json(StatusCode::OK, &serde_json::Value::Array(items)))
            }
            Err(_) => Err(ApiError::Unavailable),
        }
    }

    async fn api_end_others(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.clone().ok_or(ApiError::Unauthenticated)?;
        if web::query_param(req.uri().query(), "others").as_deref() != Some("true") {
            return Err(ApiError::BadRequest(
                "Use ?others=true to end every other session.".into(),
            ));
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
            Ok(ids) => Ok(web::json(StatusCode::OK, &json!({ "ended": ids.len() }))),
            Err(_) => Err(ApiError::Unavailable),
        }
    }

    async fn api_end_one(&self, ctx: &Ctx<'_>, id: &str) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.clone().ok_or(ApiError::Unauthenticated)?;
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
                Ok(resp)
            }
            Ok(false) => Err(ApiError::NotFound("No such session.")),
            Err(_) => Err(ApiError::Unavailable),
        }
    }

    async fn api_history(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.as_ref().ok_or(ApiError::Unauthenticated)?;
        let before = web::query_param(req.uri().query(), "before").and_then(|b| b.parse::<i64>().ok());
        let limit = web::query_param(req.uri().query(), "limit")
            .and_then(|b| b.parse::<usize>().ok())
            .unwrap_or(50)
            .clamp(1, 200);
        let store = self.sessions.store(ctx.tier()).map_err(|_| ApiError::Unavailable)?;
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
                Ok(web::json(StatusCode::OK, &serde_json::Value::Array(items)))
            }
            Err(_) => Err(ApiError::Unavailable),
        }
    }

    async fn api_password(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.clone().ok_or(ApiError::Unauthenticated)?;
        let ua = user_agent(req.headers());
        let body: PasswordBody = json_body(req).await?;
        self.accounts
            .change_password(
                &ctx.login_ctx(&ua),
                &session,
                &body.current_password,
                &body.new_password,
                &body.code,
            )
            .await
            .map_err(ApiError::Password)?;
        let mut resp = web::json(
            StatusCode::OK,
            &json!({ "status": "password_changed", "next": "login" }),
        );
        resp.headers_mut().append(
            http::header::SET_COOKIE,
            web::set_cookie(&ctx.session_cookie(), "", None),
        );
        Ok(resp)
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

    /// Ends the current session and clears its cookie on `resp`; `Err` when the store
    /// failed (nothing changed then).
    async fn end_current(
        &self,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
        reason: &str,
        mut resp: Response<Bytes>,
    ) -> Result<Response<Bytes>, ()> {
        let rev = Revocation {
            at: ctx.now,
            by: session.subject.clone(),
            reason: reason.into(),
        };
        if self.sessions.revoke(ctx.tier(), &session.id_hash, &rev).await.is_err() {
            return Err(());
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
        Ok(resp)
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
    fn pending_api(&self, headers: &http::HeaderMap, ctx: &Ctx<'_>, stage: &str) -> Result<PreAuth, ApiError> {
        self.pending(headers, ctx, stage).ok_or(ApiError::NoPendingLogin)
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
    async fn form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<(String, Bytes, String), PageError> {
        let (parts, body) = req.into_parts();
        if !web::origin_allowed(&parts.headers, ctx.host)
            || !web::content_type_is(&parts.headers, "application/x-www-form-urlencoded")
        {
            return Err(PageError::BadForm);
        }
        let body = web::read_body(&parts.headers, body)
            .await
            .map_err(|_| PageError::BadForm)?;
        let cookie = web::single_cookie(&parts.headers, &ctx.csrf_cookie()).unwrap_or_default();
        let field = web::form_field(&body, "csrf").unwrap_or_default();
        if !web::tokens_match(cookie, &field) {
            return Err(PageError::BadForm);
        }
        Ok((user_agent(&parts.headers), body, cookie.to_string()))
    }

    /// Reads a form of a signed-in user: urlencoded, same origin, CSRF field equal to the session's token.
    async fn session_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
    ) -> Result<(String, Bytes, String), PageError> {
        let (parts, body) = req.into_parts();
        if !web::origin_allowed(&parts.headers, ctx.host)
            || !web::content_type_is(&parts.headers, "application/x-www-form-urlencoded")
        {
            return Err(PageError::BadForm);
        }
        let body = web::read_body(&parts.headers, body)
            .await
            .map_err(|_| PageError::BadForm)?;
        let field = web::form_field(&body, "csrf").unwrap_or_default();
        if !web::tokens_match(&session.csrf_token, &field) {
            return Err(PageError::BadForm);
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
async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    if !web::content_type_is(&parts.headers, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = web::read_body(&parts.headers, body).await?;
    serde_json::from_slice(&bytes).map_err(|_| ApiError::MalformedJson)
}
