//! The Markdown report: machine, versions, each figure with median and spread, ratios, and
//! the targets met or missed.

use std::fmt::Write as _;
use std::process::Command;

use crate::audit::AuditResult;
use crate::concurrency::ConcurrencyResult;
use crate::extraction::ExtractionResult;
use crate::latency::LatencyResult;
use crate::network::{NetworkResult, Way};
use crate::recording::{SeekFigures, SizeResult};
use crate::reliability::ReliabilityResult;
use crate::rules::RulesResult;
use crate::search::SearchResult;
use crate::stats::Samples;

/// Rules: median evaluation time per command, at most this many microseconds.
pub const TARGET_RULES_MEDIAN_US: f64 = 10.0;
/// Rules: at least this many commands per second on one core.
pub const TARGET_RULES_PER_SECOND: f64 = 100_000.0;
/// Extraction and output rules: at most this share of the session's CPU.
pub const TARGET_EXTRACTION_SHARE: f64 = 0.05;
/// Audit: at least this many events per second appended, chained and checkpointed.
pub const TARGET_AUDIT_PER_SECOND: f64 = 20_000.0;
/// Recording size: at most this share of `gzip -6` of the same output.
pub const TARGET_RECORDING_TO_GZIP: f64 = 0.8;
/// Seek: the screen at 90% of a long recording in at most this many milliseconds.
pub const TARGET_SEEK_MS: f64 = 100.0;
/// Bulk throughput through Custos against an OpenSSH ProxyJump bastion.
pub const TARGET_THROUGHPUT_VS_JUMP: f64 = 1.0;
/// Gateway CPU seconds per GB moved, recording on.
pub const TARGET_CPU_S_PER_GB: f64 = 2.5;
/// Connection set-up time Custos adds over direct ssh, ms.
pub const TARGET_SETUP_ADDED_MS: f64 = 5.0;
/// Search: median time of a command search, at most this many milliseconds.
pub const TARGET_SEARCH_MS: f64 = 50.0;
/// Latency: at most this many milliseconds added to the 99th percentile echo round trip.
pub const TARGET_LATENCY_P99_ADDED_MS: f64 = 0.5;
/// Concurrency: the gateway's memory per idle interactive session, at most this many MiB.
pub const TARGET_MIB_PER_IDLE_SESSION: f64 = 0.5;

/// Everything one invocation measured; absent parts were not run.
pub struct Results {
    pub command: String,
    pub quick: bool,
    pub runs: usize,
    pub rules: Option<RulesResult>,
    pub extraction: Option<ExtractionResult>,
    pub network: Option<NetworkResult>,
    pub audit: Option<AuditResult>,
    pub recording_size: Option<SizeResult>,
    pub seek: Option<SeekFigures>,
    pub search: Option<SearchResult>,
    pub latency: Option<LatencyResult>,
    pub reliability: Option<ReliabilityResult>,
    pub concurrency: Option<ConcurrencyResult>,
}

impl Results {
    /// CPU share of interactive extraction in a terminal session that moves bulk output,
    /// taking the gateway's cost for an end-to-end bulk transfer as the rest of the session.
    pub fn extraction_share(&self) -> Option<f64> {
        let e = self.extraction.as_ref()?.worst_median();
        let g = self.network.as_ref()?.gateway_cpu_output.median();
        (e.is_finite() && g.is_finite() && e + g > 0.0).then(|| e / (e + g))
    }
}

/// A number with about three significant digits.
fn num(x: f64) -> String {
    if !x.is_finite() {
        return "n/a".into();
    }
    let a = x.abs();
    if a >= 10_000.0 {
        // Thousands separators make throughput readable.
        let mut digits = format!("{:.0}", x);
        let mut out = String::new();
        let neg = digits.starts_with('-');
        if neg {
            digits.remove(0);
        }
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if neg { format!("-{out}") } else { out }
    } else if a >= 100.0 {
        format!("{x:.0}")
    } else if a >= 10.0 {
        format!("{x:.1}")
    } else if a >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    }
}

/// `median (min – max)`.
fn spread(s: &Samples) -> String {
    if s.is_empty() {
        return "n/a".into();
    }
    format!("{} ({} – {})", num(s.median()), num(s.min()), num(s.max()))
}

fn status(met: bool) -> &'static str {
    if met { "met" } else { "missed" }
}

