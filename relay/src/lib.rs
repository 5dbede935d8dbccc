//! `shoal-relay` as a library: the binary is a thin `main.rs`; tests and later work (the
//! transparency log, the witness) compose with [`server::router`].
//!
//! - [`config`]: flags / env (`SHOAL_RELAY_*`) / TOML, and every [`config::Limits`].
//! - [`limits`]: token buckets, violation window.
//! - [`rooms`]: room membership and non-blocking forwarding into bounded queues.
//! - [`session`]: one WebSocket session (handshake, frame loop).
//! - [`metrics`]: Prometheus metrics.
//! - [`web`]: static app hosting and security headers.
//! - [`server`]: state, router, admission, lifecycle.
//! - [`log`]: the receipt transparency log (redb), its HTTP/tiles API and the witness.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub mod config;
pub mod limits;
pub mod log;
pub mod metrics;
pub mod rooms;
pub mod server;
pub mod session;
pub mod state;
pub mod web;

pub use config::{Args, Config, Limits};
pub use server::{AppState, Relay, router};
