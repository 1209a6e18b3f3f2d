"""The fused op against the float64 reference: every option combination, forward and all
gradients, both reset conventions, every fused activation, float32 and bfloat16."""
import itertools

import pytest
import torch

from problems import compare, make_problem
from gru_cuda import activations, functional, reference

OPTION_GRID = list(itertools.product(
    [True, False],   # reset_after
    [False, True],   # go_backwards
    [False, True],   # time_major
    [False, True],   # mask
    [False, True],   # zero_output_for_mask
    [0, 1, 3],       # input dropout: none, shared (B,F), per gate (3,B,F)
    [False, True],   # recurrent dropout
))


@pytest.mark.parametrize("reset_after,go_backwards,time_major,mask,zero_out,in_drop,rec_drop",
                         OPTION_GRID)
def test_every_option_float64(reset_after, go_backwards, time_major, mask, zero_out, in_drop,
                              rec_drop):
    problem = make_problem(reset_after=reset_after, time_major=time_major, mask=mask,
                           input_dropout=in_drop, recurrent_dropout=rec_drop)
    compare(problem, dict(go_backwards=go_backwards, zero_output_for_mask=zero_out))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("bias,initial_state", [(False, False), (False, True), (True, False)])
def test_without_bias_or_initial_state(reset_after, bias, initial_state):
    compare(make_problem(reset_after=reset_after, bias=bias, initial_state=initial_state,
                         mask=True), {})


# Each fused activation as the candidate activation and as the gate activation.
ACTIVATION_PAIRS = sorted({(a, "sigmoid") for a in activations.FUSED_NAMES}
                          | {("tanh", r) for r in activations.FUSED_NAMES}
                          | {("relu", "hard_sigmoid"), ("gelu", "silu"), ("softsign", "softsign")})


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("activation,recurrent_activation", ACTIVATION_PAIRS)
def test_activation_pairs(reset_after, activation, recurrent_activation):
    # Small weights, inputs and initial state keep unbounded pairs (an exponential update gate
    # feeds the state back through exp) in a sane range: at 0.3 about 1 seed in 12 overflowed to
    # inf in both implementations for some pair; at 0.2 none of 300 seeds x 52 pairs did.
    (x, k, u, b, h0), kw = make_problem(reset_after=reset_after, mask=True, recurrent_dropout=True,
                                        scale=0.2)
    problem = ((x * 0.2, k, u, b, h0 * 0.1), kw)
    compare(problem, dict(activation=activation, recurrent_activation=recurrent_activation),
            rtol=1e-9, grad_rtol=1e-9)


def test_aliases_and_none():
    problem = make_problem()
    compare(problem, dict(activation=None, recurrent_activation="swish"))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("options", [{}, dict(mask=True, input_dropout=3, recurrent_dropout=True)])
