//! Logs and metrics: tracing set-up (JSON lines to stdout through a non-blocking writer,
//! level from `RUST_LOG`; the demo's access log to a file), the Prometheus registry, and
//! [`SecurityEvent`], the one way a security event (ECS `event.kind = "security"`) is
//! written.
//!
//! Each event also goes to the SIEM sinks (`crate::siem`), as the same fields with the
//! same `event.id`. Owns no request logic; it must never be handed secrets.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_appender::non_blocking::{NonBlocking, WorkerGuard};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer as _;

use crate::siem;

/// The header that carries a request's id: to the upstream on forwarded requests, and to
/// the client on the gateway's own refusals of the tenant pages, the tenant JSON API and
/// the admin API. The same id is in the access log and in log lines about the request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// The access log's writer (see [`AccessRecord::write`]): stdout's, or the demo's file.
static LOG_WRITER: std::sync::OnceLock<NonBlocking> = std::sync::OnceLock::new();

/// Keeps the log writers working; dropping it flushes buffered log lines. Keep it alive
/// for the life of the process.
pub struct LogGuard {
    _writers: Vec<WorkerGuard>,
}

/// Installs the global tracing subscriber: JSON lines to stdout, the access log too.
pub fn init_logging() -> LogGuard {
    install(None, None)
}

/// A further layer of the subscriber with its own filter (the OpenTelemetry exporter's):
/// it sees what it selects whatever `RUST_LOG` says of the log lines.
pub type ExtraLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

/// As [`init_logging`], with `extra` beside the log lines when given. Without one the
/// subscriber is exactly [`init_logging`]'s, so the request path costs the same.
pub fn init_logging_with(extra: Option<ExtraLayer>) -> LogGuard {
    install(None, extra)
}

/// The demo's logging: as [`init_logging`], but the access log (a line per request)
/// goes to `access_log`, so the terminal keeps the demo's URLs and credentials on screen.
/// Other log lines (security events, warnings) stay on stdout, as SPEC's logging says.
pub fn init_logging_with_access_file(access_log: std::fs::File) -> LogGuard {
    install(Some(access_log), None)
}

fn install(access_log: Option<std::fs::File>, extra: Option<ExtraLayer>) -> LogGuard {
    let non_blocking = |sink: Box<dyn std::io::Write + Send>| {
        tracing_appender::non_blocking::NonBlockingBuilder::default()
            .lossy(false)
            .finish(sink)
    };
    let (writer, stdout_guard) = non_blocking(Box::new(std::io::stdout()));
    let mut writers = vec![stdout_guard];
    let access_writer = match access_log {
        Some(file) => {
            let (access_writer, guard) = non_blocking(Box::new(file));
            writers.push(guard);
            access_writer
        }
        None => writer.clone(),
    };
    let _ = LOG_WRITER.set(access_writer);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match extra {
        None => {
            let _ = tracing_subscriber::fmt()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_env_filter(filter)
                .with_writer(writer)
                .try_init();
        }
        Some(extra) => {
            use tracing_subscriber::layer::SubscriberExt as _;
            use tracing_subscriber::util::SubscriberInitExt as _;
            // Per-layer filters: `RUST_LOG` picks the log lines, the extra layer its own.
            // The log lines never show spans, so they skip the exporter's.
            let filter = match format!("{SPAN_TARGET}=off").parse() {
                Ok(directive) => filter.add_directive(directive),
                Err(_) => filter,
            };
            let logs = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .with_writer(writer)
                .with_filter(filter);
            let _ = tracing_subscriber::registry().with(extra).with(logs).try_init();
        }
    }
    LogGuard { _writers: writers }
}

/// The target of the request spans `otel` exports: the log lines skip them, the
/// exporter's layer takes only them.
pub const SPAN_TARGET: &str = "portcullis::otel";

/// The access log's target: `RUST_LOG=access=off` (or any level above `info`) turns it off.
pub const ACCESS_TARGET: &str = "access";

