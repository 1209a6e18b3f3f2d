// The persistent paths: see persistent.h for the contract and docs/persistent.md for the
// design.
#include "cuda/persistent.h"

#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <initializer_list>
#include <map>
#include <mutex>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/persistent/gru_persistent.h"
#include "kernels/persistent/persistent_geometry.h"

namespace gru_cuda {
namespace persistent {
namespace {

namespace kn = gru_cuda::kernels;
using at::Tensor;

std::atomic<bool> g_oversubscribe{false};
// cudaOccupancyMaxActiveClusters answers by (device, kernel, cluster size, shared memory): the
// capacity model asks a few times per plan, and every call plans again.
using ClusterKey = std::tuple<int, int, int, int64_t>;
std::mutex g_cluster_mutex;
std::map<ClusterKey, int> g_clusters;

template <typename T>
struct Type {
  using type = T;
};

// f(Type<T>{}) with T the kernel type of a persistent dtype; R{} for float64, which no
// persistent plan has.
template <typename R, typename F>
R with_kernel_type(DType dtype, F&& f) {
  switch (dtype) {
    case DType::kFloat32: return f(Type<float>{});
    case DType::kFloat16: return f(Type<__half>{});
    case DType::kBFloat16: return f(Type<__nv_bfloat16>{});
    case DType::kFloat64: break;
  }
  return R{};
}

template <typename T>
T* ptr(const Tensor& t) {
  return t.defined() && t.numel() > 0 ? static_cast<T*>(t.data_ptr()) : nullptr;
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

// Launches the plans in order; true once one runs. Errors other than a refusal raise.
template <typename Params, typename Launch>
bool launch_attempts(const PathChoice& choice, Params& params, const Tensor& barrier,
                     Launch&& launch) {
  const bool backward = choice.problem.backward;
  std::string refused;
  for (const Plan& plan : choice.plans) {
    const kn::PersistentGeometry geo = geometry_of(plan, choice.caps);
    if (!geo.cluster) barrier.zero_();  // the counter barrier starts from 0 at every launch
    params.barrier = geo.cluster ? nullptr : static_cast<unsigned long long*>(barrier.data_ptr());
    const kn::LaunchStatus st = launch(params, geo);
    if (st.launched) {
      record_path(backward, plan.path, plan.reason, plan.product);
      return true;
    }
    if (!st.refused) C10_CUDA_CHECK(st.error);
    refused += std::string(refused.empty() ? "" : "; ") + path_name(plan.path) +
               " launch refused by the device (" + cudaGetErrorString(st.error) + ")";
  }
  record_path(backward, Path::kStepwise, refused + ": ran stepwise");
  return false;
}

// The kernel parameters both directions share.
template <typename T, typename Params>
void set_cell(Params& p, const Problem& problem, const RecurrentCell& c) {
  p.steps = problem.T;
  p.B = problem.B;
  p.H = problem.H;
  p.U = ptr<T>(c.U);
  p.h0 = ptr<T>(c.h0);
  p.mask = c.mask.defined() ? static_cast<const bool*>(c.mask.data_ptr()) : nullptr;
  p.recurrent_dropout = ptr<T>(c.rdm);
  p.activation = c.activation;
  p.recurrent_activation = c.recurrent_activation;
  p.reset_after = problem.reset_after;
  p.go_backwards = c.go_backwards;
  p.zero_output_for_mask = c.zero_output_for_mask;
}

template <typename T>
bool forward_typed(const PathChoice& choice, const ForwardRecurrence& r) {
  const Problem& problem = choice.problem;
  const int64_t B = problem.B, H = problem.H;
  const bool saved = r.states.numel() > 0;
  const auto opts = r.gx.options();
  // Scratch made before the launch, on the current stream's allocator (graph-capturable).
  const Tensor state_scratch = saved ? Tensor() : at::empty({2, B, H}, opts);
  const Tensor ws_scratch =
      (!problem.reset_after && !saved) ? at::empty({B, 3 * H}, opts) : Tensor();
  const Tensor rh = problem.reset_after ? Tensor() : at::empty({B, H}, opts);
  const Tensor barrier = at::empty({1}, opts.dtype(at::kLong));

  kn::PersistentForwardParams<T> p;
  set_cell<T>(p, problem, r.cell);
  p.gx = ptr<T>(r.gx);
  p.recurrent_bias =
      problem.reset_after && r.bias.defined() ? ptr<T>(r.bias) + 3 * H : nullptr;
  p.outputs = ptr<T>(r.outputs);
  p.states = saved ? ptr<T>(r.states) : nullptr;
  p.workspace = saved ? ptr<T>(r.workspace) : nullptr;
  p.final_state = ptr<T>(r.final_state);
  p.state_scratch = ptr<T>(state_scratch);
  p.ws_scratch = ptr<T>(ws_scratch);
  p.rh = ptr<T>(rh);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return launch_attempts(choice, p, barrier,
                         [&](const kn::PersistentForwardParams<T>& params,
                             const kn::PersistentGeometry& geo) {
                           return kn::gru_persistent_forward<T>(params, geo, stream);
                         });
}

template <typename T>
bool backward_typed(const PathChoice& choice, const BackwardRecurrence& r) {
  const Problem& problem = choice.problem;
  const RecurrentCell& c = r.cell;
  const int64_t B = problem.B, H = problem.H;
  const auto fopts = r.grad_outputs.options().dtype(at::kFloat);
  const Tensor dh_part = at::empty({B, H}, fopts);
  const Tensor dcarry =
      c.mask.defined() && !c.zero_output_for_mask ? at::zeros({B, H}, fopts) : Tensor();
  const Tensor barrier = at::empty({1}, r.grad_outputs.options().dtype(at::kLong));

  kn::PersistentBackwardParams<T> p;
  set_cell<T>(p, problem, c);
  p.grad_outputs = ptr<T>(r.grad_outputs);
  p.grad_final_state = ptr<T>(r.grad_final_state);
  p.states = ptr<T>(r.states);
  p.workspace = ptr<T>(r.workspace);
  p.dgates = ptr<T>(r.dgates);
  p.aux = ptr<T>(r.aux);
  p.grad_h0 = ptr<T>(r.grad_h0);
  p.dh_part = ptr<float>(dh_part);
  p.dcarry = ptr<float>(dcarry);
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream().stream();
  return launch_attempts(choice, p, barrier,
                         [&](const kn::PersistentBackwardParams<T>& params,
                             const kn::PersistentGeometry& geo) {
                           return kn::gru_persistent_backward<T>(params, geo, stream);
                         });
}

using Named = std::initializer_list<std::pair<const Tensor*, const char*>>;

void check_contiguous(Named tensors) {
  for (const auto& [t, name] : tensors) {
    TORCH_CHECK(!t->defined() || t->is_contiguous(), "gru_cuda persistent path: ", name,
                " must be contiguous (internal error)");
  }
}

}  // namespace

bool run(const PathChoice& choice, const ForwardRecurrence& r) {
  const RecurrentCell& c = r.cell;
  check_contiguous({{&r.gx, "gx"},           {&c.U, "U"},
                    {&r.bias, "bias"},       {&c.h0, "h0"},
                    {&c.mask, "mask"},       {&c.rdm, "rdm"},
                    {&r.outputs, "outputs"}, {&r.final_state, "final_state"},
                    {&r.states, "states"},   {&r.workspace, "workspace"}});
  return with_kernel_type<bool>(choice.problem.dtype, [&](auto t) {
    return forward_typed<typename decltype(t)::type>(choice, r);
  });
}

bool run(const PathChoice& choice, const BackwardRecurrence& r) {
  const RecurrentCell& c = r.cell;
  check_contiguous({{&r.grad_outputs, "grad_outputs"}, {&r.grad_final_state, "grad_final_state"},
                    {&c.U, "U"},                       {&c.h0, "h0"},
                    {&r.states, "states"},             {&r.workspace, "workspace"},
                    {&c.mask, "mask"},                 {&c.rdm, "rdm"},
                    {&r.dgates, "dgates"},             {&r.aux, "aux"},
                    {&r.grad_h0, "grad_h0"}});
  return with_kernel_type<bool>(choice.problem.dtype, [&](auto t) {
    return backward_typed<typename decltype(t)::type>(choice, r);
  });
}

int active_clusters(int device, const Problem& problem, bool fast, int cluster_size,
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
  const int n = with_kernel_type<int>(problem.dtype, [&](auto t) {
    using T = typename decltype(t)::type;
    return problem.backward
               ? kn::gru_persistent_backward_max_active_clusters<T>(ra, fast, cluster_size,
                                                                     smem_bytes)
               : kn::gru_persistent_forward_max_active_clusters<T>(ra, fast, cluster_size,
                                                                    smem_bytes);
  });
  const std::lock_guard<std::mutex> lock(g_cluster_mutex);
  g_clusters[key] = n;
  return n;
}

void set_debug_oversubscribe(bool on) { g_oversubscribe.store(on); }

int max_active_clusters(int device, int cluster_size, int64_t smem_bytes) {
  TORCH_CHECK_VALUE(cluster_size >= 1, "cluster_size must be >= 1, got ", cluster_size);
  TORCH_CHECK_VALUE(smem_bytes >= 0, "smem_bytes must be >= 0, got ", smem_bytes);
  const c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  const DeviceCaps caps = device_caps(device);
  if (!caps.cluster_launch || caps.cc_major < 9) return 0;
  Problem problem;  // float32, forward, reset_after: the representative cluster kernel
  return active_clusters(device, problem, true, cluster_size, smem_bytes);
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

}  // namespace persistent
}  // namespace gru_cuda
