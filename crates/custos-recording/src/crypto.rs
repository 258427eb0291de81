//! Thin wrappers over aws-lc-rs: AES-256-GCM, SHA-256 and the system random generator.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::digest;

use crate::error::RecordingError;

/// Length of AEAD keys, hashes and signing seeds.
pub(crate) const KEY_LEN: usize = 32;
/// Length of the AES-GCM tag appended to every ciphertext.
pub(crate) const TAG_LEN: usize = 16;

/// Fills a fresh array with random bytes.
pub(crate) fn random<const N: usize>() -> Result<[u8; N], RecordingError> {
    let mut b = [0u8; N];
    aws_lc_rs::rand::fill(&mut b)
        .map_err(|_| RecordingError::Crypto("random generator failed".into()))?;
    Ok(b)
}

/// SHA-256 of the concatenation of `parts`.
pub(crate) fn sha256(parts: &[&[u8]]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let d = ctx.finish();
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

/// Encrypts `data` in place (appending the tag).
pub(crate) fn seal(
    key: &[u8; KEY_LEN],
    nonce: [u8; 12],
    aad: &[u8],
    data: &mut Vec<u8>,
) -> Result<(), RecordingError> {
    let key = UnboundKey::new(&AES_256_GCM, key)
        .map_err(|_| RecordingError::Crypto("bad AEAD key".into()))?;
    LessSafeKey::new(key)
        .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), data)
        .map_err(|_| RecordingError::Crypto("encryption failed".into()))
}

/// Decrypts `data` in place and strips the tag; fails if the tag does not verify.
pub(crate) fn open(key: &[u8; KEY_LEN], nonce: [u8; 12], aad: &[u8], data: &mut Vec<u8>) -> bool {
    let Ok(key) = UnboundKey::new(&AES_256_GCM, key) else {
        return false;
    };
    let len = match LessSafeKey::new(key).open_in_place(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        data,
    ) {
        Ok(plain) => plain.len(),
        Err(_) => return false,
    };
    data.truncate(len);
    true
}

/// The nonce of a segment: writer id (4 bytes, big-endian) followed by the sequence number.
pub(crate) fn segment_nonce(writer: u32, seq: u64) -> [u8; 12] {
    let mut n = [0u8; 12];
    n[..4].copy_from_slice(&writer.to_be_bytes());
    n[4..].copy_from_slice(&seq.to_be_bytes());
    n
}
