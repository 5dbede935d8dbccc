//! The Llama/Qwen2 forward pass on burn, with the KV cache on the device.
//!
//! Loading: every matrix is dequantized once on the host ([`dequantize_row`], the CPU engine's
//! reference) and uploaded transposed (`[in, out]`, so a product is `x · W`), Q/K/V fused into
//! one matrix and gate/up into another (fewer dispatches per layer). The token embeddings stay
//! on the host in their GGUF blocks: a step uploads its few dequantized rows instead of
//! gathering from a second copy of the largest matrix. The output matrix (the embeddings when
//! they are tied) is split into column chunks that each fit the device's buffer limit.
//!
//! Shapes: WebGPU compiles a pipeline per new tensor shape, so a step's shapes come from small
//! fixed sets — the cache holds `cap` positions (a bucket: 256, 512, 1024, … up to the context)
//! with a mask over the unused ones, and a prefill block of `n` tokens is padded to a power of
//! two (≥ 16; padded rows are computed and ignored, their cache slots are overwritten by the
//! tokens that later take those positions and are masked until then). A decode step is
//! `[1, …]` against the current bucket: after a few buckets' compiles every step reuses them.

use burn::tensor::activation::{silu, softmax};
use burn::tensor::{DType, Device, Int, Tensor, TensorData};
use shoal_llm::gguf::{Gguf, TensorInfo};
use shoal_llm::quant::{GgmlType, dequantize_row};
use shoal_llm::{Arch, Config, LlmError};

use crate::{GpuDevice, GpuError};

/// The number type weights are stored and multiplied in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Precision {
    /// f32 weights and products (4 bytes per weight; the CPU engine's numerics).
    F32,
    /// f16 weights, products with f16 inputs (half the memory and bandwidth; needs a device
    /// with f16 shaders). Norms, attention and the residual stream stay f32.
    F16,
}

/// How to load a model.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadOptions {
    /// Weight precision.
    pub precision: Precision,
    /// Round cached keys and values to f16 (what the CPU engine and llama.cpp's default f16
    /// cache do: the same numerics, hence the same answers). Ignored on a device without f16.
    pub kv_f16: bool,
    /// The smallest cache bucket (positions); buckets double from here up to the context.
    pub min_cache: usize,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            precision: Precision::F32,
            kv_f16: true,
            min_cache: 256,
        }
    }
}

#[derive(Debug, Clone)]
struct Layer {
    /// `[1, d]`.
    attn_norm: Tensor<2>,
    /// `[d, d + 2·kv]`: Q, K, V side by side.
    wqkv: Tensor<2>,
    /// `[1, d + 2·kv]` (Qwen2).
    bqkv: Option<Tensor<2>>,
    /// `[d, d]`.
    wo: Tensor<2>,
    /// `[1, d]`.
    ffn_norm: Tensor<2>,
    /// `[d, 2·ffn]`: gate, up.
    wgu: Tensor<2>,
    /// `[ffn, d]`.
    down: Tensor<2>,
}

/// Token embeddings on the host, in their GGUF blocks.
#[derive(Debug, Clone)]
struct HostRows {
    ty: GgmlType,
    data: Vec<u8>,
    row_bytes: usize,
}

/// A model on the device.
pub struct GpuModel {
    /// Shape.
    pub cfg: Config,
    device: Device,
    opts: LoadOptions,
    /// Whether cached keys/values are rounded to f16 (asked and supported).
    kv_f16: bool,
    embd: HostRows,
    /// Output matrix, transposed, in vocabulary chunks: `[d, chunk]` each.
    out: Vec<Tensor<2>>,
    out_norm: Tensor<2>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    /// RoPE: the partner of each head dimension (itself where nothing rotates).
    perm: Tensor<1, Int>,
    /// RoPE: the sign of the sine term per head dimension (0 where nothing rotates).
    sign: Vec<f32>,
    weight_bytes: u64,
}

impl std::fmt::Debug for GpuModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuModel")
            .field("cfg", &self.cfg)
            .field("opts", &self.opts)
            .field("kv_f16", &self.kv_f16)
            .field("weight_bytes", &self.weight_bytes)
            .finish_non_exhaustive()
    }
}

