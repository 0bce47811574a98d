//! Attacks on single sign-on that need a hostile or a tricked identity provider
//! (SECURITY-CASES OIDC-10, -11, -12 and OAUTH-05 to -08): ID tokens that bring their
//! own keys, `at_hash` that does not match, a userinfo endpoint that names someone else,
//! code injection, IdP mix-up, an IdP error with script in it, and a flood of sign-ins
//! nobody finishes. The real provider (`tests/idp`) where a real one can show it, else
//! the forging fake IdP of [`crate::sso`].

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::harness::*;
use crate::idp::Account;
use crate::sso::{
    Browser, ForgingIdp, assert_refusals_recorded, idp_and_gateway, sso_gateway, sso_gateway_fixture, whoami,
};

/// An attacker's own Ed25519 key: what a token signed "by the attacker" is signed with.
struct AttackerKey {
    pkcs8: Vec<u8>,
    /// The public key as a JWK (what a header's `jwk` or a `jku` set would carry).
    jwk: Value,
}

impl AttackerKey {
    fn new() -> Self {
        use ring::signature::KeyPair;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
            .unwrap()
            .as_ref()
            .to_vec();
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "attacker", "alg": "EdDSA", "use": "sig"});
        AttackerKey { pkcs8, jwk }
    }

    fn sign(&self, header: &Header, claims: &Value) -> String {
        jsonwebtoken::encode(header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
    }
}

/// A loopback listener that counts the connections it accepts (and answers the key set
/// of `jwk` to any request): where a `jku` or `x5u` header points.
async fn counting_listener(jwk: Value) -> (u16, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    let body = json!({ "keys": [jwk] }).to_string();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            let body = body.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |_req: http::Request<hyper::body::Incoming>| {
                    let body = body.clone();
                    async move {
                        Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
                            bytes::Bytes::from(body),
                        )))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                    .await;
            });
        }
    });
    (port, accepted)
}

/// Valid claims for the fake IdP's tenant (initech) and this attempt's `nonce`.
fn claims(fake: &ForgingIdp, sub: &str, nonce: &str) -> Value {
    let now = portcullis::clock::unix_now();
    json!({"iss": fake.issuer(), "aud": "gw-initech", "sub": sub, "iat": now, "exp": now + 300,
           "nonce": nonce, "amr": ["pwd", "otp"]})
}

/// OIDC-10 (RFC 8725 3.10, CVE-2018-0114): a token that names where to find its key
/// (`jku`, `x5u`), carries its key (`jwk`), or names a hostile `kid`, is checked only
/// against the IdP's published keys. If this broke, anyone could sign in as anyone by
/// signing with their own key, or make the gateway fetch from an address of their choice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn id_tokens_that_bring_their_own_keys_or_hostile_kids_are_refused() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let attacker = AttackerKey::new();
    let (lport, connections) = counting_listener(attacker.jwk.clone()).await;
    let jku = format!("http://127.0.0.1:{lport}/jwks");
    let attackers_jwk: jsonwebtoken::jwk::Jwk = serde_json::from_value(attacker.jwk.clone()).unwrap();
    let header = |kid: Option<&str>| {
        let mut h = Header::new(Algorithm::EdDSA);
        h.kid = kid.map(str::to_string);
        h
    };
    // (case, header, signed by the attacker (else by the IdP's real key))
    let cases: Vec<(&str, Header, bool)> = vec![
        (
            "jku to the attacker's key set",
            Header {
                jku: Some(jku.clone()),
                ..header(Some("attacker"))
            },
            true,
        ),
        (
            "x5u to the attacker's certificate",
            Header {
                x5u: Some(format!("http://127.0.0.1:{lport}/cert.pem")),
                ..header(Some("attacker"))
            },
            true,
        ),
        (
            "embedded jwk with the attacker's kid",
            Header {
                jwk: Some(attackers_jwk.clone()),
                ..header(Some("attacker"))
            },
            true,
        ),
        (
            "embedded jwk under the real kid",
            Header {
                jwk: Some(attackers_jwk.clone()),
                ..header(Some("k1"))
            },
            true,
        ),
        (
            "embedded jwk without kid",
            Header {
                jwk: Some(attackers_jwk.clone()),
                ..header(None)
            },
            true,
        ),
        (
            "jku, x5u and jwk together",
            Header {
                jku: Some(jku.clone()),
                x5u: Some(jku.clone()),
                jwk: Some(attackers_jwk.clone()),
                ..header(Some("attacker"))
            },
            true,
        ),
        ("kid path traversal", header(Some("../../../../dev/null")), false),
        ("kid SQL injection", header(Some("x' OR '1'='1")), false),
        ("10 KB kid", header(Some(&"k".repeat(10 * 1024))), false),
    ];
    let n = cases.len();
    for (case, header, by_attacker) in cases {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        let claims = claims(&fake, "mallory", &nonce);
        let token = if by_attacker {
            attacker.sign(&header, &claims)
        } else {
            fake.sign_with_header(&header, &claims)
        };
        b.expect_refused(&fake, case, token, &state).await;
    }
    assert_refusals_recorded(&gw, n, now).await;

    // The headers are ignored, not merely refused: the IdP's own key under its own kid
    // passes, `jku` and all.
    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("real key").await;
    let real = Header {
        jku: Some(jku.clone()),
        jwk: Some(attackers_jwk),
        ..header(Some("k1"))
    };
    *fake.next_token.lock().unwrap() = fake.sign_with_header(&real, &claims(&fake, "mallory", &nonce));
    let (status, _, body) = b.get(&format!("/.portcullis/callback?code=c&state={state}")).await;
    assert_eq!(status, 303, "{body}");
    assert!(b.has_session());

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "the gateway connected to jku/x5u"
    );
    // Access lines go through a non-blocking writer: wait for all of them.
    let callback_statuses = || async {
        let statuses: Vec<u64> = gw
            .access_log()
            .iter()
            .filter(|l| l["path"] == "/.portcullis/callback")
            .map(|l| l["status"].as_u64().unwrap())
            .collect();
        (statuses.len() == n + 1).then_some(statuses)
    };
    let statuses = eventually(Duration::from_secs(5), callback_statuses)
        .await
        .unwrap_or_else(|| panic!("{} callbacks not in the access log:\n{}", n + 1, gw.logs()));
    assert!(statuses.iter().all(|s| *s < 500), "a 5xx was answered: {statuses:?}");
}

