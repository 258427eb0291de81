//! No-echo detection: was a chunk of user input echoed back by the remote side?
//!
//! A terminal normally echoes what the user types. Programs that read secrets (sudo, su,
//! passwd, ssh-keygen, `read -s`) switch echo off. The gateway cannot see the remote tty
//! flags, so it infers them from the byte streams:
//!
//! 1. If the current output line, when the user starts typing a line, looks like a secret
//!    prompt ("Password:", "Enter passphrase ...:", "PIN:", "Verification code:" ...), every
//!    piece of input up to Enter is redacted.
//! 2. Otherwise a piece of printable input is kept once later output (escape sequences and
//!    control bytes skipped) contains its text. It is redacted when the timeout (1.5 s by
//!    default) expires first, or earlier when the remote side answers the Enter typed after it
//!    with a bare line feed (nothing printable since the previous line break): that is what a
//!    no-echo prompt does. Enter alone does not decide, because fast typists and pastes send
//!    Enter before the echo comes back. On the alternate screen (full-screen programs redraw
//!    instead of echoing) any output reacting to the input counts as an echo, including the
//!    output of a key that quits the program and leaves the alternate screen (`q` in less).
//! 3. Control input (escape sequences, arrows, Ctrl-C, Tab, Backspace) is never secret on its
//!    own; inside a line already judged no-echo it is redacted too. Enter is always kept.
//! 4. Inside a bracketed paste (`ESC [200~` … `ESC [201~`) sent while the remote side has
//!    asked for bracketed paste mode (`ESC [?2004h`, as readline and zle do while they read a
//!    line), the line editor shows the pasted text only after the end mark. Pasted pieces are
//!    therefore judged from the end mark on (their timeout runs from their arrival all the
//!    same), and [`EchoTracker::pending`] does not count them before it: a caller holding a
//!    pasted line break must not wait for an echo that cannot come yet. Line breaks inside the
//!    paste do not end the input line. A paste mark split across two input chunks is not
//!    recognised (the paste is then judged like typed keys).
//!
//! Decisions are released strictly in input order, so a recorder can hold every later event
//! behind an unresolved piece and release them as soon as [`EchoTracker::pop_decision`] yields.
//! Limits: the tracker errs on the side of redaction (vim normal-mode commands that draw no
//! text, for example, are redacted when they produce no output at all).

use std::collections::VecDeque;
use std::ops::Range;

/// Identifier of one piece of input, unique within an [`EchoTracker`].
pub type ChunkId = u64;

/// Default time after which an unechoed piece of input is redacted.
pub const DEFAULT_TIMEOUT_US: u64 = 1_500_000;

/// Most printable output characters remembered while waiting for an echo.
const WINDOW_CAP: usize = 8192;
/// Most characters of the current output line remembered for prompt detection.
const LINE_CAP: usize = 512;
/// Most Enter keys remembered while waiting for the line breaks that answer them.
const MAX_UNANSWERED: usize = 64;

/// What to do with a piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The input was echoed (or is harmless): record it.
    Keep,
    /// The input was typed at a no-echo prompt: record only that something was typed.
    Redact,
}

/// A resolved piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// The piece this decision is about.
    pub id: ChunkId,
    /// Whether to keep or redact it.
    pub verdict: Verdict,
}

/// The class of a piece of input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PieceKind {
    /// A run of printable characters.
    Text,
    /// A control byte or an escape sequence (arrows, function keys, Ctrl-C, Tab, Backspace).
    Control,
    /// Enter: CR, LF or CR LF.
    Enter,
}

/// One piece of an input chunk as split by [`EchoTracker::on_input`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputPiece {
    /// Identifier that a later [`Decision`] refers to.
    pub id: ChunkId,
    /// Byte range of the piece inside the chunk given to `on_input`.
    pub range: Range<usize>,
    /// Class of the piece.
    pub kind: PieceKind,
}

#[derive(Debug)]
struct Pending {
    id: ChunkId,
    kind: PieceKind,
    time_us: u64,
    line_no: u64,
    prompt: bool,
    /// Inside a bracketed paste that has not ended: no echo can have come yet.
    in_paste: bool,
    /// Typed while a full-screen program had the alternate screen.
    on_alt_screen: bool,
    text: String,
    output_seen: bool,
    unechoed_newline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    Ground,
    Esc,
    EscIntermediate,
    Csi,
    Str,
    StrEsc,
}

