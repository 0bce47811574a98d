//! The admin listener (axum): health, readiness, Prometheus metrics and the operator
//! API. Operators authenticate with bearer tokens listed (hashed) in their tier's policy.
//!
//! Only this module and `proxy` know HTTP; it calls into `live` for state.
//!
//! # Layout
//! - this file: the router, who the caller is (bearer tokens), JSON body reading,
//!   health, readiness, metrics and `POST /v1/reload`.
//! - `error.rs`: the one mapping from refusal to response, with the request id.
//! - `breakers.rs`: kill switch endpoints; `changes.rs`: four-eyes change requests (the
//!   reset of a tier breaker among them); `scope.rs`: which switch a path names and who
//!   may act on it, for both; `audit.rs`: the audit log; `incidents.rs`: an incident's
//!   timeline.
//! - `openapi.rs`: the OpenAPI 3.1 document of `/v1`, built from the handlers'
//!   annotations, served at `/v1/openapi.json` without a token (it holds no data).
//! - `listener.rs`: the accept loop (plain HTTP or HTTPS) and each connection's limits:
//!   header-read and idle timeouts, a cap on open connections, the drain on shutdown.
//! - `client.rs`: the CLI's client of this API.
//! - the operator console (`/console/`) is `crate::console`, merged into this router.

mod audit;
mod breakers;
mod changes;
pub mod client;
mod error;
mod incidents;
mod listener;
mod openapi;
mod scope;

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::Method;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, patch, post, put};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

use self::error::AdminError;
use crate::live::Live;
use crate::secret::token_matches_sha256;
use crate::telemetry::Metrics;
use crate::telemetry::{EventOutcome, SecurityEvent};

/// State shared by admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// Live policy set.
    pub live: Arc<Live>,
    /// Metrics to expose.
    pub metrics: Arc<Metrics>,
    /// Kill switches.
    pub switches: Arc<crate::killswitch::KillSwitches>,
    /// Four-eyes change requests (`/v1/changes`).
    pub changes: Arc<crate::changes::Changes>,
}

/// The `/v1` API: every route with its method and handler. The router is built from this
/// list and the OpenAPI test compares the document with it both ways, so a route added
/// here without its `#[utoipa::path]` (or documented but not served) fails the tests.
fn api_routes() -> Vec<(&'static str, Method, MethodRouter<AdminState>)> {
    vec![
        ("/v1/openapi.json", Method::GET, get(openapi::serve)),
        ("/v1/reload", Method::POST, post(reload)),
        ("/v1/breakers", Method::GET, get(breakers::list)),
        ("/v1/audit", Method::GET, get(audit::list)),
        ("/v1/incidents/{id}", Method::GET, get(incidents::show)),
        ("/v1/changes", Method::GET, get(changes::list)),
        ("/v1/changes", Method::POST, post(changes::create)),
        ("/v1/changes/{id}", Method::GET, get(changes::show)),
        ("/v1/changes/{id}", Method::PATCH, patch(changes::edit)),
        ("/v1/changes/{id}/approve", Method::POST, post(changes::approve)),
        ("/v1/changes/{id}/reject", Method::POST, post(changes::reject)),
        ("/v1/tiers/{tier}/breaker", Method::PUT, put(breakers::put_tier)),
        (
            "/v1/tiers/{tier}/breaker",
            Method::DELETE,
            delete(changes::request_tier_breaker_reset),
        ),
        ("/v1/tenants/{tenant}/breaker", Method::PUT, put(breakers::put_tenant)),
        (
            "/v1/tenants/{tenant}/breaker",
            Method::DELETE,
            delete(breakers::delete_tenant),
        ),
        (
            "/v1/tenants/{tenant}/accounts/{subject}/breaker",
            Method::PUT,
            put(breakers::put_account),
        ),
        (
            "/v1/tenants/{tenant}/accounts/{subject}/breaker",
            Method::DELETE,
            delete(breakers::delete_account),
        ),
    ]
}

impl AdminState {
    /// The store of an operator's tier; `503` if there is none (the policy names a tier
    /// the stores were not opened for).
    fn tier_store(&self, tier: &str) -> Result<Arc<dyn crate::store::TierStore>, AdminError> {
        self.switches
            .sessions()
            .store(tier)
            .map_err(|_| AdminError::Unavailable {
                message: "No store for this tier.",
                cause: None,
            })
    }
}

