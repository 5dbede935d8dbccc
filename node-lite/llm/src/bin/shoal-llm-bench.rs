//! Chat-engine benchmark (on demand, not a test): prefill tok/s for a 512-token prompt and
//! decode tok/s for 128 tokens at 1 and 2 threads, time to first token, peak RSS, the
//! machine's read bandwidth and the bytes each decoded token reads — and, with `--anchor
//! PYTHON`, llama.cpp (llama-cpp-python) on the same GGUF in the same run. Prints a table.
//!
//!   shoal-llm-bench GGUF [--threads 1,2] [--tiers] [--only prefill|decode] [--runs N]
//!                        [--anchor PYTHON] [--script scripts/llm_bench_anchor.py]
//!
//! `--tiers` adds 1-thread rows for every other SIMD kernel family this CPU has (AVX2 beside
//! AVX-512 VNNI, …); `--only decode` skips the timed prefill (for a profiler).

use std::process::Command;
use std::time::Instant;

use shoal_llm::kernels::{self, Tier};
use shoal_llm::{Engine, Logits};

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

/// GB/s reading a 512 MiB buffer (best of 5), summing u64 words in 4 independent lanes.
fn read_bandwidth() -> f64 {
    let n = 64 << 20; // u64 words = 512 MiB
    let buf: Vec<u64> = (0..n as u64).collect();
    let mut best = 0f64;
    for _ in 0..5 {
        let t = Instant::now();
        let mut acc = [0u64; 4];
        for c in buf.chunks_exact(4) {
            acc[0] = acc[0].wrapping_add(c[0]);
            acc[1] = acc[1].wrapping_add(c[1]);
            acc[2] = acc[2].wrapping_add(c[2]);
            acc[3] = acc[3].wrapping_add(c[3]);
        }
        std::hint::black_box(acc);
        best = best.max((n * 8) as f64 / t.elapsed().as_secs_f64() / 1e9);
    }
    best
}

/// A deterministic prompt of `n` tokens (varied words, no repeated prefix).
fn prompt(e: &Engine, n: usize, salt: u32) -> Vec<u32> {
    let words = [
        "river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
        "network", "seven", "blue",
    ];
    let mut text = String::new();
    let mut i = salt as usize;
    for _ in 0..2 * n {
        text.push_str(words[i % words.len()]);
        text.push(' ');
        i = i.wrapping_mul(7).wrapping_add(3) % 1_000_003;
    }
    let mut ids = e.tokenizer.encode(&text, false).unwrap_or_default();
    ids.truncate(n);
    ids
}

struct Row {
    label: String,
    threads: usize,
    prefill: f64,
    decode: f64,
    ttft_ms: f64,
}

#[derive(Clone, Copy, PartialEq)]
enum Only {
    All,
    Prefill,
    Decode,
}

fn run(bytes: &[u8], threads: usize, tier: Tier, runs: usize, only: Only) -> Row {
    let e = Engine::with_tier(bytes, threads, tier).expect("load");
    let mut best = Row {
        label: format!("Shoal ({})", tier.name()),
        threads,
        prefill: 0.0,
        decode: 0.0,
        ttft_ms: f64::NAN,
    };
    // Warm-up.
    let mut s = e.model.session();
    let _ = e.model.forward(&mut s, &prompt(&e, 32, 99), Logits::Last);
    for r in 0..runs {
        let p = prompt(&e, 512, r as u32);
        let mut s = e.model.session();
        let mut logits = Vec::new();
        if only == Only::Decode {
            // Profiling decode: a short prompt, then decode at the same cache length.
            for b in p[..512].chunks(64) {
                logits = e.model.forward(&mut s, b, Logits::Last).expect("prefill");
            }
        } else {
            let t = Instant::now();
            for b in p.chunks(64) {
                logits = e.model.forward(&mut s, b, Logits::Last).expect("prefill");
            }
            let pre = t.elapsed().as_secs_f64();
            best.prefill = best.prefill.max(512.0 / pre);
            // Time to first token for a short chat-sized prompt (64 tokens) from an empty cache.
            let q = prompt(&e, 64, 1000 + r as u32);
            let mut s2 = e.model.session();
            let t = Instant::now();
            let l2 = e.model.forward(&mut s2, &q, Logits::Last).expect("prefill");
            let _first = shoal_llm::sample::argmax(&l2);
            let ms = t.elapsed().as_secs_f64() * 1000.0;
            best.ttft_ms = if best.ttft_ms.is_nan() {
                ms
            } else {
                best.ttft_ms.min(ms)
            };
        }
        if only == Only::Prefill {
            continue;
        }
        // Decode 128 tokens after the 512-token prompt.
        let t = Instant::now();
        for _ in 0..128 {
            let id = shoal_llm::sample::argmax(&logits);
            logits = e
                .model
                .forward(&mut s, &[id], Logits::Last)
                .expect("decode");
        }
        best.decode = best.decode.max(128.0 / t.elapsed().as_secs_f64());
    }
    best
}

