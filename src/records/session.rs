//! Session records: one signed-in session ([`SessionRecord`]), why it ended
//! ([`Revocation`]), and the ids made from its token. Plain data; depends only on
//! [`crate::account`].

use std::fmt;

use sha2::{Digest, Sha256};

/// Why and by whom a session was ended; shown to the user and kept for the audit trail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Revocation {
    /// When it was revoked (unix seconds).
    pub at: i64,
    /// Who revoked it: a subject, `operator:<name>`, `breaker`, `idp` (back-channel logout), ...
    pub by: String,
    /// Why, in a few words (`logout`, `password_changed`, `kill_switch`, ...).
    pub reason: String,
}

/// One signed-in session. The token itself is never stored: only `id_hash = SHA-256(token)`,
/// so a stolen store or backup cannot be replayed as cookies.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    /// SHA-256 of the session token; the store's key.
    pub id_hash: [u8; 32],
    /// Tenant the session belongs to; a session is only valid on its tenant's hosts.
    pub tenant: String,
    /// Tier of the tenant; a session is never accepted in another tier.
    pub tier: String,
    /// The account key (see [`crate::account`]): the local user name, or
    /// `sso|<issuer id>|<sub>` for an SSO account, so that a local account and an SSO
    /// account with the same `sub` never share sessions, history or kill switches.
    pub subject: String,
    /// Who vouched for the user: [`crate::account::LOCAL_IDP`] or the IdP's issuer URL;
    /// asserted to the upstream as `idp`, so (`idp`, `sub`) names the user there too.
    pub idp: String,
    /// Name shown on pages and in the session list.
    pub display_name: String,
    /// Roles asserted to the upstream and used by policy (`tenant-admin`, ...).
    pub roles: Vec<String>,
    /// How the user signed in: `password` or `oidc`.
    pub auth_method: String,
    /// Authentication methods references (`pwd`, `otp`, ...), asserted to the upstream.
    pub amr: Vec<String>,
    /// When MFA last succeeded; step-up and password change ask for a fresh one.
    pub mfa_at: Option<i64>,
    /// When the session was created (sorting, display).
    pub created_at: i64,
    /// Last request seen (display, idle timeout).
    pub last_seen: i64,
    /// The session ends at this time unless it is used again.
    pub idle_expires_at: i64,
    /// The session ends at this time whatever happens.
    pub absolute_expires_at: i64,
    /// Client IP at sign-in, shown in the session list.
    pub ip: String,
    /// Client user agent at sign-in, shown in the session list.
    pub user_agent: String,
    /// Per-session random CSRF secret; forms must echo a value derived from it.
    pub csrf_token: String,
    /// The IdP's session id (`sid`), so back-channel logout can find the session.
    pub sso_sid: Option<String>,
    /// Set once the session was ended; a revoked session is never served again.
    pub revoked: Option<Revocation>,
}

impl SessionRecord {
    /// Whether the session may serve a request at `now`: the single place that rule lives.
    pub fn is_live(&self, now: i64) -> bool {
        self.revoked.is_none() && now < self.idle_expires_at && now < self.absolute_expires_at
    }

    /// The id shown to users and used in URLs (`DELETE /sessions/{id}`): short enough to
    /// read, and useless as a credential since it is a prefix of a hash of the token.
    pub fn public_id(&self) -> String {
        public_id_of(&self.id_hash)
    }

    /// The user's id at their identity provider: the local user name or the IdP's `sub`
    /// (what the upstream and the user see; [`SessionRecord::subject`] is the store's key).
    pub fn sub(&self) -> &str {
        crate::account::sub_of(&self.subject)
    }
}

impl fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SessionRecord")
            .field("id", &self.public_id())
            .field("tenant", &self.tenant)
            .field("tier", &self.tier)
            .field("subject", &self.subject)
            .field("idp", &self.idp)
            .field("display_name", &self.display_name)
            .field("roles", &self.roles)
            .field("auth_method", &self.auth_method)
            .field("amr", &self.amr)
            .field("mfa_at", &self.mfa_at)
            .field("created_at", &self.created_at)
            .field("last_seen", &self.last_seen)
            .field("idle_expires_at", &self.idle_expires_at)
            .field("absolute_expires_at", &self.absolute_expires_at)
            .field("ip", &self.ip)
            .field("user_agent", &self.user_agent)
            .field("csrf_token", &"[redacted]")
            .field("sso_sid", &self.sso_sid)
            .field("revoked", &self.revoked)
            .finish()
    }
}

/// The store key of a session token: SHA-256 of the token bytes as sent in the cookie.
pub fn session_id_hash(token: &[u8]) -> [u8; 32] {
    Sha256::digest(token).into()
}

fn public_id_of(id_hash: &[u8; 32]) -> String {
    let mut id = hex::encode(id_hash);
    id.truncate(16);
    id
}

/// Whether `s` is spelled as a [`SessionRecord::public_id`] (16 lowercase hex digits).
pub fn is_public_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session() -> SessionRecord {
        SessionRecord {
            id_hash: session_id_hash(b"token"),
            tenant: "acme".into(),
            tier: "prod".into(),
            subject: "alice".into(),
            idp: crate::account::LOCAL_IDP.to_string(),
            display_name: "Alice".into(),
            roles: vec![],
            auth_method: "password".into(),
            amr: vec!["pwd".into(), "otp".into()],
            mfa_at: Some(10),
            created_at: 10,
            last_seen: 10,
            idle_expires_at: 100,
            absolute_expires_at: 200,
            ip: "192.0.2.1".into(),
            user_agent: "ua".into(),
            csrf_token: "csrf-secret-value".into(),
            sso_sid: None,
            revoked: None,
        }
    }

    #[test]
    fn liveness_needs_both_expiries_and_no_revocation() {
        let mut s = session();
        assert!(s.is_live(99));
        assert!(!s.is_live(100), "idle expiry is exclusive");
        s.idle_expires_at = 300;
        assert!(!s.is_live(200), "absolute expiry wins over a later idle expiry");
        s.revoked = Some(Revocation {
            at: 50,
            by: "alice".into(),
            reason: "logout".into(),
        });
        assert!(!s.is_live(60));
    }

    #[test]
    fn public_id_is_a_16_hex_prefix_of_the_hash() {
        let s = session();
        assert_eq!(s.public_id(), hex::encode(s.id_hash)[..16]);
        assert!(is_public_id(&s.public_id()));
        assert!(!is_public_id("ABCDEF0123456789"));
        assert!(!is_public_id("0123"));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let s = format!("{:?}", session());
        assert!(!s.contains("csrf-secret-value"));
        assert!(
            !s.contains(&hex::encode(session().id_hash)),
            "only the public id prefix is printed"
        );
    }
}
