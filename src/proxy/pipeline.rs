//! The request path of the public listener, step by step: method and Host checks,
//! host → tenant, reserved prefix, route policy on the normalised path, body limit,
//! header hygiene, forwarding. One access-log event and one metric per request, and one
//! OpenTelemetry span when tracing is on (see [`crate::otel`]).
//!
//! Every refusal goes through `respond::refusal`; nothing is forwarded unless every
//! check passed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use http::header::{CONTENT_LENGTH, HOST, HeaderName, HeaderValue, ORIGIN};
use http::{Method, Request, Response, Version};
use hyper::body::Incoming;
use tracing::Instrument as _;

use super::body::ProxyBody;
use super::conn::ConnState;
use super::headers::{self, ClientContext};
use super::identity::Identities;
use super::respond::{self, Refusal};
use super::{forward_auth, reserved, tunnel};
use crate::config::TenantEntry;
use crate::live::{Live, Site, Snapshot};
use crate::otel;
use crate::policy::{self, Decision, Identity, Target};
use crate::records::SessionRecord;
use crate::session::CookieMemo;
use crate::telemetry::{AccessRecord, Metrics, RequestLabels, TenantMetrics};
use crate::telemetry::{EventOutcome, SecurityEvent};
use crate::tenancy;
use crate::ui::{self, Portal};
use crate::upstream::{LimitedBody, UpstreamError};

/// Responses larger than this (or of unknown length) are watched for revocation.
const STREAM_WATCH_BYTES: u64 = 1024 * 1024;

/// Header carrying the tier's upstream credential to its upstreams.
const UPSTREAM_TOKEN_HEADER: HeaderName = HeaderName::from_static("portcullis-upstream-token");

/// The request id the upstream sees (the same as in the access log and error pages).
const REQUEST_ID_HEADER: HeaderName = HeaderName::from_static(crate::telemetry::REQUEST_ID_HEADER);

/// What the listener knows about a client connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnInfo {
    /// Client address as seen on the socket.
    pub peer: SocketAddr,
    /// The connection is TLS.
    pub tls: bool,
    /// Users reach the gateway over `https`: the connection is TLS, or a balancer in front
    /// ends TLS (`[listen] external_scheme`). What HSTS and `X-Forwarded-Proto` assume.
    pub https: bool,
    /// The peer is a configured trusted proxy.
    pub peer_trusted: bool,
    /// The port the public listener is bound to (for the tenants' canonical origins).
    pub port: u16,
}

/// Shared state of the request path.
pub struct Pipeline {
    /// The live policy set.
    pub live: Arc<Live>,
    /// Metrics registry.
    pub metrics: Arc<Metrics>,
    /// The gateway's own pages and APIs, and the sessions behind them.
    pub portal: Portal,
    /// Per-process prefix of request ids.
    id_prefix: u32,
    /// Request counter for request ids.
    next_id: AtomicU64,
    /// Signed assertions by session, reused while fresh.
    identities: Identities,
    /// OpenTelemetry export is on (`[tracing]` at start): requests get spans and the
    /// upstream a `traceparent`. Off, the request path makes no span and no header.
    traced: bool,
}

/// Facts about one request for the access log and the metrics.
struct Outcome {
    site: Option<Arc<Site>>,
    upstream_status: Option<u16>,
}

impl Pipeline {
    /// Creates the request path over the live policy.
    pub fn new(live: Arc<Live>, metrics: Arc<Metrics>, portal: Portal) -> Arc<Self> {
        // As at start, when the exporter was set up (a reload does not start or stop it).
        let traced = live.snapshot().config.gateway.tracing.is_some();
        Arc::new(Pipeline {
            traced,
            live,
            metrics,
            portal,
            id_prefix: rand::random(),
            next_id: AtomicU64::new(0),
            identities: Identities::new(),
        })
    }

