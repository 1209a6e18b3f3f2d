// Run-time choice of the instruction-set variant of the float32 pointwise passes (cpu_isa.h).
#include "cpu/cpu_isa.h"

#include <c10/util/Exception.h>

#include <cstdlib>
#include <cstring>

namespace gru_cuda {
namespace cpu {

namespace {

constexpr const char* kNames[] = {"baseline", "avx2", "avx512"};

Isa detect() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  // libgcc's checks include the OS's XSAVE support for the ymm/zmm registers.
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return Isa::kAvx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::kAvx2;
#endif
  return Isa::kBaseline;
}

}  // namespace

bool cpu_has_bf16_dot() {
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
  static const bool has = [] {
    __builtin_cpu_init();
    return cpu_isa_supported() == Isa::kAvx512 && __builtin_cpu_supports("avx512bf16");
  }();
  return has;
#else
  return false;
#endif
}

const char* isa_name(Isa isa) { return kNames[static_cast<int>(isa)]; }

Isa cpu_isa_supported() {
  static const Isa best = detect();
  return best;
}

std::vector<std::string> cpu_isa_names_supported() {
  std::vector<std::string> names;
  for (int i = 0; i <= static_cast<int>(cpu_isa_supported()); ++i) names.emplace_back(kNames[i]);
  return names;
}

Isa cpu_isa() {
  const Isa best = cpu_isa_supported();
  const char* env = std::getenv("GRU_CUDA_CPU_ISA");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0) return best;
  for (int i = 0; i < 3; ++i) {
    if (std::strcmp(env, kNames[i]) != 0) continue;
    TORCH_CHECK(i <= static_cast<int>(best), "GRU_CUDA_CPU_ISA=", env,
                ": this CPU runs at most the '", isa_name(best), "' variant");
    return static_cast<Isa>(i);
  }
  TORCH_CHECK(false, "GRU_CUDA_CPU_ISA must be one of auto, baseline, avx2, avx512; got '", env,
              "'");
}

}  // namespace cpu
}  // namespace gru_cuda
