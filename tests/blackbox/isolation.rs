//! Tenant and tier isolation of credentials, and the signed identity assertion, through
//! the real binary with two tiers and three tenants (SPEC "Tiers and isolation",
//! "Identity assertion to the upstream"). Operator and automation tokens across tiers
//! and tenants are covered in `breakers.rs`; the OIDC state cookie row of the matrix
//! waits for single sign-on.

use std::time::{Duration, Instant};

use portcullis::assertion::Verifier;

use crate::harness::*;

const PROTECTED: &str = "/app/data";
const PUBLIC: &str = "/public/ping";

/// The last assertion an upstream received.
fn last_assertion(up: &RecordingUpstream) -> String {
    up.requests()
        .last()
        .and_then(|r| r.header("portcullis-assertion").map(str::to_string))
        .expect("the upstream received an assertion")
}

async fn jwks(gw: &Gateway, host: &str) -> String {
    let r = gw
        .client()
        .get(gw.host_url(host, "/.portcullis/jwks.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// If this broke, a cookie, a forged assertion or a leaked upstream credential of one
/// tenant or tier would be honoured (or pass unnoticed) on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_of_one_tenant_or_tier_do_nothing_on_another() {
    let (ups, gw) = start_with(|f| {
        f.staging_keys = "upstream_token = \"inline:staging-upstream-credential-1\"\n".into();
    })
    .await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &[], true).await;
    let gina = accounts.create("globex", "gina", &[], true).await;
    let mut acme = Agent::new(&gw, "acme.test");
    acme.api_login(&alice).await;
    assert_eq!(acme.get(PROTECTED).await.status, 200);
    let acme_assertion = last_assertion(&ups.acme);
    let cookie = format!("__Host-portcullis-prod={}", acme.session("prod").unwrap());

    // Session cookie: another tenant of the tier, then another tier.
    let mut globex = Agent::new(&gw, "globex.test");
    let r = globex
        .send(http::Method::GET, PROTECTED, &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    let mut initech = Agent::new(&gw, "initech.test");
    let r = initech
        .send(http::Method::GET, PROTECTED, &[("cookie", &cookie)], None)
        .await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(ups.globex.count() + ups.initech.count(), 0, "nothing forwarded");

    // Assertion: a client-sent one never reaches an upstream; with a session, the
    // upstream gets the gateway's own for that session.
    let h = [("portcullis-assertion", acme_assertion.as_str())];
    assert_eq!(initech.send(http::Method::GET, PUBLIC, &h, None).await.status, 200);
    assert!(!ups.initech.only().has_header("portcullis-assertion"));
    let mut gina_agent = Agent::new(&gw, "globex.test");
    gina_agent.api_login(&gina).await;
    assert_eq!(
        gina_agent.send(http::Method::GET, PROTECTED, &h, None).await.status,
        200
    );
    let forwarded = ups
        .globex
        .requests()
        .last()
        .unwrap()
        .header_all("portcullis-assertion")
        .join("|");
    assert_ne!(forwarded, acme_assertion);
    let prod_keys = Verifier::from_jwks_json(&jwks(&gw, "globex.test").await).unwrap();
    let claims = prod_keys
        .verify(&forwarded, None, "globex", portcullis::clock::unix_now())
        .unwrap();
    assert_eq!(claims.sub, "gina");

    // Upstream credential: presented by a client, it is removed and logged.
    let h = [("portcullis-upstream-token", "staging-upstream-credential-1")];
    assert_eq!(acme.send(http::Method::GET, PUBLIC, &h, None).await.status, 200);
    assert!(
        !ups.acme
            .requests()
            .last()
            .unwrap()
            .has_header("portcullis-upstream-token")
    );
    assert_eq!(initech.send(http::Method::GET, PUBLIC, &h, None).await.status, 200);
    let seen = ups
        .initech
        .requests()
        .last()
        .unwrap()
        .header_all("portcullis-upstream-token")
        .len();
    assert_eq!(seen, 1, "only the gateway's own credential reaches the tier's upstream");

    // Every refusal above is a security event.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let tenant = gw.security_events("cross_tenant");
        let tier = gw.security_events("cross_tier");
        if tenant.len() >= 2 && tier.len() >= 2 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "expected cross_tenant (cookie, own-tier credential) and cross_tier (cookie, other-tier credential) events:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// If this broke, an app could not tell a genuine assertion from a forged one, or would
/// accept one minted for another tenant or tier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn assertions_verify_only_with_their_own_tier_and_tenant() {
    let (ups, gw) = start().await;
    let accounts = Accounts::open(&gw).await;
    let alice = accounts.create("acme", "alice", &["admin"], true).await;
    let ivan = accounts.create("initech", "ivan", &[], true).await;
    let mut a = Agent::new(&gw, "acme.test");
    a.api_login(&alice).await;
    assert_eq!(a.get(PROTECTED).await.status, 200);
    let mut i = Agent::new(&gw, "initech.test");
    i.api_login(&ivan).await;
    assert_eq!(i.get(PROTECTED).await.status, 200);
    let (acme_jwt, initech_jwt) = (last_assertion(&ups.acme), last_assertion(&ups.initech));
    let prod = Verifier::from_jwks_json(&jwks(&gw, "acme.test").await).unwrap();
    let staging = Verifier::from_jwks_json(&jwks(&gw, "initech.test").await).unwrap();
    let now = portcullis::clock::unix_now();

    let claims = prod
        .verify(&acme_jwt, Some("urn:portcullis:tier:prod"), "acme", now)
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.tenant.as_str(), claims.tier.as_str()),
        ("alice", "acme", "prod")
    );
    assert_eq!(claims.roles, vec!["admin".to_string()]);
    assert!(claims.amr.contains(&"otp".to_string()), "{:?}", claims.amr);
    assert!(!claims.sid.is_empty() && claims.exp - claims.iat <= 60);
    let header = jsonwebtoken::decode_header(&acme_jwt).unwrap();
    assert_eq!(header.alg, jsonwebtoken::Algorithm::EdDSA);
    assert!(header.kid.is_some());

    assert!(
        staging.verify(&acme_jwt, None, "acme", now).is_err(),
        "another tier's keys"
    );
    assert!(prod.verify(&acme_jwt, None, "globex", now).is_err(), "another tenant");
    assert!(prod.verify(&initech_jwt, None, "initech", now).is_err());
    assert!(staging.verify(&initech_jwt, None, "initech", now).is_ok());
}

