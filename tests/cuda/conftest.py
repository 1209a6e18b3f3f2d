"""pytest setup of the CUDA tests: the `path` fixture that forces one CUDA kernel path.

It lives here rather than in cuda_problems.py so that test modules get it from pytest's
fixture lookup instead of importing it (an imported fixture is shadowed by the test argument
of the same name, which linters flag as a redefinition)."""
import pytest

from gru_cuda import dispatch


@pytest.fixture(params=dispatch.CUDA_PATHS)
def path(request):
    """A CUDA kernel path, forced (dispatch.force_path) for the whole test; skipped with the
    reason where this device does not have it. Parametrize with indirect=["path"] to choose."""
    name = request.param
    here = dispatch.kernel_paths("cuda")
    if name not in here:
        pytest.skip(f"kernel path {name!r} does not run on this device "
                    f"(dispatch.kernel_paths('cuda') = {here})")
    with dispatch.force_path(name):
        yield name
