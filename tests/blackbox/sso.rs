//! Single sign-on through a real OpenID provider (`tests/idp`, oidc-provider): the code
//! flow with PKCE end to end, the MFA policy, state and replay checks, back-channel
//! logout and an IdP that is down (SPEC "Authentication"). Forged tokens are covered by
//! the unit tests of `auth::oidc` (a fake IdP's signing key).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::*;
use crate::idp::{Account, Idp, IdpClient};

pub(crate) const SECRET: &str = "initech-client-secret-1";

/// A gateway whose tenant initech (staging) signs in through `issuer`; also reachable
/// as host 127.0.0.1 (where the IdP posts back-channel logouts).
pub(crate) async fn sso_gateway(ups: &Upstreams, issuer: &str, mfa: &str) -> Gateway {
    sso_gateway_with(ups, issuer, mfa, "").await
}

/// Like [`sso_gateway`], with extra `[sso]` lines.
async fn sso_gateway_with(ups: &Upstreams, issuer: &str, mfa: &str, extra: &str) -> Gateway {
    sso_gateway_fixture(ups, issuer, mfa, extra, |_| {}).await
}

/// The SSO gateway with a last change to the fixture.
pub(crate) async fn sso_gateway_fixture(
    ups: &Upstreams,
    issuer: &str,
    mfa: &str,
    extra: &str,
    tweak: impl FnOnce(&mut PolicyFixture),
) -> Gateway {
    let mut f = PolicyFixture::for_upstreams(ups);
    let t = f.tenant_mut("initech");
    t.hosts.push("127.0.0.1".into());
    t.routes.push_str(&format!(
        "\n[sso]\nissuer = \"{issuer}\"\nclient_id = \"gw-initech\"\nclient_secret = \"inline:{SECRET}\"\nscopes = [\"openid\", \"email\", \"profile\"]\nroles_claim = \"groups\"\nmfa = \"{mfa}\"\n{extra}"
    ));
    tweak(&mut f);
    Gateway::start(&f).await
}

/// initech's client at the IdP, for a gateway whose public listener is on `port`.
pub(crate) fn initech_client(port: u16) -> IdpClient {
    IdpClient::new("gw-initech", SECRET, &redirect_uri(port))
        .backchannel_logout_uri(&format!("http://127.0.0.1:{port}/.portcullis/backchannel-logout"))
}

fn redirect_uri(port: u16) -> String {
    format!("http://initech.test:{port}/.portcullis/callback")
}

/// An IdP with `accounts` and a gateway whose tenant initech signs in through it with
/// MFA policy `mfa`. The IdP binds first (the gateway's policy names its issuer), the
/// gateway second, then the IdP learns initech's callback on the gateway's bound port.
pub(crate) async fn idp_and_gateway(ups: &Upstreams, accounts: &[Account], mfa: &str) -> (Idp, Gateway) {
    let mut idp = Idp::bind(accounts);
    let gw = sso_gateway(ups, &idp.issuer(), mfa).await;
    idp.register(&[initech_client(gw.public.port())]);
    (idp, gw)
}

/// A browser-like client: keeps cookies by hand, follows no redirects.
pub(crate) struct Browser {
    pub(crate) client: reqwest::Client,
    pub(crate) base: String,
    pub(crate) cookies: Vec<(String, String)>,
}

impl Browser {
    pub(crate) fn new(port: u16) -> Self {
        Browser::for_host(port, "initech.test")
    }

    pub(crate) fn for_host(port: u16, host: &str) -> Self {
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        Browser {
            client: reqwest::Client::builder()
                .resolve(host, addr)
                .redirect(reqwest::redirect::Policy::none())
                .no_proxy()
                .build()
                .unwrap(),
            base: format!("http://{host}:{port}"),
            cookies: Vec::new(),
        }
    }

    /// `url` as given when absolute, else a path on this browser's host.
    pub(crate) fn url(&self, url: &str) -> String {
        if url.starts_with("http") {
            url.to_string()
        } else {
            format!("{}{url}", self.base)
        }
    }

    pub(crate) async fn get(&mut self, url: &str) -> (u16, Option<String>, String) {
        let req = self.with_cookies(self.client.get(self.url(url)).header("accept", "text/html"));
        let r = req.send().await.unwrap();
        self.keep_cookies(&r);
        let status = r.status().as_u16();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        (status, location, r.text().await.unwrap_or_default())
    }

    /// A JSON call (no `Origin`, like a script); returns status and parsed body.
    pub(crate) async fn send_json(&mut self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut req = self.with_cookies(self.client.request(method, format!("{}{path}", self.base)));
        if let Some(body) = body {
            req = req.header("content-type", "application/json").body(body.to_string());
        }
        let r = req.send().await.unwrap();
        self.keep_cookies(&r);
        let status = r.status().as_u16();
        (
            status,
            serde_json::from_str(&r.text().await.unwrap_or_default()).unwrap_or(Value::Null),
        )
    }

