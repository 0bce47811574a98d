//! The admin listener's connections: one accept loop for plain HTTP and HTTPS, serving
//! HTTP/1.1 and HTTP/2 with the admin router, and the limits that keep the operator API
//! and console reachable while a client misbehaves (Slowloris, a connection flood):
//! - **Cap**: at most `limits.admin_max_connections` open at once (TLS handshakes
//!   included); a connection beyond it is closed at once, and a warn line (at most one
//!   per [`REFUSAL_LOG_INTERVAL`]) says how many were refused.
//! - **Header read** (HTTP/1): bytes of a request head arrived but no whole head for
//!   `limits.header_read_timeout`, while no request was being handled. The TLS
//!   handshake has the same limit.
//! - **Idle**: no byte moved either way for `limits.idle_timeout` (a silent keep-alive
//!   or HTTP/2 connection, a stalled body).
//!
//! The limits are checked by each connection's task once per tick (a quarter of the
//! shorter limit, at least 250 ms): never early, at most two ticks late. hyper's own
//! header-read timer is not used: it also runs while a keep-alive connection waits for
//! its next request, which is the idle limit's business.
//!
//! On shutdown the loop stops accepting, every connection finishes its in-flight
//! requests and closes, and the listener waits for them up to `limits.shutdown_grace`.
//! Handlers see the client address as `ConnectInfo<SocketAddr>`, on both paths.
//!
//! It owns connections only: routes are the router's (`super`), and the public
//! listener's connections are `crate::proxy`'s.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::config::Limits;

/// At most one "connections refused" warn line per this long, so a flood does not become
/// a flood of log lines as well.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Serves `app` on `listener` until `shutdown` turns true (or its sender is gone), then
/// drains (see the module doc). HTTPS when `tls` is given, else plain HTTP.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let cap = limits.admin_max_connections.clamp(1, Semaphore::MAX_PERMITS);
    let slots = Arc::new(Semaphore::new(cap));
    let mut refusals = RefusalLog::default();
    let limits = Arc::new(limits);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Dropped unread: the client sees the connection closed at once.
            drop(stream);
            if let Some(refused) = refusals.refused(Instant::now()) {
                tracing::warn!(
                    refused,
                    cap,
                    "admin listener at its connection cap (limits.admin_max_connections): closing new connections"
                );
            }
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(connection(
            stream,
            peer,
            acceptor.clone(),
            app.clone(),
            limits.clone(),
            shutdown.clone(),
            slot,
        ));
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all closed.
    let cap = u32::try_from(cap).unwrap_or(u32::MAX);
    if tokio::time::timeout(limits.shutdown_grace, slots.acquire_many(cap))
        .await
        .is_err()
    {
        tracing::warn!("admin listener: shutdown grace period ended with connections still open");
    }
}

/// One admin connection, from the TLS handshake (if any) to its close; `_slot` is its
/// place under the cap, given back when it ends.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    app: Router,
    limits: Arc<Limits>,
    shutdown: watch::Receiver<bool>,
    _slot: OwnedSemaphorePermit,
) {
    let activity = Arc::new(Activity::default());
    let io = WatchedIo {
        inner: stream,
        activity: activity.clone(),
    };
    match acceptor {
        None => serve_http(io, peer, app, &limits, activity, shutdown).await,
        Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => serve_http(tls, peer, app, &limits, activity, shutdown).await,
            Ok(Err(e)) => tracing::debug!(error = %e, "admin TLS handshake failed"),
            Err(_) => tracing::debug!("admin TLS handshake timed out"),
        },
    }
}

/// Serves HTTP on an established connection under the header-read and idle limits,
/// shutting it down gracefully when the listener stops.
async fn serve_http<S>(
    io: S,
    peer: SocketAddr,
    app: Router,
    limits: &Limits,
    activity: Arc<Activity>,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let requests = activity.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        // What `into_make_service_with_connect_info` would give the handlers.
        req.extensions_mut().insert(ConnectInfo(peer));
        host_from_authority(&mut req);
        let in_flight = InFlight::begin(requests.clone(), req.version());
        let response = tower_service::Service::call(&mut app.clone(), req);
        async move {
            let response = response.await;
            drop(in_flight);
            response
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // No timer: hyper's header-read timeout stays off (see the module doc).
    builder.http1().keep_alive(true).header_read_timeout(None);
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    tokio::pin!(conn);

    // Bytes read so far were the TLS handshake's, not a request head's.
    activity
        .reads_at_finish
        .store(activity.reads.load(Ordering::Relaxed), Ordering::Relaxed);
    let (tick, mut watchdog) = Watchdog::new(limits, Instant::now(), activity.counters());
    let mut ticks = tokio::time::interval_at(Instant::now() + tick, tick);
    let mut draining = *shutdown.borrow();
    if draining {
        conn.as_mut().graceful_shutdown();
    }
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "admin connection ended with an error");
                }
                return;
            }
            _ = ticks.tick() => {
                if let Some(verdict) = watchdog.tick(Instant::now(), activity.counters()) {
                    tracing::debug!(?verdict, %peer, "closing admin connection");
                    return;
                }
            }
            // A closed channel means the listener is gone: drain as well.
            _ = shutdown.changed(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}

