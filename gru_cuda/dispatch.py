"""Which kernel path runs a GRU, why, and a switch to force one (tests and benchmarks).

Paths: ``"cpu"`` (CPU tensors: the fused CPU kernels), and for CUDA tensors ``"stepwise"``
(a cuBLAS GEMM plus a fused pointwise kernel per step), ``"persistent"`` (one cooperative
launch for the whole recurrence, recurrent weights in shared memory, a grid-wide barrier per
step) and ``"persistent_cluster"`` (sm_90: thread-block clusters, one per batch tile, with
distributed shared memory and ``cluster.sync()``; no grid-wide barrier). docs/persistent.md
describes the persistent kernels and the capacity model that chooses between the paths.

    >>> import gru_cuda.dispatch as d
    >>> d.kernel_paths("cpu")
    ['cpu']
    >>> with d.force_path("stepwise"):        # every CUDA call inside runs stepwise
    ...     pass
    >>> d.explain(8, 512, 1024)["path"]       # on a CPU-only machine: 'cpu'
    'cpu'

The forced path is process-wide (it applies to every thread). A forced persistent path that
cannot run a call (the weights do not fit, float64, ...) raises ValueError with the reason; a
device that refuses the co-resident launch at run time makes the call fall back to stepwise,
which :func:`last_path` reports.

The persistent paths compute their recurrent product one of four ways (PRODUCTS): ``"simt"``
(fp32 FMA), ``"tensor_core"`` (mma.sync on float16/bfloat16 operands, fp32 accumulation),
``"tf32"`` (float32 inputs on TF32 tensor cores; only when
``torch.backends.cuda.matmul.allow_tf32`` is True) and ``"3xtf32"`` (float32 inputs as three
TF32 products of the split ``x = big + small``: float32-level accuracy on tensor cores). The
capacity model picks the cheapest estimate that applies and fits; :func:`force_product`
forces one (tests and benchmarks).
"""
from __future__ import annotations

import contextlib
import threading
from typing import Dict, Iterator, List, Optional, Union

import torch

from gru_cuda._library import _C

__all__ = ["PATHS", "CUDA_PATHS", "PRODUCTS", "DEVICE_PRESETS", "kernel_paths", "set_path",
           "get_path", "force_path", "set_product", "get_product", "force_product", "last_path",
           "explain"]

CUDA_PATHS = ("stepwise", "persistent", "persistent_cluster")
PATHS = ("cpu",) + CUDA_PATHS
PRODUCTS = ("simt", "tensor_core", "tf32", "3xtf32")

# Device descriptions for what-if queries (explain(..., device_caps=...)), with the keys of
# gru_cuda._C.cuda_device_capacity; the figures are NVIDIA's published per-device limits.
DEVICE_PRESETS: Dict[str, dict] = {
    "H100-SXM": {"sm_count": 132, "compute_capability": (9, 0),
                 "shared_memory_per_block_optin": 232448, "shared_memory_per_sm": 233472,
                 "registers_per_sm": 65536, "cooperative_launch": True, "cluster_launch": True,
                 "max_cluster_size": 16},
    "H200": {"sm_count": 132, "compute_capability": (9, 0),
             "shared_memory_per_block_optin": 232448, "shared_memory_per_sm": 233472,
             "registers_per_sm": 65536, "cooperative_launch": True, "cluster_launch": True,
             "max_cluster_size": 16},
    "A100-SXM": {"sm_count": 108, "compute_capability": (8, 0),
                 "shared_memory_per_block_optin": 166912, "shared_memory_per_sm": 167936,
                 "registers_per_sm": 65536, "cooperative_launch": True, "cluster_launch": False},
}

_DTYPE_NAMES = {torch.float32: "float32", torch.float16: "float16", torch.bfloat16: "bfloat16",
                torch.float64: "float64"}

_lock = threading.Lock()
_forced: Optional[str] = None
_forced_product: Optional[str] = None


def _cuda_build() -> bool:
    return bool(_C.build_info().get("cuda", False))


def _persistent_built() -> bool:
    """True when this build has the persistent kernels and their helpers (CUDA builds)."""
    return hasattr(_C, "persistent_set_path")


def _device(device) -> torch.device:
    if device is None:
        if _cuda_build() and torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")
    d = torch.device(device)
    if d.type == "cuda" and d.index is None and torch.cuda.is_available():
        d = torch.device("cuda", torch.cuda.current_device())
    if d.type not in ("cpu", "cuda"):
        raise ValueError(f"gru_cuda runs on CPU and CUDA devices, got {d}")
    return d


