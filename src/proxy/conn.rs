//! One client connection's watchdog and the state its requests share with it.
//!
//! The connection limits are enforced here by one task per connection that wakes once
//! per tick, instead of a timer per request: the requests only bump counters, and the
//! watchdog reads them between ticks.
//! - **Idle**: no byte moved either way for `idle_timeout` (a stalled body, a silent
//!   keep-alive or HTTP/2 connection).
//! - **Header read** (HTTP/1): bytes of a request head arrived but no whole head for
//!   `header_read_timeout`, while no request was being handled (Slowloris).
//!
//! A limit is never enforced early; it may be enforced up to two ticks late (a tick is a
//! quarter of the shorter limit, at least 250 ms).
//!
//! The watchdog also starts a connection's graceful shutdown when the listener stops
//! ([`Draining`]), and [`Connections`] counts the open ones for the listener to wait on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};

use super::headers::ForwardingCache;
use super::identity::LastIdentity;
use crate::session::CookieMemo;

/// What a connection's requests and its watchdog share.
#[derive(Default)]
pub struct ConnState {
    /// Reads that moved bytes.
    reads: AtomicU64,
    /// Writes that moved bytes.
    writes: AtomicU64,
    /// Requests handed to the request path (their head was read).
    started: AtomicU64,
    /// Requests whose handling ended (answered or dropped).
    finished: AtomicU64,
    /// `reads` when the last request's handling ended: reads after it are the next head.
    reads_at_finish: AtomicU64,
    /// An HTTP/2 request was seen: the header-read limit is HTTP/1's (HTTP/2 streams are
    /// bounded by hyper's own settings, and a client's PINGs move bytes between requests).
    http2: AtomicBool,
    /// Forwarding header values of this connection's client.
    pub forwarding: ForwardingCache,
    /// The session identity this connection forwarded last.
    pub identity: LastIdentity,
    /// The store key of the session cookie this connection presented last.
    pub cookie: CookieMemo,
    /// The listener is stopping: finish what is in flight, then close.
    draining: AtomicBool,
    /// Wakes the connection's task when draining starts.
    drain_waker: AtomicWaker,
}

impl ConnState {
    /// Marks a request as being handled until the returned guard is dropped.
    pub fn begin(&self, version: http::Version) -> InFlight<'_> {
        if version == http::Version::HTTP_2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.started.fetch_add(1, Ordering::Relaxed);
        InFlight { conn: self }
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain_waker.wake();
    }

    fn counters(&self) -> Counters {
        Counters {
            reads: self.reads.load(Ordering::Relaxed),
            writes: self.writes.load(Ordering::Relaxed),
            started: self.started.load(Ordering::Relaxed),
            finished: self.finished.load(Ordering::Relaxed),
            reads_at_finish: self.reads_at_finish.load(Ordering::Relaxed),
        }
    }
}

/// A request being handled; see [`ConnState::begin`].
pub struct InFlight<'a> {
    conn: &'a ConnState,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let reads = self.conn.reads.load(Ordering::Relaxed);
        self.conn.reads_at_finish.store(reads, Ordering::Relaxed);
        self.conn.finished.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
struct Counters {
    reads: u64,
    writes: u64,
    started: u64,
    finished: u64,
    reads_at_finish: u64,
}

/// Why the watchdog closed a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Idle,
    HeaderTimeout,
}

/// The watchdog's memory between ticks, in ticks.
struct Watchdog {
    limits: WatchLimits,
    last: Counters,
    /// Ticks since a byte last moved.
    quiet: u32,
    /// Ticks since bytes of an unfinished request head began to arrive, if they did.
    reading_head: Option<u32>,
}

/// The two limits, in ticks.
#[derive(Clone, Copy)]
struct WatchLimits {
    idle: u32,
    header: u32,
}

impl WatchLimits {
    /// The tick and the limits counted in it (rounded up: never early).
    fn of(idle_timeout: Duration, header_read_timeout: Duration) -> (Duration, Self) {
        let tick = (idle_timeout.min(header_read_timeout) / 4).max(Duration::from_millis(250));
        let ticks =
            |limit: Duration| u32::try_from(limit.as_millis().div_ceil(tick.as_millis().max(1))).unwrap_or(u32::MAX);
        (
            tick,
            WatchLimits {
                idle: ticks(idle_timeout),
                header: ticks(header_read_timeout),
            },
        )
    }
}

impl Watchdog {
    fn new(limits: WatchLimits, now: Counters) -> Self {
        Watchdog {
            limits,
            last: now,
            quiet: 0,
            reading_head: None,
        }
    }

