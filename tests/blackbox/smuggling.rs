//! HTTP/1.1 framing and request smuggling (SECURITY-CASES 10) and header limits (11).

use std::time::Duration;

use crate::harness::*;

/// Asserts no upstream request ever carried a protected path or more than `max` requests.
pub(crate) async fn assert_no_smuggled(ups: &Upstreams, max: usize) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let all: Vec<Recorded> = [&ups.acme, &ups.globex, &ups.initech]
        .iter()
        .flat_map(|u| u.requests())
        .collect();
    assert!(all.len() <= max, "upstream saw {} requests: {all:#?}", all.len());
    for r in &all {
        assert!(
            !r.target.contains("admin"),
            "smuggled request reached the upstream: {r:#?}"
        );
        assert!(r.body_len == 0, "upstream got a body it should not have: {r:#?}");
    }
}

/// CL.TE and TE.CL: either refused, or read by Transfer-Encoding only, so the embedded
/// `GET /admin` is parsed (and refused) by the gateway, never hidden in a body upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_cannot_smuggle() {
    let (ups, gw) = start().await;
    let smuggled = "GET /admin/x HTTP/1.1\r\nHost: acme.test\r\n\r\n";
    for (first, second) in [
        ("Content-Length: 6", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 6"),
    ] {
        let req =
            format!("POST /public/x HTTP/1.1\r\nHost: acme.test\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\n{smuggled}");
        let resp = raw(gw.public, req.as_bytes()).await;
        let statuses: Vec<u16> = resp.iter().map(|r| r.status).collect();
        if statuses[0] != 400 {
            // TE-only processing: the second request is the gateway's to judge (401).
            assert_eq!(statuses[0], 200, "{first} / {second}: {statuses:?}");
            assert!(
                statuses.get(1).is_none_or(|s| *s == 401),
                "{first} / {second}: {statuses:?}"
            );
        }
        assert_no_smuggled(&ups, 2).await;
    }
    assert!(ups.acme.requests().iter().all(|r| r.target == "/public/x"));
}

/// Conflicting or malformed Content-Length values are refused outright.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conflicting_content_lengths_are_400() {
    let (ups, gw) = start().await;
    for cl in [
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 5, 6",
        "Content-Length: +5",
        "Content-Length: -1",
        "Content-Length: 0x5",
        "Content-Length: 18446744073709551616",
    ] {
        let req = format!("POST /public/x HTTP/1.1\r\nHost: acme.test\r\n{cl}\r\n\r\nhello!");
        let resp = raw(gw.public, req.as_bytes()).await;
        assert_eq!(resp[0].status, 400, "{cl:?}");
    }
    assert_no_smuggled(&ups, 0).await;
}

/// Unknown or non-final chunked codings: refused (400 or 501), never forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_transfer_encodings_are_refused() {
    let (ups, gw) = start().await;
    for te in [
        "Transfer-Encoding: xchunked",
        "Transfer-Encoding: chunked, gzip",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding : chunked",
    ] {
        let req = format!("POST /public/x HTTP/1.1\r\nHost: acme.test\r\n{te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        let resp = raw(gw.public, req.as_bytes()).await;
        assert!(matches!(resp[0].status, 400 | 501), "{te:?}: {}", resp[0].status);
    }
    // Transfer-Encoding on HTTP/1.0 is refused too.
    let resp = raw(
        gw.public,
        b"POST /public/x HTTP/1.0\r\nHost: acme.test\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(resp[0].status, 400);
    assert_no_smuggled(&ups, 0).await;
}

/// Header syntax that parsers disagree on: obs-fold, whitespace before the colon, a space
/// inside a name, bare LF line ends, NUL in a value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_header_syntax_is_400() {
    let (ups, gw) = start().await;
    let cases: [&[u8]; 5] = [
        b"GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n",
        b"GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-A : 1\r\n\r\n",
        b"GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX A: 1\r\n\r\n",
        b"GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-A: a\x00b\r\n\r\n",
        b"GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-A: a\rb\r\n\r\n",
    ];
    for req in cases {
        let resp = raw(gw.public, req).await;
        assert_eq!(resp[0].status, 400, "{:?}", String::from_utf8_lossy(req));
    }
    assert_no_smuggled(&ups, 0).await;
}

