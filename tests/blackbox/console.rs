//! The operator console (`/console/` on the admin listener, SPEC "Operator console and
//! observability"): sign-in with an operator token into a cookie of its own, CSRF and
//! `Origin` checks on every POST, the token's tier bounding what is shown and done, the
//! tenant pages' hardening headers, and a tenant reset through four eyes, every step
//! audited with system `console`.

use std::time::Duration;

use serde_json::Value;

use crate::harness::*;

/// A gateway with two prod operators and one staging operator.
struct Env {
    gw: Gateway,
    /// olivia (prod).
    prod_a: String,
    /// oscar (prod).
    prod_b: String,
    /// sam (staging).
    staging: String,
    _ups: Upstreams,
}

async fn env() -> Env {
    let (prod_a, prod_b, staging) = (random_hex(24), random_hex(24), random_hex(24));
    let (ups, gw) = start_with(|f| {
        f.prod_operators = vec![
            ("olivia".into(), sha256_hex(prod_a.as_bytes())),
            ("oscar".into(), sha256_hex(prod_b.as_bytes())),
        ];
        f.staging_operators = vec![("sam".into(), sha256_hex(staging.as_bytes()))];
    })
    .await;
    Env {
        gw,
        prod_a,
        prod_b,
        staging,
        _ups: ups,
    }
}

/// A browser-like console client: no redirects followed, its cookie kept by hand. Other
/// test modules that need the console (`review_fixes`) use it too.
pub(crate) struct Console {
    http: reqwest::Client,
    base: String,
    cookie: Option<String>,
}

pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    pub(crate) fn location(&self) -> &str {
        self.headers
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// The page's CSRF token (the hidden field of its forms).
    fn csrf(&self) -> String {
        let start = self
            .body
            .find("name=\"csrf\" value=\"")
            .unwrap_or_else(|| panic!("no csrf field: {}", self.body))
            + "name=\"csrf\" value=\"".len();
        let end = self.body[start..].find('"').unwrap() + start;
        self.body[start..end].to_string()
    }
}

impl Console {
    /// A console client of `gw`'s admin listener, not signed in.
    pub(crate) fn new(gw: &Gateway) -> Self {
        Console {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: format!("http://{}", gw.admin),
            cookie: None,
        }
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> Answer {
        let req = match &self.cookie {
            Some(c) => req.header("cookie", c),
            None => req,
        };
        let r = req.send().await.unwrap();
        Answer {
            status: r.status().as_u16(),
            headers: r.headers().clone(),
            body: r.text().await.unwrap(),
        }
    }

    pub(crate) async fn get(&self, path: &str) -> Answer {
        self.send(self.http.get(format!("{}{path}", self.base))).await
    }

    /// A form POST with the given `Origin` (None: none sent, as some clients do).
    async fn post_from(&self, path: &str, fields: &[(&str, &str)], origin: Option<&str>) -> Answer {
        let body: String = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        let mut req = self
            .http
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        if let Some(o) = origin {
            req = req.header("origin", o);
        }
        self.send(req).await
    }

    /// A form POST from a console page (its own `Origin`).
    pub(crate) async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Answer {
        let origin = self.base.clone();
        self.post_from(path, fields, Some(&origin)).await
    }

    /// Signs in; panics unless the token is accepted. Returns the `Set-Cookie` line.
    pub(crate) async fn sign_in(&mut self, token: &str) -> String {
        let r = self.post("/console/signin", &[("token", token)]).await;
        assert_eq!(r.status, 303, "{}", r.body);
        assert_eq!(r.location(), "/console/");
        let set = r.headers["set-cookie"].to_str().unwrap().to_string();
        self.cookie = Some(set.split(';').next().unwrap().to_string());
        set
    }

    /// The CSRF token of the signed-in console.
    pub(crate) async fn csrf(&self) -> String {
        let page = self.get("/console/breakers").await;
        assert_eq!(page.status, 200, "{}", page.body);
        page.csrf()
    }
}

impl Env {
    async fn status(&self, host: &str) -> Value {
        let r = raw_get(self.gw.public, host, "/.portcullis/status").await;
        assert_eq!(r.status, 200);
        serde_json::from_slice(&r.body).unwrap()
    }

