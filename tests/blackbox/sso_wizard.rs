//! Self-service SSO through the tenant admin's JSON API (SPEC "Self-service SSO (tenant
//! admin)") against the real `oidc-provider` of [`crate::idp`]: a draft, a test sign-in
//! driven through the IdP's login form, activation (only after a passing test of exactly
//! the draft), the tenant's users signing in with the activated version, an activated
//! "enforce SSO" turning local passwords off (break-glass aside) until a roll-back, a
//! tenant whose `[sso]` is in the policy files (read-only), throttled draft saves, and
//! a tenant kill switch refusing the test sign-in's callback. The client secret never
//! shows in an answer, a page or the log.

use http::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::idp::{Account, Idp, IdpClient};

pub(crate) const HOST: &str = "initech.test";
pub(crate) const SECRET_A: &str = "wizard-secret-alpha-7d1f";
pub(crate) const SECRET_B: &str = "wizard-secret-bravo-93c2";
pub(crate) const WRONG_SECRET: &str = "wizard-secret-wrong-5e80";
pub(crate) const API: &str = "/.portcullis/api/admin/sso";

/// initech (staging, no `[sso]` in the policy files) with an IdP knowing clients `gw-a`
/// and `gw-b` of its callback, a staging operator token, and a signed-in tenant admin.
pub(crate) struct Setup {
    pub(crate) ups: Upstreams,
    pub(crate) idp: Idp,
    pub(crate) gw: Gateway,
    pub(crate) admin: Agent,
    pub(crate) operator_token: String,
    /// Every answer body seen, to check for secrets.
    pub(crate) seen: Vec<String>,
}

pub(crate) async fn setup(accounts: &[Account]) -> Setup {
    let idp_bound = Idp::bind(accounts);
    let operator_token = random_hex(24);
    let op_hash = sha256_hex(operator_token.as_bytes());
    let (ups, gw) = start_with(|f| {
        f.staging_operators = vec![("sven".into(), op_hash)];
        // Where the IdP posts back-channel logouts.
        f.tenant_mut("initech").hosts.push("127.0.0.1".into());
    })
    .await;
    let mut idp = idp_bound;
    let port = gw.public.port();
    let callback = format!("http://{HOST}:{port}/.portcullis/callback");
    let logout = format!("http://127.0.0.1:{port}/.portcullis/backchannel-logout");
    idp.register(&[
        IdpClient::new("gw-a", SECRET_A, &callback).backchannel_logout_uri(&logout),
        IdpClient::new("gw-b", SECRET_B, &callback).backchannel_logout_uri(&logout),
    ]);
    let users = Accounts::open(&gw).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;
    let mut admin = Agent::new(&gw, HOST);
    admin.api_login(&ina).await;
    Setup {
        ups,
        idp,
        gw,
        admin,
        operator_token,
        seen: Vec::new(),
    }
}

/// Opens `start` with `agent` (sent on to the IdP with a 303), signs `user` in at the
/// IdP; returns the authorization URL and the callback path the IdP sends back to.
pub(crate) async fn through_idp(
    idp: &Idp,
    agent: &mut Agent,
    start: &str,
    user: &str,
    password: &str,
) -> (String, String) {
    let r = agent.get(start).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let to_idp = r.header("location").expect("location").to_string();
    let back = idp
        .login(&to_idp, user, password)
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", idp.logs()));
    let back = path_of(&back, &agent.origin());
    (to_idp, back)
}

impl Setup {
    /// A call of the admin's, as a same-origin script; keeps the body.
    pub(crate) async fn call(&mut self, method: Method, path: &str, body: Option<Value>) -> Reply {
        let origin = self.admin.origin();
        let body = body.map(|b| ("application/json", b.to_string().into_bytes()));
        let r = self.admin.send(method, path, &[("origin", &origin)], body).await;
        self.seen.push(r.body.clone());
        r
    }

