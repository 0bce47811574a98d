//! TLS for the public listener: rustls (TLS 1.2 and 1.3 only), one certificate per host
//! set picked by SNI, ALPN `h2` and `http/1.1`. A handshake without SNI, or naming a
//! host without a certificate, fails.
//!
//! Built from the certificates and keys `config` parsed at load, once per policy version
//! (`live` keeps the result in its snapshot; the listener only uses it). Nothing here
//! reads PEM, accepts connections or knows HTTP; TLS towards upstreams is set up with
//! the upstream client.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;

use crate::config::Certificate;

/// Builds the server configuration; errors say which host's material is unusable.
pub fn server_config(certs: &[Certificate]) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let mut resolver = ResolvesServerCertUsingSni::new();
    for cert in certs {
        let signing_key = provider
            .key_provider
            .load_private_key(cert.key.expose_secret().clone_key())
            .map_err(|e| format!("private key for {} cannot be used: {e}", cert.hosts.join(", ")))?;
        let certified = Arc::new(CertifiedKey::new(cert.chain.clone(), signing_key));
        certified
            .keys_match()
            .map_err(|e| format!("certificate and key for {} do not match: {e}", cert.hosts.join(", ")))?;
        for host in &cert.hosts {
            resolver
                .add(host, certified.as_ref().clone())
                .map_err(|e| format!("certificate does not fit host {host}: {e}"))?;
        }
    }
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}
