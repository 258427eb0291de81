//! SFTP (draft-ietf-secsh-filexfer, versions 3 to 6) request/reply decoding.

use std::collections::HashMap;

use crate::wire::Reader;
use crate::{FileOp, path_string};

/// Largest accepted SFTP packet length (the u32 length prefix): 256 KiB of payload plus room for
/// headers. Anything longer is treated as a framing error.
pub const MAX_SFTP_PACKET: u32 = 256 * 1024 + 1024;
/// Most requests awaiting a reply that are tracked at once.
pub const MAX_PENDING_REQUESTS: usize = 1024;
/// Most open file and directory handles tracked at once.
pub const MAX_OPEN_HANDLES: usize = 1024;
/// Handles are at most 256 bytes long (draft-02 section 3).
const MAX_HANDLE_LEN: usize = 256;
/// Body bytes kept for packets that start with `id, handle` and may carry a large payload after:
/// id + handle string + offset + length.
const HANDLE_PREFIX: usize = 4 + 4 + MAX_HANDLE_LEN + 8 + 4;

const FXP_INIT: u8 = 1;
const FXP_VERSION: u8 = 2;
const FXP_OPEN: u8 = 3;
const FXP_CLOSE: u8 = 4;
const FXP_READ: u8 = 5;
const FXP_WRITE: u8 = 6;
const FXP_LSTAT: u8 = 7;
const FXP_FSTAT: u8 = 8;
const FXP_SETSTAT: u8 = 9;
const FXP_FSETSTAT: u8 = 10;
const FXP_OPENDIR: u8 = 11;
const FXP_READDIR: u8 = 12;
const FXP_REMOVE: u8 = 13;
const FXP_MKDIR: u8 = 14;
const FXP_RMDIR: u8 = 15;
const FXP_REALPATH: u8 = 16;
const FXP_STAT: u8 = 17;
const FXP_RENAME: u8 = 18;
const FXP_READLINK: u8 = 19;
const FXP_SYMLINK: u8 = 20;
const FXP_STATUS: u8 = 101;
const FXP_HANDLE: u8 = 102;
const FXP_DATA: u8 = 103;
const FXP_NAME: u8 = 104;
const FXP_ATTRS: u8 = 105;
const FXP_EXTENDED: u8 = 200;
const FXP_EXTENDED_REPLY: u8 = 201;

const FX_OK: u32 = 0;
const FX_EOF: u32 = 1;

// Version 3/4 open flags.
const FXF_WRITE: u32 = 0x02;
const FXF_APPEND: u32 = 0x04;
const FXF_CREAT: u32 = 0x08;
const FXF_TRUNC: u32 = 0x10;
// Version 5+ desired-access bits and dispositions.
const ACE_WRITE_DATA: u32 = 0x02;
const ACE_APPEND_DATA: u32 = 0x04;
const DISPOSITION_MASK: u32 = 0x07;
const OPEN_EXISTING: u32 = 2;

/// Lower-case name of an SFTP status code.
fn status_name(code: u32) -> String {
    const NAMES: [&str; 32] = [
        "ok",
        "end of file",
        "no such file",
        "permission denied",
        "failure",
        "bad message",
        "no connection",
        "connection lost",
        "operation unsupported",
        "invalid handle",
        "no such path",
        "file already exists",
        "write protect",
        "no media",
        "no space on filesystem",
        "quota exceeded",
        "unknown principal",
        "lock conflict",
        "directory not empty",
        "not a directory",
        "invalid filename",
        "link loop",
        "cannot delete",
        "invalid parameter",
        "file is a directory",
        "byte range lock conflict",
        "byte range lock refused",
        "delete pending",
        "file corrupt",
        "owner invalid",
        "group invalid",
        "no matching byte range lock",
    ];
    usize::try_from(code)
        .ok()
        .and_then(|i| NAMES.get(i))
        .map_or_else(|| format!("status {code}"), |s| (*s).to_owned())
}

