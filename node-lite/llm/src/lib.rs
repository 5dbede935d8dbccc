//! Shoal's chat engine: a GGUF chat model (Llama family, Qwen2) on our own quantized CPU
//! kernels, with the tokenizer and chat template the GGUF carries.
//!
//! Layers, bottom up: [`gguf`] (the file) → [`quant`] (block layouts) → [`kernels`] (integer
//! dot products) → [`model`] (forward pass, KV cache) ← [`tokenizer`], [`template`],
//! [`sample`] → [`Engine`] (prompt → streamed tokens). Sans-IO: no file, network or clock
//! access; callers pass bytes in and time (`now`) as a function.

pub mod config;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod par;
pub mod quant;
pub mod rag;
pub mod sample;
pub mod template;
pub mod tokenizer;

use serde::{Deserialize, Serialize};

pub use config::{Arch, Config};
pub use model::{Exchange, Logits, Model, Session};
pub use sample::Sampling;
pub use template::{ChatTemplate, Message};
pub use tokenizer::{TextStream, Tokenizer};

/// Everything that can go wrong in the engine.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The file is not a readable GGUF.
    #[error(transparent)]
    Gguf(#[from] gguf::GgufError),
    /// A well-formed GGUF of something the engine does not run (architecture, tokenizer, type).
    #[error("unsupported model: {0}")]
    Unsupported(String),
    /// A GGUF whose contents do not describe a usable model.
    #[error("bad model: {0}")]
    BadModel(String),
    /// The chat template failed to compile or render.
    #[error("chat template: {0}")]
    Template(String),
    /// Tokenizing or decoding failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The prompt (plus what was asked for) does not fit the context.
    #[error("the prompt needs {needed} tokens; this model's context holds {limit}")]
    ContextFull {
        /// Tokens needed.
        needed: usize,
        /// The model's context length.
        limit: usize,
    },
    /// Bad arguments (sampling ranges, empty input).
    #[error("invalid input: {0}")]
    Input(String),
}

/// What to generate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct GenParams {
    /// Most tokens to generate.
    pub max_tokens: usize,
    /// How to pick tokens.
    pub sampling: Sampling,
    /// Extra stop strings (the model's end-of-turn tokens always stop).
    pub stop: Vec<String>,
    /// Tokens per prefill block.
    pub prefill_block: usize,
}

impl Default for GenParams {
    fn default() -> Self {
        GenParams {
            max_tokens: 256,
            sampling: Sampling::default(),
            stop: Vec::new(),
            prefill_block: 64,
        }
    }
}

/// Why generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-turn token or a stop string.
    Stop,
    /// `max_tokens` or the context filled up.
    Length,
    /// The caller asked to stop.
    Cancelled,
}

/// One generated token, as the callback sees it.
#[derive(Debug, Clone)]
pub struct TokenEvent<'a> {
    /// Token id.
    pub id: u32,
    /// Newly complete text (may be empty while a UTF-8 character is split across tokens).
    pub text: &'a str,
    /// Position in the answer (0-based).
    pub index: usize,
}

/// What the callback wants next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Keep generating.
    Continue,
    /// Stop after this token.
    Stop,
}

/// The result of [`Engine::generate`] — the shape `shoal-node chat --json` prints.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Generation {
    /// The fully templated prompt's token ids.
    pub prompt_tokens: Vec<u32>,
    /// Generated ids (the stop token included when generation stopped on one).
    pub tokens: Vec<u32>,
    /// The answer text (stop token and stop string excluded).
    pub text: String,
    /// Why it ended.
    pub finish: Finish,
    /// Prompt tokens per second (tokens actually run: a reused prefix is not counted).
    pub prefill_tok_s: f64,
    /// Generated tokens per second after the first.
    pub decode_tok_s: f64,
    /// Milliseconds from the call to the first generated token.
    pub first_token_ms: f64,
}

