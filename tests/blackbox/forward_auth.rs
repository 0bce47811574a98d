//! Forward-auth (SPEC "Forward-auth"): `/.portcullis/auth` decides for a proxy the user
//! keeps exactly as the gateway decides inline, and never forwards anything itself.

use crate::harness::*;

/// A live session of `tenant` (prod tier) with `roles`, written straight into the store;
/// returns the cookie value.
async fn session_with_roles(gw: &Gateway, tenant: &str, roles: &[&str]) -> String {
    use base64::Engine;
    let accounts = Accounts::open(gw).await;
    let raw: [u8; 32] = rand::random();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let record = portcullis::records::SessionRecord {
        id_hash: portcullis::records::session_id_hash(&raw),
        tenant: tenant.to_string(),
        tier: "prod".to_string(),
        subject: "fwd-user".into(),
        idp: portcullis::account::LOCAL_IDP.to_string(),
        display_name: "Forward".into(),
        roles: roles.iter().map(|r| r.to_string()).collect(),
        auth_method: "password".into(),
        amr: vec!["pwd".into(), "otp".into()],
        mfa_at: Some(now),
        created_at: now,
        last_seen: now,
        idle_expires_at: now + 3600,
        absolute_expires_at: now + 7200,
        ip: "127.0.0.1".into(),
        user_agent: "forward-auth test".into(),
        csrf_token: "x".into(),
        sso_sid: None,
        revoked: None,
    };
    accounts.store("prod").create_session(&record).await.unwrap();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw)
}

/// One forward-auth call as a proxy makes it: `uri` in `uri_header`, optional cookie.
async fn ask(
    gw: &Gateway,
    host: &str,
    uri_header: &str,
    uri: &str,
    cookie: Option<&str>,
    extra: &[(&str, &str)],
) -> reqwest::Response {
    let mut req = gw
        .client()
        .get(gw.host_url(host, "/.portcullis/auth"))
        .header(uri_header, uri);
    if let Some(c) = cookie {
        req = req.header("cookie", format!("__Host-portcullis-prod={c}"));
    }
    for (k, v) in extra {
        req = req.header(*k, *v);
    }
    req.send().await.unwrap()
}

