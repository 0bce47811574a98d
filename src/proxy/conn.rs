//! One client connection's watchdog task and the state its requests share with it.
//!
//! The connection limits (idle, header read; the rules are `crate::conn_watch`'s) are
//! enforced by one task per connection that wakes once per tick, instead of a timer per
//! request: the requests only bump counters, and the watchdog reads them between ticks.
//!
//! The watchdog also starts a connection's graceful shutdown when the listener stops
//! ([`Draining`]), and [`Connections`] counts the open ones for the listener to wait on.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::task::AtomicWaker;
use hyper_util::server::graceful::GracefulConnection;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{Notify, watch};

use super::headers::ForwardingCache;
use super::identity::LastIdentity;
use crate::conn_watch::{Activity, InFlight, Watchdog, Watched};
use crate::session::CookieMemo;

/// The socket of a public-listener connection, counted for its watchdog.
pub type TrackedIo<T> = crate::conn_watch::TrackedIo<T, Arc<ConnState>>;

/// What a connection's requests and its watchdog share.
#[derive(Default)]
pub struct ConnState {
    /// What the watchdog reads.
    activity: Activity,
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
    pub fn begin(&self, version: http::Version) -> InFlight<&Activity> {
        InFlight::begin(&self.activity, version)
    }

    /// Says that the bytes read so far were the TLS handshake's, not a request head's, and
    /// whether it agreed on HTTP/2: a connection silent after its handshake (or its HTTP/2
    /// preface) is held to the idle limit.
    pub fn handshake_done(&self, http2: bool) {
        self.activity.handshake_done(http2);
    }

    fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.drain_waker.wake();
    }
}

impl Watched for Arc<ConnState> {
    fn activity(&self) -> &Activity {
        &self.activity
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
    let (tick, mut watchdog) = Watchdog::new(idle_timeout, header_read_timeout, state.activity.counters());
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
            if let Some(verdict) = watchdog.tick(state.activity.counters()) {
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
