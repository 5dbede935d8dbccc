//! Shoal's chat engine: a GGUF chat model (Llama family, Qwen2) on our own quantized CPU
//! kernels, with the tokenizer and chat template the GGUF carries.
//!
//! Layers, bottom up: [`gguf`] (the file) → [`quant`] (block layouts) → [`kernels`] (integer
//! dot products) → [`model`] (forward pass, KV cache) ← [`tokenizer`], [`template`],
//! [`sample`] → [`Engine`] (prompt → streamed tokens). Sans-IO: no file, network or clock
//! access; callers pass bytes in and time (`now`) as a function.

#![warn(missing_docs)]
pub mod config;
pub mod decode;
pub mod gguf;
pub mod kernels;
pub mod model;
pub mod ops;
pub mod par;
pub mod quant;
pub mod rag;
pub mod sample;
pub mod template;
pub mod testdata;
pub mod tokenizer;
pub mod verify;

use serde::{Deserialize, Serialize};

pub use config::{Arch, Config};
pub use decode::{Decoder, Step, Work};
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
    /// Another instance sharing the forward pass ([`model::Exchange`]) failed or stopped
    /// answering.
    #[error("a peer instance failed: {0}")]
    Peer(String),
    /// A conversation's cache was built under another split of the model between instances
    /// (each tensor-parallel rank caches only its own heads' keys and values).
    #[error(
        "this conversation's cache was built for {built}, not {now}: start the conversation again"
    )]
    CacheLayout {
        /// How the cache was built.
        built: String,
        /// How this forward pass runs.
        now: String,
    },
}

/// Refuse what the engine cannot run, from the header alone (metadata; no tensor data needed):
/// the architecture and shape ([`Config::from_gguf`]) and the tokenizer
/// ([`Tokenizer::from_gguf`]); tensor types were checked by [`gguf::Gguf::parse`]. The CLI's
/// import and the page's file check call this before the rest of a file is read.
pub fn check_supported(g: &gguf::Gguf) -> Result<Config, LlmError> {
    let cfg = Config::from_gguf(g)?;
    Tokenizer::from_gguf(g)?;
    Ok(cfg)
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
            dec: Decoder::new(params, prompt, common, now()),
            logits: Vec::new(),
        })
    }
}

/// A generation in progress (see [`Engine::start`]). Owns no model state: the KV cache
/// lives in the [`Session`] passed to every step.
#[derive(Debug, Clone)]
pub struct Generator {
    dec: Decoder,
    /// The last forward pass's logits (the next token's).
    logits: Vec<f32>,
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
        ex: Option<&mut dyn Exchange>,
    ) -> Result<Step, LlmError> {
        let model = &engine.model;
        match self.dec.next_work(session.pos, model.cfg.context) {
            Work::Done(f) => Ok(Step::Done(f)),
            Work::Prefill { range, .. } => {
                self.logits = model.forward_ranked(
                    session,
                    &self.dec.prompt_tokens()[range.clone()],
                    Logits::Last,
                    ex,
                )?;
                Ok(self.dec.prefilled(range, Some(now())))
            }
            Work::Token(last) => {
                if let Some(last) = last {
                    self.logits = model.forward_ranked(session, &[last], Logits::Last, ex)?;
                }
                let id = self.dec.sample(&self.logits);
                self.dec.accept(&engine.tokenizer, id, now())
            }
        }
    }

    /// Stop at the next step (that step returns [`Step::Done`] with [`Finish::Cancelled`]).
    pub fn cancel(&mut self) {
        self.dec.cancel();
    }

    /// Prompt tokens through the model so far, and the prompt's length.
    pub fn prefill_progress(&self) -> (usize, usize) {
        self.dec.prefill_progress()
    }

    /// Tokens generated so far.
    pub fn tokens(&self) -> &[u32] {
        self.dec.tokens()
    }

    /// The result (also for a generation cancelled part-way).
    pub fn finish(self, now: &dyn Fn() -> f64) -> Generation {
        self.dec.finish(now())
    }
}
