"""Initializers: Keras 3 formulas (limits, standard deviations, truncation, orthogonality),
names, seeds, callables, and how the layers use them."""
import math

import numpy as np
import pytest
import torch

from gru_cuda import initializers as I
from gru_cuda.layers import GRU, GRUCell

SHAPE = (300, 600)  # 180k draws: moments are tight
FAN_IN, FAN_OUT = SHAPE


def std_ok(t, expected, rel=0.02):
    assert abs(t.double().std().item() - expected) < rel * expected, (t.std().item(), expected)


def test_compute_fans():
    assert I.compute_fans((4, 9)) == (4, 9)
    assert I.compute_fans((7,)) == (7, 7)
    assert I.compute_fans(()) == (1, 1)
    assert I.compute_fans((3, 3, 4, 5)) == (36, 45)


@pytest.mark.parametrize("name,scale,fan", [
    ("glorot_uniform", 1.0, (FAN_IN + FAN_OUT) / 2), ("he_uniform", 2.0, FAN_IN),
    ("lecun_uniform", 1.0, FAN_IN),
])
def test_uniform_variance_scaling(name, scale, fan):
    t = I.get(name)(SHAPE)
    limit = math.sqrt(3 * scale / fan)
    assert t.shape == SHAPE and t.dtype == torch.float32
    assert t.abs().max() <= limit and t.abs().max() > 0.99 * limit
    std_ok(t, limit / math.sqrt(3))
    assert abs(t.mean().item()) < 0.01 * limit


@pytest.mark.parametrize("name,scale,fan", [
    ("glorot_normal", 1.0, (FAN_IN + FAN_OUT) / 2), ("he_normal", 2.0, FAN_IN),
    ("lecun_normal", 1.0, FAN_IN),
])
def test_truncated_normal_variance_scaling(name, scale, fan):
    t = I.get(name)(SHAPE)
    stddev = math.sqrt(scale / fan) / 0.87962566103423978  # before truncation
    assert t.abs().max() <= 2 * stddev + 1e-7  # truncated at two standard deviations
    assert t.abs().max() > 1.95 * stddev
    std_ok(t, math.sqrt(scale / fan))  # the truncation correction restores the variance


def test_glorot_uniform_kernel_limit_matches_keras_note():
    # Keras's glorot_uniform on a (D, 3u) kernel: D=10, u=16 -> limit sqrt(6 / (10 + 48)) = 0.3216
    t = I.GlorotUniform()((10, 48))
    assert t.abs().max() <= 0.3216 + 1e-4


def test_variance_scaling_modes_and_untruncated():
    t = I.VarianceScaling(scale=3.0, mode="fan_out", distribution="untruncated_normal")(SHAPE)
    std_ok(t, math.sqrt(3.0 / FAN_OUT))
    assert t.abs().max() > 3 * math.sqrt(3.0 / FAN_OUT)  # untruncated tails
    assert I.VarianceScaling(distribution="normal").distribution == "truncated_normal"
    with pytest.raises(ValueError, match="mode"):
        I.VarianceScaling(mode="fan")
    with pytest.raises(ValueError, match="scale"):
        I.VarianceScaling(scale=0)


def test_random_normal_uniform_truncated_defaults():
    t = I.RandomNormal()(SHAPE)
    std_ok(t, 0.05)
    t = I.RandomUniform()(SHAPE)
    assert t.min() >= -0.05 and t.max() < 0.05 and t.min() < -0.049
    t = I.TruncatedNormal(mean=1.0, stddev=0.1)(SHAPE)
    assert (t - 1).abs().max() <= 0.2 + 1e-6 and abs(t.mean().item() - 1) < 2e-3
    std_ok(t, 0.1 * 0.87962566103423978)  # a truncated, uncorrected normal


def test_orthogonal_recurrent_kernel_has_orthonormal_rows():
    u = 16
    w = I.Orthogonal()((u, 3 * u)).double()
    torch.testing.assert_close(w @ w.T, torch.eye(u, dtype=torch.float64), atol=1e-6, rtol=0)
    block = w[:, :u]  # the per-gate blocks are not orthogonal (Keras behaviour)
    assert (block.T @ block - torch.eye(u, dtype=torch.float64)).abs().max() > 0.1
    tall = I.Orthogonal(gain=2.0)((12, 5)).double()
    torch.testing.assert_close(tall.T @ tall, 4 * torch.eye(5, dtype=torch.float64), atol=1e-5,
                               rtol=0)
    with pytest.raises(ValueError, match="rank"):
        I.Orthogonal()((5,))


def test_constant_identity_zeros_ones():
    assert torch.equal(I.Constant(0.03)((2, 6)), torch.full((2, 6), 0.03))
    assert torch.equal(I.get("identity")((3, 5)), torch.eye(3, 5))
    assert torch.equal(I.Identity(gain=2.0)((2, 2)), 2 * torch.eye(2))
    assert torch.equal(I.get("zeros")((4,)), torch.zeros(4))
    assert torch.equal(I.get("ones")((2, 3), dtype=torch.float64),
                       torch.ones(2, 3, dtype=torch.float64))
    with pytest.raises(ValueError, match="2-D"):
        I.Identity()((2, 2, 2))


