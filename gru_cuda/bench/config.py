"""The run's configuration, and the command line that makes it."""
from __future__ import annotations

import argparse
import itertools
import re
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from .candidates import (DEFAULT_CANDIDATES, PERSISTENT_CANDIDATES, QUICK_CANDIDATES,
                         TENSOR_CORE_CANDIDATES, Candidate, resolve_candidates)
from .cases import DTYPE_ALIASES, DTYPES, MODES, PRESETS, Block, Shape, preset_blocks
from .metadata import safe_build_info
from .timing import TimingSettings

# Where the CSV, JSON and PNG go without --out: a folder of the current working directory
# (the benchmark runs from an installed package as well as from a checkout).
DEFAULT_OUT = "gru_bench_results"


@dataclass
class Config:
    device: torch.device
    blocks: List[Block]
    candidates: List[Candidate]
    timing: TimingSettings = field(default_factory=TimingSettings)
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
    has_cuda_build = bool((safe_build_info() or {}).get("cuda"))
    return "cuda" if torch.cuda.is_available() and has_cuda_build else "cpu"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m gru_cuda.bench",
        description="Benchmark gru_cuda against torch.nn.GRU (cuDNN), the PyTorch step loop and "
                    "Keras 3's GRU. Each candidate is checked against a float64 reference "
                    "before it is timed. See docs/benchmarks.md.",
        epilog="Subcommand: 'python -m gru_cuda.bench barrier [--iterations N] [--device cuda]' "
               "measures the persistent kernels' barrier latencies (a CUDA build and GPU).",
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
                   help="a preset by name (default: 'default'); 'persistent' is the "
                        "persistent kernels' grid, with its goals checked after the run; "
                        "'tensor-cores' times each recurrent product against cuDNN at the "
                        "same precision")
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
                        "gru_cuda[PATH], products (every persistent path x recurrent "
                        "product), gru_cuda[PATH:PRODUCT] (e.g. gru_cuda[persistent:tensor_core])"
                        ", torch (torch.nn.GRU / cuDNN), steploop (the PyTorch "
                        "step loop), keras (keras.layers.GRU, Keras 3, torch backend), "
                        "gru_cuda.keras (gru_cuda.keras.GRU in Keras), keras-pair (both), "
                        "broken (deliberately "
                        f"wrong). Default: {' '.join(DEFAULT_CANDIDATES)} (--quick: "
                        f"{' '.join(QUICK_CANDIDATES)}; --preset persistent: "
                        f"{' '.join(PERSISTENT_CANDIDATES)}; --preset tensor-cores: "
                        f"{' '.join(TENSOR_CORE_CANDIDATES)})")
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
                   help="TF32 for float32 cuDNN/cuBLAS and gru_cuda's tf32 product (torch's "
                        "default: cuDNN on, cuBLAS off; --preset persistent: off; --preset "
                        "tensor-cores: on)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch.set_num_threads for the CPU (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=DEFAULT_OUT,
                   help=f"folder for the CSV, JSON and PNG, created if missing (default: "
                        f"{DEFAULT_OUT}/ in the current working directory)")
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
    if cuda and not (safe_build_info() or {}).get("cuda"):
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

    quick = preset.startswith("quick")
    persistent = preset.startswith("persistent")
    if args.threads is not None:
        torch.set_num_threads(max(1, args.threads))
    tensor_cores = preset.startswith("tensor-cores")
    # the persistent grid compares exact float32 against cuDNN, as its goals were set; the
    # tensor-core grid compares TF32 on both sides (cuDNN and gru_cuda read the same switches)
    tf32 = args.tf32
    if tf32 == "default" and (persistent or tensor_cores):
        tf32 = "off" if persistent else "on"
    if tf32 != "default":
        torch.backends.cudnn.allow_tf32 = tf32 == "on"
        torch.backends.cuda.matmul.allow_tf32 = tf32 == "on"

    cfg = Config(device=device, blocks=blocks, candidates=[], preset=preset, argv=argv,
                 notes=notes, seed=args.seed, progress=not args.no_progress)
    default_candidates = (QUICK_CANDIDATES if quick else
                          PERSISTENT_CANDIDATES if persistent else
                          TENSOR_CORE_CANDIDATES if tensor_cores else DEFAULT_CANDIDATES)
    cfg.candidates = resolve_candidates(args.candidates or default_candidates, device, cfg.notes)
    # the correctness check has already run each candidate once
    cfg.timing = TimingSettings(
        warmup=args.warmup if args.warmup is not None else (1 if quick else (2 if cuda else 1)),
        repeats=args.repeats if args.repeats is not None else (3 if quick else None),
        min_repeats=args.min_repeats or (5 if cuda else 3),
        max_repeats=args.max_repeats or (30 if cuda else 9),
        budget_s=args.budget if args.budget is not None else (1.0 if cuda else 3.0))
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
