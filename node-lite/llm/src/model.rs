//! The Llama/Qwen2 forward pass on the CPU kernels, with a KV cache.
//!
//! Weights are repacked at load ([`PackedMat`]: the GGUF's own quantized values, rows
//! interleaved for the SIMD kernels; nothing is widened to f32 but norms and biases). A
//! forward call takes a block of tokens (prefill: every matrix is read once for the whole
//! block, a GEMM; decode: one token, a GEMV) and appends their keys and values to the
//! session's cache. Norms, RoPE, attention and SwiGLU are f32. Matrix products and attention
//! are split over the model's thread [`Team`] (row groups; (token, head) pairs).
//!
//! Several instances can share one forward pass ([`Exchange`]): by default each computes a
//! share of every matrix's rows and they swap the shares (five all-gathers per layer); after
//! [`Model::set_split`] each owns whole attention heads and a slice of the FFN (Megatron-style
//! tensor parallelism: `wo` and `down` split by their *inputs*), so a layer needs two
//! exchanges, each a sum of partial outputs.

use crate::LlmError;
use crate::config::{Arch, Config};
use crate::gguf::{Gguf, TensorInfo};
use crate::kernels::{self, Acts, PackedMat, Tier};
use crate::ops::{add, attend, rmsnorm, silu_mul};
use crate::par::{SharedMut, Team, split};
use crate::quant::dequantize_row;

#[derive(Debug, Clone)]
struct Layer {
    attn_norm: Vec<f32>,
    wq: PackedMat,
    wk: PackedMat,
    wv: PackedMat,
    wo: PackedMat,
    bq: Option<Vec<f32>>,
    bk: Option<Vec<f32>>,
    bv: Option<Vec<f32>>,
    ffn_norm: Vec<f32>,
    gate: PackedMat,
    up: PackedMat,
    down: PackedMat,
}

/// Which logits a forward call returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Logits {
    /// Only the last token's (generation).
    Last,
    /// Every token's, `n × vocab` (teacher-forced scoring).
    All,
}

/// Several instances of one model that each compute a part of every parallel section (row
/// groups of each matrix, (token, head) pairs of attention) and swap the parts — the browser's
/// way to use two cores for one conversation: two Web Workers, one wasm instance each (stable
/// Rust has no wasm threads), the parts crossing through a `SharedArrayBuffer`. Every
/// instance runs the same forward pass on the same inputs and so samples the same tokens.
pub trait Exchange {
    /// This instance's rank and how many instances there are.
    fn ranks(&self) -> (usize, usize);
    /// Publish `mine` (this rank's part of the current section, packed) and fill `others`
    /// with the other ranks' packed parts, in rank order. `parts[r]` is rank `r`'s part's
    /// length (every rank computes the same list), so `mine.len() = parts[rank]` and
    /// `others.len()` is the sum of the rest. Blocks until every rank has published.
    fn exchange(
        &mut self,
        parts: &[usize],
        mine: &[f32],
        others: &mut [f32],
    ) -> Result<(), LlmError>;
}

/// One output buffer of a section: `tokens` rows of `ld` values; rank `r` computed the
/// columns `ranges[r].0..ranges[r].1` of every row.
type Part<'a> = (&'a mut [f32], usize, usize, Vec<(usize, usize)>);

/// The output buffers of one parallel section and which rank computed what.
struct Section<'a> {
    bufs: Vec<Part<'a>>,
}

impl Section<'_> {
    fn pack(&self, rank: usize, out: &mut Vec<f32>) {
        out.clear();
        for (buf, n, ld, ranges) in &self.bufs {
            let (lo, hi) = ranges[rank];
            for t in 0..*n {
                out.extend_from_slice(&buf[t * ld + lo..t * ld + hi]);
            }
        }
    }

    fn len(&self, rank: usize) -> usize {
        self.bufs
            .iter()
            .map(|(_, n, _, r)| n * (r[rank].1 - r[rank].0))
            .sum()
    }

    fn unpack(&mut self, rank: usize, mut data: &[f32]) {
        for (buf, n, ld, ranges) in &mut self.bufs {
            let (lo, hi) = ranges[rank];
            for t in 0..*n {
                let (a, rest) = data.split_at(hi - lo);
                buf[t * *ld + lo..t * *ld + hi].copy_from_slice(a);
                data = rest;
            }
        }
    }

    /// Swap parts so every rank holds every part.
    fn complete(&mut self, ex: &mut dyn Exchange) -> Result<(), LlmError> {
        let (rank, n) = ex.ranks();
        let parts: Vec<usize> = (0..n).map(|r| self.len(r)).collect();
        let mut mine = Vec::with_capacity(parts[rank]);
        self.pack(rank, &mut mine);
        let mut others = vec![0f32; parts.iter().sum::<usize>() - parts[rank]];
        ex.exchange(&parts, &mine, &mut others)?;
        let mut off = 0;
        for r in (0..n).filter(|&r| r != rank) {
            self.unpack(r, &others[off..off + parts[r]]);
            off += parts[r];
        }
        Ok(())
    }
}

