// The stepwise path (CUDA builds only): the recurrence of a call as a loop over the time steps,
// each a GEMM (ATen, i.e. cuBLAS on the current stream) and fused pointwise kernels
// (csrc/kernels/step/); the peer of persistent.h, and the path for every call the persistent
// kernels do not take. Derivation in docs/algorithm.md.
//
// Every buffer is allocated before the time loop; inside it there are only GEMMs into
// preallocated buffers (through views) and kernel launches on the caller's stream: no
// allocation, no host synchronisation, so a forward pass can be captured in a CUDA graph.
#pragma once

#include "cuda/recurrence.h"

namespace gru_cuda {
namespace stepwise {

// T: the kernel type (float, double, __half or __nv_bfloat16) of the tensors' dtype. The
// forward writes outputs, final_state and, when saved, states and workspace; the backward
// writes dgates, aux and grad_h0.
template <typename T>
void run(const ForwardRecurrence& r);
template <typename T>
void run(const BackwardRecurrence& r);

}  // namespace stepwise
}  // namespace gru_cuda