/// A chat model ready to answer: weights, tokenizer and template from one GGUF.
pub struct Engine {
    /// The forward pass.
    pub model: Model,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template.
    pub template: ChatTemplate,
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Engine")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl Engine {
    /// Load a whole GGUF file. `threads` matrix-product threads (native). The weights are
    /// repacked into the engine's own memory: `bytes` may be dropped afterwards.
    pub fn from_gguf(bytes: &[u8], threads: usize) -> Result<Self, LlmError> {
        Self::with_tier(bytes, threads, kernels::best_tier())
    }

    /// As [`Engine::from_gguf`], on a chosen kernel tier (see [`kernels::available_tiers`]).
    pub fn with_tier(bytes: &[u8], threads: usize, tier: kernels::Tier) -> Result<Self, LlmError> {
        let g = gguf::Gguf::parse(bytes, None)?;
        let model = Model::with_tier(&g, bytes, threads, tier)?;
        let tokenizer = Tokenizer::from_gguf(&g)?;
        if tokenizer.vocab() < model.cfg.vocab {
            return Err(LlmError::BadModel(format!(
                "tokenizer has {} tokens, embeddings {}",
                tokenizer.vocab(),
                model.cfg.vocab
            )));
        }
        let name = |id: Option<u32>| {
            id.and_then(|i| tokenizer.token(i))
                .unwrap_or("")
                .to_string()
        };
        let template = ChatTemplate::new(
            g.get_str("tokenizer.chat_template"),
            &name(tokenizer.bos),
            &name(tokenizer.eos),
        )?;
        Ok(Engine {
            model,
            tokenizer,
            template,
        })
    }

    /// The prompt's token ids: the template rendered with the assistant turn opened, then
    /// tokenized with special tokens (and BOS where the model wants it).
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<Vec<u32>, LlmError> {
        if messages.is_empty() {
            return Err(LlmError::Input("no messages".into()));
        }
        let text = self.template.render(messages, true)?;
        let mut ids = Vec::new();
        if self.tokenizer.add_bos {
            ids.extend(self.tokenizer.bos);
        }
        ids.extend(self.tokenizer.encode(&text, true)?);
        Ok(ids)
    }

    /// Generate an answer to `prompt` (token ids) in `session`, reusing the longest cached
    /// prefix. `on_token` sees every token and may stop; `now()` is a clock in milliseconds.
    pub fn generate(
        &self,
        session: &mut Session,
        prompt: &[u32],
        params: &GenParams,
        now: &dyn Fn() -> f64,
        mut on_token: impl FnMut(TokenEvent<'_>) -> Control,
    ) -> Result<Generation, LlmError> {
        let mut g = self.start(session, prompt, params, now)?;
        loop {
            match g.step(self, session, now)? {
                Step::Prefilled { .. } => {}
                Step::Token { id, text, index } => {
                    if on_token(TokenEvent {
                        id,
                        text: &text,
                        index,
                    }) == Control::Stop
                    {
                        g.cancel();
                    }
                }
                Step::Done(_) => return Ok(g.finish(now)),
            }
        }
    }

    /// Begin generating (nothing runs yet): check the input, find the cached prefix to
    /// reuse. Then call [`Generator::step`] until it returns [`Step::Done`]; each call does
    /// one prefill block or one token, so a caller with an event loop (a browser worker) can
    /// handle a stop request between any two steps.
    pub fn start(
        &self,
        session: &mut Session,
        prompt: &[u32],
        params: &GenParams,
        now: &dyn Fn() -> f64,
    ) -> Result<Generator, LlmError> {
        params.sampling.validate().map_err(LlmError::Input)?;
        if prompt.is_empty() {
            return Err(LlmError::Input("empty prompt".into()));
        }
        let ctx = self.model.cfg.context;
        if prompt.len() >= ctx {
            return Err(LlmError::ContextFull {
                needed: prompt.len() + 1,
                limit: ctx,
            });
        }
        let common = session
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1); // always run at least the last prompt token
        session.truncate(common, self.model.cfg.kv_dim());
        Ok(Generator {
            params: params.clone(),
            prompt: prompt.to_vec(),
            next: common,
            reused: common,
            rng: sample::Rng::new(params.sampling.seed),
            recent: prompt.to_vec(),
            tokens: Vec::new(),
            stream: TextStream::default(),
            text: String::new(),
            logits: Vec::new(),
            finish: None,
            cancelled: false,
            t0: now(),
            prefill_ms: 0.0,
            t_first: 0.0,
        })
    }
}

