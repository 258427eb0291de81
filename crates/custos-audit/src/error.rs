//! The error type of the audit crate, grouped by cause: the store failed, a key file is
//! wrong, signing failed, the log was closed, or the chain was found tampered with.

use crate::verify::Tamper;
use std::path::{Path, PathBuf};

/// Everything that can go wrong in the audit crate.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// The metadata store failed.
    #[error(transparent)]
    Store(#[from] custos_store::StoreError),
    /// Events could not be written; they are kept in memory and retried.
    #[error("audit events could not be written (kept and retried): {0}")]
    Write(String),
    /// A key file is missing or malformed.
    #[error("audit key {path}: {reason}")]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// Signing a checkpoint failed.
    #[error("signing an audit checkpoint: {0}")]
    Sign(String),
    /// A value was malformed.
    #[error("{0}")]
    Invalid(String),
    /// The audit log was closed; nothing more can be emitted.
    #[error("the audit log is closed")]
    Closed,
    /// Verification found the chain or a checkpoint tampered with.
    #[error("audit log verification failed: {0}")]
    Tampered(Tamper),
}

impl AuditError {
    pub(crate) fn key(path: &Path, reason: String) -> AuditError {
        AuditError::Key {
            path: path.to_path_buf(),
            reason,
        }
    }

    pub(crate) fn io(op: &'static str, path: &Path, source: std::io::Error) -> AuditError {
        AuditError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}
