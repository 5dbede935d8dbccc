//! Shared body of the model-worker binaries (`shoal-worker`: WebGPU + CPU, `shoal-worker-cpu`:
//! CPU only, a much smaller download for browsers without WebGPU, `shoal-worker-cpu-simd`: the
//! same with the wasm `simd128` GEMM kernel, `shoal-worker-cpu-relaxed`: plus relaxed SIMD). Included by each binary with `#[path]`; cargo
//! feature `webgpu` (on for `shoal-worker` only) adds the WebGPU branch, `simd` (on for
//! `shoal-worker-cpu-simd` and `shoal-worker`) the SIMD kernel, `relaxed` the relaxed-SIMD one.
//!
//! `web/worker.js` fetches and caches the weight files and drives these exports:
//! - [`manifest_files`]: parse + sanity-check a manifest, list the files to fetch.
//! - [`verify_file`]: check one downloaded file (size, SHA-256, BLAKE2b) before caching it.
//! - [`Engine::create`]: verify everything again, build MiniLM on WebGPU (burn `wgpu`), the CPU
//!   (`cpu`: the fused fast encoder, `node_lite::model::fast`) or burn `flex` (`flex`, kept for
//!   comparison).
//! - [`kernel_self_test`]: the GEMM kernels against an f64 reference on odd shapes (e2e).
//! - [`Engine::embed`]: unit vectors, flattened `n × 384`, with asynchronous device reads.

use std::rc::Rc;

use burn::prelude::Device;
use js_sys::{Array, Float32Array, Promise, Uint8Array};
use node_lite::model::fast::kernel::Isa;
use node_lite::model::fast::qkernel::WeightBits;
use node_lite::model::{Embedder, Precision};
use node_lite::weights::{Manifest, VerifiedWeights, WeightsError};
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::future_to_promise;

/// Error for JS whose message is the file at fault, if any, as `file\u{1f}message`, so the
/// worker can discard exactly that cached file and fetch it again.
pub(crate) fn weights_error(e: WeightsError) -> JsError {
    let file = match &e {
        WeightsError::SizeMismatch { file, .. } | WeightsError::HashMismatch { file } => {
            file.as_str()
        }
        _ => "",
    };
    JsError::new(&format!("{file}\u{1f}{e}"))
}

/// The files a manifest lists, as JSON `[{file, size, sha256}]` (tokenizer last), after the
/// manifest passed [`Manifest::parse`]'s checks (format, sizes, safe names).
#[wasm_bindgen]
pub fn manifest_files(manifest_json: &[u8]) -> Result<String, JsError> {
    let m = Manifest::parse(manifest_json).map_err(weights_error)?;
    let files: Vec<serde_json::Value> = m
        .chunks
        .iter()
        .chain(std::iter::once(&m.tokenizer))
        .map(|f| serde_json::json!({"file": f.file, "size": f.size, "sha256": f.sha256}))
        .collect();
    Ok(serde_json::json!({"variant": m.variant.as_str(), "files": files}).to_string())
}

/// Check one file against the manifest entry of the same name.
#[wasm_bindgen]
pub fn verify_file(manifest_json: &[u8], name: &str, bytes: &[u8]) -> Result<(), JsError> {
    let m = Manifest::parse(manifest_json).map_err(weights_error)?;
    let entry = m
        .chunks
        .iter()
        .chain(std::iter::once(&m.tokenizer))
        .find(|f| f.file == name)
        .ok_or_else(|| JsError::new(&format!("\u{1f}{name} is not in the manifest")))?;
    entry.verify(bytes).map_err(weights_error)
}

