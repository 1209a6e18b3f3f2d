"""Autocast: under torch.autocast (CPU bfloat16; CUDA float16 / bfloat16) the fused op runs in
the autocast dtype (accumulating in float32), float32 parameters stay float32 and receive
float32 gradients, and the results are within low-precision error of the float32 run.
"""
from __future__ import annotations


import pytest
import torch

from gru_cuda import GRU
from gru_cuda.functional import gru

from compare import assert_close_rel
from markers import requires_cuda
from problems import problem_from_config

FWD_OP = torch.ops.gru_cuda.gru_forward.default

CONFIGS = [
    dict(reset_after=True),
    dict(reset_after=False, mask=True, go_backwards=True),
    dict(reset_after=True, mask=True, input_dropout=True, recurrent_dropout=True,
         zero_output_for_mask=True),
    dict(reset_after=False, time_major=True, initial_state=True, activation="gelu",
         recurrent_activation="hard_sigmoid"),
]
IDS = ["-".join(f"{k}={v}" for k, v in c.items()) for c in CONFIGS]


def _problem(cfg, device="cpu", B=4, T=12, F=8, H=16, seed=0):
    """(x, {kernel, recurrent_kernel, bias}, kw) in float32; input dropout is per gate."""
    if cfg.get("input_dropout"):
        cfg = dict(cfg, input_dropout="per_gate")
    (x, kernel, recurrent_kernel, bias, h0), kw = problem_from_config(
        cfg, B=B, T=T, F=F, H=H, initial_state=False, dtype=torch.float32, device=device,
        scale=0.3, bias_scale=0.2, mask_keep=0.75, keep=0.8,
        generator=torch.Generator().manual_seed(seed))
    if h0 is not None:
        kw["initial_state"] = h0
    return x, dict(kernel=kernel, recurrent_kernel=recurrent_kernel, bias=bias), kw


def _run(x, params, kw, autocast_dtype=None, device="cpu"):
    """(outputs, state, {param: grad}, x.grad) of one forward/backward; parameters are fresh
    float32 leaves."""
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    x = x.clone().requires_grad_()
    if autocast_dtype is None:
        out, state = gru(x, leaves["kernel"], leaves["recurrent_kernel"], leaves["bias"], **kw)
    else:
        with torch.autocast(device, dtype=autocast_dtype):
            out, state = gru(x, leaves["kernel"], leaves["recurrent_kernel"], leaves["bias"], **kw)
    # the loss in float32, outside autocast, as a training loop would do it
    loss = out.float().square().mean() + state.float().sum()
    loss.backward()
    return out, state, {k: v.grad for k, v in leaves.items()}, x.grad, leaves


# Within bf16/fp16 error, relative to the tensor's scale.
LOWP = 2e-2


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cpu_autocast_bfloat16(cfg):
    x, params, kw = _problem(cfg)
    out, state, grads, gx, leaves = _run(x, params, kw, torch.bfloat16)
    assert out.dtype == state.dtype == torch.bfloat16  # the op ran in bf16
    for k, p in leaves.items():
        assert p.dtype == torch.float32, k
        assert grads[k] is not None and grads[k].dtype == torch.float32, k
    assert gx.dtype == torch.float32

    out32, state32, grads32, gx32, _ = _run(x, params, kw)
    assert out32.dtype == torch.float32
    assert_close_rel(out, out32, LOWP, "outputs")
    assert_close_rel(state, state32, LOWP, "final_state")
    for k in grads32:
        assert_close_rel(grads[k], grads32[k], LOWP, f"grad {k}")
    assert_close_rel(gx, gx32, LOWP, "grad x")
    # and it really is lower precision, not a float32 run relabelled
    assert not torch.equal(out.float(), out32)


def test_cpu_autocast_records_a_bf16_op_call():
    """The op itself receives bf16 tensors (not float32 ones cast afterwards)."""
    x, params, kw = _problem(CONFIGS[0])
    seen = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func is FWD_OP:
                seen.append([a.dtype for a in args[:5] if isinstance(a, torch.Tensor)])
            return func(*args, **(kwargs or {}))

    with Spy(), torch.autocast("cpu", dtype=torch.bfloat16):
        gru(x, params["kernel"], params["recurrent_kernel"], params["bias"], **kw)
    assert seen == [[torch.bfloat16] * 5]


def test_cpu_autocast_bf16_input_with_float32_parameters():
    """The usual case inside an autocast region: x comes out of an earlier autocast op as bf16
    while the GRU's parameters are float32."""
    x, params, kw = _problem(CONFIGS[1])
    lin = torch.nn.Linear(x.shape[-1], x.shape[-1])
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16
        out, state = gru(h, leaves["kernel"], leaves["recurrent_kernel"], leaves["bias"], **kw)
    assert out.dtype == torch.bfloat16
    (out.float().sum() + state.float().sum()).backward()
    assert all(p.grad.dtype == torch.float32 for p in leaves.values())
    assert lin.weight.grad.dtype == torch.float32
    with torch.no_grad():
        out32, _ = gru(lin(x), *params.values(), **kw)
    assert_close_rel(out, out32, LOWP, "outputs")


