//! The relay log's HTTP API, defined once: its paths and queries, the JSON of its request and
//! response bodies, and the checked decoding of what a client receives. The relay serves it
//! (`relay/src/log/http.rs`), native clients call it with `ureq` ([`crate::remote`], feature
//! `fetch`), the page with `fetch()` (`app/src/light.rs`). No I/O here.
//!
//! | method | path | body / answer |
//! | --- | --- | --- |
//! | GET | [`CHECKPOINT`] | the signed checkpoint note, with the cosignatures collected |
//! | GET | [`KEYS`] | [`LogKeys`] |
//! | GET | [`TILE`]`<C2SP tile path>` | tile bytes (C2SP `tlog-tiles`) |
//! | POST | [`SUBMIT`] | entry bundle or [`SubmitRequest`] → [`SubmitResponse`] |
//! | GET | [`inclusion_by_leaf_path`] / `?index=I&size=S` | [`InclusionResponse`] (404: not covered yet) |
//! | GET | [`consistency_path`] | [`ConsistencyResponse`] |
//! | GET | [`ENTRIES`]`?start=A&end=B` | entry bundle |
//! | POST | [`WITNESS_ADD_CHECKPOINT`] | C2SP `tlog-witness` add-checkpoint → cosignature (409 + `text/x.tlog.size`) |
//! | GET | [`witnessed_path`] | the latest checkpoint of that origin this relay cosigned (404: never) |
//! | GET | [`WITNESS_EQUIVOCATIONS`] (alias [`EQUIVOCATIONS`]) | `[`[`Equivocation`]`]` |

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};

use crate::Hash;

/// `GET`: the latest checkpoint (signed note text).
pub const CHECKPOINT: &str = "/log/checkpoint";
/// `GET`: [`LogKeys`].
pub const KEYS: &str = "/log/keys";
/// `GET` prefix of C2SP tiles (`/log/tile/0/000`, `/log/tile/entries/000.p/5`, …).
pub const TILE: &str = "/log/tile/";
/// `POST`: receipts to append.
pub const SUBMIT: &str = "/log/submit";
/// `GET`: an inclusion proof (query `leaf_hash` or `index`, and `size`).
pub const PROOF_INCLUSION: &str = "/log/proof/inclusion";
/// `GET`: a consistency proof (query `old`, `new`).
pub const PROOF_CONSISTENCY: &str = "/log/proof/consistency";
/// `GET`: raw entries (query `start`, `end`), as an entry bundle.
pub const ENTRIES: &str = "/log/entries";
/// `POST`: C2SP `tlog-witness` add-checkpoint.
pub const WITNESS_ADD_CHECKPOINT: &str = "/log/witness/add-checkpoint";
/// `GET`: what this relay, as a witness, last cosigned for an origin (query `origin`).
pub const WITNESS_CHECKPOINT: &str = "/log/witness/checkpoint";
/// `GET`: the equivocation proofs this relay caught as a witness.
pub const WITNESS_EQUIVOCATIONS: &str = "/log/witness/equivocations";
/// The same list under the log's own prefix.
pub const EQUIVOCATIONS: &str = "/log/equivocations";

/// Largest response body a client reads.
pub const MAX_BODY_BYTES: u64 = 1 << 20;
/// Most hashes a proof may hold (a tree of up to 2^63 leaves needs at most 63 plus slack).
pub const MAX_PROOF_HASHES: usize = 64;

/// `GET /log/proof/consistency?old=A&new=B`.
pub fn consistency_path(old: u64, new: u64) -> String {
    format!("{PROOF_CONSISTENCY}?old={old}&new={new}")
}

/// `GET /log/proof/inclusion?leaf_hash=H&size=S` (`H` in hex).
pub fn inclusion_by_leaf_path(leaf: &Hash, size: u64) -> String {
    format!(
        "{PROOF_INCLUSION}?leaf_hash={}&size={size}",
        hex::encode(leaf)
    )
}

/// `GET /log/witness/checkpoint?origin=O` (`O` percent-encoded: origins contain `/`).
pub fn witnessed_path(origin: &str) -> String {
    format!("{WITNESS_CHECKPOINT}?origin={}", urlencode(origin))
}

/// The keys a light client needs to check a log: the log's verifier key and the cosigner keys
/// of the witnesses whose cosignatures the relay collects. A page served by the relay trusts
/// them on first use and pins them.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LogKeys {
    /// C2SP signed-note verifier key of the log (`shoal-relay key`).
    pub log: String,
    /// cosignature/v1 verifier keys of the configured witnesses (the peer relays).
    pub witnesses: Vec<String>,
}

