// Shoal worker pool: N dedicated model workers (one wasm instance each: stable Rust has no wasm
// threads), weights fetched and verified once, every embedding request run as a sharded job by
// node-lite's job engine (`PoolRun`, in the page wasm `shoal-app`; a circle's job: `CircleMember`).
//
// - Size: clamp(navigator.hardwareConcurrency, 1, 4) CPU workers by default (`?workers=N`,
//   `shoal.configure({workers})`); on WebGPU one worker (more would fight over one GPU).
// - Weights: worker 0 fetches/caches/verifies them (worker.js, Cache API); once its model is
//   built it transfers the verified files to the page, which hands them to workers 1..N-1
//   (structured clone; the last one gets them transferred). They verify again in wasm. No other
//   worker touches the network; a restarted worker loads from the Cache API.
// - Jobs: the job engine is Rust (`PoolRun`, in the page wasm `shoal-app`): it shards, sets
//   deadlines, reassigns and orders; this module only runs its shards on workers (`run`) and
//   tells it which workers are up. Worker i is job member i. The requester ("self", never
//   excluded, no deadline) is the pool itself: a last-resort member with a nominal rate that gets
//   shards only when no worker can take them, run on any live worker (restarting one if needed).
// - In a circle the circle's job engine (Rust, `CircleMember`) owns the job instead: this pool's
//   workers are members of it (`onWorker("up" | "down", i, rate)` tells it who is up) and
//   `run(i, texts)` only runs a shard on worker i (or on any free worker) — no job in between.
// - The page thread only posts messages and copies vectors: it never blocks.
"use strict";

const MAX_IN_FLIGHT = 2; // per worker: one running, one queued, so a worker never idles
const LOCAL_MIN_DEADLINE_MS = 30_000; // workers that die are seen at once; deadlines catch hangs
const RESPAWN_DELAY_MS = 500;
const HISTORY = 60;

const now = () => performance.now();
const DIM = 384;

export function defaultPoolSize() {
  const hc = Number(navigator.hardwareConcurrency) || 1;
  return Math.max(1, Math.min(4, hc | 0));
}

// Texts per shard: ~3 shards per member (so the engine can rebalance and lose little on a
// crash), fewer texts when they are long (a shard stays a few seconds of work), ≤ 32.
function shardSize(texts, members) {
  const n = texts.length;
  const avg = texts.reduce((s, t) => s + t.length, 0) / Math.max(1, n);
  const byLen = Math.max(2, Math.min(32, Math.floor(6000 / Math.max(1, avg))));
  return Math.max(1, Math.min(byLen, Math.ceil(n / (Math.max(1, members) * 3))));
}

class Slot {
  constructor(id) {
    this.id = id;
    this.worker = null;
    this.status = "idle"; // idle | loading | ready | dead
    this.backend = null;
    this.requests = new Map(); // request id → {key (job), done(vectors), fail(msg), lost(msg)}
    this.generation = 0;
    this.error = null;
    this.failures = 0; // failed starts in a row
    // Test hook (Pool.holdAfter): after `holdAfter` answered shards, replies are withheld, so
    // the worker provably owes work when a test kills it. -1 = off; a restarted worker is off.
    this.holdAfter = -1;
    this.answered = 0;
    this.held = 0;
  }
}

export class Pool {
  // opts: {size, base, variant, backend, precision ("exact": f32 CPU arithmetic), app (Promise of the shoal-app wasm module),
  //        onProgress(msg), onNotice(level, text), onChange(), onWorker(kind "up" | "down", id, rate)}
  constructor(opts) {
    this.opts = opts;
    this.size = Math.max(1, Math.min(16, opts.size | 0 || defaultPoolSize()));
    this.slots = [];
    this.runs = new Set();
    this.rates = new Map(); // member → texts/s measured in earlier jobs
    this.nextRequest = 1;
    this.nextRun = 1;
    this.backend = null;
    this.timings = null;
    this.bytes = null;
    this.view = null; // the job shown in the UI: {key, total, done, startedAt, members, history}
    this.closed = false;
    this.firstReady = new Promise((res, rej) => { this._resolveReady = res; this._rejectReady = rej; });
    this.firstReady.catch(() => {});
    this.allReady = new Promise((res) => { this._resolveAll = res; });
    this.slots.push(new Slot(0));
    this._spawn(this.slots[0], { share: this.size > 1 });
  }