/// If this broke, rotating a tier's key would make apps reject valid requests (or the
/// gateway would keep signing with the old key).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_under_load_fails_no_verification() {
    let pem = portcullis::assertion::generate_ed25519_pem().unwrap();
    let (ups, gw) = start_with(|f| {
        f.staging_keys = "assertion = \"file:secrets/staging-assertion.pem\"\n".into();
        f.extra_files = vec![("secrets/staging-assertion.pem".into(), pem.to_string())];
    })
    .await;
    let accounts = Accounts::open(&gw).await;
    let ivan = accounts.create("initech", "ivan", &[], true).await;
    let mut agent = Agent::new(&gw, "initech.test");
    agent.api_login(&ivan).await;
    let cookie = format!("__Host-portcullis-staging={}", agent.session("staging").unwrap());
    let before = jwks(&gw, "initech.test").await;

    // Load from a few clients while the key is rotated and the policy reloaded.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (client, url, cookie, stop) = (
            gw.client(),
            gw.host_url("initech.test", PROTECTED),
            cookie.clone(),
            stop.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.get(&url).header("cookie", &cookie).send().await.unwrap();
                statuses.push(r.status().as_u16());
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let config = gw.policy_dir.display().to_string();
    let out = tokio::process::Command::new(BIN)
        .args(["keys", "rotate", "--tier", "staging", "--config", &config])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    gw.signal("HUP");
    // Assertions are reused for up to 30 s per session; a new kid must show within that.
    let deadline = Instant::now() + Duration::from_secs(40);
    let old_kid = jsonwebtoken::decode_header(&last_assertion(&ups.initech)).unwrap().kid;
    loop {
        let kid = jsonwebtoken::decode_header(&last_assertion(&ups.initech)).unwrap().kid;
        if kid != old_kid {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never signed with the new key:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in tasks {
        assert!(t.await.unwrap().iter().all(|s| *s == 200), "every request was served");
    }

    // An app that fetched the JWKS before the rotation refetches on the unknown kid and
    // then verifies every assertion it received, old and new.
    let after = jwks(&gw, "initech.test").await;
    let kids = |jwks: &str| -> Vec<String> {
        let v: serde_json::Value = serde_json::from_str(jwks).unwrap();
        v["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kids(&before).len(), 1);
    assert_eq!(kids(&after).len(), 2, "old key still published: {after}");
    let cached = Verifier::from_jwks_json(&before).unwrap();
    let refreshed = Verifier::from_jwks_json(&after).unwrap();
    let now = portcullis::clock::unix_now();
    let mut seen_kids = std::collections::BTreeSet::new();
    let mut failed = 0;
    for r in ups.initech.requests() {
        let Some(token) = r.header("portcullis-assertion") else {
            continue;
        };
        seen_kids.insert(jsonwebtoken::decode_header(token).unwrap().kid.unwrap_or_default());
        let ok =
            cached.verify(token, None, "initech", now).is_ok() || refreshed.verify(token, None, "initech", now).is_ok();
        failed += usize::from(!ok);
    }
    assert_eq!(failed, 0, "failed verifications");
    assert_eq!(seen_kids.len(), 2, "both keys signed during the run: {seen_kids:?}");
}

/// If this broke, the demo's echo app (what a newcomer sees first) would not show how
/// an app verifies the gateway's assertion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_echo_app_verifies_the_assertion() {
    let data = tempfile::tempdir().unwrap();
    let _demo = KillOnDrop(
        std::process::Command::new(BIN)
            .args(["demo", "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(data.path())
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let demo = eventually(Duration::from_secs(30), || async { demo_json(data.path()) })
        .await
        .expect("demo did not start");
    let bob = demo["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["username"] == "bob")
        .unwrap()
        .clone();
    let addr: std::net::SocketAddr = demo["public"].as_str().unwrap().parse().unwrap();
    let client = reqwest::Client::builder()
        .resolve("acme.localhost", addr)
        .no_proxy()
        .build()
        .unwrap();
    let base = format!("http://acme.localhost:{}", addr.port());
    let cookies = |r: &reqwest::Response| -> Vec<String> {
        r.headers()
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok()?.split(';').next().map(str::to_string))
            .collect()
    };
    let r = client
        .post(format!("{base}/.portcullis/api/login"))
        .json(&serde_json::json!({"username": "bob", "password": bob["password"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let pre = cookies(&r).join("; ");
    let secret = portcullis::auth::mfa::TotpSecret::from_base32(bob["totp_secret"].as_str().unwrap()).unwrap();
    let step = u64::try_from(portcullis::clock::unix_now()).unwrap() / 30;
    let code = format!("{:06}", portcullis::auth::mfa::code_at(&secret, step));
    let r = client
        .post(format!("{base}/.portcullis/api/mfa"))
        .header("cookie", &pre)
        .json(&serde_json::json!({ "code": code }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let session = cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("__Host-portcullis-prod="))
        .unwrap();
    let echo: serde_json::Value = client
        .get(format!("{base}/app/x"))
        .header("cookie", &session)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echo["assertion"]["valid"], true, "{echo}");
    assert_eq!(echo["assertion"]["claims"]["sub"], "bob");
    assert_eq!(echo["assertion"]["claims"]["aud"], "acme");
}

/// Stops a child process however the test ends.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
