//! The data directory: configuration, database, keys and recordings, created by `init` and
//! opened by every other command.

use anyhow::{Context, Result, bail};
use custos_core::{HostKeyPolicy, Name, TargetKind, TargetRecord};
use custos_recording::RecordingKeys;
use custos_store::{NewUser, Store, Vault, password};
use russh::keys::PrivateKey;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::config::{Config, DEFAULT_TOML};

pub struct DataDir {
    pub root: PathBuf,
    pub config: Config,
}

/// What `init` created, for the first-run message.
pub struct Created {
    pub admin_password: custos_core::Secret,
}

impl DataDir {
    pub fn config_path(root: &Path) -> PathBuf {
        root.join("custos.toml")
    }

    pub fn exists(root: &Path) -> bool {
        Self::config_path(root).exists()
    }

    pub fn open(root: &Path) -> Result<DataDir> {
        if !Self::exists(root) {
            bail!(
                "{} is not a Custos data directory (no custos.toml); run `custos init` or `custos quickstart` first, or pass --data DIR",
                root.display()
            );
        }
        let config = Config::load(&Self::config_path(root))?;
        Ok(DataDir {
            root: root.to_path_buf(),
            config,
        })
    }

    pub fn path(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.root.join(p)
        }
    }

    /// Where the keys live (recording, audit, vault and host keys by default).
    pub fn keys_dir(&self) -> PathBuf {
        self.path(&self.config.recording.keys_dir)
    }

    pub fn recordings_dir(&self) -> PathBuf {
        self.path(&self.config.recording.dir)
    }

    pub async fn store(&self) -> Result<Store> {
        let vault = Vault::load(&self.path(&self.config.store.vault_key))?;
        Ok(Store::open(&self.path(&self.config.store.database), vault).await?)
    }

    pub fn recording_keys(&self) -> Result<Arc<RecordingKeys>> {
        let dir = self.path(&self.config.recording.keys_dir);
        Ok(Arc::new(RecordingKeys::load(&dir).with_context(|| {
            format!("cannot load the recording keys from {}", dir.display())
        })?))
    }

    pub fn host_key(&self) -> Result<PrivateKey> {
        let p = self.path(&self.config.ssh.host_key);
        let text = std::fs::read_to_string(&p)
            .with_context(|| format!("cannot read the SSH host key {}", p.display()))?;
        PrivateKey::from_openssh(&text)
            .map_err(|e| anyhow::anyhow!("{}: not an OpenSSH private key: {e}", p.display()))
    }

    /// Creates a new data directory with fresh keys, an `admin` user with a one-time password
    /// and the demo target `local`.
    pub async fn init(root: &Path) -> Result<(DataDir, Created)> {
        if Self::exists(root) {
            bail!("{} already holds a Custos data directory", root.display());
        }
        std::fs::create_dir_all(root)
            .with_context(|| format!("cannot create {}", root.display()))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("cannot restrict permissions of {}", root.display()))?;
        let config: Config = toml::from_str(DEFAULT_TOML).context("built-in configuration")?;
        let dd = DataDir {
            root: root.to_path_buf(),
            config,
        };
        let keys_dir = dd.path(&dd.config.recording.keys_dir);
        std::fs::create_dir_all(&keys_dir)
            .with_context(|| format!("cannot create {}", keys_dir.display()))?;
        std::fs::set_permissions(&keys_dir, std::fs::Permissions::from_mode(0o700))?;
        std::fs::create_dir_all(dd.recordings_dir())?;
        std::fs::set_permissions(dd.recordings_dir(), std::fs::Permissions::from_mode(0o700))?;

        write_host_key(&dd.path(&dd.config.ssh.host_key))?;
        RecordingKeys::generate()?.save(&keys_dir)?;
        let vault = Vault::generate_file(&dd.path(&dd.config.store.vault_key))?;
        let store = Store::open(&dd.path(&dd.config.store.database), vault).await?;

        let admin = Name::new("admin")?;
        let admin_password = password::generate()?;
        let mut user = NewUser::named(admin.clone());
        user.password_hash = Some(password::hash(&admin_password)?);
        user.password_one_time = true;
        store.add_user(user).await?;
        let local = TargetRecord {
            name: Name::new("local")?,
            kind: TargetKind::Local { os_user: None },
            labels: BTreeMap::from([("demo".to_string(), "true".to_string())]),
            allow_port_forwarding: false,
            limits: Default::default(),
            created: time::OffsetDateTime::now_utc(),
        };
        store.add_target(local, None).await?;
        store.grant(&admin, &Name::new("local")?).await?;
        store.close().await;
        // The audit trail starts with the data directory: its keys and first records.
        let audit = crate::audit::Auditor::open(&dd).await?;
        for key in [
            dd.config.ssh.host_key.display().to_string(),
            custos_recording::KEK_FILE.to_string(),
            custos_recording::SIGNING_FILE.to_string(),
            dd.config.store.vault_key.display().to_string(),
        ] {
            audit.emit(custos_audit::AuditEvent::new(
                custos_audit::EventKind::KeyOperation {
                    key,
                    operation: custos_audit::KeyOperation::Generate,
                    fingerprint: None,
                },
            ));
        }
        use custos_audit::{AdminObject as O, AdminOperation as Op};
        audit.admin(O::User, Op::Create, "admin", &["name", "password"]);
        audit.admin(O::Target, Op::Create, "local", &["kind", "labels"]);
        audit.admin(O::Grant, Op::Create, "admin -> local", &[]);
        audit.close().await?;
        // Written last: its presence marks a complete data directory.
        std::fs::write(Self::config_path(root), DEFAULT_TOML)?;
        Ok((dd, Created { admin_password }))
    }
}

