"""The GEMM floor of a case: the matrix products a GRU of that shape cannot avoid, timed alone.

On the CPU the GRU is bound by its products at large batch sizes, so the honest yardstick for
a CPU row is not only the competitor but how close it comes to the products alone: the input
projection of all steps, one recurrent product per step (two dependent ones for
reset_after=False) and, with a backward, the per-step products back through the recurrent
kernel plus the weight- and input-gradient products over the whole sequence. The floor runs them
on preallocated buffers of the case's dtype with nothing else: no pointwise work, no copies, no
autograd, so it is a lower bound that no implementation built on the same GEMM library can beat.

On a GPU the persistent kernels have modelled floors instead (floor_fractions): the capacity
model's per-step time of the recurrent product at the device's peak rate for that product, and
of the step's barriers at the modelled barrier latency.
"""
from __future__ import annotations

from typing import Callable, Dict, Optional

import torch

from .candidates import CaseData
from .cases import MODES

FLOOR_KEY = "gemm_floor"


def gemm_floor_runner(data: CaseData, reset_after: bool, mode: str) -> Callable[[], None]:
    """A runner (as timing.make_runner's) that performs the case's unavoidable products."""
    x, W, U = data.x, data.kernel, data.recurrent_kernel
    B, T, F = x.shape
    H = U.shape[0]
    rows = B * T
    x2d = x.reshape(rows, F)  # the order of the rows does not change the cost of the product
    h = torch.randn(B, H, dtype=x.dtype, device=x.device) * 0.1
    gx = torch.empty(rows, 3 * H, dtype=x.dtype, device=x.device)
    gh = torch.empty(B, 3 * H, dtype=x.dtype, device=x.device)
    gh_zr = torch.empty(B, 2 * H, dtype=x.dtype, device=x.device)
    gh_h = torch.empty(B, H, dtype=x.dtype, device=x.device)
    U_zr, U_h = U[:, : 2 * H], U[:, 2 * H:]

    def forward():
        torch.mm(x2d, W, out=gx)
        for _ in range(T):
            if reset_after:
                torch.mm(h, U, out=gh)
            else:  # r is needed before the candidate's product: two products per step
                torch.mm(h, U_zr, out=gh_zr)
                torch.mm(h, U_h, out=gh_h)

    if mode == "fwd":
        return forward

    Ut, Wt = U.t(), W.t()
    dgh = torch.randn(B, 3 * H, dtype=x.dtype, device=x.device) * 0.1
    dh = torch.empty(B, H, dtype=x.dtype, device=x.device)
    dgh_zr, dgh_h = dgh[:, : 2 * H].contiguous(), dgh[:, 2 * H:].contiguous()
    dh_h = torch.empty(B, H, dtype=x.dtype, device=x.device)
    Ut_zr, Ut_h = U_zr.t(), U_h.t()
    dgx = torch.randn(rows, 3 * H, dtype=x.dtype, device=x.device) * 0.1
    hs = torch.randn(rows, H, dtype=x.dtype, device=x.device) * 0.1
    dW = torch.empty(F, 3 * H, dtype=x.dtype, device=x.device)
    dU = torch.empty(H, 3 * H, dtype=x.dtype, device=x.device)
    dx = torch.empty(rows, F, dtype=x.dtype, device=x.device)

    def forward_backward():  # fwd+bwd and train (the optimizer's update is not a product)
        forward()
        for _ in range(T):
            if reset_after:
                torch.mm(dgh, Ut, out=dh)
            else:  # the candidate's gradient goes back through U_h before r's is known
                torch.mm(dgh_h, Ut_h, out=dh_h)
                torch.mm(dgh_zr, Ut_zr, out=dh)
        torch.mm(hs.t(), dgx, out=dU)
        torch.mm(x2d.t(), dgx, out=dW)
        torch.mm(dgx, Wt, out=dx)

    return forward_backward


def floor_fractions(forward: Optional[dict], backward: Optional[dict], mode: str, steps: int,
                    ms: Optional[float]) -> Dict[str, float]:
    """The achieved fractions of a persistent run's floors: ``tc_floor`` = (the plans'
    ``floor_compute_us`` x `steps`) / the measured time, ``barrier_floor`` the same with
    ``floor_barrier_us``. `forward` and `backward` are the capacity model's plans
    (``gru_cuda.dispatch.explain(...)["capacity"]``); the backward counts for the modes with
    a backward only, and a direction without a plan (None: it ran stepwise, which has no
    modelled floor) adds nothing. `ms`: the measured time of one run, milliseconds. A floor of
    zero (nothing planned) gives no entry. 1.0 would mean the run took exactly its floor."""
    if mode not in MODES:
        raise ValueError(f"floor_fractions: mode must be one of {list(MODES)}, "
                         f"got {mode!r}")
    if not ms or ms <= 0 or steps <= 0:
        return {}
    plans = [p for p in ([forward] if mode == "fwd" else [forward, backward]) if p]
    measured_us = ms * 1e3
    out = {}
    for col, key in (("tc_floor", "floor_compute_us"), ("barrier_floor", "floor_barrier_us")):
        floor_us = sum(float(p.get(key) or 0.0) for p in plans) * steps
        if floor_us > 0:
            out[col] = floor_us / measured_us
    return out