/// Run the fast encoder's GEMM self-test for every kernel this build has (f32, then int8 and
/// int12 on each integer tile); returns JSON
/// `[{kernel, cases}]`, or an error naming the first mismatch.
#[wasm_bindgen]
pub fn kernel_self_test() -> Result<String, JsError> {
    use node_lite::model::fast::kernel::self_test;
    use node_lite::model::fast::qkernel::{self, QIsa};
    let mut out = Vec::new();
    for isa in Isa::available() {
        let cases = self_test(isa).map_err(|e| JsError::new(&e))?;
        out.push(serde_json::json!({"kernel": isa.name(), "cases": cases}));
    }
    for isa in QIsa::available() {
        for bits in [WeightBits::Int8, WeightBits::Int12] {
            let cases = qkernel::self_test(isa, bits).map_err(|e| JsError::new(&e))?;
            out.push(serde_json::json!({"kernel": isa.name(bits), "cases": cases}));
        }
    }
    Ok(serde_json::Value::Array(out).to_string())
}

#[wasm_bindgen]
pub struct Engine {
    embedder: Rc<Embedder>,
    backend: String,
}

#[wasm_bindgen]
impl Engine {
    /// Verify `chunks` (an array of `Uint8Array`, manifest order) and `tokenizer`, then
    /// build the model on `backend` (`"webgpu"`, `"cpu"` or `"flex"`).
    pub async fn create(
        manifest_json: Vec<u8>,
        chunks: Array,
        tokenizer: Vec<u8>,
        backend: String,
    ) -> Result<Engine, JsError> {
        let manifest = Manifest::parse(&manifest_json).map_err(weights_error)?;
        let chunks: Vec<Vec<u8>> = chunks
            .iter()
            .map(|c| Uint8Array::new(&c).to_vec())
            .collect();
        let weights =
            VerifiedWeights::verify(manifest, chunks, tokenizer).map_err(weights_error)?;
        let model_error = |e: node_lite::model::ModelError| JsError::new(&format!("\u{1f}{e}"));
        let embedder = match backend.as_str() {
            #[cfg(feature = "webgpu")]
            "webgpu" => {
                let device = Device::wgpu_options()
                    .init_async()
                    .await
                    .map_err(|e| JsError::new(&format!("\u{1f}WebGPU init: {e:?}")))?;
                Embedder::new(&weights, device).map_err(model_error)?
            }
            // The CPU engine runs its dense layers on the integer kernel (`Precision`: int8
            // for the compact f16 download, int12 for the f32 one, f32 in the scalar build,
            // where the integer tile is slower); "cpu-exact" keeps f32 arithmetic throughout.
            "cpu" => {
                Embedder::fast_precision(&weights, Precision::Quantized).map_err(model_error)?
            }
            "cpu-exact" => {
                Embedder::fast_precision(&weights, Precision::Exact).map_err(model_error)?
            }
            "flex" => Embedder::new(&weights, Device::flex()).map_err(model_error)?,
            other => return Err(JsError::new(&format!("\u{1f}unknown backend {other:?}"))),
        };
        Ok(Engine {
            embedder: Rc::new(embedder),
            backend,
        })
    }

    pub fn backend(&self) -> String {
        self.backend.clone()
    }

    /// Which engine and kernel run: `fast-cpu (simd128)`, `fast-cpu (scalar)`, `burn`.
    pub fn engine(&self) -> String {
        self.embedder.engine_name()
    }

    #[wasm_bindgen(js_name = setBatchSize)]
    pub fn set_batch_size(&mut self, n: usize) {
        if let Some(e) = Rc::get_mut(&mut self.embedder) {
            e.batch_size = n.max(1);
        }
    }

    /// Embed `texts`; resolves to a `Float32Array` of `texts.length × 384` floats.
    pub fn embed(&self, texts: Vec<String>) -> Promise {
        let embedder = self.embedder.clone();
        future_to_promise(async move {
            let vectors = embedder
                .embed_async(&texts)
                .await
                .map_err(|e| JsValue::from(JsError::new(&format!("\u{1f}{e}"))))?;
            let flat: Vec<f32> = vectors.concat();
            Ok(Float32Array::from(flat.as_slice()).into())
        })
    }
}
