//! What the chat engine's model tests share (this crate's `golden` and `ranked` tests, and the
//! GPU engine's tests through `#[path]`): the SmolLM2 GGUF that `scripts/setup` fetches, and
//! llama.cpp's reference in `tests/data` (`golden.json`: prompt ids, greedy tokens and top-2
//! margins per chat; `golden_logits.bin`: first-step logits for some chats).
// Each test binary uses its own subset.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

const DATA: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../llm/tests/data");

/// `$SHOAL_LLM_GGUF`, else the file setup puts in the cache (`$SHOAL_CACHE`, default
/// `~/.cache/shoal`).
pub(crate) fn gguf_path() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_LLM_GGUF") {
        return PathBuf::from(p);
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_default();
    let cache =
        std::env::var_os("SHOAL_CACHE").map_or_else(|| home.join(".cache/shoal"), PathBuf::from);
    cache.join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// The GGUF's bytes, read once per test binary.
pub(crate) fn gguf_bytes() -> &'static [u8] {
    static B: OnceLock<Vec<u8>> = OnceLock::new();
    B.get_or_init(|| {
        let p = gguf_path();
        std::fs::read(&p)
            .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup fetches the model)", p.display()))
    })
}

/// `golden.json`, parsed once.
pub(crate) fn golden() -> &'static Value {
    static G: OnceLock<Value> = OnceLock::new();
    G.get_or_init(|| {
        let raw = std::fs::read(format!("{DATA}/golden.json")).expect("golden.json");
        serde_json::from_slice(&raw).expect("golden.json parses")
    })
}

/// A JSON array of token ids.
pub(crate) fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .expect("an array of ids")
        .iter()
        .map(|x| u32::try_from(x.as_u64().expect("an id")).expect("a u32 id"))
        .collect()
}

/// Chat `chat`'s prompt token ids.
pub(crate) fn prompt(chat: usize) -> Vec<u32> {
    ids(&golden()["chats"][chat]["prompt_tokens"])
}

/// llama.cpp's first-step logits: (chat, logits over the vocabulary) per row of the file.
pub(crate) fn llama_cpp_first_logits() -> Vec<(usize, Vec<f32>)> {
    let g = golden();
    let f = &g["logits"];
    let file = f["file"].as_str().expect("logits file");
    let raw = std::fs::read(format!("{DATA}/{file}")).expect("golden logits");
    let vocab = usize::try_from(f["vocab"].as_u64().expect("vocab")).expect("vocab");
    f["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| {
            let off =
                usize::try_from(r["offset_floats"].as_u64().expect("offset")).expect("offset") * 4;
            let row = raw[off..off + vocab * 4]
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            let chat = usize::try_from(r["chat"].as_u64().expect("chat")).expect("chat");
            (chat, row)
        })
        .collect()
}

/// Cosine similarity, accumulated in f64.
pub(crate) fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut ab, mut aa, mut bb) = (0f64, 0f64, 0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        ab += x * y;
        aa += x * x;
        bb += y * y;
    }
    ab / (aa.sqrt() * bb.sqrt())
}
