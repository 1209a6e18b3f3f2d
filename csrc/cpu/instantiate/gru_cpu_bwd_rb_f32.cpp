// Backward passes, reset_after=False (candidate, gates, r * hd_h for dU_h), dtype float, every activation pair.
// One pass family and dtype per translation unit, so that the instantiations compile in parallel.
#include "cpu/gru_cpu_steps_impl.h"

GRU_CPU_INSTANTIATE_BACKWARD_RESET_BEFORE(float)
