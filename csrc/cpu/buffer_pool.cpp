// The pool of large CPU buffers (buffer_pool.h).
#include "cpu/buffer_pool.h"

#include <c10/core/CPUAllocator.h>
#include <c10/util/accumulate.h>

#include <atomic>
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

// The idle bytes the pool may keep, read by every pooled_empty (as GRU_CUDA_CPU_BLAS is read by
// every call), on the calling thread.
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
  // A buffer of at least `bytes` (whole MiB): the smallest idle one of at most 5/4 of it (a
  // request must not hold on to a much larger buffer: saved tensors live until the backward),
  // the most recently returned of equal ones (the likeliest in cache); else a new one.
  Buffer take(int64_t bytes) {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      auto best = idle_.end();
      for (auto it = idle_.begin(); it != idle_.end(); ++it)
        if (it->bytes >= bytes && it->bytes * 4 <= bytes * 5 &&
            (best == idle_.end() || it->bytes <= best->bytes))
          best = it;
      if (best != idle_.end()) {
        Buffer b = std::move(*best);
        idle_.erase(best);
        idle_bytes_ -= b.bytes;
        return b;
      }
    }
    try {
      return Buffer{bytes, c10::GetCPUAllocator()->allocate(static_cast<size_t>(bytes))};
    } catch (const c10::Error&) {  // out of memory: give the idle buffers back, then retry
      release();
      return Buffer{bytes, c10::GetCPUAllocator()->allocate(static_cast<size_t>(bytes))};
    }
  }

  // Keeps a returned buffer, dropping the least recently returned ones beyond the limit; a
  // buffer larger than the limit is freed at once. Never throws (it runs in a deleter).
  void give(Buffer b) noexcept {
    const int64_t limit = limit_.load(std::memory_order_relaxed);
    if (b.bytes > limit) return;  // freed here
    std::list<Buffer> dropped;    // freed after the lock is released
    try {
      std::list<Buffer> node;
      node.push_back(std::move(b));  // the only allocation, before the lock
      std::lock_guard<std::mutex> lock(mutex_);
      idle_bytes_ += node.front().bytes;
      idle_.splice(idle_.end(), node);
      while (idle_bytes_ > limit && !idle_.empty()) {
        idle_bytes_ -= idle_.front().bytes;
        dropped.splice(dropped.end(), idle_, idle_.begin());
      }
    } catch (...) {  // no memory for the list node: the buffer is freed instead
    }
  }

  // The limit give() applies: the last limit_bytes() a pooled_empty read (deleters run on any
  // thread, so they do not read the environment themselves).
  void set_limit(int64_t limit) { limit_.store(limit, std::memory_order_relaxed); }

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
  std::atomic<int64_t> limit_{0};
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
  const int64_t limit = limit_bytes();
  pool().set_limit(limit);
  if (bytes < kMinPooledBytes || limit == 0) return at::empty(sizes, opts);
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
