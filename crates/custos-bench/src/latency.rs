//! Figure 8: keystroke echo round trip in an interactive session, direct vs ProxyJump vs
//! Custos.
//!
//! `ssh -tt` runs on a pseudo-terminal of its own, as a person's terminal would run it, with an
//! interactive shell on the target. One letter is typed at a time and timed from the write to
//! the terminal until its echo is read back; the three ways take turns key by key, so that
//! whatever else the machine does falls on all of them alike. The time includes the local
//! terminal and the reading thread, the same for every way; the report gives what a way adds
//! over direct ssh, from the percentiles of all of a way's keys (a 99th percentile of a few
//! hundred keys is the second-slowest key, which says little).

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use custos_testkit::Pty;

use crate::network::{Fixture, Way};
use crate::stats::Samples;

/// Pause between two keys of the same session, about a fast typist's pace.
pub const KEY_GAP: Duration = Duration::from_millis(20);
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
    /// Every key of every run, ms.
    pub all_ms: Samples,
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

    /// What `way` adds over direct ssh, in ms, at the median and the 99th percentile of all
    /// keys.
    pub fn added(&self, way: Way) -> Option<(f64, f64)> {
        let d = self.way(Way::Direct)?;
        let w = self.way(way)?;
        Some((
            w.all_ms.median() - d.all_ms.median(),
            w.all_ms.quantile(0.99) - d.all_ms.quantile(0.99),
        ))
    }
}

/// Opens an interactive session one way and waits for a known prompt.
fn open(fixture: &Fixture, way: Way) -> Result<Pty> {
    let cmd = fixture.ssh_with(way, &["-tt"]);
    let mut pty = Pty::spawn(cmd, 120, 40).with_context(|| format!("ssh ({})", way.label()))?;
    // The quotes keep the echo of this line from looking like the prompt. No prompt command:
    // a login's dotfiles may run programs at every prompt.
    pty.send_line("unset PROMPT_COMMAND; PS1='ben''ch> '")?;
    pty.expect(PROMPT, WAIT)
        .with_context(|| format!("no prompt ({})", way.label()))?;
    Ok(pty)
}

/// Types key number `i` (clearing the line first every [`KEYS_PER_LINE`] keys) and returns
/// its echo time in ms.
fn type_key(pty: &mut Pty, i: usize) -> Result<f64> {
    if i > 0 && i.is_multiple_of(KEYS_PER_LINE) {
        pty.send_control('c')?;
        pty.expect(PROMPT, WAIT)?;
    }
    let key = [b'a' + (i % 26) as u8];
    let t = Instant::now();
    pty.write(&key)?;
    pty.expect(std::str::from_utf8(&key).unwrap_or("a"), WAIT)?;
    Ok(t.elapsed().as_secs_f64() * 1e3)
}

/// `runs` runs of `keys` keystrokes each way.
pub fn run(fixture: &Fixture, runs: usize, keys: usize) -> Result<LatencyResult> {
    let mut ways: Vec<WayLatency> = Way::ALL
        .iter()
        .map(|&way| WayLatency {
            way,
            p50_ms: Samples::new(),
            p99_ms: Samples::new(),
            all_ms: Samples::new(),
        })
        .collect();
    let mut sessions = Vec::new();
    for way in Way::ALL {
        let mut pty = open(fixture, way)?;
        // Untimed warm-up keys.
        for i in 0..5 {
            type_key(&mut pty, i)?;
        }
        pty.send_control('c')?;
        pty.expect(PROMPT, WAIT)?;
        sessions.push(pty);
    }
    let gap = KEY_GAP / sessions.len() as u32;
    for _ in 0..runs {
        let mut times: Vec<Samples> = ways.iter().map(|_| Samples::new()).collect();
        for i in 0..keys {
            for ((w, pty), t) in ways.iter().zip(sessions.iter_mut()).zip(times.iter_mut()) {
                std::thread::sleep(gap);
                t.push(type_key(pty, i).with_context(|| format!("typing ({})", w.way.label()))?);
            }
        }
        for ((w, pty), t) in ways.iter_mut().zip(sessions.iter_mut()).zip(times) {
            pty.send_control('c')?;
            pty.expect(PROMPT, WAIT)?;
            w.p50_ms.push(t.median());
            w.p99_ms.push(t.quantile(0.99));
            for x in t.values() {
                w.all_ms.push(*x);
            }
        }
    }
    Ok(LatencyResult {
        keys_per_run: keys,
        ways,
    })
}
