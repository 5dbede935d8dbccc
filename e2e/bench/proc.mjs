// Process facts for the browser benchmarks (Linux /proc).
import { readFileSync, readdirSync } from "node:fs";

// Proportional set size of every process this script started (the browser's tree), in MB.
export function browserPss() {
  const root = process.pid;
  const kids = new Map();
  for (const d of readdirSync("/proc")) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = readFileSync(`/proc/${d}/stat`, "utf8");
      const ppid = Number(stat.slice(stat.lastIndexOf(")") + 2).split(" ")[1]);
      if (!kids.has(ppid)) kids.set(ppid, []);
      kids.get(ppid).push(Number(d));
    } catch (_) { /* gone */ }
  }
  let kb = 0;
  const walk = (pid) => {
    if (pid !== root) try {
      const m = /Pss:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/smaps_rollup`, "utf8"));
      if (m) kb += Number(m[1]);
    } catch (_) { /* gone */ }
    for (const k of kids.get(pid) || []) walk(k);
  };
  walk(root);
  return kb / 1024;
}
