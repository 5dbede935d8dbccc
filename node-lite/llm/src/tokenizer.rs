//! The tokenizer a GGUF describes in its own metadata: byte-level BPE (`tokenizer.ggml.model =
//! gpt2`) from `tokenizer.ggml.tokens` and `merges`, the pre-tokenizer `tokenizer.ggml.pre`
//! names, control tokens matched as specials, and the BOS/EOS rules. Built with the
//! `tokenizers` crate.

use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::BPE;
use tokenizers::pre_tokenizers::PreTokenizerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, SplitDelimiterBehavior, Tokenizer as HfTokenizer};

use crate::LlmError;
use crate::gguf::{Gguf, Value};

/// GPT-2-style split used by Llama 3 (`llama-bpe`): numbers in runs of at most three digits.
const LLAMA3_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's split: single digits.
const QWEN2_PATTERN: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// Token type ids of `tokenizer.ggml.token_type`.
const TYPE_CONTROL: i64 = 3;
const TYPE_USER_DEFINED: i64 = 4;

/// A GGUF's tokenizer.
pub struct Tokenizer {
    /// Control and user-defined tokens parsed in text (chat templates).
    with_special: HfTokenizer,
    /// The same vocabulary, specials treated as text.
    plain: HfTokenizer,
    /// Token strings by id (for decoding single tokens and error messages).
    tokens: Vec<String>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// End-of-turn ids a chat stops at (EOS, `<|im_end|>`, `<|eot_id|>`, …).
    pub stop: Vec<u32>,
    /// Whether prompts start with BOS (`tokenizer.ggml.add_bos_token`).
    pub add_bos: bool,
    /// Name of the pre-tokenizer (`tokenizer.ggml.pre`).
    pub pre: String,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("vocab", &self.tokens.len())
            .field("pre", &self.pre)
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

fn strings(g: &Gguf, key: &str) -> Result<Vec<String>, LlmError> {
    let a = g
        .get(key)
        .and_then(Value::as_array)
        .ok_or_else(|| LlmError::BadModel(format!("metadata {key} missing")))?;
    a.iter()
        .map(|v| {
            v.as_str()
                .map(str::to_string)
                .ok_or_else(|| LlmError::BadModel(format!("{key} holds a non-string")))
        })
        .collect()
}

fn split(pattern: &str) -> Result<PreTokenizerWrapper, LlmError> {
    let s = Split::new(
        SplitPattern::Regex(pattern.into()),
        SplitDelimiterBehavior::Isolated,
        false,
    )
    .map_err(|e| LlmError::BadModel(format!("pre-tokenizer regex: {e}")))?;
    Ok(PreTokenizerWrapper::Split(s))
}

impl Tokenizer {
    /// Build from the GGUF's metadata. Refuses tokenizer models and pre-tokenizers it does not
    /// implement, by name.
    pub fn from_gguf(g: &Gguf) -> Result<Self, LlmError> {
        let model = g.get_str("tokenizer.ggml.model").unwrap_or("");
        if model != "gpt2" {
            return Err(LlmError::Unsupported(format!(
                "tokenizer model {model:?} (supported: gpt2 byte-level BPE; SentencePiece `llama` tokenizers are not yet)"
            )));
        }
        let pre = g
            .get_str("tokenizer.ggml.pre")
            .unwrap_or("default")
            .to_string();
        let tokens = strings(g, "tokenizer.ggml.tokens")?;
        let merges = strings(g, "tokenizer.ggml.merges")?;
        if tokens.is_empty() || tokens.len() > 1 << 20 {
            return Err(LlmError::BadModel(format!("{} tokens", tokens.len())));
        }
        let types: Vec<i64> = match g.get("tokenizer.ggml.token_type").and_then(Value::as_array) {
            Some(a) => a
                .iter()
                .map(|v| match v {
                    Value::I64(i) => *i,
                    Value::U64(u) => *u as i64,
                    _ => 1,
                })
                .collect(),
            None => vec![1; tokens.len()],
        };
        let vocab: tokenizers::models::bpe::Vocab = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        let merge_pairs: Vec<(String, String)> = merges
            .iter()
            .filter_map(|m| {
                m.split_once(' ')
                    .map(|(a, b)| (a.to_string(), b.to_string()))
            })
            .collect();
        let pre_tok = match pre.as_str() {
            "smollm" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                PreTokenizerWrapper::Digits(Digits::new(true)),
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true)),
            ])),
            "default" | "gpt2" | "gpt-2" => {
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, true))
            }
            "llama-bpe" | "llama3" | "llama-v3" => {
                PreTokenizerWrapper::Sequence(Sequence::new(vec![
                    split(LLAMA3_PATTERN)?,
                    PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
                ]))
            }
            "qwen2" | "qwen2.5" => PreTokenizerWrapper::Sequence(Sequence::new(vec![
                split(QWEN2_PATTERN)?,
                PreTokenizerWrapper::ByteLevel(ByteLevel::new(false, true, false)),
            ])),
            other => {
                return Err(LlmError::Unsupported(format!(
                    "pre-tokenizer {other:?} (supported: smollm, gpt2/default, llama-bpe, qwen2)"
                )));
            }
        };
        let build = |specials: bool| -> Result<HfTokenizer, LlmError> {
            let bpe = BPE::builder()
                .vocab_and_merges(vocab.clone(), merge_pairs.clone())
                .build()
                .map_err(|e| LlmError::BadModel(format!("BPE: {e}")))?;
            let mut t = HfTokenizer::new(bpe);
            t.with_pre_tokenizer(Some(pre_tok.clone()));
            t.with_decoder(Some(ByteLevelDecoder::default()));
            if specials {
                let added: Vec<AddedToken> = tokens
                    .iter()
                    .zip(&types)
                    .filter(|(_, ty)| **ty == TYPE_CONTROL || **ty == TYPE_USER_DEFINED)
                    .map(|(s, _)| AddedToken::from(s.clone(), true))
                    .collect();
                t.add_special_tokens(&added);
            }
            Ok(t)
        };
        let id = |k: &str| {
            g.get_u64(k)
                .and_then(|v| u32::try_from(v).ok())
                .filter(|&v| (v as usize) < tokens.len())
        };
        let bos = id("tokenizer.ggml.bos_token_id");
        let eos = id("tokenizer.ggml.eos_token_id");
        let mut stop: Vec<u32> = eos.into_iter().collect();
        if let Some(e) = id("tokenizer.ggml.eot_token_id") {
            stop.push(e);
        }
        for name in [
            "<|im_end|>",
            "<|eot_id|>",
            "<|end_of_text|>",
            "<|endoftext|>",
        ] {
            if let Some(&i) = vocab.get(name) {
                stop.push(i);
            }
        }
        stop.sort_unstable();
        stop.dedup();
        let add_bos = g
            .get("tokenizer.ggml.add_bos_token")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok(Tokenizer {
            with_special: build(true)?,
            plain: build(false)?,
            tokens,
            bos,
            eos,
            stop,
            add_bos,
            pre,
        })
    }

    /// Token ids of `text`; with `special`, control-token strings (`<|im_start|>`) become their
    /// tokens, as a rendered chat template needs. No BOS is added (see [`Self::add_bos`]).
    pub fn encode(&self, text: &str, special: bool) -> Result<Vec<u32>, LlmError> {
        let t = if special {
            &self.with_special
        } else {
            &self.plain
        };
        let e = t
            .encode(text, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))?;
        Ok(e.get_ids().to_vec())
    }

    /// Text of `ids` (specials included, as text).
    pub fn decode(&self, ids: &[u32]) -> Result<String, LlmError> {
        self.with_special
            .decode(ids, false)
            .map_err(|e| LlmError::Tokenizer(e.to_string()))
    }

    /// Whether `id` ends a turn ([`Tokenizer::stop`]).
    pub fn is_stop(&self, id: u32) -> bool {
        self.stop.contains(&id)
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.tokens.len()
    }

    /// The token string of `id` (byte-level symbols), if it exists.
    pub fn token(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }
}

/// Turns a stream of token ids into UTF-8 text pieces, holding back bytes of a character that
/// is split across tokens (byte-level BPE emits bytes, not characters).
#[derive(Debug, Default, Clone)]
pub struct TextStream {
    ids: Vec<u32>,
    emitted: usize,
}

impl TextStream {
    /// Add `id`; returns the newly complete text, if any.
    pub fn push(&mut self, tok: &Tokenizer, id: u32) -> Result<String, LlmError> {
        self.ids.push(id);
        let text = tok.decode(&self.ids)?;
        // A trailing U+FFFD means an incomplete UTF-8 sequence: wait for more tokens.
        if text.ends_with('\u{FFFD}') {
            return Ok(String::new());
        }
        let new = text.get(self.emitted..).unwrap_or("").to_string();
        self.emitted = text.len();
        Ok(new)
    }

    /// The ids fed so far.
    pub fn ids(&self) -> &[u32] {
        &self.ids
    }

    /// All text so far.
    pub fn text(&self, tok: &Tokenizer) -> Result<String, LlmError> {
        tok.decode(&self.ids)
    }
}
