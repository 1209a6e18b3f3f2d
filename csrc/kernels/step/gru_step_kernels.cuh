// The per-step pointwise kernels of the stepwise GRU (docs/algorithm.md) and their launchers.
//
// Every kernel is templated on the storage dtype T and the activation pair (A, R), and the
// convention is a separate kernel, so the per-element code has no branch on any of them.
// Arithmetic runs in acc_t<T>; the cell itself is common/gru_cell.h, the kernels hold the loads,
// stores, masks and dropout. Branches that remain are on nullable pointers (uniform across the grid) or on the
// batch row's mask (uniform across a warp: a warp covers one row, blockDim.x >= 32).
//
// This header defines the launcher templates; each gru_step_*.cu file includes it and explicitly
// instantiates one kernel family for one dtype, so that the many (dtype, pair) instantiations
// compile in parallel translation units.
//
// No __launch_bounds__: with it ptxas capped registers at 64-80 and spilled in the
// double-precision and some fp32 instantiations; without it the heaviest (fp64 gelu/exponential
// backward) uses ~160 registers, still launchable with 256 threads a block.
#pragma once

#include "common/gru_cell.h"
#include "kernels/step/gru_device.cuh"

namespace gru_cuda {
namespace kernels {
namespace {

// Shared tail of a forward step: mask selection (never multiplication, so a NaN row stays in
// its row), outputs, the carried state and the dropped state for the next GEMM.
template <typename T, int kDroppedGates>
__device__ __forceinline__ void finish_forward_step(const ForwardStepArgs<T>& p, int64_t b,
                                                    int64_t i, acc_t<T> h_new, T h_prev) {
  const bool valid = p.mask == nullptr || p.mask[b];
  const T h_new_t = from_acc<T>(h_new);
  const T state = valid ? h_new_t : h_prev;  // a carried state is copied bit for bit
  T out;
  if (valid) {
    out = h_new_t;
  } else if (p.zero_output_for_mask || p.out_prev == nullptr) {
    out = from_acc<T>(acc_t<T>(0));
  } else {
    out = p.out_prev[i];
  }
  p.out[i] = out;
  p.state[i] = state;
  if (p.hd_next != nullptr) {
    const int64_t BH = p.B * p.H;
    const acc_t<T> sv = to_acc(state);
#pragma unroll
    for (int g = 0; g < kDroppedGates; ++g) {
      p.hd_next[g * BH + i] = from_acc<T>(sv * to_acc(p.recurrent_dropout[g * BH + i]));
    }
  }
}

// reset_after=True: the whole pointwise part of a step.
template <typename T, int A, int R>
__global__ void
    forward_step_reset_after_kernel(const ForwardStepArgs<T> p) {
  using Acc = acc_t<T>;
  const int64_t H = p.H;
  GRU_ROWS_COLS_LOOP(b, j, p.B, H) {
    const int64_t i = b * H + j;
    const T* gx = p.gx + b * 3 * H;
    const T* gh = p.gh + b * p.gh_row_stride;
    Acc bz = Acc(0), br = Acc(0), bh = Acc(0);
    if (p.recurrent_bias != nullptr) {
      bz = to_acc(p.recurrent_bias[j]);
      br = to_acc(p.recurrent_bias[H + j]);
      bh = to_acc(p.recurrent_bias[2 * H + j]);
    }
    const Acc a_z = to_acc(gx[j]) + (to_acc(gh[j]) + bz);
    const Acc a_r = to_acc(gx[H + j]) + (to_acc(gh[p.gh_gate_stride + j]) + br);
    const Acc gh_h = to_acc(gh[2 * p.gh_gate_stride + j]) + bh;
    const T h_prev = p.h_prev[i];
    const auto y = cell::forward_reset_after(cell::Fixed<A, R>{}, a_z, a_r, to_acc(gx[2 * H + j]),
                                             gh_h, to_acc(h_prev));
    if (p.workspace != nullptr) {
      T* ws = p.workspace + b * 4 * H;
      ws[j] = from_acc<T>(a_z);
      ws[H + j] = from_acc<T>(a_r);
      ws[2 * H + j] = from_acc<T>(y.a_h);
      ws[3 * H + j] = from_acc<T>(gh_h);
    }
    finish_forward_step<T, 3>(p, b, i, y.h_new, h_prev);
  }
}

// reset_after=False, pass 1: z and r pre-activations, and r ⊙ hd_h for the second GEMM.
template <typename T, int R>
__global__ void
    forward_reset_gate_kernel(const ForwardResetGateArgs<T> p) {
  using Acc = acc_t<T>;
  const int64_t H = p.H, BH = p.B * p.H;
  GRU_ROWS_COLS_LOOP(b, j, p.B, H) {
    const int64_t i = b * H + j;
    const T* gx = p.gx + b * 3 * H;
    const T* gzr = p.gzr + b * p.gzr_row_stride;
    const Acc a_z = to_acc(gx[j]) + to_acc(gzr[j]);
    const Acc a_r = to_acc(gx[H + j]) + to_acc(gzr[p.gzr_gate_stride + j]);
    Acc hd_h = to_acc(p.h_prev[i]);
    if (p.recurrent_dropout != nullptr) hd_h *= to_acc(p.recurrent_dropout[2 * BH + i]);
    T* ws = p.workspace + b * 3 * H;
    ws[j] = from_acc<T>(a_z);
    ws[H + j] = from_acc<T>(a_r);
    p.rh[i] = from_acc<T>(cell::reset_state(cell::Fixed<kLinear, R>{}, a_r, hd_h));
  }
}

// reset_after=False, pass 2: candidate, update and mask, after the GEMM (r ⊙ hd_h) U_h.
template <typename T, int A, int R>
__global__ void
    forward_step_reset_before_kernel(const ForwardStepArgs<T> p) {
  using Acc = acc_t<T>;
  const int64_t H = p.H;
  GRU_ROWS_COLS_LOOP(b, j, p.B, H) {
    const int64_t i = b * H + j;
    T* ws = p.workspace + b * 3 * H;
    const Acc a_h = to_acc(p.gx[b * 3 * H + 2 * H + j]) + to_acc(p.gh[b * p.gh_row_stride + j]);
    ws[2 * H + j] = from_acc<T>(a_h);
    const T h_prev = p.h_prev[i];
    const Acc h_new =
        cell::forward_reset_before(cell::Fixed<A, R>{}, to_acc(ws[j]), a_h, to_acc(h_prev));
    finish_forward_step<T, 2>(p, b, i, h_new, h_prev);
  }
}

// dh w.r.t. the state after this step: the elementwise part carried in dh_part (or the
// incoming grad_final_state) plus the previous step's GEMM results, each gate's masked by q_g.
template <typename T>
__device__ __forceinline__ acc_t<T> incoming_state_grad(const T* grad_final_state,
                                                        const acc_t<T>* dh_part, const T* dhg,
                                                        int64_t dhg_gate_stride, int dhg_gates,
                                                        const T* q, int64_t BH, int64_t i) {
  acc_t<T> dh = grad_final_state != nullptr ? to_acc(grad_final_state[i]) : dh_part[i];
#pragma unroll
  for (int g = 0; g < 3; ++g) {
    if (g < dhg_gates) {
      acc_t<T> v = to_acc(dhg[g * dhg_gate_stride + i]);
      if (q != nullptr) v *= to_acc(q[g * BH + i]);
      dh += v;
    }
  }
  return dh;
}

// Head of a backward step shared by both conventions: the gradient flowing into the cell
// result (dhn) on a valid row; on a masked row it carries dh and dcarry and returns false.
template <typename T>
__device__ __forceinline__ bool backward_step_head(const BackwardStepArgs<T>& p, int64_t b,
                                                   int64_t i, acc_t<T>& dhn) {
  using Acc = acc_t<T>;
  const Acc dh = incoming_state_grad<T>(p.grad_final_state, p.dh_part, p.dhg, p.dhg_gate_stride,
                                        p.dhg_gates, p.recurrent_dropout, p.B * p.H, i);
  Acc g = to_acc(p.grad_out[i]);
  if (p.dcarry != nullptr) g += p.dcarry[i];
  const bool valid = p.mask == nullptr || p.mask[b];
  if (p.dcarry != nullptr) p.dcarry[i] = valid ? Acc(0) : g;
  if (!valid) {
    p.dh_part[i] = dh;  // the state was carried through this step
    return false;
  }
  dhn = dh + g;
  return true;
}

template <typename T, int A, int R>
__global__ void
    backward_step_reset_after_kernel(const BackwardStepArgs<T> p) {
  using Acc = acc_t<T>;
  const int64_t H = p.H;
  GRU_ROWS_COLS_LOOP(b, j, p.B, H) {
    const int64_t i = b * H + j;
    T* dg = p.dgates + b * 3 * H;
    Acc dhn;
    if (!backward_step_head<T>(p, b, i, dhn)) {
      const T zero = from_acc<T>(Acc(0));
      dg[j] = zero;
      dg[H + j] = zero;
      dg[2 * H + j] = zero;
      p.aux[i] = zero;
      continue;
    }
    const T* ws = p.workspace + b * 4 * H;
    const auto g = cell::backward_reset_after(cell::Fixed<A, R>{}, dhn, to_acc(ws[j]),
                                              to_acc(ws[H + j]), to_acc(ws[2 * H + j]),
                                              to_acc(ws[3 * H + j]), to_acc(p.h_prev[i]));
    dg[j] = from_acc<T>(g.da_z);
    dg[H + j] = from_acc<T>(g.da_r);
    dg[2 * H + j] = from_acc<T>(g.dgh_h);
    p.aux[i] = from_acc<T>(g.da_h);
    p.dh_part[i] = g.dh;
  }
}

// reset_after=False, pass 1: everything but the reset gate, which needs drh = da_h U_hᵀ.
template <typename T, int A, int R>
__global__ void
    backward_step_reset_before_kernel(const BackwardStepArgs<T> p) {
  using Acc = acc_t<T>;
  const int64_t H = p.H;
  GRU_ROWS_COLS_LOOP(b, j, p.B, H) {
    const int64_t i = b * H + j;
    T* dg = p.dgates + b * 3 * H;
    Acc dhn;
    if (!backward_step_head<T>(p, b, i, dhn)) {
      const T zero = from_acc<T>(Acc(0));
      dg[j] = zero;
      dg[2 * H + j] = zero;
      continue;
    }
    const T* ws = p.workspace + b * 3 * H;
    const auto g = cell::backward_reset_before(cell::Fixed<A, R>{}, dhn, to_acc(ws[j]),
                                               to_acc(ws[2 * H + j]), to_acc(p.h_prev[i]));
    dg[j] = from_acc<T>(g.da_z);
    dg[2 * H + j] = from_acc<T>(g.da_h);
    p.dh_part[i] = g.dh;
  }
}

// reset_after=False, pass 2: the reset gate's gradient and r ⊙ hd_h for grad U_h.
template <typename T, int R>
__global__ void
    backward_reset_gate_kernel(const BackwardResetGateArgs<T> p) {
  using Acc = acc_t<T>;
  const int64_t H = p.H, BH = p.B * p.H;
  GRU_ROWS_COLS_LOOP(b, j, p.B, H) {
    const int64_t i = b * H + j;
    T* dg = p.dgates + b * 3 * H;
    if (p.mask != nullptr && !p.mask[b]) {
      const T zero = from_acc<T>(Acc(0));
      dg[H + j] = zero;
      p.aux[i] = zero;
      continue;
    }
    const Acc q_h = p.recurrent_dropout != nullptr ? to_acc(p.recurrent_dropout[2 * BH + i])
                                                   : Acc(1);
    const auto g = cell::backward_reset_gate(cell::Fixed<kLinear, R>{}, to_acc(p.drh[i]),
                                             to_acc(p.workspace[b * 3 * H + H + j]),
                                             to_acc(p.h_prev[i]) * q_h, q_h);
    dg[H + j] = from_acc<T>(g.da_r);
    p.dh_part[i] += g.dh;
    p.aux[i] = from_acc<T>(g.rh);
  }
}

}  // namespace

template <typename T>
void gru_forward_step_reset_after(const ForwardStepArgs<T>& args, int activation,
                                  int recurrent_activation, cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(args.B, args.H, s)) return;
  dispatch_activation_pair(activation, recurrent_activation, [&](auto a, auto r) {
    forward_step_reset_after_kernel<T, decltype(a)::value, decltype(r)::value>
        <<<s.grid, s.block, 0, stream>>>(args);
  });
}

template <typename T>
void gru_forward_reset_gate(const ForwardResetGateArgs<T>& args, int recurrent_activation,
                            cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(args.B, args.H, s)) return;
  dispatch_activation(recurrent_activation, [&](auto r) {
    forward_reset_gate_kernel<T, decltype(r)::value><<<s.grid, s.block, 0, stream>>>(args);
  });
}