    /// Posts a form (`body`, urlencoded) to `path` with this browser's cookies. The
    /// answer's cookies are not applied, so that a test can check, with the cookie the
    /// browser still holds, what the gateway did to the session. Returns the status, the
    /// `Location` (empty when none) and the answer's headers.
    pub(crate) async fn post_form(&self, path: &str, body: String) -> (u16, String, reqwest::header::HeaderMap) {
        let req = self
            .client
            .post(format!("{}{path}", self.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body);
        let r = self.with_cookies(req).send().await.unwrap();
        let location = r
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        (r.status().as_u16(), location, r.headers().clone())
    }

    /// `req` with this browser's cookies.
    pub(crate) fn with_cookies(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        if self.cookies.is_empty() {
            return req;
        }
        let cookie = self
            .cookies
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        req.header("cookie", cookie)
    }

    /// Applies the answer's `Set-Cookie`s (an empty value removes the cookie).
    fn keep_cookies(&mut self, r: &reqwest::Response) {
        for c in r.headers().get_all("set-cookie").iter().filter_map(|v| v.to_str().ok()) {
            let Some((name, value)) = c.split(';').next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            self.cookies.retain(|(n, _)| n != name);
            if !value.is_empty() {
                self.cookies.push((name.to_string(), value.to_string()));
            }
        }
    }

    pub(crate) fn has_session(&self) -> bool {
        self.cookies.iter().any(|(n, _)| n == "__Host-portcullis-staging")
    }

    /// Starts SSO, signs in at the IdP, and returns the callback URL the IdP sent back.
    pub(crate) async fn through_idp(&mut self, idp: &Idp, user: &str, password: &str) -> String {
        let (status, location, body) = self.get("/.portcullis/login/sso?rd=%2Fapp%2Fdata").await;
        assert_eq!(status, 303, "{body}");
        idp.login(&location.unwrap(), user, password).await.unwrap()
    }
}

/// The CSRF token of the (first) form of `page`; panics when the page has none.
pub(crate) fn csrf_in(page: &str) -> String {
    page.split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|r| r.split('"').next())
        .unwrap_or_else(|| panic!("no csrf field in the page: {page}"))
        .to_string()
}

pub(crate) async fn whoami(b: &mut Browser) -> (u16, Value) {
    let (status, _, body) = b.get("/.portcullis/api/whoami").await;
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

/// If this broke, users of a tenant with SSO could not sign in through their IdP, would
/// get the wrong subject or roles, or a captured callback URL could sign in twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_through_the_tenants_idp_with_idp_mfa() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(
        &ups,
        &[Account::new("ada", "pw-ada").groups(&["admins"]).amr(&["pwd", "otp"])],
        "required",
    )
    .await;
    let port = gw.public.port();
    let mut b = Browser::new(port);
    let callback = b.through_idp(&idp, "ada", "pw-ada").await;
    let (status, location, body) = b.get(&callback).await;
    assert_eq!((status, location.as_deref()), (303, Some("/app/data")), "{body}");
    assert!(b.has_session());
    let (status, me) = whoami(&mut b).await;
    assert_eq!(status, 200, "{me}");
    assert_eq!(me["subject"], "ada");
    assert_eq!(me["roles"], serde_json::json!(["admins"]));
    assert!(me["amr"].as_array().unwrap().iter().any(|m| m == "otp"), "{me}");
    // A SIEM counts it as a sign-in (`login`), not as a gateway second factor.
    gw.await_security_event("login", |e| e["event.outcome"] == "success")
        .await;

    // The same callback again (a captured URL) signs in nothing.
    let mut thief = Browser::new(port);
    thief.cookies = b.cookies.iter().filter(|(n, _)| n.contains("-sso-")).cloned().collect();
    let (status, _, _) = thief.get(&callback).await;
    assert_eq!(status, 400);
    assert!(!thief.has_session());
}

