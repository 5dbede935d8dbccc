//! The assistant's side of the model-worker binaries: a chat model (`shoal-llm`: a Llama or
//! Qwen2 GGUF on our own quantized kernels) in the worker's wasm instance. Included by every
//! worker binary with `#[path]`, like `worker_core.rs`; the SIMD builds compile `shoal-llm`'s
//! `simd128` kernels (cargo feature `simd` → `shoal-llm/wasm-simd`), the relaxed build its
//! relaxed-SIMD dot product (`relaxed` → `shoal-llm/wasm-relaxed-simd`).
//!
//! `web/worker.js` drives these exports (one generation at a time per worker):
//! - [`chat_manifest_files`] / [`chat_verify_file`]: a chat manifest's chunk list, and one
//!   downloaded chunk checked (size, SHA-256, BLAKE2b) before it is cached.
//! - [`gguf_header`]: the start of a GGUF a user brings, checked before the rest is read or
//!   downloaded: an unsupported architecture, tensor type or tokenizer is refused by name.
//! - [`ChatEngine::create`]: every chunk and the whole file verified
//!   (`node_lite::weights::chat::ChatManifest`), then the engine built.
//!   [`ChatEngine::import`] (`fromGguf` in JS): a user's GGUF → the same manifest (chunked and hashed like every
//!   weight; the worker caches the chunks) and the engine.
//! - [`ChatEngine::start`] / [`ChatEngine::step`] / [`ChatEngine::cancel`]: one prefill block or
//!   one token per `step`, so the worker returns to its event loop between steps and a Stop
//!   takes effect at once. Events are JSON strings.
//! - [`chat_self_test`]: every kernel of this build against the f64 reference (e2e);
//!   [`ChatEngine::prompt_tokens`], [`ChatEngine::teacher_force`], [`ChatEngine::first_logits`]:
//!   the golden test against llama.cpp in Chromium; [`ChatEngine::forced_margins`]: split
//!   workers' answers against one instance.

use js_sys::{Array, Uint8Array};
use node_lite::weights::chat::{ChatManifest, MAX_CHAT_BYTES};
use serde::Deserialize;
use shoal_llm::gguf::{Gguf, GgufError};
use shoal_llm::rag::{Source, cited, rag_messages};
use shoal_llm::{
    Engine, Exchange, Finish, GenParams, Generation, Generator, LlmError, Logits, Message,
    Sampling, Session, Step,
};
use wasm_bindgen::prelude::*;

use crate::worker_core::weights_error;

/// Most bytes of message text one request may carry (the CLI's limit: the context holds far
/// less, so anything bigger is refused before it is tokenized).
const MAX_PROMPT_BYTES: usize = 1 << 20;
/// Most passages an "Answer from my documents" request may carry.
const MAX_SOURCES: usize = 16;

/// An error for JS as `file\u{1f}message` (the file at fault, if any), like `worker_core.rs`,
/// so the worker can drop exactly that cached chunk and fetch it again.
pub(crate) fn plain(e: impl std::fmt::Display) -> JsError {
    JsError::new(&format!("\u{1f}{e}"))
}

/// Milliseconds from the worker's `performance.now()` (falls back to `Date.now()`).
pub(crate) fn now_ms() -> f64 {
    let perf = js_sys::Reflect::get(&js_sys::global(), &"performance".into()).ok();
    perf.and_then(|p| {
        let now = js_sys::Reflect::get(&p, &"now".into()).ok()?;
        let f: &js_sys::Function = now.dyn_ref()?;
        f.call0(&p).ok()?.as_f64()
    })
    .unwrap_or_else(js_sys::Date::now)
}

/// A chat manifest's chunks as JSON `{model, arch, total, sha256, files: [{file, size,
/// sha256}]}`, after [`ChatManifest::parse`]'s checks (format, sizes, safe names).
#[wasm_bindgen]
pub fn chat_manifest_files(manifest_json: &[u8]) -> Result<String, JsError> {
    let m = ChatManifest::parse(manifest_json).map_err(weights_error)?;
    let files: Vec<serde_json::Value> = m
        .chunks
        .iter()
        .map(|f| serde_json::json!({"file": f.file, "size": f.size, "sha256": f.sha256}))
        .collect();
    Ok(serde_json::json!({
        "model": m.model, "arch": m.arch, "total": m.total_size, "sha256": m.sha256,
        "types": m.tensor_types, "files": files,
    })
    .to_string())
}

