//! The gateway's own pages and JSON APIs under `/.portcullis/` on tenant hosts:
//! sign-in (password, second factor, first-login enrolment), sign-out, and the user's
//! session center (sessions, history, password change). Pages and their JSON twins call
//! the same flow in `auth::login`; this module only speaks HTTP.
//!
//! # Layout
//! - this file: [`Portal`] (what the endpoints need), [`Ctx`] (the request as the proxy
//!   resolved it), the router [`Portal::handle`], and steps every family uses (reading
//!   a signed-in user's form, the user agent).
//! - `login.rs`: sign-in pages (password, second factor, enrolment) and sign-out, and
//!   the sign-in steps the JSON API and SSO share (cookies, pending sign-in).
//! - `account.rs`: the account page: sessions, history, ending sessions, password change.
//! - `api.rs`: the JSON API (`/.portcullis/api/...`), twins of the pages.
//! - `admin.rs` (and `admin/`): the tenant admin's area (breakers, users and MFA
//!   resets, sessions, sign-in history, audit records), pages and JSON twins.
//! - `sso.rs`: single sign-on (start, callback, back-channel logout).
//! - `error.rs` and `api/error.rs`: the one mapping from refusal to response of the
//!   pages and of the JSON API, each with the request id. Page handlers answer
//!   `Result<_, PageError>` and JSON API handlers `Result<_, ApiError>`;
//!   [`Portal::handle`] renders each refusal once.
//! - `pages.rs`: the askama templates, the shared layout of every page the gateway
//!   answers with (the listener's refusals too); `readable.rs`: times and history
//!   codes as people read them; `web.rs`: HTTP plumbing (cookies, bodies, CSRF
//!   and origin checks, redirect targets).

mod account;
mod admin;
mod api;
mod error;
mod login;
pub mod pages;
pub mod readable;
mod sso;
pub mod web;

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;

use crate::auth::accounts::Accounts;
use crate::auth::login::{LocalLogin, LoginContext};
use crate::config::TenantEntry;
use crate::killswitch::{KillSwitch, KillSwitches};
use crate::records::SessionRecord;
use crate::session::Sessions;
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
    /// The tenant admins' self-service SSO (drafts, tests, active versions).
    pub sso_admin: crate::auth::sso_admin::SsoAdmin,
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

    /// The sign-in context of the steps after the password (second factor, enrolment,
    /// password change): they never decide whether passwords are allowed, so `sso` is
    /// left empty. The password step uses [`Ctx::password_ctx`].
    fn login_ctx<'b>(&'b self, user_agent: &'b str) -> LoginContext<'b> {
        let p = &self.entry.tenant.session;
        LoginContext {
            tenant: &self.entry.tenant.id,
            tier: &self.entry.tier.name,
            idle_timeout: p.idle_secs(),
            absolute_timeout: p.absolute_secs(),
            ip: &self.ip,
            user_agent,
            request_id: Some(self.request_id),
            now: self.now,
            auto_trip: &self.entry.tenant.auto_trip,
            sso: None,
        }
    }

    /// The password step's context: `live` is the tenant's SSO settings read for this
    /// sign-in ([`Portal::live_sso`]), which may refuse local passwords. Taking them here
    /// means no password path can forget them.
    fn password_ctx<'b>(&'b self, user_agent: &'b str, live: Option<&'b sso::LiveSso<'b>>) -> LoginContext<'b> {
        LoginContext {
            sso: live.map(sso::LiveSso::config),
            ..self.login_ctx(user_agent)
        }
    }
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
            (Method::GET | Method::HEAD, "style.css") => {
                Ok(web::respond(StatusCode::OK, "text/css; charset=utf-8", pages::STYLE))
            }
            (Method::GET | Method::HEAD, "favicon.svg") => {
                Ok(web::respond(StatusCode::OK, "image/svg+xml", pages::ICON))
            }
            (Method::GET | Method::HEAD, "login") => self.login_page(&req, &ctx).await,
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
            (Method::GET | Method::HEAD, "admin") => {
                let notice = admin::done_notice(req.uri().query());
                self.admin_page(&ctx, notice.as_deref()).await
            }
            (Method::POST, "admin/breaker") => self.admin_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "admin/users") => self.admin_users_page(&req, &ctx).await,
            (Method::POST, "admin/users/mfa-reset") => self.admin_users_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "admin/sessions") => self.admin_sessions_page(&req, &ctx).await,
            (Method::POST, "admin/sessions/end") => self.admin_sessions_form(req, &ctx).await,
            (Method::GET | Method::HEAD, "admin/history") => self.admin_history_page(&req, &ctx).await,
            (Method::GET | Method::HEAD, "admin/audit") => self.admin_audit_page(&req, &ctx).await,
            (Method::GET | Method::HEAD, "admin/sso") => self.admin_sso_page(&req, &ctx).await,
            (Method::POST, "admin/sso") => self.admin_sso_form(req, &ctx).await,
            (Method::GET, "admin/sso/test") => self.admin_sso_test(&req, &ctx).await,
            (Method::POST, p) if p.starts_with("account/") => {
                self.account_form(req, &ctx, &p["account/".len()..]).await
            }
            (_, p) => match page_methods(p) {
                Some(allow) => Err(PageError::WrongMethod { allow }),
                None => return None,
            },
        };
        Some(page.unwrap_or_else(|e| e.into_response(ctx.entry, ctx.request_id)))
    }

    /// Reads a form of a signed-in user: urlencoded, same origin, CSRF field equal to the session's token.
    async fn session_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
    ) -> Result<(String, Bytes, String), PageError> {
        read_form(req, ctx, |_| session.csrf_token.clone()).await
    }
}

/// The methods a page path (below `/.portcullis/`, outside `api/`) takes, for the
/// `Allow` of a 405; None for a path no page serves (404). Must list what
/// [`Portal::handle`] matches.
fn page_methods(rest: &str) -> Option<&'static str> {
    Some(match rest {
        "login" | "mfa" | "enrol" | "logout" | "admin/sso" => "GET, HEAD, POST",
        "account" | "admin" | "admin/users" | "admin/sessions" | "admin/history" | "admin/audit" => "GET, HEAD",
        "style.css" | "favicon.svg" => "GET, HEAD",
        "login/sso" | "callback" | "admin/sso/test" => "GET",
        "backchannel-logout" | "admin/breaker" | "admin/users/mfa-reset" | "admin/sessions/end" => "POST",
        p if p.starts_with("account/") => "POST",
        _ => return None,
    })
}

/// Reads a browser form, the one way every page does: urlencoded, from the host's own
/// origin, with a `csrf` field equal to the token `expected` names (it may read the
/// request's headers, e.g. for a cookie). Returns the user agent, the body and the token.
async fn read_form(
    req: Request<Incoming>,
    ctx: &Ctx<'_>,
    expected: impl FnOnce(&http::HeaderMap) -> String,
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
    let expected = expected(&parts.headers);
    let field = web::form_field(&body, "csrf").unwrap_or_default();
    if !web::tokens_match(&expected, &field) {
        return Err(PageError::BadForm);
    }
    Ok((user_agent(&parts.headers), body, expected))
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
