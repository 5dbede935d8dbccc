//! `shoal-app`: the page. A Leptos (CSR) UI over `window.shoal` (app/web/shoal.js), which owns
//! the model worker, the document store (IndexedDB) and search. No model code is linked here:
//! MiniLM runs in the `shoal-worker` wasm inside dedicated Web Workers (a pool, `web/pool.js`),
//! the assistant's chat model in one more such worker (`web/chat.js`, `chat_core.rs`);
//! this wasm carries the job engines that shard work across them (`pool_job` for the tab alone,
//! the circle's in `circle`, whose members are the peers and the tab's workers).

// `#[wasm_bindgen]` exports must be `pub` inside this binary's private modules.
#![allow(unreachable_pub)]
#[cfg(target_arch = "wasm32")]
mod assistant_view;
#[cfg(target_arch = "wasm32")]
mod circle;
#[cfg(target_arch = "wasm32")]
mod circle_view;
#[cfg(target_arch = "wasm32")]
mod light;
// Pure modules: also built natively for their unit tests (`cargo test -p shoal-app`).
#[cfg(any(target_arch = "wasm32", test))]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod members;
#[cfg(target_arch = "wasm32")]
mod pool_job;
#[cfg(target_arch = "wasm32")]
mod receipts_view;
#[cfg(any(target_arch = "wasm32", test))]
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
mod state;
#[cfg(target_arch = "wasm32")]
mod ui;
#[cfg(target_arch = "wasm32")]
mod widgets;

fn main() {
    #[cfg(target_arch = "wasm32")]
    {
        console_error_panic_hook::set_once();
        light::install_js_api();
        leptos::mount::mount_to_body(ui::App);
    }
}
