// The assistant on WebGPU in Chromium (--enable-unsafe-webgpu: a SwiftShader adapter here, so
// correctness only, a few tokens): the chat worker's WebGPU build and its GPU engine
// (app/src/chat_gpu.rs → shoal-llm-gpu on burn WebGPU) against llama.cpp's golden file, with
// the native GPU test's rules (node-lite/llm-gpu/tests/gpu.rs): prompt ids equal exactly;
// first-step logits cosine ≥ MIN_COSINE_Q8 (llama.cpp rounds activations to 8 bits, the GPU
// keeps f32); the first GREEDY_TOKENS greedy tokens equal, except after a step whose reference
// top-2 margin is below NEAR_TIE. Then one answer through window.shoal.chat with
// `?chat_backend=webgpu`: it streams, runs on the GPU engine and equals the reference's greedy
// tokens as far as they are compared.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { launch, newContext, openApp, installWorkerCall, foreign, ROOT } from "../lib.mjs";

const NEAR_TIE = 0.5;
const MIN_COSINE_Q8 = 0.997;
const GREEDY_TOKENS = 4;
const DATA = join(ROOT, "node-lite/llm/tests/data");
const GOLDEN = JSON.parse(readFileSync(join(DATA, "golden.json"), "utf8"));
const LOGITS = readFileSync(join(DATA, GOLDEN.logits.file));
// One short prompt keeps SwiftShader's per-shape shader compiles (minutes each on 2 cores)
// bounded: chat 4 (code; llama.cpp's first-step logits are in the golden file). The native
// GPU test (node-lite/llm-gpu/tests/gpu.rs, on lavapipe) covers the engine across prompts;
// this file checks the browser's WebGPU build end to end.
const CHATS = [4];
// The free-running answer: the same prompt (its prefill shapes are compiled by then), whose
// first four reference steps have top-2 margins ≥ 0.90 (no near-tie), so all four tokens must
// equal llama.cpp's.
const FREE_CHAT = 4;

// Free-running greedy tokens against the reference: equal up to `n`, or until the first step
// where they may legitimately part (a reference near-tie; after it the texts differ). Returns
// how many were equal.
function compareGreedy(got, chat, n, label) {
  for (let s = 0; s < Math.min(n, chat.greedy.length); s++) {
    if (got[s] !== chat.greedy[s]) {
      assert.ok(chat.margins[s] < NEAR_TIE, `${label} step ${s}: got ${got[s]}, llama.cpp ${chat.greedy[s]} with margin ${chat.margins[s]} (≥ ${NEAR_TIE})`);
      return s;
    }
  }
  return Math.min(n, chat.greedy.length);
}

let browser, ctx, page;
const numbers = [];
before(async () => {
  browser = await launch({ webgpu: true });
  ctx = await newContext(browser);
  page = await openApp(ctx.context, "?workers=1&chat_backend=webgpu");
  await installWorkerCall(page);
});
after(async () => {
  if (numbers.length) console.log(numbers.map((l) => `# ${l}`).join("\n"));
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
});

test("the GPU chat engine on WebGPU: prompt ids, first logits and greedy tokens against llama.cpp (golden)", { timeout: 900_000 }, async () => {
  const t0 = Date.now();
  const ready = await page.evaluate(() =>
    window.__call("gpu", { type: "chat-init", model: { kind: "builtin", base: "models/smollm2-135m-instruct" }, backend: "webgpu" }, "chat-ready"));
  assert.equal(ready.wasm, "shoal-worker", "the WebGPU build");
  assert.equal(ready.info.device, "webgpu", `the GPU engine: ${JSON.stringify(ready.info)}`);
  assert.equal(ready.model.sha256, GOLDEN.gguf_sha256, "the golden file's GGUF");
  numbers.push(`GPU chat engine on ${ready.info.adapter} (${ready.info.kernel}), loaded in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const probe = (msg) => page.evaluate(([msg]) => window.__call("gpu", { type: "chat-probe", ...msg }, "chat-probe").then((m) => Array.from(m.result)), [msg]);
  let compared = 0;
  for (const i of CHATS) {
    const c = GOLDEN.chats[i];
    assert.deepEqual(await probe({ op: "prompt_tokens", messages: c.messages }), c.prompt_tokens, `chat ${i}: prompt token ids`);
    const row = GOLDEN.logits.rows.find((r) => r.chat === i);
    if (row) {
      const got = await probe({ op: "first_logits", prompt: c.prompt_tokens });
      const want = new Float32Array(LOGITS.buffer, LOGITS.byteOffset + row.offset_floats * 4, GOLDEN.logits.vocab);
      assert.equal(got.length, want.length);
      let d = 0, na = 0, nb = 0;
      for (let k = 0; k < want.length; k++) { d += got[k] * want[k]; na += got[k] * got[k]; nb += want[k] * want[k]; }
      const cos = d / Math.sqrt(na * nb);
      assert.ok(cos >= MIN_COSINE_Q8, `chat ${i}: first-step logits cosine ${cos} < ${MIN_COSINE_Q8}`);
      numbers.push(`chat ${i}: first-step logits cosine with llama.cpp ${cos.toFixed(5)}`);
    }
    // Teacher-forced: every step sees the reference's tokens before it, so each step is
    // compared on its own; a different pick is allowed only at a reference near-tie.
    const t1 = Date.now();
    const forced = c.greedy.slice(0, GREEDY_TOKENS);
    const got = await probe({ op: "teacher_force", prompt: c.prompt_tokens, forced });
    assert.equal(got.length, forced.length);
    let equal = 0;
    for (let s = 0; s < forced.length; s++) {
      if (got[s] === forced[s]) equal++;
      else assert.ok(c.margins[s] < NEAR_TIE, `chat ${i} step ${s}: got ${got[s]}, llama.cpp ${forced[s]} with margin ${c.margins[s]} (≥ ${NEAR_TIE})`);
    }
    compared += equal;
    numbers.push(`chat ${i}: ${c.prompt_tokens.length} prompt ids equal, ${equal} of ${forced.length} teacher-forced greedy tokens equal to llama.cpp's, the rest at near-ties (${((Date.now() - t1) / 1000).toFixed(1)} s)`);
  }
  assert.ok(compared >= CHATS.length * (GREEDY_TOKENS - 2), `too few tokens equal: ${compared}`);
});

test("window.shoal.chat with ?chat_backend=webgpu streams an answer from the GPU engine", { timeout: 600_000 }, async () => {
  const c = GOLDEN.chats[FREE_CHAT];
  const r = await page.evaluate(async (messages) => {
    const pieces = [];
    const out = await window.shoal.chat({ messages, max_tokens: 4, temperature: 0, onToken: (t) => pieces.push(t) });
    return { out, pieces, info: window.shoalChat.state().info };
  }, c.messages);
  assert.equal(r.info.device, "webgpu", JSON.stringify(r.info));
  assert.equal(r.out.tokens.length, 4);
  assert.equal(r.pieces.join(""), r.out.text, "the streamed pieces make the answer");
  assert.deepEqual(r.out.prompt_tokens, c.prompt_tokens);
  const n = compareGreedy(r.out.tokens, c, 4, "shoal.chat");
  assert.equal(n, 4, "no near-tie in these four steps: every token equals llama.cpp's");
  numbers.push(`shoal.chat on WebGPU: ${JSON.stringify(r.out.text)} (${n} of 4 tokens equal; decode ${r.out.decode_tok_s.toFixed(2)} tok/s on SwiftShader)`);
  assert.deepEqual(foreign(ctx.requests), []);
});
