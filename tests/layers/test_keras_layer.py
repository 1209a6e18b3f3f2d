"""gru_cuda.keras (Keras 3 layers on the fused op) against live `keras.layers` as the oracle.

Every comparison builds the Keras layer and ours with the same weights (copied with
get_weights/set_weights, which must therefore be layout-compatible) and the same inputs.
"""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from compare import assert_close_rel

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was configured
    pytest.skip("gru_cuda.keras needs Keras' torch backend", allow_module_level=True)

import gru_cuda.keras as gk  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RTOL = 1e-5


def np_of(t):
    return keras.ops.convert_to_numpy(t)


def as_list(out):
    return list(out) if isinstance(out, (list, tuple)) else [out]


def pair(cls_name, *args, **kwargs):
    """Keras' layer and ours, built alike, ours holding Keras' weights."""
    theirs = getattr(keras.layers, cls_name)(*args, **kwargs)
    ours = getattr(gk, cls_name)(*args, **kwargs)
    return theirs, ours


def sync(theirs, ours, input_shape):
    theirs.build(input_shape)
    ours.build(input_shape)
    ours.set_weights(theirs.get_weights())


def grads_of(layer, outs, seed=0):
    """Gradients of a fixed random projection of all outputs w.r.t. the layer's variables."""
    g = torch.Generator().manual_seed(seed)
    loss = sum((o * torch.randn(o.shape, generator=g).to(o)).sum() for o in outs)
    return torch.autograd.grad(loss, [v.value for v in layer.trainable_weights])


def holes_mask(B, T, g):
    """Masks with holes: a random pattern, a fully masked row, a row masked only at the ends."""
    m = torch.rand(B, T, generator=g) > 0.4
    m[0] = False
    m[1] = True
    m[1, 0] = m[1, -1] = False
    return m


def assert_same(ours_outs, their_outs, what=""):
    assert len(ours_outs) == len(their_outs), what
    for i, (a, e) in enumerate(zip(ours_outs, their_outs)):
        assert_close_rel(torch.as_tensor(np_of(a)), torch.as_tensor(np_of(e)), RTOL,
                         f"{what} output {i}")


# --- the API matches Keras' ----------------------------------------------------------------

def test_import_gru_cuda_does_not_import_keras():
    code = "import sys, gru_cuda; assert 'keras' not in sys.modules, 'keras imported'"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize("name", ["GRU", "GRUCell", "RNN"])
def test_signature_is_keras(name):
    ours = inspect.signature(getattr(gk, name).__init__).parameters
    theirs = inspect.signature(getattr(keras.layers, name).__init__).parameters
    assert [(p.name, p.default, p.kind) for p in ours.values()] == \
        [(p.name, p.default, p.kind) for p in theirs.values()]


def test_subclasses_and_registration():
    assert issubclass(gk.GRU, keras.layers.GRU) and issubclass(gk.RNN, keras.layers.RNN)
    assert issubclass(gk.GRUCell, keras.layers.GRUCell)
    for cls in (gk.GRU, gk.GRUCell, gk.RNN):
        name = keras.saving.get_registered_name(cls)
        assert name == f"gru_cuda>{cls.__name__}"
        assert keras.saving.get_registered_object(name) is cls


@pytest.mark.parametrize("reset_after", [True, False])
def test_config_and_weights_are_keras(reset_after):
    kw = dict(units=5, activation="relu", recurrent_activation="hard_sigmoid",
              reset_after=reset_after, dropout=0.25, recurrent_dropout=0.1, seed=3,
              kernel_regularizer="l2", recurrent_constraint="non_neg",
              bias_initializer=keras.initializers.Constant(0.5), return_sequences=True,
              go_backwards=True, name="g")
    theirs, ours = pair("GRU", **kw)
    assert ours.get_config() == theirs.get_config()
    clone = gk.GRU.from_config(ours.get_config())
    assert type(clone) is gk.GRU and clone.get_config() == ours.get_config()
    sync(theirs, ours, (2, 4, 3))
    assert [(w.path.split("/", 1)[1], tuple(w.shape)) for w in ours.weights] == \
        [(w.path.split("/", 1)[1], tuple(w.shape)) for w in theirs.weights]
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert ours.use_cudnn is False  # the fused op replaces cuDNN everywhere


