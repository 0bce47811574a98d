//! The signed identity assertion the gateway attaches to every forwarded authenticated
//! request (`Portcullis-Assertion`), the tier's signing keys, the JWKS published at
//! `/.portcullis/jwks.json`, and verification of assertions against that JWKS.
//!
//! Owns: parsing the tier's assertion key (PKCS#8 PEM, Ed25519 or P-256), generating fresh
//! Ed25519 keys, the claim set and its limits (lifetime at most [`MAX_LIFETIME_SECS`]),
//! rotation (the previous public key stays published until its last assertion expired),
//! how long a key must stay published after it last signs ([`publish_until`]), the keys
//! other replicas publish ([`SharedKey`], checked before they join a JWKS), and the
//! refusals a verifier must make (alg `none`/HMAC, unknown `kid`, wrong `aud` or
//! `iss`, expired, over-long lifetime, bad signature).
//!
//! Must not: read the clock (callers pass `now`, unix seconds), know HTTP, log, or put key
//! material or token contents into an error. JWT encoding and signature checks are
//! `jsonwebtoken`'s; key parsing and generation are `ring`'s; nothing here is hand-rolled
//! crypto.

use std::collections::HashMap;
use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, JwkSet, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use ring::rand::SystemRandom;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair};
use rustls_pki_types::PrivatePkcs8KeyDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

/// Longest an assertion may live (`exp - iat`), as the SPEC says. Upstreams replaying a
/// captured header get at most this long.
pub const MAX_LIFETIME_SECS: i64 = 60;

/// Clock difference tolerated between gateway and upstream when checking `exp` and `iat`.
/// Kept small on purpose: a large leeway would silently stretch the 60 s lifetime.
pub const CLOCK_SKEW_SECS: i64 = 5;

/// How long a key stays published after the last moment it may have signed: the longest
/// lifetime of an assertion plus the clock skew verifiers allow.
pub const PUBLISH_WINDOW_SECS: i64 = MAX_LIFETIME_SECS + CLOCK_SKEW_SECS;

/// Until when a key that may sign until `last_signing_at` (unix seconds) must stay
/// published: every assertion it signs by then has expired, for every verifier, after it.
pub fn publish_until(last_signing_at: i64) -> i64 {
    last_signing_at.saturating_add(PUBLISH_WINDOW_SECS)
}

/// Longest token the verifier will look at; a real assertion is well under 1 KiB, so this
/// bounds the work an attacker can ask for before the signature check.
const MAX_TOKEN_LEN: usize = 8192;

/// Hex digits of SHA-256(public key) used as `kid`.
const KID_HEX_LEN: usize = 16;

/// Why an assertion, a key or a JWKS was refused. Messages name the problem only: never
/// key bytes, never token contents (the inner errors of `jsonwebtoken`/`serde_json` can
/// quote input, so they are mapped to these variants and dropped).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssertionError {
    /// The key material is not a PKCS#8 PEM Ed25519 or P-256 private key.
    #[error("assertion key is not a PKCS#8 PEM (\"BEGIN PRIVATE KEY\") Ed25519 or P-256 private key")]
    InvalidKey,
    /// The system random source failed while generating a key.
    #[error("could not generate an assertion key")]
    KeyGeneration,
    /// The JWKS document could not be used; the reason is a fixed description.
    #[error("JWKS is not usable: {0}")]
    InvalidJwks(&'static str),
    /// Claims handed to the signer break the contract (checked before signing so a bug
    /// in the caller never reaches an upstream).
    #[error("assertion claims are invalid: {0}")]
    InvalidClaims(&'static str),
    /// Encoding or signing failed inside the JWT library.
    #[error("could not sign the assertion")]
    Signing,
    /// Not a well-formed JWT (including `alg: none`, which is not a valid header here).
    #[error("assertion is malformed")]
    Malformed,
    /// The header names an algorithm other than the one of the key it names.
    #[error("assertion algorithm is not accepted")]
    AlgorithmNotAccepted,
    /// No `kid`, or a `kid` the JWKS does not publish.
    #[error("assertion key id is unknown")]
    UnknownKey,
    /// The signature does not match the key.
    #[error("assertion signature is invalid")]
    BadSignature,
    /// `aud` is not the expected tenant, or `tenant` disagrees with `aud`.
    #[error("assertion audience is wrong")]
    WrongAudience,
    /// `iss` is not the expected gateway URL.
    #[error("assertion issuer is wrong")]
    WrongIssuer,
    /// `exp` has passed (beyond [`CLOCK_SKEW_SECS`]).
    #[error("assertion has expired")]
    Expired,
    /// `iat` lies in the future (beyond [`CLOCK_SKEW_SECS`]).
    #[error("assertion is not valid yet")]
    NotYetValid,
    /// `exp - iat` is not in `1..=MAX_LIFETIME_SECS`.
    #[error("assertion lifetime exceeds the allowed maximum")]
    LifetimeTooLong,
}

/// The claim set of `Portcullis-Assertion`, exactly as the SPEC lists it. Upstreams read
/// identity from here and nowhere else.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// Gateway URL of the tier that issued the assertion; upstreams pin it.
    pub iss: String,
    /// Tenant id the assertion is for, so one tenant's upstream refuses another's.
    pub aud: String,
    /// Subject: the user's id at their identity provider (local user name or the IdP's
    /// `sub`); only the pair (`idp`, `sub`) names a user within the tenant.
    pub sub: String,
    /// Who vouched for `sub`: `"local"` for a local account, else the IdP's issuer URL,
    /// so a local `ivan` and an SSO `ivan` are never the same user upstream.
    pub idp: String,
    /// Tenant id again, for upstreams that read it as data; must equal `aud`.
    pub tenant: String,
    /// Tier name, so an upstream can tell staging identities from production ones.
    pub tier: String,
    /// Prefix of the session id hash: correlates requests of one session without
    /// revealing the session cookie.
    pub sid: String,
    /// How the user authenticated (`pwd`, `otp`, `sso`, ...).
    pub amr: Vec<String>,
    /// Roles granted within the tenant.
    pub roles: Vec<String>,
    /// E-mail address when known; `null` otherwise (kept in the JSON so the claim set
    /// always has the same shape).
    #[serde(default)]
    pub email: Option<String>,
    /// Issued at (unix seconds).
    pub iat: i64,
    /// Expiry (unix seconds), at most [`MAX_LIFETIME_SECS`] after `iat`.
    pub exp: i64,
}

