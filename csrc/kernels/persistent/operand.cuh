// Shared memory of a persistent CTA: its layout, the weights' load, and the staging of the
// exchanged operand.
#pragma once

#include "kernels/persistent/device.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// ---- shared-memory layout -----------------------------------------------------------------

// The order and sizes of persistent::smem_for (persistent_capacity.h).
struct Smem {
  void* w;      // 3J x kp weights, storage dtype (swizzled for the tensor-core products)
  float* hs;    // nbuf x ng x bt x ldh operands
  float* side;  // bt x ldh (cluster path, reset_after=False), else nullptr
  float* gs;    // bt x 3J products
  float* part;  // kWarps x 16 x 8 split-K partial tiles (tensor-core products), else nullptr
  int op_stride;   // bt·ldh
  int buf_stride;  // ng·bt·ldh
};

template <typename T>
__device__ __forceinline__ Smem carve_smem(unsigned char* base, const PersistentGeometry& geo,
                                           int nbuf, bool side) {
  Smem s;
  s.w = base;
  const int64_t wbytes = persistent::align16(int64_t(3) * geo.J * geo.kp * int64_t(sizeof(T)));
  s.hs = reinterpret_cast<float*>(base + wbytes);
  s.op_stride = geo.bt * geo.ldh;
  s.buf_stride = geo.ng * s.op_stride;
  float* next = s.hs + nbuf * s.buf_stride;
  s.side = side ? next : nullptr;
  if (side) next += s.op_stride;
  s.gs = next;
  next += geo.bt * 3 * geo.J;
  s.part = geo.product != 0 ? next : nullptr;
  return s;
}

// Where element (n, k) of the 3J x kp weight slice lives: row-major for the SIMT product; for
// the tensor-core products the 16-byte chunks of row n are permuted (chunk c stored at c ^
// (n mod 8)), so that the eight rows one ldmatrix reads (the same chunk of each) fall in eight
// different groups of four banks. Rows are kp·sizeof(T) bytes, a multiple of 128, so the
// permutation stays inside the row.
template <typename T>
__device__ __forceinline__ int weight_index(int n, int k, int kp, bool swizzled) {
  constexpr int kE = 16 / int(sizeof(T));  // elements per 16-byte chunk
  if (!swizzled) return n * kp + k;
  return n * kp + (((k / kE) ^ (n & 7)) * kE) + k % kE;
}

__device__ __forceinline__ void zero_floats(float* p, int n) {
  for (int i = threadIdx.x; i < n; i += kThreads) p[i] = 0.0f;
}

// Wf[(g·J + jj)·kp + k] = U[k, g·H + j0 + jj] (at weight_index); zero outside k < H,
// j0 + jj < H. Consecutive threads take consecutive units (coalesced global reads); once per
// launch.
template <typename T>
__device__ void load_forward_weights(T* w, const T* __restrict__ U, int H, int J, int kp,
                                     int j0, bool swizzled) {
  const int n = 3 * J * kp;
  const T zero = from_acc<T>(0.0f);
  for (int idx = threadIdx.x; idx < n; idx += kThreads) {
    const int jj = idx % J;
    const int rest = idx / J;
    const int k = rest % kp;
    const int g = rest / kp;
    const int j = j0 + jj;
    w[weight_index<T>(g * J + jj, k, kp, swizzled)] =
        (k < H && j < H) ? __ldg(U + int64_t(k) * 3 * H + int64_t(g) * H + j) : zero;
  }
}

// Wb[(g·J + jj)·kp + m] = U[j0 + jj, g·H + m] (at weight_index); zero outside.
template <typename T>
__device__ void load_backward_weights(T* w, const T* __restrict__ U, int H, int J, int kp,
                                      int j0, bool swizzled) {
  const int n = 3 * J * kp;
  const T zero = from_acc<T>(0.0f);
  for (int idx = threadIdx.x; idx < n; idx += kThreads) {
    const int m = idx % kp;
    const int rest = idx / kp;
    const int jj = rest % J;
    const int g = rest / J;
    const int j = j0 + jj;
    w[weight_index<T>(g * J + jj, m, kp, swizzled)] =
        (m < H && j < H) ? __ldg(U + int64_t(j) * 3 * H + int64_t(g) * H + m) : zero;
  }
}

// ---- staging the exchanged operand ----------------------------------------------------------

// 16 bytes of T at p (16-byte aligned) as fp32, read through L2 (.cg: other CTAs wrote them) or
// the read-only path (.nc: never written during the launch).
template <bool kCG>
__device__ __forceinline__ void ld16(const float* p, float (&out)[4]) {
  const float4 v = kCG ? __ldcg(reinterpret_cast<const float4*>(p))
                       : __ldg(reinterpret_cast<const float4*>(p));
  out[0] = v.x;
  out[1] = v.y;
  out[2] = v.z;
  out[3] = v.w;
}
template <bool kCG, typename T16>
__device__ __forceinline__ void ld16(const T16* p, float (&out)[8]) {
  const uint4 v = kCG ? __ldcg(reinterpret_cast<const uint4*>(p))
                      : __ldg(reinterpret_cast<const uint4*>(p));
  __align__(16) T16 e[8];
  memcpy(e, &v, 16);  // a register move once compiled; no type-punned read
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    const float2 f = ld_pair(e + 2 * i);
    out[2 * i] = f.x;
    out[2 * i + 1] = f.y;
  }
}

