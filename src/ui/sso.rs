//! Single sign-on pages: `/.portcullis/login/sso` (starts the code flow with PKCE),
//! `/.portcullis/callback` (checks state, exchanges the code, validates the ID token,
//! applies the tenant's MFA policy) and `/.portcullis/backchannel-logout` (the IdP ends
//! sessions by `sid` or `sub`). The checks themselves are `auth::oidc`; talking to the
//! IdP is `auth::oidc_client`.
//!
//! Each login attempt has its own short-lived signed cookie
//! (`__Host-portcullis-<tier>-sso-<8 chars of state>`), so several tabs can sign in at
//! once; the state is claimed once in the store, so a replayed callback signs in nothing.
//!
//! The `redirect_uri` and `post_logout_redirect_uri` are built from the tenant's
//! canonical origin (first configured host, the listener's scheme and port), never from
//! the request's `Host`; a sign-in started on another host of the tenant is first sent
//! to the primary host.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::{Deserialize, Serialize};

use super::api::ApiError;
use super::error::{PageError, SsoFailure};
use super::web;
use super::{Ctx, Portal, user_agent};
use crate::account;
use crate::auth::login::SsoOutcome;
use crate::auth::oidc::{self, MfaDecision};
use crate::auth::preauth::{self, SsoIdentity};
use crate::records::Revocation;
use crate::telemetry::{EventOutcome, SecurityEvent};

/// How long a login at the IdP may take.
const PENDING_TTL_SECS: i64 = 600;

/// What the callback needs from the start of the attempt.
#[derive(Serialize, Deserialize)]
struct Pending {
    tenant: String,
    tier: String,
    state: String,
    nonce: String,
    verifier: String,
    redirect_uri: String,
    rd: String,
    exp: i64,
}

fn pending_cookie(ctx: &Ctx<'_>, state: &str) -> String {
    format!(
        "{}-sso-{}",
        ctx.entry.tier.session_cookie,
        state.get(..8).unwrap_or(state)
    )
}

impl Portal {
    /// `GET /.portcullis/login/sso?rd=`: to the IdP's authorization endpoint.
    pub(super) async fn sso_start(&self, req: &Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let sso = ctx.entry.tenant.sso.as_ref().ok_or(PageError::NoSso)?;
        let rd = web::safe_redirect(web::query_param(req.uri().query(), "rd").as_deref());
        // The IdP returns to the canonical callback only; a sign-in started on another
        // host of the tenant moves there first, so its pending-login cookie (host-only)
        // is where the callback arrives.
        if ctx.host != ctx.entry.primary_host() {
            return Ok(web::see_other(&format!(
                "{}/.portcullis/login/sso?rd={}",
                ctx.origin,
                percent_encoding::utf8_percent_encode(&rd, percent_encoding::NON_ALPHANUMERIC)
            )));
        }
        let provider = match self.oidc.provider(&sso.issuer, ctx.entry.tier.production).await {
            Ok(p) => p,
            Err(e) => return Err(idp_problem(ctx, &e)),
        };
        let (state, nonce, pkce) = (oidc::random_value(), oidc::random_value(), oidc::Pkce::new());
        // From configuration only: the client chooses the Host header.
        let redirect_uri = format!("{}/.portcullis/callback", ctx.origin);
        let url = oidc::authorize_url(&oidc::AuthorizeRequest {
            authorization_endpoint: &provider.authorization_endpoint,
            client_id: &sso.client_id,
            redirect_uri: &redirect_uri,
            scopes: &sso.scopes,
            state: &state,
            nonce: &nonce,
            code_challenge: &pkce.challenge,
        });
        let pending = Pending {
            tenant: ctx.entry.tenant.id.clone(),
            tier: ctx.tier().to_string(),
            state: state.clone(),
            nonce,
            verifier: pkce.verifier,
            redirect_uri,
            rd,
            exp: ctx.now + PENDING_TTL_SECS,
        };
        let mut resp = web::see_other(&url);
        resp.headers_mut().append(
            http::header::SET_COOKIE,
            web::set_cookie(
                &pending_cookie(ctx, &state),
                &preauth::seal_value(&pending, ctx.key()),
                Some(PENDING_TTL_SECS),
            ),
        );
        Ok(resp)
    }

