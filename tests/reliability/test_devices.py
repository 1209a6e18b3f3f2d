"""Mixed devices: inputs on one device, weights or masks on another, give a clear error that
names the argument and both devices.

Without CUDA the `meta` device plays "the other device" (it exercises the same checks); the
CUDA variants (CPU weights or CPU masks with CUDA inputs, two GPUs) skip cleanly.
"""
from __future__ import annotations


import pytest
import torch

from gru_cuda import reference
from gru_cuda.functional import gru

from markers import requires_cuda
from problems import as_dict, make_problem


B, T, F, H = 3, 4, 2, 5
ARGS = ("x", "kernel", "recurrent_kernel", "bias", "initial_state", "mask", "input_dropout_mask",
        "recurrent_dropout_mask")


def _problem(device, per_gate=False):
    """Every argument by name on `device`, the dropout masks all ones."""
    args, kw = make_problem(B=B, T=T, F=F, H=H, dtype=torch.float32, device=device, scale=1.0,
                            mask=True, mask_keep=0.7, generator=torch.Generator().manual_seed(0))
    a = as_dict(args, kw)
    a["input_dropout_mask"] = torch.ones((3, B, F) if per_gate else (B, F), device=device)
    a["recurrent_dropout_mask"] = torch.ones(3, B, H, device=device)
    return a


def _call(fn, a):
    return fn(*(a[k] for k in ARGS[:5]), **{k: a[k] for k in ARGS[5:]})


def _assert_names(message, *fragments):
    for f in fragments:
        assert f in message, f"{f!r} not in {message!r}"


@pytest.mark.parametrize("fn", [gru, reference.gru], ids=["functional", "reference"])
@pytest.mark.parametrize("name", ARGS[1:])
@pytest.mark.parametrize("per_gate", [False, True])
def test_one_argument_on_another_device(fn, name, per_gate):
    """Every argument on `meta` while x is on the CPU: ValueError naming it and both devices."""
    a = _problem("cpu", per_gate)
    a[name] = a[name].to("meta")
    with pytest.raises(ValueError) as info:
        _call(fn, a)
    _assert_names(str(info.value), name, "cpu", "meta")


@pytest.mark.parametrize("fn", [gru, reference.gru], ids=["functional", "reference"])
def test_inputs_on_another_device_than_the_weights(fn):
    a = _problem("cpu")
    for k in ("x", "mask", "input_dropout_mask", "recurrent_dropout_mask", "initial_state"):
        a[k] = a[k].to("meta")
    with pytest.raises(ValueError) as info:
        _call(fn, a)
    _assert_names(str(info.value), "cpu", "meta", "x")


def test_all_on_meta_is_fine():
    """One device throughout, even `meta`, is no error: shapes come out right (the fake kernel)."""
    a = _problem("meta")
    out, state = _call(gru, a)
    assert out.device.type == state.device.type == "meta"
    assert out.shape == (B, T, H) and state.shape == (B, H)


def test_layer_input_on_another_device():
    layers = pytest.importorskip("gru_cuda.layers")
    if not hasattr(layers, "GRU"):
        pytest.skip("gru_cuda.layers.GRU not available yet")
    layer = layers.GRU(H, return_sequences=True, input_size=F)
    with pytest.raises(ValueError) as info:
        layer(torch.randn(B, T, F, device="meta"))
    _assert_names(str(info.value), "cpu", "meta")
    x = torch.randn(B, T, F)
    with pytest.raises(ValueError) as info:
        layer(x, mask=torch.ones(B, T, dtype=torch.bool, device="meta"))
    _assert_names(str(info.value), "mask", "cpu", "meta")


# ---- raw ops ----------------------------------------------------------------------------------

def _raw(a):
    tm = dict(a)
    tm["x"] = a["x"].transpose(0, 1).contiguous()
    tm["mask"] = a["mask"].t().contiguous()
    return tm


def _raw_forward(tm, save=True):
    return torch.ops.gru_cuda.gru_forward(
        tm["x"], tm["kernel"], tm["recurrent_kernel"], tm["bias"], tm["initial_state"],
        tm["mask"], tm["input_dropout_mask"], tm["recurrent_dropout_mask"], True, 0, 1, False,
        False, save)


# A meta tensor among CPU tensors routes a raw op call to its fake (meta) kernel (the Meta
# dispatch key outranks CPU); the fake kernels run the same device checks as csrc/gru_checks.cpp.


