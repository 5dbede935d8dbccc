//! `shoal-worker-cpu-simd`: `shoal-worker-cpu` with the fast CPU encoder's wasm `simd128`
//! GEMM kernel (cargo feature `simd`). `web/worker.js` loads it when the browser validates a
//! SIMD module, else the scalar `shoal-worker-cpu`. See `worker_core.rs`.

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
