// Host emulation of the CUDA primitives used by csrc/kernels/ (both kernel families), for the
// CPU tests: force-included (-include) before any kernel source. Every CUDA thread that can meet
// a barrier is a real std::thread; __syncthreads and cluster.sync() are barriers (emu::Barrier);
// a warp shuffle is an exchange through a per-warp array between two warp barriers; the grid
// barrier is an atomic counter; a cluster's shared memory is the other emulated CTAs' shared
// memory (DSMEM).
// Shared memory is exactly the launch's dynamic size (heap, no slack), so that AddressSanitizer
// sees an access past its end; it starts filled with 0xFF bytes (NaN as fp32) so that a read of an
// unwritten element shows up.
//
// Kernel launches: `k<<<grid, block, smem, stream>>>(args)` cannot be compiled by a host
// compiler; tests/emulation/builder.py rewrites each into
//   emu::launch(grid, block, emu::LaunchKind{uses_barrier, uses_static_shared}, [&] { k(args); })
// The persistent kernels are called by tests/emulation/persistent_harness.h through
// emu::launch_cooperative (every CTA of the grid co-resident, as a cooperative or cluster launch).
//
// GRU_EMU_ALL_THREADS (the ThreadSanitizer build): barrier-free stepwise kernels run as threads
// too (otherwise as a plain loop over the grid, which is faster), so that a race between threads
// shows up.
#pragma once
#define __device__
#define __host__
#define __global__
#define __launch_bounds__(...)
// A kernel's static __shared__ array: one per process. Kernels that have one run their blocks
// one after another (LaunchKind::uses_static_shared), so no two blocks share it at once.
#define __shared__ static
#include <cuda_runtime_api.h>
#include <cuda_fp16.h>
#include <cuda_bf16.h>

#include <atomic>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <thread>
#include <vector>

inline thread_local uint3 threadIdx, blockIdx;
inline thread_local dim3 blockDim, gridDim;

namespace emu {

constexpr int kMaxWarps = 32;  // 1024 threads a block

// A reusable barrier of n threads. Waiters block (mutex + condition variable) instead of
// spinning: hundreds of emulated CUDA threads share two cores. ThreadSanitizer models the
// mutex exactly, so everything before a thread's arrival happens before every thread's exit.
class Barrier {
 public:
  explicit Barrier(unsigned n) : n_(n) {}
  void arrive_and_wait() {
    std::unique_lock<std::mutex> lock(m_);
    const unsigned long long gen = gen_;
    if (++count_ == n_) {
      count_ = 0;
      ++gen_;
      cv_.notify_all();
      return;
    }
    cv_.wait(lock, [&] { return gen_ != gen; });
  }

