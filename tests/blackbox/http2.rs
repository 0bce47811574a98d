//! HTTP/2 on the public listener (h2c prior knowledge on a plaintext listener).

use crate::harness::*;

pub(crate) fn h2_client(gw: &Gateway) -> reqwest::Client {
    gw.client_builder().http2_prior_knowledge().build().unwrap()
}

/// HTTP/2 clients must be served and routed by `:authority`; if h2 broke, modern
/// clients would fail, and if routing ignored `:authority` they would hit the wrong tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_requests_are_routed_by_authority() {
    let (ups, gw) = start().await;
    let c = h2_client(&gw);
    let r = c.get(gw.host_url("acme.test", "/public/h2")).send().await.unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let r = c.get(gw.host_url("globex.test", "/public/h2g")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let a = ups.acme.only();
    assert_eq!(a.target, "/public/h2");
    assert_eq!(
        a.version,
        http::Version::HTTP_11,
        "upstreams are spoken to over HTTP/1.1"
    );
    assert_eq!(
        a.header("host")
            .map(|h| h.split(':').next().unwrap_or_default().to_ascii_lowercase()),
        Some("acme.test".into())
    );
    assert_eq!(ups.globex.only().target, "/public/h2g");
    let r = c.get(gw.host_url("unknown.test", "/public/x")).send().await.unwrap();
    assert_eq!(r.status(), 421);
    assert_eq!(ups.total(), 2);
}

/// A `Host` header that disagrees with `:authority` is ambiguous: 400, nothing forwarded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_host_disagreeing_with_authority_is_400() {
    let (ups, gw) = start().await;
    let c = h2_client(&gw);
    let r = c
        .get(gw.host_url("acme.test", "/public/x"))
        .header("host", "globex.test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(ups.total(), 0);
}

/// An HTTP/2 header block over the limit is refused and forwards nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_oversized_header_block_is_refused() {
    let (ups, gw) = start().await;
    let r = h2_client(&gw)
        .get(gw.host_url("acme.test", "/public/big"))
        .header("x-big", "a".repeat(100 * 1024))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status(), 431);
    }
    assert_eq!(ups.total(), 0, "an oversized HTTP/2 header block was forwarded");
    let r = h2_client(&gw)
        .get(gw.host_url("acme.test", "/public/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// Header hygiene and route policy apply to HTTP/2 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_requests_get_the_same_checks() {
    let (ups, gw) = start().await;
    let c = h2_client(&gw);
    let r = c.get(gw.host_url("acme.test", "/admin/x")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = c
        .get(gw.host_url("acme.test", "/public/x"))
        .header("x-portcullis-user", "admin")
        .header("x-forwarded-for", "8.8.8.8")
        .header("cookie", "a=1")
        .header("cookie", "__Host-portcullis-prod=x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let got = ups.acme.only();
    assert!(!got.has_header("x-portcullis-user"));
    assert_eq!(got.header("x-forwarded-for"), Some("127.0.0.1"));
    assert_eq!(got.header("cookie"), Some("a=1"));
}

// --- raw HTTP/2 frames, for floods a well-behaved client library cannot send ---

pub(crate) const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
pub(crate) const HEADERS: u8 = 0x1;
pub(crate) const RST_STREAM: u8 = 0x3;
pub(crate) const SETTINGS: u8 = 0x4;
pub(crate) const GOAWAY: u8 = 0x7;
pub(crate) const CONTINUATION: u8 = 0x9;
pub(crate) const END_STREAM: u8 = 0x1;
pub(crate) const END_HEADERS: u8 = 0x4;
pub(crate) const ENHANCE_YOUR_CALM: u32 = 0xb;
pub(crate) const PROTOCOL_ERROR: u32 = 0x1;

pub(crate) fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK for `GET http://<authority><path>` using only static-table names and
/// literals without indexing (no Huffman), so every block decodes on its own.
pub(crate) fn hpack_get(authority: &str, path: &str) -> Vec<u8> {
    let mut b = vec![0x82, 0x86]; // :method GET, :scheme http
    b.push(0x04); // :path, literal without indexing
    b.push(path.len() as u8);
    b.extend_from_slice(path.as_bytes());
    b.push(0x01); // :authority, literal without indexing
    b.push(authority.len() as u8);
    b.extend_from_slice(authority.as_bytes());
    b
}

/// Writes `frames` on a fresh h2c connection (after the preface and SETTINGS) while
/// reading; returns the error code of the first GOAWAY, or None when the server sent
/// none within 10 s.
pub(crate) async fn goaway_after(gw: &Gateway, frames: Vec<u8>) -> Option<u32> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(PREFACE).await;
        let _ = wr.write_all(&frame(SETTINGS, 0, 0, &[])).await;
        for piece in frames.chunks(64 * 1024) {
            if wr.write_all(piece).await.is_err() {
                break;
            }
        }
        tokio::time::sleep(std::time::Duration::from_secs(15)).await;
        drop(wr);
    });
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let result = loop {
        // Parse complete frames.
        let mut found = None;
        while buf.len() >= 9 {
            let len = (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            if buf[3] == GOAWAY && len >= 8 {
                found = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
            }
            buf.drain(..9 + len);
        }
        if found.is_some() {
            break found;
        }
        match tokio::time::timeout_at(deadline, rd.read(&mut chunk)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break None,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
        }
    };
    writer.abort();
    result
}

/// HTTP/2 Rapid Reset (CVE-2023-44487): HEADERS + RST_STREAM pairs must end in a GOAWAY,
/// and the gateway keeps serving others. Without the cap one client burns the CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_gets_goaway() {
    let (ups, gw) = start().await;
    let block = hpack_get("acme.test", "/public/rr");
    let mut frames = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        frames.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let code = goaway_after(&gw, frames).await;
    assert!(
        matches!(code, Some(ENHANCE_YOUR_CALM | PROTOCOL_ERROR)),
        "no GOAWAY for a rapid-reset flood: {code:?}"
    );
    assert!(ups.acme.count() < 20_000, "every reset stream was still forwarded");
    let r = h2_client(&gw)
        .get(gw.host_url("acme.test", "/public/after"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the gateway stopped serving after the flood");
}

/// CONTINUATION flood (CVE-2024-27316): endless CONTINUATION frames after a HEADERS
/// without END_HEADERS must end in a GOAWAY, not an ever-growing header block.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_continuation_flood_gets_goaway() {
    let (ups, gw) = start().await;
    let baseline = gw.rss_kib();
    let mut frames = frame(HEADERS, END_STREAM, 1, &hpack_get("acme.test", "/public/cf"));
    let filler = [0x40u8, 1, b'x', 100]; // start of a literal header; the value never ends
    frames.extend(frame(CONTINUATION, 0, 1, &filler));
    for _ in 0..100_000 {
        frames.extend(frame(CONTINUATION, 0, 1, &[]));
    }
    let code = goaway_after(&gw, frames).await;
    assert_eq!(code, Some(ENHANCE_YOUR_CALM), "no GOAWAY for a CONTINUATION flood");
    let growth_mib = gw.rss_kib().saturating_sub(baseline) / 1024;
    assert!(growth_mib < 10, "RSS grew by {growth_mib} MiB");
    assert_eq!(ups.total(), 0);
}
