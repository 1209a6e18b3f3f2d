"""The persistent CUDA paths (csrc/kernels/persistent_*, csrc/cuda/path_choice.cpp and
csrc/cuda/persistent.cpp) and gru_cuda.dispatch.

CPU part, runs everywhere: gru_cuda.dispatch on a CPU device or a CPU-only build, and the
capacity model through gru_cuda._C.persistent_plan (a what-if for published H100 and A100
figures) when the build has it.

CUDA part (the `cuda` marker), skipped cleanly without a GPU and a CUDA build with the
persistent kernels: sizes around the capacity boundaries against the float64 reference; a
refused cooperative launch falling back to stepwise; forced stepwise and automatic dispatch
against explain(); the barrier benchmark. Every option, activation and shape on every forced
path is in test_cuda_ops.py, CUDA graphs in test_cuda_graphs.py, the geometries production
picks in test_cuda_paths.py. Under compute-sanitizer run tests/cuda/cuda_sanitizer_targets.py.
"""

import pytest
import torch

import gru_cuda
from gru_cuda import dispatch, reference
from gru_cuda._library import _C
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from cuda_problems import TOL, check_against_reference, make_problem, prepare_args

CUDA = torch.cuda.is_available() and gru_cuda.build_info()["cuda"]
PERSISTENT_BUILT = CUDA and hasattr(_C, "persistent_set_path")
HAS_MODEL = hasattr(_C, "persistent_plan")
PERSISTENT_PATHS = ("persistent", "persistent_cluster")


def requires_persistent(test):
    """GPU-only (the `cuda` marker, which also skips without a GPU) and the persistent kernels."""
    return requires_cuda(pytest.mark.skipif(
        not PERSISTENT_BUILT,
        reason="needs a CUDA GPU and a CUDA build with the persistent kernels")(test))


requires_model = pytest.mark.skipif(
    not HAS_MODEL, reason="this build does not expose the capacity model (_C.persistent_plan)")


@pytest.fixture(autouse=True)
def _reset_dispatch():
    """No test leaks a forced path or the oversubscription hook into the next one."""
    yield
    dispatch.set_path(None)
    if PERSISTENT_BUILT:
        _C.persistent_debug_oversubscribe(False)


# =============================================================================================
# CPU part
# =============================================================================================

def test_kernel_paths_on_cpu():
    assert dispatch.kernel_paths("cpu") == ["cpu"]
    assert dispatch.kernel_paths(torch.device("cpu")) == ["cpu"]
    if not CUDA:
        assert dispatch.kernel_paths() == ["cpu"]
        assert dispatch.kernel_paths("cuda") == []


def test_set_and_force_path_restore():
    assert dispatch.get_path() is None
    with dispatch.force_path("stepwise"):
        assert dispatch.get_path() == "stepwise"
        with dispatch.force_path("persistent"):
            assert dispatch.get_path() == "persistent"
        assert dispatch.get_path() == "stepwise"
        with pytest.raises(RuntimeError, match="boom"):
            with dispatch.force_path("persistent_cluster"):
                raise RuntimeError("boom")
        assert dispatch.get_path() == "stepwise"
    assert dispatch.get_path() is None
    dispatch.set_path("cpu")
    assert dispatch.get_path() == "cpu"
    dispatch.set_path("auto")
    assert dispatch.get_path() is None
    with dispatch.force_path(None):
        assert dispatch.get_path() is None


@pytest.mark.parametrize("bad", ["fast", "", "Persistent", 3, True])
def test_set_path_rejects_unknown_names(bad):
    with pytest.raises(ValueError, match="unknown kernel path"):
        dispatch.set_path(bad)
    assert dispatch.get_path() is None


@pytest.mark.parametrize("path", dispatch.PATHS)
def test_forced_path_leaves_cpu_results_unchanged(path):
    torch.manual_seed(0)
    x = torch.randn(3, 5, 4)
    k = torch.randn(4, 18) * 0.3
    u = torch.randn(6, 18) * 0.3
    b = torch.randn(2, 18) * 0.1
    expected = gru(x, k, u, b)
    with dispatch.force_path(path):
        got = gru(x, k, u, b)
    for e, g in zip(expected, got):
        assert torch.equal(e, g)


def test_explain_on_cpu():
    r = dispatch.explain(8, 512, 1024, 64, device="cpu")
    assert r["path"] == "cpu" and r["backward_path"] == "cpu"
    assert "CPU" in r["reason"]
    assert r["capacity"] == {"device": "cpu"}
    assert (r["batch"], r["timesteps"], r["units"], r["input_size"]) == (8, 512, 1024, 64)
    if not CUDA:
        assert dispatch.explain(1, 1, 1)["path"] == "cpu"  # default device


def test_explain_cuda_device_without_cuda():
    if CUDA:
        pytest.skip("a CUDA device is usable here")
    r = dispatch.explain(8, 16, 32, device="cuda")
    assert r["path"] == "unavailable" and r["reason"]


