"""The geometries production picks: the benchmark's shapes (B in {1, 16, 32, 64, 256}, H in
{256, 512, 1024}, float32 and bfloat16, both reset conventions), forward and backward plans.

CPU part (runs everywhere): the capacity model's what-if plans for the "H200" preset over that
grid, automatic and forced, satisfy the invariants the kernels rely on (cluster size within
the device's limit, every unit owned by a CTA, shared memory within the per-block limit, every
batch row in a tile). Invariants only, not exact numbers: the model's constants and choices
may change.

GPU part (the `cuda` marker): on the real device, explain() says which path and geometry
automatic dispatch picks for each shape; a 3-step problem of exactly that B and H then runs
with that forward and that backward path forced (the choice does not depend on T, only the
geometry's reach does) against the float64 reference, and dispatch.last_path must report that
pair. A non-portable cluster of 16 CTAs that the device refused runs as a cluster of 8: that is
reported as a warning, not a failure.
"""
import itertools
import re
import warnings

import pytest
import torch

from gru_cuda import dispatch
from gru_cuda._library import _C
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from cuda_problems import (CUDA_PATHS, PERSISTENT_PATHS, TOL, clear_last_path, make_problem,
                           poison_allocator, prepare_args, reference_run)

BENCH_B = (1, 16, 32, 64, 256)
BENCH_H = (256, 512, 1024)
BENCH_T = 512  # the benchmark's usual sequence length; the path choice does not depend on T
DTYPES = (torch.float32, torch.bfloat16)
RESET = pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
GEOMETRY = ("units_per_cta", "ctas", "clusters", "batch_tile", "k_pad", "smem_bytes")

requires_model = pytest.mark.skipif(
    not hasattr(_C, "persistent_plan"),
    reason="this build does not expose the capacity model (_C.persistent_plan)")


@pytest.fixture(autouse=True)
def _no_forced_path():
    yield
    dispatch.set_path(None)


# =============================================================================================
# CPU part: what-if plans for an H200
# =============================================================================================

def _check_plan(plan, caps, B, H, dtype, forced, direction):
    """The invariants of one plan (a capacity[direction] dict of explain())."""
    where = f"{direction} B={B} H={H} {dtype} forced={forced}: {plan}"
    path = plan["path"]
    if forced is None:
        assert path in CUDA_PATHS, where
    else:
        assert path in (forced, "error"), where
        if path == "error":
            assert "cannot run" in plan["reason"], where
            return
    assert plan["reason"], where
    if path == "stepwise":
        return
    J, ctas = plan["units_per_cta"], plan["ctas"]
    assert J > 0 and J % 4 == 0, where  # whole register tiles of 4 columns
    assert ctas >= 1 and ctas * J >= H, where  # every unit has a CTA
    assert plan["k_pad"] >= H, where
    assert plan["batch_tile"] >= 2, where
    assert 0 < plan["weight_bytes"] <= plan["smem_bytes"], where  # U's slice stays on chip
    assert plan["smem_bytes"] <= caps["shared_memory_per_block_optin"], where
    assert plan["barriers_per_step"] >= 1, where
    if path == "persistent":
        assert ctas <= caps["sm_count"], where  # one CTA per SM, all co-resident
    else:
        assert 1 <= ctas <= caps["max_cluster_size"], where
        assert plan["clusters"] >= 1 and plan["clusters"] * plan["batch_tile"] >= B, where


@requires_model
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@RESET
def test_h200_what_if_plan_invariants(dtype, reset_after):
    caps = dispatch.DEVICE_PRESETS["H200"]
    chosen = set()
    for B, H in itertools.product(BENCH_B, BENCH_H):
        plans = {}
        for forced in (None,) + CUDA_PATHS:
            with dispatch.force_path(forced):
                r = dispatch.explain(B, BENCH_T, H, dtype=dtype, reset_after=reset_after,
                                     device_caps="H200")
            assert r["device"] == "what-if" and r["forced"] == forced
            for direction, top in (("forward", r["path"]), ("backward", r["backward_path"])):
                plan = r["capacity"][direction]
                assert plan["path"] == top, (direction, r)
                _check_plan(plan, caps, B, H, dtype, forced, direction)
                plans[forced, direction] = plan
        for direction in ("forward", "backward"):
            auto = plans[None, direction]
            chosen.add(auto["path"])
            assert plans["stepwise", direction]["path"] == "stepwise"
            if auto["path"] in PERSISTENT_PATHS:
                # automatic dispatch runs exactly what forcing that path runs
                forced = plans[auto["path"], direction]
                assert {k: auto[k] for k in GEOMETRY} == {k: forced[k] for k in GEOMETRY}
        for p in PERSISTENT_PATHS:
            # the backward keeps more operands than the forward: it never fits where the
            # forward does not
            if plans[p, "backward"]["path"] == p:
                assert plans[p, "forward"]["path"] == p, (B, H, p)
    assert chosen <= set(CUDA_PATHS)


