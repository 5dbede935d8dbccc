//! The browser's two-core decode splits every forward pass between instances of the model
//! that swap their parts ([`shoal_llm::Exchange`]). Here the instances are threads with their
//! own engine, the exchange an in-process mailbox: every split (2 and 3 ranks, prefill in
//! blocks and decode) must give bit-for-bit the logits and tokens of one instance alone.

use std::path::PathBuf;
use std::sync::{Arc, Barrier, Mutex};

use shoal_llm::{Engine, Exchange, GenParams, LlmError, Message, Step};

fn gguf() -> Vec<u8> {
    let p = std::env::var_os("SHOAL_LLM_GGUF").map_or_else(
        || {
            let home = std::env::var_os("HOME")
                .map(PathBuf::from)
                .unwrap_or_default();
            home.join(".cache/shoal/gguf/SmolLM2-135M-Instruct.Q4_1.gguf")
        },
        PathBuf::from,
    );
    std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/setup fetches the model)", p.display()))
}

/// Ranks meet at a barrier; each posts its part in a slot and reads the others'.
struct Mailbox {
    rank: usize,
    n: usize,
    slots: Arc<Mutex<Vec<Vec<f32>>>>,
    barrier: Arc<Barrier>,
    calls: usize,
}

impl Exchange for Mailbox {
    fn ranks(&self) -> (usize, usize) {
        (self.rank, self.n)
    }

    fn exchange(
        &mut self,
        parts: &[usize],
        mine: &[f32],
        others: &mut [f32],
    ) -> Result<(), LlmError> {
        self.calls += 1;
        assert_eq!(parts.len(), self.n);
        assert_eq!(parts[self.rank], mine.len());
        self.slots.lock().unwrap()[self.rank] = mine.to_vec();
        self.barrier.wait();
        {
            let slots = self.slots.lock().unwrap();
            let mut off = 0;
            for r in (0..self.n).filter(|&r| r != self.rank) {
                let part = &slots[r];
                assert_eq!(
                    part.len(),
                    parts[r],
                    "rank {r}'s part has the agreed length"
                );
                others[off..off + part.len()].copy_from_slice(part);
                off += part.len();
            }
            assert_eq!(off, others.len(), "the parts' sizes agree between ranks");
        }
        self.barrier.wait();
        Ok(())
    }
}

/// Generate with `n` ranks (one thread and engine each); returns rank 0's tokens and the
/// logits of its first decode step.
fn generate(
    bytes: &Arc<Vec<u8>>,
    n: usize,
    prompt: &[u32],
    params: &GenParams,
) -> (Vec<u32>, usize) {
    let slots = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let barrier = Arc::new(Barrier::new(n));
    let handles: Vec<_> = (0..n)
        .map(|rank| {
            let (bytes, slots, barrier) = (bytes.clone(), slots.clone(), barrier.clone());
            let (prompt, params) = (prompt.to_vec(), params.clone());
            std::thread::spawn(move || {
                let e = Engine::from_gguf(&bytes, 1).unwrap();
                let mut mb = Mailbox {
                    rank,
                    n,
                    slots,
                    barrier,
                    calls: 0,
                };
                let mut s = e.model.session();
                let now = || 0.0;
                let mut g = e.start(&mut s, &prompt, &params, &now).unwrap();
                loop {
                    if let Step::Done(_) = g.step_ranked(&e, &mut s, &now, Some(&mut mb)).unwrap() {
                        break;
                    }
                }
                (g.finish(&now).tokens, mb.calls)
            })
        })
        .collect();
    let results: Vec<(Vec<u32>, usize)> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    for r in &results[1..] {
        assert_eq!(r.0, results[0].0, "every rank samples the same tokens");
    }
    results[0].clone()
}

