//! The assistant on WebGPU: `shoal-llm-gpu` (burn on the browser's WebGPU) behind the same
//! request and event shapes as the CPU [`ChatEngine`](crate::chat_core::ChatEngine). Only the
//! `shoal-worker` binary has it (cargo feature `webgpu`); `web/worker.js` picks it when the
//! page asks for `chat_backend=webgpu` and the browser has an adapter, else the CPU engine.
//!
//! Every call that touches the device is `async` (WebGPU reads cannot block): [`GpuChatEngine::create`]
//! (verify the chunks like the CPU engine, start burn's runtime once per worker, dequantize and
//! upload), [`GpuChatEngine::step`] (one prefill block, or one token read back as an id),
//! and the golden probes.

use std::cell::RefCell;

use js_sys::{Array, Uint8Array};
use node_lite::weights::chat::ChatManifest;
use shoal_llm::Message;
use shoal_llm_gpu::{
    GpuChat, GpuDevice, GpuError, GpuGenerator, GpuModel, GpuSession, LoadOptions, Precision,
};
use wasm_bindgen::prelude::*;

use crate::chat_core::{ChatRequest, Running, now_ms, plain, step_reply};
use crate::worker_core::weights_error;

thread_local! {
    /// burn starts one wgpu runtime per adapter and process (here: per worker): found once,
    /// cloned by every later load.
    static DEVICE: RefCell<Option<GpuDevice>> = const { RefCell::new(None) };
}

async fn device() -> Result<GpuDevice, GpuError> {
    if let Some(d) = DEVICE.with(|d| d.borrow().clone()) {
        return Ok(d);
    }
    let d = GpuDevice::init().await?;
    DEVICE.with(|cell| *cell.borrow_mut() = Some(d.clone()));
    Ok(d)
}

/// A chat model on this worker's WebGPU device: weights dequantized once and uploaded, one
/// conversation's KV cache on the device, at most one generation in progress.
#[wasm_bindgen]
pub struct GpuChatEngine {
    chat: GpuChat,
    session: GpuSession,
    running: Option<Running<GpuGenerator>>,
    adapter: String,
    manifest: String,
}

