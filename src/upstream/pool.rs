//! A keep-alive pool of HTTP/1.1 connections to one plain-HTTP upstream.
//!
//! Lighter than a general client: a connection is taken only when hyper says it is
//! ready, handed back as soon as the request is sent (it becomes ready again once the
//! response has been read), and closed connections are dropped when seen. No task or
//! timer per request: the response timeout is enforced by each connection's own task,
//! with one timer re-armed once per tick (an eighth of the timeout), which closes the
//! connection when a response head is late. WebSocket upgrades work (connections are
//! driven with upgrades).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::body::LimitedBody;
use super::resolve::allowed_addrs;
use crate::config::AllowEntry;

/// Most idle connections kept; beyond it a finished connection is closed.
const MAX_POOLED: usize = 1024;

/// Ticks of a connection's watchdog per response timeout: a late head is noticed at most
/// an eighth of the timeout late, never early.
const TICKS_PER_TIMEOUT: u64 = 8;

/// Why a request could not be sent.
#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// No connection within the connect timeout.
    #[error("connect timed out")]
    ConnectTimeout,
    /// Connecting failed.
    #[error("connect failed: {0}")]
    Connect(std::io::Error),
    /// The HTTP exchange failed.
    #[error("upstream exchange failed: {0}")]
    Http(#[from] hyper::Error),
    /// No response head within the response timeout.
    #[error("response timed out")]
    ResponseTimeout,
}

/// What a pooled connection's task and the requests sent on it share.
#[derive(Default)]
struct Watch {
    /// Ticks of the connection's watchdog so far.
    ticks: AtomicU64,
    /// `ticks + 1` when the request now waiting for its head was sent; 0 when none waits.
    waiting_since: AtomicU64,
    /// The watchdog closed the connection because a head was late.
    timed_out: AtomicBool,
}

impl Watch {
    /// Waits for the head of the request just sent on this connection; says whether
    /// the watchdog closed the connection because it was late.
    async fn head<F: std::future::Future>(&self, sent: F) -> (F::Output, bool) {
        self.waiting_since
            .store(self.ticks.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        // Cleared also when the caller gives up waiting (its client went away), so an
        // idle connection is not taken for a late one.
        let _waiting = Waiting(self);
        let result = sent.await;
        (result, self.timed_out.load(Ordering::Relaxed))
    }
}

/// Clears [`Watch::waiting_since`] when dropped.
struct Waiting<'a>(&'a Watch);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting_since.store(0, Ordering::Relaxed);
    }
}

/// A pooled connection.
struct Pooled {
    sender: SendRequest<LimitedBody>,
    watch: Arc<Watch>,
}

/// Connections to one `host:port`.
pub struct Http1Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    response_timeout: Duration,
    /// The tier's allowlist: DNS answers for a named host must fall inside it.
    allow: Arc<Vec<AllowEntry>>,
    tier: String,
    idle: Mutex<Vec<Pooled>>,
}

impl Http1Pool {
    /// An empty pool for `host:port`; a response head must arrive within
    /// `response_timeout` of sending the request.
    pub fn new(
        host: &str,
        port: u16,
        (connect_timeout, response_timeout): (Duration, Duration),
        allow: Arc<Vec<AllowEntry>>,
        tier: &str,
    ) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Http1Pool {
            host,
            port,
            connect_timeout,
            response_timeout,
            allow,
            tier: tier.to_string(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Sends a request (origin-form URI) over a ready pooled connection or a new one.
    /// A pooled connection that turns out to be closed before the request left is
    /// replaced by a new connection once; a request is never sent twice.
    pub async fn send(&self, req: Request<LimitedBody>) -> Result<Response<Incoming>, PoolError> {
        let req = match self.take_ready() {
            Some(mut conn) => {
                let sent = conn.sender.try_send_request(req);
                let watch = conn.watch.clone();
                self.put_back(conn);
                match watch.head(sent).await {
                    (Ok(resp), _) => return Ok(resp),
                    (Err(_), true) => return Err(PoolError::ResponseTimeout),
                    (Err(mut e), false) => match e.take_message() {
                        Some(req) => req,
                        None => return Err(PoolError::Http(e.into_error())),
                    },
                }
            }
            None => req,
        };
        // Boxed: connecting is rare, and its future would make every request's larger.
        Box::pin(self.send_on_new_connection(req)).await
    }

    async fn send_on_new_connection(&self, req: Request<LimitedBody>) -> Result<Response<Incoming>, PoolError> {
        let mut conn = self.connect().await?;
        let sent = conn.sender.send_request(req);
        let watch = conn.watch.clone();
        self.put_back(conn);
        match watch.head(sent).await {
            (Ok(resp), _) => Ok(resp),
            (Err(_), true) => Err(PoolError::ResponseTimeout),
            (Err(e), false) => Err(PoolError::Http(e)),
        }
    }

    fn take_ready(&self) -> Option<Pooled> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let Some(conn) = idle.get(i) else { break };
            if conn.sender.is_closed() {
                idle.swap_remove(i);
            } else if conn.sender.is_ready() {
                return Some(idle.swap_remove(i));
            }
        }
        None
    }

    fn put_back(&self, conn: Pooled) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_POOLED {
            idle.push(conn);
        }
    }

    async fn connect(&self) -> Result<Pooled, PoolError> {
        let connect = async {
            let addrs = allowed_addrs(&self.host, self.port, &self.allow, &self.tier).await?;
            TcpStream::connect(addrs.as_slice()).await
        };
        let stream = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| PoolError::ConnectTimeout)?
            .map_err(PoolError::Connect)?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
        let watch = Arc::new(Watch::default());
        drive(conn, watch.clone(), self.response_timeout);
        Ok(Pooled { sender, watch })
    }
}

/// Drives one upstream connection until it closes, in its own task, and watches it from
/// another one (so the connection's task polls no timer on every wake-up): when the head
/// of a request sent on it is later than `response_timeout`, the connection is dropped,
/// which fails the waiting request (it must not be reused for another one).
fn drive(conn: http1::Connection<TokioIo<TcpStream>, LimitedBody>, watch: Arc<Watch>, response_timeout: Duration) {
    let task = tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "upstream connection closed with an error");
        }
    })
    .abort_handle();
    let tick = (response_timeout / TICKS_PER_TIMEOUT as u32).max(Duration::from_millis(10));
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + tick, tick);
        loop {
            ticks.tick().await;
            if task.is_finished() {
                return;
            }
            let ticks = watch.ticks.fetch_add(1, Ordering::Relaxed) + 1;
            let since = watch.waiting_since.load(Ordering::Relaxed);
            // Sent at tick `since - 1` or later: late once a whole timeout has passed.
            if since != 0 && ticks >= since + TICKS_PER_TIMEOUT {
                watch.timed_out.store(true, Ordering::Relaxed);
                task.abort();
                return;
            }
        }
    });
}