/// The admin router; `tls` says whether the listener speaks HTTPS (the console's cookie
/// depends on it).
pub fn router(state: AdminState, tls: bool) -> Router {
    // Routes of one path with several methods are merged by axum.
    let api = api_routes()
        .into_iter()
        .fold(Router::new(), |router, (path, _, handler)| router.route(path, handler));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .merge(api)
        .fallback(error::no_such_path)
        .method_not_allowed_fallback(error::wrong_method)
        // No admin body is larger: stop reading there, before any token is checked (axum's
        // default would read 2 MiB of anyone's body first).
        .layer(axum::extract::DefaultBodyLimit::max(BODY_MAX))
        .layer(axum::middleware::from_fn(error::with_request_id))
        // Outside the error map: a 503 from readiness carries its reasons, not a refusal.
        .route("/readyz", get(readyz))
        // The operator console's HTML pages: outside the API's error map and body limit
        // (they have their own), and no part of the OpenAPI document.
        .merge(crate::console::router(crate::console::Services {
            live: state.live.clone(),
            switches: state.switches.clone(),
            changes: state.changes.clone(),
            tls,
        }))
        .with_state(state)
        .layer(axum::middleware::from_fn(access_log))
}

/// Serves the admin listener until shutdown: HTTPS only when `tls` is given (built at
/// start from `[listen.admin_tls]`; a reload does not change it), else plain HTTP. Its
/// connections, their limits and the drain are [`listener`]'s.
pub async fn serve(
    listener: TcpListener,
    state: AdminState,
    tls: Option<Arc<rustls::ServerConfig>>,
    shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let limits = state.live.snapshot().config.gateway.limits.clone();
    let app = router(state, tls.is_some());
    listener::serve(listener, app, tls, limits, shutdown).await;
    Ok(())
}

