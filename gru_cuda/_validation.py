"""Argument checks of the gru functional API, shared by the fused path and reference.py.

Every mistake becomes a ValueError (shape, rank, device, option) or TypeError (type, dtype)
that names the argument, what was expected and what was given.
"""
from __future__ import annotations

from typing import NamedTuple, Optional

import torch


class GruSizes(NamedTuple):
    T: int  # timesteps
    B: int  # batch
    F: int  # input features
    H: int  # units


def _tensor(t, name: str, *, optional: bool = False) -> Optional[torch.Tensor]:
    if t is None and optional:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"gru: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _shape(t: torch.Tensor, expected: tuple, name: str, what: str) -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"gru: {name} must have shape {what} = {tuple(expected)}, got {tuple(t.shape)}")


def _like_x(t: torch.Tensor, x: torch.Tensor, name: str, *, check_dtype: bool = True) -> None:
    if t.device != x.device:
        raise ValueError(f"gru: {name} is on device {t.device} but x is on device {x.device}; "
                         "all tensors must be on one device")
    if check_dtype and t.dtype != x.dtype:
        raise TypeError(f"gru: {name} must have the dtype of x ({x.dtype}), got {t.dtype}")


def check_gru_args(x, kernel, recurrent_kernel, bias, initial_state, *, reset_after: bool,
                   time_major: bool, mask, input_dropout_mask,
                   recurrent_dropout_mask) -> GruSizes:
    x = _tensor(x, "x")
    if not x.dtype.is_floating_point:
        raise TypeError(f"gru: x must have a floating dtype (float32, float64, bfloat16, "
                        f"float16), got {x.dtype}")
    if x.dim() != 3:
        layout = "(T, B, F) with time_major=True" if time_major else "(B, T, F)"
        raise ValueError(f"gru: x must be 3-D {layout}, got {x.dim()}-D shape {tuple(x.shape)}")
    T, B, F = (x.shape if time_major else (x.shape[1], x.shape[0], x.shape[2]))

    recurrent_kernel = _tensor(recurrent_kernel, "recurrent_kernel")
    if recurrent_kernel.dim() != 2 or recurrent_kernel.shape[1] != 3 * recurrent_kernel.shape[0]:
        raise ValueError(f"gru: recurrent_kernel must have shape (units, 3 * units), got "
                         f"{tuple(recurrent_kernel.shape)}")
    H = recurrent_kernel.shape[0]
    _like_x(recurrent_kernel, x, "recurrent_kernel")

    kernel = _tensor(kernel, "kernel")
    _shape(kernel, (F, 3 * H), "kernel", "(input features, 3 * units)")
    _like_x(kernel, x, "kernel")

    if _tensor(bias, "bias", optional=True) is not None:
        if reset_after:
            _shape(bias, (2, 3 * H), "bias", "(2, 3 * units) for reset_after=True")
        else:
            _shape(bias, (3 * H,), "bias", "(3 * units,) for reset_after=False")
        _like_x(bias, x, "bias")

    if _tensor(initial_state, "initial_state", optional=True) is not None:
        _shape(initial_state, (B, H), "initial_state", "(batch, units)")
        _like_x(initial_state, x, "initial_state")

    if _tensor(mask, "mask", optional=True) is not None:
        _shape(mask, (T, B) if time_major else (B, T), "mask",
               "(timesteps, batch)" if time_major else "(batch, timesteps)")
        _like_x(mask, x, "mask", check_dtype=False)
        if mask.is_complex():
            raise TypeError(f"gru: mask must be bool (or real, cast to bool), got {mask.dtype}")

    if _tensor(input_dropout_mask, "input_dropout_mask", optional=True) is not None:
        if tuple(input_dropout_mask.shape) not in ((B, F), (3, B, F)):
            raise ValueError(f"gru: input_dropout_mask must have shape (batch, features) = "
                             f"{(B, F)} or (3, batch, features) = {(3, B, F)}, got "
                             f"{tuple(input_dropout_mask.shape)}")
        _like_x(input_dropout_mask, x, "input_dropout_mask")

    if _tensor(recurrent_dropout_mask, "recurrent_dropout_mask", optional=True) is not None:
        _shape(recurrent_dropout_mask, (3, B, H), "recurrent_dropout_mask", "(3, batch, units)")
        _like_x(recurrent_dropout_mask, x, "recurrent_dropout_mask")

    for name, flag in (("reset_after", reset_after), ("time_major", time_major)):
        if not isinstance(flag, bool):
            raise TypeError(f"gru: {name} must be a bool, got {type(flag).__name__}")
    # No int(): under torch.export / torch.compile with dynamic shapes these are SymInts, and
    # int() would specialize them to the example sizes.
    return GruSizes(T, B, F, H)
