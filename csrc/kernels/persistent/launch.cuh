// Launch of the persistent kernels (cooperative or cluster launch), the kernel choice, and the
// entry points declared in kernels/persistent/gru_persistent.h with their instantiation macros.
#pragma once

#include "kernels/persistent/cluster.cuh"
#include "kernels/persistent/grid.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// =============================================================================================
// Launch
// =============================================================================================

// The launch configuration of `clusters` clusters of `ctas` CTAs; attr holds its one attribute.
inline cudaLaunchConfig_t cluster_config(int ctas, int clusters, int64_t smem_bytes,
                                         cudaStream_t stream, cudaLaunchAttribute (&attr)[1]) {
  cudaLaunchConfig_t cfg = {};
  cfg.gridDim = dim3(unsigned(ctas) * unsigned(clusters));
  cfg.blockDim = dim3(kThreads);
  cfg.dynamicSmemBytes = size_t(smem_bytes);
  cfg.stream = stream;
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = unsigned(ctas);
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  return cfg;
}

// cudaOccupancyMaxActiveClusters for kernel fn with the attributes launch_kernel would set.
inline int max_active_clusters_of(const void* fn, int ctas, int64_t smem_bytes) {
  if (ctas < 1 || smem_bytes < 0) return 0;
  if (cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, int(smem_bytes)) !=
          cudaSuccess ||
      (ctas > 8 &&
       cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1) !=
           cudaSuccess)) {
    (void)cudaGetLastError();
    return 0;
  }
  cudaLaunchAttribute attr[1];
  // The grid must be a multiple of the cluster size; the count does not depend on it.
  const cudaLaunchConfig_t cfg = cluster_config(ctas, 1, smem_bytes, nullptr, attr);
  int clusters = 0;
  if (cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg) != cudaSuccess) {
    (void)cudaGetLastError();
    return 0;
  }
  return clusters;
}

inline LaunchStatus launch_kernel(const void* fn, const PersistentGeometry& geo, void** args,
                                  cudaStream_t stream) {
  LaunchStatus st;
  const int smem = int(geo.smem_bytes);
  cudaError_t err = cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    st.refused = err == cudaErrorInvalidValue;  // more shared memory than the device allows
    st.error = err;
    return st;
  }
  if (!geo.cluster) {
    int per_sm = 0;
    err = cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per_sm, fn, kThreads, geo.smem_bytes);
    if (err != cudaSuccess) {
      (void)cudaGetLastError();
      st.error = err;
      return st;
    }
    if (per_sm < 1) {
      st.refused = true;
      st.error = cudaErrorCooperativeLaunchTooLarge;
      return st;
    }
    // Co-residency is what the barrier needs: the cooperative launch refuses a grid the device
    // cannot hold at once instead of letting it deadlock.
    err = cudaLaunchCooperativeKernel(fn, dim3(unsigned(geo.ctas + geo.extra_ctas)),
                                      dim3(kThreads), args, size_t(smem), stream);
  } else {
    cudaLaunchAttribute attr[1];
    cudaLaunchConfig_t cfg = cluster_config(geo.ctas, geo.clusters, geo.smem_bytes, stream, attr);
    if (geo.ctas > 8) {
      err = cudaFuncSetAttribute(fn, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
      if (err != cudaSuccess) {
        (void)cudaGetLastError();
        st.refused = true;
        st.error = err;
        return st;
      }
    }
    int clusters = 0;
    err = cudaOccupancyMaxActiveClusters(&clusters, fn, &cfg);
    if (err != cudaSuccess || clusters < 1) {
      (void)cudaGetLastError();
      st.refused = true;
      st.error = err != cudaSuccess ? err : cudaErrorCooperativeLaunchTooLarge;
      return st;
    }
    err = cudaLaunchKernelExC(&cfg, fn, args);
  }
  if (err == cudaErrorCooperativeLaunchTooLarge || err == cudaErrorInvalidClusterSize) {
    (void)cudaGetLastError();  // not sticky: clear it so the caller's next check passes
    st.refused = true;
    st.error = err;
    return st;
  }
  if (err != cudaSuccess) {
    (void)cudaGetLastError();
    st.error = err;
    return st;
  }
  st.launched = true;
  return st;
}

