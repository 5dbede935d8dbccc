// Browser benchmark: Shoal (pool of CPU workers, f32/f16; WebGPU) vs transformers.js (ORT web,
// fp32/q8; WebGPU) on the same sentences in one headless Chromium session. Prints markdown.
// Run through e2e/bench/run (serves dist + bench assets on loopback). Env: BENCH_URL (server),
// BENCH_SECONDS (per measurement, default 3), BENCH_WEBGPU_SECONDS (budget per WebGPU part,
// default 60; 0 skips WebGPU), BENCH_ONLY (regexp over row names), BENCH_TRANSFER=1 (throughput
// calls return every vector to the harness as JSON, as runs 1–7 did, instead of a count).
import { chromium } from "playwright-core";
import { readFileSync, readdirSync, statSync, existsSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { browserPss } from "./proc.mjs";
import { execFileSync } from "node:child_process";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "../..");
const BASE = process.env.BENCH_URL;
if (!BASE) throw new Error("BENCH_URL is not set: run e2e/bench/run");
const SECONDS = Number(process.env.BENCH_SECONDS || 3);
const GPU_SECONDS = Number(process.env.BENCH_WEBGPU_SECONDS ?? 60);
const GPU_BATCH = 8; // small batches: one SwiftShader call must not run far past the budget
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : null;
const TRANSFER = process.env.BENCH_TRANSFER === "1";
const CHROMIUM = process.env.CHROMIUM || "/usr/lib/chromium/chromium";
const FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-gpu-sandbox", "--enable-precise-memory-info"];
const N = Math.max(1, Math.min(4, (await import("node:os")).cpus().length));
const log = (...a) => console.error("#", ...a);

// The native bench's sentences: xorshift over 25 words; short = 10 words (12 tokens with
// [CLS]/[SEP]), long = 126 words (128 tokens).
const WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
  "network", "policy", "student", "mountain", "signal", "careful", "harvest", "window",
  "language", "ancient", "machine", "coffee", "travel", "science", "morning", "music"];
function sentences(n, words, seed = 0x9E3779B97F4A7C15n) {
  const M = (1n << 64n) - 1n;
  let s = seed;
  const out = [];
  for (let i = 0; i < n; i++) {
    const ws = [];
    for (let j = 0; j < words; j++) {
      s ^= (s << 13n) & M; s ^= s >> 7n; s ^= (s << 17n) & M;
      ws.push(WORDS[Number(s % BigInt(WORDS.length))]);
    }
    out.push(ws.join(" "));
  }
  return out;
}
const SHORT = sentences(256, 10);
const LONG = sentences(256, 126, 0x1234567887654321n);
const GOLDEN = JSON.parse(readFileSync(join(ROOT, "node-lite/model/tests/data/golden.json"), "utf8")).items;

function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