/// One conversation's state on the device: the KV cache and the tokens in it.
#[derive(Debug, Clone, Default)]
pub struct GpuSession {
    /// Tokens in the cache.
    pub pos: usize,
    /// The cached tokens themselves (to reuse a common prefix).
    pub tokens: Vec<u32>,
    /// Positions the cache tensors hold (0 before the first forward).
    cap: usize,
    /// Per layer, `[kv_heads, cap, head_dim]`.
    k: Vec<Tensor<3>>,
    v: Vec<Tensor<3>>,
}

impl GpuSession {
    /// Forget everything after the first `n` tokens. Nothing on the device changes: slots
    /// past `pos` are masked, and overwritten when positions are reused.
    pub fn truncate(&mut self, n: usize) {
        if n < self.pos {
            self.pos = n;
            self.tokens.truncate(n);
        }
    }

    /// Positions the device cache holds now (a bucket; 0 before the first forward).
    pub fn capacity(&self) -> usize {
        self.cap
    }
}

fn bad(msg: String) -> GpuError {
    GpuError::Llm(LlmError::BadModel(msg))
}

fn tensor<'g>(g: &'g Gguf, name: &str) -> Result<&'g TensorInfo, GpuError> {
    g.tensors
        .get(name)
        .ok_or_else(|| bad(format!("tensor {name} missing")))
}

/// The bytes of a `rows × cols` matrix, checked against its declared type and shape.
fn matrix_bytes<'f>(
    g: &Gguf,
    bytes: &'f [u8],
    t: &TensorInfo,
    rows: usize,
    cols: usize,
) -> Result<&'f [u8], GpuError> {
    if t.dims.len() != 2 || t.cols() != cols || t.rows() != rows {
        return Err(bad(format!(
            "tensor {} has shape {:?}, expected [{cols}, {rows}]",
            t.name, t.dims
        )));
    }
    if !cols.is_multiple_of(t.ty.block_elems()) {
        return Err(bad(format!(
            "tensor {}: rows of {cols} are not whole {} blocks",
            t.name,
            t.ty.name()
        )));
    }
    let data = g.tensor_data(bytes, t).map_err(LlmError::from)?;
    if data.len() != rows * t.ty.row_bytes(cols) {
        return Err(bad(format!(
            "tensor {} holds {} bytes, expected {}",
            t.name,
            data.len(),
            rows * t.ty.row_bytes(cols)
        )));
    }
    Ok(data)
}

/// Dequantize rows `r0..r1` of a `rows × cols` matrix and write them transposed into `out`
/// (`cols` rows of `out_cols`), starting at column `col0`.
fn put_transposed(
    ty: GgmlType,
    data: &[u8],
    cols: usize,
    (r0, r1): (usize, usize),
    out: &mut [f32],
    out_cols: usize,
    col0: usize,
) {
    let rb = ty.row_bytes(cols);
    let mut row = vec![0f32; cols];
    for r in r0..r1 {
        dequantize_row(ty, &data[r * rb..(r + 1) * rb], &mut row);
        let c = col0 + r - r0;
        for (i, &w) in row.iter().enumerate() {
            out[i * out_cols + c] = w;
        }
    }
}

fn vector(g: &Gguf, bytes: &[u8], t: &TensorInfo, n: usize) -> Result<Vec<f32>, GpuError> {
    if t.elements() != n as u64 || !n.is_multiple_of(t.ty.block_elems()) {
        return Err(bad(format!(
            "tensor {} has {} elements, expected {n}",
            t.name,
            t.elements()
        )));
    }
    let data = g.tensor_data(bytes, t).map_err(LlmError::from)?;
    if data.len() != t.ty.row_bytes(n) {
        return Err(bad(format!("tensor {} is truncated", t.name)));
    }
    let mut out = vec![0f32; n];
    dequantize_row(t.ty, data, &mut out);
    Ok(out)
}

/// The cache bucket for `need` positions: `min` doubled until it holds them, at most `ctx`.
pub(crate) fn bucket(need: usize, min: usize, ctx: usize) -> usize {
    let mut c = min.max(1);
    while c < need {
        c *= 2;
    }
    c.min(ctx).max(need)
}

/// Rows a block of `n` tokens at `pos` runs as: 1 for decode, else a power of two ≥ 16 (or
/// exactly `n` where padding would run past the context).
pub(crate) fn padded(n: usize, pos: usize, ctx: usize) -> usize {
    if n <= 1 {
        return n;
    }
    let p = n.next_power_of_two().max(16);
    if pos + p <= ctx { p } else { n }
}

