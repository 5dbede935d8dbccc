// Shoal worker pool: N dedicated model workers (one wasm instance each: stable Rust has no wasm
// threads), weights fetched and verified once, every embedding request run as a sharded job by
// node-lite's job engine (`PoolJob`, exported by the page wasm `shoal-app`).
//
// - Size: clamp(navigator.hardwareConcurrency, 1, 4) CPU workers by default (`?workers=N`,
//   `shoal.configure({workers})`); on WebGPU one worker (more would fight over one GPU).
// - Weights: worker 0 fetches/caches/verifies them (worker.js, Cache API); once its model is
//   built it transfers the verified files to the page, which hands them to workers 1..N-1
//   (structured clone; the last one gets them transferred). They verify again in wasm. No other
//   worker touches the network; a restarted worker loads from the Cache API.
// - Members: worker i is job member i. The requester ("self", never excluded, no deadline) is the
//   pool itself: a last-resort member with a nominal rate that gets shards only when no worker
//   can take them, and runs them on any live worker (restarting one if none is left). Circle
//   members are not pool members: circle.js runs the circle's job (Rust) and this pool computes
//   the tab's share of it.
// - The page thread only posts messages and copies vectors: it never blocks.
"use strict";

const MAX_IN_FLIGHT = 2; // per worker: one running, one queued, so a worker never idles
const LOCAL_MIN_DEADLINE_MS = 30_000; // workers that die are seen at once; deadlines catch hangs
const RESPAWN_DELAY_MS = 500;
const HISTORY = 60;

