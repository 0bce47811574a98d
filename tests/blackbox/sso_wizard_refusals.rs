//! What the self-service SSO wizard refuses (issue 15's negative cases), through the tenant
//! admin's JSON API of the real binary, with a version already active through the real
//! `oidc-provider` of [`crate::idp`]: a wrong, unreachable or lying issuer, an IdP without
//! PKCE S256 or the code flow, and (production tier) a loopback issuer refused before any
//! connection; each refusal names its problem and leaves the active version exactly as it
//! was, with users still signing in through it. Also: the wizard's audit records never
//! hold the client secret, another tenant's account breakers answer like none, and an
//! operator (admin API and CLI) names a wizard tenant's SSO accounts with `idp=sso`.
//!
//! Discovery documents that a real IdP never serves come from [`FakeDiscovery`], a fake
//! named as such; everything else is the real thing.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};

use crate::cli::portcullis;
use crate::harness::*;
use crate::sso_wizard::{API, HOST, SECRET_A, SECRET_B, Setup, WRONG_SECRET, ivy, setup};

/// What the API says of an issuer where nothing listens.
const UNREACHABLE: &str = "Discovery failed: the identity provider cannot be reached.";

/// A FAKE identity provider: a real IdP never sends the documents it serves. It answers
/// `GET /.well-known/openid-configuration` with the JSON document last given to
/// [`FakeDiscovery::serve`] (one naming another issuer, or offering no PKCE S256 or no
/// code flow), anything else with 404, and counts the connections it accepts, so a test
/// can tell whether the gateway connected at all.
struct FakeDiscovery {
    addr: SocketAddr,
    doc: Arc<Mutex<Value>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeDiscovery {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(Value::Null));
        let connections = Arc::new(AtomicUsize::new(0));
        let (served, accepted) = (doc.clone(), connections.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::SeqCst);
                let served = served.clone();
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let found = req.uri().path() == "/.well-known/openid-configuration";
                    let body = served.lock().unwrap().to_string();
                    async move {
                        http::Response::builder()
                            .status(if found { 200 } else { 404 })
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Full::new(Bytes::from(if found { body } else { "{}".into() })))
                    }
                });
                tokio::spawn(async move {
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        FakeDiscovery {
            addr,
            doc,
            connections,
            task,
        }
    }

    /// The issuer URL the fake stands at (http, loopback).
    fn issuer(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Serves `doc` from now on.
    fn serve(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    /// Connections accepted so far.
    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

impl Drop for FakeDiscovery {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The real IdP's discovery document.
async fn real_document(s: &Setup) -> Value {
    let url = format!("{}/.well-known/openid-configuration", s.idp.issuer());
    s.gw.client().get(url).send().await.unwrap().json().await.unwrap()
}

/// A draft body naming `issuer`, otherwise complete (client `gw-b` and its secret).
fn draft_naming(issuer: &str) -> Value {
    json!({
        "issuer": issuer, "client_id": "gw-b", "client_secret": SECRET_B,
        "scopes": ["openid", "profile"], "roles_claim": "groups", "admin_group": "initech-admins",
    })
}

/// Saves a draft naming `issuer` as `agent` (same-origin script) and asserts the refusal:
/// 400 with `code`, and a message in plain words that says `words`.
async fn assert_refused(agent: &mut Agent, issuer: &str, code: &str, words: &str) {
    let origin = agent.origin();
    let body = draft_naming(issuer).to_string().into_bytes();
    let r = agent
        .send(
            Method::PUT,
            API,
            &[("origin", &origin)],
            Some(("application/json", body)),
        )
        .await;
    assert_eq!(
        (r.status, r.json()["error"].as_str()),
        (400, Some(code)),
        "{issuer}: {}",
        r.body
    );
    let message = r.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains(words), "{issuer}: {message}");
    assert!(message.ends_with('.'), "a sentence: {message}");
    assert!(!r.body.contains(SECRET_B), "{}", r.body);
}

/// The wizard shows exactly `before` (same active version, no draft left behind, no new
/// version), and a user of the tenant still signs in through the active client `gw-a`.
async fn assert_active_unchanged(s: &mut Setup, before: &Value) {
    let now = s.view().await;
    assert_eq!(&now, before, "a refused save changed the SSO settings");
    assert_eq!(now["status"], "active", "{now}");
    assert!(now["draft"].is_null(), "{now}");
    let (mut user, to_idp) = s.user_sign_in("ivy", "pw-ivy").await;
    assert!(to_idp.contains("client_id=gw-a"), "{to_idp}");
    let me = user.get("/.portcullis/api/whoami").await;
    assert_eq!(me.status, 200, "{}", me.body);
}

/// If this broke, a tenant admin could save (and so test and activate) an issuer that is
/// not an IdP, is down, lies about who it is, or lacks what the gateway's sign-in needs
/// (PKCE S256, the code flow); a refused save would replace the draft or touch the
/// active version; or a production tenant's wizard would connect to a loopback address
/// (SSRF) before refusing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discovery_refusals_name_the_problem_and_leave_the_active_version() {
    let mut s = setup(&[ivy()]).await;
    s.activate("gw-a", SECRET_A, json!({})).await;
    let before = s.view().await;
    assert_eq!(
        (&before["status"], &before["active"]["client_id"]),
        (&json!("active"), &json!("gw-a")),
        "{before}"
    );
    let idp = s.idp.issuer();

    // Wrong issuer: the real IdP's origin with a path where no discovery document lives,
    // and a web app that answers but is no IdP (the tenant's own upstream).
    assert_refused(
        &mut s.admin,
        &format!("{idp}/not-the-issuer"),
        "unreachable",
        "Discovery failed: the identity provider answered 404.",
    )
    .await;
    assert_active_unchanged(&mut s, &before).await;
    let app = s.ups.initech.url();
    assert_refused(
        &mut s.admin,
        &app,
        "invalid_discovery",
        "Discovery failed: the answer at /.well-known/openid-configuration is not an OpenID discovery document.",
    )
    .await;
    assert!(
        s.ups
            .initech
            .requests()
            .iter()
            .any(|r| r.target == "/.well-known/openid-configuration"),
        "the app was asked for the document"
    );
    assert_active_unchanged(&mut s, &before).await;

    // Unreachable: nothing listens there.
    let down = ClosedPort::bind();
    assert_refused(&mut s.admin, &down.url(), "unreachable", UNREACHABLE).await;
    assert_active_unchanged(&mut s, &before).await;

    // A discovery document for another issuer (the real IdP's, with its issuer replaced).
    let fake = FakeDiscovery::start().await;
    let real = real_document(&s).await;
    let mut lying = real.clone();
    lying["issuer"] = json!("https://another-idp.example");
    fake.serve(lying);
    assert_refused(
        &mut s.admin,
        &fake.issuer(),
        "issuer_mismatch",
        &format!(
            "Issuer mismatch: the discovery document names another issuer than `{}`",
            fake.issuer()
        ),
    )
    .await;
    assert!(fake.connections() > 0, "the fake was never asked");
    assert_active_unchanged(&mut s, &before).await;

    // An IdP (at its own issuer) without PKCE S256, then without the code flow.
    let mut no_pkce = real.clone();
    no_pkce["issuer"] = json!(fake.issuer());
    no_pkce["code_challenge_methods_supported"] = json!(["plain"]);
    fake.serve(no_pkce);
    assert_refused(
        &mut s.admin,
        &fake.issuer(),
        "no_pkce_s256",
        "The identity provider does not support PKCE with S256",
    )
    .await;
    assert_active_unchanged(&mut s, &before).await;
    let mut no_code = real.clone();
    no_code["issuer"] = json!(fake.issuer());
    no_code["response_types_supported"] = json!(["id_token", "id_token token"]);
    fake.serve(no_code);
    assert_refused(
        &mut s.admin,
        &fake.issuer(),
        "no_code_flow",
        "The identity provider does not support the authorization code flow",
    )
    .await;
    assert_active_unchanged(&mut s, &before).await;

    // initech's tier (staging) allows the http loopback IdPs above; acme's (prod, no
    // `[sso]`) does not. The same fake, correct this time, as acme's issuer: refused by
    // the address rules before any connection (http, then loopback by address and by
    // name), and nothing stored.
    let mut correct = real;
    correct["issuer"] = json!(fake.issuer());
    fake.serve(correct);
    let users = Accounts::open(&s.gw).await;
    let ada = users.create("acme", "ada", &["tenant-admin"], true).await;
    let mut acme = Agent::new(&s.gw, "acme.test");
    acme.api_login(&ada).await;
    let connections = fake.connections();
    let port = fake.addr.port();
    assert_refused(
        &mut acme,
        &fake.issuer(),
        "invalid_issuer",
        "The issuer must be an https URL with a host",
    )
    .await;
    let loopback = "The identity provider's URL cannot be used: the identity provider resolves to a loopback, link-local or private address.";
    for issuer in [format!("https://127.0.0.1:{port}"), format!("https://localhost:{port}")] {
        assert_refused(&mut acme, &issuer, "address_not_allowed", loopback).await;
    }
    assert_eq!(
        fake.connections(),
        connections,
        "a production tier connected to a loopback issuer"
    );
    let r = acme.get(API).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        (&r.json()["status"], &r.json()["versions"]),
        (&json!("none"), &json!([])),
        "{}",
        r.body
    );
    assert_active_unchanged(&mut s, &before).await;

    // A refused save does not touch a tested draft either: it can still be activated.
    assert_eq!(s.put_draft("gw-b", SECRET_B).await.status, 200);
    let page = s.test_sign_in("ivy", "pw-ivy").await;
    assert!(page.body.contains("Test sign-in passed"), "{}", page.body);
    let tested = s.view().await;
    let down = ClosedPort::bind();
    assert_refused(&mut s.admin, &down.url(), "unreachable", UNREACHABLE).await;
    let now = s.view().await;
    assert_eq!(now, tested, "a refused save changed the tested draft");
    assert_eq!(now["test"]["passed"], true, "{now}");
    let r = s.call(Method::POST, &format!("{API}/activate"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"]["client_id"], "gw-b", "{}", r.body);
}

/// The `sso.*` records of the tenant, oldest first, from the tenant admin's audit API
/// (which lists newest first).
async fn sso_records(s: &mut Setup) -> Vec<Value> {
    let r = s.call(Method::GET, "/.portcullis/api/admin/audit", None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut records: Vec<Value> = r.json()["records"]
        .as_array()
        .expect("records")
        .iter()
        .filter(|r| r["action"].as_str().is_some_and(|a| a.starts_with("sso.")))
        .cloned()
        .collect();
    records.reverse();
    records
}

/// If this broke, a wizard step (save, test, activate, roll back) would go unaudited,
/// a refused save would be recorded as a change, or a client secret (right or wrong)
/// would reach the audit log, an API answer or the gateway's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_wizard_step_is_audited_and_no_record_holds_the_secret() {
    let mut s = setup(&[ivy()]).await;
    assert_eq!(s.put_draft("gw-a", WRONG_SECRET).await.status, 200);
    let page = s.test_sign_in("ivy", "pw-ivy").await;
    assert!(page.body.contains("Test sign-in failed"), "{}", page.body);
    s.activate("gw-a", SECRET_A, json!({})).await;
    s.activate("gw-b", SECRET_B, json!({})).await;
    let down = ClosedPort::bind();
    assert_refused(&mut s.admin, &down.url(), "unreachable", UNREACHABLE).await;
    let r = s.call(Method::POST, &format!("{API}/rollback"), None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["active"]["client_id"], "gw-a", "{}", r.body);

    let records = sso_records(&mut s).await;
    let actions: Vec<&str> = records.iter().filter_map(|r| r["action"].as_str()).collect();
    assert_eq!(
        actions,
        [
            "sso.update",
            "sso.test",
            "sso.update",
            "sso.test",
            "sso.activate",
            "sso.update",
            "sso.test",
            "sso.activate",
            "sso.rollback",
        ],
        "the refused save is no change: {records:#?}"
    );
    for r in &records {
        assert_eq!(
            (&r["actor"], &r["target"], &r["tenant"]),
            (&json!("user:ina"), &json!("tenant:initech"), &json!("initech")),
            "{r}"
        );
    }
    // What each says: the failed and passed tests, the versions switched.
    assert_eq!(records[1]["after"]["passed"], false, "{}", records[1]);
    assert!(
        records[1]["after"]["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid_client")),
        "{}",
        records[1]
    );
    assert_eq!(records[3]["after"]["passed"], true, "{}", records[3]);
    assert_eq!(records[5]["after"]["client_id"], "gw-b", "{}", records[5]);
    assert_eq!(records[5]["after"]["client_secret_set"], true, "{}", records[5]);
    assert_eq!(
        (&records[7]["before"]["client_id"], &records[7]["after"]["client_id"]),
        (&json!("gw-a"), &json!("gw-b")),
        "{}",
        records[7]
    );
    assert_eq!(
        (&records[8]["before"]["client_id"], &records[8]["after"]["client_id"]),
        (&json!("gw-b"), &json!("gw-a")),
        "{}",
        records[8]
    );

    // The operator's view of the tier's log holds the same records.
    let r =
        s.gw.client()
            .get(s.gw.admin_url("/v1/audit?tenant=initech"))
            .bearer_auth(&s.operator_token)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200);
    let operator_log = r.text().await.unwrap();
    let operator: Vec<Value> = serde_json::from_str(&operator_log).unwrap();
    let operator_actions: Vec<&str> = operator
        .iter()
        .filter_map(|r| r["action"].as_str())
        .filter(|a| a.starts_with("sso."))
        .collect();
    assert_eq!(operator_actions, actions, "{operator_log}");

    // No secret anywhere: records (tenant admin's and operator's), answers, the log.
    let tenant_log = serde_json::to_string(&records).unwrap();
    let log = s.gw.stdout();
    for secret in [SECRET_A, SECRET_B, WRONG_SECRET] {
        assert!(!tenant_log.contains(secret), "{secret} in the audit records");
        assert!(!operator_log.contains(secret), "{secret} in /v1/audit");
        assert!(!log.contains(secret), "{secret} in the gateway's log");
        for body in &s.seen {
            assert!(!body.contains(secret), "{secret} in {body}");
        }
    }
    assert!(
        !tenant_log.contains("\"client_secret\""),
        "a record has a client_secret field: {tenant_log}"
    );
}

/// If this broke, a tenant admin could lift a kill switch that another tenant's admin
/// set on one of their users (or learn that it exists), or reach another tier's sessions
/// and users by id; `tenant_admin.rs` covers sessions and users within one tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_breakers_and_another_tiers_objects_answer_404() {
    let (_ups, gw) = start().await;
    let users = Accounts::open(&gw).await;
    let ada = users.create("acme", "ada", &["tenant-admin"], true).await;
    let gus = users.create("globex", "gus", &["tenant-admin"], true).await;
    let gina = users.create("globex", "gina", &[], true).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;
    let mut acme = Agent::new(&gw, "acme.test");
    acme.api_login(&ada).await;
    let mut globex = Agent::new(&gw, "globex.test");
    globex.api_login(&gus).await;
    let mut initech = Agent::new(&gw, HOST);
    initech.api_login(&ina).await;
    let mut gina_agent = Agent::new(&gw, "globex.test");
    gina_agent.api_login(&gina).await;

    // globex's admin cuts gina off.
    let trip = br#"{"reason":"lost laptop"}"#.to_vec();
    let r = globex
        .send(
            Method::PUT,
            "/.portcullis/api/admin/accounts/gina/breaker",
            &[],
            Some(("application/json", trip)),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // (Her ended session answers 423 while the switch is in force, 401 once lifted.)
    assert_eq!(gina_agent.get("/app/data").await.status, 423, "gina is cut off");

    // acme's admin: gina's breaker answers like none, in the API and on the page.
    let theirs = acme.delete("/.portcullis/api/admin/accounts/gina/breaker").await;
    let none = acme.delete("/.portcullis/api/admin/accounts/nobody/breaker").await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(theirs.json()["error"], "not_found", "{}", theirs.body);
    assert_eq!(sans_request_id(&theirs.body), sans_request_id(&none.body));
    let r = acme.get("/.portcullis/api/admin/breakers").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["breakers"], json!([]), "{}", r.body);
    let page = acme.get("/.portcullis/admin").await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(!page.body.contains("gina"), "{}", page.body);
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .expect("csrf token")
        .to_string();
    let r = acme
        .post_form(
            "/.portcullis/admin/breaker",
            &[
                ("csrf", &csrf),
                ("action", "reset"),
                ("subject", "gina"),
                ("idp", "local"),
            ],
        )
        .await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/.portcullis/admin?done=not_tripped&account=gina")),
        "{}",
        r.body
    );
    let r = gina_agent.get("/app/data").await;
    assert_eq!(r.status, 423, "gina's breaker was lifted by acme: {}", r.body);
    let r = globex.get("/.portcullis/api/admin/breakers").await;
    assert_eq!(r.json()["breakers"].as_array().map(Vec::len), Some(1), "{}", r.body);

    // initech (staging tier): acme's (prod tier) session and user answer like none.
    let list = acme.get("/.portcullis/api/admin/sessions").await.json();
    let ada_session = list["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["subject"] == "ada")
        .and_then(|s| s["id"].as_str())
        .expect("ada's session")
        .to_string();
    let theirs = initech
        .delete(&format!("/.portcullis/api/admin/sessions/{ada_session}"))
        .await;
    let none = initech.delete("/.portcullis/api/admin/sessions/0123456789abcdef").await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(sans_request_id(&theirs.body), sans_request_id(&none.body));
    let theirs = initech.delete("/.portcullis/api/admin/users/ada/mfa").await;
    let none = initech.delete("/.portcullis/api/admin/users/nobody/mfa").await;
    assert_eq!((theirs.status, none.status), (404, 404), "{}", theirs.body);
    assert_eq!(sans_request_id(&theirs.body), sans_request_id(&none.body));
    assert_eq!(acme.get("/app/data").await.status, 200, "ada's session survived");
    let listed = acme.get("/.portcullis/api/admin/users").await.json();
    assert_eq!(
        (&listed["users"][0]["username"], &listed["users"][0]["totp_enrolled"]),
        (&json!("ada"), &json!(true)),
        "{listed}"
    );
}