/// Status of a figure that should stay at or below `target`, saying by how much it missed.
fn status_at_most(measured: f64, target: f64, unit: &str) -> String {
    if !measured.is_finite() {
        "not measured".into()
    } else if measured <= target {
        "met".into()
    } else {
        format!(
            "missed by {}{unit} ({:.0}% over)",
            num(measured - target),
            (measured / target - 1.0) * 100.0
        )
    }
}

/// Status of a figure that should stay at or above `target`, saying by how much it missed.
fn status_at_least(measured: f64, target: f64, unit: &str) -> String {
    if !measured.is_finite() {
        "not measured".into()
    } else if measured >= target {
        "met".into()
    } else {
        format!(
            "missed by {}{unit} ({:.0}% under)",
            num(target - measured),
            (1.0 - measured / target) * 100.0
        )
    }
}

/// Bytes as MB (10^6) or kB with about three significant digits.
fn size(bytes: f64) -> String {
    if bytes >= 1e6 {
        format!("{} MB", num(bytes / 1e6))
    } else {
        format!("{} kB", num(bytes / 1e3))
    }
}

fn first_line(cmd: &str, args: &[&str], stderr: bool) -> String {
    Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| {
            let text = if stderr { o.stderr } else { o.stdout };
            String::from_utf8_lossy(&text)
                .lines()
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        })
        .filter(|l| !l.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn machine(out: &mut String) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "unknown".into());
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(out, "- CPU: {} ({cores} cores available)", cpu_model());
    let _ = writeln!(out, "- Kernel: {}", first_line("uname", &["-sr"], false));
    let _ = writeln!(out, "- OpenSSH: {}", first_line("ssh", &["-V"], true));
    let _ = writeln!(out, "- rustc: {}", first_line("rustc", &["-V"], false));
    let _ = writeln!(
        out,
        "- Build: {}\n",
        if cfg!(debug_assertions) {
            "debug (figures are not representative)"
        } else {
            "release"
        }
    );
}

/// Renders the report.
/// What profiling found and what changed, with before and after figures: a record kept with
/// the harness, so that every report carries it.
const PROFILING: &str = include_str!("profiling.md");

pub fn render(r: &Results) -> String {
    let mut out = String::new();
    let date = time::OffsetDateTime::now_utc().date();
    let _ = writeln!(out, "# Custos benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `custos-bench {}` on {date}, {} mode, {} runs per figure. Each figure is the \
         median over the runs, with the smallest and largest run in parentheses. Nothing here is \
         a pass/fail test; the targets below are goals.\n",
        r.command,
        if r.quick { "quick" } else { "full" },
        r.runs
    );
    machine(&mut out);
    targets(&mut out, r);
    if let Some(rules) = &r.rules {
        rules_section(&mut out, rules);
    }
    if let Some(ex) = &r.extraction {
        extraction_section(&mut out, r, ex);
    }
    if let Some(net) = &r.network {
        network_section(&mut out, net);
    }
    if let Some(a) = &r.audit {
        audit_section(&mut out, a);
    }
    if let Some(z) = &r.recording_size {
        size_section(&mut out, z);
    }
    if let Some(s) = &r.seek {
        seek_section(&mut out, s);
    }
    if let Some(s) = &r.search {
        search_section(&mut out, s);
    }
    if let Some(l) = &r.latency {
        latency_section(&mut out, l);
    }
    if let Some(rel) = &r.reliability {
        reliability_section(&mut out, rel);
    }
    if let Some(c) = &r.concurrency {
        concurrency_section(&mut out, c);
    }
    out.push_str(PROFILING);
    out.push('\n');
    let _ = writeln!(
        out,
        "## Reproducing\n\n```sh\n\
         scripts/bench all            # full: 1 GB transfers\n\
         scripts/bench all --quick    # a quick look\n\
         scripts/bench seek --seek-mb 1000 --runs 5   # one figure\n```\n\n\
         `scripts/bench` builds the release binaries, then runs `target/release/custos-bench`; \
         `scripts/bench --help` lists the size of each figure as an option."
    );
    out
}

