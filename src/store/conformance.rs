//! The one test suite every [`TierStore`] backend must pass (every role), written against
//! `&dyn TierStore` only, and its instantiation for SQLite (a temporary directory) and
//! Redis (a `redis-server` child process per test, killed when the test ends).
//!
//! If these pass for both backends, callers can switch backends without noticing. The Redis
//! tests fail (never skip) when `redis-server` is not installed.
//!
//! Times start at [`T0`], far in the future, so Redis's own key expiry (on the real clock)
//! never fires during a test: the behaviour under test follows the `now` passed in.
// Test-only module: its parent declares it under #[cfg(test)], so unwrap/expect are fine here.

use std::collections::BTreeSet;
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    LOGIN_HISTORY_CAP, PURGE_GRACE_SECS, SessionStore, StoreError, Stores, TENANT_LOGIN_HISTORY_CAP, TierStore,
};
use crate::records::user::USER_AGENT_MAX_CHARS;
use crate::records::{LoginEvent, Revocation, SessionRecord, UserRecord, session_id_hash};

/// A recovery code's hash as the store sees it: opaque 32 bytes (the auth service decides
/// how codes are normalised before hashing; the store only keeps and consumes hashes).
fn code_hash(code: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(code.as_bytes()).into()
}

/// 2096-10-02: later than any real clock, see the module docs.
const T0: i64 = 4_000_000_000;
const IDLE: i64 = 30 * 60;
const ABSOLUTE: i64 = 12 * 3600;

/// A backend under test: a store URL plus whatever must live as long as the test.
pub(crate) struct Backend {
    url: String,
    _keep: Box<dyn Send + Sync>,
}

impl Backend {
    /// SQLite in a fresh temporary directory.
    pub(crate) fn sqlite() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let url = format!("sqlite:{}", dir.path().join("data").display());
        Backend {
            url,
            _keep: Box::new(dir),
        }
    }

    /// Redis on a fresh `redis-server` child process.
    pub(crate) fn redis() -> Self {
        let server = RedisServer::start();
        Backend {
            url: server.url(),
            _keep: Box::new(server),
        }
    }

    /// Redis Cluster: three masters on loopback.
    pub(crate) fn redis_cluster() -> Self {
        let cluster = RedisCluster::start();
        Backend {
            url: cluster.url(),
            _keep: Box::new(cluster),
        }
    }

    /// Redis behind Sentinel: a master, a replica and one sentinel.
    pub(crate) fn redis_sentinel() -> Self {
        let sentinel = RedisSentinel::start();
        Backend {
            url: sentinel.url(),
            _keep: Box::new(sentinel),
        }
    }

    /// Redis Cluster over TLS (`rediss+cluster://`, the test CA as `?ca=`).
    pub(crate) fn redis_cluster_tls() -> Self {
        let cluster = RedisCluster::start_tls();
        Backend {
            url: cluster.url(),
            _keep: Box::new(cluster),
        }
    }

    /// Redis behind Sentinel over TLS (`rediss+sentinel://`, the test CA as `?ca=`).
    pub(crate) fn redis_sentinel_tls() -> Self {
        let sentinel = RedisSentinel::start_tls();
        Backend {
            url: sentinel.url(),
            _keep: Box::new(sentinel),
        }
    }

    /// Redis over TLS, trusting a test CA given as `?ca=`.
    pub(crate) fn redis_tls() -> Self {
        let tls = RedisTls::start();
        Backend {
            url: tls.url(),
            _keep: Box::new(tls),
        }
    }

    /// A store for `tier`; two calls with the same tier share data, like two replicas.
    async fn store(&self, tier: &str) -> Arc<dyn TierStore> {
        let stores = Stores::open(&self.url, [tier]).await.expect("open store");
        stores.tier(tier).expect("store of the tier")
    }
}

/// A `redis-server` child process on a free port, without persistence; killed on drop.
pub(crate) struct RedisServer {
    child: Child,
    port: u16,
    /// Its TLS port, when started with a [`TestPki`].
    tls_port: Option<u16>,
    _dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts a server and waits until it answers PING.
    pub(crate) fn start() -> Self {
        Self::start_with(None, Vec::new)
    }

    /// Starts a server with the arguments `leading` makes (a config file, `--sentinel`,
    /// more options) before the usual ones, also listening with TLS when given a `pki`,
    /// and waits until its plaintext port answers PING.
    ///
    /// A port picked as free can be taken by another test before the server binds it, and
    /// the server then exits. Each attempt therefore picks every port afresh: its own, its
    /// TLS port, and any that `leading` picks (a cluster bus port).
    fn start_with(pki: Option<&TestPki>, leading: impl Fn() -> Vec<std::ffi::OsString>) -> Self {
        let bin = find_on_path("redis-server").unwrap_or_else(|| {
            panic!(
                "redis-server is not installed (apt-get install -y redis-server): \
                 the Redis conformance tests need a real server and do not skip"
            )
        });
        let mut last_error = String::new();
        for _ in 0..5 {
            let dir = tempfile::tempdir().expect("temporary directory");
            let port = free_port();
            let tls_port = pki.map(|_| free_port());
            let log = dir.path().join("redis.log");
            let mut child = Command::new(&bin)
                .args(leading())
                .args(pki.zip(tls_port).map(|(pki, p)| pki.server_args(p)).unwrap_or_default())
                .args([
                    "--port",
                    &port.to_string(),
                    "--bind",
                    "127.0.0.1",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                ])
                .arg("--dir")
                .arg(dir.path())
                .arg("--logfile")
                .arg(&log)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            if wait_for_pong(port, &mut child) {
                return RedisServer {
                    child,
                    port,
                    tls_port,
                    _dir: dir,
                };
            }
            let _ = child.kill();
            let _ = child.wait();
            last_error = std::fs::read_to_string(&log).unwrap_or_default();
        }
        panic!("redis-server did not come up after 5 attempts; last log:\n{last_error}");
    }

    /// URL for this server.
    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `redis-cli -p <port> <args>` and returns what it printed.
fn redis_cli(port: u16, args: &[&str]) -> String {
    let bin = find_on_path("redis-cli").expect("redis-cli is installed with redis-server");
    let out = Command::new(bin)
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Waits up to 20 s until `ready` holds, else panics with `what`.
fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ready() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A Redis Cluster of three masters without replicas (`redis-cli --cluster create`).
pub(crate) struct RedisCluster {
    nodes: Vec<RedisServer>,
    url: String,
    _pki: Option<TestPki>,
}

impl RedisCluster {
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// The same cluster with TLS between the nodes and towards clients (`tls-cluster yes`);
    /// the plaintext ports stay open for the test's own `redis-cli`.
    pub(crate) fn start_tls() -> Self {
        Self::start_with(Some(TestPki::new()))
    }

    fn start_with(pki: Option<TestPki>) -> Self {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::start_with(pki.as_ref(), || {
                    let mut args: Vec<std::ffi::OsString> = vec![
                        "--cluster-enabled".into(),
                        "yes".into(),
                        "--cluster-port".into(),
                        free_port().to_string().into(),
                        "--cluster-node-timeout".into(),
                        "5000".into(),
                    ];
                    if pki.is_some() {
                        args.extend(["--tls-cluster".into(), "yes".into()]);
                    }
                    args
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port)).collect();
        let mut args = vec!["--cluster", "create"];
        args.extend(addrs.iter().map(String::as_str));
        args.push("--cluster-yes");
        let out = redis_cli(nodes[0].port, &args);
        assert!(out.contains("All 16384 slots covered"), "cluster create failed:\n{out}");
        wait_until("every cluster node says cluster_state:ok", || {
            nodes
                .iter()
                .all(|n| redis_cli(n.port, &["cluster", "info"]).contains("cluster_state:ok"))
        });
        let url = match &pki {
            None => format!("redis+cluster://{}", addrs.join(",")),
            Some(pki) => {
                let tls: Vec<String> = nodes
                    .iter()
                    .filter_map(|n| n.tls_port.map(|p| format!("127.0.0.1:{p}")))
                    .collect();
                format!("rediss+cluster://{}?ca={}", tls.join(","), pki.ca_file.display())
            }
        };
        RedisCluster { nodes, url, _pki: pki }
    }

    pub(crate) fn url(&self) -> String {
        self.url.clone()
    }
}

/// Sentinel set-up: a master, its replica and one sentinel watching them (quorum 1).
pub(crate) struct RedisSentinel {
    master: RedisServer,
    replica: RedisServer,
    sentinel: RedisServer,
    url: String,
    _conf: tempfile::TempDir,
    _pki: Option<TestPki>,
}

/// The master name the test sentinel watches.
const SENTINEL_MASTER: &str = "portcullis-test";

impl RedisSentinel {
    pub(crate) fn start() -> Self {
        Self::start_with(None)
    }

    /// The same set-up with TLS everywhere: clients to the sentinel and the master, the
    /// sentinel to the master, the replica to the master (`tls-replication yes`). The
    /// sentinel watches the master's TLS port, so that is the address it hands out.
    pub(crate) fn start_tls() -> Self {
        Self::start_with(Some(TestPki::new()))
    }

    fn start_with(pki: Option<TestPki>) -> Self {
        let tls_replication = || -> Vec<std::ffi::OsString> {
            if pki.is_some() {
                vec!["--tls-replication".into(), "yes".into()]
            } else {
                Vec::new()
            }
        };
        let master = RedisServer::start_with(pki.as_ref(), tls_replication);
        let master_port = master.tls_port.unwrap_or(master.port);
        let replica = RedisServer::start_with(pki.as_ref(), || {
            let mut args = tls_replication();
            args.extend(["--replicaof".into(), "127.0.0.1".into(), master_port.to_string().into()]);
            args
        });
        let conf = tempfile::tempdir().expect("temporary directory");
        let file = conf.path().join("sentinel.conf");
        std::fs::write(
            &file,
            format!(
                "sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 2000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 10000\n"
            ),
        )
        .expect("write sentinel.conf");
        let sentinel = RedisServer::start_with(pki.as_ref(), || {
            let mut args = vec![file.clone().into_os_string(), "--sentinel".into()];
            args.extend(tls_replication());
            args
        });
        wait_until("the sentinel names the master", || {
            redis_cli(sentinel.port, &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER])
                .contains(&master_port.to_string())
        });
        let url = match (&pki, sentinel.tls_port) {
            (Some(pki), Some(port)) => format!(
                "rediss+sentinel://127.0.0.1:{port}/{SENTINEL_MASTER}?ca={}",
                pki.ca_file.display()
            ),
            _ => format!("redis+sentinel://127.0.0.1:{}/{SENTINEL_MASTER}", sentinel.port),
        };
        RedisSentinel {
            master,
            replica,
            sentinel,
            url,
            _conf: conf,
            _pki: pki,
        }
    }

    pub(crate) fn url(&self) -> String {
        self.url.clone()
    }
}

/// A test CA and a certificate for 127.0.0.1 signed by it, as PEM files in a temporary
/// directory that lives as long as this value.
pub(crate) struct TestPki {
    ca_file: PathBuf,
    cert_file: PathBuf,
    key_file: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestPki {
    pub(crate) fn new() -> Self {
        use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
        let dir = tempfile::tempdir().expect("temporary directory");
        let ca_key = KeyPair::generate().unwrap();
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Redis test CA");
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, "127.0.0.1");
        let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        let cert_file = dir.path().join("server.pem");
        let key_file = dir.path().join("server.key");
        std::fs::write(&ca_file, ca.pem()).unwrap();
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        TestPki {
            ca_file,
            cert_file,
            key_file,
            _dir: dir,
        }
    }

