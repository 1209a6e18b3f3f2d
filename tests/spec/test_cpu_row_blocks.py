"""The CPU op's row blocks: with MKL the batch rows are split into one block per thread, each
running its whole recurrence with single-threaded products (csrc/cpu/gru_cpu_rows.h). Every
feature that touches rows (masks, dropout, go_backwards, both reset conventions, uneven blocks)
against the float64 reference, on both product paths (GRU_CUDA_CPU_BLAS=mkl and aten)."""
import pytest
import torch

from compare import assert_close_rel
from problems import compare, leaf_copies, make_problem, run_with_grads
from gru_cuda import _C, activations, functional, reference

BLAS = ["aten"] + (["mkl"] if _C.cpu_blas() == "mkl" else [])


@pytest.fixture(params=BLAS)
def blas(request, monkeypatch):
    monkeypatch.setenv("GRU_CUDA_CPU_BLAS", request.param)
    assert _C.cpu_blas() == request.param
    return request.param


@pytest.fixture(params=[2, 3])
def threads(request):
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


CASES = [
    dict(reset_after=True),
    dict(reset_after=False),
    dict(reset_after=True, mask="random", zero_output_for_mask=True),
    dict(reset_after=False, mask="left_padded", go_backwards=True),
    dict(reset_after=True, input_dropout=3, recurrent_dropout=True, mask=True),
    dict(reset_after=False, input_dropout=1, recurrent_dropout=True, go_backwards=True),
    # reset_after with go_backwards: dgh is indexed by processing step, dgx by input time.
    dict(reset_after=True, mask=True, go_backwards=True),
]


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("B", [13, 16])
def test_row_blocks_against_float64(case, B, blas, threads):
    case = dict(case)
    extra = {k: case.pop(k) for k in ("zero_output_for_mask", "go_backwards") if k in case}
    problem = make_problem(B=B, T=7, F=5, H=24, fan_in=True, **case)
    out_r, st_r = compare(problem, extra, dtype=torch.float32, rtol=1e-5, grad_rtol=1e-5)
    args = [t.float() for t in problem[0]]
    kw32 = {n: (v.float() if torch.is_tensor(v) and v.is_floating_point() else v)
            for n, v in {**problem[1], **extra}.items()}
    with torch.no_grad():  # inference writes no workspace: its own loop
        out_i, st_i = functional.gru(*args, **kw32)
    assert_close_rel(out_i, out_r, 1e-5, "inference outputs")
    assert_close_rel(st_i, st_r, 1e-5, "inference final_state")


def test_blas_choice_is_checked(monkeypatch):
    monkeypatch.setenv("GRU_CUDA_CPU_BLAS", "openblas")
    with pytest.raises(RuntimeError, match="GRU_CUDA_CPU_BLAS"):
        _C.cpu_blas()
    x = torch.randn(2, 3, 4)
    with pytest.raises(RuntimeError, match="GRU_CUDA_CPU_BLAS"):
        functional.gru(x, torch.randn(4, 9), torch.randn(3, 9))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("reset_after", [True, False])
def test_reduced_precision_outputs_per_step(dtype, reset_after, blas):
    # bfloat16/float16 outputs are converted row block by row block from two float32 steps;
    # masked rows repeat the previous output (mask "random": row 0 always masked, row 1 never).
    # H = 256 and B = 32 also take the bfloat16 products where the CPU has bfloat16 dot products.
    (x, k, u, b, h0), kw = make_problem(B=32, T=9, F=16, H=256, reset_after=reset_after,
                                        mask="random", fan_in=True)
    args = [t.to(dtype) for t in (x, k, u, b, h0)]
    out, st, grads = run_with_grads(functional.gru, leaf_copies(args), kw)
    out_r, st_r, grads_r = run_with_grads(reference.gru, leaf_copies(args, torch.float64), kw)
    assert out.dtype == dtype and st.dtype == dtype
    tol = 2e-2 if dtype == torch.bfloat16 else 2e-3
    assert_close_rel(out, out_r, tol, "outputs")
    assert_close_rel(st, st_r, tol, "final_state")
    for name, a, e in zip(["x", "kernel", "recurrent_kernel", "bias", "initial_state"], grads,
                          grads_r):
        assert_close_rel(a, e, 1.5 * tol, f"grad {name}")
    with torch.no_grad():
        out_i, st_i = functional.gru(*args, **kw)
    torch.testing.assert_close(out_i, out, rtol=0, atol=0)
    torch.testing.assert_close(st_i, st, rtol=0, atol=0)


@pytest.mark.parametrize("case", CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("B,H", [(13, 24), (9, 70), (16, 7), (3, 512)])
def test_bfloat16_products_against_float64(case, B, H, blas):
    # Every size runs bfloat16 products with the packed AVX512-BF16 kernel (even H, CPUs with
    # bfloat16 dot products): row tiles of 4 plus remainders (blocks of 6 and 7 rows), columns
    # that end inside a 16-float vector (H = 70: 210 and 70 columns), gates that start at an
    # even k; B = 3 is one block, whose large products split their column tiles across the
    # threads. An odd H takes oneDNN's products instead.
    case = dict(case)
    extra = {k: case.pop(k) for k in ("zero_output_for_mask", "go_backwards") if k in case}
    compare(make_problem(B=B, T=6, F=5, H=H, fan_in=True, **case), extra, dtype=torch.bfloat16,
            rtol=2e-2, grad_rtol=3e-2)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_reduced_precision_fake_kernels(dtype):
    # The CPU op saves float32 states and workspace for bfloat16/float16 inputs; opcheck compares
    # the fake kernels' dtypes, shapes and strides with the real outputs, forward and backward.
    (x, k, u, b, h0), kw = make_problem(B=9, T=4, F=6, H=8, mask=True)
    xt = x.transpose(0, 1).contiguous().to(dtype)
    k, u, b, h0 = (t.to(dtype) for t in (k, u, b, h0))
    mask = kw["mask"].transpose(0, 1).contiguous()
    ids = activations.FUSED_IDS
    fwd_args = (xt, k, u, b, h0, mask, None, None, True, ids["tanh"], ids["sigmoid"], False,
                False, True)
    out = torch.ops.gru_cuda.gru_forward(*fwd_args)
    assert out[0].dtype == dtype and out[2].dtype == torch.float32
    torch.library.opcheck(torch.ops.gru_cuda.gru_forward.default, fwd_args)
    gy, gs = torch.randn_like(out[0]), torch.randn_like(out[1])
    for need_grad_x in (True, False):
        bwd_args = (gy, gs, xt, k, u, h0, out[2], out[3], mask, None, None, True, True,
                    ids["tanh"], ids["sigmoid"], False, False, need_grad_x)
        torch.library.opcheck(torch.ops.gru_cuda.gru_backward.default, bwd_args)
    with pytest.raises(TypeError, match="workspace must have dtype"):
        torch.ops.gru_cuda.gru_backward(gy, gs, xt, k, u, h0, out[2], out[3].to(dtype), mask,
                                        None, None, True, True, ids["tanh"], ids["sigmoid"],
                                        False, False)
