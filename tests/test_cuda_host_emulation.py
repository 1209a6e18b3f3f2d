"""The CUDA sources (csrc/cuda/gru_cuda_impl.cpp + csrc/kernels/) run on the CPU, no GPU needed.

The kernels are compiled for the host: each `kernel<<<grid, block, 0, stream>>>(args)` is
rewritten into a loop over the grid's blocks and threads (real threads and a barrier for the
one kernel with __syncthreads), c10/cuda is replaced by three small shims, and the binding is
registered as torch.ops.gru_emu on the CPU, with every buffer it allocates filled with NaN
(an element a kernel forgets to write shows up). ATen's CPU GEMMs stand in for cuBLAS. What
this checks: the binding's orchestration (buffers, views, strides, step order, go_backwards,
masks, dropout), the kernels' index math and formulas, and the saved layouts against the CPU
op. What it cannot check: races, memory-model and launch-configuration limits, cuBLAS, fp16
intrinsics on the device, performance; tests/test_cuda_ops.py does that on a GPU.

Slow (it compiles every (dtype, activation pair) instantiation with the host compiler, about
2-3 minutes on two cores); the build is cached in build/cuda_host_emulation (or
$GRU_EMU_BUILD_DIR).
"""
import itertools
import math
import os
import pathlib
import re
import shutil

import pytest
import torch

import gru_cuda
from gru_cuda import reference
from gru_cuda.activations import FUSED_IDS, FUSED_NAMES

ROOT = pathlib.Path(__file__).resolve().parents[1]
CSRC = ROOT / "csrc"

pytestmark = pytest.mark.slow


def _cuda_include_dir():
    for base in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if base and (pathlib.Path(base) / "include" / "cuda_fp16.h").exists():
            return pathlib.Path(base) / "include"
    nvcc = shutil.which("nvcc")
    if nvcc:
        inc = pathlib.Path(nvcc).resolve().parents[1] / "include"
        if (inc / "cuda_fp16.h").exists():
            return inc
    return None


PRELUDE = r"""
#pragma once
#define __device__
#define __host__
#define __global__
#define __shared__ static
#define __launch_bounds__(...)
#include <cuda_runtime_api.h>
#include <functional>
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;
void emu_launch(dim3 grid, dim3 block, const std::function<void()>& body);
void emu_launch_sync(dim3 grid, dim3 block, const std::function<void()>& body);
void __syncthreads();
"""

RUNTIME = r"""
#include <barrier>
#include <stdexcept>
#include <thread>
#include <vector>
thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;
static thread_local std::barrier<>* g_barrier = nullptr;
static void check(dim3 grid, dim3 block) {
  // The launch limits of a real GPU, and no launch with an empty grid.
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || block.x == 0 || block.y == 0 || block.z == 0)
    throw std::runtime_error("emulated launch with an empty grid or block");
  if (block.x * block.y * block.z > 1024) throw std::runtime_error("emulated block too large");
  if (grid.y > 65535 || grid.z > 65535) throw std::runtime_error("emulated grid.y/z too large");
}
void emu_launch(dim3 grid, dim3 block, const std::function<void()>& body) {
  check(grid, block);
  gridDim = grid;
  blockDim = block;
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx)
      for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx) {
          blockIdx = uint3{bx, by, 0};
          threadIdx = uint3{tx, ty, 0};
          body();
        }
}
void emu_launch_sync(dim3 grid, dim3 block, const std::function<void()>& body) {
  check(grid, block);
  for (unsigned by = 0; by < grid.y; ++by)
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      std::barrier<> bar(block.x * block.y);
      std::vector<std::thread> threads;
      for (unsigned ty = 0; ty < block.y; ++ty)
        for (unsigned tx = 0; tx < block.x; ++tx)
          threads.emplace_back([&, tx, ty] {
            gridDim = grid;
            blockDim = block;
            blockIdx = uint3{bx, by, 0};
            threadIdx = uint3{tx, ty, 0};
            g_barrier = &bar;
            body();
          });
      for (auto& t : threads) t.join();
    }
}
void __syncthreads() { g_barrier->arrive_and_wait(); }
"""

SHIMS = {
    "c10/cuda/CUDAStream.h": """#pragma once
#include <cuda_runtime_api.h>
namespace c10 { namespace cuda {
struct EmuStream { cudaStream_t stream() const { return nullptr; } };
inline EmuStream getCurrentCUDAStream() { return {}; }
}}
""",
    "c10/cuda/CUDAGuard.h": """#pragma once
#include <c10/core/Device.h>
namespace c10 { namespace cuda {
struct CUDAGuard { explicit CUDAGuard(c10::Device) {} };
}}
""",
    "c10/cuda/CUDAException.h": """#pragma once
#define C10_CUDA_KERNEL_LAUNCH_CHECK() do { } while (0)
""",
}

