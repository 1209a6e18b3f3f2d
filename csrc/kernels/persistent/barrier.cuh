// The grid barrier of the persistent grid path; its arrival and wait are a primitive
// (kernels/persistent/primitives.cuh).
#pragma once

#include "kernels/persistent/device.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// ---- grid barrier -------------------------------------------------------------------------

// A monotonically increasing arrival counter (zeroed by the host before the launch). Barrier n
// (n = 1, 2, ...) completes when the counter reaches n·gridDim.x.
// Memory ordering: a CTA's writes before the barrier are ordered before thread 0's arrival by
// bar.sync (CTA scope); the arrival is a release RMW at gpu scope (cumulative: it releases what
// thread 0 has observed, i.e. the whole CTA's writes). Every arrival is an RMW on the same
// counter, so a later arrival continues each earlier arrival's release sequence; thread 0 of a
// waiting CTA reads a value >= n·gridDim.x with an acquire load, which therefore synchronises
// with all n·gridDim.x arrivals, and its bar.sync passes that on to the rest of the CTA. The
// readers use ld.global.cg (L2), so no stale L1 line can be read either. A CTA arriving at
// barrier n+1 before a slow CTA has left barrier n only raises the counter further, which
// keeps the slow CTA's exit condition true (monotonic counter, no reset, no sense flag).
//
// Back-off: between polls thread 0 sleeps (__nanosleep), starting at backoff_ns and doubling up
// to kGridBarrierBackoffMaxFactor times that, so that 100+ spinning CTAs do not hammer the one
// L2 line the arrivals update. Bounded so that a late waiter oversleeps the release by at most
// the cap. backoff_ns = 0 spins without sleeping.
// kGridBarrierBackoffNs is a guess, not a measurement (nothing has run on a GPU): calibrate it
// with gru_cuda._C.persistent_barrier_latency_us(device, "counter", ctas, iterations,
// backoff_ns) over e.g. 0, 16, 32, 64, 128, 256 and keep the fastest.
constexpr unsigned kGridBarrierBackoffNs = 32;
constexpr unsigned kGridBarrierBackoffMaxFactor = 8;

struct GridBarrier {
  unsigned long long* counter;
  unsigned long long target;
  unsigned backoff_ns = kGridBarrierBackoffNs;

  __device__ __forceinline__ void sync() {
    __syncthreads();
    if (threadIdx.x == 0) {
      target += gridDim.x;
      grid_arrive_and_wait(counter, target, backoff_ns,
                           backoff_ns * kGridBarrierBackoffMaxFactor);
    }
    __syncthreads();
  }
};

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
