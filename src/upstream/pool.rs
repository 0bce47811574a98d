//! A keep-alive pool of HTTP/1.1 connections to one plain-HTTP upstream.
//!
//! Lighter than a general client: a connection is taken only when hyper says it is
//! ready, handed back as soon as the request is sent (it becomes ready again once the
//! response has been read), and closed connections are dropped when seen. No task or
//! timer per request. WebSocket upgrades work (connections are driven with upgrades).

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
}

/// Connections to one `host:port`.
pub struct Http1Pool {
    host: String,
    port: u16,
    connect_timeout: Duration,
    /// The tier's allowlist: DNS answers for a named host must fall inside it.
    allow: Arc<Vec<AllowEntry>>,
    tier: String,
    idle: Mutex<Vec<SendRequest<LimitedBody>>>,
}

impl Http1Pool {
    /// An empty pool for `host:port`.
    pub fn new(host: &str, port: u16, connect_timeout: Duration, allow: Arc<Vec<AllowEntry>>, tier: &str) -> Self {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        Http1Pool {
            host,
            port,
            connect_timeout,
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
            Some(mut sender) => {
                let sent = sender.try_send_request(req);
                self.put_back(sender);
                match sent.await {
                    Ok(resp) => return Ok(resp),
                    Err(mut e) => match e.take_message() {
                        Some(req) => req,
                        None => return Err(PoolError::Http(e.into_error())),
                    },
                }
            }
            None => req,
        };
        let mut sender = self.connect().await?;
        let sent = sender.send_request(req);
        self.put_back(sender);
        Ok(sent.await?)
    }

    fn take_ready(&self) -> Option<SendRequest<LimitedBody>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        let mut i = idle.len();
        while i > 0 {
            i -= 1;
            let Some(sender) = idle.get(i) else { break };
            if sender.is_closed() {
                idle.swap_remove(i);
            } else if sender.is_ready() {
                return Some(idle.swap_remove(i));
            }
        }
        None
    }

    fn put_back(&self, sender: SendRequest<LimitedBody>) {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_POOLED {
            idle.push(sender);
        }
    }

    async fn connect(&self) -> Result<SendRequest<LimitedBody>, PoolError> {
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
        tokio::spawn(async move {
            if let Err(e) = conn.with_upgrades().await {
                tracing::debug!(error = %e, "upstream connection closed with an error");
            }
        });
        Ok(sender)
    }
}
