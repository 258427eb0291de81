//! Figure 7: command search across many sessions.
//!
//! Synthetic commands go into a SQLite store through `Store::record_commands`, the verb the
//! gateway's command writer uses, in batches of 500, interleaved over sessions that run side
//! by side. The build stops at the requested count or at a time limit, whichever comes first,
//! and the report says which; the store is kept, and the next run continues it. Then
//! `Store::search_commands` runs for each term with the limit `custos commands search TERM`
//! uses by default (the newest 100).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use custos_core::{CommandRecord, Id, Name};
use custos_store::{CommandFilter, Store, Vault};
use time::OffsetDateTime;
use tokio::runtime::Runtime;

use crate::rules::CORPUS;
use crate::stats::Samples;

/// Terms an auditor looks for: common tools, a rare host, a secret file, a destructive
/// command, a path fragment.
pub const TERMS: &[&str] = &[
    "systemctl restart",
    "kubectl",
    "/etc/shadow",
    "rm -rf",
    "db-replica-4217",
    "nginx.conf",
];

/// Results per search: the default of `custos commands search --limit`.
pub const LIMIT: u32 = 100;

/// What figure 7 reports.
pub struct SearchResult {
    /// Where the database was.
    pub location: String,
    pub requested: u64,
    /// Commands actually stored.
    pub commands: u64,
    pub sessions: u64,
    /// The build stopped at the time limit before reaching `requested`.
    pub hit_time_limit: bool,
    /// Commands already in the store, from earlier runs, when this run began.
    pub reused: u64,
    /// Seconds spent storing the commands, over every run that stored some.
    pub build_s: f64,
    pub db_bytes: u64,
    /// Per term: milliseconds per search, and rows returned.
    pub terms: Vec<(String, Samples, usize)>,
    /// Median over the terms of each term's median, in milliseconds.
    pub median_ms: f64,
}

/// The `i`th synthetic command: a line of the rules corpus with a varying host, namespace or
/// number, so the index holds many distinct lines.
fn command_text(i: u64) -> String {
    let base = CORPUS[(i % CORPUS.len() as u64) as usize];
    match i % 7 {
        0 => format!("{base} # db-replica-{}", i % 100_000),
        1 => format!("{base} -n team-{}", i % 997),
        2 => format!("ssh web{} '{base}'", i % 311),
        _ => base.to_string(),
    }
}

/// Builds (or continues) a store of up to `commands` commands over `sessions` sessions in
/// `dir`, stopping after `limit`, then runs each term `runs` times.
///
/// The database stays in `dir` as `custos-bench-search-SESSIONS.db` for the next run, which
/// continues it where this one stopped: command `i` is the same in every run, so a store built
/// over several runs holds exactly what one uninterrupted build would, and a large store is
/// built once rather than on every run. How many commands a store holds is read back from its
/// newest command; the build seconds spent so far are kept in a note beside it.
pub fn run(
    rt: &Runtime,
    dir: &Path,
    runs: usize,
    commands: u64,
    sessions: u64,
    limit: Duration,
) -> Result<SearchResult> {
    let location = dir.display().to_string();
    let sessions = sessions.max(1);
    let db = dir.join(format!("custos-bench-search-{sessions}.db"));
    let note = db.with_extension("build-seconds");
    rt.block_on(async {
        // The commands hold no secrets: any vault key opens the store.
        let vault = Vault::generate_ephemeral().context("vault key")?;
        let store = open(&db, &vault).await?;
        let already = stored_count(&store, sessions).await?;
        store.close().await;
        let earlier_s: f64 = std::fs::read_to_string(&note)
            .ok()
            .and_then(|t| t.trim().parse().ok())
            .unwrap_or(0.0);
        let built = Instant::now();
        let (store, stored) = build(
            &db,
            &vault,
            already..commands.max(already),
            sessions,
            built + limit,
        )
        .await?;
        let build_s = earlier_s + built.elapsed().as_secs_f64();
        std::fs::write(&note, format!("{build_s:.1}\n"))
            .with_context(|| format!("writing {}", note.display()))?;
        // Closing the last connection checkpoints the WAL into the database file.
        store.close().await;
        let store = open(&db, &vault).await?;
        let db_bytes = [db.clone(), db.with_extension("db-wal")]
            .iter()
            .filter_map(|f| std::fs::metadata(f).ok())
            .map(|m| m.len())
            .sum();
        // One untimed search warms the connection and the statement cache.
        store
            .search_commands(&CommandFilter {
                text: "uptime".into(),
                ..Default::default()
            })
            .await
            .context("searching")?;
        let mut terms: Vec<(String, Samples, usize)> = TERMS
            .iter()
            .map(|t| (t.to_string(), Samples::new(), 0))
            .collect();
        for _ in 0..runs {
            for (term, times, rows) in terms.iter_mut() {
                let filter = CommandFilter {
                    text: term.clone(),
                    limit: Some(LIMIT),
                    ..Default::default()
                };
                let t = Instant::now();
                let found = store.search_commands(&filter).await.context("searching")?;
                times.push(t.elapsed().as_secs_f64() * 1e3);
                *rows = found.len();
            }
        }
        store.close().await;
        let mut medians = Samples::new();
        for (_, times, _) in &terms {
            medians.push(times.median());
        }
        Ok(SearchResult {
            location,
            requested: commands,
            commands: stored,
            sessions: sessions.min(stored),
            hit_time_limit: stored < commands,
            reused: already,
            build_s,
            db_bytes,
            terms,
            median_ms: medians.median(),
        })
    })
}