fn targets(out: &mut String, r: &Results) {
    let _ = writeln!(out, "## Targets\n");
    let _ = writeln!(out, "| Target | Measured | Status |\n|---|---|---|");
    if let Some(rules) = &r.rules {
        let m = rules.median_us.median();
        let _ = writeln!(
            out,
            "| Rules: median ≤ {TARGET_RULES_MEDIAN_US} µs per command | {} µs | {} |",
            num(m),
            status(m <= TARGET_RULES_MEDIAN_US)
        );
        let p = rules.per_second.median();
        let _ = writeln!(
            out,
            "| Rules: ≥ {} commands/s on one core | {} | {} |",
            num(TARGET_RULES_PER_SECOND),
            num(p),
            status(p >= TARGET_RULES_PER_SECOND)
        );
    }
    if r.extraction.is_some() {
        match r.extraction_share() {
            Some(share) => {
                let _ = writeln!(
                    out,
                    "| Extraction + output rules ≤ {:.0}% of the session's CPU | {:.1}% | {} |",
                    TARGET_EXTRACTION_SHARE * 100.0,
                    share * 100.0,
                    status(share <= TARGET_EXTRACTION_SHARE)
                );
            }
            None => {
                let _ = writeln!(
                    out,
                    "| Extraction + output rules ≤ {:.0}% of the session's CPU | needs the \
                     `throughput` figure | not measured |",
                    TARGET_EXTRACTION_SHARE * 100.0
                );
            }
        }
    }
    if let Some(net) = &r.network {
        for (label, pick) in [
            (
                "Bulk output",
                (|w: &crate::network::WayResult| &w.output_mbps)
                    as fn(&crate::network::WayResult) -> &Samples,
            ),
            ("Bulk input", |w| &w.input_mbps),
        ] {
            if let (Some(c), Some(j), Some(d)) = (
                net.way(Way::Custos),
                net.way(Way::ProxyJump),
                net.way(Way::Direct),
            ) && !pick(c).is_empty()
            {
                let ratio = pick(c).median() / pick(j).median();
                let _ = writeln!(
                    out,
                    "| {label}: Custos ≥ {} × ProxyJump | {} × ProxyJump ({} × direct) | {} |",
                    num(TARGET_THROUGHPUT_VS_JUMP),
                    num(ratio),
                    num(pick(c).median() / pick(d).median()),
                    status_at_least(ratio, TARGET_THROUGHPUT_VS_JUMP, " × ProxyJump")
                );
            }
        }
        for (label, cpu) in [
            ("bulk output", &net.gateway_cpu_output),
            ("bulk input", &net.gateway_cpu_input),
        ] {
            if !cpu.is_empty() {
                let m = cpu.median();
                let _ = writeln!(
                    out,
                    "| Gateway CPU ≤ {} s per GB moved, recording on, {label} | {} s/GB | {} |",
                    num(TARGET_CPU_S_PER_GB),
                    num(m),
                    status_at_most(m, TARGET_CPU_S_PER_GB, " s/GB")
                );
            }
        }
        if let (Some(c), Some(d)) = (net.way(Way::Custos), net.way(Way::Direct))
            && !c.setup_s.is_empty()
        {
            let added = (c.setup_s.median() - d.setup_s.median()) * 1e3;
            let _ = writeln!(
                out,
                "| Set-up: Custos adds ≤ {} ms over direct (same key exchange on every hop) | \
                 {} ms ({} × ProxyJump's time) | {} |",
                num(TARGET_SETUP_ADDED_MS),
                num(added),
                net.way(Way::ProxyJump).map_or_else(
                    || "n/a".into(),
                    |j| num(c.setup_s.median() / j.setup_s.median())
                ),
                status_at_most(added, TARGET_SETUP_ADDED_MS, " ms")
            );
        }
    }
    if let Some(a) = &r.audit {
        let m = a.per_second.median();
        let _ = writeln!(
            out,
            "| Audit: ≥ {} events/s appended with chain and checkpoints | {} | {} |",
            num(TARGET_AUDIT_PER_SECOND),
            num(m),
            status_at_least(m, TARGET_AUDIT_PER_SECOND, " events/s")
        );
    }
    if let Some(z) = &r.recording_size {
        for s in &z.streams {
            let m = s.to_gzip.median();
            let _ = writeln!(
                out,
                "| Recording size ≤ {TARGET_RECORDING_TO_GZIP} × gzip -6, {} | {} × gzip | {} |",
                s.stream.label(),
                num(m),
                status_at_most(m, TARGET_RECORDING_TO_GZIP, " × gzip")
            );
        }
    }
    if let Some(s) = &r.seek {
        let m = s.total_ms.median();
        let _ = writeln!(
            out,
            "| Seek: screen at 90% of {} of output ≤ {} ms | {} ms | {} |",
            size(s.raw as f64),
            num(TARGET_SEEK_MS),
            num(m),
            status_at_most(m, TARGET_SEEK_MS, " ms")
        );
    }
    if let Some(s) = &r.search {
        let m = s.median_ms;
        let _ = writeln!(
            out,
            "| Search: median ≤ {} ms over {} commands | {} ms | {} |",
            num(TARGET_SEARCH_MS),
            num(s.commands as f64),
            num(m),
            status_at_most(m, TARGET_SEARCH_MS, " ms")
        );
    }
    if let Some((_, p99)) = r.latency.as_ref().and_then(|l| l.added(Way::Custos)) {
        let _ = writeln!(
            out,
            "| Latency: Custos adds ≤ {} ms to the p99 keystroke echo | {} ms | {} |",
            num(TARGET_LATENCY_P99_ADDED_MS),
            num(p99),
            status_at_most(p99, TARGET_LATENCY_P99_ADDED_MS, " ms")
        );
    }
    if let Some(rel) = &r.reliability {
        let _ = writeln!(
            out,
            "| Reliability: every bulk transfer of {} ends with EOF and exit status | {} of {} | {} |",
            size(rel.bytes as f64),
            rel.good,
            rel.runs,
            status(rel.good == rel.runs)
        );
    }
    if let Some(c) = &r.concurrency {
        concurrency_targets(out, c);
    }
    out.push('\n');
}

