//! The tenant admin's kill switches on the tenant's own host: a user with the
//! `tenant-admin` role trips and resets account switches of their own tenant, on the
//! page `/.portcullis/admin` (forms posting to `/.portcullis/admin/breaker`) and through
//! its JSON twins (`PUT|DELETE /.portcullis/api/admin/accounts/{subject}/breaker`,
//! `GET /.portcullis/api/admin/breakers`). Tenant and tier switches stay with operators.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::web::{self, json_error};
use super::{Ctx, Portal, json_body, pages, unauthenticated};
use crate::killswitch::service::Actor;
use crate::killswitch::{Expiry, KillSwitchError, Scope, TripRequest};

/// The role that may act here.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// `PUT` body.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TripBody {
    reason: String,
    #[serde(default)]
    message: Option<String>,
    /// Relative expiry (`30m`, `2h`).
    #[serde(default)]
    expires_in: Option<String>,
}

impl Portal {
    /// `/.portcullis/api/admin/...`; `path` is below `admin/`.
    pub(super) async fn api_admin(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        method: Method,
        path: &str,
    ) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return unauthenticated();
        };
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return json_error(
                StatusCode::FORBIDDEN,
                "forbidden",
                "Only tenant admins may manage breakers.",
            );
        }
        let actor = Actor {
            name: format!("user:{}", session.subject),
            source_ip: ctx.ip.clone(),
            system: "console".into(),
        };
        if method == Method::GET && path == "breakers" {
            return match self.switches.list(ctx.config).await {
                Ok(all) => {
                    let mine: Vec<_> = all
                        .into_iter()
                        .filter(|k| k.scope.tenant() == Some(ctx.entry.tenant.id.as_str()) && k.in_force(ctx.now))
                        .collect();
                    web::json(StatusCode::OK, &json!({ "breakers": mine }))
                }
                Err(e) => switch_error(&e),
            };
        }
        let Some(subject) = path
            .strip_prefix("accounts/")
            .and_then(|p| p.strip_suffix("/breaker"))
            .and_then(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok())
        else {
            return json_error(StatusCode::NOT_FOUND, "not_found", "No such API.");
        };
        let idp = web::query_param(req.uri().query(), "idp");
        let subject = match self.account_key(ctx, idp.as_deref(), &subject) {
            Ok(key) => key,
            Err(e) => return json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        };
        let scope = Scope::Account {
            tier: ctx.entry.tier.name.clone(),
            tenant: ctx.entry.tenant.id.clone(),
            subject,
        };
        match method {
            Method::PUT => {
                let body: TripBody = match json_body(req).await {
                    Ok(b) => b,
                    Err(resp) => return resp,
                };
                match self.trip_account(ctx, &session.subject, &actor, scope, body).await {
                    Ok(result) => web::json(StatusCode::OK, &serde_json::to_value(&result).unwrap_or_default()),
                    Err(e) => e.json(),
                }
            }
            Method::DELETE => match self.switches.reset(ctx.config, &scope, "", &actor, ctx.now).await {
                Ok(Some(_)) => web::json(StatusCode::OK, &json!({ "status": "reset" })),
                Ok(None) => json_error(StatusCode::NOT_FOUND, "not_found", "No breaker is tripped there."),
                Err(e) => switch_error(&e),
            },
            _ => json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "Use PUT or DELETE.",
            ),
        }
    }
}

/// Why a tenant admin's trip was refused.
enum AdminRefusal {
    SelfLockout,
    Switch(KillSwitchError),
}

impl AdminRefusal {
    fn message(&self) -> String {
        match self {
            AdminRefusal::SelfLockout => "You cannot trip the breaker of your own account.".into(),
            AdminRefusal::Switch(e) => switch_message(e),
        }
    }

    fn json(&self) -> Response<Bytes> {
        match self {
            AdminRefusal::SelfLockout => json_error(StatusCode::CONFLICT, "self_lockout", &self.message()),
            AdminRefusal::Switch(e) => switch_error(e),
        }
    }
}

impl Portal {
    /// The account key a tenant admin names: a local account by default, `idp=sso` for
    /// the tenant's identity provider (see `crate::account::named`).
    fn account_key(
        &self,
        ctx: &Ctx<'_>,
        idp: Option<&str>,
        subject: &str,
    ) -> Result<String, crate::account::NameError> {
        let issuer = ctx.entry.tenant.sso.as_ref().map(|s| s.issuer.as_str());
        crate::account::named(idp, subject, issuer)
    }

    /// Trips an account switch of the admin's tenant (never the admin's own account).
    async fn trip_account(
        &self,
        ctx: &Ctx<'_>,
        admin_subject: &str,
        actor: &Actor,
        scope: Scope,
        body: TripBody,
    ) -> Result<crate::killswitch::TripResult, AdminRefusal> {
        if matches!(&scope, Scope::Account { subject, .. } if subject == admin_subject) {
            return Err(AdminRefusal::SelfLockout);
        }
        let req = TripRequest {
            scope,
            reason: body.reason,
            message: body.message.filter(|m| !m.trim().is_empty()),
            expiry: body.expires_in.map_or(Expiry::Never, Expiry::After),
            idempotency_key: None,
        };
        self.switches
            .trip(ctx.config, req, actor, ctx.now)
            .await
            .map_err(AdminRefusal::Switch)
    }

