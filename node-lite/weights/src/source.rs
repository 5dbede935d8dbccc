//! Native weight sources: a directory on disk or a base URL. Both go through the same
//! manifest verification ([`VerifiedWeights::verify`]); only the byte transport differs.

use super::{MAX_MANIFEST_BYTES, Manifest, VerifiedWeights, WeightsError};
use std::path::Path;

/// Reads one named file of a weights location with a size cap: the byte transport.
type Get<'a> = Box<dyn Fn(&str, u64) -> Result<Vec<u8>, WeightsError> + 'a>;

/// The transport for `location`: an `http(s)://` base URL or a directory.
fn transport(location: &str) -> Result<Get<'_>, WeightsError> {
    if location.starts_with("http://") || location.starts_with("https://") {
        #[cfg(feature = "fetch")]
        {
            let base = location.trim_end_matches('/');
            return Ok(Box::new(move |name, limit| get_capped(base, name, limit)));
        }
        #[cfg(not(feature = "fetch"))]
        return Err(WeightsError::Fetch {
            url: location.to_string(),
            message: "this build has no HTTP client (feature `fetch`)".into(),
        });
    }
    let dir = Path::new(location);
    Ok(Box::new(move |name, limit| read_capped(dir, name, limit)))
}

/// Load and verify an embedding-model variant through `get`.
fn load_with(get: &Get<'_>) -> Result<VerifiedWeights, WeightsError> {
    let manifest = Manifest::parse(&get("manifest.json", MAX_MANIFEST_BYTES as u64)?)?;
    let chunks = manifest
        .chunks
        .iter()
        .map(|c| get(&c.file, c.size))
        .collect::<Result<Vec<_>, _>>()?;
    let tokenizer = get(&manifest.tokenizer.file, manifest.tokenizer.size)?;
    VerifiedWeights::verify(manifest, chunks, tokenizer)
}

/// Where weights come from: a directory path or an `http(s)://` base URL.
pub fn load(location: &str) -> Result<VerifiedWeights, WeightsError> {
    load_with(&transport(location)?)
}

/// Load and verify a variant directory written by the importer.
pub fn load_dir(dir: &Path) -> Result<VerifiedWeights, WeightsError> {
    load_with(&(Box::new(move |name: &str, limit| read_capped(dir, name, limit)) as Get<'_>))
}

#[cfg(feature = "fetch")]
/// Load and verify a variant served over HTTP at `base` (`{base}/manifest.json`, …).
/// Each body is read with a cap of the size the manifest announces, so a hostile server
/// cannot make us buffer without bound.
pub fn load_url(base: &str) -> Result<VerifiedWeights, WeightsError> {
    let base = base.trim_end_matches('/');
    load_with(&(Box::new(move |name: &str, limit| get_capped(base, name, limit)) as Get<'_>))
}

/// A chat model's GGUF bytes, verified: from a directory written by `shoal-node import-gguf`
/// or an `http(s)://` base URL serving one (`{base}/manifest.json`, `{base}/weights.000`, …).
pub fn load_chat(location: &str) -> Result<(super::chat::ChatManifest, Vec<u8>), WeightsError> {
    let get = transport(location)?;
    let m = super::chat::ChatManifest::parse(&get("manifest.json", MAX_MANIFEST_BYTES as u64)?)?;
    let chunks = m
        .chunks
        .iter()
        .map(|c| get(&c.file, c.size))
        .collect::<Result<Vec<_>, _>>()?;
    let bytes = m.assemble(chunks)?;
    Ok((m, bytes))
}

/// `dir/name`, refused (by name) when larger than `limit`.
fn read_capped(dir: &Path, name: &str, limit: u64) -> Result<Vec<u8>, WeightsError> {
    let path = dir.join(name);
    let io = |source| WeightsError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(&path).map_err(io)?.len();
    if len > limit {
        return Err(WeightsError::SizeMismatch {
            file: name.to_string(),
            expected: limit,
            actual: len,
        });
    }
    std::fs::read(&path).map_err(io)
}

/// `{base}/{name}` over HTTP, reading at most `limit` bytes.
#[cfg(feature = "fetch")]
fn get_capped(base: &str, name: &str, limit: u64) -> Result<Vec<u8>, WeightsError> {
    use std::io::Read;
    let url = format!("{base}/{name}");
    let fail = |message: String| WeightsError::Fetch {
        url: url.clone(),
        message,
    };
    let resp = ureq::get(&url)
        .timeout(std::time::Duration::from_secs(60))
        .call()
        .map_err(|e| fail(e.to_string()))?;
    let mut body = Vec::new();
    resp.into_reader()
        .take(limit + 1)
        .read_to_end(&mut body)
        .map_err(|e| fail(e.to_string()))?;
    if body.len() as u64 > limit {
        return Err(fail(format!("body larger than the expected {limit} bytes")));
    }
    Ok(body)
}
