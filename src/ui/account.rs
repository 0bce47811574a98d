//! The user's session center on tenant hosts: `/.portcullis/account` (live sessions,
//! sign-in history) and its forms under `account/...` (end one session, end the
//! others, change the password). The JSON twins are `api.rs`; password changes are
//! `auth::accounts`; refusals are `error.rs`.

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;

use super::error::PageError;
use super::{Ctx, Portal, pages, web};
use crate::records::{Revocation, SessionRecord};
use crate::store::StoreError;

impl Portal {
    pub(super) async fn account_page(
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
            (Ok(sessions), Ok(history)) => Ok(pages::account(
                ctx.entry, &session, &sessions, &history, notice, ctx.now,
            )),
            _ => Err(PageError::Unavailable),
        }
    }

    pub(super) async fn account_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        action: &str,
    ) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login"));
        };
        let (ua, body, _) = self.session_form(req, ctx, &session).await?;
        if action == "sessions/end-others" {
            self.end_other_sessions(ctx, &session)
                .await
                .map_err(|_| PageError::Unavailable)?;
            return Ok(web::see_other("/.portcullis/account"));
        }
        if let Some(id) = action.strip_prefix("sessions/").and_then(|p| p.strip_suffix("/end")) {
            return match self.end_session_by_id(ctx, &session, id).await {
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
                pages::MessageView {
                    heading: "Password changed",
                    message: "Your password was changed and every session ended.",
                    next: Some("Sign in again with your new password.".into()),
                    links: &[pages::SIGN_IN],
                    ..Default::default()
                },
            );
            resp.headers_mut().append(
                http::header::SET_COOKIE,
                web::set_cookie(&ctx.session_cookie(), "", None),
            );
            return Ok(resp);
        }
        Err(PageError::NotFound)
    }

    /// Ends every session of the signed-in user but this one (the account page and its
    /// JSON twin); returns how many ended.
    pub(super) async fn end_other_sessions(&self, ctx: &Ctx<'_>, session: &SessionRecord) -> Result<usize, StoreError> {
        let ids = self
            .sessions
            .revoke_user(
                ctx.tier(),
                &session.tenant,
                &session.subject,
                Some(&session.id_hash),
                &ended_by_user(ctx, session),
            )
            .await?;
        Ok(ids.len())
    }

    /// Ends one session of the signed-in user, named by its public id (this one too).
    pub(super) async fn end_session_by_id(&self, ctx: &Ctx<'_>, session: &SessionRecord, id: &str) -> Result<bool, ()> {
        let store = self.sessions.store(ctx.tier()).map_err(|_| ())?;
        let Some(target) = store
            .find_user_session_by_public_id(&session.tenant, &session.subject, id, ctx.now)
            .await
            .map_err(|_| ())?
        else {
            return Ok(false);
        };
        self.sessions
            .revoke(ctx.tier(), &target.id_hash, &ended_by_user(ctx, session))
            .await
            .map_err(|_| ())
    }
}

/// A session ended by its own user.
fn ended_by_user(ctx: &Ctx<'_>, session: &SessionRecord) -> Revocation {
    Revocation {
        at: ctx.now,
        by: session.subject.clone(),
        reason: "ended_by_user".into(),
    }
}
