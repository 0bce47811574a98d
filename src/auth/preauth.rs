//! The pre-MFA state of a login in progress: who passed the password step, on which
//! tenant, for which redirect target, until when. Carried in a short-lived cookie,
//! signed with the tier's cookie key (HMAC-SHA256) so it cannot be forged or moved to
//! another tenant or tier. It grants nothing but the second step.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// How long the second step may take after the password step.
pub const PREAUTH_TTL_SECS: i64 = 300;

/// What the second step needs to know.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PreAuth {
    /// Tenant the password step passed on.
    pub tenant: String,
    /// Tier, bound into the signature too.
    pub tier: String,
    /// Local user name.
    pub username: String,
    /// `mfa` (enrolled) or `enrol` (first login).
    pub stage: String,
    /// Validated same-host redirect target.
    pub rd: String,
    /// Expiry (unix seconds).
    pub exp: i64,
    /// Random id; the second step claims it once, so a captured cookie signs in once.
    pub nonce: String,
    /// For a single sign-on user stepping up to the gateway's TOTP: who the IdP said
    /// they are (`username` is then the key of their TOTP record).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sso: Option<SsoIdentity>,
}

/// A user as the tenant's identity provider vouched for them in a validated ID token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SsoIdentity {
    /// The IdP's issuer URL: with `sub`, names the account (see [`crate::account`]).
    pub issuer: String,
    /// The IdP's `sub` (accounts are keyed by tenant, issuer and sub, never by email).
    pub sub: String,
    /// Display name (`name`, else `email`, else `sub`).
    pub name: String,
    /// `email`, if any.
    pub email: Option<String>,
    /// Roles from the tenant's roles claim.
    pub roles: Vec<String>,
    /// The IdP's `amr`.
    pub amr: Vec<String>,
    /// The IdP session id (`sid`), for back-channel logout.
    pub sid: Option<String>,
}

impl PreAuth {
    /// Whose login history (and account switch) an attempt of this state belongs to:
    /// the account key, which `username` already is for single sign-on.
    pub fn history_subject(&self) -> &str {
        &self.username
    }
}

/// Signs a pre-auth state into a cookie value.
pub fn seal(state: &PreAuth, key: &[u8]) -> String {
    seal_value(state, key)
}

/// Verifies a cookie value: signature (constant time), expiry, tenant and tier.
pub fn open(value: &str, key: &[u8], tenant: &str, tier: &str, now: i64) -> Option<PreAuth> {
    let state: PreAuth = open_value(value, key)?;
    (state.tenant == tenant && state.tier == tier && now < state.exp).then_some(state)
}

/// Signs any state into a cookie value (`payload.tag`, HMAC-SHA256 with the tier key).
pub fn seal_value<T: Serialize>(state: &T, key: &[u8]) -> String {
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(state).unwrap_or_default());
    let tag = URL_SAFE_NO_PAD.encode(mac(key, payload.as_bytes()));
    format!("{payload}.{tag}")
}

/// Opens a value of [`seal_value`]: the signature is checked (constant time) before the
/// payload is parsed. The caller checks what the state is bound to.
pub fn open_value<T: serde::de::DeserializeOwned>(value: &str, key: &[u8]) -> Option<T> {
    if value.len() > 4096 {
        return None;
    }
    let (payload, tag) = value.split_once('.')?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).ok()?;
    m.update(payload.as_bytes());
    m.verify_slice(&tag).ok()?;
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()
}

fn mac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match <Hmac<Sha256> as Mac>::new_from_slice(key) {
        Ok(mut m) => {
            m.update(data);
            m.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> PreAuth {
        PreAuth {
            tenant: "acme".into(),
            tier: "prod".into(),
            username: "alice".into(),
            stage: "mfa".into(),
            rd: "/".into(),
            exp: 100,
            nonce: "n".into(),
            sso: None,
        }
    }

    #[test]
    fn sealed_state_opens_only_with_the_same_key_tenant_tier_and_in_time() {
        let v = seal(&state(), b"key-one");
        assert_eq!(open(&v, b"key-one", "acme", "prod", 99), Some(state()));
        assert_eq!(open(&v, b"key-two", "acme", "prod", 99), None);
        assert_eq!(open(&v, b"key-one", "globex", "prod", 99), None);
        assert_eq!(open(&v, b"key-one", "acme", "staging", 99), None);
        assert_eq!(open(&v, b"key-one", "acme", "prod", 100), None);
    }

    #[test]
    fn tampered_values_are_refused() {
        let v = seal(&state(), b"k");
        let (payload, tag) = v.split_once('.').unwrap();
        let other = seal(
            &PreAuth {
                username: "bob".into(),
                ..state()
            },
            b"k",
        );
        let (other_payload, _) = other.split_once('.').unwrap();
        assert_eq!(open(&format!("{other_payload}.{tag}"), b"k", "acme", "prod", 1), None);
        assert_eq!(open(&format!("{payload}."), b"k", "acme", "prod", 1), None);
        assert_eq!(open("garbage", b"k", "acme", "prod", 1), None);
    }
}
