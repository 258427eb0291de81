//! Legacy scp (rcp-style) protocol decoding, as spoken by `scp -O` and `scp -t` / `scp -f`.

use std::collections::VecDeque;

use crate::{FileOp, path_string};

/// Longest accepted scp control or error line, newline included; longer is a protocol error.
pub const MAX_SCP_LINE: usize = 4096;
/// Deepest directory nesting tracked.
const MAX_DEPTH: usize = 256;
/// Most acknowledgements awaited at once (the sender waits for each one, so this is generous).
const MAX_EXPECTED: usize = 16;

/// Which way files move on this channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `scp -t`: the server receives; the client sends control lines and contents (upload).
    Sink,
    /// `scp -f`: the server sends control lines and contents (download).
    Source,
}

/// What the next acknowledgement from the receiving side answers.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Expect {
    /// The receiver's initial "ready".
    Ready,
    /// A `T` line.
    Time,
    /// A `C` line (before the contents are sent).
    Header,
    /// The contents and the sender's end-of-file byte.
    Data,
    /// A `D` line, with the directory's full path.
    Dir(String),
    /// An `E` line.
    EndDir,
}

/// The file currently being transferred.
#[derive(Debug)]
struct Transfer {
    path: String,
    size: u64,
    moved: u64,
    sender_error: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SenderState {
    /// Reading a control line.
    Line,
    /// Skipping this many content bytes.
    Content(u64),
    /// Expecting the sender's status byte after the contents.
    ContentEnd,
    /// Reading the error line the sender sent instead of a clean end-of-file byte.
    ContentError,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AckState {
    Byte,
    ErrorLine,
}

/// A line accumulator with a hard length limit.
#[derive(Debug, Default)]
struct LineBuf {
    buf: Vec<u8>,
}

impl LineBuf {
    /// Consumes bytes from `data` up to and including a newline. Returns how many bytes were
    /// consumed and whether the line is complete, or `Err` when the line grows too long.
    fn take(&mut self, data: &[u8]) -> Result<(usize, bool), ()> {
        match data.iter().position(|&b| b == b'\n') {
            Some(pos) => {
                if self.buf.len() + pos + 1 > MAX_SCP_LINE {
                    return Err(());
                }
                self.buf.extend_from_slice(&data[..pos]);
                Ok((pos + 1, true))
            }
            None => {
                if self.buf.len() + data.len() >= MAX_SCP_LINE {
                    return Err(());
                }
                self.buf.extend_from_slice(data);
                Ok((data.len(), false))
            }
        }
    }

    fn take_line(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.buf)
    }
}

/// Audits one legacy scp exec channel. Build it with [`ScpAudit::from_exec`], then feed it both
/// directions; see the crate docs for what is emitted when.
#[derive(Debug)]
pub struct ScpAudit {
    mode: Mode,
    /// Directory the names in control lines are relative to.
    base: String,
    /// The path named on the command line, for errors not tied to a control line.
    requested: String,
    dirs: Vec<String>,
    sender: SenderState,
    sender_line: LineBuf,
    ack: AckState,
    ack_line: LineBuf,
    expect: VecDeque<Expect>,
    current: Option<Transfer>,
    stopped: bool,
    finished: bool,
}

impl ScpAudit {
    /// Recognises an scp exec command line such as `scp -t /tmp/x` (upload: the server is the
    /// sink) or `scp -r -p -f /srv/data` (download: the server is the source). Flags may be
    /// combined (`-pt`), `--` ends them, and single quotes, double quotes and backslashes are
    /// honoured. Returns `None` when the command is not an scp transfer.
    ///
    /// Paths are reported as the command's path joined with the names in the control lines:
    /// for uploads the target itself is the base (so `scp -t /tmp/x` receiving `f` reports
    /// `/tmp/x/f`, even though the server writes `/tmp/x` when that is not an existing
    /// directory); for downloads the base is the source's parent directory (so `scp -f /tmp/x`
    /// sending `x` reports `/tmp/x`).
    pub fn from_exec(command: &[u8]) -> Option<ScpAudit> {
        let words = split_words(command)?;
        let (program, args) = words.split_first()?;
        let name = program.rsplit(|&b| b == b'/').next()?;
        if name != b"scp" {
            return None;
        }
        let mut mode = None;
        let mut paths = Vec::new();
        let mut options = true;
        for arg in args {
            if options && arg.as_slice() == b"--" {
                options = false;
            } else if options && arg.len() > 1 && arg[0] == b'-' {
                for &flag in &arg[1..] {
                    let m = match flag {
                        b't' => Mode::Sink,
                        b'f' => Mode::Source,
                        _ => continue,
                    };
                    if mode.is_some_and(|old| old != m) {
                        return None;
                    }
                    mode = Some(m);
                }
            } else {
                paths.push(arg);
            }
        }
        let mode = mode?;
        let first = path_string(paths.first()?);
        let base = match mode {
            Mode::Sink => first.clone(),
            Mode::Source => match first.rsplit_once('/') {
                Some(("", _)) => "/".to_owned(),
                Some((dir, _)) => dir.to_owned(),
                None => String::new(),
            },
        };
        Some(ScpAudit {
            mode,
            base,
            requested: first,
            dirs: Vec::new(),
            sender: SenderState::Line,
            sender_line: LineBuf::default(),
            ack: AckState::Byte,
            ack_line: LineBuf::default(),
            expect: VecDeque::from([Expect::Ready]),
            current: None,
            stopped: false,
            finished: false,
        })
    }

