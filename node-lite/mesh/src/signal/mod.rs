//! The signaling client: talks to one relay at a time, keeps a list of relays to fail over to,
//! reconnects with exponential backoff (with jitter), and rejoins its rooms after every reconnect.
//!
//! - [`core`]: the sans-IO state machine (handshake, rooms, frames) shared by both platforms.
//! - [`driver`] (feature `signal`): the reconnect loop, written once over `futures` traits;
//!   natively it runs on tokio + tokio-tungstenite, in the browser on gloo-net's WebSocket.
//!
//! Every queue is bounded: commands, events, and (inside the relay) the per-session send queue.

pub mod core;
pub use core::{ClientCore, Command, Event, Output, SignalError};

#[cfg(feature = "signal")]
pub mod driver;
#[cfg(feature = "signal")]
pub use driver::{ClientConfig, SignalHandle, spawn};

#[cfg(all(feature = "signal", not(target_family = "wasm")))]
mod native;
#[cfg(all(feature = "signal", not(target_family = "wasm")))]
use native as platform;

#[cfg(all(feature = "signal", target_family = "wasm", target_os = "unknown"))]
mod wasm;
#[cfg(all(feature = "signal", target_family = "wasm", target_os = "unknown"))]
use wasm as platform;
