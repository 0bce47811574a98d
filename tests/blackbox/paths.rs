//! Path normalisation and route protection through the binary (SECURITY-CASES 9, PATH-*).
//! Raw TCP: HTTP client libraries would normalise these paths before sending them.

use crate::harness::*;

/// Every spelling that could reach `/admin/` (roles) or the reserved prefix through a
/// public route must be refused or sent to login: if normalisation or the
/// alternate-reading check broke, one of these would be forwarded as a public request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traversal_and_encoding_tricks_never_reach_the_upstream() {
    let (ups, gw) = start().await;
    let cases = [
        "/public/../admin",
        "/public/../admin/x",
        "/public/%2e%2e/admin",
        "/public/.%2e/admin",
        "/public//../admin",
        "/./admin",
        "/PUBLIC/../admin",
        "/admin?x=/public",
        "/admin?/public/",
        "/Public/x",
        "/public/%2E%2E/admin/x",
        "/public/%2e%2e%2fadmin",
        "/public/..%2fadmin/x",
        "/public/..%5cadmin",
        "/public/..\\admin",
        "/public/..;/admin",
        "/public/.;/../admin",
        "/admin;/public",
        "/admin;x/secret",
        "//admin",
        "//admin/x",
        "/%2Fadmin",
        "/public%00/../admin",
        "/public/%00/admin",
        "/public/%c0%ae%c0%ae/admin",
        "/public/%C0%AE%C0%AE/admin",
        "/.PORTCULLIS/api/x",
        "/%2eportcullis/api/x",
        "/.portcullis%2fapi/x",
        "/.portcullis;/api/x",
        "/public/../.portcullis/api/x",
    ];
    for path in cases {
        let r = raw_get(gw.public, "acme.test", path).await;
        assert!(
            matches!(r.status, 302 | 400 | 401 | 404),
            "{path}: status {} (must be refused or need login)",
            r.status
        );
        assert_eq!(ups.total(), 0, "{path} reached an upstream: {:#?}", ups.acme.requests());
    }
}

/// What is authorised is what is forwarded: dot segments are resolved and unreserved
/// escapes decoded before the upstream sees the path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_receives_the_canonical_path() {
    let (ups, gw) = start().await;
    let cases = [
        ("/public/a/../b", "/public/b"),
        ("/public/%7Euser", "/public/~user"),
        ("/public/./x//y", "/public/x/y"),
        ("/public/%41%62c", "/public/Abc"),
        ("/public/q?x=%2e%2e&y=1", "/public/q?x=%2e%2e&y=1"),
    ];
    for (sent, expected) in cases {
        let r = raw_get(gw.public, "acme.test", sent).await;
        assert_eq!(r.status, 200, "{sent}");
        let got = ups.acme.requests().pop().expect("forwarded");
        assert_eq!(got.target, expected, "sent {sent}");
    }
    assert_eq!(ups.acme.count(), cases.len());
}