  get ready() { return this.firstReady; }

  // ------------------------------------------------------------------ workers
  _spawn(slot, { share = false, weights = null } = {}) {
    const o = this.opts;
    slot.generation++;
    const gen = slot.generation;
    slot.holdAfter = -1;
    slot.status = "loading";
    slot.error = null;
    const w = new Worker("./worker.js", { name: `shoal-model-${slot.id}` });
    slot.worker = w;
    w.onmessage = (ev) => { if (slot.generation === gen) this._onWorker(slot, ev.data); };
    w.onerror = (ev) => {
      if (slot.generation !== gen) return;
      ev.preventDefault?.();
      this._died(slot, `worker ${slot.id} failed: ${ev.message || "unknown error"}`);
    };
    // Helpers run the CPU build the page asked for (the best one by default; plain SIMD /
    // scalar / flex when forced).
    const backend = slot.id === 0 || ["cpu-simd", "cpu-scalar", "flex"].includes(o.backend) ? o.backend : "cpu";
    const msg = { type: "init", base: o.base, variant: o.variant, backend, precision: o.precision, share };
    if (weights) msg.weights = weights;
    w.postMessage(msg, weights && weights.transfer ? weights.transfer : []);
    if (weights) delete weights.transfer;
    this._changed();
  }

  _onWorker(slot, m) {
    switch (m.type) {
      case "progress":
        if (slot.id === 0) this.opts.onProgress?.(m);
        break;
      case "notice":
        this.opts.onNotice?.(m.level, m.message);
        break;
      case "ready":
        slot.status = "ready";
        slot.backend = m.backend;
        slot.engine = m.engine;
        slot.failures = 0;
        if (slot.id === 0 && !this.backend) {
          this.backend = m.backend;
          this.timings = m.timings;
          this.bytes = m.bytes;
          // One GPU worker only; on the CPU grow to the full size once the weights arrive.
          if (m.backend !== "cpu") this.size = 1;
          this._resolveReady(true);
        }
        for (const run of this.runs) run.workerUp(slot.id, this.rates.get(slot.id) ?? NaN);
        this.opts.onWorker?.("up", slot.id, this.rates.get(slot.id));
        this._checkAllReady();
        this._changed();
        break;
      case "weights":
        if (slot.id === 0) this._startOthers(m);
        break;
      case "embedded": {
        const req = slot.requests.get(m.id);
        if (!req) return; // cancelled or from before a restart
        if (slot.holdAfter >= 0 && slot.answered >= slot.holdAfter) { slot.held++; return; } // test hook
        slot.answered++;
        slot.requests.delete(m.id);
        req.done(m.vectors);
        break;
      }
      case "error":
        if (m.fatal) {
          this._died(slot, m.message, true);
        } else if (slot.requests.has(m.id)) {
          const req = slot.requests.get(m.id);
          slot.requests.delete(m.id);
          req.fail(m.message);
        }
        break;
    }
  }

  _startOthers(shared) {
    for (let i = 1; i < this.size; i++) {
      if (!this.slots[i]) this.slots.push(new Slot(i));
      const last = i === this.size - 1;
      const weights = { manifestBytes: shared.manifestBytes, bytes: shared.bytes };
      if (last) weights.transfer = [...new Set(shared.bytes.map((b) => b.buffer))];
      this._spawn(this.slots[i], { weights });
    }
    this._checkAllReady();
  }

  _checkAllReady() {
    if (this.backend && this.slots.length >= this.size && this.slots.slice(0, this.size).every((s) => s.status === "ready")) {
      this._resolveAll(true);
    }
  }

