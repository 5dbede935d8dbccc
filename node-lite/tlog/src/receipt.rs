//! Job receipts: what every finished shard leaves in a relay's transparency log.
//!
//! A receipt commits to the work without revealing it: BLAKE2b-256 of the *sealed* input
//! and of the output, the two parties' Ed25519 keys, times, and two signatures:
//! - the worker signs `"shoal/receipt/v1/worker\0" || body` when it returns the result;
//! - the requester countersigns `"shoal/receipt/v1/requester\0" || body || worker_sig` on
//!   accepting it.
//!
//! Encoding: `version (1 byte) || postcard(ReceiptV1)`, at most [`MAX_RECEIPT_BYTES`].
//! Unknown versions are refused. The log leaf is the encoded receipt.

use blake2::Blake2b;
use blake2::digest::{Digest, consts::U32};
use serde::{Deserialize, Serialize};

use crate::note::{NoteSigner, ed25519_verify};

/// The only encoding version so far.
pub const RECEIPT_VERSION: u8 = 1;
/// Upper bound on an encoded receipt (a v1 receipt is about 310 bytes).
pub const MAX_RECEIPT_BYTES: usize = 512;

const WORKER_DOMAIN: &[u8] = b"shoal/receipt/v1/worker\0";
const REQUESTER_DOMAIN: &[u8] = b"shoal/receipt/v1/requester\0";
const ACCUSER_DOMAIN: &[u8] = b"shoal/misbehaviour/v1/requester\0";
/// Version byte of an encoded [`Misbehaviour`] record: the high bit marks a record that is not a
/// receipt, so the two kinds of log entry never parse as each other.
pub const MISBEHAVIOUR_VERSION: u8 = 0x81;

/// Why a receipt could not be decoded, verified or signed.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum ReceiptError {
    /// The encoding exceeds [`MAX_RECEIPT_BYTES`] (carries its length in bytes).
    #[error("receipt is {0} bytes, more than the {MAX_RECEIPT_BYTES} allowed")]
    TooLarge(usize),
    /// Zero bytes: not even a version byte.
    #[error("empty receipt")]
    Empty,
    /// The version byte is not [`RECEIPT_VERSION`] (carries the byte found).
    #[error("unknown receipt version {0}")]
    UnknownVersion(u8),
    /// The postcard body does not decode (the decoder's message).
    #[error("malformed receipt: {0}")]
    Malformed(String),
    /// Bytes left over after the postcard body.
    #[error("trailing bytes after the receipt")]
    Trailing,
    /// `finished_ms` is earlier than `started_ms`.
    #[error("finish time is before start time")]
    BadTimes,
    /// The worker's signature over the body does not verify under `body.worker`.
    #[error("worker signature does not verify")]
    BadWorkerSignature,
    /// The requester's countersignature does not verify under `body.requester`.
    #[error("requester countersignature does not verify")]
    BadRequesterSignature,
    /// The signer's public key is not the one named in the body (`"worker"` or `"requester"`).
    #[error("signer key does not match the receipt's {0} key")]
    WrongSigner(&'static str),
}

/// BLAKE2b-256 (libsodium `crypto_generichash` with a 32-byte output, no key).
pub fn commitment(bytes: &[u8]) -> [u8; 32] {
    Blake2b::<U32>::digest(bytes).into()
}

/// The keyed commitment a circle shard's receipt carries: BLAKE2b-256 of
/// `key ‖ job ‖ shard (u32 LE) ‖ bytes`, where `key` is the job's secret receipt key (shared
/// only between requester and worker, inside the sealed channel). Unkeyed, a commitment to a
/// short text could be tested against guesses by anyone reading the log.
pub fn keyed_commitment(key: &[u8; 32], job: &[u8; 16], shard: u32, bytes: &[u8]) -> [u8; 32] {
    let mut h = Blake2b::<U32>::new();
    h.update(key);
    h.update(job);
    h.update(shard.to_le_bytes());
    h.update(bytes);
    h.finalize().into()
}

/// The input bytes a shard's commitment covers: the texts as postcard `Vec<String>`.
pub fn shard_input_bytes(texts: &[String]) -> Vec<u8> {
    postcard::to_allocvec(texts).unwrap_or_default()
}

/// A 64-byte Ed25519 signature, serialized as bytes (serde has no `[u8; 64]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sig(pub [u8; 64]);

impl Serialize for Sig {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(&self.0)
    }
}

impl<'de> Deserialize<'de> for Sig {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Sig;
            fn expecting(&self, f: &mut core::fmt::Formatter) -> core::fmt::Result {
                f.write_str("64 signature bytes")
            }
            fn visit_bytes<E: serde::de::Error>(self, v: &[u8]) -> Result<Sig, E> {
                <[u8; 64]>::try_from(v)
                    .map(Sig)
                    .map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_bytes(V)
    }
}

