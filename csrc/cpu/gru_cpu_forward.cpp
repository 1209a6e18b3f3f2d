// Host side of the CPU forward op (docs/algorithm.md): the input projection for all steps as
// one GEMM; per step one recurrent GEMM into a preallocated buffer (two dependent GEMMs for
// reset_after=False) and one fused pointwise pass (gru_cpu_steps.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <optional>
#include <tuple>

#include "cpu/gru_cpu_ops.h"
#include "cpu/gru_cpu_steps.h"
#include "gru_checks.h"

namespace gru_cuda {
namespace cpu {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

namespace {

// The input projection with the input dropout masks: (T*B, 3H), input biases included.
// x is (T, B, F) contiguous; returns (T * B, 3H).
Tensor input_projection(const Tensor& x, const Tensor& W, const OptTensor& b_i,
                        const OptTensor& idm, int64_t H) {
  const int64_t rows = x.size(0) * x.size(1), F = x.size(2);
  if (idm.has_value() && idm->dim() == 3) {  // one mask per gate: one GEMM per gate block
    Tensor gx = at::empty({rows, 3 * H}, x.options());
    for (int64_t g = 0; g < 3; ++g) {
      const Tensor xg = (x * (*idm)[g]).view({rows, F});
      gx.narrow(1, g * H, H).copy_(at::mm(xg, W.narrow(1, g * H, H)));
    }
    if (b_i.has_value()) gx.add_(*b_i);
    return gx;
  }
  const Tensor xin = idm.has_value() ? (x * *idm).view({rows, F}) : x.view({rows, F});
  return b_i.has_value() ? at::addmm(*b_i, xin, W) : at::mm(xin, W);
}

}  // namespace

std::tuple<Tensor, Tensor, Tensor, Tensor> gru_forward_cpu(
    const Tensor& x_in, const Tensor& kernel_in, const Tensor& rk_in, const OptTensor& bias_in,
    const Tensor& h0_in, const OptTensor& mask_in, const OptTensor& idm_in,
    const OptTensor& rdm_in, bool reset_after, int64_t activation, int64_t recurrent_activation,
    bool go_backwards, bool zero_output_for_mask, bool save_for_backward) {
  // The GEMMs inside write into buffers of the compute dtype: autocast must not retype them.
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const GruSizes s = check_forward_args(x_in, kernel_in, rk_in, bias_in, h0_in, mask_in, idm_in,
                                        rdm_in, reset_after, activation, recurrent_activation);
  const int64_t T = s.T, B = s.B, H = s.H;
  const at::ScalarType out_type = x_in.scalar_type(), ct = compute_type(out_type);
  const Tensor x = prepared(x_in, ct), W = prepared(kernel_in, ct), U = prepared(rk_in, ct),
               h0 = prepared(h0_in, ct);
  const OptTensor bias = prepared(bias_in, ct), idm = prepared(idm_in, ct),
                  rdm = prepared(rdm_in, ct);
  const OptTensor mask = mask_in.has_value() ? OptTensor(mask_in->contiguous()) : std::nullopt;
  const auto opts = x.options();
  const int64_t ws_width = (reset_after ? 4 : 3) * H;

  Tensor outputs = at::empty({T, B, H}, opts);
  // With save_for_backward the per-step states and workspace are the saved tensors; otherwise
  // two state buffers and one workspace block are reused across steps.
  Tensor states = save_for_backward ? at::empty({T, B, H}, opts) : at::empty({2, B, H}, opts);
  // Inference with reset_after=True writes no workspace at all; reset_after=False reuses one
  // block (its second phase reads the first's z).
  Tensor ws = save_for_backward ? at::empty({T, B, ws_width}, opts)
              : reset_after     ? at::empty({0}, opts)
                                : at::empty({1, B, ws_width}, opts);

  OptTensor b_i;
  // The recurrent bias (zeros without one) and a row of ones (no recurrent dropout) keep the
  // pointwise loops free of per-element branches.
  Tensor b_h = at::zeros({3 * H}, opts);
  if (bias.has_value()) {
    b_i = reset_after ? (*bias)[0] : *bias;
    if (reset_after) b_h = (*bias)[1].contiguous();
  }
  const Tensor ones = at::ones({B, H}, opts);
  const Tensor gx = input_projection(x, W, b_i, idm, H).view({T, B, 3 * H});

  const bool per_gate_rec = rdm.has_value();
  // Recurrent products: (B, 3H) from one GEMM, or (3, B, H) from per-gate GEMMs.
  Tensor gh = per_gate_rec ? at::empty({3, B, H}, opts) : at::empty({B, 3 * H}, opts);
  Tensor hd = per_gate_rec ? at::empty({3, B, H}, opts) : Tensor();
  Tensor rh = reset_after ? Tensor() : at::empty({B, H}, opts);
  Tensor ghh = reset_after ? Tensor() : at::empty({B, H}, opts);
  const Tensor U_h = U.narrow(1, 2 * H, H);
  const int n_gates_first = reset_after ? 3 : 2;
  const int act = static_cast<int>(activation), ract = static_cast<int>(recurrent_activation);
  const Isa isa = cpu_isa();

  AT_DISPATCH_FLOATING_TYPES(ct, "gru_forward_cpu", [&] {
    using T_ = scalar_t;
    ForwardStep<T_> p{};
    p.B = B;
    p.H = H;
    p.bh = b_h.data_ptr<T_>();
    p.zero_out = zero_output_for_mask;
    p.ws_width = ws_width;
    p.isa = isa;
    p.gh = per_gate_rec ? GateView<T_>{gh.data_ptr<T_>(), H, B * H}
                        : GateView<T_>{gh.data_ptr<T_>(), 3 * H, H};
    p.q_h = per_gate_rec ? (*rdm)[2].data_ptr<T_>() : nullptr;
    if (!reset_after) {
      p.rh = rh.data_ptr<T_>();
      p.ghh = ghh.data_ptr<T_>();
    }
    Tensor h = h0;
    for (int64_t step = 0; step < T; ++step) {
      const int64_t t = go_backwards ? T - 1 - step : step;
      // Recurrent GEMM(s) of the first phase.
      if (per_gate_rec) {
        for (int g = 0; g < n_gates_first; ++g) {
          Tensor hd_g = hd[g], gh_g = gh[g];
          at::mul_out(hd_g, h, (*rdm)[g]);
          at::mm_out(gh_g, hd_g, U.narrow(1, g * H, H));
        }
      } else if (reset_after) {
        at::mm_out(gh, h, U);
      } else {
        Tensor gh_zr = gh.narrow(1, 0, 2 * H);
        at::mm_out(gh_zr, h, U.narrow(1, 0, 2 * H));
      }
      Tensor state = save_for_backward ? states[step] : states[step % 2];
      p.gx = gx[t].data_ptr<T_>();
      p.h = h.data_ptr<T_>();
      p.valid = mask.has_value() ? (*mask)[t].data_ptr<bool>() : nullptr;
      p.prev_out = step > 0 ? outputs[step - 1].data_ptr<T_>() : nullptr;
      p.ws = save_for_backward ? ws[step].data_ptr<T_>()
             : reset_after     ? nullptr
                               : ws[0].data_ptr<T_>();
      p.state = state.data_ptr<T_>();
      p.out = outputs[step].data_ptr<T_>();
      if (reset_after) {
        forward_step_reset_after(p, act, ract);
      } else {
        forward_step_reset_before_gates(p, ones.data_ptr<T_>(), ract);
        at::mm_out(ghh, rh, U_h);
        forward_step_reset_before_candidate(p, act, ract);
      }
      h = state;
    }
  });

  Tensor final_state = T > 0 ? (save_for_backward ? states[T - 1] : states[(T - 1) % 2]).clone()
                             : h0.clone();
  if (!save_for_backward) {
    states = at::empty({0}, opts);
    ws = at::empty({0}, opts);
  }
  return {outputs.to(out_type), final_state.to(out_type), states.to(out_type), ws.to(out_type)};
}

}  // namespace cpu
}  // namespace gru_cuda
