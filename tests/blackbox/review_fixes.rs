//! Defects found in review, each reproduced through the real binary: the admin API's
//! `Authorization` scheme read without regard to case (RFC 9110 §11.1); `Allow` on every
//! 405 (RFC 9110 §15.5.6) of the public listener, tenant pages, tenant API and admin
//! listener; a second proposal of a pending four-eyes change answered with the pending
//! one (API and console); `source.ip` on logout events; and a log line for SIEM events
//! dropped by a sink that is slow but never fails.

use std::time::Duration;

use http::Method;
use serde_json::Value;

use crate::console::Console;
use crate::harness::*;

/// A gateway whose prod tier has the operators `olivia` and `oscar`; their tokens.
async fn with_operators() -> (Upstreams, Gateway, String, String) {
    let (olivia, oscar) = (random_hex(24), random_hex(24));
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![
            ("olivia".into(), sha256_hex(olivia.as_bytes())),
            ("oscar".into(), sha256_hex(oscar.as_bytes())),
        ];
    })
    .await;
    (ups, gw, olivia, oscar)
}

fn plain_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// An admin API call with a raw `Authorization` value; (status, body).
async fn admin_call(
    gw: &Gateway,
    method: Method,
    path: &str,
    authorization: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = plain_client()
        .request(method, gw.admin_url(path))
        .header("authorization", authorization);
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let r = req.send().await.unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
}

// --- 1. Authorization scheme ------------------------------------------------------------

/// If this broke, a client that spells the scheme `bearer` or `BEARER` (RFC 9110 §11.1:
/// the scheme is case-insensitive) would be refused with a valid operator token, or a
/// line without a token or with another scheme would be taken.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_reads_the_bearer_scheme_in_any_case() {
    let (_ups, gw, olivia, _) = with_operators().await;
    for scheme in ["Bearer", "bearer", "BEARER", "bEaReR"] {
        for gap in [" ", "   "] {
            let line = format!("{scheme}{gap}{olivia}");
            let (status, body) = admin_call(&gw, Method::GET, "/v1/breakers", &line, None).await;
            assert_eq!(status, 200, "{line:?}: {body}");
        }
    }
    for bad in [
        "Bearer".to_string(),
        "Bearer ".to_string(),
        "bearer    ".to_string(),
        format!("Bearer{olivia}"),
        format!("Basic {olivia}"),
        format!("Bearer\t{olivia}"),
        format!("Bearer {olivia} extra"),
        olivia.clone(),
    ] {
        let (status, body) = admin_call(&gw, Method::GET, "/v1/breakers", &bad, None).await;
        assert_eq!(status, 401, "{bad:?}: {body}");
    }
}

// --- 2. Allow on 405 ----------------------------------------------------------------

/// The methods an `Allow` header lists, upper-case and sorted.
fn allowed(value: Option<&str>) -> Vec<String> {
    let mut methods: Vec<String> = value
        .unwrap_or_default()
        .split(',')
        .map(|m| m.trim().to_ascii_uppercase())
        .filter(|m| !m.is_empty())
        .collect();
    methods.sort();
    methods
}

