// One GPU as one worker thread sees it: its streams (compute, and comm for NCCL, ordered by
// events), a caching allocator, host transfers and a bounded wait.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <functional>
#include <map>
#include <vector>

namespace rfa::cuda {

class DeviceContext {
 public:
  explicit DeviceContext(int device);
  ~DeviceContext();  // never throws
  DeviceContext(const DeviceContext&) = delete;
  DeviceContext& operator=(const DeviceContext&) = delete;

  int device() const { return device_; }
  cudaStream_t compute() const { return compute_; }
  cudaStream_t comm() const { return comm_; }

  // Caching allocator. All our work is ordered on the compute stream (comm work waits for it
  // first, and compute waits for comm before touching received data), so a released block can
  // be handed to the next allocation at once: later work is queued after earlier work.
  void* alloc(size_t bytes);
  void release(void* p);
  size_t bytes_in_use() const { return in_use_; }
  // Device memory this context holds from cudaMalloc: in use plus cached for reuse.
  size_t bytes_reserved() const { return in_use_ + cached_; }
  size_t peak_bytes() const { return peak_; }
  void reset_peak() { peak_ = in_use_; }
  void empty_cache();

  void comm_waits_for_compute();
  void compute_waits_for_comm();

  // Synchronous copies through the compute stream (pageable host memory).
  void h2d(void* dst, const void* src, size_t bytes);
  void d2h(void* dst, const void* src, size_t bytes);

  // Waits for both streams without blocking forever: polls, calls `poll` each round (it may
  // throw, e.g. on an NCCL error or abort); after timeout_ms throws E_NCCL when the comm stream
  // is the one still busy (a stuck collective), else E_CUDA.
  void synchronize(int timeout_ms, const std::function<void()>& poll);

  static int device_count();  // 0 when there is no driver or device
  // Whether `device` can read `peer`'s memory directly (NVLink or PCIe P2P); false on any error.
  static bool can_access_peer(int device, int peer);

 private:
  static size_t round_size(size_t bytes);
  int device_;
  cudaStream_t compute_ = nullptr;
  cudaStream_t comm_ = nullptr;
  cudaEvent_t compute_done_ = nullptr;
  cudaEvent_t comm_done_ = nullptr;
  // Size class -> cached blocks, the most recently released last. An allocation takes the block
  // released last (LIFO), so a ring call, which allocates and releases in the same order every
  // time, works in the same blocks every time. A FIFO pool rotates each call through every cached
  // block of a size, so the more earlier work has left cached, the slower a ring runs (FIFO
  // against LIFO: benchmark/RESULTS.md).
  std::map<size_t, std::vector<void*>> free_;
  std::map<void*, size_t> live_;  // block -> size class
  size_t in_use_ = 0, cached_ = 0, peak_ = 0;
};

}  // namespace rfa::cuda
