// The worker pool: N model workers sharded by the node-lite job engine (page wasm). Vectors in
// input order equal to the golden reference, weights downloaded once for N workers and not at
// all on reload, a worker killed mid-job (the job still completes, bit-identical), every worker
// killed (the pool restarts them and finishes), cancellation, and the live view on a phone.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launch, newContext, openApp, waitReady, golden, cosine, weightRequests, foreign, RESULTS } from "../lib.mjs";

let browser, ctx, page;
before(async () => {
  browser = await launch();
  ctx = await newContext(browser);
});
after(async () => {
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

// Mixed lengths, so sorting and sharding matter.
const TEXTS = Array.from({ length: 96 }, (_, i) => {
  const words = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden", "network"];
  const n = 3 + ((i * 37) % 60);
  return `${i}: ` + Array.from({ length: n }, (_, j) => words[(i + j * 7) % words.length]).join(" ");
});

const poolState = (p) => p.evaluate(() => window.shoal.state().pool);
const counts = (urls) => urls.reduce((m, u) => m.set(u, (m.get(u) || 0) + 1), new Map());

// Kill worker(s) mid-job, deterministically, whatever the machine's speed or load: worker `id`
// answers one shard, every other worker in `kill` none, then each withholds its replies (pool
// test hook), so each provably owes the job a shard; once every one of them does, they are
// terminated. Resolves to the number terminated.
async function killMidJob(p, kill) {
  return p.evaluate(({ kill }) => new Promise((resolve, reject) => {
    const t0 = performance.now();
    const check = () => {
      const j = window.shoal.state().pool?.job;
      if (j && j.running && kill.every((k) => window.shoal._test.held(k) > 0)) {
        resolve(kill.filter((k) => window.shoal._test.terminateWorker(k)).length);
      } else if (performance.now() - t0 > 120_000) {
        reject(new Error(`never mid-job: ${JSON.stringify(j)}; held ${kill.map((k) => window.shoal._test.held(k))}`));
      } else {
        setTimeout(check, 2);
      }
    };
    check();
  }), { kill });
}

// Arm the hold before the job starts (see killMidJob).
const armHold = (p, id, kill) => p.evaluate(({ id, kill }) => kill.forEach((k) => window.shoal._test.holdAfter(k, k === id ? 1 : 0)), { id, kill });

// Wait until worker `id` has finished a shard of the running job (and the job is not done).
async function midJob(p, id) {
  await p.waitForFunction((id) => {
    const j = window.shoal.state().pool?.job;
    const m = j && j.running && j.members.find((m) => m.id === id);
    return m && m.shardsDone >= 1 && j.done < j.total;
  }, id, { timeout: 120_000, polling: 20 });
}

test("two workers: weights fetched once, vectors equal the golden ones in input order", { timeout: 300_000 }, async () => {
  page = await openApp(ctx.context, "?workers=2");
  await page.evaluate(() => window.shoal.poolReady());
  const st = await poolState(page);
  assert.equal(st.size, 2);
  assert.deepEqual(st.workers.map((w) => [w.id, w.status, w.backend]), [[0, "ready", "cpu"], [1, "ready", "cpu"]]);
  const weights = weightRequests(ctx.requests);
  assert.ok(weights.length >= 10, `weight files fetched (${weights.length})`);
  const dup = [...counts(weights)].filter(([, n]) => n > 1);
  assert.deepEqual(dup, [], "every weight file fetched exactly once for two workers");

  const items = golden();
  const vecs = await page.evaluate((t) => window.shoal.embed(t), items.map((i) => i.text));
  assert.equal(vecs.length, items.length);
  let worst = 1;
  items.forEach((it, i) => {
    const c = cosine(vecs[i], it.vector);
    worst = Math.min(worst, c);
    assert.ok(c >= 0.9999, `cosine ${c} for #${i} ${JSON.stringify(it.text.slice(0, 40))}`);
  });
  const job = (await poolState(page)).job;
  console.log(`# pool golden: worst cosine ${worst.toFixed(6)}; members ${JSON.stringify(job.members.map((m) => [m.label, m.shardsDone, m.textsDone]))}`);
  for (const id of [0, 1]) {
    const m = job.members.find((m) => m.id === id);
    assert.ok(m && m.textsDone > 0, `worker ${id} took part (${JSON.stringify(m)})`);
  }
  assert.equal(job.done, items.length);
});

test("2 workers: throughput on mixed lengths (printed)", { timeout: 300_000 }, async () => {
  const r = await page.evaluate(async (texts) => {
    const t0 = performance.now();
    await window.shoal.embed(texts);
    return performance.now() - t0;
  }, TEXTS);
  console.log(`# 2 workers: ${TEXTS.length} mixed texts in ${r.toFixed(0)} ms (${(TEXTS.length / r * 1000).toFixed(1)}/s)`);
});

test("a worker terminated mid-job: the job completes with identical vectors", { timeout: 300_000 }, async () => {
  const reference = await page.evaluate((t) => window.shoal.embed(t), TEXTS);
  const before = ctx.requests.length;
  await armHold(page, 1, [1]);
  await page.evaluate((t) => { window.__job = window.shoal.embed(t); window.__job.catch(() => {}); }, TEXTS);
  assert.equal(await killMidJob(page, [1]), 1);
  const got = await page.evaluate(() => window.__job);
  assert.equal(got.length, TEXTS.length);
  got.forEach((v, i) => assert.deepEqual(v, reference[i], `vector ${i} differs after the crash`));
  const job = (await poolState(page)).job;
  const m1 = job.members.find((m) => m.id === 1);
  assert.equal(m1.status, "left", `worker 1 left the job: ${JSON.stringify(m1)}`);
  console.log(`# crash: members ${JSON.stringify(job.members.map((m) => [m.label, m.status, m.shardsDone]))}`);
  // The pool restarts the worker from the Cache API: no weight file is fetched again.
  await page.waitForFunction(() => window.shoal.state().pool.workers.every((w) => w.status === "ready"), null, { timeout: 120_000 });
  assert.deepEqual(weightRequests(ctx.requests.slice(before)), [], "the restarted worker loaded from the cache");
});

test("every worker killed mid-job: the pool (self member) restarts them and finishes", { timeout: 300_000 }, async () => {
  const reference = await page.evaluate((t) => window.shoal.embed(t), TEXTS);
  await armHold(page, 0, [0, 1]);
  await page.evaluate((t) => { window.__job = window.shoal.embed(t); window.__job.catch(() => {}); }, TEXTS);
  assert.equal(await killMidJob(page, [0, 1]), 2);
  const got = await page.evaluate(() => window.__job);
  got.forEach((v, i) => assert.deepEqual(v, reference[i], `vector ${i} differs`));
  const job = (await poolState(page)).job;
  const self = job.members.find((m) => m.label === "pool (fallback)");
  assert.ok(self && self.textsDone > 0, `the self member finished the rest: ${JSON.stringify(job.members)}`);
});

test("cancel: the job rejects with AbortError, queued work is dropped, the pool keeps working", { timeout: 300_000 }, async () => {
  await page.waitForFunction(() => window.shoal.state().pool.workers.every((w) => w.status === "ready"), null, { timeout: 120_000 });
  const r = await page.evaluate(async (texts) => {
    const ac = new AbortController();
    const p = window.shoal.embed(texts, { signal: ac.signal });
    await new Promise((res) => {
      const check = () => (window.shoal.state().pool.job?.done > 0 ? res() : setTimeout(check, 10));
      check();
    });
    ac.abort();
    try { await p; return { ok: true }; } catch (e) { return { name: e.name, message: e.message, done: window.shoal.state().pool.job.done }; }
  }, [...TEXTS, ...TEXTS]);
  assert.equal(r.name, "AbortError", JSON.stringify(r));
  assert.ok(r.done < TEXTS.length * 2, `cancelled before the end (${r.done})`);
  const v = await page.evaluate(() => window.shoal.embed(["still works after a cancel"]));
  assert.equal(v[0].length, 384);
});

test("phone viewport: live per-worker view during a job", { timeout: 300_000 }, async () => {
  await page.setViewportSize({ width: 390, height: 844 });
  await page.evaluate((t) => { window.__job = window.shoal.embed(t); window.__job.catch(() => {}); }, [...TEXTS, ...TEXTS]);
  await midJob(page, 1);
  const rows = page.locator("[data-testid=pool] .member");
  assert.equal(await rows.count(), 2);
  assert.match(await page.locator("[data-testid=pool-rate]").innerText(), /texts\/s now/);
  await page.screenshot({ path: join(RESULTS, "pool-phone.png"), fullPage: false });
  // Nothing wider than the viewport.
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `no horizontal overflow (${overflow}px)`);
  await page.evaluate(() => window.__job);
  await page.setViewportSize({ width: 1280, height: 900 });
});

test("reload: no weight file requested, both workers ready again", { timeout: 300_000 }, async () => {
  const before = ctx.requests.length;
  await page.reload({ waitUntil: "load" });
  await waitReady(page);
  await page.evaluate(() => window.shoal.poolReady());
  assert.deepEqual(weightRequests(ctx.requests.slice(before)), []);
  const st = await poolState(page);
  assert.deepEqual(st.workers.map((w) => w.status), ["ready", "ready"]);
  assert.deepEqual(foreign(ctx.requests), []);
});
