//! Test harness: policy fixtures, recording upstreams, the gateway process and a raw-TCP
//! client. Every test starts its own gateway on its own ports and temp dir.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::Role;

pub const BIN: &str = env!("CARGO_BIN_EXE_portcullis");

// ---------------------------------------------------------------------------------------
// Recording upstream
// ---------------------------------------------------------------------------------------

/// One request as the upstream received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query exactly as received.
    pub target: String,
    pub version: http::Version,
    pub headers: Vec<(String, String)>,
    pub body_len: u64,
}

impl Recorded {
    /// Every value of a header (name case-insensitive).
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// The single value of a header; panics when it appears more than once.
    pub fn header(&self, name: &str) -> Option<&str> {
        let all = self.header_all(name);
        assert!(all.len() <= 1, "header {name} appears {} times: {all:?}", all.len());
        all.first().copied()
    }

    pub fn has_header(&self, name: &str) -> bool {
        !self.header_all(name).is_empty()
    }
}

type Log = Arc<Mutex<Vec<Recorded>>>;
type RespBody = BoxBody<Bytes, Infallible>;

/// A hyper upstream on 127.0.0.1 that records what it receives.
pub struct RecordingUpstream {
    pub addr: SocketAddr,
    log: Log,
    task: tokio::task::JoinHandle<()>,
}

impl RecordingUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind upstream");
        let addr = listener.local_addr().expect("upstream addr");
        let log: Log = Arc::default();
        let shared = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let log = shared.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| handle(req, log.clone()));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .with_upgrades()
                        .await;
                });
            }
        });
        RecordingUpstream { addr, log, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.log.lock().expect("log").clone()
    }

    pub fn count(&self) -> usize {
        self.log.lock().expect("log").len()
    }

    /// The only request received; panics if there is not exactly one.
    pub fn only(&self) -> Recorded {
        let all = self.requests();
        assert_eq!(all.len(), 1, "expected exactly one upstream request, got {all:#?}");
        all.into_iter().next().expect("one request")
    }

    /// Waits until `n` requests were recorded (bodies are read before recording).
    pub async fn wait_for(&self, n: usize) -> Vec<Recorded> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let all = self.requests();
            if all.len() >= n || Instant::now() > deadline {
                return all;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

impl Drop for RecordingUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// An address on 127.0.0.1 that refuses connections (an app or IdP that is down): its
/// port is bound, so no other process can take it while this lives, but never listens.
pub struct ClosedPort {
    pub addr: SocketAddr,
    _socket: tokio::net::TcpSocket,
}

impl ClosedPort {
    pub fn bind() -> Self {
        let socket = tokio::net::TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
            .expect("bind a closed port");
        let addr = socket.local_addr().expect("closed port addr");
        ClosedPort { addr, _socket: socket }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

fn full(status: StatusCode, body: impl Into<Bytes>) -> Response<RespBody> {
    let mut resp = Response::new(Full::new(body.into()).boxed());
    *resp.status_mut() = status;
    resp
}

fn query_u64(req: &Request<Incoming>, key: &str) -> u64 {
    req.uri()
        .query()
        .unwrap_or_default()
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .and_then(|(_, v)| v.parse().ok())
        .unwrap_or(0)
}

fn echo_json(rec: &Recorded) -> String {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (n, v) in &rec.headers {
        headers
            .entry(n.clone())
            .and_modify(|old| {
                old.push_str(", ");
                old.push_str(v);
            })
            .or_insert_with(|| v.clone());
    }
    serde_json::json!({
        "method": rec.method,
        "target": rec.target,
        "headers": headers,
        "body_len": rec.body_len,
    })
    .to_string()
}

async fn handle(mut req: Request<Incoming>, log: Log) -> Result<Response<RespBody>, Infallible> {
    let path = req.uri().path().to_string();
    let ms = query_u64(&req, "ms");
    let bytes = query_u64(&req, "bytes");
    // WebSocket echo on `/public/ws` and on any other path ending in `/ws` (protected
    // routes such as `/app/ws` too).
    let on_upgrade = (path.ends_with("/ws") && req.headers().contains_key(http::header::UPGRADE))
        .then(|| hyper::upgrade::on(&mut req));
    let (parts, mut body) = req.into_parts();
    let push = |rec: &Recorded| log.lock().expect("log").push(rec.clone());
    if let Some(on_upgrade) = on_upgrade {
        push(&record_parts(&parts, 0));
        let Some(key) = parts.headers.get("sec-websocket-key").map(|k| k.as_bytes().to_vec()) else {
            return Ok(full(StatusCode::BAD_REQUEST, "no key"));
        };
        tokio::spawn(async move {
            let Ok(upgraded) = on_upgrade.await else { return };
            let mut ws =
                tokio_tungstenite::WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
            while let Some(Ok(msg)) = ws.next().await {
                if msg.is_text() || msg.is_binary() {
                    if ws.send(msg).await.is_err() {
                        break;
                    }
                } else if msg.is_close() {
                    break;
                }
            }
        });
        let mut resp = full(StatusCode::SWITCHING_PROTOCOLS, Bytes::new());
        let h = resp.headers_mut();
        h.insert(http::header::UPGRADE, http::HeaderValue::from_static("websocket"));
        h.insert(http::header::CONNECTION, http::HeaderValue::from_static("Upgrade"));
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(&key);
        h.insert(
            "sec-websocket-accept",
            http::HeaderValue::from_str(&accept).expect("accept"),
        );
        return Ok(resp);
    }
    if path.ends_with("/slowstream") {
        // An open-ended stream: 1 KiB every 100 ms for up to a minute.
        push(&record_parts(&parts, 0));
        let chunks = futures_util::stream::unfold(0u32, |n| async move {
            if n >= 600 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
            Some((Ok::<_, Infallible>(Frame::data(Bytes::from(vec![b'y'; 1024]))), n + 1))
        });
        return Ok(Response::new(BodyExt::boxed(http_body_util::StreamBody::new(chunks))));
    }
    match path.as_str() {
        "/public/slow" => {
            let rec = record_parts(&parts, 0);
            push(&rec);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Ok(full(StatusCode::OK, echo_json(&rec)))
        }
        "/public/stream" => {
            push(&record_parts(&parts, 0));
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            Ok(Response::new(
                Repeat {
                    remaining: bytes,
                    chunk,
                }
                .boxed(),
            ))
        }
        "/public/setcookie" => {
            push(&record_parts(&parts, 0));
            let mut resp = full(StatusCode::OK, "cookies");
            let h = resp.headers_mut();
            for v in [
                "__Host-portcullis-prod=evil; Path=/; Secure",
                "portcullis-foo=evil",
                "app=1; Path=/",
                "__HOST-PORTCULLIS-prod-csrf=evil",
                " __Host-portcullis-staging=evil",
                "=portcullis-prod=evil",
            ] {
                h.append(http::header::SET_COOKIE, http::HeaderValue::from_static(v));
            }
            // Gateway headers echoed back and hop-by-hop headers must not reach the client.
            h.insert("x-portcullis-user", http::HeaderValue::from_static("leaked"));
            h.insert(
                "portcullis-assertion",
                http::HeaderValue::from_static("leaked.jwt.value"),
            );
            h.insert(http::header::CONNECTION, http::HeaderValue::from_static("X-Internal"));
            h.insert("x-internal", http::HeaderValue::from_static("1"));
            h.insert("x-app", http::HeaderValue::from_static("kept"));
            Ok(resp)
        }
        _ => {
            // Count the body as it streams in (never buffered), then record.
            let mut n: u64 = 0;
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(f) => {
                        if let Some(d) = f.data_ref() {
                            n += d.len() as u64;
                        }
                    }
                    Err(_) => break,
                }
            }
            let rec = record_parts(&parts, n);
            push(&rec);
            if path == "/public/upload" {
                Ok(full(StatusCode::OK, n.to_string()))
            } else {
                Ok(full(StatusCode::OK, echo_json(&rec)))
            }
        }
    }
}

fn record_parts(parts: &http::request::Parts, body_len: u64) -> Recorded {
    Recorded {
        method: parts.method.to_string(),
        target: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.to_string(), |pq| pq.as_str().to_string()),
        version: parts.version,
        headers: parts
            .headers
            .iter()
            .map(|(n, v)| {
                (
                    n.as_str().to_string(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body_len,
    }
}

/// A body of `remaining` bytes produced chunk by chunk as hyper asks for them.
struct Repeat {
    remaining: u64,
    chunk: Bytes,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return Poll::Ready(None);
        }
        let n = self.remaining.min(self.chunk.len() as u64);
        self.remaining -= n;
        let data = self.chunk.slice(..n as usize);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }

    fn is_end_stream(&self) -> bool {
        self.remaining == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.remaining)
    }
}

// ---------------------------------------------------------------------------------------
// Policy fixture
// ---------------------------------------------------------------------------------------

pub const DEFAULT_ROUTES: &str = r#"[[routes]]
prefix = "/public/"
access = "public"

[[routes]]
prefix = "/admin/"
roles = ["admin"]

[[routes]]
prefix = "/"
access = "authenticated"
"#;

/// One tenant of the fixture.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub id: String,
    pub name: String,
    pub tier: String,
    pub hosts: Vec<String>,
    pub upstream: String,
    /// `[limits] max_body_bytes` of the tenant.
    pub max_body_bytes: Option<u64>,
    /// Extra lines of the tenant's `[limits]` table, verbatim (`key = value` lines, e.g.
    /// `breaker_failures = 3`); empty for none.
    pub extra_limits: String,
    /// The `[[routes]]` tables, verbatim.
    pub routes: String,
    /// `[session] idle_timeout` and `absolute_timeout` (durations as in the policy).
    pub session_timeouts: (String, String),
}

