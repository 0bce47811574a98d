//! Who a user is within a tenant: the pair (identity provider, subject). A local account
//! and an SSO account with the same `sub` are two users everywhere: sessions, login
//! history, TOTP enrolment and replay guard, throttling and kill switches.
//!
//! The store keeps one string per user, the *account key*:
//! - a local account: its user name, as it always was (`ivan`);
//! - an SSO account: `sso|<issuer id>|<sub>`, where the issuer id is the first 12 hex
//!   digits of SHA-256 of the issuer URL. Local user names cannot contain `|`, so the
//!   two kinds never meet, and the `sub` after the second `|` comes back unchanged.
//!
//! The subject rule lives here too, since a user that cannot be named later (in a kill
//! switch, a log line or a header) must not be let in: 1 to 256 characters, none of them
//! a control character.
//!
//! Pure: no I/O, no store, no HTTP.

use sha2::{Digest, Sha256};

/// The role of a tenant's admins: it opens the tenant admin area and its API, and an
/// IdP group the SSO wizard names maps to it.
pub const TENANT_ADMIN_ROLE: &str = "tenant-admin";

/// The `idp` of a local account, in assertions and on the admin API.
pub const LOCAL_IDP: &str = "local";

/// On the admin API and CLI, `sso` names the tenant's configured identity provider.
pub const TENANT_SSO_IDP: &str = "sso";

/// Longest subject accepted, in characters (a kill switch must be able to name it).
pub const SUBJECT_MAX_CHARS: usize = 256;

/// Longest account key: `sso|`, 12 hex digits, `|`, then the subject.
pub const KEY_MAX_CHARS: usize = 17 + SUBJECT_MAX_CHARS;

/// The account key of (`idp`, `sub`): the user name for [`LOCAL_IDP`], else
/// `sso|<issuer id>|<sub>`.
pub fn key(idp: &str, sub: &str) -> String {
    if idp == LOCAL_IDP {
        return sub.to_string();
    }
    let issuer_id = hex::encode(&Sha256::digest(idp.as_bytes())[..6]);
    format!("sso|{issuer_id}|{sub}")
}

/// The subject inside an account key: the `sub` of an SSO key, the whole key otherwise.
pub fn sub_of(key: &str) -> &str {
    match key.strip_prefix("sso|").and_then(|rest| rest.split_once('|')) {
        Some((_, sub)) => sub,
        None => key,
    }
}

/// Whether a key names an SSO account (as opposed to a local one).
pub fn is_sso(key: &str) -> bool {
    key.starts_with("sso|")
}

/// Why a subject is refused; safe to show (never repeats the subject).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    /// Nothing to name the user by.
    #[error("subject is empty")]
    Empty,
    /// Longer than [`SUBJECT_MAX_CHARS`].
    #[error("subject is longer than 256 characters")]
    TooLong,
    /// CR, LF, NUL and friends split log lines and headers.
    #[error("subject contains a control character")]
    ControlCharacter,
}

/// The one subject rule: 1 to 256 characters, no control character.
pub fn check_subject(sub: &str) -> Result<(), SubjectError> {
    if sub.is_empty() {
        return Err(SubjectError::Empty);
    }
    if sub.chars().count() > SUBJECT_MAX_CHARS {
        return Err(SubjectError::TooLong);
    }
    if sub.chars().any(char::is_control) {
        return Err(SubjectError::ControlCharacter);
    }
    Ok(())
}

/// Why a local user name is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LocalNameError {
    /// The name breaks the subject rule.
    #[error("user name must be 1 to 256 printable characters")]
    Subject(#[from] SubjectError),
    /// `|` is what keeps local names apart from SSO account keys.
    #[error("user name must not contain '|'")]
    Bar,
}

/// The rule for local user names: the subject rule, and no `|`, so a local name can
/// never be mistaken for an SSO account key.
pub fn check_local_name(name: &str) -> Result<(), LocalNameError> {
    check_subject(name)?;
    if name.contains('|') {
        return Err(LocalNameError::Bar);
    }
    Ok(())
}

/// Why an account could not be named on the admin API, CLI or tenant admin page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The subject breaks the subject rule.
    #[error("account subject must be 1 to 256 printable characters")]
    Subject(#[from] SubjectError),
    /// `idp=sso` on a tenant without single sign-on.
    #[error("this tenant has no single sign-on, so `idp=sso` names no account")]
    NoSso,
    /// Neither `local`, `sso` nor an issuer URL.
    #[error("idp must be `local`, `sso` or the identity provider's issuer URL")]
    BadIdp,
}

