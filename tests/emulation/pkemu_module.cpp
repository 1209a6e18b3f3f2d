// Python module `pkemu` for test_persistent_host_emulation.py: the persistent kernels on
// the host (persistent_harness.h), buffers passed as raw addresses of torch CPU tensors.
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "persistent_harness.h"

namespace {

template <class T>
T* P(uintptr_t v) {
  return reinterpret_cast<T*>(v);
}

std::string forward(int64_t T, int64_t B, int64_t H, uintptr_t gx, uintptr_t U, uintptr_t bh,
                    uintptr_t h0, uintptr_t mask, uintptr_t rdm, uintptr_t outputs,
                    uintptr_t states, uintptr_t workspace, uintptr_t final_state,
                    uintptr_t state_scratch, uintptr_t ws_scratch, uintptr_t rh, bool ra,
                    int act, int ract, bool go_back, bool zero_out, const std::string& path,
                    int sm_count, int max_cluster, int max_bt) {
  emu_pk::ps::Problem pr;
  pr.B = B; pr.T = T; pr.H = H; pr.reset_after = ra; pr.recurrent_dropout = rdm != 0;
  emu_pk::kn::PersistentGeometry geo;
  std::string info;
  if (!emu_pk::plan(pr, path, sm_count, max_cluster, max_bt, geo, info)) return info;
  emu_pk::kn::PersistentForwardParams<float> p;
  p.steps = T; p.B = B; p.H = H;
  p.gx = P<float>(gx); p.U = P<float>(U); p.recurrent_bias = P<float>(bh); p.h0 = P<float>(h0);
  p.mask = P<bool>(mask); p.recurrent_dropout = P<float>(rdm); p.outputs = P<float>(outputs);
  p.states = P<float>(states); p.workspace = P<float>(workspace);
  p.final_state = P<float>(final_state); p.state_scratch = P<float>(state_scratch);
  p.ws_scratch = P<float>(ws_scratch); p.rh = P<float>(rh);
  unsigned long long counter = 0;
  p.barrier = &counter;
  p.activation = act; p.recurrent_activation = ract; p.reset_after = ra;
  p.go_backwards = go_back; p.zero_output_for_mask = zero_out;
  emu_pk::forward(p, geo);
  return info;
}

std::string backward(int64_t T, int64_t B, int64_t H, uintptr_t dY, uintptr_t dS, uintptr_t U,
                     uintptr_t h0, uintptr_t states, uintptr_t workspace, uintptr_t mask,
                     uintptr_t rdm, uintptr_t dgates, uintptr_t aux, uintptr_t grad_h0,
                     uintptr_t dh_part, uintptr_t dcarry, bool ra, int act, int ract,
                     bool go_back, bool zero_out, const std::string& path, int sm_count,
                     int max_cluster, int max_bt) {
  emu_pk::ps::Problem pr;
  pr.B = B; pr.T = T; pr.H = H; pr.reset_after = ra; pr.recurrent_dropout = rdm != 0;
  pr.backward = true;
  emu_pk::kn::PersistentGeometry geo;
  std::string info;
  if (!emu_pk::plan(pr, path, sm_count, max_cluster, max_bt, geo, info)) return info;
  emu_pk::kn::PersistentBackwardParams<float> p;
  p.steps = T; p.B = B; p.H = H;
  p.grad_outputs = P<float>(dY); p.grad_final_state = P<float>(dS); p.U = P<float>(U);
  p.h0 = P<float>(h0); p.states = P<float>(states); p.workspace = P<float>(workspace);
  p.mask = P<bool>(mask); p.recurrent_dropout = P<float>(rdm); p.dgates = P<float>(dgates);
  p.aux = P<float>(aux); p.grad_h0 = P<float>(grad_h0); p.dh_part = P<float>(dh_part);
  p.dcarry = P<float>(dcarry);
  unsigned long long counter = 0;
  p.barrier = &counter;
  p.activation = act; p.recurrent_activation = ract; p.reset_after = ra;
  p.go_backwards = go_back; p.zero_output_for_mask = zero_out;
  emu_pk::backward(p, geo);
  return info;
}

}  // namespace

PYBIND11_MODULE(pkemu, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
