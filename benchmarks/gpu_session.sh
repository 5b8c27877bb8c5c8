#!/usr/bin/env bash
# One GPU session for the hedgehog kernels: GPU correctness tests, then the kernel benchmark (autotuned) and
# the decode benchmark. Every step is guarded (a failing or slow step does not stop the next one) and writes
# its log under $OUT, so whatever ran comes back.
#
#   OUT=/some/dir PYTHONPATH=src bash benchmarks/gpu_session.sh          # from the repository root
#
# Optional environment:
#   SESSION_BUDGET  seconds for the whole session (default 540); each step ends by a fixed share of it:
#                   preflight 18%, tests 55%, kernel benchmark 90% (no new length after 80%), decode 100%
#   WHEELS          a folder of wheels (flash-linear-attention, gguf, ...) installed into /tmp/site first
#   SKIP_PREFLIGHT=1, SKIP_TESTS=1, SKIP_KERNELS=1, SKIP_DECODE=1   leave a step out
#   KERNEL_ARGS     extra arguments for benchmarks/kernels.py (e.g. "--lengths 1024 65536"); default
#                   "--profile-lengths 65536 --accuracy-lengths" (the accuracy check at the first length only)
#   AUTOTUNE=1      let the kernels time their tile choices first (HEDGEHOG_KERNELS_AUTOTUNE); off by default:
#                   on 2026-11-23 tuning the variants of two lengths took most of a 285 s benchmark and kept the
#                   built-in defaults in 11 of its 16 choices
#   DECODE_ARGS     extra arguments for benchmarks/decode.py (e.g. "--model" for converted SmolLM2;
#                   SMOLLM2_GGUF=<file.gguf> tells it where the model is)
# Outputs: session.log, nvidia_smi.txt, preflight.log, gpu_tests.log, gpu_test_errors.json, kernels.log, kernels.json,
# kernels.png, decode.log, decode.json.
set -u
: "${OUT:?set OUT to the folder for logs and results}"
mkdir -p "$OUT"
export PYTHONPATH="${PYTHONPATH:-src}"
export TRITON_CACHE_DIR="${TRITON_CACHE_DIR:-/tmp/triton_cache_hedgehog}"  # tests and benchmarks share compiles
BUDGET="${SESSION_BUDGET:-540}"
START=$(date +%s)

log() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/session.log"; }
# seconds from now until PERCENT% of the budget (at least 20)
share_left() { local l=$(( BUDGET * $1 / 100 - ($(date +%s) - START) )); [ "$l" -lt 20 ] && l=20; echo "$l"; }

log "session start, budget ${BUDGET}s, PYTHONPATH=$PYTHONPATH"
nvidia-smi > "$OUT/nvidia_smi.txt" 2>&1 || true
python - >> "$OUT/session.log" 2>&1 <<'PY' || true
import torch, triton
print("torch", torch.__version__, "cuda", torch.version.cuda, "triton", triton.__version__)
print("device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY

if [ -n "${WHEELS:-}" ] && ls "$WHEELS"/*.whl > /dev/null 2>&1; then
  log "installing wheels from $WHEELS"
  if python3 -m pip install -q --no-index --no-deps --target /tmp/site "$WHEELS"/*.whl >> "$OUT/session.log" 2>&1; then
    export PYTHONPATH="/tmp/site:$PYTHONPATH"
  else
    log "wheel install failed (see session.log); continuing without"
  fi
fi
python -c "import fla; print('fla', getattr(fla, '__version__', '?'))" >> "$OUT/session.log" 2>&1 || log "fla not importable"

if [ -z "${SKIP_PREFLIGHT:-}" ] && [ -f experiments/preflight_kernels.py ]; then
  # every attention type through attend (bf16, head dim 32, GQA, padding): synchronous launches, so that a
  # device fault is pinned on the kernel that caused it (printed by hedgehog.kernels in sync mode)
  log "preflight (every attention type, kernels synchronised)"
  HEDGEHOG_ATTENTION_BACKEND=auto HEDGEHOG_KERNELS_SYNC=1 CUDA_LAUNCH_BLOCKING=1 timeout "$(share_left 18)" \
    python experiments/preflight_kernels.py 2>&1 | tee "$OUT/preflight.log" | tail -n 20
  log "preflight finished (rc=${PIPESTATUS[0]})"
fi

if [ -z "${SKIP_TESTS:-}" ]; then
  log "GPU tests"
  HEDGEHOG_GPU_TEST_REPORT="$OUT/gpu_test_errors.json" timeout "$(share_left 55)" \
    python -m pytest tests/gpu -q -p no:cacheprovider -rfEs --durations=15 2>&1 | tee "$OUT/gpu_tests.log" | tail -n 25
  log "GPU tests finished (rc=${PIPESTATUS[0]})"
fi

if [ -z "${SKIP_KERNELS:-}" ]; then
  log "kernel benchmark"
  HEDGEHOG_KERNELS_AUTOTUNE=${AUTOTUNE:-0} timeout "$(share_left 90)" \
    python benchmarks/kernels.py --out "$OUT/kernels.json" --png "$OUT/kernels.png" --budget "$(share_left 80)" \
    ${KERNEL_ARGS:---profile-lengths 65536 --accuracy-lengths} 2>&1 | tee "$OUT/kernels.log" | tail -n 45
  log "kernel benchmark finished (rc=${PIPESTATUS[0]})"
  if [ -f "$OUT/kernels.json" ] && [ ! -f "$OUT/kernels.png" ]; then
    python benchmarks/plot_kernels.py "$OUT/kernels.json" --png "$OUT/kernels.png" >> "$OUT/session.log" 2>&1 || true
  fi
fi

if [ -z "${SKIP_DECODE:-}" ]; then
  log "decode benchmark"
  timeout "$(share_left 100)" python benchmarks/decode.py --out "$OUT/decode.json" ${DECODE_ARGS:-} 2>&1 \
    | tee "$OUT/decode.log" | tail -n 20
  log "decode benchmark finished (rc=${PIPESTATUS[0]})"
fi
log "session end"
