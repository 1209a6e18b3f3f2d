// The GRU cell, one element (b, j), forward and backward, both conventions (docs/algorithm.md).
//
// The one definition of the cell arithmetic: the CPU passes (csrc/cpu/gru_pointwise.h), the
// stepwise kernels (csrc/kernels/step/) and the persistent kernels (csrc/kernels/persistent/)
// keep only their loads, stores, masks and dropout and call these functions. Torch-free and
// host/device (GRU_HD), like common/activations.h.
//
// Vocabulary shared by all callers:
//   T          the accumulation type (float or double); storage conversions are the caller's.
//   F          the activation pair: act / dact for the candidate activation (A) and its
//              derivative, rec / drec for the recurrent activation (R). Fixed<A, R, M> below is
//              the compile-time pair; a caller may pass any type with those four members.
//   a_z, a_r   gate pre-activations (input projection + recurrent product + biases), summed by
//              the caller, whose summation order is part of its contract.
//   a_h        candidate pre-activation; gh_h its recurrent part (reset_after=True).
//   h          the previous state; hd_h the previous state times its recurrent dropout mask.
//   dhn        the gradient flowing into the cell result on a valid row.
#pragma once

#include "common/activations.h"

namespace gru_cuda {
namespace cell {

// The compile-time activation pair A (candidate), R (recurrent) with scalar math policy M.
template <int A, int R, typename M = PreciseMath>
struct Fixed {
  template <typename T>
  GRU_HD T act(T x) const { return act_forward<A, T, M>(x); }
  template <typename T>
  GRU_HD T dact(T x) const { return act_backward<A, T, M>(x); }
  template <typename T>
  GRU_HD T rec(T x) const { return act_forward<R, T, M>(x); }
  template <typename T>
  GRU_HD T drec(T x) const { return act_backward<R, T, M>(x); }
};

// h' = z h + (1 - z) c.
template <typename T>
GRU_HD T update(T z, T h, T c) {
  return z * h + (T(1) - z) * c;
}

// ---- forward --------------------------------------------------------------------------------

template <typename T>
struct ForwardResetAfter {
  T a_h;    // saved for backward
  T h_new;  // the cell result before masking
};

// reset_after=True: a_h = x_h + r ⊙ gh_h, where x_h is the input projection of gate h.
template <typename T, typename F>
GRU_HD ForwardResetAfter<T> forward_reset_after(const F& f, T a_z, T a_r, T x_h, T gh_h, T h) {
  const T z = f.rec(a_z), r = f.rec(a_r);
  const T a_h = x_h + r * gh_h;
  return {a_h, update(z, h, f.act(a_h))};
}

// reset_after=False, first phase: the reset state r ⊙ hd_h, the operand of the product with U_h.
// Also the operand of grad U_h in backward.
template <typename T, typename F>
GRU_HD T reset_state(const F& f, T a_r, T hd_h) {
  return f.rec(a_r) * hd_h;
}

// reset_after=False, second phase: a_h = x_h + (r ⊙ hd_h) U_h, summed by the caller (saved).
// z is recomputed from a_z as saved, the value backward recomputes it from.
template <typename T, typename F>
GRU_HD T forward_reset_before(const F& f, T a_z, T a_h, T h) {
  return update(f.rec(a_z), h, f.act(a_h));
}

// ---- backward -------------------------------------------------------------------------------

template <typename T>
struct BackwardResetAfter {
  T da_z, da_r, da_h;
  T dgh_h;  // gradient of the recurrent part gh_h of gate h: da_h ⊙ r
  T dh;     // the elementwise part of the gradient w.r.t. h: dhn ⊙ z
};

template <typename T, typename F>
GRU_HD BackwardResetAfter<T> backward_reset_after(const F& f, T dhn, T a_z, T a_r, T a_h, T gh_h,
                                                  T h) {
  const T z = f.rec(a_z), r = f.rec(a_r), c = f.act(a_h);
  const T da_h = dhn * (T(1) - z) * f.dact(a_h);
  const T da_z = dhn * (h - c) * f.drec(a_z);
  const T da_r = da_h * gh_h * f.drec(a_r);
  return {da_z, da_r, da_h, da_h * r, dhn * z};
}

template <typename T>
struct BackwardResetBefore {
  T da_z, da_h;
  T dh;  // dhn ⊙ z
};

// reset_after=False, first phase: everything that does not need drh = da_h U_hᵀ.
template <typename T, typename F>
GRU_HD BackwardResetBefore<T> backward_reset_before(const F& f, T dhn, T a_z, T a_h, T h) {
  const T z = f.rec(a_z), c = f.act(a_h);
  return {dhn * (h - c) * f.drec(a_z), dhn * (T(1) - z) * f.dact(a_h), dhn * z};
}

template <typename T>
struct BackwardResetGate {
  T da_r;
  T dh;  // added to the gradient w.r.t. h: q_h ⊙ drh ⊙ r
  T rh;  // r ⊙ hd_h, the operand of grad U_h
};

// reset_after=False, second phase: the reset gate from drh = da_h U_hᵀ; q_h is the recurrent
// dropout mask of gate h (1 without dropout), hd_h = h ⊙ q_h.
template <typename T, typename F>
GRU_HD BackwardResetGate<T> backward_reset_gate(const F& f, T drh, T a_r, T hd_h, T q_h) {
  const T r = f.rec(a_r);
  return {drh * hd_h * f.drec(a_r), q_h * drh * r, r * hd_h};
}

}  // namespace cell
}  // namespace gru_cuda
