// The pool of large CPU buffers (buffer_pool.h).
#include "cpu/buffer_pool.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/accumulate.h>

#include <cerrno>
#include <cstdlib>
#include <list>
#include <memory>
#include <mutex>
#include <utility>

namespace gru_cuda {
namespace cpu {
namespace {

// Below this the allocator's heap serves a buffer without fresh pages (and a pool would only
// add a lock).
constexpr int64_t kMinPooledBytes = int64_t(1) << 20;
// Pooled sizes are whole MiB, so that shapes a little apart share their buffers.
constexpr int64_t kGranule = int64_t(1) << 20;

// The idle bytes the pool may keep, read at every use (as GRU_CUDA_CPU_BLAS is).
int64_t limit_bytes() {
  const char* env = std::getenv("GRU_CUDA_CPU_BUFFER_POOL_MB");
  if (env == nullptr || env[0] == '\0') return int64_t(256) << 20;
  char* end = nullptr;
  errno = 0;
  const long long mb = std::strtoll(env, &end, 10);
  TORCH_CHECK(end != env && *end == '\0' && errno == 0 && mb >= 0 && mb < (int64_t(1) << 40),
              "GRU_CUDA_CPU_BUFFER_POOL_MB must be a whole number of megabytes (0 turns the pool "
              "off); got '", env, "'");
  return int64_t(mb) << 20;
}

struct Buffer {
  int64_t bytes = 0;
  c10::DataPtr data;
};

class Pool {
 public:
  // A buffer of at least `bytes`: the smallest idle one that is not more than twice as large
  // (a small request must not hold on to a large buffer), else a new one.
  Buffer take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = idle_.end();
      for (auto it = idle_.begin(); it != idle_.end(); ++it)
        if (it->bytes >= bytes && it->bytes <= 2 * bytes &&
            (best == idle_.end() || it->bytes < best->bytes))
          best = it;
      if (best != idle_.end()) {
        Buffer b = std::move(*best);
        idle_.erase(best);
        idle_bytes_ -= b.bytes;
        return b;
      }
    }
    return Buffer{bytes, c10::GetCPUAllocator()->allocate(static_cast<size_t>(bytes))};
  }

  // Keeps a returned buffer, dropping the least recently returned ones beyond the limit.
  void give(Buffer b) {
    std::list<Buffer> dropped;  // freed after the lock is released
    {
      std::lock_guard<std::mutex> lock(mutex_);
      int64_t limit = 0;
      try {
        limit = limit_bytes();
      } catch (...) {  // a deleter must not throw: a bad setting keeps nothing
      }
      idle_bytes_ += b.bytes;
      idle_.push_back(std::move(b));
      while (idle_bytes_ > limit && !idle_.empty()) {
        idle_bytes_ -= idle_.front().bytes;
        dropped.splice(dropped.end(), idle_, idle_.begin());
      }
    }
  }

  int64_t idle_bytes() {
    std::lock_guard<std::mutex> lock(mutex_);
    return idle_bytes_;
  }

  void release() {
    std::list<Buffer> dropped;
    std::lock_guard<std::mutex> lock(mutex_);
    dropped.swap(idle_);
    idle_bytes_ = 0;
  }

 private:
  std::mutex mutex_;
  std::list<Buffer> idle_;  // the most recently returned last
  int64_t idle_bytes_ = 0;
};

// Never destroyed: tensors may return buffers to it during interpreter shutdown.
Pool& pool() {
  static Pool* p = new Pool();
  return *p;
}

}  // namespace

at::Tensor pooled_empty(at::IntArrayRef sizes, const at::TensorOptions& opts) {
  TORCH_INTERNAL_ASSERT(opts.device().is_cpu(), "pooled_empty: CPU tensors only");
  const int64_t numel = c10::multiply_integers(sizes);
  const int64_t bytes = numel * static_cast<int64_t>(opts.dtype().itemsize());
  if (bytes < kMinPooledBytes || limit_bytes() == 0) return at::empty(sizes, opts);
  const int64_t rounded = (bytes + kGranule - 1) / kGranule * kGranule;
  // std::function needs a copyable deleter: the buffer travels in a shared_ptr.
  auto buffer = std::make_shared<Buffer>(pool().take(rounded));
  void* data = buffer->data.get();
  return at::from_blob(
      data, sizes, [buffer](void*) { pool().give(std::move(*buffer)); }, opts);
}

int64_t buffer_pool_idle_bytes() { return pool().idle_bytes(); }

void buffer_pool_release() { pool().release(); }

}  // namespace cpu
}  // namespace gru_cuda