    pub(crate) async fn put_draft(&mut self, client_id: &str, secret: &str) -> Reply {
        self.put_draft_with(client_id, secret, json!({})).await
    }

    /// Saves a draft with `extra` settings (such as `enforce`) on top of the usual ones.
    pub(crate) async fn put_draft_with(&mut self, client_id: &str, secret: &str, extra: Value) -> Reply {
        let mut body = json!({
            "issuer": self.idp.issuer(), "client_id": client_id, "client_secret": secret,
            "scopes": ["openid", "profile"], "roles_claim": "groups", "admin_group": "initech-admins",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        self.call(Method::PUT, API, Some(body)).await
    }

    /// Saves, tests and activates a version; panics unless it becomes active.
    pub(crate) async fn activate(&mut self, client_id: &str, secret: &str, extra: Value) {
        let r = self.put_draft_with(client_id, secret, extra).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let page = self.test_sign_in("ivy", "pw-ivy").await;
        assert!(page.body.contains("Test sign-in passed"), "{}", page.body);
        let r = self.call(Method::POST, &format!("{API}/activate"), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["active"]["client_id"], client_id, "{}", r.body);
    }

    /// Runs the test sign-in of the draft as `user` at the IdP; returns the callback's
    /// answer (the result page).
    pub(crate) async fn test_sign_in(&mut self, user: &str, password: &str) -> Reply {
        let r = self.call(Method::POST, &format!("{API}/test"), None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        let url = r.json()["url"].as_str().expect("url").to_string();
        let callback = self.idp_round_trip(&url, user, password).await;
        let r = self.admin.get(&callback).await;
        self.seen.push(r.body.clone());
        r
    }

    /// Opens `url` (on the tenant's host) with the admin's browser, signs in at the IdP
    /// and returns the callback path the IdP sends the browser back to.
    pub(crate) async fn idp_round_trip(&mut self, url: &str, user: &str, password: &str) -> String {
        let start = path_of(url, &self.admin.origin());
        let (_, back) = through_idp(&self.idp, &mut self.admin, &start, user, password).await;
        back
    }

    /// A user of initech signing in through `/.portcullis/login/sso`; returns the agent
    /// and the IdP authorization URL it was sent to.
    pub(crate) async fn user_sign_in(&mut self, user: &str, password: &str) -> (Agent, String) {
        let mut a = Agent::new(&self.gw, HOST);
        let (to_idp, back) = through_idp(
            &self.idp,
            &mut a,
            "/.portcullis/login/sso?rd=%2Fapp%2Fdata",
            user,
            password,
        )
        .await;
        let r = a.get(&back).await;
        assert_eq!((r.status, r.header("location")), (303, Some("/app/data")), "{}", r.body);
        (a, to_idp)
    }

    pub(crate) async fn view(&mut self) -> Value {
        let r = self.call(Method::GET, API, None).await;
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    }
}

/// `url` without the origin it starts with (the harness's agents take paths).
pub(crate) fn path_of(url: &str, origin: &str) -> String {
    url.strip_prefix(origin)
        .unwrap_or_else(|| panic!("{url} is not on {origin}"))
        .to_string()
}

pub(crate) fn ivy() -> Account {
    Account::new("ivy", "pw-ivy")
        .groups(&["initech-admins"])
        .amr(&["pwd", "otp"])
}

/// If this broke, a tenant admin could not set up SSO without an operator, could
/// activate settings that never signed anyone in (a wrong secret, or an edit after the
/// test), could not undo a bad version, a test sign-in would leave a session, or the
/// secret would be shown again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_admin_tests_activates_and_rolls_back_sso() {
    let ned = Account::new("ned", "pw-ned").amr(&["pwd", "otp"]);
    let mut s = setup(&[ivy(), ned]).await;

    let v = s.view().await;
    assert_eq!(v["status"], "none", "{v}");
    let port = s.gw.public.port();
    assert_eq!(v["redirect_uri"], format!("http://{HOST}:{port}/.portcullis/callback"));
    let r = s.call(Method::DELETE, API, None).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, PUT")), "{}", r.body);
    let r = s.call(Method::GET, &format!("{API}/activate"), None).await;
    assert_eq!((r.status, r.header("allow")), (405, Some("POST")), "{}", r.body);
    let r = s
        .admin
        .send(
            Method::POST,
            &format!("{API}/activate"),
            &[("origin", "http://evil.test")],
            None,
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);

    // Discovery failures name the problem.
    let unreachable = json!({"issuer": "http://127.0.0.1:1", "client_id": "gw-a", "client_secret": SECRET_A});
    let r = s.call(Method::PUT, API, Some(unreachable)).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some("unreachable")),
        "{}",
        r.body
    );
    let r = s.call(Method::POST, &format!("{API}/activate"), None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("no_draft")),
        "{}",
        r.body
    );

    // A wrong secret: the test fails with the IdP's error in plain words.
    let r = s.put_draft("gw-a", WRONG_SECRET).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let saved = r.json();
    assert_eq!(saved["status"], "draft");
    assert_eq!(saved["discovery"]["issuer"], s.idp.issuer());
    assert_eq!(
        saved["backchannel_logout_uri"],
        format!("http://{HOST}:{port}/.portcullis/backchannel-logout")
    );
    let admin_session = s.admin.session("staging");
    let page = s.test_sign_in("ivy", "pw-ivy").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("Test sign-in failed"), "{}", page.body);
    assert!(page.body.contains("invalid_client"), "{}", page.body);
    assert_eq!(
        s.admin.session("staging"),
        admin_session,
        "a test sign-in sets no session"
    );
    let v = s.view().await;
    assert_eq!(v["test"]["passed"], false, "{v}");
    assert!(
        v["test"]["error"]
            .as_str()
            .unwrap()
            .contains("the IdP answered invalid_client"),
        "{v}"
    );
    let r = s.call(Method::POST, &format!("{API}/activate"), None).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("not_tested")),
        "{}",
        r.body
    );

    // The right secret passes, with the claims and the mapped roles.
    assert_eq!(s.put_draft("gw-a", SECRET_A).await.status, 200);
    let page = s.test_sign_in("ivy", "pw-ivy").await;
    assert!(page.body.contains("Test sign-in passed"), "{}", page.body);
    assert!(page.body.contains("tenant-admin"), "{}", page.body);
    let v = s.view().await;
    assert_eq!(v["test"]["passed"], true, "{v}");
    assert_eq!(v["test"]["roles"], json!(["initech-admins", "tenant-admin"]), "{v}");
    assert_eq!(v["test"]["claims"]["sub"], "ivy", "{v}");
    assert!(
        v["test"]["claims"].get("nonce").is_none(),
        "protocol values are not shown: {v}"
    );
    // No one signs in through SSO before activation.
    let r = Agent::new(&s.gw, HOST).get("/.portcullis/login/sso").await;
    assert_eq!(r.status, 404, "{}", r.body);

    // An edit after the test clears it.
    assert_eq!(s.put_draft("gw-a", SECRET_A).await.status, 200);
    let r = s.call(Method::POST, &format!("{API}/activate"), None).await;
    assert_eq!(r.status, 409, "{}", r.body);
    s.test_sign_in("ivy", "pw-ivy").await;
    let r = s.call(Method::POST, &format!("{API}/activate"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"]["client_id"], "gw-a", "{}", r.body);

    // The tenant's users now sign in through SSO, with the mapped roles.
    let (mut user, to_idp) = s.user_sign_in("ivy", "pw-ivy").await;
    assert!(to_idp.contains("client_id=gw-a"), "{to_idp}");
    let me = user.get("/.portcullis/api/whoami").await.json();
    assert_eq!(me["subject"], "ivy", "{me}");
    assert_eq!(me["roles"], json!(["initech-admins", "tenant-admin"]), "{me}");

    // The wizard's provider is the tenant's `sso` for account kill switches too.
    let breaker = "/.portcullis/api/admin/accounts/ivy/breaker?idp=sso";
    let r = s
        .call(Method::PUT, breaker, Some(json!({"reason": "lost laptop"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        user.get("/.portcullis/api/whoami").await.status,
        423,
        "the SSO account is cut off"
    );
    let r = s.call(Method::DELETE, breaker, None).await;
    assert_eq!(r.status, 200, "{}", r.body);

    // A second version (the secret kept when not sent again is covered by the service's
    // tests), then roll back to the first.
    assert_eq!(s.put_draft("gw-b", SECRET_B).await.status, 200);
    s.test_sign_in("ivy", "pw-ivy").await;
    assert_eq!(s.call(Method::POST, &format!("{API}/activate"), None).await.status, 200);
    let (_, to_idp) = s.user_sign_in("ivy", "pw-ivy").await;
    assert!(to_idp.contains("client_id=gw-b"), "{to_idp}");
    let r = s.call(Method::POST, &format!("{API}/rollback"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"]["client_id"], "gw-a", "{}", r.body);
    let (mut back, to_idp) = s.user_sign_in("ivy", "pw-ivy").await;
    assert!(to_idp.contains("client_id=gw-a"), "{to_idp}");
    let v = s.view().await;
    assert_eq!(v["status"], "active", "{v}");
    assert_eq!(v["active"]["client_id"], "gw-a", "{v}");
    assert_eq!(v["active"]["client_secret_set"], true, "{v}");

    // Other tenants' admins see nothing of it; a user without the role may not look.
    let users = Accounts::open(&s.gw).await;
    let gus = users.create("globex", "gus", &["tenant-admin"], true).await;
    let mut globex_admin = Agent::new(&s.gw, "globex.test");
    globex_admin.api_login(&gus).await;
    let r = globex_admin.get(API).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "none", "{}", r.body);
    assert_eq!(r.json()["versions"], json!([]), "{}", r.body);
    let stolen = globex_admin.cookie_header().unwrap();
    let r = Agent::new(&s.gw, HOST)
        .send(Method::GET, API, &[("cookie", &stolen)], None)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let r = back.get(API).await;
    assert_eq!(r.status, 200, "ivy is in the admin group: {}", r.body);
    let (mut plain, _) = s.user_sign_in("ned", "pw-ned").await;
    let me = plain.get("/.portcullis/api/whoami").await.json();
    assert_eq!(me["roles"], json!([]), "{me}");
    let r = plain.get(API).await;
    assert_eq!(r.status, 403, "{}", r.body);

    // The IdP ends ivy's sessions through the back-channel logout URI the wizard shows.
    assert_eq!(back.get("/.portcullis/api/whoami").await.status, 200);
    let report = s.idp.backchannel_logout("ivy").await;
    // The rolled-back client's logout tokens (audience gw-b) are refused: only the
    // active version's client counts.
    let errors = report["errors"].as_array().cloned().unwrap_or_default();
    assert!(
        errors.iter().all(|e| e.as_str().unwrap().starts_with("gw-b:")),
        "{report}"
    );
    assert!(
        report["notified"]
            .as_array()
            .unwrap()
            .iter()
            .any(|n| n["client_id"] == "gw-a"),
        "{report}"
    );
    assert_eq!(back.get("/.portcullis/api/whoami").await.status, 401, "{report}");

    // The secrets never come back, in answers, pages or the log.
    let log = s.gw.stdout();
    for secret in [SECRET_A, SECRET_B, WRONG_SECRET] {
        assert!(!log.contains(secret), "{secret} in the log");
        for body in &s.seen {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
}

/// `user`'s password step through the JSON API, from a fresh browser.
async fn api_password(gw: &Gateway, user: &TestUser) -> Reply {
    Agent::new(gw, HOST).api_password_step(user, None).await
}

/// `user`'s password step through the sign-in page (`?local=1`, the break-glass form).
async fn page_password(gw: &Gateway, user: &TestUser) -> Reply {
    let mut a = Agent::new(gw, HOST);
    let r = a.get("/.portcullis/login?local=1").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let csrf = r.set_cookie("__Host-portcullis-staging-csrf").expect("CSRF cookie");
    a.post_form(
        "/.portcullis/login",
        &[
            ("csrf", &csrf.value),
            ("username", &user.username),
            ("password", &user.password),
            ("rd", "/app/data"),
        ],
    )
    .await
}

const SSO_LINK: &str = "href=\"/.portcullis/login/sso?rd=%2Fapp\"";

/// If this broke, "Enforce SSO" in an activated wizard version would not turn local
/// passwords off (or would lock out the break-glass accounts), the sign-in page would
/// not offer or go to the IdP, or a roll-back would leave passwords off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_activated_version_that_enforces_sso_turns_local_passwords_off() {
    let mut s = setup(&[ivy()]).await;
    let users = Accounts::open(&s.gw).await;
    let lou = users.create("initech", "lou", &[], true).await;
    let root = users.create("initech", "root", &["tenant-admin"], true).await;

    // No SSO yet: a plain password form.
    let r = Agent::new(&s.gw, HOST).get("/.portcullis/login?rd=%2Fapp").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(!r.body.contains("/.portcullis/login/sso"), "{}", r.body);

    // A version without enforce: SSO offered next to the form, passwords still work.
    s.activate("gw-b", SECRET_B, json!({})).await;
    let r = Agent::new(&s.gw, HOST).get("/.portcullis/login?rd=%2Fapp").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(SSO_LINK), "{}", r.body);
    assert!(r.body.contains("name=\"password\""), "{}", r.body);
    let r = api_password(&s.gw, &lou).await;
    assert_eq!((r.status, r.json()["next"].as_str()), (200, Some("mfa")), "{}", r.body);

    // A version that enforces SSO: only the break-glass account keeps its password.
    s.activate("gw-a", SECRET_A, json!({"enforce": true, "break_glass": ["root"]}))
        .await;
    let r = api_password(&s.gw, &lou).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (403, Some("sso_required")),
        "{}",
        r.body
    );
    assert!(r.set_cookie("__Host-portcullis-staging-pre").is_none());
    let r = page_password(&s.gw, &lou).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("identity provider"), "{}", r.body);
    assert!(
        r.body.contains(SSO_LINK.replace("%2Fapp", "%2Fapp%2Fdata").as_str()),
        "{}",
        r.body
    );
    assert!(r.set_cookie("__Host-portcullis-staging-pre").is_none());
    let r = api_password(&s.gw, &root).await;
    assert_eq!((r.status, r.json()["next"].as_str()), (200, Some("mfa")), "{}", r.body);
    let r = page_password(&s.gw, &root).await;
    assert_eq!(r.status, 303, "{}", r.body);
    assert!(
        r.set_cookie("__Host-portcullis-staging-pre").is_some(),
        "{:?}",
        r.headers
    );
    let r = Agent::new(&s.gw, HOST).get("/.portcullis/login?rd=%2Fapp").await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/.portcullis/login/sso?rd=%2Fapp")),
        "{}",
        r.body
    );
    let (_, to_idp) = s.user_sign_in("ivy", "pw-ivy").await;
    assert!(to_idp.contains("client_id=gw-a"), "{to_idp}");

    // Rolled back to the version without enforce: passwords work again.
    let r = s.call(Method::POST, &format!("{API}/rollback"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"]["client_id"], "gw-b", "{}", r.body);
    let r = api_password(&s.gw, &lou).await;
    assert_eq!((r.status, r.json()["next"].as_str()), (200, Some("mfa")), "{}", r.body);
    let r = page_password(&s.gw, &lou).await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = Agent::new(&s.gw, HOST).get("/.portcullis/login?rd=%2Fapp").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains(SSO_LINK), "{}", r.body);
}

/// If this broke, a kill switch on the tenant would let a test sign-in through (and
/// record it), or saving drafts (each an outbound request) would be unlimited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_kill_switch_blocks_the_test_sign_in_and_saves_are_throttled() {
    let mut s = setup(&[ivy()]).await;
    assert_eq!(s.put_draft("gw-a", SECRET_A).await.status, 200);
    let r = s.call(Method::POST, &format!("{API}/test"), None).await;
    let url = r.json()["url"].as_str().expect("url").to_string();
    let callback = s.idp_round_trip(&url, "ivy", "pw-ivy").await;

    let r =
        s.gw.client()
            .put(s.gw.admin_url("/v1/tenants/initech/breaker"))
            .bearer_auth(&s.operator_token)
            .json(&json!({"reason": "incident"}))
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    let mut browser = Agent::new(&s.gw, HOST);
    browser.cookies = s.admin.cookies.clone();
    let r = browser.get(&callback).await;
    assert_eq!(r.status, 423, "{}", r.body);
    assert_eq!(
        browser.session("staging"),
        s.admin.session("staging"),
        "no session from a blocked callback"
    );
    let users = Accounts::open(&s.gw).await;
    let draft = users.store("staging").get_sso_draft("initech").await.unwrap().unwrap();
    assert!(draft.test.is_none(), "a blocked callback recorded a test");
    let r =
        s.gw.client()
            .delete(s.gw.admin_url("/v1/tenants/initech/breaker"))
            .bearer_auth(&s.operator_token)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);

    // Draft saves: 20 a minute per tenant (one was made above), then 429. Input refused
    // before any request is made is free.
    let free = json!({"issuer": "ftp://idp.test", "client_id": "gw-a", "client_secret": "x"});
    let bad = json!({"issuer": "http://127.0.0.1:1", "client_id": "gw-a", "client_secret": "x"});
    let ina = users.create("initech", "ina2", &["tenant-admin"], true).await;
    s.admin = Agent::new(&s.gw, HOST);
    s.admin.api_login(&ina).await;
    for _ in 0..25 {
        let r = s.call(Method::PUT, API, Some(free.clone())).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some("invalid_issuer")),
            "{}",
            r.body
        );
    }
    for _ in 0..19 {
        let r = s.call(Method::PUT, API, Some(bad.clone())).await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (400, Some("unreachable")),
            "{}",
            r.body
        );
    }
    let r = s.call(Method::PUT, API, Some(bad)).await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (429, Some("throttled")),
        "{}",
        r.body
    );
    assert!(r.header("retry-after").is_some());
}