    /// `redis-server` options to also listen with TLS on `tls_port` with this certificate
    /// (no client certificates asked for).
    fn server_args(&self, tls_port: u16) -> Vec<std::ffi::OsString> {
        vec![
            "--tls-port".into(),
            tls_port.to_string().into(),
            "--tls-cert-file".into(),
            self.cert_file.clone().into_os_string(),
            "--tls-key-file".into(),
            self.key_file.clone().into_os_string(),
            "--tls-ca-cert-file".into(),
            self.ca_file.clone().into_os_string(),
            "--tls-auth-clients".into(),
            "no".into(),
        ]
    }
}

/// A `redis-server` that also listens with TLS (certificate for 127.0.0.1 from a test
/// CA); its plaintext port is only for the readiness check.
pub(crate) struct RedisTls {
    _server: RedisServer,
    tls_port: u16,
    pki: TestPki,
}

impl RedisTls {
    pub(crate) fn start() -> Self {
        let pki = TestPki::new();
        let server = RedisServer::start_with(Some(&pki), Vec::new);
        RedisTls {
            tls_port: server.tls_port.expect("started with TLS"),
            _server: server,
            pki,
        }
    }

    /// The TLS URL trusting only the test CA.
    pub(crate) fn url(&self) -> String {
        format!("{}?ca={}", self.url_without_ca(), self.pki.ca_file.display())
    }

    fn url_without_ca(&self) -> String {
        format!("rediss://127.0.0.1:{}/", self.tls_port)
    }
}

fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    listener.local_addr().expect("local address").port()
}

fn wait_for_pong(port: u16, child: &mut Child) -> bool {
    use std::io::{Read, Write};
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return false;
        }
        if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) {
            let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
            let mut reply = [0u8; 7];
            if stream.write_all(b"PING\r\n").is_ok() && stream.read_exact(&mut reply).is_ok() && &reply == b"+PONG\r\n"
            {
                // Another test's server may hold the port while this one exits; only the
                // server with this child's process id counts.
                return redis_cli(port, &["info", "server"]).contains(&format!("process_id:{}\r", child.id()));
            }
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// If this broke, a test would fail whenever another test took one of its Redis ports
/// between picking it and the server binding it (CI saw it on a sentinel's TLS port).
#[test]
fn a_server_whose_port_was_taken_comes_up_on_fresh_ports() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_port = taken.local_addr().expect("local address").port();
    let calls = std::cell::Cell::new(0);
    let server = RedisServer::start_with(None, || {
        calls.set(calls.get() + 1);
        let bus = if calls.get() == 1 { taken_port } else { free_port() };
        vec![
            "--cluster-enabled".into(),
            "yes".into(),
            "--cluster-port".into(),
            bus.to_string().into(),
        ]
    });
    assert_eq!(
        calls.get(),
        2,
        "the first attempt lost its bus port; the second picked anew"
    );
    assert!(redis_cli(server.port, &["ping"]).contains("PONG"));
}

// ---------------------------------------------------------------------------------------
// Fixtures

fn session(tenant: &str, subject: &str, token: &str, created_at: i64) -> SessionRecord {
    SessionRecord {
        id_hash: session_id_hash(token.as_bytes()),
        tenant: tenant.into(),
        tier: "prod".into(),
        subject: subject.into(),
        idp: crate::account::LOCAL_IDP.to_string(),
        display_name: format!("{subject} (display)"),
        roles: vec!["member".into(), "tenant-admin".into()],
        auth_method: "password".into(),
        amr: vec!["pwd".into(), "otp".into()],
        mfa_at: Some(created_at),
        created_at,
        last_seen: created_at,
        idle_expires_at: created_at + IDLE,
        absolute_expires_at: created_at + ABSOLUTE,
        ip: "192.0.2.7".into(),
        user_agent: "Mozilla/5.0 (X11; Linux x86_64) Firefox/140.0".into(),
        csrf_token: format!("csrf-{token}"),
        sso_sid: None,
        revoked: None,
    }
}

fn rev(by: &str, reason: &str) -> Revocation {
    Revocation {
        at: T0 + 100,
        by: by.into(),
        reason: reason.into(),
    }
}

fn user(tenant: &str, username: &str) -> UserRecord {
    UserRecord {
        tenant: tenant.into(),
        username: username.into(),
        display_name: format!("{username} (display)"),
        roles: vec!["member".into()],
        password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNo".into(),
        totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
        totp_enrolled_at: Some(T0),
        recovery_code_hashes: (0..10).map(|i| code_hash(&format!("code-{i}"))).collect(),
        disabled: false,
        created_at: T0,
        password_changed_at: T0,
    }
}

fn event(tenant: &str, subject: &str, time: i64, outcome: &str) -> LoginEvent {
    LoginEvent {
        seq: 0,
        tenant: tenant.into(),
        subject: subject.into(),
        time,
        ip: "198.51.100.4".into(),
        user_agent: "curl/8.5".into(),
        method: "password".into(),
        outcome: outcome.into(),
        reason: (outcome == "failure").then(|| "bad_password".to_string()),
    }
}

fn ids(sessions: &[SessionRecord]) -> Vec<[u8; 32]> {
    sessions.iter().map(|s| s.id_hash).collect()
}

fn sorted(mut v: Vec<[u8; 32]>) -> Vec<[u8; 32]> {
    v.sort_unstable();
    v
}

// ---------------------------------------------------------------------------------------
// The suite. Each test says what would break for callers if it failed.

