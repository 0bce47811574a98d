//! The status users see (SPEC "Incidents and status"): `GET /.portcullis/status` on a
//! tenant host, without a session, says `ok`, `suspended` (a tier or tenant kill switch,
//! with the operator's message for users and since when) or `degraded` (the tenant's
//! upstream breaker is open, since when); the 423 page and JSON show the same message and
//! time, escaped.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU16, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::harness::*;

/// A gateway with an operator of tier prod (token `prod`).
struct Env {
    gw: Gateway,
    prod: String,
    client: reqwest::Client,
    _ups: Upstreams,
}

async fn env_with(tweak: impl FnOnce(&mut PolicyFixture)) -> Env {
    let prod = random_hex(24);
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![("olivia".into(), sha256_hex(prod.as_bytes()))];
        tweak(f);
    })
    .await;
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client");
    Env {
        gw,
        prod,
        client,
        _ups: ups,
    }
}

impl Env {
    /// An admin API call with the given operator token; panics unless it answers 200.
    async fn admin(&self, method: http::Method, path: &str, token: &str, body: Value) -> Value {
        let r = self
            .client
            .request(method, self.gw.admin_url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        let status = r.status().as_u16();
        let text = r.text().await.unwrap_or_default();
        assert_eq!(status, 200, "{path}: {text}");
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}: {text}"))
    }

    /// The status of `host`, checking what every answer must carry.
    async fn status(&self, host: &str) -> Value {
        let r = raw_get(self.gw.public, host, "/.portcullis/status").await;
        assert_eq!(r.status, 200, "{host}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.header("cache-control"),
            Some("no-store"),
            "{host}: status must not be cached"
        );
        let v: Value = serde_json::from_slice(&r.body).expect("status JSON");
        let tenant = host.trim_end_matches(".test");
        assert_eq!(v["tenant"], tenant, "{v}");
        v
    }
}

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() as i64
}

/// Unix seconds of an RFC 3339 UTC time as the gateway writes it.
fn parse_time(v: &Value) -> i64 {
    let text = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    assert!(text.ends_with('Z'), "not UTC: {text}");
    humantime::parse_rfc3339(text)
        .unwrap_or_else(|e| panic!("not RFC 3339 ({e}): {text}"))
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// Asserts an `ok` answer: no message, no time.
fn assert_ok(v: &Value) {
    assert_eq!(v["status"], "ok", "{v}");
    assert!(v.get("message").is_none() && v.get("since").is_none(), "{v}");
}

/// If this broke, users would not learn that access is suspended or why, would read the
/// operator's internal reason, or would stay "suspended" after the reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_switch_shows_its_message_and_time_until_reset() {
    let env = env_with(|_| {}).await;
    assert_ok(&env.status("acme.test").await);

    let before = unix_now();
    let message = "Acme is paused for maintenance until 14:00 UTC.";
    let reason = "INTERNAL-credential-leak-investigation";
    env.admin(
        http::Method::PUT,
        "/v1/tenants/acme/breaker",
        &env.prod,
        json!({ "reason": reason, "message": message, "expires_in": "2h" }),
    )
    .await;
    let after = unix_now();

    let v = env.status("acme.test").await;
    assert_eq!(v["status"], "suspended", "{v}");
    assert_eq!(v["tier"], "prod");
    assert_eq!(v["message"], message, "{v}");
    let since = parse_time(&v["since"]);
    assert!(
        (before..=after).contains(&since),
        "since {since} outside {before}..={after}: {v}"
    );
    let expires = v["expires_at"].as_i64().expect("expires_at");
    assert!((before + 7200..=after + 7200).contains(&expires), "{v}");
    assert!(!v.to_string().contains(reason), "the internal reason leaked: {v}");
    // HEAD answers too, with the same headers and no body.
    let head = env
        .client
        .head(format!("http://{}/.portcullis/status", env.gw.public))
        .header("host", "acme.test")
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["cache-control"], "no-store");
    assert!(head.bytes().await.unwrap().is_empty());
    // Only GET and HEAD.
    let post = raw(
        env.gw.public,
        b"POST /.portcullis/status HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(post[0].status, 405);
    // The other tenant of the tier is not covered.
    assert_ok(&env.status("globex.test").await);

    // API clients of the suspended tenant get the same message and time with the 423.
    let r = raw_get(env.gw.public, "acme.test", "/public/ping").await;
    assert_eq!(r.status, 423);
    let body: Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body["message"], message, "{body}");
    assert_eq!(body["since"], v["since"], "{body}");
    assert!(!String::from_utf8_lossy(&r.body).contains(reason));

    env.admin(
        http::Method::DELETE,
        "/v1/tenants/acme/breaker",
        &env.prod,
        json!({ "reason": "done" }),
    )
    .await;
    assert_ok(&env.status("acme.test").await);
}

/// If this broke, a tier switch (the widest cut) would leave its tenants' status pages
/// saying "ok", or would show on the other tier's tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_switch_shows_on_every_tenant_of_that_tier_only() {
    let env = env_with(|_| {}).await;
    let message = "Production is paused while we investigate.";
    env.admin(
        http::Method::PUT,
        "/v1/tiers/prod/breaker",
        &env.prod,
        json!({ "reason": "incident", "message": message }),
    )
    .await;
    for host in ["acme.test", "globex.test"] {
        let v = env.status(host).await;
        assert_eq!(v["status"], "suspended", "{host}: {v}");
        assert_eq!(v["message"], message, "{host}: {v}");
        assert!(v["since"].is_string(), "{host}: {v}");
    }
    let v = env.status("initech.test").await;
    assert_ok(&v);
    assert_eq!(v["tier"], "staging");
}