/// One request's access-log line.
#[derive(Debug, Clone, Copy)]
pub struct AccessRecord<'a> {
    /// The request id.
    pub request_id: &'a str,
    /// Tenant id, "-" when the host named none.
    pub tenant: &'a str,
    /// Tier name, "-" when the host named no tenant.
    pub tier: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request path as sent.
    pub path: &'a str,
    /// Status answered.
    pub status: u16,
    /// Status the upstream answered, if it was asked.
    pub upstream_status: Option<u16>,
    /// Time from the request head to the response head.
    pub duration: std::time::Duration,
    /// The client's address.
    pub client_ip: std::net::IpAddr,
}

impl AccessRecord<'_> {
    /// Writes the line when the access log is on: the JSON the tracing formatter writes
    /// for an event (timestamp, level, the fields, target), built here directly, because
    /// the generic formatter cost several times the rest of a proxied request. Without
    /// [`init_logging`] (the library in tests), it is an ordinary tracing event.
    pub fn write(&self) {
        let Some(writer) = LOG_WRITER.get() else {
            tracing::info!(
                target: "access",
                request_id = self.request_id,
                tenant = self.tenant,
                tier = self.tier,
                method = self.method,
                path = self.path,
                status = self.status,
                upstream_status = self.upstream_status,
                duration_ms = self.duration.as_secs_f64() * 1000.0,
                client_ip = %self.client_ip,
            );
            return;
        };
        thread_local! {
            static LINE: std::cell::RefCell<AccessLine> = std::cell::RefCell::new(AccessLine::default());
        }
        LINE.with(|line| {
            let Ok(mut line) = line.try_borrow_mut() else {
                return;
            };
            line.build(self, std::time::SystemTime::now());
            // One write is one message to the log thread.
            let _ = std::io::Write::write_all(&mut writer.clone(), &line.buf);
        });
    }
}

/// One admin-listener request's access-log line: the public listener's field names, with
/// `listener = "admin"` and no tenant (operators are not tenants' users). The path never
/// has its query; no header is logged (the bearer token and console cookie stay out).
#[derive(Debug, Clone, Copy)]
pub struct AdminAccessRecord<'a> {
    /// The request id the response carries (refusals have one), "-" otherwise.
    pub request_id: &'a str,
    /// Request method.
    pub method: &'a str,
    /// Request path, without the query.
    pub path: &'a str,
    /// Status answered.
    pub status: u16,
    /// Time from the request head to the response head.
    pub duration: std::time::Duration,
    /// The client's address, when known.
    pub client_ip: Option<std::net::IpAddr>,
}

impl AdminAccessRecord<'_> {
    /// Writes the line where the public listener's go (the demo's access log file, else
    /// stdout), as the same JSON; without [`init_logging`], an ordinary tracing event.
    /// Rare enough that serde_json's cost does not matter.
    pub fn write(&self) {
        let duration_ms = (self.duration.as_secs_f64() * 1_000_000.0).round() / 1000.0;
        let client_ip = self.client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string());
        let Some(writer) = LOG_WRITER.get() else {
            tracing::info!(
                target: "access",
                listener = "admin",
                request_id = self.request_id,
                method = self.method,
                path = self.path,
                status = self.status,
                duration_ms,
                client_ip,
            );
            return;
        };
        let line = serde_json::json!({
            "timestamp": humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string(),
            "level": "INFO",
            "listener": "admin",
            "request_id": self.request_id,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "duration_ms": duration_ms,
            "client_ip": client_ip,
            "target": ACCESS_TARGET,
        });
        if let Ok(mut buf) = serde_json::to_vec(&line) {
            buf.push(b'\n');
            // One write is one message to the log thread.
            let _ = std::io::Write::write_all(&mut writer.clone(), &buf);
        }
    }
}

/// A reusable access-log line buffer, with the timestamp's text up to the second of the
/// last line (it changes once a second).
#[derive(Default)]
struct AccessLine {
    buf: Vec<u8>,
    second: u64,
    second_text: String,
}