    async fn api(&self, path: &str, token: &str) -> Value {
        let r = reqwest::Client::builder()
            .no_proxy()
            .build()
            .unwrap()
            .get(self.gw.admin_url(path))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200, "{path}");
        r.json().await.unwrap()
    }

    /// The audit records of `action` in prod.
    async fn audit(&self, action: &str) -> Vec<Value> {
        let v = self.api(&format!("/v1/audit?action={action}"), &self.prod_a).await;
        v.as_array().unwrap().clone()
    }
}

/// If this broke, a wrong token (or none, or an empty one) would open the console, or a
/// refused sign-in would still set a cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_is_refused() {
    let env = env().await;
    let console = Console::new(&env.gw);
    let first = console.get("/console/").await;
    assert_eq!(first.status, 303, "signed out: to the sign-in page");
    assert_eq!(first.location(), "/console/signin");
    let wrong = format!("{}x", env.prod_a);
    for token in [wrong.as_str(), "", "   ", &env.prod_a[..10]] {
        let r = console.post("/console/signin", &[("token", token)]).await;
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert!(r.body.contains("not an operator token"), "{}", r.body);
        assert!(!r.headers.contains_key("set-cookie"), "{token:?}");
    }
    // A forged cookie opens nothing either.
    let mut forged = Console::new(&env.gw);
    forged.cookie = Some(format!("portcullis-console={}", random_hex(32)));
    assert_eq!(forged.get("/console/").await.status, 303);
    assert!(
        !env.gw.security_events("login").is_empty(),
        "refusals are security events"
    );
}

/// If this broke, the console cookie could be read by scripts or sent cross-site, would
/// carry the operator token itself, or would survive sign-out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cookie_is_httponly_strict_and_holds_no_token() {
    let env = env().await;
    let mut console = Console::new(&env.gw);
    let set = console.sign_in(&env.prod_a).await;
    assert!(set.starts_with("portcullis-console="), "{set}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(flag), "{flag} missing: {set}");
    }
    assert!(!set.contains(&env.prod_a), "the cookie holds the token: {set}");
    let home = console.get("/console/").await;
    assert_eq!(home.status, 200, "{}", home.body);
    assert!(home.body.contains("operator:olivia"), "{}", home.body);

    let csrf = home.csrf();
    let out = console.post("/console/signout", &[("csrf", &csrf)]).await;
    assert_eq!(out.status, 303);
    assert!(out.headers["set-cookie"].to_str().unwrap().contains("Max-Age=0"));
    // The old cookie value is dead on the server too, not only in the browser.
    assert_eq!(console.get("/console/").await.status, 303);
    let signins = env.audit("console.signin").await;
    assert_eq!(signins.len(), 1, "{signins:?}");
    assert_eq!(signins[0]["system"], "console");
    assert_eq!(env.audit("console.signout").await.len(), 1);
}

/// If this broke, a page of another site (or a script without the session's token) could
/// trip a tenant through an operator's browser.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_post_without_the_right_csrf_token_or_origin_changes_nothing() {
    let env = env().await;
    let mut console = Console::new(&env.gw);
    console.sign_in(&env.prod_a).await;
    let csrf = console.csrf().await;
    let trip = |csrf: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("tenant".into(), "acme".into()),
            ("reason".into(), "csrf test".into()),
            ("mode".into(), "trip".into()),
        ]
    };
    let wrong = random_hex(32);
    for (name, form, origin) in [
        ("no csrf", trip("")[1..].to_vec(), Some(console.base.clone())),
        ("empty csrf", trip(""), Some(console.base.clone())),
        ("wrong csrf", trip(&wrong), Some(console.base.clone())),
        ("foreign origin", trip(&csrf), Some("http://evil.example".to_string())),
    ] {
        let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let r = console
            .post_from("/console/breakers/trip", &pairs, origin.as_deref())
            .await;
        assert_eq!(r.status, 403, "{name}: {}", r.body);
    }
    assert_eq!(env.status("acme.test").await["status"], "ok");
    let breakers = env.api("/v1/breakers", &env.prod_a).await;
    assert_eq!(breakers["breakers"].as_array().unwrap().len(), 0, "{breakers}");
    assert!(env.audit("breaker.trip").await.is_empty());

    // The same form with the session's token trips: the refusals above were the token's.
    let form = trip(&csrf);
    let pairs: Vec<(&str, &str)> = form.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let r = console.post("/console/breakers/trip", &pairs).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(env.status("acme.test").await["status"], "suspended");
}

