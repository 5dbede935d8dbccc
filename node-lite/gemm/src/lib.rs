//! The embedder's CPU kernels, the only code of the workspace built without overflow checks
//! and debug assertions in the dev profile (the root `Cargo.toml`): in these inner loops the
//! checks keep the accumulators out of registers (≈ 4× slower), and the tests and benchmarks
//! run the dev profile. Nothing here parses peer or file input: the callers
//! (`shoal-model`'s fast encoder) pass shapes they derived from a verified model config, and
//! every `unsafe` entry point states the bounds it needs ([`kernel::check`],
//! [`qkernel::check`]).
//!
//! - [`kernel`]: packed, register-tiled f32 `C = A·B (+ bias)`;
//! - [`qkernel`]: the same with int8/int12 weights and 14-bit activations (the browser's
//!   compact path);
//! - [`par`]: those GEMMs and per-row loops over every core (rayon natively, one thread in
//!   wasm);
//! - [`attn`]: one head's attention (a dedicated AVX-512 kernel for head dimension 32, the
//!   packed GEMM elsewhere);
//! - [`ops`]: GELU, softmax, residual + LayerNorm, written to vectorise.

#![warn(missing_docs)]
pub mod attn;
pub mod kernel;
pub mod ops;
pub mod par;
pub mod qkernel;
