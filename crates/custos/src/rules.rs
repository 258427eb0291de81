//! Rules and alerts on the command line: `rules check`, `rules test`, `alerts list`, and the
//! ruleset the gateway serves with (the default pack plus `rules/*.yaml` in the data
//! directory).

use anyhow::{Result, bail};
use clap::Subcommand;
use custos_rules::{Context, DEFAULT_PACK, Ruleset};
use std::path::{Path, PathBuf};

use crate::admin::fmt_time;
use crate::datadir::DataDir;

#[derive(Subcommand)]
pub enum RulesCmd {
    /// Validate rule files; errors name the file, line and reason.
    Check { files: Vec<PathBuf> },
    /// Show how a command is normalised and which rules match it.
    Test {
        #[arg(long)]
        command: String,
        #[arg(long, default_value = "user")]
        user: String,
        #[arg(long, default_value = "target")]
        target: String,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
pub enum AlertsCmd {
    /// List alerts, newest first.
    List {
        /// Only alerts raised at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Only alerts of at least this severity: info, low, medium, high or critical.
        #[arg(long)]
        severity: Option<String>,
        /// Only held requests still waiting for a moderator.
        #[arg(long)]
        pending: bool,
        #[arg(long)]
        json: bool,
    },
    /// Let a held request go ahead.
    Approve(Decision),
    /// Refuse a held request.
    Deny(Decision),
}

#[derive(clap::Args)]
pub struct Decision {
    /// The alert id of the hold (see `custos alerts list --pending`).
    id: i64,
    /// Why (stored with the decision and shown to the user on a denial).
    #[arg(long)]
    reason: Option<String>,
    /// The moderator's name (default: the account running this command).
    #[arg(long)]
    by: Option<String>,
}

/// The rule files of a data directory: `rules/*.yaml` and `rules/*.yml`, sorted by name.
pub fn local_rule_files(data: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(data.join("rules"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// The ruleset the gateway enforces: the default pack and the data directory's own rules.
pub fn load(data: &Path) -> Result<Ruleset> {
    let mut sources: Vec<(String, String)> = DEFAULT_PACK
        .iter()
        .map(|(n, y)| (format!("default pack: {n}"), y.to_string()))
        .collect();
    for f in local_rule_files(data) {
        let text = std::fs::read_to_string(&f)
            .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
        sources.push((f.display().to_string(), text));
    }
    Ruleset::from_sources(sources).map_err(|e| anyhow::anyhow!("{e}"))
}

pub async fn rules(data: &Path, cmd: RulesCmd) -> Result<i32> {
    match cmd {
        RulesCmd::Check { files } => {
            if files.is_empty() {
                bail!("name the rule files to check");
            }
            let diags = custos_rules::check_files(&files);
            for d in &diags {
                eprintln!("{d}");
            }
            if diags.is_empty() {
                println!("{} file(s) ok", files.len());
                Ok(0)
            } else {
                Ok(2)
            }
        }
        RulesCmd::Test {
            command,
            user,
            target,
            json,
        } => {
            let ruleset = if DataDir::exists(data) {
                load(data)?
            } else {
                Ruleset::default_pack()
            };
            let ctx = Context::new(user, target, time::OffsetDateTime::now_utc());
            let d = custos_rules::test_command(&ruleset, &command, &ctx);
            if json {
                println!("{}", serde_json::to_string_pretty(&d)?);
            } else {
                print!("{d}");
            }
            Ok(0)
        }
    }
}

/// Sends a moderator's decision on a hold to the running gateway.
async fn decide(data: &Path, d: Decision, approve: bool) -> Result<i32> {
    let by = d.by.unwrap_or_else(crate::audit::operator);
    let req = crate::control::Request::Decide {
        alert: d.id,
        approve,
        by: by.clone(),
        note: d.reason,
    };
    match crate::control::request(data, &req).await? {
        None => bail!(
            "no gateway is running for {} (held requests exist only while it runs)",
            data.display()
        ),
        Some(r) if r.ok => {
            let what = if approve { "approved" } else { "denied" };
            println!("hold {} {what} by {by}", d.id);
            Ok(0)
        }
        Some(r) => bail!(
            "{}",
            r.error.unwrap_or_else(|| "the gateway refused".into())
        ),
    }
}

pub async fn alerts(data: &Path, cmd: AlertsCmd) -> Result<i32> {
    let (since, severity, pending, json) = match cmd {
        AlertsCmd::List {
            since,
            severity,
            pending,
            json,
        } => (since, severity, pending, json),
        AlertsCmd::Approve(d) => return decide(data, d, true).await,
        AlertsCmd::Deny(d) => return decide(data, d, false).await,
    };
    let dd = DataDir::open(data)?;
    let store = dd.store().await?;
    let since = since
        .map(|s| {
            time::OffsetDateTime::parse(&s, &time::format_description::well_known::Rfc3339)
                .map_err(|e| anyhow::anyhow!("--since '{s}' is not an RFC 3339 time: {e}"))
        })
        .transpose()?;
    let filter = custos_store::AlertFilter {
        since,
        min_severity: severity,
        session: None,
        pending,
        limit: None,
    };
    let list = store.alerts(&filter).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    println!(
        "{:<6} {:<20} {:<9} {:<16} {:<10} {:<10} {:<26} {:<32} TEXT",
        "ID", "TIME", "SEVERITY", "ACTION", "USER", "TARGET", "SESSION", "RULE"
    );
    for a in &list {
        println!(
            "{:<6} {:<20} {:<9} {:<16} {:<10} {:<10} {:<26} {:<32} {}",
            a.id,
            fmt_time(&a.at).chars().take(19).collect::<String>(),
            a.severity,
            match &a.decision {
                Some(d) => format!("{}:{}", a.action, d.state),
                None => a.action.clone(),
            },
            a.user,
            a.target,
            a.session,
            a.rule,
            a.text
        );
    }
    Ok(0)
}

/// What identifies the current state of the rule files: names, sizes and modification times.
pub type Fingerprint = Vec<(PathBuf, u64, Option<std::time::SystemTime>)>;

/// The fingerprint of the data directory's rule files now. Take it before loading, so a
/// change made during the load is seen later.
pub fn fingerprint(data: &Path) -> Fingerprint {
    local_rule_files(data)
        .into_iter()
        .map(|p| {
            let m = std::fs::metadata(&p).ok();
            let len = m.as_ref().map_or(0, |m| m.len());
            let modified = m.and_then(|m| m.modified().ok());
            (p, len, modified)
        })
        .collect()
}

/// Reloads the rules on SIGHUP and when the files in `rules/` change (checked every two
/// seconds). A set that does not compile is refused with its errors and the rules in force
/// stay in force.
pub fn watch(
    data: PathBuf,
    handle: custos_ssh::RulesHandle,
    mut seen: Fingerprint,
    audit: custos_audit::AuditLog,
) -> impl std::future::Future<Output = ()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = signal(SignalKind::hangup()).ok();
    async move {
        loop {
            let by_signal = tokio::select! {
                _ = async { match hup.as_mut() { Some(h) => { h.recv().await; } None => std::future::pending().await } } => true,
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => false,
            };
            let now = fingerprint(&data);
            if !by_signal && now == seen {
                continue;
            }
            seen = now;
            match load(&data) {
                Ok(rules) => {
                    tracing::info!(
                        rules = rules.len(),
                        trigger = if by_signal { "SIGHUP" } else { "file change" },
                        "rules reloaded"
                    );
                    let count = rules.len();
                    handle.replace(rules);
                    let _ = audit.emit(
                        custos_audit::AuditEvent::new(custos_audit::EventKind::AdminChange {
                            object: custos_audit::AdminObject::Rules,
                            operation: custos_audit::AdminOperation::Update,
                            name: format!("{count} rules"),
                            fields: vec![if by_signal { "sighup" } else { "files" }.into()],
                        })
                        .user("gateway"),
                    );
                }
                Err(e) => {
                    tracing::error!(error = %e, "rules not reloaded; the previous rules stay in force")
                }
            }
        }
    }
}
