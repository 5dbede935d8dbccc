//! Circle members over real WebRTC (webrtc-rs) and a real relay, inside a network namespace
//! this test creates (`unshare -n`, loopback only): results equal local embedding, every member
//! computes, a worker killed mid-job does not change the result, an impostor in the room (no
//! circle key) is rejected, and no frame the relay received carries a sentence or a vector.
//!
//! The test re-executes itself under `unshare -n` (needs root or unprivileged user
//! namespaces: `unshare -rn` is tried second).

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IN_NS: &str = "SHOAL_TEST_IN_NETNS";

/// Re-run this test inside a fresh network namespace; returns true if we are already inside.
fn in_namespace(test: &str) -> bool {
    if std::env::var_os(IN_NS).is_some() {
        let ok = Command::new("ip")
            .args(["link", "set", "lo", "up"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(ok, "ip link set lo up failed");
        return true;
    }
    let relay = relay_bin();
    let exe = std::env::current_exe().unwrap();
    for flags in [&["-n"][..], &["-rn"][..]] {
        let out = Command::new("unshare")
            .args(flags)
            .arg("--")
            .arg(&exe)
            .args([test, "--exact", "--nocapture", "--test-threads=1"])
            .env(IN_NS, "1")
            .env("SHOAL_RELAY_BIN", &relay)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if text.contains("unshare failed") || text.contains("unshare:") {
            continue;
        }
        eprintln!("{text}");
        assert!(out.status.success(), "test inside the namespace failed");
        assert!(
            text.contains("1 passed"),
            "the test did not run inside the namespace"
        );
        return false;
    }
    panic!("cannot create a network namespace (need root or user namespaces)");
}

/// `shoal-relay` from this workspace's target dir (built if missing; building it from here
/// each time would flip shared dependencies' features between the two packages' builds).
fn relay_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_RELAY_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().unwrap().parent().unwrap(); // target/debug
    let bin = dir.join("shoal-relay");
    if bin.exists() {
        return bin;
    }
    let st = Command::new(env!("CARGO"))
        .args(["build", "-p", "shoal-relay", "--bin", "shoal-relay"])
        .status()
        .unwrap();
    assert!(st.success(), "building shoal-relay failed");
    assert!(bin.exists(), "{} missing", bin.display());
    bin
}

struct Proc {
    child: Child,
    name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_relay(dir: &Path) -> (Proc, String) {
    let port = free_port();
    let log = std::fs::File::create(dir.join("relay.log")).unwrap();
    let child = Command::new(std::env::var_os("SHOAL_RELAY_BIN").unwrap())
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
            dir.join("relay-data").to_str().unwrap(),
            "--log",
            "debug",
        ])
        .env("SHOAL_RELAY_TEST_CAPTURE_FRAMES", dir.join("frames.bin"))
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "relay did not start"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    (
        Proc {
            child,
            name: "relay".into(),
        },
        format!("ws://127.0.0.1:{port}/v1/signal"),
    )
}

fn node_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal-node"));
    c.env("SHOAL_MODEL_DIR", common::model_dir())
        .env("SHOAL_LOG", "info");
    c
}

/// A `join` worker; its stderr (JSON event lines) is collected by a thread.
fn start_worker(
    name: &str,
    link: &str,
    relay: &str,
    extra: &[&str],
) -> (Proc, std::sync::mpsc::Receiver<String>) {
    let mut child = node_cmd()
        .args([
            "join",
            link,
            "--relay",
            relay,
            "--udp",
            "127.0.0.1:0",
            "--name",
            name,
            "--rate",
            "100",
        ])
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let n = name.to_string();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            eprintln!("[{n}] {line}");
            let _ = tx.send(line);
        }
    });
    (
        Proc {
            child,
            name: name.into(),
        },
        rx,
    )
}

fn wait_line(rx: &std::sync::mpsc::Receiver<String>, pat: &str, within: Duration) -> String {
    let t0 = Instant::now();
    loop {
        let left = within.saturating_sub(t0.elapsed());
        match rx.recv_timeout(left) {
            Ok(l) if l.contains(pat) => return l,
            Ok(_) => {}
            Err(_) => panic!("no line with {pat:?} within {within:?}"),
        }
    }
}