/// If this broke, the MFA policy would let a password-only IdP sign-in through, or
/// refuse the gateway's own step-up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mfa_policy_steps_up_or_refuses_password_only_sign_ins() {
    let ups = Upstreams::start().await;
    // (policy, amr at the IdP, expected redirect: the app, the gateway's TOTP, or 403)
    let matrix = [
        ("required", "otp", Some("/app/data")),
        ("required", "pwd", Some("/.portcullis/enrol")),
        ("gateway", "otp", Some("/.portcullis/enrol")),
        ("gateway", "pwd", Some("/.portcullis/enrol")),
        ("idp", "otp", Some("/app/data")),
        ("idp", "pwd", None),
    ];
    for (policy, amr, expected) in matrix {
        let (idp, gw) = idp_and_gateway(&ups, &[Account::new("bo", "pw-bo").amr(&["pwd", amr])], policy).await;
        let mut b = Browser::new(gw.public.port());
        let callback = b.through_idp(&idp, "bo", "pw-bo").await;
        let (status, location, body) = b.get(&callback).await;
        match expected {
            Some(target) => {
                assert_eq!(
                    (status, location.as_deref()),
                    (303, Some(target)),
                    "{policy}/{amr}: {body}"
                );
                assert_eq!(b.has_session(), target == "/app/data", "{policy}/{amr}");
            }
            None => {
                assert_eq!(status, 403, "{policy}/{amr}: {body}");
                assert!(!b.has_session());
            }
        }
    }
}

/// If this broke, a forged or stale callback (another browser's state) would sign in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_without_this_browsers_state_is_refused() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(&ups, &[Account::new("cy", "pw-cy").amr(&["pwd", "mfa"])], "required").await;
    let port = gw.public.port();
    let mut victim = Browser::new(port);
    let callback = victim.through_idp(&idp, "cy", "pw-cy").await;
    let mut attacker = Browser::new(port);
    let (status, _, _) = attacker.get(&callback).await;
    assert_eq!(status, 400, "no pending-login cookie");
    assert!(!attacker.has_session());
    let tampered = callback.replace("state=", "state=x");
    let (status, _, _) = victim.get(&tampered).await;
    assert_eq!(status, 400, "state mismatch");
}

/// If this broke, ending a user's session at the IdP would leave their gateway session
/// working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn back_channel_logout_ends_the_session() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(&ups, &[Account::new("di", "pw-di").amr(&["pwd", "otp"])], "required").await;
    let mut b = Browser::new(gw.public.port());
    let callback = b.through_idp(&idp, "di", "pw-di").await;
    assert_eq!(b.get(&callback).await.0, 303);
    assert_eq!(whoami(&mut b).await.0, 200);
    let report = idp.backchannel_logout("di").await;
    assert!(report["errors"].as_array().is_none_or(|e| e.is_empty()), "{report}");
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if whoami(&mut b).await.0 == 401 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "session still alive after back-channel logout: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// If this broke, an unreachable IdP would crash the gateway or show a blank error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_that_is_down_gives_a_clear_page() {
    let ups = Upstreams::start().await;
    let dead = ClosedPort::bind();
    let gw = sso_gateway(&ups, &dead.url(), "required").await;
    let mut b = Browser::new(gw.public.port());
    let (status, _, body) = b.get("/.portcullis/login/sso").await;
    assert_eq!(status, 502);
    assert!(body.contains("identity provider"), "{body}");
    assert_eq!(b.get("/public/x").await.0, 200, "the gateway keeps serving");
}

/// If this broke, a tenant that enforces SSO would still show a password form, or
/// signing out would leave the user signed in at their IdP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enforced_sso_goes_straight_to_the_idp_and_sign_out_goes_there_too() {
    let ups = Upstreams::start().await;
    let mut idp = Idp::bind(&[Account::new("ed", "pw-ed").amr(&["pwd", "otp"])]);
    let gw = sso_gateway_with(
        &ups,
        &idp.issuer(),
        "required",
        "enforce = true\nbreak_glass = [\"root\"]\n",
    )
    .await;
    let port = gw.public.port();
    idp.register(&[initech_client(port)]);
    // Local passwords: only the break-glass account may use one.
    let accounts = Accounts::open(&gw).await;
    let root = accounts.create("initech", "root", &[], true).await;
    let ivan = accounts.create("initech", "ivan", &[], true).await;
    let local = Browser::new(port);
    for (user, expected) in [(&ivan, 403), (&root, 200)] {
        let r = local
            .client
            .post(format!("{}/.portcullis/api/login", local.base))
            .json(&serde_json::json!({"username": user.username, "password": user.password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), expected, "{}", user.username);
    }

    let mut b = Browser::new(port);
    let (status, location, _) = b.get("/.portcullis/login?rd=%2Fapp").await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/.portcullis/login/sso?rd=%2Fapp"))
    );
    let (status, _, body) = b.get("/.portcullis/login?local=1").await;
    assert_eq!(status, 200, "break-glass admins can still reach the form: {body}");

    let callback = b.through_idp(&idp, "ed", "pw-ed").await;
    assert_eq!(b.get(&callback).await.0, 303);
    let (_, _, page) = b.get("/.portcullis/logout").await;
    let csrf = csrf_in(&page);
    let (status, location, _) = b.post_form("/.portcullis/logout", format!("csrf={csrf}")).await;
    assert_eq!(status, 303);
    assert!(
        location.starts_with(&idp.issuer()),
        "to the IdP's end-session endpoint: {location}"
    );
    let back = format!("http://initech.test:{port}/.portcullis/login");
    let encoded: String = form_urlencoded::byte_serialize(back.as_bytes()).collect();
    assert!(
        location.contains(&format!("post_logout_redirect_uri={encoded}")),
        "back to the canonical login page: {location}"
    );
    assert_eq!(whoami(&mut b).await.0, 401, "the gateway session ended");
}

