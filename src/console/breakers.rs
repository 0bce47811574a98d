//! Kill switches in the console: the switches in force in the operator's tier; a trip of
//! a tenant or an account with reason, user-facing message, incident and expiry, or its
//! dry run (what a trip would end, recorded as a drill); and resets. A tenant or tier
//! switch is reset through four eyes: the console proposes a `tenant.breaker_reset` (or
//! `tier.breaker_reset`) change that a second operator approves on the pending-changes
//! page. An account switch is reset at once, as the admin API and tenant admins do.
//!
//! Validation, order of steps and audit records are `killswitch::service`'s and
//! `changes::service`'s; this file reads the form and renders.

use std::net::SocketAddr;

use askama::Template;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, RawQuery, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

use super::auth::OperatorId;
use super::error::ConsoleError;
use super::tenants::{SwitchView, scope_words};
use super::{
    ConsoleState, Form, PageHeader, actor, change_operator, own_tenant, page_operator, posted, render, see_other,
};
use crate::changes::Proposal;
use crate::killswitch::{DryRun, Expiry, KillSwitch, Scope, TripRequest};
use crate::ui::web::query_param;

/// A switch in force, with what its reset form posts.
struct SwitchRow {
    view: SwitchView,
    /// The switch's scope key (`tier`, `tenant:acme`, `account:acme:bob`).
    key: String,
    /// Whether its reset goes through four eyes.
    four_eyes: bool,
}

#[derive(Template)]
#[template(path = "console_breakers.html")]
struct BreakersPage<'a> {
    header: PageHeader<'a>,
    notice: Option<&'static str>,
    tenants: Vec<String>,
    switches: Vec<SwitchRow>,
    /// A dry run's report, with the form values to trip for real.
    dry_run: Option<DryRunView>,
}

struct DryRunView {
    scope: String,
    report: DryRun,
    tenant: String,
    subject: String,
    idp: String,
    reason: String,
    message: String,
    incident: String,
    expires_in: String,
}

fn notice_of(done: Option<&str>) -> Option<&'static str> {
    match done? {
        "tripped" => Some("Kill switch tripped: it is in force on this node."),
        "reset" => Some("Kill switch reset."),
        _ => None,
    }
}

/// The switches in force in `tier`.
async fn switches_in(state: &ConsoleState, tier: &str, now: i64) -> Result<Vec<KillSwitch>, ConsoleError> {
    let config = state.live.snapshot().config.clone();
    Ok(state
        .switches
        .list(&config)
        .await?
        .into_iter()
        .filter(|k| k.scope.tier() == tier && k.in_force(now))
        .collect())
}

async fn render_page(
    state: &ConsoleState,
    session: &super::auth::ConsoleSession,
    notice: Option<&'static str>,
    dry_run: Option<DryRunView>,
) -> Result<Response, ConsoleError> {
    let tier = &session.operator.tier;
    let now = crate::clock::unix_now();
    let config = state.live.snapshot().config.clone();
    let switches = switches_in(state, tier, now)
        .await?
        .iter()
        .map(|k| SwitchRow {
            view: SwitchView::of(k, now),
            key: k.scope.key(),
            four_eyes: !matches!(k.scope, Scope::Account { .. }),
        })
        .collect();
    Ok(render(&BreakersPage {
        header: PageHeader::signed_in(session, "breakers"),
        notice,
        tenants: config
            .tenants
            .iter()
            .filter(|t| &t.tier == tier)
            .map(|t| t.id.clone())
            .collect(),
        switches,
        dry_run,
    }))
}

/// `GET /console/breakers`.
pub(super) async fn page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Result<Response, ConsoleError> {
    let session = match page_operator(&state, &headers) {
        Ok(s) => s,
        Err(to_signin) => return Ok(to_signin.into_response()),
    };
    let done = query_param(query.as_deref(), "done");
    render_page(&state, &session, notice_of(done.as_deref()), None).await
}

