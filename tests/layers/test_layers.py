"""Behaviour of the Keras-style layers (GRU, GRUCell, RNN, Bidirectional) without Keras:
building, weights, conversion to/from torch.nn.GRU, stateful layers, masks, errors."""
import numpy as np
import pytest
import torch
from torch import nn

from gru_cuda import functional
from gru_cuda.keras_api import bidirectional, layer_gru, layer_gru_cell, layer_rnn
from gru_cuda.layers import GRU, RNN, Bidirectional, GRUCell


def random_weights(layer, seed=0, scale=0.5):
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype(np.float32) * scale
                       for w in layer.get_weights()])
    return layer


def assert_close(a, b, tol=1e-5):
    torch.testing.assert_close(a, b, atol=tol, rtol=tol)


@pytest.fixture
def gru_calls(monkeypatch):
    """Records every call of gru_cuda.functional.gru made by the layers."""
    calls = []
    real = functional.gru

    def spy(*args, **kwargs):
        calls.append((args, kwargs))
        return real(*args, **kwargs)
    monkeypatch.setattr(functional, "gru", spy)
    return calls


# ---- the seed's example and the composition functions -----------------------------------------

def test_seed_example():
    inputs = torch.rand(32, 10, 8)
    output = layer_rnn(inputs, layer_gru_cell(4))
    assert output.shape == (32, 4)
    rnn = layer_rnn(cell=layer_gru_cell(4), return_sequences=True, return_state=True)
    whole_sequence_output, final_state = rnn(inputs)
    assert whole_sequence_output.shape == (32, 10, 4)
    assert final_state.shape == (32, 4)
    assert torch.equal(whole_sequence_output[:, -1], final_state)


def test_composition_object_semantics():
    layer = layer_gru(units=3)
    assert isinstance(layer, GRU) and layer.units == 3
    model = nn.Sequential()
    same = layer_gru(model, units=4, return_sequences=True)
    assert same is model and isinstance(model[0], GRU)
    assert layer_gru(model, units=2) is model and len(model) == 2
    assert model(torch.rand(2, 5, 3)).shape == (2, 2)
    out = layer_gru(torch.rand(2, 5, 3), units=6, return_state=True)
    assert isinstance(out, tuple) and out[0].shape == (2, 6) and out[1].shape == (2, 6)
    assert layer_gru(units=4.0).units == 4  # R's as.integer
    with pytest.raises(ValueError, match="units"):
        layer_gru(units=None)
    with pytest.raises(ValueError, match="units"):
        layer_gru(units=2.5)
    with pytest.raises(TypeError, match="object"):
        layer_gru("not a model", units=2)
    with pytest.raises(ValueError, match="cell"):
        layer_rnn(cell=None)
    wrapped = bidirectional(layer=layer_gru(units=3, return_sequences=True))
    assert isinstance(wrapped, Bidirectional)
    assert bidirectional(torch.rand(2, 4, 5), layer=layer_gru(units=3)).shape == (2, 6)
    cell = layer_gru_cell(5, dropout=0.1, reset_after=False)
    assert isinstance(cell, GRUCell) and cell.units == 5 and not cell.reset_after


