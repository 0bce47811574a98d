//! Slow clients (SECURITY-CASES DOS-04): a head that never completes and a stalled body
//! are cut off by the configured timeouts, and other clients keep being served.

use std::time::Duration;

use tokio::io::AsyncWriteExt;

use crate::harness::*;

/// Slowloris: without a header-read timeout, idle half-sent heads would pile up until
/// the gateway runs out of connections.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_request_head_is_cut_off() {
    let (ups, gw) = start_with(|f| f.limits.push(("header_read_timeout".into(), "\"1s\"".into()))).await;
    let mut s = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    assert_trickled_head_is_cut_off(&mut s).await;
    assert_eq!(raw_get(gw.public, "acme.test", "/public/ok").await.status, 200);
    assert_eq!(ups.acme.only().target, "/public/ok");
}

/// A body that stops arriving is cut off by the idle timeout; the upstream never gets a
/// complete request out of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_body_is_cut_off() {
    let (ups, gw) = start_with(|f| f.limits.push(("idle_timeout".into(), "\"1s\"".into()))).await;
    let mut s = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    s.write_all(b"POST /public/stall HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 100\r\n\r\n0123456789")
        .await
        .unwrap();
    let closed = read_until_closed(&mut s, Duration::from_secs(15)).await;
    let (_, after) = closed.expect("connection with a stalled body still open 15 s later");
    assert!(after < Duration::from_secs(8), "closed only after {after:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in ups.acme.requests() {
        assert!(r.body_len < 100, "the upstream got a complete body: {r:#?}");
    }
}
