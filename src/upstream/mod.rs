//! The upstream side of forwarding: from an authorised request to a tenant's app and back.
//!
//! # Layout
//! - [`client`]: [`UpstreamClient`], one per tenant upstream: target, send, timeouts.
//! - `pool`: the gateway's lean HTTP/1.1 keep-alive pool for plain-HTTP upstreams.
//! - `resolve`: name resolution checked against the tier's upstream allowlist at connect
//!   time (DNS rebinding).
//! - `tls`: rustls towards `https` upstreams: the tier's extra CA and client certificate.
//! - [`guard`]: each upstream's circuit breaker and bulkhead (pure logic, clock passed in).
//! - [`body`]: the request body sent upstream, cut off at the route's limit.
//!
//! Below `live` and `proxy`: it reads `config` (tenants, tiers, limits, allowlists, the
//! parsed TLS material) and nothing above it. It knows nothing of sessions, route policy
//! or the listener's answers; what went wrong is an [`UpstreamError`], which the listener
//! maps to its answer in one place.

pub mod body;
pub mod client;
pub mod guard;
mod pool;
mod resolve;
mod tls;

pub use body::{BodyTooLarge, BoxError, ClientBodyFault, LimitedBody};
pub use client::UpstreamClient;

use guard::Rejection;

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
    /// The client's body broke the exchange, not the upstream.
    #[error("client request body: {0:?}")]
    ClientBody(ClientBodyFault),
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