/// Middleware around every admin route (API, console, health, metrics): one access-log
/// line per request, when the access log is on. Method, path without the query, status,
/// duration, client address; never a header (bearer tokens, console cookies).
async fn access_log(req: axum::extract::Request, next: axum::middleware::Next) -> Response {
    if !tracing::enabled!(target: "access", tracing::Level::INFO) {
        return next.run(req).await;
    }
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(peer)| peer.ip());
    let resp = next.run(req).await;
    let request_id = resp
        .headers()
        .get(crate::telemetry::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-");
    crate::telemetry::AdminAccessRecord {
        request_id,
        method: method.as_str(),
        path: &path,
        status: resp.status().as_u16(),
        duration: started.elapsed(),
        client_ip,
    }
    .write();
    resp
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready once the policy is loaded and sessions can be trusted (with a shared store: the
/// other replicas' change events are followed); reports the outcome of the last reload (a
/// failed reload keeps the previous policy serving, so the node stays ready).
async fn readyz(State(state): State<AdminState>) -> Response {
    let status = state.live.status();
    let sessions = state.switches.sessions().serving();
    let code = if sessions.is_ok() {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "ready": sessions.is_ok(),
        "reasons": sessions.err().into_iter().collect::<Vec<_>>(),
        "policy": {
            "digest": status.serving_digest,
            "last_reload": status.last_reload_at.as_ref().map(|at| json!({
                "at": at,
                "ok": status.last_reload_ok,
                "trigger": status.last_reload_trigger,
                "errors": status.last_reload_errors,
            })),
        }
    });
    (code, axum::Json(body)).into_response()
}

async fn metrics(State(state): State<AdminState>) -> Response {
    let snapshot = state.live.snapshot();
    let m = &state.metrics;
    for (tenant, client) in &snapshot.upstreams {
        let labels = crate::telemetry::TenantLabels { tenant: tenant.clone() };
        let guard = client.guard();
        m.upstream_breaker_state
            .get_or_create(&labels)
            .set(guard.state().gauge_value());
        m.upstream_in_flight
            .get_or_create(&labels)
            .set(i64::try_from(guard.in_flight()).unwrap_or(i64::MAX));
        m.upstream_queued
            .get_or_create(&labels)
            .set(i64::try_from(guard.queued()).unwrap_or(i64::MAX));
    }
    m.kill_switches
        .set(i64::try_from(state.switches.board().len()).unwrap_or(i64::MAX));
    m.ready.set(i64::from(state.switches.sessions().serving().is_ok()));
    store_gauges(&state, &snapshot.config).await;
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

/// Live sessions counted per tenant at most, so a scrape stays cheap.
const ACTIVE_SESSIONS_CAP: usize = 100_000;

/// How long a scrape waits for a tier's store before calling it down.
const STORE_SCRAPE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Sets the gauges read from the kill-switch board and the stores at scrape time: each
/// tenant's suspension and live sessions, and whether each tier's store answered; and
/// creates each tenant's sign-in series at 0 ([`crate::telemetry::LoginCounter::declare`]). A tenant
/// whose count failed (or was skipped, its tier's store having failed) loses its session
/// series rather than keep a stale value.
async fn store_gauges(state: &AdminState, config: &crate::config::Config) {
    let m = &state.metrics;
    let now = crate::clock::unix_now();
    let sessions = state.switches.sessions();
    let mut store_up: std::collections::BTreeMap<&str, bool> = std::collections::BTreeMap::new();
    for tenant in &config.tenants {
        let labels = crate::telemetry::TenantLabels {
            tenant: tenant.id.clone(),
        };
        let suspended = state
            .switches
            .board()
            .tenant_switch(&tenant.tier, &tenant.id, now)
            .is_some();
        m.tenant_suspended.get_or_create(&labels).set(i64::from(suspended));
        m.logins.declare(&tenant.id);
        // A tier whose store already failed this scrape is not asked again: with a
        // blackholed Redis, each ask would wait out the timeout.
        let up = store_up.entry(tenant.tier.as_str()).or_insert(true);
        let counted = match sessions.store(&tenant.tier) {
            Ok(store) if *up => tokio::time::timeout(
                STORE_SCRAPE_TIMEOUT,
                store.list_tenant_sessions(&tenant.id, now, ACTIVE_SESSIONS_CAP),
            )
            .await
            .ok()
            .and_then(Result::ok)
            .map(|live| live.len()),
            _ => None,
        };
        *up &= counted.is_some();
        match counted {
            Some(n) => {
                m.active_sessions
                    .get_or_create(&labels)
                    .set(i64::try_from(n).unwrap_or(i64::MAX));
            }
            None => {
                m.active_sessions.remove(&labels);
            }
        }
    }
    for (tier, up) in store_up {
        m.store_up
            .get_or_create(&crate::telemetry::TierLabels { tier: tier.to_string() })
            .set(i64::from(up));
    }
}

/// Who presented a valid bearer token.
enum Caller {
    /// A person operating a tier.
    Operator { name: String, tier: String },
    /// A machine (SIEM, SOAR) with scoped rights on named tenants of a tier.
    Automation {
        name: String,
        tier: String,
        scopes: Vec<String>,
        tenants: Vec<String>,
    },
}

impl Caller {
    /// How the audit log names the caller.
    fn actor_name(&self) -> String {
        match self {
            Caller::Operator { name, .. } => format!("operator:{name}"),
            Caller::Automation { name, .. } => format!("automation:{name}"),
        }
    }

    /// The tier whose policy lists the token.
    fn tier(&self) -> &str {
        match self {
            Caller::Operator { tier, .. } | Caller::Automation { tier, .. } => tier,
        }
    }
}

/// Finds the operator or automation entry whose token hash matches, checking every entry
/// (constant time per comparison, no early exit on a match position).
fn authenticate_caller(live: &Live, headers: &HeaderMap) -> Option<Caller> {
    let token = bearer_token(headers)?;
    let snapshot = live.snapshot();
    let mut found = None;
    for tier in snapshot.config.tiers.values() {
        for op in &tier.operators {
            if token_matches_sha256(token.as_bytes(), &op.token_sha256) {
                found = Some(Caller::Operator {
                    name: op.name.clone(),
                    tier: tier.name.clone(),
                });
            }
        }
        for auto in &tier.automation {
            if token_matches_sha256(token.as_bytes(), &auto.token_sha256) {
                found = Some(Caller::Automation {
                    name: auto.name.clone(),
                    tier: tier.name.clone(),
                    scopes: auto.scopes.clone(),
                    tenants: auto.tenants.clone(),
                });
            }
        }
    }
    found
}

/// The operator behind the bearer token of a call only operators may make, as
/// `(name, tier)`; otherwise the refusal: 401 without a valid token, 403 (saying
/// `automation`) for an automation token. `call` names the route (`GET /v1/audit`).
///
/// Every refusal is an `admin_access` security event. An automation token's is also
/// audited (`admin.refused`) in its tier's log, as its refused kill switch calls are:
/// tokens are few and named, so this cannot flood the log. Calls without a valid token
/// are only logged: anyone can send those.
async fn operator_only(
    state: &AdminState,
    headers: &HeaderMap,
    peer: &SocketAddr,
    call: &'static str,
    automation: &'static str,
) -> Result<(String, String), AdminError> {
    let source_ip = peer.ip().to_string();
    let (caller, refusal) = match authenticate_caller(&state.live, headers) {
        Some(Caller::Operator { name, tier }) => return Ok((name, tier)),
        Some(caller) => (Some(caller), AdminError::Forbidden(automation)),
        None => (None, AdminError::NoOperatorToken),
    };
    let actor = caller.as_ref().map(Caller::actor_name);
    let why = refusal.public_message();
    SecurityEvent {
        reason: Some(&why),
        source_ip: Some(&source_ip),
        user: actor.as_deref(),
        tier: caller.as_ref().map(Caller::tier),
        target: Some(call),
        system: Some("api"),
        ..SecurityEvent::new("admin_access", EventOutcome::Failure)
    }
    .warn("admin API call refused");
    if let (Some(caller), Some(actor)) = (&caller, actor) {
        let tier = caller.tier().to_string();
        let entry = crate::audit::AuditEntry {
            target: format!("tier:{tier}"),
            tier: tier.clone(),
            reason: why,
            after: json!({ "refused": call, "status": refusal.status().as_u16() }),
            ..crate::audit::AuditEntry::by(
                &crate::audit::Actor {
                    name: actor,
                    source_ip,
                    system: "api".into(),
                },
                "admin.refused",
                crate::clock::unix_now(),
            )
        };
        let written = match state.switches.sessions().store(&tier) {
            Ok(store) => store.append_audit(&entry).await,
            Err(e) => Err(e),
        };
        if let Err(e) = written {
            tracing::error!(error = %e, portcullis.tier = %tier, "could not audit a refused admin API call");
        }
    }
    Err(refusal)
}

/// The bearer token of a request: one `Authorization` line, `Bearer <token>`. Two lines
/// count as none, so no reader of the request can pick another line than this one did.
/// The scheme is matched without regard to case and followed by one or more spaces
/// (RFC 9110 §11.1, §11.4: `auth-scheme 1*SP token68`); a token that is empty or holds
/// whitespace is none.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut lines = headers.get_all(header::AUTHORIZATION).iter();
    let line = lines.next()?;
    if lines.next().is_some() {
        return None;
    }
    let (scheme, rest) = line.to_str().ok()?.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_start_matches(' ').trim_end();
    let well_formed = !token.is_empty() && !token.contains(|c: char| c.is_ascii_whitespace());
    well_formed.then_some(token)
}

/// The name of the operator of `tier` holding `token`, checking every entry (constant
/// time per comparison).
fn operator_of(tier: &crate::config::Tier, token: &str) -> Option<String> {
    let mut found = None;
    for op in &tier.operators {
        if token_matches_sha256(token.as_bytes(), &op.token_sha256) {
            found = Some(op.name.clone());
        }
    }
    found
}

/// The security event of an admin call refused because its token reaches neither the
/// tier nor the tenant it named (`cross_tier` / `cross_tenant`).
fn scope_refused_event(
    action: &str,
    actor: &str,
    credential_tier: &str,
    tier: &str,
    tenant: Option<&str>,
    source_ip: &str,
) {
    SecurityEvent {
        reason: Some("admin credential used outside its scope"),
        source_ip: Some(source_ip),
        user: Some(actor),
        tenant: Some(tenant.unwrap_or("-")),
        tier: Some(tier),
        credential_tier: Some(credential_tier),
        ..SecurityEvent::new(action, EventOutcome::Failure)
    }
    .warn("admin API call refused");
}

/// Largest request body accepted.
const BODY_MAX: usize = 16 * 1024;

/// An optional JSON body: the type's default when none (or JSON `null`) was sent, as the
/// OpenAPI document says of optional bodies.
fn parse_optional_body<T: Default + serde::de::DeserializeOwned>(
    headers: &HeaderMap,
    body: &Bytes,
) -> Result<T, AdminError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    check_json_request(headers, body)?;
    if body.trim_ascii() == b"null" {
        return Ok(T::default());
    }
    parse_body(headers, body)
}

