// Launchers of the persistent GRU kernels: torch-free (raw pointers, sizes, a stream), like
// csrc/kernels/step/gru_kernels.h. One launch runs the whole recurrence of a forward or backward
// pass, after the caller's input projection (forward) and before its weight-gradient GEMMs
// (backward). Geometry comes from the capacity model (csrc/kernels/persistent/persistent_capacity.h).
//
// Conventions (as gru_kernels.h): T is the storage dtype, here float, __half or __nv_bfloat16
// (float64 runs stepwise); every accumulation runs in fp32. The recurrent product runs as the
// geometry's `product` says: fp32 FMA on the SIMT lanes, or mma.sync on tensor cores (16-bit
// operands for float16/bfloat16, TF32 or error-compensated 3xTF32 for float32); the pointwise
// part is always fp32. Pointers are to dense row-major blocks with the shape given next to
// each field; B = batch, H = units, "(B, H)" is element (b, j) at p[b * H + j]; nullable
// pointers say so. Step s = 0..T-1 in processing order reads input time τ(s) = s, or T-1-s
// with go_backwards. Activation ids are those of csrc/common/activations.h: the pair
// (tanh, sigmoid) runs a specialised kernel, every other pair a kernel that switches on the
// ids at run time (the pointwise part is a small share of a persistent step).
//
// The launchers never synchronise. They return a LaunchStatus: `launched`, or not launched
// because the device refused to make the grid (or a cluster) co-resident — the caller then
// falls back to the stepwise path — or another CUDA error.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

