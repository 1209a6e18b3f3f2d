// Runs the persistent kernels (csrc/kernels/persistent/persistent_kernels.cuh; grid and cluster paths,
// float32, float16 and bfloat16, every recurrent product) on the host: one std::thread per CUDA thread, all CTAs co-resident (cuda_emu.h), each
// with exactly the plan's dynamic shared memory. Geometry from the capacity model for a
// fictitious sm_90 device with `sm_count` SMs and clusters of up to `max_cluster` CTAs.
// Torch-free: used by the Python module (pkemu_module.cpp) and the sanitizer driver.
#pragma once
#include <string>

#include "kernels/persistent/persistent_geometry.h"
#include "kernels/persistent/persistent_kernels.cuh"

namespace emu_pk {

namespace kn = gru_cuda::kernels;
namespace pk = gru_cuda::kernels::pk;
namespace ps = gru_cuda::persistent;

// smem_per_block: an H100's 227 KiB by default; the emulation does not care, so a test may
// give a fictitious device more, to run a large H on few emulated CTAs.
inline ps::DeviceCaps fake_caps(int sm_count, int max_cluster, int smem_per_block = 232448) {
  ps::DeviceCaps c;
  c.sm_count = sm_count;
  c.cc_major = 9;
  c.cc_minor = 0;
  c.smem_per_block_optin = smem_per_block;
  c.smem_per_sm = smem_per_block + 1024;
  c.regs_per_sm = 65536;
  c.cooperative_launch = true;
  c.cluster_launch = true;
  c.max_cluster_size = max_cluster;
  return c;
}

// The geometry of `path` with recurrent product `product` for the problem; false (and the
// model's reason in `info`) when the model does not choose that path. max_bt > 0 caps the
// batch tile to force several tiles (clusters); the shared memory stays the plan's (enough for
// the smaller tile).
inline bool plan(const ps::Problem& pr, const std::string& path, const std::string& product,
                 int sm_count, int max_cluster, int max_bt, kn::PersistentGeometry& g,
                 std::string& info, int smem_per_block = 232448) {
  ps::Path forced;
  ps::Product prod;
  if (!ps::path_from_name(path, forced) || !ps::product_from_name(product, prod)) {
    info = "unknown path or product " + path + " " + product;
    return false;
  }
  const ps::Plan plan =
      ps::choose_path(fake_caps(sm_count, max_cluster, smem_per_block), pr, forced, prod);
  if (plan.path != forced) {
    info = "nofit: " + plan.reason;
    return false;
  }
  g = ps::geometry_from_plan(plan);
  if (max_bt > 0 && g.bt > max_bt) {
    g.bt = max_bt;
    if (g.cluster) g.clusters = int((pr.B + max_bt - 1) / max_bt);
  }
  info = std::string(ps::path_name(plan.path)) + " " + ps::product_name(plan.product) +
         " J=" + std::to_string(g.J) + " ctas=" +
         std::to_string(g.ctas) + " clusters=" + std::to_string(g.clusters) +
         " bt=" + std::to_string(g.bt) + " smem=" + std::to_string(g.smem_bytes);
  return true;
}

template <class F>
void launch(const kn::PersistentGeometry& geo, F&& body) {
  const unsigned cs = geo.cluster ? unsigned(geo.ctas) : 1u;
  const unsigned nblocks =
      geo.cluster ? unsigned(geo.ctas * geo.clusters) : unsigned(geo.ctas + geo.extra_ctas);
  emu::launch_cooperative(nblocks, pk::kThreads, size_t(geo.smem_bytes), cs, body);
}

// (tanh, sigmoid) runs the specialised instantiation, every other pair the run-time one, as
// gru_persistent_forward/backward choose.
#define EMU_PK_KERNEL(KERN, RA, P)                                                  \
  (fast ? pk::KERN<T, gru_cuda::kTanh, gru_cuda::kSigmoid, RA>(P, geo)              \
        : pk::KERN<T, pk::kAnyAct, pk::kAnyAct, RA>(P, geo))

// p.barrier must point at a zeroed counter on the grid path.
template <typename T>
void forward(const kn::PersistentForwardParams<T>& p, const kn::PersistentGeometry& geo) {
  const bool fast = p.activation == gru_cuda::kTanh && p.recurrent_activation == gru_cuda::kSigmoid;
  const bool ra = p.reset_after;
  launch(geo, [&] {
    if (geo.cluster) {
      if (ra) EMU_PK_KERNEL(forward_cluster_kernel, true, p);
      else EMU_PK_KERNEL(forward_cluster_kernel, false, p);
    } else {
      if (ra) EMU_PK_KERNEL(forward_grid_kernel, true, p);
      else EMU_PK_KERNEL(forward_grid_kernel, false, p);
    }
  });
}

template <typename T>
void backward(const kn::PersistentBackwardParams<T>& p, const kn::PersistentGeometry& geo) {
  const bool fast = p.activation == gru_cuda::kTanh && p.recurrent_activation == gru_cuda::kSigmoid;
  const bool ra = p.reset_after;
  launch(geo, [&] {
    if (geo.cluster) {
      if (ra) EMU_PK_KERNEL(backward_cluster_kernel, true, p);
      else EMU_PK_KERNEL(backward_cluster_kernel, false, p);
    } else {
      if (ra) EMU_PK_KERNEL(backward_grid_kernel, true, p);
      else EMU_PK_KERNEL(backward_grid_kernel, false, p);
    }
  });
}
#undef EMU_PK_KERNEL

}  // namespace emu_pk
