#!/usr/bin/env bash
# The one command a lent GPU runs: build, self-test, CUDA tests, compute-sanitizer, benchmark
# against cuDNN and the capacity model's constants, each phase under its own timeout so that a
# hung barrier cannot eat the lease, the whole within a budget (default 470 s: under 8 minutes
# on an H200). docs/gpu_check.md says how to run it and commit what it measured.
#
#   bash benchmarks/gpu_check.sh              # on the GPU machine (results in $OUT)
#   bash benchmarks/gpu_check.sh --dry-run    # on a CPU machine: every phase that can run there
#
# Options: --dry-run, --skip-build (use the installed build), --out DIR (default: $OUT, else
# ./gpu_check_out). Environment: GPU_CHECK_BUDGET (seconds; default 470, 2400 for a dry run),
# PYTHON (default python3).
#
# What comes back (at most 8 files, flat, as the device tool returns them):
#   summary.txt               the table printed last
#   gpu_check.json            device, versions, each phase's status and time
#   selftest.json             python -m gru_cuda.selftest --json
#   bench.csv bench.json      python -m gru_cuda.bench --preset gpucheck
#   bench_tc.json             python -m gru_cuda.bench --preset tensor-cores (B 16/32/64, H 1024)
#   capacity_constants.json   benchmarks/calibrate_capacity.py
#   logs.tar.gz               every phase's full log (build, pytest + junit XML, sanitizers),
#                             and results/: both benchmarks' PNGs, the tensor-core CSV
set -uo pipefail
cd "$(dirname "$0")/.."

DRY=0
SKIP_BUILD=0
OUT_DIR="${OUT:-$PWD/gpu_check_out}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --skip-build) SKIP_BUILD=1 ;;
    --out) OUT_DIR="$2"; shift ;;
    -h|--help) sed -n '2,24p' "$0"; exit 0 ;;
    *) echo "gpu_check: unknown option $1" >&2; exit 2 ;;
  esac
  shift
done
PY="${PYTHON:-python3}"
# A dry run on a 2-core CPU machine builds and runs the CPU sanitizer tier: more time.
if [ $DRY -eq 1 ]; then BUDGET="${GPU_CHECK_BUDGET:-2400}"; else BUDGET="${GPU_CHECK_BUDGET:-470}"; fi
mkdir -p "$OUT_DIR"
WORK="$(mktemp -d)"
LOGS="$WORK/logs"
mkdir -p "$LOGS"
export PYTHONUNBUFFERED=1 KERAS_BACKEND=torch
START=$(date +%s)
declare -a NAMES STATUS SECS NOTES

elapsed() { echo $(( $(date +%s) - START )); }

# phase NAME TIMEOUT COMMAND: runs COMMAND (a bash string) under min(TIMEOUT, budget left),
# its output in $LOGS/NAME.log; records PASS / FAIL (exit code) / TIMEOUT / SKIP.
phase() {
  local name="$1" limit="$2" cmd="$3"
  local left=$(( BUDGET - $(elapsed) ))
  if [ "$left" -lt 15 ]; then
    record "$name" SKIP 0 "the ${BUDGET}s budget is spent"
    return 1
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (limit ${limit}s, ${left}s of budget left)"
  local t0=$(date +%s) rc
  timeout --kill-after=10 "$limit" bash -c "$cmd" >"$LOGS/$name.log" 2>&1
  rc=$?
  local dt=$(( $(date +%s) - t0 ))
  if [ $rc -eq 0 ]; then
    record "$name" PASS "$dt" "$(tail -n 1 "$LOGS/$name.log" | cut -c1-90)"
  else
    local st=FAIL
    [ $rc -eq 124 ] || [ $rc -eq 137 ] && st=TIMEOUT
    echo "-- last lines of $name.log:"
    tail -n 15 "$LOGS/$name.log" | cut -c1-200
    record "$name" "$st" "$dt" "exit $rc: $(grep -v '^\s*$' "$LOGS/$name.log" | tail -n 1 | cut -c1-80)"
  fi
  return $rc
}

record() {
  NAMES+=("$1"); STATUS+=("$2"); SECS+=("$3"); NOTES+=("$4")
  printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$(printf '%s' "$4" | tr '\t' ' ')" >>"$WORK/phases.tsv"
  echo "   $1: $2 (${3}s) $4"
}

skip() { record "$1" SKIP 0 "$2"; }

if [ $DRY -eq 1 ]; then
  echo "gpu_check: DRY RUN on $(hostname) — every phase that can run without a GPU"
else
  echo "gpu_check: on $(hostname), budget ${BUDGET}s"
fi

