// The persistent GRU kernels (docs/persistent.md): one launch per recurrence, U on chip.
//
// Work split. CTA c owns units [c·J, c·J + J) (rank c within a cluster on the cluster path) for
// all three gates, and keeps in shared memory, for the whole sequence,
//   forward:  Wf[(g·J + jj)·kp + k] = U[k, g·H + c·J + jj]    (columns of U)
//   backward: Wb[(g·J + jj)·kp + m] = U[c·J + jj, g·H + m]    (rows of U, i.e. columns of Uᵀ)
// zero-padded to J units x kp (H rounded up to 64). Each step, every CTA stages the rows it
// needs of the exchanged operand (h_{s-1} ⊙ q_g, r ⊙ hd_h, or the previous step's gate
// gradients) as fp32 in shared memory, computes its (rows x 3J) slice of the recurrent product,
// and runs the pointwise part for its units, which writes the outputs/states/workspace (or gate
// gradients) exactly as the stepwise kernels do (csrc/kernels/gru_step_kernels.cuh).
//
// The product: each warp takes register tiles of RB batch rows x 4 units of one gate; its 32
// lanes split the reduction (2 consecutive k per lane per 64-wide slab, so shared-memory reads
// are conflict-free), accumulate in fp32 with FMA, then one warp reduce-scatter sums the RB·4
// partials across lanes. Summation order depends only on the geometry: results are bitwise
// reproducible run to run.
//
// Exchange. Grid path: through global memory (L2), read with ld.global.cg. The exchanged
// buffer is the one the contract writes anyway (states[s], or the gate gradients by input
// time) or a ping-pong scratch; a grid barrier separates the write of step s from the reads
// of step s+1, which is what makes a second buffer unnecessary where states[] is kept.
// Cluster path: each CTA pushes its values into every cluster CTA's shared memory (DSMEM),
// double-buffered by step parity, and cluster.sync() (release/acquire at cluster scope)
// publishes them.
#pragma once

// GRU_PK_HOST_EMULATION: the kernels compiled by a host compiler with a thread-level emulation
// of the CUDA primitives they use (a test harness supplies it, see docs/persistent.md); these
// hooks are the only differences.
#ifndef GRU_PK_HOST_EMULATION
#include <cooperative_groups.h>
#define GRU_PK_DYNAMIC_SMEM(name) extern __shared__ __align__(16) unsigned char name[]
#define GRU_PK_NOINLINE __noinline__
#else
#define GRU_PK_NOINLINE
#endif

#include <cstdint>
#include <cstring>
#ifdef GRU_PK_HOST_EMULATION
#include <thread>
#endif

#include "common/activations.h"
#include "kernels/gru_persistent.h"
#include "kernels/persistent_capacity.h"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

#ifndef GRU_PK_HOST_EMULATION
namespace cg = cooperative_groups;
#endif

constexpr int kThreads = persistent::kThreads;
constexpr int kWarps = kThreads / 32;
constexpr int kRC = persistent::kRC;
constexpr int kAnyAct = -1;  // activation pair chosen at run time

// ---- conversions --------------------------------------------------------------------------

