//! End-to-end sealing of a data channel between two members' long-term identities.
//!
//! WebRTC already runs DTLS, but the DTLS fingerprints travel through signaling and the
//! browser's stack; Shoal adds its own layer so that trust rests only on the members' Ed25519
//! keys. The construction (see `node-lite/ARCHITECTURE-circles.md` for the rationale):
//!
//! 1. **Static pair secret.** `x_sk = crypto_sign_ed25519_sk_to_curve25519(my key)`,
//!    `x_pk = crypto_sign_ed25519_pk_to_curve25519(peer id)`,
//!    `s = crypto_scalarmult(x_sk, x_pk)` (X25519; all-zero results and invalid / small-order /
//!    torsioned peer keys are refused).
//! 2. **Session keys.** Each side sends a `Hello` record with 32 fresh random bytes `r`. The
//!    key for the direction sender S → receiver R is
//!    `k_SR = BLAKE2b-256(key = s, "shoal/seal/v1/key" ‖ pk_S ‖ pk_R ‖ r_S ‖ r_R)`
//!    (`crypto_generichash`, 32-byte output). Both sides derive both keys; fresh `r` from both
//!    sides make every channel's keys new, so counters can restart at 0 and an old session
//!    cannot be replayed into a new one.
//! 3. **Records.** `version(1) ‖ kind(1) ‖ counter(u64 LE) ‖ XChaCha20-Poly1305(k_SR, nonce =
//!    counter LE ‖ 16 zero bytes, ad = version ‖ kind, plaintext = flags(1) ‖ chunk)`.
//!    The receiver accepts exactly the next counter: a lower one is a replay, a higher one a
//!    reordering / loss; anything else that fails the tag is a forgery.
//! 4. **Chunking.** A message larger than one record (WebRTC caps messages at 64 KiB) is split;
//!    `flags` bit 0 marks the final chunk, authenticated, so a truncated message never comes out.
//!    Reassembly is bounded by a per-channel maximum message size.
//!
//! Natively with feature `sodium` the primitives are libsodium's ([`sodium`]); everywhere else
//! RustCrypto's ([`rust`]). Both produce the same bytes: see the tests and
//! `tests/data/seal_vectors.json`.

use std::fmt;

use zeroize::Zeroize;

use shoal_proto::identity::{Keypair, PeerId};

pub mod rust;
#[cfg(all(feature = "sodium", not(target_family = "wasm")))]
pub mod sodium;

/// The primitives this build uses (libsodium natively with `sodium`, else RustCrypto).
#[cfg(all(feature = "sodium", not(target_family = "wasm")))]
pub use sodium as backend;

/// The primitives this build uses (libsodium natively with `sodium`, else RustCrypto).
#[cfg(not(all(feature = "sodium", not(target_family = "wasm"))))]
pub use rust as backend;

/// Symmetric key length (XChaCha20-Poly1305, BLAKE2b key).
pub const KEY_LEN: usize = 32;
/// XChaCha20 nonce length.
pub const NONCE_LEN: usize = 24;
/// Poly1305 tag length.
pub const TAG_LEN: usize = 16;
/// Length of the random contribution in a `Hello`.
pub const HELLO_RANDOM_LEN: usize = 32;
/// Record format version.
pub const SEAL_VERSION: u8 = 1;
/// Record kind: handshake hello (cleartext random).
pub const KIND_HELLO: u8 = 0x01;
/// Record kind: sealed data.
pub const KIND_DATA: u8 = 0x02;
/// Largest record on the wire: one WebRTC data-channel message.
pub const MAX_RECORD_LEN: usize = 64 * 1024;
/// version + kind + counter.
pub const DATA_HEADER_LEN: usize = 1 + 1 + 8;
/// Largest chunk of a message per record (the flags byte is inside the ciphertext).
pub const MAX_CHUNK_LEN: usize = MAX_RECORD_LEN - DATA_HEADER_LEN - TAG_LEN - 1;
/// Default cap on one reassembled message.
pub const DEFAULT_MAX_MESSAGE_LEN: usize = 16 * 1024 * 1024;
/// Length of a hello record.
pub const HELLO_LEN: usize = 2 + HELLO_RANDOM_LEN;

const FLAG_FINAL: u8 = 0x01;
const KEY_CONTEXT: &[u8] = b"shoal/seal/v1/key";

