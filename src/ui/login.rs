//! Sign-in pages on tenant hosts: `/.portcullis/login` (password), `mfa` (second
//! factor), `enrol` (first-login TOTP enrolment) and `logout`; and the sign-in steps
//! the JSON API and single sign-on share: the pending sign-in (pre-MFA cookie), the
//! session cookie, the CSRF cookie of anonymous forms, ending the current session.
//! The flow itself is `auth::login`; refusals are `error.rs`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::PageError;
use super::readable::{self, Moment};
use super::{Ctx, Portal, pages, read_form, web};
use crate::auth::login::NewSession;
use crate::auth::preauth::{self, PREAUTH_TTL_SECS, PreAuth};
use crate::records::{Revocation, SessionRecord};
use crate::telemetry::{EventOutcome, SecurityEvent};

/// Where signing out lands: the sign-in page, saying so.
const SIGNED_OUT: &str = "/.portcullis/login?signed_out=1";

/// What a user can do while the tenant is suspended: wait for the switch's expiry, or
/// for the organisation to lift it.
pub(super) fn suspended_next(ks: &crate::killswitch::KillSwitch, now: i64) -> String {
    match ks.expires_at {
        Some(at) if at > now => format!(
            "Access returns on its own in about {}; this page then lets you sign in again.",
            readable::duration(u64::try_from(at - now).unwrap_or(0))
        ),
        _ => "Try again later: this page lets you sign in again once access is restored.".to_string(),
    }
}

impl Portal {
    /// `GET /.portcullis/login`: the form, offering SSO when the tenant has it; straight
    /// to the IdP when SSO is enforced. The SSO settings are read for each request
    /// ([`Portal::live_sso`]), so a wizard activation or roll-back applies at once; when
    /// they cannot be read the page is 503 (a password form could not be honoured).
    pub(super) async fn login_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let rd = web::safe_redirect(web::query_param(req.uri().query(), "rd").as_deref());
        if let Some(ks) = &ctx.suspended {
            return Ok(pages::message(
                ctx.entry,
                StatusCode::OK,
                pages::MessageView {
                    heading: "Access suspended",
                    message: &ks.message,
                    since: Some(Moment::at(ks.tripped_at, ctx.now)),
                    next: Some(suspended_next(ks, ctx.now)),
                    ..Default::default()
                },
            ));
        }
        if ctx.session.is_some() {
            return Ok(web::see_other(&rd));
        }
        let live = self.live_sso(ctx).await?;
        // SSO enforced: straight to the IdP, unless a break-glass admin asks for the form
        // (and the tenant has one).
        let form_asked = web::query_param(req.uri().query(), "local").as_deref() == Some("1");
        if live
            .as_ref()
            .is_some_and(|s| s.config().enforce && !(form_asked && s.config().offers_passwords()))
        {
            return Ok(web::see_other(&format!(
                "/.portcullis/login/sso?rd={}",
                percent_encoding::utf8_percent_encode(&rd, percent_encoding::NON_ALPHANUMERIC)
            )));
        }
        let (csrf, set) = self.csrf_for(req, ctx);
        // A fixed notice chosen by a flag: nothing from the query is shown.
        let notice = (web::query_param(req.uri().query(), "signed_out").as_deref() == Some("1"))
            .then_some("You are signed out.");
        let mut resp = pages::login(ctx.entry, live.is_some(), &csrf, &rd, None, notice);
        if let Some(c) = set {
            resp.headers_mut().append(http::header::SET_COOKIE, c);
        }
        Ok(resp)
    }

    pub(super) async fn login_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        // Fails closed: no password is checked while the SSO settings cannot be read.
        let live = self.live_sso(ctx).await?;
        if live.as_ref().is_some_and(|s| !s.config().offers_passwords()) {
            return Err(PageError::NotFound);
        }
        let (ua, body, csrf) = self.form(req, ctx).await?;
        let rd = web::safe_redirect(web::form_field(&body, "rd").as_deref());
        let username = web::form_field(&body, "username").unwrap_or_default();
        let password = web::form_field(&body, "password").unwrap_or_default();
        let login_ctx = ctx.password_ctx(&ua, live.as_ref());
        match self.login.password(&login_ctx, &username, &password, &rd).await {
            Ok(pre) => Ok(self.to_second_factor(ctx, &pre)),
            Err(e) => {
                let e = PageError::SignIn(e);
                Ok(e.form(
                    pages::login(ctx.entry, live.is_some(), &csrf, &rd, Some(&e.message()), None),
                    ctx.request_id,
                ))
            }
        }
    }

    pub(super) fn mfa_page(&self, req: &Request<Incoming>, ctx: &Ctx<'_>, error: Option<&str>) -> Response<Bytes> {
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

    pub(super) async fn mfa_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
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

    pub(super) async fn enrol_page(
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

    pub(super) async fn enrol_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
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

    pub(super) fn logout_page(&self, ctx: &Ctx<'_>) -> Response<Bytes> {
        match &ctx.session {
            Some(s) => pages::logout(ctx.entry, &s.csrf_token),
            None => web::see_other("/.portcullis/login"),
        }
    }

    pub(super) async fn logout_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login"));
        };
        self.session_form(req, ctx, &session).await?;
        // RP-initiated logout: an SSO user is signed out at the IdP too, when it can.
        let target = match session.auth_method.as_str() {
            "oidc" => self.sso_logout_target(ctx).await,
            _ => None,
        };
        let next = target.unwrap_or_else(|| SIGNED_OUT.to_string());
        self.end_current(ctx, &session, "logout", web::see_other(&next))
            .await
            .map_err(|()| PageError::Unavailable)
    }

    /// Ends the current session and clears its cookie on `resp`; `Err` when the store
    /// failed (nothing changed then).
    pub(super) async fn end_current(
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
            source_ip: Some(&ctx.ip),
            user: Some(&session.subject),
            tenant: Some(&session.tenant),
            tier: Some(&session.tier),
            request_id: Some(ctx.request_id),
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
    pub(super) fn signed_in(&self, ctx: &Ctx<'_>, mut resp: Response<Bytes>, session: &NewSession) -> Response<Bytes> {
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
    pub(super) fn to_second_factor(&self, ctx: &Ctx<'_>, pre: &PreAuth) -> Response<Bytes> {
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

    pub(super) fn pre_cookie(&self, ctx: &Ctx<'_>, pre: &PreAuth) -> http::HeaderValue {
        web::set_cookie(
            &ctx.pre_cookie(),
            &preauth::seal(pre, ctx.key()),
            Some(PREAUTH_TTL_SECS),
        )
    }

    pub(super) fn pending(&self, headers: &http::HeaderMap, ctx: &Ctx<'_>, stage: &str) -> Option<PreAuth> {
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
        let cookie = ctx.csrf_cookie();
        read_form(req, ctx, |headers| {
            web::single_cookie(headers, &cookie).unwrap_or_default().to_string()
        })
        .await
    }
}
