//! Circle tests' plumbing: re-running a test inside a fresh network namespace, a real
//! `shoal-relay` (frames captured), `shoal-node join` members whose JSON event lines are
//! collected, waiting for a line.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const IN_NS: &str = "SHOAL_TEST_IN_NETNS";

/// Re-run this test inside a fresh network namespace; returns true if we are already inside.
pub(crate) fn in_namespace(test: &str) -> bool {
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
pub(crate) fn relay_bin() -> PathBuf {
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

pub(crate) struct Proc {
    pub(crate) child: Child,
    pub(crate) name: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub(crate) fn start_relay(dir: &Path) -> (Proc, String) {
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

pub(crate) fn node_cmd() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_shoal-node"));
    c.env("SHOAL_MODEL_DIR", super::model_dir())
        .env("SHOAL_LOG", "info");
    c
}

/// A `join` worker; its stderr (JSON event lines) is collected by a thread.
pub(crate) fn start_worker(
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

pub(crate) fn wait_line(
    rx: &std::sync::mpsc::Receiver<String>,
    pat: &str,
    within: Duration,
) -> String {
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

/// A link to a fresh circle (random key).
pub(crate) fn random_link() -> String {
    format!(
        "http://127.0.0.1/#c={}",
        node_lite::circle::CircleKey::generate().unwrap().token()
    )
}
