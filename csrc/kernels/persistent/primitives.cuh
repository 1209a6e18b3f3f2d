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
//   mma_m16n8k16<T16>          d += a·b on tensor cores, 16-bit operands, fp32 accumulators
//   mma_m16n8k8_tf32           d += a·b on tensor cores, TF32 operands, fp32 accumulators
//   ldmatrix_x2                two 8x8 matrices of 16-bit elements from shared memory
//   to_tf32                    float -> TF32 (round to nearest, ties away from zero)
// The fragment layouts (which lane holds which element) are the PTX ISA's; the host emulation
// implements the instructions from those tables (tests/emulation/mma_fragments.h).
#pragma once

#include <cooperative_groups.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <type_traits>

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

// ---- tensor cores (sm_80+; the capacity model never plans them below) -------------------------

// d[0..3] += A·B for one 16x8x16 tile: A 16x16 row-major in a[0..3] (two elements per register,
// the lower-indexed in the low half), B 16x8 column-major in b[0..1], C/D fp32.
template <typename T16>
__device__ __forceinline__ void mma_m16n8k16(float (&d)[4], const uint32_t (&a)[4],
                                             const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  if constexpr (std::is_same_v<T16, __nv_bfloat16>) {
    asm("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  } else {
    static_assert(std::is_same_v<T16, __half>, "16-bit operands are __half or __nv_bfloat16");
    asm("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
        "{%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
  }
#else
  (void)d, (void)a, (void)b;
  __trap();
#endif
}

// d[0..3] += A·B for one 16x8x8 tile of TF32 operands (A 16x8 row-major in a[0..3], B 8x8
// column-major in b[0..1], one element per register), C/D fp32.
__device__ __forceinline__ void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4],
                                                 const uint32_t (&b)[2]) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};"
      : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#else
  (void)d, (void)a, (void)b;
  __trap();
#endif
}

// Two 8x8 matrices of 16-bit elements (8 rows of 16 bytes each): lanes 0-7 give the row
// addresses of matrix 0, lanes 8-15 those of matrix 1 (shared memory, 16-byte aligned); lane l
// receives row l/4, elements 2(l%4) and 2(l%4)+1 of matrix i in r[i].
__device__ __forceinline__ void ldmatrix_x2(uint32_t (&r)[2], const void* row) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  const unsigned addr = static_cast<unsigned>(__cvta_generic_to_shared(row));
  asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0,%1}, [%2];"
               : "=r"(r[0]), "=r"(r[1])
               : "r"(addr)
               : "memory");
#else
  (void)r, (void)row;
  __trap();
#endif
}

__device__ __forceinline__ uint32_t to_tf32(float x) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
  uint32_t r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
  return r;
#else
  (void)x;
  __trap();
  return 0;
#endif
}

__device__ __forceinline__ void trap_without_cluster() {
#ifdef __CUDA_ARCH__
  __trap();  // sm_90 only: never run an empty body (e.g. sm_80 PTX JIT-compiled on a newer GPU)
#endif
}

}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
