//! A gateway behind a TLS-terminating load balancer: the public listener is plaintext on
//! a port of its own, users see `https://<host>` (port 443), and the policy says so with
//! `[listen] external_scheme = "https"`, `external_port = 443`. Every absolute URL the
//! gateway hands out (OIDC `redirect_uri`, post-logout redirect, the SSO wizard's
//! addresses) must be the one users see, the session cookie must be `Secure`, and a
//! browser's `Origin: https://<host>` must pass the same-origin checks. The test plays
//! the balancer: what the browser would send to `https://<host>/...` it sends to the
//! listener's own port.

use http::Method;
use reqwest::Url;
use serde_json::{Value, json};

use crate::harness::*;
use crate::idp::{Account, Idp, IdpClient};
use crate::sso::{SECRET, sso_gateway_fixture};

/// What users type and what their browser sends as `Origin`.
const USERS_SEE: &str = "https://initech.test";

/// The fixture's gateway.toml, told that users reach it as `https://<host>` on 443 while
/// it listens in plaintext (the harness writes `plaintext = true` without TLS certs).
fn behind_tls_balancer(f: &mut PolicyFixture) {
    // `data = "./data"`: relative to the policy directory, as the harness's own is.
    let toml = f.gateway_toml(std::path::Path::new("."));
    assert!(toml.contains("plaintext = true\n"), "{toml}");
    let toml = toml.replace(
        "plaintext = true\n",
        "plaintext = true\nexternal_scheme = \"https\"\nexternal_port = 443\n",
    );
    f.extra_files.push(("gateway.toml".into(), toml));
}

/// The one value of query parameter `name` in `url`.
fn query_param(url: &str, name: &str) -> String {
    let url = Url::parse(url).unwrap_or_else(|e| panic!("{url}: {e}"));
    let values: Vec<String> = url
        .query_pairs()
        .filter(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(values.len(), 1, "{name} in {url}");
    values.into_iter().next().unwrap()
}

/// The session cookie's `Set-Cookie` must keep the flags SPEC fixes for it, whatever the
/// listener speaks.
fn assert_secure_session_cookie(reply: &Reply, name: &str) {
    let cookie = reply
        .set_cookie(name)
        .unwrap_or_else(|| panic!("no {name} in {:?}", reply.headers));
    assert!(!cookie.is_removal(), "{cookie:?}");
    for flag in ["secure", "httponly"] {
        assert_eq!(cookie.attr(flag).as_deref(), Some(""), "{flag} missing: {cookie:?}");
    }
    assert_eq!(cookie.attr("path").as_deref(), Some("/"), "{cookie:?}");
    assert_eq!(cookie.attr("samesite").as_deref(), Some("Lax"), "{cookie:?}");
    assert_eq!(cookie.attr("domain"), None, "{cookie:?}");
}

/// If this broke, SSO behind a TLS-terminating balancer would send the IdP the
/// listener's `http://host:<port>` as `redirect_uri` (the IdP refuses it, or the browser
/// lands on a port it cannot reach), and signing out would send users back there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_behind_a_tls_balancer_hands_out_the_origin_users_see() {
    let ups = Upstreams::start().await;
    let mut idp = Idp::bind(&[Account::new("ivy", "pw-ivy").amr(&["pwd", "otp"])]);
    let gw = sso_gateway_fixture(&ups, &idp.issuer(), "required", "", behind_tls_balancer).await;
    // The IdP knows only the https address: the listener's own is refused there.
    idp.register(&[IdpClient::new(
        "gw-initech",
        SECRET,
        &format!("{USERS_SEE}/.portcullis/callback"),
    )]);
    let mut browser = Agent::new(&gw, "initech.test");

    let start = browser.get("/.portcullis/login/sso?rd=%2Fapp%2Fdata").await;
    assert_eq!(start.status, 303, "{}", start.body);
    let authorize = start.header("location").unwrap().to_string();
    assert!(authorize.starts_with(&idp.issuer()), "{authorize}");
    assert_eq!(
        query_param(&authorize, "redirect_uri"),
        format!("{USERS_SEE}/.portcullis/callback")
    );

    // The IdP accepted the redirect_uri and sends the browser back to it.
    let callback = idp
        .login(&authorize, "ivy", "pw-ivy")
        .await
        .unwrap_or_else(|e| panic!("{e}\n{}", idp.logs()));
    let callback_path = callback
        .strip_prefix(USERS_SEE)
        .unwrap_or_else(|| panic!("the IdP redirected to {callback}, not to {USERS_SEE}"));
    assert!(callback_path.starts_with("/.portcullis/callback?"), "{callback}");
    assert!(!callback.contains("error="), "{callback}");

    // The balancer forwards it to the listener; the code exchange names the same
    // redirect_uri, so the IdP hands out tokens.
    let signed_in = browser.get(callback_path).await;
    assert_eq!(
        (signed_in.status, signed_in.header("location")),
        (303, Some("/app/data")),
        "{}",
        signed_in.body
    );
    assert_secure_session_cookie(&signed_in, "__Host-portcullis-staging");
    let me = browser.get("/.portcullis/api/whoami").await;
    assert_eq!(
        (me.status, me.json()["subject"].clone()),
        (200, json!("ivy")),
        "{}",
        me.body
    );

    // Signing out goes on to the IdP, which is to send the user back to the https origin.
    let page = browser.get("/.portcullis/logout").await;
    let csrf = page
        .body
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .expect("csrf in the sign-out page")
        .to_string();
    let out = browser
        .send(
            Method::POST,
            "/.portcullis/logout",
            &[("origin", USERS_SEE)],
            Some(("application/x-www-form-urlencoded", format!("csrf={csrf}").into_bytes())),
        )
        .await;
    assert_eq!(out.status, 303, "{}", out.body);
    let end_session = out.header("location").unwrap();
    assert!(end_session.starts_with(&idp.issuer()), "{end_session}");
    assert_eq!(
        query_param(end_session, "post_logout_redirect_uri"),
        format!("{USERS_SEE}/.portcullis/login")
    );
    assert_eq!(browser.get("/.portcullis/api/whoami").await.status, 401);
}

