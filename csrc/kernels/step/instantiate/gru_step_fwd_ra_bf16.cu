// Per-step forward kernels, reset_after=True, dtype __nv_bfloat16, every activation pair.
// One kernel family and dtype per translation unit, so that the instantiations compile in parallel.
#include "kernels/step/gru_step_kernels.cuh"

GRU_INSTANTIATE_FORWARD_RESET_AFTER(__nv_bfloat16)
