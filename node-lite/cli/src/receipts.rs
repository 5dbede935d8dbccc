//! `shoal-node receipts`: is each of my receipts in a relay's log, under a witnessed checkpoint?
//!
//! The receipts come from the node's store (`node_lite::receipt_store`, written when this node
//! requests circle work). For every relay log given with `--log "URL KEY"`, the light client
//! checks the checkpoint's signature, a quorum of witness cosignatures (the other logs' keys
//! plus `--witness` keys), consistency with the checkpoint it accepted last time (kept in
//! `logs.json` beside the store), and each receipt's inclusion proof. Each run also records the
//! log's size, so the growth of each log over time can be plotted.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use node_lite::receipt::Receipt;
use node_lite::receipt_store::ReceiptStore;
use node_lite::tlog::checkpoint::CosignatureVerifier;
use node_lite::tlog::note::NoteVerifier;
use node_lite::tlog::remote::{StatusOptions, StatusReport, TrustedLog, receipt_status};
use serde::{Deserialize, Serialize};

/// Growth points kept per log.
const MAX_GROWTH_POINTS: usize = 512;
/// Exit code when a log was caught equivocating.
pub(crate) const EXIT_EQUIVOCATION: u8 = 3;

/// What the light client remembers per log (by origin) between runs.
#[derive(Debug, Default, Serialize, Deserialize)]
struct LogMemory {
    /// Last accepted checkpoint (signed note text).
    checkpoint: Option<String>,
    /// (unix ms, tree size) at each run.
    growth: Vec<(u64, u64)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Memory {
    logs: BTreeMap<String, LogMemory>,
}

pub(crate) struct Options {
    pub store: PathBuf,
    pub logs: Vec<String>,
    pub witnesses: Vec<String>,
    pub quorum: usize,
    pub timeout: Duration,
    pub json: bool,
}

fn memory_path(store: &Path) -> PathBuf {
    store.with_file_name("logs.json")
}

fn load_memory(path: &Path) -> Result<Memory> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b).with_context(|| format!("reading {}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Memory::default()),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn save_memory(path: &Path, m: &Memory) -> Result<()> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(m)?)
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("writing {}", path.display()))
}

