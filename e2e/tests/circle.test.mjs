// Circles in real Chromium: two tabs and a native `shoal-node join` share a 2,000-sentence job
// over WebRTC through a real `shoal-relay` (which also serves the app), all inside a network
// namespace this test creates (loopback only: no packet can leave the machine).
//
// - every vector equals tab 1's local result (cosine ≥ 0.9999) and every member computed shards;
// - closing tab 2 and SIGKILLing the native node mid-job changes nothing in the result;
// - no frame the relay received (its test capture hook) and no relay log line carries a
//   sentence, vector bytes or clear SDP;
// - a member with the wrong circle key (`--test-impostor`) never comes up and its sealed
//   payloads are refused.
//
// The file re-executes itself under `unshare -n` (root) or `unshare -rn` (user namespaces).
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { mkdtempSync, rmSync, createWriteStream, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createServer } from "node:net";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "../..");
const TARGET = process.env.CARGO_TARGET_DIR || join(process.env.HOME, ".cache/shoal/target");
const RELAY = join(TARGET, "debug/shoal-relay");
const NODE = join(TARGET, "debug/shoal-node");
const CHROMIUM = process.env.CHROMIUM || "/usr/lib/chromium/chromium";
const IN_NS = "SHOAL_E2E_IN_NETNS";

