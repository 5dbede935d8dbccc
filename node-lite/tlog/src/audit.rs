//! One log audited without I/O: the flow every light client runs against a relay's log API
//! ([`crate::api`]), written once. The native client (`shoal-node receipts`, the relay's tests:
//! [`crate::remote`], `ureq`) and the page (`app/src/light.rs`, `fetch()`) both drive it with a
//! few lines:
//!
//! ```text
//! let mut audit = Audit::new(log_key, witnesses, quorum, last_checkpoint, my_leaf_hashes);
//! while let Some(path) = audit.next_request() {
//!     match GET(path) { Ok((status, body)) => audit.on_response(status, &body),
//!                       Err(e) => audit.on_transport_error(e) }
//! }
//! let report = audit.finish();
//! ```
//!
//! The flow: `GET` [`api::CHECKPOINT`] → log signature and origin → witness cosignatures
//! counted (distinct keys) → when the tree grew since the caller's last accepted checkpoint,
//! `GET` a consistency proof and check it (same size with another root is an
//! [`EquivocationProof`]) → `GET` an inclusion proof for each leaf and verify it against the
//! checkpoint. A log that is inconsistent with what the caller saw before is not asked for
//! inclusion proofs (a proof against a fork proves nothing). `witnessed` = consistent and at
//! least `quorum` cosigners. No clocks: nothing here expires.

use crate::Hash;
use crate::api::{self, ConsistencyResponse, InclusionResponse};
use crate::checkpoint::{CosignatureVerifier, EquivocationProof, SignedCheckpoint};
use crate::client::{ClientError, LightClient};
use crate::note::NoteVerifier;

/// What went wrong in an audit ([`AuditReport::error`] keeps the first).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// The request did not get an answer (connection, timeout, a body over the size cap).
    #[error("GET {path}: {message}")]
    Transport {
        /// The API path requested.
        path: String,
        /// The HTTP client's message.
        message: String,
    },
    /// The log answered with an unexpected status.
    #[error("GET {path}: HTTP {status}")]
    Status {
        /// The API path requested.
        path: String,
        /// The HTTP status.
        status: u16,
    },
    /// The body is not what the API promises (not UTF-8, bad JSON, bad proof hashes).
    #[error("GET {path}: malformed response: {message}")]
    Malformed {
        /// The API path requested.
        path: String,
        /// What was wrong.
        message: String,
    },
    /// The checkpoint was refused: bad signature or origin, rollback, inconsistent proof.
    #[error("checkpoint refused: {0}")]
    Checkpoint(ClientError),
    /// The log signed two different trees of one size ([`AuditReport::equivocation`]).
    #[error("the log signed two different trees of size {0}")]
    Equivocation(u64),
    /// The log served an inclusion proof that does not verify.
    #[error("bad inclusion proof for leaf index {0}")]
    BadInclusion(u64),
}

/// What an audit learned about one log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditReport {
    /// The log's origin (its key's name).
    pub origin: String,
    /// The latest checkpoint, log signature and origin verified (with every cosignature line
    /// it carried). Persist `note.to_text()` when [`AuditReport::witnessed`] to pass it as the
    /// next audit's `last`.
    pub checkpoint: Option<SignedCheckpoint>,
    /// Names of the configured witnesses (distinct keys) with a valid cosignature on it.
    pub cosigners: Vec<String>,
    /// The quorum asked for.
    pub quorum: usize,
    /// The checkpoint is consistent with the caller's last accepted one (true when none).
    pub consistent: bool,
    /// Consistent and cosigned by at least `quorum` witnesses.
    pub witnessed: bool,
    /// Proof that the log signed two trees of one size, if it did.
    pub equivocation: Option<EquivocationProof>,
    /// The first thing that went wrong, if anything did.
    pub error: Option<AuditError>,
    /// Per leaf given to [`Audit::new`], in order: the leaf index a verified inclusion proof
    /// placed it at, or `None` (not in the log, not covered by this checkpoint, or unchecked).
    pub included: Vec<Option<u64>>,
}

