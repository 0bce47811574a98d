//! More attacks on single sign-on (SECURITY-CASES OIDC-04, -06, -07, -08, -13, -14,
//! -15, OAUTH-01, -02, HDR-08 and KILL-02): issuer spellings, missing and critical
//! claims, another attempt's nonce, key-set refetches, a token endpoint that misbehaves,
//! one IdP's token at another tenant, the randomness of what a sign-in sends, malformed
//! callbacks, forwarded headers and a tripped breaker. Against the real binary, with the
//! forging fake IdP of [`crate::sso`] or the scripted one here (several keys, a token
//! endpoint told how to answer).

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

use crate::harness::*;
use crate::sso::{Browser, ForgingIdp, assert_refusals_recorded, sso_gateway, sso_gateway_fixture, whoami};

/// How the scripted IdP's token endpoint answers.
#[derive(Clone)]
enum TokenReply {
    /// `{"id_token": <next_token>, "token_type": "Bearer"}`.
    Token,
    /// A token response without `id_token`.
    NoIdToken,
    /// 500 with a JSON error.
    ServerError,
    /// 200 with HTML.
    NotJson,
    /// 200 with a JSON-looking body of this many bytes.
    Huge(usize),
    /// The token response, after this long.
    Late(Duration),
}

/// A fake IdP with any number of Ed25519 keys (all published in its key set) whose
/// token endpoint answers as [`TokenReply`] says. It records every request's path and
/// body, and signs with any header, `crit` and kid-less ones too.
struct ScriptedIdp {
    issuer: String,
    /// (kid, PKCS#8) of each key, in the order of the published set.
    keys: Vec<(String, Vec<u8>)>,
    next_token: Arc<Mutex<String>>,
    reply: Arc<Mutex<TokenReply>>,
    /// (path, body) of every request, in order.
    requests: Arc<Mutex<Vec<(String, String)>>>,
}

fn new_key() -> Vec<u8> {
    let rng = ring::rand::SystemRandom::new();
    ring::signature::Ed25519KeyPair::generate_pkcs8(&rng)
        .unwrap()
        .as_ref()
        .to_vec()
}

impl ScriptedIdp {
    /// An IdP on loopback whose issuer is `http://<host>:<port>`, with `keys`.
    async fn start(host: &str, keys: Vec<(String, Vec<u8>)>) -> Self {
        use ring::signature::KeyPair;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = format!("http://{host}:{port}");
        let discovery = json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{issuer}/auth"),
            "token_endpoint": format!("{issuer}/token"),
            "jwks_uri": format!("{issuer}/jwks"),
        });
        let jwks: Vec<Value> = keys
            .iter()
            .map(|(kid, pkcs8)| {
                let pair = ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8).unwrap();
                let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
                json!({"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"})
            })
            .collect();
        let jwks = json!({ "keys": jwks });
        let next_token = Arc::new(Mutex::new(String::new()));
        let reply = Arc::new(Mutex::new(TokenReply::Token));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (token, how, seen) = (next_token.clone(), reply.clone(), requests.clone());
        tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (discovery, jwks) = (discovery.clone(), jwks.clone());
                let (token, how, seen) = (token.clone(), how.clone(), seen.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (discovery, jwks) = (discovery.clone(), jwks.clone());
                        let (token, how, seen) = (token.clone(), how.clone(), seen.clone());
                        async move {
                            use http_body_util::BodyExt;
                            let path = req.uri().path().to_string();
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            seen.lock()
                                .unwrap()
                                .push((path.clone(), String::from_utf8_lossy(&body).into_owned()));
                            let token_response =
                                || json!({"id_token": token.lock().unwrap().clone(), "token_type": "Bearer"});
                            let (status, body) = match path.as_str() {
                                "/.well-known/openid-configuration" => (200, discovery.to_string().into_bytes()),
                                "/jwks" => (200, jwks.to_string().into_bytes()),
                                _ => {
                                    let reply = how.lock().unwrap().clone();
                                    match reply {
                                        TokenReply::Token => (200, token_response().to_string().into_bytes()),
                                        TokenReply::NoIdToken => (
                                            200,
                                            json!({"access_token": "AT", "token_type": "Bearer"})
                                                .to_string()
                                                .into_bytes(),
                                        ),
                                        TokenReply::ServerError => {
                                            (500, json!({"error": "server_error"}).to_string().into_bytes())
                                        }
                                        TokenReply::NotJson => (200, b"<html>Service temporarily down</html>".to_vec()),
                                        TokenReply::Huge(n) => {
                                            let mut body = br#"{"id_token": ""#.to_vec();
                                            body.resize(n, b'a');
                                            (200, body)
                                        }
                                        TokenReply::Late(delay) => {
                                            tokio::time::sleep(delay).await;
                                            (200, token_response().to_string().into_bytes())
                                        }
                                    }
                                }
                            };
                            let mut resp = http::Response::new(http_body_util::Full::new(bytes::Bytes::from(body)));
                            *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                        .await;
                });
            }
        });
        ScriptedIdp {
            issuer,
            keys,
            next_token,
            reply,
            requests,
        }
    }

    /// An IdP at 127.0.0.1 with one key, `k1`.
    async fn one_key() -> Self {
        ScriptedIdp::start("127.0.0.1", vec![("k1".into(), new_key())]).await
    }

    /// Signs `claims` (EdDSA) with key number `key` under a header of `alg`, the `kid`
    /// given (none if `None`) and the fields of `extra`.
    fn sign(&self, key: usize, kid: Option<&str>, extra: Value, claims: &Value) -> String {
        let mut header = json!({"alg": "EdDSA", "typ": "JWT"});
        if let Some(kid) = kid {
            header["kid"] = kid.into();
        }
        if let Value::Object(extra) = extra {
            header.as_object_mut().unwrap().extend(extra);
        }
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&self.keys[key].1).unwrap();
        format!(
            "{input}.{}",
            URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref())
        )
    }

    /// Signs `claims` with the first key under its kid.
    fn token(&self, claims: &Value) -> String {
        let kid = self.keys[0].0.clone();
        self.sign(0, Some(&kid), json!({}), claims)
    }

    fn calls_to(&self, path: &str) -> usize {
        self.requests.lock().unwrap().iter().filter(|(p, _)| p == path).count()
    }

    fn set_reply(&self, reply: TokenReply) {
        *self.reply.lock().unwrap() = reply;
    }
}

