"""The CPU ops' buffer pool (csrc/cpu/buffer_pool.h): their large temporaries and the tensors
they save for the backward come from buffers kept between calls. Reused buffers hold whatever
the last user wrote (poisoned here with NaN), live tensors never share a buffer, the size limit
and the off switch hold, and concurrent calls stay correct."""
import math
import threading

import pytest
import torch

from problems import compare, make_problem
from gru_cuda import _C, ops

MiB = 1 << 20


@pytest.fixture(autouse=True)
def empty_pool(monkeypatch):
    monkeypatch.delenv("GRU_CUDA_CPU_BUFFER_POOL_MB", raising=False)
    _C.cpu_buffer_pool_release()
    yield
    _C.cpu_buffer_pool_release()


def saved_forward(T=64, B=32, F=40, H=128, reset_after=True, save=True):
    """gru_forward, float32. At the default sizes its input projection (3 MiB), saved states
    (1 MiB) and workspace (4 MiB; 3 MiB for reset_after=False) are pooled."""
    torch.manual_seed(0)
    x = torch.randn(T, B, F)
    W, U = torch.randn(F, 3 * H) * 0.1, torch.randn(H, 3 * H) * 0.1
    return ops.gru_forward(x, W, U, None, torch.zeros(B, H), None, None, None, reset_after, 0, 1,
                           False, False, save)


def test_buffers_return_to_the_pool_and_release_frees_them():
    assert _C.cpu_buffer_pool_idle_bytes() == 0
    _, _, states, ws = saved_forward()
    assert ws.numel() * 4 >= MiB  # large enough to be pooled
    held = _C.cpu_buffer_pool_idle_bytes()  # the input projection came back at the op's end
    assert held == 3 * MiB
    del states, ws
    assert _C.cpu_buffer_pool_idle_bytes() > held
    _C.cpu_buffer_pool_release()
    assert _C.cpu_buffer_pool_idle_bytes() == 0


def test_live_tensors_never_share_a_buffer():
    saved_forward()  # leaves idle buffers of the sizes below in the pool
    a = saved_forward()
    a_copy = [t.clone() for t in a]
    b = saved_forward(reset_after=False)  # other values in same-size buffers
    ptrs = {t.data_ptr() for t in a + b if t.numel()}
    assert len(ptrs) == sum(1 for t in a + b if t.numel())
    for t, c in zip(a, a_copy):
        assert torch.equal(t, c)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_reused_buffers_hold_stale_values(reset_after, dtype):
    """Buffers that come back full of NaN serve the next calls' projections, saved tensors and
    gate gradients: every value the op reads from them must be one it wrote."""
    T, B, F, H = 64, 32, 40, 128
    for _ in range(2):
        kept = [saved_forward(T=T, B=B, F=F, H=H, reset_after=ra) for ra in (True, False, True)]
        for outs in kept:
            for t in outs[2:]:
                t.fill_(math.nan)
        del kept, outs, t
        assert _C.cpu_buffer_pool_idle_bytes() >= 16 * MiB
        problem = make_problem(B=B, T=T, F=F, H=H, fan_in=True, reset_after=reset_after,
                               mask="random")
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        compare(problem, {}, dtype=dtype, rtol=tol, grad_rtol=tol)


def test_limit_and_off_switch(monkeypatch):
    monkeypatch.setenv("GRU_CUDA_CPU_BUFFER_POOL_MB", "0")
    saved_forward()
    assert _C.cpu_buffer_pool_idle_bytes() == 0
    monkeypatch.setenv("GRU_CUDA_CPU_BUFFER_POOL_MB", "2")
    outs = saved_forward()  # only the 1 MiB states fit the limit
    del outs
    assert _C.cpu_buffer_pool_idle_bytes() == 1 * MiB


def test_a_buffer_over_the_limit_leaves_the_others(monkeypatch):
    monkeypatch.setenv("GRU_CUDA_CPU_BUFFER_POOL_MB", "8")
    outs = saved_forward()
    del outs
    assert _C.cpu_buffer_pool_idle_bytes() == 8 * MiB  # projection, states, workspace
    saved_forward(T=256, save=False)  # a 12 MiB projection: freed when it comes back
    assert _C.cpu_buffer_pool_idle_bytes() == 8 * MiB


@pytest.mark.parametrize("value", ["lots", "-1", "1.5"])
def test_bad_setting_is_named(monkeypatch, value):
    monkeypatch.setenv("GRU_CUDA_CPU_BUFFER_POOL_MB", value)
    with pytest.raises(RuntimeError, match="GRU_CUDA_CPU_BUFFER_POOL_MB"):
        saved_forward()


def test_concurrent_calls():
    """Python threads running forward and backward at once take buffers from one pool."""
    problems = [make_problem(B=32, T=64, F=40, H=128, fan_in=True, reset_after=ra, mask=m)
                for ra, m in ((True, "random"), (False, None), (True, None), (False, "random"))]
    errors = []

    def work(problem):
        try:
            for _ in range(3):
                compare(problem, {}, dtype=torch.float32, rtol=1e-5, grad_rtol=1e-5)
        except Exception as e:  # reported below, in the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(p,)) for p in problems]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]
