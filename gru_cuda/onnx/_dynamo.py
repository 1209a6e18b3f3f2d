"""The translation of `gru_cuda::gru_forward` for torch 2.x's torch.export-based ONNX
exporter (`torch.onnx.export(..., dynamo=True)`, the default since torch 2.9).

The exporter traces a translation function with onnxscript ops recording into its graph;
`translate_gru_forward` is that function. Importing this module imports onnxscript.
"""
from __future__ import annotations

import numpy as np
import onnx_ir as ir
from onnxscript import opset18 as op

from gru_cuda.onnx import _graph


class _ScriptEmitter:
    """The emitter of _graph.build_gru over onnxscript ops (recorded by the exporter)."""

    def op(self, name, *inputs, n_out=1, **attrs):
        out = getattr(op, name)(*inputs, **attrs)
        return tuple(out)[:n_out] if n_out > 1 else out

    def ints(self, values):
        return op.Constant(value=ir.tensor(np.asarray(values, dtype=np.int64)))

    def int_scalar(self, value):
        return op.Constant(value=ir.tensor(np.asarray(value, dtype=np.int64)))

    def scalar_like(self, value, like):
        return op.CastLike(op.Constant(value=ir.tensor(np.asarray(value, dtype=np.float64))),
                           like)

    def none(self):
        return None


def translate_gru_forward(x, kernel, recurrent_kernel, bias, h0, mask, input_dropout_mask,
                          recurrent_dropout_mask, reset_after, activation, recurrent_activation,
                          go_backwards, zero_output_for_mask, save_for_backward):
    """ONNX form of gru_forward. Dropout masks are ignored: the export is the inference
    function (Keras' masks are pre-scaled, so inference is "no mask")."""
    del input_dropout_mask, recurrent_dropout_mask
    H = int(recurrent_kernel.shape[0])
    outputs, final = _graph.build_gru(
        _ScriptEmitter(), x, kernel, recurrent_kernel, bias, h0, mask, H=H,
        reset_after=bool(reset_after),
        activation=_graph.activation_name(activation, "activation"),
        recurrent_activation=_graph.activation_name(recurrent_activation,
                                                    "recurrent_activation"),
        go_backwards=bool(go_backwards), zero_output_for_mask=bool(zero_output_for_mask))
    # states and workspace only feed the backward; nothing reads them in an inference graph,
    # and the exporter's optimizer drops these placeholders.
    if save_for_backward:
        width = (4 if reset_after else 3) * H
        shape = op.Concat(op.Shape(x, start=0, end=2), op.Constant(value_ints=[width]), axis=0)
        states = op.Identity(outputs)
        workspace = op.CastLike(op.ConstantOfShape(shape), x)
    else:
        states = op.CastLike(op.ConstantOfShape(op.Constant(value_ints=[0])), x)
        workspace = op.CastLike(op.ConstantOfShape(op.Constant(value_ints=[0])), x)
    return outputs, final, states, workspace


def translate_gru_bidirectional_forward(x, kernel_f, recurrent_kernel_f, bias_f, h0_f,
                                        kernel_b, recurrent_kernel_b, bias_b, h0_b, mask,
                                        reset_after, activation, recurrent_activation,
                                        zero_output_for_mask_f, zero_output_for_mask_b):
    """ONNX form of gru_bidirectional_forward: one bidirectional GRU node."""
    (out_f, final_f), (out_b, final_b) = _graph.build_bidirectional(
        _ScriptEmitter(), x, (kernel_f, recurrent_kernel_f, bias_f, h0_f),
        (kernel_b, recurrent_kernel_b, bias_b, h0_b), mask,
        H=int(recurrent_kernel_f.shape[0]), reset_after=bool(reset_after),
        activation=_graph.activation_name(activation, "activation"),
        recurrent_activation=_graph.activation_name(recurrent_activation,
                                                    "recurrent_activation"),
        zero_output_for_mask=(bool(zero_output_for_mask_f), bool(zero_output_for_mask_b)))
    return out_f, final_f, out_b, final_b


def _add(table) -> None:
    import torch
    from torch.onnx._internal.exporter import _registration

    from gru_cuda.onnx import _bidirectional  # defines the op

    del _bidirectional
    for target, function in (
            (torch.ops.gru_cuda.gru_forward.default, translate_gru_forward),
            (torch.ops.gru_cuda.gru_bidirectional_forward.default,
             translate_gru_bidirectional_forward)):
        if not any(m.fx_target is target for m in table._registry):
            table._registry.append(_registration.OnnxDecompMeta(
                onnx_function=function, fx_target=target, signature=None,
                is_custom=True, skip_signature_inference=True))


def register() -> None:
    """Adds the translation to the exporter's built-in function table, which every export
    reads through `get_torchlib_ops()`. The entry is added on the first such read: this may
    run while torch's exporter modules are still initializing, when they cannot be used."""
    from torch.onnx._internal.exporter._torchlib import _torchlib_registry as table

    original = table.get_torchlib_ops
    if getattr(original, "_with_gru_cuda", False):
        return

    def get_torchlib_ops():
        _add(table)
        return original()

    get_torchlib_ops._with_gru_cuda = True
    table.get_torchlib_ops = get_torchlib_ops
