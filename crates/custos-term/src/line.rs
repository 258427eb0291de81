//! The terminal models of one interactive channel together: the command tracker reads command
//! lines off the screen, the echo tracker tells which typed keys were never echoed (a no-echo
//! prompt, so a password is never taken for a command), and the line as typed is kept as a
//! second opinion for the rules.
//!
//! Bulk output is not fed to the emulators byte for byte. A command line is read at Enter, so
//! what matters is the screen when the user types, and that is drawn by the last part of the
//! output. Large chunks arriving while no typed key awaits its echo are therefore deferred; of
//! a long run of them only the last [`DEFERRED_TAIL`] bytes are kept, and they are fed when
//! the user types, a small chunk arrives (a prompt, an echo) or the channel ends. Dropped
//! chunks that switch the terminal's screen buffer (full-screen programs) are fed anyway, so
//! full-screen detection stays exact.

use bytes::Bytes;
use std::collections::VecDeque;

use crate::command::{CommandEvent, CommandTracker};
use crate::echo::{ChunkId, EchoTracker, Verdict};

/// Chunks at least this long may be deferred.
pub const DEFER_MIN: usize = 1024;
/// Of deferred output, at least this many of the most recent bytes are fed to the models.
pub const DEFERRED_TAIL: usize = 64 * 1024;
/// The longest typed line kept for the rules.
const TYPED_CAP: usize = 4096;

/// The models of an interactive channel.
pub struct LineModel {
    /// Command lines off the screen.
    pub commands: CommandTracker,
    /// Which typed keys were echoed.
    pub echo: EchoTracker,
    /// A key of the current line was judged not echoed.
    pub secret: bool,
    /// The current line as typed (printable keys, Backspace, Ctrl-U), a second opinion for
    /// the rules when the screen is read wrongly (keys typed ahead of a prompt).
    pub typed: String,
    /// Inside an escape sequence typed by the user (arrows, function keys).
    in_escape: bool,
    /// Output not yet fed to the models, oldest first, with its time.
    deferred: VecDeque<(u64, Bytes)>,
    deferred_len: usize,
    /// Output bytes never fed to the models (bulk output skipped).
    skipped: u64,
    /// Input pieces with a smaller id belong to lines already submitted: a late verdict on
    /// them (a no-echo prompt judged after its Enter) must not taint the next line.
    line_start: ChunkId,
    /// Output chunks seen (fed or deferred).
    outputs: u64,
}

impl LineModel {
    /// Models for a terminal of `cols` × `rows`.
    pub fn new(cols: u16, rows: u16) -> LineModel {
        LineModel {
            commands: CommandTracker::new(cols, rows),
            echo: EchoTracker::new(),
            secret: false,
            typed: String::new(),
            in_escape: false,
            deferred: VecDeque::new(),
            deferred_len: 0,
            skipped: 0,
            line_start: 0,
            outputs: 0,
        }
    }

    /// Takes the echo tracker's verdicts; a redacted key marks the line secret.
    pub fn drain_decisions(&mut self) {
        while let Some(d) = self.echo.pop_decision() {
            if d.verdict == Verdict::Redact && d.id >= self.line_start {
                self.secret = true;
            }
        }
    }

    /// Output from the target. Returns what the command tracker reported (commands finished
    /// by shell-integration marks), possibly later than the output that caused it.
    pub fn output(&mut self, now: u64, d: Bytes) -> Vec<CommandEvent> {
        self.outputs += 1;
        if d.len() >= DEFER_MIN && self.echo.pending() == 0 {
            self.deferred_len += d.len();
            self.deferred.push_back((now, d));
            while self
                .deferred
                .front()
                .is_some_and(|(_, f)| self.deferred_len - f.len() >= DEFERRED_TAIL)
            {
                let Some((t, f)) = self.deferred.pop_front() else {
                    break;
                };
                self.deferred_len -= f.len();
                if switches_screen(&f) {
                    self.feed(t, &f);
                } else {
                    self.skipped += f.len() as u64;
                }
            }
            return Vec::new();
        }
        self.flush();
        self.feed(now, &d);
        self.commands.take_events()
    }

    /// Feeds deferred output to the models. Returns the tracker's events.
    pub fn flush(&mut self) -> Vec<CommandEvent> {
        while let Some((t, d)) = self.deferred.pop_front() {
            self.feed(t, &d);
        }
        self.deferred_len = 0;
        self.commands.take_events()
    }

    fn feed(&mut self, now: u64, d: &[u8]) {
        self.commands.on_output(now, d);
        self.echo.on_output(now, d);
        self.drain_decisions();
    }

