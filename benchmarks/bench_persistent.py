#!/usr/bin/env python
"""Benchmark of the persistent GRU kernels (issue 4): barrier latency, and forward /
forward+backward against torch.nn.GRU (cuDNN) and against gru_cuda's forced stepwise path.

    python benchmarks/bench_persistent.py                 # the issue's grid (tens of minutes)
    python benchmarks/bench_persistent.py --quick         # a few shapes, a minute
    python benchmarks/bench_persistent.py --batch 8 --hidden 768 --seq 512 --dtypes bfloat16

Needs a CUDA GPU and a CUDA build of gru_cuda. Writes benchmarks/results/
persistent_<gpu>_<date>.{csv,md,json} (--out DIR, --no-save) with the device, driver, CUDA,
cuDNN and torch versions and the git commit.

Method (shared/reference/kernels_and_limits.md §4): inputs made once per shape; every candidate
first checked against gru_cuda's stepwise path (itself tested against the float64 reference)
and reported WRONG, untimed, if it disagrees; CUDA events around each run; candidates
interleaved within each repetition so that machine noise hits all alike; the median of
--repeats runs after --warmup runs; warm L2 (the same candidate ran just before). The input
projection is included in every candidate's time (cuDNN's too). TF32 is off: exact fp32.

Candidates per case:
  cudnn               torch.nn.GRU, flatten_parameters(), cuDNN on (reset_after=True only)
  stepwise            gru_cuda with force_path("stepwise")
  auto                gru_cuda's automatic choice (the path it took is recorded)
  persistent          force_path("persistent"), when the capacity model says it fits
  persistent_cluster  force_path("persistent_cluster") (sm_90), when it fits
"""
from __future__ import annotations

import argparse
import csv
import datetime
import itertools
import json
import os
import re
import statistics
import sys

import torch

try:
    import gru_cuda
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    import gru_cuda
from gru_cuda import dispatch
from gru_cuda._library import _C
from gru_cuda.functional import gru

HERE = os.path.dirname(os.path.abspath(__file__))
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# Agreement with the stepwise path required before timing: max|a - b| / max(|b|, 1).
AGREE = {"float32": 1e-3, "bfloat16": 6e-2, "float16": 2e-2}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 8, 32, 64, 256])
    ap.add_argument("--hidden", type=int, nargs="+", default=[128, 256, 512, 1024, 2048])
    ap.add_argument("--seq", type=int, nargs="+", default=[128, 512])
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"], choices=list(DTYPES))
    ap.add_argument("--reset-after", nargs="+", default=["true", "false"],
                    choices=["true", "false"])
    ap.add_argument("--modes", nargs="+", default=["fwd", "fwd+bwd"], choices=["fwd", "fwd+bwd"])
    ap.add_argument("--no-flashrnn", action="store_true",
                    help="leave out B=16, T=1024, H=768, bfloat16 (FlashRNN's published shape)")
    ap.add_argument("--quick", action="store_true", help="B in {1,32}, H in {256,1024}, T=128")
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--barrier-iterations", type=int, default=20000)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.quick:
        args.batch, args.hidden, args.seq = [1, 32], [256, 1024], [128]
        args.repeats, args.warmup, args.barrier_iterations = 5, 1, 5000
    return args


def metadata(device: torch.device) -> dict:
    try:
        from gru_cuda.bench import collect_metadata
        meta = collect_metadata(device)
    except Exception as e:  # the generic bench module is optional here
        meta = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
                "torch": torch.__version__, "cuda": torch.version.cuda,
                "cudnn": torch.backends.cudnn.version(), "metadata_error": repr(e)}
        props = torch.cuda.get_device_properties(device)
        meta.update(device_name=props.name, sm_count=props.multi_processor_count,
                    compute_capability=f"{props.major}.{props.minor}")
    meta["persistent_paths"] = dispatch.kernel_paths(device)
    if hasattr(_C, "persistent_device_caps"):
        meta["device_caps"] = dict(_C.persistent_device_caps(device.index))
    return meta


# ---------------------------------------------------------------------------------------------
# Barrier latency
# ---------------------------------------------------------------------------------------------

