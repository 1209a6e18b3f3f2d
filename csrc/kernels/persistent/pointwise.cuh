// The pointwise parts of the persistent kernels, one element (b, j) each: the loads, stores,
// masks and dropout around the cell (common/gru_cell.h); and the L2 prefetch of a step's inputs.
#pragma once

#include "common/gru_cell.h"
#include "kernels/persistent/device.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// ---- pointwise parts (one element (b, j); mirror csrc/kernels/step/gru_step_kernels.cuh) -----

template <typename T>
__device__ __forceinline__ T* state_at(const PersistentForwardParams<T>& p, int64_t s) {
  const int64_t BH = p.B * p.H;
  return p.states != nullptr ? p.states + s * BH : p.state_scratch + (s & 1) * BH;
}

template <typename T>
__device__ __forceinline__ T* rb_workspace_row(const PersistentForwardParams<T>& p, int64_t s) {
  return p.workspace != nullptr ? p.workspace + s * p.B * 3 * p.H : p.ws_scratch;
}

// Mask selection (never multiplication), outputs, the carried state and the final state.
template <typename T>
__device__ __forceinline__ T finish_forward(const PersistentForwardParams<T>& p, int64_t s,
                                            int64_t tau, int64_t b, int64_t i, float h_new,
                                            T h_prev, T* hcur) {
  const int64_t BH = p.B * p.H;
  const bool valid = p.mask == nullptr || p.mask[tau * p.B + b];
  const T hn = from_acc<T>(h_new);
  const T state = valid ? hn : h_prev;  // a carried state is copied bit for bit
  T out;
  if (valid) {
    out = hn;
  } else if (p.zero_output_for_mask || s == 0) {
    out = from_acc<T>(0.0f);
  } else {
    out = p.outputs[(s - 1) * BH + i];  // written by this thread at step s-1
  }
  p.outputs[s * BH + i] = out;
  hcur[i] = state;
  if (s == p.steps - 1) p.final_state[i] = state;
  return state;
}

// reset_after=True; g points at the row's products, gate blocks J apart.
template <typename T, int A, int R>
__device__ __forceinline__ T forward_ra_point(const PersistentForwardParams<T>& p, int64_t s,
                                              int64_t tau, int64_t b, int j, const float* g,
                                              int J, const T* hprev, T* hcur) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  const T* gx = p.gx + (tau * p.B + b) * 3 * H;
  float bz = 0.0f, br = 0.0f, bh = 0.0f;
  if (p.recurrent_bias != nullptr) {
    bz = to_acc(p.recurrent_bias[j]);
    br = to_acc(p.recurrent_bias[H + j]);
    bh = to_acc(p.recurrent_bias[2 * H + j]);
  }
  const float a_z = to_acc(gx[j]) + (g[0] + bz);
  const float a_r = to_acc(gx[H + j]) + (g[J] + br);
  const float gh_h = g[2 * J] + bh;
  const T h_prev = hprev[i];  // h0, or this thread's write of step s-1
  const auto y = cell::forward_reset_after(acts_of<A, R>(p), a_z, a_r, to_acc(gx[2 * H + j]),
                                           gh_h, to_acc(h_prev));
  if (p.workspace != nullptr) {
    T* ws = p.workspace + (s * p.B + b) * 4 * H;
    ws[j] = from_acc<T>(a_z);
    ws[H + j] = from_acc<T>(a_r);
    ws[2 * H + j] = from_acc<T>(y.a_h);
    ws[3 * H + j] = from_acc<T>(gh_h);
  }
  return finish_forward(p, s, tau, b, i, y.h_new, h_prev, hcur);
}

// reset_after=False, first phase: a_z, a_r into the workspace row; returns r ⊙ hd_h.
template <typename T, int R>
__device__ __forceinline__ T forward_rb_point1(const PersistentForwardParams<T>& p, int64_t s,
                                               int64_t tau, int64_t b, int j, const float* g,
                                               int J, const T* hprev) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  const T* gx = p.gx + (tau * p.B + b) * 3 * H;
  const float a_z = to_acc(gx[j]) + g[0];
  const float a_r = to_acc(gx[H + j]) + g[J];
  float hd_h = to_acc(hprev[i]);
  if (p.recurrent_dropout != nullptr) hd_h *= to_acc(p.recurrent_dropout[2 * p.B * H + i]);
  T* ws = rb_workspace_row(p, s) + b * 3 * H;
  ws[j] = from_acc<T>(a_z);
  ws[H + j] = from_acc<T>(a_r);
  return from_acc<T>(cell::reset_state(acts_of<kAnyAct, R>(p), a_r, hd_h));
}