/// Infers, from output and input byte streams of one terminal, which input was not echoed.
#[derive(Debug)]
pub struct EchoTracker {
    timeout_us: u64,
    next_id: ChunkId,
    state: OutState,
    csi: Vec<u8>,
    utf8: Vec<u8>,
    line: String,
    alt_screen: bool,
    window: String,
    window_line_start: usize,
    unanswered_enters: VecDeque<u64>,
    line_no: u64,
    line_open: bool,
    line_prompt: bool,
    /// The remote side asked for bracketed paste mode (`ESC [?2004h`).
    bracketed_paste: bool,
    /// Input is between the start and end marks of a bracketed paste.
    in_paste: bool,
    resolving_line: Option<u64>,
    resolving_no_echo: bool,
    pending: VecDeque<Pending>,
    decisions: VecDeque<Decision>,
}

impl Default for EchoTracker {
    fn default() -> Self {
        Self::new()
    }
}

impl EchoTracker {
    /// Creates a tracker with the default 1.5 s echo timeout.
    pub fn new() -> Self {
        Self::with_timeout_us(DEFAULT_TIMEOUT_US)
    }

    /// Creates a tracker with a custom echo timeout in microseconds.
    pub fn with_timeout_us(timeout_us: u64) -> Self {
        Self {
            timeout_us,
            next_id: 0,
            state: OutState::Ground,
            csi: Vec::new(),
            utf8: Vec::new(),
            line: String::new(),
            alt_screen: false,
            window: String::new(),
            window_line_start: 0,
            unanswered_enters: VecDeque::new(),
            line_no: 0,
            line_open: false,
            line_prompt: false,
            bracketed_paste: false,
            in_paste: false,
            resolving_line: None,
            resolving_no_echo: false,
            pending: VecDeque::new(),
            decisions: VecDeque::new(),
        }
    }

    /// Number of pieces still waiting for a decision, not counting those of a bracketed paste
    /// that has not ended (the line editor echoes them only after its end mark).
    pub fn pending(&self) -> usize {
        self.pending.iter().filter(|p| !p.in_paste).count()
    }

    /// Time at which the oldest pending piece times out, if any.
    pub fn deadline_us(&self) -> Option<u64> {
        self.pending
            .front()
            .map(|p| p.time_us.saturating_add(self.timeout_us))
    }

    /// Whether the remote program has switched to the alternate screen.
    pub fn alt_screen(&self) -> bool {
        self.alt_screen
    }

    /// The next decision, in input order.
    pub fn pop_decision(&mut self) -> Option<Decision> {
        self.decisions.pop_front()
    }

    /// Registers a chunk of user input; returns how it was split into pieces, each of which
    /// gets exactly one [`Decision`] later (possibly immediately).
    pub fn on_input(&mut self, time_us: u64, bytes: &[u8]) -> Vec<InputPiece> {
        self.poll(time_us);
        let pieces = split_input(bytes);
        let mut out = Vec::with_capacity(pieces.len());
        for (range, kind) in pieces {
            let id = self.next_id;
            self.next_id += 1;
            if !self.line_open {
                self.line_open = true;
                self.line_no += 1;
                self.line_prompt = looks_like_secret_prompt(&self.line);
            }
            let piece = &bytes[range.clone()];
            let pasted = self.in_paste && piece != PASTE_END;
            if piece == PASTE_START {
                self.in_paste = self.bracketed_paste;
            } else if piece == PASTE_END {
                self.end_paste();
            }
            // A line break inside a paste is text for the line editor, not an Enter.
            let ends_line =
                (kind == PieceKind::Enter && !pasted) || piece == [0x03] || piece == [0x04];
            let text = if kind == PieceKind::Text {
                String::from_utf8_lossy(piece).into_owned()
            } else {
                String::new()
            };
            if self.pending.is_empty() {
                self.window.clear();
                self.window_line_start = 0;
            }
            self.pending.push_back(Pending {
                id,
                kind,
                time_us,
                line_no: self.line_no,
                prompt: self.line_prompt,
                in_paste: pasted,
                on_alt_screen: self.alt_screen,
                text,
                output_seen: false,
                unechoed_newline: false,
            });
            if ends_line {
                self.line_open = false;
                if self.unanswered_enters.len() >= MAX_UNANSWERED {
                    self.unanswered_enters.pop_front();
                }
                self.unanswered_enters.push_back(self.line_no);
            }
            out.push(InputPiece { id, range, kind });
        }
        self.resolve(time_us);
        out
    }

    /// Registers output from the remote side.
    pub fn on_output(&mut self, time_us: u64, bytes: &[u8]) {
        self.poll(time_us);
        if bytes.is_empty() {
            return;
        }
        for p in self.pending.iter_mut() {
            p.output_seen = true;
        }
        for &b in bytes {
            self.output_byte(time_us, b);
        }
        self.resolve(time_us);
    }

