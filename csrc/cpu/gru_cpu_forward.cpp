// Host side of the CPU forward op (docs/algorithm.md): the input projection for all steps as
// one GEMM; per step one recurrent GEMM into a preallocated buffer (two dependent GEMMs for
// reset_after=False) and one fused pointwise pass (gru_cpu_steps.h).
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

namespace {

// The input projection with the input dropout masks: (rows, 3H), rows in the order of x: x is
// (T, B, F) contiguous, or (B, T, F) contiguous when batch_major (the (B, F) masks then
// broadcast over its second dimension). No bias: the pointwise passes add b_i as they read it
// (ForwardStep::bx), instead of a broadcast copy of it into every row before the product.
Tensor input_projection(const Tensor& x, const Tensor& W, const OptTensor& idm, int64_t H,
                        bool batch_major) {
  const int64_t rows = x.size(0) * x.size(1), F = x.size(2);
  auto per_row = [&](const Tensor& m) { return batch_major ? m.unsqueeze(1) : m; };
  Tensor gx = pooled_empty({rows, 3 * H}, x.options());  // read only within the op
  if (idm.has_value() && idm->dim() == 3) {  // one mask per gate: one GEMM per gate block
    for (int64_t g = 0; g < 3; ++g) {
      const Tensor xg = (x * per_row((*idm)[g])).view({rows, F});
      gx.narrow(1, g * H, H).copy_(at::mm(xg, W.narrow(1, g * H, H)));
    }
    return gx;
  }
  const Tensor xin = idm.has_value() ? (x * per_row(*idm)).view({rows, F}) : x.view({rows, F});
  return at::mm_out(gx, xin, W);
}

// Rows b0.. of step `step` of the (T, B, H) outputs (bfloat16 or float16, any strides) from R
// float32 rows of row stride lds. Raw pointers: it runs inside the row blocks' threads.
template <typename S>
void store_rows(int64_t R, int64_t H, const S* src, int64_t lds, const Tensor& outputs,
                int64_t step, int64_t b0) {
  const int64_t ldd = outputs.stride(1), off = step * outputs.stride(0) + b0 * ldd;
  if (outputs.scalar_type() == at::kBFloat16) {
    rows_to_bf16(R, H, src, lds, outputs.data_ptr<at::BFloat16>() + off, ldd);
    return;
  }
  at::Half* d = outputs.data_ptr<at::Half>() + off;
  for (int64_t r = 0; r < R; ++r)
    for (int64_t j = 0; j < H; ++j) d[r * ldd + j] = at::Half(float(src[r * lds + j]));
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
  // With the packed bfloat16 kernel (bf16_dot_gemm.h) a product costs only its arithmetic, so
  // every size runs in bfloat16; through oneDNN only those large enough to pay its overhead.
  const bool dot = bf16 && bf16_dot_gemm_available() && H % 2 == 0 && cpu_blas_available();
  const bool bf16_rec = bf16 && !rdm_in.has_value() && (dot || B * H * 3 * H >= kBf16MinMacs);
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

  // bfloat16/float16 outputs are written in their dtype, each step's rows converted from a
  // float32 block (out_f, two steps: a masked row repeats the previous output) while in cache.
  const bool out_lo = out_type != ct;
  const auto out_opts = x_in.options().dtype(out_type);
  Tensor outputs = empty_steps(T, B, H, batch_major, out_opts);
  Tensor out_f = out_lo ? at::empty({2, B, H}, opts) : Tensor();
  // With save_for_backward the per-step states and workspace are the saved tensors; otherwise
  // two state buffers and one workspace block are reused across steps.
  // The saved ones come from the buffer pool (buffer_pool.h): the backward returns them.
  Tensor states = save_for_backward ? pooled_empty({T, B, H}, opts) : at::empty({2, B, H}, opts);
  // Inference with reset_after=True writes no workspace at all; reset_after=False reuses one
  // block (its second phase reads the first's z).
  Tensor ws = save_for_backward ? pooled_empty({T, B, ws_width}, opts)
              : reset_after     ? at::empty({0}, opts)
                                : at::empty({1, B, ws_width}, opts);

  // The input and recurrent biases (zeros without one) and a row of ones (no recurrent dropout)
  // keep the pointwise loops free of per-element branches.
  Tensor b_x = at::zeros({3 * H}, opts), b_h = at::zeros({3 * H}, opts);
  if (bias.has_value()) {
    b_x = (reset_after ? (*bias)[0] : *bias).contiguous();
    if (reset_after) b_h = (*bias)[1].contiguous();
  }
  const Tensor ones = at::ones({B, H}, opts);
  // A bfloat16 projection stays bfloat16: each step converts its rows while they are in cache
  // (into gx_f, one (B, 3H) block), instead of one pass over a sequence-long float32 copy.
  const Tensor proj = input_projection(x, W, idm, H, batch_major);
  const bool gx_lo = proj.scalar_type() != ct;
  Tensor gx_f = gx_lo ? at::empty({B, 3 * H}, opts) : Tensor();
  const Tensor gx = batch_major ? proj.view({B, T, 3 * H}).transpose(0, 1)
                                : proj.view({T, B, 3 * H});

  const bool per_gate_rec = rdm.has_value();
  // Recurrent products: (B, 3H) from one GEMM, or (3, B, H) from per-gate GEMMs. Every buffer
  // below is whole-batch; a block of rows touches only its own rows of each.
  Tensor gh = per_gate_rec ? at::empty({3, B, H}, opts) : at::empty({B, 3 * H}, opts);
  Tensor hd = per_gate_rec ? at::empty({3, B, H}, opts) : Tensor();
  Tensor rh = reset_after ? Tensor() : at::empty({B, H}, opts);
  Tensor ghh = reset_after ? Tensor() : at::empty({B, H}, opts);
  // oneDNN's bfloat16 products (not the packed kernel's) read U_lo and write gh_lo.
  const Tensor U_lo = bf16_rec && !dot ? prepared(rk_in, at::kBFloat16) : Tensor();
  // bfloat16 staging of the products' left operands and results (gru_cpu_rows.h).
  Tensor h_lo = bf16_rec ? at::empty({B, 3 * H}, opts.dtype(at::kBFloat16)) : Tensor();
  Tensor gh_lo =
      bf16_rec && !dot ? at::empty({B, 3 * H}, opts.dtype(at::kBFloat16)) : Tensor();
  const int n_gates_first = reset_after ? 3 : 2;
  const int act = static_cast<int>(activation), ract = static_cast<int>(recurrent_activation);
  const Isa isa = cpu_isa();

  // U packed in k-pairs for bf16_dot_gemm.
  const Tensor U_pk = bf16_rec && dot ? pack_bf16_pairs(U) : Tensor();

  AT_DISPATCH_FLOATING_TYPES(ct, "gru_forward_cpu", [&] {
    using T_ = scalar_t;
    // h (R, H) . U[:, gate columns]; in bfloat16 through U_lo, h_lo and gh_lo.
    const RowProducts<T_> products(U, U_lo, h_lo, gh_lo, U_pk, 3 * H);
    T_* const gx0 = gx_lo ? nullptr : gx.data_ptr<T_>();
    const at::BFloat16* const gx0_lo = gx_lo ? gx.data_ptr<at::BFloat16>() : nullptr;
    T_* const out0 = out_lo ? out_f.data_ptr<T_>() : outputs.data_ptr<T_>();
    // Where step s's output rows go: outputs[s], or out_f[s % 2] when out_lo.
    const int64_t out_t = out_lo ? B * H : outputs.stride(0);
    auto out_slot = [&](int64_t s) { return out_lo ? s % 2 : s; };
    T_* const st0 = states.data_ptr<T_>();
    T_* const ws0 = ws.numel() > 0 ? ws.data_ptr<T_>() : nullptr;
    const T_* const rdm0 = per_gate_rec ? rdm->data_ptr<T_>() : nullptr;
    const bool* const mask0 = mask.has_value() ? mask->data_ptr<bool>() : nullptr;
    const int64_t gx_t = gx.stride(0), gx_b = gx.stride(1), BH = B * H;

    // The whole recurrence of batch rows [b0, b1): rows never read other rows, so blocks of
    // rows run on separate threads with no barrier between steps (docs/cpu.md).
    auto run_rows = [&](int64_t b0, int64_t b1) {
      const int64_t R = b1 - b0;
      ForwardStep<T_> p{};
      p.B = R;
      p.H = H;
      p.bx = b_x.data_ptr<T_>();
      p.bh = b_h.data_ptr<T_>();
      p.zero_out = zero_output_for_mask;
      p.ws_width = ws_width;
      p.isa = isa;
      p.gx_row = gx_lo ? 3 * H : gx_b;
      p.out_row = out_lo ? H : outputs.stride(1);
      T_* const gh_r = gh.data_ptr<T_>() + b0 * (per_gate_rec ? H : 3 * H);
      p.gh = per_gate_rec ? GateView<T_>{gh_r, H, BH} : GateView<T_>{gh_r, 3 * H, H};
      p.q_h = per_gate_rec ? rdm0 + 2 * BH + b0 * H : nullptr;
      if (!reset_after) {
        p.rh = rh.data_ptr<T_>() + b0 * H;
        p.ghh = ghh.data_ptr<T_>() + b0 * H;
      }
      const T_* h = h0.data_ptr<T_>() + b0 * H;
      for (int64_t step = 0; step < T; ++step) {
        const int64_t t = go_backwards ? T - 1 - step : step;
        // Recurrent product(s) of the first phase.
        if (per_gate_rec) {
          for (int g = 0; g < n_gates_first; ++g) {
            T_* hd_g = hd.data_ptr<T_>() + g * BH + b0 * H;
            const T_* q = rdm0 + g * BH + b0 * H;
            for (int64_t i = 0; i < R * H; ++i) hd_g[i] = h[i] * q[i];
            products.f32(R, H, H, g * H, hd_g, H, gh_r + g * BH, H);
          }
        } else {
          products.run(R, H, n_gates_first * H, 0, h, H, b0, gh_r, 3 * H);
        }
        const int64_t slot = save_for_backward ? step : step % 2;
        T_* const state = st0 + slot * BH + b0 * H;
        if (gx_lo) {
          T_* const gx_r = gx_f.data_ptr<T_>() + b0 * 3 * H;
          rows_from_bf16(R, 3 * H, gx0_lo + t * gx_t + b0 * gx_b, gx_b, gx_r, 3 * H);
          p.gx = gx_r;
        } else {
          p.gx = gx0 + t * gx_t + b0 * p.gx_row;
        }
        p.h = h;
        p.valid = mask0 != nullptr ? mask0 + t * B + b0 : nullptr;
        p.prev_out = step > 0 ? out0 + out_slot(step - 1) * out_t + b0 * p.out_row : nullptr;
        p.ws = save_for_backward ? ws0 + (step * B + b0) * ws_width
               : reset_after     ? nullptr
                                 : ws0 + b0 * ws_width;
        p.state = state;
        p.out = out0 + out_slot(step) * out_t + b0 * p.out_row;
        if (reset_after) {
          forward_step_reset_after(p, act, ract);
        } else {
          forward_step_reset_before_gates(p, ones.data_ptr<T_>() + b0 * H, ract);
          products.run(R, H, H, 2 * H, p.rh, H, b0, ghh.data_ptr<T_>() + b0 * H, H);
          forward_step_reset_before_candidate(p, act, ract);
        }
        if (out_lo) store_rows(R, H, p.out, H, outputs, step, b0);
        h = state;
      }
    };
    for_each_row_block(B, products.raw(), run_rows);
  });

  Tensor final_state = T > 0 ? (save_for_backward ? states[T - 1] : states[(T - 1) % 2]).clone()
                             : h0.clone();
  if (!save_for_backward) {
    states = at::empty({0}, opts);
    ws = at::empty({0}, opts);
  }
  // states and workspace stay in the compute dtype (cpu_saved_dtype in gru_checks.h).
  return {outputs, final_state.to(out_type), states, ws};
}

}  // namespace cpu
}  // namespace gru_cuda
