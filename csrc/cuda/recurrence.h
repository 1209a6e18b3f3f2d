// The recurrence of one CUDA call as the op implementation (gru_cuda_impl.cpp) hands it to the
// path it chose (path_choice.h): the stepwise loop (stepwise.h) or a persistent launch
// (persistent.h). Every tensor is contiguous and on the current device; T, B and H are > 0.
#pragma once

#include <ATen/core/Tensor.h>

namespace gru_cuda {

// What both directions share. U (H, 3H); h0 (B, H); mask bool (T, B) or undefined; rdm the
// recurrent dropout mask (3, B, H) or undefined.
struct RecurrentCell {
  at::Tensor U, h0, mask, rdm;
  bool reset_after = true;
  int activation = 0, recurrent_activation = 0;
  bool go_backwards = false, zero_output_for_mask = false;
};

// Reads gx (T, B, 3H), the input projection (b_i and input dropout applied), and bias, the whole
// bias ((2, 3H) when reset_after: only row 1 is read) or undefined. Writes outputs (T, B, H) and
// final_state (B, H), and states (T, B, H) and workspace (T, B, 4H | 3H), which are both (0,)
// when not saved for the backward pass.
struct ForwardRecurrence {
  RecurrentCell cell;
  at::Tensor gx, bias;
  at::Tensor outputs, final_state, states, workspace;
};

// Reads grad_outputs (T, B, H), grad_final_state (B, H), and states and workspace as the forward
// saved them. Writes dgates (T, B, 3H) and aux (T, B, H), both by input time (reset_after:
// dgates = dgh, aux = da_h; otherwise dgates = dgx = dgh, aux = r ⊙ hd_h), and grad_h0 (B, H).
struct BackwardRecurrence {
  RecurrentCell cell;
  at::Tensor grad_outputs, grad_final_state, states, workspace;
  at::Tensor dgates, aux, grad_h0;
};

}  // namespace gru_cuda
