//! Attacks at the edges of the security suite (SECURITY-CASES RDR-08, TEN-07, TEN-10,
//! ADM-09 and RES-01), each against the real binary: redirect parameters on sign-out,
//! forwarding headers over TLS, a prod route into the staging network (by an approved
//! change and by name resolution), hostile display names and IdP-supplied text on every
//! page (raw HTML and a real Chromium), and the SSO callback's answers when the code,
//! the state or the IdP itself is bad.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use reqwest::Method;
use serde_json::{Value, json};

use crate::harness::*;
use crate::idp::Account;
use crate::sso::{Browser, ForgingIdp, csrf_in, idp_and_gateway, whoami};

// ---------------------------------------------------------------------------------------
// RDR-08: redirect parameters on sign-out
// ---------------------------------------------------------------------------------------

/// RDR-01..06 and RDR-08's targets: other hosts, other tenants and tiers, encodings and
/// schemes a lenient redirect check lets through.
const OFF_HOST_TARGETS: [&str; 25] = [
    "//evil.example",
    "https://evil.example/",
    "//evil.example/",
    "%2F%2Fevil.example",
    "%252F%252Fevil.example",
    "http://acme.test/",
    "/\\evil.example",
    "/%5Cevil.example",
    "\\\\evil.example",
    "/\\/evil.example",
    "/%09/evil.example",
    "/%0a/evil.example",
    "/%0d/evil.example",
    "/%0b/evil.example",
    "/ /evil.example",
    "https://acme.test.evil.example/",
    "https://xacme.test/",
    "https://acme.test%2eevil.example/",
    "javascript:alert(1)",
    "JaVaScRiPt:alert(1)",
    "java%0ascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "https://globex.test/",
    "https://initech.test/",
    "https://acme.test@evil.example/",
];

/// Every name a sign-out redirect goes by somewhere (OIDC RP-initiated logout,
/// oauth2-proxy, Django, Rails, ...).
const REDIRECT_PARAMS: [&str; 7] = [
    "post_logout_redirect_uri",
    "rd",
    "next",
    "redirect",
    "redirect_uri",
    "return_to",
    "returnTo",
];

/// Where a local sign-out always lands.
const SIGNED_OUT: &str = "/.portcullis/login?signed_out=1";

