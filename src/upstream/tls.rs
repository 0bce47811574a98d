//! TLS towards a tier's `https` upstreams: rustls with the public web roots plus the
//! tier's extra CA certificates, presenting the tier's client certificate when it has
//! one (mutual TLS).
//!
//! Built from the certificates and key `config` parsed at load; nothing here reads PEM.
//! The public listener's own TLS is `crate::tls`.

use std::sync::Arc;

use rustls_pki_types::CertificateDer;

use super::UpstreamError;
use crate::config::Keyring;

/// The rustls client settings of a tier's upstream connections.
pub(super) fn client_config(keys: &Keyring) -> Result<rustls::ClientConfig, UpstreamError> {
    let mut roots = rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    for cert in keys.upstream_ca.iter().flatten() {
        roots
            .add(CertificateDer::from(cert.as_ref()))
            .map_err(UpstreamError::CaCertificate)?;
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(UpstreamError::Tls)?
        .with_root_certificates(roots);
    match &keys.upstream_client_cert {
        Some(auth) => builder
            .with_client_auth_cert(auth.chain.clone(), auth.key.expose_secret().clone_key())
            .map_err(UpstreamError::ClientCertificate),
        None => Ok(builder.with_no_client_auth()),
    }
}