    /// Handles one request; never fails (refusals are responses).
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        conn: ConnInfo,
        state: Arc<ConnState>,
    ) -> Result<Response<ProxyBody>, Infallible> {
        let _in_flight = state.begin(req.version());
        // The access log's fields are gathered only when it is on.
        // (A `Uri` clone shares its bytes: no copy of the path.)
        let logged = tracing::enabled!(target: "access", tracing::Level::INFO)
            .then(|| (Instant::now(), req.method().clone(), req.uri().clone()));
        let request_id = RequestId::new(self.id_prefix, self.next_id.fetch_add(1, Ordering::Relaxed));
        let request_id = request_id.as_str();
        let html = respond::wants_html(req.headers()) && matches!(*req.method(), Method::GET | Method::HEAD);
        let snapshot = self.live.snapshot();
        let mut outcome = Outcome {
            site: None,
            upstream_status: None,
        };
        let span = match self.traced {
            true => otel::request_span(req.method(), req.headers(), conn.peer_trusted),
            false => tracing::Span::none(),
        };
        // Off, the future is awaited bare: wrapping it (even in an empty span) moves the
        // whole request state machine once more, which callgrind counted at ~4 %.
        let routed = match self.traced {
            true => {
                self.route(req, conn, &state, &snapshot, request_id, &mut outcome)
                    .instrument(span.clone())
                    .await
            }
            false => self.route(req, conn, &state, &snapshot, request_id, &mut outcome).await,
        };
        let mut response = match routed {
            Ok(resp) => resp,
            Err(refusal) => {
                let tenant = outcome.site.as_ref().map(|site| site.entry.tenant.name.as_str());
                respond::refusal(&refusal, html, request_id, tenant)
            }
        };
        if conn.https {
            respond::strict_transport_security(response.headers_mut());
        }
        let status = response.status().as_u16();
        let entry = outcome.site.as_ref().map(|site| &site.entry);
        let tenant_id = entry.map_or("-", |t| t.tenant.id.as_str());
        let tier = entry.map_or("-", |t| t.tier.name.as_str());
        if self.traced {
            otel::RequestSpan {
                tenant: tenant_id,
                tier,
                request_id,
                status,
                upstream_status: outcome.upstream_status,
            }
            .record(&span);
        }
        match &outcome.site {
            Some(site) => self.site_metrics(site).request(status),
            None => {
                self.metrics
                    .requests
                    .get_or_create(&RequestLabels {
                        tenant: "-".to_string(),
                        status,
                    })
                    .inc();
            }
        }
        if let Some((started, method, uri)) = logged {
            AccessRecord {
                request_id,
                tenant: tenant_id,
                tier,
                method: method.as_str(),
                path: uri.path(),
                status,
                upstream_status: outcome.upstream_status,
                duration: started.elapsed(),
                client_ip: conn.peer.ip(),
            }
            .write();
        }
        Ok(response)
    }

    /// A site's metric handles, resolved on its first request.
    fn site_metrics<'s>(&self, site: &'s Site) -> &'s TenantMetrics {
        site.metrics.get_or_init(|| self.metrics.tenant(&site.entry.tenant.id))
    }

    async fn route(
        &self,
        mut req: Request<Incoming>,
        conn: ConnInfo,
        state: &ConnState,
        snapshot: &Snapshot,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, Refusal> {
        if matches!(*req.method(), Method::TRACE | Method::CONNECT) {
            return Err(Refusal::MethodNotAllowed);
        }
        check_framing(&req)?;
        if !ui::web::cookie_lines_are_utf8(req.headers()) {
            return Err(Refusal::BadRequest("Cookie header is not valid UTF-8."));
        }
        let host_value = request_host(&req)?;
        let host = host_value
            .to_str()
            .ok()
            .and_then(tenancy::normalise_request_host)
            .ok_or(Refusal::BadRequest("Invalid Host header."))?;
        if req.uri().path() == forward_auth::PATH {
            return Box::pin(self.forward_auth(req, conn, snapshot, &host, request_id, outcome)).await;
        }
        let Some(site) = snapshot.sites.get(&host) else {
            return respond::unknown_host_asset(req.uri().path()).ok_or(Refusal::UnknownHost);
        };
        let site = site.clone();
        outcome.site = Some(site.clone());
        // After the tenant is known, so that its page can say whose site refused.
        check_head_size(&req, snapshot.config.gateway.limits.max_header_bytes)?;
        let entry = &site.entry;
        let tenant = &entry.tenant;

        let target = classify(&tenant.routes, req.uri().path())?;
        let now = crate::clock::unix_now();
        if matches!(&target, Target::Reserved(p) if p.strip_prefix(policy::RESERVED_PREFIX) == Some("status")) {
            return self.status(req.method(), &site, now);
        }
        if self.traced {
            match &target {
                Target::Reserved(_) => otel::record_route(policy::RESERVED_PREFIX),
                Target::Route { rule: Some(rule), .. } => otel::record_route(&rule.prefix),
                Target::Route { rule: None, .. } => {}
            }
        }
        let admitted = self.admit(
            &req,
            &conn,
            request_id,
            Some(state),
            snapshot,
            entry,
            &target,
            req.method(),
            now,
        );
        let (session, suspended) = match self.traced {
            true => admitted.instrument(otel::session_check_span()).await?,
            false => admitted.await?,
        };
        let (path, rule) = match target {
            Target::Reserved(path) => {
                let session = session.unwrap_or(None);
                let ip = headers::client_ip(req.headers(), conn.peer.ip(), &snapshot.config.gateway.trusted_proxies);
                // Boxed: the pages' state machines are large, and keeping them out of the
                // proxy future saves copying kilobytes on every proxied request.
                return Box::pin(self.reserved(
                    req, entry, &host, &path, conn, ip, session, suspended, snapshot, now, request_id,
                ))
                .await;
            }
            Target::Route { path, rule } => (path, rule),
        };
        let rules = policy::PathRules::of(&tenant.routes, &path, rule);
        let public = rules.is_public();
        let session = match decide(&rules, session, &path, req.uri().query()) {
            Ok(session) => session,
            // Browsers ask for the icon on every page: without a session they get the
            // gateway's (inline only: to forward-auth a 200 would mean "let it through").
            Err(Refusal::NeedsSession { .. }) if path == "/favicon.ico" => return Err(Refusal::Icon),
            Err(refusal) => return Err(refusal),
        };

        let limit = rules.body_limit().unwrap_or(tenant.max_body_bytes);
        if declared_length(&req)?.is_some_and(|len| len > limit) {
            return Err(Refusal::PayloadTooLarge);
        }
        let websocket = req.version() == Version::HTTP_11 && headers::is_websocket_upgrade(req.headers());
        if websocket && !same_origin(&req, &host) {
            return Err(Refusal::Forbidden("Cross-origin WebSocket refused."));
        }
        let client_upgrade = websocket.then(|| hyper::upgrade::on(&mut req));

        let client = site.upstream.as_ref().ok_or(Refusal::BadGateway)?;
        let target = client.target(&path, req.uri())?;
        let (mut parts, body) = req.into_parts();
        let host_str = host_value.to_str().unwrap_or_default();
        let ctx = ClientContext {
            peer: conn.peer.ip(),
            peer_trusted: conn.peer_trusted,
            proto: if conn.https { "https" } else { "http" },
            host: host_str,
            cache: Some(&state.forwarding),
        };
        if let Some(presented) = parts.headers.get(UPSTREAM_TOKEN_HEADER) {
            report_presented_upstream_token(presented.as_bytes(), snapshot, entry, &conn, request_id);
        }
        headers::sanitize_request(&mut parts.headers, websocket, &ctx);
        if let Ok(id) = HeaderValue::from_str(request_id) {
            parts.headers.insert(REQUEST_ID_HEADER, id);
        }
        if let Some(s) = session.as_ref().filter(|_| !public) {
            self.identities
                .of(&site, s, Some(&state.identity), now)?
                .insert_into(&mut parts.headers);
        }
        if let Some(token) = &entry.tier.keys.upstream_token
            && let Ok(mut value) = HeaderValue::from_bytes(token.expose_secret())
        {
            value.set_sensitive(true);
            parts.headers.insert(UPSTREAM_TOKEN_HEADER, value);
        }
        parts.uri = target;
        let upstream_span = self.traced.then(otel::upstream_span);
        if let Some(span) = &upstream_span {
            otel::inject(span, &mut parts.headers);
        }
        let upstream_req = Request::from_parts(parts, LimitedBody::new(body, limit));
        let exchange = async {
            let mut slot = client.guard().admit().await.map_err(UpstreamError::from)?;
            match client.send(upstream_req, &host_value).await {
                Ok(answer) => Ok((slot, answer)),
                Err(e) => {
                    // A client's broken body says nothing about the upstream's health.
                    if !matches!(e, UpstreamError::ClientBody(_)) {
                        slot.failed();
                    }
                    Err(e)
                }
            }
        };
        let (mut slot, (mut resp, latency)) = match upstream_span {
            Some(span) => exchange.instrument(span).await?,
            None => exchange.await?,
        };
        slot.record_status(resp.status().as_u16());
        self.site_metrics(&site).upstream_latency(latency.as_secs_f64());
        outcome.upstream_status = Some(resp.status().as_u16());

        let switching = resp.status() == http::StatusCode::SWITCHING_PROTOCOLS;
        if switching {
            match client_upgrade {
                Some(upgrade) => {
                    let watch = session
                        .as_ref()
                        .map(|s| tunnel::SessionWatch::of(&self.portal.sessions, s));
                    tunnel::spawn_tunnel(upgrade, &mut resp, watch)
                }
                None => return Err(Refusal::BadGateway),
            }
        }
        let (mut parts, body) = resp.into_parts();
        headers::sanitize_response(&mut parts.headers, switching);
        // A long or open-ended stream of a session ends when the session does; short
        // bodies are done before a revocation could matter and skip the watcher.
        let streaming = http_body::Body::size_hint(&body)
            .exact()
            .is_none_or(|n| n > STREAM_WATCH_BYTES);
        let body = match session.as_ref().filter(|_| !public && streaming && !switching) {
            Some(s) => ProxyBody::watched(
                body,
                tunnel::SessionWatch::of(&self.portal.sessions, s).until_revoked(),
                Some(slot),
            ),
            // A tunnel's slot is released now: WebSockets are long-lived and would use up
            // the bulkhead; the circuit breaker has had its answer (101).
            None if switching => ProxyBody::upstream(body, None),
            None => ProxyBody::upstream(body, Some(slot)),
        };
        Ok(Response::from_parts(parts, body))
    }
}

