// Stand-in for c10/cuda/CUDAStream.h in the host emulation of the stepwise binding: one null stream.
#pragma once
#include <cuda_runtime_api.h>
namespace c10 {
namespace cuda {
struct EmuStream {
  cudaStream_t stream() const { return nullptr; }
};
inline EmuStream getCurrentCUDAStream() { return {}; }
}  // namespace cuda
}  // namespace c10
