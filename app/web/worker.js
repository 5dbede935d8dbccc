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
//                  {type:"error", id?, op?, message, fatal}
// The assistant (a worker of its own, the same best CPU build; chat_core.rs — or with
// backend "webgpu" and an adapter, the WebGPU build and its GPU engine, chat_gpu.rs):
//   page → worker  {type:"chat-init", model:{kind:"builtin", base} | {kind:"byo", key: sha256}, backend?, precision?}
//                  {type:"chat-import", file: File} | {type:"chat-import", url}   (a user's GGUF: header
//                    checked before the rest is read, chunked + hashed + cached; becomes the loaded model)
//                  {type:"chat", id, request:{messages | rag:{question, sources:[{label, text}]},
//                    max_tokens, temperature, top_p, top_k, repeat_penalty, seed, stop}}
//                  {type:"chat-stop", id?}   (handled at once: the running answer ends at its next step)
//                  {type:"chat-selftest", backend?}   {type:"chat-probe", id, op, ...}   (tests)
//                  {type:"chat-peers", rank, ranks, sab, split?, wait_s?}   this worker is rank `rank` of `ranks` chat
//                  workers that split every forward pass (split "rows": by matrix rows, else by heads), swapping parts through `sab` (a
//                  SharedArrayBuffer of CHAT_PEER_BYTES(ranks)); ranks 1 = alone again. Followers
//                  (rank > 0) get the same chat-init / chat messages as the leader, post only
//                  chat-ready, chat-done {follower: true} and errors; Stop goes to the leader,
//                  which passes it on at the same step.
//   worker → page  {type:"chat-progress", phase:"weights"|"read"|"model", loaded, total, netBytes, rate, file}
//                  {type:"chat-ready", model:{key, builtin, id, size, sha256, arch, types, name?}, info, wasm, timings, bytes, imported?}
//                  {type:"chat-start", id, promptTokens}  {type:"chat-prefill", id, done, total}
//                  {type:"chat-token", id, text, token, index}
//                  {type:"chat-done", id, finish, result:{text, prompt_tokens, tokens, prefill_tok_s, decode_tok_s}, first_token_ms, cited}
//                  {type:"chat-selftest", wasm, tier, kernels:[{kernel, worst}]}   {type:"chat-probe", id, result}
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
  const manifestBytes = await fetchManifest(dir, cache);
  let listing;
  try {
    listing = JSON.parse(wasm.manifest_files(manifestBytes));
  } catch (e) {
    throw new Error(`weights manifest rejected: ${splitError(e).message}`);
  }
  const keyOf = (f) => new Request(new URL(`cache/${f.sha256}/${f.file}`, dir));
  return loadListed({
    dir, cache, manifestBytes, files: listing.files, keyOf,
    verify: (name, b) => wasm.verify_file(manifestBytes, name, b),
    progress: (m) => post({ type: "progress", phase: "weights", ...m }),
  });
}

// The manifest is small: network first (so new weights are seen), cache as offline fallback.
async function fetchManifest(dir, cache) {
  const manifestUrl = new URL("manifest.json", dir);
  const manifestKey = new Request(new URL("manifest.json?cached", dir));
  try {
    const bytes = await download(manifestUrl, () => {});
    if (cache) {
      try { await cache.put(manifestKey, new Response(bytes)); } catch (_) { /* quota: reported with the weights */ }
    }
    return bytes;
  } catch (e) {
    const hit = cache && (await cache.match(manifestKey));
    if (!hit) throw new Error(`cannot fetch the weights manifest: ${e.message || e}`);
    notice("info", "Offline: using the cached weights manifest.");
    return new Uint8Array(await hit.arrayBuffer());
  }
}