__device__ __forceinline__ float ldf(float v) { return v; }
__device__ __forceinline__ float ldf(__half v) { return __half2float(v); }
__device__ __forceinline__ float ldf(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T to_storage(float v);
template <>
__device__ __forceinline__ float to_storage<float>(float v) { return v; }
template <>
__device__ __forceinline__ __half to_storage<__half>(float v) { return __float2half_rn(v); }
template <>
__device__ __forceinline__ __nv_bfloat16 to_storage<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Two consecutive shared-memory elements as fp32.
__device__ __forceinline__ float2 ld_pair(const float* p) {
  return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float2 ld_pair(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}
__device__ __forceinline__ float2 ld_pair(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

// ---- activations --------------------------------------------------------------------------

// The run-time pair: one out-of-line switch per kernel instead of one kernel per pair.
__device__ GRU_PK_NOINLINE float act_forward_any(int a, float x) {
#define GRU_PK_CASE(ID) \
  case ID:              \
    return act_forward<ID, float>(x);
  switch (a) {
    GRU_FOR_EACH_ACTIVATION(GRU_PK_CASE)
    default: break;
  }
#undef GRU_PK_CASE
  return x;
}

__device__ GRU_PK_NOINLINE float act_backward_any(int a, float x) {
#define GRU_PK_CASE(ID) \
  case ID:              \
    return act_backward<ID, float>(x);
  switch (a) {
    GRU_FOR_EACH_ACTIVATION(GRU_PK_CASE)
    default: break;
  }
#undef GRU_PK_CASE
  return 1.0f;
}

template <int A>
__device__ __forceinline__ float act_f(int id, float x) {
  if constexpr (A == kAnyAct) {
    return act_forward_any(id, x);
  } else {
    return act_forward<A, float>(x);
  }
}
template <int A>
__device__ __forceinline__ float act_b(int id, float x) {
  if constexpr (A == kAnyAct) {
    return act_backward_any(id, x);
  } else {
    return act_backward<A, float>(x);
  }
}

// ---- grid barrier -------------------------------------------------------------------------

// A monotonically increasing arrival counter (zeroed by the host before the launch). Barrier n
// (n = 1, 2, ...) completes when the counter reaches n·gridDim.x.
// Memory ordering: a CTA's writes before the barrier are ordered before thread 0's arrival by
// bar.sync (CTA scope); the arrival is a release RMW at gpu scope (cumulative: it releases what
// thread 0 has observed, i.e. the whole CTA's writes). Every arrival is an RMW on the same
// counter, so a later arrival continues each earlier arrival's release sequence; thread 0 of a
// waiting CTA reads a value >= n·gridDim.x with an acquire load, which therefore synchronises
// with all n·gridDim.x arrivals, and its bar.sync passes that on to the rest of the CTA. The
// readers use ld.global.cg (L2), so no stale L1 line can be read either. A CTA arriving at
// barrier n+1 before a slow CTA has left barrier n only raises the counter further, which
// keeps the slow CTA's exit condition true (monotonic counter, no reset, no sense flag).
//
// Back-off: between polls thread 0 sleeps (__nanosleep), starting at backoff_ns and doubling up
// to kGridBarrierBackoffMaxFactor times that, so that 100+ spinning CTAs do not hammer the one
// L2 line the arrivals update. Bounded so that a late waiter oversleeps the release by at most
// the cap. backoff_ns = 0 spins without sleeping.
// kGridBarrierBackoffNs is a guess, not a measurement (nothing has run on a GPU): calibrate it
// with gru_cuda._C.persistent_barrier_latency_us(device, "counter", ctas, iterations,
// backoff_ns) over e.g. 0, 16, 32, 64, 128, 256 and keep the fastest.
constexpr unsigned kGridBarrierBackoffNs = 32;
constexpr unsigned kGridBarrierBackoffMaxFactor = 8;

__device__ __forceinline__ void backoff_sleep(unsigned ns) {
#ifdef GRU_PK_HOST_EMULATION
  (void)ns;
  std::this_thread::yield();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 700
  __nanosleep(ns);
#else
  (void)ns;  // no __nanosleep before sm_70: plain spin
#endif
}

struct GridBarrier {
  unsigned long long* counter;
  unsigned long long target;
  unsigned backoff_ns = kGridBarrierBackoffNs;

  __device__ __forceinline__ void sync() {
    __syncthreads();
    if (threadIdx.x == 0) {
      target += gridDim.x;
#ifdef GRU_PK_HOST_EMULATION
      gru_pk_emu_grid_arrive_and_wait(counter, target);
#else
      asm volatile("red.release.gpu.global.add.u64 [%0], %1;" ::"l"(counter), "l"(1ull)
                   : "memory");
      const unsigned cap = backoff_ns * kGridBarrierBackoffMaxFactor;
      unsigned ns = backoff_ns;
      unsigned long long seen;
      while (true) {
        asm volatile("ld.acquire.gpu.global.u64 %0, [%1];" : "=l"(seen) : "l"(counter) : "memory");
        if (seen >= target) break;
        if (ns != 0) {
          backoff_sleep(ns);
          ns = ns < cap / 2 ? 2 * ns : cap;
        }
      }
#endif
    }
    __syncthreads();
  }
};

// ---- shared-memory layout -----------------------------------------------------------------

struct Smem {
  void* w;      // 3J x kp weights, storage dtype
  float* hs;    // nbuf x ng x bt x kp operands
  float* side;  // bt x kp (cluster path, reset_after=False), else nullptr
  float* gs;    // bt x 3J products
  int op_stride;   // bt·kp
  int buf_stride;  // ng·bt·kp
};

template <typename T>
__device__ __forceinline__ Smem carve_smem(unsigned char* base, const PersistentGeometry& geo,
                                           int nbuf, bool side) {
  Smem s;
  s.w = base;
  const int64_t wbytes = persistent::align16(int64_t(3) * geo.J * geo.kp * int64_t(sizeof(T)));
  s.hs = reinterpret_cast<float*>(base + wbytes);
  s.op_stride = geo.bt * geo.kp;
  s.buf_stride = geo.ng * s.op_stride;
  float* next = s.hs + nbuf * s.buf_stride;
  s.side = side ? next : nullptr;
  if (side) next += s.op_stride;
  s.gs = next;
  return s;
}

__device__ __forceinline__ void zero_floats(float* p, int n) {
  for (int i = threadIdx.x; i < n; i += kThreads) p[i] = 0.0f;
}

// Wf[(g·J + jj)·kp + k] = U[k, g·H + j0 + jj]; zero outside k < H, j0 + jj < H. Consecutive
// threads take consecutive units (coalesced global reads); once per launch.
template <typename T>
__device__ void load_forward_weights(T* w, const T* __restrict__ U, int H, int J, int kp,
                                     int j0) {
  const int n = 3 * J * kp;
  const T zero = to_storage<T>(0.0f);
  for (int idx = threadIdx.x; idx < n; idx += kThreads) {
    const int jj = idx % J;
    const int rest = idx / J;
    const int k = rest % kp;
    const int g = rest / kp;
    const int j = j0 + jj;
    w[(g * J + jj) * kp + k] =
        (k < H && j < H) ? __ldg(U + int64_t(k) * 3 * H + int64_t(g) * H + j) : zero;
  }
}

// Wb[(g·J + jj)·kp + m] = U[j0 + jj, g·H + m]; zero outside.
template <typename T>
__device__ void load_backward_weights(T* w, const T* __restrict__ U, int H, int J, int kp,
                                      int j0) {
  const int n = 3 * J * kp;
  const T zero = to_storage<T>(0.0f);
  for (int idx = threadIdx.x; idx < n; idx += kThreads) {
    const int m = idx % kp;
    const int rest = idx / kp;
    const int jj = rest % J;
    const int g = rest / J;
    const int j = j0 + jj;
    w[idx] = (m < H && j < H) ? __ldg(U + int64_t(j) * 3 * H + int64_t(g) * H + m) : zero;
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
__device__ __forceinline__ void stage_rows_impl(float* hs, int op_stride, int kp, int nops,
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
    float* dst = hs + op * op_stride + r * kp + k;
    if constexpr (kV == 1) {
      float v = ldf(__ldcg(src + src_off));
      if constexpr (kQ) v *= ldf(__ldg(q + op * q_op_stride + int64_t(r) * H + k));
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

// hs[op·op_stride + r·kp + k] = src[r·row_stride + op·op_src_stride + k]
//                               (· q[op·q_op_stride + r·H + k] when q != nullptr)
// for op < nops, r < rows, k < H. src holds values other CTAs wrote: read through L2 (.cg).
// Padding (k >= H) is never written: zeroed once at the start. 16-byte loads (4 floats or 8
// halves) and float4 stores when H, the strides and the pointers allow them, else one element
// at a time; the test depends only on the arguments, so the whole block takes the same branch.
template <typename T>
__device__ __forceinline__ void stage_rows(float* hs, int op_stride, int kp, int nops, int rows,
                                           int H, const T* src, int64_t row_stride,
                                           int64_t op_src_stride, const T* q,
                                           int64_t q_op_stride) {
  constexpr int kV = 16 / int(sizeof(T));
  // kp is a multiple of 64 and op_stride of kp, so hs rows are 16-byte aligned when hs is.
  const bool vec = H % kV == 0 && row_stride % kV == 0 && op_src_stride % kV == 0 &&
                   aligned16(src) && aligned16(hs) && op_stride % 4 == 0 &&
                   (q == nullptr || (q_op_stride % kV == 0 && aligned16(q)));
  if (q != nullptr) {
    if (vec) {
      stage_rows_impl<kV, true>(hs, op_stride, kp, nops, rows, H, src, row_stride,
                                op_src_stride, q, q_op_stride);
    } else {
      stage_rows_impl<1, true>(hs, op_stride, kp, nops, rows, H, src, row_stride, op_src_stride,
                               q, q_op_stride);
    }
  } else {
    if (vec) {
      stage_rows_impl<kV, false>(hs, op_stride, kp, nops, rows, H, src, row_stride,
                                 op_src_stride, q, q_op_stride);
    } else {
      stage_rows_impl<1, false>(hs, op_stride, kp, nops, rows, H, src, row_stride,
                                op_src_stride, q, q_op_stride);
    }
  }
}

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

// gs[r·ldg + g·J + jj] = Σ_k hs[op(g)][r][k] · w[(g·J + jj)·kp + k] for r < rows rounded up to
// RB, g in [g0, g1), jj < J; op(g) = g - g0 when per_gate, else 0.
template <int RB, typename TW>
__device__ __forceinline__ void gemm_tiles(const float* __restrict__ hs, int op_stride,
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
    const float* h = hs + (per_gate ? gi * op_stride : 0) + rt * RB * kp;
    const TW* wt = w + (g * J + ct * kRC) * kp;
    float acc[N];
#pragma unroll
    for (int i = 0; i < N; ++i) acc[i] = 0.0f;
    for (int k = 2 * lane; k < kp; k += 64) {
      float2 hv[RB], wv[kRC];
#pragma unroll
      for (int i = 0; i < RB; ++i) hv[i] = ld_pair(h + i * kp + k);
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

// 8-row tiles while a pass has 8 rows or more (the batch tile is then a multiple of 8),
// 2-row tiles below.
template <typename TW>
__device__ __forceinline__ void gemm(const float* hs, int op_stride, bool per_gate, const TW* w,
                                     int J, int kp, int rows, int g0, int g1, float* gs) {
  if (rows >= 8) {
    gemm_tiles<8>(hs, op_stride, per_gate, w, J, kp, rows, g0, g1, gs, 3 * J);
  } else {
    gemm_tiles<2>(hs, op_stride, per_gate, w, J, kp, rows, g0, g1, gs, 3 * J);
  }
}

// ---- pointwise parts (one element (b, j); mirror csrc/kernels/gru_step_kernels.cuh) -----

template <typename T>
__device__ __forceinline__ T* state_at(const PersistentForwardParams<T>& p, int64_t s) {
  const int64_t BH = p.B * p.H;
  return p.states != nullptr ? p.states + s * BH : p.state_scratch + (s & 1) * BH;
}

template <typename T>
__device__ __forceinline__ T* rb_workspace_row(const PersistentForwardParams<T>& p, int64_t s) {
  return p.workspace != nullptr ? p.workspace + s * p.B * 3 * p.H : p.ws_scratch;
}

// Mask selection (never multiplication), outputs, the carried state and the final state.
template <typename T>
__device__ __forceinline__ T finish_forward(const PersistentForwardParams<T>& p, int64_t s,
                                            int64_t tau, int64_t b, int64_t i, float h_new,
                                            T h_prev, T* hcur) {
  const int64_t BH = p.B * p.H;
  const bool valid = p.mask == nullptr || p.mask[tau * p.B + b];
  const T hn = to_storage<T>(h_new);
  const T state = valid ? hn : h_prev;  // a carried state is copied bit for bit
  T out;
  if (valid) {
    out = hn;
  } else if (p.zero_output_for_mask || s == 0) {
    out = to_storage<T>(0.0f);
  } else {
    out = p.outputs[(s - 1) * BH + i];  // written by this thread at step s-1
  }
  p.outputs[s * BH + i] = out;
  hcur[i] = state;
  if (s == p.steps - 1) p.final_state[i] = state;
  return state;
}

// reset_after=True; g points at the row's products, gate blocks J apart.
template <typename T, int A, int R>
__device__ __forceinline__ T forward_ra_point(const PersistentForwardParams<T>& p, int64_t s,
                                              int64_t tau, int64_t b, int j, const float* g,
                                              int J, const T* hprev, T* hcur) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  const T* gx = p.gx + (tau * p.B + b) * 3 * H;
  float bz = 0.0f, br = 0.0f, bh = 0.0f;
  if (p.recurrent_bias != nullptr) {
    bz = ldf(p.recurrent_bias[j]);
    br = ldf(p.recurrent_bias[H + j]);
    bh = ldf(p.recurrent_bias[2 * H + j]);
  }
  const float a_z = ldf(gx[j]) + (g[0] + bz);
  const float a_r = ldf(gx[H + j]) + (g[J] + br);
  const float gh_h = g[2 * J] + bh;
  const float z = act_f<R>(p.recurrent_activation, a_z);
  const float r = act_f<R>(p.recurrent_activation, a_r);
  const float a_h = ldf(gx[2 * H + j]) + r * gh_h;
  const float c = act_f<A>(p.activation, a_h);
  const T h_prev = hprev[i];  // h0, or this thread's write of step s-1
  const float h = ldf(h_prev);
  const float h_new = z * h + (1.0f - z) * c;
  if (p.workspace != nullptr) {
    T* ws = p.workspace + (s * p.B + b) * 4 * H;
    ws[j] = to_storage<T>(a_z);
    ws[H + j] = to_storage<T>(a_r);
    ws[2 * H + j] = to_storage<T>(a_h);
    ws[3 * H + j] = to_storage<T>(gh_h);
  }
  return finish_forward(p, s, tau, b, i, h_new, h_prev, hcur);
}

// reset_after=False, first phase: a_z, a_r into the workspace row; returns r ⊙ hd_h.
template <typename T, int R>
__device__ __forceinline__ T forward_rb_point1(const PersistentForwardParams<T>& p, int64_t s,
                                               int64_t tau, int64_t b, int j, const float* g,
                                               int J, const T* hprev) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  const T* gx = p.gx + (tau * p.B + b) * 3 * H;
  const float a_z = ldf(gx[j]) + g[0];
  const float a_r = ldf(gx[H + j]) + g[J];
  const float r = act_f<R>(p.recurrent_activation, a_r);
  float hd_h = ldf(hprev[i]);
  if (p.recurrent_dropout != nullptr) hd_h *= ldf(p.recurrent_dropout[2 * p.B * H + i]);
  T* ws = rb_workspace_row(p, s) + b * 3 * H;
  ws[j] = to_storage<T>(a_z);
  ws[H + j] = to_storage<T>(a_r);
  return to_storage<T>(r * hd_h);
}

// reset_after=False, second phase; gh = (r ⊙ hd_h) U_h for this element.
template <typename T, int A, int R>
__device__ __forceinline__ T forward_rb_point2(const PersistentForwardParams<T>& p, int64_t s,
                                               int64_t tau, int64_t b, int j, float gh,
                                               const T* hprev, T* hcur) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* ws = rb_workspace_row(p, s) + b * 3 * H;
  // z from the stored a_z, the value backward recomputes it from (as the stepwise kernel).
  const float z = act_f<R>(p.recurrent_activation, ldf(ws[j]));
  const float a_h = ldf(p.gx[(tau * p.B + b) * 3 * H + 2 * H + j]) + gh;
  const float c = act_f<A>(p.activation, a_h);
  ws[2 * H + j] = to_storage<T>(a_h);
  const T h_prev = hprev[i];
  const float h = ldf(h_prev);
  const float h_new = z * h + (1.0f - z) * c;
  return finish_forward(p, s, tau, b, i, h_new, h_prev, hcur);
}

// Incoming gradient w.r.t. the state after step s, and the head of the backward step: the
// gradient into the cell result (dhn) on a valid row; false on a masked row (then dh_part
// carries dh).
template <typename T>
__device__ __forceinline__ bool backward_head(const PersistentBackwardParams<T>& p, int64_t s,
                                              int64_t tau, int64_t b, int64_t i, float dh,
                                              float& dhn) {
  float g = ldf(p.grad_outputs[s * p.B * p.H + i]);
  if (p.dcarry != nullptr) g += p.dcarry[i];
  const bool valid = p.mask == nullptr || p.mask[tau * p.B + b];
  if (p.dcarry != nullptr) p.dcarry[i] = valid ? 0.0f : g;
  if (!valid) {
    p.dh_part[i] = dh;  // the state was carried through this step
    return false;
  }
  dhn = dh + g;
  return true;
}

// dh = grad_final_state (first processed step) or dh_part + Σ_{g < gates} q_g ⊙ prod_g.
template <typename T>
__device__ __forceinline__ float incoming_dh(const PersistentBackwardParams<T>& p, int64_t s,
                                             int64_t i, const float* g, int J, int gates) {
  if (s == p.steps - 1) return ldf(p.grad_final_state[i]);
  float dh = p.dh_part[i];
  const int64_t BH = p.B * p.H;
  for (int gate = 0; gate < gates; ++gate) {
    float v = g[gate * J];
    if (p.recurrent_dropout != nullptr) v *= ldf(p.recurrent_dropout[gate * BH + i]);
    dh += v;
  }
  return dh;
}

template <typename T>
__device__ __forceinline__ const T* backward_hprev(const PersistentBackwardParams<T>& p,
                                                   int64_t s) {
  return s == 0 ? p.h0 : p.states + (s - 1) * p.B * p.H;
}

struct Grad3 {
  float v[3];
};

// reset_after=True. Returns the stored dgh (as fp32) for the cluster exchange.
template <typename T, int A, int R>
__device__ __forceinline__ Grad3 backward_ra_point(const PersistentBackwardParams<T>& p,
                                                   int64_t s, int64_t tau, int64_t b, int j,
                                                   const float* g, int J) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* dg = p.dgates + (tau * p.B + b) * 3 * H;
  T* aux = p.aux + tau * p.B * H + i;
  const float dh = incoming_dh(p, s, i, g, J, 3);
  float dhn;
  Grad3 out{{0.0f, 0.0f, 0.0f}};
  if (!backward_head(p, s, tau, b, i, dh, dhn)) {
    const T zero = to_storage<T>(0.0f);
    dg[j] = zero;
    dg[H + j] = zero;
    dg[2 * H + j] = zero;
    *aux = zero;
    return out;
  }
  const T* ws = p.workspace + (s * p.B + b) * 4 * H;
  const float a_z = ldf(ws[j]);
  const float a_r = ldf(ws[H + j]);
  const float a_h = ldf(ws[2 * H + j]);
  const float gh_h = ldf(ws[3 * H + j]);
  const float z = act_f<R>(p.recurrent_activation, a_z);
  const float r = act_f<R>(p.recurrent_activation, a_r);
  const float c = act_f<A>(p.activation, a_h);
  const float h = ldf(backward_hprev(p, s)[i]);
  const float da_h = dhn * (1.0f - z) * act_b<A>(p.activation, a_h);
  const float da_z = dhn * (h - c) * act_b<R>(p.recurrent_activation, a_z);
  const float da_r = da_h * gh_h * act_b<R>(p.recurrent_activation, a_r);
  const T vz = to_storage<T>(da_z), vr = to_storage<T>(da_r), vh = to_storage<T>(da_h * r);
  dg[j] = vz;
  dg[H + j] = vr;
  dg[2 * H + j] = vh;
  *aux = to_storage<T>(da_h);
  p.dh_part[i] = dhn * z;
  out.v[0] = ldf(vz);
  out.v[1] = ldf(vr);
  out.v[2] = ldf(vh);
  return out;
}

// reset_after=False, first phase (z and h blocks). Returns the stored (da_z, da_h).
template <typename T, int A, int R>
__device__ __forceinline__ float2 backward_rb_point_a(const PersistentBackwardParams<T>& p,
                                                      int64_t s, int64_t tau, int64_t b, int j,
                                                      const float* g, int J) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* dg = p.dgates + (tau * p.B + b) * 3 * H;
  const float dh = incoming_dh(p, s, i, g, J, 2);
  float dhn;
  if (!backward_head(p, s, tau, b, i, dh, dhn)) {
    const T zero = to_storage<T>(0.0f);
    dg[j] = zero;
    dg[2 * H + j] = zero;
    return make_float2(0.0f, 0.0f);
  }
  const T* ws = p.workspace + (s * p.B + b) * 3 * H;
  const float a_z = ldf(ws[j]);
  const float a_h = ldf(ws[2 * H + j]);
  const float z = act_f<R>(p.recurrent_activation, a_z);
  const float c = act_f<A>(p.activation, a_h);
  const float h = ldf(backward_hprev(p, s)[i]);
  const T vz = to_storage<T>(dhn * (h - c) * act_b<R>(p.recurrent_activation, a_z));
  const T vh = to_storage<T>(dhn * (1.0f - z) * act_b<A>(p.activation, a_h));
  dg[j] = vz;
  dg[2 * H + j] = vh;
  p.dh_part[i] = dhn * z;
  return make_float2(ldf(vz), ldf(vh));
}

// reset_after=False, second phase (reset gate) after drh = da_h U_hᵀ. Returns the stored da_r.
template <typename T, int R>
__device__ __forceinline__ float backward_rb_point_b(const PersistentBackwardParams<T>& p,
                                                     int64_t s, int64_t tau, int64_t b, int j,
                                                     float drh) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* dg = p.dgates + (tau * p.B + b) * 3 * H;
  T* aux = p.aux + tau * p.B * H + i;
  if (p.mask != nullptr && !p.mask[tau * p.B + b]) {
    const T zero = to_storage<T>(0.0f);
    dg[H + j] = zero;
    *aux = zero;
    return 0.0f;
  }
  const float a_r = ldf(p.workspace[(s * p.B + b) * 3 * H + H + j]);
  const float r = act_f<R>(p.recurrent_activation, a_r);
  const float q_h =
      p.recurrent_dropout != nullptr ? ldf(p.recurrent_dropout[2 * p.B * H + i]) : 1.0f;
  const float hd_h = ldf(backward_hprev(p, s)[i]) * q_h;
  const T vr = to_storage<T>(drh * hd_h * act_b<R>(p.recurrent_activation, a_r));
  dg[H + j] = vr;
  p.dh_part[i] += q_h * drh * r;
  *aux = to_storage<T>(r * hd_h);
  return ldf(vr);
}

// grad_h0 = dh_part + Σ_{g < gates} q_g ⊙ prod_g, after step 0.
template <typename T>
__device__ __forceinline__ void finish_grad_h0(const PersistentBackwardParams<T>& p, int64_t b,
                                               int j, const float* g, int J, int gates) {
  const int64_t i = b * p.H + j;
  const int64_t BH = p.B * p.H;
  float dh = p.dh_part[i];
  for (int gate = 0; gate < gates; ++gate) {
    float v = g[gate * J];
    if (p.recurrent_dropout != nullptr) v *= ldf(p.recurrent_dropout[gate * BH + i]);
    dh += v;
  }
  p.grad_h0[i] = to_storage<T>(dh);
}

// Element loop of a pass: (r, jj) of rows x J, the same thread for the same element at every
// step (so per-element state read back from global memory is this thread's own write).
#define GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j)                        \
  for (int e_ = threadIdx.x; e_ < (rows) * (J); e_ += kThreads)           \
    if (const int r = e_ / (J), jj = e_ - r * (J), j = (j0) + jj; j < (H))

// Prefetch into L2 of the step's inputs that do not depend on the recurrence (gx, mask, the
// saved states and workspace, the incoming output gradient), issued before the step's product
// so that their DRAM latency overlaps the staging and the product instead of following them.
// A prefetch is only a hint: it orders nothing and changes no value. One prefetch per 32-byte
// sector a thread's element starts (or its first unit), not one per element.
__device__ __forceinline__ void prefetch_l2(const void* ptr) {
#ifndef GRU_PK_HOST_EMULATION
  asm volatile("prefetch.global.L2 [%0];" ::"l"(ptr));
#else
  (void)ptr;
#endif
}

template <typename T>
__device__ __forceinline__ bool sector_head(int j, int jj) {
  return jj == 0 || (int64_t(j) * int64_t(sizeof(T))) % 32 == 0;
}

// Forward step s (input time tau), rows [b0, b0 + rows) of this CTA's units.
template <typename T>
__device__ __forceinline__ void prefetch_forward_step(const PersistentForwardParams<T>& p,
                                                      int64_t tau, int64_t b0, int rows, int J,
                                                      int j0) {
  const int64_t H = p.H;
  GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
    if (!sector_head<T>(j, jj)) continue;
    const T* gx = p.gx + (tau * p.B + b0 + r) * 3 * H + j;
    prefetch_l2(gx);
    prefetch_l2(gx + H);
    prefetch_l2(gx + 2 * H);
    if (jj == 0 && p.mask != nullptr) prefetch_l2(p.mask + tau * p.B + b0 + r);
  }
}

// Backward step s: the output gradient, the saved workspace row (ws_width gate blocks) and the
// previous state.
template <typename T>
__device__ __forceinline__ void prefetch_backward_step(const PersistentBackwardParams<T>& p,
                                                       int64_t s, int64_t tau, int64_t b0,
                                                       int rows, int J, int j0, int ws_width) {
  const int64_t H = p.H;
  GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
    if (!sector_head<T>(j, jj)) continue;
    const int64_t b = b0 + r;
    prefetch_l2(p.grad_outputs + s * p.B * H + b * H + j);
    const T* ws = p.workspace + (s * p.B + b) * ws_width * H + j;
    for (int g = 0; g < ws_width; ++g) prefetch_l2(ws + g * H);
    prefetch_l2((s == 0 ? p.h0 : p.states + (s - 1) * p.B * H) + b * H + j);
    if (jj == 0 && p.mask != nullptr) prefetch_l2(p.mask + tau * p.B + b);
  }
}

// =============================================================================================
// Grid path
// =============================================================================================

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    forward_grid_kernel(const PersistentForwardParams<T> p, const PersistentGeometry geo) {
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  const int J = geo.J, kp = geo.kp, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, BH = p.B * p.H, steps = p.steps;
  const int j0 = blockIdx.x * J;
  const Smem sm = carve_smem<T>(smem_raw, geo, 1, false);
  T* const w = static_cast<T*>(sm.w);
  load_forward_weights(w, p.U, H, J, kp, j0);
  zero_floats(sm.hs, sm.buf_stride);
  __syncthreads();
  GridBarrier bar{p.barrier, 0ull};
  const T* q = p.recurrent_dropout;

  for (int64_t s = 0; s < steps; ++s) {
    const int64_t tau = p.go_backwards ? steps - 1 - s : s;
    const T* hprev = s == 0 ? p.h0 : state_at(p, s - 1);
    T* hcur = state_at(p, s);
    for (int64_t b0 = 0; b0 < B; b0 += bt) {
      const int rows = int(B - b0 < bt ? B - b0 : bt);
      const int nops = q != nullptr ? (kRA ? 3 : 2) : 1;
      prefetch_forward_step(p, tau, b0, rows, J, j0);
      stage_rows(sm.hs, sm.op_stride, kp, nops, rows, H, hprev + b0 * H, H, 0,
                 q != nullptr ? q + b0 * H : nullptr, BH);
      __syncthreads();
      gemm(sm.hs, sm.op_stride, q != nullptr, w, J, kp, rows, 0, kRA ? 3 : 2, sm.gs);
      __syncthreads();
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float* g = sm.gs + r * 3 * J + jj;
        if constexpr (kRA) {
          forward_ra_point<T, A, R>(p, s, tau, b0 + r, j, g, J, hprev, hcur);
        } else {
          p.rh[(b0 + r) * H + j] = forward_rb_point1<T, R>(p, s, tau, b0 + r, j, g, J, hprev);
        }
      }
    }
    if constexpr (!kRA) {
      bar.sync();  // every CTA's r ⊙ hd_h is in p.rh
      for (int64_t b0 = 0; b0 < B; b0 += bt) {
        const int rows = int(B - b0 < bt ? B - b0 : bt);
        stage_rows(sm.hs, sm.op_stride, kp, 1, rows, H, p.rh + b0 * H, H, 0,
                   static_cast<const T*>(nullptr), 0);
        __syncthreads();
        gemm(sm.hs, sm.op_stride, false, w, J, kp, rows, 2, 3, sm.gs);
        __syncthreads();
        GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
          forward_rb_point2<T, A, R>(p, s, tau, b0 + r, j, sm.gs[r * 3 * J + 2 * J + jj], hprev,
                                     hcur);
        }
      }
    }
    bar.sync();  // states of step s visible to every CTA
  }
}

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    backward_grid_kernel(const PersistentBackwardParams<T> p, const PersistentGeometry geo) {
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  const int J = geo.J, kp = geo.kp, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, steps = p.steps, H3 = 3 * p.H;
  const int j0 = blockIdx.x * J;
  const Smem sm = carve_smem<T>(smem_raw, geo, 1, false);
  T* const w = static_cast<T*>(sm.w);
  load_backward_weights(w, p.U, H, J, kp, j0);
  zero_floats(sm.hs, sm.buf_stride);
  __syncthreads();
  GridBarrier bar{p.barrier, 0ull};
  constexpr int kZR = kRA ? 3 : 2;  // gates whose products feed dh directly
  auto tau_of = [&](int64_t s) { return p.go_backwards ? steps - 1 - s : s; };

  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t tau = tau_of(s);
    const bool have_prod = s < steps - 1;
    for (int64_t b0 = 0; b0 < B; b0 += bt) {
      const int rows = int(B - b0 < bt ? B - b0 : bt);
      prefetch_backward_step(p, s, tau, b0, rows, J, j0, kRA ? 4 : 3);
      if (have_prod) {  // dgh of step s+1 (all CTAs) times this CTA's rows of Uᵀ
        stage_rows(sm.hs, sm.op_stride, kp, kZR, rows, H,
                   p.dgates + (tau_of(s + 1) * B + b0) * H3, H3, H,
                   static_cast<const T*>(nullptr), 0);
        __syncthreads();
        gemm(sm.hs, sm.op_stride, true, w, J, kp, rows, 0, kZR, sm.gs);
        __syncthreads();
      }
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float* g = sm.gs + r * 3 * J + jj;
        if constexpr (kRA) {
          backward_ra_point<T, A, R>(p, s, tau, b0 + r, j, g, J);
        } else {
          backward_rb_point_a<T, A, R>(p, s, tau, b0 + r, j, g, J);
        }
      }
    }
    if constexpr (!kRA) {
      bar.sync();  // da_h of step s from every CTA
      for (int64_t b0 = 0; b0 < B; b0 += bt) {
        const int rows = int(B - b0 < bt ? B - b0 : bt);
        stage_rows(sm.hs, sm.op_stride, kp, 1, rows, H,
                   p.dgates + (tau * B + b0) * H3 + 2 * H, H3, 0,
                   static_cast<const T*>(nullptr), 0);
        __syncthreads();
        gemm(sm.hs, sm.op_stride, false, w, J, kp, rows, 2, 3, sm.gs);
        __syncthreads();
        GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
          backward_rb_point_b<T, R>(p, s, tau, b0 + r, j, sm.gs[r * 3 * J + 2 * J + jj]);
        }
      }
    }
    bar.sync();
  }
  // grad_h0 needs the products of step 0's gate gradients.
  const int64_t tau0 = tau_of(0);
  for (int64_t b0 = 0; b0 < B; b0 += bt) {
    const int rows = int(B - b0 < bt ? B - b0 : bt);
    stage_rows(sm.hs, sm.op_stride, kp, kZR, rows, H, p.dgates + (tau0 * B + b0) * H3, H3, H,
               static_cast<const T*>(nullptr), 0);
    __syncthreads();
    gemm(sm.hs, sm.op_stride, true, w, J, kp, rows, 0, kZR, sm.gs);
    __syncthreads();
    GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
      finish_grad_h0(p, b0 + r, j, sm.gs + r * 3 * J + jj, J, kZR);
    }
  }
}

