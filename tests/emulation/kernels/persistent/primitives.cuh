// The host emulation's version of csrc/kernels/persistent/primitives.cuh: the CUDA primitives of
// the persistent kernels, for a host compiler with cuda_emu.h force-included. builder.py puts
// tests/emulation/ before csrc/ on the include path, so the kernels include this file instead of
// the CUDA one and carry no emulation #ifdef themselves.
#pragma once

#include <atomic>
#include <cstdint>
#include <thread>
#include <type_traits>

#include "mma_fragments.h"

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

// ---- tensor cores: the PTX fragment tables (mma_fragments.h) over the emulated warp --------
// Each lane deposits its registers in the CTA's exchange arrays, the warp meets, each lane
// computes its own result from all 32 lanes' registers, and the warp meets again before the
// arrays are reused.

struct EmuLane {
  unsigned warp, lane;
  emu::Block* block;
};
inline EmuLane emu_lane() {
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  return {t >> 5, t & 31, emu::block};
}

inline void emu_mma(emu_mma::Kind kind, float (&d)[4], const uint32_t (&a)[4],
                    const uint32_t (&b)[2]) {
  const EmuLane me = emu_lane();
  for (int i = 0; i < 4; ++i) me.block->mma_a[me.warp][me.lane][i] = a[i];
  for (int i = 0; i < 2; ++i) me.block->mma_b[me.warp][me.lane][i] = b[i];
  me.block->warp_bar[me.warp]->arrive_and_wait();
  const float c[4] = {d[0], d[1], d[2], d[3]};
  emu_mma::mma_lane(kind, me.block->mma_a[me.warp], me.block->mma_b[me.warp], int(me.lane), c,
                    d);
  me.block->warp_bar[me.warp]->arrive_and_wait();
}

template <typename T16>
inline void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  static_assert(std::is_same_v<T16, __half> || std::is_same_v<T16, __nv_bfloat16>,
                "16-bit operands are __half or __nv_bfloat16");
  emu_mma(std::is_same_v<T16, __nv_bfloat16> ? emu_mma::Kind::kBF16 : emu_mma::Kind::kF16, d, a,
          b);
}

inline void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
  emu_mma(emu_mma::Kind::kTF32, d, a, b);
}

inline void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
  const EmuLane me = emu_lane();
  me.block->ld_rows[me.warp][me.lane] = row;
  me.block->warp_bar[me.warp]->arrive_and_wait();
  emu_mma::ldmatrix_lane(2, me.block->ld_rows[me.warp], int(me.lane), r);
  me.block->warp_bar[me.warp]->arrive_and_wait();
}

inline uint32_t to_tf32(float x) { return emu_mma::round_tf32(x); }

}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
