//! Keyed hashing of personal data (e-mail, phone, plate).
//!
//! Contact data and plates are PII: the warehouse keeps only HMAC-SHA256 digests, so rows can still be
//! joined on "same customer" without storing who it is. A plain SHA-256 would not do: e-mail addresses
//! and plates are guessable, and an unkeyed hash of a guessable value is reversed by trying them all.
//! The key lives outside the warehouse (config or environment), so the files alone reveal nothing.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 of `message` under `key` (RFC 2104), by RustCrypto's `hmac`.
pub fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(message);
    mac.finalize().into_bytes().into()
}

/// Hashes contact data and plates under one secret key, after normalising each kind of value so that
/// the same person written two ways hashes the same.
#[derive(Clone)]
pub struct PiiHasher {
    key: Vec<u8>,
}

impl std::fmt::Debug for PiiHasher {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.write_str("PiiHasher { key: <redacted> }")
    }
}

impl PiiHasher {
    /// A hasher with the given secret key.
    pub fn new(key: impl Into<Vec<u8>>) -> Self {
        PiiHasher { key: key.into() }
    }

    fn hash(&self, kind: &str, normalised: &str) -> String {
        // The kind is part of the message so that an e-mail and a plate with equal text differ.
        let message = format!("{kind}:{normalised}");
        hex::encode(hmac_sha256(&self.key, message.as_bytes()))
    }

    /// Hash of an e-mail address (trimmed, lower-cased).
    pub fn email(&self, email: &str) -> String {
        self.hash("email", &email.trim().to_lowercase())
    }

    /// Hash of a phone number (digits only, with a leading `+` kept).
    pub fn phone(&self, phone: &str) -> String {
        let trimmed = phone.trim();
        let mut normalised: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        if trimmed.starts_with('+') {
            normalised.insert(0, '+');
        }
        self.hash("phone", &normalised)
    }

    /// Hash of a licence plate (letters and digits only, upper-cased).
    pub fn plate(&self, plate: &str) -> String {
        let normalised: String = plate
            .chars()
            .filter(char::is_ascii_alphanumeric)
            .map(|c| c.to_ascii_uppercase())
            .collect();
        self.hash("plate", &normalised)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231_test_cases() {
        let digest = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(
            hex::encode(digest),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        // Test case 6: a key longer than the block is hashed first.
        let digest = hmac_sha256(
            &[0xaa; 131],
            b"Test Using Larger Than Block-Size Key - Hash Key First",
        );
        assert_eq!(
            hex::encode(digest),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_same_person_written_two_ways_hashes_the_same() {
        let hasher = PiiHasher::new("k");
        assert_eq!(
            hasher.email(" Ana@Example.org "),
            hasher.email("ana@example.org")
        );
        assert_eq!(
            hasher.phone("+44 (0)121 555-0100"),
            hasher.phone("+4401215550100")
        );
        assert_eq!(hasher.plate("ab12 cde"), hasher.plate("AB12CDE"));
    }

    #[test]
    fn hashes_hide_the_value_and_depend_on_the_key() {
        let email = "ana@example.org";
        let digest = PiiHasher::new("k1").email(email);
        assert!(!digest.contains("ana"));
        assert_eq!(digest.len(), 64);
        assert_ne!(digest, PiiHasher::new("k2").email(email));
        assert_ne!(
            PiiHasher::new("k").email("x"),
            PiiHasher::new("k").plate("x")
        );
    }
}