def test_every_argument_of_layer_gru_reaches_the_layer():
    layer = layer_gru(units=3, activation="relu", recurrent_activation="hard_sigmoid",
                      use_bias=False, return_sequences=True, return_state=True,
                      go_backwards=True, stateful=True, unroll=True, time_major=True,
                      reset_after=False, kernel_initializer="zeros",
                      recurrent_initializer="identity", bias_initializer="ones",
                      kernel_regularizer="l1", recurrent_regularizer="l2",
                      bias_regularizer="l1_l2", activity_regularizer="l2",
                      kernel_constraint="non_neg", recurrent_constraint="max_norm",
                      bias_constraint="unit_norm", dropout=0.1, recurrent_dropout=0.2,
                      zero_output_for_mask=True, seed=3, input_size=2)
    cfg = layer.get_config()
    for key, value in dict(activation="relu", recurrent_activation="hard_sigmoid",
                           use_bias=False, return_sequences=True, return_state=True,
                           go_backwards=True, stateful=True, unroll=True, time_major=True,
                           reset_after=False, dropout=0.1, recurrent_dropout=0.2,
                           zero_output_for_mask=True, seed=3, input_size=2).items():
        assert cfg[key] == value, key
    assert torch.equal(layer.kernel, torch.zeros(2, 9))
    assert torch.equal(layer.recurrent_kernel, torch.eye(3, 9))
    assert layer.bias is None
    for key in ("kernel_regularizer", "recurrent_regularizer", "bias_regularizer",
                "activity_regularizer", "kernel_constraint", "recurrent_constraint",
                "bias_constraint"):
        assert cfg[key] is not None, key


# ---- one fused call, no per-step Python ---------------------------------------------------------

def test_gru_runs_one_fused_call(gru_calls):
    GRU(4, return_sequences=True)(torch.rand(2, 7, 3), mask=torch.rand(2, 7) > 0.3)
    assert len(gru_calls) == 1
    args, _ = gru_calls[0]
    assert args[0].shape == (2, 7, 3)


def test_rnn_over_gru_cell_runs_one_fused_call(gru_calls, monkeypatch):
    cell = GRUCell(4)
    monkeypatch.setattr(GRUCell, "forward", lambda *a, **k: pytest.fail("cell stepped in Python"))
    RNN(cell, return_sequences=True)(torch.rand(2, 9, 3))
    assert len(gru_calls) == 1


def test_bidirectional_runs_two_fused_calls(gru_calls):
    Bidirectional(GRU(4, return_sequences=True))(torch.rand(2, 9, 3))
    assert len(gru_calls) == 2


def test_rnn_over_gru_cell_equals_gru():
    x, mask, h0 = torch.rand(3, 6, 5), torch.rand(3, 6) > 0.3, torch.rand(3, 4)
    for kwargs in ({}, {"go_backwards": True, "return_sequences": True},
                   {"zero_output_for_mask": True, "return_sequences": True, "return_state": True}):
        gru = random_weights(GRU(4, reset_after=False, input_size=5, **kwargs))
        rnn = RNN(GRUCell(4, reset_after=False, input_size=5), **kwargs)
        rnn.set_weights(gru.get_weights())
        a = gru(x, mask=mask, initial_state=h0)
        b = rnn(x, mask=mask, initial_state=h0)
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert torch.equal(u, v)


# ---- building, dtypes, devices, state_dict -------------------------------------------------------

def test_lazy_build_and_explicit_build():
    layer = GRU(4)
    assert not layer.built and layer.kernel is None and list(layer.parameters()) == []
    assert layer.state_dict() == {}
    layer(torch.rand(2, 3, 5))
    assert layer.built and layer.input_size == 5
    assert layer.kernel.shape == (5, 12) and layer.recurrent_kernel.shape == (4, 12)
    assert layer.bias.shape == (2, 12)
    assert isinstance(layer.kernel, nn.Parameter)
    assert set(layer.state_dict()) == {"kernel", "recurrent_kernel", "bias"}

    layer = GRU(4, reset_after=False)
    layer.build((None, 7, 6))
    assert layer.kernel.shape == (6, 12) and layer.bias.shape == (12,)
    assert GRU(4, use_bias=False, input_size=3).bias is None
    assert len(GRU(4, use_bias=False, input_size=3).get_weights()) == 2
    with pytest.raises(ValueError, match="6 features"):
        layer(torch.rand(2, 3, 5))
    with pytest.raises(ValueError, match="rebuilt"):
        layer.build(5)


