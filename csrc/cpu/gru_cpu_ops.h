// Host side of the CPU ops gru_cuda::gru_forward / gru_backward (registered in gru_cpu.cpp):
// the ATen calls (GEMMs, dtype handling) around the pointwise passes of gru_cpu_steps.h.
#pragma once

// Tensor alone (not ATen/ATen.h): the registration file gru_cpu.cpp includes only this header.
#include <ATen/core/Tensor.h>

#include <optional>
#include <tuple>

namespace gru_cuda {
namespace cpu {

// bfloat16 and float16 compute in float32 (inputs converted once, results converted back).
inline at::ScalarType compute_type(at::ScalarType t) {
  return (t == at::kBFloat16 || t == at::kHalf) ? at::kFloat : t;
}

inline at::Tensor prepared(const at::Tensor& t, at::ScalarType ct) {
  return t.to(ct).contiguous();
}

inline std::optional<at::Tensor> prepared(const std::optional<at::Tensor>& t, at::ScalarType ct) {
  return t.has_value() ? std::optional<at::Tensor>(prepared(*t, ct)) : std::nullopt;
}

// bfloat16 products (oneDNN, float32 accumulation) run at about twice the float32 rate where the
// CPU has bfloat16 dot products (cpu_has_bf16_dot), but cost ~15 us more per call: below this
// many multiply-adds a product stays in float32 (measured at 1 thread: B=8, H=128 is faster in
// float32, B=32, H=256 in bfloat16).
constexpr int64_t kBf16MinMacs = int64_t(1) << 21;

// x (T, B, F) is the transposed view of a contiguous (B, T, F) tensor. The forward op then
// returns its outputs with the same layout (a (T, B, H) view of a contiguous (B, T, H) tensor);
// the op's fake kernel (gru_cuda/ops.py) mirrors this test.
inline bool is_batch_major(const at::Tensor& x) {
  return x.dim() == 3 && !x.is_contiguous() && x.transpose(0, 1).is_contiguous();
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_forward_cpu(
    const at::Tensor& x_in, const at::Tensor& kernel_in, const at::Tensor& rk_in,
    const std::optional<at::Tensor>& bias_in, const at::Tensor& h0_in,
    const std::optional<at::Tensor>& mask_in, const std::optional<at::Tensor>& idm_in,
    const std::optional<at::Tensor>& rdm_in, bool reset_after, int64_t activation,
    int64_t recurrent_activation, bool go_backwards, bool zero_output_for_mask,
    bool save_for_backward);

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> gru_backward_cpu(
    const at::Tensor& grad_outputs_in, const at::Tensor& grad_final_in, const at::Tensor& x_in,
    const at::Tensor& kernel_in, const at::Tensor& rk_in, const at::Tensor& h0_in,
    const at::Tensor& states_in, const at::Tensor& ws_in, const std::optional<at::Tensor>& mask_in,
    const std::optional<at::Tensor>& idm_in, const std::optional<at::Tensor>& rdm_in,
    bool has_bias, bool reset_after, int64_t activation, int64_t recurrent_activation,
    bool go_backwards, bool zero_output_for_mask, bool need_grad_x);

}  // namespace cpu
}  // namespace gru_cuda
