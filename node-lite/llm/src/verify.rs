//! Checking an answer another engine generated, by teacher forcing: run prompt + answer
//! through this engine's own model (one prefill, no decoding) and check every answer token
//! against the logits this model gives at its position.
//!
//! Two honest engines do not agree bit for bit (other kernels, GPU vs CPU, wasm vs native sum
//! in other orders), so a token passes when it is within [`TOLERANCE`] logits of what this
//! model would allow there:
//! - greedy (temperature 0): its (penalised) logit is at least the largest minus the tolerance
//!   — the argmax itself, or a near-tie that the other engine may legitimately have broken the
//!   other way;
//! - sampled: fewer than `top_k` tokens, and less than `top_p` + [`TOP_P_SLACK`] of the
//!   probability, lie more than the tolerance above it (after the penalty, at the temperature):
//!   it is a token this model could have sampled, give or take the tolerance.
//!
//! A tampered token is almost never that close to the top: the check rejects it at its
//! position, and the text up to there is still good.

use crate::LlmError;
use crate::model::{Logits, Model, Session};
use crate::sample::{Sampling, argmax, candidates_of, penalized};

/// Logit tolerance of the check. Measured on SmolLM2 (logits span ≈ 25): the SIMD kernel tiers
/// agree bit for bit; the scalar tier (f32 arithmetic where the SIMD tiers quantize) differs from
/// them by up to 0.82 in a logit, and an answer one generated lies up to 0.49 below the other's
/// top logit (3,600 teacher-forced tokens; against llama.cpp every greedy divergence followed a
/// margin of 0.26–0.30). 1.5 leaves three times that; a substituted token is typically several
/// logits below the top. What it allows a liar: only tokens within 1.5 of the top — plausible
/// ones.
pub const TOLERANCE: f32 = 1.5;

/// Answer tokens run through the model per forward call (bounds the `n × vocab` logits held
/// at once: 64 × 49,152 × 4 B = 12 MiB for SmolLM2; the prefill's own block size).
const BLOCK: usize = 64;

/// The outcome of [`check_answer`].
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every token is one this model allows there.
    Accepted {
        /// Tokens checked.
        checked: usize,
        /// Greedy tokens that were not this model's own first choice but within the tolerance.
        near_ties: usize,
    },
    /// The first token this model does not allow.
    Rejected {
        /// Its position in the answer (0-based); tokens before it passed.
        position: usize,
        /// The token the answer has there.
        token: u32,
        /// This model's first choice there.
        expected: u32,
        /// How far (in logits) the token is below the lowest one allowed (≥ the tolerance).
        shortfall: f32,
    },
}

impl Verdict {
    /// Whether every token passed.
    pub fn accepted(&self) -> bool {
        matches!(self, Verdict::Accepted { .. })
    }
}

/// Check one token against the logits of its position. `recent` = prompt + answer before it
/// (for the repetition penalty). `Ok(near_tie)` or `Err((expected, shortfall))`.
pub fn check_token(
    logits: &[f32],
    token: u32,
    sampling: &Sampling,
    recent: &[u32],
    tolerance: f32,
) -> Result<bool, (u32, f32)> {
    let l = penalized(logits, sampling, recent);
    let best = argmax(&l);
    let Some(&got) = l.get(token as usize).filter(|v| v.is_finite()) else {
        return Err((best, f32::INFINITY));
    };
    let top = l[best as usize];
    if sampling.temperature <= 0.0 {
        return if got >= top - tolerance {
            // A near-tie: not this model's own choice, within the tolerance.
            Ok(token != best)
        } else {
            Err((best, top - got))
        };
    }
    // Sampled: the token must be one this model could have sampled had its logits been
    // `tolerance` lower for the token (or higher for the others): fewer than `top_k` tokens,
    // and less than `top_p` (+ `TOP_P_SLACK`) of the probability, lie clearly above it. The
    // top-p cut is discontinuous (a token right at the edge of one engine's nucleus can sit
    // many logits below the other's last candidate), so it is judged by the mass above the
    // token, not by the other engine's set.
    let above = |v: f32| v > got + tolerance;
    let k = if sampling.top_k == 0 {
        l.len()
    } else {
        sampling.top_k.min(l.len())
    };
    let rank = l.iter().filter(|&&v| above(v)).count();
    if rank >= k {
        let floor = candidates_of(&l, sampling)
            .iter()
            .map(|&(t, _)| l[t as usize])
            .fold(f32::INFINITY, f32::min);
        return Err((best, (floor - got).max(tolerance)));
    }
    if sampling.top_p < 1.0 {
        // Probabilities over the top-k set at this temperature, as sampling normalises them.
        let mut sorted: Vec<f32> = l.clone();
        if k < sorted.len() {
            sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
            sorted.truncate(k);
        }
        let z: f64 = sorted
            .iter()
            .map(|&v| f64::from((v - top) / sampling.temperature).exp())
            .sum();
        let mass: f64 = sorted
            .iter()
            .filter(|&&v| above(v))
            .map(|&v| f64::from((v - top) / sampling.temperature).exp())
            .sum::<f64>()
            / z;
        if mass >= f64::from(sampling.top_p) + TOP_P_SLACK {
            return Err((best, top - got));
        }
    }
    Ok(false)
}

/// Probability mass by which an honest engine's top-p nucleus may exceed ours at its edge.
pub const TOP_P_SLACK: f64 = 0.05;

/// Check `answer` (token ids generated after `prompt`, the stop token included if there was
/// one) by teacher forcing in `session`: [`check_answer_from`] from the first token.
pub fn check_answer(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    answer: &[u32],
    sampling: &Sampling,
    tolerance: f32,
) -> Result<Verdict, LlmError> {
    check_answer_from(model, session, prompt, answer, 0, sampling, tolerance)
}