  // A worker is gone: its jobs reassign its shards, and it is restarted for later work.
  _died(slot, reason, fatalInit = false) {
    if (slot.status === "dead" && !slot.worker) return;
    const wasReady = slot.status === "ready";
    try { slot.worker?.terminate(); } catch (_) { /* already gone */ }
    slot.worker = null;
    slot.status = "dead";
    slot.error = reason;
    slot.generation++;
    const reqs = [...slot.requests.values()];
    slot.requests.clear();
    for (const run of this.runs) run.workerDown(slot.id);
    if (wasReady) this.opts.onWorker?.("down", slot.id);
    for (const r of reqs) r.lost(reason);
    if (slot.id === 0 && !this.backend) {
      this._rejectReady(new Error(reason));
      this._changed();
      return;
    }
    this.opts.onNotice?.("warn", `Model worker ${slot.id + 1} stopped (${reason}); its work was reassigned.`);
    this._changed();
    // Restart it (from the Cache API) unless it keeps failing to start.
    if (fatalInit && !wasReady) slot.failures++;
    if (!this.closed && slot.failures < 3) {
      setTimeout(() => { if (!this.closed && slot.status === "dead") this._spawn(slot); }, RESPAWN_DELAY_MS);
    }
  }

  // Test hook: worker i answers `n` more shards, then withholds its replies (each a shard it
  // owes) until it is killed; `held(i)` counts the withheld ones.
  holdAfter(i, n) {
    const slot = this.slots[i];
    if (!slot) return false;
    Object.assign(slot, { holdAfter: n, answered: 0, held: 0 });
    return true;
  }

  held(i) {
    return this.slots[i]?.held ?? 0;
  }

  // Test hook: kill a worker as a crash would (the pool notices at once, as with `onerror`).
  terminateWorker(i) {
    const slot = this.slots[i];
    if (!slot || !slot.worker) return false;
    this._died(slot, "terminated");
    return true;
  }

  _readySlots() {
    return this.slots.filter((s) => s.status === "ready" && s.worker);
  }

  // The workers that are up now, as [id, measured rate] (for a circle joining later).
  readyWorkers() {
    return this._readySlots().map((s) => [s.id, this.rates.get(s.id)]);
  }

  // One model run, no job: on worker `worker`, or (null) on the least loaded live one, waiting
  // up to ~20 s for one to come back. Resolves to {data: Float32Array (texts × dim), dim}.
  // `key` tags the request with the job it belongs to (dropped from the queue when that ends).
  run(worker, texts, key = 0) {
    return new Promise((resolve, reject) => {
      const attempt = (n) => {
        const slot = worker == null
          ? this._readySlots().sort((a, b) => a.requests.size - b.requests.size)[0]
          : this.slots[worker];
        if (!slot || slot.status !== "ready" || !slot.worker) {
          if (worker == null && !this.closed && n < 20) { setTimeout(() => attempt(n + 1), 1000); return; }
          reject(new Error(worker == null ? "no live model worker" : `model worker ${worker + 1} is not running`));
          return;
        }
        this._request(slot, texts, {
          key,
          done: (data) => resolve({ data, dim: texts.length ? data.length / texts.length : 0 }),
          fail: (msg) => reject(new Error(msg)),
          lost: (msg) => (worker == null ? attempt(n + 1) : reject(new Error(msg))),
        });
      };
      attempt(0);
    });
  }

  // Send an embed request to a slot; callbacks: done(Float32Array), fail(msg), lost(msg).
  _request(slot, texts, cb) {
    const id = this.nextRequest++;
    slot.requests.set(id, cb);
    slot.worker.postMessage({ type: "embed", id, texts });
    return id;
  }

