// A small bfloat16 GEMM for the per-step products of the CPU recurrences, on the AVX512-BF16
// dot-product instruction (vdpbf16ps), with float32 accumulation and output.
//
// Why our own: a step's product is small (a block of 16-32 rows), and oneDNN through at::mm_out
// spends ~25 us per call around it (32 x 128 x 384: 32 us per call where the arithmetic is a few
// microseconds; docs/cpu.md), while MKL's bfloat16 GEMM runs at the float32 rate on CPUs it
// does not recognise. The weight is packed once per op call, so a step costs only its
// arithmetic, and the result lands in float32 (no rounding of the product to bfloat16).
#pragma once

#include <cstdint>

namespace gru_cuda {
namespace cpu {

// Whether this CPU runs the kernel (AVX512-BF16, and an x86-64 GCC/Clang build).
bool bf16_dot_gemm_available();

// Columns of a packed weight: n_cols rounded up to 64, plus 64 (a tile that starts inside may
// read up to 63 columns past its last one).
int64_t bf16_packed_cols(int64_t n_cols);

// Packs W (K, N), row stride ldw, into k-pairs: element (k, n) at out[((k / 2) * Np + n) * 2 +
// k % 2], Np = bf16_packed_cols(N), rounded to bfloat16; the padding (odd K, columns past N) is
// zero. out holds ((K + 1) / 2) * Np * 2 values.
void bf16_pack_pairs(const float* W, int64_t K, int64_t N, int64_t ldw, uint16_t* out);

// C (R, N) (+)= A (R, 2 * K2) . Wp[2 * k2_0 : 2 * (k2_0 + K2), n0 : n0 + N]: A is bfloat16 bits,
// row stride lda, its pairs aligned with Wp's (an odd K is padded with a zero in A and in Wp);
// Wp as packed by bf16_pack_pairs with Np columns; beta 0 (C is written) or 1 (added to).
// Single-threaded. Requires bf16_dot_gemm_available().
void bf16_dot_gemm(int64_t R, int64_t N, int64_t K2, const uint16_t* A, int64_t lda,
                   const uint16_t* Wp, int64_t Np, int64_t k2_0, int64_t n0, float beta, float* C,
                   int64_t ldc);

}  // namespace cpu
}  // namespace gru_cuda