/// One rank's share of every layer under tensor parallelism (see [`Model::set_split`]).
#[derive(Debug, Clone)]
struct Split {
    rank: usize,
    ranks: usize,
    share: Share,
    /// Per layer: `wo`'s columns for the share's heads, `down`'s for its FFN units.
    wo: Vec<PackedMat>,
    down: Vec<PackedMat>,
}

/// What one rank computes of every layer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Share {
    /// Query heads this rank attends with.
    heads: (usize, usize),
    /// The KV heads those queries read: their keys and values are computed and cached here.
    kv_heads: (usize, usize),
    /// FFN hidden units (whole blocks of 32).
    ffn: (usize, usize),
}

/// Every rank's [`Share`], or `None` where the shape does not split (heads not whole blocks
/// of 32, fewer heads or FFN blocks than ranks). Heads and FFN blocks are split evenly: the
/// ranks meet after each of a layer's two sections, so each section is balanced on its own
/// (moving FFN units to the rank with fewer heads would only make both sections wait).
fn plan(cfg: &Config, group_rows: usize, ranks: usize) -> Option<Vec<Share>> {
    let (hd, f) = (cfg.head_dim, cfg.ffn);
    let qk = kernels::QK;
    let group = cfg.n_heads / cfg.n_kv_heads.max(1);
    if ranks < 2
        || cfg.n_heads < ranks
        || group == 0
        || !hd.is_multiple_of(qk)
        || !hd.is_multiple_of(group_rows)
        || !qk.is_multiple_of(group_rows)
        || !f.is_multiple_of(qk)
        || f / qk < ranks
    {
        return None;
    }
    Some(
        (0..ranks)
            .map(|r| {
                let (h0, h1) = split(cfg.n_heads, ranks, r);
                let (b0, b1) = split(f / qk, ranks, r);
                Share {
                    heads: (h0, h1),
                    // The KV heads its queries read (a KV head shared by two ranks' queries is
                    // computed by both).
                    kv_heads: (h0 / group, (h1 - 1) / group + 1),
                    ffn: (b0 * qk, b1 * qk),
                }
            })
            .collect(),
    )
}

/// Append a block's keys and values to layer `li`'s cache. The cache holds f16-precision values
/// (as llama.cpp's default f16 cache does): the reference's numerics, and the same answers.
fn cache_kv(s: &mut Session, li: usize, k: &[f32], v: &[f32]) {
    s.k[li].extend(k.iter().map(|&x| half::f16::from_f32(x).to_f32()));
    s.v[li].extend(v.iter().map(|&x| half::f16::from_f32(x).to_f32()));
}

/// A loaded model: packed weights and the shape.
pub struct Model {
    /// Shape.
    pub cfg: Config,
    embd: PackedMat,
    /// `None`: tied to the embeddings.
    output: Option<PackedMat>,
    out_norm: Vec<f32>,
    layers: Vec<Layer>,
    inv_freq: Vec<f32>,
    tier: Tier,
    team: Team,
    /// This instance's share under tensor parallelism ([`Model::set_split`]).
    split: Option<Split>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("cfg", &self.cfg)
            .field("kernel", &self.tier.name())
            .field("threads", &self.team.n())
            .field("split", &self.split.as_ref().map(|s| (s.rank, s.ranks)))
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
    /// `(rank, ranks)` of the tensor-parallel split the cache was built under (its rank's
    /// KV heads only); `None`: every head.
    layout: Option<(usize, usize)>,
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

fn tensor<'g>(g: &'g Gguf, name: &str) -> Result<&'g TensorInfo, LlmError> {
    g.tensors
        .get(name)
        .ok_or_else(|| LlmError::BadModel(format!("tensor {name} missing")))
}