/// An `[[automation]]` table of a tier (a SIEM/SOAR token).
#[derive(Debug, Clone)]
pub struct AutomationSpec {
    pub tier: String,
    pub name: String,
    /// Hex SHA-256 of the bearer token.
    pub token_sha256: String,
    pub scopes: Vec<String>,
    pub tenants: Vec<String>,
}

/// A certificate entry of `[[tls.certificates]]`; files are written under `tls/`.
#[derive(Debug, Clone)]
pub struct TlsCert {
    pub hosts: Vec<String>,
    pub cert_pem: String,
    pub key_pem: String,
}

/// A policy directory: gateway.toml, tiers prod (production, file: key) and staging
/// (inline key), tenants acme + globex (prod) and initech (staging).
#[derive(Debug, Clone)]
pub struct PolicyFixture {
    pub trusted_proxies: Vec<String>,
    /// Extra `[limits]` lines, `key = value` (value as TOML).
    pub limits: Vec<(String, String)>,
    /// When non-empty the public listener is TLS (`plaintext = false`).
    pub tls: Vec<TlsCert>,
    pub tenants: Vec<TenantSpec>,
    /// `[[operators]]` of tier prod: (name, hex sha256 of the token).
    pub prod_operators: Vec<(String, String)>,
    /// `[[operators]]` of tier staging: (name, hex sha256 of the token).
    pub staging_operators: Vec<(String, String)>,
    /// `[[automation]]` tables, each written into the tier it names.
    pub automation: Vec<AutomationSpec>,
    /// The prod tier's cookie key file content.
    pub prod_key: String,
    /// Extra environment variables of the gateway process (e.g. `PORTCULLIS_CHANGE_TTL_SECS`);
    /// they do not change the policy files.
    pub gateway_env: Vec<(String, String)>,
    /// Extra `[keys]` lines of the staging tier (`key = "reference"`).
    pub staging_keys: String,
    /// Extra files written into the policy directory: (relative path, content).
    pub extra_files: Vec<(String, String)>,
    /// `[store] url` (e.g. a test Redis); the embedded store under the policy dir if None.
    pub store_url: Option<String>,
    /// Further tables of `gateway.toml` (e.g. `[siem]`, `[tracing]`), written verbatim
    /// after every table the fixture writes itself.
    pub gateway_extra: String,
}

pub fn sha256_hex(data: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(data))
}

pub fn random_hex(bytes: usize) -> String {
    let v: Vec<u8> = (0..bytes).map(|_| rand::random::<u8>()).collect();
    hex::encode(v)
}

impl PolicyFixture {
    /// The standard fixture with the given upstream URLs for acme, globex and initech.
    pub fn new(acme: &str, globex: &str, initech: &str) -> Self {
        let tenant = |id: &str, name: &str, tier: &str, upstream: &str| TenantSpec {
            id: id.into(),
            name: name.into(),
            tier: tier.into(),
            hosts: vec![format!("{id}.test")],
            upstream: upstream.into(),
            max_body_bytes: None,
            extra_limits: String::new(),
            routes: DEFAULT_ROUTES.into(),
            session_timeouts: ("30m".into(), "12h".into()),
        };
        PolicyFixture {
            trusted_proxies: Vec::new(),
            limits: Vec::new(),
            tls: Vec::new(),
            tenants: vec![
                tenant("acme", "Acme Corp", "prod", acme),
                tenant("globex", "Globex", "prod", globex),
                tenant("initech", "Initech", "staging", initech),
            ],
            prod_operators: Vec::new(),
            staging_operators: Vec::new(),
            automation: Vec::new(),
            prod_key: random_hex(32),
            gateway_env: Vec::new(),
            staging_keys: String::new(),
            extra_files: Vec::new(),
            store_url: None,
            gateway_extra: String::new(),
        }
    }

    /// The standard fixture pointing at running upstreams.
    pub fn for_upstreams(u: &Upstreams) -> Self {
        Self::new(&u.acme.url(), &u.globex.url(), &u.initech.url())
    }

    pub fn tenant_mut(&mut self, id: &str) -> &mut TenantSpec {
        self.tenants.iter_mut().find(|t| t.id == id).expect("tenant in fixture")
    }