// =============================================================================================
// Cluster path (sm_90): cluster c handles batch rows [c·bt, c·bt + bt), CTA rank k of it the
// units [k·J, k·J + J). Operands arrive by DSMEM pushes; cluster.sync() is the only barrier.
// =============================================================================================

#if (defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900) || defined(GRU_PK_HOST_EMULATION)
#define GRU_PK_HAS_CLUSTER 1
// Stores v at offset `off` of the same shared-memory buffer in every CTA of the cluster.
__device__ __forceinline__ void push_all(cg::cluster_group& cluster, float* local_base,
                                         int off, float v) {
  const unsigned n = cluster.num_blocks();
  for (unsigned d = 0; d < n; ++d) cluster.map_shared_rank(local_base, d)[off] = v;
}
#endif

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    forward_cluster_kernel(const PersistentForwardParams<T> p, const PersistentGeometry geo) {
#ifdef GRU_PK_HAS_CLUSTER
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  cg::cluster_group cluster = cg::this_cluster();
  const int J = geo.J, kp = geo.kp, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, BH = p.B * p.H, steps = p.steps;
  const int rank = int(cluster.block_rank());
  const int j0 = rank * J;
  const int64_t b0 = int64_t(blockIdx.x / geo.ctas) * bt;
  const int rows = int(B - b0 < bt ? B - b0 : bt);
  const Smem sm = carve_smem<T>(smem_raw, geo, 2, !kRA);
  T* const w = static_cast<T*>(sm.w);
  load_forward_weights(w, p.U, H, J, kp, j0);
  zero_floats(sm.hs, 2 * sm.buf_stride + (kRA ? 0 : sm.op_stride));
  __syncthreads();
  const T* q = p.recurrent_dropout;
  const int nops = q != nullptr ? (kRA ? 3 : 2) : 1;
  // Step 0's operand comes from h0 in global memory.
  stage_rows(sm.hs, sm.op_stride, kp, nops, rows, H, p.h0 + b0 * H, H, 0,
             q != nullptr ? q + b0 * H : nullptr, BH);
  cluster.sync();  // every CTA of the cluster runs and has zeroed its buffers before any push

  for (int64_t s = 0; s < steps; ++s) {
    const int64_t tau = p.go_backwards ? steps - 1 - s : s;
    const T* hprev = s == 0 ? p.h0 : state_at(p, s - 1);
    T* hcur = state_at(p, s);
    float* cur = sm.hs + (s & 1) * sm.buf_stride;
    float* nxt = sm.hs + ((s + 1) & 1) * sm.buf_stride;
    const bool push_state = s + 1 < steps;
    prefetch_forward_step(p, tau, b0, rows, J, j0);
    gemm(cur, sm.op_stride, q != nullptr, w, J, kp, rows, 0, kRA ? 3 : 2, sm.gs);
    __syncthreads();
    if constexpr (kRA) {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const T st = forward_ra_point<T, A, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J,
                                               hprev, hcur);
        if (push_state) {
          const float v = ldf(st);
          for (int op = 0; op < nops; ++op) {
            const float qv = q != nullptr ? ldf(q[op * BH + (b0 + r) * H + j]) : 1.0f;
            push_all(cluster, nxt, op * sm.op_stride + r * kp + j, v * qv);
          }
        }
      }
    } else {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const T rh = forward_rb_point1<T, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J,
                                             hprev);
        push_all(cluster, sm.side, r * kp + j, ldf(rh));
      }
      cluster.sync();  // r ⊙ hd_h of the whole row slice in every CTA
      gemm(sm.side, sm.op_stride, false, w, J, kp, rows, 2, 3, sm.gs);
      __syncthreads();
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const T st = forward_rb_point2<T, A, R>(p, s, tau, b0 + r, j,
                                                sm.gs[r * 3 * J + 2 * J + jj], hprev, hcur);
        if (push_state) {
          const float v = ldf(st);
          for (int op = 0; op < nops; ++op) {
            const float qv = q != nullptr ? ldf(q[op * BH + (b0 + r) * H + j]) : 1.0f;
            push_all(cluster, nxt, op * sm.op_stride + r * kp + j, v * qv);
          }
        }
      }
    }
    cluster.sync();  // pushes of step s landed; nobody reads `cur` any more
  }
