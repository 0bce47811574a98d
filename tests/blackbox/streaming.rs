//! Bodies stream both ways without being buffered whole; size limits apply before any
//! byte is forwarded.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;

use crate::harness::*;

const HUNDRED_MB: u64 = 100 * 1024 * 1024;

/// Samples the gateway's RSS every 50 ms until stopped; returns the peak in KiB.
fn sample_rss(pid: u32, stop: Arc<AtomicBool>) -> tokio::task::JoinHandle<u64> {
    let peak = Arc::new(AtomicU64::new(0));
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                .unwrap_or(0);
            peak.fetch_max(kib, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        peak.load(Ordering::Relaxed)
    })
}

/// 100 MB up and 100 MB down through the gateway with a bounded RSS: if the gateway
/// buffered bodies, its memory would grow by ~100 MB per transfer (and a few concurrent
/// uploads would take it down).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hundred_megabytes_stream_both_ways_in_bounded_memory() {
    let (ups, gw) = start_with(|f| f.tenant_mut("acme").max_body_bytes = Some(2 * HUNDRED_MB)).await;
    let c = gw.client();
    // Warm up (connection pools, allocator) before taking the baseline.
    assert_eq!(
        c.get(gw.host_url("acme.test", "/public/warm"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let baseline = gw.rss_kib();
    assert!(baseline > 0, "cannot read the gateway's RSS");
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = sample_rss(gw.pid(), stop.clone());

    // Upload: a streamed body of unknown length (chunked), 1600 × 64 KiB.
    let chunk = Bytes::from(vec![b'u'; 64 * 1024]);
    let stream = futures_util::stream::iter((0..1600).map(move |_| Ok::<Bytes, std::io::Error>(chunk.clone())));
    let r = c
        .post(gw.host_url("acme.test", "/public/upload"))
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        HUNDRED_MB.to_string(),
        "upstream counted a different number of bytes"
    );

    // Download, read chunk by chunk.
    let mut r = c
        .get(gw.host_url("acme.test", &format!("/public/stream?bytes={HUNDRED_MB}")))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut got: u64 = 0;
    while let Some(chunk) = r.chunk().await.unwrap() {
        got += chunk.len() as u64;
    }
    assert_eq!(got, HUNDRED_MB);

    stop.store(true, Ordering::Relaxed);
    let peak = sampler.await.unwrap();
    let growth_mib = peak.saturating_sub(baseline) / 1024;
    eprintln!("gateway RSS: baseline {baseline} KiB, peak {peak} KiB");
    assert!(
        growth_mib < 60,
        "gateway RSS grew by {growth_mib} MiB (baseline {baseline} KiB, peak {peak} KiB)"
    );
    let up = ups.acme.requests();
    assert_eq!(
        up.iter().find(|r| r.target == "/public/upload").map(|r| r.body_len),
        Some(HUNDRED_MB)
    );
}

/// A declared Content-Length above the limit is refused with 413 before anything is
/// forwarded; a route's own `max_body_bytes` overrides the tenant's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn declared_body_over_the_limit_is_413_and_forwards_nothing() {
    let (ups, gw) = start_with(|f| {
        let acme = f.tenant_mut("acme");
        acme.routes = format!(
            "[[routes]]\nprefix = \"/public/small/\"\naccess = \"public\"\nmax_body_bytes = 1024\n\n{DEFAULT_ROUTES}"
        );
    })
    .await;
    // Default limit (10 MiB): 20 MB declared, no body sent.
    let req = "POST /public/big HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 20000000\r\nConnection: close\r\n\r\n";
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 413);
    // Route limit: 2048 > 1024.
    let body = "x".repeat(2048);
    let req = format!(
        "POST /public/small/x HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 2048\r\nConnection: close\r\n\r\n{body}"
    );
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 413);
    assert_eq!(ups.total(), 0, "an oversized request reached the upstream");

    // Within the limit it passes.
    let body = "x".repeat(512);
    let req = format!(
        "POST /public/small/x HTTP/1.1\r\nHost: acme.test\r\nContent-Length: 512\r\nConnection: close\r\n\r\n{body}"
    );
    let r = raw(gw.public, req.as_bytes()).await;
    assert_eq!(r[0].status, 200);
    assert_eq!(ups.acme.only().body_len, 512);
}

/// A chunked body (no declared length) larger than the limit must never arrive whole at
/// the upstream: the gateway cuts the stream at the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_body_over_the_limit_is_cut_off() {
    let (ups, gw) = start_with(|f| {
        f.tenant_mut("acme").routes = format!(
            "[[routes]]\nprefix = \"/public/small/\"\naccess = \"public\"\nmax_body_bytes = 1024\n\n{DEFAULT_ROUTES}"
        );
    })
    .await;
    let chunk = "y".repeat(1000);
    let mut req = String::from(
        "POST /public/small/up HTTP/1.1\r\nHost: acme.test\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
    );
    for _ in 0..4 {
        req.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    req.push_str("0\r\n\r\n");
    let r = raw_exchange(gw.public, req.as_bytes()).await.unwrap_or_default();
    let statuses: Vec<u16> = parse_responses(&r).iter().map(|r| r.status).collect();
    assert!(
        !statuses.contains(&200),
        "an over-limit chunked body was accepted: {statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    for rec in ups.acme.requests() {
        assert!(
            rec.body_len <= 1024,
            "upstream received {} bytes over a 1024-byte limit",
            rec.body_len
        );
    }
}