fn write_host_key(path: &Path) -> Result<()> {
    let mut seed = [0u8; 32];
    aws_lc_rs::rand::fill(&mut seed)
        .map_err(|_| anyhow::anyhow!("the system random generator failed"))?;
    let kp = russh::keys::ssh_key::private::Ed25519Keypair::from_seed(&seed);
    let key = PrivateKey::from(kp);
    let text = key
        .to_openssh(russh::keys::ssh_key::LineEnding::LF)
        .map_err(|e| anyhow::anyhow!("cannot encode the host key: {e}"))?;
    write_private(path, text.as_bytes())?;
    let public = key
        .public_key()
        .to_openssh()
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    std::fs::write(path.with_extension("pub"), format!("{public}\n"))?;
    Ok(())
}

/// Writes a file readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(data)
        .with_context(|| format!("cannot write {}", path.display()))?;
    f.sync_all()?;
    Ok(())
}

/// Host key policy helper used by `target add`.
pub fn host_key_policy(pinned: Option<String>, tofu: bool) -> Result<HostKeyPolicy> {
    match (pinned, tofu) {
        (Some(k), false) => {
            let parsed = russh::keys::PublicKey::from_openssh(k.trim()).map_err(|e| {
                anyhow::anyhow!(
                    "--host-key '{k}' is not an OpenSSH public key ('ALGO BASE64'): {e}"
                )
            })?;
            let line = parsed.to_openssh().map_err(|e| anyhow::anyhow!("{e}"))?;
            let two: Vec<&str> = line.split_whitespace().take(2).collect();
            Ok(HostKeyPolicy::Pinned { key: two.join(" ") })
        }
        (None, true) => Ok(HostKeyPolicy::TrustOnFirstUse { key: None }),
        (Some(_), true) => bail!("give either --host-key or --trust-on-first-use, not both"),
        (None, false) => bail!(
            "a remote target needs its host key: pass --host-key 'ALGO BASE64' (from the target's /etc/ssh/ssh_host_*_key.pub or ssh-keyscan) or --trust-on-first-use"
        ),
    }
}