/// `"URL KEY"` (or `URL=KEY`) → a trusted log.
fn parse_log(spec: &str) -> Result<TrustedLog> {
    let spec = spec.trim();
    let (url, key) = spec
        .split_once(char::is_whitespace)
        .or_else(|| spec.split_once('='))
        .with_context(|| {
            format!("--log {spec:?}: expected \"URL KEY\" (KEY from `shoal-relay key`)")
        })?;
    let key = NoteVerifier::from_key_text(key.trim())
        .with_context(|| format!("--log {spec:?}: bad verifier key"))?;
    let url = url.trim().trim_end_matches('/').to_owned();
    if !(url.starts_with("http://") || url.starts_with("https://")) {
        bail!("--log {spec:?}: the URL must start with http:// or https://");
    }
    Ok(TrustedLog { url, key })
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Runs the command; returns the process exit code.
pub(crate) fn run(o: &Options) -> Result<u8> {
    if o.logs.is_empty() {
        bail!("no log to check: pass --log \"URL KEY\" for each relay (or set SHOAL_LOGS)");
    }
    let logs = o
        .logs
        .iter()
        .map(|s| parse_log(s))
        .collect::<Result<Vec<_>>>()?;
    let extra_witnesses = o
        .witnesses
        .iter()
        .map(|w| CosignatureVerifier::from_key_text(w).with_context(|| format!("--witness {w:?}")))
        .collect::<Result<Vec<_>>>()?;
    let receipts = ReceiptStore::new(&o.store).load()?;
    let mem_path = memory_path(&o.store);
    let mut memory = load_memory(&mem_path)?;
    let opts = StatusOptions {
        quorum: o.quorum,
        extra_witnesses,
        timeout: o.timeout,
        last_checkpoints: memory
            .logs
            .values()
            .filter_map(|m| m.checkpoint.clone())
            .collect(),
    };
    let encoded: Vec<Vec<u8>> = receipts.iter().map(Receipt::encode).collect();
    let report = receipt_status(&logs, &encoded, &opts);

    // Remember what was accepted (never an equivocating or inconsistent checkpoint).
    let now = now_ms();
    for l in &report.logs {
        let m = memory.logs.entry(l.origin.clone()).or_default();
        if let (Some(cp), None, None) = (&l.checkpoint, &l.equivocation, &l.error) {
            m.checkpoint = Some(cp.clone());
            m.growth.push((now, l.size));
            let excess = m.growth.len().saturating_sub(MAX_GROWTH_POINTS);
            m.growth.drain(..excess);
        }
    }
    save_memory(&mem_path, &memory)?;

    let mut out = std::io::stdout().lock();
    if o.json {
        print_json(&mut out, &report, &receipts, o.quorum)?;
    } else {
        print_text(&mut out, &report, &receipts, &memory, o.quorum)?;
    }
    out.flush()?;
    Ok(if report.logs.iter().any(|l| l.equivocation.is_some()) {
        EXIT_EQUIVOCATION
    } else {
        0
    })
}

fn short(bytes: &[u8]) -> String {
    hex::encode(&bytes[..bytes.len().min(6)])
}

fn print_json(
    out: &mut impl Write,
    report: &StatusReport,
    receipts: &[Receipt],
    quorum: usize,
) -> Result<()> {
    for l in &report.logs {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({
                "type": "log",
                "url": l.url,
                "origin": l.origin,
                "size": l.size,
                "cosigners": l.cosigners,
                "quorum": quorum,
                "witnessed": l.witnessed,
                "equivocation": l.equivocation.is_some(),
                "error": l.error,
            }),
        )?;
        out.write_all(b"\n")?;
    }
    for (r, s) in receipts.iter().zip(&report.receipts) {
        serde_json::to_writer(
            &mut *out,
            &serde_json::json!({
                "type": "receipt",
                "job": hex::encode(r.body.job_id),
                "shard": r.body.shard,
                "worker": hex::encode(r.body.worker),
                "requester": hex::encode(r.body.requester),
                "started_ms": r.body.started_ms,
                "finished_ms": r.body.finished_ms,
                "leaf_hash": hex::encode(s.leaf_hash),
                "origin": s.origin,
                "index": s.index,
                "included": s.included,
                "witnessed": s.witnessed,
            }),
        )?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

/// A one-line plot of sizes, scaled to the range seen.
fn sparkline(points: &[(u64, u64)]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let tail = &points[points.len().saturating_sub(40)..];
    let (Some(lo), Some(hi)) = (
        tail.iter().map(|p| p.1).min(),
        tail.iter().map(|p| p.1).max(),
    ) else {
        return String::new();
    };
    tail.iter()
        .map(|&(_, s)| {
            if hi == lo {
                BARS[BARS.len() - 1]
            } else {
                BARS[((s - lo) * (BARS.len() as u64 - 1) / (hi - lo)) as usize]
            }
        })
        .collect()
}

fn print_text(
    out: &mut impl Write,
    report: &StatusReport,
    receipts: &[Receipt],
    memory: &Memory,
    quorum: usize,
) -> Result<()> {
    writeln!(out, "logs")?;
    for l in &report.logs {
        let mark = if l.equivocation.is_some() {
            "✗ EQUIVOCATION: this log signed two different trees of one size"
        } else if l.witnessed {
            "✓ witnessed"
        } else {
            "✗ not witnessed"
        };
        writeln!(
            out,
            "  {}  {}  size {}  cosigned by {}/{} needed ({})  {}",
            l.origin,
            l.url,
            l.size,
            l.cosigners.len(),
            quorum,
            if l.cosigners.is_empty() {
                "none".to_owned()
            } else {
                l.cosigners.join(", ")
            },
            mark
        )?;
        if let Some(e) = &l.error {
            writeln!(out, "    error: {e}")?;
        }
        if let Some(m) = memory.logs.get(&l.origin)
            && let (Some(first), Some(last)) = (m.growth.first(), m.growth.last())
        {
            let hours = (last.0.saturating_sub(first.0)) as f64 / 3.6e6;
            writeln!(
                out,
                "    growth {}  {} → {} entries over {} checks ({hours:.1} h)",
                sparkline(&m.growth),
                first.1,
                last.1,
                m.growth.len()
            )?;
        }
    }
    let included = report.receipts.iter().filter(|s| s.included).count();
    let witnessed = report.receipts.iter().filter(|s| s.witnessed).count();
    writeln!(
        out,
        "receipts: {} ({included} included, {witnessed} witnessed)",
        receipts.len()
    )?;
    for (r, s) in receipts.iter().zip(&report.receipts) {
        let where_ = match (&s.origin, s.index) {
            (Some(o), Some(i)) => format!("{o} #{i}"),
            _ => "not found in any log".to_owned(),
        };
        writeln!(
            out,
            "  {} included  {} witnessed  job {} shard {:<4} worker {}  {} ms  {}",
            if s.included { "✓" } else { "✗" },
            if s.witnessed { "✓" } else { "✗" },
            short(&r.body.job_id),
            r.body.shard,
            short(&r.body.worker),
            r.body.finished_ms.saturating_sub(r.body.started_ms),
            where_
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sparkline_scales() {
        assert_eq!(sparkline(&[]), "");
        assert_eq!(sparkline(&[(0, 5), (1, 5)]), "██");
        assert_eq!(sparkline(&[(0, 0), (1, 7), (2, 14)]), "▁▄█");
    }

    #[test]
    fn log_spec_is_checked() {
        assert!(parse_log("http://x").is_err());
        assert!(parse_log("ftp://x a+b+c").is_err());
        assert!(parse_log("http://x not-a-key").is_err());
    }
}
