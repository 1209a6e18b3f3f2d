"""The symbolic of `gru_cuda::gru_forward` for the TorchScript-based ONNX exporter
(`torch.onnx.export(..., dynamo=False)`), registered with
`torch.onnx.register_custom_op_symbolic`.
"""
from __future__ import annotations

import torch
import torch.onnx
from torch.onnx import symbolic_helper as sh

from gru_cuda.onnx import _graph

# CastLike (used for dtype-agnostic constants) needs opset 15.
OPSET = 15
_SUFFIX = {bool: "i", int: "i", float: "f", str: "s"}


class _GraphEmitter:
    """The emitter of _graph.build_gru over a TorchScript ONNX graph context `g`."""

    def __init__(self, g):
        self.g = g

    def op(self, name, *inputs, n_out=1, **attrs):
        named = {}
        for key, value in attrs.items():
            kind = type(value[0] if isinstance(value, (list, tuple)) else value)
            named[f"{key}_{_SUFFIX[kind]}"] = value
        return self.g.op(name, *inputs, outputs=n_out, **named)

    def ints(self, values):
        return self.g.op("Constant", value_t=torch.tensor(values, dtype=torch.int64))

    def int_scalar(self, value):
        return self.g.op("Constant", value_t=torch.tensor(value, dtype=torch.int64))

    def scalar_like(self, value, like):
        return self.g.op("CastLike", self.g.op(
            "Constant", value_t=torch.tensor(value, dtype=torch.float64)), like)

    def none(self):
        return self.g.op("prim::Constant").setType(torch._C.OptionalType.ofTensor())


def _const(value, desc, name):
    parsed = sh._parse_arg(value, desc)
    if sh._is_value(parsed):
        raise _graph.ExportError(f"gru_cuda ONNX export: {name} must be a constant")
    return parsed


def gru_forward_symbolic(g, x, kernel, recurrent_kernel, bias, h0, mask, input_dropout_mask,
                         recurrent_dropout_mask, reset_after, activation, recurrent_activation,
                         go_backwards, zero_output_for_mask, save_for_backward):
    """TorchScript symbolic: the same graph as the torch.export-based translation. Dropout
    masks are ignored (inference). Returns the four outputs of the op; the last two (for
    the backward) are unused placeholders."""
    sizes = sh._get_tensor_sizes(recurrent_kernel)
    if not sizes or sizes[0] is None:
        raise _graph.ExportError("gru_cuda ONNX export: recurrent_kernel needs a static shape")
    H = int(sizes[0])
    reset_after = bool(_const(reset_after, "b", "reset_after"))
    outputs, final = _graph.build_gru(
        _GraphEmitter(g), x, kernel, recurrent_kernel,
        None if sh._is_none(bias) else bias, h0, None if sh._is_none(mask) else mask,
        H=H, reset_after=reset_after,
        activation=_graph.activation_name(_const(activation, "i", "activation"), "activation"),
        recurrent_activation=_graph.activation_name(
            _const(recurrent_activation, "i", "recurrent_activation"), "recurrent_activation"),
        go_backwards=bool(_const(go_backwards, "b", "go_backwards")),
        zero_output_for_mask=bool(_const(zero_output_for_mask, "b", "zero_output_for_mask")))
    return outputs, final, g.op("Identity", outputs), g.op("Identity", outputs)


def _optional(t):
    return None if sh._is_none(t) else t


def gru_bidirectional_forward_symbolic(g, x, kernel_f, recurrent_kernel_f, bias_f, h0_f,
                                       kernel_b, recurrent_kernel_b, bias_b, h0_b, mask,
                                       reset_after, activation, recurrent_activation,
                                       zero_output_for_mask_f, zero_output_for_mask_b):
    """TorchScript symbolic of gru_bidirectional_forward: one bidirectional GRU node."""
    sizes = sh._get_tensor_sizes(recurrent_kernel_f)
    if not sizes or sizes[0] is None:
        raise _graph.ExportError("gru_cuda ONNX export: recurrent_kernel needs a static shape")
    (out_f, final_f), (out_b, final_b) = _graph.build_bidirectional(
        _GraphEmitter(g), x, (kernel_f, recurrent_kernel_f, _optional(bias_f), h0_f),
        (kernel_b, recurrent_kernel_b, _optional(bias_b), h0_b), _optional(mask), H=int(sizes[0]),
        reset_after=bool(_const(reset_after, "b", "reset_after")),
        activation=_graph.activation_name(_const(activation, "i", "activation"), "activation"),
        recurrent_activation=_graph.activation_name(
            _const(recurrent_activation, "i", "recurrent_activation"), "recurrent_activation"),
        zero_output_for_mask=(bool(_const(zero_output_for_mask_f, "b", "zero_output_for_mask")),
                              bool(_const(zero_output_for_mask_b, "b", "zero_output_for_mask"))))
    return out_f, final_f, out_b, final_b


def register() -> None:
    torch.onnx.register_custom_op_symbolic("gru_cuda::gru_forward", gru_forward_symbolic, OPSET)
    torch.onnx.register_custom_op_symbolic("gru_cuda::gru_bidirectional_forward",
                                           gru_bidirectional_forward_symbolic, OPSET)
