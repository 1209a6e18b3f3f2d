// Fused CPU implementation of gru_cuda::gru_forward / gru_backward (docs/algorithm.md):
// registration only. The host code is in gru_cpu_forward.cpp and gru_cpu_backward.cpp, the
// per-step pointwise passes in instantiate/gru_cpu_{fwd,bwd}_{ra,rb}_{f32,f64}.cpp (gru_cpu_steps.h), split
// so that no translation unit dominates the build. bfloat16/float16 compute in float32
// (compute_type in gru_cpu_ops.h).
#include <torch/library.h>

#include "cpu/gru_cpu_ops.h"

TORCH_LIBRARY_IMPL(gru_cuda, CPU, m) {
  m.impl("gru_forward", &gru_cuda::cpu::gru_forward_cpu);
  m.impl("gru_backward", &gru_cuda::cpu::gru_backward_cpu);
}
