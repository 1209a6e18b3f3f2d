"""Benchmark of gru_cuda against torch.nn.GRU (cuDNN on a GPU), the PyTorch step loop and Keras 3.

Run `python -m gru_cuda.bench --help` (or `python benchmarks/bench_gru.py`). docs/benchmarks.md
explains the presets, the columns and the conventions; the short version:

* every candidate is first checked against the float64 step loop (`gru_cuda.reference.gru`);
  a candidate that disagrees is reported WRONG and not timed;
* times are medians of interleaved repetitions after a warm-up: CUDA events on a GPU, measured
  warm-L2 (right after a run of the same candidate) and cold-L2 (after writing a 256 MB
  buffer); `time.perf_counter` on the CPU;
* TFLOP/s follow DeepBench: 6·H²·B·T for the forward recurrence, 3x that for forward+backward
  and for a training step; a second figure adds the input projection, 6·F·H·B·T.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import datetime
import gc
import itertools
import json
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

import gru_cuda
from gru_cuda import functional, reference

__all__ = ["Shape", "Block", "Candidate", "Model", "CANDIDATES", "PRESETS", "register_candidate",
           "run_benchmark", "main", "collect_metadata", "flops"]

MODES = ("fwd", "fwd+bwd", "train")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16", "f16": "float16",
                 "fp16": "float16", "half": "float16"}
SHORT_DTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}

# Work per mode relative to the forward pass: the backward does two GEMMs per forward GEMM
# (data and weight gradients), so forward+backward counts 3x; the optimizer step of `train`
# is O(H^2), negligible next to O(H^2 * B * T), so it counts the same as forward+backward.
MODE_FLOP_FACTOR = {"fwd": 1, "fwd+bwd": 3, "train": 3}

# Largest error allowed in the correctness check, (outputs, gradients): max|candidate - ref|
# over a tensor, divided by max|ref| of that tensor. A real layout or indexing bug (a swapped
# gate, an off-by-one step) is off by 0.2 to 1.5. float32 leaves room for TF32 (cuDNN's default
# for float32 RNNs since Ampere). In the half types a per-step loop (torch.nn.GRU on a CPU, the
# step loop) sums the weight gradients over T steps in that type: measured 0.11 for bfloat16
# at B=1, T=1024, hence the loose gradient bound; the outputs stay tight.
TOLERANCE = {"float32": (1e-2, 3e-2), "bfloat16": (6e-2, 0.25), "float16": (2e-2, 0.1)}

L2_FLUSH_BYTES = 256 * 1024 * 1024


# --------------------------------------------------------------------------------------------
# Shapes and presets
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Shape:
    B: int  # batch
    T: int  # timesteps
    H: int  # units
    F: int  # input features

    def __str__(self) -> str:
        return f"B={self.B} T={self.T} H={self.H}" + ("" if self.F == self.H else f" F={self.F}")


@dataclass
class Block:
    """Shapes run with every combination of dtypes x reset_after x modes."""
    shapes: List[Shape]
    dtypes: Tuple[str, ...]
    reset_after: Tuple[bool, ...]
    modes: Tuple[str, ...]


def _grid(batches, seqs, hiddens, feats=None) -> List[Shape]:
    return [Shape(b, t, h, h if feats is None else feats)
            for t, h, b in itertools.product(seqs, hiddens, batches)]


# kernels_and_limits.md section 4, small-batch list: B x H as a grid at T=512 (the plot), and
# T = 128 and 1024 at two points (one of them FlashRNN's shape).
_GPU_GRID = _grid((1, 4, 8, 16, 32), (512,), (128, 256, 512, 768, 1024))
_GPU_SWEEP = _grid((4,), (128, 1024), (256,)) + _grid((16,), (128, 1024), (768,))
# The same layout, scaled down so that the whole default run stays under ~10 minutes on a
# 2-core CPU: a GEMM-bound CPU pays for every FLOP, a GPU mostly for the number of steps.
_CPU_GRID = _grid((1, 8, 32), (128,), (128, 256, 512))
_CPU_SWEEP = _grid((8,), (32, 256), (256,))

# DeepBench GRU (H, B, T), input size = H. Training at B=32 (forward+backward), inference at
# B in {1, 2, 4} (forward only).
_DB_H = (1536, 2048, 2560, 2816)
_DB_T = (187, 375, 750, 1500)
_DB_TRAIN = ([Shape(32, t, h, h) for h in _DB_H for t in _DB_T]
             + [Shape(32, 1, 512, 512), Shape(32, 1500, 1024, 1024), Shape(64, 1500, 1024, 1024)])
_DB_INFER = ([Shape(b, t, h, h) for h in _DB_H for t in _DB_T for b in (1, 2, 4)]
             + [Shape(b, 1, 512, 512) for b in (1, 2, 4)]
             + [Shape(b, 1500, 1024, 1024) for b in (1, 2, 4)])

ALL_RA = (True, False)

PRESETS: Dict[str, Dict[str, List[Block]]] = {
    "quick": {
        "any": [Block(_grid((2, 8), (16,), (32,)), ("float32",), ALL_RA, MODES)],
    },
    "default": {
        "cuda": [Block(_GPU_GRID, ("float32", "bfloat16"), (True,), ("fwd", "fwd+bwd")),
                 Block(_GPU_SWEEP + [Shape(8, 512, 512, 512)], ("float32", "bfloat16"), ALL_RA,
                       MODES)],
        "cpu": [Block(_CPU_GRID, ("float32", "bfloat16"), (True,), ("fwd", "fwd+bwd")),
                Block(_CPU_SWEEP + [Shape(8, 128, 256, 256)], ("float32", "bfloat16"), ALL_RA,
                      MODES)],
    },
    "deepbench": {
        "cuda": [Block(_DB_TRAIN, ("float32", "float16"), (True,), ("fwd+bwd",)),
                 Block(_DB_INFER, ("float32", "float16"), (True,), ("fwd",))],
        "cpu": [Block(_DB_TRAIN, ("float32",), (True,), ("fwd+bwd",)),
                Block(_DB_INFER, ("float32",), (True,), ("fwd",))],
    },
    "flashrnn": {
        "any": [Block([Shape(16, 1024, 768, 768)], ("bfloat16",), (True,), ("fwd", "fwd+bwd"))],
    },
    # benchmarks/gpu_check.sh: the batch sizes where persistence should pay (1..64) and one
    # where cuDNN's large GEMMs should (256), at the unit counts that decide between the
    # persistent paths; T = 128 keeps the 120 cases within about two minutes on an H200.
    "gpucheck": {
        "cuda": [Block(_grid((1, 16, 32, 64, 256), (128,), (256, 512, 1024)),
                       ("float32", "bfloat16"), ALL_RA, ("fwd", "fwd+bwd"))],
        "cpu": [Block(_grid((1, 16), (16,), (32,)), ("float32",), ALL_RA, ("fwd", "fwd+bwd"))],
    },
}


def preset_blocks(name: str, device: torch.device) -> List[Block]:
    p = PRESETS[name]
    blocks = p.get(device.type, p.get("any", p.get("cuda")))
    return [Block(list(b.shapes), tuple(b.dtypes), tuple(b.reset_after), tuple(b.modes))
            for b in blocks]


def flops(shape: Shape, mode: str, *, input_projection: bool = False) -> float:
    """FLOPs counted for one run: DeepBench's 6*H^2*B*T per forward recurrence (2 FLOPs per
    multiply-add of a (B,H)x(H,3H) GEMM per step), x3 for forward+backward and train; with
    `input_projection` also the 6*F*H*B*T of the (B*T,F)x(F,3H) input GEMM."""
    per_fwd = 6.0 * shape.H * shape.H * shape.B * shape.T
    if input_projection:
        per_fwd += 6.0 * shape.F * shape.H * shape.B * shape.T
    return per_fwd * MODE_FLOP_FACTOR[mode]


# --------------------------------------------------------------------------------------------
# Metadata
# --------------------------------------------------------------------------------------------

def _run_cmd(cmd: Sequence[str], cwd: Optional[str] = None) -> Optional[str]:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _git_commit() -> Optional[str]:
    root = os.path.dirname(os.path.dirname(os.path.abspath(gru_cuda.__file__)))
    commit = _run_cmd(["git", "rev-parse", "--short=12", "HEAD"], cwd=root)
    if commit is None:
        return None
    dirty = _run_cmd(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root)
    return commit + ("+dirty" if dirty else "")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _nvidia_driver() -> Optional[str]:
    out = _run_cmd(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if out:
        return out.splitlines()[0].strip()
    try:  # pynvml, when installed, works without nvidia-smi on PATH
        import pynvml  # type: ignore
        pynvml.nvmlInit()
        v = pynvml.nvmlSystemGetDriverVersion()
        return v.decode() if isinstance(v, bytes) else str(v)
    except Exception:
        return None


def collect_metadata(device: torch.device) -> dict:
    """What a reader needs to reproduce or compare a result: hardware, versions, settings."""
    meta = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "device": str(device),
        "device_name": None, "sm_count": None, "compute_capability": None,
        "gpu_memory_gb": None, "l2_cache_mb": None,
        "driver": None, "cuda_driver_api": None, "cuda": torch.version.cuda, "cudnn": None,
        "cudnn_tf32": None, "matmul_tf32": None,
        "torch": torch.__version__,
        "gru_cuda": getattr(gru_cuda, "__version__", None),
        "gru_cuda_build": _safe_build_info(),
        "git_commit": _git_commit(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_model": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average": _loadavg(),
    }
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        props = torch.cuda.get_device_properties(idx)
        meta.update(
            device_name=props.name, sm_count=props.multi_processor_count,
            compute_capability=f"{props.major}.{props.minor}",
            gpu_memory_gb=round(props.total_memory / 2**30, 1),
            l2_cache_mb=(round(props.L2_cache_size / 2**20, 1)
                         if getattr(props, "L2_cache_size", None) else None),
            driver=_nvidia_driver(),
            cudnn=torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
            cudnn_tf32=bool(torch.backends.cudnn.allow_tf32),
            matmul_tf32=bool(torch.backends.cuda.matmul.allow_tf32))
        get_drv = getattr(torch._C, "_cuda_getDriverVersion", None)
        if get_drv is not None:
            try:
                v = int(get_drv())
                meta["cuda_driver_api"] = f"{v // 1000}.{(v % 1000) // 10}"
            except Exception:
                pass
    else:
        meta["device_name"] = f"CPU: {meta['cpu_model']}"
    return meta


def _busy() -> Optional[str]:
    """Why the machine looks busy now, or None. Linux' CPU pressure (PSI) over the last 10 s
    when there is one; the load average lags by minutes after a burst."""
    try:
        with open("/proc/pressure/cpu") as f:
            avg10 = float(f.readline().split()[1].split("=")[1])
        return f"CPU pressure {avg10:.0f}% over the last 10 s" if avg10 > 20 else None
    except (OSError, IndexError, ValueError):
        pass
    try:
        load1 = os.getloadavg()[0]
    except (AttributeError, OSError):
        return None
    n = os.cpu_count() or 1
    return f"load average {load1:.1f} on {n} CPUs" if load1 > n else None


def _safe_build_info() -> Optional[dict]:
    try:
        return gru_cuda.build_info()
    except Exception:
        return None


def _loadavg() -> Optional[str]:
    """Load averages over 1, 5, 15 min, and on Linux the share of the last 10 s in which some
    runnable task waited for a CPU (PSI): the load average lags, PSI shows the present."""
    try:
        out = " ".join(f"{v:.2f}" for v in os.getloadavg())
    except (AttributeError, OSError):
        return None
    try:
        with open("/proc/pressure/cpu") as f:
            some = f.readline().split()
        out += f" (cpu pressure {some[1].split('=')[1]}%)"
    except (OSError, IndexError):
        pass
    return out


# --------------------------------------------------------------------------------------------
# Candidates
# --------------------------------------------------------------------------------------------

def swap_zr(a: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Keras gate blocks [z, r, h] <-> torch's [r, z, n] (the swap is its own inverse)."""
    z, r, h = a.chunk(3, dim=dim)
    return torch.cat([r, z, h], dim=dim)


