//! The tenant admin's area on the tenant's own host: a user with the `tenant-admin` role
//! acts on their own tenant only, on pages under `/.portcullis/admin` and their JSON
//! twins under `/.portcullis/api/admin/...`. Tenant and tier switches stay with operators.
//!
//! # Layout
//! - this file: who may act (the gate of pages and API), the shared pieces (the console
//!   actor, rendering, fixed notices), the API's dispatch, and the account breakers
//!   (`/.portcullis/admin`, forms posting to `/.portcullis/admin/breaker`;
//!   `PUT|DELETE /.portcullis/api/admin/accounts/{subject}/breaker`,
//!   `GET /.portcullis/api/admin/breakers`).
//! - `users.rs`: the tenant's local accounts and their second factor; MFA resets.
//! - `sessions.rs`: the tenant's live sessions; ending one.
//! - `records.rs`: the tenant's sign-in history and audit records (read only).
//! - `sso.rs`: self-service single sign-on's JSON API (draft, test, activate, roll
//!   back) and its test sign-in start; `sso_page.rs`: the wizard's page.
//!
//! Isolation: every read and change names the tenant of the host; an id or name of
//! another tenant is looked up in this tenant only, so it answers exactly like one that
//! does not exist.

mod records;
mod sessions;
pub(super) mod sso;
mod sso_page;
mod users;

use std::sync::Arc;

use askama::Template;
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
use crate::killswitch::{Expiry, KillSwitch, KillSwitchError, Scope, TripRequest};
use crate::records::SessionRecord;

/// The role that may act here.
pub use crate::account::TENANT_ADMIN_ROLE;

/// `PUT` body of `admin/accounts/{subject}/breaker` (also in the OpenAPI document).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(super) struct TripBody {
    /// Why (audit log); required.
    reason: String,
    /// What the account's user is told; a default message when absent.
    #[serde(default)]
    message: Option<String>,
    /// Relative expiry (`30m`, `2h`).
    #[serde(default)]
    expires_in: Option<String>,
    /// The incident the trip belongs to (`INC-42`), optional.
    #[serde(default)]
    incident: Option<String>,
}

/// The tenant admin's JSON endpoints, below `/.portcullis/api/admin/`, and the methods
/// each takes: [`Portal::api_admin`] dispatches by this table (a `405`'s `Allow` comes
/// from it) and the OpenAPI test checks the document against it both ways. A `{...}`
/// segment stands for any text, slashes included.
pub(super) const ADMIN_ENDPOINTS: &[(&str, &str)] = &[
    ("users", "GET"),
    ("users/{username}/mfa", "DELETE"),
    ("sessions", "GET"),
    ("sessions/{id}", "DELETE"),
    ("history", "GET"),
    ("audit", "GET"),
    ("breakers", "GET"),
    ("accounts/{subject}/breaker", "PUT, DELETE"),
    ("sso", "GET, PUT"),
    ("sso/test", "POST"),
    ("sso/activate", "POST"),
    ("sso/rollback", "POST"),
];

/// The entry of [`ADMIN_ENDPOINTS`] a path below `admin/` names.
#[derive(Debug, PartialEq)]
struct AdminEndpoint<'a> {
    /// The table's pattern, which the dispatcher matches on.
    pattern: &'static str,
    /// The methods it takes, as `Allow` spells them.
    methods: &'static str,
    /// The text standing for the pattern's `{...}` segment, still percent-encoded
    /// (empty for a pattern without one).
    param: &'a str,
}