/// How many commands a store built by [`build`] holds: one more than the number of its newest.
async fn stored_count(store: &Store, sessions: u64) -> Result<u64> {
    let newest = store
        .search_commands(&CommandFilter {
            limit: Some(1),
            ..Default::default()
        })
        .await
        .context("reading the newest stored command")?;
    Ok(newest.first().map_or(0, |c| {
        let s = c.session.unix_millis().saturating_sub(SESSION_EPOCH_MS);
        (c.offset_us / OFFSET_STEP_US) * sessions + s + 1
    }))
}

/// Session `s` has the id made of this many milliseconds plus `s`.
const SESSION_EPOCH_MS: u64 = 1_700_000_000_000;
/// A session's commands are this far apart in its recording.
const OFFSET_STEP_US: u64 = 5_000_000;

/// The store is closed and opened again after this many commands, which checkpoints and
/// truncates the write-ahead log. One long build here once showed the log growing by tens of
/// kilobytes per command with the database file never written; the store's own test of a
/// long-open store (crates/custos-store/tests/commands.rs) does not reproduce that, so it is
/// kept as a precaution for this unusually long, write-only run.
pub const REOPEN_EVERY: u64 = 100_000;

/// Commands stored per transaction, as the gateway's command writer batches what is queued.
const BATCH: usize = 2048;

async fn open(db: &Path, vault: &Vault) -> Result<Store> {
    Store::open(db, vault.clone())
        .await
        .context("opening the store")
}

/// Stores commands numbered `todo` until done or `deadline` passes; returns the open store and
/// how many commands it holds.
async fn build(
    db: &Path,
    vault: &Vault,
    todo: std::ops::Range<u64>,
    sessions: u64,
    deadline: Instant,
) -> Result<(Store, u64)> {
    let mut store = open(db, vault).await?;
    let user = Name::new("alice").context("user name")?;
    let targets: Vec<Name> = (0..20)
        .map(|i| Name::new(format!("web{i}")))
        .collect::<Result<_, _>>()
        .context("target name")?;
    // A fixed start, so that command i is the same in every run.
    let start = OffsetDateTime::from_unix_timestamp(1_790_000_000).context("start time")?;
    let mut batch = Vec::with_capacity(BATCH);
    let end = todo.end;
    for i in todo {
        if i > 0 && i % REOPEN_EVERY == 0 {
            store
                .record_commands(&batch)
                .await
                .context("recording commands")?;
            batch.clear();
            store.close().await;
            store = open(db, vault).await?;
            if Instant::now() >= deadline {
                return Ok((store, i));
            }
        }
        // The sessions run side by side: command i belongs to session i mod sessions, so a
        // build cut short by the time limit still spans every session.
        let s = i % sessions;
        let mut rand = [0u8; 10];
        rand[..8].copy_from_slice(&s.to_be_bytes());
        let session = Id::from_parts(SESSION_EPOCH_MS + s, rand);
        let c = CommandRecord {
            session,
            channel: 0,
            offset_us: (i / sessions) * OFFSET_STEP_US,
            at: start + time::Duration::seconds(i as i64 / 2),
            kind: "shell".into(),
            text: command_text(i),
            cwd: Some("/root".into()),
            exit_status: Some(0),
            user: user.clone(),
            target: targets[(s % targets.len() as u64) as usize].clone(),
        };
        batch.push(c);
        if batch.len() == BATCH {
            store
                .record_commands(&batch)
                .await
                .context("recording commands")?;
            batch.clear();
        }
    }
    store
        .record_commands(&batch)
        .await
        .context("recording commands")?;
    Ok((store, end))
}