fn packet_name(kind: u8) -> String {
    let name = match kind {
        FXP_INIT => "INIT",
        FXP_VERSION => "VERSION",
        FXP_OPEN => "OPEN",
        FXP_CLOSE => "CLOSE",
        FXP_READ => "READ",
        FXP_WRITE => "WRITE",
        FXP_LSTAT => "LSTAT",
        FXP_FSTAT => "FSTAT",
        FXP_SETSTAT => "SETSTAT",
        FXP_FSETSTAT => "FSETSTAT",
        FXP_OPENDIR => "OPENDIR",
        FXP_READDIR => "READDIR",
        FXP_REMOVE => "REMOVE",
        FXP_MKDIR => "MKDIR",
        FXP_RMDIR => "RMDIR",
        FXP_REALPATH => "REALPATH",
        FXP_STAT => "STAT",
        FXP_RENAME => "RENAME",
        FXP_READLINK => "READLINK",
        FXP_SYMLINK => "SYMLINK",
        FXP_STATUS => "STATUS",
        FXP_HANDLE => "HANDLE",
        FXP_DATA => "DATA",
        FXP_NAME => "NAME",
        FXP_ATTRS => "ATTRS",
        FXP_EXTENDED => "EXTENDED",
        FXP_EXTENDED_REPLY => "EXTENDED_REPLY",
        other => return format!("type {other}"),
    };
    name.to_owned()
}

/// A framing failure: the stream can no longer be split into packets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
enum FramingError {
    #[error("{side} stream: SFTP packet with length 0; decoding stopped")]
    ZeroLength { side: &'static str },
    #[error(
        "{side} stream: SFTP packet length {len} exceeds the {max}-byte limit; decoding stopped"
    )]
    TooLong {
        side: &'static str,
        len: u32,
        max: u32,
    },
}

/// Which direction a framer decodes; decides how much of each packet body is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Client => "client",
            Side::Server => "server",
        }
    }

    /// How many body bytes (after the type byte) must be kept to decode a packet of `kind`.
    /// The rest is counted and dropped, which is what keeps file payloads out of memory.
    fn keep(self, kind: u8) -> usize {
        match (self, kind) {
            (
                Side::Client,
                FXP_OPEN | FXP_OPENDIR | FXP_REMOVE | FXP_MKDIR | FXP_RMDIR | FXP_SETSTAT
                | FXP_RENAME | FXP_SYMLINK | FXP_STAT | FXP_LSTAT | FXP_REALPATH | FXP_READLINK
                | FXP_EXTENDED,
            ) => usize::MAX,
            (Side::Client, FXP_CLOSE | FXP_READ | FXP_WRITE | FXP_FSTAT | FXP_FSETSTAT)
            | (Side::Client, FXP_READDIR)
            | (Side::Server, FXP_HANDLE) => HANDLE_PREFIX,
            (Side::Server, FXP_STATUS | FXP_DATA | FXP_NAME) => 8,
            _ => 4,
        }
    }
}

/// Splits one direction's byte stream into packets, keeping only the prefix each packet type needs.
#[derive(Debug)]
struct Framer {
    side: Side,
    header: [u8; 5],
    header_len: usize,
    kind: u8,
    body_len: usize,
    body_left: usize,
    keep: usize,
    kept: Vec<u8>,
}

impl Framer {
    fn new(side: Side) -> Self {
        Framer {
            side,
            header: [0; 5],
            header_len: 0,
            kind: 0,
            body_len: 0,
            body_left: 0,
            keep: 0,
            kept: Vec::new(),
        }
    }

    /// True when the stream stopped part-way through a packet.
    fn mid_packet(&self) -> bool {
        self.header_len > 0
    }

    /// Feeds bytes; calls `on_packet(kind, kept_prefix_of_body, body_len)` for each complete packet.
    fn feed(
        &mut self,
        data: &[u8],
        mut on_packet: impl FnMut(u8, &[u8], usize),
    ) -> Result<(), FramingError> {
        let mut i = 0;
        while i < data.len() {
            if self.header_len < 5 {
                let n = (5 - self.header_len).min(data.len() - i);
                self.header[self.header_len..self.header_len + n].copy_from_slice(&data[i..i + n]);
                self.header_len += n;
                i += n;
                if self.header_len >= 4 {
                    let h = self.header;
                    let len = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                    let side = self.side.label();
                    if len == 0 {
                        return Err(FramingError::ZeroLength { side });
                    }
                    if len > MAX_SFTP_PACKET {
                        return Err(FramingError::TooLong {
                            side,
                            len,
                            max: MAX_SFTP_PACKET,
                        });
                    }
                    if self.header_len == 5 {
                        // len >= 1 and bounded, so this cannot underflow or truncate.
                        self.body_len = (len - 1) as usize;
                        self.body_left = self.body_len;
                        self.kind = h[4];
                        self.keep = self.side.keep(self.kind).min(self.body_len);
                        self.kept.clear();
                        if self.body_left == 0 {
                            self.header_len = 0;
                            on_packet(self.kind, &[], 0);
                        }
                    }
                }
                continue;
            }
            let n = self.body_left.min(data.len() - i);
            let have = self.kept.len();
            if have < self.keep {
                let k = (self.keep - have).min(n);
                self.kept.extend_from_slice(&data[i..i + k]);
            }
            i += n;
            self.body_left -= n;
            if self.body_left == 0 {
                self.header_len = 0;
                on_packet(self.kind, &self.kept, self.body_len);
            }
        }
        Ok(())
    }
}

