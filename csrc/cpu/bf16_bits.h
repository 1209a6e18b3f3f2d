// float32 <-> bfloat16 on the bits, as Tensor.to rounds (nearest even; NaN to 0x7FC0), with no
// branch, so that loops over them vectorise (c10::BFloat16's constructor, with its NaN branch,
// stays scalar).
#pragma once

#include <cstdint>
#include <cstring>

namespace gru_cuda {
namespace cpu {

inline uint16_t bf16_bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  const uint32_t rounded = (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
  return (u & 0x7FFFFFFFu) > 0x7F800000u ? uint16_t(0x7FC0) : uint16_t(rounded);
}

inline float float_of_bf16_bits(uint16_t b) {
  const uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace cpu
}  // namespace gru_cuda