/// Check one chunk against the chat manifest entry of the same name.
#[wasm_bindgen]
pub fn chat_verify_file(manifest_json: &[u8], name: &str, bytes: &[u8]) -> Result<(), JsError> {
    let m = ChatManifest::parse(manifest_json).map_err(weights_error)?;
    let entry = m
        .chunks
        .iter()
        .find(|f| f.file == name)
        .ok_or_else(|| JsError::new(&format!("\u{1f}{name} is not in the manifest")))?;
    entry.verify(bytes).map_err(weights_error)
}

fn describe_header(g: &Gguf, cfg: &shoal_llm::Config) -> serde_json::Value {
    let mut types = std::collections::BTreeMap::<String, u64>::new();
    for t in g.tensors.values() {
        *types.entry(t.ty.name().to_string()).or_insert(0) += 1;
    }
    serde_json::json!({
        "complete": true, "arch": cfg.arch.name(), "name": cfg.name, "layers": cfg.n_layers,
        "dim": cfg.dim, "context": cfg.context, "vocab": cfg.vocab, "types": types,
        "header_bytes": g.data_offset,
    })
}

/// Check the first `prefix.len()` bytes of a GGUF of `file_len` bytes. Returns JSON
/// `{"complete": false}` when the header goes on past the prefix (read more and call again),
/// else the model's facts (`arch`, `name`, `types`, `context`, …). Errors name what is wrong:
/// `not a GGUF file`, `tensor X: type Q5_K is not supported`, `unsupported model:
/// architecture "gpt2"`, a truncated file (tensor data past its end).
#[wasm_bindgen]
pub fn gguf_header(prefix: &[u8], file_len: f64) -> Result<String, JsError> {
    if !(file_len.is_finite() && file_len >= 0.0) {
        return Err(plain(format!("bad file length {file_len}")));
    }
    let len = file_len as u64;
    if len > MAX_CHAT_BYTES {
        return Err(plain(format!(
            "the file is {len} bytes, over the {MAX_CHAT_BYTES}-byte limit"
        )));
    }
    match Gguf::parse(prefix, Some(len)) {
        Ok(g) => {
            let cfg = shoal_llm::check_supported(&g).map_err(plain)?;
            Ok(describe_header(&g, &cfg).to_string())
        }
        Err(GgufError::Truncated { .. }) if (prefix.len() as u64) < len => {
            Ok(serde_json::json!({"complete": false}).to_string())
        }
        Err(e) => Err(plain(e)),
    }
}

/// Every kernel this build has, against the f64 reference, for every block type: JSON
/// `{tier, kernels: [{kernel, worst}]}` (`kernel` = `tier/type`), or an error naming the first
/// mismatch.
#[wasm_bindgen]
pub fn chat_self_test() -> Result<String, JsError> {
    let cases = shoal_llm::kernels::self_test().map_err(|e| JsError::new(&e))?;
    let kernels: Vec<serde_json::Value> = cases
        .into_iter()
        .map(|(kernel, worst)| serde_json::json!({"kernel": kernel, "worst": worst}))
        .collect();
    Ok(
        serde_json::json!({"tier": shoal_llm::kernels::kernel_name(), "kernels": kernels})
            .to_string(),
    )
}

/// The numbered-source conversation for a grounded answer (`shoal_llm::rag`).
#[derive(Deserialize)]
struct RagRequest {
    question: String,
    sources: Vec<RagSource>,
}

#[derive(Deserialize)]
struct RagSource {
    #[serde(default)]
    label: String,
    text: String,
}

/// A chat request from the page (`window.shoal.chat`'s options, OpenAI names).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChatRequest {
    #[serde(default)]
    messages: Vec<Message>,
    /// Instead of `messages`: answer `question` from numbered `sources`.
    #[serde(default)]
    rag: Option<RagRequest>,
    #[serde(default)]
    max_tokens: Option<usize>,
    #[serde(default)]
    temperature: Option<f32>,
    #[serde(default)]
    top_p: Option<f32>,
    #[serde(default)]
    top_k: Option<usize>,
    #[serde(default)]
    repeat_penalty: Option<f32>,
    #[serde(default)]
    seed: Option<u64>,
    #[serde(default)]
    stop: Vec<String>,
}

const DEFAULT_MAX_TOKENS: usize = 512;

