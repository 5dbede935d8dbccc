//! C2SP `signed-note` (<https://c2sp.org/signed-note>): a UTF-8 text ending in a newline, a
//! blank line, then one or more lines `— <name> <base64(key id (4 bytes, big endian) ||
//! signature)>`.
//!
//! Key ids are `SHA-256(name || 0x0A || alg || public key)[:4]`; the verifier key text is
//! `name+hex(key id)+base64(alg || public key)`. Ed25519 is alg `0x01`; witness cosignatures
//! (cosignature/v1, see [`super::checkpoint`]) are alg `0x04`.
//!
//! Signing goes through the [`NoteSigner`] trait so the relay can plug in its own identity
//! (libsodium natively); [`Ed25519Signer`] is the pure-Rust implementation (same bytes).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

/// Signature algorithm byte for plain Ed25519 note signatures.
pub const ALG_ED25519: u8 = 0x01;
/// Signature algorithm byte for C2SP tlog-cosignature (cosignature/v1) witness signatures.
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// Largest note accepted, in bytes (checkpoints are a few hundred bytes plus signatures).
pub const MAX_NOTE_BYTES: usize = 64 * 1024;
/// Most signature lines accepted on one note.
pub const MAX_NOTE_SIGNATURES: usize = 100;

const SIG_PREFIX: &str = "\u{2014} ";

/// Why a note, signature line or verifier key was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq, Clone)]
#[non_exhaustive]
pub enum NoteError {
    /// The note or a signature line breaks the format or a size limit (the rule violated).
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// A verifier key text that does not parse, has a wrong key id or the wrong algorithm.
    #[error("malformed verifier key")]
    BadKey,
    /// A key name that is empty or contains whitespace or `+`.
    #[error("invalid key name")]
    BadName,
    /// The note carries no signature line for the required key (its name).
    #[error("no valid signature from {0}")]
    Unsigned(String),
    /// A signature line claims the required key but does not verify (the key's name).
    #[error("invalid signature from {0}")]
    BadSignature(String),
}

/// Whether `name` is a valid key name: non-empty, no Unicode whitespace, no `+`.
pub fn is_valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+')
}

/// `SHA-256(name || "\n" || alg || key)[:4]` as a big-endian integer.
pub fn key_id(name: &str, alg: u8, public_key: &[u8; 32]) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key);
    let d = h.finalize();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// `name+hexkeyid+base64(alg||key)`.
pub fn verifier_key_text(name: &str, alg: u8, public_key: &[u8; 32]) -> String {
    let mut k = Vec::with_capacity(33);
    k.push(alg);
    k.extend_from_slice(public_key);
    format!(
        "{name}+{:08x}+{}",
        key_id(name, alg, public_key),
        B64.encode(k)
    )
}

/// Parses `name+hexkeyid+base64(alg||key)`, checking the key id. Returns (name, alg, key).
pub fn parse_verifier_key(text: &str) -> Result<(String, u8, [u8; 32]), NoteError> {
    let mut it = text.trim().splitn(3, '+');
    let (Some(name), Some(id), Some(key)) = (it.next(), it.next(), it.next()) else {
        return Err(NoteError::BadKey);
    };
    if !is_valid_name(name) || id.len() != 8 {
        return Err(NoteError::BadKey);
    }
    let id = u32::from_str_radix(id, 16).map_err(|_| NoteError::BadKey)?;
    let raw = B64.decode(key).map_err(|_| NoteError::BadKey)?;
    if raw.len() != 33 {
        return Err(NoteError::BadKey);
    }
    let alg = raw[0];
    let mut pk = [0u8; 32];
    pk.copy_from_slice(&raw[1..]);
    if key_id(name, alg, &pk) != id {
        return Err(NoteError::BadKey);
    }
    Ok((name.to_owned(), alg, pk))
}

/// One signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// Name of the signing key (no whitespace, no `+`).
    pub name: String,
    /// The first 4 bytes of the base64 blob: [`key_id`] of the signing key, big endian.
    pub key_id: u32,
    /// The signature bytes after the key id (64 for Ed25519, 72 for cosignature/v1).
    pub sig: Vec<u8>,
}

impl NoteSignature {
    /// The line `— <name> <base64(key id || sig)>`, newline included.
    pub fn to_line(&self) -> String {
        let mut b = Vec::with_capacity(4 + self.sig.len());
        b.extend_from_slice(&self.key_id.to_be_bytes());
        b.extend_from_slice(&self.sig);
        format!("{SIG_PREFIX}{} {}\n", self.name, B64.encode(b))
    }

