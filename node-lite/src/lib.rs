//! `node-lite` is the Shoal node as one library for the browser tab and the native
//! `shoal-node` binary (crate `node-lite/cli`). It holds no code of its own: it re-exports the
//! node's crates under one roof, and its features pick what a build needs.
//!
//! | module | crate | what |
//! | --- | --- | --- |
//! | [`proto`], [`identity`] | `shoal-proto` | versioned wire frames; Ed25519 identities |
//! | [`tlog`], [`receipt`] | `shoal-tlog` | the receipt transparency log: proofs, notes, checkpoints, tiles, light client; signed job receipts |
//! | [`weights`] | `shoal-weights` | chunked, hashed weights + manifests, verified before use |
//! | `model` (feature `model`) | `shoal-model` | all-MiniLM-L6-v2: tokenizer, burn BERT, the fast CPU encoder, the importer |
//! | [`vector`], `index` (native) | `shoal-search` | cosine and top-k; the CLI's passage index |
//! | [`circle`], [`seal`], [`signal`], [`jobs`], [`rtc`] | `shoal-mesh` | circles: keys, sealed channels, signaling, the job engine, WebRTC |
//!
//! Features: `cpu` / `gpu` (model engines), `wasm-simd` / `wasm-relaxed-simd` (browser
//! kernels), `import` (safetensors importer), `fetch` (weights and log over HTTP natively),
//! `sodium` (libsodium natively), `signal`, `rtc-native`, `rtc-web`. None is on by default.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

pub use shoal_mesh::{circle, jobs, rtc, seal, signal};
pub use shoal_proto::identity;
pub use shoal_proto::{EMBEDDING_DIM, MODEL_NAME};
#[cfg(not(target_family = "wasm"))]
pub use shoal_search::index;
pub use shoal_search::vector;
pub use shoal_tlog::receipt;
#[cfg(not(target_family = "wasm"))]
pub use shoal_tlog::receipt_store;
pub use shoal_weights as weights;
pub use {shoal_proto as proto, shoal_tlog as tlog};

#[cfg(feature = "model")]
pub use shoal_model as model;
