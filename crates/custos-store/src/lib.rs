//! Custos metadata store: the domain verbs behind users, their SSH keys and passwords, targets
//! with vaulted credentials, grants, and session metadata.
//!
//! The backend today is SQLite (one file, WAL mode, so the command line can write while the
//! server runs). Everything SQLite-specific lives in one internal module; the SQL elsewhere is
//! written to be portable, so that a PostgreSQL backend can implement the same verbs. No SQL
//! or driver type appears in the public API: callers see custos-core records, the small
//! request types here ([`NewUser`], [`SessionFilter`]) and [`StoreError`].
//!
//! Target credentials are sealed with the [`Vault`] key (AES-256-GCM, target name as
//! associated data) before they reach the database. User passwords are stored as argon2id
//! hashes made by [`password::hash`].
//!
//! Limits: timestamps are kept to the microsecond; only one gateway server process should use
//! a database at a time (see [`Store::mark_live_sessions_interrupted`]).
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod audit;
mod error;
mod keys;
pub mod password;
mod sqlite;
mod store;
mod vault;

pub use audit::{
    AuditAppend, AuditFilter, AuditHead, AuditRow, AuditStore, CheckpointRow, SinkCursor,
};
pub use error::{BoxError, StoreError};
pub use store::{AlertFilter, CommandFilter, NewUser, SessionFilter, Store, severity_rank};
pub use vault::Vault;
