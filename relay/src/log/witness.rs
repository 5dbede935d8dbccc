//! Witnessing other relays' logs: C2SP `tlog-witness` `add-checkpoint` semantics.
//!
//! For each known log (origin → Ed25519 verifier key) the witness keeps the latest checkpoint
//! it cosigned. A new checkpoint is cosigned only if its log signature verifies and a
//! consistency proof from the stored size verifies; check-and-store is atomic (one mutex +
//! one redb write transaction, committed before the cosignature is returned). Same size with
//! another root is an equivocation: the two signed notes are stored as an
//! [`EquivocationProof`] and served.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use shoal_tlog::checkpoint::{
    Checkpoint, CosignatureVerifier, EquivocationProof, SignedCheckpoint, cosign,
};
use shoal_tlog::note::{Note, NoteSigner, NoteVerifier};
use shoal_tlog::{Hash, verify_consistency};

/// origin → latest cosigned checkpoint note (as received, log signature included).
const WITNESSED: TableDefinition<&str, &str> = TableDefinition::new("witnessed");
/// (origin, size) → equivocation proof (two notes separated by a NUL byte).
const EQUIVOCATIONS: TableDefinition<(&str, u64), &str> = TableDefinition::new("equivocations");

/// Largest add-checkpoint request body.
pub const MAX_ADD_CHECKPOINT_BYTES: usize = 16 * 1024;
/// Most consistency proof lines accepted (C2SP: at most 63).
pub const MAX_PROOF_LINES: usize = 63;

/// Why an add-checkpoint request was refused (C2SP tlog-witness: each maps to an HTTP status).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WitnessError {
    /// The body or note does not parse, or `old` exceeds the checkpoint's size: 400.
    #[error("malformed request: {0}")]
    BadRequest(String),
    /// The checkpoint's origin line names no log this witness follows: 404.
    #[error("unknown log origin {0:?}")]
    UnknownOrigin(String),
    /// The note carries no valid signature from the log's key: 403.
    #[error("no valid signature from the log's key")]
    Forbidden,
    /// `old` is not the size last cosigned (given here, served as `text/x.tlog.size`): 409.
    #[error("old size does not match the latest cosigned size {0}")]
    Conflict(u64),
    /// Same size as the stored checkpoint (given here) but another root; proof kept: 409.
    #[error("log equivocated at size {0}: same size, different root")]
    Equivocation(u64),
    /// The consistency proof from the stored checkpoint does not verify: 422.
    #[error("consistency proof does not verify")]
    Inconsistent,
    /// redb failed: 500.
    #[error("storage: {0}")]
    Storage(#[from] redb::Error),
}

redb_errors_into!(WitnessError);

/// A parsed add-checkpoint request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddCheckpoint {
    /// The `old` line: size of the checkpoint the submitter believes was last cosigned.
    pub old_size: u64,
    /// Consistency proof from `old_size` to the new checkpoint (at most [`MAX_PROOF_LINES`]).
    pub proof: Vec<Hash>,
    /// The new signed checkpoint note, unparsed (after the blank line).
    pub note: Vec<u8>,
}

impl AddCheckpoint {
    /// `old <size>\n` + base64 proof lines + `\n` + signed checkpoint note.
    pub fn encode(old_size: u64, proof: &[Hash], note: &str) -> String {
        let mut s = format!("old {old_size}\n");
        for p in proof {
            s.push_str(&B64.encode(p));
            s.push('\n');
        }
        s.push('\n');
        s.push_str(note);
        s
    }

