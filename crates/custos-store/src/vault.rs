//! The vault key: one 256-bit AES-GCM key that seals target credentials before they reach the
//! database, so a copy of the database alone reveals no credential.
//!
//! Sealed layout: `version (1 byte, = 1) || nonce (12 bytes) || ciphertext || tag (16 bytes)`.
//! Nonces are random (96 bits); at the rate credentials are written, collisions are not a
//! concern. The caller's context string (the target name) is the associated data, so a sealed
//! value copied onto another target's row fails to open.
//!
//! The key file holds the key as 64 hexadecimal characters and a newline. It is created with
//! mode 0600 and refused when group or others may read it.

use crate::StoreError;
use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use custos_core::Secret;
use std::fmt;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

const KEY_LEN: usize = 32;
const FORMAT_V1: u8 = 1;
const TAG_LEN: usize = 16;

/// A loaded vault key. Cloning is cheap and shares the key.
#[derive(Clone)]
pub struct Vault {
    key: Arc<LessSafeKey>,
}

impl fmt::Debug for Vault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Vault([redacted])")
    }
}

impl Vault {
    /// Builds a vault from raw key bytes (for tests and for keys kept outside a file).
    pub fn from_key_bytes(bytes: &[u8; KEY_LEN]) -> Result<Vault, StoreError> {
        let unbound = UnboundKey::new(&AES_256_GCM, bytes)
            .map_err(|_| StoreError::Vault("the AES-256-GCM key could not be set up".into()))?;
        Ok(Vault {
            key: Arc::new(LessSafeKey::new(unbound)),
        })
    }

    /// Makes a vault with a fresh random key that is not saved anywhere.
    pub fn generate_ephemeral() -> Result<Vault, StoreError> {
        let mut key = [0u8; KEY_LEN];
        random_fill(&mut key)?;
        let vault = Vault::from_key_bytes(&key);
        wipe(&mut key);
        vault
    }

    /// Creates a new key file at `path` with mode 0600 and returns the vault. Refuses to
    /// overwrite an existing file, since that would make every sealed credential unreadable.
    pub fn generate_file(path: &Path) -> Result<Vault, StoreError> {
        let mut key = [0u8; KEY_LEN];
        random_fill(&mut key)?;
        let mut text = hex::encode(key);
        text.push('\n');
        let written = write_new_private_file(path, text.as_bytes());
        // Best effort: the hex copy of the key should not outlive this function.
        let mut bytes = text.into_bytes();
        wipe(&mut bytes);
        written?;
        let vault = Vault::from_key_bytes(&key);
        wipe(&mut key);
        vault
    }

    /// Loads the key file at `path`, refusing files that group or others may read.
    pub fn load(path: &Path) -> Result<Vault, StoreError> {
        let meta = std::fs::metadata(path).map_err(|source| StoreError::Io {
            op: "reading vault key file",
            path: path.to_path_buf(),
            source,
        })?;
        check_private(path, &meta)?;
        let mut raw = std::fs::read(path).map_err(|source| StoreError::Io {
            op: "reading vault key file",
            path: path.to_path_buf(),
            source,
        })?;
        let parsed = parse_key_text(&raw);
        wipe(&mut raw);
        let mut key = parsed.map_err(|why| {
            StoreError::Vault(format!("key file {} is not usable: {why}", path.display()))
        })?;
        let vault = Vault::from_key_bytes(&key);
        wipe(&mut key);
        vault
    }

    /// Encrypts `secret` bound to `context` (the target name for credentials).
    pub fn seal(&self, context: &str, secret: &Secret) -> Result<Vec<u8>, StoreError> {
        let mut nonce = [0u8; NONCE_LEN];
        random_fill(&mut nonce)?;
        let plain = secret.expose();
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len() + TAG_LEN);
        out.push(FORMAT_V1);
        out.extend_from_slice(&nonce);
        let mut body = plain.to_vec();
        let sealed = self.key.seal_in_place_append_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(context.as_bytes()),
            &mut body,
        );
        if sealed.is_err() {
            wipe(&mut body);
            return Err(StoreError::Vault("encryption failed".into()));
        }
        out.extend_from_slice(&body);
        Ok(out)
    }

    /// Decrypts a value made by [`Vault::seal`] with the same `context`. Fails when the key,
    /// the context or the bytes differ from what was sealed.
    pub fn open(&self, context: &str, sealed: &[u8]) -> Result<Secret, StoreError> {
        let Some((&version, rest)) = sealed.split_first() else {
            return Err(StoreError::Vault(format!(
                "sealed value for '{context}' is empty"
            )));
        };
        if version != FORMAT_V1 {
            return Err(StoreError::Vault(format!(
                "sealed value for '{context}' has unknown format version {version}"
            )));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(StoreError::Vault(format!(
                "sealed value for '{context}' is truncated"
            )));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce)
            .map_err(|_| StoreError::Vault("bad nonce length".into()))?;
        let mut buf = body.to_vec();
        match self
            .key
            .open_in_place(nonce, Aad::from(context.as_bytes()), &mut buf)
        {
            Ok(plain) => {
                let len = plain.len();
                buf.truncate(len);
                Ok(Secret::new(buf))
            }
            Err(_) => {
                wipe(&mut buf);
                Err(StoreError::Vault(format!(
                    "sealed value for '{context}' could not be decrypted: \
                     wrong vault key, or the data was altered or belongs elsewhere"
                )))
            }
        }
    }
}

