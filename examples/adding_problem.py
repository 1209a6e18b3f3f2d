"""The adding problem, trained with gru_cuda.GRU and with torch.nn.GRU from the same weights.

Each input is a sequence of T steps with two channels: a random value in [0, 1) and a marker
that is 1 at exactly two steps. The target is the sum of the two marked values (Hochreiter &
Schmidhuber 1997). Predicting the mean, 1.0, scores an MSE of 1/6 = 0.167; a model that
remembers the marked values across the sequence goes far below that.

Both models start from identical weights (gru_cuda's Keras-layout weights converted with
gru_cuda.conversion.keras_to_torch), see the same batches in the same order and use the same
optimizer, so their loss curves agree to rounding error; the script prints both and the time
per epoch of each.

    python examples/adding_problem.py                 # CPU or GPU, well under a minute
    python examples/adding_problem.py --epochs 30 --seq-len 100 --device cuda
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
from torch import nn

import gru_cuda
from gru_cuda.conversion import keras_to_torch


def adding_problem(n: int, seq_len: int, generator: torch.Generator):
    values = torch.rand(n, seq_len, generator=generator)
    # two distinct marked steps per sequence: the first in the first half, the second after
    first = torch.randint(0, seq_len // 2, (n,), generator=generator)
    second = torch.randint(seq_len // 2, seq_len, (n,), generator=generator)
    markers = torch.zeros(n, seq_len)
    rows = torch.arange(n)
    markers[rows, first] = 1.0
    markers[rows, second] = 1.0
    x = torch.stack([values, markers], dim=-1)               # (n, T, 2)
    y = (values * markers).sum(dim=1, keepdim=True)          # (n, 1)
    return x, y


class GruCudaModel(nn.Module):
    def __init__(self, units: int):
        super().__init__()
        # Keras defaults: glorot-uniform kernel, orthogonal recurrent kernel, zero bias
        self.gru = gru_cuda.GRU(units, input_size=2)          # returns the last output (B, H)
        self.head = nn.Linear(units, 1)

    def forward(self, x):
        return self.head(self.gru(x))


class TorchModel(nn.Module):
    def __init__(self, units: int):
        super().__init__()
        self.gru = nn.GRU(2, units, batch_first=True)
        self.head = nn.Linear(units, 1)

    def forward(self, x):
        return self.head(self.gru(x)[0][:, -1])


def twin_models(units: int, device: torch.device):
    """A gru_cuda model and a torch.nn.GRU model computing the same function."""
    ours = GruCudaModel(units)
    theirs = TorchModel(units)
    g = ours.gru
    # Keras [z, r, h] column blocks -> torch [r, z, n] row blocks, (2, 3H) bias -> two (3H,)
    theirs.gru.load_state_dict(keras_to_torch(g.kernel.detach(), g.recurrent_kernel.detach(),
                                              g.bias.detach()))
    theirs.head.load_state_dict(copy.deepcopy(ours.head.state_dict()))
    return ours.to(device), theirs.to(device)


def sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train_epoch(model, opt, batches, device) -> tuple:
    model.train()
    sync(device)
    t0 = time.perf_counter()
    total, n = 0.0, 0
    for x, y in batches:
        opt.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), y)
        loss.backward()
        opt.step()
        total += loss.item() * len(x)
        n += len(x)
    sync(device)
    return total / n, time.perf_counter() - t0


@torch.no_grad()
def evaluate(model, x, y) -> float:
    model.eval()
    return nn.functional.mse_loss(model(x), y).item()


def main(argv=None) -> int:
    default_device = ("cuda" if torch.cuda.is_available() and gru_cuda.build_info().get("cuda")
                      else "cpu")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--seq-len", type=int, default=40)
    p.add_argument("--units", type=int, default=32)
    p.add_argument("--train-size", type=int, default=2048)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-2)
    p.add_argument("--device", default=default_device)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    device = torch.device(args.device)

    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    x_train, y_train = adding_problem(args.train_size, args.seq_len, gen)
    x_test, y_test = adding_problem(1024, args.seq_len, gen)
    x_train, y_train, x_test, y_test = (t.to(device) for t in (x_train, y_train, x_test, y_test))

    ours, theirs = twin_models(args.units, device)
    opt_ours = torch.optim.Adam(ours.parameters(), lr=args.lr)
    opt_theirs = torch.optim.Adam(theirs.parameters(), lr=args.lr)
    print(f"adding problem: T={args.seq_len}, {args.train_size} training sequences, batch "
          f"{args.batch_size}, GRU units {args.units}, Adam lr {args.lr}, device {device}")
    print(f"initial test MSE: gru_cuda {evaluate(ours, x_test, y_test):.6f}, "
          f"torch.nn.GRU {evaluate(theirs, x_test, y_test):.6f} (predicting 1.0 scores 0.1667)")
    print(f"{'epoch':>5} | {'train loss':>11} {'':>11} {'|diff|':>8} | {'test MSE':>9} {'':>9} | "
          f"{'s/epoch':>8} {'':>8}")
    print(f"{'':>5} | {'gru_cuda':>11} {'torch':>11} {'':>8} | {'gru_cuda':>9} {'torch':>9} | "
          f"{'gru_cuda':>8} {'torch':>8}")

    times_ours, times_theirs = [], []
    for epoch in range(1, args.epochs + 1):
        order = torch.randperm(args.train_size, generator=gen).to(device)
        batches = [(x_train[i], y_train[i]) for i in order.split(args.batch_size)]
        # the two models alternate epochs, so machine noise hits both alike
        loss_ours, t_ours = train_epoch(ours, opt_ours, batches, device)
        loss_theirs, t_theirs = train_epoch(theirs, opt_theirs, batches, device)
        times_ours.append(t_ours)
        times_theirs.append(t_theirs)
        print(f"{epoch:>5} | {loss_ours:>11.6f} {loss_theirs:>11.6f} "
              f"{abs(loss_ours - loss_theirs):>8.1e} | {evaluate(ours, x_test, y_test):>9.5f} "
              f"{evaluate(theirs, x_test, y_test):>9.5f} | {t_ours:>8.3f} {t_theirs:>8.3f}")

    # the first epoch pays one-time costs (allocations, cuDNN plans): the median of the rest
    def med(v):
        v = sorted(v[1:] or v)
        return v[len(v) // 2]
    print(f"median time per epoch (epochs 2..{args.epochs}): gru_cuda {med(times_ours):.3f} s, "
          f"torch.nn.GRU {med(times_theirs):.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
