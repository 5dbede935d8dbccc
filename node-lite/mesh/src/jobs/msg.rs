//! Peer-to-peer job messages: a versioned postcard enum, sent sealed (see [`crate::seal`]) over
//! the one data channel of a member pair. Distinct from the relay's signaling frames.
//!
//! Wire: `version(1) ‖ postcard(PeerMsg)`, at most [`MAX_MSG_LEN`] bytes; decoding checks the
//! version first, the length before parsing, and every field's limit after.

use serde::{Deserialize, Serialize};
use shoal_proto::envelope::{Envelope, EnvelopeError};

/// Version byte of peer messages.
pub const PEER_PROTO_VERSION: u8 = 1;
/// Largest encoded message (a shard of 1,024 × 384-dim f32 vectors is 1.5 MiB).
pub const MAX_MSG_LEN: usize = 8 * 1024 * 1024;
/// The envelope of peer messages: [`PEER_PROTO_VERSION`], at most [`MAX_MSG_LEN`] bytes.
pub const ENVELOPE: Envelope = Envelope::new(PEER_PROTO_VERSION, MAX_MSG_LEN);
/// Most texts in one shard.
pub const MAX_TEXTS_PER_SHARD: usize = 1024;
/// Longest text in bytes.
pub const MAX_TEXT_LEN: usize = 16 * 1024;
/// Largest vector dimension accepted.
pub const MAX_DIM: usize = 4096;
/// Longest free-text field (reasons, names).
pub const MAX_LABEL_LEN: usize = 256;
/// Most chat models one member advertises.
pub const MAX_CHAT_MODELS: usize = 8;
/// Longest prompt (plus answer prefix) of a generation request, in tokens.
pub const MAX_GEN_TOKENS: usize = 32 * 1024;
/// Most tokens in one [`PeerMsg::GenTokens`].
pub const MAX_TOKENS_PER_MSG: usize = 4096;
/// Longest sampling settings (JSON) of a generation request.
pub const MAX_SAMPLING_LEN: usize = 1024;

/// `reason` cut to at most [`MAX_LABEL_LEN`] bytes on a character boundary.
pub fn truncate_label(mut reason: String) -> String {
    let cut = (0..=MAX_LABEL_LEN.min(reason.len()))
        .rev()
        .find(|&i| reason.is_char_boundary(i))
        .unwrap_or(0);
    reason.truncate(cut);
    reason
}

/// A job id: 16 random bytes chosen by the requester.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

impl std::fmt::Debug for JobId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "JobId({})", hex::encode(&self.0[..4]))
    }
}

/// What a member tells the others about itself when a channel opens (peers panel).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Display name.
    pub name: String,
    /// "webgpu", "cpu", "native", …
    pub backend: String,
    /// Calibrated throughput, texts per second.
    pub texts_per_sec: f32,
    /// Chat models this member serves (at most [`MAX_CHAT_MODELS`]).
    pub chat: Vec<ChatModelCap>,
}

/// A chat model a member serves, and how fast (measured on that member).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ChatModelCap {
    /// The model's id: SHA-256 of its GGUF file (same file = same id wherever it came from; a
    /// chat manifest's `sha256`).
    pub model: [u8; 32],
    /// Prompt tokens per second.
    pub prefill_tok_s: f32,
    /// Generated tokens per second.
    pub decode_tok_s: f32,
}

/// Why a generation ended, on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GenFinish {
    /// An end-of-turn token (the last token sent) or a stop string.
    Stop,
    /// `max_tokens` or the context filled up.
    Length,
    /// The requester cancelled.
    Cancelled,
}