fn concurrency_targets(out: &mut String, c: &ConcurrencyResult) {
    let dropped = c.dropped.max();
    let pace = c.pace().min();
    let _ = writeln!(
        out,
        "| Concurrency: {} interactive sessions at once, a command a second each, none dropped | \
         {} open, {} dropped, {} commands/s per session (worst run) | {} |",
        c.sessions,
        count(c.opened.min()),
        count(dropped),
        num(pace),
        if dropped.is_nan() {
            "not measured".to_string()
        } else if dropped > 0.0 || c.opened.min() < c.sessions as f64 {
            "missed".to_string()
        } else if pace < 0.95 {
            format!(
                "none dropped, but the pace was missed: answers came later than the next \
                 command was due (round trip p50 {} ms, p99 {} ms; whole machine {} cores busy)",
                num(c.rtt_p50_ms.median()),
                num(c.rtt_p99_ms.median()),
                num(c.machine_cores.median())
            )
        } else {
            "met".to_string()
        }
    );
    let m = c.gateway_rss_mib.median();
    let _ = writeln!(
        out,
        "| Memory: gateway ≤ {TARGET_MIB_PER_IDLE_SESSION} MiB per idle session (OpenSSH sshd \
         for comparison) | {} MiB RSS, {} MiB PSS (sshd: {} MiB PSS) | {} |",
        num(m),
        num(c.gateway_pss_mib.median()),
        num(c.sshd_pss_mib.median()),
        status_at_most(m, TARGET_MIB_PER_IDLE_SESSION, " MiB")
    );
}

