//! The weight format: a burnpack record split into fixed-size chunks, described by a
//! `manifest.json` that gives the size, SHA-256 and BLAKE2b-256 of every chunk and of the
//! tokenizer. Any peer or server may serve chunks; the receiver verifies each one before use.
//!
//! Layout of one variant directory (what `shoal-model`'s importer writes and a web server serves):
//!
//! ```text
//! manifest.json  tokenizer.json  weights.000  weights.001  ...
//! ```
//!
//! This crate has no model dependency: the app and relay can verify without burn.

#![warn(missing_docs)]
#![forbid(unsafe_code)]

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub mod chat;
#[cfg(not(target_family = "wasm"))]
pub mod source;

/// Format tag in every manifest; bumped on incompatible change.
pub const FORMAT: &str = "shoal-weights/1";
/// Chunk size the importer uses (the last chunk may be shorter).
pub const CHUNK_SIZE: usize = 4 << 20;
/// Largest manifest we parse (defends against a hostile server).
pub const MAX_MANIFEST_BYTES: usize = 1 << 20;
/// Largest total weight size we accept (MiniLM f32 is ~91 MB).
pub const MAX_TOTAL_BYTES: u64 = 1 << 30;

/// Numeric precision of the stored weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    /// Full precision, the reference.
    F32,
    /// Half precision on disk and on the wire (half the download), f32 in memory.
    F16,
}

impl Variant {
    /// Every variant, in the order the importer writes them (f32 first).
    pub const ALL: [Variant; 2] = [Variant::F32, Variant::F16];

    /// The lower-case name used in manifests, directory names and the CLI (`f32`, `f16`).
    pub fn as_str(self) -> &'static str {
        match self {
            Variant::F32 => "f32",
            Variant::F16 => "f16",
        }
    }
}

impl std::str::FromStr for Variant {
    type Err = WeightsError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Variant::F32),
            "f16" => Ok(Variant::F16),
            other => Err(WeightsError::UnknownVariant(other.to_string())),
        }
    }
}

impl std::fmt::Display for Variant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One file the manifest vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Plain file name inside the variant directory (`weights.000`, `tokenizer.json`); no path.
    pub file: String,
    /// Exact length of the file in bytes; checked before hashing and used as the read cap.
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
    /// Lower-case hex BLAKE2b-256.
    pub blake2b: String,
}

impl FileEntry {
    /// Describe `bytes` as the file `name`.
    pub fn describe(name: &str, bytes: &[u8]) -> Self {
        Self {
            file: name.to_string(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            blake2b: hex::encode(blake2b256(bytes)),
        }
    }

    /// Check `bytes` against this entry: size first (cheap), then both hashes.
    pub fn verify(&self, bytes: &[u8]) -> Result<(), WeightsError> {
        if bytes.len() as u64 != self.size {
            return Err(WeightsError::SizeMismatch {
                file: self.file.clone(),
                expected: self.size,
                actual: bytes.len() as u64,
            });
        }
        if hex::encode(Sha256::digest(bytes)) != self.sha256
            || hex::encode(blake2b256(bytes)) != self.blake2b
        {
            return Err(WeightsError::HashMismatch {
                file: self.file.clone(),
            });
        }
        Ok(())
    }
}

/// What a variant directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// Must equal [`FORMAT`]; anything else is refused by [`Manifest::parse`].
    pub format: String,
    /// Model id the weights belong to (the embedder's `shoal_proto::MODEL_NAME`).
    pub model: String,
    /// Precision of the stored tensors.
    pub variant: Variant,
    /// How the concatenated chunks are encoded (`burnpack`).
    pub record: String,
    /// dtype of the stored float tensors.
    pub dtype: String,
    /// Bytes of the joined record: the sum of the chunk sizes, at most [`MAX_TOTAL_BYTES`].
    pub total_size: u64,
    /// SHA-256 of the concatenated chunks.
    pub sha256: String,
    /// The record's chunks in order (each [`CHUNK_SIZE`] bytes except possibly the last).
    pub chunks: Vec<FileEntry>,
    /// The `tokenizer.json` shipped next to the chunks.
    pub tokenizer: FileEntry,
    /// Maximum tokens per input, counting `[CLS]` and `[SEP]`.
    pub max_seq_len: usize,
    /// Model shape, as JSON (see `model::BertConfig`).
    pub config: serde_json::Value,
    /// Where the weights came from (informational).
    #[serde(default)]
    pub source: String,
}