    /// Bytes the user's client sent toward the server. In sink mode (upload) these are the
    /// control lines and file contents; in source mode, acknowledgements.
    pub fn client_bytes(&mut self, data: &[u8]) -> Vec<FileOp> {
        match self.mode {
            Mode::Sink => self.sender_bytes(data),
            Mode::Source => self.ack_bytes(data),
        }
    }

    /// Bytes the server sent back. In source mode (download) these are the control lines and
    /// file contents; in sink mode, acknowledgements.
    pub fn server_bytes(&mut self, data: &[u8]) -> Vec<FileOp> {
        match self.mode {
            Mode::Sink => self.ack_bytes(data),
            Mode::Source => self.sender_bytes(data),
        }
    }

    /// The session is over: reports a file cut off mid-contents (status `"pending"`, bytes moved
    /// so far), and a file or directory still awaiting acknowledgement (`"no reply"`). Later input
    /// is ignored.
    pub fn finish(&mut self) -> Vec<FileOp> {
        let mut out = Vec::new();
        if self.finished {
            return out;
        }
        self.finished = true;
        let op = self.file_op();
        let mut header_unanswered = false;
        for expect in std::mem::take(&mut self.expect) {
            match expect {
                Expect::Dir(path) => out.push(FileOp::new(self.dir_op(), path, 0, "no reply")),
                Expect::Data => {
                    if let Some(t) = self.current.take() {
                        let status = t.sender_error.unwrap_or_else(|| "no reply".to_owned());
                        out.push(FileOp::new(op, t.path, t.size, status));
                    }
                }
                Expect::Header => header_unanswered = true,
                Expect::Ready | Expect::Time | Expect::EndDir => {}
            }
        }
        if let Some(t) = self.current.take() {
            // Contents cut off (or their end never confirmed): report what moved.
            let status = if header_unanswered && t.moved == 0 && t.size > 0 {
                "no reply"
            } else {
                "pending"
            };
            out.push(FileOp::new(op, t.path, t.moved, status));
        }
        out
    }

    fn file_op(&self) -> &'static str {
        match self.mode {
            Mode::Sink => "write",
            Mode::Source => "read",
        }
    }

