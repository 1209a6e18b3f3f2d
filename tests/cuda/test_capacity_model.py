"""The capacity model's cluster-occupancy and wave logic
(csrc/kernels/persistent/persistent_capacity.h), CPU only, through gru_cuda._C.persistent_plan
on what-if device descriptions.

A what-if dict has no GPU behind it, so the model uses its documented estimate of the clusters
held at once (estimate_active_clusters): one CTA per SM, a cluster inside one GPC,
floor(SMs per GPC / cluster size) clusters per GPC, GPCs of 18 SMs when the dict has no
"gpc_count" (132 SMs: 7 GPCs). On a GPU the glue asks cudaOccupancyMaxActiveClusters instead;
tests/cuda/test_persistent.py covers that binding (persistent_max_active_clusters).
"""
import math

import pytest
import torch

from gru_cuda import dispatch
from gru_cuda._library import _C

from markers import requires_cuda

pytestmark = pytest.mark.skipif(not hasattr(_C, "persistent_plan"),
                                reason="this build does not expose the capacity model")

H200 = dispatch.DEVICE_PRESETS["H200"]
A100 = dispatch.DEVICE_PRESETS["A100-SXM"]


def plan(caps, B, H, dtype="float32", reset_after=True, rdm=False, backward=False,
         forced="auto", T=64, product="auto", allow_tf32=False):
    return _C.persistent_plan(caps, B, T, H, dtype, reset_after, rdm, backward, forced, product,
                              allow_tf32)


def per_row_bytes(p):
    """Shared memory one more batch row of the tile costs (the model's smem_for): operand rows
    are `operand_stride` floats apart (k_pad, padded for the tensor-core products)."""
    ld, J = p["operand_stride"], p["units_per_cta"]
    return p["buffers"] * p["operands"] * ld * 4 + (ld * 4 if p["side_buffer"] else 0) + 3 * J * 4


def tile_step(p):
    """The granularity of the batch tile: 8 rows, or 2 below 8 (every product)."""
    return 8 if p["batch_tile"] >= 8 else 2


def check_cluster_plan(p, caps, B):
    assert p["path"] == "persistent_cluster", p
    assert p["smem_bytes"] <= caps["shared_memory_per_block_optin"], p
    assert p["clusters"] == math.ceil(B / p["batch_tile"]), p
    assert p["active_clusters"] >= 1, p
    assert p["waves"] == math.ceil(p["clusters"] / p["active_clusters"]), p
    if p["waves"] > 1:
        # More than one wave only when the tile is already as wide as shared memory allows
        # (the next tile step would not fit) and still leaves too many clusters.
        step = tile_step(p)
        assert p["smem_bytes"] + step * per_row_bytes(p) > caps["shared_memory_per_block_optin"], p


def test_estimate_follows_the_documented_rule():
    # H = 256 on an H200: clusters of 16 CTAs x 16 units; 132 SMs -> 7 GPCs of 18 -> 7 clusters.
    p = plan(H200, 64, 256, forced="persistent_cluster")
    assert p["ctas"] == 16 and p["active_clusters"] == 7, p
    # A known GPC count replaces the assumption: 8 GPCs of 16 SMs hold 8 clusters of 16.
    p = plan(dict(H200, gpc_count=8), 64, 256, forced="persistent_cluster")
    assert p["active_clusters"] == 8, p
    # Clusters of 8 (H = 64 -> 8 CTAs x 8 units with max_cluster_size 8): 2 per GPC of 18.
    p = plan(dict(H200, max_cluster_size=8), 64, 64, forced="persistent_cluster")
    assert p["ctas"] == 8 and p["active_clusters"] == 7 * 2, p
    # A small device (fewer SMs than a GPC): one GPC of all its SMs.
    small = dict(H200, sm_count=8, max_cluster_size=4)
    p = plan(small, 4, 16, forced="persistent_cluster")
    assert p["ctas"] == 4 and p["active_clusters"] == 2, p


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("reset_after", [True, False], ids=["reset_after", "reset_before"])
@pytest.mark.parametrize("backward", [False, True], ids=["forward", "backward"])
def test_one_wave_whenever_the_widest_tile_allows_it(dtype, reset_after, backward):
    for H in (64, 256, 512):
        for B in (1, 16, 32, 64, 100, 256, 512, 1024, 4096):
            p = plan(H200, B, H, dtype, reset_after, backward=backward,
                     forced="persistent_cluster")
            if p["path"] != "persistent_cluster":
                continue  # this H does not fit a cluster in this dtype (other tests cover why)
            check_cluster_plan(p, H200, B)


def test_batch_tile_widens_to_fit_one_wave():
    # H = 256 fp32: an equal share over 132 / 16 = 8 clusters would give tiles of 32 rows and 8
    # clusters, one more than the 7 the device holds; the model widens the tile instead.
    p = plan(H200, 256, 256, forced="persistent_cluster")
    check_cluster_plan(p, H200, 256)
    assert p["waves"] == 1 and p["clusters"] <= 7, p
    assert p["batch_tile"] >= math.ceil(256 / 7), p


