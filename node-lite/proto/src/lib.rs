//! The Shoal wire protocol: **the** definition of the binary frames exchanged between nodes
//! (browser and native) and relays. App, node and relay all use these types.
//!
//! # Frame layout
//!
//! ```text
//! +---------+-----+------------------------------+
//! | version | tag | body (postcard, serde)       |
//! |  1 byte | 1 B | the rest, must be consumed   |
//! +---------+-----+------------------------------+
//! ```
//!
//! - `version` is [`PROTOCOL_VERSION`]; any other value is refused with
//!   [`DecodeError::UnsupportedVersion`].
//! - `tag` names the frame kind. Tags are grouped, and groups are **reserved** for work that
//!   builds on signaling, so old peers refuse them cleanly ([`DecodeError::ReservedTag`]) rather
//!   than mis-parsing them:
//!   - `0x01..=0x0F` handshake, `0x10..=0x1F` rooms, `0x20..=0x2F` payloads, `0x30..=0x3F` control;
//!   - `0x40..=0x5F` **anchoring**: receipts, inclusion promises and proofs, checkpoints;
//!   - `0x60..=0x7F` **federation**: relay-to-relay forwarding, cosignatures;
//!   - `0x80..=0xFF` unassigned.
//! - A whole frame is at most [`MAX_FRAME_LEN`] bytes (a relay may set a lower limit); an opaque
//!   payload at most [`MAX_PAYLOAD_LEN`].
//!
//! Decoding never panics on any input (property-tested: `decode_arbitrary` in `frames.rs`; `PROPTEST_CASES=1000000` for a long run).
//!
//! The crate also holds [`identity`] (Ed25519 keys and peer ids: libsodium natively with
//! feature `sodium`, ed25519-dalek otherwise; byte-identical), which every frame names.
//!
//! # Handshake
//!
//! ```text
//! node  -> relay  Hello     { peer, client_nonce }
//! relay -> node   Challenge { relay, nonce, relay_sig = Sign_relay(HELLO_CONTEXT ‖ client_nonce ‖ nonce ‖ peer) }
//! node  -> relay  Auth      { sig = Sign_peer(AUTH_CONTEXT ‖ relay ‖ nonce ‖ peer) }
//! relay -> node   Welcome   { limits }
//! ```
//! Nothing but `Hello`/`Auth` (and `Ping`/`Pong`) is accepted before `Welcome`.

#![warn(missing_docs)]
// `deny` rather than `forbid`: `identity::sodium` (libsodium FFI, feature `sodium`, native only)
// opts in with `#[allow(unsafe_code)]`.
#![deny(unsafe_code)]

use serde::{Deserialize, Serialize};

pub mod envelope;
pub mod identity;

use crate::identity::PeerId;

mod frames;
pub use frames::*;

/// The version byte this build speaks.
pub const PROTOCOL_VERSION: u8 = 1;
/// The embedding model every node runs (jobs, indexes and weight manifests name it).
pub const MODEL_NAME: &str = "all-MiniLM-L6-v2";
/// Its output dimension: the length of every embedding vector on the wire.
pub const EMBEDDING_DIM: usize = 384;
/// Hard upper bound on an encoded frame, in bytes (version + tag + body).
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Hard upper bound on an opaque payload inside `Send`/`Deliver`.
pub const MAX_PAYLOAD_LEN: usize = 60 * 1024;
/// Domain separation for the node's signature in the handshake.
pub const AUTH_CONTEXT: &[u8] = b"shoal/relay-auth/v1\0";
/// Domain separation for the relay's signature in the handshake.
pub const HELLO_CONTEXT: &[u8] = b"shoal/relay-hello/v1\0";

/// Bytes a node signs to authenticate to a relay.
pub fn auth_message(relay: &PeerId, nonce: &[u8; 32], peer: &PeerId) -> Vec<u8> {
    let mut m = Vec::with_capacity(AUTH_CONTEXT.len() + 96);
    m.extend_from_slice(AUTH_CONTEXT);
    m.extend_from_slice(relay.as_bytes());
    m.extend_from_slice(nonce);
    m.extend_from_slice(peer.as_bytes());
    m
}