/// If this broke, a client refused with 405 on the public listener would not learn which
/// methods work (RFC 9110 §15.5.6: a 405 carries `Allow`), here for the methods the
/// gateway never passes (TRACE, CONNECT), on a page and in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_of_the_public_listener_says_what_is_allowed() {
    let (ups, gw) = start().await;
    let proxied = ["DELETE", "GET", "HEAD", "OPTIONS", "PATCH", "POST", "PUT"];
    for accept in ["application/json", "text/html"] {
        let r = raw(
            gw.public,
            format!("TRACE /anything HTTP/1.1\r\nHost: acme.test\r\nAccept: {accept}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .await;
        assert_eq!(r[0].status, 405, "{accept}");
        assert_eq!(allowed(r[0].header("allow")), proxied, "TRACE, {accept}");
    }
    let r = raw(
        gw.public,
        b"CONNECT acme.test:443 HTTP/1.1\r\nHost: acme.test:443\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r[0].status, 405);
    assert_eq!(allowed(r[0].header("allow")), proxied, "CONNECT");
    assert_eq!(ups.total(), 0, "nothing forwarded");
}

/// If this broke, `PUT /.portcullis/status` (and any method but GET and HEAD) would
/// answer 405 without saying that only GET and HEAD work there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_of_the_status_endpoint_allows_get_and_head() {
    let (_ups, gw) = start().await;
    let client = gw.client();
    for method in [Method::PUT, Method::POST, Method::DELETE, Method::PATCH] {
        let r = client
            .request(method.clone(), gw.host_url("acme.test", "/.portcullis/status"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method}");
        let allow = r.headers().get("allow").and_then(|v| v.to_str().ok());
        assert_eq!(allowed(allow), ["GET", "HEAD"], "{method}");
    }
}

/// If this broke, a tenant page or the tenant JSON API refusing a method would not say
/// which methods the path takes (or a page would claim the path does not exist).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_of_the_tenant_pages_and_api_says_what_is_allowed() {
    let (ups, gw) = start().await;
    let mut agent = Agent::new(&gw, "acme.test");
    let cases: [(Method, &str, &[&str]); 8] = [
        (Method::PUT, "/.portcullis/login", &["GET", "HEAD", "POST"]),
        (Method::POST, "/.portcullis/style.css", &["GET", "HEAD"]),
        (Method::DELETE, "/.portcullis/mfa", &["GET", "HEAD", "POST"]),
        (Method::PUT, "/.portcullis/logout", &["GET", "HEAD", "POST"]),
        (Method::POST, "/.portcullis/callback", &["GET"]),
        (Method::PATCH, "/.portcullis/admin/users", &["GET", "HEAD"]),
        (Method::DELETE, "/.portcullis/api/login", &["POST"]),
        (Method::PUT, "/.portcullis/api/sessions", &["DELETE", "GET"]),
    ];
    for (method, path, expected) in cases {
        for accept in ["text/html", "application/json"] {
            let r = agent.send(method.clone(), path, &[("accept", accept)], None).await;
            assert_eq!(r.status, 405, "{method} {path} ({accept}): {}", r.body);
            assert_eq!(allowed(r.header("allow")), expected, "{method} {path} ({accept})");
        }
    }
    // HEAD is answered wherever GET is (RFC 9110 9.3.2), the assets included.
    for path in [
        "/.portcullis/style.css",
        "/.portcullis/favicon.svg",
        "/.portcullis/login",
    ] {
        let r = agent.send(Method::HEAD, path, &[], None).await;
        assert_eq!(r.status, 200, "HEAD {path}");
    }
    assert_eq!(ups.total(), 0, "nothing forwarded");
}

/// If this broke, the admin API or the console refusing a method would not say which
/// methods the path takes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_405_of_the_admin_listener_says_what_is_allowed() {
    let (_ups, gw, olivia, _) = with_operators().await;
    let bearer = format!("Bearer {olivia}");
    let cases: [(Method, &str, &[&str]); 5] = [
        (Method::PUT, "/v1/breakers", &["GET", "HEAD"]),
        (Method::POST, "/v1/tenants/acme/breaker", &["DELETE", "PUT"]),
        (Method::DELETE, "/v1/changes", &["GET", "HEAD", "POST"]),
        (Method::PUT, "/console/breakers", &["GET", "HEAD"]),
        (Method::GET, "/console/breakers/trip", &["POST"]),
    ];
    for (method, path, expected) in cases {
        let r = plain_client()
            .request(method.clone(), gw.admin_url(path))
            .header("authorization", &bearer)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 405, "{method} {path}");
        let allow = r.headers().get("allow").and_then(|v| v.to_str().ok());
        assert_eq!(allowed(allow), expected, "{method} {path}");
    }
}

// --- 3. One pending change per identical proposal -------------------------------------

/// The pending changes of the caller's tier.
async fn pending(gw: &Gateway, token: &str) -> Vec<Value> {
    let (status, all) = admin_call(gw, Method::GET, "/v1/changes", &format!("Bearer {token}"), None).await;
    assert_eq!(status, 200, "{all}");
    all.as_array()
        .unwrap()
        .iter()
        .filter(|c| c["status"] == "pending")
        .cloned()
        .collect()
}