/// Errors from sealing and opening.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SealError {
    /// The crypto backend failed (libsodium init, an impossible length).
    #[error("crypto backend: {0}")]
    Backend(&'static str),
    /// The peer's public key is not usable for X25519 (not a point, small order, torsion).
    #[error("peer public key unusable for key agreement")]
    BadPublicKey,
    /// Authentication failed: wrong key, tampered, or truncated ciphertext.
    #[error("record failed authentication")]
    Forged,
    /// A record with a counter already seen.
    #[error("replayed record (counter {got}, expected {expected})")]
    Replayed {
        /// Counter in the record.
        got: u64,
        /// Counter the receiver expects.
        expected: u64,
    },
    /// A record from the future: an earlier one was lost or reordered.
    #[error("out-of-order record (counter {got}, expected {expected})")]
    OutOfOrder {
        /// Counter in the record.
        got: u64,
        /// Counter the receiver expects.
        expected: u64,
    },
    /// Too short to be a record of its kind.
    #[error("truncated record ({0} bytes)")]
    Truncated(usize),
    /// A record longer than [`MAX_RECORD_LEN`].
    #[error("record too long ({0} bytes)")]
    RecordTooLong(usize),
    /// A version this build does not speak.
    #[error("unsupported seal version {got} (this build speaks {SEAL_VERSION})")]
    UnsupportedVersion {
        /// Version byte received.
        got: u8,
    },
    /// Unknown record kind, or a kind not valid now (a hello after the handshake).
    #[error("unexpected record kind {0:#04x}")]
    UnexpectedKind(u8),
    /// Authenticated plaintext with reserved flag bits set.
    #[error("bad chunk flags {0:#04x}")]
    BadFlags(u8),
    /// A message over the channel's limit (sending or reassembling).
    #[error("message of {len} bytes over the limit of {max}")]
    MessageTooLarge {
        /// Bytes (so far, when reassembling).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The channel ended in the middle of a chunked message.
    #[error("channel ended inside a message ({0} bytes buffered)")]
    TruncatedMessage(usize),
    /// The channel refused a record earlier in a way that leaves reassembly undefined.
    #[error("channel is poisoned by an earlier error")]
    Poisoned,
    /// 2^64 records in one direction.
    #[error("record counter exhausted")]
    CounterExhausted,
    /// The operating system's random source failed.
    #[error("random source failed: {0}")]
    Random(String),
}

/// The X25519 secret for an identity (`crypto_sign_ed25519_sk_to_curve25519`).
pub fn x25519_secret(me: &Keypair) -> Result<[u8; 32], SealError> {
    backend::x25519_sk_from_ed_seed(me.seed())
}

/// The X25519 public key for a peer id (`crypto_sign_ed25519_pk_to_curve25519`).
pub fn x25519_public(peer: &PeerId) -> Result<[u8; 32], SealError> {
    backend::x25519_pk_from_ed_pk(peer.as_bytes())
}

/// The static secret shared by two identities. Computing it is the expensive step (one X25519);
/// keep one per peer and start every channel from it.
#[derive(Clone)]
pub struct PairSecret {
    shared: [u8; 32],
    me: PeerId,
    peer: PeerId,
}

impl fmt::Debug for PairSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PairSecret({} ↔ {})", self.me.short(), self.peer.short())
    }
}

impl Drop for PairSecret {
    fn drop(&mut self) {
        self.shared.zeroize();
    }
}

impl PairSecret {
    /// X25519 between my identity and the peer's.
    pub fn new(me: &Keypair, peer: &PeerId) -> Result<Self, SealError> {
        let mut sk = x25519_secret(me)?;
        let pk = x25519_public(peer);
        let shared = pk.and_then(|pk| backend::x25519(&sk, &pk));
        sk.zeroize();
        Ok(PairSecret {
            shared: shared?,
            me: me.peer_id(),
            peer: *peer,
        })
    }

    /// The peer this secret is shared with.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Start a channel with fresh randomness: returns the handshake and the hello record to send.
    pub fn handshake(&self) -> Result<(Handshake, Vec<u8>), SealError> {
        let mut r = [0u8; HELLO_RANDOM_LEN];
        shoal_proto::identity::random_bytes(&mut r)
            .map_err(|e| SealError::Random(e.to_string()))?;
        Ok(self.handshake_with_random(r))
    }

