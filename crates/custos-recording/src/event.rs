//! Session events and their compact binary encoding inside a segment.
//!
//! Each event is `type u8 | time delta varint | channel varint | body length varint | body`.
//! Time and channel sit before the length so that a reader can skip an event type it does not
//! know without losing the time base of the events that follow.

use bytes::Bytes;

/// One thing that happened in a session, at `time_us` microseconds after the recording started.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Microseconds since the start of the recording (monotonic clock).
    pub time_us: u64,
    /// SSH channel number the event belongs to (0 for session-wide notes).
    pub channel: u32,
    /// What happened.
    pub kind: EventKind,
}

/// The kinds of events a recording holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EventKind {
    /// A channel was opened (`session`, `direct-tcpip`, ...).
    ChannelOpen {
        /// SSH channel type.
        kind: String,
    },
    /// The client asked for a PTY.
    PtyRequest {
        /// Value of TERM.
        term: String,
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// The client asked for an interactive shell.
    Shell,
    /// The client asked to run a command.
    Exec {
        /// The command line, as sent (may not be UTF-8).
        command: Bytes,
    },
    /// The client asked for a subsystem (`sftp`).
    Subsystem {
        /// Subsystem name.
        name: String,
    },
    /// An environment variable was passed.
    Env {
        /// Variable name.
        name: String,
        /// Variable value.
        value: Bytes,
    },
    /// Bytes from the target to the user (stdout or PTY output).
    Output(Bytes),
    /// Bytes from the target's stderr.
    Stderr(Bytes),
    /// Bytes typed or sent by the user.
    Input(Bytes),
    /// The user typed something at a no-echo prompt; the content was not recorded.
    InputRedacted,
    /// The terminal was resized.
    Resize {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
    },
    /// End of data in one direction.
    Eof {
        /// True when the user side sent EOF.
        from_user: bool,
    },
    /// The remote command exited.
    ExitStatus(u32),
    /// The remote command was killed by a signal.
    ExitSignal {
        /// Signal name without the `SIG` prefix.
        signal: String,
        /// Whether a core was dumped.
        core_dumped: bool,
        /// Error message.
        message: String,
    },
    /// The channel was closed.
    ChannelClose,
    /// An SFTP operation.
    Sftp {
        /// Operation (`open`, `read`, `write`, `remove`, `rename`, ...).
        op: String,
        /// Path operated on.
        path: String,
        /// Second path (rename, symlink).
        target_path: Option<String>,
        /// Bytes transferred.
        bytes: u64,
        /// Result status.
        status: String,
    },
    /// A port forwarding request.
    PortForward {
        /// Destination host.
        host: String,
        /// Destination port.
        port: u32,
        /// Originator address.
        originator: String,
        /// Originator port.
        originator_port: u32,
        /// Whether policy allowed it.
        allowed: bool,
    },
    /// A screen snapshot: escape sequences that rebuild the screen on a blank terminal of
    /// `cols` x `rows`.
    Keyframe {
        /// Columns.
        cols: u16,
        /// Rows.
        rows: u16,
        /// The escape sequences.
        screen: String,
    },
    /// A free-form note from the gateway.
    Note(String),
}

impl EventKind {
    /// The type byte used on disk.
    pub fn type_byte(&self) -> u8 {
        match self {
            EventKind::ChannelOpen { .. } => 1,
            EventKind::PtyRequest { .. } => 2,
            EventKind::Shell => 3,
            EventKind::Exec { .. } => 4,
            EventKind::Subsystem { .. } => 5,
            EventKind::Env { .. } => 6,
            EventKind::Output(_) => 7,
            EventKind::Stderr(_) => 8,
            EventKind::Input(_) => 9,
            EventKind::InputRedacted => 10,
            EventKind::Resize { .. } => 11,
            EventKind::Eof { .. } => 12,
            EventKind::ExitStatus(_) => 13,
            EventKind::ExitSignal { .. } => 14,
            EventKind::ChannelClose => 15,
            EventKind::Sftp { .. } => 16,
            EventKind::PortForward { .. } => 17,
            EventKind::Keyframe { .. } => 18,
            EventKind::Note(_) => 19,
        }
    }

