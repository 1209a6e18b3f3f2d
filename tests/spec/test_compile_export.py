"""torch.compile, torch.export and CUDA graphs over the fused GRU.

* torch.compile(fullgraph=True) of gru_cuda.functional.gru, forward and backward, both reset
  conventions, with masks and dropout masks: one graph, no graph break; the forward graph holds
  gru_cuda::gru_forward and the backward graph gru_cuda::gru_backward (the fused backward, not
  a decomposition); results equal eager. Also with dynamic shapes (no recompilation for a new
  batch size / sequence length), under autocast, and with the default inductor backend.
* The same for gru_cuda.layers.GRU.
* torch.export.export of a module holding GRU parameters (static and dynamic batch / time),
  of the GRU layer; the exported program runs, matches eager (values and gradients) and
  survives torch.export.save / load.
* Capture of forward + backward in a CUDA graph, replayed on new data (skips without CUDA).
"""
from __future__ import annotations

import io

import pytest
import torch
from functorch.compile import make_boxed_func
from torch._dynamo.backends.common import aot_autograd

from gru_cuda import GRU
from gru_cuda.functional import gru

from markers import requires_cuda
from problems import ARG_NAMES, MASK_NAMES, problem_from_config

FWD_OP = torch.ops.gru_cuda.gru_forward.default
BWD_OP = torch.ops.gru_cuda.gru_backward.default


class Recorder:
    """A torch.compile backend (AOT autograd, eager execution) that keeps the forward and
    backward graphs it is given and counts the Dynamo graphs."""

    def __init__(self):
        self.dynamo_graphs = 0
        self.fw, self.bw = [], []

        def fw(gm, _):
            self.fw.append(gm)
            return make_boxed_func(gm.forward)

        def bw(gm, _):
            self.bw.append(gm)
            return make_boxed_func(gm.forward)

        self._aot = aot_autograd(fw_compiler=fw, bw_compiler=bw)

    def __call__(self, gm, example_inputs):
        self.dynamo_graphs += 1
        return self._aot(gm, example_inputs)

    @staticmethod
    def has(graphs, op):
        return any(n.op == "call_function" and n.target is op
                   for gm in graphs for n in gm.graph.nodes)


CONFIGS = {
    "reset_after-plain": dict(reset_after=True),
    "reset_before-mask-dropout-backwards": dict(
        reset_after=False, mask=True, input_dropout="shared", recurrent_dropout=True,
        go_backwards=True, zero_output_for_mask=True),
    "reset_after-mask-pergate-time_major": dict(
        reset_after=True, mask=True, input_dropout="per_gate", recurrent_dropout=True,
        time_major=True),
    "reset_before-nobias-initial_state": dict(reset_after=False, bias=False, initial_state=True,
                                              activation="gelu",
                                              recurrent_activation="hard_sigmoid"),
}


def _problem(cfg, B=3, T=5, F=4, H=6, dtype=torch.float64, device="cpu", seed=0):
    """(tensors by argument name, masks, options) for one configuration."""
    args, kw = problem_from_config(cfg, B=B, T=T, F=F, H=H, initial_state=False, dtype=dtype,
                                   device=device, scale=0.5, bias_scale=0.3, keep=0.8,
                                   generator=torch.Generator().manual_seed(seed))
    masks = {k: kw.pop(k) for k in MASK_NAMES if k in kw}
    return dict(zip(ARG_NAMES, args)), masks, kw


def _loss_fn(options):
    def f(x, kernel, recurrent_kernel, bias, initial_state, masks):
        out, state = gru(x, kernel, recurrent_kernel, bias, initial_state, **masks, **options)
        # a non-trivial cotangent for both results
        return (out * out).sum() + (state.sin()).sum(), out, state
    return f


def _grads(fn, tensors, masks):
    leaves = {k: (None if v is None else v.detach().clone().requires_grad_())
              for k, v in tensors.items()}
    loss, out, state = fn(leaves["x"], leaves["kernel"], leaves["recurrent_kernel"],
                          leaves["bias"], leaves["initial_state"], masks)
    loss.backward()
    grads = {k: v.grad for k, v in leaves.items() if v is not None}
    return out.detach(), state.detach(), grads


