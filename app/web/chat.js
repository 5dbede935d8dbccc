// Shoal assistant, page side: one dedicated chat worker (worker.js + chat_core.rs, the same best
// CPU build as the embedding pool, its own wasm instance), the model choice (SmolLM2 built in,
// GGUFs the user brings), conversations in IndexedDB, and `window.shoal.chat`.
//
//   shoalChat.subscribe(fn) → fn(state) on every change (the Assistant card); state()
//   shoalChat.send(text)    → the card's turn: streams into the current conversation, persisted
//   shoalChat.stop()  newChat()  open(id)  remove(id)  setRag(on)
//   shoalChat.load()        → Promise: the selected model is loaded (downloads it on first use)
//   shoalChat.selectModel(key)  importFile(file)  importUrl(url)  deleteModel(key)
//   shoalChat.chat({messages, max_tokens, temperature, top_p, top_k, repeat_penalty, seed, stop,
//                   onToken(text, {token, index}), signal})
//     → Promise<{text, prompt_tokens, tokens, prefill_tok_s, decode_tok_s, finish}>
//     (window.shoal.chat). One answer at a time; up to MAX_QUEUED wait, more are refused. Stop
//     (shoalChat.stopAll() = shoal.stopChat(), or the signal) ends the running answer at its
//     next token — it resolves with what was generated, finish "cancelled" — and rejects the
//     queued ones with AbortError.
//
// The model loads on first use (its first message, or picking it): 98 MB for SmolLM2, cached
// by the worker (Cache API) and verified chunk by chunk on every load.
//
// Both cores for one answer: when the page is cross-origin isolated (SharedArrayBuffer) and the
// device has ≥ 2 cores and more than 4 GB, a second chat worker (a follower) loads the same
// model and computes half of every forward pass, the halves swapped through a
// SharedArrayBuffer (worker.js makePeers; shoal-llm Exchange). `?chat_workers=1|2` overrides.
// Followers get the same chat-init and chat messages; if one fails, the page drops back to one
// worker (the answer in progress fails with the reason; the next runs alone).
"use strict";

const BUILTIN = { key: "builtin", id: "smollm2-135m-instruct", name: "SmolLM2-135M-Instruct", builtin: true, base: "models/smollm2-135m-instruct", size: 0 };
const DB_NAME = "shoal-chat";
const CONVERSATIONS = "conversations";
const MODELS = "models";
const PREFS_KEY = "shoal.chat";
const MAX_QUEUED = 8;
const UI_MAX_TOKENS = 512;
const RAG_K = 3;
const EMIT_MS = 50;
const CACHE_NAME = "shoal-weights-v1";

const params = new URLSearchParams(location.search);
const readPrefs = () => { try { return JSON.parse(localStorage.getItem(PREFS_KEY) || "{}"); } catch (_) { return {}; } };
const savePrefs = (p) => { try { localStorage.setItem(PREFS_KEY, JSON.stringify(p)); } catch (_) { /* private mode */ } };
const now = () => performance.now();

const state = {
  status: "idle", // idle | loading | ready | error
  message: "",
  model: { ...BUILTIN },
  models: [{ ...BUILTIN }],
  download: null, // {phase, loaded, total, netBytes, rate}
  info: null, // {name, arch, context, kernel, wasm, loadMs, bytes}
  generating: false,
  live: null, // {phase: "prefill"|"decode", done, total, tokens, tokS}
  rag: false,
  conversations: [], // [{id, title, updated, turns}]
  current: null, // {id, title, messages: [{role, content, sources?, stats?, error?, streaming?}]}
  error: null, // the last import / load error, shown in the card
  notice: null, // the worker's last notice (a bad download retried, storage full)
};
const listeners = new Set();
const snapshot = () => ({
  ...state,
  models: state.models.map((m) => ({ ...m })),
  conversations: state.conversations.slice(),
  current: state.current && { id: state.current.id ?? null, title: state.current.title, messages: state.current.messages.map((m) => ({ ...m, sources: m.sources && m.sources.map((s) => ({ ...s })) })) },
});
let emitTimer = null;
function emit() {
  clearTimeout(emitTimer);
  emitTimer = null;
  const s = snapshot();
  for (const f of listeners) { try { f(s); } catch (e) { console.error(e); } }
}
// Token-rate updates: at most one snapshot per EMIT_MS.
function emitSoon() { if (!emitTimer) emitTimer = setTimeout(emit, EMIT_MS); }
function set(patch) { Object.assign(state, patch); emit(); }