if (!process.env[IN_NS]) {
  test("circle suite inside a fresh network namespace", { timeout: 900_000 }, () => {
    const self = fileURLToPath(import.meta.url);
    const inner = `ip link set lo up && exec node --test --test-reporter=spec ${JSON.stringify(self)}`;
    let last = null;
    for (const flags of [["-n"], ["-rn"]]) {
      const env = { ...process.env, [IN_NS]: "1" };
      delete env.NODE_TEST_CONTEXT; // else the inner `node --test` thinks it is nested and skips
      const r = spawnSync("unshare", [...flags, "--", "sh", "-c", inner], {
        env, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20,
      });
      const out = `${r.stdout}${r.stderr}`;
      if (/unshare failed|unshare:/.test(out) && r.status !== 0) { last = out; continue; }
      // On success only the suite's summary lines; everything when it failed.
      console.log(r.status === 0 ? out.split("\n").filter((l) => /^(#|✔|ℹ)/.test(l)).join("\n") : out);
      assert.equal(r.status, 0, "the circle suite failed inside the namespace");
      assert.match(out, /(#|ℹ) pass [1-9]/, "the suite did not run inside the namespace");
      assert.match(out, /(#|ℹ) fail 0/);
      return;
    }
    assert.fail(`cannot create a network namespace (need root or user namespaces): ${last}`);
  });
} else {
  const procs = [];
  const dirs = [];
  let browser;
  const logs = [];
  let ok = false;
  after(async () => {
    if (!ok && logs.length) console.log(logs.slice(-80).join("\n"));
    await browser?.close().catch(() => {});
    for (const p of procs) p.kill("SIGKILL");
    for (const d of dirs) rmSync(d, { recursive: true, force: true });
  });

  const freePort = () => new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
    s.on("error", reject);
  });
  async function until(what, f, timeout = 120_000) {
    const t0 = Date.now();
    for (;;) {
      const v = await f().catch(() => undefined);
      if (v) return v;
      if (Date.now() - t0 > timeout) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
  function cosine(a, b) {
    let d = 0, na = 0, nb = 0;
    for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
    return d / Math.sqrt(na * nb);
  }
  // 2,000 distinct sentences of 6–24 words (xorshift over a small vocabulary).
  const WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
    "network", "policy", "student", "mountain", "signal", "careful", "harvest", "window", "language",
    "ancient", "machine", "coffee", "travel", "science", "morning", "music", "orbit", "bread", "ticket"];
  function corpus(n, seed) {
    const M = (1n << 64n) - 1n;
    let s = seed;
    const next = () => { s ^= (s << 13n) & M; s ^= s >> 7n; s ^= (s << 17n) & M; return s; };
    const out = [];
    for (let i = 0; i < n; i++) {
      const len = 6 + Number(next() % 19n);
      const ws = [`item${i}`];
      for (let j = 0; j < len; j++) ws.push(WORDS[Number(next() % BigInt(WORDS.length))]);
      out.push(ws.join(" "));
    }
    return out;
  }

  function startNode(name, link, relay, extra = []) {
    const p = spawn(NODE, ["join", link, "--relay", relay, "--udp", "127.0.0.1:0", "--name", name, ...extra],
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, SHOAL_LOG: "info" } });
    const lines = [];
    p.stderr.on("data", (b) => { for (const l of String(b).split("\n")) if (l) { lines.push(l); logs.push(`[${name}] ${l}`); } });
    procs.push(p);
    return { p, lines };
  }

  async function openTab(context, url, label) {
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") logs.push(`[${label} ${m.type()}] ${m.text()}`); });
    page.on("pageerror", (e) => logs.push(`[${label} pageerror] ${e.message}`));
    await page.goto(url, { waitUntil: "load" });
    await page.waitForFunction(() => window.shoal && window.shoalCircle, null, { timeout: 60_000 });
    await page.evaluate(() => window.shoal.ready);
    return page;
  }

  const upPeers = (page) => page.evaluate(() => window.shoalCircle.state().peers.filter((p) => p.state === "up"));

  test("two tabs and a native node embed 2,000 sentences together, survive losing two members, and the relay sees nothing",
    { timeout: 840_000 }, async () => {
      for (const f of [RELAY, NODE]) assert.ok(existsSync(f), `${f} missing (cargo build)`);
      assert.ok(existsSync(join(ROOT, "dist/index.html")), "dist/ missing: scripts/build-web");
      const dir = mkdtempSync(join(tmpdir(), "shoal-circle-e2e-"));
      dirs.push(dir);
      // Relay A serves the app, signals and keeps the receipt log; B and C witness it (and each
      // other), so the tab can demand a 2-of-3 quorum for its own job's receipts.
      const ports = [await freePort(), await freePort(), await freePort()];
      const urls = ports.map((p) => `http://127.0.0.1:${p}`);
      const base = urls[0];
      const data = ["a", "b", "c"].map((n) => join(dir, `relay-${n}`));
      const keys = data.map((d) => execFileSync(RELAY, ["key", "--data-dir", d]).toString().trim());
      const relayLog = join(dir, "relay.log");
      let relay = null;
      for (let i = 0; i < 3; i++) {
        const args = ["--listen", `127.0.0.1:${ports[i]}`, "--data-dir", data[i],
          "--checkpoint-interval-ms", "200", "--witness-poll-ms", "300", "--log", i === 0 ? "debug" : "warn"];
        for (let j = 0; j < 3; j++) if (j !== i) args.push("--peer", `${urls[j]} ${keys[j]}`);
        if (i === 0) args.push("--web-root", join(ROOT, "dist"));
        const p = spawn(RELAY, args, {
          stdio: ["ignore", "pipe", "pipe"],
          env: i === 0 ? { ...process.env, SHOAL_RELAY_TEST_CAPTURE_FRAMES: join(dir, "frames.bin") } : process.env,
        });
        const out = createWriteStream(i === 0 ? relayLog : join(dir, `relay-${i}.log`));
        p.stdout.pipe(out);
        p.stderr.pipe(out);
        procs.push(p);
        if (i === 0) relay = p;
      }
      for (const u of urls) await until(`${u}/healthz`, async () => (await fetch(`${u}/healthz`)).ok, 30_000);

      browser = await chromium.launch({
        executablePath: CHROMIUM, headless: true,
        args: ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
          "--disable-component-update", "--disable-sync", "--allow-loopback-in-peer-connection"],
      });
      const context = await browser.newContext({ viewport: { width: 1100, height: 900 } });
      // Chromium gathers loopback candidates only for pages with these permissions.
      await context.grantPermissions(["camera", "microphone"], { origin: base });

      // Tab 1 creates the circle; tab 2 and the native node join by its link.
      const tab1 = await openTab(context, `${base}/?workers=1&backend=cpu&quorum=2`, "tab1");
      const link = await tab1.evaluate(() => window.shoalCircle.create());
      assert.match(link, /#c=[A-Za-z0-9_-]{43}$/);
      const token = link.split("#c=")[1];
      assert.equal(new URL(link).origin, base);
      const tab2 = await openTab(context, `${base}/?workers=1&backend=cpu#c=${token}`, "tab2");
      const native = startNode("native", link, base, ["--rate", "60"]);
      await until("tab 1 sees tab 2 and the native node up", async () => (await upPeers(tab1)).length === 2 ? true : undefined);
      const peers1 = await upPeers(tab1);
      assert.deepEqual(peers1.map((p) => p.backend).sort(), ["cpu", "native"]);
      assert.ok(peers1.every((p) => p.rate > 0 && p.name), JSON.stringify(peers1));
      // The UI shows the link (with its QR code) and both peers.
      await tab1.waitForFunction(() => document.querySelectorAll("[data-testid=circle-peers] li").length === 2);
      assert.equal(await tab1.locator("[data-testid=circle-link]").inputValue(), link);
      assert.equal(await tab1.locator("img.qr").count(), 1);

      // An impostor (right room, wrong key): whoever of a pair offers, the other side's seal check
      // fails — a tab refuses the impostor's payloads, or the impostor cannot open a tab's.
      const tabIds = await Promise.all([tab1, tab2].map((t) => t.evaluate(() => window.shoalCircle.state().id)));
      const impostor = startNode("impostor", link, base, ["--rate", "60", "--test-impostor"]);
      await until("the impostor and both tabs refuse each other's sealed payloads", async () => {
        const r = await Promise.all([tab1, tab2].map((t) => t.evaluate(() => window.shoalCircle.state().rejected)));
        const refusedBy = (id) => impostor.lines.some((l) => l.includes('"event":"rejected"') && l.includes(id));
        return tabIds.every((id, i) => r[i] > 0 || refusedBy(id)) ? true : undefined;
      }, 60_000);

      const texts = corpus(2000, 0x9E3779B97F4A7C15n);
      const local = await tab1.evaluate(async (t) => (await window.shoal.embedFloat(t)).map((v) => Array.from(v)), texts);
      assert.equal(local.length, 2000);

      const run = (page) => page.evaluate(async (t) => {
        const t0 = performance.now();
        const v = await window.shoalCircle.embed(t);
        const ms = performance.now() - t0;
        const s = window.shoalCircle.state();
        return { vectors: v.map((x) => Array.from(x)), ms, members: s.last.members };
      }, texts);

      // 1. The whole circle.
      const r1 = await run(tab1);
      assert.equal(r1.vectors.length, 2000);
      let worst = 1;
      for (let i = 0; i < 2000; i++) worst = Math.min(worst, cosine(r1.vectors[i], local[i]));
      assert.ok(worst >= 0.9999, `min cosine ${worst}`);
      assert.equal(r1.members.length, 3, JSON.stringify(r1.members));
      for (const m of r1.members) assert.ok(m.textsDone > 0 && m.shardsDone > 0, `member ${m.short} did no shard: ${JSON.stringify(r1.members)}`);
      assert.equal(r1.members.reduce((a, m) => a + m.textsDone, 0), 2000);
      const impostorUp = (await upPeers(tab1)).concat(await upPeers(tab2)).some((p) => p.name === "impostor");
      assert.ok(!impostorUp, "the impostor came up");
      impostor.p.kill("SIGKILL");

      // Every remote shard left a receipt; the tab kept them, the log took them, and the tab's
      // light client proves them included under a checkpoint with a 2-of-3 witness quorum.
      const remoteShards = r1.members.filter((m) => !m.isSelf).reduce((a, m) => a + m.shardsDone, 0);
      await until("every remote shard's receipt anchored", async () => tab1.evaluate((n) => {
        const s = window.shoalCircle.state();
        return s.receipts >= n && s.anchored >= n;
      }, remoteShards), 30_000);
      const report = await until("the tab's receipts included and witnessed (2 of 3)", async () => {
        const r = await tab1.evaluate(() => window.shoalLight.check());
        return r.receipts.length >= remoteShards && r.receipts.every((x) => x.included && x.witnessed) ? r : undefined;
      }, 60_000);
      assert.ok(!report.error && !report.equivocation, JSON.stringify(report).slice(0, 400));
      assert.equal(report.quorum, 2);
      assert.ok(report.cosigners >= 2, `cosigners ${report.cosigners}`);
      console.log(`# ${report.receipts.length} receipts of this tab's job: included and witnessed (${report.cosigners} cosigners)`);
      console.log(`# circle of 3: 2000 sentences in ${r1.ms.toFixed(0)} ms; ` + r1.members.map((m) => `${m.isSelf ? "tab1" : m.short}=${m.textsDone}`).join(" "));

      // 2. Lose tab 2 and the native node mid-job: same result.
      const job = run(tab1);
      await until("both remote members have shards done", async () => tab1.evaluate(() => {
        const j = window.shoalCircle.state().job;
        return j && j.members.filter((m) => !m.isSelf && m.shardsDone > 0).length === 2 && j.done < j.total * 0.8;
      }), 120_000);
      await tab2.close();
      native.p.kill("SIGKILL");
      const r2 = await job;
      worst = 1;
      for (let i = 0; i < 2000; i++) worst = Math.min(worst, cosine(r2.vectors[i], local[i]));
      assert.ok(worst >= 0.9999, `after losing two members: min cosine ${worst}`);
      const left = r2.members.filter((m) => !m.isSelf);
      assert.ok(left.every((m) => m.status !== "active"), `lost members still active: ${JSON.stringify(r2.members)}`);
      console.log(`# after losing tab 2 and the native node: ${r2.ms.toFixed(0)} ms; ` + r2.members.map((m) => `${m.isSelf ? "tab1" : m.short}=${m.textsDone}/${m.status}`).join(" "));

      // 3. The relay saw only sealed bytes.
      relay.kill("SIGTERM");
      await new Promise((r) => relay.once("exit", r));
      const frames = readFileSync(join(dir, "frames.bin"));
      assert.ok(frames.length > 0, "the capture hook saw no frames");
      const relayText = readFileSync(relayLog, "utf8");
      assert.match(relayText, /session/i, "relay debug log is empty");
      for (const t of texts) {
        assert.equal(frames.indexOf(Buffer.from(t)), -1, `a relay frame contains "${t}"`);
        assert.ok(!relayText.includes(t), `the relay log contains "${t}"`);
      }
      for (const word of ["item1999", "harvest"]) assert.equal(frames.indexOf(Buffer.from(word)), -1);
      for (const v of local.slice(0, 50)) {
        const needle = Buffer.from(new Float32Array(v.slice(0, 4)).buffer);
        assert.equal(frames.indexOf(needle), -1, "a relay frame contains vector bytes");
      }
      for (const kw of ["a=candidate", "v=0", "\"sdp\"", "ice-ufrag", "127.0.0.1 "]) {
        assert.equal(frames.indexOf(Buffer.from(kw)), -1, `clear SDP in a relay frame (${kw})`);
      }
      ok = true;
    });
}