    pub fn gateway_toml(&self, dir: &Path) -> String {
        let mut s = String::new();
        s.push_str("# Gateway-wide settings (test fixture).\n\n[listen]\n");
        s.push_str("public = \"127.0.0.1:8080\"\nadmin = \"127.0.0.1:9090\"\n");
        s.push_str(&format!("plaintext = {}\n\n", self.tls.is_empty()));
        for (i, c) in self.tls.iter().enumerate() {
            let hosts: Vec<String> = c.hosts.iter().map(|h| format!("\"{h}\"")).collect();
            s.push_str(&format!(
                "[[tls.certificates]]\nhosts = [{}]\ncert = \"file:tls/cert{i}.pem\"\nkey = \"file:tls/key{i}.pem\"\n\n",
                hosts.join(", ")
            ));
        }
        s.push_str(&format!("[store]\ndata = \"{}\"\n", dir.join("data").display()));
        if let Some(url) = &self.store_url {
            s.push_str(&format!("url = \"{url}\"\n"));
        }
        s.push('\n');
        let proxies: Vec<String> = self.trusted_proxies.iter().map(|p| format!("\"{p}\"")).collect();
        s.push_str(&format!("[proxy]\ntrusted_proxies = [{}]\n\n", proxies.join(", ")));
        s.push_str("[limits]\n");
        let defaults = [
            ("max_header_bytes", "65536"),
            ("max_headers", "100"),
            ("header_read_timeout", "\"30s\""),
            ("idle_timeout", "\"120s\""),
            ("upstream_connect_timeout", "\"5s\""),
            ("upstream_response_timeout", "\"60s\""),
            ("shutdown_grace", "\"30s\""),
        ];
        for (k, v) in defaults {
            if !self.limits.iter().any(|(lk, _)| lk == k) {
                s.push_str(&format!("{k} = {v}\n"));
            }
        }
        for (k, v) in &self.limits {
            s.push_str(&format!("{k} = {v}\n"));
        }
        if !self.gateway_extra.is_empty() {
            s.push('\n');
            s.push_str(&self.gateway_extra);
        }
        s
    }

    pub fn prod_toml(&self) -> String {
        let mut s = String::from(
            "# Tier \"prod\" (test fixture).\nname = \"prod\"\nproduction = true\nupstream_allowlist = [\"127.0.0.1\", \"::1\", \"localhost\"]\n\n[keys]\ncookie = \"file:secrets/prod.key\"\n",
        );
        self.push_credentials(&mut s, "prod", &self.prod_operators);
        s
    }

    pub fn staging_toml(&self) -> String {
        let mut s = "# Tier \"staging\" (test fixture).\nname = \"staging\"\nproduction = false\nupstream_allowlist = [\"127.0.0.1\", \"::1\", \"localhost\"]\n\n[keys]\ncookie = \"inline:staging-test-cookie-key-0123456789-abcdefghij\"\n".to_string();
        s.push_str(&self.staging_keys);
        self.push_credentials(&mut s, "staging", &self.staging_operators);
        s
    }

    /// Appends the `[[operators]]` and `[[automation]]` tables of `tier`.
    fn push_credentials(&self, s: &mut String, tier: &str, operators: &[(String, String)]) {
        for (name, hash) in operators {
            s.push_str(&format!(
                "\n[[operators]]\nname = \"{name}\"\ntoken_sha256 = \"{hash}\"\n"
            ));
        }
        for a in self.automation.iter().filter(|a| a.tier == tier) {
            let quoted = |v: &[String]| v.iter().map(|x| format!("\"{x}\"")).collect::<Vec<_>>().join(", ");
            s.push_str(&format!(
                "\n[[automation]]\nname = \"{}\"\ntoken_sha256 = \"{}\"\nscopes = [{}]\ntenants = [{}]\n",
                a.name,
                a.token_sha256,
                quoted(&a.scopes),
                quoted(&a.tenants)
            ));
        }
    }

    pub fn tenant_toml(t: &TenantSpec) -> String {
        let hosts: Vec<String> = t.hosts.iter().map(|h| format!("\"{h}\"")).collect();
        let mut s = format!(
            "# Tenant \"{id}\" in tier \"{tier}\".\nid = \"{id}\"\nname = \"{name}\"\ntier = \"{tier}\"\nhosts = [{hosts}]\nupstream = \"{up}\"\n\n[session]\nidle_timeout = \"{idle}\"\nabsolute_timeout = \"{absolute}\"\n\n",
            id = t.id,
            tier = t.tier,
            name = t.name,
            hosts = hosts.join(", "),
            up = t.upstream,
            idle = t.session_timeouts.0,
            absolute = t.session_timeouts.1
        );
        if t.max_body_bytes.is_some() || !t.extra_limits.trim().is_empty() {
            s.push_str("[limits]\n");
            if let Some(max) = t.max_body_bytes {
                s.push_str(&format!("max_body_bytes = {max}\n"));
            }
            let extra = t.extra_limits.trim();
            if !extra.is_empty() {
                s.push_str(extra);
                s.push('\n');
            }
            s.push('\n');
        }
        s.push_str(&t.routes);
        s
    }

    /// Writes the whole policy set into `dir` (created if missing).
    pub fn write(&self, dir: &Path) {
        for sub in ["tiers", "tenants", "secrets", "tls"] {
            fs::create_dir_all(dir.join(sub)).expect("mkdir");
        }
        fs::write(dir.join("gateway.toml"), self.gateway_toml(dir)).expect("write gateway");
        fs::write(dir.join("secrets/prod.key"), &self.prod_key).expect("write key");
        fs::write(dir.join("tiers/prod.toml"), self.prod_toml()).expect("write prod");
        fs::write(dir.join("tiers/staging.toml"), self.staging_toml()).expect("write staging");
        for t in &self.tenants {
            fs::write(dir.join(format!("tenants/{}.toml", t.id)), Self::tenant_toml(t)).expect("write tenant");
        }
        for (path, content) in &self.extra_files {
            fs::write(dir.join(path), content).expect("write extra file");
        }
        for (i, c) in self.tls.iter().enumerate() {
            fs::write(dir.join(format!("tls/cert{i}.pem")), &c.cert_pem).expect("write cert");
            fs::write(dir.join(format!("tls/key{i}.pem")), &c.key_pem).expect("write key");
        }
    }
}

/// 1-based line of the first line of `text` containing `needle`.
pub fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|l| l.contains(needle))
        .map(|i| i + 1)
        .unwrap_or_else(|| panic!("{needle:?} not in:\n{text}"))
}

/// One recording upstream per tenant.
pub struct Upstreams {
    pub acme: RecordingUpstream,
    pub globex: RecordingUpstream,
    pub initech: RecordingUpstream,
}

impl Upstreams {
    pub async fn start() -> Self {
        Upstreams {
            acme: RecordingUpstream::start().await,
            globex: RecordingUpstream::start().await,
            initech: RecordingUpstream::start().await,
        }
    }

    pub fn total(&self) -> usize {
        self.acme.count() + self.globex.count() + self.initech.count()
    }
}

// ---------------------------------------------------------------------------------------
// The gateway process
// ---------------------------------------------------------------------------------------