// ---------------------------------------------------------------- IndexedDB
let dbPromise = null;
function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => {
        req.result.createObjectStore(CONVERSATIONS, { keyPath: "id", autoIncrement: true });
        req.result.createObjectStore(MODELS, { keyPath: "key" });
      };
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return dbPromise;
}
async function idb(store, mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const t = d.transaction(store, mode);
    const r = fn(t.objectStore(store));
    t.oncomplete = () => resolve(r && r.result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("transaction aborted"));
  });
}
const summary = (c) => ({ id: c.id, title: c.title, updated: c.updated, turns: c.messages.filter((m) => m.role === "user").length });

async function saveConversation(c) {
  const rec = { title: c.title, created: c.created, updated: Date.now(), model: state.model.key, messages: c.messages };
  if (c.id != null) rec.id = c.id;
  try {
    c.id = await idb(CONVERSATIONS, "readwrite", (s) => s.put(rec));
    c.updated = rec.updated;
  } catch (e) {
    state.error = /quota/i.test(String(e && (e.name + e.message))) ? "Browser storage is full: this conversation could not be saved." : `This conversation could not be saved (${e.message || e}).`;
    return;
  }
  state.conversations = [summary(c), ...state.conversations.filter((x) => x.id !== c.id)];
}

async function loadStored() {
  try {
    const [convs, models] = await Promise.all([
      idb(CONVERSATIONS, "readonly", (s) => s.getAll()),
      idb(MODELS, "readonly", (s) => s.getAll()),
    ]);
    state.conversations = (convs || []).sort((a, b) => b.updated - a.updated).map(summary);
    state.models = [state.models[0], ...(models || []).sort((a, b) => a.added - b.added)];
  } catch (e) {
    state.error = `Saved conversations could not be read (${e.message || e}).`;
  }
  const prefs = readPrefs();
  state.rag = !!prefs.rag;
  const chosen = state.models.find((m) => m.key === prefs.model);
  if (chosen) state.model = chosen;
  emit();
}

// The built-in model's size, for the card (a small same-origin request; the weights wait).
async function builtinSize() {
  try {
    const r = await fetch(`${BUILTIN.base}/manifest.json`, { cache: "no-store" });
    if (!r.ok) throw new Error(`HTTP ${r.status}`);
    const m = await r.json();
    for (const x of [state.models[0], state.model]) if (x.key === BUILTIN.key) { x.size = m.total_size; x.available = true; }
  } catch (_) {
    for (const x of [state.models[0], state.model]) if (x.key === BUILTIN.key) x.available = false;
  }
  emit();
}

// ---------------------------------------------------------------- the worker
let worker = null;
let followers = []; // [{worker, ready}] — see chatWorkers()
let peerSab = null;
let loaded = null; // {key, promise}
let pendingLoad = null; // {resolve, reject}
const requests = new Map(); // id → request
const queue = [];
let running = null;
let nextId = 1;

function cpuBackend() {
  const b = params.get("backend");
  return b === "cpu-simd" || b === "cpu-scalar" ? b : "cpu";
}

// The assistant's engine: `?chat_backend=webgpu` runs it on the GPU (burn on WebGPU,
// shoal-llm-gpu: weights dequantized once onto the device, one token id read back per step),
// falling back to the CPU where the browser has no adapter; `?chat_precision=f16` halves its
// memory where the device has f16 shaders. The CPU engine is the default: it is measured
// (docs/benchmarks.md), the GPU's speed depends on a GPU this project has not measured yet.
function chatBackend() {
  return params.get("chat_backend") === "webgpu" ? "webgpu" : cpuBackend();
}
const chatPrecision = () => (params.get("chat_precision") === "f16" ? "f16" : undefined);