def test_other_backend_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(keras.backend, "backend", lambda: "jax")
    for cls in (gk.GRU, gk.GRUCell):
        with pytest.raises(RuntimeError, match="torch backend.*'jax'"):
            cls(4)


# --- outputs and gradients match Keras' ----------------------------------------------------

ACTS = [("tanh", "sigmoid"), ("relu", "hard_sigmoid"), ("gelu", "softsign"),
        ("mish", "sigmoid")]  # mish: a Keras activation without a fused kernel


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("acts", ACTS, ids=["-".join(a) for a in ACTS])
@pytest.mark.parametrize("mask", [None, "right", "holes"])
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gru_matches_keras(reset_after, acts, mask, go_backwards):
    B, T, F, H = 4, 6, 3, 5
    g = torch.Generator().manual_seed(7)
    theirs, ours = pair("GRU", H, activation=acts[0], recurrent_activation=acts[1],
                        reset_after=reset_after, go_backwards=go_backwards,
                        return_sequences=True, return_state=True,
                        bias_initializer="random_normal")
    sync(theirs, ours, (B, T, F))
    x = torch.randn(B, T, F, generator=g)
    m = None
    if mask == "right":
        m = torch.arange(T)[None, :] < torch.tensor([T, 3, 1, 5])[:, None]
    elif mask == "holes":
        m = holes_mask(B, T, g)
    h0 = torch.randn(B, H, generator=g)
    want = as_list(theirs(x, mask=m, initial_state=[h0]))
    got = as_list(ours(x, mask=m, initial_state=[h0]))
    assert_same(got, want, "GRU")
    for a, e in zip(grads_of(ours, got), grads_of(theirs, want)):
        assert_close_rel(a, e, RTOL, "gradient")


def _scaled_tanh(x):
    return 0.5 * keras.ops.tanh(x) + 0.25


@pytest.mark.parametrize("acts", [("softmax", "sigmoid"), (_scaled_tanh, "hard_silu")],
                         ids=["softmax", "python_function"])
def test_activations_without_a_kernel_match_keras(acts):
    """Keras activations gru_cuda has no kernel (or no name) for run as Keras' functions."""
    B, T, F, H = 3, 4, 3, 5
    g = torch.Generator().manual_seed(3)
    theirs, ours = pair("GRU", H, activation=acts[0], recurrent_activation=acts[1],
                        return_sequences=True)
    sync(theirs, ours, (B, T, F))
    x, m = torch.randn(B, T, F, generator=g), holes_mask(B, T, g)
    want, got = as_list(theirs(x, mask=m)), as_list(ours(x, mask=m))
    assert_same(got, want, str(acts))
    for a, e in zip(grads_of(ours, got), grads_of(theirs, want)):
        assert_close_rel(a, e, RTOL, "gradient")


@pytest.mark.parametrize("kw", [dict(use_bias=False), dict(zero_output_for_mask=True),
                                dict(return_sequences=False, return_state=True),
                                dict(return_sequences=False)],
                         ids=["no_bias", "zero_output_for_mask", "last_and_state", "last"])
def test_gru_options_match_keras(kw):
    B, T, F, H = 3, 5, 4, 6
    g = torch.Generator().manual_seed(1)
    theirs, ours = pair("GRU", H, **{"return_sequences": True, **kw})
    sync(theirs, ours, (B, T, F))
    x, m = torch.randn(B, T, F, generator=g), holes_mask(B, T, g)
    assert_same(as_list(ours(x, mask=m)), as_list(theirs(x, mask=m)), str(kw))


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("masked", [False, True])
def test_bidirectional_matches_keras(reset_after, masked):
    B, T, F, H = 3, 5, 4, 3
    g = torch.Generator().manual_seed(2)
    theirs = keras.layers.Bidirectional(
        keras.layers.GRU(H, reset_after=reset_after, return_sequences=True, return_state=True))
    ours = keras.layers.Bidirectional(
        gk.GRU(H, reset_after=reset_after, return_sequences=True, return_state=True))
    sync(theirs, ours, (B, T, F))
    assert type(ours.backward_layer) is gk.GRU and ours.backward_layer.go_backwards
    x = torch.randn(B, T, F, generator=g)
    m = holes_mask(B, T, g) if masked else None
    want, got = as_list(theirs(x, mask=m)), as_list(ours(x, mask=m))
    assert_same(got, want, "Bidirectional")
    for a, e in zip(grads_of(ours, got), grads_of(theirs, want)):
        assert_close_rel(a, e, RTOL, "gradient")


