"""Cases: shapes, the presets' blocks of shapes x dtypes x conventions x modes, the FLOP count."""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Dict, List, Tuple

import torch

MODES = ("fwd", "fwd+bwd", "train")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
DTYPE_ALIASES = {"f32": "float32", "fp32": "float32", "bf16": "bfloat16", "f16": "float16",
                 "fp16": "float16", "half": "float16"}
SHORT_DTYPE = {"float32": "f32", "bfloat16": "bf16", "float16": "f16"}

# Work per mode relative to the forward pass: the backward does two GEMMs per forward GEMM
# (data and weight gradients), so forward+backward counts 3x; the optimizer step of `train`
# is O(H^2), negligible next to O(H^2 * B * T), so it counts the same as forward+backward.
MODE_FLOP_FACTOR = {"fwd": 1, "fwd+bwd": 3, "train": 3}


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


@dataclass(frozen=True)
class Case:
    shape: Shape
    dtype: str
    reset_after: bool
    mode: str


def _grid(batches, seqs, hiddens, feats=None) -> List[Shape]:
    return [Shape(b, t, h, h if feats is None else feats)
            for t, h, b in itertools.product(seqs, hiddens, batches)]


# The small-batch shapes the recurrent-kernel literature benchmarks (B <= 32, H 128..1024; see
# docs/benchmarks.md): B x H as a grid at T=512 (the plot), and T = 128 and 1024 at two points
# (one of them FlashRNN's published shape, B=16 H=768).
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
FWD_BWD = ("fwd", "fwd+bwd")
_FLASHRNN = Shape(16, 1024, 768, 768)

PRESETS: Dict[str, Dict[str, List[Block]]] = {
    "quick": {
        "any": [Block(_grid((2, 8), (16,), (32,)), ("float32",), ALL_RA, MODES)],
    },
    "default": {
        "cuda": [Block(_GPU_GRID, ("float32", "bfloat16"), (True,), FWD_BWD),
                 Block(_GPU_SWEEP + [Shape(8, 512, 512, 512)], ("float32", "bfloat16"), ALL_RA,
                       MODES)],
        "cpu": [Block(_CPU_GRID, ("float32", "bfloat16"), (True,), FWD_BWD),
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
        "any": [Block([_FLASHRNN], ("bfloat16",), (True,), FWD_BWD)],
    },
    # benchmarks/gpu_check.sh: the batch sizes where persistence should pay (1..64) and one
    # where cuDNN's large GEMMs should (256), at the unit counts that decide between the
    # persistent paths; T = 128 keeps the 120 cases within about two minutes on an H200.
    "gpucheck": {
        "cuda": [Block(_grid((1, 16, 32, 64, 256), (128,), (256, 512, 1024)),
                       ("float32", "bfloat16"), ALL_RA, FWD_BWD)],
        "cpu": [Block(_grid((1, 16), (16,), (32,)), ("float32",), ALL_RA, FWD_BWD)],
    },
    # The persistent kernels' grid (docs/persistent.md): from B=1, where one launch per step
    # dominates, to B=256, where cuDNN's large GEMMs should win, and H up to 2048, past what
    # fits on chip; plus FlashRNN's shape. Tens of minutes on a GPU. Its goals are checked
    # after the run (report.persistent_goals).
    "persistent": {
        "cuda": [Block(_grid((1, 8, 32, 64, 256), (128, 512), (128, 256, 512, 1024, 2048)),
                       ("float32", "bfloat16"), ALL_RA, FWD_BWD),
                 Block([_FLASHRNN], ("bfloat16",), (True,), FWD_BWD)],
        "cpu": [Block(_grid((1, 8), (16,), (32,)), ("float32",), ALL_RA, FWD_BWD)],
    },
    # The tensor-core recurrent products (docs/benchmarks.md): the batch sizes of their goals
    # (B = 16, 32 at H = 1024: fwd+bwd >= 1.5x cuDNN; B = 64: >= 1x) and B = 1, at H = 512 and
    # 1024; bfloat16 and float32 (TF32 on both sides by default, config.py).
    "tensor-cores": {
        "cuda": [Block(_grid((1, 16, 32, 64), (256,), (512, 1024)), ("bfloat16", "float32"),
                       (True,), FWD_BWD)],
        "cpu": [Block(_grid((1, 16), (16,), (32,)), ("bfloat16", "float32"), (True,), FWD_BWD)],
    },
}


def preset_blocks(name: str, device: torch.device) -> List[Block]:
    """The blocks of preset `name` for `device`'s type (copies: callers may edit them)."""
    p = PRESETS[name]
    blocks = p.get(device.type, p.get("any", p.get("cuda")))
    return [Block(list(b.shapes), tuple(b.dtypes), tuple(b.reset_after), tuple(b.modes))
            for b in blocks]


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


def flops(shape: Shape, mode: str, *, input_projection: bool = False) -> float:
    """FLOPs counted for one run: DeepBench's 6*H^2*B*T per forward recurrence (2 FLOPs per
    multiply-add of a (B,H)x(H,3H) GEMM per step), x3 for forward+backward and train; with
    `input_projection` also the 6*F*H*B*T of the (B*T,F)x(F,3H) input GEMM."""
    per_fwd = 6.0 * shape.H * shape.H * shape.B * shape.T
    if input_projection:
        per_fwd += 6.0 * shape.F * shape.H * shape.B * shape.T
    return per_fwd * MODE_FLOP_FACTOR[mode]
