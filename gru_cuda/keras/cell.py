"""`GRUCell`: Keras 3's GRU cell with its step computed by gru_cuda's fused op."""
from __future__ import annotations

import keras

from gru_cuda.keras import _fused


@keras.saving.register_keras_serializable(package="gru_cuda")
class GRUCell(keras.layers.GRUCell):
    """Cell class for the GRU layer, on gru_cuda's fused kernels.

    A drop-in `keras.layers.GRUCell` for Keras 3 on the torch backend: the same arguments,
    defaults, weights (`kernel`, `recurrent_kernel`, `bias`), config and dropout masks. Each
    step runs gru_cuda's fused op (forward and backward), so `keras.layers.RNN(GRUCell(...))`
    works; `gru_cuda.keras.RNN(GRUCell(...))` runs the whole sequence in one fused call
    instead of a per-step loop (as `gru_cuda.keras.GRU` does).

    Args:
        units: Positive integer, dimensionality of the output space.
        activation: Activation function to use. Default: hyperbolic tangent
            (`tanh`). If you pass None, no activation is applied
            (ie. "linear" activation: `a(x) = x`). The activations gru_cuda fuses
            (tanh, sigmoid, hard_sigmoid, relu, linear, softsign, elu, selu, softplus,
            silu/swish, gelu, exponential) run in the kernels; any other Keras activation
            runs through a per-step PyTorch loop.
        recurrent_activation: Activation function to use for the recurrent step.
            Default: sigmoid (`sigmoid`). If you pass `None`, no activation is
            applied (ie. "linear" activation: `a(x) = x`).
        use_bias: Boolean, (default `True`), whether the layer
            should use a bias vector.
        kernel_initializer: Initializer for the `kernel` weights matrix,
            used for the linear transformation of the inputs. Default:
            `"glorot_uniform"`.
        recurrent_initializer: Initializer for the `recurrent_kernel`
            weights matrix, used for the linear transformation
            of the recurrent state. Default: `"orthogonal"`.
        bias_initializer: Initializer for the bias vector. Default: `"zeros"`.
        kernel_regularizer: Regularizer function applied to the `kernel` weights
            matrix. Default: `None`.
        recurrent_regularizer: Regularizer function applied to the
            `recurrent_kernel` weights matrix. Default: `None`.
        bias_regularizer: Regularizer function applied to the bias vector.
            Default: `None`.
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
        reset_after: GRU convention (whether to apply reset gate after or
            before matrix multiplication). False = "before",
            True = "after" (default and cuDNN compatible).
        seed: Random seed for dropout.

    Call arguments:
        inputs: A 2D tensor, with shape `(batch, features)`.
        states: A 2D tensor with shape `(batch, units)`, which is the state
            from the previous time step.
        training: Python boolean indicating whether the layer should behave in
            training mode or in inference mode. Only relevant when `dropout` or
            `recurrent_dropout` is used.

    Example:

    >>> inputs = np.random.random((32, 10, 8))
    >>> rnn = gru_cuda.keras.RNN(gru_cuda.keras.GRUCell(4))
    >>> output = rnn(inputs)
    >>> output.shape
    (32, 4)
    """

    def __init__(self, units, activation="tanh", recurrent_activation="sigmoid",
                 use_bias=True, kernel_initializer="glorot_uniform",
                 recurrent_initializer="orthogonal", bias_initializer="zeros",
                 kernel_regularizer=None, recurrent_regularizer=None, bias_regularizer=None,
                 kernel_constraint=None, recurrent_constraint=None, bias_constraint=None,
                 dropout=0.0, recurrent_dropout=0.0, reset_after=True, seed=None, **kwargs):
        _fused.require_torch_backend("gru_cuda.keras.GRUCell")
        super().__init__(
            units, activation=activation, recurrent_activation=recurrent_activation,
            use_bias=use_bias, kernel_initializer=kernel_initializer,
            recurrent_initializer=recurrent_initializer, bias_initializer=bias_initializer,
            kernel_regularizer=kernel_regularizer, recurrent_regularizer=recurrent_regularizer,
            bias_regularizer=bias_regularizer, kernel_constraint=kernel_constraint,
            recurrent_constraint=recurrent_constraint, bias_constraint=bias_constraint,
            dropout=dropout, recurrent_dropout=recurrent_dropout, reset_after=reset_after,
            seed=seed, **kwargs)

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_tm1 = _fused.first(states)
        # one step as a sequence of length 1: the same op, forward and backward
        _, _, (h,) = _fused.run_sequence(self, inputs[:, None, :], h_tm1, training=training)
        return h, ([h] if nested else h)
