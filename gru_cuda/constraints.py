"""Weight constraints by Keras name, and how to apply them in a PyTorch training loop.

A constraint is a callable `c(w) -> projected w`. As in Keras they are never applied in the
forward pass or at initialisation: Keras' optimizers project each constrained weight right
after its update. PyTorch optimizers don't, so either call `layer.apply_constraints()` (or
`gru_cuda.constraints.apply_constraints(model)`) after `optimizer.step()`, or attach them once:

>>> handle = gru_cuda.constraints.attach(optimizer, model)   # after every optimizer.step()
>>> handle.remove()                                           # to stop

Names: `"max_norm"` (`MaxNorm(2, axis=0)`), `"non_neg"`, `"unit_norm"` (`axis=0`),
`"min_max_norm"` (`MinMaxNorm(0, 1, rate=1, axis=0)`), and the class names. `axis=0` on the
GRU's `(2, 3 * units)` bias normalises each column over its two rows, as in Keras.
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence, Union

import torch

from gru_cuda._config import Configurable, resolve

__all__ = ["Constraint", "MaxNorm", "NonNeg", "UnitNorm", "MinMaxNorm", "get",
           "apply_constraints", "attach"]

_EPSILON = 1e-7  # Keras' backend.epsilon()

Axis = Union[int, Sequence[int]]


def _norms(w: torch.Tensor, axis: Axis) -> torch.Tensor:
    dims = [axis] if isinstance(axis, int) else list(axis)
    return w.square().sum(dim=dims, keepdim=True).sqrt()


class Constraint(Configurable):
    """Base class of constraints: `__call__(w)` returns the projected weight.

    Any Python callable `f(tensor) -> tensor` of the same shape may be used where a
    constraint is expected.
    """

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return w


class MaxNorm(Constraint):
    """Rescales slices whose L2 norm along `axis` exceeds `max_value`.

    `w * clip(norm, 0, max_value) / (1e-7 + norm)` (Keras' formula; slices under the bound
    shrink by a factor `norm / (1e-7 + norm)`, i.e. by about 1e-7 relative).

    Args:
        max_value: the largest norm allowed. Default 2.
        axis: the axis (or axes) over which norms are taken. Default 0: for a
            `(input_dim, 3 * units)` kernel, every column (one unit's incoming weights).
    """

    def __init__(self, max_value: float = 2.0, axis: Axis = 0):
        self.max_value, self.axis = float(max_value), axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        return w * (norms.clamp(0.0, self.max_value) / (_EPSILON + norms))

    def get_config(self):
        return {"max_value": self.max_value, "axis": self.axis}


class NonNeg(Constraint):
    """Clamps negative entries to zero: `max(w, 0)`."""

    def __call__(self, w):
        return w.clamp_min(0.0)


class UnitNorm(Constraint):
    """Scales slices along `axis` to unit L2 norm: `w / (1e-7 + norm)`.

    Args:
        axis: the axis (or axes) over which norms are taken. Default 0.
    """

    def __init__(self, axis: Axis = 0):
        self.axis = axis

    def __call__(self, w):
        return w / (_EPSILON + _norms(w, self.axis))

    def get_config(self):
        return {"axis": self.axis}


class MinMaxNorm(Constraint):
    """Keeps the L2 norm of slices along `axis` between `min_value` and `max_value`.

    `w * (rate * clip(norm, min, max) + (1 - rate) * norm) / (1e-7 + norm)`: `rate=1`
    enforces the bounds strictly, smaller rates move the norm part of the way.

    Args:
        min_value: smallest norm. Default 0.
        max_value: largest norm. Default 1.
        rate: how far to move towards the bounds per application. Default 1.
        axis: the axis (or axes) over which norms are taken. Default 0.
    """

    def __init__(self, min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: Axis = 0):
        self.min_value, self.max_value = float(min_value), float(max_value)
        self.rate, self.axis = float(rate), axis

    def __call__(self, w):
        norms = _norms(w, self.axis)
        desired = self.rate * norms.clamp(self.min_value, self.max_value) + (1 - self.rate) * norms
        return w * (desired / (_EPSILON + norms))

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value, "rate": self.rate,
                "axis": self.axis}


def max_norm(max_value: float = 2.0, axis: Axis = 0) -> MaxNorm:
    """`MaxNorm(max_value, axis)`."""
    return MaxNorm(max_value, axis)


def non_neg() -> NonNeg:
    """`NonNeg()`."""
    return NonNeg()


def unit_norm(axis: Axis = 0) -> UnitNorm:
    """`UnitNorm(axis)`."""
    return UnitNorm(axis)


def min_max_norm(min_value: float = 0.0, max_value: float = 1.0, rate: float = 1.0,
                 axis: Axis = 0) -> MinMaxNorm:
    """`MinMaxNorm(min_value, max_value, rate, axis)`."""
    return MinMaxNorm(min_value, max_value, rate, axis)


_CLASSES = {"MaxNorm": MaxNorm, "NonNeg": NonNeg, "UnitNorm": UnitNorm, "MinMaxNorm": MinMaxNorm,
            "Constraint": Constraint}
_BY_NAME = {"max_norm": MaxNorm, "non_neg": NonNeg, "unit_norm": UnitNorm,
            "min_max_norm": MinMaxNorm, "MaxNorm": MaxNorm, "NonNeg": NonNeg,
            "UnitNorm": UnitNorm, "MinMaxNorm": MinMaxNorm}


def get(identifier, argname: str = "constraint") -> Optional[Callable]:
    """Resolves a constraint identifier.

    Args:
        identifier: None, a name (`"max_norm"`, `"non_neg"`, `"unit_norm"`, `"min_max_norm"`
            or a class name), a `{"class_name": ..., "config": ...}` dict, a `Constraint`,
            or any callable `f(w) -> w`.
        argname: the argument name used in error messages.

    Returns:
        A callable constraint, or None.

    Raises:
        ValueError: for an unknown name or an unusable value, naming `argname`.
    """
    return resolve(identifier, argname, base=Constraint, by_name=_BY_NAME, by_class_name=_CLASSES,
                   names=["max_norm", "non_neg", "unit_norm", "min_max_norm"],
                   what="a Constraint, a callable or None")


def serialize(constraint: Constraint) -> dict:
    """`{"class_name": ..., "config": ...}` of a constraint (Keras' format)."""
    return {"class_name": type(constraint).__name__, "config": constraint.get_config()}


@torch.no_grad()
def apply_constraints(module: torch.nn.Module) -> None:
    """Projects every constrained weight of the gru_cuda layers inside `module`, in place.

    Call it after `optimizer.step()` (or use `attach`). Weights without a constraint, and
    modules that are not gru_cuda layers, are left alone.

    Args:
        module: any `torch.nn.Module` (a layer, an `nn.Sequential`, your model).
    """
    for m in module.modules():
        own = getattr(m, "_apply_own_constraints", None)
        if own is not None:
            own()


def attach(optimizer: torch.optim.Optimizer, module: torch.nn.Module):
    """Applies the constraints of `module`'s gru_cuda layers after every `optimizer.step()`.

    Uses `optimizer.register_step_post_hook`, the moment Keras' optimizers apply constraints.

    Args:
        optimizer: a `torch.optim.Optimizer`.
        module: the model (or layer) whose constraints to apply.

    Returns:
        The hook handle; `handle.remove()` detaches it.

    Example:

    >>> model = gru_cuda.GRU(8, kernel_constraint="max_norm", input_size=4)
    >>> opt = torch.optim.SGD(model.parameters(), lr=0.1)
    >>> handle = gru_cuda.constraints.attach(opt, model)
    """
    if not hasattr(optimizer, "register_step_post_hook"):
        raise TypeError(f"attach needs a torch.optim.Optimizer (with register_step_post_hook), "
                        f"got {type(optimizer).__name__}")
    return optimizer.register_step_post_hook(lambda _opt, _args, _kwargs: apply_constraints(module))
