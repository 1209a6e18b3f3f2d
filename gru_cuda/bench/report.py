"""Output: the terminal table, the speedup summary, the presets' goals, CSV, JSON."""
from __future__ import annotations

import csv
import json
import math
import re
import sys
from typing import Dict, List, Optional, Tuple

from .cases import SHORT_DTYPE
from .check import TOLERANCE
from .config import Config

RESULT_FIELDS = [
    "B", "T", "H", "F", "dtype", "reset_after", "mode", "candidate", "label", "status", "path",
    "note",
    "check_steps", "max_err", "tolerance", "tolerance_grad", "errors", "ms", "ms_p25", "ms_p75",
    "ms_cold", "ms_cold_p25", "ms_cold_p75", "repeats", "gflop", "gflop_with_input_proj", "tflops",
    "tflops_with_input_proj", "tflops_cold", "vs_torch", "vs_torch_cold", "vs_steploop",
    "floor_ms", "x_floor", "vs_keras", "step_us", "tc_floor", "barrier_floor",
]
META_FIELDS = ["device", "device_name", "sm_count", "compute_capability", "driver", "cuda",
               "cudnn", "cudnn_tf32", "matmul_tf32", "torch", "gru_cuda", "git_commit", "cpu_model",
               "torch_threads", "date"]


def _f(v, fmt: str, missing: str = "-") -> str:
    return missing if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def _ms(v) -> str:
    if v is None:
        return "-"
    return format(v, ".1f" if v >= 100 else ".3f" if v >= 1 else ".4f")


def _us(v) -> str:
    if v is None:
        return "-"
    return format(v, ".0f" if v >= 1000 else ".1f" if v >= 10 else ".2f")


class TablePrinter:
    def __init__(self, cuda: bool, out=sys.stdout, label_width: int = 22):
        self.cuda, self.out = cuda, out
        self.label_width = label_width
        cols = [("B", 4), ("T", 5), ("H", 5), ("F", 5), ("dtype", 5), ("ra", 2), ("mode", 7),
                ("candidate", label_width), ("status", 7), ("ms", 9)]
        if cuda:
            cols += [("ms cold", 9)]
        cols += [("us/step", 8), ("TFLOP/s", 8), ("x torch", 7), ("x loop", 7)]
        if not cuda:  # time over the GEMM floor measured in the same rounds (floor.py)
            cols += [("x floor", 7)]
        else:  # achieved fractions of the persistent kernels' modelled floors (floor.py)
            cols += [("tc fl", 5), ("bar fl", 6)]
        cols += [("err", 7)]
        self.cols = cols
        self.printed_header = False
        self._last_case = None

    # text columns left-aligned, numbers right-aligned
    TEXT = ("dtype", "ra", "mode", "candidate", "status")

    def _join(self, cells: List[str]) -> str:
        return " ".join(c.ljust(w) if n in self.TEXT else c.rjust(w)
                        for c, (n, w) in zip(cells, self.cols))

    def header(self):
        line = self._join([n for n, _ in self.cols])
        print(line, file=self.out)
        print("-" * len(line), file=self.out)
        self.printed_header = True

    def rows(self, rows: List[dict]):
        if not self.printed_header:
            self.header()
        for r in rows:
            case = (r["B"], r["T"], r["H"], r["F"], r["dtype"], r["reset_after"], r["mode"])
            same = case == self._last_case
            self._last_case = case
            cells = ["" if same else str(r["B"]), "" if same else str(r["T"]),
                     "" if same else str(r["H"]), "" if same else str(r["F"]),
                     "" if same else SHORT_DTYPE[r["dtype"]],
                     "" if same else ("T" if r["reset_after"] else "F"),
                     "" if same else r["mode"], r["label"][:self.label_width], r["status"]]
            if r["status"] == "ok":
                cells.append(_ms(r.get("ms")))
                if self.cuda:
                    cells.append(_ms(r.get("ms_cold")))
                cells += [_us(r.get("step_us")), _f(r.get("tflops"), ".3g"),
                          _f(r.get("vs_torch"), ".2f"), _f(r.get("vs_steploop"), ".2f")]
                if not self.cuda:
                    cells.append(_f(r.get("x_floor"), ".2f"))
                else:
                    cells += [_f(r.get("tc_floor"), ".2f"), _f(r.get("barrier_floor"), ".2f")]
                cells.append(_f(r.get("max_err"), ".0e"))
                line = self._join(cells)
                extra = [f"path {r['path']}"] if r.get("path") else []
                extra += [r["note"]] if r.get("note") else []
                if extra:
                    line += f"  ({'; '.join(extra)})"
            else:
                line = self._join(cells)
                if r["status"] == "WRONG":
                    line += f"  err {_f(r.get('max_err'), '.2e')}:"
                line += f"  {r.get('note', '')}"
            print(line.rstrip(), file=self.out)
        self.out.flush()


