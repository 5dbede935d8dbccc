//! Circle members over real WebRTC (webrtc-rs) and a real relay, inside a network namespace
//! this test creates (`unshare -n`, loopback only): results equal local embedding, every member
//! computes, a worker killed mid-job does not change the result, an impostor in the room (no
//! circle key) is rejected, and no frame the relay received carries a sentence or a vector.
//!
//! The test re-executes itself under `unshare -n` (needs root or unprivileged user
//! namespaces: `unshare -rn` is tried second).

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use common::circle::{in_namespace, node_cmd, random_link, start_relay, start_worker, wait_line};

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
    let link = random_link();

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
