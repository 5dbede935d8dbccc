//! The assistant across a circle over real WebRTC (webrtc-rs) and a real relay, inside a network
//! namespace this test creates: `shoal-node chat --circle` asks, `shoal-node join --chat`
//! members answer. The served greedy answer equals this machine's own, token for token, and is
//! verified and receipted; Stop ends the member's generation; a member SIGKILLed mid-answer
//! loses nothing (the answer continues here); a member that tampers with one token in 50 is
//! caught at that token, excluded, and a signed misbehaviour record names it; the relay's
//! frames and log carry neither prompt nor answer.

mod common;

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::circle::{in_namespace, node_cmd, random_link, start_relay, start_worker, wait_line};

const PROMPT: &str = "Write a short story about a lighthouse keeper and a storm.";
const MAX_TOKENS: &str = "40";

fn local_answer(gguf: &Path) -> serde_json::Value {
    let out = node_cmd()
        .args(["chat", "--json", "--max-tokens", MAX_TOKENS, "--model"])
        .arg(gguf)
        .arg(PROMPT)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn ask(link: &str, relay: &str, gguf: &Path, receipts: &Path, extra: &[&str]) -> serde_json::Value {
    let out: Output = node_cmd()
        .args([
            "chat",
            "--circle",
            link,
            "--relay",
            relay,
            "--udp",
            "127.0.0.1:0",
            "--peers",
            "1",
            "--wait-ms",
            "60000",
            "--prefer-remote",
            "--local-rate",
            "1",
            "--json",
            "--max-tokens",
            MAX_TOKENS,
            "--receipts",
        ])
        .arg(receipts)
        .arg("--model")
        .arg(gguf)
        .args(extra)
        .arg(PROMPT)
        .output()
        .unwrap();
    eprintln!("[requester] {}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "chat --circle failed");
    serde_json::from_slice(&out.stdout).unwrap()
}

fn relay_http(ws: &str) -> String {
    ws.replace("ws://", "http://").replace("/v1/signal", "")
}

fn peer_of(rx: &std::sync::mpsc::Receiver<String>) -> String {
    let l = wait_line(rx, "\"member\"", Duration::from_secs(120));
    serde_json::from_str::<serde_json::Value>(&l).unwrap()["peer"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn members_answer_verified_survive_a_kill_stop_and_a_liar() {
    if !in_namespace("members_answer_verified_survive_a_kill_stop_and_a_liar") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (_relay, relay) = start_relay(dir.path());
    let link = random_link();
    let gguf = common::gguf();
    let g = gguf.to_str().unwrap();
    let receipts = dir.path().join("receipts");
    let local = local_answer(&gguf);
    let want = local["tokens"].clone();
    assert_eq!(want.as_array().unwrap().len(), 40, "{local}");

    // --- 1: an honest member serves; the answer equals ours, verified and receipted ---
    let hold = dir.path().join("hold");
    let (laptop, l_rx) = start_worker(
        "laptop",
        &link,
        &relay,
        &[
            "--chat-model",
            g,
            "--test-hold-file",
            hold.to_str().unwrap(),
        ],
    );
    let laptop_id = peer_of(&l_rx);
    let a = ask(&link, &relay, &gguf, &receipts, &[]);
    assert_eq!(
        a["tokens"], want,
        "served answer differs from the local one"
    );
    assert_eq!(a["text"], local["text"]);
    assert_eq!(a["verified"], true);
    let spans = a["spans"].as_array().unwrap();
    assert_eq!(spans.len(), 1, "{a}");
    assert_eq!(spans[0]["by"], laptop_id.as_str());
    assert_eq!(a["receipts"], 1);
    assert_eq!(a["anchored"], 1, "the relay took the receipt");
    let served = wait_line(&l_rx, "\"event\":\"served\"", Duration::from_secs(30));
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    assert_eq!(served["tokens"], 40);

    // --- 2: Stop after 5 tokens ends the member's generation early ---
    let a = ask(&link, &relay, &gguf, &receipts, &["--test-stop-after", "5"]);
    assert_eq!(a["finish"], "cancelled");
    let got = a["tokens"].as_array().unwrap();
    assert!(got.len() >= 5 && got.len() < 40, "{a}");
    assert_eq!(got[..], want.as_array().unwrap()[..got.len()]);
    assert_eq!(a["verified"], true);
    let served = wait_line(&l_rx, "\"event\":\"served\"", Duration::from_secs(30));
    let served: serde_json::Value = serde_json::from_str(&served).unwrap();
    let n = served["tokens"].as_u64().unwrap();
    assert!(n < 40, "the member kept generating after Stop: {served}");

    // --- 3: the member is SIGKILLed mid-answer; the answer completes here, continuous ---
    std::fs::write(&hold, b"").unwrap();
    let req = std::thread::spawn({
        let (link, relay, gguf, receipts) =
            (link.clone(), relay.clone(), gguf.clone(), receipts.clone());
        move || {
            ask(
                &link,
                &relay,
                &gguf,
                &receipts,
                &["--token-deadline-ms", "60000"],
            )
        }
    });
    wait_line(&l_rx, "\"holding\"", Duration::from_secs(120));
    drop(laptop); // SIGKILL
    let a = req.join().unwrap();
    assert_eq!(a["tokens"], want, "answer after the kill differs");
    let spans = a["spans"].as_array().unwrap();
    assert!(spans.len() >= 2, "{a}");
    assert_eq!(spans[0]["by"], laptop_id.as_str());
    assert!(spans[0]["start"] == 0 && spans[1]["start"].as_u64().unwrap() >= 8);
    assert!(spans[1..].iter().all(|s| s["by"] != laptop_id.as_str()));
    assert_eq!(a["verified"], true);

    // --- 4: a member tampering with one token in 50 is caught at it ---
    let (_liar, x_rx) = start_worker(
        "liar",
        &link,
        &relay,
        &["--chat-model", g, "--test-tamper", "50"],
    );
    let liar_id = peer_of(&x_rx);
    let a = ask(&link, &relay, &gguf, &receipts, &[]);
    assert_eq!(a["tokens"], want, "the liar's token survived");
    assert_eq!(a["verified"], true);
    let ex = a["excluded"].as_array().unwrap();
    assert_eq!(ex.len(), 1, "{a}");
    assert_eq!(ex[0]["peer"], liar_id.as_str());
    assert!(ex[0]["why"].as_str().unwrap().contains("position: 10"));
    assert_eq!(a["receipts"], 0, "no receipt for a rejected answer");
    let records = a["misbehaviour"].as_array().unwrap();
    assert_eq!(records.len(), 1);
    use base64::Engine as _;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(records[0]["record"].as_str().unwrap())
        .unwrap();
    let m = node_lite::receipt::Misbehaviour::decode_verified(&bytes).expect("a valid record");
    assert_eq!(m.position, 10);
    assert_eq!(records[0]["worker"], liar_id.as_str());
    assert_eq!(
        node_lite::identity::PeerId(m.body.worker).to_string(),
        liar_id
    );
    // Anchored: the relay's log proves it included the record (an independent light client,
    // trusting only the relay's key).
    assert!(records[0]["log_index"].is_u64(), "record not anchored: {a}");
    let key = String::from_utf8(
        std::process::Command::new(std::env::var_os("SHOAL_RELAY_BIN").unwrap())
            .args(["key", "--data-dir"])
            .arg(dir.path().join("relay-data"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let log = node_lite::tlog::remote::TrustedLog {
        url: relay_http(&relay),
        key: node_lite::tlog::note::NoteVerifier::from_key_text(key.trim()).unwrap(),
    };
    let opts = node_lite::tlog::remote::StatusOptions {
        quorum: 0,
        ..Default::default()
    };
    let t0 = std::time::Instant::now();
    loop {
        let rep = node_lite::tlog::remote::receipt_status(
            std::slice::from_ref(&log),
            std::slice::from_ref(&bytes),
            &opts,
        );
        if rep.receipts[0].included {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "no inclusion proof for the record: {rep:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // The relay saw sealed signaling only: no prompt, no answer.
    let frames = std::fs::read(dir.path().join("frames.bin")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("relay.log")).unwrap();
    let answer = local["text"].as_str().unwrap();
    let needles = [
        "lighthouse",
        "storm",
        &answer[..answer.len().min(24)],
        &answer[answer.len().saturating_sub(16)..],
    ];
    for n in needles {
        assert!(
            !frames.windows(n.len()).any(|w| w == n.as_bytes()),
            "a relay frame contains {n:?}"
        );
        assert!(!log.contains(n), "the relay log contains {n:?}");
    }
}
