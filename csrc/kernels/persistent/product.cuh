// The recurrent product of a persistent CTA: the SIMT product (register tiles, warp
// reduce-scatter) and the choice between it and the tensor-core products (tensor_core.cuh).
#pragma once

#include "kernels/persistent/device.cuh"
#include "kernels/persistent/operand.cuh"
#include "kernels/persistent/tensor_core.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// ---- the recurrent product ----------------------------------------------------------------

// Sums v[0..N) over the 32 lanes of the warp and leaves sum N·lane/32 (lane >> log2(32/N))
// in the return value: a reduce-scatter (N-1 shuffles) then a butterfly over the lanes that
// share a value. Static indices only (the array stays in registers).
template <int N, int kHalf, int kOff>
__device__ __forceinline__ void reduce_scatter_step(float (&v)[N], int lane) {
  if constexpr (kHalf >= 1) {
    const bool upper = (lane & kOff) != 0;
#pragma unroll
    for (int i = 0; i < kHalf; ++i) {
      const float keep = upper ? v[i + kHalf] : v[i];
      const float send = upper ? v[i] : v[i + kHalf];
      v[i] = keep + __shfl_xor_sync(0xffffffffu, send, kOff);
    }
    reduce_scatter_step<N, kHalf / 2, kOff / 2>(v, lane);
  }
}

template <int kOff>
__device__ __forceinline__ float butterfly_sum(float x) {
  if constexpr (kOff >= 1) {
    x += __shfl_xor_sync(0xffffffffu, x, kOff);
    return butterfly_sum<kOff / 2>(x);
  } else {
    return x;
  }
}

// Sums v[0..N) over the 32 lanes of the warp and returns sum number lane / (32 / N): a
// reduce-scatter over the top log2(N) lane bits (N-1 shuffles; lane bit kOff picks the half
// it keeps), then a butterfly over the lanes that share a value. Static indices only (the
// array stays in registers).
template <int N>
__device__ __forceinline__ float warp_reduce_scatter(float (&v)[N], int lane) {
  static_assert(N >= 1 && N <= 32 && (N & (N - 1)) == 0, "N must be a power of two <= 32");
  reduce_scatter_step<N, N / 2, 16>(v, lane);
  return butterfly_sum<16 / N>(v[0]);
}

// gs[r·ldg + g·J + jj] = Σ_k hs[op(g)][r·ldh + k] · w[(g·J + jj)·kp + k] for r < rows rounded
// up to RB, g in [g0, g1), jj < J; op(g) = g - g0 when per_gate, else 0.
template <int RB, typename TW>
__device__ __forceinline__ void gemm_tiles(const float* __restrict__ hs, int op_stride, int ldh,
                                           bool per_gate, const TW* __restrict__ w, int J,
                                           int kp, int rows, int g0, int g1,
                                           float* __restrict__ gs, int ldg) {
  constexpr int N = RB * kRC;
  constexpr int kLanesPerValue = 32 / N;
  const int warp = threadIdx.x >> 5;
  const int lane = threadIdx.x & 31;
  const int row_tiles = (rows + RB - 1) / RB;
  const int col_tiles = J / kRC;
  const int gate_tiles = row_tiles * col_tiles;
  const int tiles = gate_tiles * (g1 - g0);
  for (int t = warp; t < tiles; t += kWarps) {
    const int gi = t / gate_tiles;
    const int rem = t - gi * gate_tiles;
    const int ct = rem / row_tiles;
    const int rt = rem - ct * row_tiles;
    const int g = g0 + gi;
    const float* h = hs + (per_gate ? gi * op_stride : 0) + rt * RB * ldh;
    const TW* wt = w + (g * J + ct * kRC) * kp;
    float acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;
    for (int k = 2 * lane; k < kp; k += 64) {
      float2 hv[RB], wv[kRC];
#pragma unroll
      for (int i = 0; i < RB; ++i) hv[i] = ld_pair(h + i * ldh + k);
#pragma unroll
      for (int c = 0; c < kRC; ++c) wv[c] = ld_pair(wt + c * kp + k);
#pragma unroll
      for (int i = 0; i < RB; ++i) {
#pragma unroll
        for (int c = 0; c < kRC; ++c) {
          acc[i * kRC + c] = fmaf(hv[i].x, wv[c].x, acc[i * kRC + c]);
          acc[i * kRC + c] = fmaf(hv[i].y, wv[c].y, acc[i * kRC + c]);
        }
      }
    }
    const float sum = warp_reduce_scatter<N>(acc, lane);
    if (lane % kLanesPerValue == 0) {
      const int idx = lane / kLanesPerValue;
      const int i = idx / kRC;
      const int c = idx % kRC;
      gs[(rt * RB + i) * ldg + g * J + ct * kRC + c] = sum;
    }
  }
}

// The product of gates [g0, g1) for `rows` staged rows of operand buffer hs (sm.gs receives
// it), with the geometry's product: SIMT (8-row tiles while a pass has 8 rows or more, the
// batch tile then being a multiple of 8; 2-row tiles below) or tensor cores (gemm_mma).
// Every thread of the CTA calls it; the caller synchronises before reading sm.gs.
template <typename T>
__device__ __forceinline__ void recurrent_product(const Smem& sm, const PersistentGeometry& geo,
                                                  const float* hs, bool per_gate, int rows,
                                                  int g0, int g1) {
  const T* w = static_cast<const T*>(sm.w);
  const int J = geo.J, kp = geo.kp, ldh = geo.ldh;
  if (geo.product != kProductSimt) {
    gemm_mma<T>(hs, sm.op_stride, ldh, geo.bt, per_gate, w, J, kp, rows, g0, g1, sm.gs, sm.part,
                geo.product);
  } else if (rows >= 8) {
    gemm_tiles<8>(hs, sm.op_stride, ldh, per_gate, w, J, kp, rows, g0, g1, sm.gs, 3 * J);
  } else {
    gemm_tiles<2>(hs, sm.op_stride, ldh, per_gate, w, J, kp, rows, g0, g1, sm.gs, 3 * J);
  }
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
