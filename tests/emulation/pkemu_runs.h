// The emulated persistent launches behind the Python module `pkemu` (pkemu_module.cpp): one
// function per direction, buffers as raw addresses of torch CPU tensors in the storage dtype T.
// Instantiated once per dtype in pkemu_runs_<dtype>.cpp, so that the three builds compile in
// parallel.
#pragma once

#include <cstdint>
#include <string>

namespace pkemu {

struct Case {
  int64_t T = 0, B = 0, H = 0;
  bool reset_after = true, go_backwards = false, zero_output_for_mask = false;
  int activation = 0, recurrent_activation = 1;
  std::string path, product;
  bool allow_tf32 = false;
  int sm_count = 4, max_cluster = 4, max_bt = 0;
  int smem_per_block = 232448;  // of the fictitious device (persistent_harness.h, fake_caps)
};

// Returns the plan's description ("persistent tensor_core J=8 ..."), or the model's reason
// ("nofit: ...") when the model does not choose the path; nothing runs then.
template <typename T>
std::string forward(const Case& c, uintptr_t gx, uintptr_t U, uintptr_t bh, uintptr_t h0,
                    uintptr_t mask, uintptr_t rdm, uintptr_t outputs, uintptr_t states,
                    uintptr_t workspace, uintptr_t final_state, uintptr_t state_scratch,
                    uintptr_t ws_scratch, uintptr_t rh);

template <typename T>
std::string backward(const Case& c, uintptr_t dY, uintptr_t dS, uintptr_t U, uintptr_t h0,
                     uintptr_t states, uintptr_t workspace, uintptr_t mask, uintptr_t rdm,
                     uintptr_t dgates, uintptr_t aux, uintptr_t grad_h0, uintptr_t dh_part,
                     uintptr_t dcarry);

// The tensor-core product of one emulated CTA (tensor_core.cuh, through recurrent_product):
// w_plain (3J x kp, storage dtype, row-major) is stored swizzled as the kernels store it, hs
// (ng x bt x ldh fp32) is the staged operand, gs (bt x 3J fp32) receives the product of gates
// [g0, g1). Returns "" or an error.
template <typename T>
std::string cta_product(int product, int J, int kp, int ldh, int bt, int rows, int g0, int g1,
                        bool per_gate, uintptr_t w_plain, uintptr_t hs, uintptr_t gs);

}  // namespace pkemu
