"""Regularizers (weight and activity, `layer.losses`) and constraints (`apply_constraints`,
`constraints.attach`), against their Keras formulas and, where installed, Keras itself."""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from gru_cuda import constraints as C  # noqa: E402
from gru_cuda import regularizers as R  # noqa: E402
from gru_cuda.keras_api import layer_gru  # noqa: E402
from gru_cuda.layers import GRU, RNN, Bidirectional, GRUCell  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # Keras' NumPy 2 noise

W = torch.tensor([[1.0, -2.0, 0.5], [3.0, 0.0, -0.25]])


def keras_or_skip():
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("needs KERAS_BACKEND=torch")
    return keras


# ---- regularizers ----------------------------------------------------------------------------

def test_regularizer_formulas_and_string_defaults():
    l1 = W.abs().sum().item()
    l2 = W.square().sum().item()
    assert R.get("l1")(W).item() == pytest.approx(0.01 * l1)
    assert R.get("l2")(W).item() == pytest.approx(0.01 * l2)
    assert R.get("l1_l2")(W).item() == pytest.approx(0.01 * l1 + 0.01 * l2)
    assert R.L1L2(l1=0.5)(W).item() == pytest.approx(0.5 * l1)
    assert R.L1L2()(W).item() == 0.0
    assert R.l1_l2(0.1, 0.2)(W).item() == pytest.approx(0.1 * l1 + 0.2 * l2)
    assert R.get({"class_name": "L2", "config": {"l2": 0.3}})(W).item() == pytest.approx(0.3 * l2)
    fn = lambda w: w.sum()  # noqa: E731
    assert R.get(fn) is fn
    with pytest.raises(ValueError, match="kernel_regularizer"):
        R.get("l3", "kernel_regularizer")
    with pytest.raises(ValueError, match="l1"):
        R.L1(-1.0)


def test_regularizers_match_keras():
    keras = keras_or_skip()
    w = np.random.default_rng(0).standard_normal((6, 9)).astype(np.float32)
    t = torch.from_numpy(w)
    pairs = [(R.L1(0.02), keras.regularizers.L1(0.02)), (R.L2(0.03), keras.regularizers.L2(0.03)),
             (R.L1L2(0.01, 0.04), keras.regularizers.L1L2(0.01, 0.04)),
             (R.OrthogonalRegularizer(0.1, "rows"),
              keras.regularizers.OrthogonalRegularizer(0.1, "rows")),
             (R.OrthogonalRegularizer(0.1, "columns"),
              keras.regularizers.OrthogonalRegularizer(0.1, "columns"))]
    for ours, theirs in pairs:
        expected = float(keras.ops.convert_to_numpy(theirs(keras.ops.convert_to_tensor(w))))
        assert ours(t).item() == pytest.approx(expected, rel=1e-5), ours


def test_layer_losses_weight_penalties_recomputed_on_read():
    layer = GRU(3, input_size=2, kernel_regularizer="l2", recurrent_regularizer="l1",
                bias_regularizer="l1_l2", bias_initializer="ones")
    losses = layer.losses
    assert len(losses) == 3
    assert losses[0].item() == pytest.approx(0.01 * layer.kernel.square().sum().item())
    assert losses[1].item() == pytest.approx(0.01 * layer.recurrent_kernel.abs().sum().item())
    assert losses[2].item() == pytest.approx(0.01 * 18 + 0.01 * 18)  # all 2 x 9 entries of (2, 3u)
    with torch.no_grad():
        layer.kernel.mul_(2)
    assert layer.losses[0].item() == pytest.approx(4 * losses[0].item(), rel=1e-6)
    layer.losses[0].backward()  # differentiable w.r.t. the weights
    torch.testing.assert_close(layer.kernel.grad, 0.02 * layer.kernel.detach())
    assert GRU(3, input_size=2).losses == []


def test_activity_regularizer_every_returned_tensor_divided_by_batch():
    B = 4
    layer = GRU(3, input_size=2, activity_regularizer="l2", return_state=True,
                return_sequences=True, kernel_regularizer="l1")
    assert len(layer.losses) == 1  # before any call: only the weight penalty
    out, state = layer(torch.rand(B, 5, 2))
    losses = layer.losses
    assert len(losses) == 3  # activity (output, state) first, then weights: Keras' order
    assert losses[0].item() == pytest.approx(0.01 * out.square().sum().item() / B, rel=1e-6)
    assert losses[1].item() == pytest.approx(0.01 * state.square().sum().item() / B, rel=1e-6)
    out2, _ = layer(torch.rand(B, 5, 2))  # the next call replaces the activity penalties
    assert len(layer.losses) == 3
    assert layer.losses[0].item() == pytest.approx(0.01 * out2.square().sum().item() / B, rel=1e-6)
    # time_major: still divided by the batch size, not by the leading (time) dimension
    tm = GRU(3, input_size=2, activity_regularizer="l1", return_sequences=True, time_major=True)
    y = tm(torch.rand(7, B, 2))
    assert tm.losses[0].item() == pytest.approx(0.01 * y.abs().sum().item() / B, rel=1e-6)


