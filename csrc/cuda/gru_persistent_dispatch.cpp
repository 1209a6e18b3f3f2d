// The persistent path's torch-aware glue: see gru_persistent_dispatch.h for the contract and
// docs/persistent.md for the design.
#include "cuda/gru_persistent_dispatch.h"
#include "kernels/persistent/persistent_geometry.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <initializer_list>
#include <mutex>
#include <tuple>
#include <map>
#include <unordered_map>
#include <utility>
#include <vector>

#include "common/activations.h"
#include "kernels/persistent/gru_persistent.h"

namespace gru_cuda {
namespace persistent {
namespace {

namespace kn = gru_cuda::kernels;
using at::Tensor;

std::atomic<int> g_forced{static_cast<int>(Path::kAuto)};
std::atomic<bool> g_oversubscribe{false};
std::mutex g_mutex;  // guards g_last and g_caps
LastRun g_last;
std::unordered_map<int, DeviceCaps> g_caps;
// cudaOccupancyMaxActiveClusters answers by (device, kernel, cluster size, shared memory): the
// capacity model asks a few times per plan, and every call plans again.
using ClusterKey = std::tuple<int, int, int, int64_t>;
std::mutex g_cluster_mutex;
std::map<ClusterKey, int> g_clusters;

void record(bool backward, Path path, const std::string& reason) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  (backward ? g_last.backward_path : g_last.forward_path) = path_name(path);
  (backward ? g_last.backward_reason : g_last.forward_reason) = reason;
}

int attribute(cudaDeviceAttr attr, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

bool dtype_of(const Tensor& t, DType& out) {
  switch (t.scalar_type()) {
    case at::kFloat: out = DType::kFloat32; return true;
    case at::kHalf: out = DType::kFloat16; return true;
    case at::kBFloat16: out = DType::kBFloat16; return true;
    case at::kDouble: out = DType::kFloat64; return true;
    default: return false;
  }
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() && t.numel() > 0 ? static_cast<T*>(t.data_ptr()) : nullptr;
}

void check_contiguous(const Tensor& t, const char* name) {
  TORCH_CHECK(!t.defined() || t.is_contiguous(), "gru_cuda persistent path: ", name,
              " must be contiguous (internal error)");
}

kn::PersistentGeometry geometry_of(const Plan& plan, const DeviceCaps& caps) {
  kn::PersistentGeometry g = geometry_from_plan(plan);
  if (!g.cluster && g_oversubscribe.load()) {
    // More CTAs than the device can ever hold at once (<= 2048 threads per SM).
    g.extra_ctas = caps.sm_count * (2048 / kThreads) + 1 - g.ctas;
    if (g.extra_ctas < 1) g.extra_ctas = 1;
  }
  return g;
}

// The plans to try in order: the chosen one; for a cluster of 16, a cluster of 8 (a
// non-portable size the device may refuse); in automatic mode the grid path after a refused
// cluster. Plans that do not fit are left out.
std::vector<Plan> attempts(const DeviceCaps& caps, const Problem& problem, const Plan& chosen,
                           Path forced) {
  std::vector<Plan> out{chosen};
  if (chosen.path == Path::kCluster && chosen.ctas > 8) {
    DeviceCaps portable = caps;
    portable.max_cluster_size = 8;
    const Plan p8 = plan_cluster(portable, problem);
    if (p8.path == Path::kCluster) out.push_back(p8);
  }
  if (chosen.path == Path::kCluster && forced == Path::kAuto) {
    const Plan grid = plan_grid(caps, problem);
    if (grid.path == Path::kGrid && grid.est_step_us < grid.est_stepwise_step_us) {
      out.push_back(grid);
    }
  }
  return out;
}

// Clusters of the cluster kernel a call would launch (dtype, direction, convention, fast
// activation pair) held at once; memoised per device. The caller's device is current.
int active_clusters_for(int device, const Problem& problem, bool fast, int cluster_size,
                        int64_t smem_bytes) {
  const int kernel = int(problem.dtype) * 8 + (problem.backward ? 4 : 0) +
                     (problem.reset_after ? 2 : 0) + (fast ? 1 : 0);
  const ClusterKey key{device, kernel, cluster_size, smem_bytes};
  {
    const std::lock_guard<std::mutex> lock(g_cluster_mutex);
    const auto it = g_clusters.find(key);
    if (it != g_clusters.end()) return it->second;
  }
  const bool ra = problem.reset_after;
  int n = 0;
  switch (problem.dtype) {
    case DType::kFloat32:
      n = problem.backward
              ? kn::gru_persistent_backward_max_active_clusters<float>(ra, fast, cluster_size,
                                                                      smem_bytes)
              : kn::gru_persistent_forward_max_active_clusters<float>(ra, fast, cluster_size,
                                                                     smem_bytes);
      break;
    case DType::kFloat16:
      n = problem.backward
              ? kn::gru_persistent_backward_max_active_clusters<__half>(ra, fast, cluster_size,
                                                                       smem_bytes)
              : kn::gru_persistent_forward_max_active_clusters<__half>(ra, fast, cluster_size,
                                                                      smem_bytes);
      break;
    case DType::kBFloat16:
      n = problem.backward ? kn::gru_persistent_backward_max_active_clusters<__nv_bfloat16>(
                                 ra, fast, cluster_size, smem_bytes)
                           : kn::gru_persistent_forward_max_active_clusters<__nv_bfloat16>(
                                 ra, fast, cluster_size, smem_bytes);
      break;
    case DType::kFloat64:
      break;
  }
  const std::lock_guard<std::mutex> lock(g_cluster_mutex);
  g_clusters[key] = n;
  return n;
}

// The plan for a call, or stepwise (returns false) with the reason recorded. Raises for a
// forced persistent path that cannot run.
bool plan_call(const Tensor& like, const Problem& problem, bool backward, bool fast,
               DeviceCaps& caps, Plan& plan) {
  const Path forced = forced_path();
  if (forced == Path::kStepwise) {
    record(backward, Path::kStepwise, "stepwise forced");
    return false;
  }
  const int device = like.get_device();
  caps = device_caps(device);
  if (caps.cluster_launch) {
    // The cluster kernel this call would launch decides how many clusters fit at once.
    caps.max_active_clusters = [device, problem, fast](int cs, int64_t smem) {
      return active_clusters_for(device, problem, fast, cs, smem);
    };
  }
  plan = choose_path(caps, problem, forced);
  if (plan.path == Path::kStepwise) {
    TORCH_CHECK_VALUE(forced == Path::kAuto, "gru_cuda: the forced kernel path '",
                      path_name(forced), "' cannot run this ", backward ? "backward" : "forward",
                      " pass: ", plan.reason);
    record(backward, Path::kStepwise, plan.reason);
    return false;
  }
  return true;
}

// Launches the attempts in order; true once one runs. Errors other than a refusal raise.
template <typename Params, typename Launch>
bool launch_attempts(const std::vector<Plan>& plans, const DeviceCaps& caps, bool backward,
                     Params& params, const Tensor& barrier, Launch&& launch) {
  std::string refused;
  for (const Plan& plan : plans) {
    const kn::PersistentGeometry geo = geometry_of(plan, caps);
    if (!geo.cluster) barrier.zero_();  // the counter barrier starts from 0 at every launch
    params.barrier = geo.cluster ? nullptr : static_cast<unsigned long long*>(barrier.data_ptr());
    const kn::LaunchStatus st = launch(params, geo);
    if (st.launched) {
      record(backward, plan.path, plan.reason);
      return true;
    }
    if (!st.refused) C10_CUDA_CHECK(st.error);
    refused += std::string(refused.empty() ? "" : "; ") + path_name(plan.path) +
               " launch refused by the device (" + cudaGetErrorString(st.error) + ")";
  }
  record(backward, Path::kStepwise, refused + ": ran stepwise");
  return false;
}

template <typename T>
bool forward_typed(const Problem& problem, const DeviceCaps& caps,
                   const std::vector<Plan>& plans, const Tensor& gx, const Tensor& U,
                   const Tensor& bias, const Tensor& h0, const Tensor& mask, const Tensor& rdm,
                   int activation, int recurrent_activation, bool go_backwards,
                   bool zero_output_for_mask, const Tensor& outputs, const Tensor& final_state,
                   const Tensor& states, const Tensor& workspace) {
  const int64_t B = problem.B, H = problem.H;
  const bool saved = states.numel() > 0;
  const auto opts = gx.options();
  // Scratch made before the launch, on the current stream's allocator (graph-capturable).
  const Tensor state_scratch = saved ? Tensor() : at::empty({2, B, H}, opts);
  const Tensor ws_scratch =
      (!problem.reset_after && !saved) ? at::empty({B, 3 * H}, opts) : Tensor();
  const Tensor rh = problem.reset_after ? Tensor() : at::empty({B, H}, opts);
  const Tensor barrier = at::empty({1}, opts.dtype(at::kLong));

  kn::PersistentForwardParams<T> p;
  p.steps = problem.T;
  p.B = B;
  p.H = H;
  p.gx = ptr<T>(gx);
  p.U = ptr<T>(U);
  p.recurrent_bias = problem.reset_after && bias.defined() ? ptr<T>(bias) + 3 * H : nullptr;
  p.h0 = ptr<T>(h0);
  p.mask = mask.defined() ? static_cast<const bool*>(mask.data_ptr()) : nullptr;
  p.recurrent_dropout = ptr<T>(rdm);
  p.outputs = ptr<T>(outputs);
  p.states = saved ? ptr<T>(states) : nullptr;
  p.workspace = saved ? ptr<T>(workspace) : nullptr;
  p.final_state = ptr<T>(final_state);
  p.state_scratch = ptr<T>(state_scratch);
  p.ws_scratch = ptr<T>(ws_scratch);
  p.rh = ptr<T>(rh);
  p.activation = activation;
  p.recurrent_activation = recurrent_activation;
  p.reset_after = problem.reset_after;
  p.go_backwards = go_backwards;
  p.zero_output_for_mask = zero_output_for_mask;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return launch_attempts(plans, caps, false, p, barrier,
                         [&](const kn::PersistentForwardParams<T>& params,
                             const kn::PersistentGeometry& geo) {
                           return kn::gru_persistent_forward<T>(params, geo, stream);
                         });
}

template <typename T>
bool backward_typed(const Problem& problem, const DeviceCaps& caps,
                    const std::vector<Plan>& plans, const Tensor& dY, const Tensor& dS,
                    const Tensor& U, const Tensor& h0, const Tensor& states,
                    const Tensor& workspace, const Tensor& mask, const Tensor& rdm,
                    int activation, int recurrent_activation, bool go_backwards,
                    bool zero_output_for_mask, const Tensor& dgates, const Tensor& aux,
                    const Tensor& grad_h0) {
  const int64_t B = problem.B, H = problem.H;
  const auto fopts = dY.options().dtype(at::kFloat);
  const Tensor dh_part = at::empty({B, H}, fopts);
  const Tensor dcarry =
      mask.defined() && !zero_output_for_mask ? at::zeros({B, H}, fopts) : Tensor();
  const Tensor barrier = at::empty({1}, dY.options().dtype(at::kLong));

  kn::PersistentBackwardParams<T> p;
  p.steps = problem.T;
  p.B = B;
  p.H = H;
  p.grad_outputs = ptr<T>(dY);
  p.grad_final_state = ptr<T>(dS);
  p.U = ptr<T>(U);
  p.h0 = ptr<T>(h0);
  p.states = ptr<T>(states);
  p.workspace = ptr<T>(workspace);
  p.mask = mask.defined() ? static_cast<const bool*>(mask.data_ptr()) : nullptr;
  p.recurrent_dropout = ptr<T>(rdm);
  p.dgates = ptr<T>(dgates);
  p.aux = ptr<T>(aux);
  p.grad_h0 = ptr<T>(grad_h0);
  p.dh_part = ptr<float>(dh_part);
  p.dcarry = ptr<float>(dcarry);
  p.activation = activation;
  p.recurrent_activation = recurrent_activation;
  p.reset_after = problem.reset_after;
  p.go_backwards = go_backwards;
  p.zero_output_for_mask = zero_output_for_mask;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return launch_attempts(plans, caps, true, p, barrier,
                         [&](const kn::PersistentBackwardParams<T>& params,
                             const kn::PersistentGeometry& geo) {
                           return kn::gru_persistent_backward<T>(params, geo, stream);
                         });
}

}  // namespace

void set_forced_path(Path path) { g_forced.store(static_cast<int>(path)); }

Path forced_path() { return static_cast<Path>(g_forced.load()); }

LastRun last_run() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  return g_last;
}

void set_debug_oversubscribe(bool on) { g_oversubscribe.store(on); }

DeviceCaps device_caps(int device) {
  {
    const std::lock_guard<std::mutex> lock(g_mutex);
    const auto it = g_caps.find(device);
    if (it != g_caps.end()) return it->second;
  }
  DeviceCaps c;
  c.sm_count = attribute(cudaDevAttrMultiProcessorCount, device);
  c.cc_major = attribute(cudaDevAttrComputeCapabilityMajor, device);
  c.cc_minor = attribute(cudaDevAttrComputeCapabilityMinor, device);
  c.smem_per_block_optin = attribute(cudaDevAttrMaxSharedMemoryPerBlockOptin, device);
  c.smem_per_sm = attribute(cudaDevAttrMaxSharedMemoryPerMultiprocessor, device);
  c.regs_per_sm = attribute(cudaDevAttrMaxRegistersPerMultiprocessor, device);
  c.cooperative_launch = attribute(cudaDevAttrCooperativeLaunch, device) != 0;
  c.cluster_launch = attribute(cudaDevAttrClusterLaunch, device) != 0;
  const std::lock_guard<std::mutex> lock(g_mutex);
  g_caps[device] = c;
  return c;
}

int max_active_clusters(int device, int cluster_size, int64_t smem_bytes) {
  TORCH_CHECK_VALUE(cluster_size >= 1, "cluster_size must be >= 1, got ", cluster_size);
  TORCH_CHECK_VALUE(smem_bytes >= 0, "smem_bytes must be >= 0, got ", smem_bytes);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const DeviceCaps caps = device_caps(device);
  if (!caps.cluster_launch || caps.cc_major < 9) return 0;
  Problem problem;  // float32, forward, reset_after: the representative cluster kernel
  return active_clusters_for(device, problem, true, cluster_size, smem_bytes);
}

double barrier_latency_us(int device, const std::string& kind, int ctas, int iterations,
                          int backoff_ns) {
  const int k = kind == "counter" ? 0 : kind == "grid_sync" ? 1 : kind == "cluster" ? 2 : -1;
  TORCH_CHECK_VALUE(k >= 0, "barrier kind must be 'counter', 'grid_sync' or 'cluster', got '",
                    kind, "'");
  TORCH_CHECK_VALUE(iterations >= 10, "iterations must be >= 10, got ", iterations);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const DeviceCaps caps = device_caps(device);
  if (ctas <= 0) ctas = k == 2 ? 16 : caps.sm_count;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  const Tensor counter =
      at::zeros({1}, at::TensorOptions().device(at::kCUDA, device).dtype(at::kLong));
  auto* counter_p = static_cast<unsigned long long*>(counter.data_ptr());
  // The difference of two launches removes the launch cost from the per-barrier figure.
  auto timed = [&](int n) {
    counter.zero_();
    cudaEvent_t start, stop;
    C10_CUDA_CHECK(cudaEventCreate(&start));
    C10_CUDA_CHECK(cudaEventCreate(&stop));
    C10_CUDA_CHECK(cudaEventRecord(start, stream));
    const kn::LaunchStatus st =
        kn::gru_persistent_barrier_benchmark(k, ctas, n, counter_p, stream, backoff_ns);
    C10_CUDA_CHECK(cudaEventRecord(stop, stream));
    C10_CUDA_CHECK(cudaEventSynchronize(stop));
    float ms = 0.0f;
    C10_CUDA_CHECK(cudaEventElapsedTime(&ms, start, stop));
    C10_CUDA_CHECK(cudaEventDestroy(start));
    C10_CUDA_CHECK(cudaEventDestroy(stop));
    TORCH_CHECK(st.launched, "barrier benchmark launch failed: ",
                cudaGetErrorString(st.error));
    return double(ms) * 1e3;
  };
  timed(10);  // warm-up
  const int few = iterations / 10;
  const double t_many = timed(iterations);
  const double t_few = timed(few);
  return (t_many - t_few) / double(iterations - few);
}

bool try_forward(const Tensor& gx, const Tensor& U, const Tensor& bias, const Tensor& h0,
                 const Tensor& mask, const Tensor& rdm, bool reset_after, int activation,
                 int recurrent_activation, bool go_backwards, bool zero_output_for_mask,
                 const Tensor& outputs, const Tensor& final_state, const Tensor& states,
                 const Tensor& workspace) {
  Problem problem;
  problem.T = gx.size(0);
  problem.B = gx.size(1);
  problem.H = U.size(0);
  problem.reset_after = reset_after;
  problem.recurrent_dropout = rdm.defined();
  problem.backward = false;
  if (!dtype_of(gx, problem.dtype)) return false;
  DeviceCaps caps;
  Plan plan;
  const bool fast = activation == kTanh && recurrent_activation == kSigmoid;
  if (!plan_call(gx, problem, false, fast, caps, plan)) return false;
  const std::initializer_list<std::pair<const Tensor*, const char*>> inputs = {
      {&gx, "gx"},           {&U, "U"},
      {&bias, "bias"},       {&h0, "h0"},
      {&mask, "mask"},       {&rdm, "rdm"},
      {&outputs, "outputs"}, {&final_state, "final_state"},
      {&states, "states"},   {&workspace, "workspace"}};
  for (const auto& [t, name] : inputs) check_contiguous(*t, name);
  const std::vector<Plan> plans = attempts(caps, problem, plan, forced_path());
  switch (problem.dtype) {
    case DType::kFloat32:
      return forward_typed<float>(problem, caps, plans, gx, U, bias, h0, mask, rdm, activation,
                                  recurrent_activation, go_backwards, zero_output_for_mask,
                                  outputs, final_state, states, workspace);
    case DType::kFloat16:
      return forward_typed<__half>(problem, caps, plans, gx, U, bias, h0, mask, rdm, activation,
                                   recurrent_activation, go_backwards, zero_output_for_mask,
                                   outputs, final_state, states, workspace);
    case DType::kBFloat16:
      return forward_typed<__nv_bfloat16>(problem, caps, plans, gx, U, bias, h0, mask, rdm,
                                          activation, recurrent_activation, go_backwards,
                                          zero_output_for_mask, outputs, final_state, states,
                                          workspace);
    case DType::kFloat64:
      break;  // choose_path never plans a persistent float64 run
  }
  return false;
}

bool try_backward(const Tensor& grad_outputs, const Tensor& grad_final_state, const Tensor& U,
                  const Tensor& h0, const Tensor& states, const Tensor& workspace,
                  const Tensor& mask, const Tensor& rdm, bool reset_after, int activation,
                  int recurrent_activation, bool go_backwards, bool zero_output_for_mask,
                  const Tensor& dgates, const Tensor& aux, const Tensor& grad_h0) {
  Problem problem;
  problem.T = grad_outputs.size(0);
  problem.B = grad_outputs.size(1);
  problem.H = U.size(0);
  problem.reset_after = reset_after;
  problem.recurrent_dropout = rdm.defined();
  problem.backward = true;
  if (!dtype_of(grad_outputs, problem.dtype)) return false;
  DeviceCaps caps;
  Plan plan;
  const bool fast = activation == kTanh && recurrent_activation == kSigmoid;
  if (!plan_call(grad_outputs, problem, true, fast, caps, plan)) return false;
  const std::initializer_list<std::pair<const Tensor*, const char*>> inputs = {
      {&grad_outputs, "grad_outputs"}, {&grad_final_state, "grad_final_state"},
      {&U, "U"},                       {&h0, "h0"},
      {&states, "states"},             {&workspace, "workspace"},
      {&mask, "mask"},                 {&rdm, "rdm"},
      {&dgates, "dgates"},             {&aux, "aux"},
      {&grad_h0, "grad_h0"}};
  for (const auto& [t, name] : inputs) check_contiguous(*t, name);
  const std::vector<Plan> plans = attempts(caps, problem, plan, forced_path());
  switch (problem.dtype) {
    case DType::kFloat32:
      return backward_typed<float>(problem, caps, plans, grad_outputs, grad_final_state, U, h0,
                                   states, workspace, mask, rdm, activation,
                                   recurrent_activation, go_backwards, zero_output_for_mask,
                                   dgates, aux, grad_h0);
    case DType::kFloat16:
      return backward_typed<__half>(problem, caps, plans, grad_outputs, grad_final_state, U,
                                    h0, states, workspace, mask, rdm, activation,
                                    recurrent_activation, go_backwards, zero_output_for_mask,
                                    dgates, aux, grad_h0);
    case DType::kBFloat16:
      return backward_typed<__nv_bfloat16>(problem, caps, plans, grad_outputs,
                                           grad_final_state, U, h0, states, workspace, mask,
                                           rdm, activation, recurrent_activation, go_backwards,
                                           zero_output_for_mask, dgates, aux, grad_h0);
    case DType::kFloat64:
      break;
  }
  return false;
}

}  // namespace persistent
}  // namespace gru_cuda