    /// One tick: what the counters say since the last one.
    fn tick(&mut self, now: Counters, http2: bool) -> Option<Verdict> {
        let last = std::mem::replace(&mut self.last, now);
        let moved = now.reads != last.reads || now.writes != last.writes;
        self.quiet = if moved { 0 } else { self.quiet.saturating_add(1) };
        // A tick may have seen bytes arrive just after the previous one: count it whole,
        // and the limit is reached one tick later than the exact time at the latest.
        // Bytes read since the last request ended are the next head, even when they came
        // in the same tick as that request (and nothing since).
        let idle_between_requests = now.started == now.finished && now.started == last.started;
        self.reading_head = match self.reading_head {
            _ if http2 || !idle_between_requests => None,
            Some(ticks) => Some(ticks.saturating_add(1)),
            None if now.reads != now.reads_at_finish => Some(0),
            None => None,
        };
        if self.quiet >= self.limits.idle {
            return Some(Verdict::Idle);
        }
        match self.reading_head {
            Some(ticks) if ticks >= self.limits.header => Some(Verdict::HeaderTimeout),
            _ => None,
        }
    }
}

/// Watches a connection's task from a task of its own (so the connection's task has no
/// timer to poll on every wake-up), and aborts it when a limit is broken (see the module
/// doc). Ends with the connection. An upgraded connection (WebSocket) has left the task
/// and is not subject to it.
pub fn spawn_watchdog(
    task: tokio::task::AbortHandle,
    state: Arc<ConnState>,
    (idle_timeout, header_read_timeout): (Duration, Duration),
    mut shutdown: watch::Receiver<bool>,
) {
    let (tick, limits) = WatchLimits::of(idle_timeout, header_read_timeout);
    let mut watchdog = Watchdog::new(limits, state.counters());
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        let mut stopping = *shutdown.borrow();
        if stopping {
            state.start_draining();
        }
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                changed = shutdown.changed(), if !stopping => {
                    // A closed channel means the listener is gone: stop as well.
                    if changed.is_err() || *shutdown.borrow() {
                        stopping = true;
                        state.start_draining();
                    }
                    continue;
                }
            }
            if task.is_finished() {
                return;
            }
            if let Some(verdict) = watchdog.tick(state.counters(), state.http2.load(Ordering::Relaxed)) {
                tracing::debug!(?verdict, "closing connection");
                task.abort();
                return;
            }
        }
    });
}

pin_project_lite::pin_project! {
    /// A served connection that shuts down gracefully (in-flight requests finish, then it
    /// closes) once its watchdog says the listener is stopping. Cheaper on every wake-up
    /// than a shutdown future polled beside the connection: one flag read and a waker
    /// registration that is a comparison when the waker is the same.
    pub struct Draining<C> {
        #[pin]
        conn: C,
        state: Arc<ConnState>,
        shutting_down: bool,
    }
}

impl<C> Draining<C> {
    /// Wraps a served connection.
    pub fn new(conn: C, state: Arc<ConnState>) -> Self {
        Draining {
            conn,
            state,
            shutting_down: false,
        }
    }
}

impl<C: GracefulConnection> std::future::Future for Draining<C> {
    type Output = Result<(), C::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if !*this.shutting_down {
            this.state.drain_waker.register(cx.waker());
            if this.state.draining.load(Ordering::Acquire) {
                *this.shutting_down = true;
                this.conn.as_mut().graceful_shutdown();
            }
        }
        this.conn.poll(cx)
    }
}

/// The open connections of a listener, for it to wait on when it stops, and for the
/// metrics (the gauge follows the count).
pub struct Connections {
    open: std::sync::atomic::AtomicUsize,
    all_closed: Notify,
    gauge: Gauge<i64, AtomicI64>,
}

impl Connections {
    /// No connection yet; `gauge` is the metric to keep in step.
    pub fn new(gauge: Gauge<i64, AtomicI64>) -> Self {
        Connections {
            open: std::sync::atomic::AtomicUsize::new(0),
            all_closed: Notify::new(),
            gauge,
        }
    }

    /// Counts a connection open until the guard is dropped (also when the watchdog
    /// aborts the connection's task).
    pub fn open(self: &Arc<Self>) -> OpenGuard {
        self.open.fetch_add(1, Ordering::AcqRel);
        self.gauge.inc();
        OpenGuard(self.clone())
    }

    /// Resolves once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            let closed = self.all_closed.notified();
            if self.open.load(Ordering::Acquire) == 0 {
                return;
            }
            closed.await;
        }
    }
}

