"""Random GRU problems (float64, CPU) for the CUDA tests, moving them to a device/dtype, and
running them on a forced kernel path against the float64 reference. Shared by the GPU tests
(test_cuda_ops.py, test_cuda_paths.py, test_cuda_graphs.py, test_persistent.py)."""
import functools

import pytest
import torch

import problems
from compare import assert_close_rel
from gru_cuda import dispatch, reference, selftest
from gru_cuda.functional import gru

ARG_NAMES = problems.ARG_NAMES


def make_problem(T, B, F, H, *, reset_after, bias=True, h0=True, mask=None, idm=None,
                 rdm=False, time_major=False, scale=0.5):
    """float64 CPU inputs by argument name (problems.make_problem with fan-in scaled kernels).
    mask: None, "random" (batch row 0 fully masked, row 1 all valid), "right_padded" or
    "left_padded"; idm: None, "shared" (B, F) or "per_gate" (3, B, F)."""
    args, kw = problems.make_problem(
        B=B, T=T, F=F, H=H, reset_after=reset_after, bias=bias, initial_state=h0,
        mask=mask or False, input_dropout=idm, recurrent_dropout=rdm, time_major=time_major,
        scale=scale, fan_in=True, bias_scale=0.6 * scale, state_scale=0.5, mask_keep=0.7)
    return dict(zip(ARG_NAMES, args)), kw


