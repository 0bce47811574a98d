//! Forwarding to a tenant's upstream: one pooled keep-alive client per tenant,
//! request rewriting (target, headers), timeouts, and WebSocket tunnels.
//!
//! Streams bodies both ways; never buffers a whole body. Knows nothing of sessions or
//! route policy: the pipeline decides, this module only carries the request.

use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls_pki_types::CertificateDer;
use sha2::{Digest, Sha256};

use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, StatusCode, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::body::LimitedBody;
use super::pool::Http1Pool;
use super::resolve::AllowlistResolver;
use super::upstream_guard::{Rejection, UpstreamGuard};
use crate::config::{AllowEntry, GuardSettings, Limits, Tenant, Tier};

/// Why a request did not reach its upstream, or a tier's upstream client could not be
/// built. The listener turns it into its answer; the inner text is for logs only.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The authorised path and the client's query do not form a request target.
    #[error("malformed request target")]
    MalformedTarget,
    /// The upstream's circuit breaker or bulkhead turned the request away.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// Connecting, sending the request or reading the response head failed.
    #[error("upstream request failed")]
    Failed,
    /// No response head within the response timeout.
    #[error("upstream response timed out")]
    TimedOut,
    /// rustls refused a certificate of the tier's extra CA bundle.
    #[error("upstream CA certificate: {0}")]
    CaCertificate(rustls::Error),
    /// rustls refused the tier's client certificate or its key.
    #[error("upstream client certificate: {0}")]
    ClientCertificate(rustls::Error),
    /// The TLS client could not be set up.
    #[error(transparent)]
    Tls(rustls::Error),
}

/// A tenant's upstream with its own connection pool.
#[derive(Clone)]
pub struct UpstreamClient {
    transport: Transport,
    /// Breaker and bulkhead of this upstream; kept across reloads with the pool.
    guard: UpstreamGuard,
    /// What it was built from.
    settings: ClientSettings,
    scheme: http::uri::Scheme,
    authority: http::uri::Authority,
    response_timeout: Duration,
}

/// How requests reach the upstream.
#[derive(Clone)]
enum Transport {
    /// Plain HTTP: the gateway's own lean HTTP/1.1 pool (the common, hot case).
    Plain(std::sync::Arc<Http1Pool>),
    /// HTTPS: hyper-util's client with rustls.
    Tls(Box<Client<HttpsConnector<HttpConnector<AllowlistResolver>>, LimitedBody>>),
}

impl std::fmt::Debug for UpstreamClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UpstreamClient")
            .field("authority", &self.authority)
            .finish_non_exhaustive()
    }
}

/// What a client was built from; a reload keeps the client (and its warm pool and
/// breaker state) only when this is unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ClientSettings {
    upstream: String,
    response_timeout: Duration,
    connect_timeout: Duration,
    guard: GuardSettings,
    allow: Vec<AllowEntry>,
    client_cert: Option<[u8; 32]>,
    ca: Option<[u8; 32]>,
}

impl ClientSettings {
    fn of(tenant: &Tenant, tier: &Tier, limits: &Limits) -> Self {
        ClientSettings {
            upstream: format!("{}://{}", tenant.upstream.scheme, tenant.upstream.authority),
            response_timeout: limits.upstream_response_timeout,
            connect_timeout: limits.upstream_connect_timeout,
            guard: tenant.upstream_guard.clone(),
            allow: tier.upstream_allowlist.clone(),
            client_cert: tier.keys.upstream_client_cert.as_ref().map(|auth| {
                let mut d = Sha256::new();
                auth.chain.iter().for_each(|c| d.update(c));
                d.update(auth.key.fingerprint());
                d.finalize().into()
            }),
            ca: tier.keys.upstream_ca.as_ref().map(|certs| {
                let mut d = Sha256::new();
                certs.iter().for_each(|c| d.update(c));
                d.finalize().into()
            }),
        }
    }
}

impl UpstreamClient {
    /// Builds a pooled client for a tenant's upstream, connecting only to addresses its
    /// tier's allowlist covers and presenting the tier's client certificate over TLS.
    pub fn new(tenant: &Tenant, tier: &Tier, limits: &Limits) -> Result<Self, UpstreamError> {
        let upstream = &tenant.upstream;
        let allow = Arc::new(tier.upstream_allowlist.clone());
        let transport = if upstream.scheme == http::uri::Scheme::HTTP {
            Transport::Plain(Arc::new(Http1Pool::new(
                &upstream.host,
                upstream.port,
                limits.upstream_connect_timeout,
                allow,
                &tier.name,
            )))
        } else {
            let resolver = AllowlistResolver {
                allow,
                port: upstream.port,
                tier: Arc::from(tier.name.as_str()),
            };
            Transport::Tls(Box::new(tls_client(limits, resolver, tier)?))
        };
        Ok(UpstreamClient {
            transport,
            guard: UpstreamGuard::new(tenant.upstream_guard.clone()),
            settings: ClientSettings::of(tenant, tier, limits),
            scheme: upstream.scheme.clone(),
            authority: upstream.authority.clone(),
            response_timeout: limits.upstream_response_timeout,
        })
    }
}

