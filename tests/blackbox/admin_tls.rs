//! The admin listener off loopback (SPEC "Operator console and observability"): with
//! `[listen.admin_tls]` it speaks HTTPS only with that certificate, the console cookie is
//! `__Host-` and `Secure`, and `portcullis reload` reaches it trusting exactly that
//! certificate; off loopback without TLS (and without `admin_plaintext`) it does not
//! start. Every admin request leaves an access-log line without its secrets.
//!
//! The harness's [`Gateway`] waits for plain `/healthz`, so the TLS gateway here is
//! started by hand.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use serde_json::Value;

use crate::harness::*;

/// The name the admin certificate is issued for (resolved to the listener by the client).
const ADMIN_HOST: &str = "admin.test";

/// A CA and an admin certificate it issued: the test's browser trusts the CA, while
/// `portcullis reload` must pin the leaf itself (it never sees the CA).
struct AdminPki {
    ca_pem: String,
    cert_pem: String,
    key_pem: String,
}

fn admin_pki() -> AdminPki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Portcullis admin test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![ADMIN_HOST.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, ADMIN_HOST);
    let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
    AdminPki {
        ca_pem: ca.pem(),
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

const ADMIN_TLS_TABLE: &str = "\n[listen.admin_tls]\ncert = \"file:tls/admin.crt\"\nkey = \"file:tls/admin.key\"\n";

/// A `portcullis run` with an HTTPS admin listener; SIGTERM on drop.
struct TlsGateway {
    child: Child,
    admin: SocketAddr,
    policy: PathBuf,
    stdout: PathBuf,
    /// olivia's operator token (tier prod).
    token: String,
    pki: AdminPki,
    _ups: Upstreams,
    tmp: tempfile::TempDir,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!(
                "----- stdout -----\n{}\n----- stderr -----\n{}",
                std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                std::fs::read_to_string(self.tmp.path().join("stderr")).unwrap_or_default()
            );
        }
    }
}

impl TlsGateway {
    async fn start() -> TlsGateway {
        Self::start_with(|_| {}).await
    }

    /// [`TlsGateway::start`] with more of the policy set by `more`.
    async fn start_with(more: impl FnOnce(&mut PolicyFixture)) -> TlsGateway {
        let ups = Upstreams::start().await;
        let token = random_hex(24);
        let pki = admin_pki();
        let mut fixture = PolicyFixture::for_upstreams(&ups);
        more(&mut fixture);
        fixture.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))];
        fixture.extra_files = vec![
            ("tls/admin.crt".into(), pki.cert_pem.clone()),
            ("tls/admin.key".into(), pki.key_pem.clone()),
        ];
        let tmp = tempfile::tempdir().unwrap();
        let policy = tmp.path().join("policy");
        fixture.write(&policy);
        let gateway = fixture.gateway_toml(&policy) + ADMIN_TLS_TABLE;
        std::fs::write(policy.join("gateway.toml"), gateway).unwrap();
        let stdout = tmp.path().join("stdout");
        let child = Command::new(BIN)
            .args(["run", "--config"])
            .arg(&policy)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env_remove("PORTCULLIS_OPERATOR_TOKEN")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(tmp.path().join("stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut gw = TlsGateway {
            child,
            admin: SocketAddr::from(([127, 0, 0, 1], 0)),
            policy,
            stdout,
            token,
            pki,
            _ups: ups,
            tmp,
        };
        gw.admin = gw.wait_listening().await;
        let client = gw.https();
        let healthy = eventually(Duration::from_secs(10), || {
            let req = client.get(gw.url("/healthz"));
            async move { req.send().await.ok().filter(|r| r.status() == 200) }
        })
        .await;
        assert!(healthy.is_some(), "HTTPS /healthz never answered 200");
        gw
    }

    async fn wait_listening(&mut self) -> SocketAddr {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = self.lines().into_iter().find(|v| v["message"] == "listening");
            if let Some(addr) = listening.and_then(|l| l["admin"].as_str()?.parse().ok()) {
                return addr;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("gateway exited early with {status}");
            }
            assert!(Instant::now() < deadline, "no `listening` line within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.stdout)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// A client that trusts only the test CA and finds `admin.test` at the listener.
    fn https(&self) -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.pki.ca_pem.as_bytes()).unwrap())
            .resolve(ADMIN_HOST, self.admin)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap()
    }

    fn origin(&self) -> String {
        format!("https://{ADMIN_HOST}:{}", self.admin.port())
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.origin())
    }

    /// `portcullis reload` against this gateway, with the policy in `dir`.
    fn reload(&self, dir: &Path) -> std::process::Output {
        Command::new(BIN)
            .args(["reload", "--config"])
            .arg(dir)
            .args(["--admin-listen", &self.admin.to_string()])
            .env("PORTCULLIS_OPERATOR_TOKEN", &self.token)
            .output()
            .unwrap()
    }
}

