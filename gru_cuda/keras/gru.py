"""`GRU` and `RNN`: Keras 3 recurrent layers whose GRU recurrence is one fused gru_cuda call."""
from __future__ import annotations

import keras

from gru_cuda.keras import _fused


@keras.saving.register_keras_serializable(package="gru_cuda")
class GRU(keras.layers.GRU):
    """Gated Recurrent Unit - Cho et al. 2014, on gru_cuda's fused kernels.

    A drop-in `keras.layers.GRU` for Keras 3 on the torch backend: the same arguments and
    defaults, the same weights (`kernel`, `recurrent_kernel`, `bias`: same shapes and order,
    so `set_weights(keras_gru.get_weights())` is exact), config and call contract (`mask`,
    `training`, `initial_state`, `return_sequences`, `return_state`, `go_backwards`,
    `stateful`). The whole sequence runs in one call of gru_cuda's fused op (CPU, or CUDA for
    CUDA tensors) instead of Keras's per-step loop, in every configuration: both `reset_after`
    conventions, any activation, dropout and recurrent dropout (the masks Keras would draw),
    masks with holes, on the CPU. Gradients flow through torch autograd into the Keras
    variables, so `model.fit` trains it.

    Importing `gru_cuda.keras` registers the class for `.keras` files (as `gru_cuda>GRU`).

    For example:

    >>> inputs = np.random.random((32, 10, 8))
    >>> gru = gru_cuda.keras.GRU(4)
    >>> output = gru(inputs)
    >>> output.shape
    (32, 4)
    >>> gru = gru_cuda.keras.GRU(4, return_sequences=True, return_state=True)
    >>> whole_sequence_output, final_state = gru(inputs)
    >>> whole_sequence_output.shape
    (32, 10, 4)
    >>> final_state.shape
    (32, 4)

    Args:
        units, activation, recurrent_activation, use_bias, kernel_initializer,
        recurrent_initializer, bias_initializer, kernel_regularizer, recurrent_regularizer,
        bias_regularizer, kernel_constraint, recurrent_constraint, bias_constraint, dropout,
        recurrent_dropout, seed, reset_after: the cell's arguments, as in
            `gru_cuda.keras.GRUCell` (and Keras' own GRU; same defaults).
        activity_regularizer: penalty on the layer's output, added to the model's losses;
            default None.
        return_sequences: return every step's output `(batch, timesteps, units)` instead of
            the last one; default False.
        return_state: also return the final state; default False.
        go_backwards: read the sequence from its end; the output sequence is in that
            (reversed) order, as in Keras; default False.
        stateful: keep each batch row's final state as the next call's initial state
            (needs a fixed batch size); default False.
        unroll: accepted for compatibility; the fused kernels never unroll, the results are
            the same.
        use_cudnn: "auto", True or False, checked as in Keras; the fused kernels run instead
            of cuDNN whatever the value, so the attribute reads False (which also keeps
            `Bidirectional` from sending both directions to cuDNN).

    Call arguments:
        inputs: `(batch, timesteps, features)`.
        mask: optional bool `(batch, timesteps)`, True where a step counts; a masked step
            keeps the state and repeats the previous output (zeros with
            `zero_output_for_mask=True`). Holes anywhere are handled exactly.
        training: whether dropout and recurrent dropout apply.
        initial_state: optional list with the initial state `(batch, units)`; zeros
            otherwise (or the carried state when `stateful`).
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 activity_regularizer=None, kernel_constraint=None, recurrent_constraint=None,
                 bias_constraint=None, dropout=0.0, recurrent_dropout=0.0, seed=None,
                 return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, reset_after=True, use_cudnn="auto", **kwargs):
        _fused.require_torch_backend("gru_cuda.keras.GRU")
        # every named argument goes to Keras unchanged (the signature is Keras', spelled out
        # for help() and introspection)
        super().__init__(**_fused.named_args(locals()), **kwargs)
        self.use_cudnn = False

    def inner_loop(self, sequences, initial_state, mask, training=False):
        return _fused.run_sequence(
            self.cell, sequences, _fused.first(initial_state), _fused.first(mask), training,
            go_backwards=self.go_backwards, zero_output_for_mask=self.zero_output_for_mask)


@keras.saving.register_keras_serializable(package="gru_cuda")
class RNN(keras.layers.RNN):
    """Base class for recurrent layers, running a GRU cell's sequence in one fused call.

    A drop-in `keras.layers.RNN` for Keras 3 on the torch backend. Over a GRU cell
    (`gru_cuda.keras.GRUCell` or `keras.layers.GRUCell`) the whole sequence runs in one call
    of gru_cuda's fused op, with the cell's weights, settings and dropout masks; any other
    cell (including stacked cells) runs through Keras's own per-step loop.

    Args:
        cell: the cell (or a list of cells, stacked), as for `keras.layers.RNN`.
        return_sequences, return_state, go_backwards, stateful: as in `gru_cuda.keras.GRU`.
        unroll: over a GRU cell accepted and ignored (the fused kernels never unroll); other
            cells unroll as in Keras.
        zero_output_for_mask: zeros, not the previous output, at masked steps; default False.

    Call arguments:
        sequences: `(batch, timesteps, features)`.
        initial_state: optional list of the cell's initial states.
        mask: optional bool `(batch, timesteps)`, True where a step counts.
        training: whether the cell's dropout applies.

    Example:

    >>> inputs = np.random.random((32, 10, 8))
    >>> rnn = gru_cuda.keras.RNN(gru_cuda.keras.GRUCell(4), return_sequences=True)
    >>> rnn(inputs).shape
    (32, 10, 4)
    """

    def __init__(self, cell, return_sequences=False, return_state=False, go_backwards=False,
                 stateful=False, unroll=False, zero_output_for_mask=False, **kwargs):
        _fused.require_torch_backend("gru_cuda.keras.RNN")
        super().__init__(
            cell, return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll,
            zero_output_for_mask=zero_output_for_mask, **kwargs)

    def inner_loop(self, sequences, initial_state, mask, training=False):
        if not isinstance(self.cell, keras.layers.GRUCell):
            return super().inner_loop(sequences, initial_state, mask, training=training)
        return _fused.run_sequence(
            self.cell, sequences, _fused.first(initial_state), _fused.first(mask), training,
            go_backwards=self.go_backwards, zero_output_for_mask=self.zero_output_for_mask)