// reset_after=False, second phase; gh = (r ⊙ hd_h) U_h for this element.
template <typename T, int A, int R>
__device__ __forceinline__ T forward_rb_point2(const PersistentForwardParams<T>& p, int64_t s,
                                               int64_t tau, int64_t b, int j, float gh,
                                               const T* hprev, T* hcur) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* ws = rb_workspace_row(p, s) + b * 3 * H;
  const float a_h = to_acc(p.gx[(tau * p.B + b) * 3 * H + 2 * H + j]) + gh;
  ws[2 * H + j] = from_acc<T>(a_h);
  const T h_prev = hprev[i];
  const float h_new =
      cell::forward_reset_before(acts_of<A, R>(p), to_acc(ws[j]), a_h, to_acc(h_prev));
  return finish_forward(p, s, tau, b, i, h_new, h_prev, hcur);
}

// Incoming gradient w.r.t. the state after step s, and the head of the backward step: the
// gradient into the cell result (dhn) on a valid row; false on a masked row (then dh_part
// carries dh).
template <typename T>
__device__ __forceinline__ bool backward_head(const PersistentBackwardParams<T>& p, int64_t s,
                                              int64_t tau, int64_t b, int64_t i, float dh,
                                              float& dhn) {
  float g = to_acc(p.grad_outputs[s * p.B * p.H + i]);
  if (p.dcarry != nullptr) g += p.dcarry[i];
  const bool valid = p.mask == nullptr || p.mask[tau * p.B + b];
  if (p.dcarry != nullptr) p.dcarry[i] = valid ? 0.0f : g;
  if (!valid) {
    p.dh_part[i] = dh;  // the state was carried through this step
    return false;
  }
  dhn = dh + g;
  return true;
}

// dh = grad_final_state (first processed step) or dh_part + Σ_{g < gates} q_g ⊙ prod_g.
template <typename T>
__device__ __forceinline__ float incoming_dh(const PersistentBackwardParams<T>& p, int64_t s,
                                             int64_t i, const float* g, int J, int gates) {
  if (s == p.steps - 1) return to_acc(p.grad_final_state[i]);
  float dh = p.dh_part[i];
  const int64_t BH = p.B * p.H;
  for (int gate = 0; gate < gates; ++gate) {
    float v = g[gate * J];
    if (p.recurrent_dropout != nullptr) v *= to_acc(p.recurrent_dropout[gate * BH + i]);
    dh += v;
  }
  return dh;
}

template <typename T>
__device__ __forceinline__ const T* backward_hprev(const PersistentBackwardParams<T>& p,
                                                   int64_t s) {
  return s == 0 ? p.h0 : p.states + (s - 1) * p.B * p.H;
}

struct Grad3 {
  float v[3];
};

// reset_after=True. Returns the stored dgh (as fp32) for the cluster exchange.
template <typename T, int A, int R>
__device__ __forceinline__ Grad3 backward_ra_point(const PersistentBackwardParams<T>& p,
                                                   int64_t s, int64_t tau, int64_t b, int j,
                                                   const float* g, int J) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* dg = p.dgates + (tau * p.B + b) * 3 * H;
  T* aux = p.aux + tau * p.B * H + i;
  const float dh = incoming_dh(p, s, i, g, J, 3);
  float dhn;
  Grad3 out{{0.0f, 0.0f, 0.0f}};
  if (!backward_head(p, s, tau, b, i, dh, dhn)) {
    const T zero = from_acc<T>(0.0f);
    dg[j] = zero;
    dg[H + j] = zero;
    dg[2 * H + j] = zero;
    *aux = zero;
    return out;
  }
  const T* ws = p.workspace + (s * p.B + b) * 4 * H;
  const auto d = cell::backward_reset_after(acts_of<A, R>(p), dhn, to_acc(ws[j]),
                                            to_acc(ws[H + j]), to_acc(ws[2 * H + j]),
                                            to_acc(ws[3 * H + j]), to_acc(backward_hprev(p, s)[i]));
  const T vz = from_acc<T>(d.da_z), vr = from_acc<T>(d.da_r), vh = from_acc<T>(d.dgh_h);
  dg[j] = vz;
  dg[H + j] = vr;
  dg[2 * H + j] = vh;
  *aux = from_acc<T>(d.da_h);
  p.dh_part[i] = d.dh;
  out.v[0] = to_acc(vz);
  out.v[1] = to_acc(vr);
  out.v[2] = to_acc(vh);
  return out;
}

// reset_after=False, first phase (z and h blocks). Returns the stored (da_z, da_h).
template <typename T, int A, int R>
__device__ __forceinline__ float2 backward_rb_point_a(const PersistentBackwardParams<T>& p,
                                                      int64_t s, int64_t tau, int64_t b, int j,
                                                      const float* g, int J) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* dg = p.dgates + (tau * p.B + b) * 3 * H;
  const float dh = incoming_dh(p, s, i, g, J, 2);
  float dhn;
  if (!backward_head(p, s, tau, b, i, dh, dhn)) {
    const T zero = from_acc<T>(0.0f);
    dg[j] = zero;
    dg[2 * H + j] = zero;
    return make_float2(0.0f, 0.0f);
  }
  const T* ws = p.workspace + (s * p.B + b) * 3 * H;
  const auto d = cell::backward_reset_before(acts_of<A, R>(p), dhn, to_acc(ws[j]),
                                             to_acc(ws[2 * H + j]),
                                             to_acc(backward_hprev(p, s)[i]));
  const T vz = from_acc<T>(d.da_z), vh = from_acc<T>(d.da_h);
  dg[j] = vz;
  dg[2 * H + j] = vh;
  p.dh_part[i] = d.dh;
  return make_float2(to_acc(vz), to_acc(vh));
}

