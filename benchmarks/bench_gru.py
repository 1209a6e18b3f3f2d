#!/usr/bin/env python
"""Benchmark gru_cuda against torch.nn.GRU (cuDNN), the PyTorch step loop and Keras 3.

A thin entry point for `python -m gru_cuda.bench` that also works in a checkout where the
package is not installed:

    python benchmarks/bench_gru.py               # the default preset on the available device
    python benchmarks/bench_gru.py --quick       # seconds
    python benchmarks/bench_gru.py barrier       # barrier latencies of the persistent kernels
    python benchmarks/bench_gru.py --help

Results go to gru_bench_results/ in the current directory (--out DIR).

See docs/benchmarks.md for the presets, the columns and the conventions.
"""
import os
import sys

try:
    from gru_cuda.bench import main
except ImportError:  # not installed: use the checkout this script lives in
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from gru_cuda.bench import main

if __name__ == "__main__":
    sys.exit(main())