/// What one [`Generator::step`] did.
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
    /// Generation ended; call [`Generator::finish`].
    Done(Finish),
}

/// A generation in progress (see [`Engine::start`]). Owns no model state: the KV cache
/// lives in the [`Session`] passed to every step.
#[derive(Debug, Clone)]
pub struct Generator {
    params: GenParams,
    prompt: Vec<u32>,
    /// Next prompt position to prefill.
    next: usize,
    reused: usize,
    rng: sample::Rng,
    recent: Vec<u32>,
    tokens: Vec<u32>,
    stream: TextStream,
    text: String,
    logits: Vec<f32>,
    finish: Option<Finish>,
    cancelled: bool,
    t0: f64,
    prefill_ms: f64,
    t_first: f64,
}

impl Generator {
    /// Do one unit of work: the next prefill block, or one token.
    pub fn step(
        &mut self,
        engine: &Engine,
        session: &mut Session,
        now: &dyn Fn() -> f64,
    ) -> Result<Step, LlmError> {
        self.step_ranked(engine, session, now, None)
    }

    /// [`Generator::step`] as one of several instances splitting every forward pass (see
    /// [`model::Exchange`]): each runs the same steps and samples the same tokens.
    pub fn step_ranked(
        &mut self,
        engine: &Engine,
        session: &mut Session,
        now: &dyn Fn() -> f64,
        mut ex: Option<&mut dyn model::Exchange>,
    ) -> Result<Step, LlmError> {
        if let Some(f) = self.finish {
            return Ok(Step::Done(f));
        }
        if self.cancelled {
            self.finish = Some(Finish::Cancelled);
            return Ok(Step::Done(Finish::Cancelled));
        }
        let model = &engine.model;
        let total = self.prompt.len();
        if self.next < total {
            let end = (self.next + self.params.prefill_block.max(1)).min(total);
            self.logits = model.forward_ranked(
                session,
                &self.prompt[self.next..end],
                Logits::Last,
                ex.as_mut().map(|e| &mut **e as &mut dyn model::Exchange),
            )?;
            self.next = end;
            if end == total {
                self.prefill_ms = now() - self.t0;
            }
            return Ok(Step::Prefilled { done: end, total });
        }
        if self.tokens.len() >= self.params.max_tokens {
            self.finish = Some(Finish::Length);
            return Ok(Step::Done(Finish::Length));
        }
        if !self.tokens.is_empty() {
            // The previous token goes through the model now (not right after it was
            // sampled), so a caller that stops after a token never pays for one more pass.
            if session.pos + 1 > model.cfg.context {
                self.finish = Some(Finish::Length);
                return Ok(Step::Done(Finish::Length));
            }
            let last = self.tokens[self.tokens.len() - 1];
            self.logits = model.forward_ranked(session, &[last], Logits::Last, ex)?;
        }
        let id = sample::sample(
            &self.logits,
            &self.params.sampling,
            &self.recent,
            &mut self.rng,
        );
        self.tokens.push(id);
        self.recent.push(id);
        if self.tokens.len() == 1 {
            self.t_first = now();
        }
        if engine.tokenizer.stop.contains(&id) {
            self.finish = Some(Finish::Stop);
            return Ok(Step::Done(Finish::Stop));
        }
        let piece = self.stream.push(&engine.tokenizer, id)?;
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
    pub fn finish(self, now: &dyn Fn() -> f64) -> Generation {
        let end = now();
        let prefill_ms = if self.next >= self.prompt.len() && self.prefill_ms > 0.0 {
            self.prefill_ms
        } else {
            end - self.t0
        };
        let run = self.next.saturating_sub(self.reused);
        let decoded = self.tokens.len().saturating_sub(1);
        let decode_ms = end - self.t_first;
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