fn concurrency_section(out: &mut String, c: &ConcurrencyResult) {
    let _ = writeln!(
        out,
        "## 10. Concurrency: interactive sessions at once
"
    );
    let _ = writeln!(
        out,
        "{} sessions per run, {} run{}, opened inside the harness with the russh client \
         through `custos serve` (recording, command audit and the default rules on) to the \
         private OpenSSH target, each its own connection with a PTY and a shell, {} logins in \
         flight at a time; each shell first turns off its history and its prompt command (the \
         login's dotfiles may run programs at every prompt, which would measure them rather \
         than the gateway). \
         Once all are open and have been idle for {} s, the gateway's memory (VmRSS from \
         /proc/PID/status; Pss and Private from /proc/PID/smaps_rollup) is compared with its \
         memory before the first session ({} RSS); the `sshd` processes under the target's \
         listener ({} per session, shells not counted; the target login is root here, for whom \
         OpenSSH keeps one process per connection where another user would have two) are read \
         the same way. Then every session types `echo 'tick-'I-N` and Enter \
         once a second for {} s, the sessions spread evenly over the second, and waits for the \
         answer; a session that fails to open, closes, errs or waits more than {} s for an \
         answer is dropped; a session whose answer comes later than its next command was due \
         types that command on receipt, so it falls behind the pace rather than piling up \
         commands. The clients, the gateway, the target and its shells share the machine, with \
         whatever else runs on it (see the whole machine's CPU below). MiB = 2^20 bytes.\n",
        c.sessions,
        c.opened.values().len(),
        if c.opened.values().len() == 1 {
            ""
        } else {
            "s"
        },
        crate::concurrency::OPEN_IN_FLIGHT,
        c.idle.as_secs(),
        mib(c.baseline.rss),
        num(c.sshd_procs_per_session),
        c.typing_secs,
        crate::concurrency::ANSWER_WAIT.as_secs()
    );
    let _ = writeln!(out, "| Figure | Median (min – max) |\n|---|---|");
    for (label, s) in [
        ("Sessions open", &c.opened),
        ("Sessions dropped", &c.dropped),
        ("Commands typed", &c.typed),
        ("Commands answered", &c.answered),
    ] {
        let _ = writeln!(
            out,
            "| {label} | {} ({} – {}) |",
            count(s.median()),
            count(s.min()),
            count(s.max())
        );
    }
    let rows: [(&str, &Samples); 15] = [
        ("Sessions opened per second", &c.open_per_s),
        ("Commands typed per session per second", &c.pace()),
        ("Gateway RSS per idle session, MiB", &c.gateway_rss_mib),
        ("Gateway PSS per idle session, MiB", &c.gateway_pss_mib),
        (
            "Gateway private memory per idle session, MiB",
            &c.gateway_private_mib,
        ),
        (
            "Gateway RSS per session at the end of the typing, MiB",
            &c.gateway_busy_rss_mib,
        ),
        ("OpenSSH sshd PSS per session, MiB", &c.sshd_pss_mib),
        (
            "OpenSSH sshd RSS per session (shared pages in each), MiB",
            &c.sshd_rss_mib,
        ),
        ("Command round trip, median, ms", &c.rtt_p50_ms),
        ("Command round trip, 99th percentile, ms", &c.rtt_p99_ms),
        (
            "Gateway CPU while all sessions are idle, cores",
            &c.gateway_idle_cores,
        ),
        ("Gateway CPU while typing, cores", &c.gateway_cores),
        (
            "Clients' CPU while typing (the harness), cores",
            &c.client_cores,
        ),
        (
            "Target sshd and shells' CPU while typing, cores",
            &c.target_cores,
        ),
        ("Whole machine's CPU while typing, cores", &c.machine_cores),
    ];
    for (label, s) in rows {
        let _ = writeln!(out, "| {label} | {} |", spread(s));
    }
    out.push('\n');
    let limit = c
        .fd_limit
        .map_or_else(|| "unknown".to_string(), |l| num(l as f64));
    let _ = writeln!(
        out,
        "The gateway held {} file descriptors per open session; its limit on open files is {limit}.\n",
        num(c.fds_per_session)
    );
    if !c.drop_reasons.is_empty() {
        let _ = writeln!(out, "Dropped sessions, by reason:\n");
        for (why, n) in &c.drop_reasons {
            let _ = writeln!(out, "- {n}: {why}");
        }
        out.push('\n');
    }
}

/// A count: a whole number with thousands separators.
fn count(x: f64) -> String {
    if x.is_finite() && x >= 10_000.0 {
        num(x)
    } else if x.is_finite() {
        format!("{x:.0}")
    } else {
        "n/a".into()
    }
}

/// Bytes as MiB.
fn mib(bytes: f64) -> String {
    format!("{} MiB", num(bytes / (1024.0 * 1024.0)))
}

fn reliability_section(out: &mut String, r: &ReliabilityResult) {
    let _ = writeln!(out, "## 9. Reliability: bulk transfers through Custos\n");
    let _ = writeln!(
        out,
        "{} transfers of {} through the gateway, one after another, alternating bulk output \
         (`head -c` on the target) and bulk input (piped to `cat > /dev/null` on the target). A \
         transfer is good when every byte arrived, the stream ended and ssh exited with status \
         0. A watchdog kills a transfer still running after {} s and counts it as a hang.\n",
        r.runs,
        size(r.bytes as f64),
        r.deadline.as_secs()
    );
    let _ = writeln!(out, "| Figure | Value |\n|---|---|");
    let _ = writeln!(out, "| Good transfers | {} of {} |", r.good, r.runs);
    let _ = writeln!(out, "| Hangs | {} |", r.hangs);
    if !r.secs.is_empty() {
        let _ = writeln!(out, "| Seconds per good transfer | {} |", spread(&r.secs));
    }
    out.push('\n');
    if !r.failures.is_empty() {
        let _ = writeln!(out, "Failed transfers:\n");
        for f in &r.failures {
            let _ = writeln!(out, "- {f}");
        }
        out.push('\n');
    }
}

