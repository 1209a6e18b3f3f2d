// Capacity model of the persistent GRU kernels: which path runs for given shapes on a given
// device, the launch geometry, and a human-readable reason. Host-only and torch-free, so that
// the binding's path choice (csrc/cuda/path_choice.cpp), the Python helpers and a what-if query on a
// machine without a GPU all use the same numbers. docs/persistent.md explains the model.
//
// Paths:
//   stepwise            per-step GEMM (cuBLAS) + fused pointwise kernels (csrc/cuda/stepwise.cpp)
//   persistent          one cooperative launch, <= 1 CTA per SM, each CTA keeps the columns of U
//                       (forward) or rows of U (backward) of its unit slice in shared memory for
//                       the whole sequence; the state crosses CTAs through L2 with a grid-wide
//                       counter barrier (1 barrier per step for reset_after, 2 otherwise)
//   persistent_cluster  sm_90: independent thread-block clusters, one per batch tile; the CTAs
//                       of a cluster split the units, push the state into each other's shared
//                       memory (DSMEM) and meet at cluster.sync(); no grid-wide barrier
//
// Products (how a CTA computes its slice of the recurrent product h·U each step):
//   simt         fp32 FMA on the SIMT lanes, register tiles and a warp reduce-scatter
//   tensor_core  mma.sync m16n8k16 on float16/bfloat16 operands, fp32 accumulation (sm_80+)
//   tf32         mma.sync m16n8k8 on TF32 operands (float32 inputs, only where the user allows
//                TF32: torch.backends.cuda.matmul.allow_tf32)
//   3xtf32       three TF32 products on the split a = big + small (small·big + big·small +
//                big·big): float32-level accuracy on tensor cores
//
// Geometry (both persistent paths): a CTA of kThreads threads owns J units (a multiple of kRC;
// of 8 for the tensor-core products, whose n-tiles of 8 columns must lie in one gate) and all
// three gate blocks of them; the reduction length H is padded to kp (a multiple of kKAlign) with
// zeros; batch rows are staged in tiles of bt rows (a multiple of 8, or of 2 below 8; the
// tensor cores' 16-row tiles repeat the tile's last row past its end) as fp32 operands with a
// row stride of ldh floats (kp; kp + 8 or kp + 4 for the tensor-core products, so that the
// eight rows a fragment load touches fall in different banks). Shared memory per CTA:
//   weights   3·J·kp·sizeof(T)                 (U in the storage dtype; tensor cores: 16-byte
//                                               chunks swizzled by row for ldmatrix)
//   operands  nbuf·ng·bt·ldh·4                (fp32; nbuf = 2 in the cluster path: double buffer)
//   side      bt·ldh·4                         (cluster path, reset_after=False only)
//   results   bt·3J·4
//   partials  kWarps·16·8·4                    (tensor cores: split-K partial tiles)
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <string>