/// A running `portcullis run`; SIGTERM (then SIGKILL) on drop. Its stdout and stderr go
/// to files in the temp dir and are printed when the test panics.
pub struct Gateway {
    child: Option<Child>,
    /// Bound public address, as the process reported it.
    pub public: SocketAddr,
    /// Bound admin address, as the process reported it.
    pub admin: SocketAddr,
    pub policy_dir: PathBuf,
    /// Extra environment of the process, kept for [`Gateway::restart`].
    env: Vec<(String, String)>,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Gateway {
    /// Writes the fixture and starts the gateway on port 0 (public and admin listener),
    /// then waits for `/healthz` to answer 200 on the admin address it reported.
    pub async fn start(fixture: &PolicyFixture) -> Gateway {
        let tmp = tempfile::Builder::new()
            .prefix("portcullis-bb-")
            .tempdir()
            .expect("tempdir");
        let policy_dir = tmp.path().join("policy");
        fixture.write(&policy_dir);
        let unbound = SocketAddr::from(([127, 0, 0, 1], 0));
        let mut gw = Gateway {
            child: None,
            public: unbound,
            admin: unbound,
            policy_dir,
            env: fixture.gateway_env.clone(),
            stdout_path: tmp.path().join("stdout.log"),
            stderr_path: tmp.path().join("stderr.log"),
            _tmp: tmp,
        };
        gw.spawn().await;
        gw
    }

    /// Starts a new process on the same policy directory (and so the same store) once
    /// the previous one exited. It binds port 0 again, so `public` and `admin` change:
    /// no test needs the old ports back, and they may belong to another process by now.
    pub async fn restart(&mut self) {
        if let Some(child) = self.child.as_mut() {
            assert!(
                matches!(child.try_wait(), Ok(Some(_))),
                "restart only after the gateway exited"
            );
        }
        self.spawn().await;
    }

    /// Spawns `portcullis run` on port 0 and reads the bound addresses from its
    /// `listening` log line; panics (printing the logs) if it does not come up.
    async fn spawn(&mut self) {
        // Appended: the logs of every process of this gateway stay in one file, and this
        // process's lines start at `from`.
        let from = fs::metadata(&self.stdout_path).map_or(0, |m| m.len());
        let append = |path: &Path| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .expect("log file")
        };
        let child = Command::new(BIN)
            .arg("run")
            .arg("--config")
            .arg(&self.policy_dir)
            .args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("RUST_LOG", "info")
            .env_remove("PORTCULLIS_OPERATOR_TOKEN")
            .envs(self.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(append(&self.stdout_path))
            .stderr(append(&self.stderr_path))
            .spawn()
            .expect("spawn portcullis");
        self.child = Some(child);
        let started = match self.wait_listening(from).await {
            Ok((public, admin)) => {
                self.public = public;
                self.admin = admin;
                self.wait_healthy().await
            }
            Err(e) => Err(e),
        };
        if let Err(e) = started {
            panic!("gateway did not start: {e}"); // Drop prints the logs.
        }
    }

    /// The addresses of the `listening` line (`"public"`, `"admin"`: the bound ones) that
    /// the process logs once both listeners are bound, found after byte `from` of stdout.
    async fn wait_listening(&mut self, from: u64) -> Result<(SocketAddr, SocketAddr), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let out = fs::read(&self.stdout_path).unwrap_or_default();
            let ours = out
                .get(usize::try_from(from).unwrap_or(usize::MAX)..)
                .unwrap_or_default();
            let listening = ours
                .split(|b| *b == b'\n')
                .filter_map(|line| serde_json::from_slice::<serde_json::Value>(line).ok())
                .find(|v| v["message"] == "listening");
            if let Some(line) = listening {
                let addr = |key: &str| {
                    line[key]
                        .as_str()
                        .and_then(|a| a.parse::<SocketAddr>().ok())
                        .filter(|a| a.port() != 0)
                        .ok_or_else(|| format!("no bound `{key}` address in {line}"))
                };
                return Ok((addr("public")?, addr("admin")?));
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("gateway exited early with {status}"));
            }
            if Instant::now() > deadline {
                return Err("gateway logged no `listening` line within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn wait_healthy(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                return Err(format!("gateway exited early with {status}"));
            }
            if let Ok(resp) = raw_exchange(
                self.admin,
                b"GET /healthz HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n",
            )
            .await
                && parse_responses(&resp).first().is_some_and(|r| r.status == 200)
            {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err("gateway /healthz did not answer 200 within 10 s".into());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("child running").id()
    }

    /// `http://<host>:<public port><path>`, for a client from [`Gateway::client`].
    pub fn host_url(&self, host: &str, path: &str) -> String {
        format!("http://{host}:{}{path}", self.public.port())
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// A client that resolves the fixture hosts to the gateway and never uses a proxy.
    pub fn client(&self) -> reqwest::Client {
        self.client_builder().build().expect("client")
    }

    pub fn client_builder(&self) -> reqwest::ClientBuilder {
        let mut b = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(60))
            .redirect(reqwest::redirect::Policy::none());
        for host in ["acme.test", "globex.test", "initech.test", "unknown.test", "ACME.test"] {
            b = b.resolve(host, self.public);
        }
        b
    }

    /// Sends a signal with `kill -<SIG> <pid>`.
    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.pid().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{sig} failed");
    }

    /// Waits for the process to exit; None on timeout.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            let child = self.child.as_mut()?;
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub fn stdout(&self) -> String {
        fs::read_to_string(&self.stdout_path).unwrap_or_default()
    }

    /// The ECS security events with `event.action == action` logged so far.
    pub fn security_events(&self, action: &str) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["event.kind"] == "security" && v["event.action"] == action)
            .collect()
    }

    /// Waits (at most 5 s: logs go through a non-blocking writer) for a security event
    /// with `event.action == action` that `matches` accepts, and panics with the log if
    /// none comes.
    pub async fn await_security_event(
        &self,
        action: &str,
        matches: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let found = eventually(Duration::from_secs(5), || async {
            self.security_events(action).into_iter().find(|e| matches(e))
        })
        .await;
        match found {
            Some(event) => event,
            None => panic!("no matching {action} security event:\n{}", self.logs()),
        }
    }

    pub fn logs(&self) -> String {
        format!(
            "----- gateway stdout ({}) -----\n{}\n----- gateway stderr -----\n{}\n-----",
            self.stdout_path.display(),
            self.stdout(),
            fs::read_to_string(&self.stderr_path).unwrap_or_default()
        )
    }

    /// Resident set size of the gateway in KiB.
    pub fn rss_kib(&self) -> u64 {
        let status = fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    }

    /// Access-log lines (JSON objects with `target == "access"`) seen so far.
    pub fn access_log(&self) -> Vec<serde_json::Value> {
        self.stdout()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v.get("target").and_then(|t| t.as_str()) == Some("access"))
            .collect()
    }

    pub async fn readyz(&self) -> serde_json::Value {
        let resp = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client")
            .get(self.admin_url("/readyz"))
            .send()
            .await
            .expect("readyz");
        assert_eq!(resp.status(), 200);
        resp.json().await.expect("readyz json")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            if matches!(child.try_wait(), Ok(None)) {
                let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
                let deadline = Instant::now() + Duration::from_secs(5);
                while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill();
            }
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("{}", self.logs());
        }
    }
}

// ---------------------------------------------------------------------------------------
// Raw TCP
// ---------------------------------------------------------------------------------------

/// Sends `request` as is and returns every byte the server sent until it closed the
/// connection or stayed silent for 1.5 s (10 s at most). The request is written in a
/// separate task so an early answer (431, 400) is read even while the write fails.
pub async fn raw_exchange(addr: SocketAddr, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let stream = TcpStream::connect(addr).await?;
    let (mut rd, mut wr) = stream.into_split();
    let data = request.to_vec();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&data).await;
        let _ = wr.flush().await;
        // Keep the write half open until the reader is done (no half-close).
        tokio::time::sleep(Duration::from_secs(12)).await;
        drop(wr);
    });
    let mut out = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let idle = if out.is_empty() {
            Duration::from_secs(8)
        } else {
            Duration::from_millis(1500)
        };
        match tokio::time::timeout(idle, rd.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => break,
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => {
                if out.is_empty() {
                    writer.abort();
                    return Err(e);
                }
                break;
            }
        }
        if Instant::now() > deadline {
            break;
        }
    }
    writer.abort();
    Ok(out)
}

