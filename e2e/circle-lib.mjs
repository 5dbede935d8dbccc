// Shared by the circle e2e suite and the circle benchmark: running inside a fresh network
// namespace, relays (one serving the app), `shoal-node join`, Chromium allowed to use loopback
// for WebRTC, tabs, and a deterministic corpus.
import { spawn, spawnSync, execFileSync } from "node:child_process";
import { createWriteStream } from "node:fs";
import { createInterface } from "node:readline";
import { join } from "node:path";
import { freePort, until } from "./lib.mjs";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

export const ROOT = join(fileURLToPath(new URL(".", import.meta.url)), "..");
const TARGET = process.env.CARGO_TARGET_DIR || join(process.env.HOME, ".cache/shoal/target");
export const RELAY = join(TARGET, "debug/shoal-relay");
export const NODE = join(TARGET, "debug/shoal-node");
const CHROMIUM = process.env.CHROMIUM || "/usr/lib/chromium/chromium";
export const IN_NS = "SHOAL_E2E_IN_NETNS";
export const inNamespace = () => !!process.env[IN_NS];

/// Run `cmd` (a shell line) inside a new network namespace with only `lo` (up): `unshare -n`
/// as root, else `unshare -rn`. Returns {status, out} or null when no namespace can be made.
export function runInNamespace(cmd) {
  const env = { ...process.env, [IN_NS]: "1" };
  delete env.NODE_TEST_CONTEXT; // else an inner `node --test` thinks it is nested and skips
  for (const flags of [["-n"], ["-rn"]]) {
    const r = spawnSync("unshare", [...flags, "--", "sh", "-c", `ip link set lo up && exec ${cmd}`], {
      env, stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20,
    });
    const out = `${r.stdout}${r.stderr}`;
    if (/unshare failed|unshare:/.test(out) && r.status !== 0) continue;
    return { status: r.status, out };
  }
  return null;
}

export { freePort, until };

export function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

// Distinct sentences of 7–25 words (xorshift over a small vocabulary).
const WORDS = ["river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
  "network", "policy", "student", "mountain", "signal", "careful", "harvest", "window", "language",
  "ancient", "machine", "coffee", "travel", "science", "morning", "music", "orbit", "bread", "ticket"];
export function corpus(n, seed = 0x9E3779B97F4A7C15n) {
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

/// A world of processes: relays, nodes, a browser; `close()` kills everything.
export class World {
  constructor(dir) {
    this.dir = dir;
    this.procs = [];
    this.logs = [];
    this.browser = null;
  }

  /// `n` relays witnessing each other; the first serves the app (and, with `capture`, records
  /// every frame it receives to `dir/frames.bin`). Returns their http URLs.
  async relays(n, { capture = false } = {}) {
    const ports = [];
    for (let i = 0; i < n; i++) ports.push(await freePort());
    const urls = ports.map((p) => `http://127.0.0.1:${p}`);
    const data = urls.map((_, i) => join(this.dir, `relay-${i}`));
    const keys = data.map((d) => execFileSync(RELAY, ["key", "--data-dir", d]).toString().trim());
    this.relayLog = join(this.dir, "relay-0.log");
    for (let i = 0; i < n; i++) {
      const args = ["--listen", `127.0.0.1:${ports[i]}`, "--data-dir", data[i],
        "--checkpoint-interval-ms", "200", "--witness-poll-ms", "300", "--log", i === 0 ? "debug" : "warn"];
      for (let j = 0; j < n; j++) if (j !== i) args.push("--peer", `${urls[j]} ${keys[j]}`);
      if (i === 0) args.push("--web-root", join(ROOT, "dist"));
      const env = i === 0 && capture ? { ...process.env, SHOAL_RELAY_TEST_CAPTURE_FRAMES: join(this.dir, "frames.bin") } : process.env;
      const p = spawn(RELAY, args, { stdio: ["ignore", "pipe", "pipe"], env });
      const out = createWriteStream(join(this.dir, `relay-${i}.log`));
      p.stdout.pipe(out);
      p.stderr.pipe(out);
      this.procs.push(p);
      if (i === 0) this.relay = p;
    }
    for (const u of urls) await until(`${u}/healthz`, async () => (await fetch(`${u}/healthz`)).ok, 30_000);
    return urls;
  }

  /// `shoal-node join LINK` on loopback; its stderr lines are kept in `lines`.
  node(name, link, relay, extra = []) {
    const p = spawn(NODE, ["join", link, "--relay", relay, "--udp", "127.0.0.1:0", "--name", name, ...extra],
      { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, SHOAL_LOG: "info" } });
    const lines = [];
    // Whole lines only: a pipe read can end mid-line, and a JSON event split in two (say
    // `{"event":"hold` + `ing",…}`) would never match what a test waits for.
    createInterface({ input: p.stderr, crlfDelay: Infinity }).on("line", (l) => {
      if (l) { lines.push(l); this.logs.push(`[${name}] ${l}`); }
    });
    this.procs.push(p);
    return { p, lines };
  }

  /// Chromium that gathers loopback ICE candidates for pages of `origin`.
  async context(origin) {
    this.browser = await chromium.launch({
      executablePath: CHROMIUM, headless: true,
      args: ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--allow-loopback-in-peer-connection"],
    });
    const context = await this.browser.newContext({ viewport: { width: 1100, height: 900 } });
    await context.grantPermissions(["camera", "microphone"], { origin });
    return context;
  }

  /// A tab with the model ready.
  async tab(context, url, label) {
    const page = await context.newPage();
    page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") this.logs.push(`[${label} ${m.type()}] ${m.text()}`); });
    page.on("pageerror", (e) => this.logs.push(`[${label} pageerror] ${e.message}`));
    await page.goto(url, { waitUntil: "load" });
    await page.waitForFunction(() => window.shoal && window.shoalCircle, null, { timeout: 60_000 });
    await page.evaluate(() => window.shoal.ready);
    return page;
  }

  async close() {
    await this.browser?.close().catch(() => {});
    for (const p of this.procs) p.kill("SIGKILL");
  }
}

export const upPeers = (page) => page.evaluate(() => window.shoalCircle.state().peers.filter((p) => p.state === "up"));
