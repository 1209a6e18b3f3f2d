"""Checks an installed gru_cuda on the current device: ``python -m gru_cuda.selftest``.

Every kernel path the device supports is forced in turn (``"cpu"`` on a CPU; ``"stepwise"``,
``"persistent"`` and ``"persistent_cluster"`` on a GPU, as `gru_cuda.kernel_paths` reports)
and run, forward and backward, on small random problems in every dtype it takes, in both reset
conventions and with a few options (a mask with holes and a fully masked row, initial_state,
go_backwards, zero_output_for_mask, input and recurrent dropout masks, non-default activation
pairs). Each run is compared with the float64 reference (`gru_cuda.reference.gru`) on the same
inputs rounded to the dtype: the largest relative error of the outputs and final state, and of
the five gradients (x, kernel, recurrent_kernel, bias, initial_state).

On a GPU the caching allocator is filled with NaN before each run, so an element a kernel
forgets to write shows up; every result must be finite and within the dtype's tolerance, and
the forced path must be the one that ran (`gru_cuda.dispatch.last_path`), not a fallback. A
forced path that refuses a case with a clear ValueError (a persistent path and float64, or
weights that do not fit) is reported as skipped with its reason.

It also prints the device facts that decide the paths: on a GPU the SM count, shared memory per
block and per SM, cooperative and cluster launch support, how many clusters of the sizes in use
fit at once (cudaOccupancyMaxActiveClusters), and the measured latency of the grid barrier and
of cluster.sync().

    python -m gru_cuda.selftest                     # the current device (a GPU if there is one)
    python -m gru_cuda.selftest --device cpu --quick
    python -m gru_cuda.selftest --paths stepwise --json selftest.json

The exit status is 0 when every run passed or was legitimately skipped, 1 otherwise. It takes a
few seconds on a CPU and is meant to stay under a minute on an H100/H200.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

import gru_cuda
from gru_cuda import dispatch, reference
from gru_cuda._library import _C
from gru_cuda.functional import gru as _kernel_gru

__all__ = ["Row", "TOLERANCES", "run", "device_facts", "poison_allocator", "main"]

# (forward, gradients): max |a - e| / max(max |e|, 1) against float64 on the same rounded inputs.
TOLERANCES: Dict[torch.dtype, tuple] = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-5, 1e-4),
    torch.float16: (5e-3, 1e-2),
    torch.bfloat16: (3e-2, 6e-2),
}
# The persistent paths' tf32 product (float32 on TF32 tensor cores, 10-bit mantissas).
TF32_TOLERANCES = (3e-3, 6e-3)
_DTYPE_NAMES = {torch.float64: "float64", torch.float32: "float32", torch.float16: "float16",
                torch.bfloat16: "bfloat16"}

# Option sets (see _problem); "wide" is the one case large enough for several CTAs.
OPTION_SETS = ("plain", "mask+h0", "backwards+zero_out", "dropout", "gelu/hard_sigmoid",
               "elu/softsign+backwards", "wide")
QUICK_OPTION_SETS = ("plain", "mask+h0", "dropout", "gelu/hard_sigmoid")


@dataclasses.dataclass
class Row:
    path: str
    dtype: str
    convention: str
    options: str
    forward_error: Optional[float] = None
    gradient_error: Optional[float] = None
    status: str = "pass"  # pass, FAIL or skip
    note: str = ""


def _shape(options: str):
    # One case large enough for several CTAs / a real cluster on the persistent paths.
    return (16, 5, 8, 64) if options == "wide" else (4, 7, 6, 33)  # B, T, F, H


def _problem(options: str, reset_after: bool, generator: torch.Generator,
             dtype: torch.dtype) -> dict:
    B, T, F, H = _shape(options)

    def r(*shape, scale=1.0):
        return torch.randn(*shape, generator=generator, dtype=torch.float64) * scale

    # hard_sigmoid has kinks at ±3: a pre-activation that 16-bit rounding moves across one gets
    # a gradient 1/6 off the float64 reference's. Smaller weights keep 16-bit runs of that case
    # away from the kinks (float32 and float64 still cover the clipped branch).
    w = 0.25 if options == "gelu/hard_sigmoid" and dtype in (torch.float16, torch.bfloat16) else 0.6
    p = {"x": r(B, T, F), "kernel": r(F, 3 * H, scale=w / F ** 0.5),
         "recurrent_kernel": r(H, 3 * H, scale=w / H ** 0.5),
         "bias": r(2, 3 * H, scale=0.2) if reset_after else r(3 * H, scale=0.2),
         "initial_state": None, "grad_out": r(B, T, H), "grad_state": r(B, H)}
    kw = {"reset_after": reset_after}
    if options in ("mask+h0", "backwards+zero_out"):
        m = torch.rand(B, T, generator=generator) > 0.3
        m[0] = False  # a fully masked row
        kw["mask"] = m
    if options in ("mask+h0", "dropout", "wide"):
        p["initial_state"] = r(B, H, scale=0.5)
    if options == "backwards+zero_out":
        kw.update(go_backwards=True, zero_output_for_mask=True)
    if options == "dropout":
        kw["input_dropout_mask"] = (
            (torch.rand(3, B, F, generator=generator) > 0.25).double() / 0.75)
        kw["recurrent_dropout_mask"] = (
            (torch.rand(3, B, H, generator=generator) > 0.3).double() / 0.7)
    if options == "gelu/hard_sigmoid":
        kw.update(activation="gelu", recurrent_activation="hard_sigmoid",
                  input_dropout_mask=(torch.rand(B, F, generator=generator) > 0.25).double() / 0.75)
    if options == "elu/softsign+backwards":
        kw.update(activation="elu", recurrent_activation="softsign", go_backwards=True)
    return {"tensors": p, "kw": kw}


def _cast(kw: dict, dtype, device) -> dict:
    out = {}
    for k, v in kw.items():
        if isinstance(v, torch.Tensor):
            v = v.to(device=device, dtype=dtype) if v.is_floating_point() else v.to(device)
        out[k] = v
    return out


def poison_allocator(device: torch.device) -> None:
    """Fills the caching allocator's free blocks with 0xFF bytes (NaN in every float dtype), so
    that the kernel's outputs and workspaces start as NaN. On a CPU the allocator returns memory
    to the system, so there is nothing to poison: the finiteness checks still apply."""
    if device.type != "cuda":
        return
    torch.cuda.synchronize(device)
    blocks = [torch.empty(64 << 20, dtype=torch.uint8, device=device).fill_(255)]
    blocks += [torch.empty(256 << 10, dtype=torch.uint8, device=device).fill_(255)
               for _ in range(32)]
    torch.cuda.synchronize(device)
    del blocks


def _rel(a: torch.Tensor, e: torch.Tensor) -> float:
    a = a.detach().double().cpu()
    e = e.detach().double().cpu()
    if e.numel() == 0:
        return 0.0
    if not torch.isfinite(a).all():
        return float("nan")
    return (a - e).abs().max().item() / max(e.abs().max().item(), 1.0)


def _forward_backward(fn, tensors: dict, kw: dict, dtype, device):
    """Runs fn (functional.gru's signature) and returns (outputs, state, grads)."""
    names = ("x", "kernel", "recurrent_kernel", "bias", "initial_state")
    leaves = [None if tensors[n] is None else
              tensors[n].to(device=device, dtype=dtype).requires_grad_(True) for n in names]
    out, state = fn(*leaves, **_cast(kw, dtype, device))
    loss = ((out * tensors["grad_out"].to(device=device, dtype=out.dtype)).sum()
            + (state * tensors["grad_state"].to(device=device, dtype=state.dtype)).sum())
    used = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(loss, used)
    return out.detach(), state.detach(), grads


def _products(path: str, dtype: torch.dtype, device: torch.device) -> Sequence[Optional[str]]:
    """The recurrent products to force on `path` for `dtype` (None: the model's choice): on the
    persistent paths of an sm_80+ GPU, every product that applies to the dtype."""
    if path not in ("persistent", "persistent_cluster") or device.type != "cuda":
        return (None,)
    if torch.cuda.get_device_capability(device)[0] < 8:
        return ("simt",)
    if dtype in (torch.float16, torch.bfloat16):
        return ("simt", "tensor_core")
    if dtype == torch.float32:
        return ("simt", "3xtf32", "tf32")
    return (None,)  # float64: the persistent paths refuse it (a skip row)


def _check_one(path: str, dtype: torch.dtype, reset_after: bool, options: str,
               device: torch.device, generator: torch.Generator,
               product: Optional[str] = None) -> Row:
    row = Row(path if product is None else f"{path}:{product}", _DTYPE_NAMES[dtype],
              "reset_after" if reset_after else "reset_before", options)
    prob = _problem(options, reset_after, generator, dtype)
    # The reference sees the inputs the kernel sees: rounded to the dtype, then float64.
    rounded = {k: (None if v is None else v.to(dtype).double()) for k, v in prob["tensors"].items()}
    kw_ref = {k: (v.to(dtype).double() if isinstance(v, torch.Tensor) and v.is_floating_point()
                  else v) for k, v in prob["kw"].items()}
    r_out, r_state, r_grads = _forward_backward(reference.gru, rounded, kw_ref, torch.float64,
                                                torch.device("cpu"))
    poison_allocator(device)
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = product == "tf32"  # the only product that uses it
    try:
        with dispatch.force_path(path), dispatch.force_product(product):
            out, state, grads = _forward_backward(_kernel_gru, rounded, kw_ref, dtype, device)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    except ValueError as e:  # a forced path that cannot run this case says so
        row.status, row.note = "skip", str(e).splitlines()[0][:200]
        return row
    except Exception as e:  # anything else is a failure of the install or the kernel
        row.status, row.note = "FAIL", f"{type(e).__name__}: {str(e).splitlines()[0][:200]}"
        return row
    finally:
        torch.backends.cuda.matmul.allow_tf32 = tf32
    if device.type == "cuda":
        ran = dispatch.last_path()
        wrong = [f"{d} ran {ran[d]!r} ({ran[d + '_reason']})" for d in ("forward", "backward")
                 if ran[d] != path]
        if product is not None:
            wrong += [f"{d} ran the {ran[d + '_product']!r} product"
                      for d in ("forward", "backward") if ran[d + "_product"] != product]
        if wrong:
            row.status, row.note = "FAIL", "not the forced path: " + "; ".join(wrong)
    row.forward_error = max(_rel(out, r_out), _rel(state, r_state))
    row.gradient_error = max(_rel(g, e) for g, e in zip(grads, r_grads))
    tol_f, tol_g = TF32_TOLERANCES if product == "tf32" else TOLERANCES[dtype]
    bad = []
    for what, err, tol in (("forward", row.forward_error, tol_f),
                           ("gradients", row.gradient_error, tol_g)):
        if not err <= tol:  # NaN fails too
            bad.append(f"{what} error {err:.2e} > {tol:.0e}" if err == err
                       else f"{what}: NaN or inf (an element left unwritten?)")
    if bad:
        row.status = "FAIL"
        row.note = "; ".join(filter(None, [row.note] + bad))
    return row


# Every path gets every dtype (and, on the persistent paths of an sm_80+ GPU, every recurrent
# product that applies: rows "persistent:tensor_core", ...): the persistent paths refuse
# float64 with a ValueError (a skip); a silent fallback to another path (or product) instead
# fails the last_path check.
DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


def run(device=None, paths: Optional[Sequence[str]] = None, quick: bool = False,
        seed: int = 0, progress=None) -> List[Row]:
    """Runs the self-test and returns one Row per (path, dtype, convention, options)."""
    device = dispatch._device(device)
    available = dispatch.kernel_paths(device)
    if not available:
        raise RuntimeError(f"gru_cuda has no kernel path for {device}: "
                           + dispatch.explain(1, 1, 1, device=device)["reason"])
    if paths:
        unknown = [p for p in paths if p not in available]
        if unknown:
            raise ValueError(f"paths {unknown} are not available on {device} "
                             f"(available: {available})")
        available = [p for p in available if p in paths]
    generator = torch.Generator().manual_seed(seed)
    rows = []
    # TF32 would put float32 products at ~1e-3: exact float32 for the run, then as it was.
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        _run_all(available, device, quick, generator, rows, progress)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    return rows


def _run_all(available, device, quick, generator, rows, progress) -> None:
    for path in available:
        for dtype in DTYPES:
            for product in _products(path, dtype, device):
                for reset_after in (True, False):
                    for options in (QUICK_OPTION_SETS if quick else OPTION_SETS):
                        row = _check_one(path, dtype, reset_after, options, device, generator,
                                         product)
                        rows.append(row)
                        if progress is not None:
                            progress(row)


def device_facts(device=None, rows: Sequence[Row] = ()) -> dict:
    """What decides the kernel paths on `device`, with measured barrier latencies on a GPU."""
    device = dispatch._device(device)
    facts = {"device": str(device), "torch": torch.__version__, "cuda": torch.version.cuda,
             "gru_cuda": gru_cuda.__version__, "build": gru_cuda.build_info(),
             "python": platform.python_version(), "kernel_paths": dispatch.kernel_paths(device)}
    if device.type == "cpu":
        facts.update(cpu=platform.processor() or platform.machine(),
                     threads=torch.get_num_threads())
        return facts
    if not facts["kernel_paths"]:
        return facts
    props = torch.cuda.get_device_properties(device)
    facts.update(name=props.name, compute_capability=f"{props.major}.{props.minor}",
                 cudnn=torch.backends.cudnn.version())
    if not hasattr(_C, "persistent_device_caps"):
        return facts
    caps = dict(_C.persistent_device_caps(device.index))
    facts["caps"] = caps
    # The cluster sizes and shared memory the cluster plans of this self-test use.
    clusters = {}
    if "persistent_cluster" in facts["kernel_paths"]:
        for options in sorted({r.options for r in rows} or {"plain"}):
            B, T, F, H = _shape(options)
            for dt in (torch.float32, torch.bfloat16):
                for ra in (True, False):
                    with dispatch.force_path("persistent_cluster"):
                        plan = dispatch.explain(B, T, H, dtype=dt, reset_after=ra, device=device)
                    for d in ("forward", "backward"):
                        p = plan["capacity"].get(d, {})
                        if p.get("path") == "persistent_cluster":
                            clusters[(int(p["ctas"]), int(p["smem_bytes"]))] = None
    fits = []
    for cs, smem in sorted(clusters):
        try:
            n = int(_C.persistent_max_active_clusters(device.index, cs, smem))
        except Exception as e:  # a build without the query: report, do not fail the facts
            n = f"n/a ({type(e).__name__})"
        fits.append({"cluster_size": cs, "smem_bytes": smem, "max_active_clusters": n})
    facts["max_active_clusters"] = fits
    barriers = []
    kinds = [("counter", caps["sm_count"]), ("grid_sync", caps["sm_count"])]
    kinds += [("cluster", cs) for cs in sorted({c for c, _ in clusters} | {2, 16})
              if caps.get("cluster_launch") and caps["compute_capability"][0] >= 9]
    for kind, ctas in kinds:
        try:
            barriers.append({"kind": kind, "ctas": ctas,
                             "us": _C.persistent_barrier_latency_us(device.index, kind, ctas,
                                                                    2000)})
        except Exception as e:
            barriers.append({"kind": kind, "ctas": ctas, "us": None,
                             "error": str(e).splitlines()[0][:120]})
    facts["barrier_latency"] = barriers
    return facts


def _fmt(v: Optional[float]) -> str:
    return "-" if v is None else ("nan" if v != v else f"{v:.1e}")


def print_table(rows: Sequence[Row], out=sys.stdout) -> None:
    head = (f"{'path':31s}{'dtype':9s}{'convention':13s}{'options':24s}"
            f"{'fwd err':>9s}{'grad err':>10s}  status")
    print(head, file=out)
    print("-" * len(head), file=out)
    for r in rows:
        line = (f"{r.path:31s}{r.dtype:9s}{r.convention:13s}{r.options:24s}"
                f"{_fmt(r.forward_error):>9s}{_fmt(r.gradient_error):>10s}  {r.status}")
        if r.note:
            line += f"  {r.note[:110]}"
        print(line, file=out)


def print_facts(facts: dict, out=sys.stdout) -> None:
    print("device facts:", file=out)
    for k in ("device", "name", "compute_capability", "torch", "cuda", "cudnn", "gru_cuda",
              "build", "kernel_paths", "cpu", "threads"):
        if k in facts:
            print(f"  {k:20s}{facts[k]}", file=out)
    caps = facts.get("caps")
    if caps:
        print(f"  {'SMs':20s}{caps['sm_count']}", file=out)
        print(f"  {'smem/block (optin)':20s}{caps['shared_memory_per_block_optin']} B; per SM "
              f"{caps['shared_memory_per_sm']} B", file=out)
        print(f"  {'cooperative launch':20s}{caps['cooperative_launch']}; cluster launch "
              f"{caps['cluster_launch']} (max cluster size {caps['max_cluster_size']})", file=out)
    for f in facts.get("max_active_clusters", []):
        print(f"  clusters of {f['cluster_size']:2d} CTAs x {f['smem_bytes']} B smem: "
              f"{f['max_active_clusters']} fit at once", file=out)
    for b in facts.get("barrier_latency", []):
        us = "error: " + b.get("error", "") if b["us"] is None else f"{b['us']:.3f} us"
        print(f"  barrier {b['kind']:9s} over {b['ctas']:3d} CTAs: {us}", file=out)
    if facts["device"] == "cpu":
        print("  (the GPU facts -- SMs, shared memory, clusters, barriers -- do not apply)",
              file=out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gru_cuda.selftest",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default=None,
                    help="cpu or cuda[:N] (default: a GPU when the build has CUDA and one is "
                         "visible, else the CPU)")
    ap.add_argument("--paths", nargs="+", default=None, help="only these kernel paths")
    ap.add_argument("--quick", action="store_true", help="fewer option sets")
    ap.add_argument("--json", default=None, metavar="FILE", help="write the rows and facts")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        device = dispatch._device(args.device)
        rows = run(device, args.paths, args.quick, args.seed)
    except (RuntimeError, ValueError) as e:
        print(f"selftest: cannot run: {e}")
        return 1
    print_table(rows)
    print()
    facts = device_facts(device, rows)
    print_facts(facts)
    n = {s: sum(r.status == s for r in rows) for s in ("pass", "FAIL", "skip")}
    seconds = time.perf_counter() - t0
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"facts": facts, "rows": [dataclasses.asdict(r) for r in rows],
                       "summary": {"passed": n["pass"], "failed": n["FAIL"],
                                   "skipped": n["skip"], "seconds": seconds}},
                      f, indent=2, default=str)
    print(f"\nselftest: {n['pass']} passed, {n['FAIL']} failed, {n['skip']} skipped "
          f"in {seconds:.1f}s on {facts.get('name', facts['device'])}")
    return 1 if n["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
