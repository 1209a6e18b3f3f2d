// Host emulation of the CUDA primitives the persistent kernels use
// (tests/test_persistent_host_emulation.py): every CUDA thread is a std::thread, __syncthreads
// and cluster.sync() are std::barrier, a warp shuffle is an exchange through a per-warp array
// between two barriers, the grid barrier is an atomic counter. Force-included (-include) before
// csrc/kernels/persistent_kernels.cuh, which switches to these hooks on GRU_PK_HOST_EMULATION.
#pragma once
#define GRU_PK_HOST_EMULATION 1
#define __device__
#define __host__
#define __global__
#define __launch_bounds__(...)
#include <cuda_runtime_api.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>
#include <atomic>
#include <barrier>
#include <cmath>
#include <cstdlib>
#include <thread>
extern thread_local uint3 threadIdx, blockIdx;
extern thread_local dim3 blockDim, gridDim;
struct EmuBlock {
  unsigned char* smem;
  std::barrier<>* bar;
  std::barrier<>* warp_bar[8];
  float warp_vals[8][32];
  unsigned char** cluster_smem;  // smem of the cluster's blocks, by rank
  std::barrier<>* cluster_bar;
  unsigned cluster_size;
};
extern thread_local EmuBlock* emu_block;
#define GRU_PK_DYNAMIC_SMEM(name) unsigned char* name = emu_block->smem
inline void __syncthreads() { emu_block->bar->arrive_and_wait(); }
inline float __shfl_xor_sync(unsigned, float v, int off) {
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31;
  EmuBlock* b = emu_block;
  b->warp_vals[w][l] = v;
  b->warp_bar[w]->arrive_and_wait();
  const float r = b->warp_vals[w][l ^ off];
  b->warp_bar[w]->arrive_and_wait();
  return r;
}
template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldg(const T* p) { return *p; }
inline void __trap() { std::abort(); }
inline void gru_pk_emu_grid_arrive_and_wait(unsigned long long* counter,
                                            unsigned long long target) {
  std::atomic_ref<unsigned long long> c(*counter);
  c.fetch_add(1, std::memory_order_release);
  while (c.load(std::memory_order_acquire) < target) std::this_thread::yield();
}
namespace cg {
struct cluster_group {
  unsigned block_rank() const { return blockIdx.x % emu_block->cluster_size; }
  unsigned num_blocks() const { return emu_block->cluster_size; }
  template <class T> T* map_shared_rank(T* addr, int rank) const {
    const auto off = reinterpret_cast<unsigned char*>(addr) - emu_block->smem;
    return reinterpret_cast<T*>(emu_block->cluster_smem[rank] + off);
  }
  void sync() const { emu_block->cluster_bar->arrive_and_wait(); }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cg
