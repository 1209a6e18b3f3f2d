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
        units: positive integer, the size of the state and of the output.
        activation: candidate-state activation, a Keras name, function or None (identity);
            default "tanh". Fused in the kernels: tanh, sigmoid, hard_sigmoid, relu, linear,
            softsign, elu, selu, softplus, silu/swish, gelu, exponential; any other Keras
            activation is evaluated step by step in PyTorch (correct, slower).
        recurrent_activation: gate activation for z and r, as `activation`; default
            "sigmoid".
        use_bias: whether the gates have biases (default True).
        kernel_initializer, recurrent_initializer, bias_initializer: how the input kernel
            `(features, 3 * units)`, the recurrent kernel `(units, 3 * units)` and the bias
            are first filled (Keras names or objects); defaults "glorot_uniform",
            "orthogonal", "zeros".
        kernel_regularizer, recurrent_regularizer, bias_regularizer: penalties added to the
            model's losses for each weight (Keras names or objects); default None.
        kernel_constraint, recurrent_constraint, bias_constraint: projections applied to each
            weight after every optimizer step; default None.
        dropout: rate in [0, 1] of input features dropped in training (one mask per call,
            shared over the timesteps); default 0.
        recurrent_dropout: rate in [0, 1] of state units dropped before the recurrent products
            in training (one mask per gate and call); default 0.
        reset_after: the reset gate multiplies the recurrent product (True, the default,
            cuDNN's convention, bias `(2, 3 * units)`) or the state before it (False, bias
            `(3 * units,)`).
        seed: seed of the dropout masks (the same masks as Keras' cell with this seed).

    Call arguments:
        inputs: one step, `(batch, features)`.
        states: the previous state `(batch, units)`, bare or in a one-element list.
        training: whether dropout applies.

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
        # every named argument goes to Keras unchanged (the signature is Keras', spelled out
        # for help() and introspection)
        super().__init__(**_fused.named_args(locals()), **kwargs)

    def call(self, inputs, states, training=False):
        nested = isinstance(states, (list, tuple))
        h_tm1 = _fused.first(states)
        # one step as a sequence of length 1: the same op, forward and backward
        _, _, (h,) = _fused.run_sequence(self, inputs[:, None, :], h_tm1, training=training)
        return h, ([h] if nested else h)