impl AuditReport {
    /// `cosigners.len() < quorum`: the error a user should see when nothing else went wrong.
    pub fn short_of_quorum(&self) -> Option<(usize, usize)> {
        (self.checkpoint.is_some() && self.cosigners.len() < self.quorum)
            .then_some((self.cosigners.len(), self.quorum))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Checkpoint,
    Consistency { old: u64, new: u64 },
    Inclusion(usize),
    Done,
}

/// The sans-IO audit of one log (see the module docs).
#[derive(Debug, Clone)]
pub struct Audit {
    /// Checks signatures and consistency (quorum 0: the quorum is judged separately, so an
    /// under-witnessed checkpoint is still reported and its proofs still checked).
    client: LightClient,
    witnesses: Vec<CosignatureVerifier>,
    leaves: Vec<Hash>,
    phase: Phase,
    /// The checkpoint note as received, for the consistency update.
    note: Vec<u8>,
    report: AuditReport,
}

impl Audit {
    /// An audit of the log signing with `log`, counting cosignatures of `witnesses` against
    /// `quorum`. `last` is the caller's last accepted checkpoint (signed-note text); one that
    /// does not verify under `log` is ignored. `leaves` are the leaf hashes to look up.
    pub fn new(
        log: NoteVerifier,
        witnesses: Vec<CosignatureVerifier>,
        quorum: usize,
        last: Option<&str>,
        leaves: Vec<Hash>,
    ) -> Self {
        let origin = log.name.clone();
        let fresh = LightClient::new(log, None, Vec::new(), 0);
        let client = match last {
            Some(text) => fresh.clone().with_last(text.as_bytes()).unwrap_or(fresh),
            None => fresh,
        };
        let n = leaves.len();
        Self {
            client,
            witnesses,
            leaves,
            phase: Phase::Checkpoint,
            note: Vec::new(),
            report: AuditReport {
                origin,
                checkpoint: None,
                cosigners: Vec::new(),
                quorum,
                consistent: false,
                witnessed: false,
                equivocation: None,
                error: None,
                included: vec![None; n],
            },
        }
    }

    /// The API path to `GET` next (relative to the relay's base URL), or `None` when the
    /// audit is over ([`Audit::finish`]).
    pub fn next_request(&self) -> Option<String> {
        match self.phase {
            Phase::Checkpoint => Some(api::CHECKPOINT.to_owned()),
            Phase::Consistency { old, new } => Some(api::consistency_path(old, new)),
            Phase::Inclusion(i) => {
                let size = self.report.checkpoint.as_ref()?.checkpoint.size;
                Some(api::inclusion_by_leaf_path(self.leaves.get(i)?, size))
            }
            Phase::Done => None,
        }
    }

    /// The answer to [`Audit::next_request`]'s path: HTTP status and body (the caller caps
    /// its size, [`api::MAX_BODY_BYTES`]).
    pub fn on_response(&mut self, status: u16, body: &[u8]) {
        let Some(path) = self.next_request() else {
            return;
        };
        match self.phase {
            Phase::Checkpoint => self.on_checkpoint(path, status, body),
            Phase::Consistency { .. } => self.on_consistency(path, status, body),
            Phase::Inclusion(i) => self.on_inclusion(i, path, status, body),
            Phase::Done => {}
        }
    }

    /// [`Audit::next_request`]'s path got no answer: the audit ends with the error.
    pub fn on_transport_error(&mut self, message: impl Into<String>) {
        if let Some(path) = self.next_request() {
            self.fail(AuditError::Transport {
                path,
                message: message.into(),
            });
            self.phase = Phase::Done;
        }
    }

    /// The report (whatever was learned if the audit ended early).
    pub fn finish(self) -> AuditReport {
        self.report
    }

    fn fail(&mut self, e: AuditError) {
        if self.report.error.is_none() {
            self.report.error = Some(e);
        }
    }

    fn on_checkpoint(&mut self, path: String, status: u16, body: &[u8]) {
        self.phase = Phase::Done;
        if status != 200 {
            return self.fail(AuditError::Status { path, status });
        }
        let sc = match self.client.check_checkpoint(body) {
            Ok(sc) => sc,
            Err(e) => return self.fail(AuditError::Checkpoint(e)),
        };
        let mut seen: Vec<[u8; 32]> = Vec::new();
        for w in &self.witnesses {
            if !seen.contains(&w.public_key) && w.verify(&sc.note).is_some() {
                seen.push(w.public_key);
                self.report.cosigners.push(w.name.clone());
            }
        }
        let new = sc.checkpoint.size;
        self.report.checkpoint = Some(sc);
        self.note = body.to_vec();
        match self.client.last().map(|l| l.checkpoint.size) {
            Some(old) if old > 0 && old < new => self.phase = Phase::Consistency { old, new },
            // No last checkpoint (the update just records it), the first one was empty, or the
            // same size (equivocation check) or smaller (rollback): no proof to fetch.
            _ => self.update(&[]),
        }
    }

