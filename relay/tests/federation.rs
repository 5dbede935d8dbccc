//! Relays witnessing each other, as real `shoal-relay` processes:
//! - `three_relays_on_loopback`: three relays on 127.0.0.1 (always runs);
//! - `three_relays_in_network_namespaces`: the same, each relay in its own network namespace
//!   joined by veth pairs the test creates (needs root and `ip`; skipped with a message
//!   otherwise);
//! - `equivocating_relay_is_caught`: a relay made to sign a forked tree (`--test-equivocate`)
//!   is caught by its witnesses and by a light client;
//! - `key_command_prints_the_verifier_key`.
//!
//! A receipt submitted to relay A must end up included in A's log under a checkpoint that a
//! `shoal_tlog` light client accepts with a 2-of-3 witness quorum.

mod common;

use common::receipt;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoal_tlog::checkpoint::{CosignatureVerifier, SignedCheckpoint};
use shoal_tlog::client::{ClientError, LightClient};
use shoal_tlog::note::{Note, NoteVerifier};
use shoal_tlog::receipt::Receipt;
use shoal_tlog::remote::{LogHttp, StatusOptions, TrustedLog, receipt_status};
use shoal_tlog::{leaf_hash, verify_inclusion};

const BIN: &str = env!("CARGO_BIN_EXE_shoal-relay");
/// Generous: a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(90);

/// Polls `f` until it returns `Some`, or panics with `what` after [`DEADLINE`].
fn until<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < DEADLINE, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `shoal-relay key --data-dir DIR [extra]` → the verifier key line.
fn key_of(dir: &Path, extra: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("key")
        .arg("--data-dir")
        .arg(dir)
        .args(extra)
        .output()
        .expect("run shoal-relay key");
    assert!(out.status.success(), "key failed: {out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_owned()
}

/// A relay child process; killed on drop.
struct RelayProc {
    child: Child,
    dir: PathBuf,
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl RelayProc {
    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("stderr.log")).unwrap_or_default()
    }
}

/// Starts `shoal-relay` (optionally prefixed, e.g. `ip netns exec NS`).
fn spawn_relay(
    prefix: &[String],
    listen: SocketAddr,
    dir: &Path,
    peers: &[String],
    extra: &[&str],
) -> RelayProc {
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr file");
    let mut cmd = if prefix.is_empty() {
        Command::new(BIN)
    } else {
        let mut c = Command::new(&prefix[0]);
        c.args(&prefix[1..]).arg(BIN);
        c
    };
    cmd.arg("--listen")
        .arg(listen.to_string())
        .arg("--data-dir")
        .arg(dir)
        .args(["--checkpoint-interval-ms", "200"])
        .args(["--witness-poll-ms", "300"])
        .args(["--witness-timeout-ms", "5000"])
        .args(["--witness-backoff-max-ms", "2000"])
        .args(["--log", "info"])
        .args(extra);
    for p in peers {
        cmd.arg("--peer").arg(p);
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("spawn shoal-relay");
    RelayProc {
        child,
        dir: dir.to_owned(),
    }
}

fn wait_ready(base: &str) {
    let agent = ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(5))
        .build();
    until(&format!("{base}/healthz"), || {
        agent
            .get(&format!("{base}/healthz"))
            .call()
            .ok()
            .filter(|r| r.status() == 200)
            .map(|_| ())
    });
}