// Every file of a manifest listing ([{file, size, sha256}]), from the Cache API (keyOf) or the
// network (dir), each download verified (verify(name, bytes) throws) before it is cached.
// Cached files are only size-checked here: the engine verifies everything on every load.
async function loadListed({ dir, cache, manifestBytes, files, keyOf, verify, progress: report }) {
  const total = files.reduce((s, f) => s + f.size, 0);
  const t0 = performance.now();
  let loaded = 0, netBytes = 0, cachedBytes = 0, lastPost = 0, quotaWarned = false;
  const progress = (file, force) => {
    const now = performance.now();
    if (!force && now - lastPost < 100) return;
    lastPost = now;
    const secs = Math.max((now - t0) / 1000, 1e-3);
    report({ loaded, total, netBytes, rate: netBytes / secs, file });
  };

  const bytes = new Array(files.length);
  const fetchVerified = async (i) => {
    const f = files[i];
    if (!dir) throw new Error(`${f.file}: not in the cache, and this model has no download address`);
    for (let attempt = 1; ; attempt++) {
      let got = 0;
      try {
        const b = await download(new URL(f.file, dir), (n) => { got += n; loaded += n; netBytes += n; progress(f.file); });
        verify(f.file, b);
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

// ------------------------------------------------------------------ the assistant (chat)
// A worker that gets chat-* messages runs the chat model (chat_core.rs) in its own wasm
// instance: the page keeps one such worker beside the embedding pool.
const CHAT_BUILTIN_KEY = "builtin";
const HEADER_FIRST_READ = 1 << 20; // first bytes of a user's GGUF read for the header check
const MAX_CHAT_BYTES = 2 ** 33; // 8 GiB, as node-lite's chat weights
// What fits a tab: wasm32 memory is 4 GiB, and loading holds the file, its verified copy and the
// repacked engine at once (≈ 3× the file), so 1 GB (Llama 3.2 1B, TinyLlama, Qwen2.5 0.5B at
// Q4_K_M) is the limit here; bigger files are refused after the header, before the rest is read.
const BROWSER_MAX_BYTES = 1e9;
const tooBig = (n) => {
  if (n > BROWSER_MAX_BYTES) throw new Error(`${mb(n)} does not fit in a browser tab (wasm memory is 4 GiB; at most ${mb(BROWSER_MAX_BYTES)} here — use shoal-node chat for bigger models)`);
};
let chat = null; // {engine, model, info}
let chatRun = null; // the generation in progress: {id, stop}
const chatCancelled = new Set(); // chat ids stopped before they started (bounded below)

// Yield to the event loop (a stop message is handled between two steps) without setTimeout's
// 4 ms clamp.
const yieldChannel = new MessageChannel();
const yieldWaiters = [];
yieldChannel.port1.onmessage = () => { const f = yieldWaiters.shift(); if (f) f(); };
const yieldNow = () => new Promise((resolve) => { yieldWaiters.push(resolve); yieldChannel.port2.postMessage(0); });

const mb = (n) => `${(n / 1e6).toFixed(1)} MB`;
const byoDir = (key) => new URL(`chat-models/${key}/`, self.location.href);

// A model id from a file name, as llama.cpp's server (and shoal-node import-gguf) name models:
// "SmolLM2-135M-Instruct.Q4_1.gguf" → "smollm2-135m-instruct".
function modelId(fileName) {
  let base = String(fileName).split("/").pop().replace(/\.gguf$/i, "");
  const m = base.match(/^(.*)[.-]([^.-]+)$/);
  if (m && (/^q\d/i.test(m[2]) || /^(f16|f32|bf16)$/i.test(m[2]))) base = m[1];
  return base.toLowerCase().replace(/[^a-z0-9]+/g, "-").replace(/^-+|-+$/g, "") || "model";
}

const chatProgress = (phase, m) => post({ type: "chat-progress", phase, ...m });

async function loadChatFiles(model) {
  const wasm = wasm_bindgen;
  const cache = await openCache();
  let dir, manifestBytes;
  if (model.kind === "builtin") {
    dir = new URL(`${model.base.replace(/\/$/, "")}/`, self.location.href);
    manifestBytes = await fetchManifest(dir, cache);
  } else {
    // A model the user brought: only this browser has it (manifest and chunks in the cache).
    const hit = cache && (await cache.match(new Request(new URL("manifest.json", byoDir(model.key)))));
    if (!hit) throw new Error("this model is no longer in the browser's storage; add the .gguf file again");
    manifestBytes = new Uint8Array(await hit.arrayBuffer());
  }
  let listing;
  try {
    listing = JSON.parse(wasm.chat_manifest_files(manifestBytes));
  } catch (e) {
    throw new Error(`chat manifest rejected: ${splitError(e).message}`);
  }
  const base = model.kind === "builtin" ? dir : byoDir(model.key);
  const keyOf = (f) => new Request(new URL(`cache/${f.sha256}/${f.file}`, base));
  const w = await loadListed({
    dir: model.kind === "builtin" ? dir : null, cache, manifestBytes, files: listing.files, keyOf,
    verify: (name, b) => wasm.chat_verify_file(manifestBytes, name, b),
    progress: (m) => chatProgress("weights", m),
  });
  return { ...w, listing };
}

function modelFacts(listing, model, extra = {}) {
  return {
    key: model.kind === "builtin" ? CHAT_BUILTIN_KEY : model.key, builtin: model.kind === "builtin",
    id: listing.model, size: listing.total, sha256: listing.sha256, arch: listing.arch, types: listing.types, ...extra,
  };
}

// The chat engine for `w`'s verified chunks: on the GPU when asked for and possible (a
// failure that is not a bad chunk falls back to the CPU engine with a notice), else the CPU.
async function createChatEngine(w, msg) {
  if (msg.backend === "webgpu" && typeof wasm_bindgen.GpuChatEngine === "function") {
    try {
      return await wasm_bindgen.GpuChatEngine.create(w.manifestBytes, w.bytes, msg.precision || null);
    } catch (e) {
      if (splitError(e).file) throw e; // a chunk failed verification: the caller refetches it
      notice("warn", `The assistant could not start on WebGPU (${splitError(e).message}); it runs on the CPU.`);
    }
  }
  return wasm_bindgen.ChatEngine.create(w.manifestBytes, w.bytes);
}

// The first chat message picks this worker's build: the WebGPU one (which has both chat
// engines) when the GPU engine is asked for and the browser has an adapter, else the best CPU one.
async function ensureChatWasm(msg) {
  if (wasmName) return;
  const gpu = msg.backend === "webgpu" && (await webgpuAvailable());
  if (msg.backend === "webgpu" && !gpu) notice("warn", "WebGPU is not available in this browser; the assistant runs on the CPU.");
  await loadWasm(gpu, cpuLevel(msg.backend || "cpu"));
}

async function chatInit(msg) {
  const t0 = performance.now();
  await ensureChatWasm(msg);
  const tWasm = performance.now();
  if (chat) { chat.engine.free(); chat = null; }
  const model = msg.model || { kind: "builtin" };
  const w = await loadChatFiles(model);
  const tWeights = performance.now();
  // Every chunk and the whole file are verified in Rust on every load, cached or not. A cached
  // chunk of the built-in model that fails is dropped and fetched again; one of a model the user
  // brought cannot be fetched again, so the load is refused naming it.
  for (let round = 0; ; round++) {
    try {
      chatProgress("model", { loaded: 0, total: 0, file: w.listing.model });
      const engine = await createChatEngine(w, msg);
      applyPeers(engine);
      const t1 = performance.now();
      chat = { engine, model: modelFacts(w.listing, model), info: JSON.parse(engine.info()) };
      post({
        type: "chat-ready", model: chat.model, info: chat.info, wasm: wasmName,
        timings: { totalMs: t1 - t0, wasmMs: tWasm - t0, weightsMs: tWeights - tWasm, modelMs: t1 - tWeights },
        bytes: w.stats(),
      });
      return;
    } catch (e) {
      const { file, message } = splitError(e);
      const i = w.files.findIndex((f) => f.file === file);
      if (i < 0 || model.kind !== "builtin" || round >= MAX_ATTEMPTS) {
        throw new Error(model.kind === "builtin" ? message : `the stored copy of this model is damaged (${message}); delete it and add the .gguf again`);
      }
      notice("warn", `Cached ${file} failed verification (${message}); fetching it again.`);
      if (w.cache) await w.cache.delete(w.keyOf(w.files[i]));
      await w.fetchVerified(i);
    }
  }
}

// The start of a user's GGUF, checked before the rest is read: `readPrefix(n)` → the first n
// bytes (or fewer at the end), `total` its size (MAX_CHAT_BYTES when unknown). Throws with the
// reason (unsupported architecture, tensor type, tokenizer; not a GGUF; truncated) by name.
async function checkHeader(readPrefix, total) {
  for (let n = HEADER_FIRST_READ; ; n *= 2) {
    const prefix = await readPrefix(n);
    const h = JSON.parse(wasm_bindgen.gguf_header(prefix, total));
    if (h.complete) return { header: h, read: prefix.length };
    if (prefix.length < n) throw new Error("the file ends inside its header (truncated)");
  }
}

async function importFile(file, progress) {
  const total = file.size;
  let header;
  try {
    ({ header } = await checkHeader(async (n) => new Uint8Array(await file.slice(0, Math.min(n, total)).arrayBuffer()), total));
    tooBig(total);
  } catch (e) {
    throw new Error(`${file.name} refused: ${splitError(e).message}`);
  }
  const bytes = new Uint8Array(total);
  const STEP = 8 << 20;
  for (let o = 0; o < total; o += STEP) {
    bytes.set(new Uint8Array(await file.slice(o, Math.min(total, o + STEP)).arrayBuffer()), o);
    progress(Math.min(total, o + STEP), total);
  }
  return { bytes, header, name: file.name, source: `file:${file.name}` };
}

async function importUrl(url, progress) {
  const u = new URL(url, self.location.href);
  if (u.origin !== self.location.origin) {
    throw new Error(`${u.origin} is another origin: this page fetches only from its own (strict CSP; nothing leaves it). Download the file and pick it instead.`);
  }
  const res = await fetch(u, { cache: "no-store", credentials: "same-origin" });
  if (!res.ok) throw new Error(`${u.pathname}: HTTP ${res.status}`);
  const declared = Number(res.headers.get("content-length")) || 0;
  if (declared > MAX_CHAT_BYTES) throw new Error(`${u.pathname}: ${mb(declared)} is over the 8 GiB limit`);
  const total = declared || MAX_CHAT_BYTES;
  const reader = res.body.getReader();
  const parts = [];
  let n = 0, header = null, nextCheck = HEADER_FIRST_READ;
  const joined = () => {
    const out = new Uint8Array(n);
    let o = 0;
    for (const p of parts) { out.set(p, o); o += p.length; }
    return out;
  };
  const name = decodeURIComponent(u.pathname.split("/").pop() || "model.gguf");
  for (;;) {
    const { done, value } = await reader.read();
    if (value) { parts.push(value); n += value.length; progress(n, declared); }
    if (n > BROWSER_MAX_BYTES) { reader.cancel().catch(() => {}); tooBig(n); }
    if (!header && (n >= nextCheck || done)) {
      try {
        const h = JSON.parse(wasm_bindgen.gguf_header(joined(), done ? n : total));
        if (h.complete) { header = h; if (declared) tooBig(declared); } else nextCheck = n * 2;
      } catch (e) {
        // Refused on the header: the rest is not downloaded.
        reader.cancel().catch(() => {});
        throw new Error(`${name} refused after ${mb(n)}${declared ? ` of ${mb(declared)}` : ""}: ${splitError(e).message}`);
      }
    }
    if (done) break;
  }
  if (!header) throw new Error(`${name} refused: the file ends inside its header (truncated)`);
  if (declared && n !== declared) throw new Error(`${name}: got ${n} bytes, the server announced ${declared} (truncated download)`);
  return { bytes: joined(), header, name, source: u.href };
}

// A GGUF the user brings (file or same-origin URL): header checked first, then the whole file
// checked and described as verified chunks (chat_core: ChatManifest::describe), the engine
// built, and the chunks + manifest cached under chat-models/<sha256>/ for later visits.
async function chatImport(msg) {
  const t0 = performance.now();
  await ensureChatWasm(msg);
  const progress = (loaded, total) => chatProgress("read", { loaded, total, netBytes: msg.url ? loaded : 0, rate: 0, file: "" });
  const src = msg.file ? await importFile(msg.file, progress) : await importUrl(msg.url, progress);
  chatProgress("model", { loaded: 0, total: 0, file: src.name });
  // The model in use so far gives way (the page loads it again if this one is refused).
  if (chat) { chat.engine.free(); chat = null; }
  let engine;
  try {
    engine = wasm_bindgen.ChatEngine.fromGguf(src.bytes, modelId(src.name), src.source);
    applyPeers(engine);
  } catch (e) {
    throw new Error(`${src.name} refused: ${splitError(e).message}`);
  }
  const manifestBytes = new TextEncoder().encode(engine.manifest());
  const listing = JSON.parse(wasm_bindgen.chat_manifest_files(manifestBytes));
  const model = { kind: "byo", key: listing.sha256 };
  const dir = byoDir(model.key);
  const cache = await openCache();
  let stored = !!cache;
  if (cache) {
    try {
      let o = 0;
      for (const f of listing.files) {
        const key = new Request(new URL(`cache/${f.sha256}/${f.file}`, dir));
        await cache.put(key, new Response(src.bytes.subarray(o, o + f.size), { headers: { "content-type": "application/octet-stream" } }));
        o += f.size;
      }
      await cache.put(new Request(new URL("manifest.json", dir)), new Response(manifestBytes));
    } catch (e) {
      stored = false;
      notice("warn", isQuotaError(e)
        ? `Not enough browser storage to keep ${src.name} (${mb(src.bytes.length)}): it works now but must be added again next visit.`
        : `Could not store ${src.name} (${e.name || e}); it must be added again next visit.`);
    }
  }
  // On the GPU when asked for: the same verified chunks (slices of the file) go to the device.
  if (msg.backend === "webgpu" && typeof wasm_bindgen.GpuChatEngine === "function") {
    const chunks = [];
    let o = 0;
    for (const f of listing.files) { chunks.push(src.bytes.subarray(o, o + f.size)); o += f.size; }
    try {
      const gpu = await wasm_bindgen.GpuChatEngine.create(manifestBytes, chunks, msg.precision || null);
      engine.free();
      engine = gpu;
    } catch (e) {
      notice("warn", `${src.name} could not start on WebGPU (${splitError(e).message}); it runs on the CPU.`);
    }
  }
  chat = { engine, model: modelFacts(listing, model, { name: src.name, source: src.source, stored }), info: JSON.parse(engine.info()) };
  const t1 = performance.now();
  post({ type: "chat-ready", model: chat.model, info: chat.info, wasm: wasmName, imported: true, timings: { totalMs: t1 - t0 }, bytes: { total: src.bytes.length } });
}

// ------------------------------------------------------------------ several chat workers, one answer
// Each computes its share of every forward pass (shoal-llm `Exchange`: row groups of every
// matrix, (token, head) pairs of attention) and swaps the rest through a SharedArrayBuffer:
// a control block of Int32 words, then two slots (alternating sequence numbers) per rank of
// PEER_CAP floats. A slot is rewritten two sequence numbers later, which a rank only reaches
// after every other rank has published the next one — by then they have read it.
const PEER_CAP = 1 << 18; // floats per slot (1 MiB): a 64-token prefill block's largest section fits in one round
const C_DEAD = 0; // set by the page when a worker of the group died: everyone stops waiting
const C_GATE = 1; // the leader's step counter
const C_CMD = 2; // 2 words: the leader's command for a step (1 = step, 2 = stop first)
const C_ACK = 8; // per rank: the followers' step counters
const C_SEQ = 24; // per rank: the exchange sequence each rank has published
const CTRL_WORDS = 64; // up to 16 ranks
// How long a worker waits for another before the answer fails: 30 s by default; the page may
// pass 1–120 s (`?chat_peer_wait_s=`, so the e2e test of a silent death need not wait 30 s).
const PEER_WAIT_MS = 30_000;
// How long a worker spins on the other's counter before it sleeps (see makePeers).
const SPIN_MS = 1;
let peers = null;

function makePeers(rank, ranks, sab, waitS) {
  if (!(sab instanceof SharedArrayBuffer) || ranks < 2 || ranks > 16 || rank >= ranks) throw new Error("bad chat-peers message");
  const deadlineMs = Number.isFinite(waitS) ? Math.min(120, Math.max(1, Math.round(waitS))) * 1000 : PEER_WAIT_MS;
  const ctrl = new Int32Array(sab, 0, CTRL_WORDS);
  // Every rank's two slots, viewed once (an exchange runs 61 times a token).
  const slots = Array.from({ length: ranks }, (_, r) =>
    [0, 1].map((p) => new Float32Array(sab, CTRL_WORDS * 4 + (r * 2 + p) * PEER_CAP * 4, PEER_CAP)));
  const slot = (r, p) => slots[r][p];
  let seq = 0;
  let step = 0;
  // Spin first (up to SPIN_MS), then sleep in short waits. A sleeping worker's wake-up is a
  // futex wake of an idle core, which in a VM can cost hundreds of µs: measured on a 2-vCPU
  // AMD guest, a 20k-load spin (≈ 20 µs) left both workers waiting 14 ms of a 27.6 ms token;
  // spinning up to 1 ms cut it to 1.7 ms of 12.0 ms (decode 36 → 83.5 tok/s). Under load a
  // spinning worker takes time slices the other needs, so the spin is bounded in time.
  const waitAtLeast = (idx, value) => {
    if (Atomics.load(ctrl, idx) >= value) return;
    const spinUntil = performance.now() + SPIN_MS;
    for (let i = 1; ; i++) {
      if (Atomics.load(ctrl, idx) >= value) return;
      if ((i & 1023) === 0 && performance.now() > spinUntil) break;
    }
    const deadline = performance.now() + deadlineMs;
    for (;;) {
      const v = Atomics.load(ctrl, idx);
      if (v >= value) return;
      if (Atomics.load(ctrl, C_DEAD)) throw new Error("another chat worker of this answer stopped");
      if (performance.now() > deadline) throw new Error(`another chat worker did not answer for ${deadlineMs / 1000} s`);
      Atomics.wait(ctrl, idx, v, 20);
    }
  };
  const publish = (idx, value) => { Atomics.store(ctrl, idx, value); Atomics.notify(ctrl, idx); };
  // Where an answer's time goes (reported with the leader's result): exchanges, and the time
  // spent waiting for the other ranks in them and at the step gate.
  let exchanges = 0, waitMs = 0, gateMs = 0;
  const timedWait = (idx, value) => { const t = performance.now(); waitAtLeast(idx, value); return performance.now() - t; };
  return {
    rank, ranks,
    stats() { const s = { exchanges, wait_ms: +waitMs.toFixed(1), gate_ms: +gateMs.toFixed(1) }; exchanges = 0; waitMs = 0; gateMs = 0; return s; },
    // Called from Rust (chat_core JsPeers) with this rank's packed part and room for the others'.
    exchange(parts, mine, others) {
      exchanges++;
      let most = 0;
      for (let r = 0; r < ranks; r++) most = Math.max(most, parts[r]);
      const rounds = Math.max(1, Math.ceil(most / PEER_CAP));
      for (let k = 0; k < rounds; k++) {
        seq++;
        const p = seq & 1;
        const lo = k * PEER_CAP;
        const own = Math.max(0, Math.min(PEER_CAP, parts[rank] - lo));
        if (own) slot(rank, p).set(mine.subarray(lo, lo + own));
        publish(C_SEQ + rank, seq);
        let off = 0;
        for (let r = 0; r < ranks; r++) {
          if (r === rank) continue;
          waitMs += timedWait(C_SEQ + r, seq);
          const n = Math.max(0, Math.min(PEER_CAP, parts[r] - lo));
          if (n) others.set(slot(r, p).subarray(0, n), off + lo);
          off += parts[r];
        }
      }
    },
    // Before each step the leader says whether to stop first; the followers do the same.
    lead(stop) {
      for (let r = 1; r < ranks; r++) gateMs += timedWait(C_ACK + r, step - 1);
      Atomics.store(ctrl, C_CMD + (step & 1), stop ? 2 : 1);
      publish(C_GATE, ++step);
    },
    follow() {
      gateMs += timedWait(C_GATE, step + 1);
      const stop = Atomics.load(ctrl, C_CMD + (step & 1)) === 2;
      publish(C_ACK + rank, ++step);
      return stop;
    },
  };
}

function setPeers(msg) {
  peers = msg.ranks > 1 ? makePeers(msg.rank, msg.ranks, msg.sab, msg.wait_s) : null;
  if (peers) peers.rowsOnly = msg.split === "rows";
  if (chat) applyPeers(chat.engine);
}

function applyPeers(engine) {
  if (typeof engine.setPeers !== "function") return; // the GPU engine computes alone
  if (peers) engine.setPeers(peers.rank, peers.ranks, peers.exchange, peers.rowsOnly);
  else engine.setPeers(0, 1, undefined);
}

async function chatGenerate(msg) {
  const follower = peers && peers.rank > 0;
  const stoppedEarly = !follower && chatCancelled.delete(msg.id);
  // Alone, an answer stopped before it began is skipped; with followers it still begins (they
  // run it too) and stops at its first step, so every worker takes the same steps.
  if (stoppedEarly && !peers) {
    post({ type: "chat-done", id: msg.id, finish: "cancelled", result: { text: "", prompt_tokens: [], tokens: [], prefill_tok_s: 0, decode_tok_s: 0 }, first_token_ms: 0, cited: [] });
    return;
  }
  if (!chat) throw new Error("the chat model is not loaded");
  const run = { id: msg.id, stop: stoppedEarly };
  chatRun = run;
  try {
    let started;
    try {
      started = JSON.parse(chat.engine.start(JSON.stringify(msg.request || {})));
    } catch (e) {
      // A request refused at start (bad input) is refused by every worker alike: the leader
      // reports it; a follower staying quiet keeps the group (nothing ran yet).
      if (follower) return;
      if (e && typeof e === "object") e.refused = true;
      throw e;
    }
    if (!follower) post({ type: "chat-start", id: msg.id, promptTokens: started.prompt_tokens });
    peers?.stats(); // count this answer's exchanges only
    for (;;) {
      if (!peers) {
        if (run.stop) chat.engine.cancel();
      } else if (!follower) {
        if (run.stop) chat.engine.cancel();
        peers.lead(run.stop);
      } else if (peers.follow()) {
        chat.engine.cancel();
      }
      const ev = JSON.parse(await chat.engine.step()); // a Promise on the GPU engine
      if (follower) {
        if (ev.type === "done") { post({ type: "chat-done", id: msg.id, follower: true, finish: ev.finish, peer: peers.stats() }); return; }
      } else if (ev.type === "token") post({ type: "chat-token", id: msg.id, text: ev.text, token: ev.id, index: ev.index });
      else if (ev.type === "prefill") post({ type: "chat-prefill", id: msg.id, done: ev.done, total: ev.total });
      else { post({ type: "chat-done", id: msg.id, finish: ev.finish, result: peers ? { ...ev.result, peer: peers.stats() } : ev.result, first_token_ms: ev.first_token_ms, cited: ev.cited, workers: peers ? peers.ranks : 1 }); return; }
      await yieldNow();
    }
  } finally {
    chatRun = null;
  }
}

async function chatSelftest(msg) {
  if (!wasmName) await loadWasm(false, cpuLevel(msg.backend || "cpu"));
  const r = JSON.parse(wasm_bindgen.chat_self_test());
  post({ type: "chat-selftest", wasm: wasmName, tier: r.tier, kernels: r.kernels });
}

// Test probes of the loaded engine (the golden test against llama.cpp). The GPU engine's
// forward passes return Promises.
async function chatProbe(msg) {
  if (!chat) throw new Error("the chat model is not loaded");
  const e = chat.engine;
  let result;
  if (msg.op === "prompt_tokens") result = Array.from(e.promptTokens(JSON.stringify(msg.messages)));
  else if (msg.op === "teacher_force") result = Array.from(await e.teacherForce(Uint32Array.from(msg.prompt), Uint32Array.from(msg.forced)));
  else if (msg.op === "first_logits") result = await e.firstLogits(Uint32Array.from(msg.prompt));
  else if (msg.op === "forced_margins") result = Array.from(e.forcedMargins(Uint32Array.from(msg.prompt), Uint32Array.from(msg.forced)));
  else if (msg.op === "reset") { e.reset(); result = true; } else throw new Error(`unknown probe ${msg.op}`);
  post({ type: "chat-probe", id: msg.id, result }, result instanceof Float32Array ? [result.buffer] : []);
}

self.onmessage = (ev) => {
  const msg = ev.data || {};
  if (msg.type === "cancel") {
    for (const id of msg.ids || []) cancelled.add(id);
    while (cancelled.size > 1024) cancelled.delete(cancelled.values().next().value);
    return;
  }
  if (msg.type === "chat-stop") {
    // Handled at once: the generation in progress ends at its next step; a queued one is skipped.
    if (chatRun && (msg.id == null || chatRun.id === msg.id)) chatRun.stop = true;
    if (msg.id != null && !(chatRun && chatRun.id === msg.id)) {
      chatCancelled.add(msg.id);
      while (chatCancelled.size > 1024) chatCancelled.delete(chatCancelled.values().next().value);
    }
    return;
  }
  queue = queue.then(async () => {
    try {
      if (msg.type === "init") await init(msg);
      else if (msg.type === "embed") await embed(msg);
      else if (msg.type === "selftest") await selftest(msg);
      else if (msg.type === "chat-init") await chatInit(msg);
      else if (msg.type === "chat-import") await chatImport(msg);
      else if (msg.type === "chat") await chatGenerate(msg);
      else if (msg.type === "chat-selftest") await chatSelftest(msg);
      else if (msg.type === "chat-probe") await chatProbe(msg);
      else if (msg.type === "chat-peers") setPeers(msg);
    } catch (e) {
      // A trap inside wasm leaves the instance unusable: the page restarts this worker.
      const trapped = e instanceof WebAssembly.RuntimeError;
      post({ type: "error", id: msg.id, op: msg.type, message: splitError(e).message, fatal: msg.type === "init" || trapped, chatLoaded: !!chat, refused: !!(e && e.refused) });
    }
  });
};