impl ChatRequest {
    /// A request as the page sends it (JSON) → the conversation, the number of sources it
    /// cites from, and the generation parameters for a model of `context` positions.
    pub(crate) fn parse(
        json: &str,
        context: usize,
    ) -> Result<(Vec<Message>, usize, GenParams), JsError> {
        let invalid = |e: String| plain(format!("invalid chat request: {e}"));
        let req: ChatRequest = serde_json::from_str(json).map_err(|e| invalid(e.to_string()))?;
        let (messages, sources) = req.conversation().map_err(invalid)?;
        let params = req.params(context).map_err(invalid)?;
        Ok((messages, sources, params))
    }

    /// The conversation to template and the number of sources it cites from.
    fn conversation(&self) -> Result<(Vec<Message>, usize), String> {
        let (messages, n_sources) = match &self.rag {
            Some(r) => {
                if !self.messages.is_empty() {
                    return Err("give either messages or rag, not both".into());
                }
                if r.question.trim().is_empty() {
                    return Err("the question is empty".into());
                }
                if r.sources.len() > MAX_SOURCES {
                    return Err(format!(
                        "{} sources (at most {MAX_SOURCES})",
                        r.sources.len()
                    ));
                }
                let sources: Vec<Source> = r
                    .sources
                    .iter()
                    .map(|s| Source {
                        label: s.label.clone(),
                        text: s.text.clone(),
                    })
                    .collect();
                (rag_messages(&r.question, &sources), sources.len())
            }
            None => (self.messages.clone(), 0),
        };
        if messages.is_empty() {
            return Err("no messages".into());
        }
        for m in &messages {
            if !matches!(m.role.as_str(), "system" | "user" | "assistant") {
                return Err(format!(
                    "message role {:?} (expected system, user or assistant)",
                    m.role
                ));
            }
        }
        let bytes: usize = messages.iter().map(|m| m.content.len()).sum();
        if bytes > MAX_PROMPT_BYTES {
            return Err(format!(
                "the messages hold {bytes} bytes, over the {MAX_PROMPT_BYTES}-byte limit (the model's context holds far less)"
            ));
        }
        Ok((messages, n_sources))
    }

    fn params(&self, context: usize) -> Result<GenParams, String> {
        let d = Sampling::default();
        let sampling = Sampling {
            temperature: self.temperature.unwrap_or(d.temperature),
            top_p: self.top_p.unwrap_or(d.top_p),
            top_k: self.top_k.unwrap_or(d.top_k),
            repeat_penalty: self.repeat_penalty.unwrap_or(d.repeat_penalty),
            seed: self.seed.unwrap_or(d.seed),
            ..d
        };
        sampling.validate()?;
        let max_tokens = self.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 || max_tokens > context {
            return Err(format!(
                "max_tokens {max_tokens} not in [1, {context}] (the model's context)"
            ));
        }
        if self.stop.len() > 8 || self.stop.iter().any(|s| s.len() > 256) {
            return Err("at most 8 stop strings of ≤ 256 bytes".into());
        }
        Ok(GenParams {
            max_tokens,
            sampling,
            stop: self.stop.clone(),
            ..GenParams::default()
        })
    }
}

/// This worker's place among chat workers that split every forward pass (rank 0 of 1: alone).
/// The parts cross through `exchange(parts: Uint32Array, mine: Float32Array, others:
/// Float32Array)`, a JS function (worker.js) over a `SharedArrayBuffer` the workers share; the
/// two float arrays are views of this instance's memory, valid for the call only.
struct JsPeers {
    rank: usize,
    ranks: usize,
    exchange: js_sys::Function,
}

impl Exchange for JsPeers {
    fn ranks(&self) -> (usize, usize) {
        (self.rank, self.ranks)
    }

    fn exchange(
        &mut self,
        parts: &[usize],
        mine: &[f32],
        others: &mut [f32],
    ) -> Result<(), LlmError> {
        let sizes: Vec<u32> = parts.iter().map(|&p| p as u32).collect();
        let sizes = js_sys::Uint32Array::from(sizes.as_slice());
        // SAFETY: both views are used only by the call below, which allocates nothing in this
        // instance's memory (so it cannot grow and detach them); `others` is borrowed
        // exclusively for the call.
        let (m, o) = unsafe {
            (
                js_sys::Float32Array::view(mine),
                js_sys::Float32Array::view_mut_raw(others.as_mut_ptr(), others.len()),
            )
        };
        self.exchange
            .call3(&JsValue::NULL, &sizes, &m, &o)
            .map(|_| ())
            .map_err(|e| {
                let msg = e
                    .dyn_ref::<js_sys::Error>()
                    .map(|e| String::from(e.message()))
                    .unwrap_or_else(|| format!("{e:?}"));
                LlmError::Peer(msg)
            })
    }
}