namespace gru_cuda {
namespace kernels {

// Launch geometry, from persistent::Plan (see persistent_capacity.h for the meaning).
struct PersistentGeometry {
  int cluster = 0;   // 0: grid path (cooperative launch); 1: cluster path (sm_90)
  int J = 0;         // units per CTA, a multiple of 4
  int kp = 0;        // H padded to a multiple of 64
  int ldh = 0;       // floats between staged operand rows (kp, or kp + 8 / kp + 4: see product)
  // The recurrent product, persistent::Product: 0 simt (fp32 FMA), 1 tensor_core (mma.sync on
  // float16/bfloat16 operands), 2 tf32, 3 3xtf32 (float32 inputs on TF32 tensor cores).
  int product = 0;
  int bt = 0;        // batch rows per tile: a multiple of 8, or of 2 below 8
  int ng = 0;        // staged operands per row (the widest phase)
  int ctas = 0;      // grid path: CTAs in the grid; cluster path: CTAs per cluster
  int clusters = 0;  // cluster path: number of clusters (batch tiles of bt rows)
  int64_t smem_bytes = 0;
  // Test hook: launch this many extra (idle) CTAs on the grid path, so that a grid larger than
  // the device can hold makes the cooperative launch refuse. 0 in normal use.
  int extra_ctas = 0;
};

template <typename T>
struct PersistentForwardParams {
  int64_t steps = 0, B = 0, H = 0;  // T, B, H
  // (T, B, 3H) input projection by input time, input biases and input dropout applied.
  const T* gx = nullptr;
  // (H, 3H) recurrent kernel, Keras layout, column blocks [z | r | h].
  const T* U = nullptr;
  // (3H,) recurrent bias b_h = bias[1] (reset_after only), or nullptr.
  const T* recurrent_bias = nullptr;
  // (B, H) initial state.
  const T* h0 = nullptr;
  // (T, B) bool by input time, true = valid; nullptr = all valid.
  const bool* mask = nullptr;
  // (3, B, H) recurrent dropout masks q_z, q_r, q_h; nullptr = none.
  const T* recurrent_dropout = nullptr;
  // (T, B, H) outputs in processing order.
  T* outputs = nullptr;
  // (T, B, H) the carried state after each step, or nullptr (not saved).
  T* states = nullptr;
  // (T, B, 4H) [a_z | a_r | a_h | gh_h] (reset_after) or (T, B, 3H) [a_z | a_r | a_h], or
  // nullptr (not saved).
  T* workspace = nullptr;
  // (B, H) the state after the last step.
  T* final_state = nullptr;
  // (2, B, H) ping-pong state when states == nullptr, else unused (nullptr).
  T* state_scratch = nullptr;
  // (B, 3H) reset_after=False without workspace: a_z/a_r/a_h of the current step; else nullptr.
  T* ws_scratch = nullptr;
  // (B, H) r ⊙ hd_h exchanged between the two phases of a reset_after=False step (grid path);
  // nullptr otherwise.
  T* rh = nullptr;
  // One zeroed 64-bit counter (grid path barrier); nullptr on the cluster path.
  unsigned long long* barrier = nullptr;
  int activation = 0, recurrent_activation = 1;
  bool reset_after = true;
  bool go_backwards = false;
  bool zero_output_for_mask = false;
};

template <typename T>
struct PersistentBackwardParams {
  int64_t steps = 0, B = 0, H = 0;  // T, B, H
  // (T, B, H) gradient w.r.t. outputs, processing order.
  const T* grad_outputs = nullptr;
  // (B, H) gradient w.r.t. the final state.
  const T* grad_final_state = nullptr;
  // (H, 3H) recurrent kernel.
  const T* U = nullptr;
  // (B, H) initial state.
  const T* h0 = nullptr;
  // (T, B, H) states and (T, B, 4H | 3H) workspace as saved by the forward pass.
  const T* states = nullptr;
  const T* workspace = nullptr;
  // (T, B) bool by input time, or nullptr.
  const bool* mask = nullptr;
  // (3, B, H) recurrent dropout masks, or nullptr.
  const T* recurrent_dropout = nullptr;
  // (T, B, 3H) gate gradients by input time τ: reset_after dgh = [da_z | da_r | da_h ⊙ r];
  // reset_after=False dgx = dgh = [da_z | da_r | da_h]. Zero on masked rows.
  T* dgates = nullptr;
  // (T, B, H) by input time: reset_after da_h (dgx's h block); reset_after=False r ⊙ hd_h (the
  // left operand of grad U_h). Zero on masked rows.
  T* aux = nullptr;
  // (B, H) gradient w.r.t. h0.
  T* grad_h0 = nullptr;
  // (B, H) fp32 scratch: the elementwise part of the running state gradient.
  float* dh_part = nullptr;
  // (B, H) fp32, zeroed: gradient carried into outputs repeated by masked steps; nullptr
  // unless there is a mask and zero_output_for_mask is false.
  float* dcarry = nullptr;
  // One zeroed 64-bit counter (grid path), or nullptr (cluster path).
  unsigned long long* barrier = nullptr;
  int activation = 0, recurrent_activation = 1;
  bool reset_after = true;
  bool go_backwards = false;
  bool zero_output_for_mask = false;
};

struct LaunchStatus {
  bool launched = false;
  bool refused = false;  // not launched: the grid/cluster cannot be co-resident
  cudaError_t error = cudaSuccess;
};

template <typename T>
LaunchStatus gru_persistent_forward(const PersistentForwardParams<T>& params,
                                    const PersistentGeometry& geometry, cudaStream_t stream);
template <typename T>
LaunchStatus gru_persistent_backward(const PersistentBackwardParams<T>& params,
                                     const PersistentGeometry& geometry, cudaStream_t stream);

// Clusters of `cluster_size` CTAs with `smem_bytes` of dynamic shared memory each that the
// current device holds at once for the cluster kernel gru_persistent_forward / _backward would
// launch with (reset_after, fast = tanh/sigmoid): cudaOccupancyMaxActiveClusters after raising
// the kernel's dynamic shared-memory limit. 0 when none fits or a query fails (the error is
// cleared, nothing is launched).
template <typename T>
int gru_persistent_forward_max_active_clusters(bool reset_after, bool fast, int cluster_size,
                                               int64_t smem_bytes);
template <typename T>
int gru_persistent_backward_max_active_clusters(bool reset_after, bool fast, int cluster_size,
                                                int64_t smem_bytes);

// Barrier microbenchmark: one launch of `ctas` CTAs (grid kinds: cooperative, all SMs) or of
// one cluster of `ctas` CTAs (kind 2, sm_90), each running `iterations` barriers back to back.
//   kind 0: the counter barrier of the persistent kernels; 1: cooperative_groups grid.sync();
//   2: cluster.sync().
// counter: one zeroed 64-bit counter (kind 0; the others ignore it). backoff_ns: the counter
// barrier's initial back-off between polls (0: spin; < 0: the kernels' default,
// kGridBarrierBackoffNs in persistent_kernels.cuh); the other kinds ignore it.
LaunchStatus gru_persistent_barrier_benchmark(int kind, int ctas, int iterations,
                                              unsigned long long* counter, cudaStream_t stream,
                                              int backoff_ns = -1);

}  // namespace kernels
}  // namespace gru_cuda