 private:
  std::mutex m_;
  std::condition_variable cv_;
  const unsigned n_;
  unsigned count_ = 0;
  unsigned long long gen_ = 0;
};

// State shared by the threads of one emulated CTA.
struct Block {
  unsigned char* smem = nullptr;  // dynamic shared memory, exactly smem_bytes
  Barrier* bar = nullptr;
  Barrier* warp_bar[kMaxWarps] = {};
  float warp_vals[kMaxWarps][32] = {};
  // Registers exchanged by the emulated warp-wide tensor-core instructions (mma.sync operands,
  // ldmatrix row addresses): kernels/persistent/primitives.cuh beside this file.
  uint32_t mma_a[kMaxWarps][32][4] = {};
  uint32_t mma_b[kMaxWarps][32][2] = {};
  const void* ld_rows[kMaxWarps][32] = {};
  unsigned char** cluster_smem = nullptr;  // shared memory of the cluster's CTAs, by rank
  Barrier* cluster_bar = nullptr;
  unsigned cluster_size = 1;
};

inline thread_local Block* block = nullptr;

inline void fail(const char* what) {
  std::fprintf(stderr, "emulated CUDA: %s\n", what);
  throw std::runtime_error(std::string("emulated CUDA: ") + what);
}

// The launch limits of a real GPU, and no launch with an empty grid.
inline void check_launch(dim3 grid, dim3 blk) {
  if (grid.x == 0 || grid.y == 0 || grid.z == 0 || blk.x == 0 || blk.y == 0 || blk.z == 0)
    fail("launch with an empty grid or block");
  if (blk.x * blk.y * blk.z > 1024) fail("block larger than 1024 threads");
  if (grid.y > 65535 || grid.z > 65535) fail("grid.y/z larger than 65535");
}

// Owns the emulated CTAs of one launch: barriers, warp barriers, shared memory.
class Grid {
 public:
  Grid(unsigned nblocks, unsigned threads, size_t smem_bytes, unsigned cluster_size)
      {
    if (cluster_size == 0 || nblocks % cluster_size != 0) fail("grid not a multiple of the cluster");
    for (unsigned b = 0; b < nblocks; ++b) {
      // Exactly smem_bytes: an access past the end is an AddressSanitizer report.
      smem_.emplace_back(smem_bytes ? new (std::align_val_t(16)) unsigned char[smem_bytes] : nullptr);
      if (smem_bytes) std::memset(smem_.back().get(), 0xFF, smem_bytes);
      smem_p_.push_back(smem_.back().get());
    }
    for (unsigned c = 0; c < nblocks / cluster_size; ++c)
      bars_.emplace_back(new Barrier(cluster_size * threads));
    for (unsigned b = 0; b < nblocks; ++b) {
      auto blk = std::make_unique<Block>();
      bars_.emplace_back(new Barrier(threads));
      blk->bar = bars_.back().get();
      for (unsigned w = 0; w * 32 < threads; ++w) {
        const unsigned lanes = threads - w * 32 < 32 ? threads - w * 32 : 32;
        bars_.emplace_back(new Barrier(lanes));
        blk->warp_bar[w] = bars_.back().get();
      }
      blk->smem = smem_p_[b];
      blk->cluster_smem = smem_p_.data() + (b / cluster_size) * cluster_size;
      blk->cluster_bar = bars_[b / cluster_size].get();
      blk->cluster_size = cluster_size;
      blocks_.push_back(std::move(blk));
    }
  }
  Block* block(unsigned b) { return blocks_[b].get(); }

 private:
  struct AlignedDelete {
    void operator()(unsigned char* p) const { ::operator delete[](p, std::align_val_t(16)); }
  };
  std::vector<std::unique_ptr<unsigned char[], AlignedDelete>> smem_;
  std::vector<unsigned char*> smem_p_;
  std::vector<std::unique_ptr<Barrier>> bars_;
  std::vector<std::unique_ptr<Block>> blocks_;
};

// Runs blocks [b0, b1) of a launch, every thread of them a std::thread, and joins them.
template <class F>
void run_threads(dim3 grid, dim3 blk, Grid& g, unsigned b0, unsigned b1, F& body) {
  std::vector<std::thread> threads;
  const unsigned nthreads = blk.x * blk.y * blk.z;
  threads.reserve(size_t(b1 - b0) * nthreads);
  for (unsigned b = b0; b < b1; ++b)
    for (unsigned t = 0; t < nthreads; ++t)
      threads.emplace_back([&, b, t] {
        gridDim = grid;
        blockDim = blk;
        blockIdx = uint3{b % grid.x, (b / grid.x) % grid.y, b / (grid.x * grid.y)};
        threadIdx = uint3{t % blk.x, (t / blk.x) % blk.y, t / (blk.x * blk.y)};
        block = g.block(b);
        try {
          body();
        } catch (...) {
          // A thread that dies would leave the others waiting at a barrier forever: abort.
          std::fprintf(stderr, "emulated CUDA: exception in a kernel thread\n");
          std::abort();
        }
      });
  for (auto& th : threads) th.join();
}

struct LaunchKind {
  bool uses_barrier = false;        // __syncthreads: needs real threads
  bool uses_static_shared = false;  // a static __shared__ array: blocks one at a time
};

// A <<<grid, block>>> launch of the stepwise family (rewritten by tests/emulation/builder.py).
template <class F>
void launch(dim3 grid, dim3 blk, LaunchKind kind, F&& body) {
  check_launch(grid, blk);
#ifndef GRU_EMU_ALL_THREADS
  if (!kind.uses_barrier) {  // a plain loop over the grid's threads
    gridDim = grid;
    blockDim = blk;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx)
          for (unsigned tz = 0; tz < blk.z; ++tz)
            for (unsigned ty = 0; ty < blk.y; ++ty)
              for (unsigned tx = 0; tx < blk.x; ++tx) {
                blockIdx = uint3{bx, by, bz};
                threadIdx = uint3{tx, ty, tz};
                body();
              }
    return;
  }
#endif
  const unsigned nblocks = grid.x * grid.y * grid.z;
  Grid g(nblocks, blk.x * blk.y * blk.z, 0, 1);
  if (kind.uses_static_shared) {
    for (unsigned b = 0; b < nblocks; ++b) run_threads(grid, blk, g, b, b + 1, body);
  } else {
    run_threads(grid, blk, g, 0, nblocks, body);
  }
}

