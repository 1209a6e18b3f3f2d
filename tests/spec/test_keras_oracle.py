"""Keras 3 itself as the oracle: `keras.layers.GRU` / `RNN(GRUCell)` / `Bidirectional` on the
torch backend (CPU) against the gru_cuda layers with the same weights, over random
configurations of every argument; outputs, states and weight gradients compared at 1e-5.
Dropout is compared in training by handing Keras the masks gru_cuda drew (Keras' cells take
cached masks), so the two must apply them identically.
"""
import os

os.environ.setdefault("KERAS_BACKEND", "torch")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # pragma: no cover - another backend was configured
    pytest.skip("the Keras oracle needs KERAS_BACKEND=torch", allow_module_level=True)
if tuple(int(v) for v in keras.__version__.split(".")[:2]) < (3, 8):  # pragma: no cover
    pytest.skip("Keras >= 3.8 needed (recurrent dropout semantics)", allow_module_level=True)

from gru_cuda import functional  # noqa: E402
from gru_cuda.layers import GRU, RNN, Bidirectional, GRUCell  # noqa: E402

TOL = 1e-5

# Keras' own NumPy 2 deprecation noise on every weight read.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning",
                                        "ignore:The object being serialized includes a `lambda`")

FUSED = ["tanh", "sigmoid", "hard_sigmoid", "relu", "linear", None, "softsign", "elu", "selu",
         "softplus", "silu", "swish", "gelu", "exponential"]
OTHER = ["relu6", "leaky_relu", "mish", "celu", "hard_silu", "hard_tanh", "log_sigmoid",
         "tanh_shrink", "soft_shrink", "hard_shrink", "sparse_plus", "sparse_sigmoid",
         "squareplus", "callable"]
GATES = ["sigmoid", "hard_sigmoid", "linear", "softsign", "tanh", "relu", "sparse_sigmoid",
         "callable"]


def act_pair(name):
    """(gru_cuda activation, Keras activation)."""
    if name == "callable":
        return (lambda t: 0.5 * torch.tanh(t) + 0.25), (lambda t: 0.5 * keras.ops.tanh(t) + 0.25)
    return name, name


def np_(t):
    return keras.ops.convert_to_numpy(t)


def as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def assert_allclose(actual, expected, what=""):
    a = actual.detach().cpu().numpy() if isinstance(actual, torch.Tensor) else np.asarray(actual)
    np.testing.assert_allclose(a, np.asarray(expected), atol=TOL, rtol=TOL, err_msg=what)


def random_config(rng):
    act = FUSED[rng.integers(len(FUSED))] if rng.random() < 0.6 else OTHER[rng.integers(len(OTHER))]
    cfg = dict(
        units=int(rng.integers(1, 6)),
        activation=act,
        recurrent_activation=GATES[rng.integers(len(GATES))],
        use_bias=bool(rng.random() < 0.7),
        reset_after=bool(rng.random() < 0.6),
        go_backwards=bool(rng.random() < 0.4),
        return_sequences=bool(rng.random() < 0.5),
        return_state=bool(rng.random() < 0.5),
        zero_output_for_mask=bool(rng.random() < 0.4),
        stateful=bool(rng.random() < 0.25),
        unroll=bool(rng.random() < 0.2),
        # inert in inference; present so that inference is checked to ignore them
        dropout=float(rng.choice([0.0, 0.3])),
        recurrent_dropout=float(rng.choice([0.0, 0.4])),
    )
    dims = dict(F=int(rng.integers(1, 5)), B=int(rng.integers(1, 4)), T=int(rng.integers(1, 7)),
                mask=bool(rng.random() < 0.5), initial_state=bool(rng.random() < 0.5),
                time_major=bool(rng.random() < 0.25))
    return cfg, dims


