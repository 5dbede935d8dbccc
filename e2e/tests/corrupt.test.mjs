// A truncated weight file served once is detected (size/hash against the manifest), discarded
// and fetched again; the app ends up ready with correct vectors. Then the profile and precision
// choices (light f16; exact f32 arithmetic vs the default int12 kernel) through the settings.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { launch, newContext, openApp, golden, cosine, foreign } from "../lib.mjs";

let browser, ctx;
after(async () => {
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

test("a truncated weight chunk is detected and recovered from", { timeout: 300_000 }, async () => {
  browser = await launch();
  ctx = await newContext(browser);
  let served = 0;
  await ctx.context.route(/\/models\/all-minilm-l6-v2\/f32\/weights\.003$/, async (route) => {
    served++;
    if (served === 1) {
      const res = await route.fetch();
      const body = await res.body();
      await route.fulfill({ response: res, body: body.subarray(0, body.length >> 1) });
    } else {
      await route.continue();
    }
  });
  const page = await openApp(ctx.context);
  assert.ok(served >= 2, `weights.003 fetched again after the bad copy (served ${served}×)`);
  const st = await page.evaluate(() => window.shoal.state());
  assert.ok(st.notices.some((n) => /weights\.003/.test(n.message)), JSON.stringify(st.notices));
  const g = golden().slice(0, 4);
  const v = await page.evaluate((t) => window.shoal.embed(t), g.map((x) => x.text));
  g.forEach((x, i) => assert.ok(cosine(v[i], x.vector) >= 0.9999));
  assert.deepEqual(foreign(ctx.requests), []);
});

test("the light profile (f16 weights) is selectable and stays within cosine ≥ 0.995", { timeout: 300_000 }, async () => {
  const page = ctx.context.pages()[0];
  await page.evaluate(() => window.shoal.configure({ profile: "f16", backend: "cpu" }));
  await page.waitForFunction(() => window.shoal.state().status === "ready", null, { timeout: 240_000 });
  assert.equal(await page.evaluate(() => window.shoal.profile()), "f16");
  assert.equal(await page.evaluate(() => window.shoal.backend()), "cpu");
  const g = golden().slice(0, 12);
  const v = await page.evaluate((t) => window.shoal.embed(t), g.map((x) => x.text));
  let worst = 1;
  g.forEach((x, i) => { worst = Math.min(worst, cosine(v[i], x.vector)); });
  console.log(`# f16 worst cosine ${worst.toFixed(6)}`);
  assert.ok(worst >= 0.995, `f16 worst cosine ${worst}`);
  // The choice persists across a reload.
  await page.reload();
  await page.waitForFunction(() => window.shoal && window.shoal.state().status === "ready", null, { timeout: 240_000 });
  assert.equal(await page.evaluate(() => window.shoal.profile()), "f16");
  assert.deepEqual(foreign(ctx.requests), []);
});

test("exact f32 arithmetic is selectable in the settings, persists, and the default is the int12 kernel", { timeout: 300_000 }, async () => {
  const page = ctx.context.pages()[0];
  const engines = () => page.evaluate(() => window.shoal.state().pool.workers.filter((w) => w.status === "ready").map((w) => w.engine));
  const ready = () => page.waitForFunction(() => window.shoal && window.shoal.state().status === "ready", null, { timeout: 240_000 })
    .then(() => page.evaluate(() => window.shoal.poolReady()));
  await page.selectOption('select[aria-label="Model profile"]', "f32-exact");
  await page.waitForFunction(() => window.shoal.precision() === "exact" && window.shoal.state().status === "ready", null, { timeout: 240_000 });
  await ready();
  assert.equal(await page.evaluate(() => window.shoal.profile()), "f32");
  const exact = await engines();
  assert.ok(exact.length >= 1 && exact.every((e) => /^fast-cpu \([^,]+\)$/.test(e)), `f32 arithmetic only: ${exact}`);
  assert.match(await page.textContent('[data-testid="backend"]'), /full, exact/);
  const g = golden().slice(0, 12);
  let v = await page.evaluate((t) => window.shoal.embed(t), g.map((x) => x.text));
  g.forEach((x, i) => assert.ok(cosine(v[i], x.vector) >= 0.9999, `exact: cosine ${cosine(v[i], x.vector)}`));
  // The choice persists across a reload.
  await page.reload();
  await ready();
  assert.equal(await page.evaluate(() => window.shoal.precision()), "exact");
  assert.equal(await page.inputValue('select[aria-label="Model profile"]'), "f32-exact");
  // Back to the default full profile: the f32 weights on the int12 kernel, same accuracy bound.
  await page.selectOption('select[aria-label="Model profile"]', "f32");
  await page.waitForFunction(() => window.shoal.precision() === "fast" && window.shoal.state().status === "ready", null, { timeout: 240_000 });
  await ready();
  const fast = await engines();
  assert.ok(fast.length >= 1 && fast.every((e) => /int12/.test(e)), `int12 kernel: ${fast}`);
  v = await page.evaluate((t) => window.shoal.embed(t), g.map((x) => x.text));
  g.forEach((x, i) => assert.ok(cosine(v[i], x.vector) >= 0.9999, `int12: cosine ${cosine(v[i], x.vector)}`));
  assert.deepEqual(foreign(ctx.requests), []);
});