/// If forward-auth decided differently from the inline path, a user behind nginx or
/// Caddy would reach pages the gateway itself would refuse (or be refused pages it allows).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forward_auth_decides_as_inline_and_asserts_the_identity() {
    let (ups, gw) = start().await;
    let plain = session_with_roles(&gw, "acme", &[]).await;
    let admin = session_with_roles(&gw, "acme", &["admin"]).await;

    // Public route: allowed without a session, and without identity headers.
    let r = ask(&gw, "acme.test", "x-forwarded-uri", "/public/a", None, &[]).await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("x-portcullis-user").is_none());
    assert!(r.headers().get("portcullis-assertion").is_none());

    // Protected route: the inline answer without a session (401 JSON, 302 for browsers).
    let r = ask(&gw, "acme.test", "x-forwarded-uri", "/reports/q3", None, &[]).await;
    assert_eq!(r.status(), 401);
    let r = ask(
        &gw,
        "acme.test",
        "x-forwarded-uri",
        "/reports/q3?x=1",
        None,
        &[("accept", "text/html")],
    )
    .await;
    assert_eq!(r.status(), 302);
    let location = r.headers()["location"].to_str().unwrap();
    assert!(location.starts_with("/.portcullis/login?rd="), "{location}");

    // With a session: 200 and the identity the upstream would have received inline.
    let r = ask(&gw, "acme.test", "x-forwarded-uri", "/reports/q3", Some(&plain), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-portcullis-user"], "fwd-user");
    assert_eq!(r.headers()["x-portcullis-tenant"], "acme");
    let assertion = r.headers()["portcullis-assertion"].to_str().unwrap();
    assert_eq!(assertion.split('.').count(), 3, "a JWT: {assertion}");
    assert!(r.headers().get("portcullis-upstream-token").is_none());

    // Roles: the admin route needs `admin`, in every spelling of its path.
    for path in ["/admin/x", "/Admin/x", "/ADMIN/x", "/public/../admin/x", "/admin%3Bx/y"] {
        let r = ask(&gw, "acme.test", "x-forwarded-uri", path, Some(&plain), &[]).await;
        assert!(
            r.status() == 403 || r.status() == 400,
            "{path}: {} for a session without the role",
            r.status()
        );
    }
    let r = ask(&gw, "acme.test", "x-forwarded-uri", "/admin/x", Some(&admin), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-portcullis-roles"], "admin");

    // Another tenant's host: the acme session counts as none there.
    let r = ask(&gw, "globex.test", "x-forwarded-uri", "/reports", Some(&plain), &[]).await;
    assert_eq!(r.status(), 401);

    // The gateway never forwards anything itself on this endpoint.
    assert_eq!(ups.acme.count() + ups.globex.count() + ups.initech.count(), 0);
}

/// nginx takes only 2xx, 401 and 403 from `auth_request`; any other status would become
/// a 500 and hide why. Without this mapping nginx users could not send people to sign-in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_gets_401_or_403_with_the_reason_and_the_login_path() {
    let (_ups, gw) = start().await;
    let plain = session_with_roles(&gw, "acme", &[]).await;

    let r = ask(&gw, "acme.test", "x-original-uri", "/reports/q3", None, &[]).await;
    assert_eq!(r.status(), 401);
    assert_eq!(r.headers()["x-portcullis-reason"], "unauthenticated");
    let login = r.headers()["x-portcullis-login"].to_str().unwrap();
    assert!(login.starts_with("/.portcullis/login?rd="), "{login}");
    assert!(login.contains("reports"), "{login}");

    let r = ask(&gw, "acme.test", "x-original-uri", "/admin/x", Some(&plain), &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-portcullis-reason"], "forbidden");

    let r = ask(&gw, "acme.test", "x-original-uri", "/reports", Some(&plain), &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-portcullis-user"], "fwd-user");

    // A URI the gateway cannot read is refused, as nginx can take it.
    let r = ask(&gw, "acme.test", "x-original-uri", "reports", Some(&plain), &[]).await;
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-portcullis-reason"], "bad_request");
}

/// A request the gateway cannot see whole is refused, never allowed: no original URI,
/// two of them, or an absolute one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_original_request_that_cannot_be_read_is_refused() {
    let (_ups, gw) = start().await;
    let plain = session_with_roles(&gw, "acme", &[]).await;
    let cookie = format!("__Host-portcullis-prod={plain}");
    let r = gw
        .client()
        .get(gw.host_url("acme.test", "/.portcullis/auth"))
        .header("cookie", &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = gw
        .client()
        .get(gw.host_url("acme.test", "/.portcullis/auth"))
        .header("cookie", &cookie)
        .header("x-forwarded-uri", "/reports")
        .header("x-forwarded-uri", "/admin/x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = ask(
        &gw,
        "acme.test",
        "x-forwarded-uri",
        "http://globex.test/reports",
        Some(&plain),
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
}

/// `X-Forwarded-Host` names the tenant only when a trusted proxy sends it; from anyone
/// else it would let a client pick the tenant a decision is made for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_host_counts_only_from_a_trusted_proxy() {
    let (_ups, gw) = start().await;
    let plain = session_with_roles(&gw, "acme", &[]).await;
    // Untrusted peer: the Host decides (acme), the header is ignored.
    let r = ask(
        &gw,
        "acme.test",
        "x-forwarded-uri",
        "/reports",
        Some(&plain),
        &[("x-forwarded-host", "globex.test")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-portcullis-tenant"], "acme");

    let (_ups, trusted) = start_with(|f| f.trusted_proxies = vec!["127.0.0.1/32".into()]).await;
    let session = session_with_roles(&trusted, "acme", &[]).await;
    // Trusted proxy: the forwarded host decides; the acme session is none on globex.
    let r = ask(
        &trusted,
        "acme.test",
        "x-forwarded-uri",
        "/reports",
        Some(&session),
        &[("x-forwarded-host", "globex.test")],
    )
    .await;
    assert_eq!(r.status(), 401);
    let r = ask(
        &trusted,
        "unknown.test",
        "x-forwarded-uri",
        "/reports",
        Some(&session),
        &[("x-forwarded-host", "acme.test")],
    )
    .await;
    assert_eq!(r.status(), 200);
}

/// nginx, really started, with `deploy/forward-auth/nginx.conf` as shipped (only its
/// addresses and host replaced): if the snippet or the answers nginx needs broke, users
/// who keep nginx would be let through, or could not sign in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_with_the_shipped_snippet_asks_portcullis_for_every_request() {
    a_kept_proxy_asks_portcullis_for_every_request(Kept::Nginx).await;
}

/// Caddy, really started, with `deploy/forward-auth/Caddyfile` as shipped (only its
/// addresses and host replaced): if the snippet or the inline answers Caddy passes on
/// broke, users who keep Caddy would be let through, or could not sign in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caddy_with_the_shipped_snippet_asks_portcullis_for_every_request() {
    a_kept_proxy_asks_portcullis_for_every_request(Kept::Caddy).await;
}

/// What the app behind a proxy the user keeps receives, and what the client gets back,
/// for every kind of answer: allowed, anonymous browser, anonymous API client, role
/// refused, revoked session, kill switch; the client sends its own identity headers
/// every time, and they never reach the app.
async fn a_kept_proxy_asks_portcullis_for_every_request(kept: Kept) {
    let operator = random_hex(24);
    // The proxy is trusted, as it must be when it sends another Host than the tenant's:
    // what it says about the request counts, so nothing of it may come from the client.
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![("olivia".into(), sha256_hex(operator.as_bytes()))];
        f.trusted_proxies = vec!["127.0.0.1/32".into()];
    })
    .await;
    let plain = session_with_roles(&gw, "acme", &[]).await;
    let proxy = KeptProxy::start(kept, gw.public, ups.acme.addr).await;
    let app = &ups.acme;

    // Public, anonymous: through, and none of the client's identity headers reach the app.
    let r = proxy.get("/public/hello", None, "*/*").await;
    assert_eq!(r.status(), 200, "{}", proxy.log());
    let seen = app.only();
    assert_eq!(seen.target, "/public/hello");
    for name in [
        "portcullis-assertion",
        "x-portcullis-user",
        "x-portcullis-tenant",
        "x-portcullis-roles",
    ] {
        assert!(!seen.has_header(name), "{name} reached the app: {:?}", seen.headers);
    }

    // Allowed: through, with the gateway's own assertion of the session instead of the
    // client's, verifiable with the tier's published keys.
    let r = proxy.get("/reports/q3?x=1", Some(&plain), "application/json").await;
    assert_eq!(r.status(), 200, "{}", proxy.log());
    let seen = app.wait_for(2).await.pop().unwrap();
    assert_eq!(seen.target, "/reports/q3?x=1");
    assert_eq!(seen.header("x-portcullis-user"), Some("fwd-user"));
    assert_eq!(seen.header("x-portcullis-tenant"), Some("acme"));
    assert!(!seen.header_all("x-portcullis-roles").contains(&"admin"));
    let assertion = seen.header("portcullis-assertion").expect("an assertion");
    assert_ne!(assertion, SPOOFED_ASSERTION);
    let jwks = proxy.get("/.portcullis/jwks.json", None, "application/json").await;
    assert_eq!(jwks.status(), 200);
    let keys = portcullis::assertion::Verifier::from_jwks_json(&jwks.text().await.unwrap()).unwrap();
    let claims = keys
        .verify(assertion, None, "acme", portcullis::clock::unix_now())
        .unwrap();
    assert_eq!(claims.sub, "fwd-user");
    // Portcullis's own pages pass through the proxy as they are.
    assert_eq!(proxy.get("/.portcullis/login", None, "text/html").await.status(), 200);

    // Anonymous browser: sent to Portcullis's sign-in, back to where it was going.
    let r = proxy.get("/reports/q3", None, "text/html").await;
    assert_eq!(r.status(), 302, "{}", proxy.log());
    assert_eq!(proxy.location(&r), "/.portcullis/login?rd=%2Freports%2Fq3");

    // Anonymous API client: 401, never a redirect to a page it cannot use.
    let r = proxy.get("/reports/q3", None, "application/json").await;
    assert_eq!(r.status(), 401, "{}", proxy.log());
    kept.assert_inline_reason(r, "unauthenticated").await;

    // Role missing: 403.
    let r = proxy.get("/admin/x", Some(&plain), "application/json").await;
    assert_eq!(r.status(), 403, "{}", proxy.log());
    kept.assert_inline_reason(r, "forbidden").await;
    assert_eq!(app.count(), 2, "nothing refused reached the app");

    // Revoked: signed out through the proxy, the cookie is no session any more.
    let r = proxy.post("/.portcullis/api/logout", Some(&plain)).await;
    assert_eq!(r.status(), 200, "{}", proxy.log());
    let r = proxy.get("/reports/q3", Some(&plain), "application/json").await;
    assert_eq!(r.status(), 401, "{}", proxy.log());
    kept.assert_inline_reason(r, "unauthenticated").await;
    let r = proxy.get("/reports/q3", Some(&plain), "text/html").await;
    assert_eq!(r.status(), 302, "{}", proxy.log());
    assert_eq!(proxy.location(&r), "/.portcullis/login?rd=%2Freports%2Fq3");
    assert_eq!(app.count(), 2, "nothing refused reached the app");

    // Kill switch: every request of the tenant is refused, public ones and sessions alike.
    let message = "Acme is paused while we look into INC-7.";
    let r = gw
        .client()
        .put(gw.admin_url("/v1/tenants/acme/breaker"))
        .bearer_auth(&operator)
        .json(&serde_json::json!({ "reason": "INC-7 drill", "message": message }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let fresh = session_with_roles(&gw, "acme", &[]).await;
    for (path, cookie) in [("/public/hello", None), ("/reports/q3", Some(fresh.as_str()))] {
        let r = proxy.get(path, cookie, "application/json").await;
        match kept {
            // nginx can pass on only 401 or 403 from Portcullis.
            Kept::Nginx => assert_eq!(r.status(), 403, "{path}"),
            Kept::Caddy => {
                assert_eq!(r.status(), 423, "{path}");
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "suspended", "{path}: {body}");
                assert_eq!(body["message"], message, "{path}: {body}");
            }
        }
    }
    assert_eq!(app.count(), 2, "nothing reached the app under the kill switch");
}

/// An assertion a client makes up; it must never reach the app.
const SPOOFED_ASSERTION: &str = "eyJhbGciOiJub25lIn0.eyJzdWIiOiJtYWxsb3J5In0.spoofed";

/// A proxy users keep in front of their app, with a snippet shipped in `deploy/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kept {
    /// nginx `auth_request`: refusals reach the client as nginx maps 401 and 403.
    Nginx,
    /// Caddy `forward_auth`: refusals reach the client as Portcullis answered them.
    Caddy,
}

