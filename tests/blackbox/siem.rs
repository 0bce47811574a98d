//! SIEM export (SPEC "Operator console and observability", issue 18): security events
//! reach a test webhook receiver and a test syslog-over-TLS receiver, both started here
//! on 127.0.0.1, with the documented fields (`docs/security-events.md`), every one once,
//! through receiver outages, without slowing requests and with bounded memory; bad
//! `[siem]` settings are refused by `portcullis check` with file, line and key.

use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Method;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use crate::harness::*;

/// Adds a `[siem]` table to the fixture's `gateway.toml`.
fn with_siem(fixture: &mut PolicyFixture, siem_lines: &str) {
    fixture.gateway_extra.push_str(&format!("[siem]\n{siem_lines}"));
}

/// A test webhook receiver: records the events of every accepted POST and the
/// `Authorization` header it came with. While `down`, it holds each POST for
/// `hang` and then answers 503 without keeping anything.
struct TestWebhookReceiver {
    url: String,
    events: Arc<Mutex<Vec<Value>>>,
    authorizations: Arc<Mutex<BTreeSet<String>>>,
    posts: Arc<AtomicUsize>,
    refused: Arc<AtomicUsize>,
    down: Arc<AtomicBool>,
    hang: Duration,
}

impl TestWebhookReceiver {
    async fn start(down: bool, hang: Duration) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let receiver = TestWebhookReceiver {
            url: format!("http://127.0.0.1:{port}/ingest"),
            events: Arc::default(),
            authorizations: Arc::default(),
            posts: Arc::default(),
            refused: Arc::default(),
            down: Arc::new(AtomicBool::new(down)),
            hang,
        };
        let (events, auths, posts, refused, down, hang) = (
            receiver.events.clone(),
            receiver.authorizations.clone(),
            receiver.posts.clone(),
            receiver.refused.clone(),
            receiver.down.clone(),
            receiver.hang,
        );
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (events, auths, posts, refused, down) = (
                    events.clone(),
                    auths.clone(),
                    posts.clone(),
                    refused.clone(),
                    down.clone(),
                );
                tokio::spawn(async move {
                    let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (events, auths, posts, refused, down) = (
                            events.clone(),
                            auths.clone(),
                            posts.clone(),
                            refused.clone(),
                            down.clone(),
                        );
                        async move {
                            posts.fetch_add(1, Ordering::SeqCst);
                            let auth = req
                                .headers()
                                .get("authorization")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("none")
                                .to_string();
                            let is_json = req.headers().get("content-type").and_then(|v| v.to_str().ok())
                                == Some("application/json");
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let status = if down.load(Ordering::SeqCst) {
                                tokio::time::sleep(hang).await;
                                refused.fetch_add(1, Ordering::SeqCst);
                                503
                            } else {
                                let batch: Vec<Value> = serde_json::from_slice(&body).expect("a JSON array");
                                assert!(is_json, "batches are sent as application/json");
                                auths.lock().unwrap().insert(auth);
                                events.lock().unwrap().extend(batch);
                                200
                            };
                            let mut resp = http::Response::new(Full::new(Bytes::new()));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        receiver
    }

    fn events(&self) -> Vec<Value> {
        self.events.lock().unwrap().clone()
    }

    /// Waits (at most `timeout`) until `n` events of `action` arrived; returns them all.
    async fn wait_for(&self, action: &str, n: usize, timeout: Duration) -> Vec<Value> {
        let of_action = || -> Vec<Value> {
            self.events()
                .into_iter()
                .filter(|e| e["event.action"] == action)
                .collect()
        };
        let got = eventually(timeout, || async {
            let got = of_action();
            (got.len() >= n).then_some(got)
        })
        .await;
        got.unwrap_or_else(|| panic!("{n} `{action}` events expected, {} arrived", of_action().len()))
    }
}

/// A request that makes the gateway write one cheap security event (`cross_tier`: a
/// staging session cookie on a prod host, refused without a store lookup); returns how
/// long the answer took.
async fn cross_tier_request(client: &reqwest::Client, gw: &Gateway) -> Duration {
    let started = Instant::now();
    let r = client
        .get(gw.host_url("acme.test", "/"))
        .header("cookie", "__Host-portcullis-staging=not-a-session")
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() < 500, "{}", r.status());
    started.elapsed()
}

/// The `event.id`s of the security events of `action` on the gateway's stdout.
fn stdout_ids(gw: &Gateway, action: &str) -> BTreeSet<String> {
    gw.security_events(action)
        .iter()
        .map(|e| e["event.id"].as_str().expect("event.id on stdout").to_string())
        .collect()
}

/// A receiver that is down (holding each POST 2 s, then 503) while requests come in,
/// then back: requests stay fast, every event arrives once, with the documented fields,
/// the same `event.id` as on stdout, and the bearer token from the environment. If this
/// broke, a SIEM outage would slow users down, lose or duplicate events, or the
/// receiver could not authenticate the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flaky_webhook_gets_every_event_once_and_requests_stay_fast() {
    let receiver = TestWebhookReceiver::start(true, Duration::from_secs(2)).await;
    let token = random_hex(16);
    let (_ups, gw) = start_with(|f| {
        with_siem(
            f,
            &format!(
                "webhook = \"{}\"\nwebhook_token = \"env:SIEM_TEST_TOKEN\"\n",
                receiver.url
            ),
        );
        f.gateway_env.push(("SIEM_TEST_TOKEN".into(), token.clone()));
    })
    .await;
    let client = gw.client();