/// HTTP/2 names the host in `:authority` (the URI), not in a `Host` header: copied into
/// one, so the console's `Origin` check (which reads `Host`) works the same over both.
fn host_from_authority<B>(req: &mut hyper::Request<B>) {
    if req.headers().contains_key(header::HOST) {
        return;
    }
    let host = req
        .uri()
        .authority()
        .and_then(|a| header::HeaderValue::from_str(a.as_str()).ok());
    if let Some(host) = host {
        req.headers_mut().insert(header::HOST, host);
    }
}

/// What a connection's IO and requests tell its watchdog.
#[derive(Default)]
struct Activity {
    /// Reads that moved bytes.
    reads: AtomicU64,
    /// Writes that moved bytes.
    writes: AtomicU64,
    /// Requests whose head was read and handed to the router.
    started: AtomicU64,
    /// Requests whose handling ended (answered or dropped).
    finished: AtomicU64,
    /// `reads` when the last request's handling ended: reads beyond it, with no request
    /// in flight, are the next request's head arriving.
    reads_at_finish: AtomicU64,
    /// An HTTP/2 request was seen: the header-read limit is HTTP/1's.
    http2: AtomicBool,
}

impl Activity {
    fn counters(&self) -> Counters {
        Counters {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            reads_at_finish: self.reads_at_finish.load(Ordering::Relaxed),
            http2: self.http2.load(Ordering::Relaxed),
        }
    }
}

/// A request being handled, until dropped.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: Arc<Activity>, version: hyper::Version) -> Self {
        if version == hyper::Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        activity.started.fetch_add(1, Ordering::Relaxed);
        InFlight(activity)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let activity = &self.0;
        activity
            .reads_at_finish
            .store(activity.reads.load(Ordering::Relaxed), Ordering::Relaxed);
        activity.finished.fetch_add(1, Ordering::Relaxed);
    }
}

/// The connection's IO, counting the reads and writes that moved bytes.
struct WatchedIo<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S: AsyncRead + Unpin> AsyncRead for WatchedIo<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.reads.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for WatchedIo<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let polled = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.writes.fetch_add(1, Ordering::Relaxed);
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// [`Activity`] read at one instant.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Counters {
    reads: u64,
    writes: u64,
    started: u64,
    finished: u64,
    reads_at_finish: u64,
    http2: bool,
}

/// Why a connection was closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Idle,
    HeaderTimeout,
}

/// A connection's limits, checked at each tick from its counters; the clock is passed in.
struct Watchdog {
    idle_timeout: Duration,
    header_read_timeout: Duration,
    /// The counters at the previous tick.
    last: Counters,
    /// The tick at which bytes were last seen moving (or the start).
    last_moved: Instant,
    /// The tick at which an unfinished request head was first seen arriving.
    head_since: Option<Instant>,
}

impl Watchdog {
    /// The tick (a quarter of the shorter limit, at least 250 ms) and a watchdog that
    /// starts counting at `now`.
    fn new(limits: &Limits, now: Instant, counters: Counters) -> (Duration, Self) {
        let tick = (limits.idle_timeout.min(limits.header_read_timeout) / 4).max(Duration::from_millis(250));
        let watchdog = Watchdog {
            idle_timeout: limits.idle_timeout,
            header_read_timeout: limits.header_read_timeout,
            last: counters,
            last_moved: now,
            head_since: None,
        };
        (tick, watchdog)
    }

    /// One tick at `now`. Movement is dated to the tick that saw it, after it happened,
    /// so a limit is never enforced early.
    fn tick(&mut self, now: Instant, counters: Counters) -> Option<Verdict> {
        let last = std::mem::replace(&mut self.last, counters);
        if counters.reads != last.reads || counters.writes != last.writes {
            self.last_moved = now;
        }
        let between_requests = counters.started == counters.finished;
        let head_arriving = between_requests && !counters.http2 && counters.reads > counters.reads_at_finish;
        self.head_since = match self.head_since {
            // Still the same head: no request began since it started arriving.
            Some(since) if head_arriving && counters.started == last.started => Some(since),
            _ if head_arriving => Some(now),
            _ => None,
        };
        if now.saturating_duration_since(self.last_moved) >= self.idle_timeout {
            return Some(Verdict::Idle);
        }
        match self.head_since {
            Some(since) if now.saturating_duration_since(since) >= self.header_read_timeout => {
                Some(Verdict::HeaderTimeout)
            }
            _ => None,
        }
    }
}