#[wasm_bindgen]
impl GpuChatEngine {
    /// Verify `chunks` (manifest order) against the manifest exactly as the CPU engine does,
    /// then load the model onto the GPU. `precision`: `"f16"` (half the memory; needs a device
    /// with f16 shaders) or anything else for f32.
    pub async fn create(
        manifest_json: Vec<u8>,
        chunks: Array,
        precision: Option<String>,
    ) -> Result<GpuChatEngine, JsError> {
        let manifest = ChatManifest::parse(&manifest_json).map_err(weights_error)?;
        let chunks: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| Uint8Array::new(&c).to_vec())
            .collect();
        let bytes = manifest.assemble(chunks).map_err(weights_error)?;
        let dev = device().await.map_err(plain)?;
        let precision = match precision.as_deref() {
            Some("f16") if dev.f16 => Precision::F16,
            Some("f16") => return Err(plain(format!("{} has no f16 shaders", dev.adapter))),
            _ => Precision::F32,
        };
        let opts = LoadOptions {
            precision,
            ..LoadOptions::default()
        };
        let chat = GpuChat::load(&dev, &bytes, &opts).map_err(plain)?;
        drop(bytes);
        let session = chat.session();
        Ok(GpuChatEngine {
            chat,
            session,
            running: None,
            // A browser may withhold the adapter's name (wgpu then reports " (BrowserWebGpu)").
            adapter: if dev.adapter.starts_with(" (") {
                "WebGPU".into()
            } else {
                dev.adapter
            },
            manifest: serde_json::to_string(&manifest).unwrap_or_default(),
        })
    }

    /// The manifest (JSON) the engine was verified against.
    pub fn manifest(&self) -> String {
        self.manifest.clone()
    }

    /// JSON `{name, arch, context, vocab, layers, dim, device: "webgpu", kernel, adapter,
    /// precision, bytes_per_token}` (`bytes_per_token`: weight bytes on the device).
    pub fn info(&self) -> String {
        let m = &self.chat.model;
        let c = &m.cfg;
        let precision = match m.options().precision {
            Precision::F16 => "f16",
            _ => "f32",
        };
        serde_json::json!({
            "name": c.name, "arch": c.arch.name(), "context": c.context, "vocab": c.vocab,
            "layers": c.n_layers, "dim": c.dim, "device": "webgpu",
            "kernel": format!("burn WebGPU {precision}"), "adapter": self.adapter,
            "precision": precision, "bytes_per_token": m.weight_bytes(),
        })
        .to_string()
    }

    /// Begin answering `request_json` (the CPU engine's request shape); nothing runs yet.
    /// Returns JSON `{prompt_tokens}` (their number).
    pub fn start(&mut self, request_json: &str) -> Result<String, JsError> {
        self.running = None;
        let (messages, sources, params) =
            ChatRequest::parse(request_json, self.chat.model.cfg.context)?;
        let prompt = self.chat.prompt_tokens(&messages).map_err(plain)?;
        let generator = self
            .chat
            .start(&mut self.session, &prompt, &params, &now_ms)
            .map_err(plain)?;
        self.running = Some(Running { generator, sources });
        Ok(serde_json::json!({"prompt_tokens": prompt.len()}).to_string())
    }

    /// One unit of work, as the CPU engine's `step` (the same JSON events); asynchronous:
    /// a token is one forward pass on the device and one id read back.
    pub async fn step(&mut self) -> Result<String, JsError> {
        let Some(run) = self.running.as_mut() else {
            return Err(plain("no generation in progress"));
        };
        let step = match run
            .generator
            .step(&self.chat, &mut self.session, &now_ms)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                self.running = None;
                self.session = self.chat.session();
                return Err(plain(e));
            }
        };
        step_reply(step, &mut self.running, |g| g.finish(&now_ms))
    }

    /// Stop the generation in progress at its next step.
    pub fn cancel(&mut self) {
        if let Some(r) = self.running.as_mut() {
            r.generator.cancel();
        }
    }

    /// Forget the cached conversation.
    pub fn reset(&mut self) {
        self.running = None;
        self.session = self.chat.session();
    }

    /// The templated prompt's token ids for `messages_json`.
    #[wasm_bindgen(js_name = promptTokens)]
    pub fn prompt_tokens(&self, messages_json: &str) -> Result<Vec<u32>, JsError> {
        let messages: Vec<Message> = serde_json::from_str(messages_json)
            .map_err(|e| plain(format!("invalid messages: {e}")))?;
        self.chat.prompt_tokens(&messages).map_err(plain)
    }

    /// Teacher-forced greedy picks (the golden test), as the CPU engine's `teacherForce`:
    /// the argmax after `prompt` and after each forced token but the last. A fresh cache.
    #[wasm_bindgen(js_name = teacherForce)]
    pub async fn teacher_force(
        &self,
        prompt: Vec<u32>,
        forced: Vec<u32>,
    ) -> Result<Vec<u32>, JsError> {
        let model = &self.chat.model;
        let mut s = model.session();
        let mut out = Vec::with_capacity(forced.len());
        let mut next: &[u32] = &prompt;
        for (i, t) in forced.iter().enumerate() {
            let logits = model
                .forward(&mut s, next, true)
                .map_err(plain)?
                .ok_or_else(|| plain("the forward pass returned no logits"))?;
            out.push(GpuModel::read_argmax(logits).await.map_err(plain)?);
            if i + 1 == forced.len() {
                break;
            }
            next = std::slice::from_ref(t);
        }
        Ok(out)
    }

    /// The logits after `prompt` (a fresh cache), for comparing with a reference by cosine.
    #[wasm_bindgen(js_name = firstLogits)]
    pub async fn first_logits(&self, prompt: Vec<u32>) -> Result<Vec<f32>, JsError> {
        let model = &self.chat.model;
        let mut s = model.session();
        let logits = model
            .forward(&mut s, &prompt, true)
            .map_err(plain)?
            .ok_or_else(|| plain("the forward pass returned no logits"))?;
        GpuModel::read_logits(logits).await.map_err(plain)
    }
}
