// The recurrent product of a persistent CTA on tensor cores: mma.sync tiles of 16 batch rows x
// 8 units of one gate, fp32 accumulation, split over K across the warps when the tiles are
// fewer than the warps.
//
// Operands: A (rows x kp) is the staged fp32 operand (row stride ldh), packed into 16-bit
// pairs or rounded to TF32 as the fragments are loaded; B (kp x 3J, "column-major": the weight
// slice's rows n = g·J + jj hold k contiguously) is the weight slice in the storage dtype with
// swizzled 16-byte chunks (operand.cuh, weight_index), read with ldmatrix. Fragment layouts are
// the PTX ISA's (see primitives.cuh).
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "kernels/persistent/device.cuh"
#include "kernels/persistent/operand.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

constexpr int kProductSimt = 0;
constexpr int kProductTensorCore = 1;
constexpr int kProductTf32 = 2;
constexpr int kProduct3xTf32 = 3;

__device__ __forceinline__ float bits_as_float(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

// Two fp32 values as one register of 16-bit operands, the first in the low half (one
// cvt.rn.{bf16x2,f16x2}.f32 on sm_80+).
template <typename T16>
__device__ __forceinline__ uint32_t pack_pair(float2 v) {
  uint32_t r;
  if constexpr (std::is_same_v<T16, __nv_bfloat16>) {
    const __nv_bfloat162 h = __floats2bfloat162_rn(v.x, v.y);
    memcpy(&r, &h, 4);
  } else {
    const __half2 h = __floats2half2_rn(v.x, v.y);
    memcpy(&r, &h, 4);
  }
  return r;
}

// One k-step of a 16x8 tile: d += A[rows m0.., k0..] · B[k0.., n0..]. `a_lo` / `a_hi` point at
// the operand rows of tile rows groupID and groupID + 8, `b_row` at this lane's ldmatrix row
// (lanes 0-15; the others' addresses are not read).
template <typename T>
__device__ __forceinline__ void mma_k_step(float (&d)[4], const float* a_lo, const float* a_hi,
                                           int k0, const T* b_row, int product, int t) {
  uint32_t b[2];
  ldmatrix_x2(b, b_row);
  if constexpr (!std::is_same_v<T, float>) {
    // A fragment of m16n8k16: registers (row g, k 2t..2t+1), (g+8, 2t..), (g, 2t+8..), (g+8, 2t+8..).
    const uint32_t a[4] = {pack_pair<T>(ld_pair(a_lo + k0 + 2 * t)),
                           pack_pair<T>(ld_pair(a_hi + k0 + 2 * t)),
                           pack_pair<T>(ld_pair(a_lo + k0 + 2 * t + 8)),
                           pack_pair<T>(ld_pair(a_hi + k0 + 2 * t + 8))};
    (void)product;
    mma_m16n8k16<T>(d, a, b);
  } else {
    // A fragment of m16n8k8 .tf32: (row g, k t), (g+8, t), (g, t+4), (g+8, t+4).
    const float x[4] = {a_lo[k0 + t], a_hi[k0 + t], a_lo[k0 + t + 4], a_hi[k0 + t + 4]};
    uint32_t a_big[4], b_big[2];
#pragma unroll
    for (int i = 0; i < 4; ++i) a_big[i] = to_tf32(x[i]);
#pragma unroll
    for (int i = 0; i < 2; ++i) b_big[i] = to_tf32(bits_as_float(b[i]));
    if (product == kProduct3xTf32) {
      // a·b = (A + a')(B + b') ~ a'·B + A·b' + A·B: the small terms first, so that they are
      // not lost next to the large one.
      uint32_t a_small[4], b_small[2];
#pragma unroll
      for (int i = 0; i < 4; ++i) a_small[i] = to_tf32(x[i] - bits_as_float(a_big[i]));
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        b_small[i] = to_tf32(bits_as_float(b[i]) - bits_as_float(b_big[i]));
      }
      mma_m16n8k8_tf32(d, a_small, b_big);
      mma_m16n8k8_tf32(d, a_big, b_small);
    }
    mma_m16n8k8_tf32(d, a_big, b_big);
  }
}

