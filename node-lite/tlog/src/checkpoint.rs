//! C2SP `tlog-checkpoint` (<https://c2sp.org/tlog-checkpoint>), C2SP `tlog-cosignature`
//! (<https://c2sp.org/tlog-cosignature>, cosignature/v1) and equivocation proofs.
//!
//! Checkpoint body:
//! ```text
//! <origin>\n<decimal size>\n<base64 root>\n[<extension line>\n]*
//! ```
//! A cosignature/v1 signs `cosignature/v1\ntime <t>\n<checkpoint body>`; its note signature
//! bytes are `timestamp (8 bytes, big endian) || Ed25519 signature (64 bytes)` under a key id
//! computed with alg `0x04`.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;

use super::Hash;
use super::note::{
    ALG_COSIGNATURE_V1, Note, NoteError, NoteSignature, NoteSigner, NoteVerifier, ed25519_verify,
    is_valid_name, key_id, parse_verifier_key, verifier_key_text,
};

/// Why a checkpoint could not be parsed, verified or used as an equivocation proof.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum CheckpointError {
    /// The body breaks the checkpoint grammar (the rule violated).
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// The enclosing signed note is malformed or its log signature does not verify.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// Validly signed, but for a different log than the one expected.
    #[error("checkpoint is for origin {got:?}, expected {want:?}")]
    WrongOrigin {
        /// Origin line of the checkpoint.
        got: String,
        /// Origin required (the given one, or the log key's name).
        want: String,
    },
    /// Both checkpoints verify but do not conflict (the reason: `different sizes`, `same root`).
    #[error("not an equivocation: {0}")]
    NotEquivocation(&'static str),
}

/// A tree head as a C2SP checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's identity line (by convention the log key's name); non-empty, first line.
    pub origin: String,
    /// Tree size: number of leaves the root covers (decimal, second line).
    pub size: u64,
    /// RFC 9162 root hash of the first `size` leaves (base64, third line).
    pub root: Hash,
    /// Extension lines (without newlines); usually empty.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// A checkpoint without extension lines.
    pub fn new(origin: &str, size: u64, root: Hash) -> Self {
        Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions: Vec::new(),
        }
    }

    /// The body text that gets signed: origin, size, base64 root, extensions, each `\n`-ended.
    pub fn to_body(&self) -> String {
        let mut s = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.size,
            B64.encode(self.root)
        );
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Strict inverse of [`Checkpoint::to_body`]: canonical decimal size, 32-byte root,
    /// trailing newline, no empty extension lines.
    pub fn parse_body(body: &str) -> Result<Self, CheckpointError> {
        let body = body
            .strip_suffix('\n')
            .ok_or(CheckpointError::Malformed("must end with a newline"))?;
        let mut lines = body.split('\n');
        let origin = lines
            .next()
            .filter(|o| !o.is_empty())
            .ok_or(CheckpointError::Malformed("empty origin"))?;
        let size = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing size"))?;
        // Decimal, no sign, no leading zeros (except "0").
        if size.is_empty()
            || !size.bytes().all(|b| b.is_ascii_digit())
            || (size.len() > 1 && size.starts_with('0'))
        {
            return Err(CheckpointError::Malformed("bad size"));
        }
        let size: u64 = size
            .parse()
            .map_err(|_| CheckpointError::Malformed("bad size"))?;
        let root = lines
            .next()
            .ok_or(CheckpointError::Malformed("missing root"))?;
        let root = B64
            .decode(root)
            .ok()
            .and_then(|r| <[u8; 32]>::try_from(r).ok())
            .ok_or(CheckpointError::Malformed("bad root hash"))?;
        let mut extensions = Vec::new();
        for l in lines {
            if l.is_empty() {
                return Err(CheckpointError::Malformed("empty extension line"));
            }
            extensions.push(l.to_owned());
        }
        Ok(Self {
            origin: origin.to_owned(),
            size,
            root,
            extensions,
        })
    }

    /// Signs this checkpoint as a note with the log key.
    pub fn sign(&self, log: &dyn NoteSigner) -> Result<Note, CheckpointError> {
        let mut n = Note::new(self.to_body())?;
        n.sign(log)?;
        Ok(n)
    }
}

/// A signed checkpoint whose log signature has been verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// The parsed body of `note`.
    pub checkpoint: Checkpoint,
    /// The note as received, with every signature line (log and witnesses).
    pub note: Note,
}

impl SignedCheckpoint {
    /// Parses a note, checks the log's signature and the origin (= the log key's name unless
    /// `origin` is given).
    pub fn verify(
        note_bytes: &[u8],
        log: &NoteVerifier,
        origin: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        let note = Note::parse(note_bytes)?;
        Self::verify_note(note, log, origin)
    }