    let mut slowest = Duration::ZERO;
    for _ in 0..3 {
        for _ in 0..10 {
            slowest = slowest.max(cross_tier_request(&client, &gw).await);
        }
        tokio::time::sleep(Duration::from_millis(1200)).await;
    }
    let retried = eventually(Duration::from_secs(15), || async {
        (receiver.refused.load(Ordering::SeqCst) >= 2).then_some(())
    })
    .await;
    assert!(
        retried.is_some(),
        "the gateway did not retry while the receiver was down"
    );
    assert!(receiver.events().is_empty());
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} while the receiver was down"
    );

    receiver.down.store(false, Ordering::SeqCst);
    receiver.wait_for("cross_tier", 30, Duration::from_secs(30)).await;
    // A moment for any duplicate to show up.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let events: Vec<Value> = receiver
        .events()
        .into_iter()
        .filter(|e| e["event.action"] == "cross_tier")
        .collect();
    assert_eq!(events.len(), 30, "events lost or duplicated");
    let ids: BTreeSet<String> = events
        .iter()
        .map(|e| e["event.id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 30, "an event arrived twice");
    assert_eq!(ids, stdout_ids(&gw, "cross_tier"), "the webhook and stdout disagree");
    let e = &events[0];
    for (field, value) in [
        ("event.kind", "security"),
        ("event.action", "cross_tier"),
        ("event.outcome", "failure"),
        ("event.reason", "session cookie of another tier"),
        ("log.level", "warn"),
        ("source.ip", "127.0.0.1"),
        ("organization.id", "acme"),
        ("portcullis.tier", "prod"),
        ("portcullis.credential_tier", "staging"),
    ] {
        assert_eq!(e[field], value, "{field} in {e}");
    }
    let at = e["@timestamp"].as_str().unwrap();
    assert!(humantime::parse_rfc3339(at).is_ok(), "@timestamp {at}");
    assert_eq!(e["event.id"].as_str().unwrap().len(), 32, "{e}");
    assert_eq!(
        *receiver.authorizations.lock().unwrap(),
        BTreeSet::from([format!("Bearer {token}")])
    );
    assert!(!gw.logs().contains(&token), "the webhook token reached the logs");
}

/// Many more events than the queue holds while the receiver is down: the oldest are
/// dropped and counted, and the gateway's memory stays bounded. If this broke, a long
/// SIEM outage could exhaust the gateway's memory, or lose events without a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_costs_bounded_memory_and_the_drops_are_counted() {
    let receiver = TestWebhookReceiver::start(true, Duration::ZERO).await;
    let (_ups, gw) = start_with(|f| with_siem(f, &format!("webhook = \"{}\"\nqueue = 200\n", receiver.url))).await;
    let client = gw.client();
    cross_tier_request(&client, &gw).await;
    let rss_before = gw.rss_kib();
    let sent = 3000;
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (client, gw_url) = (client.clone(), gw.host_url("acme.test", "/"));
        tasks.push(tokio::spawn(async move {
            for _ in 0..sent / 8 {
                let r = client
                    .get(&gw_url)
                    .header("cookie", "__Host-portcullis-staging=not-a-session")
                    .send()
                    .await
                    .unwrap();
                assert!(r.status().as_u16() < 500);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = started.elapsed();
    let dropped = siem_dropped_total(&gw).await;
    // All but the queue (200) and a batch in flight (100) are gone.
    assert!(dropped >= 3000 - 300, "dropped {dropped} of {sent} events ({took:?})");
    let rss_after = gw.rss_kib();
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert!(gw.logs().contains("SIEM delivery failing"), "the outage was not logged");
    assert!(receiver.posts.load(Ordering::SeqCst) >= 1);
}

/// A receiver down for two minutes while events keep coming: requests stay fast, the
/// sink keeps retrying (with its backoff capped) to the end without flooding the log,
/// the queue never holds more than its bound (every event beyond it is counted as
/// dropped, oldest first), and once the receiver is back it gets the newest events, each
/// once, with nothing unaccounted for. If this broke, a long SIEM outage would slow
/// users down, grow the gateway's memory, give up delivering for good, or lose the
/// events closest to the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_for_minutes_gets_the_newest_events_once_it_is_back() {
    const OUTAGE: Duration = Duration::from_secs(120);
    const QUEUE: u64 = 200;
    const BATCH: u64 = 100;
    let receiver = TestWebhookReceiver::start(true, Duration::ZERO).await;
    let (_ups, gw) = start_with(|f| with_siem(f, &format!("webhook = \"{}\"\nqueue = {QUEUE}\n", receiver.url))).await;
    let client = gw.client();

    let started = Instant::now();
    let mut sent: u64 = 0;
    let mut slowest = Duration::ZERO;
    let mut refused_at_half = None;
    while started.elapsed() < OUTAGE {
        for _ in 0..10 {
            slowest = slowest.max(cross_tier_request(&client, &gw).await);
            sent += 1;
        }
        if refused_at_half.is_none() && started.elapsed() >= OUTAGE / 2 {
            refused_at_half = Some(receiver.refused.load(Ordering::SeqCst));
            // Whatever the outage's length, the queue holds at most its bound plus the
            // batch being retried: the rest is gone and counted.
            let dropped = siem_dropped_total(&gw).await;
            assert!(
                dropped + QUEUE + BATCH >= sent,
                "dropped {dropped} of {sent} after a minute"
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let dropped_while_down = siem_dropped_total(&gw).await;
    assert!(
        dropped_while_down + QUEUE + BATCH >= sent,
        "dropped {dropped_while_down} of {sent} at the end of the outage"
    );
    assert!(
        slowest < Duration::from_secs(1),
        "a request took {slowest:?} while the receiver was down"
    );
    // Still retrying in the outage's second minute: the backoff is capped (10 s, with
    // jitter), so there are at least a few attempts, and never a tight loop.
    let refused_at_half = refused_at_half.unwrap_or_default();
    let refused_in_second_minute = receiver.refused.load(Ordering::SeqCst) - refused_at_half;
    assert!(
        (3..=60).contains(&refused_in_second_minute),
        "{refused_in_second_minute} attempts in the outage's second minute"
    );
    // One complaint per 10 s at most.
    let complaints = gw.stdout().matches("SIEM delivery failing").count();
    assert!(
        (3..=OUTAGE.as_secs() / 10 + 2).contains(&(complaints as u64)),
        "{complaints} complaints in {OUTAGE:?}"
    );

    receiver.down.store(false, Ordering::SeqCst);
    let back = Instant::now();
    // Stdout goes through a non-blocking writer: wait for its last lines.
    let newest: Vec<String> = eventually(Duration::from_secs(5), || async {
        let ids: Vec<String> = gw
            .security_events("cross_tier")
            .iter()
            .map(|e| e["event.id"].as_str().expect("event.id on stdout").to_string())
            .collect();
        (ids.len() as u64 == sent).then_some(ids)
    })
    .await
    .unwrap_or_else(|| panic!("stdout does not hold the {sent} events"));
    let last = newest.last().cloned().unwrap_or_default();
    let arrived = eventually(Duration::from_secs(30), || async {
        receiver
            .events()
            .iter()
            .any(|e| e["event.id"].as_str() == Some(last.as_str()))
            .then_some(())
    })
    .await;
    assert!(
        arrived.is_some(),
        "the newest event did not arrive within 30 s of the receiver's return"
    );
    let recovered_in = back.elapsed();
    // A moment for any duplicate or straggler.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let delivered: Vec<String> = receiver
        .events()
        .iter()
        .filter(|e| e["event.action"] == "cross_tier")
        .map(|e| e["event.id"].as_str().unwrap_or_default().to_string())
        .collect();
    let distinct: BTreeSet<&String> = delivered.iter().collect();
    assert_eq!(distinct.len(), delivered.len(), "an event arrived twice");
    let dropped = siem_dropped_total(&gw).await;
    assert_eq!(
        delivered.len() as u64 + dropped,
        sent,
        "delivered {} + dropped {dropped} != sent {sent}",
        delivered.len()
    );
    assert!(
        (QUEUE..=QUEUE + BATCH).contains(&(delivered.len() as u64)),
        "{} delivered",
        delivered.len()
    );
    eprintln!(
        "outage {OUTAGE:?}: sent {sent}, dropped {dropped}, delivered {}, slowest request {slowest:?}, \
         {refused_in_second_minute} attempts in the second minute, {complaints} complaints, \
         newest event delivered {recovered_in:?} after the receiver came back",
        delivered.len()
    );
    // Drop-oldest: the newest events sent are the ones delivered.
    let newest_queued: BTreeSet<&String> = newest[newest.len() - QUEUE as usize..].iter().collect();
    assert!(
        newest_queued.is_subset(&distinct),
        "the newest {QUEUE} events were not all delivered (recovered in {recovered_in:?})"
    );
}

/// A scripted set of actions (a wrong password; two sign-ins completed by their second
/// factor, one `mfa` event each, as a password step that needs a second factor is not
/// yet a sign-in; a logout; a kill switch tripped on the signed-in tenant, ending its
/// session, and reset; a policy reload) gives exactly one event per action at the
/// webhook, the same as on stdout. If this
/// broke, a SIEM would count an attack twice or miss an operator's action.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_kind_is_sent_exactly_once_per_action() {
    let receiver = TestWebhookReceiver::start(false, Duration::ZERO).await;
    let operator = random_hex(24);
    let (_ups, gw) = start_with(|f| {
        with_siem(f, &format!("webhook = \"{}\"\n", receiver.url));
        f.prod_operators = vec![("olivia".into(), sha256_hex(operator.as_bytes()))];
    })
    .await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let admin = |method: Method, path: &str, body: Option<Value>| {
        let mut req = gw.client().request(method, gw.admin_url(path)).bearer_auth(&operator);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.text().await.unwrap())
        }
    };

    let mut agent = Agent::new(&gw, "acme.test");
    let r = agent
        .post_json(
            "/.portcullis/api/login",
            &json!({"username": "alice", "password": "wrong"}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let refused_login = r
        .header("x-request-id")
        .expect("a refusal names its request")
        .to_string();
    agent.api_login(&alice).await;
    let r = agent.post_json("/.portcullis/api/logout", &json!({})).await;
    assert!(r.status < 400, "logout: {} {}", r.status, r.body);
    let mut agent = Agent::new(&gw, "acme.test");
    agent.api_login(&alice).await;
    let (status, body) = admin(
        Method::PUT,
        "/v1/tenants/acme/breaker",
        Some(json!({"reason": "siem test", "message": "Back soon"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = admin(
        Method::DELETE,
        "/v1/tenants/acme/breaker",
        Some(json!({"reason": "siem test over"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let tenant = gw.policy_dir.join("tenants/acme.toml");
    let text = std::fs::read_to_string(&tenant).unwrap();
    std::fs::write(
        &tenant,
        text.replace("idle_timeout = \"30m\"", "idle_timeout = \"20m\""),
    )
    .unwrap();
    let (status, body) = admin(Method::POST, "/v1/reload", None).await;
    assert_eq!(status, 200, "{body}");

    let expected: BTreeMap<(String, String), usize> = [
        ("login", "failure", 1),
        ("mfa", "success", 2),
        ("logout", "success", 1),
        ("breaker_trip", "success", 1),
        ("session_revoked", "success", 1),
        ("breaker_reset", "success", 1),
        ("config_change", "success", 1),
    ]
    .into_iter()
    .map(|(a, o, n)| ((a.to_string(), o.to_string()), n))
    .collect();
    let total: usize = expected.values().sum();
    let tally = |events: &[Value]| {
        let mut t = BTreeMap::new();
        for e in events {
            let key = (
                e["event.action"].as_str().unwrap_or("?").to_string(),
                e["event.outcome"].as_str().unwrap_or("?").to_string(),
            );
            *t.entry(key).or_insert(0usize) += 1;
        }
        t
    };
    eventually(Duration::from_secs(15), || async {
        (receiver.events().len() >= total).then_some(())
    })
    .await;
    // A moment for any extra or repeated event to show up.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let events = receiver.events();
    assert_eq!(tally(&events), expected, "{events:#?}");
    let ids: BTreeSet<&str> = events.iter().filter_map(|e| e["event.id"].as_str()).collect();
    assert_eq!(ids.len(), events.len(), "an event arrived twice");
    let on_stdout: BTreeSet<String> = expected.keys().flat_map(|(a, _)| stdout_ids(&gw, a)).collect();
    assert_eq!(
        ids,
        on_stdout.iter().map(String::as_str).collect::<BTreeSet<_>>(),
        "the webhook and stdout disagree"
    );
    let trip = events.iter().find(|e| e["event.action"] == "breaker_trip").unwrap();
    assert_eq!(trip["portcullis.target"], "tenant:acme", "{trip}");
    assert_eq!(trip["user.id"], "operator:olivia", "{trip}");
    let revoked = events.iter().find(|e| e["event.action"] == "session_revoked").unwrap();
    assert_eq!(revoked["portcullis.sessions"], 1, "{revoked}");
    // An event of a request names it (`http.request.id`): the refused sign-in's is the id
    // its answer gave, and each event of the public listener has its own.
    let failed = events.iter().find(|e| e["event.action"] == "login").unwrap();
    assert_eq!(failed["http.request.id"], refused_login.as_str(), "{failed}");
    let of_requests: Vec<&str> = events
        .iter()
        .filter(|e| matches!(e["event.action"].as_str(), Some("login" | "mfa" | "logout")))
        .map(|e| {
            e["http.request.id"]
                .as_str()
                .unwrap_or_else(|| panic!("no request id: {e}"))
        })
        .collect();
    let distinct: BTreeSet<&str> = of_requests.iter().copied().collect();
    assert_eq!(distinct.len(), of_requests.len(), "{of_requests:?}");
}

/// Events of the last requests before SIGTERM still reach the webhook: the sinks send
/// what they hold after the drain. If this broke, the events around a restart (often
/// the interesting ones) would be lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_queued_at_shutdown_are_still_sent() {
    let receiver = TestWebhookReceiver::start(false, Duration::ZERO).await;
    let (_ups, mut gw) = start_with(|f| with_siem(f, &format!("webhook = \"{}\"\n", receiver.url))).await;
    let client = gw.client();
    for _ in 0..5 {
        cross_tier_request(&client, &gw).await;
    }
    // Within the batch's 1 s linger: nothing has been sent yet.
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(20)).await.is_some(), "no exit");
    let ids: BTreeSet<String> = receiver
        .events()
        .iter()
        .filter(|e| e["event.action"] == "cross_tier")
        .map(|e| e["event.id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 5, "{:?}", receiver.events());
    assert_eq!(ids, stdout_ids(&gw, "cross_tier"));
}

/// A CA and a server certificate for `localhost`, PEM.
fn syslog_pki() -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Syslog test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

/// A test syslog receiver over TLS on 127.0.0.1: keeps every byte received. With
/// `close_first`, it closes its first connection after the first bytes on it.
async fn test_syslog_tls_receiver(cert_pem: &str, key_pem: &str, close_first: bool) -> (u16, Arc<Mutex<Vec<u8>>>) {
    let chain = vec![CertificateDer::from_pem_slice(cert_pem.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let received = Arc::new(Mutex::new(Vec::new()));
    let sink = received.clone();
    tokio::spawn(async move {
        let mut first = close_first;
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let (acceptor, sink) = (acceptor.clone(), sink.clone());
            let close_after_first_read = std::mem::take(&mut first);
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                while let Ok(n) = tls.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    sink.lock().unwrap().extend_from_slice(&buf[..n]);
                    if close_after_first_read {
                        let _ = tokio::io::AsyncWriteExt::shutdown(&mut tls).await;
                        return;
                    }
                }
            });
        }
    });
    (port, received)
}

/// Splits octet-counted frames (`LEN SP MSG`); panics on a malformed stream.
fn frames(mut data: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let space = data.iter().position(|b| *b == b' ').expect("a frame length");
        let len: usize = std::str::from_utf8(&data[..space])
            .unwrap()
            .parse()
            .expect("a decimal length");
        let end = space + 1 + len;
        if end > data.len() {
            break; // the rest has not arrived yet
        }
        out.push(String::from_utf8(data[space + 1..end].to_vec()).expect("UTF-8 message"));
        data = &data[end..];
    }
    out
}

/// Security events reach a syslog receiver over TLS (trusting the CA given by
/// reference) as octet-counted RFC 5424 messages, and keep coming after the receiver
/// closed the connection. If this broke, a SIEM listening for syslog would get nothing,
/// split messages wrongly, lose events after a receiver restart, or events would cross
/// the network in clear.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn syslog_over_tls_gets_rfc5424_frames() {
    let (ca, cert, key) = syslog_pki();
    let (port, received) = test_syslog_tls_receiver(&cert, &key, true).await;
    let (_ups, gw) = start_with(|f| {
        with_siem(
            f,
            &format!("syslog = \"tls://localhost:{port}\"\nsyslog_ca = \"file:secrets/siem-ca.pem\"\n"),
        );
        f.extra_files.push(("secrets/siem-ca.pem".into(), ca));
    })
    .await;
    let client = gw.client();
    cross_tier_request(&client, &gw).await;
    eventually(Duration::from_secs(15), || async {
        (!received.lock().unwrap().is_empty()).then_some(())
    })
    .await
    .expect("nothing received");
    // The receiver closed that connection: the next events go over a new one.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..2 {
        cross_tier_request(&client, &gw).await;
    }
    let messages = eventually(Duration::from_secs(15), || async {
        let m = frames(&received.lock().unwrap());
        (m.len() >= 3).then_some(m)
    })
    .await
    .unwrap_or_else(|| panic!("no frames: {:?}", String::from_utf8_lossy(&received.lock().unwrap())));
    assert_eq!(messages.len(), 3, "{messages:#?}");
    let ids = stdout_ids(&gw, "cross_tier");
    for m in &messages {
        // <PRI>VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID [SD] BOM MSG
        let parts: Vec<&str> = m.splitn(7, ' ').collect();
        assert_eq!(parts[0], "<84>1", "authpriv.warning: {m}");
        assert!(humantime::parse_rfc3339(parts[1]).is_ok(), "timestamp: {m}");
        assert!(!parts[2].is_empty(), "hostname: {m}");
        assert_eq!(parts[3], "portcullis", "{m}");
        assert_eq!(parts[4], gw.pid().to_string(), "{m}");
        assert_eq!(parts[5], "cross_tier", "{m}");
        let (sd, json) = parts[6].split_once("] \u{feff}").expect("structured data, then a BOM");
        let event: Value = serde_json::from_str(json).expect("the event as JSON");
        let id = event["event.id"].as_str().unwrap();
        assert!(ids.contains(id), "{id} not on stdout");
        assert_eq!(
            sd,
            format!("[portcullis@32473 id=\"{id}\" action=\"cross_tier\" outcome=\"failure\""),
            "{m}"
        );
        assert_eq!(event["organization.id"], "acme", "{event}");
    }
}

/// `portcullis check` on a bad `[siem]`: each problem with file, line and key. If this
/// broke, a typo in the SIEM settings would start a gateway that sends nothing (or in
/// clear), or the operator could not find the line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_siem_settings_are_refused_with_file_line_and_key() {
    let tmp = tempfile::Builder::new().prefix("portcullis-siem-").tempdir().unwrap();
    let dir = tmp.path().join("policy");
    let mut fixture = PolicyFixture::new(
        "http://127.0.0.1:9101",
        "http://127.0.0.1:9102",
        "http://127.0.0.1:9103",
    );
    with_siem(
        &mut fixture,
        "webhook = \"ftp://siem.example/in\"\nwebhook_token = \"env:SIEM_TOKEN_NOT_SET_ANYWHERE\"\nsyslog = \"tcp://siem.example:514\"\nqueue = 5\n",
    );
    fixture.write(&dir);
    let text = std::fs::read_to_string(dir.join("gateway.toml")).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["check", "--config", dir.to_str().unwrap()])
        .env_remove("SIEM_TOKEN_NOT_SET_ANYWHERE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let file = dir.join("gateway.toml");
    for (needle, key) in [
        ("webhook = ", "siem.webhook: "),
        ("webhook_token = ", "siem.webhook_token: "),
        ("syslog = ", "siem.syslog: "),
        ("queue = ", "siem.queue: "),
    ] {
        let expected = format!("{}:{}: {key}", file.display(), line_of(&text, needle));
        assert!(report.contains(&expected), "missing `{expected}` in:\n{report}");
    }
    assert!(report.contains("SIEM_TOKEN_NOT_SET_ANYWHERE"), "{report}");
}

/// The public listener's own events name their request: a staging session cookie on a
/// prod host (`cross_tier`) and a client sending the tier's upstream credential carry the
/// `http.request.id` of that request's access-log line. If this broke, a SIEM could not
/// tie an isolation attempt to the request (and the app's logs, which get the same id).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_of_the_public_listener_name_their_request() {
    let (_ups, gw) = start().await;
    let client = gw.client();
    let path = format!("/public/probe-{}", random_hex(8));
    let r = client
        .get(gw.host_url("acme.test", &path))
        .header("cookie", "__Host-portcullis-staging=not-a-session")
        .send()
        .await
        .unwrap();
    assert!(r.status().as_u16() < 500, "{}", r.status());
    let event = gw.await_security_event("cross_tier", |_| true).await;
    let line = eventually(Duration::from_secs(5), || async {
        gw.access_log().into_iter().find(|l| l["path"] == path.as_str())
    })
    .await
    .expect("the request's access line");
    assert_eq!(event["http.request.id"], line["request_id"], "{event} vs {line}");
    assert!(
        event["http.request.id"].as_str().is_some_and(|id| id.len() >= 16),
        "{event}"
    );
}

/// `portcullis_siem_dropped_total` on the admin listener's `/metrics`.
async fn siem_dropped_total(gw: &Gateway) -> u64 {
    let metrics = gw
        .client()
        .get(gw.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("portcullis_siem_dropped_total "))
        .unwrap_or_else(|| panic!("no portcullis_siem_dropped_total in:\n{metrics}"))
        .trim()
        .parse()
        .unwrap()
}
