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
        units: Positive integer, dimensionality of the output space.
        activation: Activation function to use.
            Default: hyperbolic tangent (`tanh`).
            If you pass `None`, no activation is applied
            (ie. "linear" activation: `a(x) = x`). The activations gru_cuda fuses
            (tanh, sigmoid, hard_sigmoid, relu, linear, softsign, elu, selu, softplus,
            silu/swish, gelu, exponential) run in the kernels; any other Keras activation
            runs through a per-step PyTorch loop.
        recurrent_activation: Activation function to use
            for the recurrent step.
            Default: sigmoid (`sigmoid`).
            If you pass `None`, no activation is applied
            (ie. "linear" activation: `a(x) = x`).
        use_bias: Boolean, (default `True`), whether the layer
            should use a bias vector.
        kernel_initializer: Initializer for the `kernel` weights matrix,
            used for the linear transformation of the inputs. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for the `recurrent_kernel`
            weights matrix, used for the linear transformation of the recurrent
            state. Default: `"orthogonal"`.
        bias_initializer: Initializer for the bias vector. Default: `"zeros"`.
        kernel_regularizer: Regularizer function applied to the `kernel` weights
            matrix. Default: `None`.
        recurrent_regularizer: Regularizer function applied to the
            `recurrent_kernel` weights matrix. Default: `None`.
        bias_regularizer: Regularizer function applied to the bias vector.
            Default: `None`.
        activity_regularizer: Regularizer function applied to the output of the
            layer (its "activation"). Default: `None`.
        kernel_constraint: Constraint function applied to the `kernel` weights
            matrix. Default: `None`.
        recurrent_constraint: Constraint function applied to the
            `recurrent_kernel` weights matrix. Default: `None`.
        bias_constraint: Constraint function applied to the bias vector.
            Default: `None`.
        dropout: Float between 0 and 1. Fraction of the units to drop for the
            linear transformation of the inputs. Default: 0.
        recurrent_dropout: Float between 0 and 1. Fraction of the units to drop
            for the linear transformation of the recurrent state. Default: 0.
        seed: Random seed for dropout.
        return_sequences: Boolean. Whether to return the last output
            in the output sequence, or the full sequence. Default: `False`.
        return_state: Boolean. Whether to return the last state in addition
            to the output. Default: `False`.
        go_backwards: Boolean (default `False`).
            If `True`, process the input sequence backwards and return the
            reversed sequence.
        stateful: Boolean (default: `False`). If `True`, the last state
            for each sample at index i in a batch will be used as initial
            state for the sample of index i in the following batch.
        unroll: Boolean (default: `False`). Accepted for compatibility; the fused
            kernels never unroll, and the results are the same.
        reset_after: GRU convention (whether to apply reset gate after or
            before matrix multiplication). `False` is `"before"`,
            `True` is `"after"` (default and cuDNN compatible).
        use_cudnn: Accepted and checked as by `keras.layers.GRU` (`"auto"`, True or False);
            the fused kernels replace cuDNN in every case, so the attribute reads False
            (which also keeps `Bidirectional` from routing both directions to cuDNN).

    Call arguments:
        inputs: A 3D tensor, with shape `(batch, timesteps, feature)`.
        mask: Binary tensor of shape `(samples, timesteps)` indicating whether
            a given timestep should be masked  (optional).
            An individual `True` entry indicates that the corresponding timestep
            should be utilized, while a `False` entry indicates that the
            corresponding timestep should be ignored. Defaults to `None`.
            Masks with holes (not only right padding) are computed exactly.
        training: Python boolean indicating whether the layer should behave in
            training mode or in inference mode. This is only relevant if
            `dropout` or `recurrent_dropout` is used  (optional).
            Defaults to `None`.
        initial_state: List of initial state tensors to be passed to the first
            call of the cell (optional, `None` causes creation
            of zero-filled initial state tensors). Defaults to `None`.
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
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, activity_regularizer=activity_regularizer,
            kernel_constraint=kernel_constraint, recurrent_constraint=recurrent_constraint,
            bias_constraint=bias_constraint, dropout=dropout,
            recurrent_dropout=recurrent_dropout, seed=seed,
            return_sequences=return_sequences, return_state=return_state,
            go_backwards=go_backwards, stateful=stateful, unroll=unroll,
            reset_after=reset_after, use_cudnn=use_cudnn, **kwargs)
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
        cell: An RNN cell instance or a list of RNN cell instances, as for
            `keras.layers.RNN`.
        return_sequences: Boolean (default `False`). Whether to return the last
            output in the output sequence, or the full sequence.
        return_state: Boolean (default `False`).
            Whether to return the last state in addition to the output.
        go_backwards: Boolean (default `False`).
            If `True`, process the input sequence backwards and return the
            reversed sequence.
        stateful: Boolean (default `False`). If True, the last state
            for each sample at index `i` in a batch will be used as initial
            state for the sample of index `i` in the following batch.
        unroll: Boolean (default `False`). Over a GRU cell, accepted and ignored (the fused
            kernels never unroll); other cells unroll as in Keras.
        zero_output_for_mask: Boolean (default `False`).
            Whether the output should use zeros for the masked timesteps.

    Call arguments:
        sequences: A 3-D tensor with shape `(batch_size, timesteps, features)`.
        initial_state: List of initial state tensors to be passed to the first
            call of the cell.
        mask: Binary tensor of shape `[batch_size, timesteps]`
            indicating whether a given timestep should be masked.
        training: Python boolean indicating whether the layer should behave in
            training mode or in inference mode.

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