/// One parsed response from a raw exchange.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Parses consecutive HTTP/1.1 responses (Content-Length or chunked bodies).
pub fn parse_responses(mut data: &[u8]) -> Vec<RawResponse> {
    let mut out = Vec::new();
    while let Some(end) = find(data, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&data[..end]).into_owned();
        let mut lines = head.split("\r\n");
        let status_line = lines.next().unwrap_or_default();
        let Some(status) = status_line.split(' ').nth(1).and_then(|s| s.parse::<u16>().ok()) else {
            break;
        };
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_string(), v.trim().to_string()))
            .collect();
        data = &data[end + 4..];
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(n))
                .map(|(_, v)| v.clone())
        };
        let mut body = Vec::new();
        if status == 101 || status == 204 || status == 304 || (100..200).contains(&status) {
        } else if get("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            while let Some(le) = find(data, b"\r\n") {
                let size = usize::from_str_radix(
                    String::from_utf8_lossy(&data[..le])
                        .split(';')
                        .next()
                        .unwrap_or("0")
                        .trim(),
                    16,
                )
                .unwrap_or(0);
                data = &data[le + 2..];
                if size == 0 {
                    if let Some(te) = find(data, b"\r\n") {
                        data = &data[te + 2..];
                    }
                    break;
                }
                let take = size.min(data.len());
                body.extend_from_slice(&data[..take]);
                data = &data[take..];
                if data.starts_with(b"\r\n") {
                    data = &data[2..];
                }
            }
        } else if let Some(len) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let take = len.min(data.len());
            body.extend_from_slice(&data[..take]);
            data = &data[take..];
        }
        out.push(RawResponse { status, headers, body });
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Sends a raw request and returns the parsed responses; panics when nothing came back.
pub async fn raw(addr: SocketAddr, request: &[u8]) -> Vec<RawResponse> {
    let data = raw_exchange(addr, request).await.expect("raw exchange");
    let parsed = parse_responses(&data);
    assert!(
        !parsed.is_empty(),
        "no HTTP response to {:?}; got {:?}",
        String::from_utf8_lossy(request),
        String::from_utf8_lossy(&data)
    );
    parsed
}