fn metrics(base: &str) -> String {
    ureq::AgentBuilder::new()
        .timeout(Duration::from_secs(30))
        .build()
        .get(&format!("{base}/metrics"))
        .call()
        .ok()
        .and_then(|r| r.into_string().ok())
        .unwrap_or_default()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

/// Three relays; `view[i][j]` is the URL relay `i` uses to reach relay `j`, `test_url[i]` the
/// URL the test uses.
struct Net {
    listen: Vec<SocketAddr>,
    prefix: Vec<Vec<String>>,
    view: Vec<Vec<String>>,
    test_url: Vec<String>,
}

/// Starts three relays witnessing each other, submits a receipt to relay 0, and checks with
/// the light client that it is included under a 2-of-3 witnessed checkpoint.
fn federation(net: &Net) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let d = tmp.path().join(format!("relay{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            d
        })
        .collect();
    let keys: Vec<String> = dirs.iter().map(|d| key_of(d, &[])).collect();
    let verifiers: Vec<NoteVerifier> = keys
        .iter()
        .map(|k| NoteVerifier::from_key_text(k).expect("verifier key"))
        .collect();
    let procs: Vec<RelayProc> = (0..3)
        .map(|i| {
            let peers: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("{} {}", net.view[i][j], keys[j]))
                .collect();
            spawn_relay(&net.prefix[i], net.listen[i], &dirs[i], &peers, &[])
        })
        .collect();
    for u in &net.test_url {
        wait_ready(u);
    }

    // Each relay publishes the keys a light client pins: its log key, its witnesses'.
    for (i, url) in net.test_url.iter().enumerate() {
        let body: serde_json::Value = serde_json::from_str(
            &ureq::get(&format!("{url}/log/keys"))
                .call()
                .expect("GET /log/keys")
                .into_string()
                .expect("body"),
        )
        .expect("json");
        assert_eq!(body["log"], keys[i].as_str());
        let mut want: Vec<String> = (0..3)
            .filter(|&j| j != i)
            .map(|j| {
                CosignatureVerifier::new(&verifiers[j].name, verifiers[j].public_key)
                    .expect("cosigner")
                    .key_text()
            })
            .collect();
        want.sort();
        let mut got: Vec<String> = body["witnesses"]
            .as_array()
            .expect("witnesses")
            .iter()
            .map(|w| w.as_str().expect("key").to_owned())
            .collect();
        got.sort();
        assert_eq!(got, want);
    }

    // Submit a signed receipt to relay A.
    let a = LogHttp::new(&net.test_url[0], Duration::from_secs(30));
    let r = receipt(1);
    let (origin, promises) = a.submit(std::slice::from_ref(&r)).expect("submit");
    assert_eq!(origin, verifiers[0].name);
    assert_eq!(promises, vec![(0, leaf_hash(&r))]);

    // The library path (`shoal-node receipts`): included and witnessed by 2 of 3.
    let logs: Vec<TrustedLog> = (0..3)
        .map(|i| TrustedLog {
            url: net.test_url[i].clone(),
            key: verifiers[i].clone(),
        })
        .collect();
    let opts = StatusOptions {
        quorum: 2,
        ..StatusOptions::default()
    };
    let report = until("receipt included and witnessed 2-of-3", || {
        let rep = receipt_status(&logs, std::slice::from_ref(&r), &opts);
        (rep.receipts[0].included && rep.receipts[0].witnessed).then_some(rep)
    });
    assert_eq!(report.receipts[0].origin.as_deref(), Some(origin.as_str()));
    assert_eq!(report.receipts[0].index, Some(0));

    // The CLI on a node's receipt store: this receipt, and one no log has seen.
    receipts_cli(net, &keys, tmp.path(), &r, &origin);

    // The light client directly: 2-of-3 quorum over all three relays' cosigner keys.
    let witnesses: Vec<CosignatureVerifier> = verifiers
        .iter()
        .map(|v| CosignatureVerifier::new(&v.name, v.public_key).expect("cosigner"))
        .collect();
    let mut client = LightClient::new(verifiers[0].clone(), None, witnesses.clone(), 2);
    let note = until("a 2-of-3 cosigned checkpoint of A", || {
        let n = a.checkpoint().ok()?;
        client.check_checkpoint(n.as_bytes()).ok().map(|_| n)
    });
    let cp = client
        .update(note.as_bytes(), &[])
        .expect("accepted")
        .clone();
    assert!(cp.checkpoint.size >= 1);
    assert!(client.count_cosignatures(&cp.note) >= 2);
    let (index, proof) = a
        .inclusion_by_leaf(&leaf_hash(&r), cp.checkpoint.size)
        .expect("inclusion")
        .expect("present");
    LightClient::verify_inclusion(&cp.checkpoint, index, &leaf_hash(&r), &proof)
        .expect("inclusion proof verifies");
    // Tampered receipt: not provable.
    let mut bad = r.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    assert!(
        verify_inclusion(
            index,
            cp.checkpoint.size,
            &leaf_hash(&bad),
            &proof,
            &cp.checkpoint.root
        )
        .is_err()
    );

    // Everyone witnesses everyone: each relay's checkpoint carries both others' cosignatures.
    until("mutual cosigning of all three logs", || {
        let rep = receipt_status(&logs, &[], &opts);
        rep.logs
            .iter()
            .all(|l| l.cosigners.len() == 2 && l.witnessed)
            .then_some(())
    });
    let m = metrics(&net.test_url[0]);
    assert!(m.contains("shoal_relay_log_size 1"), "{m}");
    assert!(
        m.contains("shoal_relay_witness_rounds_total{outcome=\"ok\"}"),
        "{m}"
    );
    assert!(
        m.contains("shoal_relay_witness_equivocation_proofs 0"),
        "{m}"
    );
    // Nobody equivocated.
    for u in &net.test_url {
        let h = LogHttp::new(u, Duration::from_secs(30));
        assert!(h.equivocations().expect("equivocations").is_empty());
    }
    drop(procs);
}

