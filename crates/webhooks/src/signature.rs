//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256
//! of "<webhook-id>.<webhook-timestamp>.<body>">`, keyed with the secret's
//! decoded bytes (the part after `whsec_`, base64). Several signatures,
//! separated by spaces, while a rotated secret is still honoured.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use rand::RngCore;
use sha2::Sha256;

/// Every secret starts with this, as Standard Webhooks names them.
pub const SECRET_PREFIX: &str = "whsec_";
/// Random bytes in a secret.
pub const SECRET_BYTES: usize = 32;
/// The signature scheme's version tag.
const VERSION: &str = "v1";
/// How far a receiver lets `webhook-timestamp` be from its clock (the
/// replay window Standard Webhooks recommends).
pub const TOLERANCE_SECONDS: i64 = 5 * 60;

pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// A new secret: `whsec_` and base64 of 32 random bytes.
pub fn new_secret() -> String {
    let mut bytes = [0u8; SECRET_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("{SECRET_PREFIX}{}", STANDARD.encode(bytes))
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the secret is not `whsec_` followed by base64")]
    BadSecret,
    #[error("the timestamp is not unix seconds")]
    BadTimestamp,
    #[error("the timestamp is more than {TOLERANCE_SECONDS} s from now")]
    Expired,
    #[error("no signature matches")]
    NoMatch,
}

fn key(secret: &str) -> Result<Vec<u8>, SignatureError> {
    let encoded = secret.strip_prefix(SECRET_PREFIX).unwrap_or(secret);
    STANDARD.decode(encoded).map_err(|_| SignatureError::BadSecret)
}

fn mac(key: &[u8], id: &str, timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac
}

/// One `v1,<base64>` signature of `body` under `secret`.
pub fn sign(secret: &str, id: &str, timestamp: i64, body: &[u8]) -> Result<String, SignatureError> {
    let tag = mac(&key(secret)?, id, timestamp, body).finalize().into_bytes();
    Ok(format!("{VERSION},{}", STANDARD.encode(tag)))
}

/// The `webhook-signature` header value: one signature per secret, the
/// current one first.
pub fn header_value(
    secrets: &[&str],
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, SignatureError> {
    let signatures: Result<Vec<String>, _> = secrets.iter().map(|s| sign(s, id, timestamp, body)).collect();
    Ok(signatures?.join(" "))
}

/// What a receiver does: checks the timestamp against `now` (unix seconds)
/// and that one of the header's `v1` signatures is the HMAC of the raw body,
/// compared in constant time.
pub fn verify(
    secret: &str,
    id: &str,
    timestamp: &str,
    signatures: &str,
    body: &[u8],
    now: i64,
) -> Result<(), SignatureError> {
    let timestamp: i64 = timestamp.parse().map_err(|_| SignatureError::BadTimestamp)?;
    if (now - timestamp).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::Expired);
    }
    let key = key(secret)?;
    let matches = signatures.split(' ').any(|signature| {
        let Some((VERSION, encoded)) = signature.split_once(',') else {
            return false;
        };
        let Ok(tag) = STANDARD.decode(encoded) else {
            return false;
        };
        mac(&key, id, timestamp, body).verify_slice(&tag).is_ok()
    });
    if matches {
        Ok(())
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of the Standard Webhooks specification's reference
    /// implementations, so ours agrees with theirs byte for byte.
    #[test]
    fn matches_the_specifications_example() {
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
        let body = br#"{"test": 2432232314}"#;
        let signature = sign(secret, id, 1614265330, body).unwrap();
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert_eq!(
            verify(secret, id, "1614265330", &signature, body, 1614265330),
            Ok(())
        );
    }

    #[test]
    fn secrets_are_32_random_bytes_behind_the_prefix() {
        let (a, b) = (new_secret(), new_secret());
        assert_ne!(a, b);
        assert_eq!(key(&a).unwrap().len(), SECRET_BYTES);
    }

    #[test]
    fn any_listed_signature_verifies_and_tampering_does_not() {
        let (old, new) = (new_secret(), new_secret());
        let header = header_value(&[&new, &old], "id", 100, b"{}").unwrap();
        assert_eq!(verify(&old, "id", "100", &header, b"{}", 100), Ok(()));
        assert_eq!(verify(&new, "id", "100", &header, b"{}", 100), Ok(()));
        assert_eq!(
            verify(&new, "id", "100", &header, b"{ }", 100),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(&new, "id", "100", &header, b"{}", 100 + TOLERANCE_SECONDS + 1),
            Err(SignatureError::Expired)
        );
    }
}
