//! The harness still runs and writes a well-formed report. Sizes are tiny and nothing here
//! looks at a time: figures from a debug build on a busy machine mean nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

const BIN: &str = env!("CARGO_BIN_EXE_custos-bench");

/// Runs the harness with `args` plus tiny sizes, returns the report it wrote.
fn run(dir: &Path, args: &[&str]) -> String {
    let out_path = dir.join(format!("{}.md", args[0]));
    let out = Command::new(BIN)
        .args(args)
        .args([
            "--quick",
            "--runs",
            "2",
            "--passes",
            "3",
            "--extraction-mb",
            "1",
        ])
        .args([
            "--audit-events",
            "300",
            "--recording-mb",
            "1",
            "--seek-mb",
            "2",
            "--search-commands",
            "600",
            "--search-sessions",
            "30",
            "--keys",
            "5",
        ])
        .arg("--search-dir")
        .arg(dir)
        .args(["--size-mb", "1", "--out"])
        .arg(&out_path)
        .output()
        .expect("the harness binary runs");
    assert!(
        out.status.success(),
        "custos-bench {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read_to_string(&out_path).expect("the report file was written")
}

/// Headings in order, and every table row closed with the same column count as its header.
fn assert_well_formed(report: &str, sections: &[&str]) {
    let mut at = 0;
    for heading in ["# Custos benchmarks", "## Machine", "## Targets"]
        .iter()
        .chain(sections)
        .chain(&["## Reproducing"])
    {
        let found = report[at..]
            .find(heading)
            .unwrap_or_else(|| panic!("{heading:?} missing or out of order in:\n{report}"));
        at += found + heading.len();
    }
    let mut columns = None;
    for line in report.lines() {
        if !line.starts_with('|') {
            columns = None;
            continue;
        }
        assert!(line.ends_with('|'), "unclosed table row: {line}");
        let n = line.matches('|').count();
        assert_eq!(*columns.get_or_insert(n), n, "ragged table row: {line}");
    }
    assert!(!report.contains("NaN"), "a figure is missing:\n{report}");
}

#[test]
fn rules_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(dir.path(), &["rules"]);
    assert_well_formed(&report, &["## 1. Rules"]);
    assert!(report.contains("| Commands per second |"), "{report}");
    assert!(report.contains("commands/s on one core"), "{report}");
}

#[test]
fn extraction_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(dir.path(), &["extraction"]);
    assert_well_formed(&report, &["## 2. Extraction"]);
    assert!(report.contains("| compiler log |"), "{report}");
    assert!(report.contains("not measured"), "{report}");
}

#[test]
fn audit_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(dir.path(), &["audit"]);
    assert_well_formed(&report, &["## 4. Audit"]);
    assert!(report.contains("| Events per second |"), "{report}");
    assert!(report.contains("events/s appended"), "{report}");
}

#[test]
fn recording_size_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(dir.path(), &["recording-size"]);
    assert_well_formed(&report, &["## 5. Recording size"]);
    for stream in [
        "| `seq 1 N` |",
        "| compiler log |",
        "| interactive session |",
    ] {
        assert!(report.contains(stream), "{stream} missing:\n{report}");
    }
    assert!(report.contains("× gzip"), "{report}");
}

#[test]
fn seek_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(dir.path(), &["seek"]);
    assert_well_formed(&report, &["## 6. Seek"]);
    assert!(report.contains("| Open + seek + repaint, ms |"), "{report}");
}

#[test]
fn search_report() {
    let dir = tempfile::tempdir().expect("temp dir");
    let report = run(dir.path(), &["search"]);
    assert_well_formed(&report, &["## 7. Search"]);
    assert!(report.contains("| `kubectl` |"), "{report}");
    assert!(report.contains("Median over the terms"), "{report}");
}

/// The gateway binary built beside the harness, when there is one.
fn gateway_binary() -> Option<PathBuf> {
    let path = Path::new(BIN).with_file_name("custos");
    path.is_file().then_some(path)
}

/// Runs the harness with the gateway binary beside it; `None` (the test skips) without one.
fn run_with_gateway(args: &[&str]) -> Option<String> {
    let Some(gateway) = gateway_binary() else {
        eprintln!("skipped: no custos binary beside {BIN} (cargo build -p custos)");
        return None;
    };
    let dir = tempfile::tempdir().expect("temp dir");
    let mut args = args.to_vec();
    args.extend(["--custos", gateway.to_str().expect("UTF-8 path")]);
    Some(run(dir.path(), &args))
}

#[test]
fn setup_report() {
    let Some(report) = run_with_gateway(&["setup"]) else {
        return;
    };
    assert_well_formed(&report, &["## 3. Throughput and set-up"]);
    for way in [
        "| direct ssh |",
        "| ssh -J (OpenSSH bastion) |",
        "| Custos gateway |",
    ] {
        assert!(report.contains(way), "{way} missing:\n{report}");
    }
    assert!(report.contains("| Custos set-up time |"), "{report}");
}

#[test]
fn latency_report() {
    let Some(report) = run_with_gateway(&["latency"]) else {
        return;
    };
    assert_well_formed(&report, &["## 8. Latency"]);
    assert!(report.contains("| Custos gateway |"), "{report}");
    assert!(report.contains("to the p99 keystroke echo"), "{report}");
}

#[test]
fn reliability_report() {
    let Some(report) = run_with_gateway(&["reliability", "--transfers", "2"]) else {
        return;
    };
    assert_well_formed(&report, &["## 9. Reliability"]);
    assert!(report.contains("| Good transfers | 2 of 2 |"), "{report}");
    assert!(report.contains("| Hangs | 0 |"), "{report}");
}

#[test]
fn concurrency_report() {
    let Some(report) =
        run_with_gateway(&["concurrency", "--sessions", "5", "--concurrency-secs", "2"])
    else {
        return;
    };
    assert_well_formed(&report, &["## 10. Concurrency"]);
    assert!(report.contains("| Sessions open | 5 (5 – 5) |"), "{report}");
    assert!(
        report.contains("| Sessions dropped | 0 (0 – 0) |"),
        "{report}"
    );
    assert!(
        report.contains("Gateway RSS per idle session, MiB"),
        "{report}"
    );
}
