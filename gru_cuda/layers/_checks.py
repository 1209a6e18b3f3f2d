"""Constructor and call argument checks of the layers: each names the argument, what was
expected and what was given."""
from __future__ import annotations

import numbers
from typing import Optional

import numpy as np
import torch

from gru_cuda import activations


def _check_units(units, argname: str = "units") -> int:
    if isinstance(units, bool) or not isinstance(units, numbers.Integral) or units <= 0:
        raise ValueError(f"Received an invalid value for argument `{argname}`, expected a "
                         f"positive integer, got {units!r}")
    return int(units)


def _check_rate(rate, argname: str) -> float:
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not 0.0 <= rate <= 1.0:
        raise ValueError(f"Received an invalid value for argument `{argname}`, expected a float "
                         f"between 0 and 1, got {rate!r}")
    return float(rate)


def _check_seed(seed) -> Optional[int]:
    if seed is None:
        return None
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"Received an invalid value for argument `seed`, expected an int or "
                         f"None, got {seed!r}")
    return int(seed)


def _check_activation(activation, argname: str):
    name = activations.canonical_name(activation, argname)  # ValueError for unknown names
    return activation if name is None else name


def _resolve_dtype(dtype) -> Optional[torch.dtype]:
    if dtype is None:
        return None
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"Received an invalid value for argument `dtype`, expected a floating "
                         f"torch.dtype (or its name), got {dtype!r}")
    return dtype


def _check_bool(value, argname: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"Received an invalid value for argument `{argname}`, expected a bool, "
                         f"got {value!r}")
    return bool(value)


def _as_tensor(value, name: str, device=None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value), device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a torch.Tensor or array-like, got "
                        f"{type(value).__name__}") from e