    /// Parses one line (without its trailing newline).
    pub fn parse_line(line: &str) -> Result<Self, NoteError> {
        let rest = line.strip_prefix(SIG_PREFIX).ok_or(NoteError::Malformed(
            "signature line must start with an em dash",
        ))?;
        let (name, b64) = rest
            .split_once(' ')
            .ok_or(NoteError::Malformed("signature line without a space"))?;
        if !is_valid_name(name) {
            return Err(NoteError::BadName);
        }
        let raw = B64
            .decode(b64)
            .map_err(|_| NoteError::Malformed("signature is not base64"))?;
        if raw.len() < 5 {
            return Err(NoteError::Malformed("signature too short"));
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]),
            sig: raw[4..].to_vec(),
        })
    }
}

/// A note: text plus signatures. The text always ends with a newline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    /// The signed text, ending in `\n`, no control characters, at most [`MAX_NOTE_BYTES`].
    pub text: String,
    /// Signature lines in order (at most [`MAX_NOTE_SIGNATURES`] when parsed).
    pub sigs: Vec<NoteSignature>,
}

fn check_text(text: &str) -> Result<(), NoteError> {
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text must end with a newline"));
    }
    if text.chars().any(|c| c < ' ' && c != '\n') {
        return Err(NoteError::Malformed("control character in text"));
    }
    Ok(())
}

impl Note {
    /// An unsigned note; `text` must end with a newline and fit [`MAX_NOTE_BYTES`].
    pub fn new(text: impl Into<String>) -> Result<Self, NoteError> {
        let text = text.into();
        check_text(&text)?;
        if text.len() > MAX_NOTE_BYTES {
            return Err(NoteError::Malformed("note too large"));
        }
        Ok(Self {
            text,
            sigs: Vec::new(),
        })
    }

    /// Parses a signed note (text, blank line, signature lines); checks format only, not
    /// signatures.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::Malformed("note too large"));
        }
        let s = core::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        let (text, sigs) = s
            .rsplit_once("\n\n")
            .ok_or(NoteError::Malformed("no signature block"))?;
        let text = format!("{text}\n");
        check_text(&text)?;
        let sigs = sigs.strip_suffix('\n').ok_or(NoteError::Malformed(
            "signature block must end with a newline",
        ))?;
        let mut out = Vec::new();
        for line in sigs.split('\n') {
            if out.len() == MAX_NOTE_SIGNATURES {
                return Err(NoteError::Malformed("too many signatures"));
            }
            out.push(NoteSignature::parse_line(line)?);
        }
        Ok(Self { text, sigs: out })
    }

    /// The note as served: text, a blank line, then every signature line.
    pub fn to_text(&self) -> String {
        let mut s = String::with_capacity(self.text.len() + 1 + self.sigs.len() * 110);
        s.push_str(&self.text);
        s.push('\n');
        for sig in &self.sigs {
            s.push_str(&sig.to_line());
        }
        s
    }

    /// Adds (or replaces) a signature by `(name, key id)`.
    pub fn add_signature(&mut self, sig: NoteSignature) {
        self.sigs
            .retain(|s| !(s.name == sig.name && s.key_id == sig.key_id));
        self.sigs.push(sig);
    }

    /// Signs the text with `signer` and adds the signature.
    pub fn sign(&mut self, signer: &dyn NoteSigner) -> Result<(), NoteError> {
        if !is_valid_name(signer.name()) {
            return Err(NoteError::BadName);
        }
        let sig = signer.sign(self.text.as_bytes());
        self.add_signature(NoteSignature {
            name: signer.name().to_owned(),
            key_id: key_id(signer.name(), ALG_ED25519, &signer.public_key()),
            sig: sig.to_vec(),
        });
        Ok(())
    }

    /// The signatures matching `(name, key_id)`.
    pub fn signatures_by<'a>(
        &'a self,
        name: &'a str,
        key_id: u32,
    ) -> impl Iterator<Item = &'a NoteSignature> + 'a {
        self.sigs
            .iter()
            .filter(move |s| s.name == name && s.key_id == key_id)
    }
}

/// Something that signs with an Ed25519 key under a key name. The relay's identity module
/// implements this at merge; [`Ed25519Signer`] is the pure-Rust implementation.
pub trait NoteSigner: Send + Sync {
    /// Key name on signature lines (for a log: its checkpoint origin).
    fn name(&self) -> &str;
    /// The Ed25519 public key, used for key ids and verifier keys.
    fn public_key(&self) -> [u8; 32];
    /// A plain Ed25519 signature of `msg` (RFC 8032; libsodium `crypto_sign_detached`).
    fn sign(&self, msg: &[u8]) -> [u8; 64];
}

/// Ed25519 through ed25519-dalek (byte-identical to libsodium).
pub struct Ed25519Signer {
    name: String,
    key: SigningKey,
}

