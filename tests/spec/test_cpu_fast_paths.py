"""The CPU op's shortcuts: a batch-major input read in place with batch-major outputs (and a fake
kernel that says so), and bfloat16 products at sizes where they pay, against the float64
reference."""
import pytest
import torch

from compare import assert_close_rel
from problems import leaf_copies, make_problem, run_with_grads
from gru_cuda import activations, functional, reference


def batch_major_args(options, save=True, dtype=torch.float64):
    (x, k, u, b, h0), kw = make_problem(B=3, T=4, F=5, H=4, dtype=dtype, **options)
    ra = options.get("reset_after", True)
    mask = kw.get("mask")
    return (x.transpose(0, 1), k, u, b, h0, None if mask is None else mask.transpose(0, 1),
            kw.get("input_dropout_mask"), kw.get("recurrent_dropout_mask"), ra,
            activations.FUSED_IDS["tanh"], activations.FUSED_IDS["sigmoid"], False, False, save)


@pytest.mark.parametrize("options", [
    dict(reset_after=True),
    dict(reset_after=False, mask=True, input_dropout=3, recurrent_dropout=True),
    dict(reset_after=True, mask=True, input_dropout=1),
])
def test_batch_major_outputs_and_fake(options):
    args = batch_major_args(options)
    x = args[0]
    assert not x.is_contiguous()
    outputs = torch.ops.gru_cuda.gru_forward(*args)[0]
    # Written in place of the transpose: the batch-major tensor is contiguous.
    assert outputs.transpose(0, 1).is_contiguous() and not outputs.is_contiguous()
    same = torch.ops.gru_cuda.gru_forward(x.contiguous(), *args[1:])[0]
    assert same.is_contiguous()
    torch.testing.assert_close(outputs, same, rtol=0, atol=0)
    # opcheck compares the fake kernel's strides with the real ones.
    torch.library.opcheck(torch.ops.gru_cuda.gru_forward.default, args)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask", [False, True])
def test_bfloat16_large_products_against_float64(reset_after, mask):
    # Large enough (B * H * 3H and T * B * F * 3H above 2^21 multiply-adds) for the bfloat16
    # products on CPUs with bfloat16 dot products; the float32 products elsewhere.
    (x, k, u, b, h0), kw = make_problem(B=32, T=6, F=64, H=256, reset_after=reset_after,
                                        mask=mask, fan_in=True)
    args = [t.bfloat16() for t in (x, k, u, b, h0)]
    out, st, grads = run_with_grads(functional.gru, leaf_copies(args), kw)
    out_r, st_r, grads_r = run_with_grads(reference.gru, leaf_copies(args, torch.float64), kw)
    assert out.dtype == torch.bfloat16
    assert_close_rel(out, out_r, 2e-2, "outputs")
    assert_close_rel(st, st_r, 2e-2, "final_state")
    for name, a, e in zip(["x", "kernel", "recurrent_kernel", "bias", "initial_state"], grads,
                          grads_r):
        assert_close_rel(a, e, 3e-2, f"grad {name}")
    with torch.no_grad():
        out_i, st_i = functional.gru(*args, **kw)
    assert_close_rel(out_i, out_r, 2e-2, "inference outputs")
    assert_close_rel(st_i, st_r, 2e-2, "inference final_state")