def test_losses_of_containers():
    model = nn.Sequential()
    layer_gru(model, units=3, kernel_regularizer="l2", activity_regularizer="l1",
              return_sequences=True, input_size=2)
    layer_gru(model, units=2, recurrent_regularizer="l2", input_size=3)
    model(torch.rand(2, 4, 2))
    losses = R.collect_losses(model)
    assert len(losses) == 3
    assert losses[0].item() == pytest.approx(model[0].losses[0].item())
    rnn = RNN(GRUCell(3, kernel_regularizer="l2", bias_regularizer="l1", input_size=2))
    assert len(rnn.losses) == 2
    bidi = Bidirectional(GRU(3, kernel_regularizer="l2", input_size=2))
    assert len(bidi.losses) == 2  # forward and backward kernels


def test_regularization_trains():
    layer = GRU(3, input_size=2, kernel_regularizer=R.L2(10.0))
    opt = torch.optim.SGD(layer.parameters(), lr=0.01)
    before = layer.kernel.norm().item()
    for _ in range(5):
        opt.zero_grad()
        sum(layer.losses).backward()
        opt.step()
    assert layer.kernel.norm().item() < before


# ---- constraints -----------------------------------------------------------------------------

def test_constraint_formulas():
    eps = 1e-7
    norms = W.norm(dim=0, keepdim=True)
    torch.testing.assert_close(C.get("max_norm")(W), W * norms.clamp(0, 2) / (eps + norms))
    torch.testing.assert_close(C.MaxNorm(1.0, axis=1)(W),
                               W * W.norm(dim=1, keepdim=True).clamp(0, 1)
                               / (eps + W.norm(dim=1, keepdim=True)))
    torch.testing.assert_close(C.get("non_neg")(W), W.clamp_min(0))
    torch.testing.assert_close(C.get("unit_norm")(W), W / (eps + norms))
    torch.testing.assert_close(C.get("min_max_norm")(W), W * norms.clamp(0, 1) / (eps + norms))
    mm = C.MinMaxNorm(0.5, 1.5, rate=0.5)
    torch.testing.assert_close(mm(W),
                               W * (0.5 * norms.clamp(0.5, 1.5) + 0.5 * norms) / (eps + norms))
    fn = lambda w: w * 0  # noqa: E731
    assert C.get(fn) is fn
    assert isinstance(C.get("MaxNorm"), C.MaxNorm)
    with pytest.raises(ValueError, match="bias_constraint"):
        C.get("nonneg", "bias_constraint")


def test_constraints_match_keras():
    keras = keras_or_skip()
    w = np.random.default_rng(1).standard_normal((5, 12)).astype(np.float32)
    pairs = [(C.MaxNorm(1.5), keras.constraints.MaxNorm(1.5)),
             (C.NonNeg(), keras.constraints.NonNeg()),
             (C.UnitNorm(axis=1), keras.constraints.UnitNorm(axis=1)),
             (C.MinMaxNorm(0.5, 2.0, 0.7), keras.constraints.MinMaxNorm(0.5, 2.0, 0.7)),
             (C.get("max_norm"), keras.constraints.get("max_norm"))]
    for ours, theirs in pairs:
        expected = keras.ops.convert_to_numpy(theirs(keras.ops.convert_to_tensor(w)))
        np.testing.assert_allclose(ours(torch.from_numpy(w)).numpy(), expected, rtol=1e-6,
                                   atol=1e-7, err_msg=repr(ours))


def test_constraints_never_in_forward_and_applied_on_request():
    layer = GRU(3, input_size=2, kernel_constraint="non_neg", recurrent_constraint="unit_norm",
                bias_constraint=C.MaxNorm(0.1), bias_initializer="ones")
    assert (layer.kernel < 0).any()  # not applied at initialisation
    layer(torch.rand(2, 4, 2))
    assert (layer.kernel < 0).any()  # nor in forward
    layer.apply_constraints()
    assert (layer.kernel >= 0).all()
    torch.testing.assert_close(layer.recurrent_kernel.norm(dim=0), torch.ones(9))
    # axis 0 on the (2, 3u) bias: each column's norm over its two rows
    torch.testing.assert_close(layer.bias.norm(dim=0), torch.full((9,), 0.1))


def test_attach_applies_after_every_optimizer_step():
    model = nn.Sequential(GRU(4, input_size=3, return_sequences=True, kernel_constraint="non_neg"),
                          GRU(2, input_size=4, recurrent_constraint=C.MaxNorm(0.5)))
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    handle = C.attach(opt, model)
    for _ in range(2):
        opt.zero_grad()
        model(torch.rand(2, 5, 3)).sum().backward()
        opt.step()
        assert (model[0].kernel >= 0).all()
        assert (model[1].recurrent_kernel.norm(dim=0) <= 0.5 + 1e-6).all()
    handle.remove()
    with torch.no_grad():
        model[0].kernel.fill_(-1.0)
    opt.zero_grad()
    opt.step()
    assert (model[0].kernel == -1).all()  # detached: no longer applied
    with pytest.raises(TypeError, match="Optimizer"):
        C.attach(object(), model)


def test_constraints_in_cells_and_bidirectional():
    bidi = Bidirectional(GRU(3, input_size=2, kernel_constraint="non_neg"))
    bidi.apply_constraints()
    assert (bidi.forward_layer.kernel >= 0).all() and (bidi.backward_layer.kernel >= 0).all()
    rnn = RNN(GRUCell(3, input_size=2, kernel_constraint=lambda w: w.clamp(-0.01, 0.01)))
    C.apply_constraints(rnn)
    assert rnn.cell.kernel.abs().max() <= 0.01
    bad = GRU(3, input_size=2, kernel_constraint=lambda w: w[0])
    with pytest.raises(ValueError, match="returned shape"):
        bad.apply_constraints()
