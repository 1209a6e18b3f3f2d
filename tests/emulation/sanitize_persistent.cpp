// The persistent kernels of the sanitizer driver, in their own translation unit so that a
// planted-bug copy of persistent_kernels.cuh (test_sanitize.py) rebuilds only this one.
#include "persistent_harness.h"
#include "sanitize_driver.h"

bool sd_persistent_plan(int64_t T, int64_t B, int64_t H, bool reset_after, bool rdm,
                        bool backward, const std::string& path, const std::string& product,
                        int sm_count, int max_cluster, gru_cuda::kernels::PersistentGeometry& geo,
                        std::string& info) {
  emu_pk::ps::Problem pr;
  pr.T = T;
  pr.B = B;
  pr.H = H;
  pr.reset_after = reset_after;
  pr.recurrent_dropout = rdm;
  pr.backward = backward;
  return emu_pk::plan(pr, path, product, sm_count, max_cluster, 0, geo, info);
}

void sd_persistent_forward(const gru_cuda::kernels::PersistentForwardParams<float>& p,
                           const gru_cuda::kernels::PersistentGeometry& geo) {
  emu_pk::forward(p, geo);
}

void sd_persistent_backward(const gru_cuda::kernels::PersistentBackwardParams<float>& p,
                            const gru_cuda::kernels::PersistentGeometry& geo) {
  emu_pk::backward(p, geo);
}