/// If this broke, proposing the same change twice (a double click, a retried script,
/// a second operator) would leave two pending changes for one reset, and approving one
/// would leave the other to apply again later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposing_a_pending_change_again_answers_the_pending_one() {
    let (_ups, gw, olivia, oscar) = with_operators().await;
    let (by_olivia, by_oscar) = (format!("Bearer {olivia}"), format!("Bearer {oscar}"));
    let reset = serde_json::json!({"kind": "tenant.breaker_reset", "target": "acme", "reason": "all clear"});
    let (status, first) = admin_call(&gw, Method::POST, "/v1/changes", &by_olivia, Some(&reset)).await;
    assert_eq!(status, 201, "{first}");
    let id = first["id"].as_str().unwrap().to_string();

    let again = serde_json::json!({"kind": "tenant.breaker_reset", "target": "acme", "reason": "clicked twice"});
    for token in [&by_olivia, &by_oscar] {
        let (status, second) = admin_call(&gw, Method::POST, "/v1/changes", token, Some(&again)).await;
        assert_eq!(status, 200, "{second}");
        assert_eq!(second["id"], id.as_str(), "{second}");
        assert_eq!(second["status"], "pending");
        assert_eq!(second["digest"], first["digest"], "the pending change, unchanged");
    }
    assert_eq!(pending(&gw, &olivia).await.len(), 1);

    // Another target, or another content of the same kind, is another change.
    let globex = serde_json::json!({"kind": "tenant.breaker_reset", "target": "globex", "reason": "all clear"});
    let (status, other) = admin_call(&gw, Method::POST, "/v1/changes", &by_olivia, Some(&globex)).await;
    assert_eq!(status, 201, "{other}");
    for hosts in [["acme.test", "acme2.test"], ["acme.test", "acme3.test"]] {
        let update = serde_json::json!({"kind": "tenant.update", "target": "acme", "change": {"hosts": hosts}, "reason": "hosts"});
        let (status, body) = admin_call(&gw, Method::POST, "/v1/changes", &by_olivia, Some(&update)).await;
        assert_eq!(status, 201, "{body}");
    }
    assert_eq!(pending(&gw, &olivia).await.len(), 4);

    // Once the first is decided, the same proposal opens a new change.
    let (status, body) = admin_call(
        &gw,
        Method::POST,
        &format!("/v1/changes/{id}/reject"),
        &by_oscar,
        Some(&serde_json::json!({"reason": "not yet"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, third) = admin_call(&gw, Method::POST, "/v1/changes", &by_olivia, Some(&reset)).await;
    assert_eq!(status, 201, "{third}");
    assert_ne!(third["id"], id.as_str());
}

/// If this broke, pressing "Propose reset" twice in the console would create two pending
/// changes for one reset, or the second press would not show the pending one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposing_a_reset_twice_in_the_console_shows_the_pending_one() {
    let (_ups, gw, olivia, _) = with_operators().await;
    let (status, body) = admin_call(
        &gw,
        Method::PUT,
        "/v1/tenants/acme/breaker",
        &format!("Bearer {olivia}"),
        Some(&serde_json::json!({"reason": "drill"})),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut console = Console::new(&gw);
    console.sign_in(&olivia).await;
    let csrf = console.csrf().await;
    let mut locations = Vec::new();
    for _ in 0..2 {
        let r = console
            .post(
                "/console/breakers/reset",
                &[("csrf", &csrf), ("scope", "tenant:acme"), ("reason", "all clear")],
            )
            .await;
        assert_eq!(r.status, 303, "{}", r.body);
        locations.push(r.location().to_string());
    }
    let open = pending(&gw, &olivia).await;
    assert_eq!(open.len(), 1, "{open:?}");
    let id = open[0]["id"].as_str().unwrap();
    assert_eq!(locations[0], "/console/changes?done=proposed");
    assert_eq!(
        locations[1],
        format!("/console/changes?done=already_pending#change-{id}")
    );
    let page = console.get(&locations[1]).await.body;
    assert!(page.contains("already waiting for approval"), "{page}");
    assert!(page.contains(&format!("id=\"change-{id}\"")), "{page}");
}

// --- 4. source.ip on logout events ----------------------------------------------------

/// If this broke, a SIEM could not tell where a sign-out came from: the logout event
/// would lack `source.ip` (the client's address, from a trusted proxy's
/// `X-Forwarded-For` where one forwards), `user.id` or `organization.id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn logout_events_name_the_client_address_and_the_user() {
    let (_ups, gw) = start_with(|f| f.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let accounts = Accounts::open(&gw).await;
    let lee = accounts.create("acme", "lee", &[], true).await;

    let mut api = Agent::new(&gw, "acme.test");
    api.api_login(&lee).await;
    let r = api
        .send(
            Method::POST,
            "/.portcullis/api/logout",
            &[("x-forwarded-for", "203.0.113.7")],
            Some(("application/json", b"{}".to_vec())),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let event = gw
        .await_security_event("logout", |e| e["source.ip"] == "203.0.113.7")
        .await;
    assert_eq!(event["event.outcome"], "success");
    assert_eq!(event["user.id"], "lee");
    assert_eq!(event["organization.id"], "acme");
    assert_eq!(event["portcullis.tier"], "prod");

    // The page's sign-out, straight from the client (no proxy header).
    let mut page = Agent::new(&gw, "acme.test");
    page.api_login(&lee).await;
    let form = page.get("/.portcullis/logout").await;
    let marker = "name=\"csrf\" value=\"";
    let start = form.body.find(marker).expect("csrf field") + marker.len();
    let csrf = form.body[start..start + form.body[start..].find('"').unwrap()].to_string();
    let r = page.post_form("/.portcullis/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let event = gw
        .await_security_event("logout", |e| e["source.ip"] == "127.0.0.1")
        .await;
    assert_eq!(event["user.id"], "lee");
    assert_eq!(event["organization.id"], "acme");
    let without_ip: Vec<Value> = gw
        .security_events("logout")
        .into_iter()
        .filter(|e| e.get("source.ip").is_none_or(Value::is_null))
        .collect();
    assert!(without_ip.is_empty(), "{without_ip:?}");
}

// --- 5. SIEM drops of a slow sink -------------------------------------------------------

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// A webhook receiver that accepts every POST, each only after `delay`; counts them.
async fn slow_receiver(delay: Duration) -> (String, Arc<AtomicUsize>) {
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/ingest", listener.local_addr().unwrap());
    let posts = Arc::new(AtomicUsize::new(0));
    let counted = posts.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let counted = counted.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let counted = counted.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        tokio::time::sleep(delay).await;
                        counted.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(bytes::Bytes::from_static(
                            b"ok",
                        ))))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, posts)
}

/// If this broke, a SIEM receiver that answers every batch but too slowly would lose
/// events to the full queue with no line in the gateway's log (only a metric would
/// count them): the operator would never learn the SIEM has gaps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_but_working_siem_sink_logs_its_drops() {
    let (url, posts) = slow_receiver(Duration::from_millis(1500)).await;
    let (_ups, gw) = start_with(|f| {
        f.limits.push((
            "shutdown_grace".into(),
            format!("\"30s\"\n\n[siem]\nwebhook = \"{url}\"\nqueue = 10\n"),
        ));
    })
    .await;
    let client = gw.client();
    for _ in 0..200 {
        let r = client
            .get(gw.host_url("acme.test", "/"))
            .header("cookie", "__Host-portcullis-staging=not-a-session")
            .send()
            .await
            .unwrap();
        assert!(r.status().as_u16() < 500);
    }
    let line = eventually(Duration::from_secs(15), || async {
        gw.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|v| v.to_string().contains("SIEM events dropped"))
    })
    .await
    .unwrap_or_else(|| panic!("no drop line:\n{}", gw.logs()));
    assert_eq!(line["level"], "WARN", "{line}");
    let dropped = line["fields"]["dropped"]
        .as_u64()
        .or_else(|| line["dropped"].as_u64())
        .unwrap_or_else(|| panic!("no dropped count: {line}"));
    assert!(dropped > 0, "{line}");
    assert!(!gw.logs().contains("SIEM delivery failing"), "the sink never failed");
    assert!(posts.load(Ordering::SeqCst) >= 1);
}
