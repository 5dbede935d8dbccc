//! The generation state machine, without a model: which work comes next (a prefill block, a
//! token's forward pass), sampling, stop tokens and strings, UTF-8-complete text pieces,
//! cancellation and timings. The CPU [`crate::Generator`] and the GPU engine's generator drive
//! the same [`Decoder`] with their own forward passes (one synchronous, one with asynchronous
//! device reads), so both stop, stream and time an answer identically.

use std::ops::Range;

use crate::sample::{self, Rng};
use crate::tokenizer::{TextStream, Tokenizer};
use crate::{Finish, GenParams, Generation, LlmError};

/// What one generation step did.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    /// A block of the prompt went through the model.
    Prefilled {
        /// Prompt tokens in the cache now.
        done: usize,
        /// Prompt length.
        total: usize,
    },
    /// A token was generated (the stop token is not reported here; see [`Generation`]).
    Token {
        /// Token id.
        id: u32,
        /// Newly complete text (may be empty while a character is split across tokens).
        text: String,
        /// Position in the answer (0-based).
        index: usize,
    },
    /// Generation ended; call `finish` on the generator.
    Done(Finish),
}

/// The forward pass the next step needs (see [`Decoder::next_work`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Work {
    /// Nothing more: generation ended.
    Done(Finish),
    /// Run these prompt positions; `last` = the prompt's final block (its logits are sampled).
    Prefill {
        /// Prompt positions.
        range: Range<usize>,
        /// Whether this block ends the prompt.
        last: bool,
    },
    /// Sample the next token: first run `Some(token)` (the previous answer token) through the
    /// model; `None` = the prompt's last logits are still fresh.
    Token(Option<u32>),
}

/// A generation's state, model aside.
#[derive(Debug, Clone)]
pub struct Decoder {
    params: GenParams,
    prompt: Vec<u32>,
    /// Next prompt position to prefill.
    next: usize,
    reused: usize,
    rng: Rng,
    recent: Vec<u32>,
    tokens: Vec<u32>,
    stream: TextStream,
    text: String,
    finish: Option<Finish>,
    cancelled: bool,
    t0: f64,
    prefill_ms: f64,
    t_first: f64,
}

impl Decoder {
    /// A generation of `prompt` whose first `reused` tokens are already in the cache; `t0` is
    /// the clock at the start.
    pub fn new(params: &GenParams, prompt: &[u32], reused: usize, t0: f64) -> Self {
        Decoder {
            params: params.clone(),
            prompt: prompt.to_vec(),
            next: reused,
            reused,
            rng: Rng::new(params.sampling.seed),
            recent: prompt.to_vec(),
            tokens: Vec::new(),
            stream: TextStream::default(),
            text: String::new(),
            finish: None,
            cancelled: false,
            t0,
            prefill_ms: 0.0,
            t_first: 0.0,
        }
    }

    /// The prompt's token ids.
    pub fn prompt_tokens(&self) -> &[u32] {
        &self.prompt
    }

    /// The generation parameters.
    pub fn params(&self) -> &GenParams {
        &self.params
    }

    /// What to run next, given the cache's length `pos` and the model's `context`. Ends the
    /// generation (cancelled, `max_tokens`, context full) where due.
    pub fn next_work(&mut self, pos: usize, context: usize) -> Work {
        if let Some(f) = self.finish {
            return Work::Done(f);
        }
        if self.cancelled {
            return self.end(Finish::Cancelled);
        }
        let total = self.prompt.len();
        if self.next < total {
            let end = (self.next + self.params.prefill_block.max(1)).min(total);
            return Work::Prefill {
                range: self.next..end,
                last: end == total,
            };
        }
        if self.tokens.len() >= self.params.max_tokens {
            return self.end(Finish::Length);
        }
        match self.tokens.last() {
            // The previous token goes through the model now (not right after it was
            // sampled), so a caller that stops after a token never pays for one more pass.
            Some(_) if pos + 1 > context => self.end(Finish::Length),
            last => Work::Token(last.copied()),
        }
    }

