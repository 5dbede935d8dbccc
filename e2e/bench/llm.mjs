// Browser benchmark of the assistant: Shoal's chat engine (window.shoal.chat: our integer
// kernels in the page's worker wasm; 1 worker, and 2 workers splitting every forward pass when
// the page is cross-origin isolated) vs wllama (llama.cpp compiled to wasm, CPU) on the same
// GGUF, in one headless Chromium session. Prints markdown.
// Run through e2e/bench/run --llm. Env: BENCH_URL (server), BENCH_GGUF (file name under
// /bench/gguf/), BENCH_RUNS (default 2; best run kept), BENCH_ONLY (regexp over row names).
import { chromium } from "playwright-core";
import { readFileSync } from "node:fs";
import { gzipSync } from "node:zlib";
import { join, dirname } from "node:path";
import { fileURLToPath } from "node:url";
import { browserPss } from "./proc.mjs";

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = join(HERE, "../..");
const BASE = process.env.BENCH_URL;
if (!BASE) throw new Error("BENCH_URL is not set: run e2e/bench/run --llm");
const GGUF = process.env.BENCH_GGUF || "SmolLM2-135M-Instruct.Q4_1.gguf";
const RUNS = Number(process.env.BENCH_RUNS || 2);
const ONLY = process.env.BENCH_ONLY ? new RegExp(process.env.BENCH_ONLY) : null;
const CHROMIUM = process.env.CHROMIUM || "/usr/lib/chromium/chromium";
const FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--enable-precise-memory-info"];
const log = (...a) => console.error("#", ...a);

// Prompts as the native bench (shoal-llm-bench): words drawn by a multiplicative walk, a
// different salt per run (llama.cpp would otherwise serve a repeated prompt from its cache).
const WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
  "network", "seven", "blue"];
function words(n, salt) {
  let i = salt;
  const out = [];
  for (let k = 0; k < n; k++) {
    out.push(WORDS[i % WORDS.length]);
    i = (i * 7 + 3) % 1_000_003;
  }
  return out.join(" ");
}
// ≈ 512 prompt tokens (with the template), and a question that makes the model write on.
const LONG = (salt) => [{ role: "user", content: `${words(400, salt)}\n\nSummarise the text above in one sentence.` }];
const STORY = (salt) => [{ role: "user", content: `Write a long story about a ${WORDS[salt % WORDS.length]} ${WORDS[(salt + 5) % WORDS.length]}, with many details.` }];
const SHORT = (salt) => [{ role: "user", content: `${words(40, salt)}\nWhat is this about?` }];

const gz = (file) => {
  const b = readFileSync(file);
  return `${(b.length / 1e6).toFixed(1)} MB (${(gzipSync(b).length / 1e6).toFixed(1)} MB gzip)`;
};

const rows = [];
const want = (name) => !ONLY || ONLY.test(name);
const browser = await chromium.launch({ executablePath: CHROMIUM, args: FLAGS });

async function wllamaRow(threads) {
  const name = `wllama (llama.cpp wasm), ${threads} thread${threads > 1 ? "s" : ""}`;
  if (!want(name)) return;
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on("pageerror", (e) => log("wllama page error:", e.message));
  await page.goto(`${BASE}bench/wllama.html`);
  await page.waitForFunction(() => window.wl);
  if (threads > 1 && !(await page.evaluate(() => window.wl.isolated))) throw new Error("bench page not cross-origin isolated");
  const loadMs = await page.evaluate(([u, t]) => window.wl.load(u, t), [`/bench/gguf/${GGUF}`, threads]);
  await page.evaluate((m) => window.wl.chat(m, 8), SHORT(99)); // warm-up
  let best = { prefill: 0, decode: 0, ttft: Infinity };
  for (let r = 0; r < RUNS; r++) {
    const p = await page.evaluate((m) => window.wl.chat(m, 1), LONG(r));
    best.prefill = Math.max(best.prefill, p.prefill_tok_s);
    const d = await page.evaluate((m) => window.wl.chat(m, 128), STORY(r));
    if (d.predicted_n >= 32) best.decode = Math.max(best.decode, d.decode_tok_s);
  }
  // Time to the first token on a new visit (the file in the HTTP cache): navigation → module
  // and model loaded → the first token of a short prompt, as the page's own clock says.
  for (let r = 0; r < RUNS; r++) {
    await page.goto(`${BASE}bench/wllama.html`);
    await page.waitForFunction(() => window.wl);
    const ms = await page.evaluate(async ([u, t, m]) => {
      await window.wl.load(u, t);
      await window.wl.chat(m, 1);
      return performance.now();
    }, [`/bench/gguf/${GGUF}`, threads, SHORT(1000 + r)]);
    best.ttft = Math.min(best.ttft, ms);
  }
  rows.push({ name, threads, ...best, load: loadMs, mem: browserPss(),
    wasm: gz(join(HERE, "node_modules/@wllama/wllama/esm/wasm/wllama.wasm")) });
  await ctx.close();
}