/// If this broke, a staging operator would see prod tenants in the console, or act on
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_staging_token_sees_no_prod_tenant() {
    let env = env().await;
    let mut console = Console::new(&env.gw);
    console.sign_in(&env.staging).await;
    for path in [
        "/console/",
        "/console/breakers",
        "/console/upstreams",
        "/console/sessions",
    ] {
        let page = console.get(path).await;
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains("initech"), "{path}: {}", page.body);
        for prod in ["acme", "globex", "Acme Corp"] {
            assert!(!page.body.contains(prod), "{path} shows {prod}: {}", page.body);
        }
    }
    let csrf = console.csrf().await;
    let r = console
        .post(
            "/console/breakers/trip",
            &[("csrf", &csrf), ("tenant", "acme"), ("reason", "x"), ("mode", "trip")],
        )
        .await;
    assert_eq!(r.status, 404, "{}", r.body);
    assert_eq!(env.status("acme.test").await["status"], "ok");
    assert_eq!(console.get("/console/sessions?tenant=acme").await.status, 404);
    // Logs go through a non-blocking writer: give the second event up to 5 s to appear.
    let by_sam =
        |events: &[serde_json::Value]| events.iter().filter(|e| e.to_string().contains("operator:sam")).count();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let mut events = env.gw.security_events("cross_tier");
    while by_sam(&events) < 2 && std::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        events = env.gw.security_events("cross_tier");
    }
    assert!(
        by_sam(&events) >= 2,
        "each reach into prod is a security event: {events:?}"
    );
}

/// If this broke, console pages would lack the tenant pages' protections (framing,
/// sniffing, caching, foreign content).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_carry_the_tenant_pages_hardening_headers() {
    let env = env().await;
    let tenant_page = raw_get(env.gw.public, "acme.test", "/.portcullis/login").await;
    assert_eq!(tenant_page.status, 200);
    let mut console = Console::new(&env.gw);
    let signin = console.get("/console/signin").await;
    let refused = console.post("/console/signin", &[("token", "nope")]).await;
    console.sign_in(&env.prod_a).await;
    let home = console.get("/console/").await;
    let not_found = console.get("/console/incidents/INC-none").await;
    assert_eq!(not_found.status, 404);
    let no_page = console.get("/console/no-such-page").await;
    assert_eq!(no_page.status, 404);
    assert!(no_page.body.contains("Request id"), "a console page: {}", no_page.body);
    for name in [
        "content-security-policy",
        "x-frame-options",
        "x-content-type-options",
        "referrer-policy",
        "cache-control",
    ] {
        let expected = tenant_page
            .header(name)
            .unwrap_or_else(|| panic!("tenant page without {name}"));
        for (what, page) in [
            ("sign-in", &signin),
            ("refusal", &refused),
            ("home", &home),
            ("404", &not_found),
        ] {
            assert_eq!(
                page.headers.get(name).and_then(|v| v.to_str().ok()),
                Some(expected),
                "{what}: {name}"
            );
        }
    }
    // The stylesheet comes from the console itself (the CSP allows only 'self').
    let css = console.get("/console/style.css").await;
    assert_eq!(css.status, 200);
    assert!(home.body.contains("href=\"/console/style.css\""));
    assert!(
        !home.body.contains("http://") && !home.body.contains("https://"),
        "external asset"
    );
}

