//! all-MiniLM-L6-v2 sentence embeddings: tokenise → BERT → mean pooling over the real tokens
//! → L2 normalisation.
//!
//! Two engines run the BERT: [`fast`] (the default CPU path, [`Backend::Cpu`]: a fused
//! encoder without padding, SIMD GEMM natively and in wasm, dense layers on integer weights by
//! default ([`Precision`])) and burn (`flex` on the CPU as
//! [`Backend::Flex`], `wgpu` as [`Backend::Gpu`]). Both take their weights from the same
//! verified burn record.
//!
//! Inputs are sorted by token length and batched so each burn batch pads only to its own
//! longest member (the fast engine does not pad at all); results come back in input order.
//!
//! Weights arrive verified (`shoal-weights`); `import` (feature `import`) makes them from the
//! published `model.safetensors`.

#![warn(missing_docs)]
#![deny(unsafe_code)]

mod bert;
#[cfg(feature = "cpu")]
pub mod fast;
#[cfg(feature = "import")]
pub mod import;
pub mod tokenize;

pub use bert::{Bert, BertConfig};
use burn::prelude::*;
use burn::store::{BurnpackStore, HalfPrecisionAdapter, ModuleSnapshot};
use tokenize::TextTokenizer;

use shoal_weights::{Variant, VerifiedWeights};

/// Maximum tokens per input, counting `[CLS]` and `[SEP]` (sentence-transformers' setting).
pub const MAX_SEQ_LEN: usize = 256;
/// Default number of sentences per forward pass.
pub const DEFAULT_BATCH: usize = 32;

/// Why loading the model or embedding text failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ModelError {
    /// `tokenizer.json` did not load, a text did not encode, or token ids exceed the model's
    /// vocabulary or positions.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// The burn record does not fit the model (missing or mis-shaped tensors).
    #[error("loading weights: {0}")]
    Load(String),
    /// The manifest's `config` is not a usable [`BertConfig`].
    #[error("model config in manifest: {0}")]
    Config(String),
    /// burn could not copy the output tensor back from its device (GPU readback).
    #[error("reading results from the device: {0}")]
    Readback(String),
    /// The engine asked for (named by its `Debug` form) is not compiled in: see the `cpu` and
    /// `gpu` features.
    #[error("backend {0:?} is not compiled into this build")]
    BackendUnavailable(String),
}

/// How the fast CPU engine ([`Backend::Cpu`]) computes its dense layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Integer weights where a SIMD integer tile exists (AVX-512 VNNI, AVX-VNNI, AVX2, wasm
    /// `simd128`): quantized per column at load, int12 from the f32 record (min cosine ≥ 0.9999
    /// to the reference) and int8 from the compact f16 one (≥ 0.995); activations 14-bit per
    /// row. Without SIMD the integer tile is slower than the f32 one, so that build stays f32.
    #[default]
    Quantized,
    /// f32 arithmetic throughout (the reference in tests).
    Exact,
}

impl Precision {
    /// Parse `quantized` or `exact` (the words of [`as_str`](Self::as_str)).
    pub fn parse(s: &str) -> Option<Precision> {
        match s {
            "quantized" => Some(Precision::Quantized),
            "exact" => Some(Precision::Exact),
            _ => None,
        }
    }

    /// `quantized` or `exact`.
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::Quantized => "quantized",
            Precision::Exact => "exact",
        }
    }

    /// The integer weight width this precision gives `variant`'s weights on a machine whose
    /// best f32 kernel is `isa` (`None`: f32).
    #[cfg(feature = "cpu")]
    pub fn weight_bits(
        self,
        variant: Variant,
        isa: fast::kernel::Isa,
    ) -> Option<fast::qkernel::WeightBits> {
        use fast::qkernel::{QIsa, WeightBits};
        match self {
            Precision::Exact => None,
            Precision::Quantized if QIsa::for_isa(isa) == QIsa::Scalar => None,
            Precision::Quantized => Some(match variant {
                Variant::F16 => WeightBits::Int8,
                Variant::F32 => WeightBits::Int12,
            }),
        }
    }
}

/// Which engine runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The fused CPU encoder ([`fast`]): SIMD GEMM, no padding, all cores natively.
    Cpu,
    /// burn `flex` (CPU), kept for comparison.
    Flex,
    /// burn `wgpu` (Vulkan/Metal/DX12 natively, WebGPU in a browser).
    Gpu,
}