@pytest.mark.parametrize("name", list(CONFIGS))
def test_compile_fullgraph_forward_backward(name):
    torch._dynamo.reset()
    tensors, masks, options = _problem(CONFIGS[name])
    f = _loss_fn(options)
    rec = Recorder()
    compiled = torch.compile(f, fullgraph=True, backend=rec)
    out_c, state_c, grads_c = _grads(compiled, tensors, masks)
    out_e, state_e, grads_e = _grads(f, tensors, masks)
    assert rec.dynamo_graphs == 1
    assert rec.has(rec.fw, FWD_OP), "gru_forward missing from the compiled forward graph"
    assert rec.has(rec.bw, BWD_OP), "the fused gru_backward missing from the backward graph"
    torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(state_c, state_e, rtol=1e-12, atol=1e-12)
    assert grads_c.keys() == grads_e.keys()
    for k in grads_e:
        torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-12, atol=1e-12, msg=k)


def test_compile_inference_saves_nothing():
    """Under no_grad the compiled graph calls the op with save_for_backward=False."""
    torch._dynamo.reset()
    tensors, masks, options = _problem(CONFIGS["reset_after-plain"])
    rec = Recorder()
    compiled = torch.compile(_loss_fn(options), fullgraph=True, backend=rec)
    with torch.no_grad():
        loss_c, _, _ = compiled(*tensors.values(), masks)
        loss_e, _, _ = _loss_fn(options)(*tensors.values(), masks)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-12, atol=0)
    calls = [n for gm in rec.fw for n in gm.graph.nodes if n.target is FWD_OP]
    assert calls and all(n.args[-1] is False for n in calls)


def test_compile_dynamic_shapes_do_not_recompile():
    torch._dynamo.reset()
    cfg = CONFIGS["reset_before-mask-dropout-backwards"]
    rec = Recorder()
    f = _loss_fn(_problem(cfg)[2])
    compiled = torch.compile(f, fullgraph=True, backend=rec, dynamic=True)
    # The first sizes differ from every other size in the problem (3 gates, F=4, H=6): with
    # equal sizes Dynamo's duck shaping would tie B (or T) to that constant and specialise it.
    for B, T in ((2, 5), (7, 9), (4, 3)):
        tensors, masks, _ = _problem(cfg, B=B, T=T, seed=B)
        out_c, state_c, grads_c = _grads(compiled, tensors, masks)
        out_e, state_e, grads_e = _grads(f, tensors, masks)
        torch.testing.assert_close(out_c, out_e, rtol=1e-12, atol=1e-12)
        for k in grads_e:
            torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-12, atol=1e-12, msg=k)
    assert rec.dynamo_graphs == 1, "a new batch size or sequence length recompiled"


def test_compile_inductor_float32():
    """The default backend (inductor) end to end, forward and backward."""
    torch._dynamo.reset()
    tensors, masks, options = _problem(CONFIGS["reset_after-mask-pergate-time_major"],
                                       dtype=torch.float32)
    f = _loss_fn(options)
    out_c, state_c, grads_c = _grads(torch.compile(f, fullgraph=True), tensors, masks)
    out_e, state_e, grads_e = _grads(f, tensors, masks)
    torch.testing.assert_close(out_c, out_e, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(state_c, state_e, rtol=1e-5, atol=1e-6)
    for k in grads_e:
        torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-5, atol=1e-5, msg=k)


def test_compile_under_autocast():
    """autocast inside the compiled region: one graph, bf16 op, float32 parameter gradients."""
    torch._dynamo.reset()
    tensors, masks, options = _problem(CONFIGS["reset_after-plain"], dtype=torch.float32)

    def f(x, kernel, recurrent_kernel, bias, initial_state, masks):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out, state = gru(x, kernel, recurrent_kernel, bias, initial_state, **masks, **options)
        assert out.dtype == torch.bfloat16
        return out.float().square().sum() + state.float().sin().sum(), out, state

    rec = Recorder()
    out_c, _, grads_c = _grads(torch.compile(f, fullgraph=True, backend=rec), tensors, masks)
    out_e, _, grads_e = _grads(f, tensors, masks)
    assert rec.dynamo_graphs == 1 and rec.has(rec.bw, BWD_OP)
    assert out_c.dtype == torch.bfloat16
    torch.testing.assert_close(out_c, out_e, rtol=0, atol=0)
    for k in grads_e:
        assert grads_c[k].dtype == torch.float32
        torch.testing.assert_close(grads_c[k], grads_e[k], rtol=1e-6, atol=1e-6, msg=k)


