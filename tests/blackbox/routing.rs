//! Host → tenant routing (SPEC "Request path" 2 and "Details that tests rely on").

use crate::harness::*;

/// If host routing broke, one tenant's traffic would reach another tenant's app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_host_reaches_only_its_own_tenants_upstream() {
    let (ups, gw) = start().await;
    let c = gw.client();
    for (host, path) in [
        ("acme.test", "/public/a"),
        ("globex.test", "/public/g"),
        ("initech.test", "/public/i"),
    ] {
        let r = c.get(gw.host_url(host, path)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}{path}");
    }
    assert_eq!(ups.acme.only().target, "/public/a");
    assert_eq!(ups.globex.only().target, "/public/g");
    assert_eq!(ups.initech.only().target, "/public/i");
}

/// Host matching must ignore case and port; otherwise `ACME.test:1234` would be refused
/// (or, worse, matched to another tenant).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_matching_ignores_case_and_port() {
    let (ups, gw) = start().await;
    let r = raw_get(gw.public, "ACME.test:1234", "/public/case").await;
    assert_eq!(r.status, 200);
    let r = raw_get(gw.public, "Globex.TEST", "/public/case2").await;
    assert_eq!(r.status, 200);
    assert_eq!(ups.acme.only().target, "/public/case");
    assert_eq!(ups.globex.only().target, "/public/case2");
    // A trailing dot is either the same tenant or refused, never another tenant (TEN-05).
    let r = raw_get(gw.public, "acme.test.", "/public/dot").await;
    assert!(r.status == 200 || r.status == 400, "trailing dot: {}", r.status);
    // Trailing whitespace is optional whitespace around the field value, never part of
    // a host name: the same tenant or refused (CVE-2019-18802).
    for host in ["acme.test ", "acme.test\t", "acme.test \t "] {
        let r = raw_get(gw.public, host, "/public/space").await;
        assert!(r.status == 200 || r.status == 400, "{host:?}: {}", r.status);
    }
    assert_eq!(ups.globex.count(), 1);
    assert_eq!(ups.initech.count(), 0);
}

/// Unknown host: 421 and nothing forwarded anywhere; the body must not list tenants.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_host_is_421_and_forwards_nothing() {
    let (ups, gw) = start().await;
    let r = raw_get(gw.public, "unknown.test", "/public/x").await;
    assert_eq!(r.status, 421);
    let body = String::from_utf8_lossy(&r.body);
    assert!(
        !body.contains("acme") && !body.contains("globex"),
        "421 body leaks tenants: {body}"
    );
    for host in [
        "acme.test.evil",
        "xacme.test",
        "acme.test evil",
        "127.0.0.1",
        "acme.test@globex.test",
        "globex.test@acme.test",
        "acme.test:80:80",
        "[::1]",
    ] {
        let r = raw_get(gw.public, host, "/public/x").await;
        assert!(r.status == 421 || r.status == 400, "{host:?}: {}", r.status);
    }
    // HDR-08: the gateway's own pages never answer for a foreign host.
    let r = raw_get(gw.public, "evil.example", "/.portcullis/login?rd=%2F").await;
    assert_eq!(r.status, 421);
    assert!(r.header("location").is_none());
    assert_eq!(ups.total(), 0, "an upstream saw a request for an unknown host");
}

/// Two Host headers (even two identical ones) are ambiguous: 400, nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_host_headers_are_400() {
    let (ups, gw) = start().await;
    for hosts in [["acme.test", "globex.test"], ["acme.test", "acme.test"]] {
        let req = format!(
            "GET /public/x HTTP/1.1\r\nHost: {}\r\nHost: {}\r\nConnection: close\r\n\r\n",
            hosts[0], hosts[1]
        );
        let r = raw(gw.public, req.as_bytes()).await;
        assert_eq!(r[0].status, 400, "{hosts:?}");
    }
    let r = raw(gw.public, b"GET /public/x HTTP/1.1\r\nConnection: close\r\n\r\n").await;
    assert_eq!(r[0].status, 400, "a request without Host must be refused");
    assert_eq!(ups.total(), 0);
}

/// An absolute-form target whose host disagrees with Host must be refused: the gateway
/// would route by one and a backend might trust the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absolute_form_target_must_agree_with_host() {
    let (ups, gw) = start().await;
    let r = raw(
        gw.public,
        b"GET http://globex.test/public/x HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r[0].status, 400);
    assert_eq!(ups.total(), 0, "a disagreeing absolute-form request was forwarded");

    let r = raw(
        gw.public,
        b"GET http://acme.test/public/abs HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(r[0].status, 200, "an agreeing absolute-form request is valid HTTP/1.1");
    assert_eq!(ups.acme.only().target, "/public/abs");
}
