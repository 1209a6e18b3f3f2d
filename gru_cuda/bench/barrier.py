"""`python -m gru_cuda.bench barrier`: the latency of one barrier of the persistent kernels.

A persistent step ends on a grid-wide (or cluster-wide) barrier, so its latency is the floor
of the time per step. Measured by gru_cuda._C.persistent_barrier_latency_us (CUDA builds
only): the counter barrier of the grid path on all SMs and on half of them, cooperative
groups' grid.sync() for comparison, and cluster.sync() for 16, 8 and 4 CTAs where the device
has the cluster path (sm_90 and newer).
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import torch

import gru_cuda
from gru_cuda._library import _C

PROG = "python -m gru_cuda.bench barrier"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[1].strip())
    p.add_argument("--iterations", type=_positive_int, default=20000,
                   help="barriers per measurement (default: 20000)")
    p.add_argument("--device", default="cuda", help="cuda or cuda:N (default: cuda)")
    return p


def _positive_int(s: str) -> int:
    try:
        v = int(s)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError(f"--iterations must be a positive int, got {s!r}")
    return v


def _cuda_device(name: str) -> torch.device:
    """The CUDA device to measure on; SystemExit with the reason when there is none."""
    try:
        device = torch.device(name)
    except RuntimeError:
        raise SystemExit(f"{PROG}: --device must be cuda or cuda:N, got {name!r}")
    if device.type != "cuda":
        raise SystemExit(f"{PROG}: --device must be cuda or cuda:N, got {name!r}: the barriers "
                         "measured are GPU barriers")
    if not gru_cuda.build_info().get("cuda") or not hasattr(_C, "persistent_barrier_latency_us"):
        raise SystemExit(f"{PROG}: this gru_cuda is a CPU build, without the persistent CUDA "
                         "kernels; the barrier latency needs a CUDA build of gru_cuda and a GPU")
    if not torch.cuda.is_available():
        raise SystemExit(f"{PROG}: torch sees no CUDA GPU")
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def measure(device: torch.device, iterations: int) -> List[dict]:
    """One row per barrier kind and CTA count: {"barrier", "ctas", "us"[, "note"]}."""
    caps = dict(_C.persistent_device_caps(device.index))
    kinds = [("counter", 0), ("grid_sync", 0), ("counter", caps["sm_count"] // 2)]
    if "persistent_cluster" in gru_cuda.kernel_paths(device):
        kinds += [("cluster", 16), ("cluster", 8), ("cluster", 4)]
    rows = []
    for kind, ctas in kinds:
        row = {"barrier": kind, "ctas": ctas or caps["sm_count"], "us": None}
        try:
            row["us"] = float(_C.persistent_barrier_latency_us(device.index, kind, ctas,
                                                               iterations))
        except Exception as e:  # e.g. a non-portable cluster size refused: the others go on
            row["note"] = f"{type(e).__name__}: {e}".splitlines()[0][:200]
        rows.append(row)
    return rows


def print_table(rows: List[dict], out=sys.stdout):
    print(f"{'barrier':<10} {'CTAs':>5} {'us/barrier':>11}", file=out)
    print("-" * 28, file=out)
    for r in rows:
        us = "-" if r["us"] is None else f"{r['us']:.3f}"
        line = f"{r['barrier']:<10} {r['ctas']:>5} {us:>11}"
        print(line + (f"  {r['note']}" if r.get("note") else ""), file=out)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    device = _cuda_device(args.device)
    torch.cuda.set_device(device)
    props = torch.cuda.get_device_properties(device)
    print(f"# {props.name} ({props.multi_processor_count} SMs, sm_{props.major}{props.minor}) | "
          f"gru_cuda {gru_cuda.__version__} | paths {', '.join(gru_cuda.kernel_paths(device))} | "
          f"{args.iterations} iterations")
    print_table(measure(device, args.iterations))
    return 0