// How many chat workers split an answer: `?chat_workers=N` (1–2), else 2 where the page may
// share memory between workers (cross-origin isolated) and the device has ≥ 2 cores and room
// for a second copy of the model (> 4 GB). Measured on 2 cores: 1.5× the decode and 1.6× the
// prefill of one worker, for ≈ 0.6 GB more memory (docs/benchmarks.md).
function chatWorkers() {
  if (chatBackend() === "webgpu") return 1; // one GPU engine; the CPU workers' split is CPU-only
  const want = Math.floor(Number(params.get("chat_workers") || 0));
  const isolated = self.crossOriginIsolated && typeof SharedArrayBuffer === "function";
  if (!isolated) return 1;
  if (want >= 1) return Math.min(2, want);
  const cores = navigator.hardwareConcurrency || 1;
  const memory = navigator.deviceMemory || 8;
  return cores >= 2 && memory > 4 ? 2 : 1;
}

// Bytes of the SharedArrayBuffer worker.js expects for `ranks` workers (64 control words,
// then two slots of 2^18 floats per rank).
const peerBytes = (ranks) => 64 * 4 + ranks * 2 * (1 << 18) * 4;

function spawn() {
  const w = new Worker("./worker.js", { name: "shoal-chat" });
  w.onmessage = (ev) => { if (worker === w) onWorker(ev.data || {}); };
  w.onerror = (ev) => { ev.preventDefault?.(); if (worker === w) died(`the chat worker failed: ${ev.message || "unknown error"}`); };
  worker = w;
  const n = chatWorkers();
  if (n > 1) {
    peerSab = new SharedArrayBuffer(peerBytes(n));
    const split = params.get("chat_split") === "rows" ? "rows" : "heads";
    const wait_s = params.has("chat_peer_wait_s") ? Number(params.get("chat_peer_wait_s")) : undefined;
    w.postMessage({ type: "chat-peers", rank: 0, ranks: n, sab: peerSab, split, wait_s });
    for (let rank = 1; rank < n; rank++) {
      const f = { worker: new Worker("./worker.js", { name: `shoal-chat-${rank}` }), ready: false };
      f.worker.onmessage = (ev) => onFollower(f, ev.data || {});
      f.worker.onerror = (ev) => { ev.preventDefault?.(); dropFollowers(`a chat worker failed: ${ev.message || "unknown error"}`); };
      f.worker.postMessage({ type: "chat-peers", rank, ranks: n, sab: peerSab, split, wait_s });
      followers.push(f);
    }
  }
}

// A follower's messages: it loaded the model (the answer may start when all have), finished
// its part of an answer, or failed — then the leader computes alone from the next answer on.
function onFollower(f, m) {
  if (!followers.includes(f)) return;
  if (m.type === "chat-ready") { f.ready = true; maybeReady(); return; }
  // Its exchange counters for the answer (where a token's time goes; the LLM bench reads them).
  if (m.type === "chat-done" && m.peer && state.info) { state.info = { ...state.info, follower_peer: m.peer }; return; }
  if (m.type === "error") dropFollowers(`a chat worker failed: ${m.message}`);
}

function dropFollowers(reason) {
  if (!followers.length) return;
  console.warn(`shoal chat: ${reason}; answering with one worker`);
  if (peerSab) Atomics.store(new Int32Array(peerSab, 0, 1), 0, 1); // wake and stop the leader's waits
  for (const f of followers) { try { f.worker.terminate(); } catch (_) { /* gone */ } }
  followers = [];
  peerSab = null;
  worker?.postMessage({ type: "chat-peers", rank: 0, ranks: 1 });
  if (state.info) set({ info: { ...state.info, workers: 1 } });
  maybeReady();
}

// The leader said chat-ready: resolve the load once every follower has the model too.
let leaderReady = false;
function maybeReady() {
  if (!leaderReady || followers.some((f) => !f.ready)) return;
  if (state.status === "loading") set({ status: "ready", message: "", download: null });
  if (pendingLoad) { pendingLoad.resolve(true); pendingLoad = null; }
}

function toAll(msg) {
  worker.postMessage(msg);
  for (const f of followers) f.worker.postMessage(msg);
}

