//! Tier credentials towards `https` upstreams: the tier's extra CA (`keys.upstream_ca`),
//! its mutual TLS client certificate (`keys.upstream_client_cert` / `_key`) and its bearer
//! token (`keys.upstream_token`, sent as `Portcullis-Upstream-Token`), against a real
//! rustls upstream that requires a client certificate (SPEC "Tiers and isolation").

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::harness::*;

/// A CA, a server certificate for `localhost` and a client certificate, all PEM.
struct Pki {
    ca: String,
    server: (String, String),
    client: (String, String),
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Upstream test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf = |name: &str| {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        (cert.pem(), key.serialize_pem())
    };
    Pki {
        ca: ca.pem(),
        server: leaf("localhost"),
        client: leaf("portcullis-staging"),
    }
}

/// An `https` upstream on 127.0.0.1 that requires a client certificate from the test CA
/// and answers with the upstream token it received.
async fn mtls_upstream(pki: &Pki) -> u16 {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_slice(pki.ca.as_bytes()).unwrap())
        .unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .unwrap();
    let chain = vec![CertificateDer::from_pem_slice(pki.server.0.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(pki.server.1.as_bytes()).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                continue;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A handshake without a valid client certificate fails here.
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    let token = req
                        .headers()
                        .get("portcullis-upstream-token")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("none")
                        .to_string();
                    Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from(format!(
                        "mtls-ok token={token}"
                    )))))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    port
}

async fn gateway(pki: &Pki, port: u16, with_client_cert: bool) -> (Upstreams, Gateway) {
    let mut keys = String::from(
        "upstream_ca = \"file:secrets/upstream-ca.pem\"\nupstream_token = \"inline:staging-upstream-token-xyz\"\n",
    );
    if with_client_cert {
        keys.push_str(
            "upstream_client_cert = \"file:secrets/client.pem\"\nupstream_client_key = \"file:secrets/client.key\"\n",
        );
    }
    let files = vec![
        ("secrets/upstream-ca.pem".to_string(), pki.ca.clone()),
        ("secrets/client.pem".to_string(), pki.client.0.clone()),
        ("secrets/client.key".to_string(), pki.client.1.clone()),
    ];
    start_with(|f| {
        f.tenant_mut("initech").upstream = format!("https://localhost:{port}");
        f.staging_keys = keys;
        f.extra_files = files;
    })
    .await
}

/// If this broke, a tier could not reach an upstream that demands mutual TLS, would
/// not trust its own internal CA, or would not send its credential.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_tier_presents_its_client_certificate_and_token_to_https_upstreams() {
    let pki = pki();
    let port = mtls_upstream(&pki).await;
    let (_ups, gw) = gateway(&pki, port, true).await;
    let r = gw
        .client()
        .get(gw.host_url("initech.test", "/public/x"))
        .header("portcullis-upstream-token", "client-forged")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.text().await.unwrap(),
        "mtls-ok token=staging-upstream-token-xyz",
        "the tier's token, never the client's"
    );
}

/// If this broke, a tier without the client certificate would still get through, so
/// the upstream's mutual TLS would prove nothing about the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_client_certificate_the_upstream_refuses_the_gateway() {
    let pki = pki();
    let port = mtls_upstream(&pki).await;
    let (_ups, gw) = gateway(&pki, port, false).await;
    let r = gw
        .client()
        .get(gw.host_url("initech.test", "/public/x"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
}
