"""DistributedDataParallel (and FSDP2): the fused GRU works unchanged in distributed training.

Two processes on the CPU (gloo backend, a free localhost port) each take half of a batch; DDP
averages their gradients, so after each optimiser step the parameters must equal those of a
single process stepping on the mean loss of the whole batch. Checked for a model built on
gru_cuda.functional.gru and on the gru_cuda.layers.GRU layer; float64
(tight) and float32. The same workers also train the models sharded with FSDP2
(`fully_shard`, one unit per GRU layer plus the root), which must give the same parameters.

Everything is time-boxed: the process group has a timeout and the test kills its workers and
fails if they do not finish in time, so it can never hang CI.
"""
from __future__ import annotations

import datetime
import os
import socket
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gru_cuda  # noqa: F401  (registers the ops in this process)
from gru_cuda import GRU
from gru_cuda.functional import gru

WORLD = 2
B, T, F, H = 8, 6, 5, 7
STEPS = 2
DEADLINE_S = 240
DTYPES = (torch.float64, torch.float32)


class FunctionalGRUModel(torch.nn.Module):
    """Linear -> GRU (functional op, own parameters) -> Linear."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(F, F)
        self.kernel = torch.nn.Parameter(torch.randn(F, 3 * H) * 0.4)
        self.recurrent_kernel = torch.nn.Parameter(torch.randn(H, 3 * H) * 0.4)
        self.bias = torch.nn.Parameter(torch.randn(2, 3 * H) * 0.2)
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x, mask):
        out, state = gru(torch.tanh(self.proj(x)), self.kernel, self.recurrent_kernel, self.bias,
                         mask=mask)
        return self.head(out).squeeze(-1) + state.sum(-1, keepdim=True)


class LayerGRUModel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(F, F)
        self.gru = GRU(H, return_sequences=True, reset_after=False, input_size=F)
        self.head = torch.nn.Linear(H, 1)

    def forward(self, x, mask):
        return self.head(self.gru(torch.tanh(self.proj(x)), mask=mask)).squeeze(-1)


def _kinds():
    return ["functional", "layer"]


def _model(kind, dtype):
    torch.manual_seed(1234)  # the same initial parameters in every process
    model = FunctionalGRUModel() if kind == "functional" else LayerGRUModel()
    return model.to(dtype)


def _data(dtype):
    g = torch.Generator().manual_seed(99)
    x = torch.randn(STEPS, B, T, F, generator=g, dtype=torch.float64).to(dtype)
    y = torch.randn(STEPS, B, T, generator=g, dtype=torch.float64).to(dtype)
    lengths = torch.randint(1, T + 1, (STEPS, B), generator=g)
    mask = torch.arange(T) < lengths.unsqueeze(-1)  # right padding
    return x, y, mask


def _train(model, rows):
    """STEPS SGD-with-momentum steps on the given batch rows; the parameters after each step."""
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    dtype = next(model.parameters()).dtype
    x, y, mask = _data(dtype)
    history = []
    for s in range(STEPS):
        opt.zero_grad()
        pred = model(x[s, rows], mask[s, rows])
        loss = ((pred - y[s, rows]) ** 2 * mask[s, rows]).mean()
        loss.backward()
        opt.step()
        history.append({n: p.detach().clone() for n, p in model.named_parameters()})
    return history


def _fully_shard():
    try:
        from torch.distributed.fsdp import fully_shard
    except ImportError:  # torch < 2.6
        return None
    return fully_shard


def _worker(rank, port, out_dir):
    torch.set_num_threads(1)  # two processes on a small machine: no oversubscription
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                            world_size=WORLD, timeout=datetime.timedelta(seconds=60))
    try:
        half = B // WORLD
        rows = slice(rank * half, (rank + 1) * half)
        results = {}
        for kind in _kinds():
            for dtype in DTYPES:
                ddp = torch.nn.parallel.DistributedDataParallel(_model(kind, dtype))
                history = _train(ddp, rows)
                # DDP names parameters "module.<name>"
                results[(kind, str(dtype))] = [
                    {n.removeprefix("module."): p for n, p in h.items()} for h in history]
            fully_shard = _fully_shard()
            if fully_shard is not None:
                from torch.distributed.device_mesh import init_device_mesh
                mesh = init_device_mesh("cpu", (WORLD,))
                model = _model(kind, torch.float64)
                if kind == "layer":
                    fully_shard(model.gru, mesh=mesh)  # the GRU layer as its own unit
                fully_shard(model, mesh=mesh)
                history = _train(model, rows)
                results[("fsdp", kind)] = [
                    {n: p.full_tensor() for n, p in h.items()} for h in history]
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
        dist.barrier()
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(out_dir):
    """Runs the workers; kills them and fails the test at the deadline."""
    ctx = mp.start_processes(_worker, args=(_free_port(), out_dir), nprocs=WORLD, join=False,
                             start_method="spawn")
    deadline = time.monotonic() + DEADLINE_S
    try:
        while not ctx.join(timeout=5):  # raises if a worker failed
            if time.monotonic() > deadline:
                pytest.fail(f"DDP workers did not finish within {DEADLINE_S} s")
    finally:
        for p in ctx.processes:
            if p.is_alive():
                p.kill()
                p.join(5)


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    """Runs the two workers once for the module; their results, one dict per rank."""
    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    if sys.platform == "win32":
        pytest.skip("gloo tcp init on Windows is not tested")
    out = tmp_path_factory.mktemp("ddp")
    _spawn(str(out))
    return [torch.load(out / f"rank{r}.pt") for r in range(WORLD)]


def test_ddp_step_equals_single_process_step(ranks):
    for kind in _kinds():
        for dtype in DTYPES:
            key = (kind, str(dtype))
            single = _train(_model(kind, dtype), slice(0, B))
            tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else \
                dict(rtol=1e-5, atol=1e-6)
            initial = dict(_model(kind, dtype).named_parameters())
            for step in range(STEPS):
                for name, want in single[step].items():
                    # the ranks hold identical replicas (same averaged gradients)...
                    torch.testing.assert_close(ranks[0][key][step][name],
                                               ranks[1][key][step][name], rtol=0, atol=0)
                    # ...equal to the single-process step on the whole batch
                    torch.testing.assert_close(ranks[0][key][step][name], want, **tol,
                                               msg=lambda m: f"{key} step {step} {name}: {m}")
            # and the steps really moved every parameter (the comparison is not vacuous)
            for name, p in initial.items():
                assert not torch.equal(single[-1][name], p.detach()), f"{key}: {name} did not move"


@pytest.mark.skipif(_fully_shard() is None, reason="FSDP2 (fully_shard) needs torch >= 2.6")
@pytest.mark.parametrize("kind", _kinds())
def test_fsdp2_step_equals_single_process_step(ranks, kind):
    single = _train(_model(kind, torch.float64), slice(0, B))
    for step in range(STEPS):
        for name, want in single[step].items():
            for r in range(WORLD):
                torch.testing.assert_close(
                    ranks[r][("fsdp", kind)][step][name], want, rtol=1e-10, atol=1e-12,
                    msg=lambda m: f"fsdp {kind} rank {r} step {step} {name}: {m}")


def test_half_batch_gradients_differ_from_full_batch():
    """Sanity check of the test's premise: one rank's half alone does NOT give the full-batch
    step, so agreement above requires DDP's gradient averaging."""
    full = _train(_model("functional", torch.float64), slice(0, B))
    half = _train(_model("functional", torch.float64), slice(0, B // WORLD))
    assert not torch.allclose(full[0]["kernel"], half[0]["kernel"], rtol=1e-6, atol=1e-9)