/// If this broke, an admin listener meant to be reachable off loopback would answer in
/// clear text (tokens readable on the wire) or not with the configured certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tls_serves_https_only_with_the_configured_certificate() {
    let gw = TlsGateway::start().await;
    let r = gw.https().get(gw.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_2, "ALPN h2 on the admin listener");
    assert_eq!(r.text().await.unwrap(), "ok");
    // HTTP/1.1 works too, with the operator API behind its token.
    let r = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(gw.pki.ca_pem.as_bytes()).unwrap())
        .resolve(ADMIN_HOST, gw.admin)
        .http1_only()
        .build()
        .unwrap()
        .get(gw.url("/v1/breakers"))
        .bearer_auth(&gw.token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.version(), reqwest::Version::HTTP_11);

    // Plain HTTP gets no answer at all.
    let plain = raw_exchange(
        gw.admin,
        b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap_or_default();
    assert!(
        parse_responses(&plain).is_empty(),
        "plain HTTP answered: {:?}",
        String::from_utf8_lossy(&plain)
    );
    let plain_client = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        plain_client
            .get(format!("http://{}/healthz", gw.admin))
            .send()
            .await
            .is_err()
    );
    // A client that does not trust the certificate's issuer is refused by its own check.
    let untrusting = reqwest::Client::builder()
        .no_proxy()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve(ADMIN_HOST, gw.admin)
        .build()
        .unwrap();
    assert!(untrusting.get(gw.url("/healthz")).send().await.is_err());
}

/// If this broke, the console's session cookie over HTTPS could be sent over plain HTTP
/// or set for another host (no `__Host-` prefix, no `Secure`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_over_tls_uses_the_host_prefixed_secure_cookie() {
    let gw = TlsGateway::start().await;
    let client = gw.https();
    let signin = client
        .post(gw.url("/console/signin"))
        .header("origin", gw.origin())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={}", gw.token))
        .send()
        .await
        .unwrap();
    assert_eq!(signin.status(), 303);
    let set = signin.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(set.starts_with("__Host-portcullis-console="), "{set}");
    for flag in ["Secure", "HttpOnly", "SameSite=Strict", "Path=/;"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    let cookie = set.split(';').next().unwrap().to_string();
    let page = client
        .get(gw.url("/console/"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200, "the cookie opens the console");
    // The plaintext cookie's name opens nothing on a TLS listener.
    let value = cookie.split_once('=').unwrap().1;
    let other = client
        .get(gw.url("/console/"))
        .header("cookie", format!("portcullis-console={value}"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), 303, "only the __Host- cookie is read over TLS");
}

/// If this broke, operators could not reload a gateway whose admin listener speaks TLS,
/// or `reload` would trust a server presenting some other certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_reaches_the_tls_admin_listener_trusting_exactly_its_certificate() {
    let gw = TlsGateway::start().await;
    let out = gw.reload(&gw.policy);
    assert!(
        out.status.success(),
        "reload failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let ready: Value = gw
        .https()
        .get(gw.url("/readyz"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ready["policy"]["last_reload"]["ok"], true, "{ready}");

    // A policy copy naming another certificate (even one from the same CA): refused.
    let other_dir = tempfile::tempdir().unwrap();
    let other = admin_pki();
    std::fs::create_dir_all(other_dir.path().join("tls")).unwrap();
    std::fs::copy(gw.policy.join("gateway.toml"), other_dir.path().join("gateway.toml")).unwrap();
    std::fs::write(other_dir.path().join("tls/admin.crt"), &other.cert_pem).unwrap();
    let out = gw.reload(other_dir.path());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "reload trusted another certificate");
    assert!(stderr.contains("cannot reach the admin API"), "{stderr}");
}

/// If this broke, an operator moving the admin listener off loopback would expose the
/// operator API and console in clear text without being told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_listener_off_loopback_without_tls_does_not_start() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    let fixture = PolicyFixture::new("http://127.0.0.1:1", "http://127.0.0.1:2", "http://127.0.0.1:3");
    fixture.write(&policy);
    let gateway = fixture
        .gateway_toml(&policy)
        .replace("admin = \"127.0.0.1:9090\"", "admin = \"0.0.0.0:9090\"");
    std::fs::write(policy.join("gateway.toml"), &gateway).unwrap();
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&policy)
        .args(["--listen", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = format!(
        "{}:{}: listen.admin: the admin listener `0.0.0.0:9090` is not on a loopback address and has no TLS",
        policy.join("gateway.toml").display(),
        line_of(&gateway, "admin = ")
    );
    assert!(text.contains(&expected), "expected {expected:?} in:\n{text}");
    assert!(text.contains("admin_plaintext = true"), "{text}");
}

/// If this broke, operators' actions on the admin listener would leave no trace in the
/// access log, or the log would keep the bearer token, a cookie or a query secret.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_requests_leave_an_access_line_without_secrets() {
    let gw = TlsGateway::start().await;
    let r = gw
        .https()
        .get(gw.url("/v1/breakers?token=query-secret-42"))
        .bearer_auth(&gw.token)
        .header("cookie", "__Host-portcullis-console=cookie-secret-42")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answered_id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let line = eventually(Duration::from_secs(5), || async {
        gw.lines()
            .into_iter()
            .find(|l| l["target"] == "access" && l["path"] == "/v1/breakers")
    })
    .await
    .expect("an access line for the admin request");
    assert_eq!(line["request_id"], answered_id.as_str(), "{line}");
    assert_eq!(line["listener"], "admin", "{line}");
    assert_eq!(line["method"], "GET", "{line}");
    assert_eq!(line["status"], 200, "{line}");
    assert_eq!(line["client_ip"], "127.0.0.1", "{line}");
    assert!(line["duration_ms"].as_f64().is_some(), "{line}");
    let log = std::fs::read_to_string(&gw.stdout).unwrap();
    for secret in [gw.token.as_str(), "query-secret-42", "cookie-secret-42"] {
        assert!(!log.contains(secret), "{secret} in the log");
    }
    // A refusal carries its request id into the line.
    let refused = gw.https().get(gw.url("/v1/breakers")).send().await.unwrap();
    assert_eq!(refused.status(), 401);
    let id = refused.headers()["x-request-id"].to_str().unwrap().to_string();
    let line = eventually(Duration::from_secs(5), || async {
        gw.lines()
            .into_iter()
            .find(|l| l["target"] == "access" && l["request_id"] == id.as_str())
    })
    .await;
    assert!(line.is_some_and(|l| l["status"] == 401), "no access line with {id}");
}

