// Activation functions fused into the GRU kernels, shared by the CPU and CUDA code.
//
// Torch-free on purpose: csrc/kernels/ includes this header under nvcc alone (CMake build),
// and csrc/cpu/ includes it under the host compiler. The enum values are the ids the Python
// side passes to the ops; gru_cuda._C.activation_names() exposes the order, so Python never
// hard-codes it.
#pragma once

#include <math.h>

#include <type_traits>

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GRU_HD __host__ __device__ __forceinline__
#else
// Forced inline on the host too: GCC otherwise calls act_forward and the math out of line,
// which keeps the CPU pointwise loops scalar.
#define GRU_HD inline __attribute__((always_inline))
#endif

namespace gru_cuda {

enum Activation : int {
  kTanh = 0,
  kSigmoid = 1,
  kHardSigmoid = 2,  // Keras 3: clip(x / 6 + 0.5, 0, 1)
  kRelu = 3,
  kLinear = 4,
  kSoftsign = 5,
  kElu = 6,          // alpha = 1
  kSelu = 7,
  kSoftplus = 8,
  kSilu = 9,         // a.k.a. swish
  kGelu = 10,        // exact erf form (Keras' default, approximate=False)
  kExponential = 11,
  kNumActivations = 12,
};

// X(ID) for every activation: the one list that switch-based dispatchers expand.
#define GRU_FOR_EACH_ACTIVATION(X)                                                    \
  X(kTanh) X(kSigmoid) X(kHardSigmoid) X(kRelu) X(kLinear) X(kSoftsign) X(kElu) X(kSelu) \
  X(kSoftplus) X(kSilu) X(kGelu) X(kExponential)

// Keras names, in enum order (the single source of truth for the id <-> name mapping).
static constexpr const char* kActivationNames[kNumActivations] = {
    "tanh", "sigmoid", "hard_sigmoid", "relu", "linear", "softsign",
    "elu", "selu", "softplus", "silu", "gelu", "exponential"};

// Scalar math that resolves to the right precision on host and device. Activations take the
// math as a policy M, so that a backend can substitute faster forms (the CPU float path uses
// csrc/cpu/fast_math.h) without touching the formulas below.
struct PreciseMath {
  static GRU_HD float exp(float x) { return expf(x); }
  static GRU_HD double exp(double x) { return ::exp(x); }
  static GRU_HD float expm1(float x) { return expm1f(x); }
  static GRU_HD double expm1(double x) { return ::expm1(x); }
  static GRU_HD float log1p(float x) { return log1pf(x); }
  static GRU_HD double log1p(double x) { return ::log1p(x); }
  static GRU_HD float tanh(float x) { return tanhf(x); }
  static GRU_HD double tanh(double x) { return ::tanh(x); }
  static GRU_HD float erf(float x) { return erff(x); }
  static GRU_HD double erf(double x) { return ::erf(x); }
  static GRU_HD float abs(float x) { return fabsf(x); }
  static GRU_HD double abs(double x) { return fabs(x); }
};

template <typename M, typename T>
GRU_HD T m_sigmoid(T x) {
  return T(1) / (T(1) + M::exp(-x));
}

constexpr double kSeluAlpha = 1.6732632423543772848170429916717;
constexpr double kSeluScale = 1.0507009873554804934193349852946;
constexpr double kInvSqrt2 = 0.70710678118654752440084436210485;
constexpr double kInvSqrt2Pi = 0.39894228040143267793994605993438;

// f(x) for activation A. Accumulation type T is float or double (half/bf16 compute in float).
template <int A, typename T, typename M = PreciseMath>
GRU_HD T act_forward(T x) {
  if constexpr (A == kTanh) {
    return M::tanh(x);
  } else if constexpr (A == kSigmoid) {
    return m_sigmoid<M>(x);
  } else if constexpr (A == kHardSigmoid) {
    T y = x / T(6) + T(0.5);
    return y < T(0) ? T(0) : (y > T(1) ? T(1) : y);
  } else if constexpr (A == kRelu) {
    return x > T(0) ? x : T(0);
  } else if constexpr (A == kLinear) {
    return x;
  } else if constexpr (A == kSoftsign) {
    return x / (T(1) + M::abs(x));
  } else if constexpr (A == kElu) {
    return x > T(0) ? x : M::expm1(x);
  } else if constexpr (A == kSelu) {
    return x > T(0) ? T(kSeluScale) * x : T(kSeluScale * kSeluAlpha) * M::expm1(x);
  } else if constexpr (A == kSoftplus) {
    // log(1 + e^x) without overflow: max(x, 0) + log1p(e^-|x|)
    return (x > T(0) ? x : T(0)) + M::log1p(M::exp(-M::abs(x)));
  } else if constexpr (A == kSilu) {
    return x * m_sigmoid<M>(x);
  } else if constexpr (A == kGelu) {
    return T(0.5) * x * (T(1) + M::erf(x * T(kInvSqrt2)));
  } else {
    static_assert(A == kExponential, "unknown activation");
    return M::exp(x);
  }
}

// df/dx at the pre-activation x.
template <int A, typename T, typename M = PreciseMath>
GRU_HD T act_backward(T x) {
  if constexpr (A == kTanh) {
    T t = M::tanh(x);
    return T(1) - t * t;
  } else if constexpr (A == kSigmoid) {
    T s = m_sigmoid<M>(x);
    return s * (T(1) - s);
  } else if constexpr (A == kHardSigmoid) {
    // torch's hardsigmoid backward: 1/6 strictly inside (-3, 3)
    return (x > T(-3) && x < T(3)) ? T(1) / T(6) : T(0);
  } else if constexpr (A == kRelu) {
    return x > T(0) ? T(1) : T(0);
  } else if constexpr (A == kLinear) {
    return T(1);
  } else if constexpr (A == kSoftsign) {
    T d = T(1) + M::abs(x);
    return T(1) / (d * d);
  } else if constexpr (A == kElu) {
    return x > T(0) ? T(1) : M::exp(x);
  } else if constexpr (A == kSelu) {
    return x > T(0) ? T(kSeluScale) : T(kSeluScale * kSeluAlpha) * M::exp(x);
  } else if constexpr (A == kSoftplus) {
    return m_sigmoid<M>(x);
  } else if constexpr (A == kSilu) {
    T s = m_sigmoid<M>(x);
    return s * (T(1) + x * (T(1) - s));
  } else if constexpr (A == kGelu) {
    return T(0.5) * (T(1) + M::erf(x * T(kInvSqrt2))) + x * T(kInvSqrt2Pi) * M::exp(T(-0.5) * x * x);
  } else {
    static_assert(A == kExponential, "unknown activation");
    return M::exp(x);
  }
}

// Calls f(std::integral_constant<int, A>{}) for the runtime id `a`, so that the body is
// instantiated once per activation and the per-element code has no branch on it.
// Returns false (and calls nothing) for an unknown id; callers validate ids before this.
template <typename F>
inline bool dispatch_activation(int a, F&& f) {
#define GRU_ACT_CASE(ID) \
  case ID:               \
    f(std::integral_constant<int, ID>{}); return true;
  switch (a) {
    GRU_FOR_EACH_ACTIVATION(GRU_ACT_CASE)
    default: break;
  }
#undef GRU_ACT_CASE
  return false;
}

}  // namespace gru_cuda