def make_pair(cfg, F, B, T, seed):
    """A gru_cuda GRU and a Keras GRU with the same (random) weights."""
    ours_act, keras_act = act_pair(cfg["activation"])
    ours_rec, keras_rec = act_pair(cfg["recurrent_activation"])
    common = {k: v for k, v in cfg.items() if k not in ("activation", "recurrent_activation")}
    keras_kwargs = dict(common)
    if cfg["go_backwards"]:
        keras_kwargs["unroll"] = False  # Keras' torch backend crashes on unroll+go_backwards+mask
    kl = keras.layers.GRU(activation=keras_act, recurrent_activation=keras_rec, **keras_kwargs)
    kl.build((B, T, F))
    ours = GRU(activation=ours_act, recurrent_activation=ours_rec, input_size=F, **common)
    rng = np.random.default_rng(seed)
    weights = [(rng.standard_normal(w.shape) * 0.4).astype(np.float32) for w in kl.get_weights()]
    kl.set_weights(weights)
    ours.set_weights(kl.get_weights())
    for a, b in zip(ours.get_weights(), kl.get_weights()):  # bit-exact exchange
        assert a.dtype == b.dtype and np.array_equal(a, b)
    return ours, kl


@pytest.mark.parametrize("case", range(48))
def test_gru_random_configuration(case):
    rng = np.random.default_rng(20240 + case)
    cfg, d = random_config(rng)
    F, B, T = d["F"], d["B"], d["T"]
    ours, kl = make_pair(cfg, F, B, T, seed=case)
    ours.eval()  # inference: dropout must not apply
    n_calls = 3 if cfg["stateful"] else 1
    for call in range(n_calls):
        x = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
        mask = rng.random((B, T)) < 0.7 if d["mask"] else None
        h0 = rng.uniform(-1, 1, (B, cfg["units"])).astype(np.float32) \
            if d["initial_state"] and call != 1 else None
        expected = as_list(kl(x, mask=mask, initial_state=None if h0 is None else [h0],
                              training=False))
        xt = torch.from_numpy(x)
        mt = None if mask is None else torch.from_numpy(mask)
        if d["time_major"]:
            layer = GRU.from_config({**ours.get_config(), "time_major": True})
            layer.load_state_dict(ours.state_dict())
            layer._states = ours._states
            layer.eval()
            got = as_list(layer(xt.transpose(0, 1), mask=None if mt is None else mt.T,
                                initial_state=None if h0 is None else torch.from_numpy(h0)))
            ours._states = layer._states
            if cfg["return_sequences"]:
                got[0] = got[0].transpose(0, 1)
        else:
            got = as_list(ours(xt, mask=mt,
                               initial_state=None if h0 is None else torch.from_numpy(h0)))
        assert len(got) == len(expected)
        for i, (g, e) in enumerate(zip(got, expected)):
            assert tuple(g.shape) == tuple(e.shape)
            assert_allclose(g, np_(e), f"call {call}, returned tensor {i}, config {cfg} {d}")
        if cfg["stateful"]:
            assert_allclose(ours.states[0], np_(kl.states[0]), f"stored state, call {call}")


@pytest.mark.parametrize("case", range(12))
def test_gru_gradients_match_keras(case):
    rng = np.random.default_rng(777 + case)
    cfg, d = random_config(rng)
    cfg.update(stateful=False, dropout=0.0, recurrent_dropout=0.0)
    F, B, T = d["F"], d["B"], d["T"]
    ours, kl = make_pair(cfg, F, B, T, seed=100 + case)
    x = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if d["mask"] else None
    h0 = rng.uniform(-1, 1, (B, cfg["units"])).astype(np.float32)
    k_out = as_list(kl(torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask),
                       initial_state=[torch.from_numpy(h0)]))
    o_out = as_list(ours(torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask),
                         initial_state=torch.from_numpy(h0)))
    cot = [torch.from_numpy(rng.standard_normal(tuple(t.shape)).astype(np.float32)) for t in o_out]
    sum((t * c).sum() for t, c in zip(k_out, cot)).backward()
    sum((t * c).sum() for t, c in zip(o_out, cot)).backward()
    k_vars = [kl.cell.kernel, kl.cell.recurrent_kernel]
    if cfg["use_bias"]:
        k_vars.append(kl.cell.bias)
    for name, p, v in zip(("kernel", "recurrent_kernel", "bias"), ours.weights, k_vars):
        expected = v.value.grad
        np.testing.assert_allclose(p.grad.numpy(), expected.numpy(), atol=1e-4, rtol=1e-4,
                                   err_msg=f"{name} gradient, config {cfg} {d}")


