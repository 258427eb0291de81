//! Recording keys: the key-encryption key and the manifest signing key.

use std::fs;
use std::io::Write;
use std::path::Path;

use ssh_key::{LineEnding, PrivateKey, PublicKey};

use crate::crypto::{self, KEY_LEN};
use crate::error::RecordingError;

/// File name of the key-encryption key inside a key directory.
pub const KEK_FILE: &str = "recording.kek";
/// File name of the OpenSSH private signing key inside a key directory.
pub const SIGNING_FILE: &str = "recording-signing";
/// File name of the OpenSSH public signing key inside a key directory.
pub const SIGNING_PUB_FILE: &str = "recording-signing.pub";

const KEK_HEADER: &str = "custos-recording-kek v1";

/// The keys a gateway needs to write recordings: a 256-bit key-encryption key (KEK) that wraps
/// each recording's data key, and an Ed25519 key that signs each recording's manifest.
pub struct RecordingKeys {
    kek: [u8; KEY_LEN],
    signing: PrivateKey,
}

impl std::fmt::Debug for RecordingKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingKeys")
            .field("kek_id", &hex::encode(self.kek_id()))
            .field("signing", &self.signing.public_key().to_openssh().ok())
            .finish()
    }
}

impl RecordingKeys {
    /// Generates a fresh KEK and signing key from the system random generator.
    pub fn generate() -> Result<Self, RecordingError> {
        let kek = crypto::random::<KEY_LEN>()?;
        let seed = crypto::random::<32>()?;
        Ok(Self::from_parts(kek, seed))
    }

    /// Builds keys from a raw KEK and an Ed25519 seed.
    pub fn from_parts(kek: [u8; KEY_LEN], signing_seed: [u8; 32]) -> Self {
        let kp = ssh_key::private::Ed25519Keypair::from_seed(&signing_seed);
        let mut signing = PrivateKey::from(kp);
        signing.set_comment("custos-recording");
        Self { kek, signing }
    }

    /// The public key that verifies manifests (give it to auditors).
    pub fn verifying_key(&self) -> &PublicKey {
        self.signing.public_key()
    }

    /// Identifier of the KEK stored in each recording header:
    /// SHA-256("custos-recording kek id v1" || KEK).
    pub fn kek_id(&self) -> [u8; 32] {
        kek_id(&self.kek)
    }

    pub(crate) fn kek(&self) -> &[u8; KEY_LEN] {
        &self.kek
    }

    pub(crate) fn signing_key(&self) -> &PrivateKey {
        &self.signing
    }

    /// Writes `recording.kek` and `recording-signing` (mode 0600) and `recording-signing.pub`
    /// (mode 0644) into `dir`, creating it if needed. Existing files are not overwritten.
    pub fn save(&self, dir: &Path) -> Result<(), RecordingError> {
        fs::create_dir_all(dir).map_err(|e| RecordingError::io(dir, e))?;
        let kek_text = format!("{KEK_HEADER}\n{}\n", hex::encode(self.kek));
        write_new(&dir.join(KEK_FILE), kek_text.as_bytes(), 0o600)?;
        let priv_path = dir.join(SIGNING_FILE);
        let pem = self
            .signing
            .to_openssh(LineEnding::LF)
            .map_err(|e| RecordingError::Key {
                path: priv_path.clone(),
                reason: e.to_string(),
            })?;
        write_new(&priv_path, pem.as_bytes(), 0o600)?;
        let pub_path = dir.join(SIGNING_PUB_FILE);
        let public = self
            .verifying_key()
            .to_openssh()
            .map_err(|e| RecordingError::Key {
                path: pub_path.clone(),
                reason: e.to_string(),
            })?;
        write_new(&pub_path, format!("{public}\n").as_bytes(), 0o644)?;
        Ok(())
    }

