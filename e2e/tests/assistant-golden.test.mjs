// The assistant's engine in Chromium against references nobody here wrote, in the chat
// worker's own builds: the kernel self-test of every block type against an f64 reference
// (relaxed SIMD, simd128, scalar builds); then, on the build browsers load (relaxed SIMD) and on
// the plain simd128 one, the golden file node-lite/llm/tests/golden.rs uses (llama.cpp via
// llama-cpp-python; templates rendered by jinja2): prompt token ids equal exactly, greedy
// continuations equal for up to 32 tokens except after a step whose reference top-2 margin is
// below NEAR_TIE (the native test's rule), first-step logits to MIN_COSINE. Then the numbers
// the README quotes, through window.shoal.chat in one worker: prefill and decode tokens/s and
// the time to the first token with cached weights.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { launch, newContext, openApp, installWorkerCall, foreign, ROOT } from "../lib.mjs";

// Same constants as node-lite/llm/tests/golden.rs.
const NEAR_TIE = 0.5;
const MIN_COSINE = 0.999;
const DATA = join(ROOT, "node-lite/llm/tests/data");
const GOLDEN = JSON.parse(readFileSync(join(DATA, "golden.json"), "utf8"));
const LOGITS = readFileSync(join(DATA, GOLDEN.logits.file));

const BUILDS = [
  { backend: "cpu", wasm: "shoal-worker-cpu-relaxed", tier: "relaxed-simd", chats: GOLDEN.chats.map((_, i) => i) },
  { backend: "cpu-simd", wasm: "shoal-worker-cpu-simd", tier: "simd128", chats: [0, 2, 9, 21] },
];