impl AccessLine {
    fn build(&mut self, r: &AccessRecord<'_>, now: std::time::SystemTime) {
        let since_epoch = now.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        if since_epoch.as_secs() != self.second || self.second_text.is_empty() {
            self.second = since_epoch.as_secs();
            // "2026-12-06T15:20:00Z" without its "Z".
            let text = humantime::format_rfc3339_seconds(now).to_string();
            self.second_text = text.trim_end_matches('Z').to_string();
        }
        let buf = &mut self.buf;
        buf.clear();
        buf.extend_from_slice(b"{\"timestamp\":\"");
        buf.extend_from_slice(self.second_text.as_bytes());
        buf.push(b'.');
        push_padded(buf, u64::from(since_epoch.subsec_micros()), 6);
        buf.extend_from_slice(b"Z\",\"level\":\"INFO\",\"request_id\":");
        push_json_str(buf, r.request_id);
        buf.extend_from_slice(b",\"tenant\":");
        push_json_str(buf, r.tenant);
        buf.extend_from_slice(b",\"tier\":");
        push_json_str(buf, r.tier);
        buf.extend_from_slice(b",\"method\":");
        push_json_str(buf, r.method);
        buf.extend_from_slice(b",\"path\":");
        push_json_str(buf, r.path);
        buf.extend_from_slice(b",\"status\":");
        push_padded(buf, u64::from(r.status), 1);
        if let Some(upstream) = r.upstream_status {
            buf.extend_from_slice(b",\"upstream_status\":");
            push_padded(buf, u64::from(upstream), 1);
        }
        // Milliseconds with three decimals.
        let micros = u64::try_from(r.duration.as_micros()).unwrap_or(u64::MAX);
        buf.extend_from_slice(b",\"duration_ms\":");
        push_padded(buf, micros / 1000, 1);
        buf.push(b'.');
        push_padded(buf, micros % 1000, 3);
        buf.extend_from_slice(b",\"client_ip\":\"");
        match r.client_ip {
            // Digit by digit: `fmt` would cost a tenth of the line.
            std::net::IpAddr::V4(v4) => {
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        buf.push(b'.');
                    }
                    push_padded(buf, u64::from(octet), 1);
                }
            }
            std::net::IpAddr::V6(v6) => {
                let _ = std::io::Write::write_fmt(buf, format_args!("{v6}"));
            }
        }
        buf.extend_from_slice(b"\",\"target\":\"access\"}\n");
    }
}

/// `value` in decimal, left-padded with zeros to at least `width` digits.
fn push_padded(buf: &mut Vec<u8>, value: u64, width: usize) {
    let mut digits = [0u8; 20];
    let mut n = value;
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 && len >= width {
            break;
        }
    }
    buf.extend(digits[..len].iter().rev());
}

/// `s` as a JSON string (quoted and escaped by serde_json).
fn push_json_str(buf: &mut Vec<u8>, s: &str) {
    if serde_json::to_writer(&mut *buf, s).is_err() {
        buf.extend_from_slice(b"\"\"");
    }
}

/// Whether what a security event reports was done or refused (ECS `event.outcome`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventOutcome {
    /// Done (a sign-in, a trip, a logout).
    Success,
    /// Refused or failed.
    Failure,
}

impl EventOutcome {
    /// The ECS value.
    pub fn as_str(self) -> &'static str {
        match self {
            EventOutcome::Success => "success",
            EventOutcome::Failure => "failure",
        }
    }
}