/// Bytes a relay signs to prove its identity to a node.
pub fn hello_message(client_nonce: &[u8; 32], nonce: &[u8; 32], peer: &PeerId) -> Vec<u8> {
    let mut m = Vec::with_capacity(HELLO_CONTEXT.len() + 96);
    m.extend_from_slice(HELLO_CONTEXT);
    m.extend_from_slice(client_nonce);
    m.extend_from_slice(nonce);
    m.extend_from_slice(peer.as_bytes());
    m
}

/// An opaque 32-byte room id (`BLAKE2b(K, "shoal/room")`; the relay never learns `K`).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RoomId(pub [u8; 32]);

impl std::fmt::Debug for RoomId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomId({})", hex::encode(&self.0[..6]))
    }
}

/// Why a frame could not be decoded (or encoded).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Zero or one byte: no version and tag.
    #[error("frame too short ({0} bytes)")]
    TooShort(usize),
    /// The version byte is not one this build speaks.
    #[error("unsupported protocol version {got} (this build speaks {supported})")]
    UnsupportedVersion {
        /// The frame's first byte.
        got: u8,
        /// [`PROTOCOL_VERSION`] of this build.
        supported: u8,
    },
    /// Larger than the limit in force.
    #[error("frame of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Length of the whole frame in bytes.
        len: usize,
        /// The limit applied: the caller's, clamped to [`MAX_FRAME_LEN`].
        max: usize,
    },
    /// A tag from a reserved group (anchoring, federation) this build does not implement.
    #[error("frame tag {0:#04x} is reserved (anchoring/federation) and not supported here")]
    ReservedTag(u8),
    /// A tag nobody assigned.
    #[error("unknown frame tag {0:#04x}")]
    UnknownTag(u8),
    /// The body does not parse as the tag's type.
    #[error("malformed {kind} frame: {reason}")]
    Malformed {
        /// Frame kind named by the tag, as [`Frame::kind`] spells it (`hello`, `send`, …).
        kind: &'static str,
        /// The postcard decoder's error message.
        reason: String,
    },
    /// The body parsed but bytes were left over.
    #[error("malformed {kind} frame: {extra} trailing bytes")]
    Trailing {
        /// Frame kind named by the tag, as [`Frame::kind`] spells it.
        kind: &'static str,
        /// Number of unconsumed bytes after the body.
        extra: usize,
    },
    /// A payload longer than [`MAX_PAYLOAD_LEN`], or a receipt/promise batch longer than
    /// [`MAX_SUBMIT_RECEIPTS`].
    #[error("payload of {len} bytes exceeds the limit of {max}")]
    PayloadTooLarge {
        /// Payload bytes, or entries in the batch.
        len: usize,
        /// [`MAX_PAYLOAD_LEN`] or [`MAX_SUBMIT_RECEIPTS`].
        max: usize,
    },
    /// Serialisation failed (encoding side).
    #[error("encode failed: {0}")]
    Encode(String),
}

/// A signed-in relay's limits, told to the node in `Welcome`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionLimits {
    /// Largest frame the relay accepts from this session.
    pub max_frame: u32,
    /// Largest opaque payload.
    pub max_payload: u32,
    /// Rooms one session may be in.
    pub max_rooms: u16,
    /// Members one room may hold.
    pub max_members: u32,
    /// Frames per second (sustained).
    pub msgs_per_sec: u32,
    /// Bytes per second (sustained).
    pub bytes_per_sec: u32,
    /// The relay closes a session it has heard nothing from for this long.
    pub idle_timeout_ms: u32,
}

/// Error codes carried in [`Frame::Error`]. Stable numbers: never reuse one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// Frame version not supported (`1`).
    UnsupportedVersion,
    /// Frame could not be decoded (`2`).
    Malformed,
    /// Frame or payload larger than the limit (`3`).
    TooLarge,
    /// A frame not allowed in this state, e.g. `Join` before `Welcome` (`4`).
    Unexpected,
    /// Handshake signature did not verify (`5`).
    AuthFailed,
    /// No successful handshake in time (`6`).
    HandshakeTimeout,
    /// Messages/s or bytes/s token bucket empty: frame dropped (`7`).
    RateLimited,
    /// Session is in the maximum number of rooms (`8`).
    TooManyRooms,
    /// Room has the maximum number of members (`9`).
    RoomFull,
    /// The session is not in that room (`10`).
    NotInRoom,
    /// The addressed member is not in that room (`11`).
    NoSuchMember,
    /// Too many sessions from this address (`12`).
    TooManySessionsFromAddress,
    /// The relay is at its session limit (`13`).
    RelayFull,
    /// Nothing heard from the session in time (`14`).
    IdleTimeout,
    /// The session did not read fast enough; its queue overflowed (`15`).
    SlowReader,
    /// The relay is shutting down; reconnect elsewhere or later (`16`).
    ShuttingDown,
    /// Same identity joined the room from another session (`17`).
    Replaced,
    /// Too many protocol violations; closing (`18`).
    TooManyErrors,
    /// A reserved (anchoring/federation) feature this relay does not offer (`19`).
    Unsupported,
    /// Internal relay error (`20`).
    Internal,
    /// A code this build does not know (forward compatibility).
    Other(u16),
}

