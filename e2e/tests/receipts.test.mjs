// The tab's light client (Receipts view): three real `shoal-relay` processes witness each other;
// relay A serves the app. Receipts signed here (an independent encoder: Node's Ed25519 and a
// hand-written postcard writer, checked by the relay's decoder) are submitted to A and kept in
// the tab's receipt store; the tab must prove inclusion under a checkpoint that carries a
// 2-of-3 witness quorum (A's signature plus B's and C's cosignatures), report a receipt that no
// log has as not included, and never talk to any other origin.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import { spawn, execFileSync } from "node:child_process";
import { generateKeyPairSync, sign, randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, createWriteStream, readFileSync, existsSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { launch, newContext, ROOT, freePort, until } from "../lib.mjs";

const BIN = join(process.env.CARGO_TARGET_DIR || join(process.env.HOME, ".cache/shoal/target"), "debug/shoal-relay");
const procs = [];
const dirs = [];
let browser, ctx;
after(async () => {
  if (ctx && ctx.logs.length) console.log(ctx.logs.slice(0, 40).join("\n"));
  await browser?.close();
  for (const p of procs) p.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

// --- receipts: postcard encoding of node_lite::receipt::Receipt (v1) ---
function varint(n) {
  let v = BigInt(n);
  const out = [];
  do {
    let b = Number(v & 0x7fn);
    v >>= 7n;
    if (v > 0n) b |= 0x80;
    out.push(b);
  } while (v > 0n);
  return Buffer.from(out);
}
const rawPub = (k) => k.export({ format: "der", type: "spki" }).subarray(-32);
function receipt(worker, requester, shard) {
  const body = Buffer.concat([
    randomBytes(16), varint(shard), randomBytes(32), randomBytes(32),
    rawPub(worker.publicKey), rawPub(requester.publicKey), varint(1_700_000_000_000), varint(1_700_000_000_250),
  ]);
  const wsig = sign(null, Buffer.concat([Buffer.from("shoal/receipt/v1/worker\0"), body]), worker.privateKey);
  const rsig = sign(null, Buffer.concat([Buffer.from("shoal/receipt/v1/requester\0"), body, wsig]), requester.privateKey);
  return Buffer.concat([Buffer.from([1]), body, varint(64), wsig, varint(64), rsig]).toString("base64");
}

test("the tab verifies its receipts with a 2-of-3 witness quorum", { timeout: 300_000 }, async () => {
  assert.ok(existsSync(BIN), `${BIN} missing: build it (cargo build -p shoal-relay)`);
  assert.ok(existsSync(join(ROOT, "dist/index.html")), "dist/ missing: scripts/build-web");
  const n = 3;
  const ports = [];
  for (let i = 0; i < n; i++) ports.push(await freePort());
  const urls = ports.map((p) => `http://127.0.0.1:${p}`);
  const data = [];
  for (let i = 0; i < n; i++) { const d = mkdtempSync(join(tmpdir(), `shoal-relay${i}-`)); dirs.push(d); data.push(d); }
  const keys = data.map((d) => execFileSync(BIN, ["key", "--data-dir", d]).toString().trim());
  for (let i = 0; i < n; i++) {
    const args = ["--listen", `127.0.0.1:${ports[i]}`, "--data-dir", data[i],
      "--checkpoint-interval-ms", "200", "--witness-poll-ms", "300", "--log", "warn"];
    for (let j = 0; j < n; j++) if (j !== i) args.push("--peer", `${urls[j]} ${keys[j]}`);
    if (i === 0) args.push("--web-root", join(ROOT, "dist"));
    const p = spawn(BIN, args, { stdio: ["ignore", "ignore", "pipe"] });
    p.stderr.pipe(createWriteStream(join(data[i], "stderr.log")));
    procs.push(p);
  }
  for (const u of urls) await until(`${u}/healthz`, async () => (await fetch(`${u}/healthz`)).ok);

  // Two receipts of this requester's jobs: one anchored in A, one that never was.
  const requester = generateKeyPairSync("ed25519");
  const worker = generateKeyPairSync("ed25519");
  const anchored = receipt(worker, requester, 0);
  const missing = receipt(worker, requester, 1);
  const res = await fetch(`${urls[0]}/log/submit`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ receipts: [anchored] }),
  });
  assert.equal(res.status, 200, await res.clone().text());
  const promise = await res.json();
  assert.equal(promise.promises.length, 1);
  const index = promise.promises[0].index;

  browser = await launch();
  ctx = await newContext(browser);
  const page = await ctx.context.newPage();
  await page.goto(`${urls[0]}/?quorum=2&backend=cpu`, { waitUntil: "load" });
  await page.waitForFunction(() => window.shoalReceipts && window.shoalLight, null, { timeout: 60_000 });
  assert.equal(await page.evaluate((r) => window.shoalReceipts.add(r), [anchored, missing]), 2);
  assert.equal(await page.evaluate((r) => window.shoalReceipts.add(r), [anchored]), 0, "duplicates are not stored twice");

  const report = await until("receipt included under a 2-of-3 witnessed checkpoint", async () => {
    const r = await page.evaluate(() => window.shoalLight.check());
    return r.receipts.length === 2 && r.receipts.some((x) => x.included && x.witnessed) ? r : undefined;
  });
  assert.ok(!report.error && !report.equivocation, JSON.stringify(report));
  assert.equal(report.quorum, 2);
  assert.ok(report.cosigners >= 2, JSON.stringify(report));
  assert.ok(report.witnessed);
  assert.equal(report.origin, keys[0].split("+")[0]);
  const [a, b] = report.receipts;
  assert.deepEqual([a.included, a.witnessed, a.index], [true, true, index]);
  assert.deepEqual([b.included, b.witnessed], [false, false]);

  // The tab pinned A's keys and remembered the checkpoint (consistency next time).
  const pinned = await page.evaluate(() => JSON.parse(localStorage.getItem("shoal.trust")));
  assert.equal(pinned.log, keys[0]);
  assert.equal(pinned.witnesses.length, 2);
  assert.ok(await page.evaluate(() => localStorage.getItem("shoal.checkpoint")));

  // The log grows; after a reload the tab checks consistency from its remembered checkpoint.
  const more = await fetch(`${urls[0]}/log/submit`, {
    method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ receipts: [receipt(worker, requester, 2), receipt(worker, requester, 3)] }),
  });
  assert.equal(more.status, 200);
  await page.reload({ waitUntil: "load" });
  await page.waitForFunction(() => window.shoalLight, null, { timeout: 60_000 });
  const grown = await until("a witnessed checkpoint of size ≥ 3", async () => {
    const r = await page.evaluate(() => window.shoalLight.check());
    return r.size >= 3 && r.witnessed ? r : undefined;
  });
  assert.ok(!grown.error, JSON.stringify(grown));
  assert.ok(grown.growth.length >= 2, JSON.stringify(grown.growth));
  assert.equal(grown.receipts.filter((x) => x.included).length, 1);

  // The view shows the same.
  await page.getByRole("button", { name: "Check now" }).click();
  await page.waitForFunction(() => /1 included · 1 witnessed/.test(document.querySelector('[data-testid="receipts-summary"]')?.textContent || ""), null, { timeout: 60_000 });
  const status = await page.textContent('[data-testid="log-status"]');
  assert.match(status, /^✓ log .* cosigned by [23] witnesses \(2 needed\)/);
  await page.setViewportSize({ width: 390, height: 844 });
  await page.screenshot({ path: join(ROOT, "e2e/test-results/receipts-390.png"), fullPage: true });

  // Same origin only.
  const origin = new URL(urls[0]).origin;
  const foreign = ctx.requests.filter((u) => !u.startsWith(origin + "/") && !u.startsWith("data:") && !u.startsWith("blob:"));
  assert.deepEqual(foreign, []);
  assert.ok(!readFileSync(join(data[0], "stderr.log"), "utf8").includes("panicked"));
});