def test_dtype_and_device_arguments():
    layer = GRU(3, dtype=torch.float64, input_size=2)
    assert layer.kernel.dtype == torch.float64
    assert GRU(3, dtype="float64", input_size=2).kernel.dtype == torch.float64
    assert layer(torch.rand(2, 4, 2)).dtype == torch.float64  # inputs cast to the layer dtype
    layer = GRU(3, input_size=2, device="cpu")
    assert layer.kernel.device.type == "cpu"
    out = GRU(3)(torch.rand(2, 4, 2, dtype=torch.float64))  # Keras casts to the weights' dtype
    assert out.dtype == torch.float32
    with pytest.raises(ValueError, match="dtype"):
        GRU(3, dtype=torch.int32)


def test_module_to_double_keeps_working():
    layer = random_weights(GRU(3, stateful=True, input_size=2))
    x = torch.rand(2, 4, 2, dtype=torch.float64)
    ref = layer(x.float())
    layer.reset_states()
    layer.double()
    out = layer(x)
    assert out.dtype == torch.float64 and layer.states[0].dtype == torch.float64
    assert_close(out.float(), ref)


def test_state_dict_round_trip_into_unbuilt_layer():
    src = random_weights(GRU(4, input_size=3, reset_after=False))
    dst = GRU(4, reset_after=False)
    dst.load_state_dict(src.state_dict())
    x = torch.rand(2, 5, 3)
    assert torch.equal(src(x), dst(x))
    rnn = RNN(GRUCell(4, input_size=3))
    assert set(rnn.state_dict()) == {"cell.kernel", "cell.recurrent_kernel", "cell.bias"}
    rnn2 = RNN(GRUCell(4))
    rnn2.load_state_dict(rnn.state_dict())
    assert torch.equal(rnn(x), rnn2(x))


def test_get_set_weights_round_trip_is_exact():
    layer = GRU(5, input_size=3)
    rng = np.random.default_rng(1)
    weights = [rng.standard_normal(s).astype(np.float32) for s in [(3, 15), (5, 15), (2, 15)]]
    layer.set_weights(weights)
    got = layer.get_weights()
    assert [w.dtype for w in got] == [np.float32] * 3
    for a, b in zip(got, weights):
        assert np.array_equal(a, b)
    got[0][...] = 0  # copies: editing them does not touch the layer
    assert not torch.all(layer.kernel == 0)
    unbuilt = GRU(5)
    unbuilt.set_weights(weights)  # builds from the kernel's shape
    assert unbuilt.input_size == 3


def test_set_weights_errors():
    layer = GRU(5, input_size=3)
    with pytest.raises(ValueError, match="expected 3 arrays"):
        layer.set_weights(layer.get_weights()[:2])
    bad = layer.get_weights()
    bad[2] = np.zeros(15, np.float32)
    with pytest.raises(ValueError, match=r"bias must have shape \(2, 15\)"):
        layer.set_weights(bad)
    bad = layer.get_weights()
    bad[1] = np.zeros((5, 12), np.float32)
    with pytest.raises(ValueError, match="recurrent_kernel"):
        layer.set_weights(bad)


# ---- torch.nn.GRU conversion ---------------------------------------------------------------------

@pytest.mark.parametrize("batch_first,bias", [(True, True), (False, True), (True, False)])
def test_from_torch_matches_nn_gru(batch_first, bias):
    torch.manual_seed(0)
    ref = nn.GRU(5, 7, batch_first=batch_first, bias=bias)
    x = torch.randn(3, 6, 5) if batch_first else torch.randn(6, 3, 5)
    h0 = torch.randn(1, 3, 7)
    expected, h_n = ref(x, h0)
    layer = GRU.from_torch(ref, return_sequences=True, return_state=True)
    assert layer.time_major == (not batch_first) and layer.use_bias == bias
    out, state = layer(x, initial_state=h0[0])
    assert_close(out, expected)
    assert_close(state, h_n[0])
    back = layer.to_torch()
    for name, p in ref.named_parameters():
        assert torch.equal(getattr(back, name), p), name


