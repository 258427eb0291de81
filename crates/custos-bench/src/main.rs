//! The benchmark harness: measures the costs Custos adds to an SSH session (rule evaluation,
//! interactive command extraction, throughput and connection set-up against direct ssh and an
//! OpenSSH bastion, keystroke echo latency, reliability of long bulk transfers), the costs of
//! keeping its records (audit appends, recording size and seek, command search) and how many
//! interactive sessions it holds at once with their memory, and writes them, with machine
//! details and targets, to BENCHMARKS.md.
//!
//! It is a measurement tool, not a test: nothing here fails on a slow figure. Each figure is
//! taken over several runs and reported as a median with the smallest and largest run; the
//! ways compared are interleaved within each run so that drift on a shared machine spreads
//! over all of them.
//!
//! The throughput, set-up, latency, reliability and concurrency figures run the `custos`
//! binary found next to this one (build it with `cargo build --release -p custos`), or the one
//! given with `--custos`.

mod audit;
mod concurrency;
mod extraction;
mod latency;
mod network;
mod recording;
mod reliability;
mod report;
mod rules;
mod search;
mod stats;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};

use crate::network::{Fixture, Parts};
use crate::report::Results;

#[derive(Parser)]
#[command(
    name = "custos-bench",
    about = "Measure what Custos costs an SSH session"
)]
struct Cli {
    #[command(subcommand)]
    what: What,
    #[command(flatten)]
    opts: Opts,
}

#[derive(Subcommand, Clone, Copy, PartialEq, Eq)]
enum What {
    /// Every figure.
    All,
    /// Figure 1: commands against the default rule pack.
    Rules,
    /// Figure 2: interactive command extraction on bulk output.
    Extraction,
    /// Figure 3: bulk output and input, direct vs ProxyJump vs Custos.
    Throughput,
    /// Figure 3: connection set-up time, direct vs ProxyJump vs Custos.
    Setup,
    /// Figure 4: audit events appended with the chain and checkpoints on.
    Audit,
    /// Figure 5: recording size on disk against gzip -6 of the same output.
    RecordingSize,
    /// Figure 6: time to the screen at 90% of a long recording.
    Seek,
    /// Figure 7: command search across many sessions.
    Search,
    /// Figure 8: keystroke echo round trip, direct vs ProxyJump vs Custos.
    Latency,
    /// Figure 9: many bulk transfers through Custos, each ending with EOF and exit status.
    Reliability,
    /// Figure 10: many interactive sessions at once, each typing a command a second, and the
    /// gateway's memory per idle session.
    Concurrency,
}

#[derive(Args)]
struct Opts {
    /// Small sizes and few runs: a quick look, not figures to publish.
    #[arg(long, global = true)]
    quick: bool,
    /// Runs per figure (default 5, or 3 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    runs: Option<u32>,
    /// Where to write the report (default: BENCHMARKS.md at the repository root).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// Bytes per bulk transfer, in MB (default 1000, or 20 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    size_mb: Option<u64>,
    /// Output per kind fed to the extraction models per run, in MB (default 256, or 8 with
    /// --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    extraction_mb: Option<u64>,
    /// Passes over the rules corpus per run (default 2000, or 100 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    passes: Option<u32>,
    /// Audit events appended per run (default 100000, or 10000 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    audit_events: Option<u64>,
    /// Output per kind of stream recorded for the size figure, in MB (default 32, or 4 with
    /// --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    recording_mb: Option<u64>,
    /// Raw terminal output in the recording the seek figure reads, in MB (default 1000, or 50
    /// with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    seek_mb: Option<u64>,
    /// Commands stored for the search figure (default 10000000, or 100000 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    search_commands: Option<u64>,
    /// Sessions the stored commands are spread over (default 100000, or 1000 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    search_sessions: Option<u64>,
    /// Stop storing commands for the search figure after this many seconds (default 1800); the
    /// store is kept in --search-dir and the next run continues it.
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    search_build_secs: Option<u64>,
    /// Directory for the search figure's database (default /dev/shm when present, else the
    /// system temporary directory).
    #[arg(long, global = true)]
    search_dir: Option<PathBuf>,
    /// Keystrokes timed per way and run for the latency figure (default 400, or 40 with
    /// --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    keys: Option<u32>,
    /// Bulk transfers through Custos for the reliability figure (default 100, or 4 with
    /// --quick); each moves --size-mb.
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    transfers: Option<u32>,
    /// Interactive sessions held open at once for the concurrency figure (default 1000, or 30
    /// with --quick). This figure is taken once unless --runs is given: a run of 1000
    /// sessions takes minutes.
    #[arg(long, global = true, value_parser = clap::value_parser!(u32).range(1..))]
    sessions: Option<u32>,
    /// Seconds every session keeps typing a command a second in the concurrency figure
    /// (default 60, or 5 with --quick).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    concurrency_secs: Option<u64>,
    /// The gateway binary (default: `custos` next to this program).
    #[arg(long, global = true, env = "CUSTOS_BIN")]
    custos: Option<PathBuf>,
}

