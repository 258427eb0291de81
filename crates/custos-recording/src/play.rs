//! Real-time terminal playback of a recording.

use std::io::Write;
use std::time::Duration;

use custos_term::Terminal;

use crate::event::EventKind;
use crate::export::ExportError;
use crate::reader::Reader;

/// Plays the terminal output of the primary PTY channel (or of the first channel with output)
/// to `out`, sleeping between events. `speed` scales time (2.0 = twice as fast), `idle_limit`
/// caps pauses (seconds), `at_secs` starts there: the screen at that time is written first
/// (as a keyframe after a terminal reset), found via [`Reader::seek`].
pub fn play(
    reader: &Reader,
    out: impl Write,
    speed: f64,
    idle_limit: Option<f64>,
    at_secs: Option<f64>,
) -> Result<(), ExportError> {
    play_with_sleep(reader, out, speed, idle_limit, at_secs, std::thread::sleep)
}

/// [`play`] with an injectable sleep function (tests pass a recorder of durations).
pub fn play_with_sleep(
    reader: &Reader,
    mut out: impl Write,
    speed: f64,
    idle_limit: Option<f64>,
    at_secs: Option<f64>,
    mut sleep: impl FnMut(Duration),
) -> Result<(), ExportError> {
    let speed = if speed.is_finite() && speed > 0.0 {
        speed
    } else {
        1.0
    };
    let at_us = at_secs
        .filter(|s| s.is_finite() && *s > 0.0)
        .map(|s| (s * 1e6) as u64)
        .unwrap_or(0);
    let channel = first_terminal_channel(reader)?;
    let seek = reader.seek(at_us)?;
    if at_us > 0
        && let Some(term) = channel.and_then(|c| seek.screens.get(&c))
    {
        out.write_all(&repaint(term))?;
        out.flush()?;
    }
    let mut prev = at_us;
    for ev in seek.remaining {
        let ev = ev?;
        if Some(ev.channel) != channel {
            continue;
        }
        let data = match &ev.kind {
            EventKind::Output(b) | EventKind::Stderr(b) => b,
            _ => continue,
        };
        let mut gap = ev.time_us.saturating_sub(prev) as f64 / 1e6;
        prev = ev.time_us.max(prev);
        if let Some(limit) = idle_limit.filter(|l| l.is_finite() && *l >= 0.0) {
            gap = gap.min(limit);
        }
        let wait = gap / speed;
        if wait > 0.0 && wait.is_finite() {
            sleep(Duration::from_secs_f64(wait.min(86_400.0)));
        }
        out.write_all(data)?;
        out.flush()?;
    }
    Ok(())
}

/// Bytes that reset a terminal and draw `screen` on it: what playback writes when it starts
/// mid-recording, and what a live watch starts from. The picture is exact on a terminal of
/// the screen's size.
pub fn repaint(screen: &Terminal) -> Vec<u8> {
    // RIS (ESC c): a full reset, so no mode or colour of what was on the terminal leaks in.
    const RESET: &[u8] = b"\x1bc";
    let dump = screen.keyframe();
    let mut out = Vec::with_capacity(RESET.len() + dump.len());
    out.extend_from_slice(RESET);
    out.extend_from_slice(dump.as_bytes());
    out
}

fn first_terminal_channel(reader: &Reader) -> Result<Option<u32>, ExportError> {
    let mut first_output = None;
    for ev in reader.events() {
        let ev = ev?;
        match ev.kind {
            EventKind::PtyRequest { .. } => return Ok(Some(ev.channel)),
            EventKind::Output(_) if first_output.is_none() => first_output = Some(ev.channel),
            _ => {}
        }
    }
    Ok(first_output)
}
