"""The executable spec: a plain PyTorch GRU, float64-capable, with exactly the signature and
semantics of gru_cuda.functional.gru (Keras 3 numerics). Every kernel is tested against it.

It is written straight from the Keras equations, one step at a time, and shares no code with
the kernels beyond argument checking. It also serves activations with no fused kernel
(a Python callable, or a Keras name outside the fused set): correct, but a slow per-step loop.
"""
from __future__ import annotations

from typing import Optional, Tuple

import torch

from gru_cuda import activations
from gru_cuda.activations import ActivationArg
from gru_cuda._validation import GruSizes, check_gru_args


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
    """Reference GRU over a sequence; see gru_cuda.functional.gru for the arguments."""
    sizes = check_gru_args(
        x, kernel, recurrent_kernel, bias, initial_state, reset_after=reset_after,
        time_major=time_major, mask=mask, input_dropout_mask=input_dropout_mask,
        recurrent_dropout_mask=recurrent_dropout_mask)
    return gru_checked(
        sizes, x, kernel, recurrent_kernel, bias, initial_state, reset_after=reset_after,
        activation=activation, recurrent_activation=recurrent_activation,
        go_backwards=go_backwards, time_major=time_major, mask=mask,
        zero_output_for_mask=zero_output_for_mask, input_dropout_mask=input_dropout_mask,
        recurrent_dropout_mask=recurrent_dropout_mask)


def gru_checked(sizes: GruSizes, x, kernel, recurrent_kernel, bias, initial_state, *,
                reset_after, activation, recurrent_activation, go_backwards, time_major, mask,
                zero_output_for_mask, input_dropout_mask, recurrent_dropout_mask):
    """`gru` on arguments that `check_gru_args` has already accepted (it returned `sizes`):
    gru_cuda.functional.gru's slow path, which checked them itself."""
    T, B, _, H = sizes
    phi = activations.get(activation, "activation")
    sigma = activations.get(recurrent_activation, "recurrent_activation")

    if not time_major:
        x = x.transpose(0, 1)
        mask = None if mask is None else mask.transpose(0, 1)
    if mask is not None:
        mask = mask.to(torch.bool)
    h = x.new_zeros(B, H) if initial_state is None else initial_state

    def gates(t):  # the [z | r | h] column blocks (slicing, not split: units may be 0)
        return t[..., :H], t[..., H:2 * H], t[..., 2 * H:]

    W_z, W_r, W_h = gates(kernel)
    U_z, U_r, U_h = gates(recurrent_kernel)
    if bias is None:
        zero = x.new_zeros(H)
        b_iz = b_ir = b_ih = b_hz = b_hr = b_hh = zero
    elif reset_after:
        b_iz, b_ir, b_ih = gates(bias[0])
        b_hz, b_hr, b_hh = gates(bias[1])
    else:
        b_iz, b_ir, b_ih = gates(bias)

    prev_out = x.new_zeros(B, H)
    outputs = []
    for t in (range(T - 1, -1, -1) if go_backwards else range(T)):
        x_t, h_in = x[t], h
        if mask is not None:
            # A masked row's step is computed and then discarded. It runs on zeros, so that an
            # unbounded activation overflowing there cannot turn the discarded branch's zero
            # gradient into NaN (inf * 0) through torch.where's backward.
            valid = mask[t].unsqueeze(1)
            x_t, h = torch.where(valid, x_t, 0.0), torch.where(valid, h, 0.0)
        if input_dropout_mask is None:
            x_z = x_r = x_h = x_t
        elif input_dropout_mask.dim() == 2:
            x_z = x_r = x_h = x_t * input_dropout_mask
        else:
            x_z, x_r, x_h = (x_t * input_dropout_mask[g] for g in range(3))
        if recurrent_dropout_mask is None:
            h_z = h_r = h_h = h
        else:
            h_z, h_r, h_h = (h * recurrent_dropout_mask[g] for g in range(3))

        if reset_after:
            z = sigma(x_z @ W_z + b_iz + h_z @ U_z + b_hz)
            r = sigma(x_r @ W_r + b_ir + h_r @ U_r + b_hr)
            cand = phi(x_h @ W_h + b_ih + r * (h_h @ U_h + b_hh))
        else:
            z = sigma(x_z @ W_z + b_iz + h_z @ U_z)
            r = sigma(x_r @ W_r + b_ir + h_r @ U_r)
            cand = phi(x_h @ W_h + b_ih + (r * h_h) @ U_h)
        h_new = z * h + (1 - z) * cand

        if mask is None:
            out, h = h_new, h_new
        else:
            held = torch.zeros_like(h_new) if zero_output_for_mask else prev_out
            out = torch.where(valid, h_new, held)
            h = torch.where(valid, h_new, h_in)
        prev_out = out
        outputs.append(out)

    out = torch.stack(outputs) if outputs else x.new_zeros(0, B, H)
    if not time_major:
        out = out.transpose(0, 1)
    return out, h
