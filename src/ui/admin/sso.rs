//! The tenant admin's self-service SSO through the JSON API: `GET|PUT
//! /.portcullis/api/admin/sso` (the wizard's state; saving the draft),
//! `POST .../sso/test` (the URL that runs a test sign-in against the draft),
//! `POST .../sso/activate` and `POST .../sso/rollback`. The rules, discovery, sealing
//! and audit are `auth::sso_admin`'s; the test sign-in itself is `ui::sso`'s. Saving a
//! draft fetches the IdP's discovery document, so it is throttled per tenant.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;

use super::super::api::{ApiError, json_body};
use super::super::error::PageError;
use super::super::web;
use super::super::{Ctx, Portal};
use crate::auth::sso_admin::{self, DraftInput, TenantSso};
use crate::records::SessionRecord;
use crate::secret::SecretBytes;

/// Discovery checks (draft saves and the page's "Check issuer", each one an outbound
/// request) a tenant may make per window; input refused before any request is free.
pub(in crate::ui) const DRAFT_SAVES_PER_WINDOW: u32 = 20;

/// The window of [`DRAFT_SAVES_PER_WINDOW`], in seconds.
pub(in crate::ui) const DRAFT_SAVE_WINDOW_SECS: i64 = 60;

/// Where the admin's browser starts a test sign-in against the draft, with the ticket
/// of `session` ([`test_ticket`]).
pub(in crate::ui) fn test_start_path(ctx: &Ctx<'_>, session: &SessionRecord) -> String {
    format!("/.portcullis/admin/sso/test?ticket={}", test_ticket(ctx, session))
}

/// The ticket a test sign-in's start needs: a MAC of the admin's session CSRF token
/// under the tier's cookie key, so only a page or API answer of this session can start
/// one (a cross-site link cannot run a test that would replace the recorded result).
fn test_ticket(ctx: &Ctx<'_>, session: &SessionRecord) -> String {
    use hmac::Mac;
    match <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(ctx.key()) {
        Ok(mut mac) => {
            mac.update(b"portcullis sso test\0");
            mac.update(session.csrf_token.as_bytes());
            hex::encode(mac.finalize().into_bytes())
        }
        // Never for an HMAC (any key length works); no ticket then matches.
        Err(_) => String::new(),
    }
}

/// `PUT` body: the SPEC's fields plus the wizard's options. No `Debug`: it holds the
/// client secret.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(in crate::ui) struct SsoBody {
    issuer: String,
    client_id: String,
    /// Absent or empty: keep the secret of the current draft or active version.
    #[serde(default)]
    #[schema(format = Password)]
    client_secret: Option<String>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    roles_claim: Option<String>,
    #[serde(default)]
    mfa: Option<String>,
    /// The roles-claim value that makes a user `tenant-admin`.
    #[serde(default)]
    admin_group: Option<String>,
    /// SSO only: local passwords off except `break_glass`.
    #[serde(default)]
    enforce: bool,
    /// Local accounts that keep their password under `enforce`.
    #[serde(default)]
    break_glass: Vec<String>,
}

impl SsoBody {
    fn into_input(self) -> DraftInput {
        DraftInput {
            issuer: self.issuer,
            client_id: self.client_id,
            client_secret: self.client_secret.map(|s| SecretBytes::new(s.into_bytes())),
            scopes: self.scopes,
            roles_claim: self.roles_claim,
            admin_group: self.admin_group,
            mfa: self.mfa,
            enforce: self.enforce,
            break_glass: self.break_glass,
        }
    }
}

