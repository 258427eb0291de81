//! Figure 2: CPU cost of interactive command extraction on bulk terminal output.
//!
//! Per output chunk this runs what the gateway runs on an interactive channel: the command
//! tracker and the echo tracker (with the echo decisions drained and the command events taken),
//! then the output-rule prefilter on the chunk and on the window over the seam with the previous
//! chunk. What is left out: recording, forwarding, and the full output-rule evaluation that only
//! runs when the prefilter says a rule may match (the corpora below never trigger it).

use bytes::Bytes;
use custos_rules::Ruleset;
use custos_term::LineModel;

use crate::stats::{Samples, thread_cpu_seconds};

/// Bytes per output chunk, about what one SSH data message from an OpenSSH target carries.
pub const CHUNK: usize = 16 * 1024;

/// Terminal size of the simulated session.
const COLS: u16 = 120;
const ROWS: u16 = 40;

/// A kind of bulk output.
#[derive(Debug, Clone, Copy)]
pub enum Corpus {
    /// `seq 1 N`: short numeric lines.
    Seq,
    /// A build log: compiler lines with colour escapes, warnings and file positions.
    BuildLog,
}

impl Corpus {
    /// Both kinds, in the order they are reported.
    pub const ALL: [Corpus; 2] = [Corpus::Seq, Corpus::BuildLog];

    /// Name in the report.
    pub fn label(self) -> &'static str {
        match self {
            Corpus::Seq => "`seq`-like lines",
            Corpus::BuildLog => "compiler log",
        }
    }

    /// The command that would print it.
    fn command(self) -> &'static str {
        match self {
            Corpus::Seq => "seq 1 100000000",
            Corpus::BuildLog => "make -j8 2>&1",
        }
    }

    /// About `bytes` bytes of this output as a terminal shows it (CR LF line ends).
    pub fn generate(self, bytes: usize) -> Vec<u8> {
        self.generate_from(1, bytes).0
    }

    /// About `bytes` bytes of this output starting at line `first`, and the next line's
    /// number, so that a long output can be generated a block at a time.
    pub fn generate_from(self, first: u64, bytes: usize) -> (Vec<u8>, u64) {
        let mut out = Vec::with_capacity(bytes + 256);
        let mut i = first;
        while out.len() < bytes {
            match self {
                Corpus::Seq => out.extend_from_slice(format!("{i}\r\n").as_bytes()),
                Corpus::BuildLog => build_log_line(&mut out, i),
            }
            i += 1;
        }
        (out, i)
    }
}

fn build_log_line(out: &mut Vec<u8>, i: u64) {
    let module = i % 397;
    let line = match i % 8 {
        0 => format!(
            "\x1b[1m\x1b[32m   Compiling\x1b[0m service-{module} v0.{}.{} (/srv/build/crates/service-{module})\r\n",
            i % 9,
            i % 31
        ),
        1 => format!(
            "gcc -O2 -g -Wall -Wextra -fPIC -Iinclude -Ibuild/gen -c -o build/obj/unit{i}.o src/unit{module}.c\r\n"
        ),
        2 => format!(
            "\x1b[1m\x1b[33mwarning\x1b[0m\x1b[1m: unused variable: `count_{module}`\x1b[0m\r\n"
        ),
        3 => format!(
            "   \x1b[1m\x1b[34m-->\x1b[0m src/unit{module}.c:{}:{}\r\n",
            i % 2000,
            i % 80
        ),
        4 => "    \x1b[1m\x1b[34m|\x1b[0m\r\n".to_string(),
        5 => format!(
            "src/unit{module}.c:{}:5: note: in expansion of macro 'CHECK_BOUNDS'\r\n",
            i % 1500
        ),
        6 => format!("  CC      drivers/net/eth{module}.o\r\n"),
        _ => format!(
            "[{:>3}%] Building CXX object src/CMakeFiles/core.dir/part{module}.cpp.o\r\n",
            i % 101
        ),
    };
    out.extend_from_slice(line.as_bytes());
}

/// CPU seconds spent on one pass over a corpus.
struct PassCost {
    models: f64,
    prefilter: f64,
}

/// Figures for one corpus.
pub struct CorpusResult {
    pub corpus: Corpus,
    /// Terminal models, CPU seconds per GB.
    pub models: Samples,
    /// Output-rule prefilter, CPU seconds per GB.
    pub prefilter: Samples,
    /// Both, CPU seconds per GB.
    pub total: Samples,
}

/// What figure 2 reports.
pub struct ExtractionResult {
    pub bytes_per_run: usize,
    pub corpora: Vec<CorpusResult>,
}

