//! The limits on a client connection, one set of rules for both listeners (the public
//! one in `crate::proxy::conn`, the admin one in `crate::admin::listener`):
//! - **Idle**: no byte moved either way for `idle_timeout` (a stalled body, a silent
//!   keep-alive or HTTP/2 connection).
//! - **Header read** (HTTP/1): bytes of a request head arrived but no whole head for
//!   `header_read_timeout`, while no request was being handled (Slowloris).
//!
//! A connection's IO ([`TrackedIo`]) and requests ([`InFlight`]) only bump the counters
//! of its [`Activity`]; a [`Watchdog`] reads them once per tick (a quarter of the shorter
//! limit, at least 250 ms) and says when a limit is broken. A limit is never enforced
//! early, and at most two ticks late. Running the ticks, and closing the connection on a
//! verdict, is each listener's.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a connection's IO and requests tell its watchdog.
#[derive(Default)]
pub struct Activity {
    /// Reads that moved bytes.
    reads: AtomicU64,
    /// Writes that moved bytes.
    writes: AtomicU64,
    /// Requests whose head was read and handed on.
    started: AtomicU64,
    /// Requests whose handling ended (answered or dropped).
    finished: AtomicU64,
    /// `reads` when the last request's handling ended: reads after it, with no request in
    /// flight, are the next request's head arriving.
    reads_at_finish: AtomicU64,
    /// An HTTP/2 request was seen: the header-read limit is HTTP/1's (HTTP/2 streams are
    /// bounded by hyper's own settings, and a client's PINGs move bytes between requests).
    http2: AtomicBool,
}

impl Activity {
    /// Says that the bytes read so far were a TLS handshake's, not a request head's, and
    /// whether it agreed on HTTP/2 (ALPN `h2`): then no HTTP/1 head will come at all, and
    /// the client's preface and SETTINGS are not one either.
    pub fn handshake_done(&self, http2: bool) {
        if http2 {
            self.http2.store(true, Ordering::Relaxed);
        }
        self.no_head_yet();
    }

    /// Says that the bytes read so far were no request head's.
    fn no_head_yet(&self) {
        self.reads_at_finish
            .store(self.reads.load(Ordering::Relaxed), Ordering::Relaxed);
    }

