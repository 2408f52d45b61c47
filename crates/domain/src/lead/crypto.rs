//! Authenticated encryption of a lead's personal data (XChaCha20-Poly1305, from
//! the RustCrypto `chacha20poly1305` crate).
//!
//! Pure functions: the caller supplies the key and the nonce, so this module does
//! no I/O and tests are deterministic. Nonces are 192-bit, so drawing them at
//! random (as the command side does) has no practical collision risk, and a
//! per-lead key encrypts only a handful of messages over the lead's life anyway.
//!
//! The associated data binds every ciphertext to the lead and to what it is (its
//! purpose), so a ciphertext cannot be moved to another lead or another event
//! without failing authentication.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{Key, XChaCha20Poly1305, XNonce};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use zeroize::Zeroize;

pub const KEY_LEN: usize = 32;
pub const NONCE_LEN: usize = 24;
/// The algorithm name written into every sealed value, so a future change of
/// algorithm is visible in the data rather than guessed.
pub const ALGORITHM: &str = "XChaCha20-Poly1305";

/// A 256-bit secret key. Wiped from memory when dropped; never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretKey([u8; KEY_LEN]);

/// The per-lead data key: it encrypts one lead's personal data in every event of
/// its stream, lives outside the log, and is destroyed when the lead is deleted.
pub type LeadKey = SecretKey;

impl SecretKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(bytes)
    }

    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        <[u8; KEY_LEN]>::try_from(bytes).ok().map(Self)
    }

    pub fn as_bytes(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    fn cipher(&self) -> XChaCha20Poly1305 {
        XChaCha20Poly1305::new(Key::from_slice(&self.0))
    }
}

impl Drop for SecretKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretKey(..)")
    }
}

/// A ciphertext with its nonce. Serialized as
/// `{"alg": "XChaCha20-Poly1305", "nonce": <base64>, "ciphertext": <base64>}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CryptoError {
    /// Wrong key, wrong associated data, or tampered ciphertext: AEAD
    /// authentication failed, nothing was decrypted.
    #[error("cannot decrypt: authentication failed (wrong key or tampered data)")]
    Authentication,
}

/// Encrypts `plaintext` under `key`, authenticating `aad` too.
pub fn seal(key: &SecretKey, nonce: [u8; NONCE_LEN], aad: &[u8], plaintext: &[u8]) -> Sealed {
    let ciphertext = key
        .cipher()
        .encrypt(XNonce::from_slice(&nonce), Payload { msg: plaintext, aad })
        .expect("XChaCha20-Poly1305 encryption cannot fail for in-memory buffers");
    Sealed { nonce, ciphertext }
}

/// Decrypts and authenticates a value made by [`seal`] with the same key and `aad`.
pub fn open(key: &SecretKey, sealed: &Sealed, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    key.cipher()
        .decrypt(
            XNonce::from_slice(&sealed.nonce),
            Payload {
                msg: &sealed.ciphertext,
                aad,
            },
        )
        .map_err(|_| CryptoError::Authentication)
}

#[derive(Serialize, Deserialize)]
struct SealedRepr {
    alg: String,
    nonce: String,
    ciphertext: String,
}

impl Serialize for Sealed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        SealedRepr {
            alg: ALGORITHM.to_owned(),
            nonce: BASE64.encode(self.nonce),
            ciphertext: BASE64.encode(&self.ciphertext),
        }
        .serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for Sealed {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        let repr = SealedRepr::deserialize(deserializer)?;
        if repr.alg != ALGORITHM {
            return Err(D::Error::custom(format!("unsupported algorithm {:?}", repr.alg)));
        }
        let nonce = BASE64
            .decode(&repr.nonce)
            .map_err(D::Error::custom)?
            .try_into()
            .map_err(|_| D::Error::custom("nonce must be 24 bytes"))?;
        let ciphertext = BASE64.decode(&repr.ciphertext).map_err(D::Error::custom)?;
        Ok(Sealed { nonce, ciphertext })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_values_open_only_with_the_same_key_and_associated_data() {
        let key = SecretKey::from_bytes([7; KEY_LEN]);
        let sealed = seal(&key, [1; NONCE_LEN], b"lead-1", b"john@example.com");
        assert!(!sealed.ciphertext.windows(4).any(|w| w == b"john".as_slice()));
        assert_eq!(open(&key, &sealed, b"lead-1").unwrap(), b"john@example.com");
        assert_eq!(
            open(&SecretKey::from_bytes([8; KEY_LEN]), &sealed, b"lead-1"),
            Err(CryptoError::Authentication)
        );
        assert_eq!(open(&key, &sealed, b"lead-2"), Err(CryptoError::Authentication));
        let mut tampered = sealed.clone();
        tampered.ciphertext[0] ^= 1;
        assert_eq!(open(&key, &tampered, b"lead-1"), Err(CryptoError::Authentication));
    }

    #[test]
    fn sealed_values_round_trip_through_json() {
        let key = SecretKey::from_bytes([7; KEY_LEN]);
        let sealed = seal(&key, [9; NONCE_LEN], b"", b"data");
        let json = serde_json::to_value(&sealed).unwrap();
        assert_eq!(json["alg"], ALGORITHM);
        let back: Sealed = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(back, sealed);
        let mut other = json;
        other["alg"] = "ROT13".into();
        assert!(serde_json::from_value::<Sealed>(other).is_err());
    }

    #[test]
    fn keys_never_print() {
        let key = SecretKey::from_bytes([42; KEY_LEN]);
        assert_eq!(format!("{key:?}"), "SecretKey(..)");
    }
}