impl Pipeline {
    /// What every request to a tenant gets before its route decides, inline and through
    /// forward-auth alike: the tenant's kill switch (only a few reserved endpoints stay
    /// open under it), the session, and the account's kill switch. Returns the session
    /// (`Err` when the store cannot answer) and the tenant's switch, if any.
    #[allow(clippy::too_many_arguments)]
    async fn admit(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        request_id: &str,
        state: Option<&ConnState>,
        snapshot: &Snapshot,
        entry: &TenantEntry,
        target: &Target<'_>,
        method: &Method,
        now: i64,
    ) -> Result<Admitted, Refusal> {
        let tenant = &entry.tenant;
        let board = self.portal.switches.board();
        let suspended = board.tenant_switch(&entry.tier.name, &tenant.id, now);
        if let Some(ks) = &suspended {
            let open = matches!(target, Target::Reserved(p)
                if reserved::open_while_suspended(p.strip_prefix(policy::RESERVED_PREFIX).unwrap_or_default(), method));
            if !open {
                return Err(locked(ks));
            }
        }
        let memo = state.map(|state| &state.cookie);
        let session = self.session(req, snapshot, entry, conn, request_id, memo, now).await;
        // The stylesheet and icon stay open to a suspended account, so its 423 page is
        // styled (checked last: only a refusal pays for it).
        let asset = || matches!(target, Target::Reserved(p) if reserved::is_page_asset(p.strip_prefix(policy::RESERVED_PREFIX).unwrap_or_default()));
        if let Ok(None) = session
            && board.has_account_switches(&entry.tier.name, &tenant.id)
            && let Some(ks) = self.account_locked(req, entry, now).await
            && !asset()
        {
            return Err(locked(&ks));
        }
        if let Ok(Some(s)) = &session
            && let Some(ks) = board.account_switch(&entry.tier.name, &tenant.id, &s.subject, now)
            && !asset()
        {
            return Err(locked(&ks));
        }
        Ok((session, suspended))
    }

