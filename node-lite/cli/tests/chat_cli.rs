//! `shoal-node chat`, `import-gguf`, `ask` and `serve` as a user runs them, on the real
//! SmolLM2 GGUF (scripts/setup fetches it; `SHOAL_LLM_GGUF` points at it): answers, the
//! `--json` line, verified import, and clear refusals of bad input — truncated, corrupt and
//! unsupported GGUFs, oversized prompts and prompts over the context, invalid UTF-8 on stdin.
//! The OpenAI-compatible endpoint is driven by the official `openai` Python client.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::gguf;

fn shoal(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-node"))
        .args(args)
        .env("SHOAL_MODEL_DIR", common::model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shoal-node");
    let mut i = child.stdin.take().unwrap();
    let data = stdin.to_vec();
    let w = std::thread::spawn(move || {
        let _ = i.write_all(&data);
    });
    let out = child.wait_with_output().unwrap();
    let _ = w.join();
    out
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn imported() -> PathBuf {
    // One import per test binary run, shared by the tests that need a directory.
    static DIR: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let d = tempfile::tempdir().unwrap();
        let o = shoal(
            &[
                "import-gguf",
                gguf().to_str().unwrap(),
                "--out",
                d.path().to_str().unwrap(),
            ],
            b"",
        );
        assert!(o.status.success(), "import-gguf: {}", text(&o.stderr));
        assert!(
            text(&o.stderr).contains("smollm2-135m-instruct"),
            "{}",
            text(&o.stderr)
        );
        d
    })
    .path()
    .to_path_buf()
}

#[test]
fn chat_json_is_one_line_with_the_templated_prompt_ids() {
    let dir = imported();
    let o = shoal(
        &[
            "chat",
            "--model",
            dir.to_str().unwrap(),
            "--json",
            "--max-tokens",
            "12",
            "What is the capital of France?",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert_eq!(out.lines().count(), 1, "exactly one line: {out}");
    let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let keys: Vec<&str> = v.as_object().unwrap().keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "decode_tok_s",
            "first_token_ms",
            "prefill_tok_s",
            "prompt_tokens",
            "text",
            "tokens"
        ]
    );
    assert!(v["first_token_ms"].as_f64().unwrap() > 0.0);
    // The golden file's first chat is this question; its ids came from llama.cpp.
    let golden: serde_json::Value = serde_json::from_slice(
        &std::fs::read(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../llm/tests/data/golden.json"
        ))
        .unwrap(),
    )
    .unwrap();
    let chat0 = &golden["chats"][0];
    assert_eq!(
        chat0["messages"][0]["content"],
        "What is the capital of France?"
    );
    assert_eq!(v["prompt_tokens"], chat0["prompt_tokens"]);
    assert_eq!(v["prompt_tokens"].as_array().unwrap().len(), 37);
    let toks = v["tokens"].as_array().unwrap();
    assert!(!toks.is_empty() && toks.len() <= 12);
    assert!(!v["text"].as_str().unwrap().is_empty());
    assert!(
        v["decode_tok_s"].as_f64().unwrap() > 0.0 && v["prefill_tok_s"].as_f64().unwrap() > 0.0
    );
}

#[test]
fn chat_streams_an_answer_from_a_raw_gguf_file_and_same_seed_gives_same_text() {
    let p = gguf();
    let run = || {
        shoal(
            &[
                "chat",
                "--model",
                p.to_str().unwrap(),
                "--max-tokens",
                "24",
                "--temperature",
                "0.8",
                "--seed",
                "7",
                "Name three colours.",
            ],
            b"",
        )
    };
    let a = run();
    assert!(a.status.success(), "{}", text(&a.stderr));
    assert!(text(&a.stdout).trim().len() > 3, "{}", text(&a.stdout));
    assert!(text(&a.stderr).contains("tok/s"), "{}", text(&a.stderr));
    assert_eq!(
        text(&run().stdout),
        text(&a.stdout),
        "same seed, same engine, same text"
    );
}

