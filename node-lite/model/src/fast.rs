//! The fast CPU path: a fused f32 BERT encoder (MiniLM) beside burn.
//!
//! Weights come from the same verified burn record (loaded through [`super::Bert`] on burn
//! `flex`, f16 widened to f32) and are copied out once, at load, into packed GEMM panels
//! ([`kernel::PackedB`]): Q, K and V fused into one `384 × 1152` weight (the `1/√d` attention
//! scale folded into Q), then the attention output, FFN up and down weights.
//!
//! Forward pass over a batch, without any padding:
//! - the tokens of every sentence are concatenated into one `[tokens × 384]` matrix, so the
//!   dense layers (all but ~5 % of the FLOPs) run on real tokens only;
//! - attention runs per (sentence, head) over that sentence's own length;
//! - mean pooling over each sentence's tokens, then L2 normalisation.
//!
//! Buffers are sized to the batch once per call (and kept for the next call); natively the
//! GEMMs, attention and element-wise passes use every core (rayon) for batches of at least
//! 64 tokens (smaller ones run on the calling thread: waking workers costs more), in wasm one
//! thread.

use shoal_gemm::{attn, ops, par};
pub use shoal_gemm::{kernel, qkernel};

/// Batches of fewer tokens run the whole forward pass on the calling thread ([`par::serial`]):
/// measured on 2 cores (AVX-512 VNNI, int12), one 12-token sentence ran 1.45× faster on one
/// core (775 vs 530 /s) and one 128-token sentence 1.5× faster on two (84 vs 54 /s).
const PARALLEL_MIN_TOKENS: usize = 64;

/// Multiply-adds of `Q·Kᵀ` below which attention runs on the calling thread (2²¹: a batch of
/// 32 short sentences, 32 · 12² · 384 ≈ 1.8 M, stays on one thread; one 128-token sentence,
/// 6.3 M, goes parallel).
const ATTENTION_MIN_PARALLEL_WORK: usize = 1 << 21;

use std::sync::Mutex;

use burn::prelude::*;

use super::{Bert, BertConfig, ModelError};
use kernel::{Isa, PackedB};
use par::SendPtr;
use qkernel::{QIsa, QPackedB, QuantA, WeightBits};

struct Norm {
    gamma: Vec<f32>,
    beta: Vec<f32>,
}

/// A dense layer's weight and bias: f32 panels, or quantized ([`qkernel`]).
enum Dense {
    F32(PackedB, Vec<f32>),
    Quant(QPackedB),
}

impl Dense {
    fn new(
        w: &[f32],
        bias: Vec<f32>,
        k: usize,
        n: usize,
        isa: Isa,
        quant: Option<(QIsa, WeightBits)>,
    ) -> Self {
        match quant {
            Some((tile, bits)) => {
                Dense::Quant(QPackedB::from_row_major(tile, bits, w, k, n, Some(&bias)))
            }
            None => Dense::F32(PackedB::from_row_major(isa, w, k, n), bias),
        }
    }

    /// `c = a · W + bias` for `m` rows.
    fn run(&self, m: usize, a: &[f32], lda: usize, c: &mut [f32], ldc: usize, qa: &mut QuantA) {
        match self {
            Dense::F32(w, bias) => par::gemm(m, a, lda, w, Some(bias), c, ldc),
            Dense::Quant(w) => par::qgemm(m, a, lda, w, c, ldc, qa),
        }
    }
}

struct Layer {
    /// `[hidden × 3·hidden]`: Q (pre-scaled by 1/√d), K, V.
    qkv: Dense,
    attn_out: Dense,
    attn_norm: Norm,
    up: Dense,
    down: Dense,
    out_norm: Norm,
}

/// Per-call buffers, kept between calls (grown, never shrunk below the largest batch).
#[derive(Default)]
struct Scratch {
    x: Vec<f32>,
    qkv: Vec<f32>,
    ctx: Vec<f32>,
    tmp: Vec<f32>,
    h: Vec<f32>,
    inter: Vec<f32>,
    qa: QuantA,
}

