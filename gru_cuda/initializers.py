"""Weight initializers by Keras name, with the Keras 3 formulas.

Every initializer is a callable `init(shape, dtype=None, device=None) -> torch.Tensor`.
Random values are drawn on the CPU (so a layer gets the same weights on every device) from:

* a private `torch.Generator` seeded with `seed` when a seed is given: the initializer then
  returns the same values on every call, as a seeded Keras initializer does;
* PyTorch's global generator when `seed` is None, so `torch.manual_seed(...)` makes model
  construction reproducible and two layers built from the same name get different weights.

The random streams are PyTorch's, so values never equal Keras' bit for bit; the
distributions (limits, standard deviations, truncation, orthogonality) are Keras' exactly.

Examples:

>>> init = gru_cuda.initializers.get("glorot_uniform")
>>> w = init((8, 12))                       # U(-sqrt(6 / (8 + 12)), +sqrt(6 / (8 + 12)))
>>> gru_cuda.initializers.Orthogonal(seed=1)((4, 12)).shape
torch.Size([4, 12])
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from gru_cuda._config import Configurable, resolve

__all__ = [
    "Initializer", "Zeros", "Ones", "Constant", "Identity", "RandomNormal", "RandomUniform",
    "TruncatedNormal", "VarianceScaling", "GlorotUniform", "GlorotNormal", "HeNormal",
    "HeUniform", "LecunNormal", "LecunUniform", "Orthogonal", "compute_fans", "get",
    "serialize", "deserialize",
]

# Keras' standard deviation of a unit normal truncated to [-2, 2]: dividing by it keeps the
# variance of `truncated_normal` variance-scaling initializers at the requested value.
_TRUNCATED_STD = 0.87962566103423978


def compute_fans(shape: Sequence[int]):
    """`(fan_in, fan_out)` of a weight shape, as Keras computes them.

    2-D `(a, b)` gives `(a, b)`; 1-D `(a,)` gives `(a, a)`; a scalar gives `(1, 1)`; higher
    ranks treat the leading dimensions as a receptive field (convolution kernels).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) == 0:
        return 1, 1
    if len(shape) == 1:
        return shape[0], shape[0]
    if len(shape) == 2:
        return shape[0], shape[1]
    receptive = math.prod(shape[:-2])
    return shape[-2] * receptive, shape[-1] * receptive


def _work_dtype(dtype: Optional[torch.dtype]) -> torch.dtype:
    # Draw in float64 only for float64 weights; everything else is drawn in float32 and cast,
    # so bfloat16/float16 weights are rounded float32 draws.
    return torch.float64 if dtype == torch.float64 else torch.float32


def _finish(t: torch.Tensor, dtype, device) -> torch.Tensor:
    return t.to(dtype=dtype or torch.get_default_dtype(), device=device)


class Initializer(Configurable):
    """Base class of initializers: `__call__(shape, dtype=None, device=None)`.

    Subclasses implement `__call__` and `get_config()`; `from_config(config)` rebuilds one.
    Any Python callable `f(shape, dtype=None)` returning an array or tensor may be used where
    an initializer is expected.
    """

    def __call__(self, shape, dtype=None, device=None) -> torch.Tensor:
        raise NotImplementedError


class _Seeded(Initializer):
    """An initializer that draws random numbers from its seed, or the global generator."""

    def __init__(self, seed: Optional[int] = None):
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise ValueError(f"seed must be an int or None, got {seed!r}")
        self.seed = seed

    def _generator(self) -> Optional[torch.Generator]:
        if self.seed is None:
            return None  # the global CPU generator: torch.manual_seed controls it
        return torch.Generator(device="cpu").manual_seed(self.seed)

    def get_config(self) -> dict:
        return {"seed": self.seed}


def _uniform(shape, low, high, gen, wdt):
    return torch.empty(shape, dtype=wdt).uniform_(low, high, generator=gen)


def _normal(shape, mean, std, gen, wdt):
    return torch.empty(shape, dtype=wdt).normal_(mean, std, generator=gen)


def _truncated_normal(shape, mean, std, gen, wdt):
    # Normal truncated to mean ± 2 std (Keras' truncation), by inverting the CDF of a uniform
    # draw over [Φ(-2), Φ(2)]; computed in float64 so the tails stay accurate.
    lo = 0.5 * (1 + math.erf(-2 / math.sqrt(2)))
    hi = 0.5 * (1 + math.erf(2 / math.sqrt(2)))
    u = torch.empty(shape, dtype=torch.float64).uniform_(lo, hi, generator=gen)
    z = math.sqrt(2) * torch.erfinv(2 * u - 1)
    return (mean + std * z.clamp_(-2.0, 2.0)).to(wdt)


