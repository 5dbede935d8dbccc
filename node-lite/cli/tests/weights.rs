//! Weight delivery: the same verification for a directory and a URL; corrupt or truncated
//! files refused with a clear error; the importer is deterministic.

mod common;

use node_lite::weights::WeightsError;
use node_lite::weights::source::{load_dir, load_url};
use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

#[test]
fn truncated_or_flipped_chunk_is_refused_with_its_name() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("f16");
    copy_dir(&common::variant_dir("f16"), &dir);
    load_dir(&dir).expect("pristine copy loads");

    let chunk = dir.join("weights.003");
    let mut bytes = std::fs::read(&chunk).unwrap();
    std::fs::write(&chunk, &bytes[..bytes.len() / 2]).unwrap();
    let err = load_dir(&dir).unwrap_err();
    assert!(matches!(err, WeightsError::SizeMismatch { .. }), "{err}");
    assert!(err.to_string().contains("weights.003"), "{err}");

    bytes[1000] ^= 1;
    std::fs::write(&chunk, &bytes).unwrap();
    let err = load_dir(&dir).unwrap_err();
    assert!(matches!(err, WeightsError::HashMismatch { .. }), "{err}");

    std::fs::remove_file(&chunk).unwrap();
    assert!(matches!(
        load_dir(&dir).unwrap_err(),
        WeightsError::Io { .. }
    ));
}

/// A tiny HTTP/1.0 file server on 127.0.0.1 that can be told to cut one file short.
fn serve(dir: PathBuf, truncate: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            if BufReader::new(&stream).read_line(&mut line).is_err() {
                continue;
            }
            let name = line
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/');
            let body = std::fs::read(dir.join(name)).ok();
            let _ = match body {
                Some(mut b) => {
                    if truncate == Some(name) {
                        b.truncate(b.len() - 10);
                    }
                    stream
                        .write_all(
                            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", b.len())
                                .as_bytes(),
                        )
                        .and_then(|_| stream.write_all(&b))
                }
                None => stream.write_all(b"HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n"),
            };
        }
    });
    format!("http://{addr}")
}

#[test]
fn url_loading_goes_through_the_same_verification() {
    let dir = common::variant_dir("f16");
    let from_disk = load_dir(&dir).unwrap();
    let from_url = load_url(&serve(dir.clone(), None)).expect("loads over HTTP");
    assert_eq!(from_disk.record, from_url.record);
    assert_eq!(from_disk.manifest, from_url.manifest);

    let err = load_url(&serve(dir, Some("weights.002"))).unwrap_err();
    assert!(err.to_string().contains("weights.002"), "{err}");

    let err = load_url(&serve(PathBuf::from("/nonexistent"), None)).unwrap_err();
    assert!(matches!(err, WeightsError::Fetch { .. }), "{err}");
}

#[test]
fn fresh_import_gives_the_same_model_as_setup() {
    // burnpack records carry random parameter ids, so compare what matters: the vectors.
    let hf = common::hf_dir();
    assert!(
        hf.join("model.safetensors").exists(),
        "run scripts/setup first"
    );
    let tmp = tempfile::tempdir().unwrap();
    let manifests = node_lite::model::import::import_all(
        &hf.join("model.safetensors"),
        &hf.join("tokenizer.json"),
        tmp.path(),
    )
    .unwrap();
    assert_eq!(manifests.len(), 2);
    let texts = ["The cat sits outside", "Ünïcödé 東京 42"];
    for m in manifests {
        let embed = |dir: &Path| {
            let w = load_dir(dir).unwrap();
            node_lite::model::Embedder::new(&w, burn::prelude::Device::flex())
                .unwrap()
                .embed(&texts)
                .unwrap()
        };
        let fresh = embed(&tmp.path().join(m.variant.as_str()));
        let installed = embed(&common::variant_dir(m.variant.as_str()));
        assert_eq!(fresh, installed, "{} import not reproducible", m.variant);
    }
    // f16 is half the download.
    let f32 = load_dir(&common::variant_dir("f32"))
        .unwrap()
        .manifest
        .total_size;
    let f16 = load_dir(&common::variant_dir("f16"))
        .unwrap()
        .manifest
        .total_size;
    assert!(f16 * 2 <= f32 + 1024 * 1024, "f16 {f16} vs f32 {f32}");
}

#[test]
fn importer_refuses_a_file_that_is_not_a_bert_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let bogus = tmp.path().join("model.safetensors");
    std::fs::write(&bogus, b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    let tok = common::hf_dir().join("tokenizer.json");
    let err =
        node_lite::model::import::import_all(&bogus, &tok, &tmp.path().join("out")).unwrap_err();
    assert!(err.to_string().contains("model.safetensors"), "{err}");
    std::fs::write(&bogus, b"garbage").unwrap();
    assert!(node_lite::model::import::import_all(&bogus, &tok, &tmp.path().join("out")).is_err());
}