template <typename T>
const void* forward_kernel(bool cluster, bool reset_after, bool fast) {
#define GRU_PK_PICK(KERNEL)                                                                 \
  (reset_after ? (fast ? reinterpret_cast<const void*>(&KERNEL<T, kTanh, kSigmoid, true>)   \
                       : reinterpret_cast<const void*>(&KERNEL<T, kAnyAct, kAnyAct, true>)) \
               : (fast ? reinterpret_cast<const void*>(&KERNEL<T, kTanh, kSigmoid, false>)  \
                       : reinterpret_cast<const void*>(&KERNEL<T, kAnyAct, kAnyAct, false>)))
  return cluster ? GRU_PK_PICK(forward_cluster_kernel) : GRU_PK_PICK(forward_grid_kernel);
}

template <typename T>
const void* backward_kernel(bool cluster, bool reset_after, bool fast) {
  return cluster ? GRU_PK_PICK(backward_cluster_kernel) : GRU_PK_PICK(backward_grid_kernel);
#undef GRU_PK_PICK
}

}  // namespace

}  // namespace pk

template <typename T>
LaunchStatus gru_persistent_forward(const PersistentForwardParams<T>& params,
                                    const PersistentGeometry& geometry, cudaStream_t stream) {
  PersistentForwardParams<T> p = params;
  PersistentGeometry geo = geometry;
  const bool fast = p.activation == kTanh && p.recurrent_activation == kSigmoid;
  void* args[] = {&p, &geo};
  return pk::launch_kernel(pk::forward_kernel<T>(geo.cluster != 0, p.reset_after, fast), geo,
                           args, stream);
}

template <typename T>
LaunchStatus gru_persistent_backward(const PersistentBackwardParams<T>& params,
                                     const PersistentGeometry& geometry, cudaStream_t stream) {
  PersistentBackwardParams<T> p = params;
  PersistentGeometry geo = geometry;
  const bool fast = p.activation == kTanh && p.recurrent_activation == kSigmoid;
  void* args[] = {&p, &geo};
  return pk::launch_kernel(pk::backward_kernel<T>(geo.cluster != 0, p.reset_after, fast), geo,
                           args, stream);
}

template <typename T>
int gru_persistent_forward_max_active_clusters(bool reset_after, bool fast, int cluster_size,
                                               int64_t smem_bytes) {
  return pk::max_active_clusters_of(pk::forward_kernel<T>(true, reset_after, fast), cluster_size,
                                    smem_bytes);
}

template <typename T>
int gru_persistent_backward_max_active_clusters(bool reset_after, bool fast, int cluster_size,
                                                int64_t smem_bytes) {
  return pk::max_active_clusters_of(pk::backward_kernel<T>(true, reset_after, fast),
                                    cluster_size, smem_bytes);
}

}  // namespace kernels
}  // namespace gru_cuda

#define GRU_PERSISTENT_INSTANTIATE_FORWARD(T)                                                  \
  namespace gru_cuda {                                                                         \
  namespace kernels {                                                                          \
  template LaunchStatus gru_persistent_forward<T>(const PersistentForwardParams<T>&,           \
                                                  const PersistentGeometry&, cudaStream_t);    \
  template int gru_persistent_forward_max_active_clusters<T>(bool, bool, int, int64_t);        \
  }                                                                                            \
  }
#define GRU_PERSISTENT_INSTANTIATE_BACKWARD(T)                                                 \
  namespace gru_cuda {                                                                         \
  namespace kernels {                                                                          \
  template LaunchStatus gru_persistent_backward<T>(const PersistentBackwardParams<T>&,         \
                                                   const PersistentGeometry&, cudaStream_t);   \
  template int gru_persistent_backward_max_active_clusters<T>(bool, bool, int, int64_t);       \
  }                                                                                            \
  }