function died(reason) {
  terminate();
  if (pendingLoad) { pendingLoad.reject(new Error(reason)); pendingLoad = null; }
  if (running) { const r = running; running = null; requests.delete(r.id); r.reject(new Error(reason)); }
  set({ status: "error", message: reason, generating: false, live: null });
  pump();
}

function terminate() {
  try { worker?.terminate(); } catch (_) { /* gone */ }
  for (const f of followers) { try { f.worker.terminate(); } catch (_) { /* gone */ } }
  followers = [];
  peerSab = null;
  worker = null;
  loaded = null;
  leaderReady = false;
}

function onWorker(m) {
  switch (m.type) {
    case "chat-progress":
      state.download = { phase: m.phase, loaded: m.loaded, total: m.total, netBytes: m.netBytes || 0, rate: m.rate || 0, file: m.file };
      state.message = m.phase === "model" ? `Verifying and loading ${m.file || "the model"}…` : m.phase === "read" ? "Reading the model file…" : "Loading the model weights…";
      emitSoon();
      break;
    case "notice":
      state.notice = m.message;
      emit();
      break;
    case "chat-ready": {
      const info = { ...m.info, wasm: m.wasm, loadMs: m.timings?.totalMs ?? 0, timings: m.timings, bytes: m.bytes };
      if (m.imported) registerImported(m.model);
      const model = state.models.find((x) => x.key === m.model.key) || state.model;
      if (model.key === BUILTIN.key) model.size = m.model.size;
      state.model = model;
      loaded = { key: model.key, promise: loaded?.promise || Promise.resolve(true) };
      info.workers = 1 + followers.length;
      leaderReady = true;
      // A model the leader just imported: the followers load it from the cache it wrote.
      if (m.imported) for (const f of followers) { f.ready = false; f.worker.postMessage({ type: "chat-init", model: { kind: "byo", key: m.model.key }, backend: cpuBackend() }); }
      state.info = info;
      if (followers.some((f) => !f.ready)) { emit(); break; }
      set({ status: "ready", message: "", download: null, info });
      if (pendingLoad) { pendingLoad.resolve(true); pendingLoad = null; }
      break;
    }
    case "chat-start": case "chat-prefill": case "chat-token": case "chat-done": {
      const r = requests.get(m.id);
      if (r) r.event(m);
      break;
    }
    case "error": {
      if (m.fatal) { died(m.message); break; }
      if (m.op === "chat-init" || m.op === "chat-import") {
        if (m.op === "chat-import" && m.chatLoaded) {
          // Refused on its header: the model loaded before is still there.
          set({ status: "ready", message: "", download: null, error: m.message });
        } else {
          loaded = null;
          set({ status: m.op === "chat-import" ? "idle" : "error", message: m.op === "chat-import" ? "" : m.message, download: null, error: m.message });
        }
        if (pendingLoad) { pendingLoad.reject(new Error(m.message)); pendingLoad = null; }
        break;
      }
      // An answer that failed in the leader while followers shared it: they may be stuck
      // waiting on it (or it on them), so the next answers run on the leader alone.
      // A request refused at its start (bad input) ran nowhere: the group stays.
      if (m.op === "chat" && followers.length && !m.refused) dropFollowers(`the answer failed: ${m.message}`);
      const r = m.id != null && requests.get(m.id);
      if (r) { requests.delete(m.id); r.fail(new Error(m.message)); }
      break;
    }
  }
}

// Load the selected model (once; later calls share the promise).
function load() {
  const key = state.model.key;
  if (loaded && loaded.key === key) return loaded.promise;
  if (pendingLoad) return loaded.promise;
  if (!worker) spawn();
  const promise = new Promise((resolve, reject) => { pendingLoad = { resolve, reject }; });
  promise.catch(() => {});
  loaded = { key, promise };
  set({ status: "loading", message: `Loading ${state.model.name}…`, error: null, info: null });
  const model = state.model.builtin ? { kind: "builtin", base: BUILTIN.base } : { kind: "byo", key };
  leaderReady = false;
  for (const f of followers) f.ready = false;
  toAll({ type: "chat-init", model, backend: chatBackend(), precision: chatPrecision() });
  return promise;
}

