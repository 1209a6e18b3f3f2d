// The kernel path of the emulated binding (builder.stepwise_extension): always stepwise, in
// place of csrc/cuda/path_choice.cpp and persistent.cpp, which need a device. The persistent
// kernels have their own emulation (test_persistent_host_emulation.py).
#include "cuda/path_choice.h"
#include "cuda/persistent.h"

namespace gru_cuda {

PathChoice choose_path(const ForwardRecurrence&) { return PathChoice{}; }
PathChoice choose_path(const BackwardRecurrence&) { return PathChoice{}; }

namespace persistent {

bool run(const PathChoice&, const ForwardRecurrence&) { return false; }
bool run(const PathChoice&, const BackwardRecurrence&) { return false; }

}  // namespace persistent
}  // namespace gru_cuda