// ------------------------------------------------------------------ engines
// Each engine: open(page) → first vector (cold), embed(page, texts) → vectors.
// backend "cpu": the best build the browser validates (relaxed SIMD here); "cpu-simd": the plain
// simd128 build (no FMA), for comparison. On the CPU the dense layers run on the integer kernel:
// int8 weights for profile f16 (compact), int12 for f32; precision "exact" keeps f32 arithmetic.
const shoal = (workers, profile, backend = "cpu", precision = "") => ({
  name: `Shoal ${backend === "webgpu" ? "WebGPU" : `CPU ${workers} worker${workers > 1 ? "s" : ""}`} ${
    backend === "webgpu" ? profile : precision === "exact" ? `${profile} exact` : profile === "f16" ? "f16→int8" : "f32→int12"}${
    backend === "cpu-simd" ? " (simd128)" : ""}`,
  async open(page) {
    const extra = precision ? `&precision=${precision}` : "";
    await page.goto(`${BASE}?backend=${backend}&workers=${workers}&profile=${profile}${extra}`, { waitUntil: "load" });
    await page.waitForFunction(() => window.shoal && window.shoal.ready, null, { timeout: 60_000 });
    const v = await page.evaluate(() => window.shoal.embed(["first vector"]));
    if (v[0].length !== 384) throw new Error("bad vector");
  },
  async settle(page) {
    await page.evaluate(() => window.shoal.poolReady());
    const st = await page.evaluate(() => ({ backend: window.shoal.backend(), workers: window.shoal.workers() }));
    const want = backend.startsWith("cpu") ? "cpu" : backend;
    if (st.backend !== want) throw new Error(`backend ${st.backend}, wanted ${want}`);
    if (want === "cpu" && st.workers !== workers) throw new Error(`workers ${st.workers}, wanted ${workers}`);
  },
  embed: (page, texts) => page.evaluate((t) => window.shoal.embed(t), texts),
  // Throughput: Shoal's own output (Float32Array views), only the count back to the harness.
  count: (page, texts) => page.evaluate(async (t) => {
    const v = await window.shoal.embedFloat(t);
    if (v.some((x) => x.length !== 384)) throw new Error("bad output");
    return v.length;
  }, texts),
});
const tjs = (dtype, threads, device = "wasm") => ({
  name: `transformers.js ${device === "webgpu" ? "WebGPU" : `wasm ${threads} thread${threads > 1 ? "s" : ""}`} ${dtype}`,
  async open(page) {
    await page.goto(`${BASE}bench/tjs.html?threads=${threads}`, { waitUntil: "load" });
    await page.waitForFunction(() => window.tjs, null, { timeout: 60_000 });
    await page.evaluate(([d, dev]) => window.tjs.load(d, dev), [dtype, device]);
    const v = await page.evaluate(() => window.tjs.embed(["first vector"]));
    if (v[0].length !== 384) throw new Error("bad vector");
  },
  async settle(page) {
    if (threads > 1 && !(await page.evaluate(() => window.tjs.isolated))) throw new Error("page not cross-origin isolated: no threads");
  },
  embed: (page, texts) => page.evaluate((t) => window.tjs.embed(t), texts),
  count: (page, texts) => page.evaluate((t) => window.tjs.embedCount(t), texts),
});

// Sentences/s: batches of `batch` texts from `pool`, at least `minCalls`, for ≥ `seconds`.
async function rate(e, page, pool, batch, seconds, minCalls = 2) {
  let done = 0, calls = 0, i = 0;
  const t0 = Date.now();
  while (calls < minCalls || (Date.now() - t0) / 1000 < seconds) {
    const texts = [];
    for (let k = 0; k < batch; k++) texts.push(pool[i++ % pool.length]);
    // Each engine returns its native output inside the page; only the count crosses CDP
    // (moving 32 × 384 numbers as JSON would cost the harness more than some engines' compute).
    const n = TRANSFER ? (await e.embed(page, texts)).length : await e.count(page, texts);
    if (n !== batch) throw new Error("wrong count");
    done += batch;
    calls++;
  }
  return done / ((Date.now() - t0) / 1000);
}

async function cpuRow(browser, e, baselinePss) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const wasm = new Set();
  context.on("request", (r) => { if (/\.wasm$/.test(r.url())) wasm.add(new URL(r.url()).pathname); });
  const page = await context.newPage();
  page.on("pageerror", (err) => log(`${e.name}: pageerror ${err.message}`));
  try {
    let t = Date.now();
    await e.open(page);
    const coldEmpty = Date.now() - t;
    t = Date.now();
    await e.open(page); // navigate again: cached weights (Cache API / HTTP)
    const coldWarm = Date.now() - t;
    await e.settle(page);
    const vecs = await e.embed(page, GOLDEN.map((g) => g.text));
    const minCos = Math.min(...GOLDEN.map((g, i) => cosine(vecs[i], g.vector)));
    await e.embed(page, SHORT.slice(0, 2)); // warm-up
    await e.embed(page, LONG.slice(0, 2));
    const r = {
      shortB1: await rate(e, page, SHORT, 1, SECONDS, 4),
      shortB32: await rate(e, page, SHORT, 32, SECONDS, 2),
      longB1: await rate(e, page, LONG, 1, SECONDS, 3),
      longB32: await rate(e, page, LONG, 32, SECONDS, 1),
    };
    const heap = await page.evaluate(() => performance.memory ? performance.memory.usedJSHeapSize / 1e6 : NaN);
    const pss = browserPss() - baselinePss;
    return { name: e.name, coldEmpty, coldWarm, minCos, ...r, heap, pss, wasm: [...wasm] };
  } finally {
    await context.close();
  }
}

