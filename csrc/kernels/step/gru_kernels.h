// Launchers of the stepwise CUDA GRU kernels: torch-free (raw pointers, sizes, a stream), so that
// csrc/kernels/ compiles with nvcc alone (CMakeLists.txt) and the binding (csrc/cuda/) calls them.
//
// Conventions shared by every launcher:
//   * T is the storage dtype: float, double, __half or __nv_bfloat16. Arithmetic runs in
//     acc_t<T> (double for double, float otherwise).
//   * Every pointer is to a dense, row-major block; the shape is given next to each field.
//     B = batch, H = units, "(B, H)" means element (b, j) at p[b * H + j].
//   * Nullable pointers say so; a null one means "absent" (no mask, no dropout, ...).
//   * Any B, H >= 0 (no multiple of 32 assumed). A launcher with nothing to do (B == 0 or
//     H == 0, ...) launches nothing. Index math is int64 throughout; the one limit is that the
//     innermost extent of a launch (H, or B*F / B*H for the helpers) stays below 2^39.
//   * Launchers are asynchronous on `stream` and never synchronise; the caller checks
//     cudaGetLastError() afterwards.
//   * Activation ids are those of csrc/common/activations.h and must be valid (the binding
//     checks them); an invalid id launches nothing.
//
// One step s of the forward pass (docs/algorithm.md) is, for reset_after=True,
//   GEMM gh = hd U  ->  gru_forward_step_reset_after
// and for reset_after=False
//   GEMM [hd_z U_z, hd_r U_r]  ->  gru_forward_reset_gate  ->  GEMM (r ⊙ hd_h) U_h
//     ->  gru_forward_step_reset_before
// One step of the backward pass is, for reset_after=True,
//   gru_backward_step_reset_after  ->  GEMM dgh Uᵀ
// and for reset_after=False
//   gru_backward_step_reset_before  ->  GEMM da_h U_hᵀ  ->  gru_backward_reset_gate
//     ->  GEMM [da_z, da_r] U_{z,r}ᵀ
// and gru_finish_grad_h0 after the last one.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "kernels/acc_type.h"