# -- env: what the machine is (never changes the card's settings)
phase env 30 "
  date -u; uname -a
  nvidia-smi || echo 'nvidia-smi: not available'
  $PY -c 'import sys, torch; print(sys.version); print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, \"cudnn\", torch.backends.cudnn.version(), \"gpu\", torch.cuda.is_available() and torch.cuda.get_device_name())'
  nvcc --version || echo 'nvcc: not found'
  compute-sanitizer --version || echo 'compute-sanitizer: not found'
  $PY -c 'import ninja; print(\"ninja\", ninja.__version__)' || which ninja || echo 'ninja: not found'
"

# -- build: ninja required (a missing ninja means a serial build that outlasts the lease)
BUILD_OK=1
if [ $SKIP_BUILD -eq 1 ]; then
  skip build "--skip-build"
else
  if ! $PY -c "from torch.utils.cpp_extension import is_ninja_available as n; raise SystemExit(0 if n() else 1)"; then
    echo "gpu_check: FATAL: ninja is not available: the build would run serially for far longer" \
         "than the lease. Install ninja (pip install ninja) and rerun." >&2
    record build FAIL 0 "ninja missing"
    BUILD_OK=0
  else
    # 16 cores build in well under 300 s; a 2-core CPU machine's dry run needs longer.
    if [ $DRY -eq 1 ]; then ARCHS="${TORCH_CUDA_ARCH_LIST:-9.0}"; BUILD_LIMIT=1500; else ARCHS=9.0; BUILD_LIMIT=300; fi
    phase build $BUILD_LIMIT "
      export TORCH_CUDA_ARCH_LIST=$ARCHS MAX_JOBS=\${MAX_JOBS:-16}
      $( [ $DRY -eq 0 ] && echo 'export GRU_CUDA_BUILD=cuda' )
      $PY -m pip install --no-build-isolation --no-deps --no-index -v -e . &&
      $PY -c 'import gru_cuda; print(\"built:\", gru_cuda.build_info())'
    " || BUILD_OK=0
  fi
fi
if [ $BUILD_OK -eq 1 ] && [ $DRY -eq 0 ]; then
  $PY -c "import gru_cuda, torch; assert gru_cuda.build_info()['cuda'] and torch.cuda.is_available()" \
    || { record build FAIL 0 "the installed build has no CUDA or no GPU is visible"; BUILD_OK=0; }
fi

if [ $BUILD_OK -eq 1 ]; then
  # -- selftest: every kernel path x dtype x convention against the float64 reference
  phase selftest 120 "$PY -m gru_cuda.selftest --json '$WORK/selftest.json'"

  # -- the CUDA tests (marker cuda); the slow CPU emulation tests are not GPU tests
  phase tests 180 "$PY -m pytest -m 'cuda and not slow' -q -p no:cacheprovider --junitxml='$LOGS/pytest_junit.xml' tests"

  # -- compute-sanitizer on the small workload that covers every path (CPU: the sanitize tier)
  if [ $DRY -eq 1 ]; then
    phase sanitize_cpu 600 "$PY -m pytest -m sanitize -q -p no:cacheprovider tests"
  elif command -v compute-sanitizer >/dev/null; then
    FILTER=""
    compute-sanitizer --help 2>&1 | grep -q -- "--kernel-name" && FILTER="--kernel-name kns=gru_cuda"
    phase memcheck 90 "PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck $FILTER --error-exitcode 1 $PY tests/cuda/cuda_sanitizer_targets.py --quick"
    phase racecheck 90 "compute-sanitizer --tool racecheck $FILTER --error-exitcode 1 $PY tests/cuda/cuda_sanitizer_targets.py --quick"
    phase synccheck 60 "compute-sanitizer --tool synccheck $FILTER --error-exitcode 1 $PY tests/cuda/cuda_sanitizer_targets.py --quick"
  else
    skip sanitizer "compute-sanitizer not found"
  fi

  # -- the benchmark against torch.nn.GRU (cuDNN), TF32 off on both sides
  if [ $DRY -eq 1 ]; then BDEV=cpu; else BDEV=cuda; fi
  phase bench 200 "$PY -m gru_cuda.bench --preset gpucheck --device $BDEV --candidates gru_cuda paths torch --tf32 off --budget 0.3 --max-repeats 15 --no-progress --out '$WORK/bench'"

  # -- the tensor-core recurrent products beside cuDNN, TF32 on for both (float32 is TF32 on
  #    both sides, bfloat16 unaffected): the goals' batch sizes at H = 1024
  if [ $DRY -eq 1 ]; then TC_SHAPE="--batch 2 --hidden 32 --seq 16"; else TC_SHAPE="--batch 16 32 64 --hidden 1024 --seq 128"; fi
  phase bench_tc 90 "$PY -m gru_cuda.bench --preset tensor-cores $TC_SHAPE --device $BDEV --modes fwd+bwd --dtypes bfloat16 float32 --candidates gru_cuda products torch --tf32 on --budget 0.2 --max-repeats 10 --no-progress --out '$WORK/bench_tc'"

  # -- the capacity model's constants, measured
  phase calibrate 60 "$PY benchmarks/calibrate_capacity.py --quick --out '$WORK/capacity_constants.json'"
