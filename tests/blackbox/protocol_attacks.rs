//! Protocol-level attacks that the framing and HTTP/2 tests in `smuggling.rs` and
//! `http2.rs` do not reach (SECURITY-CASES 10 and 11): malformed chunked framing,
//! `Expect: 100-continue` without authentication, the framing variants the SMUG rows
//! name, what happens to a connection after CL.TE or a refused upgrade, oversized request
//! lines and bodies on the gateway's own endpoints, and HTTP/2 floods (HPACK bomb,
//! PING / SETTINGS / empty DATA, zero window, rapid reset beside a bystander).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::harness::*;
use crate::http2::{
    END_HEADERS, END_STREAM, ENHANCE_YOUR_CALM, GOAWAY, HEADERS, PREFACE, PROTOCOL_ERROR, RST_STREAM, SETTINGS, frame,
    goaway_after, h2_client, hpack_get,
};
use crate::smuggling::assert_no_smuggled;

/// A request the tests hide after or inside a body: if it ever reaches an upstream, the
/// gateway parsed body bytes as a request.
const SMUGGLED: &str =
    "GET /public/smuggled HTTP/1.1\r\nHost: acme.test\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: acme.test\r\n\r\n";

/// Streaming a chunked body means the upstream may get the head (and the first good
/// chunks) of a request whose framing breaks later; it then sees that request aborted,
/// never completed, and never a request hidden behind it.
fn assert_only_aborted(ups: &Upstreams, target: &str, attempts: usize) {
    let got = ups.acme.requests();
    assert!(got.len() <= attempts, "{got:#?}");
    for r in &got {
        assert!(r.target == target && r.body_len <= 5, "{r:#?}");
    }
}

/// No upstream ever received the request hidden in [`SMUGGLED`] or any `/admin` path.
async fn assert_smuggled_never_forwarded(ups: &Upstreams) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    for r in [&ups.acme, &ups.globex, &ups.initech].iter().flat_map(|u| u.requests()) {
        assert!(
            !r.target.contains("smuggled") && !r.target.contains("admin"),
            "body bytes were parsed as a request and forwarded: {r:#?}"
        );
    }
}

/// What a client that writes its body slowly saw.
struct SlowExchange {
    /// Every byte the server sent.
    answer: Vec<u8>,
    /// Bytes of the body written when the first byte of the answer arrived (or the
    /// server closed the connection without one).
    body_sent_at_answer: usize,
    /// The server closed the connection (EOF or reset) within the deadline.
    closed: bool,
}

/// Writes `head`, then `body` in `piece`-byte pieces `pause` apart while reading, so the
/// test can tell how much of the body the gateway took before it answered.
async fn send_slowly(
    addr: std::net::SocketAddr,
    head: &[u8],
    body: &[u8],
    piece: usize,
    pause: Duration,
) -> SlowExchange {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let counter = sent.clone();
    let (head, body) = (head.to_vec(), body.to_vec());
    let writer = tokio::spawn(async move {
        if wr.write_all(&head).await.is_err() {
            return;
        }
        for p in body.chunks(piece) {
            tokio::time::sleep(pause).await;
            if wr.write_all(p).await.is_err() {
                return;
            }
            counter.fetch_add(p.len(), Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_secs(20)).await;
        drop(wr);
    });
    let mut answer = Vec::new();
    let mut body_sent_at_answer = None;
    let mut closed = false;
    let mut buf = vec![0u8; 16 * 1024];
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let wait = if answer.is_empty() {
            deadline.saturating_duration_since(Instant::now())
        } else {
            Duration::from_millis(1500)
        };
        match tokio::time::timeout(wait, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                closed = true;
                body_sent_at_answer.get_or_insert(sent.load(Ordering::SeqCst));
                break;
            }
            Ok(Ok(n)) => {
                body_sent_at_answer.get_or_insert(sent.load(Ordering::SeqCst));
                answer.extend_from_slice(&buf[..n]);
            }
            Err(_) => break,
        }
    }
    writer.abort();
    SlowExchange {
        answer,
        body_sent_at_answer: body_sent_at_answer.unwrap_or(usize::MAX),
        closed,
    }
}

// --- SMUG-06: chunked framing ---

/// Chunk sizes that overflow, are negative or carry a radix prefix, and chunk data without
/// its CRLF (CVE-2021-32714): a parser that reads them some other way than the gateway
/// would take the request hidden behind them as a second request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_chunks_are_400_and_hide_nothing() {
    let (ups, gw) = start().await;
    for (what, body) in [
        (
            "overflowing size",
            format!("fffffffffffffffff1\r\n{}\r\n0\r\n\r\n", "a".repeat(17)),
        ),
        ("negative size", "-1\r\nab\r\n0\r\n\r\n".to_string()),
        ("0x prefix", format!("0x10\r\n{}\r\n0\r\n\r\n", "a".repeat(16))),
        ("data without its CRLF", "5\r\nhelloXX0\r\n\r\n".to_string()),
    ] {
        let req = format!(
            "POST /public/chunks HTTP/1.1\r\nHost: acme.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}{SMUGGLED}"
        );
        let resp = raw(gw.public, req.as_bytes()).await;
        let statuses: Vec<u16> = resp.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400], "{what}: {statuses:?}");
    }
    assert_smuggled_never_forwarded(&ups).await;
    assert_only_aborted(&ups, "/public/chunks", 4);
}

