"""The persistent kernels (csrc/kernels/persistent/persistent_kernels.cuh) executed on the CPU,
no GPU needed.

The emulation kit (tests/emulation/: cuda_emu.h, persistent_harness.h, pkemu_module.cpp,
builder.py) compiles the kernels with the host compiler: every CUDA thread is a
std::thread, __syncthreads and cluster.sync() are barriers, warp shuffles exchange through a
per-warp array, the grid barrier is an atomic counter, DSMEM pushes write the other emulated
CTAs' shared memory (filled with NaN at the start). Both paths (grid and cluster), both
conventions, fp32, geometry from the capacity model for a small fictitious sm_90 device.

Each run is compared with the project's CPU op (same contract): outputs, final state, the saved
states and workspace; for the backward, grad_h0 directly and the other gradients after the
weight-gradient GEMMs of the stepwise binding (docs/algorithm.md, "After the loop") applied to
the kernel's dgates/aux. What this checks: the kernels' index math, tiling, phase order,
double-buffer parities, the reduce-scatter, masks, dropout, go_backwards. What it cannot check:
the GPU memory model, launch limits, real shared-memory capacity, fp16/bf16 device intrinsics,
performance; tests/cuda/test_persistent.py does that on a GPU.
"""
import pytest
import torch

import gru_cuda  # noqa: F401  (registers torch.ops.gru_cuda on the CPU)
from gru_cuda.activations import FUSED_IDS, FUSED_NAMES
from compare import max_rel_err
from emulation import builder
from problems import make_problem

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emu():
    if builder.cuda_include() is None:
        pytest.skip("the CUDA headers (cuda_fp16.h, ...) are not installed")
    return builder.pkemu_module()


def _p(t):
    return 0 if t is None else t.data_ptr()


def _nan(*shape):
    return torch.full(shape, float("nan"))


def run_case(emu, T, B, F, H, reset_after, path, *, mask=False, rdm=False, go_back=False,
             zero_out=False, act="tanh", ract="sigmoid", sm=4, max_cluster=4, max_bt=0,
             save=True, bias=True, scale=0.5):
    """Emulated persistent forward + backward vs the CPU op; returns {quantity: rel. error}."""
    ra = reset_after
    (x, W, U, b, h0), kw = make_problem(
        B=B, T=T, F=F, H=H, reset_after=ra, bias=bias, mask="random" if mask else False,
        recurrent_dropout=rdm, time_major=True, dtype=torch.float32, scale=scale, fan_in=True,
        bias_scale=0.3, state_scale=0.5, mask_keep=0.7)
    m, q = kw.get("mask"), kw.get("recurrent_dropout_mask")
    a, r = FUSED_IDS[act], FUSED_IDS[ract]
    out_r, fs_r, st_r, ws_r = torch.ops.gru_cuda.gru_forward(x, W, U, b, h0, m, None, q, ra, a, r,
                                                             go_back, zero_out, True)
    b_i = None if b is None else (b[0] if ra else b)
    gx = x.reshape(T * B, F) @ W
    if b_i is not None:
        gx = gx + b_i
    gx = gx.reshape(T, B, 3 * H).contiguous()
    bh = b[1].contiguous() if (b is not None and ra) else None
    outs, fin, rh = _nan(T, B, H), _nan(B, H), _nan(B, H)
    st = _nan(T, B, H) if save else None
    ws = _nan(T, B, (4 if ra else 3) * H) if save else None
    scratch = None if save else _nan(2, B, H)
    ws_scratch = None if (save or ra) else _nan(B, 3 * H)
    info = emu.forward(T, B, H, _p(gx), _p(U), _p(bh), _p(h0), _p(m), _p(q), _p(outs), _p(st),
                       _p(ws), _p(fin), _p(scratch), _p(ws_scratch), _p(rh), ra, a, r, go_back,
                       zero_out, path, sm, max_cluster, max_bt)
    assert info.startswith(path), info
    errs = {"outputs": max_rel_err(outs, out_r), "final_state": max_rel_err(fin, fs_r)}
    if save:
        errs["states"] = max_rel_err(st, st_r)
        errs["workspace"] = max_rel_err(ws, ws_r)

    dY, dS = torch.randn(T, B, H), torch.randn(B, H)
    g_r = torch.ops.gru_cuda.gru_backward(dY, dS, x, W, U, h0, st_r, ws_r, m, None, q,
                                          b is not None, ra, a, r, go_back, zero_out)
    dG, aux, gh0, dh_part = _nan(T, B, 3 * H), _nan(T, B, H), _nan(B, H), _nan(B, H)
    dcarry = torch.zeros(B, H) if (m is not None and not zero_out) else None
    info = emu.backward(T, B, H, _p(dY), _p(dS), _p(U), _p(h0), _p(st_r), _p(ws_r), _p(m), _p(q),
                        _p(dG), _p(aux), _p(gh0), _p(dh_part), _p(dcarry), ra, a, r, go_back,
                        zero_out, path, sm, max_cluster, max_bt)
    assert info.startswith(path), info
    errs["grad_h0"] = max_rel_err(gh0, g_r[4])
    # The stepwise binding's GEMMs after the loop, on the kernel's dgates (dG) and aux.
    hp = torch.empty(T, B, H)
    for s in range(T):
        hp[T - 1 - s if go_back else s] = h0 if s == 0 else st_r[s - 1]
    X2, G2, A2 = x.reshape(T * B, F), dG.reshape(T * B, 3 * H), aux.reshape(T * B, H)
    dgx = torch.cat([G2[:, :2 * H], A2], 1) if ra else G2
    gU = torch.empty(H, 3 * H)
    for g in range(3 if ra else 2):
        hq = hp if q is None else hp * q[g]
        gU[:, g * H:(g + 1) * H] = hq.reshape(T * B, H).t() @ G2[:, g * H:(g + 1) * H]
    if not ra:
        gU[:, 2 * H:] = A2.t() @ G2[:, 2 * H:]
    errs["grad_x"] = max_rel_err((dgx @ W.t()).reshape(T, B, F), g_r[0])
    errs["grad_kernel"] = max_rel_err(X2.t() @ dgx, g_r[1])
    errs["grad_recurrent_kernel"] = max_rel_err(gU, g_r[2])
    if b is not None:
        gb = torch.stack([dgx.sum(0), G2.sum(0)]) if ra else G2.sum(0)
        errs["grad_bias"] = max_rel_err(gb, g_r[3])
    return errs


