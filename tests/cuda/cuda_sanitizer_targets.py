"""Small CUDA workloads for compute-sanitizer, on every kernel path, with no pytest around.

Every case runs forward (saving for backward), backward and an inference forward under each
forced kernel path this device has (gru_cuda.dispatch.kernel_paths; choose with --paths):
stepwise runs every kernel of csrc/kernels/step/ and the utility kernels (both
conventions, every dtype, masks, input and recurrent dropout, go_backwards, odd sizes, B = 1,
T = 1, the multi-chunk bias reduction); persistent and persistent_cluster run every case they
can (not float64, nothing too large: those cases are routed to the paths that can and the
script says so), plus cases picked with dispatch.explain so that the grid path runs several
CTAs and the cluster path at least 2 clusters of at least 2 CTAs. After each pass the script
checks with dispatch.last_path that the forced path itself ran (a silent fallback fails), prints
which path ran each case, and compares every path's results with the stepwise ones. On sm_80+
the persistent paths also run each float16/bfloat16 case with the tensor_core product and each
float32 case with 3xtf32 forced (work items "persistent:tensor_core", ...), so that the tools see
the mma.sync / ldmatrix code and its split-K partial tiles too.

Run on a GPU machine with the CUDA build installed (--quick: a few cases per path):

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck \\
        --leak-check full --error-exitcode 1 python tests/cuda/cuda_sanitizer_targets.py
    compute-sanitizer --tool racecheck --error-exitcode 1 \\
        python tests/cuda/cuda_sanitizer_targets.py
    compute-sanitizer --tool initcheck --error-exitcode 1 \\
        python tests/cuda/cuda_sanitizer_targets.py
    compute-sanitizer --tool synccheck --error-exitcode 1 \\
        python tests/cuda/cuda_sanitizer_targets.py
    python tests/cuda/cuda_sanitizer_targets.py --paths persistent_cluster --quick

PYTORCH_NO_CUDA_MEMORY_CACHING=1 makes every allocation exact, so that memcheck sees an
out-of-bounds access past a tensor instead of landing in a cached block. The cuBLAS and torch
kernels run under the tools as well; a report naming one of our kernels (gru_cuda::kernels::...)
is ours. Exits 0 when every requested run happened on its path, every result is finite and the
paths agree; 1 otherwise; 2 without a GPU and a CUDA build.
"""
import argparse
import sys
from pathlib import Path

import torch

import gru_cuda
from gru_cuda import dispatch
from gru_cuda.activations import FUSED_IDS

# Run as a script (under compute-sanitizer): the shared problem builder lives in tests/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from compare import max_rel_err  # noqa: E402
from problems import make_problem  # noqa: E402

F32, F16, BF16, F64 = torch.float32, torch.float16, torch.bfloat16, torch.float64

CASES = [
    # (T, B, F, H, reset_after, dtype, mask, input dropout, recurrent dropout, go_backwards,
    #  zero_output_for_mask, bias, activation, recurrent_activation)
    (5, 3, 4, 33, True, F32, True, "per_gate", True, True, False, True, "tanh", "sigmoid"),
    (5, 3, 4, 33, False, F32, True, "shared", True, False, True, True, "tanh", "sigmoid"),
    (4, 2, 3, 17, True, F16, True, None, False, False, False, False, "gelu", "hard_sigmoid"),
    (4, 2, 3, 17, False, BF16, False, "per_gate", True, True, False, True, "elu", "softsign"),
    (3, 2, 5, 9, True, F64, True, "shared", True, False, False, True, "softplus", "silu"),
    (3, 2, 5, 9, False, F64, False, None, False, True, False, False, "exponential", "sigmoid"),
    (1, 1, 2, 1, True, F32, False, None, False, False, False, True, "relu", "sigmoid"),
    (1, 1, 2, 1, False, F32, True, None, True, False, False, True, "linear", "selu"),
    (40, 12, 3, 40, True, F32, True, None, False, False, False, True, "tanh", "sigmoid"),
    (40, 12, 3, 40, False, BF16, True, None, False, True, False, True, "tanh", "sigmoid"),
]
QUICK = [0, 3, 4, 8]  # fp32 + bf16, both conventions, float64 (stepwise), many rows

# Cases for the persistent paths' multi-CTA geometry: (dtype, reset_after, mask, idm, rdm,
# go_backwards, zero_output); the shape comes from pick_shape().
GEOMETRY_CASES = [
    (F32, True, True, "per_gate", True, True, False),
    (BF16, False, True, "shared", True, False, True),
    (F16, True, False, None, False, False, False),
]
GEOMETRY_T, GEOMETRY_F = 6, 3
# (B, H) candidates, smallest first: H = 40 is 10 CTAs of 4 units on both paths.
SHAPE_CANDIDATES = [(6, 40), (12, 40), (24, 72), (40, 136)]

