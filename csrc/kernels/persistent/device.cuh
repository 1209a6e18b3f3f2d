// Device vocabulary of the persistent kernels: launch constants, the paired shared-memory load
// and the activation pair (fixed at compile time, or chosen at run time by id).
#pragma once

#include <cstdint>
#include <cstring>

#include "common/activations.h"
#include "kernels/convert.cuh"
#include "kernels/persistent/gru_persistent.h"
#include "kernels/persistent/persistent_capacity.h"
#include "kernels/persistent/primitives.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

constexpr int kThreads = persistent::kThreads;
constexpr int kWarps = kThreads / 32;
constexpr int kRC = persistent::kRC;
constexpr int kAnyAct = -1;  // activation pair chosen at run time

// ---- conversions (to_acc / from_acc: kernels/convert.cuh) ----------------------------------

// Two consecutive shared-memory elements as fp32.
__device__ __forceinline__ float2 ld_pair(const float* p) {
  return *reinterpret_cast<const float2*>(p);
}
__device__ __forceinline__ float2 ld_pair(const __half* p) {
  return __half22float2(*reinterpret_cast<const __half2*>(p));
}
__device__ __forceinline__ float2 ld_pair(const __nv_bfloat16* p) {
  return __bfloat1622float2(*reinterpret_cast<const __nv_bfloat162*>(p));
}

// ---- activations --------------------------------------------------------------------------

// The run-time pair: one out-of-line switch per kernel instead of one kernel per pair.
__device__ GRU_PK_NOINLINE float act_forward_any(int a, float x) {
#define GRU_PK_CASE(ID) \
  case ID:              \
    return act_forward<ID, float>(x);
  switch (a) {
    GRU_FOR_EACH_ACTIVATION(GRU_PK_CASE)
    default: break;
  }
#undef GRU_PK_CASE
  return x;
}

__device__ GRU_PK_NOINLINE float act_backward_any(int a, float x) {
#define GRU_PK_CASE(ID) \
  case ID:              \
    return act_backward<ID, float>(x);
  switch (a) {
    GRU_FOR_EACH_ACTIVATION(GRU_PK_CASE)
    default: break;
  }
#undef GRU_PK_CASE
  return 1.0f;
}

template <int A>
__device__ __forceinline__ float act_f(int id, float x) {
  if constexpr (A == kAnyAct) {
    return act_forward_any(id, x);
  } else {
    return act_forward<A, float>(x);
  }
}
template <int A>
__device__ __forceinline__ float act_b(int id, float x) {
  if constexpr (A == kAnyAct) {
    return act_backward_any(id, x);
  } else {
    return act_backward<A, float>(x);
  }
}

// The activation pair of a kernel for common/gru_cell.h: (A, R) fixed at compile time, or
// kAnyAct for the ids of the parameters.
template <int A, int R>
struct Acts {
  int a, r;
  __device__ __forceinline__ float act(float x) const { return act_f<A>(a, x); }
  __device__ __forceinline__ float dact(float x) const { return act_b<A>(a, x); }
  __device__ __forceinline__ float rec(float x) const { return act_f<R>(r, x); }
  __device__ __forceinline__ float drec(float x) const { return act_b<R>(r, x); }
};

template <int A, int R, typename P>
__device__ __forceinline__ Acts<A, R> acts_of(const P& p) {
  return {p.activation, p.recurrent_activation};
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
