//! OpenTelemetry traces (issue 18): the real gateway exports a span per proxied request
//! over OTLP/HTTP (protobuf) to a test receiver started here, and the upstream gets a
//! W3C `traceparent` of the same trace. Covers sampling, which client trace context is
//! continued (only a trusted proxy's), that tracing off exports and invents nothing, and
//! the `[tracing]` config errors.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use prost::Message as _;
use tokio::net::TcpListener;

use crate::harness::*;

/// A client trace context: version 00, this trace id and parent span id, sampled.
const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// The exporter batches: long enough for a slow, shared machine.
const EXPORT_WAIT: Duration = Duration::from_secs(30);

/// One span as the collector received it.
#[derive(Debug, Clone)]
struct ExportedSpan {
    name: String,
    trace_id: String,
    span_id: String,
    parent_span_id: String,
    /// Attributes, values as text.
    attributes: BTreeMap<String, String>,
    /// `service.name` of the span's resource.
    service: String,
}

impl ExportedSpan {
    fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// A test OTLP receiver: an HTTP server on 127.0.0.1 that accepts OTLP/HTTP protobuf
/// `POST /v1/traces`, decodes each export with `opentelemetry-proto` and keeps the spans.
struct TestOtlpReceiver {
    addr: SocketAddr,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestOtlpReceiver {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spans: Arc<Mutex<Vec<ExportedSpan>>> = Arc::default();
        let shared = spans.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let spans = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| receive(req, spans.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        TestOtlpReceiver { addr, spans, task }
    }

    /// The base endpoint, as `[tracing] otlp_endpoint` takes it.
    fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn spans(&self) -> Vec<ExportedSpan> {
        self.spans.lock().unwrap().clone()
    }

    /// Waits for a `request` span whose `portcullis.request_id`'s request went upstream
    /// with `traceparent` of trace `trace_id` (or any request span when None).
    async fn request_span(&self, trace_id: Option<&str>) -> ExportedSpan {
        let found = eventually(EXPORT_WAIT, || async {
            self.spans()
                .into_iter()
                .find(|s| s.name == "request" && trace_id.is_none_or(|t| s.trace_id == t))
        })
        .await;
        found.unwrap_or_else(|| {
            panic!(
                "no request span of trace {trace_id:?} exported; got {:#?}",
                self.spans()
            )
        })
    }
}

impl Drop for TestOtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn receive(
    req: Request<Incoming>,
    spans: Arc<Mutex<Vec<ExportedSpan>>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path_ok = req.method() == http::Method::POST && req.uri().path() == "/v1/traces";
    let protobuf = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let decoded = ExportTraceServiceRequest::decode(body.as_ref());
    let (Ok(export), true, true) = (decoded, path_ok, protobuf) else {
        return Ok(Response::builder().status(400).body(Full::default()).unwrap());
    };
    let mut got = spans.lock().unwrap();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .and_then(|kv| kv.value.as_ref().and_then(|v| v.value.as_ref()).map(text))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                let attributes = span
                    .attributes
                    .iter()
                    .filter_map(|kv| Some((kv.key.clone(), text(kv.value.as_ref()?.value.as_ref()?))))
                    .collect();
                got.push(ExportedSpan {
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    attributes,
                    service: service.clone(),
                });
            }
        }
    }
    // An empty ExportTraceServiceResponse.
    Ok(Response::builder()
        .header(http::header::CONTENT_TYPE, "application/x-protobuf")
        .body(Full::default())
        .unwrap())
}

fn text(value: &Value) -> String {
    match value {
        Value::StringValue(s) => s.clone(),
        Value::IntValue(i) => i.to_string(),
        Value::BoolValue(b) => b.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    }
}

/// Adds a `[tracing]` table to the fixture's `gateway.toml`, and a short export delay.
fn with_tracing(fixture: &mut PolicyFixture, lines: &str) {
    fixture.gateway_extra.push_str(&format!("[tracing]\n{lines}"));
    fixture
        .gateway_env
        .push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
}

/// `traceparent` split into (trace id, parent id, flags); panics unless it is well formed.
fn parse_traceparent(value: &str) -> (String, String, String) {
    let parts: Vec<&str> = value.split('-').collect();
    assert_eq!(parts.len(), 4, "traceparent {value}");
    assert_eq!(parts[0], "00", "traceparent version in {value}");
    assert_eq!(parts[1].len(), 32, "trace id in {value}");
    assert_eq!(parts[2].len(), 16, "parent id in {value}");
    assert_ne!(parts[1], "0".repeat(32), "all-zero trace id in {value}");
    (parts[1].into(), parts[2].into(), parts[3].into())
}