/// Valid claims from `issuer` for client `aud`, this attempt's `nonce`.
fn claims_from(issuer: &str, aud: &str, sub: &str, nonce: &str) -> Value {
    let now = portcullis::clock::unix_now();
    json!({"iss": issuer, "aud": aud, "sub": sub, "iat": now, "exp": now + 300,
           "nonce": nonce, "amr": ["pwd", "otp"]})
}

/// The staging tier's cookie key in the test fixture (`PolicyFixture::staging_toml`).
const STAGING_COOKIE_KEY: &[u8] = b"staging-test-cookie-key-0123456789-abcdefghij";

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The callback of `state` with a code; status and body.
async fn callback(b: &mut Browser, state: &str) -> (u16, String) {
    let (status, _, body) = b
        .get(&format!("/.portcullis/callback?code=c&state={}", enc(state)))
        .await;
    (status, body)
}

/// The callback refuses the token the IdP hands over: 401, the SSO failure page, no
/// session.
async fn expect_refused(b: &mut Browser, idp: &ScriptedIdp, case: &str, token: String, state: &str) {
    *idp.next_token.lock().unwrap() = token;
    let (status, body) = callback(b, state).await;
    assert_eq!(status, 401, "{case}: {body}");
    assert!(body.contains("Single sign-on failed"), "{case}: {body}");
    assert!(!b.has_session(), "{case}: no session");
}

/// OIDC-04 (exact issuer match): tokens whose `iss` is the configured issuer with an
/// extra trailing slash, or with its host or scheme in other case, are refused, and the
/// exact spelling signs in. If this broke, an issuer comparison loosened to "the same
/// URL" could let a look-alike issuer's tokens through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_spelt_another_way_is_refused() {
    let ups = Upstreams::start().await;
    let idp = ScriptedIdp::start("localhost", vec![("k1".into(), new_key())]).await;
    let gw = sso_gateway(&ups, &idp.issuer, "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let cases = [
        ("extra trailing slash", format!("{}/", idp.issuer)),
        ("host in upper case", idp.issuer.replace("localhost", "LOCALHOST")),
        ("host in mixed case", idp.issuer.replace("localhost", "LocalHost")),
        ("scheme in upper case", idp.issuer.replace("http://", "HTTP://")),
    ];
    for (case, iss) in &cases {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        let token = idp.token(&claims_from(iss, "gw-initech", "mallory", &nonce));
        expect_refused(&mut b, &idp, case, token, &state).await;
    }
    assert_refusals_recorded(&gw, cases.len(), now).await;

    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("exact").await;
    *idp.next_token.lock().unwrap() = idp.token(&claims_from(&idp.issuer, "gw-initech", "mallory", &nonce));
    let (status, body) = callback(&mut b, &state).await;
    assert_eq!((status, b.has_session()), (303, true), "{body}");
}