/// Check `answer[from..]` (the tokens before `from` were checked earlier) by teacher forcing
/// in `session`, reusing its longest cached prefix of `prompt ‖ answer[..from]` — so an answer
/// checked in pieces as it streams costs one prefill in all. Afterwards the session holds
/// prompt + answer (a follow-up question, or the next piece, reuses it). Positions in the
/// verdict are answer positions.
pub fn check_answer_from(
    model: &Model,
    session: &mut Session,
    prompt: &[u32],
    answer: &[u32],
    from: usize,
    sampling: &Sampling,
    tolerance: f32,
) -> Result<Verdict, LlmError> {
    sampling.validate().map_err(LlmError::Input)?;
    if prompt.is_empty() {
        return Err(LlmError::Input("empty prompt".into()));
    }
    if from > answer.len() {
        return Err(LlmError::Input(format!(
            "checking from token {from} of a {}-token answer",
            answer.len()
        )));
    }
    let ctx = model.cfg.context;
    if prompt.len() + answer.len() > ctx {
        return Err(LlmError::ContextFull {
            needed: prompt.len() + answer.len(),
            limit: ctx,
        });
    }
    let full: Vec<u32> = prompt.iter().chain(answer).copied().collect();
    // The first position to check is full[t0]; its logits come from running full[t0 - 1].
    let t0 = prompt.len() + from;
    let common = session
        .tokens
        .iter()
        .zip(&full)
        .take_while(|(a, b)| a == b)
        .count()
        .min(t0 - 1);
    session.truncate(common, model.cfg.kv_dim());
    let vocab = model.cfg.vocab;
    let mut near_ties = 0;
    if from < answer.len() {
        // Logits predicting answer[from].
        let mut logits = model.forward(session, &full[common..t0], Logits::Last)?;
        let mut i = from;
        loop {
            // `logits` holds rows predicting answer[i..i + rows].
            let rows = logits.len() / vocab;
            for r in 0..rows {
                let at = i + r;
                let token = answer[at];
                match check_token(
                    &logits[r * vocab..(r + 1) * vocab],
                    token,
                    sampling,
                    &full[..prompt.len() + at],
                    tolerance,
                ) {
                    Ok(tie) => near_ties += usize::from(tie),
                    Err((expected, shortfall)) => {
                        return Ok(Verdict::Rejected {
                            position: at,
                            token,
                            expected,
                            shortfall,
                        });
                    }
                }
            }
            i += rows;
            if i >= answer.len() {
                break;
            }
            // Feed answer[i-1 .. i-1+BLOCK]: row r predicts answer[i + r]. The last answer
            // token is never fed (nothing to predict after it).
            let end = (i - 1 + BLOCK).min(answer.len() - 1);
            logits = model.forward(session, &answer[i - 1..end], Logits::All)?;
        }
    }
    // Cache the whole answer for a follow-up (its last token was never fed).
    if session.pos < full.len() {
        let rest = full[session.pos..].to_vec();
        model.forward(session, &rest, Logits::Last)?;
    }
    Ok(Verdict::Accepted {
        checked: answer.len() - from,
        near_ties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_allows_the_argmax_and_near_ties_only() {
        let l = [0.0, 5.0, 4.8, 1.0];
        let s = Sampling::default();
        assert_eq!(check_token(&l, 1, &s, &[], TOLERANCE), Ok(false));
        assert_eq!(check_token(&l, 2, &s, &[], TOLERANCE), Ok(true));
        let Err((best, short)) = check_token(&l, 3, &s, &[], TOLERANCE) else {
            panic!("a token 4 logits down passed");
        };
        assert_eq!(best, 1);
        assert!((short - 4.0).abs() < 1e-6);
        assert!(
            check_token(&l, 9, &s, &[], TOLERANCE).is_err(),
            "out of vocab"
        );
    }

    #[test]
    fn the_penalty_is_applied_before_the_check() {
        // Token 1 was just said: with penalty 2 its logit 5 becomes 2.5, so 2 is the argmax,
        // 2 logits above it.
        let l = [0.0, 5.0, 4.5, 1.0];
        let s = Sampling {
            repeat_penalty: 2.0,
            ..Sampling::default()
        };
        assert_eq!(check_token(&l, 2, &s, &[1], TOLERANCE), Ok(false));
        assert!(check_token(&l, 1, &s, &[1], TOLERANCE).is_err());
    }

    #[test]
    fn sampled_allows_the_edge_of_another_engines_nucleus() {
        // At [3, 3, 1.5] the top two hold 89.96 %: token 2 is inside a nucleus of 0.9. At
        // [3.01, 3.01, 1.5] (another engine's rounding) they hold 90.05 %: it is outside, and
        // 1.51 below the last candidate. The mass above it decides, not that gap.
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.9,
            ..Sampling::default()
        };
        let mine = [3.01, 3.01, 1.5, -9.0];
        assert!(!candidates_of(&mine, &s).iter().any(|c| c.0 == 2));
        assert_eq!(check_token(&mine, 2, &s, &[], TOLERANCE), Ok(false));
        assert!(check_token(&mine, 3, &s, &[], TOLERANCE).is_err());
    }

    #[test]
    fn sampled_allows_the_candidate_set() {
        let l = [0.0, 5.0, 4.0, 3.0, -6.0];
        let s = Sampling {
            temperature: 1.0,
            top_k: 3,
            ..Sampling::default()
        };
        for t in [1, 2, 3] {
            assert!(check_token(&l, t, &s, &[], TOLERANCE).is_ok(), "{t}");
        }
        assert!(check_token(&l, 0, &s, &[], TOLERANCE).is_err());
        assert!(check_token(&l, 4, &s, &[], TOLERANCE).is_err());
    }
}