/// The generation in progress (`G`: the CPU engine's `Generator` or the GPU engine's).
pub(crate) struct Running<G> {
    pub(crate) generator: G,
    /// Sources a grounded answer cites from (0: a plain chat).
    pub(crate) sources: usize,
}

/// A chat model in this worker: the engine, one conversation's KV cache (a follow-up turn
/// reuses the cached prefix) and at most one generation in progress.
#[wasm_bindgen]
pub struct ChatEngine {
    engine: Engine,
    session: Session,
    running: Option<Running<Generator>>,
    manifest: String,
    peers: Option<JsPeers>,
}

impl ChatEngine {
    fn with(engine: Engine, manifest: ChatManifest) -> ChatEngine {
        let session = engine.model.session();
        ChatEngine {
            engine,
            session,
            running: None,
            manifest: serde_json::to_string(&manifest).unwrap_or_default(),
            peers: None,
        }
    }
}

#[wasm_bindgen]
impl ChatEngine {
    /// Verify `chunks` (an array of `Uint8Array`, manifest order) against the manifest — each
    /// chunk's size and both hashes, then the whole file's SHA-256 — and build the engine.
    pub fn create(manifest_json: &[u8], chunks: Array) -> Result<ChatEngine, JsError> {
        let manifest = ChatManifest::parse(manifest_json).map_err(weights_error)?;
        let chunks: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| Uint8Array::new(&c).to_vec())
            .collect();
        let bytes = manifest.assemble(chunks).map_err(weights_error)?;
        let engine = Engine::from_gguf(&bytes, 1).map_err(plain)?;
        drop(bytes);
        Ok(Self::with(engine, manifest))
    }

    /// A user's GGUF file (`bytes`, all of it): refuse what the engine cannot run, describe it
    /// as verified chunks (`ChatManifest::describe`, model id `id`) and build the engine. The
    /// worker caches the chunks (slices of `bytes`, the manifest's sizes) and
    /// [`ChatEngine::manifest`]; later loads go through [`ChatEngine::create`].
    #[wasm_bindgen(js_name = fromGguf)]
    pub fn import(bytes: Vec<u8>, id: &str, source: &str) -> Result<ChatEngine, JsError> {
        if bytes.len() as u64 > MAX_CHAT_BYTES {
            return Err(plain(format!(
                "the file is {} bytes, over the {MAX_CHAT_BYTES}-byte limit",
                bytes.len()
            )));
        }
        let g = Gguf::parse(&bytes, None).map_err(plain)?;
        let cfg = shoal_llm::check_supported(&g).map_err(plain)?;
        let mut types = std::collections::BTreeMap::new();
        for t in g.tensors.values() {
            *types.entry(t.ty.name().to_string()).or_insert(0u64) += 1;
        }
        let engine = Engine::from_gguf(&bytes, 1).map_err(plain)?;
        let config = serde_json::json!({
            "layers": cfg.n_layers, "dim": cfg.dim, "ffn": cfg.ffn, "heads": cfg.n_heads,
            "kv_heads": cfg.n_kv_heads, "context": cfg.context, "vocab": cfg.vocab,
            "rope_theta": cfg.rope_theta, "tokenizer_pre": engine.tokenizer.pre, "name": cfg.name,
        });
        let (manifest, chunks) =
            ChatManifest::describe(id, &bytes, cfg.arch.name(), types, config, source);
        drop(chunks);
        drop(bytes);
        Ok(Self::with(engine, manifest))
    }

    /// The manifest (JSON) the engine was verified against or described by.
    pub fn manifest(&self) -> String {
        self.manifest.clone()
    }

    /// JSON `{name, arch, context, vocab, layers, kernel, bytes_per_token}`.
    pub fn info(&self) -> String {
        let c = &self.engine.model.cfg;
        serde_json::json!({
            "name": c.name, "arch": c.arch.name(), "context": c.context, "vocab": c.vocab,
            "layers": c.n_layers, "dim": c.dim, "kernel": self.engine.model.tier().name(),
            "bytes_per_token": self.engine.model.bytes_per_token(),
        })
        .to_string()
    }

    /// Begin answering `request_json` (a [`ChatRequest`]): the conversation is templated with
    /// the GGUF's own chat template and tokenized; nothing runs yet. Returns JSON
    /// `{prompt_tokens}` (their number). A generation still in progress is dropped.
    pub fn start(&mut self, request_json: &str) -> Result<String, JsError> {
        self.running = None;
        let (messages, sources, params) =
            ChatRequest::parse(request_json, self.engine.model.cfg.context)?;
        let prompt = self.engine.prompt_tokens(&messages).map_err(plain)?;
        let generator = self
            .engine
            .start(&mut self.session, &prompt, &params, &now_ms)
            .map_err(plain)?;
        self.running = Some(Running { generator, sources });
        Ok(serde_json::json!({"prompt_tokens": prompt.len()}).to_string())
    }

    /// One unit of work: a prefill block (`{"type":"prefill","done","total"}`), a token
    /// (`{"type":"token","id","text","index"}`), or the end (`{"type":"done","finish",
    /// "result":{text, prompt_tokens, tokens, prefill_tok_s, decode_tok_s}, "first_token_ms",
    /// "cited":[n…]}`; `cited`: the sources the answer cites, for a grounded answer).
    pub fn step(&mut self) -> Result<String, JsError> {
        let Some(run) = self.running.as_mut() else {
            return Err(plain("no generation in progress"));
        };
        let peers = self.peers.as_mut().map(|p| p as &mut dyn Exchange);
        let step = match run
            .generator
            .step_ranked(&self.engine, &mut self.session, &now_ms, peers)
        {
            Ok(s) => s,
            Err(e) => {
                self.running = None;
                // The cache may hold a half-run block: start the next turn from scratch.
                self.session = self.engine.model.session();
                return Err(plain(e));
            }
        };
        step_reply(step, &mut self.running, |g| g.finish(&now_ms))
    }

    /// Stop the generation in progress: the next [`ChatEngine::step`] ends it (`finish`:
    /// `cancelled`).
    pub fn cancel(&mut self) {
        if let Some(r) = self.running.as_mut() {
            r.generator.cancel();
        }
    }

    /// Split every forward pass with other chat workers: this one is `rank` of `ranks`, and
    /// `exchange(parts, mine, others)` swaps the parts (see `JsPeers`). Every worker of the
    /// group must load the same model and run the same requests and steps. `ranks ≤ 1` (or no
    /// function) makes this worker compute alone again. Where the model's shape allows, the
    /// workers split it by attention heads and FFN units (tensor parallelism: two exchanges
    /// a layer; `Model::set_split`), else — or with `rows_only` (`?chat_split=rows`, for
    /// comparisons) — by rows of every matrix (five). The cached conversation is dropped: its
    /// cache belongs to the old split.
    #[wasm_bindgen(js_name = setPeers)]
    pub fn set_peers(
        &mut self,
        rank: usize,
        ranks: usize,
        exchange: Option<js_sys::Function>,
        rows_only: Option<bool>,
    ) -> Result<(), JsError> {
        self.peers = match exchange {
            Some(f) if ranks > 1 => {
                if rank >= ranks {
                    return Err(plain(format!("rank {rank} of {ranks}")));
                }
                Some(JsPeers {
                    rank,
                    ranks,
                    exchange: f,
                })
            }
            _ => None,
        };
        match &self.peers {
            Some(p) if rows_only != Some(true) => self.engine.model.set_split(p.rank, p.ranks),
            _ => self.engine.model.set_split(0, 1),
        };
        // An answer in progress keeps its cache: on the all-gather split it continues alone;
        // a tensor-parallel one fails at its next step (`LlmError::CacheLayout`), like any
        // answer whose peer left. Otherwise the next request starts afresh.
        if self.running.is_none() {
            self.session = self.engine.model.session();
        }
        Ok(())
    }

    /// Forget the cached conversation (the next request prefills from the start).
    pub fn reset(&mut self) {
        self.running = None;
        self.session = self.engine.model.session();
    }

    /// The templated prompt's token ids for `messages_json` (OpenAI-shaped messages).
    #[wasm_bindgen(js_name = promptTokens)]
    pub fn prompt_tokens(&self, messages_json: &str) -> Result<Vec<u32>, JsError> {
        let messages: Vec<Message> = serde_json::from_str(messages_json)
            .map_err(|e| plain(format!("invalid messages: {e}")))?;
        self.engine.prompt_tokens(&messages).map_err(plain)
    }

    /// Run `prompt`, then feed `forced` one token at a time on a fresh cache (the
    /// conversation's is kept; one instance, whatever the split); `each(logits, t)` sees the
    /// logits that pick each forced token `t`.
    fn teacher_forced(
        &self,
        prompt: &[u32],
        forced: &[u32],
        mut each: impl FnMut(&[f32], u32) -> Result<(), JsError>,
    ) -> Result<(), JsError> {
        let model = &self.engine.model;
        let mut s = model.session();
        let mut logits = model.forward(&mut s, prompt, Logits::Last).map_err(plain)?;
        for (i, &t) in forced.iter().enumerate() {
            each(&logits, t)?;
            if i + 1 < forced.len() {
                logits = model.forward(&mut s, &[t], Logits::Last).map_err(plain)?;
            }
        }
        Ok(())
    }

    /// Teacher-forced greedy picks (the golden test): the argmax after the prompt and after
    /// each forced token but the last (`forced.len()` ids).
    #[wasm_bindgen(js_name = teacherForce)]
    pub fn teacher_force(&self, prompt: Vec<u32>, forced: Vec<u32>) -> Result<Vec<u32>, JsError> {
        let mut out = Vec::with_capacity(forced.len());
        self.teacher_forced(&prompt, &forced, |l, _| {
            out.push(shoal_llm::sample::argmax(l));
            Ok(())
        })?;
        Ok(out)
    }

    /// The logits after `prompt` (fresh cache), for comparing with a reference by cosine.
    #[wasm_bindgen(js_name = firstLogits)]
    pub fn first_logits(&self, prompt: Vec<u32>) -> Result<Vec<f32>, JsError> {
        let model = &self.engine.model;
        let mut s = model.session();
        model.forward(&mut s, &prompt, Logits::Last).map_err(plain)
    }

    /// How far each of `forced` lies below this instance's argmax where it was picked
    /// (0: it is the argmax), teacher-forced after `prompt`: checks an answer that split
    /// workers computed, whose partial sums round differently, against one instance up to
    /// near-ties.
    #[wasm_bindgen(js_name = forcedMargins)]
    pub fn forced_margins(&self, prompt: Vec<u32>, forced: Vec<u32>) -> Result<Vec<f32>, JsError> {
        let mut out = Vec::with_capacity(forced.len());
        self.teacher_forced(&prompt, &forced, |l, t| {
            let top = l.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let picked = l
                .get(t as usize)
                .copied()
                .ok_or_else(|| plain(format!("token id {t} out of range")))?;
            out.push(top - picked);
            Ok(())
        })?;
        Ok(out)
    }
}