    /// Parse a request body (the form [`encode`](Self::encode) writes), at most
    /// [`MAX_ADD_CHECKPOINT_BYTES`]; the note is checked later, by [`Witness::add_checkpoint`].
    pub fn parse(body: &[u8]) -> Result<Self, WitnessError> {
        let bad = |m: &str| WitnessError::BadRequest(m.to_owned());
        if body.len() > MAX_ADD_CHECKPOINT_BYTES {
            return Err(bad("request too large"));
        }
        let text = std::str::from_utf8(body).map_err(|_| bad("not UTF-8"))?;
        let (head, note) = text
            .split_once("\n\n")
            .ok_or_else(|| bad("no blank line"))?;
        let mut lines = head.split('\n');
        let old = lines
            .next()
            .and_then(|l| l.strip_prefix("old "))
            .ok_or_else(|| bad("missing old size line"))?;
        if old.is_empty()
            || !old.bytes().all(|b| b.is_ascii_digit())
            || (old.len() > 1 && old.starts_with('0'))
        {
            return Err(bad("bad old size"));
        }
        let old_size: u64 = old.parse().map_err(|_| bad("bad old size"))?;
        let mut proof = Vec::new();
        for l in lines {
            if proof.len() == MAX_PROOF_LINES {
                return Err(bad("too many proof lines"));
            }
            let h = B64
                .decode(l)
                .ok()
                .and_then(|v| <[u8; 32]>::try_from(v).ok())
                .ok_or_else(|| bad("bad proof line"))?;
            proof.push(h);
        }
        Ok(Self {
            old_size,
            proof,
            note: note.as_bytes().to_vec(),
        })
    }
}

/// A witness over a set of logs.
pub struct Witness {
    db: Arc<Database>,
    signer: Arc<dyn NoteSigner>,
    logs: HashMap<String, NoteVerifier>,
    lock: Mutex<()>,
}

impl Witness {
    /// `logs`: the verifier keys of the logs to witness (origin = key name).
    /// Like [`Self::open`], retrying for up to `wait` while a previous instance in this
    /// process (a relay being restarted) still holds the file.
    pub fn open_retry(
        path: &Path,
        signer: Arc<dyn NoteSigner>,
        logs: Vec<NoteVerifier>,
        wait: std::time::Duration,
    ) -> Result<Arc<Self>, WitnessError> {
        let t0 = std::time::Instant::now();
        loop {
            match Self::open(path, signer.clone(), logs.clone()) {
                Err(WitnessError::Storage(redb::Error::DatabaseAlreadyOpen))
                    if t0.elapsed() < wait =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                r => return r,
            }
        }
    }

    /// Open (or create) the witness database at `path`; `signer` cosigns, `logs` are the
    /// verifier keys of the logs to witness (origin = key name).
    pub fn open(
        path: &Path,
        signer: Arc<dyn NoteSigner>,
        logs: Vec<NoteVerifier>,
    ) -> Result<Arc<Self>, WitnessError> {
        let db = Arc::new(Database::create(path)?);
        let w = db.begin_write()?;
        {
            w.open_table(WITNESSED)?;
            w.open_table(EQUIVOCATIONS)?;
        }
        w.commit()?;
        Ok(Arc::new(Self {
            db,
            signer,
            logs: logs.into_iter().map(|l| (l.name.clone(), l)).collect(),
            lock: Mutex::new(()),
        }))
    }

    /// This witness's cosigner verifier key (`name+id+base64(0x04||key)`).
    pub fn cosigner_key(&self) -> Result<CosignatureVerifier, WitnessError> {
        CosignatureVerifier::new(self.signer.name(), self.signer.public_key())
            .map_err(|e| WitnessError::BadRequest(e.to_string()))
    }

