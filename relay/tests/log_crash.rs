//! Crash safety of the receipt log: a helper process serves the log over loopback HTTP; this
//! test SIGKILLs it again and again while concurrent clients append signed receipts. After
//! every restart:
//! - every acknowledged receipt is present at its acknowledged index, and the whole tree
//!   rebuilt from the entries matches the signed checkpoint (so every entry is provable);
//! - sampled server inclusion proofs verify;
//! - the new checkpoint is consistent with every checkpoint seen before the kill;
//! - checkpoint sizes never go backwards.
//!
//! `SHOAL_CRASH_APPENDS` sets the number of receipts (default 20,000; the documented long
//! run uses 100,000).

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use shoal_tlog::checkpoint::SignedCheckpoint;
use shoal_tlog::note::{Ed25519Signer, NoteSigner, NoteVerifier};
use shoal_tlog::receipt::{Receipt, ReceiptBody, commitment};
use shoal_tlog::tiles::{decode_bundle, encode_bundle};
use shoal_tlog::{Hash, MemoryTree, leaf_hash, verify_consistency, verify_inclusion};

const TEST_LOG_SEED: [u8; 32] = [42; 32];
const TEST_LOG_NAME: &str = "crash-test.shoal.invalid/log";
const CLIENTS: usize = 8;

fn receipts(n: usize) -> Vec<Vec<u8>> {
    let w = Ed25519Signer::from_seed("w", &[1; 32]).expect("key");
    let r = Ed25519Signer::from_seed("r", &[2; 32]).expect("key");
    (0..n)
        .map(|i| {
            let body = ReceiptBody {
                job_id: (i as u128).to_be_bytes(),
                shard: i as u32,
                input_commitment: commitment(&i.to_le_bytes()),
                output_commitment: commitment(&(i + 1).to_le_bytes()),
                worker: w.public_key(),
                requester: r.public_key(),
                started_ms: 1_700_000_000_000 + i as u64,
                finished_ms: 1_700_000_000_100 + i as u64,
            };
            let ws = body.sign_as_worker(&w).expect("sign");
            Receipt::countersign(body, ws, &r)
                .expect("countersign")
                .encode()
        })
        .collect()
}

struct Server {
    child: Child,
    base: String,
}

fn spawn(dir: &std::path::Path) -> Server {
    let mut child = Command::new(env!("CARGO_BIN_EXE_log-crash-helper"))
        .arg(dir)
        .arg("50")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn helper");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read");
    let addr = line
        .trim()
        .strip_prefix("LISTENING ")
        .unwrap_or_else(|| panic!("unexpected helper output {line:?}"))
        .to_owned();
    Server {
        child,
        base: format!("http://{addr}"),
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(20))
        .build()
}

fn get_text(a: &ureq::Agent, url: &str) -> Option<String> {
    a.get(url).call().ok()?.into_string().ok()
}

fn get_bytes(a: &ureq::Agent, url: &str) -> Option<Vec<u8>> {
    let mut v = Vec::new();
    a.get(url)
        .call()
        .ok()?
        .into_reader()
        .read_to_end(&mut v)
        .ok()?;
    Some(v)
}

fn proof_of(json: &serde_json::Value) -> Vec<Hash> {
    json["proof"]
        .as_array()
        .expect("proof array")
        .iter()
        .map(|p| {
            B64.decode(p.as_str().expect("str"))
                .expect("b64")
                .try_into()
                .expect("32 bytes")
        })
        .collect()
}

