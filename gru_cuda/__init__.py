"""gru_cuda: fused CPU and CUDA kernels for the Keras GRU, as a PyTorch extension.

Importing the package loads the compiled library, which registers the ops
`torch.ops.gru_cuda.gru_forward` and `torch.ops.gru_cuda.gru_backward`.
"""
from gru_cuda._library import _C
from gru_cuda import activations, functional, ops, reference  # noqa: F401  (ops registers autograd)
from gru_cuda import constraints, conversion, initializers, regularizers  # noqa: F401
from gru_cuda.layers import GRU, RNN, Bidirectional, GRUCell
from gru_cuda.layers.compose import bidirectional, layer_gru, layer_gru_cell, layer_rnn
from gru_cuda import dispatch  # noqa: F401
from gru_cuda.dispatch import explain, force_path, kernel_paths, last_path, set_path

from gru_cuda._version import __version__
from gru_cuda import onnx  # teaches torch.onnx.export the ops (lazily)

onnx.register()


def build_info() -> dict:
    """How the compiled library was built: {'cuda': bool, 'torch_version_at_build': str, ...}."""
    return dict(_C.build_info())


__all__ = ["__version__", "activations", "build_info", "functional", "ops", "reference",
           "GRU", "GRUCell", "RNN", "Bidirectional",
           "layer_gru", "layer_gru_cell", "layer_rnn", "bidirectional",
           "constraints", "conversion", "initializers", "regularizers",
           "dispatch", "onnx", "explain", "force_path", "kernel_paths", "last_path", "set_path"]