/// A request awaiting its reply.
#[derive(Debug)]
enum Request {
    Open {
        path: String,
        creates: bool,
    },
    OpenDir {
        path: String,
    },
    Close {
        handle: Vec<u8>,
    },
    Read {
        handle: Vec<u8>,
    },
    Write {
        handle: Vec<u8>,
    },
    ReadDir {
        handle: Vec<u8>,
    },
    /// A single-shot operation reported on its STATUS reply.
    Simple {
        op: &'static str,
        path: String,
        target: Option<String>,
    },
    /// A metadata query, reported only when metadata reporting is on.
    Meta {
        op: &'static str,
        path: String,
    },
}

#[derive(Debug)]
struct Pending {
    seq: u64,
    request: Request,
}

#[derive(Debug)]
struct Handle {
    seq: u64,
    path: String,
    dir: bool,
    creates: bool,
    read: u64,
    written: u64,
    entries: u64,
    error: Option<String>,
    close_sent: bool,
}

impl Handle {
    /// The summary ops for this handle, per the crate-level emission scheme.
    fn summarise(self, status: &str, out: &mut Vec<FileOp>) {
        let status = self
            .error
            .as_deref()
            .map_or(status, |e| if status == "ok" { e } else { status });
        if self.dir {
            out.push(FileOp::new("list", self.path, self.entries, status));
            return;
        }
        if self.written > 0 {
            out.push(FileOp::new(
                "write",
                self.path.clone(),
                self.written,
                status,
            ));
        }
        if self.read > 0 {
            out.push(FileOp::new("read", self.path, self.read, status));
        } else if self.written == 0 {
            let op = if self.creates { "write" } else { "open" };
            out.push(FileOp::new(op, self.path, 0, status));
        }
    }
}

/// Audits one SFTP subsystem channel. Feed it both directions; see the crate docs for what is
/// emitted when.
#[derive(Debug)]
pub struct SftpAudit {
    client: Framer,
    server: Framer,
    state: State,
}

#[derive(Debug)]
struct State {
    pending: HashMap<u32, Pending>,
    handles: HashMap<Vec<u8>, Handle>,
    seq: u64,
    client_version: Option<u32>,
    server_version: Option<u32>,
    metadata: bool,
    stopped: bool,
    finished: bool,
}

impl Default for SftpAudit {
    fn default() -> Self {
        Self::new()
    }
}

impl SftpAudit {
    /// A decoder for a fresh SFTP channel (expects the INIT/VERSION exchange, copes without it).
    pub fn new() -> Self {
        SftpAudit {
            client: Framer::new(Side::Client),
            server: Framer::new(Side::Server),
            state: State {
                pending: HashMap::new(),
                handles: HashMap::new(),
                seq: 0,
                client_version: None,
                server_version: None,
                metadata: false,
                stopped: false,
                finished: false,
            },
        }
    }

    /// Also report STAT/LSTAT (as `stat`), REALPATH and READLINK when their replies arrive.
    /// Off by default: clients issue them constantly and they change nothing.
    pub fn with_metadata(mut self, on: bool) -> Self {
        self.state.metadata = on;
        self
    }

    /// Bytes the user's client sent toward the server (requests), in any chunking.
    pub fn client_bytes(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut out = Vec::new();
        if self.state.stopped || self.state.finished {
            return out;
        }
        let state = &mut self.state;
        let res = self.client.feed(data, |kind, body, body_len| {
            state.on_request(kind, body, body_len, &mut out);
        });
        if let Err(e) = res {
            self.state.stopped = true;
            out.push(FileOp::protocol_error(e.to_string()));
        }
        out
    }

    /// Bytes the server sent back (responses: status, handle, data, name, attrs), in any chunking.
    pub fn server_bytes(&mut self, data: &[u8]) -> Vec<FileOp> {
        let mut out = Vec::new();
        if self.state.stopped || self.state.finished {
            return out;
        }
        let state = &mut self.state;
        let res = self.server.feed(data, |kind, body, body_len| {
            state.on_reply(kind, body, body_len, &mut out);
        });
        if let Err(e) = res {
            self.state.stopped = true;
            out.push(FileOp::protocol_error(e.to_string()));
        }
        out
    }