/// A 1 MB chunk extension, and thousands of `;a=b` (CVE-2023-39326): refused after a
/// bounded read. Without the limit the gateway would read, and hold, all of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_chunk_extensions_are_refused_before_the_end() {
    let (ups, gw) = start().await;
    let head = b"POST /public/chunks HTTP/1.1\r\nHost: acme.test\r\nTransfer-Encoding: chunked\r\n\r\n";
    let one_long = format!("5;a={}\r\nhello\r\n0\r\n\r\n", "b".repeat(1024 * 1024));
    let many_short = format!("5{}\r\nhello\r\n0\r\n\r\n", ";a=b".repeat(256 * 1024));
    for (what, body) in [("1 MB extension", one_long), ("262,144 `;a=b`", many_short)] {
        let x = send_slowly(gw.public, head, body.as_bytes(), 16 * 1024, Duration::from_millis(20)).await;
        let statuses: Vec<u16> = parse_responses(&x.answer).iter().map(|r| r.status).collect();
        eprintln!("{what}: answered after {} body bytes", x.body_sent_at_answer);
        assert_eq!(statuses, [400], "{what}: {statuses:?}");
        assert!(x.closed, "{what}: the connection stayed open after the refusal");
        assert!(
            x.body_sent_at_answer < 256 * 1024,
            "{what}: answered only after {} of {} body bytes",
            x.body_sent_at_answer,
            body.len()
        );
    }
    assert_smuggled_never_forwarded(&ups).await;
    assert_only_aborted(&ups, "/public/chunks", 2);
}

// --- SMUG-10: Expect: 100-continue ---

/// `Expect: 100-continue` with a 10 MB body on a protected route and no session: the
/// refusal comes without a `100 Continue`, and whatever the client sends next is the
/// refused request's body, never a new request (the gateway closes instead of guessing
/// where the body ends).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_continue_without_a_session_never_turns_the_body_into_a_request() {
    let (ups, gw) = start().await;
    let head =
        "POST /admin/upload HTTP/1.1\r\nHost: acme.test\r\nExpect: 100-continue\r\nContent-Length: 10485760\r\n\r\n";
    // A client that waits for the answer before sending the body, as the RFC asks.
    let stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let (mut rd, mut wr) = stream.into_split();
    wr.write_all(head.as_bytes()).await.unwrap();
    let mut first = Vec::new();
    let mut buf = vec![0u8; 16 * 1024];
    while !first.windows(4).any(|w| w == b"\r\n\r\n") {
        match tokio::time::timeout(Duration::from_secs(5), rd.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => first.extend_from_slice(&buf[..n]),
            other => panic!("no answer to the head: {other:?}"),
        }
    }
    let answers = parse_responses(&first);
    assert!(
        answers.first().is_some_and(|r| r.status == 401),
        "{:?}",
        String::from_utf8_lossy(&first)
    );
    // The "body": what a desynchronised parser would read as two more requests.
    let _ = wr.write_all(SMUGGLED.as_bytes()).await;
    let mut rest = Vec::new();
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(3), rd.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => rest.extend_from_slice(&buf[..n]),
            Err(_) => break false,
        }
    };
    let all = [first.as_slice(), rest.as_slice()].concat();
    let statuses: Vec<u16> = parse_responses(&all).iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401], "the body was answered as requests");
    assert!(closed || rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    // A client that sends the body at once (after its own 100-continue timeout).
    let resp = raw(gw.public, format!("{head}{SMUGGLED}").as_bytes()).await;
    let statuses: Vec<u16> = resp.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [401], "the body was answered as requests");
    assert_smuggled_never_forwarded(&ups).await;
    assert_eq!(ups.total(), 0, "a refused request was forwarded");
}

// --- SMUG-03 / 04 / 05: the framing variants the rows name ---

/// Content-Length values other parsers read as a number (`5.0` by a float parser, `٥` by a
/// Unicode digit parser): refused, so no two readings of the body's end exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_lengths_only_a_lenient_parser_reads_are_400() {
    let (ups, gw) = start().await;
    for cl in ["5.0".as_bytes(), "\u{0665}".as_bytes(), b"5 5", b"\x0b5"] {
        let mut req = b"POST /public/x HTTP/1.1\r\nHost: acme.test\r\nContent-Length: ".to_vec();
        req.extend_from_slice(cl);
        req.extend_from_slice(b"\r\n\r\nhello");
        req.extend_from_slice(SMUGGLED.as_bytes());
        let resp = raw(gw.public, &req).await;
        let statuses: Vec<u16> = resp.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400], "{:?}", String::from_utf8_lossy(cl));
    }
    assert_no_smuggled(&ups, 0).await;
}