template <typename T>
void gru_forward_step_reset_before(const ForwardStepArgs<T>& args, int activation,
                                   int recurrent_activation, cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(args.B, args.H, s)) return;
  dispatch_activation_pair(activation, recurrent_activation, [&](auto a, auto r) {
    forward_step_reset_before_kernel<T, decltype(a)::value, decltype(r)::value>
        <<<s.grid, s.block, 0, stream>>>(args);
  });
}

template <typename T>
void gru_backward_step_reset_after(const BackwardStepArgs<T>& args, int activation,
                                   int recurrent_activation, cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(args.B, args.H, s)) return;
  dispatch_activation_pair(activation, recurrent_activation, [&](auto a, auto r) {
    backward_step_reset_after_kernel<T, decltype(a)::value, decltype(r)::value>
        <<<s.grid, s.block, 0, stream>>>(args);
  });
}

template <typename T>
void gru_backward_step_reset_before(const BackwardStepArgs<T>& args, int activation,
                                    int recurrent_activation, cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(args.B, args.H, s)) return;
  dispatch_activation_pair(activation, recurrent_activation, [&](auto a, auto r) {
    backward_step_reset_before_kernel<T, decltype(a)::value, decltype(r)::value>
        <<<s.grid, s.block, 0, stream>>>(args);
  });
}