/// PATH-05: for encoded variants under the public prefix, the path the upstream receives
/// stays under `/public/` and is already canonical (sending it again reaches the upstream
/// byte-identical), or the request was refused and nothing was forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_paths_are_canonical_and_stay_under_the_authorised_prefix() {
    let (ups, gw) = start().await;
    let variants = [
        "/public/x",
        "/public/x/",
        "/public/%78",
        "/public/%2e/x",
        "/public/.%2E/public/x",
        "/public/x%2fy",
        "/public/x%2Fy",
        "/public/x%5cy",
        "/public/x%252e%252e/y",
        "/public/%252e%252e%252fadmin",
        "/public/x;y",
        "/public/x;y=1/z",
        "/public/%3b",
        "/public/%7e",
        "/public/a%20b",
        "/public/%E2%82%AC",
        "/public/a/./b/../c",
        "/public/%2E",
        "/public/%2E%2E",
        "/public/a%2F..%2F..%2Fadmin",
        "/public/%u002e",
        "/public/%",
        "/public/%zz",
        "/public/%C0%80",
        "/public/%ED%A0%80",
        "/public/%F0%9F%98%80",
        "/public/a:b",
        "/public/@x",
        "/public/a*b",
        "/public/'\"",
        "/public/a%00b",
        "/public/%7f",
        "/public/%c2%85",
        "/public/x%3F",
        "/public/x%23y",
        "/public////x",
        "/public/./././x",
        "/public/..",
        "/public/../public/x",
        "/public/a/..%2F",
        "/public/%2e%2e%2f",
        "/public/a%2e%2e",
        "/public/...",
        "/public/.../x",
        "/public/.a",
        "/public/a.",
        "/public/~",
        "/public/%41",
        "/public/A%42C",
        "/public/x?y=/../admin",
    ];
    for sent in variants {
        let before = ups.acme.count();
        let r = raw_get(gw.public, "acme.test", sent).await;
        let after = ups.acme.requests();
        if r.status != 200 {
            assert!(matches!(r.status, 400 | 401 | 404), "{sent}: {}", r.status);
            assert_eq!(
                after.len(),
                before,
                "{sent} was refused ({}) but still forwarded",
                r.status
            );
            continue;
        }
        assert_eq!(after.len(), before + 1, "{sent}");
        let received = after.last().unwrap().target.clone();
        let path = received.split('?').next().unwrap_or_default().to_string();
        assert!(
            path.starts_with("/public/") || path == "/public",
            "{sent} reached the upstream as {received}"
        );
        let again = raw_get(gw.public, "acme.test", &received).await;
        assert_eq!(again.status, 200, "{sent} → {received} is refused when sent as is");
        assert_eq!(
            ups.acme.requests().last().unwrap().target,
            received,
            "{sent} → {received} is not canonical"
        );
    }
    assert_eq!(ups.globex.count() + ups.initech.count(), 0);
}

/// No session on a protected route: 401 for API clients, 302 to login for browsers,
/// with the target in `rd`. If this broke, protected routes would be open or unusable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protected_routes_need_a_session() {
    let (ups, gw) = start().await;
    let r = raw_get(gw.public, "acme.test", "/admin/x").await;
    assert_eq!(r.status, 401);
    let r = raw_get(gw.public, "acme.test", "/anything").await;
    assert_eq!(r.status, 401, "`/` is authenticated in the fixture");

    let req = "GET /admin/x HTTP/1.1\r\nHost: acme.test\r\nAccept: text/html,application/xhtml+xml\r\nConnection: close\r\n\r\n";
    let r = raw(gw.public, req.as_bytes()).await.remove(0);
    assert_eq!(r.status, 302);
    assert_eq!(r.header("location"), Some("/.portcullis/login?rd=%2Fadmin%2Fx"));

    // HEAD and OPTIONS need auth like GET (PATH-06); a method override header is ignored.
    for method in ["HEAD", "OPTIONS", "POST", "DELETE"] {
        let req =
            format!("{method} /admin/x HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        let r = raw(gw.public, req.as_bytes()).await.remove(0);
        assert_eq!(r.status, 401, "{method}");
    }
    let req =
        "GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-HTTP-Method-Override: DELETE\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw.public, req.as_bytes()).await[0].status, 200);
    assert!(!ups.acme.only().has_header("x-http-method-override"));
    // A `_method` parameter is only a query: no other method is decided on (PATH-06).
    let req = "GET /app/x?_method=DELETE HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw.public, req.as_bytes()).await[0].status, 401);
    let req =
        "POST /public/x?_method=GET HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 0\r\nConnection: close\r\n\r\n";
    assert_eq!(raw(gw.public, req.as_bytes()).await[0].status, 200);
    let forwarded = ups.acme.requests();
    assert_eq!(forwarded.len(), 2, "the 401 forwarded nothing");
    assert_eq!(forwarded[1].method, "POST", "forwarded with its own method");
    assert_eq!(ups.globex.count() + ups.initech.count(), 0);
}

