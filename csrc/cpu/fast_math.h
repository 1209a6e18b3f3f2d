// Branch-free float exp and tanh for the CPU pointwise loops. libm's expf/tanhf are scalar
// calls that stop the compiler from vectorising a loop; these inline forms vectorise, and are
// accurate to a few ulp (exp) and ~1e-7 absolute (tanh), well inside the 1e-5 relative float32
// contract. double keeps libm (PreciseMath).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/activations.h"

namespace gru_cuda {
namespace cpu {

// Forced inline: called out of line (as GCC chose at -O3), they kept every pointwise loop scalar.
#define GRU_CPU_INLINE inline __attribute__((always_inline))

struct FastCpuMath : PreciseMath {
  using PreciseMath::exp;
  using PreciseMath::tanh;

  static GRU_CPU_INLINE float exp(float x) {
    // e^x = 2^n * e^r, n = round(x / ln 2), |r| <= ln(2) / 2, e^r by its Taylor series to r^7.
    const float xc = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
    const float shifter = 12582912.0f;  // 1.5 * 2^23: adding it rounds to an integer
    const float t = xc * 1.44269504088896341f + shifter;
    const float n = t - shifter;
    const float r = (xc - n * 0.693145751953125f) - n * 1.428606765330187045e-06f;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits;
    std::memcpy(&bits, &t, sizeof bits);  // the low mantissa bits of t hold n
    const int32_t scale_bits = (bits - 0x4B400000 + 127) << 23;
    float scale;
    std::memcpy(&scale, &scale_bits, sizeof scale);
    float y = p * scale;
    y = x > 88.7228f ? __builtin_inff() : y;  // overflow, as expf
    y = x < -103.0f ? 0.0f : y;               // underflow, as expf (denormals flushed)
    return x != x ? x : y;                    // NaN stays NaN
  }

  static GRU_CPU_INLINE float tanh(float x) {
    const float ax = x < 0.0f ? -x : x;
    const float e = exp(-2.0f * (ax > 40.0f ? 40.0f : ax));
    const float t = (1.0f - e) / (1.0f + e);
    const float y = x < 0.0f ? -t : t;
    return x != x ? x : y;
  }
};

}  // namespace cpu
}  // namespace gru_cuda
