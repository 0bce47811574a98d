//! The assertion verifier and the ID-token validator. Two halves per input:
//! - the bytes as a compact JWT: always refused (nobody but the test key's holder can
//!   sign, and the input is not signed by it), never a panic;
//! - the bytes as a claims object signed with the test key (a real IdP's signature over
//!   hostile claims): if the validator accepts it, every rule it promises held: issuer,
//!   audience, expiry, nonce, a usable `sub`.
#![no_main]

use std::sync::LazyLock;

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use jsonwebtoken::jwk::JwkSet;
use libfuzzer_sys::fuzz_target;
use portcullis::assertion::{SigningKey, Verifier, generate_ed25519_pem};
use portcullis::auth::oidc::validate_id_token;
use serde_json::{Map, Value};

const ISSUER: &str = "https://idp.example";
const CLIENT: &str = "gw-client";
const NONCE: &str = "n-0123456789";
const NOW: i64 = 1_800_000_000;

struct Keys {
    encoding: EncodingKey,
    kid: String,
    jwks: JwkSet,
    verifier: Verifier,
}

static KEYS: LazyLock<Option<Keys>> = LazyLock::new(|| {
    let pem = generate_ed25519_pem().ok()?;
    let key = SigningKey::from_pkcs8_pem(pem.as_bytes()).ok()?;
    let jwks_json = serde_json::json!({ "keys": [key.jwk()] }).to_string();
    Some(Keys {
        encoding: EncodingKey::from_ed_pem(pem.as_bytes()).ok()?,
        kid: key.kid().to_string(),
        jwks: serde_json::from_str(&jwks_json).ok()?,
        verifier: Verifier::from_jwks_json(&jwks_json).ok()?,
    })
});

fuzz_target!(|data: &[u8]| {
    let Some(keys) = KEYS.as_ref() else { return };
    if let Ok(token) = std::str::from_utf8(data) {
        assert!(
            validate_id_token(token, &keys.jwks, ISSUER, CLIENT, NONCE, Some("groups"), NOW).is_err(),
            "an unsigned input was accepted as an ID token: {token:?}"
        );
        assert!(
            keys.verifier.verify(token, None, "acme", NOW).is_err(),
            "an unsigned input was accepted as an assertion: {token:?}"
        );
    }
    let Ok(Value::Object(claims)) = serde_json::from_slice::<Value>(data) else { return };
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(keys.kid.clone());
    let Ok(signed) = jsonwebtoken::encode(&header, &claims, &keys.encoding) else { return };
    if let Ok(accepted) = validate_id_token(&signed, &keys.jwks, ISSUER, CLIENT, NONCE, Some("groups"), NOW) {
        check_accepted(&claims, &accepted.sub);
    }
});

fn check_accepted(claims: &Map<String, Value>, sub: &str) {
    assert_eq!(claims.get("iss").and_then(Value::as_str), Some(ISSUER), "{claims:?}");
    let aud_ok = match claims.get("aud") {
        Some(Value::String(a)) => a == CLIENT,
        Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(CLIENT)),
        _ => false,
    };
    assert!(aud_ok, "audience: {claims:?}");
    let exp = claims.get("exp").and_then(Value::as_i64);
    assert!(exp.is_some_and(|e| e + 60 > NOW), "expiry: {claims:?}");
    assert_eq!(claims.get("nonce").and_then(Value::as_str), Some(NONCE), "{claims:?}");
    assert!(!sub.is_empty() && !sub.chars().any(char::is_control), "sub: {claims:?}");
}
