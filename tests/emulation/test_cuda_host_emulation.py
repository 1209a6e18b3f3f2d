"""The CUDA sources (csrc/cuda/gru_cuda_impl.cpp and stepwise.cpp + csrc/kernels/) run on the
CPU, no GPU needed.

The kernels are compiled for the host with the emulation kit (tests/emulation/: cuda_emu.h,
builder.py): each `kernel<<<grid, block, 0, stream>>>(args)` is rewritten into a loop over the
grid's blocks and threads (real threads and a barrier for the one kernel with __syncthreads),
c10/cuda is replaced by the kit's shims, and the binding is registered as torch.ops.gru_emu on
the CPU, with every buffer it allocates filled with NaN (an element a kernel forgets to write
shows up). ATen's CPU GEMMs stand in for cuBLAS. What
this checks: the binding's orchestration (buffers, views, strides, step order, go_backwards,
masks, dropout), the kernels' index math and formulas, and the saved layouts against the CPU
op. What it cannot check here: races and out-of-bounds accesses (test_sanitize.py runs the
same kit under ThreadSanitizer and AddressSanitizer), memory-model and launch-configuration
limits, cuBLAS, fp16 intrinsics on the device, performance; tests/cuda/test_cuda_ops.py does
that on a GPU.

Slow (it compiles every (dtype, activation pair) instantiation with the host compiler, about
2-3 minutes on two cores); the build is cached in build/cuda_host_emulation (or
$GRU_EMU_BUILD_DIR/cuda_host_emulation).
"""
import shutil

import pytest
import torch

from gru_cuda import reference
from gru_cuda.activations import FUSED_IDS, FUSED_NAMES
from compare import assert_close_rel
from emulation import builder
from problems import make_problem

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emu():
    if builder.cuda_include() is None:
        pytest.skip("needs the CUDA toolkit headers (cuda_runtime_api.h, cuda_fp16.h)")
    if shutil.which("ninja") is None:
        pytest.skip("needs ninja to build the emulation")
    return builder.stepwise_extension()


def _problem(T, B, F, H, reset_after, *, bias, mask, idm, rdm, dtype, h0=True, scale=0.5):
    """The op's time-major arguments (k, u, b, h, m, im, rm) and cotangents gY, gS in dtype."""
    (x, k, u, b, h), kw = make_problem(
        B=B, T=T, F=F, H=H, reset_after=reset_after, bias=bias, mask="random" if mask else False,
        input_dropout=idm, recurrent_dropout=rdm, time_major=True, scale=scale, fan_in=True,
        bias_scale=0.6 * scale, state_scale=0.5, mask_keep=0.7)
    d = {"x": x, "k": k, "u": u, "b": b,
         "h": h if h0 else torch.zeros(B, H, dtype=torch.float64),
         "m": kw.get("mask"), "im": kw.get("input_dropout_mask"),
         "rm": kw.get("recurrent_dropout_mask"),
         "gY": torch.randn(T, B, H, dtype=torch.float64),
         "gS": torch.randn(B, H, dtype=torch.float64)}
    return {k: (v.to(dtype) if isinstance(v, torch.Tensor) and v.is_floating_point() else v)
            for k, v in d.items()}


def _run(op, d, reset_after, act, rec, go_backwards, zero_out, save=True):
    ids = FUSED_IDS[act], FUSED_IDS[rec]
    outs = op.gru_forward(d["x"], d["k"], d["u"], d["b"], d["h"], d["m"], d["im"], d["rm"],
                          reset_after, *ids, go_backwards, zero_out, save)
    if not save:
        return outs, None
    grads = op.gru_backward(d["gY"], d["gS"], d["x"], d["k"], d["u"], d["h"], outs[2], outs[3],
                            d["m"], d["im"], d["rm"], d["b"] is not None, reset_after, *ids,
                            go_backwards, zero_out)
    return outs, grads


def _reference(d, reset_after, act, rec, go_backwards, zero_out):
    leaves = [d[n].double().clone().requires_grad_(True) for n in ("x", "k", "u", "h")]
    b = None if d["b"] is None else d["b"].double().clone().requires_grad_(True)

    def dbl(t):
        return None if t is None else t.double()

    out, fin = reference.gru(leaves[0], leaves[1], leaves[2], b, leaves[3],
                             reset_after=reset_after, activation=act, recurrent_activation=rec,
                             go_backwards=go_backwards, time_major=True, mask=d["m"],
                             zero_output_for_mask=zero_out, input_dropout_mask=dbl(d["im"]),
                             recurrent_dropout_mask=dbl(d["rm"]))
    loss = (out * d["gY"].double()).sum() + (fin * d["gS"].double()).sum()
    params = leaves + ([b] if b is not None else [])
    grads = torch.autograd.grad(loss, params, allow_unused=True)
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    return out.detach(), fin.detach(), grads