def kernel_paths(device=None) -> List[str]:
    """The kernel paths that can run on `device` (default: the current CUDA device if this
    build has CUDA and one is visible, else the CPU): ``["cpu"]`` on a CPU; on a GPU
    ``"stepwise"``, plus ``"persistent"`` where cooperative launch is supported and
    ``"persistent_cluster"`` on sm_90 and newer, when this build has the persistent kernels.
    Empty for a CUDA device that this build cannot use."""
    d = _device(device)
    if d.type == "cpu":
        return ["cpu"]
    if not _cuda_build() or not torch.cuda.is_available():
        return []
    paths = ["stepwise"]
    if _persistent_built():
        caps = _C.persistent_device_caps(d.index)
        if caps["cooperative_launch"]:
            paths.append("persistent")
        if caps["cluster_launch"] and caps["compute_capability"][0] >= 9:
            paths.append("persistent_cluster")
    return paths


def _check_name(name: Optional[str]) -> Optional[str]:
    if name is None or name == "auto":
        return None
    if not isinstance(name, str) or name not in PATHS:
        raise ValueError(f"unknown kernel path {name!r}: expected one of "
                         f"{', '.join(PATHS)}, 'auto' or None")
    return name


def set_path(name: Optional[str]) -> None:
    """Force kernel path `name` for every later call (process-wide); None or ``"auto"`` gives
    the choice back to the capacity model. ``"cpu"`` is accepted (the only CPU path) and leaves
    CUDA calls on automatic dispatch; a CUDA path leaves CPU calls unchanged."""
    global _forced
    name = _check_name(name)
    with _lock:
        if _persistent_built():
            _C.persistent_set_path(name if name in CUDA_PATHS else "auto")
        _forced = name


def get_path() -> Optional[str]:
    """The forced kernel path, or None when the capacity model chooses."""
    return _forced


@contextlib.contextmanager
def force_path(name: Optional[str]) -> Iterator[None]:
    """Context manager: run the block with kernel path `name` forced (see set_path); the
    previous setting comes back on exit, also after an exception."""
    previous = get_path()
    set_path(name)
    try:
        yield
    finally:
        set_path(previous)


def set_product(name: Optional[str]) -> None:
    """Force recurrent product `name` (one of PRODUCTS) on the persistent paths for every
    later call (process-wide); None or ``"auto"`` gives the choice back to the capacity model.
    A forced product that cannot run a call (the dtype does not take it, TF32 is not allowed,
    the geometry does not fit) makes a forced persistent path raise ValueError and automatic
    dispatch pick another path; CPU calls are unaffected."""
    global _forced_product
    if name == "auto":
        name = None
    if name is not None and name not in PRODUCTS:
        raise ValueError(f"unknown recurrent product {name!r}: expected one of "
                         f"{', '.join(PRODUCTS)}, 'auto' or None")
    with _lock:
        if _persistent_built():
            _C.persistent_set_product(name or "auto")
        _forced_product = name


def get_product() -> Optional[str]:
    """The forced recurrent product, or None when the capacity model chooses."""
    return _forced_product


@contextlib.contextmanager
def force_product(name: Optional[str]) -> Iterator[None]:
    """Context manager: run the block with recurrent product `name` forced (see
    set_product); the previous setting comes back on exit, also after an exception."""
    previous = get_product()
    set_product(name)
    try:
        yield
    finally:
        set_product(previous)


def last_path() -> Dict[str, Optional[str]]:
    """What the last CUDA forward and backward of this process ran, and why:
    ``{"forward", "forward_reason", "forward_product", "backward", "backward_reason",
    "backward_product"}`` (the products are those of PRODUCTS, None for stepwise; everything is
    None before any call, and always in builds without the persistent kernels)."""
    if not _persistent_built():
        return {"forward": None, "forward_reason": None, "forward_product": None,
                "backward": None, "backward_reason": None, "backward_product": None}
    r = dict(_C.persistent_last_path())
    return {k: (v if v != "" else None) for k, v in r.items()}


def _check_size(name: str, v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"explain: {name} must be an int >= 0, got {v!r}")
    return v


def _plan(caps: dict, B: int, T: int, H: int, dtype: str, reset_after: bool, rdm: bool,
          backward: bool, forced: Optional[str], product: Optional[str],
          allow_tf32: bool) -> dict:
    forced_c = forced if forced in CUDA_PATHS else "auto"
    plan = dict(_C.persistent_plan(caps, B, T, H, dtype, reset_after, rdm, backward, forced_c,
                                   product or "auto", allow_tf32))
    if forced_c in ("persistent", "persistent_cluster") and plan["path"] != forced_c:
        # What the op does then: it raises rather than run another path under a forced name.
        plan["path"] = "error"
        plan["reason"] = f"forced path {forced_c!r} cannot run: {plan['reason']}"
    return plan


