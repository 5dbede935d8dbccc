//! `shoal-worker-cpu-relaxed`: `shoal-worker-cpu-simd` plus the fast CPU encoder's relaxed-SIMD
//! GEMM kernel (`f32x4.relaxed_madd`, cargo feature `relaxed`). `web/worker.js` loads it when
//! the browser validates a relaxed-SIMD module. See `worker_core.rs`.

// `#[wasm_bindgen]` exports must be `pub` inside this binary's private modules.
#![allow(unreachable_pub)]
#[cfg(target_arch = "wasm32")]
#[path = "../worker_core.rs"]
mod worker_core;

#[cfg(target_arch = "wasm32")]
#[path = "../chat_core.rs"]
mod chat_core;

fn main() {
    #[cfg(target_arch = "wasm32")]
    console_error_panic_hook::set_once();
}