@dataclass
class CaseData:
    """One case's tensors on the benchmark device, in the case's dtype, Keras layout."""
    x: torch.Tensor             # (B, T, F)
    kernel: torch.Tensor        # (F, 3H)
    recurrent_kernel: torch.Tensor  # (H, 3H)
    bias: torch.Tensor          # (2, 3H) when reset_after, else (3H,)
    grad_out: torch.Tensor      # (B, T, H): the upstream gradient of fwd+bwd
    target: torch.Tensor        # (B, T, H): the regression target of train


class Model:
    """A candidate instantiated with one case's weights.

    `forward(x)` returns the output sequence (B, T, H); `params` are the leaf tensors a
    training step updates; `keras_grads()` their gradients in Keras layout
    (kernel, recurrent_kernel, bias); `context()` wraps every call (e.g. a forced kernel path).
    """
    params: List[torch.Tensor]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def keras_grads(self) -> Tuple[torch.Tensor, ...]:
        return tuple(p.grad for p in self.params)

    def context(self):
        return contextlib.nullcontext()


class Candidate:
    """One implementation to time. Subclass, set `key`/`label`, and register_candidate()."""
    key = "?"
    label = "?"

    def skip_reason(self, case: "Case", cfg: "Config") -> Optional[str]:
        """Why this candidate does not run this case (None: it runs)."""
        return None

    def build(self, data: CaseData, case: "Case", cfg: "Config") -> Model:
        raise NotImplementedError