/// If this broke, the plain (loopback) admin listener would log no access lines: the
/// middleware must not depend on TLS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_plain_admin_listener_logs_its_requests_too() {
    let (_ups, gw) = start().await;
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(gw.admin_url("/metrics?x=query-secret-43"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = eventually(Duration::from_secs(5), || async {
        gw.access_log()
            .into_iter()
            .find(|l| l["listener"] == "admin" && l["path"] == "/metrics")
    })
    .await
    .expect("an access line for /metrics");
    assert_eq!(line["status"], 200, "{line}");
    assert!(!gw.stdout().contains("query-secret-43"));
}

/// The admin listener's TLS keeps the same rule as the public one's: a connection silent
/// after its handshake (or its HTTP/2 preface) waits for the idle limit, and a head
/// trickled after it is cut off at the header limit. If this broke, an operator's browser would lose preconnected
/// connections, or Slowloris over TLS would hold the operators' slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_handshake_the_header_clock_waits_for_a_head() {
    let gw = TlsGateway::start_with(one_second_header_limit).await;
    let mut silent = tls_connect(gw.admin, ADMIN_HOST, &gw.pki.ca_pem, &[]).await;
    let mut trickled = tls_connect(gw.admin, ADMIN_HOST, &gw.pki.ca_pem, &[]).await;
    assert_trickled_head_is_cut_off(&mut trickled).await;
    // Well past the header limit (1 s, enforced at most 2 × 250 ms late).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let request = b"GET /healthz HTTP/1.1\r\nHost: admin.test\r\nConnection: close\r\n\r\n";
    let (status, answer) = request_on(&mut silent, request).await;
    assert_eq!(status, Some(200), "{answer}");
    let mut h2 = tls_connect(gw.admin, ADMIN_HOST, &gw.pki.ca_pem, &[b"h2"]).await;
    assert_eq!(h2.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_silent_http2_connection_stays_open(&mut h2).await;
}
