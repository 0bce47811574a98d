//! The tenant admin's users: the tenant's local accounts with their second factor and
//! suspension (`/.portcullis/admin/users`, `GET /.portcullis/api/admin/users`), and the
//! MFA reset (form `POST /.portcullis/admin/users/mfa-reset`,
//! `DELETE /.portcullis/api/admin/users/{username}/mfa`). The reset itself is
//! `auth::accounts` (the CLI's `user reset-mfa` too): it audits and ends the sessions.
//! A tenant admin never resets their own second factor (403): the reset leaves the
//! account to enrol a new one with the password alone, so a session plus the password
//! would replace the authenticator without the current factor (MFA-07).

use askama::Template;
use bytes::Bytes;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use serde_json::json;

use super::{account_switch, console_actor, notice_account, page_admin, render, sessions_count};
use crate::auth::accounts::AccountError;
use crate::records::SessionRecord;
use crate::ui::api::ApiError;
use crate::ui::error::PageError;
use crate::ui::{Ctx, Portal, web};

/// One local account as the tenant admin sees it (page row and JSON item).
struct UserRow {
    username: String,
    display_name: String,
    /// Roles, comma separated (empty: none).
    roles: String,
    role_list: Vec<String>,
    totp_enrolled: bool,
    /// Recovery codes not used yet.
    recovery_codes: usize,
    /// The reason of the account switch in force, if one is.
    suspended: Option<String>,
    /// The signed-in admin's own account: its MFA is reset by another admin only.
    is_own: bool,
}

#[derive(Template)]
#[template(path = "admin_users.html")]
struct UsersPage<'a> {
    tenant_name: &'a str,
    csrf: &'a str,
    notice: Option<String>,
    users: Vec<UserRow>,
}

/// Why the user list cannot be read (the store or the switch service failed).
struct Unreadable;

impl Portal {
    /// The tenant's local accounts, sorted by user name, with their switches.
    async fn tenant_users(&self, ctx: &Ctx<'_>) -> Result<Vec<UserRow>, Unreadable> {
        let store = self.sessions.store(ctx.tier()).map_err(|_| Unreadable)?;
        let users = store.list_users(&ctx.entry.tenant.id).await.map_err(|_| Unreadable)?;
        let switches = self.switches.list(ctx.config).await.map_err(|_| Unreadable)?;
        let tenant = ctx.entry.tenant.id.as_str();
        Ok(users
            .into_iter()
            .map(|u| UserRow {
                suspended: account_switch(&switches, tenant, &u.username, ctx.now).map(|k| k.reason.clone()),
                roles: u.roles.join(", "),
                role_list: u.roles,
                totp_enrolled: u.totp_secret.is_some(),
                recovery_codes: u.recovery_code_hashes.len(),
                is_own: false,
                username: u.username,
                display_name: u.display_name,
            })
            .collect())
    }

    /// Resets the MFA of `username` of the host's tenant (a name of another tenant is
    /// not found here); returns the sessions ended.
    async fn reset_tenant_mfa(
        &self,
        ctx: &Ctx<'_>,
        admin: &SessionRecord,
        username: &str,
    ) -> Result<usize, AccountError> {
        let result = self
            .accounts
            .reset_mfa(
                ctx.tier(),
                &ctx.entry.tenant.id,
                username,
                &console_actor(ctx, admin),
                ctx.now,
            )
            .await;
        if let Err(AccountError::Store(e)) = &result {
            tracing::error!(request_id = ctx.request_id, error = %e, "tenant admin's MFA reset failed");
        }
        result
    }

    /// Whether `username` is the signed-in admin's own local account.
    fn is_own_account(admin: &SessionRecord, username: &str) -> bool {
        admin.idp == crate::account::LOCAL_IDP && admin.subject == username
    }

    /// `GET /.portcullis/admin/users`.
    pub(in crate::ui) async fn admin_users_page(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/users") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let mut users = self
            .tenant_users(ctx)
            .await
            .map_err(|Unreadable| PageError::Unavailable)?;
        for u in &mut users {
            u.is_own = Self::is_own_account(&session, &u.username);
        }
        Ok(render(&UsersPage {
            tenant_name: &ctx.entry.tenant.name,
            csrf: &session.csrf_token,
            notice: users_notice(req.uri().query()),
            users,
        }))
    }