impl ExtractionResult {
    /// The costlier corpus's median total, CPU seconds per GB.
    pub fn worst_median(&self) -> f64 {
        self.corpora
            .iter()
            .map(|c| c.total.median())
            .fold(f64::NAN, f64::max)
    }
}

/// Feeds `bytes` of each corpus through the models `runs` times, interleaving the corpora.
pub fn run(runs: usize, bytes: usize) -> ExtractionResult {
    let rules = Ruleset::default_pack();
    let data: Vec<(Corpus, Vec<u8>)> = Corpus::ALL
        .iter()
        .map(|&c| (c, c.generate(bytes)))
        .collect();
    let mut corpora: Vec<CorpusResult> = Corpus::ALL
        .iter()
        .map(|&corpus| CorpusResult {
            corpus,
            models: Samples::new(),
            prefilter: Samples::new(),
            total: Samples::new(),
        })
        .collect();
    for (corpus, bytes) in &data {
        // An untimed warm-up pass over a slice of each corpus.
        let head = &bytes[..bytes.len().min(4 * CHUNK)];
        one_pass(&rules, *corpus, head);
    }
    for _ in 0..runs {
        for (i, (corpus, bytes)) in data.iter().enumerate() {
            let cost = one_pass(&rules, *corpus, bytes);
            let gb = bytes.len() as f64 / 1e9;
            corpora[i].models.push(cost.models / gb);
            corpora[i].prefilter.push(cost.prefilter / gb);
            corpora[i].total.push((cost.models + cost.prefilter) / gb);
        }
    }
    ExtractionResult {
        bytes_per_run: bytes,
        corpora,
    }
}

/// The terminal models of one interactive channel, exactly as the gateway keeps them; the
/// count of reported events keeps the work observable.
struct Models(LineModel);

impl Models {
    fn new() -> Models {
        Models(LineModel::new(COLS, ROWS))
    }

    fn output(&mut self, now: u64, d: Bytes) -> usize {
        self.0.output(now, d).len()
    }

    fn input(&mut self, now: u64, d: &[u8]) -> usize {
        self.0.input(now, d).len()
    }
}

/// The output-rule state of one channel, exactly as the gateway keeps it.
#[derive(Default)]
struct Prefilter(custos_rules::OutputWindow);

impl Prefilter {
    /// Returns whether a full check would run.
    fn check(&mut self, rules: &Ruleset, d: &[u8]) -> bool {
        !self.0.next(rules, d).is_empty()
    }
}

/// One simulated command: prompt, typed command, its bulk output, the next prompt and key.
fn one_pass(rules: &Ruleset, corpus: Corpus, bytes: &[u8]) -> PassCost {
    let mut models = Models::new();
    let mut prefilter = Prefilter::default();
    let mut now = 1_000u64;
    let mut sink = 0usize;
    let prompt = b"\x1b]0;root@web1: ~\x07root@web1:~# ";
    let t0 = thread_cpu_seconds();
    sink += models.output(now, Bytes::from_static(prompt));
    let typed = corpus.command().as_bytes();
    sink += models.input(now, typed);
    sink += models.output(now, Bytes::copy_from_slice(typed));
    sink += models.input(now, b"\r");
    sink += models.output(now, Bytes::from_static(b"\r\n"));
    let mut spent_models = thread_cpu_seconds() - t0;
    // The models and the prefilter each go over all the chunks in a loop timed as a whole:
    // reading the thread's CPU clock costs about half a microsecond here, as much as the
    // prefilter spends on a chunk, so timing each chunk would measure the clock.
    let all = Bytes::copy_from_slice(bytes);
    let chunks: Vec<Bytes> = (0..all.len())
        .step_by(CHUNK)
        .map(|start| all.slice(start..(start + CHUNK).min(all.len())))
        .collect();
    let t = thread_cpu_seconds();
    for chunk in &chunks {
        now += 50;
        sink += models.output(now, chunk.clone());
    }
    let mid = thread_cpu_seconds();
    for chunk in &chunks {
        sink += usize::from(prefilter.check(rules, chunk));
    }
    let end = thread_cpu_seconds();
    spent_models += mid - t;
    let spent_prefilter = end - mid;
    // The next prompt and key make the tracker render what it deferred.
    let t = thread_cpu_seconds();
    sink += models.output(now, Bytes::from_static(prompt));
    sink += models.input(now, b"l");
    spent_models += thread_cpu_seconds() - t;
    std::hint::black_box(sink);
    PassCost {
        models: spent_models,
        prefilter: spent_prefilter,
    }
}
