//! A tenant's self-service single sign-on settings as stored: one [`SsoVersion`] per
//! saved configuration, in one of three states (the current draft, the active one, or
//! superseded ones kept for roll-back), with the result of the draft's test sign-in and
//! the [`SsoVersion::digest`] that ties a test to exactly the content it tested.
//!
//! Plain data: the client secret is only ever held here sealed ([`SealedSecret`], made and
//! opened by `auth::sso_admin`); the rules of the wizard live in that service.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// Where a version is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsoState {
    /// Being edited and tested; at most one per tenant.
    Draft,
    /// What sign-ins use; at most one per tenant.
    Active,
    /// Was active once; kept so a roll-back can restore it.
    Superseded,
}

impl SsoState {
    /// The name the API shows.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoState::Draft => "draft",
            SsoState::Active => "active",
            SsoState::Superseded => "superseded",
        }
    }
}

/// The MFA policy of SSO sign-ins, as stored (the twin of `config::MfaPolicy`, which is
/// not serialisable and sits above the records).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SsoMfa {
    /// Accept the IdP's MFA, else step up with the gateway's TOTP.
    Required,
    /// Always TOTP at the gateway.
    Gateway,
    /// Only the IdP's MFA; refuse otherwise.
    Idp,
}

impl SsoMfa {
    /// Every policy, as the API names it.
    pub const NAMES: [&'static str; 3] = ["required", "gateway", "idp"];

    /// The policy named `name`, if any.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "required" => Some(SsoMfa::Required),
            "gateway" => Some(SsoMfa::Gateway),
            "idp" => Some(SsoMfa::Idp),
            _ => None,
        }
    }

    /// The API name.
    pub fn as_str(self) -> &'static str {
        match self {
            SsoMfa::Required => "required",
            SsoMfa::Gateway => "gateway",
            SsoMfa::Idp => "idp",
        }
    }
}

/// A client secret encrypted at rest: the 24-byte nonce followed by the AEAD ciphertext
/// and tag. Only `auth::sso_admin` seals and opens it (with a key of the tier); its
/// `Debug` shows nothing of it, and it is stored as base64.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedSecret(pub Vec<u8>);

impl std::fmt::Debug for SealedSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SealedSecret([redacted])")
    }
}

impl Serialize for SealedSecret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for SealedSecret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD
            .decode(text.as_bytes())
            .map(SealedSecret)
            .map_err(|_| serde::de::Error::custom("sealed secret is not base64"))
    }
}

/// The outcome of a test sign-in against a draft, with the [`SsoVersion::digest`] of the
/// draft it ran against.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum SsoTest {
    /// The sign-in worked: these are the ID token's claims and the roles they give.
    Passed {
        /// Every claim of the validated ID token, for the admin to see.
        claims: Map<String, Value>,
        /// The roles the claims map to (the admin mapping applied).
        roles: Vec<String>,
        /// When (unix seconds).
        at: i64,
        /// Digest of the draft tested.
        draft_digest: String,
    },
    /// The sign-in failed; `error` says why in plain words (never token content).
    Failed {
        /// Why, safe to show.
        error: String,
        /// When (unix seconds).
        at: i64,
        /// Digest of the draft tested.
        draft_digest: String,
    },
}

impl SsoTest {
    /// The digest of the draft this test ran against.
    pub fn draft_digest(&self) -> &str {
        match self {
            SsoTest::Passed { draft_digest, .. } | SsoTest::Failed { draft_digest, .. } => draft_digest,
        }
    }

    /// Whether it passed against the draft whose digest is `digest`.
    pub fn passed_for(&self, digest: &str) -> bool {
        matches!(self, SsoTest::Passed { draft_digest, .. } if draft_digest == digest)
    }
}

/// One saved SSO configuration of a tenant.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SsoVersion {
    /// The tenant it configures.
    pub tenant: String,
    /// 1, 2, 3, ... per tenant, assigned by the store; a draft that replaces a draft keeps
    /// its number, so numbers of saved configurations are never skipped.
    pub version: u64,
    /// Issuer URL (the exact string the ID token's `iss` must equal).
    pub issuer: String,
    /// OAuth client id.
    pub client_id: String,
    /// OAuth client secret, sealed with a key of the tier for this tenant.
    pub client_secret: SealedSecret,
    /// Scopes requested (`openid` is always added on the way out).
    pub scopes: Vec<String>,
    /// Claim whose values become roles, if any.
    pub roles_claim: Option<String>,
    /// The value of the roles claim that makes a user `tenant-admin`, if any.
    pub admin_group: Option<String>,
    /// MFA policy of SSO sign-ins.
    pub mfa: SsoMfa,
    /// SSO only: local passwords refused except for `break_glass` accounts.
    pub enforce: bool,
    /// Local accounts that keep their password when SSO is enforced.
    pub break_glass: Vec<String>,
    /// When saved (unix seconds).
    pub created_at: i64,
    /// Who saved it (`user:<subject>`, as in the audit log).
    pub created_by: String,
    /// Draft, active or superseded.
    pub state: SsoState,
    /// The latest test sign-in against this draft (kept when it becomes active).
    pub test: Option<SsoTest>,
    /// The version that was active when this one was activated: what a roll-back
    /// restores. None for drafts and for the first version activated.
    #[serde(default)]
    pub replaced: Option<u64>,
}