# (column, label, unit): speedups are ratios (x), the floors achieved fractions
_SUMMARY_COLUMNS = (("vs_torch", "vs torch.nn.GRU", "x"), ("vs_torch_cold", "cold-L2", "x"),
                    ("vs_steploop", "vs step loop", "x"), ("x_floor", "time / GEMM floor", "x"),
                    ("vs_keras", "vs keras.layers.GRU", "x"), ("tc_floor", "of tc floor", ""),
                    ("barrier_floor", "of barrier floor", ""))


def _geomean(v: List[float]) -> Optional[float]:
    v = [x for x in v if x and x > 0]
    return math.exp(sum(math.log(x) for x in v) / len(v)) if v else None


def summarize(rows: List[dict]) -> List[dict]:
    """Geometric-mean, min and max speedups of each gru_cuda candidate per dtype/mode/ra."""
    groups: Dict[tuple, Dict[str, List[float]]] = {}
    for r in rows:
        if r["status"] != "ok" or not r["candidate"].startswith("gru_cuda"):
            continue
        g = groups.setdefault((r["candidate"], r["dtype"], r["mode"], r["reset_after"]), {})
        for col, _, _ in _SUMMARY_COLUMNS:
            if r.get(col):
                g.setdefault(col, []).append(r[col])
    out = []
    for (cand, dt, mode, ra), g in groups.items():
        s = {"candidate": cand, "dtype": dt, "mode": mode, "reset_after": ra}
        for col, v in g.items():
            s[col] = {"geomean": _geomean(v), "min": min(v), "max": max(v), "n": len(v)}
        out.append(s)
    return out


def precision_text(meta: dict) -> Optional[str]:
    """Which precision float32 runs at on each side of a GPU run, from the TF32 switches the
    metadata recorded (None on a CPU: no TF32 there)."""
    cudnn, matmul = meta.get("cudnn_tf32"), meta.get("matmul_tf32")
    if cudnn is None or matmul is None:
        return None
    if cudnn == matmul:
        return (f"float32 rows: TF32 {'on' if cudnn else 'off'} on both sides (cuDNN and "
                f"gru_cuda's products/cuBLAS): the same precision")
    return (f"float32 rows: TF32 {'on' if cudnn else 'off'} for cuDNN but "
            f"{'on' if matmul else 'off'} for gru_cuda's products/cuBLAS: NOT the same precision "
            "(--tf32 on|off sets both)")


def print_summary(meta: dict, summary: List[dict], out=sys.stdout):
    if not summary:
        return
    print("\nSpeedup of gru_cuda (geometric mean over shapes [min, max]; >1 = gru_cuda faster):",
          file=out)
    precision = precision_text(meta)
    if precision and any(s["dtype"] == "float32" for s in summary):
        print(f"  ({precision})", file=out)
    width = max(20, max(len(s["candidate"]) for s in summary))
    for s in summary:
        parts = []
        for col, label, unit in _SUMMARY_COLUMNS:
            if col in s:
                v = s[col]
                parts.append(f"{label} {v['geomean']:.2f}{unit} [{v['min']:.2f}, {v['max']:.2f}] "
                             f"n={v['n']}")
        if parts:
            print(f"  {s['candidate']:<{width}} {SHORT_DTYPE[s['dtype']]:<4} {s['mode']:<7} "
                  f"ra={'T' if s['reset_after'] else 'F'}: " + "; ".join(parts), file=out)


def _case(r: dict) -> str:
    return f"B={r['B']} T={r['T']} H={r['H']} {SHORT_DTYPE[r['dtype']]} {r['mode']}"


