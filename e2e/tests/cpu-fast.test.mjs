// The fast CPU encoder in the browser, in its three wasm builds: `shoal-worker-cpu-relaxed`
// (relaxed-SIMD FMA GEMM kernel, what browsers with relaxed SIMD load), `shoal-worker-cpu-simd`
// (wasm simd128 kernel; forced here with backend "cpu-simd") and `shoal-worker-cpu` (scalar, for
// browsers without SIMD; forced with "cpu-scalar"). Each build runs its GEMM self-test (every
// compiled f32 kernel against an f64 reference, every integer kernel — int8 and int12 weights —
// against the exact integer product, on odd shapes), must reproduce the golden vectors in its
// three engines — f32 weights on the int12 kernel (the default) and in f32 arithmetic
// (precision "exact"): cosine ≥ 0.9999; the compact f16 weights on the int8 kernel: ≥ 0.995;
// the scalar build runs f32 arithmetic throughout, faster there than its integer tile —
// and, on demand (a benchmark, not a test: SHOAL_BENCH_SECONDS=3 e2e/run e2e/tests/cpu-fast.test.mjs),
// reports single-worker throughput (short ≈ 12 tokens, long = 128 tokens; batch 1 and 32) for
// each — one worker = one thread.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { launch, newContext, openApp, golden, cosine } from "../lib.mjs";

const WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
  "network", "policy", "student", "mountain", "signal", "careful", "harvest", "window",
  "language", "ancient", "machine", "coffee", "travel", "science", "morning", "music"];

// The same deterministic sentences as shoal-bench (one token per word, + [CLS]/[SEP]).
function sentences(n, words) {
  let s = 0x9E3779B97F4A7C15n;
  const mask = (1n << 64n) - 1n;
  const out = [];
  for (let i = 0; i < n; i++) {
    const w = [];
    for (let j = 0; j < words; j++) {
      s ^= (s << 13n) & mask;
      s ^= s >> 7n;
      s ^= (s << 17n) & mask;
      w.push(WORDS[Number(s % BigInt(WORDS.length))]);
    }
    out.push(w.join(" "));
  }
  return out;
}

const BUILDS = [
  {
    backend: "cpu", wasm: "shoal-worker-cpu-relaxed",
    kernels: ["scalar", "simd128", "relaxed-simd", "int8-scalar", "int12-scalar", "int8-simd128", "int12-simd128"],
    engine: { f32: "fast-cpu (relaxed-simd, int12-simd128)", exact: "fast-cpu (relaxed-simd)", f16: "fast-cpu (relaxed-simd, int8-simd128)" },
  },
  {
    backend: "cpu-simd", wasm: "shoal-worker-cpu-simd",
    kernels: ["scalar", "simd128", "int8-scalar", "int12-scalar", "int8-simd128", "int12-simd128"],
    engine: { f32: "fast-cpu (simd128, int12-simd128)", exact: "fast-cpu (simd128)", f16: "fast-cpu (simd128, int8-simd128)" },
  },
  {
    backend: "cpu-scalar", wasm: "shoal-worker-cpu", kernels: ["scalar", "int8-scalar", "int12-scalar"],
    // Without SIMD the integer tile is slower than the f32 one: this build stays f32.
    engine: { f32: "fast-cpu (scalar)", exact: "fast-cpu (scalar)", f16: "fast-cpu (scalar)" },
  },
];
// Seconds per throughput cell; unset or 0 skips the throughput table (9 engines × 4 cells).
const SECONDS = Number(process.env.SHOAL_BENCH_SECONDS || 0);
const BENCH = SECONDS > 0 ? {} : { skip: "benchmark: set SHOAL_BENCH_SECONDS (e.g. 3) to measure" };

