"""The CPU backward op reads a batch-major x and output gradient (the (T, B, C) views of
contiguous (B, T, C) tensors that functional.gru passes) in place and returns grad_x in x's
layout: every gradient equals the time-major call's, grad_x has x's strides, and the fake
kernel says the same (opcheck)."""
import pytest
import torch

from problems import make_problem, op_backward_args

CASES = [dict(reset_after=True), dict(reset_after=False),
         dict(reset_after=True, mask=True, go_backwards=True),
         dict(reset_after=False, mask=True, go_backwards=True),
         dict(reset_after=True, input_dropout=3, recurrent_dropout=True),
         dict(reset_after=False, input_dropout=1, recurrent_dropout=True)]


def batch_major(t):
    """A (T, B, C) tensor with the same values, stored as a contiguous (B, T, C) tensor."""
    return t.transpose(0, 1).contiguous().transpose(0, 1)


def padded(t):
    """The same values in neither layout: every row padded to twice its width."""
    wide = torch.zeros(*t.shape[:2], 2 * t.shape[2], dtype=t.dtype)
    wide[:, :, : t.shape[2]] = t
    return wide[:, :, : t.shape[2]]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batch_major_backward(case, dtype):
    case = dict(case)
    go_backwards = case.pop("go_backwards", False)
    problem = make_problem(B=9, T=5, F=4, H=8, dtype=dtype, **case)  # 2 row blocks of 4+ rows
    args = op_backward_args(problem, go_backwards=go_backwards)
    gy, xt = args[0], args[2]
    want = torch.ops.gru_cuda.gru_backward(*args)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for x_in, gy_in in ((batch_major(xt), batch_major(gy)), (batch_major(xt), gy),
                        (xt, batch_major(gy)), (batch_major(xt), padded(gy))):
        args_in = (gy_in, args[1], x_in, *args[3:])
        got = torch.ops.gru_cuda.gru_backward(*args_in)
        for name, a, e in zip(("x", "kernel", "recurrent_kernel", "bias", "h0"), got, want):
            torch.testing.assert_close(a, e, rtol=tol, atol=tol, msg=f"grad {name}")
        assert got[0].stride() == x_in.stride()  # grad_x in x's layout
        torch.library.opcheck(torch.ops.gru_cuda.gru_backward.default, args_in)
