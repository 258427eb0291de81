//! The tamper-evident audit trail: the typed event schema, its canonical ECS JSON document,
//! the hash chain and signed checkpoints, the writer that appends events without making
//! callers wait, the verifier, and the message formats SIEM sinks send.
//!
//! - [`AuditEvent`] / [`EventKind`]: one typed, versioned schema ([`SCHEMA_VERSION`]) for
//!   every security-relevant event; [`AuditEvent::to_document`] gives the ECS document and
//!   [`Document::canonical`] the bytes that are hashed (docs/audit-events.md).
//! - [`AuditLog`]: `emit` queues, one writer task per process chains and appends in batches
//!   through [`custos_store::AuditStore`], signs [`Checkpoint`]s with the [`AuditKey`];
//!   `flush` waits until what was emitted is durable.
//! - [`verify_store`] / [`ChainVerifier`]: walk the chain and name the first altered,
//!   deleted, inserted or reordered event, or a checkpoint that does not verify.
//! - [`siem`]: RFC 5424 syslog, CEF, LEEF 2.0 and JSON messages.
//!
//! Checkpoints are OpenSSH SSHSIG signatures, so `ssh-keygen -Y verify` checks them with
//! nothing but the public key.
//!
//! Limits: the chain proves the stored events were not changed after they were written and
//! the checkpoints that they were not rewritten later; it cannot prove that whoever could
//! write the database did not append events of their own, and events after the last
//! checkpoint can be cut off unnoticed unless checkpoints are also kept elsewhere.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod chain;
mod document;
mod error;
mod event;
mod keys;
mod log;
pub mod siem;
mod verify;

pub use chain::{
    CHECKPOINT_NAMESPACE, Checkpoint, GENESIS_HASH, chain_row, checkpoint_files, link_hash,
};
pub use document::{Document, DocumentError, format_time, parse_time};
pub use error::AuditError;
pub use event::{
    AdminObject, AdminOperation, AuditEvent, AuthMethod, ECS_VERSION, EventKind, ForwardDirection,
    HoldState, Initiator, KeyOperation, Match, Outcome, Position, RecordingAccess, RuleRef,
    SCHEMA_VERSION, Severity, Source, Target, schema_examples,
};
pub use keys::{AUDIT_KEY_FILE, AUDIT_PUB_FILE, AuditKey, load_public_key};
pub use log::{AuditConfig, AuditLog};
pub use verify::{ChainVerifier, Tamper, VerifyReport, verify_rows, verify_store};

/// Re-exported so callers can name the verifying key type.
pub use ssh_key::PublicKey;
