// Entry points shared by the translation units of the sanitizer driver (sanitize_driver.cpp).
#pragma once
#include <string>

#include "kernels/persistent/gru_persistent.h"

// sanitize_persistent.cpp: the persistent kernels on the host (persistent_harness.h).
bool sd_persistent_plan(int64_t T, int64_t B, int64_t H, bool reset_after, bool rdm,
                        bool backward, const std::string& path, const std::string& product,
                        int sm_count, int max_cluster, gru_cuda::kernels::PersistentGeometry& geo,
                        std::string& info);
void sd_persistent_forward(const gru_cuda::kernels::PersistentForwardParams<float>& p,
                           const gru_cuda::kernels::PersistentGeometry& geo);
void sd_persistent_backward(const gru_cuda::kernels::PersistentBackwardParams<float>& p,
                            const gru_cuda::kernels::PersistentGeometry& geo);