/// The encoder with packed weights. Cheap to share (`&self` everywhere).
pub struct FastBert {
    isa: Isa,
    /// The quantized dense layers' tile and weight width (`None`: f32).
    quant: Option<(QIsa, WeightBits)>,
    hidden: usize,
    heads: usize,
    inter: usize,
    vocab: usize,
    max_pos: usize,
    eps: f32,
    word: Vec<f32>,
    pos: Vec<f32>,
    /// Token type 0's embedding (MiniLM inputs are single segments).
    typ: Vec<f32>,
    emb_norm: Norm,
    layers: Vec<Layer>,
    scratch: Mutex<Scratch>,
}

fn floats<const D: usize>(t: Tensor<D>) -> Result<Vec<f32>, ModelError> {
    t.into_data()
        .convert::<f32>()
        .try_into_vec::<f32>()
        .map_err(|e| ModelError::Load(format!("reading a weight: {e:?}")))
}

fn weight(l: &nn::Linear, k: usize, n: usize) -> Result<(Vec<f32>, Vec<f32>), ModelError> {
    let w = l.weight.val();
    if w.dims() != [k, n] {
        return Err(ModelError::Load(format!(
            "linear weight {:?}, expected [{k}, {n}]",
            w.dims()
        )));
    }
    let b = match &l.bias {
        Some(b) => floats(b.val())?,
        None => vec![0.0; n],
    };
    Ok((floats(w)?, b))
}

fn norm(n: &nn::LayerNorm) -> Result<Norm, ModelError> {
    Ok(Norm {
        gamma: floats(n.gamma.val())?,
        beta: match &n.beta {
            Some(b) => floats(b.val())?,
            None => vec![0.0; n.gamma.val().dims()[0]],
        },
    })
}

impl FastBert {
    /// Copy and pack the weights of a loaded burn model (any device; read synchronously).
    pub fn from_bert(model: &Bert, config: &BertConfig) -> Result<Self, ModelError> {
        Self::from_bert_with(model, config, Isa::best())
    }

    /// [`from_bert`](Self::from_bert) with a given kernel (tests compare kernels).
    pub fn from_bert_with(model: &Bert, c: &BertConfig, isa: Isa) -> Result<Self, ModelError> {
        Self::from_bert_opts(model, c, isa, None)
    }

    /// [`from_bert_with`](Self::from_bert_with); `quant`: quantize the dense layers' weights
    /// per column to that many bits and run them on that integer tile ([`qkernel`]; attention,
    /// softmax, LayerNorm and GELU stay f32 on `isa`).
    pub fn from_bert_opts(
        model: &Bert,
        c: &BertConfig,
        isa: Isa,
        quant: Option<(QIsa, WeightBits)>,
    ) -> Result<Self, ModelError> {
        let (h, i) = (c.hidden_size, c.intermediate_size);
        if c.num_attention_heads == 0 || h % c.num_attention_heads != 0 {
            return Err(ModelError::Config(
                "hidden size not divisible by heads".into(),
            ));
        }
        let scale = 1.0 / ((h / c.num_attention_heads) as f32).sqrt();
        let e = &model.embeddings;
        let mut layers = Vec::with_capacity(model.encoder.layer.len());
        for l in &model.encoder.layer {
            let att = &l.attention.self_;
            let (wq, bq) = weight(&att.query, h, h)?;
            let (wk, bk) = weight(&att.key, h, h)?;
            let (wv, bv) = weight(&att.value, h, h)?;
            // Row p of the fused weight: [q_p · scale | k_p | v_p].
            let mut qkv = Vec::with_capacity(h * 3 * h);
            for p in 0..h {
                qkv.extend(wq[p * h..(p + 1) * h].iter().map(|v| v * scale));
                qkv.extend_from_slice(&wk[p * h..(p + 1) * h]);
                qkv.extend_from_slice(&wv[p * h..(p + 1) * h]);
            }
            let mut qkv_bias: Vec<f32> = bq.iter().map(|v| v * scale).collect();
            qkv_bias.extend_from_slice(&bk);
            qkv_bias.extend_from_slice(&bv);
            let (wo, bo) = weight(&l.attention.output.dense, h, h)?;
            let (wu, bu) = weight(&l.intermediate.dense, h, i)?;
            let (wd, bd) = weight(&l.output.dense, i, h)?;
            layers.push(Layer {
                qkv: Dense::new(&qkv, qkv_bias, h, 3 * h, isa, quant),
                attn_out: Dense::new(&wo, bo, h, h, isa, quant),
                attn_norm: norm(&l.attention.output.layer_norm)?,
                up: Dense::new(&wu, bu, h, i, isa, quant),
                down: Dense::new(&wd, bd, i, h, isa, quant),
                out_norm: norm(&l.output.layer_norm)?,
            });
        }
        let typ = floats(e.token_type_embeddings.weight.val())?;
        Ok(Self {
            isa,
            quant,
            hidden: h,
            heads: c.num_attention_heads,
            inter: i,
            vocab: c.vocab_size,
            max_pos: c.max_position_embeddings,
            eps: c.layer_norm_eps as f32,
            word: floats(e.word_embeddings.weight.val())?,
            pos: floats(e.position_embeddings.weight.val())?,
            typ: typ.get(..h).map(<[f32]>::to_vec).unwrap_or_default(),
            emb_norm: norm(&e.layer_norm)?,
            layers,
            scratch: Mutex::new(Scratch::default()),
        })
        .and_then(|m| {
            let ok = m.word.len() == m.vocab * h
                && m.pos.len() == m.max_pos * h
                && m.typ.len() == h
                && m.emb_norm.gamma.len() == h;
            if ok {
                Ok(m)
            } else {
                Err(ModelError::Load(
                    "embedding shapes do not match the config".into(),
                ))
            }
        })
    }