    /// A short lowercase name (`output`, `exit_status`, ...), used by exports.
    pub fn name(&self) -> &'static str {
        match self {
            EventKind::ChannelOpen { .. } => "channel_open",
            EventKind::PtyRequest { .. } => "pty_request",
            EventKind::Shell => "shell",
            EventKind::Exec { .. } => "exec",
            EventKind::Subsystem { .. } => "subsystem",
            EventKind::Env { .. } => "env",
            EventKind::Output(_) => "output",
            EventKind::Stderr(_) => "stderr",
            EventKind::Input(_) => "input",
            EventKind::InputRedacted => "input_redacted",
            EventKind::Resize { .. } => "resize",
            EventKind::Eof { .. } => "eof",
            EventKind::ExitStatus(_) => "exit_status",
            EventKind::ExitSignal { .. } => "exit_signal",
            EventKind::ChannelClose => "channel_close",
            EventKind::Sftp { .. } => "sftp",
            EventKind::PortForward { .. } => "port_forward",
            EventKind::Keyframe { .. } => "keyframe",
            EventKind::Note(_) => "note",
        }
    }
}

/// Appends `v` as an unsigned LEB128 varint.
pub(crate) fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    put_varint(out, b.len() as u64);
    out.extend_from_slice(b);
}

/// Appends one encoded event; `prev_time_us` is the time base (previous event or segment start).
pub(crate) fn encode_event(out: &mut Vec<u8>, prev_time_us: u64, ev: &Event) {
    out.push(ev.kind.type_byte());
    put_varint(out, ev.time_us.saturating_sub(prev_time_us));
    put_varint(out, u64::from(ev.channel));
    let mut body = Vec::new();
    let b = &mut body;
    match &ev.kind {
        EventKind::ChannelOpen { kind } => put_bytes(b, kind.as_bytes()),
        EventKind::PtyRequest { term, cols, rows } => {
            put_bytes(b, term.as_bytes());
            put_varint(b, u64::from(*cols));
            put_varint(b, u64::from(*rows));
        }
        EventKind::Shell | EventKind::InputRedacted | EventKind::ChannelClose => {}
        EventKind::Exec { command } => put_bytes(b, command),
        EventKind::Subsystem { name } => put_bytes(b, name.as_bytes()),
        EventKind::Env { name, value } => {
            put_bytes(b, name.as_bytes());
            put_bytes(b, value);
        }
        // Payload events: the body is the payload itself (its length is the body length).
        EventKind::Output(d) | EventKind::Stderr(d) | EventKind::Input(d) => {
            put_varint(out, d.len() as u64);
            out.extend_from_slice(d);
            return;
        }
        EventKind::Resize { cols, rows } => {
            put_varint(b, u64::from(*cols));
            put_varint(b, u64::from(*rows));
        }
        EventKind::Eof { from_user } => b.push(u8::from(*from_user)),
        EventKind::ExitStatus(s) => put_varint(b, u64::from(*s)),
        EventKind::ExitSignal {
            signal,
            core_dumped,
            message,
        } => {
            put_bytes(b, signal.as_bytes());
            b.push(u8::from(*core_dumped));
            put_bytes(b, message.as_bytes());
        }
        EventKind::Sftp {
            op,
            path,
            target_path,
            bytes,
            status,
        } => {
            put_bytes(b, op.as_bytes());
            put_bytes(b, path.as_bytes());
            match target_path {
                Some(t) => {
                    b.push(1);
                    put_bytes(b, t.as_bytes());
                }
                None => b.push(0),
            }
            put_varint(b, *bytes);
            put_bytes(b, status.as_bytes());
        }
        EventKind::PortForward {
            host,
            port,
            originator,
            originator_port,
            allowed,
        } => {
            put_bytes(b, host.as_bytes());
            put_varint(b, u64::from(*port));
            put_bytes(b, originator.as_bytes());
            put_varint(b, u64::from(*originator_port));
            b.push(u8::from(*allowed));
        }
        EventKind::Keyframe { cols, rows, screen } => {
            put_varint(b, u64::from(*cols));
            put_varint(b, u64::from(*rows));
            put_bytes(b, screen.as_bytes());
        }
        EventKind::Note(n) => put_bytes(b, n.as_bytes()),
    }
    put_varint(out, body.len() as u64);
    out.extend_from_slice(&body);
}