/// A test case's ID token for an attempt's nonce.
type TokenFor<'a> = Box<dyn Fn(&str) -> String + 'a>;

/// OIDC-06, -07 and -13: an ID token without `iat`, with the nonce of another sign-in
/// this browser has pending, with a `crit` header the gateway does not understand, an
/// empty `sub` or a NUL in `sub`, and a token response without `id_token`: each refused
/// with 401, no session, no 5xx, and the hostile subject never in the gateway's output.
/// If this broke, a token of unknown age or meant for another attempt could sign in, an
/// extension the IdP marks as critical would be ignored, or an unusable subject would
/// get a session and reach the log as it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_without_iat_with_crit_or_another_attempts_nonce_are_refused() {
    const MARK: &str = "hostile-sub-7c1e";
    let ups = Upstreams::start().await;
    let idp = ScriptedIdp::one_key().await;
    let gw = sso_gateway(&ups, &idp.issuer, "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let mut refused = 0;
    let claims = |nonce: &str| claims_from(&idp.issuer, "gw-initech", "mallory", nonce);

    // OIDC-07: two sign-ins started in one browser; the first finished with a token
    // carrying the second's nonce, then the second with the first's.
    let mut b = Browser::new(port);
    let (state1, nonce1) = b.start_sso("first").await;
    let (state2, nonce2) = b.start_sso("second").await;
    assert_ne!(nonce1, nonce2);
    let pending = b.cookies.clone();
    assert_eq!(
        pending.iter().filter(|(n, _)| n.contains("-sso-")).count(),
        2,
        "two pending sign-ins: {pending:?}"
    );
    expect_refused(
        &mut b,
        &idp,
        "first with the second's nonce",
        idp.token(&claims(&nonce2)),
        &state1,
    )
    .await;
    expect_refused(
        &mut b,
        &idp,
        "second with the first's nonce",
        idp.token(&claims(&nonce1)),
        &state2,
    )
    .await;
    refused += 2;

    let cases: Vec<(&str, TokenFor)> = vec![
        (
            "no iat",
            Box::new(|nonce: &str| {
                let mut c = claims(nonce);
                c.as_object_mut().unwrap().remove("iat");
                idp.token(&c)
            }),
        ),
        (
            "crit names an unknown extension",
            Box::new(|nonce: &str| {
                idp.sign(
                    0,
                    Some("k1"),
                    json!({"crit": ["x-unknown"], "x-unknown": true}),
                    &claims(nonce),
                )
            }),
        ),
        (
            "crit names exp",
            Box::new(|nonce: &str| idp.sign(0, Some("k1"), json!({"crit": ["exp"]}), &claims(nonce))),
        ),
        (
            "empty sub",
            Box::new(|nonce: &str| {
                let mut c = claims(nonce);
                c["sub"] = "".into();
                idp.token(&c)
            }),
        ),
        (
            "NUL in sub",
            Box::new(|nonce: &str| {
                let mut c = claims(nonce);
                c["sub"] = format!("mallory\u{0}{MARK}").into();
                idp.token(&c)
            }),
        ),
        (
            "CR/LF in sub",
            Box::new(|nonce: &str| {
                let mut c = claims(nonce);
                c["sub"] = format!("mallory\r\n{MARK}").into();
                idp.token(&c)
            }),
        ),
    ];
    for (case, token) in &cases {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        expect_refused(&mut b, &idp, case, token(&nonce), &state).await;
        refused += 1;
    }

    // A token response without an ID token.
    idp.set_reply(TokenReply::NoIdToken);
    let mut b = Browser::new(port);
    let (state, _) = b.start_sso("no id_token").await;
    let (status, body) = callback(&mut b, &state).await;
    assert_eq!(status, 401, "no id_token: {body}");
    assert!(body.contains("no ID token"), "{body}");
    assert!(!b.has_session());
    refused += 1;
    assert_refusals_recorded(&gw, refused, now).await;

    let statuses = eventually(Duration::from_secs(5), || async {
        let s: Vec<u64> = gw
            .access_log()
            .iter()
            .filter(|l| l["path"] == "/.portcullis/callback")
            .filter_map(|l| l["status"].as_u64())
            .collect();
        (s.len() == refused).then_some(s)
    })
    .await
    .unwrap_or_else(|| panic!("{refused} callbacks not in the access log:\n{}", gw.logs()));
    assert!(statuses.iter().all(|s| *s < 500), "{statuses:?}");
    assert!(!gw.logs().contains(MARK), "the raw sub reached the log:\n{}", gw.logs());

    // The same token with `iat` and no `crit` signs in.
    idp.set_reply(TokenReply::Token);
    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("valid").await;
    *idp.next_token.lock().unwrap() = idp.token(&claims(&nonce));
    let (status, body) = callback(&mut b, &state).await;
    assert_eq!((status, b.has_session()), (303, true), "{body}");
}