# =============================================================================================
# GPU part: the production geometries on the real device
# =============================================================================================

@requires_cuda
def test_device_matches_preset():
    """On an H100 or H200 the device's own figures are the preset's (the what-if queries and
    the CPU tests above describe this device)."""
    name = torch.cuda.get_device_name()
    preset = "H200" if "H200" in name else "H100-SXM" if "H100" in name else None
    if preset is None:
        pytest.skip(f"not an H100/H200: {name}")
    caps = dict(_C.persistent_device_caps(torch.cuda.current_device()))
    want = dispatch.DEVICE_PRESETS[preset]
    if preset == "H100-SXM" and caps["sm_count"] != want["sm_count"]:
        pytest.skip(f"{name} has {caps['sm_count']} SMs (an H100 PCIe?)")
    for key in ("sm_count", "compute_capability", "shared_memory_per_block_optin",
                "shared_memory_per_sm", "registers_per_sm", "cooperative_launch",
                "cluster_launch", "max_cluster_size"):
        assert caps[key] == want[key], (key, caps[key], want[key])


def _cluster_size_ran(reason):
    m = re.search(r"cluster\(s\) of (\d+) CTAs", reason or "")
    return int(m.group(1)) if m else None


@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@RESET
@pytest.mark.parametrize("H", BENCH_H)
@pytest.mark.parametrize("B", BENCH_B)
def test_production_geometry(B, H, reset_after, dtype, record_property):
    r = dispatch.explain(B, BENCH_T, H, dtype=dtype, reset_after=reset_after)
    fwd, bwd = r["path"], r["backward_path"]
    assert fwd in CUDA_PATHS and bwd in CUDA_PATHS, r
    for direction in ("forward", "backward"):
        plan = r["capacity"][direction]
        record_property(direction, {k: plan[k] for k in ("path",) + GEOMETRY})
    print(f"B={B} H={H} {dtype} reset_after={reset_after}: forward {fwd} "
          f"({r['reason']}); backward {bwd} ({r['backward_reason']})")

    p, kw = make_problem(3, B, 16, H, reset_after=reset_after)
    r_out, r_state, r_grads, grad_out, grad_state = reference_run(p, kw)
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    poison_allocator()
    clear_last_path()
    with dispatch.force_path(fwd):
        out, state = gru(*args, **ckw)
    loss = (out * grad_out.cuda().to(dtype)).sum() + (state * grad_state.cuda().to(dtype)).sum()
    with dispatch.force_path(bwd):
        grads = torch.autograd.grad(loss, [a for a in args if a is not None])
    ran = dispatch.last_path()
    assert (ran["forward"], ran["backward"]) == (fwd, bwd), ran
    for direction, path in (("forward", fwd), ("backward", bwd)):
        if path == "persistent_cluster":
            planned = r["capacity"][direction]["ctas"]
            got = _cluster_size_ran(ran[direction + "_reason"])
            assert got is not None and got <= planned, ran
            if got != planned:
                warnings.warn(f"B={B} H={H} {dtype} {direction}: the device refused the planned "
                              f"cluster of {planned} CTAs and ran {got}: {ran}")
    tol_f, tol_g = TOL[dtype]
    assert_close_rel(out, r_out, tol_f, "outputs")
    assert_close_rel(state, r_state, tol_f, "final_state")
    for name, g, ref in zip(("x", "kernel", "recurrent_kernel", "bias", "initial_state"), grads,
                            r_grads):
        assert g.dtype == dtype
        assert_close_rel(g, ref, tol_g, f"grad {name}")
