//! The operator console, `/console/` on the admin listener: server-rendered pages (askama,
//! the tenant pages' stylesheet, no script, no external asset) where an operator signs in
//! with their operator token and runs an incident: tenants and their state, kill switches
//! (trip with reason, user-facing message and incident; dry run; reset through four
//! eyes), pending four-eyes changes, incident timelines, session search and revoke, the
//! audit log, upstream breakers.
//!
//! The console owns HTTP for these pages only: every decision is the services' (`killswitch`,
//! `changes`, `incident`, `session`, the audit log), called as Rust functions, the
//! same ones the admin API calls, with `system: console` in their audit records. The
//! operator's tier bounds everything shown and done; another tier's tenant, change or
//! incident is answered like one that does not exist.
//!
//! # Layout
//! - this file: the router, the state, and the steps every handler shares (who is signed
//!   in, reading a form with its CSRF token and `Origin` check), sign-in and sign-out,
//!   the stylesheet and icon.
//! - `auth.rs`: operator token check, console sessions (id → operator, with expiry),
//!   CSRF tokens, the cookie.
//! - `error.rs`: the one mapping from refusal to page, and the hardening headers.
//! - `tenants.rs`: tenants with their state, and upstream breakers.
//! - `breakers.rs`: kill switches: trip, dry run, reset (a four-eyes proposal).
//! - `changes.rs`: pending four-eyes changes with their diff and digest; approve, reject.
//! - `incidents.rs`: an incident's timeline.
//! - `records.rs`: session search and revoke; the audit log with filters.

mod auth;
mod breakers;
mod changes;
mod error;
mod incidents;
mod records;
mod tenants;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use askama::Template;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{any, get, post};

pub use self::auth::ConsoleSessions;
use self::auth::{ConsoleSession, OperatorId, cookie_name, csrf_matches, operator_for_token, set_cookie};
use self::error::ConsoleError;
use crate::audit::{Actor, AuditEntry};
use crate::telemetry::{EventOutcome, SecurityEvent};

/// The `system` of every console action in audit records and security events.
pub const SYSTEM: &str = "console";

/// Largest form body accepted (the longest form holds a few 500-character fields).
const FORM_MAX: usize = 16 * 1024;

/// The services the console calls: the same the admin API calls.
#[derive(Clone)]
pub struct Services {
    /// Live policy set.
    pub live: Arc<crate::live::Live>,
    /// Kill switches (and, through them, sessions and the tier stores).
    pub switches: Arc<crate::killswitch::KillSwitches>,
    /// Four-eyes change requests.
    pub changes: Arc<crate::changes::Changes>,
    /// Whether the admin listener speaks TLS (`[listen.admin_tls]`): the cookie is then
    /// `__Host-` and `Secure`.
    pub tls: bool,
}

/// What the console's handlers share.
#[derive(Clone)]
struct ConsoleState {
    /// Live policy set.
    live: Arc<crate::live::Live>,
    /// Kill switches (and, through them, sessions and the tier stores).
    switches: Arc<crate::killswitch::KillSwitches>,
    /// Four-eyes change requests.
    changes: Arc<crate::changes::Changes>,
    /// Console sessions of this process.
    sessions: Arc<ConsoleSessions>,
    /// Whether the admin listener speaks TLS (cookie name and `Secure`).
    tls: bool,
}

/// The console's routes, ready to merge into the admin router (they carry their own
/// state, body limit, hardening headers and error pages).
pub fn router<S: Clone + Send + Sync + 'static>(services: Services) -> Router<S> {
    let state = ConsoleState {
        live: services.live,
        switches: services.switches,
        changes: services.changes,
        sessions: Arc::new(ConsoleSessions::default()),
        tls: services.tls,
    };
    Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(tenants::page))
        .route("/console/style.css", get(style))
        .route("/console/favicon.svg", get(icon))
        .route("/console/signin", get(signin_page).post(signin))
        .route("/console/signout", post(signout))
        .route("/console/upstreams", get(tenants::upstreams))
        .route("/console/breakers", get(breakers::page))
        .route("/console/breakers/trip", post(breakers::trip))
        .route("/console/breakers/reset", post(breakers::reset))
        .route("/console/changes", get(changes::page))
        .route("/console/changes/{id}/approve", post(changes::approve))
        .route("/console/changes/{id}/reject", post(changes::reject))
        .route("/console/incidents", get(incidents::find))
        .route("/console/incidents/{id}", get(incidents::page))
        .route("/console/sessions", get(records::sessions))
        .route("/console/sessions/revoke", post(records::revoke))
        .route("/console/audit", get(records::audit))
        .route("/console/{*rest}", any(not_found))
        .layer(axum::extract::DefaultBodyLimit::max(FORM_MAX))
        .layer(axum::middleware::from_fn(error::harden))
        .with_state(state)
}

