// Circle benchmark (on demand, not a test): one tab, two tabs, and a tab + a native node embed
// the same 2,000-sentence corpus over WebRTC through a real relay, inside a network namespace
// (run it through e2e/bench/circle-run). Prints a markdown table: texts/s, speed-up over one
// tab, per-shard overhead (requester's dispatch → result minus the worker's residence time, i.e.
// transport + sealing + scheduling, excluding compute), and bytes on the wire per remote sentence.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { World, until, corpus, upPeers } from "../circle-lib.mjs";

const N = Number(process.env.CIRCLE_BENCH_TEXTS || 2000);
const log = (...a) => console.error("#", ...a);
const dir = mkdtempSync(join(tmpdir(), "shoal-circle-bench-"));
const world = new World(dir);
try {
  const [base] = await world.relays(1);
  const context = await world.context(base);
  const texts = corpus(N);
  const tab1 = await world.tab(context, `${base}/?workers=1&backend=cpu`, "tab1");
  const link = await tab1.evaluate(() => window.shoalCircle.create());
  const token = link.split("#c=")[1];

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
  // Counters are cumulative: take both sides' before/after the measured job (after a small
  // warm-up job that settles shard sizes and capacities).
  const job = async (label, workerStats) => {
    await tab1.evaluate((t) => window.shoalCircle.embed(t), texts.slice(0, 64));
    await sleep(2500);
    const b0 = await tab1.evaluate(() => window.shoalCircle.stats());
    const w0 = workerStats ? await workerStats() : null;
    const r = await tab1.evaluate(async (t) => {
      const t0 = performance.now();
      await window.shoalCircle.embed(t);
      return { ms: performance.now() - t0, members: window.shoalCircle.state().last.members };
    }, texts);
    await sleep(2500);
    const b1 = await tab1.evaluate(() => window.shoalCircle.stats());
    const w1 = workerStats ? await workerStats() : null;
    log(label, `${r.ms.toFixed(0)} ms`, r.members.map((m) => `${m.isSelf ? "self" : m.short}=${m.textsDone}`).join(" "));
    const bytes = (s) => s.peers.reduce((a, p) => a + p.bytesSent + p.bytesReceived, 0);
    return {
      ...r,
      shards: b1.remoteShards - b0.remoteShards,
      roundTripMs: b1.remoteRoundTripMs - b0.remoteRoundTripMs,
      bytes: bytes(b1) - bytes(b0),
      served: w1 && w0 ? w1.served - w0.served : 0,
      residenceMs: w1 && w0 ? w1.servedResidenceMs - w0.servedResidenceMs : 0,
    };
  };
  const rows = [];
  const row = (label, r) => {
    const rate = (N * 1000) / r.ms;
    const remoteTexts = r.members.filter((m) => !m.isSelf).reduce((a, m) => a + m.textsDone, 0);
    let overhead = "–";
    if (r.shards > 0 && r.served > 0) overhead = (r.roundTripMs / r.shards - r.residenceMs / r.served).toFixed(2);
    rows.push({ label, rate, members: r.members.map((m) => `${m.isSelf ? "tab 1" : m.short}: ${m.textsDone}`).join(", "), overhead,
      perSentence: remoteTexts ? (r.bytes / remoteTexts).toFixed(0) : "–" });
  };

  // 1. One tab.
  row("1 tab (1 worker)", await job("1 tab"));

  // 2. Two tabs.
  const tab2 = await world.tab(context, `${base}/?workers=1&backend=cpu#c=${token}`, "tab2");
  await until("tab 2 up", async () => (await upPeers(tab1)).length === 1 ? true : undefined);
  row("2 tabs (1 worker each)", await job("2 tabs", () => tab2.evaluate(() => window.shoalCircle.stats())));
  await tab2.close();
  await until("tab 2 down", async () => (await upPeers(tab1)).length === 0 ? true : undefined);

  // 3. Tab + native node.
  const native = world.node("native", link, base);
  await until("native up", async () => (await upPeers(tab1)).length === 1 ? true : undefined, 180_000);
  const nativeStats = async () => {
    const last = native.lines.filter((l) => l.startsWith('{"') && l.includes('"event":"stats"'))
      .map((l) => { try { return JSON.parse(l); } catch (_) { return null; } }).filter(Boolean).pop();
    return last ? { served: last.served, servedResidenceMs: last.served_residence_ms } : { served: 0, servedResidenceMs: 0 };
  };
  row("1 tab + native node", await job("tab + native", nativeStats));

  const one = rows[0].rate;
  console.log(`\n${N} sentences (7–25 words), Chromium headless, every member in one network namespace on this machine (${(await import("node:os")).cpus().length} cores)\n`);
  console.log("| members | texts/s | × one tab | per-shard overhead (ms) | bytes on the wire / remote sentence | texts per member |");
  console.log("|---|---|---|---|---|---|");
  for (const r of rows) console.log(`| ${r.label} | ${r.rate.toFixed(1)} | ${(r.rate / one).toFixed(2)} | ${r.overhead} | ${r.perSentence} | ${r.members} |`);
} finally {
  await world.close();
  rmSync(dir, { recursive: true, force: true });
}