impl ErrorCode {
    /// The stable numeric code.
    pub fn as_u16(self) -> u16 {
        use ErrorCode::*;
        match self {
            UnsupportedVersion => 1,
            Malformed => 2,
            TooLarge => 3,
            Unexpected => 4,
            AuthFailed => 5,
            HandshakeTimeout => 6,
            RateLimited => 7,
            TooManyRooms => 8,
            RoomFull => 9,
            NotInRoom => 10,
            NoSuchMember => 11,
            TooManySessionsFromAddress => 12,
            RelayFull => 13,
            IdleTimeout => 14,
            SlowReader => 15,
            ShuttingDown => 16,
            Replaced => 17,
            TooManyErrors => 18,
            Unsupported => 19,
            Internal => 20,
            Other(n) => n,
        }
    }

    /// Decode a numeric code (unknown numbers become [`ErrorCode::Other`]).
    pub fn from_u16(n: u16) -> Self {
        use ErrorCode::*;
        match n {
            1 => UnsupportedVersion,
            2 => Malformed,
            3 => TooLarge,
            4 => Unexpected,
            5 => AuthFailed,
            6 => HandshakeTimeout,
            7 => RateLimited,
            8 => TooManyRooms,
            9 => RoomFull,
            10 => NotInRoom,
            11 => NoSuchMember,
            12 => TooManySessionsFromAddress,
            13 => RelayFull,
            14 => IdleTimeout,
            15 => SlowReader,
            16 => ShuttingDown,
            17 => Replaced,
            18 => TooManyErrors,
            19 => Unsupported,
            20 => Internal,
            n => Other(n),
        }
    }

    /// Whether the relay closes the session after sending this code.
    pub fn is_fatal(self) -> bool {
        use ErrorCode::*;
        matches!(
            self,
            UnsupportedVersion
                | AuthFailed
                | HandshakeTimeout
                | TooManySessionsFromAddress
                | RelayFull
                | IdleTimeout
                | SlowReader
                | ShuttingDown
                | TooManyErrors
                | Internal
        )
    }

    /// A short stable name (metrics labels, close reasons).
    pub fn name(self) -> &'static str {
        use ErrorCode::*;
        match self {
            UnsupportedVersion => "unsupported_version",
            Malformed => "malformed",
            TooLarge => "too_large",
            Unexpected => "unexpected",
            AuthFailed => "auth_failed",
            HandshakeTimeout => "handshake_timeout",
            RateLimited => "rate_limited",
            TooManyRooms => "too_many_rooms",
            RoomFull => "room_full",
            NotInRoom => "not_in_room",
            NoSuchMember => "no_such_member",
            TooManySessionsFromAddress => "too_many_sessions_from_address",
            RelayFull => "relay_full",
            IdleTimeout => "idle_timeout",
            SlowReader => "slow_reader",
            ShuttingDown => "shutting_down",
            Replaced => "replaced",
            TooManyErrors => "too_many_errors",
            Unsupported => "unsupported",
            Internal => "internal",
            Other(_) => "other",
        }
    }
}

impl Serialize for ErrorCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.as_u16())
    }
}

impl<'de> Deserialize<'de> for ErrorCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        u16::deserialize(d).map(ErrorCode::from_u16)
    }
}

impl From<&DecodeError> for ErrorCode {
    fn from(e: &DecodeError) -> Self {
        match e {
            DecodeError::UnsupportedVersion { .. } => ErrorCode::UnsupportedVersion,
            DecodeError::TooLarge { .. } | DecodeError::PayloadTooLarge { .. } => {
                ErrorCode::TooLarge
            }
            DecodeError::ReservedTag(_) => ErrorCode::Unsupported,
            _ => ErrorCode::Malformed,
        }
    }
}