/// One security event, with ECS field names, so SIEM rules see the same fields from every
/// part of the gateway. Fields left `None` are left out of the log line. Never put a
/// secret in any field: these lines leave the process.
#[derive(Clone, Copy, Debug)]
pub struct SecurityEvent<'a> {
    /// `event.action`: what happened (`login`, `logout`, `breaker_trip`, `cross_tenant`, ...).
    pub action: &'a str,
    /// `event.outcome`.
    pub outcome: EventOutcome,
    /// `event.reason`: why, in a few words.
    pub reason: Option<&'a str>,
    /// `source.ip`: the client's address.
    pub source_ip: Option<&'a str>,
    /// `user.id`: the account key or the operator's name.
    pub user: Option<&'a str>,
    /// `organization.id`: the tenant.
    pub tenant: Option<&'a str>,
    /// `portcullis.tier`: the tier the event happened in.
    pub tier: Option<&'a str>,
    /// `portcullis.credential_tier`: the tier a presented credential belongs to.
    pub credential_tier: Option<&'a str>,
    /// `portcullis.target`: what an operator action covered (`tenant:acme`, ...).
    pub target: Option<&'a str>,
    /// `portcullis.system`: through what an action came (`api`, `cli`, `auto-rule`, ...).
    pub system: Option<&'a str>,
    /// `portcullis.method`: the sign-in method (`password`, `totp`, `oidc`, ...).
    pub method: Option<&'a str>,
    /// `upstream.host`: the upstream host name involved.
    pub upstream_host: Option<&'a str>,
    /// `upstream.ip`: the upstream address involved.
    pub upstream_ip: Option<&'a str>,
    /// `portcullis.sessions`: how many sessions the event ended.
    pub sessions: Option<u64>,
    /// `portcullis.incident`: the incident the action belongs to (`INC-42`).
    pub incident: Option<&'a str>,
    /// `http.request.id`: the request the event happened in, when known.
    pub request_id: Option<&'a str>,
}

/// The one place the field names of a security event are spelt for the log line; the
/// SIEM record spells the same names in [`SecurityEvent::fields`].
macro_rules! security_event {
    ($e:expr, $id:expr, $at:expr, $level:expr, $message:expr) => {
        tracing::event!(
            $level,
            "@timestamp" = $at,
            event.kind = "security",
            event.id = $id,
            event.action = $e.action,
            event.outcome = $e.outcome.as_str(),
            event.reason = $e.reason,
            source.ip = $e.source_ip,
            user.id = $e.user,
            organization.id = $e.tenant,
            portcullis.tier = $e.tier,
            portcullis.credential_tier = $e.credential_tier,
            portcullis.target = $e.target,
            portcullis.system = $e.system,
            portcullis.method = $e.method,
            upstream.host = $e.upstream_host,
            upstream.ip = $e.upstream_ip,
            portcullis.sessions = $e.sessions,
            portcullis.incident = $e.incident,
            http.request.id = $e.request_id,
            "{}",
            $message
        )
    };
}

impl<'a> SecurityEvent<'a> {
    /// An event with only its action and outcome set; fill in the rest with struct update.
    pub fn new(action: &'a str, outcome: EventOutcome) -> Self {
        SecurityEvent {
            action,
            outcome,
            reason: None,
            source_ip: None,
            user: None,
            tenant: None,
            tier: None,
            credential_tier: None,
            target: None,
            system: None,
            method: None,
            upstream_host: None,
            upstream_ip: None,
            sessions: None,
            incident: None,
            request_id: None,
        }
    }

    /// Writes the event at `warn`: something an operator should look at.
    pub fn warn(&self, message: &str) {
        let (id, at) = (
            siem::schema::new_event_id(),
            siem::schema::timestamp(std::time::SystemTime::now()),
        );
        security_event!(self, id.as_str(), at.as_str(), tracing::Level::WARN, message);
        self.publish(&id, &at, siem::Severity::Warn, message);
    }

    /// Writes the event at `info`: the normal record of a security-relevant action.
    pub fn info(&self, message: &str) {
        let (id, at) = (
            siem::schema::new_event_id(),
            siem::schema::timestamp(std::time::SystemTime::now()),
        );
        security_event!(self, id.as_str(), at.as_str(), tracing::Level::INFO, message);
        self.publish(&id, &at, siem::Severity::Info, message);
    }

    /// Hands the event to the SIEM sinks, if any run.
    fn publish(&self, id: &str, at: &str, severity: siem::Severity, message: &str) {
        if siem::enabled() {
            siem::publish(self.record(id, at, severity, message));
        }
    }

