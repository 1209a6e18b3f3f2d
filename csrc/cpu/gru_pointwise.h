// Fused per-step pointwise passes of the CPU GRU (see docs/algorithm.md). Each pass is one loop
// over batch x units, templated on the activation pair so the inner loop has no branch on it.
#pragma once

#include <ATen/Parallel.h>

#include <cstdint>

#include "common/activations.h"

namespace gru_cuda {
namespace cpu {

// Recurrent products of one step: gate g of row b, unit j is at ptr[b * row + g * gate + j].
// The fused single GEMM gives a (B, 3H) block (row = 3H, gate = H); per-gate GEMMs with
// recurrent dropout give (3, B, H) (row = H, gate = B * H).
template <typename T>
struct GateView {
  const T* ptr;
  int64_t row, gate;
  const T& at(int64_t b, int64_t g, int64_t j) const { return ptr[b * row + g * gate + j]; }
};

template <typename T>
struct ForwardStep {
  int64_t B, H;
  const T* gx;        // (B, 3H) input projection of this step's input time, biases b_i included
  GateView<T> gh;     // recurrent products (reset_after: all 3 gates; otherwise z and r)
  const T* ghh;       // reset_after=False, second phase: (B, H) (r * hd_h) U_h; else unused
  const T* bh;        // (3H) recurrent bias (reset_after only) or nullptr
  const T* h;         // (B, H) previous state
  const T* q_h;       // (B, H) recurrent dropout mask of the candidate gate, or nullptr
  const bool* valid;  // (B) mask at this input time, or nullptr (all valid)
  const T* prev_out;  // (B, H) previous output, or nullptr (zeros)
  bool zero_out;      // zero_output_for_mask
  T* ws;              // (B, WS) this step's workspace row block
  int64_t ws_width;   // 4H (reset_after) or 3H
  T* rh;              // reset_after=False: (B, H) r * hd_h for the second GEMM
  T* state;           // (B, H)
  T* out;             // (B, H)
};

// Grain of the parallel loops: enough elements per task to amortise the thread hand-off.
constexpr int64_t kGrain = 4096;

template <typename T, typename F>
inline void for_each_unit(int64_t B, int64_t H, F&& f) {
  at::parallel_for(0, B * H, kGrain, [&](int64_t begin, int64_t end) {
    int64_t b = begin / H, j = begin % H;
    for (int64_t i = begin; i < end; ++i) {
      f(b, j);
      if (++j == H) { j = 0; ++b; }
    }
  });
}

template <typename T>
inline void finish_unit(const ForwardStep<T>& p, int64_t b, int64_t j, T z, T c) {
  const int64_t k = b * p.H + j;
  const T h = p.h[k];
  const T hn = z * h + (T(1) - z) * c;
  if (p.valid == nullptr || p.valid[b]) {
    p.state[k] = hn;
    p.out[k] = hn;
  } else {  // masked: carry the state; repeat (or zero) the output. Select, never multiply.
    p.state[k] = h;
    p.out[k] = (p.zero_out || p.prev_out == nullptr) ? T(0) : p.prev_out[k];
  }
}

// reset_after=True: the whole step in one pass.
template <typename T, int ACT, int RACT>
void forward_reset_after(const ForwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_unit<T>(p.B, H, [&](int64_t b, int64_t j) {
    const T* gx = p.gx + b * 3 * H;
    const T bz = p.bh ? p.bh[j] : T(0), br = p.bh ? p.bh[H + j] : T(0),
            bhh = p.bh ? p.bh[2 * H + j] : T(0);
    const T a_z = gx[j] + p.gh.at(b, 0, j) + bz;
    const T a_r = gx[H + j] + p.gh.at(b, 1, j) + br;
    const T gh_h = p.gh.at(b, 2, j) + bhh;
    const T z = act_forward<RACT>(a_z), r = act_forward<RACT>(a_r);
    const T a_h = gx[2 * H + j] + r * gh_h;
    const T c = act_forward<ACT>(a_h);
    T* ws = p.ws + b * p.ws_width;
    ws[j] = a_z;
    ws[H + j] = a_r;
    ws[2 * H + j] = a_h;
    ws[3 * H + j] = gh_h;
    finish_unit(p, b, j, z, c);
  });
}

// reset_after=False, phase 1: gates z, r and the reset state r * hd_h for the second GEMM.
template <typename T, int RACT>
void forward_reset_before_gates(const ForwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_unit<T>(p.B, H, [&](int64_t b, int64_t j) {
    const T* gx = p.gx + b * 3 * H;
    const int64_t k = b * H + j;
    const T a_z = gx[j] + p.gh.at(b, 0, j);
    const T a_r = gx[H + j] + p.gh.at(b, 1, j);
    T* ws = p.ws + b * p.ws_width;
    ws[j] = a_z;
    ws[H + j] = a_r;
    const T hd_h = p.q_h ? p.h[k] * p.q_h[k] : p.h[k];
    p.rh[k] = act_forward<RACT>(a_r) * hd_h;
  });
}

// reset_after=False, phase 2: candidate from (r * hd_h) U_h, then the update.
template <typename T, int ACT, int RACT>
void forward_reset_before_candidate(const ForwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_unit<T>(p.B, H, [&](int64_t b, int64_t j) {
    const T* gx = p.gx + b * 3 * H;
    T* ws = p.ws + b * p.ws_width;
    const T a_h = gx[2 * H + j] + p.ghh[b * H + j];
    ws[2 * H + j] = a_h;
    finish_unit(p, b, j, act_forward<RACT>(ws[j]), act_forward<ACT>(a_h));
  });
}

template <typename T>
struct BackwardStep {
  int64_t B, H;
  const T* dy;        // (B, H) gradient of this step's output
  T* dh;              // (B, H) in: gradient w.r.t. state_s; out: partial gradient w.r.t. state_{s-1}
  T* dcarry;          // (B, H) gradient flowing into out_s from later masked steps (in/out)
  const T* h;         // (B, H) state_{s-1}
  const T* q_h;       // (B, H) recurrent dropout mask of the candidate gate, or nullptr
  const T* ws;        // (B, WS) workspace of this step
  int64_t ws_width;
  const bool* valid;  // (B) or nullptr
  bool zero_out;
  T* dgx;             // (B, 3H) gradient w.r.t. the input projection (row stride 3H)
  T* dgh;             // (B, 3H) gradient w.r.t. the recurrent products (row stride 3H)
  const T* drh;       // reset_after=False phase 2: (B, H) da_h U_h^T
};

// Output/mask bookkeeping shared by both conventions; returns dhn (gradient w.r.t. h_new),
// and leaves in dh the carried part of the gradient w.r.t. state_{s-1}.
template <typename T>
inline T route_gradient(const BackwardStep<T>& p, int64_t b, int64_t k) {
  const T g = p.dy[k] + p.dcarry[k];
  if (p.valid == nullptr || p.valid[b]) {
    p.dcarry[k] = T(0);
    const T dhn = p.dh[k] + g;
    return dhn;
  }
  p.dcarry[k] = p.zero_out ? T(0) : g;  // the masked output repeated out_{s-1}
  return T(0);                          // dh stays: the state was carried unchanged
}

template <typename T, int ACT, int RACT>
void backward_reset_after(const BackwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_unit<T>(p.B, H, [&](int64_t b, int64_t j) {
    const int64_t k = b * H + j;
    T* dgx = p.dgx + b * 3 * H;
    T* dgh = p.dgh + b * 3 * H;
    const bool valid = p.valid == nullptr || p.valid[b];
    const T dhn = route_gradient(p, b, k);
    if (!valid) {
      dgx[j] = dgx[H + j] = dgx[2 * H + j] = T(0);
      dgh[j] = dgh[H + j] = dgh[2 * H + j] = T(0);
      return;
    }
    const T* ws = p.ws + b * p.ws_width;
    const T a_z = ws[j], a_r = ws[H + j], a_h = ws[2 * H + j], gh_h = ws[3 * H + j];
    const T z = act_forward<RACT>(a_z), r = act_forward<RACT>(a_r), c = act_forward<ACT>(a_h);
    const T da_h = dhn * (T(1) - z) * act_backward<ACT>(a_h);
    const T da_z = dhn * (p.h[k] - c) * act_backward<RACT>(a_z);
    const T da_r = da_h * gh_h * act_backward<RACT>(a_r);
    dgx[j] = da_z;
    dgx[H + j] = da_r;
    dgx[2 * H + j] = da_h;
    dgh[j] = da_z;
    dgh[H + j] = da_r;
    dgh[2 * H + j] = da_h * r;
    p.dh[k] = dhn * z;
  });
}

// reset_after=False, phase 1: everything that does not need da_h U_h^T.
template <typename T, int ACT, int RACT>
void backward_reset_before_candidate(const BackwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_unit<T>(p.B, H, [&](int64_t b, int64_t j) {
    const int64_t k = b * H + j;
    T* dgx = p.dgx + b * 3 * H;
    const bool valid = p.valid == nullptr || p.valid[b];
    const T dhn = route_gradient(p, b, k);
    if (!valid) {
      dgx[j] = dgx[H + j] = dgx[2 * H + j] = T(0);
      return;
    }
    const T* ws = p.ws + b * p.ws_width;
    const T a_z = ws[j], a_h = ws[2 * H + j];
    const T z = act_forward<RACT>(a_z), c = act_forward<ACT>(a_h);
    dgx[2 * H + j] = dhn * (T(1) - z) * act_backward<ACT>(a_h);
    dgx[j] = dhn * (p.h[k] - c) * act_backward<RACT>(a_z);
    p.dh[k] = dhn * z;
  });
}

// reset_after=False, phase 2: the reset gate, from drh = da_h U_h^T.
template <typename T, int RACT>
void backward_reset_before_gates(const BackwardStep<T>& p) {
  const int64_t H = p.H;
  for_each_unit<T>(p.B, H, [&](int64_t b, int64_t j) {
    if (p.valid != nullptr && !p.valid[b]) return;  // dgx row already zero, dh already carried
    const int64_t k = b * H + j;
    const T* ws = p.ws + b * p.ws_width;
    const T a_r = ws[H + j];
    const T q = p.q_h ? p.q_h[k] : T(1);
    const T drh = p.drh[k];
    p.dgx[b * 3 * H + H + j] = drh * p.h[k] * q * act_backward<RACT>(a_r);
    p.dh[k] += q * drh * act_forward<RACT>(a_r);
  });
}

// reset_after=False, for dU_h after the loop: out = r * hd_h over all steps (r from the workspace).
template <typename T, int RACT>
void reset_state_all(int64_t rows, int64_t H, const T* ws, int64_t ws_width, const T* hd_h, T* out) {
  for_each_unit<T>(rows, H, [&](int64_t b, int64_t j) {
    out[b * H + j] = act_forward<RACT>(ws[b * ws_width + H + j]) * hd_h[b * H + j];
  });
}

}  // namespace cpu
}  // namespace gru_cuda