/// `target/debug/deps/federation-…` → `target/debug/shoal-node` (built by
/// `cargo test --workspace`, which builds node-lite's binaries for its own tests).
fn shoal_node_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join("shoal-node"))
        .expect("target dir");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p shoal-node --bin shoal-node` first (`cargo test \
         --workspace` builds it)",
        bin.display()
    );
    bin
}

/// `shoal-node receipts` against the three logs with a 2-of-3 quorum.
fn receipts_cli(net: &Net, keys: &[String], tmp: &Path, submitted: &[u8], origin: &str) {
    let store = tmp.join("node/receipts.bin");
    let never_submitted = receipt(99);
    node_lite::receipt_store::ReceiptStore::new(&store)
        .append(&[
            Receipt::decode(submitted).expect("decode"),
            Receipt::decode(&never_submitted).expect("decode"),
        ])
        .expect("store receipts");
    let run = |json: bool| {
        let mut cmd = Command::new(shoal_node_bin());
        cmd.arg("receipts")
            .arg("--store")
            .arg(&store)
            .args(["--quorum", "2"])
            .env_remove("SHOAL_LOGS");
        for (url, key) in net.test_url.iter().zip(keys) {
            cmd.arg("--log").arg(format!("{url} {key}"));
        }
        if json {
            cmd.arg("--json");
        }
        let out = cmd.output().expect("run shoal-node receipts");
        assert!(out.status.success(), "shoal-node receipts failed: {out:?}");
        String::from_utf8(out.stdout).expect("utf-8")
    };
    let lines: Vec<serde_json::Value> = run(true)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let logs: Vec<&serde_json::Value> = lines.iter().filter(|v| v["type"] == "log").collect();
    let recs: Vec<&serde_json::Value> = lines.iter().filter(|v| v["type"] == "receipt").collect();
    assert_eq!(logs.len(), 3, "{lines:?}");
    assert!(logs.iter().all(|l| l["equivocation"] == false), "{lines:?}");
    assert_eq!(recs.len(), 2, "{lines:?}");
    assert_eq!(recs[0]["included"], true, "{lines:?}");
    assert_eq!(recs[0]["witnessed"], true, "{lines:?}");
    assert_eq!(recs[0]["origin"], origin, "{lines:?}");
    assert_eq!(recs[0]["index"], 0, "{lines:?}");
    assert_eq!(recs[1]["included"], false, "{lines:?}");
    assert_eq!(recs[1]["witnessed"], false, "{lines:?}");
    // The light client's memory: every log's checkpoint kept for the next consistency check.
    let memory: serde_json::Value = serde_json::from_slice(
        &std::fs::read(store.with_file_name("logs.json")).expect("logs.json written"),
    )
    .expect("logs.json");
    for k in keys {
        let name = k.split('+').next().expect("key name");
        assert!(
            memory["logs"][name]["checkpoint"].is_string(),
            "no checkpoint kept for {name}: {memory}"
        );
    }
    // Second run (text): consistent with the kept checkpoints; growth has two points.
    let text = run(false);
    assert!(
        text.contains("receipts: 2 (1 included, 1 witnessed)"),
        "{text}"
    );
    assert!(text.contains("✓ included  ✓ witnessed"), "{text}");
    assert!(text.contains("✗ included  ✗ witnessed"), "{text}");
    assert!(text.contains("over 2 checks"), "{text}");
    assert!(!text.contains("error:"), "{text}");
}

#[test]
fn three_relays_on_loopback() {
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let net = Net {
        listen: ports
            .iter()
            .map(|p| SocketAddr::from(([127, 0, 0, 1], *p)))
            .collect(),
        prefix: vec![Vec::new(); 3],
        view: vec![urls.clone(); 3],
        test_url: urls,
    };
    federation(&net);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .ok()
        .is_some_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have_ip() -> bool {
    Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success())
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Three network namespaces; removed (with their veths) on drop.
struct Namespaces {
    names: Vec<String>,
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).output();
        }
    }
}

#[test]
fn three_relays_in_network_namespaces() {
    if !is_root() || !have_ip() {
        eprintln!(
            "SKIPPED three_relays_in_network_namespaces: needs root and iproute2 `ip` \
             (root: {}, ip: {})",
            is_root(),
            have_ip()
        );
        return;
    }
    // Unique names and subnet per test process.
    let pid = std::process::id();
    let tag = pid % 100_000;
    let net3 = (pid % 250) as u8;
    let ns = Namespaces {
        names: (0..3).map(|i| format!("shoal{tag}n{i}")).collect(),
    };
    for n in &ns.names {
        ip(&["netns", "add", n]);
        ip(&["-n", n, "link", "set", "lo", "up"]);
    }
    // Point-to-point /30 links: k = 0..2 test (root) <-> ns k; 3: 0<->1; 4: 0<->2; 5: 1<->2.
    let addr = |k: u8, side: u8| format!("10.213.{net3}.{}", 4 * k + 1 + side);
    let ends: [(Option<usize>, usize); 6] = [
        (None, 0),
        (None, 1),
        (None, 2),
        (Some(0), 1),
        (Some(0), 2),
        (Some(1), 2),
    ];
    for (k, (x, y)) in ends.iter().enumerate() {
        let k = k as u8;
        let (va, vb) = (format!("sh{tag}l{k}a"), format!("sh{tag}l{k}b"));
        ip(&["link", "add", &va, "type", "veth", "peer", "name", &vb]);
        if let Some(x) = x {
            ip(&["link", "set", &va, "netns", &ns.names[*x]]);
        }
        ip(&["link", "set", &vb, "netns", &ns.names[*y]]);
        let a_cidr = format!("{}/30", addr(k, 0));
        let b_cidr = format!("{}/30", addr(k, 1));
        match x {
            Some(x) => {
                ip(&["-n", &ns.names[*x], "addr", "add", &a_cidr, "dev", &va]);
                ip(&["-n", &ns.names[*x], "link", "set", &va, "up"]);
            }
            None => {
                ip(&["addr", "add", &a_cidr, "dev", &va]);
                ip(&["link", "set", &va, "up"]);
            }
        }
        ip(&["-n", &ns.names[*y], "addr", "add", &b_cidr, "dev", &vb]);
        ip(&["-n", &ns.names[*y], "link", "set", &vb, "up"]);
    }
    // The address of relay j as seen from relay i (i != j) over their direct link.
    let link_of = |i: usize, j: usize| -> (u8, u8) {
        let (lo, hi) = (i.min(j), i.max(j));
        let k = match (lo, hi) {
            (0, 1) => 3,
            (0, 2) => 4,
            _ => 5,
        };
        // The lower-numbered relay is side 0 of the link.
        (k, if j == lo { 0 } else { 1 })
    };
    let port = 7070;
    let view: Vec<Vec<String>> = (0..3)
        .map(|i| {
            (0..3)
                .map(|j| {
                    if i == j {
                        String::new()
                    } else {
                        let (k, side) = link_of(i, j);
                        format!("http://{}:{port}", addr(k, side))
                    }
                })
                .collect()
        })
        .collect();
    let net = Net {
        listen: vec![SocketAddr::from(([0, 0, 0, 0], port)); 3],
        prefix: ns
            .names
            .iter()
            .map(|n| vec!["ip".into(), "netns".into(), "exec".into(), n.clone()])
            .collect(),
        view,
        test_url: (0..3)
            .map(|i| format!("http://{}:{port}", addr(i as u8, 1)))
            .collect(),
    };
    federation(&net);
    drop(ns);
}

#[test]
fn equivocating_relay_is_caught() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dirs: Vec<PathBuf> = (0..3)
        .map(|i| {
            let d = tmp.path().join(format!("relay{i}"));
            std::fs::create_dir_all(&d).expect("mkdir");
            d
        })
        .collect();
    let keys: Vec<String> = dirs.iter().map(|d| key_of(d, &[])).collect();
    let v: Vec<NoteVerifier> = keys
        .iter()
        .map(|k| NoteVerifier::from_key_text(k).expect("key"))
        .collect();
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect();
    let urls: Vec<String> = ports
        .iter()
        .map(|p| format!("http://127.0.0.1:{p}"))
        .collect();
    let procs: Vec<RelayProc> = (0..3)
        .map(|i| {
            let peers: Vec<String> = (0..3)
                .filter(|&j| j != i)
                .map(|j| format!("{} {}", urls[j], keys[j]))
                .collect();
            let extra: &[&str] = if i == 0 { &["--test-equivocate"] } else { &[] };
            spawn_relay(
                &[],
                SocketAddr::from(([127, 0, 0, 1], ports[i])),
                &dirs[i],
                &peers,
                extra,
            )
        })
        .collect();
    for u in &urls {
        wait_ready(u);
    }
    let http: Vec<LogHttp> = urls
        .iter()
        .map(|u| LogHttp::new(u, Duration::from_secs(30)))
        .collect();
    let r = receipt(7);
    http[0].submit(std::slice::from_ref(&r)).expect("submit");

    // The honest checkpoint of A at size 1, as witnesses B and C cosigned it.
    let honest = until("B and C cosign A's honest size-1 checkpoint", || {
        let mut merged: Option<Note> = None;
        for h in &http[1..] {
            let n = h.witnessed(&v[0].name).ok()??;
            let sc = SignedCheckpoint::verify(n.as_bytes(), &v[0], None).ok()?;
            if sc.checkpoint.size != 1 {
                return None;
            }
            match &mut merged {
                None => merged = Some(sc.note),
                Some(m) => {
                    if m.text != sc.note.text {
                        return None;
                    }
                    for s in sc.note.sigs {
                        m.add_signature(s);
                    }
                }
            }
        }
        merged.map(|m| m.to_text())
    });
    let witnesses: Vec<CosignatureVerifier> = v[1..]
        .iter()
        .map(|k| CosignatureVerifier::new(&k.name, k.public_key).expect("cosigner"))
        .collect();
    let mut client = LightClient::new(v[0].clone(), None, witnesses, 2);
    client
        .update(honest.as_bytes(), &[])
        .expect("honest view accepted with 2 cosignatures");

    // A now serves a fork of the same size: the light client catches it ...
    let honest_root = SignedCheckpoint::verify(honest.as_bytes(), &v[0], None)
        .expect("honest verifies")
        .checkpoint
        .root;
    let fork = until("A serves its fork", || {
        let n = http[0].checkpoint().ok()?;
        let sc = SignedCheckpoint::verify(n.as_bytes(), &v[0], None).ok()?;
        (sc.checkpoint.size == 1 && sc.checkpoint.root != honest_root).then_some(n)
    });
    match client.update(fork.as_bytes(), &[]) {
        Err(ClientError::Equivocation { size: 1, proof }) => {
            proof
                .verify(&v[0])
                .expect("client's equivocation proof verifies");
        }
        other => panic!("expected equivocation, got {other:?}"),
    }
    // ... and so does the library path, given the last checkpoint it saw.
    let logs = vec![TrustedLog {
        url: urls[0].clone(),
        key: v[0].clone(),
    }];
    let rep = receipt_status(
        &logs,
        std::slice::from_ref(&r),
        &StatusOptions {
            quorum: 0,
            last_checkpoints: vec![honest.clone()],
            ..StatusOptions::default()
        },
    );
    assert!(rep.logs[0].equivocation.is_some(), "{:?}", rep.logs[0]);
    assert!(!rep.logs[0].witnessed);

    // ... and the CLI, whose memory holds the honest checkpoint: exit code 3, the fork is not
    // remembered.
    let node_dir = tmp.path().join("node");
    std::fs::create_dir_all(&node_dir).expect("mkdir");
    let memory =
        serde_json::json!({"logs": {v[0].name.clone(): {"checkpoint": honest, "growth": []}}});
    std::fs::write(node_dir.join("logs.json"), memory.to_string()).expect("write memory");
    let out = Command::new(shoal_node_bin())
        .arg("receipts")
        .arg("--store")
        .arg(node_dir.join("receipts.bin"))
        .arg("--log")
        .arg(format!("{} {}", urls[0], keys[0]))
        .args(["--quorum", "0"])
        .env_remove("SHOAL_LOGS")
        .output()
        .expect("run shoal-node receipts");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    assert!(text.contains("EQUIVOCATION"), "{text}");
    let kept: serde_json::Value =
        serde_json::from_slice(&std::fs::read(node_dir.join("logs.json")).expect("memory"))
            .expect("json");
    assert_eq!(kept["logs"][&v[0].name]["checkpoint"], honest.as_str());

    // ... and both witnesses catch it, store the proof and serve it.
    for (i, h) in http.iter().enumerate().skip(1) {
        let eq = until("witness stores an equivocation proof", || {
            h.equivocations().ok()?.into_iter().next()
        });
        let (x, y) = eq.verify(&v[0]).expect("witness's proof verifies");
        assert_eq!((x.size, y.size), (1, 1));
        assert_ne!(x.root, y.root);
        let m = metrics(&urls[i]);
        assert!(
            m.contains("shoal_relay_witness_equivocation_proofs 1"),
            "{m}"
        );
        until("the witness logged it at warn", || {
            let log = procs[i].stderr();
            (log.contains("WARN") && log.contains("EQUIVOCATED")).then_some(())
        });
    }
    // Honest relays B and C did not equivocate; nobody accuses them.
    assert!(http[0].equivocations().expect("list").is_empty());
}

#[test]
fn key_command_prints_the_verifier_key() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let k1 = key_of(tmp.path(), &[]);
    let k2 = key_of(tmp.path(), &[]);
    assert_eq!(k1, k2, "the key persists in the data dir");
    let v = NoteVerifier::from_key_text(&k1).expect("C2SP verifier key");
    assert!(v.name.starts_with("shoal-relay/"), "{k1}");
    let parts: Vec<&str> = k1.splitn(3, '+').collect();
    assert_eq!(parts.len(), 3);
    assert_eq!(parts[1].len(), 8);
    // The seed file is the relay identity; the key is its public half.
    let seed = std::fs::read(tmp.path().join("relay.key")).expect("relay.key");
    let kp = shoal_proto::identity::Keypair::from_seed_slice(&seed).expect("seed");
    assert_eq!(v.public_key, kp.peer_id().0);
    // A configured name changes the name (and key id), not the key.
    let named = key_of(tmp.path(), &["--log-name", "relay-a.example/log"]);
    let vn = NoteVerifier::from_key_text(&named).expect("key");
    assert_eq!(vn.name, "relay-a.example/log");
    assert_eq!(vn.public_key, v.public_key);

    // The running relay's checkpoint origin is that name and verifies with that key.
    let port = free_port();
    let p = spawn_relay(
        &[],
        SocketAddr::from(([127, 0, 0, 1], port)),
        tmp.path(),
        &[],
        &["--log-name", "relay-a.example/log"],
    );
    let base = format!("http://127.0.0.1:{port}");
    wait_ready(&base);
    let h = LogHttp::new(&base, Duration::from_secs(30));
    let note = until("a checkpoint", || h.checkpoint().ok());
    let sc = SignedCheckpoint::verify(note.as_bytes(), &vn, None).expect("verifies");
    assert_eq!(sc.checkpoint.origin, "relay-a.example/log");
    drop(p);
}