/// The HTTPS client (rustls, webpki roots, pooled keep-alive), resolving through the
/// allowlist and presenting the tier's client certificate when it has one.
fn tls_client(
    limits: &Limits,
    resolver: AllowlistResolver,
    tier: &Tier,
) -> Result<Client<HttpsConnector<HttpConnector<AllowlistResolver>>, LimitedBody>, UpstreamError> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(limits.upstream_connect_timeout));
    http.enforce_http(false);
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in tier.keys.upstream_ca.iter().flatten() {
        roots
            .add(CertificateDer::from(cert.as_ref()))
            .map_err(UpstreamError::CaCertificate)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(UpstreamError::Tls)?
        .with_root_certificates(roots);
    let config = match &tier.keys.upstream_client_cert {
        Some(auth) => builder
            .with_client_auth_cert(auth.chain.clone(), auth.key.expose_secret().clone_key())
            .map_err(UpstreamError::ClientCertificate)?,
        None => builder.with_no_client_auth(),
    };
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(config)
        .https_only()
        .enable_http1()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .pool_timer(TokioTimer::new())
        .timer(TokioTimer::new())
        .build(connector))
}

impl UpstreamClient {
    /// True when this client talks to the same upstream with the same limits, so a
    /// reload can keep its warm pool.
    pub fn same_as(&self, tenant: &Tenant, tier: &Tier, limits: &Limits) -> bool {
        self.settings == ClientSettings::of(tenant, tier, limits)
    }

    /// The upstream's breaker and bulkhead.
    pub fn guard(&self) -> &UpstreamGuard {
        &self.guard
    }

    /// The upstream URI for an authorised (canonical) path and the original query of
    /// `original`. When the client already sent the canonical path, its path and query
    /// are shared, not copied.
    pub fn target(&self, path: &str, original: &Uri) -> Result<Uri, UpstreamError> {
        let pq = match (original.path_and_query(), original.query()) {
            (Some(sent), _) if sent.path() == path => Ok(sent.clone()),
            (_, Some(q)) => PathAndQuery::try_from(format!("{path}?{q}")),
            (_, None) => PathAndQuery::try_from(path),
        }
        .map_err(|_| UpstreamError::MalformedTarget)?;
        if matches!(self.transport, Transport::Plain(_)) {
            return Ok(Uri::from(pq));
        }
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| UpstreamError::MalformedTarget)
    }

    /// Sends the request; the response head must arrive within the response timeout.
    /// Returns the response and the time to its head.
    pub async fn send(
        &self,
        mut req: Request<LimitedBody>,
        host: &HeaderValue,
    ) -> Result<(Response<Incoming>, Duration), UpstreamError> {
        *req.version_mut() = Version::HTTP_11;
        req.headers_mut().insert(HOST, host.clone());
        let started = Instant::now();
        let exchange = async {
            match &self.transport {
                Transport::Plain(pool) => pool.send(req).await.map_err(|e| e.to_string()),
                Transport::Tls(client) => client.request(req).await.map_err(|e| e.to_string()),
            }
        };
        match tokio::time::timeout(self.response_timeout, exchange).await {
            Ok(Ok(resp)) => Ok((resp, started.elapsed())),
            Ok(Err(e)) => {
                tracing::warn!(upstream = %self.authority, error = %e, "upstream request failed");
                Err(UpstreamError::Failed)
            }
            Err(_) => {
                tracing::warn!(upstream = %self.authority, "upstream response timed out");
                Err(UpstreamError::TimedOut)
            }
        }
    }
}

/// The session behind a long-lived connection, so the connection can close when the
/// session is revoked.
pub struct SessionWatch {
    /// Sessions, for revocation events and store re-checks.
    pub sessions: std::sync::Arc<crate::session::manager::Sessions>,
    /// The session's tier, tenant, subject and store key.
    pub conn: crate::session::manager::OpenConnection,
}

impl SessionWatch {
    /// The watch of a session's connection.
    pub fn of(sessions: &std::sync::Arc<crate::session::manager::Sessions>, s: &crate::session::SessionRecord) -> Self {
        SessionWatch {
            sessions: sessions.clone(),
            conn: crate::session::manager::OpenConnection {
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
                    let now = crate::unix_now();
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
                tracing::info!(event.kind = "security", event.action = "session_revoked", "closed a WebSocket of a revoked session");
            }
        }
    });
}
