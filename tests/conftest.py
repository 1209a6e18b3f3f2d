"""Shared test helpers: random GRU problems and comparison utilities."""
import os

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")


def cuda_ready() -> bool:
    import gru_cuda
    return torch.cuda.is_available() and gru_cuda.build_info()["cuda"]


CUDA_SKIP_REASON = "needs a CUDA GPU and a CUDA build of gru_cuda"

# The one marker of GPU-only tests: it marks them (`pytest -m cuda` selects exactly these) and,
# through pytest_collection_modifyitems below, skips them where cuda_ready() is False. Tests may
# also be marked with pytest.mark.cuda directly (e.g. in pytest.param(..., marks=...)).
requires_cuda = pytest.mark.cuda


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


def make_problem(*, B=3, T=5, F=4, H=6, reset_after=True, bias=True, initial_state=True,
                 mask=False, input_dropout=0, recurrent_dropout=False, time_major=False,
                 dtype=torch.float64, device="cpu", scale=0.5, generator=None):
    """Fresh random inputs for gru(): returns (args tuple, kwargs dict of tensor options)."""
    g = generator
    opts = dict(dtype=dtype, device=device)

    def randn(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(**opts)

    def rand(*shape):
        return torch.rand(*shape, generator=g, dtype=torch.float64).to(device)

    x = randn(T, B, F) if time_major else randn(B, T, F)
    kernel = randn(F, 3 * H) * scale
    recurrent_kernel = randn(H, 3 * H) * scale
    b = None
    if bias:
        b = randn(2, 3 * H) * scale if reset_after else randn(3 * H) * scale
    h0 = randn(B, H) if initial_state else None
    kw = {"reset_after": reset_after, "time_major": time_major}
    if mask:
        m = rand(T, B) > 0.35 if time_major else rand(B, T) > 0.35
        kw["mask"] = m
    if input_dropout == 1:
        kw["input_dropout_mask"] = ((rand(B, F) > 0.3) / 0.7).to(**opts)
    elif input_dropout == 3:
        kw["input_dropout_mask"] = ((rand(3, B, F) > 0.3) / 0.7).to(**opts)
    if recurrent_dropout:
        kw["recurrent_dropout_mask"] = ((rand(3, B, H) > 0.3) / 0.7).to(**opts)
    return (x, kernel, recurrent_kernel, b, h0), kw


def leaf_copies(args, dtype=None):
    """Independent leaves (requires_grad) of the tensor args, optionally cast."""
    out = []
    for a in args:
        if a is None:
            out.append(None)
        else:
            t = a.detach().clone()
            if dtype is not None:
                t = t.to(dtype)
            out.append(t.requires_grad_(True))
    return out


def run_with_grads(fn, args, kw, grad_out=None, grad_state=None, seed=0):
    """Runs fn(*args, **kw) and returns (outputs, state, grads of the non-None args) for a
    random cotangent fixed by `seed` (the same for every implementation)."""
    outputs, state = fn(*args, **kw)
    g = torch.Generator().manual_seed(seed)
    if grad_out is None:
        grad_out = torch.randn(outputs.shape, generator=g, dtype=torch.float64)
    if grad_state is None:
        grad_state = torch.randn(state.shape, generator=g, dtype=torch.float64)
    loss = (outputs * grad_out.to(outputs)).sum() + (state * grad_state.to(state)).sum()
    leaves = [a for a in args if a is not None]
    grads = torch.autograd.grad(loss, leaves, allow_unused=True)
    return outputs, state, grads


def assert_close_rel(actual, expected, rtol, name="", atol_floor=None):
    """|actual - expected| <= rtol * max(|expected|.max(), 1) elementwise, in float64."""
    a = actual.detach().to(torch.float64).cpu()
    e = expected.detach().to(torch.float64).cpu()
    assert a.shape == e.shape, f"{name}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    scale = max(e.abs().max().item() if e.numel() else 0.0, 1.0)
    tol = rtol * scale if atol_floor is None else max(rtol * scale, atol_floor)
    err = (a - e).abs().max().item() if e.numel() else 0.0
    assert err <= tol, f"{name}: max abs error {err:.3e} > {tol:.3e} (scale {scale:.3e})"


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Fresh random inputs on every run, reproducible with GRU_TEST_SEED=<seed>."""
    seed = int(os.environ.get("GRU_TEST_SEED", torch.seed() % (2**31)))
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call" and rep.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            rep.sections.append(("seed", f"reproduce with GRU_TEST_SEED={seeds[0]}"))
    return rep