# ---- the layer --------------------------------------------------------------------------------

def _layer(**kw):
    torch.manual_seed(0)
    return GRU(6, return_sequences=True, return_state=True, input_size=4, **kw)


@pytest.mark.parametrize("reset_after", [True, False])
def test_compile_layer_fullgraph(reset_after):
    torch._dynamo.reset()
    layer = _layer(reset_after=reset_after).double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    mask = torch.rand(3, 5) > 0.3
    rec = Recorder()
    compiled = torch.compile(layer, fullgraph=True, backend=rec)

    def run(module):
        layer.zero_grad()
        out, state = module(x, mask=mask)
        (out.square().sum() + state.sin().sum()).backward()
        return out.detach(), state.detach(), [p.grad.clone() for p in layer.parameters()]

    got, want = run(compiled), run(layer)
    assert rec.dynamo_graphs == 1 and rec.has(rec.fw, FWD_OP) and rec.has(rec.bw, BWD_OP)
    for g, w in zip(got[:2] + tuple(got[2]), want[:2] + tuple(want[2])):
        torch.testing.assert_close(g, w, rtol=1e-12, atol=1e-12)


def test_compile_layer_training_dropout():
    """Dropout masks drawn from the global generator inside the compiled region: no break."""
    torch._dynamo.reset()
    layer = _layer(dropout=0.2, recurrent_dropout=0.3).train()
    rec = Recorder()
    compiled = torch.compile(layer, fullgraph=True, backend=rec)
    out, state = compiled(torch.randn(3, 5, 4))
    (out.sum() + state.sum()).backward()
    assert rec.dynamo_graphs == 1 and rec.has(rec.bw, BWD_OP)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.xfail(reason="GRU(seed=...) creates a torch.Generator inside forward, which "
                          "torch.compile cannot trace (_GRUWeights._generator); reported",
                   strict=False)
def test_compile_layer_training_dropout_with_seed():
    torch._dynamo.reset()
    layer = _layer(dropout=0.2, recurrent_dropout=0.3, seed=7).train()
    compiled = torch.compile(layer, fullgraph=True, backend=Recorder())
    out, state = compiled(torch.randn(3, 5, 4))
    (out.sum() + state.sum()).backward()


# ---- torch.export -----------------------------------------------------------------------------

class TinyGRUModel(torch.nn.Module):
    """A model holding GRU parameters and calling the functional GRU."""

    def __init__(self, F=4, H=6, reset_after=True, go_backwards=False):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.kernel = torch.nn.Parameter(torch.randn(F, 3 * H, generator=g) * 0.5)
        self.recurrent_kernel = torch.nn.Parameter(torch.randn(H, 3 * H, generator=g) * 0.5)
        self.bias = torch.nn.Parameter(torch.randn(*((2, 3 * H) if reset_after else (3 * H,)),
                                                   generator=g) * 0.3)
        self.head = torch.nn.Linear(H, 2)
        self.reset_after, self.go_backwards = reset_after, go_backwards

    def forward(self, x, mask):
        out, state = gru(x, self.kernel, self.recurrent_kernel, self.bias, mask=mask,
                         reset_after=self.reset_after, go_backwards=self.go_backwards)
        return self.head(out), state


def _export_inputs(B=3, T=5, F=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, T, F, generator=g), torch.rand(B, T, generator=g) > 0.3


def _assert_program_matches(ep, model, inputs):
    got = ep.module()(*inputs)
    want = model(*inputs)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


def _holds_op(ep, op):
    return any(n.op == "call_function" and n.target is op for n in ep.graph.nodes)


@pytest.mark.parametrize("reset_after,go_backwards", [(True, False), (False, True)])
def test_export_functional_model(reset_after, go_backwards):
    model = TinyGRUModel(reset_after=reset_after, go_backwards=go_backwards)
    inputs = _export_inputs()
    ep = torch.export.export(model, inputs)
    assert _holds_op(ep, FWD_OP)
    _assert_program_matches(ep, model, inputs)
    _assert_program_matches(ep, model, _export_inputs(seed=1))  # new data, same shapes
    # Core-ATen decomposition keeps the custom op.
    assert _holds_op(ep.run_decompositions(), FWD_OP)