/// If this broke, one operator alone could lift a tenant's kill switch from the console,
/// a dry run would trip, or console actions would be audited as another system.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_reset_needs_a_second_operator() {
    let env = env().await;
    let mut a = Console::new(&env.gw);
    a.sign_in(&env.prod_a).await;
    let csrf = a.csrf().await;
    let dry = a
        .post(
            "/console/breakers/trip",
            &[
                ("csrf", &csrf),
                ("tenant", "acme"),
                ("reason", "drill"),
                ("mode", "dry_run"),
            ],
        )
        .await;
    assert_eq!(dry.status, 200, "{}", dry.body);
    assert!(dry.body.contains("Dry run: tenant acme"), "{}", dry.body);
    assert_eq!(env.status("acme.test").await["status"], "ok", "a dry run trips nothing");

    let r = a
        .post(
            "/console/breakers/trip",
            &[
                ("csrf", &csrf),
                ("tenant", "acme"),
                ("reason", "leaked keys"),
                ("message", "Back soon."),
                ("incident", "INC-9"),
                ("mode", "trip"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let status = env.status("acme.test").await;
    assert_eq!(status["status"], "suspended");
    assert_eq!(status["message"], "Back soon.");

    let r = a
        .post(
            "/console/breakers/reset",
            &[("csrf", &csrf), ("scope", "tenant:acme"), ("reason", "keys rotated")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert_eq!(r.location(), "/console/changes?done=proposed");
    assert_eq!(
        env.status("acme.test").await["status"],
        "suspended",
        "proposed, not applied"
    );

    let changes = env.api("/v1/changes", &env.prod_a).await;
    let change = changes["changes"]
        .as_array()
        .or_else(|| changes.as_array())
        .and_then(|all| all.iter().find(|c| c["kind"] == "tenant.breaker_reset"))
        .unwrap_or_else(|| panic!("no reset proposal: {changes}"))
        .clone();
    let id = change["id"].as_str().unwrap();
    let digest = change["digest"].as_str().unwrap();
    let page = a.get("/console/changes").await;
    assert!(page.body.contains(digest), "the page shows the digest");
    let own = a
        .post(
            &format!("/console/changes/{id}/approve"),
            &[("csrf", &csrf), ("digest", digest)],
        )
        .await;
    assert_eq!(own.status, 403, "self-approval: {}", own.body);
    assert_eq!(env.status("acme.test").await["status"], "suspended");

    let mut b = Console::new(&env.gw);
    b.sign_in(&env.prod_b).await;
    let csrf_b = b.csrf().await;
    let stale = b
        .post(
            &format!("/console/changes/{id}/approve"),
            &[("csrf", &csrf_b), ("digest", &"0".repeat(64))],
        )
        .await;
    assert_eq!(stale.status, 409, "another digest than the change's: {}", stale.body);
    let ok = b
        .post(
            &format!("/console/changes/{id}/approve"),
            &[("csrf", &csrf_b), ("digest", digest)],
        )
        .await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert_eq!(env.status("acme.test").await["status"], "ok");

    for action in [
        "breaker.trip",
        "breaker.drill",
        "change.propose",
        "change.approve",
        "breaker.reset",
    ] {
        let records = env.audit(action).await;
        assert!(!records.is_empty(), "no {action}");
        assert!(
            records.iter().all(|r| r["system"] == "console"),
            "{action} not audited as console: {records:?}"
        );
    }
    let timeline = env.api("/v1/incidents/INC-9", &env.prod_a).await;
    let kinds: Vec<&str> = timeline["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .filter(|k| *k == "trip" || *k == "reset")
        .collect();
    assert_eq!(kinds, ["trip", "reset"], "{timeline}");
    let page = b.get("/console/incidents/INC-9").await;
    assert_eq!(page.status, 200);
    let (trip_at, reset_at) = (page.body.find(">trip<").unwrap(), page.body.find(">reset<").unwrap());
    assert!(trip_at < reset_at, "oldest first");
}

/// The screenshots `tests/browser/console.mjs` must leave, in step order.
const BROWSER_SCREENSHOTS: [&str; 9] = [
    "console-01-signin.png",
    "console-02-tenants.png",
    "console-03-dry-run.png",
    "console-04-tripped.png",
    "console-05-status-suspended.png",
    "console-06-reset-proposed.png",
    "console-07-reset-approved.png",
    "console-08-status-ok.png",
    "console-09-timeline.png",
];

/// If this broke, an operator could not run an incident from the console in a real
/// browser: sign in, trip acme with INC-7 and a message users then see, have the reset
/// approved by a second operator, and read the timeline. Real Chromium (playwright-core)
/// against `portcullis demo`; screenshots in `target/browser-screenshots/console-*.png`.
#[test]
fn an_incident_walked_through_the_console_in_a_browser() {
    use std::fs;
    use std::path::{Path, PathBuf};

    use crate::browser::{Demo, run_node_script};

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests").join("browser");
    assert!(
        browser_dir.join("node_modules").join("playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in tests/browser (bash .ci/run does)"
    );
    assert!(
        Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install -y chromium` (bash .ci/run does)"
    );
    let out = root.join("target").join("browser-screenshots");
    fs::create_dir_all(&out).expect("create screenshot folder");
    // Only this test's files: other browser tests write there too, maybe at the same time.
    for name in BROWSER_SCREENSHOTS {
        let _ = fs::remove_file(out.join(name));
    }

    let mut demo = Demo::start();
    let info = demo.wait_ready();
    let config_path = out.join("console-config.json");
    fs::write(
        &config_path,
        serde_json::json!({ "demo": info, "out_dir": out }).to_string(),
    )
    .expect("write console-config.json");
    let (status, output) = run_node_script(
        &browser_dir.join("console.mjs"),
        &[config_path.as_os_str()],
        &out.join("console.log"),
        Duration::from_secs(180),
    );
    let status = status.unwrap_or_else(|| panic!("console.mjs did not finish in time\n{output}"));
    assert!(
        status.success(),
        "console.mjs failed ({status}); screenshots in {}\n{output}\n{}",
        out.display(),
        demo.logs().lines().rev().take(30).collect::<Vec<_>>().join("\n"),
    );
    for name in BROWSER_SCREENSHOTS {
        let path = out.join(name);
        let size = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        assert!(size > 0, "screenshot {} is missing or empty", path.display());
    }
}

/// If this broke, an operator could not find a user's sessions or end one from the
/// console, the end would not be audited as the console's, or the audit log's filters
/// would not filter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_are_searched_and_revoked_and_the_audit_log_filtered() {
    let env = env().await;
    let accounts = Accounts::open(&env.gw).await;
    accounts.insert_sessions("acme", 3).await;
    let mut console = Console::new(&env.gw);
    console.sign_in(&env.prod_a).await;

    let found = console.get("/console/sessions?tenant=acme&user=BULK1").await;
    assert_eq!(found.status, 200, "{}", found.body);
    assert!(
        found.body.contains("bulk1") && !found.body.contains("bulk2"),
        "{}",
        found.body
    );
    let start = found.body.find("name=\"id\" value=\"").unwrap() + "name=\"id\" value=\"".len();
    let id = found.body[start..start + 16].to_string();
    let csrf = found.csrf();
    let r = console
        .post(
            "/console/sessions/revoke",
            &[("csrf", &csrf), ("tenant", "acme"), ("id", &id)],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let after = console.get("/console/sessions?tenant=acme&user=bulk1").await;
    assert!(after.body.contains("No live session matches."), "{}", after.body);
    let all = console.get("/console/sessions?tenant=acme").await;
    assert!(
        all.body.contains("bulk0") && all.body.contains("bulk2"),
        "only that one ended"
    );
    // The same id again (ended) and a staging tenant's sessions are not found.
    let again = console
        .post(
            "/console/sessions/revoke",
            &[("csrf", &csrf), ("tenant", "acme"), ("id", &id)],
        )
        .await;
    assert_eq!(again.status, 404);
    let other = console
        .post(
            "/console/sessions/revoke",
            &[("csrf", &csrf), ("tenant", "initech"), ("id", &id)],
        )
        .await;
    assert_eq!(other.status, 404);

    let revokes = env.audit("session.revoke").await;
    assert_eq!(revokes.len(), 1, "{revokes:?}");
    assert_eq!(revokes[0]["system"], "console");
    assert_eq!(revokes[0]["actor"], "operator:olivia");

    let filtered = console.get("/console/audit?action=session.revoke&tenant=acme").await;
    assert_eq!(filtered.status, 200);
    assert!(
        filtered.body.contains("<code>session.revoke</code>"),
        "{}",
        filtered.body
    );
    assert!(
        !filtered.body.contains("<code>console.signin</code>"),
        "{}",
        filtered.body
    );
    let unfiltered = console.get("/console/audit").await;
    assert!(unfiltered.body.contains("<code>console.signin</code>"));
    let future = console.get("/console/audit?since=2999-01-01T00:00:00Z").await;
    assert!(future.body.contains("No audit record matches."), "{}", future.body);
    assert_eq!(console.get("/console/audit?since=yesterday").await.status, 400);
}