    /// The kernel in use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The integer tile and weight width of the dense layers, if they are quantized.
    pub fn quant(&self) -> Option<(QIsa, WeightBits)> {
        self.quant
    }

    /// Unit-length sentence embeddings of token-id sequences (`[CLS] … [SEP]`), one
    /// `hidden`-long vector per sequence, in order.
    pub fn embed(&self, seqs: &[&[u32]]) -> Result<Vec<Vec<f32>>, ModelError> {
        let h = self.hidden;
        let mut starts = Vec::with_capacity(seqs.len());
        let mut total = 0usize;
        for s in seqs {
            if s.len() > self.max_pos {
                return Err(ModelError::Tokenizer(format!(
                    "{} tokens exceed the model's {} positions",
                    s.len(),
                    self.max_pos
                )));
            }
            if let Some(&bad) = s.iter().find(|&&t| t as usize >= self.vocab) {
                return Err(ModelError::Tokenizer(format!(
                    "token id {bad} out of range"
                )));
            }
            starts.push(total);
            total += s.len();
        }
        if total == 0 {
            return Ok(vec![vec![0.0; h]; seqs.len()]);
        }
        let mut guard = self.scratch.try_lock();
        let mut fresh = Scratch::default();
        let s: &mut Scratch = match guard.as_deref_mut() {
            Ok(s) => s,
            Err(_) => &mut fresh, // another thread is embedding: use our own buffers
        };
        for (buf, width) in [
            (&mut s.x, h),
            (&mut s.qkv, 3 * h),
            (&mut s.ctx, h),
            (&mut s.tmp, h),
            (&mut s.h, h),
            (&mut s.inter, self.inter),
        ] {
            buf.resize(total * width, 0.0);
        }

        // Embeddings: word + position + type 0, then LayerNorm.
        {
            let mut row = 0;
            for seq in seqs {
                for (p, &t) in seq.iter().enumerate() {
                    let (w, ps) = (t as usize * h, p * h);
                    let dst = &mut s.tmp[row * h..(row + 1) * h];
                    for (j, d) in dst.iter_mut().enumerate() {
                        *d = self.word[w + j] + self.pos[ps + j] + self.typ[j];
                    }
                    row += 1;
                }
            }
            let tmp = &s.tmp;
            let n = &self.emb_norm;
            par::for_each_chunk(&mut s.x, h * 64, |ci, out| {
                for (r, o) in out.chunks_exact_mut(h).enumerate() {
                    let t = (ci * 64 + r) * h;
                    ops::layer_norm(&tmp[t..t + h], None, &n.gamma, &n.beta, self.eps, o);
                }
            });
        }

        let layers = |s: &mut Scratch| {
            for layer in &self.layers {
                self.layer(layer, s, seqs, &starts, total);
            }
        };
        if total < PARALLEL_MIN_TOKENS {
            par::serial(|| layers(s));
        } else {
            layers(s);
        }

        // Mean pooling over each sentence's tokens, then L2 normalisation.
        Ok(seqs
            .iter()
            .zip(&starts)
            .map(|(seq, &st)| {
                let mut v = vec![0f32; h];
                for r in st..st + seq.len() {
                    for (a, x) in v.iter_mut().zip(&s.x[r * h..(r + 1) * h]) {
                        *a += x;
                    }
                }
                let n = seq.len().max(1) as f32;
                let norm = (v.iter().map(|x| (x / n) * (x / n)).sum::<f32>()).sqrt();
                let inv = 1.0 / (norm.max(1e-12) * n);
                v.iter_mut().for_each(|x| *x *= inv);
                v
            })
            .collect())
    }

