//! The admin listener's connection limits: a trickled request head and a silent
//! keep-alive connection are closed after their timeouts, and beyond the connection cap
//! new connections are closed at once while the operators' own get through again as
//! soon as a slot frees. Without them, one client could take the operator API and
//! console away during an incident.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::*;

/// Sends a keep-alive `GET /healthz` and reads its whole answer, leaving the connection
/// open; the status.
async fn healthz_keep_alive(stream: &mut TcpStream) -> u16 {
    match try_healthz_keep_alive(stream).await {
        Ok(status) => status,
        Err(read) => panic!("closed before answering: {read:?}"),
    }
}

/// [`healthz_keep_alive`], or what was read when the connection closed first.
async fn try_healthz_keep_alive(stream: &mut TcpStream) -> Result<u16, String> {
    let mut out = Vec::new();
    if stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\n\r\n")
        .await
        .is_err()
    {
        return Err(String::new());
    }
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(5), stream.read(&mut buf))
            .await
            .expect("an answer within 5 s")
            .unwrap_or(0);
        if n == 0 {
            return Err(String::from_utf8_lossy(&out).into_owned());
        }
        out.extend_from_slice(&buf[..n]);
        if let Some(resp) = parse_responses(&out).first()
            && resp.body == b"ok"
        {
            return Ok(resp.status);
        }
    }
}

/// A keep-alive connection to the admin listener that was answered, so it holds a slot.
/// The harness's own readiness check held a slot too, and its connection may take a
/// moment to be given back after its answer: until then, a new one is refused.
async fn slot_holder(gw: &Gateway) -> TcpStream {
    eventually(Duration::from_secs(5), || async {
        let mut stream = TcpStream::connect(gw.admin).await.ok()?;
        (try_healthz_keep_alive(&mut stream).await == Ok(200)).then_some(stream)
    })
    .await
    .expect("an admin connection answered within 5 s")
}

fn limit(key: &str, value: &str) -> (String, String) {
    (key.to_string(), value.to_string())
}

/// Slowloris on the admin port: a head that never completes is cut off after the
/// header-read timeout (not at once, and not only at the much longer idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_incomplete_request_head_is_cut_off() {
    let (_ups, gw) = start_with(|f| {
        f.limits.push(limit("header_read_timeout", "\"2s\""));
        f.limits.push(limit("idle_timeout", "\"60s\""));
    })
    .await;
    let mut s = TcpStream::connect(gw.admin).await.unwrap();
    s.write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nX-A: 1\r\n")
        .await
        .unwrap();
    let (data, after) = read_until_closed(&mut s, Duration::from_secs(20))
        .await
        .expect("a half-sent head still open 20 s later");
    assert!(
        after >= Duration::from_millis(1900),
        "closed before the timeout: {after:?}"
    );
    assert!(after < Duration::from_secs(8), "closed only after {after:?}");
    assert!(
        parse_responses(&data).is_empty(),
        "a half-sent head was answered: {:?}",
        String::from_utf8_lossy(&data)
    );
    assert_eq!(raw_get(gw.admin, "admin", "/healthz").await.status, 200);
}

/// A keep-alive connection that goes silent after its answer is closed after the idle
/// timeout, and not before (keep-alive still works, and the header-read timeout does
/// not apply between requests).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed() {
    let (_ups, gw) = start_with(|f| {
        f.limits.push(limit("header_read_timeout", "\"1s\""));
        f.limits.push(limit("idle_timeout", "\"4s\""));
    })
    .await;
    let mut s = TcpStream::connect(gw.admin).await.unwrap();
    assert_eq!(healthz_keep_alive(&mut s).await, 200);
    // Still open and serving well past the header-read timeout.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(healthz_keep_alive(&mut s).await, 200);
    let (data, after) = read_until_closed(&mut s, Duration::from_secs(20))
        .await
        .expect("an idle keep-alive connection still open 20 s later");
    assert!(
        data.is_empty(),
        "unexpected bytes: {:?}",
        String::from_utf8_lossy(&data)
    );
    assert!(
        after >= Duration::from_millis(3900),
        "closed before the idle timeout: {after:?}"
    );
    assert!(after < Duration::from_secs(10), "closed only after {after:?}");
}

/// With the cap reached, a new connection is closed at once without an answer (and one
/// warn line reports the refusals, not one line each); once a held connection closes,
/// `/healthz` answers again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_the_cap_new_connections_are_closed_until_a_slot_frees() {
    let (_ups, gw) = start_with(|f| f.limits.push(limit("admin_max_connections", "2"))).await;
    // Answered: both were accepted and hold their slots.
    let first = slot_holder(&gw).await;
    let mut second = slot_holder(&gw).await;

    for attempt in 0..3 {
        let mut refused = TcpStream::connect(gw.admin).await.unwrap();
        let _ = refused
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n")
            .await;
        let (data, after) = read_until_closed(&mut refused, Duration::from_secs(5))
            .await
            .expect("a connection beyond the cap still open 5 s later");
        assert!(
            data.is_empty(),
            "attempt {attempt}: answered beyond the cap: {:?}",
            String::from_utf8_lossy(&data)
        );
        assert!(
            after < Duration::from_secs(2),
            "attempt {attempt}: closed only after {after:?}"
        );
    }
    let warned = eventually(Duration::from_secs(5), || async {
        let lines: Vec<serde_json::Value> = gw
            .stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| {
                v["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("admin listener at its connection cap"))
            })
            .collect();
        (!lines.is_empty()).then_some(lines)
    })
    .await
    .unwrap_or_else(|| panic!("no warn line for the refusals:\n{}", gw.logs()));
    assert_eq!(warned.len(), 1, "one line per interval, not per refusal: {warned:#?}");
    assert_eq!(warned[0]["level"], "WARN", "{warned:#?}");
    assert_eq!(warned[0]["refused"], 1, "{warned:#?}");

    drop(first);
    let answered = eventually(Duration::from_secs(5), || async {
        let data = raw_exchange(
            gw.admin,
            b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
        )
        .await
        .ok()?;
        parse_responses(&data).first().map(|r| r.status).filter(|s| *s == 200)
    })
    .await;
    assert_eq!(answered, Some(200), "no slot freed:\n{}", gw.logs());
    // The connection still held was never disturbed.
    assert_eq!(healthz_keep_alive(&mut second).await, 200);
}
