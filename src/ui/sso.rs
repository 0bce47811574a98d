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
//! The settings come from the policy files' `[sso]`, else from the version a tenant
//! admin activated in the wizard (`auth::sso_admin`, read per sign-in). A tenant admin's
//! test sign-in against the wizard's draft (`/.portcullis/admin/sso/test`) runs the
//! same flow and callback, marked in its pending cookie: the callback records the
//! result on the draft and creates no session.
//!
//! Back-channel and RP-initiated logout follow the same settings.
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
use crate::auth::oidc_client::ExchangeError;
use crate::auth::preauth::{self, SsoIdentity};
use crate::auth::sso_admin::{OpenedSso, SsoAdminError, TenantSso, TestOutcome, mapped_roles};
use crate::config::SsoConfig;
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
    /// Set for a tenant admin's test sign-in against the SSO draft: no session comes of it.
    #[serde(default)]
    test: Option<TestRun>,
}

/// A test sign-in against the wizard's draft: which draft content it tests, and who ran it.
#[derive(Serialize, Deserialize)]
struct TestRun {
    /// [`crate::records::SsoVersion::digest`] of the draft when the test started.
    digest: String,
    /// The admin, as audited (`user:<subject>`).
    admin: String,
}

/// The single sign-on settings a sign-in of the tenant uses: the policy files' `[sso]`,
/// or else the version activated in the wizard (read from the store for each sign-in,
/// so every replica follows an activation or roll-back at once).
pub(super) enum LiveSso<'a> {
    /// `[sso]` of the policy files.
    Policy(&'a SsoConfig),
    /// The wizard's active version, or its draft for a test sign-in.
    Wizard {
        /// Its settings.
        config: SsoConfig,
        /// The roles-claim value that makes a user `tenant-admin`.
        admin_group: Option<String>,
    },
}

