//! Real-browser tour of every kind of page the gateway answers with, driven by
//! `tests/browser/pages.mjs` (playwright-core, Debian's Chromium): sign-in, second
//! factor, enrolment, account, tenant admin (breakers, users, sessions, history,
//! audit), the demo app's page, the signed-out
//! sign-in page, and the refusals (423 for a tenant and for an account, 400, 403, 404,
//! 421, 429, 431, 502, 503), each triggered for real. Each is checked for its text
//! (tenant name, request id, next step), screenshotted at desktop (1280) and phone (390)
//! widths into `target/browser-screenshots/pages/`, and checked with axe-core (serious
//! or critical violations fail).
//!
//! Two demos run: the usual one, and one whose tenants all point at a dead upstream
//! (`--upstream`), for 502 and then 503 once its breaker opens.
//!
//! Beside the tour, plain HTTP checks of what the browser cannot show well: an
//! oversized head answered by the gateway itself, and the icon and stylesheet served
//! without a session or a tenant.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::browser::{Demo, run_node_script};
use crate::harness::BIN;

/// Sign-ins wait for fresh TOTP steps; everything else takes seconds.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(300);

/// The page kinds pages.mjs must leave a screenshot of, at each width.
const KINDS: [&str; 23] = [
    "login",
    "mfa",
    "echo",
    "account",
    "403",
    "404",
    "400",
    "431",
    "enrol",
    "signed-out",
    "admin",
    "admin-tripped",
    "admin-users",
    "admin-users-reset",
    "admin-sessions",
    "admin-history",
    "admin-audit",
    "423-account",
    "423-tenant",
    "421",
    "429",
    "502",
    "503",
];

/// An upstream URL nothing listens on: a port bound, then let go.
fn dead_upstream() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("local addr").port();
    format!("http://127.0.0.1:{port}")
}

/// Creates a local account without a second factor (it enrols at its first sign-in)
/// in the running demo's store, through the CLI.
fn add_user(demo: &Demo, tenant: &str, username: &str, password: &str) {
    let data = demo.dir.path();
    let out = Command::new(BIN)
        .args(["user", "add", "--tenant", tenant, "--username", username])
        .arg("--config")
        .arg(data.join("policies"))
        .arg("--data")
        .arg(data)
        .env("PORTCULLIS_NEW_PASSWORD", password)
        .stdin(Stdio::null())
        .output()
        .expect("run portcullis user add");
    assert!(
        out.status.success(),
        "user add failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_page_kind_is_styled_readable_and_accessible() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests").join("browser");
    for module in ["playwright-core", "axe-core"] {
        assert!(
            browser_dir.join("node_modules").join(module).is_dir(),
            "{module} is missing: run `npm ci` in tests/browser (bash .ci/run does)"
        );
    }
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install -y chromium` (bash .ci/run does)"
    );
    let out = root.join("target").join("browser-screenshots").join("pages");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("create screenshot folder");

    let mut demo = Demo::start();
    let info = demo.wait_ready();
    let mut dead = Demo::start_with(&["--upstream", &dead_upstream()]);
    let dead_info = dead.wait_ready();
    add_user(&demo, "acme", "newbie", "newbie-demo-password");

    let config = serde_json::json!({
        "demo": info,
        "dead_public": dead_info["public"],
        "newcomer": {"username": "newbie", "password": "newbie-demo-password"},
        "out_dir": out,
    });
    let config_path = out.join("config.json");
    fs::write(&config_path, config.to_string()).expect("write config.json");

    let log_path = out.join("pages.log");
    let (status, output) = run_node_script(
        &browser_dir.join("pages.mjs"),
        &[config_path.as_os_str()],
        &log_path,
        SCRIPT_TIMEOUT,
    );
    let status = status.unwrap_or_else(|| panic!("pages.mjs did not finish in {SCRIPT_TIMEOUT:?}\n{output}"));
    assert!(
        status.success(),
        "pages.mjs failed ({status}); screenshots in {}\n{output}\n{}\n{}",
        out.display(),
        demo.logs().lines().rev().take(30).collect::<Vec<_>>().join("\n"),
        dead.logs().lines().rev().take(10).collect::<Vec<_>>().join("\n"),
    );
    for kind in KINDS {
        for width in ["desktop", "phone"] {
            let path = out.join(format!("{kind}-{width}.png"));
            let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(size > 0, "screenshot {} is missing or empty", path.display());
        }
    }
}

/// If this broke, a head over `limits.max_header_bytes` would be forwarded, or answered
/// by hyper with an empty body and no request id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_head_is_answered_by_the_gateway() {
    let (ups, gw) = crate::harness::start().await;
    let big = "a".repeat(70 * 1024);
    let req = format!("GET /public/x HTTP/1.1\r\nHost: acme.test\r\nAccept: text/html\r\nX-Big: {big}\r\n\r\n");
    let r = &crate::harness::raw(gw.public, req.as_bytes()).await[0];
    assert_eq!(r.status, 431);
    let page = String::from_utf8_lossy(&r.body);
    let id = r.header("x-request-id").expect("x-request-id");
    assert!(page.contains("Request too large") && page.contains(id), "{page}");
    let req = format!("GET /public/x HTTP/1.1\r\nHost: acme.test\r\nX-Big: {big}\r\n\r\n");
    let r = &crate::harness::raw(gw.public, req.as_bytes()).await[0];
    assert_eq!(r.status, 431);
    let json: serde_json::Value = serde_json::from_slice(&r.body).expect("JSON body");
    assert_eq!(json["error"], "headers_too_large", "{json}");
    assert!(json["request_id"].as_str().is_some_and(|id| !id.is_empty()), "{json}");
    assert_eq!(ups.total(), 0, "an oversized head was forwarded");
}

/// If this broke, browsers would get a 401 for the icon on every page load, or a 421
/// page without its stylesheet; and the icon would leak past forward-auth.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_icon_and_stylesheet_need_no_session_nor_tenant() {
    let (ups, gw) = crate::harness::start().await;
    let r = crate::harness::raw_get(gw.public, "acme.test", "/favicon.ico").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("image/svg+xml"));
    assert!(r.body.starts_with(b"<svg"));
    for (path, kind) in [
        ("/.portcullis/style.css", "text/css; charset=utf-8"),
        ("/.portcullis/favicon.svg", "image/svg+xml"),
    ] {
        let r = crate::harness::raw_get(gw.public, "unknown.test", path).await;
        assert_eq!((r.status, r.header("content-type")), (200, Some(kind)), "{path}");
    }
    let r = crate::harness::raw_get(gw.public, "unknown.test", "/.portcullis/login").await;
    assert_eq!(r.status, 421);
    // To forward-auth a 200 means "let it through": the icon is not a pass there.
    let req = "GET /.portcullis/auth HTTP/1.1\r\nHost: acme.test\r\nX-Forwarded-Method: GET\r\nX-Forwarded-Uri: /favicon.ico\r\nConnection: close\r\n\r\n";
    let r = &crate::harness::raw(gw.public, req.as_bytes()).await[0];
    assert_eq!(r.status, 401, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(ups.total(), 0);
}