    fn on_consistency(&mut self, path: String, status: u16, body: &[u8]) {
        self.phase = Phase::Done;
        if status != 200 {
            return self.fail(AuditError::Status { path, status });
        }
        let proof = serde_json::from_slice::<ConsistencyResponse>(body)
            .map_err(|e| e.to_string())
            .and_then(|c| api::decode_proof(&c.proof).map_err(|e| e.to_string()));
        match proof {
            Ok(p) => self.update(&p),
            Err(message) => self.fail(AuditError::Malformed { path, message }),
        }
    }

    /// The consistency verdict, then the witness verdict and the inclusion phase.
    fn update(&mut self, proof: &[Hash]) {
        let note = std::mem::take(&mut self.note);
        match self.client.update(&note, proof) {
            Ok(_) => self.report.consistent = true,
            Err(ClientError::Equivocation { size, proof }) => {
                self.report.equivocation = Some(*proof);
                self.fail(AuditError::Equivocation(size));
            }
            Err(e) => self.fail(AuditError::Checkpoint(e)),
        }
        self.report.witnessed =
            self.report.consistent && self.report.cosigners.len() >= self.report.quorum;
        self.phase = if self.report.consistent && !self.leaves.is_empty() {
            Phase::Inclusion(0)
        } else {
            Phase::Done
        };
    }

