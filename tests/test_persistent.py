"""The persistent CUDA paths (csrc/kernels/persistent_*, csrc/cuda/gru_persistent_dispatch.cpp)
and gru_cuda.dispatch.

CPU part, runs everywhere: gru_cuda.dispatch on a CPU device or a CPU-only build, and the
capacity model through gru_cuda._C.persistent_plan (a what-if for published H100 and A100
figures) when the build has it.

CUDA part, skipped cleanly without a GPU and a CUDA build with the persistent kernels: every
option of the functional API forced onto each persistent path against the float64 reference
(gru_cuda.reference on the CPU), gradients included; sizes around the capacity boundaries; odd
sizes (H not a multiple of 32, B = 1, T = 1, long T); every fused activation (the run-time
activation kernel); determinism; a refused cooperative launch falling back to stepwise; CUDA
graph capture. Under compute-sanitizer run a subset, e.g. `-k "plain or shapes"`.
"""

import pytest
import torch

import gru_cuda
from gru_cuda import dispatch, reference
from gru_cuda._library import _C
from gru_cuda.activations import FUSED_NAMES
from gru_cuda.functional import gru

from conftest import assert_close_rel
from cuda_problems import ARG_NAMES, make_problem, prepare_args

CUDA = torch.cuda.is_available() and gru_cuda.build_info()["cuda"]
PERSISTENT_BUILT = CUDA and hasattr(_C, "persistent_set_path")
HAS_MODEL = hasattr(_C, "persistent_plan")
PERSISTENT_PATHS = ("persistent", "persistent_cluster")

requires_persistent = pytest.mark.skipif(
    not PERSISTENT_BUILT, reason="needs a CUDA GPU and a CUDA build with the persistent kernels")
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
    assert set(r) == {"forward", "forward_reason", "backward", "backward_reason"}


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
# CUDA part
# =============================================================================================

TOL = {  # (forward, gradient), relative to max(|reference|, 1)
    torch.float32: (2e-5, 5e-5),
    torch.float16: (1e-2, 1.5e-2),
    torch.bfloat16: (2e-2, 3e-2),
}
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


def _run(fn, args, kw, grad_out, grad_state, grads=True):
    out, state = fn(*args, **kw)
    leaves = [a for a in args if a is not None]
    if not grads:
        return out, state, []
    loss = (out * grad_out.to(out)).sum() + (state * grad_state.to(state)).sum()
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, state, [torch.zeros_like(a) if g is None else g for a, g in zip(leaves, gs)]


def check_path(p, kw, dtype, path, *, grads=True, **options):
    """`path` forced, in `dtype` on the GPU, vs the float64 CPU reference; checks that the
    forward (and backward) really ran on `path`."""
    ref_args, ref_kw = prepare_args(p, kw, torch.float64, "cpu")
    r_probe = reference.gru(*[None if a is None else a.detach() for a in ref_args], **ref_kw,
                            **options)
    grad_out = torch.randn(r_probe[0].shape, dtype=torch.float64)
    grad_state = torch.randn(r_probe[1].shape, dtype=torch.float64)
    r_out, r_state, r_grads = _run(lambda *a, **k: reference.gru(*a, **k, **options), ref_args,
                                   ref_kw, grad_out, grad_state, grads)
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    with dispatch.force_path(path):
        c_out, c_state, c_grads = _run(lambda *a, **k: gru(*a, **k, **options), args, ckw,
                                       grad_out.cuda(), grad_state.cuda(), grads)
        torch.cuda.synchronize()
    ran = dispatch.last_path()
    assert ran["forward"] == path, ran
    if grads:
        assert ran["backward"] == path, ran
    tol_f, tol_g = TOL[dtype]
    assert_close_rel(c_out, r_out, tol_f, "outputs")
    assert_close_rel(c_state, r_state, tol_f, "final_state")
    names = [n for n, a in zip(ARG_NAMES, ref_args) if a is not None]
    for n, c, r in zip(names, c_grads, r_grads):
        assert c.dtype == dtype, n
        assert_close_rel(c, r, tol_g, f"grad {n}")
    return c_out, c_state, c_grads


