//! The relying-party checks of OpenID Connect single sign-on, without any I/O: PKCE,
//! the authorization request, strict ID token validation, back-channel logout token
//! validation, and the MFA policy decision on the IdP's `amr`.
//!
//! Discovery and JWKS fetching live in [`super::oidc_client`], the signed pre-login
//! state in [`super::preauth`], and the callback and back-channel logout handlers in the
//! tenant pages (`ui::sso`), which call these functions. Signatures are jsonwebtoken's;
//! the algorithm allowlist (RS256, PS256, ES256, EdDSA) is enforced here before any key
//! is used, so `none` and every HMAC algorithm are refused, including
//! HS256 "signed" with an RSA public key. Time is always an argument (`now`, unix seconds).
//!
//! The tokens of one code exchange are checked together: an ID token's `at_hash` must
//! match the access token it came with (OIDC Core 3.1.3.8; absent is fine, the code
//! flow makes it optional). Before the exchange, the callback's `iss` parameter must
//! name the tenant's issuer, and must be there when the IdP advertises it (RFC 9207,
//! mix-up defence).
//!
//! Claims the gateway keeps or passes on are checked here too, so a sign-in is refused
//! rather than creating an account the gateway cannot manage: the `sub` is what OIDC
//! Core §2 allows (1 to 255 ASCII characters; printable ones here, see
//! [`is_oidc_subject`]), which is stricter than the account kill switch's subject rule
//! ([`crate::account::check_subject`], which local user names share), and
//! `email`, `name`, `sid` and every role have a length limit and no control characters
//! (roles also no comma, which separates them in `X-Portcullis-Roles`).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256, Sha384, Sha512};

use crate::config::MfaPolicy;

/// Algorithms an ID token or logout token may be signed with.
pub const ALLOWED_ALGORITHMS: [Algorithm; 4] = [Algorithm::RS256, Algorithm::PS256, Algorithm::ES256, Algorithm::EdDSA];

/// Largest clock difference tolerated for `exp`, and for `iat` and `nbf` in the future.
pub const CLOCK_SKEW_SECS: i64 = 300;

/// Longest `email` kept (RFC 5321's limit on a forward path).
pub const EMAIL_MAX_CHARS: usize = 254;
/// Longest display `name` and IdP session id (`sid`) kept.
pub const TEXT_CLAIM_MAX_CHARS: usize = 256;
/// Longest role name taken from the roles claim.
pub const ROLE_MAX_CHARS: usize = 128;
/// Most roles taken from the roles claim: they travel in one header and the assertion.
pub const ROLES_MAX: usize = 256;
/// The longest `sub` an IdP may send: "It MUST NOT exceed 255 ASCII characters in
/// length" (OIDC Core §2).
pub const SUB_MAX_CHARS: usize = 255;

/// The back-channel logout event type (OIDC Back-Channel Logout 1.0, 2.4).
pub const BACKCHANNEL_LOGOUT_EVENT: &str = "http://schemas.openid.net/event/backchannel-logout";

/// `amr` values that mean a multi-factor sign-in at the IdP (RFC 8176).
const MULTI_FACTOR_AMR: [&str; 12] = [
    "mfa", "otp", "hwk", "swk", "sms", "tel", "fpt", "face", "iris", "retina", "vbm", "pop",
];

/// Why a token or a step was refused; the text is safe to show and log (no token content).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OidcError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token is signed with an algorithm that is not allowed")]
    AlgorithmNotAllowed,
    #[error("the token names a key the identity provider does not publish")]
    UnknownKey,
    /// The header lists `crit` extensions (RFC 7515 4.1.11); the gateway understands
    /// none, so such a token must be refused.
    #[error("the token requires an extension the gateway does not support (crit)")]
    CriticalExtension,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token was not issued by this tenant's identity provider")]
    WrongIssuer,
    #[error("the token was not issued for this gateway")]
    WrongAudience,
    #[error("the token was issued to another client (azp)")]
    WrongAuthorizedParty,
    #[error("the token is not valid yet")]
    NotYetValid,
    #[error("the token has expired")]
    Expired,
    #[error("the token was issued in the future")]
    IssuedInFuture,
    #[error("the sign-in does not match this browser's attempt (nonce)")]
    NonceMismatch,
    #[error("the token has no subject")]
    MissingSubject,
    /// A claim the gateway would keep, show or pass on breaks its length or character
    /// rule; the payload names the claim, never its value.
    #[error("the token's {0} claim is too long or contains characters the gateway cannot use")]
    UnusableClaim(&'static str),
    #[error("the logout token is not a back-channel logout token")]
    NotALogoutToken,
    /// `at_hash` names another access token than the one of the same token response.
    #[error("the token's at_hash does not match the access token it came with")]
    AccessTokenHashMismatch,
    /// The callback's `iss` parameter is another issuer's, or missing although the IdP
    /// advertises it (RFC 9207).
    #[error("the sign-in response does not name this tenant's identity provider (iss)")]
    WrongResponseIssuer,
}

