//! The benchmark harness: measures the costs Custos adds to an SSH session (rule evaluation,
//! interactive command extraction, throughput and connection set-up against direct ssh and an
//! OpenSSH bastion) and writes them, with machine details and targets, to BENCHMARKS.md.
//!
//! It is a measurement tool, not a test: nothing here fails on a slow figure. Each figure is
//! taken over several runs and reported as a median with the smallest and largest run; the
//! ways compared are interleaved within each run so that drift on a shared machine spreads
//! over all of them.
//!
//! The throughput and set-up figures run the `custos` binary found next to this one (build it
//! with `cargo build --release -p custos`), or the one given with `--custos`.

mod extraction;
mod network;
mod report;
mod rules;
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
    };

    if wants(What::Rules) {
        let passes = o
            .passes
            .map_or(if quick { 100 } else { 2000 }, |p| p as usize);
        eprintln!("rules: {runs} runs of {passes} passes over the corpus");
        results.rules = Some(rules::run(runs, passes));
    }
    if wants(What::Throughput) || wants(What::Setup) {
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
        eprintln!("network: {runs} runs, {mb} MB per transfer");
        results.network = Some(network::run(&fixture, runs, mb * 1_000_000, parts)?);
    }
    if wants(What::Extraction) {
        let mb = o.extraction_mb.unwrap_or(if quick { 8 } else { 256 });
        eprintln!("extraction: {runs} runs of {mb} MB per kind of output");
        results.extraction = Some(extraction::run(runs, (mb as usize) * 1_000_000));
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
