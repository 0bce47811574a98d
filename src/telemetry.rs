//! Logs and metrics: tracing set-up (JSON lines to stdout through a non-blocking
//! writer, level from `RUST_LOG`), the Prometheus registry, and [`SecurityEvent`], the
//! one way a security event (ECS `event.kind = "security"`) is written.
//!
//! Owns no request logic; it must never be handed secrets.

use std::sync::Arc;
use std::sync::atomic::AtomicI64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_appender::non_blocking::WorkerGuard;
use tracing_subscriber::EnvFilter;

/// The header that carries a request's id: to the upstream on forwarded requests, and to
/// the client on the gateway's own refusals of the tenant pages, the tenant JSON API and
/// the admin API. The same id is in the access log and in log lines about the request.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Installs the global tracing subscriber. Keep the guard alive for the life of the
/// process: dropping it flushes buffered log lines.
pub fn init_logging() -> WorkerGuard {
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(false)
        .finish(std::io::stdout());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_env_filter(filter)
        .with_writer(writer)
        .try_init();
    guard
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
}

/// The one place the field names of a security event are spelt.
macro_rules! security_event {
    ($e:expr, $level:expr, $message:expr) => {
        tracing::event!(
            $level,
            event.kind = "security",
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
        }
    }

    /// Writes the event at `warn`: something an operator should look at.
    pub fn warn(&self, message: &str) {
        security_event!(self, tracing::Level::WARN, message);
    }

    /// Writes the event at `info`: the normal record of a security-relevant action.
    pub fn info(&self, message: &str) {
        security_event!(self, tracing::Level::INFO, message);
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
}

impl Metrics {
    /// Creates and registers every metric.
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("portcullis");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register("requests", "Requests answered by the public listener", requests.clone());
        let upstream_latency = Family::<TenantLabels, Histogram>::new_with_constructor(|| {
            Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ])
        });
        registry.register(
            "upstream_latency_seconds",
            "Upstream response-head latency",
            upstream_latency.clone(),
        );
        let open_connections = Gauge::<i64, AtomicI64>::default();
        registry.register(
            "open_connections",
            "Open client connections on the public listener",
            open_connections.clone(),
        );
        let upstream_breaker_state = Family::<TenantLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "upstream_breaker_state",
            "Upstream breaker state (0 closed, 1 half-open, 2 open)",
            upstream_breaker_state.clone(),
        );
        let upstream_in_flight = Family::<TenantLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "upstream_in_flight",
            "Requests in flight to the tenant's upstream",
            upstream_in_flight.clone(),
        );
        let upstream_queued = Family::<TenantLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "upstream_queued",
            "Requests waiting for a slot to the tenant's upstream",
            upstream_queued.clone(),
        );
        let kill_switches = Gauge::<i64, AtomicI64>::default();
        registry.register("kill_switches", "Kill switches in force", kill_switches.clone());
        Arc::new(Metrics {
            registry,
            requests,
            upstream_latency,
            open_connections,
            upstream_breaker_state,
            upstream_in_flight,
            upstream_queued,
            kill_switches,
        })
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use super::{EventOutcome, SecurityEvent};

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

    #[test]
    fn a_security_event_has_the_ecs_fields_and_leaves_out_unset_ones() {
        let buffer = Buffer::default();
        let writer = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .flatten_event(true)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            SecurityEvent {
                reason: Some("session of another tenant"),
                source_ip: Some("192.0.2.7"),
                tenant: Some("acme"),
                sessions: Some(2),
                ..SecurityEvent::new("cross_tenant", EventOutcome::Failure)
            }
            .warn("refused");
        });
        let text = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
        assert_eq!(line["level"], "WARN", "{line}");
        assert_eq!(line["event.kind"], "security");
        assert_eq!(line["event.action"], "cross_tenant");
        assert_eq!(line["event.outcome"], "failure");
        assert_eq!(line["event.reason"], "session of another tenant");
        assert_eq!(line["source.ip"], "192.0.2.7");
        assert_eq!(line["organization.id"], "acme");
        assert_eq!(line["portcullis.sessions"], 2);
        assert_eq!(line["message"], "refused");
        for unset in ["user.id", "portcullis.tier", "upstream.ip", "portcullis.method"] {
            assert!(line.get(unset).is_none(), "{unset} is not set: {line}");
        }
    }
}
