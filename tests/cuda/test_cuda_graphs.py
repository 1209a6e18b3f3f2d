"""CUDA-graph capture of the op on every forced kernel path: stepwise (GEMMs + pointwise kernels
per step), persistent (one cudaLaunchCooperativeKernel) and persistent_cluster (one
cudaLaunchKernelEx with a cluster dimension).

Each test forces the path (the `path` fixture), captures under torch.cuda.graph after a warm-up
on a side stream, checks with dispatch.last_path that the captured call used that path (the
choice is made on the host, at capture time, and baked into the graph), then copies new inputs
into the static tensors, replays, and compares the replay with an eager call on the same data
and with the float64 reference. Covered: the raw forward op (with and without saved tensors),
the raw backward op, and forward + backward through autograd captured together.

Expected behaviour where a launch cannot be captured: the launcher returns the CUDA error and
the op raises RuntimeError (C10_CUDA_CHECK), which ends the capture; it never skips the launch
or falls back silently (a fallback would show in last_path). CUDA 12 captures cooperative and
cluster launches (they become kernel nodes with the cooperative / cluster-dimension
attributes), so these tests expect the capture to succeed and report the error otherwise. A
replay that never finishes (a grid barrier whose CTAs were not made co-resident) would hang the
process; _wait() turns that into a message and an exit instead.
"""
import os
import sys
import time

import pytest
import torch

from gru_cuda import dispatch
from gru_cuda.activations import FUSED_IDS
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from cuda_problems import (ARG_NAMES, CUDA_PATHS, TOL, assert_ran, clear_last_path, make_problem,
                           prepare_args, reference_run)

pytestmark = [requires_cuda]

RESET = pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
# (T, B, F, H): H = 40 gives the grid path 10 CTAs of 4 units and the cluster path clusters of
# 10 CTAs, B = 6 several clusters (one per batch tile).
SIZES = (12, 6, 5, 40)


@pytest.fixture(autouse=True)
def _exact_fp32():
    saved = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = saved
    dispatch.set_path(None)


def _wait(what, timeout_s=60.0):
    """Waits for the current stream. A hung persistent kernel cannot be stopped from here:
    rather than hang the test run, say so and end the process."""
    done = torch.cuda.Event()
    done.record()
    deadline = time.monotonic() + timeout_s
    while not done.query():
        if time.monotonic() > deadline:
            sys.stderr.write(f"\ntest_cuda_graphs: {what} did not finish within {timeout_s:.0f} s "
                             "(a persistent kernel spinning at a barrier?); exiting\n")
            sys.stderr.flush()
            os._exit(3)
        time.sleep(0.001)


def _capture(path, fn):
    """Warm-up on a side stream, then fn() captured into a new graph; returns (graph, result).
    Asserts that the captured call ran on `path`."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # lazy init (cuBLAS handles, workspaces, kernel attributes)
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    _wait(f"the {path} warm-up")
    clear_last_path()
    graph = torch.cuda.CUDAGraph()
    try:
        with torch.cuda.graph(graph):
            result = fn()
    except RuntimeError as e:
        pytest.fail(f"capturing the {path} path raised instead of capturing: {e}")
    return graph, result


def _refill(t):
    """New random values into a static tensor, in place (bool: a new random mask)."""
    with torch.no_grad():
        if t.dtype == torch.bool:
            t.copy_(torch.rand(t.shape, device=t.device) > 0.4)
        else:
            t.copy_(torch.randn(t.shape, device=t.device, dtype=torch.float64).to(t.dtype) * 0.5)


def _static_problem(reset_after, dtype=torch.float32):
    T, B, F, H = SIZES
    p, kw = make_problem(T, B, F, H, reset_after=reset_after, mask="random", rdm=True,
                         idm="shared", time_major=True)
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    return [a.detach().clone() for a in args], {k: (v.clone() if isinstance(v, torch.Tensor) else v)
                                                 for k, v in ckw.items()}


def _as_problem(static, static_kw):
    """The static tensors' current values as a float64 problem for reference_run."""
    p = {n: a.detach().double().cpu() for n, a in zip(ARG_NAMES, static)}
    kw = {k: (v.cpu().double() if isinstance(v, torch.Tensor) and v.is_floating_point()
              else v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in static_kw.items()}
    return p, kw


@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
@RESET
@pytest.mark.parametrize("save", [False, True], ids=["inference", "training"])
def test_capture_forward(path, reset_after, save):
    static, skw = _static_problem(reset_after)
    ids = FUSED_IDS["tanh"], FUSED_IDS["sigmoid"]

    def call():
        x, k, u, b, h0 = static
        return torch.ops.gru_cuda.gru_forward(
            x, k, u, b, h0, skw["mask"], skw["input_dropout_mask"], skw["recurrent_dropout_mask"],
            reset_after, *ids, True, False, save)

    graph, captured = _capture(path, call)
    assert_ran(path, backward=False)
    for _ in range(2):  # new data each time: the replay reads the static inputs, not a copy
        for t in (static[0], static[4], skw["mask"]):
            _refill(t)
        graph.replay()
        _wait(f"the {path} forward replay")
        clear_last_path()
        eager = call()
        assert_ran(path, backward=False)
        # Not bitwise: cuBLAS may pick another workspace on the capture stream.
        for c, e in zip(captured, eager):
            torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6)
        p, kw = _as_problem(static, skw)
        r_out, r_state, _, _, _ = reference_run(p, kw, grads=False, go_backwards=True)
        assert_close_rel(captured[0], r_out, TOL[torch.float32][0], "outputs")
        assert_close_rel(captured[1], r_state, TOL[torch.float32][0], "final_state")


