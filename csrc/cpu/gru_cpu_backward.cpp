// Host side of the CPU backward op (docs/algorithm.md): a reverse loop of a fused pointwise pass
// (gru_cpu_steps.h) plus the U^T GEMM per step, then the weight gradients as single GEMMs over
// all T*B rows.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/core/impl/LocalDispatchKeySet.h>

#include <optional>
#include <tuple>

#include "cpu/bf16_dot_gemm.h"
#include "cpu/buffer_pool.h"
#include "cpu/cpu_blas.h"
#include "cpu/gru_cpu_ops.h"
#include "cpu/gru_cpu_rows.h"
#include "cpu/gru_cpu_steps.h"
#include "cpu/step_layout.h"
#include "gru_checks.h"

namespace gru_cuda {
namespace cpu {

using at::Tensor;
using OptTensor = std::optional<Tensor>;

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward_cpu(
    const Tensor& grad_outputs_in, const Tensor& grad_final_in, const Tensor& x_in,
    const Tensor& kernel_in, const Tensor& rk_in, const Tensor& h0_in, const Tensor& states_in,
    const Tensor& ws_in, const OptTensor& mask_in, const OptTensor& idm_in,
    const OptTensor& rdm_in, bool has_bias, bool reset_after, int64_t activation,
    int64_t recurrent_activation, bool go_backwards, bool zero_output_for_mask, bool need_grad_x) {
  c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  const GruSizes s = check_forward_args(x_in, kernel_in, rk_in, std::nullopt, h0_in, mask_in,
                                        idm_in, rdm_in, reset_after, activation,
                                        recurrent_activation);
  check_backward_args(s, grad_outputs_in, grad_final_in, states_in, ws_in, reset_after, x_in,
                      cpu_saved_dtype(x_in));
  const int64_t T = s.T, B = s.B, F = s.F, H = s.H;
  const at::ScalarType out_type = x_in.scalar_type(), ct = compute_type(out_type);
  // bfloat16 inputs (as in the forward): the per-step products and, without dropout, the
  // weight- and input-gradient products run in bfloat16 where they are large enough to pay.
  const bool bf16 = out_type == at::kBFloat16 && cpu_has_bf16_dot() && !rdm_in.has_value();
  // As in the forward: every size in bfloat16 with the packed kernel (bf16_dot_gemm.h).
  const bool dot = bf16 && bf16_dot_gemm_available() && H % 2 == 0 && cpu_blas_available();
  const bool bf16_rec = bf16 && (dot || B * H * 3 * H >= kBf16MinMacs);
  const bool bf16_w = bf16 && !idm_in.has_value() && T * B * F * 3 * H >= kBf16MinMacs;
  const at::ScalarType w_type = bf16_w ? at::kBFloat16 : ct;
  // x and the output gradient are read in their own layout (batch-major from functional.gru):
  // no transposed copies. With reset_after, dgx is stored in x's layout too, so the weight- and
  // input-gradient products read x and write grad_x in x's layout directly. (reset_after=False
  // pairs dgx with the time-major states in its dU product: dgx stays time-major.)
  const Tensor x = prepared_steps(x_in, w_type), dY = prepared_steps(grad_outputs_in, ct);
  const bool x_bm = is_batch_major(x_in), dgx_bm = reset_after && x_bm;  // x keeps x_in's layout
  const Tensor W = prepared(kernel_in, w_type), U = prepared(rk_in, ct), h0 = prepared(h0_in, ct),
               states = prepared(states_in, ct), ws = prepared(ws_in, ct);
  const OptTensor idm = prepared(idm_in, ct), rdm = prepared(rdm_in, ct);
  const OptTensor mask = mask_in.has_value() ? OptTensor(mask_in->contiguous()) : std::nullopt;
  const auto opts = x_in.options().dtype(ct);
  const int64_t ws_width = (reset_after ? 4 : 3) * H;

  Tensor dh = prepared(grad_final_in, ct).clone();
  Tensor dcarry = at::zeros({B, H}, opts);
  // dgx in input-time order (aligned with x); dgh in processing order (aligned with states).
  // For reset_after=False they are equal, so only dgx exists. Every buffer is whole-batch; a
  // block of rows touches only its own rows of each.
  // The large buffers below live only within the op: from the buffer pool (buffer_pool.h).
  Tensor dgx = empty_steps(T, B, 3 * H, dgx_bm, opts, true);
  Tensor dgh = reset_after ? pooled_empty({T, B, 3 * H}, opts) : Tensor();
  Tensor drh = reset_after ? Tensor() : at::empty({B, H}, opts);
  Tensor tmp = rdm.has_value() ? at::empty({B, H}, opts) : Tensor();
  const Tensor ones = at::ones({B, H}, opts);
  // U^T (3H, H): the products back through the recurrent kernel take a gate's rows of it.
  const Tensor Ut = U.t().contiguous();
  // oneDNN's bfloat16 products (not the packed kernel's) read Ut_lo and write dr_lo.
  const Tensor Ut_lo =
      bf16_rec && !dot ? prepared(rk_in, at::kBFloat16).t().contiguous() : Tensor();
  // bfloat16 staging of the products' left operands and results (gru_cpu_rows.h).
  Tensor d_lo = bf16_rec ? at::empty({B, 3 * H}, opts.dtype(at::kBFloat16)) : Tensor();
  Tensor dr_lo =
      bf16_rec && !dot ? at::empty({B, 3 * H}, opts.dtype(at::kBFloat16)) : Tensor();
  // With bfloat16 weight-gradient products, bfloat16 copies of dgx and dgh, written row block by
  // row block right after each step's pass (while in cache; the per-step products read them
  // too) instead of one conversion pass over each afterwards.
  Tensor dgx_lo =
      bf16_w ? empty_steps(T, B, 3 * H, dgx_bm, opts.dtype(at::kBFloat16), true) : Tensor();
  Tensor dgh_lo = bf16_w && reset_after
                      ? pooled_empty({T, B, 3 * H}, opts.dtype(at::kBFloat16))
                      : Tensor();
  const int act = static_cast<int>(activation), ract = static_cast<int>(recurrent_activation);
  const Isa isa = cpu_isa();

  // U^T packed in k-pairs for bf16_dot_gemm.
  const Tensor Ut_pk = bf16_rec && dot ? pack_bf16_pairs(Ut) : Tensor();

  AT_DISPATCH_FLOATING_TYPES(ct, "gru_backward_cpu", [&] {
    using T_ = scalar_t;
    // d (R, gates of 3H) . U^T[gate rows]; in bfloat16 through Ut_lo, d_lo and dr_lo.
    const RowProducts<T_> products(Ut, Ut_lo, d_lo, dr_lo, Ut_pk, 3 * H);
    const T_* const dY0 = dY.data_ptr<T_>();
    const int64_t dy_t = dY.stride(0), dy_b = dY.stride(1), dgx_t = dgx.stride(0),
                  dgx_b = dgx.stride(1);
    const T_* const st0 = states.data_ptr<T_>();
    const T_* const ws0 = ws.data_ptr<T_>();
    T_* const dgx0 = dgx.data_ptr<T_>();
    T_* const dgh0 = reset_after ? dgh.data_ptr<T_>() : nullptr;
    const T_* const rdm0 = rdm.has_value() ? rdm->data_ptr<T_>() : nullptr;
    const bool* const mask0 = mask.has_value() ? mask->data_ptr<bool>() : nullptr;
    at::BFloat16* const dgx_lo0 = bf16_w ? dgx_lo.data_ptr<at::BFloat16>() : nullptr;
    at::BFloat16* const dgh_lo0 =
        bf16_w && reset_after ? dgh_lo.data_ptr<at::BFloat16>() : nullptr;
    const int64_t BH = B * H;

    // The reverse recurrence of batch rows [b0, b1), as the forward's (gru_cpu_rows.h).
    auto run_rows = [&](int64_t b0, int64_t b1) {
      const int64_t R = b1 - b0;
      T_* const dh_r = dh.data_ptr<T_>() + b0 * H;
      BackwardStep<T_> p{};
      p.B = R;
      p.H = H;
      p.dh = dh_r;
      p.dcarry = dcarry.data_ptr<T_>() + b0 * H;
      p.q_h = rdm0 != nullptr ? rdm0 + 2 * BH + b0 * H : nullptr;
      p.ws_width = ws_width;
      p.dy_row = dy_b;
      p.dgx_row = dgx_b;
      p.zero_out = zero_output_for_mask;
      p.isa = isa;
      T_* const drh_r = reset_after ? nullptr : drh.data_ptr<T_>() + b0 * H;
      p.drh = drh_r;
      // dh += sum over gates g in [g0, g1) of q_g * (d_g U_g^T); d: this step's (R, 3H) rows,
      // d_lo: their bfloat16 copy or nullptr.
      // ld: the row stride of d and d_lo.
      auto add_recurrent_grad = [&](const T_* d, const at::BFloat16* d_lo, int64_t ld,
                                    int64_t g0, int64_t g1) {
        if (rdm0 == nullptr && d_lo != nullptr && bf16_rec) {
          products.run_lo(R, (g1 - g0) * H, H, g0 * H * H, d_lo + g0 * H, ld, b0, dh_r, H, 1.f);
          return;
        }
        if (rdm0 == nullptr) {
          products.run(R, (g1 - g0) * H, H, g0 * H * H, d + g0 * H, ld, b0, dh_r, H, 1.f);
          return;
        }
        T_* const tmp_r = tmp.data_ptr<T_>() + b0 * H;
        for (int64_t g = g0; g < g1; ++g) {
          products.f32(R, H, H, g * H * H, d + g * H, ld, tmp_r, H);
          const T_* q = rdm0 + g * BH + b0 * H;
          for (int64_t i = 0; i < R * H; ++i) dh_r[i] += tmp_r[i] * q[i];
        }
      };
      for (int64_t step = T - 1; step >= 0; --step) {
        const int64_t t = go_backwards ? T - 1 - step : step;
        p.dy = dY0 + step * dy_t + b0 * dy_b;
        p.h = (step > 0 ? st0 + (step - 1) * BH : h0.data_ptr<T_>()) + b0 * H;
        p.ws = ws0 + (step * B + b0) * ws_width;
        p.valid = mask0 != nullptr ? mask0 + t * B + b0 : nullptr;
        p.dgx = dgx0 + t * dgx_t + b0 * dgx_b;  // dgx_lo has dgx's strides
        at::BFloat16* const dgx_lo_r = dgx_lo0 != nullptr ? dgx_lo0 + t * dgx_t + b0 * dgx_b
                                                          : nullptr;
        if (reset_after) {
          p.dgh = dgh0 + (step * B + b0) * 3 * H;
          backward_step_reset_after(p, act, ract);
          at::BFloat16* dgh_lo_r = nullptr;
          if (dgx_lo_r != nullptr) {
            dgh_lo_r = dgh_lo0 + (step * B + b0) * 3 * H;
            rows_to_bf16(R, 3 * H, p.dgx, dgx_b, dgx_lo_r, dgx_b);
            rows_to_bf16(R, 3 * H, p.dgh, 3 * H, dgh_lo_r, 3 * H);
          }
          add_recurrent_grad(p.dgh, dgh_lo_r, 3 * H, 0, 3);
        } else {
          backward_step_reset_before_candidate(p, act, ract);
          products.run(R, H, H, 2 * H * H, p.dgx + 2 * H, dgx_b, b0, drh_r, H);
          backward_step_reset_before_gates(p, ones.data_ptr<T_>() + b0 * H, ract);
          if (dgx_lo_r != nullptr) rows_to_bf16(R, 3 * H, p.dgx, dgx_b, dgx_lo_r, dgx_b);
          add_recurrent_grad(p.dgx, dgx_lo_r, dgx_b, 0, 2);
        }
      }
    };
    for_each_row_block(B, products.raw(), run_rows);
  });

  // Weight gradients as single GEMMs over all T*B rows, taken in dgx's storage order.
  auto rows = [&](const Tensor& t) { return steps_as_rows(t, dgx_bm); };
  auto steps = [&](const Tensor& r) { return rows_as_steps(r, T, B, dgx_bm); };
  const Tensor dgx2 = rows(dgx);
  Tensor grad_x, grad_kernel;
  if (idm.has_value() && idm->dim() == 3) {
    grad_x = need_grad_x ? empty_steps(T, B, F, dgx_bm, opts).zero_() : Tensor();
    grad_kernel = at::empty({F, 3 * H}, opts);
    for (int64_t g = 0; g < 3; ++g) {
      const Tensor m = (*idm)[g];
      const Tensor d = dgx2.narrow(1, g * H, H);
      grad_kernel.narrow(1, g * H, H).copy_(at::mm(rows(x * m).t(), d));
      if (need_grad_x) grad_x.addcmul_(steps(at::mm(d, W.narrow(1, g * H, H).t())), m);
    }
  } else if (idm.has_value()) {
    grad_kernel = at::mm(rows(x * *idm).t(), dgx2);
    if (need_grad_x) grad_x = steps(at::mm(dgx2, W.t())).mul_(*idm);
  } else {
    const Tensor d = bf16_w ? rows(dgx_lo) : dgx2;
    grad_kernel = at::mm(rows(x).t(), d);
    if (need_grad_x) grad_x = steps(at::mm(d, W.t()));
  }
  if (!need_grad_x) {
    grad_x = at::empty({0}, opts);
  } else if (x_bm && !dgx_bm) {  // grad_x takes x's layout (as the fake kernel says)
    grad_x = empty_steps(T, B, F, true, opts.dtype(grad_x.scalar_type())).copy_(grad_x);
  }

  // h_{s-1} for every step s, in processing order: h0, then the states of steps 0..T-2.
  auto hprev = [&] {
    return T > 0 ? at::cat({h0.unsqueeze(0), states.narrow(0, 0, T - 1)}, 0)
                 : at::empty({0, B, H}, opts);
  };
  Tensor grad_rk = at::empty({H, 3 * H}, opts);
  if (reset_after) {
    const Tensor dgh2 = dgh.view({T * B, 3 * H});
    if (T == 0) {
      grad_rk.zero_();
    } else if (bf16_w) {  // h_{s-1} in bfloat16, converted in one pass
      Tensor hprev_lo = pooled_empty({T, B, H}, opts.dtype(at::kBFloat16));
      hprev_lo[0].copy_(h0);
      hprev_lo.narrow(0, 1, T - 1).copy_(states.narrow(0, 0, T - 1));
      grad_rk = at::mm(hprev_lo.view({T * B, H}).t(), dgh_lo.view({T * B, 3 * H}));
    } else if (!rdm.has_value()) {  // h0 with step 0's rows, the saved states with the rest
      at::mm_out(grad_rk, h0.t(), dgh2.narrow(0, 0, B));
      grad_rk.addmm_(states.narrow(0, 0, T - 1).reshape({(T - 1) * B, H}).t(),
                     dgh2.narrow(0, B, (T - 1) * B));
    } else {
      const Tensor hp = hprev();
      for (int64_t g = 0; g < 3; ++g)
        grad_rk.narrow(1, g * H, H).copy_(
            at::mm((hp * (*rdm)[g]).view({T * B, H}).t(), dgh2.narrow(1, g * H, H)));
    }
  } else {
    // dgx is in input-time order; bring h_{s-1} (and the workspace) to that order too.
    const Tensor hp = go_backwards ? hprev().flip(0) : hprev();
    Tensor ws_t = go_backwards ? ws.flip(0).contiguous() : ws;
    for (int64_t g = 0; g < 2; ++g) {  // the dropout masks do not depend on time
      const Tensor hd_g = rdm.has_value() ? hp * (*rdm)[g] : hp;
      grad_rk.narrow(1, g * H, H).copy_(at::mm(hd_g.reshape({T * B, H}).t(), dgx2.narrow(1, g * H, H)));
    }
    Tensor hd_h = (rdm.has_value() ? hp * (*rdm)[2] : hp).contiguous();
    Tensor rh_all = at::empty({T, B, H}, opts);
    AT_DISPATCH_FLOATING_TYPES(ct, "gru_reset_state_cpu", [&] {
      reset_state_rows(T * B, H, ws_t.data_ptr<scalar_t>(), ws_width, hd_h.data_ptr<scalar_t>(),
                       rh_all.data_ptr<scalar_t>(), ract, isa);
    });
    grad_rk.narrow(1, 2 * H, H).copy_(at::mm(rh_all.view({T * B, H}).t(), dgx2.narrow(1, 2 * H, H)));
  }

  Tensor grad_bias;
  if (!has_bias) {
    grad_bias = at::empty({0}, opts);
  } else if (reset_after) {
    grad_bias = at::stack({dgx2.sum(0), dgh.view({T * B, 3 * H}).sum(0)});
  } else {
    grad_bias = dgx2.sum(0);
  }
  return {grad_x.to(out_type), grad_kernel.to(out_type), grad_rk.to(out_type),
          grad_bias.to(out_type), dh.to(out_type)};
}

}  // namespace cpu
}  // namespace gru_cuda