/// TRACE (and CONNECT) are never proxied: TRACE echoes headers (cookies) back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trace_is_405() {
    let (ups, gw) = start().await;
    let r = raw(
        gw.public,
        b"TRACE /public/x HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r[0].status, 405);
    assert_eq!(ups.total(), 0);
}

/// The reserved prefix is served by the gateway, never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_prefix_is_never_forwarded() {
    let (ups, gw) = start().await;
    let r = raw_get(gw.public, "acme.test", "/.portcullis/status").await;
    assert_eq!(r.status, 200);
    let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(v["tenant"], "acme");
    assert_eq!(v["tier"], "prod");
    let r = raw_get(gw.public, "acme.test", "/.portcullis/api/nothing").await;
    assert_eq!(r.status, 404);
    assert_eq!(ups.total(), 0);
}

/// Routes of the case tests: an upper-case prefix and a protected rule nested in a public
/// one, the shapes the audit reached through other spellings.
const CASE_ROUTES: &str = r#"[[routes]]
prefix = "/public/"
access = "public"

[[routes]]
prefix = "/public/admin/"
roles = ["admin"]

[[routes]]
prefix = "/Reports/"
roles = ["admin"]

[[routes]]
prefix = "/admin/"
roles = ["admin"]

[[routes]]
prefix = "/"
access = "authenticated"
"#;

/// Letter case, `;` / `%3B` parameters and encoded separators must not carry a request
/// past a route rule: a backend that ignores case or decodes them would serve the
/// protected path. If this failed, the upstream would record one of these requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_spellings_of_a_protected_prefix_are_not_forwarded() {
    let (ups, gw) = start_with(|f| f.tenant_mut("acme").routes = CASE_ROUTES.into()).await;
    let accounts = Accounts::open(&gw).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let mut agent = Agent::new(&gw, "acme.test");
    agent.api_login(&bob).await;
    let cookie = agent.cookie_header().unwrap();
    let signed_in =
        |path: &str| format!("GET {path} HTTP/1.1\r\nHost: acme.test\r\nCookie: {cookie}\r\nConnection: close\r\n\r\n");

    // The role-less user: 403 on every spelling of `/Reports/`, 403 or 400 on `%3B`.
    for path in ["/Reports/q3", "/reports/q3", "/REPORTS/q3", "/rePorts/q3"] {
        let r = raw(gw.public, signed_in(path).as_bytes()).await.remove(0);
        assert_eq!(r.status, 403, "{path}");
    }
    for path in ["/admin%3Bx/y", "/ADMIN%3bx/y", "/public%3Bx/admin/x"] {
        let r = raw(gw.public, signed_in(path).as_bytes()).await.remove(0);
        assert!(matches!(r.status, 400 | 403), "{path}: {}", r.status);
    }
    // Anonymous: the nested admin rule in every spelling needs a session or is refused.
    for path in [
        "/public/admin/x",
        "/public/ADMIN/x",
        "/public/ADMIN;x/y",
        "/public/ADMIN%2Fx",
        "/public/Admin%5Cx",
        "/public/admin%3Bx/y",
        "/public/./ADMIN/x",
    ] {
        let r = raw_get(gw.public, "acme.test", path).await;
        assert!(matches!(r.status, 400 | 401), "{path}: {}", r.status);
    }
    assert_eq!(ups.total(), 0, "forwarded: {:#?}", ups.acme.requests());

    // The rules still let through what they allow, exactly as sent.
    let r = raw(gw.public, signed_in("/app/x").as_bytes()).await.remove(0);
    assert_eq!(r.status, 200);
    assert_eq!(raw_get(gw.public, "acme.test", "/public/x").await.status, 200);
    let targets: Vec<String> = ups.acme.requests().into_iter().map(|r| r.target).collect();
    assert_eq!(targets, ["/app/x", "/public/x"]);
}