/// `GET <target>` with `Host: <host>` and `Connection: close`; the first response.
pub async fn raw_get(addr: SocketAddr, host: &str, target: &str) -> RawResponse {
    let req = format!("GET {target} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    raw(addr, req.as_bytes()).await.remove(0)
}

/// Polls `f` every 50 ms until it returns Some, for at most `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Starts the standard upstreams and a gateway for the standard fixture, tweaked by `tweak`.
pub async fn start_with(tweak: impl FnOnce(&mut PolicyFixture)) -> (Upstreams, Gateway) {
    let ups = Upstreams::start().await;
    let mut fixture = PolicyFixture::for_upstreams(&ups);
    tweak(&mut fixture);
    let gw = Gateway::start(&fixture).await;
    (ups, gw)
}

pub async fn start() -> (Upstreams, Gateway) {
    start_with(|_| {}).await
}

/// What `portcullis demo --data <data>` reports in `<data>/demo.json`: the bound `public`
/// and `admin` addresses (the tests start it on port 0), tenants, users and tokens. None
/// until the file exists and is complete (it is written after both listeners are bound,
/// and a partly written JSON object does not parse).
pub fn demo_json(data: &Path) -> Option<serde_json::Value> {
    let text = fs::read_to_string(data.join("demo.json")).ok()?;
    serde_json::from_str(&text).ok()
}

// ---------------------------------------------------------------------------------------
// Local accounts, TOTP codes and a cookie-keeping client (sign-in tests)
// ---------------------------------------------------------------------------------------

/// Seconds since the epoch, fractional.
fn unix_now_f64() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// Creates local users directly in a running gateway's embedded store (SQLite in WAL
/// mode, so the gateway and this handle share the files), as the CLI would.
pub struct Accounts {
    stores: portcullis::store::Stores,
    hasher: portcullis::auth::password::PasswordHasher,
}

impl Accounts {
    /// Writes `n` live sessions of `tenant` straight into the store (faster than `n`
    /// sign-ins) and returns their cookie values.
    pub async fn insert_sessions(&self, tenant: &str, n: usize) -> Vec<String> {
        use base64::Engine;
        let tier = if tenant == "initech" { "staging" } else { "prod" };
        let store = self.stores.tier(tier).expect("store of the tier");
        let now = unix_now_f64() as i64;
        let mut tokens = Vec::with_capacity(n);
        let mut pending = Vec::new();
        for i in 0..n {
            let raw: [u8; 32] = rand::random();
            tokens.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
            let record = live_session(&raw, tenant, tier, &format!("bulk{}", i % 500), now);
            let store = store.clone();
            pending.push(tokio::spawn(async move { store.create_session(&record).await }));
            if pending.len() == 64 {
                for p in pending.drain(..) {
                    p.await.expect("insert task").expect("insert session");
                }
            }
        }
        for p in pending {
            p.await.expect("insert task").expect("insert session");
        }
        tokens
    }

    /// Opens the prod and staging stores under the gateway's data dir.
    pub async fn open(gw: &Gateway) -> Self {
        Self::open_dir(&gw.policy_dir.join("data")).await
    }

    /// Opens the prod and staging stores under `data` (`sqlite:<data>`).
    pub async fn open_dir(data: &Path) -> Self {
        Self::open_url(&format!("sqlite:{}", data.display())).await
    }

    /// Opens the prod and staging stores at a store URL (`sqlite:DIR`, `redis://...`).
    pub async fn open_url(url: &str) -> Self {
        let stores = portcullis::store::Stores::open(url, ["prod", "staging"])
            .await
            .expect("open the gateway's store");
        let hasher =
            portcullis::auth::password::PasswordHasher::new(portcullis::auth::password::PasswordHasherConfig {
                max_concurrent: 2,
                max_queue: 64,
            })
            .expect("password hasher");
        Accounts { stores, hasher }
    }

    /// The store of a tier.
    pub fn store(&self, tier: &str) -> std::sync::Arc<dyn portcullis::store::TierStore> {
        self.stores.tier(tier).expect("tier store")
    }

    /// A user of `tenant` (tier looked up from the standard fixture) with `roles`, a
    /// password derived from the name and, when `enrolled`, a fresh TOTP secret.
    pub async fn create(&self, tenant: &str, username: &str, roles: &[&str], enrolled: bool) -> TestUser {
        let tier = if tenant == "initech" { "staging" } else { "prod" };
        let password = format!("{username}-correct-horse-battery");
        let now = unix_now_f64() as i64;
        let secret = enrolled.then(|| portcullis::auth::mfa::new_secret().expose_base32().to_string());
        let user = portcullis::records::UserRecord {
            tenant: tenant.to_string(),
            username: username.to_string(),
            display_name: format!("{username} (test)"),
            roles: roles.iter().map(|r| r.to_string()).collect(),
            password_hash: self.hasher.hash(&password).await.expect("hash password"),
            totp_secret: secret.clone(),
            totp_enrolled_at: enrolled.then_some(now),
            recovery_code_hashes: Vec::new(),
            disabled: false,
            created_at: now,
            password_changed_at: now,
        };
        self.store(tier).create_user(&user).await.expect("create user");
        TestUser {
            tenant: tenant.to_string(),
            tier: tier.to_string(),
            username: username.to_string(),
            password,
            secret: Mutex::new(secret),
            used_steps: Mutex::default(),
        }
    }

    /// Login history of a user straight from the store (newest first).
    pub async fn history(&self, user: &TestUser) -> Vec<portcullis::records::LoginEvent> {
        self.store(&user.tier)
            .login_history(&user.tenant, &user.username, 200, None)
            .await
            .expect("login history")
    }
}

/// A local user created for a test, with what it takes to sign in.
pub struct TestUser {
    pub tenant: String,
    pub tier: String,
    pub username: String,
    pub password: String,
    /// Base32 TOTP secret (None until enrolled).
    secret: Mutex<Option<String>>,
    /// TOTP steps already handed out (each code is accepted once).
    used_steps: Mutex<std::collections::BTreeSet<u64>>,
}

impl TestUser {
    /// A user known only by name and password, with a known secret (e.g. the demo's).
    pub fn known(tenant: &str, tier: &str, username: &str, password: &str, secret: &str) -> Self {
        TestUser {
            tenant: tenant.into(),
            tier: tier.into(),
            username: username.into(),
            password: password.into(),
            secret: Mutex::new(Some(secret.into())),
            used_steps: Mutex::default(),
        }
    }

    pub fn set_secret(&self, base32: &str) {
        *self.secret.lock().expect("secret") = Some(base32.to_string());
    }

    /// The base32 TOTP secret, for a browser script that computes its own codes.
    pub fn totp_secret(&self) -> Option<String> {
        self.secret.lock().expect("secret").clone()
    }

    /// The TOTP code of a time step.
    pub fn code_at(&self, step: u64) -> String {
        let secret = self
            .secret
            .lock()
            .expect("secret")
            .clone()
            .expect("user has a TOTP secret");
        let secret = portcullis::auth::mfa::TotpSecret::from_base32(&secret).expect("valid secret");
        format!("{:06}", portcullis::auth::mfa::code_at(&secret, step))
    }

    /// A code the gateway accepts now: of a step later than every step handed out before
    /// (the gateway accepts only steps after the last one it accepted), the earliest of
    /// the previous, current and next step (±1 step is accepted). Never within 3 s of a
    /// step boundary, so the gateway sees the same current step; waits for the next step
    /// when none is left.
    pub async fn fresh_code(&self) -> String {
        loop {
            let now = unix_now_f64();
            let step = (now / 30.0) as u64;
            let remaining = 30.0 - now % 30.0;
            if remaining >= 3.0 {
                let picked = {
                    let mut used = self.used_steps.lock().expect("steps");
                    let last = used.last().copied();
                    let pick = [step - 1, step, step + 1]
                        .into_iter()
                        .find(|s| last.is_none_or(|l| *s > l));
                    if let Some(s) = pick {
                        used.insert(s);
                    }
                    pick
                };
                if let Some(s) = picked {
                    return self.code_at(s);
                }
            }
            tokio::time::sleep(Duration::from_secs_f64(remaining + 0.2)).await;
        }
    }

    /// A code of the current step, at least 3 s before the step ends (for replay tests:
    /// the same code stays acceptable-but-used for the rest of the test).
    pub async fn current_step(&self) -> u64 {
        loop {
            let now = unix_now_f64();
            let remaining = 30.0 - now % 30.0;
            if remaining >= 3.0 {
                return (now / 30.0) as u64;
            }
            tokio::time::sleep(Duration::from_secs_f64(remaining + 0.2)).await;
        }
    }

    /// Marks a step as used by the test (so [`TestUser::fresh_code`] hands out only later ones).
    pub fn mark_used(&self, step: u64) {
        self.used_steps.lock().expect("steps").insert(step);
    }

    pub fn session_cookie(&self) -> String {
        format!("__Host-portcullis-{}", self.tier)
    }
}

/// One `Set-Cookie` header, split.
#[derive(Debug, Clone)]
pub struct SetCookie {
    pub name: String,
    pub value: String,
    /// Attributes as sent (`Path=/`, `Secure`, ...), trimmed.
    pub attrs: Vec<String>,
}

impl SetCookie {
    pub fn parse(line: &str) -> Option<Self> {
        let mut parts = line.split(';');
        let (name, value) = parts.next()?.split_once('=')?;
        Some(SetCookie {
            name: name.trim().to_string(),
            value: value.trim().to_string(),
            attrs: parts.map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect(),
        })
    }

    /// The attribute `name` (case-insensitive): `Some("")` for flags, `Some(value)` else.
    pub fn attr(&self, name: &str) -> Option<String> {
        self.attrs.iter().find_map(|a| {
            let (n, v) = a.split_once('=').unwrap_or((a.as_str(), ""));
            n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
        })
    }

    /// A deletion (`Max-Age=0` or an empty value).
    pub fn is_removal(&self) -> bool {
        self.value.is_empty() || self.attr("max-age").is_some_and(|v| v == "0")
    }
}

/// A response as an [`Agent`] saw it.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): status {} body {:?}", self.status, self.body))
    }

    pub fn set_cookies(&self) -> Vec<SetCookie> {
        self.headers
            .get_all(reqwest::header::SET_COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .filter_map(SetCookie::parse)
            .collect()
    }

    /// The one `Set-Cookie` for `name`; panics when it was sent twice.
    pub fn set_cookie(&self, name: &str) -> Option<SetCookie> {
        let all: Vec<SetCookie> = self.set_cookies().into_iter().filter(|c| c.name == name).collect();
        assert!(all.len() <= 1, "Set-Cookie {name} sent {} times: {all:?}", all.len());
        all.into_iter().next()
    }
}

/// A client of one tenant host that keeps its own cookies: `Secure` cookies over plain
/// HTTP are kept and sent like a browser on `https` would (reqwest's jar would not).
pub struct Agent {
    client: reqwest::Client,
    port: u16,
    pub host: String,
    pub cookies: BTreeMap<String, String>,
    pub user_agent: String,
}

impl Agent {
    /// A browser of `host` talking plaintext HTTP to a listener at `public` (a gateway
    /// this harness did not start, such as `portcullis demo`).
    pub fn at(public: std::net::SocketAddr, host: &str) -> Self {
        let client = reqwest::Client::builder()
            .resolve(host, public)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Agent {
            client,
            port: public.port(),
            host: host.to_string(),
            cookies: BTreeMap::new(),
            user_agent: "portcullis-blackbox/1.0".into(),
        }
    }

