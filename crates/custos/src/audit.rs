//! The audit trail from the command line: the log every command writes its administrative
//! events to, and `custos audit verify|tail|search|show|checkpoint` and `custos sinks status`.

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use custos_audit::{
    AdminObject, AdminOperation, AuditConfig, AuditEvent, AuditKey, AuditLog, Document, EventKind,
    KeyOperation,
};
use custos_store::{AuditFilter, AuditRow, AuditStore};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::admin::fmt_time;
use crate::datadir::DataDir;

/// The name of the person running this command, for the events it records.
pub fn operator() -> String {
    std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .or_else(|_| std::env::var("LOGNAME"))
        .unwrap_or_else(|_| {
            // SAFETY: getuid has no preconditions and cannot fail.
            format!("uid {}", unsafe { libc::getuid() })
        })
}

/// The audit log of a data directory, opened by a command that records events.
pub struct Auditor {
    log: AuditLog,
    store: AuditStore,
}

impl Auditor {
    /// Opens the log; creates the checkpoint key if the directory has none yet (and records
    /// that).
    pub async fn open(dd: &DataDir) -> Result<Auditor> {
        let keys = dd.keys_dir();
        let (key, generated) = AuditKey::load_or_generate(&keys).with_context(|| {
            format!("cannot load the audit signing key from {}", keys.display())
        })?;
        let store = AuditStore::open(&dd.path(&dd.config.store.database)).await?;
        let config = AuditConfig {
            checkpoint_every: dd.config.audit.checkpoint_every.max(1),
            checkpoint_interval: Duration::from_secs(
                dd.config.audit.checkpoint_interval_secs.max(1),
            ),
            ..AuditConfig::default()
        };
        let fingerprint = key.fingerprint();
        let a = Auditor {
            log: AuditLog::start(store.clone(), key, config),
            store,
        };
        if generated {
            a.emit(AuditEvent::new(EventKind::KeyOperation {
                key: custos_audit::AUDIT_KEY_FILE.into(),
                operation: KeyOperation::Generate,
                fingerprint: Some(fingerprint),
            }));
        }
        Ok(a)
    }

    pub fn log(&self) -> AuditLog {
        self.log.clone()
    }

    pub fn store(&self) -> AuditStore {
        self.store.clone()
    }

    /// Queues an event; the operator is its user unless it names one.
    pub fn emit(&self, mut ev: AuditEvent) {
        if ev.user.is_none() {
            ev = ev.user(operator());
        }
        if let Err(e) = self.log.emit(ev) {
            tracing::warn!(error = %e, "an audit event could not be queued");
        }
    }

    /// Records an administrative change that took effect.
    pub fn admin(
        &self,
        object: AdminObject,
        operation: AdminOperation,
        name: &str,
        fields: &[&str],
    ) {
        self.emit(AuditEvent::new(EventKind::AdminChange {
            object,
            operation,
            name: name.to_string(),
            fields: fields.iter().map(|f| f.to_string()).collect(),
        }));
    }

