// Argument checks shared by every backend of the gru ops. The Python functional API checks
// first with friendlier messages; these guard direct torch.ops calls, so that no shape, dtype
// or device mistake ever reaches a kernel as an out-of-bounds access.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>

#include <optional>

namespace gru_cuda {

struct GruSizes {
  int64_t T, B, F, H;
};

// Validates the gru_forward arguments and returns the sizes. Raises ValueError (shape or
// option) or TypeError (dtype) naming the argument, the expected and the actual value.
GruSizes check_forward_args(const at::Tensor& x, const at::Tensor& kernel,
                            const at::Tensor& recurrent_kernel,
                            const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                            const std::optional<at::Tensor>& mask,
                            const std::optional<at::Tensor>& input_dropout_mask,
                            const std::optional<at::Tensor>& recurrent_dropout_mask,
                            bool reset_after, int64_t activation, int64_t recurrent_activation);

// The dtype of the states and workspace that the CPU gru_forward saves for x: float32 for
// bfloat16 and float16 inputs (computed in float32, saved without rounding: no conversion in
// either direction, and an exact backward), x's dtype otherwise. The CUDA kernels save x's dtype.
at::ScalarType cpu_saved_dtype(const at::Tensor& x);

// Validates the extra gru_backward arguments (gradients and saved tensors) against the sizes;
// `saved`: the dtype this backend's gru_forward saves states and workspace in.
void check_backward_args(const GruSizes& s, const at::Tensor& grad_outputs,
                         const at::Tensor& grad_final_state, const at::Tensor& states,
                         const at::Tensor& workspace, bool reset_after, const at::Tensor& x,
                         at::ScalarType saved);

}  // namespace gru_cuda
