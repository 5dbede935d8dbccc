//! The Llama/Qwen2 forward pass on the CPU kernels, with a KV cache.
//!
//! Weights stay in the GGUF's own blocks, borrowed from the file bytes the model owns. A
//! forward call takes a block of tokens (prefill: every matrix is read once for the whole
//! block, a GEMM; decode: one token, a GEMV) and appends their keys and values to the
//! session's cache. Norms, RoPE, attention and SwiGLU are f32.

use crate::LlmError;
use crate::config::{Arch, Config};
use crate::gguf::{Gguf, TensorInfo};
use crate::kernels::{self, Q8Act};
use crate::quant::{GgmlType, dequantize_row};

/// A weight matrix: `rows` rows of `cols` weights, in `ty` blocks at `off` in the file.
#[derive(Debug, Clone)]
pub struct Weight {
    off: usize,
    ty: GgmlType,
    rows: usize,
    cols: usize,
    row_bytes: usize,
}

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: Weight,
    wk: Weight,
    wv: Weight,
    wo: Weight,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: Weight,
    up: Weight,
    down: Weight,
}

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's, `n × vocab` (teacher-forced scoring).
    All,
}

/// A loaded model: the GGUF bytes and where each weight lives in them.
pub struct Model {
    /// Shape.
    pub cfg: Config,
    bytes: Vec<u8>,
    embd: Weight,
    output: Weight,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    #[cfg(feature = "threads")]
    pool: Option<rayon::ThreadPool>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("cfg", &self.cfg)
            .finish_non_exhaustive()
    }
}

/// One conversation's state: the KV cache and its length.
#[derive(Debug, Clone, Default)]
pub struct Session {
    /// Tokens in the cache.
    pub pos: usize,
    /// The cached tokens themselves (to reuse a common prefix).
    pub tokens: Vec<u32>,
    k: Vec<Vec<f32>>,
    v: Vec<Vec<f32>>,
}

impl Session {
    /// Forget everything after the first `n` tokens (keeps a shared prefix, e.g. the system
    /// prompt, when a conversation is edited or continued).
    pub fn truncate(&mut self, n: usize, kv_dim: usize) {
        if n < self.pos {
            self.pos = n;
            self.tokens.truncate(n);
            for c in self.k.iter_mut().chain(self.v.iter_mut()) {
                c.truncate(n * kv_dim);
            }
        }
    }
}

fn weight(g: &Gguf, name: &str, rows: usize, cols: usize) -> Result<Weight, LlmError> {
    let t = g
        .tensors
        .get(name)
        .ok_or_else(|| LlmError::BadModel(format!("tensor {name} missing")))?;
    if t.dims.len() != 2 || t.cols() != cols || t.rows() != rows {
        return Err(LlmError::BadModel(format!(
            "tensor {name} has shape {:?}, expected [{cols}, {rows}]",
            t.dims
        )));
    }
    Ok(Weight {
        off: t.offset as usize,
        ty: t.ty,
        rows,
        cols,
        row_bytes: t.ty.row_bytes(cols),
    })
}

fn vector(g: &Gguf, bytes: &[u8], name: &str, n: usize) -> Result<Vec<f32>, LlmError> {
    let t = g
        .tensors
        .get(name)
        .ok_or_else(|| LlmError::BadModel(format!("tensor {name} missing")))?;
    vector_of(g, bytes, t, n)
}

fn vector_of(g: &Gguf, bytes: &[u8], t: &TensorInfo, n: usize) -> Result<Vec<f32>, LlmError> {
    if t.elements() != n as u64 {
        return Err(LlmError::BadModel(format!(
            "tensor {} has {} elements, expected {n}",
            t.name,
            t.elements()
        )));
    }
    let data = g.tensor_data(bytes, t)?;
    let mut out = vec![0f32; n];
    dequantize_row(t.ty, data, &mut out);
    Ok(out)
}

