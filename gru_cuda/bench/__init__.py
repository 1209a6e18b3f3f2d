"""Benchmark of gru_cuda against torch.nn.GRU (cuDNN on a GPU), the PyTorch step loop and Keras 3.

Run `python -m gru_cuda.bench --help` (or `python benchmarks/bench_gru.py`). docs/benchmarks.md
explains the presets, the columns and the conventions; the short version:

* every candidate is first checked against the float64 step loop (`gru_cuda.reference.gru`);
  a candidate that disagrees is reported WRONG and not timed;
* times are medians of interleaved repetitions after a warm-up: CUDA events on a GPU, measured
  warm-L2 (right after a run of the same candidate) and cold-L2 (after writing a 256 MB
  buffer); `time.perf_counter` on the CPU;
* TFLOP/s follow DeepBench: 6·H²·B·T for the forward recurrence, 3x that for forward+backward
  and for a training step; a second figure adds the input projection, 6·F·H·B·T.

Modules: cases (shapes, presets, FLOPs), config (Config, the command line), metadata,
candidates, check (the float64 reference), timing, run, report (table, summary, CSV, JSON),
plot, barrier (the `barrier` subcommand), cli (`main`).
"""
from .candidates import (ALIASES, CANDIDATES, DEFAULT_CANDIDATES, QUICK_CANDIDATES,
                         BrokenCandidate, Candidate, CaseData, GruCudaCandidate, KerasCandidate,
                         KerasGruCudaCandidate, Model, StepLoopCandidate, TorchGRUCandidate,
                         path_label, register_candidate, resolve_candidates)
from .cases import DTYPES, MODES, PRESETS, Block, Case, Shape, expand_cases, flops, preset_blocks
from .check import (TOLERANCE, Reference, case_data, check_candidate, check_length,
                    compute_reference, make_master, rel_err)
from .cli import main
from .config import DEFAULT_OUT, Config, build_parser, config_from_args, default_device
from .metadata import collect_metadata
from .floor import floor_fractions
from .report import (persistent_goals, precision_text, summarize, tensor_core_goals,
                     write_csv, write_json)
from .run import run_benchmark, run_case
from .timing import Timer, TimingSettings, make_runner

__all__ = ["Shape", "Block", "Candidate", "Model", "CANDIDATES", "PRESETS", "register_candidate",
           "run_benchmark", "main", "collect_metadata", "flops",
           # the rest of the Python API (tests, custom candidates, scripts)
           "Case", "CaseData", "Config", "TimingSettings", "MODES", "DTYPES", "TOLERANCE",
           "DEFAULT_OUT", "ALIASES", "DEFAULT_CANDIDATES", "QUICK_CANDIDATES",
           "GruCudaCandidate", "TorchGRUCandidate", "StepLoopCandidate", "KerasCandidate",
           "KerasGruCudaCandidate", "BrokenCandidate", "resolve_candidates", "path_label",
           "expand_cases",
           "preset_blocks", "Reference", "make_master", "case_data", "compute_reference",
           "check_length", "rel_err", "check_candidate", "build_parser", "config_from_args",
           "default_device", "Timer", "make_runner", "run_case", "summarize", "persistent_goals",
           "write_csv", "write_json", "floor_fractions", "precision_text", "tensor_core_goals"]