class Zeros(Initializer):
    """Initializer that generates tensors of zeros.

    Example:

    >>> gru_cuda.initializers.Zeros()((2, 3))
    """

    def __call__(self, shape, dtype=None, device=None):
        return torch.zeros(tuple(shape), dtype=dtype or torch.get_default_dtype(), device=device)


class Ones(Initializer):
    """Initializer that generates tensors of ones."""

    def __call__(self, shape, dtype=None, device=None):
        return torch.ones(tuple(shape), dtype=dtype or torch.get_default_dtype(), device=device)


class Constant(Initializer):
    """Initializer that fills tensors with one scalar value.

    Args:
        value: a Python scalar.

    Example (the constants of Keras' GRU tests):

    >>> layer = gru_cuda.GRU(3, kernel_initializer=gru_cuda.initializers.Constant(0.01))
    """

    def __init__(self, value: float = 0.0):
        if isinstance(value, torch.Tensor):
            value = value.item()
        try:
            self.value = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"Constant initializer: value must be a scalar, got {value!r}") from None

    def __call__(self, shape, dtype=None, device=None):
        return torch.full(tuple(shape), self.value, dtype=dtype or torch.get_default_dtype(),
                          device=device)

    def get_config(self):
        return {"value": self.value}


class Identity(Initializer):
    """Initializer that generates `gain * eye(rows, cols)`; only for 2-D shapes.

    Args:
        gain: multiplicative factor applied to the identity matrix.
    """

    def __init__(self, gain: float = 1.0):
        self.gain = float(gain)

    def __call__(self, shape, dtype=None, device=None):
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"Identity initializer can only be used for 2-D matrices, got shape "
                             f"{shape} of rank {len(shape)}")
        dtype = dtype or torch.get_default_dtype()
        return self.gain * torch.eye(*shape, dtype=dtype, device=device)

    def get_config(self):
        return {"gain": self.gain}


