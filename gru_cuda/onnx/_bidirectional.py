"""One op for both directions of a `Bidirectional(GRU)`, used only while exporting to ONNX.

`gru_cuda::gru_bidirectional_forward` is the two gru_forward calls of a Bidirectional layer
(forward, then go_backwards) as one op: eagerly it runs exactly those two calls, and the
ONNX translations (`_dynamo.py`, `_torchscript.py`) emit it as one GRU node with
`direction="bidirectional"`. `Bidirectional.forward` routes through it only under
`torch.onnx.export` and only when the two layers can share one node (`export_runs`);
otherwise, and always in eager use and training, each layer makes its own call.

This module does not import onnxscript.
"""
from __future__ import annotations

import contextlib
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from gru_cuda import activations, ops
from gru_cuda._validation import check_gru_args


@torch.library.custom_op("gru_cuda::gru_bidirectional_forward", mutates_args=())
def gru_bidirectional_forward(
        x: Tensor, kernel_f: Tensor, recurrent_kernel_f: Tensor, bias_f: Optional[Tensor],
        h0_f: Tensor, kernel_b: Tensor, recurrent_kernel_b: Tensor, bias_b: Optional[Tensor],
        h0_b: Tensor, mask: Optional[Tensor], reset_after: bool, activation: int,
        recurrent_activation: int, zero_output_for_mask_f: bool,
        zero_output_for_mask_b: bool) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
    """Two gru_forward calls on time-major x `(T, B, F)` and mask `(T, B)`: the first
    forwards, the second with go_backwards. Returns `(outputs_f, final_f, outputs_b,
    final_b)` as gru_forward returns them (outputs in processing order)."""
    out_f, final_f, _, _ = ops.gru_forward(
        x, kernel_f, recurrent_kernel_f, bias_f, h0_f, mask, None, None, reset_after,
        activation, recurrent_activation, False, zero_output_for_mask_f, False)
    out_b, final_b, _, _ = ops.gru_forward(
        x, kernel_b, recurrent_kernel_b, bias_b, h0_b, mask, None, None, reset_after,
        activation, recurrent_activation, True, zero_output_for_mask_b, False)
    # A batch-major x gives batch-major outputs on the CPU; the fake below promises contiguous.
    return out_f.contiguous(), final_f, out_b.contiguous(), final_b


@gru_bidirectional_forward.register_fake
def _fake(x, kernel_f, recurrent_kernel_f, bias_f, h0_f, kernel_b, recurrent_kernel_b, bias_b,
          h0_b, mask, reset_after, activation, recurrent_activation, zero_output_for_mask_f,
          zero_output_for_mask_b):
    T, B = x.shape[0], x.shape[1]
    H = recurrent_kernel_f.shape[0]
    return (x.new_empty(T, B, H), x.new_empty(B, H), x.new_empty(T, B, H), x.new_empty(B, H))


def _shareable(fwd, bwd, training: bool) -> bool:
    """Whether the two layers can be one bidirectional ONNX GRU node."""
    from gru_cuda.layers.gru import GRU
    from gru_cuda.onnx._graph import ONNX_GRU_ACTIVATIONS

    if not (type(fwd) is GRU and type(bwd) is GRU and fwd.built and bwd.built):
        return False
    if fwd.go_backwards or not bwd.go_backwards:
        return False  # the node's direction 0 is forward, direction 1 reverse
    same = ("units", "reset_after", "activation", "recurrent_activation", "use_bias")
    if any(getattr(fwd, a) != getattr(bwd, a) for a in same):
        return False
    if fwd.kernel.dtype != bwd.kernel.dtype:
        return False
    if training and any(layer.dropout or layer.recurrent_dropout for layer in (fwd, bwd)):
        return False
    for name in ("activation", "recurrent_activation"):
        act_id = activations.fused_id(getattr(fwd, name), name)
        # Anything else keeps its own calls, whose export says what is missing.
        if act_id is None or activations.FUSED_NAMES[act_id] not in ONNX_GRU_ACTIVATIONS:
            return False
    return True


def export_runs(layer, inputs, mask, forward_state, backward_state,
                training) -> Optional[List[Tuple[Tensor, Tensor]]]:
    """During `torch.onnx.export`, the results of a Bidirectional layer's two GRU runs made
    by one gru_bidirectional_forward call, each as `functional.gru` returns it; None when
    not exporting or when the layers cannot share a node (then each runs on its own)."""
    if not torch.onnx.is_in_onnx_export():
        return None
    fwd, bwd = layer.forward_layer, layer.backward_layer
    training = fwd.training if training is None else bool(training)
    if not isinstance(inputs, Tensor) or inputs.dim() != 3:
        return None  # the layers' own calls word the error
    if not _shareable(fwd, bwd, training):
        return None
    x = inputs
    dtype = fwd._prepare(x)
    bwd._prepare(x)
    if dtype is not None and x.dtype != dtype:
        x = x.to(dtype)
    time_major = fwd.time_major
    T, B = (x.shape[0], x.shape[1]) if time_major else (x.shape[1], x.shape[0])
    h0s = []
    for sub, state in ((fwd, forward_state), (bwd, backward_state)):
        h0 = sub._resolve_initial_states(state, B, x)
        h0 = x.new_zeros(B, sub.units) if h0 is None else h0[0]
        check_gru_args(x, sub.kernel, sub.recurrent_kernel, sub.bias, h0,
                       reset_after=sub.reset_after, time_major=time_major, mask=mask,
                       input_dropout_mask=None, recurrent_dropout_mask=None)
        h0s.append(h0)
    if mask is not None:
        mask = torch.as_tensor(mask, device=x.device).to(torch.bool)
        mask = mask if time_major else mask.transpose(0, 1)
    xt = x if time_major else x.transpose(0, 1)
    act = activations.fused_id(fwd.activation, "activation")
    rec = activations.fused_id(fwd.recurrent_activation, "recurrent_activation")
    out_f, final_f, out_b, final_b = gru_bidirectional_forward(
        xt, fwd.kernel, fwd.recurrent_kernel, fwd.bias, h0s[0], bwd.kernel, bwd.recurrent_kernel,
        bwd.bias, h0s[1], mask, bool(fwd.reset_after), act, rec,
        bool(fwd.zero_output_for_mask), bool(bwd.zero_output_for_mask))
    if not time_major:
        out_f, out_b = out_f.transpose(0, 1), out_b.transpose(0, 1)
    return [(out_f, final_f), (out_b, final_b)]


@contextlib.contextmanager
def replaying(layer, result):
    """Within the block, `layer`'s GRU run returns `result` (from export_runs) instead of
    running, so that the layer's own forward shapes its outputs exactly as usual."""
    if result is None:
        yield
        return
    layer._run_gru = lambda *args, **kwargs: result
    try:
        yield
    finally:
        del layer._run_gru
