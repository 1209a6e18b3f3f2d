"""Builds of the host emulation kit (tests/emulation/), shared by the tests beside it:
test_cuda_host_emulation.py (the stepwise binding as a torch extension),
test_persistent_host_emulation.py (the persistent kernels as a Python module) and
test_sanitize.py (a torch-free driver under ThreadSanitizer or AddressSanitizer + UBSan).

Kernel sources are never edited: `<<<>>>` launches (which a host compiler cannot parse) are
rewritten into emu::launch calls in copies under the build directory, and a planted bug is a
rewritten copy too, found first on the include path.
"""
import functools
import hashlib
import os
import pathlib
import re
import shutil
import subprocess
import sysconfig

ROOT = pathlib.Path(__file__).resolve().parents[2]
KIT = pathlib.Path(__file__).resolve().parent
CSRC = ROOT / "csrc"
PRELUDE = KIT / "cuda_emu.h"


def cuda_include():
    """The CUDA toolkit's include directory (cuda_runtime_api.h, cuda_fp16.h), or None."""
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if base and (pathlib.Path(base) / "include" / "cuda_fp16.h").exists():
            return pathlib.Path(base) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = pathlib.Path(nvcc).resolve().parents[1] / "include"
        if (inc / "cuda_fp16.h").exists():
            return inc
    return None


def build_dir(name):
    """build/<name>, or $GRU_EMU_BUILD_DIR/<name>."""
    base = os.environ.get("GRU_EMU_BUILD_DIR")
    return (pathlib.Path(base) if base else ROOT / "build") / name


def write_if_changed(path, text):
    """Rewrites only on change, so that the build caches (mtimes) hold."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


# ---- the stepwise family: launch rewriting -----------------------------------------------------

def kernel_kinds(src):
    """{kernel name: (uses __syncthreads, has a static __shared__ array)} of a source text."""
    names = re.findall(r"__global__\s+void(?:\s+__launch_bounds__\([^)]*\))?\s+(\w+)\s*\(", src)
    kinds = {}
    for name in names:
        start = src.find(name + "(")
        nxt = src.find("__global__", start)
        body = src[start: nxt if nxt > 0 else len(src)]
        kinds[name] = ("__syncthreads" in body, "__shared__" in body)
    return kinds


def _split_top_level(s):
    parts, depth, cur = [], 0, ""
    for ch in s:
        depth += ch in "([{<"
        depth -= ch in ")]}>"
        if ch == "," and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    return parts + [cur.strip()]


def rewrite_launches(src, kinds):
    """`k<<<grid, block, smem, stream>>>(args);` -> `emu::launch(grid, block, kind, [&] {...});`"""
    pattern = re.compile(r"(\b[A-Za-z_]\w*(?:<[^;{}]*?>)?)\s*<<<(.*?)>>>\s*\((.*?)\);", re.S)

    def launch(m):
        fn, config, args = m.groups()
        grid, block = _split_top_level(config)[:2]
        name = fn.split("<")[0].strip()
        if name not in kinds:
            raise RuntimeError(f"launch of an unknown kernel {name!r}")
        barrier, static_shared = kinds[name]
        kind = f"emu::LaunchKind{{{str(barrier).lower()}, {str(static_shared).lower()}}}"
        return f"emu::launch({grid}, {block}, {kind}, [&] {{ {fn}({args}); }});"

    out = pattern.sub(launch, src)
    if "<<<" in out:
        raise RuntimeError("a kernel launch was not rewritten")
    return out


STEPWISE_SOURCES = ("kernels/step/gru_step_kernels.cuh", "kernels/step/gru_utility_kernels.cu")


def write_stepwise_kernels(src_dir, restrict_activations=False, texts=None):
    """Writes the launch-rewritten copies kernels/step/gru_step_kernels.cuh and
    kernels/emu_utility_kernels.cpp under src_dir. restrict_activations: the step launchers
    dispatch through sd_dispatch (sanitize_stepwise.cpp: two activation pairs) instead of every
    pair, which keeps the sanitizer builds short. texts: {STEPWISE_SOURCES entry: source text}
    in place of the file's (a planted bug)."""
    texts = texts or {}
    step, util = (texts.get(rel) or (CSRC / rel).read_text() for rel in STEPWISE_SOURCES)
    kinds = {**kernel_kinds(step), **kernel_kinds(util)}
    step = rewrite_launches(step, kinds)
    if restrict_activations:
        n_pair, n_one = step.count("dispatch_activation_pair("), step.count("dispatch_activation(")
        if n_pair == 0 or n_one == 0:
            raise RuntimeError("gru_step_kernels.cuh: no activation dispatch found to restrict")
        step = step.replace("dispatch_activation_pair(", "::sd_dispatch::pair(")
        step = step.replace("dispatch_activation(", "::sd_dispatch::one(")
    return (write_if_changed(src_dir / "kernels/step/gru_step_kernels.cuh", step),
            write_if_changed(src_dir / "kernels/emu_utility_kernels.cpp",
                             rewrite_launches(util, kinds)))