    /// The counters as they are now.
    pub fn counters(&self) -> Counters {
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

/// Whatever holds a connection's [`Activity`]: the activity itself, a reference or an
/// `Arc` to it, or a listener's larger per-connection state.
pub trait Watched {
    /// The connection's activity.
    fn activity(&self) -> &Activity;
}

impl Watched for &Activity {
    fn activity(&self) -> &Activity {
        self
    }
}

impl Watched for Arc<Activity> {
    fn activity(&self) -> &Activity {
        self
    }
}

/// A request being handled, from its head being read until this is dropped.
pub struct InFlight<W: Watched> {
    watched: W,
}

impl<W: Watched> InFlight<W> {
    /// Counts a request of `version` as started.
    pub fn begin(watched: W, version: http::Version) -> Self {
        let activity = watched.activity();
        if version == http::Version::HTTP_2 {
            activity.http2.store(true, Ordering::Relaxed);
        }
        activity.started.fetch_add(1, Ordering::Relaxed);
        InFlight { watched }
    }
}

impl<W: Watched> Drop for InFlight<W> {
    fn drop(&mut self) {
        let activity = self.watched.activity();
        activity.no_head_yet();
        activity.finished.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project_lite::pin_project! {
    /// A socket that counts the reads and writes that moved bytes.
    pub struct TrackedIo<T, W> {
        #[pin]
        inner: T,
        watched: W,
    }
}

impl<T, W: Watched> TrackedIo<T, W> {
    /// Wraps a socket.
    pub fn new(inner: T, watched: W) -> Self {
        TrackedIo { inner, watched }
    }
}

impl<T: AsyncRead, W: Watched> AsyncRead for TrackedIo<T, W> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.watched.activity().reads.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl<T: AsyncWrite, W: Watched> AsyncWrite for TrackedIo<T, W> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.watched.activity().writes.fetch_add(1, Ordering::Relaxed);
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
            this.watched.activity().writes.fetch_add(1, Ordering::Relaxed);
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

/// [`Activity`] read at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counters {
    reads: u64,
    writes: u64,
    started: u64,
    finished: u64,
    reads_at_finish: u64,
    http2: bool,
}

/// Why the watchdog says to close a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Idle,
    HeaderTimeout,
}

/// A connection's limits, checked at each tick from its counters; its memory between
/// ticks is counted in ticks.
pub struct Watchdog {
    limits: WatchLimits,
    last: Counters,
    /// Ticks since a byte last moved.
    quiet: u32,
    /// Ticks since bytes of an unfinished request head began to arrive, if they did.
    reading_head: Option<u32>,
}

/// The two limits, in ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// The tick to call [`Watchdog::tick`] at, and a watchdog that starts from `now`.
    pub fn new(idle_timeout: Duration, header_read_timeout: Duration, now: Counters) -> (Duration, Self) {
        let (tick, limits) = WatchLimits::of(idle_timeout, header_read_timeout);
        let watchdog = Watchdog {
            limits,
            last: now,
            quiet: 0,
            reading_head: None,
        };
        (tick, watchdog)
    }

    /// One tick: what the counters say since the last one.
    pub fn tick(&mut self, now: Counters) -> Option<Verdict> {
        let last = std::mem::replace(&mut self.last, now);
        let moved = now.reads != last.reads || now.writes != last.writes;
        self.quiet = if moved { 0 } else { self.quiet.saturating_add(1) };
        // A tick may have seen bytes arrive just after the previous one: count it whole,
        // and the limit is reached one tick later than the exact time at the latest.
        // Bytes read since the last request ended are the next head, even when they came
        // in the same tick as that request (and nothing since).
        let idle_between_requests = now.started == now.finished && now.started == last.started;
        self.reading_head = match self.reading_head {
            _ if now.http2 || !idle_between_requests => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Counters where the last request (if any) ended after every read so far.
    fn at(reads: u64, writes: u64, started: u64, finished: u64) -> Counters {
        Counters {
            reads,
            writes,
            started,
            finished,
            reads_at_finish: if finished > 0 { reads } else { 0 },
            http2: false,
        }
    }

    fn watchdog() -> Watchdog {
        // 8 s idle, 2 s header read: a 500 ms tick, 16 and 4 ticks.
        let (tick, w) = Watchdog::new(Duration::from_secs(8), Duration::from_secs(2), at(0, 0, 0, 0));
        assert_eq!(tick, Duration::from_millis(500));
        assert_eq!(w.limits, WatchLimits { idle: 16, header: 4 });
        w
    }

    #[test]
    fn the_tick_is_a_quarter_of_the_shorter_limit_and_limits_round_up() {
        let (tick, w) = Watchdog::new(Duration::from_millis(900), Duration::from_secs(60), Counters::default());
        assert_eq!(tick, Duration::from_millis(250), "never under 250 ms");
        assert_eq!(w.limits, WatchLimits { idle: 4, header: 240 });
    }

    /// If this broke, a trickled request head (Slowloris) would hold a connection for as
    /// long as bytes kept coming.
    #[test]
    fn a_head_that_never_completes_is_cut_off_after_the_header_limit() {
        let mut w = watchdog();
        // A byte every tick, never a whole head.
        for i in 1..=4 {
            assert_eq!(w.tick(at(i, 0, 0, 0)), None, "tick {i}");
        }
        assert_eq!(w.tick(at(5, 0, 0, 0)), Some(Verdict::HeaderTimeout));
    }

    /// If this broke, a slow upstream or handler, or a streamed answer, would be cut off
    /// as if its client were trickling a head.
    #[test]
    fn a_completed_head_and_a_request_in_flight_stop_the_header_clock() {
        let mut w = watchdog();
        assert_eq!(w.tick(at(1, 0, 0, 0)), None);
        assert_eq!(w.tick(at(2, 0, 1, 0)), None, "the head arrived");
        // A slow upstream: nothing moves, the request is in flight.
        for i in 0..10 {
            assert_eq!(w.tick(at(2, 0, 1, 0)), None, "tick {i}");
        }
        // Answered; a streamed body the client does not talk during.
        for i in 0..10 {
            assert_eq!(w.tick(at(2, 1 + i, 1, 1)), None, "tick {i}");
        }
    }

    /// If this broke, an upload (a request body arriving while its request is handled)
    /// would be cut off as if it were a trickled head.
    #[test]
    fn a_body_arriving_while_its_request_is_handled_is_not_a_head() {
        let mut w = watchdog();
        for i in 1..=10 {
            assert_eq!(w.tick(at(1 + i, 0, 1, 0)), None, "tick {i}");
        }
    }

    /// If this broke, a busy keep-alive connection would be cut off as if it were
    /// trickling a head.
    #[test]
    fn whole_requests_each_tick_never_start_the_header_clock() {
        let mut w = watchdog();
        for i in 1..=20 {
            assert_eq!(w.tick(at(i, i, i, i)), None, "tick {i}");
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
        assert_eq!(w.tick(stalled), None, "the request's own tick");
        for i in 0..4 {
            assert_eq!(w.tick(stalled), None, "tick {i}");
        }
        assert_eq!(w.tick(stalled), Some(Verdict::HeaderTimeout));
    }

    #[test]
    fn a_keep_alive_connection_between_requests_has_no_header_clock() {
        let mut w = watchdog();
        assert_eq!(w.tick(at(1, 0, 1, 0)), None);
        // Answered, then nothing: only the idle limit applies.
        for i in 0..16 {
            assert_eq!(w.tick(at(1, 1, 1, 1)), None, "tick {i}");
        }
        assert_eq!(w.tick(at(1, 1, 1, 1)), Some(Verdict::Idle));
    }

    /// If this broke, an HTTP/2 client's PINGs between requests would count as a head.
    #[test]
    fn http2_connections_have_no_header_clock() {
        let mut w = watchdog();
        for i in 1..=10 {
            // PINGs read after the last request ended.
            let pinged = Counters {
                http2: true,
                reads_at_finish: 0,
                ..at(i, i, 3, 3)
            };
            assert_eq!(w.tick(pinged), None, "tick {i}");
        }
    }

    /// If this broke, a silent connection would hold its place forever, or be cut
    /// before its time.
    #[test]
    fn a_connection_where_nothing_moves_is_closed_after_the_idle_limit() {
        let mut w = watchdog();
        for i in 1..16 {
            assert_eq!(w.tick(at(0, 0, 0, 0)), None, "tick {i}");
        }
        assert_eq!(w.tick(at(0, 0, 0, 0)), Some(Verdict::Idle));
    }

    /// If this broke, a TLS connection's handshake would count as the start of a head.
    #[test]
    fn a_tls_handshake_is_not_a_head() {
        let activity = Activity::default();
        activity.reads.store(3, Ordering::Relaxed);
        activity.handshake_done(false);
        let (_, mut w) = Watchdog::new(Duration::from_secs(8), Duration::from_secs(2), activity.counters());
        for i in 0..10 {
            assert_eq!(w.tick(activity.counters()), None, "tick {i}");
        }
        activity.reads.fetch_add(1, Ordering::Relaxed);
        for i in 0..4 {
            assert_eq!(w.tick(activity.counters()), None, "tick {i} of a head");
        }
        assert_eq!(w.tick(activity.counters()), Some(Verdict::HeaderTimeout));
    }

    /// If this broke, an HTTP/2 client's preface and SETTINGS, sent before its first
    /// request, would be timed as a trickled HTTP/1 head.
    #[test]
    fn after_an_h2_handshake_reads_before_the_first_request_are_not_a_head() {
        let activity = Activity::default();
        activity.reads.store(3, Ordering::Relaxed);
        activity.handshake_done(true);
        let (_, mut w) = Watchdog::new(Duration::from_secs(8), Duration::from_secs(2), activity.counters());
        for i in 0..10 {
            activity.reads.fetch_add(1, Ordering::Relaxed);
            assert_eq!(w.tick(activity.counters()), None, "tick {i}");
        }
    }

    /// If this broke, the watchdog would see none of a connection's traffic, or a
    /// finished request would leave its head counted as arriving.
    #[test]
    fn requests_and_io_bump_the_counters() {
        let activity = Activity::default();
        activity.reads.fetch_add(2, Ordering::Relaxed);
        let in_flight = InFlight::begin(&activity, http::Version::HTTP_11);
        assert_eq!(activity.counters().started, 1);
        assert_eq!(activity.counters().finished, 0);
        activity.reads.fetch_add(1, Ordering::Relaxed);
        drop(in_flight);
        let c = activity.counters();
        assert_eq!((c.finished, c.reads_at_finish, c.http2), (1, 3, false));
        let shared = Arc::new(activity);
        drop(InFlight::begin(shared.clone(), http::Version::HTTP_2));
        assert_eq!((shared.counters().finished, shared.counters().http2), (2, true));
    }
}
