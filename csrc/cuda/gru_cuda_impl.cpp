// CUDA implementation of the gru ops (schemas and contract in csrc/gru_ops.cpp, derivation in
// docs/algorithm.md): checks, the input projection, the recurrence on the kernel path chosen for
// the call (run_recurrence: path_choice.h decides, stepwise.h or persistent.h runs it), and the
// weight-gradient GEMMs after the backward recurrence, which both paths share.
//
// GEMMs go through ATen (cuBLAS on the current stream; float32 follows
// torch.backends.cuda.matmul.allow_tf32, so it stays exact fp32 unless the user allows TF32);
// the pointwise work runs in the torch-free kernels of csrc/kernels/. Every buffer is allocated
// before the recurrence, whose stepwise loop allocates nothing either, so a forward pass can be
// captured in a CUDA graph.
//
// Buffers per call (D = the dtype of x, A = float, or double for float64), beyond the path's
// own (stepwise.cpp, persistent.cpp):
//   forward:  gx (T, B, 3H) D input projection; with a shared or per-gate input dropout mask
//             (T, B, F) D (x ⊙ m).
//   backward: (T, B, 3H) D gate gradients and (T, B, H) D side buffer, both by input time;
//             (T, B, H) D previous states for grad U; (T, B, F) D with input dropout; column-sum
//             partials (A) for grad_bias.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/core/impl/LocalDispatchKeySet.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "cuda/path_choice.h"
#include "cuda/persistent.h"
#include "cuda/recurrence.h"
#include "cuda/stepwise.h"
#include "gru_checks.h"
#include "kernels/step/gru_kernels.h"