POISON = r"""
#include <ATen/ATen.h>
#include <cmath>
namespace emu {
inline at::Tensor empty(at::IntArrayRef size, at::TensorOptions o) {
  auto t = at::empty(size, o);
  if (at::isFloatingType(t.scalar_type())) t.fill_(NAN);
  return t;
}
inline at::Tensor empty_like(const at::Tensor& x) {
  auto t = at::empty_like(x);
  if (at::isFloatingType(t.scalar_type())) t.fill_(NAN);
  return t;
}
}  // namespace emu
"""


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


def _rewrite_launches(src):
    pattern = re.compile(r"(\b[A-Za-z_]\w*(?:<[^;{}]*?>)?)\s*<<<(.*?)>>>\s*\((.*?)\);", re.S)

    def launch(m):
        fn, config, args = m.groups()
        grid, block = _split_top_level(config)[:2]
        runner = "emu_launch_sync" if "__syncthreads" in KERNELS_WITH_BARRIER.get(fn.split("<")[0], "") \
            else "emu_launch"
        return f"{runner}({grid}, {block}, [&] {{ {fn}({args}); }});"

    out = pattern.sub(launch, src)
    assert "<<<" not in out, "a kernel launch was not rewritten"
    return out


KERNELS_WITH_BARRIER = {}


def _kernel_bodies(src):
    """Maps each __global__ function name to its source text (to find __syncthreads)."""
    names = re.findall(r"__global__\s+void(?:\s+__launch_bounds__\([^)]*\))?\s+(\w+)\s*\(", src)
    bodies = {}
    for name in names:
        start = src.find(name + "(")
        nxt = src.find("__global__", start)
        bodies[name] = src[start: nxt if nxt > 0 else len(src)]
    return bodies


@pytest.fixture(scope="module")
def emu():
    cuda_include = _cuda_include_dir()
    if cuda_include is None:
        pytest.skip("needs the CUDA toolkit headers (cuda_runtime_api.h, cuda_fp16.h)")
    if shutil.which("ninja") is None:
        pytest.skip("needs ninja to build the emulation")
    from torch.utils.cpp_extension import load

    build = pathlib.Path(os.environ.get("GRU_EMU_BUILD_DIR", ROOT / "build" / "cuda_host_emulation"))
    src = build / "src"
    (src / "kernels").mkdir(parents=True, exist_ok=True)
    (src / "cuda").mkdir(exist_ok=True)
    for rel, text in SHIMS.items():
        (build / "shim" / rel).parent.mkdir(parents=True, exist_ok=True)
        (build / "shim" / rel).write_text(text)
    (build / "prelude.h").write_text(PRELUDE)
    (build / "emu_runtime.cpp").write_text('#include "prelude.h"\n' + RUNTIME)

    step = (CSRC / "kernels/gru_step_kernels.cuh").read_text()
    util = (CSRC / "kernels/gru_utility_kernels.cu").read_text()
    KERNELS_WITH_BARRIER.clear()
    KERNELS_WITH_BARRIER.update(_kernel_bodies(step))
    KERNELS_WITH_BARRIER.update(_kernel_bodies(util))

    def write(path, text):  # rewrite only on change, so that ninja's cache holds
        if not path.exists() or path.read_text() != text:
            path.write_text(text)

    write(src / "kernels/gru_step_kernels.cuh", _rewrite_launches(step))
    write(src / "kernels/emu_utility_kernels.cpp", _rewrite_launches(util))
    families = ("FORWARD_RESET_AFTER", "FORWARD_RESET_BEFORE", "BACKWARD_RESET_AFTER",
                "BACKWARD_RESET_BEFORE")
    step_sources = []
    for dtype, short in (("float", "f32"), ("double", "f64"), ("__half", "f16"),
                         ("__nv_bfloat16", "bf16")):
        path = src / f"kernels/emu_step_{short}.cpp"
        write(path, '#include "kernels/gru_step_kernels.cuh"\n'
              + "".join(f"GRU_INSTANTIATE_{f}({dtype})\n" for f in families))
        step_sources.append(path)

    binding = (CSRC / "cuda/gru_cuda_impl.cpp").read_text()
    binding = binding.replace("x.is_cuda()", "x.is_cpu()")
    binding = binding.replace("TORCH_LIBRARY_IMPL(gru_cuda, CUDA, m)", "TORCH_LIBRARY_IMPL(gru_emu, CPU, m)")
    binding = binding.replace("at::empty(", "emu::empty(").replace("at::empty_like(", "emu::empty_like(")
    # The persistent path has its own emulation (test_persistent_host_emulation.py): stepwise only here.
    binding = binding.replace('#include "cuda/gru_persistent_dispatch.h"',
                              "namespace gru_cuda::persistent {\n"
                              "template <typename... A> bool try_forward(A&&...) { return false; }\n"
                              "template <typename... A> bool try_backward(A&&...) { return false; }\n"
                              "}  // namespace gru_cuda::persistent")
    schemas = re.search(r"TORCH_LIBRARY\(gru_cuda, m\) \{(.*?)\n\}", (CSRC / "gru_ops.cpp").read_text(), re.S)
    binding = POISON + binding + "\nTORCH_LIBRARY(gru_emu, m) {" + schemas.group(1) + "\n}\n"
    write(src / "cuda/emu_impl.cpp", binding)

    sources = [build / "emu_runtime.cpp", src / "cuda/emu_impl.cpp", CSRC / "gru_checks.cpp",
               src / "kernels/emu_utility_kernels.cpp", *step_sources]
    os.environ.setdefault("MAX_JOBS", "2")
    lib = load(name="gru_cuda_host_emulation", sources=[str(s) for s in sources],
               build_directory=str(build), is_python_module=False,
               extra_include_paths=[str(src), str(build / "shim"), str(CSRC), str(cuda_include), str(build)],
               extra_cflags=["-O1", "-std=c++20", "-include", str(build / "prelude.h")])
    del lib
    return torch.ops.gru_emu