def test_bidirectional_from_torch_matches_nn_gru():
    torch.manual_seed(1)
    ref = nn.GRU(4, 6, batch_first=True, bidirectional=True)
    x = torch.randn(2, 5, 4)
    expected, h_n = ref(x)
    layer = Bidirectional.from_torch(ref, return_sequences=True, return_state=True)
    out, h_fwd, h_bwd = layer(x)
    assert_close(out, expected)
    assert_close(h_fwd, h_n[0])
    assert_close(h_bwd, h_n[1])
    back = layer.to_torch()
    for name, p in ref.named_parameters():
        assert torch.equal(getattr(back, name), p), name


def test_torch_conversion_errors():
    with pytest.raises(ValueError, match="reset_after"):
        GRU(3, reset_after=False, input_size=2).to_torch()
    with pytest.raises(ValueError, match="tanh"):
        GRU(3, activation="relu", input_size=2).to_torch()
    with pytest.raises(ValueError, match="num_layers"):
        GRU.from_torch(nn.GRU(3, 4, num_layers=2))
    with pytest.raises(ValueError, match="bidirectional"):
        GRU.from_torch(nn.GRU(3, 4, bidirectional=True))
    with pytest.raises(ValueError, match="reset_after"):
        GRU.from_torch(nn.GRU(3, 4), reset_after=False)


# ---- sequence behaviour -------------------------------------------------------------------------

def test_go_backwards_returns_processing_order():
    x = torch.rand(2, 6, 3)
    fwd = random_weights(GRU(4, return_sequences=True, input_size=3))
    bwd = GRU(4, return_sequences=True, go_backwards=True, input_size=3)
    bwd.set_weights(fwd.get_weights())
    assert_close(bwd(x), fwd(torch.flip(x, dims=[1])))


def test_time_major_equals_transposed_batch_major():
    x, mask, h0 = torch.rand(3, 6, 2), torch.rand(3, 6) > 0.4, torch.rand(3, 4)
    for kwargs in ({"return_sequences": True}, {"go_backwards": True},
                   {"return_sequences": True, "zero_output_for_mask": True}):
        bm = random_weights(GRU(4, input_size=2, **kwargs))
        tm = GRU(4, input_size=2, time_major=True, **kwargs)
        tm.set_weights(bm.get_weights())
        a = bm(x, mask=mask, initial_state=h0)
        b = tm(x.transpose(0, 1), mask=mask.T, initial_state=h0)
        assert_close(b.transpose(0, 1) if kwargs.get("return_sequences") else b, a)
    # generic cells honour time_major too
    cell_layer = RNN(GRUCellLoop(4, input_size=2), time_major=True, return_sequences=True)
    ref = RNN(GRUCell(4, input_size=2), return_sequences=True)
    cell_layer.set_weights(ref.get_weights())
    assert_close(cell_layer(x.transpose(0, 1), mask=mask.T).transpose(0, 1), ref(x, mask=mask))


class GRUCellLoop(GRUCell):
    """A GRUCell whose RNN takes the generic Python loop (forward overridden)."""

    def forward(self, inputs, states=None, training=None):
        return super().forward(inputs, states, training)


def test_generic_loop_equals_fused_path():
    x, mask, h0 = torch.rand(3, 5, 2), torch.rand(3, 5) > 0.4, torch.rand(3, 4)
    for kwargs in ({}, {"go_backwards": True, "return_sequences": True},
                   {"return_sequences": True, "zero_output_for_mask": True, "return_state": True}):
        fused = RNN(GRUCell(4, input_size=2, reset_after=False), **kwargs)
        random_weights(fused)
        loop = RNN(GRUCellLoop(4, input_size=2, reset_after=False), **kwargs)
        loop.set_weights(fused.get_weights())
        a, b = fused(x, mask=mask, initial_state=h0), loop(x, mask=mask, initial_state=[h0])
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,)):
            assert_close(u, v)


