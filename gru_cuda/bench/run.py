"""Running the benchmark: every case checked, then timed, one result row per candidate."""
from __future__ import annotations

import gc
import math
import sys
import time
from typing import Callable, Dict, List, Optional, Tuple

import torch

import gru_cuda

from .candidates import Candidate, GruCudaCandidate, keras_version, path_label
from .cases import DTYPES, SHORT_DTYPE, Case, Shape, expand_cases, flops
from .check import (TOLERANCE, Reference, case_data, check_candidate, check_length,
                    compute_reference, make_master)
from .config import Config
from .floor import FLOOR_KEY, floor_fractions, gemm_floor_runner
from .metadata import busy_reason, collect_metadata, load_average_text, read_cpu_load
from .timing import Timer, make_runner, quantiles


class Progress:
    """A text progress bar on stderr (a line per ~10% when stderr is not a terminal)."""

    def __init__(self, total: int, enabled: bool):
        self.total, self.done, self.enabled = total, 0, enabled and total > 0
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()
        self._last_decile = -1

    def clear(self):
        if self.enabled and self.tty:
            sys.stderr.write("\r\033[K")
            sys.stderr.flush()

    def update(self, label: str):
        if not self.enabled:
            return
        frac = self.done / self.total
        elapsed = time.perf_counter() - self.t0
        eta = elapsed / frac * (1 - frac) if frac > 0 else float("nan")
        eta_s = "--" if math.isnan(eta) else fmt_dur(eta)
        width = 28
        bar = "#" * int(frac * width) + "." * (width - int(frac * width))
        line = f"[{bar}] {self.done}/{self.total} {fmt_dur(elapsed)} eta {eta_s}  {label}"
        if self.tty:
            sys.stderr.write("\r\033[K" + line[:160])
            sys.stderr.flush()
        elif int(frac * 10) != self._last_decile:
            self._last_decile = int(frac * 10)
            sys.stderr.write(line + "\n")
            sys.stderr.flush()

    def finish(self):
        if self.enabled:
            self.clear()
            sys.stderr.write(f"{self.total} cases in {fmt_dur(time.perf_counter() - self.t0)}\n")
            sys.stderr.flush()


def fmt_dur(s: float) -> str:
    s = int(round(s))
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


def error_text(e: BaseException) -> str:
    msg = str(e).strip().splitlines()
    return f"{type(e).__name__}: {msg[0] if msg else ''}"[:200]


