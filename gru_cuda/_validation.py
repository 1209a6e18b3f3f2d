"""Argument checks of the gru functional API, shared by the fused path, reference.py and the
layers (masks and initial states are checked here once, not again by the layers).

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


def _tensor(t, name: str, *, optional: bool = False, caller: str = "gru"
            ) -> Optional[torch.Tensor]:
    if t is None and optional:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{caller}: {name} must be a torch.Tensor, got {type(t).__name__}")
    return t


def _shape(t: torch.Tensor, expected: tuple, name: str, what: str, caller: str = "gru") -> None:
    if tuple(t.shape) != tuple(expected):
        raise ValueError(f"{caller}: {name} must have shape {what} = {tuple(expected)}, got "
                         f"{tuple(t.shape)}")


def _like_x(t: torch.Tensor, x: torch.Tensor, name: str, *, check_dtype: bool = True,
            caller: str = "gru") -> None:
    if t.device != x.device:
        raise ValueError(f"{caller}: {name} is on device {t.device} but x is on device "
                         f"{x.device}; all tensors must be on one device")
    if check_dtype and t.dtype != x.dtype:
        raise TypeError(f"{caller}: {name} must have the dtype of x ({x.dtype}), got {t.dtype}")


def check_mask(mask, x: torch.Tensor, *, T, B, time_major: bool, caller: str = "gru") -> None:
    """Checks an optional step mask: a tensor `(batch, timesteps)` (`(timesteps, batch)` when
    `time_major`) on the device of `x`, bool or real (cast to bool by the caller).

    The one Python check of a mask: `gru()` runs it for every call, and the layers run it
    only where they step a cell themselves (they hand everything else to `gru()`).
    """
    if _tensor(mask, "mask", optional=True, caller=caller) is None:
        return
    _shape(mask, (T, B) if time_major else (B, T), "mask",
           "(timesteps, batch)" if time_major else "(batch, timesteps)", caller)
    _like_x(mask, x, "mask", check_dtype=False, caller=caller)
    if mask.is_complex():
        raise TypeError(f"{caller}: mask must be bool (or real, cast to bool), got {mask.dtype}")


def check_initial_state(state, x: torch.Tensor, *, B, H, name: str = "initial_state",
                        what: str = "(batch, units)", caller: str = "gru") -> None:
    """Checks an optional initial state: a tensor of shape `(B, H)` with the device and dtype
    of `x`. `name`, `what` and `caller` only word the error (e.g. a cell's `states`)."""
    if _tensor(state, name, optional=True, caller=caller) is None:
        return
    _shape(state, (B, H), name, what, caller)
    _like_x(state, x, name, caller=caller)


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

    check_initial_state(initial_state, x, B=B, H=H)
    check_mask(mask, x, T=T, B=B, time_major=time_major)

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
