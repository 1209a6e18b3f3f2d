"""The ONNX form of one `gru_cuda::gru_forward` call, written once for both exporters.

The graph is built through a small emitter (`op`, `ints`, `scalar_like`, `none`) that each
exporter front end implements: onnxscript ops for the torch.export-based exporter, `g.op`
for the TorchScript one.

ONNX's GRU (https://onnx.ai/onnx/operators/onnx__GRU.html) computes, gates in the order
[z, r, h] (Keras' order, so no permutation is needed):

    z = f(X W_z^T + H R_z^T + Wb_z + Rb_z)
    r = f(X W_r^T + H R_r^T + Wb_r + Rb_r)
    h = g(X W_h^T + r * (H R_h^T + Rb_h) + Wb_h)     linear_before_reset = 1
    h = g(X W_h^T + (r * H) R_h^T + Rb_h + Wb_h)     linear_before_reset = 0
    H = (1 - z) * h + z * H

which is Keras' GRU with W = kernel^T, R = recurrent_kernel^T, `linear_before_reset` =
`reset_after`, and B = [input bias | recurrent bias]. Keras' `reset_after=False` bias is the
input bias alone, so its recurrent half is zero there.
"""
from __future__ import annotations

from gru_cuda.activations import FUSED_NAMES

# Keras activation name -> (ONNX GRU activation, its alpha, its beta); parameters only for
# the functions that take them (ONNX consumes activation_alpha/beta in that order).
ONNX_GRU_ACTIVATIONS = {
    "tanh": ("Tanh",),
    "sigmoid": ("Sigmoid",),
    "relu": ("Relu",),
    "hard_sigmoid": ("HardSigmoid", 1.0 / 6.0, 0.5),  # Keras 3: clip(x / 6 + 0.5, 0, 1)
    "linear": ("Affine", 1.0, 0.0),
    "elu": ("Elu", 1.0),
    "softsign": ("Softsign",),
    "softplus": ("Softplus",),
}

_INT64_MIN = -(2 ** 63)


class ExportError(ValueError):
    """A gru_cuda configuration that the ONNX export cannot express."""


def activation_name(act_id: int, argname: str) -> str:
    if not 0 <= int(act_id) < len(FUSED_NAMES):
        raise ExportError(f"gru_cuda ONNX export: unknown {argname} id {act_id}")
    return FUSED_NAMES[int(act_id)]


def gru_attributes(activation: str, recurrent_activation: str, H: int, reset_after: bool,
                   go_backwards: bool) -> dict:
    """The attributes of the ONNX GRU node, or ExportError naming the activation it lacks."""
    for argname, name in (("activation", activation),
                          ("recurrent_activation", recurrent_activation)):
        if name not in ONNX_GRU_ACTIVATIONS:
            raise ExportError(
                f"gru_cuda ONNX export: {argname}={name!r} has no ONNX GRU equivalent (ONNX's "
                f"GRU supports {sorted(ONNX_GRU_ACTIVATIONS)}), and the step-loop form of the "
                "export is not implemented for it; choose a supported activation to export")
    funcs, alphas, betas = [], [], []
    for name in (recurrent_activation, activation):  # ONNX order: f (gates), g (candidate)
        spec = ONNX_GRU_ACTIVATIONS[name]
        funcs.append(spec[0])
        if len(spec) > 1:
            alphas.append(float(spec[1]))
        if len(spec) > 2:
            betas.append(float(spec[2]))
    attrs = dict(hidden_size=int(H), linear_before_reset=int(bool(reset_after)),
                 direction="reverse" if go_backwards else "forward", activations=funcs)
    if alphas:
        attrs["activation_alpha"] = alphas
    if betas:
        attrs["activation_beta"] = betas
    return attrs


def _flip_time(E, t):
    # Reverses axis 0 whatever its (dynamic) length: slice from the end with step -1.
    return E.op("Slice", t, E.ints([-1]), E.ints([_INT64_MIN]), E.ints([0]), E.ints([-1]))


