// Layouts of the (T, B, C) step tensors of the CPU ops: time-major (contiguous) or batch-major
// (the transposed view of a contiguous (B, T, C) tensor, is_batch_major in gru_cpu_ops.h). The
// per-step loops take row strides, so either layout is read and written in place.
#pragma once

#include <ATen/ATen.h>

#include "cpu/buffer_pool.h"
#include "cpu/gru_cpu_ops.h"

namespace gru_cuda {
namespace cpu {

// A new (T, B, C) tensor, stored batch-major ((B, T, C) contiguous) or time-major; from the
// buffer pool (buffer_pool.h) when `pooled`: only for the ops' own temporaries (the saved
// states and workspace take theirs directly), never for outputs or gradients.
inline at::Tensor empty_steps(int64_t T, int64_t B, int64_t C, bool batch_major,
                              const at::TensorOptions& opts, bool pooled = false) {
  auto make = [&](at::IntArrayRef sizes) {
    return pooled ? pooled_empty(sizes, opts) : at::empty(sizes, opts);
  };
  return batch_major ? make({B, T, C}).transpose(0, 1) : make({T, B, C});
}

// The (T, B, C) tensor t in dtype ct, in its own layout when that is time-major (contiguous) or
// batch-major (the loops read both through their strides): t itself, or a pooled copy.
inline at::Tensor prepared_steps(const at::Tensor& t, at::ScalarType ct) {
  const bool batch_major = is_batch_major(t);
  if (t.scalar_type() == ct && (batch_major || t.is_contiguous())) return t;
  return empty_steps(t.size(0), t.size(1), t.size(2), batch_major, t.options().dtype(ct), true)
      .copy_(t);
}

// The T * B rows of a (T, B, C) tensor as a (T * B, C) matrix, ordered b * T + t (batch_major)
// or t * B + b: a view where the storage allows it, else a copy. Row-summing products (weight
// gradients) only need both operands in the same order.
inline at::Tensor steps_as_rows(const at::Tensor& t, bool batch_major) {
  const int64_t rows = t.size(0) * t.size(1), C = t.size(2);
  return batch_major ? t.transpose(0, 1).reshape({rows, C}) : t.reshape({rows, C});
}

// The inverse of steps_as_rows: the (T, B, C) view of a contiguous (T * B, C) matrix.
inline at::Tensor rows_as_steps(const at::Tensor& rows, int64_t T, int64_t B, bool batch_major) {
  const int64_t C = rows.size(1);
  return batch_major ? rows.view({B, T, C}).transpose(0, 1) : rows.view({T, B, C});
}

}  // namespace cpu
}  // namespace gru_cuda
