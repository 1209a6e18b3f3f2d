"""The sanitizer tier: CPU stand-ins for compute-sanitizer's racecheck and memcheck.

The host emulation kit (tests/emulation/) runs both CUDA kernel families with one std::thread
per CUDA thread; a torch-free driver (tests/emulation/sanitize_driver.cpp) is built twice with
g++, under ThreadSanitizer (a missing __syncthreads / cluster.sync / grid barrier is a data race)
and under AddressSanitizer + UBSan (every global buffer and every CTA's shared memory is an
exactly sized heap array, so an index off by one is a heap-buffer-overflow). The driver runs the
stepwise per-step kernels and the persistent grid and cluster kernels, forward and backward, on
tiny problems and checks the results against a double-precision forward and finite differences,
so a silent wrong answer fails too. Planted bugs in test-only copies of the kernel sources show
that each sanitizer does report. Separate processes: the sanitizer runtimes do not mix with an
uninstrumented Python + torch. Builds are cached under build/emulation_sanitize. Run with
`pytest -m sanitize`.
"""
import pytest

from emulation import builder

pytestmark = pytest.mark.sanitize


def _need(sanitizer):
    reason = builder.sanitizer_skip_reason(sanitizer)
    if reason:
        pytest.skip(reason)


def _reports(out):
    return [r for r in builder.REPORTS if r in out]


@pytest.mark.parametrize("sanitizer", ["tsan", "asan"])
def test_clean(sanitizer):
    """Both families, every case, no sanitizer report, every check within tolerance."""
    _need(sanitizer)
    exe = builder.driver(sanitizer)
    rc, out = builder.run_driver(exe, sanitizer)
    tail = out[-6000:]
    assert not _reports(out), f"{sanitizer} reported:\n{tail}"
    assert rc == 0, f"driver exited with {rc}:\n{tail}"
    assert "PASSED: 0 failure(s)" in out, tail
    # Both persistent paths ran, the cluster path with several CTAs a cluster and several
    # clusters, with the SIMT product and with the 3xtf32 tensor-core product (emulated
    # mma.sync / ldmatrix under the sanitizer too).
    assert "persistent_cluster simt J=4 ctas=4 clusters=2" in out, tail
    assert "persistent simt J=4 ctas=4" in out, tail
    assert "persistent_cluster 3xtf32 J=8 ctas=2 clusters=2" in out, tail
    assert "persistent 3xtf32 J=8 ctas=2" in out, tail
    assert out.count("\nok ") + out.startswith("ok ") >= 100, tail


@pytest.mark.parametrize("plant,sanitizer,report,where", [
    ("missing_barrier", "tsan", "WARNING: ThreadSanitizer: data race", "forward_cluster_kernel"),
    ("missing_barrier_stepwise", "tsan", "WARNING: ThreadSanitizer: data race",
     "column_sum_chunks_kernel"),
    ("off_by_one", "asan", "ERROR: AddressSanitizer: heap-buffer-overflow", "_kernel"),
])
def test_planted_bug_is_reported(plant, sanitizer, report, where):
    """A copy of a kernel source with one barrier removed (ThreadSanitizer must report a race:
    a persistent and a stepwise kernel) or one loop bound off by one (AddressSanitizer must
    report an overflow)."""
    _need(sanitizer)
    exe = builder.driver(sanitizer, plant=plant)
    rc, out = builder.run_driver(exe, sanitizer, builder.PLANTS[plant][4])
    tail = out[-6000:]
    assert rc != 0, f"the planted {plant} build exited cleanly:\n{tail}"
    assert report in out, f"{sanitizer} did not report the planted {plant}:\n{tail}"
    report_text = out[out.index(report):]
    assert where in report_text, f"the report does not point into {where}:\n{tail}"
