//! Administrative commands on users, targets and grants. They work on the database directly,
//! whether or not a server is running.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use custos_audit::{AdminObject, AdminOperation};
use custos_core::{Name, Secret, SessionLimits, TargetKind, TargetRecord};
use custos_store::{NewUser, password};
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::datadir::{DataDir, host_key_policy};

#[derive(Subcommand)]
pub enum UserCmd {
    /// Add a user.
    Add {
        name: String,
        /// An OpenSSH public key file (repeatable).
        #[arg(long = "ssh-key")]
        ssh_key: Vec<PathBuf>,
        /// Read a password from standard input.
        #[arg(long)]
        password_stdin: bool,
        /// When the account stops working (RFC 3339, e.g. 2027-01-31T18:00:00Z).
        #[arg(long)]
        expires: Option<String>,
    },
    /// List users.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Lock a user: new logins are refused.
    Lock { name: String },
    /// Unlock a user.
    Unlock { name: String },
    /// Remove a user and their grants (their sessions stay in the history).
    Remove { name: String },
    /// Set a user's password from standard input.
    Passwd { name: String },
}

#[derive(Subcommand)]
pub enum TargetCmd {
    /// Add a target: a remote SSH server (--host ...) or a shell on this host (--local).
    Add(TargetAdd),
    /// List targets (credentials are never shown).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Remove a target and its grants.
    Remove { name: String },
    /// Set how long sessions on a target may last and stay idle.
    Limits {
        name: String,
        #[command(flatten)]
        limits: LimitArgs,
    },
}

/// Session limits as given on the command line.
#[derive(clap::Args, Clone, Default)]
pub struct LimitArgs {
    /// End sessions this long after they start (e.g. 8h, 90m; 'none' for no limit).
    #[arg(long, value_name = "DURATION")]
    max_duration: Option<String>,
    /// End sessions after this long without input (e.g. 15m; 'none' for no limit).
    #[arg(long, value_name = "DURATION")]
    idle_timeout: Option<String>,
}

impl LimitArgs {
    /// The limits these options give, starting from `current` (an option not given keeps
    /// its current value).
    pub fn apply(&self, current: SessionLimits) -> Result<SessionLimits> {
        fn one(opt: &Option<String>, cur: Option<u64>, flag: &str) -> Result<Option<u64>> {
            match opt.as_deref().map(str::trim) {
                None => Ok(cur),
                Some("none") | Some("off") => Ok(None),
                Some(t) => {
                    let s =
                        custos_core::parse_secs(t).map_err(|e| anyhow::anyhow!("--{flag}: {e}"))?;
                    if s == 0 {
                        bail!("--{flag} must be longer than zero (use 'none' for no limit)");
                    }
                    Ok(Some(s))
                }
            }
        }
        Ok(SessionLimits {
            max_duration_secs: one(
                &self.max_duration,
                current.max_duration_secs,
                "max-duration",
            )?,
            idle_timeout_secs: one(
                &self.idle_timeout,
                current.idle_timeout_secs,
                "idle-timeout",
            )?,
        })
    }

    pub fn given(&self) -> bool {
        self.max_duration.is_some() || self.idle_timeout.is_some()
    }
}

#[derive(clap::Args)]
pub struct TargetAdd {
    name: String,
    /// A shell on the gateway host itself.
    #[arg(long, conflicts_with_all = ["host", "login", "key", "password_stdin", "host_key", "trust_on_first_use", "port"])]
    local: bool,
    /// The OS account local sessions run as (default: the account running the gateway).
    #[arg(long, requires = "local")]
    os_user: Option<String>,
    #[arg(long)]
    host: Option<String>,
    #[arg(long, default_value_t = 22)]
    port: u16,
    /// The account the gateway logs in as on the target.
    #[arg(long)]
    login: Option<String>,
    /// A private key file (OpenSSH format, unencrypted) the gateway uses to log in.
    #[arg(long, conflicts_with = "password_stdin")]
    key: Option<PathBuf>,
    /// Read the target password from standard input.
    #[arg(long)]
    password_stdin: bool,
    /// The target's host key, 'ALGO BASE64'.
    #[arg(long)]
    host_key: Option<String>,
    /// Pin the first host key the target presents and refuse any other afterwards.
    #[arg(long)]
    trust_on_first_use: bool,
    /// A label k=v (repeatable).
    #[arg(long = "label")]
    labels: Vec<String>,
    /// Allow local port forwarding (ssh -L) through this target; each forward is recorded.
    #[arg(long)]
    allow_port_forwarding: bool,
    #[command(flatten)]
    limits: LimitArgs,
}