/// `chunked` applied twice and a vertical tab before the coding: refused (400 or 501),
/// never forwarded. A header name in odd case is still Transfer-Encoding, and honoured as
/// such: the body ends where its chunks say, and what follows is a request of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doubled_or_disguised_chunked_codings_are_refused() {
    let (ups, gw) = start().await;
    for te in [
        b"Transfer-Encoding: chunked, chunked".as_slice(),
        b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        b"Transfer-Encoding:\x0bchunked",
        b"Transfer-Encoding: \x0bchunked",
    ] {
        let mut req = b"POST /public/x HTTP/1.1\r\nHost: acme.test\r\n".to_vec();
        req.extend_from_slice(te);
        req.extend_from_slice(b"\r\n\r\n5\r\nhello\r\n0\r\n\r\n");
        req.extend_from_slice(SMUGGLED.as_bytes());
        let resp = raw(gw.public, &req).await;
        let statuses: Vec<u16> = resp.iter().map(|r| r.status).collect();
        assert!(
            matches!(statuses.as_slice(), [400] | [501]),
            "{:?}: {statuses:?}",
            String::from_utf8_lossy(te)
        );
    }
    assert_no_smuggled(&ups, 0).await;

    let req = "POST /public/te HTTP/1.1\r\nHost: acme.test\r\ntRANSFER-ENCODING: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET /public/after HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n";
    let statuses: Vec<u16> = raw(gw.public, req.as_bytes()).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses, [200, 200]);
    let got = ups.acme.wait_for(2).await;
    let seen: Vec<(&str, u64)> = got.iter().map(|r| (r.target.as_str(), r.body_len)).collect();
    assert_eq!(seen, [("/public/te", 5), ("/public/after", 0)]);
}

/// Bare LF line endings in the chunked framing: a front end that splits lines only on
/// CRLF would see one chunk line where the gateway sees two. (Bare LF in the head is
/// accepted: hyper follows RFC 9112 §2.2's "MAY recognize a single LF" and has no switch
/// for it; the head is re-framed with CRLF before it is forwarded. See SECURITY.md.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bare_lf_in_chunk_lines_is_400() {
    let (ups, gw) = start().await;
    for body in [
        "5\nhello\r\n0\r\n\r\n",
        "5\r\nhello\n0\r\n\r\n",
        "5\r\nhello\r\n0\n\r\n",
    ] {
        let req =
            format!("POST /public/x HTTP/1.1\r\nHost: acme.test\r\nTransfer-Encoding: chunked\r\n\r\n{body}{SMUGGLED}");
        let statuses: Vec<u16> = raw(gw.public, req.as_bytes()).await.iter().map(|r| r.status).collect();
        assert_eq!(statuses, [400], "{body:?}");
    }
    assert_smuggled_never_forwarded(&ups).await;
    assert_only_aborted(&ups, "/public/x", 3);
}

// --- DOS-03: HTTP/2 HPACK bomb, control-frame floods, zero window ---

const DATA: u8 = 0x0;
const PING: u8 = 0x6;
const SETTINGS_INITIAL_WINDOW_SIZE: u16 = 0x4;

/// A frame the gateway sent.
#[derive(Debug)]
struct ServerFrame {
    kind: u8,
    stream: u32,
    payload: Vec<u8>,
}

/// What the next read of a raw HTTP/2 connection gave.
#[derive(Debug)]
enum Seen {
    Frame(ServerFrame),
    /// EOF or a reset: the gateway closed the connection.
    Closed,
    /// Nothing before the deadline.
    Silent,
}

/// The read half of a raw h2c connection, split into frames.
struct FrameReader {
    rd: tokio::net::tcp::OwnedReadHalf,
    buf: Vec<u8>,
}

impl FrameReader {
    async fn next(&mut self, deadline: Instant) -> Seen {
        loop {
            if self.buf.len() >= 9 {
                let len = (usize::from(self.buf[0]) << 16) | (usize::from(self.buf[1]) << 8) | usize::from(self.buf[2]);
                if self.buf.len() >= 9 + len {
                    let head: Vec<u8> = self.buf.drain(..9 + len).collect();
                    return Seen::Frame(ServerFrame {
                        kind: head[3],
                        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
                        payload: head[9..].to_vec(),
                    });
                }
            }
            let mut chunk = vec![0u8; 64 * 1024];
            match tokio::time::timeout_at(deadline.into(), self.rd.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return Seen::Closed,
                Ok(Ok(n)) => self.buf.extend_from_slice(&chunk[..n]),
                Err(_) => return Seen::Silent,
            }
        }
    }
}

