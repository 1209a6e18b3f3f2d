"""The command line, `python -m gru_cuda.bench [barrier] ...`."""
from __future__ import annotations

import os
import sys
from typing import List, Optional

from . import barrier
from .cases import expand_cases
from .config import build_parser, config_from_args
from .plot import plot
from .report import (TablePrinter, output_stem, persistent_goals, print_goals, print_metadata,
                     print_summary, summarize, tensor_core_goals, write_csv, write_json)
from .run import run_benchmark, start_metadata


def main(argv: Optional[List[str]] = None) -> int:
    """The benchmark CLI; a first argument `barrier` runs the barrier-latency subcommand."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["barrier"]:
        return barrier.main(argv[1:])
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args, argv)
    cases = expand_cases(cfg.blocks)
    if args.list:
        print(f"device {cfg.device}; candidates: {', '.join(c.key for c in cfg.candidates)}")
        for n in cfg.notes:
            print(f"# note: {n}")
        for c in cases:
            print(f"  {c.shape}  {c.dtype}  reset_after={c.reset_after}  {c.mode}")
        print(f"{len(cases)} cases")
        return 0
    if not cfg.candidates:
        raise SystemExit("no candidate to run")

    # the candidate column fits the longest label (gru_cuda[persistent_cluster:3xtf32])
    width = min(40, max([22] + [len(c.label) for c in cfg.candidates]))
    printer = TablePrinter(cfg.device.type == "cuda", label_width=width)
    meta = start_metadata(cfg)
    print_metadata(meta)
    for n in cfg.notes:
        print(f"# note: {n}")
    n_before = len(cfg.notes)
    meta, rows = run_benchmark(cfg, on_rows=printer.rows, meta=meta)
    for n in meta["notes"][n_before:]:
        print(f"# note: {n}")
    summary = summarize(rows)
    print_summary(meta, summary)
    goals = None
    if cfg.preset.startswith("persistent"):
        goals = persistent_goals(rows)
        print_goals(goals)
    elif cfg.preset.startswith("tensor-cores"):
        goals = tensor_core_goals(rows, meta)
        print_goals(goals, title="Goals of the tensor-core products")
    wrong = [r for r in rows if r["status"] == "WRONG"]
    if wrong:
        print(f"\n{len(wrong)} WRONG result(s): "
              + ", ".join(sorted({r['label'] for r in wrong})), file=sys.stdout)

    if not args.no_save:
        os.makedirs(args.out, exist_ok=True)
        stem = os.path.join(args.out, output_stem(meta, cfg.preset))
        write_csv(stem + ".csv", meta, rows)
        write_json(stem + ".json", meta, rows, summary, cfg, goals)
        written = [stem + ".csv", stem + ".json"]
        if not args.no_plot:
            why = plot(stem + ".png", meta, rows)
            if why:
                print(f"# plot skipped: {why}")
            else:
                written.append(stem + ".png")
        print("\nwrote " + ", ".join(written))
    return 0
