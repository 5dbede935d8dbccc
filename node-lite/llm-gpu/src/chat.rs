//! Prompt → streamed tokens on the GPU model: the CPU engine's generation loop
//! (`shoal_llm::Generator`) with asynchronous device reads. Greedy decoding (temperature 0, no
//! repetition penalty) takes the argmax on the device and reads back one token id per step;
//! other settings read the logits and sample on the host with [`shoal_llm::sample`].

use burn::tensor::Tensor;
use shoal_llm::gguf::Gguf;
use shoal_llm::sample::{self, Rng};
use shoal_llm::{
    ChatTemplate, Control, Finish, GenParams, Generation, LlmError, Message, Step, TextStream,
    TokenEvent, Tokenizer,
};

use crate::model::{GpuModel, GpuSession, LoadOptions};
use crate::{GpuDevice, GpuError};

/// A chat model on the GPU: weights, tokenizer and template from one GGUF.
pub struct GpuChat {
    /// The forward pass.
    pub model: GpuModel,
    /// The tokenizer.
    pub tokenizer: Tokenizer,
    /// The chat template.
    pub template: ChatTemplate,
}

impl std::fmt::Debug for GpuChat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuChat")
            .field("model", &self.model.cfg)
            .finish_non_exhaustive()
    }
}

impl GpuChat {
    /// Load a whole GGUF file onto `dev`. The weights are copied: `bytes` may be dropped
    /// afterwards.
    pub fn load(dev: &GpuDevice, bytes: &[u8], opts: &LoadOptions) -> Result<Self, GpuError> {
        let g = Gguf::parse(bytes, None).map_err(LlmError::from)?;
        // Tokenizer and template first: a GGUF the engine cannot talk to is refused before
        // hundreds of megabytes go to the device.
        let tokenizer = Tokenizer::from_gguf(&g)?;
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
        let model = GpuModel::load(dev, &g, bytes, opts)?;
        if tokenizer.vocab() < model.cfg.vocab {
            return Err(GpuError::Llm(LlmError::BadModel(format!(
                "tokenizer has {} tokens, embeddings {}",
                tokenizer.vocab(),
                model.cfg.vocab
            ))));
        }
        Ok(GpuChat {
            model,
            tokenizer,
            template,
        })
    }

    /// The prompt's token ids: the template rendered with the assistant turn opened, then
    /// tokenized with special tokens (and BOS where the model wants it) — as
    /// `shoal_llm::Engine::prompt_tokens`.
    pub fn prompt_tokens(&self, messages: &[Message]) -> Result<Vec<u32>, GpuError> {
        if messages.is_empty() {
            return Err(GpuError::Input("no messages".into()));
        }
        let text = self.template.render(messages, true)?;
        let mut ids = Vec::new();
        if self.tokenizer.add_bos {
            ids.extend(self.tokenizer.bos);
        }
        ids.extend(self.tokenizer.encode(&text, true)?);
        Ok(ids)
    }

    /// A fresh conversation.
    pub fn session(&self) -> GpuSession {
        self.model.session()
    }