const USAGE: &str = "usage: shoal-llm-bench GGUF [--threads 1,2] [--tiers] [--only prefill|decode] [--runs N] [--anchor PYTHON] [--script PATH]";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1).filter(|a| !a.starts_with("--")) else {
        eprintln!("{USAGE}");
        std::process::exit(2);
    };
    let opt = |name: &str| {
        args.iter()
            .position(|a| a == name)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    let runs: usize = opt("--runs").and_then(|v| v.parse().ok()).unwrap_or(2);
    let threads: Vec<usize> = opt("--threads")
        .map(|v| v.split(',').filter_map(|t| t.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 2]);
    let only = match opt("--only").as_deref() {
        None => Only::All,
        Some("prefill") => Only::Prefill,
        Some("decode") => Only::Decode,
        Some(other) => {
            eprintln!("--only {other}?\n{USAGE}");
            std::process::exit(2);
        }
    };
    let bytes = std::fs::read(path).expect("read GGUF");
    let best = kernels::best_tier();
    let e = Engine::from_gguf(&bytes, 1).expect("load");
    let bpt = e.model.bytes_per_token();
    drop(e);
    let mut rows: Vec<Row> = threads
        .iter()
        .map(|&t| run(&bytes, t, best, runs, only))
        .collect();
    if args.iter().any(|a| a == "--tiers") {
        for tier in kernels::available_tiers() {
            if tier != best && tier != Tier::Scalar {
                rows.push(run(&bytes, 1, tier, runs, only));
            }
        }
    }
    // Read before the bandwidth probe, whose 512 MiB buffer would count otherwise.
    let rss = peak_rss_mib();
    let bw = read_bandwidth();
    println!(
        "kernel: {}; read bandwidth (1 thread, 512 MiB): {bw:.1} GB/s; bytes read per decoded token: {:.1} MB → bandwidth bound {:.0} tok/s",
        best.name(),
        bpt as f64 / 1e6,
        bw * 1e9 / bpt as f64
    );
    let mut anchor: Option<serde_json::Value> = None;
    if let Some(py) = opt("--anchor") {
        let script = opt("--script").unwrap_or_else(|| "scripts/llm_bench_anchor.py".into());
        let out = Command::new(&py)
            .args([script.as_str(), path.as_str(), "--runs", &runs.to_string()])
            .output();
        match out {
            Ok(o) if o.status.success() => {
                let line = String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .last()
                    .unwrap_or("")
                    .to_string();
                anchor = serde_json::from_str(&line).ok();
            }
            Ok(o) => eprintln!("anchor failed: {}", String::from_utf8_lossy(&o.stderr)),
            Err(e) => eprintln!("anchor failed: {e}"),
        }
    }
    println!();
    println!(
        "| engine | threads | prefill tok/s (512) | decode tok/s (128) | first token (64-token prompt) | peak RSS MiB |"
    );
    println!("| --- | --- | --- | --- | --- | --- |");
    for r in &rows {
        println!(
            "| {} | {} | {:.1} | {:.1} | {:.0} ms | {rss:.0} |",
            r.label, r.threads, r.prefill, r.decode, r.ttft_ms
        );
    }
    if let Some(a) = &anchor {
        for r in a["rows"].as_array().into_iter().flatten() {
            println!(
                "| llama.cpp ({}) | {} | {:.1} | {:.1} | {:.0} ms | {:.0} |",
                a["version"].as_str().unwrap_or("?"),
                r["threads"],
                r["prefill"].as_f64().unwrap_or(0.0),
                r["decode"].as_f64().unwrap_or(0.0),
                r["ttft_ms"].as_f64().unwrap_or(0.0),
                a["peak_rss_mib"].as_f64().unwrap_or(0.0)
            );
        }
        println!();
        for r in rows.iter().filter(|r| r.label.contains(best.name())) {
            let Some(ar) = a["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|ar| ar["threads"].as_u64() == Some(r.threads as u64))
            else {
                continue;
            };
            let p = ar["prefill"].as_f64().unwrap_or(f64::NAN);
            let d = ar["decode"].as_f64().unwrap_or(f64::NAN);
            let t = ar["ttft_ms"].as_f64().unwrap_or(f64::NAN);
            println!(
                "{} thread(s): prefill {:.2}×, decode {:.2}×, first token {:.2}× (time ratio, lower is better) llama.cpp",
                r.threads,
                r.prefill / p,
                r.decode / d,
                r.ttft_ms / t
            );
        }
    }
    for r in rows.iter().filter(|r| r.decode > 0.0) {
        println!(
            "{} ({} thread(s)): decode at {:.0} % of the 1-thread read-bandwidth bound",
            r.label,
            r.threads,
            100.0 * r.decode * bpt as f64 / (bw * 1e9)
        );
    }
}
