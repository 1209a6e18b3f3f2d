#!/usr/bin/env bash
# CUDA compile check; needs nvcc, no GPU, and works with a CPU-only torch.
#
#   1. Skips (exit 0) with a clear message where nvcc is absent.
#   2. Builds csrc/kernels/ alone as a static library with CMake (CUDA archs 80 and 90) from a
#      clean build directory, so that ptxas reports every kernel, and fails if any kernel spills.
#      Rule: every kernel in csrc/kernels/ runs once per time step, over all T·B rows, or is a
#      persistent kernel running the whole sequence, so none is cold; any non-zero
#      "bytes spill stores" or "bytes spill loads" fails the check. A spill that has been
#      judged acceptable can be let through by name with GRU_CUDA_SPILL_ALLOWLIST (a Python
#      regex on the demangled kernel name; say why where it is set); it is still reported.
#      Prints registers per kernel family: the default pair (tanh, sigmoid) and the range over
#      all instantiations.
#   3. Compile-checks (nvcc -c, host C++, not linked) every csrc/cuda/*.cpp against the installed
#      torch's headers, as setup.py's CUDA build compiles them, with -Wall -Wextra -Werror.
#
# Environment: MAX_JOBS (default 2) parallel compile jobs; GRU_CMAKE_BUILD_DIR (default
# cmake-build); PYTHON (default python3, or python); GRU_CUDA_SPILL_ALLOWLIST (see 2.).
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v nvcc >/dev/null 2>&1; then
  echo "skipping CUDA compile check: nvcc not found"
  exit 0
fi
if ! command -v cmake >/dev/null 2>&1; then
  echo "CUDA compile check: nvcc is installed but cmake is not; install cmake (>= 3.18)" >&2
  exit 1
fi
PYTHON=${PYTHON:-$(command -v python3 || command -v python)}
JOBS=${MAX_JOBS:-2}
BUILD_DIR=${GRU_CMAKE_BUILD_DIR:-cmake-build}
LOG_DIR=$(mktemp -d)
trap 'rm -rf "$LOG_DIR"' EXIT

echo "== CUDA compile check: $(nvcc --version | tail -n 2 | head -n 1)"

# ---- 2. kernels -------------------------------------------------------------------------------
GENERATOR=()
if command -v ninja >/dev/null 2>&1; then GENERATOR=(-G Ninja); fi
rm -rf "$BUILD_DIR"
start=$(date +%s)
if ! cmake -S . -B "$BUILD_DIR" "${GENERATOR[@]}" >"$LOG_DIR/configure.log" 2>&1; then
  cat "$LOG_DIR/configure.log"
  echo "CUDA compile check: CMake configure failed" >&2
  exit 1
fi
if ! cmake --build "$BUILD_DIR" -j "$JOBS" >"$LOG_DIR/build.log" 2>&1; then
  grep -v "^ptxas info\|^    [0-9]* bytes stack frame" "$LOG_DIR/build.log" | tail -n 60
  echo "CUDA compile check: nvcc build of csrc/kernels failed" >&2
  exit 1
fi
echo "   kernels (archs 80;90, -j $JOBS) built in $(( $(date +%s) - start )) s"

"$PYTHON" - "$LOG_DIR/build.log" <<'EOF'
import collections, os, re, shutil, subprocess, sys

entries, current = [], None
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"Compiling entry function '(\S+)' for '(sm_\d+)'", line)
    if m:
        current = [m.group(1), m.group(2), None, None]
        continue
    m = re.search(r"(\d+) bytes spill stores, (\d+) bytes spill loads", line)
    if m and current:
        current[3] = (int(m.group(1)), int(m.group(2)))
    m = re.search(r"Used (\d+) registers", line)
    if m and current:
        current[2] = int(m.group(1))
        entries.append(current)
        current = None
if not entries:
    sys.exit("CUDA compile check: no ptxas resource report found in the build log")

names = [e[0] for e in entries]
if shutil.which("c++filt"):
    out = subprocess.run(["c++filt"], input="\n".join(names), capture_output=True, text=True)
    if out.returncode == 0 and len(out.stdout.splitlines()) == len(names):
        names = out.stdout.splitlines()
