//! The frame types and their encoding.

use serde::de::DeserializeOwned;

use crate::envelope::EnvelopeError;
use serde::{Deserialize, Serialize};

use super::{
    DecodeError, ErrorCode, MAX_FRAME_LEN, MAX_PAYLOAD_LEN, PROTOCOL_VERSION, RoomId, SessionLimits,
};
use crate::identity::{PeerId, Signature};

/// Node → relay: start of the handshake.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// The identity the node will prove.
    pub peer: PeerId,
    /// Fresh randomness the relay signs, so the node can pin the relay's key.
    pub client_nonce: [u8; 32],
}

/// Relay → node: the challenge.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Challenge {
    /// The relay's public key.
    pub relay: PeerId,
    /// Fresh randomness the node signs.
    pub nonce: [u8; 32],
    /// `Sign_relay(hello_message(client_nonce, nonce, peer))`.
    pub relay_sig: Signature,
}

/// Node → relay: the signature over [`super::auth_message`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Auth {
    /// `Sign_peer(auth_message(relay, nonce, peer))`.
    pub sig: Signature,
}

/// Relay → node: authenticated; these are the limits.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// Limits in force for this session.
    pub limits: SessionLimits,
}

/// A room reference (join, leave, list).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomRef {
    /// The room.
    pub room: RoomId,
}

/// Relay → node: the members of a room (answer to `Join` and `ListMembers`), self included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    /// The room.
    pub room: RoomId,
    /// Its members' peer ids.
    pub members: Vec<PeerId>,
}

/// Relay → node: someone joined or left a room.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberEvent {
    /// The room.
    pub room: RoomId,
    /// Who.
    pub peer: PeerId,
}

/// Node → relay: forward an opaque payload to one member of a room.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SendTo {
    /// A room both are in.
    pub room: RoomId,
    /// The addressee.
    pub to: PeerId,
    /// Sealed bytes the relay cannot read.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// Relay → node: a payload from a member.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deliver {
    /// The room it was sent in.
    pub room: RoomId,
    /// The authenticated sender.
    pub from: PeerId,
    /// Opaque bytes.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

// Payloads never appear in Debug output (logs must not contain them).
impl std::fmt::Debug for SendTo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SendTo {{ room: {:?}, to: {:?}, payload: <{} bytes> }}",
            self.room,
            self.to,
            self.payload.len()
        )
    }
}

impl std::fmt::Debug for Deliver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Deliver {{ room: {:?}, from: {:?}, payload: <{} bytes> }}",
            self.room,
            self.from,
            self.payload.len()
        )
    }
}

/// Keep-alive, either direction. The receiver answers `Pong` with the same number.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ping {
    /// Opaque number echoed back.
    pub nonce: u64,
}

/// An error report. Codes in [`ErrorCode::is_fatal`] are followed by a close.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// What went wrong.
    pub code: ErrorCode,
    /// The room concerned, if any.
    pub room: Option<RoomId>,
    /// Human-readable detail (never contains payload bytes).
    pub detail: String,
}

/// Most receipts in one [`SubmitReceipts`] (the relay's HTTP batch limit too; in practice the
/// frame size limit binds first: ~200 receipts of 305 bytes fit in 64 KiB).
pub const MAX_SUBMIT_RECEIPTS: usize = 1024;

/// `0x40` node → relay: append receipts (each an encoded `node_lite::receipt::Receipt`) to the
/// relay's transparency log. Answered by [`Promises`] or [`AnchorError`] with the same `id`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmitReceipts {
    /// Chosen by the node; echoed in the answer.
    pub id: u32,
    /// Encoded receipts (public log entries: no plaintext, no vectors).
    pub receipts: Vec<serde_bytes::ByteBuf>,
}

/// "Durably committed at `index`": redeemed later by an inclusion proof against a checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InclusionPromise {
    /// Leaf index in the log.
    pub index: u64,
    /// RFC 9162 leaf hash `SHA-256(0x00 || receipt)`.
    pub leaf_hash: [u8; 32],
}

/// `0x41` relay → node: every receipt of a [`SubmitReceipts`] is committed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Promises {
    /// The request's id.
    pub id: u32,
    /// The log's checkpoint origin.
    pub origin: String,
    /// One per submitted receipt, in order.
    pub promises: Vec<InclusionPromise>,
}