async function gpuRow(browser, e) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (err) => log(`${e.name}: pageerror ${err.message}`));
  try {
    const t = Date.now();
    await e.open(page);
    const cold = Date.now() - t;
    await e.settle(page);
    const out = { name: e.name, cold };
    for (const [key, pool] of [["short", SHORT], ["long", LONG]]) {
      let done = 0;
      const t0 = Date.now();
      while (done < 200 && (Date.now() - t0) / 1000 < GPU_SECONDS) {
        const v = await e.embed(page, pool.slice(done, done + Math.min(GPU_BATCH, 200 - done)));
        done += v.length;
      }
      out[key] = { done, rate: done / ((Date.now() - t0) / 1000) };
    }
    return out;
  } catch (err) {
    return { name: e.name, error: String(err.message || err).split("\n")[0].slice(0, 160) };
  } finally {
    await Promise.race([context.close(), new Promise((r) => setTimeout(r, 10_000))]).catch(() => {});
  }
}

function sizes(files) {
  return files.filter((f) => existsSync(f)).map((f) => {
    const b = readFileSync(f);
    return { file: f.replace(ROOT + "/", ""), raw: b.length, gzip: gzipSync(b, { level: 9 }).length };
  });
}

const f0 = (x) => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2)) : "—");
const sec = (ms) => `${(ms / 1000).toFixed(1)} s`;