fn name(s: &str) -> Result<Name> {
    Name::new(s).map_err(|e| anyhow::anyhow!("{e}"))
}

fn read_stdin_secret(what: &str) -> Result<Secret> {
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .with_context(|| format!("cannot read the {what} from standard input"))?;
    let s = s.strip_suffix('\n').unwrap_or(&s);
    let s = s.strip_suffix('\r').unwrap_or(s).to_string();
    if s.is_empty() {
        bail!("the {what} read from standard input is empty");
    }
    Ok(Secret::from(s))
}

fn parse_time(s: &str) -> Result<time::OffsetDateTime> {
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
        anyhow::anyhow!("'{s}' is not an RFC 3339 time (like 2027-01-31T18:00:00Z): {e}")
    })
}

pub fn fmt_time(t: &time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

pub async fn user(data: &Path, cmd: UserCmd) -> Result<i32> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let audit = crate::audit::Auditor::open(&dd).await?;
    match cmd {
        UserCmd::Add {
            name: n,
            ssh_key,
            password_stdin,
            expires,
        } => {
            let mut u = NewUser::named(name(&n)?);
            for p in &ssh_key {
                let line = std::fs::read_to_string(p)
                    .with_context(|| format!("cannot read the key file {}", p.display()))?;
                for l in line
                    .lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                {
                    if l.contains("PRIVATE KEY") {
                        bail!(
                            "{} is a private key; give the public key (.pub)",
                            p.display()
                        );
                    }
                    u.ssh_keys.push(l.to_string());
                }
            }
            if password_stdin {
                u.password_hash = Some(password::hash(&read_stdin_secret("password")?)?);
            }
            if let Some(e) = expires {
                u.expires = Some(parse_time(&e)?);
            }
            if u.ssh_keys.is_empty() && u.password_hash.is_none() {
                eprintln!("custos: note: {n} has no key and no password yet, so cannot log in");
            }
            let mut fields = vec!["name"];
            if !u.ssh_keys.is_empty() {
                fields.push("ssh_keys");
            }
            if u.password_hash.is_some() {
                fields.push("password");
            }
            if u.expires.is_some() {
                fields.push("expires");
            }
            store.add_user(u).await?;
            audit.admin(AdminObject::User, AdminOperation::Create, &n, &fields);
            println!("added user {n}");
        }
        UserCmd::List { json } => {
            let users = store.users().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&users)?);
            } else {
                println!(
                    "{:<20} {:<8} {:<5} {:<9} {:<26}",
                    "NAME", "STATE", "KEYS", "PASSWORD", "EXPIRES"
                );
                for u in users {
                    let state = if u.locked {
                        "locked"
                    } else if u.refusal(time::OffsetDateTime::now_utc()).is_some() {
                        "expired"
                    } else {
                        "active"
                    };
                    let pw = if !u.has_password {
                        "no"
                    } else if u.password_one_time {
                        "one-time"
                    } else {
                        "yes"
                    };
                    let exp = u
                        .expires
                        .as_ref()
                        .map(fmt_time)
                        .unwrap_or_else(|| "-".into());
                    println!(
                        "{:<20} {:<8} {:<5} {:<9} {:<26}",
                        u.name,
                        state,
                        u.ssh_keys.len(),
                        pw,
                        exp
                    );
                }
            }
        }
        UserCmd::Lock { name: n } => {
            let user = name(&n)?;
            store.set_locked(&user, true).await?;
            audit.emit(custos_audit::AuditEvent::new(
                custos_audit::EventKind::Lock {
                    account: n.clone(),
                    reason: "locked by an administrator".into(),
                    by: custos_audit::Initiator::Admin(crate::audit::operator()),
                },
            ));
            println!("locked user {n}");
            let req = crate::control::Request::KillUser {
                user,
                reason: "account locked by an administrator".into(),
                by: Some(crate::audit::operator()),
            };
            match crate::control::request(data, &req).await? {
                Some(r) if r.ok => println!("ended {} live session(s) of {n}", r.ended),
                Some(r) => bail!(
                    "{}",
                    r.error.unwrap_or_else(|| "the gateway refused".into())
                ),
                None => {}
            }
        }
        UserCmd::Unlock { name: n } => {
            store.set_locked(&name(&n)?, false).await?;
            audit.emit(custos_audit::AuditEvent::new(
                custos_audit::EventKind::Unlock {
                    account: n.clone(),
                    by: custos_audit::Initiator::Admin(crate::audit::operator()),
                },
            ));
            println!("unlocked user {n}");
        }
        UserCmd::Remove { name: n } => {
            store.remove_user(&name(&n)?).await?;
            audit.admin(AdminObject::User, AdminOperation::Delete, &n, &[]);
            println!("removed user {n}");
        }
        UserCmd::Passwd { name: n } => {
            let h = password::hash(&read_stdin_secret("password")?)?;
            store.set_password(&name(&n)?, Some(&h), false).await?;
            audit.admin(
                AdminObject::UserPassword,
                AdminOperation::Update,
                &n,
                &["password"],
            );
            println!("password of {n} changed");
        }
    }
    audit.close().await?;
    Ok(0)
}

