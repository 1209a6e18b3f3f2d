// Fused per-step pointwise passes of the CPU GRU (see docs/algorithm.md). Each pass is one loop
// over batch rows with a branch-free inner loop over units, templated on the activation pair
// (A, R) so that the compiler vectorises it. The cell arithmetic is common/gru_cell.h; these
// passes hold the loads, stores and masks.
//
// Included once per instruction-set variant (cpu_isa.h) with GRU_CPU_ISA_LEVEL set to 0
// (baseline), 1 (AVX2 + FMA) or 2 (AVX-512): the passes are defined in that variant's namespace
// under `#pragma GCC target`. Every other header is included before the pragma, so that no
// inline function of ATen, the standard library or common/ is compiled for a wider instruction
// set (the linker could pick such a copy for a baseline caller); the always-inline cell
// arithmetic is still vectorised for the variant, as part of the pass it is inlined into.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>
#include <type_traits>

#include "common/activations.h"
#include "common/gru_cell.h"
#include "cpu/fast_math.h"
#include "cpu/gru_cpu_steps.h"

#if !defined(GRU_CPU_ISA_LEVEL) || GRU_CPU_ISA_LEVEL == 0
#define GRU_CPU_ISA_NS isa_baseline
#elif GRU_CPU_ISA_LEVEL == 1
#define GRU_CPU_ISA_NS isa_avx2
#pragma GCC push_options
#pragma GCC target("avx2,fma")
#elif GRU_CPU_ISA_LEVEL == 2
#define GRU_CPU_ISA_NS isa_avx512
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")
#else
#error "GRU_CPU_ISA_LEVEL must be 0, 1 or 2"
#endif