const now = () => performance.now();

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
    this.requests = new Map(); // request id → {run, shard, self}
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
  //        onProgress(msg), onNotice(level, text), onChange()}
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
        for (const run of this.runs) run.addMember(slot.id, this.rates.get(slot.id));
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
    for (const run of this.runs) run.memberLeft(slot.id);
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

  // Send an embed request to a slot; callbacks: done(Float32Array), fail(msg), lost(msg).
  _request(slot, texts, cb) {
    const id = this.nextRequest++;
    slot.requests.set(id, cb);
    slot.worker.postMessage({ type: "embed", id, texts });
    return id;
  }

  // ------------------------------------------------------------------ jobs
  // Embed `texts`; resolves to Float32Array views in input order. opts: {signal, onProgress}.
  async embed(texts, opts = {}) {
    await this.firstReady;
    if (!texts.length) return [];
    const app = await this.opts.app;
    const run = new Run(this, app, texts, opts);
    this.runs.add(run);
    try {
      return await run.promise;
    } finally {
      this.runs.delete(run);
      this._changed();
    }
  }

  cancelAll() {
    for (const run of this.runs) run.cancel();
  }

  terminate() {
    this.closed = true;
    this.cancelAll();
    for (const s of this.slots) { try { s.worker?.terminate(); } catch (_) { /* gone */ } s.worker = null; s.status = "dead"; s.generation++; }
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

// One sharded job: drives a PoolJob (wasm) with worker replies, deadlines and cancellation.
class Run {
  constructor(pool, app, texts, { signal, onProgress } = {}) {
    this.pool = pool;
    this.app = app;
    this.texts = texts;
    this.onProgress = onProgress;
    this.key = pool.nextRun++;
    this.requests = new Map(); // member → Map(shard → request id)
    this.timer = null;
    this.settled = false;
    this.promise = new Promise((res, rej) => { this.resolve = res; this.reject = rej; });
    const ready = pool._readySlots();
    const id = crypto.getRandomValues(new Uint8Array(16));
    this.job = new app.PoolJob(id, texts, shardSize(texts, ready.length), MAX_IN_FLIGHT, LOCAL_MIN_DEADLINE_MS);
    this.selfId = app.PoolJob.selfMember();
    // The UI shows jobs of more than one text (a search query would flash by).
    if (texts.length > 1) {
      pool.view = { key: this.key, total: texts.length, done: 0, running: true, startedAt: now(), endedAt: 0, members: new Map(), history: [], lastSample: now(), lastDone: 0 };
    }
    const t = now();
    for (const s of ready) this.job.addMember(s.id, pool.rates.get(s.id) ?? NaN, t);
    if (signal) {
      if (signal.aborted) { this.cancel(); return; }
      signal.addEventListener("abort", () => this.cancel(), { once: true });
    }
    this.job.start(t);
    this.pump();
  }

  addMember(id, rate) {
    if (this.settled) return;
    try { this.job.addMember(id, rate ?? NaN, now()); } catch (_) { return; /* already a member (restarted worker) */ }
    this.pump();
  }

  memberLeft(id) {
    if (this.settled) return;
    this.requests.delete(id);
    this.job.memberLeft(id, now());
    this.pump();
  }

  cancel() {
    if (this.settled) return;
    this.job.cancel(now());
    this.pump();
  }

  _track(member, shard, reqId) {
    if (!this.requests.has(member)) this.requests.set(member, new Map());
    this.requests.get(member).set(shard, reqId);
  }

  _untrack(member, shard) {
    this.requests.get(member)?.delete(shard);
  }

  // Run one shard on a local worker for `member` (a worker, or self on any live worker).
  _dispatchLocal(member, shard, texts) {
    const pool = this.pool;
    const isSelf = member === this.selfId;
    let slot = isSelf ? pool._readySlots().sort((a, b) => a.requests.size - b.requests.size)[0] : pool.slots[member];
    if (!slot || slot.status !== "ready" || !slot.worker) {
      if (isSelf) { this._selfRetry(shard, texts, "no live worker"); return; }
      this.job.memberLeft(member, now());
      return;
    }
    const reqId = pool._request(slot, texts, {
      done: (vectors) => { this._untrack(member, shard); this._result(member, shard, vectors); },
      fail: (msg) => { this._untrack(member, shard); if (this.settled) return; this.job.onError(member, shard, msg, now()); this.pump(); },
      lost: (msg) => { this._untrack(member, shard); if (isSelf) this._selfRetry(shard, texts, msg); },
    });
    this._track(member, shard, reqId);
  }

  // The self member's shard lost its worker: run it elsewhere, restarting a worker if needed.
  _selfRetry(shard, texts, why, attempt = 1) {
    if (this.settled) return;
    if (attempt > 20) { this.job.onError(this.selfId, shard, `no worker could run it (${why})`, now()); this.pump(); return; }
    if (this.pool._readySlots().length) { this._dispatchLocal(this.selfId, shard, texts); return; }
    setTimeout(() => this._selfRetry(shard, texts, why, attempt + 1), 1000);
  }

  _result(member, shard, vectors) {
    if (this.settled) return;
    this.job.onResult(member, shard, vectors, now());
    this.pump();
  }

  pump() {
    if (this.settled) return;
    let changed = false;
    let end = null; // finished / failed come before the last progress events: drain those first
    for (;;) {
      const a = this.job.poll();
      if (!a) break;
      switch (a.type) {
        case "assign":
          if (end) break;
          this._dispatchLocal(a.to, a.shard, a.texts);
          break;
        case "cancel": this._cancelAt(a.to, a.shard); break;
        case "progress": this._progress(a); changed = true; break;
        case "finished": case "failed": end = end || a; break;
      }
    }
    if (end) {
      if (end.type === "finished") this._finish(); else this._fail(end.error);
      return;
    }
    clearTimeout(this.timer);
    const d = this.job.nextDeadline();
    if (d !== undefined && d !== null) this.timer = setTimeout(() => { if (!this.settled) { this.job.tick(now()); this.pump(); } }, Math.max(0, d - now()) + 5);
    if (changed) this._changedThrottled();
  }

  _cancelAt(member, shard) {
    const m = this.requests.get(member);
    if (!m) return;
    const shards = shard == null ? [...m.keys()] : [shard];
    for (const s of shards) {
      const reqId = m.get(s);
      m.delete(s);
      if (reqId == null) continue;
      for (const slot of this.pool.slots) {
        if (slot.requests.delete(reqId)) slot.worker?.postMessage({ type: "cancel", ids: [reqId] });
      }
    }
  }

  _progress(p) {
    if (p.isSelf) {
      // Self is the pool's fallback; shown only if it did work.
    } else if (p.status === "active" && p.textsDone > 0) {
      this.pool.rates.set(p.member, p.rate);
    }
    const v = this.pool.view;
    if (v && v.key === this.key) {
      const label = p.isSelf ? "pool (fallback)" : `worker ${p.member + 1}`;
      v.members.set(p.member, { id: p.member, label, isSelf: p.isSelf, status: p.status, shardsDone: p.shardsDone, textsDone: p.textsDone, inFlight: p.inFlight, rate: p.rate });
      v.done = p.jobDone;
      const t = now();
      if (t - v.lastSample >= 250) {
        v.history.push(Math.round((v.done - v.lastDone) / ((t - v.lastSample) / 1000)));
        if (v.history.length > HISTORY) v.history.shift();
        v.lastSample = t;
        v.lastDone = v.done;
      }
    }
    this.onProgress?.(p.jobDone, p.jobTotal);
  }

  _changedThrottled() {
    const t = now();
    if (this._lastEmit && t - this._lastEmit < 100) {
      if (!this._emitTimer) this._emitTimer = setTimeout(() => { this._emitTimer = null; this._lastEmit = now(); this.pool._changed(); }, 100);
      return;
    }
    this._lastEmit = t;
    this.pool._changed();
  }

  _end() {
    this.settled = true;
    clearTimeout(this.timer);
    clearTimeout(this._emitTimer);
    const v = this.pool.view;
    if (v && v.key === this.key) { v.running = false; v.endedAt = now(); }
    // Anything still queued at a worker for this job is useless now.
    for (const [member] of this.requests) this._cancelAt(member, null);
    try { this.job.free(); } catch (_) { /* freed */ }
  }

  _finish() {
    const flat = this.job.takeOutput();
    const dim = this.job.dim();
    this._end();
    if (!flat) { this.reject(new Error("job finished without output")); return; }
    const out = [];
    for (let i = 0; i < flat.length; i += dim) out.push(flat.subarray(i, i + dim));
    this.resolve(out);
  }

  _fail(error) {
    this._end();
    const e = new Error(/cancel/i.test(error) ? "cancelled" : error);
    if (/cancel/i.test(error)) e.name = "AbortError";
    this.reject(e);
  }
}