    /// Generate an answer to `prompt` (token ids) in `session`, reusing the longest cached
    /// prefix. `on_token` sees every token and may stop; `now()` is a clock in milliseconds.
    pub async fn generate(
        &self,
        session: &mut GpuSession,
        prompt: &[u32],
        params: &GenParams,
        now: &dyn Fn() -> f64,
        mut on_token: impl FnMut(TokenEvent<'_>) -> Control,
    ) -> Result<Generation, GpuError> {
        let mut g = self.start(session, prompt, params, now)?;
        loop {
            match g.step(self, session, now).await? {
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

    /// Begin generating (nothing runs yet): check the input, find the cached prefix to reuse.
    /// Then call [`GpuGenerator::step`] until it returns [`Step::Done`]; each call does one
    /// prefill block or one token, so a browser worker can handle a stop request between any
    /// two steps.
    pub fn start(
        &self,
        session: &mut GpuSession,
        prompt: &[u32],
        params: &GenParams,
        now: &dyn Fn() -> f64,
    ) -> Result<GpuGenerator, GpuError> {
        params.sampling.validate().map_err(GpuError::Input)?;
        if prompt.is_empty() {
            return Err(GpuError::Input("empty prompt".into()));
        }
        let ctx = self.model.cfg.context;
        if prompt.len() >= ctx {
            return Err(GpuError::ContextFull {
                needed: prompt.len() + 1,
                limit: ctx,
            });
        }
        if let Some(&t) = prompt.iter().find(|&&t| t as usize >= self.model.cfg.vocab) {
            return Err(GpuError::Input(format!(
                "token id {t} ≥ vocabulary {}",
                self.model.cfg.vocab
            )));
        }
        let common = session
            .tokens
            .iter()
            .zip(prompt)
            .take_while(|(a, b)| a == b)
            .count()
            .min(prompt.len() - 1); // always run at least the last prompt token
        session.truncate(common);
        let s = &params.sampling;
        Ok(GpuGenerator {
            greedy: s.temperature == 0.0 && s.repeat_penalty == 1.0,
            params: params.clone(),
            prompt: prompt.to_vec(),
            next: common,
            reused: common,
            rng: Rng::new(params.sampling.seed),
            recent: prompt.to_vec(),
            tokens: Vec::new(),
            stream: TextStream::default(),
            text: String::new(),
            logits: None,
            finish: None,
            cancelled: false,
            t0: now(),
            prefill_ms: 0.0,
            t_first: 0.0,
        })
    }
}

/// A generation in progress (see [`GpuChat::start`]). The KV cache lives in the
/// [`GpuSession`] passed to every step.
#[derive(Debug)]
pub struct GpuGenerator {
    params: GenParams,
    /// Argmax on the device (one id read per step) instead of reading the logits.
    greedy: bool,
    prompt: Vec<u32>,
    /// Next prompt position to prefill.
    next: usize,
    reused: usize,
    rng: Rng,
    recent: Vec<u32>,
    tokens: Vec<u32>,
    stream: TextStream,
    text: String,
    /// The next token's logits, on the device, not read yet.
    logits: Option<Tensor<2>>,
    finish: Option<Finish>,
    cancelled: bool,
    t0: f64,
    prefill_ms: f64,
    t_first: f64,
}

impl GpuGenerator {
    /// Do one unit of work: the next prefill block, or one token (its forward pass and the
    /// asynchronous read of its id or logits).
    pub async fn step(
        &mut self,
        chat: &GpuChat,
        session: &mut GpuSession,
        now: &dyn Fn() -> f64,
    ) -> Result<Step, GpuError> {
        if let Some(f) = self.finish {
            return Ok(Step::Done(f));
        }
        if self.cancelled {
            self.finish = Some(Finish::Cancelled);
            return Ok(Step::Done(Finish::Cancelled));
        }
        let model = &chat.model;
        let total = self.prompt.len();
        if self.next < total {
            let end = (self.next + self.params.prefill_block.max(1)).min(total);
            // Only the last block's logits are ever used.
            self.logits = model.forward(session, &self.prompt[self.next..end], end == total)?;
            self.next = end;
            return Ok(Step::Prefilled { done: end, total });
        }
        if self.tokens.len() >= self.params.max_tokens {
            self.finish = Some(Finish::Length);
            return Ok(Step::Done(Finish::Length));
        }
        if !self.tokens.is_empty() {
            // The previous token goes through the model now (not right after it was sampled),
            // so a caller that stops after a token never pays for one more pass.
            if session.pos + 1 > model.cfg.context {
                self.finish = Some(Finish::Length);
                return Ok(Step::Done(Finish::Length));
            }
            let last = self.tokens[self.tokens.len() - 1];
            self.logits = model.forward(session, &[last], true)?;
        }
        let logits = self
            .logits
            .take()
            .ok_or_else(|| GpuError::Input("no logits to sample from".into()))?;
        let id = if self.greedy {
            GpuModel::read_argmax(logits).await?
        } else {
            let l = GpuModel::read_logits(logits).await?;
            sample::sample(&l, &self.params.sampling, &self.recent, &mut self.rng)
        };
        self.tokens.push(id);
        self.recent.push(id);
        if self.tokens.len() == 1 {
            // The device runs the prefill asynchronously: it has finished when the first id
            // is read, so that is when the prefill time ends (it includes one token's read).
            self.t_first = now();
            self.prefill_ms = self.t_first - self.t0;
        }
        if chat.tokenizer.stop.contains(&id) {
            self.finish = Some(Finish::Stop);
            return Ok(Step::Done(Finish::Stop));
        }
        let piece = self.stream.push(&chat.tokenizer, id)?;
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

    /// The result (also for a generation cancelled part-way), shaped as the CPU engine's.
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
