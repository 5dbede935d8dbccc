//! Circles: a random 32-byte key K shared by link; everything else is derived from it.
//!
//! - Link: `https://host/path/#c=<base64url K>` — the fragment never reaches a server. The CLI
//!   takes the same link, a `shoal://circle#c=<token>` URI, or the bare 43-char token.
//! - `room = BLAKE2b-256(key = K, "shoal/room")`: the only thing the relay sees.
//! - `signal_key = BLAKE2b-256(key = K, "shoal/signal-seal")`: seals signaling payloads.
//! - [`Circle::seal_signal`]: `version(1) ‖ nonce(24, random) ‖ XChaCha20-Poly1305(signal_key,
//!   nonce, ad = "shoal/signal/v1" ‖ version ‖ room ‖ sender ‖ recipient, payload)`. The relay
//!   can neither read nor forge a payload, nor redirect one to another member or room; a member
//!   with a different K fails authentication.
//!
//! Replay of an old sealed payload by the relay is not prevented here (the seal is stateless);
//! the WebRTC layer above ignores stale SDP/ICE for a session it is not in, and the data channel
//! itself is sealed with fresh keys per session (see [`crate::seal`]).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroize;

use crate::seal::{KEY_LEN, NONCE_LEN, SealError, TAG_LEN, backend};
use shoal_proto::identity::PeerId;
use shoal_proto::{MAX_PAYLOAD_LEN, RoomId};

/// Length of a circle key.
pub const CIRCLE_KEY_LEN: usize = 32;
/// Length of the key's text form (unpadded base64url).
pub const CIRCLE_TOKEN_LEN: usize = 43;
/// Version byte of a sealed signaling payload.
pub const SIGNAL_SEAL_VERSION: u8 = 1;
/// Bytes a sealed signaling payload adds: version + nonce + tag.
pub const SIGNAL_SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Largest signaling payload that still fits the relay's opaque payload limit once sealed.
pub const MAX_SIGNAL_PLAINTEXT: usize = MAX_PAYLOAD_LEN - SIGNAL_SEAL_OVERHEAD;
/// URI scheme prefix for the CLI form.
pub const CLI_URI_PREFIX: &str = "shoal://circle#c=";

const ROOM_CONTEXT: &[u8] = b"shoal/room";
const SIGNAL_KEY_CONTEXT: &[u8] = b"shoal/signal-seal";
const SIGNAL_AD_CONTEXT: &[u8] = b"shoal/signal/v1";

/// Errors from circle keys and signaling seals.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum CircleError {
    /// Not a link, URI or token carrying a 32-byte key.
    #[error("not a circle link or key: {0}")]
    BadLink(String),
    /// A sealed payload that is too short, of an unknown version, or fails authentication
    /// (wrong circle key, tampered, or addressed to someone else).
    #[error("sealed signaling payload rejected: {0}")]
    Rejected(&'static str),
    /// A payload too large to seal within the relay's limit.
    #[error("signaling payload of {0} bytes over the limit of {MAX_SIGNAL_PLAINTEXT}")]
    TooLarge(usize),
    /// The crypto backend or random source failed.
    #[error(transparent)]
    Seal(#[from] SealError),
}

/// A circle key K. `Debug` never prints it.
#[derive(Clone, PartialEq, Eq)]
pub struct CircleKey([u8; CIRCLE_KEY_LEN]);

impl Drop for CircleKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl fmt::Debug for CircleKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CircleKey(…)")
    }
}

impl CircleKey {
    /// A fresh random key.
    pub fn generate() -> Result<Self, CircleError> {
        let mut k = [0u8; CIRCLE_KEY_LEN];
        shoal_proto::identity::random_bytes(&mut k)
            .map_err(|e| CircleError::Seal(SealError::Random(e.to_string())))?;
        Ok(CircleKey(k))
    }

    /// A key from its bytes.
    pub fn from_bytes(bytes: [u8; CIRCLE_KEY_LEN]) -> Self {
        CircleKey(bytes)
    }

    /// The raw key (to persist it; treat as a secret).
    pub fn as_bytes(&self) -> &[u8; CIRCLE_KEY_LEN] {
        &self.0
    }

    /// The text token: unpadded base64url, 43 chars.
    pub fn token(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.0)
    }

    /// The share link: `base` (any page URL; an existing fragment is dropped) + `#c=<token>`.
    pub fn link(&self, base: &str) -> String {
        let base = base.split('#').next().unwrap_or(base);
        format!("{base}#c={}", self.token())
    }

    /// The CLI form `shoal://circle#c=<token>`.
    pub fn uri(&self) -> String {
        format!("{CLI_URI_PREFIX}{}", self.token())
    }

    /// Parse a link (`…#c=<token>`, other `&`-separated fragment parameters allowed), a
    /// `shoal://circle#c=<token>` URI, or a bare token.
    pub fn parse(text: &str) -> Result<Self, CircleError> {
        let text = text.trim();
        let bad = || CircleError::BadLink(text.chars().take(80).collect());
        if text.len() > 4096 {
            return Err(bad());
        }
        let token = match text.split_once('#') {
            Some((_, fragment)) => fragment
                .split('&')
                .find_map(|kv| kv.strip_prefix("c="))
                .ok_or_else(bad)?,
            None => text,
        };
        if token.len() != CIRCLE_TOKEN_LEN {
            return Err(bad());
        }
        let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
        let arr: [u8; CIRCLE_KEY_LEN] = bytes.try_into().map_err(|_| bad())?;
        Ok(CircleKey(arr))
    }

    /// Derive the room id and signaling key.
    pub fn circle(&self) -> Circle {
        Circle::new(self.clone())
    }
}

