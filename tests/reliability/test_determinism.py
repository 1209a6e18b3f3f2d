"""Determinism: forward and backward are bit-identical across runs on the same device, inputs,
dtype and thread count (no atomics, fixed reduction orders, no reads of uninitialised memory).

Checked across repeated calls, across calls separated by unrelated work (which recycles the
allocator's memory, so a read of uninitialised memory would show), in a fresh process, and
under torch.use_deterministic_algorithms(True). The CUDA variants skip without CUDA.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from gru_cuda import GRU
from gru_cuda.functional import gru

from markers import requires_cuda
from problems import ARG_NAMES, problem_from_config

DEVICES = ["cpu", pytest.param("cuda", marks=requires_cuda)]  # the cuda marker skips without a GPU

CONFIGS = {
    "reset_after": dict(reset_after=True),
    "reset_before": dict(reset_after=False, initial_state=True),
    "mask-dropout-backwards": dict(reset_after=True, mask=True, input_dropout=3,
                                   recurrent_dropout=True, go_backwards=True),
    "reset_before-mask-zero-tm": dict(reset_after=False, mask=True, zero_output_for_mask=True,
                                      input_dropout=1, time_major=True, activation="gelu"),
}


def _problem(cfg, device, dtype, B=5, T=16, F=7, H=24, seed=0):
    """(tensors by argument name, kw, output cotangent), the same numbers on every call."""
    g = torch.Generator().manual_seed(seed)
    args, kw = problem_from_config(cfg, B=B, T=T, F=F, H=H, initial_state=False, dtype=dtype,
                                   device=device, scale=0.3, bias_scale=0.2, keep=0.8,
                                   generator=g)
    t = dict(zip(ARG_NAMES, args))
    cot = torch.randn(t["x"].shape[:2] + (H,), generator=g).to(device, dtype)
    return t, kw, cot


def _run(t, kw, cot):
    leaves = {k: None if v is None else v.clone().requires_grad_() for k, v in t.items()}
    out, state = gru(*leaves.values(), **kw)
    ((out * cot).sum() + state.square().sum()).backward()
    return [out.detach(), state.detach()] + [v.grad for v in leaves.values() if v is not None]


def _churn(device):
    """Unrelated work that recycles freed memory with other values."""
    junk = [torch.full((n, 97), float(n), device=device) for n in (33, 257, 1025)]
    g = torch.Generator().manual_seed(9)
    x = torch.randn(7, 3, 5, generator=g).to(device)
    gru(x, torch.randn(5, 33, generator=g).to(device), torch.randn(11, 33, generator=g).to(device))
    del junk


def _assert_bitwise(runs):
    first = runs[0]
    for other in runs[1:]:
        assert len(other) == len(first)
        for i, (a, b) in enumerate(zip(first, other)):
            assert a.dtype == b.dtype and a.shape == b.shape
            # bit patterns, so that -0.0 / +0.0 and NaN payloads count too
            view = {torch.float64: torch.int64, torch.float32: torch.int32,
                    torch.bfloat16: torch.int16, torch.float16: torch.int16}[a.dtype]
            assert torch.equal(a.contiguous().view(view), b.contiguous().view(view)), \
                f"result {i} differs between runs"


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("name", list(CONFIGS))
def test_repeated_runs_are_bit_identical(device, dtype, name):
    t, kw, cot = _problem(CONFIGS[name], device, dtype)
    runs = []
    for _ in range(3):
        runs.append(_run(t, kw, cot))
        _churn(device)
    _assert_bitwise(runs)


@pytest.mark.parametrize("device", DEVICES)
def test_deterministic_algorithms_mode(device):
    """The op raises no 'nondeterministic' error under torch.use_deterministic_algorithms and
    gives the same bits as without it."""
    t, kw, cot = _problem(CONFIGS["mask-dropout-backwards"], device, torch.float32)
    plain = _run(t, kw, cot)
    was = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        strict = _run(t, kw, cot)
    finally:
        torch.use_deterministic_algorithms(was)
    _assert_bitwise([plain, strict])


def test_inference_equals_training_forward():
    """no_grad (save_for_backward=False, reused buffers) gives the same bits as training."""
    for name, cfg in CONFIGS.items():
        t, kw, cot = _problem(cfg, "cpu", torch.float32)
        with torch.no_grad():
            out, state = gru(*t.values(), **kw)
        _assert_bitwise([[out, state], _run(t, kw, cot)[:2]])


_CHILD = textwrap.dedent("""
    import sys, torch
    sys.path[:0] = [{here!r}, {tests!r}]
    torch.set_num_threads({threads})
    import test_determinism as td
    results = {{}}
    for name, cfg in td.CONFIGS.items():
        t, kw, cot = td._problem(cfg, "cpu", torch.float32)
        results[name] = td._run(t, kw, cot)
    torch.save(results, {path!r})
""")


def test_fresh_process_gives_the_same_bits(tmp_path):
    threads = torch.get_num_threads()
    path = str(tmp_path / "child.pt")
    here = os.path.dirname(os.path.abspath(__file__))
    code = _CHILD.format(here=here, tests=os.path.dirname(here), threads=threads, path=path)
    subprocess.run([sys.executable, "-c", code], check=True, timeout=240)
    child = torch.load(path)
    for name, cfg in CONFIGS.items():
        t, kw, cot = _problem(cfg, "cpu", torch.float32)
        _assert_bitwise([_run(t, kw, cot), child[name]])


def test_layer_with_seeded_dropout_is_reproducible():
    """Two identically initialised layers with the same dropout seed train identically."""
    def run():
        torch.manual_seed(0)
        layer = GRU(12, return_sequences=True, input_size=5, dropout=0.3,
                    recurrent_dropout=0.2, seed=11).train()
        x = torch.randn(4, 9, 5)
        outs = []
        for _ in range(2):  # fresh masks per call, the same sequence of them
            out = layer(x)
            out.square().sum().backward()
            outs.append(out.detach())
        return outs + [p.grad for p in layer.parameters()]

    _assert_bitwise([run(), run()])
