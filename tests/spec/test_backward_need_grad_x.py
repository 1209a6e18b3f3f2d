"""gru_backward's need_grad_x: when x is data (a training step's input) autograd asks the op not
to form grad_x; the op returns an empty grad_x, skips its product, and every other gradient is
the same as with grad_x."""
import pytest
import torch

from compare import assert_close_rel
from problems import leaf_copies, make_problem, op_backward_args, run_with_grads
import gru_cuda.ops
from gru_cuda import functional, reference

CASES = [dict(reset_after=True), dict(reset_after=False, mask=True),
         dict(reset_after=True, input_dropout=3, recurrent_dropout=True),
         dict(reset_after=False, input_dropout=1)]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
def test_op_skips_grad_x(case):
    problem = make_problem(B=5, T=4, F=3, H=6, **case)
    args = op_backward_args(problem, generator=torch.Generator().manual_seed(3))
    xt = args[2]
    full = torch.ops.gru_cuda.gru_backward(*args)
    skipped = torch.ops.gru_cuda.gru_backward(*args, False)
    assert full[0].shape == xt.shape and skipped[0].shape == (0,)
    for a, e in zip(skipped[1:], full[1:]):
        torch.testing.assert_close(a, e, rtol=0, atol=0)
    torch.library.opcheck(torch.ops.gru_cuda.gru_backward.default, (*args, False))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("x_requires_grad", [False, True])
def test_autograd_passes_need_grad_x(reset_after, x_requires_grad, monkeypatch):
    # What autograd asks of the op, float32 (the raw-product CPU path): need_grad_x is whether x
    # requires a gradient.
    seen = []

    def recording(*args):
        seen.append(args[-1])
        return real(*args)

    real = gru_cuda.ops.gru_backward
    monkeypatch.setattr(gru_cuda.ops, "gru_backward", recording)
    (x, k, u, b, h0), kw = make_problem(B=9, T=5, F=4, H=8, reset_after=reset_after,
                                        dtype=torch.float32)
    x.requires_grad_(x_requires_grad)
    params = leaf_copies([k, u, b, h0])
    out, st = functional.gru(x, *params, **kw)
    (out.sum() + st.sum()).backward()
    assert seen == [x_requires_grad]
    assert (x.grad is not None) == x_requires_grad


@pytest.mark.parametrize("reset_after", [True, False])
def test_autograd_with_data_input(reset_after):
    (x, k, u, b, h0), kw = make_problem(B=9, T=5, F=4, H=8, reset_after=reset_after, mask=True)
    leaves = leaf_copies([k, u, b, h0])
    out, st, grads = run_with_grads(lambda *a, **kw_: functional.gru(x, *a, **kw_), leaves, kw)
    out_r, st_r, grads_r = run_with_grads(lambda *a, **kw_: reference.gru(x, *a, **kw_),
                                          leaf_copies([k, u, b, h0]), kw)
    assert x.grad is None and not x.requires_grad
    for name, a, e in zip(["kernel", "recurrent_kernel", "bias", "initial_state"], grads, grads_r):
        assert_close_rel(a, e, 1e-9, f"grad {name}")
