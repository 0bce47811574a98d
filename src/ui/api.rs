//! The tenant JSON API under `/.portcullis/api/...`: twins of the pages for scripts and
//! SPAs (sign-in, second factor, enrolment, sign-out, whoami, sessions, history,
//! password); the tenant admin's calls (`admin/...`) are in `admin.rs`. State-changing calls
//! must come from the host's own origin; bodies are JSON with known fields only (a
//! refused body names the field, never its value); a known path called with another
//! method is `405` with `Allow`.
//! `error.rs` (below this file) is its one mapping from refusal to response;
//! `openapi.rs` its OpenAPI 3.1 document, served at `/.portcullis/api/openapi.json`.

mod error;
mod openapi;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

pub(super) use self::error::ApiError;
use super::{Ctx, Portal, user_agent, web};
use crate::auth::preauth::PreAuth;

/// JSON bodies of the API (unknown fields and duplicate keys are errors).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct LoginBody {
    username: String,
    password: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct CodeBody {
    code: String,
}

#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    current_password: String,
    new_password: String,
    code: String,
}

impl Portal {
    pub(super) async fn api(
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
            (Method::GET, "openapi.json") => Ok(openapi::serve(&ctx.session_cookie())),
            (m, p) if p.starts_with("admin/") => self.api_admin(req, ctx, m, &p["admin/".len()..]).await,
            (_, p) => Err(match allowed_methods(p) {
                Some(allow) => ApiError::WrongMethod { allow },
                None => ApiError::NotFound("No such API."),
            }),
        }
    }

    async fn api_login(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let rd = web::safe_redirect(web::query_param(req.uri().query(), "rd").as_deref());
        // Fails closed: no password is checked while the SSO settings cannot be read.
        let live = self.live_sso(ctx).await.map_err(|_| ApiError::Unavailable)?;
        if live.as_ref().is_some_and(|s| !s.config().offers_passwords()) {
            return Err(ApiError::NotFound("This tenant signs in through single sign-on only."));
        }
        let ua = user_agent(req.headers());
        let body: LoginBody = json_body(req).await?;
        let login_ctx = ctx.password_ctx(&ua, live.as_ref());
        let pre = self
            .login
            .password(&login_ctx, &body.username, &body.password, &rd)
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
        match self.end_other_sessions(ctx, &session).await {
            Ok(ended) => Ok(web::json(StatusCode::OK, &json!({ "ended": ended }))),
            Err(_) => Err(ApiError::Unavailable),
        }
    }

    async fn api_end_one(&self, ctx: &Ctx<'_>, id: &str) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.clone().ok_or(ApiError::Unauthenticated)?;
        let current = id == session.public_id();
        match self.end_session_by_id(ctx, &session, id).await {
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

    /// The pending login of an API call at `stage`, or the 401 that says to start over.
    fn pending_api(&self, headers: &http::HeaderMap, ctx: &Ctx<'_>, stage: &str) -> Result<PreAuth, ApiError> {
        self.pending(headers, ctx, stage).ok_or(ApiError::NoPendingLogin)
    }
}

/// Every endpoint of this API (below `/.portcullis/api/`, `{id}` standing for one path
/// segment) with the methods it takes. Must list what [`Portal::api`] dispatches (the
/// tenant admin's endpoints answer for themselves in `admin.rs`); the OpenAPI test checks
/// the document against it both ways.
const ENDPOINTS: &[(&str, &str)] = &[
    ("login", "POST"),
    ("mfa", "POST"),
    ("enrol", "GET, POST"),
    ("logout", "POST"),
    ("whoami", "GET"),
    ("sessions", "GET, DELETE"),
    ("sessions/{id}", "DELETE"),
    ("history", "GET"),
    ("password", "POST"),
    ("openapi.json", "GET"),
];

/// The methods an endpoint of this API takes, for the `Allow` header of a `405`; `None`
/// for a path that is no endpoint.
fn allowed_methods(path: &str) -> Option<&'static str> {
    ENDPOINTS
        .iter()
        .find(|(pattern, _)| match pattern.strip_suffix("{id}") {
            Some(prefix) => path.starts_with(prefix),
            None => *pattern == path,
        })
        .map(|(_, methods)| *methods)
}

/// Reads a JSON API body: `application/json`, at most 64 KiB, known fields only.
pub(super) async fn json_body<T: serde::de::DeserializeOwned>(req: Request<Incoming>) -> Result<T, ApiError> {
    let (parts, body) = req.into_parts();
    if !web::content_type_is(&parts.headers, "application/json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let bytes = web::read_body(&parts.headers, body).await?;
    serde_json::from_slice(&bytes).map_err(|e| ApiError::InvalidJson(json_problem(&e)))
}

/// What is wrong with a JSON body, naming a missing, unknown or wrongly typed field but
/// never repeating a value (a password sent in the wrong field must not come back).
fn json_problem(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => crate::changes::serde_problem(e),
        Category::Syntax | Category::Eof => format!("malformed JSON at line {} column {}", e.line(), e.column()),
        Category::Io => "unreadable body".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, a script would be told its body is wrong without learning which
    /// field, or would see a secret it sent in the wrong field echoed back.
    #[test]
    fn a_body_problem_names_the_field_never_the_value() {
        let problem = |text: &str| json_problem(&serde_json::from_str::<LoginBody>(text).err().unwrap());
        assert_eq!(problem(r#"{"username": "a"}"#), "missing field `password`");
        assert!(problem(r#"{"username": "a", "password": "p", "x": 1}"#).starts_with("unknown field `x`"));
        let wrong = problem(r#"{"username": "a", "password": 12345678}"#);
        assert!(
            wrong.contains("expected a string") && !wrong.contains("12345678"),
            "{wrong}"
        );
        assert_eq!(
            problem(r#"{"username": "hunter2"#),
            "malformed JSON at line 1 column 21"
        );
    }

    /// If this broke, a known endpoint called with the wrong method would answer 404 as
    /// if it did not exist, or a 405 would not say which methods work.
    #[test]
    fn every_endpoint_names_its_methods() {
        assert_eq!(allowed_methods("login"), Some("POST"));
        assert_eq!(allowed_methods("sessions"), Some("GET, DELETE"));
        assert_eq!(allowed_methods("sessions/abc"), Some("DELETE"));
        assert_eq!(allowed_methods("whoami"), Some("GET"));
        assert_eq!(allowed_methods("enrol"), Some("GET, POST"));
        assert_eq!(allowed_methods("nope"), None);
    }
}