# Agreement with the stepwise results, relative to max(|stepwise|, 1).
AGREE = {F32: 1e-4, F16: 3e-2, BF16: 5e-2, F64: 1e-9}


def split(spec):
    """"persistent:tensor_core" -> ("persistent", "tensor_core"); "stepwise" -> (.., None)."""
    path, _, product = spec.partition(":")
    return path, product or None


def tensor_core_product(dtype):
    """The tensor-core product a case of `dtype` is also run with (None: none)."""
    if torch.cuda.get_device_capability()[0] < 8:
        return None
    return {F16: "tensor_core", BF16: "tensor_core", F32: "3xtf32"}.get(dtype)


def forced_plan(spec, B, T, H, dtype, reset_after, rdm):
    path, product = split(spec)
    with dispatch.force_path(path), dispatch.force_product(product):
        return dispatch.explain(B, T, H, dtype=dtype, reset_after=reset_after,
                                recurrent_dropout=rdm)


def pick_shape(path, dtype, reset_after, rdm):
    """The smallest (B, H) for which the forced plan of `path` has several CTAs (grid path:
    at least 4) or at least 2 clusters of at least 2 CTAs (cluster path), forward and
    backward; None if no candidate fits."""
    for B, H in SHAPE_CANDIDATES:
        r = forced_plan(path, B, GEOMETRY_T, H, dtype, reset_after, rdm)
        plans = [r["capacity"]["forward"], r["capacity"]["backward"]]
        if any(p["path"] != path for p in plans):
            continue
        if path == "persistent" and all(p["ctas"] >= 4 for p in plans):
            return B, H, plans
        if path == "persistent_cluster" and all(p["ctas"] >= 2 and p["clusters"] >= 2
                                                for p in plans):
            return B, H, plans
    return None


def make_inputs(T, B, F, H, reset_after, dtype, mask, idm, rdm, bias, device="cuda"):
    """The case's inputs, time-major, from the suite's shared builder (tests/problems.py)."""
    g = torch.Generator(device="cpu").manual_seed(T * 1000 + B * 100 + H)
    # fan_in: weights scaled by 1/sqrt(fan-in), so that large H stays out of saturation.
    (x, kernel, recurrent, b, h0), kw = make_problem(
        B=B, T=T, F=F, H=H, reset_after=reset_after, bias=bias, initial_state=True,
        mask="random" if mask else False, input_dropout=idm, recurrent_dropout=rdm,
        time_major=True, dtype=dtype, device=device, scale=0.3, fan_in=True, bias_scale=0.1,
        state_scale=0.5, mask_keep=0.7, keep=0.7, generator=g)
    return (x, kernel, recurrent, b, h0, kw.get("mask"), kw.get("input_dropout_mask"),
            kw.get("recurrent_dropout_mask"))


def run_case(spec, T, B, F, H, reset_after, dtype, mask, idm, rdm, go_backwards, zero_output,
             bias, activation, recurrent_activation):
    """Forward (saved), backward and inference forward with the path (and product) of `spec`
    forced. Returns (results, problems): the tensors, and what went wrong (a fallback to
    another path or product, non-finite values)."""
    path, product = split(spec)
    x, kernel, recurrent, b, h0, m, im, rm = make_inputs(T, B, F, H, reset_after, dtype, mask,
                                                         idm, rdm, bias)
    ids = FUSED_IDS[activation], FUSED_IDS[recurrent_activation]
    problems = []
    empty = T * B * H == 0

    def ran(direction):
        r = dispatch.last_path()
        if not empty and r[direction] != path:
            problems.append(f"{direction} ran {r[direction]!r} ({r[direction + '_reason']}) "
                            f"instead of the forced {path!r}")
        if not empty and product is not None and r[direction + "_product"] != product:
            problems.append(f"{direction} ran the {r[direction + '_product']!r} product "
                            f"instead of the forced {product!r}")
        return f"{r[direction]} ({r[direction + '_reason']})"

    with dispatch.force_path(path), dispatch.force_product(product):
        outputs, final, states, workspace = torch.ops.gru_cuda.gru_forward(
            x, kernel, recurrent, b, h0, m, im, rm, reset_after, *ids, go_backwards,
            zero_output, True)
        fwd_reason = ran("forward")
        grads = torch.ops.gru_cuda.gru_backward(
            torch.ones_like(outputs), torch.ones_like(final), x, kernel, recurrent, h0, states,
            workspace, m, im, rm, bias, reset_after, *ids, go_backwards, zero_output)
        bwd_reason = ran("backward")
        inference = torch.ops.gru_cuda.gru_forward(  # the inference path (no saved tensors)
            x, kernel, recurrent, b, h0, m, im, rm, reset_after, *ids, go_backwards,
            zero_output, False)
        ran("forward")
    torch.cuda.synchronize()
    results = [outputs, final, *grads, inference[0], inference[1]]
    if not all(torch.isfinite(t).all().item() for t in results if t.numel()):
        problems.append("non-finite result")
    return results, problems, (fwd_reason, bwd_reason)


