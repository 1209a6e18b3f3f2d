"""Dropout and recurrent dropout of the layers, Keras >= 3.8 semantics: masks drawn once per
call, reused at every step, inverted scaling, training only, 1 shared input mask without
recurrent dropout and 3 + 3 per-gate masks with it, the carried state never dropped, and
reproducibility with `seed`."""
import math

import numpy as np
import pytest
import torch

from gru_cuda import functional
from gru_cuda.layers import GRU, RNN, Bidirectional, GRUCell


@pytest.fixture
def masks_seen(monkeypatch):
    """The dropout masks every layer call hands to gru_cuda.functional.gru."""
    seen = []
    real = functional.gru

    def spy(*args, **kwargs):
        seen.append((kwargs.get("input_dropout_mask"), kwargs.get("recurrent_dropout_mask")))
        return real(*args, **kwargs)
    monkeypatch.setattr(functional, "gru", spy)
    return seen


def check_mask_values(mask, rate):
    scale = 1.0 / (1.0 - rate)
    values = torch.unique(mask.detach()).double()
    assert all(v == 0 or abs(v - scale) < 1e-6 * scale for v in values.tolist()), values
    keep = (mask != 0).double().mean().item()
    n = mask.numel()
    sigma = math.sqrt(rate * (1 - rate) / n)
    assert abs(keep - (1 - rate)) < 6 * sigma, (keep, 1 - rate)


@pytest.mark.parametrize("dropout,recurrent_dropout", [(0.3, 0.0), (0.4, 0.25), (0.0, 0.5)])
def test_mask_shapes_values_and_statistics(masks_seen, dropout, recurrent_dropout):
    B, F, U = 400, 7, 9
    layer = GRU(U, dropout=dropout, recurrent_dropout=recurrent_dropout)
    layer(torch.rand(B, 3, F), training=True)
    in_mask, rec_mask = masks_seen[-1]
    if dropout == 0:
        assert in_mask is None
    elif recurrent_dropout == 0:
        assert in_mask.shape == (B, F)  # one mask shared by the three gates
        check_mask_values(in_mask, dropout)
    else:
        assert in_mask.shape == (3, B, F)  # three independent per-gate masks
        check_mask_values(in_mask, dropout)
        assert not torch.equal(in_mask[0], in_mask[1]) and not torch.equal(in_mask[1], in_mask[2])
    if recurrent_dropout == 0:
        assert rec_mask is None
    else:
        assert rec_mask.shape == (3, B, U)
        check_mask_values(rec_mask, recurrent_dropout)
        assert not torch.equal(rec_mask[0], rec_mask[1])


def test_no_masks_in_inference(masks_seen):
    layer = GRU(4, dropout=0.5, recurrent_dropout=0.5)
    x = torch.rand(3, 5, 2)
    layer(x, training=False)
    layer.eval()
    layer(x)
    assert masks_seen == [(None, None), (None, None)]
    layer.train()
    layer(x)
    assert masks_seen[-1][0] is not None and masks_seen[-1][1] is not None


def _linear_probe_layer(U, **kwargs):
    """reset_after GRU with linear activations where z = 0, r = 1: h_t = (x_t * m_h) @ I +
    ((h_{t-1} * q_h) @ U_h): the outputs expose the masks."""
    layer = GRU(U, activation="linear", recurrent_activation="linear", return_sequences=True,
                input_size=U, **kwargs)
    kernel = np.zeros((U, 3 * U), np.float32)
    kernel[:, 2 * U:] = np.eye(U)
    bias = np.zeros((2, 3 * U), np.float32)
    bias[0, U:2 * U] = 1.0  # r = 1
    return layer, kernel, bias


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.3])
def test_same_input_mask_at_every_step(recurrent_dropout):
    U, rate = 6, 0.5
    layer, kernel, bias = _linear_probe_layer(U, dropout=rate,
                                              recurrent_dropout=recurrent_dropout)
    layer.set_weights([kernel, np.zeros((U, 3 * U), np.float32), bias])  # no recurrence
    out = layer(torch.ones(50, 8, U), training=True)  # out[:, t] = the h-gate input mask
    for t in range(1, 8):
        assert torch.equal(out[:, t], out[:, 0])
    check_mask_values(out[:, 0], rate)


def test_same_recurrent_mask_at_every_step():
    U, rate = 5, 0.4
    layer, kernel, bias = _linear_probe_layer(U, recurrent_dropout=rate)
    recurrent = np.zeros((U, 3 * U), np.float32)
    recurrent[:, 2 * U:] = np.eye(U)
    layer.set_weights([kernel, recurrent, bias])
    # x = 0, h0 = 1: h_t = h_{t-1} * q_h, so h_t = q_h ** (t + 1) when q_h is the same mask.
    out = layer(torch.zeros(60, 4, U), initial_state=torch.ones(60, U), training=True)
    q = out[:, 0]
    check_mask_values(q, rate)
    for t in range(4):
        torch.testing.assert_close(out[:, t], q ** (t + 1))