    fn on_inclusion(&mut self, i: usize, path: String, status: u16, body: &[u8]) {
        self.phase = if i + 1 < self.leaves.len() {
            Phase::Inclusion(i + 1)
        } else {
            Phase::Done
        };
        match status {
            200 => {}
            // Not in this log, or not below this checkpoint's size yet.
            404 => return,
            _ => return self.fail(AuditError::Status { path, status }),
        }
        let parsed = serde_json::from_slice::<InclusionResponse>(body)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                api::decode_proof(&r.proof)
                    .map(|p| (r.index, p))
                    .map_err(|e| e.to_string())
            });
        let (index, proof) = match parsed {
            Ok(x) => x,
            Err(message) => return self.fail(AuditError::Malformed { path, message }),
        };
        let (Some(sc), Some(leaf)) = (&self.report.checkpoint, self.leaves.get(i)) else {
            return;
        };
        if LightClient::verify_inclusion(&sc.checkpoint, index, leaf, &proof).is_ok() {
            if let Some(slot) = self.report.included.get_mut(i) {
                *slot = Some(index);
            }
        } else {
            self.fail(AuditError::BadInclusion(index));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::encode_proof;
    use crate::checkpoint::{Checkpoint, cosign};
    use crate::note::{Ed25519Signer, NoteSigner};
    use crate::{MemoryTree, prove_consistency, prove_inclusion};

    /// A relay's log API in memory: the tree, the log key, the cosigning witnesses, and a
    /// switch to serve a fork or tampered proofs.
    struct FakeLog {
        tree: MemoryTree,
        log: Ed25519Signer,
        cosigners: Vec<Ed25519Signer>,
        /// Serve this checkpoint note instead of one for `tree`.
        fork_note: Option<String>,
        bad_proofs: bool,
        requests: Vec<String>,
    }

    fn signer(name: &str, b: u8) -> Ed25519Signer {
        Ed25519Signer::from_seed(name, &[b; 32]).expect("signer")
    }

    fn note_for(log: &Ed25519Signer, ws: &[Ed25519Signer], size: u64, root: Hash) -> String {
        let mut n = Checkpoint::new(log.name(), size, root)
            .sign(log)
            .expect("sign");
        for w in ws {
            let c = cosign(w, &n.text, 1_700_000_000 + size);
            n.add_signature(c);
        }
        n.to_text()
    }

    fn query(path: &str, key: &str) -> Option<String> {
        path.split_once('?')?
            .1
            .split('&')
            .find_map(|kv| kv.strip_prefix(&format!("{key}=")[..]).map(str::to_owned))
    }

    impl FakeLog {
        fn new(leaves: usize, cosigners: usize) -> Self {
            let mut tree = MemoryTree::new();
            for i in 0..leaves {
                tree.push(format!("receipt {i}").as_bytes());
            }
            Self {
                tree,
                log: signer("relay-a.example/log", 1),
                cosigners: (0..cosigners)
                    .map(|i| signer(&format!("w{i}"), 10 + i as u8))
                    .collect(),
                fork_note: None,
                bad_proofs: false,
                requests: Vec::new(),
            }
        }

        fn key(&self) -> NoteVerifier {
            NoteVerifier::new(self.log.name(), self.log.public_key()).expect("verifier")
        }

        fn witnesses(&self) -> Vec<CosignatureVerifier> {
            self.cosigners
                .iter()
                .map(|w| CosignatureVerifier::new(w.name(), w.public_key()).expect("cosigner"))
                .collect()
        }

        fn note(&self) -> String {
            self.fork_note.clone().unwrap_or_else(|| {
                note_for(
                    &self.log,
                    &self.cosigners,
                    self.tree.size(),
                    self.tree.root(),
                )
            })
        }

        fn get(&mut self, path: &str) -> (u16, Vec<u8>) {
            self.requests.push(path.to_owned());
            let json = |v: serde_json::Value| (200, v.to_string().into_bytes());
            if path == api::CHECKPOINT {
                return (200, self.note().into_bytes());
            }
            if path.starts_with(api::PROOF_CONSISTENCY) {
                let old: u64 = query(path, "old").and_then(|v| v.parse().ok()).unwrap_or(0);
                let new: u64 = query(path, "new").and_then(|v| v.parse().ok()).unwrap_or(0);
                let mut proof = prove_consistency(&self.tree, old, new).expect("proof");
                if self.bad_proofs
                    && let Some(h) = proof.first_mut()
                {
                    h[0] ^= 1;
                }
                return json(
                    serde_json::json!({"old": old, "new": new, "proof": encode_proof(&proof)}),
                );
            }
            if path.starts_with(api::PROOF_INCLUSION) {
                let leaf = query(path, "leaf_hash").unwrap_or_default();
                let size: u64 = query(path, "size")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let found = (0..size.min(self.tree.size())).find(|&i| {
                    hex::encode(crate::leaf_hash(format!("receipt {i}").as_bytes())) == leaf
                });
                let Some(index) = found else {
                    return (404, b"not found".to_vec());
                };
                let mut proof = prove_inclusion(&self.tree, index, size).expect("proof");
                if self.bad_proofs
                    && let Some(h) = proof.first_mut()
                {
                    h[0] ^= 1;
                }
                return json(
                    serde_json::json!({"index": index, "size": size, "proof": encode_proof(&proof)}),
                );
            }
            (404, Vec::new())
        }

        /// Drives an audit to its end, as `remote.rs` and `light.rs` do.
        fn audit(&mut self, quorum: usize, last: Option<&str>, leaves: Vec<Hash>) -> AuditReport {
            let mut a = Audit::new(self.key(), self.witnesses(), quorum, last, leaves);
            while let Some(path) = a.next_request() {
                let (status, body) = self.get(&path);
                a.on_response(status, &body);
            }
            a.finish()
        }
    }

    fn leaf(i: usize) -> Hash {
        crate::leaf_hash(format!("receipt {i}").as_bytes())
    }

    #[test]
    fn included_and_witnessed_and_an_unknown_leaf_is_not() {
        let mut log = FakeLog::new(5, 3);
        let r = log.audit(2, None, vec![leaf(3), [7; 32], leaf(0)]);
        assert_eq!(r.error, None);
        assert_eq!(r.cosigners, vec!["w0", "w1", "w2"]);
        assert!(r.consistent && r.witnessed);
        assert_eq!(r.included, vec![Some(3), None, Some(0)]);
        assert_eq!(r.checkpoint.as_ref().map(|c| c.checkpoint.size), Some(5));
        // checkpoint, then one inclusion request per leaf; no consistency proof without a last.
        assert_eq!(log.requests.len(), 4);
        assert_eq!(log.requests[0], api::CHECKPOINT);
    }

    #[test]
    fn short_of_quorum_is_reported_but_proofs_still_checked() {
        let mut log = FakeLog::new(4, 1);
        let r = log.audit(2, None, vec![leaf(1)]);
        assert!(r.consistent && !r.witnessed);
        assert_eq!(r.short_of_quorum(), Some((1, 2)));
        assert_eq!(r.error, None);
        assert_eq!(r.included, vec![Some(1)]);
    }

    #[test]
    fn growth_is_checked_against_the_last_checkpoint() {
        let mut log = FakeLog::new(3, 2);
        let first = log.audit(2, None, Vec::new());
        let last = first.checkpoint.expect("checkpoint").note.to_text();
        for i in 3..9 {
            log.tree.push(format!("receipt {i}").as_bytes());
        }
        log.requests.clear();
        let r = log.audit(2, Some(&last), vec![leaf(7)]);
        assert_eq!(r.error, None, "{r:?}");
        assert!(r.witnessed);
        assert_eq!(r.included, vec![Some(7)]);
        assert_eq!(log.requests[1], api::consistency_path(3, 9));

        // A consistency proof that does not verify: refused, and no inclusion is asked for.
        log.tree.push(b"receipt 9");
        log.bad_proofs = true;
        log.requests.clear();
        let r = log.audit(2, Some(&last), vec![leaf(7)]);
        assert!(
            matches!(
                r.error,
                Some(AuditError::Checkpoint(ClientError::Inconsistent(_)))
            ),
            "{r:?}"
        );
        assert!(!r.consistent && !r.witnessed);
        assert_eq!(r.included, vec![None]);
        assert_eq!(log.requests.len(), 2);
    }

    #[test]
    fn a_fork_of_the_same_size_is_an_equivocation_with_its_proof() {
        let mut log = FakeLog::new(4, 2);
        let honest = log
            .audit(0, None, Vec::new())
            .checkpoint
            .expect("cp")
            .note
            .to_text();
        log.fork_note = Some(note_for(&log.log, &log.cosigners, 4, [9; 32]));
        let r = log.audit(0, Some(&honest), vec![leaf(1)]);
        assert_eq!(r.error, Some(AuditError::Equivocation(4)));
        let proof = r.equivocation.expect("equivocation proof");
        assert!(proof.verify(&log.key()).is_ok());
        assert!(!r.witnessed);
        assert_eq!(r.included, vec![None]);
    }

    #[test]
    fn a_rollback_is_refused() {
        let mut log = FakeLog::new(6, 0);
        let last = log
            .audit(0, None, Vec::new())
            .checkpoint
            .expect("cp")
            .note
            .to_text();
        log.fork_note = Some(note_for(&log.log, &[], 2, [1; 32]));
        let r = log.audit(0, Some(&last), Vec::new());
        assert!(matches!(
            r.error,
            Some(AuditError::Checkpoint(ClientError::Rollback {
                last: 6,
                new: 2
            }))
        ));
    }

    #[test]
    fn hostile_answers_end_in_typed_errors_never_a_panic() {
        let log = FakeLog::new(2, 1);
        let run = |answers: &[(u16, &[u8])]| {
            let mut a = Audit::new(log.key(), log.witnesses(), 1, None, vec![leaf(0)]);
            for (status, body) in answers {
                if a.next_request().is_none() {
                    break;
                }
                a.on_response(*status, body);
            }
            a.finish()
        };
        let r = run(&[(503, b"busy")]);
        assert_eq!(
            r.error,
            Some(AuditError::Status {
                path: api::CHECKPOINT.into(),
                status: 503
            })
        );
        let r = run(&[(200, b"\xff\xfe not a note")]);
        assert!(matches!(r.error, Some(AuditError::Checkpoint(_))), "{r:?}");
        // A note signed by another key.
        let other = note_for(&signer("relay-a.example/log", 2), &[], 2, log.tree.root());
        let r = run(&[(200, other.as_bytes())]);
        assert!(matches!(r.error, Some(AuditError::Checkpoint(_))), "{r:?}");
        // A good checkpoint, then garbage and a proof too long for any tree.
        let good = log.note();
        let r = run(&[(200, good.as_bytes()), (200, b"{\"index\": 0")]);
        assert!(
            matches!(r.error, Some(AuditError::Malformed { .. })),
            "{r:?}"
        );
        let long =
            serde_json::json!({"index": 0, "size": 2, "proof": encode_proof(&vec![[0; 32]; 65])});
        let r = run(&[(200, good.as_bytes()), (200, long.to_string().as_bytes())]);
        assert!(
            matches!(r.error, Some(AuditError::Malformed { .. })),
            "{r:?}"
        );
        assert_eq!(r.included, vec![None]);
        // A proof that parses but does not verify.
        let wrong = serde_json::json!({"index": 1, "size": 2, "proof": encode_proof(&[[3; 32]])});
        let r = run(&[(200, good.as_bytes()), (200, wrong.to_string().as_bytes())]);
        assert_eq!(r.error, Some(AuditError::BadInclusion(1)));
        // No answer at all.
        let mut a = Audit::new(log.key(), log.witnesses(), 1, None, vec![leaf(0)]);
        a.on_transport_error("connection refused");
        assert_eq!(a.next_request(), None);
        assert!(matches!(
            a.finish().error,
            Some(AuditError::Transport { .. })
        ));
    }

    #[test]
    fn a_last_checkpoint_of_another_log_is_ignored() {
        let mut log = FakeLog::new(3, 1);
        let foreign = note_for(&signer("relay-b.example/log", 5), &[], 9, [4; 32]);
        let r = log.audit(1, Some(&foreign), vec![leaf(2)]);
        assert_eq!(r.error, None);
        assert!(r.witnessed);
        assert_eq!(r.included, vec![Some(2)]);
    }
}
