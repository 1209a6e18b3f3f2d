"""`Bidirectional`: runs a recurrent layer forwards and a copy backwards, and merges them."""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from torch import nn

from gru_cuda import conversion
from gru_cuda.layers._base import _KerasLayerMixin, _RecurrentMixin
from gru_cuda.layers.gru import GRU
from gru_cuda.layers.rnn import RNN
from gru_cuda.onnx import _bidirectional

__all__ = ["Bidirectional"]

_MERGE_MODES = ("concat", "sum", "mul", "ave", None)


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
        # Under torch.onnx.export both runs may come from one op (one bidirectional ONNX GRU
        # node); each layer then shapes its share of the result as usual. None otherwise.
        runs = _bidirectional.export_runs(self, inputs, mask, forward_state, backward_state,
                                          training) or (None, None)
        with _bidirectional.replaying(self.forward_layer, runs[0]):
            y = self.forward_layer(inputs, mask=mask, initial_state=forward_state,
                                   training=training)
        with _bidirectional.replaying(self.backward_layer, runs[1]):
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
        return conversion.bidirectional_from_torch(cls, GRU, module, merge_mode, **kwargs)

    def to_torch(self) -> nn.GRU:
        """The equivalent one-layer bidirectional `torch.nn.GRU` (a copy of the weights).

        Both layers must be `GRU`s with `reset_after=True`, tanh and sigmoid; the forward
        layer must have `go_backwards=False`.
        """
        fwd, bwd = self.forward_layer, self.backward_layer
        if not (isinstance(fwd, GRU) and isinstance(bwd, GRU)) or fwd.go_backwards:
            raise ValueError("Bidirectional.to_torch needs GRU layers, the forward one with "
                             "go_backwards=False")
        return conversion.gru_to_torch([fwd, bwd], "Bidirectional.to_torch")
