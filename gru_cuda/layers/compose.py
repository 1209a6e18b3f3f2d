"""Composition functions mirroring the R keras API: `layer_gru`, `layer_gru_cell`, `layer_rnn`,
`bidirectional`.

`object` decides what the call returns, as `create_layer` does in R keras:

* None (R's missing/NULL): the new layer;
* an `nn.Sequential`: the layer is appended and the same Sequential is returned;
* a tensor (or array): the layer applied to it, i.e. its output.

The R pipe `inputs %>% layer_rnn(layer_gru_cell(4))` reads
`layer_rnn(inputs, layer_gru_cell(4))` here, and R's `c(out, state) %<-% rnn(inputs)` is
Python's `out, state = rnn(inputs)`.

Example (the seed's):

>>> inputs = torch.rand(32, 10, 8)
>>> layer_rnn(inputs, layer_gru_cell(4)).shape
torch.Size([32, 4])
>>> rnn = layer_rnn(cell=layer_gru_cell(4), return_sequences=True, return_state=True)
>>> whole_sequence_output, final_state = rnn(inputs)
>>> whole_sequence_output.shape, final_state.shape
(torch.Size([32, 10, 4]), torch.Size([32, 4]))
"""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from gru_cuda.layers.bidirectional import Bidirectional
from gru_cuda.layers.gru import GRU, GRUCell
from gru_cuda.layers.rnn import RNN

__all__ = ["layer_gru", "layer_gru_cell", "layer_rnn", "bidirectional"]


def _as_units(units, argname: str = "units") -> int:
    # R's as.integer on an integral value; anything else is left to the layer to reject.
    if units is None:
        raise ValueError(f"`{argname}` is required (a positive integer)")
    if isinstance(units, float) and units.is_integer():
        return int(units)
    if isinstance(units, np.ndarray) and units.size == 1:
        return _as_units(units.item(), argname)
    return units


def _compose(object, layer):
    """Returns `layer`, appends it to a Sequential, or applies it to a tensor."""
    if object is None:
        return layer
    if isinstance(object, nn.Sequential):
        object.append(layer)
        return object
    if isinstance(object, (torch.Tensor, np.ndarray)):
        return layer(object)
    raise TypeError(f"`object` must be None, an nn.Sequential or a tensor, got "
                    f"{type(object).__name__}")


def layer_gru(object=None, units=None, activation="tanh", recurrent_activation="sigmoid",
              use_bias=True, return_sequences=False, return_state=False, go_backwards=False,
              stateful=False, unroll=False, time_major=False, reset_after=True,
              kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
              bias_initializer="zeros", kernel_regularizer=None, recurrent_regularizer=None,
              bias_regularizer=None, activity_regularizer=None, kernel_constraint=None,
              recurrent_constraint=None, bias_constraint=None, dropout=0.0,
              recurrent_dropout=0.0, **kwargs):
    """Gated Recurrent Unit - Cho et al. 2014 (R keras' `layer_gru`).

    Creates a `gru_cuda.GRU` and composes it with `object`.

    Args:
        object: what to compose the new layer with: None returns the layer; an
            `nn.Sequential` gets the layer appended and is returned; a tensor returns
            `layer(object)`.
        units: positive integer, dimensionality of the output space (an integral float is
            accepted, as R's `as.integer`).
        activation, recurrent_activation, use_bias, return_sequences, return_state,
        go_backwards, stateful, unroll, time_major, reset_after, kernel_initializer,
        recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
        bias_regularizer, activity_regularizer, kernel_constraint, recurrent_constraint,
        bias_constraint, dropout, recurrent_dropout: as in `gru_cuda.GRU`. `reset_after`
            defaults to True ("after", cuDNN-compatible), the Keras 2.x/3 default.
        **kwargs: other `GRU` arguments: `zero_output_for_mask`, `seed`, `input_size`,
            `device`, `dtype`.

    Returns:
        The layer, the Sequential, or the output tensor(s), by `object`.

    Example:

    >>> model = layer_gru(nn.Sequential(), units=16, input_size=8)
    >>> out = layer_gru(torch.rand(4, 5, 8), units=16)      # (4, 16)
    """
    layer = GRU(_as_units(units), activation=activation,
                recurrent_activation=recurrent_activation, use_bias=use_bias,
                return_sequences=return_sequences, return_state=return_state,
                go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                time_major=time_major, reset_after=reset_after,
                kernel_initializer=kernel_initializer,
                recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
                kernel_regularizer=kernel_regularizer,
                recurrent_regularizer=recurrent_regularizer, bias_regularizer=bias_regularizer,
                activity_regularizer=activity_regularizer, kernel_constraint=kernel_constraint,
                recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                dropout=dropout, recurrent_dropout=recurrent_dropout, **kwargs)
    return _compose(object, layer)


