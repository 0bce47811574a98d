//! OpenTelemetry traces: the OTLP/HTTP exporter built from `[tracing]`, the request span
//! of the public listener with its `session_check` and `upstream` children, and W3C trace
//! context (`traceparent`, `tracestate`) in and out.
//!
//! Off unless `[tracing] otlp_endpoint` is set; then nothing here runs on the request path
//! (the pipeline checks one flag), so tracing off costs no span and no header work.
//!
//! Trust: a client's `traceparent` is continued only from a configured trusted proxy (the
//! same rule as `X-Forwarded-For`): anyone else could force sampling (load on the collector)
//! or splice requests into a trace they chose. From other peers, when tracing is on, the
//! client's `traceparent` and `tracestate` are replaced by the gateway's own. Trace context
//! is never used for a decision: it only labels spans.
//!
//! Owns no request logic; span fields never carry secrets (no headers, no query strings).

use http::HeaderMap;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

use crate::config::TracingConfig;

/// The target of the spans this module makes; the exporter's layer takes only these, so
/// no log event (which may name users or addresses) becomes part of a trace.
pub use crate::telemetry::SPAN_TARGET;

/// W3C trace context headers, as the propagator names them.
const TRACEPARENT: &str = "traceparent";
const TRACESTATE: &str = "tracestate";

/// Why trace export could not start.
#[derive(Debug, thiserror::Error)]
pub enum OtelError {
    /// The OTLP exporter refused its settings.
    #[error("OpenTelemetry exporter: {0}")]
    Exporter(#[from] opentelemetry_otlp::ExporterBuildError),
}

/// The running exporter: batches spans on its own thread and posts them to the collector.
/// Dropping it flushes what is batched (at most a few seconds) and stops the thread.
pub struct Exporter {
    provider: SdkTracerProvider,
}

/// The `tracing` layer that turns the request spans into OpenTelemetry spans; install it
/// with the process's subscriber (see `telemetry::init_logging_with`).
pub type OtelLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

impl Exporter {
    /// Starts the exporter for `config` and returns it with the layer that feeds it.
    /// Sampling is parent-based: a trace a trusted proxy started keeps its decision, new
    /// traces are kept at `sample_ratio`.
    pub fn start(config: &TracingConfig) -> Result<(Exporter, OtelLayer), OtelError> {
        use opentelemetry_otlp::WithExportConfig as _;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
            .with_endpoint(config.traces_url.clone())
            .build()?;
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sample_ratio,
            ))))
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(config.service_name.clone())
                    .build(),
            )
            .build();
        let tracer = provider.tracer("portcullis");
        let layer = tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_location(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_filter(filter_fn(|meta| meta.target() == SPAN_TARGET));
        Ok((Exporter { provider }, Box::new(layer)))
    }
}

impl Drop for Exporter {
    fn drop(&mut self) {
        if let Err(e) = self.provider.shutdown() {
            tracing::warn!(error = %e, "OpenTelemetry exporter did not flush on shutdown");
        }
    }
}

/// The span of one request on the public listener. Its fields are filled in as the
/// request goes (see [`RequestSpan`]); the parent is the caller's trace only when the peer
/// is a trusted proxy.
pub fn request_span(method: &http::Method, headers: &HeaderMap, peer_trusted: bool) -> tracing::Span {
    let span = tracing::info_span!(
        target: SPAN_TARGET,
        "request",
        otel.kind = "server",
        http.request.method = method.as_str(),
        http.route = tracing::field::Empty,
        http.response.status_code = tracing::field::Empty,
        portcullis.tenant = tracing::field::Empty,
        portcullis.tier = tracing::field::Empty,
        portcullis.request_id = tracing::field::Empty,
        upstream.status_code = tracing::field::Empty,
    );
    if peer_trusted && headers.contains_key(TRACEPARENT) {
        let parent = TraceContextPropagator::new().extract(&HeaderExtractor(headers));
        // A malformed traceparent extracts as an empty context: the span starts a new trace.
        let _ = span.set_parent(parent);
    }
    span
}

/// The facts of a request recorded on its span once known.
pub struct RequestSpan<'a> {
    /// The tenant's id, `-` when the host named none.
    pub tenant: &'a str,
    /// The tier's name, `-` when the host named no tenant.
    pub tier: &'a str,
    /// The request id (as in the access log).
    pub request_id: &'a str,
    /// The status the client got.
    pub status: u16,
    /// The status the upstream answered, if it was asked.
    pub upstream_status: Option<u16>,
}

impl RequestSpan<'_> {
    /// Records the request's outcome on `span`.
    pub fn record(&self, span: &tracing::Span) {
        span.record("portcullis.tenant", self.tenant);
        span.record("portcullis.tier", self.tier);
        span.record("portcullis.request_id", self.request_id);
        span.record("http.response.status_code", self.status);
        if let Some(status) = self.upstream_status {
            span.record("upstream.status_code", status);
        }
    }
}

/// Records the matched route (its policy prefix, never the path: low cardinality, and no
/// identifiers from URLs) on the current request span.
pub fn record_route(route: &str) {
    tracing::Span::current().record("http.route", route);
}

/// The child span around the session and kill-switch checks.
pub fn session_check_span() -> tracing::Span {
    tracing::info_span!(target: SPAN_TARGET, "session_check")
}

/// The child span around the upstream exchange (bulkhead wait included).
pub fn upstream_span() -> tracing::Span {
    tracing::info_span!(target: SPAN_TARGET, "upstream", otel.kind = "client")
}

/// Writes `span`'s trace context into the upstream request's headers, in place of the
/// client's: a trusted proxy's `tracestate` reaches the upstream through the span (which
/// continued its trace), anyone else's is dropped.
pub fn inject(span: &tracing::Span, headers: &mut HeaderMap) {
    headers.remove(TRACEPARENT);
    headers.remove(TRACESTATE);
    TraceContextPropagator::new().inject_context(&span.context(), &mut HeaderInjector(headers));
    // The propagator writes an empty `tracestate` when there is none; W3C asks to omit it.
    if headers.get(TRACESTATE).is_some_and(|v| v.is_empty()) {
        headers.remove(TRACESTATE);
    }
}