async fn get(gw: &Gateway, path: &str, headers: &[(&str, &str)]) -> u16 {
    let mut req = gw.client().get(gw.host_url("acme.test", path));
    for (name, value) in headers {
        req = req.header(*name, *value);
    }
    req.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_proxied_request_is_exported_with_its_attributes_and_its_trace_reaches_the_upstream() {
    let receiver = TestOtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let (ups, gw) = start_with(|f| {
        with_tracing(
            f,
            &format!("otlp_endpoint = \"{endpoint}\"\nsample_ratio = 1.0\nservice_name = \"gw-test\"\n"),
        )
    })
    .await;

    assert_eq!(get(&gw, "/public/traced", &[]).await, 200);
    let upstream = ups.acme.only();
    let traceparent = upstream.header("traceparent").expect("the upstream got a traceparent");
    let (trace_id, parent_id, flags) = parse_traceparent(traceparent);
    assert_eq!(flags, "01", "a sampled trace says so");

    let request = receiver.request_span(Some(&trace_id)).await;
    assert_eq!(request.attr("portcullis.tenant"), Some("acme"));
    assert_eq!(request.attr("portcullis.tier"), Some("prod"));
    assert_eq!(request.attr("http.route"), Some("/public/"));
    assert_eq!(request.attr("http.request.method"), Some("GET"));
    assert_eq!(request.attr("http.response.status_code"), Some("200"));
    assert_eq!(request.attr("upstream.status_code"), Some("200"));
    assert_eq!(
        request.attr("portcullis.request_id"),
        upstream.header("x-request-id"),
        "the span names the request id the upstream saw"
    );
    assert_eq!(request.service, "gw-test");
    assert_eq!(
        request.parent_span_id, "",
        "a request from an untrusted peer starts a trace"
    );

    // The timings: children of the request span, the upstream one is the traceparent's.
    let children = eventually(EXPORT_WAIT, || async {
        let spans = receiver.spans();
        let child = |name: &str| {
            spans
                .iter()
                .find(|s| s.name == name && s.parent_span_id == request.span_id)
                .cloned()
        };
        Some((child("session_check")?, child("upstream")?))
    })
    .await;
    let (session_check, upstream_span) = children.expect("session_check and upstream child spans");
    assert_eq!(session_check.trace_id, trace_id);
    assert_eq!(upstream_span.trace_id, trace_id);
    assert_eq!(
        upstream_span.span_id, parent_id,
        "the upstream's parent is the upstream span"
    );

    // A refusal is a span too, with the status the client got.
    let status = get(&gw, "/private", &[]).await;
    assert!(
        matches!(status, 302 | 401),
        "no session on an authenticated route: {status}"
    );
    let refused = eventually(EXPORT_WAIT, || async {
        receiver
            .spans()
            .into_iter()
            .find(|s| s.name == "request" && s.attr("http.response.status_code") == Some(&status.to_string()))
    })
    .await
    .expect("the refused request's span");
    assert_eq!(refused.attr("http.route"), Some("/"));
    assert_eq!(refused.attr("upstream.status_code"), None);
    assert_eq!(ups.acme.count(), 1, "the refusal was not forwarded");
}

#[tokio::test]
async fn a_trusted_proxys_trace_is_continued_with_its_sampling_decision() {
    let receiver = TestOtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    // Ratio 0: only the proxy's "sampled" flag can make a span exported.
    let (ups, gw) = start_with(|f| {
        f.trusted_proxies = vec!["127.0.0.1".into()];
        with_tracing(f, &format!("otlp_endpoint = \"{endpoint}\"\nsample_ratio = 0.0\n"));
    })
    .await;

    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(
        get(
            &gw,
            "/public/a",
            &[("traceparent", &sampled), ("tracestate", "vendor=abc")]
        )
        .await,
        200
    );
    let got = ups.acme.only();
    let (trace_id, parent_id, flags) = parse_traceparent(got.header("traceparent").unwrap());
    assert_eq!(trace_id, CLIENT_TRACE, "the proxy's trace is continued");
    assert_ne!(
        parent_id, CLIENT_SPAN,
        "the gateway's own span is the upstream's parent"
    );
    assert_eq!(flags, "01");
    assert_eq!(
        got.header("tracestate"),
        Some("vendor=abc"),
        "a trusted tracestate is carried on"
    );

    let request = receiver.request_span(Some(CLIENT_TRACE)).await;
    assert_eq!(request.parent_span_id, CLIENT_SPAN);

    // The proxy's "not sampled" is honoured too: the upstream learns the trace, nothing is
    // exported.
    let unsampled_trace = random_hex(16);
    let unsampled = format!("00-{unsampled_trace}-{CLIENT_SPAN}-00");
    assert_eq!(get(&gw, "/public/b", &[("traceparent", &unsampled)]).await, 200);
    let got = ups.acme.wait_for(2).await;
    let (trace_id, _, flags) = parse_traceparent(got[1].header("traceparent").unwrap());
    assert_eq!((trace_id.as_str(), flags.as_str()), (unsampled_trace.as_str(), "00"));
    // The sampled request's spans arrived; give the exporter as long again for the other.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.spans().iter().all(|s| s.trace_id != unsampled_trace),
        "an unsampled trace was exported: {:#?}",
        receiver.spans()
    );
}

