// Per-step forward kernels, reset_after=False, dtype float, every activation pair.
// One kernel family and dtype per translation unit, so that the instantiations compile in parallel.
#include "kernels/step/gru_step_kernels.cuh"

GRU_INSTANTIATE_FORWARD_RESET_BEFORE(float)
