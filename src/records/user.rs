//! Local account records ([`UserRecord`]) and sign-in history ([`LoginEvent`]). Plain
//! data; depends only on [`crate::account`].

use std::fmt;

/// Longest user agent kept in login history; clients choose this header freely.
pub const USER_AGENT_MAX_CHARS: usize = 256;

/// Longest subject kept in login history; attackers choose attempted names freely. Long
/// enough for every account key, so the history of a real account is never cut off from it.
pub const HISTORY_SUBJECT_MAX_CHARS: usize = crate::account::KEY_MAX_CHARS;

/// A local account (tenants without SSO, break-glass admins).
#[derive(Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Tenant the account belongs to; user names are unique per tenant only.
    pub tenant: String,
    /// Login name and session subject.
    pub username: String,
    /// Name shown on pages.
    pub display_name: String,
    /// Roles given to the user's sessions.
    pub roles: Vec<String>,
    /// argon2id PHC string; secret-derived, never logged.
    pub password_hash: String,
    /// Base32 TOTP secret once enrolled; secret, never logged.
    pub totp_secret: Option<String>,
    /// When TOTP enrolment finished; `None` means the next login must enrol.
    pub totp_enrolled_at: Option<i64>,
    /// SHA-256 of each unused recovery code, in issue order; each works once.
    pub recovery_code_hashes: Vec<[u8; 32]>,
    /// A disabled account cannot sign in (its sessions are revoked separately).
    pub disabled: bool,
    /// When the account was created.
    pub created_at: i64,
    /// When the password last changed (sessions older than this are suspect).
    pub password_changed_at: i64,
}

impl fmt::Debug for UserRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UserRecord")
            .field("tenant", &self.tenant)
            .field("username", &self.username)
            .field("display_name", &self.display_name)
            .field("roles", &self.roles)
            .field("password_hash", &"[redacted]")
            .field("totp_secret", &self.totp_secret.as_ref().map(|_| "[redacted]"))
            .field("totp_enrolled_at", &self.totp_enrolled_at)
            .field("recovery_codes_left", &self.recovery_code_hashes.len())
            .field("disabled", &self.disabled)
            .field("created_at", &self.created_at)
            .field("password_changed_at", &self.password_changed_at)
            .finish()
    }
}

/// One sign-in attempt, successful or not, shown to the user in their login history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginEvent {
    /// Assigned by the store on `AccountStore::record_login` (the value passed in is
    /// ignored); increases with every event of the tier, so it pages history stably.
    pub seq: i64,
    /// Tenant the attempt was made on.
    pub tenant: String,
    /// The account key (see [`crate::account`]); for unknown users the attempted name,
    /// see [`LoginEvent::attempted_name`].
    pub subject: String,
    /// When (unix seconds).
    pub time: i64,
    /// Client IP.
    pub ip: String,
    /// Client user agent, cut to [`USER_AGENT_MAX_CHARS`] by the store.
    pub user_agent: String,
    /// `password`, `totp`, `recovery` or `oidc`.
    pub method: String,
    /// `success` or `failure`.
    pub outcome: String,
    /// Why it failed (`bad_password`, `bad_code`, `unknown_user`, `locked`, `throttled`,
    /// `breaker`, `idp_error`, ...); `None` on success.
    pub reason: Option<String>,
}

impl LoginEvent {
    /// The subject to record for a name that matched no user: cut to
    /// [`HISTORY_SUBJECT_MAX_CHARS`] so an attacker cannot store megabytes per attempt.
    pub fn attempted_name(name: &str) -> String {
        truncate_chars(name, HISTORY_SUBJECT_MAX_CHARS)
    }
}

/// `s` cut to at most `max` characters (not bytes), for fields clients choose freely.
pub fn truncate_chars(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((cut, _)) => s[..cut].to_string(),
        None => s.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_secrets() {
        let u = UserRecord {
            tenant: "acme".into(),
            username: "alice".into(),
            display_name: "Alice".into(),
            roles: vec![],
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
            totp_secret: Some("JBSWY3DPEHPK3PXP".into()),
            totp_enrolled_at: Some(1),
            recovery_code_hashes: vec![[0xab; 32]],
            disabled: false,
            created_at: 1,
            password_changed_at: 1,
        };
        let d = format!("{u:?}");
        assert!(
            !d.contains("argon2id") && !d.contains("JBSWY3DPEHPK3PXP") && !d.contains("abab"),
            "{d}"
        );
    }

    #[test]
    fn truncation_counts_characters_not_bytes() {
        assert_eq!(truncate_chars("héllo", 2), "hé");
        assert_eq!(truncate_chars("abc", 10), "abc");
        assert_eq!(
            LoginEvent::attempted_name(&"x".repeat(500)).len(),
            HISTORY_SUBJECT_MAX_CHARS
        );
    }
}
