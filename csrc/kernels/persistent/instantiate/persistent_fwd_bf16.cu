// Persistent forward kernels (grid and cluster paths, both conventions) for dtype __nv_bfloat16.
// One dtype and direction per translation unit, so that the instantiations compile in parallel.
#include "kernels/persistent/persistent_kernels.cuh"

GRU_PERSISTENT_INSTANTIATE_FORWARD(__nv_bfloat16)