@pytest.mark.parametrize("wrapper", ["keras.layers.RNN", "gru_cuda.keras.RNN"])
@pytest.mark.parametrize("reset_after", [True, False])
def test_gru_cell_in_rnn_matches_keras(wrapper, reset_after):
    B, T, F, H = 3, 5, 4, 3
    g = torch.Generator().manual_seed(4)
    rnn = keras.layers.RNN if wrapper.startswith("keras") else gk.RNN
    theirs = keras.layers.RNN(keras.layers.GRUCell(H, reset_after=reset_after),
                              return_sequences=True, go_backwards=True)
    ours = rnn(gk.GRUCell(H, reset_after=reset_after), return_sequences=True,
               go_backwards=True)
    sync(theirs, ours, (B, T, F))
    x, m = torch.randn(B, T, F, generator=g), holes_mask(B, T, g)
    want, got = as_list(theirs(x, mask=m)), as_list(ours(x, mask=m))
    assert_same(got, want, wrapper)
    for a, e in zip(grads_of(ours, got), grads_of(theirs, want)):
        assert_close_rel(a, e, RTOL, "gradient")


def test_rnn_runs_one_fused_call_over_a_gru_cell(monkeypatch):
    """gru_cuda.keras.RNN over a GRU cell calls the fused op once, not once per step; over
    another cell it leaves the loop to Keras."""
    from gru_cuda.keras import _fused
    calls = []
    real = _fused.functional.gru
    monkeypatch.setattr(_fused.functional, "gru", lambda *a, **k: calls.append(1) or real(*a, **k))
    x = np.random.rand(2, 7, 3).astype("float32")
    gk.RNN(keras.layers.GRUCell(4))(x)
    assert len(calls) == 1
    gk.RNN(keras.layers.SimpleRNNCell(4))(x)
    assert len(calls) == 1


def test_stateful_matches_keras():
    B, T, F, H = 2, 4, 3, 5
    theirs, ours = pair("GRU", H, stateful=True)
    sync(theirs, ours, (B, T, F))
    for _ in range(3):  # the state carries from call to call
        x = np.random.rand(B, T, F).astype("float32")
        assert_same([ours(x)], [theirs(x)], "stateful")
    ours.reset_state()
    theirs.reset_state()
    x = np.random.rand(B, T, F).astype("float32")
    assert_same([ours(x)], [theirs(x)], "after reset_state")


@pytest.mark.parametrize("implementation", [None, 1])
def test_dropout_in_training_matches_keras(implementation):
    """Same seed, same masks: Keras' dropout and recurrent dropout, reproduced exactly."""
    B, T, F, H = 4, 5, 3, 6
    kw = dict(dropout=0.3, recurrent_dropout=0.0 if implementation is None else 0.4, seed=11,
              return_sequences=True, reset_after=False)
    if implementation is not None:
        kw["implementation"] = implementation
    theirs, ours = pair("GRU", H, **kw)
    sync(theirs, ours, (B, T, F))
    x = np.random.rand(B, T, F).astype("float32")
    for _ in range(2):  # fresh masks per call, the same in both
        want, got = theirs(x, training=True), ours(x, training=True)
        assert_same([got], [want], "training")
    assert_same([ours(x)], [theirs(x)], "inference")
    assert not np.allclose(np_of(ours(x, training=True)), np_of(ours(x)))


# --- where Keras users put it ----------------------------------------------------------------

