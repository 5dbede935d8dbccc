//! `shoal-worker`: the model side of the app, run inside a dedicated Web Worker (its own wasm
//! instance, so inference never blocks the page). WebGPU (burn `wgpu`, async reads) with a CPU fallback (burn `flex`),
//! and the assistant on WebGPU (`chat_gpu.rs`) beside the CPU one (`chat_core.rs`).
//! See `worker_core.rs`.

// `#[wasm_bindgen]` exports must be `pub` inside this binary's private modules.
#![allow(unreachable_pub)]
#[cfg(target_arch = "wasm32")]
#[path = "../worker_core.rs"]
mod worker_core;

#[cfg(target_arch = "wasm32")]
#[path = "../chat_core.rs"]
mod chat_core;

#[cfg(target_arch = "wasm32")]
#[path = "../chat_gpu.rs"]
mod chat_gpu;

fn main() {
    #[cfg(target_arch = "wasm32")]
    console_error_panic_hook::set_once();
}
