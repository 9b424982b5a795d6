#!/usr/bin/env bash
# Accelerator check for a machine with one NVIDIA GPU and no network.
#
#   experiments/gpu_check.sh WHEELS_DIR     # on the GPU machine
#   experiments/gpu_check.sh --cpu_smoke    # the same steps on the tiny config on CPU (CI)
#
# The GPU machine's python3 must already have jax with CUDA, flax, optax, orbax-checkpoint, torch
# and transformers. Nothing comes from the network: the packages gpt2jax needs beyond those (checked
# one by one; usually ml-collections, sometimes absl-py, PyYAML, tqdm, etils) are installed from
# the wheels in WHEELS_DIR, and gpt2jax itself with --no-deps, into a temporary directory that is
# removed afterwards. docs/performance.md says how to fetch the wheels with `pip download`.
#
# Then experiments/gpu_check.py checks correctness first (bf16 vs fp32 loss, cuDNN vs XLA attention,
# blockwise vs dense cross-entropy), then benchmarks GPT-2 124M (against transformers) and 1.5B
# (scan + remat), and writes one JSON file: $GPU_CHECK_OUT (default ./gpu_check_results.json).
# Exits non-zero with "GPU CHECK FAILED: ..." on any mismatch; the whole run is capped at 9 minutes.
#
# Environment: PYTHON (default python3), GPU_CHECK_OUT.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-python3}"
OUT="${GPU_CHECK_OUT:-$PWD/gpu_check_results.json}"
LIMIT_S=540  # 9 minutes for the whole check

die() { echo "GPU CHECK FAILED: $*" >&2; exit 1; }

if [[ $# -ne 1 ]]; then
  sed -n '2,6p' "$0" >&2
  exit 2
fi

if [[ "$1" == "--cpu_smoke" ]]; then
  # Installs nothing: the source tree and the current environment.
  export JAX_PLATFORMS=cpu
  export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
  exec timeout "$LIMIT_S" "$PY" "$ROOT/experiments/gpu_check.py" --cpu_smoke --out "$OUT" --root "$ROOT"
fi

WHEELS="$1"
[[ -d "$WHEELS" ]] || die "WHEELS_DIR '$WHEELS' is not a directory"
START=$(date +%s)
TARGET="$(mktemp -d -t gpt2jax_gpu_check.XXXXXX)"
trap 'rm -rf "$TARGET"' EXIT

# module:distribution pairs that gpt2jax imports on the benchmark path, beyond jax/flax/optax/orbax.
missing=()
for spec in ml_collections:ml-collections absl:absl-py yaml:PyYAML tqdm:tqdm etils:etils; do
  mod="${spec%%:*}"; dist="${spec#*:}"
  "$PY" -c "import $mod" 2>/dev/null || missing+=("$dist")
done
for mod in jax flax optax orbax.checkpoint torch transformers; do
  "$PY" -c "import $mod" 2>/dev/null || die "python '$PY' lacks $mod (expected on the GPU machine)"
done
if (( ${#missing[@]} )); then
  echo "installing from $WHEELS: ${missing[*]}"
  "$PY" -m pip install -q --no-index --no-deps --find-links "$WHEELS" --target "$TARGET" "${missing[@]}" \
    || die "could not install ${missing[*]} from $WHEELS (see docs/performance.md for pip download)"
fi
# The project itself, without dependencies and without build isolation (which would need the network).
if ! "$PY" -m pip install -q --no-index --no-deps --no-build-isolation --target "$TARGET" "$ROOT" 2>"$TARGET/pip.log"; then
  echo "note: building gpt2jax offline failed (needs setuptools>=77 here); using the source tree $ROOT"
  cat "$TARGET/pip.log" >&2
  EXTRA="$ROOT"
fi
export PYTHONPATH="$TARGET${EXTRA:+:$EXTRA}${PYTHONPATH:+:$PYTHONPATH}"
# On demand GPU memory, so the torch reference in the same process has room next to jax.
export XLA_PYTHON_CLIENT_PREALLOCATE=false

cd "$TARGET"  # import the installed copy, not the checkout
"$PY" -c "import gpt2jax, jax; print('gpt2jax from', gpt2jax.__file__); print('devices', jax.devices())"
LEFT=$(( LIMIT_S - ($(date +%s) - START) ))
timeout "$LEFT" "$PY" "$ROOT/experiments/gpu_check.py" --out "$OUT" --root "$ROOT" --budget_s $(( LEFT - 120 )) \
  || die "see the messages above and $OUT"
echo "results: $OUT"
