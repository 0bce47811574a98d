//! The public listener: accepts connections (TLS or plaintext), serves HTTP/1.1 and
//! HTTP/2 on each with hyper, enforces connection-level limits, and drains in-flight
//! requests on shutdown.
//!
//! Request handling itself is in [`pipeline`]; this module only owns connections. The
//! listener's TLS settings come built in the live snapshot (`crate::tls`); the upstream
//! side of forwarding is `crate::upstream`.

pub mod body;
pub mod forward_auth;
pub mod headers;
pub mod pipeline;
mod reserved;
pub mod respond;
pub mod tunnel;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Limits;
use pipeline::{ConnInfo, Pipeline};

/// Serves the public listener until `shutdown` turns true, then stops accepting and
/// waits up to the grace period for open requests to finish.
pub async fn serve(listener: TcpListener, pipeline: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) {
    let graceful = GracefulShutdown::new();
    // The bound port, not the configured one, so `--listen 127.0.0.1:0` still gives
    // tenants a usable canonical origin.
    let port = match listener.local_addr() {
        Ok(addr) => addr.port(),
        Err(_) => pipeline.live.snapshot().config.gateway.listen.public.port(),
    };
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let _ = stream.set_nodelay(true);
        let snapshot = pipeline.live.snapshot();
        let gateway = &snapshot.config.gateway;
        let limits = gateway.limits.clone();
        let conn = ConnInfo {
            peer,
            tls: snapshot.tls.is_some(),
            peer_trusted: headers::is_trusted_proxy(peer.ip(), &gateway.trusted_proxies),
            port,
        };
        let tls = snapshot.tls.clone();
        drop(snapshot);
        let pipeline = pipeline.clone();
        let watcher = graceful.watcher();
        pipeline.metrics.open_connections.inc();
        tokio::spawn(async move {
            let metrics = pipeline.metrics.clone();
            let activity = Arc::new(Activity::new());
            let io = TrackedIo {
                inner: stream,
                activity: activity.clone(),
            };
            let builder = connection_builder(&limits);
            let service = service_fn(move |req| pipeline.clone().handle(req, conn));
            match tls {
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            run_connection(watcher.watch(conn.into_owned()), &activity, limits.idle_timeout).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    run_connection(watcher.watch(conn.into_owned()), &activity, limits.idle_timeout).await;
                }
            }
            metrics.open_connections.dec();
        });
    }
    drop(listener);
    let grace = pipeline.live.snapshot().config.gateway.limits.shutdown_grace;
    tracing::info!(grace_seconds = grace.as_secs(), "draining open connections");
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("shutdown grace period ended with connections still open");
    }
}

/// HTTP/1.1 and HTTP/2 settings from the limits.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)))
        .keep_alive_timeout(Duration::from_secs(20));
    builder
}

/// Drives a connection, closing it when no byte moved for `idle_timeout` (a stalled
/// body or an idle HTTP/2 connection). Upgraded connections leave this future and are
/// not subject to it.
async fn run_connection<F: std::future::Future>(conn: F, activity: &Activity, idle_timeout: Duration) {
    tokio::pin!(conn);
    let tick = (idle_timeout / 4).max(Duration::from_millis(250));
    let mut seen = activity.moves();
    let mut quiet_since = Instant::now();
    loop {
        tokio::select! {
            _ = &mut conn => return,
            _ = tokio::time::sleep(tick) => {
                let moves = activity.moves();
                if moves != seen {
                    seen = moves;
                    quiet_since = Instant::now();
                } else if quiet_since.elapsed() >= idle_timeout {
                    tracing::debug!("closing idle connection");
                    return;
                }
            }
        }
    }
}

/// Counts reads and writes that moved bytes on a connection. A counter, not a clock:
/// the watchdog compares it between ticks, so the hot path never reads the time.
struct Activity {
    moves: AtomicU64,
}

impl Activity {
    fn new() -> Self {
        Activity {
            moves: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        self.moves.fetch_add(1, Ordering::Relaxed);
    }

    fn moves(&self) -> u64 {
        self.moves.load(Ordering::Relaxed)
    }
}

pin_project_lite::pin_project! {
    /// A socket that records when bytes last moved.
    struct TrackedIo<T> {
        #[pin]
        inner: T,
        activity: Arc<Activity>,
    }
}

impl<T: AsyncRead> AsyncRead for TrackedIo<T> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        res
    }
}

impl<T: AsyncWrite> AsyncWrite for TrackedIo<T> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<std::io::Result<usize>> {
        let this = self.project();
        let res = this.inner.poll_write(cx, data);
        if matches!(res, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
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
            this.activity.touch();
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
