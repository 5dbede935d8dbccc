// wllama (llama.cpp compiled to wasm, npm @wllama/wllama) on the same GGUF as Shoal's
// assistant: everything local (the wasm from node_modules, the GGUF from the bench server).
// CPU only (n_gpu_layers 0); threads > 1 only when the page is cross-origin isolated (the bench
// server sends COOP/COEP).
import { Wllama } from "/bench/wllama/index.js";

let w = null;
window.wl = {
  isolated: self.crossOriginIsolated,
  // Load the model with `threads` threads; returns ms spent (fetch of the cached file + init).
  async load(url, threads) {
    if (w) await w.exit();
    const t0 = performance.now();
    w = new Wllama({ default: "/bench/wllama/wasm/wllama.wasm" }, { suppressNativeLog: true });
    const blob = await (await fetch(url)).blob();
    await w.loadModel([blob], { n_threads: threads, n_ctx: 1024, n_batch: 512, n_gpu_layers: 0 });
    return performance.now() - t0;
  },
  // One greedy chat completion; llama.cpp's own timings (prompt and generation tok/s).
  async chat(messages, max_tokens) {
    const t0 = performance.now();
    const r = await w.createChatCompletion({ messages, max_tokens, temperature: 0 });
    const ms = performance.now() - t0;
    const t = r.timings || {};
    return {
      text: r.choices?.[0]?.message?.content ?? "",
      prompt_n: t.prompt_n, predicted_n: t.predicted_n,
      prefill_tok_s: t.prompt_per_second, decode_tok_s: t.predicted_per_second, ms,
    };
  },
};
window.dispatchEvent(new Event("wl-ready"));
