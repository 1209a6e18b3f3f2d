// gru_cuda._C.cuda_device_capacity(device): the on-chip capacity of a CUDA device, which decides
// what a persistent kernel can keep resident (the limits are those of the CUDA programming
// guide's per-architecture tables).
// Attributes are read with cudaDeviceGetAttribute, which stays stable across CUDA versions
// (several cudaDeviceProp fields were removed in CUDA 13).
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <stdexcept>
#include <string>

namespace gru_cuda {
namespace {

void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess) {
    throw std::runtime_error(std::string("cuda_device_capacity: ") + what +
                             " failed: " + cudaGetErrorString(err));
  }
}

int attribute(cudaDeviceAttr attr, int device, const char* name) {
  int value = 0;
  check_cuda(cudaDeviceGetAttribute(&value, attr, device), name);
  return value;
}

}  // namespace

pybind11::dict cuda_device_capacity(int device) {
  int count = 0;
  check_cuda(cudaGetDeviceCount(&count), "cudaGetDeviceCount");
  if (device < 0 || device >= count) {
    throw pybind11::value_error("cuda_device_capacity: device must be in [0, " +
                                std::to_string(count) + "), got " + std::to_string(device));
  }
  cudaDeviceProp prop;
  check_cuda(cudaGetDeviceProperties(&prop, device), "cudaGetDeviceProperties");

  pybind11::dict info;
  info["name"] = std::string(prop.name);
  const int major = attribute(cudaDevAttrComputeCapabilityMajor, device, "compute capability");
  const int minor = attribute(cudaDevAttrComputeCapabilityMinor, device, "compute capability");
  info["compute_capability"] = pybind11::make_tuple(major, minor);
  info["sm_count"] = attribute(cudaDevAttrMultiProcessorCount, device, "SM count");
  info["total_memory_bytes"] = static_cast<unsigned long long>(prop.totalGlobalMem);
  info["shared_memory_per_block"] =
      attribute(cudaDevAttrMaxSharedMemoryPerBlock, device, "shared memory per block");
  info["shared_memory_per_block_optin"] =
      attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device, "opt-in shared memory");
  info["shared_memory_per_sm"] =
      attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, device, "shared memory per SM");
  info["reserved_shared_memory_per_block"] =
      attribute(cudaDevAttrReservedSharedMemoryPerBlock, device, "reserved shared memory");
  info["registers_per_sm"] =
      attribute(cudaDevAttrMaxRegistersPerMultiprocessor, device, "registers per SM");
  info["registers_per_block"] =
      attribute(cudaDevAttrMaxRegistersPerBlock, device, "registers per block");
  info["max_threads_per_sm"] =
      attribute(cudaDevAttrMaxThreadsPerMultiProcessor, device, "threads per SM");
  info["max_threads_per_block"] =
      attribute(cudaDevAttrMaxThreadsPerBlock, device, "threads per block");
  info["max_blocks_per_sm"] =
      attribute(cudaDevAttrMaxBlocksPerMultiprocessor, device, "blocks per SM");
  info["warp_size"] = attribute(cudaDevAttrWarpSize, device, "warp size");
  info["l2_cache_bytes"] = attribute(cudaDevAttrL2CacheSize, device, "L2 size");
  info["persisting_l2_cache_max_bytes"] =
      attribute(cudaDevAttrMaxPersistingL2CacheSize, device, "persisting L2 size");
  info["cooperative_launch"] =
      attribute(cudaDevAttrCooperativeLaunch, device, "cooperative launch") != 0;
  info["cluster_launch"] = attribute(cudaDevAttrClusterLaunch, device, "cluster launch") != 0;
  return info;
}

}  // namespace gru_cuda
