// The kernel path of a CUDA call: see path_choice.h.
#include "cuda/path_choice.h"

#include <ATen/Context.h>
#include <c10/cuda/CUDAException.h>
#include <c10/util/Exception.h>
#include <cuda_runtime_api.h>

#include <atomic>
#include <mutex>
#include <unordered_map>

#include "common/activations.h"
#include "cuda/persistent.h"

namespace gru_cuda {
namespace {

using persistent::DeviceCaps;
using persistent::DType;
using persistent::Plan;
using persistent::Problem;

std::atomic<int> g_forced{static_cast<int>(Path::kAuto)};
std::atomic<int> g_forced_product{static_cast<int>(Product::kAuto)};
std::mutex g_mutex;  // guards g_last and g_caps
LastRun g_last;
std::unordered_map<int, DeviceCaps> g_caps;

int attribute(cudaDeviceAttr attr, int device) {
  int value = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&value, attr, device));
  return value;
}

bool dtype_of(const at::Tensor& t, DType& out) {
  switch (t.scalar_type()) {
    case at::kFloat: out = DType::kFloat32; return true;
    case at::kHalf: out = DType::kFloat16; return true;
    case at::kBFloat16: out = DType::kBFloat16; return true;
    case at::kDouble: out = DType::kFloat64; return true;
    default: return false;
  }
}

// The persistent launches to try in order (see PathChoice); plans that do not fit are left out.
std::vector<Plan> attempts(const DeviceCaps& caps, const Problem& problem, const Plan& chosen,
                           Path forced) {
  std::vector<Plan> out{chosen};
  if (chosen.path == Path::kCluster && chosen.ctas > 8) {
    DeviceCaps portable = caps;
    portable.max_cluster_size = 8;
    const Plan p8 = persistent::plan_cluster(portable, problem, chosen.product);
    if (p8.path == Path::kCluster) out.push_back(p8);
  }
  if (chosen.path == Path::kCluster && forced == Path::kAuto) {
    const Plan grid = persistent::plan_path(caps, problem, Path::kGrid, forced_product());
    if (grid.path == Path::kGrid && grid.est_step_us < grid.est_stepwise_step_us) {
      out.push_back(grid);
    }
  }
  return out;
}

// `like` is the recurrence's (T, B, ·) input: gx forward, grad_outputs backward.
PathChoice choose(const RecurrentCell& cell, const at::Tensor& like, bool backward) {
  PathChoice choice;
  Problem& problem = choice.problem;
  problem.T = like.size(0);
  problem.B = like.size(1);
  problem.H = cell.U.size(0);
  problem.reset_after = cell.reset_after;
  problem.recurrent_dropout = cell.rdm.defined();
  problem.backward = backward;
  // TF32 only where the user allows it for matrix products (torch.backends.cuda.matmul).
  problem.allow_tf32 = at::globalContext().allowTF32CuBLAS();
  // check_cuda_input admits only these four dtypes; for any other nothing would be recorded.
  if (!dtype_of(like, problem.dtype)) return choice;
  const Path forced = forced_path();
  if (forced == Path::kStepwise) {
    record_path(backward, Path::kStepwise, "stepwise forced");
    return choice;
  }
  const int device = like.get_device();
  choice.caps = device_caps(device);
  if (choice.caps.cluster_launch) {
    // The cluster kernel this call would launch decides how many clusters fit at once.
    const bool fast = cell.activation == kTanh && cell.recurrent_activation == kSigmoid;
    choice.caps.max_active_clusters = [device, problem, fast](int cs, int64_t smem) {
      return persistent::active_clusters(device, problem, fast, cs, smem);
    };
  }
  const Plan plan = persistent::choose_path(choice.caps, problem, forced, forced_product());
  if (plan.path == Path::kStepwise) {
    TORCH_CHECK_VALUE(forced == Path::kAuto, "gru_cuda: the forced kernel path '",
                      path_name(forced), "' cannot run this ", backward ? "backward" : "forward",
                      " pass: ", plan.reason);
    record_path(backward, Path::kStepwise, plan.reason);
    return choice;
  }
  choice.path = plan.path;
  choice.plans = attempts(choice.caps, problem, plan, forced);
  return choice;
}

}  // namespace

void set_forced_path(Path path) { g_forced.store(static_cast<int>(path)); }

Path forced_path() { return static_cast<Path>(g_forced.load()); }

void set_forced_product(Product product) { g_forced_product.store(static_cast<int>(product)); }

Product forced_product() { return static_cast<Product>(g_forced_product.load()); }

LastRun last_run() {
  const std::lock_guard<std::mutex> lock(g_mutex);
  return g_last;
}

void record_path(bool backward, Path path, const std::string& reason, Product product) {
  const std::lock_guard<std::mutex> lock(g_mutex);
  (backward ? g_last.backward_path : g_last.forward_path) = path_name(path);
  (backward ? g_last.backward_reason : g_last.forward_reason) = reason;
  (backward ? g_last.backward_product : g_last.forward_product) =
      path == Path::kStepwise ? "" : persistent::product_name(product);
}

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

PathChoice choose_path(const ForwardRecurrence& r) { return choose(r.cell, r.gx, false); }

PathChoice choose_path(const BackwardRecurrence& r) {
  return choose(r.cell, r.grad_outputs, true);
}

}  // namespace gru_cuda
