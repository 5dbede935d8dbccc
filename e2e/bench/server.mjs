#!/usr/bin/env node
// Loopback server for the browser benchmark: the built app (dist/) at /, and under /bench/ the
// bench pages, transformers.js (/bench/tjs/), onnxruntime-web's wasm files (/bench/ort/) and the
// ONNX model directory made by scripts/export_tjs_model.py (/bench/models/), wllama's module
// (/bench/wllama/) and the chat model's GGUF directory (/bench/gguf/). Everything is served
// cross-origin isolated (COOP + COEP), so onnxruntime-web may use wasm threads.
//   node e2e/bench/server.mjs --port 0 --dist DIR --models DIR   → prints "listening on URL"
import { createServer } from "node:http";
import { createReadStream, promises as fs } from "node:fs";
import { extname, join, normalize, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(name); return i >= 0 && args[i + 1] ? args[i + 1] : dflt; };
const ROUTES = [
  ["/bench/tjs/", join(HERE, "node_modules/@huggingface/transformers/dist")],
  ["/bench/ort/", join(HERE, "node_modules/onnxruntime-web/dist")],
  ["/bench/models/", resolve(opt("--models", join(process.env.HOME || "", ".cache/shoal/tjs")))],
  ["/bench/wllama/", join(HERE, "node_modules/@wllama/wllama/esm")],
  ["/bench/gguf/", resolve(opt("--gguf", join(process.env.HOME || "", ".cache/shoal/gguf")))],
  ["/bench/", join(HERE, "page")],
  ["/", resolve(opt("--dist", join(HERE, "../../dist")))],
];
const TYPES = {
  ".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
  ".css": "text/css; charset=utf-8", ".wasm": "application/wasm", ".json": "application/json", ".svg": "image/svg+xml",
  ".txt": "text/plain; charset=utf-8", ".md": "text/markdown; charset=utf-8", ".gguf": "application/octet-stream",
};

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url, "http://x");
    const path = decodeURIComponent(url.pathname);
    const [prefix, root] = ROUTES.find(([p]) => path.startsWith(p));
    let file = join(root, normalize("/" + path.slice(prefix.length)));
    if (!file.startsWith(root)) { res.writeHead(403).end(); return; }
    let st = await fs.stat(file).catch(() => null);
    if (st && st.isDirectory()) { file = join(file, "index.html"); st = await fs.stat(file).catch(() => null); }
    if (!st) { res.writeHead(404, { "content-type": "text/plain" }).end("not found"); return; }
    res.writeHead(200, {
      "content-type": TYPES[extname(file)] || "application/octet-stream",
      "content-length": st.size,
      "cache-control": "no-cache",
      "cross-origin-opener-policy": "same-origin",
      "cross-origin-embedder-policy": "require-corp",
      "cross-origin-resource-policy": "same-origin",
    });
    if (req.method === "HEAD") { res.end(); return; }
    createReadStream(file).pipe(res);
  } catch (e) {
    res.writeHead(500).end(String(e));
  }
});
server.listen(Number(opt("--port", 0)), "127.0.0.1", () => {
  console.log(`listening on http://127.0.0.1:${server.address().port}/`);
});
for (const sig of ["SIGINT", "SIGTERM"]) process.on(sig, () => server.close(() => process.exit(0)));
