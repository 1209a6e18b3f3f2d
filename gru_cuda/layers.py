"""Keras-style recurrent layers over the fused GRU op: `GRU`, `GRUCell`, `RNN`, `Bidirectional`.

They are `torch.nn.Module`s with Keras 3 semantics (argument names and defaults, weight layout,
masking, `go_backwards`, stateful layers, dropout, regularizers, constraints) and they run a
whole sequence through one call of `gru_cuda.functional.gru` (the fused CPU/CUDA kernels):
no per-step Python for a GRU. See docs/layers.md for a tour.

Differences from Keras that come from PyTorch itself:

* `training=None` follows `module.training` (a fresh module is in training mode: call
  `.eval()` for inference), where Keras defaults to inference outside `fit`.
* Weights are created lazily on the first call (like Keras), on the input's device; give
  `input_size=` (or call `build`) to create them up front, e.g. before making an optimizer.
* Regularization penalties are in `layer.losses` but PyTorch optimizers don't add them:
  add `sum(layer.losses)` to your loss. Constraints are applied by `layer.apply_constraints()`
  or `gru_cuda.constraints.attach(optimizer, model)`, never in forward.
"""
from __future__ import annotations

import copy
import inspect
import numbers
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from gru_cuda import activations, conversion, functional
from gru_cuda import constraints as _constraints
from gru_cuda import initializers as _initializers
from gru_cuda import regularizers as _regularizers

__all__ = ["GRU", "GRUCell", "RNN", "Bidirectional"]

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


# --------------------------------------------------------------------------------------------
# argument checks
# --------------------------------------------------------------------------------------------

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


def _to_numpy(t: torch.Tensor) -> np.ndarray:
    t = t.detach().to("cpu")
    if t.dtype == torch.bfloat16:  # NumPy has no bfloat16
        t = t.float()
    return t.clone().numpy()


def _as_tensor(value, name: str, device=None) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value
    try:
        return torch.as_tensor(np.asarray(value), device=device)
    except (TypeError, ValueError, RuntimeError) as e:
        raise TypeError(f"{name} must be a torch.Tensor or array-like, got "
                        f"{type(value).__name__}") from e


def _scalar(value, like: torch.Tensor) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        return value.reshape(())
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _dropout_mask(shape, rate: float, like: torch.Tensor, generator) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
    keep = 1.0 - rate
    if keep <= 0.0:  # rate 1 drops everything (Keras' torch backend does the same)
        return like.new_zeros(shape)
    u = torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)
    return (u < keep).to(like.dtype) * (1.0 / keep)


def _accepts_kwarg(fn, name: str) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


# --------------------------------------------------------------------------------------------
# shared Keras-layer behaviour
# --------------------------------------------------------------------------------------------

class _KerasLayerMixin:
    """`losses`, `apply_constraints`, `count_params` for every layer of this module."""

    @property
    def losses(self) -> List[torch.Tensor]:
        """Keras' list of scalar losses: the activity penalties of the last call (divided by
        the batch size), then one penalty per regularized weight, recomputed on every read
        (so it is differentiable w.r.t. the current weights). Includes sub-layers."""
        return _regularizers.collect_losses(self)

    def apply_constraints(self) -> None:
        """Projects every constrained weight (this layer and its sub-layers) in place.

        Call it after `optimizer.step()`, or use `gru_cuda.constraints.attach`.
        """
        _constraints.apply_constraints(self)

    def count_params(self) -> int:
        """The number of scalars in the layer's weights (built layers only)."""
        if not self.built:
            raise ValueError(f"{type(self).__name__} is not built yet: call it on an input, "
                             f"call build(input_shape), or give input_size")
        return sum(p.numel() for p in self.parameters())

    def _own_activity_losses(self) -> List[torch.Tensor]:
        return list(getattr(self, "_activity_losses", []))

    def _own_weight_losses(self) -> List[torch.Tensor]:
        return []


# --------------------------------------------------------------------------------------------
# GRU weights: shared by GRUCell and GRU
# --------------------------------------------------------------------------------------------