/// What both parties sign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReceiptBody {
    /// Random job id chosen by the requester.
    pub job_id: [u8; 16],
    /// Index of the shard within the job.
    pub shard: u32,
    /// BLAKE2b-256 of the sealed (encrypted) shard input as sent to the worker.
    pub input_commitment: [u8; 32],
    /// BLAKE2b-256 of the shard output as returned.
    pub output_commitment: [u8; 32],
    /// Ed25519 public key (peer id) of the worker that computed the shard.
    pub worker: [u8; 32],
    /// Ed25519 public key (peer id) of the requester that countersigns.
    pub requester: [u8; 32],
    /// Unix milliseconds.
    pub started_ms: u64,
    /// Unix milliseconds; never earlier than `started_ms` in a valid receipt.
    pub finished_ms: u64,
}

impl ReceiptBody {
    fn encode(&self) -> Vec<u8> {
        // Infallible for this fixed shape (postcard only fails on unsupported types or
        // short buffers; `to_allocvec` grows).
        postcard::to_allocvec(self).unwrap_or_default()
    }

    fn worker_message(&self) -> Vec<u8> {
        [WORKER_DOMAIN, &self.encode()].concat()
    }

    fn requester_message(&self, worker_sig: &Sig) -> Vec<u8> {
        [REQUESTER_DOMAIN, &self.encode(), &worker_sig.0].concat()
    }

    /// Times in order and the worker's signature over this body (what a receipt and a
    /// misbehaviour record both check first).
    fn check_worker_sig(&self, worker_sig: &Sig) -> Result<(), ReceiptError> {
        if self.finished_ms < self.started_ms {
            return Err(ReceiptError::BadTimes);
        }
        if !ed25519_verify(&self.worker, &self.worker_message(), &worker_sig.0) {
            return Err(ReceiptError::BadWorkerSignature);
        }
        Ok(())
    }

    /// The worker's signature over this body.
    pub fn sign_as_worker(&self, worker: &dyn NoteSigner) -> Result<Sig, ReceiptError> {
        if worker.public_key() != self.worker {
            return Err(ReceiptError::WrongSigner("worker"));
        }
        Ok(Sig(worker.sign(&self.worker_message())))
    }
}

/// A complete, countersigned receipt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    /// The signed facts.
    pub body: ReceiptBody,
    /// Worker's Ed25519 signature over `"shoal/receipt/v1/worker\0" || body`.
    pub worker_sig: Sig,
    /// Requester's Ed25519 signature over `"shoal/receipt/v1/requester\0" || body || worker_sig`.
    pub requester_sig: Sig,
}

impl Receipt {
    /// The requester countersigns a body the worker signed; checks the worker's signature
    /// first.
    pub fn countersign(
        body: ReceiptBody,
        worker_sig: Sig,
        requester: &dyn NoteSigner,
    ) -> Result<Self, ReceiptError> {
        if requester.public_key() != body.requester {
            return Err(ReceiptError::WrongSigner("requester"));
        }
        body.check_worker_sig(&worker_sig)?;
        let requester_sig = Sig(requester.sign(&body.requester_message(&worker_sig)));
        Ok(Self {
            body,
            worker_sig,
            requester_sig,
        })
    }

    /// Checks times and both signatures.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let b = &self.body;
        b.check_worker_sig(&self.worker_sig)?;
        if !ed25519_verify(
            &b.requester,
            &b.requester_message(&self.worker_sig),
            &self.requester_sig.0,
        ) {
            return Err(ReceiptError::BadRequesterSignature);
        }
        Ok(())
    }

    /// `version || postcard(receipt)`.
    pub fn encode(&self) -> Vec<u8> {
        encode_tagged(RECEIPT_VERSION, self)
    }

    /// Decodes without checking signatures (see [`Receipt::decode_verified`]).
    pub fn decode(bytes: &[u8]) -> Result<Self, ReceiptError> {
        decode_tagged(bytes, RECEIPT_VERSION)
    }

    /// Decodes and verifies; what a relay does before appending.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let r = Self::decode(bytes)?;
        r.verify()?;
        Ok(r)
    }

    /// The log leaf hash of this receipt.
    pub fn leaf_hash(&self) -> crate::Hash {
        crate::leaf_hash(&self.encode())
    }
}

/// A requester's signed record that a worker's signed result failed its check: the worker's
/// own signature over the commitments of what it returned (it cannot deny having sent it) and
/// the first position the requester's check rejected. Whoever holds the commitment key and
/// the tokens (the requester) can show anyone with the model that the token at `position` is
/// not one the model allows; the record itself reveals neither.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Misbehaviour {
    /// What the worker signed (commitments to its input and its output).
    pub body: ReceiptBody,
    /// The worker's signature over `body` (as in a receipt).
    pub worker_sig: Sig,
    /// The first rejected position of the output (a token index for generation).
    pub position: u32,
    /// The requester's signature over `"shoal/misbehaviour/v1/requester\0" || body ||
    /// worker_sig || position (u32 LE)`.
    pub requester_sig: Sig,
}