/// Oversized heads are refused with 431 before anything is forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_headers_are_431() {
    let (ups, gw) = start().await;
    let big = format!(
        "GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let resp = raw(gw.public, big.as_bytes()).await;
    assert_eq!(resp[0].status, 431, "100 KB header");

    let mut many = String::from("GET /public/x HTTP/1.1\r\nHost: acme.test\r\n");
    for i in 0..200 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let resp = raw(gw.public, many.as_bytes()).await;
    assert_eq!(resp[0].status, 431, "200 headers");
    assert_eq!(ups.total(), 0);
}

/// An `Upgrade: h2c` request must not open a raw tunnel to the upstream (h2c smuggling):
/// it is served as a plain request and the Upgrade is not forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_upgrade_is_not_tunnelled() {
    let (ups, gw) = start().await;
    let req = "GET /public/x HTTP/1.1\r\nHost: acme.test\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAAP__\r\nConnection: Upgrade, HTTP2-Settings\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n";
    let resp = raw(gw.public, req.as_bytes()).await;
    assert_ne!(resp[0].status, 101);
    let got = ups.acme.requests();
    assert!(got.len() <= 1, "{got:#?}");
    for r in &got {
        assert!(!r.has_header("upgrade") && !r.has_header("http2-settings"), "{r:#?}");
        assert!(!r.target.contains("admin"));
    }
    if let Some(second) = resp.get(1) {
        assert_eq!(
            second.status, 401,
            "the pipelined request must be judged by the gateway"
        );
    }
}

/// SMUG-05's bare LF in the head (RFC 9112 §2.2: a recipient MAY take a single LF as a
/// line end; hyper does, with no switch to refuse it). What matters for smuggling is that
/// the gateway reads such a head exactly as its CRLF spelling: the same headers, the
/// same framing refusals, nothing hidden from it that the upstream could read, and the
/// head the upstream gets is written anew with CRLF by the gateway's client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bare_lf_head_is_read_as_its_crlf_spelling() {
    let (ups, gw) = start().await;
    let resp = raw(
        gw.public,
        b"GET /public/x HTTP/1.1\nHost: acme.test\nX-A: 1\nConnection: close\n\n",
    )
    .await;
    assert_eq!(resp[0].status, 200);
    let seen = ups.acme.requests();
    assert_eq!(seen.len(), 1, "{seen:#?}");
    assert_eq!(seen[0].header_all("x-a"), ["1"], "{seen:#?}");

    // Framing is judged the same whichever line ends spell it, a Transfer-Encoding that
    // only a bare-LF reading finds included: refused, or read by Transfer-Encoding only,
    // so the embedded `GET /admin` is the gateway's to judge (401), never hidden in a
    // body upstream.
    let smuggled = "GET /admin/x HTTP/1.1\r\nHost: acme.test\r\n\r\n";
    for head in [
        "POST /public/x HTTP/1.1\nHost: acme.test\nContent-Length: 6\nTransfer-Encoding: chunked\n\n",
        "POST /public/x HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 6\r\nX-A: 1\nTransfer-Encoding: chunked\r\n\r\n",
    ] {
        let req = format!("{head}0\r\n\r\n{smuggled}");
        let statuses: Vec<u16> = raw(gw.public, req.as_bytes()).await.iter().map(|r| r.status).collect();
        if statuses[0] != 400 {
            assert_eq!(statuses[0], 200, "{head:?}: {statuses:?}");
            assert!(statuses.get(1).is_none_or(|s| *s == 401), "{head:?}: {statuses:?}");
        }
    }
    let resp = raw(
        gw.public,
        b"POST /public/x HTTP/1.1\nHost: acme.test\nContent-Length: 5\nContent-Length: 6\n\nhello!",
    )
    .await;
    assert_eq!(resp[0].status, 400, "duplicate Content-Length with bare LF");
    assert_no_smuggled(&ups, 3).await;
    assert!(ups.acme.requests().iter().all(|r| r.target == "/public/x"));
}
