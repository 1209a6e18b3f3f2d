// Persistent backward kernels (grid and cluster paths, both conventions) for dtype float.
// One dtype and direction per translation unit, so that the instantiations compile in parallel.
#include "kernels/persistent/persistent_kernels.cuh"

GRU_PERSISTENT_INSTANTIATE_BACKWARD(float)
