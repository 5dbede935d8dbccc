//! Teacher-forced checking of answers (`shoal_llm::verify`) on SmolLM2: the engine's own
//! answers pass (greedy and sampled, fresh cache or a cached prefix), a substituted token is
//! caught at its position.

use std::sync::OnceLock;

use shoal_llm::verify::{TOLERANCE, Verdict, check_answer, check_answer_from};
use shoal_llm::{Engine, GenParams, Message, Sampling};

mod support;
use support::gguf_bytes;

fn engine() -> &'static Engine {
    static E: OnceLock<Engine> = OnceLock::new();
    E.get_or_init(|| Engine::from_gguf(gguf_bytes(), 2).expect("load SmolLM2"))
}

fn answer(prompt: &[u32], sampling: Sampling, max_tokens: usize) -> Vec<u32> {
    let e = engine();
    let mut s = e.model.session();
    let params = GenParams {
        max_tokens,
        sampling,
        ..GenParams::default()
    };
    let g = e
        .generate(&mut s, prompt, &params, &|| 0.0, |_| {
            shoal_llm::Control::Continue
        })
        .unwrap();
    g.tokens
}

fn prompt(text: &str) -> Vec<u32> {
    engine()
        .prompt_tokens(&[Message::new("user", text)])
        .unwrap()
}

#[test]
fn own_greedy_and_sampled_answers_pass_and_a_substituted_token_is_caught() {
    let e = engine();
    let p = prompt("Name three colours of the rainbow and say one thing about each.");
    let greedy = answer(&p, Sampling::default(), 48);
    assert!(greedy.len() >= 20, "answer too short: {}", greedy.len());
    let mut s = e.model.session();
    let v = check_answer(
        &e.model,
        &mut s,
        &p,
        &greedy,
        &Sampling::default(),
        TOLERANCE,
    )
    .unwrap();
    assert!(
        matches!(v, Verdict::Accepted { checked, .. } if checked == greedy.len()),
        "{v:?}"
    );
    assert_eq!(
        s.pos,
        p.len() + greedy.len(),
        "the session caches prompt + answer"
    );

    // Again on the same session: the prompt is reused from the cache.
    let v = check_answer(
        &e.model,
        &mut s,
        &p,
        &greedy,
        &Sampling::default(),
        TOLERANCE,
    )
    .unwrap();
    assert!(v.accepted(), "{v:?}");

    // A token replaced by one far below the top is caught exactly there.
    let at = 17;
    let mut bad = greedy.clone();
    bad[at] = e.tokenizer.encode(" zebra", false).unwrap()[0];
    assert_ne!(bad[at], greedy[at]);
    let v = check_answer(&e.model, &mut s, &p, &bad, &Sampling::default(), TOLERANCE).unwrap();
    match v {
        Verdict::Rejected {
            position,
            token,
            expected,
            shortfall,
        } => {
            assert_eq!(position, at);
            assert_eq!(token, bad[at]);
            assert_eq!(expected, greedy[at]);
            assert!(shortfall > TOLERANCE);
        }
        other => panic!("tampered answer accepted: {other:?}"),
    }

    // In pieces, as an answer streams: the cache carries each piece to the next.
    let mut s = e.model.session();
    let greedy_s = Sampling::default();
    let v =
        check_answer_from(&e.model, &mut s, &p, &greedy[..12], 0, &greedy_s, TOLERANCE).unwrap();
    assert!(matches!(v, Verdict::Accepted { checked: 12, .. }), "{v:?}");
    assert_eq!(s.pos, p.len() + 12);
    let v = check_answer_from(&e.model, &mut s, &p, &greedy, 12, &greedy_s, TOLERANCE).unwrap();
    assert!(
        matches!(v, Verdict::Accepted { checked, .. } if checked == greedy.len() - 12),
        "{v:?}"
    );
    let v = check_answer_from(&e.model, &mut s, &p, &bad, 12, &greedy_s, TOLERANCE).unwrap();
    assert!(
        matches!(v, Verdict::Rejected { position, .. } if position == at),
        "{v:?}"
    );
    assert!(
        check_answer_from(
            &e.model,
            &mut s,
            &p,
            &bad,
            bad.len() + 1,
            &greedy_s,
            TOLERANCE
        )
        .is_err()
    );

    // Sampled answers pass under their own settings, for several seeds.
    for seed in 1..=3 {
        let sampling = Sampling {
            temperature: 0.8,
            top_p: 0.9,
            top_k: 40,
            seed,
            ..Sampling::default()
        };
        let a = answer(&p, sampling.clone(), 32);
        let mut s = e.model.session();
        let v = check_answer(&e.model, &mut s, &p, &a, &sampling, TOLERANCE).unwrap();
        assert!(v.accepted(), "seed {seed}: {v:?}");
    }
}