else
  for p in selftest tests sanitizer bench bench_tc calibrate; do skip $p "no build"; done
fi

# -- pack: at most 8 files back; the plots and the tensor-core CSV (its JSON has the same rows)
#    travel in logs.tar.gz under results/
for f in "$WORK/selftest.json" "$WORK/capacity_constants.json"; do
  [ -f "$f" ] && cp "$f" "$OUT_DIR/"
done
mkdir -p "$WORK/results"
for ext in csv json png; do
  f=$(ls "$WORK"/bench/*."$ext" 2>/dev/null | head -n 1)
  if [ -n "$f" ]; then
    if [ "$ext" = png ]; then cp "$f" "$WORK/results/bench.png"; else cp "$f" "$OUT_DIR/bench.$ext"; fi
  fi
  f=$(ls "$WORK"/bench_tc/*."$ext" 2>/dev/null | head -n 1)
  if [ -n "$f" ]; then
    if [ "$ext" = json ]; then cp "$f" "$OUT_DIR/bench_tc.json"; else cp "$f" "$WORK/results/bench_tc.$ext"; fi
  fi
done
total=$(elapsed)
DRY=$DRY TOTAL=$total BUDGET=$BUDGET PHASES="$WORK/phases.tsv" $PY - >"$OUT_DIR/gpu_check.json" <<'EOF' \
  || echo '{"error": "could not write the metadata"}' >"$OUT_DIR/gpu_check.json"
import datetime, json, os, platform
meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
        "dry_run": os.environ["DRY"] == "1", "total_s": int(os.environ["TOTAL"]),
        "budget_s": int(os.environ["BUDGET"]), "host": platform.node(),
        "python": platform.python_version()}
try:
    import torch
    meta.update(torch=torch.__version__, cuda=torch.version.cuda,
                cudnn=torch.backends.cudnn.version(),
                device_name=torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu")
    import gru_cuda
    meta.update(gru_cuda=gru_cuda.__version__, build=gru_cuda.build_info())
except Exception as e:  # a failed build still reports its phases
    meta["import_error"] = repr(e)
phases = []
with open(os.environ["PHASES"]) as f:
    for line in f:
        name, status, secs, note = (line.rstrip("\n").split("\t") + [""] * 4)[:4]
        phases.append({"phase": name, "status": status, "seconds": int(secs), "note": note})
meta["phases"] = phases
print(json.dumps(meta, indent=2))
EOF
tar -czf "$OUT_DIR/logs.tar.gz" -C "$WORK" logs results

# -- the summary table, printed last (the benchmark's speedups and the self-test's count first)
# (failures counted here: a count made inside the piped block below would be lost with its
# subshell, and the exit status would always be 0)
failed=0
for st in "${STATUS[@]}"; do
  case "$st" in FAIL|TIMEOUT) failed=$((failed + 1)) ;; esac
done
{
  echo
  if [ -f "$LOGS/bench.log" ]; then
    sed -n '/^Speedup of gru_cuda/,/^$/p' "$LOGS/bench.log" | head -n 20 | cut -c1-160
  fi
  if [ -f "$LOGS/bench_tc.log" ]; then
    echo "tensor-core products (B 16/32/64, H 1024, fwd+bwd):"
    sed -n '/^Speedup of gru_cuda/,/^$/p' "$LOGS/bench_tc.log" | head -n 24 | cut -c1-160
    sed -n '/^Goals of the tensor-core products/,$p' "$LOGS/bench_tc.log" | head -n 6 | cut -c1-160
  fi
  [ -f "$LOGS/selftest.log" ] && grep -E '^selftest:' "$LOGS/selftest.log" | tail -n 1
  echo "gpu_check summary ($([ $DRY -eq 1 ] && echo 'dry run, ')${total}s of ${BUDGET}s)"
  printf '%-14s %-8s %6s  %s\n' phase status secs note
  for i in "${!NAMES[@]}"; do
    printf '%-14s %-8s %6s  %s\n' "${NAMES[$i]}" "${STATUS[$i]}" "${SECS[$i]}" "${NOTES[$i]}"
  done
  echo "files in $OUT_DIR: $(cd "$OUT_DIR" && ls | tr '\n' ' ')"
} | tee "$OUT_DIR/summary.txt"
rm -rf "$WORK"
[ $failed -eq 0 ]