def test_export_dynamic_batch_and_time():
    model = TinyGRUModel()
    B, T = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    ep = torch.export.export(model, _export_inputs(),
                             dynamic_shapes={"x": {0: B, 1: T}, "mask": {0: B, 1: T}})
    for b, t in ((1, 1), (7, 11), (2, 30)):
        _assert_program_matches(ep, model, _export_inputs(B=b, T=t, seed=b + t))


def test_exported_program_gradients_match_eager():
    """The exported module is differentiable through the registered fused backward."""
    model = TinyGRUModel(reset_after=False)
    inputs = _export_inputs()
    ep = torch.export.export(model, inputs)
    exported = ep.module()

    def grads(m):
        x = inputs[0].clone().requires_grad_()
        out, state = m(x, inputs[1])
        (out.square().sum() + state.sum()).backward()
        return x.grad

    torch.testing.assert_close(grads(exported), grads(model), rtol=1e-6, atol=1e-6)


def test_export_save_load_roundtrip():
    model = TinyGRUModel()
    inputs = _export_inputs()
    ep = torch.export.export(model, inputs)
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    loaded = torch.export.load(buf)
    assert _holds_op(loaded, FWD_OP)
    _assert_program_matches(loaded, model, _export_inputs(seed=4))


@pytest.mark.parametrize("reset_after", [True, False])
def test_export_layer(reset_after):
    layer = _layer(reset_after=reset_after).eval()

    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = layer

        def forward(self, x, mask):
            return self.gru(x, mask=mask)

    model = Model()
    inputs = _export_inputs()
    ep = torch.export.export(model, inputs)
    assert _holds_op(ep, FWD_OP)
    _assert_program_matches(ep, model, inputs)
    _assert_program_matches(ep, model, _export_inputs(seed=2))


def test_export_layer_dynamic_shapes():
    layer = _layer().eval()
    B, T = torch.export.Dim("batch", min=1), torch.export.Dim("time", min=1)
    ep = torch.export.export(layer, (torch.randn(3, 5, 4),), dynamic_shapes=({0: B, 1: T},))
    x = torch.randn(6, 9, 4)
    for g, w in zip(ep.module()(x), layer(x)):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-6)


# ---- CUDA graphs ------------------------------------------------------------------------------

@requires_cuda
@pytest.mark.parametrize("name", list(CONFIGS))
def test_cuda_graph_capture_forward_backward(name):
    """Forward + backward captured once, replayed on new data copied into the static inputs;
    each replay equals an eager run on that data."""
    cfg = CONFIGS[name]
    tensors, masks, options = _problem(cfg, dtype=torch.float32, device="cuda")
    static = {k: (None if v is None else v.clone().requires_grad_()) for k, v in tensors.items()}
    f = _loss_fn(options)

    def step():
        for v in static.values():
            if v is not None:
                v.grad = None
        loss, out, state = f(static["x"], static["kernel"], static["recurrent_kernel"],
                             static["bias"], static["initial_state"], masks)
        loss.backward()
        return out, state

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture (allocator, lazy init)
        for _ in range(3):
            step()
    torch.cuda.current_stream().wait_stream(side)
    for v in static.values():
        if v is not None:
            v.grad = None

    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        s_out, s_state = f(static["x"], static["kernel"], static["recurrent_kernel"],
                           static["bias"], static["initial_state"], masks)[1:]
        loss = (s_out * s_out).sum() + s_state.sin().sum()
        loss.backward()

    for seed in (1, 2):
        fresh, _, _ = _problem(cfg, dtype=torch.float32, device="cuda", seed=seed)
        with torch.no_grad():
            for k, v in fresh.items():
                if v is not None:
                    static[k].copy_(v)
        graph.replay()
        torch.cuda.synchronize()
        out_e, state_e, grads_e = _grads(f, fresh, masks)
        torch.testing.assert_close(s_out.detach(), out_e, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(s_state.detach(), state_e, rtol=1e-5, atol=1e-5)
        for k, g in grads_e.items():
            torch.testing.assert_close(static[k].grad, g, rtol=1e-4, atol=1e-4, msg=k)
