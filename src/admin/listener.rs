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
//! The header-read and idle rules are `crate::conn_watch`'s, the same as the public
//! listener's, checked by each connection's task once per tick. hyper's own header-read timer is not used: it
//! also runs while a keep-alive connection waits for its next request, which is the idle
//! limit's business.
//!
//! On shutdown the loop stops accepting, every connection finishes its in-flight
//! requests and closes, and the listener waits for them up to `limits.shutdown_grace`.
//! Handlers see the client address as `ConnectInfo<SocketAddr>`, on both paths.
//!
//! It owns connections only: routes are the router's (`super`), and the public
//! listener's connections are `crate::proxy`'s.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use axum::http::header;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::config::Limits;
use crate::conn_watch::{Activity, InFlight, TrackedIo, Watchdog};

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
    let io = TrackedIo::new(stream, activity.clone());
    match acceptor {
        None => serve_http(io, peer, app, &limits, activity, shutdown).await,
        Some(acceptor) => match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await {
            Ok(Ok(tls)) => {
                activity.handshake_done(tls.get_ref().1.alpn_protocol() == Some(b"h2"));
                serve_http(tls, peer, app, &limits, activity, shutdown).await;
            }
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

    let (tick, mut watchdog) = Watchdog::new(limits.idle_timeout, limits.header_read_timeout, activity.counters());
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
                if let Some(verdict) = watchdog.tick(activity.counters()) {
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

    fn at(start: Instant, millis: u64) -> Instant {
        start + Duration::from_millis(millis)
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
