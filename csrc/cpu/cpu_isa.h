// Instruction-set variants of the float32 pointwise passes. The extension is compiled without
// -march, so the passes are built once per instruction set (instantiate/*_f32_{avx2,avx512}.cpp
// under `#pragma GCC target`) and the variant is chosen at run time from the CPU, as ATen's
// dispatch stubs do; double has the baseline build only (it calls libm, which does not vectorise).
#pragma once

#include <string>
#include <vector>

namespace gru_cuda {
namespace cpu {

enum class Isa : int { kBaseline = 0, kAvx2 = 1, kAvx512 = 2 };

// The variant the passes use now: the best this CPU runs, unless the environment variable
// GRU_CUDA_CPU_ISA (baseline | avx2 | avx512 | auto) asks for a lower one. Read on every call
// (once per op call), so that tests can run each variant in one process. Asking for a variant
// this CPU cannot run, or an unknown name, raises an error naming the variable.
Isa cpu_isa();

// The best variant this CPU runs (CPUID and OS register-state support, checked once).
Isa cpu_isa_supported();

const char* isa_name(Isa isa);

// Whether this CPU has bfloat16 dot products (AVX512-BF16), which make oneDNN's bfloat16 GEMM
// about twice as fast as float32; without them it is slower, so products stay in float32.
bool cpu_has_bf16_dot();

// Names of the variants this CPU runs, lowest first ("baseline" always).
std::vector<std::string> cpu_isa_names_supported();

}  // namespace cpu
}  // namespace gru_cuda
