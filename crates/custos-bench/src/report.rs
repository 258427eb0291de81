//! The Markdown report: machine, versions, each figure with median and spread, ratios, and
//! the targets met or missed.

use std::fmt::Write as _;
use std::process::Command;

use crate::extraction::ExtractionResult;
use crate::network::{NetworkResult, Way};
use crate::rules::RulesResult;
use crate::stats::Samples;

/// Rules: median evaluation time per command, at most this many microseconds.
pub const TARGET_RULES_MEDIAN_US: f64 = 10.0;
/// Rules: at least this many commands per second on one core.
pub const TARGET_RULES_PER_SECOND: f64 = 100_000.0;
/// Extraction and output rules: at most this share of the session's CPU.
pub const TARGET_EXTRACTION_SHARE: f64 = 0.05;

/// Everything one invocation measured; absent parts were not run.
pub struct Results {
    pub command: String,
    pub quick: bool,
    pub runs: usize,
    pub rules: Option<RulesResult>,
    pub extraction: Option<ExtractionResult>,
    pub network: Option<NetworkResult>,
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
    let _ = writeln!(
        out,
        "## Reproducing\n\n```sh\ncargo build --release -p custos -p custos-bench\n\
         target/release/custos-bench all            # full: 1 GB transfers\n\
         target/release/custos-bench all --quick    # a quick look\n```"
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
                let _ = writeln!(
                    out,
                    "| {label}: Custos vs ProxyJump (no fixed target) | {} × ProxyJump, {} × direct | — |",
                    num(pick(c).median() / pick(j).median()),
                    num(pick(c).median() / pick(d).median())
                );
            }
        }
        if let (Some(c), Some(j)) = (net.way(Way::Custos), net.way(Way::ProxyJump))
            && !c.setup_s.is_empty()
        {
            let _ = writeln!(
                out,
                "| Set-up: Custos vs ProxyJump (no fixed target) | {} × ProxyJump's time | — |",
                num(c.setup_s.median() / j.setup_s.median())
            );
        }
    }
    out.push('\n');
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
         time.\n",
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
         `ProxyCommand ssh -W %h:%p bastion` that `-J` stands for. The three ways are \
         interleaved within each run. Bulk output: `head -c {size} /dev/zero` on the target \
         to /dev/null; bulk input: {size} bytes piped to `cat > /dev/null` on the target \
         (MB = 10^6 bytes). Transfer rates are timed from the first byte of output, or from the \
         target's readiness for input, to the end, leaving out the connection set-up, which is \
         timed separately as the wall time of `ssh … true`.\n",
        size = net.bytes
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
