// Per-step backward kernels, reset_after=True, dtype __half, every activation pair.
// One kernel family and dtype per translation unit, so that the instantiations compile in parallel.
#include "kernels/step/gru_step_kernels.cuh"

GRU_INSTANTIATE_BACKWARD_RESET_AFTER(__half)