# ---- tests/emulation/test_cuda_host_emulation.py: the stepwise binding as a torch extension ----

def rewrite(path, replacements):
    """The text of a binding source with each (old, new) replaced; every old must occur. The
    text starts with stepwise_poison.h, which defines the emu::empty* the renames call."""
    text = path.read_text()
    for old, new in replacements:
        if old not in text:
            raise RuntimeError(f"{path.name}: {old!r} not found")
        text = text.replace(old, new)
    return '#include "stepwise_poison.h"\n' + text


def stepwise_extension():
    """Compiles the CUDA op implementation (csrc/cuda/gru_cuda_impl.cpp), its stepwise path
    (csrc/cuda/stepwise.cpp) and the stepwise kernels for the host against ATen and registers
    the ops as torch.ops.gru_emu (CPU), the path choice stubbed out to stepwise (the persistent
    kernels have their own emulation). Buffers the binding allocates start as NaN
    (stepwise_poison.h)."""
    from torch.utils.cpp_extension import load
    import torch

    inc = cuda_include()
    build = build_dir("cuda_host_emulation")
    src = build / "src"
    util = write_stepwise_kernels(src)[1]
    families = ("FORWARD_RESET_AFTER", "FORWARD_RESET_BEFORE", "BACKWARD_RESET_AFTER",
                "BACKWARD_RESET_BEFORE")
    step_sources = []
    for dtype, short in (("float", "f32"), ("double", "f64"), ("__half", "f16"),
                         ("__nv_bfloat16", "bf16")):
        step_sources.append(write_if_changed(
            src / f"kernels/emu_step_{short}.cpp",
            '#include "kernels/step/gru_step_kernels.cuh"\n'
            + "".join(f"GRU_INSTANTIATE_{f}({dtype})\n" for f in families)))

    # The op implementation and the stepwise path, their buffers poisoned; the path choice is
    # path_choice_stub.cpp (always stepwise).
    renames = (("at::empty(", "emu::empty("), ("at::empty_like(", "emu::empty_like("))
    binding = rewrite(CSRC / "cuda/gru_cuda_impl.cpp",
                      (("x.is_cuda()", "x.is_cpu()"),
                       ("TORCH_LIBRARY_IMPL(gru_cuda, CUDA, m)",
                        "TORCH_LIBRARY_IMPL(gru_emu, CPU, m)"), *renames))
    stepwise = rewrite(CSRC / "cuda/stepwise.cpp", renames[:1])
    schemas = re.search(r"TORCH_LIBRARY\(gru_cuda, m\) \{(.*?)\n\}",
                        (CSRC / "gru_ops.cpp").read_text(), re.S)
    binding += "\nTORCH_LIBRARY(gru_emu, m) {" + schemas.group(1) + "\n}\n"
    impl = write_if_changed(src / "cuda/emu_impl.cpp", binding)
    step_path = write_if_changed(src / "cuda/emu_stepwise.cpp", stepwise)
    sources = [impl, step_path, KIT / "path_choice_stub.cpp", CSRC / "gru_checks.cpp", util,
               *step_sources]
    os.environ.setdefault("MAX_JOBS", "2")
    load(name="gru_cuda_host_emulation", sources=[str(s) for s in sources],
         build_directory=str(build), is_python_module=False,
         extra_include_paths=[str(src), str(KIT / "shim"), str(KIT), str(CSRC), str(inc)],
         extra_cflags=["-O1", "-std=c++20", "-include", str(PRELUDE)])
    return torch.ops.gru_emu


# ---- tests/emulation/test_persistent_host_emulation.py: the persistent kernels as a module -----

PKEMU_TUS = ("pkemu_module.cpp", "pkemu_runs_f32.cpp", "pkemu_runs_f16.cpp",
             "pkemu_runs_bf16.cpp")