    /// `/.portcullis/auth`: whether the request a proxy is holding may pass (see
    /// [`forward_auth`]). Refusals are answered inline, or as nginx needs them.
    async fn forward_auth(
        &self,
        req: Request<Incoming>,
        conn: ConnInfo,
        snapshot: &Snapshot,
        host: &str,
        request_id: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, Refusal> {
        check_head_size(&req, snapshot.config.gateway.limits.max_header_bytes)?;
        let answer = forward_auth::answer_for(req.headers());
        match self
            .forward_auth_decision(&req, &conn, request_id, snapshot, host, outcome)
            .await
        {
            Ok(resp) => Ok(resp),
            Err(refusal) if answer == forward_auth::Answer::StatusOnly => {
                Ok(forward_auth::status_only(&refusal, request_id))
            }
            Err(refusal) => Err(refusal),
        }
    }

    /// The forward-auth decision: the same steps as inline, on the original request.
    async fn forward_auth_decision(
        &self,
        req: &Request<Incoming>,
        conn: &ConnInfo,
        request_id: &str,
        snapshot: &Snapshot,
        host: &str,
        outcome: &mut Outcome,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let original = forward_auth::Original::from_headers(req.headers())?;
        let host = match forward_auth::forwarded_host(req.headers())? {
            Some(named) if conn.peer_trusted => {
                tenancy::normalise_request_host(named).ok_or(Refusal::BadRequest("Invalid X-Forwarded-Host header."))?
            }
            _ => std::borrow::Cow::Borrowed(host),
        };
        let site = snapshot.sites.get(&host).ok_or(Refusal::UnknownHost)?.clone();
        outcome.site = Some(site.clone());
        let entry = &site.entry;
        let target = classify(&entry.tenant.routes, original.target.path())?;
        let now = crate::clock::unix_now();
        let (session, _) = self
            .admit(
                req,
                conn,
                request_id,
                None,
                snapshot,
                entry,
                &target,
                &original.method,
                now,
            )
            .await?;
        let Target::Route { path, rule } = target else {
            // The gateway's own pages and APIs check their callers themselves.
            return Ok(forward_auth::allowed(http::HeaderMap::new()));
        };
        let rules = policy::PathRules::of(&entry.tenant.routes, &path, rule);
        let public = rules.is_public();
        let session = decide(&rules, session, &path, original.target.query())?;
        let mut identity = http::HeaderMap::new();
        if let Some(s) = session.as_ref().filter(|_| !public) {
            self.identities.of(&site, s, None, now)?.insert_into(&mut identity);
        }
        Ok(forward_auth::allowed(identity))
    }
}

impl Pipeline {
    /// The request's session: `Ok(None)` without a (valid) cookie, `Err` when the store
    /// cannot answer (protected routes then fail closed). A session of another tenant
    /// counts as none and is logged as a cross-tenant attempt.
    #[allow(clippy::too_many_arguments)]
    async fn session(
        &self,
        req: &Request<Incoming>,
        snapshot: &Snapshot,
        entry: &TenantEntry,
        conn: &ConnInfo,
        request_id: &str,
        memo: Option<&CookieMemo>,
        now: i64,
    ) -> Result<Option<Arc<SessionRecord>>, ()> {
        let Some(value) = ui::web::single_cookie(req.headers(), &entry.tier.session_cookie) else {
            Self::report_foreign_tier_cookie(req, snapshot, entry, conn, request_id);
            return Ok(None);
        };
        let id_hash = match memo {
            Some(memo) => memo.id_hash(value),
            None => crate::session::id_hash_of_cookie(value),
        };
        let Some(id_hash) = id_hash else {
            return Ok(None);
        };
        let idle = entry.tenant.session.idle_secs();
        match self
            .portal
            .sessions
            .authenticate_key(&entry.tier.name, id_hash, now, idle)
            .await
        {
            Ok(Some(s)) if s.tenant == entry.tenant.id => Ok(Some(s)),
            Ok(Some(s)) => {
                let ip = conn.peer.ip().to_string();
                SecurityEvent {
                    reason: Some("session of another tenant"),
                    source_ip: Some(&ip),
                    user: Some(&s.subject),
                    tenant: Some(&entry.tenant.id),
                    tier: Some(&entry.tier.name),
                    request_id: Some(request_id),
                    ..SecurityEvent::new("cross_tenant", EventOutcome::Failure)
                }
                .warn("session cookie presented on another tenant's host");
                Ok(None)
            }
            Ok(None) => Ok(None),
            Err(e) => {
                tracing::error!(error = %e, "session store unavailable");
                Err(())
            }
        }
    }

