//! `shoal-bench`: sentences/s of Shoal's native embedder against the anchors on this machine.
//!
//! ```text
//! scripts/bench                    # setup --bench, release build, this binary, the table
//! shoal-bench [--backend cpu,flex,gpu] [--precision quantized,exact] [--anchors] [--seconds S]
//! ```
//!
//! Backends: `cpu` = the fused fast encoder (default CPU path; once per `--precision`: integer
//! weights on the VNNI/AVX2 tiles, or exact f32), `flex` = burn flex, `gpu` = burn wgpu. Each
//! row names the kernels it ran and its min cosine to the exact f32 engine's vectors of the
//! same workload (the golden tests hold every engine to sentence-transformers). Workloads: short (~12 tokens) and long (~128 tokens) sentences, batch 1 and 32. GPU
//! numbers are steady state: every shape is run once before timing (autotune, shaders).
//! `--anchors` runs scripts/bench_anchors.py (PyTorch sentence-transformers and ONNX Runtime
//! on an ONNX export of the same weights) in the same run.

use anyhow::{Context, Result};
use clap::Parser;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use node_lite::model::{Backend, Embedder, Precision};
use node_lite::weights::source::load_dir;
use std::time::{Duration, Instant};

#[derive(Parser)]
struct Args {
    /// Model directory (with f32/ and f16/).
    #[arg(long, env = "SHOAL_MODEL_DIR")]
    model: std::path::PathBuf,
    /// Backends to measure.
    #[arg(long, value_delimiter = ',', default_value = "cpu,flex")]
    backend: Vec<String>,
    /// CPU engine precisions to measure (`quantized`, `exact`).
    #[arg(long, value_delimiter = ',', default_value = "quantized,exact")]
    precision: Vec<String>,
    /// Workloads to measure (`short-b1`, `short-b32`, `long-b1`, `long-b32`); the others print
    /// `NaN` (profiling one cell: `perf record -- shoal-bench --workload short-b1 …`).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "short-b1,short-b32,long-b1,long-b32"
    )]
    workload: Vec<String>,
    /// Weight variants to measure.
    #[arg(long, value_delimiter = ',', default_value = "f32")]
    variant: Vec<String>,
    /// Minimum seconds per measurement.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Also run the Python anchors (needs `scripts/setup --bench`).
    #[arg(long)]
    anchors: bool,
    /// Python interpreter for the anchors.
    #[arg(long, default_value = "python3")]
    python: String,
}

const WORDS: &[&str] = &[
    "river", "market", "quietly", "engine", "painted", "history", "winter", "bright", "garden",
    "network", "policy", "student", "mountain", "signal", "careful", "harvest", "window",
    "language", "ancient", "machine", "coffee", "travel", "science", "morning", "music",
];

/// Deterministic sentences of `words` words (MiniLM's tokenizer maps these to one token each).
pub fn sentences(n: usize, words: usize) -> Vec<String> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..n)
        .map(|_| {
            (0..words)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    WORDS[(state % WORDS.len() as u64) as usize]
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| {
                l.split_whitespace()
                    .nth(1)
                    .and_then(|v| v.parse::<f64>().ok())
            })
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

/// Start a new peak-RSS window (Linux: writing 5 to `clear_refs` resets `VmHWM`), so each
/// row reports its own engine's peak, not an earlier row's.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

/// Sentences/s embedding `texts` in batches of `batch`, repeated for at least `min` time.
fn measure(e: &mut Embedder, texts: &[String], batch: usize, min: Duration) -> Result<f64> {
    e.batch_size = batch;
    // Warm-up: every batch shape once (GPU autotune and shader compilation happen here).
    e.embed(&texts[..batch.min(texts.len())])?;
    let start = Instant::now();
    let mut done = 0usize;
    while start.elapsed() < min {
        for chunk in texts.chunks(batch) {
            e.embed(chunk)?;
            done += chunk.len();
        }
    }
    Ok(done as f64 / start.elapsed().as_secs_f64())
}

fn main() -> Result<()> {
    let args = Args::parse();
    let min = Duration::from_secs_f64(args.seconds);
    let short = sentences(64, 10); // + [CLS]/[SEP] = 12 tokens
    let long = sentences(64, 126); // = 128 tokens
    let mut precisions = Vec::new();
    for p in &args.precision {
        let Some(p) = Precision::parse(p) else {
            anyhow::bail!("unknown precision {p} (quantized, exact)");
        };
        precisions.push(p);
    }
    let workload: Vec<&str> = short.iter().chain(&long).map(String::as_str).collect();
    println!(
        "| runtime | weights | short b1 | short b32 | long b1 | long b32 | peak RSS MiB | min cos vs exact |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- | --- |");
    for backend in &args.backend {
        let Some(b) = Backend::parse(backend) else {
            anyhow::bail!("unknown backend {backend} (cpu, flex, gpu)");
        };
        for variant in &args.variant {
            let w = load_dir(&args.model.join(variant)).context("loading model")?;
            // The reference the rows' vectors are compared with: exact f32 on this variant.
            let reference =
                Embedder::load_with(&w, Backend::Cpu, Precision::Exact)?.embed(&workload)?;
            let runs = if b == Backend::Cpu {
                precisions.clone()
            } else {
                vec![Precision::Exact]
            };
            for precision in runs {
                reset_peak_rss();
                let mut e = Embedder::load_with(&w, b, precision)?;
                let min_cos = e
                    .embed(&workload)?
                    .iter()
                    .zip(&reference)
                    .map(|(a, r)| node_lite::vector::cosine(a, r))
                    .fold(f32::INFINITY, f32::min);
                let t = e.tokenize(&short[0])?.len();
                let t2 = e.tokenize(&long[0])?.len();
                assert!(t == 12 && t2 == 128, "workload token counts {t}/{t2}");
                let mut r = [f64::NAN; 4];
                for (i, (cell, texts, batch)) in [
                    ("short-b1", &short, 1),
                    ("short-b32", &short, 32),
                    ("long-b1", &long, 1),
                    ("long-b32", &long, 32),
                ]
                .into_iter()
                .enumerate()
                {
                    if args.workload.iter().any(|w| w == cell) {
                        r[i] = measure(&mut e, texts, batch, min)?;
                    }
                }
                let name = match b {
                    Backend::Cpu => format!("{} [{}]", b.label(), e.engine_name()),
                    _ => b.label().to_string(),
                };
                println!(
                    "| {name} | {variant} | {:.0} | {:.0} | {:.1} | {:.1} | {:.0} | {min_cos:.6} |",
                    r[0],
                    r[1],
                    r[2],
                    r[3],
                    peak_rss_mib()
                );
            }
        }
    }
    if args.anchors {
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scripts/bench_anchors.py");
        let status = std::process::Command::new(&args.python)
            .arg(script)
            .arg(format!("{}", args.seconds))
            .status()
            .context("running the Python anchors")?;
        anyhow::ensure!(status.success(), "anchors failed");
    }
    Ok(())
}
