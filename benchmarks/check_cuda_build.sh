#!/usr/bin/env bash
# The full CUDA build of gru_cuda._C against a CUDA build of torch (default torch==2.11.0, the
# GPU machines' torch), on a machine without a GPU: nvcc compiles every kernel and the linker
# resolves every symbol, which the CPU build and .ci/cuda_compile_check.sh (kernels as a
# static library, bindings compiled but never linked) do not show.
#
#   bash benchmarks/check_cuda_build.sh
#
# Steps, each timed:
#   1. a virtual environment with the CUDA torch, numpy, ninja, setuptools and wheel: created on
#      the first run (a download of several GB: torch and its nvidia runtime packages), reused
#      after that;
#   2. the committed tree (`git archive`, so no build/ and no .so) copied into a scratch folder,
#      so that the in-place CPU build of this checkout is left alone;
#   3. there, `GRU_CUDA_BUILD=cuda pip install --no-build-isolation -e .` with the local nvcc;
#   4. from outside the tree: gru_cuda imports, _C loads, build_info()['cuda'] is True, the
#      CUDA-only bindings exist, and gru_forward / gru_backward have CUDA kernels registered.
# Ends with a PASS or FAIL line (exit status 0 or 1).
#
# Needs: git, python3 (with venv), nvcc whose CUDA major version matches the torch's (torch's
# cpp_extension refuses a major mismatch). Takes 10-30 minutes on 2 cores (nvcc).
#
# Environment:
#   GRU_CHECK_VENV   the virtual environment (default: ${XDG_CACHE_HOME:-$HOME/.cache}/gru_cuda/venv-torch211)
#   GRU_CHECK_TORCH  the torch requirement installed there (default: torch==2.11.0)
#   GRU_CHECK_REF    the commit to build (default: HEAD)
#   GRU_CHECK_KEEP=1 keep the scratch folder and the editable install afterwards
#   TORCH_CUDA_ARCH_LIST (default 9.0), MAX_JOBS (default 2): as for setup.py
#   PYTHON           the interpreter that creates the venv (default: python3)
#   CUDA_HOME        the CUDA toolkit (default: the one of the nvcc on PATH, else /usr/local/cuda)
set -uo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
VENV=${GRU_CHECK_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/gru_cuda/venv-torch211}
TORCH_SPEC=${GRU_CHECK_TORCH:-torch==2.11.0}
REF=${GRU_CHECK_REF:-HEAD}
ARCHS=${TORCH_CUDA_ARCH_LIST:-9.0}
JOBS=${MAX_JOBS:-2}
PY=${PYTHON:-python3}

SCRATCH=$(mktemp -d "${TMPDIR:-/tmp}/gru_cuda_check.XXXXXX")
LOG="$SCRATCH/build.log"
T0=$(date +%s)
step_start=$T0

cleanup() {
  if [ "${GRU_CHECK_KEEP:-0}" = 1 ]; then
    echo "kept: $SCRATCH (build log: $LOG)"
  else
    # The editable install points into the scratch folder: remove it with the folder.
    [ -x "$VENV/bin/pip" ] && "$VENV/bin/pip" uninstall -y -q gru_cuda >/dev/null 2>&1
    rm -rf "$SCRATCH"
  fi
}
trap cleanup EXIT

step() {  # step NAME: prints the heading and starts the step's timer
  step_start=$(date +%s)
  echo "== $1"
}
done_step() {
  echo "   done in $(( $(date +%s) - step_start )) s"
}
fail() {
  echo "FAIL: $* (after $(( $(date +%s) - T0 )) s)"
  exit 1
}

command -v nvcc >/dev/null 2>&1 || fail "nvcc not found on PATH"
NVCC_VERSION=$(nvcc --version | sed -n 's/.*release \([0-9][0-9.]*\).*/\1/p')
# torch takes CUDA_HOME from the environment, else from nvcc's place on PATH; an nvcc on PATH
# that is a wrapper script (e.g. /usr/local/bin/nvcc) gives a folder without the CUDA headers.
if [ -z "${CUDA_HOME:-}" ]; then
  for dir in "$(dirname "$(dirname "$(readlink -f "$(command -v nvcc)")")")" /usr/local/cuda; do
    if [ -f "$dir/include/cuda_runtime_api.h" ] && [ -x "$dir/bin/nvcc" ]; then
      export CUDA_HOME=$dir
      break
    fi
  done
  [ -n "${CUDA_HOME:-}" ] || fail "no CUDA toolkit with include/cuda_runtime_api.h found: set CUDA_HOME"
fi
echo "check_cuda_build: $TORCH_SPEC, nvcc $NVCC_VERSION, TORCH_CUDA_ARCH_LIST=$ARCHS, MAX_JOBS=$JOBS"
echo "venv: $VENV; CUDA_HOME=$CUDA_HOME"

# ---- 1. the venv ----------------------------------------------------------------------------
step "1. venv with $TORCH_SPEC (CUDA), numpy, ninja, setuptools, wheel"
if [ ! -x "$VENV/bin/python" ]; then
  mkdir -p "$(dirname "$VENV")"
  "$PY" -m venv "$VENV" || fail "could not create the venv $VENV"
