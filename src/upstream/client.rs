//! [`UpstreamClient`]: one per tenant upstream, kept across reloads (with its warm pool
//! and its guard's state) while what it was built from is unchanged. It builds the
//! request target, sends the request (plain HTTP through the gateway's own pool, HTTPS
//! through hyper-util with the tier's TLS settings from `upstream::tls`) and bounds the
//! wait for the response head; it owns the upstream's circuit breaker and bulkhead.
//!
//! Streams bodies both ways; never buffers a whole body. Knows nothing of sessions, route
//! policy or the listener's answers: the pipeline decides, this module only carries the
//! request and says what went wrong as an [`UpstreamError`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};

use http::header::{HOST, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Response, Uri, Version};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use super::UpstreamError;
use super::body::LimitedBody;
use super::guard::UpstreamGuard;
use super::pool::{Http1Pool, PoolError};
use super::resolve::AllowlistResolver;
use super::tls;
use crate::config::{AllowEntry, GuardSettings, Limits, Tenant, Tier};

/// A tenant's upstream with its own connection pool.
#[derive(Clone)]
pub struct UpstreamClient {
    transport: Transport,
    /// Circuit breaker and bulkhead of this upstream; kept across reloads with the pool.
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
/// circuit breaker state) only when this is unchanged.
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
                (limits.upstream_connect_timeout, limits.upstream_response_timeout),
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

/// The HTTPS client (rustls, pooled keep-alive), resolving through the allowlist, with
/// the tier's TLS settings ([`tls::client_config`]).
fn tls_client(
    limits: &Limits,
    resolver: AllowlistResolver,
    tier: &Tier,
) -> Result<Client<HttpsConnector<HttpConnector<AllowlistResolver>>, LimitedBody>, UpstreamError> {
    let mut http = HttpConnector::new_with_resolver(resolver);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(limits.upstream_connect_timeout));
    http.enforce_http(false);
    let config = tls::client_config(&tier.keys)?;
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

    /// The upstream's circuit breaker and bulkhead.
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
        let fault = req.body().fault();
        let started = Instant::now();
        // The plain pool enforces the response timeout itself, without a timer per
        // request; hyper-util's client gets one.
        let answer = match &self.transport {
            Transport::Plain(pool) => match pool.send(req).await {
                Ok(resp) => Ok(resp),
                Err(PoolError::ResponseTimeout) => Err(None),
                Err(e) => Err(Some(e.to_string())),
            },
            // Boxed, with its timer: it would make every plain request's future larger.
            Transport::Tls(client) => {
                match Box::pin(tokio::time::timeout(self.response_timeout, client.request(req))).await {
                    Ok(Ok(resp)) => Ok(resp),
                    Ok(Err(e)) => Err(Some(e.to_string())),
                    Err(_) => Err(None),
                }
            }
        };
        // A client body that broke the exchange is the client's fault, not the upstream's.
        if answer.is_err()
            && let Some(fault) = fault.get()
        {
            tracing::debug!(upstream = %self.authority, ?fault, "client request body failed");
            return Err(UpstreamError::ClientBody(fault));
        }
        match answer {
            Ok(resp) => Ok((resp, started.elapsed())),
            Err(Some(e)) => {
                tracing::warn!(upstream = %self.authority, error = %e, "upstream request failed");
                Err(UpstreamError::Failed)
            }
            Err(None) => {
                tracing::warn!(upstream = %self.authority, "upstream response timed out");
                Err(UpstreamError::TimedOut)
            }
        }
    }
}