@pytest.mark.parametrize("case", range(10))
def test_dropout_in_training_matches_keras_given_the_same_masks(case, monkeypatch):
    rng = np.random.default_rng(4321 + case)
    cfg, d = random_config(rng)
    cfg.update(stateful=False, dropout=float(rng.choice([0.0, 0.3, 0.5])),
               recurrent_dropout=float(rng.choice([0.0, 0.25])))
    if cfg["dropout"] == 0 and cfg["recurrent_dropout"] == 0:
        cfg["dropout"] = 0.4
    F, B, T = d["F"], d["B"], d["T"]
    ours, kl = make_pair(cfg, F, B, T, seed=200 + case)
    seen = []
    real = functional.gru

    def spy(*args, **kwargs):
        seen.append((kwargs["input_dropout_mask"], kwargs["recurrent_dropout_mask"]))
        return real(*args, **kwargs)
    monkeypatch.setattr(functional, "gru", spy)
    x = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if d["mask"] else None
    mt = None if mask is None else torch.from_numpy(mask)
    got = as_list(ours(torch.from_numpy(x), mask=mt, training=True))
    in_mask, rec_mask = seen[-1]
    if in_mask is not None:
        kl.cell._dropout_mask = list(in_mask) if in_mask.dim() == 3 else in_mask
    if rec_mask is not None:
        kl.cell._recurrent_dropout_mask = list(rec_mask)
    expected = as_list(kl(x, mask=mask, training=True))
    for g, e in zip(got, expected):
        assert_allclose(g, np_(e), f"config {cfg} {d}")


@pytest.mark.parametrize("case", range(6))
def test_rnn_gru_cell_matches_keras(case):
    rng = np.random.default_rng(99 + case)
    cfg, d = random_config(rng)
    F, B, T = d["F"], d["B"], d["T"]
    cell_keys = ("units", "use_bias", "reset_after", "dropout", "recurrent_dropout")
    rnn_keys = ("return_sequences", "return_state", "go_backwards", "zero_output_for_mask")
    ours_act, keras_act = act_pair(cfg["activation"])
    kcell = keras.layers.GRUCell(activation=keras_act, **{k: cfg[k] for k in cell_keys})
    kl = keras.layers.RNN(kcell, **{k: cfg[k] for k in rnn_keys})
    kl.build((B, T, F))
    kl.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(np.float32)
                    for w in kl.get_weights()])
    ours = RNN(GRUCell(activation=ours_act, input_size=F, **{k: cfg[k] for k in cell_keys}),
               **{k: cfg[k] for k in rnn_keys})
    ours.set_weights(kl.get_weights())
    ours.eval()
    x = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if d["mask"] else None
    h0 = rng.uniform(-1, 1, (B, cfg["units"])).astype(np.float32)
    expected = as_list(kl(x, mask=mask, initial_state=[h0], training=False))
    got = as_list(ours(torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask),
                       initial_state=[torch.from_numpy(h0)]))
    for g, e in zip(got, expected):
        assert_allclose(g, np_(e), f"config {cfg} {d}")


