// Small kernels around the time loop: dropout-mask products, the gather of previous states for
// grad U, the final grad_h0, and deterministic column sums for grad_bias.
#include "kernels/step/gru_device.cuh"

namespace gru_cuda {
namespace kernels {
namespace {

template <typename T>
__global__ void __launch_bounds__(kThreads)
    finish_grad_h0_kernel(T* grad_h0, const acc_t<T>* dh_part, const T* dhg,
                          int64_t dhg_gate_stride, int dhg_gates, const T* q, int64_t B,
                          int64_t H) {
  const int64_t BH = B * H;
  GRU_ROWS_COLS_LOOP(b, j, B, H) {
    const int64_t i = b * H + j;
    acc_t<T> dh = dh_part[i];
#pragma unroll
    for (int g = 0; g < 3; ++g) {
      if (g < dhg_gates) {
        acc_t<T> v = to_acc(dhg[g * dhg_gate_stride + i]);
        if (q != nullptr) v *= to_acc(q[g * BH + i]);
        dh += v;
      }
    }
    grad_h0[i] = from_acc<T>(dh);
  }
}

// No __restrict__: out may alias in (in-place masking of grad_x).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    mask_multiply_kernel(T* out, const T* in, const T* m, int64_t groups, int64_t outer,
                         int64_t inner, bool accumulate) {
  GRU_ROWS_COLS_LOOP(row, c, groups * outer, inner) {
    const int64_t g = row / outer;
    const int64_t t = row - g * outer;
    acc_t<T> v = to_acc(in[t * inner + c]) * to_acc(m[g * inner + c]);
    if (accumulate) v = to_acc(out[row * inner + c]) + v;
    out[row * inner + c] = from_acc<T>(v);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    gather_previous_states_kernel(T* hp, const T* h0, const T* states, const T* q, int64_t T_,
                                  int64_t BH, bool go_backwards) {
  GRU_ROWS_COLS_LOOP(tau, c, T_, BH) {
    const int64_t s = go_backwards ? T_ - 1 - tau : tau;
    const T* src = s == 0 ? h0 : states + (s - 1) * BH;
    T v = src[c];
    if (q != nullptr) v = from_acc<T>(to_acc(v) * to_acc(q[c]));
    hp[tau * BH + c] = v;
  }
}

// Column sums in two passes: pass 1 reduces row chunks of 32 columns per block (8 row lanes, a
// fixed order, then a fixed in-block combination); pass 2 adds the chunk partials in chunk order.
constexpr int kSumCols = 32;
constexpr int kSumLanes = 8;
constexpr int64_t kSumMinRowsPerChunk = 256;
constexpr int64_t kSumMaxChunks = 128;

int64_t column_sum_chunks(int64_t rows) {
  if (rows <= 0) return 0;
  return std::min<int64_t>(kSumMaxChunks, (rows + kSumMinRowsPerChunk - 1) / kSumMinRowsPerChunk);
}

template <typename T>
__global__ void __launch_bounds__(kSumCols* kSumLanes)
    column_sum_chunks_kernel(T* out, acc_t<T>* partial, const T* in, int64_t rows, int64_t cols,
                             int64_t ld, int64_t chunk_rows) {
  __shared__ acc_t<T> lane_sums[kSumLanes][kSumCols];
  const int64_t c = blockIdx.x * static_cast<int64_t>(kSumCols) + threadIdx.x;
  const int64_t r0 = blockIdx.y * chunk_rows;
  const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
  acc_t<T> sum = acc_t<T>(0);
  if (c < cols) {
    for (int64_t r = r0 + threadIdx.y; r < r1; r += kSumLanes) sum += to_acc(in[r * ld + c]);
  }
  lane_sums[threadIdx.y][threadIdx.x] = sum;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    acc_t<T> total = lane_sums[0][threadIdx.x];
#pragma unroll
    for (int l = 1; l < kSumLanes; ++l) total += lane_sums[l][threadIdx.x];
    if (partial == nullptr) {
      out[c] = from_acc<T>(total);
    } else {
      partial[blockIdx.y * cols + c] = total;
    }
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    column_sum_partials_kernel(T* out, const acc_t<T>* partial, int64_t chunks, int64_t cols) {
  for (int64_t c = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; c < cols;
       c += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    acc_t<T> total = acc_t<T>(0);
    for (int64_t k = 0; k < chunks; ++k) total += partial[k * cols + c];
    out[c] = from_acc<T>(total);
  }
}

}  // namespace

template <typename T>
void gru_finish_grad_h0(T* grad_h0, const acc_t<T>* dh_part, const T* dhg,
                        int64_t dhg_gate_stride, int dhg_gates, const T* recurrent_dropout,
                        int64_t B, int64_t H, cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(B, H, s)) return;
  finish_grad_h0_kernel<T><<<s.grid, s.block, 0, stream>>>(
      grad_h0, dh_part, dhg, dhg_gate_stride, dhg_gates, recurrent_dropout, B, H);
}

template <typename T>
void gru_mask_multiply(T* out, const T* in, const T* m, int64_t groups, int64_t outer,
                       int64_t inner, bool accumulate, cudaStream_t stream) {
  LaunchShape s;
  if (groups <= 0 || !rows_cols_shape(groups * outer, inner, s)) return;
  mask_multiply_kernel<T><<<s.grid, s.block, 0, stream>>>(out, in, m, groups, outer, inner,
                                                          accumulate);
}

template <typename T>
void gru_gather_previous_states(T* hp, const T* h0, const T* states, const T* q, int64_t T_,
                                int64_t B, int64_t H, bool go_backwards, cudaStream_t stream) {
  LaunchShape s;
  if (!rows_cols_shape(T_, B * H, s)) return;
  gather_previous_states_kernel<T><<<s.grid, s.block, 0, stream>>>(hp, h0, states, q, T_, B * H,
                                                                   go_backwards);
}

int64_t gru_column_sum_workspace(int64_t rows, int64_t cols) {
  const int64_t chunks = column_sum_chunks(rows);
  return chunks > 1 && cols > 0 ? chunks * cols : 0;
}

template <typename T>
void gru_column_sum(T* out, const T* in, int64_t rows, int64_t cols, int64_t ld,
                    acc_t<T>* workspace, cudaStream_t stream) {
  if (cols <= 0) return;
  const int64_t chunks = column_sum_chunks(rows);
  const unsigned col_blocks = static_cast<unsigned>((cols + kSumCols - 1) / kSumCols);
  if (chunks == 0) {  // no rows: the sums are zeros
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((cols + kThreads - 1) / kThreads, 65535));
    column_sum_partials_kernel<T><<<blocks, kThreads, 0, stream>>>(out, nullptr, 0, cols);
    return;
  }
  const int64_t chunk_rows = (rows + chunks - 1) / chunks;
  if (chunks == 1) {
    column_sum_chunks_kernel<T><<<dim3(col_blocks, 1), dim3(kSumCols, kSumLanes), 0, stream>>>(
        out, nullptr, in, rows, cols, ld, chunk_rows);
    return;
  }
  column_sum_chunks_kernel<T>
      <<<dim3(col_blocks, static_cast<unsigned>(chunks)), dim3(kSumCols, kSumLanes), 0, stream>>>(
          out, workspace, in, rows, cols, ld, chunk_rows);
  const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((cols + kThreads - 1) / kThreads, 65535));
  column_sum_partials_kernel<T><<<blocks, kThreads, 0, stream>>>(out, workspace, chunks, cols);
}

#define GRU_INSTANTIATE_UTILITIES(T)                                                          \
  template void gru_finish_grad_h0<T>(T*, const acc_t<T>*, const T*, int64_t, int, const T*,  \
                                      int64_t, int64_t, cudaStream_t);                        \
  template void gru_mask_multiply<T>(T*, const T*, const T*, int64_t, int64_t, int64_t, bool, \
                                     cudaStream_t);                                           \
  template void gru_gather_previous_states<T>(T*, const T*, const T*, const T*, int64_t,      \
                                              int64_t, int64_t, bool, cudaStream_t);          \
  template void gru_column_sum<T>(T*, const T*, int64_t, int64_t, int64_t, acc_t<T>*,         \
                                  cudaStream_t);

GRU_INSTANTIATE_UTILITIES(float)
GRU_INSTANTIATE_UTILITIES(double)
GRU_INSTANTIATE_UTILITIES(__half)
GRU_INSTANTIATE_UTILITIES(__nv_bfloat16)

}  // namespace kernels
}  // namespace gru_cuda
