//! WebSocket tunnels, and the watch that ends a session's long-lived connections: once
//! the upstream answered `101`, the client's and the upstream's upgraded connections are
//! joined and bytes copied both ways; a session's tunnel (and a session's long response
//! stream, through `ProxyBody::watched`) closes soon after the session is revoked.
//!
//! Listener-side: it knows sessions. Connecting to the upstream is `upstream`'s.

use std::time::Duration;

use http::{Response, StatusCode};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

use crate::telemetry::{EventOutcome, SecurityEvent};

/// The session behind a long-lived connection, so the connection can close when the
/// session is revoked.
pub struct SessionWatch {
    /// Sessions, for revocation events and store re-checks.
    pub sessions: std::sync::Arc<crate::session::Sessions>,
    /// The session's tier, tenant, subject and store key.
    pub conn: crate::session::OpenConnection,
}

impl SessionWatch {
    /// The watch of a session's connection.
    pub fn of(sessions: &std::sync::Arc<crate::session::Sessions>, s: &crate::records::SessionRecord) -> Self {
        SessionWatch {
            sessions: sessions.clone(),
            conn: crate::session::OpenConnection {
                tier: s.tier.clone(),
                tenant: s.tenant.clone(),
                subject: s.subject.clone(),
                id_hash: s.id_hash,
            },
        }
    }

    /// Resolves once the session is revoked or no longer live: at once for revocations
    /// (and kill switches) made on this node, within 500 ms (a store re-check) for those
    /// made elsewhere. The connection counts as open (for drills) until then.
    pub async fn until_revoked(self) {
        let _open = self.sessions.track_open(self.conn.clone());
        let mut revocations = self.sessions.revocations();
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        loop {
            tokio::select! {
                event = revocations.recv() => match event {
                    Ok(event) if self.conn.ended_by(&event) => return,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                },
                _ = tick.tick() => {
                    let now = crate::clock::unix_now();
                    if !self.sessions.still_live(&self.conn.tier, &self.conn.id_hash, now).await {
                        return;
                    }
                }
            }
        }
    }
}

/// WebSocket close frame, server to client, status 1008 (policy violation).
const CLOSE_POLICY_VIOLATION: [u8; 4] = [0x88, 0x02, 0x03, 0xF0];

/// Joins the client's and the upstream's upgraded connections once the upstream
/// answered 101, and copies bytes both ways until either side closes. With a session,
/// the tunnel closes (WebSocket close 1008) within about a second of its revocation:
/// at once for revocations on this node, by a store re-check every 500 ms otherwise.
pub fn spawn_tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream_resp: &mut Response<Incoming>,
    watch: Option<SessionWatch>,
) {
    if upstream_resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    let upstream = hyper::upgrade::on(upstream_resp);
    tokio::spawn(async move {
        let (client, upstream) = match tokio::try_join!(client, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "websocket upgrade did not complete");
                return;
            }
        };
        let mut client = TokioIo::new(client);
        let mut upstream = TokioIo::new(upstream);
        let Some(watch) = watch else {
            if let Err(e) = tokio::io::copy_bidirectional(&mut client, &mut upstream).await {
                tracing::debug!(error = %e, "websocket tunnel closed with an error");
            }
            return;
        };
        let revoked = watch.until_revoked();
        tokio::select! {
            result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "websocket tunnel closed with an error");
                }
            }
            _ = revoked => {
                use tokio::io::AsyncWriteExt;
                let _ = client.write_all(&CLOSE_POLICY_VIOLATION).await;
                let _ = client.shutdown().await;
                SecurityEvent::new("session_revoked", EventOutcome::Success).info("closed a WebSocket of a revoked session");
            }
        }
    });
}
