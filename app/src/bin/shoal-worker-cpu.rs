//! `shoal-worker-cpu`: the model side of the app, run inside a dedicated Web Worker (its own wasm
//! instance, so inference never blocks the page). CPU only (the fast encoder, scalar kernel; burn
//! `flex` selectable): loaded when the browser offers no WebGPU adapter and no wasm SIMD.
//! See `worker_core.rs`.

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
