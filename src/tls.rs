//! TLS for the listeners: rustls (TLS 1.2 and 1.3 only), ALPN `h2` and `http/1.1`. The
//! public listener has one certificate per host set picked by SNI (a handshake without
//! SNI, or naming a host without a certificate, fails); the admin listener has one
//! certificate (`[listen.admin_tls]`) for any name.
//!
//! Built from the certificates and keys `config` parsed at load, once per policy version
//! (`live` keeps the result in its snapshot; the listener only uses it). Nothing here
//! reads PEM, accepts connections or knows HTTP; TLS towards upstreams is set up with
//! the upstream client.

use std::sync::Arc;

use rustls::crypto::ring;
use rustls::server::ResolvesServerCertUsingSni;
use rustls::sign::CertifiedKey;

use crate::config::{AdminTls, Certificate};

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
    with_resolver(provider, Arc::new(resolver))
}

/// The admin listener's server configuration: its one certificate, whatever name the
/// client asks for (operators reach it by IP, by a service name, or through a tunnel).
pub fn admin_server_config(admin: &AdminTls) -> Result<Arc<rustls::ServerConfig>, String> {
    let provider = Arc::new(ring::default_provider());
    let signing_key = provider
        .key_provider
        .load_private_key(admin.key.expose_secret().clone_key())
        .map_err(|e| format!("listen.admin_tls: the private key cannot be used: {e}"))?;
    let certified = CertifiedKey::new(admin.chain.clone(), signing_key);
    certified
        .keys_match()
        .map_err(|e| format!("listen.admin_tls: the certificate and key do not match: {e}"))?;
    let resolver = rustls::sign::SingleCertAndKey::from(certified);
    with_resolver(provider, Arc::new(resolver))
}

/// TLS 1.3 and 1.2 with `resolver`'s certificates, ALPN `h2` and `http/1.1`.
fn with_resolver(
    provider: Arc<rustls::crypto::CryptoProvider>,
    resolver: Arc<dyn rustls::server::ResolvesServerCert>,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| format!("TLS set-up failed: {e}"))?
        .with_no_client_auth()
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::PrivateKey;
    use rustls_pki_types::PrivateKeyDer;

    fn admin_tls(cert: &rcgen::CertifiedKey, key: &rcgen::KeyPair) -> AdminTls {
        AdminTls {
            chain: vec![cert.cert.der().clone()],
            key: PrivateKey::new(PrivateKeyDer::Pkcs8(key.serialize_der().into())),
        }
    }

    /// If this broke, an admin certificate paired with another key would start and fail
    /// every handshake, instead of stopping the start with a reason.
    #[test]
    fn the_admin_certificate_must_fit_its_key() {
        let admin = rcgen::generate_simple_self_signed(vec!["admin.internal".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["other.internal".to_string()]).unwrap();
        let config = admin_server_config(&admin_tls(&admin, &admin.key_pair)).unwrap();
        assert_eq!(config.alpn_protocols, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        let err = admin_server_config(&admin_tls(&admin, &other.key_pair)).unwrap_err();
        assert!(
            err.contains("listen.admin_tls: the certificate and key do not match"),
            "{err}"
        );
    }
}
