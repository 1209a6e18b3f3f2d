// Barrier microbenchmark of the persistent path (python -m gru_cuda.bench barrier): the cost of
// one grid-wide or cluster-wide barrier, the floor of a persistent step.
#include "kernels/persistent/persistent_kernels.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

__global__ void __launch_bounds__(kThreads, 1)
    grid_barrier_bench_kernel(unsigned long long* counter, int iterations, int kind,
                              unsigned backoff_ns) {
  if (kind == 0) {
    GridBarrier bar{counter, 0ull, backoff_ns};
    for (int i = 0; i < iterations; ++i) bar.sync();
  } else {
    cg::grid_group grid = cg::this_grid();
    for (int i = 0; i < iterations; ++i) grid.sync();
  }
}

__global__ void __launch_bounds__(kThreads, 1) cluster_barrier_bench_kernel(int iterations) {
#ifdef GRU_PK_HAS_CLUSTER
  cg::cluster_group cluster = cg::this_cluster();
  for (int i = 0; i < iterations; ++i) cluster.sync();
#else
  (void)iterations;
#ifdef __CUDA_ARCH__
  __trap();  // sm_90 only
#endif
#endif
}

}  // namespace
}  // namespace pk

LaunchStatus gru_persistent_barrier_benchmark(int kind, int ctas, int iterations,
                                              unsigned long long* counter, cudaStream_t stream,
                                              int backoff_ns) {
  unsigned backoff = backoff_ns < 0 ? pk::kGridBarrierBackoffNs : unsigned(backoff_ns);
  PersistentGeometry geo;
  geo.cluster = kind == 2 ? 1 : 0;
  geo.ctas = ctas;
  geo.clusters = 1;
  geo.smem_bytes = 0;
  if (kind == 2) {
    void* args[] = {&iterations};
    return pk::launch_kernel(reinterpret_cast<const void*>(&pk::cluster_barrier_bench_kernel),
                             geo, args, stream);
  }
  void* args[] = {&counter, &iterations, &kind, &backoff};
  return pk::launch_kernel(reinterpret_cast<const void*>(&pk::grid_barrier_bench_kernel), geo,
                           args, stream);
}

}  // namespace kernels
}  // namespace gru_cuda
