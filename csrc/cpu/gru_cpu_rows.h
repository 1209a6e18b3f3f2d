// Blocks of batch rows for the CPU recurrences (gru_cpu_forward.cpp, gru_cpu_backward.cpp).
//
// A GRU row never reads another row, so the recurrence of a block of batch rows can run all its
// steps on one thread while the other threads run theirs: no fork and join per step, and no
// thread waiting while another does the step's pointwise pass (with whole-batch products, one
// of the two passes a step needs, product or pointwise, leaves threads idle). Each block's
// products are single-threaded BLAS calls on pointers into its own rows (cpu_blas.h).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "cpu/bf16_bits.h"
#include "cpu/bf16_dot_gemm.h"
#include "cpu/cpu_blas.h"

namespace gru_cuda {
namespace cpu {

// Fewest rows a block's products are worth running single-threaded for: below it the whole
// batch runs as one block with multi-threaded products.
constexpr int64_t kMinRowsPerBlock = 4;

// A whole-batch bfloat16 product on the packed kernel is split across threads from this many
// multiply-adds per thread (~5 us of vdpbf16ps, a few times a fork and join).
constexpr int64_t kMinDotMacsPerThread = int64_t(1) << 19;

// How many blocks of rows B is split into: one per thread, each of at least kMinRowsPerBlock
// rows; one block without raw products or when already inside a parallel region.
inline int64_t row_blocks(int64_t B, bool raw_products) {
  if (!raw_products || at::in_parallel_region()) return 1;
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), B / kMinRowsPerBlock));
}

// f(b0, b1) for the row blocks of B, one block per thread.
template <typename F>
void for_each_row_block(int64_t B, bool raw_products, F&& f) {
  const int64_t blocks = row_blocks(B, raw_products);
  if (blocks <= 1) {
    f(int64_t(0), B);
    return;
  }
  at::parallel_for(0, blocks, 1, [&](int64_t s0, int64_t s1) {
    CpuBlasSingleThread single;
    for (int64_t s = s0; s < s1; ++s) f(B * s / blocks, B * (s + 1) / blocks);
  });
}

// Row-wise conversions between float32 and bfloat16 (bf16_bits.h): the per-step slices of the
// sequence-long bfloat16 buffers, converted while they are in cache (branch-free: with
// c10::BFloat16's scalar conversion these loops were the largest cost of a bfloat16 step at
// H = 128).
template <typename S>
inline void rows_to_bf16(int64_t R, int64_t n, const S* src, int64_t lds, at::BFloat16* dst,
                         int64_t ldd) {
  uint16_t* const out = reinterpret_cast<uint16_t*>(dst);
  for (int64_t r = 0; r < R; ++r) {
    const S* s = src + r * lds;
    uint16_t* d = out + r * ldd;
    for (int64_t i = 0; i < n; ++i) d[i] = bf16_bits(float(s[i]));
  }
}

template <typename D>
inline void rows_from_bf16(int64_t R, int64_t n, const at::BFloat16* src, int64_t lds, D* dst,
                           int64_t ldd) {
  const uint16_t* const in = reinterpret_cast<const uint16_t*>(src);
  for (int64_t r = 0; r < R; ++r) {
    const uint16_t* s = in + r * lds;
    D* d = dst + r * ldd;
    for (int64_t i = 0; i < n; ++i) d[i] = D(float_of_bf16_bits(s[i]));
  }
}

// W (K, N), float32 contiguous, packed in k-pairs for bf16_dot_gemm (int16 storage).
inline at::Tensor pack_bf16_pairs(const at::Tensor& W) {
  const int64_t K = W.size(0), N = W.size(1);
  at::Tensor packed =
      at::empty({(K + 1) / 2 * bf16_packed_cols(N) * 2}, W.options().dtype(at::kShort));
  bf16_pack_pairs(W.data_ptr<float>(), K, N, N, reinterpret_cast<uint16_t*>(packed.data_ptr()));
  return packed;
}

// Products of a block of rows with a weight matrix W (rows, ldw), row-major:
// C (R, N) (+)= A (R, K) . W[k0 : k0 + K, n0 : n0 + N], where w_off = k0 * ldw + n0 (the
// forward: W = U, a gate's columns; the backward: W = U^T, a gate's rows). On raw BLAS pointers
// for float (cpu_blas_available), else at::mm_out on views of the same memory (double, or a
// torch without MKL: then the batch is one block). beta is 0 or 1.
//
// bfloat16 products (W_lo set) run on the packed weight Wp with bf16_dot_gemm where it is set
// (AVX512-BF16, an even H so that every gate starts on a k-pair), else through at::mm_out,
// which runs oneDNN's bfloat16 GEMM (MKL's own bfloat16 GEMM runs at the float32 rate on CPUs
// it does not recognise: AMD's, measured); inside a row block at::mm_out runs on the calling
// thread, and its result is rounded to bfloat16 as torch.nn.GRU's is. The left operands are
// staged in bfloat16 either way.
template <typename T>
struct RowProducts {
  const T* W;
  int64_t ldw;
  const at::BFloat16* W_lo;  // W in bfloat16, or nullptr: the products run in T
  at::BFloat16* A_lo;        // (B, max K) bfloat16 staging of the left operands, or nullptr
  at::BFloat16* C_lo;        // (B, max N) bfloat16 results, or nullptr
  int64_t ld_lo;             // row stride of A_lo and C_lo
  at::TensorOptions opts;
  bool raw_f32;
  const uint16_t* Wp = nullptr;  // W packed by bf16_pack_pairs, or nullptr
  int64_t Np = 0;

