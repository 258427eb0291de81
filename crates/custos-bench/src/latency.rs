//! Figure 8: keystroke echo round trip in an interactive session, direct vs ProxyJump vs
//! Custos.
//!
//! `ssh -tt` runs on a pseudo-terminal of its own, as a person's terminal would run it, with an
//! interactive shell on the target. One letter is typed at a time, 20 ms apart, and timed from
//! the write to the terminal until its echo is read back. The three ways take turns within
//! each run. The time includes the local terminal and the reading thread, the same for every
//! way; the report gives what a way adds over direct ssh.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use custos_testkit::Pty;

use crate::network::{Fixture, Way};
use crate::stats::Samples;

/// Pause between two keys, about a fast typist's pace.
const KEY_GAP: Duration = Duration::from_millis(20);
/// Keys typed before the line is cleared with Ctrl-C.
const KEYS_PER_LINE: usize = 40;
const WAIT: Duration = Duration::from_secs(20);
const PROMPT: &str = "bench> ";

/// Round trips of one way.
pub struct WayLatency {
    pub way: Way,
    /// Per run: median round trip, ms.
    pub p50_ms: Samples,
    /// Per run: 99th percentile round trip, ms.
    pub p99_ms: Samples,
}

/// What figure 8 reports.
pub struct LatencyResult {
    pub keys_per_run: usize,
    pub ways: Vec<WayLatency>,
}

impl LatencyResult {
    pub fn way(&self, way: Way) -> Option<&WayLatency> {
        self.ways.iter().find(|w| w.way == way)
    }

    /// What `way` adds over direct ssh, in ms: (median p50, median p99).
    pub fn added(&self, way: Way) -> Option<(f64, f64)> {
        let d = self.way(Way::Direct)?;
        let w = self.way(way)?;
        Some((
            w.p50_ms.median() - d.p50_ms.median(),
            w.p99_ms.median() - d.p99_ms.median(),
        ))
    }
}

/// Opens an interactive session one way and waits for a known prompt.
fn open(fixture: &Fixture, way: Way) -> Result<Pty> {
    let cmd = fixture.ssh_with(way, &["-tt"]);
    let mut pty = Pty::spawn(cmd, 120, 40).with_context(|| format!("ssh ({})", way.label()))?;
    // The quotes keep the echo of this line from looking like the prompt.
    pty.send_line("PS1='ben''ch> '")?;
    pty.expect(PROMPT, WAIT)
        .with_context(|| format!("no prompt ({})", way.label()))?;
    Ok(pty)
}

/// Types `keys` letters and returns each echo time in ms.
fn type_keys(pty: &mut Pty, keys: usize) -> Result<Vec<f64>> {
    let mut times = Vec::with_capacity(keys);
    for i in 0..keys {
        if i > 0 && i % KEYS_PER_LINE == 0 {
            pty.send_control('c')?;
            pty.expect(PROMPT, WAIT)?;
        }
        std::thread::sleep(KEY_GAP);
        let key = [b'a' + (i % 26) as u8];
        let t = Instant::now();
        pty.write(&key)?;
        pty.expect(std::str::from_utf8(&key).unwrap_or("a"), WAIT)?;
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    pty.send_control('c')?;
    pty.expect(PROMPT, WAIT)?;
    Ok(times)
}

/// `runs` runs of `keys` keystrokes each way.
pub fn run(fixture: &Fixture, runs: usize, keys: usize) -> Result<LatencyResult> {
    let mut ways: Vec<WayLatency> = Way::ALL
        .iter()
        .map(|&way| WayLatency {
            way,
            p50_ms: Samples::new(),
            p99_ms: Samples::new(),
        })
        .collect();
    let mut sessions = Vec::new();
    for way in Way::ALL {
        let mut pty = open(fixture, way)?;
        // Untimed warm-up keys.
        type_keys(&mut pty, 5)?;
        sessions.push(pty);
    }
    for _ in 0..runs {
        for (w, pty) in ways.iter_mut().zip(sessions.iter_mut()) {
            let mut s = Samples::new();
            for t in type_keys(pty, keys).with_context(|| format!("typing ({})", w.way.label()))? {
                s.push(t);
            }
            w.p50_ms.push(s.median());
            w.p99_ms.push(s.quantile(0.99));
        }
    }
    Ok(LatencyResult {
        keys_per_run: keys,
        ways,
    })
}
