"""pytest setup of the whole suite: the `cuda` marker skips GPU tests where there is no GPU,
and every test draws fresh random inputs from a seed it reports when it fails. The shared
helpers are modules beside this file: problems.py (random GRU problems), compare.py
(comparison with the float64 reference) and markers.py (the `cuda` marker, requires_cuda)."""
import os

import pytest
import torch

os.environ.setdefault("KERAS_BACKEND", "torch")


def cuda_ready() -> bool:
    import gru_cuda
    return torch.cuda.is_available() and gru_cuda.build_info()["cuda"]


CUDA_SKIP_REASON = "needs a CUDA GPU and a CUDA build of gru_cuda"

# GPU-only tests carry the `cuda` marker (markers.requires_cuda, or pytest.mark.cuda directly);
# pytest_collection_modifyitems below skips them where cuda_ready() is False.


def pytest_collection_modifyitems(config, items):
    if cuda_ready():
        return
    skip = pytest.mark.skip(reason=CUDA_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("cuda") is not None:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _fresh_seed(request):
    """Fresh random inputs on every run, reproducible with GRU_TEST_SEED=<seed>."""
    seed = int(os.environ.get("GRU_TEST_SEED", torch.seed() % (2**31)))
    torch.manual_seed(seed)
    request.node.user_properties.append(("seed", seed))
    yield


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    rep = yield
    if rep.when == "call" and rep.failed:
        seeds = [v for k, v in item.user_properties if k == "seed"]
        if seeds:
            rep.sections.append(("seed", f"reproduce with GRU_TEST_SEED={seeds[0]}"))
    return rep