    /// Input from the user (deferred output is fed first: it is what the user saw).
    pub fn input(&mut self, now: u64, d: &[u8]) -> Vec<CommandEvent> {
        let mut events = self.flush();
        for &b in d {
            match b {
                _ if self.in_escape => self.in_escape = !(b.is_ascii_alphabetic() || b == b'~'),
                0x1b => self.in_escape = true,
                0x7f | 0x08 => {
                    self.typed.pop();
                }
                0x03 | 0x15 | b'\r' | b'\n' => self.typed.clear(),
                0x20..=0x7e if self.typed.len() < TYPED_CAP => self.typed.push(b as char),
                _ => {}
            }
        }
        let pieces = self.echo.on_input(now, d);
        self.drain_decisions();
        if d.contains(&b'\r')
            && let Some(last) = pieces.iter().map(|p| p.id).max()
        {
            self.line_start = self.line_start.max(last + 1);
        }
        events.extend(self.commands.on_input(now, d));
        events
    }

    /// Output chunks seen so far (a caller waiting for the target's answer watches this).
    pub fn outputs(&self) -> u64 {
        self.outputs
    }

    /// The terminal was resized.
    pub fn resize(&mut self, cols: u16, rows: u16) -> Vec<CommandEvent> {
        let events = self.flush();
        self.commands.resize(cols, rows);
        events
    }

    /// Output bytes that bulk-output deferral never fed to the models.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }
}

/// Whether `d` switches between the normal and the alternate screen (`CSI ? 47/1047/1049 h|l`).
fn switches_screen(d: &[u8]) -> bool {
    let finder = memchr::memmem::Finder::new(b"\x1b[?");
    finder.find_iter(d).any(|i| {
        let rest = &d[i + 3..];
        [&b"1049"[..], b"1047", b"47"]
            .iter()
            .any(|m| rest.starts_with(m) && matches!(rest.get(m.len()), Some(b'h' | b'l' | b';')))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(lines: std::ops::Range<u32>) -> Bytes {
        let mut v = Vec::new();
        for i in lines {
            v.extend_from_slice(format!("line {i:08}\r\n").as_bytes());
        }
        Bytes::from(v)
    }

    #[test]
    fn bulk_output_is_skipped_but_the_screen_after_it_is_right() {
        let mut m = LineModel::new(80, 24);
        m.output(0, Bytes::from_static(b"$ "));
        m.input(1, b"seq 1 1000000");
        m.output(2, Bytes::from_static(b"seq 1 1000000"));
        let ev = m.input(3, b"\r");
        assert!(
            ev.iter().any(
                |e| matches!(e, CommandEvent::Command { text, .. } if text == "seq 1 1000000")
            )
        );
        for k in 0..100 {
            m.output(4, bulk(k * 1000..(k + 1) * 1000));
        }
        assert!(m.skipped() > 1_000_000, "skipped {}", m.skipped());
        m.output(5, Bytes::from_static(b"$ "));
        m.input(6, b"echo next");
        m.output(7, Bytes::from_static(b"echo next"));
        let ev = m.input(8, b"\r");
        assert!(
            ev.iter()
                .any(|e| matches!(e, CommandEvent::Command { text, .. } if text == "echo next")),
            "{ev:?}"
        );
    }

    #[test]
    fn screen_switches_in_skipped_output_are_still_seen() {
        assert!(switches_screen(b"abc\x1b[?1049hdef"));
        assert!(switches_screen(b"\x1b[?47l"));
        assert!(!switches_screen(b"\x1b[?25h\x1b[?2004h"));
        assert!(!switches_screen(b"\x1b[?104"));
        let mut m = LineModel::new(80, 24);
        m.output(0, Bytes::from_static(b"$ "));
        m.input(1, b"vi x");
        m.output(2, Bytes::from_static(b"vi x"));
        m.input(3, b"\r");
        let mut big = b"\x1b[?1049h".to_vec();
        big.extend(std::iter::repeat_n(b'~', 4000));
        m.output(4, Bytes::from(big));
        for k in 0..30 {
            m.output(5, bulk(k * 1000..(k + 1) * 1000));
        }
        // Keys typed inside the full-screen program are no command.
        m.input(6, b":wq");
        m.output(7, Bytes::from_static(b":wq"));
        let ev = m.input(8, b"\r");
        assert!(
            !ev.iter().any(|e| matches!(e, CommandEvent::Command { .. })),
            "{ev:?}"
        );
    }
}