def _problem(T, B, F, H, reset_after, *, bias, mask, idm, rdm, dtype, h0=True, scale=0.5):
    def r(*s, scale=1.0):
        return torch.randn(*s, dtype=torch.float64) * scale

    bscale = 0.6 * scale
    d = {"x": r(T, B, F), "k": r(F, 3 * H, scale=scale / math.sqrt(max(F, 1))),
         "u": r(H, 3 * H, scale=scale / math.sqrt(max(H, 1))),
         "b": (r(2, 3 * H, scale=bscale) if reset_after else r(3 * H, scale=bscale)) if bias else None,
         "h": r(B, H, scale=0.5) if h0 else torch.zeros(B, H, dtype=torch.float64),
         "m": None, "im": None, "rm": None, "gY": r(T, B, H), "gS": r(B, H)}
    if mask:
        d["m"] = torch.rand(T, B) > 0.3
        if B > 0:
            d["m"][:, 0] = False  # a fully masked row
    if idm == "shared":
        d["im"] = (torch.rand(B, F) > 0.25).double() / 0.75
    elif idm == "per_gate":
        d["im"] = (torch.rand(3, B, F) > 0.25).double() / 0.75
    if rdm:
        d["rm"] = (torch.rand(3, B, H) > 0.3).double() / 0.7
    return {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in d.items()}


def _run(op, d, reset_after, act, rec, go_backwards, zero_out, save=True):
    ids = FUSED_IDS[act], FUSED_IDS[rec]
    outs = op.gru_forward(d["x"], d["k"], d["u"], d["b"], d["h"], d["m"], d["im"], d["rm"],
                          reset_after, *ids, go_backwards, zero_out, save)
    if not save:
        return outs, None
    grads = op.gru_backward(d["gY"], d["gS"], d["x"], d["k"], d["u"], d["h"], outs[2], outs[3],
                            d["m"], d["im"], d["rm"], d["b"] is not None, reset_after, *ids,
                            go_backwards, zero_out)
    return outs, grads


def _reference(d, reset_after, act, rec, go_backwards, zero_out):
    leaves = [d[n].double().clone().requires_grad_(True) for n in ("x", "k", "u", "h")]
    b = None if d["b"] is None else d["b"].double().clone().requires_grad_(True)
    dbl = (lambda t: None if t is None else t.double())
    out, fin = reference.gru(leaves[0], leaves[1], leaves[2], b, leaves[3],
                             reset_after=reset_after, activation=act, recurrent_activation=rec,
                             go_backwards=go_backwards, time_major=True, mask=d["m"],
                             zero_output_for_mask=zero_out, input_dropout_mask=dbl(d["im"]),
                             recurrent_dropout_mask=dbl(d["rm"]))
    loss = (out * d["gY"].double()).sum() + (fin * d["gS"].double()).sum()
    params = leaves + ([b] if b is not None else [])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return out.detach(), fin.detach(), grads


def _close(actual, expected, tol, name):
    a, e = actual.double(), expected.double()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    if e.numel() == 0:
        return
    assert not torch.isnan(a).any(), f"{name}: NaN (an element was not written)"
    err = (a - e).abs().max().item() / max(1.0, e.abs().max().item())
    assert err <= tol, f"{name}: relative error {err:.3e} > {tol:.1e}"