/// Which endpoint `path` (below `admin/`) is, if any.
fn admin_endpoint(path: &str) -> Option<AdminEndpoint<'_>> {
    ADMIN_ENDPOINTS.iter().find_map(|&(pattern, methods)| {
        let param = match pattern.split_once('{') {
            None => (pattern == path).then_some("")?,
            Some((prefix, rest)) => {
                let suffix = rest.split_once('}').map_or("", |(_, s)| s);
                let inner = path.strip_prefix(prefix)?;
                inner.strip_suffix(suffix)?
            }
        };
        Some(AdminEndpoint {
            pattern,
            methods,
            param,
        })
    })
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
        if !is_tenant_admin(&session) {
            return Err(ApiError::NotTenantAdmin);
        }
        let actor = console_actor(ctx, &session);
        let Some(endpoint) = admin_endpoint(path) else {
            return Err(ApiError::NotFound("No such API."));
        };
        let allow = endpoint.methods;
        let takes_method = allow.split(", ").any(|m| m == method.as_str());
        let only_listed = || {
            if takes_method {
                Ok(())
            } else {
                Err(ApiError::WrongMethod { allow })
            }
        };
        match endpoint.pattern {
            "users" => {
                only_listed()?;
                return self.api_admin_users(ctx).await;
            }
            "sessions" => {
                only_listed()?;
                return self.api_admin_sessions(ctx, &session).await;
            }
            "history" => {
                only_listed()?;
                return self.api_admin_history(ctx, req.uri().query()).await;
            }
            "audit" => {
                only_listed()?;
                return self.api_admin_audit(ctx, req.uri().query()).await;
            }
            "users/{username}/mfa" => {
                only_listed()?;
                let name = percent_encoding::percent_decode_str(endpoint.param).decode_utf8_lossy();
                return self.api_admin_reset_mfa(ctx, &session, &name).await;
            }
            "sessions/{id}" => {
                only_listed()?;
                return self.api_admin_end_session(ctx, &session, endpoint.param).await;
            }
            "breakers" => {
                only_listed()?;
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
            "sso" | "sso/test" | "sso/activate" | "sso/rollback" => {
                only_listed()?;
                return self.api_admin_sso(req, ctx, &session, method, endpoint.pattern).await;
            }
            "accounts/{subject}/breaker" => {}
            _ => return Err(ApiError::NotFound("No such API.")),
        }
        // `accounts/{subject}/breaker`: the subject is read before the method is checked.
        let Ok(subject) = percent_encoding::percent_decode_str(endpoint.param).decode_utf8() else {
            return Err(ApiError::NotFound("No such API."));
        };
        let idp = web::query_param(req.uri().query(), "idp");
        let subject = self
            .account_key(ctx, idp.as_deref(), &subject)
            .await
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
            _ => Err(ApiError::WrongMethod { allow }),
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
    async fn account_key(
        &self,
        ctx: &Ctx<'_>,
        idp: Option<&str>,
        subject: &str,
    ) -> Result<String, crate::account::NameError> {
        // The tenant's identity provider: the policy files' or the wizard's active one.
        // Unreadable settings name no provider, so an `sso` account is refused, not guessed.
        let issuer = crate::auth::sso_admin::tenant_issuer(ctx.config, &self.sessions, &ctx.entry.tenant.id)
            .await
            .ok()
            .flatten();
        crate::account::named(idp, subject, issuer.as_deref())
    }

    /// Whether the tenant signs in through an identity provider (the admin form then
    /// offers its accounts).
    async fn has_sso(&self, ctx: &Ctx<'_>) -> bool {
        matches!(self.live_sso(ctx).await, Ok(Some(_)))
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
            // A blank message (the form's empty field) means the default one; a message
            // with a control character goes on to be refused like any other text.
            message: body
                .message
                .filter(|m| !m.trim().is_empty() || m.chars().any(char::is_control)),
            expiry: body.expires_in.map_or(Expiry::Never, Expiry::After),
            idempotency_key: None,
            incident: body.incident,
        };
        self.switches
            .trip(ctx.config, req, actor, ctx.now)
            .await
            .map_err(TripRefusal::Switch)
    }

    /// `GET /.portcullis/admin`: the tenant's local accounts with their switches.
    pub(super) async fn admin_page(&self, ctx: &Ctx<'_>, notice: Option<&str>) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        // Store failures show as "unavailable", never with the store's text.
        let (Ok(store), Ok(switches)) = (self.sessions.store(ctx.tier()), self.switches.list(ctx.config).await) else {
            return Err(PageError::Unavailable);
        };
        let Ok(users) = store.list_users(&ctx.entry.tenant.id).await else {
            return Err(PageError::Unavailable);
        };
        let tenant = ctx.entry.tenant.id.as_str();
        let switched = |subject: &str| {
            account_switch(&switches, tenant, subject, ctx.now).map(|k| pages::AdminSwitch {
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
        let has_sso = self.has_sso(ctx).await;
        Ok(pages::admin(ctx.entry, &session.csrf_token, notice, accounts, has_sso))
    }

    /// `POST /.portcullis/admin/breaker`: the page's trip and reset forms.
    pub(super) async fn admin_form(&self, req: Request<Incoming>, ctx: &Ctx<'_>) -> Result<Response<Bytes>, PageError> {
        let session = match page_admin(ctx, "admin") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let (_, body, _) = self.session_form(req, ctx, &session).await?;
        let field = |name: &str| web::form_field(&body, name).unwrap_or_default();
        let subject = field("subject").trim().to_string();
        let idp = field("idp");
        let Ok(key) = self.account_key(ctx, Some(idp.as_str()), &subject).await else {
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
        let actor = console_actor(ctx, &session);
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
                    // The form's field is optional: left blank, no incident.
                    incident: Some(field("incident").trim().to_string()).filter(|i| !i.is_empty()),
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
    let account = notice_account(query)?;
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

/// The account a fixed notice names (`account=` of the query): printable, at most 256
/// characters, else none (so a crafted link cannot put anything else on the page).
fn notice_account(query: Option<&str>) -> Option<String> {
    let account = web::query_param(query, "account")?;
    if account.is_empty() || account.chars().count() > 256 || account.chars().any(char::is_control) {
        return None;
    }
    Some(account)
}

/// Whether a session may act as the tenant's admin.
fn is_tenant_admin(session: &SessionRecord) -> bool {
    session.roles.iter().any(|r| r == TENANT_ADMIN_ROLE)
}

/// Why an admin page is not for this request: the caller answers it with
/// [`Gate::answer`].
enum Gate {
    /// No session: to the sign-in page, and back to `/.portcullis/{0}` after it.
    SignIn(&'static str),
    /// A session without the role: the styled refusal (403).
    NotAdmin,
}

impl Gate {
    fn answer(self) -> Result<Response<Bytes>, PageError> {
        match self {
            Gate::SignIn(here) => {
                let rd = here.replace('/', "%2F");
                Ok(web::see_other(&format!("/.portcullis/login?rd=%2F.portcullis%2F{rd}")))
            }
            Gate::NotAdmin => Err(PageError::NotTenantAdmin),
        }
    }
}

/// The signed-in tenant admin of an admin page at `/.portcullis/{here}` (a path of
/// ours, `[a-z/]` only), or why there is none.
fn page_admin(ctx: &Ctx<'_>, here: &'static str) -> Result<Arc<SessionRecord>, Gate> {
    let session = ctx.session.clone().ok_or(Gate::SignIn(here))?;
    if !is_tenant_admin(&session) {
        return Err(Gate::NotAdmin);
    }
    Ok(session)
}

/// A tenant admin acting through the pages or their JSON twins, as audited.
fn console_actor(ctx: &Ctx<'_>, session: &SessionRecord) -> Actor {
    Actor {
        name: format!("user:{}", session.subject),
        source_ip: ctx.ip.clone(),
        system: "console".into(),
    }
}

/// The account switch in force on `subject` of `tenant`, if any.
fn account_switch<'k>(switches: &'k [KillSwitch], tenant: &str, subject: &str, now: i64) -> Option<&'k KillSwitch> {
    switches.iter().find(|k| {
        k.in_force(now)
            && matches!(&k.scope, Scope::Account { tenant: t, subject: s, .. } if t == tenant && s == subject)
    })
}

/// An admin page (200), or a plain 500 if the template cannot render.
fn render(page: &impl Template) -> Response<Bytes> {
    match page.render() {
        Ok(body) => web::respond(StatusCode::OK, "text/html; charset=utf-8", body),
        Err(_) => web::respond(
            StatusCode::INTERNAL_SERVER_ERROR,
            "text/plain; charset=utf-8",
            "page could not be rendered",
        ),
    }
}

/// `n sessions` / `1 session`.
fn sessions_count(n: u64) -> String {
    format!("{n} {}", if n == 1 { "session" } else { "sessions" })
}

#[cfg(test)]
mod tests {
    use super::{admin_endpoint, done_notice};

    /// If this broke, the tenant admin's API would route a path to the wrong endpoint, or
    /// answer a path it served before as unknown (or the other way round).
    #[test]
    fn admin_paths_name_their_endpoint_as_before() {
        let named = |path| admin_endpoint(path).map(|e| (e.pattern, e.methods, e.param));
        assert_eq!(named("users"), Some(("users", "GET", "")));
        assert_eq!(
            named("users/a%20b/mfa"),
            Some(("users/{username}/mfa", "DELETE", "a%20b"))
        );
        assert_eq!(named("users//mfa"), Some(("users/{username}/mfa", "DELETE", "")));
        assert_eq!(named("users/mfa"), None);
        assert_eq!(named("users/x"), None);
        assert_eq!(named("sessions/"), Some(("sessions/{id}", "DELETE", "")));
        assert_eq!(named("sessions/a/b"), Some(("sessions/{id}", "DELETE", "a/b")));
        assert_eq!(
            named("accounts/a/b/breaker"),
            Some(("accounts/{subject}/breaker", "PUT, DELETE", "a/b"))
        );
        assert_eq!(named("accounts/breaker"), None);
        assert_eq!(named("sso"), Some(("sso", "GET, PUT", "")));
        assert_eq!(named("sso/rollback"), Some(("sso/rollback", "POST", "")));
        assert_eq!(named("sso/"), None);
        assert_eq!(named("breakers/x"), None);
        assert_eq!(named(""), None);
    }

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
