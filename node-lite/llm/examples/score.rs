//! Engine output for cross-checks against another implementation (e.g. llama.cpp on a GGUF
//! variant): reads a JSON list of prompts (token-id lists) on stdin, writes one JSON line per
//! prompt: the first step's logits and `n` greedy tokens.
//!   cargo run --release -p shoal-llm --example score -- MODEL.gguf [N] < prompts.json

use std::io::Read;

use shoal_llm::{Engine, Logits};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let Some(path) = args.get(1) else {
        eprintln!("usage: score MODEL.gguf [N] < prompts.json");
        std::process::exit(2);
    };
    let n: usize = args.get(2).map_or(Ok(16), |v| v.parse())?;
    let engine = Engine::from_gguf(&std::fs::read(path)?, 1)?;
    let mut input = String::new();
    std::io::stdin().read_to_string(&mut input)?;
    let prompts: Vec<Vec<u32>> = serde_json::from_str(&input)?;
    for p in prompts {
        let mut s = engine.model.session();
        let mut logits = engine.model.forward(&mut s, &p, Logits::Last)?;
        let first = logits.clone();
        let mut greedy = Vec::new();
        for _ in 0..n {
            let id = shoal_llm::sample::argmax(&logits);
            greedy.push(id);
            logits = engine.model.forward(&mut s, &[id], Logits::Last)?;
        }
        println!(
            "{}",
            serde_json::json!({ "logits": first, "greedy": greedy })
        );
    }
    Ok(())
}
