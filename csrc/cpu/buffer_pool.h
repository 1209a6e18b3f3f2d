// Large buffers of the CPU ops, kept for the next call instead of going back to the system.
//
// A fresh buffer of tens of megabytes costs a page fault and a zeroed page for every 4 KiB on
// first touch: writing a fresh 50 MB buffer took ~19 ms on the 2-core reference machine, writing
// it again 2.6 ms. At B=64, T=128, H=512 the input projection alone is 50 MB, and a forward +
// backward touched ~210 MB of fresh pages per call (53K page faults). The ops therefore take
// their own temporaries (the input projection, the gate gradients) and the states and workspace
// they save for the backward from this pool. The outputs, final state and gradients are
// ordinary tensors; the saved states and workspace, which gru_forward also returns, are not:
// their storage cannot be resized (autograd and functional.gru never do).
//
// A pooled tensor is an ordinary tensor over a pooled buffer (at::from_blob with a deleter): when
// its last reference goes, the buffer returns to the pool, whichever thread drops it. The pool
// keeps at most GRU_CUDA_CPU_BUFFER_POOL_MB megabytes (default 256; 0 turns it off) of idle
// buffers, the most recently returned first; buffers under 1 MiB are left to the allocator, and
// a request takes an idle buffer of at most 5/4 of its size.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

namespace gru_cuda {
namespace cpu {

// at::empty(sizes, opts) for a CPU tensor, contiguous, its storage from the pool when it is large
// enough to be worth it (the contents are arbitrary, as at::empty's).
at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& opts);

// Bytes of idle buffers the pool holds now.
int64_t buffer_pool_idle_bytes();

// Frees every idle buffer (buffers in use return to the pool later, as usual).
void buffer_pool_release();

}  // namespace cpu
}  // namespace gru_cuda
