//! The checkpoint signing key: Ed25519, kept in the data directory's `keys/` folder as an
//! OpenSSH private key (`audit-signing`, mode 0600) and its public half (`audit-signing.pub`,
//! mode 0644, `authorized_keys` format) — the same layout as the recording signing key, so
//! operators back up, protect and hand out both alike. A separate key from the recording one:
//! each can be rotated or revoked without touching the other.

use crate::AuditError;
use ssh_key::{HashAlg, LineEnding, PrivateKey, PublicKey};
use std::fs;
use std::io::Write;
use std::path::Path;

/// File name of the OpenSSH private checkpoint key inside a key directory.
pub const AUDIT_KEY_FILE: &str = "audit-signing";
/// File name of the OpenSSH public checkpoint key inside a key directory.
pub const AUDIT_PUB_FILE: &str = "audit-signing.pub";

/// The Ed25519 key that signs checkpoints.
pub struct AuditKey {
    key: PrivateKey,
}

impl std::fmt::Debug for AuditKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditKey")
            .field("fingerprint", &self.fingerprint())
            .finish()
    }
}

impl AuditKey {
    /// A fresh key from the system random generator.
    pub fn generate() -> Result<AuditKey, AuditError> {
        let mut seed = [0u8; 32];
        aws_lc_rs::rand::fill(&mut seed)
            .map_err(|_| AuditError::Sign("the system random generator failed".into()))?;
        Ok(AuditKey::from_seed(seed))
    }

    /// The key derived from a 32-byte Ed25519 seed.
    pub fn from_seed(seed: [u8; 32]) -> AuditKey {
        let pair = ssh_key::private::Ed25519Keypair::from_seed(&seed);
        let mut key = PrivateKey::from(pair);
        key.set_comment("custos-audit");
        AuditKey { key }
    }

    /// The public key that verifies checkpoints (give it to auditors).
    pub fn public_key(&self) -> &PublicKey {
        self.key.public_key()
    }

    /// `SHA256:...` fingerprint of the public key, as `ssh-keygen -l` prints it.
    pub fn fingerprint(&self) -> String {
        self.key
            .public_key()
            .fingerprint(HashAlg::Sha256)
            .to_string()
    }

    pub(crate) fn private(&self) -> &PrivateKey {
        &self.key
    }

    /// Writes `audit-signing` (0600) and `audit-signing.pub` (0644) into `dir`, creating the
    /// folder (0700) if needed. Never overwrites an existing file.
    pub fn save(&self, dir: &Path) -> Result<(), AuditError> {
        create_dir(dir)?;
        let priv_path = dir.join(AUDIT_KEY_FILE);
        let pem = self
            .key
            .to_openssh(LineEnding::LF)
            .map_err(|e| AuditError::key(&priv_path, e.to_string()))?;
        write_new(&priv_path, pem.as_bytes(), 0o600)?;
        let pub_path = dir.join(AUDIT_PUB_FILE);
        let public = self
            .public_key()
            .to_openssh()
            .map_err(|e| AuditError::key(&pub_path, e.to_string()))?;
        write_new(&pub_path, format!("{public}\n").as_bytes(), 0o644)
    }

    /// Loads the key saved by [`AuditKey::save`]. Errors name the file.
    pub fn load(dir: &Path) -> Result<AuditKey, AuditError> {
        let path = dir.join(AUDIT_KEY_FILE);
        let pem = fs::read_to_string(&path).map_err(|e| AuditError::io("reading", &path, e))?;
        let key = PrivateKey::from_openssh(pem.trim())
            .map_err(|e| AuditError::key(&path, format!("not an OpenSSH private key: {e}")))?;
        if key.is_encrypted() {
            return Err(AuditError::key(
                &path,
                "the key is passphrase-protected; store it unencrypted with mode 0600".into(),
            ));
        }
        if key.algorithm() != ssh_key::Algorithm::Ed25519 {
            return Err(AuditError::key(
                &path,
                format!("expected an Ed25519 key, found {}", key.algorithm()),
            ));
        }
        Ok(AuditKey { key })
    }

    /// Loads the key from `dir`, or generates and saves one if `dir` has none. The flag says
    /// whether it was generated (the caller logs a `key.generate` event).
    pub fn load_or_generate(dir: &Path) -> Result<(AuditKey, bool), AuditError> {
        if dir.join(AUDIT_KEY_FILE).exists() {
            return Ok((AuditKey::load(dir)?, false));
        }
        let key = AuditKey::generate()?;
        key.save(dir)?;
        Ok((key, true))
    }
}

/// Loads an OpenSSH public key file, such as `audit-signing.pub`.
pub fn load_public_key(path: &Path) -> Result<PublicKey, AuditError> {
    let text = fs::read_to_string(path).map_err(|e| AuditError::io("reading", path, e))?;
    PublicKey::from_openssh(text.trim())
        .map_err(|e| AuditError::key(path, format!("not an OpenSSH public key: {e}")))
}

fn create_dir(dir: &Path) -> Result<(), AuditError> {
    use std::os::unix::fs::DirBuilderExt;
    if dir.is_dir() {
        return Ok(());
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| AuditError::io("creating", dir, e))
}

fn write_new(path: &Path, data: &[u8], mode: u32) -> Result<(), AuditError> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| AuditError::io("creating", path, e))?;
    f.write_all(data)
        .and_then(|_| f.sync_all())
        .map_err(|e| AuditError::io("writing", path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn save_load_and_refuse_to_overwrite() {
        let dir = tempfile::tempdir().expect("tempdir");
        let keys = dir.path().join("keys");
        let (k, made) = AuditKey::load_or_generate(&keys).expect("generate");
        assert!(made);
        let mode = |n: &str| {
            fs::metadata(keys.join(n))
                .expect("meta")
                .permissions()
                .mode()
                & 0o777
        };
        assert_eq!(mode(AUDIT_KEY_FILE), 0o600);
        assert_eq!(mode(AUDIT_PUB_FILE), 0o644);
        let (again, made) = AuditKey::load_or_generate(&keys).expect("load");
        assert!(!made);
        assert_eq!(again.public_key(), k.public_key());
        let public = load_public_key(&keys.join(AUDIT_PUB_FILE)).expect("pub");
        assert_eq!(&public, k.public_key());
        assert!(k.fingerprint().starts_with("SHA256:"));
        assert!(k.save(&keys).is_err());
    }

    #[test]
    fn load_errors_name_the_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = AuditKey::load(dir.path()).expect_err("missing");
        assert!(e.to_string().contains(AUDIT_KEY_FILE), "{e}");
        fs::write(dir.path().join(AUDIT_KEY_FILE), "nonsense").expect("write");
        let e = AuditKey::load(dir.path()).expect_err("garbage");
        assert!(e.to_string().contains(AUDIT_KEY_FILE), "{e}");
    }
}