#[tokio::test]
async fn a_strangers_trace_context_is_replaced_and_ratio_zero_exports_nothing() {
    let receiver = TestOtlpReceiver::start().await;
    let endpoint = receiver.endpoint();
    let (ups, gw) = start_with(|f| {
        with_tracing(f, &format!("otlp_endpoint = \"{endpoint}\"\nsample_ratio = 0\n"));
    })
    .await;

    let forced = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    for i in 0..5 {
        let headers = [("traceparent", forced.as_str()), ("tracestate", "vendor=abc")];
        assert_eq!(get(&gw, &format!("/public/{i}"), &headers).await, 200);
    }
    for got in ups.acme.wait_for(5).await {
        let (trace_id, parent_id, flags) = parse_traceparent(got.header("traceparent").unwrap());
        assert_ne!(trace_id, CLIENT_TRACE, "an untrusted client chose the trace");
        assert_ne!(parent_id, CLIENT_SPAN);
        assert_eq!(flags, "00", "ratio 0 samples no new trace, whatever the client asked");
        assert!(
            !got.has_header("tracestate"),
            "an untrusted tracestate reached the upstream"
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(
        receiver.spans().is_empty(),
        "exported at ratio 0: {:#?}",
        receiver.spans()
    );
}

#[tokio::test]
async fn without_an_endpoint_nothing_is_exported_and_no_traceparent_is_invented() {
    let receiver = TestOtlpReceiver::start().await;
    // The SDK's own variable must not turn export on behind the policy's back.
    let (ups, gw) = start_with(|f| {
        f.gateway_env
            .push(("OTEL_EXPORTER_OTLP_ENDPOINT".into(), receiver.endpoint()));
        f.gateway_env.push(("OTEL_BSP_SCHEDULE_DELAY".into(), "100".into()));
    })
    .await;

    assert_eq!(get(&gw, "/public/plain", &[]).await, 200);
    let client_context = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    assert_eq!(
        get(&gw, "/public/passed", &[("traceparent", &client_context)]).await,
        200
    );
    let got = ups.acme.wait_for(2).await;
    assert!(
        !got[0].has_header("traceparent"),
        "a traceparent was invented: {:?}",
        got[0].headers
    );
    assert_eq!(
        got[1].header("traceparent"),
        Some(client_context.as_str()),
        "tracing off leaves the client's header as it always was"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(
        receiver.spans().is_empty(),
        "exported with tracing off: {:#?}",
        receiver.spans()
    );
}

#[tokio::test]
async fn bad_tracing_settings_are_refused_with_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("policy");
    let mut fixture = PolicyFixture::new(
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
        "http://127.0.0.1:9103",
    );
    with_tracing(
        &mut fixture,
        "otlp_endpoint = \"ftp://collector:4318\"\nsample_ratio = 1.5\nservice_name = \"\"\n",
    );
    fixture.write(&dir);
    let gateway_toml = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "check must refuse the policy");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    for (needle, what) in [
        ("otlp_endpoint", "is not an http:// or https:// URL"),
        ("sample_ratio", "is not between 0.0 and 1.0"),
        ("service_name", "give 1 to 255 printable characters"),
    ] {
        let line = line_of(&gateway_toml, needle);
        let expected = format!("gateway.toml:{line}: tracing.{needle}");
        assert!(
            stderr.lines().any(|l| l.contains(&expected) && l.contains(what)),
            "missing `{expected} ... {what}` in:\n{stderr}"
        );
    }
}
