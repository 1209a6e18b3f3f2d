// Python module `pkemu` for the emulation tests: the persistent kernels on the host
// (pkemu_runs.h, one translation unit per dtype) and the emulated tensor-core instructions
// (mma_fragments.h) for their unit tests. Buffers are raw addresses of torch CPU tensors.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "mma_fragments.h"
#include "pkemu_runs.h"

namespace py = pybind11;

namespace {

pkemu::Case case_of(const py::dict& d) {
  pkemu::Case c;
  c.T = d["T"].cast<int64_t>();
  c.B = d["B"].cast<int64_t>();
  c.H = d["H"].cast<int64_t>();
  c.reset_after = d["reset_after"].cast<bool>();
  c.go_backwards = d["go_backwards"].cast<bool>();
  c.zero_output_for_mask = d["zero_output_for_mask"].cast<bool>();
  c.activation = d["activation"].cast<int>();
  c.recurrent_activation = d["recurrent_activation"].cast<int>();
  c.path = d["path"].cast<std::string>();
  c.product = d["product"].cast<std::string>();
  c.allow_tf32 = d["allow_tf32"].cast<bool>();
  c.sm_count = d["sm_count"].cast<int>();
  c.max_cluster = d["max_cluster"].cast<int>();
  c.max_bt = d["max_bt"].cast<int>();
  if (d.contains("smem_per_block")) c.smem_per_block = d["smem_per_block"].cast<int>();
  return c;
}

// f(T{}) for the storage dtype named `dtype`.
template <class F>
std::string by_dtype(const std::string& dtype, F&& f) {
  if (dtype == "float32") return f(float{});
  if (dtype == "float16") return f(__half{});
  if (dtype == "bfloat16") return f(__nv_bfloat16{});
  throw py::value_error("dtype must be float32, float16 or bfloat16, got " + dtype);
}

std::string forward(const std::string& dtype, const py::dict& d, const std::vector<uintptr_t>& b) {
  if (b.size() != 13) throw py::value_error("forward takes 13 buffers");
  const pkemu::Case c = case_of(d);
  return by_dtype(dtype, [&](auto tag) {
    return pkemu::forward<decltype(tag)>(c, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
                                         b[9], b[10], b[11], b[12]);
  });
}

std::string backward(const std::string& dtype, const py::dict& d, const std::vector<uintptr_t>& b) {
  if (b.size() != 13) throw py::value_error("backward takes 13 buffers");
  const pkemu::Case c = case_of(d);
  return by_dtype(dtype, [&](auto tag) {
    return pkemu::backward<decltype(tag)>(c, b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8],
                                          b[9], b[10], b[11], b[12]);
  });
}

std::string cta_product(const std::string& dtype, int product, int J, int kp, int ldh, int bt,
                        int rows, int g0, int g1, bool per_gate, uintptr_t w, uintptr_t hs,
                        uintptr_t gs) {
  return by_dtype(dtype, [&](auto tag) {
    return pkemu::cta_product<decltype(tag)>(product, J, kp, ldh, bt, rows, g0, g1, per_gate, w,
                                             hs, gs);
  });
}

emu_mma::Kind kind_of(const std::string& k) {
  if (k == "f16") return emu_mma::Kind::kF16;
  if (k == "bf16") return emu_mma::Kind::kBF16;
  if (k == "tf32") return emu_mma::Kind::kTF32;
  throw py::value_error("kind must be f16, bf16 or tf32");
}

// The fragment tables: [(lane, element index, row, col)] of operand "a", "b" or "c".
std::vector<std::tuple<int, int, int, int>> table(const std::string& kind, const std::string& op) {
  const bool tf32 = kind_of(kind) == emu_mma::Kind::kTF32;
  std::vector<std::tuple<int, int, int, int>> out;
  const int n = op == "a" ? (tf32 ? 4 : 8) : op == "b" ? (tf32 ? 2 : 4) : 4;
  for (int lane = 0; lane < 32; ++lane) {
    for (int i = 0; i < n; ++i) {
      emu_mma::Coord c;
      if (op == "a") {
        c = tf32 ? emu_mma::a_m16n8k8_tf32(lane, i) : emu_mma::a_m16n8k16(lane, i);
      } else if (op == "b") {
        c = tf32 ? emu_mma::b_m16n8k8_tf32(lane, i) : emu_mma::b_m16n8k16(lane, i);
      } else if (op == "c") {
        c = emu_mma::c_m16n8(lane, i);
      } else {
        throw py::value_error("op must be a, b or c");
      }
      out.emplace_back(lane, i, c.row, c.col);
    }
  }
  return out;
}

// The emulated mma.sync of one warp on raw registers: a (32 x 4 uint32), b (32 x 2 uint32),
// c (32 x 4 float) -> d (32 x 4 float).
void warp_mma(const std::string& kind, uintptr_t a, uintptr_t b, uintptr_t c, uintptr_t d) {
  uint32_t ra[32][4], rb[32][2];
  float rc[32][4], rd[32][4];
  std::memcpy(ra, reinterpret_cast<const void*>(a), sizeof ra);
  std::memcpy(rb, reinterpret_cast<const void*>(b), sizeof rb);
  std::memcpy(rc, reinterpret_cast<const void*>(c), sizeof rc);
  emu_mma::mma_warp(kind_of(kind), ra, rb, rc, rd);
  std::memcpy(reinterpret_cast<void*>(d), rd, sizeof rd);
}

// The emulated ldmatrix .x{n} of one warp: row_offsets (32 ints, bytes from base) -> r (32 x 4
// uint32, the first n of each lane written).
void warp_ldmatrix(int n, uintptr_t base, const std::vector<int64_t>& row_offsets, uintptr_t r) {
  if (row_offsets.size() != 32 || n < 1 || n > 4) throw py::value_error("32 rows, n in 1..4");
  const void* rows[32];
  for (int l = 0; l < 32; ++l) rows[l] = reinterpret_cast<const unsigned char*>(base) + row_offsets[l];
  uint32_t out[32][4] = {};
  for (int l = 0; l < 32; ++l) emu_mma::ldmatrix_lane(n, rows, l, out[l]);
  std::memcpy(reinterpret_cast<void*>(r), out, sizeof out);
}

uint32_t round_tf32(float x) { return emu_mma::round_tf32(x); }

}  // namespace

PYBIND11_MODULE(pkemu, m) {
  m.def("forward", &forward);
  m.def("backward", &backward);
  m.def("cta_product", &cta_product);
  m.def("table", &table);
  m.def("warp_mma", &warp_mma);
  m.def("warp_ldmatrix", &warp_ldmatrix);
  m.def("round_tf32", &round_tf32);
}