/// The `at_hash` of an access token for an ID token signed with EdDSA (Ed25519):
/// the left half of its SHA-512, base64url (OIDC Core 3.1.3.8; SHA-512 for Ed25519).
fn ed25519_at_hash(access_token: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha512::digest(access_token.as_bytes());
    URL_SAFE_NO_PAD.encode(&digest[..32])
}

/// OIDC-11 (OIDC Core 3.1.3.8, rp-id_token-bad-at_hash): an ID token whose `at_hash`
/// does not match the access token it came with is refused; without `at_hash` (optional
/// in the code flow) it passes. If this broke, an ID token could be paired with an
/// access token it was not issued with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_at_hash_that_does_not_match_the_access_token_is_refused() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let cases = [
        (
            "at_hash of another access token",
            Some("AT-issued"),
            json!(ed25519_at_hash("AT-other")),
        ),
        ("at_hash with SHA-256 instead of SHA-512", Some("AT-issued"), {
            use sha2::Digest;
            json!(URL_SAFE_NO_PAD.encode(&sha2::Sha256::digest(b"AT-issued")[..16]))
        }),
        ("at_hash not a string", Some("AT-issued"), json!(42)),
        (
            "at_hash without an access token",
            None,
            json!(ed25519_at_hash("AT-issued")),
        ),
    ];
    for (case, access_token, at_hash) in &cases {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        let mut c = claims(&fake, "mallory", &nonce);
        c["at_hash"] = at_hash.clone();
        *fake.next_access_token.lock().unwrap() = access_token.map(str::to_string);
        let token = fake.sign(Algorithm::EdDSA, "k1", &c);
        b.expect_refused(&fake, case, token, &state).await;
    }
    assert_refusals_recorded(&gw, cases.len(), now).await;

    // The right at_hash, and none at all, sign in.
    *fake.next_access_token.lock().unwrap() = Some("AT-issued".into());
    for at_hash in [Some(ed25519_at_hash("AT-issued")), None] {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso("valid").await;
        let mut c = claims(&fake, "mallory", &nonce);
        if let Some(h) = &at_hash {
            c["at_hash"] = json!(h);
        }
        *fake.next_token.lock().unwrap() = fake.sign(Algorithm::EdDSA, "k1", &c);
        let (status, _, body) = b.get(&format!("/.portcullis/callback?code=c&state={state}")).await;
        assert_eq!(status, 303, "at_hash {at_hash:?}: {body}");
        assert!(b.has_session(), "at_hash {at_hash:?}");
    }
}

