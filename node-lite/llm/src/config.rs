//! The model's shape, read from GGUF metadata (`{arch}.block_count`, …), with the checks that
//! make a hostile or unsupported file fail before any weight is touched.

use crate::LlmError;
use crate::gguf::Gguf;

/// Architectures the engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Arch {
    /// Llama family (SmolLM2, TinyLlama, Llama 3.x): Q/K stored permuted for adjacent-pair RoPE.
    Llama,
    /// Qwen2 / Qwen2.5: biases on Q, K, V; rotate-half ("NeoX") RoPE.
    Qwen2,
}

impl Arch {
    /// The GGUF `general.architecture` name.
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Everything the forward pass needs to know about the shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Architecture.
    pub arch: Arch,
    /// Transformer blocks.
    pub n_layers: usize,
    /// Model width.
    pub dim: usize,
    /// FFN hidden width.
    pub ffn: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `n_heads`).
    pub n_kv_heads: usize,
    /// Width of one head.
    pub head_dim: usize,
    /// Dimensions of each head that RoPE rotates.
    pub rope_dim: usize,
    /// RoPE base frequency.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub norm_eps: f32,
    /// Trained context length.
    pub context: usize,
    /// Vocabulary size.
    pub vocab: usize,
    /// Model name from metadata (informational).
    pub name: String,
}

impl Config {
    /// Read and check the shape. Refuses an unknown architecture by name.
    pub fn from_gguf(g: &Gguf) -> Result<Self, LlmError> {
        let arch_name = g
            .architecture()
            .ok_or_else(|| LlmError::Unsupported("no general.architecture".into()))?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(LlmError::Unsupported(format!(
                    "architecture {other:?} (supported: llama, qwen2)"
                )));
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let req = |k: &str| -> Result<usize, LlmError> {
            g.get_u64(&key(k))
                .and_then(|v| usize::try_from(v).ok())
                .ok_or_else(|| LlmError::BadModel(format!("metadata {} missing", key(k))))
        };
        let n_layers = req("block_count")?;
        let dim = req("embedding_length")?;
        let ffn = req("feed_forward_length")?;
        let n_heads = req("attention.head_count")?;
        let n_kv_heads = g
            .get_u64(&key("attention.head_count_kv"))
            .map_or(n_heads, |v| v as usize);
        let context = g
            .get_u64(&key("context_length"))
            .map_or(2048, |v| v as usize);
        let norm_eps = g
            .get_f64(&key("attention.layer_norm_rms_epsilon"))
            .unwrap_or(1e-5) as f32;
        let rope_theta = g.get_f64(&key("rope.freq_base")).unwrap_or(10_000.0) as f32;
        let vocab = g
            .tensors
            .get("token_embd.weight")
            .map(|t| t.rows())
            .ok_or_else(|| LlmError::BadModel("tensor token_embd.weight missing".into()))?;
        let bad = |why: String| Err(LlmError::BadModel(why));
        if n_layers == 0 || n_layers > 512 || dim == 0 || dim > 65_536 || ffn == 0 || ffn > 262_144
        {
            return bad(format!(
                "implausible shape: {n_layers} layers, width {dim}, ffn {ffn}"
            ));
        }
        if n_heads == 0
            || n_kv_heads == 0
            || !dim.is_multiple_of(n_heads)
            || !n_heads.is_multiple_of(n_kv_heads)
        {
            return bad(format!(
                "{n_heads} heads / {n_kv_heads} kv heads do not divide width {dim}"
            ));
        }
        let head_dim = dim / n_heads;
        if head_dim > 256 {
            return bad(format!("head width {head_dim} over 256"));
        }
        let rope_dim = g
            .get_u64(&key("rope.dimension_count"))
            .map_or(head_dim, |v| v as usize);
        if rope_dim == 0 || rope_dim > head_dim || !rope_dim.is_multiple_of(2) {
            return bad(format!(
                "rope dimension {rope_dim} for head width {head_dim}"
            ));
        }
        if !dim.is_multiple_of(32) || !ffn.is_multiple_of(32) {
            return bad(format!("width {dim} / ffn {ffn} not multiples of 32"));
        }
        if context == 0 || context > 1 << 20 {
            return bad(format!("context length {context}"));
        }
        if !(rope_theta.is_finite() && rope_theta > 0.0 && norm_eps.is_finite() && norm_eps > 0.0) {
            return bad("rope base or norm epsilon not positive".into());
        }
        Ok(Config {
            arch,
            n_layers,
            dim,
            ffn,
            n_heads,
            n_kv_heads,
            head_dim,
            rope_dim,
            rope_theta,
            norm_eps,
            context,
            vocab,
            name: g.get_str("general.name").unwrap_or("").to_string(),
        })
    }

    /// Width of the K and V projections.
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }
}