    fn dir_op(&self) -> &'static str {
        match self.mode {
            Mode::Sink => "mkdir",
            Mode::Source => "opendir",
        }
    }

    fn join(&self, name: &str) -> String {
        let mut path = self.base.clone();
        for part in self.dirs.iter().map(String::as_str).chain([name]) {
            if !path.is_empty() && !path.ends_with('/') {
                path.push('/');
            }
            path.push_str(part);
        }
        path
    }

    fn stop(&mut self, reason: &str, out: &mut Vec<FileOp>) {
        self.stopped = true;
        out.push(FileOp::protocol_error(format!(
            "scp: {reason}; decoding stopped"
        )));
    }

    fn await_ack(&mut self, e: Expect, out: &mut Vec<FileOp>) {
        if self.expect.len() >= MAX_EXPECTED {
            self.stop("too many unacknowledged control messages", out);
        } else {
            self.expect.push_back(e);
        }
    }

    /// The stream carrying control lines and contents.
    fn sender_bytes(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() && !self.stopped && !self.finished {
            let rest = &data[i..];
            match self.sender {
                SenderState::Content(left) => {
                    let n = usize::try_from(left).map_or(rest.len(), |l| l.min(rest.len()));
                    i += n;
                    // n <= left, so this cannot underflow.
                    let left = left - n as u64;
                    if let Some(t) = self.current.as_mut() {
                        t.moved += n as u64;
                    }
                    self.sender = if left == 0 {
                        SenderState::ContentEnd
                    } else {
                        SenderState::Content(left)
                    };
                }
                SenderState::ContentEnd => {
                    i += 1;
                    match rest[0] {
                        0 => {
                            self.sender = SenderState::Line;
                            self.await_ack(Expect::Data, &mut out);
                        }
                        1 | 2 => self.sender = SenderState::ContentError,
                        _ => self.stop("unexpected byte after file contents", &mut out),
                    }
                }
                SenderState::Line | SenderState::ContentError => {
                    let Ok((n, complete)) = self.sender_line.take(rest) else {
                        self.stop("control line too long", &mut out);
                        break;
                    };
                    i += n;
                    if complete {
                        let line = self.sender_line.take_line();
                        if self.sender == SenderState::ContentError {
                            if let Some(t) = self.current.as_mut() {
                                t.sender_error = Some(error_text(&line));
                            }
                            self.sender = SenderState::Line;
                            self.await_ack(Expect::Data, &mut out);
                        } else {
                            self.control_line(&line, &mut out);
                        }
                    }
                }
            }
        }
        out
    }

    fn control_line(&mut self, line: &[u8], out: &mut Vec<FileOp>) {
        let Some((&kind, rest)) = line.split_first() else {
            self.stop("empty control line", out);
            return;
        };
        match kind {
            b'C' => {
                let Some((size, name)) = parse_entry(rest) else {
                    self.stop("malformed C line", out);
                    return;
                };
                let path = self.join(&name);
                self.current = Some(Transfer {
                    path,
                    size,
                    moved: 0,
                    sender_error: None,
                });
                self.sender = if size == 0 {
                    SenderState::ContentEnd
                } else {
                    SenderState::Content(size)
                };
                self.await_ack(Expect::Header, out);
            }
            b'D' => {
                let Some((_, name)) = parse_entry(rest) else {
                    self.stop("malformed D line", out);
                    return;
                };
                if self.dirs.len() >= MAX_DEPTH {
                    self.stop("directories nested too deep", out);
                    return;
                }
                let path = self.join(&name);
                self.dirs.push(name);
                self.await_ack(Expect::Dir(path), out);
            }
            b'E' => {
                self.dirs.pop();
                self.await_ack(Expect::EndDir, out);
            }
            b'T' => self.await_ack(Expect::Time, out),
            1 | 2 => {
                // The sender reports a problem in place of a file (missing, unreadable, …).
                let status = error_text(rest);
                out.push(FileOp::new(
                    self.file_op(),
                    self.requested.clone(),
                    0,
                    status,
                ));
            }
            _ => self.stop("unknown control line", out),
        }
    }

    /// The stream carrying acknowledgements.
    fn ack_bytes(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < data.len() && !self.stopped && !self.finished {
            match self.ack {
                AckState::Byte => {
                    let b = data[i];
                    i += 1;
                    match b {
                        0 => self.acknowledged(Ok(()), &mut out),
                        1 | 2 => self.ack = AckState::ErrorLine,
                        _ => self.stop("unexpected acknowledgement byte", &mut out),
                    }
                }
                AckState::ErrorLine => {
                    let Ok((n, complete)) = self.ack_line.take(&data[i..]) else {
                        self.stop("error line too long", &mut out);
                        break;
                    };
                    i += n;
                    if complete {
                        let line = self.ack_line.take_line();
                        self.ack = AckState::Byte;
                        self.acknowledged(Err(error_text(&line)), &mut out);
                    }
                }
            }
        }
        out
    }

    fn acknowledged(&mut self, result: Result<(), String>, out: &mut Vec<FileOp>) {
        let op = self.file_op();
        match (self.expect.pop_front(), result) {
            (Some(Expect::Header), Err(e)) => {
                // Rejected before any contents: the sender skips this file.
                if let Some(t) = self.current.take() {
                    if matches!(
                        self.sender,
                        SenderState::Content(_) | SenderState::ContentEnd
                    ) && t.moved == 0
                    {
                        self.sender = SenderState::Line;
                    }
                    out.push(FileOp::new(op, t.path, 0, e));
                }
            }
            (Some(Expect::Data), result) => {
                if let Some(t) = self.current.take() {
                    let status = match (t.sender_error, result) {
                        (Some(e), _) | (None, Err(e)) => e,
                        (None, Ok(())) => "ok".to_owned(),
                    };
                    out.push(FileOp::new(op, t.path, t.size, status));
                }
            }
            (Some(Expect::Dir(path)), result) => {
                let status = match result {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => {
                        // A refused directory is skipped by the sender, with no `E` line.
                        self.dirs.pop();
                        e
                    }
                };
                out.push(FileOp::new(self.dir_op(), path, 0, status));
            }
            (
                Some(Expect::Header | Expect::Ready | Expect::Time | Expect::EndDir) | None,
                Ok(()),
            ) => {}
            (Some(Expect::Ready | Expect::Time | Expect::EndDir) | None, Err(e)) => {
                out.push(FileOp::new(op, self.requested.clone(), 0, e));
            }
        }
    }
}