    /// The event as the SIEM sinks send it.
    fn record(&self, id: &str, at: &str, severity: siem::Severity, message: &str) -> siem::Record {
        siem::Record::build(id, at, self.action, severity, &self.fields(message))
    }

    /// The event's fields besides those [`siem::Record::build`] sets itself.
    fn fields<'m>(&'m self, message: &'m str) -> [(&'static str, Option<siem::schema::Value<'m>>); 16] {
        use siem::schema::Value::{Number, Text};
        [
            ("event.outcome", Some(Text(self.outcome.as_str()))),
            ("event.reason", self.reason.map(Text)),
            ("message", Some(Text(message))),
            ("source.ip", self.source_ip.map(Text)),
            ("user.id", self.user.map(Text)),
            ("organization.id", self.tenant.map(Text)),
            ("portcullis.tier", self.tier.map(Text)),
            ("portcullis.credential_tier", self.credential_tier.map(Text)),
            ("portcullis.target", self.target.map(Text)),
            ("portcullis.system", self.system.map(Text)),
            ("portcullis.method", self.method.map(Text)),
            ("upstream.host", self.upstream_host.map(Text)),
            ("upstream.ip", self.upstream_ip.map(Text)),
            ("portcullis.sessions", self.sessions.map(Number)),
            ("portcullis.incident", self.incident.map(Text)),
            ("http.request.id", self.request_id.map(Text)),
        ]
    }
}

/// Labels of the request counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Tenant id, or "-" when the host named none.
    pub tenant: String,
    /// Response status code.
    pub status: u16,
}

/// Labels of per-tenant metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TenantLabels {
    /// Tenant id.
    pub tenant: String,
}

/// Labels of the tier metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TierLabels {
    /// Tier name.
    pub tier: String,
}

/// Labels of the sign-in counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct LoginLabels {
    /// Tenant id.
    pub tenant: String,
    /// Sign-in method (`password`, `totp`, `recovery`, `oidc`): a fixed set from the code.
    pub method: String,
    /// `success` or `failure`, as the security event's `event.outcome`.
    pub outcome: &'static str,
}

/// Counts sign-in attempts by tenant, method and outcome. The sign-in flow holds one; a
/// default one (the CLI's, the unit tests') counts into a family no registry exports.
#[derive(Clone, Debug, Default)]
pub struct LoginCounter(Family<LoginLabels, Counter>);

impl LoginCounter {
    /// Counts one attempt: the same attempt the login history and the security event record.
    pub fn count(&self, tenant: &str, method: &str, outcome: EventOutcome) {
        self.0
            .get_or_create(&LoginLabels {
                tenant: tenant.to_string(),
                method: method.to_string(),
                outcome: outcome.as_str(),
            })
            .inc();
    }

    /// Creates the tenant's series of the first sign-in steps at 0. Prometheus's `rate()`
    /// cannot see the increase before a series' first sample, so without them the first
    /// burst of failures after a start (an attack on a fresh replica) would be invisible.
    pub fn declare(&self, tenant: &str) {
        for method in ["password", "oidc"] {
            for outcome in [EventOutcome::Success, EventOutcome::Failure] {
                let _ = self.0.get_or_create(&LoginLabels {
                    tenant: tenant.to_string(),
                    method: method.to_string(),
                    outcome: outcome.as_str(),
                });
            }
        }
    }
}

/// One tenant's metric handles, resolved once: a `Family` lookup hashes the labels (with
/// SipHash) and allocates their `String` on every call, which the request path must not.
pub struct TenantMetrics {
    tenant: String,
    requests: Family<RequestLabels, Counter>,
    /// Counters by status already resolved; a tenant's answers use a handful of codes.
    by_status: std::sync::RwLock<Vec<(u16, Counter)>>,
    upstream_latency: Histogram,
}

