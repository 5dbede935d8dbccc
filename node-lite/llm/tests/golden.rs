//! SmolLM2-135M-Instruct (Q4_1 GGUF) against an independent reference: llama.cpp, through
//! llama-cpp-python (`scripts/llm_golden.py` made `tests/data/golden.json`; the chat
//! templates there were rendered with Python's jinja2). Prompt token ids must be equal;
//! greedy continuations equal for 32 tokens except after a step where the reference's top-2
//! margin is below [`NEAR_TIE`]; the first step's logits agree to [`MIN_COSINE`].

use std::sync::OnceLock;

use serde_json::Value;
use shoal_llm::{Engine, Logits, Message};

mod support;
use support::{cosine, gguf_bytes, golden, ids, llama_cpp_first_logits};

/// A reference top-2 logit margin below this is a legitimate near-tie: two engines that round
/// differently (summation order, RoPE angles, f16 cache details) may pick either token, and
/// the continuations diverge from there. Measured: every divergence came after a margin of
/// 0.26–0.30 (logits span ≈ 25 here); 0.5 is 2 % of that span.
const NEAR_TIE: f64 = 0.5;
/// Cosine between our first-step logits and llama.cpp's.
const MIN_COSINE: f64 = 0.999;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::from_gguf(gguf_bytes(), 2).expect("load SmolLM2"))
}

fn messages(v: &Value) -> Vec<Message> {
    serde_json::from_value(v.clone()).unwrap()
}

#[test]
fn chat_template_renders_exactly_like_jinja2() {
    let g = golden();
    for c in g["chats"].as_array().unwrap() {
        let got = engine()
            .template
            .render(&messages(&c["messages"]), true)
            .unwrap();
        assert_eq!(got, c["rendered"].as_str().unwrap());
    }
}

#[test]
fn prompt_token_ids_equal_llama_cpp() {
    let g = golden();
    let mut n = 0;
    for c in g["chats"].as_array().unwrap() {
        let got = engine().prompt_tokens(&messages(&c["messages"])).unwrap();
        assert_eq!(got, ids(&c["prompt_tokens"]), "prompt {:?}", c["messages"]);
        n += got.len();
    }
    assert!(
        n > 1000,
        "the golden set holds a long prompt ({n} tokens in all)"
    );
}

#[test]
fn raw_tokenization_equals_llama_cpp() {
    let g = golden();
    for t in g["tokenize"].as_array().unwrap() {
        let text = t["text"].as_str().unwrap();
        let special = t["special"].as_bool().unwrap_or(false);
        let got = engine().tokenizer.encode(text, special).unwrap();
        assert_eq!(got, ids(&t["ids"]), "{text:?} (special: {special})");
        if !special {
            assert_eq!(engine().tokenizer.decode(&got).unwrap(), text, "round trip");
        }
    }
}

#[test]
fn greedy_continuations_equal_llama_cpp_up_to_near_ties() {
    let g = golden();
    let e = engine();
    let mut compared = 0;
    let mut near_ties = 0;
    let (mut worst_delta, mut sum_delta, mut n_delta) = (0f64, 0f64, 0usize);
    for c in g["chats"].as_array().unwrap() {
        let prompt = ids(&c["prompt_tokens"]);
        let want = ids(&c["greedy"]);
        let margins: Vec<f64> = c["margins"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m.as_f64().unwrap())
            .collect();
        let mut s = e.model.session();
        let mut logits = e.model.forward(&mut s, &prompt, Logits::Last).unwrap();
        for (i, &w) in want.iter().enumerate() {
            let got = shoal_llm::sample::argmax(&logits);
            for pair in c["top5"][i].as_array().unwrap() {
                let (id, l) = (
                    pair[0].as_u64().unwrap() as usize,
                    pair[1].as_f64().unwrap(),
                );
                let d = (f64::from(logits[id]) - l).abs();
                worst_delta = worst_delta.max(d);
                sum_delta += d;
                n_delta += 1;
            }
            if got != w {
                assert!(
                    margins[i] < NEAR_TIE,
                    "prompt {:?}: step {i}: got {got}, llama.cpp {w} with margin {} (≥ {NEAR_TIE})",
                    c["messages"],
                    margins[i]
                );
                near_ties += 1;
                break; // the sequences legitimately diverge after a near-tie
            }
            compared += 1;
            if i + 1 < want.len() {
                logits = e.model.forward(&mut s, &[w], Logits::Last).unwrap();
            }
        }
    }
    eprintln!(
        "{compared} greedy tokens equal to llama.cpp's, {near_ties} prompts diverged after a near-tie; \
         |Δ logit| on the reference's top 5: mean {:.3}, max {worst_delta:.3}",
        sum_delta / n_delta.max(1) as f64
    );
    assert!(compared >= 20 * 16, "too few tokens compared: {compared}");
}

#[test]
fn first_step_logits_agree_by_cosine() {
    let g = golden();
    let e = engine();
    for (chat, want) in llama_cpp_first_logits() {
        let mut s = e.model.session();
        let got = e
            .model
            .forward(
                &mut s,
                &ids(&g["chats"][chat]["prompt_tokens"]),
                Logits::Last,
            )
            .unwrap();
        let cos = cosine(&got, &want);
        eprintln!("chat {chat}: logits cosine {cos:.6}");
        assert!(cos >= MIN_COSINE, "cosine {cos} < {MIN_COSINE}");
    }
}

#[test]
fn prefill_in_blocks_equals_prefill_at_once_and_scoring_all_positions() {
    let e = engine();
    let prompt = e
        .prompt_tokens(&[Message::new("user", "Count from one to ten, please.")])
        .unwrap();
    let mut a = e.model.session();
    let la = e.model.forward(&mut a, &prompt, Logits::Last).unwrap();
    let mut b = e.model.session();
    let mut lb = Vec::new();
    for ch in prompt.chunks(7) {
        lb = e.model.forward(&mut b, ch, Logits::Last).unwrap();
    }
    let mut c = e.model.session();
    let all = e.model.forward(&mut c, &prompt, Logits::All).unwrap();
    let v = e.model.cfg.vocab;
    let lc = &all[(prompt.len() - 1) * v..];
    let close = |x: &[f32], y: &[f32]| {
        x.iter()
            .zip(y)
            .all(|(p, q)| (p - q).abs() < 1e-3 * (1.0 + p.abs()))
    };
    assert!(close(&la, &lb), "block prefill differs");
    assert!(
        close(&la, lc),
        "all-positions logits differ at the last position"
    );
    assert_eq!(
        shoal_llm::sample::argmax(&la),
        shoal_llm::sample::argmax(&lb)
    );
}
