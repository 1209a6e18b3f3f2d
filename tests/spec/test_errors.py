"""Bad input gets a ValueError or TypeError naming the argument, the expected and the actual
value, from the functional API and from direct op calls; never a crash."""
import pytest
import torch

from problems import make_problem
from gru_cuda import activations, functional, reference

B, T, F, H = 3, 5, 4, 6


def base(**over):
    (x, k, u, b, h0), kw = make_problem(B=B, T=T, F=F, H=H, dtype=torch.float32)
    args = dict(x=x, kernel=k, recurrent_kernel=u, bias=b, initial_state=h0)
    args.update(over)
    return args


CASES = [
    # (overrides, options, exception, fragments that the message must contain)
    (dict(x=torch.randn(B, T)), {}, ValueError, ["x", "3-D", "(3, 5)"]),
    (dict(x=torch.randn(B, T, F, 1)), {}, ValueError, ["x", "3-D"]),
    (dict(x=torch.ones(B, T, F, dtype=torch.int64)), {}, TypeError, ["x", "floating", "int64"]),
    (dict(x=[[1.0]]), {}, TypeError, ["x", "torch.Tensor", "list"]),
    (dict(kernel=torch.randn(F + 1, 3 * H)), {}, ValueError, ["kernel", "(4, 18)", "(5, 18)"]),
    (dict(kernel=torch.randn(F, 3 * H, dtype=torch.float64)), {}, TypeError,
     ["kernel", "torch.float32", "torch.float64"]),
    (dict(recurrent_kernel=torch.randn(H, 2 * H)), {}, ValueError,
     ["recurrent_kernel", "(units, 3 * units)", "(6, 12)"]),
    (dict(recurrent_kernel=torch.randn(H, 3 * H).to(torch.int32)), {}, TypeError,
     ["recurrent_kernel", "int32"]),
    (dict(bias=torch.randn(3 * H)), {}, ValueError,
     ["bias", "(2, 18)", "reset_after=True", "(18,)"]),
    (dict(bias=torch.randn(2, 3 * H)), {"reset_after": False}, ValueError,
     ["bias", "(18,)", "reset_after=False"]),
    (dict(bias=torch.randn(2, 3 * H, dtype=torch.float16)), {}, TypeError, ["bias", "float16"]),
    (dict(initial_state=torch.randn(B, H + 1)), {}, ValueError,
     ["initial_state", "(3, 6)", "(3, 7)"]),
    (dict(initial_state=torch.randn(1, B, H)), {}, ValueError,
     ["initial_state", "(3, 6)", "(1, 3, 6)"]),
    (dict(), {"mask": torch.ones(T, B, dtype=torch.bool)}, ValueError,
     ["mask", "(batch, timesteps)", "(3, 5)", "(5, 3)"]),
    (dict(), {"input_dropout_mask": torch.ones(B, F + 1)}, ValueError,
     ["input_dropout_mask", "(3, 4)", "(3, 5)"]),
    (dict(), {"input_dropout_mask": torch.ones(2, B, F)}, ValueError,
     ["input_dropout_mask", "(3, 3, 4)"]),
    (dict(), {"input_dropout_mask": torch.ones(B, F, dtype=torch.float64)}, TypeError,
     ["input_dropout_mask", "float64"]),
    (dict(), {"recurrent_dropout_mask": torch.ones(B, H)}, ValueError,
     ["recurrent_dropout_mask", "(3, 3, 6)", "(3, 6)"]),
    (dict(), {"activation": "tanhh"}, ValueError, ["activation", "'tanhh'"]),
    (dict(), {"recurrent_activation": "nope"}, ValueError, ["recurrent_activation", "'nope'"]),
    (dict(), {"activation": 3}, TypeError, ["activation", "int"]),
    (dict(), {"reset_after": "yes"}, TypeError, ["reset_after", "bool"]),
]