@pytest.mark.parametrize("case", range(12))
def test_bidirectional_matches_keras(case):
    rng = np.random.default_rng(555 + case)
    cfg, d = random_config(rng)
    # zero_output_for_mask=False: Bidirectional must force it to return_sequences itself
    cfg.update(go_backwards=False, stateful=False, unroll=False, zero_output_for_mask=False,
               return_sequences=case % 2 == 0)
    d["mask"] = case % 3 != 2
    for key in ("activation", "recurrent_activation"):  # Keras re-creates the layer from its
        if cfg[key] == "callable":                       # config: lambdas don't survive that
            cfg[key] = "tanh"
    merge_mode = ["concat", "sum", "mul", "ave", None][case % 5]
    F, B, T = d["F"], d["B"], d["T"]
    ours_act, keras_act = act_pair(cfg["activation"])
    ours_rec, keras_rec = act_pair(cfg["recurrent_activation"])
    common = {k: v for k, v in cfg.items() if k not in ("activation", "recurrent_activation")}
    kb = keras.layers.Bidirectional(
        keras.layers.GRU(activation=keras_act, recurrent_activation=keras_rec, **common),
        merge_mode=merge_mode)
    kb.build((B, T, F))
    kb.set_weights([(rng.standard_normal(w.shape) * 0.4).astype(np.float32)
                    for w in kb.get_weights()])
    ours = Bidirectional(GRU(activation=ours_act, recurrent_activation=ours_rec, input_size=F,
                             **common), merge_mode=merge_mode)
    ours.set_weights(kb.get_weights())
    for a, b in zip(ours.get_weights(), kb.get_weights()):
        assert np.array_equal(a, b)
    ours.eval()
    x = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
    mask = rng.random((B, T)) < 0.7 if d["mask"] else None
    states = None
    if d["initial_state"]:
        states = [rng.uniform(-1, 1, (B, cfg["units"])).astype(np.float32) for _ in range(2)]
    expected = as_list(kb(x, mask=mask, initial_state=states, training=False))
    got = as_list(ours(torch.from_numpy(x), mask=None if mask is None else torch.from_numpy(mask),
                       initial_state=None if states is None else [torch.from_numpy(s)
                                                                   for s in states]))
    assert len(got) == len(expected)
    for g, e in zip(got, expected):
        assert_allclose(g, np_(e), f"merge_mode {merge_mode}, config {cfg} {d}")


@pytest.mark.parametrize("role", ["activation", "recurrent_activation"])
def test_every_activation_name_matches_keras(role):
    names = FUSED + OTHER
    rng = np.random.default_rng(31 if role == "activation" else 32)
    for name in names:
        cfg, d = random_config(rng)
        cfg.update(stateful=False, return_sequences=True, return_state=True)
        cfg[role] = name
        F, B, T = d["F"], d["B"], d["T"]
        ours, kl = make_pair(cfg, F, B, T, seed=7)
        ours.eval()
        x = rng.uniform(-1, 1, (B, T, F)).astype(np.float32)
        mask = rng.random((B, T)) < 0.7 if d["mask"] else None
        expected = as_list(kl(x, mask=mask, training=False))
        got = as_list(ours(torch.from_numpy(x),
                           mask=None if mask is None else torch.from_numpy(mask)))
        for g, e in zip(got, expected):
            assert_allclose(g, np_(e), f"{role}={name}, config {cfg} {d}")


def test_weights_round_trip_from_keras_initialisation_is_bit_exact():
    for kwargs in ({}, {"reset_after": False}, {"use_bias": False}):
        kl = keras.layers.GRU(7, **kwargs)
        kl.build((2, 3, 5))
        ours = GRU(7, **kwargs)
        ours.set_weights(kl.get_weights())  # builds from the kernel shape
        for a, b in zip(ours.get_weights(), kl.get_weights()):
            assert a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
        assert ours.count_params() == kl.count_params()


def test_regularization_losses_match_keras():
    B, T, F, U = 3, 4, 2, 5
    kwargs = dict(kernel_regularizer="l2", recurrent_regularizer="l1",
                  bias_regularizer=keras.regularizers.L1L2(0.01, 0.02),
                  activity_regularizer="l2", return_state=True, return_sequences=True)
    kl = keras.layers.GRU(U, **kwargs)
    kl.build((B, T, F))
    from gru_cuda import regularizers
    ours = GRU(U, input_size=F, **{**kwargs, "bias_regularizer": regularizers.L1L2(0.01, 0.02)})
    rng = np.random.default_rng(5)
    kl.set_weights([rng.standard_normal(w.shape).astype(np.float32) for w in kl.get_weights()])
    ours.set_weights(kl.get_weights())
    assert len(ours.losses) == len(kl.losses) == 3
    x = rng.standard_normal((B, T, F)).astype(np.float32)
    kl(x)
    ours(torch.from_numpy(x))
    expected = [float(np_(v)) for v in kl.losses]
    got = [float(v.detach()) for v in ours.losses]
    assert len(got) == len(expected) == 5  # 2 activity (output, state) + 3 weights
    np.testing.assert_allclose(got, expected, rtol=1e-5)