/// If this broke, a local sign-in behind a TLS-terminating balancer would set a session
/// cookie without `Secure` (or under another name than SPEC's), a browser on the https
/// origin would be refused as cross-origin, or the SSO wizard would show a tenant admin
/// a callback address the IdP must not register.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_sign_in_behind_a_tls_balancer_sets_a_secure_cookie() {
    let (ups, gw) = start_with(behind_tls_balancer).await;
    let users = Accounts::open(&gw).await;
    let ina = users.create("initech", "ina", &["tenant-admin"], true).await;
    let mut browser = Agent::new(&gw, "initech.test");
    let credentials = json!({ "username": ina.username, "password": ina.password });
    let post = |origin: &'static str, body: &Value| {
        (
            [("origin", origin)],
            Some(("application/json", body.to_string().into_bytes())),
        )
    };

    // The same-origin check still bites: another site's Origin is refused.
    let (headers, body) = post("https://evil.test", &credentials);
    let refused = browser
        .send(Method::POST, "/.portcullis/api/login", &headers, body)
        .await;
    assert_eq!(refused.status, 403, "{}", refused.body);

    let (headers, body) = post(USERS_SEE, &credentials);
    let password = browser
        .send(Method::POST, "/.portcullis/api/login", &headers, body)
        .await;
    assert_eq!(password.status, 200, "{}", password.body);
    assert_eq!(password.json()["next"], "mfa", "{}", password.body);
    let (headers, body) = post(USERS_SEE, &json!({ "code": ina.fresh_code().await }));
    let mfa = browser.send(Method::POST, "/.portcullis/api/mfa", &headers, body).await;
    assert_eq!(mfa.status, 200, "{}", mfa.body);
    assert_secure_session_cookie(&mfa, &ina.session_cookie());

    // The wizard shows the addresses the tenant's IdP is to register.
    let wizard = browser.get("/.portcullis/api/admin/sso").await;
    assert_eq!(wizard.status, 200, "{}", wizard.body);
    let view = wizard.json();
    assert_eq!(
        view["redirect_uri"],
        format!("{USERS_SEE}/.portcullis/callback"),
        "{view}"
    );
    assert_eq!(
        view["backchannel_logout_uri"],
        format!("{USERS_SEE}/.portcullis/backchannel-logout"),
        "{view}"
    );

    // Users are on https: the browser is told to stay there, and the app is told so too.
    let app = browser.get("/app/data").await;
    assert_eq!(app.status, 200, "{}", app.body);
    let hsts = app.header("strict-transport-security").unwrap_or_default();
    assert!(hsts.starts_with("max-age="), "no HSTS behind the balancer: {hsts:?}");
    let forwarded = ups.initech.requests().pop().expect("the app was asked");
    assert_eq!(forwarded.header("x-forwarded-proto"), Some("https"));
}
