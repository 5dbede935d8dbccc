//! Circles over WebRTC: members find each other in the relay room derived from the circle key,
//! open one data channel per pair, seal everything on it end to end, and share embedding jobs.
//!
//! - [`signal_msg`]: the offer/answer/bye messages sealed inside signaling payloads.
//! - [`session`]: the sans-IO per-peer state machine (who offers, replay-safe SDP exchange,
//!   seal handshake over the channel, bounded back-pressured outboxes).
//! - [`node`]: a circle member = session + job engine (requester `Job` over peers and local
//!   model workers, and `Worker`).
//! - [`app`]: the application's commands and events, shared by both drivers.
//! - `native` (feature `rtc-native`): the webrtc-rs + tokio driver used by `shoal-node`.
//! - `web` (feature `rtc-web`, wasm): the browser's `RTCPeerConnection` driver used by the app.
//!
//! Everything but the drivers is clock-free and socket-free: see `tests` for the in-memory
//! transport that runs several members, kills one mid-job and lets a wrong-key member try.

pub mod app;
pub mod node;
pub mod session;
pub mod signal_msg;

#[cfg(all(feature = "rtc-native", not(target_family = "wasm")))]
pub mod native;

#[cfg(all(feature = "rtc-web", target_family = "wasm", target_os = "unknown"))]
pub mod web;

#[cfg(test)]
mod tests;

pub use node::{CircleNode, Member, NodeOut, ShardTimes};
pub use session::{
    CHANNEL_LABEL, ConnId, NetOp, Out, PeerEvent, PeerStats, Phase, Session, SessionConfig,
    SessionError,
};
pub use signal_msg::SignalMsg;