@pytest.mark.parametrize("name", ["glorot_uniform", "glorot_normal", "orthogonal", "he_normal",
                                  "he_uniform", "lecun_normal", "lecun_uniform", "random_normal",
                                  "random_uniform", "truncated_normal"])
def test_seeds(name):
    cls = type(I.get(name))
    a, b, c = cls(seed=1)((5, 15)), cls(seed=1)((5, 15)), cls(seed=2)((5, 15))
    assert torch.equal(a, b) and not torch.equal(a, c)
    init = cls(seed=1)
    assert torch.equal(init((5, 15)), init((5, 15)))  # a seeded instance repeats its values
    unseeded = cls()
    torch.manual_seed(0)
    d = unseeded((5, 15))
    torch.manual_seed(0)
    assert torch.equal(unseeded((5, 15)), d)  # unseeded: PyTorch's global generator
    assert not torch.equal(unseeded((5, 15)), d)


def test_names_aliases_and_errors():
    for name, cls in [("GlorotUniform", I.GlorotUniform), ("Orthogonal", I.Orthogonal),
                      ("OrthogonalInitializer", I.Orthogonal), ("uniform", I.RandomUniform),
                      ("normal", I.RandomNormal), ("zero", I.Zeros), ("one", I.Ones),
                      ("variance_scaling", I.VarianceScaling)]:
        assert isinstance(I.get(name), cls)
    assert I.get(None) is None
    with pytest.raises(ValueError, match="kernel_initializer"):
        I.get("glorot", "kernel_initializer")
    with pytest.raises(ValueError, match="bias_initializer"):
        I.get(3.5, "bias_initializer")
    assert isinstance(I.get({"class_name": "Constant", "config": {"value": 2.0}}), I.Constant)
    round_trip = I.deserialize(I.serialize(I.VarianceScaling(2.0, "fan_avg", "uniform", seed=4)))
    assert round_trip.get_config() == {"scale": 2.0, "mode": "fan_avg", "distribution": "uniform",
                                       "seed": 4}


def test_dtypes_and_devices():
    t = I.GlorotUniform(seed=0)((4, 6), dtype=torch.float64)
    assert t.dtype == torch.float64
    t16 = I.GlorotUniform(seed=0)((4, 6), dtype=torch.bfloat16)
    assert t16.dtype == torch.bfloat16
    torch.testing.assert_close(t16.float(), I.GlorotUniform(seed=0)((4, 6)), atol=1e-2, rtol=1e-2)


def test_layers_use_their_initializers():
    layer = GRU(4, input_size=3, kernel_initializer=I.Constant(0.5),
                recurrent_initializer="identity", bias_initializer="ones")
    assert torch.all(layer.kernel == 0.5)
    assert torch.equal(layer.recurrent_kernel, torch.eye(4, 12))
    assert torch.all(layer.bias == 1)
    default = GRU(6, input_size=5)
    assert torch.all(default.bias == 0)
    rk = default.recurrent_kernel.detach().double()
    torch.testing.assert_close(rk @ rk.T, torch.eye(6, dtype=torch.float64), atol=1e-5, rtol=0)
    assert default.kernel.abs().max() <= math.sqrt(6 / (5 + 18))
    # two layers from the same names get different weights; a seeded initializer repeats
    assert not torch.equal(GRU(4, input_size=3).kernel, GRU(4, input_size=3).kernel)
    seeded = dict(kernel_initializer=I.GlorotUniform(seed=3),
                  recurrent_initializer=I.Orthogonal(seed=4))
    assert torch.equal(GRUCell(4, input_size=3, **seeded).kernel,
                       GRUCell(4, input_size=3, **seeded).kernel)
    # None means glorot_uniform (Keras' add_weight default)
    assert isinstance(GRU(4, bias_initializer=None).bias_initializer, I.GlorotUniform)


def test_callable_initializers():
    calls = []

    def keras_style(shape, dtype=None):
        calls.append((shape, dtype))
        return np.full(shape, 0.25, dtype=np.float32)

    layer = GRU(2, input_size=3, kernel_initializer=keras_style,
                recurrent_initializer=lambda shape: torch.ones(shape))
    assert torch.all(layer.kernel == 0.25) and torch.all(layer.recurrent_kernel == 1)
    assert calls == [((3, 6), torch.float32)]
    with pytest.raises(ValueError, match="returned shape"):
        GRU(2, input_size=3, kernel_initializer=lambda shape, dtype=None: torch.zeros(2))


def test_reset_parameters_redraws():
    layer = GRU(4, input_size=3)
    before = layer.kernel.detach().clone()
    layer.reset_parameters()
    assert not torch.equal(layer.kernel, before)
    assert layer.kernel.abs().max() <= math.sqrt(6 / 15)
