// The accumulation type of a storage dtype, shared by the launchers' argument structs (host
// code) and the kernels (kernels/convert.cuh).
#pragma once

namespace gru_cuda {
namespace kernels {

template <typename T>
struct AccType {
  using type = float;
};
template <>
struct AccType<double> {
  using type = double;
};
// Accumulation type: fp32 for float, half and bfloat16; fp64 for double.
template <typename T>
using acc_t = typename AccType<T>::type;

}  // namespace kernels
}  // namespace gru_cuda