    /// A session cookie of another tier on this tier's host never counts (each tier's
    /// cookie has its own name); presenting one is logged as a `cross_tier` attempt.
    fn report_foreign_tier_cookie(
        req: &Request<Incoming>,
        snapshot: &Snapshot,
        entry: &TenantEntry,
        conn: &ConnInfo,
        request_id: &str,
    ) {
        let mentions_gateway_cookie = req
            .headers()
            .get_all(http::header::COOKIE)
            .iter()
            .any(|v| v.as_bytes().windows(18).any(|w| w == b"__Host-portcullis-"));
        if !mentions_gateway_cookie {
            return;
        }
        let foreign = snapshot
            .config
            .tiers
            .keys()
            .filter(|t| **t != entry.tier.name)
            .find(|t| ui::web::single_cookie(req.headers(), &crate::config::session_cookie_name(t)).is_some());
        if let Some(other) = foreign {
            let ip = conn.peer.ip().to_string();
            SecurityEvent {
                reason: Some("session cookie of another tier"),
                source_ip: Some(&ip),
                tenant: Some(&entry.tenant.id),
                tier: Some(&entry.tier.name),
                credential_tier: Some(other),
                request_id: Some(request_id),
                ..SecurityEvent::new("cross_tier", EventOutcome::Failure)
            }
            .warn("session cookie of another tier presented; it counts as no session");
        }
    }

