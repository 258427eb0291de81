//! Exports to other formats: asciicast v2 and v3 (asciinema), a plain-text transcript and
//! JSON lines.
//!
//! asciicast carries text only: output that is not valid UTF-8 is converted lossily there
//! (U+FFFD); the native format and the JSON-lines export keep every byte.

use std::collections::BTreeMap;
use std::io::{self, Write};

use base64::Engine as _;
use custos_term::Utf8Carry;
use serde_json::{Value, json};

use crate::error::RecordingError;
use crate::event::{Event, EventKind};
use crate::reader::Reader;

/// Errors of exports: reading the recording or writing the output.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// The recording could not be read.
    #[error(transparent)]
    Recording(#[from] RecordingError),
    /// The output could not be written.
    #[error("writing the export failed: {0}")]
    Write(#[from] io::Error),
}

/// The terminal channel an asciicast export follows: the first channel with a PTY, else the
/// first channel with output.
fn primary_channel(reader: &Reader) -> Result<Option<(u32, u16, u16, String)>, RecordingError> {
    let mut first_output = None;
    for ev in reader.events() {
        let ev = ev?;
        match ev.kind {
            EventKind::PtyRequest { term, cols, rows } => {
                return Ok(Some((ev.channel, cols, rows, term)));
            }
            EventKind::Output(_) if first_output.is_none() => {
                first_output = Some((ev.channel, 80, 24, String::new()));
            }
            _ => {}
        }
    }
    Ok(first_output)
}

fn title(reader: &Reader) -> String {
    let m = reader.metadata();
    format!("{}@{} via {}", m.login, m.target, m.user)
}

fn secs(us: u64) -> Value {
    // Six decimals: microsecond precision, as a JSON number.
    let v = us as f64 / 1e6;
    serde_json::Number::from_f64((v * 1e6).round() / 1e6)
        .map(Value::Number)
        .unwrap_or(Value::from(0))
}

/// What an asciicast event line carries, independent of the version.
enum CastEvent {
    Code(&'static str, String),
}

fn cast_events(
    reader: &Reader,
    channel: u32,
    mut emit: impl FnMut(u64, CastEvent) -> io::Result<()>,
) -> Result<(), ExportError> {
    let mut out = Utf8Carry::new();
    let mut inp = Utf8Carry::new();
    for ev in reader.events() {
        let ev = ev?;
        if ev.channel != channel {
            continue;
        }
        let t = ev.time_us;
        match &ev.kind {
            EventKind::Output(b) | EventKind::Stderr(b) => {
                let s = out.decode(b);
                if !s.is_empty() {
                    emit(t, CastEvent::Code("o", s))?;
                }
            }
            EventKind::Input(b) => {
                let s = inp.decode(b);
                if !s.is_empty() {
                    emit(t, CastEvent::Code("i", s))?;
                }
            }
            EventKind::InputRedacted => emit(t, CastEvent::Code("m", "input redacted".into()))?,
            EventKind::Resize { cols, rows } => {
                emit(t, CastEvent::Code("r", format!("{cols}x{rows}")))?
            }
            EventKind::Note(n) => emit(t, CastEvent::Code("m", n.clone()))?,
            EventKind::ExitStatus(s) => emit(t, CastEvent::Code("x", s.to_string()))?,
            _ => {}
        }
    }
    Ok(())
}

/// Writes asciicast v2: a header line, then `[seconds, code, data]` lines with absolute times.
/// Codes: `o` output, `i` input, `r` resize, `m` marker (redacted input, notes). Exit status is
/// not part of v2 and is omitted.
pub fn asciicast_v2(reader: &Reader, mut out: impl Write) -> Result<(), ExportError> {
    let (channel, cols, rows, term) =
        primary_channel(reader)?.unwrap_or((0, 80, 24, String::new()));
    let mut header = json!({
        "version": 2,
        "width": cols,
        "height": rows,
        "timestamp": reader.created_unix_us() / 1_000_000,
        "title": title(reader),
    });
    if !term.is_empty() {
        header["env"] = json!({ "TERM": term });
    }
    writeln!(out, "{header}")?;
    cast_events(reader, channel, |t, e| {
        let CastEvent::Code(code, data) = e;
        if code == "x" {
            return Ok(());
        }
        writeln!(out, "{}", json!([secs(t), code, data]))
    })?;
    out.flush()?;
    Ok(())
}

/// Writes asciicast v3: a header line, then `[interval, code, data]` lines where the interval
/// is the time since the previous event. Codes: `o`, `i`, `r`, `m`, and `x` for the exit status.
pub fn asciicast_v3(reader: &Reader, mut out: impl Write) -> Result<(), ExportError> {
    let (channel, cols, rows, term) =
        primary_channel(reader)?.unwrap_or((0, 80, 24, String::new()));
    let mut term_obj = json!({ "cols": cols, "rows": rows });
    if !term.is_empty() {
        term_obj["type"] = json!(term);
    }
    let header = json!({
        "version": 3,
        "term": term_obj,
        "timestamp": reader.created_unix_us() / 1_000_000,
        "title": title(reader),
    });
    writeln!(out, "{header}")?;
    let mut prev = 0u64;
    cast_events(reader, channel, |t, e| {
        let CastEvent::Code(code, data) = e;
        let interval = t.saturating_sub(prev);
        prev = t.max(prev);
        writeln!(out, "{}", json!([secs(interval), code, data]))
    })?;
    out.flush()?;
    Ok(())
}

fn stamp(us: u64) -> String {
    let s = us / 1_000_000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        s / 3600,
        (s / 60) % 60,
        s % 60,
        (us / 1000) % 1000
    )
}

/// Renders output into plain lines: handles CR, LF, backspace, tabs and "erase line";
/// drops other escape sequences. Full-screen programs come out approximate.
#[derive(Default)]
struct LineRenderer {
    carry: Utf8Carry,
    line: Vec<char>,
    col: usize,
    esc: Option<String>,
}

const MAX_LINE: usize = 4096;

impl LineRenderer {
    fn feed(&mut self, bytes: &[u8], lines: &mut Vec<String>) {
        let text = self.carry.decode(bytes);
        for c in text.chars() {
            if let Some(seq) = &mut self.esc {
                seq.push(c);
                let done = match seq.len() {
                    1 => !matches!(c, '[' | ']' | '(' | ')' | 'P' | '_'),
                    _ => {
                        let first = seq.chars().next().unwrap_or('[');
                        match first {
                            '[' => ('@'..='~').contains(&c),
                            '(' | ')' => true,
                            _ => c == '\u{7}' || seq.ends_with("\u{1b}\\"),
                        }
                    }
                };
                if done || seq.len() > 256 {
                    let seq = self.esc.take().unwrap_or_default();
                    if seq == "[K" || seq == "[0K" {
                        self.line.truncate(self.col);
                    }
                }
                continue;
            }
            match c {
                '\u{1b}' => self.esc = Some(String::new()),
                '\r' => self.col = 0,
                '\n' => {
                    lines.push(self.line.iter().collect::<String>().trim_end().to_string());
                    self.line.clear();
                    self.col = 0;
                }
                '\u{8}' => self.col = self.col.saturating_sub(1),
                '\t' => {
                    let next = (self.col / 8 + 1) * 8;
                    while self.col < next {
                        self.put(' ');
                    }
                }
                c if c.is_control() => {}
                c => self.put(c),
            }
        }
    }

    fn put(&mut self, c: char) {
        if self.col >= MAX_LINE {
            return;
        }
        if self.col < self.line.len() {
            self.line[self.col] = c;
        } else {
            while self.line.len() < self.col {
                self.line.push(' ');
            }
            self.line.push(c);
        }
        self.col += 1;
    }

    fn finish(&mut self, lines: &mut Vec<String>) {
        if !self.line.is_empty() {
            lines.push(self.line.iter().collect::<String>().trim_end().to_string());
            self.line.clear();
            self.col = 0;
        }
    }
}

/// Writes a readable transcript: a header, terminal output rendered as plain lines, and
/// bracketed lines for commands, exit statuses, SFTP operations, port forwards and notes.
pub fn text(reader: &Reader, mut out: impl Write) -> Result<(), ExportError> {
    let m = reader.metadata();
    writeln!(
        out,
        "# recording {} session {} user {} target {} login {} source {}",
        reader.recording_id(),
        m.session_id,
        m.user,
        m.target,
        m.login,
        m.source
    )?;
    let mut renderers: BTreeMap<u32, LineRenderer> = BTreeMap::new();
    let mut lines = Vec::new();
    for ev in reader.events() {
        let ev = ev?;
        let Event {
            time_us, channel, ..
        } = ev;
        let tag = |s: String| format!("[{} ch{}] {}", stamp(time_us), channel, s);
        let line = match &ev.kind {
            EventKind::Output(b) | EventKind::Stderr(b) => {
                renderers.entry(channel).or_default().feed(b, &mut lines);
                None
            }
            EventKind::Exec { command } => {
                Some(tag(format!("exec: {}", String::from_utf8_lossy(command))))
            }
            EventKind::Shell => Some(tag("shell".into())),
            EventKind::Subsystem { name } => Some(tag(format!("subsystem: {name}"))),
            EventKind::ExitStatus(s) => Some(tag(format!("exit status {s}"))),
            EventKind::ExitSignal {
                signal, message, ..
            } => Some(tag(format!("killed by signal {signal} {message}"))),
            EventKind::Sftp {
                op,
                path,
                target_path,
                bytes,
                status,
            } => Some(tag(match target_path {
                Some(t) => format!("sftp {op} {path} -> {t} ({bytes} bytes) {status}"),
                None => format!("sftp {op} {path} ({bytes} bytes) {status}"),
            })),
            EventKind::PortForward {
                host,
                port,
                originator,
                originator_port,
                allowed,
            } => Some(tag(format!(
                "port forward {originator}:{originator_port} -> {host}:{port} {}",
                if *allowed { "allowed" } else { "denied" }
            ))),
            EventKind::Note(n) => Some(tag(format!("note: {n}"))),
            EventKind::ChannelClose => {
                if let Some(mut r) = renderers.remove(&channel) {
                    r.finish(&mut lines);
                }
                None
            }
            _ => None,
        };
        for l in lines.drain(..) {
            writeln!(out, "{l}")?;
        }
        if let Some(l) = line {
            writeln!(out, "{l}")?;
        }
    }
    for r in renderers.values_mut() {
        r.finish(&mut lines);
    }
    for l in lines.drain(..) {
        writeln!(out, "{l}")?;
    }
    out.flush()?;
    Ok(())
}

fn payload(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => json!({ "text": s }),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
    }
}