/// Rate limit of the "connections refused" warn line; the clock is passed in.
#[derive(Default)]
struct RefusalLog {
    /// When the last line was written.
    last_line: Option<Instant>,
    /// Refusals since then.
    unlogged: u64,
}

impl RefusalLog {
    /// Counts one refusal; `Some(n)` when a line is due, `n` the refusals it reports.
    fn refused(&mut self, now: Instant) -> Option<u64> {
        self.unlogged = self.unlogged.saturating_add(1);
        let due = self
            .last_line
            .is_none_or(|last| now.saturating_duration_since(last) >= REFUSAL_LOG_INTERVAL);
        if !due {
            return None;
        }
        self.last_line = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle: u64, header: u64) -> Limits {
        Limits {
            idle_timeout: Duration::from_secs(idle),
            header_read_timeout: Duration::from_secs(header),
            ..Limits::default()
        }
    }

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
    }

    /// If this broke, a silent keep-alive connection would hold its slot forever (or
    /// be cut before its time).
    #[test]
    fn a_silent_connection_is_closed_at_the_idle_limit_not_before() {
        let start = Instant::now();
        let (tick, mut dog) = Watchdog::new(&limits(4, 2), start, Counters::default());
        assert_eq!(tick, Duration::from_millis(500));
        let quiet = Counters::default();
        assert_eq!(dog.tick(at(start, 3_500), quiet), None);
        assert_eq!(dog.tick(at(start, 4_000), quiet), Some(Verdict::Idle));
    }

    /// If this broke, a trickled request head (Slowloris) would hold a slot for as long
    /// as bytes kept coming.
    #[test]
    fn a_head_that_never_completes_is_closed_at_the_header_limit() {
        let start = Instant::now();
        let (_, mut dog) = Watchdog::new(&limits(60, 2), start, Counters::default());
        let mut c = Counters::default();
        for (i, ms) in (500..=2_000).step_by(500).enumerate() {
            c.reads += 1;
            let verdict = dog.tick(at(start, ms), c);
            assert_eq!(verdict, None, "tick {i}: the head began arriving at 500 ms");
        }
        c.reads += 1;
        assert_eq!(dog.tick(at(start, 2_500), c), Some(Verdict::HeaderTimeout));
    }

    /// If this broke, a busy keep-alive connection (or a slow handler) would be cut off
    /// as if it were trickling a head.
    #[test]
    fn requests_that_complete_or_are_being_handled_reset_the_header_limit() {
        let start = Instant::now();
        let (_, mut dog) = Watchdog::new(&limits(60, 2), start, Counters::default());
        let mut c = Counters::default();
        for second in 1..=10 {
            // A whole request each second: head read, handled, answered.
            c.reads += 1;
            c.started += 1;
            c.finished += 1;
            c.reads_at_finish = c.reads;
            c.writes += 1;
            assert_eq!(dog.tick(at(start, second * 1_000), c), None);
        }
        // One in flight for long, its body arriving: not a head.
        c.started += 1;
        for second in 11..=20 {
            c.reads += 1;
            assert_eq!(dog.tick(at(start, second * 1_000), c), None);
        }
    }

    /// If this broke, an HTTP/2 client's PINGs between requests would count as a head.
    #[test]
    fn http2_has_no_header_limit() {
        let start = Instant::now();
        let (_, mut dog) = Watchdog::new(&limits(60, 2), start, Counters::default());
        let mut c = Counters {
            http2: true,
            ..Counters::default()
        };
        for second in 1..=10 {
            c.reads += 1;
            assert_eq!(dog.tick(at(start, second * 1_000), c), None);
        }
    }

    /// If this broke, a connection flood would write one warn line per connection, or
    /// none at all.
    #[test]
    fn refusals_are_logged_at_most_once_per_interval_with_their_count() {
        let start = Instant::now();
        let mut log = RefusalLog::default();
        assert_eq!(log.refused(start), Some(1));
        for ms in [1, 500, 9_999] {
            assert_eq!(log.refused(at(start, ms)), None);
        }
        assert_eq!(log.refused(at(start, 10_000)), Some(4));
        assert_eq!(log.refused(at(start, 10_001)), None);
        assert_eq!(log.refused(at(start, 25_000)), Some(2));
    }
}