fn matrix(
    g: &Gguf,
    bytes: &[u8],
    name: &str,
    rows: usize,
    cols: usize,
    r: usize,
) -> Result<PackedMat, LlmError> {
    let t = tensor(g, name)?;
    if t.dims.len() != 2 || t.cols() != cols || t.rows() != rows {
        return Err(LlmError::BadModel(format!(
            "tensor {name} has shape {:?}, expected [{cols}, {rows}]",
            t.dims
        )));
    }
    if !cols.is_multiple_of(t.ty.block_elems()) {
        return Err(LlmError::BadModel(format!(
            "tensor {name}: rows of {cols} are not whole {} blocks",
            t.ty.name()
        )));
    }
    let data = g.tensor_data(bytes, t)?;
    if data.len() != rows * t.ty.row_bytes(cols) {
        return Err(LlmError::BadModel(format!(
            "tensor {name} holds {} bytes, expected {}",
            data.len(),
            rows * t.ty.row_bytes(cols)
        )));
    }
    Ok(PackedMat::pack(t.ty, data, rows, cols, r))
}

fn vector(g: &Gguf, bytes: &[u8], name: &str, n: usize) -> Result<Vec<f32>, LlmError> {
    vector_of(g, bytes, tensor(g, name)?, n)
}

fn vector_of(g: &Gguf, bytes: &[u8], t: &TensorInfo, n: usize) -> Result<Vec<f32>, LlmError> {
    if t.elements() != n as u64 || !n.is_multiple_of(t.ty.block_elems()) {
        return Err(LlmError::BadModel(format!(
            "tensor {} has {} elements, expected {n}",
            t.name,
            t.elements()
        )));
    }
    let data = g.tensor_data(bytes, t)?;
    if data.len() != t.ty.row_bytes(n) {
        return Err(LlmError::BadModel(format!(
            "tensor {} is truncated",
            t.name
        )));
    }
    let mut out = vec![0f32; n];
    dequantize_row(t.ty, data, &mut out);
    Ok(out)
}

impl Model {
    /// Load from a parsed GGUF and the bytes of the whole file, running matrix products on
    /// `threads` threads (1 = the calling thread only; ignored without the `threads`
    /// feature). The weights are copied (repacked); `bytes` may be dropped afterwards.
    pub fn from_gguf(g: &Gguf, bytes: &[u8], threads: usize) -> Result<Self, LlmError> {
        Self::with_tier(g, bytes, threads, kernels::best_tier())
    }

