//! Attacks on one user's sign-in and session state (SECURITY-CASES OIDC-13, SES-14,
//! MFA-05, MFA-07, WS-02): unusable IdP subjects through the real IdP, a log sweep for
//! every credential a sign-in handles, crossed pre-MFA states, the second factor never
//! shown or replaced again after enrolment, and WebSockets that outlive their account
//! or their session's lifetime.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::Method;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::harness::*;
use crate::idp::{Account, Idp};
use crate::sso::{Browser, ForgingIdp, SECRET, idp_and_gateway, initech_client, sso_gateway_fixture, whoami};
use crate::websocket::assert_closed_with_1008;

const PROTECTED: &str = "/app/data";

/// OIDC-13 (OIDC Core §2: `sub` is at most 255 ASCII characters): accounts of the real
/// IdP whose `sub` is 256 characters, not ASCII, or holds a control character sign in
/// at the IdP, but the gateway refuses their ID tokens: 401 with the SSO error page, no
/// session, nothing upstream, no 5xx, and the raw `sub` in no response header and
/// nowhere in the gateway's stdout or stderr. A `sub` of 255 printable ASCII characters
/// signs in. If this broke, an IdP (broken, or an attacker's) could create accounts no
/// other IdP could name, whose subject would be cut, mangled or smuggled into headers
/// and logs downstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idp_subjects_beyond_255_ascii_characters_are_refused() {
    const MARK: &str = "hostile-sub-5d0b";
    let pad = |s: String, n: usize| format!("{s}{}", "x".repeat(n - s.chars().count()));
    let refused = [
        ("256 characters", pad(format!("{MARK}-long-"), 256)),
        ("not ASCII", format!("{MARK}-zoë")),
        ("a tab", format!("{MARK}\tadmin")),
        ("CR/LF", format!("{MARK}\r\nX-Portcullis-Roles: admin")),
        ("DEL", format!("{MARK}\u{7f}")),
    ];
    let longest_ok = pad("ok-sub-".into(), 255);
    // Only the sub is hostile: the email and name are clean, so nothing else refuses.
    let account = |i: usize, sub: &str, password: &str| Account {
        email: format!("user{i}@example.test"),
        name: format!("User {i}"),
        ..Account::new(sub, password).amr(&["pwd", "otp"])
    };
    let mut accounts: Vec<Account> = refused
        .iter()
        .enumerate()
        .map(|(i, (_, sub))| account(i, sub, "pw-hostile"))
        .collect();
    accounts.push(account(refused.len(), &longest_ok, "pw-ok"));
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(&ups, &accounts, "required").await;
    let port = gw.public.port();

    for (case, sub) in &refused {
        let mut b = Browser::new(port);
        let callback = b.through_idp(&idp, sub, "pw-hostile").await;
        assert!(callback.contains("code="), "{case}: the IdP signed in: {callback}");
        let cookies: Vec<String> = b.cookies.iter().map(|(n, v)| format!("{n}={v}")).collect();
        let r = b
            .client
            .get(&callback)
            .header("accept", "text/html")
            .header("cookie", cookies.join("; "))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let headers = format!("{:?}", r.headers());
        let body = r.text().await.unwrap();
        assert_eq!(status, 401, "{case}: {body}");
        assert!(body.contains("Single sign-on failed"), "{case}: {body}");
        assert!(!headers.contains(MARK), "{case}: the sub in a header: {headers}");
        assert!(!body.contains(MARK), "{case}: the sub in the page");
        assert!(
            !headers.contains("__Host-portcullis-staging="),
            "{case}: a session cookie"
        );
        assert_eq!(whoami(&mut b).await.0, 401, "{case}: signed in");
        assert_eq!(b.get(PROTECTED).await.0, 302, "{case}: the app opened");
    }
    assert_eq!(ups.total(), 0, "a refused sign-in reached an upstream");

    let mut b = Browser::new(port);
    let callback = b.through_idp(&idp, &longest_ok, "pw-ok").await;
    let (status, location, body) = b.get(&callback).await;
    assert_eq!((status, location.as_deref()), (303, Some("/app/data")), "{body}");
    let (status, me) = whoami(&mut b).await;
    assert_eq!(
        (status, me["subject"].as_str()),
        (200, Some(longest_ok.as_str())),
        "{me}"
    );

    let statuses = eventually(Duration::from_secs(5), || async {
        let s: Vec<u64> = gw
            .access_log()
            .iter()
            .filter(|l| l["path"] == "/.portcullis/callback")
            .filter_map(|l| l["status"].as_u64())
            .collect();
        (s.len() == refused.len() + 1).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("callbacks missing from the access log:\n{}", gw.logs()));
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");
    assert!(!gw.logs().contains(MARK), "a raw sub reached the log:\n{}", gw.logs());
}

