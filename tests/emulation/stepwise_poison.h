// Included before the emulated stepwise binding (builder.py renames its at::empty/empty_like
// calls to these): every buffer the binding allocates starts as NaN, so that an element a
// kernel forgets to write shows up in the results.
#pragma once
#include <ATen/ATen.h>
#include <cmath>
namespace emu {
inline at::Tensor empty(at::IntArrayRef size, at::TensorOptions o) {
  auto t = at::empty(size, o);
  if (at::isFloatingType(t.scalar_type())) t.fill_(NAN);
  return t;
}
inline at::Tensor empty_like(const at::Tensor& x) {
  auto t = at::empty_like(x);
  if (at::isFloatingType(t.scalar_type())) t.fill_(NAN);
  return t;
}
}  // namespace emu