class RandomNormal(_Seeded):
    """Initializer drawing from a normal distribution.

    Args:
        mean: mean of the values. Default 0.
        stddev: standard deviation. Default 0.05.
        seed: int for reproducible values (the same on every call), or None.
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Optional[int] = None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype=None, device=None):
        t = _normal(tuple(shape), self.mean, self.stddev, self._generator(), _work_dtype(dtype))
        return _finish(t, dtype, device)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class RandomUniform(_Seeded):
    """Initializer drawing from a uniform distribution on `[minval, maxval)`.

    Args:
        minval: lower bound. Default -0.05.
        maxval: upper bound. Default 0.05.
        seed: int for reproducible values (the same on every call), or None.
    """

    def __init__(self, minval: float = -0.05, maxval: float = 0.05, seed: Optional[int] = None):
        super().__init__(seed)
        self.minval, self.maxval = float(minval), float(maxval)

    def __call__(self, shape, dtype=None, device=None):
        t = _uniform(tuple(shape), self.minval, self.maxval, self._generator(), _work_dtype(dtype))
        return _finish(t, dtype, device)

    def get_config(self):
        return {"minval": self.minval, "maxval": self.maxval, **super().get_config()}


class TruncatedNormal(_Seeded):
    """Initializer drawing from a normal distribution truncated to `mean ± 2 * stddev`.

    Args:
        mean: mean of the values. Default 0.
        stddev: standard deviation of the untruncated normal. Default 0.05.
        seed: int for reproducible values (the same on every call), or None.
    """

    def __init__(self, mean: float = 0.0, stddev: float = 0.05, seed: Optional[int] = None):
        super().__init__(seed)
        self.mean, self.stddev = float(mean), float(stddev)

    def __call__(self, shape, dtype=None, device=None):
        t = _truncated_normal(tuple(shape), self.mean, self.stddev, self._generator(),
                              _work_dtype(dtype))
        return _finish(t, dtype, device)

    def get_config(self):
        return {"mean": self.mean, "stddev": self.stddev, **super().get_config()}


class VarianceScaling(_Seeded):
    """Initializer whose scale adapts to the shape of the weight (Keras formulas).

    With `n` = fan_in, fan_out or (fan_in + fan_out) / 2 (by `mode`, at least 1):

    * `distribution="truncated_normal"` (or `"normal"`): truncated normal (± 2 std) with
      `stddev = sqrt(scale / n) / 0.87962566103423978`;
    * `"untruncated_normal"`: normal with `stddev = sqrt(scale / n)`;
    * `"uniform"`: `U(-limit, limit)` with `limit = sqrt(3 * scale / n)`.

    Args:
        scale: positive scaling factor. Default 1.
        mode: `"fan_in"` (default), `"fan_out"` or `"fan_avg"`.
        distribution: `"truncated_normal"` (default), `"untruncated_normal"` or `"uniform"`.
        seed: int for reproducible values (the same on every call), or None.
    """

    def __init__(self, scale: float = 1.0, mode: str = "fan_in",
                 distribution: str = "truncated_normal", seed: Optional[int] = None):
        super().__init__(seed)
        if not scale > 0:
            raise ValueError(f"VarianceScaling: scale must be a positive float, got {scale!r}")
        if mode not in ("fan_in", "fan_out", "fan_avg"):
            raise ValueError(f"VarianceScaling: mode must be 'fan_in', 'fan_out' or 'fan_avg', "
                             f"got {mode!r}")
        distribution = str(distribution).lower()
        if distribution == "normal":
            distribution = "truncated_normal"
        if distribution not in ("truncated_normal", "untruncated_normal", "uniform"):
            raise ValueError(f"VarianceScaling: distribution must be 'truncated_normal', "
                             f"'untruncated_normal' or 'uniform', got {distribution!r}")
        self.scale, self.mode, self.distribution = float(scale), mode, distribution

    def __call__(self, shape, dtype=None, device=None):
        shape = tuple(shape)
        fan_in, fan_out = compute_fans(shape)
        n = {"fan_in": fan_in, "fan_out": fan_out, "fan_avg": (fan_in + fan_out) / 2.0}[self.mode]
        scale = self.scale / max(1.0, n)
        gen, wdt = self._generator(), _work_dtype(dtype)
        if self.distribution == "truncated_normal":
            t = _truncated_normal(shape, 0.0, math.sqrt(scale) / _TRUNCATED_STD, gen, wdt)
        elif self.distribution == "untruncated_normal":
            t = _normal(shape, 0.0, math.sqrt(scale), gen, wdt)
        else:
            limit = math.sqrt(3.0 * scale)
            t = _uniform(shape, -limit, limit, gen, wdt)
        return _finish(t, dtype, device)

    def get_config(self):
        return {"scale": self.scale, "mode": self.mode, "distribution": self.distribution,
                **super().get_config()}


class _FixedVarianceScaling(VarianceScaling):
    _args: tuple = ()

    def __init__(self, seed: Optional[int] = None):
        super().__init__(*self._args, seed=seed)

    def get_config(self):
        return {"seed": self.seed}


class GlorotUniform(_FixedVarianceScaling):
    """Glorot (Xavier) uniform: `U(-limit, limit)`, `limit = sqrt(6 / (fan_in + fan_out))`.

    The Keras default for `kernel`. Args: seed (int or None).
    """
    _args = (1.0, "fan_avg", "uniform")


class GlorotNormal(_FixedVarianceScaling):
    """Glorot (Xavier) normal: truncated normal, `stddev = sqrt(2 / (fan_in + fan_out))` before
    truncation correction. Args: seed (int or None)."""
    _args = (1.0, "fan_avg", "truncated_normal")


class HeNormal(_FixedVarianceScaling):
    """He normal: truncated normal with `stddev = sqrt(2 / fan_in)`. Args: seed."""
    _args = (2.0, "fan_in", "truncated_normal")


class HeUniform(_FixedVarianceScaling):
    """He uniform: `U(-limit, limit)`, `limit = sqrt(6 / fan_in)`. Args: seed."""
    _args = (2.0, "fan_in", "uniform")


class LecunNormal(_FixedVarianceScaling):
    """LeCun normal: truncated normal with `stddev = sqrt(1 / fan_in)`. Args: seed."""
    _args = (1.0, "fan_in", "truncated_normal")


class LecunUniform(_FixedVarianceScaling):
    """LeCun uniform: `U(-limit, limit)`, `limit = sqrt(3 / fan_in)`. Args: seed."""
    _args = (1.0, "fan_in", "uniform")


class Orthogonal(_Seeded):
    """Initializer that generates a (semi-)orthogonal matrix, as Keras does.

    The shape is flattened to `(rows, cols)` (rows = product of the leading dimensions); a
    Gaussian matrix of shape `(max(rows, cols), min(rows, cols))` is QR-factorised, `Q` has
    its column signs fixed by `sign(diag(R))`, and is transposed when `rows < cols`. So the
    GRU `recurrent_kernel` `(units, 3 * units)` has orthonormal rows (`R Rᵀ = I`), while its
    per-gate `(units, units)` blocks are not orthogonal: the Keras behaviour.

    Args:
        gain: multiplicative factor applied to the matrix. Default 1.
        seed: int for reproducible values (the same on every call), or None.
    """

    def __init__(self, gain: float = 1.0, seed: Optional[int] = None):
        super().__init__(seed)
        self.gain = float(gain)

    def __call__(self, shape, dtype=None, device=None):
        shape = tuple(shape)
        if len(shape) < 2:
            raise ValueError(f"Orthogonal initializer needs a shape of rank >= 2, got {shape}")
        rows, cols = math.prod(shape[:-1]), shape[-1]
        a = torch.empty(max(rows, cols), min(rows, cols), dtype=torch.float64).normal_(
            generator=self._generator())
        q, r = torch.linalg.qr(a)  # reduced QR, in float64 for accurate orthogonality
        d = torch.sign(torch.diagonal(r))
        d[d == 0] = 1.0
        q = q * d
        if rows < cols:
            q = q.T
        return _finish(self.gain * q.reshape(shape), dtype, device)

    def get_config(self):
        return {"gain": self.gain, **super().get_config()}


# Names accepted by `get`: the Keras 3 snake-case names, class names and aliases.
_CLASSES = (Zeros, Ones, Constant, Identity, RandomNormal, RandomUniform, TruncatedNormal,
            VarianceScaling, GlorotUniform, GlorotNormal, HeNormal, HeUniform, LecunNormal,
            LecunUniform, Orthogonal)
_BY_NAME = {
    "zeros": Zeros, "ones": Ones, "constant": Constant, "identity": Identity,
    "random_normal": RandomNormal, "random_uniform": RandomUniform,
    "truncated_normal": TruncatedNormal, "variance_scaling": VarianceScaling,
    "glorot_uniform": GlorotUniform, "glorot_normal": GlorotNormal, "he_normal": HeNormal,
    "he_uniform": HeUniform, "lecun_normal": LecunNormal, "lecun_uniform": LecunUniform,
    "orthogonal": Orthogonal,
    # Keras aliases
    "zero": Zeros, "one": Ones, "normal": RandomNormal, "uniform": RandomUniform,
    "IdentityInitializer": Identity, "OrthogonalInitializer": Orthogonal,
}
_BY_NAME.update({cls.__name__: cls for cls in _CLASSES})


def serialize(initializer: Initializer) -> dict:
    """`{"class_name": ..., "config": ...}` of an initializer (Keras' format)."""
    return {"class_name": type(initializer).__name__, "config": initializer.get_config()}


def deserialize(config: dict, argname: str = "initializer") -> Initializer:
    """The initializer described by `serialize()`'s dict."""
    name = config.get("class_name")
    if name not in _BY_NAME:
        raise ValueError(f"unknown {argname} class {name!r}; expected one of {sorted(_BY_NAME)}")
    return _BY_NAME[name].from_config(dict(config.get("config") or {}))


def get(identifier, argname: str = "initializer") -> Optional[Callable]:
    """Resolves an initializer identifier.

    Args:
        identifier: a Keras name (`"glorot_uniform"`, `"orthogonal"`, `"zeros"`, ...; class
            names such as `"GlorotUniform"` too), an `Initializer`, a `serialize()` dict, a
            callable `f(shape, dtype=None)`, or None (returns None).
        argname: the argument name used in error messages.

    Returns:
        A callable `init(shape, dtype=None, device=None)`, or None. A name gives a fresh
        instance, so two layers built from the same name get different random weights.

    Raises:
        ValueError: for an unknown name, naming `argname`.
    """
    return resolve(identifier, argname, base=Initializer, by_name=_BY_NAME,
                   by_class_name=_BY_NAME, names=sorted(k for k in _BY_NAME if k.islower()),
                   what="an Initializer, a config dict or a callable")


def initialize(init: Callable, shape, dtype: torch.dtype, device) -> torch.Tensor:
    """Runs `init` for a weight of `shape`, accepting Keras-style callables `f(shape, dtype)`.

    The result is checked for shape and cast to `dtype` on `device`.
    """
    shape = tuple(int(s) for s in shape)
    if isinstance(init, Initializer):
        t = init(shape, dtype=dtype, device=device)
    else:
        try:
            t = init(shape, dtype=dtype)
        except TypeError:
            t = init(shape)
        if not isinstance(t, torch.Tensor):
            t = torch.as_tensor(np.array(t))
    if tuple(t.shape) != shape:
        raise ValueError(f"initializer {init!r} returned shape {tuple(t.shape)}, expected {shape}")
    return t.detach().to(dtype=dtype, device=device)
