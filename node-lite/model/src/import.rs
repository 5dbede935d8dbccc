//! Import Hugging Face `model.safetensors` into the project's weight format: load it into
//! [`Bert`](crate::Bert) (so every tensor is checked against the module's shapes), save
//! as a burnpack record (f32, or f16 on disk), split into chunks and write the manifest.

use crate::BertConfig;
use burn::prelude::*;
use burn::store::{
    BurnpackStore, HalfPrecisionAdapter, ModuleSnapshot, PyTorchToBurnAdapter, SafetensorsStore,
};
use sha2::{Digest, Sha256};
use shoal_weights::{CHUNK_SIZE, FORMAT, FileEntry, Manifest, Variant, WeightsError};
use std::path::Path;

/// Tensors in the checkpoint that the encoder does not use.
const UNUSED_OK: &[&str] = &[
    "embeddings.position_ids",
    "pooler.dense.weight",
    "pooler.dense.bias",
];

/// Load a Hugging Face BERT safetensors file into a freshly built model on `device`.
pub fn load_safetensors(
    path: &Path,
    config: &BertConfig,
    device: &Device,
) -> Result<crate::Bert, WeightsError> {
    let mut model = config.init(device);
    let mut store = SafetensorsStore::from_file(path)
        .with_from_adapter(PyTorchToBurnAdapter)
        .with_key_remapping(r"\.LayerNorm\.", ".layer_norm.")
        .with_key_remapping(r"\.self\.", ".self_.")
        .allow_partial(true);
    let result = model
        .load_from(&mut store)
        .map_err(|e| WeightsError::Import(format!("{}: {e}", path.display())))?;
    if !result.missing.is_empty() || !result.errors.is_empty() {
        return Err(WeightsError::Import(format!(
            "{}: missing tensors {:?}, errors {:?}",
            path.display(),
            result.missing.iter().map(|m| &m.0).collect::<Vec<_>>(),
            result.errors
        )));
    }
    let unexpected: Vec<_> = result
        .unused
        .iter()
        .filter(|u| !UNUSED_OK.contains(&u.as_str()))
        .collect();
    if !unexpected.is_empty() {
        return Err(WeightsError::Import(format!(
            "{}: unexpected tensors {unexpected:?} (not a MiniLM/BERT checkpoint?)",
            path.display()
        )));
    }
    Ok(model)
}

/// Serialise `model` as a burnpack record in `variant` precision.
pub fn to_record(model: &crate::Bert, variant: Variant) -> Result<Vec<u8>, WeightsError> {
    let mut store = BurnpackStore::from_bytes(None);
    if variant == Variant::F16 {
        store = store.with_to_adapter(HalfPrecisionAdapter::new());
    }
    model
        .save_into(&mut store)
        .map_err(|e| WeightsError::Import(format!("saving burnpack: {e}")))?;
    let bytes = store
        .get_bytes()
        .map_err(|e| WeightsError::Import(format!("reading burnpack bytes: {e}")))?;
    Ok(bytes.to_vec())
}

/// Write `record` + `tokenizer` as a variant directory `out` (created if needed).
pub fn write_variant(
    out: &Path,
    variant: Variant,
    record: &[u8],
    tokenizer: &[u8],
    config: &BertConfig,
    source: &str,
) -> Result<Manifest, WeightsError> {
    let io = |path: &Path| {
        let path = path.display().to_string();
        move |source| WeightsError::Io { path, source }
    };
    std::fs::create_dir_all(out).map_err(io(out))?;
    let mut chunks = Vec::new();
    for (i, chunk) in record.chunks(CHUNK_SIZE).enumerate() {
        let name = format!("weights.{i:03}");
        let path = out.join(&name);
        std::fs::write(&path, chunk).map_err(io(&path))?;
        chunks.push(FileEntry::describe(&name, chunk));
    }
    let tok_path = out.join("tokenizer.json");
    std::fs::write(&tok_path, tokenizer).map_err(io(&tok_path))?;
    let manifest = Manifest {
        format: FORMAT.into(),
        model: shoal_proto::MODEL_NAME.into(),
        variant,
        record: "burnpack".into(),
        dtype: variant.as_str().into(),
        total_size: record.len() as u64,
        sha256: hex::encode(Sha256::digest(record)),
        chunks,
        tokenizer: FileEntry::describe("tokenizer.json", tokenizer),
        max_seq_len: crate::MAX_SEQ_LEN,
        config: serde_json::to_value(config)
            .map_err(|e| WeightsError::Import(format!("config: {e}")))?,
        source: source.into(),
    };
    let json = serde_json::to_vec_pretty(&manifest)
        .map_err(|e| WeightsError::Import(format!("manifest: {e}")))?;
    // Manifest last, via rename: a directory with a manifest is always complete.
    let tmp = out.join("manifest.json.tmp");
    std::fs::write(&tmp, json).map_err(io(&tmp))?;
    let dst = out.join("manifest.json");
    std::fs::rename(&tmp, &dst).map_err(io(&dst))?;
    Ok(manifest)
}

/// Import `safetensors` + `tokenizer.json` into `out/<variant>/` for every variant.
pub fn import_all(
    safetensors: &Path,
    tokenizer: &Path,
    out: &Path,
) -> Result<Vec<Manifest>, WeightsError> {
    let config = BertConfig::minilm_l6();
    let device = Device::flex();
    let model = load_safetensors(safetensors, &config, &device)?;
    let tok = std::fs::read(tokenizer).map_err(|source| WeightsError::Io {
        path: tokenizer.display().to_string(),
        source,
    })?;
    let source = format!(
        "{} (sha256 {})",
        safetensors
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        file_sha256(safetensors)?
    );
    Variant::ALL
        .iter()
        .map(|&v| {
            let record = to_record(&model, v)?;
            write_variant(&out.join(v.as_str()), v, &record, &tok, &config, &source)
        })
        .collect()
}

/// Hex SHA-256 of a file (used to tell whether an import is up to date).
pub fn file_sha256(path: &Path) -> Result<String, WeightsError> {
    let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
        path: path.display().to_string(),
        source,
    })?;
    Ok(hex::encode(Sha256::digest(bytes)))
}
