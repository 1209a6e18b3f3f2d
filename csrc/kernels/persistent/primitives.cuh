// The CUDA primitives of the persistent kernels that the host emulation replaces: the host
// emulation kit (tests/emulation/) puts its own kernels/persistent/primitives.cuh first on the
// include path, so that the kernels themselves carry no emulation #ifdef.
//
//   GRU_PK_DYNAMIC_SMEM(name)  declares the dynamic shared memory as `unsigned char name[]`
//   GRU_PK_NOINLINE            keeps a function out of line
//   GRU_PK_HAS_CLUSTER         defined where thread-block clusters exist (sm_90)
//   cg                         cooperative groups (grid and cluster groups)
//   grid_arrive_and_wait       the grid barrier's arrival and wait (thread 0 of each CTA)
//   prefetch_l2                an L2 prefetch hint
//   trap_without_cluster       the body of a cluster kernel compiled where clusters do not exist
#pragma once

#include <cooperative_groups.h>

#define GRU_PK_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define GRU_PK_NOINLINE __noinline__
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
#define GRU_PK_HAS_CLUSTER 1
#endif

namespace gru_cuda {
namespace kernels {
namespace pk {

namespace cg = cooperative_groups;

__device__ __forceinline__ void backoff_sleep(unsigned ns) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  __nanosleep(ns);
#else
  (void)ns;  // no __nanosleep before sm_70: plain spin
#endif
}

// Arrival: a release RMW at gpu scope on the monotonic counter; wait: acquire loads until it
// reaches target, sleeping backoff_ns between polls, doubling up to cap_ns (0: spin).
__device__ __forceinline__ void grid_arrive_and_wait(unsigned long long* counter,
                                                     unsigned long long target,
                                                     unsigned backoff_ns, unsigned cap_ns) {
  asm volatile("red.release.gpu.global.add.u64 [%0], %1;" ::"l"(counter), "l"(1ull) : "memory");
  unsigned ns = backoff_ns;
  unsigned long long seen;
  while (true) {
    asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(seen) : "l"(counter) : "memory");
    if (seen >= target) break;
    if (ns != 0) {
      backoff_sleep(ns);
      ns = ns < cap_ns / 2 ? 2 * ns : cap_ns;
    }
  }
}

__device__ __forceinline__ void prefetch_l2(const void* ptr) {
  asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr));
}

__device__ __forceinline__ void trap_without_cluster() {
#ifdef __CUDA_ARCH__
  __trap();  // sm_90 only: never run an empty body (e.g. sm_80 PTX JIT-compiled on a newer GPU)
#endif
}

}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