/// Waits for a checkpoint covering at least `min_size`, returns it verified.
fn checkpoint_at_least(
    a: &ureq::Agent,
    base: &str,
    lv: &NoteVerifier,
    min_size: u64,
) -> SignedCheckpoint {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(t) = get_text(a, &format!("{base}/log/checkpoint")) {
            let sc = SignedCheckpoint::verify(t.as_bytes(), lv, None).expect("valid checkpoint");
            if sc.checkpoint.size >= min_size {
                return sc;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint covering {min_size}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The full audit after a restart.
fn audit(
    base: &str,
    lv: &NoteVerifier,
    acked: &HashMap<usize, u64>,
    all: &[Vec<u8>],
    seen: &[SignedCheckpoint],
) -> SignedCheckpoint {
    let a = agent();
    let min = acked.values().map(|i| i + 1).max().unwrap_or(0);
    let cp = checkpoint_at_least(&a, base, lv, min);
    let (size, root) = (cp.checkpoint.size, cp.checkpoint.root);
    // Rebuild the tree from all entries: every leaf present, root matches the checkpoint.
    let mut tree = MemoryTree::new();
    let mut leaves = Vec::with_capacity(size as usize);
    let mut start = 0u64;
    while start < size {
        let end = (start + 1024).min(size);
        let b =
            get_bytes(&a, &format!("{base}/log/entries?start={start}&end={end}")).expect("entries");
        let es = decode_bundle(&b, 1024).expect("bundle");
        assert_eq!(es.len() as u64, end - start);
        for e in es {
            let h = leaf_hash(e);
            tree.push_leaf_hash(h);
            leaves.push(h);
        }
        start = end;
    }
    assert_eq!(
        tree.root(),
        root,
        "tree rebuilt from entries matches checkpoint"
    );
    // Every acknowledged receipt is at its acknowledged index.
    for (&rid, &idx) in acked {
        assert_eq!(
            leaves.get(idx as usize),
            Some(&leaf_hash(&all[rid])),
            "acked receipt {rid} at index {idx}"
        );
    }
    // Server-side inclusion proofs for a sample (by index and by leaf hash).
    for (k, (&rid, &idx)) in acked.iter().enumerate().filter(|(k, _)| k % 97 == 0) {
        let url = if k % 2 == 0 {
            format!("{base}/log/proof/inclusion?index={idx}&size={size}")
        } else {
            format!(
                "{base}/log/proof/inclusion?leaf_hash={}&size={size}",
                hex::encode(leaf_hash(&all[rid]))
            )
        };
        let j: serde_json::Value =
            serde_json::from_str(&get_text(&a, &url).expect("proof")).expect("json");
        assert_eq!(j["index"].as_u64(), Some(idx));
        verify_inclusion(idx, size, &leaf_hash(&all[rid]), &proof_of(&j), &root)
            .expect("inclusion proof verifies");
    }
    // Consistency with every checkpoint seen before (sizes monotonic).
    for old in seen {
        let o = &old.checkpoint;
        assert!(
            o.size <= size,
            "checkpoint went backwards: {} > {size}",
            o.size
        );
        let j: serde_json::Value = serde_json::from_str(
            &get_text(
                &a,
                &format!("{base}/log/proof/consistency?old={}&new={size}", o.size),
            )
            .expect("consistency"),
        )
        .expect("json");
        verify_consistency(o.size, size, &o.root, &root, &proof_of(&j))
            .unwrap_or_else(|e| panic!("consistency {} -> {size}: {e}", o.size));
    }
    cp
}

#[test]
fn acknowledged_receipts_survive_sigkill() {
    let total: usize = std::env::var("SHOAL_CRASH_APPENDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let all = Arc::new(receipts(total));
    let lv = NoteVerifier::new(
        TEST_LOG_NAME,
        Ed25519Signer::from_seed(TEST_LOG_NAME, &TEST_LOG_SEED)
            .expect("key")
            .public_key(),
    )
    .expect("verifier");

    let pending: Arc<Mutex<VecDeque<usize>>> = Arc::new(Mutex::new((0..total).collect()));
    let acked: Arc<Mutex<HashMap<usize, u64>>> = Arc::new(Mutex::new(HashMap::new()));
    let mut seen: Vec<SignedCheckpoint> = Vec::new();
    let mut kills = 0;
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    let started = Instant::now();

    for round in 0.. {
        assert!(round < 400, "too many rounds");
        let mut server = spawn(dir.path());
        let snapshot = acked.lock().expect("lock").clone();
        let cp = audit(&server.base, &lv, &snapshot, &all, &seen);
        seen.push(cp);
        if pending.lock().expect("lock").is_empty() {
            let _ = server.child.kill();
            let _ = server.child.wait();
            break;
        }

        let stop = Arc::new(AtomicBool::new(false));
        let mut handles = Vec::new();
        for c in 0..CLIENTS {
            let (pending, acked, all, base, stop) = (
                pending.clone(),
                acked.clone(),
                all.clone(),
                server.base.clone(),
                stop.clone(),
            );
            handles.push(std::thread::spawn(move || {
                let a = agent();
                let batch = 8 + 8 * c; // 8..64 receipts per request
                loop {
                    let ids: Vec<usize> = {
                        let mut p = pending.lock().expect("lock");
                        let n = batch.min(p.len());
                        p.drain(..n).collect()
                    };
                    if ids.is_empty() {
                        return;
                    }
                    let body =
                        encode_bundle(ids.iter().map(|&i| all[i].as_slice())).expect("bundle");
                    let res = a
                        .post(&format!("{base}/log/submit"))
                        .set("Content-Type", "application/octet-stream")
                        .send_bytes(&body)
                        .ok()
                        .and_then(|r| r.into_string().ok());
                    let parsed =
                        res.and_then(|s| serde_json::from_str::<serde_json::Value>(&s).ok());
                    match parsed {
                        Some(j) => {
                            let ps = j["promises"].as_array().expect("promises");
                            assert_eq!(ps.len(), ids.len());
                            let mut acked = acked.lock().expect("lock");
                            for (&id, p) in ids.iter().zip(ps) {
                                let idx = p["index"].as_u64().expect("index");
                                if let Some(prev) = acked.insert(id, idx) {
                                    assert_eq!(prev, idx, "receipt {id} moved");
                                }
                            }
                        }
                        None => {
                            // Not acknowledged: put back and stop (server is gone).
                            pending.lock().expect("lock").extend(ids);
                            stop.store(true, Ordering::SeqCst);
                            return;
                        }
                    }
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                }
            }));
        }
        // Record checkpoints while appends run.
        let poller = {
            let (base, stop, lv) = (server.base.clone(), stop.clone(), lv.clone());
            std::thread::spawn(move || {
                let a = agent();
                let mut out = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    if let Some(t) = get_text(&a, &format!("{base}/log/checkpoint"))
                        && let Ok(sc) = SignedCheckpoint::verify(t.as_bytes(), &lv, None)
                    {
                        out.push(sc);
                    }
                    std::thread::sleep(Duration::from_millis(30));
                }
                out
            })
        };
        // Kill at a pseudo-random moment (or let the round finish).
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        let delay = Duration::from_millis(100 + rng % 400);
        let t0 = Instant::now();
        while t0.elapsed() < delay && !handles.iter().all(|h| h.is_finished()) {
            std::thread::sleep(Duration::from_millis(5));
        }
        server.child.kill().expect("SIGKILL");
        server.child.wait().expect("wait");
        kills += 1;
        stop.store(true, Ordering::SeqCst);
        for h in handles {
            h.join().expect("client thread");
        }
        let cps = poller.join().expect("poller");
        seen.extend(cps);
        eprintln!(
            "round {round}: {} acked, {} pending, {} checkpoints seen",
            acked.lock().expect("lock").len(),
            pending.lock().expect("lock").len(),
            seen.len()
        );
    }
    let acked = acked.lock().expect("lock");
    assert_eq!(acked.len(), total);
    let mut idx: Vec<u64> = acked.values().copied().collect();
    idx.sort_unstable();
    idx.dedup();
    assert_eq!(idx.len(), total, "distinct receipts got distinct indices");
    assert!(kills >= 3, "only {kills} kills");
    eprintln!(
        "{total} receipts, {kills} SIGKILLs, {} checkpoints checked, {:.1}s",
        seen.len(),
        started.elapsed().as_secs_f64()
    );
}