@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
@RESET
def test_capture_backward(path, reset_after):
    """The raw backward captured after an eager forward; replays with new output gradients."""
    static, skw = _static_problem(reset_after)
    x, k, u, b, h0 = static
    ids = FUSED_IDS["tanh"], FUSED_IDS["sigmoid"]
    masks = skw["mask"], skw["input_dropout_mask"], skw["recurrent_dropout_mask"]
    outs = torch.ops.gru_cuda.gru_forward(x, k, u, b, h0, *masks, reset_after, *ids, False,
                                          False, True)
    gY = torch.randn_like(outs[0])
    gS = torch.randn_like(outs[1])

    def call():
        return torch.ops.gru_cuda.gru_backward(gY, gS, x, k, u, h0, outs[2], outs[3], *masks, True,
                                               reset_after, *ids, False, False)

    graph, captured = _capture(path, call)
    assert_ran(path, forward=False)
    p, kw = _as_problem(static, skw)
    for _ in range(2):
        _refill(gY)
        _refill(gS)
        graph.replay()
        _wait(f"the {path} backward replay")
        clear_last_path()
        eager = call()
        assert_ran(path, forward=False)
        for c, e in zip(captured, eager):
            torch.testing.assert_close(c, e, rtol=1e-6, atol=1e-6)
        _, _, r_grads, _, _ = reference_run(p, kw, gY.double().cpu(), gS.double().cpu())
        for name, c, r in zip(("x", "kernel", "recurrent_kernel", "bias", "h0"), captured, r_grads):
            assert_close_rel(c, r, TOL[torch.float32][1], f"grad {name}")


@pytest.mark.parametrize("path", CUDA_PATHS, indirect=True)
@RESET
def test_capture_autograd_forward_backward(path, reset_after):
    """gru_cuda.functional.gru forward and its backward (autograd) captured in one graph, as a
    whole training step would be; replayed on new inputs copied into the static tensors."""
    static, skw = _static_problem(reset_after)
    leaves = [a.requires_grad_(True) for a in static]
    T, B, F, H = SIZES
    gY = torch.randn(T, B, H, device="cuda")
    gS = torch.randn(B, H, device="cuda")

    def step():
        out, state = gru(*leaves, **skw)
        loss = (out * gY).sum() + (state * gS).sum()
        return (out.detach(), state.detach()) + torch.autograd.grad(loss, leaves)

    graph, captured = _capture(path, step)
    assert_ran(path)
    for _ in range(2):
        for t in (static[0], static[4], skw["mask"], gY):
            _refill(t)
        graph.replay()
        _wait(f"the {path} forward + backward replay")
        clear_last_path()
        eager = step()
        assert_ran(path)
        for c, e in zip(captured, eager):
            torch.testing.assert_close(c, e, rtol=1e-5, atol=1e-5)
        p, kw = _as_problem(static, skw)
        r_out, r_state, r_grads, _, _ = reference_run(p, kw, gY.double().cpu(), gS.double().cpu())
        tol_f, tol_g = TOL[torch.float32]
        assert_close_rel(captured[0], r_out, tol_f, "outputs")
        assert_close_rel(captured[1], r_state, tol_f, "final_state")
        for name, c, r in zip(("x", "kernel", "recurrent_kernel", "bias", "h0"), captured[2:],
                              r_grads):
            assert_close_rel(c, r, tol_g, f"grad {name}")