/// A tenant that signs in through SSO only (enforced, no break-glass account) has no
/// password endpoint at all: the form and the JSON sign-in are 404 before any password
/// is looked at, whoever is named, and `?local=1` still goes to the IdP (MFA-05).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_only_tenant_has_no_password_endpoint() {
    let ups = Upstreams::start().await;
    let mut idp = Idp::bind(&[Account::new("ed", "pw-ed").amr(&["pwd", "otp"])]);
    let gw = sso_gateway_with(&ups, &idp.issuer(), "required", "enforce = true\n").await;
    let port = gw.public.port();
    idp.register(&[initech_client(port)]);
    let accounts = Accounts::open(&gw).await;
    let ivan = accounts.create("initech", "ivan", &[], true).await;
    let b = Browser::new(port);
    for password in [ivan.password.as_str(), "wrong"] {
        let r = b
            .client
            .post(format!("{}/.portcullis/api/login", b.base))
            .json(&serde_json::json!({"username": ivan.username, "password": password}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "JSON sign-in with {password:?}");
        let r = b
            .client
            .post(format!("{}/.portcullis/login", b.base))
            .header("content-type", "application/x-www-form-urlencoded")
            .body(format!("username={}&password={password}&csrf=x", ivan.username))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "form sign-in with {password:?}");
    }
    let mut b = Browser::new(port);
    let (status, location, _) = b.get("/.portcullis/login?local=1").await;
    assert_eq!(
        (status, location.as_deref()),
        (303, Some("/.portcullis/login/sso?rd=%2F"))
    );
    // SSO itself still signs users in.
    let callback = b.through_idp(&idp, "ed", "pw-ed").await;
    assert_eq!(b.get(&callback).await.0, 303);
    assert_eq!(b.get("/.portcullis/api/whoami").await.0, 200);
}

/// A fake IdP (named so: a real provider never sends these tokens) whose token endpoint
/// returns whatever ID token (and access token) the test put there, signed with its own
/// Ed25519 key. It records the path of every request, so tests can count token and
/// userinfo calls; its userinfo endpoint names another user (`bob`) than any test token.
pub(crate) struct ForgingIdp {
    port: u16,
    pkcs8: Vec<u8>,
    x: String,
    pub(crate) next_token: Arc<Mutex<String>>,
    /// The `access_token` of the token response; none when unset.
    pub(crate) next_access_token: Arc<Mutex<Option<String>>>,
    /// The path of every request received, in order.
    pub(crate) requests: Arc<Mutex<Vec<String>>>,
}

impl ForgingIdp {
    pub(crate) async fn start() -> Self {
        ForgingIdp::start_with(serde_json::json!({})).await
    }

    /// A fake IdP whose discovery document also carries the fields of `discovery_extra`.
    pub(crate) async fn start_with(discovery_extra: Value) -> Self {
        use base64::Engine;
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let next_token = Arc::new(Mutex::new(String::new()));
        let next_access_token = Arc::new(Mutex::new(None::<String>));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let issuer = format!("http://127.0.0.1:{port}");
        let mut discovery = serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
            "userinfo_endpoint": format!("{issuer}/userinfo"),
        });
        if let Value::Object(extra) = discovery_extra {
            discovery.as_object_mut().unwrap().extend(extra);
        }
        let jwks = serde_json::json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "k1", "alg": "EdDSA"}]});
        let (token, access_token, seen) = (next_token.clone(), next_access_token.clone(), requests.clone());
        tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (discovery, jwks) = (discovery.clone(), jwks.clone());
                let (token, access_token, seen) = (token.clone(), access_token.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        seen.lock().unwrap().push(req.uri().path().to_string());
                        let body = match req.uri().path() {
                            "/.well-known/openid-configuration" => discovery.clone(),
                            "/jwks" => jwks.clone(),
                            "/userinfo" => serde_json::json!({"sub": "bob", "email": "bob@example.test"}),
                            _ => {
                                let mut response = serde_json::json!({"id_token": token.lock().unwrap().clone(), "token_type": "Bearer"});
                                if let Some(at) = access_token.lock().unwrap().clone() {
                                    response["access_token"] = at.into();
                                }
                                response
                            }
                        };
                        async move {
                            Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                                bytes::Bytes::from(body.to_string()),
                            )))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        ForgingIdp {
            port,
            pkcs8,
            x,
            next_token,
            next_access_token,
            requests,
        }
    }

    /// How many requests reached `path` so far.
    pub(crate) fn calls_to(&self, path: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|p| *p == path).count()
    }

    pub(crate) fn issuer(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Signs `claims` with the fake IdP's own key under a header the test built.
    pub(crate) fn sign_with_header(&self, header: &jsonwebtoken::Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }

    pub(crate) fn sign(&self, alg: jsonwebtoken::Algorithm, kid: &str, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(alg);
        header.kid = Some(kid.to_string());
        let key = match alg {
            jsonwebtoken::Algorithm::HS256 => jsonwebtoken::EncodingKey::from_secret(self.x.as_bytes()),
            _ => jsonwebtoken::EncodingKey::from_ed_der(&self.pkcs8),
        };
        jsonwebtoken::encode(&header, claims, &key).unwrap()
    }
}