  RowProducts(const T* w, int64_t ld_w, const at::BFloat16* w_lo, at::BFloat16* a_lo,
              at::BFloat16* c_lo, int64_t ld_staging, at::TensorOptions o)
      : W(w), ldw(ld_w), W_lo(w_lo), A_lo(a_lo), C_lo(c_lo), ld_lo(ld_staging), opts(o),
        raw_f32(std::is_same_v<T, float> && cpu_blas_available()) {}

  // From tensors, any of the last four undefined: w (K, ldw) contiguous in T; w_lo the same
  // in bfloat16 (oneDNN's products); a_lo / c_lo the staging buffers (B, ld_staging);
  // w_packed = pack_bf16_pairs(w) (the packed kernel's products).
  RowProducts(const at::Tensor& w, const at::Tensor& w_lo, const at::Tensor& a_lo,
              const at::Tensor& c_lo, const at::Tensor& w_packed, int64_t ld_staging)
      : RowProducts(w.data_ptr<T>(), w.size(1), bf16_ptr(w_lo), bf16_ptr(a_lo), bf16_ptr(c_lo),
                    ld_staging, w.options()) {
    if (w_packed.defined()) {
      Wp = reinterpret_cast<const uint16_t*>(w_packed.data_ptr());
      Np = bf16_packed_cols(ldw);
    }
  }

  static at::BFloat16* bf16_ptr(const at::Tensor& t) {
    return t.defined() ? t.data_ptr<at::BFloat16>() : nullptr;
  }

  bool raw() const { return raw_f32; }

  void f32(int64_t R, int64_t K, int64_t N, int64_t w_off, const T* A, int64_t lda, T* C,
           int64_t ldc, float beta = 0.f) const {
    if constexpr (std::is_same_v<T, float>) {
      if (raw_f32) {
        gemm_f32(false, false, R, N, K, A, lda, W + w_off, ldw, beta, C, ldc);
        return;
      }
    }
    at::Tensor c = at::from_blob(C, {R, N}, {ldc, 1}, opts);
    const at::Tensor a = at::from_blob(const_cast<T*>(A), {R, K}, {lda, 1}, opts);
    const at::Tensor w = at::from_blob(const_cast<T*>(W + w_off), {K, N}, {ldw, 1}, opts);
    if (beta == 0.f)
      at::mm_out(c, a, w);
    else
      c.addmm_(a, w);
  }

  // As f32, in bfloat16 when W_lo or Wp is set (A is rows b0.. of the batch).
  void run(int64_t R, int64_t K, int64_t N, int64_t w_off, const T* A, int64_t lda, int64_t b0,
           T* C, int64_t ldc, float beta = 0.f) const {
    if constexpr (std::is_same_v<T, float>) {
      if (W_lo != nullptr || Wp != nullptr) {
        at::BFloat16* a_lo = A_lo + b0 * ld_lo;
        rows_to_bf16(R, K, A, lda, a_lo, ld_lo);
        run_lo(R, K, N, w_off, a_lo, ld_lo, b0, C, ldc, beta);
        return;
      }
    }
    f32(R, K, N, w_off, A, lda, C, ldc, beta);
  }

  // The bfloat16 product of an A that is already bfloat16 (requires W_lo or Wp).
  void run_lo(int64_t R, int64_t K, int64_t N, int64_t w_off, const at::BFloat16* A, int64_t lda,
              int64_t b0, T* C, int64_t ldc, float beta = 0.f) const {
    if constexpr (std::is_same_v<T, float>) {
      const int64_t k0 = w_off / ldw, n0 = w_off % ldw;
      if (Wp != nullptr && k0 % 2 == 0 && K % 2 == 0) {
        const uint16_t* a = reinterpret_cast<const uint16_t*>(A);
        // One block for the whole batch (few rows, one thread, or inside a caller's parallel
        // region): split a large product's 64-column tiles across the threads instead.
        if (!at::in_parallel_region() && at::get_num_threads() > 1 &&
            R * K * N >= kMinDotMacsPerThread * 2 && N > 64) {
          at::parallel_for(0, (N + 63) / 64, 1, [&](int64_t t0, int64_t t1) {
            const int64_t c0 = 64 * t0, c1 = std::min(N, 64 * t1);
            bf16_dot_gemm(R, c1 - c0, K / 2, a, lda, Wp, Np, k0 / 2, n0 + c0, beta, C + c0, ldc);
          });
          return;
        }
        bf16_dot_gemm(R, N, K / 2, a, lda, Wp, Np, k0 / 2, n0, beta, C, ldc);
        return;
      }
      TORCH_INTERNAL_ASSERT(W_lo != nullptr, "bfloat16 product without its oneDNN weight");
      at::BFloat16* c_lo = C_lo + b0 * ld_lo;
      const auto lo = opts.dtype(at::kBFloat16);
      at::Tensor c = at::from_blob(c_lo, {R, N}, {ld_lo, 1}, lo);
      at::mm_out(c, at::from_blob(const_cast<at::BFloat16*>(A), {R, K}, {lda, 1}, lo),
                 at::from_blob(const_cast<at::BFloat16*>(W_lo + w_off), {K, N}, {ldw, 1}, lo));
      if (beta == 0.f) {
        rows_from_bf16(R, N, c_lo, ld_lo, C, ldc);
      } else {
        const uint16_t* const bits = reinterpret_cast<const uint16_t*>(c_lo);
        for (int64_t r = 0; r < R; ++r)
          for (int64_t n = 0; n < N; ++n)
            C[r * ldc + n] += float_of_bf16_bits(bits[r * ld_lo + n]);
      }
    } else {
      TORCH_INTERNAL_ASSERT(false, "bfloat16 products compute in float");
    }
  }
};

}  // namespace cpu
}  // namespace gru_cuda