#else
  (void)p;
  (void)geo;
#ifdef __CUDA_ARCH__
  __trap();  // sm_90 only: never run an empty body (e.g. sm_80 PTX JIT-compiled on a newer GPU)
#endif
#endif
}

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    backward_cluster_kernel(const PersistentBackwardParams<T> p, const PersistentGeometry geo) {
#ifdef GRU_PK_HAS_CLUSTER
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  cg::cluster_group cluster = cg::this_cluster();
  const int J = geo.J, kp = geo.kp, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, steps = p.steps;
  const int rank = int(cluster.block_rank());
  const int j0 = rank * J;
  const int64_t b0 = int64_t(blockIdx.x / geo.ctas) * bt;
  const int rows = int(B - b0 < bt ? B - b0 : bt);
  const Smem sm = carve_smem<T>(smem_raw, geo, 2, !kRA);
  T* const w = static_cast<T*>(sm.w);
  load_backward_weights(w, p.U, H, J, kp, j0);
  zero_floats(sm.hs, 2 * sm.buf_stride + (kRA ? 0 : sm.op_stride));
  cluster.sync();
  constexpr int kZR = kRA ? 3 : 2;
  auto tau_of = [&](int64_t s) { return p.go_backwards ? steps - 1 - s : s; };

  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t tau = tau_of(s);
    const int64_t parity = (steps - 1 - s) & 1;  // step s reads this buffer, writes the other
    float* cur = sm.hs + parity * sm.buf_stride;
    float* nxt = sm.hs + (parity ^ 1) * sm.buf_stride;
    prefetch_backward_step(p, s, tau, b0, rows, J, j0, kRA ? 4 : 3);
    if (s < steps - 1) {
      gemm(cur, sm.op_stride, true, w, J, kp, rows, 0, kZR, sm.gs);
      __syncthreads();
    }
    if constexpr (kRA) {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const Grad3 d =
            backward_ra_point<T, A, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J);
        for (int op = 0; op < 3; ++op) push_all(cluster, nxt, op * sm.op_stride + r * kp + j, d.v[op]);
      }
    } else {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float2 d =
            backward_rb_point_a<T, A, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J);
        push_all(cluster, nxt, r * kp + j, d.x);     // da_z: operand 0 of step s-1
        push_all(cluster, sm.side, r * kp + j, d.y);  // da_h: this step's second phase
      }
      cluster.sync();
      gemm(sm.side, sm.op_stride, false, w, J, kp, rows, 2, 3, sm.gs);
      __syncthreads();
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float da_r =
            backward_rb_point_b<T, R>(p, s, tau, b0 + r, j, sm.gs[r * 3 * J + 2 * J + jj]);
        push_all(cluster, nxt, sm.op_stride + r * kp + j, da_r);  // operand 1 of step s-1
      }
    }
    cluster.sync();
  }
  float* last = sm.hs + (steps & 1) * sm.buf_stride;  // written by step 0
  gemm(last, sm.op_stride, true, w, J, kp, rows, 0, kZR, sm.gs);
  __syncthreads();
  GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
    finish_grad_h0(p, b0 + r, j, sm.gs + r * 3 * J + jj, J, kZR);
  }