def build_gru(E, x, kernel, recurrent_kernel, bias, h0, mask, *, H: int, reset_after: bool,
              activation: str, recurrent_activation: str, go_backwards: bool,
              zero_output_for_mask: bool):
    """Emits the ONNX graph of one gru_forward call (inference: no dropout masks).

    Args mirror the op (csrc/gru_ops.cpp): x `(T, B, F)` time-major, kernel `(F, 3H)`,
    recurrent_kernel `(H, 3H)`, bias `(2, 3H)` / `(3H,)` / None, h0 `(B, H)`, mask bool
    `(T, B)` or None. Returns `(outputs (T, B, H) in processing order, final_state (B, H))`.
    """
    attrs = gru_attributes(activation, recurrent_activation, H, reset_after, go_backwards)
    W = E.op("Unsqueeze", E.op("Transpose", kernel, perm=[1, 0]), E.ints([0]))
    R = E.op("Unsqueeze", E.op("Transpose", recurrent_kernel, perm=[1, 0]), E.ints([0]))
    if bias is None:
        B = E.op("CastLike", E.op("ConstantOfShape", E.ints([1, 6 * H])), x)
    elif reset_after:  # rows [input | recurrent] are already ONNX's [Wb | Rb]
        B = E.op("Reshape", bias, E.ints([1, 6 * H]))
    else:  # input bias only: the recurrent half is zero
        B = E.op("Unsqueeze", E.op("Pad", bias, E.ints([0, 3 * H])), E.ints([0]))
    h_init = E.op("Unsqueeze", h0, E.ints([0]))

    if mask is None:
        Y, Y_h = E.op("GRU", x, W, R, B, E.none(), h_init, n_out=2, **attrs)
        outputs = E.op("Squeeze", Y, E.ints([1]))
        final = E.op("Squeeze", Y_h, E.ints([0]))
        return (_flip_time(E, outputs) if go_backwards else outputs), final

    # A right-padded mask (True for the first lens[b] steps of row b) is ONNX's
    # sequence_lens; the forward direction then stops at lens-1 and the reverse one starts
    # there, as Keras skips the masked steps.
    lens = E.op("ReduceSum", E.op("Cast", mask, to=7), E.ints([0]), keepdims=0)  # int64 (B,)
    Y, Y_h = E.op("GRU", x, W, R, B, E.op("Cast", lens, to=6), h_init, n_out=2, **attrs)
    Y = E.op("Squeeze", Y, E.ints([1]))
    Y_h = E.op("Squeeze", Y_h, E.ints([0]))

    T = E.op("Squeeze", E.op("Shape", x, start=0, end=1), E.ints([0]))
    steps = E.op("Range", E.int_scalar(0), T, E.int_scalar(1))
    valid = E.op("Less", E.op("Unsqueeze", steps, E.ints([1])),
                 E.op("Unsqueeze", lens, E.ints([0])))                           # (T, B)
    started = E.op("Unsqueeze", E.op("Greater", lens, E.int_scalar(0)), E.ints([1]))  # (B, 1)
    zero = E.scalar_like(0.0, x)
    # A row with no valid step keeps its initial state (Keras), whatever the runtime reports.
    final = E.op("Where", started, Y_h, h0)
    # Masked steps repeat the previous output: the last valid one going forward (the final
    # state), zeros going backwards (the masked steps come first) or with zero_output_for_mask.
    held = zero if (go_backwards or zero_output_for_mask) else E.op("Where", started, Y_h, zero)
    outputs = E.op("Where", E.op("Unsqueeze", valid, E.ints([2])), Y, held)

    # A mask with holes is not a sequence length: such rows come out as NaN rather than as
    # silently different numbers.
    agrees = E.op("Equal", E.op("Cast", mask, to=7), E.op("Cast", valid, to=7))
    row_ok = E.op("ReduceMin", E.op("Cast", agrees, to=7), E.ints([0]), keepdims=0)
    row_ok = E.op("Unsqueeze", E.op("Cast", row_ok, to=9), E.ints([1]))            # (B, 1)
    nan = E.scalar_like(float("nan"), x)
    outputs = E.op("Where", E.op("Unsqueeze", row_ok, E.ints([0])), outputs, nan)
    final = E.op("Where", row_ok, final, nan)
    return (_flip_time(E, outputs) if go_backwards else outputs), final