    pub fn new(gw: &Gateway, host: &str) -> Self {
        let mut b = gw.client_builder();
        // Extra hosts of the sign-in tests (the demo uses *.localhost names).
        for h in ["acme.localhost", "globex.localhost", "initech.localhost"] {
            b = b.resolve(h, gw.public);
        }
        Agent {
            client: b.build().expect("client"),
            port: gw.public.port(),
            host: host.to_string(),
            cookies: BTreeMap::new(),
            user_agent: "portcullis-blackbox/1.0".into(),
        }
    }

    /// `http://<host>:<port>`, also the value a browser sends as `Origin`.
    pub fn origin(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The `Cookie` header this agent sends (None without cookies).
    pub fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(n, v)| format!("{n}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// Sends a request with this agent's cookies and user agent plus `headers`, and
    /// applies the `Set-Cookie`s of the answer. A `Cookie` in `headers` replaces the jar's.
    pub async fn send(
        &mut self,
        method: http::Method,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<(&str, Vec<u8>)>,
    ) -> Reply {
        let url = format!("{}{path}", self.origin());
        let mut req = self
            .client
            .request(method, &url)
            .header(reqwest::header::USER_AGENT, &self.user_agent);
        let custom_cookie = headers.iter().any(|(n, _)| n.eq_ignore_ascii_case("cookie"));
        if !custom_cookie && let Some(c) = self.cookie_header() {
            req = req.header(reqwest::header::COOKIE, c);
        }
        for (n, v) in headers {
            req = req.header(*n, *v);
        }
        if let Some((ct, bytes)) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, ct).body(bytes);
        }
        let resp = req.send().await.unwrap_or_else(|e| panic!("{url}: {e}"));
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.unwrap_or_default();
        let reply = Reply { status, headers, body };
        for c in reply.set_cookies() {
            if c.is_removal() {
                self.cookies.remove(&c.name);
            } else {
                self.cookies.insert(c.name, c.value);
            }
        }
        reply
    }

    pub async fn get(&mut self, path: &str) -> Reply {
        self.send(http::Method::GET, path, &[], None).await
    }

    pub async fn delete(&mut self, path: &str) -> Reply {
        self.send(http::Method::DELETE, path, &[], None).await
    }

    pub async fn post_json(&mut self, path: &str, body: &serde_json::Value) -> Reply {
        self.send(
            http::Method::POST,
            path,
            &[],
            Some(("application/json", body.to_string().into_bytes())),
        )
        .await
    }

    /// A form post as a browser sends it (same-origin `Origin`, urlencoded body).
    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Reply {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let origin = self.origin();
        self.send(
            http::Method::POST,
            path,
            &[("origin", &origin)],
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await
    }

    /// Password step of the JSON API; returns the reply (not checked).
    pub async fn api_password_step(&mut self, user: &TestUser, rd: Option<&str>) -> Reply {
        let path = match rd {
            Some(rd) => format!(
                "/.portcullis/api/login?rd={}",
                percent_encoding::utf8_percent_encode(rd, percent_encoding::NON_ALPHANUMERIC)
            ),
            None => "/.portcullis/api/login".to_string(),
        };
        self.post_json(
            &path,
            &serde_json::json!({ "username": user.username, "password": user.password }),
        )
        .await
    }

    /// Full JSON sign-in (password, then a fresh TOTP code); panics unless both steps
    /// succeed. Returns the `api/mfa` reply.
    pub async fn api_login(&mut self, user: &TestUser) -> Reply {
        let r = self.api_password_step(user, None).await;
        assert_eq!(r.status, 200, "password step: {}", r.body);
        assert_eq!(r.json()["next"], "mfa", "{}", r.body);
        let code = user.fresh_code().await;
        let r = self
            .post_json("/.portcullis/api/mfa", &serde_json::json!({ "code": code }))
            .await;
        assert_eq!(r.status, 200, "mfa step: {}", r.body);
        assert!(
            self.cookies.contains_key(&user.session_cookie()),
            "no session cookie after sign-in: {:?}",
            r.headers
        );
        r
    }

    /// This agent's session cookie value for `tier`.
    pub fn session(&self, tier: &str) -> Option<String> {
        self.cookies.get(&format!("__Host-portcullis-{tier}")).cloned()
    }

    /// The id of this agent's session from `GET /.portcullis/api/sessions`.
    pub async fn current_session_id(&mut self) -> String {
        let r = self.get("/.portcullis/api/sessions").await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
            .as_array()
            .expect("array")
            .iter()
            .find(|s| s["current"] == true)
            .and_then(|s| s["id"].as_str())
            .expect("a current session")
            .to_string()
    }
}

/// An admin API answer: the status, the body as JSON (a body that is not JSON as a JSON
/// string, so that a failing assertion can print it) and `Location`.
#[derive(Debug, Clone)]
pub struct AdminAnswer {
    pub status: u16,
    pub body: serde_json::Value,
    pub location: Option<String>,
}

/// A client for the admin API: no proxy, and a timeout that an approval reloading the
/// policy on a busy machine stays well within.
pub fn admin_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("client")
}

/// One admin API call with exactly these headers (no `Authorization` unless given) and,
/// when given, a JSON body.
pub async fn admin_send(
    client: &reqwest::Client,
    admin: SocketAddr,
    method: reqwest::Method,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&serde_json::Value>,
) -> AdminAnswer {
    let mut req = client.request(method, format!("http://{admin}{path}"));
    for (n, v) in headers {
        req = req.header(*n, *v);
    }
    if let Some(b) = body {
        req = req.header("content-type", "application/json").body(b.to_string());
    }
    let resp = req.send().await.unwrap_or_else(|e| panic!("{path}: {e}"));
    let status = resp.status().as_u16();
    let location = resp
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let text = resp.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text));
    AdminAnswer { status, body, location }
}

/// One admin API call as the holder of `token` (`Authorization: Bearer`).
pub async fn admin_call(
    client: &reqwest::Client,
    admin: SocketAddr,
    method: reqwest::Method,
    path: &str,
    token: &str,
    body: Option<serde_json::Value>,
) -> AdminAnswer {
    let auth = format!("Bearer {token}");
    admin_send(client, admin, method, path, &[("authorization", &auth)], body.as_ref()).await
}

/// A tier's `[[operators]]` for the fixture: each (name, token) as (name, the token's
/// hex SHA-256), the only form the policy holds.
pub fn operators(named_tokens: &[(&str, &str)]) -> Vec<(String, String)> {
    named_tokens
        .iter()
        .map(|(name, token)| (name.to_string(), sha256_hex(token.as_bytes())))
        .collect()
}

/// The string a JSON value holds; panics, showing the value, when it is not a string.
pub fn json_str(v: &serde_json::Value) -> String {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}")).to_string()
}

/// A JSON body without its `request_id` (unique to each request), for comparing what
/// two refusals say; a body that is not JSON is kept as a string.
pub fn sans_request_id(body: &str) -> serde_json::Value {
    match serde_json::from_str::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(mut fields)) => {
            fields.remove("request_id");
            serde_json::Value::Object(fields)
        }
        _ => serde_json::Value::String(body.to_string()),
    }
}