#else
  (void)p;
  (void)geo;
#ifdef __CUDA_ARCH__
  __trap();  // sm_90 only: never run an empty body (e.g. sm_80 PTX JIT-compiled on a newer GPU)
#endif
#endif
}

#undef GRU_PK_FOR_UNITS

// =============================================================================================
// Launch
// =============================================================================================

// The launch configuration of `clusters` clusters of `ctas` CTAs; attr holds its one attribute.
inline cudaLaunchConfig_t cluster_config(int ctas, int clusters, int64_t smem_bytes,
                                         cudaStream_t stream, cudaLaunchAttribute (&attr)[1]) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(ctas) * unsigned(clusters));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(smem_bytes);
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(ctas);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

// cudaOccupancyMaxActiveClusters for kernel fn with the attributes launch_kernel would set.
inline int max_active_clusters_of(const void* fn, int ctas, int64_t smem_bytes) {
  if (ctas < 1 || smem_bytes < 0) return 0;
  if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes)) !=
          cudaSuccess ||
      (ctas > 8 &&
       cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
           cudaSuccess)) {
    (void)cudaGetLastError();
    return 0;
  }
  cudaLaunchAttribute attr[1];
  // The grid must be a multiple of the cluster size; the count does not depend on it.
  const cudaLaunchConfig_t cfg = cluster_config(ctas, 1, smem_bytes, nullptr, attr);
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return clusters;
}