impl Backend {
    /// Parse `cpu`, `flex` or `gpu`.
    pub fn parse(s: &str) -> Option<Backend> {
        match s {
            "cpu" => Some(Backend::Cpu),
            "flex" => Some(Backend::Flex),
            "gpu" => Some(Backend::Gpu),
            _ => None,
        }
    }

    /// Human-readable engine name (benchmark tables, logs).
    pub fn label(self) -> &'static str {
        match self {
            Backend::Cpu => "Shoal fast CPU",
            Backend::Flex => "Shoal burn flex (CPU)",
            Backend::Gpu => "Shoal burn wgpu",
        }
    }

    /// The burn device this backend loads weights on (the fast engine loads through flex).
    pub fn device(self) -> Result<Device, ModelError> {
        match self {
            #[cfg(feature = "cpu")]
            Backend::Cpu | Backend::Flex => Ok(Device::flex()),
            #[cfg(feature = "gpu")]
            Backend::Gpu => Ok(Device::wgpu(Default::default())),
            #[allow(unreachable_patterns)]
            other => Err(ModelError::BackendUnavailable(format!("{other:?}"))),
        }
    }
}

enum Engine {
    Burn {
        model: Bert,
        device: Device,
    },
    #[cfg(feature = "cpu")]
    Fast(fast::FastBert),
}

/// A ready-to-use sentence embedder.
pub struct Embedder {
    engine: Engine,
    tokenizer: TextTokenizer,
    variant: Variant,
    /// Sentences per forward pass.
    pub batch_size: usize,
}

/// Token ids of some inputs, each with its position in the input.
type Group = Vec<(usize, Vec<u32>)>;

/// Token ids of one batch, padded, plus where each row goes in the output.
struct Batch {
    rows: Vec<usize>,
    ids: Vec<i64>,
    mask: Vec<f32>,
    seq: usize,
}

impl Embedder {
    /// Build the model from verified weights on `backend` (the CPU engine at the default
    /// [`Precision`]).
    pub fn load(weights: &VerifiedWeights, backend: Backend) -> Result<Self, ModelError> {
        Self::load_with(weights, backend, Precision::default())
    }

    /// [`load`](Self::load) with the CPU engine's precision (other backends ignore it).
    #[cfg_attr(not(feature = "cpu"), allow(unused_variables))]
    pub fn load_with(
        weights: &VerifiedWeights,
        backend: Backend,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        match backend {
            #[cfg(feature = "cpu")]
            Backend::Cpu => Self::fast_precision(weights, precision),
            other => Self::new(weights, other.device()?),
        }
    }

    /// The fast CPU engine ([`fast::FastBert`]) in f32: weights loaded through burn `flex`,
    /// then packed (the burn model is dropped).
    #[cfg(feature = "cpu")]
    pub fn fast(weights: &VerifiedWeights) -> Result<Self, ModelError> {
        Self::fast_with(weights, fast::kernel::Isa::best())
    }

    /// The fast CPU engine at `precision` on this machine's best kernels (the default engine,
    /// natively and in the browser).
    #[cfg(feature = "cpu")]
    pub fn fast_precision(
        weights: &VerifiedWeights,
        precision: Precision,
    ) -> Result<Self, ModelError> {
        let isa = fast::kernel::Isa::best();
        let bits = precision.weight_bits(weights.manifest.variant, isa);
        Self::fast_opts(weights, isa, bits)
    }

    /// [`fast`](Self::fast) with a given GEMM kernel (tests compare every compiled kernel).
    #[cfg(feature = "cpu")]
    pub fn fast_with(
        weights: &VerifiedWeights,
        isa: fast::kernel::Isa,
    ) -> Result<Self, ModelError> {
        Self::fast_opts(weights, isa, None)
    }

    /// [`fast_with`](Self::fast_with); `quant`: the dense layers on the integer kernel, weights
    /// quantized per column at load to that width, activations per row to 14 bits on each call
    /// (what [`Precision::Quantized`] picks: int12 from f32 weights, int8 from f16).
    #[cfg(feature = "cpu")]
    pub fn fast_opts(
        weights: &VerifiedWeights,
        isa: fast::kernel::Isa,
        quant: Option<fast::qkernel::WeightBits>,
    ) -> Result<Self, ModelError> {
        let tile = fast::qkernel::QIsa::for_isa(isa);
        Self::fast_tiles(weights, isa, quant.map(|bits| (tile, bits)))
    }

