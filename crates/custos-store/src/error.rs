//! The one error type of the store, grouped by cause so that callers can tell "you asked for
//! something that is not there / already there / malformed" from "the vault key is wrong" and
//! from "the disk or database failed". Messages name the object, file or operation involved
//! and never carry secret material.

use std::path::PathBuf;

/// A boxed underlying error, so that no database driver type appears in the public API.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Everything that can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The named object does not exist.
    #[error("{what} '{name}' does not exist")]
    NotFound {
        /// The kind of object: `user`, `target`, `grant`, `session`, ...
        what: &'static str,
        /// The name (or id, or prefix) that was looked up.
        name: String,
    },
    /// An object with this name already exists.
    #[error("{what} '{name}' already exists")]
    Exists {
        /// The kind of object.
        what: &'static str,
        /// The name that is already taken.
        name: String,
    },
    /// A prefix matched more than one object.
    #[error("{what} prefix '{prefix}' matches more than one {what}; give more characters")]
    Ambiguous {
        /// The kind of object.
        what: &'static str,
        /// The prefix that was looked up.
        prefix: String,
    },
    /// A target already has a pinned host key and a different one was offered.
    #[error(
        "target '{target}' has a different host key pinned; the offered key was refused \
         (if the target was really re-keyed, remove and re-add the target or pin the new key)"
    )]
    HostKeyMismatch {
        /// The target whose key did not match.
        target: String,
    },
    /// The caller passed a value the store cannot accept.
    #[error("{0}")]
    Invalid(String),
    /// The vault key could not be read or created, or a sealed value could not be opened.
    #[error("vault: {0}")]
    Vault(String),
    /// A file operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. `reading vault key file`.
        op: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The operating system error.
        #[source]
        source: std::io::Error,
    },
    /// The database failed or refused an operation.
    #[error("database {path}: {op}: {source}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What was being done, e.g. `adding user 'alice'`.
        op: String,
        /// The driver's error.
        #[source]
        source: BoxError,
    },
    /// The database holds a value this build cannot read back (hand edits, a newer schema).
    #[error("database {path}: {detail}")]
    Corrupt {
        /// The database file.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

impl StoreError {
    pub(crate) fn not_found(what: &'static str, name: impl ToString) -> StoreError {
        StoreError::NotFound {
            what,
            name: name.to_string(),
        }
    }

    pub(crate) fn exists(what: &'static str, name: impl ToString) -> StoreError {
        StoreError::Exists {
            what,
            name: name.to_string(),
        }
    }
}