/// What a code exchange returned: the ID token and, usually, an access token (which
/// the gateway only uses to check the ID token's `at_hash`).
pub struct TokenSet {
    pub id_token: String,
    pub access_token: Option<String>,
}

impl std::fmt::Debug for TokenSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSet([redacted])")
    }
}

/// RFC 9207: the `iss` parameter of an authorization response, when present, must be
/// exactly the issuer the attempt was started with; when the IdP advertises
/// `authorization_response_iss_parameter_supported`, it must be present. Checked before
/// the code goes to any token endpoint.
pub fn check_response_issuer(iss: Option<&str>, issuer: &str, advertised: bool) -> Result<(), OidcError> {
    match iss {
        Some(iss) if iss == issuer => Ok(()),
        None if !advertised => Ok(()),
        _ => Err(OidcError::WrongResponseIssuer),
    }
}

/// The `at_hash` of `access_token` for an ID token signed with `alg` (OIDC Core
/// 3.1.3.8): the left half of its hash with the algorithm's hash function (SHA-512 for
/// EdDSA with Ed25519, the only EdDSA curve allowed), base64url.
fn access_token_hash(alg: Algorithm, access_token: &str) -> Option<String> {
    let digest = match alg {
        Algorithm::RS256 | Algorithm::PS256 | Algorithm::ES256 | Algorithm::HS256 => {
            Sha256::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS384 | Algorithm::PS384 | Algorithm::ES384 | Algorithm::HS384 => {
            Sha384::digest(access_token.as_bytes()).to_vec()
        }
        Algorithm::RS512 | Algorithm::PS512 | Algorithm::HS512 | Algorithm::EdDSA => {
            Sha512::digest(access_token.as_bytes()).to_vec()
        }
    };
    digest.get(..digest.len() / 2).map(|half| URL_SAFE_NO_PAD.encode(half))
}

/// Validates the ID token of a code exchange like [`validate_id_token`], then its
/// `at_hash` against the exchange's access token: an `at_hash` present must match (and
/// needs an access token to match); an absent one is accepted.
pub fn validate_token_response(
    tokens: &TokenSet,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    expected_nonce: &str,
    roles_claim: Option<&str>,
    now: i64,
) -> Result<IdClaims, OidcError> {
    let claims = validate_id_token(
        &tokens.id_token,
        jwks,
        issuer,
        client_id,
        expected_nonce,
        roles_claim,
        now,
    )?;
    let Some(at_hash) = claims.raw.get("at_hash") else {
        return Ok(claims);
    };
    // The token was just verified, so its header parses.
    let alg = jsonwebtoken::decode_header(&tokens.id_token)
        .map_err(|_| OidcError::Malformed)?
        .alg;
    let expected = tokens.access_token.as_deref().and_then(|at| access_token_hash(alg, at));
    match (at_hash.as_str(), expected) {
        (Some(got), Some(expected)) if got == expected => Ok(claims),
        _ => Err(OidcError::AccessTokenHashMismatch),
    }
}

/// A PKCE pair (RFC 7636, S256).
pub struct Pkce {
    /// Kept in the pre-login cookie, sent with the code.
    pub verifier: String,
    /// Sent in the authorization request.
    pub challenge: String,
}

impl std::fmt::Debug for Pkce {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pkce([redacted])")
    }
}

impl Pkce {
    /// A fresh verifier (43 characters of 256 random bits) and its S256 challenge.
    pub fn new() -> Self {
        let verifier = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>());
        let challenge = URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()));
        Pkce { verifier, challenge }
    }
}

impl Default for Pkce {
    fn default() -> Self {
        Pkce::new()
    }
}

/// A random value for `state` or `nonce` (256 bits, base64url).
pub fn random_value() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What the authorization request carries.
#[derive(Debug, Clone)]
pub struct AuthorizeRequest<'a> {
    pub authorization_endpoint: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    pub scopes: &'a [String],
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
}

/// The URL the browser is sent to (code flow, PKCE S256).
pub fn authorize_url(r: &AuthorizeRequest<'_>) -> String {
    let mut scopes: Vec<&str> = r.scopes.iter().map(String::as_str).collect();
    if !scopes.contains(&"openid") {
        scopes.insert(0, "openid");
    }
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("response_type", "code")
        .append_pair("client_id", r.client_id)
        .append_pair("redirect_uri", r.redirect_uri)
        .append_pair("scope", &scopes.join(" "))
        .append_pair("state", r.state)
        .append_pair("nonce", r.nonce)
        .append_pair("code_challenge", r.code_challenge)
        .append_pair("code_challenge_method", "S256")
        .finish();
    let sep = if r.authorization_endpoint.contains('?') {
        '&'
    } else {
        '?'
    };
    format!("{}{sep}{query}", r.authorization_endpoint)
}