    /// [`fast_opts`](Self::fast_opts) with the integer tile named too (tests run every tile).
    #[cfg(feature = "cpu")]
    pub fn fast_tiles(
        weights: &VerifiedWeights,
        isa: fast::kernel::Isa,
        quant: Option<(fast::qkernel::QIsa, fast::qkernel::WeightBits)>,
    ) -> Result<Self, ModelError> {
        let (config, model) = Self::load_bert(weights, &Device::flex())?;
        let fast = fast::FastBert::from_bert_opts(&model, &config, isa, quant)?;
        drop(model);
        Ok(Self {
            engine: Engine::Fast(fast),
            tokenizer: TextTokenizer::from_json(&weights.tokenizer)?,
            variant: weights.manifest.variant,
            batch_size: DEFAULT_BATCH,
        })
    }

    /// Build the burn model from verified weights on `device`.
    pub fn new(weights: &VerifiedWeights, device: Device) -> Result<Self, ModelError> {
        let (_, model) = Self::load_bert(weights, &device)?;
        let tokenizer = TextTokenizer::from_json(&weights.tokenizer)?;
        Ok(Self {
            engine: Engine::Burn { model, device },
            tokenizer,
            variant: weights.manifest.variant,
            batch_size: DEFAULT_BATCH,
        })
    }

    /// The burn model with the record's weights (f16 records widened to f32).
    fn load_bert(
        weights: &VerifiedWeights,
        device: &Device,
    ) -> Result<(BertConfig, Bert), ModelError> {
        let config: BertConfig = serde_json::from_value(weights.manifest.config.clone())
            .map_err(|e| ModelError::Config(e.to_string()))?;
        let mut model = config.init(device);
        // A reference to the verified record, not a copy (≈ 90 MB for f32 at load's peak).
        let bytes = burn::tensor::Bytes::from_shared(
            weights.record.clone(),
            burn::tensor::AllocationProperty::Native,
        );
        let mut store = BurnpackStore::from_bytes(Some(bytes));
        if weights.manifest.variant == Variant::F16 {
            store = store.with_from_adapter(HalfPrecisionAdapter::new());
        }
        let result = model
            .load_from(&mut store)
            .map_err(|e| ModelError::Load(e.to_string()))?;
        if !result.missing.is_empty() || !result.errors.is_empty() {
            return Err(ModelError::Load(format!(
                "missing {:?}, errors {:?}",
                result.missing, result.errors
            )));
        }
        Ok((config, model))
    }

    /// Precision of the weights this embedder was loaded from (f16 ones run widened to f32).
    pub fn variant(&self) -> Variant {
        self.variant
    }

    /// The burn device, when burn runs the model (`None` on the fast engine).
    pub fn device(&self) -> Option<&Device> {
        match &self.engine {
            Engine::Burn { device, .. } => Some(device),
            #[cfg(feature = "cpu")]
            Engine::Fast(_) => None,
        }
    }

    /// Which engine runs: `"fast-cpu (avx512)"`, `"burn"`.
    pub fn engine_name(&self) -> String {
        match &self.engine {
            Engine::Burn { .. } => "burn".into(),
            #[cfg(feature = "cpu")]
            Engine::Fast(f) => match f.quant() {
                Some((q, bits)) => format!(
                    "fast-cpu ({}, {}-{})",
                    f.isa().name(),
                    bits.name(),
                    q.tile_name()
                ),
                None => format!("fast-cpu ({})", f.isa().name()),
            },
        }
    }

    /// Token ids of `text` as the model sees them.
    pub fn tokenize(&self, text: &str) -> Result<Vec<u32>, ModelError> {
        self.tokenizer.encode(text)
    }

    /// Embed `texts` (synchronous device reads: CPU, or native GPU).
    pub fn embed<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, ModelError> {
        self.embed_with_progress(texts, |_| {})
    }

    /// [`embed`](Self::embed), calling `progress(done)` after each batch.
    pub fn embed_with_progress<S: AsRef<str>>(
        &self,
        texts: &[S],
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        let mut out = vec![Vec::new(); texts.len()];
        let mut done = 0;
        #[cfg(feature = "cpu")]
        if let Engine::Fast(f) = &self.engine {
            for group in self.groups(texts)? {
                done += Self::fast_group(f, &group, &mut out)?;
                progress(done);
            }
            return Ok(out);
        }
        for batch in self.batches(texts)? {
            let pooled = self.forward(&batch)?;
            let data = pooled
                .try_into_data()
                .map_err(|e| ModelError::Readback(format!("{e:?}")))?;
            done += self.scatter(&batch, data, &mut out)?;
            progress(done);
        }
        Ok(out)
    }