def test_waves_scale_the_step_estimate():
    one = plan(H200, 8, 256, forced="persistent_cluster")
    widest = one  # find the widest tile: a batch far beyond one wave
    widest = plan(H200, 1 << 16, 256, forced="persistent_cluster")
    bt, fit = widest["batch_tile"], widest["active_clusters"]
    assert widest["waves"] > 1, widest
    full = plan(H200, bt * fit, 256, forced="persistent_cluster")
    double = plan(H200, 2 * bt * fit, 256, forced="persistent_cluster")
    assert full["batch_tile"] == bt and double["batch_tile"] == bt, (full, double)
    assert full["waves"] == 1 and double["waves"] == 2, (full, double)
    assert double["est_step_us"] == pytest.approx(2 * full["est_step_us"], rel=1e-12)
    assert one["waves"] == 1, one
    assert "wave" in double["reason"], double["reason"]


def test_h1024_fp32_on_h200():
    caps = H200
    auto = plan(caps, 64, 1024)
    assert auto["path"] in ("stepwise", "persistent", "persistent_cluster"), auto
    if auto["path"] == "persistent_cluster":
        check_cluster_plan(auto, caps, 64)
        assert auto["waves"] == 1, auto
    forced = plan(caps, 64, 1024, forced="persistent_cluster")
    if forced["path"] == "persistent_cluster":
        check_cluster_plan(forced, caps, 64)
        assert forced["waves"] == 1, forced
    else:
        # 1024 units over 16 CTAs: 64 units x 3 gates x 1024 fp32 = 786432 bytes of U per CTA.
        assert "shared memory" in forced["reason"], forced
    grid = plan(caps, 64, 1024, forced="persistent")
    assert grid["path"] == "persistent", grid
    assert grid["smem_bytes"] <= caps["shared_memory_per_block_optin"], grid


@pytest.mark.parametrize("caps", [H200, A100], ids=["H200", "A100"])
def test_grid_plans_at_most_one_cta_per_sm(caps):
    # The grid barrier needs every CTA resident: the model plans <= one CTA per SM with shared
    # memory within the per-block limit, which a device holding >= 1 such CTA per SM always
    # can (the launch checks cudaOccupancyMaxActiveBlocksPerMultiprocessor >= 1 and the
    # cooperative launch refuses anything more).
    for H in (1, 5, 64, 131, 132, 133, 256, 1000, 1024, 2048):
        for dtype in ("float32", "bfloat16"):
            p = plan(caps, 32, H, dtype, forced="persistent")
            if p["path"] != "persistent":
                assert "shared memory" in p["reason"], p
                continue
            assert 1 <= p["ctas"] <= caps["sm_count"], p
            assert p["ctas"] * p["units_per_cta"] >= H, p
            assert p["smem_bytes"] <= caps["shared_memory_per_block_optin"], p
            assert p["waves"] == 0 and p["active_clusters"] == 0, p


def test_no_clusters_before_sm90():
    p = plan(A100, 64, 256, forced="persistent_cluster")
    assert p["path"] == "stepwise" and "sm_90" in p["reason"], p


def test_cluster_larger_than_a_gpc_does_not_fit():
    # 20 CTAs per cluster cannot sit in a GPC of 18 SMs (one CTA per SM in the estimate).
    caps = dict(H200, max_cluster_size=20)
    p = plan(caps, 16, 80, forced="persistent_cluster", product="simt")
    assert p["path"] == "stepwise" and "cannot hold one cluster" in p["reason"], p
    # The tensor-core products take units in eights: H = 80 makes clusters of 10, which fit;
    # H = 160 makes clusters of 20 again.
    p = plan(caps, 16, 80, "bfloat16", forced="persistent_cluster", product="tensor_core")
    assert p["path"] == "persistent_cluster" and p["ctas"] == 10, p
    p = plan(caps, 16, 160, "bfloat16", forced="persistent_cluster", product="tensor_core")
    assert p["path"] == "stepwise" and "cannot hold one cluster" in p["reason"], p


@requires_cuda
def test_device_occupancy_query():
    if not hasattr(_C, "persistent_max_active_clusters"):
        pytest.skip("CPU build: no persistent_max_active_clusters")
    dev = torch.cuda.current_device()
    caps = _C.persistent_device_caps(dev)
    if not caps["cluster_launch"]:
        assert _C.persistent_max_active_clusters(dev, 8, 1024) == 0
        return
    p = plan(caps, 64, 256, forced="persistent_cluster")
    assert p["path"] == "persistent_cluster", p
    real = _C.persistent_max_active_clusters(dev, p["ctas"], p["smem_bytes"])
    assert real >= 1
    # The what-if estimate is meant to be conservative: never more than the device's answer.
    assert p["active_clusters"] <= real, (p, real)
    assert _C.persistent_max_active_clusters(dev, 8, caps["shared_memory_per_block_optin"] + 1) == 0