class _GRUWeights(_KerasLayerMixin, nn.Module):
    """The GRU weights in Keras layout, their initializers, regularizers, constraints and
    dropout configuration; the base of `GRUCell` and `GRU`."""

    _weight_names = ("kernel", "recurrent_kernel", "bias")

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, reset_after=True,
                 seed=None, input_size=None, device=None, dtype=None):
        super().__init__()
        self.units = _check_units(units)
        self.activation = _check_activation(activation, "activation")
        self.recurrent_activation = _check_activation(recurrent_activation, "recurrent_activation")
        self.use_bias = _check_bool(use_bias, "use_bias")
        self.reset_after = _check_bool(reset_after, "reset_after")
        # Keras uses glorot_uniform for a weight whose initializer is None.
        self.kernel_initializer = _initializers.get(
            "glorot_uniform" if kernel_initializer is None else kernel_initializer,
            "kernel_initializer")
        self.recurrent_initializer = _initializers.get(
            "glorot_uniform" if recurrent_initializer is None else recurrent_initializer,
            "recurrent_initializer")
        self.bias_initializer = _initializers.get(
            "glorot_uniform" if bias_initializer is None else bias_initializer,
            "bias_initializer")
        self.kernel_regularizer = _regularizers.get(kernel_regularizer, "kernel_regularizer")
        self.recurrent_regularizer = _regularizers.get(recurrent_regularizer,
                                                       "recurrent_regularizer")
        self.bias_regularizer = _regularizers.get(bias_regularizer, "bias_regularizer")
        self.kernel_constraint = _constraints.get(kernel_constraint, "kernel_constraint")
        self.recurrent_constraint = _constraints.get(recurrent_constraint, "recurrent_constraint")
        self.bias_constraint = _constraints.get(bias_constraint, "bias_constraint")
        self.dropout = _check_rate(dropout, "dropout")
        self.recurrent_dropout = _check_rate(recurrent_dropout, "recurrent_dropout")
        self.seed = _check_seed(seed)
        self._generators = {}
        self._factory_device = None if device is None else torch.device(device)
        self._factory_dtype = _resolve_dtype(dtype)
        self.input_size: Optional[int] = None
        for name in self._weight_names:
            self.register_parameter(name, None)
        if input_size is not None:
            self.build(input_size)

    # ---- building ---------------------------------------------------------------------------

    @property
    def built(self) -> bool:
        """Whether the weights exist."""
        return self.kernel is not None

    def build(self, input_shape, device=None) -> None:
        """Creates the weights for inputs whose last dimension is the feature size.

        Args:
            input_shape: an int (the number of input features) or a shape whose last entry
                is it, e.g. `(batch, timesteps, features)`.
            device: where to create the weights when the layer has no `device` argument
                (default: the CPU).

        Raises:
            ValueError: if the layer is already built for another feature size.
        """
        if isinstance(input_shape, numbers.Integral) and not isinstance(input_shape, bool):
            features = input_shape
        else:
            try:
                features = tuple(input_shape)[-1]
            except (TypeError, IndexError):
                raise ValueError(f"{type(self).__name__}.build: input_shape must be an int or a "
                                 f"non-empty shape, got {input_shape!r}") from None
        features = _check_units(features, "input_size")
        if self.built:
            if features != self.input_size:
                raise ValueError(f"{type(self).__name__} was built for inputs with "
                                 f"{self.input_size} features; it cannot be rebuilt for {features}")
            return
        self.input_size = features
        self._create_weights(self._factory_device or device or torch.device("cpu"))

    def _create_weights(self, device) -> None:
        dtype = self._factory_dtype or torch.get_default_dtype()
        u, f = self.units, self.input_size
        shapes = {"kernel": (f, 3 * u), "recurrent_kernel": (u, 3 * u)}
        if self.use_bias:
            shapes["bias"] = (2, 3 * u) if self.reset_after else (3 * u,)
        inits = {"kernel": self.kernel_initializer, "recurrent_kernel": self.recurrent_initializer,
                 "bias": self.bias_initializer}
        for name, shape in shapes.items():
            value = _initializers.initialize(inits[name], shape, dtype, device)
            setattr(self, name, nn.Parameter(value))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-draws the weights from their initializers (built layers only)."""
        if self.built:
            inits = {"kernel": self.kernel_initializer,
                     "recurrent_kernel": self.recurrent_initializer,
                     "bias": self.bias_initializer}
            for name, p in zip(self._weight_names, self._weight_list()):
                if p is not None:
                    p.copy_(_initializers.initialize(inits[name], p.shape, p.dtype, p.device))

    def _build_for_input(self, features: int, device) -> torch.dtype:
        if not self.built:
            self.build(features, device=device)
        elif features != self.input_size:
            raise ValueError(f"{type(self).__name__} expects inputs with {self.input_size} "
                             f"features (kernel shape {tuple(self.kernel.shape)}), got {features}")
        return self.kernel.dtype

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Loading into an unbuilt layer builds it from the stored kernel's shape first.
        key = prefix + "kernel"
        if not self.built and key in state_dict:
            self.build(int(state_dict[key].shape[0]))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- weights ----------------------------------------------------------------------------

    def _weight_list(self):
        return [self.kernel, self.recurrent_kernel, self.bias]

    @property
    def weights(self) -> List[nn.Parameter]:
        """The weights in Keras order: `[kernel, recurrent_kernel(, bias)]`."""
        return [p for p in self._weight_list() if p is not None]

    def _expected_shapes(self):
        u, f = self.units, self.input_size
        shapes = [("kernel", (f, 3 * u)), ("recurrent_kernel", (u, 3 * u))]
        if self.use_bias:
            shapes.append(("bias", (2, 3 * u) if self.reset_after else (3 * u,)))
        return shapes

    def get_weights(self) -> List[np.ndarray]:
        """The weights as NumPy arrays, in Keras order and layout.

        Returns:
            `[kernel (input_dim, 3 * units), recurrent_kernel (units, 3 * units), bias]`,
            bias `(2, 3 * units)` for `reset_after=True`, `(3 * units,)` otherwise, absent
            for `use_bias=False`; gate blocks [z, r, h]. Copies, in the weights' dtype
            (bfloat16 weights come back as float32). Empty before the layer is built.
        """
        return [_to_numpy(p) for p in self.weights]

    @torch.no_grad()
    def set_weights(self, weights: Sequence) -> None:
        """Sets the weights from arrays in Keras order and layout (see `get_weights`).

        An unbuilt layer is built from the kernel's shape first. Values are copied into the
        existing parameters (cast to their dtype): a float32 round trip with
        `keras.layers.GRU` is bit-exact.

        Args:
            weights: a list of NumPy arrays (or tensors).

        Raises:
            ValueError: if the number of arrays or a shape does not match.
        """
        weights = list(weights)
        if not self.built:
            first = np.shape(weights[0]) if weights else ()
            if len(first) != 2:
                raise ValueError(f"{type(self).__name__}.set_weights: expected [kernel "
                                 f"(input_dim, {3 * self.units}), ...], got "
                                 f"{[np.shape(w) for w in weights]}")
            self.build(int(first[0]))
        expected = self._expected_shapes()
        if len(weights) != len(expected):
            raise ValueError(
                f"{type(self).__name__}.set_weights: expected {len(expected)} arrays "
                f"{[f'{n} {s}' for n, s in expected]}, got {len(weights)}")
        for (name, shape), w in zip(expected, weights):
            if tuple(np.shape(w)) != shape:
                raise ValueError(f"{type(self).__name__}.set_weights: {name} must have shape "
                                 f"{shape}, got {tuple(np.shape(w))}")
        for p, w in zip(self.weights, weights):
            src = w.detach() if isinstance(w, torch.Tensor) else torch.as_tensor(np.asarray(w))
            p.copy_(src.to(device=p.device, dtype=p.dtype))

    # ---- regularizers, constraints ------------------------------------------------------------

    def _regularized(self):
        return ((self.kernel, self.kernel_regularizer),
                (self.recurrent_kernel, self.recurrent_regularizer),
                (self.bias, self.bias_regularizer))

    def _own_weight_losses(self) -> List[torch.Tensor]:
        return [_scalar(reg(p), p) for p, reg in self._regularized()
                if p is not None and reg is not None]

    @torch.no_grad()
    def _apply_own_constraints(self) -> None:
        for name, p, c in (("kernel", self.kernel, self.kernel_constraint),
                           ("recurrent_kernel", self.recurrent_kernel, self.recurrent_constraint),
                           ("bias", self.bias, self.bias_constraint)):
            if p is not None and c is not None:
                value = torch.as_tensor(c(p.detach()))
                if value.shape != p.shape:
                    raise ValueError(f"the {name} constraint {c!r} returned shape "
                                     f"{tuple(value.shape)}, expected {tuple(p.shape)}")
                p.copy_(value)

    # ---- dropout ----------------------------------------------------------------------------

    def _generator(self, device: torch.device) -> Optional[torch.Generator]:
        if self.seed is None:
            return None  # the device's global generator: torch.manual_seed controls it
        key = str(device)
        if key not in self._generators:
            self._generators[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._generators[key]

    def _draw_dropout_masks(self, batch: int, like: torch.Tensor):
        """Fresh per-call masks `(input_mask, recurrent_mask)` for training.

        Keras >= 3.8: with `recurrent_dropout == 0` one `(batch, features)` input mask shared
        by the three gates; otherwise (Keras' implementation 1) three independent input masks
        `(3, batch, features)` and three recurrent masks `(3, batch, units)`.
        """
        if self.dropout == 0 and self.recurrent_dropout == 0:
            return None, None
        gen = self._generator(like.device)
        per_gate = self.recurrent_dropout > 0
        in_mask = rec_mask = None
        if self.dropout > 0:
            shape = (3, batch, self.input_size) if per_gate else (batch, self.input_size)
            in_mask = _dropout_mask(shape, self.dropout, like, gen)
        if self.recurrent_dropout > 0:
            rec_mask = _dropout_mask((3, batch, self.units), self.recurrent_dropout, like, gen)
        return in_mask, rec_mask

    def _run_gru(self, x, h0, mask, masks, *, go_backwards, time_major, zero_output_for_mask):
        return functional.gru(
            x, self.kernel, self.recurrent_kernel, self.bias, h0, reset_after=self.reset_after,
            activation=self.activation, recurrent_activation=self.recurrent_activation,
            go_backwards=go_backwards, time_major=time_major, mask=mask,
            zero_output_for_mask=zero_output_for_mask, input_dropout_mask=masks[0],
            recurrent_dropout_mask=masks[1])

    # ---- config -------------------------------------------------------------------------------

    def _cell_config(self) -> dict:
        return dict(units=self.units, activation=self.activation,
                    recurrent_activation=self.recurrent_activation, use_bias=self.use_bias,
                    kernel_initializer=self.kernel_initializer,
                    recurrent_initializer=self.recurrent_initializer,
                    bias_initializer=self.bias_initializer,
                    kernel_regularizer=self.kernel_regularizer,
                    recurrent_regularizer=self.recurrent_regularizer,
                    bias_regularizer=self.bias_regularizer,
                    kernel_constraint=self.kernel_constraint,
                    recurrent_constraint=self.recurrent_constraint,
                    bias_constraint=self.bias_constraint, dropout=self.dropout,
                    recurrent_dropout=self.recurrent_dropout, reset_after=self.reset_after,
                    seed=self.seed, input_size=self.input_size,
                    device=self.kernel.device if self.built else self._factory_device,
                    dtype=self.kernel.dtype if self.built else self._factory_dtype)

    @classmethod
    def from_config(cls, config: dict):
        """Creates a layer from `get_config()`'s dict (fresh weights)."""
        return cls(**config)

    def _cell_repr(self) -> str:
        parts = [f"{self.units}"]
        if self.built:
            parts.append(f"input_size={self.input_size}")
        for name, default in (("activation", "tanh"), ("recurrent_activation", "sigmoid"),
                              ("use_bias", True), ("reset_after", True), ("dropout", 0.0),
                              ("recurrent_dropout", 0.0)):
            value = getattr(self, name)
            if value != default:
                parts.append(f"{name}={value!r}")
        return ", ".join(parts)


# --------------------------------------------------------------------------------------------
# GRUCell
# --------------------------------------------------------------------------------------------

class GRUCell(_GRUWeights):
    """Cell class for the GRU layer: processes one timestep.

    `cell(x_t, h)` returns `(h_new, new_state)` where `new_state` is `[h_new]` when `h` is a
    list (Keras' convention) and `h_new` itself when `h` is a tensor. Wrap it in `RNN` to run
    a sequence: `RNN(GRUCell(units))` runs the fused sequence kernel with the cell's weights
    (one call, not a Python loop) and equals `GRU(units)` with the same weights.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: activation function to use (a Keras name, None for linear, or a
            callable). Default: `"tanh"`.
        recurrent_activation: activation for the update and reset gates. Default:
            `"sigmoid"`.
        use_bias: whether the layer has a bias. Default: True.
        kernel_initializer: initializer of `kernel` (a Keras name, an Initializer or a
            callable). Default: `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Default: `"orthogonal"`.
        bias_initializer: initializer of `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: regularizers of the
            weights (`"l1"`, `"l2"`, `"l1_l2"`, a Regularizer or a callable). Default: None.
        kernel_constraint, recurrent_constraint, bias_constraint: constraints of the
            weights (`"max_norm"`, `"non_neg"`, `"unit_norm"`, `"min_max_norm"`, a
            Constraint or a callable). Default: None.
        dropout: float in [0, 1], fraction of the input units to drop. Default: 0.
        recurrent_dropout: float in [0, 1], fraction of the recurrent units to drop.
            Default: 0.
        reset_after: GRU convention: apply the reset gate after (True, default and
            cuDNN-compatible) or before (False) the recurrent matrix multiplication.
        seed: int seed of the dropout masks (reproducible masks), or None (global RNG).
        input_size: number of input features: builds the weights now. Default: built on
            the first call.
        device, dtype: where and in which dtype to create the weights.

    Call arguments:
        inputs: `(batch, features)` tensor.
        states: `(batch, units)` tensor, or a list of one such tensor; None means zeros.
        training: whether dropout applies; None follows `module.training`.

    Dropout masks are drawn on the first training call and reused by later calls until
    `reset_dropout_mask()` / `reset_recurrent_dropout_mask()`, as in Keras, so a manual loop
    over timesteps uses one mask per sequence. `RNN` resets them after every call.

    Example:

    >>> cell = GRUCell(4)
    >>> x = torch.rand(32, 10, 8)
    >>> h = torch.zeros(32, 4)
    >>> for t in range(10):
    ...     out, h = cell(x[:, t], h)
    >>> out.shape
    torch.Size([32, 4])
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, reset_after=True,
                 seed=None, input_size=None, device=None, dtype=None):
        super().__init__(units, activation, recurrent_activation, use_bias, kernel_initializer,
                         recurrent_initializer, bias_initializer, kernel_regularizer,
                         recurrent_regularizer, bias_regularizer, kernel_constraint,
                         recurrent_constraint, bias_constraint, dropout, recurrent_dropout,
                         reset_after, seed, input_size, device, dtype)
        self._dropout_mask = None
        self._recurrent_dropout_mask = None

    @property
    def state_size(self) -> int:
        """The size of the (single) state: `units`."""
        return self.units

    @property
    def output_size(self) -> int:
        """The size of the output: `units`."""
        return self.units

    def get_initial_state(self, batch_size: int) -> List[torch.Tensor]:
        """`[zeros(batch_size, units)]` in the weights' dtype and device."""
        like = self.kernel if self.built else None
        dtype = like.dtype if like is not None else (self._factory_dtype or torch.get_default_dtype())
        device = like.device if like is not None else self._factory_device
        return [torch.zeros(batch_size, self.units, dtype=dtype, device=device)]

    def reset_dropout_mask(self) -> None:
        """Forgets the cached input dropout mask (the next training call draws a new one)."""
        self._dropout_mask = None

    def reset_recurrent_dropout_mask(self) -> None:
        """Forgets the cached recurrent dropout mask."""
        self._recurrent_dropout_mask = None

    def _cached_dropout_masks(self, batch: int, like: torch.Tensor, training: bool):
        # Keras' DropoutRNNCell: masks are drawn once and reused until reset.
        if not training or (self.dropout == 0 and self.recurrent_dropout == 0):
            return None, None

        def stale(m, tail):
            return (m is None or tuple(m.shape[-2:]) != (batch, tail) or m.device != like.device
                    or m.dtype != like.dtype)
        need_in = self.dropout > 0 and stale(self._dropout_mask, self.input_size)
        need_rec = self.recurrent_dropout > 0 and stale(self._recurrent_dropout_mask, self.units)
        if need_in or need_rec:
            in_mask, rec_mask = self._draw_dropout_masks(batch, like)
            if need_in:
                self._dropout_mask = in_mask
            if need_rec:
                self._recurrent_dropout_mask = rec_mask
        return (self._dropout_mask if self.dropout > 0 else None,
                self._recurrent_dropout_mask if self.recurrent_dropout > 0 else None)

    def forward(self, inputs, states=None, training=None):
        """One GRU step.

        Args:
            inputs: `(batch, features)`.
            states: `(batch, units)` tensor, a list of one, or None (zeros).
            training: apply dropout; None follows `module.training`.

        Returns:
            `(h_new, [h_new])` when `states` is a list or tuple, `(h_new, h_new)` otherwise.
        """
        x = _as_tensor(inputs, "GRUCell inputs")
        if x.dim() != 2:
            raise ValueError(f"GRUCell expects inputs of shape (batch, features), got "
                             f"{x.dim()}-D shape {tuple(x.shape)}")
        batch = x.shape[0]
        dtype = self._build_for_input(int(x.shape[1]), x.device)
        if x.dtype != dtype:
            x = x.to(dtype)
        nested = isinstance(states, (list, tuple))
        if nested:
            if len(states) != 1:
                raise ValueError(f"GRUCell has one state; got a list of {len(states)}")
            h = states[0]
        else:
            h = states
        if h is None:
            h = x.new_zeros(batch, self.units)
        h = _as_tensor(h, "GRUCell states", x.device)
        if tuple(h.shape) != (batch, self.units):
            raise ValueError(f"GRUCell states must have shape (batch, units) = "
                             f"{(batch, self.units)}, got {tuple(h.shape)}")
        if h.dtype != dtype:
            h = h.to(dtype)
        training = self.training if training is None else bool(training)
        masks = self._cached_dropout_masks(batch, x, training)
        outputs, _ = self._run_gru(x.unsqueeze(1), h, None, masks, go_backwards=False,
                                   time_major=False, zero_output_for_mask=False)
        h_new = outputs[:, 0]
        return h_new, ([h_new] if nested else h_new)

    def get_config(self) -> dict:
        """The constructor arguments (resolved objects, not serialized)."""
        return self._cell_config()

    def extra_repr(self) -> str:
        return self._cell_repr()


# --------------------------------------------------------------------------------------------
# sequence layers
# --------------------------------------------------------------------------------------------

class _RecurrentMixin(_KerasLayerMixin):
    """Sequence-level Keras RNN behaviour shared by `GRU` and `RNN`: return options, masks,
    initial and stored (stateful) states, activity regularization."""

    def _init_recurrent(self, return_sequences, return_state, go_backwards, stateful, unroll,
                        time_major, zero_output_for_mask, activity_regularizer):
        self.return_sequences = _check_bool(return_sequences, "return_sequences")
        self.return_state = _check_bool(return_state, "return_state")
        self.go_backwards = _check_bool(go_backwards, "go_backwards")
        self.stateful = _check_bool(stateful, "stateful")
        # Accepted for Keras compatibility; the fused kernel runs either way (same numbers).
        self.unroll = _check_bool(unroll, "unroll")
        self.time_major = _check_bool(time_major, "time_major")
        self.zero_output_for_mask = _check_bool(zero_output_for_mask, "zero_output_for_mask")
        self.activity_regularizer = _regularizers.get(activity_regularizer, "activity_regularizer")
        self._states: Optional[List[torch.Tensor]] = None
        self._activity_losses: List[torch.Tensor] = []

    def _apply(self, fn, *args, **kwargs):
        # Keep the stored (stateful) states with the module on .to()/.cuda()/.double().
        module = super()._apply(fn, *args, **kwargs)
        if self._states is not None:
            self._states = [fn(s) for s in self._states]
        return module

    # ---- states -------------------------------------------------------------------------------

    @property
    def states(self) -> Optional[List[torch.Tensor]]:
        """The stored states of a stateful layer (a list, one `(batch, units)` tensor for a
        GRU), or None before the first call."""
        return None if self._states is None else list(self._states)

    def reset_states(self, states=None) -> None:
        """Resets the stored states of a stateful layer.

        Args:
            states: None (default) zeroes the stored states, as Keras' `reset_state()` does
                (a layer that was never called has nothing to reset). Otherwise the new
                states: a tensor or a list with one `(batch, size)` tensor per state (the
                Keras 2 form); this may change the batch size the layer expects.
        """
        if states is None:
            if self._states is not None:
                self._states = [torch.zeros_like(s) for s in self._states]
            return
        states = list(states) if isinstance(states, (list, tuple)) else [states]
        sizes = self._state_sizes()
        if len(states) != len(sizes):
            raise ValueError(f"{type(self).__name__}.reset_states: expected {len(sizes)} state "
                             f"tensor(s), got {len(states)}")
        new = []
        for s, size in zip(states, sizes):
            s = _as_tensor(s, "states")
            if s.dim() != 2 or s.shape[1] != size:
                raise ValueError(f"{type(self).__name__}.reset_states: each state must have "
                                 f"shape (batch, {size}), got {tuple(s.shape)}")
            new.append(s.detach().clone())
        if len({s.shape[0] for s in new}) != 1:
            raise ValueError("reset_states: the states have different batch sizes")
        self._states = new

    def reset_state(self, states=None) -> None:
        """Alias of `reset_states` (Keras 3's name)."""
        self.reset_states(states)

    # ---- call ---------------------------------------------------------------------------------

    def _layout(self) -> str:
        return "(timesteps, batch, features) with time_major=True" if self.time_major \
            else "(batch, timesteps, features)"

    def _check_mask(self, mask, T: int, B: int, device) -> Optional[torch.Tensor]:
        if mask is None:
            return None
        mask = _as_tensor(mask, "mask", device)
        expected = (T, B) if self.time_major else (B, T)
        if tuple(mask.shape) != expected:
            layout = "(timesteps, batch)" if self.time_major else "(batch, timesteps)"
            raise ValueError(f"{type(self).__name__}: mask must have shape {layout} = "
                             f"{expected}, got {tuple(mask.shape)}")
        return mask if mask.dtype == torch.bool else mask != 0

    def _resolve_initial_states(self, initial_state, B: int, x: torch.Tensor):
        sizes = self._state_sizes()
        if self.stateful and self._states is not None and self._states[0].shape[0] != B:
            raise ValueError(
                f"If an RNN is stateful, the batch size of the input sequences must be the same "
                f"as the batch size of its stored state.\n- Expected batch size: "
                f"{self._states[0].shape[0]}\n- Received batch size: {B}\n(To start over with "
                f"another batch size, call reset_states(states) with states of that batch size.)")
        if initial_state is None:
            if self.stateful and self._states is not None:
                return [s.to(device=x.device, dtype=x.dtype) for s in self._states]
            return None
        states = list(initial_state) if isinstance(initial_state, (list, tuple)) \
            else [initial_state]
        if len(states) != len(sizes):
            raise ValueError(f"{type(self).__name__}: initial_state must hold {len(sizes)} "
                             f"tensor(s) (one per state), got {len(states)}")
        out = []
        for s, size in zip(states, sizes):
            s = _as_tensor(s, "initial_state", x.device)
            if tuple(s.shape) != (B, size):
                raise ValueError(f"{type(self).__name__}: initial_state must have shape "
                                 f"(batch, units) = {(B, size)}, got {tuple(s.shape)}")
            out.append(s if s.dtype == x.dtype else s.to(x.dtype))
        return out

    def forward(self, inputs, mask=None, initial_state=None, training=None):
        """Runs the layer over a sequence.

        Args:
            inputs: `(batch, timesteps, features)`, or `(timesteps, batch, features)` with
                `time_major=True`. Cast to the weights' dtype.
            mask: optional bool `(batch, timesteps)` (`(timesteps, batch)` with
                `time_major`), True = use the step. At a masked step the state is carried and
                the output repeats the previous output (or is 0 with `zero_output_for_mask`).
            initial_state: optional `(batch, units)` tensor or list of one per state; it
                overrides the stored state of a stateful layer. None: zeros (or the stored
                state).
            training: apply dropout; None follows `module.training`.

        Returns:
            The output: `(batch, timesteps, units)` with `return_sequences` (time-major with
            `time_major`), else `(batch, units)`, the output of the last processed step.
            With `return_state`, the tuple `(output, *final_states)`.
        """
        self._activity_losses = []
        x = _as_tensor(inputs, f"{type(self).__name__} inputs")
        if x.dim() != 3:
            raise ValueError(f"{type(self).__name__} expects 3-D inputs {self._layout()}, got "
                             f"{x.dim()}-D shape {tuple(x.shape)}")
        T, B = (x.shape[0], x.shape[1]) if self.time_major else (x.shape[1], x.shape[0])
        # No int(): under torch.export with dynamic shapes these stay symbolic.
        dtype = self._prepare(x)
        if dtype is not None and x.dtype != dtype:
            x = x.to(dtype)
        mask = self._check_mask(mask, T, B, x.device)
        h0 = self._resolve_initial_states(initial_state, B, x)
        training = self.training if training is None else bool(training)

        outputs, final_states = self._run(x, mask, h0, training, T, B)

        if self.stateful:
            self._states = [s.detach() for s in final_states]
        if self.return_sequences:
            output = outputs
        elif T > 0:
            output = outputs[-1] if self.time_major else outputs[:, -1]
        else:  # no step: the "previous output" Keras starts from is zeros
            output = x.new_zeros(B, outputs.shape[-1])
        result = (output, *final_states) if self.return_state else output
        if self.activity_regularizer is not None:
            returned = result if self.return_state else (result,)
            # Keras: every returned tensor, each penalty divided by the batch size.
            self._activity_losses = [_scalar(self.activity_regularizer(t), t) / B
                                     for t in returned]
        return result

    def _recurrent_config(self) -> dict:
        return dict(return_sequences=self.return_sequences, return_state=self.return_state,
                    go_backwards=self.go_backwards, stateful=self.stateful, unroll=self.unroll,
                    time_major=self.time_major, zero_output_for_mask=self.zero_output_for_mask,
                    activity_regularizer=self.activity_regularizer)

    def _recurrent_repr(self) -> str:
        parts = []
        for name in ("return_sequences", "return_state", "go_backwards", "stateful",
                     "time_major", "zero_output_for_mask"):
            if getattr(self, name):
                parts.append(f"{name}=True")
        return ", ".join(parts)


class GRU(_RecurrentMixin, _GRUWeights):
    """Gated Recurrent Unit - Cho et al. 2014, Keras 3 semantics, on fused kernels.

    Two conventions exist. The default (`reset_after=True`, as in Keras 2.x/3 and cuDNN)
    applies the reset gate after the recurrent matrix multiplication, with separate input and
    recurrent biases; `reset_after=False` (1406.1078v3) applies it to the hidden state
    before the multiplication. With `W = kernel`, `U = recurrent_kernel`, gate blocks
    [z, r, h]:

        z  = recurrent_activation(x W_z + b_iz + h U_z + b_hz)
        r  = recurrent_activation(x W_r + b_ir + h U_r + b_hr)
        h~ = activation(x W_h + b_ih + r * (h U_h + b_hh))      # reset_after=True
        h~ = activation(x W_h + b_h + (r * h) U_h)               # reset_after=False
        h_t = z * h + (1 - z) * h~

    Every configuration (both conventions, any activation pair, masks, `go_backwards`,
    dropout, recurrent dropout) runs as one call of the fused sequence op.

    Args:
        units: positive integer, dimensionality of the output space.
        activation: activation function (a Keras name, None for linear, or a callable).
            Default: `"tanh"`. The Keras names tanh, sigmoid, hard_sigmoid, relu, linear,
            softsign, elu, selu, softplus, swish/silu, gelu, exponential run inside the
            kernels; other names and callables run on the reference path (a per-step loop).
        recurrent_activation: activation of the update and reset gates. Default: `"sigmoid"`.
        use_bias: whether the layer has a bias. Default: True.
        return_sequences: return the whole output sequence (True) or the last output.
            Default: False.
        return_state: also return the final state: `(output, state)`. Default: False.
        go_backwards: process the sequence from the last step to the first and return the
            reversed sequence (in processing order). Default: False.
        stateful: keep the final state of each batch as the initial state of the next call
            (sample i continues sample i). Default: False.
        unroll: accepted for Keras compatibility; has no effect (the fused kernel is used
            either way and the numbers are the same). Default: False.
        time_major: inputs and outputs are `(timesteps, batch, ...)` (the Keras 2 / R
            argument). Default: False.
        reset_after: GRU convention (after = True, default and cuDNN-compatible).
        kernel_initializer: initializer of `kernel`. Default: `"glorot_uniform"`.
        recurrent_initializer: initializer of `recurrent_kernel`. Default: `"orthogonal"`.
        bias_initializer: initializer of `bias`. Default: `"zeros"`.
        kernel_regularizer, recurrent_regularizer, bias_regularizer: weight regularizers
            (`"l1"`, `"l2"`, `"l1_l2"`, a Regularizer or a callable). Default: None.
        activity_regularizer: regularizer applied to every returned tensor (output and, with
            `return_state`, the state), divided by the batch size. Default: None.
        kernel_constraint, recurrent_constraint, bias_constraint: weight constraints
            (`"max_norm"`, `"non_neg"`, `"unit_norm"`, `"min_max_norm"`, a Constraint or a
            callable), applied by `apply_constraints()`, never in forward. Default: None.
        dropout: float in [0, 1], fraction of the input units to drop. Default: 0.
        recurrent_dropout: float in [0, 1], fraction of the recurrent units to drop.
            Default: 0.
        zero_output_for_mask: output zeros (instead of the previous output) at masked steps.
            Default: False.
        seed: int seed of the dropout masks, or None (PyTorch's global generator).
        input_size: number of input features: builds the weights now. Default: built on
            the first call.
        device, dtype: where and in which dtype to create the weights (default: the first
            input's device; `torch.get_default_dtype()`).

    Call arguments:
        inputs: `(batch, timesteps, features)` (or time-major).
        mask: optional bool `(batch, timesteps)`, True = use the step.
        initial_state: optional `(batch, units)` tensor (or a list of one).
        training: whether dropout applies; None follows `module.training`.

    Dropout (Keras >= 3.8): masks are drawn once per call (per batch) and reused at every
    timestep, with inverted scaling `1 / (1 - rate)`, in training only. With
    `recurrent_dropout == 0` one input mask is shared by the three gates; otherwise three
    input and three recurrent masks, one per gate. The carried state is never dropped.

    Weights: `kernel (features, 3 * units)`, `recurrent_kernel (units, 3 * units)`, `bias`
    `(2, 3 * units)` (reset_after) or `(3 * units,)`: Keras' layout, so `get_weights()` /
    `set_weights()` exchange weights with `keras.layers.GRU` exactly.

    Example:

    >>> inputs = torch.rand(32, 10, 8)
    >>> gru = GRU(4)
    >>> gru(inputs).shape
    torch.Size([32, 4])
    >>> gru = GRU(4, return_sequences=True, return_state=True)
    >>> whole_sequence_output, final_state = gru(inputs)
    >>> whole_sequence_output.shape, final_state.shape
    (torch.Size([32, 10, 4]), torch.Size([32, 4]))
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                 return_sequences=False, return_state=False, go_backwards=False, stateful=False,
                 unroll=False, time_major=False, reset_after=True,
                 kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                 bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
                 bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
                 recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                 recurrent_dropout=0.0, zero_output_for_mask=False, seed=None, input_size=None,
                 device=None, dtype=None):
        _GRUWeights.__init__(self, units, activation, recurrent_activation, use_bias,
                             kernel_initializer, recurrent_initializer, bias_initializer,
                             kernel_regularizer, recurrent_regularizer, bias_regularizer,
                             kernel_constraint, recurrent_constraint, bias_constraint, dropout,
                             recurrent_dropout, reset_after, seed, input_size, device, dtype)
        self._init_recurrent(return_sequences, return_state, go_backwards, stateful, unroll,
                             time_major, zero_output_for_mask, activity_regularizer)

    def _state_sizes(self) -> List[int]:
        return [self.units]

    def _prepare(self, x: torch.Tensor) -> torch.dtype:
        return self._build_for_input(int(x.shape[-1]), x.device)

    def _run(self, x, mask, h0, training, T, B):
        masks = self._draw_dropout_masks(B, x) if training else (None, None)
        outputs, h = self._run_gru(x, None if h0 is None else h0[0], mask, masks,
                                   go_backwards=self.go_backwards, time_major=self.time_major,
                                   zero_output_for_mask=self.zero_output_for_mask)
        return outputs, [h]

    def get_config(self) -> dict:
        """The constructor arguments (resolved objects, not serialized); with it,
        `GRU.from_config(config)` makes a layer of the same configuration (fresh weights)."""
        return {**self._cell_config(), **self._recurrent_config()}

    def extra_repr(self) -> str:
        rec = self._recurrent_repr()
        return self._cell_repr() + (", " + rec if rec else "")

    # ---- torch.nn.GRU conversion ----------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: nn.GRU, **kwargs) -> "GRU":
        """A `GRU` computing what a one-layer, one-direction `torch.nn.GRU` computes.

        torch's GRU is Keras' `reset_after=True` with tanh/sigmoid; the weights are copied
        with the gate reordering [r, z, n] → [z, r, h] (exact). `time_major` defaults to
        `not module.batch_first`, and the result lives on the module's device and dtype.

        Args:
            module: a `torch.nn.GRU` with `num_layers=1`, `bidirectional=False` (use
                `Bidirectional.from_torch` for a bidirectional one).
            **kwargs: other `GRU` arguments (e.g. `return_sequences=True`).

        Returns:
            A built `GRU`.
        """
        if not isinstance(module, nn.GRU):
            raise TypeError(f"GRU.from_torch expects a torch.nn.GRU, got {type(module).__name__}")
        if module.num_layers != 1:
            raise ValueError(f"GRU.from_torch converts one layer; the module has "
                             f"num_layers={module.num_layers}: stack one GRU per layer")
        if module.bidirectional:
            raise ValueError("GRU.from_torch: the module is bidirectional; use "
                             "Bidirectional.from_torch")
        for key, allowed in (("reset_after", True), ("activation", "tanh"),
                             ("recurrent_activation", "sigmoid"), ("use_bias", module.bias)):
            if key in kwargs and kwargs.pop(key) != allowed:
                raise ValueError(f"GRU.from_torch: torch.nn.GRU has {key}={allowed!r}")
        for key in ("units", "input_size", "device", "dtype"):
            if key in kwargs:
                raise ValueError(f"GRU.from_torch: {key} comes from the module; don't pass it")
        return cls._from_torch_weights(module, "", **kwargs)

    @classmethod
    def _from_torch_weights(cls, module: nn.GRU, suffix: str, **kwargs) -> "GRU":
        w_ih = getattr(module, "weight_ih_l0" + suffix)
        kwargs.setdefault("time_major", not module.batch_first)
        layer = cls(module.hidden_size, use_bias=module.bias, input_size=module.input_size,
                    device=w_ih.device, dtype=w_ih.dtype, **kwargs)
        b_ih = getattr(module, "bias_ih_l0" + suffix) if module.bias else None
        b_hh = getattr(module, "bias_hh_l0" + suffix) if module.bias else None
        kernel, recurrent_kernel, bias = conversion.torch_to_keras(
            w_ih.detach(), getattr(module, "weight_hh_l0" + suffix).detach(),
            None if b_ih is None else b_ih.detach(), None if b_hh is None else b_hh.detach())
        layer.set_weights([kernel, recurrent_kernel] + ([bias] if bias is not None else []))
        return layer

    def _check_torch_compatible(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"{what}: the layer is not built yet")
        if not self.reset_after:
            raise ValueError(f"{what}: reset_after=False has no torch.nn.GRU equivalent")
        if self.activation != "tanh" or self.recurrent_activation != "sigmoid":
            raise ValueError(f"{what}: torch.nn.GRU only computes activation='tanh', "
                             f"recurrent_activation='sigmoid'; got {self.activation!r}, "
                             f"{self.recurrent_activation!r}")

    def to_torch(self) -> nn.GRU:
        """The equivalent one-layer `torch.nn.GRU` (a copy of the weights).

        Requires `reset_after=True`, tanh and sigmoid. `batch_first = not time_major`. Only
        the cell is converted: `go_backwards`, `return_sequences`, masks, stateful and dropout
        are properties of this layer's call, not of `nn.GRU`'s weights.
        """
        self._check_torch_compatible("GRU.to_torch")
        module = nn.GRU(self.input_size, self.units, bias=self.use_bias,
                        batch_first=not self.time_major, device=self.kernel.device,
                        dtype=self.kernel.dtype)
        weights = conversion.keras_to_torch(self.kernel.detach(), self.recurrent_kernel.detach(),
                                            None if self.bias is None else self.bias.detach())
        with torch.no_grad():
            for name, value in weights.items():
                getattr(module, name).copy_(value)
        return module


class RNN(_RecurrentMixin, nn.Module):
    """Base class for recurrent layers: runs a cell over a sequence.

    Over a `GRUCell` it runs the fused sequence kernel with the cell's weights (one call, no
    Python loop), exactly `GRU` with those weights. Any other cell is looped in Python: a
    `torch.nn.Module` with a `state_size` attribute (an int, or a list of ints, one per
    state) whose `forward(inputs, states[, training])` returns `(output, new_states)` — the
    Keras cell protocol. `get_initial_state(batch_size)` and `output_size` are used when the
    cell has them.

    Args:
        cell: a `GRUCell` or another cell (see above). A list of cells (Keras'
            StackedRNNCells) is not supported: stack layers instead.
        return_sequences: return the whole output sequence (True) or the last output.
        return_state: also return the final states: `(output, *states)`.
        go_backwards: process the sequence backwards and return the reversed sequence.
        stateful: keep the final states as the initial states of the next call.
        unroll: accepted for Keras compatibility; no effect.
        time_major: inputs and outputs are `(timesteps, batch, ...)`.
        zero_output_for_mask: output zeros (instead of the previous output) at masked steps.
        activity_regularizer: regularizer applied to every returned tensor, divided by the
            batch size. Default: None.

    Call arguments: as `GRU` (`inputs`, `mask`, `initial_state`, `training`).

    Example:

    >>> inputs = torch.rand(32, 10, 8)
    >>> rnn = RNN(GRUCell(4), return_sequences=True, return_state=True)
    >>> whole_sequence_output, final_state = rnn(inputs)
    >>> whole_sequence_output.shape, final_state.shape
    (torch.Size([32, 10, 4]), torch.Size([32, 4]))
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, time_major=False, zero_output_for_mask=False,
                 activity_regularizer=None):
        nn.Module.__init__(self)
        if isinstance(cell, (list, tuple)):
            raise ValueError("RNN: a list of cells (StackedRNNCells) is not supported; stack "
                             "RNN/GRU layers (e.g. in an nn.Sequential) instead")
        state_size = getattr(cell, "state_size", None)
        if state_size is None:
            raise ValueError(f"RNN: the cell must have a `state_size` attribute (an int, or a "
                             f"list of ints); got {type(cell).__name__}")
        sizes = [state_size] if isinstance(state_size, numbers.Integral) else state_size
        if not isinstance(sizes, (list, tuple)) or not sizes or not all(
                isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in sizes):
            raise ValueError(f"RNN: the cell's state_size must be an int or a list of ints, "
                             f"got {state_size!r}")
        if not callable(cell):
            raise ValueError(f"RNN: the cell must be callable, got {type(cell).__name__}")
        self.cell = cell
        self._init_recurrent(return_sequences, return_state, go_backwards, stateful, unroll,
                             time_major, zero_output_for_mask, activity_regularizer)

    @property
    def built(self) -> bool:
        """Whether the cell's weights exist."""
        return bool(getattr(self.cell, "built", True))

    def _state_sizes(self) -> List[int]:
        s = self.cell.state_size
        return [int(s)] if isinstance(s, numbers.Integral) else [int(v) for v in s]

    def _fused(self) -> bool:
        # A GRUCell subclass that overrides forward gets the generic loop (its own step).
        return isinstance(self.cell, GRUCell) and type(self.cell).forward is GRUCell.forward

    def _prepare(self, x: torch.Tensor) -> Optional[torch.dtype]:
        if isinstance(self.cell, _GRUWeights):
            return self.cell._build_for_input(int(x.shape[-1]), x.device)
        build = getattr(self.cell, "build", None)
        if build is not None and not getattr(self.cell, "built", True):
            B = x.shape[1] if self.time_major else x.shape[0]
            build((int(B), int(x.shape[-1])))
        return None

    def _run(self, x, mask, h0, training, T, B):
        if self._fused():
            cell = self.cell
            try:
                masks = cell._cached_dropout_masks(B, x, training)
                outputs, h = cell._run_gru(x, None if h0 is None else h0[0], mask, masks,
                                           go_backwards=self.go_backwards,
                                           time_major=self.time_major,
                                           zero_output_for_mask=self.zero_output_for_mask)
            finally:  # Keras clears the cell's masks after every RNN call
                cell.reset_dropout_mask()
                cell.reset_recurrent_dropout_mask()
            return outputs, [h]
        return self._loop(x, mask, h0, training, T, B)

    def _initial_cell_states(self, B: int, x: torch.Tensor) -> List[torch.Tensor]:
        get = getattr(self.cell, "get_initial_state", None)
        if get is not None:
            states = get(batch_size=B)
            states = list(states) if isinstance(states, (list, tuple)) else [states]
            return [s.to(device=x.device, dtype=x.dtype) for s in states]
        return [x.new_zeros(B, size) for size in self._state_sizes()]

    def _loop(self, x, mask, h0, training, T, B):
        cell = self.cell
        states = h0 if h0 is not None else self._initial_cell_states(B, x)
        kwargs = {"training": training} if _accepts_kwarg(cell.forward if isinstance(cell, nn.Module)
                                                          else cell, "training") else {}
        outputs, prev = [], None
        for s in range(T):
            t = T - 1 - s if self.go_backwards else s
            x_t = x[t] if self.time_major else x[:, t]
            out, new_states = cell(x_t, states, **kwargs)
            new_states = list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
            if mask is not None:
                valid = mask[t] if self.time_major else mask[:, t]
                if prev is None:
                    prev = torch.zeros_like(out)
                keep = valid.view(B, *([1] * (out.dim() - 1)))
                out = torch.where(keep, out, torch.zeros_like(out) if self.zero_output_for_mask
                                  else prev)
                new_states = [torch.where(valid.view(B, *([1] * (n.dim() - 1))), n, o)
                              for n, o in zip(new_states, states)]
            prev, states = out, new_states
            outputs.append(out)
        if outputs:
            stacked = torch.stack(outputs, dim=0 if self.time_major else 1)
        else:
            size = getattr(cell, "output_size", None) or self._state_sizes()[0]
            stacked = x.new_zeros((0, B, size) if self.time_major else (B, 0, size))
        return stacked, states

    # ---- weights ------------------------------------------------------------------------------

    @property
    def weights(self) -> List[nn.Parameter]:
        """The cell's weights (Keras order for a GRUCell)."""
        w = getattr(self.cell, "weights", None)
        return list(w) if isinstance(w, (list, tuple)) else list(self.cell.parameters())

    def get_weights(self) -> List[np.ndarray]:
        """The cell's weights as NumPy arrays (Keras order and layout for a GRUCell)."""
        if hasattr(self.cell, "get_weights"):
            return self.cell.get_weights()
        return [_to_numpy(p) for p in self.cell.parameters()]

    def set_weights(self, weights: Sequence) -> None:
        """Sets the cell's weights from arrays (see `get_weights`)."""
        if hasattr(self.cell, "set_weights"):
            return self.cell.set_weights(weights)
        params = list(self.cell.parameters())
        weights = list(weights)
        if len(weights) != len(params):
            raise ValueError(f"RNN.set_weights: expected {len(params)} arrays, got {len(weights)}")
        with torch.no_grad():
            for p, w in zip(params, weights):
                if tuple(np.shape(w)) != tuple(p.shape):
                    raise ValueError(f"RNN.set_weights: expected shape {tuple(p.shape)}, got "
                                     f"{tuple(np.shape(w))}")
                src = w.detach() if isinstance(w, torch.Tensor) else torch.as_tensor(np.asarray(w))
                p.copy_(src.to(device=p.device, dtype=p.dtype))

    def _clone_cell(self):
        cell = self.cell
        if isinstance(cell, GRUCell) and type(cell).get_config is GRUCell.get_config:
            return type(cell).from_config(cell.get_config())
        if hasattr(cell, "get_config") and hasattr(type(cell), "from_config"):
            return type(cell).from_config(cell.get_config())
        clone = copy.deepcopy(cell)
        if hasattr(clone, "reset_parameters"):  # fresh weights, as Keras' re-creation gives
            clone.reset_parameters()
        return clone

    def get_config(self) -> dict:
        """The constructor arguments; `cell` is the cell object itself."""
        return {"cell": self.cell, **self._recurrent_config()}

    @classmethod
    def from_config(cls, config: dict) -> "RNN":
        """Creates an RNN from `get_config()`'s dict."""
        return cls(**config)

    def extra_repr(self) -> str:
        return self._recurrent_repr()