impl SsoVersion {
    /// Hex SHA-256 of what the configuration is: the tenant and every setting, without
    /// its number, who saved it, when, its state or its test. A test records this digest, so
    /// "a passing test of exactly this draft" is a string comparison; any edit changes it.
    pub fn digest(&self) -> String {
        let content = serde_json::json!({
            "tenant": self.tenant,
            "issuer": self.issuer,
            "client_id": self.client_id,
            "client_secret": self.client_secret,
            "scopes": self.scopes,
            "roles_claim": self.roles_claim,
            "admin_group": self.admin_group,
            "mfa": self.mfa,
            "enforce": self.enforce,
            "break_glass": self.break_glass,
        });
        // Built in one fixed order, so the same content always gives the same text.
        let text = content.to_string();
        let mut h = Sha256::new();
        h.update(b"portcullis-sso-version-v1\n");
        h.update(text.as_bytes());
        hex::encode(h.finalize())
    }

    /// Whether its test passed against exactly its current content.
    pub fn has_passing_test(&self) -> bool {
        let digest = self.digest();
        self.test.as_ref().is_some_and(|t| t.passed_for(&digest))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A draft of `tenant` as the service would save it.
    pub(crate) fn draft(tenant: &str) -> SsoVersion {
        SsoVersion {
            tenant: tenant.into(),
            version: 0,
            issuer: "https://idp.example".into(),
            client_id: "gateway".into(),
            client_secret: SealedSecret(vec![1, 2, 3, 4]),
            scopes: vec!["openid".into(), "email".into()],
            roles_claim: Some("groups".into()),
            admin_group: Some("admins".into()),
            mfa: SsoMfa::Required,
            enforce: false,
            break_glass: vec![],
            created_at: 100,
            created_by: "user:alice".into(),
            state: SsoState::Draft,
            test: None,
            replaced: None,
        }
    }

    /// If this broke, an edit of a draft could keep the passing test of the old content
    /// and activate something nobody tested.
    #[test]
    fn every_setting_changes_the_digest_but_bookkeeping_does_not() {
        let base = draft("acme");
        let d = base.digest();
        type Edit = Box<dyn Fn(&mut SsoVersion)>;
        let edits: Vec<Edit> = vec![
            Box::new(|v| v.tenant = "globex".into()),
            Box::new(|v| v.issuer = "https://other.example".into()),
            Box::new(|v| v.client_id = "x".into()),
            Box::new(|v| v.client_secret = SealedSecret(vec![9])),
            Box::new(|v| v.scopes.push("profile".into())),
            Box::new(|v| v.roles_claim = None),
            Box::new(|v| v.admin_group = Some("ops".into())),
            Box::new(|v| v.mfa = SsoMfa::Idp),
            Box::new(|v| v.enforce = true),
            Box::new(|v| v.break_glass.push("root".into())),
        ];
        for (i, edit) in edits.iter().enumerate() {
            let mut v = base.clone();
            edit(&mut v);
            assert_ne!(v.digest(), d, "edit {i}");
        }
        let mut same = base.clone();
        same.version = 7;
        same.replaced = Some(6);
        same.created_at = 999;
        same.created_by = "user:bob".into();
        same.state = SsoState::Active;
        same.test = Some(SsoTest::Failed {
            error: "x".into(),
            at: 1,
            draft_digest: d.clone(),
        });
        assert_eq!(same.digest(), d);
    }

    #[test]
    fn only_a_passing_test_of_the_current_content_counts() {
        let mut v = draft("acme");
        assert!(!v.has_passing_test());
        v.test = Some(SsoTest::Passed {
            claims: Map::new(),
            roles: vec![],
            at: 1,
            draft_digest: v.digest(),
        });
        assert!(v.has_passing_test());
        v.client_id = "changed".into();
        assert!(!v.has_passing_test());
        let failed = SsoTest::Failed {
            error: "no".into(),
            at: 1,
            draft_digest: v.digest(),
        };
        assert!(!failed.passed_for(&v.digest()));
    }

    #[test]
    fn the_sealed_secret_round_trips_as_base64_and_never_shows_in_debug() {
        let v = draft("acme");
        let json = serde_json::to_string(&v).unwrap();
        assert!(json.contains("\"client_secret\":\"AQIDBA==\""), "{json}");
        let back: SsoVersion = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        let debug = format!("{v:?}");
        assert!(
            debug.contains("[redacted]") && !debug.contains("[1, 2, 3, 4]"),
            "{debug}"
        );
    }
}