template <typename T>
void gru_backward_reset_gate(const BackwardResetGateArgs<T>& args, int recurrent_activation,
                             cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(args.B, args.H, s)) return;
  dispatch_activation(recurrent_activation, [&](auto r) {
    backward_reset_gate_kernel<T, decltype(r)::value><<<s.grid, s.block, 0, stream>>>(args);
  });
}

}  // namespace kernels
}  // namespace gru_cuda

// One kernel family for one dtype per translation unit (see the gru_step_*.cu files).
#define GRU_INSTANTIATE_FORWARD_RESET_AFTER(T)                                                \
  namespace gru_cuda {                                                                        \
  namespace kernels {                                                                         \
  template void gru_forward_step_reset_after<T>(const ForwardStepArgs<T>&, int, int,          \
                                                cudaStream_t);                                \
  }                                                                                           \
  }
#define GRU_INSTANTIATE_FORWARD_RESET_BEFORE(T)                                               \
  namespace gru_cuda {                                                                        \
  namespace kernels {                                                                         \
  template void gru_forward_reset_gate<T>(const ForwardResetGateArgs<T>&, int, cudaStream_t); \
  template void gru_forward_step_reset_before<T>(const ForwardStepArgs<T>&, int, int,         \
                                                 cudaStream_t);                               \
  }                                                                                           \
  }
#define GRU_INSTANTIATE_BACKWARD_RESET_AFTER(T)                                               \
  namespace gru_cuda {                                                                        \
  namespace kernels {                                                                         \
  template void gru_backward_step_reset_after<T>(const BackwardStepArgs<T>&, int, int,        \
                                                 cudaStream_t);                               \
  }                                                                                           \
  }
#define GRU_INSTANTIATE_BACKWARD_RESET_BEFORE(T)                                              \
  namespace gru_cuda {                                                                        \
  namespace kernels {                                                                         \
  template void gru_backward_step_reset_before<T>(const BackwardStepArgs<T>&, int, int,       \
                                                  cudaStream_t);                              \
  template void gru_backward_reset_gate<T>(const BackwardResetGateArgs<T>&, int,              \
                                           cudaStream_t);                                     \
  }                                                                                           \
  }