impl Kept {
    /// Its snippet under `deploy/forward-auth/`.
    fn snippet(self) -> &'static str {
        match self {
            Kept::Nginx => "nginx.conf",
            Kept::Caddy => "Caddyfile",
        }
    }

    /// Writes a config around the snippet (its address and host replaced, the rest as
    /// shipped) into `dir`, and returns the command that runs it in the foreground,
    /// logging to `dir/error.log`.
    fn command(self, snippet: &str, addr: std::net::SocketAddr, dir: &std::path::Path) -> std::process::Command {
        let d = dir.display();
        match self {
            Kept::Nginx => {
                let server = snippet
                    .replace("listen 80;", &format!("listen {addr};"))
                    .replace("acme.example.com", "acme.test");
                let conf = format!(
                    "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                     events {{ worker_connections 64; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n{server}\n}}\n"
                );
                std::fs::write(dir.join("nginx.conf"), conf).unwrap();
                let mut c = std::process::Command::new("nginx");
                c.arg("-p").arg(dir).arg("-e").arg(dir.join("error.log"));
                c.arg("-c").arg(dir.join("nginx.conf"));
                c
            }
            Kept::Caddy => {
                let site = snippet.replace("acme.example.com", &format!("http://acme.test:{}", addr.port()));
                let conf = format!(
                    "{{\n admin off\n auto_https off\n default_bind {ip}\n storage file_system {d}/storage\n}}\n\n{site}",
                    ip = addr.ip()
                );
                std::fs::write(dir.join("Caddyfile"), conf).unwrap();
                let mut c = std::process::Command::new("caddy");
                c.args(["run", "--adapter", "caddyfile", "--config"]);
                c.arg(dir.join("Caddyfile"));
                // Caddy keeps state under HOME and the XDG dirs: keep it in `dir`.
                c.env("HOME", dir)
                    .env("XDG_CONFIG_HOME", dir.join("config"))
                    .env("XDG_DATA_HOME", dir.join("data"));
                c
            }
        }
    }

    /// A refusal's body names `reason` as inline; nginx sends its own body instead.
    async fn assert_inline_reason(self, r: reqwest::Response, reason: &str) {
        if self == Kept::Caddy {
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], reason, "{body}");
        }
    }
}

