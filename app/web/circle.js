// Circles: this tab shares embedding jobs with the user's other tabs, devices and native nodes
// over WebRTC, sealed end to end. The protocol, the job engine and the WebRTC driver are Rust
// (node-lite, in the page wasm as `CircleMember`): one engine per job, whose members are the
// peers and this tab's model workers. This module joins/leaves, calibrates, tells the engine
// which pool workers are up, runs the shards it hands out on them, and keeps the UI's state.
//
//   shoalCircle.create()        → link (new random key K; joins it; the key lives only in #c=)
//   shoalCircle.join(link)      → joins (also done at load when the URL has #c=…)
//   shoalCircle.leave()
//   shoalCircle.embed(texts, {onProgress}) → Promise<Float32Array[]> in input order, computed
//                                 by every member that is up (this tab included)
//   shoalCircle.stats()         → Promise<stats> (peers with bytes, shard timings)
//   shoalCircle.state()  /  shoalCircle.subscribe(fn) → unsubscribe
//
// The relay is the page's origin (`/v1/signal`) unless `?relay=ws://…` names others (comma
// separated). The circle key never leaves the fragment: it is not sent to any server.

const CAL_TEXTS = [
  "A short calibration sentence about rivers.",
  "Semantic search finds passages by meaning rather than by exact words.",
  "The quick brown fox jumps over the lazy dog.",
  "Sourdough bread needs a lively starter and patience.",
];
const PLOT_POINTS = 60;

const state = {
  status: "off", // off | joining | connected | error
  message: "",
  link: null,
  id: null,
  relay: null,
  peers: [], // {id, short, name, backend, rate, state}
  job: null, // {total, done, started, members: [progress], rates: [texts/s samples]}
  last: null, // last finished job: {total, ms, members}
  rejected: 0,
  receipts: 0, // receipts countersigned by this tab
  anchored: 0, // of them, promised by the relay's log
  holding: 0, // test hook: shards received and deliberately never answered
  served: { started: 0, done: 0, failed: 0 }, // shards other members asked this tab to compute
};
// Test hook (`shoalCircle._test.hold()`): from now on, shards other members send this tab are
// received and never answered, so a test can close the tab while it provably owes work.
let testHold = false;
const listeners = new Set();
const snapshot = () => JSON.parse(JSON.stringify(state));
function emit() { const s = snapshot(); for (const f of listeners) { try { f(s); } catch (e) { console.error(e); } } }
function set(patch) { Object.assign(state, patch); emit(); }

let member = null;
let unwatch = null; // stops telling the member about pool workers
let job = null; // {resolve, reject, onProgress, total}
let statsWaiter = [];
let joinSeq = 0;

function relays() {
  const q = new URLSearchParams(location.search).get("relay");
  if (q) return q.split(",").map((s) => s.trim()).filter(Boolean);
  const proto = location.protocol === "https:" ? "wss:" : "ws:";
  return [`${proto}//${location.host}/v1/signal`];
}

function deviceName() {
  const ua = navigator.userAgentData;
  const plat = (ua && ua.platform) || navigator.platform || "browser";
  const mobile = (ua && ua.mobile) || /Mobi|Android/i.test(navigator.userAgent);
  return `${mobile ? "phone" : "tab"} · ${plat}`.slice(0, 48);
}

async function calibrate(shoal) {
  await shoal.embedFloat(CAL_TEXTS.slice(0, 1)); // warm-up
  const texts = Array.from({ length: 16 }, (_, i) => CAL_TEXTS[i % CAL_TEXTS.length] + " " + i);
  const t0 = performance.now();
  await shoal.embedFloat(texts);
  return texts.length / Math.max(1e-3, (performance.now() - t0) / 1000);
}

function upsertPeer(p) {
  const peers = state.peers.filter((x) => x.id !== p.id);
  peers.push(p);
  peers.sort((a, b) => a.id.localeCompare(b.id));
  set({ peers });
}