/// Error text of a `\x01`/`\x02` line (the marker byte already removed), trimmed.
fn error_text(line: &[u8]) -> String {
    let text = path_string(line);
    let text = text.trim();
    if text.is_empty() {
        "error".to_owned()
    } else {
        text.to_owned()
    }
}

/// Parses the part of a `C`/`D` line after the letter: `mmmm <size> <name>`.
fn parse_entry(rest: &[u8]) -> Option<(u64, String)> {
    let mut parts = rest.splitn(3, |&b| b == b' ');
    let mode = parts.next()?;
    let size = parts.next()?;
    let name = parts.next()?;
    if mode.is_empty() || !mode.iter().all(|b| (b'0'..=b'7').contains(b)) {
        return None;
    }
    if size.is_empty() || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(size).ok()?.parse::<u64>().ok()?;
    if name.is_empty() {
        return None;
    }
    Some((size, path_string(name)))
}

/// Splits a command line into words the way a POSIX shell would for simple commands: blanks
/// separate words; single quotes, double quotes and backslashes quote. `None` on an unterminated
/// quote or an over-long command.
fn split_words(command: &[u8]) -> Option<Vec<Vec<u8>>> {
    if command.len() > 4 * MAX_SCP_LINE {
        return None;
    }
    let mut words = Vec::new();
    let mut word: Option<Vec<u8>> = None;
    let mut bytes = command.iter().copied();
    while let Some(b) = bytes.next() {
        match b {
            b' ' | b'\t' | b'\n' => {
                if let Some(w) = word.take() {
                    words.push(w);
                }
            }
            b'\'' => {
                let w = word.get_or_insert_with(Vec::new);
                loop {
                    match bytes.next()? {
                        b'\'' => break,
                        c => w.push(c),
                    }
                }
            }
            b'"' => {
                let w = word.get_or_insert_with(Vec::new);
                loop {
                    match bytes.next()? {
                        b'"' => break,
                        b'\\' => {
                            let c = bytes.next()?;
                            if !matches!(c, b'"' | b'\\' | b'$' | b'`') {
                                w.push(b'\\');
                            }
                            w.push(c);
                        }
                        c => w.push(c),
                    }
                }
            }
            b'\\' => {
                let c = bytes.next()?;
                word.get_or_insert_with(Vec::new).push(c);
            }
            c => word.get_or_insert_with(Vec::new).push(c),
        }
    }
    if let Some(w) = word {
        words.push(w);
    }
    Some(words)
}

#[cfg(test)]
mod tests;