/// `0x42` node → relay: ask for the latest checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetCheckpoint {
    /// Chosen by the node; echoed in the answer.
    pub id: u32,
}

/// `0x43` relay → node: the latest signed checkpoint (C2SP signed note text, with the witness
/// cosignatures the relay collected), exactly as `GET /log/checkpoint` serves it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointNote {
    /// The request's id.
    pub id: u32,
    /// Signed note text.
    pub note: String,
}

/// `0x44` relay → node: an anchoring request failed (the session stays open).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnchorError {
    /// The request's id.
    pub id: u32,
    /// `Malformed` (bad receipt or signature), `TooLarge` (batch), `RateLimited` (too many
    /// requests in flight), `Unsupported` (no log here), `Internal` (storage).
    pub code: ErrorCode,
    /// Human-readable detail, e.g. `receipt 3: bad worker signature`.
    pub detail: String,
}

/// Every frame of the protocol.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Frame {
    /// `0x01` node → relay.
    Hello(Hello),
    /// `0x02` relay → node.
    Challenge(Challenge),
    /// `0x03` node → relay.
    Auth(Auth),
    /// `0x04` relay → node.
    Welcome(Welcome),
    /// `0x10` node → relay: join a room; answered by `Members`.
    Join(RoomRef),
    /// `0x11` node → relay: leave a room.
    Leave(RoomRef),
    /// `0x12` node → relay: ask for a room's members.
    ListMembers(RoomRef),
    /// `0x13` relay → node.
    Members(Members),
    /// `0x14` relay → node.
    MemberJoined(MemberEvent),
    /// `0x15` relay → node.
    MemberLeft(MemberEvent),
    /// `0x20` node → relay.
    Send(SendTo),
    /// `0x21` relay → node.
    Deliver(Deliver),
    /// `0x30` either way.
    Ping(Ping),
    /// `0x31` either way.
    Pong(Ping),
    /// `0x3F` relay → node (a node may send it too; relays ignore it).
    Error(ErrorFrame),
    /// `0x40` node → relay.
    SubmitReceipts(SubmitReceipts),
    /// `0x41` relay → node.
    Promises(Promises),
    /// `0x42` node → relay.
    GetCheckpoint(GetCheckpoint),
    /// `0x43` relay → node.
    CheckpointNote(CheckpointNote),
    /// `0x44` relay → node.
    AnchorError(AnchorError),
}

/// Frame tags (the second byte).
pub mod tag {
    /// [`Frame::Hello`], node → relay: opens the handshake.
    pub const HELLO: u8 = 0x01;
    /// [`Frame::Challenge`], relay → node: the relay's nonce and signature.
    pub const CHALLENGE: u8 = 0x02;
    /// [`Frame::Auth`], node → relay: the node's signature over the challenge.
    pub const AUTH: u8 = 0x03;
    /// [`Frame::Welcome`], relay → node: handshake done, session limits.
    pub const WELCOME: u8 = 0x04;
    /// [`Frame::Join`], node → relay: join a room.
    pub const JOIN: u8 = 0x10;
    /// [`Frame::Leave`], node → relay: leave a room.
    pub const LEAVE: u8 = 0x11;
    /// [`Frame::ListMembers`], node → relay: ask for a room's members.
    pub const LIST_MEMBERS: u8 = 0x12;
    /// [`Frame::Members`], relay → node: a room's member list.
    pub const MEMBERS: u8 = 0x13;
    /// [`Frame::MemberJoined`], relay → node: a peer joined a room.
    pub const MEMBER_JOINED: u8 = 0x14;
    /// [`Frame::MemberLeft`], relay → node: a peer left a room.
    pub const MEMBER_LEFT: u8 = 0x15;
    /// [`Frame::Send`], node → relay: an opaque payload for one room member.
    pub const SEND: u8 = 0x20;
    /// [`Frame::Deliver`], relay → node: a payload from a room member.
    pub const DELIVER: u8 = 0x21;
    /// [`Frame::Ping`], either way: keep-alive.
    pub const PING: u8 = 0x30;
    /// [`Frame::Pong`], either way: the answer to a ping, same nonce.
    pub const PONG: u8 = 0x31;
    /// [`Frame::Error`], mostly relay → node: an error report (last of the control group).
    pub const ERROR: u8 = 0x3F;
    /// [`Frame::SubmitReceipts`], node → relay: receipts to append to the log.
    pub const SUBMIT_RECEIPTS: u8 = 0x40;
    /// [`Frame::Promises`], relay → node: inclusion promises for a submission.
    pub const PROMISES: u8 = 0x41;
    /// [`Frame::GetCheckpoint`], node → relay: ask for the latest checkpoint.
    pub const GET_CHECKPOINT: u8 = 0x42;
    /// [`Frame::CheckpointNote`], relay → node: the signed checkpoint note.
    pub const CHECKPOINT_NOTE: u8 = 0x43;
    /// [`Frame::AnchorError`], relay → node: an anchoring request failed.
    pub const ANCHOR_ERROR: u8 = 0x44;
    /// Anchoring: receipts, inclusion promises/proofs, checkpoints (`0x40..=0x44` assigned,
    /// the rest reserved).
    pub const ANCHORING: std::ops::RangeInclusive<u8> = 0x40..=0x5F;
    /// Reserved for federation: relay-to-relay forwarding, cosignatures.
    pub const FEDERATION: std::ops::RangeInclusive<u8> = 0x60..=0x7F;
}

