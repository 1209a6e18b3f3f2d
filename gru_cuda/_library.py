"""Loads the compiled library, which registers torch.ops.gru_cuda.* on import."""
import torch  # noqa: F401  (loads libtorch/libc10, which _C links against)

try:
    from gru_cuda import _C  # noqa: F401
except ImportError as e:  # pragma: no cover - depends on the install
    raise ImportError(
        "gru_cuda's compiled library gru_cuda._C is missing or does not match this torch; "
        "build it with `pip install --no-build-isolation -e .` from the repository root "
        f"(original error: {e})"
    ) from e