def _clone_recurrent(layer, **overrides):
    """A new layer of `layer`'s configuration with fresh weights (Keras' from_config copy)."""
    if isinstance(layer, RNN):
        config = {**layer.get_config(), "cell": layer._clone_cell(), **overrides}
        return type(layer).from_config(config)
    config = {**layer.get_config(), **overrides}
    return type(layer).from_config(config)


class Bidirectional(_KerasLayerMixin, nn.Module):
    """Bidirectional wrapper for RNNs, with Keras semantics.

    The forward layer is `layer`; the backward layer is a copy of it (same configuration,
    fresh weights) with `go_backwards` flipped, unless `backward_layer` is given. The
    backward layer's output sequence is flipped back to input time order before merging.
    Both layers get `zero_output_for_mask = return_sequences`, as in Keras.

    Args:
        layer: a `GRU` or `RNN` instance (used as the forward layer).
        merge_mode: how to combine the two outputs: `"concat"` (default, last axis),
            `"sum"`, `"mul"`, `"ave"`, or None (return both as a tuple).
        weights: optional list of arrays: forward layer's weights then backward layer's.
        backward_layer: optional `GRU`/`RNN` for the backward direction; it must have the
            opposite `go_backwards` and the same `stateful`, `return_sequences`,
            `return_state` (and `time_major`).

    Call arguments:
        inputs, mask, training: as for the wrapped layer.
        initial_state: a list: the first half are the forward layer's states, the second
            half the backward layer's (for GRUs: `[h_forward, h_backward]`).

    Returns:
        The merged output; with `merge_mode=None` the tuple `(forward, backward)`. With
        `return_state`: `(output, *forward_states, *backward_states)` (with
        `merge_mode=None`: `(forward, backward, *forward_states, *backward_states)`).

    Example:

    >>> model = Bidirectional(GRU(10, return_sequences=True))
    >>> model(torch.rand(32, 5, 8)).shape
    torch.Size([32, 5, 20])
    """

    def __init__(self, layer, merge_mode="concat", weights=None, backward_layer=None):
        super().__init__()
        if not isinstance(layer, _RecurrentMixin):
            raise ValueError(f"Bidirectional: layer must be a gru_cuda GRU or RNN instance, got "
                             f"{type(layer).__name__}")
        if backward_layer is not None and not isinstance(backward_layer, _RecurrentMixin):
            raise ValueError(f"Bidirectional: backward_layer must be a gru_cuda GRU or RNN "
                             f"instance, got {type(backward_layer).__name__}")
        if merge_mode not in _MERGE_MODES:
            raise ValueError(f"Invalid merge mode. Received: {merge_mode!r}. Merge mode should be "
                             f"one of {{'sum', 'mul', 'ave', 'concat', None}}")
        if backward_layer is None:
            backward_layer = _clone_recurrent(layer, go_backwards=not layer.go_backwards)
        self.forward_layer = layer
        self.backward_layer = backward_layer
        if layer.go_backwards == backward_layer.go_backwards:
            raise ValueError(f"Forward layer and backward layer should have different "
                             f"`go_backwards` value. Received: forward_layer.go_backwards "
                             f"{layer.go_backwards}, backward_layer.go_backwards="
                             f"{backward_layer.go_backwards}")
        for attr in ("stateful", "return_sequences", "return_state", "time_major"):
            a, b = getattr(layer, attr), getattr(backward_layer, attr)
            if a != b:
                raise ValueError(f"Forward layer and backward layer are expected to have the same "
                                 f"value for attribute {attr!r}, got {a} for forward layer and "
                                 f"{b} for backward layer")
        for sub in (layer, backward_layer):
            sub.zero_output_for_mask = sub.return_sequences
        self.merge_mode = merge_mode
        if weights is not None:
            self.set_weights(weights)

    @property
    def return_sequences(self) -> bool:
        """The wrapped layers' `return_sequences`."""
        return self.forward_layer.return_sequences

    @property
    def return_state(self) -> bool:
        """The wrapped layers' `return_state`."""
        return self.forward_layer.return_state

    @property
    def stateful(self) -> bool:
        """The wrapped layers' `stateful`."""
        return self.forward_layer.stateful

    @property
    def time_major(self) -> bool:
        """The wrapped layers' `time_major` (the backward output is flipped on axis 0)."""
        return self.forward_layer.time_major

    @property
    def built(self) -> bool:
        """Whether both layers' weights exist."""
        return self.forward_layer.built and self.backward_layer.built

    def reset_states(self, states=None) -> None:
        """Resets both layers' stored states (`states`: forward half, then backward half)."""
        if states is None:
            self.forward_layer.reset_states()
            self.backward_layer.reset_states()
            return
        states = list(states)
        half = len(states) // 2
        self.forward_layer.reset_states(states[:half])
        self.backward_layer.reset_states(states[half:])

    def reset_state(self, states=None) -> None:
        """Alias of `reset_states`."""
        self.reset_states(states)

    def forward(self, inputs, mask=None, initial_state=None, training=None):
        """Runs both directions and merges them (see the class docstring)."""
        forward_state = backward_state = None
        if initial_state is not None:
            if not isinstance(initial_state, (list, tuple)):
                raise ValueError("Bidirectional: initial_state must be a list: the forward "
                                 "layer's states, then the backward layer's")
            if len(initial_state) % 2:
                raise ValueError(f"Bidirectional: initial_state must have an even length (forward "
                                 f"half, backward half), got {len(initial_state)}")
            half = len(initial_state) // 2
            forward_state = list(initial_state[:half]) or None
            backward_state = list(initial_state[half:]) or None
        y = self.forward_layer(inputs, mask=mask, initial_state=forward_state, training=training)
        y_rev = self.backward_layer(inputs, mask=mask, initial_state=backward_state,
                                    training=training)
        states = ()
        if self.return_state:
            states = tuple(y[1:]) + tuple(y_rev[1:])
            y, y_rev = y[0], y_rev[0]
        if self.return_sequences:
            y_rev = torch.flip(y_rev, dims=[0 if self.time_major else 1])
        if self.merge_mode == "concat":
            output = torch.cat([y, y_rev], dim=-1)
        elif self.merge_mode == "sum":
            output = y + y_rev
        elif self.merge_mode == "ave":
            output = (y + y_rev) / 2
        elif self.merge_mode == "mul":
            output = y * y_rev
        else:
            output = (y, y_rev)
        if self.return_state:
            return (*output, *states) if self.merge_mode is None else (output, *states)
        return output

    @property
    def weights(self) -> List[nn.Parameter]:
        """The forward layer's weights, then the backward layer's."""
        return list(self.forward_layer.weights) + list(self.backward_layer.weights)

    def get_weights(self) -> List[np.ndarray]:
        """Forward layer's weights then backward layer's, as NumPy arrays (Keras order)."""
        return self.forward_layer.get_weights() + self.backward_layer.get_weights()

    def set_weights(self, weights: Sequence) -> None:
        """Sets the weights from `get_weights()`'s layout (first half forward)."""
        weights = list(weights)
        if len(weights) % 2:
            raise ValueError(f"Bidirectional.set_weights: expected an even number of arrays "
                             f"(forward half, backward half), got {len(weights)}")
        half = len(weights) // 2
        self.forward_layer.set_weights(weights[:half])
        self.backward_layer.set_weights(weights[half:])

    def extra_repr(self) -> str:
        return f"merge_mode={self.merge_mode!r}"

    # ---- torch.nn.GRU conversion ----------------------------------------------------------------

    @classmethod
    def from_torch(cls, module: nn.GRU, merge_mode: str = "concat", **kwargs) -> "Bidirectional":
        """A `Bidirectional(GRU)` computing what a one-layer bidirectional `torch.nn.GRU` does.

        With `merge_mode="concat"` and `return_sequences=True` its output equals the torch
        module's output, and `return_state=True` gives `(output, h_forward, h_backward)`
        (torch's `h_n[0]`, `h_n[1]`).

        Args:
            module: a `torch.nn.GRU` with `num_layers=1` and `bidirectional=True`.
            merge_mode: as in the constructor.
            **kwargs: other `GRU` arguments for both directions.
        """
        if not isinstance(module, nn.GRU) or not module.bidirectional or module.num_layers != 1:
            raise ValueError("Bidirectional.from_torch expects a one-layer bidirectional "
                             "torch.nn.GRU")
        for key in ("go_backwards", "units", "input_size", "device", "dtype", "use_bias",
                    "reset_after", "activation", "recurrent_activation"):
            if key in kwargs:
                raise ValueError(f"Bidirectional.from_torch: {key} comes from the module; "
                                 f"don't pass it")
        forward = GRU._from_torch_weights(module, "", **kwargs)
        backward = GRU._from_torch_weights(module, "_reverse",
                                           **{**kwargs, "go_backwards": True})
        return cls(forward, merge_mode=merge_mode, backward_layer=backward)

    def to_torch(self) -> nn.GRU:
        """The equivalent one-layer bidirectional `torch.nn.GRU` (a copy of the weights).

        Both layers must be `GRU`s with `reset_after=True`, tanh and sigmoid; the forward
        layer must have `go_backwards=False`.
        """
        fwd, bwd = self.forward_layer, self.backward_layer
        if not (isinstance(fwd, GRU) and isinstance(bwd, GRU)) or fwd.go_backwards:
            raise ValueError("Bidirectional.to_torch needs GRU layers, the forward one with "
                             "go_backwards=False")
        fwd._check_torch_compatible("Bidirectional.to_torch")
        bwd._check_torch_compatible("Bidirectional.to_torch")
        if (fwd.units, fwd.input_size, fwd.use_bias) != (bwd.units, bwd.input_size, bwd.use_bias):
            raise ValueError("Bidirectional.to_torch: the two layers differ in units, input size "
                             "or use_bias")
        module = nn.GRU(fwd.input_size, fwd.units, bias=fwd.use_bias, bidirectional=True,
                        batch_first=not fwd.time_major, device=fwd.kernel.device,
                        dtype=fwd.kernel.dtype)
        with torch.no_grad():
            for layer, suffix in ((fwd, ""), (bwd, "_reverse")):
                weights = conversion.keras_to_torch(
                    layer.kernel.detach(), layer.recurrent_kernel.detach(),
                    None if layer.bias is None else layer.bias.detach())
                for name, value in weights.items():
                    getattr(module, name + suffix).copy_(value)
        return module