impl FromStr for CircleKey {
    type Err = CircleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CircleKey::parse(s)
    }
}

/// `room = BLAKE2b-256(key = K, "shoal/room")`.
pub fn room_id(key: &CircleKey) -> RoomId {
    RoomId(backend::blake2b256_keyed(&key.0, &[ROOM_CONTEXT]))
}

/// `signal_key = BLAKE2b-256(key = K, "shoal/signal-seal")`.
pub fn signal_key(key: &CircleKey) -> [u8; KEY_LEN] {
    backend::blake2b256_keyed(&key.0, &[SIGNAL_KEY_CONTEXT])
}

/// A circle with its derived values.
#[derive(Clone)]
pub struct Circle {
    key: CircleKey,
    room: RoomId,
    signal_key: [u8; KEY_LEN],
}

impl fmt::Debug for Circle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Circle({:?})", self.room)
    }
}

impl Drop for Circle {
    fn drop(&mut self) {
        self.signal_key.zeroize();
    }
}

fn signal_ad(room: &RoomId, sender: &PeerId, recipient: &PeerId) -> Vec<u8> {
    let mut ad = Vec::with_capacity(SIGNAL_AD_CONTEXT.len() + 1 + 96);
    ad.extend_from_slice(SIGNAL_AD_CONTEXT);
    ad.push(SIGNAL_SEAL_VERSION);
    ad.extend_from_slice(&room.0);
    ad.extend_from_slice(sender.as_bytes());
    ad.extend_from_slice(recipient.as_bytes());
    ad
}

impl Circle {
    /// Derive room and signaling key from K.
    pub fn new(key: CircleKey) -> Self {
        let room = room_id(&key);
        let signal_key = signal_key(&key);
        Circle {
            key,
            room,
            signal_key,
        }
    }

    /// The key.
    pub fn key(&self) -> &CircleKey {
        &self.key
    }

    /// The room id the relay sees.
    pub fn room(&self) -> RoomId {
        self.room
    }

    /// Seal a signaling payload from `sender` to `recipient` with a random nonce.
    pub fn seal_signal(
        &self,
        sender: &PeerId,
        recipient: &PeerId,
        payload: &[u8],
    ) -> Result<Vec<u8>, CircleError> {
        let mut nonce = [0u8; NONCE_LEN];
        shoal_proto::identity::random_bytes(&mut nonce)
            .map_err(|e| CircleError::Seal(SealError::Random(e.to_string())))?;
        self.seal_signal_with_nonce(sender, recipient, payload, &nonce)
    }

    /// Seal with a given nonce (test vectors only: never reuse a nonce).
    pub fn seal_signal_with_nonce(
        &self,
        sender: &PeerId,
        recipient: &PeerId,
        payload: &[u8],
        nonce: &[u8; NONCE_LEN],
    ) -> Result<Vec<u8>, CircleError> {
        if payload.len() > MAX_SIGNAL_PLAINTEXT {
            return Err(CircleError::TooLarge(payload.len()));
        }
        let ad = signal_ad(&self.room, sender, recipient);
        let ct = backend::aead_seal(&self.signal_key, nonce, &ad, payload)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + ct.len());
        out.push(SIGNAL_SEAL_VERSION);
        out.extend_from_slice(nonce);
        out.extend_from_slice(&ct);
        Ok(out)
    }

    /// Open a payload that claims to come from `sender` (as the relay reported it) to
    /// `recipient` (this node).
    pub fn open_signal(
        &self,
        sender: &PeerId,
        recipient: &PeerId,
        sealed: &[u8],
    ) -> Result<Vec<u8>, CircleError> {
        if sealed.len() > MAX_PAYLOAD_LEN {
            return Err(CircleError::Rejected("too long"));
        }
        let (&version, rest) = sealed.split_first().ok_or(CircleError::Rejected("empty"))?;
        if version != SIGNAL_SEAL_VERSION {
            return Err(CircleError::Rejected("unsupported version"));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(CircleError::Rejected("truncated"));
        }
        let (nonce, ct) = rest.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce
            .try_into()
            .map_err(|_| CircleError::Rejected("truncated"))?;
        let ad = signal_ad(&self.room, sender, recipient);
        backend::aead_open(&self.signal_key, &nonce, &ad, ct)
            .map_err(|_| CircleError::Rejected("authentication failed"))
    }
}

/// Seal a signaling payload with the circle's key (see [`Circle::seal_signal`]).
pub fn seal_signal(
    circle: &Circle,
    sender: &PeerId,
    recipient: &PeerId,
    payload: &[u8],
) -> Result<Vec<u8>, CircleError> {
    circle.seal_signal(sender, recipient, payload)
}

/// Open a sealed signaling payload (see [`Circle::open_signal`]).
pub fn open_signal(
    circle: &Circle,
    sender: &PeerId,
    recipient: &PeerId,
    sealed: &[u8],
) -> Result<Vec<u8>, CircleError> {
    circle.open_signal(sender, recipient, sealed)
}
