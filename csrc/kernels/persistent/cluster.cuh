// The persistent kernels of the cluster path (sm_90: DSMEM exchange, cluster barrier).
#pragma once

#include "kernels/persistent/operand.cuh"
#include "kernels/persistent/pointwise.cuh"
#include "kernels/persistent/product.cuh"

namespace gru_cuda {
namespace kernels {
namespace pk {
namespace {

// =============================================================================================
// Cluster path (sm_90): cluster c handles batch rows [c·bt, c·bt + bt), CTA rank k of it the
// units [k·J, k·J + J). Operands arrive by DSMEM pushes; cluster.sync() is the only barrier.
// =============================================================================================

#ifdef GRU_PK_HAS_CLUSTER  // sm_90 (kernels/persistent/primitives.cuh)
// Stores v at offset `off` of the same shared-memory buffer in every CTA of the cluster.
__device__ __forceinline__ void push_all(cg::cluster_group& cluster, float* local_base,
                                         int off, float v) {
  const unsigned n = cluster.num_blocks();
  for (unsigned d = 0; d < n; ++d) cluster.map_shared_rank(local_base, d)[off] = v;
}
#endif

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    forward_cluster_kernel(const PersistentForwardParams<T> p, const PersistentGeometry geo) {
#ifdef GRU_PK_HAS_CLUSTER
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  cg::cluster_group cluster = cg::this_cluster();
  const int J = geo.J, kp = geo.kp, ldh = geo.ldh, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, BH = p.B * p.H, steps = p.steps;
  const int rank = int(cluster.block_rank());
  const int j0 = rank * J;
  const int64_t b0 = int64_t(blockIdx.x / geo.ctas) * bt;
  const int rows = int(B - b0 < bt ? B - b0 : bt);
  const Smem sm = carve_smem<T>(smem_raw, geo, 2, !kRA);
  T* const w = static_cast<T*>(sm.w);
  load_forward_weights(w, p.U, H, J, kp, j0, geo.product != kProductSimt);
  zero_floats(sm.hs, 2 * sm.buf_stride + (kRA ? 0 : sm.op_stride));
  __syncthreads();
  const T* q = p.recurrent_dropout;
  const int nops = q != nullptr ? (kRA ? 3 : 2) : 1;
  // Step 0's operand comes from h0 in global memory.
  stage_rows(sm.hs, sm.op_stride, ldh, nops, rows, H, p.h0 + b0 * H, H, 0,
             q != nullptr ? q + b0 * H : nullptr, BH);
  cluster.sync();  // every CTA of the cluster runs and has zeroed its buffers before any push

  for (int64_t s = 0; s < steps; ++s) {
    const int64_t tau = p.go_backwards ? steps - 1 - s : s;
    const T* hprev = s == 0 ? p.h0 : state_at(p, s - 1);
    T* hcur = state_at(p, s);
    float* cur = sm.hs + (s & 1) * sm.buf_stride;
    float* nxt = sm.hs + ((s + 1) & 1) * sm.buf_stride;
    const bool push_state = s + 1 < steps;
    prefetch_forward_step(p, tau, b0, rows, J, j0);
    recurrent_product<T>(sm, geo, cur, q != nullptr, rows, 0, kRA ? 3 : 2);
    __syncthreads();
    if constexpr (kRA) {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const T st = forward_ra_point<T, A, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J,
                                               hprev, hcur);
        if (push_state) {
          const float v = to_acc(st);
          for (int op = 0; op < nops; ++op) {
            const float qv = q != nullptr ? to_acc(q[op * BH + (b0 + r) * H + j]) : 1.0f;
            push_all(cluster, nxt, op * sm.op_stride + r * ldh + j, v * qv);
          }
        }
      }
    } else {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const T rh = forward_rb_point1<T, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J,
                                             hprev);
        push_all(cluster, sm.side, r * ldh + j, to_acc(rh));
      }
      cluster.sync();  // r ⊙ hd_h of the whole row slice in every CTA
      recurrent_product<T>(sm, geo, sm.side, false, rows, 2, 3);
      __syncthreads();
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const T st = forward_rb_point2<T, A, R>(p, s, tau, b0 + r, j,
                                                sm.gs[r * 3 * J + 2 * J + jj], hprev, hcur);
        if (push_state) {
          const float v = to_acc(st);
          for (int op = 0; op < nops; ++op) {
            const float qv = q != nullptr ? to_acc(q[op * BH + (b0 + r) * H + j]) : 1.0f;
            push_all(cluster, nxt, op * sm.op_stride + r * ldh + j, v * qv);
          }
        }
      }
    }
    cluster.sync();  // pushes of step s landed; nobody reads `cur` any more
  }
