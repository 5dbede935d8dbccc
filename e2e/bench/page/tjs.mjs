// transformers.js (onnxruntime-web) on the same sentences as Shoal: everything local (model dir
// from scripts/export_tjs_model.py, ORT wasm from node_modules), no remote models.
//   ?threads=N (wasm threads; needs cross-origin isolation, which the bench server provides)
import { pipeline, env } from "/bench/tjs/transformers.js";

const params = new URLSearchParams(location.search);
env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = "/bench/models/";
env.backends.onnx.wasm.wasmPaths = "/bench/ort/";
env.backends.onnx.wasm.numThreads = Number(params.get("threads") || 1);

let extractor = null;
window.tjs = {
  isolated: self.crossOriginIsolated,
  async load(dtype, device = "wasm") {
    extractor = await pipeline("feature-extraction", "all-minilm-l6-v2", { dtype, device });
    return true;
  },
  async embed(texts) {
    const out = await extractor(texts, { pooling: "mean", normalize: true });
    return out.tolist();
  },
  // Throughput runs: the pipeline's own output (a tensor over one Float32Array), only its row
  // count back to the harness.
  async embedCount(texts) {
    const out = await extractor(texts, { pooling: "mean", normalize: true });
    if (out.data.length !== texts.length * 384) throw new Error("bad output");
    return out.dims[0];
  },
};
window.dispatchEvent(new Event("tjs-ready"));
