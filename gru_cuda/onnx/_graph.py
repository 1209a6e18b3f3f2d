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


def _onnx_weights(E, x, kernel, recurrent_kernel, bias, *, H: int, reset_after: bool):
    """ONNX's W `[1, 3H, F]`, R `[1, 3H, H]` and B `[1, 6H]` of one direction."""
    W = E.op("Unsqueeze", E.op("Transpose", kernel, perm=[1, 0]), E.ints([0]))
    R = E.op("Unsqueeze", E.op("Transpose", recurrent_kernel, perm=[1, 0]), E.ints([0]))
    if bias is None:
        B = E.op("CastLike", E.op("ConstantOfShape", E.ints([1, 6 * H])), x)
    elif reset_after:  # rows [input | recurrent] are already ONNX's [Wb | Rb]
        B = E.op("Reshape", bias, E.ints([1, 6 * H]))
    else:  # input bias only: the recurrent half is zero
        B = E.op("Unsqueeze", E.op("Pad", bias, E.ints([0, 3 * H])), E.ints([0]))
    return W, R, B


def _gather_time(E, values, index):
    """values[index[t, b], b, :] for `values (T, B, C)`, `index (T, B)` int64."""
    index = E.op("Expand", E.op("Unsqueeze", index, E.ints([2])), E.op("Shape", values))
    return E.op("GatherElements", values, index, axis=0)


def _run_gru_node(E, x, weights, h0s, mask, *, H: int, attrs: dict, zero_outputs):
    """Runs one ONNX GRU node (one or two directions: `weights` and `h0s` per direction) and
    returns, per direction, `(outputs (T, B, H) in processing order, final_state (B, H))`.

    With a mask, any mask, not only a right-padded one: the valid steps of each row are moved
    to its front, in time order (a stable sort, done by TopK over unique keys), and the node
    runs with `sequence_lens` = the number of valid steps. A masked step carries the state
    unchanged, so the states after the valid steps are exactly those of the compacted
    sequence; each step's output is then gathered back from the node's `Y`. For a
    right-padded mask the permutation is the identity.
    """
    W, R, B = (E.op("Concat", *parts, axis=0) if len(parts) > 1 else parts[0]
               for parts in zip(*weights))
    h_init = E.op("Concat", *[E.op("Unsqueeze", h, E.ints([0])) for h in h0s], axis=0)
    if mask is None:
        Y, Y_h = E.op("GRU", x, W, R, B, E.none(), h_init, n_out=2, **attrs)
        results = []
        for d, h0 in enumerate(h0s):
            out = E.op("Gather", Y, E.int_scalar(d), axis=1)
            final = E.op("Gather", Y_h, E.int_scalar(d), axis=0)
            reverse = attrs["direction"] == "reverse" or d == 1
            results.append((_flip_time(E, out) if reverse else out, final))
        return results

    valid = E.op("Cast", mask, to=7)                                          # int64 (T, B)
    T1 = E.op("Shape", x, start=0, end=1)                                     # [T]
    steps = E.op("Unsqueeze", E.op("Range", E.int_scalar(0), E.op("Squeeze", T1, E.ints([0])),
                                   E.int_scalar(1)), E.ints([1]))            # (T, 1)
    # Key t for a valid step, T + t for a masked one: unique, so the ascending TopK is the
    # stable partition "valid steps first, each group in time order".
    key = E.op("Add", steps, E.op("Mul", E.op("Sub", E.int_scalar(1), valid), T1))
    _, order = E.op("TopK", key, T1, n_out=2, axis=0, largest=0, sorted=1)
    packed = _gather_time(E, x, order)
    counted = E.op("CumSum", valid, E.int_scalar(0))           # valid steps up to t, inclusive
    lens = E.op("ReduceSum", valid, E.ints([0]), keepdims=0)                  # (B,)
    Y, Y_h = E.op("GRU", packed, W, R, B, E.op("Cast", lens, to=6), h_init, n_out=2, **attrs)

    is_valid = E.op("Cast", mask, to=9)
    last = E.op("Sub", T1, E.int_scalar(1))
    started = E.op("Unsqueeze", E.op("Greater", lens, E.int_scalar(0)), E.ints([1]))  # (B, 1)
    zero = E.scalar_like(0.0, x)
    results = []
    for d, (h0, zero_output) in enumerate(zip(h0s, zero_outputs)):
        reverse = attrs["direction"] == "reverse" or d == 1
        # The packed position of the output at step t: its own for a valid step; for a
        # masked step, the previous output in processing order, i.e. the last valid step
        # before t going forward, the first valid step after t going backwards.
        if reverse:
            where = E.op("Where", is_valid, E.op("Sub", counted, E.int_scalar(1)), counted)
            held = E.op("Less", where, E.op("Unsqueeze", lens, E.ints([0])))
        else:
            where = E.op("Sub", counted, E.int_scalar(1))
            held = E.op("Greater", counted, E.int_scalar(0))
        use = is_valid if zero_output else E.op("Or", is_valid, held)
        where = E.op("Min", E.op("Max", where, E.int_scalar(0)), last)
        out = _gather_time(E, E.op("Gather", Y, E.int_scalar(d), axis=1), where)
        out = E.op("Where", E.op("Unsqueeze", use, E.ints([2])), out, zero)
        # A row with no valid step keeps its initial state (Keras), whatever the runtime says.
        final = E.op("Where", started, E.op("Gather", Y_h, E.int_scalar(d), axis=0), h0)
        results.append((_flip_time(E, out) if reverse else out, final))
    return results


