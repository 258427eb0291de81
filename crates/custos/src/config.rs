//! `custos.toml`: the gateway's configuration file, with every path relative to the data
//! directory. Unknown keys are an error so that a typo never silently weakens a setting.

use anyhow::{Context, Result};
use serde::Deserialize;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub ssh: SshSection,
    #[serde(default)]
    pub auth: AuthSection,
    #[serde(default)]
    pub recording: RecordingSection,
    #[serde(default)]
    pub store: StoreSection,
    #[serde(default)]
    pub rules: RulesSection,
    #[serde(default)]
    pub audit: AuditSection,
    #[serde(default)]
    pub metrics: MetricsSection,
    /// SIEM sinks (`[[sinks]]` tables), any number.
    #[serde(default)]
    pub sinks: Vec<custos_sinks::SinkConfig>,
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// A Prometheus text file the gateway rewrites while it runs (empty: none).
    pub textfile: PathBuf,
    /// How often it is rewritten.
    pub interval_secs: u64,
}

impl Default for MetricsSection {
    fn default() -> Self {
        MetricsSection {
            textfile: "metrics/custos.prom".into(),
            interval_secs: 10,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuditSection {
    /// Sign a checkpoint of the audit chain after this many events…
    pub checkpoint_every: u64,
    /// … or this many seconds after the oldest unsigned event.
    pub checkpoint_interval_secs: u64,
}

impl Default for AuditSection {
    fn default() -> Self {
        AuditSection {
            checkpoint_every: 1000,
            checkpoint_interval_secs: 60,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RulesSection {
    /// How long a request held by a `hold` rule waits for a moderator; then it is denied.
    pub hold_timeout_secs: u64,
}

impl Default for RulesSection {
    fn default() -> Self {
        RulesSection {
            hold_timeout_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct SshSection {
    pub listen: SocketAddr,
    pub host_key: PathBuf,
    pub connect_timeout_secs: u64,
    pub env_allow: Vec<String>,
}

impl Default for SshSection {
    fn default() -> Self {
        SshSection {
            listen: "127.0.0.1:2222".parse().expect("valid literal address"),
            host_key: "keys/ssh_host_ed25519_key".into(),
            connect_timeout_secs: 10,
            env_allow: vec!["LANG".into(), "LC_*".into(), "TZ".into()],
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    pub max_failures: u32,
    pub failure_window_secs: u64,
    pub lockout_secs: u64,
}

impl Default for AuthSection {
    fn default() -> Self {
        AuthSection {
            max_failures: 5,
            failure_window_secs: 60,
            lockout_secs: 300,
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RecordingSection {
    pub dir: PathBuf,
    pub keys_dir: PathBuf,
}

impl Default for RecordingSection {
    fn default() -> Self {
        RecordingSection {
            dir: "recordings".into(),
            keys_dir: "keys".into(),
        }
    }
}

#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct StoreSection {
    pub database: PathBuf,
    pub vault_key: PathBuf,
}

impl Default for StoreSection {
    fn default() -> Self {
        StoreSection {
            database: "custos.db".into(),
            vault_key: "keys/vault.key".into(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the configuration file {}", path.display()))?;
        toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }
}

/// The commented configuration written by `custos init`.
pub const DEFAULT_TOML: &str = r#"# Custos gateway configuration.
# Paths are relative to the data directory that holds this file.

[ssh]
# Where users connect: ssh -p 2222 USER:TARGET@HOST (--ssh-listen overrides this).
listen = "127.0.0.1:2222"
# The gateway's own SSH host key (OpenSSH format).
host_key = "keys/ssh_host_ed25519_key"
# How long connecting and logging in to a target may take before the user is told it failed.
connect_timeout_secs = 10
# Environment variables a user's client may pass to targets; a trailing * matches a prefix.
env_allow = ["LANG", "LC_*", "TZ"]

[auth]
# After this many failed logins within failure_window_secs, from one address or for one user
# name, further attempts are refused for lockout_secs.
max_failures = 5
failure_window_secs = 60
lockout_secs = 300

[recording]
# Where session recordings are written (encrypted, compressed, sealed).
dir = "recordings"
# Holds recording.kek (the key-encryption key) and recording-signing (the seal signing key).
# Keep these outside the database; back them up — without the KEK recordings cannot be read.
keys_dir = "keys"

[store]
# The SQLite metadata database.
database = "custos.db"
# Key that encrypts target credentials at rest.
vault_key = "keys/vault.key"

[rules]
# Rules are the built-in pack plus rules/*.yaml here; they reload on change and on SIGHUP.
# A request held by a `hold` rule waits this long for `custos alerts approve|deny`, then is
# denied.
hold_timeout_secs = 300

[audit]
# Every security event is appended to a hash-chained log in the database; a checkpoint signed
# with keys/audit-signing seals the chain after this many events, or this many seconds after
# the oldest unsigned one (docs/audit-events.md; `custos audit verify`).
checkpoint_every = 1000
checkpoint_interval_secs = 60

[metrics]
# Live sessions, the audit backlog and each sink's delivery (behind, lag, failures) in the
# Prometheus text format, rewritten while the gateway runs (node_exporter's textfile
# collector reads it). An empty path turns it off.
textfile = "metrics/custos.prom"
interval_secs = 10

# SIEM sinks: any number of [[sinks]] tables. Each keeps its own delivery cursor, so a receiver
# that is down gets every event once it is back (`custos sinks status`). Examples:
#
# [[sinks]]
# name = "soc-syslog"
# type = "syslog"                 # syslog | webhook | splunk_hec | file
# transport = "tls"               # udp | tcp | tls
# address = "siem.example.com:6514"
# format = "cef"                  # json | cef | leef
# ca_file = "keys/siem-ca.pem"    # default: the system CA bundle
#
# [[sinks]]
# name = "hooks"
# type = "webhook"
# url = "https://hooks.example.com/custos"
# secret_file = "keys/webhook.secret"   # HMAC-SHA256 key; header X-Custos-Signature
#
# [[sinks]]
# name = "splunk"
# type = "splunk_hec"
# url = "https://splunk.example.com:8088/services/collector/event"
# token_file = "keys/hec.token"
#
# [[sinks]]
# name = "archive"
# type = "file"
# path = "audit/custos-audit.jsonl"
# max_bytes = 104857600
# keep = 10
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_file_parses_to_defaults() {
        let c: Config = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(c.ssh.listen.port(), 2222);
        assert_eq!(c.store.database, PathBuf::from("custos.db"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let e =
            toml::from_str::<Config>("[ssh]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n").unwrap_err();
        assert!(e.to_string().contains("lisen"), "{e}");
    }
}
