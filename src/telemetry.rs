//! Logs and metrics: tracing set-up (JSON lines to stdout through a non-blocking
//! writer, level from `RUST_LOG`), the Prometheus registry, and the helpers that emit
//! access-log and change events with stable field names.
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
