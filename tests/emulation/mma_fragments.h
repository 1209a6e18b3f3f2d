// The warp-level tensor-core instructions the persistent kernels use, as the PTX ISA defines
// them, for the host emulation: which lane holds which matrix element (the fragment tables of
// "Matrix Fragments for mma.m16n8k16 with floating point type", "... mma.m16n8k8" (.tf32) and
// "Warp-level matrix load instruction: ldmatrix"), and the instructions computed over a whole
// warp's registers from those tables. Torch-free and thread-free: the emulated primitives
// (kernels/persistent/primitives.cuh beside this file) gather the 32 lanes' registers and call
// these; tests/emulation/test_tensor_core_emulation.py checks them against plain products.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <stdexcept>

namespace emu_mma {

struct Coord {
  int row, col;
};

// groupID and threadID_in_group of the PTX tables.
inline int group_of(int lane) { return lane >> 2; }
inline int thread_in_group(int lane) { return lane & 3; }

// ---- fragment tables (lane, element index) -> (row, col) --------------------------------------

// m16n8k16, .f16/.bf16: A is 16x16 (row, col = m, k); element i = 0..7 of a lane, two per
// 32-bit register (register i/2, the even i in the low half).
//   row = groupID for i in {0,1,4,5}, groupID + 8 otherwise
//   col = 2·threadID_in_group + (i & 1), + 8 for i >= 4
inline Coord a_m16n8k16(int lane, int i) {
  const bool low_row = i < 2 || (i >= 4 && i < 6);
  return {group_of(lane) + (low_row ? 0 : 8), 2 * thread_in_group(lane) + (i & 1) + (i >= 4 ? 8 : 0)};
}
// B is 16x8 (row, col = k, n); element i = 0..3, two per register.
//   row = 2·threadID_in_group + (i & 1), + 8 for i >= 2; col = groupID
inline Coord b_m16n8k16(int lane, int i) {
  return {2 * thread_in_group(lane) + (i & 1) + (i >= 2 ? 8 : 0), group_of(lane)};
}
// C and D, fp32, 16x8 (both shapes); element i = 0..3, one per register.
//   row = groupID for i < 2, groupID + 8 otherwise; col = 2·threadID_in_group + (i & 1)
inline Coord c_m16n8(int lane, int i) {
  return {group_of(lane) + (i < 2 ? 0 : 8), 2 * thread_in_group(lane) + (i & 1)};
}
// m16n8k8, .tf32: A is 16x8; element i = 0..3, one per register.
//   row = groupID for i in {0,2}, groupID + 8 otherwise; col = threadID_in_group, + 4 for i >= 2
inline Coord a_m16n8k8_tf32(int lane, int i) {
  return {group_of(lane) + ((i == 0 || i == 2) ? 0 : 8), thread_in_group(lane) + (i >= 2 ? 4 : 0)};
}
// B is 8x8; element i = 0..1, one per register.  row = threadID_in_group, + 4 for i = 1;
// col = groupID
inline Coord b_m16n8k8_tf32(int lane, int i) {
  return {thread_in_group(lane) + (i == 1 ? 4 : 0), group_of(lane)};
}
// ldmatrix .m8n8 .b16 (no .trans): of matrix j, lane l receives row l/4, 16-bit elements
// 2·(l%4) and 2·(l%4)+1, in register j (the lower column in the low half); the row addresses of
// matrix j come from lanes 8j..8j+7 (row r from lane 8j + r).
inline Coord ldmatrix_m8n8(int lane, int half) { return {lane >> 2, 2 * (lane & 3) + half}; }
inline int ldmatrix_address_lane(int matrix, int row) { return 8 * matrix + row; }

// ---- element conversions ------------------------------------------------------------------

enum class Kind { kF16, kBF16, kTF32 };

inline float bits_to_float(uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

// A 16-bit element of register r (half 0: low, 1: high) as float.
inline float half_element(Kind k, uint32_t r, int half) {
  const uint16_t bits = uint16_t(half ? r >> 16 : r & 0xFFFFu);
  if (k == Kind::kBF16) return bits_to_float(uint32_t(bits) << 16);
  __half h;
  std::memcpy(&h, &bits, 2);
  return __half2float(h);
}

// A TF32 operand as the tensor core reads it: the sign, the 8-bit exponent and the top 10
// mantissa bits of the 32-bit register; the 13 low bits are ignored.
inline float tf32_element(uint32_t r) { return bits_to_float(r & 0xFFFFE000u); }

// cvt.rna.tf32.f32: round to the nearest TF32 value, ties away from zero (the 13 low bits of the
// result are zero). NaN and infinity pass through.
inline uint32_t round_tf32(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7F800000u) == 0x7F800000u) return u;  // inf / NaN
  u += 0x1000u;  // half of the 13 dropped bits: ties go away from zero on the magnitude
  return u & 0xFFFFE000u;
}

