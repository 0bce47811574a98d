//! Secret values and references to them.
//!
//! Owns the newtypes that keep key material and tokens out of logs: `Debug` prints
//! `[redacted]`, nothing here implements `Serialize`, and bytes are zeroized on drop
//! ([`SecretBytes`] for raw material, [`PrivateKey`] for a parsed TLS private key).
//! Policy files name secrets by reference (`env:NAME`, `file:PATH`, `inline:VALUE`);
//! this module parses and resolves those references. It must not log anything.

use std::fmt;
use std::path::Path;

use rustls_pki_types::PrivateKeyDer;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Where a secret comes from, as written in a policy file.
#[derive(Clone, PartialEq, Eq)]
pub enum SecretRef {
    /// `env:NAME`: read from the process environment at load time.
    Env(String),
    /// `file:PATH`: read from a file; relative paths are relative to the policy directory.
    File(String),
    /// `inline:VALUE`: the value itself; refused in production tiers.
    Inline(Zeroizing<String>),
}

impl fmt::Debug for SecretRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretRef::Env(name) => write!(f, "env:{name}"),
            SecretRef::File(path) => write!(f, "file:{path}"),
            SecretRef::Inline(_) => f.write_str("inline:[redacted]"),
        }
    }
}

/// Source of environment variables, so tests can pass a map instead of the process env.
pub trait Env: Send + Sync {
    /// The value of `name`, or None when unset.
    fn var(&self, name: &str) -> Option<String>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl Env for std::collections::HashMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

impl SecretRef {
    /// Parses `env:NAME`, `file:PATH` or `inline:VALUE`; anything else is an error so a
    /// typo never silently becomes an inline secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        if let Some(name) = text.strip_prefix("env:") {
            let valid = !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !valid {
                return Err(format!("`env:{name}` is not a valid environment variable name"));
            }
            Ok(SecretRef::Env(name.to_string()))
        } else if let Some(path) = text.strip_prefix("file:") {
            if path.is_empty() {
                return Err("`file:` needs a path".to_string());
            }
            Ok(SecretRef::File(path.to_string()))
        } else if let Some(value) = text.strip_prefix("inline:") {
            if value.is_empty() {
                return Err("`inline:` secret is empty".to_string());
            }
            Ok(SecretRef::Inline(Zeroizing::new(value.to_string())))
        } else {
            Err("a secret must be a reference: `env:NAME`, `file:PATH` or `inline:VALUE` (inline only in non-production tiers)".to_string())
        }
    }

    /// True for `inline:` values, which production tiers refuse.
    pub fn is_inline(&self) -> bool {
        matches!(self, SecretRef::Inline(_))
    }

    /// Reads the secret. Errors name the reference, never the value.
    pub fn resolve(&self, base_dir: &Path, env: &dyn Env) -> Result<SecretBytes, String> {
        match self {
            SecretRef::Env(name) => match env.var(name) {
                Some(value) if !value.trim().is_empty() => Ok(SecretBytes::new(value.trim().as_bytes().to_vec())),
                Some(_) => Err(format!("environment variable {name} is empty")),
                None => Err(format!("environment variable {name} is not set")),
            },
            SecretRef::File(path) => {
                let full = base_dir.join(path);
                match std::fs::read(&full) {
                    Ok(bytes) => {
                        let bytes = Zeroizing::new(bytes);
                        let trimmed = trim_ascii(&bytes);
                        if trimmed.is_empty() {
                            Err(format!("secret file {} is empty", full.display()))
                        } else {
                            Ok(SecretBytes::new(trimmed.to_vec()))
                        }
                    }
                    Err(e) => Err(format!("cannot read secret file {}: {e}", full.display())),
                }
            }
            SecretRef::Inline(value) => Ok(SecretBytes::new(value.as_bytes().to_vec())),
        }
    }
}

fn trim_ascii(bytes: &[u8]) -> &[u8] {
    bytes.trim_ascii()
}