namespace gru_cuda {
namespace persistent {

constexpr int kThreads = 256;  // 8 warps per CTA
constexpr int kRC = 4;         // columns (units of one gate) per register tile
constexpr int kKAlign = 64;    // a warp covers 64 k per iteration (2 per lane)
constexpr int kMmaM = 16;      // rows of an mma.sync tile (batch rows, padded)
constexpr int kMmaN = 8;       // columns of an mma.sync tile (units of one gate)

enum class Path : int { kAuto = -1, kStepwise = 0, kGrid = 1, kCluster = 2 };

inline const char* path_name(Path p) {
  switch (p) {
    case Path::kAuto: return "auto";
    case Path::kStepwise: return "stepwise";
    case Path::kGrid: return "persistent";
    case Path::kCluster: return "persistent_cluster";
  }
  return "?";
}

// Returns false for an unknown name.
inline bool path_from_name(const std::string& name, Path& out) {
  for (Path p : {Path::kAuto, Path::kStepwise, Path::kGrid, Path::kCluster}) {
    if (name == path_name(p)) {
      out = p;
      return true;
    }
  }
  return false;
}

enum class DType : int { kFloat32 = 0, kFloat16 = 1, kBFloat16 = 2, kFloat64 = 3 };

inline int dtype_bytes(DType d) { return d == DType::kFloat64 ? 8 : d == DType::kFloat32 ? 4 : 2; }
inline const char* dtype_name(DType d) {
  switch (d) {
    case DType::kFloat32: return "float32";
    case DType::kFloat16: return "float16";
    case DType::kBFloat16: return "bfloat16";
    case DType::kFloat64: return "float64";
  }
  return "?";
}
inline bool dtype_from_name(const std::string& name, DType& out) {
  for (DType d : {DType::kFloat32, DType::kFloat16, DType::kBFloat16, DType::kFloat64}) {
    if (name == dtype_name(d)) {
      out = d;
      return true;
    }
  }
  return false;
}

// How a CTA computes its recurrent product (see the top of this file).
enum class Product : int { kAuto = -1, kSimt = 0, kTensorCore = 1, kTf32 = 2, k3xTf32 = 3 };

inline const char* product_name(Product p) {
  switch (p) {
    case Product::kAuto: return "auto";
    case Product::kSimt: return "simt";
    case Product::kTensorCore: return "tensor_core";
    case Product::kTf32: return "tf32";
    case Product::k3xTf32: return "3xtf32";
  }
  return "?";
}

// Returns false for an unknown name.
inline bool product_from_name(const std::string& name, Product& out) {
  for (Product p : {Product::kAuto, Product::kSimt, Product::kTensorCore, Product::kTf32,
                    Product::k3xTf32}) {
    if (name == product_name(p)) {
      out = p;
      return true;
    }
  }
  return false;
}

inline bool uses_tensor_cores(Product p) { return p != Product::kSimt && p != Product::kAuto; }

// Units per CTA come in multiples of this.
inline int unit_align(Product p) { return uses_tensor_cores(p) ? kMmaN : kRC; }

// Operand row stride in floats for k_pad kp: the tensor-core fragment loads read eight rows at
// once (16-bit products: 8 bytes per lane, TF32: 4 bytes), so consecutive rows start 8 (or 4)
// banks apart; the SIMT product reads along rows and needs no skew.
inline int64_t operand_stride(int64_t kp, Product p) {
  if (p == Product::kTensorCore) return kp + 8;
  if (p == Product::kTf32 || p == Product::k3xTf32) return kp + 4;
  return kp;
}

// The split-K partial tiles of the tensor-core products: one 16 x 8 fp32 tile per warp.
inline int64_t partial_bytes(Product p) {
  return uses_tensor_cores(p) ? int64_t(kThreads / 32) * kMmaM * kMmaN * 4 : 0;
}

// What the device offers (cudaDeviceGetAttribute names in brackets).
struct DeviceCaps {
  int sm_count = 0;              // [MultiProcessorCount]
  int cc_major = 0, cc_minor = 0;
  int smem_per_block_optin = 0;  // bytes [MaxSharedMemoryPerBlockOptin]
  int smem_per_sm = 0;           // bytes [MaxSharedMemoryPerMultiprocessor]
  int regs_per_sm = 0;           // 32-bit registers [MaxRegistersPerMultiprocessor]
  bool cooperative_launch = false;
  bool cluster_launch = false;   // [ClusterLaunch], sm_90+
  int max_cluster_size = 0;      // 0: 16 on sm_90 (non-portable size), else 8
  int gpc_count = 0;             // GPCs (not a CUDA attribute); 0: unknown, see below
  // Clusters of `cluster_size` CTAs with `smem_bytes` of dynamic shared memory each that the
  // device holds at once. The CUDA glue fills it with cudaOccupancyMaxActiveClusters on the
  // cluster kernel it is about to launch; empty (what-if queries, no GPU):
  // estimate_active_clusters below.
  std::function<int(int cluster_size, int64_t smem_bytes)> max_active_clusters;
};

struct Problem {
  int64_t B = 0, T = 0, H = 0;
  DType dtype = DType::kFloat32;
  bool reset_after = true;
  bool recurrent_dropout = false;
  bool backward = false;  // the backward recurrence (else the forward)
  // float32 may run on TF32 tensor cores (torch.backends.cuda.matmul.allow_tf32).
  bool allow_tf32 = false;
};

struct Plan {
  Path path = Path::kStepwise;
  Product product = Product::kSimt;  // of the chosen persistent path
  std::string reason;
  // Geometry of the chosen persistent path (zeros for stepwise).
  int units_per_cta = 0;  // J
  int ctas = 0;           // grid path: CTAs in the grid; cluster path: CTAs per cluster
  int clusters = 0;       // cluster path: clusters, one per batch tile
  int batch_tile = 0;     // bt
  int k_pad = 0;          // kp
  int operand_stride = 0;  // ldh: floats between staged operand rows
  int operands = 0;       // ng
  int buffers = 0;        // nbuf
  bool side_buffer = false;
  int64_t smem_bytes = 0;
  int64_t weight_bytes = 0;
  int barriers_per_step = 0;
  // Cluster path: clusters the device holds at once for this geometry, and the waves
  // ceil(clusters / active_clusters) the batch tiles run in (each wave reruns the sequence).
  int active_clusters = 0;
  int waves = 0;
  // Estimated time per step in microseconds (provisional constants, see below).
  double est_step_us = 0.0;
  double est_stepwise_step_us = 0.0;
  // Floors of one step, for the benchmark's achieved fractions: the product's multiply-adds
  // (padded tiles included) at the device's peak rate for this product, and the step's
  // barriers at the modelled barrier latency.
  double floor_compute_us = 0.0;
  double floor_barrier_us = 0.0;
  double fma_per_step = 0.0;  // multiply-adds per CTA per step, padding included
};

// ---- provisional cost constants --------------------------------------------------------------
// Not measured yet (written without a GPU): calibrate them with benchmarks/calibrate_capacity.py.
// They only steer the automatic choice between paths that both fit; a forced path ignores them.
constexpr double kClockGHz = 1.5;
constexpr double kSimtEfficiency = 0.5;      // fraction of the SM's fp32 FMA peak reached
constexpr double kGridBarrierUs = 1.5;       // grid-wide counter barrier, 100+ CTAs
constexpr double kClusterBarrierUs = 0.3;    // cluster.sync() incl. DSMEM pushes' latency
constexpr double kL2BytesPerUsPerSm = 40e3;  // ~5.5 TB/s of L2 shared by 132 SMs
constexpr double kDsmemBytesPerUsPerSm = 100e3;
constexpr double kStepwiseLaunchUs = 2.5;    // per kernel of the stepwise loop (GEMM or pointwise)
constexpr double kStepwiseGemmTflopsF32 = 20.0;   // thin per-step GEMM, exact fp32 (no TF32)
constexpr double kStepwiseGemmTflopsHalf = 150.0;  // thin per-step GEMM on tensor cores
// Tensor-core products: mma.sync peak per SM and clock (dense; 16-bit operands 1024
// multiply-adds, TF32 half that: A100's published rates, which H100/H200 reach per clock with
// mma.sync; their wgmma peak is higher), the fraction reached by the thin, split-K tiles of a
// persistent step, and the latency of one dependent mma.sync in a warp's accumulation chain.
constexpr double kMmaFmaPerClk16 = 1024.0;
constexpr double kMmaFmaPerClkTf32 = 512.0;
constexpr double kMmaEfficiency = 0.35;
constexpr double kMmaLatencyClk = 32.0;

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }
constexpr int64_t align16(int64_t a) { return round_up(a, 16); }

// Staged fp32 operands per batch row: the widest phase of the recurrence.
inline int operand_count(const Problem& p) {
  if (p.backward) return p.reset_after ? 3 : 2;        // dgh per gate / [da_z, da_r]
  if (p.reset_after) return p.recurrent_dropout ? 3 : 1;  // h ⊙ q_g per gate, or h
  return p.recurrent_dropout ? 2 : 1;                     // [h ⊙ q_z, h ⊙ q_r], or h
}

inline int64_t smem_for(int64_t J, int64_t kp, int64_t bt, int ng, int nbuf, bool side,
                        int elem, Product prod = Product::kSimt) {
  const int64_t ldh = operand_stride(kp, prod);
  return align16(3 * J * kp * elem) + nbuf * ng * bt * ldh * 4 + (side ? bt * ldh * 4 : 0) +
         bt * 3 * J * 4 + partial_bytes(prod);
}

// Batch rows per tile: the most that fit next to the weights (<= the rows needed, rounded up),
// a multiple of 8 (the SIMT product's register tiles of 8 rows), or of 2 below 8; the
// tensor-core products compute 16-row tiles whose rows past the tile repeat its last row (no
// shared memory for the padding). 0 when not even 2 rows fit.
inline int64_t batch_tile_for(int64_t rows_wanted, int64_t J, int64_t kp, int ng, int nbuf,
                              bool side, int elem, int64_t smem_limit,
                              Product prod = Product::kSimt) {
  const int64_t fixed = smem_for(J, kp, 0, ng, nbuf, side, elem, prod);
  const int64_t per_row = smem_for(J, kp, 1, ng, nbuf, side, elem, prod) - fixed;
  if (fixed >= smem_limit) return 0;
  const int64_t wanted = std::max<int64_t>(rows_wanted, 1);
  int64_t bt = std::min((smem_limit - fixed) / per_row, round_up(wanted, 2));
  bt = bt >= 8 ? bt / 8 * 8 : bt / 2 * 2;
  return bt >= 2 ? bt : 0;
}

// Whether `prod` can compute this problem's product on this device; why not in `why`.
inline bool product_applies(const DeviceCaps& d, const Problem& p, Product prod,
                            std::string& why) {
  if (!uses_tensor_cores(prod)) return true;
  if (d.cc_major < 8) {
    why = std::string(product_name(prod)) + " needs mma.sync (sm_80 or newer)";
    return false;
  }
  const bool half = p.dtype == DType::kFloat16 || p.dtype == DType::kBFloat16;
  if (prod == Product::kTensorCore && !half) {
    why = "tensor_core takes float16/bfloat16 operands (float32 runs tf32 or 3xtf32)";
    return false;
  }
  if ((prod == Product::kTf32 || prod == Product::k3xTf32) && p.dtype != DType::kFloat32) {
    why = std::string(product_name(prod)) + " is for float32 inputs";
    return false;
  }
  if (prod == Product::kTf32 && !p.allow_tf32) {
    why = "tf32 needs TF32 allowed (torch.backends.cuda.matmul.allow_tf32 = True)";
    return false;
  }
  return true;
}

inline int max_cluster_size(const DeviceCaps& d) {
  if (d.max_cluster_size > 0) return d.max_cluster_size;
  return d.cc_major == 9 ? 16 : 8;
}

// SMs per GPC assumed when the GPC count is unknown. Hopper places every CTA of a cluster in
// one GPC; H100/H200 SXM have 132 SMs in GPCs of about 16-18 SMs (not all GPCs are complete,
// and which SMs are disabled varies by part). Assuming GPCs of 18 and ignoring the remainder
// (132 SMs: 7 GPCs of 18) undercounts rather than overcounts what fits.
constexpr int kAssumedSmsPerGpc = 18;

// Conservative what-if estimate of the clusters held at once: one CTA per SM (the kernels are
// compiled for one CTA per SM, __launch_bounds__(kThreads, 1), and may use the whole register
// file), a cluster inside one GPC, floor(SMs per GPC / cluster_size) clusters per GPC. 0 when a
// CTA's shared memory exceeds the per-block limit or the cluster is larger than a GPC.
inline int estimate_active_clusters(const DeviceCaps& d, int cluster_size, int64_t smem_bytes) {
  if (cluster_size <= 0 || d.sm_count <= 0) return 0;
  if (d.smem_per_block_optin > 0 && smem_bytes > d.smem_per_block_optin) return 0;
  int gpcs = 0, per_gpc = 0;
  if (d.gpc_count > 0) {
    gpcs = d.gpc_count;
    per_gpc = d.sm_count / d.gpc_count;
  } else if (d.sm_count >= kAssumedSmsPerGpc) {
    gpcs = d.sm_count / kAssumedSmsPerGpc;
    per_gpc = kAssumedSmsPerGpc;
  } else {
    gpcs = 1;
    per_gpc = d.sm_count;
  }
  return gpcs * (per_gpc / cluster_size);
}

inline int active_clusters(const DeviceCaps& d, int cluster_size, int64_t smem_bytes) {
  return d.max_active_clusters ? d.max_active_clusters(cluster_size, smem_bytes)
                               : estimate_active_clusters(d, cluster_size, smem_bytes);
}

inline double fma_per_clk_per_sm(const DeviceCaps& d) {
  return (d.cc_major == 8 && d.cc_minor == 0) ? 64.0 : 128.0;  // A100: 64 fp32 lanes per SM
}

// Peak multiply-adds per SM and clock of a product (3xtf32: three TF32 products per result).
inline double peak_fma_per_clk(const DeviceCaps& d, Product prod) {
  switch (prod) {
    case Product::kTensorCore: return kMmaFmaPerClk16;
    case Product::kTf32: return kMmaFmaPerClkTf32;
    case Product::k3xTf32: return kMmaFmaPerClkTf32 / 3.0;
    default: return fma_per_clk_per_sm(d);
  }
}

// Rows the product computes for `rows` real rows in tiles of bt: simt, 8-row register tiles
// while 8 or more rows are left in a pass, 2-row tiles below; tensor cores, 16-row tiles.
inline int64_t padded_rows(int64_t rows, int64_t bt, Product prod = Product::kSimt) {
  int64_t total = 0;
  for (int64_t b0 = 0; b0 < rows; b0 += bt) {
    const int64_t r = std::min(bt, rows - b0);
    if (uses_tensor_cores(prod)) {
      total += round_up(r, kMmaM);
    } else {
      total += r >= 8 ? round_up(r, 8) : round_up(r, 2);
    }
  }
  return total;
}

// Modelled microseconds of one CTA's product over `rows` padded rows (several tiles on the grid
// path): simt, the FMA throughput at kSimtEfficiency; tensor cores, the larger of the mma.sync
// throughput at kMmaEfficiency and the latency of the longest warp's dependent chain (the
// kernels split K over the warps and keep two accumulator chains per warp).
inline double product_us(const DeviceCaps& d, Product prod, int64_t rows, int64_t J, int64_t kp) {
  const double fma = double(rows) * 3.0 * double(J) * double(kp);
  if (!uses_tensor_cores(prod)) {
    return fma / (fma_per_clk_per_sm(d) * kSimtEfficiency * kClockGHz * 1e3);
  }
  const double throughput = fma / (peak_fma_per_clk(d, prod) * kMmaEfficiency * kClockGHz * 1e3);
  const int64_t kstep = prod == Product::kTensorCore ? 16 : 8;
  const int64_t warps = kThreads / 32;
  const int64_t tiles = ceil_div(rows, kMmaM) * (3 * J / kMmaN);
  const int64_t split = tiles >= warps ? 1 : warps / tiles;
  const int64_t chain = ceil_div(ceil_div(tiles * split, warps) * ceil_div(kp / kstep, split), 2) *
                        (prod == Product::k3xTf32 ? 3 : 1);
  const double latency = double(chain) * kMmaLatencyClk / (kClockGHz * 1e3);
  return std::max(throughput, latency);
}

// The floor of the same product: its multiply-adds at the peak rate, nothing else.
inline double product_floor_us(const DeviceCaps& d, Product prod, int64_t rows, int64_t J,
                               int64_t kp) {
  return double(rows) * 3.0 * double(J) * double(kp) /
         (peak_fma_per_clk(d, prod) * kClockGHz * 1e3);
}

inline double stepwise_step_us(const Problem& p) {
  const double flops = 6.0 * double(p.B) * double(p.H) * double(p.H);
  const double tflops =
      p.dtype == DType::kFloat32 ? kStepwiseGemmTflopsF32 : kStepwiseGemmTflopsHalf;
  const int launches = p.reset_after ? 2 : 4;
  return launches * kStepwiseLaunchUs + flops / (tflops * 1e6);
}

inline void fail(Plan& plan, Path path, const std::string& why) {
  plan = Plan{};
  plan.path = Path::kStepwise;
  plan.reason = std::string(path_name(path)) + " does not fit: " + why;
}

// The grid-barrier path with product `prod` (not kAuto). plan.path is kGrid when it fits,
// else kStepwise with the reason.
inline Plan plan_grid(const DeviceCaps& d, const Problem& p, Product prod = Product::kSimt) {
  Plan plan;
  std::string why;
  if (!product_applies(d, p, prod, why)) {
    fail(plan, Path::kGrid, why);
    return plan;
  }
  if (!d.cooperative_launch) {
    fail(plan, Path::kGrid, "the device has no cooperative launch");
    return plan;
  }
  if (d.sm_count <= 0) {
    fail(plan, Path::kGrid, "unknown SM count");
    return plan;
  }
  const int elem = dtype_bytes(p.dtype);
  const int64_t J = round_up(ceil_div(p.H, d.sm_count), unit_align(prod));
  const int64_t ctas = ceil_div(p.H, J);
  const int64_t kp = round_up(p.H, kKAlign);
  const int ng = operand_count(p);
  const int64_t bt =
      batch_tile_for(p.B, J, kp, ng, 1, false, elem, d.smem_per_block_optin, prod);
  if (bt == 0) {
    fail(plan, Path::kGrid,
         "U slice of " + std::to_string(J) + " units x 3 gates x " + std::to_string(kp) +
             " = " + std::to_string(3 * J * kp * elem) + " bytes plus 2 staged rows exceeds " +
             std::to_string(d.smem_per_block_optin) + " bytes of shared memory per block");
    return plan;
  }
  plan.path = Path::kGrid;
  plan.product = prod;
  plan.operand_stride = int(operand_stride(kp, prod));
  plan.units_per_cta = int(J);
  plan.ctas = int(ctas);
  plan.batch_tile = int(bt);
  plan.k_pad = int(kp);
  plan.operands = ng;
  plan.buffers = 1;
  plan.weight_bytes = 3 * J * kp * elem;
  plan.smem_bytes = smem_for(J, kp, bt, ng, 1, false, elem, prod);
  plan.barriers_per_step = p.reset_after ? 1 : 2;
  const int64_t rows = padded_rows(p.B, bt, prod);
  const double compute_us = product_us(d, prod, rows, J, kp);
  // Each CTA reads every staged row of the exchanged state (or gate gradients) from L2.
  const double l2_us = double(p.B) * double(p.H) * ng * elem / kL2BytesPerUsPerSm;
  plan.est_step_us = compute_us + l2_us + plan.barriers_per_step * kGridBarrierUs;
  plan.est_stepwise_step_us = stepwise_step_us(p);
  plan.fma_per_step = double(rows) * 3.0 * double(J) * double(kp);
  plan.floor_compute_us = product_floor_us(d, prod, rows, J, kp);
  plan.floor_barrier_us = plan.barriers_per_step * kGridBarrierUs;
  plan.reason = "persistent fits: " + std::to_string(ctas) + " CTAs x " + std::to_string(J) +
                " units, " + product_name(prod) + " product, " +
                std::to_string(plan.smem_bytes) + " bytes of shared memory per CTA";
  return plan;
}

// The cluster path (sm_90) with product `prod` (not kAuto). plan.path is kCluster when it fits,
// else kStepwise with the reason.
inline Plan plan_cluster(const DeviceCaps& d, const Problem& p, Product prod = Product::kSimt) {
  Plan plan;
  std::string why;
  if (!product_applies(d, p, prod, why)) {
    fail(plan, Path::kCluster, why);
    return plan;
  }
  if (d.cc_major < 9 || !d.cluster_launch) {
    fail(plan, Path::kCluster, "thread-block clusters need sm_90 (this device is sm_" +
                                   std::to_string(d.cc_major) + std::to_string(d.cc_minor) + ")");
    return plan;
  }
  const int elem = dtype_bytes(p.dtype);
  const int cs_max = max_cluster_size(d);
  const int64_t J = round_up(ceil_div(p.H, cs_max), unit_align(prod));
  const int64_t cs = ceil_div(p.H, J);
  const int64_t kp = round_up(p.H, kKAlign);
  const int ng = operand_count(p);
  const bool side = !p.reset_after;
  auto tile = [&](int64_t rows_wanted) {
    return batch_tile_for(rows_wanted, J, kp, ng, 2, side, elem, d.smem_per_block_optin, prod);
  };
  auto fit_at = [&](int64_t tile_rows) {
    return int64_t(
        active_clusters(d, int(cs), smem_for(J, kp, tile_rows, ng, 2, side, elem, prod)));
  };
  const int64_t bt_max = tile(p.B);  // the largest tile shared memory allows (<= B rounded)
  if (bt_max == 0) {
    fail(plan, Path::kCluster,
         "U slice of " + std::to_string(J) + " units x 3 gates x " + std::to_string(kp) +
             " in a " + std::to_string(cs) + "-CTA cluster = " +
             std::to_string(3 * J * kp * elem) + " bytes plus 2 double-buffered rows exceeds " +
             std::to_string(d.smem_per_block_optin) + " bytes of shared memory per block");
    return plan;
  }
  // Batch tile: ideally every tile's cluster is resident in one wave (a second wave reruns the
  // whole sequence for its rows). Start from an equal share of the batch over the clusters the
  // SM count suggests (an upper bound on what fits), ask how many clusters of that geometry fit
  // at once, and while the tiles need more than that, widen the tile to an equal share over
  // the clusters that fit. The tile only grows (bounded by bt_max), so this ends; a wider tile
  // needs more shared memory, so fewer clusters may fit and more than one wave may remain
  // (the plan reports them and est_step_us counts them).
  int64_t bt = tile(ceil_div(p.B, std::max<int64_t>(1, d.sm_count / cs)));
  int64_t fit = fit_at(bt);
  for (int iter = 0; iter < 16 && fit >= 1 && ceil_div(p.B, bt) > fit && bt < bt_max; ++iter) {
    const int64_t wider = std::max(tile(ceil_div(p.B, fit)), bt + (bt >= 8 ? 8 : 2));
    bt = std::min(wider, bt_max);
    fit = fit_at(bt);
  }
  // Not even one cluster resident at this tile: narrower tiles need less shared memory.
  while (fit < 1 && bt > 2) {
    bt = bt > 8 ? (bt / 2 + 7) / 8 * 8 : bt - 2;
    fit = fit_at(bt);
  }
  if (fit < 1) {
    fail(plan, Path::kCluster,
         "the device cannot hold one cluster of " + std::to_string(cs) + " CTAs with " +
             std::to_string(smem_for(J, kp, bt, ng, 2, side, elem, prod)) +
             " bytes of shared memory each");
    return plan;
  }
  const int64_t clusters = ceil_div(p.B, bt);
  if (clusters > 65535) {  // gridDim.x = clusters x cs stays far below its limit anyway
    fail(plan, Path::kCluster, "too many batch tiles");
    return plan;
  }
  plan.path = Path::kCluster;
  plan.product = prod;
  plan.operand_stride = int(operand_stride(kp, prod));
  plan.units_per_cta = int(J);
  plan.ctas = int(cs);
  plan.clusters = int(clusters);
  plan.batch_tile = int(bt);
  plan.k_pad = int(kp);
  plan.operands = ng;
  plan.buffers = 2;
  plan.side_buffer = side;
  plan.weight_bytes = 3 * J * kp * elem;
  plan.smem_bytes = smem_for(J, kp, bt, ng, 2, side, elem, prod);
  plan.barriers_per_step = p.reset_after ? 1 : 2;
  const int64_t rows = padded_rows(std::min(p.B, bt), bt, prod);
  plan.active_clusters = int(fit);
  plan.waves = int(ceil_div(clusters, fit));
  const double waves = double(plan.waves);
  const double compute_us = product_us(d, prod, rows, J, kp);
  const double push_us = double(bt) * double(p.H) * ng * 4.0 / kDsmemBytesPerUsPerSm;
  plan.est_step_us =
      waves * (compute_us + push_us + plan.barriers_per_step * kClusterBarrierUs);
  plan.est_stepwise_step_us = stepwise_step_us(p);
  plan.fma_per_step = double(rows) * 3.0 * double(J) * double(kp);
  plan.floor_compute_us = waves * product_floor_us(d, prod, rows, J, kp);
  plan.floor_barrier_us = waves * plan.barriers_per_step * kClusterBarrierUs;
  plan.reason = "persistent_cluster fits: " + std::to_string(clusters) + " cluster(s) of " +
                std::to_string(cs) + " CTAs x " + std::to_string(J) + " units, " +
                product_name(prod) + " product, " + std::to_string(bt) +
                " batch rows each, " + std::to_string(plan.smem_bytes) +
                " bytes of shared memory per CTA, " + std::to_string(fit) +
                " cluster(s) resident at once, " + std::to_string(plan.waves) + " wave(s)";
  return plan;
}

// Limits that hold before any geometry: dtype, sizes, the per-CTA register budget.
inline bool generally_supported(const DeviceCaps& d, const Problem& p, std::string& why) {
  if (p.dtype == DType::kFloat64) {
    why = "float64 runs stepwise (the persistent kernels are fp32, fp16 and bf16)";
    return false;
  }
  if (p.T <= 0 || p.B <= 0 || p.H <= 0) {
    why = "nothing to run (T, B or H is 0)";
    return false;
  }
  if (p.H > (int64_t(1) << 20) || p.B > (int64_t(1) << 24)) {
    why = "sizes beyond the persistent kernels' 32-bit tile indexing";
    return false;
  }
  // One CTA of kThreads threads per SM may use up to 255 registers per thread; the kernels are
  // compiled with __launch_bounds__(kThreads, 1), so this only fails on an unusual device.
  if (d.regs_per_sm > 0 && d.regs_per_sm < kThreads * 64) {
    why = "fewer than 64 registers per thread for one CTA of " + std::to_string(kThreads) +
          " threads";
    return false;
  }
  return true;
}

// The plan of `path` (kGrid or kCluster) with product `prod`; kAuto: of the products that
// apply and fit, the one with the lowest estimated step (float32 tries simt, 3xtf32 and, where
// TF32 is allowed, tf32; float16/bfloat16 simt and tensor_core). When none fits, the reason
// of the first product tried that applies (else of the first).
inline Plan plan_path(const DeviceCaps& d, const Problem& p, Path path,
                      Product prod = Product::kAuto) {
  auto plan_one = [&](Product x) {
    return path == Path::kCluster ? plan_cluster(d, p, x) : plan_grid(d, p, x);
  };
  if (prod != Product::kAuto) return plan_one(prod);
  Plan best;
  bool found = false;
  std::string first_why;
  for (Product x : {Product::kSimt, Product::kTensorCore, Product::kTf32, Product::k3xTf32}) {
    std::string why;
    if (x != Product::kSimt && !product_applies(d, p, x, why)) continue;
    Plan plan = plan_one(x);
    if (plan.path != path) {
      if (first_why.empty()) first_why = plan.reason;
      continue;
    }
    if (!found || plan.est_step_us < best.est_step_us) best = plan;
    found = true;
  }
  if (!found) fail(best, path, first_why.substr(first_why.find(": ") + 2));
  return best;
}

// The path for a problem: `forced` kAuto picks by fit and the provisional cost estimates;
// kStepwise always gives stepwise; kGrid / kCluster give that path if it fits, else stepwise
// with the reason (the glue raises for a forced path that does not fit). `product` forces the
// recurrent product the same way (kAuto: the cheapest estimate that fits).
inline Plan choose_path(const DeviceCaps& d, const Problem& p, Path forced = Path::kAuto,
                        Product product = Product::kAuto) {
  Plan plan;
  if (forced == Path::kStepwise) {
    plan.reason = "stepwise forced";
    return plan;
  }
  std::string why;
  if (!generally_supported(d, p, why)) {
    plan.reason = why;
    return plan;
  }
  if (forced == Path::kGrid || forced == Path::kCluster) {
    return plan_path(d, p, forced, product);
  }

  const Plan cluster = plan_path(d, p, Path::kCluster, product);
  const Plan grid = plan_path(d, p, Path::kGrid, product);
  const Plan* best = nullptr;
  if (cluster.path == Path::kCluster) best = &cluster;
  if (grid.path == Path::kGrid && (best == nullptr || grid.est_step_us < best->est_step_us)) {
    best = &grid;
  }
  if (best == nullptr) {
    plan.reason = grid.reason + "; " + cluster.reason;
    return plan;
  }
  if (best->est_step_us >= best->est_stepwise_step_us) {
    char buf[160];
    std::snprintf(buf, sizeof(buf),
                  "stepwise estimated faster (%.2f us/step vs %.2f us/step for %s)",
                  best->est_stepwise_step_us, best->est_step_us, path_name(best->path));
    plan.reason = buf;
    plan.est_step_us = best->est_step_us;
    plan.est_stepwise_step_us = best->est_stepwise_step_us;
    return plan;
  }
  return *best;
}

// Largest H (<= limit) for which `path` fits with the other fields of p (with `product`, or
// any product for kAuto); 0 if none.
inline int64_t max_units(const DeviceCaps& d, Problem p, Path path, int64_t limit = 8192,
                         Product product = Product::kAuto) {
  int64_t best = 0;
  for (int64_t h = 1; h <= limit; ++h) {
    p.H = h;
    if (plan_path(d, p, path, product).path == path) best = h;
  }
  return best;
}

}  // namespace persistent
}  // namespace gru_cuda