namespace gru_cuda {
namespace cpu {
namespace GRU_CPU_ISA_NS {

// float uses the vectorisable exp/tanh; double keeps libm.
template <typename T>
using MathFor = std::conditional_t<std::is_same_v<T, float>, FastCpuMath, PreciseMath>;

template <int A, int R, typename T>
using Pair = cell::Fixed<A, R, MathFor<T>>;
// The passes that involve the reset gate only (the candidate activation is unused).
template <int R, typename T>
using RecOnly = cell::Fixed<kLinear, R, MathFor<T>>;

// Grain of the parallel loops: enough elements per task to amortise the thread hand-off.
constexpr int64_t kGrain = 8192;

// f(b) for every batch row, rows split across threads.
template <typename F>
inline void for_each_row(int64_t B, int64_t H, F&& f) {
  const int64_t grain = H > 0 ? (kGrain + H - 1) / H : B;
  at::parallel_for(0, B, grain, [&](int64_t begin, int64_t end) {
    for (int64_t b = begin; b < end; ++b) f(b);
  });
}

// Masked row: the state is carried and the output repeats the previous output (zeros before
// the first valid step, or always with zero_output_for_mask). Selection, never multiplication,
// so a NaN elsewhere cannot leak into the row.
template <typename T>
inline void carry_masked_row(const ForwardStep<T>& p, int64_t b) {
  const int64_t o = b * p.H, oo = b * p.out_row;
  const bool zero = p.zero_out || p.prev_out == nullptr;
  for (int64_t j = 0; j < p.H; ++j) {
    p.state[o + j] = p.h[o + j];
    p.out[oo + j] = zero ? T(0) : p.prev_out[oo + j];
  }
}

template <typename T>
inline bool row_valid(const bool* valid, int64_t b) {
  return valid == nullptr || valid[b];
}

// reset_after=True: the whole step of one row in one pass. Save: write the workspace row (the
// saved tensor of the backward pass); inference skips those four stores per unit.
template <typename T, int A, int R, bool Save>
inline void forward_reset_after_row(int64_t H, const T* __restrict__ gx, const T* __restrict__ gz,
                                    const T* __restrict__ gr, const T* __restrict__ gh,
                                    const T* __restrict__ bx, const T* __restrict__ bh,
                                    const T* __restrict__ h, T* __restrict__ ws,
                                    T* __restrict__ state, T* __restrict__ out) {
  for (int64_t j = 0; j < H; ++j) {
    const T a_z = gx[j] + bx[j] + gz[j] + bh[j];
    const T a_r = gx[H + j] + bx[H + j] + gr[j] + bh[H + j];
    const T gh_h = gh[j] + bh[2 * H + j];
    const T x_h = gx[2 * H + j] + bx[2 * H + j];
    const auto y = cell::forward_reset_after(Pair<A, R, T>{}, a_z, a_r, x_h, gh_h, h[j]);
    if constexpr (Save) {
      ws[j] = a_z;
      ws[H + j] = a_r;
      ws[2 * H + j] = y.a_h;
      ws[3 * H + j] = gh_h;
    }
    state[j] = y.h_new;
    out[j] = y.h_new;
  }
}

template <typename T, int A, int R>
void forward_reset_after(const ForwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_row(p.B, H, [&](int64_t b) {
    const int64_t o = b * H;
    const T *gx = p.gx + b * p.gx_row, *gz = &p.gh.at(b, 0, 0), *gr = &p.gh.at(b, 1, 0),
            *gh = &p.gh.at(b, 2, 0);
    if (p.ws != nullptr)
      forward_reset_after_row<T, A, R, true>(H, gx, gz, gr, gh, p.bx, p.bh, p.h + o,
                                             p.ws + b * p.ws_width, p.state + o,
                                             p.out + b * p.out_row);
    else
      forward_reset_after_row<T, A, R, false>(H, gx, gz, gr, gh, p.bx, p.bh, p.h + o, nullptr,
                                              p.state + o, p.out + b * p.out_row);
    if (!row_valid<T>(p.valid, b)) carry_masked_row(p, b);
  });
}

// reset_after=False, phase 1: gates z, r and the reset state r * hd_h for the second GEMM.
template <typename T, int R>
inline void forward_reset_before_gates_row(int64_t H, const T* __restrict__ gx,
                                           const T* __restrict__ bx, const T* __restrict__ gz,
                                           const T* __restrict__ gr, const T* __restrict__ h,
                                           const T* __restrict__ q_h, T* __restrict__ ws,
                                           T* __restrict__ rh) {
  for (int64_t j = 0; j < H; ++j) {
    const T a_z = gx[j] + bx[j] + gz[j];
    const T a_r = gx[H + j] + bx[H + j] + gr[j];
    ws[j] = a_z;
    ws[H + j] = a_r;
    rh[j] = cell::reset_state(RecOnly<R, T>{}, a_r, h[j] * q_h[j]);
  }
}

template <typename T, int R>
void forward_reset_before_gates(const ForwardStep<T>& p, const T* ones) {
  const int64_t H = p.H;
  for_each_row(p.B, H, [&](int64_t b) {
    const int64_t o = b * H;
    forward_reset_before_gates_row<T, R>(H, p.gx + b * p.gx_row, p.bx, &p.gh.at(b, 0, 0),
                                            &p.gh.at(b, 1, 0), p.h + o, p.q_h ? p.q_h + o : ones,
                                            p.ws + b * p.ws_width, p.rh + o);
  });
}

// reset_after=False, phase 2: candidate from (r * hd_h) U_h, then the update.
template <typename T, int A, int R>
inline void forward_reset_before_candidate_row(int64_t H, const T* __restrict__ gx,
                                               const T* __restrict__ bx, const T* __restrict__ ghh,
                                               const T* __restrict__ h, T* __restrict__ ws,
                                               T* __restrict__ state, T* __restrict__ out) {
  for (int64_t j = 0; j < H; ++j) {
    const T a_h = gx[2 * H + j] + bx[2 * H + j] + ghh[j];
    ws[2 * H + j] = a_h;
    const T hn = cell::forward_reset_before(Pair<A, R, T>{}, ws[j], a_h, h[j]);
    state[j] = hn;
    out[j] = hn;
  }
}

template <typename T, int A, int R>
void forward_reset_before_candidate(const ForwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_row(p.B, H, [&](int64_t b) {
    const int64_t o = b * H;
    forward_reset_before_candidate_row<T, A, R>(H, p.gx + b * p.gx_row, p.bx, p.ghh + o, p.h + o,
                                                p.ws + b * p.ws_width, p.state + o,
                                                p.out + b * p.out_row);
    if (!row_valid<T>(p.valid, b)) carry_masked_row(p, b);
  });
}

// Masked row: the cell result was discarded, so its gate gradients are zero and the state
// gradient passes through unchanged; the output gradient flows on to out_{s-1} (unless the
// masked output was a constant zero).
template <typename T>
inline void backward_masked_row(const BackwardStep<T>& p, int64_t b, T* dgh) {
  const int64_t H = p.H, o = b * H;
  const T* dy = p.dy + b * p.dy_row;
  for (int64_t j = 0; j < H; ++j) {
    const T g = dy[j] + p.dcarry[o + j];
    p.dcarry[o + j] = p.zero_out ? T(0) : g;
  }
  T* dgx = p.dgx + b * p.dgx_row;
  for (int64_t j = 0; j < 3 * H; ++j) dgx[j] = T(0);
  if (dgh != nullptr)
    for (int64_t j = 0; j < 3 * H; ++j) dgh[j] = T(0);
}

template <typename T, int A, int R>
inline void backward_reset_after_row(int64_t H, const T* __restrict__ dy, T* __restrict__ dh,
                                     T* __restrict__ dcarry, const T* __restrict__ h,
                                     const T* __restrict__ ws, T* __restrict__ dgx,
                                     T* __restrict__ dgh) {
  for (int64_t j = 0; j < H; ++j) {
    const T dhn = dh[j] + dy[j] + dcarry[j];
    dcarry[j] = T(0);
    const auto g = cell::backward_reset_after(Pair<A, R, T>{}, dhn, ws[j], ws[H + j],
                                              ws[2 * H + j], ws[3 * H + j], h[j]);
    dgx[j] = g.da_z;
    dgx[H + j] = g.da_r;
    dgx[2 * H + j] = g.da_h;
    dgh[j] = g.da_z;
    dgh[H + j] = g.da_r;
    dgh[2 * H + j] = g.dgh_h;
    dh[j] = g.dh;
  }
}

template <typename T, int A, int R>
void backward_reset_after(const BackwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_row(p.B, H, [&](int64_t b) {
    const int64_t o = b * H;
    if (!row_valid<T>(p.valid, b)) return backward_masked_row(p, b, p.dgh + b * 3 * H);
    backward_reset_after_row<T, A, R>(H, p.dy + b * p.dy_row, p.dh + o, p.dcarry + o, p.h + o,
                                      p.ws + b * p.ws_width, p.dgx + b * p.dgx_row,
                                      p.dgh + b * 3 * H);
  });
}

// reset_after=False, phase 1: everything that does not need da_h U_h^T.
template <typename T, int A, int R>
inline void backward_reset_before_candidate_row(int64_t H, const T* __restrict__ dy,
                                                T* __restrict__ dh, T* __restrict__ dcarry,
                                                const T* __restrict__ h, const T* __restrict__ ws,
                                                T* __restrict__ dgx) {
  for (int64_t j = 0; j < H; ++j) {
    const T dhn = dh[j] + dy[j] + dcarry[j];
    dcarry[j] = T(0);
    const auto g = cell::backward_reset_before(Pair<A, R, T>{}, dhn, ws[j], ws[2 * H + j], h[j]);
    dgx[2 * H + j] = g.da_h;
    dgx[j] = g.da_z;
    dh[j] = g.dh;
  }
}

template <typename T, int A, int R>
void backward_reset_before_candidate(const BackwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_row(p.B, H, [&](int64_t b) {
    const int64_t o = b * H;
    if (!row_valid<T>(p.valid, b)) return backward_masked_row<T>(p, b, nullptr);
    backward_reset_before_candidate_row<T, A, R>(H, p.dy + b * p.dy_row, p.dh + o, p.dcarry + o,
                                                 p.h + o, p.ws + b * p.ws_width,
                                                 p.dgx + b * p.dgx_row);
  });
}

// reset_after=False, phase 2: the reset gate, from drh = da_h U_h^T.
template <typename T, int R>
inline void backward_reset_before_gates_row(int64_t H, const T* __restrict__ drh,
                                            const T* __restrict__ h, const T* __restrict__ q,
                                            const T* __restrict__ ws, T* __restrict__ dgx_r,
                                            T* __restrict__ dh) {
  for (int64_t j = 0; j < H; ++j) {
    const auto g =
        cell::backward_reset_gate(RecOnly<R, T>{}, drh[j], ws[H + j], h[j] * q[j], q[j]);
    dgx_r[j] = g.da_r;
    dh[j] += g.dh;
  }
}

template <typename T, int R>
void backward_reset_before_gates(const BackwardStep<T>& p, const T* ones) {
  const int64_t H = p.H;
  for_each_row(p.B, H, [&](int64_t b) {
    if (!row_valid<T>(p.valid, b)) return;  // dgx row already zero, dh already carried
    const int64_t o = b * H;
    backward_reset_before_gates_row<T, R>(H, p.drh + o, p.h + o, p.q_h ? p.q_h + o : ones,
                                          p.ws + b * p.ws_width, p.dgx + b * p.dgx_row + H,
                                          p.dh + o);
  });
}

// reset_after=False, for dU_h after the loop: out = r * hd_h over all steps (r from the workspace).
template <typename T, int R>
void reset_state_all(int64_t rows, int64_t H, const T* ws, int64_t ws_width, const T* hd_h, T* out) {
  for_each_row(rows, H, [&](int64_t b) {
    for (int64_t j = 0; j < H; ++j)
      out[b * H + j] =
          cell::reset_state(RecOnly<R, T>{}, ws[b * ws_width + H + j], hd_h[b * H + j]);
  });
}

}  // namespace GRU_CPU_ISA_NS
}  // namespace cpu
}  // namespace gru_cuda

#if defined(GRU_CPU_ISA_LEVEL) && GRU_CPU_ISA_LEVEL != 0
#pragma GCC pop_options
#endif