/// The operator signed in to the console, or `None`.
fn signed_in(state: &ConsoleState, headers: &HeaderMap) -> Option<ConsoleSession> {
    let id = crate::ui::web::single_cookie(headers, cookie_name(state.tls))?;
    let config = state.live.snapshot().config.clone();
    state.sessions.find(&config, id, crate::clock::unix_now())
}

/// A page's operator; a signed-out visitor goes to the sign-in page.
fn page_operator(state: &ConsoleState, headers: &HeaderMap) -> Result<ConsoleSession, Redirect> {
    signed_in(state, headers).ok_or_else(|| Redirect::to("/console/signin"))
}

/// A submitted form: `application/x-www-form-urlencoded`, the first value of each name.
struct Form(HashMap<String, String>);

impl Form {
    fn parse(headers: &HeaderMap, body: &Bytes) -> Result<Form, ConsoleError> {
        if !crate::ui::web::content_type_is(headers, "application/x-www-form-urlencoded") {
            return Err(ConsoleError::BadRequest("Send the form as a browser does.".into()));
        }
        let mut fields = HashMap::new();
        for (k, v) in form_urlencoded::parse(body) {
            fields.entry(k.into_owned()).or_insert_with(|| v.into_owned());
        }
        Ok(Form(fields))
    }

    /// A field, trimmed; `None` when absent or blank.
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    /// A required field, or a refusal naming it.
    fn required(&self, name: &str, label: &str) -> Result<&str, ConsoleError> {
        self.get(name)
            .ok_or_else(|| ConsoleError::BadRequest(format!("{label} is required.")))
    }
}

/// Whether a state-changing request comes from a page of this listener: an `Origin`,
/// when sent, must name the host the request was sent to (as on the tenant pages).
fn same_origin(headers: &HeaderMap) -> bool {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .and_then(crate::tenancy::normalise_request_host);
    match host {
        Some(host) => crate::ui::web::origin_allowed(headers, &host),
        None => false,
    }
}

/// Every console POST but the sign-in: its `Origin` is this listener, it comes with a
/// live console session, and its `csrf` field is that session's. Returns the session
/// and the form; nothing is done otherwise.
fn posted(state: &ConsoleState, headers: &HeaderMap, body: &Bytes) -> Result<(ConsoleSession, Form), ConsoleError> {
    if !same_origin(headers) {
        return Err(ConsoleError::Forged);
    }
    let session = signed_in(state, headers).ok_or(ConsoleError::SignedOut)?;
    let form = Form::parse(headers, body)?;
    if !csrf_matches(&session, form.get("csrf")) {
        return Err(ConsoleError::Forged);
    }
    Ok((session, form))
}

/// Checks that `tenant` is one of the operator's tier. Another tier's tenant is answered
/// like one that does not exist (404), so the console shows nothing beyond the tier, and
/// is a `cross_tier` security event.
fn own_tenant(
    state: &ConsoleState,
    operator: &OperatorId,
    tenant: &str,
    peer: &SocketAddr,
) -> Result<(), ConsoleError> {
    let config = state.live.snapshot().config.clone();
    match config.tenants.iter().find(|t| t.id == tenant) {
        Some(t) if t.tier == operator.tier => Ok(()),
        Some(t) => {
            let (ip, user) = (peer.ip().to_string(), operator.actor_name());
            SecurityEvent {
                reason: Some("console operator named a tenant outside its tier"),
                source_ip: Some(&ip),
                user: Some(&user),
                tenant: Some(tenant),
                tier: Some(&t.tier),
                credential_tier: Some(&operator.tier),
                system: Some(SYSTEM),
                ..SecurityEvent::new("cross_tier", EventOutcome::Failure)
            }
            .warn("console request refused");
            Err(ConsoleError::NotFound("tenant"))
        }
        None => Err(ConsoleError::NotFound("tenant")),
    }
}

/// The audit actor of a console action.
fn actor(operator: &OperatorId, peer: &SocketAddr) -> Actor {
    Actor {
        name: operator.actor_name(),
        source_ip: peer.ip().to_string(),
        system: SYSTEM.into(),
    }
}

/// The operator as the change request service knows them.
fn change_operator(operator: &OperatorId, peer: &SocketAddr) -> crate::changes::Operator {
    crate::changes::Operator {
        name: operator.name.clone(),
        tier: operator.tier.clone(),
        source_ip: peer.ip().to_string(),
        system: SYSTEM,
    }
}

/// What the header and navigation of every console page show, and what its forms post
/// back: who is signed in, their tier, the session's CSRF token and the current page.
struct PageHeader<'a> {
    /// The operator as the audit log names them; `None` on the pages of a signed-out
    /// visitor (sign-in, refusals), which show no navigation.
    operator: Option<String>,
    /// The session's CSRF token, the hidden field of every form (empty when signed out).
    csrf: &'a str,
    /// The operator's tier, which bounds what the page shows (empty when signed out).
    tier: &'a str,
    /// The navigation entry marked as the current page (`tenants`, `breakers`, ...).
    current: &'static str,
}

