// The WebGPU path: --enable-unsafe-webgpu gives a SwiftShader adapter here (correct, slow).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { launch, newContext, openApp, golden, cosine, foreign } from "../lib.mjs";

let browser, ctx;
after(async () => {
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

test("shoal.embed on WebGPU matches the golden vectors (cosine ≥ 0.9999)", { timeout: 540_000 }, async () => {
  browser = await launch({ webgpu: true });
  ctx = await newContext(browser);
  const t0 = Date.now();
  const page = await openApp(ctx.context);
  console.log(`# WebGPU ready after ${Date.now() - t0} ms`);
  assert.equal(await page.evaluate(() => window.shoal.backend()), "webgpu");
  // A subset keeps SwiftShader's per-shape shader compiles bounded.
  const items = golden().filter((_, i) => i < 8 || i === 13 || i === 24);
  const t1 = Date.now();
  const vecs = await page.evaluate((t) => window.shoal.embed(t), items.map((i) => i.text));
  console.log(`# WebGPU golden: ${items.length} sentences in ${Date.now() - t1} ms (first call, includes shader compiles)`);
  let worst = 1;
  items.forEach((it, i) => {
    const c = cosine(vecs[i], it.vector);
    worst = Math.min(worst, c);
    assert.ok(c >= 0.9999, `cosine ${c} for ${JSON.stringify(it.text.slice(0, 40))}`);
  });
  console.log(`# WebGPU worst cosine ${worst.toFixed(6)}`);
  const t2 = Date.now();
  await page.evaluate((t) => window.shoal.embed(t), items.map((i) => i.text));
  console.log(`# WebGPU warm: ${(items.length / ((Date.now() - t2) / 1000)).toFixed(2)} sentences/s`);
  assert.deepEqual(foreign(ctx.requests), []);
});