def persistent_goals(rows: List[dict]) -> List[Tuple[str, str, str]]:
    """The persistent kernels' goals, each as (goal, verdict, detail), from the automatic
    dispatch (candidate gru_cuda) against torch.nn.GRU (cuDNN on a GPU) and itself:
    1. reset_after=True forward+backward at least 1.5x cuDNN for B <= 32, H <= 1024;
    2. never slower than cuDNN where a persistent path was chosen;
    3. reset_after=False within 1.3x of reset_after=True."""
    auto = {(r["B"], r["T"], r["H"], r["F"], r["dtype"], r["mode"], r["reset_after"]): r
            for r in rows if r["candidate"] == "gru_cuda" and r["status"] == "ok" and r.get("ms")}
    out = []

    def verdict(n, missed):
        return "no case" if n == 0 else ("met" if not missed else f"{len(missed)} of {n} missed")

    n1, bad1 = 0, []
    for r in auto.values():
        if r["reset_after"] and r["mode"] == "fwd+bwd" and r["B"] <= 32 and r["H"] <= 1024 \
                and r.get("vs_torch"):
            n1 += 1
            if r["vs_torch"] < 1.5:
                bad1.append(f"{_case(r)}: {r['vs_torch']:.2f}x")
    out.append(("reset_after fwd+bwd >= 1.5x cuDNN at B<=32, H<=1024", verdict(n1, bad1),
                "; ".join(bad1[:20]) or "-"))
    n2, bad2 = 0, []
    for r in auto.values():
        if (r.get("path") or "").startswith("persistent") and r.get("vs_torch"):
            n2 += 1
            if r["vs_torch"] < 1.0:
                bad2.append(f"{_case(r)} [{r['path']}]: {r['vs_torch']:.2f}x")
    out.append(("never slower than cuDNN where persistent is chosen", verdict(n2, bad2),
                "; ".join(bad2[:20]) or "-"))
    n3, bad3 = 0, []
    for k, r in auto.items():
        other = auto.get(k[:-1] + (True,))
        if not r["reset_after"] and other is not None:
            n3 += 1
            if r["ms"] > 1.3 * other["ms"]:
                bad3.append(f"{_case(r)}: {r['ms'] / other['ms']:.2f}x")
    out.append(("reset_after=False within 1.3x of reset_after=True", verdict(n3, bad3),
                "; ".join(bad3[:20]) or "-"))
    return out


def tensor_core_goals(rows: List[dict], meta: dict) -> List[Tuple[str, str, str]]:
    """The tensor-core products' goals, each as (goal, verdict, detail), from the automatic
    dispatch (candidate gru_cuda) against torch.nn.GRU at H = 1024, reset_after=True,
    forward+backward: at least 1.5x cuDNN at B = 16 and 32 and 1.0x at B = 64, in bfloat16 and
    in float32 with TF32 on both sides (a run without that has no float32 verdict)."""
    tf32 = bool(meta.get("cudnn_tf32")) and bool(meta.get("matmul_tf32"))
    out = []
    for dtype in ("bfloat16", "float32"):
        for batches, target in (((16, 32), 1.5), ((64,), 1.0)):
            goal = (f"{SHORT_DTYPE[dtype]}{' TF32' if dtype == 'float32' else ''} fwd+bwd "
                    f">= {target}x cuDNN at H=1024, B={'/'.join(map(str, batches))}")
            if dtype == "float32" and not tf32:
                why = ("no TF32 on a CPU" if meta.get("cudnn_tf32") is None else
                       "TF32 was not on for both cuDNN and gru_cuda; rerun with --tf32 on")
                out.append((goal, "not measured", why))
                continue
            cases = [r for r in rows if r["candidate"] == "gru_cuda" and r["status"] == "ok"
                     and r["dtype"] == dtype and r["mode"] == "fwd+bwd" and r["reset_after"]
                     and r["H"] == 1024 and r["B"] in batches and r.get("vs_torch")]
            missed = [f"{_case(r)}: {r['vs_torch']:.2f}x" for r in cases
                      if r["vs_torch"] < target]
            verdict = ("no case" if not cases else
                       "met" if not missed else f"{len(missed)} of {len(cases)} missed")
            out.append((goal, verdict, "; ".join(missed[:20]) or "-"))
    return out


def print_goals(goals: List[Tuple[str, str, str]], out=sys.stdout,
                title: str = "Goals of the persistent kernels"):
    print(f"\n{title} (gru_cuda's automatic dispatch):", file=out)
    for goal, verdict, detail in goals:
        print(f"  {goal}: {verdict}" + ("" if detail == "-" else f" ({detail})"), file=out)