    /// `GET /.portcullis/admin`: the tenant's local accounts with their switches.
    pub(super) async fn admin_page(&self, ctx: &Ctx<'_>, notice: Option<&str>) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return web::see_other("/.portcullis/login?rd=%2F.portcullis%2Fadmin");
        };
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return pages::message(
                ctx.entry,
                StatusCode::FORBIDDEN,
                "Tenant admin",
                "Only tenant admins may open this page.",
                Some(("/.portcullis/account", "Your account")),
            );
        }
        let (Ok(store), Ok(switches)) = (self.sessions.store(ctx.tier()), self.switches.list(ctx.config).await) else {
            return pages::unavailable(ctx.entry);
        };
        let Ok(users) = store.list_users(&ctx.entry.tenant.id).await else {
            return pages::unavailable(ctx.entry);
        };
        let tenant = ctx.entry.tenant.id.as_str();
        let switched = |subject: &str| {
            switches
                .iter()
                .find(|k| k.in_force(ctx.now) && matches!(&k.scope, Scope::Account { tenant: t, subject: s, .. } if t == tenant && s == subject))
                .map(|k| match k.expires_at {
                    Some(e) => format!("{} (until {})", k.reason, web::time(e)),
                    None => k.reason.clone(),
                })
        };
        let mut accounts: Vec<pages::AdminAccountRow> = users
            .iter()
            .map(|u| pages::AdminAccountRow {
                subject: u.username.clone(),
                display_name: u.display_name.clone(),
                roles: u.roles.join(", "),
                suspended: switched(&u.username),
                is_self: u.username == session.subject,
            })
            .collect();
        for k in switches.iter().filter(|k| k.in_force(ctx.now)) {
            if let Scope::Account { tenant: t, subject, .. } = &k.scope
                && t == tenant
                && !accounts.iter().any(|a| &a.subject == subject)
            {
                accounts.push(pages::AdminAccountRow {
                    subject: subject.clone(),
                    display_name: subject.clone(),
                    roles: String::new(),
                    suspended: switched(subject),
                    is_self: false,
                });
            }
        }
        pages::admin(ctx.entry, &session.csrf_token, notice, accounts)
    }

    /// `POST /.portcullis/admin/breaker`: the page's trip and reset forms.
    pub(super) async fn admin_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Response<Bytes> {
        let Some(session) = ctx.session.clone() else {
            return web::see_other("/.portcullis/login?rd=%2F.portcullis%2Fadmin");
        };
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return self.admin_page(ctx, None).await;
        }
        let Ok((_, body, _)) = self.session_form(req, ctx, &session).await else {
            return pages::bad_form(ctx.entry);
        };
        let field = |name: &str| web::form_field(&body, name).unwrap_or_default();
        let subject = field("subject").trim().to_string();
        let idp = field("idp");
        let Ok(key) = self.account_key(ctx, Some(idp.as_str()), &subject) else {
            return self
                .admin_page(
                    ctx,
                    Some("Not done: name the account by 1 to 256 printable characters and its identity provider."),
                )
                .await;
        };
        let scope = Scope::Account {
            tier: ctx.entry.tier.name.clone(),
            tenant: ctx.entry.tenant.id.clone(),
            subject: key,
        };
        let actor = Actor {
            name: format!("user:{}", session.subject),
            source_ip: ctx.ip.clone(),
            system: "console".into(),
        };
        let notice = match field("action").as_str() {
            "trip" => {
                let body = TripBody {
                    reason: field("reason"),
                    message: Some(field("message")),
                    expires_in: Some(field("expires_in")),
                };
                match self.trip_account(ctx, &session.subject, &actor, scope, body).await {
                    Ok(r) => format!(
                        "Breaker tripped for {subject}: {} session(s) ended.",
                        r.switch.sessions_ended
                    ),
                    Err(e) => format!("Not tripped: {}", e.message()),
                }
            }
            "reset" => match self.switches.reset(ctx.config, &scope, "", &actor, ctx.now).await {
                Ok(Some(_)) => format!("Breaker reset for {subject}."),
                Ok(None) => format!("No breaker was tripped for {subject}."),
                Err(e) => format!("Not reset: {}", switch_message(&e)),
            },
            _ => "Unknown action.".to_string(),
        };
        self.admin_page(ctx, Some(&notice)).await
    }
}

/// What a tenant admin is told about a failed trip or reset: the refusal itself, but
/// never a store's internal error (logged instead).
fn switch_message(e: &KillSwitchError) -> String {
    match e {
        KillSwitchError::Store(err) => {
            tracing::error!(error = %err, "kill switch store call failed");
            "The breaker store is unavailable. Try again shortly.".to_string()
        }
        other => other.to_string(),
    }
}

fn switch_error(e: &KillSwitchError) -> Response<Bytes> {
    match e {
        KillSwitchError::UnknownTier | KillSwitchError::UnknownTenant => {
            json_error(StatusCode::NOT_FOUND, "not_found", &e.to_string())
        }
        KillSwitchError::Invalid(m) => json_error(StatusCode::BAD_REQUEST, "bad_request", m),
        KillSwitchError::Expiry(_) => json_error(StatusCode::BAD_REQUEST, "bad_request", &e.to_string()),
        KillSwitchError::IdempotencyConflict => {
            json_error(StatusCode::CONFLICT, "idempotency_conflict", &e.to_string())
        }
        KillSwitchError::Store(err) => {
            tracing::error!(error = %err, "kill switch store call failed");
            json_error(StatusCode::SERVICE_UNAVAILABLE, "unavailable", "Try again shortly.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;

    /// If this broke, a tenant admin would read the store's internal error text.
    #[test]
    fn store_errors_are_not_shown_to_tenant_admins() {
        let e = KillSwitchError::Store(StoreError::Unavailable("sqlite: DatabaseBusy".into()));
        assert!(!switch_message(&e).contains("sqlite"));
        assert!(!AdminRefusal::Switch(e).message().contains("sqlite"));
        let e = KillSwitchError::Invalid("reason is required".into());
        assert_eq!(switch_message(&e), "reason is required");
    }
}