function onEvent(ev) {
  switch (ev.type) {
    case "connected":
      set({ status: "connected", message: `Signaling through ${ev.url}` });
      break;
    case "peerUp":
      upsertPeer({ id: ev.id, short: ev.short, name: ev.name, backend: ev.backend, rate: ev.rate, state: "up" });
      break;
    case "peerDown":
      set({ peers: state.peers.map((p) => (p.id === ev.id ? { ...p, state: "down" } : p)) });
      break;
    case "rejected":
      set({ rejected: state.rejected + 1, message: `Refused input from ${ev.id.slice(0, 8)}: ${ev.reason}` });
      break;
    case "progress": {
      if (!state.job) break;
      const members = state.job.members.filter((m) => m.id !== ev.id).concat([ev]);
      members.sort((a, b) => (a.isSelf === b.isSelf ? a.id.localeCompare(b.id) : a.isSelf ? -1 : 1));
      const now = performance.now();
      const done = ev.jobTextsDone;
      const rates = state.job.rates.slice();
      const last = state.job.lastSample;
      if (!last || now - last.t >= 250) {
        if (last) rates.push(((done - last.done) * 1000) / Math.max(1, now - last.t));
        if (rates.length > PLOT_POINTS) rates.shift();
        set({ job: { ...state.job, members, done, rates, lastSample: { t: now, done } } });
      } else {
        set({ job: { ...state.job, members, done } });
      }
      if (job && job.onProgress) { try { job.onProgress(done, ev.jobTextsTotal); } catch (_) { /* caller's */ } }
      break;
    }
    case "done": {
      const j = job;
      job = null;
      const ms = state.job ? performance.now() - state.job.started : 0;
      set({ last: { total: state.job ? state.job.total : 0, ms, members: ev.members }, job: null });
      if (j) {
        const out = [];
        for (let i = 0; i < ev.data.length; i += ev.dim) out.push(ev.data.subarray(i, i + ev.dim));
        j.resolve(out);
      }
      break;
    }
    case "failed": {
      const j = job;
      job = null;
      set({ job: null, message: `Circle job failed: ${ev.error}` });
      if (j) j.reject(new Error(ev.error));
      break;
    }
    case "receipt":
      queueReceipt(ev.receipt);
      break;
    case "stats": {
      const w = statsWaiter;
      statsWaiter = [];
      for (const f of w) f(ev);
      break;
    }
    default:
      break;
  }
}

// Receipts of shards other members computed for us: kept in this browser (receipts.js, the
// Receipts view checks them) and submitted to the relay's log in small batches.
let receiptQueue = [];
let receiptTimer = null;
function queueReceipt(b64) {
  receiptQueue.push(b64);
  set({ receipts: state.receipts + 1 });
  if (receiptQueue.length >= 64) flushReceipts();
  else if (!receiptTimer) receiptTimer = setTimeout(flushReceipts, 500);
}
async function flushReceipts() {
  clearTimeout(receiptTimer);
  receiptTimer = null;
  const batch = receiptQueue;
  receiptQueue = [];
  if (!batch.length) return;
  try {
    if (window.shoalReceipts) await window.shoalReceipts.add(batch);
  } catch (e) {
    console.warn("receipts not stored:", e.message || e);
  }
  const http = relays()[0].replace(/^ws(s?):/, "http$1:").replace(/\/v1\/signal$/, "");
  try {
    const r = await fetch(`${http}/log/submit`, {
      method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ receipts: batch }),
    });
    if (!r.ok) throw new Error(`${r.status} ${await r.text()}`);
    const p = await r.json();
    set({ anchored: state.anchored + ((p.promises && p.promises.length) || 0) });
  } catch (e) {
    set({ message: `Receipts kept here but not yet anchored: ${e.message || e}` });
  }
}