/// The claims of a validated ID token that the gateway uses.
#[derive(Debug, Clone, PartialEq)]
pub struct IdClaims {
    pub sub: String,
    pub email: Option<String>,
    pub name: Option<String>,
    pub amr: Vec<String>,
    pub sid: Option<String>,
    /// The values of the tenant's roles claim, checked like the other kept claims.
    pub roles: Vec<String>,
    /// Every claim, for the admin's test sign-in.
    pub raw: Map<String, Value>,
}

/// Whether `value` may be kept or passed on: at most `max` characters, no control
/// character (CR and LF would otherwise reach headers, logs and pages).
fn usable_text(value: &str, max: usize) -> bool {
    value.chars().count() <= max && !value.chars().any(char::is_control)
}

/// Whether an IdP's `sub` is one OIDC Core §2 allows: 1 to [`SUB_MAX_CHARS`] ASCII
/// characters, none of them a control character (printable ASCII and space). A longer,
/// non-ASCII or control-laden `sub` comes from a broken or hostile IdP and is refused,
/// never trimmed or escaped into an account.
pub fn is_oidc_subject(sub: &str) -> bool {
    !sub.is_empty() && sub.len() <= SUB_MAX_CHARS && sub.bytes().all(|b| (0x20..0x7f).contains(&b))
}

/// The string claim `name`, if present, when it is [`usable_text`] and not empty.
fn text_claim(raw: &Map<String, Value>, name: &'static str, max: usize) -> Result<Option<String>, OidcError> {
    match raw.get(name).and_then(Value::as_str) {
        None => Ok(None),
        Some(v) if !v.is_empty() && usable_text(v, max) => Ok(Some(v.to_string())),
        Some(_) => Err(OidcError::UnusableClaim(name)),
    }
}

/// The values of the roles claim `claim` (an array of strings or one string). A role
/// must be 1 to [`ROLE_MAX_CHARS`] characters without control characters or commas,
/// and there may be at most [`ROLES_MAX`] of them.
pub fn roles_of(raw: &Map<String, Value>, claim: &str) -> Result<Vec<String>, OidcError> {
    let roles: Vec<String> = match raw.get(claim) {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        Some(Value::String(s)) => vec![s.clone()],
        _ => Vec::new(),
    };
    let usable = |r: &String| !r.is_empty() && !r.contains(',') && usable_text(r, ROLE_MAX_CHARS);
    if roles.len() > ROLES_MAX || !roles.iter().all(usable) {
        return Err(OidcError::UnusableClaim("roles"));
    }
    Ok(roles)
}

/// Whether a JWT's header has `crit` (the decoded header drops unknown fields, so the
/// raw header is read again); a header that does not decode counts as critical.
fn has_critical_extensions(token: &str) -> bool {
    token
        .split('.')
        .next()
        .and_then(|h| URL_SAFE_NO_PAD.decode(h).ok())
        .and_then(|h| serde_json::from_slice::<Map<String, Value>>(&h).ok())
        .is_none_or(|h| h.contains_key("crit"))
}

/// Verifies a JWT's signature against the IdP's JWKS with an allowed algorithm and the
/// expected issuer and audience, and returns its claims. Expiry is checked by the callers
/// (an ID token must have `exp`; a logout token need not).
fn verified_claims(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    now: i64,
) -> Result<Map<String, Value>, OidcError> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| OidcError::Malformed)?;
    if has_critical_extensions(token) {
        return Err(OidcError::CriticalExtension);
    }
    if !ALLOWED_ALGORITHMS.contains(&header.alg) {
        return Err(OidcError::AlgorithmNotAllowed);
    }
    let jwk = match header.kid.as_deref() {
        Some(kid) => jwks.find(kid),
        // Without a kid, only a single published key is unambiguous.
        None if jwks.keys.len() == 1 => jwks.keys.first(),
        None => None,
    }
    .ok_or(OidcError::UnknownKey)?;
    if jwk
        .common
        .key_algorithm
        .is_some_and(|a| a.to_string() != format!("{:?}", header.alg))
    {
        return Err(OidcError::AlgorithmNotAllowed);
    }
    let key = DecodingKey::from_jwk(jwk).map_err(|_| OidcError::UnknownKey)?;
    let mut v = Validation::new(header.alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.validate_aud = false;
    v.required_spec_claims.clear();
    let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &v).map_err(|e| match e.kind() {
        jsonwebtoken::errors::ErrorKind::InvalidSignature => OidcError::BadSignature,
        jsonwebtoken::errors::ErrorKind::InvalidAlgorithm => OidcError::AlgorithmNotAllowed,
        _ => OidcError::Malformed,
    })?;
    let claims = data.claims;
    if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
        return Err(OidcError::WrongIssuer);
    }
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    if !audiences.contains(&client_id) {
        return Err(OidcError::WrongAudience);
    }
    // OIDC Core 3.1.3.7, points 4 and 5: with several audiences the token must name
    // this client as its authorised party, and an `azp` present must be this client.
    match claims.get("azp") {
        None if audiences.len() > 1 => return Err(OidcError::WrongAuthorizedParty),
        None => {}
        Some(azp) if azp.as_str() == Some(client_id) => {}
        Some(_) => return Err(OidcError::WrongAuthorizedParty),
    }
    match claims.get("iat").and_then(Value::as_i64) {
        Some(iat) if iat > now + CLOCK_SKEW_SECS => return Err(OidcError::IssuedInFuture),
        Some(_) => {}
        None => return Err(OidcError::Malformed),
    }
    // `nbf` (RFC 7519 4.1.5): a token not valid yet is refused beyond the clock skew.
    match claims.get("nbf") {
        None => {}
        Some(nbf) => match nbf.as_i64() {
            Some(nbf) if nbf <= now + CLOCK_SKEW_SECS => {}
            Some(_) => return Err(OidcError::NotYetValid),
            None => return Err(OidcError::Malformed),
        },
    }
    Ok(claims)
}

