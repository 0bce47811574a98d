//! The secrets a new tier or operator needs, made the one way: a tier's cookie key and
//! assertion signing key written as private files that are never overwritten, and
//! operator tokens with the `token_sha256` a tier file lists for them. Used by
//! `portcullis keys init`, `portcullis operator token` and the demo.

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// Why a tier's keys were not written.
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    /// The tier name cannot be a tier's (nor a file name).
    #[error("`{0}` is not a tier name (lowercase letters, digits and '-', at most 32)")]
    BadTierName(String),
    /// A key file is there already; keys are replaced with `keys rotate`, never here.
    #[error("{0} exists already; `portcullis keys rotate` replaces an assertion key")]
    Exists(PathBuf),
    /// The file system refused.
    #[error("cannot write {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    /// The signing key could not be made.
    #[error("cannot make an assertion key: {0}")]
    Key(String),
}

/// A fresh secret token: base64url of 32 random bytes (256 bits).
pub fn random_token() -> String {
    URL_SAFE_NO_PAD.encode(rand::random::<[u8; 32]>())
}

/// What a tier file's `token_sha256` says of `token`: the SHA-256 of its exact bytes
/// (as sent after `Authorization: Bearer `), as 64 lowercase hex digits.
pub fn token_sha256(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// The key files of a tier, relative to the policy directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierKeyFiles {
    /// `secrets/<tier>-cookie.key`.
    pub cookie: String,
    /// `secrets/<tier>-assertion.pem`.
    pub assertion: String,
}

impl TierKeyFiles {
    /// The file names for `tier`.
    pub fn of(tier: &str) -> Self {
        TierKeyFiles {
            cookie: format!("secrets/{tier}-cookie.key"),
            assertion: format!("secrets/{tier}-assertion.pem"),
        }
    }

    /// The tier file's `[keys]` table naming them.
    pub fn keys_table(&self) -> String {
        format!(
            "[keys]\ncookie = \"file:{}\"\nassertion = \"file:{}\"\n",
            self.cookie, self.assertion
        )
    }
}

/// Writes a new cookie key (48 random bytes, base64url) and a new Ed25519 assertion key
/// for `tier` under `policy_dir/secrets/`, readable by the owner only. Refuses, writing
/// nothing, when either file exists.
pub fn init_tier_keys(policy_dir: &Path, tier: &str) -> Result<TierKeyFiles, ProvisionError> {
    if !crate::tenancy::is_name(tier) {
        return Err(ProvisionError::BadTierName(tier.to_string()));
    }
    let files = TierKeyFiles::of(tier);
    let (cookie, assertion) = (policy_dir.join(&files.cookie), policy_dir.join(&files.assertion));
    for path in [&cookie, &assertion] {
        if path.exists() {
            return Err(ProvisionError::Exists(path.clone()));
        }
    }
    let pem = crate::assertion::generate_ed25519_pem().map_err(|e| ProvisionError::Key(e.to_string()))?;
    let secrets = policy_dir.join("secrets");
    std::fs::create_dir_all(&secrets).map_err(|source| ProvisionError::Io { path: secrets, source })?;
    let cookie_key = URL_SAFE_NO_PAD.encode(rand::random::<[u8; 48]>());
    write_new_private(&cookie, cookie_key.as_bytes())?;
    if let Err(e) = write_new_private(&assertion, pem.as_bytes()) {
        // Both or neither: a half-made tier would fail later, far from here.
        let _ = std::fs::remove_file(&cookie);
        return Err(e);
    }
    Ok(files)
}

/// Creates `path` (mode 0600) with `bytes`; fails if it exists.
fn write_new_private(path: &Path, bytes: &[u8]) -> Result<(), ProvisionError> {
    use std::io::Write;
    let io = |source| ProvisionError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => ProvisionError::Exists(path.to_path_buf()),
        _ => io(e),
    })?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(io)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_and_hashed_as_the_tier_file_expects() {
        let token = random_token();
        assert_eq!(token.len(), 43);
        assert_ne!(token, random_token());
        let hash = token_sha256(&token);
        let mut expected = [0u8; 32];
        hex::decode_to_slice(&hash, &mut expected).unwrap();
        assert!(crate::secret::token_matches_sha256(token.as_bytes(), &expected));
        assert_eq!(
            token_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn a_tiers_keys_are_made_once_private_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let files = init_tier_keys(dir.path(), "prod").unwrap();
        assert_eq!(files, TierKeyFiles::of("prod"));
        let pem = std::fs::read_to_string(dir.path().join(&files.assertion)).unwrap();
        assert!(crate::assertion::SigningKey::from_pkcs8_pem(pem.as_bytes()).is_ok());
        let cookie = std::fs::read(dir.path().join(&files.cookie)).unwrap();
        assert_eq!(URL_SAFE_NO_PAD.decode(&cookie).unwrap().len(), 48);
        #[cfg(unix)]
        for file in [&files.cookie, &files.assertion] {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(file)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{file}");
        }
        assert!(matches!(
            init_tier_keys(dir.path(), "prod"),
            Err(ProvisionError::Exists(_))
        ));
        assert_eq!(std::fs::read_to_string(dir.path().join(&files.assertion)).unwrap(), pem);
        assert!(matches!(
            init_tier_keys(dir.path(), "../etc"),
            Err(ProvisionError::BadTierName(_))
        ));
    }

    #[test]
    fn an_existing_assertion_key_stops_the_cookie_key_too() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("secrets")).unwrap();
        std::fs::write(dir.path().join("secrets/staging-assertion.pem"), "kept").unwrap();
        assert!(matches!(
            init_tier_keys(dir.path(), "staging"),
            Err(ProvisionError::Exists(_))
        ));
        assert!(!dir.path().join("secrets/staging-cookie.key").exists());
    }
}