def prepare_args(p, kw, dtype, device):
    args = [None if p[n] is None else p[n].to(device=device, dtype=dtype).requires_grad_(True)
            for n in ARG_NAMES]
    kwc = {k: (v.to(device=device, dtype=dtype)
               if isinstance(v, torch.Tensor) and v.is_floating_point()
               else v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in kw.items()}
    return args, kwc


# ---- running on a forced kernel path (GPU tests) ------------------------------------------------
# Everything here is safe to import without a GPU; only calling it needs one.

CUDA_PATHS = dispatch.CUDA_PATHS  # ("stepwise", "persistent", "persistent_cluster")
PERSISTENT_PATHS = ("persistent", "persistent_cluster")

# (forward, gradient) tolerances, relative to max(|reference|, 1).
TOL = {
    torch.float64: (1e-10, 1e-9),
    torch.float32: (2e-5, 5e-5),
    torch.float16: (1e-2, 1.5e-2),
    torch.bfloat16: (2e-2, 3e-2),
}


def path_dtypes(paths=CUDA_PATHS, dtypes=tuple(TOL)):
    """pytest params (path, dtype) for the given paths and dtypes, float64 on stepwise only
    (the persistent kernels have no float64: test_float64_rejected_on_persistent_paths)."""
    return [pytest.param(p, d, id=f"{p}-{str(d).replace('torch.', '')}")
            for p in paths for d in dtypes if d != torch.float64 or p == "stepwise"]


def poison_allocator():
    """Leaves the caching allocator's free blocks filled with 0xFF bytes (NaN in every float
    dtype), so that an element a kernel forgets to write shows up as NaN."""
    selftest.poison_allocator(torch.device("cuda", torch.cuda.current_device()))


def clear_last_path():
    """Makes dispatch.last_path() report a run that no test forces (a tiny float64 forward and
    backward in automatic mode: "stepwise", with the float64 reason rather than "stepwise
    forced"), so that a later check sees what the call under test recorded, not what an
    earlier test left behind."""
    with dispatch.force_path(None):
        x = torch.zeros(1, 1, 1, dtype=torch.float64, device="cuda", requires_grad=True)
        k = torch.zeros(1, 3, dtype=torch.float64, device="cuda")
        u = torch.zeros(1, 3, dtype=torch.float64, device="cuda")
        out, state = gru(x, k, u)
        (out.sum() + state.sum()).backward()
    r = dispatch.last_path()
    for d in ("forward", "backward"):
        assert r[d] == "stepwise" and r[d + "_reason"] not in (None, "stepwise forced"), r


def assert_ran(path, forward=True, backward=True):
    """The last forward (and backward) ran on `path` itself, not a fallback."""
    r = dispatch.last_path()
    for d, wanted in (("forward", forward), ("backward", backward)):
        if not wanted:
            continue
        assert r[d] == path, (f"the {d} pass ran {r[d]!r} ({r[d + '_reason']}) instead of the "
                              f"forced {path!r}")
        if path == "stepwise":
            assert r[d + "_reason"] == "stepwise forced", r


@functools.lru_cache(maxsize=None)  # explain() costs ~10 ms (it also scans the unit limits)
def forced_plan(path, B, T, H, dtype, reset_after, rdm):
    """dispatch.explain with `path` forced: {"forward", "backward"} -> the path each pass would
    run ("error" where the forced path cannot run it and the op raises ValueError)."""
    with dispatch.force_path(path):
        r = dispatch.explain(B, T, H, dtype=dtype, reset_after=reset_after,
                             recurrent_dropout=rdm)
    return {"forward": r["path"], "backward": r["backward_path"], "reason": r["reason"],
            "backward_reason": r["backward_reason"], "capacity": r.get("capacity")}


def _run(fn, args, kw, grad_out, grad_state, grads=True):
    out, state = fn(*args, **kw)
    leaves = [a for a in args if a is not None]
    if not grads:
        return out, state, []
    loss = (out * grad_out.to(out)).sum() + (state * grad_state.to(state)).sum()
    gs = torch.autograd.grad(loss, leaves, allow_unused=True)
    return out, state, [torch.zeros_like(a) if g is None else g for a, g in zip(leaves, gs)]


def reference_run(p, kw, grad_out=None, grad_state=None, grads=True, **options):
    """The float64 CPU reference on the problem: (outputs, state, grads, grad_out, grad_state)
    for a random cotangent (drawn here when not given)."""
    ref_args, ref_kw = prepare_args(p, kw, torch.float64, "cpu")
    if grad_out is None:
        probe = reference.gru(*[None if a is None else a.detach() for a in ref_args], **ref_kw,
                              **options)
        grad_out = torch.randn(probe[0].shape, dtype=torch.float64)
        grad_state = torch.randn(probe[1].shape, dtype=torch.float64)
    out, state, gs = _run(lambda *a, **k: reference.gru(*a, **k, **options), ref_args, ref_kw,
                          grad_out, grad_state, grads)
    return out, state, gs, grad_out, grad_state


def problem_sizes(p, kw):
    x = p["x"]
    T, B = (x.shape[0], x.shape[1]) if kw["time_major"] else (x.shape[1], x.shape[0])
    return T, B, p["recurrent_kernel"].shape[0]


def check_against_reference(p, kw, dtype, path, *, grads=True, **options):
    """`path` forced, in `dtype` on the GPU, vs the float64 CPU reference: outputs, state and
    every gradient, with the allocator poisoned first. Asserts that the forward and backward
    ran on `path` (dispatch.last_path), and where the capacity model says the forced path
    cannot run a pass (float64, weights too large), that the op raises ValueError instead."""
    T, B, H = problem_sizes(p, kw)
    empty = T * B * H == 0  # the op returns before any kernel path: nothing to check there
    plan = forced_plan(path, B, T, H, dtype, kw["reset_after"],
                       kw.get("recurrent_dropout_mask") is not None)
    args, ckw = prepare_args(p, kw, dtype, "cuda")
    fn = lambda *a, **k: gru(*a, **k, **options)  # noqa: E731
    with dispatch.force_path(path):
        if not empty and plan["forward"] != path:
            assert plan["forward"] == "error", plan
            with pytest.raises(ValueError, match="cannot run"):
                with torch.no_grad():
                    fn(*args, **ckw)
            return None
        r_out, r_state, r_grads, grad_out, grad_state = reference_run(
            p, kw, grads=grads, **options)
        poison_allocator()
        clear_last_path()
        if not empty and grads and plan["backward"] != path:
            assert plan["backward"] == "error", plan
            out, state = fn(*args, **ckw)
            assert_ran(path, backward=False)
            with pytest.raises(ValueError, match="cannot run"):
                torch.autograd.grad((out.float().sum() + state.float().sum()),
                                    [a for a in args if a is not None])
            return None
        c_out, c_state, c_grads = _run(fn, args, ckw, grad_out.cuda(), grad_state.cuda(), grads)
        torch.cuda.synchronize()
    if not empty:
        assert_ran(path, backward=grads)
    assert c_out.device.type == "cuda" and c_out.dtype == dtype
    tol_f, tol_g = TOL[dtype]
    assert_close_rel(c_out, r_out, tol_f, "outputs")
    assert_close_rel(c_state, r_state, tol_f, "final_state")
    names = [n for n in ARG_NAMES if p[n] is not None]
    for n, c, r in zip(names, c_grads, r_grads):
        assert c.dtype == dtype, n
        assert_close_rel(c, r, tol_g, f"grad {n}")
    return c_out, c_state, c_grads
