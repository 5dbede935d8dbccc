//! The `shoal-node` binary as a user runs it.

mod common;

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn shoal(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_shoal-node"))
        .args(args)
        .env("SHOAL_MODEL_DIR", common::model_dir())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut sin = child.stdin.take().unwrap();
    let input = stdin.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = sin.write_all(&input);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn embed_prints_one_json_object_per_non_empty_line() {
    let out = shoal(&["embed"], "hello world\n\n  \nsecond line\r\n".as_bytes());
    assert!(out.status.success(), "{}", stderr(&out));
    let lines: Vec<serde_json::Value> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["text"], "hello world");
    assert_eq!(lines[1]["text"], "second line");
    for l in &lines {
        let obj = l.as_object().unwrap();
        assert_eq!(obj.len(), 2, "exactly text and vector: {obj:?}");
        let v = l["vector"].as_array().unwrap();
        assert_eq!(v.len(), 384);
        let norm: f64 = v.iter().map(|x| x.as_f64().unwrap().powi(2)).sum();
        assert!((norm - 1.0).abs() < 1e-4);
    }
}

#[test]
fn embed_reads_a_file_and_matches_the_library() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("in.txt");
    std::fs::write(&f, "The new movie is awesome\nThe new movie is so great\n").unwrap();
    let out = shoal(&["embed", f.to_str().unwrap(), "--variant", "f16"], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    let v: Vec<Vec<f32>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_value(
                serde_json::from_str::<serde_json::Value>(l).unwrap()["vector"].clone(),
            )
            .unwrap()
        })
        .collect();
    let c = node_lite::vector::cosine(&v[0], &v[1]);
    assert!((c - 0.8939).abs() < 0.002, "{c}");
}

#[test]
fn bad_input_gets_a_clear_error_not_a_panic() {
    let out = shoal(&["embed"], b"fine\ncaf\xe9 latin-1\n");
    assert!(!out.status.success());
    let e = stderr(&out);
    assert!(
        e.contains("<stdin>:2") && e.contains("not valid UTF-8"),
        "{e}"
    );
    assert!(!e.contains("panicked"), "{e}");

    let out = shoal(&["embed"], b"\x7fELF\x02\x01\x01\x00\x00\x00binary");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("binary data"), "{}", stderr(&out));

    let out = shoal(&["embed", "/nonexistent/file.txt"], b"");
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent/file.txt"),
        "{}",
        stderr(&out)
    );

    let out = shoal(&["embed", "--model", "/nonexistent"], b"x\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no model at"), "{}", stderr(&out));
}

#[test]
fn a_ten_megabyte_line_is_embedded() {
    let mut input = "many words here "
        .repeat(10 * 1024 * 1024 / 16)
        .into_bytes();
    input.extend_from_slice(b"\nshort\n");
    let out = shoal(&["embed"], &input);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
}

#[test]
fn index_and_search_a_folder() {
    let dir = tempfile::tempdir().unwrap();
    let index = dir.path().join("index.bin");
    let samples = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../public/samples");
    let idx = index.to_str().unwrap();
    let out = shoal(&["index", samples.to_str().unwrap(), "--index", idx], b"");
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("5 new"), "{}", stderr(&out));

    for (query, file) in [
        ("how long is my passport valid for travel", "passport.md"),
        ("baking bread with a starter", "sourdough.md"),
        ("my wifi keeps dropping", "networking.md"),
        ("bugs eating my plants", "garden.txt"),
        ("where to put savings", "finance.txt"),
    ] {
        let out = shoal(&["search", query, "-k", "3", "--index", idx, "--json"], b"");
        assert!(out.status.success(), "{}", stderr(&out));
        let first: serde_json::Value = serde_json::from_str(
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .next()
                .unwrap(),
        )
        .unwrap();
        assert!(
            first["path"].as_str().unwrap().ends_with(file),
            "{query}: {first}"
        );
        assert!(first["line"].as_u64().unwrap() >= 1);
        assert!(first["score"].as_f64().unwrap() > 0.2);
    }

    // Re-indexing unchanged files embeds nothing.
    let out = shoal(&["index", samples.to_str().unwrap(), "--index", idx], b"");
    assert!(stderr(&out).contains("5 unchanged"), "{}", stderr(&out));

    let out = shoal(
        &[
            "search",
            "x",
            "--index",
            dir.path().join("none.bin").to_str().unwrap(),
        ],
        b"",
    );
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no index at"));
}