@pytest.mark.parametrize("kwargs", [dict(batch=-1), dict(units=2.5), dict(timesteps=True),
                                    dict(dtype=torch.int32), dict(input_size=-3),
                                    dict(reset_after=1)])
def test_explain_validates(kwargs):
    args = dict(batch=2, timesteps=3, units=4)
    args.update(kwargs)
    with pytest.raises(ValueError):
        dispatch.explain(args.pop("batch"), args.pop("timesteps"), args.pop("units"), **args)


def test_last_path_shape():
    r = dispatch.last_path()
    assert set(r) == {"forward", "forward_reason", "forward_product", "backward",
                      "backward_reason", "backward_product"}


# ---- the capacity model (what-if on published device figures) ----------------------------

H100 = dispatch.DEVICE_PRESETS["H100-SXM"]
A100 = dispatch.DEVICE_PRESETS["A100-SXM"]


def _plan(caps, B, H, dtype="float32", reset_after=True, rdm=False, backward=False,
          forced="auto", T=64):
    return dict(_C.persistent_plan(caps, B, T, H, dtype, reset_after, rdm, backward, forced))


def _check_geometry(p, caps, B, H):
    J, kp, bt = p["units_per_cta"], p["k_pad"], p["batch_tile"]
    assert J % 4 == 0 and J > 0
    assert kp % 64 == 0 and H <= kp < H + 64
    assert bt >= 2 and (bt % 8 == 0 if bt >= 8 else bt % 2 == 0)
    assert 0 < p["smem_bytes"] <= caps["shared_memory_per_block_optin"]
    assert p["ctas"] * J >= H and (p["ctas"] - 1) * J < H
    if p["path"] == "persistent":
        assert p["ctas"] <= caps["sm_count"]
    else:
        assert p["ctas"] <= caps.get("max_cluster_size", 8)
        assert p["clusters"] * bt >= B and (p["clusters"] - 1) * bt < B


@requires_model
@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("backward", [False, True])
@pytest.mark.parametrize("rdm", [False, True])
def test_model_geometry_invariants(dtype, reset_after, backward, rdm):
    for caps in (H100, A100):
        for B in (1, 2, 7, 8, 33, 256):
            for H in (1, 5, 33, 128, 257, 768, 1024, 1500, 2048):
                for forced in PERSISTENT_PATHS:
                    p = _plan(caps, B, H, dtype, reset_after, rdm, backward, forced)
                    if p["path"] == forced:
                        _check_geometry(p, caps, B, H)
                    else:
                        assert p["path"] == "stepwise" and "does not fit" in p["reason"]


@requires_model
def test_model_published_shapes():
    p = _plan(H100, 8, 1024, forced="persistent")
    assert p["path"] == "persistent" and p["ctas"] == 128 and p["units_per_cta"] == 8
    assert p["barriers_per_step"] == 1
    assert _plan(H100, 8, 1024, reset_after=False, forced="persistent")["barriers_per_step"] == 2
    c = _plan(H100, 16, 256, forced="persistent_cluster")
    assert c["path"] == "persistent_cluster" and c["ctas"] == 16 and c["units_per_cta"] == 16
    # no clusters before sm_90
    a = _plan(A100, 16, 256, forced="persistent_cluster")
    assert a["path"] == "stepwise" and "sm_90" in a["reason"]
    # float64 and forced stepwise
    assert "float64" in _plan(H100, 8, 256, dtype="float64")["reason"]
    assert _plan(H100, 8, 256, dtype="float64", forced="persistent")["path"] == "stepwise"
    assert _plan(H100, 8, 256, forced="stepwise")["reason"] == "stepwise forced"
    # nothing to run
    assert _plan(H100, 0, 256)["path"] == "stepwise"
    # fp32, H=2048: 16 units x 3 gates x 2048 x 4 B = 384 KiB per CTA, more than shared memory
    assert "does not fit" in _plan(H100, 8, 2048, forced="persistent")["reason"]
    assert _plan(H100, 8, 2048, dtype="bfloat16", forced="persistent")["path"] == "persistent"


@requires_model
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_model_boundary_is_sharp(path, dtype):
    for backward in (False, True):
        top = _C.persistent_max_units(H100, 4, dtype, True, False, backward, path, 8192)
        assert top > 0
        assert _plan(H100, 4, top, dtype, backward=backward, forced=path)["path"] == path
        assert _plan(H100, 4, top + 1, dtype, backward=backward, forced=path)["path"] == "stepwise"
    # the backward keeps three operand rows (dgh per gate), the forward one: it fits less
    fwd = _C.persistent_max_units(H100, 4, dtype, True, False, False, path, 8192)
    bwd = _C.persistent_max_units(H100, 4, dtype, True, False, True, path, 8192)
    assert bwd <= fwd


@requires_model
def test_model_auto_prefers_stepwise_for_large_half_batches():
    p = _plan(H100, 256, 1024, dtype="bfloat16")
    assert p["path"] == "stepwise" and "estimated faster" in p["reason"]
    small = _plan(H100, 4, 256, dtype="bfloat16")
    assert small["path"] in PERSISTENT_PATHS