// ---- the instructions over a whole warp ----------------------------------------------------

// The A and B matrices the warp's registers hold (a[lane][0..3], b[lane][0..1]), read through
// the tables; every element must be held exactly once.
inline void gather_operands(Kind kind, const uint32_t (&a)[32][4], const uint32_t (&b)[32][2],
                            double (&A)[16][16], double (&B)[16][8]) {
  const bool tf32 = kind == Kind::kTF32;
  bool seenA[16][16] = {}, seenB[16][8] = {};
  int countA = 0, countB = 0;
  for (int lane = 0; lane < 32; ++lane) {
    const int na = tf32 ? 4 : 8, nb = tf32 ? 2 : 4;
    for (int i = 0; i < na; ++i) {
      const Coord at = tf32 ? a_m16n8k8_tf32(lane, i) : a_m16n8k16(lane, i);
      const float v = tf32 ? tf32_element(a[lane][i]) : half_element(kind, a[lane][i / 2], i & 1);
      if (seenA[at.row][at.col]) throw std::logic_error("A fragment table: element held twice");
      seenA[at.row][at.col] = true;
      A[at.row][at.col] = v;
      ++countA;
    }
    for (int i = 0; i < nb; ++i) {
      const Coord bt = tf32 ? b_m16n8k8_tf32(lane, i) : b_m16n8k16(lane, i);
      const float v = tf32 ? tf32_element(b[lane][i]) : half_element(kind, b[lane][i / 2], i & 1);
      if (seenB[bt.row][bt.col]) throw std::logic_error("B fragment table: element held twice");
      seenB[bt.row][bt.col] = true;
      B[bt.row][bt.col] = v;
      ++countB;
    }
  }
  if (countA != 16 * (tf32 ? 8 : 16) || countB != 8 * (tf32 ? 8 : 16)) {
    throw std::logic_error("fragment tables do not cover the matrices");
  }
}

// D = A·B + C for one lane's four accumulators (c, d: that lane's registers), the warp's
// operand registers given. Products of the operands are exact in double; the sum over k runs
// in double and is rounded to fp32 once with C added (the hardware's internal order and
// precision are specified only as fp32 accumulation; the tests' tolerances allow for either).
inline void mma_lane(Kind kind, const uint32_t (&a)[32][4], const uint32_t (&b)[32][2], int lane,
                     const float (&c)[4], float (&d)[4]) {
  double A[16][16] = {}, B[16][8] = {};
  gather_operands(kind, a, b, A, B);
  const int K = kind == Kind::kTF32 ? 8 : 16;
  for (int i = 0; i < 4; ++i) {
    const Coord ct = c_m16n8(lane, i);
    double sum = 0.0;
    for (int k = 0; k < K; ++k) sum += A[ct.row][k] * B[k][ct.col];
    d[i] = float(sum + double(c[i]));
  }
}

// The same for the whole warp.
inline void mma_warp(Kind kind, const uint32_t (&a)[32][4], const uint32_t (&b)[32][2],
                     const float (&c)[32][4], float (&d)[32][4]) {
  for (int lane = 0; lane < 32; ++lane) mma_lane(kind, a, b, lane, c[lane], d[lane]);
}

// ldmatrix .x{n} .m8n8 .b16 for one lane: rows[l] is lane l's row address (only those of lanes
// < 8n are read); r[j] receives this lane's elements of matrix j.
inline void ldmatrix_lane(int n, const void* const (&rows)[32], int lane, uint32_t* r) {
  for (int j = 0; j < n; ++j) {
    uint32_t word = 0;
    for (int half = 0; half < 2; ++half) {
      const Coord e = ldmatrix_m8n8(lane, half);
      const auto* row = static_cast<const unsigned char*>(rows[ldmatrix_address_lane(j, e.row)]);
      if (reinterpret_cast<uintptr_t>(row) % 16 != 0) {
        throw std::logic_error("ldmatrix: a row address is not 16-byte aligned");
      }
      uint16_t bits;
      std::memcpy(&bits, row + 2 * e.col, 2);
      word |= uint32_t(bits) << (16 * half);
    }
    r[j] = word;
  }
}

}  // namespace emu_mma