inline LaunchStatus launch_kernel(const void* fn, const PersistentGeometry& geo, void** args,
                                  cudaStream_t stream) {
  LaunchStatus st;
  const int smem = int(geo.smem_bytes);
  cudaError_t err = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    st.refused = err == cudaErrorInvalidValue;  // more shared memory than the device allows
    st.error = err;
    return st;
  }
  if (!geo.cluster) {
    int per_sm = 0;
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, geo.smem_bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      st.error = err;
      return st;
    }
    if (per_sm < 1) {
      st.refused = true;
      st.error = cudaErrorCooperativeLaunchTooLarge;
      return st;
    }
    // Co-residency is what the barrier needs: the cooperative launch refuses a grid the device
    // cannot hold at once instead of letting it deadlock.
    err = cudaLaunchCooperativeKernel(fn, dim3(unsigned(geo.ctas + geo.extra_ctas)),
                                      dim3(kThreads), args, size_t(smem), stream);
  } else {
    cudaLaunchAttribute attr[1];
    cudaLaunchConfig_t cfg = cluster_config(geo.ctas, geo.clusters, geo.smem_bytes, stream, attr);
    if (geo.ctas > 8) {
      err = cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        st.refused = true;
        st.error = err;
        return st;
      }
    }
    int clusters = 0;
    err = cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg);
    if (err != cudaSuccess || clusters < 1) {
      (void)cudaGetLastError();
      st.refused = true;
      st.error = err != cudaSuccess ? err : cudaErrorCooperativeLaunchTooLarge;
      return st;
    }
    err = cudaLaunchKernelExC(&cfg, fn, args);
  }
  if (err == cudaErrorCooperativeLaunchTooLarge || err == cudaErrorInvalidClusterSize) {
    (void)cudaGetLastError();  // not sticky: clear it so the caller's next check passes
    st.refused = true;
    st.error = err;
    return st;
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    st.error = err;
    return st;
  }
  st.launched = true;
  return st;
}

