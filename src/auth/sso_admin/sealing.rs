//! Encryption at rest of the client secrets tenants enter in the SSO wizard:
//! XChaCha20-Poly1305 with a fresh random 24-byte nonce per secret, under a key derived
//! with HKDF-SHA256 from the tier's cookie key. The associated data names the tier and the
//! tenant, so a sealed secret copied into another tenant's record (or another tier's
//! store) does not open. Owns nothing else; it never logs and its errors carry no bytes.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::records::SealedSecret;
use crate::secret::SecretBytes;

/// HKDF `info` of the key: names the purpose, so this key is never any other key of the tier.
const KEY_INFO: &[u8] = b"portcullis sso client secret v1";

/// Bytes of an XChaCha20 nonce.
const NONCE_LEN: usize = 24;

/// Why a secret could not be sealed or opened; never says more than that.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SealError {
    /// The sealed secret is not for this tier and tenant, or was altered or cut.
    #[error("the stored client secret cannot be decrypted (altered, or sealed for another tenant or tier)")]
    Open,
    /// The key could not be derived or the cipher failed (should not happen).
    #[error("the client secret cannot be encrypted")]
    Seal,
}

/// The sealing key of one tier, derived from its cookie key.
pub struct SecretSealer {
    /// The tier the key belongs to; part of every secret's associated data.
    tier: String,
    /// The derived 256-bit key.
    cipher: XChaCha20Poly1305,
}

impl std::fmt::Debug for SecretSealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretSealer")
            .field("tier", &self.tier)
            .field("key", &"[redacted]")
            .finish()
    }
}

impl SecretSealer {
    /// The sealer of `tier`, keyed from the tier's cookie key (`keys.cookie`).
    pub fn new(tier: &str, cookie_key: &SecretBytes) -> Result<Self, SealError> {
        let mut key = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, cookie_key.expose_secret())
            .expand(KEY_INFO, key.as_mut())
            .map_err(|_| SealError::Seal)?;
        let cipher = XChaCha20Poly1305::new_from_slice(key.as_ref()).map_err(|_| SealError::Seal)?;
        Ok(SecretSealer {
            tier: tier.to_string(),
            cipher,
        })
    }

    /// Seals `secret` for `tenant` of this tier, with a fresh random nonce.
    pub fn seal(&self, tenant: &str, secret: &[u8]) -> Result<SealedSecret, SealError> {
        let nonce: [u8; NONCE_LEN] = rand::random();
        let aad = self.aad(tenant);
        let ciphertext = self
            .cipher
            .encrypt(XNonce::from_slice(&nonce), Payload { msg: secret, aad: &aad })
            .map_err(|_| SealError::Seal)?;
        let mut out = Vec::with_capacity(NONCE_LEN + ciphertext.len());
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&ciphertext);
        Ok(SealedSecret(out))
    }

    /// Opens a secret sealed for `tenant` of this tier.
    pub fn open(&self, tenant: &str, sealed: &SealedSecret) -> Result<SecretBytes, SealError> {
        let (nonce, ciphertext) = sealed.0.split_at_checked(NONCE_LEN).ok_or(SealError::Open)?;
        let aad = self.aad(tenant);
        let plain = self
            .cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::Open)?;
        Ok(SecretBytes::new(plain))
    }

    /// Associated data: purpose, tier and tenant, each on its own line (names never hold
    /// a newline, so no two pairs give the same bytes).
    fn aad(&self, tenant: &str) -> Vec<u8> {
        format!("portcullis sso client secret v1\n{}\n{tenant}", self.tier).into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(b: u8) -> SecretBytes {
        SecretBytes::new(vec![b; 32])
    }

    #[test]
    fn a_sealed_secret_opens_for_its_tier_and_tenant_only() {
        let prod = SecretSealer::new("prod", &key(1)).unwrap();
        let sealed = prod.seal("acme", b"s3cret-value").unwrap();
        assert_eq!(prod.open("acme", &sealed).unwrap().expose_secret(), b"s3cret-value");
        assert_eq!(prod.open("globex", &sealed).err(), Some(SealError::Open));
        // Same cookie key, other tier name: still refused (the tier is bound).
        let staging = SecretSealer::new("staging", &key(1)).unwrap();
        assert!(staging.open("acme", &sealed).is_err());
        // Same tier name, other key.
        let other = SecretSealer::new("prod", &key(2)).unwrap();
        assert!(other.open("acme", &sealed).is_err());
    }

    #[test]
    fn tampering_is_detected_and_nonces_are_fresh() {
        let sealer = SecretSealer::new("prod", &key(1)).unwrap();
        let sealed = sealer.seal("acme", b"s3cret-value").unwrap();
        assert!(
            !sealed.0.windows(12).any(|w| w == b"s3cret-value"),
            "ciphertext holds the plaintext"
        );
        for i in [0, NONCE_LEN, sealed.0.len() - 1] {
            let mut bad = sealed.clone();
            bad.0[i] ^= 1;
            assert_eq!(sealer.open("acme", &bad).err(), Some(SealError::Open), "byte {i}");
        }
        let cut = SealedSecret(sealed.0[..NONCE_LEN - 1].to_vec());
        assert_eq!(sealer.open("acme", &cut).err(), Some(SealError::Open));
        let again = sealer.seal("acme", b"s3cret-value").unwrap();
        assert_ne!(again.0[..NONCE_LEN], sealed.0[..NONCE_LEN], "a nonce was reused");
    }

    #[test]
    fn neither_the_key_nor_the_secret_shows_in_debug() {
        let sealer =
            SecretSealer::new("prod", &SecretBytes::new(b"cookie-key-material-0123456789ab".to_vec())).unwrap();
        let sealed = sealer.seal("acme", b"s3cret-value").unwrap();
        let opened = sealer.open("acme", &sealed).unwrap();
        let debug = format!("{sealer:?} {sealed:?} {opened:?}");
        assert!(!debug.contains("s3cret") && !debug.contains("cookie-key"), "{debug}");
    }
}
