//! Decoders that turn the raw bytes of a proxied SSH channel running a file-transfer protocol (the SFTP subsystem, or a legacy `scp -t` / `scp -f` exec) into audited file operations.
//!
//! The crate is pure: no IO, no async, no clock. The channel pump hands each decoder the bytes it
//! forwarded in each direction, in whatever chunks it happened to receive them, and gets back the
//! [`FileOp`]s that became final. When the channel closes, `finish` reports what was still in flight.
//!
//! # SFTP ([`SftpAudit`])
//!
//! Requests from the client are matched with the server's replies by request id. Operations are
//! emitted when their outcome is known (the reply), never at request time, so `status` always says
//! what the server did:
//!
//! | request | emitted when | `op` | `path` / `target_path` | `bytes` |
//! |---|---|---|---|---|
//! | OPEN → HANDLE … CLOSE | the CLOSE reply arrives | see below | opened path | see below |
//! | OPEN failed | the error STATUS arrives | `open` | opened path | 0 |
//! | OPENDIR → HANDLE … CLOSE | the CLOSE reply arrives | `list` | directory | names returned by READDIR |
//! | REMOVE, MKDIR, RMDIR, SETSTAT | the STATUS reply | same name | path | 0 |
//! | FSETSTAT | the STATUS reply | `setstat` | path the handle was opened with | 0 |
//! | RENAME, `posix-rename@openssh.com` | the STATUS reply | `rename` | old path / new path | 0 |
//! | SYMLINK | the STATUS reply | `symlink` | the link created / what it points to | 0 |
//! | `hardlink@openssh.com` | the STATUS reply | `link` | existing path / new link | 0 |
//! | `lsetstat@openssh.com` | the STATUS reply | `setstat` | path | 0 |
//!
//! One file handle yields one summary when it is closed:
//! - data was written through it: `op = "write"`, `bytes` = total WRITE payload length;
//! - otherwise data was read: `op = "read"`, `bytes` = total length of the DATA replies;
//! - otherwise, if it was opened for writing with `CREAT` or `TRUNC` (or a v5+ creating
//!   disposition):
//!   `op = "write"` with 0 bytes, because the file was created or emptied;
//! - otherwise `op = "open"` with 0 bytes.
//!
//! If both directions moved data (a read-write handle) two summaries are emitted, `write` then
//! `read`. The summary's `status` is the CLOSE reply's error if the close failed, else the first
//! error any READ/WRITE on that handle got (end-of-file is not an error), else `"ok"`.
//!
//! STAT, LSTAT, FSTAT, REALPATH and READLINK are read-only metadata queries that clients issue by
//! the dozen; they are not emitted unless [`SftpAudit::with_metadata`] turns them on (then as
//! `stat`, `realpath` and `readlink`). READDIR is folded into the `list` summary.
//!
//! At [`SftpAudit::finish`], a handle that was never closed is reported with status `"pending"`
//! (with the bytes counted so far), a handle whose CLOSE got no reply and any other unanswered
//! request with status `"no reply"`.
//!
//! Status names are the lower-case SFTP status names: `"no such file"`, `"permission denied"`,
//! `"failure"`, `"operation unsupported"`, and for protocol versions 4 to 6 the later codes
//! (`"file already exists"`, `"directory not empty"`, …). Unknown codes read `"status <n>"`.
//!
//! Paths are reported exactly as the client sent them (OpenSSH clients send absolute paths after
//! a REALPATH of `.`); nothing is resolved against the server's filesystem.
//!
//! The SFTP parser is self-contained rather than built on `russh-sftp`'s packet types, which
//! decode from a whole packet held in memory and copy WRITE/DATA payloads into a `Vec`, and
//! reject packet types they do not know; here only the few header bytes each packet type needs
//! are kept, payloads are skipped by counting, and unknown packets pass through.
//!
//! # scp ([`ScpAudit`])
//!
//! The legacy rcp-style protocol of `scp -O`: the sending side emits `T`, `C`, `D` and `E` control
//! lines and file contents; the receiving side acknowledges each step with `\0`, or `\x01`/`\x02`
//! followed by an error line. One `FileOp` is emitted per file once its final acknowledgement
//! arrives (`write` for uploads, `read` for downloads, `bytes` = declared size), one `mkdir`
//! (uploads) or `opendir` (downloads) per `D` line once acknowledged, and error lines sent in
//! place of a file (for example a missing source) as a `read`/`write` with the error text as status.
//!
//! # Limits
//!
//! Memory is bounded whatever the peer sends. File contents are never buffered: WRITE and DATA
//! payloads and scp file bodies are skipped by counting. SFTP packets longer than
//! [`MAX_SFTP_PACKET`] or with a zero length are a framing error; an scp control line longer than
//! [`MAX_SCP_LINE`] is one too. A framing error produces one `FileOp` with `op = "protocol-error"`
//! and the reason in `status`, after which that decoder ignores the rest of the session, both
//! directions (its `finish` still reports what was in flight, as unanswered). A packet that is framed correctly but whose
//! contents do not parse is skipped with a `protocol-error` op and decoding continues. Tracked
//! requests are capped at [`MAX_PENDING_REQUESTS`] and open handles at [`MAX_OPEN_HANDLES`]; past
//! the caps, auditable operations are emitted at once with status `"untracked"`. Paths are cut to
//! [`MAX_PATH_LEN`] bytes and decoded lossily as UTF-8.

#![warn(missing_docs)]

mod scp;
mod sftp;
mod wire;

pub use scp::{MAX_SCP_LINE, ScpAudit};
pub use sftp::{MAX_OPEN_HANDLES, MAX_PENDING_REQUESTS, MAX_SFTP_PACKET, SftpAudit};

/// Longest path kept, in bytes; longer paths are cut at this length before UTF-8 decoding.
pub const MAX_PATH_LEN: usize = 4096;

/// One audited file operation, final once returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileOp {
    /// What happened: `open`, `read`, `write`, `remove`, `rename`, `mkdir`, `rmdir`, `setstat`,
    /// `symlink`, `link`, `list`, `opendir`, `stat`, `realpath`, `readlink`, or `protocol-error`.
    pub op: &'static str,
    /// The path operated on (empty for protocol errors).
    pub path: String,
    /// The second path of a two-path operation (rename destination, symlink target).
    pub target_path: Option<String>,
    /// Bytes of file content moved (for `list`, the number of directory entries returned).
    pub bytes: u64,
    /// `"ok"`, an SFTP status name or scp error text, `"pending"`/`"no reply"` when the session
    /// ended first, `"untracked"` past the tracking caps, or the reason of a protocol error.
    pub status: String,
}

impl FileOp {
    fn new(op: &'static str, path: String, bytes: u64, status: impl Into<String>) -> Self {
        FileOp {
            op,
            path,
            target_path: None,
            bytes,
            status: status.into(),
        }
    }

    fn protocol_error(reason: impl Into<String>) -> Self {
        FileOp::new("protocol-error", String::new(), 0, reason)
    }
}

/// Turns raw path bytes into a bounded, lossily decoded string.
fn path_string(raw: &[u8]) -> String {
    let cut = &raw[..raw.len().min(MAX_PATH_LEN)];
    String::from_utf8_lossy(cut).into_owned()
}