def print_metadata(meta: dict, out=sys.stdout):
    if meta["device"].startswith("cuda"):
        sm = str(meta["compute_capability"]).replace(".", "")
        print(f"# {meta['device_name']} ({meta['sm_count']} SMs, sm_{sm}, "
              f"L2 {meta['l2_cache_mb']} MB) | driver {meta['driver']} | CUDA {meta['cuda']} | "
              f"cuDNN {meta['cudnn']} (TF32 {'on' if meta['cudnn_tf32'] else 'off'})", file=out)
    else:
        print(f"# {meta['device_name']} | {meta['cpu_count']} CPUs, torch threads "
              f"{meta['torch_threads']} | load average {meta['load_average']}", file=out)
    commit = f" (commit {meta['git_commit']})" if meta.get("git_commit") else ""
    print(f"# torch {meta['torch']} | gru_cuda {meta['gru_cuda']}{commit} | "
          f"keras {meta.get('keras')} | python {meta['python']} | {meta['date']}", file=out)


def _slug(s: str) -> str:
    s = re.sub(r"\(r\)|\(tm\)|cpu:|nvidia", "", s.lower())
    return re.sub(r"[^a-z0-9]+", "-", s).strip("-")[:40] or "device"


def output_stem(meta: dict, preset: str) -> str:
    dev = ("cpu-" + _slug(meta["cpu_model"]) if meta["device"] == "cpu"
           else _slug(meta["device_name"]))
    stamp = meta["date"][:19].replace("-", "").replace(":", "").replace("T", "-")
    return f"gru_bench_{preset}_{dev}_{stamp}"


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, dict):
        return ";".join(f"{k}={_csv_value(x)}" for k, x in v.items())
    return "" if v is None else v


def write_csv(path: str, meta: dict, rows: List[dict]):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(RESULT_FIELDS + META_FIELDS)
        for r in rows:
            w.writerow([_csv_value(r.get(k)) for k in RESULT_FIELDS]
                       + [_csv_value(meta.get(k)) for k in META_FIELDS])


def _json_clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None if math.isnan(v) else str(v)
    if isinstance(v, dict):
        return {k: _json_clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_clean(x) for x in v]
    return v


def write_json(path: str, meta: dict, rows: List[dict], summary: List[dict], cfg: Config,
               goals: Optional[List[Tuple[str, str, str]]] = None):
    t = cfg.timing
    doc = {
        "metadata": meta,
        "config": {
            "preset": cfg.preset, "argv": cfg.argv,
            "candidates": [c.key for c in cfg.candidates],
            "repeats": t.repeats, "min_repeats": t.min_repeats,
            "max_repeats": t.max_repeats, "warmup": t.warmup, "budget_s": t.budget_s,
            "check_device": str(cfg.check_device or cfg.device),
            "check_steps": cfg.check_steps, "seed": cfg.seed,
            "tolerance": {k: {"outputs": v[0], "gradients": v[1]} for k, v in TOLERANCE.items()},
        },
        "conventions": {
            "ms": "median wall time of one run (warm L2 on a GPU), milliseconds",
            "ms_cold": "median after writing a 256 MB buffer (cold L2), GPU only",
            "tflops": "DeepBench: 6*H^2*B*T per forward recurrence; x3 for fwd+bwd and train",
            "tflops_with_input_proj": "adds 6*F*H*B*T per forward for the input projection",
            "vs_torch": "time of torch.nn.GRU / time of this candidate (>1: faster)",
            "vs_steploop": "time of the PyTorch step loop / time of this candidate",
            "vs_keras": "time of keras.layers.GRU / time of this candidate (same Keras call)",
            "max_err": "max over checked tensors of max|candidate - float64 ref| / max|ref|",
            "step_us": "ms * 1000 / T: the median time per timestep, microseconds",
            "tc_floor": "persistent gru_cuda rows: (capacity model's floor_compute_us x T, "
                        "forward plan plus backward plan for modes with a backward) / measured "
                        "time; the product's multiply-adds at the device's peak rate for that "
                        "product; a direction that ran stepwise adds nothing",
            "barrier_floor": "the same with floor_barrier_us (the step's barriers at the "
                             "modelled barrier latency)",
            "path": "kernel path of each direction (forward/backward), with the recurrent "
                    "product of a persistent one (persistent:tensor_core)",
        },
        "precision": precision_text(meta),
        "summary": summary,
        "results": rows,
    }
    if goals is not None:
        doc["goals"] = [{"goal": g, "verdict": v, "detail": d} for g, v, d in goals]
    with open(path, "w") as f:
        json.dump(_json_clean(doc), f, indent=1)
