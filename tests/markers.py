"""Marks shared by the test modules. A plain module rather than conftest.py: with a conftest.py
in a subfolder (tests/cuda/conftest.py), `from conftest import ...` would pick up whichever
conftest pytest loaded last."""
import pytest

# The one marker of GPU-only tests: it marks them (`pytest -m cuda` selects exactly these) and,
# through pytest_collection_modifyitems in conftest.py, skips them where there is no GPU and CUDA
# build. Tests may also be marked with pytest.mark.cuda directly (e.g. in
# pytest.param(..., marks=...)).
requires_cuda = pytest.mark.cuda