/// One message between two members.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum PeerMsg {
    /// `0` Capabilities, sent once per channel.
    Hello(Capabilities),
    /// `1` requester → worker: embed these texts.
    ShardRequest {
        /// Job.
        job: JobId,
        /// Shard index within the job.
        shard: u32,
        /// The texts, in order.
        texts: Vec<String>,
    },
    /// `2` worker → requester: the vectors, `count × dim` f32 little-endian, row-major.
    ShardResult {
        /// Job.
        job: JobId,
        /// Shard index.
        shard: u32,
        /// Vector dimension.
        dim: u32,
        /// `count × dim × 4` bytes.
        #[serde(with = "serde_bytes")]
        vectors: Vec<u8>,
    },
    /// `3` worker → requester: the shard failed (or the worker is busy).
    ShardError {
        /// Job.
        job: JobId,
        /// Shard index.
        shard: u32,
        /// Short reason (≤ [`MAX_LABEL_LEN`]).
        reason: String,
    },
    /// `4` requester → worker: stop one shard, or the whole job.
    Cancel {
        /// Job.
        job: JobId,
        /// A shard, or `None` for every shard of the job.
        shard: Option<u32>,
    },
    /// `5` requester → worker, before its first shard of a job: the secret that keys the
    /// receipt commitments of this job (so the public log cannot test guesses of the texts).
    ReceiptKey {
        /// Job.
        job: JobId,
        /// 32 random bytes, never published.
        key: [u8; 32],
    },
    /// `6` worker → requester, after a `ShardResult`: the worker's receipt signature over the
    /// body both sides can rebuild ([`shoal_tlog::receipt::ReceiptBody`]).
    ReceiptSig {
        /// Job.
        job: JobId,
        /// Shard.
        shard: u32,
        /// Unix ms the request arrived.
        started_ms: u64,
        /// Unix ms the result was sent.
        finished_ms: u64,
        /// Ed25519 signature of the worker.
        sig: shoal_tlog::receipt::Sig,
    },
    /// `7` requester → worker: continue `prompt ‖ prefix` with at most `max_tokens − |prefix|`
    /// tokens. `attempt` numbers the requests of one job (a failover or a regeneration sends
    /// the answer so far as `prefix` under a new attempt).
    GenRequest {
        /// Job.
        job: JobId,
        /// Attempt within the job.
        attempt: u32,
        /// The chat model ([`ChatModelCap::model`]).
        model: [u8; 32],
        /// The templated prompt's token ids.
        prompt: Vec<u32>,
        /// Answer tokens already generated (by others): generation continues after them.
        prefix: Vec<u32>,
        /// Most answer tokens in all, prefix included.
        max_tokens: u32,
        /// Sampling settings as JSON (the chat engine's `Sampling`; ≤ [`MAX_SAMPLING_LEN`]).
        sampling: String,
    },
    /// `8` worker → requester: answer tokens `start..start + tokens.len()` (absolute positions
    /// in the answer, prefix included), in order, no gaps.
    GenTokens {
        /// Job.
        job: JobId,
        /// Attempt.
        attempt: u32,
        /// Position of the first token.
        start: u32,
        /// Token ids.
        tokens: Vec<u32>,
    },
    /// `9` worker → requester: the attempt ended after `end` answer tokens (its receipt
    /// signature follows as [`PeerMsg::ReceiptSig`] with `shard = attempt`).
    GenDone {
        /// Job.
        job: JobId,
        /// Attempt.
        attempt: u32,
        /// Answer length at the end (prefix included).
        end: u32,
        /// Why it ended.
        finish: GenFinish,
    },
    /// `10` worker → requester: the attempt failed (or the worker is busy, or lacks the model).
    GenError {
        /// Job.
        job: JobId,
        /// Attempt.
        attempt: u32,
        /// Short reason (≤ [`MAX_LABEL_LEN`]).
        reason: String,
    },
}

/// Why a peer message was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum MsgError {
    /// Empty input.
    #[error("empty peer message")]
    Empty,
    /// Unknown version.
    #[error("unsupported peer message version {got} (this build speaks {PEER_PROTO_VERSION})")]
    UnsupportedVersion {
        /// Version byte received.
        got: u8,
    },
    /// Over [`MAX_MSG_LEN`].
    #[error("peer message of {0} bytes over the limit")]
    TooLong(usize),
    /// Not a valid postcard `PeerMsg`.
    #[error("malformed peer message: {0}")]
    Malformed(String),
    /// A field over its limit.
    #[error("peer message field over its limit: {0}")]
    Limit(&'static str),
}

impl From<EnvelopeError> for MsgError {
    fn from(e: EnvelopeError) -> Self {
        match e {
            EnvelopeError::Empty => MsgError::Empty,
            EnvelopeError::UnsupportedVersion { got, .. } => MsgError::UnsupportedVersion { got },
            EnvelopeError::TooLarge { len, .. } => MsgError::TooLong(len),
            e => MsgError::Malformed(e.to_string()),
        }
    }
}

fn limit(ok: bool, what: &'static str) -> Result<(), MsgError> {
    if ok {
        Ok(())
    } else {
        Err(MsgError::Limit(what))
    }
}

