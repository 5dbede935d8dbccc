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
pub mod quant;
pub mod rag;
pub mod sample;
pub mod template;
pub mod tokenizer;

use serde::{Deserialize, Serialize};

pub use config::{Arch, Config};
pub use model::{Logits, Model, Session};
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
    /// Load a whole GGUF file. `threads` matrix-product threads (native).
    pub fn from_gguf(bytes: Vec<u8>, threads: usize) -> Result<Self, LlmError> {
        let model = Model::from_gguf(bytes, threads)?;
        let g = gguf::Gguf::parse(model.bytes(), None)?;
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
        let t0 = now();
        let common = session
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1); // always run at least the last prompt token
        session.truncate(common, self.model.cfg.kv_dim());
        let mut logits = Vec::new();
        for block in prompt[common..].chunks(params.prefill_block.max(1)) {
            logits = self.model.forward(session, block, Logits::Last)?;
        }
        let prefill_ms = now() - t0;
        let run = prompt.len() - common;
        let mut rng = sample::Rng::new(params.sampling.seed);
        let mut recent: Vec<u32> = prompt.to_vec();
        let mut tokens = Vec::new();
        let mut stream = TextStream::default();
        let mut text = String::new();
        let mut finish = Finish::Length;
        let mut first_token_ms = 0.0;
        let mut t_first = 0.0;
        while tokens.len() < params.max_tokens {
            let id = sample::sample(&logits, &params.sampling, &recent, &mut rng);
            tokens.push(id);
            recent.push(id);
            if tokens.len() == 1 {
                t_first = now();
                first_token_ms = t_first - t0;
            }
            if self.tokenizer.stop.contains(&id) {
                finish = Finish::Stop;
                break;
            }
            let piece = stream.push(&self.tokenizer, id)?;
            text.push_str(&piece);
            let mut stop_hit = false;
            let mut shown = piece.as_str();
            for s in params.stop.iter().filter(|s| !s.is_empty()) {
                if let Some(i) = text.find(s.as_str()) {
                    let cut = text.len() - i;
                    shown = &piece[..piece.len().saturating_sub(cut.min(piece.len()))];
                    stop_hit = true;
                    text.truncate(i);
                    break;
                }
            }
            let ev = TokenEvent {
                id,
                text: shown,
                index: tokens.len() - 1,
            };
            let c = on_token(ev);
            if stop_hit {
                finish = Finish::Stop;
                break;
            }
            if c == Control::Stop {
                finish = Finish::Cancelled;
                break;
            }
            if tokens.len() >= params.max_tokens || session.pos + 1 > ctx {
                break;
            }
            logits = self.model.forward(session, &[id], Logits::Last)?;
        }
        let decode_ms = now() - t_first;
        let decoded = tokens.len().saturating_sub(1);
        Ok(Generation {
            prompt_tokens: prompt.to_vec(),
            tokens,
            text,
            finish,
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
            first_token_ms,
        })
    }
}