def _check(emu, T, B, F, H, reset_after, *, act="tanh", rec="sigmoid", go_backwards=False,
           zero_out=False, mask=False, idm=None, rdm=False, bias=True, dtype=torch.float64,
           h0=True):
    tol = {torch.float64: 1e-10, torch.float32: 2e-5,
           torch.float16: 1e-2, torch.bfloat16: 3e-2}[dtype]
    # Gates outside [0, 1] (an unbounded recurrent activation) make the state grow every step:
    # small weights keep the sequence finite.
    scale = 0.5 if rec in ("sigmoid", "hard_sigmoid", "tanh", "softsign") else 0.1
    d = _problem(T, B, F, H, reset_after, bias=bias, mask=mask, idm=idm, rdm=rdm, dtype=dtype,
                 h0=h0, scale=scale)
    (out, fin, states, ws), grads = _run(emu, d, reset_after, act, rec, go_backwards, zero_out)
    r_out, r_fin, r_grads = _reference(d, reset_after, act, rec, go_backwards, zero_out)
    assert_close_rel(out, r_out, tol, "outputs")
    assert_close_rel(fin, r_fin, tol, "final_state")
    mine = [grads[0], grads[1], grads[2], grads[4]] + ([grads[3]] if bias else [])
    for name, a, e in zip(("x", "kernel", "recurrent_kernel", "h0", "bias"), mine, r_grads):
        assert_close_rel(a, e, tol * 3, f"grad {name}")
    if not bias:
        assert grads[3].shape == (0,)
    (out2, fin2, st2, ws2), _ = _run(emu, d, reset_after, act, rec, go_backwards, zero_out,
                                     save=False)
    assert torch.equal(out2, out) and torch.equal(fin2, fin) and st2.shape == (0,) == ws2.shape
    if dtype in (torch.float64, torch.float32):  # the saved layouts are the CPU op's
        (c_out, _, c_states, c_ws), _ = _run(torch.ops.gru_cuda, d, reset_after, act, rec,
                                             go_backwards, zero_out)
        assert_close_rel(states, c_states, tol, "states vs CPU op")
        assert_close_rel(ws, c_ws, tol, "workspace vs CPU op")


CONVENTIONS = pytest.mark.parametrize("reset_after", [True, False],
                                      ids=["reset_after", "reset_before"])


@CONVENTIONS
@pytest.mark.parametrize("mask,go_backwards,zero_out", [
    (False, False, False), (False, True, False), (True, False, False), (True, True, False),
    (True, False, True), (True, True, True)])
@pytest.mark.parametrize("idm", [None, "shared", "per_gate"])
@pytest.mark.parametrize("rdm", [False, True])
def test_options(emu, reset_after, mask, go_backwards, zero_out, idm, rdm):
    _check(emu, 6, 4, 5, 9, reset_after, mask=mask, go_backwards=go_backwards, zero_out=zero_out,
           idm=idm, rdm=rdm)


@CONVENTIONS
@pytest.mark.parametrize("T,B,F,H", [(1, 1, 2, 5), (4, 2, 3, 33), (4, 2, 0, 5), (0, 3, 4, 5),
                                     (4, 0, 4, 5), (0, 0, 4, 5), (40, 30, 3, 4)])
@pytest.mark.parametrize("bias,h0", [(True, True), (False, False)])
def test_shapes(emu, T, B, F, H, reset_after, bias, h0):
    _check(emu, T, B, F, H, reset_after, bias=bias, h0=h0, mask=T * B > 0, rdm=True)


@CONVENTIONS
@pytest.mark.parametrize("i", range(len(FUSED_NAMES)))
def test_activations(emu, reset_after, i):
    _check(emu, 4, 2, 3, 5, reset_after, act=FUSED_NAMES[i], rec=FUSED_NAMES[(i + 3) % 12],
           rdm=i % 2 == 0, mask=i % 3 == 0)
    _check(emu, 4, 2, 3, 5, reset_after, act=FUSED_NAMES[(i + 5) % 12], rec=FUSED_NAMES[i],
           go_backwards=i % 2 == 1)


@CONVENTIONS
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_lower_precision(emu, reset_after, dtype):
    _check(emu, 6, 3, 4, 9, reset_after, dtype=dtype, mask=True, rdm=True, idm="per_gate")
    _check(emu, 6, 3, 4, 9, reset_after, dtype=dtype)


def test_h_zero(emu):
    for reset_after in (True, False):
        d = _problem(3, 2, 4, 0, reset_after, bias=True, mask=True, idm=None, rdm=False,
                     dtype=torch.float64)
        (out, fin, states, ws), grads = _run(emu, d, reset_after, "tanh", "sigmoid", False, False)
        assert out.shape == (3, 2, 0) and fin.shape == (2, 0) and ws.shape == (3, 2, 0)
        assert torch.equal(grads[0], torch.zeros(3, 2, 4, dtype=torch.float64))