impl TenantMetrics {
    /// Counts one answer with `status`.
    pub fn request(&self, status: u16) {
        {
            let known = self.by_status.read().unwrap_or_else(std::sync::PoisonError::into_inner);
            if let Some((_, counter)) = known.iter().find(|(s, _)| *s == status) {
                counter.inc();
                return;
            }
        }
        let counter = self
            .requests
            .get_or_create(&RequestLabels {
                tenant: self.tenant.clone(),
                status,
            })
            .clone();
        counter.inc();
        let mut known = self
            .by_status
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !known.iter().any(|(s, _)| *s == status) {
            known.push((status, counter));
        }
    }

    /// Records one upstream response-head latency.
    pub fn upstream_latency(&self, seconds: f64) {
        self.upstream_latency.observe(seconds);
    }
}

/// The gateway's Prometheus metrics.
pub struct Metrics {
    /// Registry `/metrics` encodes.
    pub registry: Registry,
    /// Requests answered, by tenant and status.
    pub requests: Family<RequestLabels, Counter>,
    /// Time from sending a request upstream to its response head, by tenant.
    pub upstream_latency: Family<TenantLabels, Histogram>,
    /// Client connections open on the public listener.
    pub open_connections: Gauge<i64, AtomicI64>,
    /// Upstream breaker state by tenant (0 closed, 1 half-open, 2 open); set at scrape time.
    pub upstream_breaker_state: Family<TenantLabels, Gauge<i64, AtomicI64>>,
    /// Requests in flight to each tenant's upstream (bulkhead slots taken).
    pub upstream_in_flight: Family<TenantLabels, Gauge<i64, AtomicI64>>,
    /// Requests waiting for a bulkhead slot, by tenant.
    pub upstream_queued: Family<TenantLabels, Gauge<i64, AtomicI64>>,
    /// Kill switches in force on this node.
    pub kill_switches: Gauge<i64, AtomicI64>,
    /// 1 while a tier or tenant kill switch suspends the tenant; set at scrape time.
    pub tenant_suspended: Family<TenantLabels, Gauge<i64, AtomicI64>>,
    /// Sign-in attempts by tenant, method and outcome.
    pub logins: LoginCounter,
    /// Live sessions by tenant, counted in the store at scrape time (up to a cap).
    pub active_sessions: Family<TenantLabels, Gauge<i64, AtomicI64>>,
    /// 1 when the tier's store answered the scrape's session count, 0 when it failed.
    pub store_up: Family<TierLabels, Gauge<i64, AtomicI64>>,
    /// 1 when `/readyz` would answer 200 (sessions can be trusted), else 0.
    pub ready: Gauge<i64, AtomicI64>,
    /// Security events a SIEM sink lost: pushed out of its full queue, or refused.
    pub siem_dropped: Counter,
}