def _leaf(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone().requires_grad_(True)


class _FunctionalModel(Model):
    def __init__(self, data: CaseData, reset_after: bool, ctx_factory=None):
        self.kernel = _leaf(data.kernel)
        self.recurrent_kernel = _leaf(data.recurrent_kernel)
        self.bias = _leaf(data.bias)
        self.params = [self.kernel, self.recurrent_kernel, self.bias]
        self.reset_after = reset_after
        self._ctx = ctx_factory

    def forward(self, x):
        return functional.gru(x, self.kernel, self.recurrent_kernel, self.bias,
                              reset_after=self.reset_after)[0]

    def context(self):
        return self._ctx() if self._ctx is not None else contextlib.nullcontext()


class GruCudaCandidate(Candidate):
    """gru_cuda.functional.gru; with `path`, inside gru_cuda.force_path(path)."""

    def __init__(self, path: Optional[str] = None):
        self.path = path
        self.key = "gru_cuda" if path is None else f"gru_cuda[{path}]"
        self.label = self.key

    def skip_reason(self, case, cfg):
        """A forced path that cannot run this case (e.g. the weights do not fit in shared
        memory) would raise: ask gru_cuda's capacity model first and skip it with its reason."""
        dispatch = getattr(gru_cuda, "dispatch", None)
        if self.path is None or dispatch is None or not hasattr(dispatch, "explain"):
            return None
        s = case.shape
        try:
            with gru_cuda.force_path(self.path):
                plan = dispatch.explain(s.B, s.T, s.H, s.F, dtype=DTYPES[case.dtype],
                                        reset_after=case.reset_after, device=cfg.device)
        except Exception:  # no verdict: the check run will tell
            return None
        for key, reason in (("path", "reason"), ("backward_path", "backward_reason")):
            if key == "backward_path" and case.mode == "fwd":
                continue
            if plan.get(key) in ("error", "unavailable"):
                return f"{self.path} cannot run this case: {plan.get(reason)}"
        return None

    def build(self, data, case, cfg):
        ctx = None if self.path is None else (lambda: gru_cuda.force_path(self.path))
        return _FunctionalModel(data, case.reset_after, ctx)


def last_path(mode: str) -> Optional[str]:
    """The kernel path gru_cuda's last CUDA call ran ("forward/backward" for the modes with a
    backward), from gru_cuda.dispatch.last_path(); None on a CPU or without that API."""
    dispatch = getattr(gru_cuda, "dispatch", None)
    if dispatch is None or not hasattr(dispatch, "last_path"):
        return None
    try:
        lp = dispatch.last_path()
    except Exception:
        return None
    fwd = lp.get("forward")
    if fwd is None:
        return None
    return fwd if mode == "fwd" or not lp.get("backward") else f"{fwd}/{lp['backward']}"


class _StepLoopModel(_FunctionalModel):
    def forward(self, x):
        return reference.gru(x, self.kernel, self.recurrent_kernel, self.bias,
                             reset_after=self.reset_after)[0]


def _loop_skip_reason(case: "Case", cfg: "Config", what: str) -> Optional[str]:
    """A per-step Python loop costs ~T kernel launches per pass on a GPU and every FLOP at
    low efficiency on a CPU: skip the shapes where it would dominate the run time."""
    s = case.shape
    if s.T > cfg.steploop_max_steps:
        return f"{what}: T={s.T} > {cfg.steploop_max_steps} steps (--steploop-max-steps)"
    work = flops(s, case.mode, input_projection=True)
    if work > cfg.steploop_max_flops:
        return (f"{what}: {work / 1e9:.0f} GFLOP per run > {cfg.steploop_max_flops / 1e9:.0f}"
                " (--steploop-max-gflop)")
    return None


class StepLoopCandidate(Candidate):
    key = "steploop"
    label = "step loop"

    def skip_reason(self, case, cfg):
        return _loop_skip_reason(case, cfg, "step loop too slow here")

    def build(self, data, case, cfg):
        return _StepLoopModel(data, case.reset_after)


class _TorchGRUModel(Model):
    def __init__(self, data: CaseData, device: torch.device):
        F, H = data.kernel.shape[0], data.recurrent_kernel.shape[0]
        self.gru = torch.nn.GRU(F, H, num_layers=1, bias=True, batch_first=True,
                                device=device, dtype=data.x.dtype)
        with torch.no_grad():
            self.gru.weight_ih_l0.copy_(swap_zr(data.kernel).T)
            self.gru.weight_hh_l0.copy_(swap_zr(data.recurrent_kernel).T)
            self.gru.bias_ih_l0.copy_(swap_zr(data.bias[0]))
            self.gru.bias_hh_l0.copy_(swap_zr(data.bias[1]))
        if device.type == "cuda":
            self.gru.flatten_parameters()  # one contiguous weight buffer, as cuDNN wants
        self.params = list(self.gru.parameters())

    def forward(self, x):
        # inference (fwd) runs cuDNN's inference forward, as model.eval() would: its training
        # forward also writes the reserve space that the backward reads
        self.gru.train(torch.is_grad_enabled())
        return self.gru(x)[0]

    def keras_grads(self):
        g = self.gru
        return (swap_zr(g.weight_ih_l0.grad.T), swap_zr(g.weight_hh_l0.grad.T),
                torch.stack([swap_zr(g.bias_ih_l0.grad), swap_zr(g.bias_hh_l0.grad)]))


class TorchGRUCandidate(Candidate):
    key = "torch"
    label = "torch.nn.GRU"

    def skip_reason(self, case, cfg):
        if not case.reset_after:
            return "torch.nn.GRU has no reset_after=False"
        return None

    def build(self, data, case, cfg):
        return _TorchGRUModel(data, cfg.device)


class _KerasModel(Model):
    def __init__(self, keras, data: CaseData, case: "Case", device: torch.device):
        self.keras = keras
        self.device_name = str(device)
        F, H = data.kernel.shape[0], data.recurrent_kernel.shape[0]
        with keras.device(self.device_name):
            # zeros initializers: set_weights overwrites them, and Keras' orthogonal
            # initializer has no bfloat16 QR on the CPU
            self.layer = keras.layers.GRU(
                H, return_sequences=True, reset_after=case.reset_after, dtype=case.dtype,
                kernel_initializer="zeros", recurrent_initializer="zeros",
                bias_initializer="zeros")
            self.layer.build((case.shape.B, case.shape.T, F))
            self.layer.set_weights([t.detach().float().cpu().numpy()
                                    for t in (data.kernel, data.recurrent_kernel, data.bias)])
        self.params = [v.value for v in self.layer.trainable_variables]

    def forward(self, x):
        with self.keras.device(self.device_name):
            return self.layer(x, training=torch.is_grad_enabled())


class KerasCandidate(Candidate):
    key = "keras"
    label = "keras.layers.GRU"

    def __init__(self):
        self._keras = None
        self._error: Optional[str] = None

    def load(self):
        """Imports Keras 3 with the torch backend; None (and a reason) when that fails."""
        if self._keras is None and self._error is None:
            if "keras" in sys.modules:
                import keras  # noqa: F811
            else:
                os.environ["KERAS_BACKEND"] = "torch"  # read once, when keras is imported
                try:
                    import keras
                except Exception as e:  # not installed, or broken
                    self._error = f"keras not importable ({type(e).__name__}: {e})"
                    return None
            backend = keras.backend.backend()
            if backend != "torch":
                self._error = (f"keras was already imported with the {backend!r} backend; "
                               "start from a fresh process (KERAS_BACKEND=torch)")
            elif not hasattr(keras, "device") or int(keras.__version__.split(".")[0]) < 3:
                self._error = f"keras {keras.__version__} is not Keras 3"
            else:
                self._keras = keras
        return self._keras

    def available(self) -> Optional[str]:
        return None if self.load() is not None else self._error

    def skip_reason(self, case, cfg):
        if self.load() is None:
            return self._error
        # Keras falls back to a per-step loop off cuDNN: CPU, and reset_after=False anywhere
        if cfg.device.type != "cuda" or not case.reset_after:
            return _loop_skip_reason(case, cfg, "Keras' step loop too slow here")
        return None

    def build(self, data, case, cfg):
        return _KerasModel(self.load(), data, case, cfg.device)


class _BrokenModel(_FunctionalModel):
    """gru_cuda called with the z and r gate blocks swapped, the classic weight-layout bug."""

    def forward(self, x):
        return functional.gru(x, swap_zr(self.kernel), swap_zr(self.recurrent_kernel),
                              swap_zr(self.bias), reset_after=self.reset_after)[0]


class BrokenCandidate(Candidate):
    """Deliberately wrong: shows that the correctness check stops a wrong kernel."""
    key = "broken"
    label = "broken (z/r swapped)"

    def build(self, data, case, cfg):
        return _BrokenModel(data, case.reset_after)


CANDIDATES: Dict[str, Candidate] = {}


def register_candidate(c: Candidate) -> Candidate:
    """Makes a candidate selectable by its key with --candidates (and by the Python API)."""
    CANDIDATES[c.key] = c
    return c


for _c in (GruCudaCandidate(), TorchGRUCandidate(), StepLoopCandidate(), KerasCandidate(),
           BrokenCandidate()):
    register_candidate(_c)

ALIASES = {"cudnn": "torch", "nn.gru": "torch", "torch.nn.gru": "torch", "loop": "steploop",
           "step-loop": "steploop", "reference": "steploop", "auto": "gru_cuda"}
DEFAULT_CANDIDATES = ("gru_cuda", "paths", "torch", "steploop", "keras")
# --quick leaves Keras out: importing it alone takes seconds
QUICK_CANDIDATES = ("gru_cuda", "paths", "torch", "steploop")


def kernel_paths(device: torch.device) -> List[str]:
    """gru_cuda's forced kernel paths for `device`; [] while the package has no such API."""
    fn = getattr(gru_cuda, "kernel_paths", None)
    if fn is None or not hasattr(gru_cuda, "force_path"):
        return []
    for arg in (device, str(device), device.type):
        try:
            return [str(p) for p in fn(arg)]
        except (TypeError, ValueError):
            continue
    return []


def resolve_candidates(names: Sequence[str], device: torch.device,
                       notes: List[str]) -> List[Candidate]:
    out: List[Candidate] = []
    for raw in names:
        name = ALIASES.get(raw.lower(), raw)
        if name == "paths":
            paths = kernel_paths(device)
            if not paths:
                notes.append("gru_cuda exposes no forced kernel paths (kernel_paths/force_path) "
                             "in this version: timing its automatic dispatch only")
            elif len(paths) == 1:  # e.g. the CPU: forcing it would time auto dispatch twice
                notes.append(f"gru_cuda has one kernel path on {device.type} ({paths[0]}): the "
                             f"automatic dispatch is that path (gru_cuda[{paths[0]}] forces it)")
                paths = []
            chosen = [GruCudaCandidate(p) for p in paths]
        elif name in CANDIDATES:
            chosen = [CANDIDATES[name]]
        elif (m := re.fullmatch(r"gru_cuda\[(.+)\]", name)):
            chosen = [GruCudaCandidate(m.group(1))]
        else:
            others = ", ".join(k for k in CANDIDATES if k != "gru_cuda")
            raise SystemExit(f"unknown candidate {raw!r}; choose from: gru_cuda, paths, "
                             f"gru_cuda[PATH], {others}")
        for c in chosen:
            if isinstance(c, KerasCandidate):
                why = c.available()
                if why is not None:
                    notes.append(f"keras candidate skipped: {why}")
                    continue
            if all(c.key != o.key for o in out):
                out.append(c)
    return out


# --------------------------------------------------------------------------------------------
# Data, reference and correctness check
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    shape: Shape
    dtype: str
    reset_after: bool
    mode: str


@dataclass
class Config:
    device: torch.device
    blocks: List[Block]
    candidates: List[Candidate]
    repeats: Optional[int] = None       # None: adaptive within [min_repeats, max_repeats]
    min_repeats: int = 5
    max_repeats: int = 30
    warmup: int = 2
    budget_s: float = 1.0               # timed seconds per case when repeats is adaptive
    check_device: Optional[torch.device] = None
    check_steps: Optional[int] = None   # cap on the check's sequence length
    check_max_flops: float = 1e10
    check_max_bytes: float = 2e9
    steploop_max_steps: int = 1024
    steploop_max_flops: float = float("inf")
    seed: int = 0
    progress: bool = True
    preset: str = "custom"
    argv: List[str] = field(default_factory=list)
    notes: List[str] = field(default_factory=list)


def _round_exact(t: torch.Tensor) -> torch.Tensor:
    """Rounds to values exact in bfloat16 and float16 (bf16 mantissa, no f16 subnormals), so
    that every dtype sees the same inputs and one float64 reference serves them all."""
    t = t.to(torch.bfloat16).float()
    return torch.where(t.abs() < 2.0 ** -14, torch.zeros_like(t), t)


def make_master(shape: Shape, seed: int, device: torch.device) -> dict:
    """float32 tensors made on `device` (a GPU draws DeepBench's 100M-element inputs in
    milliseconds, a CPU in seconds), from a generator seeded by the shape: reproducible."""
    g = torch.Generator(device=device).manual_seed(
        (seed * 1_000_003 + shape.B * 7919 + shape.T * 104729 + shape.H * 31 + shape.F) % 2**63)
    B, T, H, F = shape.B, shape.T, shape.H, shape.F

    def uni(*size, a):
        return (torch.rand(*size, generator=g, device=device) * 2 - 1) * a

    def normal(*size, std=1.0):
        return torch.randn(*size, generator=g, device=device) * std

    return {
        "x": _round_exact(normal(B, T, F)),
        # Glorot-uniform kernel (Keras' default); uniform(1/sqrt(H)) recurrent weights keep
        # the recurrence well away from saturation, like torch.nn.GRU's initialization.
        "kernel": _round_exact(uni(F, 3 * H, a=math.sqrt(6.0 / (F + 3 * H)))),
        "recurrent_kernel": _round_exact(uni(H, 3 * H, a=1.0 / math.sqrt(H))),
        "bias": _round_exact(uni(2, 3 * H, a=0.1)),
        "grad_out": _round_exact(normal(B, T, H)),
        "target": _round_exact(normal(B, T, H, std=0.5)),
    }


def case_data(master: dict, reset_after: bool, dtype: torch.dtype, device: torch.device,
              steps: Optional[int] = None) -> CaseData:
    def put(t, seq=False):
        if seq and steps is not None:
            t = t[:, :steps]
        return t.to(device=device, dtype=dtype).contiguous()

    bias = master["bias"] if reset_after else master["bias"][0]
    return CaseData(x=put(master["x"], True), kernel=put(master["kernel"]),
                    recurrent_kernel=put(master["recurrent_kernel"]), bias=put(bias),
                    grad_out=put(master["grad_out"], True), target=put(master["target"], True))


def check_length(shape: Shape, cfg: Config) -> int:
    """Sequence length of the correctness check: the whole sequence when the float64 reference
    fits the check budgets (FLOPs, autograd memory), else the longest prefix that does."""
    T = shape.T if cfg.check_steps is None else max(1, min(shape.T, cfg.check_steps))
    per_step_flops = 3 * 6.0 * shape.B * shape.H * (shape.H + shape.F)
    # the step loop's autograd graph keeps ~30 (B, H)-sized float64 tensors per step
    per_step_bytes = 8.0 * shape.B * (30 * shape.H + 2 * shape.F)
    fit = int(min(cfg.check_max_flops / per_step_flops, cfg.check_max_bytes / per_step_bytes))
    return max(1, min(T, max(fit, min(T, 8))))


@dataclass
class Reference:
    steps: int
    out: torch.Tensor
    grads: Tuple[torch.Tensor, ...]  # x, kernel, recurrent_kernel, bias


def compute_reference(master: dict, reset_after: bool, steps: int, device: torch.device,
                      grads: bool = True) -> Reference:
    """The float64 step loop on the first `steps` steps; with `grads`, also the gradients for
    the upstream gradient `grad_out` (fwd-only groups skip that backward)."""
    d = case_data(master, reset_after, torch.float64, device, steps)
    if not grads:
        with torch.no_grad():
            out = reference.gru(d.x, d.kernel, d.recurrent_kernel, d.bias,
                                reset_after=reset_after)[0]
        return Reference(steps, out, ())
    x, k, rk, b = (_leaf(t) for t in (d.x, d.kernel, d.recurrent_kernel, d.bias))
    with torch.enable_grad():
        out = reference.gru(x, k, rk, b, reset_after=reset_after)[0]
        out.backward(d.grad_out)
    return Reference(steps, out.detach(), (x.grad, k.grad, rk.grad, b.grad))


def rel_err(a: Optional[torch.Tensor], ref: torch.Tensor) -> float:
    """max|a - ref| / max|ref| (inf when missing, mis-shaped or not finite)."""
    if a is None or tuple(a.shape) != tuple(ref.shape):
        return float("inf")
    diff = (a.detach().to(device=ref.device, dtype=torch.float64) - ref).abs().max().item()
    scale = ref.abs().max().item()
    err = diff / scale if scale > 0 else diff
    return err if math.isfinite(err) else float("inf")


def check_candidate(model: Model, data: CaseData, ref: Reference, mode: str) -> Dict[str, float]:
    """The candidate's errors against the float64 reference on the check prefix: the outputs of
    an inference call for `fwd` (no_grad can take its own code path), else the outputs and the
    gradients of x and the three weights for the reference's upstream gradient."""
    x = data.x[:, :ref.steps].contiguous()
    if mode == "fwd":
        with torch.no_grad(), model.context():
            out = model.forward(x)
        return {"out": rel_err(out, ref.out)}
    x = _leaf(x)
    for p in model.params:
        p.grad = None
    with torch.enable_grad(), model.context():
        out = model.forward(x)
        out.backward(data.grad_out[:, :ref.steps].contiguous())
    errs = {"out": rel_err(out, ref.out), "grad_x": rel_err(x.grad, ref.grads[0])}
    for name, g, r in zip(("grad_kernel", "grad_recurrent_kernel", "grad_bias"),
                          model.keras_grads(), ref.grads[1:]):
        errs[name] = rel_err(g, r)
    for p in model.params:
        p.grad = None
    return errs


# --------------------------------------------------------------------------------------------
# Timing
# --------------------------------------------------------------------------------------------

def make_runner(model: Model, data: CaseData, mode: str) -> Callable[[], None]:
    """One timed unit of work. fwd: inference (no autograd). fwd+bwd: forward then backward of
    a fixed upstream gradient, x requiring grad (a layer inside a network). train: zero_grad,
    forward, MSE loss on the outputs, backward, Adam step (x is data: no grad)."""
    params = model.params
    if mode == "fwd":
        x = data.x

        def run():
            with torch.no_grad(), model.context():
                model.forward(x)
    elif mode == "fwd+bwd":
        x = _leaf(data.x)
        gy = data.grad_out

        def run():
            x.grad = None
            for p in params:
                p.grad = None
            with model.context():
                model.forward(x).backward(gy)
    elif mode == "train":
        x, target = data.x, data.target
        opt = torch.optim.Adam(params, lr=1e-4)

        def run():
            with model.context():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(model.forward(x), target)
                loss.backward()
                opt.step()
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return run


class Timer:
    """Interleaved timing of several runners on one device."""

    def __init__(self, device: torch.device):
        self.device = device
        self.cuda = device.type == "cuda"
        self._flush_buf = None

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def flush_l2(self):
        if self._flush_buf is None:
            self._flush_buf = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=self.device)
        self._flush_buf.zero_()  # writing 256 MB evicts every line of a 50-60 MB L2

    def wall(self, fn) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def run(self, runners: Dict[str, Callable[[], None]], cfg: Config,
            on_error: Callable[[str, BaseException], None],
            probe: Optional[Callable[[str], None]] = None) -> Tuple[Dict[str, dict], int]:
        """Warm-up, then `reps` rounds; each round runs every runner once (CPU) or twice (GPU:
        cold-L2 after a flush, then warm-L2 right after), in an order rotated every round so
        that drift and neighbours hit every candidate alike. Returns per-runner times (ms)."""
        live = dict(runners)

        def guarded(name, fn):
            try:
                fn()
                return True
            except Exception as e:  # one failing candidate must not stop the others
                on_error(name, e)
                live.pop(name, None)
                if self.cuda:
                    torch.cuda.empty_cache()
                return False

        for _ in range(cfg.warmup):
            for name, fn in list(live.items()):
                guarded(name, fn)
        est = {}
        for name, fn in list(live.items()):
            t0 = time.perf_counter()
            if guarded(name, lambda: self.wall(fn)):
                est[name] = time.perf_counter() - t0
                if probe is not None:  # right after this candidate's own full-size run
                    probe(name)
        if cfg.repeats is not None:
            reps = cfg.repeats
        else:
            per_round = sum(est.values()) * (2 if self.cuda else 1)
            reps = int(cfg.budget_s / per_round) if per_round > 0 else cfg.max_repeats
            reps = max(cfg.min_repeats, min(cfg.max_repeats, reps))

        times = {n: {"warm": [], "cold": []} for n in live}
        names = list(live)
        was_enabled = gc.isenabled()
        gc.collect(1)  # the young generations; run_benchmark does full collections
        gc.disable()  # a collection inside a timed run is noise, not the candidate's cost
        try:
            for r in range(reps):
                k = r % max(1, len(names))
                for name in names[k:] + names[:k]:
                    if name not in live:
                        continue
                    fn = live[name]
                    if self.cuda:
                        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

                        def timed(fn=fn, ev=ev):
                            self.flush_l2()
                            ev[0].record()
                            fn()
                            ev[1].record()
                            ev[2].record()
                            fn()
                            ev[3].record()
                        if guarded(name, timed):
                            times[name]["pending"] = times[name].get("pending", []) + [ev]
                    else:
                        t0 = time.perf_counter()
                        if guarded(name, fn):
                            times[name]["warm"].append((time.perf_counter() - t0) * 1e3)
                if self.cuda:  # one sync per round: the host never runs far ahead
                    torch.cuda.synchronize(self.device)
                    for name in names:
                        for ev in times[name].pop("pending", []):
                            times[name]["cold"].append(ev[0].elapsed_time(ev[1]))
                            times[name]["warm"].append(ev[2].elapsed_time(ev[3]))
        finally:
            if was_enabled:
                gc.enable()
        return {n: t for n, t in times.items() if n in live}, reps