/// Sign-in would lose data or accept a session of another tier.
pub(crate) async fn sessions_round_trip(b: &Backend) {
    let store = b.store("prod").await;
    let mut s = session("acme", "alice", "t1", T0);
    s.sso_sid = Some("idp-sid-1".into());
    store.create_session(&s).await.unwrap();
    assert_eq!(store.get_session(&s.id_hash).await.unwrap(), Some(s.clone()));
    assert_eq!(store.get_session(&session_id_hash(b"nope")).await.unwrap(), None);
    assert!(matches!(store.create_session(&s).await, Err(StoreError::Conflict(_))));
    // An SSO account of the same `sub`: its identity provider comes back, and it is
    // another user to every per-user query.
    let issuer = "https://idp.example";
    let mut sso = session("acme", &crate::account::key(issuer, "alice"), "t3", T0);
    sso.idp = issuer.into();
    store.create_session(&sso).await.unwrap();
    assert_eq!(store.get_session(&sso.id_hash).await.unwrap(), Some(sso.clone()));
    assert_eq!(sso.sub(), "alice");
    let local_only = store.list_user_sessions("acme", "alice", T0).await.unwrap();
    assert_eq!(
        local_only.iter().map(|x| x.id_hash).collect::<Vec<_>>(),
        vec![s.id_hash]
    );
    let mut other_tier = session("acme", "alice", "t2", T0);
    other_tier.tier = "staging".into();
    assert!(matches!(
        store.create_session(&other_tier).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.get_session(&other_tier.id_hash).await.unwrap(), None);
    assert!(matches!(
        Stores::open("sqlite:", ["prod"]).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        Stores::open(&b.url, ["../prod"]).await,
        Err(StoreError::Invalid(_))
    ));
}

/// A revoked session could be served again.
pub(crate) async fn revoked_sessions_are_not_live(b: &Backend) {
    let store = b.store("prod").await;
    let s = session("acme", "alice", "t1", T0);
    store.create_session(&s).await.unwrap();
    let r = rev("alice", "logout");
    assert!(store.revoke_session(&s.id_hash, &r).await.unwrap());
    let got = store.get_session(&s.id_hash).await.unwrap().unwrap();
    assert_eq!(got.revoked, Some(r.clone()));
    assert!(!got.is_live(T0 + 1));
    assert!(
        !store.revoke_session(&s.id_hash, &rev("op", "again")).await.unwrap(),
        "second revocation reports false"
    );
    assert_eq!(
        store.get_session(&s.id_hash).await.unwrap().unwrap().revoked,
        Some(r),
        "first revocation kept"
    );
    assert!(
        !store
            .revoke_session(&session_id_hash(b"unknown"), &rev("op", "x"))
            .await
            .unwrap()
    );
    assert!(
        store
            .list_user_sessions("acme", "alice", T0 + 1)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(store.list_tenant_sessions("acme", T0 + 1, 10).await.unwrap().is_empty());
    store.touch_session(&s.id_hash, T0 + 2, T0 + 2 + IDLE).await.unwrap();
    assert_eq!(
        store.get_session(&s.id_hash).await.unwrap().unwrap().last_seen,
        T0,
        "touch is a no-op once revoked"
    );

    let mut born_revoked = session("acme", "alice", "t2", T0);
    born_revoked.revoked = Some(rev("op", "imported"));
    store.create_session(&born_revoked).await.unwrap();
    assert_eq!(
        store.get_session(&born_revoked.id_hash).await.unwrap(),
        Some(born_revoked.clone())
    );
    assert!(
        store
            .list_user_sessions("acme", "alice", T0 + 1)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Concurrent logouts (two tabs, a replica and a kill switch) would report a session twice.
pub(crate) async fn concurrent_revocation_has_one_winner(b: &Backend) {
    let store = b.store("prod").await;
    let s = session("acme", "alice", "t1", T0);
    store.create_session(&s).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.revoke_session(&s.id_hash, &rev(&format!("r{i}"), "x")).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1);
}

/// Activity could stretch a session past its absolute timeout, or revive an expired one.
pub(crate) async fn touch_never_extends_past_absolute_expiry(b: &Backend) {
    let store = b.store("prod").await;
    let s = session("acme", "alice", "t1", T0);
    store.create_session(&s).await.unwrap();

    store.touch_session(&s.id_hash, T0 + 60, T0 + 60 + IDLE).await.unwrap();
    let got = store.get_session(&s.id_hash).await.unwrap().unwrap();
    assert_eq!((got.last_seen, got.idle_expires_at), (T0 + 60, T0 + 60 + IDLE));

    store
        .touch_session(&s.id_hash, T0 + 61, s.absolute_expires_at + 1000)
        .await
        .unwrap();
    let got = store.get_session(&s.id_hash).await.unwrap().unwrap();
    assert_eq!(
        got.idle_expires_at, s.absolute_expires_at,
        "clamped to the absolute expiry"
    );
    assert_eq!(
        (got.last_seen, got.absolute_expires_at),
        (T0 + 61, s.absolute_expires_at)
    );
    assert!(!got.is_live(s.absolute_expires_at));

    let idle_dead = session("acme", "alice", "t2", T0);
    store.create_session(&idle_dead).await.unwrap();
    store
        .touch_session(&idle_dead.id_hash, T0 + IDLE, T0 + 2 * IDLE)
        .await
        .unwrap();
    let got = store.get_session(&idle_dead.id_hash).await.unwrap().unwrap();
    assert_eq!(got, idle_dead, "an idle-expired session is never revived");

    store
        .touch_session(&session_id_hash(b"unknown"), T0, T0 + IDLE)
        .await
        .unwrap();
    assert_eq!(
        store.get_session(&session_id_hash(b"unknown")).await.unwrap(),
        None,
        "touch never creates"
    );
}

/// Expired sessions would be listed as active, or purged too early.
pub(crate) async fn expiry_and_purge(b: &Backend) {
    let store = b.store("prod").await;
    let old = session("acme", "alice", "old", T0);
    let fresh = session("acme", "alice", "fresh", T0 + 2 * ABSOLUTE);
    store.create_session(&old).await.unwrap();
    store.create_session(&fresh).await.unwrap();
    let now = T0 + 2 * ABSOLUTE + 1;
    assert_eq!(
        ids(&store.list_user_sessions("acme", "alice", now).await.unwrap()),
        vec![fresh.id_hash]
    );
    assert!(
        store.get_session(&old.id_hash).await.unwrap().is_some(),
        "expired sessions stay readable"
    );
    assert_eq!(
        store
            .find_user_session_by_public_id("acme", "alice", &old.public_id(), now)
            .await
            .unwrap(),
        None
    );

    let idle_gone = fresh.idle_expires_at;
    assert!(
        store
            .list_user_sessions("acme", "alice", idle_gone)
            .await
            .unwrap()
            .is_empty(),
        "idle expiry"
    );

    assert_eq!(
        store
            .purge_expired(old.absolute_expires_at + PURGE_GRACE_SECS)
            .await
            .unwrap(),
        0,
        "within grace"
    );
    assert_eq!(
        store
            .purge_expired(old.absolute_expires_at + PURGE_GRACE_SECS + 1)
            .await
            .unwrap(),
        1
    );
    assert_eq!(store.get_session(&old.id_hash).await.unwrap(), None);
    assert!(store.get_session(&fresh.id_hash).await.unwrap().is_some());
    assert_eq!(
        store
            .purge_expired(old.absolute_expires_at + PURGE_GRACE_SECS + 1)
            .await
            .unwrap(),
        0
    );
    assert!(
        store
            .revoke_user_sessions("acme", "alice", None, &rev("op", "x"))
            .await
            .unwrap()
            == vec![fresh.id_hash]
    );
}

/// "Sign out everywhere else" would end the current session or miss another one.
pub(crate) async fn revoke_user_sessions_keeps_the_current_one(b: &Backend) {
    let store = b.store("prod").await;
    let a1 = session("acme", "alice", "a1", T0);
    let a2 = session("acme", "alice", "a2", T0 + 1);
    let a3 = session("acme", "alice", "a3", T0 + 2);
    let bob = session("acme", "bob", "b1", T0);
    let other_tenant = session("globex", "alice", "g1", T0);
    for s in [&a1, &a2, &a3, &bob, &other_tenant] {
        store.create_session(s).await.unwrap();
    }
    let r = rev("alice", "sign_out_others");
    let revoked = store
        .revoke_user_sessions("acme", "alice", Some(&a2.id_hash), &r)
        .await
        .unwrap();
    assert_eq!(sorted(revoked), sorted(vec![a1.id_hash, a3.id_hash]));
    assert_eq!(
        ids(&store.list_user_sessions("acme", "alice", T0 + 3).await.unwrap()),
        vec![a2.id_hash]
    );
    assert_eq!(
        store.get_session(&a1.id_hash).await.unwrap().unwrap().revoked,
        Some(r.clone())
    );
    assert_eq!(
        ids(&store.list_user_sessions("acme", "bob", T0 + 3).await.unwrap()),
        vec![bob.id_hash]
    );
    assert_eq!(
        ids(&store.list_user_sessions("globex", "alice", T0 + 3).await.unwrap()),
        vec![other_tenant.id_hash]
    );
    assert!(
        store
            .revoke_user_sessions("acme", "alice", Some(&a2.id_hash), &r)
            .await
            .unwrap()
            .is_empty()
    );

    let all = store
        .revoke_user_sessions("acme", "alice", None, &rev("alice", "password_changed"))
        .await
        .unwrap();
    assert_eq!(all, vec![a2.id_hash], "without keep the current session ends too");
    assert!(
        store
            .list_user_sessions("acme", "alice", T0 + 3)
            .await
            .unwrap()
            .is_empty()
    );
}

/// A tenant kill switch would end another tenant's sessions or leave one of its own alive.
pub(crate) async fn revoke_tenant_sessions_is_scoped(b: &Backend) {
    let store = b.store("prod").await;
    let mut acme = Vec::new();
    for i in 0..5 {
        let s = session("acme", &format!("user{i}"), &format!("acme{i}"), T0 + i);
        store.create_session(&s).await.unwrap();
        acme.push(s.id_hash);
    }
    let globex = session("globex", "user0", "globex0", T0);
    store.create_session(&globex).await.unwrap();
    store.revoke_session(&acme[0], &rev("user0", "logout")).await.unwrap();

    let revoked = store
        .revoke_tenant_sessions("acme", &rev("operator:ops", "kill_switch"))
        .await
        .unwrap();
    assert_eq!(
        sorted(revoked),
        sorted(acme[1..].to_vec()),
        "already revoked sessions are not reported again"
    );
    assert!(
        store
            .list_tenant_sessions("acme", T0 + 10, 100)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store.list_tenant_sessions("globex", T0 + 10, 100).await.unwrap()),
        vec![globex.id_hash]
    );
    assert_eq!(
        store
            .get_session(&acme[0])
            .await
            .unwrap()
            .unwrap()
            .revoked
            .unwrap()
            .reason,
        "logout",
        "earlier revocation kept"
    );
}

/// Back-channel logout would miss the IdP session's gateway sessions or end others.
pub(crate) async fn revoke_sso_sessions_by_sid(b: &Backend) {
    let store = b.store("prod").await;
    let mut s1 = session("acme", "alice", "s1", T0);
    s1.sso_sid = Some("sid-1".into());
    let mut s2 = session("acme", "alice", "s2", T0 + 1);
    s2.sso_sid = Some("sid-2".into());
    let mut other_tenant = session("globex", "alice", "s3", T0);
    other_tenant.sso_sid = Some("sid-1".into());
    for s in [&s1, &s2, &other_tenant] {
        store.create_session(s).await.unwrap();
    }
    let revoked = store
        .revoke_sso_sessions("acme", "sid-1", &rev("idp", "backchannel_logout"))
        .await
        .unwrap();
    assert_eq!(revoked, vec![s1.id_hash]);
    assert!(
        store
            .revoke_sso_sessions("acme", "sid-1", &rev("idp", "again"))
            .await
            .unwrap()
            .is_empty()
    );
    assert!(
        store
            .revoke_sso_sessions("acme", "sid-unknown", &rev("idp", "x"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        ids(&store.list_user_sessions("acme", "alice", T0 + 2).await.unwrap()),
        vec![s2.id_hash]
    );
    assert!(
        store
            .get_session(&other_tenant.id_hash)
            .await
            .unwrap()
            .unwrap()
            .revoked
            .is_none()
    );
}

/// The session pages would show sessions in a confusing order or ignore the limit.
pub(crate) async fn lists_are_newest_first_and_limited(b: &Backend) {
    let store = b.store("prod").await;
    let mut made = Vec::new();
    for i in 0..7 {
        let s = session(
            "acme",
            if i % 2 == 0 { "alice" } else { "bob" },
            &format!("t{i}"),
            T0 + i * 10,
        );
        store.create_session(&s).await.unwrap();
        made.push(s);
    }
    let same_time_a = session("acme", "alice", "same-a", T0 + 100);
    let same_time_b = session("acme", "alice", "same-b", T0 + 100);
    store.create_session(&same_time_a).await.unwrap();
    store.create_session(&same_time_b).await.unwrap();
    let now = T0 + 101;

    let alice = store.list_user_sessions("acme", "alice", now).await.unwrap();
    let mut tie = [same_time_a.id_hash, same_time_b.id_hash];
    tie.sort_unstable_by(|x, y| y.cmp(x));
    let expected: Vec<[u8; 32]> = tie
        .into_iter()
        .chain([made[6].id_hash, made[4].id_hash, made[2].id_hash, made[0].id_hash])
        .collect();
    assert_eq!(ids(&alice), expected, "newest first; equal times by id, descending");
    assert_eq!(alice[2], made[6], "records come back whole");

    let tenant = store.list_tenant_sessions("acme", now, 4).await.unwrap();
    assert_eq!(
        ids(&tenant),
        expected[..2]
            .iter()
            .copied()
            .chain([made[6].id_hash, made[5].id_hash])
            .collect::<Vec<_>>()
    );
    assert_eq!(store.list_tenant_sessions("acme", now, 100).await.unwrap().len(), 9);
    assert!(store.list_tenant_sessions("acme", now, 0).await.unwrap().is_empty());
}

/// A user could see or end another user's or tenant's session by guessing its public id.
pub(crate) async fn tenants_and_users_are_isolated(b: &Backend) {
    let store = b.store("prod").await;
    let alice = session("acme", "alice", "a", T0);
    let bob = session("acme", "bob", "b", T0);
    let globex_alice = session("globex", "alice", "g", T0);
    for s in [&alice, &bob, &globex_alice] {
        store.create_session(s).await.unwrap();
    }
    let now = T0 + 1;
    let acme = store.list_tenant_sessions("acme", now, 100).await.unwrap();
    assert!(acme.iter().all(|s| s.tenant == "acme"));
    assert_eq!(acme.len(), 2);
    assert_eq!(
        ids(&store.list_tenant_sessions("globex", now, 100).await.unwrap()),
        vec![globex_alice.id_hash]
    );

    let find = |t: &'static str, u: &'static str, id: String| {
        let store = store.clone();
        async move { store.find_user_session_by_public_id(t, u, &id, now).await.unwrap() }
    };
    assert_eq!(find("acme", "alice", alice.public_id()).await, Some(alice.clone()));
    assert_eq!(
        find("acme", "alice", bob.public_id()).await,
        None,
        "another user's session"
    );
    assert_eq!(
        find("acme", "alice", globex_alice.public_id()).await,
        None,
        "same subject, other tenant"
    );
    assert_eq!(find("globex", "alice", alice.public_id()).await, None);
    assert_eq!(
        find("acme", "alice", hex::encode(alice.id_hash)).await,
        None,
        "only the 16-char public id"
    );
    assert_eq!(find("acme", "alice", alice.public_id().to_uppercase()).await, None);
    assert_eq!(find("acme", "alice", String::new()).await, None);

    let tricky = session("ac:me", "x", "tricky1", T0);
    let tricky2 = session("ac", "me:x", "tricky2", T0);
    store.create_session(&tricky).await.unwrap();
    store.create_session(&tricky2).await.unwrap();
    assert_eq!(
        ids(&store.list_user_sessions("ac:me", "x", now).await.unwrap()),
        vec![tricky.id_hash]
    );
    assert_eq!(
        ids(&store.list_user_sessions("ac", "me:x", now).await.unwrap()),
        vec![tricky2.id_hash]
    );
}

/// Local accounts could be overwritten, lost, or listed across tenants.
pub(crate) async fn users_round_trip(b: &Backend) {
    let store = b.store("prod").await;
    let alice = user("acme", "alice");
    store.create_user(&alice).await.unwrap();
    assert_eq!(store.get_user("acme", "alice").await.unwrap(), Some(alice.clone()));
    assert_eq!(store.get_user("acme", "nobody").await.unwrap(), None);
    assert_eq!(store.get_user("globex", "alice").await.unwrap(), None);
    let mut imposter = user("acme", "alice");
    imposter.password_hash = "$argon2id$other".into();
    assert!(matches!(
        store.create_user(&imposter).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(
        store.get_user("acme", "alice").await.unwrap(),
        Some(alice.clone()),
        "a conflict changes nothing"
    );

    let mut changed = alice.clone();
    changed.display_name = "Alice Liddell".into();
    changed.roles = vec![];
    changed.totp_secret = None;
    changed.totp_enrolled_at = None;
    changed.recovery_code_hashes = vec![code_hash("new-1"), code_hash("new-0")];
    changed.disabled = true;
    changed.password_changed_at = T0 + 5;
    store.update_user(&changed).await.unwrap();
    assert_eq!(store.get_user("acme", "alice").await.unwrap(), Some(changed.clone()));
    changed.recovery_code_hashes.clear();
    store.update_user(&changed).await.unwrap();
    assert_eq!(store.get_user("acme", "alice").await.unwrap(), Some(changed.clone()));
    assert!(matches!(
        store.update_user(&user("acme", "ghost")).await,
        Err(StoreError::NotFound(_))
    ));
    assert_eq!(
        store.get_user("acme", "ghost").await.unwrap(),
        None,
        "update never creates"
    );

    let zed = user("acme", "zed");
    let bob = user("acme", "bob");
    let globex = user("globex", "carol");
    for u in [&zed, &bob, &globex] {
        store.create_user(u).await.unwrap();
    }
    assert_eq!(
        store.list_users("acme").await.unwrap(),
        vec![changed, bob, zed],
        "sorted by user name"
    );
    assert_eq!(store.list_users("globex").await.unwrap(), vec![globex]);
    assert!(store.list_users("initech").await.unwrap().is_empty());
}

/// A recovery code could be used twice, or the wrong code removed.
pub(crate) async fn recovery_codes_work_once(b: &Backend) {
    let store = b.store("prod").await;
    let alice = user("acme", "alice");
    store.create_user(&alice).await.unwrap();
    let code = code_hash("code-3");
    assert!(store.consume_recovery_code("acme", "alice", &code).await.unwrap());
    assert!(!store.consume_recovery_code("acme", "alice", &code).await.unwrap());
    assert!(
        !store
            .consume_recovery_code("acme", "alice", &code_hash("bogus"))
            .await
            .unwrap()
    );
    assert!(!store.consume_recovery_code("acme", "nobody", &code).await.unwrap());
    assert!(
        !store
            .consume_recovery_code("globex", "alice", &code_hash("code-4"))
            .await
            .unwrap()
    );
    let left = store
        .get_user("acme", "alice")
        .await
        .unwrap()
        .unwrap()
        .recovery_code_hashes;
    let expected: Vec<[u8; 32]> = alice
        .recovery_code_hashes
        .iter()
        .copied()
        .filter(|c| *c != code)
        .collect();
    assert_eq!(left, expected, "the others stay, in order");
}

/// Two concurrent logins with one recovery code would both get in.
pub(crate) async fn concurrent_recovery_code_use_has_one_winner(b: &Backend) {
    let store = b.store("prod").await;
    store.create_user(&user("acme", "alice")).await.unwrap();
    let code = code_hash("code-0");
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.consume_recovery_code("acme", "alice", &code).await
        }));
    }
    let mut wins = 0;
    for t in tasks {
        wins += usize::from(t.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1);
    assert_eq!(
        store
            .get_user("acme", "alice")
            .await
            .unwrap()
            .unwrap()
            .recovery_code_hashes
            .len(),
        9
    );
}

/// An observed TOTP code could be replayed, an older unused code would still work after a
/// later one (RFC 6238 §5.2), or one user's code would block another's.
pub(crate) async fn totp_steps_only_move_forward(b: &Backend) {
    let store = b.store("prod").await;
    let t = u64::try_from(T0 / 30).unwrap();
    let expires = T0 + 120;
    assert!(store.accept_totp_step("acme", "alice", t, expires).await.unwrap());
    assert!(
        !store.accept_totp_step("acme", "alice", t, expires).await.unwrap(),
        "replay of t"
    );
    assert!(
        !store.accept_totp_step("acme", "alice", t - 1, expires).await.unwrap(),
        "t-1 after t"
    );
    assert!(store.accept_totp_step("acme", "alice", t + 1, expires).await.unwrap());
    assert!(
        !store.accept_totp_step("acme", "alice", t, expires).await.unwrap(),
        "t after t+1"
    );
    assert!(!store.accept_totp_step("acme", "alice", t + 1, expires).await.unwrap());
    assert!(
        store.accept_totp_step("acme", "alice", t + 5, expires).await.unwrap(),
        "a gap is fine"
    );
    assert!(store.accept_totp_step("acme", "bob", t, expires).await.unwrap());
    assert!(store.accept_totp_step("globex", "alice", t, expires).await.unwrap());
    // The order holds across the whole u64 range (no sign or float rounding surprises).
    assert!(
        store
            .accept_totp_step("acme", "dan", u64::MAX - 1, expires)
            .await
            .unwrap()
    );
    assert!(!store.accept_totp_step("acme", "dan", 1 << 63, expires).await.unwrap());
    assert!(
        !store
            .accept_totp_step("acme", "dan", (1 << 53) + 1, expires)
            .await
            .unwrap()
    );
    assert!(!store.accept_totp_step("acme", "dan", 7, expires).await.unwrap());
    assert!(store.accept_totp_step("acme", "dan", u64::MAX, expires).await.unwrap());
    assert!(!store.accept_totp_step("acme", "dan", u64::MAX, expires).await.unwrap());
    assert!(
        store
            .accept_totp_step("acme", "erin", (1 << 53) + 1, expires)
            .await
            .unwrap()
    );
    assert!(!store.accept_totp_step("acme", "erin", 1 << 53, expires).await.unwrap());
    assert!(store.accept_totp_step("acme", "erin", 1 << 63, expires).await.unwrap());
    assert!(
        !store
            .accept_totp_step("acme", "erin", (1 << 63) - 1, expires)
            .await
            .unwrap()
    );
    // Purging before the record's expiry keeps it.
    store.purge_expired(T0 + 60).await.unwrap();
    assert!(!store.accept_totp_step("acme", "alice", t + 5, expires).await.unwrap());

    let mut tasks = Vec::new();
    for _ in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.accept_totp_step("acme", "carol", t, expires).await
        }));
    }
    let mut wins = 0;
    for task in tasks {
        wins += usize::from(task.await.unwrap().unwrap());
    }
    assert_eq!(wins, 1, "concurrent use of one code: one success");
}