fn body<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, DecodeError> {
    crate::envelope::take_all(bytes).map_err(|e| match e {
        EnvelopeError::Trailing(extra) => DecodeError::Trailing { kind, extra },
        e => DecodeError::Malformed {
            kind,
            reason: e.to_string(),
        },
    })
}

fn check_payload(len: usize) -> Result<(), DecodeError> {
    if len > MAX_PAYLOAD_LEN {
        Err(DecodeError::PayloadTooLarge {
            len,
            max: MAX_PAYLOAD_LEN,
        })
    } else {
        Ok(())
    }
}

fn check_batch(len: usize) -> Result<(), DecodeError> {
    if len > MAX_SUBMIT_RECEIPTS {
        Err(DecodeError::PayloadTooLarge {
            len,
            max: MAX_SUBMIT_RECEIPTS,
        })
    } else {
        Ok(())
    }
}

impl Frame {
    /// The tag byte of this frame.
    pub fn tag(&self) -> u8 {
        match self {
            Frame::Hello(_) => tag::HELLO,
            Frame::Challenge(_) => tag::CHALLENGE,
            Frame::Auth(_) => tag::AUTH,
            Frame::Welcome(_) => tag::WELCOME,
            Frame::Join(_) => tag::JOIN,
            Frame::Leave(_) => tag::LEAVE,
            Frame::ListMembers(_) => tag::LIST_MEMBERS,
            Frame::Members(_) => tag::MEMBERS,
            Frame::MemberJoined(_) => tag::MEMBER_JOINED,
            Frame::MemberLeft(_) => tag::MEMBER_LEFT,
            Frame::Send(_) => tag::SEND,
            Frame::Deliver(_) => tag::DELIVER,
            Frame::Ping(_) => tag::PING,
            Frame::Pong(_) => tag::PONG,
            Frame::Error(_) => tag::ERROR,
            Frame::SubmitReceipts(_) => tag::SUBMIT_RECEIPTS,
            Frame::Promises(_) => tag::PROMISES,
            Frame::GetCheckpoint(_) => tag::GET_CHECKPOINT,
            Frame::CheckpointNote(_) => tag::CHECKPOINT_NOTE,
            Frame::AnchorError(_) => tag::ANCHOR_ERROR,
        }
    }