impl Claims {
    /// The checks both sides make on the claim values themselves.
    fn check_shape(&self) -> Result<(), AssertionError> {
        let lifetime = self.exp.saturating_sub(self.iat);
        if !(1..=MAX_LIFETIME_SECS).contains(&lifetime) {
            return Err(AssertionError::LifetimeTooLong);
        }
        if self.tenant != self.aud {
            return Err(AssertionError::WrongAudience);
        }
        Ok(())
    }
}

/// A tier's private assertion key, ready to sign. `Debug` shows the `kid` and algorithm
/// only.
pub struct SigningKey {
    /// What `jsonwebtoken` signs with; built once because signing is on the request path.
    encoding: EncodingKey,
    /// The JWT header (`alg`, `typ`, `kid`), built once for the same reason.
    header: Header,
    /// Stable id derived from the public key, so a restart keeps the same `kid`.
    kid: String,
    /// The public half as a JWK, published in the JWKS.
    jwk: Value,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.header.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Parses a PKCS#8 PEM private key (`-----BEGIN PRIVATE KEY-----`): Ed25519 (signs
    /// EdDSA; both the v1 form OpenSSL writes and the v2 form [`generate_ed25519_pem`]
    /// writes) or P-256 (signs ES256). The bytes usually come from
    /// `SecretBytes::expose_secret()` of the tier's `keys.assertion` reference.
    pub fn from_pkcs8_pem(pem: &[u8]) -> Result<Self, AssertionError> {
        let der = PrivatePkcs8KeyDer::from_pem_slice(pem).map_err(|_| AssertionError::InvalidKey)?;
        let der = der.secret_pkcs8_der();
        if let Ok(pair) = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der) {
            let public = pair.public_key().as_ref();
            let kid = kid_for(public);
            let jwk = json!({
                "kty": "OKP",
                "crv": "Ed25519",
                "x": URL_SAFE_NO_PAD.encode(public),
                "kid": kid,
                "alg": "EdDSA",
                "use": "sig",
            });
            return Ok(Self::assemble(
                EncodingKey::from_ed_der(der),
                Algorithm::EdDSA,
                kid,
                jwk,
            ));
        }
        let rng = SystemRandom::new();
        if let Ok(pair) = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, der, &rng) {
            // ring gives the uncompressed point: 0x04 || x (32 bytes) || y (32 bytes).
            let public = pair.public_key().as_ref();
            let (x, y) = match (public.get(1..33), public.get(33..65)) {
                (Some(x), Some(y)) if public.len() == 65 => (x, y),
                _ => return Err(AssertionError::InvalidKey),
            };
            let kid = kid_for(public);
            let jwk = json!({
                "kty": "EC",
                "crv": "P-256",
                "x": URL_SAFE_NO_PAD.encode(x),
                "y": URL_SAFE_NO_PAD.encode(y),
                "kid": kid,
                "alg": "ES256",
                "use": "sig",
            });
            return Ok(Self::assemble(
                EncodingKey::from_ec_der(der),
                Algorithm::ES256,
                kid,
                jwk,
            ));
        }
        Err(AssertionError::InvalidKey)
    }

    fn assemble(encoding: EncodingKey, alg: Algorithm, kid: String, jwk: Value) -> Self {
        let mut header = Header::new(alg);
        header.kid = Some(kid.clone());
        SigningKey {
            encoding,
            header,
            kid,
            jwk,
        }
    }

    /// The key id placed in the JWT header and the JWK.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// `EdDSA` or `ES256`.
    pub fn algorithm(&self) -> Algorithm {
        self.header.alg
    }

    /// The public key as a JWK (`kty`, `crv`, `x`[, `y`], `kid`, `alg`, `use`).
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }
}

/// The `kid` of a public key: first 16 hex digits of SHA-256 over the raw key bytes
/// (32 bytes for Ed25519, the 65-byte uncompressed point for P-256).
fn kid_for(public_key: &[u8]) -> String {
    let mut kid = hex::encode(Sha256::digest(public_key));
    kid.truncate(KID_HEX_LEN);
    kid
}

/// A fresh Ed25519 private key as PKCS#8 PEM, for `portcullis keys rotate` and the demo.
/// Zeroized on drop; store it wherever the tier's `keys.assertion` reference points.
pub fn generate_ed25519_pem() -> Result<Zeroizing<String>, AssertionError> {
    let document = Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| AssertionError::KeyGeneration)?;
    Ok(pkcs8_pem(document.as_ref()))
}

