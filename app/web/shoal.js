// Shoal page core: owns the model worker pool (pool.js), the document store (IndexedDB) and
// search, and exposes them as `window.shoal` for the Leptos UI, other pages and tests. Then boots
// the UI wasm, which also carries the job engine the pool shards with.
//
//   shoal.ready                → Promise (resolves when the model is loaded; replaced on restart)
//   shoal.backend()            → "webgpu" | "cpu" (null until ready)
//   shoal.embed(texts, {signal}) → Promise<number[][]> (input order; sharded over the pool)
//   shoal.search(query, k)     → Promise<{text, score, source, docId}[]>
//   shoal.addDocuments([{name, text}]) → Promise<ids>;  shoal.deleteDocument(id);  shoal.documents()
//   shoal.cancel()             → cancels running jobs (their promises reject with AbortError)
//   shoal.configure({backend, profile, workers, precision}) → restarts the pool with new settings
//                                (precision "exact": f32 arithmetic on the CPU; "fast": integer kernel)
//   shoal.subscribe(fn)        → fn(state) on every change; returns an unsubscribe function
//   shoal.poolReady()          → Promise: every pool worker has its model
//   shoal.embedFloat(texts)    → Promise<Float32Array[]>;  shoal.app() → Promise<page wasm module>
//   shoal.setCircle(c)         → circle.js: documents go through the circle when members are up
//   shoal.runOn(worker, texts) → Promise<{data: Float32Array, dim}>: one run on pool worker
//                                `worker` (null: any), no job (the circle's engine owns those)
//   shoal.watchWorkers(fn)     → fn("up" | "down", id, rate) for pool workers, now and on every
//                                change (pool restarts included); returns an unsubscribe function
//   shoal.chat({messages, max_tokens, temperature, top_p, seed, onToken, signal})
//                              → Promise<{text, prompt_tokens, tokens, prefill_tok_s, decode_tok_s, finish}>
//   shoal.stopChat()           → stops the running answer (chat.js: the assistant's own worker)
//   shoal.chatInfo()           → the loaded chat model: {name, arch, context, kernel, wasm, loadMs}
import { Pool, defaultPoolSize } from "./pool.js";
import "./circle.js"; // window.shoalCircle, before the UI boots
import shoalChat from "./chat.js"; // window.shoalChat: the assistant (Assistant card)

const MODEL_BASE = "models/all-minilm-l6-v2";
const DB_NAME = "shoal";
const STORE = "docs";
const PREFS_KEY = "shoal.prefs";

// The UI wasm (Leptos + the job engine). Booted at the end of this module, once window.shoal exists.
let appResolve, appReject;
const appModule = new Promise((res, rej) => { appResolve = res; appReject = rej; });
appModule.catch(() => {});

const params = new URLSearchParams(location.search);
const readPrefs = () => { try { return JSON.parse(localStorage.getItem(PREFS_KEY) || "{}"); } catch (_) { return {}; } };
const savePrefs = (p) => { try { localStorage.setItem(PREFS_KEY, JSON.stringify(p)); } catch (_) { /* private mode */ } };

// Small devices get the light profile (f16 weights: half the download) unless told otherwise.
function autoProfile() {
  const mem = navigator.deviceMemory;
  const small = (typeof mem === "number" && mem <= 4) ||
    (matchMedia("(pointer: coarse)").matches && Math.min(screen.width, screen.height) < 600);
  return small ? "f16" : "f32";
}

const state = {
  status: "starting", // starting | loading | ready | error
  message: "Starting…",
  backend: null,
  requestedBackend: "auto",
  profile: "f32",
  profileAuto: true,
  precision: "fast", // "fast": integer dense layers on the CPU (f32 accuracy bound) | "exact": f32 arithmetic
  webgpu: !!navigator.gpu,
  download: null, // {loaded, total, netBytes, rate, phase}
  job: null, // {label, done, total}
  pool: null, // pool.js snapshot: workers, live per-member progress of the current job
  workers: 0,
  notices: [],
  docs: [],
  timings: null,
  bytes: null,
};
const listeners = new Set();
const snapshot = () => ({ ...state, docs: state.docs.map(({ id, name, chars, added, passages }) => ({ id, name, chars, added, passages: passages.length })) });
function emit() { const s = snapshot(); for (const f of listeners) { try { f(s); } catch (e) { console.error(e); } } }
function set(patch) { Object.assign(state, patch); emit(); }
function addNotice(level, message) {
  state.notices = [...state.notices.slice(-4), { level, message, at: Date.now() }];
  emit();
}

