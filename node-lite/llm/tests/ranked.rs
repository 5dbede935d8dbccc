//! The browser's two-core decode splits every forward pass between instances of the model
//! that swap their parts ([`shoal_llm::Exchange`]). Here the instances are threads with their
//! own engine, the exchange an in-process mailbox: every split (2 and 3 ranks, prefill in
//! blocks and decode) must give bit-for-bit the logits and tokens of one instance alone.

use std::sync::{Arc, Barrier, Mutex};

use shoal_llm::{Engine, Exchange, GenParams, LlmError, Message, Step};

mod support;
use support::{cosine, gguf_bytes, llama_cpp_first_logits, prompt};

fn gguf() -> Vec<u8> {
    gguf_bytes().to_vec()
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

/// `job(engine, mailbox)` on `n` ranks, one thread and engine each (`tp`: tensor-parallel,
/// each engine [`shoal_llm::Model::set_split`] first); every rank's result, in rank order.
fn on_ranks<T: Send + 'static>(
    bytes: &Arc<Vec<u8>>,
    n: usize,
    tp: bool,
    job: impl Fn(&Engine, &mut Mailbox) -> T + Send + Sync + 'static,
) -> Vec<T> {
    let slots = Arc::new(Mutex::new(vec![Vec::new(); n]));
    let barrier = Arc::new(Barrier::new(n));
    let job = Arc::new(job);
    (0..n)
        .map(|rank| {
            let (bytes, slots, barrier, job) =
                (bytes.clone(), slots.clone(), barrier.clone(), job.clone());
            std::thread::spawn(move || {
                let mut e = Engine::from_gguf(&bytes, 1).unwrap();
                if tp {
                    assert!(e.model.set_split(rank, n), "SmolLM2 splits {n} ways");
                }
                let mut mb = Mailbox {
                    rank,
                    n,
                    slots,
                    barrier,
                    calls: 0,
                };
                job(&e, &mut mb)
            })
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|h| h.join().unwrap())
        .collect()
}

/// Generate with `n` ranks; returns rank 0's tokens and exchange calls.
fn generate(
    bytes: &Arc<Vec<u8>>,
    n: usize,
    prompt: &[u32],
    params: &GenParams,
    tp: bool,
) -> (Vec<u32>, usize) {
    let (prompt, params) = (prompt.to_vec(), params.clone());
    let results = on_ranks(bytes, n, tp, move |e, mb| {
        let mut s = e.model.session();
        let now = || 0.0;
        let mut g = e.start(&mut s, &prompt, &params, &now).unwrap();
        while !matches!(
            g.step_ranked(e, &mut s, &now, Some(&mut *mb)).unwrap(),
            Step::Done(_)
        ) {}
        (g.finish(&now).tokens, mb.calls)
    });
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
            let (tokens, calls) = generate(&bytes, n, &prompt, &params, false);
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

/// Every rank's logits for one forward pass of `tokens` after `prefix` (`tp`: tensor-parallel),
/// and the exchange calls the pass made.
fn ranked_logits(
    bytes: &Arc<Vec<u8>>,
    n: usize,
    prefix: &[u32],
    tokens: &[u32],
    tp: bool,
) -> Vec<(Vec<f32>, usize)> {
    let (prefix, tokens) = (prefix.to_vec(), tokens.to_vec());
    on_ranks(bytes, n, tp, move |e, mb| {
        let mut s = e.model.session();
        if !prefix.is_empty() {
            e.model
                .forward_ranked(&mut s, &prefix, shoal_llm::Logits::Last, Some(&mut *mb))
                .unwrap();
        }
        mb.calls = 0;
        let l = e
            .model
            .forward_ranked(&mut s, &tokens, shoal_llm::Logits::All, Some(&mut *mb))
            .unwrap();
        (l, mb.calls)
    })
}

/// The indices of the largest and second-largest values.
fn top2(v: &[f32]) -> (usize, usize) {
    let (mut a, mut b) = (0, 1);
    if v[b] > v[a] {
        std::mem::swap(&mut a, &mut b);
    }
    for (i, &x) in v.iter().enumerate().skip(2) {
        if x > v[a] {
            b = a;
            a = i;
        } else if x > v[b] {
            b = i;
        }
    }
    (a, b)
}

/// Tensor parallelism (heads and FFN units per rank, `wo` and `down` split by their inputs)
/// adds each layer's partial sums in another order than one instance does, so its logits
/// equal one instance's to f32 rounding, not bit for bit; the ranks agree with each other
/// bit for bit (they add the parts in rank order), and a layer costs two exchanges.
#[test]
fn a_tensor_parallel_split_agrees_with_one_instance() {
    let bytes = Arc::new(gguf());
    let e = Engine::from_gguf(&bytes, 1).unwrap();
    let layers = e.model.cfg.n_layers;
    let prompt = e
        .prompt_tokens(&[Message {
            role: "user".into(),
            content: "List three colours of the rainbow, then count to 12.".into(),
        }])
        .unwrap();
    let (prefix, tail) = prompt.split_at(prompt.len() - 5);
    let mut s = e.model.session();
    e.model
        .forward(&mut s, prefix, shoal_llm::Logits::Last)
        .unwrap();
    let want = e
        .model
        .forward(&mut s, tail, shoal_llm::Logits::All)
        .unwrap();
    let vocab = e.model.cfg.vocab;
    for n in [2, 3] {
        let got = ranked_logits(&bytes, n, prefix, tail, true);
        for (rank, (l, calls)) in got.iter().enumerate() {
            assert_eq!(l, &got[0].0, "rank {rank} of {n}: the same bits as rank 0");
            assert_eq!(
                *calls,
                2 * layers + 1,
                "two exchanges a layer, one for the logits"
            );
        }
        // Rounding noise, amplified where it moves an activation across a quantization step:
        // the scalar kernels (another summation order, no split) differ from the SIMD ones by
        // as much (worst cosine 0.992 on this prompt).
        let mut sum = 0f64;
        for (t, (a, b)) in got[0].0.chunks(vocab).zip(want.chunks(vocab)).enumerate() {
            let c = cosine(a, b);
            sum += c;
            assert!(c > 0.99, "{n} ranks, token {t}: cosine {c}");
            let (top, second) = top2(b);
            if b[top] - b[second] > 0.5 {
                assert_eq!(top2(a).0, top, "{n} ranks, token {t}: a clear argmax kept");
            }
        }
        let mean = sum / tail.len() as f64;
        assert!(mean > 0.998, "{n} ranks: mean cosine {mean}");
    }
    // The all-gather split of the same pass: five exchanges a layer.
    let got = ranked_logits(&bytes, 2, prefix, tail, false);
    assert_eq!(got[0].0, want, "all-gather: bit for bit");
    assert_eq!(got[0].1, 5 * layers + 1);

    // Generation: every greedy token the split picks is one instance's argmax at that
    // position (teacher-forced), except at a near-tie (margin < 0.5, as in the golden test:
    // this prompt's first token is one, 0.10 apart).
    let params = GenParams {
        max_tokens: 24,
        prefill_block: 16,
        ..GenParams::default()
    };
    for n in [2, 3] {
        let (tokens, _) = generate(&bytes, n, &prompt, &params, true);
        assert!(tokens.len() >= 8, "{n} ranks: {tokens:?}");
        let mut forced = prompt.clone();
        forced.extend_from_slice(&tokens[..tokens.len() - 1]);
        let mut s = e.model.session();
        let all = e
            .model
            .forward(&mut s, &forced, shoal_llm::Logits::All)
            .unwrap();
        let mut ties = 0;
        for (i, &tok) in tokens.iter().enumerate() {
            let l = &all[(prompt.len() - 1 + i) * vocab..][..vocab];
            let (top, _) = top2(l);
            if tok != top as u32 {
                let margin = l[top] - l[tok as usize];
                assert!(
                    margin < 0.5,
                    "{n} ranks, token {i}: {tok} is {margin} below the argmax {top}"
                );
                ties += 1;
            }
        }
        assert!(ties <= 2, "{n} ranks: {ties} near-ties taken the other way");
    }
}

/// A tensor-parallel rank caches only its own heads' keys and values: its conversation
/// cannot continue on one instance (or another split) and says so; a failed pass keeps the
/// cache as it was, as on the all-gather split.
#[test]
fn a_tensor_parallel_cache_refuses_another_layout_and_survives_a_failed_pass() {
    let bytes = gguf();
    let mut e = Engine::from_gguf(&bytes, 1).unwrap();
    assert!(e.model.set_split(0, 2));
    assert_eq!(e.model.split(), Some((0, 2)));
    let prompt = e
        .prompt_tokens(&[Message {
            role: "user".into(),
            content: "Name a colour.".into(),
        }])
        .unwrap();
    let mut s = e.model.session();
    // A peer that answers zeros, then stops answering in the 5th exchange (layer 3).
    let mut peer = Failing {
        calls: 0,
        fail_at: 1000,
    };
    e.model
        .forward_ranked(&mut s, &prompt, shoal_llm::Logits::Last, Some(&mut peer))
        .unwrap();
    assert_eq!(peer.calls, 2 * e.model.cfg.n_layers + 1);
    let (pos, cached) = (s.pos, s.tokens.clone());
    let err = e
        .model
        .forward(&mut s, &[1], shoal_llm::Logits::Last)
        .unwrap_err();
    assert!(matches!(err, LlmError::CacheLayout { .. }), "{err}");
    assert!(
        err.to_string().contains("start the conversation again"),
        "{err}"
    );
    let mut peer = Failing {
        calls: 0,
        fail_at: 5,
    };
    let err = e
        .model
        .forward_ranked(&mut s, &[1], shoal_llm::Logits::Last, Some(&mut peer))
        .unwrap_err();
    assert!(matches!(err, LlmError::Peer(_)), "{err}");
    assert_eq!(
        (s.pos, &s.tokens),
        (pos, &cached),
        "nothing of the block was kept"
    );
    // A new conversation on one instance is fine; unsplit again, so is the whole model.
    let mut fresh = e.model.session();
    e.model
        .forward(&mut fresh, &prompt, shoal_llm::Logits::Last)
        .unwrap();
    assert!(!e.model.set_split(0, 1));
    assert_eq!(e.model.split(), None);
}

/// Split or not, the engine computes llama.cpp's logits: the first step of the golden chats
/// through 2 and 3 tensor-parallel ranks agrees with the reference about as closely as one
/// instance does. Chat 0 is the sensitive one (one instance 0.99958; 2 ranks 0.99794, 3 ranks
/// 0.99824; the GPU engine 0.99802), the others ≥ 0.9999.
#[test]
fn tensor_parallel_logits_agree_with_llama_cpp() {
    let bytes = Arc::new(gguf());
    let (mut sum, mut rows) = (0f64, 0);
    for (chat, want) in llama_cpp_first_logits() {
        let prompt = prompt(chat);
        let (head, last) = prompt.split_at(prompt.len() - 1);
        for n in [2, 3] {
            let got = ranked_logits(&bytes, n, head, last, true);
            let c = cosine(&got[0].0, &want);
            eprintln!("chat {chat}, {n} ranks: cosine {c:.6}");
            assert!(c >= 0.997, "chat {chat}, {n} ranks: cosine {c}");
            sum += c;
            rows += 1;
        }
    }
    let mean = sum / f64::from(rows);
    assert!(mean >= 0.999, "mean cosine {mean}");
}
