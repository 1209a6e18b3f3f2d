// Forward pass, reset_after=True, dtype float, every activation pair.
// One pass family and dtype per translation unit, so that the instantiations compile in parallel.
#include "cpu/gru_cpu_steps_impl.h"

GRU_CPU_INSTANTIATE_FORWARD_RESET_AFTER(float)