// `rowSplit`: the two workers split every matrix by rows (five exchanges a layer) instead of by
// heads and FFN units (two) — the comparison row.
async function shoalRow(workers, rowSplit = false) {
  const name = `Shoal, ${workers} worker${workers > 1 ? "s" : ""}${rowSplit ? ", row split" : ""}`;
  if (!want(name)) return;
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  page.on("pageerror", (e) => log("shoal page error:", e.message));
  const url = `${BASE}?backend=cpu&chat_workers=${workers}${rowSplit ? "&chat_split=rows" : ""}`;
  await page.goto(url);
  await page.waitForFunction(() => window.shoal && window.shoal.chat);
  // First answer: downloads, verifies and caches the weights.
  await page.evaluate((m) => window.shoal.chat({ messages: m, max_tokens: 8, temperature: 0 }), SHORT(99));
  const info = await page.evaluate(() => (window.shoal.chatInfo ? window.shoal.chatInfo() : {}));
  let best = { prefill: 0, decode: 0, ttft: Infinity };
  for (let r = 0; r < RUNS; r++) {
    const p = await page.evaluate((m) => window.shoal.chat({ messages: m, max_tokens: 1, temperature: 0 }), LONG(r));
    best.prefill = Math.max(best.prefill, p.prefill_tok_s);
    const d = await page.evaluate((m) => window.shoal.chat({ messages: m, max_tokens: 128, temperature: 0 }), STORY(r));
    if (d.tokens.length >= 32 && d.decode_tok_s > best.decode) {
      best.decode = d.decode_tok_s;
      // Two workers: the leader's exchanges and waits over the answer, per generated token.
      if (d.peer) {
        // The follower's counters arrive in its own message, just after the leader's answer.
        await new Promise((ok) => setTimeout(ok, 200));
        const fp = await page.evaluate(() => window.shoal.chatInfo()?.follower_peer || null);
        best.peer = { ...d.peer, tokens: d.tokens.length, follower: fp };
      }
    }
  }
  const mem = browserPss();
  // Time to the first token on a new visit (weights in the Cache API): navigation → wasm,
  // weights verified and loaded → the first streamed token of a short prompt (page clock).
  for (let r = 0; r < RUNS; r++) {
    await page.goto(url);
    await page.waitForFunction(() => window.shoal && window.shoal.chat);
    const ms = await page.evaluate((m) => new Promise((resolve, reject) => {
      let done = false;
      window.shoal.chat({ messages: m, max_tokens: 4, temperature: 0,
        onToken: () => { if (!done) { done = true; resolve(performance.now()); } } }).catch(reject);
    }), SHORT(1000 + r));
    best.ttft = Math.min(best.ttft, ms);
  }
  const worker = info.wasm || "shoal-worker-cpu-relaxed";
  rows.push({ name, threads: workers, ...best, mem, kernel: info.kernel || "",
    wasm: gz(join(ROOT, "dist", `${worker}_bg.wasm`)) });
  await ctx.close();
}

for (const t of [1, 2]) {
  await wllamaRow(t);
  await shoalRow(t);
}
await shoalRow(2, true);
await browser.close();

const f = (x, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "—");
console.log(`\nChromium ${browser.version()}, GGUF ${GGUF}, best of ${RUNS}; prefill = ≈512-token prompt, decode = up to 128 tokens, first token = from navigation of a new visit (weights cached) to the first token of a 40-word prompt\n`);
console.log("| engine | prefill tok/s | decode tok/s | first token | browser memory (PSS) | wasm |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const r of rows) {
  console.log(`| ${r.name}${r.kernel ? ` (${r.kernel})` : ""} | ${f(r.prefill)} | ${f(r.decode)} | ${f(r.ttft, 0)} ms | ${f(r.mem, 0)} MB | ${r.wasm} |`);
}
console.log();
for (const r of rows.filter((r) => r.peer)) {
  const p = r.peer, n = p.tokens;
  console.log(`${r.name}: per generated token (the decode run, prefill included) ${(p.exchanges / n).toFixed(0)} exchanges, ${(p.wait_ms / n).toFixed(2)} ms waiting in them and ${(p.gate_ms / n).toFixed(2)} ms at the step gate, of ${(1000 / r.decode).toFixed(2)} ms a token`);
  if (p.follower) console.log(`${r.name}: the follower ${(p.follower.wait_ms / n).toFixed(2)} ms waiting in exchanges and ${(p.follower.gate_ms / n).toFixed(2)} ms at the step gate, per token`);
}
for (const t of [1, 2]) {
  const s = rows.find((r) => r.name.startsWith("Shoal") && r.threads === t && !r.name.endsWith("row split"));
  const w = rows.find((r) => r.name.startsWith("wllama") && r.threads === t);
  if (s && w) console.log(`${t} thread(s): prefill ${(s.prefill / w.prefill).toFixed(2)}×, decode ${(s.decode / w.decode).toFixed(2)}× wllama (target ≥ 4×)`);
}