/// If this broke, a tenant admin could change SSO that the policy files manage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_set_in_the_policy_files_is_read_only() {
    let (_ups, gw) = start_with(|f| {
        f.tenant_mut("initech").routes.push_str(
            "\n[sso]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"gw-policy\"\nclient_secret = \"inline:policy-secret-4411\"\n",
        )
    })
    .await;
    let users = Accounts::open(&gw).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;
    let mut admin = Agent::new(&gw, HOST);
    admin.api_login(&ina).await;
    let r = admin.get(API).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["status"], "policy", "{}", r.body);
    assert_eq!(r.json()["policy"]["client_id"], "gw-policy", "{}", r.body);
    assert!(!r.body.contains("policy-secret-4411"), "{}", r.body);
    let origin = admin.origin();
    let body = json!({"issuer": "http://127.0.0.1:1", "client_id": "x", "client_secret": "y"}).to_string();
    let r = admin
        .send(
            Method::PUT,
            API,
            &[("origin", &origin)],
            Some(("application/json", body.into_bytes())),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (409, Some("managed_by_policy")),
        "{}",
        r.body
    );
    for step in ["test", "activate", "rollback"] {
        let r = admin
            .send(Method::POST, &format!("{API}/{step}"), &[("origin", &origin)], None)
            .await;
        assert_eq!(
            (r.status, r.json()["error"].as_str()),
            (409, Some("managed_by_policy")),
            "{step}: {}",
            r.body
        );
    }
}