// A GGUF the user brings, from a File or a same-origin URL.
function importModel(what) {
  if (state.generating) return Promise.reject(new Error("Stop the current answer first."));
  if (pendingLoad) return Promise.reject(new Error("A model is loading; wait for it."));
  if (!worker) spawn();
  const promise = new Promise((resolve, reject) => { pendingLoad = { resolve, reject }; });
  promise.catch(() => {});
  const prev = loaded;
  loaded = { key: "(importing)", promise };
  set({ status: "loading", message: `Checking ${what.file ? what.file.name : what.url}…`, error: null, download: null });
  leaderReady = false;
  worker.postMessage({ type: "chat-import", ...what, backend: chatBackend(), precision: chatPrecision() });
  return promise.then(() => state.model, (e) => {
    if (state.status === "ready" && prev) loaded = prev;
    throw e;
  });
}

function registerImported(m) {
  const rec = { key: m.key, id: m.id, name: m.name || m.id, size: m.size, arch: m.arch, types: m.types, source: m.source, stored: m.stored, builtin: false, added: Date.now() };
  state.models = [...state.models.filter((x) => x.key !== rec.key), rec];
  state.model = rec;
  const p = readPrefs();
  p.model = rec.key;
  savePrefs(p);
  if (rec.stored) idb(MODELS, "readwrite", (s) => s.put(rec)).catch((e) => { state.error = `The model list could not be saved (${e.message || e}).`; emit(); });
}

async function selectModel(key) {
  const m = state.models.find((x) => x.key === key);
  if (!m) throw new Error(`no model ${key}`);
  if (state.generating) throw new Error("Stop the current answer first.");
  const p = readPrefs();
  p.model = m.key;
  savePrefs(p);
  if (state.model.key === m.key && loaded) return load();
  // Another model: a fresh worker (wasm memory never shrinks), loaded now.
  terminate();
  if (pendingLoad) { pendingLoad.reject(new Error("another model was picked")); pendingLoad = null; }
  set({ model: m, status: "idle", info: null, error: null });
  return load();
}

async function deleteModel(key) {
  if (key === BUILTIN.key) throw new Error("the built-in model cannot be deleted");
  await idb(MODELS, "readwrite", (s) => s.delete(key));
  try {
    const cache = await caches.open(CACHE_NAME);
    const prefix = new URL(`chat-models/${key}/`, location.href).href;
    for (const req of await cache.keys()) if (req.url.startsWith(prefix)) await cache.delete(req);
  } catch (_) { /* no cache */ }
  state.models = state.models.filter((m) => m.key !== key);
  if (state.model.key === key) {
    terminate();
    state.model = state.models[0];
    state.status = "idle";
    state.info = null;
    const p = readPrefs();
    delete p.model;
    savePrefs(p);
  }
  emit();
}

// ---------------------------------------------------------------- answers
function abortError() {
  const e = new Error("the answer was stopped before it started");
  e.name = "AbortError";
  return e;
}

// Queue one request: resolves to the worker's chat-done message.
function submit(request, { onToken, onEvent, signal } = {}) {
  if (queue.length >= MAX_QUEUED) return Promise.reject(new Error(`the assistant is busy (${MAX_QUEUED} answers already waiting)`));
  if (signal?.aborted) return Promise.reject(abortError());
  return new Promise((resolve, reject) => {
    const r = {
      id: nextId++, request, stopped: false,
      event(m) {
        if (m.type === "chat-token") { try { onToken?.(m.text, { token: m.token, index: m.index }); } catch (e) { console.error(e); } }
        onEvent?.(m);
        if (m.type === "chat-done") { requests.delete(r.id); finish(r); resolve(m); }
      },
      fail(e) { finish(r); reject(e); },
      reject(e) { finish(r); reject(e); },
    };
    if (signal) signal.addEventListener("abort", () => stopOne(r), { once: true });
    queue.push(r);
    pump();
  });
}

function finish(r) {
  if (running === r) { running = null; state.generating = false; state.live = null; emit(); }
  const i = queue.indexOf(r);
  if (i >= 0) queue.splice(i, 1);
  pump();
}