def build_gru(E, x, kernel, recurrent_kernel, bias, h0, mask, *, H: int, reset_after: bool,
              activation: str, recurrent_activation: str, go_backwards: bool,
              zero_output_for_mask: bool):
    """Emits the ONNX graph of one gru_forward call (inference: no dropout masks).

    Args mirror the op (csrc/gru_ops.cpp): x `(T, B, F)` time-major, kernel `(F, 3H)`,
    recurrent_kernel `(H, 3H)`, bias `(2, 3H)` / `(3H,)` / None, h0 `(B, H)`, mask bool
    `(T, B)` or None. Returns `(outputs (T, B, H) in processing order, final_state (B, H))`.
    """
    attrs = gru_attributes(activation, recurrent_activation, H, reset_after, go_backwards)
    weights = _onnx_weights(E, x, kernel, recurrent_kernel, bias, H=H, reset_after=reset_after)
    (result,) = _run_gru_node(E, x, [weights], [h0], mask, H=H, attrs=attrs,
                              zero_outputs=[zero_output_for_mask])
    return result


def build_bidirectional(E, x, forward, backward, mask, *, H: int, reset_after: bool,
                        activation: str, recurrent_activation: str, zero_output_for_mask):
    """Emits one `direction="bidirectional"` GRU node for two gru_forward calls on the same
    x and mask, the first with go_backwards=False, the second with go_backwards=True.

    `forward` and `backward` are each `(kernel, recurrent_kernel, bias, h0)`;
    `zero_output_for_mask` is a pair. Returns `[(outputs, final_state)] * 2`, each as
    build_gru returns it (the backward outputs in its processing order).
    """
    attrs = gru_attributes(activation, recurrent_activation, H, reset_after, False)
    attrs["direction"] = "bidirectional"
    for key in ("activations", "activation_alpha", "activation_beta"):
        if key in attrs:  # listed per direction: [f, g] of the forward, then of the reverse
            attrs[key] = attrs[key] * 2
    weights = [_onnx_weights(E, x, *params[:3], H=H, reset_after=reset_after)
               for params in (forward, backward)]
    return _run_gru_node(E, x, weights, [forward[3], backward[3]], mask, H=H, attrs=attrs,
                         zero_outputs=list(zero_output_for_mask))