/// Every token a forging IdP can hand over is refused with a clear page, no session, and
/// a failed attempt in the login history. If this broke, a compromised or confused IdP
/// endpoint (or a man in the middle) could sign anyone in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_id_tokens_are_refused_and_recorded() {
    use base64::Engine;
    use jsonwebtoken::Algorithm::{EdDSA, HS256};
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    for case in [
        "wrong issuer",
        "wrong audience",
        "expired",
        "issued in the future",
        "missing nonce",
        "other nonce",
        "bad signature",
        "alg none",
        "HS256 with the public key",
        "unknown kid",
        "missing sub",
    ] {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        let mut claims = serde_json::json!({"iss": fake.issuer(), "aud": "gw-initech", "sub": "mallory",
            "iat": now, "exp": now + 300, "nonce": nonce, "amr": ["pwd", "otp"]});
        let (alg, kid) = match case {
            "wrong issuer" => (claims["iss"] = "http://evil.example".into(), (EdDSA, "k1")).1,
            "wrong audience" => (claims["aud"] = "someone-else".into(), (EdDSA, "k1")).1,
            "expired" => (claims["exp"] = (now - 600).into(), (EdDSA, "k1")).1,
            "issued in the future" => (claims["iat"] = (now + 3600).into(), (EdDSA, "k1")).1,
            "missing nonce" => (claims.as_object_mut().unwrap().remove("nonce"), (EdDSA, "k1")).1,
            "other nonce" => (claims["nonce"] = "n0t-th1s".into(), (EdDSA, "k1")).1,
            "HS256 with the public key" => (HS256, "k1"),
            "unknown kid" => (EdDSA, "k9"),
            "missing sub" => (claims.as_object_mut().unwrap().remove("sub"), (EdDSA, "k1")).1,
            _ => (EdDSA, "k1"),
        };
        let mut token = fake.sign(alg, kid, &claims);
        if case == "bad signature" {
            let parts: Vec<&str> = token.split('.').collect();
            let forged = b64(
                &serde_json::json!({"sub": "admin", "iss": fake.issuer(), "aud": "gw-initech",
                "iat": now, "exp": now + 300, "nonce": nonce}),
            );
            token = format!("{}.{forged}.{}", parts[0], parts[2]);
        }
        if case == "alg none" {
            token = format!(
                "{}.{}.",
                b64(&serde_json::json!({"alg": "none", "kid": "k1"})),
                b64(&claims)
            );
        }
        b.expect_refused(&fake, case, token, &state).await;
    }
    assert_refusals_recorded(&gw, 11, now).await;
}

/// One change a test makes to an otherwise valid ID token's claims (given `now`).
type ClaimChange = fn(&mut Value, i64);

