//! The log's HTTP API on loopback: submissions and their rejections, proofs, tiles,
//! witnessing (C2SP add-checkpoint) and equivocation caught by a witness and a light client.

mod common;

use common::receipt;

use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use shoal_relay::log::{AddCheckpoint, Log, LogConfig, LogState, Witness, routes};
use shoal_tlog::checkpoint::{CosignatureVerifier, SignedCheckpoint};
use shoal_tlog::client::{ClientError, LightClient};
use shoal_tlog::note::{Ed25519Signer, Note, NoteSignature, NoteSigner, NoteVerifier};
use shoal_tlog::tiles::{decode_bundle, encode_bundle};
use shoal_tlog::{Hash, leaf_hash, verify_consistency, verify_inclusion};

const LOG_A: &str = "relay-a.shoal.invalid/log";

struct Relay {
    base: String,
    log: Arc<Log>,
    _rt: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn key(name: &str, b: u8) -> Arc<Ed25519Signer> {
    Arc::new(Ed25519Signer::from_seed(name, &[b; 32]).expect("key"))
}

/// Starts a relay serving a log signed by `log_key` and, optionally, a witness.
fn relay(
    log_key: Arc<Ed25519Signer>,
    witness: Option<(Arc<Ed25519Signer>, Vec<NoteVerifier>)>,
) -> Relay {
    let dir = tempfile::tempdir().expect("tempdir");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let origin = log_key.name().to_owned();
    let log = Log::open(
        &dir.path().join("log.redb"),
        LogConfig::new(&origin),
        log_key,
    )
    .expect("log");
    let witness = witness.map(|(k, logs)| {
        Witness::open(&dir.path().join("witness.redb"), k, logs).expect("witness")
    });
    let app = routes(LogState {
        log: log.clone(),
        witness,
        verify_receipts: true,
        test_equivocate: None,
        keys: None,
    });
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    rt.spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Relay {
        base: format!("http://{addr}"),
        log,
        _rt: rt,
        _dir: dir,
    }
}

impl Relay {
    fn checkpoint_now(&self) -> String {
        let log = self.log.clone();
        self._rt
            .block_on(async move { log.checkpoint_now().await })
            .expect("checkpoint")
            .to_string()
    }
}

fn agent() -> ureq::Agent {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
}

/// POST a bundle; returns (status, body).
fn submit(a: &ureq::Agent, base: &str, rs: &[Vec<u8>]) -> (u16, String) {
    let body = encode_bundle(rs.iter().map(|r| r.as_slice())).expect("bundle");
    match a
        .post(&format!("{base}/log/submit"))
        .set("Content-Type", "application/octet-stream")
        .send_bytes(&body)
    {
        Ok(r) => (r.status(), r.into_string().expect("body")),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("transport: {e}"),
    }
}

fn get(a: &ureq::Agent, url: &str) -> (u16, Vec<u8>) {
    let (code, r) = match a.get(url).call() {
        Ok(r) => (r.status(), r),
        Err(ureq::Error::Status(c, r)) => (c, r),
        Err(e) => panic!("transport: {e}"),
    };
    let mut v = Vec::new();
    r.into_reader().read_to_end(&mut v).expect("read");
    (code, v)
}

fn json(b: &[u8]) -> serde_json::Value {
    serde_json::from_slice(b).expect("json")
}

fn proof_of(j: &serde_json::Value) -> Vec<Hash> {
    j["proof"]
        .as_array()
        .expect("proof")
        .iter()
        .map(|p| {
            B64.decode(p.as_str().expect("s"))
                .expect("b64")
                .try_into()
                .expect("32")
        })
        .collect()
}

#[test]
fn submit_prove_tiles_and_rejections() {
    let lk = key(LOG_A, 1);
    let lv = NoteVerifier::new(LOG_A, lk.public_key()).expect("v");
    let r = relay(lk, None);
    let a = agent();

    // 600 receipts in batches; promises are in order.
    let all: Vec<Vec<u8>> = (0..600).map(receipt).collect();
    for (n, chunk) in all.chunks(100).enumerate() {
        let (code, body) = submit(&a, &r.base, chunk);
        assert_eq!(code, 200, "{body}");
        let j: serde_json::Value = serde_json::from_str(&body).expect("json");
        let ps = j["promises"].as_array().expect("promises");
        for (k, p) in ps.iter().enumerate() {
            assert_eq!(p["index"].as_u64(), Some((n * 100 + k) as u64));
            assert_eq!(
                p["leaf_hash"].as_str(),
                Some(hex::encode(leaf_hash(&chunk[k])).as_str())
            );
        }
    }
    // Re-submitting is idempotent.
    let (code, body) = submit(&a, &r.base, &all[5..6]);
    assert_eq!(code, 200);
    assert_eq!(
        json(body.as_bytes())["promises"][0]["index"].as_u64(),
        Some(5)
    );
    // JSON submission.
    let extra = receipt(600);
    let resp = a
        .post(&format!("{}/log/submit", r.base))
        .set("Content-Type", "application/json")
        .send_string(&serde_json::json!({ "receipts": [B64.encode(&extra)] }).to_string())
        .expect("json submit");
    assert_eq!(
        json(resp.into_string().expect("b").as_bytes())["promises"][0]["index"].as_u64(),
        Some(600)
    );

    // Rejections: tampered, bad signature, wrong size (truncated, oversize), oversize batch.
    let good = receipt(1000);
    let mut tampered = good.clone();
    tampered[10] ^= 1; // inside the job id
    let mut bad_sig = good.clone();
    let l = bad_sig.len();
    bad_sig[l - 3] ^= 1; // inside the requester signature
    let truncated = good[..good.len() - 1].to_vec();
    let oversize = vec![1u8; 600];
    for (what, rc) in [
        ("tampered", tampered),
        ("bad signature", bad_sig),
        ("truncated", truncated),
        ("oversize", oversize),
    ] {
        let (code, body) = submit(&a, &r.base, &[good.clone(), rc]);
        assert_eq!(code, 400, "{what}: {body}");
        assert!(body.contains("receipt 1"), "{what}: {body}");
    }
    let big: Vec<Vec<u8>> = (0..1025).map(|_| good.clone()).collect();
    let (code, _) = submit(&a, &r.base, &big);
    assert_eq!(code, 413, "oversize batch");
    let (code, _) = submit(&a, &r.base, &[]);
    assert_eq!(code, 400, "empty batch");
    // Nothing from rejected batches was appended.
    assert_eq!(r.log.committed().0, 601);

    // Checkpoint, proofs.
    let note = r.checkpoint_now();
    let (code, served) = get(&a, &format!("{}/log/checkpoint", r.base));
    assert_eq!(code, 200);
    assert_eq!(String::from_utf8(served).expect("utf8"), note);
    let cp = SignedCheckpoint::verify(note.as_bytes(), &lv, None)
        .expect("verify")
        .checkpoint;
    assert_eq!(cp.size, 601);
    for i in [0u64, 1, 255, 256, 599, 600] {
        let (code, b) = get(&a, &format!("{}/log/proof/inclusion?index={i}", r.base));
        assert_eq!(code, 200);
        let rc = if i == 600 { &extra } else { &all[i as usize] };
        verify_inclusion(i, cp.size, &leaf_hash(rc), &proof_of(&json(&b)), &cp.root).expect("incl");
    }
    let (code, b) = get(
        &a,
        &format!(
            "{}/log/proof/inclusion?leaf_hash={}",
            r.base,
            hex::encode(leaf_hash(&all[77]))
        ),
    );
    assert_eq!(code, 200);
    assert_eq!(json(&b)["index"].as_u64(), Some(77));
    let (code, _) = get(&a, &format!("{}/log/proof/inclusion?index=601", r.base));
    assert_eq!(code, 404);
    let (code, _) = get(
        &a,
        &format!("{}/log/proof/inclusion?index=1&size=9999", r.base),
    );
    assert_eq!(code, 404);
    let old_root = r.log.root_at(300).expect("root");
    let (code, b) = get(&a, &format!("{}/log/proof/consistency?old=300", r.base));
    assert_eq!(code, 200);
    verify_consistency(300, 601, &old_root, &cp.root, &proof_of(&json(&b))).expect("cons");

    // Tiles: level-0 tile 0 = leaf hashes 0..256, partial tile 2 = 512..601, entry bundles.
    let (code, t0) = get(&a, &format!("{}/log/tile/0/000", r.base));
    assert_eq!(code, 200);
    assert_eq!(t0.len(), 256 * 32);
    assert_eq!(&t0[32..64], &leaf_hash(&all[1]));
    let (code, t2) = get(&a, &format!("{}/log/tile/0/002.p/89", r.base));
    assert_eq!(code, 200);
    assert_eq!(&t2[..32], &leaf_hash(&all[512]));
    let (code, _) = get(&a, &format!("{}/log/tile/0/002.p/90", r.base));
    assert_eq!(code, 404, "beyond the tree");
    let (code, _) = get(&a, &format!("{}/log/tile/0/002", r.base));
    assert_eq!(code, 404, "full tile not yet complete");
    let (code, t1) = get(&a, &format!("{}/log/tile/1/000.p/2", r.base));
    assert_eq!(code, 200);
    assert_eq!(t1.len(), 64);
    let (code, e) = get(&a, &format!("{}/log/tile/entries/001", r.base));
    assert_eq!(code, 200);
    let es = decode_bundle(&e, 256).expect("bundle");
    assert_eq!(es.len(), 256);
    assert_eq!(es[0], all[256].as_slice());
    let (code, _) = get(&a, &format!("{}/log/tile/0/0", r.base));
    assert_eq!(code, 404, "non-canonical path");
    let (code, e) = get(&a, &format!("{}/log/entries?start=598&end=601", r.base));
    assert_eq!(code, 200);
    assert_eq!(decode_bundle(&e, 10).expect("b").len(), 3);
    let (code, _) = get(&a, &format!("{}/log/entries?start=0&end=5000", r.base));
    assert_eq!(code, 400);
}

fn add_checkpoint(
    a: &ureq::Agent,
    witness: &str,
    old: u64,
    proof: &[Hash],
    note: &str,
) -> (u16, String) {
    let body = AddCheckpoint::encode(old, proof, note);
    match a
        .post(&format!("{witness}/log/witness/add-checkpoint"))
        .send_string(&body)
    {
        Ok(r) => (r.status(), r.into_string().expect("b")),
        Err(ureq::Error::Status(c, r)) => (c, r.into_string().unwrap_or_default()),
        Err(e) => panic!("transport: {e}"),
    }
}

fn append(r: &Relay, range: std::ops::Range<u64>, salt: u64) {
    let log = r.log.clone();
    r._rt
        .block_on(async move {
            log.append(range.map(|i| (i ^ salt).to_le_bytes().to_vec()).collect())
                .await
        })
        .expect("append");
}

#[test]
fn witness_cosigns_and_catches_equivocation() {
    let lk = key(LOG_A, 1);
    let lv = NoteVerifier::new(LOG_A, lk.public_key()).expect("v");
    let (wk_b, wk_c) = (
        key("relay-b.shoal.invalid/witness", 2),
        key("relay-c.shoal.invalid/witness", 3),
    );
    let a_relay = relay(lk.clone(), None);
    let b = relay(
        key("relay-b.shoal.invalid/log", 4),
        Some((wk_b.clone(), vec![lv.clone()])),
    );
    let c = relay(
        key("relay-c.shoal.invalid/log", 5),
        Some((wk_c.clone(), vec![lv.clone()])),
    );
    let wb = CosignatureVerifier::new(wk_b.name(), wk_b.public_key()).expect("w");
    let wc = CosignatureVerifier::new(wk_c.name(), wk_c.public_key()).expect("w");
    let http = agent();

    append(&a_relay, 0..10, 0);
    let n10 = a_relay.checkpoint_now();
    // Unknown origin → 404; garbage → 400; signature by another key → 403.
    let other = relay(key("stranger/log", 9), None);
    append(&other, 0..3, 0);
    let (code, _) = add_checkpoint(&http, &b.base, 0, &[], &other.checkpoint_now());
    assert_eq!(code, 404);
    let (code, _) = add_checkpoint(&http, &b.base, 0, &[], "garbage\n");
    assert_eq!(code, 400);
    let forged = {
        let mut n = Note::parse(n10.as_bytes()).expect("note");
        let evil = Ed25519Signer::from_seed(LOG_A, &[66; 32]).expect("k");
        n.sigs.clear();
        n.sign(&evil).expect("sign");
        n.to_text()
    };
    let (code, _) = add_checkpoint(&http, &b.base, 0, &[], &forged);
    assert_eq!(code, 403);

    // First sight: old 0, cosigned.
    let (code, line) = add_checkpoint(&http, &b.base, 0, &[], &n10);
    assert_eq!(code, 200, "{line}");
    let sig = NoteSignature::parse_line(line.trim_end()).expect("line");
    let body10 = Note::parse(n10.as_bytes()).expect("n").text;
    assert!(wb.verify_sig(&body10, &sig).is_some());
    // Stale old size → 409 with the size.
    append(&a_relay, 10..25, 0);
    let n25 = a_relay.checkpoint_now();
    let (code, body) = add_checkpoint(&http, &b.base, 0, &[], &n25);
    assert_eq!((code, body.as_str()), (409, "10\n"));
    // Bad proof → 422; good proof → 200.
    let good = a_relay.log.consistency_proof(10, 25).expect("proof");
    let mut bad = good.clone();
    bad[0][0] ^= 1;
    let (code, _) = add_checkpoint(&http, &b.base, 10, &bad, &n25);
    assert_eq!(code, 422);
    let (code, line25) = add_checkpoint(&http, &b.base, 10, &good, &n25);
    assert_eq!(code, 200);
    // Both witnesses cosign n25 (C sees it first).
    let (code, line25c) = add_checkpoint(&http, &c.base, 0, &[], &n25);
    assert_eq!(code, 200);
    // The log serves the cosignatures beside its checkpoint.
    a_relay
        .log
        .add_cosignatures(25, &[line25.clone(), line25c.clone()]);
    let (_, served) = get(&http, &format!("{}/log/checkpoint", a_relay.base));
    let mut client = LightClient::new(lv.clone(), None, vec![wb.clone(), wc.clone()], 2);
    client.update(&served, &[]).expect("2-of-2 quorum");
    // B serves what it witnessed, cosigned.
    let (code, wn) = get(
        &http,
        &format!("{}/log/witness/checkpoint?origin={}", b.base, LOG_A),
    );
    assert_eq!(code, 200);
    assert!(wb.verify(&Note::parse(&wn).expect("n")).is_some());

    // Relay A is made to sign a forked tree of the same size (same key, other history).
    let fork = relay(lk, None);
    append(&fork, 0..10, 0);
    append(&fork, 10..25, 0xdead);
    let f25 = fork.checkpoint_now();
    assert_ne!(f25, n25);
    // Witness B catches it (same size, different root): 409 and a stored, verifiable proof.
    let (code, body) = add_checkpoint(&http, &b.base, 25, &[], &f25);
    assert_eq!(code, 409, "{body}");
    assert!(body.contains("equivocat"), "{body}");
    let (code, eqs) = get(&http, &format!("{}/log/witness/equivocations", b.base));
    assert_eq!(code, 200);
    let eqs = json(&eqs);
    let eq = shoal_tlog::checkpoint::EquivocationProof {
        a: eqs[0]["a"].as_str().expect("a").to_owned(),
        b: eqs[0]["b"].as_str().expect("b").to_owned(),
    };
    let (x, y) = eq.verify(&lv).expect("equivocation proof verifies");
    assert_eq!((x.size, y.size), (25, 25));
    // The light client catches it too: a fork cosigned by a fresh witness D (quorum 1).
    let wk_d = key("relay-d.shoal.invalid/witness", 6);
    let d = relay(
        key("relay-d.shoal.invalid/log", 7),
        Some((wk_d.clone(), vec![lv.clone()])),
    );
    let (code, line_d) = add_checkpoint(&http, &d.base, 0, &[], &f25);
    assert_eq!(code, 200);
    let wd = CosignatureVerifier::new(wk_d.name(), wk_d.public_key()).expect("w");
    let mut client1 = LightClient::new(lv.clone(), None, vec![wb, wc, wd], 1);
    client1.update(&served, &[]).expect("honest view");
    let forked_view = format!("{f25}{line_d}");
    match client1.update(forked_view.as_bytes(), &[]) {
        Err(ClientError::Equivocation { size: 25, proof }) => {
            proof.verify(&lv).expect("client's proof verifies");
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
    // And a forked tree at a larger size fails consistency for the client.
    append(&fork, 25..26, 0);
    let f26 = fork.checkpoint_now();
    let (code, line_d26) = add_checkpoint(
        &http,
        &d.base,
        25,
        &fork.log.consistency_proof(25, 26).expect("p"),
        &f26,
    );
    assert_eq!(code, 200);
    let p = fork.log.consistency_proof(25, 26).expect("p");
    assert!(matches!(
        client1.update(format!("{f26}{line_d26}").as_bytes(), &p),
        Err(ClientError::Inconsistent(_))
    ));
}