    /// The session is over: reports files still open (status `"pending"`, with the bytes counted
    /// so far), closes and other requests that got no reply (`"no reply"`), and a stream that
    /// ended inside a packet. Later input is ignored.
    pub fn finish(&mut self) -> Vec<FileOp> {
        let mut out = Vec::new();
        if self.state.finished {
            return out;
        }
        self.state.finished = true;
        if !self.state.stopped {
            for framer in [&self.client, &self.server] {
                if framer.mid_packet() {
                    out.push(FileOp::protocol_error(format!(
                        "{} stream ended inside an SFTP packet",
                        framer.side.label()
                    )));
                }
            }
        }
        let mut pending: Vec<Pending> = self.state.pending.drain().map(|(_, p)| p).collect();
        pending.sort_by_key(|p| p.seq);
        for p in pending {
            match p.request {
                Request::Open { path, .. } => {
                    out.push(FileOp::new("open", path, 0, "no reply"));
                }
                Request::OpenDir { path } => out.push(FileOp::new("list", path, 0, "no reply")),
                Request::Simple { op, path, target } => {
                    let mut op = FileOp::new(op, path, 0, "no reply");
                    op.target_path = target;
                    out.push(op);
                }
                Request::Meta { op, path } => {
                    if self.state.metadata {
                        out.push(FileOp::new(op, path, 0, "no reply"));
                    }
                }
                Request::Close { .. }
                | Request::Read { .. }
                | Request::Write { .. }
                | Request::ReadDir { .. } => {}
            }
        }
        let mut handles: Vec<Handle> = self.state.handles.drain().map(|(_, h)| h).collect();
        handles.sort_by_key(|h| h.seq);
        for h in handles {
            let status = if h.close_sent { "no reply" } else { "pending" };
            // An unfinished handle reports its own status, not an earlier I/O error.
            let h = Handle { error: None, ..h };
            h.summarise(status, &mut out);
        }
        out
    }
}

impl State {
    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Negotiated protocol version (3 until both sides have spoken).
    fn version(&self) -> u32 {
        match (self.client_version, self.server_version) {
            (Some(c), Some(s)) => c.min(s),
            (None, Some(v)) | (Some(v), None) => v.min(3),
            (None, None) => 3,
        }
    }

    fn track(&mut self, id: u32, request: Request, out: &mut Vec<FileOp>) {
        if self.pending.len() >= MAX_PENDING_REQUESTS && !self.pending.contains_key(&id) {
            // Past the cap: report what can be reported now, without its outcome.
            match request {
                Request::Open { path, .. } => out.push(FileOp::new("open", path, 0, "untracked")),
                Request::OpenDir { path } => out.push(FileOp::new("list", path, 0, "untracked")),
                Request::Simple { op, path, target } => {
                    let mut op = FileOp::new(op, path, 0, "untracked");
                    op.target_path = target;
                    out.push(op);
                }
                _ => {}
            }
            return;
        }
        let seq = self.next_seq();
        self.pending.insert(id, Pending { seq, request });
    }

    fn handle_path(&self, handle: &[u8]) -> String {
        self.handles
            .get(handle)
            .map_or_else(String::new, |h| h.path.clone())
    }

    fn on_request(&mut self, kind: u8, body: &[u8], body_len: usize, out: &mut Vec<FileOp>) {
        if self.decode_request(kind, body, body_len, out).is_none() {
            out.push(FileOp::protocol_error(format!(
                "malformed SFTP {} request skipped",
                packet_name(kind)
            )));
        }
    }

