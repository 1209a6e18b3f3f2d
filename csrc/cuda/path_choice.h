// The kernel path of a CUDA call (CUDA builds only), decided in one place: the process-wide
// forced path (gru_cuda.dispatch.set_path / force_path), the dtype rules and the capacity model
// (csrc/kernels/persistent/persistent_capacity.h). Also the record of what the last call ran
// and why (gru_cuda.dispatch.last_path). The op implementation (gru_cuda_impl.cpp) asks
// choose_path and runs the answer with stepwise.h or persistent.h; docs/persistent.md has the
// design.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>
#include <vector>

#include "cuda/recurrence.h"
#include "kernels/persistent/persistent_capacity.h"

namespace gru_cuda {

using persistent::Path;
using persistent::Product;

// Process-wide forced path: Path::kAuto (the capacity model decides), kStepwise, kGrid or
// kCluster. Atomic; applies to every later CUDA call of any thread.
void set_forced_path(Path path);
Path forced_path();

// Process-wide forced recurrent product of the persistent paths: Product::kAuto (the capacity
// model decides among those that apply), kSimt, kTensorCore, kTf32 or k3xTf32. A forced product
// that cannot run a persistent call (wrong dtype, TF32 not allowed, does not fit) makes a forced
// persistent path raise and automatic dispatch choose another path.
void set_forced_product(Product product);
Product forced_product();

// What the last CUDA forward / backward call ran ("stepwise", "persistent",
// "persistent_cluster"; "" before the first call), why, and the persistent path's recurrent
// product ("simt", "tensor_core", "tf32", "3xtf32"; "" for stepwise).
struct LastRun {
  std::string forward_path, forward_reason, backward_path, backward_reason;
  std::string forward_product, backward_product;
};
LastRun last_run();
void record_path(bool backward, Path path, const std::string& reason,
                 Product product = Product::kAuto);

// Attributes of a CUDA device, read once per device.
persistent::DeviceCaps device_caps(int device);

// The path of one recurrence. kStepwise: the reason is recorded already. kGrid / kCluster:
// `plans` are the persistent launches to try in order (the chosen plan; for a cluster of 16 a
// cluster of 8, a size the device may refuse; in automatic mode the grid path after a refused
// cluster), and persistent::run records the one that runs, or stepwise when the device refuses
// them all.
struct PathChoice {
  Path path = Path::kStepwise;
  persistent::Problem problem;
  persistent::DeviceCaps caps;  // the device as the plans saw it
  std::vector<persistent::Plan> plans;
};

// Stepwise when forced; the capacity model's choice (persistent::choose_path) otherwise, which
// refuses float64 and whatever does not fit or is estimated slower. A forced persistent path
// that cannot run raises a ValueError naming the reason; nothing is recorded then.
PathChoice choose_path(const ForwardRecurrence& r);
PathChoice choose_path(const BackwardRecurrence& r);

}  // namespace gru_cuda