def layer_gru_cell(units, activation="tanh", recurrent_activation="sigmoid", use_bias=True,
                   kernel_initializer="glorot_uniform", recurrent_initializer="orthogonal",
                   bias_initializer="zeros", kernel_regularizer=None,
                   recurrent_regularizer=None, bias_regularizer=None, kernel_constraint=None,
                   recurrent_constraint=None, bias_constraint=None, dropout=0.0,
                   recurrent_dropout=0.0, reset_after=True, **kwargs):
    """Cell class for the GRU layer (R keras' `layer_gru_cell`).

    Processes one timestep; use it with `layer_rnn(cell = ...)`, which runs the fused
    sequence kernel with the cell's weights.

    Args:
        units: positive integer, dimensionality of the output space.
        activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
        bias_regularizer, kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, reset_after: as in `gru_cuda.GRUCell`.
        **kwargs: other `GRUCell` arguments: `seed`, `input_size`, `device`, `dtype`.

    Returns:
        A `gru_cuda.GRUCell`.

    Example:

    >>> rnn = layer_rnn(cell=layer_gru_cell(4), return_sequences=True, return_state=True)
    """
    return GRUCell(_as_units(units), activation=activation,
                   recurrent_activation=recurrent_activation, use_bias=use_bias,
                   kernel_initializer=kernel_initializer,
                   recurrent_initializer=recurrent_initializer,
                   bias_initializer=bias_initializer, kernel_regularizer=kernel_regularizer,
                   recurrent_regularizer=recurrent_regularizer,
                   bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
                   recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
                   dropout=dropout, recurrent_dropout=recurrent_dropout,
                   reset_after=reset_after, **kwargs)


def layer_rnn(object=None, cell=None, return_sequences=False, return_state=False,
              go_backwards=False, stateful=False, unroll=False, time_major=False,
              zero_output_for_mask=False, **kwargs):
    """Base class for recurrent layers (R keras' `layer_rnn`).

    Creates a `gru_cuda.RNN` over `cell` and composes it with `object`. Over a GRU cell the
    whole sequence runs in one fused call; other cells are looped in Python.

    Args:
        object: None (returns the layer), an `nn.Sequential` (appended to), or a tensor
            (returns the output).
        cell: the cell, e.g. `layer_gru_cell(4)`; required.
        return_sequences, return_state, go_backwards, stateful, unroll, time_major,
        zero_output_for_mask: as in `gru_cuda.RNN`.
        **kwargs: other `RNN` arguments (`activity_regularizer`).

    Returns:
        The layer, the Sequential, or the output tensor(s), by `object`.

    Example:

    >>> inputs = torch.rand(32, 10, 8)
    >>> output = layer_rnn(inputs, layer_gru_cell(4))        # (32, 4)
    """
    if cell is None:
        raise ValueError("`cell` is required, e.g. layer_rnn(cell = layer_gru_cell(4))")
    layer = RNN(cell, return_sequences=return_sequences, return_state=return_state,
                go_backwards=go_backwards, stateful=stateful, unroll=unroll,
                time_major=time_major, zero_output_for_mask=zero_output_for_mask, **kwargs)
    return _compose(object, layer)


def bidirectional(object=None, layer=None, merge_mode="concat", weights=None,
                  backward_layer=None):
    """Bidirectional wrapper for RNNs (R keras' `bidirectional`).

    Args:
        object: None (returns the wrapper), an `nn.Sequential` (appended to), or a tensor
            (returns the output).
        layer: a `GRU` or `RNN` instance, e.g. `layer_gru(units = 8)`; required.
        merge_mode, weights, backward_layer: as in `gru_cuda.Bidirectional`.

    Returns:
        The wrapper, the Sequential, or the output tensor(s), by `object`.
    """
    if layer is None:
        raise ValueError("`layer` is required, e.g. bidirectional(layer = layer_gru(units = 8))")
    wrapper = Bidirectional(layer, merge_mode=merge_mode, weights=weights,
                            backward_layer=backward_layer)
    return _compose(object, wrapper)