impl<'a> PageHeader<'a> {
    /// The header of a page of `session` that the navigation calls `current`.
    fn signed_in(session: &'a ConsoleSession, current: &'static str) -> Self {
        PageHeader {
            operator: Some(session.operator.actor_name()),
            csrf: &session.csrf,
            tier: &session.operator.tier,
            current,
        }
    }

    /// The header of a page shown without a session: no operator, no navigation.
    fn signed_out() -> Self {
        PageHeader {
            operator: None,
            csrf: "",
            tier: "",
            current: "",
        }
    }
}

/// Renders a page (a template error is a 503 with the cause logged).
fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(e) => ConsoleError::Unavailable(format!("template: {e}")).into_response(),
    }
}

/// A redirect after a successful POST (303: the browser follows with a GET).
fn see_other(to: &str) -> Response {
    Redirect::to(to).into_response()
}

/// Any other path under `/console/`: a console page, not the API's JSON refusal.
async fn not_found() -> ConsoleError {
    ConsoleError::NotFound("page")
}

async fn style() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        crate::ui::pages::STYLE,
    )
        .into_response()
}

async fn icon() -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], crate::ui::pages::ICON).into_response()
}

#[derive(Template)]
#[template(path = "console_signin.html")]
struct SignInPage<'a> {
    header: PageHeader<'a>,
    error: Option<&'a str>,
}

/// `GET /console/signin`.
async fn signin_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if signed_in(&state, &headers).is_some() {
        return see_other("/console/");
    }
    render(&SignInPage {
        header: PageHeader::signed_out(),
        error: None,
    })
}

/// `POST /console/signin` (field `token`): checks the operator token as the admin API
/// does; on success opens a console session (cookie), audited as `console.signin`.
/// A wrong token is a security event and a 401 with the form again.
async fn signin(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    if !same_origin(&headers) {
        return Err(ConsoleError::Forged);
    }
    let form = Form::parse(&headers, &body)?;
    let config = state.live.snapshot().config.clone();
    let ip = peer.ip().to_string();
    let Some((operator, token_hash)) = form.get("token").and_then(|t| operator_for_token(&config, t)) else {
        SecurityEvent {
            reason: Some("not an operator token"),
            source_ip: Some(&ip),
            system: Some(SYSTEM),
            ..SecurityEvent::new("login", EventOutcome::Failure)
        }
        .warn("console sign-in refused");
        let mut resp = render(&SignInPage {
            header: PageHeader::signed_out(),
            error: Some("That is not an operator token."),
        });
        *resp.status_mut() = StatusCode::UNAUTHORIZED;
        return Ok(resp);
    };
    let now = crate::clock::unix_now();
    let store = state
        .switches
        .sessions()
        .store(&operator.tier)
        .map_err(|e| ConsoleError::store(&e))?;
    let entry = AuditEntry {
        target: format!("tier:{}", operator.tier),
        tier: operator.tier.clone(),
        reason: "console sign-in".into(),
        ..AuditEntry::by(&actor(&operator, &peer), "console.signin", now)
    };
    store.append_audit(&entry).await.map_err(|e| ConsoleError::store(&e))?;
    let actor_name = operator.actor_name();
    SecurityEvent {
        source_ip: Some(&ip),
        user: Some(&actor_name),
        tier: Some(&operator.tier),
        system: Some(SYSTEM),
        ..SecurityEvent::new("login", EventOutcome::Success)
    }
    .info("console sign-in");
    let id = state.sessions.open(operator, token_hash, now);
    let mut resp = see_other("/console/");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(state.tls, Some(&id))) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}

/// `POST /console/signout`: ends the console session (audited) and its cookie.
async fn signout(
    State(state): State<ConsoleState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ConsoleError> {
    let (session, _) = posted(&state, &headers, &body)?;
    if let Some(id) = crate::ui::web::single_cookie(&headers, cookie_name(state.tls)) {
        state.sessions.close(id);
    }
    let op = &session.operator;
    let entry = AuditEntry {
        target: format!("tier:{}", op.tier),
        tier: op.tier.clone(),
        reason: "console sign-out".into(),
        ..AuditEntry::by(&actor(op, &peer), "console.signout", crate::clock::unix_now())
    };
    if let Ok(store) = state.switches.sessions().store(&op.tier)
        && let Err(e) = store.append_audit(&entry).await
    {
        tracing::error!(error = %e, "could not audit a console sign-out");
    }
    let mut resp = see_other("/console/signin");
    if let Ok(v) = HeaderValue::from_str(&set_cookie(state.tls, None)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    Ok(resp)
}
