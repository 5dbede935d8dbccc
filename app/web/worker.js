// Shoal model worker (classic dedicated Web Worker, same origin).
// Loads its own instance of the `shoal-worker` wasm (Rust: weight verification + MiniLM in
// burn), fetches the weight files, caches them with the Cache API, and embeds on request.
// Protocol (postMessage, plain objects):
//   page → worker  {type:"init", base, variant, backend:"auto"|"webgpu"|"cpu"|"cpu-simd"|"cpu-scalar"|"flex", precision?:"exact", share?, weights?}
//                  (the CPU engine runs its dense layers on the integer kernel — int8 weights for
//                  the f16 profile, int12 for f32 —; precision "exact" keeps f32 arithmetic)
//                    cpu: the best CPU build the browser runs (relaxed SIMD, SIMD, scalar);
//                    cpu-simd / cpu-scalar force the plain SIMD / scalar build
//                    share: after loading on the CPU, hand the verified files to the page
//                    weights: {manifestBytes, bytes[]} from another pool worker (no network)
//                  {type:"embed", id, texts}
//                  {type:"cancel", ids}   (handled at once: queued embeds with these ids are skipped)
//                  {type:"selftest", backend}   (GEMM kernels vs an f64 reference; tests)
//   worker → page  {type:"progress", phase, loaded, total, rate, file}
//                  {type:"notice", level:"info"|"warn", message}
//                  {type:"ready", backend, engine, wasm, variant, timings, bytes}
//                  {type:"weights", manifestBytes, bytes[]}   (after ready, if share; transferred)
//                  {type:"selftest", wasm, kernels: [{kernel, cases}]}
//                  {type:"embedded", id, vectors: Float32Array (transferred), dim}
//                  {type:"error", id?, message, fatal}
"use strict";

const CACHE_NAME = "shoal-weights-v1";
const MAX_ATTEMPTS = 3;
let engine = null;

// Four builds of the same Rust worker: with WebGPU (big: wgpu + shaders), CPU-only with the
// relaxed-SIMD GEMM kernel (fused multiply-add), CPU-only with the wasm SIMD kernel, and
// CPU-only scalar (a module with SIMD instructions does not even validate in a browser without
// wasm SIMD, nor one with relaxed-SIMD instructions in a browser without relaxed SIMD). Load a
// CPU one unless WebGPU is wanted and an adapter exists: the best one whose tiny probe module
// validates, unless the page forced "cpu-simd" or "cpu-scalar".
const simdSupported = () => {
  try {
    // (func (result v128) i32.const 0 i8x16.splat i8x16.popcnt), as in wasm-feature-detect.
    return WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 10, 1, 8, 0, 65, 0, 253, 15, 253, 98, 11]));
  } catch (_) {
    return false;
  }
};
const relaxedSimdSupported = () => {
  try {
    // (func (result v128) i32.const 1 i8x16.splat i32.const 2 i8x16.splat i8x16.relaxed_swizzle)
    return WebAssembly.validate(new Uint8Array([0, 97, 115, 109, 1, 0, 0, 0, 1, 5, 1, 96, 0, 1, 123, 3, 2, 1, 0, 10, 15, 1, 13, 0, 65, 1, 253, 15, 65, 2, 253, 15, 253, 128, 2, 11]));
  } catch (_) {
    return false;
  }
};
let wasmName = null;
// level: "best" (relaxed SIMD if validated, else SIMD, else scalar), "simd", "scalar".
async function loadWasm(withGpu, level) {
  const simd = level !== "scalar" && simdSupported();
  const relaxed = simd && level === "best" && relaxedSimdSupported();
  const name = withGpu ? "shoal-worker" : relaxed ? "shoal-worker-cpu-relaxed" : simd ? "shoal-worker-cpu-simd" : "shoal-worker-cpu";
  importScripts(`./${name}.js`);
  await wasm_bindgen({ module_or_path: `./${name}_bg.wasm` });
  wasmName = name;
}
let queue = Promise.resolve();
const cancelled = new Set(); // embed ids cancelled by the page before they ran (bounded below)

const post = (msg, transfer) => self.postMessage(msg, transfer || []);
const notice = (level, message) => post({ type: "notice", level, message });

// Errors from Rust carry "file\x1fmessage"; split them.
function splitError(e) {
  const text = String((e && e.message) || e);
  const i = text.indexOf("\x1f");
  return i < 0 ? { file: "", message: text } : { file: text.slice(0, i), message: text.slice(i + 1) };
}

async function openCache() {
  try {
    if (!self.caches) return null;
    return await self.caches.open(CACHE_NAME);
  } catch (e) {
    notice("warn", `Weight cache unavailable (${e.name || e}); weights will be downloaded on every visit.`);
    return null;
  }
}