@pytest.mark.parametrize("reset_after", [True, False])
def test_carried_state_is_never_dropped(reset_after):
    # z = 1 (linear recurrent activation, input bias 1): h_t = h_{t-1} whatever the dropout.
    U, F = 4, 3
    layer = GRU(U, recurrent_activation="linear", return_sequences=True, dropout=0.5,
                recurrent_dropout=0.9, reset_after=reset_after, input_size=F)
    rng = np.random.default_rng(0)
    kernel = rng.standard_normal((F, 3 * U)).astype(np.float32)
    kernel[:, :U] = 0
    recurrent = rng.standard_normal((U, 3 * U)).astype(np.float32)
    recurrent[:, :U] = 0
    bias = np.zeros((2, 3 * U) if reset_after else (3 * U,), np.float32)
    (bias[0] if reset_after else bias)[:U] = 1.0
    layer.set_weights([kernel, recurrent, bias])
    h0 = torch.rand(8, U) + 0.5
    out = layer(torch.rand(8, 6, F), initial_state=h0, training=True)
    for t in range(6):
        torch.testing.assert_close(out[:, t], h0)


def test_reproducible_with_seed():
    x = torch.rand(4, 6, 3)

    def run(seed):
        layer = GRU(5, dropout=0.3, recurrent_dropout=0.3, seed=seed, input_size=3,
                    kernel_initializer="ones", recurrent_initializer="identity")
        return [layer(x, training=True) for _ in range(3)]
    a, b, c = run(7), run(7), run(8)
    for u, v in zip(a, b):
        assert torch.equal(u, v)  # a fresh layer with the same seed repeats the sequence
    assert not torch.equal(a[0], a[1]) and not torch.equal(a[1], a[2])  # calls differ
    assert not torch.equal(a[0], c[0])


def test_unseeded_masks_follow_the_global_generator():
    layer = GRU(5, dropout=0.5, input_size=3)
    x = torch.rand(4, 6, 3)
    torch.manual_seed(123)
    a = layer(x, training=True)
    torch.manual_seed(123)
    b = layer(x, training=True)
    assert torch.equal(a, b)


def test_inference_equals_no_dropout():
    x = torch.rand(4, 6, 3)
    plain = GRU(5, input_size=3)
    dropped = GRU(5, dropout=0.6, recurrent_dropout=0.4, input_size=3)
    dropped.set_weights(plain.get_weights())
    assert torch.equal(dropped(x, training=False), plain(x))
    assert torch.equal(dropped.eval()(x), plain(x))
    assert not torch.equal(dropped(x, training=True), plain(x))  # explicit training wins


def test_rate_one_drops_every_input():
    x = torch.rand(4, 6, 3)
    layer = GRU(5, dropout=1.0, input_size=3, bias_initializer="ones")
    torch.testing.assert_close(layer(x, training=True), layer(torch.zeros_like(x), training=False))


def test_rnn_over_cell_draws_like_gru_and_resets_cell_masks():
    x = torch.rand(4, 6, 3)
    gru = GRU(5, dropout=0.3, recurrent_dropout=0.2, seed=3, input_size=3)
    cell = GRUCell(5, dropout=0.3, recurrent_dropout=0.2, seed=3, input_size=3)
    cell.set_weights(gru.get_weights())
    rnn = RNN(cell)
    for _ in range(2):
        assert torch.equal(gru(x, training=True), rnn(x, training=True))
        assert cell._dropout_mask is None and cell._recurrent_dropout_mask is None


def test_cell_caches_masks_until_reset():
    cell = GRUCell(4, dropout=0.5, recurrent_dropout=0.5, seed=0, input_size=3)
    x, h = torch.rand(16, 3), torch.rand(16, 4)
    a, _ = cell(x, h, training=True)
    b, _ = cell(x, h, training=True)
    assert torch.equal(a, b)  # same masks for every step of a manual loop
    cell.reset_dropout_mask()
    cell.reset_recurrent_dropout_mask()
    c, _ = cell(x, h, training=True)
    assert not torch.equal(a, c)
    assert not torch.equal(cell(x, h, training=False)[0], c)


def test_bidirectional_dropout_runs_in_training_only():
    layer = Bidirectional(GRU(3, dropout=0.5, recurrent_dropout=0.5, input_size=2))
    x = torch.rand(3, 4, 2)
    layer.eval()
    assert torch.equal(layer(x), layer(x))
    layer.train()
    assert not torch.equal(layer(x), layer(x))


def test_gradients_with_dropout():
    layer = GRU(4, dropout=0.3, recurrent_dropout=0.3, input_size=3, return_sequences=True)
    x = torch.rand(2, 5, 3, requires_grad=True)
    layer(x, training=True).sum().backward()
    assert all(torch.isfinite(p.grad).all() for p in layer.parameters())
    assert x.grad is not None