short = {"float": "f32", "double": "f64", "__half": "f16", "__nv_bfloat16": "bf16"}
allow = os.environ.get("GRU_CUDA_SPILL_ALLOWLIST", "")
rows = collections.defaultdict(list)
default = {}
spills, allowed = [], []
for (mangled, arch, regs, spill), name in zip(entries, names):
    if spill and any(spill):
        line = f"{arch} {name}: {spill[0]} bytes spill stores, {spill[1]} bytes spill loads"
        (allowed if allow and re.search(allow, name) else spills).append(line)
    # "kernel_name<dtype, ints...>": group by (kernel, dtype, arch)
    plain = name.replace("(anonymous namespace)::", "")
    m = re.search(r"(\w+_kernel\w*)<([^<>]*)>", plain) or re.search(r"(\w+)<([^<>]*)>", plain)
    if not m:  # not a template: its own row
        fn = re.search(r"(\w+)\s*\(", plain)
        key = ((fn.group(1) if fn else plain)[-36:], "-", arch)
        rows[key].append(regs)
        continue
    kernel, params = m.group(1), [p.strip() for p in m.group(2).split(",")]
    key = (kernel, short.get(params[0], params[0][:5]), arch)
    rows[key].append(regs)
    tail = params[1:]
    # the default pair: (tanh, sigmoid) = (0, 1), or sigmoid (1) for the one-activation kernels
    if tail in ([], ["1"], ["0", "1"]):
        default[key] = regs

print(f"   {len(entries)} kernels; registers per thread (default pair tanh/sigmoid, range over all pairs):")
print(f"   {'kernel':36s} {'dtype':5s} {'arch':6s} {'default':>7s} {'min':>4s} {'max':>4s}")
for key in sorted(rows):
    regs = rows[key]
    print(f"   {key[0]:36s} {key[1]:5s} {key[2]:6s} {default.get(key, '-'):>7} {min(regs):>4} {max(regs):>4}")
for line in allowed:
    print("   allowed spill (GRU_CUDA_SPILL_ALLOWLIST):", line)
if spills:
    print("\n".join(spills))
    sys.exit(f"CUDA compile check: {len(spills)} kernel(s) spill registers (see above)")
print("   no kernel spills" if not allowed else "   no other kernel spills")
EOF

# ---- 3. binding sources (and csrc/*.cpp, compiled with GRU_CUDA_WITH_CUDA as in a CUDA build) ----
if ! "$PYTHON" -c "import torch" >/dev/null 2>&1; then
  echo "skipping the binding compile check: torch is not importable by $PYTHON"
  exit 0
fi
mapfile -t INCLUDES < <("$PYTHON" - <<'EOF'
import sysconfig
import torch.utils.cpp_extension as ext
for p in ext.include_paths():
    print(p)
print(sysconfig.get_paths()["include"])
EOF
)
SYSTEM_INCLUDES=()
for dir in "${INCLUDES[@]}"; do SYSTEM_INCLUDES+=(-isystem "$dir"); done
start=$(date +%s)
for src in csrc/*.cpp csrc/cuda/*.cpp; do  # csrc/*.cpp: their GRU_CUDA_WITH_CUDA branches
  [ -e "$src" ] || continue
  # CPU torch ships c10/cuda headers but not the generated cuda_cmake_macros.h.
  if ! nvcc -c -std=c++20 -DC10_CUDA_NO_CMAKE_CONFIGURE_FILE -DGRU_CUDA_WITH_CUDA -Icsrc \
      "${SYSTEM_INCLUDES[@]}" -Xcompiler -fPIC,-Wall,-Wextra,-Werror \
      "$src" -o "$LOG_DIR/$(basename "$src").o" >"$LOG_DIR/binding.log" 2>&1; then
    cat "$LOG_DIR/binding.log"
    echo "CUDA compile check: $src does not compile against torch's headers" >&2
    exit 1
  fi
  echo "   $src compiles"
done
echo "   binding compile check took $(( $(date +%s) - start )) s"
echo "== CUDA compile check passed"