// reset_after=False, second phase (reset gate) after drh = da_h U_hᵀ. Returns the stored da_r.
template <typename T, int R>
__device__ __forceinline__ float backward_rb_point_b(const PersistentBackwardParams<T>& p,
                                                     int64_t s, int64_t tau, int64_t b, int j,
                                                     float drh) {
  const int64_t H = p.H;
  const int64_t i = b * H + j;
  T* dg = p.dgates + (tau * p.B + b) * 3 * H;
  T* aux = p.aux + tau * p.B * H + i;
  if (p.mask != nullptr && !p.mask[tau * p.B + b]) {
    const T zero = from_acc<T>(0.0f);
    dg[H + j] = zero;
    *aux = zero;
    return 0.0f;
  }
  const float q_h =
      p.recurrent_dropout != nullptr ? to_acc(p.recurrent_dropout[2 * p.B * H + i]) : 1.0f;
  const auto d = cell::backward_reset_gate(acts_of<kAnyAct, R>(p), drh,
                                           to_acc(p.workspace[(s * p.B + b) * 3 * H + H + j]),
                                           to_acc(backward_hprev(p, s)[i]) * q_h, q_h);
  const T vr = from_acc<T>(d.da_r);
  dg[H + j] = vr;
  p.dh_part[i] += d.dh;
  *aux = from_acc<T>(d.rh);
  return to_acc(vr);
}

// grad_h0 = dh_part + Σ_{g < gates} q_g ⊙ prod_g, after step 0.
template <typename T>
__device__ __forceinline__ void finish_grad_h0(const PersistentBackwardParams<T>& p, int64_t b,
                                               int j, const float* g, int J, int gates) {
  const int64_t i = b * p.H + j;
  const int64_t BH = p.B * p.H;
  float dh = p.dh_part[i];
  for (int gate = 0; gate < gates; ++gate) {
    float v = g[gate * J];
    if (p.recurrent_dropout != nullptr) v *= to_acc(p.recurrent_dropout[gate * BH + i]);
    dh += v;
  }
  p.grad_h0[i] = from_acc<T>(dh);
}

// Element loop of a pass: (r, jj) of rows x J, the same thread for the same element at every
// step (so per-element state read back from global memory is this thread's own write).
#define GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j)                        \
  for (int e_ = threadIdx.x; e_ < (rows) * (J); e_ += kThreads)           \
    if (const int r = e_ / (J), jj = e_ - r * (J), j = (j0) + jj; j < (H))

// Prefetch into L2 of the step's inputs that do not depend on the recurrence (gx, mask, the
// saved states and workspace, the incoming output gradient), issued before the step's product
// so that their DRAM latency overlaps the staging and the product instead of following them.
// A prefetch is only a hint: it orders nothing and changes no value. One prefetch per 32-byte
// sector a thread's element starts (or its first unit), not one per element.
template <typename T>
__device__ __forceinline__ bool sector_head(int j, int jj) {
  return jj == 0 || (int64_t(j) * int64_t(sizeof(T))) % 32 == 0;
}

// Forward step s (input time tau), rows [b0, b0 + rows) of this CTA's units.
template <typename T>
__device__ __forceinline__ void prefetch_forward_step(const PersistentForwardParams<T>& p,
                                                      int64_t tau, int64_t b0, int rows, int J,
                                                      int j0) {
  const int64_t H = p.H;
  GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
    if (!sector_head<T>(j, jj)) continue;
    const T* gx = p.gx + (tau * p.B + b0 + r) * 3 * H + j;
    prefetch_l2(gx);
    prefetch_l2(gx + H);
    prefetch_l2(gx + 2 * H);
    if (jj == 0 && p.mask != nullptr) prefetch_l2(p.mask + tau * p.B + b0 + r);
  }
}

// Backward step s: the output gradient, the saved workspace row (ws_width gate blocks) and the
// previous state.
template <typename T>
__device__ __forceinline__ void prefetch_backward_step(const PersistentBackwardParams<T>& p,
                                                       int64_t s, int64_t tau, int64_t b0,
                                                       int rows, int J, int j0, int ws_width) {
  const int64_t H = p.H;
  GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
    if (!sector_head<T>(j, jj)) continue;
    const int64_t b = b0 + r;
    prefetch_l2(p.grad_outputs + s * p.B * H + b * H + j);
    const T* ws = p.workspace + (s * p.B + b) * ws_width * H + j;
    for (int g = 0; g < ws_width; ++g) prefetch_l2(ws + g * H);
    prefetch_l2((s == 0 ? p.h0 : p.states + (s - 1) * p.B * H) + b * H + j);
    if (jj == 0 && p.mask != nullptr) prefetch_l2(p.mask + tau * p.B + b);
  }
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
