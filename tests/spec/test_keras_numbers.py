"""Keras 3's own gru_test numbers (keras/src/layers/rnn/gru_test.py upstream), reproduced with
the functional op: kernel entries 0.01, recurrent 0.02, every bias entry 0.03, float32 input."""
import numpy as np
import pytest
import torch

from gru_cuda import functional


def consts(F, H, reset_after=True, use_bias=True):
    k = torch.full((F, 3 * H), 0.01)
    u = torch.full((H, 3 * H), 0.02)
    b = None
    if use_bias:
        b = torch.full((2, 3 * H) if reset_after else (3 * H,), 0.03)
    return k, u, b


SEQ_72 = torch.arange(72, dtype=torch.float32).reshape(3, 6, 4)


@pytest.mark.parametrize("options,expected", [
    ({}, [0.5217289, 0.6371659, 0.39384964]),
    ({"go_backwards": True}, [0.24406259, 0.611516, 0.3928808]),
    ({"reset_after": False}, [0.51447755, 0.6426879, 0.40208298]),
    ({"use_bias": False}, [0.49988455, 0.64701194, 0.4103359]),
])
def test_correctness(options, expected):
    ra = options.get("reset_after", True)
    k, u, b = consts(4, 3, ra, options.get("use_bias", True))
    _, state = functional.gru(SEQ_72, k, u, b, reset_after=ra,
                              go_backwards=options.get("go_backwards", False))
    np.testing.assert_allclose(state.numpy(), np.repeat(np.array(expected)[:, None], 3, 1),
                               rtol=1e-5, atol=1e-5)


def test_statefulness_two_calls():
    seq = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    k, u, b = consts(4, 4)
    _, s1 = functional.gru(seq, k, u, b)
    out, _ = functional.gru(seq, k, u, b, initial_state=s1)
    expected = np.array([[0.29542392] * 4, [0.5885018] * 4])
    np.testing.assert_allclose(out[:, -1].numpy(), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("go_backwards,expected", [
    (False, [[0.23774096, 0.33508456], [0.83659905, 1.0227708]]),
    (True, [[0.13486053, 0.23261218], [0.78257304, 0.9691353]]),
])
def test_pass_initial_state(go_backwards, expected):
    seq = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    h0 = torch.arange(4, dtype=torch.float32).reshape(2, 2)
    k, u, b = consts(3, 2)
    out, state = functional.gru(seq, k, u, b, h0, go_backwards=go_backwards)
    np.testing.assert_allclose(state.numpy(), expected, rtol=1e-6, atol=1e-6)
    assert torch.equal(state, out[:, -1])


MASK = torch.tensor([[True, True, False, True], [True, False, False, True]])
SEQ_24 = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)


def test_masking_sequences():
    k, u, b = consts(3, 2)
    out, state = functional.gru(SEQ_24, k, u, b, mask=MASK)
    expected = np.array([
        [0.03606692, 0.09497581, 0.09497581, 0.19393763],
        [0.16051409, 0.16051409, 0.16051409, 0.30818558]])
    np.testing.assert_allclose(out.numpy(), np.repeat(expected[..., None], 2, -1),
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state.numpy(), [[0.19393763] * 2, [0.30818558] * 2],
                               rtol=1e-6, atol=1e-6)
    out_z, _ = functional.gru(SEQ_24, k, u, b, mask=MASK, zero_output_for_mask=True)
    expected_z = np.array([
        [0.03606692, 0.09497581, 0.0, 0.19393763],
        [0.16051409, 0.0, 0.0, 0.30818558]])
    np.testing.assert_allclose(out_z.numpy(), np.repeat(expected_z[..., None], 2, -1),
                               rtol=1e-6, atol=1e-6)


def test_masking_go_backwards():
    k, u, b = consts(3, 2)
    out, _ = functional.gru(SEQ_24, k, u, b, mask=MASK, go_backwards=True)
    np.testing.assert_allclose(out[:, -1].numpy(), [[0.11669192] * 2, [0.28380975] * 2],
                               rtol=1e-6, atol=1e-6)


def test_bidirectional_sum_composition():
    """Bidirectional(GRU(2, return_sequences=True), merge_mode='sum') from two functional calls."""
    seq = torch.arange(24, dtype=torch.float32).reshape(2, 3, 4)
    k, u, b = consts(4, 2)
    fwd, _ = functional.gru(seq, k, u, b)
    bwd, _ = functional.gru(seq, k, u, b, go_backwards=True)
    merged = fwd + bwd.flip(1)
    expected = np.array([[[0.20937867] * 2, [0.34462988] * 2, [0.40290534] * 2],
                         [[0.59829646] * 2, [0.6734641] * 2, [0.6479671] * 2]])
    np.testing.assert_allclose(merged.numpy(), expected, rtol=1e-5, atol=1e-5)