/// nginx or Caddy started on its shipped forward-auth snippet, in front of `app` and
/// asking `portcullis`; killed on drop.
struct KeptProxy {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    child: std::process::Child,
    client: reqwest::Client,
}

impl KeptProxy {
    async fn start(kept: Kept, portcullis: std::net::SocketAddr, app: std::net::SocketAddr) -> KeptProxy {
        let path = format!("{}/deploy/forward-auth/{}", env!("CARGO_MANIFEST_DIR"), kept.snippet());
        let snippet = std::fs::read_to_string(&path)
            .expect("the shipped snippet")
            .replace("127.0.0.1:8080", &portcullis.to_string())
            .replace("127.0.0.1:3000", &app.to_string());
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        // Neither can report a port it picked, so pick one and retry on a clash.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
            let dir = tempfile::tempdir().unwrap();
            let log = std::fs::File::create(dir.path().join("error.log")).unwrap();
            let child = kept
                .command(&snippet, addr, dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("{kept:?} is installed (.ci/run installs it): {e}"));
            let mut proxy = KeptProxy {
                addr,
                dir,
                child,
                client: client.clone(),
            };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return proxy;
                }
                if let Ok(Some(_)) = proxy.child.try_wait() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            eprintln!("{kept:?} did not start on {addr}: {}", proxy.log());
        }
        panic!("{kept:?} did not start");
    }

    /// A request for `acme.test` as a client sends it through the proxy: with `cookie` as
    /// the session, and always with identity headers of its own making.
    fn request(&self, method: reqwest::Method, path: &str, cookie: Option<&str>) -> reqwest::RequestBuilder {
        let mut req = self
            .client
            .request(method, format!("http://{}{path}", self.addr))
            .header("host", "acme.test")
            .header("portcullis-assertion", SPOOFED_ASSERTION)
            .header("x-portcullis-user", "spoofed-admin")
            .header("x-portcullis-roles", "admin")
            // What a proxy tells Portcullis about the request, made up by the client.
            .header("x-forwarded-uri", "/public/spoofed")
            .header("x-original-uri", "/public/spoofed")
            .header("x-forwarded-method", "OPTIONS")
            .header("x-forwarded-host", "globex.test");
        if let Some(c) = cookie {
            req = req.header("cookie", format!("__Host-portcullis-prod={c}"));
        }
        req
    }

    async fn get(&self, path: &str, cookie: Option<&str>, accept: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, cookie)
            .header("accept", accept)
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, cookie: Option<&str>) -> reqwest::Response {
        self.request(reqwest::Method::POST, path, cookie).send().await.unwrap()
    }

    /// The path of a redirect's `Location`: nginx makes it absolute, on its own address.
    fn location(&self, r: &reqwest::Response) -> String {
        let location = r.headers()["location"].to_str().unwrap();
        let own = format!("http://acme.test:{}", self.addr.port());
        location.strip_prefix(&own).unwrap_or(location).to_string()
    }

    /// What the proxy logged (its errors), for failure messages.
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for KeptProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
