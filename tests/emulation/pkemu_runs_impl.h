// The definitions of pkemu_runs.h, included once per dtype by pkemu_runs_<dtype>.cpp.
#pragma once

#include "persistent_harness.h"
#include "pkemu_runs.h"

namespace pkemu {

template <class P>
P* at(uintptr_t v) {
  return reinterpret_cast<P*>(v);
}

inline emu_pk::ps::Problem problem_of(const Case& c, bool rdm, bool backward,
                                      emu_pk::ps::DType dtype) {
  emu_pk::ps::Problem pr;
  pr.B = c.B;
  pr.T = c.T;
  pr.H = c.H;
  pr.dtype = dtype;
  pr.reset_after = c.reset_after;
  pr.recurrent_dropout = rdm;
  pr.backward = backward;
  pr.allow_tf32 = c.allow_tf32;
  return pr;
}

// The fields both directions' parameters take from the case; `counter` (zeroed, outliving the
// launch) is the grid path's barrier.
template <class Params>
void set_cell(Params& p, const Case& c, unsigned long long* counter) {
  p.steps = c.T;
  p.B = c.B;
  p.H = c.H;
  p.barrier = counter;
  p.activation = c.activation;
  p.recurrent_activation = c.recurrent_activation;
  p.reset_after = c.reset_after;
  p.go_backwards = c.go_backwards;
  p.zero_output_for_mask = c.zero_output_for_mask;
}

template <typename T>
emu_pk::ps::DType dtype_of() {
  if constexpr (std::is_same_v<T, __half>) return emu_pk::ps::DType::kFloat16;
  if constexpr (std::is_same_v<T, __nv_bfloat16>) return emu_pk::ps::DType::kBFloat16;
  return emu_pk::ps::DType::kFloat32;
}

template <typename T>
std::string forward(const Case& c, uintptr_t gx, uintptr_t U, uintptr_t bh, uintptr_t h0,
                    uintptr_t mask, uintptr_t rdm, uintptr_t outputs, uintptr_t states,
                    uintptr_t workspace, uintptr_t final_state, uintptr_t state_scratch,
                    uintptr_t ws_scratch, uintptr_t rh) {
  emu_pk::kn::PersistentGeometry geo;
  std::string info;
  if (!emu_pk::plan(problem_of(c, rdm != 0, false, dtype_of<T>()), c.path, c.product,
                    c.sm_count, c.max_cluster, c.max_bt, geo, info, c.smem_per_block)) {
    return info;
  }
  emu_pk::kn::PersistentForwardParams<T> p;
  p.gx = at<T>(gx);
  p.U = at<T>(U);
  p.recurrent_bias = at<T>(bh);
  p.h0 = at<T>(h0);
  p.mask = at<bool>(mask);
  p.recurrent_dropout = at<T>(rdm);
  p.outputs = at<T>(outputs);
  p.states = at<T>(states);
  p.workspace = at<T>(workspace);
  p.final_state = at<T>(final_state);
  p.state_scratch = at<T>(state_scratch);
  p.ws_scratch = at<T>(ws_scratch);
  p.rh = at<T>(rh);
  unsigned long long counter = 0;
  set_cell(p, c, &counter);
  emu_pk::forward(p, geo);
  return info;
}

template <typename T>
std::string backward(const Case& c, uintptr_t dY, uintptr_t dS, uintptr_t U, uintptr_t h0,
                     uintptr_t states, uintptr_t workspace, uintptr_t mask, uintptr_t rdm,
                     uintptr_t dgates, uintptr_t aux, uintptr_t grad_h0, uintptr_t dh_part,
                     uintptr_t dcarry) {
  emu_pk::kn::PersistentGeometry geo;
  std::string info;
  if (!emu_pk::plan(problem_of(c, rdm != 0, true, dtype_of<T>()), c.path, c.product, c.sm_count,
                    c.max_cluster, c.max_bt, geo, info, c.smem_per_block)) {
    return info;
  }
  emu_pk::kn::PersistentBackwardParams<T> p;
  p.grad_outputs = at<T>(dY);
  p.grad_final_state = at<T>(dS);
  p.U = at<T>(U);
  p.h0 = at<T>(h0);
  p.states = at<T>(states);
  p.workspace = at<T>(workspace);
  p.mask = at<bool>(mask);
  p.recurrent_dropout = at<T>(rdm);
  p.dgates = at<T>(dgates);
  p.aux = at<T>(aux);
  p.grad_h0 = at<T>(grad_h0);
  p.dh_part = at<float>(dh_part);
  p.dcarry = at<float>(dcarry);
  unsigned long long counter = 0;
  set_cell(p, c, &counter);
  emu_pk::backward(p, geo);
  return info;
}

template <typename T>
std::string cta_product(int product, int J, int kp, int ldh, int bt, int rows, int g0, int g1,
                        bool per_gate, uintptr_t w_plain, uintptr_t hs, uintptr_t gs) {
  namespace ps = emu_pk::ps;
  namespace pk = emu_pk::pk;
  const ps::Product prod = static_cast<ps::Product>(product);
  const int ng = per_gate ? g1 - g0 : 1;
  emu_pk::kn::PersistentGeometry geo;
  geo.J = J;
  geo.kp = kp;
  geo.ldh = ldh;
  geo.bt = bt;
  geo.ng = ng;
  geo.ctas = 1;
  geo.product = product;
  geo.smem_bytes = ps::smem_for(J, kp, bt, ng, 1, false, int(sizeof(T)), prod);
  if (ldh != ps::operand_stride(kp, prod)) return "ldh differs from the model's operand_stride";
  const T* wp = at<T>(w_plain);
  float* h = at<float>(hs);
  float* out = at<float>(gs);
  emu::launch_cooperative(1, pk::kThreads, size_t(geo.smem_bytes), 1, [&] {
    GRU_PK_DYNAMIC_SMEM(smem_raw);
    const pk::Smem sm = pk::carve_smem<T>(smem_raw, geo, 1, false);
    T* w = static_cast<T*>(sm.w);
    for (int idx = int(threadIdx.x); idx < 3 * J * kp; idx += pk::kThreads) {
      w[pk::weight_index<T>(idx / kp, idx % kp, kp, product != 0)] = wp[idx];
    }
    for (int idx = int(threadIdx.x); idx < ng * bt * ldh; idx += pk::kThreads) sm.hs[idx] = h[idx];
    for (int idx = int(threadIdx.x); idx < bt * 3 * J; idx += pk::kThreads) sm.gs[idx] = out[idx];
    __syncthreads();
    pk::recurrent_product<T>(sm, geo, sm.hs, per_gate, rows, g0, g1);
    __syncthreads();
    for (int idx = int(threadIdx.x); idx < bt * 3 * J; idx += pk::kThreads) out[idx] = sm.gs[idx];
  });
  return "";
}

}  // namespace pkemu

#define PKEMU_INSTANTIATE(T)                                                                  \
  namespace pkemu {                                                                           \
  template std::string forward<T>(const Case&, uintptr_t, uintptr_t, uintptr_t, uintptr_t,    \
                                  uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t,      \
                                  uintptr_t, uintptr_t, uintptr_t, uintptr_t);                \
  template std::string backward<T>(const Case&, uintptr_t, uintptr_t, uintptr_t, uintptr_t,   \
                                   uintptr_t, uintptr_t, uintptr_t, uintptr_t, uintptr_t,     \
                                   uintptr_t, uintptr_t, uintptr_t, uintptr_t);               \
  template std::string cta_product<T>(int, int, int, int, int, int, int, int, bool, uintptr_t, \
                                      uintptr_t, uintptr_t);                                  \
  }