namespace gru_cuda {
namespace kernels {

// ---------------------------------------------------------------------------------------------
// Forward
// ---------------------------------------------------------------------------------------------

// The fused pointwise part of one forward step: reset_after=True (the whole step), or the second
// pass of reset_after=False (candidate, update, mask). Gate blocks in Keras order [z | r | h].
template <typename T>
struct ForwardStepArgs {
  int64_t B = 0, H = 0;
  // (B, 3H) row τ(s) of the input projection x W + b_i (b_i already added).
  const T* gx = nullptr;
  // Recurrent products. reset_after=True: element (b, g, j) of [hd_z U_z, hd_r U_r, hd_h U_h]
  // at gh[b * gh_row_stride + g * gh_gate_stride + j] (so (B, 3H) has strides (3H, H) and
  // (3, B, H) has strides (H, B*H)). reset_after=False: (b, j) of (r ⊙ hd_h) U_h at
  // gh[b * gh_row_stride + j]; gh_gate_stride unused.
  const T* gh = nullptr;
  int64_t gh_row_stride = 0, gh_gate_stride = 0;
  // (3H,) recurrent bias b_h = bias[1] (reset_after=True only), or nullptr.
  const T* recurrent_bias = nullptr;
  // (B, H) the carried state h_{s-1} (h0 at s = 0).
  const T* h_prev = nullptr;
  // (B,) mask row of input time τ(s), true = valid; nullptr = all valid.
  const bool* mask = nullptr;
  // (B, H) outputs[s-1], or nullptr at s = 0 (the output before the first step is 0).
  const T* out_prev = nullptr;
  // (3, B, H) recurrent dropout masks q_g, or nullptr; used only to produce hd_next.
  const T* recurrent_dropout = nullptr;
  bool zero_output_for_mask = false;
  // (B, H) outputs[s].
  T* out = nullptr;
  // (B, H) the carried state after step s (states[s], or a scratch buffer).
  T* state = nullptr;
  // reset_after=True: (B, 4H) workspace[s] = [a_z | a_r | a_h | gh_h], or nullptr (not saved).
  // reset_after=False: (B, 3H) workspace[s] (or a scratch): reads a_z written by
  // gru_forward_reset_gate, writes a_h. Never nullptr.
  T* workspace = nullptr;
  // (3, B, H) (reset_after=True) or (2, B, H) (reset_after=False): state ⊙ q_g, the dropped
  // state of the next step's GEMM; nullptr when there is no recurrent dropout or no next step.
  T* hd_next = nullptr;
};

// reset_after=False, first pass of a step: z and r pre-activations and r ⊙ hd_h.
template <typename T>
struct ForwardResetGateArgs {
  int64_t B = 0, H = 0;
  // (B, 3H) row τ(s) of the input projection (b_i included).
  const T* gx = nullptr;
  // (b, g, j), g in {z, r}, of [hd_z U_z, hd_r U_r] at gzr[b * row_stride + g * gate_stride + j].
  const T* gzr = nullptr;
  int64_t gzr_row_stride = 0, gzr_gate_stride = 0;
  // (B, H) h_{s-1}.
  const T* h_prev = nullptr;
  // (3, B, H) recurrent dropout masks, or nullptr (only q_h = [2] is read here).
  const T* recurrent_dropout = nullptr;
  // (B, 3H) workspace[s] (or scratch): writes a_z and a_r.
  T* workspace = nullptr;
  // (B, H) r ⊙ hd_h, the left operand of the second GEMM.
  T* rh = nullptr;
};

template <typename T>
void gru_forward_step_reset_after(const ForwardStepArgs<T>& args, int activation,
                                  int recurrent_activation, cudaStream_t stream);
template <typename T>
void gru_forward_reset_gate(const ForwardResetGateArgs<T>& args, int recurrent_activation,
                            cudaStream_t stream);
template <typename T>
void gru_forward_step_reset_before(const ForwardStepArgs<T>& args, int activation,
                                   int recurrent_activation, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Backward
// ---------------------------------------------------------------------------------------------

// The incoming gradient w.r.t. the state after step s is
//   dh = (grad_final_state ? grad_final_state : dh_part) + Σ_{g < dhg_gates} q_g ⊙ dhg[g]
// where dhg holds the previous (later) step's GEMM results dgh_g U_gᵀ (q_g = 1 without
// recurrent dropout; then the GEMM has summed the gates and dhg_gates is 1).
template <typename T>
struct BackwardStepArgs {
  int64_t B = 0, H = 0;
  // (B, H) grad_final_state at the first processed step (s = T-1), else nullptr.
  const T* grad_final_state = nullptr;
  // (B, H) fp32/fp64 running gradient w.r.t. the carried state: read (unless
  // grad_final_state is given), then overwritten with this step's elementwise part of dh_{s-1}.
  acc_t<T>* dh_part = nullptr;
  // (dhg_gates, B, H), gate g at dhg + g * dhg_gate_stride; nullptr when dhg_gates == 0.
  const T* dhg = nullptr;
  int64_t dhg_gate_stride = 0;
  int dhg_gates = 0;  // 0 (first processed step), 1 (no recurrent dropout), 2 or 3
  // (3, B, H) recurrent dropout masks, or nullptr.
  const T* recurrent_dropout = nullptr;
  // (B, H) grad_outputs[s].
  const T* grad_out = nullptr;
  // (B, H) fp32/fp64 gradient carried into out_s by later masked steps that repeated it;
  // read and updated. nullptr unless there is a mask and zero_output_for_mask is false.
  acc_t<T>* dcarry = nullptr;
  // (B,) mask row of input time τ(s), or nullptr.
  const bool* mask = nullptr;
  // (B, H) h_{s-1} (states[s-1], or h0 at s = 0).
  const T* h_prev = nullptr;
  // workspace[s]: (B, 4H) [a_z|a_r|a_h|gh_h] (reset_after=True), (B, 3H) [a_z|a_r|a_h] (False).
  const T* workspace = nullptr;
  // (B, 3H) row τ(s) of the gate-gradient buffer. reset_after=True: writes dgh =
  // [da_z | da_r | da_h ⊙ r]. reset_after=False: writes da_z and da_h (gru_backward_reset_gate
  // writes da_r). Masked rows get zeros.
  T* dgates = nullptr;
  // (B, H) row τ(s) of the side buffer. reset_after=True: da_h (the h block of dgx).
  // reset_after=False: unused here (gru_backward_reset_gate writes it).
  T* aux = nullptr;
};

// reset_after=False, second pass of a backward step, after the GEMM drh = da_h U_hᵀ.
template <typename T>
struct BackwardResetGateArgs {
  int64_t B = 0, H = 0;
  // (B, H) drh = da_h U_hᵀ.
  const T* drh = nullptr;
  // (B, H) h_{s-1}.
  const T* h_prev = nullptr;
  // (3, B, H) recurrent dropout masks, or nullptr (only q_h = [2] is read).
  const T* recurrent_dropout = nullptr;
  // (B,) mask row of input time τ(s), or nullptr.
  const bool* mask = nullptr;
  // (B, 3H) workspace[s] (reads a_r).
  const T* workspace = nullptr;
  // (B, H) fp32/fp64: += q_h ⊙ drh ⊙ r on valid rows.
  acc_t<T>* dh_part = nullptr;
  // (B, 3H) row τ(s) of the gate gradients: writes the r block da_r.
  T* dgates = nullptr;
  // (B, H) row τ(s): writes r ⊙ hd_h (the left operand of grad U_h); 0 on masked rows.
  T* aux = nullptr;
};

template <typename T>
void gru_backward_step_reset_after(const BackwardStepArgs<T>& args, int activation,
                                   int recurrent_activation, cudaStream_t stream);
template <typename T>
void gru_backward_step_reset_before(const BackwardStepArgs<T>& args, int activation,
                                    int recurrent_activation, cudaStream_t stream);
template <typename T>
void gru_backward_reset_gate(const BackwardResetGateArgs<T>& args, int recurrent_activation,
                             cudaStream_t stream);

// grad_h0 (B, H) = dh_part + Σ_{g < dhg_gates} q_g ⊙ dhg[g], after step 0.
//   dh_part (B, H) acc_t<T>; dhg (dhg_gates, B, H) with gate stride dhg_gate_stride;
//   recurrent_dropout (3, B, H) or nullptr.
template <typename T>
void gru_finish_grad_h0(T* grad_h0, const acc_t<T>* dh_part, const T* dhg,
                        int64_t dhg_gate_stride, int dhg_gates, const T* recurrent_dropout,
                        int64_t B, int64_t H, cudaStream_t stream);

// ---------------------------------------------------------------------------------------------
// Small helpers (outside the time loop, or once per call)
// ---------------------------------------------------------------------------------------------

// out[g, t, i] = (accumulate ? out[g, t, i] : 0) + in[t, i] * m[g, i]
//   out (groups, outer, inner), in (outer, inner), m (groups, inner). out may equal in.
// Applies dropout masks: x ⊙ m (groups=1, outer=T, inner=B*F), h0 ⊙ q_g (groups=2|3,
// outer=1, inner=B*H), grad_x += tmp ⊙ m_g (accumulate).
template <typename T>
void gru_mask_multiply(T* out, const T* in, const T* m, int64_t groups, int64_t outer,
                       int64_t inner, bool accumulate, cudaStream_t stream);

// hp[τ] = h_{s-1} ⊙ q with s the processing step of input time τ (s = τ, or T-1-τ when
// go_backwards), h_{-1} = h0: the recurrent GEMM operands in input-time order, so that they
// pair with gate gradients stored by τ.
//   hp (T, B, H); h0 (B, H); states (T, B, H); q (B, H) one gate's dropout mask, or nullptr.
template <typename T>
void gru_gather_previous_states(T* hp, const T* h0, const T* states, const T* q, int64_t T_,
                                int64_t B, int64_t H, bool go_backwards, cudaStream_t stream);

// Deterministic column sums (no atomics; a fixed summation order for given sizes):
//   out (cols,) = Σ_r in[r * ld + c], in (rows, ld) with ld >= cols. Sums in acc_t<T>.
// workspace: gru_column_sum_workspace(rows, cols) elements of acc_t<T> (may be 0 -> nullptr).
int64_t gru_column_sum_workspace(int64_t rows, int64_t cols);
template <typename T>
void gru_column_sum(T* out, const T* in, int64_t rows, int64_t cols, int64_t ld,
                    acc_t<T>* workspace, cudaStream_t stream);

}  // namespace kernels
}  // namespace gru_cuda