function isQuotaError(e) {
  return e && (e.name === "QuotaExceededError" || /quota/i.test(String(e.message || e)));
}

// Fetch one URL, streaming, reporting bytes as they arrive.
async function download(url, onBytes) {
  const res = await fetch(url, { cache: "no-store", credentials: "same-origin" });
  if (!res.ok) throw new Error(`${url.pathname}: HTTP ${res.status}`);
  if (!res.body) return new Uint8Array(await res.arrayBuffer());
  const reader = res.body.getReader();
  const parts = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    n += value.length;
    onBytes(value.length);
  }
  const out = new Uint8Array(n);
  let o = 0;
  for (const p of parts) { out.set(p, o); o += p.length; }
  return out;
}

async function loadWeights(base, variant) {
  const wasm = wasm_bindgen;
  const dir = new URL(`${base.replace(/\/$/, "")}/${variant}/`, self.location.href);
  const cache = await openCache();
  const manifestUrl = new URL("manifest.json", dir);
  const manifestKey = new Request(new URL("manifest.json?cached", dir));

  // The manifest is small: network first (so new weights are seen), cache as offline fallback.
  let manifestBytes;
  try {
    manifestBytes = await download(manifestUrl, () => {});
  } catch (e) {
    const hit = cache && (await cache.match(manifestKey));
    if (!hit) throw new Error(`cannot fetch the weights manifest: ${e.message || e}`);
    notice("info", "Offline: using the cached weights manifest.");
    manifestBytes = new Uint8Array(await hit.arrayBuffer());
  }
  let listing;
  try {
    listing = JSON.parse(wasm.manifest_files(manifestBytes));
  } catch (e) {
    throw new Error(`weights manifest rejected: ${splitError(e).message}`);
  }
  const files = listing.files;
  const total = files.reduce((s, f) => s + f.size, 0);
  const keyOf = (f) => new Request(new URL(`cache/${f.sha256}/${f.file}`, dir));
  const t0 = performance.now();
  let loaded = 0, netBytes = 0, cachedBytes = 0, lastPost = 0, quotaWarned = false;
  const progress = (file, force) => {
    const now = performance.now();
    if (!force && now - lastPost < 100) return;
    lastPost = now;
    const secs = Math.max((now - t0) / 1000, 1e-3);
    post({ type: "progress", phase: "weights", loaded, total, netBytes, rate: netBytes / secs, file });
  };

  const bytes = new Array(files.length);
  const fetchVerified = async (i) => {
    const f = files[i];
    for (let attempt = 1; ; attempt++) {
      let got = 0;
      try {
        const b = await download(new URL(f.file, dir), (n) => { got += n; loaded += n; netBytes += n; progress(f.file); });
        wasm.verify_file(manifestBytes, f.file, b);
        bytes[i] = b;
        break;
      } catch (e) {
        loaded -= got;
        const { message } = splitError(e);
        if (attempt >= MAX_ATTEMPTS) throw new Error(`${f.file}: ${message} (after ${attempt} attempts)`);
        notice("warn", `Discarded a bad download (${message}); retrying ${f.file} (attempt ${attempt + 1} of ${MAX_ATTEMPTS}).`);
      }
    }
    if (cache) {
      try {
        await cache.put(keyOf(f), new Response(bytes[i], { headers: { "content-type": "application/octet-stream" } }));
      } catch (e) {
        if (!quotaWarned) {
          quotaWarned = true;
          notice("warn", isQuotaError(e)
            ? "Not enough browser storage to keep the model (about " + Math.round(total / 1e6) + " MB). It works now but will be downloaded again next visit. Free space or pick the light profile."
            : `Could not cache the model (${e.name || e}); it will be downloaded again next visit.`);
        }
      }
    }
  };

  for (let i = 0; i < files.length; i++) {
    const hit = cache && (await cache.match(keyOf(files[i])));
    if (hit) {
      const b = new Uint8Array(await hit.arrayBuffer());
      if (b.length === files[i].size) {
        bytes[i] = b;
        loaded += b.length;
        cachedBytes += b.length;
        progress(files[i].file);
        continue;
      }
      await cache.delete(keyOf(files[i]));
    }
    await fetchVerified(i);
  }
  if (cache) {
    try { await cache.put(manifestKey, new Response(manifestBytes)); } catch (_) { /* reported above if quota */ }
  }
  progress("", true);
  return { manifestBytes, files, bytes, keyOf, cache, fetchVerified, stats: () => ({ total, netBytes, cachedBytes, downloadMs: performance.now() - t0 }) };
}

async function webgpuAvailable() {
  try {
    if (!self.navigator.gpu) return false;
    return !!(await self.navigator.gpu.requestAdapter());
  } catch (_) {
    return false;
  }
}