impl Manifest {
    /// Parse and sanity-check a manifest. Refuses unknown formats, absurd sizes, chunk lists
    /// that don't add up and file names that could escape the directory.
    pub fn parse(bytes: &[u8]) -> Result<Self, WeightsError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(WeightsError::Invalid("manifest larger than 1 MiB".into()));
        }
        let m: Manifest = serde_json::from_slice(bytes)
            .map_err(|e| WeightsError::Invalid(format!("manifest is not valid JSON: {e}")))?;
        if m.format != FORMAT {
            return Err(WeightsError::UnsupportedFormat(m.format));
        }
        check_chunk_list(m.total_size, MAX_TOTAL_BYTES, &m.chunks)?;
        check_file_name(&m.tokenizer)?;
        Ok(m)
    }

    /// Join verified chunks (in manifest order) and check the whole-file hash.
    pub fn assemble(&self, chunks: Vec<Vec<u8>>) -> Result<Vec<u8>, WeightsError> {
        join_chunks(&self.chunks, self.total_size, &self.sha256, chunks)
    }
}

/// A file name a manifest may list: plain, no path, no leading dot.
fn check_file_name(f: &FileEntry) -> Result<(), WeightsError> {
    let ok = !f.file.is_empty()
        && f.file
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
        && !f.file.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err(WeightsError::Invalid(format!("bad file name {:?}", f.file)))
    }
}

/// The checks every manifest's chunk list passes: a total within `max`, chunk sizes that add
/// up to it, at least one chunk, and file names that cannot escape the directory.
pub(crate) fn check_chunk_list(
    total: u64,
    max: u64,
    chunks: &[FileEntry],
) -> Result<(), WeightsError> {
    if total > max {
        return Err(WeightsError::Invalid(format!(
            "total size {total} exceeds the {max} byte limit"
        )));
    }
    let sum: u64 = chunks.iter().map(|c| c.size).sum();
    if sum != total || chunks.is_empty() {
        return Err(WeightsError::Invalid(format!(
            "chunk sizes add up to {sum}, manifest says {total}"
        )));
    }
    chunks.iter().try_for_each(check_file_name)
}

/// Verify each chunk against its entry, join them, and check the whole file's SHA-256.
pub(crate) fn join_chunks(
    entries: &[FileEntry],
    total: u64,
    sha256: &str,
    chunks: Vec<Vec<u8>>,
) -> Result<Vec<u8>, WeightsError> {
    if chunks.len() != entries.len() {
        return Err(WeightsError::Invalid(format!(
            "got {} chunks, manifest lists {}",
            chunks.len(),
            entries.len()
        )));
    }
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for (entry, bytes) in entries.iter().zip(chunks) {
        entry.verify(&bytes)?;
        out.extend_from_slice(&bytes);
    }
    if hex::encode(Sha256::digest(&out)) != sha256 {
        return Err(WeightsError::HashMismatch {
            file: "weights (whole)".into(),
        });
    }
    Ok(out)
}

/// Weights and tokenizer whose hashes matched their manifest.
#[derive(Clone)]
pub struct VerifiedWeights {
    /// The manifest every byte below was checked against.
    pub manifest: Manifest,
    /// The burnpack record (chunks joined), shared: cloning it (into burn's store) copies no
    /// bytes.
    pub record: bytes::Bytes,
    /// `tokenizer.json`.
    pub tokenizer: Vec<u8>,
}

impl std::fmt::Debug for VerifiedWeights {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifiedWeights")
            .field("variant", &self.manifest.variant)
            .field("record_bytes", &self.record.len())
            .field("tokenizer_bytes", &self.tokenizer.len())
            .finish()
    }
}

impl VerifiedWeights {
    /// Verify raw parts fetched from anywhere (disk, HTTP, a peer).
    pub fn verify(
        manifest: Manifest,
        chunks: Vec<Vec<u8>>,
        tokenizer: Vec<u8>,
    ) -> Result<Self, WeightsError> {
        manifest.tokenizer.verify(&tokenizer)?;
        let record = manifest.assemble(chunks)?;
        Ok(Self {
            manifest,
            record: record.into(),
            tokenizer,
        })
    }
}

/// BLAKE2b with a 32-byte digest (libsodium's `crypto_generichash` default size).
pub fn blake2b256(bytes: &[u8]) -> [u8; 32] {
    use blake2::digest::{Update, VariableOutput};
    let mut h = blake2::Blake2bVar::new(32).expect("32 is a valid BLAKE2b output size");
    h.update(bytes);
    let mut out = [0u8; 32];
    h.finalize_variable(&mut out)
        .expect("buffer has the requested size");
    out
}