impl Metrics {
    /// Creates and registers every metric, in the order `/metrics` lists them.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("portcullis");
        let r = &mut registry;
        let requests = registered(
            r,
            "requests",
            "Requests answered by the public listener",
            Family::default(),
        );
        let upstream_latency = registered(
            r,
            "upstream_latency_seconds",
            "Upstream response-head latency",
            Family::<TenantLabels, Histogram>::new_with_constructor(|| {
                Histogram::new([
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                ])
            }),
        );
        let open_connections = registered(
            r,
            "open_connections",
            "Open client connections on the public listener",
            Gauge::default(),
        );
        let upstream_breaker_state = registered(
            r,
            "upstream_breaker_state",
            "Upstream breaker state (0 closed, 1 half-open, 2 open)",
            Family::default(),
        );
        let upstream_in_flight = registered(
            r,
            "upstream_in_flight",
            "Requests in flight to the tenant's upstream",
            Family::default(),
        );
        let upstream_queued = registered(
            r,
            "upstream_queued",
            "Requests waiting for a slot to the tenant's upstream",
            Family::default(),
        );
        let kill_switches = registered(r, "kill_switches", "Kill switches in force", Gauge::default());
        let tenant_suspended = registered(
            r,
            "tenant_suspended",
            "1 while a tier or tenant kill switch suspends the tenant",
            Family::default(),
        );
        let logins = LoginCounter(registered(
            r,
            "logins",
            "Sign-in attempts by tenant, method and outcome",
            Family::default(),
        ));
        let active_sessions = registered(
            r,
            "active_sessions",
            "Live sessions of the tenant in the store (counted up to a cap)",
            Family::default(),
        );
        let store_up = registered(
            r,
            "store_up",
            "1 when the tier's session store answered the last scrape, else 0",
            Family::default(),
        );
        let ready = registered(
            r,
            "ready",
            "1 when the gateway is ready (sessions can be trusted), else 0",
            Gauge::default(),
        );
        let siem_dropped = registered(
            r,
            "siem_dropped",
            "Security events a SIEM sink dropped (queue full while its receiver was down, or refused)",
            Counter::default(),
        );
        Arc::new(Metrics {
            registry,
            requests,
            upstream_latency,
            open_connections,
            upstream_breaker_state,
            upstream_in_flight,
            upstream_queued,
            kill_switches,
            tenant_suspended,
            logins,
            active_sessions,
            store_up,
            ready,
            siem_dropped,
        })
    }

    /// The handles of one tenant's metrics (keep them: resolving costs a lookup).
    pub fn tenant(&self, tenant: &str) -> TenantMetrics {
        TenantMetrics {
            tenant: tenant.to_string(),
            requests: self.requests.clone(),
            by_status: std::sync::RwLock::new(Vec::new()),
            upstream_latency: self
                .upstream_latency
                .get_or_create(&TenantLabels {
                    tenant: tenant.to_string(),
                })
                .clone(),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// Registers `metric` under `name` with its `help` text and returns it: the registry
/// keeps a clone, and clones of a metric share one value, so what the gateway records
/// through the returned handle is what `/metrics` shows.
fn registered<M: prometheus_client::registry::Metric + Clone>(
    registry: &mut Registry,
    name: &str,
    help: &str,
    metric: M,
) -> M {
    registry.register(name, help, metric.clone());
    metric
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::{Duration, UNIX_EPOCH};

    use super::{AccessLine, AccessRecord, EventOutcome, SecurityEvent};

    /// The access line is written by hand: it must stay valid JSON with the fields and
    /// values the tracing formatter wrote, whatever a client put in the path.
    #[test]
    fn access_line_is_one_json_object_with_every_field() {
        let mut line = AccessLine::default();
        let record = AccessRecord {
            request_id: "0badcafe00000001",
            tenant: "acme",
            tier: "prod",
            method: "GET",
            path: "/a\"b\\c\u{1}é",
            status: 200,
            upstream_status: Some(502),
            duration: Duration::from_micros(1_234_005),
            client_ip: "10.0.0.7".parse().unwrap(),
        };
        let at = UNIX_EPOCH + Duration::from_micros(1_796_000_000_000_042);
        line.build(&record, at);
        assert_eq!(line.buf.last(), Some(&b'\n'));
        assert_eq!(line.buf.iter().filter(|b| **b == b'\n').count(), 1);
        let v: serde_json::Value = serde_json::from_slice(&line.buf).unwrap();
        assert_eq!(v["timestamp"], "2026-11-30T00:53:20.000042Z");
        assert_eq!(v["level"], "INFO");
        assert_eq!(v["target"], "access");
        assert_eq!(v["request_id"], "0badcafe00000001");
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["tier"], "prod");
        assert_eq!(v["method"], "GET");
        assert_eq!(v["path"], "/a\"b\\c\u{1}é");
        assert_eq!(v["status"], 200);
        assert_eq!(v["upstream_status"], 502);
        assert_eq!(v["duration_ms"].as_f64(), Some(1234.005));
        assert_eq!(v["client_ip"], "10.0.0.7");

        // No upstream answer: the field is left out, as tracing leaves out a None.
        let record = AccessRecord {
            upstream_status: None,
            duration: Duration::from_micros(7),
            client_ip: "2001:db8::1".parse().unwrap(),
            ..record
        };
        line.build(&record, at + Duration::from_secs(1));
        let v: serde_json::Value = serde_json::from_slice(&line.buf).unwrap();
        assert!(v.get("upstream_status").is_none(), "{v}");
        assert_eq!(v["timestamp"], "2026-11-30T00:53:21.000042Z");
        assert_eq!(v["duration_ms"].as_f64(), Some(0.007));
        assert_eq!(v["client_ip"], "2001:db8::1");
    }

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// The one line `emit` logs, through the JSON formatter the gateway uses for stdout.
    fn logged_line(emit: impl FnOnce()) -> serde_json::Value {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, emit);
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        serde_json::from_str(text.trim()).unwrap()
    }

    /// If this broke, the stdout line and what the SIEM sinks receive would name the
    /// same event differently, and rules written for one would miss the other.
    #[test]
    fn the_log_line_and_the_siem_record_carry_the_same_documented_fields() {
        let event = SecurityEvent {
            reason: Some("r"),
            source_ip: Some("192.0.2.7"),
            user: Some("u"),
            tenant: Some("acme"),
            tier: Some("prod"),
            credential_tier: Some("staging"),
            target: Some("tenant:acme"),
            system: Some("api"),
            method: Some("password"),
            upstream_host: Some("h"),
            upstream_ip: Some("192.0.2.8"),
            sessions: Some(2),
            incident: Some("INC-1"),
            request_id: Some("0badcafe"),
            ..SecurityEvent::new("login", EventOutcome::Failure)
        };
        let line = logged_line(|| event.warn("m"));
        let record = event.record(
            line["event.id"].as_str().unwrap(),
            line["@timestamp"].as_str().unwrap(),
            crate::siem::Severity::Warn,
            "m",
        );
        let record: serde_json::Value = serde_json::from_str(&record.json).unwrap();
        // The line's `level` is the formatter's; the record spells it `log.level`.
        let mut line_fields: Vec<String> = line
            .as_object()
            .unwrap()
            .keys()
            .filter(|k| !["timestamp", "level", "target"].contains(&k.as_str()))
            .cloned()
            .chain(["log.level".to_string()])
            .collect();
        line_fields.sort();
        let mut record_fields: Vec<String> = record.as_object().unwrap().keys().cloned().collect();
        record_fields.sort();
        assert_eq!(line_fields, record_fields);
        let mut documented: Vec<String> = crate::siem::schema::FIELDS.iter().map(|f| f.to_string()).collect();
        documented.sort();
        assert_eq!(record_fields, documented, "an event with every field set");
        for field in &record_fields {
            if field != "log.level" {
                assert_eq!(line[field], record[field], "{field}");
            }
        }
        assert_eq!(record["log.level"], "warn");
    }

    #[test]
    fn a_security_event_has_the_ecs_fields_and_leaves_out_unset_ones() {
        let line = logged_line(|| {
            SecurityEvent {
                reason: Some("session of another tenant"),
                source_ip: Some("192.0.2.7"),
                tenant: Some("acme"),
                sessions: Some(2),
                incident: Some("INC-42"),
                ..SecurityEvent::new("cross_tenant", EventOutcome::Failure)
            }
            .warn("refused");
        });
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["event.kind"], "security");
        assert_eq!(line["event.action"], "cross_tenant");
        assert_eq!(line["event.outcome"], "failure");
        assert_eq!(line["event.reason"], "session of another tenant");
        assert_eq!(line["source.ip"], "192.0.2.7");
        assert_eq!(line["organization.id"], "acme");
        assert_eq!(line["portcullis.sessions"], 2);
        assert_eq!(line["portcullis.incident"], "INC-42");
        assert_eq!(line["message"], "refused");
        for unset in ["user.id", "portcullis.tier", "upstream.ip", "portcullis.method"] {
            assert!(line.get(unset).is_none(), "{unset} is not set: {line}");
        }
    }
}