  // ------------------------------------------------------------------ jobs
  // Embed `texts`; resolves to Float32Array views in input order. opts: {signal, onProgress}.
  // The job engine (Rust, `PoolRun`) owns the job; this only runs its shards on the workers.
  async embed(texts, opts = {}) {
    await this.firstReady;
    if (!texts.length) return [];
    const app = await this.opts.app;
    const key = this.nextRun++;
    const ready = this._readySlots();
    // The UI shows jobs of more than one text (a search query would flash by).
    const view = texts.length > 1
      ? { key, total: texts.length, done: 0, running: true, startedAt: now(), endedAt: 0, members: new Map(), history: [], lastSample: now(), lastDone: 0 }
      : null;
    if (view) this.view = view;
    const run = new app.PoolRun(texts, shardSize(texts, ready.length), MAX_IN_FLIGHT, LOCAL_MIN_DEADLINE_MS,
      (worker, shard) => this.run(worker, shard, key),
      (p) => this._progress(view, p, opts.onProgress));
    for (const s of ready) run.workerUp(s.id, this.rates.get(s.id) ?? NaN);
    this.runs.add(run);
    const abort = () => run.cancel();
    opts.signal?.addEventListener("abort", abort, { once: true });
    if (opts.signal?.aborted) run.cancel();
    try {
      const flat = await run.start();
      const out = [];
      for (let i = 0; i < flat.length; i += DIM) out.push(flat.subarray(i, i + DIM));
      return out;
    } finally {
      opts.signal?.removeEventListener("abort", abort);
      this.runs.delete(run);
      this._dropRequests(key); // anything still queued at a worker for this job is useless now
      if (view) { view.running = false; view.endedAt = now(); }
      clearTimeout(this._emitTimer);
      this._emitTimer = null;
      try { run.free(); } catch (_) { /* freed */ }
      this._changed();
    }
  }

  // A member's progress: measured rates carried to the next job, the live view, the caller's hook.
  _progress(view, p, onProgress) {
    if (!p.isSelf && p.status === "active" && p.textsDone > 0) this.rates.set(p.member, p.rate);
    if (view && this.view === view) {
      const label = p.isSelf ? "pool (fallback)" : `worker ${p.member + 1}`;
      view.members.set(p.member, { id: p.member, label, isSelf: p.isSelf, status: p.status, shardsDone: p.shardsDone, textsDone: p.textsDone, inFlight: p.inFlight, rate: p.rate });
      view.done = p.jobDone;
      const t = now();
      if (t - view.lastSample >= 250) {
        view.history.push(Math.round((view.done - view.lastDone) / ((t - view.lastSample) / 1000)));
        if (view.history.length > HISTORY) view.history.shift();
        view.lastSample = t;
        view.lastDone = view.done;
      }
      this._changedThrottled();
    }
    try { onProgress?.(p.jobDone, p.jobTotal); } catch (_) { /* the caller's */ }
  }

  _changedThrottled() {
    const t = now();
    if (this._lastEmit && t - this._lastEmit < 100) {
      if (!this._emitTimer) this._emitTimer = setTimeout(() => { this._emitTimer = null; this._lastEmit = now(); this._changed(); }, 100);
      return;
    }
    this._lastEmit = t;
    this._changed();
  }

  // Drop the requests of job `key` still queued at workers (a finished or cancelled job).
  _dropRequests(key) {
    for (const slot of this.slots) {
      const dropped = [...slot.requests].filter(([, r]) => r.key === key);
      for (const [id, r] of dropped) { slot.requests.delete(id); r.fail("the job ended"); }
      if (dropped.length) slot.worker?.postMessage({ type: "cancel", ids: dropped.map(([id]) => id) });
    }
  }

  cancelAll() {
    for (const run of this.runs) run.cancel();
  }


  terminate() {
    this.closed = true;
    this.cancelAll();
    for (const s of this.slots) {
      if (s.status === "ready") this.opts.onWorker?.("down", s.id);
      try { s.worker?.terminate(); } catch (_) { /* gone */ }
      s.worker = null; s.status = "dead"; s.generation++;
    }
  }

  _changed() { this.opts.onChange?.(); }

  // A plain snapshot for the UI.
  snapshot() {
    return {
      size: this.size,
      workers: this.slots.map((s) => ({ id: s.id, status: s.status, backend: s.backend, engine: s.engine, error: s.error })),
      job: this.view && {
        total: this.view.total,
        done: this.view.done,
        running: this.view.running,
        elapsedMs: (this.view.endedAt || now()) - this.view.startedAt,
        rate: this.view.done / Math.max(1e-3, ((this.view.endedAt || now()) - this.view.startedAt) / 1000),
        members: [...this.view.members.values()].filter((m) => !m.isSelf || m.textsDone > 0 || m.inFlight > 0),
        history: this.view.history.slice(),
      },
    };
  }
}
