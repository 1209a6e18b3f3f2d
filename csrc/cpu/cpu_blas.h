// Row-major GEMMs on raw pointers for the CPU recurrences, straight into the BLAS that ATen was
// linked with.
//
// Why not at::mm_out: the per-step products of a recurrence are small, and the CPU path runs
// the recurrence of disjoint batch-row blocks on separate threads (one block per thread, no
// barrier between steps; docs/cpu.md). Each thread then needs a single-threaded product on
// pointers into its own rows, with no tensor views, dispatcher calls or allocation per step.
// ATen's own raw-pointer GEMM (at::native::cpublas::gemm) is not exported from libtorch_cpu,
// but the MKL that x86 builds of torch link statically is: its symbols are looked up at run time
// in the library that holds ATen, and checked once on a small product. Where they are missing
// (a torch built on another BLAS) the op keeps its ATen products on whole-batch tensors.
#pragma once

#include <cstdint>

namespace gru_cuda {
namespace cpu {

// Whether the raw float32 GEMM is available: MKL found, its check product right, and not
// switched off with GRU_CUDA_CPU_BLAS=aten (read on every call, like GRU_CUDA_CPU_ISA, so that
// tests run both paths in one process; any other value than aten, mkl or auto is an error).
bool cpu_blas_available();
// "mkl" or "aten": what the recurrences use now (the Python helper _C.cpu_blas()).
const char* cpu_blas_name();

// C (M, N) = op(A) (M, K) . op(B) (K, N) + beta * C, row-major with row strides lda, ldb, ldc;
// op(X) = X^T when trans_x (X is then stored (K, M) or (N, K)). Requires cpu_blas_available().
// Inside a region where cpu_blas_single_thread is held the product runs on the calling thread.
void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
              int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc);

// While alive, the BLAS runs single-threaded on this thread (MKL's thread-local setting); the
// destructor restores the previous setting. A no-op without MKL.
class CpuBlasSingleThread {
 public:
  CpuBlasSingleThread();
  ~CpuBlasSingleThread();
  CpuBlasSingleThread(const CpuBlasSingleThread&) = delete;
  CpuBlasSingleThread& operator=(const CpuBlasSingleThread&) = delete;

 private:
  int previous_ = 0;
};

}  // namespace cpu
}  // namespace gru_cuda
