// The CPU path: Chromium without --enable-unsafe-webgpu has no WebGPU adapter, so the app must
// fall back to the CPU (the fast encoder, wasm SIMD build) by itself. The scalar build and
// per-worker throughput: cpu-fast.test.mjs.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { join } from "node:path";
import { launch, newContext, openApp, waitReady, golden, cosine, weightRequests, foreign, DOCS, RESULTS } from "../lib.mjs";

let browser, ctx, page;
before(async () => {
  browser = await launch();
  ctx = await newContext(browser);
});
after(async () => {
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

test("page loads, shoal.ready resolves, CPU fallback is chosen", { timeout: 300_000 }, async () => {
  const t0 = Date.now();
  page = await openApp(ctx.context);
  const st = await page.evaluate(() => window.shoal.state());
  console.log(`# cold start (empty cache): ${Date.now() - t0} ms; worker: ${JSON.stringify(st.timings)}; bytes: ${JSON.stringify(st.bytes)}`);
  assert.equal(await page.evaluate(() => window.shoal.backend()), "cpu");
  // Without --enable-unsafe-webgpu there is no adapter here: this is the fallback case.
  assert.equal(await page.evaluate(async () => !!(navigator.gpu && (await navigator.gpu.requestAdapter()))), false);
  assert.ok(weightRequests(ctx.requests).length >= 10, "weights were fetched on the first visit (and the fetches were seen)");
  // Chromium has wasm (relaxed) SIMD: the worker loads the relaxed-SIMD build of the fast CPU encoder.
  assert.ok(ctx.requests.some((u) => u.endsWith("/shoal-worker-cpu-relaxed_bg.wasm")), "the relaxed-SIMD CPU worker was loaded");
  assert.ok(!ctx.requests.some((u) => u.endsWith("/shoal-worker-cpu-simd_bg.wasm")), "the plain SIMD CPU worker was not");
  assert.ok(!ctx.requests.some((u) => u.endsWith("/shoal-worker-cpu_bg.wasm")), "the scalar CPU worker was not");
  await page.getByRole("heading", { name: "Shoal" }).waitFor();
});

test("shoal.embed matches the golden vectors (CPU, cosine ≥ 0.9999)", { timeout: 300_000 }, async () => {
  const items = golden();
  const t0 = Date.now();
  const vecs = await page.evaluate((texts) => window.shoal.embed(texts), items.map((i) => i.text));
  const ms = Date.now() - t0;
  assert.equal(vecs.length, items.length);
  let worst = 1;
  items.forEach((it, i) => {
    assert.equal(vecs[i].length, 384);
    const c = cosine(vecs[i], it.vector);
    worst = Math.min(worst, c);
    assert.ok(c >= 0.9999, `cosine ${c} for ${JSON.stringify(it.text.slice(0, 40))}`);
  });
  console.log(`# CPU golden: ${items.length} sentences in ${ms} ms, worst cosine ${worst.toFixed(6)}`);
  // Throughput on short sentences, batched.
  const short = Array.from({ length: 64 }, (_, i) => `Short sentence number ${i} about a topic.`);
  const t1 = Date.now();
  await page.evaluate((t) => window.shoal.embed(t), short);
  console.log(`# CPU throughput: ${(short.length / ((Date.now() - t1) / 1000)).toFixed(1)} short sentences/s`);
});

test("the page stays responsive during a 500-sentence job", { timeout: 300_000 }, async () => {
  const r = await page.evaluate(async () => {
    let frames = 0, maxGap = 0, last = performance.now(), on = true;
    const tick = (t) => { frames++; maxGap = Math.max(maxGap, t - last); last = t; if (on) requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    const texts = Array.from({ length: 500 }, (_, i) => `Sentence ${i}: the quick brown fox jumps over the lazy dog.`);
    const t0 = performance.now();
    const v = await window.shoal.embed(texts);
    on = false;
    return { frames, maxGap, ms: performance.now() - t0, n: v.length };
  });
  console.log(`# responsiveness: 500 sentences in ${r.ms.toFixed(0)} ms (${(500 / r.ms * 1000).toFixed(1)}/s); ${r.frames} animation frames, longest gap ${r.maxGap.toFixed(0)} ms`);
  assert.equal(r.n, 500);
  assert.ok(r.frames >= (r.ms / 1000) * 10, `animation frames kept coming (${r.frames} in ${r.ms} ms)`);
  assert.ok(r.maxGap < 1000, `no frame gap ≥ 1 s (longest ${r.maxGap} ms)`);
});

test("three documents: a query returns the right one first", { timeout: 300_000 }, async () => {
  await page.evaluate((docs) => window.shoal.addDocuments(docs), DOCS);
  const cases = [
    ["How do I make bread rise?", "bread.md"],
    ["space station orbit", "orbit.txt"],
    ["when is the deadline for my tax return", "tax.txt"],
  ];
  for (const [q, want] of cases) {
    const hits = await page.evaluate(([q]) => window.shoal.search(q, 3), [q]);
    assert.equal(hits[0].source, want, `${q} → ${JSON.stringify(hits.map((h) => [h.source, h.score]))}`);
    assert.ok(typeof hits[0].score === "number" && typeof hits[0].text === "string");
  }
  // And through the UI.
  await page.getByLabel("Search query").fill("astronauts and sunrises");
  await page.locator("[data-testid=results] .source").first().filter({ hasText: "orbit.txt" }).waitFor({ timeout: 60_000 });
});

test("reload: documents are still there and weights are not downloaded again", { timeout: 300_000 }, async () => {
  const before = ctx.requests.length;
  const t0 = Date.now();
  await page.reload({ waitUntil: "load" });
  await waitReady(page);
  const warm = Date.now() - t0;
  const vec = await page.evaluate(() => window.shoal.embed(["first vector after reload"]));
  console.log(`# cold start (warm cache): ready ${warm} ms, first vector ${Date.now() - t0} ms`);
  assert.equal(vec[0].length, 384);
  const after = ctx.requests.slice(before);
  assert.deepEqual(weightRequests(after), [], "no weight file requested after reload");
  const docs = await page.evaluate(() => window.shoal.documents());
  assert.deepEqual(docs.map((d) => d.name).sort(), ["bread.md", "orbit.txt", "tax.txt"]);
  const hits = await page.evaluate(() => window.shoal.search("sourdough starter", 1));
  assert.equal(hits[0].source, "bread.md");
});

test("UI: paste a document, find it, delete it", { timeout: 300_000 }, async () => {
  await page.getByLabel("Document title").fill("volcano.txt");
  await page.getByLabel("Document text").fill("Lava from the erupting volcano flowed down the mountain into the sea.");
  await page.getByRole("button", { name: "Add document" }).click();
  const item = page.locator("[data-testid=docs] .doc", { hasText: "volcano.txt" });
  await item.waitFor({ timeout: 60_000 });
  await page.getByLabel("Search query").fill("molten rock eruption");
  await page.locator("[data-testid=results] .hit").first().filter({ hasText: "volcano.txt" }).waitFor({ timeout: 60_000 });
  await page.getByRole("button", { name: "Delete volcano.txt" }).click();
  await item.waitFor({ state: "detached", timeout: 30_000 });
  const names = (await page.evaluate(() => window.shoal.documents())).map((d) => d.name);
  assert.ok(!names.includes("volcano.txt"));
});

test("screenshots: phone (390×844) and desktop", { timeout: 300_000 }, async () => {
  await page.evaluate(() => window.shoal.addSamples());
  for (const [name, vp] of [["desktop", { width: 1280, height: 900 }], ["phone", { width: 390, height: 844 }]]) {
    await page.setViewportSize(vp);
    await page.getByLabel("Search query").fill("");
    await page.getByLabel("Search query").fill("how long does it take to renew a passport");
    await page.locator("[data-testid=results] .hit").first().waitFor({ timeout: 60_000 });
    await page.waitForTimeout(300);
    await page.screenshot({ path: join(RESULTS, `${name}.png`), fullPage: name === "phone" });
  }
});

test("every request was same-origin", () => {
  assert.deepEqual(foreign(ctx.requests), []);
  assert.ok(ctx.requests.length > 0);
});