@requires_model
def test_explain_what_if():
    r = dispatch.explain(8, 512, 1024, dtype=torch.bfloat16, device_caps="H100-SXM")
    assert r["device"] == "what-if"
    assert r["path"] in ("stepwise",) + PERSISTENT_PATHS
    cap = r["capacity"]
    assert cap["forward"]["path"] == r["path"] and cap["backward"]["path"] == r["backward_path"]
    assert cap["max_units"]["forward"]["persistent"] >= 2048
    assert cap["max_units"]["forward"]["persistent_cluster"] > 0
    with dispatch.force_path("persistent"):
        r = dispatch.explain(8, 512, 4096, device_caps=H100)
        assert r["path"] == "error" and "cannot run" in r["reason"]
        assert r["forced"] == "persistent"
    with pytest.raises(ValueError, match="preset"):
        dispatch.explain(1, 1, 1, device_caps="TPU")


# =============================================================================================
# CUDA part (every option, activation and shape on every forced path: test_cuda_ops.py; CUDA
# graphs: test_cuda_graphs.py; production geometries: test_cuda_paths.py)
# =============================================================================================

check_path = check_against_reference  # (p, kw, dtype, path): forced, vs the reference


def _paths_here():
    return dispatch.kernel_paths("cuda") if PERSISTENT_BUILT else []


def _need(path):
    if path not in _paths_here():
        pytest.skip(f"{path} does not run on this device")


@pytest.fixture(autouse=True)
def _exact_fp32():
    if not CUDA:
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved


@requires_persistent
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_capacity_boundary(path, dtype, reset_after):
    """The largest H that fits runs on the forced path (forward and backward); one more unit
    than the forward fits raises under the forced path and runs correctly in automatic mode."""
    _need(path)
    B, T, F = 3, 2, 3
    mu = dispatch.explain(B, T, 64, dtype=dtype, reset_after=reset_after)["capacity"]["max_units"]
    h_both = min(mu["forward"][path], mu["backward"][path])
    assert h_both > 0
    p, kw = make_problem(T, B, F, h_both, reset_after=reset_after, mask="random")
    check_path(p, kw, dtype, path)

    h_over = mu["forward"][path] + 1
    p, kw = make_problem(T, B, F, h_over, reset_after=reset_after)
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    with dispatch.force_path(path), torch.no_grad():
        with pytest.raises(ValueError, match="cannot run"):
            gru(*args, **ckw)
    with torch.no_grad():
        out, _ = gru(*args, **ckw)
    ran = dispatch.last_path()["forward"]
    assert ran != path and ran is not None
    expected, _ = reference.gru(*[None if a is None else a.detach().double().cpu() for a in args],
                                **{k: (v.double().cpu() if isinstance(v, torch.Tensor)
                                       and v.is_floating_point() else v) for k, v in ckw.items()})
    assert_close_rel(out, expected, TOL[dtype][0] * 4, "outputs above the boundary")


@requires_persistent
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_refused_cooperative_launch_falls_back(reset_after):
    """A grid the device cannot hold at once is refused by cudaLaunchCooperativeKernel; the
    call then runs stepwise, correctly, and says why."""
    _need("persistent")
    p, kw = make_problem(6, 4, 5, 40, reset_after=reset_after, mask="random", rdm=True)
    _C.persistent_debug_oversubscribe(True)
    ref_args, ref_kw = prepare_args(p, kw, torch.float64, "cpu")
    expected = reference.gru(*[None if a is None else a.detach() for a in ref_args], **ref_kw)
    args, ckw = prepare_args(p, kw, torch.float32, "cuda")
    with dispatch.force_path("persistent"):
        out, state = gru(*args, **ckw)
        (out.sum() + state.sum()).backward()
    ran = dispatch.last_path()
    assert ran["forward"] == "stepwise" and "refused" in ran["forward_reason"], ran
    assert ran["backward"] == "stepwise" and "refused" in ran["backward_reason"], ran
    assert_close_rel(out, expected[0], TOL[torch.float32][0], "outputs")
    assert_close_rel(state, expected[1], TOL[torch.float32][0], "final_state")


@requires_persistent
def test_forced_stepwise_and_auto_agree_with_explain():
    p, kw = make_problem(5, 4, 3, 48, reset_after=True)
    args, ckw = prepare_args(p, kw, torch.float32, "cuda")
    with dispatch.force_path("stepwise"), torch.no_grad():
        gru(*args, **ckw)
    assert dispatch.last_path()["forward"] == "stepwise"
    with torch.no_grad():
        gru(*args, **ckw)
    assert dispatch.last_path()["forward"] == dispatch.explain(4, 5, 48, 3)["path"]


@requires_persistent
@pytest.mark.parametrize("kind", ["counter", "grid_sync", "cluster"])
def test_barrier_benchmark_runs(kind):
    if kind == "cluster":
        _need("persistent_cluster")
    us = _C.persistent_barrier_latency_us(torch.cuda.current_device(), kind, 0, 200)
    assert 0.0 < us < 100.0