def explain(batch: int, timesteps: int, units: int, input_size: Optional[int] = None, *,
            dtype: torch.dtype = torch.float32, reset_after: bool = True,
            recurrent_dropout: bool = False, device=None,
            device_caps: Optional[Union[dict, str]] = None,
            allow_tf32: Optional[bool] = None) -> dict:
    """Which kernel path a GRU call with these shapes would run, and why.

    Returns ``{"path", "product", "reason", "backward_path", "backward_product",
    "backward_reason", "capacity"}``: `path` is
    ``"cpu"``, ``"stepwise"``, ``"persistent"``, ``"persistent_cluster"``, ``"error"`` (a
    forced path that cannot run: the call raises) or ``"unavailable"`` (a CUDA device and a
    build without CUDA); `capacity` has the device description, the forward and backward plans
    (geometry, shared memory, estimated µs per step) and the largest unit counts that fit each
    persistent path for this batch and dtype. `product` is the persistent path's recurrent
    product (PRODUCTS; None otherwise), and the plans carry the floors the benchmark compares
    with (``floor_compute_us``: the product's multiply-adds at the device's peak rate for that
    product; ``floor_barrier_us``: the step's barriers). The forced path (set_path) and
    product (set_product) are honoured. `allow_tf32` (default: the current
    ``torch.backends.cuda.matmul.allow_tf32``) says whether float32 may run as TF32.

    `input_size` does not change the choice (the input projection is one large GEMM outside
    the recurrence) and is echoed back. `device_caps` (a dict with the keys of
    ``gru_cuda._C.cuda_device_capacity``, or a name from DEVICE_PRESETS) asks the capacity
    model about another device, e.g. an H100 from a machine without a GPU.
    """
    B = _check_size("batch", batch)
    T = _check_size("timesteps", timesteps)
    H = _check_size("units", units)
    if input_size is not None:
        _check_size("input_size", input_size)
    if dtype not in _DTYPE_NAMES:
        raise ValueError(f"explain: dtype must be one of {list(_DTYPE_NAMES)}, got {dtype}")
    if not isinstance(reset_after, bool) or not isinstance(recurrent_dropout, bool):
        raise ValueError("explain: reset_after and recurrent_dropout must be bools")
    if allow_tf32 is None:
        allow_tf32 = bool(torch.backends.cuda.matmul.allow_tf32)
    base = {"batch": B, "timesteps": T, "units": H, "input_size": input_size,
            "dtype": _DTYPE_NAMES[dtype], "reset_after": reset_after,
            "recurrent_dropout": recurrent_dropout, "forced": get_path(),
            "forced_product": get_product(), "allow_tf32": bool(allow_tf32)}

    caps = None
    if device_caps is not None:
        if isinstance(device_caps, str):
            if device_caps not in DEVICE_PRESETS:
                raise ValueError(f"explain: unknown device preset {device_caps!r}; "
                                 f"choose from {list(DEVICE_PRESETS)}")
            caps = dict(DEVICE_PRESETS[device_caps])
        else:
            caps = dict(device_caps)
        if not hasattr(_C, "persistent_plan"):
            raise RuntimeError("this build of gru_cuda has no capacity model "
                               "(gru_cuda._C.persistent_plan); rebuild it")
        base["device"] = "what-if"
    else:
        d = _device(device)
        base["device"] = str(d)
        if d.type == "cpu":
            why = ("CPU tensors run the fused CPU kernels (csrc/cpu/): one path, parallel over "
                   "the batch; the GPU paths do not apply")
            return {"path": "cpu", "product": None, "reason": why, "backward_path": "cpu",
                    "backward_product": None, "backward_reason": why,
                    "capacity": {"device": "cpu"}, **base}
        if not _cuda_build() or not torch.cuda.is_available():
            why = ("this build of gru_cuda has no CUDA kernels (CPU-only build)"
                   if not _cuda_build() else "no CUDA device is visible")
            return {"path": "unavailable", "product": None, "reason": why,
                    "backward_path": "unavailable", "backward_product": None,
                    "backward_reason": why, "capacity": {"device": str(d)}, **base}
        if not hasattr(_C, "persistent_plan") or not _persistent_built():
            why = "this build has no persistent kernels: every CUDA call runs stepwise"
            return {"path": "stepwise", "product": None, "reason": why,
                    "backward_path": "stepwise", "backward_product": None,
                    "backward_reason": why, "capacity": {"device": str(d)}, **base}
        caps = dict(_C.persistent_device_caps(d.index))

    forced, product = get_path(), get_product()
    name = _DTYPE_NAMES[dtype]
    allow = bool(allow_tf32)
    fwd = _plan(caps, B, T, H, name, reset_after, recurrent_dropout, False, forced, product, allow)
    bwd = _plan(caps, B, T, H, name, reset_after, recurrent_dropout, True, forced, product, allow)
    max_units = {}
    for direction, backward in (("forward", False), ("backward", True)):
        max_units[direction] = {
            p: int(_C.persistent_max_units(caps, max(B, 1), name, reset_after, recurrent_dropout,
                                           backward, p, 8192, product or "auto", allow))
            for p in ("persistent", "persistent_cluster")}
    return {"path": fwd["path"], "product": fwd.get("product") or None, "reason": fwd["reason"],
            "backward_path": bwd["path"], "backward_product": bwd.get("product") or None,
            "backward_reason": bwd["reason"],
            "capacity": {"device": caps, "forward": fwd, "backward": bwd,
                         "max_units": max_units}, **base}
