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
    let (ups, gw) = start().await;
    let plain = session_with_roles(&gw, "acme", &[]).await;
    let nginx = Nginx::start(&gw.public.to_string(), &ups.acme.url()).await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let get = |path: &str, cookie: Option<&str>| {
        let mut req = client
            .get(format!("http://{}{path}", nginx.addr))
            .header("host", "acme.test")
            .header("x-portcullis-user", "spoofed-admin")
            .header("x-portcullis-roles", "admin");
        if let Some(c) = cookie {
            req = req.header("cookie", format!("__Host-portcullis-prod={c}"));
        }
        req.send()
    };

    // Public: through, and the client's own identity headers never reach the app.
    let r = get("/public/hello", None).await.unwrap();
    assert_eq!(r.status(), 200, "{}", nginx.errors());
    let seen = ups.acme.only();
    assert_eq!(seen.target, "/public/hello");
    assert!(!seen.has_header("x-portcullis-user"), "{:?}", seen.headers);
    assert!(!seen.has_header("x-portcullis-roles"), "{:?}", seen.headers);

    // Protected without a session: nginx sends the browser to Portcullis's sign-in.
    let r = get("/reports/q3", None).await.unwrap();
    assert_eq!(r.status(), 302, "{}", nginx.errors());
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert!(location.contains("/.portcullis/login?rd="), "{location}");
    assert_eq!(ups.acme.count(), 1, "nothing more reached the app");

    // Protected with a session: through, with the asserted identity only.
    let r = get("/reports/q3", Some(&plain)).await.unwrap();
    assert_eq!(r.status(), 200);
    let seen = ups.acme.wait_for(2).await.pop().unwrap();
    assert_eq!(seen.target, "/reports/q3");
    assert_eq!(seen.header("x-portcullis-user"), Some("fwd-user"));
    assert_eq!(seen.header("x-portcullis-tenant"), Some("acme"));
    assert!(!seen.header_all("x-portcullis-roles").contains(&"admin"));
    assert!(seen.has_header("portcullis-assertion"));

    // Role missing: 403 from nginx, and the app sees nothing.
    let r = get("/admin/x", Some(&plain)).await.unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(ups.acme.count(), 2);

    // The sign-in page itself is Portcullis's, through nginx.
    let r = get("/.portcullis/login", None).await.unwrap();
    assert_eq!(r.status(), 200);
}

/// nginx started on the shipped forward-auth snippet; killed on drop.
struct Nginx {
    addr: std::net::SocketAddr,
    dir: tempfile::TempDir,
    child: std::process::Child,
}

impl Nginx {
    async fn start(portcullis: &str, app_url: &str) -> Nginx {
        let snippet = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/forward-auth/nginx.conf"))
            .expect("the shipped nginx snippet");
        let app = app_url.trim_start_matches("http://").trim_end_matches('/');
        // nginx cannot report a port it picked, so pick one and retry on a clash.
        for _ in 0..5 {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
            let server = snippet
                .replace("server 127.0.0.1:8080;", &format!("server {portcullis};"))
                .replace("server 127.0.0.1:3000;", &format!("server {app};"))
                .replace("listen 80;", &format!("listen {addr};"))
                .replace("acme.example.com", "acme.test");
            let dir = tempfile::tempdir().unwrap();
            let conf = format!(
                "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
                 events {{ worker_connections 64; }}\nhttp {{\n access_log off;\n client_body_temp_path {d};\n proxy_temp_path {d};\n{server}\n}}\n",
                d = dir.path().display()
            );
            std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
            let child = std::process::Command::new("nginx")
                .arg("-p")
                .arg(dir.path())
                .arg("-e")
                .arg(dir.path().join("error.log"))
                .arg("-c")
                .arg(dir.path().join("nginx.conf"))
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("nginx is installed (.ci/run installs it)");
            let mut nginx = Nginx { addr, dir, child };
            for _ in 0..100 {
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    return nginx;
                }
                if let Ok(Some(_)) = nginx.child.try_wait() {
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
            eprintln!("nginx did not start on {addr}: {}", nginx.errors());
        }
        panic!("nginx did not start");
    }

    fn errors(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