async function pump() {
  if (running || !queue.length) return;
  const r = queue.shift();
  running = r;
  set({ generating: true, live: { phase: "loading", done: 0, total: 0, tokens: 0, tokS: 0 } });
  try {
    await load();
  } catch (e) {
    running = null;
    state.generating = false;
    state.live = null;
    r.reject(new Error(`the chat model could not be loaded: ${e.message || e}`));
    return;
  }
  if (r.stopped) { running = null; state.generating = false; state.live = null; emit(); r.reject(abortError()); pump(); return; }
  requests.set(r.id, r);
  toAll({ type: "chat", id: r.id, request: r.request });
}

function stopOne(r) {
  r.stopped = true;
  if (running === r) {
    if (requests.has(r.id)) worker?.postMessage({ type: "chat-stop", id: r.id });
  } else {
    const i = queue.indexOf(r);
    if (i >= 0) { queue.splice(i, 1); r.reject(abortError()); }
  }
}

function stopAll() {
  for (const r of queue.slice()) stopOne(r);
  if (running) stopOne(running);
}

// OpenAI message content may be a string or [{type: "text", text}].
const contentText = (c) => (Array.isArray(c) ? c.map((p) => (p && typeof p === "object" ? p.text ?? "" : String(p))).join("") : String(c ?? ""));

// window.shoal.chat: the CLI's --json object (+ finish).
async function chat(opts = {}) {
  const { messages, onToken, signal } = opts || {};
  if (!Array.isArray(messages) || !messages.length) throw new TypeError("shoal.chat: messages must be a non-empty array of {role, content}");
  const request = { messages: messages.map((m) => ({ role: String(m?.role ?? ""), content: contentText(m?.content) })) };
  for (const k of ["max_tokens", "temperature", "top_p", "top_k", "repeat_penalty", "seed", "stop"]) {
    if (opts[k] !== undefined && opts[k] !== null) request[k] = opts[k];
  }
  const live = trackLive();
  const m = await submit(request, { onToken, onEvent: live, signal });
  return { ...m.result, finish: m.finish };
}

// Live prefill progress and tokens/s of the running answer, for the card.
function trackLive() {
  let tFirst = 0, tokens = 0;
  return (m) => {
    if (m.type === "chat-start") state.live = { phase: "prefill", done: 0, total: m.promptTokens, tokens: 0, tokS: 0 };
    else if (m.type === "chat-prefill") state.live = { ...state.live, phase: "prefill", done: m.done, total: m.total };
    else if (m.type === "chat-token") {
      tokens++;
      const t = now();
      if (tokens === 1) tFirst = t;
      state.live = { ...state.live, phase: "decode", tokens, tokS: tokens > 1 ? (tokens - 1) / ((t - tFirst) / 1000) : 0 };
    } else return;
    emitSoon();
  };
}

// ---------------------------------------------------------------- the card's conversation
// Whether `answer` repeats QUOTE_WORDS consecutive words of `source` (case and punctuation
// aside): small models often quote the passage they used instead of writing "[1]".
const QUOTE_WORDS = 8;
function quotes(answer, source) {
  const words = (t) => String(t).toLowerCase().match(/[\p{L}\p{N}]+/gu) || [];
  const a = words(answer);
  if (a.length < QUOTE_WORDS) return false;
  const spans = new Set();
  const s = words(source);
  for (let i = 0; i + QUOTE_WORDS <= s.length; i++) spans.add(s.slice(i, i + QUOTE_WORDS).join(" "));
  for (let i = 0; i + QUOTE_WORDS <= a.length; i++) if (spans.has(a.slice(i, i + QUOTE_WORDS).join(" "))) return true;
  return false;
}

function newConversation() {
  return { id: null, title: "New chat", created: Date.now(), messages: [] };
}