// Files another pool worker already fetched and verified (sent through the page). Engine.create
// verifies them again; if that fails this worker reports a fatal error and the page restarts it
// with the normal (cache / network) path.
function sharedWeights(s) {
  const total = s.bytes.reduce((n, b) => n + b.length, 0);
  return { manifestBytes: s.manifestBytes, bytes: s.bytes, files: [], stats: () => ({ total, netBytes: 0, cachedBytes: 0, sharedBytes: total, downloadMs: 0 }) };
}

async function init(msg) {
  const t0 = performance.now();
  const cpuOnly = ["cpu", "cpu-simd", "cpu-scalar", "flex"].includes(msg.backend);
  const wantGpu = !cpuOnly && (await webgpuAvailable());
  if (msg.backend === "webgpu" && !wantGpu) notice("warn", "WebGPU is not available in this browser; using the CPU.");
  await loadWasm(wantGpu, cpuLevel(msg.backend));
  const tWasm = performance.now();
  const w = msg.weights ? sharedWeights(msg.weights) : await loadWeights(msg.base, msg.variant);
  const tWeights = performance.now();
  const order = wantGpu ? ["webgpu", "cpu"] : msg.backend === "flex" ? ["flex"] : ["cpu"];
  let lastErr = null;
  for (const backend of order) {
    // Full verification (every chunk, both hashes, whole-record SHA-256) happens in Rust on
    // every load, cached or not. A cached file that fails is dropped and fetched again.
    for (let round = 0; round < MAX_ATTEMPTS; round++) {
      try {
        post({ type: "progress", phase: "model", loaded: 0, total: 0, rate: 0, file: backend });
        const tokenizer = w.bytes[w.bytes.length - 1];
        const chunks = w.bytes.slice(0, -1);
        const engineBackend = backend === "cpu" && msg.precision === "exact" ? "cpu-exact" : backend;
        engine = await wasm_bindgen.Engine.create(w.manifestBytes, chunks, tokenizer, engineBackend);
        // burn pads each batch to its longest input: small batches keep that waste low. The
        // fast CPU encoder does not pad, so bigger batches only amortise more.
        engine.setBatchSize(backend === "cpu" ? 32 : 8);
        const t1 = performance.now();
        post({
          type: "ready", backend, engine: engine.engine(), wasm: wasmName, variant: msg.variant,
          timings: { totalMs: t1 - t0, wasmMs: tWasm - t0, weightsMs: tWeights - tWasm, modelMs: t1 - tWeights },
          bytes: w.stats(),
        });
        // The engine holds its own copy now: hand the verified files to the other pool workers.
        if (msg.share && backend === "cpu") {
          const bufs = [...new Set(w.bytes.map((b) => b.buffer))];
          post({ type: "weights", manifestBytes: w.manifestBytes, bytes: w.bytes }, bufs);
        }
        return;
      } catch (e) {
        const { file, message } = splitError(e);
        lastErr = message;
        const i = w.files.findIndex((f) => f.file === file);
        if (i < 0) break; // not a weights problem: try the next backend
        notice("warn", `Cached ${file} failed verification (${message}); fetching it again.`);
        if (w.cache) await w.cache.delete(w.keyOf(w.files[i]));
        await w.fetchVerified(i);
      }
    }
    if (backend === "webgpu") notice("warn", `WebGPU failed (${lastErr}); falling back to the CPU.`);
  }
  throw new Error(lastErr || "model initialisation failed");
}

const cpuLevel = (backend) => (backend === "cpu-scalar" ? "scalar" : backend === "cpu-simd" ? "simd" : "best");

async function selftest(msg) {
  if (!wasmName) await loadWasm(false, cpuLevel(msg.backend));
  const kernels = JSON.parse(wasm_bindgen.kernel_self_test());
  post({ type: "selftest", wasm: wasmName, kernels });
}

async function embed(msg) {
  if (cancelled.delete(msg.id)) return;
  if (!engine) throw new Error("model not ready");
  const flat = await engine.embed(msg.texts);
  post({ type: "embedded", id: msg.id, vectors: flat, dim: msg.texts.length ? flat.length / msg.texts.length : 384 }, [flat.buffer]);
}

self.onmessage = (ev) => {
  const msg = ev.data || {};
  if (msg.type === "cancel") {
    for (const id of msg.ids || []) cancelled.add(id);
    while (cancelled.size > 1024) cancelled.delete(cancelled.values().next().value);
    return;
  }
  queue = queue.then(async () => {
    try {
      if (msg.type === "init") await init(msg);
      else if (msg.type === "embed") await embed(msg);
      else if (msg.type === "selftest") await selftest(msg);
    } catch (e) {
      post({ type: "error", id: msg.id, message: splitError(e).message, fatal: msg.type === "init" });
    }
  });
};