pub async fn target(data: &Path, cmd: TargetCmd) -> Result<i32> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let audit = crate::audit::Auditor::open(&dd).await?;
    match cmd {
        TargetCmd::Add(a) => {
            let mut labels = BTreeMap::new();
            for l in &a.labels {
                let (k, v) = l
                    .split_once('=')
                    .with_context(|| format!("--label '{l}' must be KEY=VALUE"))?;
                if k.is_empty() {
                    bail!("--label '{l}' has an empty key");
                }
                labels.insert(k.to_string(), v.to_string());
            }
            let (kind, credential) = if a.local {
                (
                    TargetKind::Local {
                        os_user: a.os_user.clone(),
                    },
                    None,
                )
            } else {
                let host = a
                    .host
                    .clone()
                    .context("a remote target needs --host HOST (or use --local)")?;
                let login = a
                    .login
                    .clone()
                    .context("a remote target needs --login LOGIN")?;
                let (credential, kind) = match (&a.key, a.password_stdin) {
                    (Some(p), false) => {
                        let text = std::fs::read_to_string(p)
                            .with_context(|| format!("cannot read the key file {}", p.display()))?;
                        russh::keys::decode_secret_key(&text, None).map_err(|e| {
                            anyhow::anyhow!(
                                "{} is not an unencrypted OpenSSH private key: {e}",
                                p.display()
                            )
                        })?;
                        (Secret::from(text), "key")
                    }
                    (None, true) => (read_stdin_secret("target password")?, "password"),
                    _ => {
                        bail!("a remote target needs a credential: --key PATH or --password-stdin")
                    }
                };
                let policy = host_key_policy(a.host_key.clone(), a.trust_on_first_use)?;
                (
                    TargetKind::Ssh {
                        host,
                        port: a.port,
                        login,
                        host_key: policy,
                        credential_kind: kind.into(),
                    },
                    Some(credential),
                )
            };
            let rec = TargetRecord {
                name: name(&a.name)?,
                kind,
                labels,
                allow_port_forwarding: a.allow_port_forwarding,
                limits: a.limits.apply(SessionLimits::default())?,
                created: time::OffsetDateTime::now_utc(),
            };
            let with_credential = credential.is_some();
            store.add_target(rec, credential).await?;
            let mut fields = vec!["kind", "labels", "host_key", "limits"];
            if with_credential {
                fields.push("credential");
            }
            audit.admin(
                AdminObject::Target,
                AdminOperation::Create,
                &a.name,
                &fields,
            );
            println!("added target {}", a.name);
        }
        TargetCmd::List { json } => {
            let targets = store.targets().await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&targets)?);
            } else {
                println!(
                    "{:<20} {:<28} {:<16} {:<11} {:<20} LABELS",
                    "NAME", "ADDRESS", "LOGIN", "HOST KEY", "LIMITS"
                );
                for t in targets {
                    let (addr, hk) = match &t.kind {
                        TargetKind::Ssh {
                            host,
                            port,
                            host_key,
                            ..
                        } => (
                            format!("{host}:{port}"),
                            match host_key {
                                custos_core::HostKeyPolicy::Pinned { .. } => "pinned",
                                custos_core::HostKeyPolicy::TrustOnFirstUse { key: Some(_) } => {
                                    "tofu-pinned"
                                }
                                custos_core::HostKeyPolicy::TrustOnFirstUse { key: None } => "tofu",
                            },
                        ),
                        TargetKind::Local { .. } => ("(local)".into(), "-"),
                    };
                    let labels: Vec<String> =
                        t.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
                    println!(
                        "{:<20} {:<28} {:<16} {:<11} {:<20} {}",
                        t.name,
                        addr,
                        t.login(),
                        hk,
                        t.limits,
                        labels.join(",")
                    );
                }
            }
        }
        TargetCmd::Remove { name: n } => {
            store.remove_target(&name(&n)?).await?;
            audit.admin(AdminObject::Target, AdminOperation::Delete, &n, &[]);
            println!("removed target {n}");
        }
        TargetCmd::Limits { name: n, limits } => {
            let tn = name(&n)?;
            let current = store
                .target(&tn)
                .await?
                .with_context(|| format!("there is no target named '{n}'"))?;
            if !limits.given() {
                println!("target {n}: {}", current.limits);
                return Ok(0);
            }
            let new = limits.apply(current.limits)?;
            store.set_target_limits(&tn, new).await?;
            audit.admin(AdminObject::Target, AdminOperation::Update, &n, &["limits"]);
            println!("target {n}: {new} (applies to sessions that start from now on)");
        }
    }
    audit.close().await?;
    Ok(0)
}

pub async fn grant(
    data: &Path,
    user: &str,
    target: &str,
    grant: bool,
    limits: LimitArgs,
) -> Result<i32> {
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let audit = crate::audit::Auditor::open(&dd).await?;
    let pair = format!("{user} -> {target}");
    if grant {
        let (u, t) = (name(user)?, name(target)?);
        store.grant(&u, &t).await?;
        audit.admin(AdminObject::Grant, AdminOperation::Create, &pair, &[]);
        if limits.given() {
            let current = store
                .grant_of(&u, &t)
                .await?
                .map(|g| g.limits)
                .unwrap_or_default();
            let new = limits.apply(current)?;
            store.set_grant_limits(&u, &t, new).await?;
            audit.admin(
                AdminObject::Grant,
                AdminOperation::Update,
                &pair,
                &["limits"],
            );
            println!("granted {user} access to {target} ({new})");
        } else {
            println!("granted {user} access to {target}");
        }
    } else {
        store.revoke(&name(user)?, &name(target)?).await?;
        audit.admin(AdminObject::Grant, AdminOperation::Delete, &pair, &[]);
        println!("revoked {user}'s access to {target}");
    }
    audit.close().await?;
    Ok(0)
}