/// OIDC-08 (OIDC Core 10.1.1): many tokens naming kids the key set lacks make the
/// gateway fetch the set again at most once (per 10 s), not once per token; a token
/// without `kid` while the set holds two keys is refused, whichever key signed it, and
/// never 5xx. If this broke, anyone could make the gateway hammer the IdP's key
/// endpoint, or a kid-less token could be checked against a key chosen by guesswork.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_kids_refetch_the_key_set_at_most_once_and_kidless_tokens_need_one_key() {
    const UNKNOWN: usize = 20;
    let ups = Upstreams::start().await;
    let idp = ScriptedIdp::start("127.0.0.1", vec![("k1".into(), new_key()), ("k2".into(), new_key())]).await;
    let gw = sso_gateway(&ups, &idp.issuer, "required").await;
    let port = gw.public.port();
    let now = portcullis::clock::unix_now();
    let claims = |nonce: &str| claims_from(&idp.issuer, "gw-initech", "mallory", nonce);

    // Warm up: one valid sign-in with k2 fetches the set once.
    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("k2").await;
    *idp.next_token.lock().unwrap() = idp.sign(1, Some("k2"), json!({}), &claims(&nonce));
    let (status, body) = callback(&mut b, &state).await;
    assert_eq!((status, b.has_session()), (303, true), "{body}");
    assert_eq!(idp.calls_to("/jwks"), 1);

    for i in 0..UNKNOWN {
        let case = format!("unknown kid {i}");
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(&case).await;
        let token = idp.sign(0, Some(&format!("rotated-{i}")), json!({}), &claims(&nonce));
        expect_refused(&mut b, &idp, &case, token, &state).await;
    }
    let fetches = idp.calls_to("/jwks");
    assert!(
        fetches <= 2,
        "{UNKNOWN} unknown kids made {fetches} key-set fetches (at most one refetch)"
    );

    for (case, key) in [("no kid, signed by k1", 0), ("no kid, signed by k2", 1)] {
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        let token = idp.sign(key, None, json!({}), &claims(&nonce));
        expect_refused(&mut b, &idp, case, token, &state).await;
    }
    assert_refusals_recorded_with_sessions(&gw, UNKNOWN + 2, now, 1).await;
}

/// Like [`assert_refusals_recorded`], for a test that also signed `sessions` in.
async fn assert_refusals_recorded_with_sessions(gw: &Gateway, expected: usize, now: i64, sessions: usize) {
    let stores =
        portcullis::store::Stores::open(&format!("sqlite:{}", gw.policy_dir.join("data").display()), ["staging"])
            .await
            .unwrap();
    let store = stores.tier("staging").unwrap();
    let history = store.login_history("initech", "-", 200, None).await.unwrap();
    let refused = history
        .iter()
        .filter(|e| e.reason.as_deref() == Some("idp_token_refused"))
        .count();
    assert_eq!(refused, expected, "{history:?}");
    assert_eq!(
        store.list_tenant_sessions("initech", now, 10).await.unwrap().len(),
        sessions
    );
}