/// Opens an h2c connection with the preface and a SETTINGS frame of `settings`.
async fn h2_open(gw: &Gateway, settings: &[(u16, u32)]) -> (FrameReader, tokio::net::tcp::OwnedWriteHalf) {
    let stream = tokio::net::TcpStream::connect(gw.public).await.unwrap();
    let (rd, mut wr) = stream.into_split();
    let mut payload = Vec::new();
    for (id, value) in settings {
        payload.extend_from_slice(&id.to_be_bytes());
        payload.extend_from_slice(&value.to_be_bytes());
    }
    wr.write_all(PREFACE).await.unwrap();
    wr.write_all(&frame(SETTINGS, 0, 0, &payload)).await.unwrap();
    (FrameReader { rd, buf: Vec::new() }, wr)
}

/// An HPACK integer with an `n`-bit prefix (RFC 7541 §5.1), `flags` in the high bits.
fn hpack_int(n: u32, flags: u8, mut value: usize) -> Vec<u8> {
    let max = (1usize << n) - 1;
    if value < max {
        return vec![flags | value as u8];
    }
    let mut out = vec![flags | max as u8];
    value -= max;
    while value >= 128 {
        out.push((value % 128) as u8 | 0x80);
        value /= 128;
    }
    out.push(value as u8);
    out
}

/// The `:status` of a response header block when it is the first field, as h2 encodes it:
/// an indexed static entry (200 … 500) or a literal with the `:status` name (index 8).
fn first_status(block: &[u8]) -> Option<String> {
    let statuses = ["200", "204", "206", "304", "400", "404", "500"];
    match *block.first()? {
        b @ 0x88..=0x8e => Some(statuses[usize::from(b - 0x88)].to_string()),
        0x48 | 0x08 | 0x18 => {
            let len = usize::from(*block.get(1)? & 0x7f);
            let value = block.get(2..2 + len)?;
            // "431" is 3 bytes raw; h2 may send it Huffman-coded (0x69 0x90 0xff).
            Some(if *block.get(1)? & 0x80 != 0 && value == [0x69, 0x90, 0xff] {
                "431".to_string()
            } else {
                String::from_utf8_lossy(value).into_owned()
            })
        }
        _ => None,
    }
}

/// Five requests of another client, each answered 200 within 3 s, while an attack runs.
async fn a_parallel_client_is_served(gw: &Gateway, what: &str) {
    let c = h2_client(gw);
    for i in 0..5 {
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(3),
            c.get(gw.host_url("acme.test", &format!("/public/bystander{i}"))).send(),
        )
        .await;
        let status = r.map(|r| r.map(|r| r.status().as_u16()));
        assert!(
            matches!(status, Ok(Ok(200))),
            "{what}: a parallel client got {status:?} after {:?}",
            started.elapsed()
        );
    }
}

/// HPACK bomb (CVE-2016-6581): a 4 KB header enters the dynamic table, then one header
/// block refers to it 10,000 times (40 MB decoded from 14 KB sent). The stream is
/// refused once the decoded list passes the advertised max header list size, nothing is
/// forwarded, memory stays flat and other clients are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_hpack_bomb_is_refused_with_memory_bounded() {
    let (ups, gw) = start().await;
    let baseline = gw.rss_kib();
    let mut block = hpack_get("acme.test", "/public/bomb");
    // Literal with incremental indexing, new name: becomes dynamic entry 62.
    block.push(0x40);
    block.extend(hpack_int(7, 0, 6));
    block.extend_from_slice(b"x-bomb");
    block.extend(hpack_int(7, 0, 4000));
    block.extend(std::iter::repeat_n(b'v', 4000));
    block.extend(std::iter::repeat_n(0x80 | 62, 10_000));
    let (mut rd, mut wr) = h2_open(&gw, &[]).await;
    wr.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 1, &block))
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let refusal = loop {
        match rd.next(deadline).await {
            Seen::Frame(f) if f.kind == HEADERS && f.stream == 1 => {
                let status = first_status(&f.payload);
                assert!(
                    status.as_deref().is_some_and(|s| s.starts_with('4')),
                    "the bomb was answered {status:?}: {:02x?}",
                    &f.payload[..f.payload.len().min(16)]
                );
                break format!("HEADERS {status:?}");
            }
            Seen::Frame(f) if f.kind == RST_STREAM && f.stream == 1 => break "RST_STREAM".to_string(),
            Seen::Frame(f) if f.kind == GOAWAY => {
                // Anything but h2's abuse limit (e.g. COMPRESSION_ERROR) would mean this
                // block was not the bomb it is meant to be.
                let code = f
                    .payload
                    .get(4..8)
                    .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
                assert_eq!(code, Some(ENHANCE_YOUR_CALM), "GOAWAY for the bomb");
                break "GOAWAY ENHANCE_YOUR_CALM".to_string();
            }
            Seen::Frame(_) => continue,
            Seen::Closed => break "closed".to_string(),
            Seen::Silent => panic!("no answer to the HPACK bomb within 10 s"),
        }
    };
    eprintln!("HPACK bomb: {refusal}");
    let growth_mib = gw.rss_kib().saturating_sub(baseline) / 1024;
    assert!(growth_mib < 10, "RSS grew by {growth_mib} MiB");
    a_parallel_client_is_served(&gw, "HPACK bomb").await;
    assert!(
        ups.acme.requests().iter().all(|r| r.target != "/public/bomb"),
        "the bomb was forwarded"
    );
}