/// `name=<target>&...` for every redirect parameter, the target percent-encoded.
fn redirect_query(target: &str) -> String {
    let value = percent_encoding::utf8_percent_encode(target, percent_encoding::NON_ALPHANUMERIC).to_string();
    REDIRECT_PARAMS
        .iter()
        .map(|p| format!("{p}={value}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// Whether `text` names anything of `target` but a path of this host: another host,
/// another tenant, a script or data URL.
fn leaks_target(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    [
        "evil.example",
        "javascript",
        "java%0ascript",
        "data:text",
        "globex.test",
        "initech.test",
        "http://acme",
        "https://",
    ]
    .iter()
    .any(|needle| lower.contains(needle))
}

/// RDR-08: `post_logout_redirect_uri`, `rd`, `next` and their cousins, carrying every
/// RDR-01..06 target and another tenant's and tier's host, on the sign-out page (GET),
/// its form (POST, in the query and in the body) and its JSON twin. The sign-out page
/// only offers a form to the fixed sign-out address; the form always ends the session
/// and lands on the local "signed out" page; the JSON twin ends it and names no target.
/// Without a session both answer with the login page, never elsewhere. If this broke, a
/// link to the tenant's own sign-out could carry its users off to a phishing page (the
/// tenant's host vouching for it), or a crafted target could keep a session alive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_out_ignores_every_redirect_parameter_and_always_ends_the_session() {
    let (_ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    // Two sessions per target (the form, the JSON twin), written straight into the store
    // (CSRF token "x"): faster than 50 sign-ins, each needing its own TOTP step.
    let tokens = accounts.insert_sessions("acme", OFF_HOST_TARGETS.len() * 2).await;
    let cookie_of = |token: &str| format!("__Host-portcullis-prod={token}");
    let mut agent = Agent::new(&gw, "acme.test");
    let origin = agent.origin();

    for (i, target) in OFF_HOST_TARGETS.iter().enumerate() {
        let query = redirect_query(target);
        let form_session = cookie_of(&tokens[2 * i]);
        let api_session = cookie_of(&tokens[2 * i + 1]);

        // The sign-out page: a form posting to the fixed address, nothing of the target.
        let r = agent
            .send(
                Method::GET,
                &format!("/.portcullis/logout?{query}"),
                &[("cookie", &form_session)],
                None,
            )
            .await;
        assert_eq!(r.status, 200, "{target}: {}", r.body);
        assert!(r.header("location").is_none(), "{target}: {:?}", r.headers);
        assert!(
            r.body.contains(r#"action="/.portcullis/logout""#),
            "{target}: {}",
            r.body
        );
        assert!(
            !leaks_target(&r.body),
            "{target}: the page names the target: {}",
            r.body
        );

        // The form, with the target in the query and in the body: signed out, to the
        // local page, the session cookie cleared.
        let mut body = form_urlencoded::Serializer::new(String::from("csrf=x"));
        for p in REDIRECT_PARAMS {
            body.append_pair(p, target);
        }
        let r = agent
            .send(
                Method::POST,
                &format!("/.portcullis/logout?{query}"),
                &[("cookie", &form_session), ("origin", &origin)],
                Some(("application/x-www-form-urlencoded", body.finish().into_bytes())),
            )
            .await;
        assert_eq!(r.status, 303, "{target}: {}", r.body);
        assert_eq!(r.header("location"), Some(SIGNED_OUT), "{target}");
        let cleared = r
            .set_cookie("__Host-portcullis-prod")
            .expect("the session cookie is cleared");
        assert!(cleared.is_removal(), "{target}: {cleared:?}");
        let r = agent
            .send(
                Method::GET,
                "/.portcullis/api/whoami",
                &[("cookie", &form_session)],
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{target}: the session outlived its sign-out");

        // The JSON twin: ended, and the answer names nowhere to go.
        let json_body: Value = REDIRECT_PARAMS.iter().map(|p| (p.to_string(), json!(target))).collect();
        let r = agent
            .send(
                Method::POST,
                &format!("/.portcullis/api/logout?{query}"),
                &[("cookie", &api_session)],
                Some(("application/json", json_body.to_string().into_bytes())),
            )
            .await;
        assert_eq!(r.status, 200, "{target}: {}", r.body);
        assert_eq!(r.json(), json!({"status": "signed_out"}), "{target}");
        assert!(r.header("location").is_none(), "{target}");
        let r = agent
            .send(
                Method::GET,
                "/.portcullis/api/whoami",
                &[("cookie", &api_session)],
                None,
            )
            .await;
        assert_eq!(r.status, 401, "{target}: the session outlived its sign-out");

        // No session: the login page, whatever the target.
        let mut anonymous = Agent::new(&gw, "acme.test");
        for method in [Method::GET, Method::POST] {
            let r = anonymous
                .send(method.clone(), &format!("/.portcullis/logout?{query}"), &[], None)
                .await;
            assert_eq!(r.status, 303, "{method} {target}: {}", r.body);
            assert_eq!(r.header("location"), Some("/.portcullis/login"), "{method} {target}");
        }
    }
}

/// RDR-08 for an SSO user: RP-initiated sign-out sends the browser to the IdP's
/// end-session endpoint with `post_logout_redirect_uri` set to the tenant's own login
/// page, whatever `post_logout_redirect_uri` (or `rd`, `next`, ...) the sign-out request
/// carried, and the gateway session ends. If this broke, the tenant's sign-out link
/// could make the IdP send users on to a host of the attacker's choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_sign_out_hands_the_idp_only_the_tenants_own_return_address() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(
        &ups,
        &[Account::new("rita", "pw-rita").amr(&["pwd", "otp"])],
        "required",
    )
    .await;
    let port = gw.public.port();
    let canonical_return = format!("http://initech.test:{port}/.portcullis/login");
    let mut b = Browser::new(port);
    let callback = b.through_idp(&idp, "rita", "pw-rita").await;
    assert_eq!(b.get(&callback).await.0, 303);
    assert_eq!(whoami(&mut b).await.0, 200);

    let query = redirect_query("//evil.example");
    let (status, _, page) = b.get(&format!("/.portcullis/logout?{query}")).await;
    assert_eq!(status, 200);
    assert!(!leaks_target(&page), "{page}");
    let mut body = form_urlencoded::Serializer::new(format!("csrf={}", csrf_in(&page)));
    for p in REDIRECT_PARAMS {
        body.append_pair(p, "https://evil.example/");
    }
    let (status, location, headers) = b
        .post_form(&format!("/.portcullis/logout?{query}"), body.finish())
        .await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with(&idp.issuer()),
        "to the IdP's end-session endpoint: {location}"
    );
    assert!(!location.contains("evil.example"), "{location}");
    let returns: Vec<String> = reqwest::Url::parse(&location)
        .unwrap()
        .query_pairs()
        .filter(|(k, _)| k == "post_logout_redirect_uri")
        .map(|(_, v)| v.into_owned())
        .collect();
    assert_eq!(returns, vec![canonical_return], "{location}");
    for c in headers.get_all("set-cookie") {
        let c = c.to_str().unwrap_or_default();
        if c.starts_with("__Host-portcullis-staging=") {
            assert!(c.starts_with("__Host-portcullis-staging=;"), "cleared: {c}");
        }
    }
    assert_eq!(whoami(&mut b).await.0, 401, "the gateway session ended");
}

// ---------------------------------------------------------------------------------------
// TEN-10: a prod route into the staging network
// ---------------------------------------------------------------------------------------

/// A TCP listener that only counts the connections it accepts (an app in the staging
/// network that must never hear from prod).
struct ConnectionCounter {
    addr: std::net::SocketAddr,
    accepted: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ConnectionCounter {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = accepted.clone();
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                drop(stream);
            }
        });
        ConnectionCounter { addr, accepted, task }
    }

    fn connections(&self) -> usize {
        self.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for ConnectionCounter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// TEN-10. The prod tier may reach only its two apps (`127.0.0.1:<port>` entries) and the
/// name `localhost`; the staging tier keeps the whole loopback network. (1) An approved
/// four-eyes change moving acme's upstream to the staging app's address is refused at
/// approval (422, the allowlist named), nothing written, acme served as before and the
/// staging app untouched. (2) globex's upstream is the allowlisted name `localhost` on the
/// port of a staging app: the name resolves into the staging network, which prod's
/// address entries do not cover, so the connection is refused at connect time (502, an
/// `upstream_refused` security event) and the staging app accepts 0 connections. If this
/// broke, two operators (or one DNS answer) could send prod traffic, with prod's
/// identity assertions and upstream credential, to a staging app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prod_traffic_never_reaches_the_staging_network() {
    let staging_app = ConnectionCounter::start().await;
    let ups = Upstreams::start().await;
    let (olivia, oscar) = (random_hex(24), random_hex(24));
    let mut f = PolicyFixture::for_upstreams(&ups);
    f.prod_operators = vec![
        ("olivia".into(), sha256_hex(olivia.as_bytes())),
        ("oscar".into(), sha256_hex(oscar.as_bytes())),
    ];
    f.tenant_mut("globex").upstream = format!("http://localhost:{}", staging_app.addr.port());
    let default_allowlist = r#"upstream_allowlist = ["127.0.0.1", "::1", "localhost"]"#;
    let prod_toml = f.prod_toml();
    assert!(prod_toml.contains(default_allowlist), "{prod_toml}");
    let prod_toml = prod_toml.replace(
        default_allowlist,
        &format!(
            r#"upstream_allowlist = ["127.0.0.1:{}", "localhost"]"#,
            ups.acme.addr.port()
        ),
    );
    f.extra_files.push(("tiers/prod.toml".into(), prod_toml));
    let gw = Gateway::start(&f).await;
    let admin = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |token: &str, path: &str, body: Value| {
        admin
            .post(gw.admin_url(path))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
    };
    let acme_file = || std::fs::read_to_string(gw.policy_dir.join("tenants/acme.toml")).unwrap();
    let before = acme_file();

    // (1) The approved change.
    let r = call(
        &olivia,
        "/v1/changes",
        json!({"kind": "tenant.update", "target": "acme",
               "change": {"upstream": ups.initech.url()}, "reason": "OPS-9 move acme"}),
    )
    .await
    .unwrap();
    assert_eq!(r.status(), 201, "held for a second operator");
    let proposed: Value = r.json().await.unwrap();
    let id = proposed["id"].as_str().unwrap();
    let digest = proposed["digest"].as_str().unwrap();
    let r = call(
        &oscar,
        &format!("/v1/changes/{id}/approve"),
        json!({ "digest": digest }),
    )
    .await
    .unwrap();
    let status = r.status().as_u16();
    let decided: Value = r.json().await.unwrap();
    assert_eq!(status, 422, "{decided}");
    assert_eq!(decided["status"], "failed", "{decided}");
    let errors = decided["errors"].to_string();
    assert!(errors.contains("outside the allowlist of tier `prod`"), "{errors}");
    assert_eq!(acme_file(), before, "the policy file changed");
    let audited = |action: &'static str| {
        let (admin, url, token) = (
            admin.clone(),
            gw.admin_url(&format!("/v1/audit?action={action}")),
            oscar.clone(),
        );
        async move {
            let records: Value = admin
                .get(url)
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            records.as_array().map_or(0, Vec::len)
        }
    };
    assert_eq!(audited("change.failed").await, 1, "the refusal is audited");
    assert_eq!(audited("change.apply").await, 0, "nothing applied");
    let r = raw_get(gw.public, "acme.test", "/public/ping").await;
    assert_eq!(r.status, 200);
    assert_eq!(ups.acme.count(), 1, "acme is served by its own app");
    assert_eq!(ups.initech.count(), 0, "the staging app got prod's request");

    // (2) A name that resolves into the staging network.
    for path in ["/public/ping", "/public/other"] {
        let r = raw_get(gw.public, "globex.test", path).await;
        assert!(r.status == 502 || r.status == 403, "{path}: {}", r.status);
        let body = String::from_utf8_lossy(&r.body).to_string();
        assert!(!body.contains(&format!(":{}", staging_app.addr.port())), "{body}");
    }
    assert_eq!(staging_app.connections(), 0, "prod connected to the staging network");
    gw.await_security_event("upstream_refused", |e| e["portcullis.tier"] == "prod")
        .await;
}

