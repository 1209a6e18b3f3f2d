"""Python registrations of the compiled ops: fake (meta) kernels for torch.compile and
torch.export, and autograd, whose backward is the fused gru_backward op.

The schemas and their contract live in csrc/gru_ops.cpp.
"""
from __future__ import annotations

import torch

from gru_cuda._library import _C

_ACTIVATION_NAMES = tuple(_C.activation_names())

gru_forward = torch.ops.gru_cuda.gru_forward.default
gru_backward = torch.ops.gru_cuda.gru_backward.default


def _workspace_width(reset_after: bool, H: int) -> int:
    return (4 if reset_after else 3) * H


def _check_like_x(x, named):
    """The fake kernels' version of csrc/gru_checks.cpp's device/dtype/shape checks, so that a
    raw op call that lands on a fake kernel (e.g. one argument on the meta device) fails just
    like the real kernel would. Shapes go through torch._check, which is SymInt-friendly."""
    for name, t, shape, same_dtype in named:
        if t is None:
            continue
        if t.device != x.device:
            raise ValueError(f"gru: {name} is on device {t.device} but x is on device {x.device}; "
                             "all tensors must be on one device")
        if same_dtype and t.dtype != x.dtype:
            raise TypeError(
                f"gru: {name} must have dtype {x.dtype} (the dtype of x), got {t.dtype}")
        if shape is not None:
            torch._check(
                t.dim() == len(shape) and all(a == b for a, b in zip(t.shape, shape)),
                lambda: f"gru: {name} must have shape {tuple(shape)}, got {tuple(t.shape)}")


def _check_forward_fake(x, kernel, recurrent_kernel, bias, h0, mask, idm, rdm, reset_after,
                        activation, recurrent_activation):
    if x.dim() != 3:
        raise ValueError(f"gru: x must be 3-D (T, B, F) time-major, got shape {tuple(x.shape)}")
    T, B, F = x.shape
    H = recurrent_kernel.shape[0]
    for name, a in (("activation", activation), ("recurrent_activation", recurrent_activation)):
        if not 0 <= a < len(_ACTIVATION_NAMES):
            raise ValueError(f"gru: {name} id must be in [0, {len(_ACTIVATION_NAMES)}), got {a}")
    _check_like_x(x, [
        ("kernel", kernel, (F, 3 * H), True),
        ("recurrent_kernel", recurrent_kernel, (H, 3 * H), True),
        ("bias", bias, (2, 3 * H) if reset_after else (3 * H,), True),
        ("initial_state", h0, (B, H), True),
        ("mask", mask, (T, B), False),
        ("input_dropout_mask", idm, None, True),
        ("recurrent_dropout_mask", rdm, (3, B, H), True),
    ])


def _cpu_batch_major(x) -> bool:
    """The CPU op reads an x that is the (T, B, F) view of a contiguous (B, T, F) tensor in place
    and returns its outputs (gru_backward: grad_x) in the same layout (is_batch_major in
    csrc/cpu/gru_cpu_ops.h)."""
    return (x.device.type == "cpu" and x.dim() == 3 and not x.is_contiguous()
            and x.transpose(0, 1).is_contiguous())


def _saved_dtype(x) -> torch.dtype:
    """The dtype of the saved states and workspace: the CPU op keeps those of bfloat16/float16
    inputs in float32, the dtype it computes them in (cpu_saved_dtype in csrc/gru_checks.h);
    the CUDA kernels save x's dtype."""
    if x.device.type == "cpu" and x.dtype in (torch.bfloat16, torch.float16):
        return torch.float32
    return x.dtype


@torch.library.register_fake("gru_cuda::gru_forward")
def _gru_forward_fake(x, kernel, recurrent_kernel, bias, h0, mask, input_dropout_mask,
                      recurrent_dropout_mask, reset_after, activation, recurrent_activation,
                      go_backwards, zero_output_for_mask, save_for_backward):
    _check_forward_fake(x, kernel, recurrent_kernel, bias, h0, mask, input_dropout_mask,
                        recurrent_dropout_mask, reset_after, activation, recurrent_activation)
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    if _cpu_batch_major(x):
        outputs = x.new_empty((B, T, H)).transpose(0, 1)
    else:
        outputs = x.new_empty((T, B, H))
    final_state = x.new_empty((B, H))
    saved = _saved_dtype(x)
    if save_for_backward:
        states = x.new_empty((T, B, H), dtype=saved)
        workspace = x.new_empty((T, B, _workspace_width(reset_after, H)), dtype=saved)
    else:
        states = x.new_empty((0,), dtype=saved)
        workspace = x.new_empty((0,), dtype=saved)
    return outputs, final_state, states, workspace


