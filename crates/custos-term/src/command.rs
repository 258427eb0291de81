//! Command extraction: which command lines did the user submit in an interactive shell?
//!
//! [`CommandTracker`] watches both directions of a PTY session. Output is rendered on a
//! headless terminal emulator; when the user presses Enter the command line is read off the
//! emulated screen, from the end of the prompt to the end of the (possibly wrapped) line.
//! Line editing, tab completion and history recall therefore need no modelling: the shell
//! has already drawn the result.
//!
//! Sources of the prompt end, best first:
//! 1. an OSC 133 `B` mark (shell integration) at the cursor position where it was printed;
//! 2. the cursor position at the first keystroke of a line typed after output arrived;
//! 3. when that position was erased by a redraw (`\r\x1b[K` then prompt and line, Ctrl-L),
//!    the same prompt text found again at the start of the cursor's line.
//!
//! A start no longer preceded by its prompt (drawn over, as bash's incremental search does)
//! is not trusted: the line is then read as a search display, or after a prompt of the same
//! width.
//!
//! Approximations (documented limits):
//! * Keys typed after the last output chunk are assumed not yet echoed; printable keys,
//!   Backspace, Delete, arrows, Home/End, Ctrl-A/E/B/F/U/K/W are applied to the screen text
//!   with a simple line editor model. Other unechoed keys (Tab, Up, Ctrl-R ...) are ignored.
//!   A line typed entirely before any echo (a paste of several lines) is rebuilt from the
//!   keys alone.
//! * Output is not rendered eagerly. It is buffered (at most [`OUTPUT_TAIL_CAP`] bytes) and
//!   rendered when input arrives or a line is needed. When more output than that arrives
//!   between two keystrokes only the tail is kept: the screen is reset and the tail is
//!   rendered from its first line break. Screen content drawn with absolute cursor moves
//!   before the tail may be missing; a prompt printed after the flood is rendered correctly.
//!   A cheap byte scanner still sees every output byte, for OSC 133 `D` (exit status),
//!   OSC 7 (working directory) and the alternate-screen switches.
//! * A line ending inside an open quote or with a trailing backslash is held and joined with
//!   the following line(s) by `\n`, provided the next line is typed at a `>` continuation
//!   prompt. Other continuations the shell decides on its own (`for ...; do`, here-documents)
//!   are reported line by line.
//! * Nothing is reported on the alternate screen (full-screen programs) nor while the caller
//!   says input is secret.

use std::collections::VecDeque;

use avt::observer::{Observation, Observer};
use avt::parser::{Function, Osc, ShellIntegration};
use avt::{Anchor, Operation, ScreenKind};

use crate::terminal::{MAX_DIMENSION, Utf8Carry};

/// Most output bytes buffered between two keystrokes; older bytes are dropped.
pub const OUTPUT_TAIL_CAP: usize = 256 * 1024;
/// Capacity kept by the output buffer once drained, so idle trackers stay small.
const IDLE_BUFFER_CAP: usize = 4096;
/// Most keys remembered for one line.
const MAX_KEYS: usize = 4096;
/// Most continuation lines held for one command.
const MAX_HELD_LINES: usize = 256;
/// Longest OSC payload inspected by the output scanner.
const OSC_CAP: usize = 4096;
/// Longest CSI parameter string inspected by the output scanner.
const CSI_CAP: usize = 64;
/// Longest escape sequence carried over between input chunks.
const INPUT_CARRY_CAP: usize = 32;

/// Something the user did in the shell.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandEvent {
    /// A command line was submitted (Enter) — the text the shell received.
    Command {
        /// Time of the Enter key, in microseconds.
        time_us: u64,
        /// The command line; lines of a multi-line command are joined with `\n`.
        text: String,
        /// Working directory last reported by the shell (OSC 7), if any.
        cwd: Option<String>,
    },
    /// The previous command finished (from OSC 133;D[;exit]); exit code when known.
    Finished {
        /// Time of the output chunk carrying the mark, in microseconds.
        time_us: u64,
        /// Exit status, when the shell reported one.
        exit_status: Option<i32>,
    },
}

/// One decoded key of user input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Key {
    Text(char),
    Enter,
    Backspace,
    Delete,
    Left,
    Right,
    Home,
    End,
    KillToStart,
    KillToEnd,
    KillWord,
    Cancel,
    /// Bracketed paste start or end: not a key at all.
    PasteMark,
    /// Anything the line model cannot follow (Tab, Up, Ctrl-R, function keys ...).
    Other,
}