#[test]
fn interactive_chat_keeps_history_and_skips_invalid_utf8_lines() {
    let dir = imported();
    let mut input = Vec::new();
    input.extend_from_slice(b"My name is Ada.\n");
    input.extend_from_slice(&[0xff, 0xfe, b'x', b'\n']);
    input.extend_from_slice(b"What is my name?\n");
    let o = shoal(
        &[
            "chat",
            "--model",
            dir.to_str().unwrap(),
            "--json",
            "--max-tokens",
            "16",
        ],
        &input,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("line 2 of standard input is not valid UTF-8"),
        "{}",
        text(&o.stderr)
    );
    let lines: Vec<serde_json::Value> = text(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "one answer per valid line");
    // The second prompt holds the first exchange: history is kept.
    let p1 = lines[0]["prompt_tokens"].as_array().unwrap().len();
    let p2 = lines[1]["prompt_tokens"].as_array().unwrap().len();
    assert!(
        p2 > p1 + lines[0]["tokens"].as_array().unwrap().len(),
        "{p1} then {p2}"
    );
}

#[test]
fn prompts_over_the_size_limit_or_the_context_are_refused_clearly() {
    let p = gguf();
    let m = p.to_str().unwrap();
    // A 10 MB message on standard input: refused by name, and the conversation goes on.
    let mut input = "a".repeat(10 << 20).into_bytes();
    input.extend_from_slice(b"\nSay hi.\n");
    let o = shoal(
        &["chat", "--model", m, "--json", "--max-tokens", "4"],
        &input,
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains("line 1 is over the 1048576-byte limit"),
        "{}",
        text(&o.stderr)
    );
    assert_eq!(
        text(&o.stdout).lines().count(),
        1,
        "the next line is answered"
    );
    // ~9,000 tokens: under the byte limit, over SmolLM2's 8,192-token context.
    let long = "seven blue rivers ".repeat(3000);
    let o = shoal(&["chat", "--model", m, "--max-tokens", "4", &long], b"");
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(e.contains("context holds 8192"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

fn copy_with(src: &Path, f: impl FnOnce(&mut Vec<u8>)) -> tempfile::NamedTempFile {
    let mut b = std::fs::read(src).unwrap();
    f(&mut b);
    let mut t = tempfile::Builder::new().suffix(".gguf").tempfile().unwrap();
    t.write_all(&b).unwrap();
    t
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len())
        .position(|w| w == needle)
        .expect("pattern in the GGUF")
}

#[test]
fn truncated_corrupt_and_unsupported_ggufs_are_refused_by_name() {
    let src = gguf();
    // Truncated: half the file.
    let t = copy_with(&src, |b| b.truncate(b.len() / 2));
    let o = shoal(
        &[
            "import-gguf",
            t.path().to_str().unwrap(),
            "--out",
            tempfile::tempdir().unwrap().path().to_str().unwrap(),
        ],
        b"",
    );
    assert!(!o.status.success());
    assert!(text(&o.stderr).contains("truncated"), "{}", text(&o.stderr));
    // Another architecture: the value of general.architecture, "llama" → "mamba".
    let t = copy_with(&src, |b| {
        let i = find(b, b"\x05\x00\x00\x00\x00\x00\x00\x00llama");
        b[i + 8..i + 13].copy_from_slice(b"mamba");
    });
    let o = shoal(&["chat", "--model", t.path().to_str().unwrap(), "hi"], b"");
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("architecture \"mamba\""),
        "{}",
        text(&o.stderr)
    );
    // An unsupported tensor type: output_norm.weight's type id (after its 1 dim) → 13, Q5_K.
    let t = copy_with(&src, |b| {
        let name = b"output_norm.weight";
        let i = find(b, name) + name.len();
        let ty = i + 4 + 8; // n_dims u32, one u64 dim
        b[ty..ty + 4].copy_from_slice(&13u32.to_le_bytes());
    });
    let o = shoal(&["chat", "--model", t.path().to_str().unwrap(), "hi"], b"");
    assert!(!o.status.success());
    let e = text(&o.stderr);
    assert!(
        e.contains("output_norm.weight") && e.contains("Q5_K"),
        "{e}"
    );
    // A verified import with one chunk flipped: refused, naming the chunk.
    let dir = tempfile::tempdir().unwrap();
    for f in std::fs::read_dir(imported()).unwrap() {
        let f = f.unwrap();
        std::fs::copy(f.path(), dir.path().join(f.file_name())).unwrap();
    }
    let c = dir.path().join("weights.003");
    let mut b = std::fs::read(&c).unwrap();
    b[100] ^= 0x10;
    std::fs::write(&c, b).unwrap();
    let o = shoal(
        &["chat", "--model", dir.path().to_str().unwrap(), "hi"],
        b"",
    );
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("weights.003"),
        "{}",
        text(&o.stderr)
    );
}