@torch.library.register_fake("gru_cuda::gru_backward")
def _gru_backward_fake(grad_outputs, grad_final_state, x, kernel, recurrent_kernel, h0, states,
                       workspace, mask, input_dropout_mask, recurrent_dropout_mask, has_bias,
                       reset_after, activation, recurrent_activation, go_backwards,
                       zero_output_for_mask, need_grad_x=True):
    _check_forward_fake(x, kernel, recurrent_kernel, None, h0, mask, input_dropout_mask,
                        recurrent_dropout_mask, reset_after, activation, recurrent_activation)
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    _check_like_x(x, [
        ("grad_outputs", grad_outputs, (T, B, H), True),
        ("grad_final_state", grad_final_state, (B, H), True),
        ("states", states, (T, B, H), False),
        ("workspace", workspace, (T, B, _workspace_width(reset_after, H)), False),
    ])
    for name, t in (("states", states), ("workspace", workspace)):
        if t.dtype != _saved_dtype(x):
            raise TypeError(f"gru: {name} must have dtype {_saved_dtype(x)} (as gru_forward saves "
                            f"it for x of dtype {x.dtype}), got {t.dtype}")
    if has_bias:
        grad_bias = x.new_empty((2, 3 * H) if reset_after else (3 * H,))
    else:
        grad_bias = x.new_empty((0,))
    if not need_grad_x:
        grad_x = x.new_empty((0,))
    elif _cpu_batch_major(x):  # the CPU op writes grad_x in x's layout
        grad_x = x.new_empty((B, T, x.shape[2])).transpose(0, 1)
    else:
        grad_x = x.new_empty(x.shape)
    return (grad_x, kernel.new_empty(kernel.shape),
            recurrent_kernel.new_empty(recurrent_kernel.shape), grad_bias, h0.new_empty(h0.shape))


def _setup_context(ctx, inputs, output):
    (x, kernel, recurrent_kernel, bias, h0, mask, input_dropout_mask, recurrent_dropout_mask,
     reset_after, activation, recurrent_activation, go_backwards, zero_output_for_mask,
     save_for_backward) = inputs
    _, _, states, workspace = output
    ctx.mark_non_differentiable(states, workspace)
    # No zero-filled gradients for the saved tensors (or an unused output): _backward takes None.
    ctx.set_materialize_grads(False)
    ctx.save_for_backward(x, kernel, recurrent_kernel, h0, states, workspace, mask,
                          input_dropout_mask, recurrent_dropout_mask)
    ctx.saved_all = bool(save_for_backward)
    ctx.options = (bias is not None, bool(reset_after), int(activation),
                   int(recurrent_activation), bool(go_backwards), bool(zero_output_for_mask))


def _backward(ctx, grad_outputs, grad_final_state, _grad_states, _grad_workspace):
    (x, kernel, recurrent_kernel, h0, states, workspace, mask, input_dropout_mask,
     recurrent_dropout_mask) = ctx.saved_tensors
    if not ctx.saved_all:
        raise RuntimeError("gru_cuda::gru_forward was called with save_for_backward=False, so it "
                           "saved nothing to differentiate; call it with save_for_backward=True "
                           "(gru_cuda.functional.gru does this whenever a gradient is needed)")
    has_bias, reset_after, activation, recurrent_activation, go_backwards, zero_out = ctx.options
    T, B, _ = x.shape
    H = recurrent_kernel.shape[0]
    if grad_outputs is None:
        grad_outputs = x.new_zeros((T, B, H))
    if grad_final_state is None:
        grad_final_state = x.new_zeros((B, H))
    grad_x, grad_kernel, grad_recurrent, grad_bias, grad_h0 = gru_backward(
        grad_outputs, grad_final_state, x, kernel, recurrent_kernel, h0, states, workspace, mask,
        input_dropout_mask, recurrent_dropout_mask, has_bias, reset_after, activation,
        recurrent_activation, go_backwards, zero_out, ctx.needs_input_grad[0])
    if not ctx.needs_input_grad[0]:  # x is data: the op skipped its product
        grad_x = None
    return (grad_x, grad_kernel, grad_recurrent, grad_bias if has_bias else None, grad_h0,
            None, None, None, None, None, None, None, None, None)


torch.library.register_autograd("gru_cuda::gru_forward", _backward, setup_context=_setup_context)