    /// Applies timeouts at `now_us`; call it periodically while pieces are pending.
    pub fn poll(&mut self, now_us: u64) {
        self.resolve(now_us);
    }

    fn output_byte(&mut self, time_us: u64, b: u8) {
        match self.state {
            OutState::Ground => match b {
                0x1b => {
                    self.utf8.clear();
                    self.state = OutState::Esc;
                }
                // A carriage return alone only rewinds the line (redraws, progress bars);
                // line feed is what answers an Enter (the tty echoes it as CR LF).
                b'\r' => {
                    self.utf8.clear();
                    self.line.clear();
                }
                b'\n' => {
                    self.utf8.clear();
                    self.line_break(time_us);
                }
                0x08 => {
                    self.line.pop();
                }
                0..=0x1f | 0x7f => {}
                _ => self.output_utf8(b),
            },
            OutState::Esc => match b {
                b'[' => {
                    self.csi.clear();
                    self.state = OutState::Csi;
                }
                b']' | b'P' | b'X' | b'^' | b'_' => self.state = OutState::Str,
                b' '..=b'/' => self.state = OutState::EscIntermediate,
                _ => self.state = OutState::Ground,
            },
            OutState::EscIntermediate => {
                if !(b' '..=b'/').contains(&b) {
                    self.state = OutState::Ground;
                }
            }
            OutState::Csi => match b {
                0x40..=0x7e => {
                    self.csi_final(b);
                    self.state = OutState::Ground;
                }
                0x1b => self.state = OutState::Esc,
                _ => {
                    if self.csi.len() < 32 {
                        self.csi.push(b);
                    }
                }
            },
            OutState::Str => match b {
                0x07 => self.state = OutState::Ground,
                0x1b => self.state = OutState::StrEsc,
                _ => {}
            },
            OutState::StrEsc => {
                self.state = if b == b'\\' {
                    OutState::Ground
                } else {
                    OutState::Str
                }
            }
        }
    }

    fn output_utf8(&mut self, b: u8) {
        if b < 0x80 {
            self.utf8.clear();
            self.printable(b as char);
            return;
        }
        self.utf8.push(b);
        match std::str::from_utf8(&self.utf8) {
            Ok(s) => {
                let chars: Vec<char> = s.chars().collect();
                self.utf8.clear();
                for c in chars {
                    self.printable(c);
                }
            }
            Err(e) if e.error_len().is_some() || self.utf8.len() >= 4 => {
                self.utf8.clear();
                self.printable('\u{FFFD}');
            }
            Err(_) => {}
        }
    }

    fn printable(&mut self, c: char) {
        if self.line.len() < LINE_CAP * 4 {
            self.line.push(c);
        } else {
            // Keep the tail: a prompt is at the end of the line.
            let cut = self.line.len() - LINE_CAP;
            let cut = (cut..self.line.len())
                .find(|i| self.line.is_char_boundary(*i))
                .unwrap_or(self.line.len());
            self.line.drain(..cut);
            self.line.push(c);
        }
        if !self.pending.is_empty() {
            self.window.push(c);
            if self.window.len() > WINDOW_CAP {
                let cut = (self.window.len() - WINDOW_CAP / 2..self.window.len())
                    .find(|i| self.window.is_char_boundary(*i))
                    .unwrap_or(self.window.len());
                self.window.drain(..cut);
                self.window_line_start = self.window_line_start.saturating_sub(cut);
            }
        }
    }