/// Why an event payload could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("event {index}: {reason}")]
pub struct DecodeError {
    /// Index of the event inside its segment.
    pub index: usize,
    /// What was wrong.
    pub reason: &'static str,
}

/// A cursor over a `Bytes` buffer that hands out zero-copy slices.
struct Cursor {
    buf: Bytes,
    pos: usize,
}

impl Cursor {
    fn varint(&mut self) -> Result<u64, &'static str> {
        let mut v: u64 = 0;
        for i in 0..10 {
            let b = *self.buf.get(self.pos).ok_or("truncated varint")?;
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err("varint overflow");
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(v);
            }
        }
        Err("varint too long")
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        let b = *self.buf.get(self.pos).ok_or("truncated")?;
        self.pos += 1;
        Ok(b)
    }
    fn take(&mut self, n: u64) -> Result<Bytes, &'static str> {
        let n = usize::try_from(n).map_err(|_| "length too large")?;
        let end = self.pos.checked_add(n).ok_or("length too large")?;
        if end > self.buf.len() {
            return Err("length beyond end");
        }
        let b = self.buf.slice(self.pos..end);
        self.pos = end;
        Ok(b)
    }
    fn bytes(&mut self) -> Result<Bytes, &'static str> {
        let n = self.varint()?;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, &'static str> {
        Ok(String::from_utf8_lossy(&self.bytes()?).into_owned())
    }
    fn u16(&mut self) -> Result<u16, &'static str> {
        u16::try_from(self.varint()?).map_err(|_| "value out of range")
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        u32::try_from(self.varint()?).map_err(|_| "value out of range")
    }
    fn bool(&mut self) -> Result<bool, &'static str> {
        Ok(self.u8()? != 0)
    }
}

/// Decodes the events of one segment. Unknown event types are skipped (their time delta still
/// applies). Returns the events with absolute times.
pub(crate) fn decode_events(buf: Bytes, first_time_us: u64) -> Result<Vec<Event>, DecodeError> {
    let mut c = Cursor { buf, pos: 0 };
    let mut out = Vec::new();
    let mut time = first_time_us;
    let mut index = 0;
    while c.pos < c.buf.len() {
        let ev = decode_one(&mut c, &mut time).map_err(|reason| DecodeError { index, reason })?;
        if let Some(ev) = ev {
            out.push(ev);
        }
        index += 1;
    }
    Ok(out)
}

fn decode_one(c: &mut Cursor, time: &mut u64) -> Result<Option<Event>, &'static str> {
    let ty = c.u8()?;
    let delta = c.varint()?;
    *time = time.checked_add(delta).ok_or("time overflow")?;
    let channel = c.u32()?;
    let body = c.bytes()?;
    let mut b = Cursor { buf: body, pos: 0 };
    let kind = match ty {
        1 => EventKind::ChannelOpen { kind: b.string()? },
        2 => EventKind::PtyRequest {
            term: b.string()?,
            cols: b.u16()?,
            rows: b.u16()?,
        },
        3 => EventKind::Shell,
        4 => EventKind::Exec {
            command: b.bytes()?,
        },
        5 => EventKind::Subsystem { name: b.string()? },
        6 => EventKind::Env {
            name: b.string()?,
            value: b.bytes()?,
        },
        7 => EventKind::Output(b.buf.clone()),
        8 => EventKind::Stderr(b.buf.clone()),
        9 => EventKind::Input(b.buf.clone()),
        10 => EventKind::InputRedacted,
        11 => EventKind::Resize {
            cols: b.u16()?,
            rows: b.u16()?,
        },
        12 => EventKind::Eof {
            from_user: b.bool()?,
        },
        13 => EventKind::ExitStatus(b.u32()?),
        14 => EventKind::ExitSignal {
            signal: b.string()?,
            core_dumped: b.bool()?,
            message: b.string()?,
        },
        15 => EventKind::ChannelClose,
        16 => EventKind::Sftp {
            op: b.string()?,
            path: b.string()?,
            target_path: if b.bool()? { Some(b.string()?) } else { None },
            bytes: b.varint()?,
            status: b.string()?,
        },
        17 => EventKind::PortForward {
            host: b.string()?,
            port: b.u32()?,
            originator: b.string()?,
            originator_port: b.u32()?,
            allowed: b.bool()?,
        },
        18 => EventKind::Keyframe {
            cols: b.u16()?,
            rows: b.u16()?,
            screen: b.string()?,
        },
        19 => EventKind::Note(b.string()?),
        _ => return Ok(None),
    };
    Ok(Some(Event {
        time_us: *time,
        channel,
        kind,
    }))
}

