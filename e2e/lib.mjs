// Shared helpers for the e2e tests: Chromium launch, request recording, golden data.
import { chromium } from "playwright-core";
import { readFileSync, mkdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { createServer } from "node:net";

export const HERE = dirname(fileURLToPath(import.meta.url));
export const ROOT = join(HERE, "..");
export const RESULTS = join(HERE, "test-results");
mkdirSync(RESULTS, { recursive: true });

// The page under test (e2e/run serves dist/ and sets it). Suites that start their own relays
// (circle, receipts, the circle benchmark) import this module without one.
export const BASE = process.env.SHOAL_URL;
export const ORIGIN = BASE ? new URL(BASE).origin : null;
const needBase = () => { if (!BASE) throw new Error("SHOAL_URL is not set: run the tests through e2e/run"); };

const CHROMIUM = process.env.CHROMIUM || "/usr/lib/chromium/chromium";
const FLAGS = ["--no-sandbox", "--disable-quic", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-gpu-sandbox"];

export async function launch({ webgpu = false } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: webgpu ? [...FLAGS, "--enable-unsafe-webgpu"] : FLAGS,
  });
}

// A fresh context that records every request (pages and workers) and page errors.
export async function newContext(browser, opts = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...opts });
  const requests = [];
  const logs = [];
  context.on("request", (r) => requests.push(r.url()));
  context.on("page", (p) => watchPage(p, logs));
  return { context, requests, logs };
}

function watchPage(page, logs) {
  page.on("console", (m) => { if (m.type() === "error" || m.type() === "warning") logs.push(`[${m.type()}] ${m.text()}`); });
  page.on("pageerror", (e) => logs.push(`[pageerror] ${e.message}`));
  page.on("worker", (w) => w.on("console", (m) => logs.push(`[worker ${m.type()}] ${m.text()}`)));
}

export async function openApp(context, query = "") {
  needBase();
  const page = await context.newPage();
  await page.goto(BASE + query, { waitUntil: "load" });
  await waitReady(page);
  return page;
}

// Dedicated workers driven by their message protocol (worker.js), one per name:
// `window.__call(name, msg, want)` in the page posts `msg` (with a fresh id) and resolves with the
// first message of type `want` for that id, or rejects on an error message; notices go to the
// console (ctx.logs).
export async function installWorkerCall(page) {
  await page.evaluate(() => {
    window.__w = {};
    let seq = 1;
    window.__call = (name, msg, want) => new Promise((resolve, reject) => {
      const w = window.__w[name] || (window.__w[name] = new Worker("./worker.js", { name }));
      const id = seq++;
      w.onmessage = (ev) => {
        const m = ev.data;
        if (m.type === "error") reject(new Error(m.message));
        else if (m.type === "notice") console.warn(`worker notice: ${m.message}`);
        else if (m.type === want && (m.id === undefined || m.id === id)) resolve(m);
      };
      w.postMessage({ ...msg, id });
    });
  });
}

export async function waitReady(page, timeout = 240_000) {
  await page.waitForFunction(() => window.shoal && window.shoal.ready, null, { timeout: 30_000 });
  await page.evaluate(() => window.shoal.ready).catch(async (e) => {
    const st = await page.evaluate(() => window.shoal.state()).catch(() => null);
    throw new Error(`shoal.ready rejected: ${e.message}; state: ${JSON.stringify(st && { status: st.status, message: st.message, notices: st.notices })}`);
  });
  // ready is a promise; make sure we waited long enough on slow machines.
  await page.waitForFunction(() => window.shoal.state().status === "ready", null, { timeout });
}

export function golden() {
  return JSON.parse(readFileSync(join(ROOT, "node-lite/model/tests/data/golden.json"), "utf8")).items;
}

export function cosine(a, b) {
  let d = 0, na = 0, nb = 0;
  for (let i = 0; i < a.length; i++) { d += a[i] * b[i]; na += a[i] * a[i]; nb += b[i] * b[i]; }
  return d / Math.sqrt(na * nb);
}

export const weightRequests = (reqs) => reqs.filter((u) => /\/models\/.*\/(weights\.\d+|tokenizer\.json)$/.test(u));
export const foreign = (reqs) => reqs.filter((u) => !u.startsWith(ORIGIN + "/") && !u.startsWith("data:") && !u.startsWith("blob:"));

export const DOCS = [
  { name: "bread.md", text: "Sourdough bread needs an active starter. Feed the starter flour and water, let the dough rise overnight, then bake it in a hot Dutch oven until the crust is deep brown." },
  { name: "orbit.txt", text: "The International Space Station orbits Earth about every ninety minutes at an altitude of roughly 400 kilometres. Astronauts aboard see sixteen sunrises a day." },
  { name: "tax.txt", text: "To file your income tax return, gather your salary statements and receipts for deductible expenses, then submit the form to the revenue office before the April deadline." },
];

// A free loopback TCP port (for a process the test starts).
export const freePort = () => new Promise((resolve, reject) => {
  const s = createServer();
  s.listen(0, "127.0.0.1", () => { const p = s.address().port; s.close(() => resolve(p)); });
  s.on("error", reject);
});

// Poll `f` every 200 ms until it returns something truthy (errors count as "not yet").
export async function until(what, f, timeout = 120_000) {
  const t0 = Date.now();
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    if (Date.now() - t0 > timeout) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
