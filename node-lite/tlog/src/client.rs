//! The light client: what a browser tab or a phone runs to trust a relay's log without
//! storing it. It keeps only the last checkpoint it accepted (the caller persists it, e.g. in
//! IndexedDB, via [`LightClient::last`] / [`LightClient::with_last`]).
//!
//! A checkpoint is accepted when
//! 1. the log's Ed25519 signature verifies and the origin is the log's,
//! 2. at least `quorum` distinct configured witnesses cosigned it (cosignature/v1),
//! 3. it does not go backwards, and is consistent (RFC 9162 consistency proof) with the last
//!    accepted checkpoint; the same size with another root is an equivocation, returned as a
//!    verifiable [`EquivocationProof`].

use super::checkpoint::{
    Checkpoint, CheckpointError, CosignatureVerifier, EquivocationProof, SignedCheckpoint,
};
use super::note::{Note, NoteVerifier};
use super::{Hash, ProofError, verify_consistency, verify_inclusion};

/// Why the light client refused a checkpoint or an inclusion proof.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientError {
    /// The note does not parse, the log signature fails, or the origin is wrong.
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    /// Too few distinct configured witnesses cosigned the checkpoint.
    #[error("only {got} of the required {need} witness cosignatures")]
    Quorum {
        /// Distinct configured witnesses with a valid cosignature.
        got: usize,
        /// The client's configured quorum.
        need: usize,
    },
    /// The new checkpoint is smaller than the last accepted one.
    #[error("checkpoint goes backwards: size {new} < last seen {last}")]
    Rollback {
        /// Tree size of the last accepted checkpoint.
        last: u64,
        /// Tree size of the refused checkpoint.
        new: u64,
    },
    /// The consistency proof from the last accepted checkpoint did not verify.
    #[error("inconsistent with the last checkpoint: {0}")]
    Inconsistent(ProofError),
    /// The log signed two different roots for one size: the log is caught lying.
    #[error("log equivocated at size {size}")]
    Equivocation {
        /// The tree size both checkpoints claim.
        size: u64,
        /// Both signed notes, checkable by anyone with the log key (worth publishing).
        proof: Box<EquivocationProof>,
    },
    /// [`LightClient::verify_inclusion`] failed: the leaf is not at that index under that root.
    #[error("inclusion proof failed: {0}")]
    Inclusion(ProofError),
}

/// Trust settings plus the last accepted checkpoint.
#[derive(Debug, Clone)]
pub struct LightClient {
    log: NoteVerifier,
    origin: String,
    witnesses: Vec<CosignatureVerifier>,
    quorum: usize,
    last: Option<SignedCheckpoint>,
}

impl LightClient {
    /// `origin` defaults to the log key's name (the relay convention).
    pub fn new(
        log: NoteVerifier,
        origin: Option<&str>,
        witnesses: Vec<CosignatureVerifier>,
        quorum: usize,
    ) -> Self {
        let origin = origin.unwrap_or(&log.name).to_owned();
        Self {
            log,
            origin,
            witnesses,
            quorum,
            last: None,
        }
    }

    /// Restores the last accepted checkpoint (as persisted signed-note text). It is
    /// re-verified (log signature only: witnesses may have rotated since).
    pub fn with_last(mut self, note: &[u8]) -> Result<Self, ClientError> {
        self.last = Some(SignedCheckpoint::verify(
            note,
            &self.log,
            Some(&self.origin),
        )?);
        Ok(self)
    }

    /// The last accepted checkpoint (persist `note.to_text()` to restore it with
    /// [`LightClient::with_last`]); `None` before the first accepted one.
    pub fn last(&self) -> Option<&SignedCheckpoint> {
        self.last.as_ref()
    }

    /// Checks signature, origin and witness quorum; does not touch the client's state.
    pub fn check_checkpoint(&self, note: &[u8]) -> Result<SignedCheckpoint, ClientError> {
        let note = Note::parse(note).map_err(CheckpointError::from)?;
        let sc = SignedCheckpoint::verify_note(note, &self.log, Some(&self.origin))?;
        let got = self.count_cosignatures(&sc.note);
        if got < self.quorum {
            return Err(ClientError::Quorum {
                got,
                need: self.quorum,
            });
        }
        Ok(sc)
    }

    /// Number of distinct configured witnesses with a valid cosignature on `note`.
    pub fn count_cosignatures(&self, note: &Note) -> usize {
        let mut seen: Vec<&[u8; 32]> = Vec::new();
        for w in &self.witnesses {
            if seen.contains(&&w.public_key) {
                continue;
            }
            if w.verify(note).is_some() {
                seen.push(&w.public_key);
            }
        }
        seen.len()
    }

    /// Accepts a new checkpoint given a consistency proof from the last accepted one (ignored
    /// when there is none). On success it becomes the last accepted checkpoint.
    ///
    /// Equivocation is checked right after the log signature and *before* the witness quorum:
    /// two notes signed by the log key with one size and two roots are proof on their own, even
    /// when the fork carries no cosignature (honest witnesses refuse to cosign it).
    pub fn update(
        &mut self,
        note: &[u8],
        consistency_proof: &[Hash],
    ) -> Result<&SignedCheckpoint, ClientError> {
        let parsed = Note::parse(note).map_err(CheckpointError::from)?;
        let new = SignedCheckpoint::verify_note(parsed, &self.log, Some(&self.origin))?;
        if let Some(last) = &self.last {
            let (l, n) = (&last.checkpoint, &new.checkpoint);
            if n.size == l.size && n.root != l.root {
                let proof = EquivocationProof::from_pair(last, &new).ok_or(
                    ClientError::Checkpoint(CheckpointError::NotEquivocation("unreachable")),
                )?;
                return Err(ClientError::Equivocation {
                    size: n.size,
                    proof: Box::new(proof),
                });
            }
        }
        let got = self.count_cosignatures(&new.note);
        if got < self.quorum {
            return Err(ClientError::Quorum {
                got,
                need: self.quorum,
            });
        }
        if let Some(last) = &self.last {
            let (l, n) = (&last.checkpoint, &new.checkpoint);
            if n.size < l.size {
                return Err(ClientError::Rollback {
                    last: l.size,
                    new: n.size,
                });
            }
            verify_consistency(l.size, n.size, &l.root, &n.root, consistency_proof)
                .map_err(ClientError::Inconsistent)?;
        }
        Ok(self.last.insert(new))
    }

    /// Verifies that the leaf `leaf_hash` sits at `index` in the tree of `checkpoint`.
    pub fn verify_inclusion(
        checkpoint: &Checkpoint,
        index: u64,
        leaf_hash: &Hash,
        proof: &[Hash],
    ) -> Result<(), ClientError> {
        verify_inclusion(index, checkpoint.size, leaf_hash, proof, &checkpoint.root)
            .map_err(ClientError::Inclusion)
    }
}