/// The account key an operator or tenant admin means by `sub` and an optional `idp`:
/// absent or `local` is the local account, `sso` the account at the tenant's configured
/// identity provider (`tenant_issuer`), and an `http(s)://` URL the account at that issuer.
pub fn named(idp: Option<&str>, sub: &str, tenant_issuer: Option<&str>) -> Result<String, NameError> {
    check_subject(sub)?;
    let issuer = match idp.map(str::trim) {
        None | Some("") | Some(LOCAL_IDP) => return Ok(key(LOCAL_IDP, sub)),
        Some(TENANT_SSO_IDP) => tenant_issuer.ok_or(NameError::NoSso)?,
        Some(url)
            if (url.starts_with("https://") || url.starts_with("http://")) && !url.chars().any(char::is_control) =>
        {
            url
        }
        Some(_) => return Err(NameError::BadIdp),
    };
    Ok(key(issuer, sub))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_and_sso_accounts_of_one_sub_have_different_keys() {
        let local = key(LOCAL_IDP, "ivan");
        let sso = key("https://idp.example", "ivan");
        let other_idp = key("https://other.example", "ivan");
        assert_eq!(local, "ivan");
        assert_ne!(local, sso);
        assert_ne!(sso, other_idp);
        assert!(sso.starts_with("sso|") && sso.ends_with("|ivan"), "{sso}");
    }

    #[test]
    fn the_longest_key_fits_the_limit() {
        let longest = key("https://idp.example", &"s".repeat(SUBJECT_MAX_CHARS));
        assert_eq!(longest.chars().count(), KEY_MAX_CHARS);
    }

    #[test]
    fn the_sub_comes_back_from_every_key() {
        for sub in ["ivan", "a|b", "sso|x", "248289761001", "ü@example.com"] {
            assert_eq!(sub_of(&key("https://idp.example", sub)), sub);
            assert!(is_sso(&key("https://idp.example", sub)));
        }
        assert_eq!(sub_of("ivan"), "ivan");
        assert!(!is_sso("ivan"));
    }

    #[test]
    fn subjects_that_cannot_be_named_later_are_refused() {
        assert_eq!(check_subject(""), Err(SubjectError::Empty));
        assert_eq!(check_subject(&"a".repeat(257)), Err(SubjectError::TooLong));
        assert_eq!(check_subject(&"ü".repeat(256)), Ok(()));
        assert_eq!(check_subject("a\r\nb"), Err(SubjectError::ControlCharacter));
        assert_eq!(check_subject("a\u{85}b"), Err(SubjectError::ControlCharacter));
        assert_eq!(check_subject("ivan"), Ok(()));
    }

    #[test]
    fn local_names_never_look_like_sso_keys() {
        assert_eq!(check_local_name("ivan"), Ok(()));
        assert_eq!(
            check_local_name(&key("https://idp.example", "ivan")),
            Err(LocalNameError::Bar)
        );
        assert_eq!(check_local_name(""), Err(LocalNameError::Subject(SubjectError::Empty)));
    }

    #[test]
    fn operators_name_accounts_by_sub_and_idp() {
        let issuer = Some("https://idp.example");
        assert_eq!(named(None, "ivan", issuer), Ok("ivan".to_string()));
        assert_eq!(named(Some("local"), "ivan", issuer), Ok("ivan".to_string()));
        assert_eq!(
            named(Some("sso"), "ivan", issuer),
            Ok(key("https://idp.example", "ivan"))
        );
        assert_eq!(
            named(Some("https://other.example"), "ivan", issuer),
            Ok(key("https://other.example", "ivan"))
        );
        assert_eq!(named(Some("sso"), "ivan", None), Err(NameError::NoSso));
        assert_eq!(named(Some("ldap"), "ivan", issuer), Err(NameError::BadIdp));
        assert_eq!(
            named(None, "a\r\nb", issuer),
            Err(NameError::Subject(SubjectError::ControlCharacter))
        );
        assert_eq!(named(None, "", issuer), Err(NameError::Subject(SubjectError::Empty)));
    }
}
