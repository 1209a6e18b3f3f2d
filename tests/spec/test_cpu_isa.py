"""The instruction-set variants of the float32 CPU passes (baseline, AVX2 + FMA, AVX-512), each
forced with GRU_CUDA_CPU_ISA and compared with the float64 reference: forward and gradients,
both reset conventions, masks and dropout, every fused activation, and inference (which writes
no workspace). Sizes are odd so that every vector loop has a remainder."""
import pytest
import torch

from compare import assert_close_rel
from problems import leaf_copies, make_problem, run_with_grads
from gru_cuda import activations, functional, reference
from gru_cuda._library import _C

VARIANTS = list(_C.cpu_isa_supported())


@pytest.fixture(params=VARIANTS)
def variant(request, monkeypatch):
    monkeypatch.setenv("GRU_CUDA_CPU_ISA", request.param)
    assert _C.cpu_isa() == request.param
    return request.param


def float32_problem(**options):
    (x, k, u, b, h0), kw = make_problem(B=5, T=9, F=7, H=37, **options)
    for name in ("input_dropout_mask", "recurrent_dropout_mask"):
        if kw.get(name) is not None:
            kw[name] = kw[name].float()
    # The reference sees the float32-rounded inputs: only the arithmetic differs.
    return [t.float() for t in (x, k, u, b, h0)], kw


def reference_of(args, kw):
    kw64 = {k: (v.double() if torch.is_tensor(v) and v.is_floating_point() else v)
            for k, v in kw.items()}
    return leaf_copies(args, torch.float64), kw64


def check_against_reference(args, kw, rtol):
    out, st, grads = run_with_grads(functional.gru, leaf_copies(args), kw)
    out_r, st_r, grads_r = run_with_grads(reference.gru, *reference_of(args, kw))
    assert out.dtype == torch.float32
    assert_close_rel(out, out_r, rtol, "outputs")
    assert_close_rel(st, st_r, rtol, "final_state")
    for name, a, e in zip(["x", "kernel", "recurrent_kernel", "bias", "initial_state"], grads,
                          grads_r):
        assert_close_rel(a, e, rtol, f"grad {name}")


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("options", [
    dict(),
    dict(mask=True, input_dropout=3, recurrent_dropout=True, go_backwards=True),
    dict(mask="random", zero_output_for_mask=True),
])
def test_variant_against_float64(variant, reset_after, options):
    options = dict(options)
    call = {k: options.pop(k) for k in ("go_backwards", "zero_output_for_mask") if k in options}
    args, kw = float32_problem(reset_after=reset_after, **options)
    check_against_reference(args, {**kw, **call}, rtol=1e-5)


# Each fused activation as the candidate activation and as the gate activation; not an
# exponential gate, which grows the state geometrically: float32 overflows long before float64.
ACTIVATION_PAIRS = sorted({(a, "sigmoid") for a in activations.FUSED_NAMES}
                          | {("tanh", r) for r in activations.FUSED_NAMES if r != "exponential"})


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("activation,recurrent_activation", ACTIVATION_PAIRS)
def test_variant_activations(variant, reset_after, activation, recurrent_activation):
    # Small weights, inputs and initial state keep unbounded pairs in range.
    args, kw = float32_problem(reset_after=reset_after, mask=True, scale=0.3, fan_in=True,
                              bias_scale=0.05)
    args[0] = args[0] * 0.3
    args[4] = args[4] * 0.1
    check_against_reference(args, {**kw, "activation": activation,
                                   "recurrent_activation": recurrent_activation}, rtol=1e-5)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("mask", [False, True])
def test_variant_inference(variant, reset_after, mask):
    """Without gradients the forward op saves nothing (reset_after=True writes no workspace)."""
    args, kw = float32_problem(reset_after=reset_after, mask=mask)
    with torch.no_grad():
        out, st = functional.gru(*args, **kw)
    out_r, st_r = reference.gru(*[t.double() for t in args], **reference_of(args, kw)[1])
    assert_close_rel(out, out_r, 1e-5, "outputs")
    assert_close_rel(st, st_r, 1e-5, "final_state")


def test_variants_agree_with_each_other(monkeypatch):
    args, kw = float32_problem(reset_after=True, mask=True, recurrent_dropout=True)
    results = {}
    for name in VARIANTS:
        monkeypatch.setenv("GRU_CUDA_CPU_ISA", name)
        results[name] = run_with_grads(functional.gru, leaf_copies(args), kw)
    base = results["baseline"]
    for name, (out, st, grads) in results.items():
        assert_close_rel(out, base[0], 1e-5, f"{name} outputs")
        assert_close_rel(st, base[1], 1e-5, f"{name} final_state")
        for a, e in zip(grads, base[2]):
            assert_close_rel(a, e, 1e-5, f"{name} gradient")


def test_default_is_the_best_supported(monkeypatch):
    monkeypatch.delenv("GRU_CUDA_CPU_ISA", raising=False)
    assert _C.cpu_isa() == VARIANTS[-1]
    monkeypatch.setenv("GRU_CUDA_CPU_ISA", "auto")
    assert _C.cpu_isa() == VARIANTS[-1]
    assert VARIANTS[0] == "baseline"


def test_unknown_variant_raises(monkeypatch):
    monkeypatch.setenv("GRU_CUDA_CPU_ISA", "sse9")
    args, kw = float32_problem()
    with pytest.raises(RuntimeError, match="GRU_CUDA_CPU_ISA must be one of"):
        functional.gru(*args, **kw)


def test_unsupported_variant_raises(monkeypatch):
    missing = [v for v in ("avx2", "avx512") if v not in VARIANTS]
    if not missing:
        pytest.skip("this CPU runs every variant")
    monkeypatch.setenv("GRU_CUDA_CPU_ISA", missing[-1])
    args, kw = float32_problem()
    with pytest.raises(RuntimeError, match="this CPU runs at most"):
        functional.gru(*args, **kw)