let browser, ctx, page;
const numbers = [];
before(async () => {
  browser = await launch();
  ctx = await newContext(browser);
  page = await openApp(ctx.context, "?workers=1");
  // A dedicated chat worker per name, driven by its message protocol (worker.js).
  await installWorkerCall(page);
});
after(async () => {
  if (numbers.length) console.log(numbers.map((l) => `# ${l}`).join("\n"));
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

for (const [backend, wasm] of [["cpu", "shoal-worker-cpu-relaxed"], ["cpu-simd", "shoal-worker-cpu-simd"], ["cpu-scalar", "shoal-worker-cpu"]]) {
  test(`${wasm}: the chat kernels' self-test (every block type vs an f64 reference)`, { timeout: 300_000 }, async () => {
    const r = await page.evaluate((b) => window.__call(`selftest-${b}`, { type: "chat-selftest", backend: b }, "chat-selftest"), backend);
    assert.equal(r.wasm, wasm);
    const types = ["F32", "F16", "Q8_0", "Q4_0", "Q4_1", "Q4_K", "Q6_K"];
    for (const t of types) assert.ok(r.kernels.some((k) => k.kernel === `${r.tier}/${t}`), `${r.tier}/${t} tested: ${JSON.stringify(r.kernels)}`);
    assert.ok(r.kernels.some((k) => k.kernel.startsWith("scalar/")), "the scalar ground truth too");
    numbers.push(`${wasm} chat self-test (${r.tier}): ${r.kernels.map((k) => `${k.kernel} ${k.worst.toExponential(1)}`).join(", ")}`);
  });
}

for (const b of BUILDS) {
  test(`${b.wasm}: prompt ids, greedy tokens and first logits equal llama.cpp's (golden)`, { timeout: 600_000 }, async () => {
    const name = `golden-${b.backend}`;
    const ready = await page.evaluate(([name, backend]) =>
      window.__call(name, { type: "chat-init", model: { kind: "builtin", base: "models/smollm2-135m-instruct" }, backend }, "chat-ready"), [name, b.backend]);
    assert.equal(ready.wasm, b.wasm);
    assert.equal(ready.info.kernel, b.tier);
    assert.equal(ready.model.sha256, GOLDEN.gguf_sha256, "the golden file's GGUF");
    const probe = (msg) => page.evaluate(([name, msg]) => window.__call(name, { type: "chat-probe", ...msg }, "chat-probe").then((m) => Array.from(m.result)), [name, msg]);
    let compared = 0, nearTies = 0, promptIds = 0;
    for (const i of b.chats) {
      const c = GOLDEN.chats[i];
      const ids = await probe({ op: "prompt_tokens", messages: c.messages });
      assert.deepEqual(ids, c.prompt_tokens, `chat ${i}: prompt token ids`);
      promptIds += ids.length;
      const got = await probe({ op: "teacher_force", prompt: c.prompt_tokens, forced: c.greedy });
      for (let s = 0; s < c.greedy.length; s++) {
        if (got[s] !== c.greedy[s]) {
          assert.ok(c.margins[s] < NEAR_TIE, `chat ${i} step ${s}: got ${got[s]}, llama.cpp ${c.greedy[s]} with margin ${c.margins[s]} (≥ ${NEAR_TIE})`);
          nearTies++;
          break;
        }
        compared++;
      }
    }
    let worstCos = 1;
    for (const row of GOLDEN.logits.rows.filter((r) => b.chats.includes(r.chat))) {
      const got = await probe({ op: "first_logits", prompt: GOLDEN.chats[row.chat].prompt_tokens });
      const want = new Float32Array(LOGITS.buffer, LOGITS.byteOffset + row.offset_floats * 4, GOLDEN.logits.vocab);
      let d = 0, na = 0, nb = 0;
      for (let k = 0; k < want.length; k++) { d += got[k] * want[k]; na += got[k] * got[k]; nb += want[k] * want[k]; }
      const cos = d / Math.sqrt(na * nb);
      worstCos = Math.min(worstCos, cos);
      assert.ok(cos >= MIN_COSINE, `chat ${row.chat}: first-step logits cosine ${cos} < ${MIN_COSINE}`);
    }
    numbers.push(`${b.wasm}: ${b.chats.length} prompts (${promptIds} prompt ids equal), ${compared} greedy tokens equal to llama.cpp's, ${nearTies} diverged after a near-tie, worst first-step logits cosine ${worstCos.toFixed(6)}`);
    assert.ok(compared >= b.chats.length * 8, `too few tokens compared: ${compared}`);
  });
}

test("speed in the page: one chat worker, cached weights (prefill, decode, first token)", { timeout: 600_000 }, async () => {
  // Load once (the golden workers already cached the weights), then a fresh page measures the
  // load from the Cache API and the first token.
  await page.reload({ waitUntil: "load" });
  await page.waitForFunction(() => window.shoal && window.shoalChat, null, { timeout: 30_000 });
  const r = await page.evaluate(async () => {
    await window.shoal.ready; // the embedding worker is idle: the chat worker has the CPU
    const t0 = performance.now();
    let first = 0;
    await window.shoalChat.load();
    const loadMs = performance.now() - t0;
    const short = await window.shoal.chat({ messages: [{ role: "user", content: "Hi" }], max_tokens: 8, onToken: () => { if (!first) first = performance.now() - t0; } });
    const st = window.shoalChat.state();
    // Prefill: a long prompt (≈ 512 tokens); decode: up to 128 tokens of a long answer.
    const para = "The harbor town keeps its lighthouse lit through every winter storm, and the keeper writes the weather in a book each night. ";
    const long = await window.shoal.chat({ messages: [{ role: "user", content: `${para.repeat(20)}\nSummarise this.` }], max_tokens: 4 });
    const dec = await window.shoal.chat({ messages: [{ role: "user", content: "Count from 1 to 300, separated by commas." }], max_tokens: 128 });
    return { loadMs, firstMs: first, short: short.tokens.length, kernel: st.info.kernel, wasm: st.info.wasm, timings: st.info.timings, prefillTokens: long.prompt_tokens.length, prefill: long.prefill_tok_s, decodeTokens: dec.tokens.length, decode: dec.decode_tok_s };
  });
  numbers.push(`speed (1 worker, ${r.wasm}, ${r.kernel} kernel): prefill ${r.prefill.toFixed(1)} tok/s (${r.prefillTokens}-token prompt), decode ${r.decode.toFixed(1)} tok/s (${r.decodeTokens} tokens); cached weights: model loaded in ${r.loadMs.toFixed(0)} ms (wasm ${r.timings.wasmMs.toFixed(0)}, weights from the cache ${r.timings.weightsMs.toFixed(0)}, verify + build ${r.timings.modelMs.toFixed(0)}), first token ${r.firstMs.toFixed(0)} ms after the call`);
  assert.ok(r.prefillTokens >= 400, `prompt of ${r.prefillTokens} tokens`);
  assert.ok(r.decodeTokens >= 32, `decoded ${r.decodeTokens} tokens`);
  assert.ok(r.prefill > 0 && r.decode > 0);
  assert.deepEqual(foreign(ctx.requests), []);
});