    fn decode_request(
        &mut self,
        kind: u8,
        body: &[u8],
        body_len: usize,
        out: &mut Vec<FileOp>,
    ) -> Option<()> {
        let mut r = Reader::new(body);
        if kind == FXP_INIT {
            self.client_version = Some(r.u32()?);
            return Some(());
        }
        let id = match r.u32() {
            Some(id) => id,
            // Unknown packet types need not carry an id; pass them through.
            None if !is_known_request(kind) => return Some(()),
            None => return None,
        };
        let request = match kind {
            FXP_OPEN => {
                let path = path_string(r.string()?);
                // `creates`: opened for writing in a way that creates or empties the file.
                let creates = if self.version() >= 5 {
                    let access = r.u32()?;
                    let flags = r.u32()?;
                    access & (ACE_WRITE_DATA | ACE_APPEND_DATA) != 0
                        && flags & DISPOSITION_MASK != OPEN_EXISTING
                } else {
                    let flags = r.u32()?;
                    flags & (FXF_WRITE | FXF_APPEND) != 0 && flags & (FXF_CREAT | FXF_TRUNC) != 0
                };
                Request::Open { path, creates }
            }
            FXP_OPENDIR => Request::OpenDir {
                path: path_string(r.string()?),
            },
            FXP_CLOSE => {
                let handle = handle_bytes(&mut r)?;
                if let Some(h) = self.handles.get_mut(handle) {
                    h.close_sent = true;
                }
                Request::Close {
                    handle: handle.to_vec(),
                }
            }
            FXP_READ => Request::Read {
                handle: handle_bytes(&mut r)?.to_vec(),
            },
            FXP_WRITE => {
                let handle = handle_bytes(&mut r)?;
                let _offset = r.u64()?;
                let len = r.u32()?;
                // The payload follows the kept prefix: what is left of the body must hold it.
                let header = body.len() - r.remaining();
                let available = body_len.checked_sub(header)?;
                if usize::try_from(len).ok()? > available {
                    return None;
                }
                if let Some(h) = self.handles.get_mut(handle) {
                    h.written += u64::from(len);
                }
                Request::Write {
                    handle: handle.to_vec(),
                }
            }
            FXP_READDIR => Request::ReadDir {
                handle: handle_bytes(&mut r)?.to_vec(),
            },
            FXP_FSETSTAT => {
                let handle = handle_bytes(&mut r)?;
                Request::Simple {
                    op: "setstat",
                    path: self.handle_path(handle),
                    target: None,
                }
            }
            FXP_REMOVE | FXP_MKDIR | FXP_RMDIR | FXP_SETSTAT => {
                let op = match kind {
                    FXP_REMOVE => "remove",
                    FXP_MKDIR => "mkdir",
                    FXP_RMDIR => "rmdir",
                    _ => "setstat",
                };
                Request::Simple {
                    op,
                    path: path_string(r.string()?),
                    target: None,
                }
            }
            FXP_RENAME => {
                let old = path_string(r.string()?);
                let new = path_string(r.string()?);
                Request::Simple {
                    op: "rename",
                    path: old,
                    target: Some(new),
                }
            }
            FXP_SYMLINK => {
                // OpenSSH (the de-facto reference) sends the link target first and the new link
                // second, the reverse of the draft's wording; report the link as `path`.
                let target = path_string(r.string()?);
                let link = path_string(r.string()?);
                Request::Simple {
                    op: "symlink",
                    path: link,
                    target: Some(target),
                }
            }
            FXP_STAT | FXP_LSTAT => Request::Meta {
                op: "stat",
                path: path_string(r.string()?),
            },
            FXP_REALPATH => Request::Meta {
                op: "realpath",
                path: path_string(r.string()?),
            },
            FXP_READLINK => Request::Meta {
                op: "readlink",
                path: path_string(r.string()?),
            },
            FXP_FSTAT => {
                handle_bytes(&mut r)?;
                return Some(());
            }
            FXP_EXTENDED => {
                let name = r.string()?;
                match name {
                    b"posix-rename@openssh.com" | b"hardlink@openssh.com" => {
                        let old = path_string(r.string()?);
                        let new = path_string(r.string()?);
                        let op = if name.starts_with(b"posix") {
                            "rename"
                        } else {
                            "link"
                        };
                        Request::Simple {
                            op,
                            path: old,
                            target: Some(new),
                        }
                    }
                    b"lsetstat@openssh.com" => Request::Simple {
                        op: "setstat",
                        path: path_string(r.string()?),
                        target: None,
                    },
                    // Other extensions (statvfs, fsync, limits, …) change nothing worth
                    // auditing; their replies are ignored as unknown ids.
                    _ => return Some(()),
                }
            }
            _ => return Some(()),
        };
        self.track(id, request, out);
        Some(())
    }

    fn on_reply(&mut self, kind: u8, body: &[u8], _body_len: usize, out: &mut Vec<FileOp>) {
        if self.decode_reply(kind, body, out).is_none() {
            out.push(FileOp::protocol_error(format!(
                "malformed SFTP {} reply skipped",
                packet_name(kind)
            )));
        }
    }