fn rules_section(out: &mut String, r: &RulesResult) {
    let _ = writeln!(out, "## 1. Rules: commands against the default pack\n");
    let _ = writeln!(
        out,
        "`Ruleset::default_pack().evaluate(Event::Command {{ .. }}, ctx)` on one thread, over a \
         corpus of {} commands (everyday administration, long pipelines and loops; {} of them \
         match a rule), in a production-labelled context; {} evaluations per run, each timed.\n",
        r.corpus, r.matching, r.evaluations_per_run
    );
    let _ = writeln!(out, "| Figure | Median (min – max) |\n|---|---|");
    let _ = writeln!(out, "| µs per command, median | {} |", spread(&r.median_us));
    let _ = writeln!(
        out,
        "| µs per command, 99th percentile | {} |",
        spread(&r.p99_us)
    );
    let _ = writeln!(out, "| Commands per second | {} |\n", spread(&r.per_second));
}

fn extraction_section(out: &mut String, r: &Results, ex: &ExtractionResult) {
    let _ = writeln!(out, "## 2. Extraction: terminal models on bulk output\n");
    let _ = writeln!(
        out,
        "What the gateway runs per output chunk of an interactive channel: the command tracker \
         and the echo tracker, then the output-rule prefilter on the chunk and on the seam with \
         the previous one. {} MB of each kind of output per run, in {} KiB chunks, thread CPU \
         time; the models and the prefilter each go over all the chunks in a loop timed as a \
         whole (reading the thread's CPU clock costs about half a microsecond here, as much as \
         the prefilter spends on a chunk).\n",
        num(ex.bytes_per_run as f64 / 1e6),
        crate::extraction::CHUNK / 1024
    );
    let _ = writeln!(
        out,
        "| Output | Models, CPU s/GB | Prefilter, CPU s/GB | Total, CPU s/GB |\n|---|---|---|---|"
    );
    for c in &ex.corpora {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            c.corpus.label(),
            spread(&c.models),
            spread(&c.prefilter),
            spread(&c.total)
        );
    }
    out.push('\n');
    match (&r.network, r.extraction_share()) {
        (Some(net), Some(share)) => {
            let _ = writeln!(
                out,
                "For context: the gateway spent {} CPU s/GB relaying bulk output end to end \
                 (figure 3, no terminal). Adding the costlier extraction above to it, extraction \
                 and output rules would be {:.1}% of such a session's CPU.\n",
                spread(&net.gateway_cpu_output),
                share * 100.0
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "The share of a session's CPU needs the gateway's own cost per GB; run `all` or \
                 `throughput` with this figure.\n"
            );
        }
    }
}

fn network_section(out: &mut String, net: &NetworkResult) {
    let _ = writeln!(
        out,
        "## 3. Throughput and set-up: direct, ProxyJump, Custos\n"
    );
    let _ = writeln!(
        out,
        "A private OpenSSH sshd as the target, a second one as the bastion for ProxyJump, and \
         `custos serve` in front of the same target, all on 127.0.0.1; ProxyJump runs as the \
         `ProxyCommand ssh -W %h:%p bastion` that `-J` stands for. Every hop uses the same \
         key exchange, {kex} (the clients ask for it, the sshd instances accept nothing else), \
         so that set-up times compare the ways, not the algorithms. The three ways are \
         interleaved within each run. Bulk output: `head -c {size} /dev/zero` on the target \
         to /dev/null; bulk input: {size} bytes piped to `cat > /dev/null` on the target \
         (MB = 10^6 bytes). Transfer rates are timed from the first byte of output, or from the \
         target's readiness for input, to the end, leaving out the connection set-up, which is \
         timed separately as the wall time of `ssh … true`.\n",
        size = net.bytes,
        kex = crate::network::KEX
    );
    let _ = writeln!(
        out,
        "| Way | Bulk output, MB/s | Bulk input, MB/s | Set-up, ms |\n|---|---|---|---|"
    );
    for w in &net.ways {
        let mut setup_ms = Samples::new();
        for v in w.setup_s.values() {
            setup_ms.push(v * 1e3);
        }
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            w.way.label(),
            spread(&w.output_mbps),
            spread(&w.input_mbps),
            spread(&setup_ms)
        );
    }
    out.push('\n');
    if let (Some(c), Some(j), Some(d)) = (
        net.way(Way::Custos),
        net.way(Way::ProxyJump),
        net.way(Way::Direct),
    ) {
        let _ = writeln!(
            out,
            "| Ratio (medians) | vs ProxyJump | vs direct |\n|---|---|---|"
        );
        let ratio = |a: &Samples, b: &Samples| num(a.median() / b.median());
        if !c.output_mbps.is_empty() {
            let _ = writeln!(
                out,
                "| Custos bulk output throughput | {} | {} |",
                ratio(&c.output_mbps, &j.output_mbps),
                ratio(&c.output_mbps, &d.output_mbps)
            );
            let _ = writeln!(
                out,
                "| Custos bulk input throughput | {} | {} |",
                ratio(&c.input_mbps, &j.input_mbps),
                ratio(&c.input_mbps, &d.input_mbps)
            );
        }
        if !c.setup_s.is_empty() {
            let _ = writeln!(
                out,
                "| Custos set-up time | {} | {} |",
                ratio(&c.setup_s, &j.setup_s),
                ratio(&c.setup_s, &d.setup_s)
            );
        }
        out.push('\n');
    }
    if !net.gateway_cpu_output.is_empty() {
        let _ = writeln!(
            out,
            "Gateway process CPU (user + system, from /proc/PID/stat, which counts in clock \
             ticks of 10 ms: small transfers read coarsely; the connection's set-up is included, which weighs on \
             small transfers): {} CPU s/GB of bulk output, {} CPU \
             s/GB of bulk input.\n",
            spread(&net.gateway_cpu_output),
            spread(&net.gateway_cpu_input)
        );
    }
}

