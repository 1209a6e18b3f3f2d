// The host emulation's version of csrc/kernels/persistent/primitives.cuh: the CUDA primitives of
// the persistent kernels, for a host compiler with cuda_emu.h force-included. builder.py puts
// tests/emulation/ before csrc/ on the include path, so the kernels include this file instead of
// the CUDA one and carry no emulation #ifdef themselves.
#pragma once

#include <atomic>
#include <thread>

// Dynamic shared memory: the emulated CTA's (cuda_emu.h).
#define GRU_PK_DYNAMIC_SMEM(name) unsigned char* name = emu::block->smem
#define GRU_PK_NOINLINE
// Clusters are emulated (cg::cluster_group in cuda_emu.h).
#define GRU_PK_HAS_CLUSTER 1

namespace gru_cuda {
namespace kernels {
namespace pk {

// The grid barrier's arrival and wait (thread 0 of each CTA): release on arrival, acquire on the
// load that sees the target, as the CUDA version's red.release / ld.acquire. No back-off: the
// emulated threads yield instead of sleeping.
inline void grid_arrive_and_wait(unsigned long long* counter, unsigned long long target,
                                 unsigned /*backoff_ns*/, unsigned /*cap_ns*/) {
  std::atomic_ref<unsigned long long> c(*counter);
  c.fetch_add(1, std::memory_order_release);
  while (c.load(std::memory_order_acquire) < target) std::this_thread::yield();
}

inline void prefetch_l2(const void*) {}  // a hint only: nothing to emulate

inline void trap_without_cluster() {}  // unreachable: the emulation has clusters

}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