def test_zero_output_for_mask_keeps_the_state():
    x = torch.rand(2, 4, 3)
    mask = torch.tensor([[True, True, True, False], [True, False, True, False]])
    layer = random_weights(GRU(2, return_sequences=True, return_state=True,
                               zero_output_for_mask=True, input_size=3))
    out, state = layer(x, mask=mask)
    assert torch.all(out[:, -1] == 0) and torch.all(state != 0)
    ref = random_weights(GRU(2, return_state=True, input_size=3))
    _, ref_state = ref(x[:, :3], mask=mask[:, :3])
    assert_close(state, ref_state)


def test_masked_steps_carry_state_left_and_right_padding():
    # Keras 2's test_statefulness_GRU idea: padding on either side gives the same final output.
    layer = random_weights(GRU(3, input_size=2))
    core = torch.rand(2, 4, 2)
    pad = torch.zeros(2, 2, 2)
    right = torch.cat([core, pad], 1)
    left = torch.cat([pad, core], 1)
    m_right = torch.tensor([[1, 1, 1, 1, 0, 0]] * 2, dtype=torch.bool)
    assert_close(layer(right, mask=m_right), layer(core))
    assert_close(layer(left, mask=m_right.flip(1)), layer(core))


def test_empty_and_fully_masked_sequences():
    layer = random_weights(GRU(3, input_size=2, return_state=True))
    h0 = torch.rand(2, 3)
    out, state = layer(torch.rand(2, 4, 2), mask=torch.zeros(2, 4, dtype=torch.bool),
                       initial_state=h0)
    assert torch.all(out == 0) and torch.equal(state, h0)
    out, state = layer(torch.rand(2, 0, 2), initial_state=h0)
    assert out.shape == (2, 3) and torch.all(out == 0) and torch.equal(state, h0)


def test_stateful_behaviour():
    x = torch.rand(2, 5, 3)
    layer = random_weights(GRU(4, stateful=True, return_state=True, input_size=3))
    ref = GRU(4, return_state=True, input_size=3)
    ref.set_weights(layer.get_weights())
    assert layer.states is None
    _, s1 = layer(x)
    assert torch.equal(layer.states[0], s1) and not layer.states[0].requires_grad
    _, s2 = layer(x)
    assert_close(s2, ref(x, initial_state=ref(x)[1])[1])
    layer.reset_states()
    assert torch.equal(layer.states[0], torch.zeros(2, 4))
    _, s3 = layer(x)
    assert_close(s3, s1)
    # an explicit initial_state overrides the stored one (and the result is stored)
    h0 = torch.rand(2, 4)
    _, s4 = layer(x, initial_state=h0)
    assert_close(s4, ref(x, initial_state=h0)[1])
    assert torch.equal(layer.states[0], s4)
    with pytest.raises(ValueError, match="batch size"):
        layer(torch.rand(3, 5, 3))
    layer.reset_state(torch.zeros(3, 4))  # Keras 2 form: sets states (new batch size)
    assert layer(torch.rand(3, 5, 3))[0].shape == (3, 4)
    # stored state also updates in inference, and gradients never flow into it
    layer.eval()
    with torch.no_grad():
        layer(torch.rand(3, 5, 3))
    assert layer.states[0].shape == (3, 4)


def test_stateful_with_mask_keeps_the_last_unmasked_state():
    layer = random_weights(GRU(3, stateful=True, input_size=2))
    x = torch.rand(1, 4, 2)
    mask = torch.tensor([[True, True, False, False]])
    layer(x, mask=mask)
    ref = GRU(3, return_state=True, input_size=2)
    ref.set_weights(layer.get_weights())
    assert_close(layer.states[0], ref(x[:, :2])[1])


def test_gradients_flow_to_weights_and_initial_state():
    layer = random_weights(GRU(4, return_sequences=True, input_size=3))
    x = torch.rand(2, 5, 3, requires_grad=True)
    h0 = torch.rand(2, 4, requires_grad=True)
    layer(x, initial_state=h0).square().sum().backward()
    for t in (x, h0, layer.kernel, layer.recurrent_kernel, layer.bias):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


