//! `node-lite` is the Shoal node as a library: everything a browser tab and the native
//! `shoal-node` binary share.
//!
//! - [`model`]: all-MiniLM-L6-v2 in burn — tokenizer, BERT encoder, mean pooling, L2 norm.
//! - [`weights`]: the chunked, hashed weight format (manifest + burnpack chunks), its
//!   verification, and (feature `import`) the safetensors importer.
//! - [`vector`]: small vector maths shared by search, tests and benches.
//! - [`tlog`]: RFC 9162 Merkle log proofs, C2SP signed notes, checkpoints, cosignatures,
//!   tiles, and the light client that verifies them.
//! - [`receipt`]: signed job receipts, the entries of the transparency log.
//!
//! Platform code is gated by `cfg(all(target_family = "wasm", target_os = "unknown"))`.

#![forbid(unsafe_code)]

#[cfg(not(target_family = "wasm"))]
pub mod index;
pub mod receipt;
pub mod tlog;
pub mod vector;
pub mod weights;

#[cfg(feature = "model")]
pub mod model;

/// The model every Shoal node runs today.
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Width of one embedding vector.
pub const EMBEDDING_DIM: usize = 384;