fi
if ! "$VENV/bin/python" - "$TORCH_SPEC" >/dev/null 2>&1 <<'EOF'
import sys
import ninja, numpy, setuptools, torch, wheel  # noqa: F401
spec = sys.argv[1]  # "torch==X.Y.Z" pins the version; any other requirement is taken as met
if spec.startswith("torch=="):
    assert torch.__version__.split("+")[0] == spec[len("torch=="):]
assert torch.version.cuda is not None
EOF
then
  echo "   installing (the first time: several GB) ..."
  "$VENV/bin/pip" install -q "$TORCH_SPEC" numpy ninja "setuptools>=64" wheel \
    >"$SCRATCH/pip-venv.log" 2>&1 || { tail -n 30 "$SCRATCH/pip-venv.log"; fail "pip install into $VENV failed"; }
fi
TORCH_INFO=$("$VENV/bin/python" -c "import torch; print(torch.__version__, torch.version.cuda)" 2>/dev/null) \
  || fail "torch does not import in $VENV"
echo "   torch ${TORCH_INFO% *}, built for CUDA ${TORCH_INFO#* }"
TORCH_CUDA=${TORCH_INFO#* }
[ "$TORCH_CUDA" != None ] || fail "$TORCH_SPEC in $VENV is a CPU-only build"
[ "${TORCH_CUDA%%.*}" = "${NVCC_VERSION%%.*}" ] \
  || fail "torch is built for CUDA $TORCH_CUDA but nvcc is $NVCC_VERSION: torch's cpp_extension refuses a major-version mismatch"
done_step

# ---- 2. the committed tree in a scratch folder -------------------------------------------------
step "2. $REF of $REPO into $SCRATCH/src"
mkdir -p "$SCRATCH/src"
git -C "$REPO" archive "$REF" | tar -x -C "$SCRATCH/src" || fail "git archive $REF failed"
echo "   $(git -C "$REPO" rev-parse --short "$REF"): $(find "$SCRATCH"/src/csrc -name "*.cu" -o -name "*.cpp" | wc -l) sources"
done_step

# ---- 3. the CUDA build ----------------------------------------------------------------------
step "3. GRU_CUDA_BUILD=cuda pip install --no-build-isolation -e . (log: $LOG)"
# The venv's bin/ first on PATH: torch's build looks for ninja there.
if ! (cd "$SCRATCH/src" && PATH="$VENV/bin:$PATH" GRU_CUDA_BUILD=cuda TORCH_CUDA_ARCH_LIST="$ARCHS" \
      MAX_JOBS="$JOBS" "$VENV/bin/pip" install -v --no-build-isolation --no-deps -e . >"$LOG" 2>&1); then
  grep -n "error\|undefined reference\|Error" "$LOG" | grep -v "^.*-Werror\|Wno-error" | head -n 40
  tail -n 40 "$LOG"
  fail "the CUDA build failed (log: $LOG; GRU_CHECK_KEEP=1 keeps it)"
fi
echo "   $(grep -c "^ *\[[0-9]*/[0-9]*\] " "$LOG") compile/link steps, $(grep -ci "warning" "$LOG") lines with \"warning\" in the log"
done_step

# ---- 4. the import check, from outside the tree ------------------------------------------------
step "4. import check"
if ! (cd "$SCRATCH" && "$VENV/bin/python" - <<'EOF'
import torch
import gru_cuda
from gru_cuda import _C

info = gru_cuda.build_info()
print("   build_info:", info)
assert info["cuda"] is True, "build_info()['cuda'] is not True: a CPU-only build"
assert info["torch_version_at_build"].split("+")[0] == torch.__version__.split("+")[0], info
missing = [n for n in ("persistent_device_caps", "persistent_barrier_latency_us",
                       "persistent_set_path", "persistent_last_path", "cuda_device_capacity")
           if not hasattr(_C, n)]
assert not missing, f"CUDA-only bindings missing from _C: {missing}"
for op in ("gru_cuda::gru_forward", "gru_cuda::gru_backward"):
    for key in ("CPU", "CUDA"):
        assert torch._C._dispatch_has_kernel_for_dispatch_key(op, key), f"{op} has no {key} kernel"
print("   _C loads from", _C.__file__)
print("   CUDA-only bindings present; gru_forward/gru_backward have CPU and CUDA kernels")
# The CPU op still runs in this build (no GPU needed).
x = torch.randn(2, 3, 4, dtype=torch.float64)
out = gru_cuda.functional.gru(x, torch.randn(4, 3 * 5, dtype=torch.float64) * 0.3,
                              torch.randn(5, 3 * 5, dtype=torch.float64) * 0.3)
print("   CPU forward ran:", tuple(out[0].shape) if isinstance(out, tuple) else tuple(out.shape))
EOF
); then
  fail "the import check failed"
fi
done_step

echo "PASS: CUDA build of $(git -C "$REPO" rev-parse --short "$REF") against torch ${TORCH_INFO% *} (CUDA $TORCH_CUDA), archs $ARCHS, in $(( $(date +%s) - T0 )) s"
