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

import gru_cuda  # noqa: F401  (registers torch.ops.gru_cuda on the CPU)
from gru_cuda.activations import FUSED_NAMES
from emulation import builder
from emulation.persistent_case import assert_close as _assert_close
from emulation.persistent_case import run_case

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def emu():
    if builder.cuda_include() is None:
        pytest.skip("the CUDA headers (cuda_fp16.h, ...) are not installed")
    return builder.pkemu_module()


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
