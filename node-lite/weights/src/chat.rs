//! Chat-model weights: a GGUF file kept exactly as it is (quantized blocks untouched), split
//! into the same hashed chunks as every other weight, with a manifest naming the
//! architecture and tensor types. Any peer or server may serve chunks; the receiver verifies
//! each against the manifest, then the whole file against its SHA-256.
//!
//! ```text
//! manifest.json  weights.000  weights.001  ...      (the chunks joined = the .gguf file)
//! ```

use serde::{Deserialize, Serialize};

use super::{
    CHUNK_SIZE, FileEntry, MAX_MANIFEST_BYTES, WeightsError, check_chunk_list, join_chunks,
};

/// Format tag of a chat manifest.
pub const CHAT_FORMAT: &str = "shoal-chat-weights/1";
/// Largest GGUF accepted (8 GiB: a 7B model at 8 bits).
pub const MAX_CHAT_BYTES: u64 = 8 << 30;

/// What a chat-model directory holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatManifest {
    /// [`CHAT_FORMAT`].
    pub format: String,
    /// Model id, e.g. `smollm2-135m-instruct`.
    pub model: String,
    /// How the joined chunks are encoded: `gguf` (the file as published).
    pub record: String,
    /// `general.architecture` (`llama`, `qwen2`).
    pub arch: String,
    /// Tensor types and how many tensors of each, e.g. `{"Q4_1": 210, "F32": 61, "Q8_0": 1}`.
    pub tensor_types: std::collections::BTreeMap<String, u64>,
    /// Bytes of the GGUF file.
    pub total_size: u64,
    /// SHA-256 of the GGUF file.
    pub sha256: String,
    /// The chunks, in order.
    pub chunks: Vec<FileEntry>,
    /// Shape and tokenizer facts from the GGUF metadata (informational).
    pub config: serde_json::Value,
    /// Where the file came from (informational).
    #[serde(default)]
    pub source: String,
}

impl ChatManifest {
    /// Parse and sanity-check a manifest (format, sizes, chunk names).
    pub fn parse(bytes: &[u8]) -> Result<Self, WeightsError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(WeightsError::Invalid("manifest larger than 1 MiB".into()));
        }
        let m: ChatManifest = serde_json::from_slice(bytes)
            .map_err(|e| WeightsError::Invalid(format!("manifest is not valid JSON: {e}")))?;
        if m.format != CHAT_FORMAT {
            return Err(WeightsError::UnsupportedFormat(m.format));
        }
        if m.record != "gguf" {
            return Err(WeightsError::Invalid(format!(
                "record {:?} (expected gguf)",
                m.record
            )));
        }
        check_chunk_list(m.total_size, MAX_CHAT_BYTES, &m.chunks)?;
        Ok(m)
    }

    /// Describe a GGUF file: chunk it, hash it. Returns the manifest and the chunks to write.
    pub fn describe(
        model: &str,
        gguf: &[u8],
        arch: &str,
        tensor_types: std::collections::BTreeMap<String, u64>,
        config: serde_json::Value,
        source: &str,
    ) -> (Self, Vec<(String, Vec<u8>)>) {
        use sha2::Digest;
        let mut chunks = Vec::new();
        let mut entries = Vec::new();
        for (i, c) in gguf.chunks(CHUNK_SIZE).enumerate() {
            let name = format!("weights.{i:03}");
            entries.push(FileEntry::describe(&name, c));
            chunks.push((name, c.to_vec()));
        }
        let m = ChatManifest {
            format: CHAT_FORMAT.into(),
            model: model.into(),
            record: "gguf".into(),
            arch: arch.into(),
            tensor_types,
            total_size: gguf.len() as u64,
            sha256: hex::encode(sha2::Sha256::digest(gguf)),
            chunks: entries,
            config,
            source: source.into(),
        };
        (m, chunks)
    }

    /// Verify `chunks` (in manifest order) and join them into the GGUF file's bytes.
    pub fn assemble(&self, chunks: Vec<Vec<u8>>) -> Result<Vec<u8>, WeightsError> {
        join_chunks(&self.chunks, self.total_size, &self.sha256, chunks)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> (ChatManifest, Vec<Vec<u8>>) {
        let file: Vec<u8> = (0..(CHUNK_SIZE + 100)).map(|i| (i % 251) as u8).collect();
        let (m, chunks) = ChatManifest::describe(
            "t",
            &file,
            "llama",
            Default::default(),
            serde_json::json!({}),
            "test",
        );
        (m, chunks.into_iter().map(|c| c.1).collect())
    }

    #[test]
    fn describe_parse_assemble_round_trip() {
        let (m, chunks) = sample();
        assert_eq!(m.chunks.len(), 2);
        let parsed = ChatManifest::parse(&serde_json::to_vec(&m).unwrap()).unwrap();
        assert_eq!(parsed, m);
        assert_eq!(parsed.assemble(chunks).unwrap().len(), CHUNK_SIZE + 100);
    }

    #[test]
    fn corrupt_truncated_or_hostile_is_refused_by_name() {
        let (m, mut chunks) = sample();
        chunks[1][7] ^= 1;
        let e = m.assemble(chunks).unwrap_err().to_string();
        assert!(e.contains("weights.001"), "{e}");
        let (m, mut chunks) = sample();
        chunks[0].pop();
        assert!(
            m.assemble(chunks)
                .unwrap_err()
                .to_string()
                .contains("weights.000")
        );
        let (mut m, _) = sample();
        m.chunks[0].file = "../x".into();
        assert!(ChatManifest::parse(&serde_json::to_vec(&m).unwrap()).is_err());
        let (mut m, _) = sample();
        m.format = "shoal-weights/1".into();
        assert!(matches!(
            ChatManifest::parse(&serde_json::to_vec(&m).unwrap()),
            Err(WeightsError::UnsupportedFormat(_))
        ));
    }
}
