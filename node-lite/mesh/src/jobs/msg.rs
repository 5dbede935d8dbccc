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
