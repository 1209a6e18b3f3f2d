// The per-step pointwise passes of the CPU GRU as plain functions of the runtime activation
// ids, one explicit instantiation per dtype (float, double; bfloat16 and float16 compute in
// float). The host code (gru_cpu_forward.cpp, gru_cpu_backward.cpp) sees only these
// declarations; the 144 activation-pair instantiations of each pass live in the small
// instantiate/gru_cpu_{fwd,bwd}_{ra,rb}_{f32,f64}[_avx2|_avx512].cpp files
// (gru_cpu_steps_impl.h), which compile in parallel instead of as one long translation unit.
//
// float has one build of the passes per instruction set (cpu_isa.h): the entry points below run
// the variant named by the step's `isa`, the per-variant definitions live in the namespaces
// isa_baseline, isa_avx2 and isa_avx512.
//
// Every function expects validated activation ids (check_forward_args); an unknown id runs
// nothing.
#pragma once

#include <cstdint>

#include "cpu/cpu_isa.h"

namespace gru_cuda {
namespace cpu {

// Recurrent products of one step: gate g of row b, unit j is at ptr[b * row + g * gate + j].
// The fused single GEMM gives a (B, 3H) block (row = 3H, gate = H); per-gate GEMMs with
// recurrent dropout give (3, B, H) (row = H, gate = B * H).
template <typename T>
struct GateView {
  const T* ptr;
  int64_t row, gate;
  const T& at(int64_t b, int64_t g, int64_t j) const { return ptr[b * row + g * gate + j]; }
};

template <typename T>
struct ForwardStep {
  int64_t B, H;
  const T* gx;        // (B, 3H) input projection x_t W of this step's input time (no bias)
  int64_t gx_row;     // row stride of gx: 3H, or T * 3H for a batch-major input
  GateView<T> gh;     // recurrent products (reset_after: all 3 gates; otherwise z and r)
  const T* ghh;       // reset_after=False, second phase: (B, H) (r * hd_h) U_h; else unused
  const T* bx;        // (3H) input bias b_i, zeros without one: added to gx in the passes
  const T* bh;        // (3H) recurrent bias, zeros without one (reset_after only)
  const T* h;         // (B, H) previous state
  const T* q_h;       // (B, H) recurrent dropout mask of the candidate gate, or nullptr
  const bool* valid;  // (B) mask at this input time, or nullptr (all valid)
  const T* prev_out;  // (B, H) previous output, or nullptr (zeros)
  bool zero_out;      // zero_output_for_mask
  T* ws;              // (B, WS) this step's workspace row block
  int64_t ws_width;   // 4H (reset_after) or 3H
  T* rh;              // reset_after=False: (B, H) r * hd_h for the second GEMM
  T* state;           // (B, H)
  T* out;             // (B, H), as prev_out
  int64_t out_row;    // row stride of out and prev_out: H, or T * H for batch-major outputs
  Isa isa;            // variant of the passes (float only; double runs the baseline build)
};

template <typename T>
struct BackwardStep {
  int64_t B, H;
  const T* dy;        // (B, H) gradient of this step's output
  int64_t dy_row;     // row stride of dy: H, or T * H for a batch-major gradient
  T* dh;              // (B, H) in: gradient w.r.t. state_s; out: partial gradient w.r.t. state_{s-1}
  T* dcarry;          // (B, H) gradient flowing into out_s from later masked steps (in/out)
  const T* h;         // (B, H) state_{s-1}
  const T* q_h;       // (B, H) recurrent dropout mask of the candidate gate, or nullptr
  const T* ws;        // (B, WS) workspace of this step
  int64_t ws_width;
  const bool* valid;  // (B) or nullptr
  bool zero_out;
  T* dgx;             // (B, 3H) gradient w.r.t. the input projection
  int64_t dgx_row;    // row stride of dgx: 3H, or T * 3H when stored batch-major (as x)
  T* dgh;             // (B, 3H) gradient w.r.t. the recurrent products (row stride 3H)
  const T* drh;       // reset_after=False phase 2: (B, H) da_h U_h^T
  Isa isa;
};

// Forward, reset_after=True: the whole step (gates, candidate, update) in one pass.
template <typename T>
void forward_step_reset_after(const ForwardStep<T>& p, int act, int ract);
// Forward, reset_after=False, phase 1: z, r and p.rh = r * hd_h (ones: a (B, H) row of ones,
// used as the candidate's recurrent dropout mask when p.q_h is null).
template <typename T>
void forward_step_reset_before_gates(const ForwardStep<T>& p, const T* ones, int ract);
// Forward, reset_after=False, phase 2: candidate from p.ghh = (r * hd_h) U_h, then the update.
template <typename T>
void forward_step_reset_before_candidate(const ForwardStep<T>& p, int act, int ract);

// Backward, reset_after=True: one step's gate gradients into p.dgx and p.dgh.
template <typename T>
void backward_step_reset_after(const BackwardStep<T>& p, int act, int ract);
// Backward, reset_after=False, phase 1: everything that does not need da_h U_h^T.
template <typename T>
void backward_step_reset_before_candidate(const BackwardStep<T>& p, int act, int ract);
// Backward, reset_after=False, phase 2: the reset gate, from p.drh = da_h U_h^T.
template <typename T>
void backward_step_reset_before_gates(const BackwardStep<T>& p, const T* ones, int ract);
// reset_after=False, for dU_h after the loop: out = r * hd_h over all rows (r from ws).
template <typename T>
void reset_state_rows(int64_t rows, int64_t H, const T* ws, int64_t ws_width, const T* hd_h,
                      T* out, int ract, Isa isa);

// The same passes in one instruction-set variant (no isa argument).
#define GRU_CPU_DECLARE_PASSES(NS)                                                                \
  namespace NS {                                                                                  \
  template <typename T>                                                                           \
  void forward_step_reset_after(const ForwardStep<T>& p, int act, int ract);                      \
  template <typename T>                                                                           \
  void forward_step_reset_before_gates(const ForwardStep<T>& p, const T* ones, int ract);         \
  template <typename T>                                                                           \
  void forward_step_reset_before_candidate(const ForwardStep<T>& p, int act, int ract);           \
  template <typename T>                                                                           \
  void backward_step_reset_after(const BackwardStep<T>& p, int act, int ract);                    \
  template <typename T>                                                                           \
  void backward_step_reset_before_candidate(const BackwardStep<T>& p, int act, int ract);         \
  template <typename T>                                                                           \
  void backward_step_reset_before_gates(const BackwardStep<T>& p, const T* ones, int ract);       \
  template <typename T>                                                                           \
  void reset_state_rows(int64_t rows, int64_t H, const T* ws, int64_t ws_width, const T* hd_h,    \
                        T* out, int ract);                                                        \
  }
GRU_CPU_DECLARE_PASSES(isa_baseline)
GRU_CPU_DECLARE_PASSES(isa_avx2)
GRU_CPU_DECLARE_PASSES(isa_avx512)
#undef GRU_CPU_DECLARE_PASSES

}  // namespace cpu
}  // namespace gru_cuda
