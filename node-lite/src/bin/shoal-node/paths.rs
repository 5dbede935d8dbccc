//! Default locations, overridable by flags and environment variables.

use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$SHOAL_MODEL_DIR`, else `$XDG_CACHE_HOME/shoal/models/all-minilm-l6-v2`
/// (`~/.cache/...`): where `scripts/setup` imports the model.
pub fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_MODEL_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("shoal/models/all-minilm-l6-v2")
}

/// `$SHOAL_INDEX`, else `$XDG_DATA_HOME/shoal/index.bin` (`~/.local/share/...`).
pub fn default_index() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_INDEX") {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("shoal/index.bin")
}

/// `$SHOAL_RECEIPTS`, else `$XDG_DATA_HOME/shoal/receipts.bin` (`~/.local/share/...`): the
/// receipts of this node's jobs.
pub fn default_receipts() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOAL_RECEIPTS") {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("shoal/receipts.bin")
}