    fn decode_reply(&mut self, kind: u8, body: &[u8], out: &mut Vec<FileOp>) -> Option<()> {
        let mut r = Reader::new(body);
        if kind == FXP_VERSION {
            self.server_version = Some(r.u32()?);
            return Some(());
        }
        if !matches!(
            kind,
            FXP_STATUS | FXP_HANDLE | FXP_DATA | FXP_NAME | FXP_ATTRS | FXP_EXTENDED_REPLY
        ) {
            return Some(());
        }
        let id = r.u32()?;
        // Parse the reply fully before retiring the request, so a malformed reply leaves the
        // request pending rather than half-applied.
        let reply = match kind {
            FXP_STATUS => Reply::Status(r.u32()?),
            FXP_HANDLE => Reply::Handle(handle_bytes(&mut r)?),
            FXP_DATA => Reply::Data(r.u32()?),
            FXP_NAME => Reply::Name(r.u32()?),
            _ => Reply::Other,
        };
        let Some(pending) = self.pending.remove(&id) else {
            return Some(());
        };
        match (pending.request, reply) {
            (Request::Open { path, creates }, Reply::Handle(handle)) => {
                self.open_handle(handle, path, false, creates, out);
            }
            (Request::OpenDir { path }, Reply::Handle(handle)) => {
                self.open_handle(handle, path, true, false, out);
            }
            (Request::Open { path, .. }, Reply::Status(code)) => {
                out.push(FileOp::new("open", path, 0, status_name(code)));
            }
            (Request::OpenDir { path }, Reply::Status(code)) => {
                out.push(FileOp::new("list", path, 0, status_name(code)));
            }
            (Request::Close { handle }, Reply::Status(code)) => {
                if let Some(h) = self.handles.remove(handle.as_slice()) {
                    h.summarise(&status_name(code), out);
                }
            }
            (Request::Read { handle }, Reply::Data(len)) => {
                if let Some(h) = self.handles.get_mut(handle.as_slice()) {
                    h.read += u64::from(len);
                }
            }
            (
                Request::Read { handle } | Request::Write { handle } | Request::ReadDir { handle },
                Reply::Status(code),
            ) => {
                if code != FX_OK
                    && code != FX_EOF
                    && let Some(h) = self.handles.get_mut(handle.as_slice())
                    && h.error.is_none()
                {
                    h.error = Some(status_name(code));
                }
            }
            (Request::ReadDir { handle }, Reply::Name(count)) => {
                if let Some(h) = self.handles.get_mut(handle.as_slice()) {
                    h.entries += u64::from(count);
                }
            }
            (Request::Simple { op, path, target }, Reply::Status(code)) => {
                let mut op = FileOp::new(op, path, 0, status_name(code));
                op.target_path = target;
                out.push(op);
            }
            (Request::Meta { op, path }, reply) if self.metadata => {
                let status = match reply {
                    Reply::Status(code) => status_name(code),
                    _ => "ok".to_owned(),
                };
                out.push(FileOp::new(op, path, 0, status));
            }
            // A reply of a type the request does not expect: nothing sensible to report.
            _ => {}
        }
        Some(())
    }

    fn open_handle(
        &mut self,
        handle: &[u8],
        path: String,
        dir: bool,
        creates: bool,
        out: &mut Vec<FileOp>,
    ) {
        let seq = self.next_seq();
        let entry = Handle {
            seq,
            path,
            dir,
            creates,
            read: 0,
            written: 0,
            entries: 0,
            error: None,
            close_sent: false,
        };
        if self.handles.len() >= MAX_OPEN_HANDLES && !self.handles.contains_key(handle) {
            let op = if dir { "list" } else { "open" };
            out.push(FileOp::new(op, entry.path, 0, "untracked"));
            return;
        }
        if let Some(old) = self.handles.insert(handle.to_vec(), entry) {
            // The server reused a handle we still thought open.
            old.summarise("pending", out);
        }
    }
}

enum Reply<'a> {
    Status(u32),
    Handle(&'a [u8]),
    Data(u32),
    Name(u32),
    Other,
}

fn handle_bytes<'a>(r: &mut Reader<'a>) -> Option<&'a [u8]> {
    let h = r.string()?;
    (h.len() <= MAX_HANDLE_LEN).then_some(h)
}

fn is_known_request(kind: u8) -> bool {
    (FXP_OPEN..=FXP_SYMLINK).contains(&kind) || kind == FXP_EXTENDED
}

#[cfg(test)]
mod tests;