/// RoPE as `x·C + x[perm]·S` per head: `perm` pairs each rotated dimension with its partner,
/// `sign` is the sine's sign in its output. Llama rotates adjacent pairs (2i, 2i+1) (GGUF stores
/// Q/K permuted for it), Qwen2 halves (i, i + rope_dim/2); dimensions past `rope_dim` stay.
pub(crate) fn rope_pairs(arch: Arch, head_dim: usize, rope_dim: usize) -> (Vec<i32>, Vec<f32>) {
    let half = rope_dim / 2;
    let mut perm: Vec<i32> = (0..head_dim as i32).collect();
    let mut sign = vec![0f32; head_dim];
    for i in 0..half {
        let (a, b) = match arch {
            Arch::Qwen2 => (i, i + half),
            _ => (2 * i, 2 * i + 1),
        };
        perm[a] = b as i32;
        perm[b] = a as i32;
        sign[a] = -1.0;
        sign[b] = 1.0;
    }
    (perm, sign)
}

/// The additive attention mask of a block: row `t` (position `pos + t`) sees cache slots
/// `0..=pos + t`.
pub(crate) fn mask(rows: usize, pos: usize, cap: usize) -> Vec<f32> {
    let mut m = vec![0f32; rows * cap];
    for t in 0..rows {
        for v in &mut m[t * cap + (pos + t + 1).min(cap)..(t + 1) * cap] {
            *v = -1e9;
        }
    }
    m
}

fn rmsnorm(x: Tensor<2>, w: &Tensor<2>, eps: f32) -> Tensor<2> {
    let r = x
        .clone()
        .powi_scalar(2)
        .mean_dim(1)
        .add_scalar(eps)
        .sqrt()
        .recip();
    x * r * w.clone()
}

impl GpuModel {
    /// Load from a parsed GGUF and the whole file's bytes onto `dev`. `bytes` may be dropped
    /// afterwards (the embeddings' blocks are copied).
    pub fn load(
        dev: &GpuDevice,
        g: &Gguf,
        bytes: &[u8],
        opts: &LoadOptions,
    ) -> Result<Self, GpuError> {
        let cfg = Config::from_gguf(g)?;
        if opts.precision == Precision::F16 && !dev.f16 {
            return Err(GpuError::Unsupported(format!(
                "f16 weights asked, but {} has no f16 shaders",
                dev.adapter
            )));
        }
        let (dtype, elem) = match opts.precision {
            Precision::F16 => (DType::F16, 2u64),
            _ => (DType::F32, 4u64),
        };
        let device = dev.device.clone();
        let (d, kv, f, vocab) = (cfg.dim, cfg.kv_dim(), cfg.ffn, cfg.vocab);
        let mut weight_bytes = 0u64;
        let mut upload = |data: Vec<f32>, rows: usize, cols: usize, name: &str| {
            let size = (rows * cols) as u64 * elem;
            if size > dev.max_binding {
                return Err(GpuError::Unsupported(format!(
                    "{name} needs a {size}-byte buffer; {} allows {}",
                    dev.adapter, dev.max_binding
                )));
            }
            weight_bytes += size;
            Ok(Tensor::<2>::from_data(
                TensorData::new(data, [rows, cols]),
                (&device, dtype),
            ))
        };
        let small = |data: Vec<f32>| {
            let n = data.len();
            Tensor::<2>::from_data(TensorData::new(data, [1, n]), &device)
        };

        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let name = |s: &str| format!("blk.{i}.{s}");
            // Q, K, V → [d, d + 2kv].
            let qkv_cols = d + 2 * kv;
            let mut wqkv = vec![0f32; d * qkv_cols];
            let mut col = 0;
            for (s, rows) in [
                ("attn_q.weight", d),
                ("attn_k.weight", kv),
                ("attn_v.weight", kv),
            ] {
                let t = tensor(g, &name(s))?;
                let data = matrix_bytes(g, bytes, t, rows, d)?;
                put_transposed(t.ty, data, d, (0, rows), &mut wqkv, qkv_cols, col);
                col += rows;
            }
            let bias_names = ["attn_q.bias", "attn_k.bias", "attn_v.bias"];
            let present = bias_names
                .iter()
                .filter(|s| g.tensors.contains_key(&name(s)))
                .count();
            let bqkv = match (present, cfg.arch) {
                (0, Arch::Llama) => None,
                (3, _) => {
                    let mut b = Vec::with_capacity(qkv_cols);
                    for (s, n) in bias_names.iter().zip([d, kv, kv]) {
                        b.extend(vector(g, bytes, tensor(g, &name(s))?, n)?);
                    }
                    Some(small(b))
                }
                _ => {
                    return Err(bad(format!(
                        "layer {i} has {present} of the 3 Q/K/V biases"
                    )));
                }
            };
            let t = tensor(g, &name("attn_output.weight"))?;
            let mut wo = vec![0f32; d * d];
            put_transposed(
                t.ty,
                matrix_bytes(g, bytes, t, d, d)?,
                d,
                (0, d),
                &mut wo,
                d,
                0,
            );
            // gate, up → [d, 2f].
            let mut wgu = vec![0f32; d * 2 * f];
            for (j, s) in ["ffn_gate.weight", "ffn_up.weight"].iter().enumerate() {
                let t = tensor(g, &name(s))?;
                let data = matrix_bytes(g, bytes, t, f, d)?;
                put_transposed(t.ty, data, d, (0, f), &mut wgu, 2 * f, j * f);
            }
            let t = tensor(g, &name("ffn_down.weight"))?;
            let mut down = vec![0f32; f * d];
            put_transposed(
                t.ty,
                matrix_bytes(g, bytes, t, d, f)?,
                f,
                (0, d),
                &mut down,
                d,
                0,
            );
            layers.push(Layer {
                attn_norm: small(vector(g, bytes, tensor(g, &name("attn_norm.weight"))?, d)?),
                wqkv: upload(wqkv, d, qkv_cols, "attn_qkv")?,
                bqkv,
                wo: upload(wo, d, d, "attn_output")?,
                ffn_norm: small(vector(g, bytes, tensor(g, &name("ffn_norm.weight"))?, d)?),
                wgu: upload(wgu, d, 2 * f, "ffn_gate_up")?,
                down: upload(down, f, d, "ffn_down")?,
            });
        }

