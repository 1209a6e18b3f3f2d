"""The functional GRU: one call runs a whole sequence on the fused kernels."""
from __future__ import annotations

import contextlib
from typing import Optional, Tuple

import torch

from gru_cuda import activations, ops, reference
from gru_cuda._validation import check_gru_args
from gru_cuda.activations import ActivationArg

__all__ = ["gru"]


def _autocast_dtype(device_type: str):
    if device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def _autocast_cast(t, dtype):
    # As native autocast does: only floating tensors other than float64 are cast.
    if (isinstance(t, torch.Tensor) and t.is_floating_point()
            and t.dtype not in (dtype, torch.float64)):
        return t.to(dtype)
    return t


def gru(
    x: torch.Tensor,
    kernel: torch.Tensor,
    recurrent_kernel: torch.Tensor,
    bias: Optional[torch.Tensor] = None,
    initial_state: Optional[torch.Tensor] = None,
    *,
    reset_after: bool = True,
    activation: ActivationArg = "tanh",
    recurrent_activation: ActivationArg = "sigmoid",
    go_backwards: bool = False,
    time_major: bool = False,
    mask: Optional[torch.Tensor] = None,
    zero_output_for_mask: bool = False,
    input_dropout_mask: Optional[torch.Tensor] = None,
    recurrent_dropout_mask: Optional[torch.Tensor] = None,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Gated Recurrent Unit over a whole sequence, with Keras 3 numerics.

    With `W = kernel`, `U = recurrent_kernel`, σ = `recurrent_activation`, φ = `activation`,
    gate blocks in the Keras order [z, r, h], each step computes

        z  = σ(x W_z + b_iz + h U_z + b_hz)
        r  = σ(x W_r + b_ir + h U_r + b_hr)
        h~ = φ(x W_h + b_ih + r ⊙ (h U_h + b_hh))     # reset_after=True (cuDNN-compatible)
        h~ = φ(x W_h + b_h  + (r ⊙ h) U_h)            # reset_after=False
        h_t = z ⊙ h + (1 - z) ⊙ h~

    The input projection runs once for all timesteps; the recurrence runs in fused kernels
    (CPU, or CUDA for CUDA tensors). Gradients flow to `x`, `kernel`, `recurrent_kernel`,
    `bias` and `initial_state` through a fused backward.

    Args:
        x: input, `(batch, timesteps, features)`, or `(timesteps, batch, features)` when
            `time_major`. float32, float64, bfloat16 (and float16 on CUDA).
        kernel: `(features, 3 * units)`, Keras layout, column blocks [z, r, h].
        recurrent_kernel: `(units, 3 * units)`, same blocks.
        bias: `(2, 3 * units)` when `reset_after` (row 0 the input bias, row 1 the recurrent
            bias), `(3 * units,)` otherwise, or None for no bias.
        initial_state: `(batch, units)`; zeros when None.
        reset_after: apply the reset gate after the recurrent product (True, Keras' default
            and cuDNN's convention) or before it (False, the original GRU paper).
        activation, recurrent_activation: Keras activation names. Fused in the kernels:
            tanh, sigmoid, hard_sigmoid (Keras 3: clip(x/6 + 0.5, 0, 1)), relu, linear (or None),
            softsign, elu, selu, softplus, swish/silu, gelu (exact erf form), exponential.
            Other Keras names (relu6, leaky_relu, mish, ...) and Python callables are accepted
            but run on the slow path: a per-step PyTorch loop (`gru_cuda.reference.gru`).
        go_backwards: process the sequence from the last step to the first; the returned
            sequence is in processing order (`outputs[:, 0]` belongs to the last input step).
        time_major: inputs and outputs are `(timesteps, batch, ...)`.
        mask: bool `(batch, timesteps)` (`(timesteps, batch)` when `time_major`), True = use the
            step; other dtypes are cast to bool. At a masked step the state is carried and the
            output repeats the previous output (zeros before the first valid step).
        zero_output_for_mask: output zeros, not the previous output, at masked steps.
        input_dropout_mask: `(batch, features)` shared by the three gates, or
            `(3, batch, features)` one per gate; multiplies the input of every step.
        recurrent_dropout_mask: `(3, batch, units)`; multiplies h_{t-1} before each gate's
            recurrent product. The carried state itself is never dropped (Keras >= 3.8).

    Returns:
        `(outputs, final_state)`: outputs `(batch, timesteps, units)` (time-major when
        `time_major`), final_state `(batch, units)`: the state after the last unmasked step.
    """
    # Autocast: the op runs in the autocast dtype (accumulating in float32); the casts happen
    # before the checks so that a low-precision x meets float32 parameters, and are
    # differentiable, so float32 parameters receive float32 gradients.
    cast = _autocast_dtype(x.device.type) if isinstance(x, torch.Tensor) else None
    if cast is not None:
        (x, kernel, recurrent_kernel, bias, initial_state, input_dropout_mask,
         recurrent_dropout_mask) = (
            _autocast_cast(t, cast)
            for t in (x, kernel, recurrent_kernel, bias, initial_state, input_dropout_mask,
                      recurrent_dropout_mask))
    sizes = check_gru_args(
        x, kernel, recurrent_kernel, bias, initial_state, reset_after=reset_after,
        time_major=time_major, mask=mask, input_dropout_mask=input_dropout_mask,
        recurrent_dropout_mask=recurrent_dropout_mask)
    T, B, F, H = sizes
    act_id = activations.fused_id(activation, "activation")
    rec_id = activations.fused_id(recurrent_activation, "recurrent_activation")
    if act_id is None or rec_id is None:
        return reference.gru_checked(
            sizes, x, kernel, recurrent_kernel, bias, initial_state, reset_after=reset_after,
            activation=activation, recurrent_activation=recurrent_activation,
            go_backwards=go_backwards, time_major=time_major, mask=mask,
            zero_output_for_mask=zero_output_for_mask, input_dropout_mask=input_dropout_mask,
            recurrent_dropout_mask=recurrent_dropout_mask)

    if initial_state is None:
        initial_state = x.new_zeros(B, H)
    if not time_major:
        x = x.transpose(0, 1)
        if mask is not None:
            mask = mask.transpose(0, 1)
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(torch.bool)

    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad
        for t in (x, kernel, recurrent_kernel, bias, initial_state))
    # The inputs already have their final dtype; autocast must not reach the GEMMs inside the
    # op (they write into buffers of the compute dtype), so it is off for the call.
    no_autocast = (torch.autocast(x.device.type, enabled=False) if cast is not None
                   else contextlib.nullcontext())
    with no_autocast:
        outputs, final_state, _, _ = ops.gru_forward(
            x, kernel, recurrent_kernel, bias, initial_state, mask, input_dropout_mask,
            recurrent_dropout_mask, bool(reset_after), act_id, rec_id, bool(go_backwards),
            bool(zero_output_for_mask), need_grad)
    if not time_major:
        outputs = outputs.transpose(0, 1).contiguous()
    return outputs, final_state
