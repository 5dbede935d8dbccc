//! Local semantic search over embeddings: [`vector`] (cosine, L2 normalisation, top-k) and,
//! natively, [`index`] (the `shoal-node` passage index: passages with file and line, their
//! vectors, saved atomically).

#![warn(missing_docs)]
#![forbid(unsafe_code)]

#[cfg(not(target_family = "wasm"))]
pub mod index;
pub mod vector;