/// PEM armour (RFC 7468) around a PKCS#8 DER: 48 bytes of DER make one 64-character line.
fn pkcs8_pem(der: &[u8]) -> Zeroizing<String> {
    let mut pem = Zeroizing::new(String::with_capacity(64 + der.len() * 2));
    pem.push_str("-----BEGIN PRIVATE KEY-----\n");
    for chunk in der.chunks(48) {
        STANDARD.encode_string(chunk, &mut pem);
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    pem
}

/// A public key that no longer signs but stays in the JWKS until the last assertion it
/// signed has expired.
#[derive(Debug, Clone)]
struct RetiredKey {
    /// The JWK as it was published while the key was current.
    jwk: Value,
    /// Unix seconds after which no assertion of this key can still be valid.
    published_until: i64,
}

/// A tier's assertion signer: the current key signs, retired keys are only published.
/// Immutable; rotation builds a new `Signer` ([`Signer::rotated`]) so it can sit behind
/// an `ArcSwap` with the rest of the live config.
#[derive(Debug)]
pub struct Signer {
    /// The key every new assertion is signed with.
    current: SigningKey,
    /// Earlier keys, newest first, still published for assertions in flight.
    retired: Vec<RetiredKey>,
}

impl Signer {
    /// A signer with one key and nothing retired (start-up).
    pub fn new(current: SigningKey) -> Self {
        Signer {
            current,
            retired: Vec::new(),
        }
    }

    /// The signer after switching to `next` at `now`: the current key's public half stays
    /// published until every assertion it may have signed has expired (lifetime plus clock
    /// skew); retired keys past that point are dropped. Rotating to the same key changes
    /// nothing, so a config reload that keeps the key is harmless.
    pub fn rotated(&self, next: SigningKey, now: i64) -> Signer {
        let mut retired: Vec<RetiredKey> = Vec::with_capacity(self.retired.len() + 1);
        if next.kid != self.current.kid {
            retired.push(RetiredKey {
                jwk: self.current.jwk.clone(),
                published_until: publish_until(now),
            });
        }
        retired.extend(
            self.retired
                .iter()
                .filter(|old| old.published_until > now && old.jwk.get("kid") != next.jwk.get("kid"))
                .cloned(),
        );
        Signer { current: next, retired }
    }

    /// The key new assertions are signed with.
    pub fn current(&self) -> &SigningKey {
        &self.current
    }

    /// Signs `claims` with the current key after checking the lifetime (`1..=60` s) and
    /// that `tenant == aud`. Serialising and signing is all that happens per call.
    pub fn sign(&self, claims: &Claims) -> Result<String, AssertionError> {
        claims.check_shape().map_err(|e| match e {
            AssertionError::LifetimeTooLong => AssertionError::InvalidClaims("exp - iat must be 1..=60 seconds"),
            _ => AssertionError::InvalidClaims("tenant must equal aud"),
        })?;
        jsonwebtoken::encode(&self.current.header, claims, &self.current.encoding).map_err(|_| AssertionError::Signing)
    }

    /// The JWKS document (`{"keys":[...]}`) served at `/.portcullis/jwks.json` at `now`:
    /// the current key first, then retired keys still inside their publication window.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<&Value> = std::iter::once(&self.current.jwk)
            .chain(
                self.retired
                    .iter()
                    .filter(|old| old.published_until > now)
                    .map(|old| &old.jwk),
            )
            .collect();
        json!({ "keys": keys })
    }

    /// [`Signer::jwks`] as the JSON text to serve (`Content-Type: application/json`).
    pub fn jwks_json(&self, now: i64) -> String {
        self.jwks(now).to_string()
    }

    /// The retired keys still published at `now`, with the time each stays published
    /// until, so they can be published where other replicas see them too.
    pub fn retired_keys(&self, now: i64) -> impl Iterator<Item = (&Value, i64)> {
        self.retired
            .iter()
            .filter(move |old| old.published_until > now)
            .map(|old| (&old.jwk, old.published_until))
    }

    /// [`Signer::jwks`] plus the keys published by other replicas (or by this tier before
    /// a restart) still inside their window at `now`, each `kid` once: this signer's own
    /// keys first, then the shared ones by `kid`.
    pub fn jwks_with(&self, shared: &[SharedKey], now: i64) -> Value {
        let mut jwks = self.jwks(now);
        if let Some(keys) = jwks.get_mut("keys").and_then(Value::as_array_mut) {
            let mut extra: Vec<&SharedKey> = shared
                .iter()
                .filter(|k| {
                    k.until > now
                        && !keys
                            .iter()
                            .any(|own| own.get("kid").and_then(Value::as_str) == Some(&k.kid))
                })
                .collect();
            extra.sort_by(|a, b| a.kid.cmp(&b.kid));
            extra.dedup_by(|a, b| a.kid == b.kid);
            keys.extend(extra.into_iter().map(|k| k.jwk.clone()));
        }
        jwks
    }
}

/// A public key published for the tier by another replica or by an earlier run, as read
/// back from the store: only an Ed25519 or P-256 signing key whose `kid` is the one
/// derived from its own bytes, re-encoded with the public fields alone, so a damaged or
/// planted entry can neither break the JWKS nor put anything else in it.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedKey {
    /// Its `kid` (derived from the key, as for [`SigningKey`]).
    kid: String,
    /// The public JWK, rebuilt from the checked fields.
    jwk: Value,
    /// Unix seconds until which it is published.
    until: i64,
}