/// OIDC-14 (ASVS 5.0 16.5.1, 16.5.2): a token endpoint that answers 500, HTML, a 50 MB
/// body, or nothing for longer than the gateway waits gives the identity-provider page
/// (502) within 15 s, no session, and while it waits another tenant keeps being served.
/// If this broke, a sick IdP would look like a refused sign-in, could make the gateway
/// read without bound, or hold it up for every tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_misbehaving_token_endpoint_gives_a_clear_page_in_time() {
    let ups = Upstreams::start().await;
    let idp = ScriptedIdp::one_key().await;
    let gw = sso_gateway(&ups, &idp.issuer, "required").await;
    let port = gw.public.port();
    let cases = [
        ("500", TokenReply::ServerError),
        ("not JSON", TokenReply::NotJson),
        ("50 MB body", TokenReply::Huge(50 * 1024 * 1024)),
        ("answers after 30 s", TokenReply::Late(Duration::from_secs(30))),
    ];
    let rss_before = gw.rss_kib();
    for (case, reply) in cases {
        idp.set_reply(reply);
        let mut b = Browser::new(port);
        let (state, nonce) = b.start_sso(case).await;
        *idp.next_token.lock().unwrap() = idp.token(&claims_from(&idp.issuer, "gw-initech", "mallory", &nonce));
        let started = Instant::now();
        let sign_in = tokio::spawn(async move {
            let (status, body) = callback(&mut b, &state).await;
            (status, body, b.has_session())
        });
        // Meanwhile another tenant is served.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let other = Instant::now();
        let acme = raw_get(gw.public, "acme.test", "/public/x").await;
        assert_eq!(acme.status, 200, "{case}: acme while the token endpoint misbehaves");
        assert!(other.elapsed() < Duration::from_secs(2), "{case}: acme waited");
        let (status, body, session) = sign_in.await.unwrap();
        let took = started.elapsed();
        assert_eq!(status, 502, "{case}: {body}");
        assert!(body.contains("identity provider"), "{case}: {body}");
        assert!(!session, "{case}: no session");
        assert!(took < Duration::from_secs(15), "{case}: took {took:?}");
    }
    let rss_after = gw.rss_kib();
    assert!(
        rss_after < rss_before + 20 * 1024,
        "the 50 MB body was read: RSS {rss_before} KiB -> {rss_after} KiB"
    );
}

/// OIDC-15 (ASVS 5.0 6.8.1): two tenants whose IdPs sign with one key (one provider
/// hosting both, as multi-tenant providers do). Globex's IdP hands over a token issued
/// by initech's IdP, or issued for initech's client: globex's own issuer and audience
/// checks refuse both; globex's own token signs in. If this broke, one tenant's IdP (or
/// anyone holding a token it issued) could sign people into another tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_tenants_idp_token_fails_this_tenants_issuer_and_audience_checks() {
    let ups = Upstreams::start().await;
    let shared = new_key();
    let idp_a = ScriptedIdp::start("127.0.0.1", vec![("k1".into(), shared.clone())]).await;
    let idp_b = ScriptedIdp::start("127.0.0.1", vec![("k1".into(), shared)]).await;
    let issuer_b = idp_b.issuer.clone();
    let gw = sso_gateway_fixture(&ups, &idp_a.issuer, "required", "", |f| {
        let g = f.tenant_mut("globex");
        g.tier = "staging".into();
        g.routes.push_str(&format!(
            "\n[sso]\nissuer = \"{issuer_b}\"\nclient_id = \"gw-globex\"\nclient_secret = \"inline:globex-client-secret-2\"\nmfa = \"required\"\n"
        ));
    })
    .await;
    let port = gw.public.port();
    let cases = [
        ("A's token for A's client", idp_a.issuer.as_str(), "gw-initech"),
        ("A's issuer, B's client", idp_a.issuer.as_str(), "gw-globex"),
        ("B's issuer, A's client", idp_b.issuer.as_str(), "gw-initech"),
    ];
    for (case, iss, aud) in cases {
        let mut g = Browser::for_host(port, "globex.test");
        let (state, nonce) = g.start_sso(case).await;
        let token = idp_a.token(&claims_from(iss, aud, "mallory", &nonce));
        *idp_b.next_token.lock().unwrap() = token;
        let (status, body) = callback(&mut g, &state).await;
        assert_eq!(status, 401, "{case}: {body}");
        let why = if iss == idp_b.issuer {
            "not issued for this gateway"
        } else {
            "not issued by this tenant"
        };
        assert!(body.contains(why), "{case}: refused as {why:?}: {body}");
        assert!(!g.has_session(), "{case}");
        assert_eq!(whoami(&mut g).await.0, 401, "{case}");
    }
    assert_eq!(idp_b.calls_to("/token"), 3, "each reached B's token endpoint");
    assert_eq!(idp_a.calls_to("/token"), 0);

    let mut g = Browser::for_host(port, "globex.test");
    let (state, nonce) = g.start_sso("B's own").await;
    *idp_b.next_token.lock().unwrap() = idp_b.token(&claims_from(&idp_b.issuer, "gw-globex", "mallory", &nonce));
    let (status, body) = callback(&mut g, &state).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(whoami(&mut g).await.1["subject"], "mallory");
}

/// The query parameters of a URL, decoded.
fn params_of(url: &str) -> Vec<(String, String)> {
    let query = url.split_once('?').map(|(_, q)| q).unwrap_or_default();
    form_urlencoded::parse(query.as_bytes()).into_owned().collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> &'a str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("{name} in {params:?}"))
}

