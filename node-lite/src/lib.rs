//! `node-lite` is the Shoal node as a library: everything a browser tab and the native
//! `shoal-node` binary share.
//!
//! - [`model`]: all-MiniLM-L6-v2 in burn — tokenizer, BERT encoder, mean pooling, L2 norm.
//! - [`weights`]: the chunked, hashed weight format (manifest + burnpack chunks), its
//!   verification, and (feature `import`) the safetensors importer.
//! - [`vector`]: small vector maths shared by search, tests and benches.
//! - [`tlog`] (crate `shoal-tlog`): RFC 9162 Merkle log proofs, C2SP signed notes,
//!   checkpoints, cosignatures, tiles, and the light client that verifies them; [`receipt`]:
//!   signed job receipts, the entries of the transparency log.
//! - [`proto`] (crate `shoal-proto`): the versioned binary wire frames shared by app, node and
//!   relay; [`identity`]: Ed25519 identities (libsodium natively with feature `sodium`,
//!   ed25519-dalek otherwise; byte-identical).
//! - [`circle`]: circle keys and links, room ids, sealed signaling payloads.
//! - [`seal`]: end-to-end sealed data channels between two members (X25519 + XChaCha20-Poly1305).
//! - [`jobs`]: the sans-IO job engine that shards an embedding job across a circle.
//! - [`rtc`]: circle members over WebRTC: sans-IO peer session + job driver, webrtc-rs driver.
//! - [`signal`]: the signaling client (sans-IO core; tokio or browser driver with feature `signal`).
//!
//! Platform code is gated by `cfg(all(target_family = "wasm", target_os = "unknown"))`.

// `deny` rather than `forbid`: the exceptions are `seal::sodium` (libsodium FFI, feature
// `sodium`, native only), and `model::fast`'s GEMM kernels (SIMD intrinsics, tile pointers), which opt in with
// `#[allow(unsafe_code)]`. Everything else stays safe.
#![deny(unsafe_code)]

pub mod circle;
#[cfg(not(target_family = "wasm"))]
pub mod index;
pub mod jobs;
#[cfg(not(target_family = "wasm"))]
pub mod receipt_store;
pub mod rtc;
pub mod seal;
pub mod signal;
pub mod vector;

// The lower layers, crates of their own (the relay links only these), under their old paths.
pub use shoal_proto::identity;
pub use shoal_tlog::receipt;
pub use {shoal_proto as proto, shoal_tlog as tlog};
pub mod weights;

#[cfg(feature = "model")]
pub mod model;

/// The model every Shoal node runs today.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Width of one embedding vector.
pub const EMBEDDING_DIM: usize = 384;
