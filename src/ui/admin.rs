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

use super::api::{ApiError, json_body};
use super::error::PageError;
use super::readable::Moment;
use super::web;
use super::{Ctx, Portal, pages};
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
    ) -> Result<Response<Bytes>, ApiError> {
        let session = ctx.session.clone().ok_or(ApiError::Unauthenticated)?;
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return Err(ApiError::NotTenantAdmin);
        }
        let actor = Actor {
            name: format!("user:{}", session.subject),
            source_ip: ctx.ip.clone(),
            system: "console".into(),
        };
        if method == Method::GET && path == "breakers" {
            let all = self
                .switches
                .list(ctx.config)
                .await
                .map_err(|e| ApiError::Trip(TripRefusal::Switch(e)))?;
            let mine: Vec<_> = all
                .into_iter()
                .filter(|k| k.scope.tenant() == Some(ctx.entry.tenant.id.as_str()) && k.in_force(ctx.now))
                .collect();
            return Ok(web::json(StatusCode::OK, &json!({ "breakers": mine })));
        }
        let Some(subject) = path
            .strip_prefix("accounts/")
            .and_then(|p| p.strip_suffix("/breaker"))
            .and_then(|s| percent_encoding::percent_decode_str(s).decode_utf8().ok())
        else {
            return Err(ApiError::NotFound("No such API."));
        };
        let idp = web::query_param(req.uri().query(), "idp");
        let subject = self
            .account_key(ctx, idp.as_deref(), &subject)
            .map_err(|e| ApiError::BadRequest(e.to_string()))?;
        let scope = Scope::Account {
            tier: ctx.entry.tier.name.clone(),
            tenant: ctx.entry.tenant.id.clone(),
            subject,
        };
        match method {
            Method::PUT => {
                let body: TripBody = json_body(req).await?;
                let result = self
                    .trip_account(ctx, &session.subject, &actor, scope, body)
                    .await
                    .map_err(ApiError::Trip)?;
                Ok(web::json(
                    StatusCode::OK,
                    &serde_json::to_value(&result).unwrap_or_default(),
                ))
            }
            Method::DELETE => match self.switches.reset(ctx.config, &scope, "", &actor, ctx.now).await {
                Ok(Some(_)) => Ok(web::json(StatusCode::OK, &json!({ "status": "reset" }))),
                Ok(None) => Err(ApiError::NotFound("No breaker is tripped there.")),
                Err(e) => Err(ApiError::Trip(TripRefusal::Switch(e))),
            },
            _ => Err(ApiError::MethodNotAllowed),
        }
    }
}

