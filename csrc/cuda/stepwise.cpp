// The stepwise path: see stepwise.h.
//
// Buffers per call (D = the dtype of x, A = float, or double for float64):
//   forward:  (3, B, H) D recurrent GEMM result; with recurrent dropout (3, B, H) D dropped
//             state; reset_after=False: 2 x (B, H) D (r ⊙ hd_h and its product); without
//             saved states: (2, B, H) D ping-pong state (+ (B, 3H) D scratch workspace for
//             reset_after=False).
//   backward: (B, H) A running dh (+ (B, H) A carried output gradient with a mask and
//             zero_output_for_mask=False); (G, B, H) D GEMM result.
#include "cuda/stepwise.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <type_traits>

#include "kernels/step/gru_kernels.h"

namespace gru_cuda {
namespace stepwise {
namespace {

using at::Tensor;
namespace kn = gru_cuda::kernels;

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

const bool* mask_ptr(const Tensor& t) {
  return t.defined() ? static_cast<const bool*>(t.data_ptr()) : nullptr;
}

// GEMMs into preallocated outputs (views: column blocks, gate blocks). ATen hands strided
// operands with a unit inner stride straight to cuBLAS (leading dimensions, batch strides), so
// none of these copies. The out argument is taken by value so that a view can be passed.
void mm_into(Tensor out, const Tensor& a, const Tensor& b) { at::mm_out(out, a, b); }
void bmm_into(Tensor out, const Tensor& a, const Tensor& b) { at::bmm_out(out, a, b); }

}  // namespace

template <typename T>
void run(const ForwardRecurrence& r) {
  const RecurrentCell& c = r.cell;
  const Tensor &gx = r.gx, &U = c.U, &h0c = c.h0, &rdm = c.rdm;
  const Tensor &outputs = r.outputs, &states = r.states, &workspace = r.workspace;
  const bool reset_after = c.reset_after, has_rdm = rdm.defined();
  const bool save_for_backward = states.numel() > 0;
  const int activation = c.activation, recurrent_activation = c.recurrent_activation;
  const int64_t T_ = gx.size(0), B = gx.size(1), H = U.size(0), BH = B * H;
  const int64_t W = (reset_after ? 4 : 3) * H;
  const auto opts = gx.options();
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const T* b_h = r.bias.defined() && reset_after ? ptr<T>(r.bias) + 3 * H : nullptr;

  // 1. Buffers and views of the loop, all made before it.
  const int dropped_gates = reset_after ? 3 : 2;  // gates whose GEMM reads the dropped state
  Tensor gh = at::empty({3 * BH}, opts);
  Tensor gh_rows = gh.view({B, 3 * H});                   // no dropout, reset_after
  Tensor gzr_rows = gh.narrow(0, 0, 2 * BH).view({B, 2 * H});  // no dropout, reset_before
  Tensor gh_gates = gh.narrow(0, 0, dropped_gates * BH).view({dropped_gates, B, H});
  Tensor hd = has_rdm ? at::empty({dropped_gates, B, H}, opts) : Tensor();
  // U3[g] = U_g as a (H, H) view (strides (H, 3H, 1)): batched GEMMs read it in place.
  const Tensor U3 = U.view({H, 3, H}).permute({1, 0, 2}).narrow(0, 0, dropped_gates);
  const Tensor U_zr = U.narrow(1, 0, 2 * H);
  const Tensor U_h = U.narrow(1, 2 * H, H);
  Tensor rh = reset_after ? Tensor() : at::empty({B, H}, opts);
  Tensor ghh = reset_after ? Tensor() : at::empty({B, H}, opts);
  Tensor ping = save_for_backward ? Tensor() : at::empty({2, B, H}, opts);
  Tensor ws_scratch =
      (!save_for_backward && !reset_after) ? at::empty({B, 3 * H}, opts) : Tensor();
  if (has_rdm) {  // hd_g = h0 ⊙ q_g for the first step; each step then writes the next one's
    kn::gru_mask_multiply<T>(ptr<T>(hd), ptr<T>(h0c), ptr<T>(rdm), dropped_gates, 1, BH, false,
                             stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  T* const out_p = ptr<T>(outputs);
  T* const gx_p = ptr<T>(gx);
  const bool* const mask_p = mask_ptr(c.mask);
  // The carried state after `step`: states[step], or one half of the ping-pong buffer.
  const Tensor& state_buf = save_for_backward ? states : ping;
  auto state_index = [&](int64_t step) { return save_for_backward ? step : step & 1; };

  // 2. The time loop. Pointers by arithmetic; views only where a GEMM needs a tensor.
  for (int64_t step = 0; step < T_; ++step) {
    const int64_t tau = c.go_backwards ? T_ - 1 - step : step;
    T* const ws_row = save_for_backward ? ptr<T>(workspace) + step * B * W : ptr<T>(ws_scratch);

    kn::ForwardStepArgs<T> a;
    a.B = B;
    a.H = H;
    a.gx = gx_p + tau * B * 3 * H;
    a.h_prev = step == 0 ? ptr<T>(h0c) : ptr<T>(state_buf) + state_index(step - 1) * BH;
    a.mask = mask_p != nullptr ? mask_p + tau * B : nullptr;
    a.out_prev = step > 0 ? out_p + (step - 1) * BH : nullptr;
    a.recurrent_dropout = ptr<T>(rdm);
    a.zero_output_for_mask = c.zero_output_for_mask;
    a.out = out_p + step * BH;
    a.state = ptr<T>(state_buf) + state_index(step) * BH;
    a.hd_next = has_rdm && step + 1 < T_ ? ptr<T>(hd) : nullptr;
    auto h_prev = [&]() { return step == 0 ? h0c : state_buf.select(0, state_index(step - 1)); };

    if (reset_after) {
      if (has_rdm) {
        bmm_into(gh_gates, hd, U3);  // (3, B, H): gate g is hd_g U_g
        a.gh_row_stride = H;
        a.gh_gate_stride = BH;
      } else {
        mm_into(gh_rows, h_prev(), U);  // (B, 3H)
        a.gh_row_stride = 3 * H;
        a.gh_gate_stride = H;
      }
      a.gh = ptr<T>(gh);
      a.recurrent_bias = b_h;
      a.workspace = save_for_backward ? ws_row : nullptr;
      kn::gru_forward_step_reset_after<T>(a, activation, recurrent_activation, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      continue;
    }

    kn::ForwardResetGateArgs<T> g;
    g.B = B;
    g.H = H;
    g.gx = a.gx;
    if (has_rdm) {
      bmm_into(gh_gates, hd, U3);  // (2, B, H)
      g.gzr_row_stride = H;
      g.gzr_gate_stride = BH;
    } else {
      mm_into(gzr_rows, h_prev(), U_zr);  // (B, 2H)
      g.gzr_row_stride = 2 * H;
      g.gzr_gate_stride = H;
    }
    g.gzr = ptr<T>(gh);
    g.h_prev = a.h_prev;
    g.recurrent_dropout = a.recurrent_dropout;
    g.workspace = ws_row;
    g.rh = ptr<T>(rh);
    kn::gru_forward_reset_gate<T>(g, recurrent_activation, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    mm_into(ghh, rh, U_h);  // (r ⊙ hd_h) U_h
    a.gh = ptr<T>(ghh);
    a.gh_row_stride = H;
    a.workspace = ws_row;
    kn::gru_forward_step_reset_before<T>(a, activation, recurrent_activation, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
  r.final_state.copy_(state_buf.select(0, state_index(T_ - 1)));
}

template <typename T>
void run(const BackwardRecurrence& r) {
  using Acc = kn::acc_t<T>;
  const RecurrentCell& c = r.cell;
  const Tensor &dY = r.grad_outputs, &dS = r.grad_final_state, &U = c.U, &h0c = c.h0;
  const Tensor &st = r.states, &ws = r.workspace, &mc = c.mask, &rdm = c.rdm;
  const Tensor &dG = r.dgates, &aux = r.aux, &grad_h0 = r.grad_h0;
  const bool reset_after = c.reset_after, has_rdm = rdm.defined();
  const int activation = c.activation, recurrent_activation = c.recurrent_activation;
  const int64_t T_ = dY.size(0), B = dY.size(1), H = U.size(0), BH = B * H;
  const int64_t W = (reset_after ? 4 : 3) * H;
  const auto opts = dY.options();
  const auto acc_opts = opts.dtype(std::is_same_v<T, double> ? at::kDouble : at::kFloat);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();

  Tensor dh_part = at::empty({B, H}, acc_opts);
  Tensor dcarry = mc.defined() && !c.zero_output_for_mask ? at::zeros({B, H}, acc_opts) : Tensor();
  // The Uᵀ GEMM result: summed over the gates without recurrent dropout (one GEMM), else one
  // (B, H) block per gate, masked by q_g when read.
  const int gates = has_rdm ? (reset_after ? 3 : 2) : 1;
  Tensor dhg = at::empty({gates, B, H}, opts);
  Tensor dhg_rows = dhg.view({gates * B, H});  // (B, H) when gates == 1
  Tensor drh = reset_after ? Tensor() : at::empty({B, H}, opts);
  // U3t[g] = U_gᵀ as a (H, H) view (strides (H, 1, 3H)).
  const Tensor U3t = U.view({H, 3, H}).permute({1, 2, 0}).narrow(0, 0, gates);
  const Tensor Ut = U.t();
  const Tensor U_zr_t = U.narrow(1, 0, 2 * H).t();
  const Tensor U_h_t = U.narrow(1, 2 * H, H).t();

  T* const dG_p = ptr<T>(dG);
  T* const aux_p = ptr<T>(aux);
  const bool* const mask_p = mask_ptr(mc);
  for (int64_t step = T_ - 1; step >= 0; --step) {
    const int64_t tau = c.go_backwards ? T_ - 1 - step : step;
    const bool first = step == T_ - 1;
    kn::BackwardStepArgs<T> a;
    a.B = B;
    a.H = H;
    a.grad_final_state = first ? ptr<T>(dS) : nullptr;
    a.dh_part = ptr<Acc>(dh_part);
    a.dhg = first ? nullptr : ptr<T>(dhg);
    a.dhg_gate_stride = BH;
    a.dhg_gates = first ? 0 : gates;
    a.recurrent_dropout = ptr<T>(rdm);
    a.grad_out = ptr<T>(dY) + step * BH;
    a.dcarry = ptr<Acc>(dcarry);
    a.mask = mask_p != nullptr ? mask_p + tau * B : nullptr;
    a.h_prev = step == 0 ? ptr<T>(h0c) : ptr<T>(st) + (step - 1) * BH;
    a.workspace = ptr<T>(ws) + step * B * W;
    a.dgates = dG_p + tau * B * 3 * H;
    a.aux = aux_p + tau * BH;
    const Tensor dG_row = dG.select(0, tau);  // (B, 3H)
    // Gate-major view (gates, B, H) of this row for the batched GEMM (recurrent dropout only).
    auto dG_gates = [&]() { return dG_row.view({B, 3, H}).transpose(0, 1).narrow(0, 0, gates); };

    if (reset_after) {
      kn::gru_backward_step_reset_after<T>(a, activation, recurrent_activation, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      if (has_rdm) {
        bmm_into(dhg, dG_gates(), U3t);
      } else {
        mm_into(dhg_rows, dG_row, Ut);
      }
      continue;
    }

    kn::gru_backward_step_reset_before<T>(a, activation, recurrent_activation, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    mm_into(drh, dG_row.narrow(1, 2 * H, H), U_h_t);
    kn::BackwardResetGateArgs<T> g;
    g.B = B;
    g.H = H;
    g.drh = ptr<T>(drh);
    g.h_prev = a.h_prev;
    g.recurrent_dropout = a.recurrent_dropout;
    g.mask = a.mask;
    g.workspace = a.workspace;
    g.dh_part = a.dh_part;
    g.dgates = a.dgates;
    g.aux = a.aux;
    kn::gru_backward_reset_gate<T>(g, recurrent_activation, stream);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (has_rdm) {
      bmm_into(dhg, dG_gates(), U3t);
    } else {
      mm_into(dhg_rows, dG_row.narrow(1, 0, 2 * H), U_zr_t);
    }
  }
  kn::gru_finish_grad_h0<T>(ptr<T>(grad_h0), ptr<Acc>(dh_part), ptr<T>(dhg), BH, gates,
                            ptr<T>(rdm), B, H, stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// The four dtypes of the op (gru_cuda_impl.cpp dispatches on them).
#define GRU_STEPWISE_INSTANTIATE(T)                   \
  template void run<T>(const ForwardRecurrence& r);  \
  template void run<T>(const BackwardRecurrence& r);
GRU_STEPWISE_INSTANTIATE(float)
GRU_STEPWISE_INSTANTIATE(double)
GRU_STEPWISE_INSTANTIATE(__half)
GRU_STEPWISE_INSTANTIATE(__nv_bfloat16)
#undef GRU_STEPWISE_INSTANTIATE

}  // namespace stepwise
}  // namespace gru_cuda
