"""ONNX export: `torch.onnx.export` of gru_cuda models, checked by onnx.checker and run by
ONNX Runtime (CPU) against gru_cuda itself, at two batch sizes and two sequence lengths
from one export with dynamic batch and time. Outputs agree to 1e-5 relative to the output's
scale (tests/compare.py), the float32 rounding of two summation orders."""
import numpy as np
import pytest
import torch
from torch import nn

import gru_cuda
from compare import assert_close_rel
from gru_cuda import functional

_NEED = "ONNX export tests need onnx, onnxruntime and onnxscript (pip install '.[test]')"
onnx = pytest.importorskip("onnx", reason=_NEED)
ort = pytest.importorskip("onnxruntime", reason=_NEED)
pytest.importorskip("onnxscript", reason=_NEED)

SIZES = ((3, 5), (2, 9))  # (batch, timesteps): one export serves both
F, H = 4, 6


def _mask(B, T, holes=False):
    """Right-padded rows of lengths T, T-2, 0, 1, ... (a row with no valid step included);
    with `holes`, row 0 gets masked steps in the middle and row 1 a masked first step, so
    that neither is a sequence length (the other rows stay right-padded)."""
    lens = [T, T - 2, 0, 1][:B] + [T] * max(0, B - 4)
    mask = torch.arange(T)[None, :] < torch.tensor(lens)[:, None]
    if holes:
        mask[0, 1] = mask[0, T - 2] = False
        mask[1, 0] = False
    return mask


def _export(model, args, path, dynamo=True):
    """Exports `model(*args)` with dynamic batch (axis 0) and time (axis 1 of 3-D inputs and
    masks); returns the loaded, checked ONNX model and an ONNX Runtime session."""
    if dynamo:
        batch, time = torch.export.Dim("batch"), torch.export.Dim("time")
        shapes = tuple({0: batch, 1: time} if a.dim() >= 2 and a.shape[1] != H else {0: batch}
                       for a in args)
        torch.onnx.export(model, tuple(args), str(path), dynamic_shapes=shapes)
    else:
        names = [f"in{i}" for i in range(len(args))]
        axes = {n: ({0: "batch", 1: "time"} if a.dim() >= 2 and a.shape[1] != H else {0: "batch"})
                for n, a in zip(names, args)}
        torch.onnx.export(model, tuple(args), str(path), dynamo=False, input_names=names,
                          dynamic_axes=axes)
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return proto, sess


def _run(sess, args):
    names = [i.name for i in sess.get_inputs()]
    assert len(names) == len(args)
    return sess.run(None, {n: a.numpy() for n, a in zip(names, args)})


def _flat(out):
    return [t.detach().numpy() for t in (out if isinstance(out, (tuple, list)) else (out,))]


def _op_types(proto):
    return [n.op_type for n in proto.graph.node]


def _check(model, make_args, tmp_path, gru_nodes, dynamo=True):
    """Export once at the first size; compare ONNX Runtime to gru_cuda at every size."""
    model.eval()
    torch.manual_seed(0)
    proto, sess = _export(model, make_args(*SIZES[0]), tmp_path / "m.onnx", dynamo)
    assert _op_types(proto).count("GRU") == gru_nodes, _op_types(proto)
    for B, T in SIZES:
        args = make_args(B, T)
        with torch.no_grad():
            expected = _flat(model(*args))
        got = _run(sess, args)
        assert len(got) == len(expected)
        for g, e in zip(got, expected):
            assert g.shape == e.shape
            assert_close_rel(torch.from_numpy(g), torch.from_numpy(e), 1e-5)
    return proto


def _x(B, T):
    return torch.randn(B, T, F)


def _layer(**kw):
    layer = gru_cuda.GRU(H, return_sequences=True, return_state=True, **kw)
    layer.build((None, None, F))
    with torch.no_grad():  # non-zero biases, so that a bias-layout mistake shows
        for p in layer.parameters():
            p.uniform_(-0.5, 0.5)
    return layer


