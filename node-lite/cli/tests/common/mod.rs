//! Shared test helpers: where the model is, the golden file.
#![allow(dead_code)]

use std::path::PathBuf;

pub(crate) mod circle;

/// The SmolLM2 GGUF: `$SHOAL_LLM_GGUF`, else where scripts/setup puts it.
pub(crate) fn gguf() -> PathBuf {
    let p = std::env::var_os("SHOAL_LLM_GGUF")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            model_dir()
                .parent()
                .and_then(|p| p.parent())
                .map(|p| p.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf"))
                .unwrap_or_default()
        });
    assert!(p.exists(), "{} missing — run scripts/setup", p.display());
    p
}

/// The imported model (scripts/setup + the test script put it there).
pub(crate) fn model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_MODEL_DIR") {
        return PathBuf::from(d);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home.join(".cache"))
        .join("shoal/models/all-minilm-l6-v2")
}

pub(crate) fn variant_dir(variant: &str) -> PathBuf {
    let d = model_dir().join(variant);
    assert!(
        d.join("manifest.json").exists(),
        "model not found at {} — run scripts/test (or scripts/setup and `shoal-node import`)",
        d.display()
    );
    d
}

/// The directory `scripts/setup` unpacks the Hugging Face files into.
pub(crate) fn hf_dir() -> PathBuf {
    model_dir()
        .parent()
        .and_then(|p| p.parent())
        .map(|p| p.join("hf/all-minilm-l6-v2"))
        .unwrap_or_default()
}

#[derive(serde::Deserialize)]
pub(crate) struct Golden {
    pub producer: String,
    pub items: Vec<GoldenItem>,
}

#[derive(serde::Deserialize)]
pub(crate) struct GoldenItem {
    pub text: String,
    pub vector: Vec<f32>,
}

pub(crate) fn golden() -> Golden {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../model/tests/data/golden.json");
    let bytes = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_slice(&bytes).expect("golden.json parses")
}