/// Records OSC 133 prompt marks while output is rendered.
#[derive(Default)]
struct MarkObserver {
    prompt_end: Option<Anchor>,
    prompt_started: bool,
}

impl Observer for MarkObserver {
    type Output = ();

    fn before(&mut self, context: &mut Observation<'_>, operation: &Operation) {
        if let Operation::Function(Function::Osc(Osc::ShellIntegration(mark))) = operation {
            match mark {
                ShellIntegration::PromptStart => {
                    self.prompt_started = true;
                    self.prompt_end = None;
                }
                ShellIntegration::CommandStart
                    if context.terminal().active_screen_kind() == ScreenKind::Primary =>
                {
                    self.prompt_end = Some(context.anchor_at_cursor());
                }
                _ => {}
            }
        }
    }

    fn end(&mut self, _context: &mut Observation<'_>) {}
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ScanState {
    Ground,
    Esc,
    Csi,
    Osc,
    OscEsc,
}

/// Eager, cheap scanner over every output byte.
#[derive(Debug)]
struct OutputScanner {
    state: ScanState,
    buf: Vec<u8>,
    alt_screen: bool,
    cwd: Option<String>,
}

impl OutputScanner {
    fn new() -> Self {
        Self {
            state: ScanState::Ground,
            buf: Vec::new(),
            alt_screen: false,
            cwd: None,
        }
    }

    fn scan(&mut self, time_us: u64, bytes: &[u8], events: &mut Vec<CommandEvent>) {
        let mut i = 0;
        while i < bytes.len() {
            if self.state == ScanState::Ground {
                match bytes[i..].iter().position(|&b| b == 0x1b) {
                    Some(p) => {
                        i += p + 1;
                        self.state = ScanState::Esc;
                    }
                    None => return,
                }
                continue;
            }
            let b = bytes[i];
            i += 1;
            match self.state {
                ScanState::Ground => {}
                ScanState::Esc => match b {
                    b'[' => {
                        self.buf.clear();
                        self.state = ScanState::Csi;
                    }
                    b']' => {
                        self.buf.clear();
                        self.state = ScanState::Osc;
                    }
                    b'c' => {
                        self.alt_screen = false;
                        self.state = ScanState::Ground;
                    }
                    0x1b => {}
                    _ => self.state = ScanState::Ground,
                },
                ScanState::Csi => {
                    if (0x40..=0x7e).contains(&b) {
                        self.csi_done(b);
                        self.state = ScanState::Ground;
                    } else if b == 0x1b {
                        self.state = ScanState::Esc;
                    } else if self.buf.len() < CSI_CAP {
                        self.buf.push(b);
                    }
                }
                ScanState::Osc => match b {
                    0x07 => {
                        self.osc_done(time_us, events);
                        self.state = ScanState::Ground;
                    }
                    0x1b => self.state = ScanState::OscEsc,
                    0x18 | 0x1a => self.state = ScanState::Ground,
                    _ => {
                        if self.buf.len() < OSC_CAP {
                            self.buf.push(b);
                        }
                    }
                },
                ScanState::OscEsc => {
                    if b == b'\\' {
                        self.osc_done(time_us, events);
                        self.state = ScanState::Ground;
                    } else {
                        // Another escape sequence interrupts the string.
                        self.state = ScanState::Esc;
                        i -= 1;
                    }
                }
            }
        }
    }

    fn csi_done(&mut self, final_byte: u8) {
        let set = match final_byte {
            b'h' => true,
            b'l' => false,
            _ => return,
        };
        let Some(params) = self.buf.strip_prefix(b"?") else {
            return;
        };
        if params
            .split(|&b| b == b';')
            .any(|p| p == b"1049" || p == b"1047" || p == b"47")
        {
            self.alt_screen = set;
        }
    }

    fn osc_done(&mut self, time_us: u64, events: &mut Vec<CommandEvent>) {
        let payload = String::from_utf8_lossy(&self.buf).into_owned();
        self.buf.clear();
        if let Some(rest) = payload.strip_prefix("133;") {
            let mut parts = rest.split(';');
            if parts.next() == Some("D") {
                let exit_status = parts.next().and_then(|s| s.trim().parse::<i32>().ok());
                events.push(CommandEvent::Finished {
                    time_us,
                    exit_status,
                });
            }
        } else if let Some(url) = payload.strip_prefix("7;")
            && let Some(path) = parse_file_url(url)
        {
            self.cwd = Some(path);
        }
    }
}

/// Extracts and percent-decodes the path of a `file://host/path` URL.
fn parse_file_url(url: &str) -> Option<String> {
    let rest = url.strip_prefix("file://")?;
    let path = &rest[rest.find('/')?..];
    let bytes = path.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                .ok()
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            if let Some(v) = hex {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    Some(String::from_utf8_lossy(&out).into_owned())
}

/// Where the editable part of the current line begins.
struct LineStart {
    anchor: Anchor,
    /// Screen text before the start on its row (the prompt), to find it again after a redraw.
    prompt: String,
    col: usize,
}

/// The line being typed.
#[derive(Default)]
struct LineState {
    start: Option<LineStart>,
    /// Some key was typed on this line.
    touched: bool,
    /// Enter was pressed and no output arrived since: the screen says nothing about this line.
    blind: bool,
    /// Keys not reflected on the screen yet (or all keys, for a line without a start).
    keys: Vec<Key>,
}

/// Reconstructs the command lines a user submits in an interactive session.
pub struct CommandTracker {
    vt: avt::Terminal,
    carry: Utf8Carry,
    cols: u16,
    rows: u16,
    pending: VecDeque<u8>,
    /// The pending buffer overflowed: reset the screen before rendering it.
    overflowed: bool,
    scanner: OutputScanner,
    marks: MarkObserver,
    line: LineState,
    held: Vec<String>,
    secret: bool,
    input_carry: Vec<u8>,
    events: Vec<CommandEvent>,
}

impl std::fmt::Debug for CommandTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandTracker")
            .field("cols", &self.cols)
            .field("rows", &self.rows)
            .field("pending_output", &self.pending.len())
            .field("secret", &self.secret)
            .finish_non_exhaustive()
    }
}

fn new_vt(cols: u16, rows: u16) -> avt::Terminal {
    let cols = cols.clamp(1, MAX_DIMENSION) as usize;
    let rows = rows.clamp(1, MAX_DIMENSION) as usize;
    // No scrollback: only the visible screen is needed, and it keeps memory small.
    avt::Terminal::with_scrollback(cols, rows, Some(0))
        .expect("terminal dimensions are clamped to at least 1x1")
}

impl CommandTracker {
    /// Creates a tracker for a terminal of `cols` x `rows` (clamped to `1..=MAX_DIMENSION`).
    pub fn new(cols: u16, rows: u16) -> Self {
        let cols = cols.clamp(1, MAX_DIMENSION);
        let rows = rows.clamp(1, MAX_DIMENSION);
        Self {
            vt: new_vt(cols, rows),
            carry: Utf8Carry::new(),
            cols,
            rows,
            pending: VecDeque::new(),
            overflowed: false,
            scanner: OutputScanner::new(),
            marks: MarkObserver::default(),
            line: LineState::default(),
            held: Vec::new(),
            secret: false,
            input_carry: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Changes the terminal size (the window-change request of the session).
    pub fn resize(&mut self, cols: u16, rows: u16) {
        self.flush();
        self.cols = cols.clamp(1, MAX_DIMENSION);
        self.rows = rows.clamp(1, MAX_DIMENSION);
        self.vt
            .resize_with(self.cols as usize, self.rows as usize, &mut self.marks);
    }

    /// Registers output the target sent. Only a cheap scan happens now; rendering is deferred.
    pub fn on_output(&mut self, time_us: u64, bytes: &[u8]) {
        self.scanner.scan(time_us, bytes, &mut self.events);
        if bytes.len() >= OUTPUT_TAIL_CAP {
            self.pending.clear();
            self.pending.extend(&bytes[bytes.len() - OUTPUT_TAIL_CAP..]);
            self.overflowed = true;
        } else {
            let excess = (self.pending.len() + bytes.len()).saturating_sub(OUTPUT_TAIL_CAP);
            if excess > 0 {
                self.pending.drain(..excess);
                self.overflowed = true;
            }
            self.pending.extend(bytes);
        }
    }

    /// Registers what the user typed; returns the commands submitted by Enter keys in it.
    pub fn on_input(&mut self, time_us: u64, bytes: &[u8]) -> Vec<CommandEvent> {
        self.flush();
        let mut out = Vec::new();
        for key in self.decode_keys(bytes) {
            self.on_key(time_us, key, &mut out);
        }
        out
    }

    /// The command line as it stands right now (what Enter would submit), for a gateway that
    /// wants to decide before forwarding the Enter. Held continuation lines come first, joined
    /// with `\n`. `None` on the alternate screen and at secret input.
    pub fn pending_line(&mut self) -> Option<String> {
        self.flush();
        if self.secret || self.alt_screen() {
            return None;
        }
        let text = self.current_line()?;
        if self.held.is_empty() {
            Some(text)
        } else {
            let mut all = self.held.join("\n");
            all.push('\n');
            all.push_str(&text);
            Some(all)
        }
    }

    /// Events found in output since the last call (command completions).
    pub fn take_events(&mut self) -> Vec<CommandEvent> {
        std::mem::take(&mut self.events)
    }

    /// The caller (which runs the echo tracker) says input is at a no-echo prompt: nothing is
    /// extracted while this is set, and the line typed there is forgotten.
    pub fn set_secret_input(&mut self, secret: bool) {
        if secret && !self.secret {
            self.line = LineState::default();
        }
        self.secret = secret;
    }

    /// Working directory last reported by the shell (OSC 7), if any.
    pub fn cwd(&self) -> Option<&str> {
        self.scanner.cwd.as_deref()
    }

    fn alt_screen(&self) -> bool {
        self.vt.active_screen_kind() == ScreenKind::Alternate
    }

    /// Renders the buffered output.
    fn flush(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.overflowed {
            self.overflowed = false;
            self.vt = new_vt(self.cols, self.rows);
            self.carry = Utf8Carry::new();
            self.marks = MarkObserver::default();
            self.line.start = None;
            let data = self.pending.make_contiguous();
            // Start at a line boundary: the column of a cut line is unknown.
            let from = match data.iter().position(|&b| b == b'\n') {
                Some(p) => p + 1,
                None => data.iter().take_while(|&&b| b & 0xc0 == 0x80).count(),
            };
            if self.scanner.alt_screen {
                self.vt.feed("\x1b[?1049h");
            }
            let text = self.carry.decode(&data[from..]);
            self.vt.feed_with(text.as_str(), &mut self.marks);
        } else {
            let data = self.pending.make_contiguous();
            let text = self.carry.decode(data);
            self.vt.feed_with(text.as_str(), &mut self.marks);
        }
        self.pending.clear();
        if self.pending.capacity() > IDLE_BUFFER_CAP {
            self.pending.shrink_to(IDLE_BUFFER_CAP);
        }
        self.after_output();
    }

    /// Updates the line state once new output has been rendered.
    fn after_output(&mut self) {
        self.line.blind = false;
        if std::mem::take(&mut self.marks.prompt_started) && !self.line.touched {
            self.line.start = None;
        }
        if let Some(anchor) = self.marks.prompt_end.take()
            && !self.alt_screen()
        {
            self.line.start = self.make_start(anchor);
            self.line.keys = Vec::new();
            return;
        }
        if self.line.start.is_some() {
            // The screen now shows the keys typed so far.
            self.line.keys = Vec::new();
        } else if self.line.touched {
            self.recover_start();
        }
    }

    /// A line typed without a known start: if the cursor row ends with its text, anchor there.
    fn recover_start(&mut self) {
        if self.alt_screen() || self.line.keys.is_empty() {
            return;
        }
        let (text, cursor) = apply_keys(Vec::new(), 0, &self.line.keys);
        if text.is_empty() || cursor != text.len() || text.contains(&'\n') {
            return;
        }
        let c = self.vt.cursor();
        let Some(line) = self.vt.screen().line(c.row) else {
            return;
        };
        let cells = line.cells();
        let upto = c.col.min(cells.len());
        let mut chars: Vec<(usize, char)> = cells[..upto]
            .iter()
            .enumerate()
            .filter(|(_, cell)| cell.width() != 0)
            .map(|(i, cell)| (i, cell.char()))
            .collect();
        if chars.len() < text.len() {
            return;
        }
        let tail = chars.split_off(chars.len() - text.len());
        if tail.iter().map(|&(_, ch)| ch).eq(text.iter().copied()) {
            let col = tail.first().map(|&(i, _)| i).unwrap_or(upto);
            let pos = avt::Position {
                screen: ScreenKind::Primary,
                col,
                row: c.row as isize,
            };
            if let Some(anchor) = self.vt.anchor_at(pos) {
                self.line.start = self.make_start(anchor);
                self.line.keys = Vec::new();
            }
        }
    }

    fn make_start(&self, anchor: Anchor) -> Option<LineStart> {
        let pos = self.vt.resolve(&anchor)?;
        if pos.row < 0 {
            return None;
        }
        let line = self.vt.screen().line(pos.row as usize)?;
        let cells = line.cells();
        let prompt: String = cells[..pos.col.min(cells.len())]
            .iter()
            .filter(|c| c.width() != 0)
            .map(|c| c.char())
            .collect();
        Some(LineStart {
            anchor,
            prompt,
            col: pos.col,
        })
    }

    fn on_key(&mut self, time_us: u64, key: Key, out: &mut Vec<CommandEvent>) {
        if key == Key::PasteMark {
            return;
        }
        if self.secret || self.alt_screen() {
            if matches!(key, Key::Enter | Key::Cancel) {
                self.line = LineState {
                    blind: true,
                    ..LineState::default()
                };
                self.held.clear();
            }
            return;
        }
        match key {
            Key::Enter => {
                let text = self.current_line().unwrap_or_default();
                self.line = LineState {
                    blind: true,
                    ..LineState::default()
                };
                self.submit(time_us, text, out);
            }
            Key::Cancel => {
                self.line = LineState {
                    blind: true,
                    ..LineState::default()
                };
                self.held.clear();
            }
            _ => {
                if !self.line.touched {
                    self.line.touched = true;
                    if self.line.start.is_none() && !self.line.blind {
                        let anchor = self.vt.anchor_at_cursor();
                        self.line.start = self.make_start(anchor);
                    }
                    self.check_held_prompt(time_us, out);
                }
                if self.line.keys.len() < MAX_KEYS {
                    self.line.keys.push(key);
                }
            }
        }
    }

    /// Held continuation lines are only continued at a `>` prompt; otherwise report them.
    fn check_held_prompt(&mut self, time_us: u64, out: &mut Vec<CommandEvent>) {
        if self.held.is_empty() {
            return;
        }
        let continued = match &self.line.start {
            Some(s) => s.prompt.trim() == ">" || s.prompt.trim().is_empty(),
            None => true,
        };
        if !continued {
            let text = std::mem::take(&mut self.held).join("\n");
            out.push(CommandEvent::Command {
                time_us,
                text,
                cwd: self.scanner.cwd.clone(),
            });
        }
    }

    fn submit(&mut self, time_us: u64, text: String, out: &mut Vec<CommandEvent>) {
        if self.held.is_empty() && text.is_empty() {
            return;
        }
        self.held.push(text);
        let joined = self.held.join("\n");
        if continues(&joined) && self.held.len() < MAX_HELD_LINES {
            return;
        }
        self.held.clear();
        out.push(CommandEvent::Command {
            time_us,
            text: joined,
            cwd: self.scanner.cwd.clone(),
        });
    }

    /// Resolves the start of the line, finding the prompt again if a redraw erased it or
    /// moved it (a completion listing, Ctrl-L).
    fn resolve_start(&mut self) -> Option<(usize, usize)> {
        let start = self.line.start.as_ref()?;
        let resolved = self
            .vt
            .resolve(&start.anchor)
            .filter(|pos| pos.screen == ScreenKind::Primary && pos.row >= 0)
            .map(|pos| (pos.col, pos.row as usize));
        if let Some((col, row)) = resolved {
            let c = self.vt.cursor();
            let screen = self.vt.screen();
            let hard_break = c.row > row
                && (row..c.row).any(|r| screen.line(r).is_some_and(|l| !l.is_wrapped()));
            if !hard_break {
                return Some((col, row));
            }
        }
        if start.prompt.trim().is_empty() {
            return resolved;
        }
        self.find_prompt().or(resolved)
    }

    /// Looks for the remembered prompt at the start of the cursor's logical line.
    fn find_prompt(&mut self) -> Option<(usize, usize)> {
        let start = self.line.start.as_ref()?;
        let c = self.vt.cursor();
        let screen = self.vt.screen();
        let mut row = c.row;
        loop {
            let line = screen.line(row)?;
            let head: String = line
                .cells()
                .iter()
                .take(start.col)
                .filter(|cell| cell.width() != 0)
                .map(|cell| cell.char())
                .collect();
            if head == start.prompt {
                let col = start.col;
                let pos = avt::Position {
                    screen: ScreenKind::Primary,
                    col,
                    row: row as isize,
                };
                if let Some(anchor) = self.vt.anchor_at(pos)
                    && let Some(s) = self.line.start.as_mut()
                {
                    s.anchor = anchor;
                }
                return Some((col, row));
            }
            if row == 0 || !screen.line(row - 1).is_some_and(|l| l.is_wrapped()) {
                return None;
            }
            row -= 1;
        }
    }

    /// Whether the screen still shows the remembered prompt before `(col, row)`. Bash draws
    /// its incremental search (`\r(reverse-i-search)...`) over the prompt without erasing the
    /// row, so the start's position stays valid but no longer follows a prompt.
    fn prompt_intact(&self, (col, row): (usize, usize)) -> bool {
        let Some(start) = self.line.start.as_ref() else {
            return true;
        };
        let Some(line) = self.vt.screen().line(row) else {
            return false;
        };
        let head: String = line
            .cells()
            .iter()
            .take(col)
            .filter(|cell| cell.width() != 0)
            .map(|cell| cell.char())
            .collect();
        head == start.prompt
    }

    /// First row of the cursor's logical line (rows joined by soft wraps).
    fn logical_line_top(&self) -> usize {
        let screen = self.vt.screen();
        let mut row = self.vt.cursor().row;
        while row > 0 && screen.line(row - 1).is_some_and(|l| l.is_wrapped()) {
            row -= 1;
        }
        row
    }

    /// The current line: screen text from its start plus the keys not echoed yet.
    fn current_line(&mut self) -> Option<String> {
        if self.alt_screen() {
            return None;
        }
        let start = self.resolve_start().filter(|&pos| self.prompt_intact(pos));
        let (base, cursor) = match start {
            Some(start) => self.read_screen(start),
            None => match &self.line.start {
                // The start was erased or overwritten and the prompt is not found again: an
                // incremental search display, or a prompt redrawn differently.
                Some(start) => {
                    let prompt_cols = start.col;
                    let row = self.logical_line_top();
                    let (whole, _) = self.read_screen((0, row));
                    let whole_text: String = whole.iter().collect();
                    if let Some(found) = strip_search_prompt(&whole_text) {
                        let text = found.trim_end_matches(' ').to_string();
                        return Some(text);
                    }
                    // Assume a prompt of the same width.
                    self.read_screen((prompt_cols, row))
                }
                None => (Vec::new(), 0),
            },
        };
        let (text, _) = apply_keys(base, cursor, &self.line.keys);
        let text: String = text.into_iter().collect();
        Some(text.trim_end_matches(' ').to_string())
    }

    /// Reads the screen from `(col, row)` to the end of the cursor's logical line; returns the
    /// characters and the index of the cursor among them.
    fn read_screen(&self, (col, row): (usize, usize)) -> (Vec<char>, usize) {
        let c = self.vt.cursor();
        let screen = self.vt.screen();
        let mut text = Vec::new();
        let mut cursor = None;
        if c.row < row || (c.row == row && c.col < col) {
            return (text, 0);
        }
        let mut r = row;
        while let Some(line) = screen.line(r) {
            let cells = line.cells();
            let from = if r == row { col.min(cells.len()) } else { 0 };
            let row_start = text.len();
            for (i, cell) in cells.iter().enumerate().skip(from) {
                if r == c.row && i == c.col {
                    cursor = Some(text.len());
                }
                if cell.width() != 0 {
                    text.push(cell.char());
                }
            }
            if r == c.row && cursor.is_none() {
                cursor = Some(text.len());
            }
            if !line.is_wrapped() {
                let keep = match cursor {
                    Some(k) if k >= row_start => k,
                    _ => row_start,
                };
                if r >= c.row {
                    drop_right_prompt(&mut text, keep);
                }
                while text.len() > keep && text.last() == Some(&' ') {
                    text.pop();
                }
                if r >= c.row {
                    break;
                }
                text.push('\n');
            }
            r += 1;
        }
        let cursor = cursor.unwrap_or(text.len()).min(text.len());
        (text, cursor)
    }

    /// Splits an input chunk into keys, carrying an incomplete escape or UTF-8 sequence.
    fn decode_keys(&mut self, bytes: &[u8]) -> Vec<Key> {
        let mut data = std::mem::take(&mut self.input_carry);
        data.extend_from_slice(bytes);
        let mut keys = Vec::new();
        let mut i = 0;
        while i < data.len() {
            let b = data[i];
            match b {
                b'\r' => {
                    i += 1;
                    if data.get(i) == Some(&b'\n') {
                        i += 1;
                    }
                    keys.push(Key::Enter);
                }
                b'\n' => {
                    i += 1;
                    keys.push(Key::Enter);
                }
                0x1b => {
                    let Some(&next) = data.get(i + 1) else {
                        // A lone Escape key.
                        keys.push(Key::Other);
                        i += 1;
                        continue;
                    };
                    if next < 0x20 || next == 0x7f {
                        // Escape, then a control key typed right after it.
                        keys.push(Key::Other);
                        i += 1;
                    } else if next == b'[' || next == b'O' {
                        let mut j = i + 2;
                        if next == b'[' {
                            while j < data.len() && !(0x40..=0x7e).contains(&data[j]) {
                                j += 1;
                            }
                        }
                        if j >= data.len() {
                            if data.len() - i <= INPUT_CARRY_CAP {
                                self.input_carry = data[i..].to_vec();
                            }
                            break;
                        }
                        keys.push(escape_key(next, &data[i + 2..j], data[j]));
                        i = j + 1;
                    } else {
                        keys.push(Key::Other);
                        i += 2;
                    }
                }
                0x7f | 0x08 => {
                    keys.push(Key::Backspace);
                    i += 1;
                }
                0x01 => {
                    keys.push(Key::Home);
                    i += 1;
                }
                0x05 => {
                    keys.push(Key::End);
                    i += 1;
                }
                0x02 => {
                    keys.push(Key::Left);
                    i += 1;
                }
                0x06 => {
                    keys.push(Key::Right);
                    i += 1;
                }
                0x04 => {
                    keys.push(Key::Delete);
                    i += 1;
                }
                0x15 => {
                    keys.push(Key::KillToStart);
                    i += 1;
                }
                0x0b => {
                    keys.push(Key::KillToEnd);
                    i += 1;
                }
                0x17 => {
                    keys.push(Key::KillWord);
                    i += 1;
                }
                0x03 => {
                    keys.push(Key::Cancel);
                    i += 1;
                }
                0..=0x1f => {
                    keys.push(Key::Other);
                    i += 1;
                }
                _ => {
                    let len = utf8_len(b);
                    if i + len > data.len() {
                        self.input_carry = data[i..].to_vec();
                        break;
                    }
                    match std::str::from_utf8(&data[i..i + len]) {
                        Ok(s) => keys.extend(s.chars().map(Key::Text)),
                        Err(_) => keys.push(Key::Text('\u{FFFD}')),
                    }
                    i += len;
                }
            }
        }
        keys
    }
}

fn utf8_len(b: u8) -> usize {
    match b {
        0xc2..=0xdf => 2,
        0xe0..=0xef => 3,
        0xf0..=0xf4 => 4,
        _ => 1,
    }
}

/// Classifies `ESC [ params final` or `ESC O final`.
fn escape_key(intro: u8, params: &[u8], final_byte: u8) -> Key {
    match (intro, params, final_byte) {
        (b'[', b"200" | b"201", b'~') => Key::PasteMark,
        (_, b"", b'D') => Key::Left,
        (_, b"", b'C') => Key::Right,
        (_, b"", b'H') | (b'[', b"1" | b"7", b'~') => Key::Home,
        (_, b"", b'F') | (b'[', b"4" | b"8", b'~') => Key::End,
        (b'[', b"3", b'~') => Key::Delete,
        _ => Key::Other,
    }
}

/// Removes a right-aligned prompt (zsh `RPROMPT`, a clock) after the cursor: text that
/// reaches the right margin, separated from the line by a gap of at least four blanks.
fn drop_right_prompt(text: &mut Vec<char>, from: usize) {
    let trailing = text.iter().rev().take_while(|&&c| c == ' ').count();
    if trailing > 2 || trailing == text.len() {
        return;
    }
    let end = text.len() - trailing;
    let mut run = 0;
    for p in from.min(end)..end {
        if text[p] == ' ' {
            run += 1;
        } else if run >= 4 {
            text.truncate(p - run);
            return;
        } else {
            run = 0;
        }
    }
}

/// Applies keys to a line with the cursor at `cursor`; unknown keys are ignored.
fn apply_keys(mut text: Vec<char>, mut cursor: usize, keys: &[Key]) -> (Vec<char>, usize) {
    cursor = cursor.min(text.len());
    for key in keys {
        match *key {
            Key::Text(c) => {
                text.insert(cursor, c);
                cursor += 1;
            }
            Key::Backspace => {
                if cursor > 0 {
                    cursor -= 1;
                    text.remove(cursor);
                }
            }
            Key::Delete => {
                if cursor < text.len() {
                    text.remove(cursor);
                }
            }
            Key::Left => cursor = cursor.saturating_sub(1),
            Key::Right => cursor = (cursor + 1).min(text.len()),
            Key::Home => cursor = 0,
            Key::End => cursor = text.len(),
            Key::KillToStart => {
                text.drain(..cursor);
                cursor = 0;
            }
            Key::KillToEnd => text.truncate(cursor),
            Key::KillWord => {
                let mut from = cursor;
                while from > 0 && text[from - 1] == ' ' {
                    from -= 1;
                }
                while from > 0 && text[from - 1] != ' ' {
                    from -= 1;
                }
                text.drain(from..cursor);
                cursor = from;
            }
            Key::Enter | Key::Cancel | Key::PasteMark | Key::Other => {}
        }
    }
    (text, cursor)
}

/// The line accepted from a readline incremental search display
/// (`(reverse-i-search)`query': line`), if `text` is one.
fn strip_search_prompt(text: &str) -> Option<&str> {
    let rest = text
        .strip_prefix("(reverse-i-search)`")
        .or_else(|| text.strip_prefix("(failed reverse-i-search)`"))
        .or_else(|| text.strip_prefix("(i-search)`"))
        .or_else(|| text.strip_prefix("(failed i-search)`"))?;
    let end = rest.find("': ")?;
    Some(&rest[end + 3..])
}

/// Whether a shell would read another line: an open quote or a trailing backslash.
fn continues(text: &str) -> bool {
    let mut single = false;
    let mut double = false;
    let mut escaped = false;
    let mut last_escape_at_end = false;
    for c in text.chars() {
        last_escape_at_end = false;
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if !single => {
                escaped = true;
                last_escape_at_end = true;
            }
            '\'' if !double => single = !single,
            '"' if !single => double = !double,
            _ => {}
        }
    }
    single || double || last_escape_at_end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_buffer_is_bounded_and_released() {
        let mut t = CommandTracker::new(80, 24);
        let chunk = vec![b'x'; 10_000];
        for i in 0..1000 {
            t.on_output(i, &chunk);
            assert!(t.pending.len() <= OUTPUT_TAIL_CAP);
        }
        t.on_output(1000, &vec![b'y'; OUTPUT_TAIL_CAP + 5]);
        assert_eq!(t.pending.len(), OUTPUT_TAIL_CAP);
        t.on_input(1001, b"a");
        assert!(t.pending.is_empty());
        assert!(t.pending.capacity() <= 2 * IDLE_BUFFER_CAP);
        assert!(t.line.keys.capacity() < 1024);
    }

    #[test]
    fn file_urls() {
        assert_eq!(
            parse_file_url("file://host/home/a%20b/%C3%A9").as_deref(),
            Some("/home/a b/é")
        );
        assert_eq!(parse_file_url("file:///tmp").as_deref(), Some("/tmp"));
        assert_eq!(parse_file_url("file://h/x%2").as_deref(), Some("/x%2"));
        assert_eq!(parse_file_url("file://h/x%zz").as_deref(), Some("/x%zz"));
        assert_eq!(parse_file_url("http://h/x"), None);
        assert_eq!(parse_file_url("file://nohost"), None);
    }

    #[test]
    fn continuation_rules() {
        assert!(continues("echo \\"));
        assert!(continues("echo 'a"));
        assert!(continues("echo \"a\\\"b"));
        assert!(continues("echo \"it's"));
        assert!(!continues("echo \"it's\""));
        assert!(!continues("echo a\\\\"));
        assert!(!continues("echo 'a\\'"));
        assert!(!continues("echo a \\\nb"));
    }

    #[test]
    fn right_prompt_is_dropped() {
        let mut v: Vec<char> = "ls -l        [12:00]".chars().collect();
        drop_right_prompt(&mut v, 5);
        assert_eq!(v.iter().collect::<String>(), "ls -l");
        let mut v: Vec<char> = "echo 'a    b'".chars().collect();
        drop_right_prompt(&mut v, 13);
        assert_eq!(v.iter().collect::<String>(), "echo 'a    b'");
    }

    #[test]
    fn input_escape_split_across_chunks() {
        let mut t = CommandTracker::new(80, 24);
        assert_eq!(t.decode_keys(b"ab\x1b["), [Key::Text('a'), Key::Text('b')]);
        assert_eq!(t.decode_keys(b"D\xc3"), [Key::Left]);
        assert_eq!(t.decode_keys(b"\xa9\x1b"), [Key::Text('é'), Key::Other]);
        assert_eq!(
            t.decode_keys(b"\x1b[200~x\x1b[201~"),
            [Key::PasteMark, Key::Text('x'), Key::PasteMark]
        );
    }
}