/// The login history page would show the wrong order, repeat or skip events when paging.
pub(crate) async fn login_history_pages_newest_first(b: &Backend) {
    let store = b.store("prod").await;
    for i in 0..5 {
        store
            .record_login(&event(
                "acme",
                "alice",
                T0 + i,
                if i % 2 == 0 { "success" } else { "failure" },
            ))
            .await
            .unwrap();
        store
            .record_login(&event("acme", "bob", T0 + i, "success"))
            .await
            .unwrap();
    }
    let mut long = event("acme", "alice", T0 + 9, "failure");
    long.user_agent = "é".repeat(1000);
    long.reason = Some("unknown_user".into());
    store.record_login(&long).await.unwrap();

    let all = store.login_history("acme", "alice", 100, None).await.unwrap();
    assert_eq!(all.len(), 6);
    assert!(all.iter().all(|e| e.tenant == "acme" && e.subject == "alice"));
    assert!(
        all.windows(2).all(|w| w[0].seq > w[1].seq),
        "newest first, seq strictly decreasing"
    );
    assert_eq!(
        all[0].user_agent,
        "é".repeat(USER_AGENT_MAX_CHARS),
        "user agent cut to 256 characters"
    );
    assert_eq!(all[0].reason.as_deref(), Some("unknown_user"));
    let mut expected_last = event("acme", "alice", T0, "success");
    expected_last.seq = all[5].seq;
    assert_eq!(all[5], expected_last, "events come back whole");

    let page1 = store.login_history("acme", "alice", 2, None).await.unwrap();
    let page2 = store
        .login_history("acme", "alice", 2, Some(page1[1].seq))
        .await
        .unwrap();
    let page3 = store
        .login_history("acme", "alice", 2, Some(page2[1].seq))
        .await
        .unwrap();
    let page4 = store
        .login_history("acme", "alice", 2, Some(page3[1].seq))
        .await
        .unwrap();
    let paged: Vec<LoginEvent> = [page1, page2, page3].concat();
    assert_eq!(paged, all);
    assert!(page4.is_empty());
    assert!(store.login_history("acme", "alice", 0, None).await.unwrap().is_empty());
    assert!(
        store
            .login_history("globex", "alice", 10, None)
            .await
            .unwrap()
            .is_empty()
    );

    let seqs: BTreeSet<i64> = store
        .login_history("acme", "alice", 100, None)
        .await
        .unwrap()
        .iter()
        .chain(store.login_history("acme", "bob", 100, None).await.unwrap().iter())
        .map(|e| e.seq)
        .collect();
    assert_eq!(seqs.len(), 11, "seq is unique across subjects of the tier");
}