/// How a flood ended.
#[derive(Debug)]
struct Flooded {
    /// When the gateway cut the connection (a write failed); None if it never did in 20 s.
    cut: Option<Duration>,
    /// Bytes of flood written.
    written: usize,
    /// The error code of a GOAWAY the gateway sent, read after the cut.
    goaway: Option<u32>,
}

/// Writes `unit` over and over after `prelude` on a fresh h2c connection and never reads,
/// for at most 20 s; see [`Flooded`].
async fn flood(gw: &Gateway, prelude: Vec<u8>, unit: Vec<u8>) -> Flooded {
    let (mut rd, mut wr) = h2_open(gw, &[]).await;
    let started = Instant::now();
    let batch: Vec<u8> = unit
        .iter()
        .copied()
        .cycle()
        .take(unit.len() * (16 * 1024 / unit.len()))
        .collect();
    let mut written = 0;
    let _ = wr.write_all(&prelude).await;
    let cut = loop {
        if started.elapsed() > Duration::from_secs(20) {
            break None;
        }
        match tokio::time::timeout(Duration::from_secs(1), wr.write_all(&batch)).await {
            Ok(Ok(())) => written += batch.len(),
            Ok(Err(_)) => break Some(started.elapsed()),
            Err(_) => {}
        }
    };
    let mut goaway = None;
    let deadline = Instant::now() + Duration::from_secs(2);
    while let Seen::Frame(f) = rd.next(deadline).await {
        if f.kind == GOAWAY && f.payload.len() >= 8 {
            goaway = Some(u32::from_be_bytes([
                f.payload[4],
                f.payload[5],
                f.payload[6],
                f.payload[7],
            ]));
        }
    }
    Flooded { cut, written, goaway }
}

/// PING, SETTINGS and empty DATA floods (CVE-2019-9512, -9515, -9518) from a client that
/// never reads: the gateway answers what it must only as fast as the client takes the
/// answers, so the flood stalls instead of piling up replies, and the stalled connection
/// is closed by the idle limit. Memory stays flat and others are served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_control_frame_floods_are_cut_off_with_memory_bounded() {
    let (_ups, gw) = start_with(|f| f.limits.push(("idle_timeout".into(), "\"2s\"".into()))).await;
    let mut post = hpack_get("acme.test", "/public/upload");
    post[0] = 0x83; // :method POST
    let floods = [
        ("PING", Vec::new(), frame(PING, 0, 0, &[7; 8])),
        ("SETTINGS", Vec::new(), frame(SETTINGS, 0, 0, &[])),
        (
            "empty DATA",
            frame(HEADERS, END_HEADERS, 1, &post),
            frame(DATA, 0, 1, &[]),
        ),
    ];
    for (what, prelude, unit) in floods {
        let baseline = gw.rss_kib();
        let attack = flood(&gw, prelude, unit);
        let bystander = async {
            tokio::time::sleep(Duration::from_millis(500)).await;
            a_parallel_client_is_served(&gw, what).await;
        };
        let (flooded, ()) = tokio::join!(attack, bystander);
        let growth_mib = gw.rss_kib().saturating_sub(baseline) / 1024;
        eprintln!("{what} flood: {flooded:?}, RSS +{growth_mib} MiB");
        assert!(
            flooded.cut.is_some_and(|after| after < Duration::from_secs(10)),
            "{what} flood: the connection was not closed within 10 s: {flooded:?}"
        );
        // The gateway stops reading once its answers back up: the flood stalls in the
        // socket buffers instead of being taken in for as long as the client sends.
        assert!(flooded.written < 64 << 20, "{what} flood: {flooded:?}");
        if what == "empty DATA" {
            // h2 counts small DATA frames per stream and sends GOAWAY ENHANCE_YOUR_CALM.
            assert_eq!(flooded.goaway, Some(ENHANCE_YOUR_CALM), "{what} flood: {flooded:?}");
        }
        assert!(growth_mib < 20, "{what} flood: RSS grew by {growth_mib} MiB");
    }
}

/// Zero-window slow read (CVE-2019-9517): the client sets its initial window to 0, asks
/// for large responses and never opens the window. The gateway must not buffer those
/// responses (it pulls from the upstream only as the client takes data), must keep
/// serving others, and closes the stalled connection at the idle limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_zero_window_readers_hold_no_memory_and_are_cut_off() {
    let (_ups, gw) = start_with(|f| f.limits.push(("idle_timeout".into(), "\"3s\"".into()))).await;
    let baseline = gw.rss_kib();
    let (mut rd, mut wr) = h2_open(&gw, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    let started = Instant::now();
    for i in 0..20u32 {
        let block = hpack_get("acme.test", "/public/stream?bytes=104857600");
        wr.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block))
            .await
            .unwrap();
    }
    let reader = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut data = 0usize;
        loop {
            match rd.next(deadline).await {
                Seen::Frame(f) if f.kind == DATA => data += f.payload.len(),
                Seen::Frame(_) => {}
                Seen::Closed => return (Some(started.elapsed()), data),
                Seen::Silent => return (None, data),
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(1500)).await;
    a_parallel_client_is_served(&gw, "zero window").await;
    let growth_mib = gw.rss_kib().saturating_sub(baseline) / 1024;
    assert!(
        growth_mib < 20,
        "RSS grew by {growth_mib} MiB with 20 stalled 100 MB responses"
    );
    let (closed, data) = reader.await.unwrap();
    assert_eq!(data, 0, "DATA sent into a zero window");
    let closed = closed.expect("the stalled connection was still open after 15 s");
    assert!(closed < Duration::from_secs(10), "closed only after {closed:?}");
    drop(wr);
}