__device__ __forceinline__ bool aligned16(const void* p) {
  return (reinterpret_cast<uintptr_t>(p) & 15u) == 0;
}

// The body of stage_rows: kV elements (kV = 1, or 16 bytes' worth) per iteration, kQ whether
// the q factor applies. Thread t starts at vector t of the (op, r, k) sequence and steps by
// kThreads vectors, carrying k into r and r into op by subtraction: two divisions per call,
// none per element, and every thread busy however short a row is.
template <int kV, bool kQ, typename T>
__device__ __forceinline__ void stage_rows_impl(float* hs, int op_stride, int ld, int nops,
                                                int rows, int H, const T* src,
                                                int64_t row_stride, int64_t op_src_stride,
                                                const T* q, int64_t q_op_stride) {
  const int nv = H / kV;  // vectors per row (kV divides H)
  if (nv <= 0 || rows <= 0) return;
  const int dr = kThreads / nv, dk = kThreads - dr * nv;
  int r = int(threadIdx.x) / nv;
  int kv = int(threadIdx.x) - r * nv;
  int op = 0;
  while (op < nops && r >= rows) {
    r -= rows;
    ++op;
  }
  while (op < nops) {
    const int k = kv * kV;
    const int64_t src_off = op * op_src_stride + r * row_stride + k;
    float* dst = hs + op * op_stride + r * ld + k;
    if constexpr (kV == 1) {
      float v = to_acc(__ldcg(src + src_off));
      if constexpr (kQ) v *= to_acc(__ldg(q + op * q_op_stride + int64_t(r) * H + k));
      *dst = v;
    } else {
      float v[kV];
      ld16<true>(src + src_off, v);
      if constexpr (kQ) {
        float f[kV];
        ld16<false>(q + op * q_op_stride + int64_t(r) * H + k, f);
#pragma unroll
        for (int i = 0; i < kV; ++i) v[i] *= f[i];
      }
#pragma unroll
      for (int i = 0; i < kV; i += 4) {
        *reinterpret_cast<float4*>(dst + i) = make_float4(v[i], v[i + 1], v[i + 2], v[i + 3]);
      }
    }
    kv += dk;
    r += dr;
    if (kv >= nv) {
      kv -= nv;
      ++r;
    }
    while (op < nops && r >= rows) {
      r -= rows;
      ++op;
    }
  }
}

// hs[op·op_stride + r·ld + k] = src[r·row_stride + op·op_src_stride + k]
//                               (· q[op·q_op_stride + r·H + k] when q != nullptr)
// for op < nops, r < rows, k < H. src holds values other CTAs wrote: read through L2 (.cg).
// Padding (k >= H) is never written: zeroed once at the start. 16-byte loads (4 floats or 8
// halves) and float4 stores when H, the strides and the pointers allow them, else one element
// at a time; the test depends only on the arguments, so the whole block takes the same branch.
template <typename T>
__device__ __forceinline__ void stage_rows(float* hs, int op_stride, int ld, int nops, int rows,
                                           int H, const T* src, int64_t row_stride,
                                           int64_t op_src_stride, const T* q,
                                           int64_t q_op_stride) {
  constexpr int kV = 16 / int(sizeof(T));
  // ld (the operand row stride: kp, a multiple of 64, or kp + 8 / kp + 4) and op_stride are
  // multiples of 4, so hs rows are 16-byte aligned when hs is.
  const bool vec = H % kV == 0 && row_stride % kV == 0 && op_src_stride % kV == 0 &&
                   aligned16(src) && aligned16(hs) && op_stride % 4 == 0 && ld % 4 == 0 &&
                   (q == nullptr || (q_op_stride % kV == 0 && aligned16(q)));
  if (q != nullptr) {
    if (vec) {
      stage_rows_impl<kV, true>(hs, op_stride, ld, nops, rows, H, src, row_stride,
                                op_src_stride, q, q_op_stride);
    } else {
      stage_rows_impl<1, true>(hs, op_stride, ld, nops, rows, H, src, row_stride, op_src_stride,
                               q, q_op_stride);
    }
  } else {
    if (vec) {
      stage_rows_impl<kV, false>(hs, op_stride, ld, nops, rows, H, src, row_stride,
                                 op_src_stride, q, q_op_stride);
    } else {
      stage_rows_impl<1, false>(hs, op_stride, ld, nops, rows, H, src, row_stride,
                                op_src_stride, q, q_op_stride);
    }
  }
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