impl PeerMsg {
    /// Check every field against its limit.
    pub fn validate(&self) -> Result<(), MsgError> {
        match self {
            PeerMsg::Hello(c) => {
                limit(c.name.len() <= MAX_LABEL_LEN, "name")?;
                limit(c.backend.len() <= MAX_LABEL_LEN, "backend")?;
                limit(
                    c.texts_per_sec.is_finite() && c.texts_per_sec >= 0.0,
                    "texts_per_sec",
                )?;
                limit(c.chat.len() <= MAX_CHAT_MODELS, "chat models")?;
                let rate = |r: f32| r.is_finite() && r >= 0.0;
                limit(
                    c.chat
                        .iter()
                        .all(|m| rate(m.prefill_tok_s) && rate(m.decode_tok_s)),
                    "chat rates",
                )
            }
            PeerMsg::ShardRequest { texts, .. } => {
                limit(texts.len() <= MAX_TEXTS_PER_SHARD, "texts per shard")?;
                limit(texts.iter().all(|t| t.len() <= MAX_TEXT_LEN), "text length")
            }
            PeerMsg::ShardResult { dim, vectors, .. } => {
                limit(*dim as usize <= MAX_DIM && *dim > 0, "dim")?;
                limit(
                    vectors.len().is_multiple_of(*dim as usize * 4),
                    "vector bytes",
                )?;
                limit(
                    vectors.len() / (*dim as usize * 4) <= MAX_TEXTS_PER_SHARD,
                    "vector count",
                )
            }
            PeerMsg::ShardError { reason, .. } => limit(reason.len() <= MAX_LABEL_LEN, "reason"),
            PeerMsg::Cancel { .. } | PeerMsg::ReceiptKey { .. } => Ok(()),
            PeerMsg::ReceiptSig {
                started_ms,
                finished_ms,
                ..
            } => limit(finished_ms >= started_ms, "receipt times"),
            PeerMsg::GenRequest {
                prompt,
                prefix,
                max_tokens,
                sampling,
                ..
            } => {
                limit(!prompt.is_empty(), "empty prompt")?;
                limit(
                    prompt.len() + prefix.len() <= MAX_GEN_TOKENS,
                    "prompt tokens",
                )?;
                limit(
                    (*max_tokens as usize) <= MAX_GEN_TOKENS
                        && prefix.len() <= *max_tokens as usize,
                    "max_tokens",
                )?;
                limit(sampling.len() <= MAX_SAMPLING_LEN, "sampling")
            }
            PeerMsg::GenTokens { start, tokens, .. } => {
                limit(tokens.len() <= MAX_TOKENS_PER_MSG, "tokens per message")?;
                limit(
                    (*start as usize).saturating_add(tokens.len()) <= MAX_GEN_TOKENS,
                    "token position",
                )
            }
            PeerMsg::GenDone { end, .. } => limit((*end as usize) <= MAX_GEN_TOKENS, "end"),
            PeerMsg::GenError { reason, .. } => limit(reason.len() <= MAX_LABEL_LEN, "reason"),
        }
    }

    /// `version ‖ postcard(self)` ([`ENVELOPE`]), after checking limits.
    pub fn encode(&self) -> Result<Vec<u8>, MsgError> {
        self.validate()?;
        Ok(ENVELOPE.encode(self)?)
    }

    /// Parse ([`ENVELOPE`]: length, version, the whole body) and validate.
    pub fn decode(bytes: &[u8]) -> Result<Self, MsgError> {
        let msg: PeerMsg = ENVELOPE.decode(bytes)?;
        msg.validate()?;
        Ok(msg)
    }
}

/// f32 values → little-endian bytes.
pub fn f32s_to_le(values: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 4);
    for v in values {
        out.extend_from_slice(&v.to_le_bytes());
    }
    out
}

/// Token ids → the bytes receipts commit to: u32 little-endian each.
pub fn tokens_to_le(tokens: &[u32]) -> Vec<u8> {
    tokens.iter().flat_map(|t| t.to_le_bytes()).collect()
}

/// The bytes a generation receipt's input commitment covers: `|prompt|` (u32 LE) ‖ prompt ‖
/// prefix, tokens u32 LE.
pub fn gen_input_bytes(prompt: &[u32], prefix: &[u32]) -> Vec<u8> {
    let mut b = Vec::with_capacity(4 * (1 + prompt.len() + prefix.len()));
    b.extend_from_slice(&(prompt.len() as u32).to_le_bytes());
    b.extend(tokens_to_le(prompt));
    b.extend(tokens_to_le(prefix));
    b
}

/// Little-endian bytes → f32 values (`None` if the length is not a multiple of 4).
pub fn le_to_f32s(bytes: &[u8]) -> Option<Vec<f32>> {
    if !bytes.len().is_multiple_of(4) {
        return None;
    }
    Some(
        bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
    )
}