/// A real `redis-server` on a free loopback port, killed on drop. Append-only, fsynced on
/// every write, so a killed and restarted server (same port, same dir) has every write
/// it acknowledged.
pub struct RedisServer {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server on a free port. A port picked as free can be taken by another test
    /// before the server binds it, so each of up to five attempts picks a fresh one.
    pub fn start() -> RedisServer {
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("tempdir");
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("free port")
                .port();
            let mut redis = RedisServer { child: None, port, dir };
            if redis.try_spawn() {
                return redis;
            }
        }
        panic!("redis-server did not come up on any of 5 free ports");
    }

    /// Starts the server (again, after [`RedisServer::kill`]) on the same port and dir.
    pub fn spawn(&mut self) {
        assert!(self.try_spawn(), "redis-server did not come up on port {}", self.port);
    }

    /// Starts the server and waits until it answers PING as itself: false when it exits
    /// (its port was taken) or does not answer within 5 s.
    fn try_spawn(&mut self) -> bool {
        let mut child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1", "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .arg("--dir")
            .arg(self.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (apt-get install redis-server)");
        let own_pid = format!("process_id:{}", child.id());
        for _ in 0..200 {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return false;
            }
            // Another test's server may answer on the port while this one exits.
            if self.cli(&["PING"]) == "PONG" && self.cli(&["INFO", "server"]).lines().any(|l| l.trim() == own_pid) {
                self.child = Some(child);
                return true;
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    /// SIGKILL: no shutdown, no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// `redis-cli` against this server: its trimmed stdout.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_status(args).0
    }

    /// `redis-cli` against this server: (trimmed stdout, success).
    pub fn cli_status(&self, args: &[&str]) -> (String, bool) {
        let out = Command::new("redis-cli")
            .args(["-p", &self.port.to_string()])
            .args(args)
            .output()
            .expect("redis-cli");
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            out.status.success(),
        )
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A live local session of `subject` made at `now` (an hour idle, two absolute) whose
/// token is `raw`, for writing straight into a store.
pub fn live_session(
    raw: &[u8; 32],
    tenant: &str,
    tier: &str,
    subject: &str,
    now: i64,
) -> portcullis::records::SessionRecord {
    portcullis::records::SessionRecord {
        id_hash: portcullis::records::session_id_hash(raw),
        tenant: tenant.to_string(),
        tier: tier.to_string(),
        subject: subject.to_string(),
        idp: portcullis::account::LOCAL_IDP.to_string(),
        display_name: subject.to_string(),
        roles: vec![],
        auth_method: "password".into(),
        amr: vec!["pwd".into(), "otp".into()],
        mfa_at: Some(now),
        created_at: now,
        last_seen: now,
        idle_expires_at: now + 3600,
        absolute_expires_at: now + 7200,
        ip: "127.0.0.1".into(),
        user_agent: "blackbox".into(),
        csrf_token: "x".into(),
        sso_sid: None,
        revoked: None,
    }
}

/// Reads until EOF or error: what was read and how long after the call the connection
/// ended, or None if it was still open after `limit`.
pub async fn read_until_closed<S: tokio::io::AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Option<(Vec<u8>, Duration)> {
    let started = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(limit.saturating_sub(started.elapsed()), stream.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some((out, started.elapsed())),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
        }
    }
}

/// A TLS connection to `addr` that trusts only `ca_pem`, names `host` (SNI) and offers
/// `alpn` (none: HTTP/1.1): for timing a connection by hand, where reqwest would hide
/// when bytes move.
pub async fn tls_connect(
    addr: SocketAddr,
    host: &str,
    ca_pem: &str,
    alpn: &[&[u8]],
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(rustls_pki_types::CertificateDer::from_pem_slice(ca_pem.as_bytes()).expect("CA PEM"))
        .expect("CA certificate");
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from(host.to_string()).expect("server name");
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("TLS handshake")
}

/// Sends the start of a request head on `stream` and nothing more: the listener (with a
/// 1 s `header_read_timeout`) must close the connection within 6 s, answering 408 or
/// nothing.
pub async fn assert_trickled_head_is_cut_off<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(stream: &mut S) {
    stream
        .write_all(b"GET /public/slowloris HTTP/1.1\r\nHost: acme.test\r\nX-A: 1\r\n")
        .await
        .expect("write the start of a head");
    let (answer, after) = read_until_closed(stream, Duration::from_secs(10))
        .await
        .expect("connection still open 10 s later");
    assert!(after < Duration::from_secs(6), "closed only after {after:?}");
    let status = parse_responses(&answer).first().map(|r| r.status);
    assert!(status.is_none_or(|s| s == 408), "unexpected answer {status:?}");
}

/// Sets a 1 s `header_read_timeout` and a 30 s `idle_timeout`: which of the two closed a
/// connection then shows in how long it lasted.
pub fn one_second_header_limit(f: &mut PolicyFixture) {
    f.limits.push(("header_read_timeout".into(), "\"1s\"".into()));
    f.limits.push(("idle_timeout".into(), "\"30s\"".into()));
}

/// Writes a whole `Connection: close` request on `stream` (open already) and reads the
/// answer to its end, 10 s at most: its status (none if the connection was closed
/// instead), and what was read.
pub async fn request_on<S>(stream: &mut S, request: &[u8]) -> (Option<u16>, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if stream.write_all(request).await.is_err() {
        return (None, String::new());
    }
    let answer = read_until_closed(stream, Duration::from_secs(10))
        .await
        .map(|(answer, _)| answer)
        .unwrap_or_default();
    let status = parse_responses(&answer).first().map(|r| r.status);
    (status, String::from_utf8_lossy(&answer).into_owned())
}

/// Opens HTTP/2 on `stream` (the client preface and an empty SETTINGS frame) and then
/// says nothing for 3 s, past a 1 s `header_read_timeout` and its two ticks of lateness.
/// A PING must then still get its ACK: an HTTP/2 connection has no request head to
/// time, so only the idle limit may close it.
pub async fn assert_silent_http2_connection_stays_open<S>(stream: &mut S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    // length 0, type SETTINGS (4), no flags, stream 0.
    const EMPTY_SETTINGS: [u8; 9] = [0, 0, 0, 4, 0, 0, 0, 0, 0];
    // length 8, type PING (6), no flags, stream 0, then 8 bytes of data.
    const PING: [u8; 17] = [0, 0, 8, 6, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8];
    stream.write_all(PREFACE).await.expect("write the preface");
    stream.write_all(&EMPTY_SETTINGS).await.expect("write SETTINGS");
    tokio::time::sleep(Duration::from_secs(3)).await;
    stream.write_all(&PING).await.expect("the connection is still open");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut read = Vec::new();
    loop {
        // Frames one after another: 9-byte header (24-bit length, type, flags, stream).
        let mut frames = read.as_slice();
        while frames.len() >= 9 {
            let len = usize::from(frames[0]) << 16 | usize::from(frames[1]) << 8 | usize::from(frames[2]);
            let (kind, flags) = (frames[3], frames[4]);
            if frames.len() < 9 + len {
                break;
            }
            if kind == 6 && flags & 1 == 1 {
                assert_eq!(&frames[9..9 + len], &PING[9..], "the ACK carries the PING's data");
                return;
            }
            assert_ne!(kind, 7, "GOAWAY instead of a PING ACK: {:?}", &frames[..9 + len]);
            frames = &frames[9 + len..];
        }
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout(left, stream.read(&mut buf))
            .await
            .expect("a PING ACK within 10 s")
            .unwrap_or(0);
        assert!(n > 0, "the connection was closed instead of answering the PING");
        read.extend_from_slice(&buf[..n]);
    }
}