template <typename T>
const void* forward_kernel(bool cluster, bool reset_after, bool fast) {
#define GRU_PK_PICK(KERNEL)                                                                 \
  (reset_after ? (fast ? reinterpret_cast<const void*>(&KERNEL<T, kTanh, kSigmoid, true>)   \
                       : reinterpret_cast<const void*>(&KERNEL<T, kAnyAct, kAnyAct, true>)) \
               : (fast ? reinterpret_cast<const void*>(&KERNEL<T, kTanh, kSigmoid, false>)  \
                       : reinterpret_cast<const void*>(&KERNEL<T, kAnyAct, kAnyAct, false>)))
  return cluster ? GRU_PK_PICK(forward_cluster_kernel) : GRU_PK_PICK(forward_grid_kernel);
}

template <typename T>
const void* backward_kernel(bool cluster, bool reset_after, bool fast) {
  return cluster ? GRU_PK_PICK(backward_cluster_kernel) : GRU_PK_PICK(backward_grid_kernel);
#undef GRU_PK_PICK
}

}  // namespace

}  // namespace pk

template <typename T>
LaunchStatus gru_persistent_forward(const PersistentForwardParams<T>& params,
                                    const PersistentGeometry& geometry, cudaStream_t stream) {
  PersistentForwardParams<T> p = params;
  PersistentGeometry geo = geometry;
  const bool fast = p.activation == kTanh && p.recurrent_activation == kSigmoid;
  void* args[] = {&p, &geo};
  return pk::launch_kernel(pk::forward_kernel<T>(geo.cluster != 0, p.reset_after, fast), geo,
                           args, stream);
}