impl Portal {
    /// `/.portcullis/api/admin/sso[/...]` of a signed-in tenant admin (`session`); the
    /// dispatcher has checked `method` against `super::ADMIN_ENDPOINTS`.
    pub(in crate::ui) async fn api_admin_sso(
        &self,
        req: Request<Incoming>,
        ctx: &Ctx<'_>,
        session: &SessionRecord,
        method: Method,
        path: &str,
    ) -> Result<Response<Bytes>, ApiError> {
        let actor = &super::console_actor(ctx, session);
        let t = TenantSso::of(ctx.entry, &ctx.origin);
        let admin = &self.sso_admin;
        let answer = |v: serde_json::Value| Ok(web::json(StatusCode::OK, &v));
        match (method, path) {
            (Method::GET, "sso") => answer(to_json(&admin.view(&t).await.map_err(ApiError::Sso)?)),
            (Method::PUT, "sso") => {
                // A tenant managed by the policy files makes no outbound request: its
                // refusal needs no budget.
                let input = json_body::<SsoBody>(req).await?.into_input();
                // Only a draft that can be saved spends the budget (its save fetches the
                // discovery document); a tenant managed by the policy files, refused
                // below, makes no outbound request.
                if ctx.entry.tenant.sso.is_none() {
                    sso_admin::check_draft(&input, t.production).map_err(ApiError::Sso)?;
                    self.draft_budget(ctx).await.map_err(|b| match b {
                        DraftBudget::Spent(wait) => ApiError::Throttled(wait),
                        DraftBudget::Unavailable => ApiError::Unavailable,
                    })?;
                }
                let saved = admin
                    .save_draft(&t, input, actor, ctx.now)
                    .await
                    .map_err(ApiError::Sso)?;
                answer(to_json(&saved))
            }
            (_, "sso/test") => {
                // Refused now (no draft, managed by policy) rather than in the new tab.
                admin.draft_for_test(&t).await.map_err(ApiError::Sso)?;
                answer(json!({ "url": format!("{}{}", ctx.origin, test_start_path(ctx, session)) }))
            }
            (_, "sso/activate") => {
                let active = admin.activate(&t, actor, ctx.now).await.map_err(ApiError::Sso)?;
                answer(json!({ "status": "active", "active": to_json(&active) }))
            }
            (_, "sso/rollback") => {
                let active = admin.rollback(&t, actor, ctx.now).await.map_err(ApiError::Sso)?;
                answer(json!({ "status": "active", "active": to_json(&active) }))
            }
            _ => Err(ApiError::NotFound("No such API.")),
        }
    }

    /// `GET /.portcullis/admin/sso/test?ticket=...`: the URL `POST .../sso/test` and the
    /// wizard page hand out, opened by the tenant admin's browser; starts the test
    /// sign-in against the draft. Without this session's ticket (a link from elsewhere)
    /// it is refused like a forged form, and nothing is recorded.
    pub(in crate::ui) async fn admin_sso_test(
        &self,
        req: &Request<Incoming>,
        ctx: &Ctx<'_>,
    ) -> Result<Response<Bytes>, PageError> {
        let session = match super::page_admin(ctx, "admin/sso") {
            Ok(s) => s,
            Err(gate) => return gate.answer(),
        };
        let ticket = web::query_param(req.uri().query(), "ticket").unwrap_or_default();
        let expected = test_ticket(ctx, &session);
        if expected.is_empty() || !web::tokens_match(&expected, &ticket) {
            return Err(PageError::BadForm);
        }
        let actor = super::console_actor(ctx, &session);
        self.sso_test_start(ctx, actor.name).await
    }

    /// At most [`DRAFT_SAVES_PER_WINDOW`] discovery checks (draft saves, and the wizard
    /// page's "Check issuer") per tenant and window, counted in the tier's store (the
    /// same counters as sign-in throttling), so every replica shares the limit.
    pub(super) async fn draft_budget(&self, ctx: &Ctx<'_>) -> Result<(), DraftBudget> {
        let store = self.sessions.store(ctx.tier()).map_err(|_| DraftBudget::Unavailable)?;
        let key = format!("sso-draft:{}", ctx.entry.tenant.id);
        let (count, reset) = store
            .hit(&key, ctx.now, DRAFT_SAVE_WINDOW_SECS)
            .await
            .map_err(|_| DraftBudget::Unavailable)?;
        if count > DRAFT_SAVES_PER_WINDOW {
            return Err(DraftBudget::Spent(reset.max(1)));
        }
        Ok(())
    }
}

/// Why a discovery check may not run now.
pub(super) enum DraftBudget {
    /// The tenant used its checks of the window; seconds until the next one.
    Spent(i64),
    /// The store cannot count.
    Unavailable,
}

fn to_json(v: &impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or_default()
}
