"""Weight and activity regularizers by Keras name, and the collection of layer losses.

A regularizer is a callable `reg(tensor) -> scalar tensor` (differentiable). Layers store
them per weight; `layer.losses` (Keras' list of penalties) recomputes the weight penalties on
every read and adds the activity penalties of the last call. PyTorch optimizers know nothing of
them: add them to the training loss yourself,

>>> loss = criterion(model(x), y) + sum(gru_cuda.regularizers.collect_losses(model))

Names: `"l1"` → `L1(0.01)`, `"l2"` → `L2(0.01)`, `"l1_l2"` → `L1L2(l1=0.01, l2=0.01)`,
`"orthogonal_regularizer"` → `OrthogonalRegularizer(0.01)`; class names are accepted too.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch

from gru_cuda._config import Configurable, resolve

__all__ = ["Regularizer", "L1", "L2", "L1L2", "OrthogonalRegularizer", "l1", "l2", "l1_l2",
           "get", "collect_losses"]

_EPSILON = 1e-7  # Keras' backend.epsilon()


def _factor(value, name: str) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if not value >= 0 or value == float("inf"):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return value


class Regularizer(Configurable):
    """Base class of regularizers: `__call__(x)` returns a scalar penalty.

    Any Python callable `f(tensor) -> scalar` may be used where a regularizer is expected.
    """

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x.new_zeros(())


class L1(Regularizer):
    """L1 penalty: `l1 * sum(|x|)`.

    Args:
        l1: the factor. Default 0.01 (also the factor of the name `"l1"`).
    """

    def __init__(self, l1: float = 0.01):
        self.l1 = _factor(l1, "l1")

    def __call__(self, x):
        return self.l1 * x.abs().sum()

    def get_config(self):
        return {"l1": self.l1}


class L2(Regularizer):
    """L2 penalty: `l2 * sum(x ** 2)` (no factor 1/2, as in Keras).

    Args:
        l2: the factor. Default 0.01 (also the factor of the name `"l2"`).
    """

    def __init__(self, l2: float = 0.01):
        self.l2 = _factor(l2, "l2")

    def __call__(self, x):
        return self.l2 * x.square().sum()

    def get_config(self):
        return {"l2": self.l2}


class L1L2(Regularizer):
    """Both penalties: `l1 * sum(|x|) + l2 * sum(x ** 2)`.

    Args:
        l1: the L1 factor. Default 0.0 (Keras' class default).
        l2: the L2 factor. Default 0.0.

    The name `"l1_l2"` gives `L1L2(l1=0.01, l2=0.01)` (the defaults of Keras 2's and R's
    `l1_l2()`; Keras 3 has no such name).
    """

    def __init__(self, l1: float = 0.0, l2: float = 0.0):
        self.l1, self.l2 = _factor(l1, "l1"), _factor(l2, "l2")

    def __call__(self, x):
        penalty = x.new_zeros(())
        if self.l1:
            penalty = penalty + self.l1 * x.abs().sum()
        if self.l2:
            penalty = penalty + self.l2 * x.square().sum()
        return penalty

    def get_config(self):
        return {"l1": self.l1, "l2": self.l2}


class OrthogonalRegularizer(Regularizer):
    """Penalises non-orthogonal rows (or columns) of a 2-D weight, as Keras 3 does.

    The rows (`mode="rows"`) or columns (`"columns"`) are L2-normalised, and the penalty is
    `factor * 0.5 * sum(|off-diagonal of their Gram matrix|) / (n * (n - 1) / 2)`.

    Args:
        factor: the factor. Default 0.01.
        mode: `"rows"` (default) or `"columns"`.
    """

    def __init__(self, factor: float = 0.01, mode: str = "rows"):
        self.factor = _factor(factor, "factor")
        if mode not in ("rows", "columns"):
            raise ValueError(
                f"OrthogonalRegularizer: mode must be 'rows' or 'columns', got {mode!r}")
        self.mode = mode

    def __call__(self, x):
        if x.dim() != 2:
            raise ValueError(
                f"OrthogonalRegularizer needs a 2-D weight, got shape {tuple(x.shape)}")
        if self.mode == "columns":
            x = x.T
        x = x / x.norm(dim=1, keepdim=True).clamp_min(_EPSILON)
        n = x.shape[0]
        gram = x @ x.T
        off = gram * (1.0 - torch.eye(n, dtype=x.dtype, device=x.device))
        pairs = n * (n - 1) / 2.0
        return self.factor * 0.5 * off.abs().sum() / pairs

    def get_config(self):
        return {"factor": self.factor, "mode": self.mode}


def l1(l1: float = 0.01) -> L1:
    """`L1(l1)`: the penalty `l1 * sum(|x|)`."""
    return L1(l1)


def l2(l2: float = 0.01) -> L2:
    """`L2(l2)`: the penalty `l2 * sum(x ** 2)`."""
    return L2(l2)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """`L1L2(l1, l2)` with the Keras 2 / R defaults of 0.01 for both."""
    return L1L2(l1, l2)


_BY_NAME = {
    "l1": L1, "L1": L1, "l2": L2, "L2": L2,
    "l1_l2": lambda: L1L2(0.01, 0.01), "L1L2": L1L2,
    "orthogonal_regularizer": OrthogonalRegularizer,
    "OrthogonalRegularizer": OrthogonalRegularizer,
}
_CLASSES = {"L1": L1, "L2": L2, "L1L2": L1L2, "OrthogonalRegularizer": OrthogonalRegularizer,
            "Regularizer": Regularizer}


def get(identifier, argname: str = "regularizer") -> Optional[Callable]:
    """Resolves a regularizer identifier.

    Args:
        identifier: None, a name (`"l1"`, `"l2"`, `"l1_l2"`, `"orthogonal_regularizer"`, or a
            class name), a `{"class_name": ..., "config": ...}` dict, a `Regularizer`, or any
            callable `f(tensor) -> scalar tensor`.
        argname: the argument name used in error messages.

    Returns:
        A callable regularizer, or None.

    Raises:
        ValueError: for an unknown name or an unusable value, naming `argname`.
    """
    return resolve(identifier, argname, base=Regularizer, by_name=_BY_NAME,
                   by_class_name=_CLASSES,
                   names=["l1", "l2", "l1_l2", "orthogonal_regularizer"],
                   what="a Regularizer, a callable or None")


def serialize(regularizer: Regularizer) -> dict:
    """`{"class_name": ..., "config": ...}` of a regularizer (Keras' format)."""
    return {"class_name": type(regularizer).__name__, "config": regularizer.get_config()}


def collect_losses(module: torch.nn.Module) -> List[torch.Tensor]:
    """All Keras-style losses of the gru_cuda layers inside `module`, in Keras' order.

    First the activity penalties of the last call of every layer, then one penalty per
    regularized weight (recomputed now, so it is differentiable w.r.t. the current weights).
    This is what `layer.losses` returns for a single layer; use it on a container
    (`nn.Sequential`, your own model) to gather everything.

    Args:
        module: any `torch.nn.Module`.

    Returns:
        A list of scalar tensors (empty when nothing is regularized).
    """
    layers = [m for m in module.modules() if hasattr(m, "_own_activity_losses")]
    losses: List[torch.Tensor] = []
    for m in layers:
        losses.extend(m._own_activity_losses())
    for m in layers:
        losses.extend(m._own_weight_losses())
    return losses