namespace gru_cuda {
namespace {

using at::Tensor;
namespace kn = gru_cuda::kernels;

// ATen's 16-bit types have the layout of CUDA's.
template <typename S>
struct CudaScalar {
  using type = S;
};
template <>
struct CudaScalar<at::Half> {
  using type = __half;
};
template <>
struct CudaScalar<at::BFloat16> {
  using type = __nv_bfloat16;
};

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() ? static_cast<T*>(t.data_ptr()) : nullptr;
}

Tensor contiguous_or_undefined(const std::optional<Tensor>& t) {
  return t.has_value() && t->defined() ? t->contiguous() : Tensor();
}

void check_cuda_input(const Tensor& x) {
  TORCH_CHECK_VALUE(x.is_cuda(), "gru (CUDA): x must be a CUDA tensor, got device ", x.device());
  const auto st = x.scalar_type();
  TORCH_CHECK_TYPE(st == at::kFloat || st == at::kDouble || st == at::kHalf || st == at::kBFloat16,
                   "gru (CUDA): x must be float32, float64, float16 or bfloat16, got ", st);
}

// GEMMs into preallocated outputs (often views: column blocks). ATen hands strided operands
// with a unit inner stride straight to cuBLAS (leading dimensions), so none of these copies.
// The out argument is taken by value so that a view can be passed.
void mm_into(Tensor out, const Tensor& a, const Tensor& b) { at::mm_out(out, a, b); }
void addmm_into(Tensor out, const Tensor& bias, const Tensor& a, const Tensor& b) {
  at::addmm_out(out, bias, a, b);
}

// x (T, B, F) ⊙ m_g -> out (T, B, F); m_g is (B, F).
template <typename T>
void apply_input_mask(const Tensor& out, const Tensor& x, const T* m, bool accumulate,
                      cudaStream_t stream) {
  kn::gru_mask_multiply<T>(ptr<T>(out), ptr<T>(x), m, 1, x.size(0), x.size(1) * x.size(2),
                           accumulate, stream);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// gx (T·B, 3H) = [(x ⊙ m_z) W_z, (x ⊙ m_r) W_r, (x ⊙ m_h) W_h] + b_i, one GEMM unless the input
// dropout mask is per gate.
template <typename T>
void input_projection(const Tensor& gx, const Tensor& x, const Tensor& W, const Tensor& b_i,
                      const Tensor& idm, cudaStream_t stream) {
  const int64_t TB = x.size(0) * x.size(1), F = x.size(2), H = W.size(1) / 3;
  auto project = [](const Tensor& out, const Tensor& in, const Tensor& w, const Tensor& b) {
    if (b.defined()) {
      addmm_into(out, b, in, w);
    } else {
      mm_into(out, in, w);
    }
  };
  Tensor gx2 = gx.view({TB, 3 * H});
  if (!idm.defined()) {
    project(gx2, x.view({TB, F}), W, b_i);
    return;
  }
  Tensor xd = at::empty_like(x);
  if (idm.dim() == 2) {
    apply_input_mask<T>(xd, x, ptr<T>(idm), false, stream);
    project(gx2, xd.view({TB, F}), W, b_i);
    return;
  }
  for (int64_t g = 0; g < 3; ++g) {  // xd is reused: the stream orders mask, GEMM, mask, ...
    apply_input_mask<T>(xd, x, ptr<T>(idm) + g * idm.size(1) * F, false, stream);
    project(gx2.narrow(1, g * H, H), xd.view({TB, F}), W.narrow(1, g * H, H),
            b_i.defined() ? b_i.narrow(0, g * H, H) : Tensor());
  }
}

RecurrentCell cell_of(const Tensor& U, const Tensor& h0, const Tensor& mask, const Tensor& rdm,
                      bool reset_after, int activation, int recurrent_activation,
                      bool go_backwards, bool zero_output_for_mask) {
  return {.U = U, .h0 = h0, .mask = mask, .rdm = rdm, .reset_after = reset_after,
          .activation = activation, .recurrent_activation = recurrent_activation,
          .go_backwards = go_backwards, .zero_output_for_mask = zero_output_for_mask};
}

// The one place where the kernel path of a call is decided and run. A persistent path whose
// every launch the device refused (persistent::run recorded why) leaves the call to stepwise.
template <typename T, typename Recurrence>
void run_recurrence(const Recurrence& r) {
  const PathChoice choice = choose_path(r);
  switch (choice.path) {
    case Path::kGrid:
    case Path::kCluster:
      if (persistent::run(choice, r)) return;
      [[fallthrough]];
    case Path::kStepwise:
    case Path::kAuto:  // never chosen: choose_path resolves it
      stepwise::run<T>(r);
      return;
  }
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> forward_impl(
    const GruSizes& sz, const Tensor& x, const Tensor& kernel, const Tensor& recurrent_kernel,
    const std::optional<Tensor>& bias, const Tensor& h0, const std::optional<Tensor>& mask,
    const std::optional<Tensor>& input_dropout_mask,
    const std::optional<Tensor>& recurrent_dropout_mask, bool reset_after, int activation,
    int recurrent_activation, bool go_backwards, bool zero_output_for_mask,
    bool save_for_backward) {
  const int64_t T_ = sz.T, B = sz.B, H = sz.H;
  const int64_t W = (reset_after ? 4 : 3) * H;
  const auto opts = x.options();
  Tensor outputs = at::empty({T_, B, H}, opts);
  Tensor final_state = at::empty({B, H}, opts);
  Tensor states = save_for_backward ? at::empty({T_, B, H}, opts) : at::empty({0}, opts);
  Tensor workspace = save_for_backward ? at::empty({T_, B, W}, opts) : at::empty({0}, opts);
  const Tensor h0c = h0.contiguous();
  if (outputs.numel() == 0) {  // T, B or H is 0: no step to run
    final_state.copy_(h0c);
    return {outputs, final_state, states, workspace};
  }

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const Tensor xc = x.contiguous();
  const Tensor Wc = kernel.contiguous();
  const Tensor U = recurrent_kernel.contiguous();
  const Tensor bc = contiguous_or_undefined(bias);
  const Tensor mc = contiguous_or_undefined(mask);
  const Tensor idm = contiguous_or_undefined(input_dropout_mask);
  const Tensor rdm = contiguous_or_undefined(recurrent_dropout_mask);

  // 1. The input projection of every step, with b_i (all of the bias for reset_after=False).
  const Tensor b_i = !bc.defined() ? Tensor() : (reset_after ? bc.select(0, 0) : bc);
  Tensor gx = at::empty({T_, B, 3 * H}, opts);
  input_projection<T>(gx, xc, Wc, b_i, idm, stream);

  // 2. The recurrence.
  const RecurrentCell cell = cell_of(U, h0c, mc, rdm, reset_after, activation,
                                     recurrent_activation, go_backwards, zero_output_for_mask);
  run_recurrence<T>(ForwardRecurrence{.cell = cell, .gx = gx, .bias = bc, .outputs = outputs,
                                      .final_state = final_state, .states = states,
                                      .workspace = workspace});
  return {outputs, final_state, states, workspace};
}

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> backward_impl(
    const GruSizes& sz, const Tensor& grad_outputs, const Tensor& grad_final_state,
    const Tensor& x, const Tensor& kernel, const Tensor& recurrent_kernel, const Tensor& h0,
    const Tensor& states, const Tensor& workspace, const std::optional<Tensor>& mask,
    const std::optional<Tensor>& input_dropout_mask,
    const std::optional<Tensor>& recurrent_dropout_mask, bool has_bias, bool reset_after,
    int activation, int recurrent_activation, bool go_backwards, bool zero_output_for_mask,
    bool need_grad_x) {
  using Acc = kn::acc_t<T>;
  const int64_t T_ = sz.T, B = sz.B, F = sz.F, H = sz.H, BH = B * H, TB = sz.T * sz.B;
  const auto opts = x.options();
  const auto acc_opts = opts.dtype(std::is_same_v<T, double> ? at::kDouble : at::kFloat);
  // Without need_grad_x (x is data) grad_x is empty and its products are skipped.
  Tensor grad_x = need_grad_x ? at::empty({T_, B, F}, opts) : at::empty({0}, opts);
  Tensor grad_W = at::empty({F, 3 * H}, opts);
  Tensor grad_U = at::empty({H, 3 * H}, opts);
  Tensor grad_b = !has_bias     ? at::empty({0}, opts)
                  : reset_after ? at::empty({2, 3 * H}, opts)
                                : at::empty({3 * H}, opts);
  Tensor grad_h0 = at::empty({B, H}, opts);
  if (TB == 0 || H == 0) {  // no step ran: the state passed straight through
    grad_x.zero_();
    grad_W.zero_();
    grad_U.zero_();
    grad_b.zero_();
    grad_h0.copy_(grad_final_state);
    return {grad_x, grad_W, grad_U, grad_b, grad_h0};
  }

  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const Tensor dY = grad_outputs.contiguous();
  const Tensor dS = grad_final_state.contiguous();
  const Tensor xc = x.contiguous();
  const Tensor Wc = kernel.contiguous();
  const Tensor U = recurrent_kernel.contiguous();
  const Tensor h0c = h0.contiguous();
  const Tensor st = states.contiguous();
  const Tensor ws = workspace.contiguous();
  const Tensor mc = contiguous_or_undefined(mask);
  const Tensor idm = contiguous_or_undefined(input_dropout_mask);
  const Tensor rdm = contiguous_or_undefined(recurrent_dropout_mask);
  const bool has_rdm = rdm.defined();

  // Gate gradients by input time τ, so that they pair with x (and with hp below) in the big
  // GEMMs after the recurrence. reset_after=True: dG = dgh = [da_z | da_r | da_h ⊙ r], aux = da_h
  // (dgx = [da_z | da_r | aux]). reset_after=False: dG = dgx = dgh, aux = r ⊙ hd_h.
  Tensor dG = at::empty({T_, B, 3 * H}, opts);
  Tensor aux = at::empty({T_, B, H}, opts);
  T* const dG_p = ptr<T>(dG);
  T* const aux_p = ptr<T>(aux);

  // The recurrence: dG, aux and grad_h0.
  const RecurrentCell cell = cell_of(U, h0c, mc, rdm, reset_after, activation,
                                     recurrent_activation, go_backwards, zero_output_for_mask);
  run_recurrence<T>(BackwardRecurrence{.cell = cell, .grad_outputs = dY, .grad_final_state = dS,
                                       .states = st, .workspace = ws, .dgates = dG, .aux = aux,
                                       .grad_h0 = grad_h0});

  const Tensor dG2 = dG.view({TB, 3 * H});
  const Tensor aux2 = aux.view({TB, H});
  auto dgx = [&](int64_t g) { return reset_after && g == 2 ? aux2 : dG2.narrow(1, g * H, H); };

  // grad_recurrent_kernel[:, g] = Σ hd_gᵀ dgh_g, hd_g = h_{s-1} ⊙ q_g gathered by input time.
  {
    Tensor hp = at::empty({T_, B, H}, opts);
    const Tensor hp_t = hp.view({TB, H}).t();
    if (!has_rdm) {
      kn::gru_gather_previous_states<T>(ptr<T>(hp), ptr<T>(h0c), ptr<T>(st), nullptr, T_, B, H,
                                        go_backwards, stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const int64_t cols = reset_after ? 3 * H : 2 * H;
      mm_into(grad_U.narrow(1, 0, cols), hp_t, dG2.narrow(1, 0, cols));
    } else {
      const int64_t gates = reset_after ? 3 : 2;  // gates whose GEMM reads the dropped state
      for (int64_t g = 0; g < gates; ++g) {  // hp is reused: the stream orders the GEMMs
        kn::gru_gather_previous_states<T>(ptr<T>(hp), ptr<T>(h0c), ptr<T>(st),
                                          ptr<T>(rdm) + g * BH, T_, B, H, go_backwards, stream);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        mm_into(grad_U.narrow(1, g * H, H), hp_t, dG2.narrow(1, g * H, H));
      }
    }
    if (!reset_after) {  // grad U_h = Σ (r ⊙ hd_h)ᵀ da_h
      mm_into(grad_U.narrow(1, 2 * H, H), aux2.t(), dG2.narrow(1, 2 * H, H));
    }
  }

  // grad_kernel[:, g] = Σ (x ⊙ m_g)ᵀ dgx_g and grad_x = Σ_g (dgx_g W_gᵀ) ⊙ m_g.
  const Tensor gx2 = need_grad_x ? grad_x.view({TB, F}) : Tensor();
  if (!idm.defined() || idm.dim() == 2) {
    Tensor xin = xc;
    if (idm.defined()) {
      xin = at::empty_like(xc);
      apply_input_mask<T>(xin, xc, ptr<T>(idm), false, stream);
    }
    const Tensor x_t = xin.view({TB, F}).t();
    if (reset_after) {
      mm_into(grad_W.narrow(1, 0, 2 * H), x_t, dG2.narrow(1, 0, 2 * H));
      mm_into(grad_W.narrow(1, 2 * H, H), x_t, aux2);
      if (need_grad_x) {
        mm_into(gx2, dG2.narrow(1, 0, 2 * H), Wc.narrow(1, 0, 2 * H).t());
        gx2.addmm_(aux2, Wc.narrow(1, 2 * H, H).t());
      }
    } else {
      mm_into(grad_W, x_t, dG2);
      if (need_grad_x) mm_into(gx2, dG2, Wc.t());
    }
    if (idm.defined() && need_grad_x)
      apply_input_mask<T>(grad_x, grad_x, ptr<T>(idm), false, stream);
  } else {
    Tensor xd = at::empty_like(xc);
    Tensor tmp = need_grad_x ? at::empty_like(xc) : Tensor();
    const Tensor xd_t = xd.view({TB, F}).t();
    const Tensor tmp2 = need_grad_x ? tmp.view({TB, F}) : Tensor();
    for (int64_t g = 0; g < 3; ++g) {  // xd and tmp are reused: the stream orders the work
      const T* m_g = ptr<T>(idm) + g * B * F;
      apply_input_mask<T>(xd, xc, m_g, false, stream);
      mm_into(grad_W.narrow(1, g * H, H), xd_t, dgx(g));
      if (!need_grad_x) continue;
      mm_into(tmp2, dgx(g), Wc.narrow(1, g * H, H).t());
      apply_input_mask<T>(grad_x, tmp, m_g, g > 0, stream);
    }
  }

  // grad_bias: deterministic column sums over the T·B rows.
  if (has_bias) {
    const int64_t n = kn::gru_column_sum_workspace(TB, 3 * H);
    Tensor partial = n > 0 ? at::empty({n}, acc_opts) : Tensor();
    if (reset_after) {  // [Σ dgx ; Σ dgh], which share their z and r blocks
      T* const row0 = ptr<T>(grad_b);
      T* const row1 = row0 + 3 * H;
      kn::gru_column_sum<T>(row1, dG_p, TB, 3 * H, 3 * H, ptr<Acc>(partial), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      grad_b.select(0, 0).narrow(0, 0, 2 * H).copy_(grad_b.select(0, 1).narrow(0, 0, 2 * H));
      kn::gru_column_sum<T>(row0 + 2 * H, aux_p, TB, H, H, ptr<Acc>(partial), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    } else {
      kn::gru_column_sum<T>(ptr<T>(grad_b), dG_p, TB, 3 * H, 3 * H, ptr<Acc>(partial), stream);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
  }
  return {grad_x, grad_W, grad_U, grad_b, grad_h0};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> gru_forward_cuda(
    const Tensor& x, const Tensor& kernel, const Tensor& recurrent_kernel,
    const std::optional<Tensor>& bias, const Tensor& h0, const std::optional<Tensor>& mask,
    const std::optional<Tensor>& input_dropout_mask,
    const std::optional<Tensor>& recurrent_dropout_mask, bool reset_after, int64_t activation,
    int64_t recurrent_activation, bool go_backwards, bool zero_output_for_mask,
    bool save_for_backward) {
  const GruSizes sz = check_forward_args(x, kernel, recurrent_kernel, bias, h0, mask,
                                         input_dropout_mask, recurrent_dropout_mask, reset_after,
                                         activation, recurrent_activation);
  check_cuda_input(x);
  const c10::cuda::CUDAGuard guard(x.device());
  // The GEMMs write into buffers of the compute dtype: autocast must not retype them.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  std::tuple<Tensor, Tensor, Tensor, Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "gru_forward_cuda",
                                  [&] {
                                    using T = typename CudaScalar<scalar_t>::type;
                                    result = forward_impl<T>(
                                        sz, x, kernel, recurrent_kernel, bias, h0, mask,
                                        input_dropout_mask, recurrent_dropout_mask, reset_after,
                                        static_cast<int>(activation),
                                        static_cast<int>(recurrent_activation), go_backwards,
                                        zero_output_for_mask, save_for_backward);
                                  });
  return result;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> gru_backward_cuda(
    const Tensor& grad_outputs, const Tensor& grad_final_state, const Tensor& x,
    const Tensor& kernel, const Tensor& recurrent_kernel, const Tensor& h0, const Tensor& states,
    const Tensor& workspace, const std::optional<Tensor>& mask,
    const std::optional<Tensor>& input_dropout_mask,
    const std::optional<Tensor>& recurrent_dropout_mask, bool has_bias, bool reset_after,
    int64_t activation, int64_t recurrent_activation, bool go_backwards,
    bool zero_output_for_mask, bool need_grad_x) {
  const GruSizes sz = check_forward_args(x, kernel, recurrent_kernel, std::nullopt, h0, mask,
                                         input_dropout_mask, recurrent_dropout_mask, reset_after,
                                         activation, recurrent_activation);
  // The kernels save states and workspace in x's dtype.
  check_backward_args(sz, grad_outputs, grad_final_state, states, workspace, reset_after, x,
                      x.scalar_type());
  check_cuda_input(x);
  const c10::cuda::CUDAGuard guard(x.device());
  // The GEMMs write into buffers of the compute dtype: autocast must not retype them.
  const c10::impl::ExcludeDispatchKeyGuard no_autocast(c10::autocast_dispatch_keyset);
  std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> result;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::kHalf, at::kBFloat16, x.scalar_type(), "gru_backward_cuda", [&] {
        using T = typename CudaScalar<scalar_t>::type;
        result = backward_impl<T>(sz, grad_outputs, grad_final_state, x, kernel,
                                  recurrent_kernel, h0, states, workspace, mask,
                                  input_dropout_mask, recurrent_dropout_mask, has_bias,
                                  reset_after, static_cast<int>(activation),
                                  static_cast<int>(recurrent_activation), go_backwards,
                                  zero_output_for_mask, need_grad_x);
      });
  return result;
}

}  // namespace
}  // namespace gru_cuda

TORCH_LIBRARY_IMPL(gru_cuda, CUDA, m) {
  m.impl("gru_forward", &gru_cuda::gru_forward_cuda);
  m.impl("gru_backward", &gru_cuda::gru_backward_cuda);
}
