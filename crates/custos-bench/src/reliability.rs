//! Figure 9: reliability of bulk transfers through the gateway.
//!
//! Many bulk transfers in a row through Custos, alternating output (`head -c` on the target)
//! and input (piped to `cat > /dev/null` on the target). A run counts as good only when every
//! byte arrived, the stream ended (EOF) and ssh exited with status 0 — the remote command's
//! exit status carried back through the gateway. A run that makes no progress is a hang: a
//! watchdog kills its ssh after a deadline and the run counts as failed, with the reason.

use std::io::Read;
use std::process::{Child, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use crate::network::{Fixture, Way};
use crate::stats::Samples;

/// What figure 9 reports.
pub struct ReliabilityResult {
    pub runs: usize,
    pub bytes: u64,
    /// Runs that ended with every byte, EOF and exit status 0.
    pub good: usize,
    /// Runs the watchdog had to kill.
    pub hangs: usize,
    /// Why each failed run failed, with its number.
    pub failures: Vec<String>,
    /// Seconds per good run.
    pub secs: Samples,
    /// The deadline each run had.
    pub deadline: Duration,
}

/// Runs `runs` transfers of `bytes` each through the gateway.
pub fn run(fixture: &Fixture, runs: usize, bytes: u64) -> Result<ReliabilityResult> {
    // Generous: a transfer slower than 5 MB/s (or a minute, for small ones) has stalled.
    let deadline = Duration::from_secs((bytes / 5_000_000).max(60));
    let mut result = ReliabilityResult {
        runs,
        bytes,
        good: 0,
        hangs: 0,
        failures: Vec::new(),
        secs: Samples::new(),
        deadline,
    };
    for i in 0..runs {
        let output = i % 2 == 0;
        let child = fixture
            .ssh_with(Way::Custos, &[])
            .arg(if output {
                format!("head -c {bytes} /dev/zero")
            } else {
                "exec cat > /dev/null".to_string()
            })
            .stdin(if output {
                Stdio::null()
            } else {
                Stdio::piped()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running ssh")?;
        let start = Instant::now();
        let (outcome, hung) = watched(child, deadline, |child| {
            if output {
                read_all(child, bytes)
            } else {
                write_all(child, bytes)
            }
        });
        let what = if output { "output" } else { "input" };
        let verdict = match outcome {
            Ok(()) if !hung => {
                result.good += 1;
                result.secs.push(start.elapsed().as_secs_f64());
                "ok".to_string()
            }
            Ok(()) => format!("{what} hung"),
            Err(e) if hung => format!("{what} hung, killed after {} s ({e})", deadline.as_secs()),
            Err(e) => format!("{what} failed: {e}"),
        };
        if hung {
            result.hangs += 1;
        }
        if verdict != "ok" {
            result.failures.push(format!("run {}: {verdict}", i + 1));
        }
        eprintln!("reliability: run {} of {runs} ({what}): {verdict}", i + 1);
    }
    Ok(result)
}

/// Runs `transfer` on `child` with a watchdog that kills the child after `deadline`; returns
/// the transfer's outcome and whether the watchdog fired.
fn watched(
    mut child: Child,
    deadline: Duration,
    transfer: impl FnOnce(&mut Child) -> std::result::Result<(), String>,
) -> (std::result::Result<(), String>, bool) {
    let pid = child.id() as libc::pid_t;
    let (done, wait) = mpsc::channel::<()>();
    let dog = thread::spawn(move || {
        if matches!(wait.recv_timeout(deadline), Err(RecvTimeoutError::Timeout)) {
            // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            true
        } else {
            false
        }
    });
    let outcome = transfer(&mut child).and_then(|()| {
        let status = child.wait().map_err(|e| format!("waiting for ssh: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            Err(format!("ssh ended with {status}: {}", err.trim()))
        }
    });
    if outcome.is_err() {
        let _ = child.kill();
        let _ = child.wait();
    }
    drop(done);
    let hung = dog.join().unwrap_or(false);
    (outcome, hung)
}

/// Reads the child's output to EOF and checks it was `bytes` long.
fn read_all(child: &mut Child, bytes: u64) -> std::result::Result<(), String> {
    let mut stdout = child.stdout.take().ok_or("no stdout")?;
    let mut buf = vec![0u8; 256 * 1024];
    let mut seen = 0u64;
    loop {
        match stdout.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => seen += n as u64,
            Err(e) => return Err(format!("reading after {seen} bytes: {e}")),
        }
    }
    if seen != bytes {
        return Err(format!("EOF after {seen} of {bytes} bytes"));
    }
    Ok(())
}

/// Writes `bytes` to the child's input, then closes it.
fn write_all(child: &mut Child, bytes: u64) -> std::result::Result<(), String> {
    let mut stdin = child.stdin.take().ok_or("no stdin")?;
    crate::network::write_zeros(&mut stdin, bytes)
        .map_err(|(at, e)| format!("writing after {at} bytes: {e}"))?;
    drop(stdin);
    // The output end must reach EOF too.
    let mut rest = Vec::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_end(&mut rest)
            .map_err(|e| format!("reading to EOF: {e}"))?;
    }
    Ok(())
}