impl Misbehaviour {
    fn message(body: &ReceiptBody, worker_sig: &Sig, position: u32) -> Vec<u8> {
        [
            ACCUSER_DOMAIN,
            &body.encode(),
            &worker_sig.0,
            &position.to_le_bytes(),
        ]
        .concat()
    }

    /// The requester signs the record; checks the worker's signature first.
    pub fn sign(
        body: ReceiptBody,
        worker_sig: Sig,
        position: u32,
        requester: &dyn NoteSigner,
    ) -> Result<Self, ReceiptError> {
        if requester.public_key() != body.requester {
            return Err(ReceiptError::WrongSigner("requester"));
        }
        body.check_worker_sig(&worker_sig)?;
        let requester_sig = Sig(requester.sign(&Self::message(&body, &worker_sig, position)));
        Ok(Self {
            body,
            worker_sig,
            position,
            requester_sig,
        })
    }

    /// Checks times and both signatures.
    pub fn verify(&self) -> Result<(), ReceiptError> {
        let b = &self.body;
        b.check_worker_sig(&self.worker_sig)?;
        let m = Self::message(b, &self.worker_sig, self.position);
        if !ed25519_verify(&b.requester, &m, &self.requester_sig.0) {
            return Err(ReceiptError::BadRequesterSignature);
        }
        Ok(())
    }

    /// `version || postcard(record)`.
    pub fn encode(&self) -> Vec<u8> {
        encode_tagged(MISBEHAVIOUR_VERSION, self)
    }

    /// Decodes and verifies.
    pub fn decode_verified(bytes: &[u8]) -> Result<Self, ReceiptError> {
        let r: Misbehaviour = decode_tagged(bytes, MISBEHAVIOUR_VERSION)?;
        r.verify()?;
        Ok(r)
    }
}

/// `version ‖ postcard(value)` (infallible for these fixed shapes, see `ReceiptBody::encode`).
fn encode_tagged(version: u8, value: &impl Serialize) -> Vec<u8> {
    let mut out = Vec::with_capacity(320);
    out.push(version);
    out.extend_from_slice(&postcard::to_allocvec(value).unwrap_or_default());
    out
}

/// `version ‖ postcard(T)` of a log entry: size, version byte, the whole body.
fn decode_tagged<T: serde::de::DeserializeOwned>(
    bytes: &[u8],
    expected: u8,
) -> Result<T, ReceiptError> {
    if bytes.len() > MAX_RECEIPT_BYTES {
        return Err(ReceiptError::TooLarge(bytes.len()));
    }
    let (&version, rest) = bytes.split_first().ok_or(ReceiptError::Empty)?;
    if version != expected {
        return Err(ReceiptError::UnknownVersion(version));
    }
    let (r, trailing) =
        postcard::take_from_bytes::<T>(rest).map_err(|e| ReceiptError::Malformed(e.to_string()))?;
    if !trailing.is_empty() {
        return Err(ReceiptError::Trailing);
    }
    Ok(r)
}

/// What a log entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum EntryKind {
    /// A countersigned [`Receipt`].
    Receipt,
    /// A [`Misbehaviour`] record.
    Misbehaviour,
}