/// A JSON object body (`Content-Type: application/json`, at most [`BODY_MAX`] bytes); its
/// errors never repeat a value (see [`AdminError::json_body`]). Only an object: serde would
/// also read a struct from an array of its fields in order (`[]` as every default).
fn parse_body<T: serde::de::DeserializeOwned>(headers: &HeaderMap, body: &Bytes) -> Result<T, AdminError> {
    check_json_request(headers, body)?;
    if !body.trim_ascii_start().starts_with(b"{") {
        return Err(AdminError::BadRequest("Invalid JSON body: expected an object.".into()));
    }
    serde_json::from_slice(body).map_err(|e| AdminError::json_body(&e))
}

/// A body the admin API reads: at most [`BODY_MAX`] bytes, declared as JSON.
fn check_json_request(headers: &HeaderMap, body: &Bytes) -> Result<(), AdminError> {
    if body.len() > BODY_MAX {
        return Err(AdminError::PayloadTooLarge);
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !json_type {
        return Err(AdminError::UnsupportedMediaType);
    }
    Ok(())
}

/// `POST /v1/reload`: re-reads the policy directory, attributed to the operator.
///
/// The policy set is reloaded as a whole, so the caller must be an operator of every tier
/// whose effective policy the reload changes (its tier file, its tenants' files, the
/// secrets they name; every tier when `gateway.toml` changed), as listed by the policy
/// being served (for a tier the reload adds, by its new file). Otherwise: `403`, nothing
/// applied. Each changed tier's audit log records the reload before it applies. SIGHUP
/// needs no token: whoever may signal the process may already edit its files.
#[utoipa::path(post, path = "/v1/reload", operation_id = "reload", tag = "policy",
    responses((status = 200, description = "Applied: `{\"status\":\"applied\",\"digest\",\"tiers\"}`.", body = serde_json::Value)))]