/// Rapid Reset (DOS-01, CVE-2023-44487) seen from another client: while five connections
/// in a row each send 20,000 HEADERS + RST_STREAM pairs (and get their GOAWAY), a
/// bystander's requests keep being answered promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_rapid_reset_leaves_other_clients_served() {
    let (_ups, gw) = start().await;
    let c = h2_client(&gw);
    let timed = |path: String| {
        let c = c.clone();
        let url = gw.host_url("acme.test", &path);
        async move {
            let started = Instant::now();
            let status = c.get(url).send().await.map(|r| r.status().as_u16());
            (status.ok(), started.elapsed())
        }
    };
    let mut baseline = Vec::new();
    for i in 0..10 {
        baseline.push(timed(format!("/public/before{i}")).await.1);
    }
    let block = hpack_get("acme.test", "/public/rr");
    let mut frames = Vec::new();
    for i in 0..20_000u32 {
        let id = 2 * i + 1;
        frames.extend(frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        frames.extend(frame(RST_STREAM, 0, id, &8u32.to_be_bytes()));
    }
    let attack = async {
        let mut codes = Vec::new();
        for _ in 0..5 {
            codes.push(goaway_after(&gw, frames.clone()).await);
        }
        codes
    };
    let bystander = async {
        let mut seen = Vec::new();
        for i in 0..20 {
            seen.push(timed(format!("/public/during{i}")).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        seen
    };
    let (codes, during) = tokio::join!(attack, bystander);
    assert!(
        codes
            .iter()
            .all(|c| matches!(c, Some(ENHANCE_YOUR_CALM | PROTOCOL_ERROR))),
        "not every flood got its GOAWAY: {codes:?}"
    );
    let worst_before = baseline.iter().max().copied().unwrap_or_default();
    let worst_during = during.iter().map(|(_, t)| *t).max().unwrap_or_default();
    eprintln!("rapid reset: bystander worst {worst_before:?} before, {worst_during:?} during");
    for (status, took) in &during {
        assert_eq!(
            *status,
            Some(200),
            "a bystander request failed during the flood: {during:?}"
        );
        // Generous against a slow CI machine; an unbounded flood takes seconds per answer.
        assert!(
            *took < Duration::from_secs(1),
            "a bystander waited {took:?}: {during:?}"
        );
    }
}

// --- SMUG-01 / SMUG-09: what happens to the connection after the answer ---

/// CL.TE and TE.CL: refused, or read by Transfer-Encoding alone with Content-Length
/// dropped before forwarding; either way the connection is closed after the answer, so
/// the bytes after the body are never read as a request on it (a parser that trusted
/// Content-Length would have seen them as body, a desync waiting to happen).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_length_with_transfer_encoding_closes_the_connection() {
    let (ups, gw) = start().await;
    for (first, second) in [
        ("Content-Length: 6", "Transfer-Encoding: chunked"),
        ("Transfer-Encoding: chunked", "Content-Length: 6"),
    ] {
        let req =
            format!("POST /public/clte HTTP/1.1\r\nHost: acme.test\r\n{first}\r\n{second}\r\n\r\n0\r\n\r\n{SMUGGLED}");
        let x = send_slowly(gw.public, req.as_bytes(), &[], 1, Duration::ZERO).await;
        let answers = parse_responses(&x.answer);
        let statuses: Vec<u16> = answers.iter().map(|r| r.status).collect();
        assert!(
            matches!(statuses.as_slice(), [400] | [200]),
            "{first} / {second}: {statuses:?}"
        );
        assert_eq!(answers[0].header("connection"), Some("close"), "{first} / {second}");
        assert!(
            x.closed,
            "{first} / {second}: the connection stayed open after the answer"
        );
    }
    assert_smuggled_never_forwarded(&ups).await;
    for r in ups.acme.requests() {
        assert_eq!(r.target, "/public/clte");
        assert!(
            !r.has_header("content-length"),
            "Content-Length forwarded beside chunked: {r:#?}"
        );
    }
}

/// An app that refuses a WebSocket upgrade (426, as for `Sec-WebSocket-Version: 1337`):
/// no tunnel is opened, so the bytes the client sends next are parsed by the gateway
/// as HTTP and judged (401 for `/admin/...`), never passed raw to the app. The app here
/// is a raw TCP listener that records every byte it receives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_websocket_upgrade_opens_no_tunnel() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app = format!("http://{}", listener.local_addr().unwrap());
    let received = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
    let log = received.clone();
    let app_task = tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 16 * 1024];
                let mut head = Vec::new();
                let mut answered = false;
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    log.lock().unwrap().extend_from_slice(&buf[..n]);
                    head.extend_from_slice(&buf[..n]);
                    if !answered && head.windows(4).any(|w| w == b"\r\n\r\n") {
                        answered = true;
                        let _ = s
                            .write_all(b"HTTP/1.1 426 Upgrade Required\r\nSec-WebSocket-Version: 13\r\nContent-Length: 0\r\n\r\n")
                            .await;
                    }
                }
            });
        }
    });
    let ups = Upstreams::start().await;
    let gw = Gateway::start(&PolicyFixture::new(&app, &ups.globex.url(), &ups.initech.url())).await;
    let req = "GET /public/ws HTTP/1.1\r\nHost: acme.test\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 1337\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\nGET /admin/x HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n";
    let statuses: Vec<u16> = raw(gw.public, req.as_bytes()).await.iter().map(|r| r.status).collect();
    assert_eq!(statuses[0], 426, "{statuses:?}");
    assert!(
        statuses.get(1).is_none_or(|s| *s == 401),
        "the request after the refused upgrade was not judged by the gateway: {statuses:?}"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = String::from_utf8_lossy(&received.lock().unwrap()).into_owned();
    assert!(seen.contains("GET /public/ws "), "{seen}");
    assert!(
        !seen.contains("/admin/x"),
        "bytes after the refused upgrade reached the app: {seen}"
    );
    app_task.abort();
}