impl LiveSso<'_> {
    /// The settings: IdP, client, and whether local passwords are refused.
    pub(super) fn config(&self) -> &SsoConfig {
        match self {
            LiveSso::Policy(c) => c,
            LiveSso::Wizard { config, .. } => config,
        }
    }

    /// The roles of a user whose ID token carries `idp_roles`.
    fn roles(&self, idp_roles: &[String]) -> Vec<String> {
        match self {
            LiveSso::Policy(_) => idp_roles.to_vec(),
            LiveSso::Wizard { admin_group, .. } => mapped_roles(admin_group.as_deref(), idp_roles),
        }
    }
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
        let live = self.live_sso(ctx).await?.ok_or(PageError::NoSso)?;
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
        self.to_idp(ctx, live.config(), rd, None).await
    }

    /// The SSO settings of the tenant's sign-ins: the policy files' `[sso]`, else the
    /// wizard's active version (from the store, each time), else none.
    pub(super) async fn live_sso<'c>(&self, ctx: &'c Ctx<'_>) -> Result<Option<LiveSso<'c>>, PageError> {
        if let Some(policy) = ctx.entry.tenant.sso.as_ref() {
            return Ok(Some(LiveSso::Policy(policy)));
        }
        let t = TenantSso::of(ctx.entry, &ctx.origin);
        match self.sso_admin.active_for_sign_in(&t).await {
            Ok(Some(active)) => Ok(Some(wizard_sso(active))),
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(organization.id = %ctx.entry.tenant.id, request_id = ctx.request_id, error = %e, "single sign-on settings unavailable");
                Err(PageError::Unavailable)
            }
        }
    }

    /// `GET /.portcullis/admin/sso/test` of a tenant admin: a real sign-in at the IdP
    /// with the wizard's draft (its issuer, client, opened secret, scopes), whose
    /// callback records the test instead of signing anyone in.
    pub(super) async fn sso_test_start(&self, ctx: &Ctx<'_>, admin: String) -> Result<Response<Bytes>, PageError> {
        if ctx.host != ctx.entry.primary_host() {
            // The callback must come back to the primary host, where the admin has
            // another session and so another ticket: back to the wizard there.
            return Ok(web::see_other(&format!("{}/.portcullis/admin/sso", ctx.origin)));
        }
        let t = TenantSso::of(ctx.entry, &ctx.origin);
        let draft = match self.sso_admin.draft_for_test(&t).await {
            Ok(d) => d,
            Err(e) => return Ok(test_refusal(ctx, &e)),
        };
        let digest = draft.digest.clone();
        let config = draft.into_sso_config();
        self.to_idp(
            ctx,
            &config,
            "/.portcullis/admin".into(),
            Some(TestRun { digest, admin }),
        )
        .await
    }

    /// To the IdP's authorization endpoint with `sso`, setting this attempt's
    /// pending-login cookie.
    async fn to_idp(
        &self,
        ctx: &Ctx<'_>,
        sso: &SsoConfig,
        rd: String,
        test: Option<TestRun>,
    ) -> Result<Response<Bytes>, PageError> {
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
            test,
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
        let query = req.uri().query();
        // One copy of each parameter: with two, what is checked and what is used could
        // differ (RFC 6749 3.1). Refused before the attempt is looked at, which it leaves
        // as it was.
        if let Some(name) = repeated_callback_parameter(query) {
            let ua = user_agent(req.headers());
            let lctx = ctx.login_ctx(&ua);
            let _ = self
                .login
                .record_sso_failure(&lctx, "-", &format!("repeated_parameter:{name}"))
                .await;
            return Err(PageError::Sso(SsoFailure::RepeatedParameter));
        }
        let state = web::query_param(query, "state").unwrap_or_default();
        let cookie_name = pending_cookie(ctx, &state);
        let pending: Option<Pending> = web::single_cookie(req.headers(), &cookie_name)
            .and_then(|v| preauth::open_value(v, ctx.key()))
            .filter(|p: &Pending| p.tenant == ctx.entry.tenant.id && p.tier == ctx.tier() && ctx.now < p.exp);
        // A test sign-in runs with the draft it was started with; a real one with the
        // tenant's live settings.
        let test = pending.as_ref().and_then(|p| p.test.as_ref());
        let live = match test {
            Some(run) => {
                let t = TenantSso::of(ctx.entry, &ctx.origin);
                match self.sso_admin.draft_for_test(&t).await {
                    Ok(draft) if draft.digest == run.digest => wizard_sso(draft),
                    Ok(_) => return Ok(test_refusal(ctx, &SsoAdminError::StaleTest)),
                    Err(e) => return Ok(test_refusal(ctx, &e)),
                }
            }
            None => self.live_sso(ctx).await?.ok_or(PageError::NoSso)?,
        };
        let sso = live.config();
        let ua = user_agent(req.headers());
        let lctx = ctx.login_ctx(&ua);
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
        if let Some(run) = &pending.test {
            let outcome = self.test_sign_in(ctx, &live, query, &pending).await;
            return Ok(clear(self.record_test(ctx, run, outcome).await));
        }
        if let Some(error) = web::query_param(query, "error") {
            let code = idp_error_code(&error);
            let _ = self
                .login
                .record_sso_failure(&lctx, "-", &format!("idp_error:{code}"))
                .await;
            return refuse(SsoFailure::IdpRefused(code));
        }
        let Some(code) = web::query_param(query, "code") else {
            return refuse(SsoFailure::NoCode);
        };
        let iss = web::query_param(query, "iss");
        let claims = self.id_claims(ctx, sso, &code, iss.as_deref(), &pending).await;
        let claims = match claims {
            Ok(c) => c,
            Err(ClaimsError::Unavailable(problem)) => {
                let _ = self.login.record_sso_failure(&lctx, "-", "idp_unavailable").await;
                tracing::warn!(organization.id = %ctx.entry.tenant.id, problem, "identity provider unavailable");
                return refuse(SsoFailure::IdpUnavailable(problem));
            }
            Err(ClaimsError::Refused(e)) => {
                // The recording is the one `login` failure event (reason
                // `idp_token_refused`); what exactly was refused goes to the log beside it.
                let _ = self.login.record_sso_failure(&lctx, "-", "idp_token_refused").await;
                tracing::warn!(organization.id = %ctx.entry.tenant.id, problem = %e, "single sign-on refused");
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
            roles: live.roles(&claims.roles),
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
        let live = self
            .live_sso(ctx)
            .await
            .map_err(|_| ApiError::LogoutUnavailable)?
            .ok_or(ApiError::NotFound("No single sign-on here."))?;
        let sso = live.config();
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
                    source_ip: Some(&ctx.ip),
                    tenant: Some(&ctx.entry.tenant.id),
                    tier: Some(ctx.tier()),
                    request_id: Some(ctx.request_id),
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
        let account = claims.sub.as_deref().map(|sub| account::key(&sso.issuer, sub));
        let ended = match (&claims.sid, &account) {
            (Some(sid), _) => self.sessions.revoke_sso(ctx.tier(), tenant, sid, &rev).await,
            (None, Some(account)) => self.sessions.revoke_user(ctx.tier(), tenant, account, None, &rev).await,
            (None, None) => Ok(Vec::new()),
        };
        match ended {
            Ok(ids) => {
                SecurityEvent {
                    reason: Some("backchannel"),
                    source_ip: Some(&ctx.ip),
                    user: account.as_deref(),
                    tenant: Some(tenant),
                    tier: Some(ctx.tier()),
                    sessions: Some(ids.len() as u64),
                    request_id: Some(ctx.request_id),
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
        let live = self.live_sso(ctx).await.ok()??;
        let sso = live.config();
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

/// The first parameter of the callback that matters to it (`state`, `code`, `iss`,
/// `error`) and appears more than once in `query`.
fn repeated_callback_parameter(query: Option<&str>) -> Option<&'static str> {
    let query = query?;
    ["state", "code", "iss", "error"].into_iter().find(|name| {
        form_urlencoded::parse(query.as_bytes())
            .filter(|(k, _)| k == name)
            .count()
            > 1
    })
}

/// Why a callback gave no claims: the identity provider could not be used (a 502), or
/// it, or the token it issued, was refused (a 401). The text is safe to show and log.
enum ClaimsError {
    Unavailable(String),
    Refused(String),
}

/// The refusal of an identity provider that cannot be used, logged for the operator.
fn idp_problem(ctx: &Ctx<'_>, problem: &str) -> PageError {
    tracing::warn!(organization.id = %ctx.entry.tenant.id, problem, "identity provider unavailable");
    PageError::Sso(SsoFailure::IdpUnavailable(problem.to_string()))
}

impl Portal {
    /// Checks the callback's `iss` (RFC 9207) before anything is sent, exchanges `code`
    /// and validates the ID token strictly (issuer, audience, nonce, expiry, signature
    /// with the IdP's keys, `at_hash`): the same checks for a test sign-in as for a
    /// real one.
    async fn id_claims(
        &self,
        ctx: &Ctx<'_>,
        sso: &SsoConfig,
        code: &str,
        iss: Option<&str>,
        pending: &Pending,
    ) -> Result<oidc::IdClaims, ClaimsError> {
        let provider = self
            .oidc
            .provider(&sso.issuer, ctx.entry.tier.production)
            .await
            .map_err(ClaimsError::Unavailable)?;
        oidc::check_response_issuer(
            iss,
            &provider.issuer,
            provider.authorization_response_iss_parameter_supported,
        )
        .map_err(|e| ClaimsError::Refused(e.to_string()))?;
        let tokens = self
            .oidc
            .exchange(
                &provider,
                &sso.client_id,
                sso.client_secret.expose_secret(),
                code,
                &pending.redirect_uri,
                &pending.verifier,
            )
            .await
            .map_err(|e| match e {
                ExchangeError::Unavailable(why) => ClaimsError::Unavailable(why),
                ExchangeError::Refused(why) => ClaimsError::Refused(why),
            })?;
        let validate = |jwks: &jsonwebtoken::jwk::JwkSet| {
            oidc::validate_token_response(
                &tokens,
                jwks,
                &provider.issuer,
                &sso.client_id,
                &pending.nonce,
                sso.roles_claim.as_deref(),
                ctx.now,
            )
        };
        self.oidc
            .validate_with_keys(&provider, validate)
            .await
            .map_err(ClaimsError::Refused)
    }

    /// How a test sign-in's callback ended: the IdP's refusal, a failed code exchange or
    /// token check (each in plain words), or the claims and the roles they map to.
    async fn test_sign_in(
        &self,
        ctx: &Ctx<'_>,
        live: &LiveSso<'_>,
        query: Option<&str>,
        pending: &Pending,
    ) -> TestOutcome {
        let failed = |error: String| TestOutcome::Failed { error };
        if let Some(error) = web::query_param(query, "error") {
            return failed(idp_refusal_words(&idp_error_code(&error)));
        }
        let Some(code) = web::query_param(query, "code") else {
            return failed("the identity provider sent the browser back without a code".into());
        };
        let iss = web::query_param(query, "iss");
        match self.id_claims(ctx, live.config(), &code, iss.as_deref(), pending).await {
            Ok(claims) => {
                // The protocol's own values say nothing of the user; the admin sees the rest.
                let mut shown = claims.raw;
                for protocol in ["nonce", "at_hash", "c_hash", "s_hash"] {
                    shown.remove(protocol);
                }
                TestOutcome::Passed {
                    roles: live.roles(&claims.roles),
                    claims: shown,
                }
            }
            Err(ClaimsError::Unavailable(why)) => failed(format!("the identity provider could not be used: {why}")),
            Err(ClaimsError::Refused(why)) => failed(token_problem_words(&why)),
        }
    }

    /// Records a test sign-in's outcome on the draft and answers with a page saying
    /// what happened (escaped by the template). No session is created.
    async fn record_test(&self, ctx: &Ctx<'_>, run: &TestRun, outcome: TestOutcome) -> Response<Bytes> {
        let t = TenantSso::of(ctx.entry, &ctx.origin);
        let actor = crate::audit::Actor {
            name: run.admin.clone(),
            source_ip: ctx.ip.clone(),
            system: "console".into(),
        };
        let recorded = self
            .sso_admin
            .record_test(&t, &run.digest, outcome, &actor, ctx.now)
            .await;
        let view = match recorded {
            Ok(v) => v,
            Err(e) => return test_refusal(ctx, &e),
        };
        let (status, heading, message) = if view.passed {
            let claims = view
                .claims
                .as_ref()
                .map(|c| serde_json::to_string_pretty(c).unwrap_or_default())
                .unwrap_or_default();
            let roles = if view.roles.is_empty() {
                "none".to_string()
            } else {
                view.roles.join(", ")
            };
            (
                StatusCode::OK,
                "Test sign-in passed",
                format!(
                    "The draft signs users in. Roles they would get: {roles}. Claims the identity provider sent: {claims}"
                ),
            )
        } else {
            (
                StatusCode::OK,
                "Test sign-in failed",
                format!(
                    "The draft does not sign users in: {}.",
                    view.error.as_deref().unwrap_or("unknown error")
                ),
            )
        };
        let links = [super::pages::Link {
            href: "/.portcullis/admin/sso",
            text: "Back to the single sign-on wizard",
        }];
        super::pages::message(
            ctx.entry,
            status,
            super::pages::MessageView {
                tenant_name: "",
                heading,
                message: &message,
                since: None,
                next: Some("Close this tab and return to the wizard, where the result is shown.".into()),
                links: &links,
                request_id: None,
            },
        )
    }
}

/// The wizard's version as the sign-in takes it.
fn wizard_sso(v: OpenedSso) -> LiveSso<'static> {
    let admin_group = v.admin_group.clone();
    LiveSso::Wizard {
        config: v.into_sso_config(),
        admin_group,
    }
}

/// Why a test sign-in cannot run or be recorded, as a page: the service's words (409:
/// no draft, managed by the policy files, draft changed), or "unavailable".
fn test_refusal(ctx: &Ctx<'_>, e: &SsoAdminError) -> Response<Bytes> {
    if matches!(e, SsoAdminError::Store(_) | SsoAdminError::Seal(_)) {
        tracing::error!(organization.id = %ctx.entry.tenant.id, request_id = ctx.request_id, error = %e, "single sign-on test unavailable");
        return PageError::Unavailable.into_response(ctx.entry, ctx.request_id);
    }
    let message = format!("No test sign-in: {e}.");
    let links = [super::pages::Link {
        href: "/.portcullis/admin/sso",
        text: "Back to the single sign-on wizard",
    }];
    super::pages::message(
        ctx.entry,
        StatusCode::CONFLICT,
        super::pages::MessageView {
            tenant_name: "",
            heading: "Test sign-in",
            message: &message,
            since: None,
            next: None,
            links: &links,
            request_id: Some(ctx.request_id),
        },
    )
}

/// The OAuth error code of an IdP's answer, reduced to the characters codes have.
fn idp_error_code(error: &str) -> String {
    error
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .take(64)
        .collect()
}

/// An OAuth error code (RFC 6749 sections 4.1.2.1 and 5.2) in plain words for the admin
/// who set up the draft.
fn idp_refusal_words(code: &str) -> String {
    let meaning = match code {
        "invalid_client" => "the client id or client secret is wrong",
        "unauthorized_client" => "this client may not use the authorization code flow",
        "invalid_grant" => "the code was refused (expired, already used, or another redirect URI)",
        "invalid_scope" => "a requested scope is unknown to the identity provider",
        "access_denied" => "the user or the identity provider refused the sign-in",
        "invalid_request" => {
            "the identity provider found the request malformed (check the redirect URI registered there)"
        }
        "unsupported_response_type" => "the identity provider does not offer the code flow to this client",
        "login_required" | "interaction_required" | "consent_required" => "the user did not finish signing in",
        "server_error" | "temporarily_unavailable" => "the identity provider failed; try again",
        _ => "see the identity provider's logs",
    };
    format!("the IdP answered {code}: {meaning}")
}

/// A failed code exchange or ID token check in plain words: the IdP's OAuth error code
/// explained when it gave one.
fn token_problem_words(why: &str) -> String {
    let code = why
        .strip_prefix("the identity provider refused the code (")
        .and_then(|rest| rest.strip_suffix(')'));
    match code {
        Some(code) => idp_refusal_words(&idp_error_code(code)),
        None => format!("the ID token was refused: {why}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// If this broke, an admin whose test failed would read a bare OAuth code, or
    /// whatever the IdP put in its error, instead of what to fix.
    #[test]
    fn an_idp_refusal_is_told_in_plain_words() {
        assert_eq!(
            token_problem_words("the identity provider refused the code (invalid_client)"),
            "the IdP answered invalid_client: the client id or client secret is wrong"
        );
        assert_eq!(
            idp_refusal_words(&idp_error_code("access_denied<script>")),
            "the IdP answered access_deniedscript: see the identity provider's logs"
        );
        assert_eq!(
            token_problem_words("nonce mismatch"),
            "the ID token was refused: nonce mismatch"
        );
    }

    /// If this broke, a callback naming `state` or `code` twice could be checked with
    /// one copy and used with the other.
    #[test]
    fn a_callback_parameter_given_twice_is_found() {
        for (query, repeated) in [
            ("code=A&code=B&state=S", Some("code")),
            ("code=A&state=S&state=S", Some("state")),
            ("code=A&state=S&st%61te=T", Some("state")),
            ("code=A&state=S&iss=x&iss=x", Some("iss")),
            ("error=a&error=b&state=S", Some("error")),
            ("code=A&state=S&iss=x&session_state=1&session_state=2", None),
            ("code=A&state=S", None),
            ("", None),
        ] {
            assert_eq!(repeated_callback_parameter(Some(query)), repeated, "{query}");
        }
        assert_eq!(repeated_callback_parameter(None), None);
    }
}