def run_case(case: Case, master: dict, ref: Reference, cfg: Config, timer: Timer) -> List[dict]:
    """Checks, then times, every candidate on one case; one result row per candidate."""
    s = case.shape
    dtype = DTYPES[case.dtype]
    tol_out, tol_grad = TOLERANCE[case.dtype]
    data = case_data(master, case.reset_after, dtype, cfg.device)
    rows: Dict[str, dict] = {}
    runners: Dict[str, Callable[[], None]] = {}
    models = {}
    for cand in cfg.candidates:
        row = {"B": s.B, "T": s.T, "H": s.H, "F": s.F, "dtype": case.dtype,
               "reset_after": case.reset_after, "mode": case.mode, "candidate": cand.key,
               "label": cand.label, "status": "skipped", "note": "", "check_steps": ref.steps,
               "tolerance": tol_out, "tolerance_grad": tol_grad,
               "gflop": flops(s, case.mode) / 1e9,
               "gflop_with_input_proj": flops(s, case.mode, input_projection=True) / 1e9}
        rows[cand.key] = row
        why = cand.skip_reason(case, cfg)
        if why:
            row["note"] = why
            continue
        try:
            model = cand.build(data, case, cfg)
            errs = check_candidate(model, data, ref, case.mode)
        except Exception as e:
            row.update(status="error", note=error_text(e))
            if cfg.device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        row["max_err"] = max(errs.values())
        row["errors"] = dict(errs)
        # worst error relative to its own bound (NaN compares False: also WRONG)
        over = {k: v / (tol_out if k == "out" else tol_grad) for k, v in errs.items()}
        bad = max(over, key=over.get)
        if not all(v <= 1 for v in over.values()):
            bound = tol_out if bad == "out" else tol_grad
            row.update(status="WRONG", note=f"{bad} off by {errs[bad]:.3g} x max|ref| "
                                            f"(tolerance {bound:g}); not timed")
            continue
        row["status"] = "ok"
        models[cand.key] = model
        runners[cand.key] = make_runner(model, data, case.mode)
        if ref.steps < s.T:
            row["note"] = f"checked on the first {ref.steps} of {s.T} steps"

    # CPU rows are measured against the products alone too (floor.py), in the same rounds.
    if runners and cfg.device.type == "cpu":
        runners[FLOOR_KEY] = gemm_floor_runner(data, case.reset_after, case.mode)

    def on_error(name, e):
        if name in rows:
            rows[name].update(status="error", note=error_text(e))

    ours = {c.key: c for c in cfg.candidates if isinstance(c, GruCudaCandidate)}
    ran: Dict[str, dict] = {}  # gru_cuda.dispatch.last_path() after each of ours

    def probe(name):
        if name in ours:
            ran[name] = gru_cuda.dispatch.last_path()
            rows[name]["path"] = path_label(case.mode, ran[name])

    times, reps = timer.run(runners, on_error, probe) if runners else ({}, 0)
    floor = times.pop(FLOOR_KEY, None)
    floor_ms = quantiles(floor["warm"])[1] if floor else None
    for key, t in times.items():
        row = rows[key]
        if row["status"] != "ok":
            continue
        row["repeats"] = reps
        row["ms_p25"], row["ms"], row["ms_p75"] = quantiles(t["warm"])
        if t["cold"]:
            row["ms_cold_p25"], row["ms_cold"], row["ms_cold_p75"] = quantiles(t["cold"])
        if row["ms"]:
            row["tflops"] = flops(s, case.mode) / (row["ms"] * 1e-3) / 1e12
            row["tflops_with_input_proj"] = (flops(s, case.mode, input_projection=True)
                                             / (row["ms"] * 1e-3) / 1e12)
        if floor_ms and row["ms"]:
            row["floor_ms"] = floor_ms
            row["x_floor"] = row["ms"] / floor_ms
        if row.get("ms_cold"):
            row["tflops_cold"] = flops(s, case.mode) / (row["ms_cold"] * 1e-3) / 1e12
        if row["ms"]:
            row["step_us"] = row["ms"] * 1e3 / s.T
        if key in ran:
            _persistent_floors(row, ours[key], case, cfg, ran[key])
    for base, col in (("torch", "vs_torch"), ("steploop", "vs_steploop"), ("keras", "vs_keras")):
        b = rows.get(base)
        if not b or b["status"] != "ok" or not b.get("ms"):
            continue
        for row in rows.values():
            if row["status"] == "ok" and row.get("ms"):
                row[col] = b["ms"] / row["ms"]
                if col == "vs_torch" and b.get("ms_cold") and row.get("ms_cold"):
                    row["vs_torch_cold"] = b["ms_cold"] / row["ms_cold"]
    del models, runners, data
    return list(rows.values())


def _persistent_floors(row: dict, cand: GruCudaCandidate, case: Case, cfg: Config,
                       ran: dict) -> None:
    """tc_floor and barrier_floor of a gru_cuda row whose run went persistent, from the
    capacity model's plans under the candidate's forcing; only where the plan is what ran (a
    direction that ran stepwise has no modelled floor and adds nothing)."""
    directions = ("forward",) if case.mode == "fwd" else ("forward", "backward")
    if not any((ran.get(d) or "").startswith("persistent") for d in directions):
        return
    plan = cand.explain(case, cfg)
    capacity = (plan or {}).get("capacity") or {}
    used = {}
    for d in directions:
        if not (ran.get(d) or "").startswith("persistent"):
            continue
        p = capacity.get(d) or {}
        planned = (p.get("path"), p.get("product") or None)
        actual = (ran[d], ran.get(f"{d}_product"))
        if planned != actual:
            shown = ":".join(filter(None, planned)) or "nothing"
            why = (f"no floors: the capacity model plans {shown} for the {d}, "
                   f"{':'.join(filter(None, actual))} ran")
            row["note"] = f"{row['note']}; {why}" if row.get("note") else why
            return
        used[d] = p
    row.update(floor_fractions(used.get("forward"), used.get("backward"), case.mode, case.shape.T,
                               row["ms"]))


