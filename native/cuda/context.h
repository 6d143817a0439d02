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

  // Copies through the compute stream from and to pageable host memory; `src` may be reused as
  // soon as h2d returns. An h2d of up to kStageBytes goes through a pinned staging slot and does
  // not wait for the stream: the position and segment tables a ring uploads before each of its
  // kernel calls must not drain the queue ahead of them. Larger ones, and every d2h, wait.
  void h2d(void* dst, const void* src, size_t bytes);
  void d2h(void* dst, const void* src, size_t bytes);
  static constexpr size_t kStageBytes = size_t(256) << 10;

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
  // Pinned slots for small h2d copies, used in turn. A slot is rewritten only once the copy that
  // last read it (its event) has run; when none has, a new slot is added rather than waiting, so
  // an upload never blocks on a stream that a stuck transfer holds (the next bounded wait
  // reports that).
  struct StageSlot {
    void* host = nullptr;
    cudaEvent_t read = nullptr;
  };
  std::vector<StageSlot> stage_;
  size_t next_stage_ = 0;
  StageSlot& free_stage_slot();
};

}  // namespace rfa::cuda