/// Why a tenant admin's trip or reset was refused; the page and the JSON API each
/// answer it in their `error.rs`.
#[derive(Debug)]
pub(super) enum TripRefusal {
    /// A tenant admin may not cut off their own account.
    SelfLockout,
    /// The kill switch service refused.
    Switch(KillSwitchError),
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
    ) -> Result<crate::killswitch::TripResult, TripRefusal> {
        if matches!(&scope, Scope::Account { subject, .. } if subject == admin_subject) {
            return Err(TripRefusal::SelfLockout);
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
            .map_err(TripRefusal::Switch)
    }

    /// `GET /.portcullis/admin`: the tenant's local accounts with their switches.
    pub(super) async fn admin_page(&self, ctx: &Ctx<'_>, notice: Option<&str>) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login?rd=%2F.portcullis%2Fadmin"));
        };
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return Err(PageError::NotTenantAdmin);
        }
        // Store failures show as "unavailable", never with the store's text.
        let (Ok(store), Ok(switches)) = (self.sessions.store(ctx.tier()), self.switches.list(ctx.config).await) else {
            return Err(PageError::Unavailable);
        };
        let Ok(users) = store.list_users(&ctx.entry.tenant.id).await else {
            return Err(PageError::Unavailable);
        };
        let tenant = ctx.entry.tenant.id.as_str();
        let switched = |subject: &str| {
            switches
                .iter()
                .find(|k| k.in_force(ctx.now) && matches!(&k.scope, Scope::Account { tenant: t, subject: s, .. } if t == tenant && s == subject))
                .map(|k| pages::AdminSwitch {
                    reason: k.reason.clone(),
                    expires: k.expires_at.map(|e| Moment::at(e, ctx.now)),
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
        Ok(pages::admin(ctx.entry, &session.csrf_token, notice, accounts))
    }

    /// `POST /.portcullis/admin/breaker`: the page's trip and reset forms.
    pub(super) async fn admin_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let Some(session) = ctx.session.clone() else {
            return Ok(web::see_other("/.portcullis/login?rd=%2F.portcullis%2Fadmin"));
        };
        if !session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE) {
            return self.admin_page(ctx, None).await;
        }
        let (_, body, _) = self.session_form(req, ctx, &session).await?;
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
        // Done: back to the page (303), so a reload shows it again instead of posting
        // the form twice; the page reads the outcome from fixed flags. Refused: the page
        // again, with the refusal.
        let account = percent_encoding::utf8_percent_encode(&subject, percent_encoding::NON_ALPHANUMERIC);
        let refused = match field("action").as_str() {
            "trip" => {
                let body = TripBody {
                    reason: field("reason"),
                    message: Some(field("message")),
                    expires_in: Some(field("expires_in")),
                };
                match self.trip_account(ctx, &session.subject, &actor, scope, body).await {
                    Ok(r) => {
                        return Ok(web::see_other(&format!(
                            "/.portcullis/admin?done=tripped&account={account}&ended={}",
                            r.switch.sessions_ended
                        )));
                    }
                    Err(e) => format!("Not tripped: {}", PageError::Trip(e).notice(ctx.request_id)),
                }
            }
            "reset" => match self.switches.reset(ctx.config, &scope, "", &actor, ctx.now).await {
                Ok(Some(_)) => {
                    return Ok(web::see_other(&format!(
                        "/.portcullis/admin?done=reset&account={account}"
                    )));
                }
                Ok(None) => {
                    return Ok(web::see_other(&format!(
                        "/.portcullis/admin?done=not_tripped&account={account}"
                    )));
                }
                Err(e) => format!(
                    "Not reset: {}",
                    PageError::Trip(TripRefusal::Switch(e)).notice(ctx.request_id)
                ),
            },
            _ => "Unknown action.".to_string(),
        };
        self.admin_page(ctx, Some(&refused)).await
    }
}

/// The notice of `/.portcullis/admin?done=...&account=...`, where a trip or reset
/// lands: fixed sentences chosen by `done`; the account name (printable, at most 256
/// characters, else no notice) is escaped by the template like any text.
pub(super) fn done_notice(query: Option<&str>) -> Option<String> {
    let account = web::query_param(query, "account")?;
    if account.is_empty() || account.chars().count() > 256 || account.chars().any(char::is_control) {
        return None;
    }
    match web::query_param(query, "done")?.as_str() {
        "tripped" => {
            let ended = web::query_param(query, "ended").and_then(|n| n.parse::<u64>().ok())?;
            let sessions = if ended == 1 { "session" } else { "sessions" };
            Some(format!("Breaker tripped for {account}: {ended} {sessions} ended."))
        }
        "reset" => Some(format!("Breaker reset for {account}.")),
        "not_tripped" => Some(format!("No breaker was tripped for {account}.")),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::done_notice;

    /// If this broke, the page a trip lands on would say nothing, or show what a crafted
    /// link puts in it beyond an account name.
    #[test]
    fn done_flags_read_as_fixed_sentences() {
        let notice = |q: &str| done_notice(Some(q));
        assert_eq!(
            notice("done=tripped&account=bob&ended=2").as_deref(),
            Some("Breaker tripped for bob: 2 sessions ended.")
        );
        assert_eq!(
            notice("done=tripped&account=bob&ended=1").as_deref(),
            Some("Breaker tripped for bob: 1 session ended.")
        );
        assert_eq!(
            notice("done=reset&account=a%2Fb").as_deref(),
            Some("Breaker reset for a/b.")
        );
        assert_eq!(
            notice("done=not_tripped&account=bob").as_deref(),
            Some("No breaker was tripped for bob.")
        );
        for bad in [
            "done=tripped&account=bob",
            "done=tripped&account=bob&ended=x",
            "done=hacked&account=bob",
            "done=reset",
            "done=reset&account=",
            "done=reset&account=a%0Ab",
        ] {
            assert_eq!(notice(bad), None, "{bad}");
        }
        assert_eq!(done_notice(None), None);
    }
}
