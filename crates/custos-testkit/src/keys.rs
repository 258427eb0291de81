//! SSH key generation with the stock `ssh-keygen`.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// Path of the OpenSSH key generator.
pub const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// An ed25519 key pair written to disk without a passphrase.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keypair {
    /// The private key file (mode 0600, OpenSSH format). The public key sits next to it with a
    /// `.pub` suffix.
    pub private: PathBuf,
    /// The public key as one `authorized_keys` line without comment: `ssh-ed25519 AAAA...`.
    pub public_line: String,
}

impl Keypair {
    /// Generates `dir/name` and `dir/name.pub` with `ssh-keygen -t ed25519 -N ''`.
    ///
    /// Fails if either file already exists rather than letting `ssh-keygen` ask whether to
    /// overwrite it.
    pub fn generate(dir: &Path, name: &str) -> Result<Keypair> {
        let private = dir.join(name);
        let public = dir.join(format!("{name}.pub"));
        for path in [&private, &public] {
            if path.exists() {
                bail!("refusing to overwrite existing key file {}", path.display());
            }
        }
        let output = Command::new(SSH_KEYGEN)
            .args(["-q", "-t", "ed25519", "-N", "", "-C", ""])
            .arg("-f")
            .arg(&private)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running {SSH_KEYGEN}"))?;
        if !output.status.success() {
            bail!(
                "{SSH_KEYGEN} failed for {} ({}): {}",
                private.display(),
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        // ssh and sshd both refuse private keys that others can read.
        fs::set_permissions(&private, fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting permissions of {}", private.display()))?;
        let public_line = read_public_line(&public)?;
        Ok(Keypair {
            private,
            public_line,
        })
    }

    /// The public key file next to the private key.
    pub fn public_path(&self) -> PathBuf {
        let mut path = self.private.clone().into_os_string();
        path.push(".pub");
        PathBuf::from(path)
    }
}

/// Reads an OpenSSH public key file and returns `type base64`, dropping any comment.
pub(crate) fn read_public_line(path: &Path) -> Result<String> {
    let text = fs::read_to_string(path)
        .with_context(|| format!("reading public key {}", path.display()))?;
    let mut fields = text.split_whitespace();
    match (fields.next(), fields.next()) {
        (Some(kind), Some(blob)) => Ok(format!("{kind} {blob}")),
        _ => bail!("{} does not hold an OpenSSH public key", path.display()),
    }
}