    /// Embed `texts` with asynchronous device reads (required on WebGPU in a browser).
    pub async fn embed_async<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, ModelError> {
        #[cfg(feature = "cpu")]
        if let Engine::Fast(_) = &self.engine {
            return self.embed(texts);
        }
        let mut out = vec![Vec::new(); texts.len()];
        for batch in self.batches(texts)? {
            let data = self
                .forward(&batch)?
                .into_data_async()
                .await
                .map_err(|e| ModelError::Readback(format!("{e:?}")))?;
            self.scatter(&batch, data, &mut out)?;
        }
        Ok(out)
    }

    /// One group on the fast engine, scattered into `out`.
    #[cfg(feature = "cpu")]
    fn fast_group(
        f: &fast::FastBert,
        group: &[(usize, Vec<u32>)],
        out: &mut [Vec<f32>],
    ) -> Result<usize, ModelError> {
        let seqs: Vec<&[u32]> = group.iter().map(|(_, ids)| ids.as_slice()).collect();
        for ((row, _), v) in group.iter().zip(f.embed(&seqs)?) {
            out[*row] = v;
        }
        Ok(group.len())
    }

    /// Tokenise, sort by length (longest first), and cut into groups of `batch_size`.
    fn groups<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Group>, ModelError> {
        let mut encoded = texts
            .iter()
            .map(|t| self.tokenizer.encode(t.as_ref()))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .enumerate()
            .collect::<Vec<_>>();
        encoded.sort_by_key(|(_, ids)| std::cmp::Reverse(ids.len()));
        let mut groups = Vec::new();
        let mut rest = encoded.into_iter().peekable();
        while rest.peek().is_some() {
            groups.push(rest.by_ref().take(self.batch_size.max(1)).collect());
        }
        Ok(groups)
    }

    /// Tokenise, sort by length, and cut into padded batches (burn).
    fn batches<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Batch>, ModelError> {
        Ok(self
            .groups(texts)?
            .iter()
            .map(|group| {
                let seq = group.iter().map(|(_, ids)| ids.len()).max().unwrap_or(1);
                let mut ids = vec![0i64; group.len() * seq];
                let mut mask = vec![0f32; group.len() * seq];
                for (r, (_, toks)) in group.iter().enumerate() {
                    for (c, &t) in toks.iter().enumerate() {
                        ids[r * seq + c] = i64::from(t);
                        mask[r * seq + c] = 1.0;
                    }
                }
                Batch {
                    rows: group.iter().map(|(i, _)| *i).collect(),
                    ids,
                    mask,
                    seq,
                }
            })
            .collect())
    }

    /// BERT + masked mean pooling + L2 norm, on the device: `[batch, hidden]`.
    fn forward(&self, batch: &Batch) -> Result<Tensor<2>, ModelError> {
        let (model, device) = match &self.engine {
            Engine::Burn { model, device } => (model, device),
            #[cfg(feature = "cpu")]
            Engine::Fast(_) => return Err(ModelError::BackendUnavailable("burn".into())),
        };
        let b = batch.rows.len();
        let ids =
            Tensor::<2, Int>::from_data(TensorData::new(batch.ids.clone(), [b, batch.seq]), device);
        let mask =
            Tensor::<2>::from_data(TensorData::new(batch.mask.clone(), [b, batch.seq]), device);
        let hidden = model.forward(ids, mask.clone());
        let summed = (hidden * mask.clone().unsqueeze_dim::<3>(2)).sum_dim(1); // [b, 1, h]
        let counts = mask.sum_dim(1).clamp_min(1e-9).unsqueeze_dim::<3>(2); // [b, 1, 1]
        let mean = summed / counts;
        let norm = mean
            .clone()
            .powi_scalar(2)
            .sum_dim(2)
            .sqrt()
            .clamp_min(1e-12);
        let [_, _, h] = mean.dims();
        Ok((mean / norm).reshape([b, h]))
    }

    fn scatter(
        &self,
        batch: &Batch,
        data: TensorData,
        out: &mut [Vec<f32>],
    ) -> Result<usize, ModelError> {
        let flat: Vec<f32> = data
            .try_into_vec()
            .map_err(|e| ModelError::Readback(format!("{e:?}")))?;
        let h = flat.len() / batch.rows.len().max(1);
        for (r, &row) in batch.rows.iter().enumerate() {
            out[row] = flat[r * h..(r + 1) * h].to_vec();
        }
        Ok(batch.rows.len())
    }
}
