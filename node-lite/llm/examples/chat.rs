//! One answer from a GGUF, straight from the engine (no weights manifest, no CLI):
//!   cargo run --release -p shoal-llm --example chat -- MODEL.gguf "question" [temperature [repeat-penalty]]
//! `shoal-node chat` is the real command; this is for poking at the engine.

use std::io::Write;

use shoal_llm::{Control, Engine, GenParams, Message};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(path), Some(question)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: chat MODEL.gguf QUESTION [TEMPERATURE [REPEAT_PENALTY]]");
        std::process::exit(2);
    };
    let engine = Engine::from_gguf(&std::fs::read(path)?, 1)?;
    let mut params = GenParams {
        max_tokens: 96,
        ..GenParams::default()
    };
    if let Some(t) = args.get(3) {
        params.sampling.temperature = t.parse()?;
    }
    if let Some(p) = args.get(4) {
        params.sampling.repeat_penalty = p.parse()?;
    }
    let prompt = engine.prompt_tokens(&[Message {
        role: "user".into(),
        content: question.clone(),
    }])?;
    let t0 = std::time::Instant::now();
    let now = move || t0.elapsed().as_secs_f64() * 1000.0;
    let mut session = engine.model.session();
    let g = engine.generate(&mut session, &prompt, &params, &now, |ev| {
        print!("{}", ev.text);
        let _ = std::io::stdout().flush();
        Control::Continue
    })?;
    eprintln!(
        "\n[{} prompt tokens at {:.0} tok/s, {} generated at {:.1} tok/s, kernel {}]",
        g.prompt_tokens.len(),
        g.prefill_tok_s,
        g.tokens.len(),
        g.decode_tok_s,
        engine.model.tier().name()
    );
    Ok(())
}
