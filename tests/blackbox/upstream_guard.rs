//! Per-tenant upstream breakers and bulkheads (SPEC "Upstream breakers and bulkheads"):
//! a failing upstream opens its tenant's breaker (`503` + `Retry-After` at once, the
//! upstream is not contacted), one half-open probe after the cool-down closes it again;
//! a per-tenant limit on requests in flight, with a bounded and time-limited queue, keeps
//! one tenant's slow upstream from starving the others; the state is visible on the admin
//! `/metrics`; out-of-range settings are refused by `portcullis check`.
//!
//! Timing is kept loose on purpose (the suite runs on a small, shared machine): the
//! cool-downs are waited out with half a second to spare, and "at once" means "well under
//! the delay it would otherwise take".

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::harness::*;

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

/// An upstream the test steers: answers every request with the current `status`,
/// counts what reaches it, and while `hold` is set keeps each request waiting.
struct SteeredUpstream {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    hits: Arc<AtomicUsize>,
    hold: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl SteeredUpstream {
    async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let status = Arc::new(AtomicU16::new(status));
        let hits = Arc::new(AtomicUsize::new(0));
        let hold = Arc::new(AtomicBool::new(false));
        let (s, h, hd) = (status.clone(), hits.clone(), hold.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (s, h, hd) = (s.clone(), h.clone(), hd.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        let (s, h, hd) = (s.clone(), h.clone(), hd.clone());
                        async move {
                            let n = h.fetch_add(1, Ordering::SeqCst) + 1;
                            while hd.load(Ordering::SeqCst) {
                                tokio::time::sleep(Duration::from_millis(10)).await;
                            }
                            let mut resp = http::Response::new(Full::new(Bytes::from(format!("steered {n}"))));
                            *resp.status_mut() = http::StatusCode::from_u16(s.load(Ordering::SeqCst)).expect("status");
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        SteeredUpstream {
            addr,
            status,
            hits,
            hold,
            task,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn answer(&self, status: u16) {
        self.status.store(status, Ordering::SeqCst);
    }

    fn hold(&self, on: bool) {
        self.hold.store(on, Ordering::SeqCst);
    }
}

impl Drop for SteeredUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A response as the client saw it.
#[derive(Debug)]
struct Answer {
    status: u16,
    retry_after: Option<String>,
    body: String,
    elapsed: Duration,
}

impl Answer {
    fn error_code(&self) -> Option<String> {
        serde_json::from_str::<serde_json::Value>(&self.body)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
    }

    /// Asserts a `503` refusal with `code` and a `Retry-After` of at least 1 s; returns it.
    fn assert_refused(&self, code: &str) -> u64 {
        assert_eq!(self.status, 503, "expected a 503 {code}: {self:?}");
        assert_eq!(self.error_code().as_deref(), Some(code), "{self:?}");
        let secs: u64 = self
            .retry_after
            .as_deref()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("503 without a numeric Retry-After: {self:?}"));
        assert!(secs >= 1, "Retry-After must be at least 1: {self:?}");
        secs
    }
}

async fn get(c: &reqwest::Client, gw: &Gateway, host: &str, path: &str) -> Answer {
    let started = Instant::now();
    let r = c
        .get(gw.host_url(host, path))
        .header("accept", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{host}{path}: {e}"));
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let body = r.text().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        body,
        elapsed: started.elapsed(),
    }
}

/// The value of `portcullis_<name>{tenant="<tenant>"}` on the admin `/metrics`.
async fn metric(gw: &Gateway, name: &str, tenant: &str) -> Option<i64> {
    let text = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics body");
    let prefix = format!("portcullis_{name}{{tenant=\"{tenant}\"}} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

/// Waits (up to 10 s) until the metric reads `want`; panics with the last value otherwise.
async fn expect_metric(gw: &Gateway, name: &str, tenant: &str, want: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = metric(gw, name, tenant).await;
        if got == Some(want) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "portcullis_{name}{{tenant=\"{tenant}\"}}: want {want}, last read {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The other tenant is served normally.
async fn assert_globex_ok(c: &reqwest::Client, gw: &Gateway, ups: &Upstreams) {
    let before = ups.globex.count();
    let a = get(c, gw, "globex.test", "/public/neighbour").await;
    assert_eq!(a.status, 200, "globex was affected by acme's breaker: {a:?}");
    assert_eq!(ups.globex.count(), before + 1);
}

/// p99 of latencies (nearest rank).
fn p99(samples: &mut [Duration]) -> Duration {
    samples.sort();
    let rank = (samples.len() * 99).div_ceil(100).max(1);
    samples[rank - 1]
}

/// `n` GETs to `host` from `workers` concurrent workers; every latency, all 200.
async fn latencies(c: &reqwest::Client, gw: &Gateway, host: &str, n: usize, workers: usize) -> Vec<Duration> {
    let mut tasks = Vec::new();
    for w in 0..workers {
        let c = c.clone();
        let url = gw.host_url(host, &format!("/public/lat{w}"));
        let per = n / workers;
        tasks.push(tokio::spawn(async move {
            let mut out = Vec::with_capacity(per);
            for _ in 0..per {
                let started = Instant::now();
                let r = c.get(&url).send().await.expect("latency request");
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                out.push(started.elapsed());
                assert_eq!(status, 200, "{url}");
            }
            out
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("latency worker"));
    }
    all
}

// ---------------------------------------------------------------------------------------
// Breaker
// ---------------------------------------------------------------------------------------

/// If the breaker did not open, a failing upstream would keep getting (and timing out)
/// every request; if it never let a probe through or the probe's success did not close
/// it, the tenant would stay down after its app recovered; if more than one probe went
/// out, a recovering app would be stampeded; if it were shared, globex would go down with
/// acme.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_opens_on_failures_probes_once_and_recovers() {
    const COOL_DOWN: Duration = Duration::from_secs(2);
    let ups = Upstreams::start().await;
    let steered = SteeredUpstream::start(502).await;
    let mut fixture = PolicyFixture::for_upstreams(&ups);
    {
        let acme = fixture.tenant_mut("acme");
        acme.upstream = steered.url();
        acme.extra_limits = "breaker_failures = 3\nbreaker_cool_down = \"2s\"".into();
    }
    let gw = Gateway::start(&fixture).await;
    let c = gw.client();

    // Closed: three failures go through to the upstream (and its 502 back to the client).
    for i in 1..=3 {
        let a = get(&c, &gw, "acme.test", &format!("/public/fail{i}")).await;
        assert_eq!(a.status, 502, "failure {i} must reach the upstream: {a:?}");
        assert_eq!(steered.hits(), i);
        assert_globex_ok(&c, &gw, &ups).await;
    }
    expect_metric(&gw, "upstream_breaker_state", "acme", 2).await;

    // Open: refused at once, the upstream sees nothing.
    let a = get(&c, &gw, "acme.test", "/public/while-open").await;
    let secs = a.assert_refused("upstream_unavailable");
    assert!(secs <= COOL_DOWN.as_secs(), "Retry-After beyond the cool-down: {a:?}");
    assert_eq!(steered.hits(), 3, "an open breaker let a request through");
    assert!(a.elapsed < Duration::from_secs(2), "not refused at once: {a:?}");
    assert_eq!(metric(&gw, "upstream_breaker_state", "globex").await, Some(0));
    assert_globex_ok(&c, &gw, &ups).await;

    // After the cool-down one probe goes; it fails, so the breaker opens again.
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(500)).await;
    let a = get(&c, &gw, "acme.test", "/public/probe1").await;
    assert_eq!(
        a.status, 502,
        "the probe after the cool-down must reach the upstream: {a:?}"
    );
    assert_eq!(steered.hits(), 4);
    let a = get(&c, &gw, "acme.test", "/public/reopened").await;
    a.assert_refused("upstream_unavailable");
    assert_eq!(steered.hits(), 4, "a failed probe must re-open the breaker");
    expect_metric(&gw, "upstream_breaker_state", "acme", 2).await;

    // The app recovers. After the cool-down exactly one probe is let through: hold it at
    // the upstream and check that everything else is refused meanwhile (half-open).
    steered.answer(200);
    steered.hold(true);
    tokio::time::sleep(COOL_DOWN + Duration::from_millis(500)).await;
    let probe = {
        let (c, url) = (c.clone(), gw.host_url("acme.test", "/public/probe2"));
        tokio::spawn(async move { c.get(url).send().await.map(|r| r.status().as_u16()) })
    };
    let reached = eventually(Duration::from_secs(10), || async {
        (steered.hits() == 5).then_some(())
    })
    .await;
    assert!(reached.is_some(), "the probe never reached the upstream");
    for i in 0..3 {
        let a = get(&c, &gw, "acme.test", &format!("/public/during-probe{i}")).await;
        a.assert_refused("upstream_unavailable");
    }
    assert_eq!(steered.hits(), 5, "more than one request went out while half-open");
    expect_metric(&gw, "upstream_breaker_state", "acme", 1).await;
    assert_globex_ok(&c, &gw, &ups).await;

    // The probe succeeds: closed again, everything flows.
    steered.hold(false);
    let status = probe.await.expect("probe task").expect("probe request");
    assert_eq!(status, 200);
    expect_metric(&gw, "upstream_breaker_state", "acme", 0).await;
    for i in 0..3 {
        let a = get(&c, &gw, "acme.test", &format!("/public/recovered{i}")).await;
        assert_eq!(a.status, 200, "{a:?}");
    }
    assert_eq!(steered.hits(), 8);
    assert_globex_ok(&c, &gw, &ups).await;
}

/// Connection errors count as failures too: without that, a tenant whose app is down
/// (port closed) would never be shed and every request would pay a connect attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused_opens_the_breaker() {
    let closed = ClosedPort::bind();
    let (ups, gw) = start_with(|f| {
        let acme = f.tenant_mut("acme");
        acme.upstream = closed.url();
        acme.extra_limits = "breaker_failures = 3\nbreaker_cool_down = \"30s\"".into();
    })
    .await;
    let c = gw.client();
    for i in 1..=3 {
        let a = get(&c, &gw, "acme.test", &format!("/public/down{i}")).await;
        assert_eq!(a.status, 502, "connect error {i}: {a:?}");
    }
    let a = get(&c, &gw, "acme.test", "/public/down4").await;
    let secs = a.assert_refused("upstream_unavailable");
    assert!(
        (20..=30).contains(&secs),
        "Retry-After should count down the 30 s cool-down: {a:?}"
    );
    expect_metric(&gw, "upstream_breaker_state", "acme", 2).await;
    assert_globex_ok(&c, &gw, &ups).await;
    assert_eq!(ups.acme.count(), 0);
}

/// Response timeouts count as failures: a hung app must be shed, not waited on for the
/// full response timeout by every request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_timeouts_open_the_breaker() {
    let (ups, gw) = start_with(|f| {
        f.limits.push(("upstream_response_timeout".into(), "\"1s\"".into()));
        f.tenant_mut("acme").extra_limits = "breaker_failures = 2\nbreaker_cool_down = \"30s\"".into();
    })
    .await;
    let c = gw.client();
    for i in 1..=2 {
        let a = get(&c, &gw, "acme.test", &format!("/public/slow?ms=5000&i={i}")).await;
        assert_eq!(a.status, 504, "timeout {i}: {a:?}");
    }
    let a = get(&c, &gw, "acme.test", "/public/slow?ms=5000&i=3").await;
    a.assert_refused("upstream_unavailable");
    assert!(a.elapsed < Duration::from_millis(900), "not refused at once: {a:?}");
    assert_eq!(ups.acme.count(), 2, "an open breaker let a request through");
    expect_metric(&gw, "upstream_breaker_state", "acme", 2).await;
    assert_globex_ok(&c, &gw, &ups).await;
}

// ---------------------------------------------------------------------------------------
// Bulkhead
// ---------------------------------------------------------------------------------------

/// If acme's slow upstream could take all of the gateway's capacity (no per-tenant limit,
/// or a limit shared across tenants), globex's latency would climb to acme's delay; if
/// the bulkhead did not refuse acme's excess quickly, acme's clients would pile up for
/// the full 10 s (or the queue would be unbounded).
///
/// Bound on globex's p99 while acme is saturated: max(2 × baseline p99, baseline p99 +
/// 100 ms). Starvation would show up as seconds (the 1 s queue wait or the 10 s delay);
/// the +100 ms floor absorbs scheduling noise of a 2-core machine running other builds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_tenant_does_not_starve_another() {
    const SLOW_MS: u64 = 10_000;
    const FLOOD: usize = 40;
    let (ups, gw) = start_with(|f| {
        f.tenant_mut("acme").extra_limits = "max_in_flight = 8\nmax_queued = 8\nqueue_wait = \"1s\"".into();
    })
    .await;
    let c = gw.client();

    // Baseline of globex, after a warm-up (connections, pools).
    latencies(&c, &gw, "globex.test", 20, 4).await;
    let mut baseline = latencies(&c, &gw, "globex.test", 200, 4).await;
    let base_p99 = p99(&mut baseline);

    // Flood acme: 8 in flight (held 10 s), 8 queued (1 s), the rest refused.
    let flood_client = gw.client();
    let flood_start = Instant::now();
    let mut flood = Vec::new();
    for i in 0..FLOOD {
        let c = flood_client.clone();
        let url = gw.host_url("acme.test", &format!("/public/slow?ms={SLOW_MS}&i={i}"));
        flood.push(tokio::spawn(async move {
            let started = Instant::now();
            let r = c
                .get(url)
                .header("accept", "application/json")
                .send()
                .await
                .expect("flood request");
            let status = r.status().as_u16();
            let retry_after = r
                .headers()
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = r.text().await.unwrap_or_default();
            Answer {
                status,
                retry_after,
                body,
                elapsed: started.elapsed(),
            }
        }));
    }
    let reached = eventually(Duration::from_secs(8), || async {
        (ups.acme.count() >= 8).then_some(())
    })
    .await;
    assert!(
        reached.is_some(),
        "acme's upstream got {} requests, want 8",
        ups.acme.count()
    );
    expect_metric(&gw, "upstream_in_flight", "acme", 8).await;

    // globex while acme is saturated.
    let mut during = latencies(&c, &gw, "globex.test", 200, 4).await;
    let during_p99 = p99(&mut during);
    let window = flood_start.elapsed();
    assert!(
        window < Duration::from_millis(SLOW_MS - 500),
        "globex's measurement ended {window:?} after the flood started, after acme's requests \
         were let go: the measurement is not 'during' (and globex is very slow)"
    );
    let bound = (base_p99 * 2).max(base_p99 + Duration::from_millis(100));
    eprintln!("globex p99: baseline {base_p99:?}, during acme's flood {during_p99:?}, bound {bound:?}");
    assert!(
        during_p99 <= bound,
        "globex p99 rose from {base_p99:?} to {during_p99:?} (bound {bound:?}) while acme's upstream hung"
    );
    assert_eq!(metric(&gw, "upstream_in_flight", "globex").await, Some(0));

    // acme: exactly max_in_flight requests reached the upstream; the excess was refused
    // as overloaded, long before the upstream's 10 s.
    let mut ok = 0;
    for t in flood {
        let a = t.await.expect("flood task");
        if a.status == 200 {
            ok += 1;
            continue;
        }
        assert_eq!(a.assert_refused("overloaded"), 1, "{a:?}");
        assert!(
            a.elapsed < Duration::from_secs(5),
            "an excess request was refused only after {:?}",
            a.elapsed
        );
    }
    assert_eq!(ok, 8, "requests admitted beyond max_in_flight = 8");
    assert_eq!(ups.acme.count(), 8, "the upstream saw more than max_in_flight requests");
    expect_metric(&gw, "upstream_in_flight", "acme", 0).await;
    expect_metric(&gw, "upstream_queued", "acme", 0).await;
}

/// If the slot were released when the response head arrived, a long stream would not
/// count against the limit (a tenant could hold unbounded upstream streams); if it were
/// never released (or not when the client walks away), the tenant would lock up after
/// `max_in_flight` requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slot_is_held_until_the_body_is_done() {
    let (ups, gw) =
        start_with(|f| f.tenant_mut("acme").extra_limits = "max_in_flight = 1\nmax_queued = 0".into()).await;
    let c = gw.client();

    // One slot, no queue: sequential requests all pass, so each released its slot.
    for i in 0..20 {
        let a = get(&c, &gw, "acme.test", &format!("/public/seq{i}")).await;
        assert_eq!(a.status, 200, "sequential request {i}: {a:?}");
    }
    for i in 0..3 {
        let r = c
            .get(gw.host_url("acme.test", "/public/stream?bytes=1000000"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "streamed body {i}");
        assert_eq!(r.bytes().await.unwrap().len(), 1_000_000);
    }
    assert_eq!(ups.acme.count(), 23);
    expect_metric(&gw, "upstream_in_flight", "acme", 0).await;

    // A streaming body holds the only slot: a concurrent request is refused at once.
    let streamer = gw.client();
    let mut stream = streamer
        .get(gw.host_url("acme.test", "/public/slowstream"))
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    let first = stream.chunk().await.unwrap().expect("a first chunk");
    assert!(!first.is_empty());
    let a = get(&c, &gw, "acme.test", "/public/while-streaming").await;
    assert_eq!(a.assert_refused("overloaded"), 1, "{a:?}");
    assert!(
        a.elapsed < Duration::from_secs(3),
        "max_queued = 0 must refuse at once: {a:?}"
    );
    assert!(
        !ups.acme
            .requests()
            .iter()
            .any(|r| r.target == "/public/while-streaming"),
        "a refused request reached the upstream"
    );
    expect_metric(&gw, "upstream_in_flight", "acme", 1).await;
    let g = get(&c, &gw, "globex.test", "/public/other-tenant").await;
    assert_eq!(g.status, 200, "globex shares acme's bulkhead: {g:?}");

    // The client walks away mid-stream: the slot comes back.
    drop(stream);
    drop(streamer);
    let back = eventually(Duration::from_secs(10), || {
        let c = c.clone();
        let url = gw.host_url("acme.test", "/public/after-stream");
        async move {
            let r = c.get(url).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    assert!(back.is_some(), "the slot of an abandoned stream was never released");
    expect_metric(&gw, "upstream_in_flight", "acme", 0).await;
}

// ---------------------------------------------------------------------------------------
// Configuration
// ---------------------------------------------------------------------------------------

/// `portcullis check` on a fixture written to a temp dir: exit code and stderr.
fn check_fixture(fixture: &PolicyFixture) -> (tempfile::TempDir, std::path::PathBuf, Option<i32>, String) {
    let tmp = tempfile::Builder::new()
        .prefix("portcullis-guard-check-")
        .tempdir()
        .unwrap();
    let dir = tmp.path().join("policy");
    fixture.write(&dir);
    let out = std::process::Command::new(BIN)
        .arg("check")
        .arg("--config")
        .arg(&dir)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (tmp, dir, out.status.code(), stderr)
}

fn check_base() -> PolicyFixture {
    PolicyFixture::new(
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
        "http://127.0.0.1:9103",
    )
}

/// A zero cool-down would turn the breaker into a no-op (a probe on every request) and a
/// zero in-flight limit would refuse every request of the tenant; both must be caught by
/// `check` with the file and line to fix, all in one run, rather than at run time.
#[test]
fn out_of_range_guard_settings_are_refused_by_check() {
    // Positive control: every key with a valid value passes, so the refusals below come
    // from the values, not from the keys.
    let mut good = check_base();
    good.tenant_mut("acme").extra_limits = [
        "breaker_failures = 3",
        "breaker_cool_down = \"1s\"",
        "max_in_flight = 1",
        "max_queued = 0",
        "queue_wait = \"250ms\"",
    ]
    .join("\n");
    let (_tmp, _dir, code, stderr) = check_fixture(&good);
    assert_eq!(code, Some(0), "valid guard settings refused:\n{stderr}");

    let mut bad = check_base();
    bad.tenant_mut("acme").extra_limits = "max_queued = 4\nbreaker_cool_down = \"0s\"".into();
    bad.tenant_mut("globex").extra_limits = "max_in_flight = 0".into();
    bad.tenant_mut("initech").extra_limits = "breaker_cool_down = \"500ms\"".into();
    let (_tmp, dir, code, stderr) = check_fixture(&bad);
    assert_eq!(code, Some(2), "exit code; stderr:\n{stderr}");
    assert!(stderr.contains("3 problems found"), "all problems at once:\n{stderr}");
    for (tenant, key, fragment) in [
        ("acme", "breaker_cool_down", "breaker_cool_down"),
        ("globex", "max_in_flight", "max_in_flight"),
        ("initech", "breaker_cool_down", "at least 1s"),
    ] {
        let spec = bad.tenants.iter().find(|t| t.id == tenant).unwrap();
        let line = line_of(&PolicyFixture::tenant_toml(spec), key);
        let prefix = format!("{}:{line}:", dir.join(format!("tenants/{tenant}.toml")).display());
        assert!(
            stderr.lines().any(|l| l.starts_with(&prefix) && l.contains(fragment)),
            "expected a line `{prefix} ...{fragment}...` in stderr:\n{stderr}"
        );
    }
}