fn audit_section(out: &mut String, a: &AuditResult) {
    let _ = writeln!(out, "## 4. Audit: appending events\n");
    let _ = writeln!(
        out,
        "`AuditLog` over `AuditStore` on a new SQLite file per run (WAL), as the gateway runs it: \
         every event hash-chained, an Ed25519 checkpoint signed every {} events ({} in the last \
         run). {} events per run (nine typed commands to one login), timed from the first \
         `emit` to the return of `flush`, when all are durable.\n",
        crate::audit::CHECKPOINT_EVERY,
        a.checkpoints,
        num(a.events as f64)
    );
    let _ = writeln!(out, "| Figure | Median (min – max) |\n|---|---|");
    let _ = writeln!(out, "| Events per second | {} |\n", spread(&a.per_second));
}

fn size_section(out: &mut String, z: &SizeResult) {
    let _ = writeln!(out, "## 5. Recording size against gzip\n");
    let _ = writeln!(
        out,
        "About {} of each kind of terminal output recorded through `Recorder` with the \
         gateway's default tunables (events, keyframes, zstd, AES-256-GCM, hash chain, signed \
         manifest) on one PTY channel, and the size of the sealed file compared with the real \
         `gzip -6` of the same raw output. Bulk output comes in {} KiB chunks; the interactive \
         session has its keystrokes as one-byte input events echoed one byte at a time, short \
         command outputs and full-screen redraws, with the pauses of a person typing. The \
         events carry their session times and the recorder cuts segments as it would live: \
         after 1 MiB of events or 1 s of session time, whichever comes first. The recording \
         holds more than gzip sees: the keystrokes, a timestamp per event, and a keyframe (the \
         whole screen) every 1 MiB of output or 5 minutes, which is what makes seeking fast. \
         Each segment is compressed on its own (zstd level 3 for large segments, 12 for those \
         up to 64 KiB) so that any keyframe can be read without what precedes it; an \
         interactive session's segments hold a second of work each, too little for the \
         compressor to find much repetition, which is why that stream compresses worse than \
         gzip does over the whole output.\n",
        size(z.bytes_per_stream as f64),
        crate::extraction::CHUNK / 1024
    );
    let _ = writeln!(
        out,
        "| Output | Raw | gzip -6 | Recording | Recording / gzip | Recording / raw |\n\
         |---|---|---|---|---|---|"
    );
    for s in &z.streams {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            s.stream.label(),
            size(s.raw as f64),
            size(s.gzip as f64),
            size(s.recording.median()),
            spread(&s.to_gzip),
            spread(&s.to_raw)
        );
    }
    out.push('\n');
}

