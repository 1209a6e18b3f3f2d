// The entry points of gru_cpu_steps.h: float runs the instruction-set variant named by the step
// (cpu_isa.h), double the baseline build.
#include "cpu/gru_cpu_steps.h"

#include <type_traits>

namespace gru_cuda {
namespace cpu {

namespace {

// f(isa_avx512{}), f(isa_avx2{}) or f(isa_baseline{}): a tag naming the variant's namespace.
struct Avx512 {};
struct Avx2 {};
struct Baseline {};

template <typename T, typename F>
void on_variant(Isa isa, F&& f) {
  if constexpr (std::is_same_v<T, float>) {
    if (isa == Isa::kAvx512) return f(Avx512{});
    if (isa == Isa::kAvx2) return f(Avx2{});
  }
  f(Baseline{});
}

}  // namespace

// One entry point: NAME(args) runs isa_<variant>::NAME<T>(args).
#define GRU_CPU_VARIANT_CALL(NAME, ISA, ...)                         \
  on_variant<T>(ISA, [&](auto tag) {                                 \
    using Tag = decltype(tag);                                       \
    if constexpr (std::is_same_v<Tag, Avx512>)                       \
      isa_avx512::NAME<T>(__VA_ARGS__);                              \
    else if constexpr (std::is_same_v<Tag, Avx2>)                    \
      isa_avx2::NAME<T>(__VA_ARGS__);                                \
    else                                                             \
      isa_baseline::NAME<T>(__VA_ARGS__);                            \
  })

// template <typename T> void NAME PARAMS: runs NAME of the variant ISA names.
#define GRU_CPU_ENTRY(NAME, PARAMS, ISA, ...) \
  template <typename T>                       \
  void NAME PARAMS {                          \
    GRU_CPU_VARIANT_CALL(NAME, ISA, __VA_ARGS__); \
  }

GRU_CPU_ENTRY(forward_step_reset_after, (const ForwardStep<T>& p, int act, int ract), p.isa, p,
              act, ract)
GRU_CPU_ENTRY(forward_step_reset_before_gates, (const ForwardStep<T>& p, const T* ones, int ract),
              p.isa, p, ones, ract)
GRU_CPU_ENTRY(forward_step_reset_before_candidate, (const ForwardStep<T>& p, int act, int ract),
              p.isa, p, act, ract)
GRU_CPU_ENTRY(backward_step_reset_after, (const BackwardStep<T>& p, int act, int ract), p.isa, p,
              act, ract)
GRU_CPU_ENTRY(backward_step_reset_before_candidate, (const BackwardStep<T>& p, int act, int ract),
              p.isa, p, act, ract)
GRU_CPU_ENTRY(backward_step_reset_before_gates,
              (const BackwardStep<T>& p, const T* ones, int ract), p.isa, p, ones, ract)
GRU_CPU_ENTRY(reset_state_rows,
              (int64_t rows, int64_t H, const T* ws, int64_t ws_width, const T* hd_h, T* out,
               int ract, Isa isa),
              isa, rows, H, ws, ws_width, hd_h, out, ract)

#undef GRU_CPU_ENTRY
#undef GRU_CPU_VARIANT_CALL

#define GRU_CPU_INSTANTIATE_ENTRY_POINTS(T)                                                   \
  template void forward_step_reset_after<T>(const ForwardStep<T>&, int, int);                \
  template void forward_step_reset_before_gates<T>(const ForwardStep<T>&, const T*, int);    \
  template void forward_step_reset_before_candidate<T>(const ForwardStep<T>&, int, int);     \
  template void backward_step_reset_after<T>(const BackwardStep<T>&, int, int);              \
  template void backward_step_reset_before_candidate<T>(const BackwardStep<T>&, int, int);   \
  template void backward_step_reset_before_gates<T>(const BackwardStep<T>&, const T*, int);  \
  template void reset_state_rows<T>(int64_t, int64_t, const T*, int64_t, const T*, T*, int, \
                                    Isa);
GRU_CPU_INSTANTIATE_ENTRY_POINTS(float)
GRU_CPU_INSTANTIATE_ENTRY_POINTS(double)
#undef GRU_CPU_INSTANTIATE_ENTRY_POINTS

}  // namespace cpu
}  // namespace gru_cuda