template <typename T>
LaunchStatus gru_persistent_backward(const PersistentBackwardParams<T>& params,
                                     const PersistentGeometry& geometry, cudaStream_t stream) {
  PersistentBackwardParams<T> p = params;
  PersistentGeometry geo = geometry;
  const bool fast = p.activation == kTanh && p.recurrent_activation == kSigmoid;
  void* args[] = {&p, &geo};
  return pk::launch_kernel(pk::backward_kernel<T>(geo.cluster != 0, p.reset_after, fast), geo,
                           args, stream);
}

template <typename T>
int gru_persistent_forward_max_active_clusters(bool reset_after, bool fast, int cluster_size,
                                               int64_t smem_bytes) {
  return pk::max_active_clusters_of(pk::forward_kernel<T>(true, reset_after, fast), cluster_size,
                                    smem_bytes);
}

template <typename T>
int gru_persistent_backward_max_active_clusters(bool reset_after, bool fast, int cluster_size,
                                                int64_t smem_bytes) {
  return pk::max_active_clusters_of(pk::backward_kernel<T>(true, reset_after, fast),
                                    cluster_size, smem_bytes);
}

}  // namespace kernels
}  // namespace gru_cuda

#define GRU_PERSISTENT_INSTANTIATE_FORWARD(T)                                                  \
  namespace gru_cuda {                                                                         \
  namespace kernels {                                                                          \
  template LaunchStatus gru_persistent_forward<T>(const PersistentForwardParams<T>&,           \
                                                  const PersistentGeometry&, cudaStream_t);    \
  template int gru_persistent_forward_max_active_clusters<T>(bool, bool, int, int64_t);        \
  }                                                                                            \
  }
#define GRU_PERSISTENT_INSTANTIATE_BACKWARD(T)                                                 \
  namespace gru_cuda {                                                                         \
  namespace kernels {                                                                          \
  template LaunchStatus gru_persistent_backward<T>(const PersistentBackwardParams<T>&,         \
                                                   const PersistentGeometry&, cudaStream_t);   \
  template int gru_persistent_backward_max_active_clusters<T>(bool, bool, int, int64_t);       \
  }                                                                                            \
  }
