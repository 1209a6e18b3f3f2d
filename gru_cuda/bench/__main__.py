"""`python -m gru_cuda.bench`: see gru_cuda/bench/cli.py and docs/benchmarks.md."""
import sys

from gru_cuda.bench.cli import main

sys.exit(main())
