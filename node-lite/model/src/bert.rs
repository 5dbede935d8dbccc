//! The BERT encoder of all-MiniLM-L6-v2, written against burn 0.22's device-based API.
//!
//! Field names mirror the Hugging Face checkpoint (`encoder.layer.N.attention.self.query`, …)
//! so the importer maps safetensors keys with two renames only (`LayerNorm` → `layer_norm`,
//! `self` → `self_`).

use burn::nn::{Embedding, EmbeddingConfig, LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::prelude::*;
use burn::tensor::activation::{gelu, softmax};
use serde::{Deserialize, Serialize};

/// Shape of a BERT model (the subset of Hugging Face's `config.json` we need).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BertConfig {
    /// Rows of the word embedding: valid token ids are `0..vocab_size` (MiniLM: 30522).
    pub vocab_size: usize,
    /// Width of every hidden state and of the output embedding (MiniLM: 384).
    pub hidden_size: usize,
    /// Transformer layers in the encoder (MiniLM: 6).
    pub num_hidden_layers: usize,
    /// Attention heads per layer; must divide `hidden_size` (MiniLM: 12 of 32 dimensions).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer inside each block (MiniLM: 1536).
    pub intermediate_size: usize,
    /// Rows of the position embedding, the most tokens one input may have (MiniLM: 512).
    pub max_position_embeddings: usize,
    /// Rows of the token-type (segment) embedding (MiniLM: 2); only type 0 is used.
    pub type_vocab_size: usize,
    /// Epsilon of every `LayerNorm` (MiniLM: 1e-12).
    pub layer_norm_eps: f64,
}

impl BertConfig {
    /// all-MiniLM-L6-v2.
    pub fn minilm_l6() -> Self {
        Self {
            vocab_size: 30522,
            hidden_size: 384,
            num_hidden_layers: 6,
            num_attention_heads: 12,
            intermediate_size: 1536,
            max_position_embeddings: 512,
            type_vocab_size: 2,
            layer_norm_eps: 1e-12,
        }
    }

    /// Build a model with freshly initialised (random) parameters on `device`.
    pub fn init(&self, device: &Device) -> Bert {
        let h = self.hidden_size;
        let ln = || {
            LayerNormConfig::new(h)
                .with_epsilon(self.layer_norm_eps)
                .init(device)
        };
        let lin = |i, o| LinearConfig::new(i, o).init(device);
        Bert {
            embeddings: Embeddings {
                word_embeddings: EmbeddingConfig::new(self.vocab_size, h).init(device),
                position_embeddings: EmbeddingConfig::new(self.max_position_embeddings, h)
                    .init(device),
                token_type_embeddings: EmbeddingConfig::new(self.type_vocab_size, h).init(device),
                layer_norm: ln(),
            },
            encoder: Encoder {
                layer: (0..self.num_hidden_layers)
                    .map(|_| Layer {
                        attention: Attention {
                            self_: SelfAttention {
                                query: lin(h, h),
                                key: lin(h, h),
                                value: lin(h, h),
                            },
                            output: DenseNorm {
                                dense: lin(h, h),
                                layer_norm: ln(),
                            },
                        },
                        intermediate: Intermediate {
                            dense: lin(h, self.intermediate_size),
                        },
                        output: DenseNorm {
                            dense: lin(self.intermediate_size, h),
                            layer_norm: ln(),
                        },
                    })
                    .collect(),
            },
            num_heads: self.num_attention_heads,
        }
    }
}

#[derive(Module, Debug)]
pub struct Embeddings {
    pub word_embeddings: Embedding,
    pub position_embeddings: Embedding,
    pub token_type_embeddings: Embedding,
    pub layer_norm: LayerNorm,
}

#[derive(Module, Debug)]
pub struct SelfAttention {
    pub query: Linear,
    pub key: Linear,
    pub value: Linear,
}

/// `dense` then residual add then `LayerNorm` (BERT's `*Output` blocks).
#[derive(Module, Debug)]
pub struct DenseNorm {
    pub dense: Linear,
    pub layer_norm: LayerNorm,
}

impl DenseNorm {
    fn forward(&self, x: Tensor<3>, residual: Tensor<3>) -> Tensor<3> {
        self.layer_norm.forward(self.dense.forward(x) + residual)
    }
}

#[derive(Module, Debug)]
pub struct Attention {
    pub self_: SelfAttention,
    pub output: DenseNorm,
}

#[derive(Module, Debug)]
pub struct Intermediate {
    pub dense: Linear,
}

#[derive(Module, Debug)]
pub struct Layer {
    pub attention: Attention,
    pub intermediate: Intermediate,
    pub output: DenseNorm,
}

#[derive(Module, Debug)]
pub struct Encoder {
    pub layer: Vec<Layer>,
}

/// The encoder: token ids in, one hidden state per token out.
#[derive(Module, Debug)]
pub struct Bert {
    /// Word + position + token-type embeddings and their `LayerNorm` (checkpoint `embeddings.*`).
    pub embeddings: Embeddings,
    /// The transformer layers (checkpoint `encoder.layer.N.*`).
    pub encoder: Encoder,
    num_heads: usize,
}

impl Bert {
    /// `ids`: `[batch, seq]` token ids; `mask`: `[batch, seq]`, 1.0 for real tokens, 0.0 for
    /// padding. Returns hidden states `[batch, seq, hidden]`.
    pub fn forward(&self, ids: Tensor<2, Int>, mask: Tensor<2>) -> Tensor<3> {
        let [batch, seq] = ids.dims();
        let device = ids.device();
        let emb = &self.embeddings;
        let positions = Tensor::<1, Int>::arange(0..seq as i64, &device).reshape([1, seq]);
        let token_type = Tensor::<2, Int>::zeros([1, seq], &device);
        let x = emb.word_embeddings.forward(ids)
            + emb.position_embeddings.forward(positions)
            + emb.token_type_embeddings.forward(token_type);
        let mut x = emb.layer_norm.forward(x);

        // Additive attention bias: 0 for real keys, a large negative number for padding.
        let bias = (mask - 1.0).mul_scalar(1e9).reshape([batch, 1, 1, seq]);
        for layer in &self.encoder.layer {
            x = self.layer_forward(layer, x, bias.clone());
        }
        x
    }

    fn layer_forward(&self, layer: &Layer, x: Tensor<3>, bias: Tensor<4>) -> Tensor<3> {
        let [batch, seq, hidden] = x.dims();
        let heads = self.num_heads;
        let head_dim = hidden / heads;
        let att = &layer.attention.self_;
        let split = |t: Tensor<3>| t.reshape([batch, seq, heads, head_dim]).swap_dims(1, 2);
        let q = split(att.query.forward(x.clone())).mul_scalar(1.0 / (head_dim as f64).sqrt());
        let k = split(att.key.forward(x.clone()));
        let v = split(att.value.forward(x.clone()));
        let scores = q.matmul(k.swap_dims(2, 3)) + bias;
        let ctx = softmax(scores, 3)
            .matmul(v)
            .swap_dims(1, 2)
            .reshape([batch, seq, hidden]);
        let a = layer.attention.output.forward(ctx, x);
        let h = gelu(layer.intermediate.dense.forward(a.clone()));
        layer.output.forward(h, a)
    }
}