def pkemu_module(jobs=2):
    """Compiles the `pkemu` Python module (pkemu_module.cpp and the per-dtype launches of
    pkemu_runs_<dtype>.cpp: persistent_harness.h + persistent_kernels.cuh) and imports it;
    each translation unit is rebuilt when a source it depends on is newer than its object."""
    import importlib.util
    from concurrent.futures import ThreadPoolExecutor

    import torch.utils.cpp_extension as ext

    inc = cuda_include()
    build = build_dir("persistent_emu")
    build.mkdir(parents=True, exist_ok=True)
    target = build / f"pkemu{sysconfig.get_config_var('EXT_SUFFIX')}"
    cxx = os.environ.get("CXX", "g++")
    flags = ["-O2", "-std=c++20", "-fPIC", "-pthread", "-include", str(PRELUDE), f"-I{KIT}",
             f"-I{CSRC}", "-isystem", str(inc)]
    for p in ext.include_paths() + [sysconfig.get_paths()["include"]]:
        flags += ["-isystem", p]
    objs = [build / (pathlib.Path(tu).stem + ".o") for tu in PKEMU_TUS]
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(_compile, cxx, flags, KIT / tu, obj)
                  for tu, obj in zip(PKEMU_TUS, objs)]:
            f.result()
    if not target.exists() or any(o.stat().st_mtime > target.stat().st_mtime for o in objs):
        link = [cxx, "-shared", "-pthread", *map(str, objs), "-o", str(target)]
        res = subprocess.run(link, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError("pkemu link failed:\n" + res.stderr[-4000:])
    spec = importlib.util.spec_from_file_location("pkemu", target)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- tests/emulation/test_sanitize.py: the torch-free driver under a sanitizer ----------------

SANITIZERS = {
    # ThreadSanitizer: every stepwise kernel runs as threads too (GRU_EMU_ALL_THREADS).
    "tsan": ["-fsanitize=thread", "-DGRU_EMU_ALL_THREADS"],
    "asan": ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
             "-fno-omit-frame-pointer"],
}
RUN_ENV = {
    "tsan": {"TSAN_OPTIONS": "halt_on_error=1 exitcode=66 report_signal_unsafe=0"},
    "asan": {"ASAN_OPTIONS": "halt_on_error=1:detect_leaks=1:exitcode=67",
             "UBSAN_OPTIONS": "halt_on_error=1:print_stacktrace=1"},
}
REPORTS = ("WARNING: ThreadSanitizer", "ERROR: AddressSanitizer", "runtime error:",
           "ERROR: LeakSanitizer")

# The driver's translation units (tests/emulation/) and which kernel family each compiles.
DRIVER_TUS = {"driver": "sanitize_driver.cpp", "stepwise": "sanitize_stepwise.cpp",
              "persistent": "sanitize_persistent.cpp"}

# Planted bugs for the test-only builds: (translation unit, kernel source, the distinctive code
# that must be found exactly once, its replacement, the family option of the driver run).
PLANTS = {
    # The barrier between the cluster forward's recurrent product (written to shared memory by
    # one lane per value) and the pointwise part that reads it from other warps.
    "missing_barrier": ("persistent", "kernels/persistent/cluster.cuh",
                        "    recurrent_product<T>(sm, geo, cur, q != nullptr, rows, 0, "
                        "kRA ? 3 : 2);\n"
                        "    __syncthreads();\n",
                        "    recurrent_product<T>(sm, geo, cur, q != nullptr, rows, 0, "
                        "kRA ? 3 : 2);\n",
                        "--persistent"),
    # The barrier between the column-sum kernel's per-lane partial sums in shared memory and the
    # first lane row that adds them up (the stepwise family's one kernel with a barrier).
    "missing_barrier_stepwise": ("stepwise", "kernels/step/gru_utility_kernels.cu",
                                 "  lane_sums[threadIdx.y][threadIdx.x] = sum;\n"
                                 "  __syncthreads();\n",
                                 "  lane_sums[threadIdx.y][threadIdx.x] = sum;\n", "--stepwise"),
    # The column bound of every stepwise elementwise kernel: one column past each row, i.e. one
    # element past the end of an exactly sized buffer on the last row.
    "off_by_one": ("stepwise", "kernels/step/gru_device.cuh",
                   "col < (cols))", "col <= (cols))", "--stepwise"),
}


@functools.lru_cache(maxsize=None)
def sanitizer_skip_reason(sanitizer):
    """Why the sanitizer build cannot run here (None when it can)."""
    if cuda_include() is None:
        return "needs the CUDA toolkit headers (cuda_runtime_api.h, cuda_fp16.h)"
    cxx = os.environ.get("CXX", "g++")
    if shutil.which(cxx) is None:
        return f"no C++ compiler {cxx!r}"
    probe = build_dir("emulation_sanitize") / f"probe_{sanitizer}"
    probe.mkdir(parents=True, exist_ok=True)
    (probe / "p.cpp").write_text(
        "#include <thread>\nint main() { std::thread t([] {}); t.join(); }\n")
    res = subprocess.run([cxx, "-std=c++20", "-pthread", *SANITIZERS[sanitizer],
                          str(probe / "p.cpp"), "-o", str(probe / "p")],
                         capture_output=True, text=True)
    if res.returncode != 0:
        return f"{cxx} cannot build with {' '.join(SANITIZERS[sanitizer])}: {res.stderr[-500:]}"
    return None