SCENARIOS = {
    "plain": dict(),
    "go_backwards": dict(options=dict(go_backwards=True)),
    "time_major": dict(problem=dict(time_major=True)),
    "no_bias": dict(problem=dict(bias=False)),
    "no_initial_state": dict(problem=dict(h0=False)),
    "mask": dict(problem=dict(mask="random")),
    "mask_zero_output": dict(problem=dict(mask="random"), options=dict(zero_output_for_mask=True)),
    "right_padded_backwards": dict(problem=dict(mask="right_padded"),
                                   options=dict(go_backwards=True)),
    "left_padded_zero_output": dict(problem=dict(mask="left_padded"),
                                    options=dict(zero_output_for_mask=True)),
    "input_dropout_shared": dict(problem=dict(idm="shared")),
    "input_dropout_per_gate": dict(problem=dict(idm="per_gate")),
    "recurrent_dropout": dict(problem=dict(rdm=True)),
    "everything": dict(problem=dict(mask="random", idm="per_gate", rdm=True, time_major=True),
                       options=dict(go_backwards=True)),
    "everything_zero_output_no_bias": dict(
        problem=dict(mask="random", idm="shared", rdm=True, bias=False),
        options=dict(go_backwards=True, zero_output_for_mask=True)),
}


@requires_persistent
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
@pytest.mark.parametrize("dtype", list(TOL), ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_options_against_reference(scenario, reset_after, dtype, path):
    _need(path)
    s = SCENARIOS[scenario]
    p, kw = make_problem(7, 5, 6, 37, reset_after=reset_after, **s.get("problem", {}))
    check_path(p, kw, dtype, path, **s.get("options", {}))


@requires_persistent
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("role", ["activation", "recurrent_activation"])
@pytest.mark.parametrize("name", FUSED_NAMES)
def test_every_activation(name, role, reset_after, path):
    _need(path)
    other = {"activation": "tanh", "recurrent_activation": "sigmoid"}
    other[role] = name
    bounded = ("sigmoid", "hard_sigmoid", "tanh", "softsign")
    scale = 0.1 if role == "recurrent_activation" and name not in bounded else 0.3
    p, kw = make_problem(6, 3, 4, 9, reset_after=reset_after, mask="random", rdm=True,
                         scale=scale)
    check_path(p, kw, torch.float32, path, **other)


# (T, B, F, H): H not a multiple of 32 or of 4, B = 1, T = 1, several batch tiles with a
# remainder below 8 rows, long T.
SHAPES = [(1, 1, 3, 5), (3, 1, 2, 33), (1, 4, 5, 1), (9, 2, 1, 65), (4, 300, 3, 7),
          (5, 70, 4, 130), (2, 9, 3, 257), (600, 2, 3, 16)]


@requires_persistent
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("T,B,F,H", SHAPES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
def test_shapes(T, B, F, H, reset_after, path, dtype):
    _need(path)
    with dispatch.force_path(path):
        plan = dispatch.explain(B, T, H, F, dtype=dtype, reset_after=reset_after,
                                recurrent_dropout=True)
    if plan["path"] != path or plan["backward_path"] != path:
        pytest.skip(f"{path} does not fit this shape: {plan['reason']}")
    p, kw = make_problem(T, B, F, H, reset_after=reset_after, mask="random", rdm=True,
                         scale=0.5 if T < 100 else 0.3)
    check_path(p, kw, dtype, path)


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
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_deterministic(path, dtype, reset_after):
    _need(path)
    p, kw = make_problem(40, 19, 8, 72, reset_after=reset_after, mask="random", rdm=True,
                         idm="per_gate")
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    grad_out = torch.randn(19, 40, 72, dtype=torch.float64).cuda()
    grad_state = torch.randn(19, 72, dtype=torch.float64).cuda()
    with dispatch.force_path(path):
        first = _run(gru, args, ckw, grad_out, grad_state)
        second = _run(gru, args, ckw, grad_out, grad_state)
    assert dispatch.last_path()["forward"] == path
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])
    for a, b in zip(first[2], second[2]):
        assert torch.equal(a, b)


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
@pytest.mark.parametrize("path", PERSISTENT_PATHS)
def test_cuda_graph_capture(path):
    _need(path)
    p, kw = make_problem(12, 4, 5, 40, reset_after=True, mask="random")
    args, ckw = prepare_args(p, kw, torch.float32, "cuda")
    args = [None if a is None else a.detach() for a in args]
    with dispatch.force_path(path), torch.no_grad():
        eager = gru(*args, **ckw)
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            gru(*args, **ckw)  # warm-up outside the capture
        torch.cuda.current_stream().wait_stream(stream)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = gru(*args, **ckw)
        graph.replay()
        torch.cuda.synchronize()
    assert torch.equal(captured[0], eager[0]) and torch.equal(captured[1], eager[1])


@requires_persistent
@pytest.mark.parametrize("kind", ["counter", "grid_sync", "cluster"])
def test_barrier_benchmark_runs(kind):
    if kind == "cluster":
        _need("persistent_cluster")
    us = _C.persistent_barrier_latency_us(torch.cuda.current_device(), kind, 0, 200)
    assert 0.0 < us < 100.0