    /// [`SignedCheckpoint::verify`] for a note that is already parsed.
    pub fn verify_note(
        note: Note,
        log: &NoteVerifier,
        origin: Option<&str>,
    ) -> Result<Self, CheckpointError> {
        log.verify(&note)?;
        let checkpoint = Checkpoint::parse_body(&note.text)?;
        let want = origin.unwrap_or(&log.name);
        if checkpoint.origin != want {
            return Err(CheckpointError::WrongOrigin {
                got: checkpoint.origin,
                want: want.to_owned(),
            });
        }
        Ok(Self { checkpoint, note })
    }
}

/// The message a cosignature/v1 signs.
pub fn cosignature_message(body: &str, timestamp: u64) -> String {
    format!("cosignature/v1\ntime {timestamp}\n{body}")
}

/// Produces a witness cosignature line for `checkpoint_body` at `timestamp` (Unix seconds).
pub fn cosign(witness: &dyn NoteSigner, checkpoint_body: &str, timestamp: u64) -> NoteSignature {
    let sig = witness.sign(cosignature_message(checkpoint_body, timestamp).as_bytes());
    let mut bytes = Vec::with_capacity(72);
    bytes.extend_from_slice(&timestamp.to_be_bytes());
    bytes.extend_from_slice(&sig);
    NoteSignature {
        name: witness.name().to_owned(),
        key_id: key_id(witness.name(), ALG_COSIGNATURE_V1, &witness.public_key()),
        sig: bytes,
    }
}

/// Verifies cosignature/v1 signatures of one witness key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    /// The witness's key name, as it appears on its cosignature lines.
    pub name: String,
    /// Key id of `name` and `public_key` under alg `0x04` (cosignature/v1).
    pub key_id: u32,
    /// The witness's Ed25519 public key.
    pub public_key: [u8; 32],
}

impl CosignatureVerifier {
    /// A verifier for witness `name`; fails with [`NoteError::BadName`] on an invalid name.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::BadName);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_COSIGNATURE_V1, &public_key),
            public_key,
        })
    }

    /// Parses `name+keyid+base64(0x04||key)`.
    pub fn from_key_text(text: &str) -> Result<Self, NoteError> {
        let (name, alg, pk) = parse_verifier_key(text)?;
        if alg != ALG_COSIGNATURE_V1 {
            return Err(NoteError::BadKey);
        }
        Self::new(&name, pk)
    }

    /// The C2SP verifier key text `name+keyid+base64(0x04||key)`.
    pub fn key_text(&self) -> String {
        verifier_key_text(&self.name, ALG_COSIGNATURE_V1, &self.public_key)
    }

    /// Returns the cosignature's timestamp if `sig` is this witness's valid cosignature of
    /// the checkpoint text.
    pub fn verify_sig(&self, checkpoint_body: &str, sig: &NoteSignature) -> Option<u64> {
        if sig.name != self.name || sig.key_id != self.key_id || sig.sig.len() != 72 {
            return None;
        }
        let mut ts = [0u8; 8];
        ts.copy_from_slice(&sig.sig[..8]);
        let ts = u64::from_be_bytes(ts);
        let msg = cosignature_message(checkpoint_body, ts);
        ed25519_verify(&self.public_key, msg.as_bytes(), &sig.sig[8..]).then_some(ts)
    }

    /// The timestamp of a valid cosignature by this witness on `note`, if any.
    pub fn verify(&self, note: &Note) -> Option<u64> {
        note.signatures_by(&self.name, self.key_id)
            .find_map(|s| self.verify_sig(&note.text, s))
    }
}

/// Two checkpoints of one log, both validly signed by its key, with the same size and
/// different roots: proof that the log showed different histories to different parties.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EquivocationProof {
    /// Signed note text of the first checkpoint.
    pub a: String,
    /// Signed note text of the second checkpoint.
    pub b: String,
}

impl EquivocationProof {
    /// Builds a proof when `a` and `b` equivocate (same origin and size, different roots).
    pub fn from_pair(a: &SignedCheckpoint, b: &SignedCheckpoint) -> Option<Self> {
        (a.checkpoint.origin == b.checkpoint.origin
            && a.checkpoint.size == b.checkpoint.size
            && a.checkpoint.root != b.checkpoint.root)
            .then(|| Self {
                a: a.note.to_text(),
                b: b.note.to_text(),
            })
    }

    /// Verifies the proof against the accused log's key. Anyone holding the key can check it.
    pub fn verify(&self, log: &NoteVerifier) -> Result<(Checkpoint, Checkpoint), CheckpointError> {
        let a = SignedCheckpoint::verify(self.a.as_bytes(), log, None)?;
        let b = SignedCheckpoint::verify(self.b.as_bytes(), log, None)?;
        if a.checkpoint.size != b.checkpoint.size {
            return Err(CheckpointError::NotEquivocation("different sizes"));
        }
        if a.checkpoint.root == b.checkpoint.root {
            return Err(CheckpointError::NotEquivocation("same root"));
        }
        Ok((a.checkpoint, b.checkpoint))
    }
}
