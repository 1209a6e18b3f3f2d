// The launch geometry of a capacity-model plan: the one translation from persistent::Plan
// (persistent_capacity.h, host-only) to kernels::PersistentGeometry (gru_persistent.h, what the
// kernels take), shared by the CUDA dispatch and the host emulation.
#pragma once

#include "kernels/persistent/gru_persistent.h"
#include "kernels/persistent/persistent_capacity.h"

namespace gru_cuda {
namespace persistent {

inline kernels::PersistentGeometry geometry_from_plan(const Plan& plan) {
  kernels::PersistentGeometry g;
  g.cluster = plan.path == Path::kCluster ? 1 : 0;
  g.J = plan.units_per_cta;
  g.kp = plan.k_pad;
  g.ldh = plan.operand_stride;
  g.product = static_cast<int>(plan.product);
  g.bt = plan.batch_tile;
  g.ng = plan.operands;
  g.ctas = plan.ctas;
  g.clusters = plan.clusters;
  g.smem_bytes = plan.smem_bytes;
  return g;
}

}  // namespace persistent
}  // namespace gru_cuda
