// Runs the persistent kernels (grid and cluster paths, fp32) on the host, one std::thread per
// CUDA thread, for tests/test_persistent_host_emulation.py. Geometry from the capacity model for
// a fictitious sm_90 device with `sm_count` SMs and clusters of up to `max_cluster` CTAs;
// `max_bt` > 0 caps the batch tile to force several tiles (clusters). Shared memory starts
// filled with 0xFF bytes (NaN), so a read of an unwritten element shows up.
#include <pybind11/pybind11.h>
#include <cstring>
#include <memory>
#include <string>
#include <vector>
#include "kernels/persistent_kernels.cuh"
thread_local uint3 threadIdx, blockIdx;
thread_local dim3 blockDim, gridDim;
thread_local EmuBlock* emu_block = nullptr;
namespace kn = gru_cuda::kernels;
namespace pk = gru_cuda::kernels::pk;
namespace ps = gru_cuda::persistent;

template <class F>
void emu_launch(const kn::PersistentGeometry& geo, F&& body) {
  const int cs = geo.cluster ? geo.ctas : 1;
  const int nblocks = geo.cluster ? geo.ctas * geo.clusters : geo.ctas + geo.extra_ctas;
  std::vector<std::unique_ptr<unsigned char[]>> smem;
  std::vector<unsigned char*> smem_p;
  for (int b = 0; b < nblocks; ++b) {
    smem.emplace_back(new (std::align_val_t(64)) unsigned char[geo.smem_bytes + 64]);
    std::memset(smem.back().get(), 0xFF, geo.smem_bytes + 64);  // NaN poison
    smem_p.push_back(smem.back().get());
  }
  std::vector<std::unique_ptr<std::barrier<>>> bars, cbars;
  std::vector<std::unique_ptr<EmuBlock>> blocks;
  for (int c = 0; c < nblocks / cs; ++c) cbars.emplace_back(new std::barrier<>(cs * kn::pk::kThreads));
  for (int b = 0; b < nblocks; ++b) {
    auto blk = std::make_unique<EmuBlock>();
    bars.emplace_back(new std::barrier<>(pk::kThreads));
    blk->bar = bars.back().get();
    for (int w = 0; w < 8; ++w) { bars.emplace_back(new std::barrier<>(32)); blk->warp_bar[w] = bars.back().get(); }
    blk->smem = smem_p[b];
    blk->cluster_smem = smem_p.data() + (b / cs) * cs;
    blk->cluster_bar = cbars[b / cs].get();
    blk->cluster_size = cs;
    blocks.push_back(std::move(blk));
  }
  std::vector<std::thread> threads;
  for (int b = 0; b < nblocks; ++b)
    for (int t = 0; t < pk::kThreads; ++t)
      threads.emplace_back([&, b, t] {
        threadIdx = uint3{unsigned(t), 0, 0};
        blockIdx = uint3{unsigned(b), 0, 0};
        blockDim = dim3(pk::kThreads);
        gridDim = dim3(nblocks);
        emu_block = blocks[b].get();
        body();
      });
  for (auto& th : threads) th.join();
}

ps::DeviceCaps fake_caps(int sm_count, int max_cluster) {
  ps::DeviceCaps c;
  c.sm_count = sm_count; c.cc_major = 9; c.cc_minor = 0;
  c.smem_per_block_optin = 232448; c.smem_per_sm = 233472; c.regs_per_sm = 65536;
  c.cooperative_launch = true; c.cluster_launch = true; c.max_cluster_size = max_cluster;
  return c;
}

kn::PersistentGeometry geometry(const ps::Plan& plan) {
  kn::PersistentGeometry g;
  g.cluster = plan.path == ps::Path::kCluster; g.J = plan.units_per_cta; g.kp = plan.k_pad;
  g.bt = plan.batch_tile; g.ng = plan.operands; g.ctas = plan.ctas; g.clusters = plan.clusters;
  g.smem_bytes = plan.smem_bytes;
  return g;
}

template <class T> T* P(uintptr_t v) { return reinterpret_cast<T*>(v); }

