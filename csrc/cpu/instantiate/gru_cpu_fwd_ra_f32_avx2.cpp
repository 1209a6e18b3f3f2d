// Forward pass, reset_after=True, dtype float, every activation pair,
// the AVX2 + FMA variant (cpu_isa.h).
// One pass family, dtype and variant per translation unit, so that they compile in parallel.
#define GRU_CPU_ISA_LEVEL 1
#include "cpu/gru_cpu_steps_impl.h"

GRU_CPU_INSTANTIATE_FORWARD_RESET_AFTER(float)