#else
  (void)p;
  (void)geo;
  trap_without_cluster();
#endif
}

template <typename T, int A, int R, bool kRA>
__global__ void __launch_bounds__(kThreads, 1)
    backward_cluster_kernel(const PersistentBackwardParams<T> p, const PersistentGeometry geo) {
#ifdef GRU_PK_HAS_CLUSTER
  GRU_PK_DYNAMIC_SMEM(smem_raw);
  cg::cluster_group cluster = cg::this_cluster();
  const int J = geo.J, kp = geo.kp, ldh = geo.ldh, bt = geo.bt, H = int(p.H);
  const int64_t B = p.B, steps = p.steps;
  const int rank = int(cluster.block_rank());
  const int j0 = rank * J;
  const int64_t b0 = int64_t(blockIdx.x / geo.ctas) * bt;
  const int rows = int(B - b0 < bt ? B - b0 : bt);
  const Smem sm = carve_smem<T>(smem_raw, geo, 2, !kRA);
  T* const w = static_cast<T*>(sm.w);
  load_backward_weights(w, p.U, H, J, kp, j0, geo.product != kProductSimt);
  zero_floats(sm.hs, 2 * sm.buf_stride + (kRA ? 0 : sm.op_stride));
  cluster.sync();
  constexpr int kZR = kRA ? 3 : 2;
  auto tau_of = [&](int64_t s) { return p.go_backwards ? steps - 1 - s : s; };

  for (int64_t s = steps - 1; s >= 0; --s) {
    const int64_t tau = tau_of(s);
    const int64_t parity = (steps - 1 - s) & 1;  // step s reads this buffer, writes the other
    float* cur = sm.hs + parity * sm.buf_stride;
    float* nxt = sm.hs + (parity ^ 1) * sm.buf_stride;
    prefetch_backward_step(p, s, tau, b0, rows, J, j0, kRA ? 4 : 3);
    if (s < steps - 1) {
      recurrent_product<T>(sm, geo, cur, true, rows, 0, kZR);
      __syncthreads();
    }
    if constexpr (kRA) {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const Grad3 d =
            backward_ra_point<T, A, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J);
        for (int op = 0; op < 3; ++op) push_all(cluster, nxt, op * sm.op_stride + r * ldh + j, d.v[op]);
      }
    } else {
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float2 d =
            backward_rb_point_a<T, A, R>(p, s, tau, b0 + r, j, sm.gs + r * 3 * J + jj, J);
        push_all(cluster, nxt, r * ldh + j, d.x);     // da_z: operand 0 of step s-1
        push_all(cluster, sm.side, r * ldh + j, d.y);  // da_h: this step's second phase
      }
      cluster.sync();
      recurrent_product<T>(sm, geo, sm.side, false, rows, 2, 3);
      __syncthreads();
      GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
        const float da_r =
            backward_rb_point_b<T, R>(p, s, tau, b0 + r, j, sm.gs[r * 3 * J + 2 * J + jj]);
        push_all(cluster, nxt, sm.op_stride + r * ldh + j, da_r);  // operand 1 of step s-1
      }
    }
    cluster.sync();
  }
  float* last = sm.hs + (steps & 1) * sm.buf_stride;  // written by step 0
  recurrent_product<T>(sm, geo, last, true, rows, 0, kZR);
  __syncthreads();
  GRU_PK_FOR_UNITS(rows, J, j0, H, r, jj, j) {
    finish_grad_h0(p, b0 + r, j, sm.gs + r * 3 * J + jj, J, kZR);
  }
#else
  (void)p;
  (void)geo;
  trap_without_cluster();
#endif
}

}  // namespace
}  // namespace pk
}  // namespace kernels
}  // namespace gru_cuda