impl SharedKey {
    /// Checks the JWK text of a published key (see the type's docs).
    pub fn parse(jwk_json: &str, until: i64) -> Result<Self, AssertionError> {
        let jwk: jsonwebtoken::jwk::Jwk =
            serde_json::from_str(jwk_json).map_err(|_| AssertionError::InvalidJwks("a key is not a JWK"))?;
        let (kid, _, _) = check_public_jwk(&jwk)?;
        let decode = |v: &str| {
            URL_SAFE_NO_PAD
                .decode(v)
                .map_err(|_| AssertionError::InvalidJwks("a key is malformed"))
        };
        let (public, canonical) = match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(p) => {
                let x = decode(&p.x)?;
                if x.len() != 32 {
                    return Err(AssertionError::InvalidJwks("a key is malformed"));
                }
                let canonical = json!({
                    "kty": "OKP", "crv": "Ed25519", "x": p.x, "kid": kid, "alg": "EdDSA", "use": "sig",
                });
                (x, canonical)
            }
            AlgorithmParameters::EllipticCurve(p) => {
                let (x, y) = (decode(&p.x)?, decode(&p.y)?);
                if x.len() != 32 || y.len() != 32 {
                    return Err(AssertionError::InvalidJwks("a key is malformed"));
                }
                let point: Vec<u8> = std::iter::once(4u8).chain(x).chain(y).collect();
                let canonical = json!({
                    "kty": "EC", "crv": "P-256", "x": p.x, "y": p.y, "kid": kid, "alg": "ES256", "use": "sig",
                });
                (point, canonical)
            }
            _ => return Err(AssertionError::InvalidJwks("only Ed25519 and P-256 keys are accepted")),
        };
        if kid_for(&public) != kid {
            return Err(AssertionError::InvalidJwks("a key's kid is not derived from the key"));
        }
        Ok(SharedKey {
            kid,
            jwk: canonical,
            until,
        })
    }

    /// The key's `kid`.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// Unix seconds until which it is published.
    pub fn until(&self) -> i64 {
        self.until
    }
}

/// The checks every published JWK must pass: a `kid`, an Ed25519 (EdDSA) or P-256 (ES256)
/// key, a declared `alg` (if any) that matches the key type, and parameters the JWT
/// library can use. Returns the `kid`, the only algorithm the key verifies with, and the key.
fn check_public_jwk(jwk: &jsonwebtoken::jwk::Jwk) -> Result<(String, Algorithm, DecodingKey), AssertionError> {
    let kid = jwk
        .common
        .key_id
        .clone()
        .ok_or(AssertionError::InvalidJwks("a key has no kid"))?;
    let alg = match &jwk.algorithm {
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => Algorithm::EdDSA,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => Algorithm::ES256,
        _ => return Err(AssertionError::InvalidJwks("only Ed25519 and P-256 keys are accepted")),
    };
    let declared_matches = match jwk.common.key_algorithm {
        None => true,
        Some(KeyAlgorithm::EdDSA) => alg == Algorithm::EdDSA,
        Some(KeyAlgorithm::ES256) => alg == Algorithm::ES256,
        Some(_) => false,
    };
    if !declared_matches {
        return Err(AssertionError::InvalidJwks("a key's alg does not match its type"));
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| AssertionError::InvalidJwks("a key is malformed"))?;
    Ok((kid, alg, key))
}

/// One verification key from a JWKS.
struct VerifyingKey {
    /// The only algorithm this key is accepted with: taken from the key type, never from
    /// the token, so a token cannot talk the verifier into HMAC or `none`.
    alg: Algorithm,
    /// What `jsonwebtoken` verifies with.
    key: DecodingKey,
}

/// Verifies assertions against a tier's JWKS: used by the demo's echo upstream, by tests
/// and by anyone writing an upstream in Rust.
pub struct Verifier {
    /// Keys by `kid`.
    keys: HashMap<String, VerifyingKey>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<&String> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("Verifier").field("kids", &kids).finish()
    }
}

impl Verifier {
    /// Builds a verifier from JWKS JSON. Only signing keys of kind OKP/Ed25519 (EdDSA) and
    /// EC/P-256 (ES256), each with a `kid`, are accepted; anything else (symmetric `oct`
    /// keys in particular) makes the whole document unusable rather than silently widening
    /// what verifies.
    pub fn from_jwks_json(jwks: &str) -> Result<Self, AssertionError> {
        let set: JwkSet = serde_json::from_str(jwks).map_err(|_| AssertionError::InvalidJwks("not a JWKS document"))?;
        let mut keys = HashMap::with_capacity(set.keys.len());
        for jwk in &set.keys {
            let (kid, alg, key) = check_public_jwk(jwk)?;
            if keys.insert(kid, VerifyingKey { alg, key }).is_some() {
                return Err(AssertionError::InvalidJwks("two keys share a kid"));
            }
        }
        if keys.is_empty() {
            return Err(AssertionError::InvalidJwks("no keys"));
        }
        Ok(Verifier { keys })
    }

    /// Verifies `token` and returns its claims. Refuses: malformed tokens and `alg: none`;
    /// an algorithm other than the named key's; a missing or unknown `kid`; a bad
    /// signature; `aud` other than `expected_aud` (or `tenant` other than `aud`); `iss`
    /// other than `expected_iss` when given; `exp` passed and `iat` in the future (both
    /// with [`CLOCK_SKEW_SECS`] of slack); `exp - iat` outside `1..=60` s.
    pub fn verify(
        &self,
        token: &str,
        expected_iss: Option<&str>,
        expected_aud: &str,
        now: i64,
    ) -> Result<Claims, AssertionError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(AssertionError::Malformed);
        }
        let header = jsonwebtoken::decode_header(token).map_err(|_| AssertionError::Malformed)?;
        let kid = header.kid.as_deref().ok_or(AssertionError::UnknownKey)?;
        let key = self.keys.get(kid).ok_or(AssertionError::UnknownKey)?;
        if header.alg != key.alg {
            return Err(AssertionError::AlgorithmNotAccepted);
        }

        // The library checks the signature, the algorithm again, `aud` and `iss`; time is
        // checked below against the caller's clock, since the library would read its own.
        let mut validation = Validation::new(key.alg);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        validation.set_audience(&[expected_aud]);
        if let Some(iss) = expected_iss {
            validation.set_issuer(&[iss]);
        }
        let claims = jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map_err(|e| map_decode_error(e.kind()))?
            .claims;

        claims.check_shape()?;
        if now >= claims.exp.saturating_add(CLOCK_SKEW_SECS) {
            return Err(AssertionError::Expired);
        }
        if claims.iat > now.saturating_add(CLOCK_SKEW_SECS) {
            return Err(AssertionError::NotYetValid);
        }
        Ok(claims)
    }
}