fn seek_section(out: &mut String, s: &SeekFigures) {
    let _ = writeln!(out, "## 6. Seek: the screen at 90% of a long recording\n");
    let _ = writeln!(
        out,
        "{} of compiler-log output recorded with the default tunables ({} file, {} segments, \
         {:.0} s of session time; writing it took {:.1} s). Each run opens the file with \
         `Reader::open`, calls `Reader::seek` at 90% of the duration (the last keyframe before \
         it, then the events up to it) and renders the screen with `play::repaint`, as \
         `custos play --at` does. The file has just been written, so it is read from the page \
         cache: a cold read from disk adds the time to read the segments from the keyframe on.\n",
        size(s.raw as f64),
        size(s.file as f64),
        s.segments,
        s.duration_us as f64 / 1e6,
        s.build_s
    );
    let _ = writeln!(out, "| Figure | Median (min – max) |\n|---|---|");
    let _ = writeln!(out, "| Open, ms | {} |", spread(&s.open_ms));
    let _ = writeln!(
        out,
        "| Open + seek + repaint, ms | {} |\n",
        spread(&s.total_ms)
    );
}

fn search_section(out: &mut String, s: &SearchResult) {
    let _ = writeln!(out, "## 7. Search: commands across many sessions\n");
    let limit_note = if s.hit_time_limit {
        format!(
            " The build stopped at its time limit: {} of the {} commands asked for were stored.",
            num(s.commands as f64),
            num(s.requested as f64)
        )
    } else {
        String::new()
    };
    let reuse_note = if s.reused > 0 {
        format!(
            " {} of them were stored by earlier runs, which this run continued: the store is \
             kept between runs, and the build time counts every run that stored commands.",
            num(s.reused as f64)
        )
    } else {
        String::new()
    };
    let _ = writeln!(
        out,
        "{} synthetic commands (variations of the rules corpus) over {} sessions, stored in \
         batches through `Store::record_commands` into a SQLite database in {} ({} with its \
         trigram index), which took {:.0} s.{reuse_note}{limit_note} Each term is then searched \
         with `Store::search_commands` and the limit `custos commands search` uses by default \
         (the newest {}), once per run. The search walks the trigram index from the newest \
         command back and stops at the limit, so a term found in millions of commands costs \
         no more than one found in a few; the slowest are rare terms made of common pieces \
         (a host name with a number), whose walk goes further back. The store is closed and reopened every {} commands during the build (a \
         precaution: one early build saw its write-ahead log grow without being \
         checkpointed).\n",
        num(s.commands as f64),
        num(s.sessions as f64),
        s.location,
        size(s.db_bytes as f64),
        s.build_s,
        crate::search::LIMIT,
        crate::search::REOPEN_EVERY
    );
    let _ = writeln!(
        out,
        "| Term | Rows returned | ms, median (min – max) |\n|---|---|---|"
    );
    for (term, times, rows) in &s.terms {
        let _ = writeln!(out, "| `{term}` | {rows} | {} |", spread(times));
    }
    let _ = writeln!(out, "\nMedian over the terms: {} ms.\n", num(s.median_ms));
}

fn latency_section(out: &mut String, l: &LatencyResult) {
    let _ = writeln!(out, "## 8. Latency: keystroke echo round trip\n");
    let _ = writeln!(
        out,
        "`ssh -tt` on a pseudo-terminal of its own, with an interactive shell on the target, \
         reached the three ways of figure 3. One letter at a time, timed from the write to the \
         terminal to the echo read back; {} keys per way and run, the ways taking turns key by \
         key ({} ms between two keys of one session), so that whatever else the machine does \
         falls on all of them alike. The local terminal and reading thread are in every \
         figure; the added time over direct ssh is what a way costs. The percentiles are of \
         every key of every run ({} per way); the spread in brackets is that of the runs' own \
         percentiles.\n",
        l.keys_per_run,
        crate::latency::KEY_GAP.as_millis(),
        l.ways.first().map_or(0, |w| w.all_ms.values().len())
    );
    let _ = writeln!(
        out,
        "| Way | p50, ms | p99, ms | p50 added, ms | p99 added, ms |\n|---|---|---|---|---|"
    );
    for w in &l.ways {
        let (a50, a99) = l.added(w.way).unwrap_or((f64::NAN, f64::NAN));
        let _ = writeln!(
            out,
            "| {} | {} ({} – {}) | {} ({} – {}) | {} | {} |",
            w.way.label(),
            num(w.all_ms.median()),
            num(w.p50_ms.min()),
            num(w.p50_ms.max()),
            num(w.all_ms.quantile(0.99)),
            num(w.p99_ms.min()),
            num(w.p99_ms.max()),
            num(a50),
            num(a99)
        );
    }
    out.push('\n');
}
