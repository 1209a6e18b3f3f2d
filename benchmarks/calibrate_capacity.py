#!/usr/bin/env python
"""Measures the cost constants of gru_cuda's capacity model on the current GPU.

The capacity model (csrc/kernels/persistent/persistent_capacity.h) chooses between the
stepwise and the persistent paths from a handful of constants that were written down before any
GPU run: barrier latencies, the cost of one launch of the stepwise loop, the rate of its thin
per-step GEMMs, and the fraction of the SM's fp32 FMA peak the persistent product reaches. This
script measures each on the device and writes them, beside the model's current values, to a JSON
file (benchmarks/gpu_check.sh runs it and commits the file with the other results):

    python benchmarks/calibrate_capacity.py --out capacity_constants.json [--quick]

On a machine without a GPU (or a CPU-only build) it writes the model's values with every
measurement marked "not measured" and exits 0, so that `gpu_check.sh --dry-run` exercises it.

How each constant is measured (medians of CUDA-event timings after a warm-up):
  grid_barrier_us       the counter barrier of the grid path, all SMs (and half of them), by the
                        difference of two launch lengths (launch cost removed)
  cluster_barrier_us    cluster.sync() for the cluster sizes 2, 4, 8, 16 (sm_90)
  stepwise_launch_us    slope per step of a stepwise forward at a tiny size (B=1, H=8), divided
                        by the launches per step (2 for reset_after=True), so the GEMM is ~free
  stepwise_gemm_tflops  torch.mm of the per-step shape (B x H) @ (H x 3H), float32 without TF32
                        and bfloat16, at B=32, H=1024
  simt_efficiency       for forced persistent forward runs (T=256, reset_after=True, float32),
                        the product's FMAs per CTA per step at the SM's full fp32 FMA rate and
                        the SM clock read during the run, over the measured per-step time less
                        the measured barrier share: the fraction of the FMA peak reached
"""
from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys

import torch

import gru_cuda
from gru_cuda import dispatch
from gru_cuda._library import _C
from gru_cuda.functional import gru

# The model's values (csrc/kernels/persistent/persistent_capacity.h), recorded beside the
# measurements.
MODEL = {
    "clock_ghz": 1.5,
    "simt_efficiency": 0.5,
    "grid_barrier_us": 1.5,
    "cluster_barrier_us": 0.3,
    "stepwise_launch_us": 2.5,
    "stepwise_gemm_tflops_f32": 20.0,
    "stepwise_gemm_tflops_half": 150.0,
}


def _events_ms(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b))
    return statistics.median(times)


def _sm_clock_mhz(index: int):
    try:
        return torch.cuda.clock_rate(index)  # current SM clock (MHz), through NVML
    except Exception:
        return None