def _assert_close(errs, tol=2e-5):
    bad = {k: v for k, v in errs.items() if not v <= tol}
    assert not bad, f"relative errors above {tol}: {bad}"


OPTIONS = {
    "plain": dict(),
    "mask": dict(mask=True),
    "mask_zero_output": dict(mask=True, zero_out=True),
    "recurrent_dropout": dict(rdm=True),
    "go_backwards": dict(go_back=True),
    "not_saved": dict(save=False),
    "no_bias": dict(bias=False),
    "everything": dict(mask=True, rdm=True, go_back=True, save=False),
    "everything_zero_output_no_bias": dict(mask=True, rdm=True, go_back=True, zero_out=True,
                                           bias=False),
}
# (T, B, F, H, max_bt): 3 CTAs of 4 units; batch tiles 2+2+1 (clusters of 2 rows); B = 1,
# T = 1, H = 5; 8-row register tiles plus a 1-row remainder.
SHAPES = [(3, 3, 4, 12, 0), (4, 5, 3, 13, 2), (1, 1, 2, 5, 0), (2, 9, 3, 33, 8)]


@pytest.mark.parametrize("path", ["persistent", "persistent_cluster"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_options(emu, option, reset_after, path):
    for T, B, F, H, max_bt in SHAPES:
        _assert_close(run_case(emu, T, B, F, H, reset_after, path, max_bt=max_bt,
                               **OPTIONS[option]))


@pytest.mark.parametrize("path", ["persistent", "persistent_cluster"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_every_activation(emu, reset_after, path):
    bounded = ("sigmoid", "hard_sigmoid", "tanh", "softsign")
    for name in FUSED_NAMES:
        for role in ("act", "ract"):
            kw = {"act": "tanh", "ract": "sigmoid"}
            kw[role] = name
            scale = 0.1 if role == "ract" and name not in bounded else 0.3
            _assert_close(run_case(emu, 4, 3, 3, 9, reset_after, path, mask=True, rdm=True,
                                   scale=scale, **kw))


@pytest.mark.parametrize("path", ["persistent", "persistent_cluster"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
def test_wider_slices(emu, reset_after, path):
    # kp = 192 (three 64-wide slabs per lane loop), J = 36; then J = 8 / 32 with 8 or 2 CTAs.
    _assert_close(run_case(emu, 3, 10, 3, 130, reset_after, path, mask=True, rdm=True))
    _assert_close(run_case(emu, 2, 3, 2, 64, reset_after, path, mask=True, rdm=True, sm=8,
                           max_cluster=2))