/// `POST /log/submit` with `content-type: application/json` (the other form is an entry
/// bundle, `application/octet-stream`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SubmitRequest {
    /// base64 receipts.
    pub receipts: Vec<String>,
}

/// An inclusion promise: the receipt is durably committed at `index`; an inclusion proof is
/// available once a checkpoint covers it.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Promise {
    /// Leaf index.
    pub index: u64,
    /// Leaf hash, hex.
    pub leaf_hash: String,
}

impl Promise {
    /// The leaf hash, checked.
    pub fn leaf(&self) -> Result<Hash, ApiError> {
        hex::decode(&self.leaf_hash)
            .ok()
            .and_then(|v| Hash::try_from(v).ok())
            .ok_or(ApiError::BadHash)
    }
}

/// The answer to a submit: the log's origin and one promise per receipt, in order.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct SubmitResponse {
    /// The log's origin (its checkpoint's first line).
    pub origin: String,
    /// One per submitted receipt.
    pub promises: Vec<Promise>,
}

/// An inclusion proof.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct InclusionResponse {
    /// Leaf index.
    pub index: u64,
    /// The tree size the proof is for.
    pub size: u64,
    /// base64 hashes, leaf sibling first ([`decode_proof`]).
    pub proof: Vec<String>,
}

/// A consistency proof between two tree sizes.
#[derive(Serialize, Deserialize, Debug, Clone)]
pub struct ConsistencyResponse {
    /// The older size.
    pub old: u64,
    /// The newer size.
    pub new: u64,
    /// base64 hashes ([`decode_proof`]).
    pub proof: Vec<String>,
}

/// Two checkpoints of one log, same size, different roots, both signed by the log key (check
/// with [`crate::checkpoint::EquivocationProof::verify`]).
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Equivocation {
    /// One signed note.
    pub a: String,
    /// The other.
    pub b: String,
}

/// What was wrong with a response body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// More than [`MAX_PROOF_HASHES`] hashes.
    #[error("proof too long")]
    ProofTooLong,
    /// A hash that is not 32 bytes of base64 (proofs) or hex (leaf hashes).
    #[error("bad hash")]
    BadHash,
}

/// The hashes of a proof, checked: at most [`MAX_PROOF_HASHES`], each 32 bytes of base64.
pub fn decode_proof(proof: &[String]) -> Result<Vec<Hash>, ApiError> {
    if proof.len() > MAX_PROOF_HASHES {
        return Err(ApiError::ProofTooLong);
    }
    proof
        .iter()
        .map(|s| {
            B64.decode(s)
                .ok()
                .and_then(|b| Hash::try_from(b).ok())
                .ok_or(ApiError::BadHash)
        })
        .collect()
}

/// The base64 form of proof hashes ([`InclusionResponse::proof`], [`ConsistencyResponse::proof`]).
pub fn encode_proof(proof: &[Hash]) -> Vec<String> {
    proof.iter().map(|h| B64.encode(h)).collect()
}

/// Percent-encodes everything but unreserved characters.
fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_and_queries() {
        assert_eq!(consistency_path(3, 9), "/log/proof/consistency?old=3&new=9");
        assert_eq!(
            inclusion_by_leaf_path(&[0xab; 32], 7),
            format!("/log/proof/inclusion?leaf_hash={}&size=7", "ab".repeat(32))
        );
        assert_eq!(
            witnessed_path("shoal.example/log a"),
            "/log/witness/checkpoint?origin=shoal.example%2Flog%20a"
        );
    }

    #[test]
    fn proofs_round_trip_and_bad_ones_are_refused() {
        let hashes = vec![[1u8; 32], [2u8; 32]];
        assert_eq!(decode_proof(&encode_proof(&hashes)), Ok(hashes));
        assert_eq!(decode_proof(&["AAAA".into()]), Err(ApiError::BadHash));
        assert_eq!(
            decode_proof(&["not base64!".into()]),
            Err(ApiError::BadHash)
        );
        let long = encode_proof(&vec![[0u8; 32]; MAX_PROOF_HASHES + 1]);
        assert_eq!(decode_proof(&long), Err(ApiError::ProofTooLong));
        let p = Promise {
            index: 0,
            leaf_hash: "zz".into(),
        };
        assert_eq!(p.leaf(), Err(ApiError::BadHash));
        let p = Promise {
            index: 0,
            leaf_hash: hex::encode([9u8; 32]),
        };
        assert_eq!(p.leaf(), Ok([9u8; 32]));
    }
}