    /// Writes what was queued and a closing checkpoint. A change already made that cannot be
    /// recorded is reported as an error.
    pub async fn close(self) -> Result<()> {
        self.log
            .close()
            .await
            .map(|_| ())
            .context("the change was made, but the audit log could not record it")
    }
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Walk the hash chain and check every checkpoint signature; exit 1 naming the first
    /// altered, deleted, inserted or reordered event, or a bad checkpoint.
    Verify {
        /// A trusted public key (OpenSSH format; repeatable). Default: keys/audit-signing.pub.
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// The newest events; with -f, keep printing new ones.
    Tail {
        /// How many of the newest events to show first.
        #[arg(short = 'n', long, default_value_t = 20)]
        lines: u32,
        #[arg(short = 'f', long)]
        follow: bool,
        #[arg(long)]
        json: bool,
    },
    /// Find events.
    Search {
        #[arg(long)]
        user: Option<String>,
        /// An action (`session.start`) or a prefix of one (`session`).
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        session: Option<String>,
        /// RFC 3339 time or a relative age such as 2h.
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        until: Option<String>,
        #[arg(long, default_value_t = 1000)]
        limit: u32,
        #[arg(long)]
        json: bool,
    },
    /// One event in full, by id.
    Show { id: String },
    /// Write a checkpoint's signed message, signature and allowed_signers line to a folder,
    /// for `ssh-keygen -Y verify` (docs/audit-events.md).
    Checkpoint {
        /// The checkpoint's sequence number (default: the newest).
        seq: Option<u64>,
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Subcommand)]
pub enum SinksCmd {
    /// Each sink: how far it delivered, how far behind it is, and its last failure.
    Status {
        #[arg(long)]
        json: bool,
    },
}

async fn store(data: &Path) -> Result<(DataDir, AuditStore)> {
    let dd = DataDir::open(data)?;
    let store = AuditStore::open(&dd.path(&dd.config.store.database)).await?;
    Ok((dd, store))
}

pub async fn audit(data: &Path, cmd: AuditCmd) -> Result<i32> {
    match cmd {
        AuditCmd::Verify { keys } => verify(data, keys).await,
        AuditCmd::Tail {
            lines,
            follow,
            json,
        } => tail(data, lines, follow, json).await,
        AuditCmd::Search {
            user,
            action,
            session,
            since,
            until,
            limit,
            json,
        } => {
            let (_, store) = store(data).await?;
            let filter = AuditFilter {
                user,
                action,
                session,
                since: since.as_deref().map(parse_when).transpose()?,
                until: until.as_deref().map(parse_when).transpose()?,
                limit: Some(limit),
            };
            let mut rows = store.search(&filter).await?;
            rows.sort_by_key(|r| r.seq);
            print_rows(&rows, json, true)?;
            Ok(0)
        }
        AuditCmd::Show { id } => {
            let (_, store) = store(data).await?;
            match store.event(&id).await? {
                Some(r) => {
                    let d = Document::parse(&r.doc)
                        .map_err(|e| anyhow::anyhow!("event {id} is unreadable: {e}"))?;
                    println!("{}", d.pretty());
                    Ok(0)
                }
                None => bail!("there is no audit event with id {id}"),
            }
        }
        AuditCmd::Checkpoint { seq, out } => {
            let (_, store) = store(data).await?;
            let row = match seq {
                Some(s) => store.checkpoint(s).await?,
                None => store.last_checkpoint().await?,
            };
            let Some(row) = row else {
                bail!(
                    "no such checkpoint{}",
                    seq.map(|s| format!(" at event {s}")).unwrap_or_default()
                );
            };
            let (message, signature) = custos_audit::checkpoint_files(&row)?;
            std::fs::create_dir_all(&out)
                .with_context(|| format!("cannot create {}", out.display()))?;
            std::fs::write(out.join("checkpoint.txt"), message)?;
            std::fs::write(out.join("checkpoint.sig"), signature)?;
            let dd = DataDir::open(data)?;
            let pubkey = dd.keys_dir().join(custos_audit::AUDIT_PUB_FILE);
            let key = std::fs::read_to_string(&pubkey)
                .with_context(|| format!("cannot read {}", pubkey.display()))?;
            let mut parts = key.split_whitespace();
            let (algo, b64) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
            std::fs::write(
                out.join("allowed_signers"),
                format!(
                    "custos-audit namespaces=\"{}\" {algo} {b64}\n",
                    custos_audit::CHECKPOINT_NAMESPACE
                ),
            )?;
            println!(
                "checkpoint at event {} written to {}; check it with:\n  ssh-keygen -Y verify -f {d}/allowed_signers -I custos-audit -n {ns} -s {d}/checkpoint.sig < {d}/checkpoint.txt",
                row.seq,
                out.display(),
                d = out.display(),
                ns = custos_audit::CHECKPOINT_NAMESPACE
            );
            Ok(0)
        }
    }
}

async fn verify(data: &Path, keys: Vec<PathBuf>) -> Result<i32> {
    let (dd, store) = store(data).await?;
    let paths = if keys.is_empty() {
        vec![dd.keys_dir().join(custos_audit::AUDIT_PUB_FILE)]
    } else {
        keys
    };
    let mut trusted = Vec::new();
    for p in &paths {
        trusted.push(
            custos_audit::load_public_key(p)
                .with_context(|| format!("cannot load the public key {}", p.display()))?,
        );
    }
    match custos_audit::verify_store(&store, &trusted).await {
        Ok(r) => {
            println!(
                "ok: {} events, chain head at {}, {} checkpoints verified (newest at event {}), {} events after it not yet signed",
                r.events,
                r.head_seq,
                r.checkpoints,
                r.last_checkpoint
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "-".into()),
                r.unsigned
            );
            Ok(0)
        }
        Err(custos_audit::AuditError::Tampered(t)) => {
            eprintln!("custos: audit log check FAILED ({}): {t}", t.kind());
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}

async fn tail(data: &Path, lines: u32, follow: bool, json: bool) -> Result<i32> {
    let (_, store) = store(data).await?;
    let head = store.head().await?.seq;
    let first = head.saturating_sub(u64::from(lines));
    let mut rows = store.after(first, lines.max(1)).await?;
    if lines == 0 {
        rows.clear();
    }
    print_rows(&rows, json, true)?;
    if !follow {
        return Ok(0);
    }
    let mut after = rows.last().map_or(head, |r| r.seq).max(first);
    loop {
        let rows = store.after(after, 500).await?;
        if let Some(last) = rows.last() {
            after = last.seq;
            print_rows(&rows, json, false)?;
        } else {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
}

/// An RFC 3339 time, or an age before now such as `90m` or `2d`.
fn parse_when(s: &str) -> Result<time::OffsetDateTime> {
    if let Ok(secs) = custos_core::parse_secs(s) {
        return Ok(time::OffsetDateTime::now_utc() - Duration::from_secs(secs));
    }
    time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).map_err(|e| {
        anyhow::anyhow!(
            "'{s}' is neither an RFC 3339 time (2027-01-31T18:00:00Z) nor an age (2h): {e}"
        )
    })
}

/// The most telling field of an event, for one-line listings.
fn summary(d: &Document) -> String {
    for f in [
        "process.command_line",
        "rule.id",
        "file.path",
        "event.reason",
        "destination.address",
        "custos.admin.name",
        "user.target.name",
    ] {
        if let Some(v) = d.str(f) {
            return v.to_string();
        }
    }
    String::new()
}

fn print_rows(rows: &[AuditRow], json: bool, header: bool) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    if json {
        for r in rows {
            writeln!(out, "{}", r.doc)?;
        }
        return Ok(out.flush()?);
    }
    if header {
        writeln!(
            out,
            "{:>7} {:<19} {:<24} {:<8} {:<12} {:<26} DETAIL",
            "SEQ", "TIME", "ACTION", "OUTCOME", "USER", "SESSION"
        )?;
    }
    for r in rows {
        let d = Document::parse(&r.doc).ok();
        let outcome = d
            .as_ref()
            .and_then(|d| d.str("event.outcome").map(str::to_string))
            .unwrap_or_default();
        let detail = d.as_ref().map(summary).unwrap_or_default();
        let time = r.at().map(|t| fmt_time(&t)).unwrap_or_default();
        writeln!(
            out,
            "{:>7} {:<19} {:<24} {:<8} {:<12} {:<26} {}",
            r.seq,
            time.chars().take(19).collect::<String>(),
            r.action,
            outcome,
            r.user.as_deref().unwrap_or("-"),
            r.session.as_deref().unwrap_or("-"),
            detail.replace(['\n', '\r'], " ")
        )?;
    }
    Ok(out.flush()?)
}

/// Where one sink stands.
pub struct SinkHealth {
    pub name: String,
    pub to: String,
    pub delivered_seq: u64,
    pub head_seq: u64,
    pub behind: u64,
    /// Age of the oldest undelivered event, in seconds.
    pub lag_secs: Option<i64>,
    pub failures: u64,
    pub last_error: Option<String>,
    pub last_error_at: Option<time::OffsetDateTime>,
    pub last_success_at: Option<time::OffsetDateTime>,
    pub started: bool,
}

/// The health of every configured sink, read from the database.
pub async fn sink_health(
    sinks: &[custos_sinks::SinkConfig],
    store: &AuditStore,
) -> Result<Vec<SinkHealth>> {
    let head = store.head().await?.seq;
    let cursors = store.sink_cursors().await?;
    let mut list = Vec::new();
    for s in sinks {
        let c = cursors.iter().find(|c| c.sink == s.name);
        let delivered = c.map_or(0, |c| c.seq);
        let behind = head.saturating_sub(delivered);
        let oldest = if behind > 0 {
            store
                .after(delivered, 1)
                .await?
                .first()
                .and_then(|r| r.at())
        } else {
            None
        };
        list.push(SinkHealth {
            name: s.name.clone(),
            to: s.describe(),
            delivered_seq: delivered,
            head_seq: head,
            behind,
            lag_secs: oldest.map(|t| (time::OffsetDateTime::now_utc() - t).whole_seconds()),
            failures: c.map_or(0, |c| c.failures),
            last_error: c.and_then(|c| c.last_error.clone()),
            last_error_at: c.and_then(|c| c.last_error_at),
            last_success_at: c.and_then(|c| c.last_success_at),
            started: c.is_some(),
        });
    }
    Ok(list)
}

/// The gateway's metrics in the Prometheus text format (for node_exporter's textfile
/// collector or any scraper that reads files).
pub fn metrics_text(
    health: &[SinkHealth],
    live_sessions: usize,
    audit_backlog: u64,
    audit_head: u64,
) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let mut gauge = |name: &str, help: &str, rows: Vec<(String, String)>| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (labels, value) in rows {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    gauge(
        "custos_live_sessions",
        "Sessions in progress.",
        vec![(String::new(), live_sessions.to_string())],
    );
    gauge(
        "custos_audit_head_seq",
        "Sequence number of the newest stored audit event.",
        vec![(String::new(), audit_head.to_string())],
    );
    gauge(
        "custos_audit_backlog_events",
        "Audit events emitted but not yet stored.",
        vec![(String::new(), audit_backlog.to_string())],
    );
    let label = |h: &SinkHealth| format!("{{sink=\"{}\"}}", h.name.replace(['\\', '"'], "_"));
    let per = |f: &dyn Fn(&SinkHealth) -> String| -> Vec<(String, String)> {
        health.iter().map(|h| (label(h), f(h))).collect()
    };
    gauge(
        "custos_sink_delivered_seq",
        "Last audit sequence number the sink delivered.",
        per(&|h| h.delivered_seq.to_string()),
    );
    gauge(
        "custos_sink_behind_events",
        "Audit events the sink has not delivered yet.",
        per(&|h| h.behind.to_string()),
    );
    gauge(
        "custos_sink_lag_seconds",
        "Age of the oldest undelivered event (0 when none).",
        per(&|h| h.lag_secs.unwrap_or(0).max(0).to_string()),
    );
    gauge(
        "custos_sink_consecutive_failures",
        "Failed delivery attempts since the last success.",
        per(&|h| h.failures.to_string()),
    );
    out
}

/// Rewrites the metrics file every `every` while the gateway runs (atomically: a reader
/// never sees half a file).
pub async fn write_metrics(
    path: PathBuf,
    sinks: Vec<custos_sinks::SinkConfig>,
    store: AuditStore,
    log: AuditLog,
    live: custos_ssh::LiveRegistry,
    every: Duration,
) {
    let tmp = path.with_extension("prom.tmp");
    loop {
        match sink_health(&sinks, &store).await {
            Ok(h) => {
                let head = store.head().await.map(|h| h.seq).unwrap_or(0);
                let text = metrics_text(&h, live.len(), log.backlog(), head);
                let written = path
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|_| std::fs::write(&tmp, text))
                    .and_then(|_| std::fs::rename(&tmp, &path));
                if let Err(e) = written {
                    tracing::warn!(path = %path.display(), error = %e, "cannot write the metrics file");
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the sinks' state for metrics"),
        }
        tokio::time::sleep(every).await;
    }
}

pub async fn sinks(data: &Path, cmd: SinksCmd) -> Result<i32> {
    let SinksCmd::Status { json } = cmd;
    let (dd, store) = store(data).await?;
    let list: Vec<serde_json::Value> = sink_health(&dd.config.sinks, &store)
        .await?
        .into_iter()
        .map(|h| {
            serde_json::json!({
                "name": h.name,
                "to": h.to,
                "delivered_seq": h.delivered_seq,
                "head_seq": h.head_seq,
                "behind": h.behind,
                "lag_secs": h.lag_secs,
                "failures": h.failures,
                "last_error": h.last_error,
                "last_error_at": h.last_error_at.map(|t| fmt_time(&t)),
                "last_success_at": h.last_success_at.map(|t| fmt_time(&t)),
                "started": h.started,
            })
        })
        .collect();
    if json {
        println!("{}", serde_json::to_string_pretty(&list)?);
        return Ok(0);
    }
    if list.is_empty() {
        println!(
            "no sinks are configured ([[sinks]] in {})",
            DataDir::config_path(data).display()
        );
        return Ok(0);
    }
    println!(
        "{:<16} {:<44} {:>9} {:>8} {:>8} {:>8}  LAST ERROR",
        "SINK", "TO", "DELIVERED", "BEHIND", "LAG", "FAILURES"
    );
    for s in &list {
        println!(
            "{:<16} {:<44} {:>9} {:>8} {:>8} {:>8}  {}",
            s["name"].as_str().unwrap_or(""),
            s["to"].as_str().unwrap_or(""),
            s["delivered_seq"],
            s["behind"],
            s["lag_secs"]
                .as_i64()
                .map(|l| format!("{l}s"))
                .unwrap_or_else(|| "-".into()),
            s["failures"],
            s["last_error"].as_str().unwrap_or("-")
        );
    }
    Ok(0)
}