/// OIDC-12 (rp-userinfo-bad-sub-claim): the gateway takes every claim from the
/// validated ID token and never calls userinfo, so a userinfo endpoint that names
/// another user (`bob`) changes nothing. If this broke, an unsigned userinfo answer
/// could decide who is signed in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_come_from_the_id_token_and_userinfo_is_never_called() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let mut b = Browser::new(gw.public.port());
    let (state, nonce) = b.start_sso("alice").await;
    *fake.next_access_token.lock().unwrap() = Some("AT-alice".into());
    *fake.next_token.lock().unwrap() = fake.sign(Algorithm::EdDSA, "k1", &claims(&fake, "alice", &nonce));
    let (status, _, body) = b.get(&format!("/.portcullis/callback?code=c&state={state}")).await;
    assert_eq!(status, 303, "{body}");
    let (status, me) = whoami(&mut b).await;
    assert_eq!((status, me["subject"].as_str()), (200, Some("alice")), "{me}");
    assert_eq!(fake.calls_to("/token"), 1, "the code was exchanged at the fake IdP");
    assert_eq!(fake.calls_to("/userinfo"), 0, "userinfo was called");
}

/// OAUTH-05 (RFC 9700 4.5): the attacker's code, issued for the attacker's PKCE
/// challenge in the attacker's own sign-in, injected into the victim's callback with the
/// victim's state and cookies, fails at the real provider (PKCE: invalid_grant); no
/// session, and the failure is in the login history and the log. If this broke, an
/// attacker could sign a victim's browser into the attacker's account.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_code_of_another_sign_in_fails_at_the_idp() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(&ups, &[Account::new("eve", "pw-eve").amr(&["pwd", "otp"])], "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let mut attacker = Browser::new(port);
    let attackers_callback = attacker.through_idp(&idp, "eve", "pw-eve").await;
    let mut victim = Browser::new(port);
    let (victims_state, _) = victim.start_sso("victim").await;
    // The attacker's callback (code and iss as the IdP sent them), with the victim's state.
    let attackers_state = query_value(&attackers_callback, "state");
    let injected = attackers_callback.replace(
        &format!("state={attackers_state}"),
        &format!(
            "state={}",
            form_urlencoded::byte_serialize(victims_state.as_bytes()).collect::<String>()
        ),
    );
    assert!(injected.contains("iss="), "the real IdP sends iss: {injected}");
    let (status, _, body) = victim.get(&injected).await;
    assert_eq!(status, 401, "{body}");
    assert!(!victim.has_session());
    assert_eq!(whoami(&mut victim).await.0, 401);
    assert_refusals_recorded(&gw, 1, now).await;
    gw.await_security_event("login", |e| {
        e["event.outcome"] == "failure" && e["event.reason"] == "idp_token_refused"
    })
    .await;
    assert_eq!(
        gw.security_events("login").len(),
        1,
        "one refusal, one event: {:?}",
        gw.security_events("login")
    );
    assert!(
        gw.logs().contains("invalid_grant"),
        "the log says the IdP refused the code for PKCE"
    );
}