    /// `GET /.portcullis/callback?code&state` (or `?error`): the end of the IdP round trip.
    pub(super) async fn sso_callback(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let sso = ctx.entry.tenant.sso.as_ref().ok_or(PageError::NoSso)?;
        let ua = user_agent(req.headers());
        let lctx = ctx.login_ctx(&ua);
        let query = req.uri().query();
        let state = web::query_param(query, "state").unwrap_or_default();
        let cookie_name = pending_cookie(ctx, &state);
        let pending: Option<Pending> = web::single_cookie(req.headers(), &cookie_name)
            .and_then(|v| preauth::open_value(v, ctx.key()))
            .filter(|p: &Pending| p.tenant == ctx.entry.tenant.id && p.tier == ctx.tier() && ctx.now < p.exp);
        let Some(pending) = pending.filter(|p| {
            !state.is_empty() && bool::from(subtle::ConstantTimeEq::ct_eq(p.state.as_bytes(), state.as_bytes()))
        }) else {
            let _ = self.login.record_sso_failure(&lctx, "-", "state_mismatch").await;
            return Err(PageError::Sso(SsoFailure::StateMismatch));
        };
        let clear = |mut resp: Response<Bytes>| {
            resp.headers_mut()
                .append(http::header::SET_COOKIE, web::set_cookie(&cookie_name, "", None));
            resp
        };
        // From here on every answer ends this attempt's cookie, refusals too.
        let refuse = |failure: SsoFailure| Ok(clear(PageError::Sso(failure).into_response(ctx.entry, ctx.request_id)));
        // One use per attempt: a replayed callback URL signs in nothing.
        match self.sessions.store(ctx.tier()) {
            Ok(store) => match store
                .hit(&format!("sso:{}", pending.state), ctx.now, PENDING_TTL_SECS)
                .await
            {
                Ok((1, _)) => {}
                Ok(_) => {
                    let _ = self.login.record_sso_failure(&lctx, "-", "replayed_callback").await;
                    return refuse(SsoFailure::Replayed);
                }
                Err(_) => return Err(PageError::Unavailable),
            },
            Err(_) => return Err(PageError::Unavailable),
        }
        if let Some(error) = web::query_param(query, "error") {
            let code: String = error
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                .take(64)
                .collect();
            let _ = self
                .login
                .record_sso_failure(&lctx, "-", &format!("idp_error:{code}"))
                .await;
            return refuse(SsoFailure::IdpRefused(code));
        }
        let Some(code) = web::query_param(query, "code") else {
            return refuse(SsoFailure::NoCode);
        };
        let production = ctx.entry.tier.production;
        let claims = async {
            let provider = self.oidc.provider(&sso.issuer, production).await?;
            let id_token = self
                .oidc
                .exchange(
                    &provider,
                    &sso.client_id,
                    sso.client_secret.expose_secret(),
                    &code,
                    &pending.redirect_uri,
                    &pending.verifier,
                )
                .await?;
            let validate = |jwks: &jsonwebtoken::jwk::JwkSet| {
                oidc::validate_id_token(
                    &id_token,
                    jwks,
                    &provider.issuer,
                    &sso.client_id,
                    &pending.nonce,
                    sso.roles_claim.as_deref(),
                    ctx.now,
                )
            };
            self.oidc.validate_with_keys(&provider, validate).await
        }
        .await;
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                let _ = self.login.record_sso_failure(&lctx, "-", "idp_token_refused").await;
                let reason = e.to_string();
                SecurityEvent {
                    reason: Some(&reason),
                    tenant: Some(&ctx.entry.tenant.id),
                    tier: Some(ctx.tier()),
                    ..SecurityEvent::new("login", EventOutcome::Failure)
                }
                .warn("single sign-on refused");
                return refuse(SsoFailure::TokenRefused(e.to_string()));
            }
        };
        let decision = oidc::mfa_decision(sso.mfa, &claims.amr);
        if decision == MfaDecision::Refuse {
            let _ = self
                .login
                .record_sso_failure(&lctx, &account::key(&sso.issuer, &claims.sub), "idp_mfa_required")
                .await;
            return refuse(SsoFailure::Login(crate::auth::login::LoginError::IdpMfaRequired));
        }
        let identity = SsoIdentity {
            name: claims
                .name
                .clone()
                .or_else(|| claims.email.clone())
                .unwrap_or_else(|| claims.sub.clone()),
            roles: claims.roles.clone(),
            email: claims.email.clone(),
            amr: claims.amr.clone(),
            sid: claims.sid.clone(),
            issuer: sso.issuer.clone(),
            sub: claims.sub.clone(),
        };
        let step_up = decision == MfaDecision::StepUp;
        match self.login.sso_signed_in(&lctx, identity, step_up, &pending.rd).await {
            Ok(SsoOutcome::Session(session)) => Ok(clear(self.signed_in(ctx, web::see_other(&pending.rd), &session))),
            Ok(SsoOutcome::StepUp(pre)) => Ok(clear(self.to_second_factor(ctx, &pre))),
            Err(e) => refuse(SsoFailure::Login(e)),
        }
    }

    /// `POST /.portcullis/backchannel-logout` (form `logout_token`): ends the sessions the
    /// IdP names. Answers 200 on success, 400 for a token that does not validate.
    pub(super) async fn backchannel_logout(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, ApiError> {
        let sso = ctx
            .entry
            .tenant
            .sso
            .as_ref()
            .ok_or(ApiError::NotFound("No single sign-on here."))?;
        let (parts, body) = req.into_parts();
        let Ok(body) = web::read_body(&parts.headers, body).await else {
            return Err(ApiError::InvalidLogoutRequest("Unreadable body.".into()));
        };
        let Some(token) = web::form_field(&body, "logout_token") else {
            return Err(ApiError::InvalidLogoutRequest("logout_token is required.".into()));
        };
        let production = ctx.entry.tier.production;
        let claims = async {
            let provider = self.oidc.provider(&sso.issuer, production).await?;
            let validate = |jwks: &jsonwebtoken::jwk::JwkSet| {
                oidc::validate_logout_token(&token, jwks, &provider.issuer, &sso.client_id, ctx.now)
            };
            self.oidc.validate_with_keys(&provider, validate).await
        }
        .await;
        let claims = match claims {
            Ok(c) => c,
            Err(e) => {
                let reason = e.to_string();
                SecurityEvent {
                    reason: Some(&reason),
                    tenant: Some(&ctx.entry.tenant.id),
                    ..SecurityEvent::new("logout", EventOutcome::Failure)
                }
                .warn("back-channel logout refused");
                return Err(ApiError::InvalidLogoutRequest(e));
            }
        };
        let rev = Revocation {
            at: ctx.now,
            by: "idp".into(),
            reason: "backchannel_logout".into(),
        };
        let tenant = &ctx.entry.tenant.id;
        // By `sub`: only this IdP's account of that `sub`, never a local account of the
        // same name.
        let ended = match (&claims.sid, &claims.sub) {
            (Some(sid), _) => self.sessions.revoke_sso(ctx.tier(), tenant, sid, &rev).await,
            (None, Some(sub)) => {
                let account = account::key(&sso.issuer, sub);
                self.sessions
                    .revoke_user(ctx.tier(), tenant, &account, None, &rev)
                    .await
            }
            (None, None) => Ok(Vec::new()),
        };
        match ended {
            Ok(ids) => {
                SecurityEvent {
                    reason: Some("backchannel"),
                    tenant: Some(tenant),
                    sessions: Some(ids.len() as u64),
                    ..SecurityEvent::new("logout", EventOutcome::Success)
                }
                .info("back-channel logout");
                let mut resp = web::json(StatusCode::OK, &serde_json::json!({ "sessions_ended": ids.len() }));
                resp.headers_mut()
                    .insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
                Ok(resp)
            }
            Err(_) => Err(ApiError::LogoutUnavailable),
        }
    }

    /// Where RP-initiated logout sends a signed-out SSO user: the IdP's end-session
    /// endpoint, when it has one.
    pub(super) async fn sso_logout_target(&self, ctx: &Ctx<'_>) -> Option<String> {
        let sso = ctx.entry.tenant.sso.as_ref()?;
        let provider = self.oidc.provider(&sso.issuer, ctx.entry.tier.production).await.ok()?;
        let end = provider.end_session_endpoint.as_ref()?;
        let query = form_urlencoded::Serializer::new(String::new())
            .append_pair("client_id", &sso.client_id)
            .append_pair("post_logout_redirect_uri", &format!("{}/.portcullis/login", ctx.origin))
            .finish();
        let sep = if end.contains('?') { '&' } else { '?' };
        Some(format!("{end}{sep}{query}"))
    }
}

/// The refusal of an identity provider that cannot be used, logged for the operator.
fn idp_problem(ctx: &Ctx<'_>, problem: &str) -> PageError {
    tracing::warn!(organization.id = %ctx.entry.tenant.id, problem, "identity provider unavailable");
    PageError::Sso(SsoFailure::IdpUnavailable(problem.to_string()))
}