        // Embeddings: the GGUF blocks, on the host.
        let et = tensor(g, "token_embd.weight")?;
        let embd = HostRows {
            ty: et.ty,
            data: matrix_bytes(g, bytes, et, vocab, d)?.to_vec(),
            row_bytes: et.ty.row_bytes(d),
        };
        // Output (tied: the embeddings) → [d, vocab] in chunks under the buffer limit.
        let ot = match g.tensors.get("output.weight") {
            Some(t) => t,
            None => et,
        };
        let odata = matrix_bytes(g, bytes, ot, vocab, d)?;
        let per_chunk = (dev.max_binding / (d as u64 * elem)).min(vocab as u64) as usize;
        if per_chunk == 0 {
            return Err(GpuError::Unsupported(format!(
                "a {d}-wide output column exceeds {}'s buffer limit",
                dev.adapter
            )));
        }
        let mut out = Vec::new();
        let mut r0 = 0;
        while r0 < vocab {
            let r1 = (r0 + per_chunk).min(vocab);
            let mut w = vec![0f32; d * (r1 - r0)];
            put_transposed(ot.ty, odata, d, (r0, r1), &mut w, r1 - r0, 0);
            out.push(upload(w, d, r1 - r0, "output")?);
            r0 = r1;
        }
        let out_norm = small(vector(g, bytes, tensor(g, "output_norm.weight")?, d)?);