/// Validates an ID token strictly (OIDC Core 3.1.3.7) and returns its claims, with the
/// values of `roles_claim` (the tenant's claim mapping) as roles.
pub fn validate_id_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    expected_nonce: &str,
    roles_claim: Option<&str>,
    now: i64,
) -> Result<IdClaims, OidcError> {
    let raw = verified_claims(token, jwks, issuer, client_id, now)?;
    match raw.get("exp").and_then(Value::as_i64) {
        Some(exp) if exp + CLOCK_SKEW_SECS.min(60) > now => {}
        Some(_) => return Err(OidcError::Expired),
        None => return Err(OidcError::Malformed),
    }
    let nonce = raw.get("nonce").and_then(Value::as_str).unwrap_or_default();
    if nonce.is_empty()
        || !bool::from(subtle::ConstantTimeEq::ct_eq(
            nonce.as_bytes(),
            expected_nonce.as_bytes(),
        ))
    {
        return Err(OidcError::NonceMismatch);
    }
    let sub = raw.get("sub").and_then(Value::as_str).unwrap_or_default().to_string();
    if sub.is_empty() {
        return Err(OidcError::MissingSubject);
    }
    // OIDC Core §2's rule, and an account that signs in must be one an account kill
    // switch can name.
    if !is_oidc_subject(&sub) || crate::account::check_subject(&sub).is_err() {
        return Err(OidcError::UnusableClaim("sub"));
    }
    let amr = match raw.get("amr") {
        Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
        _ => Vec::new(),
    };
    if !amr.iter().all(|m| usable_text(m, TEXT_CLAIM_MAX_CHARS)) || amr.len() > ROLES_MAX {
        return Err(OidcError::UnusableClaim("amr"));
    }
    Ok(IdClaims {
        email: text_claim(&raw, "email", EMAIL_MAX_CHARS)?,
        name: text_claim(&raw, "name", TEXT_CLAIM_MAX_CHARS)?,
        sid: text_claim(&raw, "sid", TEXT_CLAIM_MAX_CHARS)?,
        roles: roles_claim.map(|c| roles_of(&raw, c)).transpose()?.unwrap_or_default(),
        sub,
        amr,
        raw,
    })
}

/// Who a back-channel logout ends: the IdP session (`sid`) and/or the user (`sub`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogoutClaims {
    pub sid: Option<String>,
    pub sub: Option<String>,
}

/// Validates a back-channel logout token (OIDC Back-Channel Logout 1.0, 2.6).
pub fn validate_logout_token(
    token: &str,
    jwks: &JwkSet,
    issuer: &str,
    client_id: &str,
    now: i64,
) -> Result<LogoutClaims, OidcError> {
    let raw = verified_claims(token, jwks, issuer, client_id, now)?;
    if let Some(exp) = raw.get("exp").and_then(Value::as_i64)
        && exp + 60 <= now
    {
        return Err(OidcError::Expired);
    }
    let is_logout_event = raw
        .get("events")
        .and_then(|e| e.get(BACKCHANNEL_LOGOUT_EVENT))
        .is_some_and(Value::is_object);
    if !is_logout_event || raw.contains_key("nonce") || raw.get("jti").and_then(Value::as_str).is_none() {
        return Err(OidcError::NotALogoutToken);
    }
    // The same rules as at sign-in: a `sub` or `sid` no session could carry is refused
    // rather than matched against stored values.
    let sub = match raw.get("sub").and_then(Value::as_str) {
        None => None,
        Some(sub) if is_oidc_subject(sub) && crate::account::check_subject(sub).is_ok() => Some(sub.to_string()),
        Some(_) => return Err(OidcError::UnusableClaim("sub")),
    };
    let claims = LogoutClaims {
        sid: text_claim(&raw, "sid", TEXT_CLAIM_MAX_CHARS)?,
        sub,
    };
    if claims.sid.is_none() && claims.sub.is_none() {
        return Err(OidcError::NotALogoutToken);
    }
    Ok(claims)
}

/// Whether the IdP's `amr` shows a multi-factor sign-in.
pub fn idp_did_mfa(amr: &[String]) -> bool {
    amr.iter().any(|m| MULTI_FACTOR_AMR.contains(&m.as_str()))
}