/// The value of query parameter `name` of `url`, as it is written there.
fn query_value(url: &str, name: &str) -> String {
    url.split(['?', '&'])
        .find_map(|p| p.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
        .to_string()
}

/// OAUTH-06 (RFC 9207): a callback whose `iss` names another issuer, or that has none
/// although the IdP advertises `authorization_response_iss_parameter_supported`, is
/// refused before any token request. If this broke, a sign-in started with one IdP
/// could be finished by another (mix-up), the code sent to the wrong token endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_from_another_issuer_is_refused_before_the_token_request() {
    let ups = Upstreams::start().await;
    let advertises = ForgingIdp::start_with(json!({"authorization_response_iss_parameter_supported": true})).await;
    let silent = ForgingIdp::start().await;
    let silent_issuer = silent.issuer();
    let gw = sso_gateway_fixture(&ups, &advertises.issuer(), "required", "", |f| {
        let g = f.tenant_mut("globex");
        g.tier = "staging".into();
        g.routes.push_str(&format!(
            "\n[sso]\nissuer = \"{silent_issuer}\"\nclient_id = \"gw-initech\"\nclient_secret = \"inline:globex-client-secret-2\"\nmfa = \"required\"\n"
        ));
    })
    .await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let enc = |s: &str| form_urlencoded::byte_serialize(s.as_bytes()).collect::<String>();
    let cases = [
        ("iss of another IdP", format!("&iss={}", enc(&silent.issuer()))),
        (
            "iss with a trailing slash",
            format!("&iss={}", enc(&format!("{}/", advertises.issuer()))),
        ),
        ("no iss although advertised", String::new()),
        ("empty iss", "&iss=".to_string()),
    ];
    for (case, iss) in &cases {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        *advertises.next_token.lock().unwrap() =
            advertises.sign(Algorithm::EdDSA, "k1", &claims(&advertises, "mallory", &nonce));
        let (status, _, body) = b
            .get(&format!("/.portcullis/callback?code=c&state={}{iss}", enc(&state)))
            .await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(!b.has_session(), "{case}");
        assert_eq!(
            advertises.calls_to("/token"),
            0,
            "{case}: the code went to the token endpoint"
        );
    }
    assert_refusals_recorded(&gw, cases.len(), now).await;

    // The IdP's own iss passes.
    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("own iss").await;
    *advertises.next_token.lock().unwrap() =
        advertises.sign(Algorithm::EdDSA, "k1", &claims(&advertises, "mallory", &nonce));
    let callback = format!(
        "/.portcullis/callback?code=c&state={}&iss={}",
        enc(&state),
        enc(&advertises.issuer())
    );
    let (status, _, body) = b.get(&callback).await;
    assert_eq!((status, b.has_session()), (303, true), "{body}");
    assert_eq!(advertises.calls_to("/token"), 1);

    // An IdP that does not advertise the parameter: none is fine, a wrong one is not.
    for (iss, expected) in [
        (format!("&iss={}", enc(&advertises.issuer())), 401),
        (String::new(), 303),
    ] {
        let mut g = Browser::for_host(port, "globex.test");
        let (state, nonce) = g.start_sso("silent IdP").await;
        *silent.next_token.lock().unwrap() = silent.sign(Algorithm::EdDSA, "k1", &claims(&silent, "mallory", &nonce));
        let before = silent.calls_to("/token");
        let (status, _, body) = g
            .get(&format!("/.portcullis/callback?code=c&state={}{iss}", enc(&state)))
            .await;
        assert_eq!(status, expected, "iss {iss:?}: {body}");
        assert_eq!(g.has_session(), expected == 303);
        assert_eq!(
            silent.calls_to("/token") - before,
            usize::from(expected == 303),
            "iss {iss:?}"
        );
    }
}

/// OAUTH-06 with the real provider, which advertises the parameter: its callback
/// without `iss`, or with another issuer's, is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_real_idps_callback_without_its_iss_is_refused() {
    let ups = Upstreams::start().await;
    let (idp, gw) = idp_and_gateway(&ups, &[Account::new("flo", "pw-flo").amr(&["pwd", "otp"])], "required").await;
    let port = gw.public.port();
    for case in ["no iss", "another iss"] {
        let mut b = Browser::new(port);
        let callback = b.through_idp(&idp, "flo", "pw-flo").await;
        let iss = format!("iss={}", query_value(&callback, "iss"));
        let changed = match case {
            "no iss" => callback.replace(&format!("&{iss}"), "").replace(&format!("{iss}&"), ""),
            _ => callback.replace(&iss, "iss=http%3A%2F%2F127.0.0.1%3A9"),
        };
        assert!(changed != callback, "{case}: {callback}");
        let (status, _, body) = b.get(&changed).await;
        assert_eq!(status, 401, "{case}: {body}");
        assert!(!b.has_session(), "{case}");
    }
}

