// Run-time lookup of MKL's GEMMs in the library that holds ATen (cpu_blas.h).
#include "cpu/cpu_blas.h"

#include <ATen/Parallel.h>
#include <c10/util/Exception.h>
#include <dlfcn.h>

#include <climits>
#include <cstdlib>
#include <cstring>

namespace gru_cuda {
namespace cpu {

namespace {

// MKL's LP64 interface (32-bit integers), as x86 builds of torch link it. (Its bfloat16 GEMM is
// not used: on this project's AMD CPU it ran at the float32 rate; gru_cpu_rows.h.)
using SgemmFn = void (*)(const char*, const char*, const int*, const int*, const int*,
                         const float*, const float*, const int*, const float*, const int*,
                         const float*, float*, const int*);
using SetThreadsLocalFn = int (*)(int);

struct Mkl {
  SgemmFn sgemm = nullptr;
  SetThreadsLocalFn set_threads_local = nullptr;
};

// A size for the BLAS: 64 bits holding a value below 2^31, so that its address reads the same
// value through a 32-bit (LP64) or a 64-bit (ILP64) interface on a little-endian CPU: a BLAS
// of the other integer width than expected gets the right sizes rather than garbage.
int64_t blas_int(int64_t v, const char* what) {
  TORCH_CHECK(v >= 0 && v <= INT_MAX, "gru_cuda CPU GEMM: ", what, " = ", v,
              " does not fit the BLAS's 32-bit sizes");
  return v;
}

void sgemm_row(const Mkl& m, bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A,
               int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  // Row-major C = op(A) op(B) is column-major C^T = op(B)^T op(A)^T: swap the operands.
  const char ca = ta ? 'T' : 'N', cb = tb ? 'T' : 'N';
  const int64_t m_ = blas_int(N, "N"), n_ = blas_int(M, "M"), k_ = blas_int(K, "K");
  const int64_t lda_ = blas_int(lda, "lda"), ldb_ = blas_int(ldb, "ldb");
  const int64_t ldc_ = blas_int(ldc, "ldc");
  auto p = [](const int64_t& v) { return reinterpret_cast<const int*>(&v); };
  const float one = 1.0f;
  m.sgemm(&cb, &ca, p(m_), p(n_), p(k_), &one, B, p(ldb_), A, p(lda_), &beta, C, p(ldc_));
}

// The check product: small integers (exact in float32), both orders of the second operand.
bool check_product(const Mkl& m) {
  constexpr int M = 3, N = 5, K = 4;
  float a[M * K], b[K * N], bt[N * K];
  for (int i = 0; i < M * K; ++i) a[i] = float(i % 7) - 3.0f;
  for (int k = 0; k < K; ++k)
    for (int n = 0; n < N; ++n) bt[n * K + k] = b[k * N + n] = float((k * N + n) % 5) - 2.0f;
  for (bool tb : {false, true}) {
    float c[M * N];
    for (float& v : c) v = 1.0f;
    sgemm_row(m, false, tb, M, N, K, a, K, tb ? bt : b, tb ? K : N, 1.0f, c, N);
    for (int i = 0; i < M; ++i)
      for (int n = 0; n < N; ++n) {
        float want = 1.0f;
        for (int k = 0; k < K; ++k) want += a[i * K + k] * b[k * N + n];
        if (c[i * N + n] != want) return false;
      }
  }
  return true;
}

const Mkl& mkl() {
  static const Mkl found = [] {
    Mkl m;
    // The library that defines ATen's parallel API also holds the BLAS it was linked with.
    Dl_info info{};
    if (dladdr(reinterpret_cast<void*>(&at::get_num_threads), &info) == 0 ||
        info.dli_fname == nullptr)
      return m;
    void* lib = dlopen(info.dli_fname, RTLD_LAZY | RTLD_NOLOAD);
    if (lib == nullptr) return m;
    // MKL's own entry points (not a generic sgemm_), and sgemm_ from the same library (dlsym
    // also searches the library's dependencies).
    void* marker = dlsym(lib, "mkl_get_max_threads");
    void* sgemm = dlsym(lib, "sgemm_");
    Dl_info at_marker{}, at_sgemm{};
    if (marker == nullptr || sgemm == nullptr || dladdr(marker, &at_marker) == 0 ||
        dladdr(sgemm, &at_sgemm) == 0 || at_marker.dli_fbase != at_sgemm.dli_fbase)
      return m;
    m.sgemm = reinterpret_cast<SgemmFn>(sgemm);
    // The C entry point (by value); the lower-case name is the Fortran one (by pointer).
    m.set_threads_local =
        reinterpret_cast<SetThreadsLocalFn>(dlsym(lib, "MKL_Set_Num_Threads_Local"));
    if (m.sgemm != nullptr && !check_product(m)) m.sgemm = nullptr;
    return m;
  }();
  return found;
}

bool enabled() {
  const char* env = std::getenv("GRU_CUDA_CPU_BLAS");
  if (env == nullptr || env[0] == '\0' || std::strcmp(env, "auto") == 0 ||
      std::strcmp(env, "mkl") == 0)
    return true;
  TORCH_CHECK(std::strcmp(env, "aten") == 0,
              "GRU_CUDA_CPU_BLAS must be one of auto, mkl, aten; got '", env, "'");
  return false;
}

}  // namespace

bool cpu_blas_available() { return enabled() && mkl().sgemm != nullptr; }

const char* cpu_blas_name() { return cpu_blas_available() ? "mkl" : "aten"; }

void gemm_f32(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
              int64_t lda, const float* B, int64_t ldb, float beta, float* C, int64_t ldc) {
  if (M == 0 || N == 0) return;
  sgemm_row(mkl(), trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
}

CpuBlasSingleThread::CpuBlasSingleThread() {
  if (mkl().set_threads_local != nullptr) previous_ = mkl().set_threads_local(1);
}

CpuBlasSingleThread::~CpuBlasSingleThread() {
  if (mkl().set_threads_local != nullptr) mkl().set_threads_local(previous_);
}

}  // namespace cpu
}  // namespace gru_cuda