/// Maps a `jsonwebtoken` failure to our variants, dropping its text (which may quote the
/// token).
fn map_decode_error(kind: &ErrorKind) -> AssertionError {
    match kind {
        ErrorKind::InvalidSignature => AssertionError::BadSignature,
        ErrorKind::InvalidAlgorithm => AssertionError::AlgorithmNotAccepted,
        ErrorKind::InvalidAudience => AssertionError::WrongAudience,
        ErrorKind::InvalidIssuer => AssertionError::WrongIssuer,
        _ => AssertionError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000;
    const ISS: &str = "https://gw.staging.example";

    /// Written by `openssl genpkey -algorithm ed25519` (PKCS#8 v1, no public key inside).
    /// Its kid and x were computed with openssl too:
    /// `openssl pkey -pubout -outform DER | tail -c 32 | sha256sum | cut -c1-16`.
    const OPENSSL_ED25519_PEM: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEID56UBru/LcJPVCemVwguLygE2gLwGDcehbpU0Hl/lPB\n\
        -----END PRIVATE KEY-----\n";
    const OPENSSL_ED25519_KID: &str = "e7d4b831dbe3b155";
    const OPENSSL_ED25519_X: &str = "zBQGPset1_WqZRgdQZcrezCwM7lSKyWo3kj_WfcX6mE";

    fn fresh_key() -> SigningKey {
        let pem = generate_ed25519_pem().unwrap();
        SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap()
    }

    fn fresh_p256_key() -> SigningKey {
        let doc = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &SystemRandom::new()).unwrap();
        SigningKey::from_pkcs8_pem(pkcs8_pem(doc.as_ref()).as_bytes()).unwrap()
    }

    fn claims() -> Claims {
        Claims {
            iss: ISS.to_string(),
            aud: "acme".to_string(),
            sub: "alice".to_string(),
            idp: "local".to_string(),
            tenant: "acme".to_string(),
            tier: "staging".to_string(),
            sid: "3f9a1c2b".to_string(),
            amr: vec!["pwd".to_string(), "otp".to_string()],
            roles: vec!["member".to_string()],
            email: Some("alice@acme.example".to_string()),
            iat: NOW,
            exp: NOW + MAX_LIFETIME_SECS,
        }
    }

    fn verifier_for(signer: &Signer) -> Verifier {
        Verifier::from_jwks_json(&signer.jwks_json(NOW)).unwrap()
    }

    fn b64_json(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(value.to_string())
    }

    /// Replaces the payload of `token`, keeping header and signature.
    fn with_payload(token: &str, claims: &Claims) -> String {
        let parts: Vec<&str> = token.split('.').collect();
        format!(
            "{}.{}.{}",
            parts[0],
            b64_json(&serde_json::to_value(claims).unwrap()),
            parts[2]
        )
    }

    #[test]
    fn round_trip_keeps_every_claim() {
        // Would break if a claim were renamed, dropped or mangled between signer and verifier.
        let signer = Signer::new(fresh_key());
        let token = signer.sign(&claims()).unwrap();
        let got = verifier_for(&signer)
            .verify(&token, Some(ISS), "acme", NOW + 1)
            .unwrap();
        assert_eq!(got, claims());

        let header = jsonwebtoken::decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::EdDSA);
        assert_eq!(header.kid.as_deref(), Some(signer.current().kid()));
    }

    #[test]
    fn email_may_be_null_and_iss_check_is_optional() {
        let signer = Signer::new(fresh_key());
        let mut c = claims();
        c.email = None;
        let token = signer.sign(&c).unwrap();
        let payload = URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap();
        let raw: Value = serde_json::from_slice(&payload).unwrap();
        assert_eq!(raw["email"], Value::Null, "email stays in the claim set as null");
        assert_eq!(verifier_for(&signer).verify(&token, None, "acme", NOW).unwrap(), c);
    }

    #[test]
    fn es256_keys_sign_and_verify() {
        let signer = Signer::new(fresh_p256_key());
        assert_eq!(signer.current().algorithm(), Algorithm::ES256);
        let jwk = signer.current().jwk();
        assert_eq!((jwk["kty"].as_str(), jwk["crv"].as_str()), (Some("EC"), Some("P-256")));
        let token = signer.sign(&claims()).unwrap();
        assert_eq!(
            verifier_for(&signer).verify(&token, Some(ISS), "acme", NOW).unwrap(),
            claims()
        );
    }

    #[test]
    fn openssl_key_is_accepted_with_a_known_kid_and_jwk() {
        // Would break if the kid derivation or JWK encoding changed: upstreams that cached
        // the JWKS would then refuse every assertion after an upgrade.
        let key = SigningKey::from_pkcs8_pem(OPENSSL_ED25519_PEM.as_bytes()).unwrap();
        assert_eq!(key.kid(), OPENSSL_ED25519_KID);
        assert_eq!(
            key.jwk(),
            &json!({"kty": "OKP", "crv": "Ed25519", "x": OPENSSL_ED25519_X,
                    "kid": OPENSSL_ED25519_KID, "alg": "EdDSA", "use": "sig"})
        );
    }

    #[test]
    fn kid_is_stable_for_the_same_key_and_differs_between_keys() {
        let pem = generate_ed25519_pem().unwrap();
        let a = SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap();
        let b = SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap();
        assert_eq!(a.kid(), b.kid());
        assert_eq!(a.kid().len(), KID_HEX_LEN);
        assert_ne!(a.kid(), fresh_key().kid());
    }

    #[test]
    fn debug_never_prints_key_material() {
        let pem = generate_ed25519_pem().unwrap();
        let key = SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap();
        let der_b64: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        let signer = Signer::new(key);
        let printed = format!("{signer:?} {:?}", signer.current());
        assert!(printed.contains(signer.current().kid()));
        assert!(!printed.contains(&der_b64), "PEM body leaked into Debug");
        for window in der_b64.as_bytes().windows(12) {
            assert!(
                !printed.contains(std::str::from_utf8(window).unwrap()),
                "part of the PEM leaked"
            );
        }
        let raw = STANDARD.decode(&der_b64).unwrap();
        assert!(
            !printed.contains(&hex::encode(&raw[raw.len() - 32..])),
            "seed leaked as hex"
        );
        assert!(
            !printed.contains(&format!("{:?}", &raw[raw.len() - 32..])),
            "seed leaked as bytes"
        );
    }

    #[test]
    fn bad_key_material_is_refused_without_echoing_it() {
        for input in [
            &b"not a key"[..],
            b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n",
        ] {
            let err = SigningKey::from_pkcs8_pem(input).unwrap_err();
            assert_eq!(err, AssertionError::InvalidKey);
            assert!(!err.to_string().contains("AAAA"));
        }
    }

    #[test]
    fn signer_refuses_claims_that_break_the_contract() {
        let signer = Signer::new(fresh_key());
        let mut long = claims();
        long.exp = long.iat + MAX_LIFETIME_SECS + 1;
        assert!(matches!(signer.sign(&long), Err(AssertionError::InvalidClaims(_))));
        let mut backwards = claims();
        backwards.exp = backwards.iat;
        assert!(matches!(signer.sign(&backwards), Err(AssertionError::InvalidClaims(_))));
        let mut other_tenant = claims();
        other_tenant.tenant = "globex".to_string();
        assert!(matches!(
            signer.sign(&other_tenant),
            Err(AssertionError::InvalidClaims(_))
        ));
    }

    #[test]
    fn alg_none_is_refused() {
        let signer = Signer::new(fresh_key());
        let header = json!({"alg": "none", "typ": "JWT", "kid": signer.current().kid()});
        let payload = serde_json::to_value(claims()).unwrap();
        let verifier = verifier_for(&signer);
        for token in [
            format!("{}.{}.", b64_json(&header), b64_json(&payload)),
            format!("{}.{}", b64_json(&header), b64_json(&payload)),
        ] {
            assert_eq!(
                verifier.verify(&token, Some(ISS), "acme", NOW),
                Err(AssertionError::Malformed)
            );
        }
    }

    #[test]
    fn hs256_signed_with_the_public_key_is_refused() {
        // The classic key-confusion forgery: HMAC keyed with the published public key.
        let signer = Signer::new(fresh_key());
        let public = URL_SAFE_NO_PAD
            .decode(signer.current().jwk()["x"].as_str().unwrap())
            .unwrap();
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(signer.current().kid().to_string());
        let forged = jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&public)).unwrap();
        assert_eq!(
            verifier_for(&signer).verify(&forged, Some(ISS), "acme", NOW),
            Err(AssertionError::AlgorithmNotAccepted)
        );
    }

    #[test]
    fn es256_header_on_an_ed25519_kid_is_refused() {
        let signer = Signer::new(fresh_key());
        let other = fresh_p256_key();
        let mut header = other.header.clone();
        header.kid = Some(signer.current().kid().to_string());
        let forged = jsonwebtoken::encode(&header, &claims(), &other.encoding).unwrap();
        assert_eq!(
            verifier_for(&signer).verify(&forged, Some(ISS), "acme", NOW),
            Err(AssertionError::AlgorithmNotAccepted)
        );
    }

    #[test]
    fn unknown_or_missing_kid_is_refused() {
        let signer = Signer::new(fresh_key());
        let stranger = Signer::new(fresh_key());
        let token = stranger.sign(&claims()).unwrap();
        let verifier = verifier_for(&signer);
        assert_eq!(
            verifier.verify(&token, Some(ISS), "acme", NOW),
            Err(AssertionError::UnknownKey)
        );

        let mut no_kid = fresh_key();
        no_kid.header.kid = None;
        let token = Signer::new(no_kid).sign(&claims()).unwrap();
        assert_eq!(
            verifier.verify(&token, Some(ISS), "acme", NOW),
            Err(AssertionError::UnknownKey)
        );
    }

    #[test]
    fn another_key_claiming_our_kid_is_refused() {
        let signer = Signer::new(fresh_key());
        let mut impostor = fresh_key();
        impostor.header.kid = Some(signer.current().kid().to_string());
        let token = Signer::new(impostor).sign(&claims()).unwrap();
        assert_eq!(
            verifier_for(&signer).verify(&token, Some(ISS), "acme", NOW),
            Err(AssertionError::BadSignature)
        );
    }

    #[test]
    fn tampered_payload_is_refused() {
        let signer = Signer::new(fresh_key());
        let token = signer.sign(&claims()).unwrap();
        let mut elevated = claims();
        elevated.roles.push("admin".to_string());
        assert_eq!(
            verifier_for(&signer).verify(&with_payload(&token, &elevated), Some(ISS), "acme", NOW),
            Err(AssertionError::BadSignature)
        );
    }

    #[test]
    fn wrong_audience_or_issuer_is_refused() {
        let signer = Signer::new(fresh_key());
        let token = signer.sign(&claims()).unwrap();
        let verifier = verifier_for(&signer);
        assert_eq!(
            verifier.verify(&token, Some(ISS), "globex", NOW),
            Err(AssertionError::WrongAudience)
        );
        assert_eq!(
            verifier.verify(&token, Some("https://gw.prod.example"), "acme", NOW),
            Err(AssertionError::WrongIssuer)
        );
    }

    #[test]
    fn expiry_allows_only_the_clock_skew() {
        let signer = Signer::new(fresh_key());
        let token = signer.sign(&claims()).unwrap();
        let verifier = verifier_for(&signer);
        let exp = claims().exp;
        assert!(
            verifier
                .verify(&token, Some(ISS), "acme", exp + CLOCK_SKEW_SECS - 1)
                .is_ok()
        );
        assert_eq!(
            verifier.verify(&token, Some(ISS), "acme", exp + CLOCK_SKEW_SECS),
            Err(AssertionError::Expired)
        );
        assert_eq!(
            verifier.verify(&token, Some(ISS), "acme", exp + 3600),
            Err(AssertionError::Expired)
        );
        assert_eq!(
            verifier.verify(&token, Some(ISS), "acme", NOW - CLOCK_SKEW_SECS - 1),
            Err(AssertionError::NotYetValid)
        );
    }

    #[test]
    fn lifetime_over_sixty_seconds_is_refused_even_when_validly_signed() {
        // Signed through the library directly, bypassing Signer's own check, as a
        // misbehaving issuer holding the key would.
        let key = fresh_key();
        let mut c = claims();
        c.exp = c.iat + MAX_LIFETIME_SECS + 1;
        let token = jsonwebtoken::encode(&key.header, &c, &key.encoding).unwrap();
        let verifier = verifier_for(&Signer::new(key));
        assert_eq!(
            verifier.verify(&token, Some(ISS), "acme", NOW),
            Err(AssertionError::LifetimeTooLong)
        );
    }

    #[test]
    fn rotation_keeps_the_old_key_published_until_its_assertions_expire() {
        let old = Signer::new(fresh_key());
        let old_kid = old.current().kid().to_string();
        let old_token = old.sign(&claims()).unwrap();

        let rotated = old.rotated(fresh_key(), NOW);
        let new_token = rotated.sign(&claims()).unwrap();
        assert_ne!(rotated.current().kid(), old_kid);

        let both = Verifier::from_jwks_json(&rotated.jwks_json(NOW)).unwrap();
        assert_eq!(both.verify(&old_token, Some(ISS), "acme", NOW).unwrap(), claims());
        assert_eq!(both.verify(&new_token, Some(ISS), "acme", NOW).unwrap(), claims());

        // Past the window the old key is no longer published, and then refused.
        let later = NOW + MAX_LIFETIME_SECS + CLOCK_SKEW_SECS;
        let jwks = rotated.jwks(later);
        assert_eq!(jwks["keys"].as_array().unwrap().len(), 1);
        let only_new = Verifier::from_jwks_json(&jwks.to_string()).unwrap();
        assert_eq!(
            only_new.verify(&old_token, Some(ISS), "acme", NOW),
            Err(AssertionError::UnknownKey)
        );
        assert!(only_new.verify(&new_token, Some(ISS), "acme", NOW).is_ok());

        // A later rotation forgets keys whose window has passed.
        let again = rotated.rotated(fresh_key(), later);
        assert_eq!(again.retired.len(), 1);
        assert_ne!(again.retired[0].jwk["kid"], json!(old_kid));
    }

    #[test]
    fn rotating_to_the_same_key_publishes_it_once() {
        let pem = generate_ed25519_pem().unwrap();
        let signer = Signer::new(SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap());
        let reloaded = signer.rotated(SigningKey::from_pkcs8_pem(pem.as_bytes()).unwrap(), NOW);
        assert_eq!(reloaded.jwks(NOW)["keys"].as_array().unwrap().len(), 1);
        assert!(Verifier::from_jwks_json(&reloaded.jwks_json(NOW)).is_ok());
    }

    /// If this broke, an assertion signed by another replica or before a restart would
    /// be refused, or a key would stay trusted after its last assertion expired.
    #[test]
    fn shared_keys_join_the_jwks_once_while_published() {
        let other = Signer::new(fresh_key());
        let token = other.sign(&claims()).unwrap();
        let ours = Signer::new(fresh_p256_key());
        let until = NOW + 30;
        let shared = [
            SharedKey::parse(&other.current().jwk().to_string(), until).unwrap(),
            SharedKey::parse(&other.current().jwk().to_string(), until).unwrap(),
            SharedKey::parse(&ours.current().jwk().to_string(), until).unwrap(),
        ];
        let jwks = ours.jwks_with(&shared, NOW);
        let kids: Vec<&str> = jwks["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap())
            .collect();
        assert_eq!(
            kids,
            [ours.current().kid(), other.current().kid()],
            "own first, each once"
        );
        let verifier = Verifier::from_jwks_json(&jwks.to_string()).unwrap();
        assert_eq!(verifier.verify(&token, Some(ISS), "acme", NOW).unwrap(), claims());

        let later = ours.jwks_with(&shared, until);
        assert_eq!(later["keys"].as_array().unwrap().len(), 1, "gone at `until`");
    }

    /// If this broke, one damaged or planted store entry could break every upstream's
    /// JWKS, smuggle in a symmetric key, or publish private key material.
    #[test]
    fn shared_keys_are_checked_and_published_with_public_fields_only() {
        let key = fresh_key();
        let mut with_private = key.jwk().clone();
        with_private["d"] = json!("c2VjcmV0LXByaXZhdGUtc2NhbGFyLW5vdC1mb3ItcHVibGljYXRpb24");
        with_private["x5u"] = json!("https://attacker.example/");
        let shared = SharedKey::parse(&with_private.to_string(), NOW).unwrap();
        assert_eq!(&shared.jwk, key.jwk(), "rebuilt from the public fields");
        assert_eq!((shared.kid(), shared.until()), (key.kid(), NOW));
        let p256 = fresh_p256_key();
        assert_eq!(&SharedKey::parse(&p256.jwk().to_string(), NOW).unwrap().jwk, p256.jwk());

        let mut wrong_kid = key.jwk().clone();
        wrong_kid["kid"] = json!(fresh_key().kid());
        let mut wrong_alg = key.jwk().clone();
        wrong_alg["alg"] = json!("ES256");
        let mut short_x = key.jwk().clone();
        short_x["x"] = json!("AAAA");
        for bad in [
            wrong_kid.to_string(),
            wrong_alg.to_string(),
            short_x.to_string(),
            r#"{"kty":"oct","k":"c2VjcmV0","kid":"k1","alg":"HS256"}"#.to_string(),
            "not json".to_string(),
            "{}".to_string(),
        ] {
            assert!(
                matches!(SharedKey::parse(&bad, NOW), Err(AssertionError::InvalidJwks(_))),
                "{bad}"
            );
        }
    }

    /// If this broke, a key would leave the JWKS while an assertion it signed could
    /// still be accepted (or stay published longer than any assertion lives).
    #[test]
    fn publish_until_ends_when_the_last_assertion_is_refused() {
        let signer = Signer::new(fresh_key());
        let token = signer.sign(&claims()).unwrap();
        let last_valid = (NOW..NOW + 3600)
            .rev()
            .find(|t| verifier_for(&signer).verify(&token, Some(ISS), "acme", *t).is_ok())
            .unwrap();
        assert_eq!(publish_until(claims().iat), last_valid + 1);
    }

    #[test]
    fn jwks_has_the_standard_shape() {
        let signer = Signer::new(fresh_key());
        let jwks: Value = serde_json::from_str(&signer.jwks_json(NOW)).unwrap();
        let key = &jwks["keys"][0];
        for (field, want) in [("kty", "OKP"), ("crv", "Ed25519"), ("alg", "EdDSA"), ("use", "sig")] {
            assert_eq!(key[field].as_str(), Some(want), "{field}");
        }
        assert_eq!(key["kid"].as_str(), Some(signer.current().kid()));
        assert_eq!(URL_SAFE_NO_PAD.decode(key["x"].as_str().unwrap()).unwrap().len(), 32);
    }

    #[test]
    fn jwks_with_symmetric_or_kidless_keys_is_refused() {
        let oct = r#"{"keys":[{"kty":"oct","k":"c2VjcmV0","kid":"k1","alg":"HS256"}]}"#;
        assert!(matches!(
            Verifier::from_jwks_json(oct),
            Err(AssertionError::InvalidJwks(_))
        ));
        let signer = Signer::new(fresh_key());
        let mut jwk = signer.current().jwk().clone();
        jwk.as_object_mut().unwrap().remove("kid");
        let kidless = json!({ "keys": [jwk] }).to_string();
        assert!(matches!(
            Verifier::from_jwks_json(&kidless),
            Err(AssertionError::InvalidJwks(_))
        ));
        assert!(matches!(
            Verifier::from_jwks_json("{}"),
            Err(AssertionError::InvalidJwks(_))
        ));
        assert!(matches!(
            Verifier::from_jwks_json(r#"{"keys":[]}"#),
            Err(AssertionError::InvalidJwks(_))
        ));
    }

    #[test]
    fn garbage_and_oversized_tokens_are_malformed() {
        let verifier = verifier_for(&Signer::new(fresh_key()));
        for token in ["", "a.b.c", "not-a-jwt", &"a".repeat(MAX_TOKEN_LEN + 1)] {
            assert_eq!(
                verifier.verify(token, Some(ISS), "acme", NOW),
                Err(AssertionError::Malformed)
            );
        }
    }

    /// Cost of one assertion on the request path. Run with
    /// `cargo test --release -- --ignored --nocapture sign_cost`.
    #[test]
    #[ignore]
    fn sign_cost() {
        const N: u32 = 10_000;
        for (name, key) in [("EdDSA", fresh_key()), ("ES256", fresh_p256_key())] {
            let signer = Signer::new(key);
            let verifier = verifier_for(&signer);
            let c = claims();
            let start = std::time::Instant::now();
            let mut last = String::new();
            for _ in 0..N {
                last = signer.sign(&c).unwrap();
            }
            let sign_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(N);
            let start = std::time::Instant::now();
            for _ in 0..N {
                verifier.verify(&last, Some(ISS), "acme", NOW).unwrap();
            }
            let verify_us = start.elapsed().as_secs_f64() * 1e6 / f64::from(N);
            println!(
                "{name}: {sign_us:.1} us/sign, {verify_us:.1} us/verify, {} bytes",
                last.len()
            );
        }
    }
}
