//! Errors of the recording crate.

use std::path::PathBuf;

/// Anything that can go wrong while writing, reading or repairing a recording.
#[derive(Debug, thiserror::Error)]
pub enum RecordingError {
    /// A file could not be created, read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// A key file is missing or malformed.
    #[error("{}: {reason}", path.display())]
    Key {
        /// The key file concerned.
        path: PathBuf,
        /// What was wrong.
        reason: String,
    },
    /// The file does not start with the recording magic.
    #[error("not a Custos recording: {0}")]
    NotARecording(String),
    /// The file uses a format major version this reader does not know.
    #[error("unsupported recording format version {major}.{minor}")]
    UnsupportedVersion {
        /// Major version found.
        major: u16,
        /// Minor version found.
        minor: u16,
    },
    /// The file structure is damaged at `offset`.
    #[error("corrupt recording at byte {offset}: {reason}")]
    Corrupt {
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },
    /// The key-encryption key does not match the one the recording was written with.
    #[error("the recording was encrypted with another key (key id {expected}, have {actual})")]
    WrongKey {
        /// Key id stored in the recording.
        expected: String,
        /// Key id of the key supplied.
        actual: String,
    },
    /// A cryptographic operation failed.
    #[error("cryptographic failure: {0}")]
    Crypto(String),
    /// The recording is already sealed (for `recover`).
    #[error("the recording is already sealed")]
    AlreadySealed,
    /// The background writer failed earlier; the recording is incomplete.
    #[error("recording failed: {0}")]
    Failed(String),
}

impl RecordingError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        RecordingError::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn corrupt(offset: u64, reason: impl Into<String>) -> Self {
        RecordingError::Corrupt {
            offset,
            reason: reason.into(),
        }
    }
}
