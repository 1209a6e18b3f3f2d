"""Timing: one runner per candidate and mode, timed interleaved on one device.

Medians of interleaved repetitions after a warm-up: CUDA events on a GPU, measured cold-L2
(after writing a 256 MB buffer) and warm-L2 (right after a run of the same candidate);
`time.perf_counter` on the CPU.
"""
from __future__ import annotations

import gc
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .candidates import CaseData, Model, leaf

L2_FLUSH_BYTES = 256 * 1024 * 1024


@dataclass
class TimingSettings:
    """How much to time: `warmup` untimed runs of each runner, then `repeats` rounds, or, when
    `repeats` is None, as many as fit `budget_s` seconds within [min_repeats, max_repeats]."""
    repeats: Optional[int] = None
    min_repeats: int = 5
    max_repeats: int = 30
    warmup: int = 2
    budget_s: float = 1.0


def make_runner(model: Model, data: CaseData, mode: str) -> Callable[[], None]:
    """One timed unit of work. fwd: inference (no autograd). fwd+bwd: forward then backward of
    a fixed upstream gradient, x requiring grad (a layer inside a network). train: zero_grad,
    forward, MSE loss on the outputs, backward, Adam step (x is data: no grad)."""
    params = model.params
    if mode == "fwd":
        x = data.x

        def run():
            with torch.no_grad(), model.context():
                model.forward(x)
    elif mode == "fwd+bwd":
        x = leaf(data.x)
        gy = data.grad_out

        def run():
            x.grad = None
            for p in params:
                p.grad = None
            with model.context():
                model.forward(x).backward(gy)
    elif mode == "train":
        x, target = data.x, data.target
        opt = torch.optim.Adam(params, lr=1e-4)

        def run():
            with model.context():
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(model.forward(x), target)
                loss.backward()
                opt.step()
    else:
        raise ValueError(f"unknown mode {mode!r}")
    return run


class Timer:
    """Interleaved timing of several runners on one device."""

    def __init__(self, device: torch.device, settings: Optional[TimingSettings] = None):
        self.device = device
        self.settings = settings if settings is not None else TimingSettings()
        self.cuda = device.type == "cuda"
        self._flush_buf = None

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.device)

    def flush_l2(self):
        if self._flush_buf is None:
            self._flush_buf = torch.empty(L2_FLUSH_BYTES, dtype=torch.uint8, device=self.device)
        self._flush_buf.zero_()  # writing 256 MB evicts every line of a 50-60 MB L2

    def wall(self, fn) -> float:
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def run(self, runners: Dict[str, Callable[[], None]],
            on_error: Callable[[str, BaseException], None],
            probe: Optional[Callable[[str], None]] = None) -> Tuple[Dict[str, dict], int]:
        """Warm-up, then `reps` rounds; each round runs every runner once (CPU) or twice (GPU:
        cold-L2 after a flush, then warm-L2 right after), in an order rotated every round so
        that drift and neighbours hit every candidate alike. Returns per-runner times (ms)."""
        st = self.settings
        live = dict(runners)

        def guarded(name, fn):
            try:
                fn()
                return True
            except Exception as e:  # one failing candidate must not stop the others
                on_error(name, e)
                live.pop(name, None)
                if self.cuda:
                    torch.cuda.empty_cache()
                return False

        for _ in range(st.warmup):
            for name, fn in list(live.items()):
                guarded(name, fn)
        est = {}
        for name, fn in list(live.items()):
            t0 = time.perf_counter()
            if guarded(name, lambda: self.wall(fn)):
                est[name] = time.perf_counter() - t0
                if probe is not None:  # right after this candidate's own full-size run
                    probe(name)
        if st.repeats is not None:
            reps = st.repeats
        else:
            per_round = sum(est.values()) * (2 if self.cuda else 1)
            reps = int(st.budget_s / per_round) if per_round > 0 else st.max_repeats
            reps = max(st.min_repeats, min(st.max_repeats, reps))

        times = {n: {"warm": [], "cold": []} for n in live}
        names = list(live)
        was_enabled = gc.isenabled()
        gc.collect(1)  # the young generations; run_benchmark does full collections
        gc.disable()  # a collection inside a timed run is noise, not the candidate's cost
        try:
            for r in range(reps):
                k = r % max(1, len(names))
                for name in names[k:] + names[:k]:
                    if name not in live:
                        continue
                    fn = live[name]
                    if self.cuda:
                        ev = [torch.cuda.Event(enable_timing=True) for _ in range(4)]

                        def timed(fn=fn, ev=ev):
                            self.flush_l2()
                            ev[0].record()
                            fn()
                            ev[1].record()
                            ev[2].record()
                            fn()
                            ev[3].record()
                        if guarded(name, timed):
                            times[name]["pending"] = times[name].get("pending", []) + [ev]
                    else:
                        t0 = time.perf_counter()
                        if guarded(name, fn):
                            times[name]["warm"].append((time.perf_counter() - t0) * 1e3)
                if self.cuda:  # one sync per round: the host never runs far ahead
                    torch.cuda.synchronize(self.device)
                    for name in names:
                        for ev in times[name].pop("pending", []):
                            times[name]["cold"].append(ev[0].elapsed_time(ev[1]))
                            times[name]["warm"].append(ev[2].elapsed_time(ev[3]))
        finally:
            if was_enabled:
                gc.enable()
        return {n: t for n, t in times.items() if n in live}, reps


def quantiles(v: List[float]) -> Tuple[Optional[float], Optional[float], Optional[float]]:
    """(p25, median, p75) of `v`; Nones when empty."""
    if not v:
        return None, None, None
    if len(v) == 1:
        return v[0], v[0], v[0]
    q = statistics.quantiles(v, n=4, method="inclusive")
    return q[0], statistics.median(v), q[2]