def test_gradients_match_reference_path():
    # A Python callable runs the per-step reference path: its autograd is the oracle.
    x = torch.rand(2, 5, 3, dtype=torch.float64)
    mask = torch.tensor([[1, 1, 0, 1, 1], [1, 0, 0, 1, 0]], dtype=torch.bool)
    grads = []
    for act in ("tanh", lambda t: torch.tanh(t)):
        layer = GRU(4, activation=act, return_sequences=True, go_backwards=True,
                    input_size=3, dtype=torch.float64, reset_after=False)
        random_weights(layer)
        layer(x, mask=mask).sin().sum().backward()
        grads.append([p.grad for p in layer.weights])
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


# ---- GRUCell -------------------------------------------------------------------------------------

def test_gru_cell_step_conventions():
    cell = GRUCell(4, input_size=3)
    x, h = torch.rand(2, 3), torch.rand(2, 4)
    out, new = cell(x, h)
    assert isinstance(new, torch.Tensor) and new is out
    out2, new2 = cell(x, [h])
    assert isinstance(new2, list) and len(new2) == 1 and torch.equal(new2[0], out)
    out3, _ = cell(x, None)
    assert torch.equal(out3, cell(x, torch.zeros(2, 4))[0])
    assert cell.state_size == 4 and cell.output_size == 4
    assert torch.equal(cell.get_initial_state(2)[0], torch.zeros(2, 4))


def test_gru_cell_manual_loop_equals_gru():
    x = torch.rand(3, 6, 2)
    gru = random_weights(GRU(4, return_sequences=True, input_size=2, reset_after=False,
                             activation="softsign"))
    cell = GRUCell(4, input_size=2, reset_after=False, activation="softsign")
    cell.set_weights(gru.get_weights())
    h, outs = torch.zeros(3, 4), []
    for t in range(6):
        out, h = cell(x[:, t], h)
        outs.append(out)
    assert_close(torch.stack(outs, 1), gru(x))


def test_gru_cell_errors():
    cell = GRUCell(4, input_size=3)
    with pytest.raises(ValueError, match=r"\(batch, features\)"):
        cell(torch.rand(2, 5, 3), torch.rand(2, 4))
    with pytest.raises(ValueError, match="expects inputs with 3 features"):
        cell(torch.rand(2, 5), torch.rand(2, 4))
    with pytest.raises(ValueError, match="states"):
        cell(torch.rand(2, 3), torch.rand(2, 5))
    with pytest.raises(ValueError, match="one state"):
        cell(torch.rand(2, 3), [torch.rand(2, 4)] * 2)


# ---- Bidirectional -------------------------------------------------------------------------------

def _bidi(merge_mode, **kwargs):
    layer = Bidirectional(GRU(3, input_size=2, **kwargs), merge_mode=merge_mode)
    return random_weights(layer)


@pytest.mark.parametrize("merge_mode", ["concat", "sum", "mul", "ave", None])
def test_bidirectional_merge_modes(merge_mode):
    x, mask = torch.rand(2, 5, 2), torch.rand(2, 5) > 0.3
    layer = _bidi(merge_mode, return_sequences=True)
    f, b = layer.forward_layer, layer.backward_layer
    assert f.zero_output_for_mask and b.zero_output_for_mask  # forced = return_sequences
    y, y_rev = f(x, mask=mask), b(x, mask=mask).flip(1)
    expected = {"concat": lambda: torch.cat([y, y_rev], -1), "sum": lambda: y + y_rev,
                "mul": lambda: y * y_rev, "ave": lambda: (y + y_rev) / 2,
                None: lambda: (y, y_rev)}[merge_mode]()
    out = layer(x, mask=mask)
    if merge_mode is None:
        assert isinstance(out, tuple) and len(out) == 2
        assert_close(out[0], expected[0])
        assert_close(out[1], expected[1])
    else:
        assert_close(out, expected)


