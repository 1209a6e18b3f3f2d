// Operator schemas of gru_cuda (declared once, here) and the module's plain pybind11 helpers.
//
// Backends register implementations in their own files:
//   csrc/cpu/gru_cpu.cpp         TORCH_LIBRARY_IMPL(gru_cuda, CPU, m)
//   csrc/cuda/*.cpp              TORCH_LIBRARY_IMPL(gru_cuda, CUDA, m)   (CUDA builds only)
// Python adds register_fake and register_autograd (gru_cuda/ops.py).
//
// Op contract (all tensors of one floating dtype D unless said otherwise; the ops accept any
// strides and make contiguous copies where they need them):
//
// gru_forward(x, kernel, recurrent_kernel, bias, h0, mask, input_dropout_mask,
//             recurrent_dropout_mask, reset_after, activation, recurrent_activation,
//             go_backwards, zero_output_for_mask, save_for_backward)
//     -> (outputs, final_state, states, workspace)
//   x                      (T, B, F)   time-major input
//   kernel                 (F, 3H)     Keras layout, column blocks [z | r | h]
//   recurrent_kernel       (H, 3H)     same blocks
//   bias                   (2, 3H) if reset_after (row 0 input, row 1 recurrent), (3H,) otherwise, or None
//   h0                     (B, H)
//   mask                   bool (T, B) indexed by input time, or None
//   input_dropout_mask     (B, F) shared by the gates, or (3, B, F) one per gate [z, r, h], or None
//   recurrent_dropout_mask (3, B, H), multiplies h_{t-1} before each gate's recurrent product, or None
//   activation, recurrent_activation: ids of csrc/common/activations.h
//   go_backwards           step s reads input time T-1-s; outputs stay in processing order
//   outputs                (T, B, H) in processing order; final_state (B, H)
//   states                 (T, B, H) the carried state after each processing step
//   workspace              (T, B, 4H) [a_z | a_r | a_h | gh_h] when reset_after, (T, B, 3H)
//                          [a_z | a_r | a_h] otherwise: gate pre-activations (a_h includes the
//                          reset term) and, for reset_after, gh_h = h_drop U_h + b_hh.
//   states and workspace are empty (shape (0,)) when save_for_backward is false.
//
// gru_backward(grad_outputs, grad_final_state, x, kernel, recurrent_kernel, h0, states,
//              workspace, mask, input_dropout_mask, recurrent_dropout_mask, has_bias,
//              reset_after, activation, recurrent_activation, go_backwards,
//              zero_output_for_mask, need_grad_x=True)
//     -> (grad_x, grad_kernel, grad_recurrent_kernel, grad_bias, grad_h0)
//   grad_outputs (T, B, H), grad_final_state (B, H); the rest as saved by gru_forward.
//   grad_bias has the bias shape, or is empty (0,) when has_bias is false; grad_x is empty (0,)
//   when need_grad_x is false (x is data, as in a training step: its product is skipped).
#include <torch/extension.h>
#include <torch/library.h>

#include <string>
#include <vector>

#include "common/activations.h"
#include "cpu/cpu_blas.h"
#include "cpu/buffer_pool.h"
#include "cpu/cpu_isa.h"
#include "gru_persistent_pybind.h"

#ifdef GRU_CUDA_WITH_CUDA
namespace gru_cuda {
// Defined in csrc/cuda/device_info.cpp.
pybind11::dict cuda_device_capacity(int device);
}  // namespace gru_cuda
#endif

TORCH_LIBRARY(gru_cuda, m) {
  m.def(
      "gru_forward(Tensor x, Tensor kernel, Tensor recurrent_kernel, Tensor? bias, Tensor h0, "
      "Tensor? mask, Tensor? input_dropout_mask, Tensor? recurrent_dropout_mask, "
      "bool reset_after, int activation, int recurrent_activation, bool go_backwards, "
      "bool zero_output_for_mask, bool save_for_backward) "
      "-> (Tensor outputs, Tensor final_state, Tensor states, Tensor workspace)");
  m.def(
      "gru_backward(Tensor grad_outputs, Tensor grad_final_state, Tensor x, Tensor kernel, "
      "Tensor recurrent_kernel, Tensor h0, Tensor states, Tensor workspace, Tensor? mask, "
      "Tensor? input_dropout_mask, Tensor? recurrent_dropout_mask, bool has_bias, "
      "bool reset_after, int activation, int recurrent_activation, bool go_backwards, "
      "bool zero_output_for_mask, bool need_grad_x=True) "
      "-> (Tensor grad_x, Tensor grad_kernel, Tensor grad_recurrent_kernel, Tensor grad_bias, "
      "Tensor grad_h0)");
}

namespace {

std::vector<std::string> activation_names() {
  return std::vector<std::string>(gru_cuda::kActivationNames,
                                  gru_cuda::kActivationNames + gru_cuda::kNumActivations);
}

pybind11::dict build_info() {
  pybind11::dict info;
#ifdef GRU_CUDA_WITH_CUDA
  info["cuda"] = true;
#else
  info["cuda"] = false;
#endif
  info["torch_version_at_build"] = std::string(TORCH_VERSION);
#ifdef _OPENMP
  info["openmp"] = true;
#else
  info["openmp"] = false;
#endif
  return info;
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "gru_cuda compiled library: registers torch.ops.gru_cuda.* and plain helpers.";
  m.def("activation_names", &activation_names,
        "Names of the fused activations, in the order of their integer ids.");
  m.def("build_info", &build_info, "How this library was built (CUDA or CPU only, torch version).");
  m.def("cpu_isa", [] { return std::string(gru_cuda::cpu::isa_name(gru_cuda::cpu::cpu_isa())); },
        "Instruction-set variant of the float32 CPU passes that the next op call runs "
        "(the best this CPU runs, or GRU_CUDA_CPU_ISA).");
  m.def("cpu_isa_supported", &gru_cuda::cpu::cpu_isa_names_supported,
        "Instruction-set variants of the CPU passes that this CPU runs, lowest first.");
  m.def("cpu_blas", [] { return std::string(gru_cuda::cpu::cpu_blas_name()); },
        "Products of the CPU recurrences: 'mkl' (raw single-threaded GEMMs, batch rows split "
        "across threads) or 'aten' (whole-batch at::mm; no MKL, or GRU_CUDA_CPU_BLAS=aten).");
  m.def("cpu_buffer_pool_idle_bytes", &gru_cuda::cpu::buffer_pool_idle_bytes,
        "Bytes of idle buffers the CPU ops keep for their next call "
        "(GRU_CUDA_CPU_BUFFER_POOL_MB caps them; default 256).");
  m.def("cpu_buffer_pool_release", &gru_cuda::cpu::buffer_pool_release,
        "Frees the idle buffers the CPU ops keep for their next call.");
  gru_cuda::persistent::register_pybind(m);  // kernel paths, forced path, capacity model
#ifdef GRU_CUDA_WITH_CUDA
  m.def("cuda_device_capacity", &gru_cuda::cuda_device_capacity, pybind11::arg("device"),
        "On-chip capacity of a CUDA device (SMs, shared memory, registers, cooperative launch).");
#endif
}