/// The gateway's whole output with the fields every line has that are made of digits
/// (`timestamp`, `duration_ms`) left out, so a 6-digit code is not found by chance in a
/// microsecond count; lines that are not JSON are kept as they are.
fn output_sans_clock(logs: &str) -> String {
    logs.lines()
        .map(|line| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(serde_json::Value::Object(mut fields)) => {
                fields.remove("timestamp");
                fields.remove("duration_ms");
                serde_json::Value::Object(fields).to_string()
            }
            _ => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `text` holds `code` as a number of its own (no digit right before or after).
fn holds_code(text: &str, code: &str) -> bool {
    text.match_indices(code).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + code.len()..].chars().next();
        !before.is_some_and(|c| c.is_ascii_digit()) && !after.is_some_and(|c| c.is_ascii_digit())
    })
}

/// The value of query parameter `name` of `url`.
fn query_param(url: &str, name: &str) -> String {
    reqwest::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| panic!("no {name} in {url}"))
}

/// SES-14, a sweep: one gateway logging at `RUST_LOG=trace` is driven through every
/// credential it handles, then its whole stdout and stderr (its only log: the access
/// log and security events are JSON lines on stdout) are searched for each raw value:
/// no hit. Swept values:
/// - passwords: a JSON API sign-in, a page sign-in, a wrong password, an enrolment
///   sign-in, and the password typed at the real IdP;
/// - TOTP codes of the JSON API and page sign-ins and of the enrolment, as numbers of
///   their own (timestamps and durations left out);
/// - the TOTP secret and `otpauth` URI handed out at enrolment, and all ten recovery
///   codes (one used to sign in), with and without dashes;
/// - the pre-MFA cookies of both local sign-ins, the page's CSRF cookie, the session
///   cookies of the local and SSO sessions (each used on the app and the JSON API);
/// - of the SSO sign-in through the real IdP: the authorization `code` and `state` of
///   the callback URL, the `nonce` and PKCE `code_challenge` of the authorization
///   request, the pending sign-in cookie, and the client secret of the tenant's policy;
/// - of a second SSO sign-in (tenant globex, moved to staging, through a fake IdP whose token endpoint
///   hands over what the test signed, since the real IdP's ID token never leaves its
///   exchange with the gateway): the whole ID token, its signature, the access token,
///   the code, the pending sign-in and session cookies, and the client secret;
/// - the operator's bearer token (admin API) and the signed identity assertion the
///   upstream received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_of_any_sign_in_reaches_the_trace_log() {
    let operator = random_hex(24);
    let ups = Upstreams::start().await;
    let idp_password = format!("idp-pw-{}", random_hex(8));
    let mut idp = Idp::bind(&[Account::new("sam", &idp_password).amr(&["pwd", "otp"])]);
    let fake = ForgingIdp::start().await;
    let globex_secret = format!("globex-secret-{}", random_hex(12));
    let gw = sso_gateway_fixture(&ups, &idp.issuer(), "required", "", |f| {
        f.gateway_env.push(("RUST_LOG".into(), "trace".into()));
        f.prod_operators = vec![("olivia".into(), sha256_hex(operator.as_bytes()))];
        // Staging allows the fake IdP's plain http issuer and an inline secret.
        f.tenant_mut("globex").tier = "staging".into();
        f.tenant_mut("globex").routes.push_str(&format!(
            "\n[sso]\nissuer = \"{}\"\nclient_id = \"gw-globex\"\nclient_secret = \"inline:{globex_secret}\"\nmfa = \"required\"\n",
            fake.issuer()
        ));
    })
    .await;
    idp.register(&[initech_client(gw.public.port())]);
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let bob = accounts.create("acme", "bob", &[], true).await;
    let dave = accounts.create("acme", "dave", &[], false).await;
    let mut secrets: Vec<(String, String)> = vec![
        ("alice's password".into(), alice.password.clone()),
        ("bob's password".into(), bob.password.clone()),
        ("dave's password".into(), dave.password.clone()),
        ("the IdP password".into(), idp_password.clone()),
        ("the client secret".into(), SECRET.into()),
        ("globex's client secret".into(), globex_secret.clone()),
        ("the operator token".into(), operator.clone()),
    ];
    let mut codes: Vec<String> = Vec::new();

    // JSON API sign-in, with a wrong password first.
    let mut a = Agent::new(&gw, "acme.test");
    let wrong = format!("wrong-{}", random_hex(8));
    secrets.push(("a wrong password".into(), wrong.clone()));
    let r = a
        .post_json(
            "/.portcullis/api/login",
            &json!({"username": "alice", "password": wrong}),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(a.api_password_step(&alice, None).await.status, 200);
    secrets.push((
        "alice's pre-MFA cookie".into(),
        a.cookies["__Host-portcullis-prod-pre"].clone(),
    ));
    let code = alice.fresh_code().await;
    codes.push(code.clone());
    let r = a.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    secrets.push(("alice's session cookie".into(), a.session("prod").expect("session")));
    assert_eq!(a.get(PROTECTED).await.status, 200);
    assert_eq!(a.get("/.portcullis/api/whoami").await.status, 200);
    let assertion = ups
        .acme
        .requests()
        .iter()
        .find_map(|r| r.header("portcullis-assertion").map(str::to_string))
        .expect("the upstream got an assertion");
    secrets.push(("the identity assertion".into(), assertion));

    // Page sign-in: CSRF cookie, form password, form code.
    let mut p = Agent::new(&gw, "acme.test");
    let r = p.get("/.portcullis/login").await;
    let csrf = r.set_cookie("__Host-portcullis-prod-csrf").expect("CSRF cookie").value;
    secrets.push(("the CSRF token".into(), csrf.clone()));
    let r = p
        .post_form(
            "/.portcullis/login",
            &[
                ("csrf", &csrf),
                ("username", &bob.username),
                ("password", &bob.password),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    secrets.push((
        "bob's pre-MFA cookie".into(),
        p.cookies["__Host-portcullis-prod-pre"].clone(),
    ));
    let code = bob.fresh_code().await;
    codes.push(code.clone());
    let r = p
        .post_form("/.portcullis/mfa", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    secrets.push(("bob's session cookie".into(), p.session("prod").expect("session")));
    assert_eq!(p.get(PROTECTED).await.status, 200);

    // Enrolment, then a sign-in with a recovery code.
    let mut d = Agent::new(&gw, "acme.test");
    assert_eq!(d.api_password_step(&dave, None).await.json()["next"], "enrol");
    let e = d.get("/.portcullis/api/enrol").await.json();
    let secret = e["secret"].as_str().expect("secret").to_string();
    secrets.push(("the TOTP secret".into(), secret.clone()));
    secrets.push(("the otpauth URI".into(), e["otpauth_uri"].as_str().expect("uri").into()));
    dave.set_secret(&secret);
    let code = dave.fresh_code().await;
    codes.push(code.clone());
    let r = d.post_json("/.portcullis/api/enrol", &json!({ "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let recovery: Vec<String> = r.json()["recovery_codes"]
        .as_array()
        .expect("codes")
        .iter()
        .map(|c| c.as_str().expect("code").to_string())
        .collect();
    for (i, c) in recovery.iter().enumerate() {
        secrets.push((format!("recovery code {i}"), c.clone()));
        secrets.push((format!("recovery code {i} without dashes"), c.replace('-', "")));
    }
    let mut r2 = Agent::new(&gw, "acme.test");
    assert_eq!(r2.api_password_step(&dave, None).await.status, 200);
    let r = r2
        .post_json("/.portcullis/api/mfa", &json!({ "code": recovery[0] }))
        .await;
    assert_eq!(r.status, 200, "recovery code: {}", r.body);
    secrets.push(("dave's session cookie".into(), r2.session("prod").expect("session")));
    assert_eq!(r2.get(PROTECTED).await.status, 200);

    // SSO through the real IdP.
    let mut b = Browser::new(gw.public.port());
    let (status, location, body) = b.get("/.portcullis/login/sso?rd=%2Fapp%2Fdata").await;
    assert_eq!(status, 303, "{body}");
    let authorize = location.expect("authorization URL");
    secrets.push(("the nonce".into(), query_param(&authorize, "nonce")));
    secrets.push(("the PKCE challenge".into(), query_param(&authorize, "code_challenge")));
    for (name, value) in b.cookies.iter().filter(|(n, _)| n.contains("-sso-")) {
        secrets.push((format!("the pending sign-in cookie {name}"), value.clone()));
    }
    let callback = idp.login(&authorize, "sam", &idp_password).await.expect("IdP sign-in");
    secrets.push(("the authorization code".into(), query_param(&callback, "code")));
    secrets.push(("the state".into(), query_param(&callback, "state")));
    let (status, location, body) = b.get(&callback).await;
    assert_eq!((status, location.as_deref()), (303, Some("/app/data")), "{body}");
    let sso_session = b
        .cookies
        .iter()
        .find(|(n, _)| n == "__Host-portcullis-staging")
        .map(|(_, v)| v.clone())
        .expect("SSO session");
    secrets.push(("the SSO session cookie".into(), sso_session));
    assert_eq!(b.get(PROTECTED).await.0, 200);
    assert_eq!(whoami(&mut b).await.0, 200);

    // SSO on globex, through the fake IdP: the test knows the ID token.
    let mut g = Browser::for_host(gw.public.port(), "globex.test");
    let (state, nonce) = g.start_sso("sweep").await;
    for (name, value) in g.cookies.iter().filter(|(n, _)| n.contains("-sso-")) {
        secrets.push((format!("globex's pending sign-in cookie {name}"), value.clone()));
    }
    let now = portcullis::clock::unix_now();
    let id_token = fake.sign(
        jsonwebtoken::Algorithm::EdDSA,
        "k1",
        &json!({"iss": fake.issuer(), "aud": "gw-globex", "sub": "gus", "iat": now, "exp": now + 300,
            "nonce": nonce, "amr": ["pwd", "otp"]}),
    );
    let access_token = format!("at-{}", random_hex(16));
    let code = format!("code-{}", random_hex(16));
    secrets.push(("the ID token".into(), id_token.clone()));
    secrets.push((
        "the ID token's signature".into(),
        id_token.rsplit('.').next().expect("signature").to_string(),
    ));
    secrets.push(("the access token".into(), access_token.clone()));
    secrets.push(("the forged sign-in's code".into(), code.clone()));
    *fake.next_token.lock().unwrap() = id_token;
    *fake.next_access_token.lock().unwrap() = Some(access_token);
    let (status, _, body) = g.get(&format!("/.portcullis/callback?code={code}&state={state}")).await;
    assert_eq!(status, 303, "{body}");
    assert!(g.has_session(), "no globex session");
    let globex_session = g
        .cookies
        .iter()
        .find(|(n, _)| n == "__Host-portcullis-staging")
        .map(|(_, v)| v.clone())
        .expect("globex session");
    secrets.push(("globex's SSO session cookie".into(), globex_session));
    assert_eq!(g.get(PROTECTED).await.0, 200);
    assert_eq!(fake.calls_to("/token"), 1, "the token endpoint was not called");

    // The admin API with the operator's token.
    let r = reqwest::Client::new()
        .get(gw.admin_url("/v1/breakers"))
        .bearer_auth(&operator)
        .send()
        .await
        .expect("admin API");
    assert_eq!(r.status(), 200);

    // Everything is written (through a non-blocking writer): a last request after all
    // the others is in the access log.
    assert_eq!(a.get("/public/last").await.status, 200);
    eventually(Duration::from_secs(5), || async {
        gw.access_log()
            .iter()
            .any(|l| l["path"] == "/public/last")
            .then_some(())
    })
    .await
    .unwrap_or_else(|| panic!("the last request is not in the access log:\n{}", gw.logs()));
    let logs = gw.logs();
    assert!(
        logs.contains("\"level\":\"TRACE\"") || logs.contains("\"level\":\"DEBUG\""),
        "RUST_LOG=trace logged nothing below info"
    );
    let lower = logs.to_ascii_lowercase();
    // The search reads the right output: the sign-ins are there, by account name.
    for who in ["alice", "bob", "dave", "sso|"] {
        assert!(
            lower.contains(&format!("\"user.id\":\"{who}")),
            "no sign-in of {who} logged"
        );
    }
    let found: Vec<&str> = secrets
        .iter()
        .filter(|(_, v)| {
            assert!(v.len() >= 8, "a swept value too short to search for: {v:?}");
            lower.contains(&v.to_ascii_lowercase())
        })
        .map(|(what, _)| what.as_str())
        .collect();
    assert!(found.is_empty(), "in the gateway's output: {found:?}");
    let sans_clock = output_sans_clock(&logs);
    assert!(holds_code(r#"{"code":"123456"}"#, "123456") && !holds_code("01234567", "123456"));
    for code in &codes {
        assert!(
            !holds_code(&sans_clock, code),
            "TOTP code {code} in the gateway's output"
        );
    }
    assert_eq!(
        secrets.len(),
        49,
        "{:?}",
        secrets.iter().map(|(w, _)| w).collect::<Vec<_>>()
    );
}

/// MFA-05: the pre-MFA state is bound to the account whose password was entered. Alice's
/// pre-MFA cookie with Bob's valid code (and Bob's with Alice's) signs nobody in, opens
/// nothing upstream, and leaves Alice's state a pre-MFA state for Alice: her own code
/// then signs in as Alice, never as Bob. A second-factor call without a code (JSON
/// without the field, an empty code, no body; the form without its `code` field) is
/// refused. If this broke, anyone with a password could finish the sign-in with the
/// code of their own account (GHSA-wc43-73w7-x2f5), or skip the second factor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pre_mfa_state_takes_only_its_own_accounts_code() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let bob = accounts.create("acme", "bob", &["admin"], true).await;

    let mut a = Agent::new(&gw, "acme.test");
    let r = a.api_password_step(&alice, None).await;
    assert_eq!((r.status, r.json()["next"].as_str()), (200, Some("mfa")), "{}", r.body);
    let mut b = Agent::new(&gw, "acme.test");
    assert_eq!(b.api_password_step(&bob, None).await.status, 200);

    // Alice's state, Bob's code.
    let bobs_code = bob.fresh_code().await;
    let r = a.post_json("/.portcullis/api/mfa", &json!({ "code": bobs_code })).await;
    assert_eq!(r.status, 401, "alice's state took bob's code: {}", r.body);
    assert!(a.session("prod").is_none(), "a session for alice's state");
    assert_eq!(a.get(PROTECTED).await.status, 401);
    assert_eq!(a.get("/.portcullis/api/whoami").await.status, 401);
    assert!(
        a.cookies.contains_key("__Host-portcullis-prod-pre"),
        "alice's state kept"
    );

    // Bob's state, Alice's code.
    let alices_code = alice.fresh_code().await;
    let r = b
        .post_json("/.portcullis/api/mfa", &json!({ "code": alices_code }))
        .await;
    assert_eq!(r.status, 401, "bob's state took alice's code: {}", r.body);
    assert!(b.session("prod").is_none(), "a session for bob's state");
    assert_eq!(b.get("/admin/panel").await.status, 401);
    assert_eq!(ups.acme.count(), 0, "a crossed code reached the upstream");

    // Each code was only ever checked against the other account: each still signs in
    // its own account, through its own state.
    let r = b.post_json("/.portcullis/api/mfa", &json!({ "code": bobs_code })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(b.get("/.portcullis/api/whoami").await.json()["subject"], "bob");
    let r = a
        .post_json("/.portcullis/api/mfa", &json!({ "code": alices_code }))
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let who = a.get("/.portcullis/api/whoami").await.json();
    assert_eq!((who["subject"].as_str(), &who["roles"]), (Some("alice"), &json!([])));

    // The second step without a code, with a fresh pre-MFA state each time.
    let mut c = Agent::new(&gw, "acme.test");
    for (case, body) in [
        ("no code field", Some(b"{}".to_vec())),
        ("an empty code", Some(br#"{"code": ""}"#.to_vec())),
        ("a null code", Some(br#"{"code": null}"#.to_vec())),
        ("no body", None),
    ] {
        c.cookies.clear();
        assert_eq!(c.api_password_step(&alice, None).await.status, 200);
        let r = c
            .send(
                Method::POST,
                "/.portcullis/api/mfa",
                &[],
                body.map(|b| ("application/json", b)),
            )
            .await;
        assert!([400, 401, 415].contains(&r.status), "{case}: {} {}", r.status, r.body);
        assert!(c.session("prod").is_none(), "{case}: signed in");
        assert_eq!(c.get(PROTECTED).await.status, 401, "{case}");
    }
    // The page twin: the form without its code field.
    let mut p = Agent::new(&gw, "acme.test");
    let r = p.get("/.portcullis/login").await;
    let csrf = r.set_cookie("__Host-portcullis-prod-csrf").expect("CSRF cookie").value;
    let r = p
        .post_form(
            "/.portcullis/login",
            &[
                ("csrf", &csrf),
                ("username", &alice.username),
                ("password", &alice.password),
            ],
        )
        .await;
    assert_eq!(r.header("location"), Some("/.portcullis/mfa"), "{}", r.body);
    let r = p.post_form("/.portcullis/mfa", &[("csrf", &csrf)]).await;
    assert!(
        [400, 401].contains(&r.status),
        "form without code: {} {}",
        r.status,
        r.body
    );
    assert!(p.session("prod").is_none(), "the form without a code signed in");
    assert_eq!(p.get(PROTECTED).await.status, 401);
    assert_eq!(ups.acme.count(), 0, "a request without a second factor reached the app");
}

/// Every value in `secrets` that `text` contains, named by `what`.
fn leaked<'a>(text: &str, secrets: &'a [(String, String)]) -> Vec<&'a str> {
    let lower = text.to_ascii_lowercase();
    secrets
        .iter()
        .filter(|(_, v)| lower.contains(&v.to_ascii_lowercase()))
        .map(|(what, _)| what.as_str())
        .collect()
}

/// The `csrf` hidden field of a page.
fn csrf_field(body: &str) -> String {
    body.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in {body}"))
        .to_string()
}

/// MFA-07: after enrolment no page or JSON endpoint a signed-in user (here a tenant
/// admin, who sees the most) can reach returns the TOTP secret, an `otpauth` URI or a
/// recovery code again; and no endpoint replaces the secret from a session without both
/// factors: the enrolment endpoints need the first-login state (401 with a session), a
/// new password step of an enrolled account leads to the code, not to enrolment, and a
/// tenant admin may not reset their own second factor (403: that would let a session
/// plus the password set up a new authenticator without the current one). Afterwards
/// the original secret still signs in. If this broke, a stolen session could read the
/// second factor or swap it for the attacker's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_enrolment_the_second_factor_is_never_shown_or_replaced_from_a_session() {
    let (_ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let dave = accounts.create("acme", "dave", &["tenant-admin"], false).await;
    let erin = accounts.create("acme", "erin", &[], true).await;

    let mut a = Agent::new(&gw, "acme.test");
    assert_eq!(a.api_password_step(&dave, None).await.json()["next"], "enrol");
    let e = a.get("/.portcullis/api/enrol").await.json();
    let secret = e["secret"].as_str().expect("secret").to_string();
    let uri = e["otpauth_uri"].as_str().expect("otpauth_uri").to_string();
    dave.set_secret(&secret);
    let code = dave.fresh_code().await;
    let r = a.post_json("/.portcullis/api/enrol", &json!({ "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut secrets = vec![
        ("TOTP secret".to_string(), secret.clone()),
        ("otpauth URI".to_string(), uri),
        ("otpauth scheme".to_string(), "otpauth://".to_string()),
    ];
    for (i, c) in r.json()["recovery_codes"].as_array().expect("codes").iter().enumerate() {
        let c = c.as_str().expect("code");
        secrets.push((format!("recovery code {i}"), c.to_string()));
        secrets.push((format!("recovery code {i} without dashes"), c.replace('-', "")));
    }
    assert_eq!(secrets.len(), 23);

    // Every page and JSON endpoint a signed-in tenant admin can GET.
    let reads = [
        "/.portcullis/api/whoami",
        "/.portcullis/api/sessions",
        "/.portcullis/api/history",
        "/.portcullis/api/enrol",
        "/.portcullis/api/openapi.json",
        "/.portcullis/api/admin/users",
        "/.portcullis/api/admin/sessions",
        "/.portcullis/api/admin/history",
        "/.portcullis/api/admin/audit",
        "/.portcullis/api/admin/breakers",
        "/.portcullis/api/admin/sso",
        "/.portcullis/account",
        "/.portcullis/mfa",
        "/.portcullis/enrol",
        "/.portcullis/login",
        "/.portcullis/logout",
        "/.portcullis/admin",
        "/.portcullis/admin/users",
        "/.portcullis/admin/sessions",
        "/.portcullis/admin/history",
        "/.portcullis/admin/audit",
        "/.portcullis/admin/sso",
    ];
    for path in reads {
        let r = a.get(path).await;
        assert!(r.status < 500, "{path}: {} {}", r.status, r.body);
        let headers = format!("{:?}", r.headers);
        let found = leaked(&format!("{headers}\n{}", r.body), &secrets);
        assert!(found.is_empty(), "{path} ({}) returned {found:?}", r.status);
    }
    // The enrolment endpoints are there for the first sign-in only.
    let r = a.get("/.portcullis/api/enrol").await;
    assert_eq!(r.status, 401, "enrolment read with a session: {}", r.body);

    // Re-enrolment from the session: a new code for the enrolment endpoints, as JSON and
    // as a form, changes nothing.
    let code = dave.fresh_code().await;
    let r = a.post_json("/.portcullis/api/enrol", &json!({ "code": code })).await;
    assert_eq!(r.status, 401, "re-enrolment from a session: {}", r.body);
    let page = a.get("/.portcullis/account").await;
    let csrf = csrf_field(&page.body);
    let r = a
        .post_form("/.portcullis/enrol", &[("csrf", &csrf), ("code", &code)])
        .await;
    assert!(
        r.status >= 400 || (r.status == 303 && r.header("location") == Some("/.portcullis/login")),
        "enrolment form with a session: {} {:?} {}",
        r.status,
        r.header("location"),
        r.body
    );
    assert!(r.set_cookie("__Host-portcullis-prod").is_none(), "a new session");
    assert!(leaked(&r.body, &secrets).is_empty());

    // A new password step of the enrolled account goes to the code, not to enrolment.
    let mut again = Agent::new(&gw, "acme.test");
    assert_eq!(again.api_password_step(&dave, None).await.json()["next"], "mfa");
    let r = again.get("/.portcullis/api/enrol").await;
    assert_eq!(r.status, 401, "{}", r.body);

    // The tenant admin's own MFA reset, as JSON and as a form: refused; another
    // account's works.
    let r = a.delete("/.portcullis/api/admin/users/dave/mfa").await;
    assert_eq!(r.status, 403, "self MFA reset: {}", r.body);
    assert_eq!(r.json()["error"], "self_mfa_reset", "{}", r.body);
    let users = a.get("/.portcullis/admin/users").await;
    let csrf = csrf_field(&users.body);
    let r = a
        .post_form(
            "/.portcullis/admin/users/mfa-reset",
            &[("csrf", &csrf), ("username", "dave")],
        )
        .await;
    assert_eq!(r.status, 403, "self MFA reset form: {}", r.body);
    assert_eq!(a.get("/.portcullis/api/whoami").await.status, 200, "session kept");
    let r = a.delete("/.portcullis/api/admin/users/erin/mfa").await;
    assert_eq!(r.status, 200, "{}", r.body);
    let mut e = Agent::new(&gw, "acme.test");
    assert_eq!(e.api_password_step(&erin, None).await.json()["next"], "enrol");

    // Dave's original secret is still the one: a fresh code of it signs in.
    let stored = accounts
        .store("prod")
        .get_user("acme", "dave")
        .await
        .unwrap()
        .expect("dave");
    assert_eq!(stored.totp_secret.as_deref(), Some(secret.as_str()));
    let code = dave.fresh_code().await;
    let r = again.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_eq!(r.status, 200, "the original secret no longer works: {}", r.body);
}

/// A WebSocket upgrade of `path` on acme with `cookie`.
async fn open_ws(
    gw: &Gateway,
    path: &str,
    cookie: &str,
) -> Result<tokio_tungstenite::WebSocketStream<TcpStream>, tokio_tungstenite::tungstenite::Error> {
    let mut req = format!("ws://acme.test:{}{path}", gw.public.port())
        .into_client_request()
        .expect("request");
    req.headers_mut().insert("cookie", cookie.parse().expect("cookie"));
    let tcp = TcpStream::connect(gw.public).await.expect("connect");
    tokio_tungstenite::client_async(req, tcp).await.map(|(ws, _)| ws)
}

/// Sends `text` and waits for its echo.
async fn echo(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, text: &str) {
    ws.send(Message::text(text)).await.expect("send");
    let got = tokio::time::timeout(Duration::from_secs(5), ws.next())
        .await
        .expect("echo in time")
        .expect("a frame")
        .expect("ok");
    assert_eq!(got, Message::text(text));
}

/// After the close: a frame sent now is never echoed (the upstream never gets it).
async fn assert_nothing_passes(ws: &mut tokio_tungstenite::WebSocketStream<TcpStream>, after: &str) {
    let _ = ws.send(Message::text("after")).await;
    let next = tokio::time::timeout(Duration::from_millis(500), ws.next()).await;
    assert!(
        !matches!(next, Ok(Some(Ok(Message::Text(_))))),
        "a frame was echoed after {after}"
    );
}

/// A signed-in `subject` of acme with an open, working WebSocket on `/app/ws`.
async fn signed_in_socket(gw: &Gateway, user: &TestUser) -> (Agent, tokio_tungstenite::WebSocketStream<TcpStream>) {
    let mut a = Agent::new(gw, "acme.test");
    a.api_login(user).await;
    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    let mut ws = open_ws(gw, "/app/ws", &cookie).await.expect("upgrade with a session");
    echo(&mut ws, "before").await;
    (a, ws)
}

/// WS-02, account disabled: an operator's account kill switch (admin API) and a tenant
/// admin's (the tenant's JSON API) each close that account's open WebSocket with 1008
/// within 2 s; nothing is echoed afterwards, and the cookie opens no new socket. Another
/// account's socket stays open. If this broke, a suspended account (a phished user, a
/// fired employee) would keep its live channel into the app for as long as the socket
/// stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_of_a_disabled_account_is_closed() {
    let token = random_hex(24);
    let (_ups, gw) = start_with(|f| {
        f.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))];
    })
    .await;
    let accounts = Accounts::open(&gw).await;
    let hana = accounts.create("acme", "hana", &[], true).await;
    let ivo = accounts.create("acme", "ivo", &[], true).await;
    let tina = accounts.create("acme", "tina", &["tenant-admin"], true).await;

    // By an operator.
    let (a, mut ws) = signed_in_socket(&gw, &hana).await;
    let (_, mut bystander) = signed_in_socket(&gw, &ivo).await;
    let r = reqwest::Client::new()
        .put(gw.admin_url("/v1/tenants/acme/accounts/hana/breaker"))
        .bearer_auth(&token)
        .json(&json!({"reason": "phished"}))
        .send()
        .await
        .expect("trip");
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());
    assert_closed_with_1008(&mut ws, Duration::from_secs(2), "an operator's account switch").await;
    assert_nothing_passes(&mut ws, "an operator's account switch").await;
    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    assert!(
        open_ws(&gw, "/app/ws", &cookie).await.is_err(),
        "a disabled account opened a WebSocket"
    );
    echo(&mut bystander, "still here").await;

    // By a tenant admin.
    let mut admin = Agent::new(&gw, "acme.test");
    admin.api_login(&tina).await;
    let (_, mut ws) = signed_in_socket(&gw, &ivo).await;
    let r = admin
        .send(
            Method::PUT,
            "/.portcullis/api/admin/accounts/ivo/breaker",
            &[],
            Some(("application/json", br#"{"reason": "left the company"}"#.to_vec())),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_closed_with_1008(&mut ws, Duration::from_secs(2), "a tenant admin's account switch").await;
    assert_nothing_passes(&mut ws, "a tenant admin's account switch").await;
    assert_closed_with_1008(&mut bystander, Duration::from_secs(2), "the same switch").await;
}

/// WS-02, absolute lifetime: a session whose absolute lifetime (5 s) runs out while its
/// WebSocket is open and in use (frames, and requests that keep the 3 s idle timeout
/// from ending it first) has the socket closed with 1008 within 2 s of the end, and
/// nothing passes afterwards. If this broke, one sign-in could hold a live channel into
/// the app forever, past every re-authentication the policy asks for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_websocket_ends_with_its_sessions_absolute_lifetime() {
    let (ups, gw) = start_with(|f| f.tenant_mut("acme").session_timeouts = ("3s".into(), "5s".into())).await;
    let accounts = Accounts::open(&gw).await;
    let kai = accounts.create("acme", "kai", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    let r = a.api_password_step(&kai, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let code = kai.fresh_code().await;
    let signed_in = Instant::now();
    let r = a.post_json("/.portcullis/api/mfa", &json!({ "code": code })).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let cookie = format!("__Host-portcullis-prod={}", a.session("prod").expect("token"));
    let mut ws = open_ws(&gw, "/app/ws", &cookie).await.expect("upgrade with a session");
    // In use past the idle timeout, until shortly before the end.
    while signed_in.elapsed() < Duration::from_millis(4000) {
        echo(&mut ws, "busy").await;
        assert_eq!(
            a.get("/.portcullis/api/whoami").await.status,
            200,
            "at {:?}",
            signed_in.elapsed()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let deadline = Duration::from_secs(5 + 2).saturating_sub(signed_in.elapsed());
    assert_closed_with_1008(&mut ws, deadline, "the absolute lifetime").await;
    assert_nothing_passes(&mut ws, "the absolute lifetime").await;
    assert_eq!(a.get(PROTECTED).await.status, 401, "the session outlived its lifetime");
    let upgrades = ups.acme.requests().iter().filter(|r| r.target == "/app/ws").count();
    assert_eq!(upgrades, 1, "one upgrade only");
}
