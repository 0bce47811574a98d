//! The SSO wizard's page (`/.portcullis/admin/sso`) over HTTP, as a browser's forms use
//! it: each refusal names its field and changes nothing, the forms need the session's
//! CSRF token, Activate stays disabled without a passing test, the secret never comes
//! back, the page's only script is allowed by its hash, and a tenant managed by the
//! policy files sees a read-only page. The whole wizard in a real browser is
//! `sso_wizard_browser.rs`.

use http::Method;
use serde_json::Value;

use crate::harness::*;
use crate::idp::{Idp, IdpClient};

const HOST: &str = "initech.test";
const PAGE: &str = "/.portcullis/admin/sso";
const SECRET: &str = "page-secret-charlie-61ab";

/// The value of the first `name="csrf"` field of a page.
fn csrf_of(page: &str) -> String {
    let at = page.find("name=\"csrf\" value=\"").expect("csrf field");
    let rest = &page[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').expect("end of value")].to_string()
}

/// The test sign-in's link on a wizard page (with its ticket).
fn test_link(page: &str) -> &str {
    let at = page.find("/.portcullis/admin/sso/test?ticket=").expect("test link");
    &page[at..at + page[at..].find('"').expect("end of link")]
}

/// The wizard's state through its JSON twin.
async fn view(admin: &mut Agent) -> Value {
    let r = admin.get("/.portcullis/api/admin/sso").await;
    assert_eq!(r.status, 200, "{}", r.body);
    r.json()
}

/// If this broke, the wizard page would let a broken or forged step through, hide which
/// field is wrong from screen readers, show the secret again, or run foreign script.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_wizard_step_refuses_bad_input_by_field_and_changes_nothing() {
    let mut idp = Idp::bind(&[]);
    let (_ups, gw) = start().await;
    let callback = format!("http://{HOST}:{}/.portcullis/callback", gw.public.port());
    idp.register(&[IdpClient::new("gw-page", SECRET, &callback)]);
    let users = Accounts::open(&gw).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;
    let mut admin = Agent::new(&gw, HOST);
    admin.api_login(&ina).await;

    let r = admin.get(PAGE).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("<h1>Single sign-on</h1>"), "{}", r.body);
    assert!(
        r.body.contains(r#"href="/.portcullis/admin/sso" aria-current="page""#),
        "{}",
        r.body
    );
    assert!(r.body.contains(&callback), "the redirect URI to copy: {}", r.body);
    let csp = r.header("content-security-policy").expect("csp").to_string();
    assert!(csp.contains("script-src 'sha256-"), "{csp}");
    assert!(
        !csp.contains("unsafe-inline") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(
        r.body
            .contains(r#"name="action" value="activate" aria-describedby="activate-hint" disabled"#),
        "{}",
        r.body
    );
    let csrf = csrf_of(&r.body);
    let issuer = idp.issuer();

    // Without the session's CSRF token, or from another site: refused, nothing saved.
    let save = |csrf: &str, issuer: &str, secret: &str, admin_group: &str| {
        vec![
            ("csrf".to_string(), csrf.to_string()),
            ("action".into(), "save".into()),
            ("issuer".into(), issuer.to_string()),
            ("client_id".into(), "gw-page".into()),
            ("client_secret".into(), secret.to_string()),
            ("scopes".into(), "openid profile".into()),
            ("roles_claim".into(), "groups".into()),
            ("admin_group".into(), admin_group.to_string()),
            ("mfa".into(), "required".into()),
        ]
    };
    let r = post_form(&mut admin, &save("wrong-token", &issuer, SECRET, "initech-admins")).await;
    assert_eq!(r.status, 403, "{}", r.body);
    let body = form_body(&save(&csrf, &issuer, SECRET, "initech-admins"));
    let r = admin
        .send(
            Method::POST,
            PAGE,
            &[("origin", "http://evil.test")],
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
        )
        .await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(view(&mut admin).await["status"], "none");

    // Step 1 alone: an unreachable issuer is named at the field, the input kept.
    let check = |issuer: &str| {
        vec![
            ("csrf".to_string(), csrf.clone()),
            ("action".into(), "discover".into()),
            ("issuer".into(), issuer.to_string()),
        ]
    };
    let r = post_form(&mut admin, &check("http://127.0.0.1:1")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains(r#"aria-describedby="issuer-hint issuer-error" aria-invalid="true""#),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(r#"<p class="error" id="issuer-error">Discovery failed"#),
        "{}",
        r.body
    );
    assert!(r.body.contains(r#"value="http://127.0.0.1:1""#), "{}", r.body);
    let r = post_form(&mut admin, &check("ftp://idp.example")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("The issuer must be an https URL"), "{}", r.body);
    // The real IdP: discovery in plain words.
    let r = post_form(&mut admin, &check(&issuer)).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("<h3 id=\"discovery-heading\">Discovery</h3>"),
        "{}",
        r.body
    );
    assert!(
        r.body
            .contains(&format!("Found the identity provider <strong>{issuer}</strong>")),
        "{}",
        r.body
    );
    assert_eq!(view(&mut admin).await["status"], "none", "checking saves nothing");

    // A field problem on save: tied to its field, nothing stored.
    let r = post_form(&mut admin, &save(&csrf, &issuer, SECRET, "a,b")).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains(r#"<p class="error" id="admin_group-error">The admin group must be"#),
        "{}",
        r.body
    );
    assert!(!r.body.contains(SECRET), "the secret is not echoed: {}", r.body);
    assert_eq!(view(&mut admin).await["status"], "none");
    let no_secret = save(&csrf, &issuer, "", "initech-admins");
    let r = post_form(&mut admin, &no_secret).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(
        r.body
            .contains(r#"id="client_secret-error">A client secret is required"#),
        "{}",
        r.body
    );

    // A good draft: saved (303 back with a notice), not active, Activate still disabled.
    let r = post_form(&mut admin, &save(&csrf, &issuer, SECRET, "initech-admins")).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/.portcullis/admin/sso?done=saved&version=1")),
        "{}",
        r.body
    );
    let r = admin.get("/.portcullis/admin/sso?done=saved&version=1").await;
    assert!(r.body.contains("Draft saved as version 1."), "{}", r.body);
    assert!(r.body.contains("A secret is stored."), "{}", r.body);
    assert!(
        r.body
            .contains(r#"id="test-link" href="/.portcullis/admin/sso/test?ticket="#),
        "{}",
        r.body
    );
    assert!(r.body.contains("Test result: not tested yet."), "{}", r.body);
    assert!(
        r.body.contains(r#"aria-describedby="activate-hint" disabled"#),
        "{}",
        r.body
    );
    assert!(!r.body.contains(SECRET), "{}", r.body);
    let v = view(&mut admin).await;
    assert_eq!(
        (v["status"].as_str(), v["active"].is_null()),
        (Some("draft"), true),
        "{v}"
    );

    // The test sign-in starts only from this session's link: a link from elsewhere (no
    // ticket, a made-up one, or another session's) is refused before the IdP.
    let link = test_link(&r.body);
    let started = admin.get(link).await;
    assert_eq!(started.status, 303, "{}", started.body);
    assert!(
        started.header("location").is_some_and(|l| l.starts_with(&issuer)),
        "{:?}",
        started.header("location")
    );
    let mut other = Agent::new(&gw, HOST);
    other.api_login(&ina).await;
    let others = other.get(PAGE).await.body;
    let others_link = test_link(&others);
    assert_ne!(others_link, link, "a ticket per session");
    for forged in [
        "/.portcullis/admin/sso/test".to_string(),
        "/.portcullis/admin/sso/test?ticket=00".to_string(),
        others_link.to_string(),
    ] {
        let r = admin.get(&forged).await;
        assert_eq!(r.status, 403, "{forged}: {}", r.body);
    }

    // Activate without a passing test (a forged press of the disabled button): 409, the
    // page says why, nothing active.
    let activate = [("csrf".to_string(), csrf.clone()), ("action".into(), "activate".into())];
    let r = post_form(&mut admin, &activate).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body
            .contains(r#"role="alert" id="problem">The draft has no passing test sign-in"#),
        "{}",
        r.body
    );
    assert!(view(&mut admin).await["active"].is_null());
    let rollback = [("csrf".to_string(), csrf.clone()), ("action".into(), "rollback".into())];
    let r = post_form(&mut admin, &rollback).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body.contains("There is no earlier version to roll back to"),
        "{}",
        r.body
    );

    // The preview needs a test's claims first.
    let preview = [
        ("csrf".to_string(), csrf.clone()),
        ("action".into(), "preview".into()),
        ("roles_claim".into(), "groups".into()),
    ];
    let r = post_form(&mut admin, &preview).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(
        r.body.contains("There is no test sign-in to preview with yet"),
        "{}",
        r.body
    );

    // An unknown action is a bad form; a user without the role may not look.
    let r = post_form(
        &mut admin,
        &[("csrf".to_string(), csrf.clone()), ("action".into(), "drop".into())],
    )
    .await;
    assert_eq!(r.status, 403, "{}", r.body);
    let ned = users.create("initech", "ned", &[], true).await;
    let mut plain = Agent::new(&gw, HOST);
    plain.api_login(&ned).await;
    assert_eq!(plain.get(PAGE).await.status, 403);
    let mut nobody = Agent::new(&gw, HOST);
    let r = nobody.get(PAGE).await;
    assert_eq!(
        (r.status, r.header("location")),
        (303, Some("/.portcullis/login?rd=%2F.portcullis%2Fadmin%2Fsso"))
    );
    assert!(!gw.stdout().contains(SECRET), "the secret is not logged");
}

/// If this broke, a tenant admin could edit, on the page, SSO that the policy files manage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_managed_by_the_policy_files_sees_a_read_only_page() {
    let (_ups, gw) = start_with(|f| {
        f.tenant_mut("initech").routes.push_str(
            "\n[sso]\nissuer = \"http://127.0.0.1:1\"\nclient_id = \"gw-policy\"\nclient_secret = \"inline:policy-secret-5512\"\n",
        )
    })
    .await;
    let users = Accounts::open(&gw).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;
    let mut admin = Agent::new(&gw, HOST);
    admin.api_login(&ina).await;
    let r = admin.get(PAGE).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("set in the policy files, so it is shown"), "{}", r.body);
    assert!(r.body.contains("<dd>gw-policy</dd>"), "{}", r.body);
    assert!(
        !r.body.contains("Save draft") && !r.body.contains("<script>"),
        "{}",
        r.body
    );
    assert!(!r.body.contains("policy-secret-5512"), "{}", r.body);
    let csrf = csrf_of(&r.body);
    let fields = [
        ("csrf".to_string(), csrf),
        ("action".into(), "save".into()),
        ("issuer".into(), "http://127.0.0.1:1".into()),
        ("client_id".into(), "x".into()),
        ("client_secret".into(), "y".into()),
    ];
    let r = post_form(&mut admin, &fields).await;
    assert_eq!(r.status, 409, "{}", r.body);
    assert!(
        r.body.contains("set in the policy files; change it there"),
        "{}",
        r.body
    );
    assert_eq!(view(&mut admin).await["status"], "policy");
}

fn form_body(fields: &[(String, String)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

/// Posts the wizard's form as the admin's browser (same origin).
async fn post_form(agent: &mut Agent, fields: &[(String, String)]) -> Reply {
    let pairs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    agent.post_form(PAGE, &pairs).await
}
