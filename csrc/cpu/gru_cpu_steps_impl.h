// Definitions of one instruction-set variant's passes declared in gru_cpu_steps.h (namespace
// isa_baseline, isa_avx2 or isa_avx512, from GRU_CPU_ISA_LEVEL): each dispatches the runtime
// activation ids to the templated passes of gru_pointwise.h. Included only by the
// instantiation files instantiate/gru_cpu_{fwd,bwd}_{ra,rb}_{f32,f64}[_avx2|_avx512].cpp, one
// pass family, dtype and variant each. The entry points that choose the variant are in
// gru_cpu_steps.cpp.
#pragma once

#include "common/activations.h"
#include "cpu/gru_cpu_steps.h"
#include "cpu/gru_pointwise.h"

namespace gru_cuda {
namespace cpu {
namespace GRU_CPU_ISA_NS {

// Calls f(integral_constant<A>, integral_constant<R>) for the runtime pair.
template <typename F>
void dispatch_pair(int act, int ract, F&& f) {
  dispatch_activation(act, [&](auto A) { dispatch_activation(ract, [&](auto R) { f(A, R); }); });
}

template <typename T>
void forward_step_reset_after(const ForwardStep<T>& p, int act, int ract) {
  dispatch_pair(act, ract, [&](auto A, auto R) {
    forward_reset_after<T, decltype(A)::value, decltype(R)::value>(p);
  });
}

template <typename T>
void forward_step_reset_before_gates(const ForwardStep<T>& p, const T* ones, int ract) {
  dispatch_activation(ract, [&](auto R) { forward_reset_before_gates<T, decltype(R)::value>(p, ones); });
}

template <typename T>
void forward_step_reset_before_candidate(const ForwardStep<T>& p, int act, int ract) {
  dispatch_pair(act, ract, [&](auto A, auto R) {
    forward_reset_before_candidate<T, decltype(A)::value, decltype(R)::value>(p);
  });
}

template <typename T>
void backward_step_reset_after(const BackwardStep<T>& p, int act, int ract) {
  dispatch_pair(act, ract, [&](auto A, auto R) {
    backward_reset_after<T, decltype(A)::value, decltype(R)::value>(p);
  });
}

template <typename T>
void backward_step_reset_before_candidate(const BackwardStep<T>& p, int act, int ract) {
  dispatch_pair(act, ract, [&](auto A, auto R) {
    backward_reset_before_candidate<T, decltype(A)::value, decltype(R)::value>(p);
  });
}

template <typename T>
void backward_step_reset_before_gates(const BackwardStep<T>& p, const T* ones, int ract) {
  dispatch_activation(ract, [&](auto R) { backward_reset_before_gates<T, decltype(R)::value>(p, ones); });
}

template <typename T>
void reset_state_rows(int64_t rows, int64_t H, const T* ws, int64_t ws_width, const T* hd_h,
                      T* out, int ract) {
  dispatch_activation(ract, [&](auto R) {
    reset_state_all<T, decltype(R)::value>(rows, H, ws, ws_width, hd_h, out);
  });
}

}  // namespace GRU_CPU_ISA_NS
}  // namespace cpu
}  // namespace gru_cuda

#define GRU_CPU_INSTANTIATE_FORWARD_RESET_AFTER(T)                                       \
  namespace gru_cuda {                                                                   \
  namespace cpu {                                                                        \
  namespace GRU_CPU_ISA_NS {                                                             \
  template void forward_step_reset_after<T>(const ForwardStep<T>&, int, int);            \
  }                                                                                      \
  }                                                                                      \
  }
#define GRU_CPU_INSTANTIATE_FORWARD_RESET_BEFORE(T)                                      \
  namespace gru_cuda {                                                                   \
  namespace cpu {                                                                        \
  namespace GRU_CPU_ISA_NS {                                                             \
  template void forward_step_reset_before_gates<T>(const ForwardStep<T>&, const T*, int); \
  template void forward_step_reset_before_candidate<T>(const ForwardStep<T>&, int, int); \
  }                                                                                      \
  }                                                                                      \
  }
#define GRU_CPU_INSTANTIATE_BACKWARD_RESET_AFTER(T)                                      \
  namespace gru_cuda {                                                                   \
  namespace cpu {                                                                        \
  namespace GRU_CPU_ISA_NS {                                                             \
  template void backward_step_reset_after<T>(const BackwardStep<T>&, int, int);          \
  }                                                                                      \
  }                                                                                      \
  }
#define GRU_CPU_INSTANTIATE_BACKWARD_RESET_BEFORE(T)                                         \
  namespace gru_cuda {                                                                       \
  namespace cpu {                                                                            \
  namespace GRU_CPU_ISA_NS {                                                                 \
  template void backward_step_reset_before_candidate<T>(const BackwardStep<T>&, int, int);   \
  template void backward_step_reset_before_gates<T>(const BackwardStep<T>&, const T*, int);  \
  template void reset_state_rows<T>(int64_t, int64_t, const T*, int64_t, const T*, T*, int); \
  }                                                                                          \
  }                                                                                          \
  }
