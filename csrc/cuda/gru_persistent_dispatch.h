// Torch-aware glue of the persistent GRU kernels (CUDA builds only): decides from the capacity
// model (csrc/kernels/persistent/persistent_capacity.h) whether the recurrence of a CUDA call runs in one
// persistent launch, runs it, and otherwise leaves the call to the stepwise loop of
// csrc/cuda/gru_cuda_impl.cpp. Also the process-wide forced path and the record of what the
// last call ran (gru_cuda.dispatch exposes both).
//
// Both entry points are called by the stepwise binding at the point where its time loop would
// start, with the tensors it has already prepared (contiguous, on the current device):
//   try_forward   after the input projection gx; true = outputs, final_state and (when saved)
//                 states and workspace are written, return them; false = run the stepwise loop
//   try_backward  after allocating the gate-gradient buffers; true = dgates, aux and grad_h0
//                 are written (the time loop and gru_finish_grad_h0 are done), go on with the
//                 weight-gradient GEMMs; false = run the stepwise loop
// They return false (nothing written) when the path is stepwise: forced, float64, does not fit,
// estimated slower, or the device refused the co-resident launch. A forced persistent path that
// does not fit raises a ValueError naming the reason.
#pragma once

#include <ATen/core/Tensor.h>

#include <string>

#include "kernels/persistent/persistent_capacity.h"

namespace gru_cuda {
namespace persistent {

// Process-wide forced path: Path::kAuto (the capacity model decides), kStepwise, kGrid or
// kCluster. Atomic; applies to every later CUDA call of any thread.
void set_forced_path(Path path);
Path forced_path();

// What the last CUDA forward / backward call ran ("stepwise", "persistent",
// "persistent_cluster"; "" before the first call) and why.
struct LastRun {
  std::string forward_path, forward_reason, backward_path, backward_reason;
};
LastRun last_run();

// Attributes of a CUDA device, read once per device.
DeviceCaps device_caps(int device);

// Clusters of `cluster_size` CTAs with `smem_bytes` of dynamic shared memory each that device
// holds at once (cudaOccupancyMaxActiveClusters on the float32 reset_after tanh/sigmoid forward
// cluster kernel); 0 where clusters are unsupported (before sm_90) or none fit.
int max_active_clusters(int device, int cluster_size, int64_t smem_bytes);

// Test hook: grid-path launches add idle CTAs beyond what the device can hold, so that the
// cooperative launch is refused and the call falls back to stepwise.
void set_debug_oversubscribe(bool on);

// Microseconds per barrier: kind "counter" (the kernels' grid barrier), "grid_sync"
// (cooperative_groups grid.sync()), "cluster" (cluster.sync(), sm_90); ctas <= 0 means one CTA
// per SM (16 for "cluster"). backoff_ns: the counter barrier's initial back-off between polls
// (0: spin, < 0: the kernels' default); other kinds ignore it. Synchronises the device.
double barrier_latency_us(int device, const std::string& kind, int ctas, int iterations,
                          int backoff_ns = -1);

// gx (T, B, 3H) input projection (b_i and input dropout applied); U (H, 3H); bias the whole
// contiguous bias ((2, 3H) when reset_after, only row 1 is read) or undefined; h0 (B, H);
// mask bool (T, B) or undefined; rdm (3, B, H) or undefined; outputs (T, B, H); final_state
// (B, H); states (T, B, H) and workspace (T, B, 4H | 3H), or both (0,) when not saved.
bool try_forward(const at::Tensor& gx, const at::Tensor& U, const at::Tensor& bias,
                 const at::Tensor& h0, const at::Tensor& mask, const at::Tensor& rdm,
                 bool reset_after, int activation, int recurrent_activation, bool go_backwards,
                 bool zero_output_for_mask, const at::Tensor& outputs,
                 const at::Tensor& final_state, const at::Tensor& states,
                 const at::Tensor& workspace);

// grad_outputs (T, B, H); grad_final_state (B, H); U (H, 3H); h0 (B, H); states (T, B, H) and
// workspace as saved by the forward; mask, rdm as in try_forward. Writes dgates (T, B, 3H)
// and aux (T, B, H), both by input time, with the stepwise binding's meaning (reset_after:
// dgates = dgh, aux = da_h; otherwise dgates = dgx = dgh, aux = r ⊙ hd_h), and grad_h0 (B, H).
bool try_backward(const at::Tensor& grad_outputs, const at::Tensor& grad_final_state,
                  const at::Tensor& U, const at::Tensor& h0, const at::Tensor& states,
                  const at::Tensor& workspace, const at::Tensor& mask, const at::Tensor& rdm,
                  bool reset_after, int activation, int recurrent_activation, bool go_backwards,
                  bool zero_output_for_mask, const at::Tensor& dgates, const at::Tensor& aux,
                  const at::Tensor& grad_h0);

}  // namespace persistent
}  // namespace gru_cuda