@pytest.mark.parametrize("impl", [functional.gru, reference.gru], ids=["functional", "reference"])
@pytest.mark.parametrize("overrides,options,exc,fragments", CASES)
def test_bad_input_message(impl, overrides, options, exc, fragments):
    args = base(**overrides)
    with pytest.raises(exc) as info:
        impl(args.pop("x"), args.pop("kernel"), args.pop("recurrent_kernel"), args.pop("bias"),
             args.pop("initial_state"), **options)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"


def test_non_bool_mask_is_cast_like_keras():
    args = base()
    mask_int = (torch.rand(B, T) > 0.5).to(torch.int64)
    out_i, st_i = functional.gru(*args.values(), mask=mask_int)
    out_b, st_b = functional.gru(*args.values(), mask=mask_int.bool())
    assert torch.equal(out_i, out_b) and torch.equal(st_i, st_b)


def raw(**over):
    (x, k, u, b, h0), kw = make_problem(B=B, T=T, F=F, H=H, dtype=torch.float32, time_major=True)
    a = dict(x=x, kernel=k, recurrent_kernel=u, bias=b, h0=h0, mask=None, idm=None, rdm=None,
             reset_after=True, act=0, ract=1, go_backwards=False, zero_out=False, save=True)
    a.update(over)
    return tuple(a.values())


RAW_CASES = [
    (dict(x=torch.randn(T, B)), ValueError, "x must be 3-D"),
    (dict(x=torch.ones(T, B, F, dtype=torch.int32)), TypeError, "floating"),
    (dict(kernel=torch.randn(F, 3 * H + 3)), ValueError, "kernel must have shape"),
    (dict(recurrent_kernel=torch.randn(H, H)), ValueError,
     "recurrent_kernel must have shape (H, 3H)"),
    (dict(bias=torch.randn(3 * H)), ValueError, "bias (reset_after=True)"),
    (dict(h0=torch.randn(B + 1, H)), ValueError, "initial_state must have shape"),
    (dict(mask=torch.ones(B, T, dtype=torch.bool)), ValueError, "mask (time-major)"),
    (dict(mask=torch.ones(T, B)), TypeError, "mask must have dtype bool"),
    (dict(idm=torch.ones(3, B, F + 1)), ValueError, "input_dropout_mask"),
    (dict(rdm=torch.ones(3, B, H, dtype=torch.float64)), TypeError, "recurrent_dropout_mask"),
    (dict(act=12), ValueError, "activation id"),
    (dict(ract=-1), ValueError, "recurrent_activation id"),
]


@pytest.mark.parametrize("overrides,exc,fragment", RAW_CASES)
def test_raw_op_rejects_bad_input(overrides, exc, fragment):
    with pytest.raises(exc, match=None) as info:
        torch.ops.gru_cuda.gru_forward(*raw(**overrides))
    assert fragment in str(info.value)


def test_raw_backward_rejects_mismatched_saved_tensors():
    x, k, u, b, h0, *rest = raw()
    outputs, final, states, ws = torch.ops.gru_cuda.gru_forward(x, k, u, b, h0, *rest)
    with pytest.raises(ValueError, match="workspace"):
        torch.ops.gru_cuda.gru_backward(outputs, final, x, k, u, h0, states, ws[..., :-1], None,
                                        None, None, True, True, 0, 1, False, False)
    with pytest.raises(ValueError, match="grad_outputs"):
        torch.ops.gru_cuda.gru_backward(outputs[:-1], final, x, k, u, h0, states, ws, None,
                                        None, None, True, True, 0, 1, False, False)


def test_activation_names_roundtrip():
    for i, name in enumerate(activations.FUSED_NAMES):
        assert activations.fused_id(name) == i
    assert activations.fused_id("swish") == activations.FUSED_IDS["silu"]
    assert activations.fused_id(None) == activations.FUSED_IDS["linear"]
    assert activations.fused_id("mish") is None and activations.fused_id(torch.tanh) is None
