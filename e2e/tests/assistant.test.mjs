// The Assistant card and window.shoal.chat in Chromium: the built-in SmolLM2 answers in its own
// worker, streaming (tokens are on screen before the answer ends, the page keeps painting); Stop
// ends an answer within a token or two (button, shoal.stopChat, AbortSignal); conversations
// persist in IndexedDB across a reload and can be deleted; "Answer from my documents" over
// public/samples lists the retrieved passages under the answer with the passport passage
// first, and the answer cites or quotes it; a GGUF brought by file (the SmolLM2 file itself, renamed) is checked, chunked, cached
// and answers like the built-in model, also after a reload, and a damaged stored chunk is
// refused by name; corrupt files (truncated, patched architecture, unsupported tensor type,
// flipped magic) and one too big for a tab are refused by name before the rest is read, and
// so is one by URL; the phone layout (375 px) does not overflow; no request leaves the origin.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { readFileSync, writeFileSync, mkdtempSync, rmSync, truncateSync } from "node:fs";
import { tmpdir, homedir } from "node:os";
import { join } from "node:path";
import { launch, newContext, openApp, waitReady, foreign, RESULTS, BASE } from "../lib.mjs";

const GGUF = process.env.SHOAL_LLM_GGUF || join(process.env.SHOAL_CACHE || join(homedir(), ".cache/shoal"), "gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
const TMP = mkdtempSync(join(tmpdir(), "shoal-assistant-"));

let browser, ctx, page;
before(async () => {
  browser = await launch();
  ctx = await newContext(browser);
  page = await openApp(ctx.context);
});
after(async () => {
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
  rmSync(TMP, { recursive: true, force: true });
});

const chatState = () => page.evaluate(() => window.shoalChat.state());
const lastMessage = (s) => s.current && s.current.messages[s.current.messages.length - 1];
// The card's answer is complete (stats written) and nothing is generating.
const answered = (timeout = 300_000) => page.waitForFunction(() => {
  const s = window.shoalChat.state();
  const m = s.current && s.current.messages[s.current.messages.length - 1];
  return !s.generating && m && m.role === "assistant" && !m.streaming && (m.stats || m.error);
}, null, { timeout });
const ask = async (text) => {
  await page.getByTestId("chat-input").fill(text);
  await page.getByTestId("chat-send").click();
};

test("the card answers, streaming tokens, while the page keeps painting", { timeout: 600_000 }, async () => {
  // Frames and what the card shows, sampled until the answer is done.
  await page.evaluate(() => {
    window.__probe = { frames: 0, maxGap: 0, streamedLens: new Set(), domPartial: false };
    let last = performance.now();
    const tick = () => {
      const t = performance.now();
      window.__probe.maxGap = Math.max(window.__probe.maxGap, t - last);
      last = t;
      window.__probe.frames++;
      const el = document.querySelector(".msg.assistant.streaming .text");
      if (el && el.textContent.length > 0) window.__probe.domPartial = true;
      if (!window.__probe.stop) requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
    window.shoalChat.subscribe((s) => {
      if (s.status === "loading" && s.download && s.download.total > 0 && document.querySelector("[data-testid=assistant] progress")) window.__probe.download = true;
      const m = s.current && s.current.messages[s.current.messages.length - 1];
      if (m && m.role === "assistant" && m.streaming && m.content) window.__probe.streamedLens.add(m.content.length);
    });
  });
  const t0 = Date.now();
  await ask("Write a haiku about the ocean.");
  await answered();
  const probe = await page.evaluate(() => { window.__probe.stop = true; return { ...window.__probe, streamedLens: window.__probe.streamedLens.size }; });
  const s = await chatState();
  const m = lastMessage(s);
  console.log(`# card: ${m.stats.tokens} tokens at ${m.stats.decodeTokS.toFixed(1)} tok/s (${s.info.wasm}, ${s.info.kernel}, ${s.info.workers} chat worker(s)), model loaded in ${s.info.loadMs.toFixed(0)} ms; ${Date.now() - t0} ms in all; longest frame gap ${probe.maxGap.toFixed(0)} ms`);
  assert.equal(s.status, "ready");
  assert.ok(m.content.trim().length > 10, `an answer: ${JSON.stringify(m.content)}`);
  assert.ok(m.stats.tokens >= 8);
  assert.ok(probe.streamedLens >= 3, `the answer grew on screen (${probe.streamedLens} partial lengths)`);
  assert.ok(probe.domPartial, "partial text was in the DOM before the answer ended");
  assert.ok(probe.download, "download progress was shown while the model loaded (first use)");
  assert.ok(probe.maxGap < 1000, `no frame gap ≥ 1 s while the model loaded and answered (longest ${probe.maxGap} ms)`);
  assert.match(await page.locator(".msg.assistant .msg-stats").last().innerText(), /tokens\/s/);
  assert.equal(s.conversations.length, 1);
  assert.equal(s.conversations[0].title, "Write a haiku about the ocean.");
});

test("shoal.chat: the CLI's --json shape, streamed, greedy = the card's answer", { timeout: 300_000 }, async () => {
  const r = await page.evaluate(async () => {
    const toks = [];
    const t0 = performance.now();
    const res = await window.shoal.chat({
      messages: [{ role: "user", content: "Write a haiku about the ocean." }],
      max_tokens: 512, temperature: 0,
      onToken: (text, info) => toks.push({ text, index: info.index, t: performance.now() - t0 }),
    });
    return { res, toks, end: performance.now() - t0 };
  });
  const s = await chatState();
  const card = s.current.messages[1].content;
  for (const k of ["text", "prompt_tokens", "tokens", "prefill_tok_s", "decode_tok_s"]) assert.ok(k in r.res, `${k} in the result`);
  assert.equal(r.res.text, card, "same greedy answer as the card");
  assert.equal(r.toks.map((t) => t.text).join(""), r.res.text, "the streamed pieces make the text");
  assert.ok(r.toks.length >= 8 && r.toks[0].t < r.end * 0.5, `tokens arrive before the end (first at ${r.toks[0]?.t} of ${r.end} ms)`);
  assert.ok(Array.isArray(r.res.prompt_tokens) && r.res.prompt_tokens.length > 10);
  assert.ok(r.res.decode_tok_s > 0 && r.res.prefill_tok_s > 0);
  // Bad input is refused with a clear message (no hang, no crash): and the worker still answers.
  const bad = await page.evaluate(async () => {
    const out = [];
    for (const opts of [{ messages: [] }, { messages: [{ role: "user", content: "x" }], temperature: "hot" },
      { messages: [{ role: "robot", content: "x" }] }, { messages: [{ role: "user", content: "x".repeat(2_000_000) }] },
      { messages: [{ role: "user", content: "lorem ipsum ".repeat(9000) }] }]) {
      try { await window.shoal.chat(opts); out.push("resolved"); } catch (e) { out.push(e.message); }
    }
    const ok = await window.shoal.chat({ messages: [{ role: "user", content: "Hi" }], max_tokens: 4 });
    return { out, ok: ok.tokens.length };
  });
  assert.match(bad.out[0], /messages/);
  assert.match(bad.out[1], /temperature|invalid type/);
  assert.match(bad.out[2], /role "robot"/);
  assert.match(bad.out[3], /over the 1048576-byte limit/);
  assert.match(bad.out[4], /context holds 8192/);
  assert.ok(bad.ok >= 1);
});

test("Stop ends an answer within a token or two (button, shoal.stopChat, AbortSignal)", { timeout: 300_000 }, async () => {
  const LONG = "Write a very long story about a dragon who learns to bake bread. Make it at least ten paragraphs.";
  // The API: stop after the 5th token.
  const api = await page.evaluate(async (LONG) => {
    let n = 0, atStop = -1;
    const res = await window.shoal.chat({
      messages: [{ role: "user", content: LONG }], max_tokens: 400,
      onToken: () => { n++; if (n === 5) { atStop = n; window.shoal.stopChat(); } },
    });
    return { atStop, n, tokens: res.tokens.length, finish: res.finish };
  }, LONG);
  assert.equal(api.finish, "cancelled");
  assert.ok(api.n - api.atStop <= 2, `stopped within two tokens (${api.n - api.atStop} more after stopChat)`);
  // An AbortSignal, the same way.
  const sig = await page.evaluate(async (LONG) => {
    const ac = new AbortController();
    let n = 0, atStop = -1;
    const res = await window.shoal.chat({ messages: [{ role: "user", content: LONG }], max_tokens: 400, signal: ac.signal,
      onToken: () => { n++; if (n === 3) { atStop = n; ac.abort(); } } });
    return { atStop, n, finish: res.finish };
  }, LONG);
  assert.equal(sig.finish, "cancelled");
  assert.ok(sig.n - sig.atStop <= 2, `${sig.n - sig.atStop} more after abort()`);
  // The card's Stop button.
  await page.getByTestId("new-chat").click();
  await ask(LONG);
  await page.waitForFunction(() => { const el = document.querySelector(".msg.assistant.streaming .text"); return el && el.textContent.length > 40; }, null, { timeout: 120_000 });
  // Tokens shown when the click lands (state() is exact; only repaints are throttled).
  await page.evaluate(() => document.addEventListener("click", (ev) => {
    if (ev.target.closest && ev.target.closest("[data-testid=chat-stop]")) window.__atStop = window.shoalChat.state().live.tokens;
  }, { capture: true }));
  await page.getByTestId("chat-stop").click();
  await answered();
  const before = await page.evaluate(() => window.__atStop);
  const m = lastMessage(await chatState());
  assert.equal(m.finish, "cancelled");
  assert.ok(before > 0 && m.stats.tokens - before <= 2, `the card stopped within a token or two (${before} → ${m.stats.tokens})`);
  assert.match(await page.locator(".msg.assistant .msg-stats").last().innerText(), /stopped/);
});

test("conversations persist across a reload, reopen and delete", { timeout: 300_000 }, async () => {
  const s0 = await chatState();
  assert.equal(s0.conversations.length, 2);
  const haiku = s0.conversations.find((c) => c.title.startsWith("Write a haiku"));
  await page.reload({ waitUntil: "load" });
  await waitReady(page);
  await page.locator("[data-testid=conversations] .conv-open", { hasText: "Write a haiku" }).waitFor({ timeout: 30_000 });
  await page.locator("[data-testid=conversations] .conv-open", { hasText: "Write a haiku" }).click();
  await page.locator(".msg.user", { hasText: "Write a haiku about the ocean." }).waitFor({ timeout: 30_000 });
  const s = await chatState();
  assert.equal(s.current.id, haiku.id);
  assert.equal(s.current.messages.length, 2);
  assert.ok(s.current.messages[1].content.length > 10 && s.current.messages[1].stats);
  assert.ok(await page.locator(".msg.assistant .bubble .text").first().innerText() !== "");
  // A follow-up in the reopened conversation goes to the model with its history.
  await ask("Now give it a title.");
  await answered();
  const s2 = await chatState();
  assert.equal(s2.current.messages.length, 4);
  assert.ok(s2.current.messages[3].content.length > 0);
  // Delete the dragon story; after a reload only the haiku conversation is left.
  const dragon = s2.conversations.find((c) => c.title.startsWith("Write a very long story"));
  await page.getByRole("button", { name: `Delete conversation ${dragon.title}` }).click();
  await page.waitForFunction((id) => !window.shoalChat.state().conversations.some((c) => c.id === id), dragon.id);
  await page.reload({ waitUntil: "load" });
  await waitReady(page);
  await page.waitForFunction(() => window.shoalChat.state().conversations.length === 1, null, { timeout: 30_000 });
  const left = (await chatState()).conversations;
  assert.deepEqual(left.map((c) => [c.id, c.turns]), [[haiku.id, 2]]);
});

test("Answer from my documents: the passport question is answered from passport.md", { timeout: 600_000 }, async () => {
  await page.evaluate(() => window.shoal.addSamples());
  await page.getByTestId("new-chat").click();
  await page.getByTestId("rag-toggle").check();
  await ask("How early should I renew my passport before a trip?");
  await answered();
  const m = lastMessage(await chatState());
  console.log(`# grounded answer: ${JSON.stringify(m.content)}; sources ${JSON.stringify(m.sources.map((s) => [s.label, s.cited ? "cited" : s.quoted ? "quoted" : "-"]))}`);
  assert.ok(!m.error, m.error);
  assert.ok(m.sources.length >= 1);
  assert.equal(m.sources[0].label, "passport.md", "the passage holding the answer is source [1]");
  assert.match(m.sources[0].text, /six months/);
  // The sources are listed under the answer; the ones the answer cites are marked.
  const items = page.locator("[data-testid=sources]").last().locator(".source-item");
  assert.equal(await items.count(), m.sources.length);
  assert.match(await items.first().innerText(), /\[1\] passport\.md/);
  // Attributed to passport.md: the answer cites it ("[1]") or quotes it (8+ words in a row).
  const used = m.sources.filter((s) => s.cited || s.quoted).map((s) => s.label);
  assert.ok(used.includes("passport.md"), `the answer cites or quotes passport.md (cited/quoted: ${used})`);
  assert.match(await items.first().innerText(), /cited|quoted/);
  // The toggle is remembered.
  assert.equal((await chatState()).rag, true);
  await page.getByTestId("rag-toggle").uncheck();
});

// A copy of the GGUF, changed by `edit(bytes)`, under `name`.
function variant(name, edit) {
  const b = Buffer.from(readFileSync(GGUF));
  const out = edit ? edit(b) : b;
  const p = join(TMP, name);
  writeFileSync(p, out);
  return p;
}
function patchArch(b, arch) {
  const key = Buffer.from("general.architecture");
  const i = b.indexOf(key) + key.length + 4 + 8; // type u32, length u64, then the string
  assert.equal(b.subarray(i, i + 5).toString(), "llama");
  b.write(arch, i);
  return b;
}
function patchTensorType(b, tensor, type) {
  const name = Buffer.from(tensor);
  const i = b.indexOf(name) + name.length;
  const dims = b.readUInt32LE(i);
  b.writeUInt32LE(type, i + 4 + dims * 8);
  return b;
}

test("bring your own GGUF: refused by name when corrupt, before the rest is read", { timeout: 300_000 }, async () => {
  const cases = [
    [variant("truncated.gguf", (b) => b.subarray(0, b.length >> 1)), /truncated\.gguf refused: .*truncated/],
    [variant("patched-arch.gguf", (b) => patchArch(b, "mamba")), /patched-arch\.gguf refused: .*architecture "mamba"/],
    [variant("q5k.gguf", (b) => patchTensorType(b, "output_norm.weight", 13)), /q5k\.gguf refused: .*output_norm\.weight: type Q5_K is not supported/],
    [variant("flipped.gguf", (b) => { b[0] ^= 0xff; b[1] ^= 0x55; return b; }), /flipped\.gguf refused: not a GGUF file/],
    // A valid header on a 1.1 GB (sparse) file: too big for a tab's wasm memory.
    [(() => { const p = variant("big.gguf"); truncateSync(p, 1.1e9); return p; })(), /big\.gguf refused: 1100\.0 MB does not fit in a browser tab/],
  ];
  for (const [path, want] of cases) {
    await page.getByTestId("gguf-file").setInputFiles(path);
    const err = page.getByTestId("assistant-error");
    await err.filter({ hasText: want }).waitFor({ timeout: 60_000 }).catch(async () => {
      throw new Error(`${path}: want ${want}, card says ${JSON.stringify(await err.allInnerTexts())}`);
    });
  }
  // By URL (same origin): refused on the header, the download abandoned after the first MBs.
  // (The route serves the first 8 MiB under the full length: a 98 MB body through the
  // DevTools protocol takes the browser down, and the worker stops reading long before.)
  const patched = readFileSync(join(TMP, "patched-arch.gguf"));
  await ctx.context.route("**/byo/patched-arch.gguf", (route) => route.fulfill({
    body: patched.subarray(0, 8 << 20), headers: { "content-type": "application/octet-stream", "content-length": String(patched.length) },
  }));
  const byUrl = await page.evaluate(() => window.shoalChat.importUrl("byo/patched-arch.gguf").then(() => "loaded", (e) => e.message));
  assert.match(byUrl, /patched-arch\.gguf refused after [\d.]+ MB( of 98\.4 MB)?: unsupported model: architecture "mamba"/);
  const read = Number(byUrl.match(/after ([\d.]+) MB/)[1]);
  assert.ok(read < 20, `read ${read} MB of 98 before refusing`);
  // Another origin is refused without a request.
  const foreignUrl = await page.evaluate(() => window.shoalChat.importUrl("http://example.com/model.gguf").then(() => "loaded", (e) => e.message));
  assert.match(foreignUrl, /another origin/);
  const s = await chatState();
  assert.equal(s.models.length, 1, "nothing was added");
  // The model loaded before is still there and answers.
  const ok = await page.evaluate(() => window.shoal.chat({ messages: [{ role: "user", content: "Hi" }], max_tokens: 4 }));
  assert.ok(ok.tokens.length >= 1);
});

test("bring your own GGUF by file: the SmolLM2 file, renamed, answers like the built-in; stored, re-verified", { timeout: 600_000 }, async () => {
  const want = await page.evaluate(() => window.shoal.chat({ messages: [{ role: "user", content: "What is 12 * 12? Answer with just the number." }], max_tokens: 24 }));
  const path = variant("my-assistant.Q4_1.gguf");
  await page.getByTestId("gguf-file").setInputFiles(path);
  await page.waitForFunction(() => { const s = window.shoalChat.state(); return s.status === "ready" && !s.model.builtin; }, null, { timeout: 300_000 });
  let s = await chatState();
  assert.equal(s.model.name, "my-assistant.Q4_1.gguf");
  assert.equal(s.model.id, "my-assistant");
  assert.equal(s.model.arch, "llama");
  assert.equal(s.models.length, 2);
  assert.match(await page.getByTestId("chat-model").innerText(), /my-assistant\.Q4_1\.gguf/);
  const got = await page.evaluate(() => window.shoal.chat({ messages: [{ role: "user", content: "What is 12 * 12? Answer with just the number." }], max_tokens: 24 }));
  assert.equal(got.text, want.text, "same file, same answer");
  assert.deepEqual(got.tokens, want.tokens);
  // After a reload it is still the chosen model and loads from the browser's storage.
  const before = ctx.requests.length;
  await page.reload({ waitUntil: "load" });
  await waitReady(page);
  await page.evaluate(() => window.shoalChat.load());
  s = await chatState();
  assert.equal(s.model.name, "my-assistant.Q4_1.gguf");
  assert.equal(s.status, "ready");
  assert.deepEqual(ctx.requests.slice(before).filter((u) => /weights\.\d+$/.test(u)), [], "no weight request: it came from the cache");
  // A stored chunk damaged in the cache: refused by name on the next load.
  const key = s.model.key;
  await page.evaluate(async (key) => {
    const cache = await caches.open("shoal-weights-v1");
    const prefix = new URL(`chat-models/${key}/`, location.href).href;
    const req = (await cache.keys()).find((r) => r.url.startsWith(prefix) && r.url.endsWith("/weights.003"));
    const b = new Uint8Array(await (await cache.match(req)).arrayBuffer());
    b[1000] ^= 1;
    await cache.put(req, new Response(b));
  }, key);
  await page.selectOption("[data-testid=chat-model]", "builtin");
  await page.waitForFunction(() => window.shoalChat.state().status === "ready", null, { timeout: 120_000 });
  const err = await page.evaluate((key) => window.shoalChat.selectModel(key).then(() => "loaded", (e) => e.message), key);
  assert.match(err, /weights\.003: hash does not match/);
  // Removing it frees its storage; the built-in model is chosen again.
  await page.evaluate((key) => window.shoalChat.deleteModel(key), key);
  s = await chatState();
  assert.equal(s.models.length, 1);
  assert.equal(s.model.key, "builtin");
  const left = await page.evaluate(async (key) => (await (await caches.open("shoal-weights-v1")).keys()).filter((r) => r.url.includes(`chat-models/${key}/`)).length, key);
  assert.equal(left, 0);
});

test("phone layout (375 px): the card fits, nothing overflows", { timeout: 300_000 }, async () => {
  await page.setViewportSize({ width: 375, height: 812 });
  await page.getByTestId("new-chat").click();
  await ask("Hi");
  await answered();
  await page.locator("[data-testid=assistant]").scrollIntoViewIfNeeded();
  const m = await page.evaluate(() => {
    const card = document.querySelector("[data-testid=assistant]").getBoundingClientRect();
    const input = document.querySelector("[data-testid=chat-input]").getBoundingClientRect();
    return { scroll: document.documentElement.scrollWidth, card: card.right, input: input.width };
  });
  await page.screenshot({ path: join(RESULTS, "assistant-phone.png") });
  await page.setViewportSize({ width: 1280, height: 900 });
  await page.locator("[data-testid=assistant]").screenshot({ path: join(RESULTS, "assistant-desktop.png") });
  assert.ok(m.scroll <= 375, `page width ${m.scroll} > 375`);
  assert.ok(m.card <= 375, `card right edge ${m.card}`);
  assert.ok(m.input > 250, `message box ${m.input} px wide`);
});

test("every request was same-origin", () => {
  assert.deepEqual(foreign(ctx.requests), []);
  assert.ok(ctx.requests.some((u) => u.startsWith(BASE) && /smollm2-135m-instruct\/weights\.\d+$/.test(u)), "the chat weights came from the page's origin");
});
