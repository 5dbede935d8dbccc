//! Receipt log benchmark. Prints a table:
//! 1. durable appends/s (group commit, fsync per transaction) at batch sizes 1, 64, 1024 from
//!    64 concurrent submitters (entries are receipt-sized: 310 bytes);
//! 2. proof sizes and generation/verification times at 10^6 entries;
//! 3. storage bytes per receipt.
//!
//! Usage: `log-bench [--entries N] [--secs S] [--dir DIR]` (defaults 1000000, 3, a temp dir
//! under the system temp directory). Build with `--release`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use shoal_relay::log::{Log, LogConfig};
use shoal_tlog::note::{Ed25519Signer, NoteVerifier};
use shoal_tlog::{leaf_hash, verify_consistency, verify_inclusion};

const SUBMITTERS: usize = 64;
const ENTRY_BYTES: usize = 310;

fn entry(n: u64) -> Vec<u8> {
    let mut e = vec![0u8; ENTRY_BYTES];
    e[..8].copy_from_slice(&n.to_le_bytes());
    // Some non-constant filler so pages do not compress trivially anywhere.
    for (i, b) in e[8..].iter_mut().enumerate() {
        *b = (n as usize).wrapping_mul(31).wrapping_add(i) as u8;
    }
    e
}

fn open(dir: &std::path::Path, name: &str) -> anyhow::Result<Arc<Log>> {
    // Always start from an empty log (a left-over file would turn appends into dedup hits).
    let _ = std::fs::remove_file(dir.join(name));
    let signer = Arc::new(Ed25519Signer::from_seed(
        "bench.shoal.invalid/log",
        &[7; 32],
    )?);
    Ok(Log::open(
        &dir.join(name),
        LogConfig::new("bench.shoal.invalid/log"),
        signer,
    )?)
}

