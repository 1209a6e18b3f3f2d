"""Keras' own test numbers (keras/src/layers/rnn/{gru,bidirectional,rnn}_test.py, Keras 3.15.1)
reproduced by the gru_cuda layers. They need no Keras install: the numbers are hard-coded.
"""
import numpy as np
import pytest
import torch
from torch import nn

from gru_cuda import initializers as I
from gru_cuda.layers import GRU, RNN, Bidirectional, GRUCell


def consts():
    return dict(kernel_initializer=I.Constant(0.01), recurrent_initializer=I.Constant(0.02),
                bias_initializer=I.Constant(0.03))


def arange(*shape):
    return torch.arange(int(np.prod(shape)), dtype=torch.float32).reshape(shape)


def close(actual, expected, tol=1e-5):
    np.testing.assert_allclose(np.asarray(actual.detach()), np.asarray(expected, dtype=np.float32),
                               atol=tol, rtol=tol)


# ---- gru_test.py ---------------------------------------------------------------------------

CORRECTNESS = {
    "default": ({}, [[0.5217289] * 3, [0.6371659] * 3, [0.39384964] * 3]),
    "go_backwards": ({"go_backwards": True}, [[0.24406259] * 3, [0.611516] * 3, [0.3928808] * 3]),
    "unroll": ({"unroll": True}, [[0.5217289] * 3, [0.6371659] * 3, [0.39384964] * 3]),
    "reset_after_false": ({"reset_after": False},
                          [[0.51447755] * 3, [0.6426879] * 3, [0.40208298] * 3]),
    "no_bias": ({"use_bias": False}, [[0.49988455] * 3, [0.64701194] * 3, [0.4103359] * 3]),
}


@pytest.mark.parametrize("name", list(CORRECTNESS))
def test_gru_correctness(name):
    kwargs, expected = CORRECTNESS[name]
    layer = GRU(3, **consts(), **kwargs)
    close(layer(arange(3, 6, 4)), expected)


@pytest.mark.parametrize("name", list(CORRECTNESS))
def test_rnn_over_gru_cell_matches_gru_numbers(name):
    kwargs, expected = CORRECTNESS[name]
    cell_kwargs = {k: v for k, v in kwargs.items() if k in ("reset_after", "use_bias")}
    rnn_kwargs = {k: v for k, v in kwargs.items() if k not in cell_kwargs}
    layer = RNN(GRUCell(3, **consts(), **cell_kwargs), **rnn_kwargs)
    close(layer(arange(3, 6, 4)), expected)


def test_gru_statefulness():
    sequence = arange(2, 3, 4)
    layer = GRU(4, stateful=True, **consts())
    layer(sequence)
    expected = [[0.29542392] * 4, [0.5885018] * 4]
    close(layer(sequence), expected)
    layer.reset_state()
    layer(sequence)
    close(layer(sequence), expected)


@pytest.mark.parametrize("go_backwards,expected", [
    (False, [[0.23774096, 0.33508456], [0.83659905, 1.0227708]]),
    (True, [[0.13486053, 0.23261218], [0.78257304, 0.9691353]]),
])
def test_gru_pass_initial_state_and_return_state(go_backwards, expected):
    sequence = arange(2, 4, 3)
    initial_state = arange(2, 2)
    layer = GRU(2, go_backwards=go_backwards, **consts())
    close(layer(sequence, initial_state=initial_state), expected)
    layer = GRU(2, go_backwards=go_backwards, return_state=True, **consts())
    output, state = layer(sequence, initial_state=initial_state)
    close(output, expected)
    close(state, expected)


MASK = torch.tensor([[True, True, False, True], [True, False, False, True]])


def test_gru_masking():
    sequence = arange(2, 4, 3)
    close(GRU(2, unroll=True, **consts())(sequence, mask=MASK),
          [[0.19393763, 0.19393763], [0.30818558, 0.30818558]])
    out = GRU(2, return_sequences=True, **consts())(sequence, mask=MASK)
    close(out[0], [[0.03606692] * 2, [0.09497581] * 2, [0.09497581] * 2, [0.19393763] * 2])
    close(out[1], [[0.16051409] * 2, [0.16051409] * 2, [0.16051409] * 2, [0.30818558] * 2])
    out = GRU(2, return_sequences=True, zero_output_for_mask=True, **consts())(sequence, mask=MASK)
    close(out[0], [[0.03606692] * 2, [0.09497581] * 2, [0.0] * 2, [0.19393763] * 2])
    close(out[1], [[0.16051409] * 2, [0.0] * 2, [0.0] * 2, [0.30818558] * 2])
    close(GRU(2, go_backwards=True, **consts())(sequence, mask=MASK),
          [[0.11669192, 0.11669192], [0.28380975, 0.28380975]])


def test_gru_basics_shapes_and_weights():
    x = torch.rand(3, 2, 4)
    for kwargs in ({"dropout": 0.5}, {"dropout": 0.5, "recurrent_dropout": 0.5}):
        layer = GRU(3, **kwargs)
        assert layer(x, training=True).shape == (3, 3)
        assert len(layer.weights) == 3 and len(list(layer.parameters())) == 3
        assert len(list(layer.buffers())) == 0  # stateful states are not weights either
    layer = GRU(3, return_sequences=True, bias_regularizer="l1", kernel_regularizer="l2",
                recurrent_regularizer="l2")
    assert layer(x).shape == (3, 2, 3)
    assert len(layer.losses) == 3