/// ID tokens that pass the signature, issuer and audience checks but name another
/// authorised party, are not valid yet, or carry claims the gateway could not manage or
/// pass on later (a subject no account kill switch can name, control characters or
/// over-long values bound for headers and the assertion, a role that would split in
/// `X-Portcullis-Roles`). If this broke, such a user would get a session that no kill
/// switch can end, or could inject header content upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_with_unmanageable_claims_are_refused_and_recorded() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let cases: [(&str, ClaimChange); 9] = [
        ("azp of another client", |c, _| c["azp"] = "someone-else".into()),
        ("not valid before an hour from now", |c, now| {
            c["nbf"] = (now + 3600).into()
        }),
        ("300-character sub", |c, _| c["sub"] = "m".repeat(300).into()),
        ("sub with CR/LF", |c, _| {
            c["sub"] = "mallory\r\nX-Portcullis-Roles: admin".into()
        }),
        ("email with a control character", |c, _| {
            c["email"] = "m@example.test\u{7}".into()
        }),
        ("email of 1,000 characters", |c, _| {
            c["email"] = format!("{}@example.test", "m".repeat(1000)).into()
        }),
        ("name with LF", |c, _| c["name"] = "Mallory\nAdmin".into()),
        ("group with a comma", |c, _| {
            c["groups"] = serde_json::json!(["staff,admin"])
        }),
        ("group with CR", |c, _| {
            c["groups"] = serde_json::json!(["staff\radmin"])
        }),
    ];
    for (case, change) in cases {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        let mut claims = serde_json::json!({"iss": fake.issuer(), "aud": "gw-initech", "sub": "mallory",
            "iat": now, "exp": now + 300, "nonce": nonce, "amr": ["pwd", "otp"]});
        change(&mut claims, now);
        let token = fake.sign(jsonwebtoken::Algorithm::EdDSA, "k1", &claims);
        b.expect_refused(&fake, case, token, &state).await;
    }
    assert_refusals_recorded(&gw, cases.len(), now).await;

    // The checks are not so strict that ordinary tokens fail: azp equal to the client,
    // nbf now, a 255-character ASCII subject (OIDC Core §2), an international name.
    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("valid").await;
    let claims = serde_json::json!({"iss": fake.issuer(), "aud": "gw-initech", "azp": "gw-initech",
        "sub": "m".repeat(255), "nbf": now, "iat": now, "exp": now + 300, "nonce": nonce,
        "amr": ["pwd", "otp"], "name": "Zoë Ångström", "email": "zoe@example.test", "groups": ["staff"]});
    *fake.next_token.lock().unwrap() = fake.sign(jsonwebtoken::Algorithm::EdDSA, "k1", &claims);
    let (status, location, body) = b
        .get(&format!("/.portcullis/callback?code=fake-code&state={state}"))
        .await;
    assert_eq!((status, location.as_deref()), (303, Some("/")), "{body}");
    assert!(b.has_session());
}

impl Browser {
    /// Starts a sign-in at the gateway and returns the `state` and `nonce` it sent to
    /// the IdP.
    pub(crate) async fn start_sso(&mut self, case: &str) -> (String, String) {
        let (status, location, _) = self.get("/.portcullis/login/sso").await;
        assert_eq!(status, 303, "{case}");
        let location = location.unwrap();
        let param = |name: &str| {
            location
                .split(['?', '&'])
                .find_map(|p| p.strip_prefix(&format!("{name}=")))
                .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned())
                .unwrap()
        };
        (param("state"), param("nonce"))
    }

    /// Has the fake IdP hand over `token` and checks that the callback refuses it.
    pub(crate) async fn expect_refused(&mut self, fake: &ForgingIdp, case: &str, token: String, state: &str) {
        *fake.next_token.lock().unwrap() = token;
        let callback = format!("/.portcullis/callback?code=fake-code&state={state}");
        let (status, _, body) = self.get(&callback).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(body.contains("Single sign-on failed"), "{case}: {body}");
        assert!(!self.has_session(), "{case}: no session");
    }
}

/// Each refused attempt is in the login history as an IdP error, and no session exists.
pub(crate) async fn assert_refusals_recorded(gw: &Gateway, expected: usize, now: i64) {
    let stores =
        portcullis::store::Stores::open(&format!("sqlite:{}", gw.policy_dir.join("data").display()), ["staging"])
            .await
            .unwrap();
    let store = stores.tier("staging").unwrap();
    let history = store.login_history("initech", "-", 100, None).await.unwrap();
    let refused = history
        .iter()
        .filter(|e| e.reason.as_deref() == Some("idp_token_refused"))
        .count();
    assert_eq!(refused, expected, "{history:?}");
    assert!(store.list_tenant_sessions("initech", now, 10).await.unwrap().is_empty());
}

/// Two tenants with two IdPs: each signs in through its own, and a code of one IdP
/// is worthless at the other tenant. If this broke, tenant A's IdP could sign people
/// into tenant B.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tenants_with_two_idps_stay_apart() {
    let ups = Upstreams::start().await;
    let mut idp1 = Idp::bind(&[Account::new("ada", "pw-ada").amr(&["pwd", "otp"])]);
    let mut idp2 = Idp::bind(&[Account::new("bea", "pw-bea").amr(&["pwd", "otp"])]);
    let issuer2 = idp2.issuer();
    let gw = sso_gateway_fixture(&ups, &idp1.issuer(), "required", "", |f| {
        let g = f.tenant_mut("globex");
        g.tier = "staging".into();
        g.routes.push_str(&format!(
            "\n[sso]\nissuer = \"{issuer2}\"\nclient_id = \"gw-globex\"\nclient_secret = \"inline:globex-client-secret-2\"\nmfa = \"required\"\n"
        ));
    })
    .await;
    let port = gw.public.port();
    idp1.register(&[initech_client(port)]);
    idp2.register(&[IdpClient::new(
        "gw-globex",
        "globex-client-secret-2",
        &format!("http://globex.test:{port}/.portcullis/callback"),
    )]);

    let mut a = Browser::new(port);
    let code_of_idp1 = a.through_idp(&idp1, "ada", "pw-ada").await;
    let mut g = Browser::for_host(port, "globex.test");
    let callback2 = g.through_idp(&idp2, "bea", "pw-bea").await;
    assert_eq!(g.get(&callback2).await.0, 303, "bea signs in at globex");
    assert_eq!(whoami(&mut g).await.1["subject"], "bea");

    // IdP 1's code, delivered to globex with globex's own pending login.
    let mut h = Browser::for_host(port, "globex.test");
    let (_, location, _) = h.get("/.portcullis/login/sso").await;
    let location = location.unwrap();
    let state = location
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .unwrap()
        .to_string();
    let code = code_of_idp1
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("code="))
        .unwrap()
        .to_string();
    let (status, _, body) = h.get(&format!("/.portcullis/callback?code={code}&state={state}")).await;
    assert_eq!(status, 401, "{body}");
    assert!(!h.has_session());
    // And it still works where it belongs.
    assert_eq!(a.get(&code_of_idp1).await.0, 303);
    assert_eq!(whoami(&mut a).await.1["subject"], "ada");
}