/// Key material or a token. Zeroized on drop; never printed.
#[derive(Clone)]
pub struct SecretBytes(Zeroizing<Vec<u8>>);

impl SecretBytes {
    /// Wraps bytes that must stay secret.
    pub fn new(bytes: Vec<u8>) -> Self {
        SecretBytes(Zeroizing::new(bytes))
    }

    /// The raw bytes, only at the point of use.
    pub fn expose_secret(&self) -> &[u8] {
        &self.0
    }

    /// SHA-256 of the material: lets `check` spot the same secret in two tiers without
    /// keeping or printing the secret itself.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.as_slice()).into()
    }
}

impl fmt::Debug for SecretBytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// A TLS private key (PKCS#1, SEC1 or PKCS#8 DER), parsed from PEM once when the policy
/// is loaded. Zeroized on drop; never printed.
pub struct PrivateKey(Zeroizing<PrivateKeyDer<'static>>);

impl PrivateKey {
    /// Wraps a parsed key that must stay secret.
    pub fn new(key: PrivateKeyDer<'static>) -> Self {
        PrivateKey(Zeroizing::new(key))
    }

    /// The key, only at the point of use (rustls takes its own copy: `clone_key()`).
    pub fn expose_secret(&self) -> &PrivateKeyDer<'static> {
        &self.0
    }

    /// SHA-256 of the key's DER: tells two keys apart without keeping or printing either.
    pub fn fingerprint(&self) -> [u8; 32] {
        Sha256::digest(self.0.secret_der()).into()
    }
}

impl fmt::Debug for PrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// Compares a presented bearer token with a stored SHA-256 in constant time.
pub fn token_matches_sha256(token: &[u8], expected_sha256: &[u8; 32]) -> bool {
    let actual: [u8; 32] = Sha256::digest(token).into();
    actual.ct_eq(expected_sha256).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn parses_the_three_reference_kinds_and_refuses_bare_values() {
        assert_eq!(SecretRef::parse("env:KEY_1"), Ok(SecretRef::Env("KEY_1".into())));
        assert_eq!(SecretRef::parse("file:a/b"), Ok(SecretRef::File("a/b".into())));
        assert!(SecretRef::parse("inline:x").is_ok_and(|s| s.is_inline()));
        assert!(SecretRef::parse("hunter2").is_err());
        assert!(SecretRef::parse("env:BAD-NAME").is_err());
        assert!(SecretRef::parse("inline:").is_err());
    }

    #[test]
    fn debug_never_shows_inline_values_or_bytes() {
        let inline = SecretRef::parse("inline:topsecretvalue").unwrap();
        assert!(!format!("{inline:?}").contains("topsecretvalue"));
        let bytes = SecretBytes::new(b"topsecretvalue".to_vec());
        assert_eq!(format!("{bytes:?}"), "[redacted]");
        let key = PrivateKey::new(rustls_pki_types::PrivatePkcs8KeyDer::from(b"topsecretvalue".to_vec()).into());
        assert_eq!(format!("{key:?}"), "[redacted]");
    }

    #[test]
    fn resolves_env_and_reports_missing_without_value() {
        let mut env = HashMap::new();
        env.insert("K".to_string(), " v1 \n".to_string());
        let dir = Path::new(".");
        let got = SecretRef::Env("K".into()).resolve(dir, &env).unwrap();
        assert_eq!(got.expose_secret(), b"v1");
        let err = SecretRef::Env("MISSING".into()).resolve(dir, &env).unwrap_err();
        assert!(err.contains("MISSING"));
    }

    #[test]
    fn token_comparison_matches_only_the_right_token() {
        let hash: [u8; 32] = Sha256::digest(b"tok").into();
        assert!(token_matches_sha256(b"tok", &hash));
        assert!(!token_matches_sha256(b"tok2", &hash));
    }
}