// ---------------------------------------------------------------------------------------
// TEN-07: forwarding headers over TLS
// ---------------------------------------------------------------------------------------

/// A test CA and one certificate per host: (CA PEM, [(host, cert PEM, key PEM)]).
fn test_pki(hosts: &[&str]) -> (String, Vec<TlsCert>) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "edge test CA");
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let certs = hosts
        .iter()
        .map(|host| {
            let key = KeyPair::generate().unwrap();
            let params = CertificateParams::new(vec![(*host).to_string()]).unwrap();
            let cert = params.signed_by(&key, &ca, &ca_key).unwrap();
            TlsCert {
                hosts: vec![(*host).to_string()],
                cert_pem: cert.pem(),
                key_pem: key.serialize_pem(),
            }
        })
        .collect();
    (ca.pem(), certs)
}

/// Valid ID token claims of the forging IdP for initech's client.
fn id_claims(issuer: &str, sub: &str, nonce: &str, extra: Value) -> Value {
    let now = portcullis::clock::unix_now();
    let mut claims = json!({"iss": issuer, "aud": "gw-initech", "sub": sub, "iat": now, "exp": now + 300,
                            "nonce": nonce, "amr": ["pwd", "otp"]});
    if let (Some(c), Value::Object(extra)) = (claims.as_object_mut(), extra) {
        c.extend(extra);
    }
    claims
}

