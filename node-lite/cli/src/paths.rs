//! Default locations, overridable by flags and environment variables.

use std::path::PathBuf;

fn home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."))
}

/// `$SHOAL_MODEL_DIR`, else `$XDG_CACHE_HOME/shoal/models/all-minilm-l6-v2`
/// (`~/.cache/...`): where `scripts/setup` imports the model.
pub(crate) fn default_model_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOAL_MODEL_DIR") {
        return PathBuf::from(d);
    }
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("shoal/models/all-minilm-l6-v2")
}

/// `$<env>`, else `$XDG_DATA_HOME/shoal/<name>` (`~/.local/share/...`).
fn data_file(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".local/share"))
        .join("shoal")
        .join(name)
}

/// `$SHOAL_INDEX`, else `$XDG_DATA_HOME/shoal/index.bin` (`~/.local/share/...`).
pub(crate) fn default_index() -> PathBuf {
    data_file("SHOAL_INDEX", "index.bin")
}

/// `$SHOAL_RECEIPTS`, else `$XDG_DATA_HOME/shoal/receipts.bin`: the receipts of this node's jobs.
pub(crate) fn default_receipts() -> PathBuf {
    data_file("SHOAL_RECEIPTS", "receipts.bin")
}

/// `$XDG_CACHE_HOME/shoal/models/smollm2-135m-instruct` (`~/.cache/...`): where `scripts/setup`
/// imports the default chat model (`$SHOAL_CHAT_MODEL` overrides, through the flag's env).
pub(crate) fn default_chat_model_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| home().join(".cache"))
        .join("shoal/models/smollm2-135m-instruct")
}