def planted_source(plant):
    """The kernel source with the planted bug; raises (never skips) when the site is gone."""
    _, rel, needle, replacement, _ = PLANTS[plant]
    text = (CSRC / rel).read_text()
    n = text.count(needle)
    if n != 1:
        raise AssertionError(f"planted bug {plant!r}: expected the code {needle!r} exactly once in "
                             f"csrc/{rel}, found it {n} times; choose a new site in builder.PLANTS")
    return text.replace(needle, replacement)


def _deps_newer(obj, dep_file):
    if not obj.exists() or not dep_file.exists():
        return True
    deps = dep_file.read_text().replace("\\\n", " ").split(":", 1)[-1].split()
    t = obj.stat().st_mtime
    return any(not pathlib.Path(d).exists() or pathlib.Path(d).stat().st_mtime > t for d in deps)


def _compile(cxx, flags, src, obj):
    """Compiles src into obj unless obj is newer than every dependency and the flags are the
    same."""
    cmd = [cxx, *flags, "-MMD", "-MF", str(obj.with_suffix(".d")), "-c", str(src), "-o", str(obj)]
    stamp = obj.with_suffix(".cmd")
    key = hashlib.sha256(" ".join(cmd).encode()).hexdigest()
    if not _deps_newer(obj, obj.with_suffix(".d")) and stamp.exists() and stamp.read_text() == key:
        return
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"compile failed: {' '.join(cmd)}\n{res.stderr[-6000:]}")
    stamp.write_text(key)


def driver(sanitizer, plant=None, jobs=2):
    """Builds (cached under build/emulation_sanitize) the driver under `sanitizer` ("tsan" or
    "asan"), optionally with a planted bug, and returns the executable's path. A planted build
    recompiles only the translation unit that includes the planted source."""
    from concurrent.futures import ThreadPoolExecutor

    cxx = os.environ.get("CXX", "g++")
    inc = cuda_include()
    base = build_dir("emulation_sanitize") / sanitizer
    write_stepwise_kernels(base / "src", restrict_activations=True)
    includes = [f"-I{KIT}", f"-I{base / 'src'}", f"-I{CSRC}", "-isystem", str(inc)]
    common = ["-std=c++20", "-g", "-O1", "-pthread", "-include", str(PRELUDE),
              *SANITIZERS[sanitizer]]
    objs, jobs_list = {}, []
    out_dir = base
    for tu, src in DRIVER_TUS.items():
        d, inc_flags = base, includes
        if plant is not None and PLANTS[plant][0] == tu:
            d = base / plant
            rel = PLANTS[plant][1]
            if rel in STEPWISE_SOURCES:  # planted, then launch-rewritten
                write_stepwise_kernels(d / "src", True, {rel: planted_source(plant)})
            else:
                write_if_changed(d / "src" / rel, planted_source(plant))
            inc_flags = [f"-I{d / 'src'}", *includes]
            out_dir = d
        d.mkdir(parents=True, exist_ok=True)
        objs[tu] = d / f"{tu}.o"
        jobs_list.append((common + inc_flags, KIT / src, objs[tu]))
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        for f in [pool.submit(_compile, cxx, *j) for j in jobs_list]:
            f.result()
    exe = out_dir / "driver"
    link = [cxx, *SANITIZERS[sanitizer], "-pthread", *map(str, objs.values()), "-o", str(exe)]
    if not exe.exists() or any(o.stat().st_mtime > exe.stat().st_mtime for o in objs.values()):
        res = subprocess.run(link, capture_output=True, text=True)
        if res.returncode != 0:
            raise RuntimeError(f"link failed: {' '.join(link)}\n{res.stderr[-4000:]}")
    return exe


def run_driver(exe, sanitizer, *args, timeout=600):
    """Runs the driver with the sanitizer's options (a report ends the process, non-zero).
    ThreadSanitizer cannot map its shadow memory under some high-entropy address-space layouts
    ("FATAL: ThreadSanitizer: unexpected memory mapping"): then it reruns with address-space
    randomisation off (setarch -R). Returns (returncode, stdout + stderr)."""
    env = {**os.environ, **RUN_ENV[sanitizer]}
    cmd = [str(exe), *args]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    out = res.stdout + res.stderr
    if sanitizer == "tsan" and "unexpected memory mapping" in out and shutil.which("setarch"):
        res = subprocess.run(["setarch", os.uname().machine, "-R", *cmd], capture_output=True,
                             text=True, env=env, timeout=timeout)
        out = "(rerun under setarch -R)\n" + res.stdout + res.stderr
    return res.returncode, out