std::string forward(int64_t T, int64_t B, int64_t H, uintptr_t gx, uintptr_t U, uintptr_t bh,
                    uintptr_t h0, uintptr_t mask, uintptr_t rdm, uintptr_t outputs, uintptr_t states,
                    uintptr_t workspace, uintptr_t final_state, uintptr_t state_scratch,
                    uintptr_t ws_scratch, uintptr_t rh, bool ra, int act, int ract, bool go_back,
                    bool zero_out, const std::string& path, int sm_count, int max_cluster,
                    int max_bt) {
  ps::Problem pr; pr.B = B; pr.T = T; pr.H = H; pr.reset_after = ra; pr.recurrent_dropout = rdm != 0;
  ps::Path forced; ps::path_from_name(path, forced);
  ps::DeviceCaps caps = fake_caps(sm_count, max_cluster);
  ps::Plan plan = ps::choose_path(caps, pr, forced);
  if (plan.path != forced) return "nofit: " + plan.reason;
  kn::PersistentGeometry geo = geometry(plan);
  if (max_bt > 0 && geo.bt > max_bt) {  // force several batch tiles / clusters
    geo.bt = max_bt;
    if (geo.cluster) geo.clusters = int((B + max_bt - 1) / max_bt);
  }
  kn::PersistentForwardParams<float> p;
  p.steps = T; p.B = B; p.H = H; p.gx = P<float>(gx); p.U = P<float>(U); p.recurrent_bias = P<float>(bh);
  p.h0 = P<float>(h0); p.mask = P<bool>(mask); p.recurrent_dropout = P<float>(rdm);
  p.outputs = P<float>(outputs); p.states = P<float>(states); p.workspace = P<float>(workspace);
  p.final_state = P<float>(final_state); p.state_scratch = P<float>(state_scratch);
  p.ws_scratch = P<float>(ws_scratch); p.rh = P<float>(rh);
  unsigned long long counter = 0; p.barrier = &counter;
  p.activation = act; p.recurrent_activation = ract; p.reset_after = ra; p.go_backwards = go_back;
  p.zero_output_for_mask = zero_out;
  const bool fast = act == gru_cuda::kTanh && ract == gru_cuda::kSigmoid;
  using namespace gru_cuda;
  emu_launch(geo, [&] {
#define K(KERN, RA) (fast ? pk::KERN<float, kTanh, kSigmoid, RA>(p, geo) : pk::KERN<float, pk::kAnyAct, pk::kAnyAct, RA>(p, geo))
    if (geo.cluster) { if (ra) K(forward_cluster_kernel, true); else K(forward_cluster_kernel, false); }
    else { if (ra) K(forward_grid_kernel, true); else K(forward_grid_kernel, false); }
  });
  return std::string(ps::path_name(plan.path)) + " J=" + std::to_string(geo.J) + " ctas=" +
         std::to_string(geo.ctas) + " clusters=" + std::to_string(geo.clusters) + " bt=" + std::to_string(geo.bt);
}

std::string backward(int64_t T, int64_t B, int64_t H, uintptr_t dY, uintptr_t dS, uintptr_t U,
                     uintptr_t h0, uintptr_t states, uintptr_t workspace, uintptr_t mask,
                     uintptr_t rdm, uintptr_t dgates, uintptr_t aux, uintptr_t grad_h0,
                     uintptr_t dh_part, uintptr_t dcarry, bool ra, int act, int ract,
                     bool go_back, bool zero_out, const std::string& path, int sm_count,
                     int max_cluster, int max_bt) {
  ps::Problem pr; pr.B = B; pr.T = T; pr.H = H; pr.reset_after = ra; pr.recurrent_dropout = rdm != 0;
  pr.backward = true;
  ps::Path forced; ps::path_from_name(path, forced);
  ps::Plan plan = ps::choose_path(fake_caps(sm_count, max_cluster), pr, forced);
  if (plan.path != forced) return "nofit: " + plan.reason;
  kn::PersistentGeometry geo = geometry(plan);
  if (max_bt > 0 && geo.bt > max_bt) {
    geo.bt = max_bt;
    if (geo.cluster) geo.clusters = int((B + max_bt - 1) / max_bt);
  }
  kn::PersistentBackwardParams<float> p;
  p.steps = T; p.B = B; p.H = H; p.grad_outputs = P<float>(dY); p.grad_final_state = P<float>(dS);
  p.U = P<float>(U); p.h0 = P<float>(h0); p.states = P<float>(states); p.workspace = P<float>(workspace);
  p.mask = P<bool>(mask); p.recurrent_dropout = P<float>(rdm); p.dgates = P<float>(dgates);
  p.aux = P<float>(aux); p.grad_h0 = P<float>(grad_h0); p.dh_part = P<float>(dh_part);
  p.dcarry = P<float>(dcarry);
  unsigned long long counter = 0; p.barrier = &counter;
  p.activation = act; p.recurrent_activation = ract; p.reset_after = ra; p.go_backwards = go_back;
  p.zero_output_for_mask = zero_out;
  const bool fast = act == gru_cuda::kTanh && ract == gru_cuda::kSigmoid;
  using namespace gru_cuda;
  emu_launch(geo, [&] {
    if (geo.cluster) { if (ra) K(backward_cluster_kernel, true); else K(backward_cluster_kernel, false); }
    else { if (ra) K(backward_grid_kernel, true); else K(backward_grid_kernel, false); }
  });
  return std::string(ps::path_name(plan.path)) + " J=" + std::to_string(geo.J) + " ctas=" +
         std::to_string(geo.ctas) + " clusters=" + std::to_string(geo.clusters) + " bt=" + std::to_string(geo.bt);
}

PYBIND11_MODULE(pkemu, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
}
