//! Header hygiene between client and upstream (SPEC "Request path" 7, "Details").

use crate::harness::*;

/// A client must never be able to assert an identity to the app: if stripping broke, any
/// anonymous caller of a public route could claim to be anyone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_identity_headers_never_reach_the_upstream() {
    let (ups, gw) = start().await;
    let spoofed = [
        "X-Portcullis-User",
        "X-Portcullis-Tenant",
        "X-Portcullis-Roles",
        "Portcullis-Assertion",
        "X-Forwarded-User",
        "X-Auth-Request-Email",
        "Remote-User",
        "X_Forwarded_User",
        "X-Forwarded-Email",
        "X-Forwarded-Groups",
        "X-Auth-Request-User",
        "X-Auth-Request-Groups",
        "X-Auth-Request-Access-Token",
        "X-Remote-User",
        "X-Portcullis-Authenticated",
        "X-Portcullis-Original-Path",
        "portcullis-anything",
        "X-Original-URL",
        "X-Rewrite-URL",
    ];
    let mut req =
        String::from("GET /public/who HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\nX-Benign: kept\r\n");
    for name in spoofed {
        req.push_str(&format!("{name}: admin@evil.example\r\n"));
    }
    // Duplicated and mixed-case spellings too.
    req.push_str("x-forwarded-user: admin@evil.example\r\nX-FORWARDED-USER: admin@evil.example\r\n\r\n");
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 200);
    let got = ups.acme.only();
    for name in spoofed {
        assert!(!got.has_header(name), "{name} reached the upstream: {:?}", got.headers);
    }
    assert!(
        !got.headers.iter().any(|(_, v)| v.contains("evil.example")),
        "a spoofed value reached the upstream: {:?}",
        got.headers
    );
    assert_eq!(got.header("x-benign"), Some("kept"), "ordinary headers must pass");
}

/// From an untrusted peer the client's X-Forwarded-For is replaced by the socket peer;
/// otherwise IP-based rules and logs in the app could be forged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_an_untrusted_peer_are_replaced() {
    let (ups, gw) = start().await;
    let req = "GET /public/xff HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\nX-Forwarded-For: 8.8.8.8\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: globex.test\r\nForwarded: for=8.8.8.8;host=globex.test\r\nX-Real-IP: 8.8.8.8\r\n\r\n";
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 200);
    let got = ups.acme.only();
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(got.header("x-forwarded-host"), Some("acme.test"));
    let fwd = got.header("forwarded").expect("Forwarded header");
    assert!(fwd.contains("for=127.0.0.1"), "Forwarded: {fwd}");
    assert!(
        !fwd.contains("8.8.8.8") && !fwd.contains("globex"),
        "client Forwarded kept: {fwd}"
    );
    assert!(!got.has_header("x-real-ip"));
    assert!(
        !got.headers.iter().any(|(_, v)| v.contains("8.8.8.8")),
        "{:?}",
        got.headers
    );
}

/// From a configured trusted proxy the chain is kept and the peer appended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_from_a_trusted_proxy_are_appended_to() {
    let (ups, gw) = start_with(|f| f.trusted_proxies = vec!["127.0.0.1".into()]).await;
    let req = "GET /public/xff HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\nX-Forwarded-For: 8.8.8.8\r\n\r\n";
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 200);
    let got = ups.acme.only();
    assert_eq!(got.header("x-forwarded-for"), Some("8.8.8.8, 127.0.0.1"));
    assert_eq!(got.header("x-forwarded-proto"), Some("http"));
    assert_eq!(got.header("x-forwarded-host"), Some("acme.test"));
    assert!(got.header("forwarded").expect("Forwarded").contains("for=127.0.0.1"));
}

/// Hop-by-hop headers (and those the client names in Connection) describe the client
/// connection; forwarding them lets a client steer the gateway→upstream connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed() {
    let (ups, gw) = start().await;
    let req = "GET /public/hop HTTP/1.1\r\nHost: acme.test\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Authorization: Basic Zm9vOmJhcg==\r\nProxy-Connection: keep-alive\r\nX-Other: 2\r\n\r\n";
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 200);
    let got = ups.acme.only();
    for name in [
        "x-secret",
        "keep-alive",
        "te",
        "proxy-authorization",
        "proxy-connection",
    ] {
        assert!(!got.has_header(name), "{name} reached the upstream: {:?}", got.headers);
    }
    assert!(
        got.header_all("connection")
            .iter()
            .all(|v| !v.to_ascii_lowercase().contains("x-secret")),
        "{:?}",
        got.headers
    );
    assert_eq!(got.header("x-other"), Some("2"));
}