def _gru_attrs(proto):
    return [{a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
            for n in proto.graph.node if n.op_type == "GRU"]


class _Several(nn.Module):
    """Several layers on the same inputs, so that one export checks several configurations;
    `inputs` says which forward arguments each layer takes."""

    def __init__(self, layers, inputs="x"):
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.inputs = inputs

    def forward(self, x, extra=None):
        outs = []
        for layer in self.layers:
            if self.inputs == "x":
                out = layer(x)
            elif self.inputs == "mask":
                out = layer(x, mask=extra)
            else:
                out = layer(x, initial_state=extra)
            outs.extend(out if isinstance(out, (tuple, list)) else (out,))
        return tuple(outs)


LAYER_CONFIGS = [
    {},
    {"reset_after": False},
    {"use_bias": False},
    {"go_backwards": True},
    {"activation": "relu", "recurrent_activation": "hard_sigmoid"},
    {"activation": "elu", "recurrent_activation": "softsign", "reset_after": False},
    {"activation": "softplus", "recurrent_activation": "sigmoid", "go_backwards": True},
    {"activation": "linear", "recurrent_activation": "tanh"},
    {"activation": "hard_sigmoid", "recurrent_activation": "hard_sigmoid"},
]


def test_gru_layers_are_one_gru_node_each(tmp_path):
    model = _Several([_layer(**kw) for kw in LAYER_CONFIGS])
    proto = _check(model, lambda B, T: (_x(B, T),), tmp_path, gru_nodes=len(LAYER_CONFIGS))
    attrs = _gru_attrs(proto)
    assert sorted((a["linear_before_reset"], a["direction"]) for a in attrs) == sorted(
        (int(kw.get("reset_after", True)), b"reverse" if kw.get("go_backwards") else b"forward")
        for kw in LAYER_CONFIGS)
    # Keras 3's hard_sigmoid is clip(x / 6 + 0.5, 0, 1): ONNX HardSigmoid(1/6, 0.5).
    hard = [a for a in attrs if a["activations"] == [b"HardSigmoid", b"HardSigmoid"]]
    assert len(hard) == 1
    np.testing.assert_allclose(hard[0]["activation_alpha"], [1 / 6, 1 / 6], rtol=1e-6)
    np.testing.assert_allclose(hard[0]["activation_beta"], [0.5, 0.5])


MASK_CONFIGS = [{}, {"zero_output_for_mask": True}, {"go_backwards": True},
                {"go_backwards": True, "zero_output_for_mask": True, "reset_after": False}]


@pytest.fixture(scope="module")
def masked_export(tmp_path_factory):
    model = _Several([_layer(**kw) for kw in MASK_CONFIGS], inputs="mask").eval()
    path = tmp_path_factory.mktemp("masked") / "m.onnx"
    torch.manual_seed(0)
    proto, sess = _export(model, (_x(3, 5), _mask(3, 5)), path)
    return model, proto, sess


def test_right_padded_mask_is_sequence_lens(masked_export):
    model, proto, sess = masked_export
    grus = [n for n in proto.graph.node if n.op_type == "GRU"]
    assert len(grus) == len(MASK_CONFIGS)
    assert all(len(n.input) > 4 and n.input[4] for n in grus), "the mask must be sequence_lens"
    for B, T in SIZES:
        args = (_x(B, T), _mask(B, T))
        with torch.no_grad():
            expected = _flat(model(*args))
        for g, e in zip(_run(sess, args), expected):
            assert_close_rel(torch.from_numpy(g), torch.from_numpy(e), 1e-5)


def test_mask_with_holes_matches(masked_export):
    # Rows with holes, a fully-masked row and right-padded rows in one batch: outputs and
    # final states of every configuration match gru_cuda, from the same export.
    model, _, sess = masked_export
    for B, T in SIZES:
        args = (_x(B, T), _mask(B, T, holes=True))
        with torch.no_grad():
            expected = _flat(model(*args))
        for g, e in zip(_run(sess, args), expected):
            assert_close_rel(torch.from_numpy(g), torch.from_numpy(e), 1e-5)


class _Functional(nn.Module):
    def __init__(self):
        super().__init__()
        self.kernel = nn.Parameter(torch.randn(F, 3 * H) * 0.5)
        self.recurrent_kernel = nn.Parameter(torch.randn(H, 3 * H) * 0.5)
        self.bias = nn.Parameter(torch.randn(3 * H) * 0.5)

    def forward(self, x, initial_state):
        return functional.gru(x.transpose(0, 1), self.kernel, self.recurrent_kernel, self.bias,
                              initial_state, reset_after=False, time_major=True,
                              go_backwards=True)


def test_initial_state_rnn_functional_dropout(tmp_path):
    rnn = gru_cuda.RNN(gru_cuda.GRUCell(H, activation="relu"), return_state=True)
    rnn(_x(2, 3))  # builds the cell
    dropped = _layer(dropout=0.5, recurrent_dropout=0.3)  # dropout is off in inference
    model = _Several([_layer(), rnn, _Functional(), dropped], inputs="state")
    _check(model, lambda B, T: (_x(B, T), torch.randn(B, H)), tmp_path, gru_nodes=4)


def _bidirectional(merge_mode, backward_layer=None, **kw):
    bi = gru_cuda.Bidirectional(_layer(**kw), merge_mode=merge_mode,
                                backward_layer=backward_layer)
    bi(_x(2, 3))  # builds the backward copy
    with torch.no_grad():
        for p in bi.parameters():
            p.uniform_(-0.5, 0.5)
    return bi


def test_bidirectional_is_one_node(tmp_path):
    # Every merge mode, both conventions, a mask with holes and return_state: one
    # bidirectional GRU node per layer. A backward layer with another activation cannot share
    # the node: that layer stays a forward and a reverse node.
    layers = [_bidirectional(mode, reset_after=mode != "sum")
              for mode in ("concat", "sum", "mul", "ave", None)]
    other = _layer(go_backwards=True, activation="relu")
    layers.append(_bidirectional("concat", backward_layer=other))
    proto = _check(_Several(layers, inputs="mask"),
                   lambda B, T: (_x(B, T), _mask(B, T, holes=True)), tmp_path, gru_nodes=7)
    assert sorted(a["direction"] for a in _gru_attrs(proto)) == (
        [b"bidirectional"] * 5 + [b"forward", b"reverse"])


def test_torchscript_exporter(tmp_path):
    configs = [{"activation": "hard_sigmoid"}, {"go_backwards": True, "reset_after": False}]
    layers = [_layer(**kw) for kw in configs] + [_bidirectional("ave", reset_after=False)]
    proto = _check(_Several(layers, inputs="mask"),
                   lambda B, T: (_x(B, T), _mask(B, T, holes=True)), tmp_path, gru_nodes=3,
                   dynamo=False)
    assert b"bidirectional" in [a["direction"] for a in _gru_attrs(proto)]


@pytest.mark.parametrize("option,value,dynamo", [
    ("activation", "gelu", True), ("recurrent_activation", "selu", True),
    ("activation", "swish", False), ("activation", "exponential", False)])
def test_unsupported_activation_fails_at_export(option, value, dynamo, tmp_path):
    layer = _layer(**{option: value}).eval()
    with pytest.raises(Exception) as info:
        _export(layer, (_x(2, 5),), tmp_path / "m.onnx", dynamo)
    chain, e = [], info.value
    while e is not None:
        chain.append(str(e))
        e = e.__cause__ or e.__context__
    text = "\n".join(chain)
    canonical = {"swish": "silu"}.get(value, value)
    assert f"{option}={canonical!r} has no ONNX GRU equivalent" in text, text
