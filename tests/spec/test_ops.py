"""The registered ops themselves: gradcheck, opcheck (schema, fake kernel, autograd
registration), torch.compile, and the direct-call contract."""
import pytest
import torch

import gru_cuda
from problems import make_problem
from gru_cuda import activations, functional

OPTION_SETS = [
    dict(reset_after=True),
    dict(reset_after=False),
    dict(reset_after=True, mask=True, input_dropout=3, recurrent_dropout=True, time_major=True),
    dict(reset_after=False, mask=True, input_dropout=1, recurrent_dropout=True),
]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("go_backwards", [False, True])
def test_gradcheck(options, go_backwards):
    (x, k, u, b, h0), kw = make_problem(B=2, T=4, F=3, H=3, **options)
    leaves = [t.requires_grad_(True) for t in (x, k, u, b, h0)]

    def fn(*ts):
        return functional.gru(*ts, go_backwards=go_backwards, **kw)

    assert torch.autograd.gradcheck(fn, leaves, eps=1e-6, atol=1e-7, rtol=1e-6)


def raw_args(options, go_backwards=False, zero_out=False, save=True, requires_grad=True):
    (x, k, u, b, h0), kw = make_problem(B=3, T=4, F=5, H=4, **{**options, "time_major": True})
    for t in (x, k, u, b, h0):
        t.requires_grad_(requires_grad)
    ra = options.get("reset_after", True)
    return (x, k, u, b, h0, kw.get("mask"), kw.get("input_dropout_mask"),
            kw.get("recurrent_dropout_mask"), ra, activations.FUSED_IDS["tanh"],
            activations.FUSED_IDS["sigmoid"], go_backwards, zero_out, save)


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("go_backwards,zero_out", [(False, False), (True, True)])
def test_opcheck_forward(options, go_backwards, zero_out):
    args = raw_args(options, go_backwards, zero_out)
    torch.library.opcheck(torch.ops.gru_cuda.gru_forward.default, args)


def test_opcheck_forward_without_saving():
    args = raw_args(dict(reset_after=True, mask=True), save=False, requires_grad=False)
    torch.library.opcheck(torch.ops.gru_cuda.gru_forward.default, args)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_opcheck_backward(options):
    args = raw_args(options, requires_grad=False)
    outputs, final, states, ws = torch.ops.gru_cuda.gru_forward(*args)
    x, k, u, b, h0, mask, idm, rdm, ra, act, ract, gb, zo, _ = args
    bargs = (torch.randn_like(outputs), torch.randn_like(final), x, k, u, h0, states, ws, mask,
             idm, rdm, b is not None, ra, act, ract, gb, zo)
    torch.library.opcheck(torch.ops.gru_cuda.gru_backward.default, bargs)


def test_backward_after_forward_without_saving_raises():
    args = list(raw_args(dict(reset_after=True)))
    args[-1] = False
    outputs, final, _, _ = torch.ops.gru_cuda.gru_forward(*args)
    with pytest.raises(RuntimeError, match="save_for_backward"):
        outputs.sum().backward()


@pytest.mark.parametrize("reset_after", [True, False])
def test_torch_compile_fullgraph_forward_backward(reset_after):
    (x, k, u, b, h0), kw = make_problem(B=3, T=6, F=4, H=5, reset_after=reset_after, mask=True,
                                        recurrent_dropout=True)
    torch._dynamo.reset()

    def step(x, k, u, b, h0, mask, rdm):
        out, state = functional.gru(x, k, u, b, h0, reset_after=reset_after, mask=mask,
                                    recurrent_dropout_mask=rdm, activation="gelu")
        return out.square().sum() + state.sum()

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    eager_leaves = [t.clone().requires_grad_(True) for t in (x, k, u, b, h0)]
    comp_leaves = [t.clone().requires_grad_(True) for t in (x, k, u, b, h0)]
    loss_e = step(*eager_leaves, kw["mask"], kw["recurrent_dropout_mask"])
    loss_c = compiled(*comp_leaves, kw["mask"], kw["recurrent_dropout_mask"])
    loss_e.backward()
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-12, atol=1e-12)
    for a, b_ in zip(comp_leaves, eager_leaves):
        torch.testing.assert_close(a.grad, b_.grad, rtol=1e-12, atol=1e-12)


def test_build_info_and_activation_table():
    info = gru_cuda.build_info()
    assert isinstance(info["cuda"], bool) and info["torch_version_at_build"]
    assert activations.FUSED_NAMES[:2] == ("tanh", "sigmoid")
    assert len(activations.FUSED_NAMES) == 12