async fn reload(
    State(state): State<AdminState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, AdminError> {
    let (name, tier) = operator_only(
        &state,
        &headers,
        &peer,
        "POST /v1/reload",
        "Automation tokens cannot reload the policy.",
    )
    .await?;
    let Some(token) = bearer_token(&headers) else {
        return Err(AdminError::NoOperatorToken);
    };
    let source_ip = peer.ip().to_string();
    let trigger = format!("api:{name}@{tier} from {source_ip}");
    let prepared = match state.live.prepare_reload(&trigger).await {
        Ok(p) => p,
        Err(errors) => {
            return Err(AdminError::InvalidPolicy {
                message: "The policy set has errors; the previous policy keeps serving.",
                errors: errors.iter().map(ToString::to_string).collect(),
                change: None,
            });
        }
    };
    let mut operators = Vec::new();
    let mut refused = Vec::new();
    for changed in &prepared.changed_tiers {
        let listed = prepared
            .old()
            .tiers
            .get(changed)
            .or_else(|| prepared.new_config().tiers.get(changed));
        match listed.and_then(|t| operator_of(t, token)) {
            Some(op) => operators.push((changed.clone(), op)),
            None => refused.push(changed.clone()),
        }
    }
    if !refused.is_empty() {
        drop(prepared);
        for other in &refused {
            scope_refused_event(
                "cross_tier",
                &format!("operator:{name}"),
                &tier,
                other,
                None,
                &source_ip,
            );
        }
        return Err(AdminError::ReloadRefused { tiers: refused });
    }
    let (old, new) = (&prepared.old().effective, &prepared.new_config().effective);
    let digest_of = |d: &crate::config::EffectiveDigests, t: &str| d.tiers.get(t).map(hex::encode);
    let now = crate::clock::unix_now();
    for (changed, op) in &operators {
        let Ok(store) = state.switches.sessions().store(changed) else {
            // A tier added by this reload has no store (nor log) until the next restart.
            tracing::warn!(tier = %changed, "no audit log for a tier added by reload");
            continue;
        };
        let entry = crate::audit::AuditEntry {
            time: now,
            actor: format!("operator:{op}"),
            source_ip: source_ip.clone(),
            system: "api".into(),
            action: "policy.reload".into(),
            target: format!("tier:{changed}"),
            tenant: None,
            tier: changed.clone(),
            reason: "policy reload".into(),
            before: json!({ "tier_digest": digest_of(old, changed), "policy_digest": prepared.old().digest }),
            after: json!({ "tier_digest": digest_of(new, changed), "policy_digest": prepared.new_config().digest }),
            incident: None,
        };
        if let Err(e) = store.append_audit(&entry).await {
            return Err(AdminError::Unavailable {
                message: "The audit log is unavailable; nothing was applied.",
                cause: Some(error::Cause::new(
                    "cannot audit a reload; not applied",
                    format!("tier {changed}: {e}"),
                )),
            });
        }
    }
    let changed: Vec<String> = prepared.changed_tiers.iter().cloned().collect();
    let digest = prepared.apply();
    Ok((
        StatusCode::OK,
        axum::Json(json!({ "status": "applied", "digest": digest, "tiers": changed })),
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    use axum::http::HeaderValue;

    fn bearer_of(value: &str) -> Option<String> {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, HeaderValue::from_str(value).unwrap());
        bearer_token(&headers).map(str::to_string)
    }

    /// If this broke, a client spelling the scheme `bearer` or `BEARER` (RFC 9110 makes
    /// the scheme case-insensitive) would be refused with a valid token, or a malformed
    /// line (no token, a tab, another scheme, a token with spaces) would pass as a token.
    #[test]
    fn the_bearer_scheme_ignores_case_and_takes_one_or_more_spaces() {
        for good in [
            "Bearer t0k-en",
            "bearer t0k-en",
            "BEARER t0k-en",
            "bEaReR t0k-en",
            "Bearer   t0k-en",
        ] {
            assert_eq!(bearer_of(good).as_deref(), Some("t0k-en"), "{good:?}");
        }
        for bad in [
            "Bearer",
            "Bearer ",
            "Bearer    ",
            "Bearer\tt0k-en",
            "Bearer \tt0k-en",
            "Bearer t0k en",
            "Bearert0k-en",
            "Basic t0k-en",
            "Bearer-x t0k-en",
            " Bearer t0k-en",
            "t0k-en",
        ] {
            assert_eq!(bearer_of(bad), None, "{bad:?}");
        }
        let mut two = HeaderMap::new();
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        two.append(header::AUTHORIZATION, HeaderValue::from_static("Bearer a"));
        assert_eq!(bearer_token(&two), None);
    }

    /// If this broke, an optional body sent as JSON `null` (which the document allows, and
    /// schemathesis sent) would be refused as malformed.
    #[test]
    fn an_optional_body_may_be_absent_or_null() {
        #[derive(Debug, Default, PartialEq, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            reason: Option<String>,
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        for empty in [&b""[..], b"null", b" null "] {
            let body = parse_optional_body::<Body>(&headers, &Bytes::copy_from_slice(empty)).unwrap();
            assert_eq!(body, Body::default(), "{empty:?}");
        }
        let body = parse_optional_body::<Body>(&headers, &Bytes::from_static(br#"{"reason":"r"}"#)).unwrap();
        assert_eq!(body.reason.as_deref(), Some("r"));
        assert!(parse_optional_body::<Body>(&headers, &Bytes::from_static(b"[]")).is_err());
    }

    /// If this broke, a body that is no JSON object would be read anyway: serde reads a
    /// struct from an array of its fields, so `[]` became a body of defaults (schemathesis
    /// found `DELETE /v1/tiers/prod/breaker` with `[]` accepted).
    #[test]
    fn only_a_json_object_is_a_body() {
        #[derive(Debug, Default, serde::Deserialize)]
        struct Body {
            #[serde(default)]
            #[allow(dead_code)]
            reason: String,
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        for bad in [&b"[]"[..], b"[\"r\"]", b"\"r\"", b"1", b"true"] {
            let body = Bytes::copy_from_slice(bad);
            assert!(
                matches!(parse_body::<Body>(&headers, &body), Err(AdminError::BadRequest(_))),
                "{bad:?}"
            );
            assert!(
                matches!(
                    parse_optional_body::<Body>(&headers, &body),
                    Err(AdminError::BadRequest(_))
                ),
                "{bad:?} as an optional body"
            );
        }
        assert!(parse_body::<Body>(&headers, &Bytes::from_static(b" {} ")).is_ok());
    }

    /// If this broke, a secret pasted into the wrong field of a trip (here `expires_at`)
    /// would come back in the error, and so reach logs and terminals.
    #[test]
    fn a_wrongly_typed_value_is_never_repeated() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct TripBody {
            reason: String,
            expires_at: Option<i64>,
        }
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        let shown = |body: &'static [u8]| match parse_body::<TripBody>(&headers, &Bytes::from_static(body)) {
            Err(AdminError::BadRequest(m)) => m,
            other => panic!("{other:?}"),
        };
        let m = shown(br#"{"reason": "x", "expires_at": "hunter2-secret"}"#);
        assert!(!m.contains("hunter2"), "{m}");
        assert!(m.contains("expected i64"), "{m}");
        let m = shown(br#"{"reason": "x", "surprise": 1}"#);
        assert!(m.contains("unknown field `surprise`"), "{m}");
    }
}
