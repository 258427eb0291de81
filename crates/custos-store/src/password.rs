//! Password hashing (argon2id, PHC strings) and generated one-time passwords.
//!
//! Salts come from the same system random generator as the vault, so the store has a single
//! source of randomness.

use crate::StoreError;
use crate::vault::random_fill;
use argon2::{Argon2, PasswordHash, PasswordHasher, PasswordVerifier};
use custos_core::Secret;

const SALT_LEN: usize = 16;

/// Letters and digits that cannot be mistaken for one another when read aloud or copied by
/// hand: no `0 O o 1 l I i`. 54 symbols, about 5.75 bits each.
const OTP_ALPHABET: &[u8] = b"23456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghjkmnpqrstuvwxyz";
/// Characters of randomness in a generated password (about 115 bits).
const OTP_CHARS: usize = 20;
/// Generated passwords are shown as groups of this size joined by `-`.
const OTP_GROUP: usize = 5;

/// Hashes `password` with argon2id (default parameters) and a fresh random salt, giving a PHC
/// string such as `$argon2id$v=19$m=...`.
pub fn hash(password: &Secret) -> Result<String, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    random_fill(&mut salt)?;
    let hashed = Argon2::default()
        .hash_password_with_salt(password.expose(), &salt)
        .map_err(|e| StoreError::Invalid(format!("password could not be hashed: {e}")))?;
    Ok(hashed.to_string())
}

/// Whether `password` matches the PHC string `phc`. A malformed `phc` never matches.
pub fn verify(password: &Secret, phc: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.expose(), &parsed)
        .is_ok()
}

/// Whether `phc` is a PHC string this module can verify against.
pub fn is_valid_hash(phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| h.algorithm.as_str().starts_with("argon2"))
}

/// A random one-time password like `Kq7Mx-b3NtR-9pZca-W4hEs`: 20 characters from an alphabet
/// without look-alikes, in dash-separated groups for reading aloud.
pub fn generate() -> Result<Secret, StoreError> {
    let mut out = Vec::with_capacity(OTP_CHARS + OTP_CHARS / OTP_GROUP);
    let mut produced = 0;
    // Rejection sampling keeps every symbol equally likely.
    let limit = 256 - (256 % OTP_ALPHABET.len());
    let mut pool = [0u8; 64];
    while produced < OTP_CHARS {
        random_fill(&mut pool)?;
        for &b in pool.iter() {
            if produced == OTP_CHARS {
                break;
            }
            if usize::from(b) >= limit {
                continue;
            }
            if produced > 0 && produced % OTP_GROUP == 0 {
                out.push(b'-');
            }
            out.push(OTP_ALPHABET[usize::from(b) % OTP_ALPHABET.len()]);
            produced += 1;
        }
    }
    pool.fill(0);
    Ok(Secret::new(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let pw = Secret::from("correct horse".to_string());
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(is_valid_hash(&h));
        assert!(verify(&pw, &h));
        assert!(!verify(&Secret::from("wrong".to_string()), &h));
        assert!(!verify(&pw, "not a hash"));
        assert!(!is_valid_hash("not a hash"));
        // Salted: the same password hashes differently each time.
        assert_ne!(h, hash(&pw).unwrap());
    }

    #[test]
    fn generated_passwords_are_readable_and_distinct() {
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a, b);
        let s = a.expose_str().unwrap();
        assert_eq!(s.len(), 23, "{s}");
        let groups: Vec<&str> = s.split('-').collect();
        assert_eq!(groups.len(), 4);
        for g in groups {
            assert_eq!(g.len(), 5);
            assert!(g.bytes().all(|c| OTP_ALPHABET.contains(&c)));
        }
        for bad in ['0', 'O', 'o', '1', 'l', 'I', 'i'] {
            assert!(!s.contains(bad));
        }
    }
}
