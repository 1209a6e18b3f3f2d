// The persistent paths (CUDA builds only): the whole recurrence of a call in one launch of the
// grid or cluster kernels of csrc/kernels/persistent/, as path_choice.h planned it; the peer of
// stepwise.h. Also the device queries behind the Python helpers (csrc/gru_persistent_pybind.h).
#pragma once

#include <cstdint>
#include <string>

#include "cuda/path_choice.h"
#include "cuda/recurrence.h"
#include "kernels/persistent/persistent_capacity.h"

namespace gru_cuda {
namespace persistent {

// Launches choice.plans in order until the device accepts one, and records it (record_path).
// true: the recurrence ran (the forward wrote outputs, final_state and, when saved, states and
// workspace; the backward wrote dgates, aux and grad_h0, gru_finish_grad_h0 included). false:
// the device refused every co-resident launch, nothing was written, stepwise is recorded with
// the refusals, and the caller runs the stepwise loop. Any other launch error raises.
bool run(const PathChoice& choice, const ForwardRecurrence& r);
bool run(const PathChoice& choice, const BackwardRecurrence& r);

// Clusters of the cluster kernel a call would launch (the problem's dtype, direction and
// convention; fast = the tanh/sigmoid pair) that `device`, current, holds at once with
// `cluster_size` CTAs of `smem_bytes` each; memoised per device.
int active_clusters(int device, const Problem& problem, bool fast, int cluster_size,
                    int64_t smem_bytes);

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

}  // namespace persistent
}  // namespace gru_cuda