    /// As [`Model::from_gguf`], on a chosen kernel tier (one of
    /// [`kernels::available_tiers`]; the tests compare them).
    pub fn with_tier(g: &Gguf, bytes: &[u8], threads: usize, tier: Tier) -> Result<Self, LlmError> {
        let cfg = Config::from_gguf(g)?;
        let (d, kv, f) = (cfg.dim, cfg.kv_dim(), cfg.ffn);
        let r = tier.group_rows();
        let embd = matrix(g, bytes, "token_embd.weight", cfg.vocab, d, r)?;
        let output = if g.tensors.contains_key("output.weight") {
            Some(matrix(g, bytes, "output.weight", cfg.vocab, d, r)?)
        } else {
            None // tied embeddings
        };
        let out_norm = vector(g, bytes, "output_norm.weight", d)?;
        let mut layers = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let n = |s: &str| format!("blk.{i}.{s}");
            let bias = |s: &str, len: usize| -> Result<Option<Vec<f32>>, LlmError> {
                match g.tensors.get(&n(s)) {
                    Some(t) => Ok(Some(vector_of(g, bytes, t, len)?)),
                    None if cfg.arch == Arch::Qwen2 => {
                        Err(LlmError::BadModel(format!("tensor {} missing", n(s))))
                    }
                    None => Ok(None),
                }
            };
            let mat = |s: &str, rows, cols| matrix(g, bytes, &n(s), rows, cols, r);
            layers.push(Layer {
                attn_norm: vector(g, bytes, &n("attn_norm.weight"), d)?,
                wq: mat("attn_q.weight", d, d)?,
                wk: mat("attn_k.weight", kv, d)?,
                wv: mat("attn_v.weight", kv, d)?,
                wo: mat("attn_output.weight", d, d)?,
                bq: bias("attn_q.bias", d)?,
                bk: bias("attn_k.bias", kv)?,
                bv: bias("attn_v.bias", kv)?,
                ffn_norm: vector(g, bytes, &n("ffn_norm.weight"), d)?,
                gate: mat("ffn_gate.weight", f, d)?,
                up: mat("ffn_up.weight", f, d)?,
                down: mat("ffn_down.weight", d, f)?,
            });
        }
        let half = cfg.rope_dim / 2;
        let inv_freq = (0..half)
            .map(|i| (f64::from(cfg.rope_theta)).powf(-2.0 * i as f64 / cfg.rope_dim as f64) as f32)
            .collect();
        Ok(Model {
            cfg,
            embd,
            output,
            out_norm,
            layers,
            inv_freq,
            tier,
            team: Team::new(threads),
            split: None,
        })
    }

    /// Split every forward pass with peers by heads and FFN units (tensor parallelism) as
    /// rank `rank` of `ranks`: from now on a [`Model::forward_ranked`] whose [`Exchange`] has
    /// this rank and count needs two exchanges per layer instead of five. Copies this rank's
    /// columns of `wo` and `down` (about half of them for two ranks). Returns `false`, and
    /// leaves the model on the all-gather split, where the shape does not split this way or
    /// `ranks < 2`. Every rank must make the same call with its own `rank`; a conversation's
    /// cache belongs to the split it was built under ([`LlmError::CacheLayout`]).
    pub fn set_split(&mut self, rank: usize, ranks: usize) -> bool {
        self.split = None;
        if rank >= ranks {
            return false;
        }
        let l0 = self.layers.first();
        let rows = l0.map_or(1, |l| {
            [&l.wq, &l.wk, &l.wv, &l.gate, &l.up]
                .iter()
                .map(|m| m.group_rows())
                .max()
                .unwrap_or(1)
        });
        let Some(plan) = plan(&self.cfg, rows, ranks) else {
            return false;
        };
        let share = plan[rank];
        let (heads, ffn) = (share.heads, share.ffn);
        let hd = self.cfg.head_dim;
        self.split = Some(Split {
            rank,
            ranks,
            share,
            wo: self
                .layers
                .iter()
                .map(|l| l.wo.slice_cols(heads.0 * hd, heads.1 * hd))
                .collect(),
            down: self
                .layers
                .iter()
                .map(|l| l.down.slice_cols(ffn.0, ffn.1))
                .collect(),
        });
        true
    }

    /// `(rank, ranks)` of the tensor-parallel split in force, if any.
    pub fn split(&self) -> Option<(usize, usize)> {
        self.split.as_ref().map(|s| (s.rank, s.ranks))
    }

    /// The kernel tier the model runs on.
    pub fn tier(&self) -> Tier {
        self.tier
    }

    /// Threads the matrix products run on.
    pub fn threads(&self) -> usize {
        self.team.n()
    }

    fn output(&self) -> &PackedMat {
        self.output.as_ref().unwrap_or(&self.embd)
    }

    /// Bytes of weights read per decoded token (every matrix once + one embedding row).
    pub fn bytes_per_token(&self) -> usize {
        let per_layer: usize = self
            .layers
            .iter()
            .map(|l| {
                [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down]
                    .iter()
                    .map(|m| m.bytes())
                    .sum::<usize>()
            })
            .sum();
        per_layer + self.output().bytes() + self.embd.bytes() / self.cfg.vocab.max(1)
    }

    /// A fresh conversation.
    pub fn session(&self) -> Session {
        Session {
            pos: 0,
            tokens: Vec::new(),
            k: vec![Vec::new(); self.cfg.n_layers],
            v: vec![Vec::new(); self.cfg.n_layers],
            layout: None,
        }
    }

    /// Rows `r0..r1` of each matrix (whole row groups, or up to the last row) for every
    /// token; nothing exchanged.
    fn gemm_rows(&self, jobs: &mut [(&PackedMat, usize, usize, &mut [f32])], acts: &Acts) {
        let outs: Vec<(&PackedMat, usize, usize, SharedMut)> = jobs
            .iter_mut()
            .map(|(m, r0, r1, o)| {
                let gr = m.group_rows();
                assert!(o.len() >= acts.n * m.rows && r0.is_multiple_of(gr) && *r1 <= m.rows);
                (*m, *r0 / gr, r1.div_ceil(gr), SharedMut::new(o))
            })
            .collect();
        self.gemm_groups(&outs, acts);
    }

    /// Row groups `a..b` of each matrix for every token, split over the team.
    fn gemm_groups(&self, outs: &[(&PackedMat, usize, usize, SharedMut)], acts: &Acts) {
        let n = self.team.n();
        self.team.run(&|i| {
            for (m, a, b, out) in outs {
                let (g0, g1) = split(b - a, n, i);
                // SAFETY: thread i writes only the rows of groups a+g0..a+g1, a partition of
                // a..b; the callers hold the buffers, and nothing reads them until `run`
                // returns.
                unsafe { kernels::gemm_shared(self.tier, m, acts, a + g0, a + g1, *out, m.rows) };
            }
        });
    }

    /// Replace `buf` (this rank's partial sums) by the sum of every rank's, added in rank
    /// order so every rank gets the same bits.
    fn all_reduce(
        buf: &mut [f32],
        others: &mut Vec<f32>,
        ex: &mut dyn Exchange,
    ) -> Result<(), LlmError> {
        let (rank, ranks) = ex.ranks();
        let len = buf.len();
        others.clear();
        others.resize(len * (ranks - 1), 0.0);
        ex.exchange(&vec![len; ranks], buf, others)?;
        for (i, v) in buf.iter_mut().enumerate() {
            let mut acc = 0f32;
            for r in 0..ranks {
                acc += match r.cmp(&rank) {
                    std::cmp::Ordering::Less => others[r * len + i],
                    std::cmp::Ordering::Equal => *v,
                    std::cmp::Ordering::Greater => others[(r - 1) * len + i],
                };
            }
            *v = acc;
        }
        Ok(())
    }

    /// `out[t·rows + r]` for every row of each matrix and token, the matrices' row groups
    /// split over the team (each thread a contiguous share of every matrix) — or, with an
    /// [`Exchange`], this rank's share computed here and the others' swapped in.
    fn matmul(
        &self,
        jobs: &mut [(&PackedMat, &mut [f32])],
        acts: &Acts,
        ex: &mut Option<&mut dyn Exchange>,
    ) -> Result<(), LlmError> {
        let (rank, ranks) = ex.as_ref().map_or((0, 1), |e| e.ranks());
        let outs: Vec<(&PackedMat, usize, usize, SharedMut)> = jobs
            .iter_mut()
            .map(|(m, o)| {
                assert!(o.len() >= acts.n * m.rows);
                let (g0, g1) = split(m.groups(), ranks, rank);
                (*m, g0, g1, SharedMut::new(o))
            })
            .collect();
        self.gemm_groups(&outs, acts);
        drop(outs);
        if let Some(ex) = ex.as_deref_mut() {
            let mut sec = Section { bufs: Vec::new() };
            for (m, o) in jobs.iter_mut() {
                let ranges = (0..ranks)
                    .map(|r| {
                        let (a, b) = split(m.groups(), ranks, r);
                        let gr = m.group_rows();
                        ((a * gr).min(m.rows), (b * gr).min(m.rows))
                    })
                    .collect();
                sec.bufs.push((&mut **o, acts.n, m.rows, ranges));
            }
            sec.complete(ex)?;
        }
        Ok(())
    }

    /// Run `tokens` through the model, appending to `s`'s cache; returns the logits asked for.
    pub fn forward(
        &self,
        s: &mut Session,
        tokens: &[u32],
        which: Logits,
    ) -> Result<Vec<f32>, LlmError> {
        self.forward_ranked(s, tokens, which, None)
    }

    /// [`Model::forward`] as one of several instances that split the work (see
    /// [`Exchange`]); `None` = this instance does everything. A failure part-way (a peer that
    /// stopped answering) leaves the session as it was before the call.
    pub fn forward_ranked(
        &self,
        s: &mut Session,
        tokens: &[u32],
        which: Logits,
        ex: Option<&mut dyn Exchange>,
    ) -> Result<Vec<f32>, LlmError> {
        let r = self.forward_block(s, tokens, which, ex);
        if r.is_err() {
            // Layers before the failing one appended this block's keys and values.
            let keep = s.pos * self.cfg.kv_dim();
            for c in s.k.iter_mut().chain(s.v.iter_mut()) {
                c.truncate(keep);
            }
        }
        r
    }

    fn forward_block(
        &self,
        s: &mut Session,
        tokens: &[u32],
        which: Logits,
        mut ex: Option<&mut dyn Exchange>,
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
        // Tensor parallelism where this instance was split for exactly these peers; the
        // all-gather split (or none) otherwise.
        let tp = self.split.as_ref().filter(|sp| {
            ex.as_ref()
                .is_some_and(|e| e.ranks() == (sp.rank, sp.ranks))
        });
        let layout = tp.map(|sp| (sp.rank, sp.ranks));
        if s.pos == 0 {
            s.layout = layout;
        } else if s.layout != layout {
            let name = |l: Option<(usize, usize)>| match l {
                Some((r, n)) => format!("rank {r} of {n} of a tensor-parallel split"),
                None => "every head on one instance".to_string(),
            };
            return Err(LlmError::CacheLayout {
                built: name(s.layout),
                now: name(layout),
            });
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
            self.embd.dequantize_row(tok, &mut x[t * d..(t + 1) * d]);
        }
        // RoPE angles for this block's positions, once for every layer and head.
        let half = self.inv_freq.len();
        let mut rot = vec![(0f32, 0f32); n * half];
        for t in 0..n {
            for (i, &fr) in self.inv_freq.iter().enumerate() {
                rot[t * half + i] = ((s.pos + t) as f32 * fr).sin_cos();
            }
        }
        let mut h = vec![0f32; n * d];
        let mut acts = Acts::default();
        let mut q = vec![0f32; n * d];
        let mut k = vec![0f32; n * kv];
        let mut v = vec![0f32; n * kv];
        let mut att = vec![0f32; n * d];
        let mut o = vec![0f32; n * d];
        let mut g = vec![0f32; n * f];
        let mut u = vec![0f32; n * f];
        let mut part = Vec::new(); // this rank's slice of a layer's inputs (tensor-parallel)
        let mut others = Vec::new(); // the other ranks' partial sums
        for (li, l) in self.layers.iter().enumerate() {
            if let (Some(sp), Some(ex)) = (tp, ex.as_deref_mut()) {
                let hd = cfg.head_dim;
                let ((h0, h1), (k0, k1), (f0, f1)) =
                    (sp.share.heads, sp.share.kv_heads, sp.share.ffn);
                self.norm_rows(&x, &l.attn_norm, &mut h);
                acts.quantize(&h, d);
                self.gemm_rows(
                    &mut [
                        (&l.wq, h0 * hd, h1 * hd, &mut q),
                        (&l.wk, k0 * hd, k1 * hd, &mut k),
                        (&l.wv, k0 * hd, k1 * hd, &mut v),
                    ],
                    &acts,
                );
                for t in 0..n {
                    let (qs, ks) = (
                        t * d + h0 * hd..t * d + h1 * hd,
                        t * kv + k0 * hd..t * kv + k1 * hd,
                    );
                    if let Some(b) = &l.bq {
                        add(&mut q[qs.clone()], &b[h0 * hd..h1 * hd]);
                    }
                    if let Some(b) = &l.bk {
                        add(&mut k[ks.clone()], &b[k0 * hd..k1 * hd]);
                    }
                    if let Some(b) = &l.bv {
                        add(&mut v[ks.clone()], &b[k0 * hd..k1 * hd]);
                    }
                    let r = &rot[t * half..(t + 1) * half];
                    self.rope(&mut q[qs], r);
                    self.rope(&mut k[ks], r);
                }
                // Other ranks' KV heads hold stale values here; only this rank's are read.
                cache_kv(s, li, &k, &v);
                self.attend_heads(
                    &q,
                    &s.k[li],
                    &s.v[li],
                    s.pos,
                    n,
                    (h0, h1),
                    (0, n * (h1 - h0)),
                    &mut att,
                );
                let cw = (h1 - h0) * hd;
                part.clear();
                for t in 0..n {
                    part.extend_from_slice(&att[t * d + h0 * hd..t * d + h1 * hd]);
                }
                acts.quantize(&part, cw);
                let wo = &sp.wo[li];
                self.gemm_rows(&mut [(wo, 0, d, &mut o)], &acts);
                Self::all_reduce(&mut o[..n * d], &mut others, ex)?;
                add(&mut x, &o);
                self.norm_rows(&x, &l.ffn_norm, &mut h);
                acts.quantize(&h, d);
                self.gemm_rows(
                    &mut [(&l.gate, f0, f1, &mut g), (&l.up, f0, f1, &mut u)],
                    &acts,
                );
                part.clear();
                for t in 0..n {
                    let r = t * f + f0..t * f + f1;
                    silu_mul(&mut g[r.clone()], &u[r.clone()]);
                    part.extend_from_slice(&g[r]);
                }
                acts.quantize(&part, f1 - f0);
                let down = &sp.down[li];
                self.gemm_rows(&mut [(down, 0, d, &mut o)], &acts);
                Self::all_reduce(&mut o[..n * d], &mut others, ex)?;
                add(&mut x, &o);
                continue;
            }
            self.norm_rows(&x, &l.attn_norm, &mut h);
            acts.quantize(&h, d);
            self.matmul(
                &mut [(&l.wq, &mut q), (&l.wk, &mut k), (&l.wv, &mut v)],
                &acts,
                &mut ex,
            )?;
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
                let r = &rot[t * half..(t + 1) * half];
                self.rope(&mut q[t * d..(t + 1) * d], r);
                self.rope(&mut k[t * kv..(t + 1) * kv], r);
            }
            cache_kv(s, li, &k, &v);
            self.attention(&q, &s.k[li], &s.v[li], s.pos, n, &mut att, &mut ex)?;
            acts.quantize(&att, d);
            self.matmul(&mut [(&l.wo, &mut o)], &acts, &mut ex)?;
            add(&mut x, &o);
            self.norm_rows(&x, &l.ffn_norm, &mut h);
            acts.quantize(&h, d);
            self.matmul(&mut [(&l.gate, &mut g), (&l.up, &mut u)], &acts, &mut ex)?;
            silu_mul(&mut g, &u);
            acts.quantize(&g, f);
            self.matmul(&mut [(&l.down, &mut o)], &acts, &mut ex)?;
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
        for (i, &t) in rows.iter().enumerate() {
            rmsnorm(
                &x[t * d..(t + 1) * d],
                &self.out_norm,
                cfg.norm_eps,
                &mut xn[i * d..(i + 1) * d],
            );
        }
        acts.quantize(&xn, d);
        let mut logits = vec![0f32; m * cfg.vocab];
        self.matmul(&mut [(self.output(), &mut logits)], &acts, &mut ex)?;
        Ok(logits)
    }

    /// RMSNorm of every row (`dim` wide) of `x` into `h`.
    fn norm_rows(&self, x: &[f32], w: &[f32], h: &mut [f32]) {
        let d = self.cfg.dim;
        for (xr, hr) in x.chunks_exact(d).zip(h.chunks_exact_mut(d)) {
            rmsnorm(xr, w, self.cfg.norm_eps, hr);
        }
    }

    fn rope(&self, v: &mut [f32], rot: &[(f32, f32)]) {
        let hd = self.cfg.head_dim;
        let half = self.cfg.rope_dim / 2;
        for head in v.chunks_exact_mut(hd) {
            for (i, &(s, c)) in rot.iter().enumerate() {
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

    /// Causal attention of `n` new tokens (queries `q`, at positions `pos..pos+n`) over the
    /// cache (`pos + n` keys and values), into `att`; (token, head) pairs split over the team
    /// (and over the ranks, with an [`Exchange`]).
    #[allow(clippy::too_many_arguments)]
    fn attention(
        &self,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        pos: usize,
        n: usize,
        att: &mut [f32],
        ex: &mut Option<&mut dyn Exchange>,
    ) -> Result<(), LlmError> {
        let cfg = &self.cfg;
        let (d, hd) = (cfg.dim, cfg.head_dim);
        let pairs = n * cfg.n_heads;
        let (rank, ranks) = ex.as_ref().map_or((0, 1), |e| e.ranks());
        self.attend_heads(
            q,
            kc,
            vc,
            pos,
            n,
            (0, cfg.n_heads),
            split(pairs, ranks, rank),
            att,
        );
        if let Some(ex) = ex.as_deref_mut() {
            // Pairs are (token, head) in order, so rank r's pairs are the flat range
            // [q0·hd, q1·hd) of `att` seen as one row of n·d values.
            let ranges = (0..ranks)
                .map(|r| {
                    let (a, b) = split(pairs, ranks, r);
                    (a * hd, b * hd)
                })
                .collect();
            let mut sec = Section {
                bufs: vec![(att, 1, n * d, ranges)],
            };
            sec.complete(ex)?;
        }
        Ok(())
    }

    /// Attention of the (token, head) pairs `pairs.0..pairs.1` of heads `heads.0..heads.1`
    /// (pair `p`: token `p / h`, head `heads.0 + p % h` for `h` heads), split over the team.
    #[allow(clippy::too_many_arguments)]
    fn attend_heads(
        &self,
        q: &[f32],
        kc: &[f32],
        vc: &[f32],
        pos: usize,
        n: usize,
        heads: (usize, usize),
        pairs: (usize, usize),
        att: &mut [f32],
    ) {
        let cfg = &self.cfg;
        let (d, kv, hd) = (cfg.dim, cfg.kv_dim(), cfg.head_dim);
        let group = cfg.n_heads / cfg.n_kv_heads;
        let scale = 1.0 / (hd as f32).sqrt();
        let nh = heads.1 - heads.0;
        let (q0, q1) = pairs;
        debug_assert!(q1 <= n * nh);
        let out = SharedMut::new(att);
        let threads = self.team.n();
        self.team.run(&|i| {
            let (p0, p1) = split(q1 - q0, threads, i);
            let mut scores = vec![0f32; pos + n];
            let mut acc = vec![0f32; hd];
            for p in q0 + p0..q0 + p1 {
                let (t, head) = (p / nh, heads.0 + p % nh);
                let off = (head / group) * hd;
                attend(
                    &q[t * d + head * hd..t * d + (head + 1) * hd],
                    &kc[off..],
                    &vc[off..],
                    kv,
                    pos + t + 1,
                    scale,
                    &mut scores,
                    &mut acc,
                );
                // SAFETY: pair p owns att[t·d + head·hd ..][..hd]; the pairs p0..p1 are
                // this thread's alone, and nothing reads `att` until `run` returns.
                unsafe { out.write_slice(t * d + head * hd, &acc) };
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(n_heads: usize, n_kv_heads: usize, head_dim: usize, ffn: usize) -> Config {
        Config {
            arch: Arch::Llama,
            n_layers: 1,
            dim: n_heads * head_dim,
            ffn,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dim: head_dim,
            rope_theta: 1e4,
            norm_eps: 1e-5,
            context: 64,
            vocab: 32,
            name: String::new(),
        }
    }

    #[test]
    fn plans_partition_heads_and_ffn_units() {
        // SmolLM2-135M on two ranks: 5 + 4 heads, the KV head in the middle on both, the FFN
        // halved.
        let p = plan(&shape(9, 3, 64, 1536), 8, 2).unwrap();
        assert_eq!(p[0].heads, (0, 5));
        assert_eq!(p[1].heads, (5, 9));
        assert_eq!((p[0].kv_heads, p[1].kv_heads), ((0, 2), (1, 3)));
        assert_eq!((p[0].ffn, p[1].ffn), ((0, 768), (768, 1536)));
        for (cfg, ranks) in [
            (shape(9, 3, 64, 1536), 3),
            (shape(14, 2, 64, 4864), 2), // Qwen2.5-0.5B
            (shape(32, 8, 64, 8192), 4), // Llama 3.2 1B
            (shape(4, 4, 32, 64), 2),    // one FFN block per rank
        ] {
            let p = plan(&cfg, 4, ranks).unwrap();
            let group = cfg.n_heads / cfg.n_kv_heads;
            let (mut h, mut f) = (0, 0);
            for s in &p {
                assert_eq!((s.heads.0, s.ffn.0), (h, f), "contiguous shares");
                assert!(s.heads.1 > s.heads.0 && s.ffn.1 > s.ffn.0);
                assert!(s.ffn.0 % 32 == 0 && s.ffn.1 % 32 == 0);
                assert_eq!(s.kv_heads.0, s.heads.0 / group);
                assert_eq!(s.kv_heads.1, (s.heads.1 - 1) / group + 1);
                (h, f) = (s.heads.1, s.ffn.1);
            }
            assert_eq!((h, f), (cfg.n_heads, cfg.ffn), "every head and unit");
        }
        // Shapes that do not split: more ranks than heads or FFN blocks, heads not whole
        // blocks of 32, one rank.
        assert!(plan(&shape(2, 2, 64, 1536), 8, 3).is_none());
        assert!(plan(&shape(4, 4, 32, 64), 4, 3).is_none());
        assert!(plan(&shape(8, 8, 48, 1536), 8, 2).is_none());
        assert!(plan(&shape(9, 3, 64, 1536), 8, 1).is_none());
    }
}
