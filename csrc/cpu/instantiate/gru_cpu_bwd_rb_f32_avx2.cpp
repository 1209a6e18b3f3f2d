// Backward passes, reset_after=False (candidate, gates, r * hd_h for dU_h), dtype float, every activation pair,
// the AVX2 + FMA variant (cpu_isa.h).
// One pass family, dtype and variant per translation unit, so that they compile in parallel.
#define GRU_CPU_ISA_LEVEL 1
#include "cpu/gru_cpu_steps_impl.h"

GRU_CPU_INSTANTIATE_BACKWARD_RESET_BEFORE(float)
