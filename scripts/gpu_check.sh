#!/usr/bin/env bash
# On a machine with one CUDA GPU: set up an environment, run every CuPy/CUDA test, print the GPU
# rows of issue 9's table (asv_bench/gpu_table.py). Meant to finish in under 8 minutes.
#
#   bash scripts/gpu_check.sh            # PADAM_GPU_QUICK=1: fewer timing rounds
#
# Environment: reuses .venv when present, else creates it (with --system-site-packages, so a
# CuPy or CUDA torch already installed on the machine is used). Missing packages are installed
# with pip, which works from a local wheel cache (PIP_FIND_LINKS / PIP_NO_INDEX) or an index:
# numpy, array-api-compat, pytest, ml_dtypes and padam itself (editable, no deps), CuPy as
# cupy-cuda12x or cupy-cuda13x by the CUDA version that nvidia-smi / nvcc report (falling back
# to its [ctk] extra when NVRTC is missing), and torch==2.13.0 only if a CUDA build installs
# within PADAM_GPU_TORCH_TIMEOUT seconds (default 150; the torch rows say 'not available' if
# not). Exit status: 0 all ran and passed, 1 a test failed, 2 no GPU/driver, 3 no working CuPy.
set -uo pipefail
cd "$(dirname "$0")/.."
start=$SECONDS
log() { echo "gpu_check [$((SECONDS - start)) s]: $*"; }
status=0

# ---- the GPU and its CUDA version -------------------------------------------------------------
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi >/dev/null 2>&1; then
  echo "gpu_check: nvidia-smi is missing or fails: this is not a machine with a CUDA GPU" >&2
  exit 2
fi
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
driver_cuda=$(nvidia-smi | grep -o 'CUDA Version: *[0-9]*' | grep -o '[0-9]*$' || true)
nvcc_cuda=$(nvcc --version 2>/dev/null | grep -o 'release [0-9]*' | grep -o '[0-9]*$' || true)
# The driver bounds what runs; a local toolkit no newer than it gives NVRTC for free.
major=${PADAM_CUDA_MAJOR:-${driver_cuda:-$nvcc_cuda}}
if [ -n "$nvcc_cuda" ] && [ -n "$driver_cuda" ] && [ "$nvcc_cuda" -le "$driver_cuda" ]; then
  major=${PADAM_CUDA_MAJOR:-$nvcc_cuda}
fi
case "$major" in
  12) cupy_package=cupy-cuda12x ;;
  13 | 14 | 15) cupy_package=cupy-cuda13x ;;
  *)
    echo "gpu_check: CUDA major version '$major' (driver: '$driver_cuda', nvcc: '$nvcc_cuda')" \
      "has no CuPy wheel here; set PADAM_CUDA_MAJOR=12 or 13" >&2
    exit 2
    ;;
esac
log "driver CUDA $driver_cuda, nvcc ${nvcc_cuda:-none}: using $cupy_package"

# ---- the environment ---------------------------------------------------------------------------
if [ ! -x .venv/bin/python ]; then
  python=${PYTHON:-$(command -v python3.12 || command -v python3.11 || command -v python3)}
  log "creating .venv with $python"
  "$python" -m venv --system-site-packages .venv || { echo "gpu_check: venv failed" >&2; exit 3; }
fi
py=.venv/bin/python
pip() { "$py" -m pip install --disable-pip-version-check --quiet "$@"; }
has() { "$py" -c "import $1" >/dev/null 2>&1; }

for module in numpy:numpy array_api_compat:array-api-compat pytest:pytest ml_dtypes:ml_dtypes; do
  has "${module%%:*}" || { log "installing ${module#*:}"; pip "${module#*:}" || true; }
done
has padam_core || { log "installing padam (editable, no deps)"; pip --no-deps -e . || true; }

cupy_works() {
  "$py" - <<'EOF' >/dev/null 2>&1
import cupy
assert cupy.cuda.runtime.getDeviceCount() > 0
kernel = cupy.RawKernel('extern "C" __global__ void k(float* x) { x[0] = 1.0f; }', "k")
x = cupy.zeros(1, cupy.float32)
kernel((1,), (1,), (x,))
assert float(x[0]) == 1.0
EOF
}
if ! cupy_works; then
  log "installing $cupy_package"
  timeout 240 "$py" -m pip install --disable-pip-version-check --quiet "$cupy_package" || true
  if ! cupy_works; then
    log "CuPy cannot compile (no NVRTC?): trying $cupy_package[ctk]"
    timeout 240 "$py" -m pip install --disable-pip-version-check --quiet "$cupy_package[ctk]" \
      || true
  fi
fi
if ! cupy_works; then
  echo "gpu_check: no working CuPy: 'pip install $cupy_package' failed or its kernels do not" \
    "compile (NVRTC missing). Install $cupy_package (and the CUDA toolkit or" \
    "'$cupy_package[ctk]') into .venv, then run again." >&2
  "$py" -c "import cupy; cupy.show_config()" 2>&1 | tail -20 >&2
  exit 3
fi
"$py" -c "import cupy; print('CuPy', cupy.__version__, 'runtime', cupy.cuda.runtime.runtimeGetVersion())"

torch_cuda() { "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
  >/dev/null 2>&1; }
if ! torch_cuda; then
  log "torch with CUDA missing: trying torch==2.13.0 (at most ${PADAM_GPU_TORCH_TIMEOUT:-150} s)"
  timeout "${PADAM_GPU_TORCH_TIMEOUT:-150}" "$py" -m pip install --disable-pip-version-check \
    --quiet torch==2.13.0 || log "torch did not install: torch tests and rows are skipped"
fi

# ---- the tests ---------------------------------------------------------------------------------
run_tests() {  # name, timeout, pytest arguments...
  local name=$1 limit=$2
  shift 2
  log "tests: $name"
  timeout "$limit" "$py" -m pytest -q -rs -p no:cacheprovider "$@"
  local rc=$?
  if [ "$rc" -ne 0 ] && [ "$rc" -ne 5 ]; then
    log "FAILED ($rc): $name"
    status=1
  fi
}
export PYTHONPATH="$PWD:$PWD/adapters${PYTHONPATH:+:$PYTHONPATH}"
# The fused CUDA kernel: CPU build of its source, and the CuPy and torch CUDA launches.
run_tests "fused CUDA kernel" 180 tests/core/test_fused_cuda.py
# The canonical kernel and every core test on CuPy arrays (the xp fixture narrowed to cupy).
PADAM_TEST_NAMESPACES=cupy run_tests "padam_core on CuPy" 150 tests/core -m "not slow" -k cupy \
  --ignore tests/core/test_fused_cuda.py
# padam_torch's fused path on CUDA tensors (its tests, where the torch-fused work has them).
if torch_cuda && [ -f tests/torch/test_torch_fused.py ]; then
  run_tests "padam_torch fused on CUDA" 120 tests/torch/test_torch_fused.py -m "not slow" -k cuda
fi

# ---- the GPU rows ------------------------------------------------------------------------------
log "GPU table"
quick=${PADAM_GPU_QUICK:+--quick}
timeout 240 "$py" asv_bench/gpu_table.py $quick || { log "gpu_table.py failed"; status=1; }
log "done (status $status)"
exit "$status"