    fn layer(&self, l: &Layer, s: &mut Scratch, seqs: &[&[u32]], starts: &[usize], total: usize) {
        let (h, i) = (self.hidden, self.inter);
        l.qkv.run(total, &s.x, h, &mut s.qkv, 3 * h, &mut s.qa);
        self.attention(&s.qkv, seqs, starts, &mut s.ctx);
        l.attn_out.run(total, &s.ctx, h, &mut s.tmp, h, &mut s.qa);
        let (x, tmp) = (&s.x, &s.tmp);
        par::for_each_chunk(&mut s.h, h * 64, |ci, out| {
            for (r, o) in out.chunks_exact_mut(h).enumerate() {
                let t = (ci * 64 + r) * h;
                let n = &l.attn_norm;
                ops::layer_norm(
                    &tmp[t..t + h],
                    Some(&x[t..t + h]),
                    &n.gamma,
                    &n.beta,
                    self.eps,
                    o,
                );
            }
        });
        l.up.run(total, &s.h, h, &mut s.inter, i, &mut s.qa);
        par::for_each_chunk(&mut s.inter, i * 32, |_, c| ops::gelu(c));
        l.down.run(total, &s.inter, i, &mut s.tmp, h, &mut s.qa);
        let (hh, tmp) = (&s.h, &s.tmp);
        par::for_each_chunk(&mut s.x, h * 64, |ci, out| {
            for (r, o) in out.chunks_exact_mut(h).enumerate() {
                let t = (ci * 64 + r) * h;
                let n = &l.out_norm;
                ops::layer_norm(
                    &tmp[t..t + h],
                    Some(&hh[t..t + h]),
                    &n.gamma,
                    &n.beta,
                    self.eps,
                    o,
                );
            }
        });
    }

    /// Scaled dot-product attention per (sentence, head), over real tokens only, into `ctx`
    /// ([`attn::head`]); the tasks run on every core only when there is enough work to pay
    /// for waking them (one 128-token sentence does; a 12-token one does not).
    #[allow(unsafe_code)]
    fn attention(&self, qkv: &[f32], seqs: &[&[u32]], starts: &[usize], ctx: &mut [f32]) {
        let (h, heads) = (self.hidden, self.heads);
        let d = h / heads;
        let ld = 3 * h;
        let out = SendPtr(ctx.as_mut_ptr());
        let ctx_len = ctx.len();
        let isa = self.isa;
        let work: usize = seqs.iter().map(|s| s.len() * s.len() * d * heads).sum();
        let task = |s: &mut attn::Scratch, task: usize| {
            let (si, head) = (task / heads, task % heads);
            let len = seqs[si].len();
            if len == 0 {
                return;
            }
            let base = starts[si] * ld + head * d;
            let c0 = starts[si] * h + head * d;
            assert!(
                ctx_len >= c0 + (len - 1) * h + d,
                "attention: ctx too short"
            );
            // SAFETY: ctx holds rows starts[si] .. + len of h columns (checked above); each
            // (sentence, head) task writes its own rows × columns [head·d, head·d + d),
            // disjoint from every other task.
            unsafe {
                attn::head(
                    len,
                    d,
                    &qkv[base..],
                    &qkv[base + h..],
                    &qkv[base + 2 * h..],
                    ld,
                    out.get().add(c0),
                    h,
                    s,
                );
            }
        };
        if work < ATTENTION_MIN_PARALLEL_WORK {
            let mut s = attn::Scratch::new(isa);
            (0..seqs.len() * heads).for_each(|t| task(&mut s, t));
        } else {
            par::for_each_index(seqs.len() * heads, || attn::Scratch::new(isa), task);
        }
    }
}