/// OAUTH-01 (RFC 7636 4.1, 4.2; RFC 9700 2.1.1): over 1,000 sign-in starts every
/// `state`, `nonce` and `code_challenge` is distinct, base64url of at least 128 bits
/// (43 characters for the challenge); the verifier the token request carries is at
/// least 43 characters and hashes to the challenge sent. If this broke, an attacker
/// could predict or reuse another browser's state, nonce or PKCE pair.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_nonce_and_pkce_are_fresh_and_unguessable_for_every_start() {
    const STARTS: usize = 1_000;
    let ups = Upstreams::start().await;
    let idp = ScriptedIdp::one_key().await;
    let gw = sso_gateway(&ups, &idp.issuer, "required").await;
    let port = gw.public.port();
    let client = Browser::new(port).client;
    let url = format!("http://initech.test:{port}/.portcullis/login/sso");
    let mut seen: [HashSet<String>; 3] = Default::default();
    let base64url = |v: &str| v.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_');
    for _ in 0..STARTS {
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 303);
        let location = r.headers()["location"].to_str().unwrap().to_string();
        let params = params_of(&location);
        assert_eq!(param(&params, "code_challenge_method"), "S256");
        for (i, (name, min)) in [("state", 22), ("nonce", 22), ("code_challenge", 43)]
            .into_iter()
            .enumerate()
        {
            let v = param(&params, name).to_string();
            assert!(v.len() >= min && base64url(&v), "{name} {v:?}");
            assert!(seen[i].insert(v.clone()), "{name} {v} came twice");
        }
    }
    // No value is shared between the three either.
    assert!(seen[0].is_disjoint(&seen[1]) && seen[1].is_disjoint(&seen[2]) && seen[0].is_disjoint(&seen[2]));
    // Every character of the alphabet turns up: no constant positions or narrowed range.
    let chars: HashSet<char> = seen[0].iter().flat_map(|s| s.chars()).collect();
    assert_eq!(chars.len(), 64, "state uses {} of 64 characters", chars.len());

    // The verifier behind a challenge, as the token request carries it.
    for _ in 0..3 {
        let mut b = Browser::new(port);
        let (status, location, _) = b.get("/.portcullis/login/sso").await;
        assert_eq!(status, 303);
        let params = params_of(&location.unwrap());
        let (state, nonce, challenge) = (
            param(&params, "state").to_string(),
            param(&params, "nonce").to_string(),
            param(&params, "code_challenge").to_string(),
        );
        *idp.next_token.lock().unwrap() = idp.token(&claims_from(&idp.issuer, "gw-initech", "mallory", &nonce));
        assert_eq!(callback(&mut b, &state).await.0, 303);
        let body = idp
            .requests
            .lock()
            .unwrap()
            .iter()
            .rev()
            .find(|(path, _)| path == "/token")
            .unwrap()
            .1
            .clone();
        let form: Vec<(String, String)> = form_urlencoded::parse(body.as_bytes()).into_owned().collect();
        let verifier = param(&form, "code_verifier");
        assert!(
            (43..=128).contains(&verifier.len()) && base64url(verifier),
            "{verifier:?}"
        );
        use sha2::Digest;
        assert_eq!(
            URL_SAFE_NO_PAD.encode(sha2::Sha256::digest(verifier.as_bytes())),
            challenge
        );
    }
}