// gs[r·3J + n] = Σ_k hs[op(n)][r][k] · w[n][k] for r < rows, n in [g0·J, g1·J), where op(n) =
// gate(n) - g0 when per_gate, else 0. J is a multiple of 8; the operand buffers hold bt >= rows
// rows. An m-tile's rows past bt read row bt - 1 instead (their results are discarded), so the
// batch tile need not be a multiple of 16 and small batches cost no shared memory for the
// padding. Tiles (16 rows x 8 units) go to the warps; when there are fewer
// tiles than warps, each tile's K range is split into kWarps / tiles chunks whose partial tiles
// go to `part` and are summed (in chunk order: deterministic) after a __syncthreads. Each warp
// keeps two accumulator chains (even and odd k-steps) to halve the dependent mma latency.
template <typename T>
__device__ __forceinline__ void gemm_mma(const float* hs, int op_stride, int ldh, int bt,
                                         bool per_gate, const T* w, int J, int kp, int rows,
                                         int g0, int g1, float* gs, float* part, int product) {
  constexpr bool kTf32 = std::is_same_v<T, float>;
  constexpr int kKStep = kTf32 ? 8 : 16;
  constexpr int kE = 16 / int(sizeof(T));  // elements per ldmatrix row (16 bytes)
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int mtiles = (rows + 15) / 16;
  const int ntiles = (g1 - g0) * J / 8;
  const int tiles = mtiles * ntiles;
  const int split = tiles >= kWarps ? 1 : kWarps / tiles;
  const int ksteps = kp / kKStep;
  const int ldg = 3 * J;
  for (int task = warp; task < tiles * split; task += kWarps) {
    const int tile = task / split;
    const int chunk = task - tile * split;
    const int mi = tile / ntiles;
    const int n0 = g0 * J + (tile - mi * ntiles) * 8;
    const int op = per_gate ? n0 / J - g0 : 0;
    const int r_lo = mi * 16 + g, r_hi = r_lo + 8;
    const float* a_lo = hs + op * op_stride + (r_lo < bt ? r_lo : bt - 1) * ldh;
    const float* a_hi = hs + op * op_stride + (r_hi < bt ? r_hi : bt - 1) * ldh;
    // ldmatrix rows: matrix (lane >> 3) & 1 holds k-offset 0 or kE of the step, row lane & 7.
    const int b_n = n0 + (lane & 7);
    const int b_k = ((lane >> 3) & 1) * kE;
    float acc0[4] = {0.f, 0.f, 0.f, 0.f}, acc1[4] = {0.f, 0.f, 0.f, 0.f};
    const int kb = chunk * ksteps / split, ke = (chunk + 1) * ksteps / split;
    int ks = kb;
    for (; ks + 1 < ke; ks += 2) {
      const int k0 = ks * kKStep, k1 = k0 + kKStep;
      mma_k_step<T>(acc0, a_lo, a_hi, k0, w + weight_index<T>(b_n, k0 + b_k, kp, true), product,
                    t);
      mma_k_step<T>(acc1, a_lo, a_hi, k1, w + weight_index<T>(b_n, k1 + b_k, kp, true), product,
                    t);
    }
    if (ks < ke) {
      const int k0 = ks * kKStep;
      mma_k_step<T>(acc0, a_lo, a_hi, k0, w + weight_index<T>(b_n, k0 + b_k, kp, true), product,
                    t);
    }
    float d[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) d[i] = acc0[i] + acc1[i];
    // C/D fragment: (row g, columns 2t, 2t+1) in d[0..1], (row g+8, ...) in d[2..3].
    if (split == 1) {
      const int r0 = mi * 16 + g, c = n0 + 2 * t;
      if (r0 < rows) {
        gs[r0 * ldg + c] = d[0];
        gs[r0 * ldg + c + 1] = d[1];
      }
      if (r0 + 8 < rows) {
        gs[(r0 + 8) * ldg + c] = d[2];
        gs[(r0 + 8) * ldg + c + 1] = d[3];
      }
    } else {
      float* p = part + task * 128;
      p[g * 8 + 2 * t] = d[0];
      p[g * 8 + 2 * t + 1] = d[1];
      p[(g + 8) * 8 + 2 * t] = d[2];
      p[(g + 8) * 8 + 2 * t + 1] = d[3];
    }
  }
  if (split > 1) {  // uniform: every thread of the CTA takes this branch or none does
    __syncthreads();
    const int cols = ntiles * 8;
    for (int idx = threadIdx.x; idx < rows * cols; idx += kThreads) {
      const int r = idx / cols, c = idx - r * cols;
      const int tile = (r / 16) * ntiles + c / 8;
      const float* p = part + tile * split * 128 + (r % 16) * 8 + c % 8;
      float sum = 0.0f;
      for (int k = 0; k < split; ++k) sum += p[k * 128];
      gs[r * ldg + g0 * J + c] = sum;
    }
  }
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