def test_bidirectional_states():
    x = torch.rand(2, 5, 2)
    layer = _bidi("concat", return_state=True)
    hf, hb = torch.rand(2, 3), torch.rand(2, 3)
    out, sf, sb = layer(x, initial_state=[hf, hb])
    _, ef = layer.forward_layer(x, initial_state=hf)
    _, eb = layer.backward_layer(x, initial_state=hb)
    assert_close(sf, ef)
    assert_close(sb, eb)
    assert_close(out, torch.cat([ef, eb], -1))
    out = _bidi(None, return_state=True)(x)
    assert len(out) == 4
    with pytest.raises(ValueError, match="even"):
        layer(x, initial_state=[hf, hb, hf])
    with pytest.raises(ValueError, match="list"):
        layer(x, initial_state=hf)


def test_bidirectional_backward_copy_and_weights():
    fwd = GRU(3, input_size=2, return_sequences=True, dropout=0.1, reset_after=False)
    layer = Bidirectional(fwd)
    bwd = layer.backward_layer
    assert layer.forward_layer is fwd and bwd is not fwd
    assert bwd.go_backwards and bwd.built and not bwd.reset_after and bwd.dropout == 0.1
    assert not torch.equal(bwd.kernel, fwd.kernel)  # fresh weights, as Keras' re-creation
    weights = layer.get_weights()
    assert len(weights) == 6
    other = Bidirectional(GRU(3, return_sequences=True, reset_after=False), weights=weights)
    x = torch.rand(2, 4, 2)
    assert torch.equal(layer.eval()(x), other.eval()(x))
    # generic cells can be wrapped too
    bidi_rnn = Bidirectional(RNN(GRUCell(3, input_size=2), return_sequences=True))
    assert bidi_rnn(x).shape == (2, 4, 6)


def test_bidirectional_argument_errors():
    with pytest.raises(ValueError, match="merge mode"):
        Bidirectional(GRU(3), merge_mode="max")
    with pytest.raises(ValueError, match="GRU or RNN"):
        Bidirectional(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="go_backwards"):
        Bidirectional(GRU(3), backward_layer=GRU(3))
    with pytest.raises(ValueError, match="return_sequences"):
        Bidirectional(GRU(3), backward_layer=GRU(3, go_backwards=True, return_sequences=True))


def test_bidirectional_time_major():
    x, mask = torch.rand(3, 5, 2), torch.rand(3, 5) > 0.3
    bm = _bidi("concat", return_sequences=True)
    tm = Bidirectional(GRU(3, input_size=2, return_sequences=True, time_major=True))
    tm.set_weights(bm.get_weights())
    assert_close(tm(x.transpose(0, 1), mask=mask.T).transpose(0, 1), bm(x, mask=mask))


def test_bidirectional_stateful_reset():
    layer = _bidi("concat", stateful=True)
    x = torch.rand(2, 4, 2)
    first = layer(x)
    assert not torch.equal(layer(x), first)
    layer.reset_states()
    assert_close(layer(x), first)


