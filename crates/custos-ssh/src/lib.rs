//! The SSH front door and the proxy: authenticates users (russh server), decides which target
//! they reach, connects with the vaulted credential (russh client, or a local shell), and pumps
//! every channel between the two while handing each byte to the session recorder.
//!
//! russh types stop at this crate's boundary: callers see [`Gateway`], [`GatewayConfig`] and
//! plain domain types.

mod audit;
mod channel;
mod commands;
mod enforce;
mod gateway;
mod limiter;
pub mod local;
mod session;
pub mod target;

pub use gateway::{Gateway, GatewayConfig, RulesHandle};
pub use limiter::AuthLimits;
pub use session::{HoldAnswer, LiveRegistry, LiveSessionInfo};