/// OAUTH-02 (RFC 6749 10.12): callbacks whose `state` is missing, empty, another
/// tenant's (with that tenant's pending-login cookie), or whose attempt is past its
/// 10-minute lifetime, or that repeat `code` or `state`,
/// are 400 before any token request, with no session; the attempt itself still
/// finishes afterwards. If this broke, a callback not bound to this browser's attempt
/// could reach the token endpoint, or a parser that reads another copy of a parameter
/// than the check did could be led around the state check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callbacks_with_missing_foreign_or_repeated_state_never_reach_the_token_endpoint() {
    let ups = Upstreams::start().await;
    let idp = ScriptedIdp::one_key().await;
    let other = ScriptedIdp::one_key().await;
    let other_issuer = other.issuer.clone();
    let gw = sso_gateway_fixture(&ups, &idp.issuer, "required", "", |f| {
        let g = f.tenant_mut("globex");
        g.tier = "staging".into();
        g.routes.push_str(&format!(
            "\n[sso]\nissuer = \"{other_issuer}\"\nclient_id = \"gw-globex\"\nclient_secret = \"inline:globex-client-secret-2\"\nmfa = \"required\"\n"
        ));
    })
    .await;
    let port = gw.public.port();

    // Globex's pending sign-in, carried over to initech.
    let mut g = Browser::for_host(port, "globex.test");
    let (globex_state, _) = g.start_sso("globex").await;

    let mut b = Browser::new(port);
    let (state, nonce) = b.start_sso("initech").await;
    *idp.next_token.lock().unwrap() = idp.token(&claims_from(&idp.issuer, "gw-initech", "mallory", &nonce));
    let s = enc(&state);
    let cases = [
        ("no state", "code=c".to_string(), None),
        ("empty state", "code=c&state=".to_string(), None),
        (
            "another tenant's state and cookie",
            format!("code=c&state={}", enc(&globex_state)),
            Some(g.cookies.clone()),
        ),
        ("two codes", format!("code=A&code=B&state={s}"), None),
        ("state twice", format!("code=A&state={s}&state={s}"), None),
        (
            "code and state twice",
            format!("code=A&code=B&state={s}&state={s}"),
            None,
        ),
        (
            "another state before this one",
            format!("code=A&state=x&state={s}"),
            None,
        ),
    ];
    for (case, query, cookies) in cases {
        let mut browser = Browser::new(port);
        browser.cookies = b.cookies.clone();
        if let Some(c) = cookies {
            browser.cookies.extend(c);
        }
        let (status, _, body) = browser.get(&format!("/.portcullis/callback?{query}")).await;
        assert_eq!(status, 400, "{case}: {body}");
        assert!(!browser.has_session(), "{case}");
        assert_eq!(
            idp.calls_to("/token") + other.calls_to("/token"),
            0,
            "{case}: a token request"
        );
    }

    // The same attempt, its sealed cookie re-signed (with the fixture's staging cookie
    // key) to have started 11 minutes ago: past the 10-minute lifetime.
    let (name, sealed) = b.cookies.iter().find(|(n, _)| n.contains("-sso-")).cloned().unwrap();
    let mut opened: Value =
        portcullis::auth::preauth::open_value(&sealed, STAGING_COOKIE_KEY).expect("the fixture's key");
    assert_eq!(opened["state"], state.as_str());
    opened["exp"] = (portcullis::clock::unix_now() - 60).into();
    let mut expired = Browser::new(port);
    expired.cookies = vec![(name, portcullis::auth::preauth::seal_value(&opened, STAGING_COOKIE_KEY))];
    let (status, body) = callback(&mut expired, &state).await;
    assert_eq!(status, 400, "expired: {body}");
    assert!(!expired.has_session());
    assert_eq!(idp.calls_to("/token"), 0, "expired: a token request");

    // The attempt was not used up by any of them.
    let (status, body) = callback(&mut b, &state).await;
    assert_eq!((status, b.has_session()), (303, true), "{body}");
    assert_eq!(idp.calls_to("/token"), 1);
}

/// HDR-08 (RFC 9700 4.1): `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` from
/// a peer that is not a trusted proxy change nothing in the sign-in redirect: the
/// `redirect_uri` is the tenant's configured origin, never evil.example or another
/// scheme. If this broke, anyone could have the IdP send codes to a host of their
/// choosing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_headers_from_an_untrusted_peer_do_not_move_the_redirect_uri() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let canonical = format!("http://initech.test:{port}/.portcullis/callback");
    for headers in [
        "X-Forwarded-Proto: http\r\n",
        "X-Forwarded-Proto: https\r\n",
        "X-Forwarded-Host: evil.example\r\n",
        "X-Forwarded-Proto: http\r\nX-Forwarded-Host: evil.example\r\nX-Forwarded-Port: 8443\r\n",
        "Forwarded: for=1.2.3.4;host=evil.example;proto=https\r\n",
    ] {
        let req = format!(
            "GET /.portcullis/login/sso?rd=%2Fapp HTTP/1.1\r\nHost: initech.test:{port}\r\n{headers}Connection: close\r\n\r\n"
        );
        let r = raw(gw.public, req.as_bytes()).await.remove(0);
        assert_eq!(r.status, 303, "{headers:?}");
        let location = r.header("location").unwrap_or_default().to_string();
        assert!(location.starts_with(&format!("{}/auth?", fake.issuer())), "{location}");
        assert!(!location.contains("evil.example"), "{headers:?}: {location}");
        let params = params_of(&location);
        assert_eq!(param(&params, "redirect_uri"), canonical, "{headers:?}");
        let cookie = r.header("set-cookie").unwrap_or_default();
        assert!(!cookie.contains("evil.example"), "{cookie}");
    }
}