def barrier_latency(device: torch.device, iterations: int) -> list:
    rows = []
    caps = dict(_C.persistent_device_caps(device.index))
    kinds = [("counter", 0), ("grid_sync", 0), ("counter", caps["sm_count"] // 2)]
    if "persistent_cluster" in dispatch.kernel_paths(device):
        kinds += [("cluster", 16), ("cluster", 8), ("cluster", 4)]
    for kind, ctas in kinds:
        try:
            us = _C.persistent_barrier_latency_us(device.index, kind, ctas, iterations)
            rows.append({"barrier": kind, "ctas": ctas or caps["sm_count"], "us": us})
        except Exception as e:  # e.g. a non-portable cluster size refused
            rows.append({"barrier": kind, "ctas": ctas, "us": None, "note": str(e)})
    return rows


# ---------------------------------------------------------------------------------------------
# Candidates
# ---------------------------------------------------------------------------------------------

def make_inputs(B, T, H, dtype, reset_after, device, seed):
    g = torch.Generator(device="cpu").manual_seed(seed)
    F = H
    lim_w = (6.0 / (F + 3 * H)) ** 0.5
    x = torch.randn(B, T, F, generator=g)
    k = (torch.rand(F, 3 * H, generator=g) * 2 - 1) * lim_w
    u = (torch.rand(H, 3 * H, generator=g) * 2 - 1) / H ** 0.5
    b = (torch.rand(2, 3 * H, generator=g) * 2 - 1) * 0.1 if reset_after else \
        (torch.rand(3 * H, generator=g) * 2 - 1) * 0.1
    dy = torch.randn(B, T, H, generator=g)
    return [t.to(device=device, dtype=dtype) for t in (x, k, u, b, dy)]


def keras_to_torch(a):  # Keras [z | r | h] -> torch [r | z | n], along the last dim
    z, r, h = a.chunk(3, dim=-1)
    return torch.cat([r, z, h], dim=-1)


class GruCudaRun:
    def __init__(self, path, x, k, u, b, dy, reset_after, mode):
        self.path, self.mode, self.reset_after = path, mode, reset_after
        self.x = x.detach().clone().requires_grad_(mode == "fwd+bwd")
        self.params = [t.detach().clone().requires_grad_(mode == "fwd+bwd") for t in (k, u, b)]
        self.dy = dy
        self.ran = None

    def __call__(self):
        with dispatch.force_path(None if self.path == "auto" else self.path):
            if self.mode == "fwd":
                with torch.no_grad():
                    out, _ = gru(self.x, *self.params, reset_after=self.reset_after)
            else:
                out, _ = gru(self.x, *self.params, reset_after=self.reset_after)
                out.backward(self.dy)
                self.x.grad = None
                for p in self.params:
                    p.grad = None
        if self.ran is None:
            torch.cuda.synchronize()
            last = dispatch.last_path()
            self.ran = last["forward"] + ("/" + last["backward"] if self.mode != "fwd" else "")
        return out


class CudnnRun:
    def __init__(self, x, k, u, b, dy, mode):
        B, T, H = dy.shape
        F = x.shape[-1]
        self.mode = mode
        self.net = torch.nn.GRU(F, H, batch_first=True).to(device=x.device, dtype=x.dtype)
        with torch.no_grad():
            self.net.weight_ih_l0.copy_(keras_to_torch(k).t())
            self.net.weight_hh_l0.copy_(keras_to_torch(u).t())
            self.net.bias_ih_l0.copy_(keras_to_torch(b[0]))
            self.net.bias_hh_l0.copy_(keras_to_torch(b[1]))
        self.net.flatten_parameters()
        self.x = x.detach().clone().requires_grad_(mode == "fwd+bwd")
        self.dy = dy
        self.ran = "cudnn"

    def __call__(self):
        if self.mode == "fwd":
            with torch.no_grad():
                out, _ = self.net(self.x)
        else:
            out, _ = self.net(self.x)
            out.backward(self.dy)
            self.x.grad = None
            self.net.zero_grad(set_to_none=True)
        return out


def time_interleaved(runs: dict, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        for r in runs.values():
            r()
    torch.cuda.synchronize()
    times = {name: [] for name in runs}
    for _ in range(repeats):
        for name, r in runs.items():
            start = torch.cuda.Event(enable_timing=True)
            stop = torch.cuda.Event(enable_timing=True)
            start.record()
            r()
            stop.record()
            stop.synchronize()
            times[name].append(start.elapsed_time(stop))
    return {name: statistics.median(v) for name, v in times.items()}


def rel_err(a, b) -> float:
    a, b = a.detach().double(), b.detach().double()
    return ((a - b).abs().max() / max(b.abs().max().item(), 1.0)).item()


def run_case(B, T, H, dtype_name, reset_after, mode, device, args) -> list:
    dtype = DTYPES[dtype_name]
    x, k, u, b, dy = make_inputs(B, T, H, dtype, reset_after, device, args.seed)
    names = ["stepwise", "auto"]
    notes = {}
    for path in ("persistent", "persistent_cluster"):
        if path not in dispatch.kernel_paths(device):
            continue
        with dispatch.force_path(path):
            e = dispatch.explain(B, T, H, H, dtype=dtype, reset_after=reset_after, device=device)
        fits = e["path"] == path and (mode == "fwd" or e["backward_path"] == path)
        if fits:
            names.append(path)
        else:
            notes[path] = e["reason"] if e["path"] != path else e["backward_reason"]
    runs = {n: GruCudaRun(n, x, k, u, b, dy, reset_after, mode) for n in names}
    if reset_after:
        runs = {"cudnn": CudnnRun(x, k, u, b, dy, mode), **runs}
    # Correctness gate against the stepwise path (forward outputs).
    with torch.no_grad():
        ref = GruCudaRun("stepwise", x, k, u, b, dy, reset_after, "fwd")()
    wrong = {}
    for name, r in list(runs.items()):
        if name == "stepwise":
            continue
        try:
            with torch.no_grad():
                out = (r.net(r.x)[0] if isinstance(r, CudnnRun) else
                       GruCudaRun(r.path, x, k, u, b, dy, reset_after, "fwd")())
            err = rel_err(out, ref)
            if not err <= AGREE[dtype_name]:
                wrong[name] = f"WRONG: rel. error {err:.3g} vs stepwise"
        except Exception as e:  # e.g. a dtype cuDNN does not take
            wrong[name] = f"error: {type(e).__name__}: {e}"[:300]
        if name in wrong:
            del runs[name]
    times = time_interleaved(runs, args.repeats, args.warmup) if runs else {}
    rows = []
    for name in ["cudnn", "stepwise", "auto", "persistent", "persistent_cluster"]:
        row = {"B": B, "T": T, "H": H, "dtype": dtype_name, "reset_after": reset_after,
               "mode": mode, "candidate": name, "ms": None, "ran": None, "note": ""}
        if name in times:
            row.update(ms=times[name], ran=runs[name].ran)
        elif name in wrong:
            row["note"] = wrong[name]
        elif name in notes:
            row["note"] = f"not run: {notes[name]}"
        elif name == "cudnn" and not reset_after:
            row["note"] = "no reset_after=False in cuDNN"
        else:
            continue
        rows.append(row)
    base = {r["candidate"]: r["ms"] for r in rows}
    for r in rows:
        if r["ms"]:
            r["vs_cudnn"] = base.get("cudnn") / r["ms"] if base.get("cudnn") else None
            r["vs_stepwise"] = base.get("stepwise") / r["ms"] if base.get("stepwise") else None
    return rows


# ---------------------------------------------------------------------------------------------
# Goals (issue 4) and output
# ---------------------------------------------------------------------------------------------

def check_goals(rows: list) -> list:
    """The issue's goals, each as (goal, verdict, detail)."""
    out = []
    key = lambda r: (r["B"], r["T"], r["H"], r["dtype"], r["mode"])  # noqa: E731
    by = {}
    for r in rows:
        by.setdefault(key(r) + (r["reset_after"],), {})[r["candidate"]] = r
    ok1, bad1 = 0, []
    for k_, c in by.items():
        B, T, H, dt, mode, ra = k_
        if ra and mode == "fwd+bwd" and B <= 32 and H <= 1024 and c.get("auto", {}).get("ms") \
                and c.get("cudnn", {}).get("ms"):
            s = c["cudnn"]["ms"] / c["auto"]["ms"]
            ok1 += s >= 1.5
            if s < 1.5:
                bad1.append(f"B={B} T={T} H={H} {dt}: {s:.2f}x")
    out.append(("reset_after fwd+bwd >= 1.5x cuDNN at B<=32, H<=1024", f"{ok1} met",
                "; ".join(bad1[:20]) or "all met"))
    bad2 = []
    for k_, c in by.items():
        a, cu = c.get("auto", {}), c.get("cudnn", {})
        if a.get("ms") and cu.get("ms") and a.get("ran", "").startswith("persistent") \
                and a["ms"] > cu["ms"]:
            bad2.append(f"B={k_[0]} T={k_[1]} H={k_[2]} {k_[3]} {k_[4]}: "
                        f"{cu['ms'] / a['ms']:.2f}x")
    out.append(("never slower than cuDNN where persistent is chosen",
                "met" if not bad2 else f"{len(bad2)} missed", "; ".join(bad2[:20]) or "-"))
    bad3 = []
    for k_, c in by.items():
        if not k_[5]:
            ra = by.get(k_[:5] + (True,), {}).get("auto", {})
            rb = c.get("auto", {})
            if ra.get("ms") and rb.get("ms") and rb["ms"] > 1.3 * ra["ms"]:
                bad3.append(f"B={k_[0]} T={k_[1]} H={k_[2]} {k_[3]} {k_[4]}: "
                            f"{rb['ms'] / ra['ms']:.2f}x")
    out.append(("reset_after=False within 1.3x of reset_after=True",
                "met" if not bad3 else f"{len(bad3)} missed", "; ".join(bad3[:20]) or "-"))
    return out


def fmt(v, f="{:.3f}"):
    return "-" if v is None else f.format(v)


def markdown(meta, barriers, rows, goals) -> str:
    lines = ["# Persistent GRU benchmark", "",
             f"{meta.get('device_name')} ({meta.get('sm_count')} SMs, cc "
             f"{meta.get('compute_capability')}), driver {meta.get('driver')}, CUDA "
             f"{meta.get('cuda')}, cuDNN {meta.get('cudnn')}, torch {meta.get('torch')}, "
             f"gru_cuda {meta.get('gru_cuda')} ({meta.get('git_commit')}), {meta.get('date')}.",
             "Times in ms (median, CUDA events, warm L2, input projection included, TF32 off). "
             "`ran` is the path gru_cuda took (forward/backward).", "",
             "## Barrier latency", "", "| barrier | CTAs | µs per barrier |", "|---|---|---|"]
    for b in barriers:
        lines.append(f"| {b['barrier']} | {b['ctas']} | {fmt(b['us'])} |")
    lines += ["", "## Goals (issue 4)", "", "| goal | verdict | detail |", "|---|---|---|"]
    for g in goals:
        lines.append(f"| {g[0]} | {g[1]} | {g[2]} |")
    lines += ["", "## Cases", "",
              "| B | T | H | dtype | reset_after | mode | candidate | ms | ran | ×cuDNN | ×stepwise | note |",
              "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['B']} | {r['T']} | {r['H']} | {r['dtype']} | {r['reset_after']} | "
                     f"{r['mode']} | {r['candidate']} | {fmt(r['ms'])} | {r['ran'] or '-'} | "
                     f"{fmt(r.get('vs_cudnn'), '{:.2f}')} | {fmt(r.get('vs_stepwise'), '{:.2f}')} "
                     f"| {r['note']} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        print("bench_persistent: needs a CUDA GPU", file=sys.stderr)
        return 2
    if not gru_cuda.build_info()["cuda"] or not hasattr(_C, "persistent_set_path"):
        print("bench_persistent: gru_cuda was built without the persistent CUDA kernels",
              file=sys.stderr)
        return 2
    if device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    torch.cuda.set_device(device)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.enabled = True

    meta = metadata(device)
    print(f"# {meta.get('device_name')}: torch {meta.get('torch')}, CUDA {meta.get('cuda')}, "
          f"cuDNN {meta.get('cudnn')}, paths {meta['persistent_paths']}")
    barriers = barrier_latency(device, args.barrier_iterations)
    for b in barriers:
        print(f"barrier {b['barrier']:9s} {b['ctas']:4d} CTAs: {fmt(b['us'])} us")

    cases = list(itertools.product(args.seq, args.hidden, args.batch, args.dtypes,
                                   [a == "true" for a in args.reset_after], args.modes))
    if not args.no_flashrnn and not args.quick:
        cases += [(1024, 768, 16, "bfloat16", True, m) for m in args.modes]
    rows = []
    for i, (T, H, B, dt, ra, mode) in enumerate(cases):
        try:
            got = run_case(B, T, H, dt, ra, mode, device, args)
        except torch.cuda.OutOfMemoryError as e:
            got = [{"B": B, "T": T, "H": H, "dtype": dt, "reset_after": ra, "mode": mode,
                    "candidate": "-", "ms": None, "ran": None, "note": f"OOM: {e}"}]
            torch.cuda.empty_cache()
        rows += got
        summary = ", ".join(f"{r['candidate']} {fmt(r['ms'])}" + (f" [{r['ran']}]" if r["ran"]
                                                                  else "")
                            for r in got if r["ms"])
        print(f"[{i + 1}/{len(cases)}] B={B} T={T} H={H} {dt} ra={ra} {mode}: {summary}",
              flush=True)
    goals = check_goals(rows)
    for g in goals:
        print(f"goal: {g[0]}: {g[1]} ({g[2]})")
    if args.no_save:
        return 0
    os.makedirs(args.out, exist_ok=True)
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(meta.get("device_name", "gpu"))).strip("-").lower()
    stem = os.path.join(args.out, f"persistent_{slug}_"
                        f"{datetime.datetime.now().strftime('%Y%m%d-%H%M%S')}")
    fields = ["B", "T", "H", "dtype", "reset_after", "mode", "candidate", "ms", "ran",
              "vs_cudnn", "vs_stepwise", "note"]
    with open(stem + ".csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow(r)
    with open(stem + ".md", "w") as f:
        f.write(markdown(meta, barriers, rows, goals))
    with open(stem + ".json", "w") as f:
        json.dump({"metadata": meta, "barriers": barriers, "rows": rows, "goals": goals}, f,
                  indent=1, default=str)
    print(f"wrote {stem}.csv, .md, .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