/// OAUTH-07 (RFC 6749 4.1.2.1): an IdP error whose description carries script gets a
/// 4xx page without that script, with the gateway's CSP, no session, and the attempt
/// is used up: the same state with a valid code afterwards signs in nothing. If this
/// broke, an error callback could run script on the tenant's origin, or leave the
/// attempt open for a later code.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idp_error_is_shown_escaped_and_ends_the_attempt() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let mut b = Browser::new(gw.public.port());
    let (state, nonce) = b.start_sso("error").await;
    let pending = b.cookies.clone();
    let url = format!(
        "{}/.portcullis/callback?error=access_denied&error_description=%3Cscript%3Ealert(1)%3C%2Fscript%3E&state={}",
        b.base,
        form_urlencoded::byte_serialize(state.as_bytes()).collect::<String>()
    );
    let cookie = pending
        .iter()
        .map(|(n, v)| format!("{n}={v}"))
        .collect::<Vec<_>>()
        .join("; ");
    let r = b
        .client
        .get(&url)
        .header("cookie", &cookie)
        .header("accept", "text/html")
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let csp = r
        .headers()
        .get("content-security-policy")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let set_cookies: Vec<String> = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_string))
        .collect();
    let body = r.text().await.unwrap();
    assert!((400..500).contains(&status), "{status}: {body}");
    assert!(!body.contains("<script"), "{body}");
    assert!(!body.contains("alert(1)"), "the description is omitted: {body}");
    assert!(csp.contains("default-src 'none'"), "CSP: {csp:?}");
    assert!(
        !set_cookies.iter().any(|c| c.starts_with("__Host-portcullis-staging=")),
        "no session: {set_cookies:?}"
    );

    // The same attempt with a valid code and token: used up.
    b.cookies = pending;
    *fake.next_token.lock().unwrap() = fake.sign(Algorithm::EdDSA, "k1", &claims(&fake, "mallory", &nonce));
    let (status, _, body) = b.get(&format!("/.portcullis/callback?code=c&state={state}")).await;
    assert_eq!(status, 400, "{body}");
    assert!(!b.has_session());
    assert_eq!(
        fake.calls_to("/token"),
        0,
        "the used-up attempt reached the token endpoint"
    );
    let stores =
        portcullis::store::Stores::open(&format!("sqlite:{}", gw.policy_dir.join("data").display()), ["staging"])
            .await
            .unwrap();
    let history = stores
        .tier("staging")
        .unwrap()
        .login_history("initech", "-", 10, None)
        .await
        .unwrap();
    let reasons: Vec<&str> = history.iter().filter_map(|e| e.reason.as_deref()).collect();
    assert!(reasons.contains(&"idp_error:access_denied"), "{reasons:?}");
    assert!(reasons.contains(&"replayed_callback"), "{reasons:?}");
}

/// Rows in every table of the SQLite stores (`<tier>.sqlite3`) under `dir`.
fn store_rows(dir: &std::path::Path) -> Vec<(String, i64)> {
    let mut rows = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("sqlite3") {
            continue;
        }
        let db = rusqlite::Connection::open_with_flags(&path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
        let tables: Vec<String> = db
            .prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for t in tables {
            let n: i64 = db
                .query_row(&format!("SELECT COUNT(*) FROM \"{t}\""), [], |r| r.get(0))
                .unwrap();
            rows.push((format!("{}:{t}", path.display()), n));
        }
    }
    assert!(!rows.is_empty(), "no SQLite store under {}", dir.display());
    rows
}

/// OAUTH-08 (ASVS 5.0 2.4.1): sign-ins started and never finished take no room in the
/// store: the pending attempt lives in the browser's signed cookie only, so 2,000
/// starts from one client leave every table as it was, memory barely moves, and the
/// tenant and another tenant still sign in. If this broke, anyone could fill the store
/// (or memory) by starting sign-ins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unfinished_sign_ins_take_no_room_in_the_store() {
    const STARTS: usize = 2_000;
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let data = gw.policy_dir.join("data");
    // Warm up (discovery), then measure.
    let mut b = Browser::new(port);
    let (first_state, first_nonce) = b.start_sso("first attempt").await;
    let rows_before = store_rows(&data);
    let rss_before = gw.rss_kib();
    let started = Instant::now();
    let client = Browser::new(port).client;
    let url = format!("http://initech.test:{port}/.portcullis/login/sso?rd=%2Fapp");
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (client, url) = (client.clone(), url.clone());
        tasks.spawn(async move {
            let mut cookie_bytes = 0;
            for _ in (worker..STARTS).step_by(8) {
                let r = client.get(&url).send().await.unwrap();
                assert_eq!(r.status(), 303);
                let c = r.headers().get("set-cookie").expect("a pending-login cookie");
                cookie_bytes = cookie_bytes.max(c.len());
            }
            cookie_bytes
        });
    }
    while let Some(longest) = tasks.join_next().await {
        assert!(
            longest.unwrap() < 4096,
            "the pending-login cookie fits a browser's limit"
        );
    }
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(20), "{STARTS} starts took {elapsed:?}");
    assert_eq!(store_rows(&data), rows_before, "unfinished sign-ins were stored");
    let rss_after = gw.rss_kib();
    assert!(
        rss_after < rss_before + 20 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );

    // The attempt started before the flood still finishes, and another tenant signs in.
    *fake.next_token.lock().unwrap() = fake.sign(Algorithm::EdDSA, "k1", &claims(&fake, "mallory", &first_nonce));
    let (status, _, body) = b
        .get(&format!("/.portcullis/callback?code=c&state={first_state}"))
        .await;
    assert_eq!((status, b.has_session()), (303, true), "{body}");
    let accounts = Accounts::open(&gw).await;
    let user = accounts.create("acme", "amy", &[], true).await;
    Agent::new(&gw, "acme.test").api_login(&user).await;
}