    /// `/.portcullis/status`, answered before any session is looked at: it is public, so
    /// only the tier's and tenant's kill switches and the upstream breaker show, never an
    /// account's (nor does a locked account's cookie turn it into a 423).
    fn status(&self, method: &Method, site: &Site, now: i64) -> Result<Response<ProxyBody>, Refusal> {
        if !matches!(*method, Method::GET | Method::HEAD) {
            return Err(Refusal::OnlyMethods("GET, HEAD"));
        }
        let entry = &site.entry;
        let switch = self
            .portal
            .switches
            .board()
            .tenant_switch(&entry.tier.name, &entry.tenant.id, now);
        let open_for = site.upstream.as_ref().and_then(|u| u.guard().open_for());
        Ok(reserved::status(entry, switch.as_deref(), open_for, now))
    }

    /// The account switch that ended the session of this request's cookie, if it is
    /// still on: such a session answers 423 while the switch is on and 401 after.
    async fn account_locked(
        &self,
        req: &Request<Incoming>,
        entry: &TenantEntry,
        now: i64,
    ) -> Option<Arc<crate::killswitch::KillSwitch>> {
        let value = ui::web::single_cookie(req.headers(), &entry.tier.session_cookie)?;
        let record = self.portal.sessions.record_of_cookie(&entry.tier.name, value).await?;
        if record.tenant != entry.tenant.id || record.revoked.as_ref().is_none_or(|r| r.reason != "kill_switch") {
            return None;
        }
        self.portal
            .switches
            .board()
            .account_switch(&entry.tier.name, &entry.tenant.id, &record.subject, now)
    }

    /// Serves `/.portcullis/...`: the portal's pages and APIs, else the gateway's own
    /// fixed endpoints.
    #[allow(clippy::too_many_arguments)]
    async fn reserved(
        &self,
        req: Request<Incoming>,
        entry: &TenantEntry,
        host: &str,
        path: &str,
        conn: ConnInfo,
        ip: std::net::IpAddr,
        session: Option<Arc<SessionRecord>>,
        suspended: Option<Arc<crate::killswitch::KillSwitch>>,
        snapshot: &Snapshot,
        now: i64,
        request_id: &str,
    ) -> Result<Response<ProxyBody>, Refusal> {
        let rest = path.strip_prefix(policy::RESERVED_PREFIX).unwrap_or_default();
        if rest == "jwks.json" {
            let signer = snapshot
                .signers
                .get(&entry.tier.name)
                .ok_or(Refusal::Unavailable("No signing key for this tier."))?;
            let shared = self.live.shared_keys(&entry.tier.name);
            return Ok(reserved::jwks(&signer.signer, &shared, now));
        }
        let ctx = ui::Ctx {
            config: &snapshot.config,
            entry,
            host,
            origin: entry.public_origin(conn.tls, conn.port),
            rest,
            ip: ip.to_string(),
            session,
            suspended,
            now,
            request_id,
        };
        match self.portal.handle(req, ctx).await {
            Some(resp) => {
                let (mut parts, body) = resp.into_parts();
                respond::security_headers(&mut parts.headers);
                Ok(Response::from_parts(parts, ProxyBody::local(body)))
            }
            None => Err(Refusal::NotFound),
        }
    }
}

/// A client presented an upstream credential (it is removed with every other
/// `Portcullis-*` header): a leaked credential. Logged as a security event, `cross_tier`
/// when it is another tier's, `cross_tenant` when it is this tier's own.
fn report_presented_upstream_token(
    presented: &[u8],
    snapshot: &Snapshot,
    entry: &TenantEntry,
    conn: &ConnInfo,
    request_id: &str,
) {
    let owner = snapshot.config.tiers.values().find(|t| {
        t.keys
            .upstream_token
            .as_ref()
            .is_some_and(|k| subtle::ConstantTimeEq::ct_eq(k.expose_secret(), presented).into())
    });
    let Some(owner) = owner else {
        return;
    };
    let action = if owner.name == entry.tier.name {
        "cross_tenant"
    } else {
        "cross_tier"
    };
    let ip = conn.peer.ip().to_string();
    SecurityEvent {
        reason: Some("upstream credential presented by a client"),
        source_ip: Some(&ip),
        tenant: Some(&entry.tenant.id),
        tier: Some(&entry.tier.name),
        credential_tier: Some(&owner.name),
        request_id: Some(request_id),
        ..SecurityEvent::new(action, EventOutcome::Failure)
    }
    .warn("a client sent a tier's upstream credential; it was removed");
}

/// A request id: the process's random prefix and a counter, both in hex (at least 8
/// digits each), written on the stack: `format!` would allocate on every request.
struct RequestId {
    text: [u8; 32],
    len: usize,
}

impl RequestId {
    fn new(prefix: u32, counter: u64) -> Self {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = [0u8; 32];
        let mut len = 0;
        let mut push = |value: u64, digits: usize| {
            for shift in (0..digits).rev() {
                let nibble = (value >> (shift * 4)) & 0xf;
                text[len] = HEX[nibble as usize];
                len += 1;
            }
        };
        push(u64::from(prefix), 8);
        // As many digits as the counter needs, never fewer than 8.
        let digits = (16 - counter.leading_zeros() as usize / 4).max(8);
        push(counter, digits);
        RequestId { text, len }
    }

