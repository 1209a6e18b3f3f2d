"""Activations by Keras name: which run fused inside the kernels, and their PyTorch forms.

The fused set and its integer ids come from the compiled library (csrc/common/activations.h),
so Python never duplicates that table. Other Keras activation names, and any Python callable,
run on the reference path (a per-step PyTorch loop: correct but slow).
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Union

import torch
import torch.nn.functional as tF

from gru_cuda._library import _C

FUSED_NAMES: tuple = tuple(_C.activation_names())
FUSED_IDS: dict = {name: i for i, name in enumerate(FUSED_NAMES)}
ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}

_SELU_ALPHA = 1.6732632423543772848170429916717
_SELU_SCALE = 1.0507009873554804934193349852946


def _hard_sigmoid(x):  # Keras 3: clip(x / 6 + 0.5, 0, 1)
    return torch.clamp(x / 6.0 + 0.5, 0.0, 1.0)


def _softplus(x):
    return torch.logaddexp(x, torch.zeros_like(x))


# PyTorch forms of every activation accepted by name (the formulas of Keras 3's
# keras/src/activations/activations.py).
TORCH_ACTIVATIONS: dict = {
    "tanh": torch.tanh,
    "sigmoid": torch.sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "relu": torch.relu,
    "linear": lambda x: x,
    "softsign": lambda x: x / (1 + x.abs()),
    "elu": lambda x: torch.where(x > 0, x, torch.expm1(x)),
    "selu": lambda x: _SELU_SCALE * torch.where(x > 0, x, _SELU_ALPHA * torch.expm1(x)),
    "softplus": _softplus,
    "silu": lambda x: x * torch.sigmoid(x),
    "gelu": lambda x: 0.5 * x * (1 + torch.erf(x / math.sqrt(2.0))),
    "exponential": torch.exp,
    # Keras names without a fused kernel: accepted, run on the reference path.
    "relu6": lambda x: torch.clamp(x, 0.0, 6.0),
    "leaky_relu": lambda x: tF.leaky_relu(x, 0.2),
    "mish": lambda x: x * torch.tanh(_softplus(x)),
    "celu": lambda x: tF.celu(x, 1.0),
    "hard_silu": lambda x: x * _hard_sigmoid(x),
    "hard_tanh": lambda x: torch.clamp(x, -1.0, 1.0),
    "log_sigmoid": tF.logsigmoid,
    "tanh_shrink": lambda x: x - torch.tanh(x),
    "soft_shrink": lambda x: tF.softshrink(x, 0.5),
    "hard_shrink": lambda x: tF.hardshrink(x, 0.5),
    "sparse_plus": lambda x: torch.where(x <= -1, torch.zeros_like(x),
                                         torch.where(x >= 1, x, (x + 1) ** 2 / 4)),
    "sparse_sigmoid": lambda x: torch.clamp((x + 1) / 2, 0.0, 1.0),
    "squareplus": lambda x: (x + torch.sqrt(x * x + 4)) / 2,
}

ActivationArg = Union[str, None, Callable[[torch.Tensor], torch.Tensor]]


def canonical_name(activation: ActivationArg, argname: str = "activation") -> Optional[str]:
    """The canonical Keras name of `activation`, or None for a Python callable.

    Raises ValueError for an unknown name and TypeError for anything else.
    """
    if activation is None:
        return "linear"
    if isinstance(activation, str):
        name = ALIASES.get(activation, activation)
        if name not in TORCH_ACTIVATIONS:
            raise ValueError(
                f"gru: unknown {argname} {activation!r}; expected one of "
                f"{sorted(set(TORCH_ACTIVATIONS) | set(ALIASES))}, None, or a callable"
            )
        return name
    if callable(activation):
        return None
    raise TypeError(
        f"gru: {argname} must be a Keras activation name, None or a callable, "
        f"got {type(activation).__name__}"
    )


def fused_id(activation: ActivationArg, argname: str = "activation") -> Optional[int]:
    """The kernel id of `activation`, or None when it must run on the reference path."""
    name = canonical_name(activation, argname)
    return FUSED_IDS.get(name) if name is not None else None


def get(activation: ActivationArg, argname: str = "activation") -> Callable:
    """The PyTorch function for `activation` (a name, None, or a callable)."""
    name = canonical_name(activation, argname)
    return activation if name is None else TORCH_ACTIVATIONS[name]