#[test]
fn ask_answers_from_the_index_and_lists_its_sources() {
    let idx = tempfile::tempdir().unwrap();
    let index = idx.path().join("index.bin");
    let samples = concat!(env!("CARGO_MANIFEST_DIR"), "/../../public/samples");
    let o = shoal(&["index", samples, "--index", index.to_str().unwrap()], b"");
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = shoal(
        &[
            "ask",
            "How early should I renew my passport before a trip?",
            "-k",
            "3",
            "--index",
            index.to_str().unwrap(),
            "--chat-model",
            imported().to_str().unwrap(),
            "--max-tokens",
            "64",
        ],
        b"",
    );
    assert!(o.status.success(), "{}", text(&o.stderr));
    let out = text(&o.stdout);
    assert!(
        out.contains("[1] ") && out.contains("passport.md:"),
        "{out}"
    );
    // The passage holding the answer is retrieved first.
    let first = out.lines().find(|l| l.starts_with("[1] ")).unwrap();
    assert!(first.contains("passport.md"), "{out}");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server(std::process::Child);
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn http(port: u16, req: &str) -> (u16, String) {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let code = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, out)
}

fn post(port: u16, path: &str, body: &str) -> (u16, String) {
    http(
        port,
        &format!(
            "POST {path} HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn serve_speaks_openai_to_the_official_client_and_refuses_bad_requests() {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_shoal-node"))
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--chat-model",
            imported().to_str().unwrap(),
        ])
        .env("SHOAL_MODEL_DIR", common::model_dir())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let _srv = Server(child);
    let t0 = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "serve did not start"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Clear 4xx errors, JSON bodies.
    let (c, b) = post(port, "/v1/chat/completions", "{not json");
    assert_eq!(c, 400, "{b}");
    assert!(b.contains("\"error\"") && b.contains("malformed"), "{b}");
    let (c, b) = post(
        port,
        "/v1/chat/completions",
        r#"{"model":"gpt-9","messages":[{"role":"user","content":"hi"}]}"#,
    );
    assert_eq!(c, 404, "{b}");
    let (c, _) = post(port, "/v1/chat/completions", r#"{"messages":[]}"#);
    assert_eq!(c, 400);
    let (c, _) = post(
        port,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"wizard","content":"hi"}]}"#,
    );
    assert_eq!(c, 400);
    let (c, _) = post(
        port,
        "/v1/chat/completions",
        r#"{"messages":[{"role":"user","content":"hi"}],"temperature":99}"#,
    );
    assert_eq!(c, 400);
    let big = format!(
        r#"{{"messages":[{{"role":"user","content":"{}"}}]}}"#,
        "a".repeat(2 << 20)
    );
    let (c, _) = post(port, "/v1/chat/completions", &big);
    assert_eq!(c, 413);
    // The official client, streaming and not.
    let py = std::env::var("SHOAL_TEST_PYTHON").unwrap_or_else(|_| {
        let home = std::env::var("HOME").unwrap_or_default();
        format!("{home}/.cache/shoal/venv-test/bin/python")
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/openai_client.py");
    let o = Command::new(&py)
        .args([script, &format!("http://127.0.0.1:{port}/v1")])
        .output()
        .unwrap_or_else(|e| panic!("{py}: {e} (scripts/setup makes the test venv)"));
    assert!(
        o.status.success(),
        "openai client: {}{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    let out = text(&o.stdout);
    eprintln!("{out}");
    assert!(
        out.contains("models: ")
            && out.contains("smollm2-135m-instruct")
            && out.contains("all-minilm-l6-v2"),
        "{out}"
    );
    assert!(out.contains("stream == plain: True"), "{out}");
    assert!(out.contains("embedding dims: 384"), "{out}");
}