// --- DOS-05: oversized request lines and bodies on the gateway's own endpoints ---

/// A 100 KB request line (414) and 10,000 small headers (431) are refused and nothing is
/// forwarded. A declared 1 GB body to the SSO callback and the password sign-in is
/// refused before 1 MB of it was sent (413; 405 from the callback, which takes no POST;
/// 413 or 401 from the admin API), and the connection is closed rather than drained.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_request_lines_and_bodies_are_refused_early() {
    let (ups, gw) = start().await;
    let line = format!(
        "GET /public/{} HTTP/1.1\r\nHost: acme.test\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let status = raw(gw.public, line.as_bytes()).await[0].status;
    assert_eq!(status, 414, "100 KB request line");
    let mut many = String::from("GET /public/x HTTP/1.1\r\nHost: acme.test\r\n");
    for i in 0..10_000 {
        many.push_str(&format!("X-H{i}: v\r\n"));
    }
    many.push_str("\r\n");
    assert_eq!(raw(gw.public, many.as_bytes()).await[0].status, 431, "10,000 headers");
    assert_eq!(ups.total(), 0, "an oversized head was forwarded");

    let body = vec![b'a'; 4 << 20];
    // The public listener refuses on the declared length alone; the admin API stops
    // reading at its largest body (16 KiB), token or not.
    for (addr, target, allowed, within) in [
        // The callback takes no POST body at all: any early 4xx will do.
        (gw.public, "POST /.portcullis/callback", [405, 413], 1 << 20),
        (gw.public, "POST /.portcullis/api/login", [413, 413], 1 << 20),
        (gw.admin, "PUT /v1/tenants/acme/breaker", [413, 401], 1 << 20),
    ] {
        let head = format!(
            "{target} HTTP/1.1\r\nHost: acme.test\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n"
        );
        let x = send_slowly(addr, head.as_bytes(), &body, 64 * 1024, Duration::from_millis(5)).await;
        let statuses: Vec<u16> = parse_responses(&x.answer).iter().map(|r| r.status).collect();
        eprintln!(
            "{target}: {statuses:?} after {} bytes, closed={}",
            x.body_sent_at_answer, x.closed
        );
        assert!(
            statuses.len() == 1 && allowed.contains(&statuses[0]),
            "{target}: {statuses:?}"
        );
        assert!(
            x.body_sent_at_answer < within,
            "{target}: answered after {} bytes",
            x.body_sent_at_answer
        );
        assert!(x.closed, "{target}: the connection stayed open to drain 1 GB");
    }
}

// --- DOS-04: slow clients at scale ---

