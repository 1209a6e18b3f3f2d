"""Soak: 2,000 training steps of a small GRU model with no NaN and no memory growth.

The resident set size (VmRSS from /proc/self/status; no psutil needed) is measured after a
warm-up and at the end; growth must stay under a loose bound. Every step draws fresh masks and
dropout masks (as training does), alternates the reset convention and direction, and every
tenth step also runs an inference (no_grad) call, so all paths of the op are exercised.
The figures are printed. The CUDA variant also tracks torch.cuda.memory_allocated.

Run alone with:  python -m pytest -q -m slow tests/reliability/test_soak.py -s
"""
from __future__ import annotations

import gc
import time

import pytest
import torch

from gru_cuda.functional import gru

from markers import requires_cuda

STEPS = 2000
WARMUP = 200
RSS_GROWTH_LIMIT_MB = 50.0
B, T, F, H = 16, 24, 8, 32


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0  # kB -> MB
    raise RuntimeError("VmRSS not found in /proc/self/status")


class SoakModel(torch.nn.Module):
    """Two GRU layers on the functional op (one per reset convention) and a linear head."""

    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def p(*shape, scale):
            return torch.nn.Parameter(torch.randn(*shape, generator=g) * scale)

        # Drawn from g in this order: layer 1's kernel, recurrent kernel, bias, then layer 2's.
        self.k1 = p(F, 3 * H, scale=0.3)
        self.u1 = p(H, 3 * H, scale=0.2)
        self.b1 = p(2, 3 * H, scale=0.1)
        self.k2 = p(H, 3 * H, scale=0.2)
        self.u2 = p(H, 3 * H, scale=0.2)
        self.b2 = p(3 * H, scale=0.1)
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x, mask, masks1, masks2, go_backwards):
        out, _ = gru(x, self.k1, self.u1, self.b1, mask=mask, input_dropout_mask=masks1[0],
                     recurrent_dropout_mask=masks1[1])
        out, state = gru(out, self.k2, self.u2, self.b2, reset_after=False, mask=mask,
                         go_backwards=go_backwards, input_dropout_mask=masks2[0],
                         recurrent_dropout_mask=masks2[1], zero_output_for_mask=True)
        return self.head(state).squeeze(-1)


def _batch(step, device):
    g = torch.Generator().manual_seed(step)
    x = torch.randn(B, T, F, generator=g)
    y = x[:, :, 0].mean(1) - x[:, :, 1].mean(1)  # a learnable target
    lengths = torch.randint(T // 2, T + 1, (B,), generator=g)
    mask = torch.arange(T) < lengths.unsqueeze(1)

    def keep(*shape, rate):
        return (torch.rand(*shape, generator=g) >= rate).float() / (1 - rate)

    masks1 = (keep(3, B, F, rate=0.1), keep(3, B, H, rate=0.1))
    masks2 = (keep(B, H, rate=0.1), None)

    def to(t):
        return None if t is None else t.to(device)

    return (x.to(device), y.to(device), mask.to(device), tuple(map(to, masks1)),
            tuple(map(to, masks2)))


def _soak(device, capsys):
    torch.manual_seed(0)
    model = SoakModel().to(device)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    samples, losses = [], []
    t0 = t_warm = time.perf_counter()
    rss_warm = cuda_warm = None
    for step in range(STEPS):
        x, y, mask, masks1, masks2 = _batch(step, device)
        opt.zero_grad(set_to_none=True)
        pred = model(x, mask, masks1, masks2, go_backwards=step % 2 == 1)
        loss = torch.nn.functional.mse_loss(pred, y)
        loss.backward()
        opt.step()
        value = loss.item()
        assert value == value and abs(value) != float("inf"), f"non-finite loss at step {step}"
        losses.append(value)
        if step % 10 == 0:
            with torch.no_grad():
                inf = model(x, mask, (None, None), (None, None), go_backwards=False)
            assert torch.isfinite(inf).all(), f"non-finite inference output at step {step}"
        if step + 1 == WARMUP:
            gc.collect()
            rss_warm = rss_mb()
            cuda_warm = torch.cuda.memory_allocated() if device == "cuda" else None
            t_warm = time.perf_counter()
        if (step + 1) % 200 == 0:
            samples.append(round(rss_mb(), 1))
    elapsed = time.perf_counter() - t_warm
    gc.collect()
    rss_end = rss_mb()
    for p in model.parameters():
        assert torch.isfinite(p).all(), "non-finite parameter after the soak"

    growth = rss_end - rss_warm
    early, late = sum(losses[:100]) / 100, sum(losses[-100:]) / 100
    report = (f"\n[soak {device}] {STEPS} steps in {time.perf_counter() - t0:.1f} s, "
              f"{(STEPS - WARMUP) / elapsed:.0f} steps/s after warm-up; "
              f"RSS {rss_warm:.1f} MB after {WARMUP} warm-up steps -> {rss_end:.1f} MB at the end "
              f"(growth {growth:+.1f} MB); RSS every 200 steps: {samples}; "
              f"loss {early:.4f} (first 100) -> {late:.4f} (last 100)")
    if device == "cuda":
        torch.cuda.synchronize()
        cuda_growth = (torch.cuda.memory_allocated() - cuda_warm) / 2**20
        report += f"; CUDA allocated growth {cuda_growth:+.2f} MB"
    with capsys.disabled():
        print(report)
    assert growth < RSS_GROWTH_LIMIT_MB, report
    assert late < early, "the model did not learn: " + report
    if device == "cuda":
        assert abs(cuda_growth) < 1.0, report


@pytest.mark.slow
def test_soak_cpu(capsys):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a small model: one thread is fastest and keeps timings stable
    try:
        _soak("cpu", capsys)
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@requires_cuda
def test_soak_cuda(capsys):
    _soak("cuda", capsys)
