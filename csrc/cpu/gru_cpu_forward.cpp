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

// The input projection with the input dropout masks: (rows, 3H), input biases included, rows
// in the order of x: x is (T, B, F) contiguous, or (B, T, F) contiguous when batch_major (the
// (B, F) masks then broadcast over its second dimension).
Tensor input_projection(const Tensor& x, const Tensor& W, const OptTensor& b_i,
                        const OptTensor& idm, int64_t H, bool batch_major) {
  const int64_t rows = x.size(0) * x.size(1), F = x.size(2);
  auto per_row = [&](const Tensor& m) { return batch_major ? m.unsqueeze(1) : m; };
  if (idm.has_value() && idm->dim() == 3) {  // one mask per gate: one GEMM per gate block
    Tensor gx = at::empty({rows, 3 * H}, x.options());
    for (int64_t g = 0; g < 3; ++g) {
      const Tensor xg = (x * per_row((*idm)[g])).view({rows, F});
      gx.narrow(1, g * H, H).copy_(at::mm(xg, W.narrow(1, g * H, H)));
    }
    if (b_i.has_value()) gx.add_(*b_i);
    return gx;
  }
  const Tensor xin = idm.has_value() ? (x * per_row(*idm)).view({rows, F}) : x.view({rows, F});
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
  const int64_t T = s.T, B = s.B, F = s.F, H = s.H;
  const at::ScalarType out_type = x_in.scalar_type(), ct = compute_type(out_type);
  // bfloat16 inputs: the products large enough to pay run in bfloat16 on the inputs as given
  // (torch.nn.GRU rounds the same products to bfloat16); the pointwise passes and the state stay
  // in float32. Per-gate recurrent dropout keeps its float32 products.
  const bool bf16 = out_type == at::kBFloat16 && cpu_has_bf16_dot();
  const bool bf16_in = bf16 && T * B * F * 3 * H >= kBf16MinMacs;
  const bool bf16_rec = bf16 && !rdm_in.has_value() && B * H * 3 * H >= kBf16MinMacs;
  const at::ScalarType in_type = bf16_in ? at::kBFloat16 : ct;
  // A batch-major x (the (T, B, F) view of a contiguous (B, T, F) tensor that functional.gru
  // passes) is read in place, and the outputs are written batch-major: no transposed copies.
  const bool batch_major = is_batch_major(x_in);
  const Tensor x = prepared(batch_major ? x_in.transpose(0, 1) : x_in, in_type),
               W = prepared(kernel_in, in_type),
               U = prepared(rk_in, ct), h0 = prepared(h0_in, ct);
  const OptTensor bias = prepared(bias_in, ct), idm = prepared(idm_in, in_type),
                  rdm = prepared(rdm_in, ct);
  const OptTensor mask = mask_in.has_value() ? OptTensor(mask_in->contiguous()) : std::nullopt;
  const auto opts = x_in.options().dtype(ct);
  const int64_t ws_width = (reset_after ? 4 : 3) * H;

  Tensor outputs = batch_major ? at::empty({B, T, H}, opts).transpose(0, 1)
                               : at::empty({T, B, H}, opts);
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
    if (bf16_in) b_i = b_i->to(at::kBFloat16);
  }
  const Tensor ones = at::ones({B, H}, opts);
  const Tensor proj = input_projection(x, W, b_i, idm, H, batch_major).to(ct);
  const Tensor gx = batch_major ? proj.view({B, T, 3 * H}).transpose(0, 1)
                                : proj.view({T, B, 3 * H});

  const bool per_gate_rec = rdm.has_value();
  // Recurrent products: (B, 3H) from one GEMM, or (3, B, H) from per-gate GEMMs.
  Tensor gh = per_gate_rec ? at::empty({3, B, H}, opts) : at::empty({B, 3 * H}, opts);
  Tensor hd = per_gate_rec ? at::empty({3, B, H}, opts) : Tensor();
  Tensor rh = reset_after ? Tensor() : at::empty({B, H}, opts);
  Tensor ghh = reset_after ? Tensor() : at::empty({B, H}, opts);
  const Tensor U_h = U.narrow(1, 2 * H, H);
  // out = in @ w; with bf16_rec in bfloat16, through the preallocated h_lo and out_lo buffers.
  const Tensor U_lo = bf16_rec ? prepared(rk_in, at::kBFloat16) : Tensor();
  const auto lo = opts.dtype(at::kBFloat16);
  Tensor h_lo = bf16_rec ? at::empty({B, H}, lo) : Tensor();
  Tensor gh_lo = bf16_rec ? at::empty({B, 3 * H}, lo) : Tensor();
  Tensor ghh_lo = bf16_rec && !reset_after ? at::empty({B, H}, lo) : Tensor();
  auto rec_mm = [&](Tensor out, const Tensor& in, const Tensor& w, const Tensor& w_lo,
                    Tensor out_lo) {
    if (!bf16_rec) {
      at::mm_out(out, in, w);
      return;
    }
    h_lo.copy_(in);
    at::mm_out(out_lo, h_lo, w_lo);
    out.copy_(out_lo);
  };
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
    p.gx_row = gx.stride(1);
    p.out_row = outputs.stride(1);
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
        rec_mm(gh, h, U, U_lo, gh_lo);
      } else {
        rec_mm(gh.narrow(1, 0, 2 * H), h, U.narrow(1, 0, 2 * H),
               bf16_rec ? U_lo.narrow(1, 0, 2 * H) : Tensor(),
               bf16_rec ? gh_lo.narrow(1, 0, 2 * H) : Tensor());
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
        rec_mm(ghh, rh, U_h, bf16_rec ? U_lo.narrow(1, 2 * H, H) : Tensor(), ghh_lo);
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