    /// `POST /.portcullis/admin/users/mfa-reset` (fields `csrf`, `username`): resets,
    /// then back to the list (303) with a fixed notice.
    pub(in crate::ui) async fn admin_users_form(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin/users") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let (_, body, _) = self.session_form(req, ctx, &session).await?;
        let username = web::form_field(&body, "username").unwrap_or_default();
        if Self::is_own_account(&session, &username) {
            return Err(PageError::SelfMfaReset);
        }
        match self.reset_tenant_mfa(ctx, &session, &username).await {
            Ok(ended) => {
                let account = percent_encoding::utf8_percent_encode(&username, percent_encoding::NON_ALPHANUMERIC);
                Ok(web::see_other(&format!(
                    "/.portcullis/admin/users?done=mfa_reset&account={account}&ended={ended}"
                )))
            }
            Err(AccountError::NotFound) => Err(PageError::NotFound),
            Err(_) => Err(PageError::Unavailable),
        }
    }

    /// `GET /.portcullis/api/admin/users`.
    pub(super) async fn api_admin_users(&self, ctx: &Ctx<'_>) -> Result<Response<Bytes>, ApiError> {
        let users = self
            .tenant_users(ctx)
            .await
            .map_err(|Unreadable| ApiError::Unavailable)?;
        let items: Vec<_> = users
            .iter()
            .map(|u| {
                json!({
                    "username": u.username, "display_name": u.display_name, "roles": u.role_list,
                    "totp_enrolled": u.totp_enrolled, "recovery_codes_left": u.recovery_codes,
                    "suspended": u.suspended.is_some(), "suspension_reason": u.suspended,
                })
            })
            .collect();
        Ok(web::json(StatusCode::OK, &json!({ "users": items })))
    }

    /// `DELETE /.portcullis/api/admin/users/{username}/mfa`.
    pub(super) async fn api_admin_reset_mfa(
        &self,
        ctx: &Ctx<'_>,
        admin: &SessionRecord,
        username: &str,
    ) -> Result<Response<Bytes>, ApiError> {
        if Self::is_own_account(admin, username) {
            return Err(ApiError::SelfMfaReset);
        }
        match self.reset_tenant_mfa(ctx, admin, username).await {
            Ok(ended) => Ok(web::json(
                StatusCode::OK,
                &json!({ "status": "mfa_reset", "sessions_ended": ended }),
            )),
            Err(AccountError::NotFound) => Err(ApiError::NotFound("No such user.")),
            Err(_) => Err(ApiError::Unavailable),
        }
    }
}

/// The notice of `/.portcullis/admin/users?done=mfa_reset&account=...&ended=N`: a fixed
/// sentence; the account name is escaped by the template like any text.
fn users_notice(query: Option<&str>) -> Option<String> {
    let account = notice_account(query)?;
    let ended = web::query_param(query, "ended").and_then(|n| n.parse::<u64>().ok())?;
    match web::query_param(query, "done")?.as_str() {
        "mfa_reset" => Some(format!(
            "MFA reset for {account}: {} ended. They set up an authenticator again at their next sign-in.",
            sessions_count(ended)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::users_notice;

    /// If this broke, the page a reset lands on would say nothing, or show what a
    /// crafted link puts in it.
    #[test]
    fn a_reset_reads_as_a_fixed_sentence() {
        assert_eq!(
            users_notice(Some("done=mfa_reset&account=bob&ended=1")).as_deref(),
            Some("MFA reset for bob: 1 session ended. They set up an authenticator again at their next sign-in.")
        );
        for bad in [
            "done=mfa_reset&account=bob",
            "done=other&account=bob&ended=1",
            "done=mfa_reset&account=a%0Ab&ended=1",
        ] {
            assert_eq!(users_notice(Some(bad)), None, "{bad}");
        }
    }
}