/// A step's event for the worker (JSON): a prefill block, a token, or — the generation taken
/// out of `running` and turned into its result by `finish` — the end.
pub(crate) fn step_reply<G>(
    step: Step,
    running: &mut Option<Running<G>>,
    finish: impl FnOnce(G) -> Generation,
) -> Result<String, JsError> {
    let ev = match step {
        Step::Prefilled { done, total } => {
            serde_json::json!({"type": "prefill", "done": done, "total": total})
        }
        Step::Token { id, text, index } => {
            serde_json::json!({"type": "token", "id": id, "text": text, "index": index})
        }
        Step::Done(f) => {
            let Some(run) = running.take() else {
                return Err(plain("no generation in progress"));
            };
            done_event(&finish(run.generator), f, run.sources)
        }
    };
    Ok(ev.to_string())
}

fn done_event(g: &Generation, finish: Finish, sources: usize) -> serde_json::Value {
    let cited_sources = if sources > 0 {
        cited(&g.text, sources)
    } else {
        Vec::new()
    };
    serde_json::json!({
        "type": "done",
        "finish": finish,
        "result": {
            "text": g.text, "prompt_tokens": g.prompt_tokens, "tokens": g.tokens,
            "prefill_tok_s": g.prefill_tok_s, "decode_tok_s": g.decode_tok_s,
        },
        "first_token_ms": g.first_token_ms,
        "cited": cited_sources,
    })
}