/// If this broke, a person in a real browser could not get from the tenant's login page
/// through their IdP's pages and back to the app, signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_signs_in_through_the_idps_pages() {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("tests/browser/node_modules/playwright-core").is_dir(),
        "run `npm ci` in tests/browser (bash .ci/run does)"
    );
    let ups = Upstreams::start().await;
    let mut idp = Idp::bind(&[Account::new("fay", "pw-fay").amr(&["pwd", "otp"])]);
    let gw = sso_gateway_fixture(&ups, &idp.issuer(), "required", "", |f| {
        // The canonical callback is on the tenant's first host.
        f.tenant_mut("initech").hosts.insert(0, "initech.localhost".into());
    })
    .await;
    let origin = format!("http://initech.localhost:{}", gw.public.port());
    idp.register(&[IdpClient::new(
        "gw-initech",
        SECRET,
        &format!("{origin}/.portcullis/callback"),
    )]);
    let out = root.join("target").join("browser-screenshots");
    let run = tokio::process::Command::new("node")
        .arg(root.join("tests/browser/sso.mjs"))
        .args([origin.as_str(), "fay", "pw-fay"])
        .arg(&out)
        .current_dir(&root)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the browser script finished in time")
        .expect("run node");
    assert!(
        output.status.success(),
        "{}{}\nIdP log:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        idp.logs()
    );
}

/// The payload of the assertion the upstream received last for a request whose target
/// starts with `path`.
fn assertion_for(ups: &Upstreams, path: &str) -> Value {
    let seen = ups.initech.requests();
    let last = seen
        .iter()
        .rev()
        .find(|r| r.target.starts_with(path))
        .unwrap_or_else(|| panic!("no request to {path} reached the upstream"));
    crate::idp::jwt_payload(last.header("portcullis-assertion").expect("an assertion"))
}

