// The tab's own job receipts: the encoded, countersigned receipts (base64) of shards other
// circle members did for this tab, kept in IndexedDB (`shoal-receipts`) so the Receipts view
// (app/src/light.rs) can check them against the relay's log after a reload.
//   window.shoalReceipts.add(b64s) → Promise<number newly stored>
//   window.shoalReceipts.list()    → Promise<string[]> (oldest first)
//   window.shoalReceipts.clear()   → Promise<void>
// Bounded: at most MAX receipts; the oldest go first.
const DB = "shoal-receipts";
const STORE = "receipts";
const MAX = 10000;
const MAX_B64 = 1024; // a receipt is at most 512 bytes

function open() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB, 1);
    req.onupgradeneeded = () => {
      req.result.createObjectStore(STORE, { keyPath: "b64" }).createIndex("at", "at");
    };
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

function done(tx) {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error);
    tx.onabort = () => reject(tx.error || new Error("transaction aborted"));
  });
}

function all(store) {
  return new Promise((resolve, reject) => {
    const req = store.index("at").getAll();
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function add(b64s) {
  if (!Array.isArray(b64s)) throw new TypeError("shoalReceipts.add expects an array of base64 strings");
  const db = await open();
  const tx = db.transaction(STORE, "readwrite");
  const store = tx.objectStore(STORE);
  const existing = new Set((await all(store)).map((r) => r.b64));
  let added = 0;
  const now = Date.now();
  for (const b of b64s) {
    if (typeof b !== "string" || b.length > MAX_B64 || existing.has(b)) continue;
    store.put({ b64: b, at: now + added / 1000 });
    existing.add(b);
    added++;
  }
  await done(tx);
  // Trim the oldest beyond MAX.
  const tx2 = db.transaction(STORE, "readwrite");
  const s2 = tx2.objectStore(STORE);
  const rows = await all(s2);
  for (const r of rows.slice(0, Math.max(0, rows.length - MAX))) s2.delete(r.b64);
  await done(tx2);
  db.close();
  return added;
}

async function list() {
  const db = await open();
  const tx = db.transaction(STORE, "readonly");
  const rows = await all(tx.objectStore(STORE));
  db.close();
  return rows.map((r) => r.b64);
}

async function clear() {
  const db = await open();
  const tx = db.transaction(STORE, "readwrite");
  tx.objectStore(STORE).clear();
  await done(tx);
  db.close();
}

window.shoalReceipts = { add, list, clear };