#[test]
fn split_forward_passes_equal_one_instance_bit_for_bit() {
    let bytes = Arc::new(gguf());
    let e = Engine::from_gguf(&bytes, 1).unwrap();
    let prompt = e
        .prompt_tokens(&[Message {
            role: "user".into(),
            content: "List three colours of the rainbow, then count to 12.".into(),
        }])
        .unwrap();
    // A small prefill block, so several prefill sections cross the exchange too.
    let mut params = GenParams {
        max_tokens: 12,
        prefill_block: 16,
        ..GenParams::default()
    };
    // Greedy, then seeded sampling (the same draws on every rank).
    for temperature in [0.0, 0.8] {
        params.sampling.temperature = temperature;
        params.sampling.seed = 7;
        let mut s = e.model.session();
        let one = e
            .generate(&mut s, &prompt, &params, &|| 0.0, |_| {
                shoal_llm::Control::Continue
            })
            .unwrap();
        for n in [2, 3] {
            let (tokens, calls) = generate(&bytes, n, &prompt, &params);
            assert_eq!(tokens, one.tokens, "{n} ranks, temperature {temperature}");
            assert!(
                calls > 30 * 5,
                "every layer's sections were exchanged ({calls} calls)"
            );
        }
    }
    // Logits too, not only the argmax: one block of the prompt through 2 ranks.
    let mut s1 = e.model.session();
    let want = e
        .model
        .forward(&mut s1, &prompt, shoal_llm::Logits::All)
        .unwrap();
    let slots = Arc::new(Mutex::new(vec![Vec::new(); 2]));
    let barrier = Arc::new(Barrier::new(2));
    let got: Vec<Vec<f32>> = (0..2)
        .map(|rank| {
            let (bytes, slots, barrier, prompt) = (
                bytes.clone(),
                slots.clone(),
                barrier.clone(),
                prompt.clone(),
            );
            std::thread::spawn(move || {
                let e = Engine::from_gguf(&bytes, 1).unwrap();
                let mut mb = Mailbox {
                    rank,
                    n: 2,
                    slots,
                    barrier,
                    calls: 0,
                };
                let mut s = e.model.session();
                e.model
                    .forward_ranked(&mut s, &prompt, shoal_llm::Logits::All, Some(&mut mb))
                    .unwrap()
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect();
    assert!(
        got[0] == want && got[1] == want,
        "logits of every position, bit for bit"
    );
}

/// A peer that stops answering part-way through a block: the exchange fails on its `fail_at`th
/// call (before that it plays rank 1 by computing nothing useful — zeros).
struct Failing {
    calls: usize,
    fail_at: usize,
}

impl Exchange for Failing {
    fn ranks(&self) -> (usize, usize) {
        (0, 2)
    }

    fn exchange(
        &mut self,
        _parts: &[usize],
        _mine: &[f32],
        others: &mut [f32],
    ) -> Result<(), LlmError> {
        self.calls += 1;
        if self.calls >= self.fail_at {
            return Err(LlmError::Peer("the other worker stopped".into()));
        }
        others.fill(0.0);
        Ok(())
    }
}

#[test]
fn a_peer_failing_mid_block_leaves_the_session_as_it_was() {
    let bytes = gguf();
    let e = Engine::from_gguf(&bytes, 1).unwrap();
    let prompt = e
        .prompt_tokens(&[Message {
            role: "user".into(),
            content: "Name a colour.".into(),
        }])
        .unwrap();
    let (head, tail) = prompt.split_at(prompt.len() / 2);
    // Reference: the whole prompt through one instance, in two blocks.
    let mut s = e.model.session();
    e.model
        .forward(&mut s, head, shoal_llm::Logits::Last)
        .unwrap();
    let want = e
        .model
        .forward(&mut s, tail, shoal_llm::Logits::Last)
        .unwrap();
    // The same, with a failed ranked pass of the second block in between (layer 3 or so).
    let mut s = e.model.session();
    e.model
        .forward(&mut s, head, shoal_llm::Logits::Last)
        .unwrap();
    let (pos, cached) = (s.pos, s.tokens.clone());
    let mut bad = Failing {
        calls: 0,
        fail_at: 12,
    };
    let err = e
        .model
        .forward_ranked(&mut s, tail, shoal_llm::Logits::Last, Some(&mut bad))
        .unwrap_err();
    assert!(matches!(err, LlmError::Peer(_)), "{err}");
    assert_eq!(
        (s.pos, &s.tokens),
        (pos, &cached),
        "nothing of the block was kept"
    );
    let got = e
        .model
        .forward(&mut s, tail, shoal_llm::Logits::Last)
        .unwrap();
    assert!(
        got == want,
        "the block again, alone: the same logits bit for bit"
    );
}