fn sentences(n: usize) -> Vec<String> {
    let subjects = [
        "The cat",
        "A scientist",
        "My neighbour",
        "The river",
        "An old train",
    ];
    let verbs = ["watches", "remembers", "paints", "follows", "ignores"];
    let objects = [
        "the quiet harbour",
        "a red kite",
        "the winter market",
        "seven lanterns",
    ];
    (0..n)
        .map(|i| {
            format!(
                "{} {} {} number {i}.",
                subjects[i % subjects.len()],
                verbs[(i / 5) % verbs.len()],
                objects[(i / 25) % objects.len()]
            )
        })
        .collect()
}

fn parse_vectors(stdout: &[u8]) -> Vec<(String, Vec<f32>)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["text"].as_str().unwrap().to_string(),
                serde_json::from_value(v["vector"].clone()).unwrap(),
            )
        })
        .collect()
}

fn local_embed(input: &Path) -> Vec<(String, Vec<f32>)> {
    let out = node_cmd()
        .args(["embed", input.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    parse_vectors(&out.stdout)
}

fn run_requester(link: &str, relay: &str, input: &Path, stats: &Path, peers: usize) -> Child {
    node_cmd()
        .args([
            "embed",
            input.to_str().unwrap(),
            "--circle",
            link,
            "--relay",
            relay,
            "--udp",
            "127.0.0.1:0",
            "--peers",
            &peers.to_string(),
            "--wait-ms",
            "60000",
            "--rate",
            "100",
            "--stats",
            stats.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

fn assert_same(circle: &[(String, Vec<f32>)], local: &[(String, Vec<f32>)]) {
    assert_eq!(circle.len(), local.len());
    for ((t1, v1), (t2, v2)) in circle.iter().zip(local) {
        assert_eq!(t1, t2, "input order");
        let c = node_lite::vector::cosine(v1, v2);
        assert!(c >= 0.9999, "{t1}: cosine {c}");
    }
}

/// No captured relay frame and no relay log line carries a sentence or vector bytes.
fn assert_relay_saw_nothing(dir: &Path, texts: &[String], local: &[(String, Vec<f32>)]) {
    let frames = std::fs::read(dir.join("frames.bin"))
        .expect("no frames.bin: shoal-relay predates the capture hook, rebuild it");
    assert!(!frames.is_empty(), "the capture hook saw no frames");
    let mut needles: Vec<Vec<u8>> = texts.iter().map(|t| t.as_bytes().to_vec()).collect();
    needles.push(b"number".to_vec());
    for (_, v) in local.iter().take(50) {
        needles.push(v[..4].iter().flat_map(|x| x.to_le_bytes()).collect());
    }
    for n in &needles {
        assert!(
            !frames.windows(n.len()).any(|w| w == n.as_slice()),
            "a relay frame contains {:?}",
            String::from_utf8_lossy(n)
        );
    }
    let log = std::fs::read_to_string(dir.join("relay.log")).unwrap();
    assert!(log.contains("session"), "relay debug log is empty");
    assert!(!log.contains("number"), "relay log mentions a sentence");
    // Frames were sealed signaling: SDP keywords never appear in the clear.
    for kw in [&b"a=candidate"[..], b"v=0", b"\"sdp\"", b"ice-ufrag"] {
        assert!(!frames.windows(kw.len()).any(|w| w == kw), "clear SDP");
    }
}

#[test]
fn circle_of_three_embeds_like_local_and_survives_a_killed_worker() {
    if !in_namespace("circle_of_three_embeds_like_local_and_survives_a_killed_worker") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay) = start_relay(dir.path());
    let link = format!(
        "http://127.0.0.1/#c={}",
        node_lite::circle::CircleKey::generate().unwrap().token()
    );

    // --- 1: requester + two workers, 300 sentences ---
    let texts = sentences(300);
    let input = dir.path().join("in.txt");
    std::fs::write(&input, texts.join("\n")).unwrap();
    let local = local_embed(&input);
    let (_a, a_rx) = start_worker("worker-a", &link, &relay, &[]);
    // B holds its first shard of job 2 (the hold file appears after job 1), so it is killed
    // while it owes the requester work, however fast the machine is.
    let hold = dir.path().join("hold-b");
    let (_b, b_rx) = start_worker(
        "worker-b",
        &link,
        &relay,
        &["--test-hold-file", hold.to_str().unwrap()],
    );
    // An impostor sits in the room without the key.
    let (_x, x_rx) = start_worker("impostor", &link, &relay, &["--test-impostor"]);
    wait_line(&a_rx, "\"peer_up\"", Duration::from_secs(60));
    wait_line(&b_rx, "\"peer_up\"", Duration::from_secs(60));
    let stats = dir.path().join("stats1.json");
    let req = run_requester(&link, &relay, &input, &stats, 2);
    let out = req.wait_with_output().unwrap();
    assert!(out.status.success());
    let circle = parse_vectors(&out.stdout);
    assert_same(&circle, &local);
    let s: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats).unwrap()).unwrap();
    let members = s["members"].as_array().unwrap();
    assert_eq!(members.len(), 3, "self + two workers: {members:?}");
    for m in members {
        assert!(
            m["shards"].as_u64().unwrap() > 0,
            "member did no shard: {m}"
        );
        assert_ne!(m["name"], "impostor");
    }
    assert!(s["remote_shards"].as_u64().unwrap() > 0);
    // The impostor: whoever of the pair offers, the other side's seal check fails, so it
    // never gets a channel up with anyone, and someone logged the rejection.
    let imp_lines: Vec<String> = x_rx.try_iter().collect();
    let imp_id = imp_lines
        .iter()
        .find(|l| l.contains("\"member\""))
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["peer"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .expect("impostor announced itself");
    assert!(
        !imp_lines.iter().any(|l| l.contains("\"peer_up\"")),
        "impostor connected"
    );
    let a_lines: Vec<String> = a_rx.try_iter().collect();
    let b_lines: Vec<String> = b_rx.try_iter().collect();
    for l in a_lines.iter().chain(&b_lines) {
        assert!(
            !(l.contains("\"peer_up\"") && l.contains(&imp_id)),
            "a worker let the impostor in: {l}"
        );
    }
    let rejections = imp_lines
        .iter()
        .chain(&a_lines)
        .chain(&b_lines)
        .filter(|l| l.contains("\"rejected\"") && l.contains("authentication failed"))
        .count() as u64
        + s["rejected"].as_u64().unwrap();
    assert!(
        rejections > 0,
        "no sealed payload was refused between impostor and members"
    );

    // --- 2: kill worker B mid-job, while it holds an unanswered shard ---
    let texts2 = sentences(900);
    let input2 = dir.path().join("in2.txt");
    std::fs::write(&input2, texts2.join("\n")).unwrap();
    let local2 = local_embed(&input2);
    let stats2 = dir.path().join("stats2.json");
    std::fs::write(&hold, b"").unwrap();
    let req = run_requester(&link, &relay, &input2, &stats2, 2);
    // B received a shard of job 2 and will never answer it: the job can only finish without B.
    wait_line(&b_rx, "\"holding\"", Duration::from_secs(120));
    drop(_b); // SIGKILL
    let out = req.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_same(&parse_vectors(&out.stdout), &local2);
    let s2: serde_json::Value = serde_json::from_slice(&std::fs::read(&stats2).unwrap()).unwrap();
    eprintln!("after kill: {s2}");
    let b = s2["members"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "worker-b")
        .expect("worker-b took part in job 2");
    assert!(
        b["status"].as_str().unwrap().starts_with("excluded"),
        "the killed worker was not dropped: {b}"
    );

    let mut all = texts.clone();
    all.extend(texts2);
    assert_relay_saw_nothing(dir.path(), &all, &local);
    let _ = std::io::stderr().flush();
    let _ = &_relay.name;
}
