//! Figure 4: appending audit events with the hash chain and signed checkpoints on.
//!
//! `AuditLog` over `AuditStore` on a fresh SQLite file per run, a checkpoint every 1000
//! events, as the gateway runs it. A run is timed from the first `emit` to the return of
//! `flush`, when every event is durable; building the events is left out.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use custos_audit::{
    AuditConfig, AuditEvent, AuditKey, AuditLog, AuthMethod, EventKind, Position, Target,
};
use custos_core::Id;
use custos_store::AuditStore;
use tokio::runtime::Runtime;

use crate::stats::Samples;

/// A checkpoint is signed after this many events.
pub const CHECKPOINT_EVERY: u64 = 1000;

/// What figure 4 reports.
pub struct AuditResult {
    pub events: u64,
    /// Events per second, emit to durable.
    pub per_second: Samples,
    /// Checkpoints written in the last run.
    pub checkpoints: usize,
}

/// One event of a busy gateway: mostly typed commands, some logins.
fn event(i: u64, session: Id) -> AuditEvent {
    let kind = if i.is_multiple_of(10) {
        EventKind::AuthSuccess {
            method: AuthMethod::PublicKey,
            key_fingerprint: Some("SHA256:mVPwvezndPv/ARoIadVY98vAC0g+P/5633yTC4d/wXE".into()),
        }
    } else {
        EventKind::Command {
            position: Position {
                channel: 0,
                offset_us: i * 1_000,
            },
            command_line: format!("kubectl -n prod get pods -l app=api-{i} -o wide"),
            working_directory: Some("/home/alice".into()),
        }
    };
    AuditEvent::new(kind)
        .user(format!("user{}", i % 50))
        .source(std::net::SocketAddr::from(([192, 0, 2, 10], 52144)))
        .session(session)
        .target(Target {
            name: "db1".into(),
            address: Some("db1.prod.example.com".into()),
            port: Some(22),
            login: Some("postgres".into()),
        })
}

/// Appends `events` events per run, `runs` times, each run on a new database.
pub fn run(rt: &Runtime, runs: usize, events: u64) -> Result<AuditResult> {
    let mut result = AuditResult {
        events,
        per_second: Samples::new(),
        checkpoints: 0,
    };
    for _ in 0..runs {
        let (rate, checkpoints) = rt.block_on(one_run(events))?;
        result.per_second.push(rate);
        result.checkpoints = checkpoints;
    }
    Ok(result)
}

async fn one_run(count: u64) -> Result<(f64, usize)> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let store = AuditStore::open(&dir.path().join("custos.db"))
        .await
        .context("opening the audit store")?;
    let key = AuditKey::generate().context("generating an audit key")?;
    let log = AuditLog::start(
        store.clone(),
        key,
        AuditConfig {
            checkpoint_every: CHECKPOINT_EVERY,
            checkpoint_interval: Duration::from_secs(60),
            ..AuditConfig::default()
        },
    );
    let session = Id::from_parts(1, [1; 10]);
    let events: Vec<AuditEvent> = (0..count).map(|i| event(i, session)).collect();
    let start = Instant::now();
    for e in events {
        log.emit(e).context("emitting an audit event")?;
    }
    let head = log.flush().await.context("flushing the audit log")?;
    let elapsed = start.elapsed().as_secs_f64();
    log.close().await.context("closing the audit log")?;
    ensure!(head >= count, "the log holds {head} events, not {count}");
    let checkpoints = store
        .checkpoints(0, u32::MAX)
        .await
        .context("counting checkpoints")?
        .len();
    store.close().await;
    Ok((count as f64 / elapsed, checkpoints))
}