/// Fills `buf` from the system's secure random generator.
pub(crate) fn random_fill(buf: &mut [u8]) -> Result<(), StoreError> {
    aws_lc_rs::rand::fill(buf)
        .map_err(|_| StoreError::Vault("the system random generator failed".into()))
}

fn wipe(buf: &mut [u8]) {
    buf.fill(0);
    std::hint::black_box(&buf);
}

fn parse_key_text(raw: &[u8]) -> Result<[u8; KEY_LEN], &'static str> {
    let text = std::str::from_utf8(raw).map_err(|_| "it is not text")?;
    let text = text.trim();
    if text.len() != 2 * KEY_LEN {
        return Err("it must hold exactly 64 hexadecimal characters");
    }
    let mut key = [0u8; KEY_LEN];
    hex::decode_to_slice(text, &mut key).map_err(|_| "it holds non-hexadecimal characters")?;
    Ok(key)
}

#[cfg(unix)]
fn check_private(path: &Path, meta: &std::fs::Metadata) -> Result<(), StoreError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(StoreError::Vault(format!(
            "key file {} has mode {mode:03o}; it must not be readable by group or others \
             (chmod 600 it)",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
fn check_private(_path: &Path, _meta: &std::fs::Metadata) -> Result<(), StoreError> {
    Ok(())
}

fn write_new_private_file(path: &Path, contents: &[u8]) -> Result<(), StoreError> {
    let io = |source| StoreError::Io {
        op: "creating vault key file",
        path: path.to_path_buf(),
        source,
    };
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io)?;
    file.write_all(contents).map_err(io)?;
    file.sync_all().map_err(io)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(s: &str) -> Secret {
        Secret::from(s.to_string())
    }

    #[test]
    fn round_trip_and_context_binding() {
        let v = Vault::generate_ephemeral().unwrap();
        let sealed = v.seal("db1", &secret("hunter2")).unwrap();
        assert_eq!(v.open("db1", &sealed).unwrap().expose(), b"hunter2");
        assert!(matches!(v.open("db2", &sealed), Err(StoreError::Vault(_))));
        // Two seals of one value differ (random nonce).
        assert_ne!(sealed, v.seal("db1", &secret("hunter2")).unwrap());
    }

    #[test]
    fn wrong_key_and_tampering_fail() {
        let a = Vault::generate_ephemeral().unwrap();
        let b = Vault::generate_ephemeral().unwrap();
        let sealed = a.seal("t", &secret("pw")).unwrap();
        let err = b.open("t", &sealed).unwrap_err();
        assert!(err.to_string().contains("wrong vault key"), "{err}");
        let mut bad = sealed.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(a.open("t", &bad).is_err());
        assert!(a.open("t", &sealed[..10]).is_err());
        assert!(a.open("t", &[]).is_err());
        let mut v2 = sealed;
        v2[0] = 9;
        assert!(
            a.open("t", &v2)
                .unwrap_err()
                .to_string()
                .contains("version 9")
        );
    }

    #[test]
    fn empty_secret_round_trips() {
        let v = Vault::generate_ephemeral().unwrap();
        let sealed = v.seal("x", &Secret::new(vec![])).unwrap();
        assert_eq!(v.open("x", &sealed).unwrap().expose(), b"");
    }

    #[test]
    fn key_file_lifecycle() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.key");
        let v = Vault::generate_file(&path).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let sealed = v.seal("t", &secret("pw")).unwrap();
        let loaded = Vault::load(&path).unwrap();
        assert_eq!(loaded.open("t", &sealed).unwrap().expose(), b"pw");

        // Never overwrites an existing key.
        let err = Vault::generate_file(&path).unwrap_err();
        assert!(err.to_string().contains("vault.key"), "{err}");

        // A missing file names the file.
        let missing = dir.path().join("nope.key");
        let err = Vault::load(&missing).unwrap_err();
        assert!(err.to_string().contains("nope.key"), "{err}");

        // Garbage is refused with the file named.
        let junk = dir.path().join("junk.key");
        write_new_private_file(&junk, b"not a key\n").unwrap();
        let err = Vault::load(&junk).unwrap_err();
        assert!(err.to_string().contains("junk.key"), "{err}");
        assert!(err.to_string().contains("64 hexadecimal"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn readable_key_file_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("vault.key");
        Vault::generate_file(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Vault::load(&path).unwrap_err();
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }

    #[test]
    fn debug_hides_the_key() {
        let v = Vault::generate_ephemeral().unwrap();
        assert_eq!(format!("{v:?}"), "Vault([redacted])");
    }
}