# ---- errors --------------------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs,argname", [
    ({"units": 0}, "units"), ({"units": -3}, "units"), ({"units": 2.5}, "units"),
    ({"units": "4"}, "units"), ({"units": True}, "units"),
    ({"dropout": -0.1}, "dropout"), ({"dropout": 1.5}, "dropout"),
    ({"recurrent_dropout": 2.0}, "recurrent_dropout"), ({"dropout": "0.5"}, "dropout"),
    ({"activation": "tanhh"}, "activation"),
    ({"recurrent_activation": "sigmoidd"}, "recurrent_activation"),
    ({"kernel_initializer": "glorot"}, "kernel_initializer"),
    ({"recurrent_initializer": "orth"}, "recurrent_initializer"),
    ({"bias_initializer": "zero_"}, "bias_initializer"),
    ({"kernel_regularizer": "l3"}, "kernel_regularizer"),
    ({"recurrent_regularizer": "L9"}, "recurrent_regularizer"),
    ({"bias_regularizer": 5}, "bias_regularizer"),
    ({"activity_regularizer": "big"}, "activity_regularizer"),
    ({"kernel_constraint": "max"}, "kernel_constraint"),
    ({"recurrent_constraint": "unit"}, "recurrent_constraint"),
    ({"bias_constraint": "nonneg"}, "bias_constraint"),
    ({"seed": 1.5}, "seed"), ({"use_bias": "yes"}, "use_bias"),
])
def test_construction_errors_name_the_argument(kwargs, argname):
    kwargs = {"units": 3, **kwargs}
    with pytest.raises(ValueError, match=argname):
        GRU(**kwargs)
    cell_kwargs = {k: v for k, v in kwargs.items() if k != "activity_regularizer"}
    if len(cell_kwargs) == len(kwargs):
        with pytest.raises(ValueError, match=argname):
            GRUCell(**cell_kwargs)


def test_rates_at_the_bounds_are_accepted():
    GRU(3, dropout=0.0, recurrent_dropout=1.0)
    GRUCell(3, dropout=1, recurrent_dropout=0)


def test_call_errors():
    layer = GRU(3, input_size=2)
    with pytest.raises(ValueError, match=r"3-D inputs \(batch, timesteps, features\)"):
        layer(torch.rand(2, 2))
    with pytest.raises(ValueError, match="expects inputs with 2 features"):
        layer(torch.rand(2, 4, 5))
    with pytest.raises(ValueError, match=r"mask must have shape \(batch, timesteps\) = \(2, 4\)"):
        layer(torch.rand(2, 4, 2), mask=torch.ones(4, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match=r"initial_state must have shape \(batch, units\)"):
        layer(torch.rand(2, 4, 2), initial_state=torch.rand(2, 4))
    with pytest.raises(ValueError, match="initial_state must hold 1"):
        layer(torch.rand(2, 4, 2), initial_state=[torch.rand(2, 3)] * 2)
    tm = GRU(3, input_size=2, time_major=True)
    with pytest.raises(ValueError, match=r"\(timesteps, batch\) = \(4, 2\)"):
        tm(torch.rand(4, 2, 2), mask=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="state_size"):
        RNN(nn.Linear(2, 3))
    with pytest.raises(ValueError, match="StackedRNNCells"):
        RNN([GRUCell(3), GRUCell(4)])


def test_inputs_may_be_arrays_and_masks_non_bool():
    layer = random_weights(GRU(3, input_size=2))
    x = np.random.default_rng(0).random((2, 4, 2)).astype(np.float32)
    mask = np.array([[1, 1, 0, 1], [1, 0, 0, 0]], dtype=np.int64)
    assert_close(layer(x, mask=mask), layer(torch.from_numpy(x), mask=torch.from_numpy(mask) > 0))


def test_repr_and_config_round_trip():
    layer = GRU(3, activation="relu", return_sequences=True, stateful=True, input_size=2)
    assert "activation='relu'" in repr(layer) and "return_sequences=True" in repr(layer)
    clone = GRU.from_config(layer.get_config())
    assert clone.get_config()["activation"] == "relu" and clone.built
    cell = GRUCell(3, recurrent_dropout=0.2)
    assert GRUCell.from_config(cell.get_config()).recurrent_dropout == 0.2


def test_package_exports():
    import gru_cuda
    for name in ("GRU", "GRUCell", "RNN", "Bidirectional", "layer_gru", "layer_gru_cell",
                 "layer_rnn", "bidirectional", "initializers", "regularizers", "constraints",
                 "conversion"):
        assert hasattr(gru_cuda, name), f"gru_cuda.{name} is not exported by gru_cuda/__init__.py"
    assert gru_cuda.GRU is GRU and gru_cuda.layer_gru is layer_gru