/// One event as a JSON object. Byte payloads are `{"text": ...}` when valid UTF-8 and
/// `{"base64": ...}` otherwise, so the export is lossless.
pub fn event_json(ev: &Event) -> Value {
    let mut v = json!({ "t_us": ev.time_us, "channel": ev.channel, "type": ev.kind.name() });
    let extra = match &ev.kind {
        EventKind::ChannelOpen { kind } => json!({ "kind": kind }),
        EventKind::PtyRequest { term, cols, rows } => {
            json!({ "term": term, "cols": cols, "rows": rows })
        }
        EventKind::Shell | EventKind::InputRedacted | EventKind::ChannelClose => json!({}),
        EventKind::Exec { command } => json!({ "command": payload(command) }),
        EventKind::Subsystem { name } => json!({ "name": name }),
        EventKind::Env { name, value } => json!({ "name": name, "value": payload(value) }),
        EventKind::Output(b) | EventKind::Stderr(b) | EventKind::Input(b) => {
            json!({ "data": payload(b) })
        }
        EventKind::Resize { cols, rows } => json!({ "cols": cols, "rows": rows }),
        EventKind::Eof { from_user } => json!({ "from_user": from_user }),
        EventKind::ExitStatus(s) => json!({ "status": s }),
        EventKind::ExitSignal {
            signal,
            core_dumped,
            message,
        } => json!({ "signal": signal, "core_dumped": core_dumped, "message": message }),
        EventKind::Sftp {
            op,
            path,
            target_path,
            bytes,
            status,
        } => {
            json!({ "op": op, "path": path, "target_path": target_path, "bytes": bytes, "status": status })
        }
        EventKind::PortForward {
            host,
            port,
            originator,
            originator_port,
            allowed,
        } => json!({
            "host": host, "port": port, "originator": originator,
            "originator_port": originator_port, "allowed": allowed
        }),
        EventKind::Keyframe { cols, rows, screen } => {
            json!({ "cols": cols, "rows": rows, "screen": screen })
        }
        EventKind::Note(n) => json!({ "note": n }),
    };
    if let (Some(obj), Value::Object(extra)) = (v.as_object_mut(), extra) {
        obj.extend(extra);
    }
    v
}

/// Writes one JSON object per event (every kind), preceded by a header object with the
/// recording id, creation time and metadata.
pub fn jsonl(reader: &Reader, mut out: impl Write) -> Result<(), ExportError> {
    let header = json!({
        "type": "header",
        "recording_id": reader.recording_id().to_string(),
        "created_unix_us": reader.created_unix_us(),
        "metadata": reader.metadata(),
        "sealed": reader.manifest().is_some(),
    });
    writeln!(out, "{header}")?;
    for ev in reader.events() {
        writeln!(out, "{}", event_json(&ev?))?;
    }
    out.flush()?;
    Ok(())
}
