//! Assertion keys shared through the tier's store (SPEC "Identity assertion to the
//! upstream": rotation keeps the old key published until its last assertion expires),
//! through the real binary: across a rotation and a restart, and between two gateway
//! processes on one store. How long a key stays published is checked by unit tests in
//! `src/live.rs` and `src/assertion.rs`, so nothing here waits for a key to expire.

use std::path::Path;
use std::time::Duration;

use portcullis::assertion::{Claims, Signer, SigningKey, Verifier, generate_ed25519_pem};

use crate::harness::*;

const PROTECTED: &str = "/app/data";
const KEY_FILE: &str = "secrets/staging-assertion.pem";

/// The staging tier signs with the key in `KEY_FILE`, which starts as `pem`.
fn with_staging_key(f: &mut PolicyFixture, pem: &str) {
    f.staging_keys = format!("assertion = \"file:{KEY_FILE}\"\n");
    f.extra_files.push((KEY_FILE.into(), pem.to_string()));
}

fn kid_of_file(path: &Path) -> String {
    let pem = std::fs::read(path).unwrap();
    SigningKey::from_pkcs8_pem(&pem).unwrap().kid().to_string()
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

fn kids(jwks: &str) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(jwks).unwrap();
    v["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap().to_string())
        .collect()
}

/// If this broke, an app would refuse the requests a gateway signed just before it was
/// restarted with a rotated key: the old key would be gone from the JWKS while its
/// assertions are still valid.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_rotation_followed_by_a_restart_keeps_the_old_key_published() {
    let pem = generate_ed25519_pem().unwrap();
    let (ups, mut gw) = start_with(|f| with_staging_key(f, &pem)).await;
    let key_file = gw.policy_dir.join(KEY_FILE);
    let old_kid = kid_of_file(&key_file);
    let accounts = Accounts::open(&gw).await;
    let ivan = accounts.create("initech", "ivan", &[], true).await;
    let mut agent = Agent::new(&gw, "initech.test");
    agent.api_login(&ivan).await;
    assert_eq!(agent.get(PROTECTED).await.status, 200);
    let assertion = ups
        .initech
        .requests()
        .last()
        .and_then(|r| r.header("portcullis-assertion").map(str::to_string))
        .expect("the upstream received an assertion");
    let header = jsonwebtoken::decode_header(&assertion).unwrap();
    assert_eq!(header.kid.as_deref(), Some(old_kid.as_str()));

    let out = tokio::process::Command::new(BIN)
        .args(["keys", "rotate", "--tier", "staging", "--config"])
        .arg(&gw.policy_dir)
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let new_kid = kid_of_file(&key_file);
    assert_ne!(new_kid, old_kid, "the key file holds a new key");

    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(15)).await.is_some(), "no exit");
    gw.restart().await;

    let after = jwks(&gw, "initech.test").await;
    let published = kids(&after);
    assert_eq!(published.first(), Some(&new_kid), "signs with the new key: {after}");
    assert!(published.contains(&old_kid), "old key still published: {after}");
    let claims = Verifier::from_jwks_json(&after)
        .unwrap()
        .verify(&assertion, None, "initech", portcullis::clock::unix_now())
        .expect("the assertion signed before the restart verifies");
    assert_eq!(claims.sub, "ivan");

    let prod = jwks(&gw, "acme.test").await;
    assert!(
        !kids(&prod).iter().any(|k| *k == old_kid || *k == new_kid),
        "staging keys stay out of prod's JWKS: {prod}"
    );
}

/// If this broke, an app behind a load balancer would refuse every request that one
/// replica signed whenever it fetched the JWKS from another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_on_one_store_publish_each_others_keys() {
    let (first_pem, second_pem) = (generate_ed25519_pem().unwrap(), generate_ed25519_pem().unwrap());
    let (_ups1, first) = start_with(|f| with_staging_key(f, &first_pem)).await;
    let shared_policy = first.policy_dir.clone();
    let (_ups2, second) = start_with(|f| {
        with_staging_key(f, &second_pem);
        // Same store directory as the first gateway: its own policy otherwise.
        let gateway_toml = f.gateway_toml(&shared_policy);
        f.extra_files.push(("gateway.toml".into(), gateway_toml));
    })
    .await;
    let first_key = SigningKey::from_pkcs8_pem(first_pem.as_bytes()).unwrap();
    let second_key = SigningKey::from_pkcs8_pem(second_pem.as_bytes()).unwrap();
    let (first_kid, second_kid) = (first_key.kid().to_string(), second_key.kid().to_string());

    // The second read the store as it started; the first sees the second's key at its
    // next sync (every 10 s).
    let seen_by_second = jwks(&second, "initech.test").await;
    assert_eq!(kids(&seen_by_second), [second_kid.clone(), first_kid.clone()]);
    let seen_by_first = eventually(Duration::from_secs(15), || async {
        let jwks = jwks(&first, "initech.test").await;
        (kids(&jwks).len() == 2).then_some(jwks)
    })
    .await
    .unwrap_or_else(|| panic!("the first gateway never served the second's key:\n{}", first.logs()));
    assert_eq!(kids(&seen_by_first), [first_kid, second_kid]);

    // What the second signs verifies with the JWKS the first serves.
    let now = portcullis::clock::unix_now();
    let claims = Claims {
        iss: "urn:portcullis:tier:staging".into(),
        aud: "initech".into(),
        sub: "ivan".into(),
        idp: "local".into(),
        tenant: "initech".into(),
        tier: "staging".into(),
        sid: "0123abcd".into(),
        amr: vec!["pwd".into()],
        roles: vec![],
        email: None,
        iat: now,
        exp: now + 60,
    };
    let token = Signer::new(second_key).sign(&claims).unwrap();
    let verified = Verifier::from_jwks_json(&seen_by_first)
        .unwrap()
        .verify(&token, None, "initech", now)
        .unwrap();
    assert_eq!(verified, claims);
}