def _check(emu, T, B, F, H, reset_after, *, act="tanh", rec="sigmoid", go_backwards=False,
           zero_out=False, mask=False, idm=None, rdm=False, bias=True, dtype=torch.float64,
           h0=True):
    tol = {torch.float64: 1e-10, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 3e-2}[dtype]
    # Gates outside [0, 1] (an unbounded recurrent activation) make the state grow every step:
    # small weights keep the sequence finite.
    scale = 0.5 if rec in ("sigmoid", "hard_sigmoid", "tanh", "softsign") else 0.1
    d = _problem(T, B, F, H, reset_after, bias=bias, mask=mask, idm=idm, rdm=rdm, dtype=dtype, h0=h0,
                 scale=scale)
    (out, fin, states, ws), grads = _run(emu, d, reset_after, act, rec, go_backwards, zero_out)
    r_out, r_fin, r_grads = _reference(d, reset_after, act, rec, go_backwards, zero_out)
    _close(out, r_out, tol, "outputs")
    _close(fin, r_fin, tol, "final_state")
    mine = [grads[0], grads[1], grads[2], grads[4]] + ([grads[3]] if bias else [])
    for name, a, e in zip(("x", "kernel", "recurrent_kernel", "h0", "bias"), mine, r_grads):
        _close(a, e, tol * 3, f"grad {name}")
    if not bias:
        assert grads[3].shape == (0,)
    (out2, fin2, st2, ws2), _ = _run(emu, d, reset_after, act, rec, go_backwards, zero_out, save=False)
    assert torch.equal(out2, out) and torch.equal(fin2, fin) and st2.shape == (0,) == ws2.shape
    if dtype in (torch.float64, torch.float32):  # the saved layouts are the CPU op's
        (c_out, _, c_states, c_ws), _ = _run(torch.ops.gru_cuda, d, reset_after, act, rec,
                                             go_backwards, zero_out)
        _close(states, c_states, tol, "states vs CPU op")
        _close(ws, c_ws, tol, "workspace vs CPU op")


CONVENTIONS = pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])


@CONVENTIONS
@pytest.mark.parametrize("mask,go_backwards,zero_out", [
    (False, False, False), (False, True, False), (True, False, False), (True, True, False),
    (True, False, True), (True, True, True)])
@pytest.mark.parametrize("idm", [None, "shared", "per_gate"])
@pytest.mark.parametrize("rdm", [False, True])
def test_options(emu, reset_after, mask, go_backwards, zero_out, idm, rdm):
    _check(emu, 6, 4, 5, 9, reset_after, mask=mask, go_backwards=go_backwards, zero_out=zero_out,
           idm=idm, rdm=rdm)


@CONVENTIONS
@pytest.mark.parametrize("T,B,F,H", [(1, 1, 2, 5), (4, 2, 3, 33), (4, 2, 0, 5), (0, 3, 4, 5),
                                     (4, 0, 4, 5), (0, 0, 4, 5), (40, 30, 3, 4)])
@pytest.mark.parametrize("bias,h0", [(True, True), (False, False)])
def test_shapes(emu, T, B, F, H, reset_after, bias, h0):
    _check(emu, T, B, F, H, reset_after, bias=bias, h0=h0, mask=T * B > 0, rdm=True)


@CONVENTIONS
@pytest.mark.parametrize("i", range(len(FUSED_NAMES)))
def test_activations(emu, reset_after, i):
    _check(emu, 4, 2, 3, 5, reset_after, act=FUSED_NAMES[i], rec=FUSED_NAMES[(i + 3) % 12],
           rdm=i % 2 == 0, mask=i % 3 == 0)
    _check(emu, 4, 2, 3, 5, reset_after, act=FUSED_NAMES[(i + 5) % 12], rec=FUSED_NAMES[i],
           go_backwards=i % 2 == 1)


@CONVENTIONS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_lower_precision(emu, reset_after, dtype):
    _check(emu, 6, 3, 4, 9, reset_after, dtype=dtype, mask=True, rdm=True, idm="per_gate")
    _check(emu, 6, 3, 4, 9, reset_after, dtype=dtype)


def test_h_zero(emu):
    for reset_after in (True, False):
        d = _problem(3, 2, 4, 0, reset_after, bias=True, mask=True, idm=None, rdm=False,
                     dtype=torch.float64)
        (out, fin, states, ws), grads = _run(emu, d, reset_after, "tanh", "sigmoid", False, False)
        assert out.shape == (3, 2, 0) and fin.shape == (2, 0) and ws.shape == (3, 2, 0)
        assert torch.equal(grads[0], torch.zeros(3, 2, 4, dtype=torch.float64))