// ---------------------------------------------------------------- IndexedDB
let dbPromise = null;
function db() {
  if (!dbPromise) {
    dbPromise = new Promise((resolve, reject) => {
      const req = indexedDB.open(DB_NAME, 1);
      req.onupgradeneeded = () => req.result.createObjectStore(STORE, { keyPath: "id", autoIncrement: true });
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  }
  return dbPromise;
}
async function tx(mode, fn) {
  const d = await db();
  return new Promise((resolve, reject) => {
    const t = d.transaction(STORE, mode);
    const store = t.objectStore(STORE);
    let result;
    Promise.resolve(fn(store)).then((r) => { result = r; });
    t.oncomplete = () => resolve(result);
    t.onerror = () => reject(t.error);
    t.onabort = () => reject(t.error || new Error("transaction aborted"));
  });
}
const reqP = (r) => new Promise((res, rej) => { r.onsuccess = () => res(r.result); r.onerror = () => rej(r.error); });
function storageError(e) {
  if (e && (e.name === "QuotaExceededError" || /quota/i.test(String(e.message)))) {
    return new Error("Browser storage is full: this document could not be saved. Delete some documents or free space for this site in the browser settings.");
  }
  return e instanceof Error ? e : new Error(String(e));
}
async function loadDocs() {
  try {
    const docs = await tx("readonly", (s) => reqP(s.getAll()));
    state.docs = docs || [];
    emit();
  } catch (e) {
    addNotice("warn", `Saved documents could not be read (${e.message || e}).`);
  }
}

// ---------------------------------------------------------------- worker pool
let pool = null;
let readyPromise = null;
const workerListeners = new Set();
function workerEvent(kind, id, rate) {
  for (const f of workerListeners) { try { f(kind, id, rate); } catch (e) { console.error(e); } }
}

function workerCount(prefs) {
  const n = parseInt(params.get("workers") || prefs.workers || "", 10);
  return Number.isFinite(n) && n >= 1 ? Math.min(n, 16) : defaultPoolSize();
}

function startWorker() {
  if (pool) pool.terminate();
  const prefs = readPrefs();
  const backend = params.get("backend") || prefs.backend || "auto";
  const profileChoice = params.get("profile") || prefs.profile || "auto";
  const profile = profileChoice === "auto" ? autoProfile() : profileChoice;
  const size = workerCount(prefs);
  const precision = (params.get("precision") || prefs.precision) === "exact" ? "exact" : "fast";
  set({ status: "loading", message: "Loading the model…", backend: null, requestedBackend: backend, profile, profileAuto: profileChoice === "auto", precision, download: null, workers: size, pool: null });
  let p = null; // the callbacks below may run inside the constructor
  p = new Pool({
    size, base: MODEL_BASE, variant: profile, backend, app: appModule,
    // "exact" (?precision=exact or the settings): f32 arithmetic in the CPU engine (default:
    // integer dense layers, held to the f32 accuracy bound).
    precision: precision === "exact" ? "exact" : undefined,
    onProgress: (m) => { if (p && pool === p) set({ download: m, message: m.phase === "model" ? `Building the model (${m.file})…` : "Loading the model weights…" }); },
    onNotice: (level, message) => { if (p && pool === p) addNotice(level, message); },
    onChange: () => { if (p && pool === p) set({ pool: p.snapshot() }); },
    onWorker: (kind, id, rate) => { if (p && pool === p) workerEvent(kind, id, rate); },
  });
  pool = p;
  readyPromise = p.ready.then(
    () => { if (p && pool === p) set({ status: "ready", backend: p.backend, message: "Ready", timings: p.timings, bytes: p.bytes, workers: p.size }); return true; },
    (e) => { if (p && pool === p) set({ status: "error", message: `The model could not be loaded: ${e.message || e}` }); throw e; },
  );
  readyPromise.catch(() => {}); // observed via state too
}

// Embed through the pool; resolves to Float32Array views in input order.
async function embedRaw(texts, opts) {
  await readyPromise;
  return pool.embed(texts, opts);
}

// circle.js registers itself here: documents are embedded across the circle when other members
// are up (the tab's own share still runs on this pool).
let circle = null;
const CIRCLE_MIN_TEXTS = 16;
async function embedDocs(texts, opts) {
  if (circle && circle.upPeers() > 0 && texts.length >= CIRCLE_MIN_TEXTS) {
    try {
      return await circle.embed(texts, opts);
    } catch (e) {
      if (e && e.name === "AbortError") throw e;
      addNotice("warn", `The circle could not take this job (${e.message || e}); embedding here.`);
    }
  }
  return embedRaw(texts, opts);
}

// ---------------------------------------------------------------- documents
// Split a document into passages of a few hundred characters (MiniLM reads ≤256 tokens).
function passages(text) {
  const MAX = 700;
  const paras = text.replace(/\r\n?/g, "\n").split(/\n\s*\n/).map((p) => p.replace(/^#{1,6}\s+/gm, "").replace(/\s+/g, " ").trim()).filter(Boolean);
  const out = [];
  let cur = "";
  const pushLong = (p) => {
    const sentences = p.match(/[^.!?。！？]+[.!?。！？]*\s*/g) || [p];
    let s = "";
    for (const t of sentences) {
      if (s && (s + t).length > MAX) { out.push(s.trim()); s = ""; }
      if (t.length > MAX) { for (let i = 0; i < t.length; i += MAX) out.push(t.slice(i, i + MAX).trim()); continue; }
      s += t;
    }
    if (s.trim()) out.push(s.trim());
  };
  for (const p of paras) {
    if (p.length > MAX) { if (cur) { out.push(cur); cur = ""; } pushLong(p); continue; }
    if (cur && cur.length + p.length + 1 > MAX) { out.push(cur); cur = ""; }
    cur = cur ? `${cur}\n${p}` : p;
  }
  if (cur) out.push(cur);
  return out;
}

let jobChain = Promise.resolve();
async function addDocuments(docs) {
  const run = async () => {
    const items = (docs || []).map((d) => ({ name: String(d.name || "Untitled").slice(0, 200), text: String(d.text || "") })).filter((d) => d.text.trim());
    if (!items.length) return [];
    const parts = items.map((d) => passages(d.text));
    const all = parts.flat();
    set({ job: { label: `Embedding ${items.length} document${items.length > 1 ? "s" : ""}`, done: 0, total: all.length } });
    try {
      const vecs = await embedDocs(all, {
        onProgress: (done) => { if (state.job && done !== state.job.done) set({ job: { ...state.job, done } }); },
      });
      const ids = [];
      let k = 0;
      for (let d = 0; d < items.length; d++) {
        const rec = {
          name: items[d].name, text: items[d].text, chars: items[d].text.length, added: Date.now(),
          model: "all-MiniLM-L6-v2", profile: state.profile,
          passages: parts[d].map((t) => ({ text: t, vector: new Float32Array(vecs[k++]) })),
        };
        try {
          rec.id = await tx("readwrite", (s) => reqP(s.add(rec)));
        } catch (e) {
          throw storageError(e);
        }
        state.docs.push(rec);
        ids.push(rec.id);
      }
      return ids;
    } finally {
      set({ job: null });
    }
  };
  const p = jobChain.then(run);
  jobChain = p.catch(() => {});
  return p;
}

async function deleteDocument(id) {
  await tx("readwrite", (s) => reqP(s.delete(id)));
  state.docs = state.docs.filter((d) => d.id !== id);
  emit();
}

async function search(query, k = 5) {
  const q = String(query || "").trim();
  if (!q) return [];
  const [qv] = await embedRaw([q]);
  const hits = [];
  for (const d of state.docs) {
    for (const p of d.passages) {
      let s = 0;
      const v = p.vector;
      for (let i = 0; i < v.length; i++) s += v[i] * qv[i];
      hits.push({ text: p.text, score: s, source: d.name, docId: d.id });
    }
  }
  hits.sort((a, b) => b.score - a.score);
  return hits.slice(0, Math.max(1, k | 0));
}

const shoal = {
  get ready() { return readyPromise; },
  backend: () => state.backend,
  profile: () => state.profile,
  precision: () => state.precision,
  state: snapshot,
  embed: async (texts, opts = {}) => (await embedRaw(Array.from(texts, String), { signal: opts.signal })).map((v) => Array.from(v)),
  // The same as Float32Array views (no copies): what circle members compute with.
  embedFloat: (texts, opts = {}) => embedRaw(Array.from(texts, String), { signal: opts.signal }),
  // The page wasm's module (circle links, `CircleMember`).
  app: () => appModule,
  setCircle: (c) => { circle = c; },
  runOn: (worker, texts) => (pool ? pool.run(worker, Array.from(texts, String)) : Promise.reject(new Error("no model pool"))),
  watchWorkers(fn) {
    workerListeners.add(fn);
    if (pool) for (const [id, rate] of pool.readyWorkers()) fn("up", id, rate);
    return () => workerListeners.delete(fn);
  },
  cancel: () => pool && pool.cancelAll(),
  poolReady: () => pool.allReady,
  workers: () => (pool ? pool.size : 0),
  search,
  addDocuments,
  deleteDocument,
  documents: () => snapshot().docs,
  passages,
  // The sample documents shipped with the app (public/samples, same origin).
  async addSamples() {
    const names = ["passport.md", "sourdough.md", "networking.md", "garden.txt", "finance.txt"];
    const docs = [];
    for (const n of names) {
      const r = await fetch(`samples/${n}`);
      if (r.ok) docs.push({ name: n, text: await r.text() });
    }
    return addDocuments(docs);
  },
  configure({ backend, profile, workers, precision } = {}) {
    const p = readPrefs();
    if (backend) p.backend = backend;
    if (profile) p.profile = profile;
    if (precision) p.precision = precision === "exact" ? "exact" : undefined;
    if (workers !== undefined) p.workers = workers === "auto" || !workers ? undefined : String(workers | 0);
    savePrefs(p);
    params.delete("backend");
    params.delete("profile");
    params.delete("workers");
    params.delete("precision");
    startWorker();
    return readyPromise;
  },
  subscribe(fn) { listeners.add(fn); fn(snapshot()); return () => listeners.delete(fn); },
  // The assistant: an answer from the chat model (OpenAI message shape), streamed to onToken.
  chat: (opts) => shoalChat.chat(opts),
  stopChat: () => shoalChat.stopAll(),
  // The loaded chat model: {name, arch, context, kernel, wasm, loadMs, …} (null before it loads).
  chatInfo: () => shoalChat.state().info,
  // Test hooks: kill pool worker i as a crash would.
  _test: { terminateWorker: (i) => pool.terminateWorker(i), holdAfter: (i, n) => pool.holdAfter(i, n), held: (i) => pool.held(i) },
};
window.shoal = shoal;
dispatchEvent(new Event("shoal-ready"));

startWorker();
loadDocs();

// Boot the Leptos UI wasm (no model code; it carries the job engine the pool shards with).
try {
  const m = await import("./shoal-app.js");
  await m.default({ module_or_path: "./shoal-app_bg.wasm" });
  appResolve(m);
} catch (e) {
  appReject(e);
  console.error("UI failed to start", e);
  document.body.insertAdjacentText("beforeend", `The interface failed to load: ${e.message || e}`);
}
