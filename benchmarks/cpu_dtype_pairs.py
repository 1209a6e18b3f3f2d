"""bfloat16 against float32 on the CPU, interleaved: gru_cuda's time for the same case in both
dtypes, timed alternately in one process.

`python -m gru_cuda.bench` times each (shape, dtype) as its own case, minutes apart, so on a
small, noisy machine the ratio of two of its rows mixes the dtypes with the drift of the machine.
This script times the two dtypes of one shape back to back instead, as the bench times the
candidates of one case: medians of `--repeats` alternating rounds after two warm-up calls each,
the same calls as the bench's gru_cuda candidate (functional.gru with leaf parameters; fwd under
no_grad; fwd+bwd with x requiring grad and a fixed upstream gradient; train = zero_grad,
forward, MSE loss, backward, Adam step).

    python benchmarks/cpu_dtype_pairs.py --out benchmarks/results/<folder>

writes cpu_dtype_pairs.csv and cpu_dtype_pairs.json (with the machine's metadata) there and
prints one line per case: float32 ms, bfloat16 ms, and bfloat16 / float32 (< 1: bfloat16 faster).
"""
from __future__ import annotations

import argparse
import csv
import gc
import json
import os
import statistics
import time

import torch

from gru_cuda import functional
from gru_cuda.bench.metadata import collect_metadata

GRID = [(b, 128, h) for b in (1, 8, 32, 64) for h in (64, 128, 256, 512)]
SWEEP = [(8, 32, 256), (8, 256, 256)]
MODES = ("fwd", "fwd+bwd", "train")


def runner(B, T, H, dtype, mode, seed=0):
    g = torch.Generator().manual_seed(seed)
    F = H

    def rand(*shape, scale=1.0):
        return (torch.randn(*shape, generator=g) * scale).to(dtype)

    x, target, gy = rand(B, T, F), rand(B, T, H), rand(B, T, H)
    W = rand(F, 3 * H, scale=F ** -0.5).requires_grad_()
    U = rand(H, 3 * H, scale=H ** -0.5).requires_grad_()
    b = rand(2, 3 * H, scale=0.1).requires_grad_()
    params = [W, U, b]
    if mode == "fwd":
        def run():
            with torch.no_grad():
                functional.gru(x, W, U, b)
    elif mode == "fwd+bwd":
        xl = x.clone().requires_grad_()

        def run():
            xl.grad = None
            for p in params:
                p.grad = None
            functional.gru(xl, W, U, b)[0].backward(gy)
    else:
        opt = torch.optim.Adam(params, lr=1e-4)

        def run():
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(functional.gru(x, W, U, b)[0], target)
            loss.backward()
            opt.step()
    return run


def time_pair(B, T, H, mode, repeats):
    fns = {name: runner(B, T, H, dt, mode) for name, dt in
           (("float32", torch.float32), ("bfloat16", torch.bfloat16))}
    for f in fns.values():
        f()
        f()
    times = {k: [] for k in fns}
    was_enabled = gc.isenabled()
    gc.collect()
    gc.disable()
    try:
        for _ in range(repeats):
            for k, f in fns.items():
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return {k: 1e3 * statistics.median(v) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="folder for the CSV and JSON")
    ap.add_argument("--repeats", type=int, default=0,
                    help="alternating rounds per case (default: 31 below 20 ms a call, else 9)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rows = []
    for B, T, H in GRID + SWEEP:
        for mode in MODES:
            repeats = args.repeats
            if repeats <= 0:  # a quick probe picks the count
                probe = time_pair(B, T, H, mode, 1)
                repeats = 31 if max(probe.values()) < 20 else 9
            ms = time_pair(B, T, H, mode, repeats)
            ratio = ms["bfloat16"] / ms["float32"]
            rows.append(dict(B=B, T=T, H=H, F=H, mode=mode, repeats=repeats,
                             float32_ms=round(ms["float32"], 4),
                             bfloat16_ms=round(ms["bfloat16"], 4),
                             bf16_over_f32=round(ratio, 4)))
            print(f"B={B:3d} T={T:4d} H={H:4d} {mode:8s} float32 {ms['float32']:9.3f} ms  "
                  f"bfloat16 {ms['bfloat16']:9.3f} ms  bfloat16/float32 {ratio:.3f}", flush=True)
    with open(os.path.join(args.out, "cpu_dtype_pairs.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    meta = collect_metadata(torch.device("cpu"))
    slower = [r for r in rows if r["bf16_over_f32"] > 1.0]
    with open(os.path.join(args.out, "cpu_dtype_pairs.json"), "w") as f:
        json.dump(dict(metadata=meta, rows=rows, bfloat16_slower=len(slower),
                       cases=len(rows)), f, indent=1)
    print(f"bfloat16 slower than float32 in {len(slower)} of {len(rows)} cases; worst ratio "
          f"{max(r['bf16_over_f32'] for r in rows):.3f}")


if __name__ == "__main__":
    main()