/// Slowloris with 1,000 connections, each trickling a request head: every one is closed
/// at the header-read limit (1 s here), and a legitimate client is served meanwhile.
/// Without the limit the connections would stay open as long as the bytes trickle in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_slow_heads_are_cut_off_and_others_served() {
    let (_ups, gw) = start_with(|f| f.limits.push(("header_read_timeout".into(), "\"1s\"".into()))).await;
    let started = Instant::now();
    let mut slow = Vec::new();
    for i in 0..1_000 {
        let addr = gw.public;
        slow.push(tokio::spawn(async move {
            let Ok(mut s) = tokio::net::TcpStream::connect(addr).await else {
                return None;
            };
            let head = format!("GET /public/slow{i} HTTP/1.1\r\nHost: acme.test\r\nX-Slow: ");
            let mut buf = [0u8; 1024];
            for b in head.bytes().chain(std::iter::repeat(b'a')) {
                if s.write_all(&[b]).await.is_err() {
                    return Some(started.elapsed());
                }
                // One byte every 200 ms, reading meanwhile: EOF or reset means cut off.
                match tokio::time::timeout(Duration::from_millis(200), s.read(&mut buf)).await {
                    Ok(Ok(_)) | Ok(Err(_)) => return Some(started.elapsed()),
                    Err(_) if started.elapsed() > Duration::from_secs(15) => return None,
                    Err(_) => {}
                }
            }
            None
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..5 {
        let r = raw_get(gw.public, "acme.test", &format!("/public/legit{i}")).await;
        assert_eq!(r.status, 200, "a legitimate client was not served during the attack");
    }
    let mut cut = Vec::new();
    for t in slow {
        cut.push(t.await.unwrap());
    }
    let open = cut.iter().filter(|c| c.is_none()).count();
    assert_eq!(open, 0, "{open} of 1,000 slow heads were still open after 15 s");
    let latest = cut.iter().flatten().max().copied().unwrap_or_default();
    assert!(
        latest < Duration::from_secs(8),
        "the last slow head was cut after {latest:?}"
    );
}

/// A slow body to the password sign-in (one byte every 500 ms, under the 2 s idle
/// limit so the connection never looks idle): the gateway stops waiting for it after
/// `ui::web::BODY_READ_TIMEOUT` (10 s) instead of holding the request for as long as
/// the client trickles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trickled_sign_in_body_is_cut_off() {
    let (_ups, gw) = start_with(|f| {
        f.limits.push(("idle_timeout".into(), "\"2s\"".into()));
        f.limits.push(("header_read_timeout".into(), "\"2s\"".into()));
    })
    .await;
    let head = "POST /.portcullis/api/login HTTP/1.1\r\nHost: acme.test\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n";
    let body = vec![b' '; 1000];
    let x = send_slowly(gw.public, head.as_bytes(), &body, 1, Duration::from_millis(500)).await;
    let statuses: Vec<u16> = parse_responses(&x.answer).iter().map(|r| r.status).collect();
    eprintln!(
        "trickled sign-in: {statuses:?} closed={} after {} bytes",
        x.closed, x.body_sent_at_answer
    );
    assert!(
        x.closed || !statuses.is_empty(),
        "still waiting for the body after 15 s"
    );
    assert!(
        x.body_sent_at_answer < 30,
        "cut only after {} bytes",
        x.body_sent_at_answer
    );
}

/// A zero-window reader whose HTTP/2 stack answers PINGs, as every real one does: its
/// stalled streams hold the tenant's bulkhead slots (here all 8, so everyone else gets
/// 503), and only the idle limit frees them. The gateway's own keep-alive PINGs must not
/// count as activity, or the connection would never look idle and the tenant would stay
/// blocked for as long as the attacker likes. Takes about 40 s (the idle limit has to be
/// longer than a keep-alive interval of 30 s for the test to mean anything).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_zero_window_reader_answering_pings_is_cut_off_at_the_idle_limit() {
    let (_ups, gw) = start_with(|f| {
        f.tenant_mut("acme").extra_limits = "max_in_flight = 8\nmax_queued = 1\nqueue_wait = \"1s\"".into();
        f.limits.push(("idle_timeout".into(), "\"35s\"".into()));
        f.limits.push(("header_read_timeout".into(), "\"4s\"".into()));
    })
    .await;
    let (mut rd, mut wr) = h2_open(&gw, &[(SETTINGS_INITIAL_WINDOW_SIZE, 0)]).await;
    for i in 0..10u32 {
        let block = hpack_get("acme.test", "/public/stream?bytes=104857600");
        wr.write_all(&frame(HEADERS, END_STREAM | END_HEADERS, 2 * i + 1, &block))
            .await
            .unwrap();
    }
    let started = Instant::now();
    let attacker = tokio::spawn(async move {
        let deadline = Instant::now() + Duration::from_secs(45);
        loop {
            match rd.next(deadline).await {
                Seen::Frame(f) if f.kind == PING => {
                    let _ = wr.write_all(&frame(PING, 0x1, 0, &f.payload)).await;
                }
                Seen::Frame(_) => {}
                Seen::Closed => return Some(started.elapsed()),
                Seen::Silent => return None,
            }
        }
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    let blocked = raw_get(gw.public, "acme.test", "/public/blocked").await.status;
    assert_eq!(blocked, 503, "the stalled streams should hold every bulkhead slot");
    let closed = attacker.await.unwrap();
    let closed = closed.expect("the stalled connection was still open after 45 s");
    assert!(closed < Duration::from_secs(40), "closed only after {closed:?}");
    let after = raw_get(gw.public, "acme.test", "/public/after").await.status;
    assert_eq!(after, 200, "the bulkhead slots were not released with the connection");
}
