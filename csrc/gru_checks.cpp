#include "gru_checks.h"

#include <c10/util/Exception.h>

#include "common/activations.h"

namespace gru_cuda {
namespace {

void check_same(const at::Tensor& ref, const at::Tensor& t, const char* name) {
  TORCH_CHECK_TYPE(t.scalar_type() == ref.scalar_type(), "gru: ", name, " must have dtype ",
                   ref.scalar_type(), " (the dtype of x), got ", t.scalar_type());
  TORCH_CHECK_VALUE(t.device() == ref.device(), "gru: ", name, " must be on device ",
                    ref.device(), " (the device of x), got ", t.device());
}

void check_shape(const at::Tensor& t, at::IntArrayRef expected, const char* name) {
  TORCH_CHECK_VALUE(t.sizes() == expected, "gru: ", name, " must have shape ", expected,
                    ", got ", t.sizes());
}

}  // namespace

at::ScalarType cpu_saved_dtype(const at::Tensor& x) {
  const at::ScalarType t = x.scalar_type();
  return t == at::kBFloat16 || t == at::kHalf ? at::kFloat : t;
}

GruSizes check_forward_args(const at::Tensor& x, const at::Tensor& kernel,
                            const at::Tensor& recurrent_kernel,
                            const std::optional<at::Tensor>& bias, const at::Tensor& h0,
                            const std::optional<at::Tensor>& mask,
                            const std::optional<at::Tensor>& input_dropout_mask,
                            const std::optional<at::Tensor>& recurrent_dropout_mask,
                            bool reset_after, int64_t activation, int64_t recurrent_activation) {
  TORCH_CHECK_TYPE(at::isFloatingType(x.scalar_type()),
                   "gru: x must have a floating dtype, got ", x.scalar_type());
  TORCH_CHECK_VALUE(x.dim() == 3, "gru: x must be 3-D (T, B, F) time-major, got shape ",
                    x.sizes());
  TORCH_CHECK_VALUE(recurrent_kernel.dim() == 2 && recurrent_kernel.size(1) % 3 == 0 &&
                        recurrent_kernel.size(1) == 3 * recurrent_kernel.size(0),
                    "gru: recurrent_kernel must have shape (H, 3H), got ",
                    recurrent_kernel.sizes());
  GruSizes s{x.size(0), x.size(1), x.size(2), recurrent_kernel.size(0)};
  check_same(x, kernel, "kernel");
  check_shape(kernel, {s.F, 3 * s.H}, "kernel");
  check_same(x, recurrent_kernel, "recurrent_kernel");
  if (bias.has_value()) {
    check_same(x, *bias, "bias");
    if (reset_after) {
      check_shape(*bias, {2, 3 * s.H}, "bias (reset_after=True)");
    } else {
      check_shape(*bias, {3 * s.H}, "bias (reset_after=False)");
    }
  }
  check_same(x, h0, "initial_state");
  check_shape(h0, {s.B, s.H}, "initial_state");
  if (mask.has_value()) {
    TORCH_CHECK_TYPE(mask->scalar_type() == at::kBool, "gru: mask must have dtype bool, got ",
                     mask->scalar_type());
    TORCH_CHECK_VALUE(mask->device() == x.device(), "gru: mask must be on device ", x.device(),
                      " (the device of x), got ", mask->device());
    check_shape(*mask, {s.T, s.B}, "mask (time-major)");
  }
  if (input_dropout_mask.has_value()) {
    const auto& m = *input_dropout_mask;
    check_same(x, m, "input_dropout_mask");
    TORCH_CHECK_VALUE(m.sizes() == at::IntArrayRef({s.B, s.F}) ||
                          m.sizes() == at::IntArrayRef({3, s.B, s.F}),
                      "gru: input_dropout_mask must have shape (", s.B, ", ", s.F, ") or (3, ",
                      s.B, ", ", s.F, "), got ", m.sizes());
  }
  if (recurrent_dropout_mask.has_value()) {
    check_same(x, *recurrent_dropout_mask, "recurrent_dropout_mask");
    check_shape(*recurrent_dropout_mask, {3, s.B, s.H}, "recurrent_dropout_mask");
  }
  TORCH_CHECK_VALUE(activation >= 0 && activation < kNumActivations,
                    "gru: activation id must be in [0, ", int(kNumActivations), "), got ",
                    activation);
  TORCH_CHECK_VALUE(recurrent_activation >= 0 && recurrent_activation < kNumActivations,
                    "gru: recurrent_activation id must be in [0, ", int(kNumActivations),
                    "), got ", recurrent_activation);
  return s;
}

void check_backward_args(const GruSizes& s, const at::Tensor& grad_outputs,
                         const at::Tensor& grad_final_state, const at::Tensor& states,
                         const at::Tensor& workspace, bool reset_after, const at::Tensor& x,
                         at::ScalarType saved) {
  check_same(x, grad_outputs, "grad_outputs");
  check_shape(grad_outputs, {s.T, s.B, s.H}, "grad_outputs");
  check_same(x, grad_final_state, "grad_final_state");
  check_shape(grad_final_state, {s.B, s.H}, "grad_final_state");
  for (const auto& [t, name] : {std::pair<const at::Tensor&, const char*>{states, "states"},
                                {workspace, "workspace"}}) {
    TORCH_CHECK_TYPE(t.scalar_type() == saved, "gru: ", name, " must have dtype ", saved,
                     " (as gru_forward saves it for x of dtype ", x.scalar_type(), "), got ",
                     t.scalar_type());
    TORCH_CHECK_VALUE(t.device() == x.device(), "gru: ", name, " must be on device ", x.device(),
                      " (the device of x), got ", t.device());
  }
  check_shape(states, {s.T, s.B, s.H}, "states (saved by gru_forward with save_for_backward)");
  check_shape(workspace, {s.T, s.B, (reset_after ? 4 : 3) * s.H},
              "workspace (saved by gru_forward with save_for_backward)");
}

}  // namespace gru_cuda