    /// A stable lowercase name (metrics, logs).
    pub fn kind(&self) -> &'static str {
        match self {
            Frame::Hello(_) => "hello",
            Frame::Challenge(_) => "challenge",
            Frame::Auth(_) => "auth",
            Frame::Welcome(_) => "welcome",
            Frame::Join(_) => "join",
            Frame::Leave(_) => "leave",
            Frame::ListMembers(_) => "list_members",
            Frame::Members(_) => "members",
            Frame::MemberJoined(_) => "member_joined",
            Frame::MemberLeft(_) => "member_left",
            Frame::Send(_) => "send",
            Frame::Deliver(_) => "deliver",
            Frame::Ping(_) => "ping",
            Frame::Pong(_) => "pong",
            Frame::Error(_) => "error",
            Frame::SubmitReceipts(_) => "submit_receipts",
            Frame::Promises(_) => "promises",
            Frame::GetCheckpoint(_) => "get_checkpoint",
            Frame::CheckpointNote(_) => "checkpoint_note",
            Frame::AnchorError(_) => "anchor_error",
        }
    }

    /// Encode as `version ‖ tag ‖ postcard(body)`; fails if the result exceeds [`MAX_FRAME_LEN`]
    /// or a payload exceeds [`MAX_PAYLOAD_LEN`].
    pub fn encode(&self) -> Result<Vec<u8>, DecodeError> {
        let out = vec![PROTOCOL_VERSION, self.tag()];
        let r = match self {
            Frame::Hello(b) => postcard::to_extend(b, out),
            Frame::Challenge(b) => postcard::to_extend(b, out),
            Frame::Auth(b) => postcard::to_extend(b, out),
            Frame::Welcome(b) => postcard::to_extend(b, out),
            Frame::Join(b) | Frame::Leave(b) | Frame::ListMembers(b) => postcard::to_extend(b, out),
            Frame::Members(b) => postcard::to_extend(b, out),
            Frame::MemberJoined(b) | Frame::MemberLeft(b) => postcard::to_extend(b, out),
            Frame::Send(b) => {
                check_payload(b.payload.len())?;
                postcard::to_extend(b, out)
            }
            Frame::Deliver(b) => {
                check_payload(b.payload.len())?;
                postcard::to_extend(b, out)
            }
            Frame::Ping(b) | Frame::Pong(b) => postcard::to_extend(b, out),
            Frame::Error(b) => postcard::to_extend(b, out),
            Frame::SubmitReceipts(b) => {
                check_batch(b.receipts.len())?;
                postcard::to_extend(b, out)
            }
            Frame::Promises(b) => {
                check_batch(b.promises.len())?;
                postcard::to_extend(b, out)
            }
            Frame::GetCheckpoint(b) => postcard::to_extend(b, out),
            Frame::CheckpointNote(b) => postcard::to_extend(b, out),
            Frame::AnchorError(b) => postcard::to_extend(b, out),
        };
        let v = r.map_err(|e| DecodeError::Encode(e.to_string()))?;
        if v.len() > MAX_FRAME_LEN {
            return Err(DecodeError::TooLarge {
                len: v.len(),
                max: MAX_FRAME_LEN,
            });
        }
        Ok(v)
    }

    /// Decode with the protocol's hard limit [`MAX_FRAME_LEN`].
    pub fn decode(bytes: &[u8]) -> Result<Frame, DecodeError> {
        Self::decode_with_limit(bytes, MAX_FRAME_LEN)
    }

    /// Decode, refusing frames longer than `max_len` (clamped to [`MAX_FRAME_LEN`]).
    /// Never panics, whatever the bytes.
    pub fn decode_with_limit(bytes: &[u8], max_len: usize) -> Result<Frame, DecodeError> {
        let max = max_len.min(MAX_FRAME_LEN);
        if bytes.len() > max {
            return Err(DecodeError::TooLarge {
                len: bytes.len(),
                max,
            });
        }
        let (&version, rest) = bytes.split_first().ok_or(DecodeError::TooShort(0))?;
        if version != PROTOCOL_VERSION {
            return Err(DecodeError::UnsupportedVersion {
                got: version,
                supported: PROTOCOL_VERSION,
            });
        }
        let (&t, b) = rest.split_first().ok_or(DecodeError::TooShort(1))?;
        let f = match t {
            tag::HELLO => Frame::Hello(body("hello", b)?),
            tag::CHALLENGE => Frame::Challenge(body("challenge", b)?),
            tag::AUTH => Frame::Auth(body("auth", b)?),
            tag::WELCOME => Frame::Welcome(body("welcome", b)?),
            tag::JOIN => Frame::Join(body("join", b)?),
            tag::LEAVE => Frame::Leave(body("leave", b)?),
            tag::LIST_MEMBERS => Frame::ListMembers(body("list_members", b)?),
            tag::MEMBERS => Frame::Members(body("members", b)?),
            tag::MEMBER_JOINED => Frame::MemberJoined(body("member_joined", b)?),
            tag::MEMBER_LEFT => Frame::MemberLeft(body("member_left", b)?),
            tag::SEND => {
                let s: SendTo = body("send", b)?;
                check_payload(s.payload.len())?;
                Frame::Send(s)
            }
            tag::DELIVER => {
                let d: Deliver = body("deliver", b)?;
                check_payload(d.payload.len())?;
                Frame::Deliver(d)
            }
            tag::PING => Frame::Ping(body("ping", b)?),
            tag::PONG => Frame::Pong(body("pong", b)?),
            tag::ERROR => Frame::Error(body("error", b)?),
            tag::SUBMIT_RECEIPTS => {
                let s: SubmitReceipts = body("submit_receipts", b)?;
                check_batch(s.receipts.len())?;
                Frame::SubmitReceipts(s)
            }
            tag::PROMISES => {
                let p: Promises = body("promises", b)?;
                check_batch(p.promises.len())?;
                Frame::Promises(p)
            }
            tag::GET_CHECKPOINT => Frame::GetCheckpoint(body("get_checkpoint", b)?),
            tag::CHECKPOINT_NOTE => Frame::CheckpointNote(body("checkpoint_note", b)?),
            tag::ANCHOR_ERROR => Frame::AnchorError(body("anchor_error", b)?),
            t if tag::ANCHORING.contains(&t) || tag::FEDERATION.contains(&t) => {
                return Err(DecodeError::ReservedTag(t));
            }
            t => return Err(DecodeError::UnknownTag(t)),
        };
        Ok(f)
    }

    /// Shorthand for an error frame.
    pub fn error(code: ErrorCode, room: Option<RoomId>, detail: impl Into<String>) -> Frame {
        Frame::Error(ErrorFrame {
            code,
            room,
            detail: detail.into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn samples() -> Vec<Frame> {
        let p = PeerId([7; 32]);
        let r = RoomId([9; 32]);
        vec![
            Frame::Hello(Hello {
                peer: p,
                client_nonce: [1; 32],
            }),
            Frame::Challenge(Challenge {
                relay: p,
                nonce: [2; 32],
                relay_sig: Signature([3; 64]),
            }),
            Frame::Auth(Auth {
                sig: Signature([4; 64]),
            }),
            Frame::Welcome(Welcome {
                limits: SessionLimits {
                    max_frame: 1,
                    max_payload: 2,
                    max_rooms: 3,
                    max_members: 4,
                    msgs_per_sec: 5,
                    bytes_per_sec: 6,
                    idle_timeout_ms: 7,
                },
            }),
            Frame::Join(RoomRef { room: r }),
            Frame::Leave(RoomRef { room: r }),
            Frame::ListMembers(RoomRef { room: r }),
            Frame::Members(Members {
                room: r,
                members: vec![p, PeerId([0; 32])],
            }),
            Frame::MemberJoined(MemberEvent { room: r, peer: p }),
            Frame::MemberLeft(MemberEvent { room: r, peer: p }),
            Frame::Send(SendTo {
                room: r,
                to: p,
                payload: b"sealed".to_vec(),
            }),
            Frame::Deliver(Deliver {
                room: r,
                from: p,
                payload: vec![0; 1000],
            }),
            Frame::Ping(Ping { nonce: u64::MAX }),
            Frame::Pong(Ping { nonce: 0 }),
            Frame::error(ErrorCode::RoomFull, Some(r), "full"),
            Frame::error(ErrorCode::Other(999), None, ""),
            Frame::SubmitReceipts(SubmitReceipts {
                id: 7,
                receipts: vec![serde_bytes::ByteBuf::from(vec![1; 305]), vec![].into()],
            }),
            Frame::Promises(Promises {
                id: 7,
                origin: "relay.example/log".into(),
                promises: vec![InclusionPromise {
                    index: u64::MAX,
                    leaf_hash: [8; 32],
                }],
            }),
            Frame::GetCheckpoint(GetCheckpoint { id: 0 }),
            Frame::CheckpointNote(CheckpointNote {
                id: 1,
                note: "o\n1\nAA==\n\n\u{2014} o AAAA\n".into(),
            }),
            Frame::AnchorError(AnchorError {
                id: 2,
                code: ErrorCode::Malformed,
                detail: "receipt 0: bad".into(),
            }),
        ]
    }

    #[test]
    fn roundtrip_every_frame() {
        for f in samples() {
            let bytes = f.encode().unwrap();
            assert_eq!(bytes[0], PROTOCOL_VERSION);
            assert_eq!(Frame::decode(&bytes).unwrap(), f);
        }
    }

    #[test]
    fn clear_errors() {
        let good = Frame::Ping(Ping { nonce: 5 }).encode().unwrap();
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(
            Frame::decode(&v2),
            Err(DecodeError::UnsupportedVersion {
                got: 2,
                supported: 1
            })
        );
        assert_eq!(Frame::decode(&[]), Err(DecodeError::TooShort(0)));
        assert_eq!(Frame::decode(&[1]), Err(DecodeError::TooShort(1)));
        assert_eq!(
            Frame::decode(&[1, 0x50]),
            Err(DecodeError::ReservedTag(0x50))
        );
        assert_eq!(
            Frame::decode(&[1, 0x65]),
            Err(DecodeError::ReservedTag(0x65))
        );
        assert_eq!(
            Frame::decode(&[1, 0xEE]),
            Err(DecodeError::UnknownTag(0xEE))
        );
        assert!(matches!(
            Frame::decode(&[1, tag::JOIN, 1, 2]),
            Err(DecodeError::Malformed { .. })
        ));
        let mut trailing = good.clone();
        trailing.push(0);
        assert!(matches!(
            Frame::decode(&trailing),
            Err(DecodeError::Trailing { .. })
        ));
        assert!(matches!(
            Frame::decode_with_limit(&good, 2),
            Err(DecodeError::TooLarge { max: 2, .. })
        ));
        let big = Frame::Send(SendTo {
            room: RoomId([0; 32]),
            to: PeerId([0; 32]),
            payload: vec![0; MAX_PAYLOAD_LEN + 1],
        });
        assert!(matches!(
            big.encode(),
            Err(DecodeError::PayloadTooLarge { .. })
        ));
        assert_eq!(
            ErrorCode::from(&DecodeError::ReservedTag(0x41)),
            ErrorCode::Unsupported
        );
    }

    #[test]
    fn debug_never_shows_payload() {
        let f = Frame::Send(SendTo {
            room: RoomId([0; 32]),
            to: PeerId([0; 32]),
            payload: b"MARKER-XYZ".to_vec(),
        });
        assert!(!format!("{f:?}").contains("MARKER"));
        assert!(!format!("{f:?}").contains("77, 65")); // no byte lists either
    }

    #[test]
    fn error_codes_roundtrip() {
        for n in 0..40u16 {
            assert_eq!(ErrorCode::from_u16(n).as_u16(), n);
        }
    }

    fn fuzz_cases() -> u32 {
        std::env::var("SHOAL_FUZZ_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(4096)
    }

    proptest! {
        // 4,096 cases per property in CI; `SHOAL_FUZZ_CASES=N` for a longer run.
        #![proptest_config(ProptestConfig::with_cases(fuzz_cases()))]

        /// Decoding arbitrary bytes never panics.
        #[test]
        fn decode_arbitrary_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
            let _ = Frame::decode(&bytes);
        }

        /// Valid header + arbitrary body never panics (reaches the body parsers).
        #[test]
        fn decode_arbitrary_body_never_panics(t in any::<u8>(), body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut v = vec![PROTOCOL_VERSION, t];
            v.extend_from_slice(&body);
            let _ = Frame::decode(&v);
        }

        /// Mutating one byte of a valid frame never panics, and a decoded result re-encodes.
        #[test]
        fn mutated_frames_never_panic(i in 0usize..16, pos in any::<prop::sample::Index>(), val in any::<u8>()) {
            let frames = samples();
            let mut bytes = frames[i % frames.len()].encode().unwrap();
            let p = pos.index(bytes.len());
            bytes[p] = val;
            if let Ok(f) = Frame::decode(&bytes) {
                prop_assert!(f.encode().is_ok());
            }
        }
    }
}