async function join(link) {
  leave();
  const seq = ++joinSeq;
  const shoal = window.shoal;
  set({ status: "joining", message: "Waiting for the model…", link: null, peers: [], rejected: 0 });
  try {
    await shoal.ready;
    const app = await shoal.app();
    const token = app.circleToken(link); // throws on a bad link
    set({ message: "Measuring this tab's speed…" });
    const rate = await calibrate(shoal);
    if (seq !== joinSeq) return;
    const base = location.href.split("#")[0];
    const relay = relays();
    // The circle's engine (Rust) owns every job; this only runs shards on the tab's workers:
    // `worker` (a member of our job) or null (any free worker: a peer's shard, or our fallback).
    member = new app.CircleMember(
      { link: token, relays: relay, name: deviceName(), backend: shoal.backend() || "cpu", rate, workers: shoal.workers() },
      async (worker, texts, forPeer) => {
        if (!forPeer) return shoal.runOn(worker, texts);
        if (testHold) { // test hook: keep this shard unanswered (see `_test.hold`)
          set({ holding: state.holding + 1 });
          return new Promise(() => {});
        }
        const served = (k) => ({ served: { ...state.served, [k]: state.served[k] + 1 } });
        set(served("started"));
        try {
          const r = await shoal.runOn(null, texts);
          set(served("done"));
          return r;
        } catch (e) {
          set(served("failed"));
          throw e;
        }
      },
      onEvent,
    );
    const m = member;
    unwatch = shoal.watchWorkers((kind, id, wrate) => {
      if (member !== m) return;
      try { if (kind === "up") m.localUp(id, wrate ?? NaN); else m.localDown(id); } catch (e) { console.warn("circle:", e.message || e); }
    });
    const full = `${base}#c=${token}`;
    if (location.hash !== `#c=${token}`) history.replaceState(null, "", full);
    set({ status: "joining", message: "Connecting to the relay…", link: full, id: member.id, relay: relay.join(", "), rate });
    return full;
  } catch (e) {
    if (seq === joinSeq) set({ status: "error", message: `Could not join: ${e.message || e}` });
    throw e;
  }
}

function leave() {
  joinSeq++;
  if (job) { job.reject(new DOMException("left the circle", "AbortError")); job = null; }
  if (unwatch) { unwatch(); unwatch = null; }
  if (member) { try { member.free(); } catch (_) { /* already freed */ } member = null; }
  if (location.hash.startsWith("#c=")) history.replaceState(null, "", location.href.split("#")[0]);
  set({ status: "off", message: "", link: null, id: null, peers: [], job: null });
}

async function create() {
  const app = await window.shoal.app();
  return join(app.circleCreate(location.href.split("#")[0]));
}

function embed(texts, opts = {}) {
  if (!member) return Promise.reject(new Error("not in a circle"));
  if (job) return Promise.reject(new Error("a circle job is already running"));
  const list = Array.from(texts, String);
  return new Promise((resolve, reject) => {
    job = { resolve, reject, onProgress: opts.onProgress, total: list.length };
    set({ job: { total: list.length, done: 0, started: performance.now(), members: [], rates: [], lastSample: null } });
    try {
      member.startJob(list);
    } catch (e) {
      job = null;
      set({ job: null });
      reject(e);
    }
    if (opts.signal) opts.signal.addEventListener("abort", () => { if (member) member.cancel(); }, { once: true });
  });
}

function stats() {
  if (!member) return Promise.reject(new Error("not in a circle"));
  return new Promise((resolve) => { statsWaiter.push(resolve); member.stats(); });
}

const upPeers = () => state.peers.filter((p) => p.state === "up").length;

window.shoalCircle = {
  create, join, leave, embed, stats,
  state: snapshot,
  upPeers,
  subscribe(fn) { listeners.add(fn); fn(snapshot()); return () => listeners.delete(fn); },
  _test: { hold() { testHold = true; } },
};

// Documents go through the circle when other members are up (search queries stay local).
const hook = () => { if (window.shoal && window.shoal.setCircle) window.shoal.setCircle({ upPeers, embed }); };
if (location.hash.includes("c=")) {
  const link = location.href;
  const go = () => join(link).catch((e) => console.warn("circle:", e.message || e));
  if (window.shoal) go(); else addEventListener("shoal-ready", go, { once: true });
}
if (window.shoal) hook(); else addEventListener("shoal-ready", hook, { once: true });