impl Model {
    /// Load from the bytes of a whole GGUF file, running matrix products on `threads` threads
    /// (1 = the calling thread only; ignored without the `threads` feature).
    pub fn from_gguf(bytes: Vec<u8>, threads: usize) -> Result<Self, LlmError> {
        let g = Gguf::parse(&bytes, None)?;
        let cfg = Config::from_gguf(&g)?;
        let (d, kv, f) = (cfg.dim, cfg.kv_dim(), cfg.ffn);
        let embd = weight(&g, "token_embd.weight", cfg.vocab, d)?;
        let output = if g.tensors.contains_key("output.weight") {
            weight(&g, "output.weight", cfg.vocab, d)?
        } else {
            embd.clone() // tied embeddings
        };
        let out_norm = vector(&g, &bytes, "output_norm.weight", d)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, len: usize| -> Result<Option<Vec<f32>>, LlmError> {
                match g.tensors.get(&n(s)) {
                    Some(t) => Ok(Some(vector_of(&g, &bytes, t, len)?)),
                    None if cfg.arch == Arch::Qwen2 => {
                        Err(LlmError::BadModel(format!("tensor {} missing", n(s))))
                    }
                    None => Ok(None),
                }
            };
            layers.push(Layer {
                attn_norm: vector(&g, &bytes, &n("attn_norm.weight"), d)?,
                wq: weight(&g, &n("attn_q.weight"), d, d)?,
                wk: weight(&g, &n("attn_k.weight"), kv, d)?,
                wv: weight(&g, &n("attn_v.weight"), kv, d)?,
                wo: weight(&g, &n("attn_output.weight"), d, d)?,
                bq: bias("attn_q.bias", d)?,
                bk: bias("attn_k.bias", kv)?,
                bv: bias("attn_v.bias", kv)?,
                ffn_norm: vector(&g, &bytes, &n("ffn_norm.weight"), d)?,
                gate: weight(&g, &n("ffn_gate.weight"), f, d)?,
                up: weight(&g, &n("ffn_up.weight"), f, d)?,
                down: weight(&g, &n("ffn_down.weight"), d, f)?,
            });
        }
        let half = cfg.rope_dim / 2;
        let inv_freq = (0..half)
            .map(|i| (f64::from(cfg.rope_theta)).powf(-2.0 * i as f64 / cfg.rope_dim as f64) as f32)
            .collect();
        #[cfg(feature = "threads")]
        let pool = if threads > 1 {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .thread_name(|i| format!("shoal-llm-{i}"))
                .build()
                .ok()
        } else {
            None
        };
        #[cfg(not(feature = "threads"))]
        let _ = threads;
        Ok(Model {
            cfg,
            bytes,
            embd,
            output,
            out_norm,
            layers,
            inv_freq,
            #[cfg(feature = "threads")]
            pool,
        })
    }

    /// The GGUF file bytes (for the tokenizer and template metadata).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Bytes of weights read per decoded token (every matrix once + one embedding row).
    pub fn bytes_per_token(&self) -> usize {
        let m = |w: &Weight| w.rows * w.row_bytes;
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| m(&l.wq) + m(&l.wk) + m(&l.wv) + m(&l.wo) + m(&l.gate) + m(&l.up) + m(&l.down))
            .sum();
        per_layer + m(&self.output) + self.embd.row_bytes
    }

    /// A fresh conversation.
    pub fn session(&self) -> Session {
        Session {
            pos: 0,
            tokens: Vec::new(),
            k: vec![Vec::new(); self.cfg.n_layers],
            v: vec![Vec::new(); self.cfg.n_layers],
        }
    }

    fn row(&self, w: &Weight, r: usize) -> &[u8] {
        let s = w.off + r * w.row_bytes;
        &self.bytes[s..s + w.row_bytes]
    }

    /// `out[t][r] = W[r] · x[t]` for `n` tokens: each weight row is read once for all tokens.
    fn matmul(&self, w: &Weight, x: &[f32], xq: &[Q8Act], out: &mut [f32]) {
        let n = xq.len();
        debug_assert_eq!(x.len(), n * w.cols);
        debug_assert_eq!(out.len(), n * w.rows);
        // Rows in chunks; results gathered row-major per chunk, then scattered per token.
        let chunk_rows = 64;
        let body = |r0: usize, dst: &mut [f32]| {
            let rows = dst.len() / n;
            for i in 0..rows {
                let row = self.row(w, r0 + i);
                for t in 0..n {
                    dst[i * n + t] =
                        kernels::dot(w.ty, row, &x[t * w.cols..(t + 1) * w.cols], &xq[t]);
                }
            }
        };
        let mut tmp = vec![0f32; n * w.rows];
        #[cfg(feature = "threads")]
        if let Some(pool) = &self.pool {
            use rayon::prelude::*;
            pool.install(|| {
                tmp.par_chunks_mut(chunk_rows * n)
                    .enumerate()
                    .for_each(|(c, dst)| body(c * chunk_rows, dst));
            });
            transpose(&tmp, out, w.rows, n);
            return;
        }
        for (c, dst) in tmp.chunks_mut(chunk_rows * n).enumerate() {
            body(c * chunk_rows, dst);
        }
        transpose(&tmp, out, w.rows, n);
    }

    fn rope(&self, v: &mut [f32], pos: usize) {
        let hd = self.cfg.head_dim;
        let half = self.cfg.rope_dim / 2;
        for head in v.chunks_exact_mut(hd) {
            for (i, &f) in self.inv_freq.iter().enumerate() {
                let (s, c) = (pos as f32 * f).sin_cos();
                let (a, b) = match self.cfg.arch {
                    Arch::Llama => (2 * i, 2 * i + 1),
                    Arch::Qwen2 => (i, i + half),
                };
                let (x0, x1) = (head[a], head[b]);
                head[a] = x0 * c - x1 * s;
                head[b] = x0 * s + x1 * c;
            }
        }
    }

    /// Run `tokens` through the model, appending to `s`'s cache; returns the logits asked for.
    pub fn forward(
        &self,
        s: &mut Session,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, LlmError> {
        let cfg = &self.cfg;
        let n = tokens.len();
        if n == 0 {
            return Err(LlmError::Input("no tokens".into()));
        }
        if s.pos + n > cfg.context {
            return Err(LlmError::ContextFull {
                needed: s.pos + n,
                limit: cfg.context,
            });
        }
        if s.k.len() != cfg.n_layers {
            *s = self.session();
        }
        let (d, kv, f) = (cfg.dim, cfg.kv_dim(), cfg.ffn);
        let mut x = vec![0f32; n * d];
        for (t, &tok) in tokens.iter().enumerate() {
            let tok = tok as usize;
            if tok >= cfg.vocab {
                return Err(LlmError::Input(format!(
                    "token id {tok} ≥ vocabulary {}",
                    cfg.vocab
                )));
            }
            dequantize_row(
                self.embd.ty,
                self.row(&self.embd, tok),
                &mut x[t * d..(t + 1) * d],
            );
        }
        let mut h = vec![0f32; n * d];
        let mut hq = vec![Q8Act::default(); n];
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kv];
        let mut v = vec![0f32; n * kv];
        let mut att = vec![0f32; n * d];
        let mut o = vec![0f32; n * d];
        let mut g = vec![0f32; n * f];
        let mut u = vec![0f32; n * f];
        let mut fq = vec![Q8Act::default(); n];
        let group = cfg.n_heads / cfg.n_kv_heads;
        let hd = cfg.head_dim;
        let scale = 1.0 / (hd as f32).sqrt();
        let mut scores = Vec::new();
        for (li, l) in self.layers.iter().enumerate() {
            for t in 0..n {
                rmsnorm(
                    &x[t * d..(t + 1) * d],
                    &l.attn_norm,
                    cfg.norm_eps,
                    &mut h[t * d..(t + 1) * d],
                );
                hq[t].quantize(&h[t * d..(t + 1) * d]);
            }
            self.matmul(&l.wq, &h, &hq, &mut q);
            self.matmul(&l.wk, &h, &hq, &mut k);
            self.matmul(&l.wv, &h, &hq, &mut v);
            for t in 0..n {
                if let Some(b) = &l.bq {
                    add(&mut q[t * d..(t + 1) * d], b);
                }
                if let Some(b) = &l.bk {
                    add(&mut k[t * kv..(t + 1) * kv], b);
                }
                if let Some(b) = &l.bv {
                    add(&mut v[t * kv..(t + 1) * kv], b);
                }
                self.rope(&mut q[t * d..(t + 1) * d], s.pos + t);
                self.rope(&mut k[t * kv..(t + 1) * kv], s.pos + t);
            }
            // The cache holds f16-precision values (as llama.cpp's default f16 cache does):
            // the reference's numerics, and the same answers.
            s.k[li].extend(k.iter().map(|&x| half::f16::from_f32(x).to_f32()));
            s.v[li].extend(v.iter().map(|&x| half::f16::from_f32(x).to_f32()));
            let (kc, vc) = (&s.k[li], &s.v[li]);
            for t in 0..n {
                let len = s.pos + t + 1;
                scores.resize(len, 0.0);
                for head in 0..cfg.n_heads {
                    let kvh = head / group;
                    let qh = &q[t * d + head * hd..t * d + (head + 1) * hd];
                    let mut mx = f32::NEG_INFINITY;
                    for (j, sc) in scores.iter_mut().enumerate() {
                        let kj = &kc[j * kv + kvh * hd..j * kv + (kvh + 1) * hd];
                        *sc = dot_f32(qh, kj) * scale;
                        mx = mx.max(*sc);
                    }
                    let mut sum = 0f32;
                    for sc in scores.iter_mut() {
                        *sc = (*sc - mx).exp();
                        sum += *sc;
                    }
                    let inv = 1.0 / sum;
                    let out = &mut att[t * d + head * hd..t * d + (head + 1) * hd];
                    out.fill(0.0);
                    for (j, &p) in scores.iter().enumerate() {
                        let vj = &vc[j * kv + kvh * hd..j * kv + (kvh + 1) * hd];
                        let p = p * inv;
                        for (a, &b) in out.iter_mut().zip(vj) {
                            *a += p * b;
                        }
                    }
                }
            }
            for t in 0..n {
                hq[t].quantize(&att[t * d..(t + 1) * d]);
            }
            self.matmul(&l.wo, &att, &hq, &mut o);
            add(&mut x, &o);
            for t in 0..n {
                rmsnorm(
                    &x[t * d..(t + 1) * d],
                    &l.ffn_norm,
                    cfg.norm_eps,
                    &mut h[t * d..(t + 1) * d],
                );
                hq[t].quantize(&h[t * d..(t + 1) * d]);
            }
            self.matmul(&l.gate, &h, &hq, &mut g);
            self.matmul(&l.up, &h, &hq, &mut u);
            for (a, &b) in g.iter_mut().zip(&u) {
                *a = *a / (1.0 + (-*a).exp()) * b;
            }
            for t in 0..n {
                fq[t].quantize(&g[t * f..(t + 1) * f]);
            }
            self.matmul(&l.down, &g, &fq, &mut o);
            add(&mut x, &o);
        }
        s.pos += n;
        s.tokens.extend_from_slice(tokens);
        let rows: Vec<usize> = match which {
            Logits::Last => vec![n - 1],
            Logits::All => (0..n).collect(),
        };
        let m = rows.len();
        let mut xn = vec![0f32; m * d];
        let mut xq = vec![Q8Act::default(); m];
        for (i, &t) in rows.iter().enumerate() {
            rmsnorm(
                &x[t * d..(t + 1) * d],
                &self.out_norm,
                cfg.norm_eps,
                &mut xn[i * d..(i + 1) * d],
            );
            xq[i].quantize(&xn[i * d..(i + 1) * d]);
        }
        let mut logits = vec![0f32; m * cfg.vocab];
        self.matmul(&self.output, &xn, &xq, &mut logits);
        Ok(logits)
    }
}

fn transpose(src: &[f32], dst: &mut [f32], rows: usize, n: usize) {
    if n == 1 {
        dst.copy_from_slice(src);
        return;
    }
    for r in 0..rows {
        for t in 0..n {
            dst[t * rows + r] = src[r * n + t];
        }
    }
}

fn rmsnorm(x: &[f32], w: &[f32], eps: f32, out: &mut [f32]) {
    let ss = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let r = 1.0 / (ss + eps).sqrt();
    for ((o, &a), &b) in out.iter_mut().zip(x).zip(w) {
        *o = a * r * b;
    }
}

fn add(a: &mut [f32], b: &[f32]) {
    let n = b.len();
    for chunk in a.chunks_mut(n) {
        for (x, &y) in chunk.iter_mut().zip(b) {
            *x += y;
        }
    }
}

/// Dot product in 8 independent lanes (vectorizes; order differs from a plain sum).
fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}