    /// Start a channel with a given random (tests and test vectors only: reusing one is fatal).
    pub fn handshake_with_random(&self, random: [u8; HELLO_RANDOM_LEN]) -> (Handshake, Vec<u8>) {
        let mut hello = Vec::with_capacity(HELLO_LEN);
        hello.extend_from_slice(&[SEAL_VERSION, KIND_HELLO]);
        hello.extend_from_slice(&random);
        (
            Handshake {
                pair: self.clone(),
                random,
            },
            hello,
        )
    }
}

/// Direction key `k_SR = BLAKE2b-256(key = s, ctx ‖ pk_S ‖ pk_R ‖ r_S ‖ r_R)`.
fn direction_key(
    shared: &[u8; 32],
    sender: &PeerId,
    receiver: &PeerId,
    r_sender: &[u8; HELLO_RANDOM_LEN],
    r_receiver: &[u8; HELLO_RANDOM_LEN],
) -> [u8; KEY_LEN] {
    backend::blake2b256_keyed(
        shared,
        &[
            KEY_CONTEXT,
            sender.as_bytes(),
            receiver.as_bytes(),
            r_sender,
            r_receiver,
        ],
    )
}

/// The nonce for a record counter: counter (u64 LE) ‖ 16 zero bytes.
pub fn nonce_for(counter: u64) -> [u8; NONCE_LEN] {
    let mut n = [0u8; NONCE_LEN];
    n[..8].copy_from_slice(&counter.to_le_bytes());
    n
}

/// A channel waiting for the peer's hello.
pub struct Handshake {
    pair: PairSecret,
    random: [u8; HELLO_RANDOM_LEN],
}

impl fmt::Debug for Handshake {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Handshake({:?})", self.pair)
    }
}

impl Handshake {
    /// Complete with the peer's hello record.
    pub fn finish(self, peer_hello: &[u8]) -> Result<Channel, SealError> {
        let (&version, rest) = peer_hello
            .split_first()
            .ok_or(SealError::Truncated(peer_hello.len()))?;
        if version != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion { got: version });
        }
        let (&kind, rest) = rest
            .split_first()
            .ok_or(SealError::Truncated(peer_hello.len()))?;
        if kind != KIND_HELLO {
            return Err(SealError::UnexpectedKind(kind));
        }
        let peer_random: [u8; HELLO_RANDOM_LEN] = rest
            .try_into()
            .map_err(|_| SealError::Truncated(peer_hello.len()))?;
        let p = &self.pair;
        let send_key = direction_key(&p.shared, &p.me, &p.peer, &self.random, &peer_random);
        let recv_key = direction_key(&p.shared, &p.peer, &p.me, &peer_random, &self.random);
        Ok(Channel {
            peer: p.peer,
            send_key,
            recv_key,
            send_counter: 0,
            recv_counter: 0,
            partial: Vec::new(),
            max_message_len: DEFAULT_MAX_MESSAGE_LEN,
            poisoned: false,
        })
    }
}

/// An established, sealed channel to one peer (both directions).
pub struct Channel {
    peer: PeerId,
    send_key: [u8; KEY_LEN],
    recv_key: [u8; KEY_LEN],
    send_counter: u64,
    recv_counter: u64,
    partial: Vec<u8>,
    max_message_len: usize,
    poisoned: bool,
}

impl fmt::Debug for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Channel")
            .field("peer", &self.peer)
            .field("send_counter", &self.send_counter)
            .field("recv_counter", &self.recv_counter)
            .field("partial", &self.partial.len())
            .finish_non_exhaustive()
    }
}

impl Drop for Channel {
    fn drop(&mut self) {
        self.send_key.zeroize();
        self.recv_key.zeroize();
    }
}

impl Channel {
    /// The peer at the other end.
    pub fn peer(&self) -> PeerId {
        self.peer
    }

    /// Set the largest message this side will send or reassemble.
    pub fn with_max_message_len(mut self, max: usize) -> Self {
        self.max_message_len = max;
        self
    }

    /// Records sent so far.
    pub fn sent_records(&self) -> u64 {
        self.send_counter
    }