/// One query parameter of a URL, decoded.
fn url_param(url: &str, name: &str) -> Option<String> {
    reqwest::Url::parse(url)
        .ok()?
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// The `Set-Cookie`s of a response, parsed.
fn set_cookies(r: &reqwest::Response) -> Vec<SetCookie> {
    r.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .filter_map(SetCookie::parse)
        .collect()
}

/// The attributes every gateway cookie keeps over TLS, whatever the client claims.
fn assert_secure_host_cookie(c: &SetCookie, case: &str) {
    assert!(c.name.starts_with("__Host-portcullis-staging"), "{case}: {c:?}");
    assert!(c.attr("secure").is_some(), "{case}: not Secure: {c:?}");
    assert!(c.attr("httponly").is_some(), "{case}: not HttpOnly: {c:?}");
    assert_eq!(c.attr("path").as_deref(), Some("/"), "{case}: {c:?}");
    assert!(
        c.attr("domain").is_none(),
        "{case}: a __Host- cookie has no Domain: {c:?}"
    );
}

/// The spoofed forwarding headers of TEN-07: another tenant's host, plain http.
const SPOOFED_FORWARDING: [(&str, &str); 4] = [
    ("x-forwarded-host", "globex.test"),
    ("forwarded", "for=203.0.113.9;host=globex.test;proto=http"),
    ("x-forwarded-proto", "http"),
    ("x-forwarded-port", "80"),
];

/// TEN-07 over TLS, from an untrusted peer and from a trusted proxy (`trusted_proxies`
/// covering the test's 127.0.0.1): `X-Forwarded-Host: globex.test`, `Forwarded:
/// host=globex.test;proto=http`, `X-Forwarded-Proto: http` and `X-Forwarded-Port: 80`
/// on every request of an SSO sign-in to initech. Either way the `redirect_uri` sent to
/// the IdP (and used in the code exchange) is `https://initech.test:<port>/...` (the
/// configured host, the listener's scheme), the pending-login and session cookies are
/// `__Host-` with Secure, HttpOnly, Path=/ and no Domain, the session belongs to
/// initech, and initech's app (never globex's) gets the requests. What a trusted proxy
/// gets honoured: its `X-Forwarded-Host`/`-Proto` reach the app as it sent them (and
/// `X-Forwarded-For` picks the client address); from an untrusted peer the app sees the
/// gateway's own `https` and `initech.test`. If this broke, a client (or a proxy
/// relaying client headers) could move the callback to another tenant's host or to
/// plain http, or strip Secure from the session cookie.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarding_headers_move_neither_the_callback_nor_the_cookies_over_tls() {
    for trusted in [false, true] {
        let case = if trusted { "trusted proxy" } else { "untrusted peer" };
        let ups = Upstreams::start().await;
        let fake = ForgingIdp::start().await;
        let (ca_pem, certs) = test_pki(&["acme.test", "globex.test", "initech.test"]);
        let mut f = PolicyFixture::for_upstreams(&ups);
        f.tls = certs;
        if trusted {
            f.trusted_proxies = vec!["127.0.0.1/32".into()];
        }
        f.tenant_mut("initech").routes.push_str(&format!(
            "\n[sso]\nissuer = \"{}\"\nclient_id = \"gw-initech\"\nclient_secret = \"inline:{}\"\nroles_claim = \"groups\"\nmfa = \"required\"\n",
            fake.issuer(),
            crate::sso::SECRET
        ));
        let gw = Gateway::start(&f).await;
        let port = gw.public.port();
        let client = gw
            .client_builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap())
            .build()
            .unwrap();
        let base = format!("https://initech.test:{port}");
        let spoofed = |req: reqwest::RequestBuilder| {
            SPOOFED_FORWARDING
                .iter()
                .fold(req.header("accept", "text/html"), |req, (n, v)| req.header(*n, *v))
        };

        // The sign-in start.
        let r = spoofed(client.get(format!("{base}/.portcullis/login/sso?rd=%2Fapp%2Fhome")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{case}");
        let location = r.headers()["location"].to_str().unwrap().to_string();
        assert!(
            location.starts_with(&format!("{}/auth?", fake.issuer())),
            "{case}: {location}"
        );
        assert_eq!(
            url_param(&location, "redirect_uri").as_deref(),
            Some(format!("https://initech.test:{port}/.portcullis/callback").as_str()),
            "{case}: {location}"
        );
        assert!(!location.contains("globex"), "{case}: {location}");
        let pending: Vec<SetCookie> = set_cookies(&r);
        assert_eq!(pending.len(), 1, "{case}: {pending:?}");
        assert_secure_host_cookie(&pending[0], case);
        let (state, nonce) = (
            url_param(&location, "state").unwrap(),
            url_param(&location, "nonce").unwrap(),
        );

        // The callback: the session cookie keeps its attributes.
        *fake.next_token.lock().unwrap() = fake.sign(
            jsonwebtoken::Algorithm::EdDSA,
            "k1",
            &id_claims(&fake.issuer(), "tess", &nonce, json!({})),
        );
        let r = spoofed(client.get(format!("{base}/.portcullis/callback?code=c&state={state}")))
            .header("cookie", format!("{}={}", pending[0].name, pending[0].value))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "{case}");
        assert_eq!(r.headers()["location"], "/app/home", "{case}");
        assert!(r.headers().contains_key("strict-transport-security"), "{case}");
        let session = set_cookies(&r)
            .into_iter()
            .find(|c| c.name == "__Host-portcullis-staging")
            .unwrap_or_else(|| panic!("{case}: no session cookie"));
        assert_secure_host_cookie(&session, case);
        assert!(!session.is_removal(), "{case}: {session:?}");
        let cookie = format!("__Host-portcullis-staging={}", session.value);

        // The session is initech's, and initech's app gets the request.
        let r = spoofed(client.get(format!("{base}/.portcullis/api/whoami")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{case}");
        let me: Value = r.json().await.unwrap();
        assert_eq!(
            (me["tenant"].as_str(), me["subject"].as_str()),
            (Some("initech"), Some("tess")),
            "{case}"
        );
        let r = spoofed(client.get(format!("{base}/app/home")))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{case}");
        assert_eq!((ups.globex.count(), ups.acme.count()), (0, 0), "{case}");
        let seen = ups.initech.only();
        let (host, proto) = (seen.header("x-forwarded-host"), seen.header("x-forwarded-proto"));
        if trusted {
            assert_eq!((host, proto), (Some("globex.test"), Some("http")), "{case}: {seen:?}");
        } else {
            let own = format!("initech.test:{port}");
            assert_eq!((host, proto), (Some(own.as_str()), Some("https")), "{case}: {seen:?}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// RES-01: the SSO callback's answers
// ---------------------------------------------------------------------------------------

/// A GET through `b` with its cookies, `Accept: text/html` and a foreign `Origin`; the
/// whole response.
async fn get_with_headers(b: &Browser, url: &str) -> reqwest::Response {
    let req = b
        .client
        .get(b.url(url))
        .header("accept", "text/html")
        .header("origin", "https://evil.example");
    b.with_cookies(req).send().await.unwrap()
}

/// The hardening every gateway answer carries, and no CORS grant to a foreign origin.
fn assert_hardened(headers: &reqwest::header::HeaderMap, case: &str) {
    let h = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string()
    };
    assert_eq!(h("x-content-type-options"), "nosniff", "{case}: {headers:?}");
    assert_eq!(h("referrer-policy"), "no-referrer", "{case}: {headers:?}");
    assert!(h("cache-control").contains("no-store"), "{case}: {headers:?}");
    assert!(
        h("content-security-policy").contains("frame-ancestors 'none'"),
        "{case}: {headers:?}"
    );
    assert!(
        !headers.contains_key("access-control-allow-origin"),
        "{case}: {headers:?}"
    );
    assert!(
        !headers.contains_key("access-control-allow-credentials"),
        "{case}: {headers:?}"
    );
    assert!(
        !h("server").contains('/'),
        "{case}: the server names a version: {headers:?}"
    );
}

/// An error page says nothing internal: no stack trace or source location, no address or
/// port of the IdP, no versions, no library or host names.
fn assert_generic(body: &str, idp_port: u16, case: &str) {
    let lower = body.to_ascii_lowercase();
    for needle in [
        "127.0.0.1".to_string(),
        format!(":{idp_port}"),
        "localhost".into(),
        "panicked".into(),
        "backtrace".into(),
        ".rs:".into(),
        "src/".into(),
        "os error".into(),
        "connection refused".into(),
        "hyper".into(),
        "reqwest".into(),
        "tokio".into(),
        "oidc-provider".into(),
        "openidconnect".into(),
        format!("portcullis {}", env!("CARGO_PKG_VERSION")),
        format!("portcullis/{}", env!("CARGO_PKG_VERSION")),
    ] {
        assert!(!lower.contains(&needle), "{case}: the page names {needle:?}:\n{body}");
    }
    assert!(
        lower.contains("request id"),
        "{case}: a generic page with its request id:\n{body}"
    );
}

/// RES-01 on the SSO callback, with the real IdP: a forged state (400), a code the IdP
/// does not know (401 after the IdP refused it) and a callback after the IdP process was
/// stopped (502) each answer with the gateway's generic page: no stack trace, no IdP
/// address or port, no versions or internal names, and the hardening headers (nosniff,
/// no-referrer, no-store, frame-ancestors 'none', no CORS grant to a foreign Origin).
/// So does the sign-in start of a gateway whose IdP discovery points at a closed port.
/// A successful callback answers at once with a redirect to the target, whose URL
/// carries neither the code nor the state (so neither reaches the app, its logs or a
/// `Referer`). None of the refusals leaves a session. If this broke, an error would tell
/// an attacker the IdP's internal address or the software's versions, or the code
/// would travel on to the app.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sso_callback_answers_are_generic_hardened_and_carry_no_code() {
    let ups = Upstreams::start().await;
    let accounts = [
        Account::new("rex", "pw-rex").amr(&["pwd", "otp"]),
        Account::new("roz", "pw-roz").amr(&["pwd", "otp"]),
    ];
    let (idp, gw) = idp_and_gateway(&ups, &accounts, "required").await;
    let port = gw.public.port();
    let idp_port: u16 = idp.issuer().rsplit(':').next().unwrap().parse().unwrap();

    // A state this browser never started.
    let forger = Browser::new(port);
    let r = get_with_headers(&forger, "/.portcullis/callback?code=abc&state=forged-state").await;
    assert_eq!(r.status(), 400);
    assert_hardened(r.headers(), "forged state");
    assert_generic(&r.text().await.unwrap(), idp_port, "forged state");

    // This browser's state with a code the IdP never issued: the IdP refuses it.
    let mut b = Browser::new(port);
    let callback = b.through_idp(&idp, "rex", "pw-rex").await;
    let mut url = reqwest::Url::parse(&callback).unwrap();
    let pairs: Vec<(String, String)> = url
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "code" {
                "not-a-code-the-idp-issued".into()
            } else {
                v.into_owned()
            };
            (k.into_owned(), v)
        })
        .collect();
    url.query_pairs_mut().clear().extend_pairs(pairs);
    let r = get_with_headers(&b, url.as_str()).await;
    assert_eq!(r.status(), 401);
    assert_hardened(r.headers(), "bad code");
    assert_generic(&r.text().await.unwrap(), idp_port, "bad code");
    assert!(!b.has_session(), "bad code");

    // Success: an immediate redirect to the target, without code or state.
    let mut ok = Browser::new(port);
    let callback = ok.through_idp(&idp, "roz", "pw-roz").await;
    assert!(callback.contains("code="), "{callback}");
    let r = get_with_headers(&ok, &callback).await;
    assert!(
        r.status() == 302 || r.status() == 303,
        "an immediate redirect: {}",
        r.status()
    );
    let location = r.headers()["location"].to_str().unwrap().to_string();
    assert_eq!(location, "/app/data");
    assert!(!location.contains("code") && !location.contains("state"), "{location}");
    assert_hardened(r.headers(), "success");
    assert!(
        set_cookies(&r)
            .iter()
            .any(|c| c.name == "__Host-portcullis-staging" && !c.is_removal()),
        "a session"
    );

    // The IdP is stopped between its sign-in and the callback.
    let mut late = Browser::new(port);
    let callback = late.through_idp(&idp, "rex", "pw-rex").await;
    drop(idp);
    let r = get_with_headers(&late, &callback).await;
    assert_eq!(r.status(), 502);
    assert_hardened(r.headers(), "IdP down");
    let body = r.text().await.unwrap();
    assert_generic(&body, idp_port, "IdP down");
    assert!(body.contains("identity provider"), "says what is wrong:\n{body}");
    assert!(!late.has_session(), "IdP down");
    assert_eq!(ups.total(), 0, "nothing reached the app");

    // Discovery pointed at a closed port: the sign-in start says so, generically.
    let dead = ClosedPort::bind();
    let gw = crate::sso::sso_gateway(&ups, &dead.url(), "required").await;
    let b = Browser::new(gw.public.port());
    let r = get_with_headers(&b, "/.portcullis/login/sso").await;
    assert_eq!(r.status(), 502);
    assert_hardened(r.headers(), "discovery at a closed port");
    assert_generic(&r.text().await.unwrap(), dead.addr.port(), "discovery at a closed port");
}

// ---------------------------------------------------------------------------------------
// ADM-09: hostile display names and IdP-supplied text on the pages
// ---------------------------------------------------------------------------------------

/// The markup of ADM-09: closes an attribute, then an image whose error runs a script.
const HOSTILE: &str = r#""><img src=x onerror=alert(1)>"#;

/// [`HOSTILE`] as askama's HTML escaping writes it.
const HOSTILE_ESCAPED: &str = "&#34;&#62;&#60;img src=x onerror=alert(1)&#62;";

/// Loads each page's exact answer (status, `Content-Type`, CSP, body), as the gateway
/// sent it, into Debian's Chromium (playwright-core from `tests/browser`), once with the
/// gateway's CSP and once without it (so that the escaping alone is what is tried), and
/// reports per load the `img` elements in the DOM, the dialogs opened, the requests the
/// page made, and whether the hostile text is visible as text.
const BROWSER_SCRIPT: &str = r#"
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const require = createRequire(config.browser_dir + '/package.json');
const { chromium } = require('playwright-core');
const browser = await chromium.launch({
  executablePath: '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking'],
});
const results = [];
try {
  for (const p of config.pages) {
    for (const csp of [true, false]) {
      const context = await browser.newContext();
      const page = await context.newPage();
      const dialogs = [];
      page.on('dialog', (d) => { dialogs.push(d.message()); d.dismiss().catch(() => {}); });
      const requests = [];
      await page.route('**/*', async (route) => {
        const url = route.request().url();
        if (url === p.url) {
          const headers = { 'content-type': p.content_type };
          if (csp) headers['content-security-policy'] = p.csp;
          await route.fulfill({ status: p.status, headers, body: p.body });
        } else {
          requests.push(url);
          await route.abort();
        }
      });
      await page.goto(p.url);
      await page.waitForTimeout(300);
      const imgs = await page.evaluate(() => document.querySelectorAll('img').length);
      const shown = await page.evaluate((h) => document.body.innerText.includes(h), config.hostile);
      results.push({ label: p.label, csp, imgs, dialogs, requests, shown });
      await context.close();
    }
  }
} finally {
  await browser.close();
}
console.log('RESULT ' + JSON.stringify(results));
"#;

/// One page as the gateway answered it.
struct Page {
    label: String,
    url: String,
    status: u16,
    content_type: String,
    csp: String,
    body: String,
}

impl Page {
    fn from_reply(label: &str, url: String, r: &Reply) -> Self {
        Page {
            label: label.into(),
            url,
            status: r.status,
            content_type: r.header("content-type").unwrap_or_default().into(),
            csp: r.header("content-security-policy").unwrap_or_default().into(),
            body: r.body.clone(),
        }
    }
}

/// ADM-09. The tenant display names of acme (prod, local accounts) and initech
/// (staging, SSO in the policy files) are `"><img src=x onerror=alert(1)>`, and so is the
/// `name` an SSO user's ID token carries (the label of that user on the tenant admin's
/// session list). Every page that shows them (the login page and SSO chooser, the
/// second-factor and enrolment pages, sign-out, the account page, each tenant admin page
/// including the SSO wizard, and a 404 page) carries them escaped in the raw HTML, never
/// as markup, with a CSP holding `object-src 'none'`, `base-uri 'none'` and
/// `frame-ancestors 'none'`. In Chromium, with and without that CSP, each page shows the
/// text, has no `img` element, opens no dialog and requests no `x`. If this broke, a
/// tenant name or an IdP's claim would run script in the pages of every user and admin
/// of the tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_names_render_as_text_on_every_page() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = root.join("tests").join("browser");
    assert!(
        browser_dir.join("node_modules").join("playwright-core").is_dir(),
        "playwright-core is missing: run `npm ci` in tests/browser (bash .ci/run does)"
    );
    assert!(
        std::path::Path::new("/usr/bin/chromium").exists(),
        "/usr/bin/chromium is missing: `apt-get install -y chromium` (bash .ci/run does)"
    );
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    // In TOML's basic string, the quote is escaped.
    let toml_name = HOSTILE.replace('"', "\\\"");
    let gw = crate::sso::sso_gateway_fixture(&ups, &fake.issuer(), "required", "", |f| {
        f.tenant_mut("acme").name = toml_name.clone();
        f.tenant_mut("initech").name = toml_name.clone();
    })
    .await;
    let port = gw.public.port();
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &["tenant-admin"], true).await;
    let newbie = accounts.create("acme", "newbie", &[], false).await;
    let mut pages = Vec::new();
    let acme_url = |path: &str| format!("http://acme.test:{port}{path}");

    // acme: the anonymous pages, the two second-factor steps, the signed-in pages.
    let mut anonymous = Agent::new(&gw, "acme.test");
    let r = anonymous.get("/.portcullis/login").await;
    pages.push(Page::from_reply("acme login", acme_url("/.portcullis/login"), &r));
    let mut second = Agent::new(&gw, "acme.test");
    assert_eq!(second.api_password_step(&alice, None).await.status, 200);
    let r = second.get("/.portcullis/mfa").await;
    pages.push(Page::from_reply("acme mfa", acme_url("/.portcullis/mfa"), &r));
    let mut enrolling = Agent::new(&gw, "acme.test");
    let r = enrolling.api_password_step(&newbie, None).await;
    assert_eq!(r.json()["next"], "enrol", "{}", r.body);
    let r = enrolling.get("/.portcullis/enrol").await;
    pages.push(Page::from_reply("acme enrol", acme_url("/.portcullis/enrol"), &r));
    let mut admin = Agent::new(&gw, "acme.test");
    admin.api_login(&alice).await;
    for path in [
        "/.portcullis/account",
        "/.portcullis/logout",
        "/.portcullis/admin",
        "/.portcullis/admin/users",
        "/.portcullis/admin/sessions",
        "/.portcullis/admin/history",
        "/.portcullis/admin/audit",
        "/.portcullis/admin/sso",
        "/.portcullis/no-such-page",
    ] {
        let r = admin.send(Method::GET, path, &[("accept", "text/html")], None).await;
        pages.push(Page::from_reply(&format!("acme {path}"), acme_url(path), &r));
    }

    // initech: an SSO tenant admin whose IdP names them with the hostile text.
    let initech_url = |path: &str| format!("http://initech.test:{port}{path}");
    let mut chooser = Agent::new(&gw, "initech.test");
    let r = chooser.get("/.portcullis/login").await;
    assert!(r.body.contains("/.portcullis/login/sso"), "the SSO chooser: {}", r.body);
    pages.push(Page::from_reply(
        "initech login chooser",
        initech_url("/.portcullis/login"),
        &r,
    ));
    let mut ivy = Browser::new(port);
    let (state, nonce) = ivy.start_sso("ivy").await;
    *fake.next_token.lock().unwrap() = fake.sign(
        jsonwebtoken::Algorithm::EdDSA,
        "k1",
        &id_claims(
            &fake.issuer(),
            "ivy",
            &nonce,
            json!({"name": HOSTILE, "groups": ["tenant-admin"]}),
        ),
    );
    let (status, _, body) = ivy.get(&format!("/.portcullis/callback?code=c&state={state}")).await;
    assert_eq!(status, 303, "{body}");
    let mut sso_admin = Agent::new(&gw, "initech.test");
    sso_admin.cookies = ivy.cookies.iter().cloned().collect();
    for path in [
        "/.portcullis/account",
        "/.portcullis/admin",
        "/.portcullis/admin/sessions",
        "/.portcullis/admin/sso",
    ] {
        let r = sso_admin.get(path).await;
        pages.push(Page::from_reply(&format!("initech {path}"), initech_url(path), &r));
    }

    // The raw HTML: escaped, never markup; the CSP's three directives.
    for p in &pages {
        let expected = if p.label.ends_with("no-such-page") { 404 } else { 200 };
        assert_eq!(p.status, expected, "{}: {}", p.label, p.body);
        assert!(
            p.content_type.starts_with("text/html"),
            "{}: {}",
            p.label,
            p.content_type
        );
        assert!(
            !p.body.to_ascii_lowercase().contains("<img"),
            "{}: markup:\n{}",
            p.label,
            p.body
        );
        assert!(
            p.body.contains(HOSTILE_ESCAPED),
            "{}: the name is not shown:\n{}",
            p.label,
            p.body
        );
        for directive in ["object-src 'none'", "base-uri 'none'", "frame-ancestors 'none'"] {
            assert!(
                p.csp.contains(directive),
                "{}: CSP without {directive}: {}",
                p.label,
                p.csp
            );
        }
    }
    let ivy_sessions = pages
        .iter()
        .find(|p| p.label == "initech /.portcullis/admin/sessions")
        .unwrap();
    assert!(
        ivy_sessions.body.matches(HOSTILE_ESCAPED).count() >= 3,
        "the IdP's name for ivy is on the session list (besides the tenant name twice):\n{}",
        ivy_sessions.body
    );

    // The same answers in Chromium.
    let tmp = tempfile::tempdir().unwrap();
    let script = tmp.path().join("hostile-names.mjs");
    std::fs::write(&script, BROWSER_SCRIPT).unwrap();
    let config = json!({
        "browser_dir": browser_dir,
        "hostile": HOSTILE,
        "pages": pages.iter().map(|p| json!({
            "label": p.label, "url": p.url, "status": p.status,
            "content_type": p.content_type, "csp": p.csp, "body": p.body,
        })).collect::<Vec<_>>(),
    });
    let config_path = tmp.path().join("pages.json");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let log_path = tmp.path().join("hostile-names.log");
    let (status, output) = tokio::task::spawn_blocking(move || {
        crate::browser::run_node_script(
            &script,
            &[config_path.as_os_str()],
            &log_path,
            std::time::Duration::from_secs(180),
        )
    })
    .await
    .unwrap();
    assert!(
        status.is_some_and(|s| s.success()),
        "the browser script failed:\n{output}"
    );
    let results: Value = output
        .lines()
        .find_map(|l| l.strip_prefix("RESULT "))
        .map(|j| serde_json::from_str(j).unwrap())
        .unwrap_or_else(|| panic!("no RESULT line:\n{output}"));
    let results = results.as_array().unwrap();
    assert_eq!(results.len(), pages.len() * 2, "{results:?}");
    for r in results {
        let case = format!("{} (csp: {})", r["label"], r["csp"]);
        assert_eq!(r["imgs"], 0, "{case}: an img element: {r}");
        assert_eq!(r["dialogs"], json!([]), "{case}: a dialog opened: {r}");
        assert_eq!(r["shown"], true, "{case}: the name is not shown as text: {r}");
        let fetched_x = r["requests"]
            .as_array()
            .unwrap()
            .iter()
            .any(|u| u.as_str().is_some_and(|u| u.ends_with("/x")));
        assert!(!fetched_x, "{case}: the page fetched the image: {r}");
    }
}