    fn as_str(&self) -> &str {
        // Only ASCII hex digits were written.
        std::str::from_utf8(self.text.get(..self.len).unwrap_or_default()).unwrap_or_default()
    }
}

/// The 423 refusal of a kill switch.
/// A request's session, `Err` when the store could not answer, and the tenant's kill
/// switch that a reserved endpoint open under it may show.
type Admitted = (
    Result<Option<Arc<SessionRecord>>, ()>,
    Option<Arc<crate::killswitch::KillSwitch>>,
);

/// The route policy's reading of a raw path, its refusals as the listener answers them.
fn classify<'a>(routes: &'a policy::RouteTable, raw_path: &str) -> Result<Target<'a>, Refusal> {
    match policy::classify(routes, raw_path) {
        Err(policy::Refusal::BadRequest(_)) => Err(Refusal::BadRequest("Ambiguous or malformed path.")),
        Err(policy::Refusal::NotFound) => Err(Refusal::NotFound),
        Ok(target) => Ok(target),
    }
}

/// The route rules' decision for a request with this session: the session to assert
/// upstream when allowed (`None` without one), else the refusal. A session the store could
/// not read passes only on a public route.
fn decide(
    rules: &policy::PathRules<'_>,
    session: Result<Option<Arc<SessionRecord>>, ()>,
    path: &str,
    query: Option<&str>,
) -> Result<Option<Arc<SessionRecord>>, Refusal> {
    let session = match session {
        Ok(s) => s,
        Err(()) if rules.is_public() => None,
        Err(()) => return Err(Refusal::Unavailable("Sign-in state is unavailable right now.")),
    };
    let identity = session.as_ref().map(|s| Identity { roles: &s.roles });
    match rules.decide(identity.as_ref()) {
        Decision::Allow => Ok(session),
        Decision::NeedsSession => Err(Refusal::NeedsSession {
            login_path: login_path(path, query),
        }),
        Decision::Forbidden => Err(Refusal::Forbidden("You do not have access to this page.")),
    }
}

fn locked(ks: &crate::killswitch::KillSwitch) -> Refusal {
    Refusal::Locked {
        message: ks.message.clone(),
        since: ks.tripped_at,
        account: matches!(ks.scope, crate::killswitch::Scope::Account { .. }),
    }
}

/// The one host the request names: exactly one `Host` header, agreeing with the
/// request target's authority (absolute-form or HTTP/2 `:authority`) when both exist.
fn request_host(req: &Request<Incoming>) -> Result<HeaderValue, Refusal> {
    let mut hosts = req.headers().get_all(HOST).iter();
    let header = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::BadRequest("More than one Host header."));
    }
    let authority = req.uri().authority().map(|a| a.as_str());
    match (header, authority) {
        (Some(h), Some(a)) if !h.as_bytes().eq_ignore_ascii_case(a.as_bytes()) => {
            Err(Refusal::BadRequest("Host header disagrees with the request target."))
        }
        (Some(h), _) => Ok(h.clone()),
        (None, Some(a)) => HeaderValue::from_str(a).map_err(|_| Refusal::BadRequest("Invalid authority.")),
        (None, None) => Err(Refusal::BadRequest("Missing Host header.")),
    }
}

