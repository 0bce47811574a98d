//! Graceful shutdown on SIGTERM: in-flight requests finish, new connections are refused,
//! exit code 0.

use std::time::{Duration, Instant};

use crate::harness::*;

/// If draining broke, every deploy would cut in-flight requests (uploads, checkouts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests_and_exits_zero() {
    let (ups, mut gw) = start().await;
    let c = gw.client();
    let url = gw.host_url("acme.test", "/public/slow?ms=2000");
    let started = Instant::now();
    let slow = tokio::spawn(async move {
        let r = c.get(url).send().await?;
        let status = r.status();
        let body = r.text().await?;
        Ok::<_, reqwest::Error>((status, body))
    });
    ups.acme.wait_for(1).await;
    gw.signal("TERM");

    // New connections are refused while the slow request is still running.
    let refused = eventually(Duration::from_millis(1500), || async {
        match tokio::net::TcpStream::connect(gw.public).await {
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
            _ => None,
        }
    })
    .await;
    assert!(
        refused.is_some(),
        "the public listener still accepts connections after SIGTERM"
    );
    assert!(!slow.is_finished(), "the slow request ended before its time");

    let (status, body) = slow.await.unwrap().expect("in-flight request was cut off");
    assert_eq!(status, 200);
    assert!(body.contains("/public/slow"), "{body}");
    assert!(started.elapsed() >= Duration::from_millis(1900));

    let exit = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .expect("gateway did not exit within 10 s of draining");
    assert_eq!(exit.code(), Some(0), "exit status {exit}");
}