// A cooperative (grid path) or cluster launch: every CTA co-resident, `smem_bytes` of dynamic
// shared memory each, clusters of `cluster_size` consecutive CTAs (1: no cluster).
template <class F>
void launch_cooperative(unsigned nblocks, unsigned threads, size_t smem_bytes,
                        unsigned cluster_size, F&& body) {
  check_launch(dim3(nblocks), dim3(threads));
  Grid g(nblocks, threads, smem_bytes, cluster_size);
  run_threads(dim3(nblocks), dim3(threads), g, 0, nblocks, body);
}

}  // namespace emu

// ---- the primitives -------------------------------------------------------------------------

inline void __syncthreads() { emu::block->bar->arrive_and_wait(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int off) {
  static_assert(sizeof(T) == sizeof(float), "emulated shuffles move 32-bit values");
  const unsigned t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
  const unsigned w = t >> 5, l = t & 31;
  emu::Block* b = emu::block;
  std::memcpy(&b->warp_vals[w][l], &v, sizeof(T));
  b->warp_bar[w]->arrive_and_wait();
  T r;
  std::memcpy(&r, &b->warp_vals[w][l ^ unsigned(off)], sizeof(T));
  b->warp_bar[w]->arrive_and_wait();
  return r;
}

template <class T> inline T __ldcg(const T* p) { return *p; }
template <class T> inline T __ldg(const T* p) { return *p; }
inline void __trap() {
  std::fprintf(stderr, "emulated CUDA: __trap()\n");
  std::abort();
}

// The persistent kernels' own primitives (dynamic shared memory, the grid barrier's arrival and
// wait, ...): kernels/persistent/primitives.cuh next to this file.

namespace cg {
struct cluster_group {
  unsigned block_rank() const { return blockIdx.x % emu::block->cluster_size; }
  unsigned num_blocks() const { return emu::block->cluster_size; }
  // The same offset in the shared memory of CTA `rank` of this cluster (DSMEM).
  template <class T>
  T* map_shared_rank(T* addr, int rank) const {
    emu::Block* b = emu::block;
    if (rank < 0 || unsigned(rank) >= b->cluster_size) emu::fail("map_shared_rank: rank out of range");
    const auto off = reinterpret_cast<unsigned char*>(addr) - b->smem;
    return reinterpret_cast<T*>(b->cluster_smem[rank] + off);
  }
  void sync() const { emu::block->cluster_bar->arrive_and_wait(); }
};
inline cluster_group this_cluster() { return {}; }
}  // namespace cg