/// 64 submitters each appending `batch` entries per call for `secs`; returns (appends/s,
/// p50 ms, p99 ms of an append call).
async fn throughput(log: Arc<Log>, batch: usize, secs: f64) -> anyhow::Result<(f64, f64, f64)> {
    let counter = Arc::new(AtomicU64::new(0));
    let next = Arc::new(AtomicU64::new(log.committed().0 + 1_000_000_000));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..SUBMITTERS {
        let (log, counter, next, stop) = (log.clone(), counter.clone(), next.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let start = next.fetch_add(batch as u64, Ordering::Relaxed);
                let es: Vec<Vec<u8>> = (start..start + batch as u64).map(entry).collect();
                let t = Instant::now();
                log.append(es).await?;
                lat.push(t.elapsed().as_secs_f64() * 1e3);
                counter.fetch_add(batch as u64, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    let t0 = Instant::now();
    let c0 = counter.load(Ordering::Relaxed);
    tokio::time::sleep(Duration::from_secs_f64(secs)).await;
    let done = counter.load(Ordering::Relaxed) - c0;
    let el = t0.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(0.0)
    };
    Ok((done as f64 / el, pct(0.5), pct(0.99)))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut entries: u64 = 1_000_000;
    let mut secs = 3.0f64;
    let mut dir = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--entries" => entries = args.next().context("--entries N")?.parse()?,
            "--secs" => secs = args.next().context("--secs S")?.parse()?,
            "--dir" => dir = Some(std::path::PathBuf::from(args.next().context("--dir DIR")?)),
            other => anyhow::bail!("unknown argument {other}"),
        }
    }
    let tmp;
    let dir = match dir {
        Some(d) => {
            std::fs::create_dir_all(&d)?;
            d
        }
        None => {
            tmp = std::env::temp_dir().join(format!("shoal-log-bench-{}", std::process::id()));
            std::fs::create_dir_all(&tmp)?;
            tmp.clone()
        }
    };

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "machine: {} cores, load average at start {}\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        load.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    );
    println!(
        "## Durable appends ({SUBMITTERS} concurrent submitters, {ENTRY_BYTES}-byte entries, fsync per group commit)"
    );
    println!("| batch per submit | appends/s | submit p50 ms | submit p99 ms |");
    println!("| ---: | ---: | ---: | ---: |");
    for batch in [1usize, 64, 1024] {
        let name = format!("tput-{batch}.redb");
        let log = open(&dir, &name)?;
        // Warm up the file a little so we do not measure the first allocation only.
        throughput(log.clone(), batch, 0.3).await?;
        let (rate, p50, p99) = throughput(log.clone(), batch, secs).await?;
        println!("| {batch} | {rate:.0} | {p50:.2} | {p99:.2} |");
        drop(log);
        let _ = std::fs::remove_file(dir.join(&name));
    }

    // Fill a log to `entries`.
    let log = open(&dir, "big.redb")?;
    let t0 = Instant::now();
    let chunk = 1024u64;
    let mut next = 0u64;
    while next < entries {
        let mut tasks = Vec::new();
        for _ in 0..SUBMITTERS {
            if next >= entries {
                break;
            }
            let end = (next + chunk).min(entries);
            let es: Vec<Vec<u8>> = (next..end).map(entry).collect();
            next = end;
            let log = log.clone();
            tasks.push(tokio::spawn(async move { log.append(es).await }));
        }
        for t in tasks {
            t.await??;
        }
    }
    let fill = t0.elapsed().as_secs_f64();
    let note = log.checkpoint_now().await?;
    let size = log.committed().0;
    let root = log.root_at(size)?;
    println!();
    println!(
        "## Proofs at {size} entries (filled in {fill:.1} s = {:.0} appends/s, batch 1024 x {SUBMITTERS})",
        size as f64 / fill
    );
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    let mut rnd = |n: u64| {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng % n
    };
    let samples = 2000;
    let (mut gen_t, mut ver_t, mut max_len, mut sum_len) = (0.0, 0.0, 0usize, 0usize);
    for _ in 0..samples {
        let i = rnd(size);
        let t = Instant::now();
        let p = log.inclusion_proof(i, size)?;
        gen_t += t.elapsed().as_secs_f64();
        // Concurrent submitters commit in any order: hash what the log holds at `i`.
        let data = log.entries(i, i + 1)?;
        let lh = leaf_hash(data.first().context("entry")?);
        let t = Instant::now();
        verify_inclusion(i, size, &lh, &p, &root)?;
        ver_t += t.elapsed().as_secs_f64();
        max_len = max_len.max(p.len());
        sum_len += p.len();
    }
    println!("| proof | avg hashes | max bytes | generate µs (redb) | verify µs |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    println!(
        "| inclusion | {:.1} | {} | {:.1} | {:.1} |",
        sum_len as f64 / samples as f64,
        max_len * 32,
        gen_t / samples as f64 * 1e6,
        ver_t / samples as f64 * 1e6
    );
    let (mut gen_t, mut ver_t, mut max_len, mut sum_len) = (0.0, 0.0, 0usize, 0usize);
    let csamples = 500;
    for _ in 0..csamples {
        let old = 1 + rnd(size - 1);
        let old_root = log.root_at(old)?;
        let t = Instant::now();
        let p = log.consistency_proof(old, size)?;
        gen_t += t.elapsed().as_secs_f64();
        let t = Instant::now();
        verify_consistency(old, size, &old_root, &root, &p)?;
        ver_t += t.elapsed().as_secs_f64();
        max_len = max_len.max(p.len());
        sum_len += p.len();
    }
    println!(
        "| consistency | {:.1} | {} | {:.1} | {:.1} |",
        sum_len as f64 / csamples as f64,
        max_len * 32,
        gen_t / csamples as f64 * 1e6,
        ver_t / csamples as f64 * 1e6
    );
    // Checkpoint verification (signature) cost, as a light client pays it.
    let lv = NoteVerifier::new(
        "bench.shoal.invalid/log",
        shoal_tlog::note::NoteSigner::public_key(&Ed25519Signer::from_seed(
            "bench.shoal.invalid/log",
            &[7; 32],
        )?),
    )?;
    let t = Instant::now();
    for _ in 0..200 {
        shoal_tlog::checkpoint::SignedCheckpoint::verify(note.as_bytes(), &lv, None)?;
    }
    println!(
        "| checkpoint signature | — | {} | — | {:.1} |",
        note.len(),
        t.elapsed().as_secs_f64() / 200.0 * 1e6
    );
    println!();
    // Close the log (its writer thread exits when the queue closes), compact, measure.
    let raw_bytes = std::fs::metadata(dir.join("big.redb"))?.len();
    drop(log);
    let path = dir.join("big.redb");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut db = loop {
        match redb::Database::create(&path) {
            Ok(db) => break db,
            Err(e) if Instant::now() < deadline => {
                let _ = e;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    db.compact()?;
    drop(db);
    let file_bytes = std::fs::metadata(&path)?.len();
    println!("## Storage");
    println!(
        "| entries | entry bytes | file bytes before compaction | file bytes compacted | bytes per receipt | overhead per receipt |\n| ---: | ---: | ---: | ---: | ---: | ---: |\n| {size} | {ENTRY_BYTES} | {raw_bytes} | {file_bytes} | {:.0} | {:.0} |",
        file_bytes as f64 / size as f64,
        file_bytes as f64 / size as f64 - ENTRY_BYTES as f64
    );
    let _ = std::fs::remove_file(&path);
    Ok(())
}
