// The persistent kernels of the grid path (cooperative launch, grid barrier).
#pragma once

#include "kernels/persistent/barrier.cuh"
#include "kernels/persistent/operand.cuh"
#include "kernels/persistent/pointwise.cuh"
#include "kernels/persistent/product.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// =============================================================================================
// Grid path
// =============================================================================================

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    forward_grid_kernel(const PersistentForwardParams<T> p, const PersistentGeometry geo) {
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  const int J = geo.J, kp = geo.kp, ldh = geo.ldh, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, BH = p.B * p.H, steps = p.steps;
  const int j0 = blockIdx.x * J;
  const Smem sm = carve_smem<T>(smem_raw, geo, 1, false);
  T* const w = static_cast<T*>(sm.w);
  load_forward_weights(w, p.U, H, J, kp, j0, geo.product != kProductSimt);
  zero_floats(sm.hs, sm.buf_stride);
  __syncthreads();
  GridBarrier bar{p.barrier, 0ull};
  const T* q = p.recurrent_dropout;

  for (int64_t s = 0; s < steps; ++s) {
    const int64_t tau = p.go_backwards ? steps - 1 - s : s;
    const T* hprev = s == 0 ? p.h0 : state_at(p, s - 1);
    T* hcur = state_at(p, s);
    for (int64_t b0 = 0; b0 < B; b0 += bt) {
      const int rows = int(B - b0 < bt ? B - b0 : bt);
      const int nops = q != nullptr ? (kRA ? 3 : 2) : 1;
      prefetch_forward_step(p, tau, b0, rows, J, j0);
      stage_rows(sm.hs, sm.op_stride, ldh, nops, rows, H, hprev + b0 * H, H, 0,
                 q != nullptr ? q + b0 * H : nullptr, BH);
      __syncthreads();
      recurrent_product<T>(sm, geo, sm.hs, q != nullptr, rows, 0, kRA ? 3 : 2);
      __syncthreads();
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float* g = sm.gs + r * 3 * J + jj;
        if constexpr (kRA) {
          forward_ra_point<T, A, R>(p, s, tau, b0 + r, j, g, J, hprev, hcur);
        } else {
          p.rh[(b0 + r) * H + j] = forward_rb_point1<T, R>(p, s, tau, b0 + r, j, g, J, hprev);
        }
      }
    }
    if constexpr (!kRA) {
      bar.sync();  // every CTA's r ⊙ hd_h is in p.rh
      for (int64_t b0 = 0; b0 < B; b0 += bt) {
        const int rows = int(B - b0 < bt ? B - b0 : bt);
        stage_rows(sm.hs, sm.op_stride, ldh, 1, rows, H, p.rh + b0 * H, H, 0,
                   static_cast<const T*>(nullptr), 0);
        __syncthreads();
        recurrent_product<T>(sm, geo, sm.hs, false, rows, 2, 3);
        __syncthreads();
        GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
          forward_rb_point2<T, A, R>(p, s, tau, b0 + r, j, sm.gs[r * 3 * J + 2 * J + jj], hprev,
                                     hcur);
        }
      }
    }
    bar.sync();  // states of step s visible to every CTA
  }
}

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    backward_grid_kernel(const PersistentBackwardParams<T> p, const PersistentGeometry geo) {
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  const int J = geo.J, kp = geo.kp, ldh = geo.ldh, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, steps = p.steps, H3 = 3 * p.H;
  const int j0 = blockIdx.x * J;
  const Smem sm = carve_smem<T>(smem_raw, geo, 1, false);
  T* const w = static_cast<T*>(sm.w);
  load_backward_weights(w, p.U, H, J, kp, j0, geo.product != kProductSimt);
  zero_floats(sm.hs, sm.buf_stride);
  __syncthreads();
  GridBarrier bar{p.barrier, 0ull};
  constexpr int kZR = kRA ? 3 : 2;  // gates whose products feed dh directly
  auto tau_of = [&](int64_t s) { return p.go_backwards ? steps - 1 - s : s; };

  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t tau = tau_of(s);
    const bool have_prod = s < steps - 1;
    for (int64_t b0 = 0; b0 < B; b0 += bt) {
      const int rows = int(B - b0 < bt ? B - b0 : bt);
      prefetch_backward_step(p, s, tau, b0, rows, J, j0, kRA ? 4 : 3);
      if (have_prod) {  // dgh of step s+1 (all CTAs) times this CTA's rows of Uᵀ
        stage_rows(sm.hs, sm.op_stride, ldh, kZR, rows, H,
                   p.dgates + (tau_of(s + 1) * B + b0) * H3, H3, H,
                   static_cast<const T*>(nullptr), 0);
        __syncthreads();
        recurrent_product<T>(sm, geo, sm.hs, true, rows, 0, kZR);
        __syncthreads();
      }
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float* g = sm.gs + r * 3 * J + jj;
        if constexpr (kRA) {
          backward_ra_point<T, A, R>(p, s, tau, b0 + r, j, g, J);
        } else {
          backward_rb_point_a<T, A, R>(p, s, tau, b0 + r, j, g, J);
        }
      }
    }
    if constexpr (!kRA) {
      bar.sync();  // da_h of step s from every CTA
      for (int64_t b0 = 0; b0 < B; b0 += bt) {
        const int rows = int(B - b0 < bt ? B - b0 : bt);
        stage_rows(sm.hs, sm.op_stride, ldh, 1, rows, H,
                   p.dgates + (tau * B + b0) * H3 + 2 * H, H3, 0,
                   static_cast<const T*>(nullptr), 0);
        __syncthreads();
        recurrent_product<T>(sm, geo, sm.hs, false, rows, 2, 3);
        __syncthreads();
        GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
          backward_rb_point_b<T, R>(p, s, tau, b0 + r, j, sm.gs[r * 3 * J + 2 * J + jj]);
        }
      }
    }
    bar.sync();
  }
  // grad_h0 needs the products of step 0's gate gradients.
  const int64_t tau0 = tau_of(0);
  for (int64_t b0 = 0; b0 < B; b0 += bt) {
    const int rows = int(B - b0 < bt ? B - b0 : bt);
    stage_rows(sm.hs, sm.op_stride, ldh, kZR, rows, H, p.dgates + (tau0 * B + b0) * H3, H3, H,
               static_cast<const T*>(nullptr), 0);
    __syncthreads();
    recurrent_product<T>(sm, geo, sm.hs, true, rows, 0, kZR);
    __syncthreads();
    GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
      finish_grad_h0(p, b0 + r, j, sm.gs + r * 3 * J + jj, J, kZR);
    }
  }
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