/// The scope a trip form names, within the operator's tier: a tenant, or one of its
/// accounts (`subject`, signing in with `idp`: `local` or `sso`).
async fn scope_of(
    state: &ConsoleState,
    operator: &OperatorId,
    form: &Form,
    peer: &SocketAddr,
) -> Result<Scope, ConsoleError> {
    let config = state.live.snapshot().config.clone();
    let tier = &operator.tier;
    let tenant = form.required("tenant", "Tenant")?;
    own_tenant(state, operator, tenant, peer)?;
    let Some(subject) = form.get("subject") else {
        return Ok(Scope::Tenant {
            tier: tier.to_string(),
            tenant: tenant.to_string(),
        });
    };
    let issuer = crate::auth::sso_admin::tenant_issuer(&config, state.switches.sessions(), tenant)
        .await
        .map_err(|e| ConsoleError::store(&e))?;
    let subject = crate::account::named(form.get("idp"), subject, issuer.as_deref())
        .map_err(|e| ConsoleError::BadRequest(format!("{e}.")))?;
    Ok(Scope::Account {
        tier: tier.to_string(),
        tenant: tenant.to_string(),
        subject,
    })
}

/// `POST /console/breakers/trip` (fields `tenant`, `subject`?, `idp`?, `reason`,
/// `message`?, `incident`?, `expires_in`?, and `mode`: `dry_run` or `trip`).
pub(super) async fn trip(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (session, form) = posted(&state, &headers, &body)?;
    let op = &session.operator;
    let scope = scope_of(&state, op, &form, &peer).await?;
    let reason = form.required("reason", "Reason")?.to_string();
    let incident = form.get("incident").map(str::to_string);
    if let Some(id) = &incident {
        crate::incident::check_id(id).map_err(|e| ConsoleError::BadRequest(format!("Incident: {e}.")))?;
    }
    let config = state.live.snapshot().config.clone();
    let now = crate::clock::unix_now();
    let who = actor(op, &peer);
    match form.get("mode") {
        Some("dry_run") => {
            let report = state.switches.dry_run(&config, &scope, &reason, &who, now).await?;
            let field = |name: &str| form.get(name).unwrap_or_default().to_string();
            let view = DryRunView {
                scope: scope_words(&scope),
                report,
                tenant: field("tenant"),
                subject: field("subject"),
                idp: field("idp"),
                reason,
                message: field("message"),
                incident: field("incident"),
                expires_in: field("expires_in"),
            };
            render_page(&state, &session, None, Some(view)).await
        }
        Some("trip") => {
            let req = TripRequest {
                scope,
                reason,
                message: form.get("message").map(str::to_string),
                expiry: form
                    .get("expires_in")
                    .map_or(Expiry::Never, |e| Expiry::After(e.to_string())),
                idempotency_key: None,
                incident,
            };
            state.switches.trip(&config, req, &who, now).await?;
            Ok(see_other("/console/breakers?done=tripped"))
        }
        _ => Err(ConsoleError::BadRequest("Choose a dry run or a trip.".into())),
    }
}

/// `POST /console/breakers/reset` (fields `scope`: the switch's key, `reason`): proposes
/// the reset of a tier or tenant switch to a second operator, resets an account switch.
pub(super) async fn reset(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (session, form) = posted(&state, &headers, &body)?;
    let op = &session.operator;
    let key = form.required("scope", "The switch")?;
    let now = crate::clock::unix_now();
    let switch = switches_in(&state, &op.tier, now)
        .await?
        .into_iter()
        .find(|k| k.scope.key() == key)
        .ok_or(ConsoleError::NotFound("kill switch in force"))?;
    let reason = form.required("reason", "Reason")?;
    let (kind, target) = match &switch.scope {
        Scope::Account { .. } => {
            let config = state.live.snapshot().config.clone();
            state
                .switches
                .reset(&config, &switch.scope, reason, &actor(op, &peer), now)
                .await?;
            return Ok(see_other("/console/breakers?done=reset"));
        }
        Scope::Tenant { tenant, .. } => ("tenant.breaker_reset", tenant.clone()),
        Scope::Tier { tier } => ("tier.breaker_reset", tier.clone()),
    };
    let empty = serde_json::Value::Object(serde_json::Map::new());
    let proposal = state
        .changes
        .propose(&change_operator(op, &peer), kind, &target, &empty, reason, now)
        .await?;
    Ok(match proposal {
        Proposal::Created(_) => see_other("/console/changes?done=proposed"),
        // Pressed twice (or by two operators): the change that already waits, shown.
        Proposal::AlreadyPending(cr) => see_other(&format!("/console/changes?done=already_pending#change-{}", cr.id)),
    })
}