/// Refuses requests whose body framing two parsers could read differently: both
/// `Transfer-Encoding` and `Content-Length`, `Transfer-Encoding` on HTTP/1.0, or any
/// coding list but a single `chunked` (hyper only looks at the last coding, so it takes
/// `chunked, chunked` or two `chunked` lines for chunked, which RFC 9112 §6.1 forbids).
fn check_framing(req: &Request<Incoming>) -> Result<(), Refusal> {
    let mut codings = req.headers().get_all(http::header::TRANSFER_ENCODING).iter();
    let Some(first) = codings.next() else {
        return Ok(());
    };
    if req.headers().contains_key(CONTENT_LENGTH) || req.version() == Version::HTTP_10 {
        return Err(Refusal::BadRequest("Ambiguous message framing."));
    }
    if !first.as_bytes().trim_ascii().eq_ignore_ascii_case(b"chunked") || codings.next().is_some() {
        return Err(Refusal::BadRequest("Unsupported transfer coding."));
    }
    Ok(())
}

/// Refuses a request head larger than the configured limit (431). hyper's own buffer is
/// set above the limit (see `proxy::connection_builder`) so that a head a little over it
/// reaches this check and gets the gateway's answer (a page or JSON with a request id)
/// instead of hyper's bare one; heads beyond hyper's buffer still get hyper's 431.
/// Counts the request line and each header line as on the wire (`name: value\r\n`).
fn check_head_size(req: &Request<Incoming>, limit: usize) -> Result<(), Refusal> {
    let line = req.method().as_str().len() + req.uri().path_and_query().map_or(1, |pq| pq.as_str().len()) + 12;
    let size = req
        .headers()
        .iter()
        .fold(line, |sum, (name, value)| sum + name.as_str().len() + value.len() + 4);
    if size > limit {
        return Err(Refusal::HeadersTooLarge);
    }
    Ok(())
}

/// The declared body length; a malformed Content-Length never gets this far (hyper
/// refuses it), but a second check costs nothing.
fn declared_length(req: &Request<Incoming>) -> Result<Option<u64>, Refusal> {
    match req.headers().get(CONTENT_LENGTH) {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .map(Some)
            .ok_or(Refusal::BadRequest("Invalid Content-Length.")),
    }
}

/// WebSocket upgrades must come from the tenant's own host (or from a non-browser
/// client that sends no Origin). Every `Origin` line must name it: the upstream, which
/// receives them all, may read another line than the first.
fn same_origin(req: &Request<Incoming>, host: &str) -> bool {
    req.headers()
        .get_all(ORIGIN)
        .iter()
        .all(|origin| ui::web::origin_names_host(origin, host))
}

/// `/.portcullis/login?rd=<path and query, percent-encoded>`.
fn login_path(path: &str, query: Option<&str>) -> String {
    let target = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_string(),
    };
    let rd = percent_encoding::utf8_percent_encode(&target, percent_encoding::NON_ALPHANUMERIC);
    format!("{}login?rd={rd}", policy::RESERVED_PREFIX)
}

#[cfg(test)]
mod tests {
    use super::{RequestId, login_path};

    #[test]
    fn request_ids_read_as_prefix_and_counter_in_hex() {
        for (prefix, counter) in [
            (0, 0),
            (0xdead_beef, 1),
            (7, 0xffff_ffff),
            (7, 0x1_0000_0000),
            (u32::MAX, u64::MAX),
        ] {
            let id = RequestId::new(prefix, counter);
            assert_eq!(id.as_str(), format!("{prefix:08x}{counter:08x}"));
        }
    }

    #[test]
    fn login_path_carries_the_encoded_target() {
        assert_eq!(
            login_path("/app/x", Some("a=1&b=2")),
            "/.portcullis/login?rd=%2Fapp%2Fx%3Fa%3D1%26b%3D2"
        );
        assert_eq!(login_path("/", None), "/.portcullis/login?rd=%2F");
    }
}