    /// Handles an add-checkpoint request; returns the cosignature line on success.
    pub fn add_checkpoint(
        &self,
        req: &AddCheckpoint,
        now_secs: u64,
    ) -> Result<String, WitnessError> {
        let note = Note::parse(&req.note).map_err(|e| WitnessError::BadRequest(e.to_string()))?;
        let origin = note.text.split('\n').next().unwrap_or_default().to_owned();
        let log = self
            .logs
            .get(&origin)
            .ok_or_else(|| WitnessError::UnknownOrigin(origin.clone()))?;
        let new = SignedCheckpoint::verify_note(note, log, Some(&origin)).map_err(|e| match e {
            shoal_tlog::checkpoint::CheckpointError::Note(_) => WitnessError::Forbidden,
            e => WitnessError::BadRequest(e.to_string()),
        })?;
        if req.old_size > new.checkpoint.size {
            return Err(WitnessError::BadRequest(
                "old size above checkpoint size".into(),
            ));
        }
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let txn = self.db.begin_write()?;
        let result = {
            let mut t = txn.open_table(WITNESSED)?;
            let stored = match t.get(origin.as_str())? {
                Some(g) => Some(
                    SignedCheckpoint::verify(g.value().as_bytes(), log, Some(&origin))
                        .map_err(|e| WitnessError::BadRequest(format!("stored state: {e}")))?,
                ),
                None => None,
            };
            let (stored_size, stored_root) = stored
                .as_ref()
                .map(|s| (s.checkpoint.size, s.checkpoint.root))
                .unwrap_or((0, shoal_tlog::EMPTY_ROOT));
            if stored_size == new.checkpoint.size
                && let Some(s) = &stored
                && s.checkpoint.root != new.checkpoint.root
            {
                let proof = EquivocationProof::from_pair(s, &new);
                if let Some(p) = proof {
                    let mut eq = txn.open_table(EQUIVOCATIONS)?;
                    let v = format!("{}\0{}", p.a, p.b);
                    eq.insert((origin.as_str(), stored_size), v.as_str())?;
                }
                Err(WitnessError::Equivocation(stored_size))
            } else if req.old_size != stored_size {
                Err(WitnessError::Conflict(stored_size))
            } else if (stored_size == 0 && !req.proof.is_empty())
                || (stored_size > 0
                    && verify_consistency(
                        stored_size,
                        new.checkpoint.size,
                        &stored_root,
                        &new.checkpoint.root,
                        &req.proof,
                    )
                    .is_err())
            {
                Err(WitnessError::Inconsistent)
            } else {
                // Store the log-signed checkpoint only (cosignatures of others dropped).
                let mut own = new.note.clone();
                own.sigs
                    .retain(|s| s.name == log.name && s.key_id == log.key_id);
                t.insert(origin.as_str(), own.to_text().as_str())?;
                Ok(cosign(self.signer.as_ref(), &new.note.text, now_secs).to_line())
            }
        };
        // Commit in every case: an equivocation proof must be kept.
        txn.commit()?;
        result
    }

    /// The latest cosigned checkpoint of `origin`, with this witness's cosignature.
    pub fn cosigned(&self, origin: &str, now_secs: u64) -> Result<Option<String>, WitnessError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(WITNESSED)?;
        let Some(g) = t.get(origin)? else {
            return Ok(None);
        };
        let Ok(mut note) = Note::parse(g.value().as_bytes()) else {
            return Ok(None);
        };
        let c = cosign(self.signer.as_ref(), &note.text, now_secs);
        note.add_signature(c);
        Ok(Some(note.to_text()))
    }

    /// Size and root of the latest checkpoint of `origin` this witness cosigned.
    pub fn latest(&self, origin: &str) -> Result<Option<(u64, Hash)>, WitnessError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(WITNESSED)?;
        let Some(g) = t.get(origin)? else {
            return Ok(None);
        };
        let Ok(note) = Note::parse(g.value().as_bytes()) else {
            return Ok(None);
        };
        Ok(Checkpoint::parse_body(&note.text)
            .ok()
            .map(|c| (c.size, c.root)))
    }

    /// Whether this witness knows (witnesses) `origin`.
    pub fn knows(&self, origin: &str) -> bool {
        self.logs.contains_key(origin)
    }

    /// Number of equivocation proofs stored.
    pub fn equivocation_count(&self) -> Result<u64, WitnessError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(EQUIVOCATIONS)?;
        Ok(t.len()?)
    }

    /// All equivocation proofs caught so far.
    pub fn equivocations(&self) -> Result<Vec<EquivocationProof>, WitnessError> {
        let r = self.db.begin_read()?;
        let t = r.open_table(EQUIVOCATIONS)?;
        let mut out = Vec::new();
        for item in t.iter()? {
            let (_, v) = item?;
            if let Some((a, b)) = v.value().split_once('\0') {
                out.push(EquivocationProof {
                    a: a.to_owned(),
                    b: b.to_owned(),
                });
            }
        }
        Ok(out)
    }
}