def _backward_inside_region(cfg):
    x, params, kw = _problem(cfg)
    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = gru(x, leaves["kernel"], leaves["recurrent_kernel"], leaves["bias"], **kw)
        (out.float().square().mean() + state.float().sum()).backward()
    return {k: v.grad for k, v in leaves.items()}, x, params, kw


@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cpu_autocast_backward_inside_the_region(cfg):
    """backward() called inside the autocast region: float32 gradients within bf16 error."""
    inside, x, params, kw = _backward_inside_region(cfg)
    grads32 = _run(x, params, kw)[2]
    for k in grads32:
        assert inside[k].dtype == torch.float32
        assert_close_rel(inside[k], grads32[k], LOWP, f"grad {k}")


def test_cpu_autocast_backward_inside_equals_outside():
    """The fused backward should not depend on where backward() is called."""
    cfg = CONFIGS[2]
    inside, x, params, kw = _backward_inside_region(cfg)
    outside = _run(x, params, kw, torch.bfloat16)[2]
    for k in outside:
        torch.testing.assert_close(inside[k], outside[k], rtol=0, atol=0, msg=k)


def test_autocast_disabled_region_is_float32():
    x, params, kw = _problem(CONFIGS[0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.autocast("cpu", enabled=False):
            out, state = gru(x, *params.values(), **kw)
    assert out.dtype == state.dtype == torch.float32
    torch.testing.assert_close(out, gru(x, *params.values(), **kw)[0], rtol=0, atol=0)


def test_autocast_leaves_float64_alone():
    """Like native autocast, float64 tensors are not cast: a float64 GRU stays float64."""
    x, params, kw = _problem(CONFIGS[0])
    x, params = x.double(), {k: v.double() for k, v in params.items()}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = gru(x, *params.values(), **kw)
    assert out.dtype == state.dtype == torch.float64
    torch.testing.assert_close(out, gru(x, *params.values(), **kw)[0], rtol=0, atol=0)


def test_cpu_autocast_slow_path_activation():
    """A non-fused activation (reference path) under autocast also gives bf16 outputs close to
    float32, with float32 gradients."""
    x, params, kw = _problem(dict(reset_after=True), T=5)
    # Smooth (mish, not relu6): at a kink bf16 rounding flips the derivative of whole
    # elements, which no tolerance on the gradients can tell from an error.
    kw["activation"] = "mish"
    out, state, grads, _, _ = _run(x, params, kw, torch.bfloat16)
    out32, _, grads32, _, _ = _run(x, params, kw)
    assert out.dtype == torch.bfloat16
    assert_close_rel(out, out32, LOWP, "outputs")
    for k in grads32:
        assert grads[k].dtype == torch.float32
        assert_close_rel(grads[k], grads32[k], LOWP, f"grad {k}")


def test_raw_op_call_under_autocast():
    x, params, _ = _problem(CONFIGS[0])
    xt = x.transpose(0, 1).contiguous()
    h0 = torch.zeros(x.shape[0], params["recurrent_kernel"].shape[0])
    want = torch.ops.gru_cuda.gru_forward(xt, *params.values(), h0, None, None, None, True, 0, 1,
                                          False, False, False)[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = torch.ops.gru_cuda.gru_forward(xt, *params.values(), h0, None, None, None, True,
                                             0, 1, False, False, False)[0]
    assert got.dtype == torch.float32  # no autocast registration: the op runs as called
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_cpu_autocast_layer():
    torch.manual_seed(0)
    layer = GRU(16, return_sequences=True, return_state=True, input_size=8)
    x = torch.randn(4, 12, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out, state = layer(x)
    assert out.dtype == torch.bfloat16
    (out.float().square().mean() + state.float().sum()).backward()
    assert all(p.dtype == torch.float32 and p.grad.dtype == torch.float32
               for p in layer.parameters())
    with torch.no_grad():
        out32, _ = layer(x)
    assert_close_rel(out, out32, LOWP, "layer outputs")


@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("cfg", CONFIGS, ids=IDS)
def test_cuda_autocast(cfg, dtype):
    x, params, kw = _problem(cfg, device="cuda")
    out, state, grads, gx, leaves = _run(x, params, kw, dtype, device="cuda")
    assert out.dtype == state.dtype == dtype
    for k, p in leaves.items():
        assert p.dtype == torch.float32 and grads[k].dtype == torch.float32, k
    out32, state32, grads32, gx32, _ = _run(x, params, kw)
    tol = 1e-2 if dtype == torch.float16 else 2e-2
    assert_close_rel(out, out32, tol, "outputs")
    assert_close_rel(state, state32, tol, "final_state")
    for k in grads32:
        assert_close_rel(grads[k], grads32[k], tol, f"grad {k}")
    assert_close_rel(gx, gx32, tol, "grad x")
