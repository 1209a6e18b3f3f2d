"""gru_cuda: fused CPU and CUDA kernels for the Keras GRU, as a PyTorch extension.

Importing the package loads the compiled library, which registers the ops
`torch.ops.gru_cuda.gru_forward` and `torch.ops.gru_cuda.gru_backward`.
"""
from gru_cuda._library import _C
from gru_cuda import activations, functional, ops, reference  # noqa: F401  (ops registers autograd)

__version__ = "0.1.0"


def build_info() -> dict:
    """How the compiled library was built: {'cuda': bool, 'torch_version_at_build': str, ...}."""
    return dict(_C.build_info())


__all__ = ["activations", "build_info", "functional", "ops", "reference"]
