"""ONNX export of gru_cuda models: `torch.onnx.export` understands `torch.ops.gru_cuda.*`.

Importing gru_cuda is all it takes: a model holding `gru_cuda.GRU`, `RNN(GRUCell)`,
`Bidirectional` or calling `gru_cuda.functional.gru` exports with a plain

    torch.onnx.export(model, (x,), "model.onnx")

with the torch.export-based exporter (the default) and with the TorchScript-based one
(`dynamo=False`). Each GRU call becomes one ONNX `GRU` node where ONNX can express it
(docs/deploy.md has the table); other configurations fail at export time with an error that
names the option.

The translations are installed lazily, so that `import gru_cuda` does not import onnxscript
(about two seconds): they are added when torch imports its exporter's function table or
`torch.onnx`, or right away if those are already imported.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

from gru_cuda.onnx._graph import ONNX_GRU_ACTIVATIONS, ExportError

__all__ = ["ExportError", "ONNX_GRU_ACTIVATIONS", "register"]

# Module imported by every torch.export-based ONNX export before it reads its function table.
_DYNAMO_TABLE = "torch.onnx._internal.exporter._torchlib._torchlib_registry"
_TORCH_ONNX = "torch.onnx"
_lock = threading.Lock()
_done = set()


def _register_dynamo() -> None:
    from gru_cuda.onnx import _dynamo
    _dynamo.register()


def _register_torchscript() -> None:
    import torch.onnx
    if not hasattr(torch.onnx, "register_custom_op_symbolic"):
        return  # a torch without the TorchScript exporter
    from gru_cuda.onnx import _torchscript
    _torchscript.register()


_REGISTRARS = {_DYNAMO_TABLE: _register_dynamo, _TORCH_ONNX: _register_torchscript}


def _run(name: str) -> None:
    with _lock:
        if name in _done:
            return
        _done.add(name)
    _REGISTRARS[name]()


class _AfterImport(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Runs a registrar right after one of the watched modules has been imported."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in _REGISTRARS or fullname in _done:
            return None
        for finder in sys.meta_path:  # the spec the rest of the import system would give
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        else:
            return None
        if spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        self._loaders = getattr(self, "_loaders", {})
        self._loaders[fullname] = spec.loader
        spec.loader = self
        return spec

    def create_module(self, spec):
        return self._loaders[spec.name].create_module(spec)

    def exec_module(self, module):
        name = module.__spec__.name
        loader = self._loaders[name]
        module.__spec__.loader = module.__loader__ = loader
        loader.exec_module(module)
        _run(name)


_finder = _AfterImport()


def register() -> None:
    """Installs the translations of `torch.ops.gru_cuda.gru_forward` for both ONNX exporters.

    Called by `import gru_cuda`; repeated calls do nothing. Where the exporter modules are
    already imported the translations are added now, otherwise when torch imports them.
    """
    for name in _REGISTRARS:
        if name in sys.modules:
            _run(name)
    if _finder not in sys.meta_path and not all(n in _done for n in _REGISTRARS):
        sys.meta_path.insert(0, _finder)


def available() -> bool:
    """True when onnxscript is installed (what the default exporter needs)."""
    return importlib.util.find_spec("onnxscript") is not None