impl Ed25519Signer {
    /// `seed` is the 32-byte Ed25519 seed (libsodium `sk[..32]`).
    pub fn from_seed(name: &str, seed: &[u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::BadName);
        }
        Ok(Self {
            name: name.to_owned(),
            key: SigningKey::from_bytes(seed),
        })
    }

    /// The C2SP verifier key for this signer's note signatures.
    pub fn verifier_key(&self) -> String {
        verifier_key_text(&self.name, ALG_ED25519, &self.public_key())
    }

    /// The C2SP verifier key for this signer used as a cosigning witness.
    pub fn cosigner_key(&self) -> String {
        verifier_key_text(&self.name, ALG_COSIGNATURE_V1, &self.public_key())
    }
}

impl NoteSigner for Ed25519Signer {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.verifying_key().to_bytes()
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).to_bytes()
    }
}

/// A node's or relay's long-term identity ([`shoal_proto::identity::Keypair`]: libsodium natively
/// with feature `sodium`, ed25519-dalek otherwise; byte-identical) as a note signer, so one
/// key signs the relay handshake, its checkpoints (alg `0x01`) and its cosignatures (`0x04`).
pub struct KeypairSigner {
    name: String,
    key: shoal_proto::identity::Keypair,
}

impl KeypairSigner {
    /// `name` is the key name in notes (for a relay: its checkpoint origin).
    pub fn new(name: &str, key: shoal_proto::identity::Keypair) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::BadName);
        }
        Ok(Self {
            name: name.to_owned(),
            key,
        })
    }

    /// The C2SP verifier key for this signer's note signatures (`name+keyid+base64`).
    pub fn verifier_key(&self) -> String {
        verifier_key_text(&self.name, ALG_ED25519, &self.public_key())
    }

    /// The C2SP verifier key for this signer used as a cosigning witness.
    pub fn cosigner_key(&self) -> String {
        verifier_key_text(&self.name, ALG_COSIGNATURE_V1, &self.public_key())
    }
}

impl NoteSigner for KeypairSigner {
    fn name(&self) -> &str {
        &self.name
    }
    fn public_key(&self) -> [u8; 32] {
        self.key.peer_id().0
    }
    fn sign(&self, msg: &[u8]) -> [u8; 64] {
        self.key.sign(msg).0
    }
}

/// Verifies plain Ed25519 signatures (strict: rejects malleable and small-order encodings).
pub fn ed25519_verify(public_key: &[u8; 32], msg: &[u8], sig: &[u8]) -> bool {
    let Ok(sig) = <[u8; 64]>::try_from(sig) else {
        return false;
    };
    let Ok(vk) = VerifyingKey::from_bytes(public_key) else {
        return false;
    };
    vk.verify_strict(msg, &ed25519_dalek::Signature::from_bytes(&sig))
        .is_ok()
}

/// A note verifier for one Ed25519 (alg 0x01) key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    /// The key's name, as it appears on signature lines.
    pub name: String,
    /// Key id of `name` and `public_key` under alg `0x01`.
    pub key_id: u32,
    /// The Ed25519 public key.
    pub public_key: [u8; 32],
}

impl NoteVerifier {
    /// A verifier for key `name`; fails with [`NoteError::BadName`] on an invalid name.
    pub fn new(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        if !is_valid_name(name) {
            return Err(NoteError::BadName);
        }
        Ok(Self {
            name: name.to_owned(),
            key_id: key_id(name, ALG_ED25519, &public_key),
            public_key,
        })
    }

    /// Parses a verifier key text; the algorithm must be Ed25519.
    pub fn from_key_text(text: &str) -> Result<Self, NoteError> {
        let (name, alg, pk) = parse_verifier_key(text)?;
        if alg != ALG_ED25519 {
            return Err(NoteError::BadKey);
        }
        Self::new(&name, pk)
    }

    /// The C2SP verifier key text `name+keyid+base64(0x01||key)`.
    pub fn key_text(&self) -> String {
        verifier_key_text(&self.name, ALG_ED25519, &self.public_key)
    }

    /// Checks that `note` carries a valid signature by this key. A signature line claiming
    /// this key that does not verify is an error (never silently skipped).
    pub fn verify(&self, note: &Note) -> Result<(), NoteError> {
        let mut ok = false;
        for s in note.signatures_by(&self.name, self.key_id) {
            if !ed25519_verify(&self.public_key, note.text.as_bytes(), &s.sig) {
                return Err(NoteError::BadSignature(self.name.clone()));
            }
            ok = true;
        }
        if ok {
            Ok(())
        } else {
            Err(NoteError::Unsigned(self.name.clone()))
        }
    }
}