/// SECURITY-CASES / audit defect 2: an IdP that issues `sub = "ivan"` on a tenant with a
/// local `ivan` (a tenant admin). If this broke, the SSO user would list and end the local
/// admin's sessions, read his login history, reach the upstream as the same user, and
/// a kill switch on one would cut off (or miss) the other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_sso_user_and_a_local_account_of_one_name_are_two_users() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(
        &ups,
        &[Account::new("ivan", "pw-ivan")
            .groups(&["tenant-admin"])
            .amr(&["pwd", "otp"])],
        "required",
    )
    .await;
    let port = gw.public.port();
    let issuer = idp.issuer();
    let accounts = Accounts::open(&gw).await;
    let local_ivan = accounts.create("initech", "ivan", &["tenant-admin"], true).await;

    let mut local = Browser::new(port);
    let body = serde_json::json!({ "username": "ivan", "password": local_ivan.password });
    let (status, reply) = local
        .send_json(reqwest::Method::POST, "/.portcullis/api/login", Some(body))
        .await;
    assert_eq!((status, reply["next"].as_str()), (200, Some("mfa")), "{reply}");
    let code = serde_json::json!({ "code": local_ivan.fresh_code().await });
    let (status, reply) = local
        .send_json(reqwest::Method::POST, "/.portcullis/api/mfa", Some(code))
        .await;
    assert_eq!(status, 200, "{reply}");
    assert!(local.has_session());

    let mut sso = Browser::new(port);
    let callback = sso.through_idp(&idp, "ivan", "pw-ivan").await;
    assert_eq!(sso.get(&callback).await.0, 303);
    assert!(sso.has_session());

    // Each is told who they are, with who vouched for them.
    let (_, me) = whoami(&mut sso).await;
    assert_eq!(
        (me["subject"].as_str(), me["idp"].as_str()),
        (Some("ivan"), Some(issuer.as_str())),
        "{me}"
    );
    let (_, me) = whoami(&mut local).await;
    assert_eq!(
        (me["subject"].as_str(), me["idp"].as_str()),
        (Some("ivan"), Some("local")),
        "{me}"
    );

    // Sessions and history: the SSO user sees only their own.
    let (status, list) = sso
        .send_json(reqwest::Method::GET, "/.portcullis/api/sessions", None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(1),
        "SSO ivan sees local ivan's session: {list}"
    );
    let (_, history) = sso
        .send_json(reqwest::Method::GET, "/.portcullis/api/history", None)
        .await;
    let methods: Vec<&str> = history
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["method"].as_str())
        .collect();
    assert!(
        methods.iter().all(|m| *m == "oidc"),
        "SSO ivan reads local ivan's history: {history}"
    );
    let (status, _) = sso
        .send_json(reqwest::Method::DELETE, "/.portcullis/api/sessions?others=true", None)
        .await;
    assert!(status < 300, "{status}");
    assert_eq!(whoami(&mut local).await.0, 200, "SSO ivan ended local ivan's session");

    // The upstream tells them apart by (idp, sub).
    assert_eq!(sso.get("/app/sso").await.0, 200);
    assert_eq!(local.get("/app/local").await.0, 200);
    let from_sso = assertion_for(&ups, "/app/sso");
    let from_local = assertion_for(&ups, "/app/local");
    assert_eq!(
        (from_sso["sub"].as_str(), from_sso["idp"].as_str()),
        (Some("ivan"), Some(issuer.as_str()))
    );
    assert_eq!(
        (from_local["sub"].as_str(), from_local["idp"].as_str()),
        (Some("ivan"), Some("local"))
    );

    // A kill switch on the local account (the default `idp`) leaves the SSO user alone,
    // and the SSO admin cannot be the "self" of the local account (nor the reverse).
    let trip = serde_json::json!({ "reason": "lost laptop" });
    let (status, reply) = sso
        .send_json(
            reqwest::Method::PUT,
            "/.portcullis/api/admin/accounts/ivan/breaker",
            Some(trip.clone()),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(whoami(&mut local).await.0, 423, "local ivan is cut off");
    assert_eq!(whoami(&mut sso).await.0, 200, "SSO ivan is not");
    let (status, _) = sso
        .send_json(
            reqwest::Method::PUT,
            "/.portcullis/api/admin/accounts/ivan/breaker?idp=sso",
            Some(trip),
        )
        .await;
    assert_eq!(status, 409, "idp=sso names the SSO admin's own account");
}

/// The `redirect_uri` sent to the IdP is the tenant's canonical callback (first
/// configured host, the listener's scheme and port), whatever `Host` the client sent. If
/// this broke, a client could make the gateway send a callback address of its choosing
/// (another port, a spelling the IdP does not know, a host behind a different cache or
/// proxy), and the code exchange would name it too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redirect_uri_is_the_canonical_callback_whatever_the_host_header() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway_fixture(&ups, &fake.issuer(), "required", "", |f| {
        f.tenant_mut("initech").hosts.insert(0, "initech.localhost".into());
    })
    .await;
    let (addr, port) = (gw.public, gw.public.port());
    let canonical = format!("http://initech.localhost:{port}/.portcullis/callback");
    for host in [
        format!("initech.localhost:{port}"),
        "initech.localhost:6666".to_string(),
        "INITECH.LOCALHOST.:443".to_string(),
        "initech.localhost".to_string(),
    ] {
        let r = raw_get(addr, &host, "/.portcullis/login/sso?rd=%2Fapp").await;
        assert_eq!(r.status, 303, "Host: {host}");
        let location = r.header("location").unwrap_or_default().to_string();
        let redirect_uri = location
            .split(['?', '&'])
            .find_map(|p| p.strip_prefix("redirect_uri="))
            .map(|v| percent_encoding::percent_decode_str(v).decode_utf8_lossy().into_owned());
        assert_eq!(
            redirect_uri.as_deref(),
            Some(canonical.as_str()),
            "Host: {host}: {location}"
        );
    }
    // Started on another host of the tenant, the sign-in first moves to the canonical
    // host, so its pending-login cookie is where the callback will arrive.
    let r = raw_get(
        addr,
        &format!("initech.test:{port}"),
        "/.portcullis/login/sso?rd=%2Fapp",
    )
    .await;
    assert_eq!(r.status, 303);
    assert_eq!(
        r.header("location"),
        Some(format!("http://initech.localhost:{port}/.portcullis/login/sso?rd=%2Fapp").as_str())
    );
    assert!(r.header("set-cookie").is_none(), "no pending login on the other host");
}