#[cfg(test)]
pub(crate) fn all_kinds() -> Vec<EventKind> {
    vec![
        EventKind::ChannelOpen {
            kind: "session".into(),
        },
        EventKind::PtyRequest {
            term: "xterm-256color".into(),
            cols: 80,
            rows: 24,
        },
        EventKind::Shell,
        EventKind::Exec {
            command: Bytes::from_static(b"ls -la \xff"),
        },
        EventKind::Subsystem {
            name: "sftp".into(),
        },
        EventKind::Env {
            name: "LANG".into(),
            value: Bytes::from_static(b"C.UTF-8"),
        },
        EventKind::Output(Bytes::from_static(b"hello \x00\xff\xfe\x1b[31mred")),
        EventKind::Stderr(Bytes::from_static(b"oops\n")),
        EventKind::Input(Bytes::from_static(b"ls\r")),
        EventKind::InputRedacted,
        EventKind::Resize {
            cols: 132,
            rows: 50,
        },
        EventKind::Eof { from_user: true },
        EventKind::ExitStatus(3),
        EventKind::ExitSignal {
            signal: "KILL".into(),
            core_dumped: false,
            message: "killed".into(),
        },
        EventKind::ChannelClose,
        EventKind::Sftp {
            op: "rename".into(),
            path: "/a".into(),
            target_path: Some("/b".into()),
            bytes: 0,
            status: "ok".into(),
        },
        EventKind::Sftp {
            op: "write".into(),
            path: "/etc/motd".into(),
            target_path: None,
            bytes: 1 << 40,
            status: "ok".into(),
        },
        EventKind::PortForward {
            host: "db.internal".into(),
            port: 5432,
            originator: "127.0.0.1".into(),
            originator_port: 50000,
            allowed: false,
        },
        EventKind::Keyframe {
            cols: 80,
            rows: 24,
            screen: "\x1b[2Jhi".into(),
        },
        EventKind::Note("note ✓".into()),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_every_kind() {
        let events: Vec<Event> = all_kinds()
            .into_iter()
            .enumerate()
            .map(|(i, kind)| Event {
                time_us: 1000 + (i as u64) * 1_000_003,
                channel: (i % 3) as u32,
                kind,
            })
            .collect();
        let mut buf = Vec::new();
        let mut prev = 1000;
        for e in &events {
            encode_event(&mut buf, prev, e);
            prev = e.time_us;
        }
        let back = decode_events(Bytes::from(buf), 1000).expect("decode");
        assert_eq!(back, events);
    }

    #[test]
    fn unknown_types_are_skipped_keeping_time() {
        let mut buf = Vec::new();
        // type 200, delta 5, channel 1, body "zz"
        buf.extend_from_slice(&[200, 5, 1, 2, b'z', b'z']);
        encode_event(
            &mut buf,
            5,
            &Event {
                time_us: 7,
                channel: 1,
                kind: EventKind::Shell,
            },
        );
        let back = decode_events(Bytes::from(buf), 0).expect("decode");
        assert_eq!(
            back,
            vec![Event {
                time_us: 7,
                channel: 1,
                kind: EventKind::Shell
            }]
        );
    }

    #[test]
    fn garbage_never_panics() {
        let mut x: u64 = 99;
        for len in 0..400usize {
            let mut buf = Vec::with_capacity(len);
            for _ in 0..len {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                buf.push((x >> 56) as u8);
            }
            let _ = decode_events(Bytes::from(buf), u64::MAX - 5);
        }
    }
}