    fn csi_final(&mut self, fin: u8) {
        match fin {
            // Cursor positioning starts a new logical "line" for prompt detection.
            b'H' | b'f' | b'd' => self.line.clear(),
            b'h' | b'l' => {
                if let Some(params) = self.csi.strip_prefix(b"?") {
                    let alt = params
                        .split(|c| *c == b';')
                        .any(|p| p == b"1049" || p == b"1047" || p == b"47");
                    if alt {
                        self.alt_screen = fin == b'h';
                        self.line.clear();
                    }
                    if params.split(|c| *c == b';').any(|p| p == b"2004") {
                        self.bracketed_paste = fin == b'h';
                        if !self.bracketed_paste {
                            self.end_paste();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// The paste ended (its end mark, or the remote side left bracketed paste mode): its pieces
    /// may be echoed from now on.
    fn end_paste(&mut self) {
        self.in_paste = false;
        for p in self.pending.iter_mut() {
            p.in_paste = false;
        }
    }

    fn line_break(&mut self, time_us: u64) {
        // First let what was echoed so far match.
        self.resolve(time_us);
        // A line break answers the oldest Enter not answered yet. If nothing printable came
        // since the previous break, the remote side answered that Enter with a bare line break:
        // the text typed on that line was not echoed.
        if let Some(line_no) = self.unanswered_enters.pop_front() {
            let bare = self.window.len() == self.window_line_start;
            let echo_started = match self.pending.front() {
                Some(p) if p.kind == PieceKind::Text => echo_in_progress(&self.window, &p.text),
                _ => false,
            };
            if bare && !echo_started {
                for p in self.pending.iter_mut() {
                    if p.line_no <= line_no && p.kind == PieceKind::Text {
                        p.unechoed_newline = true;
                    }
                }
            }
        }
        self.window_line_start = self.window.len();
        self.line.clear();
        self.resolve(time_us);
    }

    fn resolve(&mut self, now_us: u64) {
        while let Some(front) = self.pending.front() {
            if self.resolving_line != Some(front.line_no) {
                self.resolving_line = Some(front.line_no);
                self.resolving_no_echo = front.prompt;
            }
            let verdict = match front.kind {
                PieceKind::Enter => Verdict::Keep,
                PieceKind::Control if self.resolving_no_echo => Verdict::Redact,
                PieceKind::Control => Verdict::Keep,
                PieceKind::Text => {
                    let timed_out = now_us.saturating_sub(front.time_us) >= self.timeout_us;
                    if self.resolving_no_echo {
                        Verdict::Redact
                    } else if front.in_paste && !timed_out {
                        break;
                    } else if front.in_paste {
                        self.resolving_no_echo = true;
                        Verdict::Redact
                    } else if let Some(pos) = find_echo(&self.window, &front.text) {
                        self.window.drain(..pos);
                        self.window_line_start = self.window_line_start.saturating_sub(pos);
                        Verdict::Keep
                    } else if (self.alt_screen || front.on_alt_screen) && front.output_seen {
                        Verdict::Keep
                    } else if front.unechoed_newline || timed_out {
                        self.resolving_no_echo = true;
                        Verdict::Redact
                    } else {
                        break;
                    }
                }
            };
            let id = front.id;
            self.pending.pop_front();
            self.decisions.push_back(Decision { id, verdict });
        }
        if self.pending.is_empty() {
            self.window.clear();
            self.window_line_start = 0;
        }
    }
}

/// The marks a terminal puts around pasted text in bracketed paste mode.
const PASTE_START: &[u8] = b"\x1b[200~";
const PASTE_END: &[u8] = b"\x1b[201~";

/// Returns the byte offset just past the first occurrence of `text` in `window`.
fn find_echo(window: &str, text: &str) -> Option<usize> {
    if text.is_empty() {
        return Some(0);
    }
    window.find(text).map(|i| i + text.len())
}

/// Whether `window` ends with a non-empty proper prefix of `text` (the echo has begun).
fn echo_in_progress(window: &str, text: &str) -> bool {
    let mut end = text.len();
    while end > 0 {
        if text.is_char_boundary(end) && window.ends_with(&text[..end]) {
            return true;
        }
        end -= 1;
    }
    false
}

/// Splits an input chunk into text runs, Enter keys and control bytes / escape sequences.
fn split_input(bytes: &[u8]) -> Vec<(Range<usize>, PieceKind)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        let b = bytes[i];
        let kind = match b {
            b'\r' => {
                i += 1;
                if bytes.get(i) == Some(&b'\n') {
                    i += 1;
                }
                PieceKind::Enter
            }
            b'\n' => {
                i += 1;
                PieceKind::Enter
            }
            0x1b => {
                i += 1;
                match bytes.get(i) {
                    Some(b'[') => {
                        i += 1;
                        while i < bytes.len() && !(0x40..=0x7e).contains(&bytes[i]) {
                            i += 1;
                        }
                        i = (i + 1).min(bytes.len());
                    }
                    Some(b'O') => i = (i + 2).min(bytes.len()),
                    Some(_) => i += 1,
                    None => {}
                }
                PieceKind::Control
            }
            0..=0x1f | 0x7f => {
                i += 1;
                PieceKind::Control
            }
            _ => {
                while i < bytes.len() && bytes[i] >= 0x20 && bytes[i] != 0x7f {
                    i += 1;
                }
                PieceKind::Text
            }
        };
        out.push((start..i, kind));
    }
    out
}

const PROMPT_WORDS: &[&str] = &[
    "password",
    "passwort",
    "passphrase",
    "pass phrase",
    "passcode",
    "secret",
    "token",
    "verification code",
    "security code",
    "one-time",
    "one time",
    "encryption key",
    "private key",
    "api key",
    "pin code",
];
const PROMPT_WHOLE_WORDS: &[&str] = &["pin", "otp", "2fa", "mfa", "totp"];

/// Whether an output line looks like a prompt for a secret: it names a secret and ends like a
/// question (`:`, `?` or `>` after trimming spaces).
pub fn looks_like_secret_prompt(line: &str) -> bool {
    let l = line.trim_end().to_lowercase();
    let Some(last) = l.chars().last() else {
        return false;
    };
    if !matches!(last, ':' | '?' | '>') {
        return false;
    }
    if PROMPT_WORDS.iter().any(|w| l.contains(w)) {
        return true;
    }
    l.split(|c: char| !c.is_alphanumeric())
        .any(|w| PROMPT_WHOLE_WORDS.contains(&w))
}

#[cfg(test)]
mod tests {
    use super::*;

    enum Step<'a> {
        Out(u64, &'a [u8]),
        In(u64, &'a [u8]),
        Poll(u64),
    }
    use Step::*;

    /// Runs a script and returns (input piece text, verdict) in input order; unresolved pieces
    /// are reported as `None`.
    fn run(steps: &[Step]) -> Vec<(String, Option<Verdict>)> {
        let mut t = EchoTracker::new();
        let mut pieces: Vec<(ChunkId, String)> = Vec::new();
        let mut decided: Vec<Decision> = Vec::new();
        for s in steps {
            match s {
                Out(at, b) => t.on_output(*at, b),
                In(at, b) => {
                    for p in t.on_input(*at, b) {
                        pieces.push((p.id, String::from_utf8_lossy(&b[p.range]).into_owned()));
                    }
                }
                Poll(at) => t.poll(*at),
            }
            while let Some(d) = t.pop_decision() {
                decided.push(d);
            }
        }
        // Decisions must come in input order.
        for (i, d) in decided.iter().enumerate() {
            assert_eq!(d.id, pieces[i].0, "decisions out of order");
        }
        pieces
            .into_iter()
            .enumerate()
            .map(|(i, (_, s))| (s, decided.get(i).map(|d| d.verdict)))
            .collect()
    }

    fn keep(s: &str) -> (String, Option<Verdict>) {
        (s.to_string(), Some(Verdict::Keep))
    }
    fn redact(s: &str) -> (String, Option<Verdict>) {
        (s.to_string(), Some(Verdict::Redact))
    }

    const MS: u64 = 1000;

    #[test]
    fn bash_like_echo_is_kept() {
        let r = run(&[
            Out(0, b"bob@host:~$ "),
            In(10 * MS, b"l"),
            Out(12 * MS, b"l"),
            In(20 * MS, b"s"),
            Out(22 * MS, b"s"),
            In(30 * MS, b"\r"),
            Out(32 * MS, b"\r\nfile1  file2\r\nbob@host:~$ "),
        ]);
        assert_eq!(r, vec![keep("l"), keep("s"), keep("\r")]);
    }

    #[test]
    fn fast_typing_before_echo_is_kept() {
        let r = run(&[
            Out(0, b"$ "),
            In(MS, b"l"),
            In(2 * MS, b"s"),
            In(3 * MS, b"\r"),
            Out(40 * MS, b"ls\r\nfile\r\n$ "),
        ]);
        assert_eq!(r, vec![keep("l"), keep("s"), keep("\r")]);
    }

    #[test]
    fn sudo_prompt_is_redacted() {
        let r = run(&[
            Out(0, b"$ "),
            In(MS, b"sudo id\r"),
            Out(5 * MS, b"sudo id\r\n[sudo] password for bob: "),
            In(500 * MS, b"hunter2"),
            In(600 * MS, b"\r"),
            Out(700 * MS, b"\r\nuid=0(root) gid=0(root)\r\n$ "),
            In(800 * MS, b"x"),
            Out(801 * MS, b"x"),
        ]);
        assert_eq!(
            r,
            vec![
                keep("sudo id"),
                keep("\r"),
                redact("hunter2"),
                keep("\r"),
                keep("x")
            ]
        );
    }

    #[test]
    fn read_silent_with_custom_prompt() {
        let r = run(&[
            Out(0, b"$ read -s -p \"Secret: \" v\r\nSecret: "),
            In(MS, b"a"),
            In(2 * MS, b"b"),
            In(3 * MS, b"\x7f"),
            In(4 * MS, b"c"),
            In(5 * MS, b"\r"),
            Out(6 * MS, b"$ "),
        ]);
        assert_eq!(
            r,
            vec![
                redact("a"),
                redact("b"),
                redact("\x7f"),
                redact("c"),
                keep("\r")
            ]
        );
    }

    #[test]
    fn password_without_prompt_word_is_redacted_at_enter() {
        let r = run(&[
            Out(0, b"$ ./tool\r\n> "),
            In(MS, b"s3"),
            In(2 * MS, b"cr3t"),
            In(3 * MS, b"\r"),
            Out(50 * MS, b"\r\nok\r\n"),
        ]);
        assert_eq!(r, vec![redact("s3"), redact("cr3t"), keep("\r")]);
    }

    #[test]
    fn unechoed_input_times_out() {
        let r = run(&[Out(0, b"> "), In(MS, b"abc"), Poll(MS + 1_400_000)]);
        assert_eq!(r, vec![("abc".to_string(), None)]);
        let r = run(&[Out(0, b"> "), In(MS, b"abc"), Poll(MS + 1_500_000)]);
        assert_eq!(r, vec![redact("abc")]);
        // Late echo after the timeout does not resurrect it.
        let r = run(&[Out(0, b"> "), In(MS, b"abc"), Out(2_000_000, b"abc")]);
        assert_eq!(r, vec![redact("abc")]);
    }

    #[test]
    fn paste_with_enter_is_split_and_kept() {
        let r = run(&[
            Out(0, b"$ "),
            In(MS, b"echo hello world\recho two\r"),
            Out(
                3 * MS,
                b"echo hello world\r\nhello world\r\n$ echo two\r\ntwo\r\n$ ",
            ),
        ]);
        assert_eq!(
            r,
            vec![
                keep("echo hello world"),
                keep("\r"),
                keep("echo two"),
                keep("\r")
            ]
        );
    }

    #[test]
    fn bracketed_paste_is_judged_from_its_end_mark_on() {
        // Bash 5.2 shows a paste only after its end mark; the gateway holds each pasted line
        // break until the pieces before it are decided, so they must not count as pending.
        let mut t = EchoTracker::new();
        t.on_output(0, b"\x1b[?2004hprompt$ ");
        for (at, chunk) in [
            (MS, &b"\x1b[200~echo one"[..]),
            (2 * MS, b"\r"),
            (3 * MS, b"echo two"),
            (4 * MS, b"\r"),
        ] {
            t.on_input(at, chunk);
            assert_eq!(t.pending(), 0, "{chunk:?} waits for an echo");
        }
        t.on_input(5 * MS, b"\x1b[201~");
        assert_eq!(t.pending(), 5);
        // The editor shows the paste; the line ends with the Enter typed after it, and a secret
        // typed at a later no-echo prompt is still redacted.
        let r = run(&[
            Out(0, b"\x1b[?2004hprompt$ "),
            In(MS, b"\x1b[200~echo one\recho two\r\x1b[201~"),
            Out(
                2 * MS,
                b"\x1b[7mecho one\x1b[27m\r\n\r\x1b[7mecho two\x1b[27m\r\n\r",
            ),
            In(3 * MS, b"\r"),
            Out(
                4 * MS,
                b"\r\n\x1b[?2004l\rone\r\ntwo\r\n\x1b[?2004hprompt$ ",
            ),
            In(5 * MS, b"read -s x"),
            Out(6 * MS, b"read -s x"),
            In(7 * MS, b"\r"),
            Out(8 * MS, b"\r\n\x1b[?2004l\r"),
            In(9 * MS, b"hunter2"),
            In(10 * MS, b"\r"),
            Out(11 * MS, b"\r\n\x1b[?2004hprompt$ "),
        ]);
        assert_eq!(
            r,
            vec![
                keep("\x1b[200~"),
                keep("echo one"),
                keep("\r"),
                keep("echo two"),
                keep("\r"),
                keep("\x1b[201~"),
                keep("\r"),
                keep("read -s x"),
                keep("\r"),
                redact("hunter2"),
                keep("\r"),
            ]
        );
    }

    #[test]
    fn paste_at_a_line_editor_that_does_not_echo_is_redacted() {
        // `read -e -s`: readline asks for bracketed paste but shows nothing.
        let r = run(&[
            Out(0, b"\x1b[?2004l\r\x1b[?2004hcode "),
            In(MS, b"\x1b[200~abc123\x1b[201~"),
            In(2 * MS, b"\r"),
            Out(3 * MS, b"\x1b[?2004l\r\r\n\x1b[?2004hprompt$ "),
        ]);
        assert_eq!(
            r,
            vec![
                keep("\x1b[200~"),
                redact("abc123"),
                redact("\x1b[201~"),
                keep("\r")
            ]
        );
        // A paste that never ends still times out.
        let r = run(&[
            Out(0, b"\x1b[?2004hcode "),
            In(MS, b"\x1b[200~abc123"),
            Poll(MS + DEFAULT_TIMEOUT_US),
        ]);
        assert_eq!(r, vec![keep("\x1b[200~"), redact("abc123")]);
    }

    #[test]
    fn paste_marks_count_only_where_the_remote_side_asked_for_them() {
        // No bracketed paste mode (a program reading a password): the marks change nothing.
        let r = run(&[
            Out(0, b"Enter code "),
            In(MS, b"\x1b[200~123456\x1b[201~"),
            Poll(MS + DEFAULT_TIMEOUT_US),
        ]);
        assert_eq!(
            r,
            vec![keep("\x1b[200~"), redact("123456"), redact("\x1b[201~")]
        );
        // The mode switched off (a command started) ends an unfinished paste.
        let mut t = EchoTracker::new();
        t.on_output(0, b"\x1b[?2004h$ ");
        t.on_input(MS, b"\x1b[200~ab");
        assert_eq!(t.pending(), 0);
        t.on_output(2 * MS, b"\x1b[?2004l\rEnter code ");
        assert_eq!(t.pending(), 1);
    }

    #[test]
    fn echo_with_colours_and_cursor_moves_is_kept() {
        let r = run(&[
            Out(0, b"\x1b]0;title\x07\x1b[32m$\x1b[0m "),
            In(MS, b"git status"),
            Out(2 * MS, b"git\x1b[K st\x1b[1Cat"),
        ]);
        // Only part of the text has been echoed so far: still undecided.
        assert_eq!(r, vec![("git status".to_string(), None)]);
        let r = run(&[
            Out(0, b"\x1b[32m$\x1b[0m "),
            In(MS, b"git status"),
            Out(2 * MS, b"\x1b[1mgit\x1b[0m status"),
        ]);
        assert_eq!(r, vec![keep("git status")]);
    }

    #[test]
    fn control_input_is_kept_on_normal_lines_and_ordered() {
        let r = run(&[
            Out(0, b"$ "),
            In(MS, b"ab"),
            In(2 * MS, b"\x1b[D\t"),
            Out(3 * MS, b"ab\x08"),
        ]);
        assert_eq!(r, vec![keep("ab"), keep("\x1b[D"), keep("\t")]);
    }

    #[test]
    fn control_waits_behind_unresolved_text() {
        let mut t = EchoTracker::new();
        t.on_output(0, b"$ ");
        let a = t.on_input(MS, b"ab");
        let b = t.on_input(2 * MS, b"\x1b[A");
        assert_eq!(t.pop_decision(), None);
        assert_eq!(t.pending(), 2);
        assert_eq!(t.deadline_us(), Some(MS + DEFAULT_TIMEOUT_US));
        t.on_output(3 * MS, b"ab");
        assert_eq!(
            t.pop_decision(),
            Some(Decision {
                id: a[0].id,
                verdict: Verdict::Keep
            })
        );
        assert_eq!(
            t.pop_decision(),
            Some(Decision {
                id: b[0].id,
                verdict: Verdict::Keep
            })
        );
    }

    #[test]
    fn ctrl_c_at_password_prompt_ends_the_line() {
        let r = run(&[
            Out(0, b"Password: "),
            In(MS, b"abc"),
            In(2 * MS, b"\x03"),
            Out(3 * MS, b"^C\r\n$ "),
            In(4 * MS, b"ls"),
            Out(5 * MS, b"ls"),
        ]);
        assert_eq!(r, vec![redact("abc"), redact("\x03"), keep("ls")]);
    }

    #[test]
    fn masked_echo_is_still_redacted() {
        let r = run(&[
            Out(0, b"Enter PIN: "),
            In(MS, b"1234"),
            Out(2 * MS, b"****"),
            In(3 * MS, b"\r"),
        ]);
        assert_eq!(r, vec![redact("1234"), keep("\r")]);
    }

    #[test]
    fn background_output_interleaving() {
        let r = run(&[
            Out(0, b"$ "),
            In(MS, b"l"),
            Out(2 * MS, b"\r\n[1]+  Done                    sleep 1\r\n$ "),
            Out(3 * MS, b"l"),
            In(4 * MS, b"s"),
            Out(5 * MS, b"s"),
        ]);
        assert_eq!(r, vec![keep("l"), keep("s")]);
    }

    #[test]
    fn key_that_quits_a_pager_does_not_make_the_next_command_secret() {
        // `q` in less draws nothing: it leaves the alternate screen and the shell prompts
        // again. The command typed right after it (same input line, no Enter in between) must
        // not wait behind `q` and inherit its "no echo" verdict.
        let r = run(&[
            Out(0, b"$ less notes\r\n\x1b[?1049h\x1b[Hline 1\r\n:"),
            In(MS, b"G"),
            Out(2 * MS, b"\x1b[H\x1b[2Jline 9\r\n(END)"),
            In(3 * MS, b"q"),
            Out(4 * MS, b"\r\x1b[K\x1b[?1049l$ "),
            In(5 * MS, b"vi notes"),
            Out(6 * MS, b"vi notes"),
            In(7 * MS, b"\r"),
        ]);
        assert_eq!(r, vec![keep("G"), keep("q"), keep("vi notes"), keep("\r")]);
    }

    #[test]
    fn vim_like_full_screen_session() {
        let r = run(&[
            Out(0, b"$ vim notes\r\n"),
            Out(
                MS,
                b"\x1b[?1049h\x1b[H\x1b[2J~\r\n~\r\n\x1b[24;1H\"notes\" 0L\x1b[1;1H",
            ),
            In(2 * MS, b"i"),
            Out(3 * MS, b"\x1b[24;1H-- INSERT --\x1b[1;1H"),
            In(4 * MS, b"hello"),
            Out(5 * MS, b"\x1b[1;1Hhello\x1b[1;6H"),
            In(6 * MS, b"\x1b"),
            Out(7 * MS, b"\x1b[24;1H\x1b[K\x1b[1;5H"),
            In(8 * MS, b"dd"),
            Out(9 * MS, b"\x1b[1;1H\x1b[K"),
            In(10 * MS, b":X"),
            In(11 * MS, b"\r"),
            Out(12 * MS, b"\x1b[24;1HEnter encryption key: "),
            In(13 * MS, b"topsecret"),
            In(14 * MS, b"\r"),
            Out(15 * MS, b"\x1b[24;1HEnter same key again: "),
            In(16 * MS, b"topsecret"),
            In(17 * MS, b"\r"),
        ]);
        assert_eq!(
            r,
            vec![
                keep("i"),
                keep("hello"),
                keep("\x1b"),
                keep("dd"),
                keep(":X"),
                keep("\r"),
                redact("topsecret"),
                keep("\r"),
                // "Enter same key again:" names no secret word; no echo → redacted by timeout.
                ("topsecret".to_string(), None),
                ("\r".to_string(), None),
            ]
        );
    }

    #[test]
    fn prompt_detection() {
        for p in [
            "Password:",
            "[sudo] password for bob: ",
            "Enter passphrase for key '/home/bob/.ssh/id_ed25519': ",
            "PIN: ",
            "Enter PIN for 'YubiKey':",
            "Verification code:",
            "Secret: ",
            "OTP> ",
            "(current) UNIX password:",
            "Token?",
        ] {
            assert!(looks_like_secret_prompt(p), "{p}");
        }
        for p in [
            "bob@token-server:~$ ",
            "Password changed.",
            "",
            "spinning:",
            "mysql> ",
        ] {
            assert!(!looks_like_secret_prompt(p), "{p}");
        }
    }

    #[test]
    fn split_input_classes() {
        let s = split_input(b"ab\x1b[1;5Ac\r\n\x1bOP\x7f\x1bx\xc3\xa9");
        let kinds: Vec<_> = s.iter().map(|(r, k)| (r.clone(), *k)).collect();
        assert_eq!(
            kinds,
            vec![
                (0..2, PieceKind::Text),
                (2..8, PieceKind::Control),
                (8..9, PieceKind::Text),
                (9..11, PieceKind::Enter),
                (11..14, PieceKind::Control),
                (14..15, PieceKind::Control),
                (15..17, PieceKind::Control),
                (17..19, PieceKind::Text),
            ]
        );
        // Truncated escape sequence at the end of a chunk.
        assert_eq!(split_input(b"\x1b["), vec![(0..2, PieceKind::Control)]);
    }

    #[test]
    fn arbitrary_bytes_never_panic() {
        let mut t = EchoTracker::with_timeout_us(10);
        let mut x: u32 = 12345;
        for i in 0..5000u64 {
            let mut buf = Vec::new();
            for _ in 0..(x % 17) {
                x = x.wrapping_mul(1_103_515_245).wrapping_add(12345);
                buf.push((x >> 16) as u8);
            }
            if i % 2 == 0 {
                t.on_output(i, &buf);
            } else {
                t.on_input(i, &buf);
            }
            while t.pop_decision().is_some() {}
        }
        t.poll(u64::MAX);
        assert_eq!(t.pending(), 0);
    }
}