async function send(text) {
  const question = String(text || "").trim();
  if (!question) return;
  if (state.generating) throw new Error("Wait for the answer, or stop it.");
  const conv = state.current || (state.current = newConversation());
  if (conv.id == null) conv.title = question.length > 60 ? `${question.slice(0, 57)}…` : question;
  const history = conv.messages.filter((m) => !m.error && m.content).map((m) => ({ role: m.role, content: m.content }));
  conv.messages.push({ role: "user", content: question, at: Date.now() });
  const answer = { role: "assistant", content: "", streaming: true, at: Date.now() };
  conv.messages.push(answer);
  state.generating = true;
  emit();
  await saveConversation(conv);
  let request;
  try {
    if (state.rag) {
      const shoal = window.shoal;
      if (!shoal.documents().length) throw new Error("Add some documents first: “Answer from my documents” searches them.");
      await shoal.ready;
      const hits = await shoal.search(question, RAG_K);
      answer.sources = hits.map((h) => ({ label: h.source, text: h.text, score: h.score, cited: false }));
      request = { rag: { question, sources: answer.sources.map((s) => ({ label: s.label, text: s.text })) } };
    } else {
      request = { messages: [...history, { role: "user", content: question }] };
    }
    request.max_tokens = UI_MAX_TOKENS;
    const onEvent = trackLive();
    const m = await submit(request, {
      onToken: (t) => { answer.content += t; emitSoon(); },
      onEvent,
    });
    answer.content = m.result.text;
    answer.finish = m.finish;
    answer.stats = {
      promptTokens: m.result.prompt_tokens.length, tokens: m.result.tokens.length,
      prefillTokS: m.result.prefill_tok_s, decodeTokS: m.result.decode_tok_s, firstTokenMs: m.first_token_ms,
    };
    if (answer.sources) {
      for (const n of m.cited || []) if (answer.sources[n - 1]) answer.sources[n - 1].cited = true;
      for (const src of answer.sources) src.quoted = quotes(answer.content, src.text);
    }
  } catch (e) {
    answer.error = e.message || String(e);
    state.generating = !!running;
  } finally {
    answer.streaming = false;
    if (!removed.has(conv.id)) await saveConversation(conv); // unless deleted meanwhile
    emit();
  }
}

async function open(id) {
  if (state.generating) throw new Error("Stop the current answer first.");
  const c = await idb(CONVERSATIONS, "readonly", (s) => s.get(id));
  if (!c) throw new Error("that conversation is gone");
  // An answer that was streaming when the tab closed.
  for (const m of c.messages) if (m.streaming) { m.streaming = false; if (!m.content) m.error = "interrupted (the tab was closed)"; }
  set({ current: { id: c.id, title: c.title, created: c.created, messages: c.messages } });
}

// (Never throws: the card calls it directly.)
function newChat() {
  if (state.generating) { set({ error: "Stop the current answer first." }); return; }
  set({ current: null, error: null });
}

const removed = new Set(); // conversations deleted while their answer was streaming
async function remove(id) {
  removed.add(id);
  await idb(CONVERSATIONS, "readwrite", (s) => s.delete(id));
  state.conversations = state.conversations.filter((c) => c.id !== id);
  if (state.current && state.current.id === id) {
    if (state.generating) stopAll();
    state.current = null;
  }
  emit();
}

function setRag(on) {
  state.rag = !!on;
  const p = readPrefs();
  p.rag = state.rag;
  savePrefs(p);
  emit();
}

const shoalChat = {
  state: snapshot,
  subscribe(fn) { listeners.add(fn); fn(snapshot()); return () => listeners.delete(fn); },
  load,
  send,
  stop: stopAll,
  stopAll,
  newChat,
  open,
  remove,
  setRag,
  selectModel,
  importFile: (file) => importModel({ file }),
  importUrl: (url) => importModel({ url: String(url) }),
  deleteModel,
  chat,
  // Test hooks: the chat worker crashes (as a trap would); the next answer starts a fresh one.
  // killFollower: a follower dies, reporting it (as a trap's error message does) or silently
  // (a killed process: the leader gives up on it after its wait limit).
  _test: {
    kill: () => { if (worker) died("terminated"); },
    killFollower: (silent) => {
      const f = followers[0];
      if (!f) return false;
      f.worker.terminate();
      if (!silent) onFollower(f, { type: "error", message: "killed by a test" });
      return true;
    },
  },
};
window.shoalChat = shoalChat;
export default shoalChat;

loadStored();
builtinSize();