    /// Loads keys written by [`RecordingKeys::save`]. Errors name the offending file.
    pub fn load(dir: &Path) -> Result<Self, RecordingError> {
        let kek_path = dir.join(KEK_FILE);
        let text = fs::read_to_string(&kek_path).map_err(|e| RecordingError::io(&kek_path, e))?;
        let kek = parse_kek(&text).map_err(|reason| RecordingError::Key {
            path: kek_path.clone(),
            reason,
        })?;
        let priv_path = dir.join(SIGNING_FILE);
        let pem = fs::read_to_string(&priv_path).map_err(|e| RecordingError::io(&priv_path, e))?;
        let signing = PrivateKey::from_openssh(pem.trim()).map_err(|e| RecordingError::Key {
            path: priv_path.clone(),
            reason: format!("not an OpenSSH private key: {e}"),
        })?;
        if signing.is_encrypted() {
            return Err(RecordingError::Key {
                path: priv_path,
                reason: "the signing key is passphrase-protected; store it unencrypted with 0600 permissions".into(),
            });
        }
        if signing.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(RecordingError::Key {
                path: priv_path,
                reason: format!("expected an Ed25519 key, found {}", signing.algorithm()),
            });
        }
        Ok(Self { kek, signing })
    }
}

/// Loads an OpenSSH public key file (for example `recording-signing.pub`).
pub fn load_public_key(path: &Path) -> Result<PublicKey, RecordingError> {
    let text = fs::read_to_string(path).map_err(|e| RecordingError::io(path, e))?;
    PublicKey::from_openssh(text.trim()).map_err(|e| RecordingError::Key {
        path: path.to_path_buf(),
        reason: format!("not an OpenSSH public key: {e}"),
    })
}

pub(crate) fn kek_id(kek: &[u8; KEY_LEN]) -> [u8; 32] {
    crypto::sha256(&[b"custos-recording kek id v1", kek])
}

fn parse_kek(text: &str) -> Result<[u8; KEY_LEN], String> {
    let mut lines = text.lines();
    if lines.next().map(str::trim) != Some(KEK_HEADER) {
        return Err(format!("first line must be \"{KEK_HEADER}\""));
    }
    let hex_line = lines.next().map(str::trim).unwrap_or_default();
    let bytes =
        hex::decode(hex_line).map_err(|_| "second line must be 64 hex digits".to_string())?;
    <[u8; KEY_LEN]>::try_from(bytes.as_slice())
        .map_err(|_| format!("key must be {KEY_LEN} bytes (64 hex digits)"))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), RecordingError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| RecordingError::io(path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| RecordingError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_and_load() {
        let dir = tempfile::tempdir().expect("tempdir");
        let k = RecordingKeys::generate().expect("generate");
        k.save(dir.path()).expect("save");
        let mode = |n: &str| {
            fs::metadata(dir.path().join(n))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(KEK_FILE), 0o600);
        assert_eq!(mode(SIGNING_FILE), 0o600);
        assert_eq!(mode(SIGNING_PUB_FILE), 0o644);
        let l = RecordingKeys::load(dir.path()).expect("load");
        assert_eq!(l.kek, k.kek);
        assert_eq!(l.verifying_key(), k.verifying_key());
        let p = load_public_key(&dir.path().join(SIGNING_PUB_FILE)).expect("pub");
        assert_eq!(&p, k.verifying_key());
        // Saving again does not overwrite.
        assert!(k.save(dir.path()).is_err());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = RecordingKeys::load(dir.path()).expect_err("missing");
        assert!(e.to_string().contains(KEK_FILE), "{e}");
        fs::write(dir.path().join(KEK_FILE), "custos-recording-kek v1\nzz\n").expect("w");
        let e = RecordingKeys::load(dir.path()).expect_err("bad kek");
        assert!(e.to_string().contains(KEK_FILE), "{e}");
        fs::write(
            dir.path().join(KEK_FILE),
            format!("custos-recording-kek v1\n{}\n", "ab".repeat(32)),
        )
        .expect("w");
        fs::write(dir.path().join(SIGNING_FILE), "nonsense").expect("w");
        let e = RecordingKeys::load(dir.path()).expect_err("bad signing key");
        assert!(e.to_string().contains(SIGNING_FILE), "{e}");
    }
}