def _quantiles(v: List[float]) -> Tuple[Optional[float], Optional[float], Optional[float]]:
    if not v:
        return None, None, None
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], statistics.median(v), q[2]


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

RESULT_FIELDS = [
    "B", "T", "H", "F", "dtype", "reset_after", "mode", "candidate", "label", "status", "path",
    "note",
    "check_steps", "max_err", "tolerance", "tolerance_grad", "errors", "ms", "ms_p25", "ms_p75",
    "ms_cold", "ms_cold_p25", "ms_cold_p75", "repeats", "gflop", "gflop_with_input_proj", "tflops",
    "tflops_with_input_proj", "tflops_cold", "vs_torch", "vs_torch_cold", "vs_steploop",
]
META_FIELDS = ["device", "device_name", "sm_count", "compute_capability", "driver", "cuda",
               "cudnn", "cudnn_tf32", "torch", "gru_cuda", "git_commit", "cpu_model",
               "torch_threads", "date"]


def expand_cases(blocks: List[Block]) -> List[Case]:
    seen, cases = set(), []
    for b in blocks:
        for s, ra, dt, m in itertools.product(b.shapes, b.reset_after, b.dtypes, b.modes):
            c = Case(s, dt, ra, m)
            if c not in seen:
                seen.add(c)
                cases.append(c)
    # grouped by (shape, reset_after): one data set and one reference per group
    order = {}
    for c in cases:
        order.setdefault((c.shape, c.reset_after), len(order))
    return sorted(cases, key=lambda c: (order[(c.shape, c.reset_after)],
                                        list(DTYPES).index(c.dtype), MODES.index(c.mode)))