/// What the tenant's MFA policy makes of an SSO sign-in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MfaDecision {
    /// Signed in with the IdP's factors.
    Accept,
    /// The gateway's own TOTP first.
    StepUp,
    /// Refused: the tenant requires MFA at the IdP.
    Refuse,
}

/// `required`: the IdP's MFA, else the gateway's TOTP; `gateway`: always the gateway's
/// TOTP; `idp`: the IdP's MFA or nothing.
pub fn mfa_decision(policy: MfaPolicy, amr: &[String]) -> MfaDecision {
    match (policy, idp_did_mfa(amr)) {
        (MfaPolicy::Required, true) | (MfaPolicy::Idp, true) => MfaDecision::Accept,
        (MfaPolicy::Required, false) | (MfaPolicy::Gateway, _) => MfaDecision::StepUp,
        (MfaPolicy::Idp, false) => MfaDecision::Refuse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use ring::signature::{Ed25519KeyPair, KeyPair};
    use serde_json::json;

    const ISS: &str = "https://idp.example";
    const CLIENT: &str = "gateway-acme";
    const NOW: i64 = 1_800_000_000;

    /// A fake IdP's signing key (a real provider never sends the bad tokens below).
    struct FakeIdp {
        pkcs8: Vec<u8>,
        jwks: JwkSet,
    }

    fn fake_idp(kid: &str) -> FakeIdp {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref().to_vec();
        let pair = Ed25519KeyPair::from_pkcs8(&pkcs8).unwrap();
        let x = URL_SAFE_NO_PAD.encode(pair.public_key().as_ref());
        let jwks: JwkSet = serde_json::from_value(json!({"keys": [
            {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"}
        ]}))
        .unwrap();
        FakeIdp { pkcs8, jwks }
    }

    impl FakeIdp {
        fn sign(&self, kid: &str, claims: &Value) -> String {
            let mut header = Header::new(Algorithm::EdDSA);
            header.kid = Some(kid.to_string());
            jsonwebtoken::encode(&header, claims, &EncodingKey::from_ed_der(&self.pkcs8)).unwrap()
        }
    }

    fn id_claims() -> Value {
        json!({"iss": ISS, "aud": CLIENT, "sub": "u-123", "iat": NOW, "exp": NOW + 300,
               "nonce": "n-1", "email": "ada@example.com", "amr": ["pwd", "otp"], "sid": "s-9",
               "groups": ["admins", "dev"]})
    }

    fn with(mut claims: Value, key: &str, value: Value) -> Value {
        claims[key] = value;
        claims
    }

    fn without(mut claims: Value, key: &str) -> Value {
        claims.as_object_mut().unwrap().remove(key);
        claims
    }

    fn check(idp: &FakeIdp, claims: &Value) -> Result<IdClaims, OidcError> {
        validate_id_token(
            &idp.sign("k1", claims),
            &idp.jwks,
            ISS,
            CLIENT,
            "n-1",
            Some("groups"),
            NOW,
        )
    }

    #[test]
    fn a_valid_id_token_gives_its_claims() {
        let idp = fake_idp("k1");
        let c = check(&idp, &id_claims()).unwrap();
        assert_eq!((c.sub.as_str(), c.sid.as_deref()), ("u-123", Some("s-9")));
        assert_eq!(c.roles, vec!["admins".to_string(), "dev".to_string()]);
        assert!(idp_did_mfa(&c.amr));
    }

    #[test]
    fn every_forged_or_foreign_id_token_is_refused() {
        let idp = fake_idp("k1");
        let c = id_claims();
        let cases = [
            (
                with(c.clone(), "iss", json!("https://evil.example")),
                OidcError::WrongIssuer,
            ),
            (with(c.clone(), "aud", json!("other-client")), OidcError::WrongAudience),
            (
                with(c.clone(), "aud", json!([CLIENT, "other"])),
                OidcError::WrongAuthorizedParty,
            ),
            (
                with(c.clone(), "azp", json!("other-client")),
                OidcError::WrongAuthorizedParty,
            ),
            (with(c.clone(), "azp", json!(42)), OidcError::WrongAuthorizedParty),
            (with(c.clone(), "nbf", json!(NOW + 3600)), OidcError::NotYetValid),
            (with(c.clone(), "nbf", json!("soon")), OidcError::Malformed),
            (with(c.clone(), "exp", json!(NOW - 120)), OidcError::Expired),
            (with(c.clone(), "iat", json!(NOW + 3600)), OidcError::IssuedInFuture),
            (without(c.clone(), "nonce"), OidcError::NonceMismatch),
            (with(c.clone(), "nonce", json!("n-2")), OidcError::NonceMismatch),
            (without(c.clone(), "sub"), OidcError::MissingSubject),
        ];
        for (claims, expected) in cases {
            assert_eq!(check(&idp, &claims), Err(expected.clone()), "{claims}");
        }
        let with_azp = with(with(c.clone(), "aud", json!([CLIENT, "other"])), "azp", json!(CLIENT));
        assert!(check(&idp, &with_azp).is_ok(), "several audiences with azp = client");
    }

    #[test]
    fn time_claims_allow_the_clock_skew_and_no_more() {
        let idp = fake_idp("k1");
        let c = id_claims();
        assert!(check(&idp, &with(c.clone(), "nbf", json!(NOW + CLOCK_SKEW_SECS))).is_ok());
        assert_eq!(
            check(&idp, &with(c.clone(), "nbf", json!(NOW + CLOCK_SKEW_SECS + 1))),
            Err(OidcError::NotYetValid)
        );
        assert!(check(&idp, &with(c, "azp", json!(CLIENT))).is_ok(), "azp = client");
    }

    #[test]
    fn claims_the_gateway_keeps_must_be_usable() {
        let idp = fake_idp("k1");
        let c = id_claims();
        let long = |n: usize| json!("x".repeat(n));
        let cases = [
            (with(c.clone(), "sub", long(257)), "sub"),
            (with(c.clone(), "sub", long(SUB_MAX_CHARS + 1)), "sub"),
            (with(c.clone(), "sub", json!("é".repeat(10))), "sub"),
            (with(c.clone(), "sub", json!("zoë")), "sub"),
            (with(c.clone(), "sub", json!("u\u{0}1")), "sub"),
            (with(c.clone(), "sub", json!("u\t1")), "sub"),
            (with(c.clone(), "sub", json!("u\u{7f}1")), "sub"),
            (with(c.clone(), "sub", json!("u-1\r\nX-Portcullis-Roles: admin")), "sub"),
            (with(c.clone(), "sub", json!("u\u{85}1")), "sub"),
            (with(c.clone(), "email", long(EMAIL_MAX_CHARS + 1)), "email"),
            (with(c.clone(), "email", json!("a@b\u{0}")), "email"),
            (with(c.clone(), "email", json!("")), "email"),
            (with(c.clone(), "name", long(TEXT_CLAIM_MAX_CHARS + 1)), "name"),
            (with(c.clone(), "name", json!("Ada\nLovelace")), "name"),
            (with(c.clone(), "sid", json!("s\t9")), "sid"),
            (with(c.clone(), "groups", json!(["staff,admins"])), "roles"),
            (with(c.clone(), "groups", json!(["staff\radmins"])), "roles"),
            (with(c.clone(), "groups", json!([""])), "roles"),
            (
                with(c.clone(), "groups", json!("x".repeat(ROLE_MAX_CHARS + 1))),
                "roles",
            ),
            (with(c.clone(), "groups", json!(vec!["g"; ROLES_MAX + 1])), "roles"),
            (with(c.clone(), "amr", json!(["pwd\n"])), "amr"),
        ];
        for (claims, name) in cases {
            assert_eq!(check(&idp, &claims), Err(OidcError::UnusableClaim(name)), "{claims}");
        }
        // At the limits, and with non-ASCII text where OIDC allows it, tokens pass.
        let fine = with(
            with(
                with(c.clone(), "sub", json!(format!(" ~{}", "x".repeat(SUB_MAX_CHARS - 2)))),
                "name",
                json!("Zoë Ångström"),
            ),
            "groups",
            json!(vec!["g".repeat(ROLE_MAX_CHARS); ROLES_MAX]),
        );
        let ok = check(&idp, &fine).unwrap();
        assert_eq!((ok.sub.len(), ok.roles.len()), (SUB_MAX_CHARS, ROLES_MAX));
        // Roles are only read from the tenant's mapped claim.
        let unmapped = validate_id_token(
            &idp.sign("k1", &with(c, "groups", json!(["a,b"]))),
            &idp.jwks,
            ISS,
            CLIENT,
            "n-1",
            None,
            NOW,
        )
        .unwrap();
        assert!(unmapped.roles.is_empty());
    }

    #[test]
    fn signatures_keys_and_algorithms_are_enforced() {
        let idp = fake_idp("k1");
        let other = fake_idp("k1");
        let token = other.sign("k1", &id_claims());
        assert_eq!(
            validate_id_token(&token, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW),
            Err(OidcError::BadSignature),
            "same kid, another key"
        );
        let unknown = idp.sign("k2", &id_claims());
        assert_eq!(
            validate_id_token(&unknown, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW),
            Err(OidcError::UnknownKey)
        );
        // Tampered payload: signature no longer matches.
        let good = idp.sign("k1", &id_claims());
        let mut parts: Vec<String> = good.split('.').map(str::to_string).collect();
        parts[1] = URL_SAFE_NO_PAD.encode(with(id_claims(), "sub", json!("admin")).to_string());
        assert_eq!(
            validate_id_token(&parts.join("."), &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW),
            Err(OidcError::BadSignature)
        );
        // alg none and HS256 (keyed with the public key's bytes) are never accepted.
        let payload = URL_SAFE_NO_PAD.encode(id_claims().to_string());
        let none = format!("{}.{payload}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none","kid":"k1"}"#));
        assert!(validate_id_token(&none, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW).is_err());
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let x = serde_json::to_value(&idp.jwks).unwrap()["keys"][0]["x"]
            .as_str()
            .unwrap()
            .to_string();
        let hs = jsonwebtoken::encode(&header, &id_claims(), &EncodingKey::from_secret(x.as_bytes())).unwrap();
        assert_eq!(
            validate_id_token(&hs, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW),
            Err(OidcError::AlgorithmNotAllowed)
        );
    }

    /// If this broke, a token marking an extension as critical (RFC 7515 4.1.11) would be
    /// accepted as if the gateway had understood it.
    #[test]
    fn a_token_with_critical_extensions_is_refused() {
        let idp = fake_idp("k1");
        let good = idp.sign("k1", &id_claims());
        let (_, rest) = good.split_once('.').unwrap();
        let signed_with = |header: Value| {
            let input = format!(
                "{}.{}",
                URL_SAFE_NO_PAD.encode(header.to_string()),
                rest.split('.').next().unwrap()
            );
            let pair = ring::signature::Ed25519KeyPair::from_pkcs8(&idp.pkcs8).unwrap();
            format!(
                "{input}.{}",
                URL_SAFE_NO_PAD.encode(pair.sign(input.as_bytes()).as_ref())
            )
        };
        for crit in [json!(["x-unknown"]), json!(["exp"]), json!([]), json!("x")] {
            let token = signed_with(json!({"alg": "EdDSA", "kid": "k1", "crit": crit}));
            assert_eq!(
                validate_id_token(&token, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW),
                Err(OidcError::CriticalExtension),
                "crit {crit}"
            );
        }
        let plain = signed_with(json!({"alg": "EdDSA", "kid": "k1"}));
        assert!(validate_id_token(&plain, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW).is_ok());
    }

    #[test]
    fn logout_tokens_need_the_event_a_subject_and_no_nonce() {
        let idp = fake_idp("k1");
        let good = json!({"iss": ISS, "aud": CLIENT, "iat": NOW, "jti": "j1", "sid": "s-9",
                          "events": {BACKCHANNEL_LOGOUT_EVENT: {}}});
        let ok = validate_logout_token(&idp.sign("k1", &good), &idp.jwks, ISS, CLIENT, NOW).unwrap();
        assert_eq!(ok.sid.as_deref(), Some("s-9"));
        let by_sub = with(without(good.clone(), "sid"), "sub", json!("u-123"));
        let ok = validate_logout_token(&idp.sign("k1", &by_sub), &idp.jwks, ISS, CLIENT, NOW).unwrap();
        assert_eq!((ok.sid, ok.sub.as_deref()), (None, Some("u-123")));
        for bad in [
            with(good.clone(), "nonce", json!("n")),
            without(good.clone(), "events"),
            with(
                good.clone(),
                "events",
                json!({"http://schemas.openid.net/event/other": {}}),
            ),
            with(good.clone(), "events", json!({BACKCHANNEL_LOGOUT_EVENT: "yes"})),
            without(without(good.clone(), "sid"), "sub"),
            without(good.clone(), "jti"),
        ] {
            assert_eq!(
                validate_logout_token(&idp.sign("k1", &bad), &idp.jwks, ISS, CLIENT, NOW),
                Err(OidcError::NotALogoutToken),
                "{bad}"
            );
        }
        for (bad, expected) in [
            (
                with(good.clone(), "iss", json!("https://other-idp.example")),
                OidcError::WrongIssuer,
            ),
            (
                with(good.clone(), "aud", json!("other-client")),
                OidcError::WrongAudience,
            ),
            (
                with(good.clone(), "azp", json!("other-client")),
                OidcError::WrongAuthorizedParty,
            ),
            (without(good.clone(), "iat"), OidcError::Malformed),
            (with(good.clone(), "iat", json!(NOW + 3600)), OidcError::IssuedInFuture),
            (with(good.clone(), "nbf", json!(NOW + 3600)), OidcError::NotYetValid),
            (with(good.clone(), "exp", json!(NOW - 120)), OidcError::Expired),
            (
                with(good.clone(), "sub", json!("x".repeat(300))),
                OidcError::UnusableClaim("sub"),
            ),
            (
                with(good.clone(), "sub", json!("u\r\n")),
                OidcError::UnusableClaim("sub"),
            ),
            (
                with(good.clone(), "sub", json!("x".repeat(SUB_MAX_CHARS + 1))),
                OidcError::UnusableClaim("sub"),
            ),
            (with(good.clone(), "sub", json!("zoë")), OidcError::UnusableClaim("sub")),
            (
                with(good.clone(), "sid", json!("s\n9")),
                OidcError::UnusableClaim("sid"),
            ),
            (
                with(good, "sid", json!("s".repeat(300))),
                OidcError::UnusableClaim("sid"),
            ),
        ] {
            assert_eq!(
                validate_logout_token(&idp.sign("k1", &bad), &idp.jwks, ISS, CLIENT, NOW),
                Err(expected),
                "{bad}"
            );
        }
    }

    /// If this broke, an ID token could travel with an access token it was not issued
    /// with (OIDC Core 3.1.3.8), or tokens without `at_hash` would be refused.
    #[test]
    fn at_hash_must_match_the_access_token_when_present() {
        // OIDC Core's own example (RS256: left half of SHA-256).
        assert_eq!(
            access_token_hash(Algorithm::RS256, "jHkWEdUXMU1BwAsC4vtUsZwnNvTIxEl0z9K3vx5KF0Y").as_deref(),
            Some("77QmUPtjPfzWtF2AnpK9RQ")
        );
        let idp = fake_idp("k1");
        let response = |claims: &Value, access_token: Option<&str>| {
            let tokens = TokenSet {
                id_token: idp.sign("k1", claims),
                access_token: access_token.map(str::to_string),
            };
            validate_token_response(&tokens, &idp.jwks, ISS, CLIENT, "n-1", Some("groups"), NOW)
        };
        let ed25519_hash = URL_SAFE_NO_PAD.encode(&Sha512::digest(b"at-1")[..32]);
        let with_hash = with(id_claims(), "at_hash", json!(ed25519_hash));
        assert!(response(&with_hash, Some("at-1")).is_ok());
        assert!(response(&id_claims(), Some("at-1")).is_ok(), "at_hash is optional");
        assert!(response(&id_claims(), None).is_ok());
        for (claims, access_token) in [
            (&with_hash, Some("at-2")),
            (&with_hash, None),
            (&with(id_claims(), "at_hash", json!(7)), Some("at-1")),
            (
                &with(
                    id_claims(),
                    "at_hash",
                    json!(URL_SAFE_NO_PAD.encode(&Sha256::digest(b"at-1")[..16])),
                ),
                Some("at-1"),
            ),
        ] {
            assert_eq!(
                response(claims, access_token),
                Err(OidcError::AccessTokenHashMismatch),
                "{claims} with {access_token:?}"
            );
        }
        assert!(
            !format!(
                "{:?}",
                TokenSet {
                    id_token: "secret-id".into(),
                    access_token: Some("secret-at".into())
                }
            )
            .contains("secret")
        );
    }

    /// If this broke, a callback relayed from another IdP (mix-up, RFC 9207) would have
    /// its code sent to this tenant's token endpoint.
    #[test]
    fn the_response_issuer_must_be_the_tenants_issuer() {
        assert_eq!(check_response_issuer(Some(ISS), ISS, true), Ok(()));
        assert_eq!(check_response_issuer(Some(ISS), ISS, false), Ok(()));
        assert_eq!(check_response_issuer(None, ISS, false), Ok(()));
        for (iss, advertised) in [
            (None, true),
            (Some("https://other-idp.example"), false),
            (Some("https://other-idp.example"), true),
            (Some("https://idp.example/"), true),
            (Some("https://IDP.example"), true),
            (Some(""), false),
        ] {
            assert_eq!(
                check_response_issuer(iss, ISS, advertised),
                Err(OidcError::WrongResponseIssuer),
                "{iss:?}, advertised {advertised}"
            );
        }
    }

    #[test]
    fn the_mfa_policy_matrix() {
        let mfa = vec!["pwd".to_string(), "otp".to_string()];
        let pwd = vec!["pwd".to_string()];
        assert_eq!(mfa_decision(MfaPolicy::Required, &mfa), MfaDecision::Accept);
        assert_eq!(mfa_decision(MfaPolicy::Required, &pwd), MfaDecision::StepUp);
        assert_eq!(mfa_decision(MfaPolicy::Gateway, &mfa), MfaDecision::StepUp);
        assert_eq!(mfa_decision(MfaPolicy::Gateway, &pwd), MfaDecision::StepUp);
        assert_eq!(mfa_decision(MfaPolicy::Idp, &mfa), MfaDecision::Accept);
        assert_eq!(mfa_decision(MfaPolicy::Idp, &pwd), MfaDecision::Refuse);
    }

    #[test]
    fn the_authorization_request_carries_pkce_state_and_nonce() {
        let pkce = Pkce::new();
        assert_eq!(pkce.verifier.len(), 43);
        assert_eq!(
            pkce.challenge,
            URL_SAFE_NO_PAD.encode(Sha256::digest(pkce.verifier.as_bytes()))
        );
        let scopes = vec!["email".to_string()];
        let url = authorize_url(&AuthorizeRequest {
            authorization_endpoint: "https://idp.example/auth",
            client_id: CLIENT,
            redirect_uri: "https://acme.example/.portcullis/callback",
            scopes: &scopes,
            state: "st",
            nonce: "no",
            code_challenge: &pkce.challenge,
        });
        for part in [
            "response_type=code",
            "scope=openid+email",
            "state=st",
            "nonce=no",
            "code_challenge_method=S256",
            "redirect_uri=https%3A%2F%2Facme.example%2F.portcullis%2Fcallback",
        ] {
            assert!(url.contains(part), "{url} lacks {part}");
        }
        assert!(!format!("{pkce:?}").contains(&pkce.verifier));
    }
}
