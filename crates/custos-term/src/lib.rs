//! Terminal model on a headless emulator: screen state, keyframes and no-echo (password) detection.
//!
//! [`Terminal`] wraps the `avt` emulator and accepts raw bytes as they come off the wire.
//! [`EchoTracker`] decides, per chunk of user input, whether the remote side echoed it, so a
//! recorder can drop what was typed at a password prompt before anything reaches disk.
//! [`CommandTracker`] reconstructs the command lines a user submits in an interactive shell.
//! [`LineModel`] runs both for one interactive channel and spares them bulk output.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod command;
mod echo;
mod line;
mod terminal;

pub use command::{CommandEvent, CommandTracker, OUTPUT_TAIL_CAP};
pub use echo::{
    ChunkId, DEFAULT_TIMEOUT_US as DEFAULT_ECHO_TIMEOUT_US, Decision, EchoTracker, InputPiece,
    PieceKind, Verdict, looks_like_secret_prompt,
};
pub use line::{DEFER_MIN, DEFERRED_TAIL, LineModel};
pub use terminal::{Terminal, Utf8Carry};