class Progress:
    """A text progress bar on stderr (a line per ~10% when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last_decile = -1

    def clear(self):
        if self.enabled and self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def update(self, label: str):
        if not self.enabled:
            return
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
        eta_s = "--" if math.isnan(eta) else _fmt_dur(eta)
        width = 28
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = f"[{bar}] {self.done}/{self.total} {_fmt_dur(elapsed)} eta {eta_s}  {label}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:160])
            sys.stderr.flush()
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def finish(self):
        if self.enabled:
            self.clear()
            sys.stderr.write(f"{self.total} cases in {_fmt_dur(time.perf_counter() - self.t0)}\n")
            sys.stderr.flush()


def _fmt_dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def _error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:200]


def run_case(case: Case, master: dict, ref: Reference, cfg: Config, timer: Timer) -> List[dict]:
    """Checks, then times, every candidate on one case; one result row per candidate."""
    s = case.shape
    dtype = DTYPES[case.dtype]
    tol_out, tol_grad = TOLERANCE[case.dtype]
    data = case_data(master, case.reset_after, dtype, cfg.device)
    rows: Dict[str, dict] = {}
    runners: Dict[str, Callable[[], None]] = {}
    models = {}
    for cand in cfg.candidates:
        row = {"B": s.B, "T": s.T, "H": s.H, "F": s.F, "dtype": case.dtype,
               "reset_after": case.reset_after, "mode": case.mode, "candidate": cand.key,
               "label": cand.label, "status": "skipped", "note": "", "check_steps": ref.steps,
               "tolerance": tol_out, "tolerance_grad": tol_grad,
               "gflop": flops(s, case.mode) / 1e9,
               "gflop_with_input_proj": flops(s, case.mode, input_projection=True) / 1e9}
        rows[cand.key] = row
        why = cand.skip_reason(case, cfg)
        if why:
            row["note"] = why
            continue
        try:
            model = cand.build(data, case, cfg)
            errs = check_candidate(model, data, ref, case.mode)
        except Exception as e:
            row.update(status="error", note=_error_text(e))
            if cfg.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        row["max_err"] = max(errs.values())
        row["errors"] = dict(errs)
        # worst error relative to its own bound (NaN compares False: also WRONG)
        over = {k: v / (tol_out if k == "out" else tol_grad) for k, v in errs.items()}
        bad = max(over, key=over.get)
        if not all(v <= 1 for v in over.values()):
            bound = tol_out if bad == "out" else tol_grad
            row.update(status="WRONG", note=f"{bad} off by {errs[bad]:.3g} x max|ref| "
                                            f"(tolerance {bound:g}); not timed")
            continue
        row["status"] = "ok"
        models[cand.key] = model
        runners[cand.key] = make_runner(model, data, case.mode)
        if ref.steps < s.T:
            row["note"] = f"checked on the first {ref.steps} of {s.T} steps"

    def on_error(name, e):
        rows[name].update(status="error", note=_error_text(e))

    ours = {c.key for c in cfg.candidates if isinstance(c, GruCudaCandidate)}

    def probe(name):
        if name in ours:
            rows[name]["path"] = last_path(case.mode)

    times, reps = timer.run(runners, cfg, on_error, probe) if runners else ({}, 0)
    for key, t in times.items():
        row = rows[key]
        if row["status"] != "ok":
            continue
        row["repeats"] = reps
        row["ms_p25"], row["ms"], row["ms_p75"] = _quantiles(t["warm"])
        if t["cold"]:
            row["ms_cold_p25"], row["ms_cold"], row["ms_cold_p75"] = _quantiles(t["cold"])
        if row["ms"]:
            row["tflops"] = flops(s, case.mode) / (row["ms"] * 1e-3) / 1e12
            row["tflops_with_input_proj"] = (flops(s, case.mode, input_projection=True)
                                             / (row["ms"] * 1e-3) / 1e12)
        if row.get("ms_cold"):
            row["tflops_cold"] = flops(s, case.mode) / (row["ms_cold"] * 1e-3) / 1e12
    for base, col in (("torch", "vs_torch"), ("steploop", "vs_steploop")):
        b = rows.get(base)
        if not b or b["status"] != "ok" or not b.get("ms"):
            continue
        for row in rows.values():
            if row["status"] == "ok" and row.get("ms"):
                row[col] = b["ms"] / row["ms"]
                if col == "vs_torch" and b.get("ms_cold") and row.get("ms_cold"):
                    row["vs_torch_cold"] = b["ms_cold"] / row["ms_cold"]
    del models, runners, data
    return list(rows.values())


def _keras_version(cfg: Config) -> Optional[str]:
    k = next((c for c in cfg.candidates if isinstance(c, KerasCandidate)), None)
    keras = k.load() if k is not None else None
    return None if keras is None else f"{keras.__version__} ({keras.backend.backend()} backend)"


def _unchecked_row(case: Case, cand: Candidate, why: str) -> dict:
    s = case.shape
    return {"B": s.B, "T": s.T, "H": s.H, "F": s.F, "dtype": case.dtype,
            "reset_after": case.reset_after, "mode": case.mode, "candidate": cand.key,
            "label": cand.label, "status": "error",
            "note": f"the float64 reference failed, so nothing was checked or timed: {why}"}


def run_benchmark(cfg: Config, on_rows: Optional[Callable[[List[dict]], None]] = None
                  ) -> Tuple[dict, List[dict]]:
    """Runs every case of cfg.blocks; returns (metadata, result rows)."""
    if cfg.device.type == "cuda":
        torch.backends.cudnn.enabled = True  # the baseline is cuDNN, not a native fallback
    meta = collect_metadata(cfg.device)
    meta["keras"] = _keras_version(cfg)
    cases = expand_cases(cfg.blocks)
    if cfg.device.type != "cuda":
        dropped = [c for c in cases if c.dtype == "float16"]
        if dropped:
            cfg.notes.append(f"{len(dropped)} float16 case(s) dropped: float16 runs on a GPU only")
            cases = [c for c in cases if c.dtype != "float16"]
    timer = Timer(cfg.device)
    check_device = cfg.check_device or cfg.device
    progress = Progress(len(cases), cfg.progress)
    rows: List[dict] = []
    masters: Dict[Shape, dict] = {}
    refs: Dict[Tuple[Shape, bool], object] = {}  # a Reference, or why it failed
    for case in cases:
        progress.update(f"{case.shape} {SHORT_DTYPE[case.dtype]} "
                        f"ra={'T' if case.reset_after else 'F'} {case.mode}")
        key = (case.shape, case.reset_after)
        if key not in refs:  # cases come grouped: drop the previous group's tensors
            masters = {case.shape: masters.get(case.shape)
                       or make_master(case.shape, cfg.seed, cfg.device)}
            refs = {k_: v for k_, v in refs.items() if k_[0] == case.shape}
            gc.collect()
            if cfg.device.type == "cuda":
                torch.cuda.empty_cache()
            grads = any(c.mode != "fwd" for c in cases if (c.shape, c.reset_after) == key)
            try:
                refs[key] = compute_reference(masters[case.shape], case.reset_after,
                                              check_length(case.shape, cfg), check_device, grads)
            except Exception as e:  # e.g. out of memory: nothing of this group can be checked
                refs[key] = _error_text(e)
                if check_device.type == "cuda":
                    torch.cuda.empty_cache()
        if isinstance(refs[key], str):
            case_rows = [_unchecked_row(case, c, refs[key]) for c in cfg.candidates]
        else:
            case_rows = run_case(case, masters[case.shape], refs[key], cfg, timer)
        rows.extend(case_rows)
        progress.done += 1
        progress.clear()
        if on_rows is not None:
            on_rows(case_rows)
    progress.finish()
    meta["load_average_end"] = _loadavg()
    meta["notes"] = list(cfg.notes)
    return meta, rows


# --------------------------------------------------------------------------------------------
# Output: table, summary, CSV, JSON, plot
# --------------------------------------------------------------------------------------------

def _f(v, fmt: str, missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _ms(v) -> str:
    if v is None:
        return "-"
    return format(v, ".1f" if v >= 100 else ".3f" if v >= 1 else ".4f")


class TablePrinter:
    def __init__(self, cuda: bool, out=sys.stdout):
        self.cuda, self.out = cuda, out
        cols = [("B", 4), ("T", 5), ("H", 5), ("F", 5), ("dtype", 5), ("ra", 2), ("mode", 7),
                ("candidate", 22), ("status", 7), ("ms", 9)]
        if cuda:
            cols += [("ms cold", 9)]
        cols += [("TFLOP/s", 8), ("x torch", 7), ("x loop", 7), ("err", 7)]
        self.cols = cols
        self.printed_header = False
        self._last_case = None

    # text columns left-aligned, numbers right-aligned
    TEXT = ("dtype", "ra", "mode", "candidate", "status")

    def _join(self, cells: List[str]) -> str:
        return " ".join(c.ljust(w) if n in self.TEXT else c.rjust(w)
                        for c, (n, w) in zip(cells, self.cols))

    def header(self):
        line = self._join([n for n, _ in self.cols])
        print(line, file=self.out)
        print("-" * len(line), file=self.out)
        self.printed_header = True

    def rows(self, rows: List[dict]):
        if not self.printed_header:
            self.header()
        for r in rows:
            case = (r["B"], r["T"], r["H"], r["F"], r["dtype"], r["reset_after"], r["mode"])
            same = case == self._last_case
            self._last_case = case
            cells = ["" if same else str(r["B"]), "" if same else str(r["T"]),
                     "" if same else str(r["H"]), "" if same else str(r["F"]),
                     "" if same else SHORT_DTYPE[r["dtype"]],
                     "" if same else ("T" if r["reset_after"] else "F"),
                     "" if same else r["mode"], r["label"][:22], r["status"]]
            if r["status"] == "ok":
                cells.append(_ms(r.get("ms")))
                if self.cuda:
                    cells.append(_ms(r.get("ms_cold")))
                cells += [_f(r.get("tflops"), ".3g"), _f(r.get("vs_torch"), ".2f"),
                          _f(r.get("vs_steploop"), ".2f"), _f(r.get("max_err"), ".0e")]
                line = self._join(cells)
                extra = [f"path {r['path']}"] if r.get("path") else []
                extra += [r["note"]] if r.get("note") else []
                if extra:
                    line += f"  ({'; '.join(extra)})"
            else:
                line = self._join(cells)
                if r["status"] == "WRONG":
                    line += f"  err {_f(r.get('max_err'), '.2e')}:"
                line += f"  {r.get('note', '')}"
            print(line.rstrip(), file=self.out)
        self.out.flush()


def _geomean(v: List[float]) -> Optional[float]:
    v = [x for x in v if x and x > 0]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else None


def summarize(rows: List[dict]) -> List[dict]:
    """Geometric-mean, min and max speedups of each gru_cuda candidate per dtype/mode/ra."""
    groups: Dict[tuple, Dict[str, List[float]]] = {}
    for r in rows:
        if r["status"] != "ok" or not r["candidate"].startswith("gru_cuda"):
            continue
        g = groups.setdefault((r["candidate"], r["dtype"], r["mode"], r["reset_after"]), {})
        for col in ("vs_torch", "vs_torch_cold", "vs_steploop"):
            if r.get(col):
                g.setdefault(col, []).append(r[col])
    out = []
    for (cand, dt, mode, ra), g in groups.items():
        s = {"candidate": cand, "dtype": dt, "mode": mode, "reset_after": ra}
        for col, v in g.items():
            s[col] = {"geomean": _geomean(v), "min": min(v), "max": max(v), "n": len(v)}
        out.append(s)
    return out


def print_summary(meta: dict, summary: List[dict], out=sys.stdout):
    if not summary:
        return
    print("\nSpeedup of gru_cuda (geometric mean over shapes [min, max]; >1 = gru_cuda faster):",
          file=out)
    for s in summary:
        parts = []
        for col, label in (("vs_torch", "vs torch.nn.GRU"), ("vs_torch_cold", "cold-L2"),
                           ("vs_steploop", "vs step loop")):
            if col in s:
                v = s[col]
                parts.append(f"{label} {v['geomean']:.2f}x [{v['min']:.2f}, {v['max']:.2f}] "
                             f"n={v['n']}")
        if parts:
            print(f"  {s['candidate']:<20} {SHORT_DTYPE[s['dtype']]:<4} {s['mode']:<7} "
                  f"ra={'T' if s['reset_after'] else 'F'}: " + "; ".join(parts), file=out)


def print_metadata(meta: dict, out=sys.stdout):
    if meta["device"].startswith("cuda"):
        sm = str(meta["compute_capability"]).replace(".", "")
        print(f"# {meta['device_name']} ({meta['sm_count']} SMs, sm_{sm}, "
              f"L2 {meta['l2_cache_mb']} MB) | driver {meta['driver']} | CUDA {meta['cuda']} | "
              f"cuDNN {meta['cudnn']} (TF32 {'on' if meta['cudnn_tf32'] else 'off'})", file=out)
    else:
        print(f"# {meta['device_name']} | {meta['cpu_count']} CPUs, torch threads "
              f"{meta['torch_threads']} | load average {meta['load_average']}", file=out)
    print(f"# torch {meta['torch']} | gru_cuda {meta['gru_cuda']} (commit {meta['git_commit']}) | "
          f"keras {meta.get('keras')} | python {meta['python']} | {meta['date']}", file=out)


def _slug(s: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)|cpu:|nvidia", "", s.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:40] or "device"


def output_stem(meta: dict, preset: str) -> str:
    dev = ("cpu-" + _slug(meta["cpu_model"]) if meta["device"] == "cpu"
           else _slug(meta["device_name"]))
    stamp = meta["date"][:19].replace("-", "").replace(":", "").replace("T", "-")
    return f"gru_bench_{preset}_{dev}_{stamp}"


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ";".join(f"{k}={_csv_value(x)}" for k, x in v.items())
    return "" if v is None else v


def write_csv(path: str, meta: dict, rows: List[dict]):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULT_FIELDS + META_FIELDS)
        for r in rows:
            w.writerow([_csv_value(r.get(k)) for k in RESULT_FIELDS]
                       + [_csv_value(meta.get(k)) for k in META_FIELDS])


def _json_clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    if isinstance(v, dict):
        return {k: _json_clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_clean(x) for x in v]
    return v


def write_json(path: str, meta: dict, rows: List[dict], summary: List[dict], cfg: Config):
    doc = {
        "metadata": meta,
        "config": {
            "preset": cfg.preset, "argv": cfg.argv,
            "candidates": [c.key for c in cfg.candidates],
            "repeats": cfg.repeats, "min_repeats": cfg.min_repeats,
            "max_repeats": cfg.max_repeats, "warmup": cfg.warmup, "budget_s": cfg.budget_s,
            "check_device": str(cfg.check_device or cfg.device),
            "check_steps": cfg.check_steps, "seed": cfg.seed,
            "tolerance": {k: {"outputs": v[0], "gradients": v[1]} for k, v in TOLERANCE.items()},
        },
        "conventions": {
            "ms": "median wall time of one run (warm L2 on a GPU), milliseconds",
            "ms_cold": "median after writing a 256 MB buffer (cold L2), GPU only",
            "tflops": "DeepBench: 6*H^2*B*T per forward recurrence; x3 for fwd+bwd and train",
            "tflops_with_input_proj": "adds 6*F*H*B*T per forward for the input projection",
            "vs_torch": "time of torch.nn.GRU / time of this candidate (>1: faster)",
            "vs_steploop": "time of the PyTorch step loop / time of this candidate",
            "max_err": "max over checked tensors of max|candidate - float64 ref| / max|ref|",
        },
        "summary": summary,
        "results": rows,
    }
    with open(path, "w") as f:
        json.dump(_json_clean(doc), f, indent=1)


def plot(path: str, meta: dict, rows: List[dict]) -> Optional[str]:
    """Speedup of gru_cuda (auto dispatch) by batch (x) and hidden size (one line each), one
    panel per mode x dtype x baseline: torch.nn.GRU (cuDNN) on a GPU; torch.nn.GRU and the step
    loop on a CPU. Returns None, or why nothing was drawn."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed (pip install matplotlib): no plot"
    from matplotlib.ticker import FuncFormatter, NullFormatter
    plain = FuncFormatter(lambda v, _: f"{v:g}")

    def sparse(v, _):  # minor ticks: label 2x and 5x only, or the labels collide
        m = v / 10 ** math.floor(math.log10(v)) if v > 0 else 0
        return f"{v:g}" if any(abs(m - k) < 1e-6 for k in (2, 5)) else ""
    cuda = meta["device"].startswith("cuda")
    baselines = [("vs_torch", "torch.nn.GRU (cuDNN)" if cuda else "torch.nn.GRU")]
    if not cuda:
        baselines.append(("vs_steploop", "step loop"))
    ok = [r for r in rows if r["candidate"] == "gru_cuda" and r["status"] == "ok"]
    modes = [m for m in MODES if any(r["mode"] == m for r in ok)]
    dtypes = [d for d in DTYPES if any(r["dtype"] == d for r in ok)]
    panels = [(m, d, b) for m in modes for b in baselines for d in dtypes]
    panels = [p for p in panels if any(r["mode"] == p[0] and r["dtype"] == p[1] and r.get(p[2][0])
                                       for r in ok)]
    if not panels:
        return "no gru_cuda speedups to plot"
    all_h = sorted({r["H"] for r in ok})
    all_t = sorted({r["T"] for r in ok})
    t_count = {t: sum(r["T"] == t for r in ok) for t in all_t}
    main_t = max(all_t, key=lambda t: t_count[t])  # the grid's T: solid lines, others dotted
    colors = plt.rcParams["axes.prop_cycle"].by_key().get("color", ["C0"])
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    ncols = len(dtypes) * len(baselines)
    nrows = len(modes)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.6 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.set_visible(False)
    for m, d, (col, blabel) in panels:
        ax = axes[modes.index(m)][[(dd, bb) for bb in baselines for dd in dtypes].index(
            (d, (col, blabel)))]
        ax.set_visible(True)
        sel = [r for r in ok if r["mode"] == m and r["dtype"] == d and r.get(col)]
        # reset_after=True when both exist: the only convention every baseline runs
        if any(r["reset_after"] for r in sel):
            sel = [r for r in sel if r["reset_after"]]
        by_ht: Dict[Tuple[int, int], List[dict]] = {}
        for r in sel:
            by_ht.setdefault((r["H"], r["T"]), []).append(r)
        for (h, t), rs in sorted(by_ht.items()):
            rs = sorted(rs, key=lambda r: r["B"])
            # one colour per H and one marker per T, the same in every panel
            ax.plot([r["B"] for r in rs], [r[col] for r in rs], label=f"H={h}, T={t}",
                    color=colors[all_h.index(h) % len(colors)],
                    marker=markers[all_t.index(t) % len(markers)],
                    ls="-" if t == main_t else ":")
        ax.axhline(1.0, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        batches = sorted({r["B"] for r in sel})
        ax.set_xticks(batches)
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(FuncFormatter(sparse))
        lo, hi = ax.get_ylim()
        ax.set_ylim(min(lo, 0.8), max(hi, 1.25))  # parity always in view
        ax.set_xlabel("batch size B")
        ax.set_ylabel(f"speedup vs {blabel}")
        ra = bool(sel and sel[0]["reset_after"])
        ax.set_title(f"{m}, {d}, reset_after={ra}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=6, ncol=2)
    fig.suptitle(f"gru_cuda speedup (>1 = faster): {meta['device_name']}, torch {meta['torch']}, "
                 f"{meta['date'][:10]}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------

def _parse_bool(s: str) -> bool:
    v = s.strip().lower()
    if v in ("true", "t", "1", "yes", "y"):
        return True
    if v in ("false", "f", "0", "no", "n"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {s!r}")


def _parse_shape(s: str) -> Shape:
    parts = [p for p in re.split(r"[,x ]+", s.strip()) if p]
    try:
        nums = [int(p) for p in parts]
    except ValueError:
        nums = []
    if len(nums) not in (3, 4) or min(nums) < 1:
        raise argparse.ArgumentTypeError(
            f"--shape wants B,T,H or B,T,H,F (positive ints), got {s!r}")
    return Shape(nums[0], nums[1], nums[2], nums[3] if len(nums) == 4 else nums[2])


def _parse_dtype(s: str) -> str:
    v = DTYPE_ALIASES.get(s.lower(), s.lower())
    if v not in DTYPES:
        raise argparse.ArgumentTypeError(f"dtype must be one of {', '.join(DTYPES)}, got {s!r}")
    return v


def default_device() -> str:
    try:
        has_cuda_build = bool(gru_cuda.build_info().get("cuda"))
    except Exception:
        has_cuda_build = False
    return "cuda" if torch.cuda.is_available() and has_cuda_build else "cpu"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gru_cuda.bench",
        description="Benchmark gru_cuda against torch.nn.GRU (cuDNN), the PyTorch step loop and "
                    "Keras 3's GRU. Each candidate is checked against a float64 reference "
                    "before it is timed. See docs/benchmarks.md.",
    )
    g = p.add_mutually_exclusive_group()
    g.add_argument("--quick", dest="preset", action="store_const", const="quick",
                   help="two tiny shapes, float32: seconds, a smoke test")
    g.add_argument("--deepbench", dest="preset", action="store_const", const="deepbench",
                   help="DeepBench's GRU shapes (training at B=32: fwd+bwd; inference at "
                        "B=1,2,4: fwd; float32 and float16 on a GPU)")
    g.add_argument("--flashrnn", dest="preset", action="store_const", const="flashrnn",
                   help="FlashRNN's shape: B=16, T=1024, H=768, bfloat16")
    g.add_argument("--preset", dest="preset", choices=sorted(PRESETS),
                   help="a preset by name (default: 'default')")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:N or cpu (default: cuda when available and gru_cuda was "
                        "built with CUDA, else cpu)")
    p.add_argument("--shape", action="append", type=_parse_shape, default=[], metavar="B,T,H[,F]",
                   help="a custom shape (repeat the flag for more); replaces the preset's shapes")
    p.add_argument("--batch", type=int, nargs="+", help="custom batch sizes (product with "
                   "--seq and --hidden; missing lists default to 16 / 128 / 256)")
    p.add_argument("--seq", "--timesteps", dest="seq", type=int, nargs="+",
                   help="custom sequence lengths")
    p.add_argument("--hidden", "--units", dest="hidden", type=int, nargs="+",
                   help="custom hidden sizes")
    p.add_argument("--input-size", type=int, nargs="+",
                   help="input features F (default: F = H, as DeepBench)")
    p.add_argument("--candidates", nargs="+", default=None, metavar="NAME",
                   help="gru_cuda (automatic dispatch), paths (every forced kernel path), "
                        "gru_cuda[PATH], torch (torch.nn.GRU / cuDNN), steploop (the PyTorch "
                        "step loop), keras (Keras 3, torch backend), broken (deliberately "
                        f"wrong). Default: {' '.join(DEFAULT_CANDIDATES)} (--quick: "
                        f"{' '.join(QUICK_CANDIDATES)})")
    p.add_argument("--modes", nargs="+", choices=MODES, help="override the preset's modes")
    p.add_argument("--dtypes", nargs="+", type=_parse_dtype, help="override the preset's dtypes")
    p.add_argument("--reset-after", nargs="+", type=_parse_bool, metavar="true|false",
                   help="override the preset's reset_after values")
    p.add_argument("--repeats", type=int, default=None,
                   help="timed repetitions per candidate (default: adaptive, as many as fit "
                        "--budget within [--min-repeats, --max-repeats])")
    p.add_argument("--min-repeats", type=int, default=None)
    p.add_argument("--max-repeats", type=int, default=None)
    p.add_argument("--budget", type=float, default=None,
                   help="seconds of timed runs per case for adaptive repeats (default: 1 on a "
                        "GPU, 3 on a CPU)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs per candidate first")
    p.add_argument("--check-steps", type=int, default=None,
                   help="cap on the correctness check's sequence length (default: the whole "
                        "sequence when the float64 reference is cheap enough, else a prefix)")
    p.add_argument("--check-device", default=None,
                   help="where the float64 reference runs (default: the benchmark device)")
    p.add_argument("--steploop-max-steps", type=int, default=None,
                   help="skip the step loop (and Keras' loop) above this T "
                        "(default: 128 on a GPU, 1024 on a CPU)")
    p.add_argument("--steploop-max-gflop", type=float, default=None,
                   help="skip the step loop above this many GFLOP per run (default: 15 on a CPU)")
    p.add_argument("--tf32", choices=("default", "on", "off"), default="default",
                   help="TF32 for float32 cuDNN/cuBLAS (torch's default: cuDNN on, cuBLAS off)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the CPU (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=os.path.join("benchmarks", "results"),
                   help="folder for the CSV, JSON and PNG")
    p.add_argument("--no-save", action="store_true", help="print the table only")
    p.add_argument("--no-plot", action="store_true")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--list", action="store_true",
                   help="list the cases and candidates that would run, and exit")
    return p


def config_from_args(args: argparse.Namespace, argv: List[str]) -> Config:
    device = torch.device(args.device or default_device())
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise SystemExit("--device cuda, but torch sees no CUDA GPU")
        if device.index is not None:
            torch.cuda.set_device(device)
        else:
            device = torch.device("cuda", torch.cuda.current_device())
    elif device.type != "cpu":
        raise SystemExit(f"--device must be cpu or cuda[:N], got {device}")
    cuda = device.type == "cuda"
    notes: List[str] = []
    if cuda and not (_safe_build_info() or {}).get("cuda"):
        notes.append("gru_cuda was built without CUDA: its candidates will fail on this device")

    preset = args.preset or "default"
    blocks = preset_blocks(preset, device)
    custom = list(args.shape)
    if args.batch or args.seq or args.hidden or args.input_size:
        feats = args.input_size or [None]
        for b, t, h, f in itertools.product(args.batch or [16], args.seq or [128],
                                            args.hidden or [256], feats):
            custom.append(Shape(b, t, h, h if f is None else f))
    if custom:
        # custom shapes take the preset's settings, merged over its blocks
        dts = tuple(dict.fromkeys(d for b in blocks for d in b.dtypes))
        ras = tuple(dict.fromkeys(r for b in blocks for r in b.reset_after))
        mds = tuple(dict.fromkeys(m for b in blocks for m in b.modes))
        blocks = [Block(custom, dts, ras, mds)]
        preset = "custom" if args.preset is None else f"{preset}-custom"
    for b in blocks:
        if args.dtypes:
            b.dtypes = tuple(dict.fromkeys(args.dtypes))
        if args.reset_after:
            b.reset_after = tuple(dict.fromkeys(args.reset_after))
        if args.modes:
            b.modes = tuple(dict.fromkeys(args.modes))

    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    if args.tf32 != "default":
        torch.backends.cudnn.allow_tf32 = args.tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = args.tf32 == "on"

    busy = _busy()
    if busy:
        notes.append(f"the machine is busy ({busy}): expect noisy timings")
    quick = preset.startswith("quick")
    cfg = Config(device=device, blocks=blocks, candidates=[], preset=preset, argv=argv,
                 notes=notes, seed=args.seed, progress=not args.no_progress)
    cfg.candidates = resolve_candidates(
        args.candidates or (QUICK_CANDIDATES if quick else DEFAULT_CANDIDATES), device, cfg.notes)
    # the correctness check has already run each candidate once
    cfg.warmup = args.warmup if args.warmup is not None else (1 if quick else (2 if cuda else 1))
    cfg.repeats = args.repeats if args.repeats is not None else (3 if quick else None)
    cfg.min_repeats = args.min_repeats or (5 if cuda else 3)
    cfg.max_repeats = args.max_repeats or (30 if cuda else 9)
    cfg.budget_s = args.budget if args.budget is not None else (1.0 if cuda else 3.0)
    cfg.check_device = torch.device(args.check_device) if args.check_device else None
    cfg.check_steps = args.check_steps
    check_cuda = (cfg.check_device or device).type == "cuda"
    cfg.check_max_flops = 2e13 if check_cuda else 1e10
    cfg.check_max_bytes = 8e9 if check_cuda else 2e9
    cfg.steploop_max_steps = (args.steploop_max_steps if args.steploop_max_steps is not None
                              else (128 if cuda else 1024))
    cfg.steploop_max_flops = (args.steploop_max_gflop * 1e9 if args.steploop_max_gflop is not None
                              else (float("inf") if cuda else 15e9))
    return cfg


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, argv)
    cases = expand_cases(cfg.blocks)
    if args.list:
        print(f"device {cfg.device}; candidates: {', '.join(c.key for c in cfg.candidates)}")
        for c in cases:
            print(f"  {c.shape}  {c.dtype}  reset_after={c.reset_after}  {c.mode}")
        print(f"{len(cases)} cases")
        return 0
    if not cfg.candidates:
        raise SystemExit("no candidate to run")

    printer = TablePrinter(cfg.device.type == "cuda")
    meta = collect_metadata(cfg.device)
    print_metadata({**meta, "keras": _keras_version(cfg)})
    for n in cfg.notes:
        print(f"# note: {n}")
    n_before = len(cfg.notes)
    meta, rows = run_benchmark(cfg, on_rows=printer.rows)
    for n in meta["notes"][n_before:]:
        print(f"# note: {n}")
    summary = summarize(rows)
    print_summary(meta, summary)
    wrong = [r for r in rows if r["status"] == "WRONG"]
    if wrong:
        print(f"\n{len(wrong)} WRONG result(s): "
              + ", ".join(sorted({r['label'] for r in wrong})), file=sys.stdout)

    if not args.no_save:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, output_stem(meta, cfg.preset))
        write_csv(stem + ".csv", meta, rows)
        write_json(stem + ".json", meta, rows, summary, cfg)
        written = [stem + ".csv", stem + ".json"]
        if not args.no_plot:
            why = plot(stem + ".png", meta, rows)
            if why:
                print(f"# plot skipped: {why}")
            else:
                written.append(stem + ".png")
        print("\nwrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
