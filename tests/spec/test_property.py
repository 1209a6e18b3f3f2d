"""Property tests (hypothesis): the fused op against the executable spec gru_cuda.reference.gru.

Shapes (including B = 0, T = 0, T = 1 and odd units), every option and every fused activation
pair are drawn by hypothesis; tensor values come from a torch generator seeded by a drawn
integer, so they are continuous random numbers, never hand-crafted edge values (those are the
fuzz tests' job). Forward outputs, final states and all gradients are compared:
float64 at ~1e-10, float32 at ~1e-5 relative (against the float64 reference on the same
float32-rounded inputs).

The runs are reproducible: derandomize=True, no example database.
"""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, assume, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from gru_cuda import reference  # noqa: E402
from gru_cuda.activations import FUSED_NAMES  # noqa: E402
from gru_cuda.functional import gru  # noqa: E402
from problems import make_problem  # noqa: E402

# Every fused activation, for both slots. Unbounded pairs (exponential gates, ...) can overflow;
# such draws are discarded with assume() (about 2 % of them).
FUSED = list(FUSED_NAMES)

CI_SETTINGS = dict(deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@st.composite
def gru_case(draw):
    reset_after = draw(st.booleans())
    case = dict(
        B=draw(st.sampled_from([0, 1, 2, 3, 5])),
        T=draw(st.sampled_from([0, 1, 2, 3, 6])),
        F=draw(st.integers(1, 5)),
        H=draw(st.sampled_from([1, 2, 3, 5, 7])),
        reset_after=reset_after,
        go_backwards=draw(st.booleans()),
        time_major=draw(st.booleans()),
        use_bias=draw(st.booleans()),
        use_h0=draw(st.booleans()),
        mask=draw(st.sampled_from([None, "random", "all_false", "prefix"])),
        zero_output_for_mask=draw(st.booleans()),
        input_dropout=draw(st.sampled_from([None, "shared", "per_gate"])),
        recurrent_dropout=draw(st.booleans()),
        activation=draw(st.sampled_from(FUSED)),
        recurrent_activation=draw(st.sampled_from(FUSED)),
        seed=draw(st.integers(0, 2**31 - 1)),
    )
    return case


def _make(case, dtype, requires_grad=True):
    g = torch.Generator().manual_seed(case["seed"])
    B, T, H = case["B"], case["T"], case["H"]
    # Small weights keep unbounded activations (exponential, relu, linear, ...) finite.
    (x, kernel, rec, bias, h0), kw = make_problem(
        B=B, T=T, F=case["F"], H=H, reset_after=case["reset_after"], bias=case["use_bias"],
        initial_state=case["use_h0"], time_major=case["time_major"], dtype=dtype,
        mask={None: False, "prefix": "right_padded"}.get(case["mask"], case["mask"]),
        input_dropout=case["input_dropout"], recurrent_dropout=case["recurrent_dropout"],
        scale=0.4, bias_scale=0.3, state_scale=0.5, keep=0.75, generator=g)
    mask = kw.get("mask")
    idm, rdm = kw.get("input_dropout_mask"), kw.get("recurrent_dropout_mask")

    def rnd(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)

    grads = [t for t in (x, kernel, rec, bias, h0) if t is not None]
    for t in grads:
        t.requires_grad_(requires_grad)
    out_shape = (T, B, H) if case["time_major"] else (B, T, H)
    cot = (rnd(*out_shape), rnd(B, H))  # cotangents of (outputs, final_state)
    args = (x, kernel, rec, bias, h0)
    kwargs = dict(reset_after=case["reset_after"], activation=case["activation"],
                  recurrent_activation=case["recurrent_activation"],
                  go_backwards=case["go_backwards"], time_major=case["time_major"], mask=mask,
                  zero_output_for_mask=case["zero_output_for_mask"], input_dropout_mask=idm,
                  recurrent_dropout_mask=rdm)
    return args, kwargs, grads, cot


def _run(fn, args, kwargs, grads, cot):
    out, state = fn(*args, **kwargs)
    loss = (out * cot[0].to(out.dtype)).sum() + (state * cot[1].to(state.dtype)).sum()
    if loss.requires_grad:
        gs = torch.autograd.grad(loss, grads, allow_unused=True)
    else:  # zero-size outputs: nothing depends on the inputs
        gs = (None,) * len(grads)
    gs = tuple(torch.zeros_like(t) if g is None else g for g, t in zip(gs, grads))
    return (out.detach(), state.detach()) + gs


def _to64(args):
    return tuple(None if t is None else t.detach().to(torch.float64).requires_grad_()
                 for t in args)


def _compare(case, dtype, rtol, atol_scale):
    args, kwargs, grads, cot = _make(case, dtype)
    args64 = _to64(args)
    kw64 = dict(kwargs)
    for k in ("input_dropout_mask", "recurrent_dropout_mask"):
        if kw64[k] is not None:
            kw64[k] = kw64[k].to(torch.float64)
    grads64 = [t for t in args64 if t is not None]
    want = _run(reference.gru, args64, kw64, grads64, cot)
    # Unbounded activation pairs (exponential gates, ...) can overflow even with small weights;
    # such runs compare infinities, not arithmetic. Bounded pairs never get here.
    assume(all(bool(torch.isfinite(w).all()) and w.abs().max().item() < 1e6
               for w in want if w.numel()))

    got = _run(gru, args, kwargs, grads, cot)

    names = ["outputs", "final_state", "grad_x", "grad_kernel", "grad_recurrent_kernel"]
    names += (["grad_bias"] if case["use_bias"] else []) + (["grad_h0"] if case["use_h0"] else [])
    assert len(got) == len(want) == len(names)
    for name, g, w in zip(names, got, want):
        assert g.dtype == dtype, (name, g.dtype)
        assert g.shape == w.shape, (name, g.shape, w.shape)
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        torch.testing.assert_close(g.to(torch.float64), w, rtol=rtol, atol=atol_scale * scale,
                                   msg=lambda m: f"{name} differs for {case}: {m}")


@settings(max_examples=2500, **CI_SETTINGS)
@given(case=gru_case())
def test_matches_reference_float64(case):
    _compare(case, torch.float64, rtol=1e-10, atol_scale=1e-10)


@settings(max_examples=1500, **CI_SETTINGS)
@given(case=gru_case())
def test_matches_reference_float32(case):
    _compare(case, torch.float32, rtol=1e-5, atol_scale=1e-5)


@settings(max_examples=200, **CI_SETTINGS)
@given(case=gru_case())
def test_no_grad_forward_equals_grad_forward(case):
    """save_for_backward=False (inference) computes the same numbers as the training path."""
    args, kwargs, _, _ = _make(case, torch.float64, requires_grad=False)
    with torch.no_grad():
        out_a, h_a = gru(*args, **kwargs)
    args_g = tuple(None if t is None else t.clone().requires_grad_() for t in args)
    out_b, h_b = gru(*args_g, **kwargs)
    # Bit-identical (overflowing activation pairs give the same inf/nan in both).
    for a, b in ((out_a, out_b.detach()), (h_a, h_b.detach())):
        torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)


def test_strategy_covers_edge_shapes():
    """The strategy really produces the edge shapes the module docstring promises."""
    seen = set()

    @settings(max_examples=300, **CI_SETTINGS)
    @given(case=gru_case())
    def collect(case):
        if case["B"] == 0:
            seen.add("B=0")
        if case["T"] == 0:
            seen.add("T=0")
        if case["T"] == 1:
            seen.add("T=1")
        if case["H"] % 2 == 1:
            seen.add("odd H")
        if case["input_dropout"] == "per_gate" and case["recurrent_dropout"]:
            seen.add("all dropout")

    collect()
    assert seen == {"B=0", "T=0", "T=1", "odd H", "all dropout"}
