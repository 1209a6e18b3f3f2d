"""The GRU weights in Keras layout with their initializers, regularizers, constraints and
dropout: the base of `GRUCell` and `GRU`."""
from __future__ import annotations

import numbers
from typing import List, Optional, Sequence

import numpy as np
import torch
from torch import nn

from gru_cuda import constraints as _constraints
from gru_cuda import functional
from gru_cuda import initializers as _initializers
from gru_cuda import regularizers as _regularizers
from gru_cuda.layers._base import _copy_into, _KerasLayerMixin, _scalar, _to_numpy
from gru_cuda.layers._checks import (_check_activation, _check_bool, _check_rate, _check_seed,
                                     _check_units, _resolve_dtype)


def _dropout_mask(shape, rate: float, like: torch.Tensor, generator) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability `rate`, else 1 / (1 - rate)."""
    keep = 1.0 - rate
    if keep <= 0.0:  # rate 1 drops everything (Keras' torch backend does the same)
        return like.new_zeros(shape)
    u = torch.rand(shape, generator=generator, device=like.device, dtype=torch.float32)
    return (u < keep).to(like.dtype) * (1.0 / keep)


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

    def _weight_initializers(self) -> dict:
        return {"kernel": self.kernel_initializer, "recurrent_kernel": self.recurrent_initializer,
                "bias": self.bias_initializer}

    def _create_weights(self, device) -> None:
        dtype = self._factory_dtype or torch.get_default_dtype()
        inits = self._weight_initializers()
        for name, shape in self._expected_shapes():
            value = _initializers.initialize(inits[name], shape, dtype, device)
            setattr(self, name, nn.Parameter(value))

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Re-draws the weights from their initializers (built layers only)."""
        if self.built:
            inits = self._weight_initializers()
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
        names = [name for name, _ in self._expected_shapes()]
        _copy_into(self.weights, weights, f"{type(self).__name__}.set_weights", names)

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