def compare(results, baseline, dtype):
    worst = max((max_rel_err(a, e) for a, e in zip(results, baseline)), default=0.0)
    return worst, worst <= AGREE[dtype]


def fmt(case):
    T, B, F, H, ra, dtype = case[:6]
    return (f"T={T} B={B} F={F} H={H} {'reset_after' if ra else 'reset_before'} "
            f"{str(dtype).replace('torch.', '')}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--paths", default=None,
                    help="comma-separated kernel paths (default: every path of this device)")
    ap.add_argument("--quick", action="store_true", help="a few cases per path")
    args = ap.parse_args(argv)
    if not (torch.cuda.is_available() and gru_cuda.build_info()["cuda"]):
        print("cuda_sanitizer_targets: needs a CUDA GPU and a CUDA build of gru_cuda")
        return 2
    here = dispatch.kernel_paths("cuda")
    paths = here if args.paths is None else [p.strip() for p in args.paths.split(",") if p.strip()]
    unknown = [p for p in paths if p not in dispatch.CUDA_PATHS]
    if unknown:
        ap.error(f"--paths: unknown {unknown}; choose from {list(dispatch.CUDA_PATHS)}")
    missing = [p for p in paths if p not in here]
    if missing:
        print(f"cuda_sanitizer_targets: {missing} do not run on this device (it has {here})")
        return 1
    print(f"cuda_sanitizer_targets: {torch.cuda.get_device_name()}, paths {paths}")

    cases = [CASES[i] for i in QUICK] if args.quick else list(CASES)
    work = [(case, p) for case in cases for p in paths]  # (case, path) to run
    for path in paths:
        if path == "stepwise":
            continue
        for i, (dtype, ra, mask, idm, rdm, gb, zo) in enumerate(GEOMETRY_CASES):
            if args.quick and i > 0:
                break
            picked = pick_shape(path, dtype, ra, rdm)
            if picked is None:
                print(f"  [{path}] no candidate shape gives a multi-CTA geometry: FAILED")
                return 1
            B, H, plans = picked
            geo = "; ".join(f"{d} {p['ctas']} CTAs x {p['units_per_cta']} units"
                            + (f", {p['clusters']} clusters" if path != "persistent" else "")
                            for d, p in zip(("forward", "backward"), plans))
            print(f"  [{path}] geometry case B={B} H={H}: {geo}")
            case = (GEOMETRY_T, B, GEOMETRY_F, H, ra, dtype, mask, idm, rdm, gb, zo, True,
                    "tanh", "sigmoid")
            work += [(case, p) for p in dict.fromkeys(["stepwise", path]) if p in paths]

    # The persistent runs once more with the dtype's tensor-core product forced.
    work += [(case, f"{p}:{tensor_core_product(case[5])}") for case, p in list(work)
             if p != "stepwise" and tensor_core_product(case[5]) is not None]
    work = list(dict.fromkeys(work))  # a geometry case two paths picked runs stepwise once
    failures, runs, baselines = 0, 0, {}
    for case, path in sorted(work, key=lambda cp: cp[1] != "stepwise"):  # stepwise first
        T, B, F, H, ra, dtype = case[:6]
        rdm = case[8]
        if path != "stepwise" and T * B * H:
            r = forced_plan(path, B, T, H, dtype, ra, rdm)
            if r["path"] != split(path)[0] or r["backward_path"] != split(path)[0]:
                why = r["reason"] if r["path"] != path else r["backward_reason"]
                target = "stepwise" if "stepwise" in paths else "no requested path"
                print(f"  [{path}] {fmt(case)}: routed to {target} ({why})")
                continue
        results, problems, reasons = run_case(path, *case)
        runs += 1
        key = case
        note = ""
        if path == "stepwise":
            baselines[key] = results
        elif key in baselines:
            worst, ok = compare(results, baselines[key], dtype)
            note = f", max deviation from stepwise {worst:.1e}"
            if not ok:
                problems.append(f"differs from stepwise by {worst:.1e} (> {AGREE[dtype]:.0e})")
        status = "ok" if not problems else "FAILED: " + "; ".join(problems)
        print(f"  [{path}] {fmt(case)}: forward ran {reasons[0]}, backward ran {reasons[1]}"
              f"{note}: {status}")
        failures += bool(problems)
    print(f"cuda_sanitizer_targets: {runs} runs, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