/// Gateway cookies are the user's session: an app must neither read nor set them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_cookies_are_hidden_from_and_protected_against_the_upstream() {
    let (ups, gw) = start().await;
    let c = gw.client();
    let r = c
        .get(gw.host_url("acme.test", "/public/cookies"))
        .header("cookie", "a=1; __Host-portcullis-prod=x; portcullis-foo=y; b=2")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(ups.acme.only().header("cookie"), Some("a=1; b=2"));
    let r = c
        .get(gw.host_url("acme.test", "/public/cookies2"))
        .header(
            "cookie",
            "__HOST-PORTCULLIS-prod=x;c=3; =portcullis-prod=z;__Host-portcullis-staging-csrf=w",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = ups.acme.requests().pop().unwrap();
    assert_eq!(
        got.header("cookie"),
        Some("c=3"),
        "case and nameless variants of gateway cookies must go too"
    );
    let r = c
        .get(gw.host_url("acme.test", "/public/cookies3"))
        .header("cookie", "__Host-portcullis-prod=only")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        !ups.acme.requests().pop().unwrap().has_header("cookie"),
        "an empty Cookie header was forwarded"
    );

    let r = c
        .get(gw.host_url("acme.test", "/public/setcookie"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let set: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect();
    assert_eq!(
        set,
        vec!["app=1; Path=/".to_string()],
        "an upstream may only set its own cookies"
    );
    for name in ["x-portcullis-user", "portcullis-assertion", "x-internal"] {
        assert!(
            r.headers().get(name).is_none(),
            "{name} from the upstream reached the client"
        );
    }
    assert_eq!(r.headers().get("x-app").map(|v| v.to_str().unwrap()), Some("kept"));
}

/// RES-01: every answer the gateway makes itself (pages, refusals, the JSON API, an
/// upstream that is down) carries the hardening headers, and its body names nothing
/// internal (no upstream address, no version, no backtrace). A foreign Origin gets no
/// CORS grant. If `security_headers` were skipped on a path, or an error echoed its
/// cause, this would fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_answers_are_hardened_and_say_nothing_internal() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let dead_upstream = format!("http://{dead}");
    let (_ups, gw) = start_with(|f| {
        if let Some(t) = f.tenants.iter_mut().find(|t| t.id == "globex") {
            t.upstream = dead_upstream.clone();
        }
    })
    .await;
    let client = gw.client();
    let cases: [(&str, &str, &str, u16); 7] = [
        ("GET", "acme.test", "/.portcullis/login", 200),
        ("GET", "acme.test", "/.portcullis/no-such-page", 404),
        ("GET", "acme.test", "/app/x", 401),
        ("GET", "acme.test", "/.portcullis/api/whoami", 401),
        ("POST", "acme.test", "/.portcullis/api/login", 403),
        ("GET", "unknown.test", "/", 421),
        ("GET", "globex.test", "/public/x", 502),
    ];
    for (method, host, path, status) in cases {
        let r = client
            .request(method.parse().unwrap(), gw.host_url(host, path))
            .header("origin", "https://evil.example")
            .header("content-type", "application/json")
            .body("{")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), status, "{method} {host}{path}");
        let h = r.headers().clone();
        let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
        let what = format!("{method} {host}{path}");
        assert_eq!(get("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(get("referrer-policy"), "no-referrer", "{what}");
        assert_eq!(get("cache-control"), "no-store", "{what}");
        assert!(
            get("content-security-policy").contains("frame-ancestors 'none'"),
            "{what}"
        );
        assert!(h.get("access-control-allow-origin").is_none(), "{what}: CORS granted");
        assert!(
            h.get("access-control-allow-credentials").is_none(),
            "{what}: CORS granted"
        );
        assert!(
            h.get("server").is_none_or(|v| !v.to_str().unwrap_or("").contains('/')),
            "{what}: version"
        );
        let body = r.text().await.unwrap().to_lowercase();
        for leak in [
            dead.to_string().as_str(),
            "127.0.0.1",
            "panicked",
            "backtrace",
            "hyper::",
            "portcullis/0",
            "rustc",
        ] {
            assert!(!body.contains(leak), "{what} says {leak:?}: {body}");
        }
    }
}
