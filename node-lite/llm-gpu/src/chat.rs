//! Prompt → streamed tokens on the GPU model: the CPU engine's generation loop
//! (`shoal_llm::Decoder`: the same steps, stops, text pieces and timings) with asynchronous
//! device reads. Greedy decoding (temperature 0, no repetition penalty) takes the argmax on the
//! device and reads back one token id per step; other settings read the logits and sample on
//! the host.

use burn::tensor::Tensor;
use shoal_llm::gguf::Gguf;
use shoal_llm::{
    ChatTemplate, Control, Decoder, GenParams, Generation, LlmError, Message, Step, TokenEvent,
    Tokenizer, Work,
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
        Ok(GpuGenerator {
            dec: Decoder::new(params, prompt, common, now()),
            logits: None,
        })
    }
}

/// A generation in progress (see [`GpuChat::start`]). The KV cache lives in the
/// [`GpuSession`] passed to every step.
#[derive(Debug)]
pub struct GpuGenerator {
    dec: Decoder,
    /// The next token's logits, on the device, not read yet.
    logits: Option<Tensor<2>>,
}

impl GpuGenerator {
    /// Do one unit of work: the next prefill block, or one token (its forward pass and the
    /// asynchronous read of its id or logits). Greedy decoding (temperature 0, no repetition
    /// penalty) takes the argmax on the device and reads back one id.
    pub async fn step(
        &mut self,
        chat: &GpuChat,
        session: &mut GpuSession,
        now: &dyn Fn() -> f64,
    ) -> Result<Step, GpuError> {
        let model = &chat.model;
        match self.dec.next_work(session.pos, model.cfg.context) {
            Work::Done(f) => Ok(Step::Done(f)),
            Work::Prefill { range, last } => {
                // Only the last block's logits are ever used. The device runs the prefill
                // asynchronously: it has finished when the first id is read, so that is when
                // the prefill time ends (it includes one token's read).
                self.logits =
                    model.forward(session, &self.dec.prompt_tokens()[range.clone()], last)?;
                Ok(self.dec.prefilled(range, None))
            }
            Work::Token(prev) => {
                if let Some(prev) = prev {
                    self.logits = model.forward(session, &[prev], true)?;
                }
                let logits = self
                    .logits
                    .take()
                    .ok_or_else(|| GpuError::Input("no logits to sample from".into()))?;
                let id = if self.dec.greedy() {
                    GpuModel::read_argmax(logits).await?
                } else {
                    let l = GpuModel::read_logits(logits).await?;
                    self.dec.sample(&l)
                };
                Ok(self.dec.accept(&chat.tokenizer, id, now())?)
            }
        }
    }

    /// Stop at the next step (it returns [`Step::Done`] with `Finish::Cancelled`).
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

    /// The result (also for a generation cancelled part-way), shaped as the CPU engine's.
    pub fn finish(self, now: &dyn Fn() -> f64) -> Generation {
        self.dec.finish(now())
    }
}
