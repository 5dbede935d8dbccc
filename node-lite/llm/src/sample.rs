//! Choosing the next token from logits: greedy at temperature 0, else repetition penalty,
//! temperature, top-k, top-p, and a seeded generator (same seed + same engine = same text).

use serde::{Deserialize, Serialize};

/// Sampling settings (the OpenAI names where there is one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Sampling {
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep the smallest set of tokens whose probability reaches `top_p` (1 = off).
    pub top_p: f32,
    /// Keep the `top_k` most likely tokens (0 = off).
    pub top_k: usize,
    /// Divide positive (multiply negative) logits of recently seen tokens by this (1 = off).
    pub repeat_penalty: f32,
    /// How many recent tokens the penalty looks at.
    pub repeat_last_n: usize,
    /// Generator seed.
    pub seed: u64,
}

impl Default for Sampling {
    fn default() -> Self {
        Sampling {
            temperature: 0.0,
            top_p: 1.0,
            top_k: 0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            seed: 0,
        }
    }
}

impl Sampling {
    /// Check ranges; a message names the bad field.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.temperature.is_finite() && (0.0..=10.0).contains(&self.temperature)) {
            return Err(format!("temperature {} not in [0, 10]", self.temperature));
        }
        if !(self.top_p.is_finite() && self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(format!("top_p {} not in (0, 1]", self.top_p));
        }
        if !(self.repeat_penalty.is_finite() && (0.1..=10.0).contains(&self.repeat_penalty)) {
            return Err(format!(
                "repeat_penalty {} not in [0.1, 10]",
                self.repeat_penalty
            ));
        }
        Ok(())
    }
}

/// A small, seedable generator (SplitMix64): reproducible across platforms.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// Seeded generator.
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }
    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in [0, 1).
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// Index of the largest logit (the first of equals).
pub fn argmax(logits: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &v) in logits.iter().enumerate() {
        if v > logits[best] {
            best = i;
        }
    }
    best as u32
}

/// Largest minus second-largest logit (how decisive a greedy step was).
pub fn top2_margin(logits: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in logits {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    a - b
}

/// The candidate set sampling may pick from at these settings (after penalty, temperature,
/// top-k, top-p), as (token, probability), most likely first. Greedy: the argmax alone.
pub fn candidates(logits: &[f32], s: &Sampling, recent: &[u32]) -> Vec<(u32, f32)> {
    candidates_of(&penalized(logits, s, recent), s)
}

/// The logits after the repetition penalty over the last `repeat_last_n` of `recent` (what
/// every other sampling step sees).
pub fn penalized(logits: &[f32], s: &Sampling, recent: &[u32]) -> Vec<f32> {
    let mut l = logits.to_vec();
    if s.repeat_penalty != 1.0 {
        let start = recent.len().saturating_sub(s.repeat_last_n);
        let mut seen = recent[start..].to_vec();
        seen.sort_unstable();
        seen.dedup();
        for &t in &seen {
            if let Some(v) = l.get_mut(t as usize) {
                *v = if *v > 0.0 {
                    *v / s.repeat_penalty
                } else {
                    *v * s.repeat_penalty
                };
            }
        }
    }
    l
}

/// [`candidates`] of logits the penalty was already applied to ([`penalized`]).
pub fn candidates_of(l: &[f32], s: &Sampling) -> Vec<(u32, f32)> {
    if s.temperature <= 0.0 {
        return vec![(argmax(l), 1.0)];
    }
    let mut idx: Vec<u32> = (0..l.len() as u32).collect();
    let k = if s.top_k == 0 {
        l.len()
    } else {
        s.top_k.min(l.len())
    };
    if k < idx.len() {
        idx.select_nth_unstable_by(k - 1, |&a, &b| l[b as usize].total_cmp(&l[a as usize]));
        idx.truncate(k);
    }
    idx.sort_unstable_by(|&a, &b| l[b as usize].total_cmp(&l[a as usize]).then(a.cmp(&b)));
    let mx = l[idx[0] as usize];
    let mut p: Vec<(u32, f32)> = idx
        .iter()
        .map(|&i| (i, ((l[i as usize] - mx) / s.temperature).exp()))
        .collect();
    let sum: f32 = p.iter().map(|x| x.1).sum();
    for x in &mut p {
        x.1 /= sum;
    }
    if s.top_p < 1.0 {
        let mut acc = 0.0;
        let mut keep = p.len();
        for (i, x) in p.iter().enumerate() {
            acc += x.1;
            if acc >= s.top_p {
                keep = i + 1;
                break;
            }
        }
        p.truncate(keep);
        let sum: f32 = p.iter().map(|x| x.1).sum();
        for x in &mut p {
            x.1 /= sum;
        }
    }
    p
}

/// Pick the next token.
pub fn sample(logits: &[f32], s: &Sampling, recent: &[u32], rng: &mut Rng) -> u32 {
    let c = candidates(logits, s, recent);
    if c.len() == 1 {
        return c[0].0;
    }
    let r = rng.next_f32();
    let mut acc = 0.0;
    for &(t, p) in &c {
        acc += p;
        if r < acc {
            return t;
        }
    }
    c[c.len() - 1].0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_is_argmax_and_margin_is_top2_gap() {
        let l = [0.1, 3.0, 2.5, -1.0];
        assert_eq!(sample(&l, &Sampling::default(), &[], &mut Rng::new(1)), 1);
        assert!((top2_margin(&l) - 0.5).abs() < 1e-6);
    }

    #[test]
    fn top_k_top_p_and_penalty_shape_the_candidates() {
        let l = [1.0, 2.0, 3.0, 4.0];
        let s = Sampling {
            temperature: 1.0,
            top_k: 2,
            ..Sampling::default()
        };
        let c = candidates(&l, &s, &[]);
        assert_eq!(c.iter().map(|x| x.0).collect::<Vec<_>>(), vec![3, 2]);
        let s = Sampling {
            temperature: 1.0,
            top_p: 0.5,
            ..Sampling::default()
        };
        assert_eq!(
            candidates(&l, &s, &[]).len(),
            1,
            "token 3 alone has p ≈ 0.64"
        );
        let s = Sampling {
            repeat_penalty: 4.0,
            ..Sampling::default()
        };
        assert_eq!(candidates(&l, &s, &[3])[0].0, 2, "4/4 = 1 < 3");
    }

    #[test]
    fn same_seed_same_choices() {
        let l: Vec<f32> = (0..100).map(|i| (i as f32 * 0.37).sin()).collect();
        let s = Sampling {
            temperature: 0.8,
            top_p: 0.9,
            seed: 5,
            ..Sampling::default()
        };
        let run = |seed| {
            let mut r = Rng::new(seed);
            (0..20)
                .map(|_| sample(&l, &s, &[], &mut r))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(5), run(5));
        assert_ne!(run(5), run(6));
    }
}
