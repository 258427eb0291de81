//! Custos domain vocabulary: identifiers, names, users, targets, grants, sessions and the
//! secret wrapper. Pure data and validation — this crate does no IO, knows no storage, no
//! protocol and no crypto, so every other crate can share it.
#![forbid(unsafe_code)]

mod id;
mod model;
mod name;
mod secret;

pub use id::{Id, IdError};
pub use model::{
    AlertRecord, CommandRecord, EndReason, Grant, HoldDecision, HostKeyPolicy, SessionLimits,
    SessionRecord, SessionState, TargetKind, TargetRecord, UserRecord, format_secs, parse_secs,
};
pub use name::{Name, NameError};
pub use secret::Secret;
