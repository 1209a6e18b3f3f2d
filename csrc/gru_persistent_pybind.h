// Python helpers of the persistent path, registered on the extension module by
// gru_cuda::persistent::register_pybind(m), called from the one PYBIND11_MODULE in
// csrc/gru_ops.cpp. Header-only and included only there; safe in CPU builds: the capacity model
// (persistent_plan, persistent_max_units) is torch-free and always registered, the helpers that
// touch a device only when GRU_CUDA_WITH_CUDA is defined. gru_cuda/dispatch.py wraps them.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>

#include "kernels/persistent/persistent_capacity.h"

#ifdef GRU_CUDA_WITH_CUDA
#include "cuda/path_choice.h"
#include "cuda/persistent.h"
#endif

namespace gru_cuda {
namespace persistent {
namespace pybind_detail {

namespace py = pybind11;

inline Path parse_path(const std::string& name) {
  Path p = Path::kAuto;
  if (!path_from_name(name, p)) {
    throw py::value_error("unknown kernel path '" + name +
                          "': expected auto, stepwise, persistent or persistent_cluster");
  }
  return p;
}

inline Product parse_product(const std::string& name) {
  Product p = Product::kAuto;
  if (!product_from_name(name, p)) {
    throw py::value_error("unknown recurrent product '" + name +
                          "': expected auto, simt, tensor_core, tf32 or 3xtf32");
  }
  return p;
}

inline DType parse_dtype(const std::string& name) {
  DType d = DType::kFloat32;
  if (!dtype_from_name(name, d)) {
    throw py::value_error("unknown dtype '" + name +
                          "': expected float32, float16, bfloat16 or float64");
  }
  return d;
}

template <typename V>
V get_or(const py::dict& d, const char* key, V fallback) {
  return d.contains(key) ? d[key].cast<V>() : fallback;
}

inline DeviceCaps caps_from_dict(const py::dict& d) {
  DeviceCaps c;
  c.sm_count = get_or<int>(d, "sm_count", 0);
  if (d.contains("compute_capability")) {
    const py::tuple cc = d["compute_capability"].cast<py::tuple>();
    c.cc_major = cc[0].cast<int>();
    c.cc_minor = cc[1].cast<int>();
  }
  c.smem_per_block_optin = get_or<int>(d, "shared_memory_per_block_optin", 0);
  c.smem_per_sm = get_or<int>(d, "shared_memory_per_sm", 0);
  c.regs_per_sm = get_or<int>(d, "registers_per_sm", 0);
  c.cooperative_launch = get_or<bool>(d, "cooperative_launch", false);
  c.cluster_launch = get_or<bool>(d, "cluster_launch", false);
  c.max_cluster_size = get_or<int>(d, "max_cluster_size", 0);
  c.gpc_count = get_or<int>(d, "gpc_count", 0);
  // No max_active_clusters here: a dict describes a device that may not be present, so the
  // capacity model uses its documented estimate (estimate_active_clusters).
  return c;
}

// The same keys as gru_cuda._C.cuda_device_capacity (csrc/cuda/device_info.cpp).
inline py::dict caps_to_dict(const DeviceCaps& c) {
  py::dict d;
  d["sm_count"] = c.sm_count;
  d["compute_capability"] = py::make_tuple(c.cc_major, c.cc_minor);
  d["shared_memory_per_block_optin"] = c.smem_per_block_optin;
  d["shared_memory_per_sm"] = c.smem_per_sm;
  d["registers_per_sm"] = c.regs_per_sm;
  d["cooperative_launch"] = c.cooperative_launch;
  d["cluster_launch"] = c.cluster_launch;
  d["max_cluster_size"] = max_cluster_size(c);
  if (c.gpc_count > 0) d["gpc_count"] = c.gpc_count;
  return d;
}

inline py::dict plan_to_dict(const Plan& p) {
  py::dict d;
  d["path"] = std::string(path_name(p.path));
  d["product"] = p.path == Path::kStepwise ? std::string() : std::string(product_name(p.product));
  d["reason"] = p.reason;
  d["units_per_cta"] = p.units_per_cta;
  d["ctas"] = p.ctas;
  d["clusters"] = p.clusters;
  d["batch_tile"] = p.batch_tile;
  d["k_pad"] = p.k_pad;
  d["operand_stride"] = p.operand_stride;
  d["operands"] = p.operands;
  d["buffers"] = p.buffers;
  d["side_buffer"] = p.side_buffer;
  d["smem_bytes"] = p.smem_bytes;
  d["weight_bytes"] = p.weight_bytes;
  d["barriers_per_step"] = p.barriers_per_step;
  d["active_clusters"] = p.active_clusters;
  d["waves"] = p.waves;
  d["est_step_us"] = p.est_step_us;
  d["est_stepwise_step_us"] = p.est_stepwise_step_us;
  d["floor_compute_us"] = p.floor_compute_us;
  d["floor_barrier_us"] = p.floor_barrier_us;
  d["fma_per_step"] = p.fma_per_step;
  return d;
}

inline Problem make_problem(int64_t B, int64_t T, int64_t H, const std::string& dtype,
                            bool reset_after, bool recurrent_dropout, bool backward,
                            bool allow_tf32 = false) {
  if (B < 0 || T < 0 || H < 0) throw py::value_error("sizes must be >= 0");
  Problem p;
  p.B = B;
  p.T = T;
  p.H = H;
  p.dtype = parse_dtype(dtype);
  p.reset_after = reset_after;
  p.recurrent_dropout = recurrent_dropout;
  p.backward = backward;
  p.allow_tf32 = allow_tf32;
  return p;
}

}  // namespace pybind_detail

inline void register_pybind(pybind11::module_& m) {
  namespace py = pybind11;
  using namespace pybind_detail;
  m.def(
      "persistent_plan",
      [](const py::dict& caps, int64_t batch, int64_t timesteps, int64_t units,
         const std::string& dtype, bool reset_after, bool recurrent_dropout, bool backward,
         const std::string& forced, const std::string& product, bool allow_tf32) {
        return plan_to_dict(choose_path(caps_from_dict(caps),
                                        make_problem(batch, timesteps, units, dtype, reset_after,
                                                     recurrent_dropout, backward, allow_tf32),
                                        parse_path(forced), parse_product(product)));
      },
      py::arg("caps"), py::arg("batch"), py::arg("timesteps"), py::arg("units"),
      py::arg("dtype"), py::arg("reset_after"), py::arg("recurrent_dropout"),
      py::arg("backward"), py::arg("forced") = "auto", py::arg("product") = "auto",
      py::arg("allow_tf32") = false,
      "Capacity model: the kernel path, recurrent product and geometry for one recurrence on a "
      "device described by `caps` (keys of cuda_device_capacity).");
  m.def(
      "persistent_max_units",
      [](const py::dict& caps, int64_t batch, const std::string& dtype, bool reset_after,
         bool recurrent_dropout, bool backward, const std::string& path, int64_t limit,
         const std::string& product, bool allow_tf32) {
        const Path p = parse_path(path);
        if (p != Path::kGrid && p != Path::kCluster) {
          throw py::value_error("path must be persistent or persistent_cluster");
        }
        return max_units(caps_from_dict(caps),
                         make_problem(batch, 1, 1, dtype, reset_after, recurrent_dropout, backward,
                                      allow_tf32),
                         p, limit, parse_product(product));
      },
      py::arg("caps"), py::arg("batch"), py::arg("dtype"), py::arg("reset_after"),
      py::arg("recurrent_dropout"), py::arg("backward"), py::arg("path"),
      py::arg("limit") = 8192, py::arg("product") = "auto", py::arg("allow_tf32") = false,
      "Largest number of units for which `path` fits with `product` (auto: any product that "
      "applies; 0 if none).");
#ifdef GRU_CUDA_WITH_CUDA
  m.def(
      "persistent_device_caps",
      [](int device) { return caps_to_dict(gru_cuda::device_caps(device)); }, py::arg("device"),
      "The capacity-model view of a CUDA device.");
  m.def(
      "persistent_max_active_clusters",
      [](int device, int cluster_size, int64_t smem_bytes) {
        return max_active_clusters(device, cluster_size, smem_bytes);
      },
      py::arg("device"), py::arg("cluster_size"), py::arg("smem_bytes"),
      "Clusters of `cluster_size` CTAs with `smem_bytes` of dynamic shared memory each that the "
      "device holds at once (cudaOccupancyMaxActiveClusters on the float32 reset_after "
      "tanh/sigmoid forward cluster kernel); 0 where clusters are unsupported or none fit.");
  m.def(
      "persistent_set_path",
      [](const std::string& name) { gru_cuda::set_forced_path(parse_path(name)); },
      py::arg("name"), "Force a kernel path for every later CUDA call ('auto' to undo).");
  m.def(
      "persistent_get_path", []() { return std::string(path_name(gru_cuda::forced_path())); },
      "The forced kernel path, or 'auto'.");
  m.def(
      "persistent_set_product",
      [](const std::string& name) { gru_cuda::set_forced_product(parse_product(name)); },
      py::arg("name"),
      "Force the persistent paths' recurrent product for every later CUDA call ('auto' to undo).");
  m.def(
      "persistent_get_product",
      []() { return std::string(product_name(gru_cuda::forced_product())); },
      "The forced recurrent product, or 'auto'.");
  m.def(
      "persistent_last_path",
      []() {
        const gru_cuda::LastRun r = gru_cuda::last_run();
        py::dict d;
        d["forward"] = r.forward_path;
        d["forward_reason"] = r.forward_reason;
        d["backward"] = r.backward_path;
        d["backward_reason"] = r.backward_reason;
        d["forward_product"] = r.forward_product;
        d["backward_product"] = r.backward_product;
        return d;
      },
      "What the last CUDA forward and backward ran, and why.");
  m.def(
      "persistent_debug_oversubscribe", [](bool on) { set_debug_oversubscribe(on); },
      py::arg("on"), "Test hook: make grid-path cooperative launches be refused.");
  m.def(
      "persistent_barrier_latency_us",
      [](int device, const std::string& kind, int ctas, int iterations, int backoff_ns) {
        return barrier_latency_us(device, kind, ctas, iterations, backoff_ns);
      },
      py::arg("device"), py::arg("kind"), py::arg("ctas") = 0, py::arg("iterations") = 10000,
      py::arg("backoff_ns") = -1,
      "Microseconds per barrier of kind counter, grid_sync or cluster; backoff_ns sets the "
      "counter barrier's initial back-off between polls (0: spin, -1: the kernels' default).");
#endif
}

}  // namespace persistent
}  // namespace gru_cuda
