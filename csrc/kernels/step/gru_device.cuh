// Device helpers of the stepwise kernels: the launch shape of the (rows, cols) elementwise
// kernels, and the activation-pair dispatch.
#pragma once

#include <algorithm>
#include <cstdint>

#include "common/activations.h"
#include "kernels/convert.cuh"
#include "kernels/step/gru_kernels.h"

namespace gru_cuda {
namespace kernels {

// Elementwise kernels map columns (the unit index j, or a flat inner index) to threadIdx.x, so
// that a warp reads consecutive addresses, and rows (batch, time) to threadIdx.y. 256 threads a
// block; narrow rows (small H) fill the block with several rows instead of idle lanes.
constexpr int kThreads = 256;

struct LaunchShape {
  dim3 grid, block;
};

// Returns false when there is nothing to do (no launch with an empty grid).
inline bool rows_cols_shape(int64_t rows, int64_t cols, LaunchShape& s) {
  if (rows <= 0 || cols <= 0) return false;
  const int64_t bx = cols >= kThreads ? kThreads : (cols + 31) / 32 * 32;
  const int64_t by = kThreads / bx;
  // Every column gets a thread (no column loop); 2^31-1 blocks cover any tensor that fits.
  const int64_t gx = (cols + bx - 1) / bx;
  if (gx > 0x7fffffff) return false;
  const int64_t gy = std::min<int64_t>((rows + by - 1) / by, 65535);
  s.block = dim3(static_cast<unsigned>(bx), static_cast<unsigned>(by));
  s.grid = dim3(static_cast<unsigned>(gx), static_cast<unsigned>(gy));
  return true;
}

// Visits each (row, col) of a (rows, cols) index space once, int64 indices: grid-stride over
// rows (gridDim.y is capped at 65535), one column per thread (the grid covers every column:
// up to 2^31-1 blocks of >= 32 threads). A column loop as well made ptxas spill in some kernels.
// `continue` in the body moves to the thread's next row.
#define GRU_ROWS_COLS_LOOP(row, col, rows, cols)                                              \
  for (int64_t row = blockIdx.y * static_cast<int64_t>(blockDim.y) + threadIdx.y;            \
       row < (rows); row += static_cast<int64_t>(gridDim.y) * blockDim.y)                     \
    if (const int64_t col = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;      \
        col < (cols))

// f(integral_constant<A>, integral_constant<R>) for the runtime ids: one instantiation per pair.
template <typename F>
inline void dispatch_activation_pair(int activation, int recurrent_activation, F&& f) {
  dispatch_activation(activation, [&](auto a) {
    dispatch_activation(recurrent_activation, [&](auto r) { f(a, r); });
  });
}

}  // namespace kernels
}  // namespace gru_cuda