/// See [`Connections::open`].
pub struct OpenGuard(Arc<Connections>);

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.gauge.dec();
        if self.0.open.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

pin_project_lite::pin_project! {
    /// A socket that counts the reads and writes that moved bytes.
    pub struct TrackedIo<T> {
        #[pin]
        inner: T,
        state: Arc<ConnState>,
    }
}

impl<T> TrackedIo<T> {
    /// Wraps a socket.
    pub fn new(inner: T, state: Arc<ConnState>) -> Self {
        TrackedIo { inner, state }
    }
}

impl<T: AsyncRead> AsyncRead for TrackedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.state.reads.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.state.writes.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write_vectored(cx, bufs);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.state.writes.fetch_add(1, Ordering::Relaxed);
        }
        res
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::{Counters, Verdict, WatchLimits, Watchdog};
    use std::time::Duration;

    /// Counters where the last request (if any) ended after every read so far.
    fn at(reads: u64, writes: u64, started: u64, finished: u64) -> Counters {
        Counters {
            reads,
            writes,
            started,
            finished,
            reads_at_finish: if finished > 0 { reads } else { 0 },
        }
    }

    fn watchdog() -> Watchdog {
        // 8 s idle, 2 s header read: a 500 ms tick, 16 and 4 ticks.
        let (tick, limits) = WatchLimits::of(Duration::from_secs(8), Duration::from_secs(2));
        assert_eq!(tick, Duration::from_millis(500));
        assert_eq!((limits.idle, limits.header), (16, 4));
        Watchdog::new(limits, at(0, 0, 0, 0))
    }

    #[test]
    fn a_head_that_never_completes_is_cut_off_after_the_header_limit() {
        let mut w = watchdog();
        // A byte every tick, never a whole head (Slowloris).
        for i in 1..=4 {
            assert_eq!(w.tick(at(i, 0, 0, 0), false), None, "tick {i}");
        }
        assert_eq!(w.tick(at(5, 0, 0, 0), false), Some(Verdict::HeaderTimeout));
    }

    #[test]
    fn a_completed_head_and_a_request_in_flight_stop_the_header_clock() {
        let mut w = watchdog();
        assert_eq!(w.tick(at(1, 0, 0, 0), false), None);
        assert_eq!(w.tick(at(2, 0, 1, 0), false), None, "the head arrived");
        // A slow upstream: nothing moves, the request is in flight.
        for i in 0..10 {
            assert_eq!(w.tick(at(2, 0, 1, 0), false), None, "tick {i}");
        }
        // Answered; a streamed body the client does not talk during.
        for i in 0..10 {
            assert_eq!(w.tick(at(2, 1 + i, 1, 1), false), None, "tick {i}");
        }
    }

    /// If this broke, a client could answer a request's end with the start of the next
    /// head in the same tick and then stall: the header clock would never start, and only
    /// the idle limit (four times longer here) would close the connection.
    #[test]
    fn a_head_begun_in_the_tick_its_predecessor_ended_is_still_timed() {
        let mut w = watchdog();
        // Within one tick: a whole request, its answer, and a read that brings the start
        // of the next head; then nothing more.
        let stalled = Counters {
            reads_at_finish: 1,
            ..at(2, 1, 1, 1)
        };
        assert_eq!(w.tick(stalled, false), None, "the request's own tick");
        for i in 0..4 {
            assert_eq!(w.tick(stalled, false), None, "tick {i}");
        }
        assert_eq!(w.tick(stalled, false), Some(Verdict::HeaderTimeout));
    }

    #[test]
    fn a_keep_alive_connection_between_requests_has_no_header_clock() {
        let mut w = watchdog();
        assert_eq!(w.tick(at(1, 0, 1, 0), false), None);
        // Answered, then nothing: only the idle limit applies.
        for i in 0..16 {
            assert_eq!(w.tick(at(1, 1, 1, 1), false), None, "tick {i}");
        }
        assert_eq!(w.tick(at(1, 1, 1, 1), false), Some(Verdict::Idle));
    }

    #[test]
    fn http2_connections_have_no_header_clock() {
        let mut w = watchdog();
        for i in 1..=10 {
            assert_eq!(w.tick(at(i, i, 3, 3), true), None, "tick {i}");
        }
    }

    #[test]
    fn a_connection_where_nothing_moves_is_closed_after_the_idle_limit() {
        let mut w = watchdog();
        for i in 1..16 {
            assert_eq!(w.tick(at(0, 0, 0, 0), false), None, "tick {i}");
        }
        assert_eq!(w.tick(at(0, 0, 0, 0), false), Some(Verdict::Idle));
    }
}