def _unchecked_row(case: Case, cand: Candidate, why: str) -> dict:
    s = case.shape
    return {"B": s.B, "T": s.T, "H": s.H, "F": s.F, "dtype": case.dtype,
            "reset_after": case.reset_after, "mode": case.mode, "candidate": cand.key,
            "label": cand.label, "status": "error",
            "note": f"the float64 reference failed, so nothing was checked or timed: {why}"}


def start_metadata(cfg: Config) -> dict:
    """The run's metadata, collected once at its start (Keras version included); a note in
    cfg.notes when the machine looks busy."""
    load = read_cpu_load()
    meta = collect_metadata(cfg.device, load)
    meta["keras"] = keras_version(cfg.candidates)
    busy = busy_reason(load)
    if busy:
        cfg.notes.insert(0, f"the machine is busy ({busy}): expect noisy timings")
    return meta


def run_benchmark(cfg: Config, on_rows: Optional[Callable[[List[dict]], None]] = None,
                  meta: Optional[dict] = None) -> Tuple[dict, List[dict]]:
    """Runs every case of cfg.blocks; returns (metadata, result rows). `meta`: the
    start_metadata(cfg) of this run when the caller has it already (it is completed here)."""
    if cfg.device.type == "cuda":
        torch.backends.cudnn.enabled = True  # the baseline is cuDNN, not a native fallback
    if meta is None:
        meta = start_metadata(cfg)
    cases = expand_cases(cfg.blocks)
    if cfg.device.type != "cuda":
        dropped = [c for c in cases if c.dtype == "float16"]
        if dropped:
            cfg.notes.append(f"{len(dropped)} float16 case(s) dropped: float16 runs on a GPU only")
            cases = [c for c in cases if c.dtype != "float16"]
    timer = Timer(cfg.device, cfg.timing)
    check_device = cfg.check_device or cfg.device
    progress = Progress(len(cases), cfg.progress)
    rows: List[dict] = []
    masters: Dict[Shape, dict] = {}
    refs: Dict[Tuple[Shape, bool], object] = {}  # a Reference, or why it failed
    for case in cases:
        progress.update(f"{case.shape} {SHORT_DTYPE[case.dtype]} "
                        f"ra={'T' if case.reset_after else 'F'} {case.mode}")
        key = (case.shape, case.reset_after)
        if key not in refs:  # cases come grouped: drop the previous group's tensors
            masters = {case.shape: masters.get(case.shape)
                       or make_master(case.shape, cfg.seed, cfg.device)}
            refs = {k_: v for k_, v in refs.items() if k_[0] == case.shape}
            gc.collect()
            if cfg.device.type == "cuda":
                torch.cuda.empty_cache()
            grads = any(c.mode != "fwd" for c in cases if (c.shape, c.reset_after) == key)
            try:
                refs[key] = compute_reference(masters[case.shape], case.reset_after,
                                              check_length(case.shape, cfg), check_device, grads)
            except Exception as e:  # e.g. out of memory: nothing of this group can be checked
                refs[key] = error_text(e)
                if check_device.type == "cuda":
                    torch.cuda.empty_cache()
        if isinstance(refs[key], str):
            case_rows = [_unchecked_row(case, c, refs[key]) for c in cfg.candidates]
        else:
            case_rows = run_case(case, masters[case.shape], refs[key], cfg, timer)
        rows.extend(case_rows)
        progress.done += 1
        progress.clear()
        if on_rows is not None:
            on_rows(case_rows)
    progress.finish()
    meta["load_average_end"] = load_average_text(read_cpu_load())
    meta["notes"] = list(cfg.notes)
    return meta, rows