def test_parameter_count():
    # 3u(D+u) + 6u with reset_after, 3u(D+u) + 3u without (D=4, u=5: 165 vs 150).
    assert GRU(5, input_size=4).count_params() == 165
    assert GRU(5, input_size=4, reset_after=False).count_params() == 150


# ---- bidirectional_test.py -----------------------------------------------------------------

def test_bidirectional_correctness_sum():
    layer = Bidirectional(GRU(2, return_sequences=True, **consts()), merge_mode="sum")
    close(layer(arange(2, 3, 4)),
          [[[0.20937867] * 2, [0.34462988] * 2, [0.40290534] * 2],
           [[0.59829646] * 2, [0.6734641] * 2, [0.6479671] * 2]])


def test_bidirectional_masking_concat():
    layer = Bidirectional(GRU(2, **consts()))
    close(layer(arange(2, 4, 3), mask=MASK),
          [[0.19393763, 0.19393763, 0.11669192, 0.11669192],
           [0.30818558, 0.30818558, 0.28380975, 0.28380975]])


# ---- rnn_test.py: the generic cell loop ------------------------------------------------------

class OneStateRNNCell(nn.Module):
    """Keras' test cell: h_t = x_t K + h_{t-1} R, weights initialised to ones."""

    def __init__(self, units):
        super().__init__()
        self.units, self.state_size, self.output_size = units, units, units
        self.kernel = None

    @property
    def built(self):
        return self.kernel is not None

    def build(self, input_shape):
        self.kernel = nn.Parameter(torch.ones(input_shape[-1], self.units))
        self.recurrent_kernel = nn.Parameter(torch.ones(self.units, self.units))

    def forward(self, inputs, states):
        h = inputs @ self.kernel + states[0] @ self.recurrent_kernel
        return h, [h]


class TwoStatesRNNCell(OneStateRNNCell):
    """Two such recurrences, both fed from states[0] (Keras' quirk); output = their sum."""

    def __init__(self, units):
        super().__init__(units)
        self.state_size = [units, units]

    def build(self, input_shape):
        super().build(input_shape)
        self.recurrent_kernel_2 = nn.Parameter(torch.ones(self.units, self.units))

    def forward(self, inputs, states):
        h1 = inputs @ self.kernel + states[0] @ self.recurrent_kernel
        h2 = inputs @ self.kernel + states[0] @ self.recurrent_kernel_2
        return h1 + h2, [h1, h2]


def test_generic_cell_forward_and_return_state():
    x = torch.ones(1, 2, 3)
    close(RNN(OneStateRNNCell(2))(x), [[9, 9]])
    close(RNN(OneStateRNNCell(2), return_sequences=True)(x), [[[3, 3], [9, 9]]])
    out, state = RNN(OneStateRNNCell(2), return_state=True)(x)
    close(out, [[9, 9]])
    close(state, [[9, 9]])
    close(RNN(TwoStatesRNNCell(2))(x), [[18, 18]])
    close(RNN(TwoStatesRNNCell(2), return_sequences=True)(x), [[[6, 6], [18, 18]]])
    out, s1, s2 = RNN(TwoStatesRNNCell(2), return_state=True)(x)
    close(out, [[18, 18]])
    close(s1, [[9, 9]])
    close(s2, [[9, 9]])


def test_generic_cell_initial_state_and_statefulness():
    x = torch.ones(2, 3, 2)
    close(RNN(OneStateRNNCell(2))(x, initial_state=torch.ones(2, 2)), [[22, 22], [22, 22]])
    out, s1, s2 = RNN(TwoStatesRNNCell(2), return_state=True)(
        x, initial_state=[torch.ones(2, 2), torch.ones(2, 2)])
    close(out, [[44, 44], [44, 44]])
    close(s1, [[22, 22], [22, 22]])
    close(s2, [[22, 22], [22, 22]])

    x = torch.ones(1, 2, 3)
    layer = RNN(OneStateRNNCell(2), stateful=True)
    layer(x)
    close(layer(x), [[45, 45]])
    layer = RNN(TwoStatesRNNCell(2), stateful=True, return_state=True)
    layer(x)
    out, s1, s2 = layer(x)
    close(out, [[90, 90]])
    close(s1, [[45, 45]])
    close(s2, [[45, 45]])


def test_generic_cell_go_backwards():
    x = arange(2, 3, 4)
    layer = RNN(OneStateRNNCell(2), go_backwards=True)
    layer(x)
    close(layer(x), [[202, 202], [538, 538]])
    layer = RNN(OneStateRNNCell(2), stateful=True, return_state=True)
    layer(x)
    out, state = layer(x)
    close(out, [[954, 954], [3978, 3978]])
    close(state, [[954, 954], [3978, 3978]])


def test_generic_cell_masking():
    x = arange(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True, True, False, False]])
    for unroll in (False, True):
        close(RNN(OneStateRNNCell(2), unroll=unroll)(x, mask=mask), [[57, 57], [126, 126]])
    close(RNN(OneStateRNNCell(2), return_sequences=True)(x, mask=mask),
          [[[3, 3], [18, 18], [57, 57], [57, 57]], [[39, 39], [126, 126], [126, 126], [126, 126]]])


def test_generic_cell_stateful_batch_mismatch():
    layer = RNN(OneStateRNNCell(2), stateful=True)
    layer(torch.ones(4, 5, 3))
    with pytest.raises(ValueError, match="batch size"):
        layer(torch.ones(1, 5, 3))