/// Decode and verify an entry a relay is asked to append: a receipt or a misbehaviour record
/// (told apart by the first byte), both signatures checked.
pub fn verify_log_entry(bytes: &[u8]) -> Result<EntryKind, ReceiptError> {
    match bytes.first() {
        None => Err(ReceiptError::Empty),
        Some(&MISBEHAVIOUR_VERSION) => {
            Misbehaviour::decode_verified(bytes).map(|_| EntryKind::Misbehaviour)
        }
        Some(_) => Receipt::decode_verified(bytes).map(|_| EntryKind::Receipt),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::note::Ed25519Signer;

    fn signer(b: u8) -> Ed25519Signer {
        Ed25519Signer::from_seed("k", &[b; 32]).expect("signer")
    }

    fn sample() -> (Receipt, Ed25519Signer, Ed25519Signer) {
        let (w, r) = (signer(1), signer(2));
        let body = ReceiptBody {
            job_id: [7; 16],
            shard: 3,
            input_commitment: commitment(b"sealed input"),
            output_commitment: commitment(b"output vectors"),
            worker: w.public_key(),
            requester: r.public_key(),
            started_ms: 1_700_000_000_000,
            finished_ms: 1_700_000_000_250,
        };
        let ws = body.sign_as_worker(&w).expect("worker signs");
        let rc = Receipt::countersign(body, ws, &r).expect("countersign");
        (rc, w, r)
    }

    #[test]
    fn misbehaviour_records_bind_the_worker_and_verify() {
        let (rc, w, r) = sample();
        let m = Misbehaviour::sign(rc.body.clone(), rc.worker_sig, 41, &r).expect("sign");
        let bytes = m.encode();
        assert!(bytes.len() <= MAX_RECEIPT_BYTES, "{} bytes", bytes.len());
        assert_eq!(Misbehaviour::decode_verified(&bytes).expect("valid"), m);
        // Another position, a forged worker signature, the wrong signer: all refused.
        let mut moved = m.clone();
        moved.position = 40;
        assert_eq!(moved.verify(), Err(ReceiptError::BadRequesterSignature));
        let mut forged = m.clone();
        forged.worker_sig = Sig([1; 64]);
        assert_eq!(forged.verify(), Err(ReceiptError::BadWorkerSignature));
        assert!(Misbehaviour::decode_verified(&rc.encode()).is_err());
        assert!(
            Receipt::decode(&bytes).is_err(),
            "a record never parses as a receipt"
        );
        assert_eq!(verify_log_entry(&bytes), Ok(EntryKind::Misbehaviour));
        assert_eq!(verify_log_entry(&rc.encode()), Ok(EntryKind::Receipt));
        assert!(verify_log_entry(&moved.encode()).is_err());
        assert!(Misbehaviour::sign(rc.body.clone(), Sig([1; 64]), 41, &r).is_err());
        assert!(Misbehaviour::sign(rc.body, rc.worker_sig, 41, &w).is_err());
    }

    #[test]
    fn roundtrip_and_size() {
        let (rc, _, _) = sample();
        let bytes = rc.encode();
        assert!(bytes.len() <= MAX_RECEIPT_BYTES, "{} bytes", bytes.len());
        assert!(bytes.len() < 320, "{} bytes", bytes.len());
        let back = Receipt::decode_verified(&bytes).expect("valid");
        assert_eq!(back, rc);
        assert_eq!(back.leaf_hash(), crate::leaf_hash(&bytes));
    }

    #[test]
    fn blake2b_matches_libsodium_generichash() {
        // crypto_generichash(32) of "" (BLAKE2b-256 of the empty string; RFC 7693 family).
        assert_eq!(
            hex::encode(commitment(b"")),
            "0e5751c026e543b2e8ab2eb06099daa1d1e5df47778f7787faab45cdf12fe3a8"
        );
    }

    #[test]
    fn rejections() {
        let (rc, w, r) = sample();
        let good = rc.encode();
        // Tampered body: every single-byte flip of the body or signatures is rejected.
        for i in 1..good.len() {
            let mut b = good.clone();
            b[i] ^= 0x01;
            assert!(
                Receipt::decode_verified(&b).is_err(),
                "flip at {i} accepted"
            );
        }
        // Bad signatures.
        let mut bad = rc.clone();
        bad.worker_sig.0[5] ^= 1;
        assert_eq!(bad.verify(), Err(ReceiptError::BadWorkerSignature));
        let mut bad = rc.clone();
        bad.requester_sig = bad.worker_sig;
        assert_eq!(bad.verify(), Err(ReceiptError::BadRequesterSignature));
        // Swapped roles do not verify (domain separation).
        let mut bad = rc.clone();
        core::mem::swap(&mut bad.body.worker, &mut bad.body.requester);
        core::mem::swap(&mut bad.worker_sig, &mut bad.requester_sig);
        assert!(bad.verify().is_err());
        // Wrong signer key.
        assert_eq!(
            rc.body.sign_as_worker(&r),
            Err(ReceiptError::WrongSigner("worker"))
        );
        assert_eq!(
            Receipt::countersign(rc.body.clone(), rc.worker_sig, &w),
            Err(ReceiptError::WrongSigner("requester"))
        );
        // Times.
        let mut bad = rc.clone();
        bad.body.finished_ms = bad.body.started_ms - 1;
        assert_eq!(bad.verify(), Err(ReceiptError::BadTimes));
        // Sizes, versions, truncation, trailing bytes.
        assert_eq!(Receipt::decode(&[]), Err(ReceiptError::Empty));
        assert_eq!(
            Receipt::decode(&vec![1u8; MAX_RECEIPT_BYTES + 1]),
            Err(ReceiptError::TooLarge(MAX_RECEIPT_BYTES + 1))
        );
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(Receipt::decode(&v2), Err(ReceiptError::UnknownVersion(2)));
        for cut in [1, good.len() / 2, good.len() - 1] {
            assert!(matches!(
                Receipt::decode(&good[..cut]),
                Err(ReceiptError::Malformed(_))
            ));
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(Receipt::decode(&long), Err(ReceiptError::Trailing));
    }
}