def test_float32_against_float64(reset_after, options):
    problem = make_problem(B=8, T=20, F=16, H=32, reset_after=reset_after, **options)
    compare(problem, dict(go_backwards=True), dtype=torch.float32, rtol=1e-5, grad_rtol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
def test_bfloat16_against_float64(reset_after):
    problem = make_problem(B=4, T=8, F=8, H=16, reset_after=reset_after, mask=True)
    compare(problem, {}, dtype=torch.bfloat16, rtol=2e-2, grad_rtol=3e-2)


def test_slow_path_callable_and_unfused_name():
    """A callable (or a Keras name with no fused kernel) runs on the reference path."""
    problem = make_problem(mask=True)
    args, kw = problem
    out_c, st_c = functional.gru(*args, **kw, activation=lambda v: torch.clamp(v, 0, 6))
    out_n, st_n = functional.gru(*args, **kw, activation="relu6")
    out_r, st_r = reference.gru(*args, **kw, activation=lambda v: torch.clamp(v, 0, 6))
    assert torch.equal(out_c, out_r) and torch.equal(st_c, st_r)
    assert torch.equal(out_n, out_r) and torch.equal(st_n, st_r)


def test_long_sequence_and_odd_sizes():
    compare(make_problem(B=1, T=97, F=3, H=33, mask=True), dict(go_backwards=True),
            rtol=1e-9, grad_rtol=1e-9)
    compare(make_problem(B=5, T=1, F=1, H=1), {})


def test_masked_semantics_by_hand():
    """Masked steps carry the state, repeat the previous output (zeros before the first
    valid step), or output zeros with zero_output_for_mask; the state stays non-zero."""
    (x, k, u, b, h0), _ = make_problem(B=2, T=4)
    mask = torch.tensor([[False, True, False, True], [True, True, False, False]])
    out, state = functional.gru(x, k, u, b, h0, mask=mask)
    assert torch.equal(out[0, 0], torch.zeros(6, dtype=out.dtype))  # before the first valid step
    assert torch.equal(out[0, 2], out[0, 1])
    assert torch.equal(out[1, 3], out[1, 1]) and torch.equal(out[1, 2], out[1, 1])
    assert torch.equal(state[1], out[1, 1]) and torch.equal(state[0], out[0, 3])
    out_z, state_z = functional.gru(x, k, u, b, h0, mask=mask, zero_output_for_mask=True)
    assert torch.equal(out_z[1, 3], torch.zeros(6, dtype=out.dtype))
    assert torch.equal(state_z, state) and state_z[1].abs().sum() > 0
    # A fully masked row keeps its initial state, outputs zeros.
    full = torch.zeros(2, 4, dtype=torch.bool)
    out_f, state_f = functional.gru(x, k, u, b, h0, mask=full)
    assert torch.equal(state_f, h0) and torch.equal(out_f, torch.zeros_like(out_f))


def test_go_backwards_is_processing_order():
    (x, k, u, b, h0), _ = make_problem()
    out_b, st_b = functional.gru(x, k, u, b, h0, go_backwards=True)
    out_f, st_f = functional.gru(x.flip(1), k, u, b, h0)
    torch.testing.assert_close(out_b, out_f, rtol=0, atol=1e-14)
    torch.testing.assert_close(st_b, st_f, rtol=0, atol=1e-14)
    assert torch.equal(st_b, out_b[:, -1])


def test_noncontiguous_inputs_match_contiguous():
    (x, k, u, b, h0), kw = make_problem(B=4, T=6, F=5, H=7, mask=True, recurrent_dropout=True)
    ref = functional.gru(x, k, u, b, h0, **kw)
    xn = x.transpose(0, 1).contiguous().transpose(0, 1)
    kn = k.t().contiguous().t()
    un = torch.empty(u.shape[0], 2 * u.shape[1], dtype=u.dtype)[:, ::2]
    un.copy_(u)
    bn = b.t().contiguous().t()
    hn = h0.t().contiguous().t()
    kw_n = dict(kw)
    kw_n["mask"] = kw["mask"].t().contiguous().t()
    rdm = kw["recurrent_dropout_mask"]
    kw_n["recurrent_dropout_mask"] = rdm.transpose(1, 2).contiguous().transpose(1, 2)
    assert not any(t.is_contiguous() for t in (xn, kn, un, hn))
    got = functional.gru(xn, kn, un, bn, hn, **kw_n)
    assert torch.equal(got[0], ref[0]) and torch.equal(got[1], ref[1])


def test_nan_stays_in_its_batch_row():
    (x, k, u, b, h0), _ = make_problem(B=4, T=5, mask=True)
    x = x.clone()
    x[2, 1, 0] = float("nan")
    mask = torch.ones(4, 5, dtype=torch.bool)
    mask[2, 3] = False
    out, state = functional.gru(x, k, u, b, h0, mask=mask)
    rows = [0, 1, 3]
    assert torch.isfinite(out[rows]).all() and torch.isfinite(state[rows]).all()
    assert torch.isnan(out[2, 1:]).all() and torch.isnan(state[2]).all()
    assert torch.isfinite(out[2, 0]).all()


def test_empty_sequence_and_empty_batch():
    (x, k, u, b, h0), _ = make_problem(T=0)
    x.requires_grad_(True)
    h0.requires_grad_(True)
    out, state = functional.gru(x, k, u, b, h0)
    assert out.shape == (3, 0, 6) and torch.equal(state, h0)
    state.sum().backward()
    assert torch.equal(h0.grad, torch.ones_like(h0))
    (x, k, u, b, h0), kw = make_problem(B=0, mask=True)
    k.requires_grad_(True)
    out, state = functional.gru(x, k, u, b, h0, **kw)
    assert out.shape == (0, 5, 6) and state.shape == (0, 6)
    out.sum().backward()
    assert torch.equal(k.grad, torch.zeros_like(k))


def test_outputs_do_not_alias_inputs():
    (x, k, u, b, h0), _ = make_problem(T=0)
    _, state = functional.gru(x, k, u, b, h0)
    assert state.data_ptr() != h0.data_ptr()