fn main() {
    let cli = Cli::parse();
    if let Err(e) = run(&cli) {
        eprintln!("custos-bench: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: &Cli) -> Result<()> {
    let o = &cli.opts;
    let quick = o.quick;
    let runs = o.runs.map_or(if quick { 3 } else { 5 }, |r| r as usize);
    let out = o
        .out
        .clone()
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../BENCHMARKS.md"));
    let what = cli.what;
    let wants = |w: What| what == What::All || what == w;
    let mut results = Results {
        command: std::env::args().skip(1).collect::<Vec<_>>().join(" "),
        quick,
        runs,
        rules: None,
        extraction: None,
        network: None,
        audit: None,
        recording_size: None,
        seek: None,
        search: None,
        latency: None,
        reliability: None,
        concurrency: None,
    };

    if wants(What::Rules) {
        let passes = o
            .passes
            .map_or(if quick { 100 } else { 2000 }, |p| p as usize);
        eprintln!("rules: {runs} runs of {passes} passes over the corpus");
        results.rules = Some(rules::run(runs, passes));
    }
    if [
        What::Throughput,
        What::Setup,
        What::Latency,
        What::Reliability,
        What::Concurrency,
    ]
    .into_iter()
    .any(wants)
    {
        let mb = o.size_mb.unwrap_or(if quick { 20 } else { 1000 });
        let bin = custos_binary(o.custos.as_deref())?;
        eprintln!(
            "network: starting the target, the bastion and the gateway ({})",
            bin.display()
        );
        let fixture = Fixture::start(&bin)?;
        fixture.check()?;
        let parts = Parts {
            transfer: wants(What::Throughput),
            setup: wants(What::Setup),
        };
        if parts.transfer || parts.setup {
            eprintln!("network: {runs} runs, {mb} MB per transfer");
            results.network = Some(network::run(&fixture, runs, mb * 1_000_000, parts)?);
        }
        if wants(What::Latency) {
            let keys = o.keys.map_or(if quick { 40 } else { 400 }, |k| k as usize);
            eprintln!("latency: {runs} runs of {keys} keystrokes each way");
            results.latency = Some(latency::run(&fixture, runs, keys)?);
        }
        if wants(What::Reliability) {
            let transfers = o
                .transfers
                .map_or(if quick { 4 } else { 100 }, |t| t as usize);
            eprintln!("reliability: {transfers} transfers of {mb} MB through Custos");
            results.reliability = Some(reliability::run(&fixture, transfers, mb * 1_000_000)?);
        }
        if wants(What::Concurrency) {
            let sessions = o
                .sessions
                .map_or(if quick { 30 } else { 1000 }, |s| s as usize);
            let secs = o.concurrency_secs.unwrap_or(if quick { 5 } else { 60 });
            let idle = std::time::Duration::from_secs(if quick { 2 } else { 5 });
            let runs = o.runs.map_or(1, |r| r as usize);
            eprintln!(
                "concurrency: {runs} run(s) of {sessions} sessions, each typing a command a second \
                 for {secs} s"
            );
            results.concurrency = Some(concurrency::run(&fixture, runs, sessions, secs, idle)?);
        }
    }
    if wants(What::Extraction) {
        let mb = o.extraction_mb.unwrap_or(if quick { 8 } else { 256 });
        eprintln!("extraction: {runs} runs of {mb} MB per kind of output");
        results.extraction = Some(extraction::run(runs, (mb as usize) * 1_000_000));
    }
    let needs_runtime = [What::Audit, What::RecordingSize, What::Seek, What::Search]
        .into_iter()
        .any(wants);
    if needs_runtime {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("starting the async runtime")?;
        if wants(What::Audit) {
            let events = o
                .audit_events
                .unwrap_or(if quick { 10_000 } else { 100_000 });
            eprintln!("audit: {runs} runs of {events} events");
            results.audit = Some(audit::run(&rt, runs, events)?);
        }
        if wants(What::RecordingSize) {
            let mb = o.recording_mb.unwrap_or(if quick { 4 } else { 32 });
            eprintln!("recording-size: {runs} runs of {mb} MB per kind of output");
            results.recording_size = Some(recording::size(&rt, runs, (mb as usize) * 1_000_000)?);
        }
        if wants(What::Seek) {
            let mb = o.seek_mb.unwrap_or(if quick { 50 } else { 1000 });
            eprintln!("seek: recording {mb} MB of output, then {runs} seeks");
            results.seek = Some(recording::seek(&rt, runs, mb * 1_000_000)?);
        }
        if wants(What::Search) {
            let commands = o
                .search_commands
                .unwrap_or(if quick { 100_000 } else { 10_000_000 });
            let sessions = o
                .search_sessions
                .unwrap_or(if quick { 1_000 } else { 100_000 });
            let limit = std::time::Duration::from_secs(o.search_build_secs.unwrap_or(1800));
            let dir = o.search_dir.clone().unwrap_or_else(|| {
                let shm = Path::new("/dev/shm");
                if shm.is_dir() {
                    shm.to_path_buf()
                } else {
                    std::env::temp_dir()
                }
            });
            eprintln!(
                "search: storing up to {commands} commands over {sessions} sessions in {} \
                 (at most {} s), then {runs} searches per term",
                dir.display(),
                limit.as_secs()
            );
            results.search = Some(search::run(&rt, &dir, runs, commands, sessions, limit)?);
        }
    }

    let text = report::render(&results);
    std::fs::write(&out, &text).with_context(|| format!("writing {}", out.display()))?;
    print!("{text}");
    eprintln!("report written to {}", out.display());
    Ok(())
}

/// The gateway binary: the one given, or `custos` next to this program.
fn custos_binary(given: Option<&Path>) -> Result<PathBuf> {
    let path = match given {
        Some(p) => p.to_path_buf(),
        None => std::env::current_exe()
            .context("locating this program")?
            .with_file_name("custos"),
    };
    if !path.is_file() {
        bail!(
            "no gateway binary at {}: build it with `cargo build --release -p custos` or pass \
             --custos PATH",
            path.display()
        );
    }
    Ok(path)
}