let browser, ctx, page;
const table = [];
before(async () => {
  browser = await launch();
  ctx = await newContext(browser);
  page = await openApp(ctx.context, "?backend=cpu");
  // Helpers in the page: one dedicated model worker per name, driven by its message protocol.
  await page.evaluate(() => {
    window.__workers = {};
    window.__call = (name, msg, want) => new Promise((resolve, reject) => {
      const w = window.__workers[name] || (window.__workers[name] = new Worker("./worker.js"));
      w.onmessage = (ev) => {
        const m = ev.data;
        if (m.type === "error") reject(new Error(m.message));
        else if (m.type === want) resolve(m);
      };
      w.postMessage(msg);
    });
    window.__embed = async (name, texts) => {
      const m = await window.__call(name, { type: "embed", id: 1, texts }, "embedded");
      const out = [];
      for (let i = 0; i < texts.length; i++) out.push(Array.from(m.vectors.subarray(i * m.dim, (i + 1) * m.dim)));
      return out;
    };
    // Sentences/s embedding `texts` in calls of `batch`, for at least `secs` (and ≥ 1 call).
    window.__rate = async (name, texts, batch, secs) => {
      await window.__call(name, { type: "embed", id: 0, texts: texts.slice(0, batch) }, "embedded"); // warm-up
      const t0 = performance.now();
      let done = 0;
      do {
        for (let i = 0; i < texts.length; i += batch) {
          const chunk = texts.slice(i, i + batch);
          await window.__call(name, { type: "embed", id: 0, texts: chunk }, "embedded");
          done += chunk.length;
          if (performance.now() - t0 > secs * 1000) break;
        }
      } while (performance.now() - t0 < secs * 1000);
      return done / ((performance.now() - t0) / 1000);
    };
  });
});
after(async () => {
  if (table.length) {
    console.log("# browser, one worker (one thread), sentences/s");
    console.log("# | build | short b1 | short b32 | long b1 | long b32 |");
    for (const r of table) console.log(`# | ${r.join(" | ")} |`);
  }
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

for (const b of BUILDS) {
  test(`${b.wasm}: GEMM self-test of every compiled kernel`, { timeout: 300_000 }, async () => {
    const r = await page.evaluate((b) => window.__call(`${b.backend}-selftest`, { type: "selftest", backend: b.backend }, "selftest"), b);
    assert.equal(r.wasm, b.wasm);
    assert.deepEqual(r.kernels.map((k) => k.kernel), b.kernels);
    for (const k of r.kernels) assert.ok(k.cases > (k.kernel.startsWith("int") ? 6000 : 14000), `${k.kernel}: ${k.cases} cases`);
    console.log(`# ${b.wasm} self-test: ${JSON.stringify(r.kernels)}`);
  });

  // [engine key, weights, precision, bound]
  const ENGINES = [["f32", "f32", undefined, 0.9999], ["exact", "f32", "exact", 0.9999], ["f16", "f16", undefined, 0.995]];
  for (const [key, variant, precision, bound] of ENGINES) {
    test(`${b.wasm} ${key}: golden vectors (cosine ≥ ${bound})`, { timeout: 300_000 }, async () => {
      const name = `${b.backend}-${key}`;
      const ready = await page.evaluate(([name, backend, variant, precision]) =>
        window.__call(name, { type: "init", base: "models/all-minilm-l6-v2", variant, backend, precision }, "ready"),
      [name, b.backend, variant, precision]);
      assert.equal(ready.backend, "cpu");
      assert.equal(ready.wasm, b.wasm);
      assert.equal(ready.engine, b.engine[key]);
      const items = golden();
      const vecs = await page.evaluate(([name, texts]) => window.__embed(name, texts), [name, items.map((i) => i.text)]);
      let worst = 1;
      items.forEach((it, i) => {
        const c = cosine(vecs[i], it.vector);
        worst = Math.min(worst, c);
        assert.ok(c >= bound, `cosine ${c} for ${JSON.stringify(it.text.slice(0, 40))}`);
      });
      console.log(`# ${b.wasm} ${key}: ${items.length} golden sentences, worst cosine ${worst.toFixed(7)}`);
    });
  }

  for (const [key] of ENGINES) {
    test(`${b.wasm} ${key}: single-worker throughput`, { timeout: 600_000, ...BENCH }, async () => {
      const name = `${b.backend}-${key}`;
      const short = sentences(64, 10);
      const long = sentences(64, 126);
      const secs = b.backend === "cpu-scalar" ? SECONDS / 2 : SECONDS;
      const r = [];
      for (const [texts, batch] of [[short, 1], [short, 32], [long, 1], [long, 32]]) {
        r.push(await page.evaluate(([name, texts, batch, secs]) => window.__rate(name, texts, batch, secs), [name, texts, batch, secs]));
      }
      const label = { f32: "f32 (int12)", exact: "f32 (exact)", f16: "f16 (int8)" }[key];
      table.push([`${b.wasm} ${label}`, ...r.map((v) => v.toFixed(v < 20 ? 1 : 0))]);
      console.log(`# ${b.wasm} ${label}: short b1 ${r[0].toFixed(1)}, short b32 ${r[1].toFixed(1)}, long b1 ${r[2].toFixed(2)}, long b32 ${r[3].toFixed(2)} sentences/s`);
      assert.ok(r.every((v) => v > 0));
    });
  }
}