/// If this broke, an operator (admin API or CLI) could not cut off an account of a tenant
/// whose SSO was activated through the wizard by `idp=sso`: it would be refused (the
/// policy files name no provider), or hit the local account of the same name instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_names_a_wizard_tenants_sso_account() {
    let mut s = setup(&[ivy()]).await;
    s.activate("gw-a", SECRET_A, json!({})).await;
    let key = portcullis::account::key(&s.idp.issuer(), "ivy");
    let (mut sso_ivy, _) = s.user_sign_in("ivy", "pw-ivy").await;
    // A local account with the same name is another user.
    let users = Accounts::open(&s.gw).await;
    let local_ivy = users.create("initech", "ivy", &[], true).await;
    let mut local = Agent::new(&s.gw, HOST);
    local.api_login(&local_ivy).await;
    let breaker = "/v1/tenants/initech/accounts/ivy/breaker?idp=sso";

    // The admin API.
    let r =
        s.gw.client()
            .put(s.gw.admin_url(breaker))
            .bearer_auth(&s.operator_token)
            .json(&json!({"reason": "stolen phone"}))
            .send()
            .await
            .unwrap();
    let status = r.status();
    let body: Value = r.json().await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["subject"], key, "{body}");
    assert_eq!(sso_ivy.get("/.portcullis/api/whoami").await.status, 423);
    assert_eq!(local.get("/app/data").await.status, 200, "the local ivy was hit");
    let r =
        s.gw.client()
            .delete(s.gw.admin_url(breaker))
            .bearer_auth(&s.operator_token)
            .send()
            .await
            .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    // The CLI, on the running gateway's store.
    let (mut sso_ivy, _) = s.user_sign_in("ivy", "pw-ivy").await;
    assert_eq!(sso_ivy.get("/.portcullis/api/whoami").await.status, 200);
    let scope = ["--tenant", "initech", "--account", "ivy", "--idp", "sso"];
    let trip = [&["breaker", "trip"][..], &scope, &["--reason", "cli drill"]].concat();
    let (ok, out, err) = portcullis(&s.gw, &trip, "").await;
    assert!(ok, "breaker trip: {out}\n{err}");
    assert!(out.contains(&format!("tripped account:initech:{key}")), "{out}");
    let applied = eventually(Duration::from_secs(5), || {
        let mut a = Agent::new(&s.gw, HOST);
        a.cookies = sso_ivy.cookies.clone();
        async move { (a.get("/.portcullis/api/whoami").await.status == 423).then_some(()) }
    })
    .await;
    assert!(applied.is_some(), "the CLI trip of the SSO account was not applied");
    assert_eq!(local.get("/app/data").await.status, 200, "the local ivy was hit");
    let (ok, out, err) = portcullis(&s.gw, &["breaker", "list"], "").await;
    assert!(ok && out.contains(&key), "{out}\n{err}");
    let reset = [&["breaker", "reset"][..], &scope, &["--reason", "drill over"]].concat();
    let (ok, out, err) = portcullis(&s.gw, &reset, "").await;
    assert!(ok, "breaker reset: {out}\n{err}");
    let (ok, out, err) = portcullis(&s.gw, &["breaker", "list"], "").await;
    assert!(ok && !out.contains(&key), "{out}\n{err}");
}