    fn end(&mut self, f: Finish) -> Work {
        self.finish = Some(f);
        Work::Done(f)
    }

    /// The prompt block `range` went through the model. `now`: the clock when it is known to
    /// have finished (a device that runs asynchronously passes `None`: its prefill time ends
    /// at the first token's read).
    pub fn prefilled(&mut self, range: Range<usize>, now: Option<f64>) -> Step {
        self.next = range.end;
        let total = self.prompt.len();
        if let (true, Some(t)) = (range.end == total, now) {
            self.prefill_ms = t - self.t0;
        }
        Step::Prefilled {
            done: range.end,
            total,
        }
    }

    /// Pick the next token from `logits` (sampling settings, recent tokens, the seeded draw).
    pub fn sample(&mut self, logits: &[f32]) -> u32 {
        sample::sample(logits, &self.params.sampling, &self.recent, &mut self.rng)
    }

    /// Greedy without a repetition penalty: the argmax alone decides (a device may compute it
    /// and read back one id).
    pub fn greedy(&self) -> bool {
        let s = &self.params.sampling;
        s.temperature == 0.0 && s.repeat_penalty == 1.0
    }

    /// Take token `id` (sampled at `now`): end-of-turn and stop strings, the text piece.
    pub fn accept(&mut self, tokenizer: &Tokenizer, id: u32, now: f64) -> Result<Step, LlmError> {
        self.tokens.push(id);
        self.recent.push(id);
        if self.tokens.len() == 1 {
            self.t_first = now;
            if self.prefill_ms == 0.0 {
                self.prefill_ms = now - self.t0;
            }
        }
        if tokenizer.stop.contains(&id) {
            self.finish = Some(Finish::Stop);
            return Ok(Step::Done(Finish::Stop));
        }
        let piece = self.stream.push(tokenizer, id)?;
        self.text.push_str(&piece);
        let mut shown = piece.as_str();
        for s in self.params.stop.iter().filter(|s| !s.is_empty()) {
            if let Some(i) = self.text.find(s.as_str()) {
                let cut = self.text.len() - i;
                shown = &piece[..piece.len().saturating_sub(cut.min(piece.len()))];
                self.text.truncate(i);
                self.finish = Some(Finish::Stop);
                break;
            }
        }
        Ok(Step::Token {
            id,
            text: shown.to_string(),
            index: self.tokens.len() - 1,
        })
    }

    /// Stop at the next step (that step returns [`Step::Done`] with [`Finish::Cancelled`]).
    pub fn cancel(&mut self) {
        if self.finish.is_none() {
            self.cancelled = true;
        }
    }

    /// Prompt tokens through the model so far, and the prompt's length.
    pub fn prefill_progress(&self) -> (usize, usize) {
        (self.next, self.prompt.len())
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        &self.tokens
    }

    /// The result (also for a generation cancelled part-way).
    pub fn finish(self, now: f64) -> Generation {
        let prefill_ms = if self.next >= self.prompt.len() && self.prefill_ms > 0.0 {
            self.prefill_ms
        } else {
            now - self.t0
        };
        let run = self.next.saturating_sub(self.reused);
        let decoded = self.tokens.len().saturating_sub(1);
        let decode_ms = now - self.t_first;
        Generation {
            prompt_tokens: self.prompt,
            finish: self.finish.unwrap_or(Finish::Cancelled),
            first_token_ms: if self.tokens.is_empty() {
                0.0
            } else {
                self.t_first - self.t0
            },
            tokens: self.tokens,
            text: self.text,
            prefill_tok_s: if prefill_ms > 0.0 {
                run as f64 * 1000.0 / prefill_ms
            } else {
                0.0
            },
            decode_tok_s: if decode_ms > 0.0 && decoded > 0 {
                decoded as f64 * 1000.0 / decode_ms
            } else {
                0.0
            },
        }
    }
}