/// The tenant admin's history page would miss SSO users or attempts at unknown names,
/// show another tenant's, or repeat or skip events when paging.
pub(crate) async fn tenant_login_history_spans_subjects(b: &Backend) {
    let store = b.store("prod").await;
    for (i, subject) in ["alice", "sso:bob", "no-such-user", "alice"].iter().enumerate() {
        let t = T0 + i64::try_from(i).unwrap();
        store.record_login(&event("acme", subject, t, "failure")).await.unwrap();
        store
            .record_login(&event("globex", subject, t, "success"))
            .await
            .unwrap();
    }
    let all = store.tenant_login_history("acme", 100, None).await.unwrap();
    let subjects: Vec<&str> = all.iter().map(|e| e.subject.as_str()).collect();
    assert_eq!(subjects, ["alice", "no-such-user", "sso:bob", "alice"], "newest first");
    assert!(all.iter().all(|e| e.tenant == "acme" && e.outcome == "failure"));
    let mut expected = event("acme", "sso:bob", T0 + 1, "failure");
    expected.seq = all[2].seq;
    assert_eq!(all[2], expected, "events come back whole");
    let page1 = store.tenant_login_history("acme", 3, None).await.unwrap();
    let page2 = store.tenant_login_history("acme", 3, Some(page1[2].seq)).await.unwrap();
    assert_eq!([page1, page2].concat(), all);
    assert!(store.tenant_login_history("acme", 0, None).await.unwrap().is_empty());
    assert!(
        store
            .tenant_login_history("initech", 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    let other_tier = b.store("staging").await;
    assert!(
        other_tier
            .tenant_login_history("acme", 10, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// Attempts at made-up user names (each its own subject) would grow the store without
/// bound: the tenant's cap drops the oldest events from every history.
pub(crate) async fn tenant_login_history_is_capped(b: &Backend) {
    let store = b.store("prod").await;
    store
        .record_login(&event("acme", "alice", T0, "success"))
        .await
        .unwrap();
    let sprayed = TENANT_LOGIN_HISTORY_CAP;
    let mut tasks = Vec::new();
    for chunk in 0..8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk..sprayed).step_by(8) {
                let t = T0 + 1 + i64::try_from(i).unwrap();
                store
                    .record_login(&event("acme", &format!("guess-{i}"), t, "failure"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.tenant_login_history("acme", usize::MAX, None).await.unwrap();
    assert_eq!(all.len(), TENANT_LOGIN_HISTORY_CAP);
    assert!(all.iter().all(|e| e.subject != "alice"), "the oldest was dropped");
    assert!(
        store.login_history("acme", "alice", 10, None).await.unwrap().is_empty(),
        "and left its subject's history too"
    );
    assert_eq!(store.login_history("acme", "guess-1", 10, None).await.unwrap().len(), 1);
}

/// A password spray would grow one user's history without bound.
pub(crate) async fn login_history_is_capped(b: &Backend) {
    let store = b.store("prod").await;
    let total = LOGIN_HISTORY_CAP + 3;
    let mut tasks = Vec::new();
    for chunk in 0..4 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in (chunk..total).step_by(4) {
                store
                    .record_login(&event("acme", "alice", T0 + i64::try_from(i).unwrap(), "failure"))
                    .await
                    .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.login_history("acme", "alice", usize::MAX, None).await.unwrap();
    assert_eq!(all.len(), LOGIN_HISTORY_CAP);
    let max_seq = all[0].seq;
    assert!(
        all.iter().all(|e| e.seq > max_seq - i64::try_from(total).unwrap()),
        "the oldest were dropped"
    );
}

/// The login throttle would give extra tries, forget failures early, or never reset.
pub(crate) async fn throttle_counts_in_fixed_windows(b: &Backend) {
    let store = b.store("prod").await;
    let key = "login:acme:alice";
    assert_eq!(store.peek(key, T0).await.unwrap(), (0, 0));
    assert_eq!(store.hit(key, T0, 900).await.unwrap(), (1, 900));
    assert_eq!(store.hit(key, T0 + 100, 900).await.unwrap(), (2, 800));
    assert_eq!(
        store.hit(key, T0 + 899, 60).await.unwrap(),
        (3, 1),
        "the window is fixed at the first hit"
    );
    assert_eq!(store.peek(key, T0 + 899).await.unwrap(), (3, 1));
    assert_eq!(store.peek(key, T0 + 899).await.unwrap(), (3, 1), "peek does not count");
    assert_eq!(
        store.peek(key, T0 + 900).await.unwrap(),
        (0, 0),
        "expired at the end of the window"
    );
    assert_eq!(
        store.hit(key, T0 + 900, 900).await.unwrap(),
        (1, 900),
        "a new window starts"
    );
    assert_eq!(
        store.peek("login:acme:bob", T0 + 900).await.unwrap(),
        (0, 0),
        "keys are separate"
    );
    store.clear(key).await.unwrap();
    assert_eq!(store.peek(key, T0 + 901).await.unwrap(), (0, 0));
    assert_eq!(store.hit(key, T0 + 901, 900).await.unwrap(), (1, 900));
    store.clear("never-hit").await.unwrap();
    assert!(matches!(store.hit(key, T0, 0).await, Err(StoreError::Invalid(_))));
    assert_eq!(
        store.hit("ip:2001:db8::1", T0, 60).await.unwrap(),
        (1, 60),
        "keys may hold colons"
    );

    assert_eq!(store.purge_expired(T0 + 5000).await.unwrap(), 0, "no sessions to purge");
    assert_eq!(store.peek(key, T0 + 5000).await.unwrap(), (0, 0));
    assert_eq!(store.hit(key, T0 + 5000, 900).await.unwrap(), (1, 900));
}

/// Concurrent password guesses would get extra tries past the limit.
pub(crate) async fn concurrent_hits_count_each_once(b: &Backend) {
    let store = b.store("prod").await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(
            async move { store.hit("login:acme:alice", T0, 900).await },
        ));
    }
    let mut counts = Vec::new();
    for t in tasks {
        let (count, reset_in) = t.await.unwrap().unwrap();
        assert_eq!(reset_in, 900);
        counts.push(count);
    }
    counts.sort_unstable();
    assert_eq!(counts, (1..=50).collect::<Vec<u32>>());
    assert_eq!(store.peek("login:acme:alice", T0).await.unwrap(), (50, 900));
}

/// A success would use up a failure budget (everyone behind one NAT locked out), a give-back
/// would lower a later window or go below zero, or concurrent hits and give-backs would
/// lose updates (extra guesses).
pub(crate) async fn throttle_hits_can_be_given_back(b: &Backend) {
    let store = b.store("prod").await;
    let key = "ip:192.0.2.1";
    for _ in 0..3 {
        store.hit(key, T0, 900).await.unwrap();
    }
    store.give_back(key, T0 + 900).await.unwrap();
    assert_eq!(store.peek(key, T0 + 10).await.unwrap(), (2, 890));
    assert_eq!(store.hit(key, T0 + 10, 900).await.unwrap(), (3, 890));
    store.give_back(key, T0 + 899).await.unwrap();
    assert_eq!(
        store.peek(key, T0 + 10).await.unwrap().0,
        3,
        "another window's give-back"
    );
    for _ in 0..5 {
        store.give_back(key, T0 + 900).await.unwrap();
    }
    assert_eq!(store.peek(key, T0 + 10).await.unwrap(), (0, 890), "never below zero");
    assert_eq!(store.hit(key, T0 + 20, 900).await.unwrap(), (1, 880));
    store.give_back("never-hit", T0 + 900).await.unwrap();
    assert_eq!(store.peek("never-hit", T0).await.unwrap(), (0, 0));

    // A give-back of the old window after it rolled over leaves the new one alone.
    assert_eq!(store.hit(key, T0 + 900, 900).await.unwrap(), (1, 900));
    store.give_back(key, T0 + 900).await.unwrap();
    assert_eq!(store.peek(key, T0 + 900).await.unwrap(), (1, 900));

    // 40 concurrent hits, of which 20 are given back at once: 20 stay.
    let key = "ip:192.0.2.2";
    let mut tasks = Vec::new();
    for i in 0..40 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let (count, reset_in) = store.hit(key, T0, 900).await?;
            if i % 2 == 0 {
                store.give_back(key, T0 + reset_in).await?;
            }
            Ok::<u32, StoreError>(count)
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    assert_eq!(store.peek(key, T0).await.unwrap(), (20, 900));
}

/// A staging credential or counter could be used in prod (tier isolation).
pub(crate) async fn tiers_never_see_each_other(b: &Backend) {
    let prod = b.store("prod").await;
    let staging = b.store("staging").await;
    let s = session("acme", "alice", "t1", T0);
    prod.create_session(&s).await.unwrap();
    prod.create_user(&user("acme", "alice")).await.unwrap();
    prod.record_login(&event("acme", "alice", T0, "success")).await.unwrap();
    prod.hit("login:acme:alice", T0, 900).await.unwrap();
    let step = u64::try_from(T0 / 30).unwrap();
    assert!(prod.accept_totp_step("acme", "alice", step, T0 + 90).await.unwrap());

    let now = T0 + 1;
    assert_eq!(staging.get_session(&s.id_hash).await.unwrap(), None);
    assert!(
        staging
            .list_user_sessions("acme", "alice", now)
            .await
            .unwrap()
            .is_empty()
    );
    assert!(staging.list_tenant_sessions("acme", now, 10).await.unwrap().is_empty());
    assert!(!staging.revoke_session(&s.id_hash, &rev("op", "x")).await.unwrap());
    assert!(
        staging
            .revoke_tenant_sessions("acme", &rev("op", "x"))
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(staging.get_user("acme", "alice").await.unwrap(), None);
    assert!(staging.list_users("acme").await.unwrap().is_empty());
    assert!(
        !staging
            .consume_recovery_code("acme", "alice", &code_hash("code-0"))
            .await
            .unwrap()
    );
    assert!(
        staging
            .login_history("acme", "alice", 10, None)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(staging.peek("login:acme:alice", now).await.unwrap(), (0, 0));
    assert!(
        staging.accept_totp_step("acme", "alice", step, T0 + 90).await.unwrap(),
        "own replay guard"
    );
    assert_eq!(
        staging
            .purge_expired(T0 + 10 * ABSOLUTE + PURGE_GRACE_SECS)
            .await
            .unwrap(),
        0
    );

    assert!(
        prod.get_session(&s.id_hash).await.unwrap().unwrap().is_live(now),
        "prod untouched"
    );
    assert!(prod.get_user("acme", "alice").await.unwrap().is_some());
    assert_eq!(prod.peek("login:acme:alice", now).await.unwrap(), (1, 899));
}

/// Two replicas (or a restart) would not share state.
pub(crate) async fn stores_of_one_tier_share_state(b: &Backend) {
    let first = b.store("prod").await;
    let s = session("acme", "alice", "t1", T0);
    first.create_session(&s).await.unwrap();
    first.create_user(&user("acme", "alice")).await.unwrap();
    first.hit("k", T0, 60).await.unwrap();
    let second = b.store("prod").await;
    assert_eq!(second.get_session(&s.id_hash).await.unwrap(), Some(s.clone()));
    assert!(second.revoke_session(&s.id_hash, &rev("op", "x")).await.unwrap());
    assert!(
        first.get_session(&s.id_hash).await.unwrap().unwrap().revoked.is_some(),
        "a revocation is seen at once"
    );
    assert_eq!(second.hit("k", T0, 60).await.unwrap(), (2, 60));
    assert!(second.get_user("acme", "alice").await.unwrap().is_some());
}

/// A tier's Redis ACL user reaches its own key prefix only: if this broke, a leaked
/// staging credential would read or write production sessions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_acl_user_cannot_touch_another_tiers_keys() {
    let server = RedisServer::start();
    tier_acl_user_is_confined(&server.url(), &[server.port], &["~portcullis:prod:*"]).await;
}

/// The same on a Cluster, where the tier's keys are `portcullis:{<tier>}:...` (one slot).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_acl_user_is_confined_in_a_cluster_too() {
    let cluster = RedisCluster::start();
    let ports: Vec<u16> = cluster.nodes.iter().map(|n| n.port).collect();
    tier_acl_user_is_confined(&cluster.url(), &ports, &["~portcullis:{prod}:*"]).await;
}

/// The same behind Sentinel (ACL users are per node: set on the master and its replica),
/// where the user also needs `ROLE`: the client checks that the node the sentinels name
/// is the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_acl_user_is_confined_behind_sentinel_too() {
    let set = RedisSentinel::start();
    let nodes = [set.master.port, set.replica.port];
    tier_acl_user_is_confined(&set.url(), &nodes, &["~portcullis:prod:*", "+role"]).await;
}

/// Creates the ACL user `prod-gw` as the README says (`+@all -@dangerous`, then `rules`:
/// its keys and any extra command) on every node, then checks that the prod store works
/// as that user and the staging store is refused.
async fn tier_acl_user_is_confined(url: &str, node_ports: &[u16], rules: &[&str]) {
    for port in node_ports {
        let mut args = vec![
            "ACL",
            "SETUSER",
            "prod-gw",
            "on",
            ">prod-secret",
            "resetkeys",
            "resetchannels",
        ];
        args.extend(["+@all", "-@dangerous"]);
        args.extend(rules);
        let out = redis_cli(*port, &args);
        assert_eq!(out.trim(), "OK", "ACL SETUSER on {port}");
    }
    let con = super::redis::connect_as(url, Some(("prod-gw", "prod-secret")))
        .await
        .unwrap();
    let prod = super::RedisStore::new(con.clone(), "prod").unwrap();
    let s = session("acme", "alice", "t1", T0);
    prod.create_session(&s).await.unwrap();
    assert_eq!(
        prod.get_session(&s.id_hash).await.unwrap().map(|r| r.subject),
        Some("alice".into())
    );

    let staging = super::RedisStore::new(con, "staging").unwrap();
    let mut other = session("initech", "ivan", "t2", T0);
    other.tier = "staging".into();
    assert!(matches!(
        staging.create_session(&other).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(matches!(
        staging.get_session(&other.id_hash).await,
        Err(StoreError::Unavailable(_))
    ));
    assert!(
        super::redis::connect_as(url, Some(("prod-gw", "wrong"))).await.is_err(),
        "a wrong password is refused"
    );
}

/// TLS trusts the CA given as `ca=` (else the webpki roots) and nothing else: a server
/// whose certificate chains to neither is refused, and a missing CA file is a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_tls_refuses_a_server_it_cannot_verify() {
    let tls = RedisTls::start();
    assert!(
        super::redis::connect(&tls.url()).await.is_ok(),
        "the test CA is trusted"
    );
    let err = super::redis::connect(&tls.url_without_ca())
        .await
        .err()
        .expect("a certificate from an unknown CA is refused");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    let err = super::redis::connect(&format!("{}?ca=/nonexistent/ca.pem", tls.url_without_ca()))
        .await
        .err()
        .expect("a missing CA file is refused");
    assert!(matches!(&err, StoreError::Invalid(m) if m.contains("ca=")), "{err}");
}

/// The same refusal through Sentinel and Cluster: without the test CA, neither the
/// sentinel's nor the nodes' certificates are trusted, so the store does not open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_and_cluster_over_tls_refuse_a_server_they_cannot_verify() {
    let cluster = RedisCluster::start_tls();
    let sentinel = RedisSentinel::start_tls();
    for url in [cluster.url(), sentinel.url()] {
        assert!(
            super::redis::connect(&url).await.is_ok(),
            "the test CA is trusted: {url}"
        );
        let (without_ca, _) = url.split_once("?ca=").expect("the test URL names its CA");
        let err = super::redis::connect(without_ca)
            .await
            .err()
            .unwrap_or_else(|| panic!("a certificate from an unknown CA is refused: {without_ca}"));
        assert!(matches!(err, StoreError::Unavailable(_)), "{without_ca}: {err}");
    }
}

/// A Sentinel failover does not strand the store on the old master: within moments of the
/// sentinel naming the new master (long before Redis demotes the old one, which would
/// drop what it took meanwhile, revocations included), the store's writes land on the
/// new master; what it wrote before is still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_sentinel_failover_moves_the_store_to_the_new_master() {
    let set = RedisSentinel::start();
    let store = Backend {
        url: set.url(),
        _keep: Box::new(()),
    }
    .store("prod")
    .await;
    let before = session("acme", "alice", "t0", T0);
    store.create_session(&before).await.unwrap();
    wait_until("the replica has the session", || {
        redis_cli(set.replica.port, &["dbsize"]).trim() != "0"
    });
    wait_until("the sentinel fails over to the replica", || {
        redis_cli(set.sentinel.port, &["sentinel", "failover", SENTINEL_MASTER]).trim() == "OK"
    });
    let new_master = set.replica.port.to_string();
    wait_until("the sentinel names the new master", || {
        redis_cli(
            set.sentinel.port,
            &["sentinel", "get-master-addr-by-name", SENTINEL_MASTER],
        )
        .contains(&new_master)
    });
    let switched = Instant::now();
    let mut landed = None;
    for attempt in 1.. {
        let s = session("acme", "bob", &format!("t{attempt}"), T0);
        if store.create_session(&s).await.is_ok() {
            let key = format!("portcullis:prod:session:{}", hex::encode(s.id_hash));
            if redis_cli(set.replica.port, &["exists", &key]).trim() == "1" {
                landed = Some(s);
                break;
            }
        }
        if switched.elapsed() > Duration::from_secs(3) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let landed = landed.expect("a write reaches the new master within 3 s of the switch");
    assert!(
        redis_cli(set.master.port, &["role"]).starts_with("master"),
        "the old master was not demoted yet: the store left it on the sentinel's word"
    );
    wait_until("the old master is demoted", || {
        redis_cli(set.master.port, &["role"]).starts_with("slave")
    });
    assert!(store.get_session(&before.id_hash).await.unwrap().is_some());
    assert!(store.get_session(&landed.id_hash).await.unwrap().is_some());
}

/// The event bus's pub/sub works in every topology: a message published through the
/// store's connection reaches a subscription opened by [`super::redis::client_as`], and
/// `PUBLISH` counts it (the bus waits for that many acknowledgements; on a Cluster it
/// counts only the subscribers of the node serving the channel's slot).
async fn published_messages_reach_subscribers(url: &str) {
    use futures_util::StreamExt;
    let subscriber = super::redis::client_as(url, None).unwrap();
    let mut pubsub = subscriber.get_async_pubsub_for("portcullis:prod:events").await.unwrap();
    pubsub.subscribe("portcullis:prod:events").await.unwrap();
    let mut messages = pubsub.into_on_message();
    let mut con = super::redis::connect(url).await.unwrap();
    let receivers: i64 = ::redis::cmd("PUBLISH")
        .arg("portcullis:prod:events")
        .arg("hello")
        .query_async(&mut con)
        .await
        .unwrap();
    assert_eq!(receivers, 1, "PUBLISH counts the subscriber");
    let msg = tokio::time::timeout(Duration::from_secs(5), messages.next())
        .await
        .expect("the message arrives")
        .unwrap();
    assert_eq!(msg.get_payload::<String>().unwrap(), "hello");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_works_on_a_cluster() {
    let cluster = RedisCluster::start();
    published_messages_reach_subscribers(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_works_behind_sentinel() {
    let set = RedisSentinel::start();
    published_messages_reach_subscribers(&set.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_works_on_a_cluster_over_tls() {
    let cluster = RedisCluster::start_tls();
    published_messages_reach_subscribers(&cluster.url()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pub_sub_works_behind_sentinel_over_tls() {
    let set = RedisSentinel::start_tls();
    published_messages_reach_subscribers(&set.url()).await;
}

/// Losing Redis must make calls fail (the gateway answers 503), never look like "no session".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outage_is_unavailable() {
    let server = RedisServer::start();
    let url = server.url();
    let store = Backend {
        url: url.clone(),
        _keep: Box::new(()),
    }
    .store("prod")
    .await;
    let s = session("acme", "alice", "t1", T0);
    store.create_session(&s).await.unwrap();
    drop(server);
    let started = Instant::now();
    let err = store.get_session(&s.id_hash).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "fails fast: {:?}",
        started.elapsed()
    );
    assert!(!err.to_string().contains("127.0.0.1"), "{err}");
    assert!(matches!(store.hit("k", T0, 60).await, Err(StoreError::Unavailable(_))));
}

fn switch(scope: crate::records::kill_switch::Scope, reason: &str) -> crate::records::kill_switch::KillSwitch {
    crate::records::kill_switch::KillSwitch {
        scope,
        reason: reason.into(),
        message: "suspended".into(),
        tripped_at: T0,
        tripped_by: "operator:olivia".into(),
        system: "api".into(),
        expires_at: Some(T0 + 60),
        idempotency_key: Some("key-1".into()),
        sessions_ended: 3,
        incident: None,
    }
}

pub(crate) async fn kill_switches_round_trip(b: &Backend) {
    use crate::records::kill_switch::Scope;
    let store = b.store("prod").await;
    assert!(store.list_kill_switches().await.unwrap().is_empty());
    let tenant = switch(
        Scope::Tenant {
            tier: "prod".into(),
            tenant: "acme".into(),
        },
        "incident",
    );
    let account = switch(
        Scope::Account {
            tier: "prod".into(),
            tenant: "acme".into(),
            subject: "al:ice".into(),
        },
        "stolen laptop",
    );
    store.put_kill_switch(&tenant).await.unwrap();
    store.put_kill_switch(&account).await.unwrap();
    let mut updated = tenant.clone();
    updated.reason = "incident, updated".into();
    store.put_kill_switch(&updated).await.unwrap();
    let listed = store.list_kill_switches().await.unwrap();
    assert_eq!(listed.len(), 2, "same scope replaces: {listed:?}");
    assert!(listed.contains(&updated) && listed.contains(&account));

    assert_eq!(store.delete_kill_switch("tenant:acme").await.unwrap(), Some(updated));
    assert_eq!(
        store.delete_kill_switch("tenant:acme").await.unwrap(),
        None,
        "only one delete wins"
    );
    assert_eq!(store.list_kill_switches().await.unwrap(), vec![account]);

    let staging = switch(Scope::Tier { tier: "staging".into() }, "x");
    assert!(matches!(
        store.put_kill_switch(&staging).await,
        Err(StoreError::Invalid(_))
    ));
    let other = b.store("staging").await;
    assert!(
        other.list_kill_switches().await.unwrap().is_empty(),
        "tiers are separate"
    );
}

fn audit_entry(action: &str) -> crate::audit::AuditEntry {
    crate::audit::AuditEntry {
        time: T0,
        actor: "operator:olivia".into(),
        source_ip: "127.0.0.1".into(),
        system: "api".into(),
        action: action.into(),
        target: "tenant:acme".into(),
        tenant: Some("acme".into()),
        tier: "prod".into(),
        reason: "why".into(),
        before: serde_json::Value::Null,
        after: serde_json::json!({"n": action}),
        incident: None,
    }
}

/// A record naming an incident chains between records that name none, reads back with
/// its incident, and a stored switch keeps the incident it was tripped for. If this broke,
/// an incident's timeline would lose its records on one backend, or its chain would stop
/// verifying.
pub(crate) async fn incident_references_round_trip(b: &Backend) {
    use crate::records::kill_switch::Scope;
    let store = b.store("prod").await;
    store.append_audit(&audit_entry("breaker.drill")).await.unwrap();
    let named = crate::audit::AuditEntry {
        incident: Some("INC-42".into()),
        ..audit_entry("breaker.trip")
    };
    store.append_audit(&named).await.unwrap();
    store.append_audit(&audit_entry("policy.reload")).await.unwrap();
    let all = store.audit_records(0, 100).await.unwrap();
    let incidents: Vec<Option<&str>> = all.iter().map(|r| r.entry.incident.as_deref()).collect();
    assert_eq!(incidents, vec![None, Some("INC-42"), None]);
    assert_eq!(all[1].entry, named);
    assert_eq!(crate::audit::verify(&all), Ok(()));

    let tripped = crate::records::kill_switch::KillSwitch {
        incident: Some("INC-42".into()),
        ..switch(
            Scope::Tenant {
                tier: "prod".into(),
                tenant: "acme".into(),
            },
            "stolen keys",
        )
    };
    store.put_kill_switch(&tripped).await.unwrap();
    assert_eq!(store.list_kill_switches().await.unwrap(), vec![tripped.clone()]);
    assert_eq!(store.delete_kill_switch("tenant:acme").await.unwrap(), Some(tripped));
}

pub(crate) async fn audit_log_is_a_chain(b: &Backend) {
    let store = b.store("prod").await;
    let first = store.append_audit(&audit_entry("a.one")).await.unwrap();
    assert_eq!(first.seq, 1);
    assert_eq!(first.prev_hash, crate::audit::GENESIS_HASH);
    let second = store.append_audit(&audit_entry("a.two")).await.unwrap();
    assert_eq!((second.seq, second.prev_hash.as_str()), (2, first.hash.as_str()));
    let all = store.audit_records(0, 100).await.unwrap();
    assert_eq!(all, vec![first, second.clone()]);
    assert_eq!(store.audit_records(1, 100).await.unwrap(), vec![second]);
    assert!(store.audit_records(0, 0).await.unwrap().is_empty());
    assert_eq!(crate::audit::verify(&all), Ok(()));
    assert!(b.store("staging").await.audit_records(0, 10).await.unwrap().is_empty());
}

pub(crate) async fn concurrent_audit_appends_keep_one_chain(b: &Backend) {
    let store = b.store("prod").await;
    let mut tasks = Vec::new();
    for i in 0..20 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store.append_audit(&audit_entry(&format!("a.{i}"))).await.unwrap()
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let all = store.audit_records(0, 100).await.unwrap();
    assert_eq!(all.len(), 20);
    assert_eq!(crate::audit::verify(&all), Ok(()));
}

fn change(tier: &str, created_at: i64) -> crate::records::change::ChangeRequest {
    use crate::records::change::{ChangeKind, ChangeStatus};
    let mut change = serde_json::Map::new();
    change.insert("upstream".into(), serde_json::json!("http://127.0.0.1:1"));
    crate::records::change::ChangeRequest {
        id: crate::records::change::new_change_id(),
        version: 1,
        tier: tier.into(),
        kind: ChangeKind::TenantUpdate,
        target: "acme".into(),
        digest: crate::records::change::digest(ChangeKind::TenantUpdate, "acme", &change, "ticket 7"),
        change,
        reason: "ticket 7".into(),
        status: ChangeStatus::Pending,
        proposed_by: "olivia".into(),
        edited_by: Vec::new(),
        created_at,
        updated_at: created_at,
        expires_at: created_at + 3600,
        decided_by: None,
        decided_at: None,
        errors: Vec::new(),
    }
}

pub(crate) async fn change_requests_round_trip(b: &Backend) {
    let store = b.store("prod").await;
    assert!(store.list_changes().await.unwrap().is_empty());
    let older = change("prod", T0);
    let newer = change("prod", T0 + 5);
    store.put_change(&older).await.unwrap();
    store.put_change(&newer).await.unwrap();
    assert!(
        matches!(store.put_change(&older).await, Err(StoreError::Conflict(_))),
        "an existing change was overwritten by put"
    );
    assert_eq!(store.get_change(&older.id).await.unwrap(), Some(older.clone()));
    assert_eq!(
        store
            .get_change(&crate::records::change::new_change_id())
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store.list_changes().await.unwrap(),
        vec![newer.clone(), older.clone()],
        "newest first"
    );

    let mut edited = older.clone();
    edited.version = 2;
    edited.reason = "ticket 8".into();
    assert!(store.replace_change_if(&edited, 1).await.unwrap());
    assert_eq!(store.get_change(&older.id).await.unwrap(), Some(edited.clone()));
    let mut stale = older.clone();
    stale.version = 2;
    stale.status = crate::records::change::ChangeStatus::Applied;
    assert!(
        !store.replace_change_if(&stale, 1).await.unwrap(),
        "a replace based on an old version won"
    );
    assert_eq!(store.get_change(&older.id).await.unwrap(), Some(edited));
    assert!(
        store.replace_change_if(&older, 1).await.is_err(),
        "the version must move on"
    );
    let mut missing = change("prod", T0);
    missing.version = 2;
    assert!(
        !store.replace_change_if(&missing, 1).await.unwrap(),
        "a missing change was created"
    );
    assert_eq!(store.get_change(&missing.id).await.unwrap(), None);

    // Tiers keep their own changes.
    assert!(matches!(
        store.put_change(&change("staging", T0)).await,
        Err(StoreError::Invalid(_))
    ));
    let staging = b.store("staging").await;
    assert!(staging.list_changes().await.unwrap().is_empty());
    assert_eq!(staging.get_change(&newer.id).await.unwrap(), None);
    // Another handle on the same tier (a replica) sees them.
    assert_eq!(b.store("prod").await.list_changes().await.unwrap().len(), 2);
}

pub(crate) async fn concurrent_change_decisions_have_one_winner(b: &Backend) {
    let store = b.store("prod").await;
    let c = change("prod", T0);
    store.put_change(&c).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..16 {
        let (store, mut next) = (store.clone(), c.clone());
        next.version = 2;
        next.decided_by = Some(format!("op{i}"));
        tasks.push(tokio::spawn(
            async move { store.replace_change_if(&next, 1).await.unwrap() },
        ));
    }
    let mut winners = 0;
    for t in tasks {
        if t.await.unwrap() {
            winners += 1;
        }
    }
    assert_eq!(winners, 1, "two approvals of one change both won");
    let stored = store.get_change(&c.id).await.unwrap().unwrap();
    assert_eq!(stored.version, 2);
    assert!(stored.decided_by.is_some());
}

/// A test result of `v` as it is now.
fn sso_test(v: &crate::records::SsoVersion, passed: bool) -> crate::records::SsoTest {
    use crate::records::SsoTest;
    if passed {
        SsoTest::Passed {
            claims: serde_json::Map::from_iter([("sub".to_string(), serde_json::json!("alice"))]),
            roles: vec!["tenant-admin".into()],
            at: T0,
            draft_digest: v.digest(),
        }
    } else {
        SsoTest::Failed {
            error: "the identity provider refused the code".into(),
            at: T0,
            draft_digest: v.digest(),
        }
    }
}

/// Saves a draft of `client_id`, passes its test and activates it.
async fn activate_new(store: &dyn TierStore, client_id: &str) -> crate::records::SsoVersion {
    use super::SsoActivation;
    let mut d = crate::records::sso::tests::draft("acme");
    d.client_id = client_id.into();
    let d = store.put_sso_draft(&d).await.unwrap();
    assert!(store.record_sso_test("acme", &sso_test(&d, true)).await.unwrap());
    match store.activate_sso("acme").await.unwrap() {
        SsoActivation::Activated(v) => *v,
        other => panic!("not activated: {other:?}"),
    }
}

pub(crate) async fn sso_drafts_round_trip(b: &Backend) {
    use crate::records::{SsoState, SsoVersion};
    let store = b.store("prod").await;
    assert_eq!(store.get_sso_draft("acme").await.unwrap(), None);
    assert!(store.list_sso_versions("acme").await.unwrap().is_empty());
    // Whatever the caller sets, a draft is stored as an untested draft.
    let mut d = crate::records::sso::tests::draft("acme");
    d.state = SsoState::Active;
    d.test = Some(sso_test(&d, true));
    d.replaced = Some(9);
    let stored = store.put_sso_draft(&d).await.unwrap();
    assert_eq!(stored.version, 1);
    assert_eq!(
        (stored.state, &stored.test, stored.replaced),
        (SsoState::Draft, &None, None)
    );
    assert_eq!(store.get_sso_draft("acme").await.unwrap().as_ref(), Some(&stored));
    assert_eq!(store.get_sso_active("acme").await.unwrap(), None);
    // A second save replaces the draft and keeps its number.
    let edited = SsoVersion {
        issuer: "https://other.example".into(),
        break_glass: vec!["root".into()],
        ..stored.clone()
    };
    let stored2 = store.put_sso_draft(&edited).await.unwrap();
    assert_eq!(stored2.version, 1);
    assert_eq!(store.get_sso_draft("acme").await.unwrap().as_ref(), Some(&stored2));
    assert_eq!(store.list_sso_versions("acme").await.unwrap(), vec![stored2.clone()]);
    // Other tenants and tiers see nothing of it.
    assert_eq!(store.get_sso_draft("globex").await.unwrap(), None);
    assert!(
        b.store("staging")
            .await
            .list_sso_versions("acme")
            .await
            .unwrap()
            .is_empty()
    );
    // A tenant id that is not a name never reaches a key or a row.
    for bad in ["", "a:b", "ACME", "../x"] {
        assert!(
            matches!(store.get_sso_draft(bad).await, Err(StoreError::Invalid(_))),
            "{bad}"
        );
        let d = crate::records::sso::tests::draft(bad);
        assert!(
            matches!(store.put_sso_draft(&d).await, Err(StoreError::Invalid(_))),
            "{bad}"
        );
    }
}

/// If this broke, a test sign-in that finished after the draft was edited would mark
/// the edited (untested) draft as tested.
pub(crate) async fn sso_tests_are_recorded_only_for_the_draft_tested(b: &Backend) {
    let store = b.store("prod").await;
    assert!(
        !store
            .record_sso_test("acme", &sso_test(&crate::records::sso::tests::draft("acme"), true))
            .await
            .unwrap()
    );
    let d = store
        .put_sso_draft(&crate::records::sso::tests::draft("acme"))
        .await
        .unwrap();
    let failed = sso_test(&d, false);
    assert!(store.record_sso_test("acme", &failed).await.unwrap());
    assert_eq!(store.get_sso_draft("acme").await.unwrap().unwrap().test, Some(failed));
    let passed = sso_test(&d, true);
    assert!(store.record_sso_test("acme", &passed).await.unwrap());
    let now = store.get_sso_draft("acme").await.unwrap().unwrap();
    assert_eq!(now.test, Some(passed.clone()));
    assert!(now.has_passing_test());
    // The draft is edited while another test runs: its result is refused, and the edit
    // cleared the earlier test.
    let mut edited = d.clone();
    edited.client_id = "another-client".into();
    let edited = store.put_sso_draft(&edited).await.unwrap();
    assert!(!store.record_sso_test("acme", &passed).await.unwrap());
    assert_eq!(store.get_sso_draft("acme").await.unwrap().unwrap().test, None);
    assert!(store.record_sso_test("acme", &sso_test(&edited, true)).await.unwrap());
    // Another tenant's draft is never touched by this tenant's test.
    assert!(!store.record_sso_test("globex", &sso_test(&edited, true)).await.unwrap());
}

/// If this broke, a configuration nobody signed in with could become the tenant's SSO.
pub(crate) async fn sso_activation_needs_a_passing_test_of_the_current_draft(b: &Backend) {
    use super::SsoActivation;
    use crate::records::SsoState;
    let store = b.store("prod").await;
    assert_eq!(store.activate_sso("acme").await.unwrap(), SsoActivation::NoDraft);
    let d = store
        .put_sso_draft(&crate::records::sso::tests::draft("acme"))
        .await
        .unwrap();
    assert_eq!(store.activate_sso("acme").await.unwrap(), SsoActivation::NotTested);
    store.record_sso_test("acme", &sso_test(&d, false)).await.unwrap();
    assert_eq!(store.activate_sso("acme").await.unwrap(), SsoActivation::NotTested);
    // Passed, then edited: the edit needs its own test.
    store.record_sso_test("acme", &sso_test(&d, true)).await.unwrap();
    let mut edited = d.clone();
    edited.scopes.push("profile".into());
    let edited = store.put_sso_draft(&edited).await.unwrap();
    assert_eq!(store.activate_sso("acme").await.unwrap(), SsoActivation::NotTested);
    assert_eq!(store.get_sso_active("acme").await.unwrap(), None);
    store.record_sso_test("acme", &sso_test(&edited, true)).await.unwrap();
    let SsoActivation::Activated(v1) = store.activate_sso("acme").await.unwrap() else {
        panic!("a tested draft was not activated");
    };
    assert_eq!((v1.version, v1.state, v1.replaced), (1, SsoState::Active, None));
    assert!(v1.has_passing_test(), "the test that allowed it is kept");
    assert_eq!(store.get_sso_draft("acme").await.unwrap(), None);
    assert_eq!(store.get_sso_active("acme").await.unwrap().as_ref(), Some(&*v1));
    // The next draft gets the next number; activating it supersedes the first.
    let v2 = activate_new(&*store, "second").await;
    assert_eq!((v2.version, v2.state, v2.replaced), (2, SsoState::Active, Some(1)));
    let states: Vec<(u64, SsoState)> = store
        .list_sso_versions("acme")
        .await
        .unwrap()
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(states, vec![(2, SsoState::Active), (1, SsoState::Superseded)]);
    assert_eq!(store.activate_sso("acme").await.unwrap(), SsoActivation::NoDraft);
}

pub(crate) async fn sso_rollback_restores_the_version_before(b: &Backend) {
    use super::SsoRollback;
    use crate::records::SsoState;
    let store = b.store("prod").await;
    assert_eq!(store.rollback_sso("acme").await.unwrap(), SsoRollback::NothingToRestore);
    let v1 = activate_new(&*store, "one").await;
    assert_eq!(store.rollback_sso("acme").await.unwrap(), SsoRollback::NothingToRestore);
    activate_new(&*store, "two").await;
    activate_new(&*store, "three").await;
    let restored = |r: SsoRollback| match r {
        SsoRollback::RolledBack(v) => (v.version, v.client_id, v.state),
        other => panic!("nothing restored: {other:?}"),
    };
    assert_eq!(
        restored(store.rollback_sso("acme").await.unwrap()),
        (2, "two".to_string(), SsoState::Active)
    );
    assert_eq!(store.get_sso_active("acme").await.unwrap().unwrap().version, 2);
    assert_eq!(restored(store.rollback_sso("acme").await.unwrap()).0, 1);
    assert_eq!(store.rollback_sso("acme").await.unwrap(), SsoRollback::NothingToRestore);
    let states: Vec<(u64, SsoState)> = store
        .list_sso_versions("acme")
        .await
        .unwrap()
        .iter()
        .map(|v| (v.version, v.state))
        .collect();
    assert_eq!(
        states,
        vec![
            (3, SsoState::Superseded),
            (2, SsoState::Superseded),
            (1, SsoState::Active)
        ]
    );
    assert_eq!(
        store.get_sso_active("acme").await.unwrap().unwrap().client_id,
        v1.client_id
    );
    // Activating from the restored version, then rolling back, returns to it.
    let v4 = activate_new(&*store, "four").await;
    assert_eq!((v4.version, v4.replaced), (4, Some(1)));
    assert_eq!(restored(store.rollback_sso("acme").await.unwrap()).0, 1);
    // A draft in progress is left alone by a roll-back.
    let d = store
        .put_sso_draft(&crate::records::sso::tests::draft("acme"))
        .await
        .unwrap();
    assert_eq!(d.version, 5);
    store.rollback_sso("acme").await.unwrap();
    assert_eq!(store.get_sso_draft("acme").await.unwrap().as_ref(), Some(&d));
}

/// If this broke, two admins clicking Activate at once could both supersede versions
/// and leave two active ones.
pub(crate) async fn concurrent_sso_activations_have_one_winner(b: &Backend) {
    use super::SsoActivation;
    use crate::records::SsoState;
    let store = b.store("prod").await;
    activate_new(&*store, "one").await;
    let d = store
        .put_sso_draft(&crate::records::sso::tests::draft("acme"))
        .await
        .unwrap();
    store.record_sso_test("acme", &sso_test(&d, true)).await.unwrap();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move { store.activate_sso("acme").await.unwrap() }));
    }
    let mut winners = 0;
    for t in tasks {
        match t.await.unwrap() {
            SsoActivation::Activated(v) => {
                winners += 1;
                assert_eq!((v.version, v.replaced), (2, Some(1)));
            }
            other => assert_eq!(other, SsoActivation::NoDraft),
        }
    }
    assert_eq!(winners, 1);
    let active: Vec<u64> = store
        .list_sso_versions("acme")
        .await
        .unwrap()
        .iter()
        .filter(|v| v.state == SsoState::Active)
        .map(|v| v.version)
        .collect();
    assert_eq!(active, vec![2]);
}

fn published(kid: &str, until: i64) -> super::PublishedKey {
    super::PublishedKey {
        kid: kid.to_string(),
        jwk: format!(r#"{{"kty":"OKP","crv":"Ed25519","x":"x-{kid}","kid":"{kid}"}}"#),
        until,
    }
}

/// A restarted replica (or another one) could not find the key that signed assertions
/// still in flight, or would find keys long dead.
pub(crate) async fn assertion_keys_round_trip_and_expire(b: &Backend) {
    let first = b.store("prod").await;
    assert!(first.published_assertion_keys(T0).await.unwrap().is_empty());
    let (a, z) = (published("aaaa", T0 + 80), published("zzzz", T0 + 20));
    first.publish_assertion_key(&z).await.unwrap();
    first.publish_assertion_key(&a).await.unwrap();

    let second = b.store("prod").await;
    assert_eq!(
        second.published_assertion_keys(T0).await.unwrap(),
        vec![a.clone(), z.clone()],
        "every key, sorted by kid, seen by another store of the tier"
    );
    assert_eq!(
        second.published_assertion_keys(T0 + 20).await.unwrap(),
        vec![a.clone()],
        "a key is gone once its time is up"
    );
    assert!(second.published_assertion_keys(T0 + 80).await.unwrap().is_empty());

    // Purge forgets what is over and keeps what is not.
    first.purge_expired(T0 + 20).await.unwrap();
    assert_eq!(first.published_assertion_keys(T0).await.unwrap(), vec![a.clone()]);
    let shorter = published("zzzz", T0 + 10);
    first.publish_assertion_key(&shorter).await.unwrap();
    assert_eq!(
        first.published_assertion_keys(T0).await.unwrap(),
        vec![a, shorter],
        "a purged kid starts afresh"
    );
}

/// A replica republishing a key with an earlier end (or a rotation's final window
/// arriving after a later heartbeat) would cut short another replica's publication.
pub(crate) async fn assertion_keys_keep_the_later_until(b: &Backend) {
    let store = b.store("prod").await;
    store.publish_assertion_key(&published("k1", T0 + 90)).await.unwrap();
    store.publish_assertion_key(&published("k1", T0 + 30)).await.unwrap();
    assert_eq!(
        store.published_assertion_keys(T0).await.unwrap(),
        vec![published("k1", T0 + 90)]
    );
    let mut later = published("k1", T0 + 120);
    later.jwk = r#"{"kid":"k1","v":2}"#.into();
    store.publish_assertion_key(&later).await.unwrap();
    assert_eq!(store.published_assertion_keys(T0).await.unwrap(), vec![later]);

    let publishes: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.publish_assertion_key(&published("k2", T0 + 100 + i)).await })
        })
        .collect();
    for p in publishes {
        p.await.unwrap().unwrap();
    }
    let k2 = store.published_assertion_keys(T0).await.unwrap().pop().unwrap();
    assert_eq!(
        (k2.kid.as_str(), k2.until),
        ("k2", T0 + 119),
        "concurrent publishes keep the latest"
    );
}

/// A staging key would verify prod assertions if tiers shared published keys; bad input
/// must be refused, not stored.
pub(crate) async fn assertion_keys_are_per_tier_and_checked(b: &Backend) {
    let prod = b.store("prod").await;
    let staging = b.store("staging").await;
    prod.publish_assertion_key(&published("prodkey", T0 + 60))
        .await
        .unwrap();
    assert!(staging.published_assertion_keys(T0).await.unwrap().is_empty());
    staging.purge_expired(T0 + 3600).await.unwrap();
    assert_eq!(prod.published_assertion_keys(T0).await.unwrap().len(), 1);

    for bad in [
        published("", T0 + 60),
        published("a:b", T0 + 60),
        published(&"k".repeat(65), T0 + 60),
        super::PublishedKey {
            jwk: String::new(),
            ..published("k", T0 + 60)
        },
        super::PublishedKey {
            jwk: "x".repeat(5000),
            ..published("k", T0 + 60)
        },
    ] {
        assert!(matches!(
            prod.publish_assertion_key(&bad).await,
            Err(StoreError::Invalid(_))
        ));
    }
    assert_eq!(
        prod.published_assertion_keys(T0).await.unwrap().len(),
        1,
        "nothing stored"
    );
}

macro_rules! suite {
    ($backend:ident, $make:expr, [$($test:ident),* $(,)?]) => {
        mod $backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $test() {
                    let backend = $make;
                    super::$test(&backend).await;
                }
            )*
        }
    };
}

macro_rules! every_test {
    ($backend:ident, $make:expr) => {
        suite!(
            $backend,
            $make,
            [
                sessions_round_trip,
                revoked_sessions_are_not_live,
                concurrent_revocation_has_one_winner,
                touch_never_extends_past_absolute_expiry,
                expiry_and_purge,
                revoke_user_sessions_keeps_the_current_one,
                revoke_tenant_sessions_is_scoped,
                revoke_sso_sessions_by_sid,
                lists_are_newest_first_and_limited,
                tenants_and_users_are_isolated,
                users_round_trip,
                recovery_codes_work_once,
                concurrent_recovery_code_use_has_one_winner,
                totp_steps_only_move_forward,
                login_history_pages_newest_first,
                login_history_is_capped,
                tenant_login_history_spans_subjects,
                tenant_login_history_is_capped,
                throttle_counts_in_fixed_windows,
                concurrent_hits_count_each_once,
                throttle_hits_can_be_given_back,
                tiers_never_see_each_other,
                stores_of_one_tier_share_state,
                kill_switches_round_trip,
                audit_log_is_a_chain,
                incident_references_round_trip,
                concurrent_audit_appends_keep_one_chain,
                change_requests_round_trip,
                concurrent_change_decisions_have_one_winner,
                sso_drafts_round_trip,
                sso_tests_are_recorded_only_for_the_draft_tested,
                sso_activation_needs_a_passing_test_of_the_current_draft,
                sso_rollback_restores_the_version_before,
                concurrent_sso_activations_have_one_winner,
                assertion_keys_round_trip_and_expire,
                assertion_keys_keep_the_later_until,
                assertion_keys_are_per_tier_and_checked,
            ]
        );
    };
}

every_test!(sqlite, super::Backend::sqlite());
every_test!(redis, super::Backend::redis());
every_test!(redis_cluster, super::Backend::redis_cluster());
every_test!(redis_sentinel, super::Backend::redis_sentinel());
every_test!(redis_tls, super::Backend::redis_tls());
every_test!(redis_cluster_tls, super::Backend::redis_cluster_tls());
every_test!(redis_sentinel_tls, super::Backend::redis_sentinel_tls());
