//! A minimal client for the admin API, used by CLI commands that act on a running gateway.
//!
//! Against an HTTPS admin listener (`[listen.admin_tls]`) it trusts exactly the
//! certificate the policy configures, pinned: the server must present that leaf
//! certificate and prove it holds its key. No public CA, no name check (operators reach
//! the listener by IP or through a tunnel; the pin already names the one server).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, ring};
use rustls::{DigitallySignedStruct, SignatureScheme};
use rustls_pki_types::{CertificateDer, ServerName, UnixTime};

/// Why a call to the admin API failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The address or path does not form a URL.
    #[error("invalid admin address `{0}`")]
    Address(String),
    /// The gateway could not be reached.
    #[error("cannot reach the admin API at {0}: {1}")]
    Unreachable(String, String),
    /// The TLS client could not be set up.
    #[error("cannot set up TLS to the admin API: {0}")]
    Tls(String),
}

/// `POST` with an operator bearer token; returns the status and body text. With
/// `pinned`, over HTTPS to a server presenting exactly that certificate.
pub async fn post(
    admin: &str,
    pinned: Option<&CertificateDer<'static>>,
    path: &str,
    token: &str,
) -> Result<(u16, String), ClientError> {
    let scheme = if pinned.is_some() { "https" } else { "http" };
    let uri: http::Uri = format!("{scheme}://{admin}{path}")
        .parse()
        .map_err(|_| ClientError::Address(admin.to_string()))?;
    let req = http::Request::post(uri)
        .header(http::header::AUTHORIZATION, format!("Bearer {token}"))
        .body(Full::new(Bytes::new()))
        .map_err(|_| ClientError::Address(admin.to_string()))?;
    let sent = match pinned {
        None => Client::builder(TokioExecutor::new()).build_http().request(req).await,
        Some(cert) => {
            let mut http = HttpConnector::new();
            http.enforce_http(false);
            let connector = hyper_rustls::HttpsConnectorBuilder::new()
                .with_tls_config(pinned_config(cert)?)
                .https_only()
                .enable_http1()
                .wrap_connector(http);
            Client::builder(TokioExecutor::new())
                .build(connector)
                .request(req)
                .await
        }
    };
    let resp = sent.map_err(|e| ClientError::Unreachable(admin.to_string(), error_chain(&e)))?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| ClientError::Unreachable(admin.to_string(), e.to_string()))?
        .to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// An error with its causes: hyper's own text ("client error (Connect)") hides the TLS
/// reason an operator needs.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A TLS client configuration that accepts only `cert`.
fn pinned_config(cert: &CertificateDer<'static>) -> Result<rustls::ClientConfig, ClientError> {
    let provider = Arc::new(ring::default_provider());
    let verifier = Arc::new(PinnedCertificate {
        cert: cert.clone(),
        provider: provider.clone(),
    });
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Accepts the one configured leaf certificate, byte for byte; the handshake signatures
/// are checked as usual, so only the holder of its key passes.
#[derive(Debug)]
struct PinnedCertificate {
    /// The certificate of `[listen.admin_tls]` (its leaf).
    cert: CertificateDer<'static>,
    /// Signature algorithms for the handshake checks.
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedCertificate {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}