/// KILL-02: a breaker on an SSO account (tripped by a tenant admin with `idp=sso`) ends
/// that user's session and refuses their next sign-in through the IdP with 423 and the
/// "suspended" page, no session; a colleague signs in as before. If this broke, a suspended SSO
/// user could simply sign in again through their IdP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_sso_account_cannot_sign_in_again_through_the_idp() {
    let ups = Upstreams::start().await;
    let fake = ForgingIdp::start().await;
    let gw = sso_gateway(&ups, &fake.issuer(), "required").await;
    let port = gw.public.port();
    let sign_in = |sub: &'static str, groups: Value| {
        let fake = &fake;
        async move {
            let mut b = Browser::new(port);
            let (state, nonce) = b.start_sso(sub).await;
            let mut c = claims_from(&fake.issuer(), "gw-initech", sub, &nonce);
            c["groups"] = groups;
            *fake.next_token.lock().unwrap() = fake.sign(jsonwebtoken::Algorithm::EdDSA, "k1", &c);
            let (status, body) = callback(&mut b, &state).await;
            (b, status, body)
        }
    };
    let (mut admin, status, body) = sign_in("ada", json!(["tenant-admin"])).await;
    assert_eq!(status, 303, "{body}");
    let (mut mallory, status, body) = sign_in("mallory", json!(["staff"])).await;
    assert_eq!(status, 303, "{body}");
    assert_eq!(whoami(&mut mallory).await.0, 200);

    let (status, reply) = admin
        .send_json(
            reqwest::Method::PUT,
            "/.portcullis/api/admin/accounts/mallory/breaker?idp=sso",
            Some(json!({ "reason": "phished at the IdP" })),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(whoami(&mut mallory).await.0, 423, "the session is cut");

    let (again, status, body) = sign_in("mallory", json!(["staff"])).await;
    assert_eq!(status, 423, "{body}");
    assert!(body.contains("suspended"), "the page says why: {body}");
    assert!(!again.has_session());

    let (mut bob, status, body) = sign_in("bob", json!(["staff"])).await;
    assert_eq!((status, bob.has_session()), (303, true), "{body}");
    assert_eq!(whoami(&mut bob).await.1["subject"], "bob");
    assert_eq!(whoami(&mut admin).await.0, 200);
}

/// KILL-02, the other path: with a breaker on A/alice (tripped by an operator), her
/// right password and an unused recovery code get 423 and no session; A/bob signs in
/// with the same kind of code. If this broke, a suspended user who kept a recovery code
/// could sign in around the switch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_account_cannot_sign_in_with_a_recovery_code() {
    let ups = Upstreams::start().await;
    let token = random_hex(24);
    let mut f = PolicyFixture::for_upstreams(&ups);
    f.prod_operators = vec![("olivia".into(), sha256_hex(token.as_bytes()))];
    let gw = Gateway::start(&f).await;
    let accounts = Accounts::open(&gw).await;
    let codes = portcullis::auth::mfa::new_recovery_codes();
    let mut users = Vec::new();
    for name in ["alice", "bob"] {
        users.push(accounts.create("acme", name, &[], true).await);
        let store = accounts.store("prod");
        let mut record = store.get_user("acme", name).await.unwrap().unwrap();
        record.recovery_code_hashes = codes
            .iter()
            .map(|c| portcullis::auth::mfa::recovery_code_hash(c))
            .collect();
        store.update_user(&record).await.unwrap();
    }
    let r = reqwest::Client::new()
        .put(gw.admin_url("/v1/tenants/acme/accounts/alice/breaker"))
        .bearer_auth(&token)
        .json(&json!({"reason": "phished", "message": "Your account is locked"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap_or_default());

    for (user, expected) in [(&users[0], 423), (&users[1], 200)] {
        let mut a = Agent::new(&gw, "acme.test");
        let step = a.api_password_step(user, None).await;
        assert_eq!(step.json()["next"], "mfa", "{}: {}", user.username, step.body);
        let r = a.post_json("/.portcullis/api/mfa", &json!({ "code": codes[0] })).await;
        assert_eq!(r.status, expected, "{}: {}", user.username, r.body);
        let me = a.get("/.portcullis/api/whoami").await;
        if expected == 200 {
            assert_eq!(me.json()["amr"], json!(["pwd", "rec"]), "{}", me.body);
        } else {
            assert_eq!(r.json()["message"], "Your account is locked", "{}", r.body);
            assert!(a.session("prod").is_none(), "alice got a session");
            assert_eq!(me.status, 401, "{}", me.body);
        }
    }
}