/// If this broke, the public status would reveal that one account is locked (it is per
/// user), or a locked account would turn the public status into a 423.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_switch_never_shows_on_the_status() {
    let env = env_with(|_| {}).await;
    env.admin(
        http::Method::PUT,
        "/v1/tenants/acme/accounts/alice/breaker",
        &env.prod,
        json!({ "reason": "phished", "message": "Your account is locked." }),
    )
    .await;
    assert_ok(&env.status("acme.test").await);
}

/// If this broke, a browser would get a 423 page without the operator's message or its
/// time, or with the message unescaped (a script injected through the admin API).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_423_page_shows_the_message_and_time_escaped() {
    let env = env_with(|_| {}).await;
    let message = "Paused <script>alert(1)</script> & back soon";
    env.admin(
        http::Method::PUT,
        "/v1/tenants/globex/breaker",
        &env.prod,
        json!({ "reason": "maintenance", "message": message }),
    )
    .await;
    let status = env.status("globex.test").await;
    assert_eq!(status["message"], message);
    let since = status["since"].as_str().unwrap().to_string();

    let mut browser = Agent::new(&env.gw, "globex.test");
    let page = browser
        .send(http::Method::GET, "/app/data", &[("accept", "text/html")], None)
        .await;
    assert_eq!(page.status, 423);
    assert!(
        page.header("content-type").is_some_and(|c| c.starts_with("text/html")),
        "{:?}",
        page.header("content-type")
    );
    let html = &page.body;
    assert!(!html.contains("<script>"), "message not escaped: {html}");
    assert!(
        html.contains("Paused &#60;script&#62;alert(1)&#60;/script&#62; &#38; back soon"),
        "message missing: {html}"
    );
    let utc = format!("{} UTC", since.trim_end_matches('Z').replacen('T', " ", 1));
    assert!(
        html.contains(&format!("<time datetime=\"{since}\">{utc}</time>")),
        "time {since} missing: {html}"
    );
}

/// An upstream answering every request with the current `status`.
struct FlakyUpstream {
    addr: SocketAddr,
    status: Arc<AtomicU16>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyUpstream {
    async fn start(status: u16) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let status = Arc::new(AtomicU16::new(status));
        let s = status.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let s = s.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                        let code = s.load(Ordering::SeqCst);
                        async move {
                            let mut resp = http::Response::new(Full::new(Bytes::from_static(b"flaky")));
                            *resp.status_mut() = http::StatusCode::from_u16(code).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FlakyUpstream { addr, status, task }
    }
}

impl Drop for FlakyUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// If this broke, users of a tenant whose app is failing would read "ok" while every
/// request gets 503, or "degraded" after the app recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_upstream_breaker_shows_degraded_until_it_recovers() {
    let flaky = FlakyUpstream::start(502).await;
    let url = format!("http://{}", flaky.addr);
    let env = env_with(|f| {
        let acme = f.tenant_mut("acme");
        acme.upstream = url;
        acme.extra_limits = "breaker_failures = 3\nbreaker_cool_down = \"1s\"".into();
    })
    .await;
    assert_ok(&env.status("acme.test").await);

    let before = unix_now();
    for i in 0..3 {
        let r = raw_get(env.gw.public, "acme.test", &format!("/public/fail{i}")).await;
        assert_eq!(r.status, 502, "failure {i} must reach the upstream");
    }
    let after = unix_now();
    let r = raw_get(env.gw.public, "acme.test", "/public/while-open").await;
    assert_eq!(r.status, 503, "the breaker did not open");

    let v = env.status("acme.test").await;
    assert_eq!(v["status"], "degraded", "{v}");
    assert!(v["message"].as_str().is_some_and(|m| !m.is_empty()), "{v}");
    let since = parse_time(&v["since"]);
    assert!(
        (before - 1..=after + 1).contains(&since),
        "since {since} outside {before}..={after}: {v}"
    );
    assert_ok(&env.status("globex.test").await);

    // A kill switch outranks the breaker.
    env.admin(
        http::Method::PUT,
        "/v1/tenants/acme/breaker",
        &env.prod,
        json!({ "reason": "r", "message": "Suspended by us." }),
    )
    .await;
    let v = env.status("acme.test").await;
    assert_eq!(v["status"], "suspended", "{v}");
    assert_eq!(v["message"], "Suspended by us.", "{v}");
    env.admin(http::Method::DELETE, "/v1/tenants/acme/breaker", &env.prod, json!({}))
        .await;
    assert_eq!(env.status("acme.test").await["status"], "degraded");

    // The app recovers: after the cool-down the probe closes the breaker.
    flaky.status.store(200, Ordering::SeqCst);
    let recovered = eventually(Duration::from_secs(10), || async {
        let r = raw_get(env.gw.public, "acme.test", "/public/probe").await;
        (r.status == 200).then_some(())
    })
    .await;
    assert!(recovered.is_some(), "the breaker never closed");
    assert_ok(&env.status("acme.test").await);
}