def _seq_model(gru_cls, vocab=20, T=8, masking="embedding"):
    keras.utils.set_random_seed(5)
    layers = [keras.Input((T,), dtype="int32") if masking == "embedding"
              else keras.Input((T, 3))]
    if masking == "embedding":
        layers.append(keras.layers.Embedding(vocab, 4, mask_zero=True))
    else:
        layers.append(keras.layers.Masking(0.0))
    layers += [gru_cls(6, reset_after=False, dropout=0.2, recurrent_dropout=0.2, seed=9,
                       kernel_regularizer=keras.regularizers.L2(1e-3),
                       recurrent_constraint="non_neg", return_sequences=True),
               gru_cls(5, activation="relu", kernel_regularizer="l1"),
               keras.layers.Dense(1)]
    model = keras.Sequential(layers)
    model.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
    return model


@pytest.mark.parametrize("masking", ["embedding", "masking"])
def test_fit_loss_history_matches_keras(masking):
    rng = np.random.default_rng(0)
    N, T = 24, 8
    if masking == "embedding":
        x = rng.integers(1, 20, size=(N, T)).astype("int32")
        x[rng.random((N, T)) < 0.3] = 0  # padding with holes, not only at the end
    else:
        x = rng.normal(size=(N, T, 3)).astype("float32")
        x[rng.random((N, T)) < 0.3] = 0.0
    y = rng.normal(size=(N, 1)).astype("float32")
    theirs = _seq_model(keras.layers.GRU, masking=masking)
    ours = _seq_model(gk.GRU, masking=masking)
    ours.set_weights(theirs.get_weights())
    hist = {}
    for name, model in (("keras", theirs), ("ours", ours)):
        h = model.fit(x, y, epochs=3, batch_size=8, shuffle=False, verbose=0)
        hist[name] = np.array(h.history["loss"])
    assert hist["ours"][-1] < hist["ours"][0]  # it trains
    np.testing.assert_allclose(hist["ours"], hist["keras"], rtol=1e-5)
    # regularizers reached the loss and the constraint the weights, as in Keras
    assert len(ours.losses) == len(theirs.losses) == 2
    assert (np_of(ours.layers[1].cell.recurrent_kernel) >= 0).all()
    for a, b in zip(ours.get_weights(), theirs.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_functional_model_and_keras_file_round_trip(tmp_path):
    inp = keras.Input((6, 3))
    seq, state = gk.GRU(4, return_sequences=True, return_state=True,
                        kernel_initializer=keras.initializers.GlorotNormal(seed=1),
                        bias_constraint=keras.constraints.MaxNorm(2.0))(inp)
    bi = keras.layers.Bidirectional(gk.GRU(3, reset_after=False))(seq)
    cell = gk.RNN(gk.GRUCell(2, activation="mish"))(seq)
    out = keras.layers.Concatenate()([bi, state, cell])
    model = keras.Model(inp, out)
    x = np.random.rand(2, 6, 3).astype("float32")
    want = np_of(model(x))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    kinds = {type(layer).__name__: type(layer) for layer in loaded.layers}
    assert kinds["GRU"] is gk.GRU and kinds["RNN"] is gk.RNN
    assert type(loaded.get_layer(index=2).forward_layer) is gk.GRU
    np.testing.assert_array_equal(np_of(loaded(x)), want)


def test_mixed_bfloat16_matches_keras():
    B, T, F, H = 4, 6, 5, 8
    try:
        keras.mixed_precision.set_global_policy("mixed_bfloat16")
        theirs, ours = pair("GRU", H, reset_after=False, return_sequences=True)
        sync(theirs, ours, (B, T, F))
        x = np.random.rand(B, T, F).astype("float32")
        want, got = theirs(x), ours(x)
        assert got.dtype == want.dtype == torch.bfloat16
        assert ours.cell.kernel.dtype == "float32"
        assert_close_rel(got, want, 3e-2, "mixed_bfloat16 output")
        gw = grads_of(ours, [got])
        assert all(t.dtype == torch.float32 for t in gw)
        for a, e in zip(gw, grads_of(theirs, [want])):
            assert_close_rel(a, e, 6e-2, "mixed_bfloat16 gradient")
    finally:
        keras.mixed_precision.set_global_policy("float32")