/// Why weights could not be loaded, verified or imported.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WeightsError {
    /// A file's length differs from the manifest (or exceeds the read cap).
    #[error("{file}: expected {expected} bytes, got {actual} (truncated or corrupt download?)")]
    SizeMismatch {
        /// Manifest file name of the offending file.
        file: String,
        /// Bytes the manifest announces (or the cap that was exceeded).
        expected: u64,
        /// Bytes actually received or found on disk.
        actual: u64,
    },
    /// The SHA-256 or BLAKE2b-256 of a file (or of the joined record) is not the manifest's.
    #[error("{file}: hash does not match the manifest (corrupt or tampered)")]
    HashMismatch {
        /// Manifest file name, or `weights (whole)` for the joined record.
        file: String,
    },
    /// The manifest's `format` tag is not one this build reads (carries the tag found).
    #[error("unsupported weights format {0:?} (this build reads {FORMAT:?})")]
    UnsupportedFormat(String),
    /// A variant name other than `f32`/`f16` (carries the name given).
    #[error("unknown weight variant {0:?} (expected f32 or f16)")]
    UnknownVariant(String),
    /// The manifest is oversized, not JSON, or fails a sanity check (the reason).
    #[error("invalid manifest: {0}")]
    Invalid(String),
    /// Reading or writing a local file failed.
    #[error("{path}: {source}")]
    Io {
        /// The file's path as displayed.
        path: String,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// An HTTP fetch failed or its body was larger than announced.
    #[error("fetching {url}: {message}")]
    Fetch {
        /// The full URL requested.
        url: String,
        /// Transport error or reason for refusing the body.
        message: String,
    },
    /// Converting source weights into this format failed (set by `shoal-model`'s importer).
    #[error("importing weights: {0}")]
    Import(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (Manifest, Vec<Vec<u8>>, Vec<u8>) {
        let chunks = vec![vec![1u8; 10], vec![2u8; 4]];
        let whole: Vec<u8> = chunks.concat();
        let tok = b"{\"tok\":1}".to_vec();
        let m = Manifest {
            format: FORMAT.into(),
            model: "test".into(),
            variant: Variant::F32,
            record: "burnpack".into(),
            dtype: "f32".into(),
            total_size: 14,
            sha256: hex::encode(Sha256::digest(&whole)),
            chunks: vec![
                FileEntry::describe("weights.000", &chunks[0]),
                FileEntry::describe("weights.001", &chunks[1]),
            ],
            tokenizer: FileEntry::describe("tokenizer.json", &tok),
            max_seq_len: 256,
            config: serde_json::json!({}),
            source: String::new(),
        };
        (m, chunks, tok)
    }

    #[test]
    fn round_trip_and_verify() {
        let (m, chunks, tok) = sample();
        let bytes = serde_json::to_vec(&m).unwrap();
        let parsed = Manifest::parse(&bytes).unwrap();
        assert_eq!(parsed, m);
        let v = VerifiedWeights::verify(parsed, chunks, tok).unwrap();
        assert_eq!(v.record.len(), 14);
    }

    #[test]
    fn truncated_chunk_is_refused() {
        let (m, mut chunks, tok) = sample();
        chunks[1].pop();
        let err = VerifiedWeights::verify(m, chunks, tok).unwrap_err();
        assert!(matches!(err, WeightsError::SizeMismatch { .. }), "{err}");
        assert!(err.to_string().contains("weights.001"));
    }

    #[test]
    fn flipped_byte_is_refused() {
        let (m, mut chunks, tok) = sample();
        chunks[0][3] ^= 0x40;
        let err = VerifiedWeights::verify(m, chunks, tok).unwrap_err();
        assert!(matches!(err, WeightsError::HashMismatch { .. }), "{err}");
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let (m, _, _) = sample();
        let mut bad = m.clone();
        bad.format = "shoal-weights/99".into();
        let e = Manifest::parse(&serde_json::to_vec(&bad).unwrap()).unwrap_err();
        assert!(matches!(e, WeightsError::UnsupportedFormat(_)));
        let mut bad = m.clone();
        bad.chunks[0].file = "../../etc/passwd".into();
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        let mut bad = m.clone();
        bad.total_size = 99;
        assert!(Manifest::parse(&serde_json::to_vec(&bad).unwrap()).is_err());
        assert!(Manifest::parse(b"not json").is_err());
        assert!(Manifest::parse(&vec![b' '; MAX_MANIFEST_BYTES + 1]).is_err());
    }
}