        let half = cfg.rope_dim / 2;
        let inv_freq = (0..half)
            .map(|i| (f64::from(cfg.rope_theta)).powf(-2.0 * i as f64 / cfg.rope_dim as f64) as f32)
            .collect();
        let (perm, sign) = rope_pairs(cfg.arch, cfg.head_dim, cfg.rope_dim);
        let perm = Tensor::<1, Int>::from_data(TensorData::new(perm, [cfg.head_dim]), &device);
        Ok(GpuModel {
            kv_f16: opts.kv_f16 && dev.f16,
            cfg,
            device,
            opts: opts.clone(),
            embd,
            out,
            out_norm,
            layers,
            inv_freq,
            perm,
            sign,
            weight_bytes,
        })
    }

    /// Bytes of weights on the device.
    pub fn weight_bytes(&self) -> u64 {
        self.weight_bytes
    }

    /// Whether cached keys and values are rounded to f16.
    pub fn kv_f16(&self) -> bool {
        self.kv_f16
    }

    /// The options the model was loaded with.
    pub fn options(&self) -> &LoadOptions {
        &self.opts
    }

    /// The device the model lives on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// A fresh conversation (the cache is allocated by the first forward).
    pub fn session(&self) -> GpuSession {
        GpuSession::default()
    }

    fn matmul(&self, x: Tensor<2>, w: &Tensor<2>) -> Tensor<2> {
        match self.opts.precision {
            Precision::F16 => x.cast(DType::F16).matmul(w.clone()).cast(DType::F32),
            _ => x.matmul(w.clone()),
        }
    }

    /// Grow `s`'s cache to hold `need` positions (a new bucket; old contents copied).
    fn reserve(&self, s: &mut GpuSession, need: usize) {
        let cfg = &self.cfg;
        if s.k.len() != cfg.n_layers {
            s.cap = 0;
            s.k.clear();
            s.v.clear();
        }
        if need <= s.cap {
            return;
        }
        let cap = bucket(need, self.opts.min_cache, cfg.context);
        let (kvh, hd) = (cfg.n_kv_heads, cfg.head_dim);
        let old = s.cap;
        let grow = |t: Option<Tensor<3>>| {
            let z = Tensor::<3>::zeros([kvh, cap, hd], &self.device);
            match t {
                Some(t) if old > 0 => z.slice_assign([0..kvh, 0..old, 0..hd], t),
                _ => z,
            }
        };
        let mut ks = std::mem::take(&mut s.k).into_iter();
        let mut vs = std::mem::take(&mut s.v).into_iter();
        for _ in 0..cfg.n_layers {
            s.k.push(grow(ks.next()));
            s.v.push(grow(vs.next()));
        }
        s.cap = cap;
    }

    /// Run `tokens` through the model at `s.pos`, appending to `s`'s cache. With `logits`,
    /// returns the last token's logits, `[1, vocab]`, still on the device (read them with
    /// [`read_logits`](Self::read_logits) or [`read_argmax`](Self::read_argmax)).
    pub fn forward(
        &self,
        s: &mut GpuSession,
        tokens: &[u32],
        logits: bool,
    ) -> Result<Option<Tensor<2>>, GpuError> {
        let cfg = &self.cfg;
        let n = tokens.len();
        if n == 0 {
            return Err(GpuError::Input("no tokens".into()));
        }
        if s.pos + n > cfg.context {
            return Err(GpuError::ContextFull {
                needed: s.pos + n,
                limit: cfg.context,
            });
        }
        if let Some(&t) = tokens.iter().find(|&&t| t as usize >= cfg.vocab) {
            return Err(GpuError::Input(format!(
                "token id {t} ≥ vocabulary {}",
                cfg.vocab
            )));
        }
        if s.k.len() != cfg.n_layers && (s.pos != 0 || !s.k.is_empty()) {
            return Err(GpuError::Input(
                "the session's cache does not match this model".into(),
            ));
        }
        let pos = s.pos;
        let rows = padded(n, pos, cfg.context);
        self.reserve(s, pos + rows);
        let cap = s.cap;
        let dev = &self.device;
        let (d, kv, f) = (cfg.dim, cfg.kv_dim(), cfg.ffn);
        let (h, kvh, hd) = (cfg.n_heads, cfg.n_kv_heads, cfg.head_dim);
        let group = h / kvh;

        // Host side: embedding rows, RoPE tables, mask.
        let mut x = vec![0f32; rows * d];
        for (t, &tok) in tokens.iter().enumerate() {
            let rb = self.embd.row_bytes;
            let row = &self.embd.data[tok as usize * rb..(tok as usize + 1) * rb];
            dequantize_row(self.embd.ty, row, &mut x[t * d..(t + 1) * d]);
        }
        let mut cos = vec![1f32; rows * hd];
        let mut sin = vec![0f32; rows * hd];
        for t in 0..rows {
            for (i, &fr) in self.inv_freq.iter().enumerate() {
                let (sn, cs) = ((pos + t) as f32 * fr).sin_cos();
                let (a, b) = match cfg.arch {
                    Arch::Qwen2 => (i, i + self.inv_freq.len()),
                    _ => (2 * i, 2 * i + 1),
                };
                for j in [a, b] {
                    cos[t * hd + j] = cs;
                    sin[t * hd + j] = sn * self.sign[j];
                }
            }
        }
        let mut x = Tensor::<2>::from_data(TensorData::new(x, [rows, d]), dev);
        let cos = Tensor::<3>::from_data(TensorData::new(cos, [rows, 1, hd]), dev);
        let sin = Tensor::<3>::from_data(TensorData::new(sin, [rows, 1, hd]), dev);
        let mask = Tensor::<4>::from_data(
            TensorData::new(mask(rows, pos, cap), [1, 1, rows, cap]),
            dev,
        );
        let rope = |t: Tensor<3>| {
            let partner = t.clone().select(2, self.perm.clone());
            t * cos.clone() + partner * sin.clone()
        };
        let scale = 1.0 / (hd as f32).sqrt();

        // The caches are moved out and back so each is uniquely owned: `slice_assign` then
        // writes in place instead of copying the whole bucket.
        let mut old_k = std::mem::take(&mut s.k).into_iter();
        let mut old_v = std::mem::take(&mut s.v).into_iter();
        let lost = || GpuError::Input("the session's cache does not match this model".into());
        for l in &self.layers {
            let hn = rmsnorm(x.clone(), &l.attn_norm, cfg.norm_eps);
            let mut qkv = self.matmul(hn, &l.wqkv);
            if let Some(b) = &l.bqkv {
                qkv = qkv + b.clone();
            }
            let q = qkv.clone().slice([0..rows, 0..d]).reshape([rows, h, hd]);
            let k = qkv
                .clone()
                .slice([0..rows, d..d + kv])
                .reshape([rows, kvh, hd]);
            let v = qkv
                .slice([0..rows, d + kv..d + 2 * kv])
                .reshape([rows, kvh, hd]);
            let q = rope(q).mul_scalar(scale);
            let mut k = rope(k);
            let mut v = v;
            if self.kv_f16 {
                k = k.cast(DType::F16).cast(DType::F32);
                v = v.cast(DType::F16).cast(DType::F32);
            }
            let span = [0..kvh, pos..pos + rows, 0..hd];
            let kc = old_k
                .next()
                .ok_or_else(lost)?
                .slice_assign(span.clone(), k.swap_dims(0, 1));
            let vc = old_v
                .next()
                .ok_or_else(lost)?
                .slice_assign(span, v.swap_dims(0, 1));
            // Grouped-query attention: the `group` query heads of a KV head as one matrix.
            let qh = q
                .reshape([rows, kvh, group, hd])
                .permute([1, 2, 0, 3])
                .reshape([kvh, group * rows, hd]);
            let scores = qh
                .matmul(kc.clone().swap_dims(1, 2))
                .reshape([kvh, group, rows, cap])
                + mask.clone();
            let p = softmax(scores, 3).reshape([kvh, group * rows, cap]);
            let att = p
                .matmul(vc.clone())
                .reshape([kvh, group, rows, hd])
                .permute([2, 0, 1, 3])
                .reshape([rows, d]);
            s.k.push(kc);
            s.v.push(vc);
            x = x + self.matmul(att, &l.wo);
            let hn = rmsnorm(x.clone(), &l.ffn_norm, cfg.norm_eps);
            let gu = self.matmul(hn, &l.wgu);
            let gate = gu.clone().slice([0..rows, 0..f]);
            let up = gu.slice([0..rows, f..2 * f]);
            x = x + self.matmul(silu(gate) * up, &l.down);
        }
        s.pos += n;
        s.tokens.extend_from_slice(tokens);
        if !logits {
            return Ok(None);
        }
        let last = rmsnorm(x.slice([n - 1..n, 0..d]), &self.out_norm, cfg.norm_eps);
        Ok(Some(match self.out.as_slice() {
            [w] => self.matmul(last, w),
            chunks => Tensor::cat(
                chunks
                    .iter()
                    .map(|w| self.matmul(last.clone(), w))
                    .collect(),
                1,
            ),
        }))
    }

    /// Read logits (`[1, vocab]`) back to the host, asynchronously.
    pub async fn read_logits(logits: Tensor<2>) -> Result<Vec<f32>, GpuError> {
        logits
            .into_data_async()
            .await
            .map_err(|e| GpuError::Readback(format!("{e:?}")))?
            .try_into_vec_as::<f32>()
            .map_err(|e| GpuError::Readback(format!("{e:?}")))
    }

    /// The index of the largest logit, computed on the device: one id crosses back.
    pub async fn read_argmax(logits: Tensor<2>) -> Result<u32, GpuError> {
        let ids = logits
            .argmax(1)
            .into_data_async()
            .await
            .map_err(|e| GpuError::Readback(format!("{e:?}")))?
            .try_into_vec_as::<i64>()
            .map_err(|e| GpuError::Readback(format!("{e:?}")))?;
        ids.first()
            .and_then(|&i| u32::try_from(i).ok())
            .ok_or_else(|| GpuError::Readback(format!("argmax returned {ids:?}")))
    }

    /// Run `tokens` and read the last token's logits (prefill in one block).
    pub async fn logits(&self, s: &mut GpuSession, tokens: &[u32]) -> Result<Vec<f32>, GpuError> {
        let l = self.forward(s, tokens, true)?;
        match l {
            Some(l) => Self::read_logits(l).await,
            None => Err(GpuError::Input("no logits".into())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_double_from_the_minimum_and_stop_at_the_context() {
        assert_eq!(bucket(1, 256, 8192), 256);
        assert_eq!(bucket(256, 256, 8192), 256);
        assert_eq!(bucket(257, 256, 8192), 512);
        assert_eq!(bucket(1000, 256, 8192), 1024);
        assert_eq!(bucket(3000, 256, 3000), 3000);
        assert_eq!(bucket(2049, 256, 3000), 3000);
        assert_eq!(bucket(100, 256, 128), 128);
    }

    #[test]
    fn prefill_blocks_pad_to_few_shapes() {
        assert_eq!(padded(1, 5, 100), 1);
        assert_eq!(padded(2, 0, 100), 16);
        assert_eq!(padded(17, 0, 100), 32);
        assert_eq!(padded(64, 0, 100), 64);
        assert_eq!(
            padded(37, 70, 100),
            37,
            "padding must not run past the context"
        );
    }

    #[test]
    fn mask_shows_each_row_its_past_and_itself() {
        let m = mask(2, 3, 8);
        let row =
            |t: usize| -> Vec<bool> { m[t * 8..(t + 1) * 8].iter().map(|&v| v == 0.0).collect() };
        assert_eq!(row(0), [true, true, true, true, false, false, false, false]);
        assert_eq!(row(1), [true, true, true, true, true, false, false, false]);
        // A block ending exactly at the bucket's end.
        let m = mask(1, 7, 8);
        assert!(m.iter().all(|&v| v == 0.0));
    }

    /// The `x·C + x[perm]·S` form equals the CPU engine's pairwise rotation.
    #[test]
    fn rope_pairs_rotate_like_the_cpu_engine() {
        for (arch, hd, rd) in [
            (Arch::Llama, 8, 8),
            (Arch::Qwen2, 8, 8),
            (Arch::Llama, 8, 4),
            (Arch::Qwen2, 8, 4),
        ] {
            let (perm, sign) = rope_pairs(arch, hd, rd);
            let half = rd / 2;
            let x: Vec<f32> = (0..hd).map(|i| (i as f32 * 0.7).sin() + 0.1).collect();
            let angles: Vec<(f32, f32)> = (0..half).map(|i| (0.3 + i as f32).sin_cos()).collect();
            // The CPU engine's rotation.
            let mut want = x.clone();
            for (i, &(s, c)) in angles.iter().enumerate() {
                let (a, b) = match arch {
                    Arch::Qwen2 => (i, i + half),
                    _ => (2 * i, 2 * i + 1),
                };
                want[a] = x[a] * c - x[b] * s;
                want[b] = x[a] * s + x[b] * c;
            }
            // The table form, built as `forward` builds it.
            let mut cos = vec![1f32; hd];
            let mut sin = vec![0f32; hd];
            for (i, &(s, c)) in angles.iter().enumerate() {
                let (a, b) = match arch {
                    Arch::Qwen2 => (i, i + half),
                    _ => (2 * i, 2 * i + 1),
                };
                for j in [a, b] {
                    cos[j] = c;
                    sin[j] = s * sign[j];
                }
            }
            for j in 0..hd {
                let got = x[j] * cos[j] + x[perm[j] as usize] * sin[j];
                assert!(
                    (got - want[j]).abs() < 1e-6,
                    "{arch:?} {rd}/{hd} dim {j}: {got} vs {}",
                    want[j]
                );
            }
        }
    }
}