    /// Seal one record carrying `chunk` (≤ [`MAX_CHUNK_LEN`]).
    fn seal_record(&mut self, chunk: &[u8], last: bool) -> Result<Vec<u8>, SealError> {
        let counter = self.send_counter;
        let next = counter.checked_add(1).ok_or(SealError::CounterExhausted)?;
        let mut pt = Vec::with_capacity(chunk.len() + 1);
        pt.push(if last { FLAG_FINAL } else { 0 });
        pt.extend_from_slice(chunk);
        let ct = backend::aead_seal(
            &self.send_key,
            &nonce_for(counter),
            &[SEAL_VERSION, KIND_DATA],
            &pt,
        )?;
        let mut rec = Vec::with_capacity(DATA_HEADER_LEN + ct.len());
        rec.extend_from_slice(&[SEAL_VERSION, KIND_DATA]);
        rec.extend_from_slice(&counter.to_le_bytes());
        rec.extend_from_slice(&ct);
        self.send_counter = next;
        Ok(rec)
    }

    /// Seal a message into one or more records (each ≤ [`MAX_RECORD_LEN`]); send them in order.
    pub fn seal_message(&mut self, msg: &[u8]) -> Result<Vec<Vec<u8>>, SealError> {
        if msg.len() > self.max_message_len {
            return Err(SealError::MessageTooLarge {
                len: msg.len(),
                max: self.max_message_len,
            });
        }
        if msg.is_empty() {
            return Ok(vec![self.seal_record(&[], true)?]);
        }
        let n = msg.len().div_ceil(MAX_CHUNK_LEN);
        let mut out = Vec::with_capacity(n);
        for (i, chunk) in msg.chunks(MAX_CHUNK_LEN).enumerate() {
            out.push(self.seal_record(chunk, i + 1 == n)?);
        }
        Ok(out)
    }

    /// Open one received record. Returns a whole message once its final chunk arrives.
    ///
    /// A record refused before authentication succeeds (replay, reorder, forgery, truncation)
    /// changes nothing; the driver should still close the channel, since a well-behaved peer
    /// never sends one. A refused authenticated record (oversized message, bad flags) poisons
    /// the channel.
    pub fn open_record(&mut self, record: &[u8]) -> Result<Option<Vec<u8>>, SealError> {
        if self.poisoned {
            return Err(SealError::Poisoned);
        }
        if record.len() > MAX_RECORD_LEN {
            return Err(SealError::RecordTooLong(record.len()));
        }
        if record.len() < DATA_HEADER_LEN + TAG_LEN + 1 {
            if let Some(&v) = record.first()
                && v != SEAL_VERSION
            {
                return Err(SealError::UnsupportedVersion { got: v });
            }
            return Err(SealError::Truncated(record.len()));
        }
        if record[0] != SEAL_VERSION {
            return Err(SealError::UnsupportedVersion { got: record[0] });
        }
        if record[1] != KIND_DATA {
            return Err(SealError::UnexpectedKind(record[1]));
        }
        let mut ctr = [0u8; 8];
        ctr.copy_from_slice(&record[2..10]);
        let counter = u64::from_le_bytes(ctr);
        let expected = self.recv_counter;
        if counter < expected {
            return Err(SealError::Replayed {
                got: counter,
                expected,
            });
        }
        if counter > expected {
            return Err(SealError::OutOfOrder {
                got: counter,
                expected,
            });
        }
        let pt = backend::aead_open(
            &self.recv_key,
            &nonce_for(counter),
            &[SEAL_VERSION, KIND_DATA],
            &record[DATA_HEADER_LEN..],
        )?;
        self.recv_counter = expected.checked_add(1).ok_or(SealError::CounterExhausted)?;
        let Some((&flags, chunk)) = pt.split_first() else {
            self.poisoned = true;
            return Err(SealError::Truncated(0));
        };
        if flags & !FLAG_FINAL != 0 {
            self.poisoned = true;
            return Err(SealError::BadFlags(flags));
        }
        let len = self.partial.len() + chunk.len();
        if len > self.max_message_len {
            self.poisoned = true;
            self.partial = Vec::new();
            return Err(SealError::MessageTooLarge {
                len,
                max: self.max_message_len,
            });
        }
        if flags & FLAG_FINAL != 0 {
            if self.partial.is_empty() {
                return Ok(Some(chunk.to_vec()));
            }
            self.partial.extend_from_slice(chunk);
            return Ok(Some(std::mem::take(&mut self.partial)));
        }
        self.partial.extend_from_slice(chunk);
        Ok(None)
    }

    /// Call when the transport closes: an error if a chunked message was cut off.
    pub fn finish(&self) -> Result<(), SealError> {
        if self.partial.is_empty() {
            Ok(())
        } else {
            Err(SealError::TruncatedMessage(self.partial.len()))
        }
    }
}
