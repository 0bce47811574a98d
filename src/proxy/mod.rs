//! The public listener: accepts connections (TLS or plaintext), serves HTTP/1.1 and
//! HTTP/2 on each with hyper, and drains in-flight requests on shutdown. Each
//! connection's limits and its drain are its watchdog's ([`conn`]).
//!
//! Request handling itself is in [`pipeline`]; this module only owns connections. The
//! listener's TLS settings come built in the live snapshot (`crate::tls`); the upstream
//! side of forwarding is `crate::upstream`.

pub mod body;
pub mod conn;
pub mod forward_auth;
pub mod headers;
pub mod identity;
pub mod pipeline;
mod reserved;
pub mod respond;
pub mod tunnel;

use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::config::Limits;
use pipeline::{ConnInfo, Pipeline};

/// Serves the public listener until `shutdown` turns true, then stops accepting and
/// waits up to the grace period for open requests to finish.
pub async fn serve(listener: TcpListener, pipeline: Arc<Pipeline>, mut shutdown: watch::Receiver<bool>) {
    let connections = Arc::new(conn::Connections::new(pipeline.metrics.open_connections.clone()));
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
            https: gateway.listen.external.https(snapshot.tls.is_some()),
            peer_trusted: headers::is_trusted_proxy(peer.ip(), &gateway.trusted_proxies),
            port,
        };
        let tls = snapshot.tls.clone();
        drop(snapshot);
        let pipeline = pipeline.clone();
        let state = Arc::new(conn::ConnState::default());
        let io = conn::TrackedIo::new(stream, state.clone());
        let open = connections.open();
        let (idle, header_read) = (limits.idle_timeout, limits.header_read_timeout);
        let shared = state.clone();
        let watched = state.clone();
        let task = tokio::spawn(async move {
            let _open = open;
            let builder = connection_builder(&limits);
            let service = service_fn(move |req| pipeline.clone().handle(req, conn, shared.clone()));
            match tls {
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
                    match tokio::time::timeout(limits.header_read_timeout, acceptor.accept(io)).await {
                        Ok(Ok(stream)) => {
                            state.handshake_done(stream.get_ref().1.alpn_protocol() == Some(b"h2"));
                            let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
                            let _ = conn::Draining::new(conn, state).await;
                        }
                        Ok(Err(e)) => tracing::debug!(error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!("TLS handshake timed out"),
                    }
                }
                None => {
                    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
                    let _ = conn::Draining::new(conn, state).await;
                }
            }
        });
        conn::spawn_watchdog(task.abort_handle(), watched, (idle, header_read), shutdown.clone());
    }
    drop(listener);
    let grace = pipeline.live.snapshot().config.gateway.limits.shutdown_grace;
    tracing::info!(grace_seconds = grace.as_secs(), "draining open connections");
    if tokio::time::timeout(grace, connections.all_closed()).await.is_err() {
        tracing::warn!("shutdown grace period ended with connections still open");
    }
}

/// HTTP/1.1 and HTTP/2 settings from the limits. HTTP/1 has no timer: the header-read
/// limit is the connection watchdog's ([`conn`]), which costs no timer per request.
///
/// HTTP/2 sends no keep-alive PINGs: every live peer answers them, so the connection
/// would never look idle to the watchdog, and a client that stalls its streams (zero
/// flow-control window) would hold their upstream bulkhead slots for as long as it liked.
/// Dead peers are closed by the idle limit instead, as on HTTP/1.
///
/// hyper may read heads up to twice `max_header_bytes`: the pipeline enforces the limit
/// itself and answers with a page and a request id, where hyper's own 431 is bare.
fn connection_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    let head_buffer = limits.max_header_bytes.saturating_mul(2);
    builder
        .http1()
        .max_buf_size(head_buffer.max(8192))
        .max_headers(limits.max_headers)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(head_buffer).unwrap_or(u32::MAX))
        .max_concurrent_streams(250)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(256)
        .keep_alive_interval(None);
    builder
}
