//! TLS on the public listener: SNI picks the certificate, ALPN offers h2 and http/1.1.

use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};

use crate::harness::*;

struct Pki {
    ca_pem: String,
    /// (host, cert PEM, cert DER, key PEM)
    leaves: Vec<(String, String, Vec<u8>, String)>,
}

fn pki(hosts: &[&str]) -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaves = hosts
        .iter()
        .map(|host| {
            let key = KeyPair::generate().unwrap();
            let mut params = CertificateParams::new(vec![(*host).to_string()]).unwrap();
            params.distinguished_name.push(DnType::CommonName, *host);
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            (
                (*host).to_string(),
                cert.pem(),
                cert.der().to_vec(),
                key.serialize_pem(),
            )
        })
        .collect();
    Pki {
        ca_pem: ca.pem(),
        leaves,
    }
}

async fn start_tls() -> (Upstreams, Gateway, Pki) {
    start_tls_with(|_| {}).await
}

/// [`start_tls`] with more of the policy set by `more`.
async fn start_tls_with(more: impl FnOnce(&mut PolicyFixture)) -> (Upstreams, Gateway, Pki) {
    let pki = pki(&["acme.test", "globex.test", "initech.test"]);
    let certs: Vec<TlsCert> = pki
        .leaves
        .iter()
        .map(|(host, cert, _, key)| TlsCert {
            hosts: vec![host.clone()],
            cert_pem: cert.clone(),
            key_pem: key.clone(),
        })
        .collect();
    let (ups, gw) = start_with(|f| {
        f.tls = certs;
        more(f);
    })
    .await;
    (ups, gw, pki)
}

fn tls_client(gw: &Gateway, pki: &Pki, http1: bool) -> reqwest::Client {
    let mut b = gw
        .client_builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pki.ca_pem.as_bytes()).unwrap())
        .tls_info(true);
    if http1 {
        b = b.http1_only();
    }
    b.build().unwrap()
}

fn https(gw: &Gateway, host: &str, path: &str) -> String {
    format!("https://{host}:{}{path}", gw.public.port())
}

fn peer_cert(resp: &reqwest::Response) -> Vec<u8> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(|i| i.peer_certificate())
        .expect("TLS info")
        .to_vec()
}

/// TLS with ALPN: h2 is negotiated when offered, HTTP/1.1 otherwise; the upstream learns
/// the client used https. If TLS broke, production (plaintext = false) would not serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_h2_and_http1_and_reports_https() {
    let (ups, gw, pki) = start_tls().await;
    let r = tls_client(&gw, &pki, false)
        .get(https(&gw, "acme.test", "/public/tls2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2 not negotiated");
    let r = tls_client(&gw, &pki, true)
        .get(https(&gw, "acme.test", "/public/tls1"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);
    let reqs = ups.acme.requests();
    assert_eq!(reqs.len(), 2);
    for rec in &reqs {
        assert_eq!(rec.header("x-forwarded-proto"), Some("https"), "{}", rec.target);
        assert!(rec.header("forwarded").is_some_and(|f| f.contains("proto=https")));
    }
    // Plain HTTP on a TLS listener is not served.
    let plain = raw_exchange(gw.public, b"GET /public/x HTTP/1.1\r\nHost: acme.test\r\n\r\n")
        .await
        .unwrap_or_default();
    assert!(parse_responses(&plain).iter().all(|r| r.status != 200));
    assert_eq!(ups.acme.count(), 2);
}

/// SNI picks each host's own certificate: globex.test gets the globex certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_the_hosts_certificate() {
    let (ups, gw, pki) = start_tls().await;
    let c = tls_client(&gw, &pki, false);
    for (host, _, der, _) in &pki.leaves {
        let r = c.get(https(&gw, host, "/public/sni")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{host}");
        assert!(&peer_cert(&r) == der, "{host} was served another host's certificate");
    }
    assert_eq!(ups.acme.count(), 1);
    assert_eq!(ups.globex.count(), 1);
    assert_eq!(ups.initech.count(), 1);
}

/// Every answer over TLS carries HSTS (a year, with subdomains), not only the gateway's
/// own pages: proxied answers, refusals (no session, unknown reserved path) and the
/// public status. Over plaintext (demo and tests only) none does, as RFC 6797 asks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answer_over_tls_carries_hsts() {
    let (_ups, gw, pki) = start_tls().await;
    let c = tls_client(&gw, &pki, true);
    for (path, status) in [
        ("/public/hsts", 200),
        ("/app/hsts", 401),
        ("/.portcullis/status", 200),
        ("/.portcullis/no-such-page", 404),
    ] {
        let r = c
            .get(https(&gw, "acme.test", path))
            .header("accept", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .and_then(|v| v.to_str().ok()),
            Some("max-age=31536000; includeSubDomains"),
            "{path}"
        );
    }
    let (_ups, plain) = start().await;
    for path in ["/public/hsts", "/app/hsts", "/.portcullis/status"] {
        let r = plain
            .client()
            .get(plain.host_url("acme.test", path))
            .send()
            .await
            .unwrap();
        assert!(
            r.headers().get("strict-transport-security").is_none(),
            "{path} over plaintext"
        );
    }
}

/// The header-read limit runs once a request head begins to arrive, and a TLS handshake
/// is not one: a connection silent after its handshake (a browser's preconnect) is held
/// to the idle limit, as a plaintext one is. If this broke, TLS clients would be cut off
/// at the header limit before they sent a byte of a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_silent_after_its_handshake_is_held_to_the_idle_limit() {
    let (ups, gw, pki) = start_tls_with(one_second_header_limit).await;
    let mut tls = tls_connect(gw.public, "acme.test", &pki.ca_pem, &[]).await;
    // The header limit (1 s) is enforced at most two ticks (2 × 250 ms) late.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let request = b"GET /public/preconnected HTTP/1.1\r\nHost: acme.test\r\nConnection: close\r\n\r\n";
    let (status, answer) = request_on(&mut tls, request).await;
    assert_eq!(status, Some(200), "{answer}");
    assert_eq!(ups.acme.only().target, "/public/preconnected");
}

/// The sibling: a head trickled after the handshake is still cut off at the header limit.
/// If this broke, Slowloris would only need TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_head_trickled_over_tls_is_cut_off() {
    let (ups, gw, pki) = start_tls_with(one_second_header_limit).await;
    let mut tls = tls_connect(gw.public, "acme.test", &pki.ca_pem, &[]).await;
    assert_trickled_head_is_cut_off(&mut tls).await;
    assert_eq!(ups.acme.count(), 0);
}

/// HTTP/2 (ALPN h2) has no request head to time: a browser that opens a connection and
/// its HTTP/2 session, then sends nothing yet, is held to the idle limit. If this broke,
/// its connection would be cut at the header limit, as if it were trickling a head.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_connection_silent_after_its_preface_is_held_to_the_idle_limit() {
    let (_ups, gw, pki) = start_tls_with(one_second_header_limit).await;
    let mut tls = tls_connect(gw.public, "acme.test", &pki.ca_pem, &[b"h2"]).await;
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_silent_http2_connection_stays_open(&mut tls).await;
}
