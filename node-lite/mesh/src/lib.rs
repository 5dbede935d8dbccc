//! Circles: a user's devices (and, later, volunteers) sharing embedding jobs, sealed end to end.
//!
//! - [`circle`]: circle keys and `#c=` links, room ids, sealed signaling payloads.
//! - [`seal`]: end-to-end sealed data channels between two members (X25519 from Ed25519,
//!   BLAKE2b KDF, XChaCha20-Poly1305; libsodium natively with feature `sodium`, RustCrypto
//!   otherwise, byte-identical).
//! - [`signal`]: the signaling client (sans-IO core; tokio or browser driver with feature
//!   `signal`).
//! - [`jobs`]: the sans-IO job engine that shards an embedding job across a circle.
//! - [`rtc`]: circle members over WebRTC: sans-IO peer session + job driver, the webrtc-rs
//!   driver (feature `rtc-native`) and the browser's (feature `rtc-web`).
//!
//! Dependencies point one way: `circle` and `seal` on `shoal-proto`'s identities, `jobs` on
//! `seal` and `shoal-tlog`'s receipts, `rtc` on all of them. Platform code is gated by
//! `cfg(all(target_family = "wasm", target_os = "unknown"))`.

#![warn(missing_docs)]
#![deny(unsafe_code)]

pub mod circle;
pub mod jobs;
pub mod rtc;
pub mod seal;
pub mod signal;
