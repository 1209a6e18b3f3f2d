// The stepwise kernels of the sanitizer driver, fp32 only, from the launch-rewritten copies
// that tests/emulation/builder.py writes (kernels/step/gru_step_kernels.cuh, kernels/
// emu_utility_kernels.cpp). The copy of the step kernels dispatches through the functions below
// instead of every activation pair (144 instantiations a launcher): the driver's two pairs only.
#include <type_traits>

#include "common/activations.h"

namespace sd_dispatch {
// The pairs the driver runs: (tanh, sigmoid) and (softsign, hard_sigmoid).
template <typename F>
inline bool pair(int a, int r, F&& f) {
  using gru_cuda::kHardSigmoid;
  using gru_cuda::kSigmoid;
  using gru_cuda::kSoftsign;
  using gru_cuda::kTanh;
  if (a == kTanh && r == kSigmoid) {
    f(std::integral_constant<int, kTanh>{}, std::integral_constant<int, kSigmoid>{});
  } else if (a == kSoftsign && r == kHardSigmoid) {
    f(std::integral_constant<int, kSoftsign>{}, std::integral_constant<int, kHardSigmoid>{});
  } else {
    emu::fail("sanitizer driver: activation pair not compiled in");
  }
  return true;
}
template <typename F>
inline bool one(int r, F&& f) {
  if (r == gru_cuda::kSigmoid) {
    f(std::integral_constant<int, gru_cuda::kSigmoid>{});
  } else if (r == gru_cuda::kHardSigmoid) {
    f(std::integral_constant<int, gru_cuda::kHardSigmoid>{});
  } else {
    emu::fail("sanitizer driver: recurrent activation not compiled in");
  }
  return true;
}
}  // namespace sd_dispatch

#include "kernels/step/gru_step_kernels.cuh"

GRU_INSTANTIATE_FORWARD_RESET_AFTER(float)
GRU_INSTANTIATE_FORWARD_RESET_BEFORE(float)
GRU_INSTANTIATE_BACKWARD_RESET_AFTER(float)
GRU_INSTANTIATE_BACKWARD_RESET_BEFORE(float)

#include "kernels/emu_utility_kernels.cpp"
