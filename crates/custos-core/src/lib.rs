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
    AlertRecord, CommandRecord, EndReason, Grant, HostKeyPolicy, SessionRecord, SessionState,
    TargetKind, TargetRecord, UserRecord,
};
pub use name::{Name, NameError};
pub use secret::Secret;