@pytest.mark.parametrize("name", ARGS)
def test_raw_forward_one_argument_on_meta(name):
    tm = _raw(_problem("cpu"))
    tm[name] = tm[name].to("meta")
    try:
        result = _raw_forward(tm)
    except (ValueError, RuntimeError) as e:
        _assert_names(str(e), "cpu", "meta")
        return
    pytest.fail(f"no error; outputs on {result[0].device}")


def test_raw_backward_saved_tensor_on_meta():
    tm = _raw(_problem("cpu"))
    out, final, states, ws = _raw_forward(tm)
    try:
        result = torch.ops.gru_cuda.gru_backward(
            torch.ones_like(out), torch.ones_like(final), tm["x"], tm["kernel"],
            tm["recurrent_kernel"], tm["initial_state"], states, ws.to("meta"), tm["mask"],
            tm["input_dropout_mask"], tm["recurrent_dropout_mask"], True, True, 0, 1, False, False)
    except (ValueError, RuntimeError) as e:
        _assert_names(str(e), "workspace", "cpu", "meta")
        return
    pytest.fail(f"no error; grad_x on {result[0].device}")


# ---- CUDA -------------------------------------------------------------------------------------

@requires_cuda
@pytest.mark.parametrize("fn", [gru, reference.gru], ids=["functional", "reference"])
@pytest.mark.parametrize("name", ARGS[1:])
def test_cuda_inputs_with_one_cpu_argument(fn, name):
    a = _problem("cuda")
    a[name] = a[name].cpu()
    with pytest.raises(ValueError) as info:
        _call(fn, a)
    _assert_names(str(info.value), name, "cpu", "cuda:0")


@requires_cuda
def test_cpu_inputs_with_cuda_weights():
    a = _problem("cpu")
    for k in ("kernel", "recurrent_kernel", "bias"):
        a[k] = a[k].cuda()
    with pytest.raises(ValueError) as info:
        _call(gru, a)
    _assert_names(str(info.value), "cpu", "cuda:0")


@requires_cuda
@pytest.mark.parametrize("name", ARGS[1:])
def test_raw_forward_cuda_with_one_cpu_argument(name):
    tm = _raw(_problem("cuda"))
    tm[name] = tm[name].cpu()
    with pytest.raises((ValueError, RuntimeError)) as info:
        _raw_forward(tm)
    _assert_names(str(info.value), "cpu", "cuda")


@requires_cuda
@pytest.mark.parametrize("name", ["grad_outputs", "grad_final_state", "states", "workspace",
                                  "mask"])
def test_raw_backward_cuda_with_one_cpu_argument(name):
    tm = _raw(_problem("cuda"))
    out, final, states, ws = _raw_forward(tm)
    t = dict(grad_outputs=torch.ones_like(out), grad_final_state=torch.ones_like(final),
             states=states, workspace=ws, mask=tm["mask"])
    t[name] = t[name].cpu()
    with pytest.raises((ValueError, RuntimeError)) as info:
        torch.ops.gru_cuda.gru_backward(
            t["grad_outputs"], t["grad_final_state"], tm["x"], tm["kernel"],
            tm["recurrent_kernel"], tm["initial_state"], t["states"], t["workspace"], t["mask"],
            tm["input_dropout_mask"], tm["recurrent_dropout_mask"], True, True, 0, 1, False, False)
    _assert_names(str(info.value), "cpu", "cuda")


@requires_cuda
def test_layer_on_cpu_with_cuda_input_and_cpu_mask():
    layers = pytest.importorskip("gru_cuda.layers")
    if not hasattr(layers, "GRU"):
        pytest.skip("gru_cuda.layers.GRU not available yet")
    layer = layers.GRU(H, return_sequences=True, input_size=F)
    with pytest.raises(ValueError) as info:
        layer(torch.randn(B, T, F, device="cuda"))
    _assert_names(str(info.value), "cpu", "cuda:0")
    layer = layer.cuda()
    with pytest.raises(ValueError) as info:
        layer(torch.randn(B, T, F, device="cuda"), mask=torch.ones(B, T, dtype=torch.bool))
    _assert_names(str(info.value), "mask", "cpu", "cuda:0")


@requires_cuda
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA GPUs")
def test_two_gpus():
    a = _problem("cuda:0")
    a["recurrent_kernel"] = a["recurrent_kernel"].to("cuda:1")
    with pytest.raises(ValueError) as info:
        _call(gru, a)
    _assert_names(str(info.value), "recurrent_kernel", "cuda:0", "cuda:1")