async function main() {
  const browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: FLAGS });
  const idle = await browser.newPage();
  await idle.goto("about:blank");
  const baselinePss = browserPss();
  await idle.close();
  const engines = [
    shoal(1, "f32", "cpu", "exact"), shoal(N, "f32", "cpu", "exact"),
    shoal(1, "f32"), shoal(N, "f32"), shoal(1, "f16"), shoal(N, "f16"),
    tjs("fp32", 1), tjs("fp32", N), tjs("q8", 1), tjs("q8", N),
  ].filter((e) => !ONLY || ONLY.test(e.name));
  const rows = [];
  const wasmSeen = new Set();
  for (const e of engines) {
    log(`${e.name}…`);
    try {
      const r = await cpuRow(browser, e, baselinePss);
      r.wasm.forEach((w) => wasmSeen.add(w));
      rows.push(r);
      log(JSON.stringify(r));
    } catch (err) {
      rows.push({ name: e.name, error: String(err.message || err).split("\n")[0].slice(0, 160) });
      log(`${e.name} failed: ${err.message}`);
    }
  }
  await browser.close();

  const gpuRows = [];
  if (GPU_SECONDS > 0) {
    const gb = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: [...FLAGS, "--enable-unsafe-webgpu"] });
    for (const e of [shoal(1, "f32", "webgpu"), tjs("fp32", 1, "webgpu")].filter((e) => !ONLY || ONLY.test(e.name))) {
      log(`${e.name}…`);
      const r = await gpuRow(gb, e);
      gpuRows.push(r);
      log(JSON.stringify(r));
    }
    await gb.close();
  }

  // ------------------------------------------------------------------ report
  const chromeVersion = execFileSync(CHROMIUM, ["--version"]).toString().trim();
  const tjsVersion = JSON.parse(readFileSync(join(HERE, "node_modules/@huggingface/transformers/package.json"), "utf8")).version;
  const ortVersion = JSON.parse(readFileSync(join(HERE, "node_modules/onnxruntime-web/package.json"), "utf8")).version;
  const out = [];
  out.push(`Browser benchmark — ${chromeVersion}, headless, ${N} cores; transformers.js ${tjsVersion} (onnxruntime-web ${ortVersion}); ${SECONDS} s per cell; ${new Date().toISOString().slice(0, 16)}Z`);
  out.push("");
  out.push(`Sentences/s, warm (short = 12 tokens, long = 128 tokens; b = texts per call; ${TRANSFER ? "every vector goes back to the harness as JSON" : "each engine keeps its own output in the page, only the count goes back to the harness"}). Cold = navigation → first vector, empty cache / warm cache (includes model load). Min cosine = worst of the 34 golden sentences vs sentence-transformers. Memory: page JS heap; PSS = whole browser process tree minus an idle browser.`);
  out.push("");
  out.push("| engine | short b1 | short b32 | long b1 | long b32 | cold (empty cache) | cold (warm cache) | min cosine | JS heap (MB) | PSS (MB) | wasm |");
  out.push("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
  const build = (r) => r.wasm.map((p) => p.split("/").pop().replace(/_bg\.wasm$|\.wasm$/, "")).filter((n) => n !== "shoal-app").join(", ");
  for (const r of rows) {
    if (r.error) { out.push(`| ${r.name} | failed: ${r.error} | | | | | | | | | |`); continue; }
    out.push(`| ${r.name} | ${f0(r.shortB1)} | ${f0(r.shortB32)} | ${f0(r.longB1)} | ${f0(r.longB32)} | ${sec(r.coldEmpty)} | ${sec(r.coldWarm)} | ${r.minCos.toFixed(6)} | ${f0(r.heap)} | ${f0(r.pss)} | ${build(r)} |`);
  }
  if (gpuRows.length) {
    out.push("");
    out.push(`WebGPU (SwiftShader, no GPU here): 200 short + 200 long in batches of ${GPU_BATCH}, at most ${GPU_SECONDS} s per part (texts done in brackets).`);
    out.push("");
    out.push("| engine | short/s | long/s | cold (empty cache) |");
    out.push("| --- | --- | --- | --- |");
    for (const r of gpuRows) {
      if (r.error) { out.push(`| ${r.name} | failed: ${r.error} | | |`); continue; }
      out.push(`| ${r.name} | ${f0(r.short.rate)} (${r.short.done}) | ${f0(r.long.rate)} (${r.long.done}) | ${sec(r.cold)} |`);
    }
  }
  const files = [
    join(ROOT, "dist/shoal-app_bg.wasm"), join(ROOT, "dist/shoal-worker-cpu_bg.wasm"), join(ROOT, "dist/shoal-worker-cpu-simd_bg.wasm"), join(ROOT, "dist/shoal-worker-cpu-relaxed_bg.wasm"), join(ROOT, "dist/shoal-worker_bg.wasm"),
    join(ROOT, "dist/shoal-app.js"), join(ROOT, "dist/shoal-worker-cpu.js"),
    ...[...wasmSeen].filter((p) => p.startsWith("/bench/ort/")).map((p) => join(HERE, "node_modules/onnxruntime-web/dist", p.slice("/bench/ort/".length))),
    join(HERE, "node_modules/@huggingface/transformers/dist/transformers.js"),
  ];
  out.push("");
  out.push("| download | raw | gzip |");
  out.push("| --- | --- | --- |");
  for (const s of sizes([...new Set(files)])) out.push(`| ${s.file.replace(/^e2e\/bench\/node_modules\//, "")} | ${(s.raw / 1e6).toFixed(2)} MB | ${(s.gzip / 1e6).toFixed(2)} MB |`);
  const modelDir = process.env.BENCH_MODELS || join(process.env.HOME, ".cache/shoal/tjs");
  const m = (p) => { try { return (statSync(p).size / 1e6).toFixed(1) + " MB"; } catch (_) { return "—"; } };
  const shoalDir = process.env.SHOAL_MODEL_DIR || join(process.env.HOME, ".cache/shoal/models/all-minilm-l6-v2");
  const dirSize = (d) => { try { return (readdirSync(d).reduce((s, f) => s + statSync(join(d, f)).size, 0) / 1e6).toFixed(1) + " MB"; } catch (_) { return "—"; } };
  out.push(`| weights: Shoal f32 / f16 | ${dirSize(join(shoalDir, "f32"))} / ${dirSize(join(shoalDir, "f16"))} | |`);
  out.push(`| weights: ONNX fp32 / q8 | ${m(join(modelDir, "all-minilm-l6-v2/onnx/model.onnx"))} / ${m(join(modelDir, "all-minilm-l6-v2/onnx/model_quantized.onnx"))} | |`);
  console.log(out.join("\n"));
}

main().catch((e) => { console.error(e); process.exit(1); });