def barriers(index: int, caps: dict, iterations: int) -> dict:
    out = {"grid": [], "cluster": []}
    for kind, ctas in (("counter", caps["sm_count"]), ("counter", caps["sm_count"] // 2),
                       ("grid_sync", caps["sm_count"])):
        try:
            us = _C.persistent_barrier_latency_us(index, kind, ctas, iterations)
            out["grid"].append({"kind": kind, "ctas": ctas, "us": us})
        except Exception as e:
            out["grid"].append({"kind": kind, "ctas": ctas, "us": None, "error": str(e)})
    if caps.get("cluster_launch") and caps["compute_capability"][0] >= 9:
        for cs in (2, 4, 8, 16):
            try:
                us = _C.persistent_barrier_latency_us(index, "cluster", cs, iterations)
                out["cluster"].append({"cluster_size": cs, "us": us})
            except Exception as e:  # e.g. a non-portable cluster size refused
                out["cluster"].append({"cluster_size": cs, "us": None, "error": str(e)})
    return out


def _problem(B, T, H, dtype, reset_after, device):
    g = torch.Generator(device="cpu").manual_seed(B * 7919 + T * 31 + H)
    x = torch.randn(B, T, H, generator=g)
    k = torch.randn(H, 3 * H, generator=g) / H ** 0.5
    u = torch.randn(H, 3 * H, generator=g) / H ** 0.5
    b_shape = (2, 3 * H) if reset_after else (3 * H,)
    b = torch.randn(b_shape, generator=g) * 0.1
    return [t.to(device=device, dtype=dtype) for t in (x, k, u, b)]


def stepwise_launch(device, repeats: int) -> dict:
    """Per-step cost of the stepwise loop where the work is negligible: its launch cost."""
    per = {}
    for T in (64, 512):
        x, k, u, b = _problem(1, T, 8, torch.float32, True, device)
        with dispatch.force_path("stepwise"), torch.no_grad():
            per[T] = _events_ms(lambda: gru(x, k, u, b, reset_after=True), repeats)
    slope_us = (per[512] - per[64]) * 1e3 / (512 - 64)
    return {"per_step_us": slope_us, "launches_per_step": 2, "us": slope_us / 2,
            "runs_ms": {str(t): v for t, v in per.items()}}


def stepwise_gemm(device, repeats: int) -> dict:
    out = {}
    B, H = 32, 1024
    prev = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        for name, dt in (("f32", torch.float32), ("half", torch.bfloat16)):
            a = torch.randn(B, H, device=device, dtype=dt)
            w = torch.randn(H, 3 * H, device=device, dtype=dt)
            c = torch.empty(B, 3 * H, device=device, dtype=dt)
            n = 50
            ms = _events_ms(lambda: [torch.mm(a, w, out=c) for _ in range(n)], repeats) / n
            out[name] = {"B": B, "H": H, "us": ms * 1e3,
                         "tflops": 2.0 * B * H * 3 * H / (ms * 1e-3) / 1e12}
    finally:
        torch.backends.cuda.matmul.allow_tf32 = prev
    return out


def simt_efficiency(device, index: int, caps: dict, barrier_us: dict, repeats: int) -> list:
    rows = []
    T = 256
    for path in ("persistent", "persistent_cluster"):
        if path not in dispatch.kernel_paths(device):
            continue
        for B, H in ((16, 512), (16, 1024), (64, 512)):
            with dispatch.force_path(path):
                plan = dispatch.explain(B, T, H, dtype=torch.float32, reset_after=True,
                                        device=device)
            if plan["path"] != path:
                rows.append({"path": path, "B": B, "H": H, "skipped": plan["reason"]})
                continue
            fwd = plan["capacity"]["forward"]
            x, k, u, b = _problem(B, T, H, torch.float32, True, device)
            with dispatch.force_path(path), torch.no_grad():
                ms_long = _events_ms(lambda: gru(x, k, u, b, reset_after=True), repeats)
                xs = x[:, : T // 4].contiguous()
                ms_short = _events_ms(lambda: gru(xs, k, u, b, reset_after=True), repeats)
            ran = dispatch.last_path()["forward"]
            step_us = (ms_long - ms_short) * 1e3 / (T - T // 4)
            bar = barrier_us.get(path)
            clock = _sm_clock_mhz(index)
            rows.append({"path": path, "B": B, "H": H, "ran": ran, "step_us": step_us,
                         "model_step_us": fwd.get("est_step_us"), "barrier_us": bar,
                         "sm_clock_mhz": clock, "plan": {k2: fwd.get(k2) for k2 in (
                             "ctas", "clusters", "units_per_cta", "batch_tile", "smem_bytes")}})
            # The product's FMAs per CTA per step at 100 % of the SM's fp32 FMA rate and the
            # measured clock, over the measured step less its barriers: the fraction reached.
            bt, J, kp = fwd.get("batch_tile"), fwd.get("units_per_cta"), fwd.get("k_pad")
            if bar is not None and clock and bt and J and kp:
                rows_done = bt if bt < 2 else (-(-bt // 8) * 8 if bt >= 8 else -(-bt // 2) * 2)
                fma_per_clk = 64.0 if tuple(caps["compute_capability"]) == (8, 0) else 128.0
                full_us = rows_done * 3 * J * kp / (fma_per_clk * clock)  # clock in MHz
                rest = step_us - bar * fwd.get("barriers_per_step", 1)
                if rest > 0:
                    rows[-1]["compute_us_at_peak"] = full_us
                    rows[-1]["efficiency"] = full_us / rest
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=None, help="JSON file to write (default: print only)")
    ap.add_argument("--quick", action="store_true", help="fewer repeats and iterations")
    ap.add_argument("--device", default=None)
    args = ap.parse_args(argv)
    repeats, iterations = (5, 2000) if args.quick else (15, 10000)

    result = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(),
              "torch": torch.__version__, "cuda": torch.version.cuda,
              "gru_cuda": gru_cuda.__version__, "build": gru_cuda.build_info(),
              "model": MODEL, "measured": {}, "notes": []}
    cuda = torch.cuda.is_available() and gru_cuda.build_info().get("cuda")
    if not cuda:
        result["device"] = "cpu"
        result["notes"].append("no CUDA GPU or a CPU-only build: nothing measured")
    else:
        device = torch.device(args.device or "cuda")
        index = device.index if device.index is not None else torch.cuda.current_device()
        device = torch.device("cuda", index)
        props = torch.cuda.get_device_properties(index)
        caps = dict(_C.persistent_device_caps(index))
        result["device"] = props.name
        result["device_caps"] = caps
        m = result["measured"]
        steps = [("barriers", lambda: barriers(index, caps, iterations)),
                 ("stepwise_launch", lambda: stepwise_launch(device, repeats)),
                 ("stepwise_gemm", lambda: stepwise_gemm(device, repeats))]
        for name, fn in steps:
            try:
                m[name] = fn()
            except Exception as e:  # one failed measurement must not lose the others
                m[name] = {"error": f"{type(e).__name__}: {e}"}
        bar = {}
        grid = [r for r in m.get("barriers", {}).get("grid", []) if r.get("us") is not None]
        if grid:
            bar["persistent"] = grid[0]["us"]
        cl = [r for r in m.get("barriers", {}).get("cluster", []) if r.get("us") is not None]
        if cl:
            bar["persistent_cluster"] = max(r["us"] for r in cl)
        try:
            m["simt_efficiency"] = simt_efficiency(device, index, caps, bar, repeats)
        except Exception as e:
            m["simt_efficiency"] = {"error": f"{type(e).__name__}: {e}"}
        effs = [r["efficiency"] for r in m["simt_efficiency"]
                if isinstance(r, dict) and "efficiency" in r] if isinstance(
                    m["simt_efficiency"], list) else []
        gemm = m.get("stepwise_gemm", {})
        result["suggested"] = {
            "grid_barrier_us": bar.get("persistent"),
            "cluster_barrier_us": bar.get("persistent_cluster"),
            "stepwise_launch_us": m.get("stepwise_launch", {}).get("us"),
            "stepwise_gemm_tflops_f32": gemm.get("f32", {}).get("tflops"),
            "stepwise_gemm_tflops_half": gemm.get("half", {}).get("tflops"),
            "simt_efficiency": statistics.median(effs) if effs else None,
        }
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    # A short table: constant, the model's value, the measured one.
    print(f"capacity constants on {result['device']}")
    sug = result.get("suggested", {})
    for key in ("grid_barrier_us", "cluster_barrier_us", "stepwise_launch_us",
                "stepwise_gemm_tflops_f32", "stepwise_gemm_tflops_half", "simt_efficiency"):
        v = sug.get(key)
        print(f"  {key:28s} model {MODEL[key]:>8}   measured "
              + ("not measured" if v is None else f"{v:.3f}"))
    for n in result["notes"]:
        print(f"  note: {n}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
