// The AVX512-BF16 GEMM of bf16_dot_gemm.h. Only this file is compiled for AVX512-BF16 (the
// pragma below, after every include, as gru_pointwise.h does for its variants); callers check
// bf16_dot_gemm_available() first.
#include "cpu/bf16_dot_gemm.h"

#include <c10/util/Exception.h>

#include <cstring>

#include "cpu/bf16_bits.h"
#include "cpu/cpu_isa.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GRU_BF16_DOT 1
#include <immintrin.h>
#else
#define GRU_BF16_DOT 0
#endif

namespace gru_cuda {
namespace cpu {

bool bf16_dot_gemm_available() { return GRU_BF16_DOT && cpu_has_bf16_dot(); }

int64_t bf16_packed_cols(int64_t n_cols) { return (n_cols + 63) / 64 * 64 + 64; }

void bf16_pack_pairs(const float* W, int64_t K, int64_t N, int64_t ldw, uint16_t* out) {
  const int64_t Np = bf16_packed_cols(N), K2 = (K + 1) / 2;
  std::memset(out, 0, sizeof(uint16_t) * K2 * Np * 2);
  for (int64_t k = 0; k < K; ++k)
    for (int64_t n = 0; n < N; ++n)
      out[((k / 2) * Np + n) * 2 + k % 2] = bf16_bits(W[k * ldw + n]);
}

}  // namespace cpu
}  // namespace gru_cuda

#if GRU_BF16_DOT
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16")

namespace gru_cuda {
namespace cpu {

namespace {

// MR rows x 64 columns (four 16-float vectors) of C, columns [c0, c0 + 64) of which the first
// n_valid (<= 64) are stored.
template <int MR>
void tile(int64_t K2, const uint16_t* A, int64_t lda, const uint16_t* w, int64_t Np, float beta,
          float* C, int64_t ldc, int64_t n_valid) {
  __m512 acc[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int j = 0; j < 4; ++j) acc[r][j] = _mm512_setzero_ps();
  for (int64_t k2 = 0; k2 < K2; ++k2) {
    const uint16_t* wk = w + k2 * Np * 2;
    const __m512bh w0 = (__m512bh)_mm512_loadu_si512(wk);
    const __m512bh w1 = (__m512bh)_mm512_loadu_si512(wk + 32);
    const __m512bh w2 = (__m512bh)_mm512_loadu_si512(wk + 64);
    const __m512bh w3 = (__m512bh)_mm512_loadu_si512(wk + 96);
    for (int r = 0; r < MR; ++r) {
      int32_t pair;
      std::memcpy(&pair, A + r * lda + 2 * k2, sizeof pair);
      const __m512bh a = (__m512bh)_mm512_set1_epi32(pair);
      acc[r][0] = _mm512_dpbf16_ps(acc[r][0], a, w0);
      acc[r][1] = _mm512_dpbf16_ps(acc[r][1], a, w1);
      acc[r][2] = _mm512_dpbf16_ps(acc[r][2], a, w2);
      acc[r][3] = _mm512_dpbf16_ps(acc[r][3], a, w3);
    }
  }
  for (int j = 0; j < 4; ++j) {
    const int64_t left = n_valid - 16 * j;
    if (left <= 0) break;
    const __mmask16 m = left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u);
    for (int r = 0; r < MR; ++r) {
      float* c = C + r * ldc + 16 * j;
      __m512 v = acc[r][j];
      if (beta != 0.f) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, c));
      _mm512_mask_storeu_ps(c, m, v);
    }
  }
}

}  // namespace

void bf16_dot_gemm(int64_t R, int64_t N, int64_t K2, const uint16_t* A, int64_t lda,
                   const uint16_t* Wp, int64_t Np, int64_t k2_0, int64_t n0, float beta, float* C,
                   int64_t ldc) {
  constexpr int MR = 4;
  for (int64_t c0 = 0; c0 < N; c0 += 64) {
    const uint16_t* w = Wp + (k2_0 * Np + n0 + c0) * 2;
    const int64_t n_valid = N - c0 < 64 ? N - c0 : 64;
    int64_t r = 0;
    for (; r + MR <= R; r += MR)
      tile<MR>(K2, A + r * lda, lda, w, Np, beta, C + r * ldc + c0, ldc, n_valid);
    switch (R - r) {
      case 3: tile<3>(K2, A + r * lda, lda, w, Np, beta, C + r * ldc + c0, ldc, n_valid); break;
      case 2: tile<2>(K2, A + r * lda, lda, w, Np, beta, C + r * ldc + c0, ldc, n_valid); break;
      case 1: tile<1>(K2, A + r * lda, lda, w, Np, beta, C + r * ldc + c0, ldc, n_valid); break;
      default: break;
    }
  }
}

}  // namespace cpu
}  // namespace gru_cuda

#pragma GCC pop_options
#else
namespace gru_cuda {
namespace cpu {
void bf16_dot_gemm(int64_t, int64_t, int64_t, const uint16_t*, int64_t, const uint16_t*, int64_t,
                   int64_t, int64_t, float, float*, int64_t) {
  TORCH_CHECK(false, "bf16_dot_gemm: not built for this CPU (check bf16_dot_gemm_available)");
}
}  // namespace cpu
}  // namespace gru_cuda
#endif
